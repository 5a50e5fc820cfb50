//! Test harness: a real PostgreSQL cluster with webhook_ext preloaded, started as the
//! `postgres` OS user in a temporary directory (by `webhook_cluster`, the launcher the
//! benchmarks use too), plus polling helpers. The extension must be
//! installed first (`cargo pgrx install`; `scripts/test.sh` does it).
//!
//! Which PostgreSQL: the one whose `pg_config` is in `WEBHOOK_EXT_PG_CONFIG` (default Debian's
//! 15, `/usr/lib/postgresql/15/bin/pg_config`); its binaries and extension directory come from
//! that `pg_config`. `scripts/test.sh --pg 17` sets it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use postgres::Client;
use webhook_cluster::Init;

mod example_receivers;
mod webhooks;
pub use example_receivers::*;
pub use webhook_cluster::{free_port, postgres, Postgres};
pub use webhook_listen::{verify_hex, verify_standard, Receiver, RecordedRequest, Reply};
pub use webhooks::*;

/// A running cluster; stopped (and its directory removed) on drop.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    /// The installation it runs on.
    pub pg: &'static Postgres,
    launched: webhook_cluster::Cluster,
}

/// Settings every test cluster gets; tests add their own.
const BASE_CONF: &str = "
shared_preload_libraries = 'webhook_ext'
webhook.allowed_networks = '127.0.0.1/32'
webhook.timeout = '2s'
fsync = off
synchronous_commit = on
full_page_writes = off
log_min_messages = log
log_line_prefix = '%m [%p] %b '
max_connections = 50
";

/// How long pg_ctl waits for a start or a stop.
const PG_CTL_WAIT: Duration = Duration::from_secs(60);

impl Cluster {
    /// initdb + start on the PostgreSQL of `WEBHOOK_EXT_PG_CONFIG`, with `extra_conf`
    /// appended to postgresql.conf.
    pub fn start(name: &str, extra_conf: &str) -> Cluster {
        let pg = postgres();
        assert!(
            pg.extension_dir().join("webhook_ext.control").exists(),
            "webhook_ext is not installed in {}: run `cargo pgrx install --pg-config {}` \
             (scripts/test.sh does)",
            pg.extension_dir().display(),
            pg.pg_config.display()
        );
        install_archived_versions();
        Cluster::start_on(pg, name, extra_conf)
    }

    /// [`Cluster::start`], then `CREATE EXTENSION webhook_ext` in `postgres`; with that
    /// connection.
    pub fn start_installed(name: &str, extra_conf: &str) -> (Cluster, Client) {
        let cluster = Cluster::start(name, extra_conf);
        let mut db = cluster.connect();
        db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
        (cluster, db)
    }

