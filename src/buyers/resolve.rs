//! Resolving buyer host names without blocking a core, and keeping the answers as long as their
//! DNS records say.
//!
//! A core never resolves: a name goes to a few resolver threads (`gavel-dns-N`, started on the
//! first lookup and kept for the life of the process) through a bounded channel per thread, and
//! the answer comes back on a oneshot channel (monoio's `sync` feature makes the cross-thread
//! wake-up work). A core waits at most [`RESOLVE_TIMEOUT`] for it, so a name that does not
//! resolve costs its buyer a `dns_timeout` or `dns_error` outcome, never the auction's deadline.
//!
//! Each resolver thread runs hickory-resolver on a current-thread tokio runtime of its own (the
//! only tokio runtime in the process; cores run monoio), one lookup a task, so a slow nameserver
//! holds up no other lookup. hickory does the DNS: the nameservers of `[dns] nameservers` (with
//! `[dns] search` and `ndots`) or else `/etc/resolv.conf`'s (nameservers, search list, ndots),
//! A and AAAA at once, CNAME chains, TCP when a UDP answer is truncated, RFC 6761 names
//! (`localhost`, `.invalid`). A name the hosts file (`[dns] hosts_file`) lists is answered from
//! it before any nameserver is asked, kept for `fallback_ttl_ms` (the file has no TTL). Other
//! addresses are kept for the smallest TTL of the records used, clamped to `[dns]
//! min_ttl_ms..=max_ttl_ms`. A name that does not exist or has no addresses fails, remembered for
//! the zone's negative TTL (its SOA, clamped the same way) or `negative_ttl_ms`; so is every other
//! failure (no answer, `SERVFAIL`, no nameserver known).
//!
//! Each core keeps its own [`Cache`] (inside its buyer pool) of answers and failures with the
//! expiry the resolver reported, read on the server's [`Clock`] (a test moves a manual one instead
//! of sleeping): a hit costs no thread hop. hickory's own cache is off (size 0), so an answer is
//! never kept twice over or outlives its TTL on the wall clock while the server's clock is a
//! test's. Concurrent lookups of one name on one core share a single request. Literal IP
//! addresses never reach the resolver. This module does not connect to buyers (`pool` does), nor
//! check the addresses it finds (`egress` does, for every one), and owns no config parsing
//! (`config::dns` does).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, TokioResolver};

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
/// Cheap to clone; each lookup carries it, so servers in one process (tests) keep their own
/// (a resolver thread keeps one hickory resolver per distinct `Settings`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Settings(Arc<Inner>);

#[derive(Debug, PartialEq, Eq, Hash)]
struct Inner {
    /// `[dns] nameservers`; empty means the system's (`/etc/resolv.conf`).
    nameservers: Vec<SocketAddr>,
    /// `[dns] search` and `ndots`, used with `nameservers` only.
    search: Vec<String>,
    ndots: Option<usize>,
    hosts_file: PathBuf,
    timeout: Duration,
    min_ttl: Duration,
    max_ttl: Duration,
    negative_ttl: Duration,
    fallback_ttl: Duration,
}

