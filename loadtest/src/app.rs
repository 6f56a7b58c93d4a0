//! One whole `gavel-load` invocation: start what was asked for, run the schedule, stop everything,
//! and build the [`Report`].

use gavel::config::Driver;

use crate::cli::Args;
use crate::report::{Placement, Report, Saturation, Stats};
use crate::run::RunConfig;
use crate::spawn::{SpawnConfig, Spawned};

/// The driver the generator threads use: io_uring where the kernel allows it, else epoll.
pub fn generator_driver() -> Driver {
    gavel::runtime::resolve_driver(Driver::Auto).unwrap_or(Driver::Legacy)
}

pub fn spawn_config(args: &Args) -> SpawnConfig {
    SpawnConfig {
        buyers: args.buyers.unwrap_or(0),
        buyer_latency_ms: args.buyer_latency_ms,
        bid_rate: args.bid_rate,
        post_accept: args.post_accept,
        buyer_threads: args.buyer_threads,
        seed: args.seed,
        server: args.spawn_server,
        server_cores: args.server_cores,
        durable: !args.no_durable,
    }
}

pub fn run_config(args: &Args, spawned: &Spawned) -> RunConfig {
    RunConfig {
        base_url: spawned.base_url.clone().unwrap_or_else(|| args.url.clone()),
        token: spawned.token.clone().or_else(|| args.token.clone()),
        scenario: args.scenario,
        arrival: args.arrival,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        connections: args.connections,
        cores: args.cores,
        seed: args.seed,
        vertical: args.vertical.clone(),
        states: args.states.clone(),
        timeout: args.timeout,
        drain: args.drain,
    }
}

fn is_loopback(url: &str) -> bool {
    gavel::buyers::pool::Origin::parse(url)
        .map(|o| o.host == "localhost" || o.host.starts_with("127.") || o.host == "[::1]")
        .unwrap_or(false)
}

pub fn placement(args: &Args, driver: Driver) -> Placement {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let spawned_buyers = args.buyers.is_some();
    let summary = if args.spawn_server {
        format!(
            "generator ({} cores), mock buyers ({} threads) and Gavel ({} cores, unpinned) all shared this machine ({cpus} CPUs), in one process",
            args.cores, args.buyer_threads, args.server_cores
        )
    } else {
        let server = if is_loopback(&args.url) {
            format!("Gavel at {} (loopback: shares this machine)", args.url)
        } else {
            format!("Gavel at {} (another machine)", args.url)
        };
        if spawned_buyers {
            format!(
                "generator ({} cores) and mock buyers ({} threads) shared this machine ({cpus} CPUs); {server}",
                args.cores, args.buyer_threads
            )
        } else {
            format!(
                "generator ({} cores) on this machine ({cpus} CPUs); buyers are the server's own; {server}",
                args.cores
            )
        }
    };
    Placement {
        buyers_spawned: spawned_buyers,
        server_spawned: args.spawn_server,
        summary,
        available_cpus: cpus,
        generator_driver: format!("{driver:?}").to_lowercase(),
    }
}

/// Builds the report of a finished run.
pub fn report(args: &Args, stats: Stats, driver: Driver) -> Report {
    let saturation = Saturation::check(&stats.lateness, args.max_lateness_ms);
    Report {
        params: args.params_json(),
        scenario: args.scenario.name().to_string(),
        requested_rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        stats,
        saturation,
        placement: placement(args, driver),
        buyer_latency_max_ms: args.buyers.map(|_| args.buyer_latency_ms.1),
        slo_p99_ms: args.slo_p99_ms,
    }
}

/// Runs `args` end to end. Spawned buyers and server are stopped before this returns.
pub fn execute(args: &Args) -> Result<Report, String> {
    args.validate()?;
    let spawned = crate::spawn::start(&spawn_config(args))?;
    if let (Some(f), None) = (&spawned.fleet, &spawned.server) {
        eprintln!(
            "gavel-load: mock buyers at {}/buyers/buyer-N/{{ping,post}} (N = 0..{}); point the server at them",
            f.base_url(),
            args.buyers.unwrap_or(0)
        );
    }
    let driver = generator_driver();
    let cfg = run_config(args, &spawned);
    eprintln!(
        "gavel-load: {} at {}/s against {} for {:?} (+{:?} warm-up) …",
        args.scenario.name(),
        args.rate,
        cfg.base_url,
        args.duration,
        args.warmup
    );
    let stats = crate::run::run(&cfg, driver);
    spawned.stop();
    Ok(report(args, stats?, driver))
}
