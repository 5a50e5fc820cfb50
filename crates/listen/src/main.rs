//! `webhook-listen`: a development receiver for webhook_ext that verifies and prints
//! each delivery, in the spirit of `stripe listen`.

mod report;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{ArgGroup, Parser};
use report::{Delivery, Timestamp, Verdict};
use webhook_listen::{
    verify_bare_hex, verify_hex, verify_standard, verify_token, Receiver, RecordedRequest, Reply,
};

/// Listen on 127.0.0.1, verify each webhook delivery's signatures and print it.
///
/// Deliveries whose signature is invalid or missing get 401 unless --accept-invalid.
/// Exits on SIGINT/SIGTERM, or after --exit-after requests.
#[derive(Parser)]
#[command(name = "webhook-listen", version)]
#[command(group(ArgGroup::new("key").required(true).args(["secret", "secret_env"])))]
struct Args {
    /// Port on 127.0.0.1; 0 picks a free one. The URL is printed on startup as
    /// `listening on http://127.0.0.1:PORT`.
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// The webhook's secret (`whsec_...` or plain). Visible in `ps`: prefer --secret-env.
    #[arg(long)]
    secret: Option<String>,
    /// Read the secret from this environment variable instead.
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// Header carrying `sha256=<hex HMAC-SHA256(secret, body)>` (or what --signature-format says).
    #[arg(long, value_name = "NAME", default_value = "X-Webhook-Signature")]
    header: String,
    /// The webhook's signature_format: what --header carries. `sha256=hex`; `hex` (the bare
    /// digest); `secret` (the secret itself, compared as a token); `none` (no such header: the
    /// Standard Webhooks signature must be valid). For signature_input 'python_sorted_json'
    /// use `none`: the Standard Webhooks signature always covers the exact body.
    #[arg(long, value_name = "FORMAT", default_value = "sha256=hex",
          value_parser = ["sha256=hex", "hex", "secret", "none"])]
    signature_format: String,
    /// Status answered to accepted deliveries.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(100..=599))]
    status: u16,
    /// Answer the first N requests with --fail-status, to exercise the sender's retries.
    #[arg(long, value_name = "N", default_value_t = 0)]
    fail_first: usize,
    /// Status for the requests failed by --fail-first.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(100..=599))]
    fail_status: u16,
    /// Flag deliveries whose X-Webhook-Timestamp (else webhook-timestamp) is more than
    /// this many seconds away from now. Flagged only: the answer does not change.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    max_age: u64,
    /// Answer --status even when a signature is invalid or missing.
    #[arg(long)]
    accept_invalid: bool,
    /// Print one JSON object per line (event, event_id, delivery_id, signature_valid,
    /// standard_signature_valid, timestamp_fresh, status, received_at, method, path,
    /// body); a missing header or signature is null.
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
    /// Print one summary line per delivery, without the body.
    #[arg(long)]
    quiet: bool,
    /// Exit once N requests have been answered.
    #[arg(long, value_name = "N")]
    exit_after: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // clap lets exactly one of the two through.
    let secret = match &args.secret_env {
        Some(var) => std::env::var(var).unwrap_or_default(),
        None => args.secret.clone().unwrap_or_default(),
    };
    if secret.is_empty() {
        eprintln!("webhook-listen: the secret is empty (is the --secret-env variable set?)");
        return ExitCode::from(2);
    }
    let (port, exit_after) = (args.port, args.exit_after);
    let receiver = match Receiver::bind(port, move |request, index| {
        answer(&args, &secret, request, index)
    }) {
        Ok(receiver) => receiver,
        Err(e) => {
            eprintln!("webhook-listen: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", receiver.url());
    let _ = std::io::stdout().flush();
    match exit_after {
        // Wait for the answers, not just the requests, so the last client gets its reply.
        Some(n) => while receiver.wait_answered(n, Duration::from_secs(3600)) < n {},
        None => loop {
            std::thread::park();
        },
    }
    ExitCode::SUCCESS
}

/// Verifies and prints one delivery and picks its answer.
fn answer(args: &Args, secret: &str, request: &RecordedRequest, index: usize) -> Reply {
    let format = args.signature_format.as_str();
    let header = if format == "none" {
        None
    } else {
        request.header(&args.header)
    };
    let signature = Verdict::from_check(header, |value| match format {
        "hex" => verify_bare_hex(secret, &request.body, value),
        "secret" => verify_token(secret, value),
        _ => verify_hex(secret, &request.body, value),
    });
    let standard = Verdict::from_check(request.header("webhook-signature"), |value| {
        let id = request.header("webhook-id").unwrap_or_default();
        let ts = request.header("webhook-timestamp").unwrap_or_default();
        verify_standard(secret, id, ts, &request.body, value)
    });
    let rejected = if format == "none" {
        standard != Verdict::Valid
    } else {
        signature != Verdict::Valid || standard == Verdict::Invalid
    };
    let (status, text) = if index < args.fail_first {
        (args.fail_status, "failing on purpose (--fail-first)")
    } else if rejected && !args.accept_invalid {
        (401, "invalid or missing signature")
    } else {
        (args.status, "ok")
    };
    let delivery = Delivery {
        number: index + 1,
        request,
        signature,
        standard,
        timestamp: Timestamp::of(request, SystemTime::now()),
        status,
    };
    let report = if args.json {
        format!("{}\n", delivery.to_json(args.max_age))
    } else if args.quiet {
        delivery.summary(args.max_age)
    } else {
        delivery.block(args.max_age)
    };
    // One write per delivery so concurrent connections never interleave their output.
    let _ = std::io::stdout().lock().write_all(report.as_bytes());
    Reply::Status {
        status,
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: text.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
