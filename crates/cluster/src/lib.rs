//! Throwaway PostgreSQL clusters, the one launcher of the end-to-end tests (`tests/harness`)
//! and the benchmarks (`bench/src/cluster.rs`): initdb, pg_ctl start/stop and connections,
//! with the PostgreSQL programs run as the `postgres` OS user when started as root.
//!
//! Which PostgreSQL: the one whose `pg_config` is in `WEBHOOK_EXT_PG_CONFIG` (default
//! Debian's 15, `/usr/lib/postgresql/15/bin/pg_config`); its binaries, extension and library
//! directories come from that `pg_config`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use postgres::Client;

/// The PostgreSQL installation, as its `pg_config` reports it.
#[derive(Debug)]
pub struct Postgres {
    pub pg_config: PathBuf,
    /// `pg_config --bindir`: initdb, pg_ctl, pg_dump, pgbench, ...
    pub bin_dir: PathBuf,
    /// `pg_config --sharedir`; extension control and SQL files live in `extension/` under it.
    pub share_dir: PathBuf,
    /// `pg_config --pkglibdir`, where webhook_ext.so is installed.
    pub pkglib_dir: PathBuf,
    /// The major version, e.g. 17.
    pub major: u32,
}

impl Postgres {
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    pub fn extension_dir(&self) -> PathBuf {
        self.share_dir.join("extension")
    }

    /// A command running PostgreSQL program `name` as the `postgres` OS user (through
    /// `runuser` when this process is root; as this user otherwise).
    pub fn as_postgres(&self, name: &str) -> Command {
        let path = self.program(name);
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// What `pg_config` says about its installation.
    ///
    /// # Panics
    /// If `pg_config` cannot be run or answers unexpectedly.
    pub fn from_pg_config(pg_config: &Path) -> Postgres {
        let ask = |flag: &str| {
            let out = Command::new(pg_config)
                .arg(flag)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", pg_config.display()));
            assert!(
                out.status.success(),
                "{} {flag} failed",
                pg_config.display()
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        // "PostgreSQL 17.11" -> 17
        let version = ask("--version");
        let major = version
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unexpected pg_config --version: {version}"));
        Postgres {
            pg_config: pg_config.to_path_buf(),
            bin_dir: PathBuf::from(ask("--bindir")),
            share_dir: PathBuf::from(ask("--sharedir")),
            pkglib_dir: PathBuf::from(ask("--pkglibdir")),
            major,
        }
    }
}

/// The PostgreSQL chosen by `WEBHOOK_EXT_PG_CONFIG` (default Debian's 15).
pub fn postgres() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| {
        let pg_config = std::env::var("WEBHOOK_EXT_PG_CONFIG")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".into());
        Postgres::from_pg_config(Path::new(&pg_config))
    })
}

/// A TCP port free on 127.0.0.1 right now.
///
/// # Panics
/// If no port on 127.0.0.1 can be bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// How a cluster is made.
pub struct Init<'a> {
    /// The data directory (created by initdb).
    pub data: &'a Path,
    /// Where the server's Unix socket goes.
    pub socket_dir: &'a Path,
    /// Appended to postgresql.conf after `listen_addresses`, `port` and
    /// `unix_socket_directories`.
    pub conf: &'a str,
    /// initdb `--no-sync`: faster, for clusters whose crash safety does not matter.
    pub no_sync: bool,
}

/// A cluster on 127.0.0.1, stopped or running; whoever holds it decides when it stops.
pub struct Cluster {
    pub data: PathBuf,
    pub port: u16,
    /// The installation it runs on.
    pub pg: &'static Postgres,
}

fn failure(what: &str, output: std::io::Result<Output>) -> Result<(), String> {
    match output {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )),
        Err(e) => Err(format!("cannot run {what}: {e}")),
    }
}

impl Cluster {
    /// initdb a new cluster on `pg` on a free port, with `init.conf` in its postgresql.conf.
    pub fn init(pg: &'static Postgres, init: &Init<'_>) -> Result<Cluster, String> {
        let mut initdb = pg.as_postgres("initdb");
        initdb.arg("-D").arg(init.data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if init.no_sync {
            initdb.arg("--no-sync");
        }
        failure("initdb", initdb.output())?;
        let port = free_port();
        let cluster = Cluster {
            data: init.data.to_path_buf(),
            port,
            pg,
        };
        cluster.configure(&format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n{}",
            init.socket_dir.display(),
            init.conf
        ))?;
        Ok(cluster)
    }

    /// Appends settings to postgresql.conf (taken on the next start or reload).
    pub fn configure(&self, conf: &str) -> Result<(), String> {
        use std::io::Write;
        let path = self.data.join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("\n{conf}\n").as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `pg_ctl start`, waiting up to `timeout` for the server to accept connections; the
    /// server logs to `log`.
    pub fn start(&self, log: &Path, timeout: Duration) -> Result<(), String> {
        let out = self
            .pg
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(log)
            .args(["-w", "-t", &timeout.as_secs().to_string(), "start"])
            .output();
        failure("pg_ctl start", out)
    }

    /// `pg_ctl stop -m <mode>` (smart, fast, immediate), waiting up to `timeout`.
    pub fn stop(&self, mode: &str, timeout: Duration) -> Result<(), String> {
        let out = self
            .pg
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args([
                "-m",
                mode,
                "-w",
                "-t",
                &timeout.as_secs().to_string(),
                "stop",
            ])
            .output();
        failure("pg_ctl stop", out)
    }

    /// The connection string of `database` as `postgres`, plus `options` (`key=value ...`).
    pub fn conninfo(&self, database: &str, options: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={database} {options}",
            self.port
        )
    }

    /// A connection, retried every 100 ms while the server is not (yet) up, for `patience`.
    pub fn connect_within(
        &self,
        database: &str,
        options: &str,
        patience: Duration,
    ) -> Result<Client, String> {
        let deadline = Instant::now() + patience;
        loop {
            match Client::connect(&self.conninfo(database, options), postgres::NoTls) {
                Ok(client) => return Ok(client),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("cannot connect to {database}: {e}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}
