//! HTTPS to buyers and webhook receivers through the real server, on loopback with real TLS:
//! certificates made here with rcgen (a CA, server leaves, a client certificate), a small
//! blocking rustls server speaking the buyer contract, and Gavel configured with `[buyers.tls]`
//! and `webhook_delivery.ca_file`. Also the config checks of those keys.

// The TLS server runs on plain threads of the test process, not on Gavel's event loops: locks,
// blocking reads and waiting loops are fine here.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gavel::config::{BuyerConfig, BuyerTlsConfig, Driver, WebhookConfig};
use gavel_testkit::pki::{Ca, Leaf};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

const WAIT: Duration = Duration::from_secs(15);

fn driver() -> Driver {
    drivers()[0]
}

/// What the TLS server saw.
#[derive(Default)]
struct Seen {
    /// TLS handshakes completed (one per connection that got as far as a request, or idle).
    handshakes: usize,
    /// (path, SNI the client sent, whether it presented a certificate) per request.
    requests: Vec<(String, Option<String>, bool)>,
}

/// A blocking HTTPS server on loopback answering the buyer contract: `/ping` bids
/// [`TlsServer::PRICE`], `/post` accepts with lead id `tls-lead-1`, anything else `204`.
struct TlsServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl TlsServer {
    const PRICE: f64 = 40.0;

