//! What the run ran on, and what processes use: /proc readers for memory and CPU time.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::util::capture;

pub struct Machine {
    pub cpus: String,
    pub model: String,
    pub memory: String,
    pub kernel: String,
    pub postgres: String,
    pub date: String,
    pub commit: String,
    pub rustc: String,
    pub load_at_start: String,
}

pub fn machine(repo: &str) -> Machine {
    let model = capture("lscpu", &[])
        .lines()
        .find(|l| l.starts_with("Model name:"))
        .map(|l| l["Model name:".len()..].trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem_kb: f64 = meminfo("MemTotal:").unwrap_or(0.0);
    let commit = capture("git", &["-C", repo, "rev-parse", "--short=12", "HEAD"]);
    let dirty = !capture(
        "git",
        &["-C", repo, "status", "--porcelain", "--untracked-files=no"],
    )
    .is_empty();
    Machine {
        cpus: capture("nproc", &[]),
        model,
        memory: format!("{:.1} GiB", mem_kb / 1024.0 / 1024.0),
        kernel: capture("uname", &["-sr"]),
        postgres: capture(
            crate::cluster::postgres()
                .program("postgres")
                .to_str()
                .unwrap(),
            &["--version"],
        ),
        date: capture("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        commit: if dirty {
            format!("{commit} (with uncommitted changes in the working tree)")
        } else {
            commit
        },
        rustc: capture("rustc", &["--version"]),
        load_at_start: loadavg(),
    }
}

fn meminfo(key: &str) -> Option<f64> {
    fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Resident memory of a process, from /proc/<pid>/status (bytes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

pub fn rss(pid: i32) -> Option<Rss> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Some(Rss {
        total: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
        shmem: field("RssShmem:"),
    })
}

/// Samples a process' RSS every 100 ms until stopped; keeps the sample with the largest total.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<Mutex<Rss>>,
    handle: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: i32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(Mutex::new(Rss::default()));
        let handle = {
            let (stop, max) = (stop.clone(), max.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(r) = rss(pid) {
                        let mut m = max.lock().unwrap();
                        if r.total > m.total {
                            *m = r;
                        }
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            })
        };
        RssSampler {
            stop,
            max,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> Rss {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let max = *self.max.lock().unwrap();
        max
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of /proc/<path>/stat, in seconds.
fn stat_cpu(path: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{path}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn stat_ppid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Busy and total CPU seconds of the whole machine (all cores), from /proc/stat.
fn machine_cpu() -> (f64, f64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / clock_ticks(), total / clock_ticks())
}

/// CPU seconds used so far by the pieces of the system under test.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSnapshot {
    pub worker_main: f64,
    pub worker_http: f64,
    pub postgres_other: f64,
    pub bench: f64,
    pub machine_busy: f64,
    pub machine_total: f64,
}

/// `worker`: the worker's pid (its main thread has tid == pid); `postmaster`: every other
/// child of it counts as "other Postgres processes".
pub fn cpu_snapshot(worker: i32, postmaster: i32) -> CpuSnapshot {
    let mut s = CpuSnapshot::default();
    let main = stat_cpu(&format!("{worker}/task/{worker}")).unwrap_or(0.0);
    let all_worker = stat_cpu(&worker.to_string()).unwrap_or(0.0);
    s.worker_main = main;
    s.worker_http = (all_worker - main).max(0.0);
    let mut others = stat_cpu(&postmaster.to_string()).unwrap_or(0.0);
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid != worker && stat_ppid(pid) == Some(postmaster) {
                others += stat_cpu(&pid.to_string()).unwrap_or(0.0);
            }
        }
    }
    s.postgres_other = others;
    s.bench = stat_cpu("self").unwrap_or(0.0);
    let (busy, total) = machine_cpu();
    s.machine_busy = busy;
    s.machine_total = total;
    s
}

/// CPU used between two snapshots, as a percentage of one core, over `wall` seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub worker_main: f64,
    pub worker_http: f64,
    pub postgres_other: f64,
    pub bench: f64,
    /// Everything on the machine, in % of one core (2 cores: at most 200 %).
    pub machine: f64,
    /// Machine busy time not accounted for by the above (other users of the machine).
    pub outside: f64,
}

pub fn cpu_use(a: &CpuSnapshot, b: &CpuSnapshot, wall: f64) -> CpuUse {
    let p = |x: f64| 100.0 * x / wall.max(1e-9);
    let cores = capture("nproc", &[]).parse::<f64>().unwrap_or(1.0);
    let machine_busy = b.machine_busy - a.machine_busy;
    let machine_total = (b.machine_total - a.machine_total).max(1e-9);
    let machine = 100.0 * cores * machine_busy / machine_total;
    let ours = (b.worker_main - a.worker_main)
        + (b.worker_http - a.worker_http)
        + (b.postgres_other - a.postgres_other)
        + (b.bench - a.bench);
    CpuUse {
        worker_main: p(b.worker_main - a.worker_main),
        worker_http: p(b.worker_http - a.worker_http),
        postgres_other: p(b.postgres_other - a.postgres_other),
        bench: p(b.bench - a.bench),
        machine,
        outside: (machine - p(ours)).max(0.0),
    }
}

/// Voluntary + involuntary context switches of every thread of a process so far.
pub fn context_switches(pid: i32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|t| {
            fs::read_to_string(t.path().join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}
