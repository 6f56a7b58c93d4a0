//! Resolving buyer host names without blocking a core, and keeping the answers as long as their
//! DNS records say.
//!
//! A core never resolves: a name goes to a few resolver threads (`gavel-dns-N`, started on the
//! first lookup and kept for the life of the process) through a bounded channel, and the answer
//! comes back on a oneshot channel (monoio's `sync` feature makes the cross-thread wake-up work).
//! A core waits at most [`RESOLVE_TIMEOUT`] for it, so a name that does not resolve costs its
//! buyer a `dns_timeout` or `dns_error` outcome, never the auction's deadline.
//!
//! A resolver thread asks the nameservers itself (`udp`, messages in `wire`): those of `[dns]
//! nameservers`, else those of `/etc/resolv.conf` (`system`, read once, on a resolver thread). It
//! sends an A and an AAAA query, follows CNAMEs inside the answer and keeps the addresses for the
//! smallest TTL of the records used, clamped to `[dns] min_ttl_ms..=max_ttl_ms`. A name that does
//! not exist or has no addresses fails, remembered for the zone's negative TTL (its SOA, clamped
//! the same way) or `negative_ttl_ms`. The system resolver (`getaddrinfo`) answers instead, its
//! answer kept for `fallback_ttl_ms` (a failure for `negative_ttl_ms`), when:
//! - the name is in `/etc/hosts` or is `localhost` (or under it), or no nameserver is known;
//! - the nameservers give no answer to rely on (truncated, server failure, refused, silent);
//! - `/etc/resolv.conf` has a search list (and `[dns] nameservers` is unset) and the name is
//!   relative: with fewer dots than `ndots` it goes to the system resolver at once, otherwise when
//!   the nameservers say it does not exist, since the list may still find it.
//!
//! Each core keeps its own [`Cache`] (inside its buyer pool) of answers and failures with the
//! expiry the resolver reported, read on the server's [`Clock`] (a test moves a manual one instead
//! of sleeping); concurrent lookups of one name on one core share a single request. Literal IP
//! addresses never reach the resolver. This module does not connect to buyers (`pool` does) and
//! owns no config parsing (`config::dns` does).

mod system;
mod udp;
mod wire;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};

use super::pool::Origin;
use crate::config::DnsConfig;
use crate::types::Clock;

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

/// How one server's lookups are made: its `[dns]` section, as the resolver threads use it.
/// Cheap to clone; each lookup carries it, so servers in one process (tests) keep their own.
#[derive(Debug, Clone)]
pub struct Settings(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// `[dns] nameservers`; empty means the system's (`/etc/resolv.conf`).
    nameservers: Vec<SocketAddr>,
    timeout: Duration,
    min_ttl: Duration,
    max_ttl: Duration,
    negative_ttl: Duration,
    fallback_ttl: Duration,
}

impl Settings {
    /// The resolver settings of a `[dns]` section. Reads no file: the system's configuration is
    /// read by the resolver threads, once, when they first need it.
    pub fn from_config(c: &DnsConfig) -> Settings {
        let ms = Duration::from_millis;
        Settings(Arc::new(Inner {
            nameservers: c.nameserver_addrs(),
            timeout: ms(c.timeout_ms),
            min_ttl: ms(c.min_ttl_ms),
            max_ttl: ms(c.max_ttl_ms),
            negative_ttl: ms(c.negative_ttl_ms),
            fallback_ttl: ms(c.fallback_ttl_ms),
        }))
    }

    /// A record TTL (seconds) as this server keeps it: within `min_ttl..=max_ttl`.
    fn clamp(&self, ttl_s: u32) -> Duration {
        Duration::from_secs(u64::from(ttl_s)).clamp(self.0.min_ttl, self.0.max_ttl)
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::from_config(&DnsConfig::default())
    }
}

/// What a resolver thread answers: the addresses, or why there are none, and how long that holds
/// from `at_ms` (on the asking cache's clock, when the answer was found: an answer picked up late
/// is not kept longer for it).
#[derive(Debug, Clone)]
struct Answer {
    addrs: Result<Arc<[SocketAddr]>, String>,
    ttl: Duration,
    at_ms: u64,
}

/// One name to resolve, and where its answer goes.
struct Lookup {
    host: String,
    port: u16,
    settings: Settings,
    clock: Clock,
    reply: oneshot::Sender<Answer>,
}

