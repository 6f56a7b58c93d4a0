//! CPU time of this process and of its threads, by thread group, read from `/proc`.
//!
//! # What this module owns
//! - [`read_process_us`] and [`read_threads`]: one reading of `/proc/self/stat` and of every
//!   `/proc/self/task/<tid>/stat` (user + system time, and the thread's name). These are blocking
//!   file reads, so they must never run on a core's event loop: the server calls them from its
//!   `gavel-cpu` sampler thread ([`Sampler`]), `gavel-load` from its reporting thread.
//! - [`group_of`]: the thread group a thread name belongs to ([`THREAD_GROUPS`]).
//! - [`CpuTotals`]: the latest reading, in atomics, so that a scrape served on a core reads plain
//!   numbers and touches no file; and [`Sampler`], the thread that refreshes it every
//!   [`SAMPLE_INTERVAL`].
//!
//! # What it does not own
//! Rendering (see [`super::render_prometheus`], which takes a [`CpuSeconds`]) and any per-auction
//! arithmetic (dashboards and `gavel-load` divide by their own auction counts).
//!
//! A thread's time is only counted while the thread lives: `/proc/self/task` forgets a thread that
//! exited, so a group's counter can drop when one of its threads ends (Prometheus treats that as a
//! counter reset). Gavel's threads live as long as the server, so this does not happen in service.
//! The process total (`/proc/self/stat`) keeps the time of exited threads.
//! Units: microseconds inside, seconds in the exposition. Resolution is one clock tick
//! (`sysconf(_SC_CLK_TCK)`, normally 10 ms).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Thread groups, in the order of [`CpuSeconds::groups`] and of the `group` label.
pub const THREAD_GROUPS: [&str; 6] = [
    "cores",
    "store",
    "webhooks",
    "dns",
    "buyers_sandbox",
    "other",
];

/// How often the sampler thread refreshes [`CpuTotals`]; a scrape's figures are at most this old.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The group (one of [`THREAD_GROUPS`]) a thread belongs to, by its name as the kernel keeps it
/// (at most 15 bytes): `gavel-core-N` → cores; `gavel-log-N` (a legacy-driver core's log
/// writer), `gavel-wal-ckpt`, `gavel-expiry`, sled's own threads (`sled-io-N`, `log flusher`) and
/// the kernel's io_uring workers (`iou-wrk-N`, which carry out the cores' log writes and syncs)
/// → store; `gavel-webhooks`, `gavel-webhook-N` → webhooks;
/// `gavel-dns-N` → dns; `gavel-mock-N` (the sandbox buyer fleet) → buyers_sandbox; anything else
/// → other.
pub fn group_of(thread_name: &str) -> &'static str {
    let n = thread_name;
    if n.starts_with("gavel-core-") {
        "cores"
    } else if n.starts_with("gavel-log-")
        || n == "gavel-wal-ckpt"
        || n.starts_with("iou-wrk-")
        || n == "gavel-expiry"
        || n.starts_with("sled")
        || n == "log flusher"
    {
        "store"
    } else if n == "gavel-webhooks" || n.starts_with("gavel-webhook-") {
        "webhooks"
    } else if n.starts_with("gavel-dns-") {
        "dns"
    } else if n.starts_with("gavel-mock-") {
        "buyers_sandbox"
    } else {
        "other"
    }
}

/// One thread's CPU time at the moment it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadCpu {
    /// Kernel thread id.
    pub tid: u64,
    /// The thread's name (`comm`), at most 15 bytes.
    pub name: String,
    /// User + system time, µs.
    pub cpu_us: u64,
}

/// Microseconds per clock tick (the unit of `utime`/`stime` in `/proc/.../stat`).
pub fn us_per_tick() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        1_000_000 / ticks as u64
    } else {
        10_000
    }
}

/// The name and user + system ticks of a `stat` line. The name sits between the first `(` and
/// the last `)` (it may itself hold spaces and parentheses); `utime` and `stime` are fields 14
/// and 15, i.e. the 12th and 13th after the name.
pub fn parse_stat(line: &str) -> Option<(String, u64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?.to_string();
    let mut rest = line.get(close + 1..)?.split_ascii_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// Reads one `stat` file. Blocking: never call it on a core.
#[allow(clippy::disallowed_methods)] // Runs on the sampler or a reporting thread, never a core.
fn read_stat(path: &str) -> std::io::Result<(String, u64)> {
    let text = std::fs::read_to_string(path)?;
    parse_stat(&text)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad {path}")))
}

/// This process's user + system CPU time in µs, exited threads included (`/proc/self/stat`).
/// Blocking: never call it on a core.
pub fn read_process_us() -> std::io::Result<u64> {
    let (_, ticks) = read_stat("/proc/self/stat")?;
    Ok(ticks * us_per_tick())
}

/// Every live thread of this process with its CPU time (`/proc/self/task/*/stat`). A thread that
/// exits while the directory is read is skipped. Blocking: never call it on a core.
pub fn read_threads() -> std::io::Result<Vec<ThreadCpu>> {
    let per_tick = us_per_tick();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Ok((name, ticks)) = read_stat(&format!("/proc/self/task/{tid}/stat")) {
            out.push(ThreadCpu {
                tid,
                name,
                cpu_us: ticks * per_tick,
            });
        }
    }
    Ok(out)
}

