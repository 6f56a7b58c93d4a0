//! Shared harness for the integration tests: a real Gavel on 127.0.0.1:0 with two cores, a real
//! sandbox buyer fleet on loopback, and a small blocking HTTP client.

#![allow(dead_code)]
#![allow(
    clippy::disallowed_methods,
    reason = "the harness's blocking clients run on test threads, not event loops"
)]

pub mod receiver;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gavel::config::{BuyerConfig, Config, Driver};
use gavel::exchange::ServerHandle;
use gavel::sandbox::{FleetHandle, MockBuyerConfig, MockFleet};
use gavel::types::clock::Clock;

/// Every scope, sandbox tenant.
pub const TOKEN: &str = "gv_test_integration_all_scopes_000000000000";
/// Only the `ping` scope.
pub const PING_ONLY: &str = "gv_test_integration_ping_only_00000000000";
/// Production tenant, every scope.
pub const LIVE: &str = "gv_live_integration_production_000000000000";
/// The sandbox tenant's operator (`operator = true`): scopes `reports` and `admin`. Admin routes
/// and the operator's full auction records are read with it; TOKEN and LIVE are sellers.
pub const OPERATOR: &str = "gv_test_integration_operator_0000000000000";
/// The production tenant's operator: scopes `reports` and `admin`.
pub const LIVE_OPERATOR: &str = "gv_live_integration_operator_0000000000000";

/// Drivers the e2e suite runs under. io_uring is required unless GAVEL_TEST_ALLOW_NO_URING=1, so a
/// machine without it fails loudly instead of silently testing one driver.
pub fn drivers() -> Vec<Driver> {
    if gavel_testkit::uring_runs() {
        vec![Driver::Uring, Driver::Legacy]
    } else {
        vec![Driver::Legacy]
    }
}

/// A fresh, unique directory under the system temp dir (removed by [`Env`]'s drop).
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("gavel-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn base_config(driver: Driver) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
cores = 2
driver = "{driver}"
pin_threads = false
header_read_timeout_ms = 1000
shutdown_grace_ms = 5000
# Debug builds on a busy test machine run late often; the overload tests set their own.
max_queue_delay_ms = 5000

[auction]
window_ms = 1500
floor = 1.00
margin_percent = 10.0

[store]
path = "{store}"

# High enough never to trigger by accident; the rate-limit tests set their own.
[limits]
client_requests_per_s = 1000000
seller_pings_per_s = 1000000
seller_max_unposted_auctions = 4294967295
buyer_pings_per_s = 1000000

[log]
level = "warn"

# A free port: many test servers run at once.
[metrics]
listen = "127.0.0.1:0"

# The sandbox fleet and the tests' own buyers listen on loopback. Gavel's own listeners stay
# refused: only an ip:port entry would allow one.
[egress]
allow_private = ["127.0.0.0/8", "::1/128"]

[[tokens]]
client = "it-all"
tenant = "sandbox"
sha256 = "{all}"
scopes = ["ping", "post", "status", "reports", "dev", "admin"]

[[tokens]]
client = "it-ping"
tenant = "sandbox"
sha256 = "{ping}"
scopes = ["ping"]

[[tokens]]
client = "it-live"
tenant = "production"
sha256 = "{live}"
scopes = ["ping", "post", "reports", "dev", "admin"]

[[tokens]]
client = "it-operator"
tenant = "sandbox"
sha256 = "{operator}"
scopes = ["reports", "admin"]
operator = true

[[tokens]]
client = "it-live-operator"
tenant = "production"
sha256 = "{live_operator}"
scopes = ["reports", "admin"]
operator = true

[[rules]]
source = "facebook_ads"
require = ["lead.tcpa.trustedform_cert_url"]
"#,
        driver = match driver {
            Driver::Uring => "uring",
            Driver::Legacy => "legacy",
            Driver::Auto => "auto",
        },
        store = temp_dir("store").join("db").display(),
        all = gavel::auth::sha256_hex(TOKEN),
        ping = gavel::auth::sha256_hex(PING_ONLY),
        live = gavel::auth::sha256_hex(LIVE),
        operator = gavel::auth::sha256_hex(OPERATOR),
        live_operator = gavel::auth::sha256_hex(LIVE_OPERATOR),
    );
    Config::parse("test.toml", &text).expect("test config parses")
}

/// A Gavel buyer entry pointing at a fleet buyer.
pub fn buyer(fleet: &FleetHandle, id: &str) -> BuyerConfig {
    BuyerConfig {
        id: id.to_string(),
        tenant: gavel::config::Tenant::Sandbox,
        ping_url: fleet.ping_url(id),
        post_url: fleet.post_url(id),
        auth_header: None,
        enabled: true,
        filters: Default::default(),
        floor: 0,
        ping_timeout_ms: 1500,
        post_timeout_ms: 800,
        max_pings_per_s: None,
        tls: None,
        fixed_price: None,
        ping_format: None,
        post_format: None,
    }
}

