//! Starting the world in-process for a one-command benchmark: the sandbox mock buyer fleet
//! (`gavel::sandbox::MockFleet`) and a Gavel server (`gavel::api::start`) with a config built
//! from flags, a temporary store and a freshly generated sandbox token. With `--buyers-process` the
//! fleet runs instead as a child `gavel mock-buyers` process (the `gavel` binary next to this
//! one), so that this process's CPU holds no buyer work.

use std::path::PathBuf;

use gavel::config::{BuyerConfig, Config, Tenant};
use gavel::exchange::ServerHandle;
use gavel::sandbox::{FleetHandle, MockBuyerConfig, MockFleet};

use crate::webhook_sink::Sink;

/// What to start.
#[derive(Debug, Clone)]
pub struct SpawnConfig {
    /// Mock buyers to start (0: none).
    pub buyers: usize,
    /// Uniform ping latency range of every mock buyer, ms.
    pub buyer_latency_ms: (u64, u64),
    /// Uniform post latency range of every mock buyer, ms.
    pub buyer_post_latency_ms: (u64, u64),
    pub bid_rate: f64,
    pub post_accept: f64,
    pub buyer_threads: usize,
    /// Run the fleet as a child `gavel mock-buyers` process instead of in-process.
    pub buyers_process: bool,
    pub seed: u64,
    /// Start Gavel too (needs buyers).
    pub server: bool,
    pub server_cores: usize,
    /// The spawned server's `server.driver`.
    pub server_driver: gavel::config::Driver,
    /// The spawned server's `server.max_queue_delay_ms`: its overload shedding stays on, since
    /// how it sheds is part of what a run past capacity measures.
    pub server_max_queue_delay_ms: u64,
    pub durable: bool,
    /// Configure a webhook endpoint on the spawned server, delivering to a [`Sink`].
    pub webhooks: bool,
    /// The spawned server serves https, with a certificate of a CA made for the run.
    pub server_tls: bool,
    /// The in-process buyers serve https; the spawned server trusts their CA.
    pub buyers_tls: bool,
}

/// The running fleet and server. [`Spawned::stop`] (or drop) stops both and removes the store.
pub struct Spawned {
    pub fleet: Option<FleetHandle>,
    /// The fleet's child process, with `--buyers-process`.
    pub buyers_child: Option<std::process::Child>,
    /// `http://addr` of the fleet, in-process or child.
    pub buyers_url: Option<String>,
    pub server: Option<ServerHandle>,
    /// `http://addr` of the spawned server.
    pub base_url: Option<String>,
    /// The generated token (scopes ping, post, reports, admin) when a server was spawned.
    pub token: Option<String>,
    /// A generated operator token (scope reports) for the spawned server's latency report: a
    /// seller's report holds only its own two series, the operator's the exchange-wide ones.
    pub report_token: Option<String>,
    /// The webhook receiver, with `--webhooks`.
    pub sink: Option<Sink>,
    /// The run's CA and certificate, with `--server-tls` or `--buyers-tls`.
    pub pki: Option<crate::tls::Pki>,
    store_dir: Option<PathBuf>,
}

/// Ids of the spawned buyers: `buyer-0`, `buyer-1`, …
pub fn buyer_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("buyer-{i}")).collect()
}

fn unique() -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    nanos ^ (u128::from(std::process::id()) << 64)
}

/// A fresh sandbox token (never written anywhere but the server's in-memory config, hashed).
pub fn generate_token() -> String {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(unique() as u64 ^ (unique() >> 64) as u64);
    let hex: String = (0..32)
        .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
        .collect();
    format!("gv_test_load_{hex}")
}

