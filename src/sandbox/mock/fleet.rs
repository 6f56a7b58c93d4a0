//! Fleet threads: [`MockFleet::start`] binds one listening socket and starts the threads that
//! accept from it, each on its own monoio runtime (legacy driver), and [`FleetHandle`] stops and
//! joins them. It does not own what a request gets as answer (`handler`).

use std::cell::Cell;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{select, Either};

use super::config::{validate_buyers, MockBuyerConfig};
use super::handler::{handle, sleep_or_shutdown, Fleet, Local};
use super::log::FleetLog;
use super::{CONN_LIMITS, DRAIN_GRACE};
use crate::http::shutdown::Shutdown;

/// Starts mock buyer fleets. The running fleet is a [`FleetHandle`].
pub struct MockFleet;

impl MockFleet {
    /// Binds `listen` (port 0 picks a free port) and starts `threads` fleet threads (at least one)
    /// serving `buyers`. The socket is bound and every thread is accepting when this returns.
    /// Invalid buyers are refused with [`io::ErrorKind::InvalidInput`].
    pub fn start(
        listen: SocketAddr,
        seed: u64,
        buyers: Vec<MockBuyerConfig>,
        threads: usize,
    ) -> io::Result<FleetHandle> {
        MockFleet::start_tls(listen, seed, buyers, threads, None)
    }

    /// [`MockFleet::start`], serving https with `tls` when given (how `gavel-load --buyers-tls`
    /// measures what TLS to buyers costs Gavel).
    pub fn start_tls(
        listen: SocketAddr,
        seed: u64,
        buyers: Vec<MockBuyerConfig>,
        threads: usize,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<FleetHandle> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        validate_buyers(&buyers).map_err(|(key, reason)| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{key}: {reason}"))
        })?;
        #[allow(
            clippy::disallowed_methods,
            reason = "a SocketAddr, bound before the fleet's threads start"
        )]
        let listener = std::net::TcpListener::bind(listen)?;
        // The legacy driver needs a non-blocking socket; the flag is shared by every clone.
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let log = Arc::new(FleetLog::new(&buyers));
        let fleet = Arc::new(Fleet {
            seed,
            buyers: buyers.into_iter().map(|b| (b.id.clone(), b)).collect(),
            log: log.clone(),
            tls,
        });
        let mut handle = FleetHandle {
            scheme,
            addr,
            log,
            stops: Vec::new(),
            threads: Vec::new(),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let n = threads.max(1);
        for i in 0..n {
            let listener = listener.try_clone()?;
            let (stop_tx, stop_rx) = oneshot::channel();
            let fleet = fleet.clone();
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("gavel-mock-{i}"))
                .spawn(move || fleet_thread(listener, fleet, stop_rx, ready))?;
            handle.stops.push(stop_tx);
            handle.threads.push(thread);
        }
        drop(ready_tx);
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                // Returning drops `handle`, which stops the threads already running.
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("a mock buyer thread died while starting")),
            }
        }
        tracing::info!(%addr, threads = n, buyers = fleet.buyers.len(), "mock buyer fleet listening");
        Ok(handle)
    }
}

/// A running fleet. Dropping it stops the fleet, like [`FleetHandle::stop`].
pub struct FleetHandle {
    /// `http`, or `https` for a fleet started with TLS.
    scheme: &'static str,
    addr: SocketAddr,
    log: Arc<FleetLog>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for FleetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetHandle")
            .field("addr", &self.addr)
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl FleetHandle {
    /// The bound address, with the real port when 0 was asked for.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}` (`https://` for a fleet started with TLS).
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn ping_url(&self, buyer_id: &str) -> String {
        format!("{}/buyers/{buyer_id}/ping", self.base_url())
    }

    pub fn post_url(&self, buyer_id: &str) -> String {
        format!("{}/buyers/{buyer_id}/post", self.base_url())
    }

    pub fn log(&self) -> Arc<FleetLog> {
        self.log.clone()
    }

    /// Stops accepting, lets in-flight requests finish (hanging and trickling ones end at once,
    /// the rest get up to 2 s) and joins every fleet thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::warn!("a mock buyer thread panicked");
            }
        }
    }
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Counts a connection as open for as long as it lives.
struct ConnGuard {
    local: Rc<Cell<usize>>,
    log: Arc<FleetLog>,
}

impl ConnGuard {
    fn new(local: &Rc<Cell<usize>>, log: &Arc<FleetLog>) -> Self {
        local.set(local.get() + 1);
        log.active_connections.fetch_add(1, Ordering::Relaxed);
        Self {
            local: local.clone(),
            log: log.clone(),
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.local.set(self.local.get() - 1);
        self.log.active_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

fn fleet_thread(
    listener: std::net::TcpListener,
    fleet: Arc<Fleet>,
    stop_rx: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    let mut rt = match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        // Registering the socket needs the runtime's driver, hence inside `block_on`.
        let listener = match monoio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let shutdown = Shutdown::new();
        {
            let shutdown = shutdown.clone();
            // A dropped handle (sender gone) stops the thread just like an explicit stop.
            monoio::spawn(async move {
                let _ = stop_rx.await;
                shutdown.fire();
            });
        }
        let log = fleet.log.clone();
        let tls = fleet.tls.clone();
        let local = Rc::new(Local {
            fleet,
            shutdown: shutdown.clone(),
        });
        let open = Rc::new(Cell::new(0usize));
        loop {
            let accept = std::pin::pin!(listener.accept());
            let stop = std::pin::pin!(shutdown.wait());
            match select(accept, stop).await {
                Either::Left((Ok((stream, _peer)), _)) => {
                    let guard = ConnGuard::new(&open, &log);
                    let local = local.clone();
                    let shutdown = shutdown.clone();
                    let tls = tls.clone();
                    monoio::spawn(async move {
                        let _guard = guard;
                        crate::http::serve_connection(
                            stream,
                            tls,
                            CONN_LIMITS,
                            shutdown,
                            move |req| {
                                let local = local.clone();
                                async move { Ok::<_, Infallible>(handle(&local, req).await) }
                            },
                        )
                        .await;
                    });
                }
                Either::Left((Err(e), _)) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "mock buyer accept failed");
                    sleep_or_shutdown(Duration::from_millis(10), &shutdown).await;
                }
                Either::Right(_) => break,
            }
        }
        drop(listener);
        let deadline = std::time::Instant::now() + DRAIN_GRACE;
        while open.get() > 0 && std::time::Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}
