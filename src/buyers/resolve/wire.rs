//! DNS messages for the resolver threads: the A and AAAA queries they send, and what an answer
//! says about the name asked for (its addresses and how long they hold, or that it has none).
//!
//! Encoding and decoding are hickory-proto's; this module owns only the reading of an answer:
//! matching it to its question, following the CNAME chain inside it, the smallest TTL of the
//! records used, and the negative TTL of a name that does not resolve (RFC 2308: the SOA
//! record's TTL or its `minimum`, whichever is smaller). It sends nothing (see `udp`).

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// CNAMEs followed inside one answer at most; a longer chain (or a loop) is not an answer.
const MAX_CNAME_HOPS: usize = 8;

/// `host` as an absolute DNS name (a trailing dot is added when missing).
pub(super) fn name(host: &str) -> Result<Name, String> {
    let absolute = if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    };
    Name::from_str_relaxed(&absolute).map_err(|e| format!("{host} is not a DNS name: {e}"))
}

/// A recursive query for the `rtype` records of `name`, and its id.
pub(super) fn query(name: &Name, rtype: RecordType) -> Result<(u16, Vec<u8>), String> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.clone(), rtype));
    let bytes = m.to_vec().map_err(|e| e.to_string())?;
    Ok((m.metadata.id, bytes))
}

/// What one answer says about the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// The name's addresses (after the CNAMEs leading to them) and the smallest TTL, in
    /// seconds, of every record used to find them.
    Addresses { ips: Vec<IpAddr>, ttl_s: u32 },
    /// The name does not exist (`NXDOMAIN`), or has no record of the type asked for (`NODATA`).
    /// `negative_ttl_s` is how long the zone says to remember that, when its SOA came along.
    NoAddresses {
        nxdomain: bool,
        negative_ttl_s: Option<u32>,
    },
    /// No answer to rely on: truncated (the full answer needs TCP), or a server failure,
    /// refusal or other error code.
    Unusable(String),
}

