//! Crash safety, proven with `kill -9`: Gavel runs as a child process against sandbox buyers that
//! log every delivery; concurrent sellers drive ping → post flows with idempotency keys; Gavel is
//! SIGKILLed at random moments and restarted on the same data directory; every request is retried
//! with its original key and body.
//!
//! Asserted after every restart:
//! - the store opens and Gavel serves again;
//! - every answer a seller saw (2xx, 4xx) comes back identical, marked `Idempotent-Replayed`;
//! - no auction is sold to two buyers or yields two buyer lead ids;
//! - each buyer received at most one distinct lead per auction (repeats carry one Idempotency-Key).
//!
//! `GAVEL_CRASH_CYCLES` sets the number of kill/restart cycles (default 20).

// Test threads are not event loops: sleeping in them is how the test paces the kills.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use gavel::sandbox::{FleetHandle, MockFleet};
use rand::{Rng, SeedableRng};

/// What a seller saw for one request: status, replay flag, body. `None`: no answer (crash).
type Seen = Option<(u16, bool, String)>;

struct Flow {
    ping_key: String,
    ping_body: String,
    ping_seen: Seen,
    post_body: Option<String>,
    post_key: Option<String>,
    post_seen: Seen,
}

impl Flow {
    /// A flow that has sent nothing yet: a ping under `ping_key`, then its post.
    fn new(ping_key: String) -> Flow {
        Flow {
            ping_key,
            ping_body: ping_body().to_string(),
            ping_seen: None,
            post_body: None,
            post_key: None,
            post_seen: None,
        }
    }
}

/// Kills the child on drop, so a failing assertion never leaves a Gavel running.
struct Gavel(Child);

impl Gavel {
    fn kill9(&mut self) {
        self.0.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
        let _ = self.0.wait();
    }
}

impl Drop for Gavel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_gavel(config: &Path) -> (Gavel, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gavel starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(addr) = line.strip_prefix("gavel listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                    sent = true;
                }
            }
            // Keep draining so the child never blocks on a full pipe.
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("gavel reports its address (the store opened cleanly)");
    (Gavel(child), base)
}

fn send(base: &str, path: &str, key: &str, body: &str) -> Seen {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let res = agent
        .post(&format!("{base}{path}"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "application/json")
        .set("Idempotency-Key", key)
        .send_string(body);
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(_) => return None,
    };
    let status = resp.status();
    let replayed = resp.header("idempotent-replayed") == Some("true");
    let body = resp.into_string().ok()?;
    Some((status, replayed, body))
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
}

/// Runs a flow's steps until its post is final (not a 502 asking for a retry), at most 5 tries;
/// the server must answer every one.
fn finish(base: &str, f: &mut Flow) {
    for _ in 0..5 {
        assert!(step(base, f), "server answers after restart");
        if f.post_seen.as_ref().is_none_or(|s| s.0 != 502) {
            break;
        }
    }
}

/// Runs a flow's next step against `base`. Returns false when the server stopped answering.
fn step(base: &str, f: &mut Flow) -> bool {
    if f.ping_seen.is_none() {
        f.ping_seen = send(base, "/v1/ping", &f.ping_key, &f.ping_body);
        if f.ping_seen.is_none() {
            return false;
        }
    }
    let (status, _, body) = f.ping_seen.clone().unwrap();
    let ping = json(&body);
    if status != 200 || ping["status"] != "won" {
        return true;
    }
    if f.post_body.is_none() {
        let id = ping["auction_id"].as_str().unwrap();
        let token = ping["bid"]["bid_token"].as_str().unwrap();
        f.post_body = Some(post_body(id, token).to_string());
        f.post_key = Some(format!("post_{id}"));
    }
    // A 502 means "unresolved, retry with the same key": keep retrying until final.
    if f.post_seen.is_none() || f.post_seen.as_ref().is_some_and(|s| s.0 == 502) {
        let seen = send(
            base,
            "/v1/post",
            f.post_key.as_ref().unwrap(),
            f.post_body.as_ref().unwrap(),
        );
        if seen.is_none() {
            return false;
        }
        f.post_seen = seen;
    }
    true
}

