//! Resolving buyer host names without blocking a core.
//!
//! `getaddrinfo` blocks, so a core never calls it. A name goes to a few resolver threads
//! (`gavel-dns-N`, started on the first lookup and kept for the life of the process) through a
//! bounded channel, and the answer comes back on a oneshot channel (monoio's `sync` feature makes
//! the cross-thread wake-up work). A core waits at most [`RESOLVE_TIMEOUT`] for it, so a name
//! that does not resolve costs its buyer a `dns_timeout` or `dns_error` outcome, never the
//! auction's deadline.
//!
//! Each core keeps its own [`Cache`] (inside its buyer pool): answers are reused for [`DNS_TTL`],
//! failures for [`DNS_NEGATIVE_TTL`] so a broken name is not looked up again on every ping, and
//! concurrent lookups of one name on one core share a single request. Literal IP addresses never
//! reach the resolver.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};

use super::pool::Origin;

/// How long a resolved name is reused before it is looked up again.
pub const DNS_TTL: Duration = Duration::from_secs(30);
/// How long a failed lookup is remembered, so a name that does not resolve is asked about at most
/// this often per core.
pub const DNS_NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Longest a core waits for the resolver before giving up on the buyer as `dns_timeout`.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
/// Resolver threads in the process.
pub const RESOLVER_THREADS: usize = 2;
/// Lookups waiting for a resolver thread, all cores together; more are refused at once.
pub const RESOLVER_QUEUE_DEPTH: usize = 1024;

/// Why a host name gave no address. The buyer, whose configured host it is, caused it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error("the name did not resolve within {} ms", RESOLVE_TIMEOUT.as_millis())]
    Timeout,
    #[error("the name does not resolve: {0}")]
    Failed(String),
    #[error("the resolver is busy ({RESOLVER_QUEUE_DEPTH} lookups queued)")]
    Busy,
}

impl ResolveError {
    /// The `reject_reason` of a buyer outcome that failed this way.
    pub fn reason(&self) -> &'static str {
        match self {
            ResolveError::Timeout => "dns_timeout",
            ResolveError::Failed(_) | ResolveError::Busy => "dns_error",
        }
    }
}

/// What a resolver thread answers: the addresses, or why there are none.
type Answer = Result<Arc<[SocketAddr]>, String>;

struct Lookup {
    host: String,
    port: u16,
    reply: oneshot::Sender<Answer>,
}

/// The resolver threads' queue, started on first use; `None` when the threads could not start.
fn queue() -> Option<&'static crossbeam_channel::Sender<Lookup>> {
    static QUEUE: OnceLock<Option<crossbeam_channel::Sender<Lookup>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = crossbeam_channel::bounded::<Lookup>(RESOLVER_QUEUE_DEPTH);
            for n in 0..RESOLVER_THREADS {
                let rx = rx.clone();
                let started = std::thread::Builder::new()
                    .name(format!("gavel-dns-{n}"))
                    .spawn(move || {
                        while let Ok(l) = rx.recv() {
                            let _ = l.reply.send(lookup_blocking(&l.host, l.port));
                        }
                    });
                if let Err(e) = started {
                    tracing::error!(error = %e, "cannot start a resolver thread");
                    return None;
                }
            }
            Some(tx)
        })
        .as_ref()
}

/// The blocking lookup, run only on a resolver thread.
fn lookup_blocking(host: &str, port: u16) -> Answer {
    use std::net::ToSocketAddrs;
    // The one place Gavel calls getaddrinfo: a resolver thread, never a core.
    #[allow(clippy::disallowed_methods)]
    let found = (host, port).to_socket_addrs();
    match found {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(format!("{host} has no addresses"))
            } else {
                Ok(addrs.into())
            }
        }
        Err(e) => Err(format!("{host}: {e}")),
    }
}

/// `host` as an IP address, when it is one (`[…]` around IPv6, as in URLs).
fn literal_ip(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

enum Entry {
    Ready { answer: Answer, until: Instant },
    Pending(Shared<oneshot::Receiver<Answer>>),
}

/// One core's resolved names. Lives on its core only, hence a `RefCell`.
#[derive(Default)]
pub struct Cache {
    entries: RefCell<HashMap<Origin, Entry>>,
}

impl Cache {
    /// The addresses of `origin`, from the cache or the resolver threads, within
    /// [`RESOLVE_TIMEOUT`].
    pub async fn resolve(&self, origin: &Origin) -> Result<Arc<[SocketAddr]>, ResolveError> {
        if let Some(ip) = literal_ip(&origin.host) {
            return Ok(Arc::from([SocketAddr::new(ip, origin.port)]));
        }
        let pending = {
            let mut entries = self.entries.borrow_mut();
            match entries.get(origin) {
                Some(Entry::Ready { answer, until }) if Instant::now() < *until => {
                    return answer.clone().map_err(ResolveError::Failed);
                }
                Some(Entry::Pending(p)) => p.clone(),
                _ => {
                    let (reply, rx) = oneshot::channel();
                    let lookup = Lookup {
                        host: origin.host.clone(),
                        port: origin.port,
                        reply,
                    };
                    if queue().is_none_or(|q| q.try_send(lookup).is_err()) {
                        return Err(ResolveError::Busy);
                    }
                    let p = rx.shared();
                    entries.insert(origin.clone(), Entry::Pending(p.clone()));
                    p
                }
            }
        };
        // A lookup that outlives this wait stays pending in the cache: the next caller picks up
        // its answer instead of queueing another.
        let answer = match monoio::time::timeout(RESOLVE_TIMEOUT, pending).await {
            Err(_) => return Err(ResolveError::Timeout),
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err("the resolver thread stopped".to_string()),
        };
        let ttl = if answer.is_ok() {
            DNS_TTL
        } else {
            DNS_NEGATIVE_TTL
        };
        self.entries.borrow_mut().insert(
            origin.clone(),
            Entry::Ready {
                answer: answer.clone(),
                until: Instant::now() + ttl,
            },
        );
        answer.map_err(ResolveError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(host: &str) -> Result<Arc<[SocketAddr]>, ResolveError> {
        let cache = Cache::default();
        let origin = Origin {
            host: host.to_string(),
            port: 9,
        };
        crate::runtime::block_on(crate::config::Driver::Legacy, 64, || async move {
            let first = cache.resolve(&origin).await;
            // The second answer comes from the cache and agrees with the first.
            let second = cache.resolve(&origin).await;
            assert_eq!(first.is_ok(), second.is_ok());
            first
        })
        .unwrap()
    }

    #[test]
    fn literal_addresses_skip_the_resolver() {
        assert_eq!(
            &resolve("127.0.0.1").unwrap()[..],
            &["127.0.0.1:9".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            &resolve("[::1]").unwrap()[..],
            &["[::1]:9".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn names_resolve_on_resolver_threads() {
        let addrs = resolve("localhost").unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        let e = resolve("gavel-no-such-host.invalid").unwrap_err();
        assert!(e.reason().starts_with("dns_"), "{e:?}");
    }
}