/// Hands a lookup to whoever answers it; `false` when it was refused (queue full, no threads).
type Submit = Box<dyn Fn(Lookup) -> bool>;

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
                            let mut answer = lookup_blocking(&l.host, l.port, &l.settings);
                            answer.at_ms = l.clock.now_ms();
                            let _ = l.reply.send(answer);
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

/// Resolves `host` on a resolver thread (it blocks): the nameservers when they can answer for
/// it, the system resolver otherwise (see the module doc for which). The answer's `at_ms` is
/// left for the caller to stamp.
fn lookup_blocking(host: &str, port: u16, settings: &Settings) -> Answer {
    let s = &settings.0;
    let system = system::get();
    let (nameservers, search_ndots) = if s.nameservers.is_empty() {
        (&system.nameservers, system.search_ndots)
    } else {
        (&s.nameservers, None)
    };
    let name = system::normal(host);
    // A search list only ever applies to a relative name.
    let search_ndots = search_ndots.filter(|_| !host.ends_with('.'));
    let short = search_ndots.is_some_and(|ndots| name.matches('.').count() < ndots);
    // RFC 6761: `localhost` names are the system's own, whatever DNS says.
    let local = name == "localhost" || name.ends_with(".localhost");
    let mut why_not_dns = None;
    if !nameservers.is_empty() && !system.hosts.contains(&name) && !short && !local {
        match udp::ask(nameservers, s.timeout, &name) {
            udp::Outcome::Found { ips, ttl_s } => {
                let addrs: Vec<SocketAddr> = ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect();
                return Answer {
                    addrs: Ok(addrs.into()),
                    ttl: settings.clamp(ttl_s),
                    at_ms: 0,
                };
            }
            udp::Outcome::NotFound {
                reason,
                negative_ttl_s,
            } => {
                if search_ndots.is_none() {
                    return Answer {
                        addrs: Err(format!("{host}: {reason}")),
                        ttl: negative_ttl_s.map_or(s.negative_ttl, |t| settings.clamp(t)),
                        at_ms: 0,
                    };
                }
                why_not_dns = Some(reason);
            }
            udp::Outcome::Unusable(why) => {
                tracing::debug!(
                    host,
                    why,
                    "no usable DNS answer; asking the system resolver"
                );
                why_not_dns = Some(why);
            }
        }
    }
    let mut answer = getaddrinfo(host, port, settings);
    if let (Err(e), Some(why)) = (&mut answer.addrs, why_not_dns) {
        *e = format!("{e} (nameservers: {why})");
    }
    answer
}

/// The system resolver's answer, which carries no TTL: kept for `fallback_ttl`, a failure for
/// `negative_ttl`.
fn getaddrinfo(host: &str, port: u16, settings: &Settings) -> Answer {
    use std::net::ToSocketAddrs;
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place Gavel calls getaddrinfo: a resolver thread, never a core"
    )]
    let found = (host, port).to_socket_addrs();
    let addrs = match found {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(format!("{host} has no addresses"))
            } else {
                Ok(addrs.into())
            }
        }
        Err(e) => Err(format!("{host}: {e}")),
    };
    let ttl = if addrs.is_ok() {
        settings.0.fallback_ttl
    } else {
        settings.0.negative_ttl
    };
    Answer {
        addrs,
        ttl,
        at_ms: 0,
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
    /// An answer, valid from `at_ms` for `ttl_ms` on the cache's clock.
    Ready {
        addrs: Result<Arc<[SocketAddr]>, String>,
        at_ms: u64,
        ttl_ms: u64,
    },
    Pending(Shared<oneshot::Receiver<Answer>>),
}

/// One core's resolved names. Lives on its core only, hence a `RefCell`.
pub struct Cache {
    entries: RefCell<HashMap<Origin, Entry>>,
    settings: Settings,
    clock: Clock,
    submit: Submit,
}

impl Default for Cache {
    /// Default `[dns]` settings on the system clock.
    fn default() -> Cache {
        Cache::new(Settings::default(), Clock::system())
    }
}

impl Cache {
    /// A cache whose lookups follow `settings` and whose entries expire on `clock`.
    pub fn new(settings: Settings, clock: Clock) -> Cache {
        Cache::with_submit(
            settings,
            clock,
            Box::new(|l| queue().is_some_and(|q| q.try_send(l).is_ok())),
        )
    }

    fn with_submit(settings: Settings, clock: Clock, submit: Submit) -> Cache {
        Cache {
            entries: RefCell::new(HashMap::new()),
            settings,
            clock,
            submit,
        }
    }

