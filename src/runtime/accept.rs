//! Listening and accepting: the API listeners (one `SO_REUSEPORT` socket per core) and the
//! operations listener, the accept loops with their back-off on errors and the per-core connection
//! cap, and serving each connection as a task of its own.

use super::*;

/// TCP listen backlog per core.
pub const LISTEN_BACKLOG: i32 = 4096;

/// First pause after a failed accept; it doubles on every further failure.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Longest pause between accepts while they keep failing.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// At most one warning per this interval per core for failed accepts, and one for connections
/// closed over the cap; the lines count what they stood for.
pub const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub(super) fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The API listeners, one per core, and the operations listener (with the addresses they got).
pub(super) type Listeners = (
    Vec<std::net::TcpListener>,
    SocketAddr,
    Option<std::net::TcpListener>,
    Option<SocketAddr>,
);

/// Binds one API listener per core and, when `[metrics] listen` is set, the operations listener.
pub(super) fn bind_listeners(config: &Config, cores: usize) -> Result<Listeners, String> {
    // Core 0 binds the configured address (port 0 picks one); the others bind the port it got, so
    // the kernel spreads connections over all listeners of the group.
    let first = bind_listener(config.server.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = first.local_addr().map_err(|e| e.to_string())?;
    let mut listeners = vec![first];
    for _ in 1..cores {
        listeners.push(bind_listener(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?);
    }
    // The operations listener is one plain socket served by core 0.
    let ops_listener = match config.metrics.listen {
        Some(at) => {
            #[allow(
                clippy::disallowed_methods,
                reason = "a SocketAddr from the config, bound before the cores start"
            )]
            let l = std::net::TcpListener::bind(at)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| format!("cannot listen on {at} (metrics.listen): {e}"))?;
            Some(l)
        }
        None => None,
    };
    let metrics_addr = match &ops_listener {
        Some(l) => Some(l.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };
    Ok((listeners, addr, ops_listener, metrics_addr))
}

/// Serves the operations listener on core 0 until shutdown: `/metrics`, `/healthz` and `/readyz`
/// without a token ([`Service::handle_ops`]). Its connections are not counted against the
/// client connection cap, so a health check and a scrape still get in when clients fill it.
pub(super) async fn serve_ops<A: App, S: Service<A>>(
    core: Rc<Core<A>>,
    listener: monoio::net::TcpListener,
    limits: crate::http::ConnLimits,
) {
    let mut failures: u32 = 0;
    let mut failed_log = LogThrottle::new(ACCEPT_LOG_INTERVAL);
    loop {
        let accept = listener.accept();
        let stop = core.shutdown.wait();
        let stream = match futures::future::select(std::pin::pin!(accept), stop).await {
            futures::future::Either::Right(_) => break,
            futures::future::Either::Left((Ok((s, _)), _)) => {
                failures = 0;
                s
            }
            futures::future::Either::Left((Err(e), _)) => {
                failures = failures.saturating_add(1);
                let pause = accept_backoff(failures);
                if let Some(suppressed) = failed_log.note(std::time::Instant::now()) {
                    tracing::warn!(error = %e, suppressed, "operations listener: accept failed");
                }
                monoio::time::sleep(pause).await;
                continue;
            }
        };
        let c = core.clone();
        monoio::spawn(async move {
            let svc_core = c.clone();
            // The operations listener stays plain HTTP: loopback by default, scraped by Prometheus.
            crate::http::serve_connection(stream, None, limits, c.shutdown.clone(), move |req| {
                S::handle_ops(svc_core.clone(), req)
            })
            .await;
        });
    }
}

/// One log line per interval for an event that can repeat thousands of times a second.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Notes one event at `now`; `Some(n)` when it should be logged, `n` being how many events
    /// since the last line were not.
    pub fn note(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The pause before the next accept after `failures` failed ones in a row: 10 ms doubling up
/// to 1 s ([`ACCEPT_BACKOFF_MIN`], [`ACCEPT_BACKOFF_MAX`]).
pub fn accept_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    ACCEPT_BACKOFF_MIN
        .saturating_mul(1 << doublings)
        .min(ACCEPT_BACKOFF_MAX)
}

