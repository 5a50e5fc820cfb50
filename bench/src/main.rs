//! `webhook-bench`: the benchmark suite of webhook_ext.
//!
//! ```text
//! webhook-bench run [--quick] [--out FILE] [--no-perf]   all scenarios → Markdown report
//! webhook-bench receive [--port N] [--hang]              the receiver alone (Ctrl-C stops it)
//! webhook-bench load --port N [--connections N] [--requests N] [--rate R --secs S]
//! webhook-bench analysis [--out FILE]                     refresh bench/ANALYSIS.md in a report
//! ```
//!
//! `bash bench/run.sh` builds and installs the extension in release mode first, then runs
//! `webhook-bench run`.

mod cluster;
mod load;
mod receiver;
mod report;
mod scenarios;
mod sql;
mod sysinfo;
mod util;
mod wal;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use receiver::{Mode, Receiver};
use util::{log, Result};

fn main() {
    util::install_signal_handlers();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => cmd_run(&args[1..]),
        Some("receive") => cmd_receive(&args[1..]),
        Some("load") => cmd_load(&args[1..]),
        Some("analysis") => cmd_analysis(&args[1..]),
        _ => Err(USAGE.to_string()),
    };
    if let Err(e) = result {
        eprintln!("webhook-bench: {e}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage:
  webhook-bench run [--quick] [--out FILE] [--no-perf] [--only 1,2,...,p]
  webhook-bench receive [--port N] [--hang]
  webhook-bench load --port N [--path P] [--connections N] [--requests N] [--rate R --secs S]
  webhook-bench analysis [--out FILE]   (re-insert bench/ANALYSIS.md into a written report)";

fn flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

fn value<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("{name} needs a valid value")),
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

fn cmd_run(args: &[String]) -> Result<()> {
    let quick = flag(args, "--quick");
    let repo = repo_root();
    let out: PathBuf = match value::<String>(args, "--out")? {
        Some(p) => p.into(),
        None if quick => repo.join("target/webhook-bench/BENCHMARKS.quick.md"),
        None => repo.join("docs/BENCHMARKS.md"),
    };
    let sizes = if quick {
        scenarios::Sizes::quick()
    } else {
        scenarios::Sizes::full()
    };
    let machine = sysinfo::machine(repo.to_str().unwrap_or("."));
    let run_dir = PathBuf::from(cluster::RUN_ROOT).join(format!("run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).map_err(|e| e.to_string())?;
    let started = Instant::now();
    log(format!(
        "{} run; report → {}; work dir {}",
        if quick { "quick" } else { "full" },
        out.display(),
        run_dir.display()
    ));

    let outcome = (|| {
        let mut bench =
            scenarios::Bench::start(sizes.clone(), &repo, &run_dir, !flag(args, "--no-perf"))?;
        let only: Vec<String> = value::<String>(args, "--only")?
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let result = bench.run_all(&only);
        // Whatever happened, the report gets what was measured.
        let sections = std::mem::take(&mut bench.sections);
        let profile = std::mem::take(&mut bench.profile);
        let library = bench.library.clone();
        drop(bench); // stops the cluster and the receiver
        result.map(|_| (sections, profile, library))
    })();
    let (sections, profile, library) = match outcome {
        Ok(v) => v,
        Err(e) => {
            log(format!(
                "run failed: {e}\n(server log and data kept in {})",
                run_dir.display()
            ));
            return Err(e);
        }
    };
    let elapsed = started.elapsed();
    let md = render(
        &machine, &sizes, &sections, &profile, elapsed, &repo, &library,
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(&out, md).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_dir_all(&run_dir);
    log(format!(
        "done in {:.0} s; report written to {}",
        elapsed.as_secs_f64(),
        out.display()
    ));
    println!("{}", report::summary(&sections));
    Ok(())
}

fn render(
    m: &sysinfo::Machine,
    sizes: &scenarios::Sizes,
    sections: &[report::Section],
    profile: &[String],
    elapsed: Duration,
    repo: &Path,
    library: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Written by `bash bench/run.sh`{} on {} in {:.0} min — do not edit by hand, run it again.\n",
        if sizes.quick { " --quick (smoke sizes: figures are not comparable to a full run)" } else { "" },
        m.date,
        elapsed.as_secs_f64() / 60.0
    );
    s.push_str(
        "```bash\n\
         bash bench/run.sh           # release build + install of webhook_ext, every scenario, writes docs/BENCHMARKS.md (about 10 min, plus the first build)\n\
         bash bench/run.sh --quick   # every scenario with small sizes (~3 min once built), writes target/webhook-bench/BENCHMARKS.quick.md\n\
         ```\n\n\
         The command builds and installs the extension with `cargo pgrx install --release`, builds \
         `webhook-bench` (`bench/`), starts its own cluster of Debian's PostgreSQL 15 (or 16, 17, \
         18 with `--pg NN`: the report's Machine section names it) as the `postgres` OS user, in \
         `/tmp/webhook_bench`, on a free port on 127.0.0.1, and its own receivers, runs \
         the seven scenarios and a profiling pass, stops everything (also on error or Ctrl-C) and \
         writes this file. Every figure stands next to a baseline measured in the same run, and \
         the ratio between them: these machines are shared and noisy, ratios travel better than \
         absolute figures.\n\n",
    );
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    for (k, v) in [
        ("CPUs (`nproc`)", m.cpus.as_str()),
        ("CPU model (`lscpu`)", m.model.as_str()),
        ("memory", m.memory.as_str()),
        ("kernel", m.kernel.as_str()),
        ("PostgreSQL", m.postgres.as_str()),
        ("date", m.date.as_str()),
        ("git commit", m.commit.as_str()),
        ("Rust", m.rustc.as_str()),
        ("webhook_ext library", library),
        ("load average at start", m.load_at_start.as_str()),
        ("load average at end", sysinfo::loadavg().as_str()),
    ] {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(
        s,
        "\nThe machine is shared with other engineers' test runs: the `outside this bench` \
         column of the CPU tables shows how much of it they used during each drain.\n"
    );
    let _ = writeln!(s, "## Configuration\n");
    let _ = writeln!(
        s,
        "A fresh `initdb` (PostgreSQL defaults: shared_buffers = 128MB, max_wal_size = 1GB, \
         autovacuum on) plus:\n\n```ini\n{}\n```\n\n\
         `pg_stat_statements` is loaded so that the report can show what the worker's own \
         statements cost during each drain (the worker's SPI statements are top-level in its \
         backend). Durability as in production: **fsync = on, synchronous_commit = on, \
         full_page_writes = on** for the application's transactions (scenario 3 adds secondary \
         rows with fsync = off; the worker itself commits with synchronous_commit = off). \
         Scenario 7 switches autovacuum off and sets checkpoint_timeout = 1h for its own \
         measures only, so that nothing else writes WAL during them, and measures the plain \
         INSERT and the queue in a second database, which the worker does not serve. \
         `max_prepared_transactions = 2`: scenario 4 and the profiling pass write their \
         backlogs in a prepared transaction, which the worker, running, cannot see until \
         COMMIT PREPARED starts the drain. The profiling pass restarts the cluster once, with \
         pg_stat_statements.track = all and track_wal_io_timing = on. \
         Extension settings are the \
         defaults: webhook.concurrency = 32 (one endpoint may use 16), webhook.timeout = 5s, \
         webhook.retry_schedule = 0s,1min,5min,15min,1h, webhook.retention = 7 days. The \
         extension is the release build (`lto = \"fat\"`, `codegen-units = 1`).\n",
        scenarios::cluster_conf_for_report()
    );
    let _ = writeln!(s, "## Summary\n\n{}", report::summary(sections));
    for sec in sections {
        s.push_str(&report::render_section(sec));
    }
    if !profile.is_empty() {
        let _ = writeln!(s, "## Profiling pass: where the worker's time goes\n");
        for p in profile {
            let _ = writeln!(s, "{p}\n");
        }
    }
    let _ = writeln!(s, "{}\n", analysis_block(repo));
    s.push_str(METHOD);
    s
}

const ANALYSIS_START: &str =
    "<!-- analysis: bench/ANALYSIS.md, `webhook-bench analysis` refreshes it -->";
const ANALYSIS_END: &str = "<!-- end of analysis -->";

/// bench/ANALYSIS.md (hand-written: what limits the figures, with the profiles behind it),
/// between markers so that `webhook-bench analysis` can refresh it in a written report.
fn analysis_block(repo: &Path) -> String {
    let text = std::fs::read_to_string(repo.join("bench/ANALYSIS.md")).unwrap_or_default();
    format!("{ANALYSIS_START}\n{}\n{ANALYSIS_END}", text.trim())
}

/// `webhook-bench analysis [--out FILE]`: puts the current bench/ANALYSIS.md into a report.
fn cmd_analysis(args: &[String]) -> Result<()> {
    let repo = repo_root();
    let out: PathBuf = value::<String>(args, "--out")?
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("docs/BENCHMARKS.md"));
    let report = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (Some(a), Some(b)) = (report.find(ANALYSIS_START), report.find(ANALYSIS_END)) else {
        return Err(format!("{} has no analysis markers", out.display()));
    };
    let updated = format!(
        "{}{}{}",
        &report[..a],
        analysis_block(&repo),
        &report[b + ANALYSIS_END.len()..]
    );
    std::fs::write(&out, updated).map_err(|e| format!("{}: {e}", out.display()))
}

const METHOD: &str = "## Tools and method\n\n\
- **Receiver** (`bench/src/receiver.rs`): std threads, one per keep-alive connection, \
  HTTP/1.1 parsed by hand; answers `200 OK` with `Content-Length: 0` as soon as the body is \
  read, counts and time-stamps every request, and records `seq`/`sent_at` found in the body. \
  The worker opens at most `webhook.concurrency` connections, so a thread per connection costs \
  nothing here and avoids any runtime's wake-ups; no tokio/hyper. Scenario 1 checks it against \
  nginx from Debian's packages (`return 200;`, 2 workers, access log off) with the same load \
  client and requests.\n\
- **Load client** (`bench/src/load.rs`): N keep-alive connections, each POSTing pre-built \
  requests back to back (the bodies the worker sent, replayed from `webhook_delivery`, with the \
  worker's header set and lengths), or one connection at a fixed rate recording round trips.\n\
- **Scenario driver** (`bench/src/scenarios/`, one file per scenario): the `postgres` 0.19 sync client, \
  `pgbench` (scenarios 3 and 7), `pg_waldump` (scenario 7), `/proc/<pid>/status` and `/proc/<pid>/task/*/stat` for memory and \
  CPU, `pg_stat_statements` and `perf record` for the profiling pass. Receivers, nginx and the \
  cluster sit behind guards that stop them on drop, error or Ctrl-C; `bench/run.sh` also \
  stops leftovers of a killed run.\n\
- **Times**: throughput runs from the commit of the batch (driver clock) to the last \
  `delivered_at` (server clock; same host). Latency uses the receiver's receipt time against \
  the driver's commit acknowledgement, both `CLOCK_REALTIME` on the same host.\n";

fn cmd_receive(args: &[String]) -> Result<()> {
    let port = value::<u16>(args, "--port")?.unwrap_or(0);
    let mode = if flag(args, "--hang") {
        Mode::Hang
    } else {
        Mode::Fast
    };
    let receiver = Receiver::start(port, mode).map_err(|e| e.to_string())?;
    println!(
        "listening on http://127.0.0.1:{} ({:?}); Ctrl-C stops",
        receiver.port, receiver.mode
    );
    let mut last = 0;
    loop {
        if util::sleep(Duration::from_secs(1)).is_err() {
            return Ok(());
        }
        let n = receiver.stats.requests();
        if n != last {
            println!("{n} requests ({} /s)", n - last);
            last = n;
        }
    }
}

fn cmd_load(args: &[String]) -> Result<()> {
    let port = value::<u16>(args, "--port")?.ok_or("--port is required")?;
    let path = value::<String>(args, "--path")?.unwrap_or_else(|| "/".into());
    let body = r#"{"id":"0a0b0c0d-0e0f-4011-9213-000000000001","event":"cliente.created","timestamp":"2024-01-01T10:00:00Z","data":{"id":1,"nome":"Cliente 1","email":"cliente1@example.com","cidade":"São Paulo"}}"#;
    let requests: Vec<Vec<u8>> = (0..100)
        .map(|i| load::request_bytes(port, &path, body, i))
        .collect();
    if let Some(rate) = value::<f64>(args, "--rate")? {
        let secs = value::<u64>(args, "--secs")?.unwrap_or(10);
        let r = load::paced(port, &requests, rate, Duration::from_secs(secs))
            .map_err(|e| e.to_string())?;
        let lat = util::sorted(r.latencies_us.clone());
        println!(
            "{} requests, {} errors; round trip p50 {:.0} µs, p99 {:.0} µs",
            r.requests,
            r.errors,
            util::percentile(&lat, 0.5),
            util::percentile(&lat, 0.99)
        );
    } else {
        let conns = value::<usize>(args, "--connections")?.unwrap_or(16);
        let total = value::<u64>(args, "--requests")?.unwrap_or(100_000);
        let r = load::blast(port, Arc::new(requests), conns, total).map_err(|e| e.to_string())?;
        println!(
            "{} requests over {conns} connections in {:.2} s: {:.0} requests/s, {} errors",
            r.requests,
            r.elapsed.as_secs_f64(),
            r.rate(),
            r.errors
        );
    }
    Ok(())
}
