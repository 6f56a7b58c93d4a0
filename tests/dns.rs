//! Buyer host names resolved on the resolver threads (hickory-resolver), through the real server
//! on a real socket: a nameserver on loopback answers for a few names and says `NXDOMAIN` for
//! every other, and records what it is asked. The server keeps answers for their records' TTL
//! (not a fixed time) on its clock, which the test moves instead of sleeping, and a buyer whose
//! name does not resolve is recorded as `dns_error` while the auction still answers. A truncated
//! UDP answer is asked again over TCP, `[dns] search` and `ndots` decide which names are asked in
//! which order, and a name in `[dns] hosts_file` never reaches the nameserver.
// Test threads are not event loops: blocking sockets are how tests serve and call.
#![allow(clippy::disallowed_methods)]
// The test nameserver's log is shared by its threads and the test; no core touches it.
#![allow(clippy::disallowed_types)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use gavel::config::{Config, Driver};
use hickory_resolver::proto::op::{Message, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, SOA};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// The TTL of `buyer.test`'s A record: far past the fixed 30 s the cache used to keep names.
const BUYER_TTL_S: u32 = 3_600;
/// The negative TTL the `test.` zone's SOA gives a name that does not exist.
const NEGATIVE_TTL_S: u32 = 60;

/// What the test nameserver was asked, by kind.
#[derive(Default)]
struct Asked {
    buyer_a: AtomicUsize,
    closer_a: AtomicUsize,
    aaaa: AtomicUsize,
    other: AtomicUsize,
}

/// A nameserver on 127.0.0.1: `buyer.test` and `closer.test` each have one A record (127.0.0.1)
/// and no AAAA records; every other name does not exist. It lives as long as the test process.
fn nameserver() -> (SocketAddr, Arc<Asked>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let asked = Arc::new(Asked::default());
    let counts = asked.clone();
    std::thread::spawn(move || {
        let buyer: Name = "buyer.test.".parse().unwrap();
        let closer: Name = "closer.test.".parse().unwrap();
        let apex: Name = "test.".parse().unwrap();
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(question) = q.queries.first().cloned() else {
                continue;
            };
            let mut m = Message::response(q.metadata.id, OpCode::Query);
            m.metadata.recursion_desired = q.metadata.recursion_desired;
            m.metadata.recursion_available = true;
            m.add_query(question.clone());
            let known = question.name == buyer || question.name == closer;
            if known && question.query_type == RecordType::A {
                let count = if question.name == buyer {
                    &counts.buyer_a
                } else {
                    &counts.closer_a
                };
                count.fetch_add(1, Ordering::SeqCst);
                m.add_answer(Record::from_rdata(
                    question.name.clone(),
                    BUYER_TTL_S,
                    RData::A(A::new(127, 0, 0, 1)),
                ));
            } else if known {
                counts.aaaa.fetch_add(1, Ordering::SeqCst);
            } else {
                counts.other.fetch_add(1, Ordering::SeqCst);
                nxdomain(&mut m, apex.clone());
            }
            let _ = socket.send_to(&m.to_vec().unwrap(), from);
        }
    });
    (addr, asked)
}

/// A buyer that answers every request `204` with `Connection: close` and closes: Gavel can
/// keep no connection to it, so every ping it gets needs its address. Returns its port and the
/// count of requests it answered.
fn closing_buyer() -> (u16, Arc<AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // The head, then as much body as it announces.
            let complete = |got: &[u8]| {
                let text = String::from_utf8_lossy(got);
                let Some(end) = text.find("\r\n\r\n") else {
                    return false;
                };
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                got.len() >= end + 4 + length
            };
            while !complete(&got) {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            if complete(&got) {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            }
        }
    });
    (port, answered)
}

