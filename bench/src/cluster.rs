//! The processes the benchmark starts, each behind a guard that stops it on drop (also on
//! error and on Ctrl-C): a PostgreSQL cluster run as the `postgres` OS user (launched by
//! `webhook_cluster`, as the end-to-end tests' are), and nginx.
//!
//! Which PostgreSQL: the one whose `pg_config` is in `WEBHOOK_EXT_PG_CONFIG` (`bench/run.sh
//! --pg 18` sets it), default Debian's 15.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postgres::Client;
use webhook_cluster::Init;
pub use webhook_cluster::{free_port, postgres};

use crate::util::{log, sleep, Result};

/// Root of everything a run writes; `bench/run.sh` cleans up leftovers of killed runs here.
pub const RUN_ROOT: &str = "/tmp/webhook_bench";

/// The benchmark's cluster: the tests' launcher (`webhook_cluster`) with the data directory
/// under the run directory, and the server log kept after the run.
pub struct Cluster {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    launched: webhook_cluster::Cluster,
    running: bool,
}

impl Cluster {
    /// initdb a new cluster under `run_dir` and append `conf` to its postgresql.conf.
    pub fn init(run_dir: &Path, conf: &str) -> Result<Cluster> {
        let dir = run_dir.join("pg");
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for p in [run_dir, dir.as_path()] {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o777));
        }
        let data = dir.join("data");
        let launched = webhook_cluster::Cluster::init(
            postgres(),
            &Init {
                data: &data,
                socket_dir: &dir,
                conf: &format!("# --- webhook_ext benchmark ---\n{conf}"),
                no_sync: false,
            },
        )?;
        Ok(Cluster {
            dir,
            data,
            port: launched.port,
            launched,
            running: false,
        })
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn start(&mut self) -> Result<()> {
        self.launched
            .start(&self.log_path(), Duration::from_secs(120))
            .map_err(|e| format!("{e}\n{}", self.log_tail(30)))?;
        self.running = true;
        Ok(())
    }

    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        if self.launched.stop("fast", Duration::from_secs(60)).is_err() {
            let _ = self.launched.stop("immediate", Duration::from_secs(30));
        }
        self.running = false;
    }

    /// Appends settings to postgresql.conf (takes effect on restart or reload).
    pub fn configure(&self, conf: &str) -> Result<()> {
        self.launched.configure(conf)
    }

    pub fn connect(&self, db: &str) -> Result<Client> {
        self.launched.connect_within(
            db,
            "connect_timeout=10 application_name=webhook-bench",
            Duration::from_secs(60),
        )
    }

    /// The postmaster's pid (first line of postmaster.pid).
    pub fn postmaster_pid(&self) -> Option<i32> {
        fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// `pg_waldump --stats=record` over this cluster's WAL from `start` to `end` (LSNs as
    /// `pg_lsn` prints them), run as the `postgres` user, who owns pg_wal. The WAL up to
    /// `end` must be flushed.
    pub fn waldump_stats(&self, start: &str, end: &str) -> Result<String> {
        let wal = self.data.join("pg_wal");
        let out = postgres()
            .as_postgres("pg_waldump")
            .args(["--path", wal.to_str().unwrap()])
            .args(["--start", start, "--end", end, "--stats=record"])
            .output()
            .map_err(|e| format!("cannot run pg_waldump: {e}"))?;
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        // The report comes before any complaint about the end of the WAL, and is what counts.
        if !report.lines().any(|l| l.starts_with("Total")) {
            return Err(format!(
                "pg_waldump --start {start} --end {end} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(report)
    }

    /// `pg_waldump`'s listing (one line per record) of this cluster's WAL from `start` to
    /// `end`, as `waldump_stats` runs it.
    pub fn waldump_listing(&self, start: &str, end: &str) -> Result<String> {
        let wal = self.data.join("pg_wal");
        let out = postgres()
            .as_postgres("pg_waldump")
            .args(["--path", wal.to_str().unwrap()])
            .args(["--start", start, "--end", end])
            .output()
            .map_err(|e| format!("cannot run pg_waldump: {e}"))?;
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        if !listing.lines().any(|l| l.starts_with("rmgr: ")) {
            return Err(format!(
                "pg_waldump --start {start} --end {end} listed no record ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(listing)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            log("stopping the PostgreSQL cluster");
        }
        self.stop();
        // The server log outlives the run directory, for a look afterwards.
        let keep = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/webhook-bench/server.log");
        if let Some(dir) = keep.parent() {
            let _ = fs::create_dir_all(dir);
        }
        let _ = fs::copy(self.log_path(), keep);
    }
}

/// nginx from Debian's packages, answering 200 with an empty body: the reference receiver
/// our own is compared against. Killed (with its workers) on drop.
pub struct Nginx {
    child: Child,
    pub port: u16,
}

pub fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

impl Nginx {
    pub fn start(run_dir: &Path, workers: usize) -> Result<Option<Nginx>> {
        let Some(binary) = nginx_binary() else {
            return Ok(None);
        };
        let dir = run_dir.join("nginx");
        fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
        let port = free_port();
        let conf = format!(
            "worker_processes {workers};\n\
             pid {dir}/nginx.pid;\n\
             error_log {dir}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {dir}/tmp;\n\
               keepalive_requests 10000000;\n\
               keepalive_timeout 300s;\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 location / {{ return 200; }}\n\
               }}\n\
             }}\n",
            dir = dir.display()
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .args([
                "-p",
                dir.to_str().unwrap(),
                "-c",
                conf_path.to_str().unwrap(),
            ])
            .args(["-g", "daemon off; master_process on;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nginx: {e}"))?;
        let nginx = Nginx { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("nginx did not start listening".into());
            }
            sleep(Duration::from_millis(50))?;
        }
        Ok(Some(nginx))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: graceful stop of the master and its workers; SIGKILL if it lingers.
        // SAFETY: kill(2) on the pid of a child we started and have not reaped; no memory is
        // touched.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The library Postgres loads at start. The machine is shared and other test runs install
/// a debug build there; before each cluster start it must be our release build, so it is
/// put back (unlink + copy, as `cargo pgrx install` does: running servers keep their
/// mapping) when it differs. Returns what was done, for the report.
pub fn ensure_release_library(repo: &Path) -> Result<String> {
    let installed = &postgres().pkglib_dir.join("webhook_ext.so");
    let built = repo.join("target/release/libwebhook_ext.so");
    let Ok(release) = fs::read(&built) else {
        return Ok(format!(
            "not verified: {} is missing (run bench/run.sh, which builds it)",
            built.display()
        ));
    };
    if fs::read(installed).ok().as_deref() == Some(release.as_slice()) {
        return Ok(
            "release build (target/release/libwebhook_ext.so), verified before each start".into(),
        );
    }
    log("the installed webhook_ext.so is not our release build (another run installed one): putting it back");
    let tmp = installed.with_extension("so.bench-tmp");
    fs::write(&tmp, &release).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, installed).map_err(|e| format!("{}: {e}", installed.display()))?;
    Ok("release build (target/release/libwebhook_ext.so); it had been replaced by another build during the run and was put back before a start".into())
}