    /// Serves `leaf`; with `client_ca`, demands a client certificate signed by it.
    fn start(ca: &Ca, leaf: &Leaf, client_ca: Option<&Ca>) -> TlsServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(c.der()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.serialize_der()));
        let config = Arc::new(
            builder
                .with_single_cert(vec![leaf.cert.der().clone(), ca.der()], key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let s = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(tcp) = stream else { return };
                let (config, seen) = (config.clone(), s.clone());
                std::thread::spawn(move || serve(tcp, config, seen));
            }
        });
        TlsServer { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn handshakes(&self) -> usize {
        self.seen.lock().unwrap().handshakes
    }

    fn requests(&self) -> Vec<(String, Option<String>, bool)> {
        self.seen.lock().unwrap().requests.clone()
    }

    fn wait_for(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        let t0 = Instant::now();
        while !done(&self.seen.lock().unwrap()) {
            assert!(t0.elapsed() < WAIT, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One connection: the handshake, then keep-alive HTTP/1.1 requests until the client closes.
fn serve(tcp: std::net::TcpStream, config: Arc<rustls::ServerConfig>, seen: Arc<Mutex<Seen>>) {
    let mut conn = rustls::ServerConnection::new(config).unwrap();
    let mut tcp = tcp;
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            return;
        }
    }
    seen.lock().unwrap().handshakes += 1;
    let sni = conn.server_name().map(str::to_string);
    let client_cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
    let mut r = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    while let Some(req) = read_request(&mut r) {
        let (path, body) = (req.target, req.body);
        seen.lock()
            .unwrap()
            .requests
            .push((path.clone(), sni.clone(), client_cert));
        let (status, answer) = if path.starts_with("/ping") {
            let ping: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let bid = serde_json::json!({
                "auction_id": ping["auction_id"],
                "bid": {
                    "amount": TlsServer::PRICE,
                    "currency": "USD",
                    "bid_token": "tls-bid",
                    "valid_until": "2099-01-01T00:00:00Z",
                },
            });
            ("200 OK", bid.to_string())
        } else if path.starts_with("/post") {
            ("200 OK", r#"{"lead_id":"tls-lead-1"}"#.to_string())
        } else {
            ("204 No Content", String::new())
        };
        let out = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        let w = r.get_mut();
        if w.write_all(out.as_bytes()).and_then(|_| w.flush()).is_err() {
            return;
        }
    }
}

/// A Gavel buyer entry for the TLS server, with `tls` settings.
fn tls_buyer(id: &str, server: &TlsServer, tls: Option<BuyerTlsConfig>) -> BuyerConfig {
    BuyerConfig {
        id: id.to_string(),
        tenant: gavel::config::Tenant::Sandbox,
        ping_url: server.url("/ping"),
        post_url: server.url("/post"),
        auth_header: None,
        enabled: true,
        filters: Default::default(),
        floor: 0,
        ping_timeout_ms: 1500,
        post_timeout_ms: 1500,
        max_pings_per_s: None,
        tls,
        fixed_price: None,
        ping_format: None,
        post_format: None,
    }
}

fn settings(ca_file: Option<&Path>) -> BuyerTlsConfig {
    BuyerTlsConfig {
        ca_file: ca_file.map(Path::to_path_buf),
        client_cert_file: None,
        client_key_file: None,
        server_name: None,
        warm_up: true,
    }
}

/// The outcome of buyer `id` in auction `auction_id`'s record.
fn outcome(env: &Env, auction_id: &str, id: &str) -> serde_json::Value {
    let rec = env.get(&format!("/v1/auctions/{auction_id}"), Some(OPERATOR));
    assert_eq!(rec.status, 200, "{}", rec.text);
    rec.json["buyers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["buyer_id"] == id)
        .unwrap_or_else(|| panic!("{id} in {}", rec.text))
        .clone()
}

/// The value of one exact series in a scrape (0 when absent).
fn series(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

fn https_buyer_bids_and_buys(driver: Driver) {
    let dir = temp_dir("tls-buyer");
    let ca = Ca::new("Buyer CA");
    let server = TlsServer::start(&ca, &ca.server(&["localhost", "127.0.0.1"]), None);
    let ca_file = ca.write(&dir, "ca.pem");
    let env = Env::start(driver, vec![fixed("plain", 20.0)], |cfg, _| {
        cfg.buyers
            .push(tls_buyer("secure", &server, Some(settings(Some(&ca_file)))));
    });
    // Each of the two cores opens its warm connection at start, before any auction.
    server.wait_for("both cores' warm-up handshakes", |s| s.handshakes >= 2);
    assert!(server.requests().is_empty(), "warm-up sends no request");

    let r = env.ping(&ping_body());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "won", "{}", r.text);
    assert_eq!(r.json["bids_received"], 2, "{}", r.text);
    let id = r.json["auction_id"].as_str().unwrap();
    let secure = outcome(&env, id, "secure");
    assert_eq!(secure["outcome"], "bid", "{secure}");
    let token = r.json["bid"]["bid_token"].as_str().unwrap();
    let p = env.post("/v1/post", Some(TOKEN), &post_body(id, token).to_string());
    assert_eq!(p.status, 201, "{}", p.text);
    assert_eq!(p.json["buyer_lead_id"], "tls-lead-1", "{}", p.text);
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.json["winner"]["buyer_id"], "secure", "{}", rec.text);
    assert_eq!(rec.json["post"]["buyer_lead_id"], "tls-lead-1");
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.0).collect();
    assert_eq!(paths, ["/ping", "/post"]);
    // The URL names an IP address: no SNI is sent for one.
    assert!(server.requests().iter().all(|r| r.1.is_none()));
    let text = env.scrape();
    assert_eq!(
        series(
            &text,
            r#"gavel_buyer_call_errors_total{buyer="secure",tenant="sandbox",kind="tls"}"#
        ),
        0.0
    );
}

mod uring {
    #[test]
    fn https_buyer_bids_and_buys() {
        if super::common::drivers().contains(&gavel::config::Driver::Uring) {
            super::https_buyer_bids_and_buys(gavel::config::Driver::Uring)
        }
    }
}

mod legacy {
    #[test]
    fn https_buyer_bids_and_buys() {
        super::https_buyer_bids_and_buys(gavel::config::Driver::Legacy)
    }
}

#[test]
fn an_untrusted_certificate_is_a_tls_error_and_the_auction_still_answers() {
    let dir = temp_dir("tls-untrusted");
    let ca = Ca::new("Buyer CA");
    let other = Ca::new("Some other CA");
    let server = TlsServer::start(&ca, &ca.server(&["127.0.0.1"]), None);
    let other_file = other.write(&dir, "other.pem");
    let env = Env::start(driver(), vec![fixed("plain", 20.0)], |cfg, _| {
        // Trusts another private CA only.
        cfg.buyers.push(tls_buyer(
            "wrong_ca",
            &server,
            Some(settings(Some(&other_file))),
        ));
        // Trusts the public roots only (no `[buyers.tls]`), which never signed a test CA.
        cfg.buyers.push(tls_buyer("public_roots", &server, None));
    });
    let r = env.ping(&ping_body());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "won", "{}", r.text);
    let id = r.json["auction_id"].as_str().unwrap();
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.json["winner"]["buyer_id"], "plain", "{}", rec.text);
    for buyer in ["wrong_ca", "public_roots"] {
        let o = outcome(&env, id, buyer);
        assert_eq!(o["outcome"], "error", "{o}");
        assert_eq!(o["reject_reason"], "tls_error", "{o}");
        assert!(
            o["reject_detail"]
                .as_str()
                .is_some_and(|d| d.contains("certificate")),
            "{o}"
        );
    }
    // No request reached the server: every handshake failed before one could.
    assert!(server.requests().is_empty());
    let text = env.scrape();
    for buyer in ["wrong_ca", "public_roots"] {
        let tls = series(
            &text,
            &format!(
                r#"gavel_buyer_call_errors_total{{buyer="{buyer}",tenant="sandbox",kind="tls"}}"#
            ),
        );
        assert!(tls >= 1.0, "{buyer}: {tls}\n{text}");
        let dns = series(
            &text,
            &format!(
                r#"gavel_buyer_call_errors_total{{buyer="{buyer}",tenant="sandbox",kind="dns"}}"#
            ),
        );
        assert_eq!(dns, 0.0);
    }
}

