//! Command-line interface of `gavel-load` (clap derive) and the parsers for its value formats
//! (`5s`, `500ms`, `1m`; `10..30`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};

use crate::schedule::Arrival;

/// What each scheduled arrival does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `POST /v1/ping` only.
    Ping,
    /// `POST /v1/ping`, then `POST /v1/post` with the bid token of every won auction.
    PingPost,
    /// `POST /v1/leads`: the one-call flow, auction and delivery in one request.
    Leads,
    /// `GET /healthz`: the HTTP ceiling of server + generator, no auction work.
    Healthz,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Ping => "ping",
            Scenario::PingPost => "ping-post",
            Scenario::Leads => "leads",
            Scenario::Healthz => "healthz",
        }
    }

    /// The scheduled phase: the one `--rate`, the progress line and `--slo-p99-ms` refer to.
    pub fn primary_phase(self) -> &'static str {
        match self {
            Scenario::Ping | Scenario::PingPost => "ping",
            Scenario::Leads => "leads",
            Scenario::Healthz => "healthz",
        }
    }
}

/// Open-loop load generator for Gavel (latency counted from each request's scheduled send time).
#[derive(Debug, Clone, Parser)]
#[command(name = "gavel-load", version)]
pub struct Args {
    /// Base URL of a running Gavel (ignored with --spawn-server).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token with scopes ping and post (generated with --spawn-server).
    #[arg(long, env = "GAVEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// OAuth client id: with --client-secret, gavel-load gets its access token from
    /// `POST /oauth/token` (client credentials) instead of taking --token.
    #[arg(long, env = "GAVEL_CLIENT_ID")]
    pub client_id: Option<String>,
    /// OAuth client secret (see --client-id).
    #[arg(long, env = "GAVEL_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    #[arg(long, value_enum, default_value = "ping-post")]
    pub scenario: Scenario,
    /// Requested arrivals per second (all generator cores together).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Arrival process: fixed interval or Poisson (seeded by --seed).
    #[arg(long, value_enum, default_value = "fixed")]
    pub arrival: Arrival,
    /// Measured window, after the warm-up (e.g. 60s, 500ms, 2m).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Warm-up before the measured window; its requests are counted apart, not in the table.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Most concurrent requests (keep-alive connections) per generator core; when all are busy a
    /// send waits, and the wait counts as latency.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Generator threads (one monoio runtime each).
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// Seed of the Poisson arrivals and of the spawned buyer fleet.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Verticals the pings rotate through (comma-separated), e.g. auto_insurance,solar.
    #[arg(
        long = "vertical",
        value_delimiter = ',',
        default_value = "auto_insurance"
    )]
    pub verticals: Vec<String>,
    /// States the pings rotate through (comma-separated, from TX CA FL NY IL OH GA PA AZ WA).
    #[arg(long, value_delimiter = ',', default_value = "TX,CA,FL,NY,IL,OH,GA,PA")]
    pub states: Vec<String>,
    /// Per-request timeout; a request past it counts as a `timeout` transport error.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// After the last send, how long to wait for in-flight requests before stopping.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub drain: Duration,
    /// Generator-saturation threshold on p99 send lateness (send after the scheduled instant), ms.
    /// Sends are fired on the 1 ms timer tick at or before their schedule, so lateness means the
    /// generator's loop was busy.
    #[arg(long, default_value_t = 2.0)]
    pub max_lateness_ms: f64,

    /// Start this many sandbox mock buyers in-process (gavel's MockFleet).
    #[arg(long)]
    pub buyers: Option<usize>,
    /// Mock buyers' ping latency range, ms (uniform).
    #[arg(long, value_parser = parse_range, default_value = "10..30")]
    pub buyer_latency_ms: (u64, u64),
    /// Mock buyers' post latency range, ms (uniform; the sandbox default is 2..5).
    #[arg(long, value_parser = parse_range, default_value = "2..5")]
    pub buyer_post_latency_ms: (u64, u64),
    /// Share of pings each mock buyer bids on.
    #[arg(long, default_value_t = 0.7)]
    pub bid_rate: f64,
    /// Share of posts each mock buyer accepts.
    #[arg(long, default_value_t = 0.95)]
    pub post_accept: f64,
    /// Threads of the spawned buyer fleet.
    #[arg(long, default_value_t = 1)]
    pub buyer_threads: usize,
    /// Run the spawned buyer fleet as a child process (`gavel mock-buyers`, the `gavel` binary
    /// next to this one), so that this process's CPU is the server's and the generator's only.
    #[arg(long)]
    pub buyers_process: bool,
    /// Start Gavel in-process (temp store, generated token, the spawned buyers).
    #[arg(long)]
    pub spawn_server: bool,
    /// PEM file of the CA an `https` --url's certificate chains to (default: the public roots).
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// The spawned server serves https (`[server.tls]`) with a certificate of a CA generated for
    /// the run, which the generator trusts: measures what TLS costs Gavel per seller request.
    #[arg(long)]
    pub server_tls: bool,
    /// The spawned buyers serve https with a certificate of a CA generated for the run, which the
    /// spawned server trusts (`[buyers.tls] ca_file`): measures what TLS to buyers costs Gavel.
    /// In-process buyers only (not with --buyers-process).
    #[arg(long)]
    pub buyers_tls: bool,
    /// Cores of the spawned server.
    #[arg(long, default_value_t = 1)]
    pub server_cores: usize,
    /// Spawned server's io driver (`server.driver`): auto (io_uring where the kernel allows it,
    /// else epoll), uring, or legacy (epoll).
    #[arg(long, value_enum, default_value = "auto")]
    pub server_driver: gavel::config::Driver,
    /// Spawned server's `server.max_queue_delay_ms` (1..=5000): how late a core may run before it
    /// sheds new work with 503 overloaded. The server's default; 5000 all but turns it off.
    #[arg(long, default_value_t = 50)]
    pub server_max_queue_delay_ms: u64,
    /// Spawned server: answer before records reach the disk (benchmark of durability's cost only).
    #[arg(long)]
    pub no_durable: bool,
    /// Spawned server: deliver `lead.posted` and `auction.closed` webhooks to a receiver inside
    /// gavel-load (answers 204 at once, checks signatures), and report their count and lag.
    #[arg(long)]
    pub webhooks: bool,

    /// Write the machine-readable report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the measured latencies here as an HdrHistogram interval log (one histogram per
    /// second per phase, tagged with the phase name; values in µs).
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
    /// Draw the latency-by-percentile plot here (one line per phase); `.svg` or `.png`.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Exit with status 2 when the p99 of the primary phase (ping, leads or healthz) exceeds
    /// this, ms.
    #[arg(long)]
    pub slo_p99_ms: Option<f64>,
}