/// A sandbox token that belongs to buyer `buyer` (scope `status`): the buyer reports the status of
/// the leads it bought with it.
pub fn buyer_token(client: &str, buyer: &str, token: &str) -> gavel::config::TokenConfig {
    gavel::config::TokenConfig {
        client: client.to_string(),
        tenant: gavel::config::Tenant::Sandbox,
        sha256: gavel::auth::sha256_hex(token),
        scopes: [gavel::config::Scope::Status].into_iter().collect(),
        buyer: Some(buyer.to_string()),
        seller: None,
        operator: false,
        requests_per_s: None,
    }
}

/// A mock buyer that always bids exactly `price` and accepts every post.
pub fn fixed(id: &str, price: f64) -> MockBuyerConfig {
    let mut b = MockBuyerConfig::new(id);
    b.bid_probability = 1.0;
    b.price_min = price;
    b.price_max = price;
    b.post_accept_probability = 1.0;
    b.latency_ms_min = 1;
    b.latency_ms_max = 5;
    b
}

/// A manual clock standing at the system's now: records and tokens the server stamps look
/// current, and nothing expires until the test advances it.
pub fn manual_clock() -> Clock {
    Clock::manual(gavel::types::clock::system_now_ms())
}

/// Installs logging once for the whole test process and keeps its writer alive.
fn init_logging(cfg: &Config) {
    static GUARD: std::sync::OnceLock<Option<tracing_appender::non_blocking::WorkerGuard>> =
        std::sync::OnceLock::new();
    GUARD.get_or_init(|| gavel::telemetry::init(&cfg.log));
}

pub struct Env {
    pub fleet: FleetHandle,
    pub server: Option<ServerHandle>,
    pub base: String,
    pub config: Config,
    /// The server's wall clock: the system's, or a manual one from [`Env::start_with_clock`]
    /// that the test advances instead of sleeping. A restart keeps it.
    pub clock: Clock,
}

impl Env {
    /// Starts `mocks` as a fleet, points Gavel buyers at all of them, lets `tweak` adjust the
    /// config, then starts Gavel.
    pub fn start(
        driver: Driver,
        mocks: Vec<MockBuyerConfig>,
        tweak: impl FnOnce(&mut Config, &FleetHandle),
    ) -> Env {
        Env::start_with_clock(driver, mocks, tweak, Clock::system())
    }

    /// [`Env::start`] on `clock`, usually [`manual_clock`].
    pub fn start_with_clock(
        driver: Driver,
        mocks: Vec<MockBuyerConfig>,
        tweak: impl FnOnce(&mut Config, &FleetHandle),
        clock: Clock,
    ) -> Env {
        let ids: Vec<String> = mocks.iter().map(|m| m.id.clone()).collect();
        let fleet =
            MockFleet::start("127.0.0.1:0".parse().unwrap(), 7, mocks, 1).expect("fleet starts");
        let mut cfg = base_config(driver);
        cfg.buyers = ids.iter().map(|id| buyer(&fleet, id)).collect();
        tweak(&mut cfg, &fleet);
        gavel::cli::check_config(&cfg, "test.toml").expect("test config is valid");
        init_logging(&cfg);
        let server =
            gavel::api::start_with_clock(cfg.clone(), clock.clone()).expect("server starts");
        let base = format!("http://{}", server.addr);
        Env {
            fleet,
            server: Some(server),
            base,
            config: cfg,
            clock,
        }
    }

    /// Stops the server and starts a new one on the same store (and the same fleet), as after a
    /// clean restart. The new server listens on a new port.
    pub fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
        let mut cfg = self.config.clone();
        cfg.server.listen = "127.0.0.1:0".parse().unwrap();
        // In one process the old server's store may still be closing when the new one opens it:
        // sled releases its file lock only once its own background flush has finished, which on a
        // busy machine can outlast `stop`. A real restart is a new process, so this wait is the
        // test harness's, bounded at 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        let server = loop {
            match gavel::api::start_with_clock(cfg.clone(), self.clock.clone()) {
                Ok(s) => break s,
                Err(e) if e.contains("could not acquire lock") && Instant::now() < deadline => {
                    #[allow(clippy::disallowed_methods, reason = "a test thread, not a core")]
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("server restarts: {e}"),
            }
        };
        self.base = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    /// Moves the server's manual clock `ms` past both where it stands and the system's now. The
    /// sandbox buyers stamp their bids' validity with the system clock (they are another party,
    /// not part of the server), so a jump past the later of the two covers what either stamped.
    pub fn jump_clock(&self, ms: u64) {
        let from = self
            .clock
            .now_ms()
            .max(gavel::types::clock::system_now_ms());
        self.clock.set_ms(from + ms);
    }

