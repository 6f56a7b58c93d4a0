//! Buyer host names resolved by Gavel's own DNS client, through the real server on a real socket:
//! a nameserver on loopback answers for `buyer.test` and says `NXDOMAIN` for every other name,
//! and counts what it is asked. The server keeps answers for their records' TTL (not a fixed
//! time) on its clock, which the test moves instead of sleeping, and a buyer whose name does not
//! resolve is recorded as `dns_error` while the auction still answers.
// Test threads are not event loops: blocking sockets are how tests serve and call.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use gavel::config::{Config, Driver};
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

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
                m.metadata.response_code = ResponseCode::NXDomain;
                m.add_authority(Record::from_rdata(
                    apex.clone(),
                    3_600,
                    RData::SOA(SOA::new(
                        apex.clone(),
                        apex.clone(),
                        1,
                        3_600,
                        600,
                        86_400,
                        NEGATIVE_TTL_S,
                    )),
                ));
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