#[test]
fn a_buyer_demanding_a_client_certificate_gets_one_only_when_configured() {
    let dir = temp_dir("tls-mtls");
    let ca = Ca::new("Buyer CA");
    let clients = Ca::new("Client CA");
    let server = TlsServer::start(&ca, &ca.server(&["127.0.0.1"]), Some(&clients));
    let ca_file = ca.write(&dir, "ca.pem");
    let (cert, key) = clients.client().write(&dir, "client");
    let env = Env::start(driver(), vec![], |cfg, _| {
        cfg.buyers.push(tls_buyer(
            "no_cert",
            &server,
            Some(settings(Some(&ca_file))),
        ));
        let mut mtls = settings(Some(&ca_file));
        mtls.client_cert_file = Some(cert.clone());
        mtls.client_key_file = Some(key.clone());
        cfg.buyers.push(tls_buyer("mtls", &server, Some(mtls)));
    });
    let r = env.ping(&ping_body());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "won", "{}", r.text);
    let id = r.json["auction_id"].as_str().unwrap();
    let with = outcome(&env, id, "mtls");
    assert_eq!(with["outcome"], "bid", "{with}");
    let without = outcome(&env, id, "no_cert");
    assert_eq!(without["outcome"], "error", "{without}");
    assert_eq!(without["reject_reason"], "tls_error", "{without}");
    // Every request the server answered came with the client certificate.
    let requests = server.requests();
    assert!(!requests.is_empty());
    assert!(requests.iter().all(|r| r.2), "{requests:?}");
}

#[test]
fn server_name_overrides_the_name_checked_and_sent() {
    let dir = temp_dir("tls-sni");
    let ca = Ca::new("Buyer CA");
    // The certificate names `buyer.test` only; the URLs name 127.0.0.1.
    let server = TlsServer::start(&ca, &ca.server(&["buyer.test"]), None);
    let ca_file = ca.write(&dir, "ca.pem");
    let env = Env::start(driver(), vec![], |cfg, _| {
        let mut named = settings(Some(&ca_file));
        named.server_name = Some("buyer.test".into());
        named.warm_up = false;
        cfg.buyers.push(tls_buyer("named", &server, Some(named)));
        let mut by_ip = settings(Some(&ca_file));
        by_ip.warm_up = false;
        cfg.buyers.push(tls_buyer("by_ip", &server, Some(by_ip)));
    });
    let r = env.ping(&ping_body());
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json["auction_id"].as_str().unwrap();
    assert_eq!(outcome(&env, id, "named")["outcome"], "bid");
    let by_ip = outcome(&env, id, "by_ip");
    assert_eq!(by_ip["reject_reason"], "tls_error", "{by_ip}");
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].1.as_deref(), Some("buyer.test"));
    // warm_up = false: only the auction's two handshakes reached the server, and the one with
    // the wrong name failed.
    assert_eq!(server.handshakes(), 1);
}

#[test]
fn webhooks_reach_an_https_receiver_signed_by_a_private_ca() {
    let dir = temp_dir("tls-webhook");
    let ca = Ca::new("Receiver CA");
    let receiver = TlsServer::start(&ca, &ca.server(&["127.0.0.1"]), None);
    let ca_file = ca.write(&dir, "ca.pem");
    let url = receiver.url("/hook");
    let env = Env::start(driver(), vec![fixed("plain", 20.0)], |cfg, _| {
        cfg.webhook_delivery.ca_file = Some(ca_file.clone());
        cfg.webhooks = vec![WebhookConfig {
            id: "crm".into(),
            tenant: gavel::config::Tenant::Sandbox,
            seller: None,
            url,
            secrets: vec![gavel::webhooks::Secret::generate()],
            secrets_env: None,
            events: vec!["lead.posted".into()],
            enabled: true,
        }];
    });
    let r = env.ping(&ping_body());
    assert_eq!(r.json["status"], "won", "{}", r.text);
    let id = r.json["auction_id"].as_str().unwrap();
    let token = r.json["bid"]["bid_token"].as_str().unwrap();
    let p = env.post("/v1/post", Some(TOKEN), &post_body(id, token).to_string());
    assert_eq!(p.status, 201, "{}", p.text);
    receiver.wait_for("the webhook over https", |s| {
        s.requests.iter().any(|r| r.0 == "/hook")
    });
}

/// The config file `check-config` reads: one https buyer whose `[buyers.tls]` table is `tls`.
fn config_error(tls: &str, extra: &str) -> String {
    let dir = temp_dir("tls-config");
    let text = format!(
        r#"
[[buyers]]
id = "secure"
tenant = "sandbox"
ping_url = "https://buyer.example/ping"
post_url = "https://buyer.example/post"
{extra}
[buyers.tls]
{tls}
"#
    );
    let path = dir.join("gavel.toml");
    std::fs::write(&path, text).unwrap();
    let e = gavel::cli::load_config(&path).expect_err("the config is refused");
    let _ = std::fs::remove_dir_all(&dir);
    e.to_string()
}