impl Settings {
    /// The resolver settings of a `[dns]` section. Reads no file: the system's configuration and
    /// the hosts file are read by the resolver threads, once, when they first need them.
    pub fn from_config(c: &DnsConfig) -> Settings {
        let ms = Duration::from_millis;
        Settings(Arc::new(Inner {
            nameservers: c.nameserver_addrs(),
            search: c.search.clone(),
            ndots: c.ndots,
            hosts_file: PathBuf::from(&c.hosts_file),
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

/// The resolver threads' queues, one a thread, each `RESOLVER_QUEUE_DEPTH / RESOLVER_THREADS`
/// deep: a lookup goes to the next thread in turn, or to another when that one's queue is full.
struct Threads {
    queues: Vec<tokio::sync::mpsc::Sender<Lookup>>,
    next: AtomicUsize,
}

impl Threads {
    /// Queues `l` without waiting; `false` when every queue is full (or its thread is gone).
    fn submit(&self, mut l: Lookup) -> bool {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.queues.len() {
            match self.queues[(first + i) % self.queues.len()].try_send(l) {
                Ok(()) => return true,
                Err(e) => l = e.into_inner(),
            }
        }
        false
    }
}

/// The resolver threads, started on first use; `None` when none could start.
fn threads() -> Option<&'static Threads> {
    static THREADS: OnceLock<Option<Threads>> = OnceLock::new();
    THREADS
        .get_or_init(|| {
            let mut queues = Vec::new();
            for n in 0..RESOLVER_THREADS {
                let (tx, rx) = tokio::sync::mpsc::channel(RESOLVER_QUEUE_DEPTH / RESOLVER_THREADS);
                let started = std::thread::Builder::new()
                    .name(format!("gavel-dns-{n}"))
                    .spawn(move || serve(rx));
                match started {
                    Ok(_) => queues.push(tx),
                    Err(e) => tracing::error!(error = %e, "cannot start a resolver thread"),
                }
            }
            (!queues.is_empty()).then(|| Threads {
                queues,
                next: AtomicUsize::new(0),
            })
        })
        .as_ref()
}

/// A resolver thread's life: a current-thread tokio runtime that answers each lookup in a task of
/// its own, with the resolver built for its settings (kept for the next lookup with the same).
/// When the runtime cannot start the thread ends, its queue closes and the other threads take
/// every lookup.
fn serve(mut queue: tokio::sync::mpsc::Receiver<Lookup>) {
    // The one tokio runtime in the process, on a resolver thread: hickory's sockets and timers
    // never touch a core (the no-blocking invariant).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a resolver thread's runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let mut resolvers: HashMap<Settings, Result<Arc<Resolver>, String>> = HashMap::new();
        while let Some(l) = queue.recv().await {
            let resolver = resolvers
                .entry(l.settings.clone())
                .or_insert_with(|| Resolver::new(&l.settings).map(Arc::new))
                .clone();
            tokio::spawn(async move {
                let mut answer = match resolver {
                    Ok(r) => r.lookup(&l.host, l.port).await,
                    Err(why) => Answer {
                        addrs: Err(format!("{}: {why}", l.host)),
                        ttl: l.settings.0.negative_ttl,
                        at_ms: 0,
                    },
                };
                answer.at_ms = l.clock.now_ms();
                let _ = l.reply.send(answer);
            });
        }
    });
}

/// hickory's resolver for one server's settings, and the hosts file it answers from first.
struct Resolver {
    dns: TokioResolver,
    hosts: Arc<Hosts>,
    settings: Settings,
    /// Why no nameserver can be asked, when none is known.
    no_nameserver: Option<String>,
}

impl Resolver {
    /// Builds the resolver of `settings`: reads `/etc/resolv.conf` (when `[dns] nameservers` is
    /// empty) and the hosts file, on a resolver thread. Fails only when hickory refuses the
    /// options (then every lookup with these settings fails with the reason).
    fn new(settings: &Settings) -> Result<Resolver, String> {
        let s = &settings.0;
        let provider = TokioRuntimeProvider::default();
        let mut no_nameserver = None;
        let mut builder = if s.nameservers.is_empty() {
            match TokioResolver::builder(provider.clone()) {
                Ok(b) => b,
                Err(e) => {
                    let why = format!(
                        "no nameserver known ([dns] nameservers is empty; /etc/resolv.conf: {e})"
                    );
                    tracing::warn!(why, "only the hosts file and localhost resolve");
                    no_nameserver = Some(why);
                    TokioResolver::builder_with_config(
                        ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                        provider,
                    )
                }
            }
        } else {
            let servers = s
                .nameservers
                .iter()
                .map(|ns| {
                    let on_port = |mut c: ConnectionConfig| {
                        c.port = ns.port();
                        c
                    };
                    NameServerConfig::new(
                        ns.ip(),
                        true,
                        vec![
                            on_port(ConnectionConfig::udp()),
                            on_port(ConnectionConfig::tcp()),
                        ],
                    )
                })
                .collect();
            // Checked at load (`DnsConfig::validate`); one that hickory still refuses is left out.
            let search = s
                .search
                .iter()
                .filter_map(|d| Name::from_str_relaxed(d).ok())
                .collect();
            let mut b = TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, search, servers),
                provider,
            );
            b.options_mut().ndots = s.ndots.unwrap_or(1);
            b
        };
        let o = builder.options_mut();
        o.timeout = s.timeout;
        o.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // The cores cache (on the server's clock); a second cache here would keep answers on the
        // wall clock past what a core was told. Size 0 stores nothing.
        o.cache_size = 0;
        // The hosts file is read below, from `[dns] hosts_file`, not from where hickory looks.
        o.use_hosts_file = ResolveHosts::Never;
        let hosts = Arc::new(read_hosts(&s.hosts_file));
        let mut dns = builder
            .build()
            .map_err(|e| format!("the resolver cannot start: {e}"))?;
        // Names the file lists under a search domain are found through hickory's own lookups.
        dns.set_hosts(hosts.clone());
        Ok(Resolver {
            dns,
            hosts,
            settings: settings.clone(),
            no_nameserver,
        })
    }