    pub fn server(&self) -> &ServerHandle {
        self.server.as_ref().expect("running")
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        call(&self.base, "GET", path, token, None, &[])
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &str) -> Resp {
        call(&self.base, "POST", path, token, Some(body), &[])
    }

    pub fn post_with(
        &self,
        path: &str,
        token: Option<&str>,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        call(&self.base, "POST", path, token, Some(body), headers)
    }

    pub fn ping(&self, body: &serde_json::Value) -> Resp {
        self.post("/v1/ping", Some(TOKEN), &body.to_string())
    }

    /// `GET /metrics` from the operations listener (no token, and not counted against any
    /// client's rate limit or in the request counters).
    pub fn scrape_resp(&self) -> Resp {
        let ops = self
            .server()
            .metrics_addr
            .expect("the test config turns the operations listener on");
        call(&format!("http://{ops}"), "GET", "/metrics", None, None, &[])
    }

    /// The Prometheus text of [`Env::scrape_resp`].
    pub fn scrape(&self) -> String {
        let r = self.scrape_resp();
        assert_eq!(r.status, 200, "{}", r.text);
        r.text
    }

    pub fn metric_sum(&self, name: &str) -> u64 {
        let text = self.scrape();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
        if let Some(dir) = self.config.store.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
    pub json: serde_json::Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `field` of every entry of an error body's `field_errors`.
    pub fn field_names(&self) -> Vec<&str> {
        self.json["field_errors"]
            .as_array()
            .expect("the body has field_errors")
            .iter()
            .map(|e| {
                e["field"]
                    .as_str()
                    .expect("every field error names its field")
            })
            .collect()
    }

    pub fn error_code(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }
}

fn agent() -> ureq::Agent {
    thread_local! {
        static AGENT: ureq::Agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(20))
            .build();
    }
    AGENT.with(|a| a.clone())
}

pub fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = agent().request(method, &format!("{base}{path}"));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    for (n, v) in headers {
        req = req.set(n, v);
    }
    let res = match body {
        Some(b)
            if headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type")) =>
        {
            req.send_string(b)
        }
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: transport error: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .flat_map(|n| {
            resp.all(&n)
                .into_iter()
                .map(|v| (n.clone(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let text = resp.into_string().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Resp {
        status,
        headers,
        text,
        json,
    }
}

/// Sends raw bytes on a fresh connection and returns whatever comes back before the server
/// closes the connection or `timeout` passes.
pub fn raw(addr: std::net::SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn ping_body() -> serde_json::Value {
    serde_json::json!({
        "vertical": "auto_insurance",
        "sub_vertical": "non_standard",
        "state": "TX",
        "zip3": "770",
        "source": "google_ads",
        "tcpa_consent": true,
        "ai_quality_score": 0.84,
        "currently_insured": true,
        "vehicle_count": 2,
        "driver_age_band": "35-44"
    })
}

/// The PII of the test lead; tests check it never shows up where it must not.
pub const PII: &[&str] = &[
    "Maria",
    "Lopez",
    "maria.lopez@example.com",
    "+15125550182",
    "1200 Sample St",
    "203.0.113.42",
];

pub fn post_body(auction_id: &str, bid_token: &str) -> serde_json::Value {
    serde_json::json!({
        "auction_id": auction_id,
        "bid_token": bid_token,
        "lead": {
            "first_name": "Maria",
            "last_name": "Lopez",
            "email": "maria.lopez@example.com",
            "phone": "+15125550182",
            "address": {"line1": "1200 Sample St", "city": "Houston", "state": "TX", "zip": "77001"},
            "tcpa": {
                "consent_text": "By clicking submit, I consent to be contacted.",
                "consent_timestamp": "2026-05-11T14:21:58Z",
                "ip_address": "203.0.113.42"
            }
        }
    })
}

/// One HTTP/1.1 request as a blocking test server reads it.
#[allow(dead_code, reason = "each test file uses the parts it checks")]
pub struct TestRequest {
    pub method: String,
    /// Path and query, as the request line carries them.
    pub target: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Reads the next request from a keep-alive connection (`Content-Length` bodies only, which is
/// what Gavel sends); `None` when the peer closed or sent something unreadable.
#[allow(dead_code, reason = "not every test file runs a test server")]
pub fn read_request(r: &mut impl std::io::BufRead) -> Option<TestRequest> {
    let (method, target, headers) = gavel_testkit::receiver::read_head(r)?;
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(TestRequest {
        method,
        target,
        headers,
        body,
    })
}