impl Args {
    /// Checks cross-field rules clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return Err("--rate must be positive".into());
        }
        if self.cores == 0 || self.connections == 0 {
            return Err("--cores and --connections must be at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        if self.states.is_empty() {
            return Err("--states must name at least one state".into());
        }
        if self.verticals.iter().any(|v| v.is_empty()) {
            return Err("--vertical: empty vertical name".into());
        }
        if self.client_id.is_some() != self.client_secret.is_some() {
            return Err("--client-id and --client-secret go together".into());
        }
        for s in &self.states {
            if crate::run::zip3_of(s).is_none() {
                return Err(format!("--states: unknown state {s:?}"));
            }
        }
        if let Some(p) = &self.plot {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !ext.eq_ignore_ascii_case("svg") && !ext.eq_ignore_ascii_case("png") {
                return Err(format!(
                    "--plot {}: the file name must end in .svg or .png",
                    p.display()
                ));
            }
        }
        if self.buyers == Some(0) {
            return Err("--buyers must be at least 1".into());
        }
        if self.server_tls && !self.spawn_server {
            return Err(
                "--server-tls needs --spawn-server (give --ca-file for another server)".into(),
            );
        }
        if self.buyers_tls && (!self.spawn_server || self.buyers_process) {
            return Err(
                "--buyers-tls needs --spawn-server and in-process buyers (not --buyers-process)"
                    .into(),
            );
        }
        if self.buyers_process && self.buyers.is_none() {
            return Err("--buyers-process needs --buyers N".into());
        }
        if self.spawn_server && self.buyers.is_none() {
            return Err(
                "--spawn-server needs --buyers N (the server gets the spawned fleet)".into(),
            );
        }
        if !self.spawn_server
            && self.scenario != Scenario::Healthz
            && self.token.is_none()
            && self.client_id.is_none()
        {
            return Err(
                "--token (or --client-id and --client-secret) is required unless --spawn-server"
                    .into(),
            );
        }
        for (name, p) in [
            ("--bid-rate", self.bid_rate),
            ("--post-accept", self.post_accept),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be in 0..=1"));
            }
        }
        Ok(())
    }

    /// The request parameters, for the JSON report (the token is never included).
    pub fn params_json(&self) -> Value {
        json!({
            "url": if self.spawn_server { Value::Null } else { json!(self.url) },
            "scenario": self.scenario.name(),
            "rate": self.rate,
            "arrival": self.arrival,
            "duration_s": self.duration.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "connections": self.connections,
            "cores": self.cores,
            "seed": self.seed,
            "verticals": self.verticals,
            "oauth_client_id": self.client_id,
            "states": self.states,
            "timeout_s": self.timeout.as_secs_f64(),
            "drain_s": self.drain.as_secs_f64(),
            "max_lateness_ms": self.max_lateness_ms,
            "buyers": self.buyers,
            "buyer_latency_ms": [self.buyer_latency_ms.0, self.buyer_latency_ms.1],
            "buyer_post_latency_ms": [self.buyer_post_latency_ms.0, self.buyer_post_latency_ms.1],
            "bid_rate": self.bid_rate,
            "post_accept": self.post_accept,
            "buyer_threads": self.buyer_threads,
            "buyers_process": self.buyers_process,
            "spawn_server": self.spawn_server,
            "server_tls": self.server_tls,
            "buyers_tls": self.buyers_tls,
            "ca_file": self.ca_file.as_ref().map(|p| p.display().to_string()),
            "server_cores": self.server_cores,
            "server_driver": format!("{:?}", self.server_driver).to_lowercase(),
            "server_max_queue_delay_ms": self.server_max_queue_delay_ms,
            "durable": !self.no_durable,
            "webhooks": self.webhooks,
            "slo_p99_ms": self.slo_p99_ms,
            "hdr_log": self.hdr_log,
            "plot": self.plot,
        })
    }
}

/// `1.5s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 60s, 500ms, 2m)"))?;
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// `A..B` (inclusive, A <= B) or a single `A`.
pub fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("invalid range {s:?} (use e.g. 10..30)");
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (a, b.trim_start_matches('=')),
        None => (s, s),
    };
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    if a > b {
        return Err(bad());
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ranges() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_range("10..30").unwrap(), (10, 30));
        assert_eq!(parse_range("5").unwrap(), (5, 5));
        assert!(parse_range("30..10").is_err());
    }

    #[test]
    fn reference_command_parses() {
        let a = Args::try_parse_from([
            "gavel-load",
            "--spawn-server",
            "--buyers",
            "5",
            "--buyer-latency-ms",
            "10..30",
            "--bid-rate",
            "0.7",
            "--post-accept",
            "0.95",
            "--scenario",
            "ping-post",
            "--duration",
            "60s",
            "--warmup",
            "10s",
        ])
        .unwrap();
        a.validate().unwrap();
        assert_eq!(a.scenario, Scenario::PingPost);
        assert_eq!(a.buyer_latency_ms, (10, 30));
        assert!(Args::try_parse_from(["gavel-load", "--rate", "10"])
            .unwrap()
            .validate()
            .is_err());
    }
}
