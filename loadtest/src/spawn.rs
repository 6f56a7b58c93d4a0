//! Starting the world in-process for a one-command benchmark: the sandbox mock buyer fleet
//! (`gavel::sandbox::MockFleet`) and a Gavel server (`gavel::runtime::start`) with a config built
//! from flags, a temporary store and a freshly generated sandbox token.

use std::path::PathBuf;

use gavel::config::{BuyerConfig, Config, Tenant};
use gavel::runtime::ServerHandle;
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
    pub seed: u64,
    /// Start Gavel too (needs buyers).
    pub server: bool,
    pub server_cores: usize,
    /// The spawned server's `server.driver`.
    pub server_driver: gavel::config::Driver,
    pub durable: bool,
    /// Configure a webhook endpoint on the spawned server, delivering to a [`Sink`].
    pub webhooks: bool,
}

/// The running fleet and server. [`Spawned::stop`] (or drop) stops both and removes the store.
pub struct Spawned {
    pub fleet: Option<FleetHandle>,
    pub server: Option<ServerHandle>,
    /// `http://addr` of the spawned server.
    pub base_url: Option<String>,
    /// The generated token (scopes ping, post, reports, admin) when a server was spawned.
    pub token: Option<String>,
    /// The webhook receiver, with `--webhooks`.
    pub sink: Option<Sink>,
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
        server: None,
        base_url: None,
        token: None,
        sink: None,
        store_dir: None,
    };
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
    let fleet = MockFleet::start(
        "127.0.0.1:0".parse().expect("static address"),
        cfg.seed,
        mocks,
        cfg.buyer_threads,
    )
    .map_err(|e| format!("cannot start the mock buyers: {e}"))?;
    if cfg.server {
        let token = generate_token();
        let dir = std::env::temp_dir().join(format!("gavel-load-{:x}", unique()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        spawned.store_dir = Some(dir.clone());
        let mut config = server_config(cfg, &fleet, &token, &dir.join("db"))?;
        if cfg.webhooks {
            let sink = Sink::start()?;
            config.webhooks.push(gavel::config::WebhookConfig {
                id: "gavel_load".into(),
                tenant: Tenant::Sandbox,
                client: None,
                url: sink.url(),
                secrets: vec![sink.secret.clone()],
                secrets_env: None,
                events: vec!["lead.posted".into(), "auction.closed".into()],
                enabled: true,
            });
            config.validate("gavel-load").map_err(|e| e.to_string())?;
            spawned.sink = Some(sink);
        }
        let server = gavel::runtime::start(config)?;
        spawned.base_url = Some(format!("http://{}", server.addr));
        spawned.server = Some(server);
        spawned.token = Some(token);
    }
    spawned.fleet = Some(fleet);
    Ok(spawned)
}

/// The spawned server's config: loopback, `server_cores` unpinned cores (the generator and the
/// buyers share the machine), one sandbox token, every spawned buyer.
pub fn server_config(
    cfg: &SpawnConfig,
    fleet: &FleetHandle,
    token: &str,
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

# A benchmark measures Gavel, not its protective limits.
[limits]
client_requests_per_s = 1000000
seller_max_concurrent_auctions = 1000000
buyer_pings_per_s = 1000000

[[tokens]]
client = "gavel-load"
tenant = "sandbox"
sha256 = "{hash}"
scopes = ["ping", "post", "reports", "admin"]
"#,
        cores = cfg.server_cores.max(1),
        window = (hi + 1000).clamp(2000, gavel::config::MAX_WINDOW_MS),
        store = store.display().to_string().replace('\\', "\\\\"),
        durable = cfg.durable,
        hash = gavel::auth::sha256_hex(token),
    );
    let mut config = Config::parse("gavel-load", &text).map_err(|e| e.to_string())?;
    config.server.driver = cfg.server_driver;
    config.buyers = buyer_ids(cfg.buyers)
        .into_iter()
        .map(|id| BuyerConfig {
            ping_url: fleet.ping_url(&id),
            post_url: fleet.post_url(&id),
            id,
            tenant: Tenant::Sandbox,
            auth_header: None,
            enabled: true,
            filters: Default::default(),
            floor: 0.0,
            ping_timeout_ms: (hi + 500).max(1500),
            post_timeout_ms: 1500,
            max_pings_per_s: None,
        })
        .collect();
    config.validate("gavel-load").map_err(|e| e.to_string())?;
    Ok(config)
}

impl Spawned {
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
        if let Some(d) = self.store_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.shutdown();
    }
}