/// What a zone nameserver was asked, in order: the name (lower case, with its trailing dot), the
/// record type and the transport (`"udp"` or `"tcp"`).
type Log = Arc<Mutex<Vec<(String, RecordType, &'static str)>>>;

/// The answer of a zone nameserver to `q`: each name of `zone` has one A record (127.0.0.1, TTL
/// [`BUYER_TTL_S`]) and no AAAA records; over UDP a name in `truncated` gets an empty answer with
/// TC set (the whole answer is for TCP); every other name does not exist.
fn zone_answer(q: &Message, zone: &[&str], truncated: &[&str], udp: bool) -> Message {
    let question = q.queries[0].clone();
    let asked = question.name.to_ascii().to_ascii_lowercase();
    let listed = |names: &[&str]| names.iter().any(|n| format!("{n}.") == asked);
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_query(question.clone());
    if udp && listed(truncated) {
        m.metadata.truncation = true;
    } else if listed(zone) {
        if question.query_type == RecordType::A {
            m.add_answer(Record::from_rdata(
                question.name.clone(),
                BUYER_TTL_S,
                RData::A(A::new(127, 0, 0, 1)),
            ));
        }
    } else {
        nxdomain(&mut m, "test.".parse().unwrap());
    }
    m
}

/// Makes `m` an NXDOMAIN answer whose authority is the SOA of `apex`, with a negative TTL of
/// [`NEGATIVE_TTL_S`].
fn nxdomain(m: &mut Message, apex: Name) {
    m.metadata.response_code = ResponseCode::NXDomain;
    m.add_authority(Record::from_rdata(
        apex.clone(),
        3_600,
        RData::SOA(SOA::new(
            apex.clone(),
            apex,
            1,
            3_600,
            600,
            86_400,
            NEGATIVE_TTL_S,
        )),
    ));
}

/// A nameserver on 127.0.0.1 serving [`zone_answer`] over UDP and TCP on one port, recording what
/// it is asked. It lives as long as the test process.
fn zone_nameserver(
    zone: &'static [&'static str],
    truncated: &'static [&'static str],
) -> (SocketAddr, Log) {
    // A free UDP port may be taken for TCP (other tests open TCP listeners meanwhile): try
    // another port until both bind.
    let (socket, addr, tcp) = (0..100)
        .find_map(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = socket.local_addr().unwrap();
            let tcp = TcpListener::bind(addr).ok()?;
            Some((socket, addr, tcp))
        })
        .expect("a loopback port free for both UDP and TCP");
    let log: Log = Arc::default();
    let record = |log: &Log, q: &Message, via| {
        let question = &q.queries[0];
        log.lock().unwrap().push((
            question.name.to_ascii().to_ascii_lowercase(),
            question.query_type,
            via,
        ));
    };
    let udp_log = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if q.queries.is_empty() {
                continue;
            }
            record(&udp_log, &q, "udp");
            let m = zone_answer(&q, zone, truncated, true);
            let _ = socket.send_to(&m.to_vec().unwrap(), from);
        }
    });
    let tcp_log = log.clone();
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            let Ok(mut conn) = conn else { continue };
            let log = tcp_log.clone();
            std::thread::spawn(move || {
                // Each message is preceded by its length in two bytes (RFC 1035 4.2.2).
                let mut len = [0u8; 2];
                while conn.read_exact(&mut len).is_ok() {
                    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if conn.read_exact(&mut msg).is_err() {
                        return;
                    }
                    let Ok(q) = Message::from_vec(&msg) else {
                        return;
                    };
                    if q.queries.is_empty() {
                        return;
                    }
                    record(&log, &q, "tcp");
                    let out = zone_answer(&q, zone, truncated, false).to_vec().unwrap();
                    let mut framed = u16::try_from(out.len()).unwrap().to_be_bytes().to_vec();
                    framed.extend_from_slice(&out);
                    if conn.write_all(&framed).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, log)
}

/// Points the fleet buyer `id`'s URLs at `host` instead of 127.0.0.1.
fn rename(cfg: &mut Config, id: &str, host: &str) {
    let b = cfg.buyers.iter_mut().find(|b| b.id == id).unwrap();
    b.ping_url = b.ping_url.replace("127.0.0.1", host);
    b.post_url = b.post_url.replace("127.0.0.1", host);
    assert!(
        b.ping_url.starts_with(&format!("http://{host}:")),
        "{}",
        b.ping_url
    );
}

/// Where `name`'s A query (`name` with its trailing dot) first came in `log`, and over which
/// transports it came at all.
fn asked_a(log: &Log, name: &str) -> (Option<usize>, Vec<&'static str>) {
    let log = log.lock().unwrap();
    let a = |(n, t, _): &&(String, RecordType, &'static str)| n == name && *t == RecordType::A;
    (
        log.iter().position(|e| a(&e)),
        log.iter().filter(a).map(|e| e.2).collect(),
    )
}

#[test]
fn a_truncated_answer_is_asked_again_over_tcp() {
    let (ns, log) = zone_nameserver(&["big.test"], &["big.test"]);
    let env = Env::start(Driver::Legacy, vec![fixed("big", 30.0)], |cfg, _| {
        cfg.dns.nameservers = vec![ns.to_string()];
        rename(cfg, "big", "big.test");
    });
    let r = env.ping(&ping_body());
    assert_eq!(r.json["status"], "won", "{}", r.text);
    assert_eq!(env.fleet.log().pings("big"), 1);
    let (_, via) = asked_a(&log, "big.test.");
    assert_eq!(via.first(), Some(&"udp"), "{via:?}");
    assert!(
        via.contains(&"tcp"),
        "the truncated answer was not asked over TCP: {via:?}"
    );
}

#[test]
fn the_search_list_completes_names_with_fewer_dots_than_ndots() {
    let (ns, log) = zone_nameserver(&["short.test", "deep.test"], &[]);
    let env = Env::start(
        Driver::Legacy,
        vec![fixed("short", 30.0), fixed("deep", 20.0)],
        |cfg, _| {
            cfg.server.cores = 1;
            cfg.dns.nameservers = vec![ns.to_string()];
            cfg.dns.search = vec!["test".into()];
            cfg.dns.ndots = Some(2);
            rename(cfg, "short", "short");
            rename(cfg, "deep", "deep.test");
        },
    );
    let r = env.ping(&ping_body());
    assert_eq!(r.json["status"], "won", "{}", r.text);
    assert_eq!(r.json["buyers_pinged"], 2, "{}", r.text);
    // Both reached: `short` through the search domain, `deep.test` as written.
    assert_eq!(env.fleet.log().pings("short"), 1);
    assert_eq!(env.fleet.log().pings("deep"), 1);
    assert!(asked_a(&log, "short.test.").0.is_some());
    assert_eq!(
        asked_a(&log, "short.").0,
        None,
        "found under the search domain first"
    );
    // One dot is fewer than ndots (2): the search domain is tried first, then the name as written.
    let (searched, _) = asked_a(&log, "deep.test.test.");
    let (written, _) = asked_a(&log, "deep.test.");
    assert!(
        searched.is_some() && written.is_some() && searched < written,
        "{:?}",
        log.lock().unwrap()
    );
}

#[test]
fn a_name_in_the_hosts_file_never_reaches_the_nameserver() {
    let (ns, log) = zone_nameserver(&[], &[]);
    let dir = temp_dir("dns-hosts");
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        "# test hosts\n127.0.0.1 hosted.internal alias.internal\n",
    )
    .unwrap();
    let env = Env::start(Driver::Legacy, vec![fixed("hosted", 30.0)], |cfg, _| {
        cfg.dns.nameservers = vec![ns.to_string()];
        cfg.dns.hosts_file = hosts.display().to_string();
        rename(cfg, "hosted", "alias.internal");
    });
    let r = env.ping(&ping_body());
    assert_eq!(r.json["status"], "won", "{}", r.text);
    assert_eq!(env.fleet.log().pings("hosted"), 1);
    let log = log.lock().unwrap();
    assert!(
        !log.iter().any(|(n, _, _)| n.contains("internal")),
        "{log:?}"
    );
}

use gavel_testkit::both_drivers;

both_drivers!(buyer_names_are_kept_for_their_record_ttl);

fn buyer_names_are_kept_for_their_record_ttl(driver: Driver) {
    let (ns, asked) = nameserver();
    let (closer_port, closer_answered) = closing_buyer();
    let env = Env::start_with_clock(
        driver,
        vec![fixed("named", 30.0)],
        |cfg, fleet| {
            // One core, so one cache sees every ping and the counts below are exact.
            cfg.server.cores = 1;
            cfg.dns.nameservers = vec![ns.to_string()];
            cfg.dns.max_ttl_ms = 2 * 3_600_000;
            let named = &mut cfg.buyers[0];
            named.ping_url = named.ping_url.replace("127.0.0.1", "buyer.test");
            named.post_url = named.post_url.replace("127.0.0.1", "buyer.test");
            assert!(named.ping_url.starts_with("http://buyer.test:"));
            let mut closer = buyer(fleet, "closer");
            closer.ping_url = format!("http://closer.test:{closer_port}/ping");
            closer.post_url = format!("http://closer.test:{closer_port}/post");
            cfg.buyers.push(closer);
            let mut lost = buyer(fleet, "lost");
            lost.ping_url = "http://nx.test:9/ping".into();
            lost.post_url = "http://nx.test:9/post".into();
            cfg.buyers.push(lost);
        },
        manual_clock(),
    );
    let n = |c: &AtomicUsize| c.load(Ordering::SeqCst);
    // Twice within every TTL: each name is asked about once (A and AAAA at once); the second
    // auction finds the addresses and the failure in the cache, though it must connect to the
    // closing buyer again.
    for round in 1..=2 {
        let r = env.ping(&ping_body());
        assert_eq!(r.json["status"], "won", "{}", r.text);
        assert_eq!(r.json["buyers_pinged"], 3, "{}", r.text);
        let id = r.json["auction_id"].as_str().unwrap();
        let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
        let buyers = rec.json["buyers"].as_array().unwrap();
        let find = |id: &str| buyers.iter().find(|b| b["buyer_id"] == id).unwrap();
        assert_eq!(rec.json["winner"]["buyer_id"], "named", "{}", rec.text);
        // Reached at its address: its answer, not a DNS failure, is what was wrong.
        assert_eq!(find("closer")["reject_reason"], "http_204", "{}", rec.text);
        let lost = find("lost");
        assert_eq!(lost["outcome"], "error", "{lost}");
        assert_eq!(lost["reject_reason"], "dns_error", "{lost}");
        assert!(
            lost["reject_detail"]
                .as_str()
                .is_some_and(|d| d.contains("NXDOMAIN")),
            "{lost}"
        );
        assert_eq!(n(&closer_answered), round);
        // The lead reaches the buyer by its name too.
        let token = r.json["bid"]["bid_token"].as_str().unwrap();
        let p = env.post("/v1/post", Some(TOKEN), &post_body(id, token).to_string());
        assert_eq!(p.status, 201, "{}", p.text);
    }
    assert_eq!(env.fleet.log().pings("named"), 2);
    assert_eq!((n(&asked.buyer_a), n(&asked.closer_a)), (1, 1));
    assert_eq!(n(&asked.aaaa), 2);
    assert_eq!(n(&asked.other), 2, "nx.test: one A and one AAAA query");

    // Two minutes on: past the negative TTL (60 s from the SOA) and the fixed 30 s names were
    // once kept for, within the records' hour. (The server's clock is now ahead of the sandbox
    // buyer's, so that bid counts as expired: what matters is who is reached and who is asked.)
    env.jump_clock(120_000);
    env.ping(&ping_body());
    assert_eq!(n(&closer_answered), 3);
    assert_eq!(n(&asked.closer_a), 1, "the A record's TTL has not run out");
    assert_eq!(n(&asked.other), 4, "the failure's TTL has");

    // Past the hour: asked again, and the buyer is reached at the new answer.
    env.jump_clock(u64::from(BUYER_TTL_S) * 1_000);
    env.ping(&ping_body());
    assert_eq!(n(&asked.closer_a), 2);
    assert_eq!(n(&closer_answered), 4);
}

#[test]
fn the_shipped_config_documents_the_defaults_and_bad_values_are_refused() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = gavel::cli::load_config(&root.join("config/gavel.toml")).unwrap();
    assert_eq!(shipped.dns, gavel::config::DnsConfig::default());
    for (text, key) in [
        (
            "[dns]\nnameservers = [\"ns1.example\"]\n",
            "dns.nameservers[0]",
        ),
        (
            "[dns]\nmin_ttl_ms = 5000\nmax_ttl_ms = 1000\n",
            "dns.min_ttl_ms",
        ),
        ("[dns]\ntimeout_ms = 0\n", "dns.timeout_ms"),
        ("[dns]\nsearch = [\"svc.local\"]\n", "dns.search"),
        ("[dns]\nndots = 2\n", "dns.ndots"),
        (
            "[dns]\nnameservers = [\"127.0.0.1\"]\nsearch = [\"a b\"]\n",
            "dns.search[0]",
        ),
        ("[dns]\nttl = 5\n", "dns"),
    ] {
        let e = match Config::parse("bad.toml", text) {
            Err(e) => e.to_string(),
            Ok(c) => gavel::cli::check_config(&c, "bad.toml")
                .unwrap_err()
                .to_string(),
        };
        assert!(e.contains(key), "{text}: {e}");
    }
}