/// Accepts connections and serves each with `S` as a task of its own, until the core's shutdown
/// fires. Accept errors back off; connections over the per-core cap are closed at once.
pub(super) async fn accept_until_shutdown<A: App, S: Service<A>>(
    core: &Rc<Core<A>>,
    listener: monoio::net::TcpListener,
    limits: crate::http::ConnLimits,
) {
    let id = core.id;
    let max_conns = core.shared.max_connections_per_core;
    let mut failures: u32 = 0;
    let mut failed_log = LogThrottle::new(ACCEPT_LOG_INTERVAL);
    let mut over_cap_log = LogThrottle::new(ACCEPT_LOG_INTERVAL);
    loop {
        let accept = listener.accept();
        let stop = core.shutdown.wait();
        let (stream, _peer) = match futures::future::select(std::pin::pin!(accept), stop).await {
            futures::future::Either::Right(_) => break,
            futures::future::Either::Left((Ok(s), _)) => {
                failures = 0;
                s
            }
            futures::future::Either::Left((Err(e), _)) => {
                // Out of file descriptors (EMFILE, ENFILE) or another accept error: retrying at
                // once only spins and floods the log, so pause longer each time, and log once
                // per interval with the count of errors the line stands for.
                failures = failures.saturating_add(1);
                let pause = accept_backoff(failures);
                if let Some(suppressed) = failed_log.note(std::time::Instant::now()) {
                    tracing::warn!(
                        core = id,
                        error = %e,
                        suppressed,
                        pause_ms = pause.as_millis() as u64,
                        "accept failed; pausing accepts (suppressed = failures since the last line)"
                    );
                }
                let sleep = monoio::time::sleep(pause);
                let stop = core.shutdown.wait();
                if let futures::future::Either::Right(_) =
                    futures::future::select(std::pin::pin!(sleep), stop).await
                {
                    break;
                }
                continue;
            }
        };
        if core.open_connections.get() >= max_conns {
            // Over the per-core connection limit: closing at once is kinder than a stalled accept.
            drop(stream);
            if let Some(suppressed) = over_cap_log.note(std::time::Instant::now()) {
                tracing::warn!(
                    core = id,
                    max_connections_per_core = max_conns,
                    suppressed,
                    "connection cap reached; closing new connections (suppressed = closed since the last line)"
                );
            }
            continue;
        }
        serve::<A, S>(core, stream, limits);
    }
    drop(listener);
}

/// Serves one accepted connection as a task of its own, counted while it is open.
pub(super) fn serve<A: App, S: Service<A>>(
    core: &Rc<Core<A>>,
    stream: monoio::net::TcpStream,
    limits: crate::http::ConnLimits,
) {
    core.open_connections.set(core.open_connections.get() + 1);
    core.shared.live_connections.fetch_add(1, Ordering::Relaxed);
    let stats = core.stats();
    stats.connections_open.fetch_add(1, Ordering::Relaxed);
    stats.connections_total.fetch_add(1, Ordering::Relaxed);
    let c = core.clone();
    let tls = core.tls.borrow().clone();
    monoio::spawn(async move {
        let svc_core = c.clone();
        crate::http::serve_connection(stream, tls, limits, c.shutdown.clone(), move |req| {
            S::handle(svc_core.clone(), req)
        })
        .await;
        c.open_connections.set(c.open_connections.get() - 1);
        c.stats().connections_open.fetch_sub(1, Ordering::Relaxed);
        c.shared.live_connections.fetch_sub(1, Ordering::Relaxed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_up_to_a_second() {
        let ms: Vec<u128> = (1..=9).map(|f| accept_backoff(f).as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(accept_backoff(u32::MAX), ACCEPT_BACKOFF_MAX);
    }

    #[test]
    fn log_throttle_logs_once_per_interval_and_counts_the_rest() {
        let t0 = std::time::Instant::now();
        let mut log = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(log.note(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(log.note(t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(log.note(t0 + Duration::from_secs(10)), Some(500));
        assert_eq!(log.note(t0 + Duration::from_secs(11)), None);
    }
}
