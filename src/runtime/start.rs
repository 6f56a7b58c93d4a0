//! Starting and stopping a server: the store, the listeners, the core threads and what each core
//! runs until shutdown, then the drain that lets in-flight work finish.

use super::*;

/// Commits one core's log lets wait for the disk, in units of `store.group_commit_max_batch`:
/// past `LOG_QUEUE_GROUPS * group_commit_max_batch` waiting commits the disk is not keeping up and
/// a commit fails fast with `Overloaded` (503) instead of queueing without bound.
pub const LOG_QUEUE_GROUPS: usize = 8;

/// Binds every core's listener, starts the core threads and returns once all of them are serving.
pub fn start<A: App, S: Service<A>>(config: Config) -> Result<ServerHandle<A>, String> {
    start_with_clock::<A, S>(config, Clock::system())
}

/// [`start`] with wall-clock time read from `clock`. Production runs on [`Clock::system`]; tests
/// hand in [`Clock::manual`] and advance it to expire records, tokens and retries without
/// sleeping.
pub fn start_with_clock<A: App, S: Service<A>>(
    config: Config,
    clock: Clock,
) -> Result<ServerHandle<A>, String> {
    let cores = core_count(&config.server);
    // Before anything opens a file: a limit too low to serve is refused with its numbers.
    let cap = connection_cap_for(&config, cores)?;
    let driver = resolve_driver(config.server.driver).map_err(|e| e.to_string())?;
    let store = Arc::new(open_store(&config)?);
    let checkpointer = Checkpointer::start(store.clone())
        .map_err(|e| format!("cannot start the log checkpoint thread: {e}"))?;
    let expiry = store
        .spawn_expiry(clock.clone())
        .map_err(|e| format!("cannot start store expiry: {e}"))?;
    let (app, handles) = A::global(&config, &store, &clock)?;
    let cpu = Arc::new(crate::metrics::cpu::CpuTotals::default());
    let cpu_sampler = crate::metrics::cpu::Sampler::start(cpu.clone())?;

    let (listeners, addr, mut ops_listener, metrics_addr) = bind_listeners(&config, cores)?;

    // Read before the cores start (blocking file reads belong here); checked at load already.
    let tls_at_start = config
        .server
        .tls
        .as_ref()
        .map(crate::http::tls::server_config)
        .transpose()
        .map_err(|e| format!("server.{e}"))?;
    let shared = Arc::new(Shared::<A> {
        addr,
        metrics_addr,
        cores,
        driver,
        inboxes: (0..cores).map(|_| Inbox::new(INBOX_CAPACITY)).collect(),
        store,
        commit_counters: (0..cores)
            .map(|_| Arc::new(CommitCounters::new()))
            .collect(),
        checkpointer,
        stats: (0..cores).map(|_| CoreStats::default()).collect(),
        live_connections: AtomicUsize::new(0),
        live_jobs: AtomicUsize::new(0),
        max_connections_per_core: cap,
        cpu,
        clock,
        tls_at_start,
        config,
        app,
    });

    let (threads, ready) = spawn_cores::<A, S>(&shared, listeners, ops_listener.take())?;
    let handle = ServerHandle {
        addr,
        metrics_addr,
        shared,
        threads,
        _expiry: expiry,
        handles,
        cpu_sampler,
    };
    // Every core reports once; the first that cannot start stops the others.
    for _ in 0..cores {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                handle.stop();
                return Err(e);
            }
            Err(_) => return Err("a core thread exited during start".into()),
        }
    }
    tracing::info!(%addr, cores, driver = ?driver, "gavel serving");
    if let Some(m) = metrics_addr {
        tracing::info!(addr = %m, "operations listener serving /metrics, /healthz and /readyz");
    }
    Ok(handle)
}

/// The core threads, and the channel each reports its start on (`Err` naming why it failed).
type CoreThreads = (
    Vec<std::thread::JoinHandle<()>>,
    crossbeam_channel::Receiver<Result<(), String>>,
);

/// Starts one pinned `gavel-core-N` thread per listener, core 0 also serving `ops` (the
/// operations listener). Each thread sends once on the returned channel: `Ok` when its core
/// serves, or why it could not start.
pub(super) fn spawn_cores<A: App, S: Service<A>>(
    shared: &Arc<Shared<A>>,
    listeners: Vec<std::net::TcpListener>,
    mut ops_listener: Option<std::net::TcpListener>,
) -> Result<CoreThreads, String> {
    let cpus = allowed_cpus();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), String>>(shared.cores);
    let mut threads = Vec::with_capacity(shared.cores);
    for (id, listener) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let cpu = cpus.get(id % cpus.len().max(1)).copied();
        let ops = if id == 0 { ops_listener.take() } else { None };
        // Architecture Invariant [no-blocking]: nothing on this thread's event loop blocks: no
        // std::fs, sleeps, blocking locks, sled flushes or name resolution (clippy.toml bans them).
        let t = std::thread::Builder::new()
            .name(format!("gavel-core-{id}"))
            .spawn(move || {
                if shared.config.server.pin_threads {
                    if let Some(cpu) = cpu {
                        if let Err(e) = monoio::utils::bind_to_cpu_set(Some(cpu)) {
                            tracing::warn!(core = id, cpu, error = ?e, "cannot pin core thread");
                        }
                    }
                }
                let res = block_on_core(shared.driver, id, 4096, || {
                    core_main::<A, S>(id, shared.clone(), listener, ops, ready.clone())
                });
                if let Err(e) = res {
                    let _ = ready.send(Err(format!("core {id}: cannot start runtime: {e}")));
                }
            })
            .map_err(|e| format!("cannot spawn core thread: {e}"))?;
        threads.push(t);
    }
    Ok((threads, ready_rx))
}

