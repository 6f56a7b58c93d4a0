//! Asking nameservers over UDP, on a resolver thread (it blocks on its socket up to the timeout):
//! an A and an AAAA query at once to each nameserver in turn, until one gives an answer to rely
//! on.
//!
//! It owns the exchange (sockets, ids, the timeout, combining the two answers). Reading a message
//! is `wire`'s; what to do when no nameserver answers usefully is the parent module's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::rr::{Name, RecordType};

use super::wire::{self, Reply};

/// Largest answer read: without EDNS a nameserver sends at most 512 bytes over UDP (RFC 1035)
/// and sets TC past that; the room beyond is for servers that send more anyway.
const MAX_ANSWER_BYTES: usize = 4096;

/// What the nameservers said about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Its addresses (IPv4 first) and the smallest TTL, in seconds, of the records used.
    Found { ips: Vec<IpAddr>, ttl_s: u32 },
    /// It has none: `NXDOMAIN`, or neither A nor AAAA records. `negative_ttl_s` from the SOA.
    NotFound {
        reason: String,
        negative_ttl_s: Option<u32>,
    },
    /// No nameserver gave an answer to rely on (unreachable, silent, truncated, failed).
    Unusable(String),
}

/// Asks each of `nameservers` in turn, each for at most `timeout`, about `host`.
pub(super) fn ask(nameservers: &[SocketAddr], timeout: Duration, host: &str) -> Outcome {
    let name = match wire::name(host) {
        Ok(n) => n,
        Err(e) => return Outcome::Unusable(e),
    };
    let mut why = Vec::new();
    for ns in nameservers {
        match ask_one(*ns, timeout, &name) {
            Ok(outcome) => return outcome,
            Err(e) => why.push(format!("{ns}: {e}")),
        }
    }
    if why.is_empty() {
        why.push("no nameserver configured".into());
    }
    Outcome::Unusable(why.join("; "))
}

/// Both queries to one nameserver: an outcome to rely on, or why there is none.
fn ask_one(ns: SocketAddr, timeout: Duration, name: &Name) -> Result<Outcome, String> {
    let local = match ns {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    // Socket addresses, not names: nothing here resolves. A connected socket only receives from
    // the nameserver, and learns at once (ECONNREFUSED) when nothing listens there.
    #[allow(
        clippy::disallowed_methods,
        reason = "a resolver thread, with literal addresses"
    )]
    let socket = UdpSocket::bind(local)
        .and_then(|s| s.connect(ns).map(|()| s))
        .map_err(|e| e.to_string())?;
    let types = [RecordType::A, RecordType::AAAA];
    let mut asked = Vec::with_capacity(types.len());
    for rtype in types {
        let (id, bytes) = wire::query(name, rtype)?;
        socket.send(&bytes).map_err(|e| e.to_string())?;
        asked.push((id, rtype));
    }
    let mut replies: [Option<Reply>; 2] = [None, None];
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_ANSWER_BYTES];
    while replies.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e.to_string()),
        };
        for (slot, (id, rtype)) in replies.iter_mut().zip(&asked) {
            if slot.is_none() {
                if let Some(r) = wire::read(&buf[..n], *id, name, *rtype) {
                    *slot = Some(r);
                    break;
                }
            }
        }
    }
    combine(replies, timeout)
}