fn config(dir: &Path, fleet: &FleetHandle) -> PathBuf {
    config_with(dir, fleet, "")
}

/// The crash config plus `extra` TOML appended at the end.
fn config_with(dir: &Path, fleet: &FleetHandle, extra: &str) -> PathBuf {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
cores = 2
pin_threads = false
shutdown_grace_ms = 1000
# A debug build on a busy machine runs late; these tests are about crashes, not shedding.
max_queue_delay_ms = 5000

[auction]
window_ms = 500
floor = 1.00

[store]
path = "{data}"

[log]
level = "error"

# The kill -9 tests run side by side; a free port keeps their operations listeners apart.
[metrics]
listen = "127.0.0.1:0"

# The sandbox buyers listen on loopback.
[egress]
allow_private = ["127.0.0.0/8"]

# The re-checks replay thousands of requests at once; this test is about durability, not limits.
[limits]
client_requests_per_s = 1000000
seller_pings_per_s = 1000000
seller_max_unposted_auctions = 4294967295
buyer_pings_per_s = 1000000

[[tokens]]
client = "crash"
tenant = "sandbox"
sha256 = "{hash}"
scopes = ["ping", "post", "reports"]

# Reads /metrics on the API port, which takes only the production operator's tokens.
[[tokens]]
client = "crash-ops"
tenant = "production"
sha256 = "{live}"
scopes = ["reports"]
operator = true
"#,
        data = dir.join("data").display(),
        hash = gavel::auth::sha256_hex(TOKEN),
        live = gavel::auth::sha256_hex(LIVE_OPERATOR),
    );
    for id in ["alpha", "bravo", "charlie"] {
        text.push_str(&format!(
            "\n[[buyers]]\nid = \"{id}\"\ntenant = \"sandbox\"\nping_url = \"{}\"\npost_url = \"{}\"\n",
            fleet.ping_url(id),
            fleet.post_url(id)
        ));
    }
    text.push_str(extra);
    let path = dir.join("gavel.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn kill_dash_nine_loses_no_acknowledged_sale_and_sells_no_lead_twice() {
    let cycles: usize = std::env::var("GAVEL_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = std::env::temp_dir().join(format!("gavel-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let mut alpha = fixed("alpha", 30.0);
    alpha.post_accept_probability = 0.7; // refusals exercise fallback
    alpha.post_latency_ms_min = 1;
    alpha.post_latency_ms_max = 15;
    let mut bravo = fixed("bravo", 20.0);
    bravo.bid_probability = 0.8;
    let charlie = fixed("charlie", 10.0);
    let fleet = MockFleet::start(
        "127.0.0.1:0".parse().unwrap(),
        11,
        vec![alpha, bravo, charlie],
        2,
    )
    .expect("fleet starts");
    let cfg = config(&dir, &fleet);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xC0FFEE);
    let mut flows: Vec<Flow> = Vec::new();
    let mut checked = 0usize;
    let mut interrupted = 0usize;
    let workers = 8;

    for cycle in 0..cycles {
        let (mut child, base) = start_gavel(&cfg);

        // 1. Earlier requests again, with their original keys and bodies: all of the last
        // cycle's, and every tenth older one (the older ones were checked after earlier crashes).
        let recent = flows.len().saturating_sub(workers * 6);
        for (n, f) in flows.iter_mut().enumerate() {
            if n < recent && n % 10 != 0 {
                continue;
            }
            if let Some(seen) = f.ping_seen.clone() {
                let again =
                    send(&base, "/v1/ping", &f.ping_key, &f.ping_body).expect("server answers");
                assert_eq!(
                    (again.0, again.2.as_str()),
                    (seen.0, seen.2.as_str()),
                    "ping {} replays identically",
                    f.ping_key
                );
                assert!(again.1, "ping {} replay is marked", f.ping_key);
                checked += 1;
            }
            if let (Some(seen), Some(key), Some(body)) =
                (f.post_seen.clone(), f.post_key.clone(), f.post_body.clone())
            {
                if seen.0 != 502 {
                    let again = send(&base, "/v1/post", &key, &body).expect("server answers");
                    assert_eq!(
                        (again.0, again.2.as_str()),
                        (seen.0, seen.2.as_str()),
                        "post {key} replays identically"
                    );
                    assert!(again.1, "post {key} replay is marked");
                    checked += 1;
                }
            }
            // Finish flows a crash interrupted.
            finish(&base, f);
            checked += 1;
        }

        // 2. New concurrent flows, until a SIGKILL at a random moment.
        let start = flows.len();
        let fresh: Vec<Flow> = (0..workers * 6)
            .map(|i| Flow::new(format!("ping-c{cycle}-f{i}")))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let handles = run_flows(&base, fresh, workers, &stop);
        let kill_after = Duration::from_millis(rng.gen_range(30..400));
        let t0 = Instant::now();
        while t0.elapsed() < kill_after && !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill9();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            flows.extend(h.join().unwrap());
        }
        // Flows the kill caught with a request unanswered or undone.
        interrupted += flows[start..]
            .iter()
            .filter(|f| f.ping_seen.is_none() || (f.post_body.is_some() && f.post_seen.is_none()))
            .count();
    }

    // Final pass: everything resolves, then check what the buyers received.
    let (mut child, base) = start_gavel(&cfg);
    for f in flows.iter_mut() {
        finish(&base, f);
    }
    child.kill9();

    let deliveries = fleet.log().deliveries();
    let mut sold_to: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut lead_ids: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut keys: HashMap<(&str, &str), HashSet<Option<&str>>> = HashMap::new();
    for d in &deliveries {
        keys.entry((&d.buyer_id, &d.auction_id))
            .or_default()
            .insert(d.idempotency_key.as_deref());
        if d.accepted {
            sold_to
                .entry(&d.auction_id)
                .or_default()
                .insert(&d.buyer_id);
            lead_ids
                .entry(&d.auction_id)
                .or_default()
                .insert(d.lead_id.as_deref().unwrap());
        }
    }
    for (auction, buyers) in &sold_to {
        assert_eq!(buyers.len(), 1, "auction {auction} sold to {buyers:?}");
        assert_eq!(
            lead_ids[auction].len(),
            1,
            "auction {auction} has lead ids {:?}",
            lead_ids[auction]
        );
    }
    for ((buyer, auction), k) in &keys {
        assert_eq!(k.len(), 1, "{buyer} got auction {auction} under keys {k:?}");
    }
    let mut sold = 0;
    for f in &flows {
        if let Some((201, _, body)) = &f.post_seen {
            let j = json(body);
            let auction = j["auction_id"].as_str().unwrap();
            let id = j["buyer_lead_id"].as_str().unwrap();
            assert!(
                lead_ids.get(auction).is_some_and(|s| s.contains(id)),
                "acknowledged sale {auction} is a delivery the buyer took"
            );
            sold += 1;
        }
    }
    assert!(sold > 0, "the test sold leads");
    println!(
        "crash test: {cycles} kill -9 cycles, {} flows ({interrupted} cut off by a kill), {sold} sales, {checked} requests re-checked, {} buyer deliveries",
        flows.len(),
        deliveries.len()
    );
    assert!(interrupted > 0, "the kills interrupted some flows");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `flows` on `workers` threads until they finish or `stop` is set; returns them.