/// Opens (or creates) the store named by `[store]`.
pub fn open_store(config: &Config) -> Result<Store, String> {
    const DAY_MS: u64 = 24 * 60 * 60 * 1000;
    let st = &config.store;
    let opts = StoreOptions {
        path: st.path.clone(),
        cache_capacity_bytes: st.cache_capacity_bytes,
        idempotency_retention_ms: st.idempotency_retention_days * DAY_MS,
        record_retention_ms: st.record_retention_days * DAY_MS,
        expiry_interval_ms: st.expiry_interval_ms,
        group_commit_max_batch: st.group_commit_max_batch,
        durable: st.durable,
    };
    if !st.durable {
        tracing::warn!(
            "store.durable = false: answers leave before records reach the disk (benchmarks only)"
        );
    }
    Store::open(&opts).map_err(|e| format!("cannot open the store at {}: {e}", st.path.display()))
}

pub(super) async fn core_main<A: App, S: Service<A>>(
    id: usize,
    shared: Arc<Shared<A>>,
    listener: std::net::TcpListener,
    ops_listener: Option<std::net::TcpListener>,
    ready: crossbeam_channel::Sender<Result<(), String>>,
) {
    let (core, listener, ops_listener) =
        match build_core(id, shared.clone(), listener, ops_listener).await {
            Ok(built) => built,
            Err(e) => {
                let _ = ready.send(Err(format!("core {id}: {e}")));
                return;
            }
        };
    // The inbox task ends when `stopped` fires, so nothing keeps this core's state (and through
    // it the shared state and the store) alive once the core has finished.
    let stopped = Shutdown::new();
    let drain = spawn_until(&stopped, handoff::drain(core.clone()));
    // The app's own work beside the connections (for the exchange: evicting auctions on time).
    let background = spawn_until(&stopped, A::background(core.clone()));
    // The loop tick measures how late this core runs, the signal that sheds new work.
    let tick = spawn_until(&stopped, admission::tick(core.clone()));
    let _ = ready.send(Ok(()));
    drop(ready);

    let server = &shared.config.server;
    let limits = crate::http::ConnLimits {
        header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(server.idle_timeout_ms),
        max_headers_bytes: MAX_HEADER_BYTES,
    };
    if let Some(ops) = ops_listener {
        monoio::spawn(serve_ops::<A, S>(core.clone(), ops, limits));
    }
    accept_until_shutdown::<A, S>(&core, listener, limits).await;
    finish(&core).await;
    stopped.fire();
    drain.await;
    background.await;
    tick.await;
    tracing::debug!(core = id, "core stopped");
}

/// Core `id`'s listeners on its event loop, its write-ahead log and its state.
pub(super) async fn build_core<A: App>(
    id: usize,
    shared: Arc<Shared<A>>,
    listener: std::net::TcpListener,
    ops_listener: Option<std::net::TcpListener>,
) -> Result<
    (
        Rc<Core<A>>,
        monoio::net::TcpListener,
        Option<monoio::net::TcpListener>,
    ),
    String,
> {
    let listener =
        monoio::net::TcpListener::from_std(listener).map_err(|e| format!("listener: {e}"))?;
    let ops_listener = ops_listener
        .map(monoio::net::TcpListener::from_std)
        .transpose()
        .map_err(|e| format!("operations listener: {e}"))?;
    let config = &shared.config;
    let log = CoreLog::start(
        shared.store.clone(),
        id,
        shared.driver == Driver::Uring,
        config
            .store
            .group_commit_max_batch
            .saturating_mul(LOG_QUEUE_GROUPS),
        crate::store::wal::MAX_SEGMENT_BYTES,
        shared.commit_counters[id].clone(),
        Some(&shared.checkpointer),
    )
    .await
    .map_err(|e| format!("write-ahead log: {e}"))?;
    let core = Rc::new(Core {
        log,
        id,
        shutdown: Shutdown::new(),
        metrics: crate::metrics::CoreMetrics::new(&A::metric_buyers(&shared.app)),
        local: A::local(id, &shared),
        loop_clock: admission::LoopClock::new(std::time::Instant::now()),
        admission: admission::Limits::from_config(&config.server),
        open_connections: Cell::new(0),
        tls: RefCell::new(shared.tls_at_start.clone()),
        shared: shared.clone(),
    });
    core.metrics.set_enabled(config.metrics.record);
    Ok((core, listener, ops_listener))
}

/// Spawns `work` on this core until `stopped` fires.
pub(super) fn spawn_until(
    stopped: &Shutdown,
    work: impl Future<Output = ()> + 'static,
) -> monoio::task::JoinHandle<()> {
    let stop = stopped.wait();
    monoio::spawn(async move {
        futures::future::select(std::pin::pin!(work), stop).await;
    })
}

/// After the core stopped accepting: stays alive until every core's connections and detached
/// work are done, so hand-offs to this core keep working while other cores drain (giving up after
/// the grace period), then drains this core's log so every queued write reaches the disk.
pub(super) async fn finish<A: App>(core: &Core<A>) {
    let shared = &core.shared;
    let grace = Duration::from_millis(shared.config.server.shutdown_grace_ms);
    let started = std::time::Instant::now();
    while (shared.live_connections.load(Ordering::Relaxed) > 0
        || shared.live_jobs.load(Ordering::Relaxed) > 0)
        && started.elapsed() < grace
    {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = grace.saturating_sub(started.elapsed());
    if monoio::time::timeout(left, core.log.shutdown())
        .await
        .is_err()
    {
        tracing::error!(
            core = core.id,
            "the write-ahead log did not drain within the grace period"
        );
    }
}