/// One outcome from the A and AAAA answers (`None`: none came in time).
fn combine(replies: [Option<Reply>; 2], timeout: Duration) -> Result<Outcome, String> {
    let mut ips = Vec::new();
    let mut ttl_s = u32::MAX;
    let mut nxdomain = false;
    let mut nodata = 0;
    let mut negative_ttl_s: Option<u32> = None;
    let mut unusable = Vec::new();
    for r in replies.iter() {
        match r {
            Some(Reply::Addresses {
                ips: found,
                ttl_s: t,
            }) => {
                ips.extend_from_slice(found);
                ttl_s = ttl_s.min(*t);
            }
            Some(Reply::NoAddresses {
                nxdomain: nx,
                negative_ttl_s: n,
            }) => {
                nxdomain |= nx;
                nodata += 1;
                if let Some(n) = n {
                    negative_ttl_s = Some(negative_ttl_s.map_or(*n, |m| m.min(*n)));
                }
            }
            Some(Reply::Unusable(why)) => unusable.push(why.clone()),
            None => unusable.push(format!("no answer within {} ms", timeout.as_millis())),
        }
    }
    // Addresses of one family are an answer even when the other family's query failed.
    if !ips.is_empty() {
        return Ok(Outcome::Found { ips, ttl_s });
    }
    // NXDOMAIN is about the name, whatever the type asked; NODATA needs both types to say so.
    if nxdomain || nodata == replies.len() {
        let reason = if nxdomain {
            "the name does not exist (NXDOMAIN)"
        } else {
            "the name has no A or AAAA records"
        };
        return Ok(Outcome::NotFound {
            reason: reason.into(),
            negative_ttl_s,
        });
    }
    unusable.dedup();
    Err(unusable.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(ip: &str, ttl_s: u32) -> Option<Reply> {
        Some(Reply::Addresses {
            ips: vec![ip.parse().unwrap()],
            ttl_s,
        })
    }

    fn none(nxdomain: bool, negative_ttl_s: Option<u32>) -> Option<Reply> {
        Some(Reply::NoAddresses {
            nxdomain,
            negative_ttl_s,
        })
    }

    const T: Duration = Duration::from_millis(100);

    #[test]
    fn both_families_combine_with_the_smaller_ttl() {
        assert_eq!(
            combine([found("10.0.0.1", 60), found("::1", 30)], T),
            Ok(Outcome::Found {
                ips: vec!["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
                ttl_s: 30
            })
        );
        // One family is enough; the other's silence or NODATA does not hide it.
        assert_eq!(
            combine([found("10.0.0.1", 60), None], T),
            Ok(Outcome::Found {
                ips: vec!["10.0.0.1".parse().unwrap()],
                ttl_s: 60
            })
        );
        assert_eq!(
            combine([found("10.0.0.1", 60), none(false, Some(5))], T),
            Ok(Outcome::Found {
                ips: vec!["10.0.0.1".parse().unwrap()],
                ttl_s: 60
            })
        );
    }

    #[test]
    fn no_addresses_needs_nxdomain_or_both_nodata() {
        assert!(matches!(
            combine([none(true, Some(90)), None], T),
            Ok(Outcome::NotFound {
                negative_ttl_s: Some(90),
                ..
            })
        ));
        assert!(matches!(
            combine([none(false, Some(90)), none(false, Some(40))], T),
            Ok(Outcome::NotFound {
                negative_ttl_s: Some(40),
                ..
            })
        ));
        // NODATA for A while AAAA went unanswered says nothing about AAAA.
        assert!(combine([none(false, None), None], T).is_err());
        assert!(combine([Some(Reply::Unusable("truncated".into())), None], T).is_err());
    }

    /// A nameserver on loopback that answers every query with `reply`, and counts queries.
    fn nameserver(
        reply: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
    ) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        #[allow(clippy::disallowed_methods, reason = "a test nameserver's thread")]
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(out) = reply(&buf[..n]) {
                    #[allow(clippy::disallowed_methods, reason = "a test nameserver's thread")]
                    let _ = socket.send_to(&out, from);
                }
            }
        });
        (addr, count)
    }

    #[test]
    fn a_nameserver_is_asked_for_both_families() {
        use hickory_proto::op::{Message, ResponseCode};
        use hickory_proto::rr::rdata::A;
        use hickory_proto::rr::{RData, Record};
        let (ns, count) = nameserver(|q| {
            let m = Message::from_vec(q).ok()?;
            let question = m.queries.first()?.clone();
            let records = match question.query_type {
                RecordType::A => vec![Record::from_rdata(
                    question.name.clone(),
                    42,
                    RData::A(A::new(127, 0, 0, 7)),
                )],
                _ => vec![],
            };
            wire::tests::answer(q, ResponseCode::NoError, records)
                .to_vec()
                .ok()
        });
        let out = ask(&[ns], Duration::from_secs(5), "buyer.test");
        assert_eq!(
            out,
            Outcome::Found {
                ips: vec!["127.0.0.7".parse().unwrap()],
                ttl_s: 42
            }
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn a_silent_nameserver_is_passed_over_for_the_next() {
        let (silent, _) = nameserver(|_| None);
        let (nx, _) = nameserver(|q| {
            wire::tests::answer(q, hickory_proto::op::ResponseCode::NXDomain, vec![])
                .to_vec()
                .ok()
        });
        let out = ask(&[silent, nx], Duration::from_millis(50), "nx.test");
        assert!(matches!(out, Outcome::NotFound { .. }), "{out:?}");
        let out = ask(&[silent], Duration::from_millis(50), "nx.test");
        assert!(
            matches!(&out, Outcome::Unusable(why) if why.contains("no answer within 50 ms")),
            "{out:?}"
        );
    }
}