    /// The addresses of `host` (a name, not an IP literal), as the module doc says. The answer's
    /// `at_ms` is left for the caller to stamp.
    async fn lookup(&self, host: &str, port: u16) -> Answer {
        let s = &self.settings;
        let failed = |why: String, ttl: Duration| Answer {
            addrs: Err(why),
            ttl,
            at_ms: 0,
        };
        let found = |ips: Vec<IpAddr>, ttl: Duration| Answer {
            addrs: Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect()),
            ttl,
            at_ms: 0,
        };
        let name = match Name::from_str_relaxed(host) {
            Ok(n) => n,
            Err(e) => return failed(format!("{host} is not a DNS name: {e}"), s.0.negative_ttl),
        };
        if let Some(ips) = self.in_hosts_file(&name) {
            return found(ips, s.0.fallback_ttl);
        }
        match self.dns.lookup_ip(name).await {
            Ok(lookup) => {
                let ips: Vec<IpAddr> = lookup.iter().collect();
                if ips.is_empty() {
                    return failed(format!("{host} has no addresses"), s.0.negative_ttl);
                }
                // Every record used counts, the CNAMEs leading to the addresses included.
                let ttl_s = lookup
                    .as_lookup()
                    .answers()
                    .iter()
                    .map(|r| r.ttl)
                    .min()
                    .unwrap_or(0);
                found(ips, s.clamp(ttl_s))
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(none))) => {
                let why = if none.response_code == ResponseCode::NXDomain {
                    "NXDOMAIN (no such name)"
                } else {
                    "no A or AAAA records"
                };
                let ttl = none.negative_ttl.map_or(s.0.negative_ttl, |t| s.clamp(t));
                failed(format!("{host}: {why}"), ttl)
            }
            Err(e) => {
                let why = match &self.no_nameserver {
                    Some(none) => format!("{host}: {e} ({none})"),
                    None => format!("{host}: {e}"),
                };
                failed(why, s.0.negative_ttl)
            }
        }
    }

    /// `name`'s addresses in the hosts file (IPv4 first), when it lists the name.
    fn in_hosts_file(&self, name: &Name) -> Option<Vec<IpAddr>> {
        let mut fqdn = name.clone();
        fqdn.set_fqdn(true);
        let ips: Vec<IpAddr> = [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(|t| {
                self.hosts
                    .lookup_static_host(&Query::query(fqdn.clone(), t))
            })
            .flat_map(|l| {
                l.answers()
                    .iter()
                    .filter_map(|r| r.data.ip_addr())
                    .collect::<Vec<_>>()
            })
            .collect();
        (!ips.is_empty()).then_some(ips)
    }
}