/// Starts what `cfg` asks for.
pub fn start(cfg: &SpawnConfig) -> Result<Spawned, String> {
    let mut spawned = Spawned {
        fleet: None,
        buyers_child: None,
        buyers_url: None,
        server: None,
        base_url: None,
        token: None,
        report_token: None,
        sink: None,
        pki: None,
        store_dir: None,
    };
    if cfg.server_tls || cfg.buyers_tls {
        let dir = std::env::temp_dir().join(format!("gavel-load-tls-{:x}", unique()));
        let pki = crate::tls::Pki::generate(&dir)?;
        crate::tls::trust(&pki.ca_file);
        spawned.pki = Some(pki);
    }
    if cfg.buyers == 0 {
        if cfg.server {
            return Err("a spawned server needs spawned buyers".into());
        }
        return Ok(spawned);
    }
    let (lo, hi) = cfg.buyer_latency_ms;
    let mocks: Vec<MockBuyerConfig> = buyer_ids(cfg.buyers)
        .into_iter()
        .map(|id| {
            let mut b = MockBuyerConfig::new(id);
            b.latency_ms_min = lo;
            b.latency_ms_max = hi;
            (b.post_latency_ms_min, b.post_latency_ms_max) = cfg.buyer_post_latency_ms;
            b.bid_probability = cfg.bid_rate;
            b.post_accept_probability = cfg.post_accept;
            b
        })
        .collect();
    let fleet_url = if cfg.buyers_process {
        let dir = std::env::temp_dir().join(format!("gavel-load-buyers-{:x}", unique()));
        let started = start_buyers_process(cfg, &mocks, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        let (child, url) = started?;
        spawned.buyers_child = Some(child);
        url
    } else {
        let tls = match (&spawned.pki, cfg.buyers_tls) {
            (Some(pki), true) => Some(pki.server_config()?),
            _ => None,
        };
        let fleet = MockFleet::start_tls(
            "127.0.0.1:0".parse().expect("static address"),
            cfg.seed,
            mocks,
            cfg.buyer_threads,
            tls,
        )
        .map_err(|e| format!("cannot start the mock buyers: {e}"))?;
        let url = fleet.base_url();
        spawned.fleet = Some(fleet);
        url
    };
    spawned.buyers_url = Some(fleet_url.clone());
    if cfg.server {
        let token = generate_token();
        let report_token = generate_token();
        let dir = std::env::temp_dir().join(format!("gavel-load-{:x}", unique()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        spawned.store_dir = Some(dir.clone());
        let mut config = server_config(cfg, &fleet_url, &token, &report_token, &dir.join("db"))?;
        if let Some(pki) = &spawned.pki {
            if cfg.server_tls {
                config.server.tls = Some(pki.server.clone());
            }
            if cfg.buyers_tls {
                for b in &mut config.buyers {
                    b.tls = Some(pki.buyer_tls());
                }
            }
            gavel::cli::check_config(&config, "gavel-load").map_err(|e| e.to_string())?;
        }
        if cfg.webhooks {
            let sink = Sink::start()?;
            config.webhooks.push(gavel::config::WebhookConfig {
                id: "gavel_load".into(),
                tenant: Tenant::Sandbox,
                seller: None,
                url: sink.url(),
                secrets: vec![sink.secret.clone()],
                secrets_env: None,
                events: vec!["lead.posted".into(), "auction.closed".into()],
                enabled: true,
            });
            gavel::cli::check_config(&config, "gavel-load").map_err(|e| e.to_string())?;
            spawned.sink = Some(sink);
        }
        let scheme = if cfg.server_tls { "https" } else { "http" };
        let server = gavel::api::start(config)?;
        spawned.base_url = Some(format!("{scheme}://{}", server.addr));
        spawned.server = Some(server);
        spawned.token = Some(token);
        spawned.report_token = Some(report_token);
    }
    Ok(spawned)
}

/// The `gavel` binary next to this executable (`target/<profile>/`), or one directory up (a test
/// binary lives in `target/<profile>/deps/`).
fn gavel_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dirs: Vec<&std::path::Path> = exe.ancestors().skip(1).take(2).collect();
    dirs.iter()
        .map(|d| d.join(format!("gavel{}", std::env::consts::EXE_SUFFIX)))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "--buyers-process needs the gavel binary next to gavel-load ({}); build it with the same profile, e.g. `cargo build --release -p gavel --bin gavel`",
                dirs.first().map_or(String::new(), |d| d.display().to_string())
            )
        })
}