#[test]
fn check_config_names_the_tls_key_at_fault() {
    let dir = temp_dir("tls-config-files");
    let ca = Ca::new("CA");
    let good = ca.write(&dir, "ca.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "no certificates here\n").unwrap();
    let (cert, key) = ca.client().write(&dir, "client");

    let e = config_error(r#"ca_file = "/nonexistent/ca.pem""#, "");
    assert!(e.contains("`buyers[0].tls.ca_file`"), "{e}");
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");

    let e = config_error(
        &format!("ca_file = {:?}", garbage.display().to_string()),
        "",
    );
    assert!(e.contains("`buyers[0].tls.ca_file`"), "{e}");
    assert!(e.contains("bad PEM"), "{e}");

    let e = config_error(&format!("ca_file = {:?}", empty.display().to_string()), "");
    assert!(e.contains("`buyers[0].tls.ca_file`"), "{e}");

    let e = config_error(
        &format!("client_cert_file = {:?}", cert.display().to_string()),
        "",
    );
    assert!(e.contains("`buyers[0].tls.client_key_file`"), "{e}");

    // A key that is not the certificate's own.
    let other_key = dir.join("other.key");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let e = config_error(
        &format!(
            "client_cert_file = {:?}\nclient_key_file = {:?}",
            cert.display().to_string(),
            other_key.display().to_string()
        ),
        "",
    );
    assert!(e.contains("`buyers[0].tls.client_key_file`"), "{e}");

    let e = config_error(r#"server_name = "not a name!""#, "");
    assert!(e.contains("`buyers[0].tls.server_name`"), "{e}");

    // The same files, right, load.
    let path = dir.join("ok.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[buyers]]
id = "secure"
tenant = "sandbox"
ping_url = "https://buyer.example/ping"
post_url = "https://buyer.example/post"
[buyers.tls]
ca_file = {:?}
client_cert_file = {:?}
client_key_file = {:?}
server_name = "buyer.test"
"#,
            good.display().to_string(),
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    gavel::cli::load_config(&path).expect("valid TLS files load");

    // A `[buyers.tls]` table on a buyer without https URLs is a mistake worth naming.
    let path = dir.join("http.toml");
    std::fs::write(
        &path,
        r#"
[[buyers]]
id = "plain"
tenant = "sandbox"
ping_url = "http://buyer.example/ping"
post_url = "http://buyer.example/post"
[buyers.tls]
server_name = "buyer.test"
"#,
    )
    .unwrap();
    let e = gavel::cli::load_config(&path).unwrap_err().to_string();
    assert!(e.contains("`buyers[0].tls`"), "{e}");

    // The webhook sender's CA file is checked the same way.
    let path = dir.join("hooks.toml");
    std::fs::write(
        &path,
        "[webhook_delivery]\nca_file = \"/nonexistent/hooks-ca.pem\"\n",
    )
    .unwrap();
    let e = gavel::cli::load_config(&path).unwrap_err().to_string();
    assert!(e.contains("`webhook_delivery.ca_file`"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The mutual-TLS example of docs/buyer-integration.md ("TLS") is a valid buyer entry once its
/// three files exist, so the documented keys are the ones the config accepts.
#[test]
fn documented_tls_example_is_valid() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/buyer-integration.md"),
    )
    .unwrap();
    let start = doc
        .find("```toml\n[[buyers]]\nid = \"northwind_mtls\"")
        .expect("the example");
    let text = &doc[start + "```toml\n".len()..];
    let text = &text[..text.find("```").unwrap()];
    let dir = temp_dir("tls-doc");
    let ca = Ca::new("Northwind CA");
    let ca_file = ca.write(&dir, "northwind-ca.pem");
    let (cert, key) = ca.client().write(&dir, "gavel-client");
    let text = text
        .replace(
            "/etc/gavel/tls/northwind-ca.pem",
            &ca_file.display().to_string(),
        )
        .replace(
            "/etc/gavel/tls/gavel-client.pem",
            &cert.display().to_string(),
        )
        .replace(
            "/etc/gavel/tls/gavel-client.key",
            &key.display().to_string(),
        );
    let cfg = gavel::config::Config::parse("example.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    gavel::cli::check_config(&cfg, "example.toml").unwrap_or_else(|e| panic!("{e}"));
    let tls = cfg.buyers[0].tls.as_ref().expect("a [buyers.tls] table");
    assert_eq!(tls.server_name.as_deref(), Some("bids.northwind.example"));
    let _ = std::fs::remove_dir_all(&dir);
}