/// Reads `bytes` as the answer to the query `id` for the `rtype` records of `name`. `None` when
/// it is not that answer (another id or question, or not a DNS message at all): the caller keeps
/// waiting for the real one.
pub(super) fn read(bytes: &[u8], id: u16, name: &Name, rtype: RecordType) -> Option<Reply> {
    let m = Message::from_vec(bytes).ok()?;
    let q = m.queries.first()?;
    if m.metadata.id != id
        || m.metadata.message_type != MessageType::Response
        || m.queries.len() != 1
        || q.name != *name
        || q.query_type != rtype
    {
        return None;
    }
    if m.metadata.truncation {
        return Some(Reply::Unusable("the answer was truncated".into()));
    }
    let negative_ttl_s = || {
        m.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
    };
    match m.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => {
            return Some(Reply::NoAddresses {
                nxdomain: true,
                negative_ttl_s: negative_ttl_s(),
            })
        }
        other => return Some(Reply::Unusable(format!("the nameserver answered {other}"))),
    }
    // Follow the chain from the name asked for: its addresses, or the CNAME it is an alias of.
    let mut current = name.clone();
    let mut ttl_s = u32::MAX;
    for _ in 0..=MAX_CNAME_HOPS {
        let mut ips = Vec::new();
        for r in m.answers.iter().filter(|r| r.name == current) {
            let ip = match (&r.data, rtype) {
                (RData::A(a), RecordType::A) => IpAddr::V4(a.0),
                (RData::AAAA(a), RecordType::AAAA) => IpAddr::V6(a.0),
                _ => continue,
            };
            ttl_s = ttl_s.min(r.ttl);
            ips.push(ip);
        }
        if !ips.is_empty() {
            return Some(Reply::Addresses { ips, ttl_s });
        }
        let alias = m.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == current => Some((r.ttl, target.0.clone())),
            _ => None,
        });
        match alias {
            Some((ttl, target)) => {
                ttl_s = ttl_s.min(ttl);
                current = target;
            }
            None => {
                return Some(Reply::NoAddresses {
                    nxdomain: false,
                    negative_ttl_s: negative_ttl_s(),
                })
            }
        }
    }
    Some(Reply::Unusable(format!(
        "more than {MAX_CNAME_HOPS} CNAMEs in one answer"
    )))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use hickory_proto::op::OpCode;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
    use hickory_proto::rr::Record;

    /// An answer to the query `q` (as the test nameservers build them).
    pub(crate) fn answer(q: &[u8], code: ResponseCode, records: Vec<Record>) -> Message {
        let q = Message::from_vec(q).unwrap();
        let mut m = Message::response(q.metadata.id, OpCode::Query);
        m.metadata.response_code = code;
        m.add_queries(q.queries);
        m.add_answers(records);
        m
    }

    fn n(s: &str) -> Name {
        name(s).unwrap()
    }

    fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> Record {
        Record::from_rdata(
            n(owner),
            ttl,
            RData::A(A::from(std::net::Ipv4Addr::from(ip))),
        )
    }

    fn cname(owner: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(n(owner), ttl, RData::CNAME(CNAME(n(target))))
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        Record::from_rdata(
            n("test"),
            ttl,
            RData::SOA(SOA::new(
                n("ns.test"),
                n("admin.test"),
                1,
                3600,
                600,
                86400,
                minimum,
            )),
        )
    }

    /// Encodes `m`, then reads it back as the answer to `(id, host, rtype)`.
    fn round_trip(m: &Message, id: u16, host: &str, rtype: RecordType) -> Option<Reply> {
        read(&m.to_vec().unwrap(), id, &n(host), rtype)
    }

    #[test]
    fn a_query_encodes_one_recursive_question() {
        let (id, bytes) = query(&n("Buyer.Example.com"), RecordType::AAAA).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.id, id);
        assert_eq!(m.metadata.message_type, MessageType::Query);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].name, n("buyer.example.com."));
        assert_eq!(m.queries[0].query_type, RecordType::AAAA);
        assert!(name("bad..name").is_err());
    }

    #[test]
    fn addresses_carry_the_smallest_ttl() {
        let (id, q) = query(&n("buyer.test"), RecordType::A).unwrap();
        let m = answer(
            &q,
            ResponseCode::NoError,
            vec![
                a("buyer.test", 300, [10, 0, 0, 1]),
                a("buyer.test", 60, [10, 0, 0, 2]),
            ],
        );
        assert_eq!(
            round_trip(&m, id, "buyer.test", RecordType::A),
            Some(Reply::Addresses {
                ips: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
                ttl_s: 60
            })
        );
        let (id, q) = query(&n("buyer.test"), RecordType::AAAA).unwrap();
        let mut m = answer(&q, ResponseCode::NoError, vec![]);
        m.add_answer(Record::from_rdata(
            n("buyer.test"),
            30,
            RData::AAAA(AAAA::from(std::net::Ipv6Addr::LOCALHOST)),
        ));
        assert_eq!(
            round_trip(&m, id, "buyer.test", RecordType::AAAA),
            Some(Reply::Addresses {
                ips: vec!["::1".parse().unwrap()],
                ttl_s: 30
            })
        );
    }

    #[test]
    fn a_cname_chain_is_followed_and_its_ttls_count() {
        let (id, q) = query(&n("buyer.test"), RecordType::A).unwrap();
        // Out of order, with an unrelated record, as servers may send them.
        let m = answer(
            &q,
            ResponseCode::NoError,
            vec![
                a("edge.cdn.test", 600, [10, 0, 0, 9]),
                cname("lb.test", 20, "edge.cdn.test"),
                a("other.test", 1, [10, 9, 9, 9]),
                cname("buyer.test", 3600, "lb.test"),
            ],
        );
        assert_eq!(
            round_trip(&m, id, "buyer.test", RecordType::A),
            Some(Reply::Addresses {
                ips: vec!["10.0.0.9".parse().unwrap()],
                ttl_s: 20
            })
        );
        // A chain that ends nowhere is NODATA; a loop is not an answer.
        let m = answer(
            &q,
            ResponseCode::NoError,
            vec![cname("buyer.test", 60, "gone.test")],
        );
        assert_eq!(
            round_trip(&m, id, "buyer.test", RecordType::A),
            Some(Reply::NoAddresses {
                nxdomain: false,
                negative_ttl_s: None
            })
        );
        let m = answer(
            &q,
            ResponseCode::NoError,
            vec![
                cname("buyer.test", 60, "loop.test"),
                cname("loop.test", 60, "buyer.test"),
            ],
        );
        assert!(matches!(
            round_trip(&m, id, "buyer.test", RecordType::A),
            Some(Reply::Unusable(_))
        ));
    }

    #[test]
    fn nxdomain_and_nodata_carry_the_soa_negative_ttl() {
        let (id, q) = query(&n("nx.test"), RecordType::A).unwrap();
        let mut m = answer(&q, ResponseCode::NXDomain, vec![]);
        assert_eq!(
            round_trip(&m, id, "nx.test", RecordType::A),
            Some(Reply::NoAddresses {
                nxdomain: true,
                negative_ttl_s: None
            })
        );
        // RFC 2308 §5: the smaller of the SOA's own TTL and its `minimum`.
        m.add_authority(soa(900, 120));
        assert_eq!(
            round_trip(&m, id, "nx.test", RecordType::A),
            Some(Reply::NoAddresses {
                nxdomain: true,
                negative_ttl_s: Some(120)
            })
        );
        let mut m = answer(&q, ResponseCode::NoError, vec![]);
        m.add_authority(soa(30, 120));
        assert_eq!(
            round_trip(&m, id, "nx.test", RecordType::A),
            Some(Reply::NoAddresses {
                nxdomain: false,
                negative_ttl_s: Some(30)
            })
        );
    }

    #[test]
    fn truncated_and_failed_answers_are_unusable() {
        let (id, q) = query(&n("buyer.test"), RecordType::A).unwrap();
        let mut m = answer(
            &q,
            ResponseCode::NoError,
            vec![a("buyer.test", 60, [1, 2, 3, 4])],
        );
        m.metadata.truncation = true;
        assert!(matches!(
            round_trip(&m, id, "buyer.test", RecordType::A),
            Some(Reply::Unusable(r)) if r.contains("truncated")
        ));
        let m = answer(&q, ResponseCode::ServFail, vec![]);
        assert!(matches!(
            round_trip(&m, id, "buyer.test", RecordType::A),
            Some(Reply::Unusable(r)) if r.contains("Server Failure")
        ));
    }

    #[test]
    fn answers_to_other_questions_are_ignored() {
        let (id, q) = query(&n("buyer.test"), RecordType::A).unwrap();
        let m = answer(
            &q,
            ResponseCode::NoError,
            vec![a("buyer.test", 60, [1, 2, 3, 4])],
        );
        assert!(round_trip(&m, id, "buyer.test", RecordType::A).is_some());
        assert_eq!(
            round_trip(&m, id.wrapping_add(1), "buyer.test", RecordType::A),
            None
        );
        assert_eq!(round_trip(&m, id, "other.test", RecordType::A), None);
        assert_eq!(round_trip(&m, id, "buyer.test", RecordType::AAAA), None);
        // The query itself is not its answer, and noise is nothing.
        assert_eq!(read(&q, id, &n("buyer.test"), RecordType::A), None);
        assert_eq!(
            read(b"\x00\x01garbage", id, &n("buyer.test"), RecordType::A),
            None
        );
    }
}