fn run_flows(
    base: &str,
    flows: Vec<Flow>,
    workers: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Flow>>> {
    let per = flows.len().div_ceil(workers);
    let mut flows = flows;
    let mut handles = Vec::new();
    while !flows.is_empty() {
        let mut mine: Vec<Flow> = flows.drain(..per.min(flows.len())).collect();
        let (base, stop) = (base.to_string(), stop.clone());
        handles.push(std::thread::spawn(move || {
            for f in mine.iter_mut() {
                if stop.load(Ordering::Relaxed) || !step(&base, f) {
                    break;
                }
            }
            mine
        }));
    }
    handles
}

#[test]
fn kill_dash_nine_with_undelivered_webhooks_delivers_every_one_after_restart_and_invents_none() {
    use common::receiver::{Answer, Receiver};

    let dir = std::env::temp_dir().join(format!("gavel-crash-webhooks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut alpha = fixed("alpha", 30.0);
    alpha.post_accept_probability = 0.6;
    let mut bravo = fixed("bravo", 20.0);
    bravo.post_accept_probability = 0.6;
    let charlie = fixed("charlie", 10.0);
    let fleet = MockFleet::start(
        "127.0.0.1:0".parse().unwrap(),
        13,
        vec![alpha, bravo, charlie],
        2,
    )
    .expect("fleet starts");
    // While Gavel runs the receiver holds every request for 2 s: with one delivery in flight at
    // a time, nearly every event is still in the outbox when Gavel is killed.
    let rx = Receiver::with_plan(Box::new(|_, _| Answer {
        status: 200,
        headers: Vec::new(),
        stall: Duration::from_secs(2),
    }));
    let secret = gavel::webhooks::Secret::generate();
    let cfg = config_with(
        &dir,
        &fleet,
        &format!(
            r#"
[webhook_delivery]
retry_schedule_ms = [200, 200, 200, 200, 200]
max_in_flight_per_endpoint = 1
threads = 1

[[webhooks]]
id = "seller"
tenant = "sandbox"
url = "{}"
secrets = ["{secret}"]
events = ["lead.posted"]
"#,
            rx.url("/hook")
        ),
    );

    // 1. Concurrent flows, cut off by a kill at a random moment.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5EED);
    let flows: Vec<Flow> = (0..32).map(|i| Flow::new(format!("wh-ping-{i}"))).collect();
    let (mut child, base) = start_gavel(&cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = run_flows(&base, flows, 8, &stop);
    std::thread::sleep(Duration::from_millis(rng.gen_range(50..300)));
    child.kill9();
    stop.store(true, Ordering::Relaxed);
    let mut flows: Vec<Flow> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();

    // 2. Restart, finish every flow (retries with the original keys), then kill again while the
    // receiver still holds the outbox back.
    let (mut child, base) = start_gavel(&cfg);
    for f in flows.iter_mut() {
        finish(&base, f);
    }
    let depth: u64 = ureq::get(&format!("{base}/metrics"))
        .set("Authorization", &format!("Bearer {LIVE_OPERATOR}"))
        .call()
        .expect("metrics answer")
        .into_string()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("gavel_webhook_outbox_depth{endpoint=\"seller\"} "))
        .expect("outbox depth is exported")
        .parse()
        .unwrap();
    child.kill9();
    let before_kill = rx.hits().len();

    // What the sellers were told: every final post answer, by lead.
    let mut answers: HashMap<String, serde_json::Value> = HashMap::new();
    for f in &flows {
        if let Some((201 | 200, _, body)) = &f.post_seen {
            let j = json(body);
            answers.insert(j["lead_uuid"].as_str().unwrap().to_string(), j);
        }
    }
    assert!(
        answers.len() >= 10,
        "the test posted leads: {}",
        answers.len()
    );
    assert!(
        depth > 0 && before_kill < answers.len(),
        "events were still in the outbox at the kill: depth {depth}, {before_kill} of {} answered",
        answers.len()
    );

    // 3. The receiver answers at once now; after a restart every event arrives.
    rx.set_plan(Box::new(|_, _| Answer::status(200)));
    let (_child, _base) = start_gavel(&cfg);
    rx.wait_for(Duration::from_secs(30), "every lead.posted event", |_| {
        let got: HashSet<String> = rx
            .delivered("/hook")
            .iter()
            .map(|h| {
                h.json()["data"]["lead_uuid"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        answers.keys().all(|k| got.contains(k))
    });
    std::thread::sleep(Duration::from_millis(500));
    let delivered = rx.delivered("/hook");
    for h in rx.hits() {
        h.verify(&secret).expect("every delivery verifies");
    }
    // None invented: one event per final answer, carrying exactly that answer.
    assert_eq!(
        delivered.len(),
        answers.len(),
        "one webhook-id per posted lead"
    );
    for h in &delivered {
        let body = h.json();
        assert_eq!(body["type"], "lead.posted");
        let lead = body["data"]["lead_uuid"].as_str().unwrap();
        assert_eq!(
            body["data"], answers[lead],
            "the event carries the answer the seller got"
        );
    }
    println!(
        "webhook crash test: {} posted leads, outbox depth {depth} at the second kill, {} requests in all",
        answers.len(),
        rx.hits().len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