    /// The addresses of `origin`, from the cache or the resolver threads, within
    /// [`RESOLVE_TIMEOUT`].
    pub async fn resolve(&self, origin: &Origin) -> Result<Arc<[SocketAddr]>, ResolveError> {
        if let Some(ip) = literal_ip(&origin.host) {
            return Ok(Arc::from([SocketAddr::new(ip, origin.port)]));
        }
        let pending = {
            let mut entries = self.entries.borrow_mut();
            let now = self.clock.now_ms();
            match entries.get(origin) {
                // A clock that stepped back before the answer came makes it stale, not eternal.
                Some(Entry::Ready {
                    addrs,
                    at_ms,
                    ttl_ms,
                }) if *at_ms <= now && now - *at_ms < *ttl_ms => {
                    return addrs.clone().map_err(ResolveError::Failed);
                }
                Some(Entry::Pending(p)) => p.clone(),
                _ => {
                    let (reply, rx) = oneshot::channel();
                    let lookup = Lookup {
                        host: origin.host.clone(),
                        port: origin.port,
                        settings: self.settings.clone(),
                        clock: self.clock.clone(),
                        reply,
                    };
                    if !(self.submit)(lookup) {
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
            Ok(Err(_)) => Answer {
                addrs: Err("the resolver thread stopped".to_string()),
                ttl: self.settings.0.negative_ttl,
                at_ms: self.clock.now_ms(),
            },
        };
        self.entries.borrow_mut().insert(
            origin.clone(),
            Entry::Ready {
                addrs: answer.addrs.clone(),
                at_ms: answer.at_ms,
                ttl_ms: u64::try_from(answer.ttl.as_millis()).unwrap_or(u64::MAX),
            },
        );
        answer.addrs.map_err(ResolveError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    fn origin(host: &str) -> Origin {
        Origin {
            host: host.to_string(),
            port: 9,
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        crate::runtime::block_on(crate::config::Driver::Legacy, 64, || f).unwrap()
    }

    fn resolve(host: &str) -> Result<Arc<[SocketAddr]>, ResolveError> {
        let cache = Cache::default();
        let origin = origin(host);
        block_on(async move {
            let first = cache.resolve(&origin).await;
            // The second answer comes from the cache and agrees with the first.
            let second = cache.resolve(&origin).await;
            assert_eq!(first.is_ok(), second.is_ok());
            first
        })
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

    /// A cache on a manual clock whose lookups are answered at once with `answer`; the count is
    /// how many lookups it made.
    fn scripted(
        clock: &Clock,
        answer: impl Fn(&str) -> Answer + 'static,
    ) -> (Cache, Rc<Cell<usize>>) {
        let count = Rc::new(Cell::new(0));
        let seen = count.clone();
        let cache = Cache::with_submit(
            Settings::default(),
            clock.clone(),
            Box::new(move |l: Lookup| {
                seen.set(seen.get() + 1);
                let mut a = answer(&l.host);
                a.at_ms = l.clock.now_ms();
                let _ = l.reply.send(a);
                true
            }),
        );
        (cache, count)
    }

    #[test]
    fn answers_expire_with_their_ttl_on_the_cache_clock() {
        let clock = Clock::manual(1_000_000);
        let (cache, lookups) = scripted(&clock, |host| Answer {
            addrs: if host == "buyer.test" {
                Ok(Arc::from(["10.0.0.1:9".parse::<SocketAddr>().unwrap()]))
            } else {
                Err(format!("{host}: NXDOMAIN"))
            },
            ttl: if host == "buyer.test" {
                Duration::from_secs(90)
            } else {
                Duration::from_secs(5)
            },
            at_ms: 0,
        });
        let ok = origin("buyer.test");
        let nx = origin("nx.test");
        block_on(async {
            assert!(cache.resolve(&ok).await.is_ok());
            assert!(matches!(
                cache.resolve(&nx).await,
                Err(ResolveError::Failed(_))
            ));
            assert_eq!(lookups.get(), 2);
            // Within both TTLs: from the cache.
            clock.advance(4_999);
            assert!(cache.resolve(&ok).await.is_ok());
            assert!(cache.resolve(&nx).await.is_err());
            assert_eq!(lookups.get(), 2);
            // The failure's TTL is over, the answer's is not.
            clock.advance(1);
            assert!(cache.resolve(&nx).await.is_err());
            assert!(cache.resolve(&ok).await.is_ok());
            assert_eq!(lookups.get(), 3);
            clock.advance(85_000);
            assert!(cache.resolve(&ok).await.is_ok());
            assert_eq!(
                lookups.get(),
                4,
                "90 s after the first answer it is looked up again"
            );
            // A clock stepped back before the answer does not keep it forever.
            clock.set_ms(10);
            assert!(cache.resolve(&ok).await.is_ok());
            assert_eq!(lookups.get(), 5);
        });
    }

    #[test]
    fn a_refused_lookup_is_busy_and_not_cached() {
        let clock = Clock::manual(0);
        let cache = Cache::with_submit(Settings::default(), clock, Box::new(|_| false));
        block_on(async {
            assert!(matches!(
                cache.resolve(&origin("buyer.test")).await,
                Err(ResolveError::Busy)
            ));
            assert!(cache.entries.borrow().is_empty());
        });
    }

    #[test]
    fn record_ttls_are_clamped_to_the_configured_range() {
        let s = Settings::from_config(&DnsConfig {
            min_ttl_ms: 2_000,
            max_ttl_ms: 60_000,
            ..DnsConfig::default()
        });
        assert_eq!(s.clamp(0), Duration::from_secs(2));
        assert_eq!(s.clamp(30), Duration::from_secs(30));
        assert_eq!(s.clamp(u32::MAX), Duration::from_secs(60));
    }

    /// Through a resolver thread's own steps: a configured nameserver answers with a TTL, says
    /// NXDOMAIN with an SOA, or is unreachable (the system resolver answers instead).
    #[test]
    fn a_configured_nameserver_answers_with_its_ttls() {
        use hickory_proto::op::{Message, ResponseCode};
        use hickory_proto::rr::rdata::{A, SOA};
        use hickory_proto::rr::{Name, RData, Record, RecordType};
        #[allow(clippy::disallowed_methods, reason = "a test nameserver's thread")]
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ns = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let question = q.queries[0].clone();
                let apex: Name = "test.".parse().unwrap();
                let reply = if question.name == "buyer.test.".parse::<Name>().unwrap() {
                    let records = match question.query_type {
                        RecordType::A => vec![Record::from_rdata(
                            question.name.clone(),
                            7,
                            RData::A(A::new(127, 0, 0, 1)),
                        )],
                        _ => vec![],
                    };
                    wire::tests::answer(&buf[..n], ResponseCode::NoError, records)
                } else {
                    let mut m = wire::tests::answer(&buf[..n], ResponseCode::NXDomain, vec![]);
                    m.add_authority(Record::from_rdata(
                        apex.clone(),
                        3600,
                        RData::SOA(SOA::new(apex.clone(), apex, 1, 1, 1, 1, 600)),
                    ));
                    m
                };
                #[allow(clippy::disallowed_methods, reason = "a test nameserver's thread")]
                let _ = socket.send_to(&reply.to_vec().unwrap(), from);
            }
        });
        let settings = |nameservers: Vec<String>| {
            Settings::from_config(&DnsConfig {
                nameservers,
                max_ttl_ms: 300_000,
                ..DnsConfig::default()
            })
        };
        let s = settings(vec![ns.to_string()]);
        let a = lookup_blocking("buyer.test", 80, &s);
        assert_eq!(
            &a.addrs.unwrap()[..],
            &["127.0.0.1:80".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(a.ttl, Duration::from_secs(7));
        let a = lookup_blocking("Nx.Test.", 80, &s);
        assert!(a.addrs.unwrap_err().contains("NXDOMAIN"));
        assert_eq!(a.ttl, Duration::from_secs(300), "600 s clamped to max_ttl");
        // `localhost` is in /etc/hosts: never asked of the nameserver, kept the fallback TTL.
        let a = lookup_blocking("localhost", 80, &s);
        assert!(a.addrs.unwrap().iter().all(|a| a.ip().is_loopback()));
        assert_eq!(
            a.ttl,
            Duration::from_millis(DnsConfig::default().fallback_ttl_ms)
        );
        // Nothing listens: the system resolver answers, with the fallback TTL.
        #[allow(clippy::disallowed_methods, reason = "a test thread")]
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        // (`127.1` is no IP literal to Rust, nor in /etc/hosts, but getaddrinfo reads it as
        // 127.0.0.1 without asking anyone.)
        let a = lookup_blocking("127.1", 80, &settings(vec![dead.to_string()]));
        assert_eq!(
            &a.addrs.unwrap()[..],
            &["127.0.0.1:80".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            a.ttl,
            Duration::from_millis(DnsConfig::default().fallback_ttl_ms)
        );
    }
}
