//! Core threads' plumbing: the io driver (io_uring or epoll) and the runtime it builds, which
//! core a thread runs (`current_core`), how many cores to run and which CPUs they may pin to.

use super::*;

/// Resolves `auto` to the driver this kernel supports; `uring` fails when it is unavailable.
pub fn resolve_driver(d: Driver) -> std::io::Result<Driver> {
    let uring = monoio::utils::detect_uring();
    match d {
        Driver::Auto => Ok(if uring { Driver::Uring } else { Driver::Legacy }),
        Driver::Uring if !uring => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "driver = uring, but io_uring is not available on this kernel",
        )),
        d => Ok(d),
    }
}

/// Runs `make()` on a fresh monoio runtime of the chosen driver until it completes.
pub fn block_on<F, Fut>(driver: Driver, entries: u32, make: F) -> std::io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    run_runtime(driver, entries, None, make)
}

/// Builds the runtime for `driver` (a legacy one with `pool` attached, when given) and runs
/// `make()` on it until it completes.
pub(super) fn run_runtime<F, Fut>(
    driver: Driver,
    entries: u32,
    pool: Option<crate::store::wal::BlockingThread>,
    make: F,
) -> std::io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    match driver {
        Driver::Uring => Ok(monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(entries)
            .enable_timer()
            .build()?
            .block_on(make())),
        Driver::Legacy | Driver::Auto => {
            let mut builder = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .with_entries(entries)
                .enable_timer();
            if let Some(pool) = pool {
                builder = builder.attach_thread_pool(Box::new(pool));
            }
            Ok(builder.build()?.block_on(make()))
        }
    }
}

thread_local! {
    /// The core whose event loop runs on this thread, while [`block_on_core`] runs it.
    static CURRENT_CORE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The core whose event loop runs on this thread; `None` off the cores (the store's threads, the
/// webhook worker, tests). Per-core state (an auction shard) checks it in debug builds, so state
/// reached from the wrong core fails loudly instead of racing in silence.
pub fn current_core() -> Option<usize> {
    CURRENT_CORE.with(Cell::get)
}

/// Marks this thread as running core `id` until the guard drops, which restores what was there
/// before. [`block_on_core`] enters its core; a test that drives per-core state by hand may too.
pub fn enter_core(id: usize) -> CoreGuard {
    CoreGuard {
        previous: CURRENT_CORE.with(|c| c.replace(Some(id))),
    }
}

/// Keeps [`current_core`] set; see [`enter_core`].
pub struct CoreGuard {
    previous: Option<usize>,
}

impl Drop for CoreGuard {
    fn drop(&mut self) {
        CURRENT_CORE.with(|c| c.set(self.previous));
    }
}

/// [`block_on`] for a core thread: on the legacy driver the runtime gets one blocking thread,
/// `gavel-log-{id}`, where the core's write-ahead log writes and syncs (io_uring needs none).
/// While it runs, [`current_core`] is `id` on this thread.
pub fn block_on_core<F, Fut>(
    driver: Driver,
    id: usize,
    entries: u32,
    make: F,
) -> std::io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let pool = match driver {
        Driver::Uring => None,
        Driver::Legacy | Driver::Auto => Some(crate::store::wal::BlockingThread::start(format!(
            "gavel-log-{id}"
        ))?),
    };
    let _core = enter_core(id);
    run_runtime(driver, entries, pool, make)
}

/// Number of cores a server with this `[server]` section runs: `server.cores`, or, when 0, one per
/// CPU the process may run on ([`allowed_cpus`]), fewer when a CPU quota allows less
/// (`available_parallelism` counts cgroup quotas).
pub fn core_count(server: &ServerConfig) -> usize {
    if server.cores > 0 {
        server.cores
    } else {
        let quota = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        allowed_cpus().len().min(quota).max(1)
    }
}

/// CPUs this process may run on, in ascending order: its affinity mask (what `taskset`, a
/// cgroup cpuset or a container runtime allowed), which need not be CPUs 0..n−1. When the mask
/// cannot be read, CPUs 0..`available_parallelism`.
pub fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `cpu_set_t` is plain bits, so all-zero is a valid (empty) set; the kernel
        // writes at most `size_of::<cpu_set_t>()` bytes into it, and `CPU_ISSET` only reads it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (0..n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_thread_knows_its_core_and_forgets_it_after() {
        assert_eq!(current_core(), None);
        {
            let _outer = enter_core(3);
            assert_eq!(current_core(), Some(3));
            {
                let _inner = enter_core(5);
                assert_eq!(current_core(), Some(5));
            }
            assert_eq!(current_core(), Some(3));
        }
        assert_eq!(current_core(), None);
        let inside = block_on_core(Driver::Legacy, 7, 64, || async { current_core() })
            .expect("core runtime");
        assert_eq!(inside, Some(7));
        assert_eq!(current_core(), None);
    }

    #[test]
    fn allowed_cpus_are_distinct_and_ascending() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "{cpus:?}");
    }
}