/// Starts `gavel mock-buyers` with a config of `mocks` written into `dir`, and waits for the line
/// naming its address. Returns the child and `http://addr`. The config file is only needed until
/// the child has read it, which it has once it prints the address.
#[allow(clippy::disallowed_methods)] // Before the run, on the main thread: no event loop here.
fn start_buyers_process(
    cfg: &SpawnConfig,
    mocks: &[MockBuyerConfig],
    dir: &std::path::Path,
) -> Result<(std::process::Child, String), String> {
    use std::io::BufRead;
    {
        let bin = gavel_binary()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut text = format!(
            "[log]\nlevel = \"warn\"\n\n[sandbox]\nseed = {}\n",
            cfg.seed
        );
        for b in mocks {
            text.push_str(&format!(
                "\n[[sandbox.buyers]]\nid = {:?}\nbid_probability = {}\nlatency_ms_min = {}\nlatency_ms_max = {}\npost_latency_ms_min = {}\npost_latency_ms_max = {}\npost_accept_probability = {}\n",
                b.id,
                b.bid_probability,
                b.latency_ms_min,
                b.latency_ms_max,
                b.post_latency_ms_min,
                b.post_latency_ms_max,
                b.post_accept_probability
            ));
        }
        let path = dir.join("buyers.toml");
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mut child = std::process::Command::new(&bin)
            .arg("mock-buyers")
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0", "--threads"])
            .arg(cfg.buyer_threads.max(1).to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {} mock-buyers: {e}", bin.display()))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("sandbox buyers listening on ") {
                        break rest.split_whitespace().next().unwrap_or("").to_string();
                    }
                    eprintln!("gavel mock-buyers: {line}");
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("gavel mock-buyers exited before it listened".to_string());
                }
            }
        };
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("gavel mock-buyers: {line}");
            }
        });
        Ok((child, url))
    }
}

/// The spawned server's config: loopback, `server_cores` unpinned cores (the generator and the
/// buyers share the machine), one sandbox seller token, one sandbox operator token for reports,
/// every spawned buyer.
pub fn server_config(
    cfg: &SpawnConfig,
    fleet_url: &str,
    token: &str,
    report_token: &str,
    store: &std::path::Path,
) -> Result<Config, String> {
    let hi = cfg.buyer_latency_ms.1;
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
cores = {cores}
pin_threads = false

[auction]
window_ms = {window}

[store]
path = "{store}"
durable = {durable}

[log]
level = "warn"

# A free port, so a spawned server never collides with another Gavel's operations listener.
[metrics]
listen = "127.0.0.1:0"

# The buyers are the load test's own, on loopback or a private network; Gavel's own listeners
# stay refused.
[egress]
allow_private = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]

# A benchmark measures Gavel, not its protective limits.
[limits]
client_requests_per_s = 1000000
seller_max_concurrent_auctions = 1000000
seller_pings_per_s = 1000000
seller_max_unposted_auctions = 4294967295
buyer_pings_per_s = 1000000

[[tokens]]
client = "gavel-load"
tenant = "sandbox"
sha256 = "{hash}"
scopes = ["ping", "post", "reports", "admin"]

[[tokens]]
client = "gavel-load-reports"
tenant = "sandbox"
sha256 = "{report_hash}"
scopes = ["reports"]
operator = true
"#,
        cores = cfg.server_cores.max(1),
        window = (hi + 1000).clamp(2000, gavel::config::MAX_WINDOW_MS),
        store = store.display().to_string().replace('\\', "\\\\"),
        durable = cfg.durable,
        hash = gavel::auth::sha256_hex(token),
        report_hash = gavel::auth::sha256_hex(report_token),
    );
    let mut config = Config::parse("gavel-load", &text).map_err(|e| e.to_string())?;
    config.server.driver = cfg.server_driver;
    config.server.max_queue_delay_ms = cfg.server_max_queue_delay_ms;
    config.buyers = buyer_ids(cfg.buyers)
        .into_iter()
        .map(|id| BuyerConfig {
            ping_url: format!("{fleet_url}/buyers/{id}/ping"),
            post_url: format!("{fleet_url}/buyers/{id}/post"),
            id,
            tenant: Tenant::Sandbox,
            auth_header: None,
            enabled: true,
            filters: Default::default(),
            floor: 0,
            ping_timeout_ms: (hi + 500).max(1500),
            post_timeout_ms: 1500,
            max_pings_per_s: None,
            tls: None,
            fixed_price: None,
            ping_format: None,
            post_format: None,
        })
        .collect();
    gavel::cli::check_config(&config, "gavel-load").map_err(|e| e.to_string())?;
    Ok(config)
}

impl Spawned {
    /// The buyer child process's id, with `--buyers-process`.
    pub fn buyers_pid(&self) -> Option<u32> {
        self.buyers_child.as_ref().map(|c| c.id())
    }

    /// Stops the server (then the buyers) and removes the temporary store.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
        if let Some(f) = self.fleet.take() {
            f.stop();
        }
        if let Some(mut c) = self.buyers_child.take() {
            // Mock buyers keep no state, so a kill loses nothing.
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = self.store_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
        if let Some(p) = self.pki.take() {
            let _ = std::fs::remove_dir_all(p.dir);
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.shutdown();
    }
}