    /// initdb + start on the installation `pg`, as it is: nothing is installed into it.
    pub fn start_on(pg: &'static Postgres, name: &str, extra_conf: &str) -> Cluster {
        let root = PathBuf::from("/tmp/webhook_ext_tests");
        std::fs::create_dir_all(&root).unwrap();
        chmod(&root, 0o777);
        let dir = root.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let launched = webhook_cluster::Cluster::init(
            pg,
            &Init {
                data: &dir,
                socket_dir: &dir,
                conf: &format!("{BASE_CONF}\n{extra_conf}\n"),
                no_sync: true,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let cluster = Cluster {
            dir,
            port: launched.port,
            pg,
            launched,
        };
        cluster.pg_ctl_start();
        cluster
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn pg_ctl_start(&self) {
        if let Err(e) = self.launched.start(&self.log_path(), PG_CTL_WAIT) {
            panic!("{e}\n{}", self.server_log());
        }
    }

    /// `pg_ctl stop -m <mode>` (fast, immediate).
    pub fn pg_ctl_stop(&self, mode: &str) {
        let _ = self.launched.stop(mode, PG_CTL_WAIT);
    }

    /// A crash at a random moment of a load: once `written` reaches `at_least` plus a random
    /// part of `spread` (printed, so that a failure can be replayed), an immediate stop; then
    /// `stop` ends the writers, they are joined, and the server starts again.
    pub fn stop_immediately_under_load(
        &self,
        written: &std::sync::atomic::AtomicUsize,
        at_least: usize,
        spread: usize,
        stop: &std::sync::atomic::AtomicBool,
        writers: Vec<std::thread::JoinHandle<()>>,
    ) {
        use std::sync::atomic::Ordering;
        let random = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as usize;
        let kill_after = at_least + random % spread;
        eprintln!("stopping the cluster immediately after {kill_after} writes");
        wait_until(
            "the load to reach the kill point",
            std::time::Duration::from_secs(60),
            || (written.load(Ordering::SeqCst) >= kill_after).then_some(()),
        );
        self.pg_ctl_stop("immediate");
        stop.store(true, Ordering::SeqCst);
        for writer in writers {
            writer.join().unwrap();
        }
        self.pg_ctl_start();
    }

    pub fn connect_to(&self, database: &str) -> Client {
        self.launched
            .connect_within(database, "connect_timeout=5", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("the test cluster: {e}"))
    }

    /// A connection, or None while the cluster is down or restarting.
    pub fn try_connect(&self) -> Option<Client> {
        Client::connect(
            &self.launched.conninfo("postgres", "connect_timeout=5"),
            postgres::NoTls,
        )
        .ok()
    }

    pub fn connect(&self) -> Client {
        self.connect_to("postgres")
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Change settings in postgresql.auto.conf and reload.
    pub fn reload_with(&self, settings: &[(&str, &str)]) {
        let mut db = self.connect();
        for (name, value) in settings {
            db.batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
                .unwrap();
        }
        db.batch_execute("SELECT pg_reload_conf()").unwrap();
    }
}

impl Drop for Cluster {
    /// Stops the cluster and removes its directory, unless `WEBHOOK_EXT_KEEP_CLUSTERS` is
    /// set: then the data directory and its `server.log` stay for a look afterwards.
    fn drop(&mut self) {
        self.pg_ctl_stop("fast");
        if std::env::var_os("WEBHOOK_EXT_KEEP_CLUSTERS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Earlier releases' install scripts (sql/archive), so that upgrade tests can create them;
/// `cargo pgrx install` only installs the current version and the upgrade scripts.
fn install_archived_versions() {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/archive");
    let target = postgres().extension_dir();
    for entry in std::fs::read_dir(archive).into_iter().flatten().flatten() {
        let destination = target.join(entry.file_name());
        if std::fs::read(&destination).ok() != std::fs::read(entry.path()).ok() {
            std::fs::copy(entry.path(), &destination)
                .unwrap_or_else(|e| panic!("cannot install {}: {e}", destination.display()));
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

static SHARED: OnceLock<Mutex<Option<Cluster>>> = OnceLock::new();

extern "C" fn stop_shared_cluster() {
    if let Some(lock) = SHARED.get() {
        if let Ok(mut guard) = lock.lock() {
            guard.take();
        }
    }
}

/// One cluster shared by every test of a test binary (they use distinct event names and
/// receivers), with the extension created in `postgres`; stopped when the binary exits.
pub fn shared_cluster() -> (u16, PathBuf) {
    let lock = SHARED.get_or_init(|| {
        let name = std::env::args().next().map(|a| {
            Path::new(&a)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .split('-')
                .next()
                .unwrap()
                .to_string()
        });
        let cluster = Cluster::start(&name.unwrap_or_else(|| "shared".into()), "");
        cluster
            .connect()
            .batch_execute("CREATE EXTENSION webhook_ext")
            .unwrap();
        // SAFETY: registers an `extern "C"` function of this binary, which lives until exit.
        unsafe { libc::atexit(stop_shared_cluster) };
        Mutex::new(Some(cluster))
    });
    let guard = lock.lock().unwrap();
    let cluster = guard.as_ref().unwrap();
    (cluster.port, cluster.log_path())
}

pub fn connect_shared() -> Client {
    let (port, _) = shared_cluster();
    Client::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        postgres::NoTls,
    )
    .expect("connect to the shared test cluster")
}

/// Poll `check` every 20 ms until it returns Some, or panic with `what` after `deadline`.
pub fn wait_until<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A name unique to this test run, usable as an identifier and an event prefix.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn query_string(db: &mut Client, sql: &str) -> String {
    db.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get::<_, String>(0)
}

pub fn query_i64(db: &mut Client, sql: &str) -> i64 {
    db.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get::<_, i64>(0)
}

/// The server's message of a failed statement (the error's Display only says "db error").
pub fn db_message(error: &postgres::Error) -> String {
    error
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_else(|| error.to_string())
}

/// Give a webhook a schedule of one attempt: its first failure ends the delivery `failed`.
pub fn one_attempt_only(db: &mut Client, webhook_id: i64) {
    db.execute(
        "UPDATE webhook SET retry_schedule = '{0s}' WHERE id = $1",
        &[&webhook_id],
    )
    .unwrap();
}

/// The pid of the running webhook_ext worker, if any.
pub fn worker_pid(db: &mut Client) -> Option<i32> {
    db.query_opt(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhook_ext worker'",
        &[],
    )
    .ok()
    .flatten()
    .map(|r| r.get(0))
}

pub fn delivery_status(db: &mut Client, delivery_id: i64) -> String {
    db.query_one(
        "SELECT status FROM webhook_delivery WHERE id = $1",
        &[&delivery_id],
    )
    .unwrap()
    .get(0)
}

/// A receiver that answers `failure` until the returned switch is set, then 200.
pub fn recovering_receiver(
    failure: u16,
) -> (Receiver, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let healthy = std::sync::Arc::new(AtomicBool::new(false));
    let switch = healthy.clone();
    let receiver = Receiver::start(move |_, _| {
        if switch.load(Ordering::SeqCst) {
            Reply::ok()
        } else {
            Reply::status(failure)
        }
    });
    (receiver, healthy)
}

/// Wait until delivery `delivery_id` reaches `status`.
pub fn wait_for_status(db: &mut Client, delivery_id: i64, status: &str, deadline: Duration) {
    wait_until(
        &format!("delivery {delivery_id} to be {status}"),
        deadline,
        || {
            let current: String = db
                .query_one(
                    "SELECT status FROM webhook_delivery WHERE id = $1",
                    &[&delivery_id],
                )
                .unwrap()
                .get(0);
            (current == status).then_some(())
        },
    )
}

/// A fenced block of a Markdown document: the line its opening fence is on (1-based), its
/// language (```sql, ```bash ...; empty if none) and its text.
pub struct Fenced {
    pub line: usize,
    pub language: String,
    pub text: String,
}

/// The fenced blocks of `markdown`, in order.
///
/// # Panics
/// If a block is not closed.
pub fn fenced_blocks(markdown: &str) -> Vec<Fenced> {
    let mut blocks = Vec::new();
    let mut open: Option<Fenced> = None;
    for (index, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (open.take(), fence) {
            (None, Some(language)) => {
                open = Some(Fenced {
                    line: index + 1,
                    language: language.trim().to_string(),
                    text: String::new(),
                })
            }
            (Some(block), Some(_)) => blocks.push(block),
            (Some(mut block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
                open = Some(block);
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "unclosed ``` block");
    blocks
}