/// The CPU figures a scrape renders: the process total and one total per [`THREAD_GROUPS`] entry,
/// in µs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuSeconds {
    pub process_us: u64,
    pub groups_us: [u64; THREAD_GROUPS.len()],
}

impl CpuSeconds {
    /// Reads `/proc` now. Blocking: never call it on a core.
    pub fn read() -> std::io::Result<CpuSeconds> {
        let mut out = CpuSeconds {
            process_us: read_process_us()?,
            ..CpuSeconds::default()
        };
        for t in read_threads()? {
            let g = group_of(&t.name);
            if let Some(i) = THREAD_GROUPS.iter().position(|x| *x == g) {
                out.groups_us[i] += t.cpu_us;
            }
        }
        Ok(out)
    }
}

/// The latest [`CpuSeconds`], written by the sampler thread and read by scrapes (Relaxed: each
/// number stands alone).
#[derive(Debug, Default)]
pub struct CpuTotals {
    process_us: AtomicU64,
    groups_us: [AtomicU64; THREAD_GROUPS.len()],
}

impl CpuTotals {
    pub fn store(&self, s: &CpuSeconds) {
        self.process_us.store(s.process_us, Ordering::Relaxed);
        for (a, v) in self.groups_us.iter().zip(s.groups_us) {
            a.store(v, Ordering::Relaxed);
        }
    }

    pub fn load(&self) -> CpuSeconds {
        CpuSeconds {
            process_us: self.process_us.load(Ordering::Relaxed),
            groups_us: std::array::from_fn(|i| self.groups_us[i].load(Ordering::Relaxed)),
        }
    }
}

/// The `gavel-cpu` thread: reads `/proc` at start and then every [`SAMPLE_INTERVAL`] into a
/// [`CpuTotals`]; [`Sampler::stop`] (or drop) ends it.
pub struct Sampler {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts the sampler. Where `/proc` cannot be read (not Linux) the totals stay zero.
    pub fn start(totals: Arc<CpuTotals>) -> Result<Sampler, String> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("gavel-cpu".into())
            .spawn(move || loop {
                if let Ok(s) = CpuSeconds::read() {
                    totals.store(&s);
                }
                // A message or a dropped sender both mean stop.
                if !matches!(
                    stopped.recv_timeout(SAMPLE_INTERVAL),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout)
                ) {
                    return;
                }
            })
            .map_err(|e| format!("cannot start the CPU sampler: {e}"))?;
        Ok(Sampler {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_odd_names() {
        let line = "1234 (gavel-core-0) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("gavel-core-0".into(), 281)));
        let odd = "7 (a) b (c) R 1 2 3 4 5 6 7 8 9 10 4 5 0 0";
        assert_eq!(parse_stat(odd), Some(("a) b (c".into(), 9)));
        assert_eq!(parse_stat("7 (x) R 1 2"), None);
    }

    #[test]
    fn thread_names_map_to_groups() {
        for (name, group) in [
            ("gavel-core-0", "cores"),
            ("gavel-core-11", "cores"),
            ("gavel-log-3", "store"),
            ("gavel-wal-ckpt", "store"),
            ("iou-wrk-28193", "store"),
            ("gavel-expiry", "store"),
            ("sled-io-2", "store"),
            ("log flusher", "store"),
            ("gavel-webhooks", "webhooks"),
            ("gavel-webhook-1", "webhooks"),
            ("gavel-dns-0", "dns"),
            ("gavel-mock-2", "buyers_sandbox"),
            ("gavel-cpu", "other"),
            ("gavel", "other"),
        ] {
            assert_eq!(group_of(name), group, "{name}");
        }
    }

    #[test]
    fn reading_proc_finds_this_thread() {
        let s = CpuSeconds::read().expect("/proc readable");
        let threads = read_threads().unwrap();
        assert!(threads.iter().any(|t| t.tid > 0 && !t.name.is_empty()));
        let totals = CpuTotals::default();
        totals.store(&s);
        assert_eq!(totals.load(), s);
    }
}