/// The hosts file at `path`; one that cannot be read is taken as empty (and said so).
fn read_hosts(path: &std::path::Path) -> Hosts {
    let mut hosts = Hosts::default();
    let read = std::fs::File::open(path).and_then(|f| hosts.read_hosts_conf(f));
    if let Err(e) = read {
        tracing::warn!(path = %path.display(), error = %e, "cannot read the hosts file; taken as empty");
        hosts = Hosts::default();
    }
    hosts
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
            Box::new(|l| threads().is_some_and(|t| t.submit(l))),
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

    /// What a fresh cache with `settings` finds for `host` through the resolver threads, and for
    /// how long it keeps it.
    fn resolved(settings: &Settings, host: &str) -> (Result<Arc<[SocketAddr]>, String>, Duration) {
        let cache = Cache::new(settings.clone(), Clock::manual(0));
        let origin = Origin {
            host: host.to_string(),
            port: 80,
        };
        let first = block_on(cache.resolve(&origin));
        let entries = cache.entries.borrow();
        let Some(Entry::Ready { addrs, ttl_ms, .. }) = entries.get(&origin) else {
            panic!("{host}: no answer kept ({first:?})");
        };
        (addrs.clone(), Duration::from_millis(*ttl_ms))
    }

    /// Through the resolver threads: a configured nameserver answers with a TTL, says NXDOMAIN
    /// with an SOA, or is unreachable; a hosts-file name never reaches it.
    #[test]
    fn a_configured_nameserver_answers_with_its_ttls() {
        use hickory_resolver::proto::op::{Message, OpCode};
        use hickory_resolver::proto::rr::rdata::{A, SOA};
        use hickory_resolver::proto::rr::{RData, Record};
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
                let mut m = Message::response(q.metadata.id, OpCode::Query);
                m.metadata.recursion_available = true;
                m.add_query(question.clone());
                if question
                    .name
                    .eq_case(&"unit-buyer.test.".parse::<Name>().unwrap())
                {
                    if question.query_type == RecordType::A {
                        m.add_answer(Record::from_rdata(
                            question.name.clone(),
                            7,
                            RData::A(A::new(127, 0, 0, 1)),
                        ));
                    }
                } else {
                    m.metadata.response_code = ResponseCode::NXDomain;
                    m.add_authority(Record::from_rdata(
                        apex.clone(),
                        3600,
                        RData::SOA(SOA::new(apex.clone(), apex, 1, 1, 1, 1, 600)),
                    ));
                }
                #[allow(clippy::disallowed_methods, reason = "a test nameserver's thread")]
                let _ = socket.send_to(&m.to_vec().unwrap(), from);
            }
        });
        let settings = |nameservers: Vec<String>| {
            Settings::from_config(&DnsConfig {
                nameservers,
                max_ttl_ms: 300_000,
                // Short, so a silent nameserver fails well within `RESOLVE_TIMEOUT`.
                timeout_ms: 100,
                ..DnsConfig::default()
            })
        };
        let s = settings(vec![ns.to_string()]);
        let (addrs, ttl) = resolved(&s, "unit-buyer.test");
        assert_eq!(
            &addrs.unwrap()[..],
            &["127.0.0.1:80".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(ttl, Duration::from_secs(7));
        let (addrs, ttl) = resolved(&s, "Nx.Test.");
        assert!(addrs.unwrap_err().contains("NXDOMAIN"));
        assert_eq!(ttl, Duration::from_secs(300), "600 s clamped to max_ttl");
        // `localhost` is in the hosts file: never asked of the nameserver, kept the hosts TTL.
        let (addrs, ttl) = resolved(&s, "localhost");
        assert!(addrs.unwrap().iter().all(|a| a.ip().is_loopback()));
        assert_eq!(
            ttl,
            Duration::from_millis(DnsConfig::default().fallback_ttl_ms)
        );
        // Nothing listens: a failure, kept for the negative TTL.
        #[allow(clippy::disallowed_methods, reason = "a test thread")]
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let (addrs, ttl) = resolved(&settings(vec![dead.to_string()]), "unit-buyer.test");
        assert!(addrs.is_err());
        assert_eq!(
            ttl,
            Duration::from_millis(DnsConfig::default().negative_ttl_ms)
        );
    }
}
