//! One whole `gavel-load` invocation: start what was asked for, run the schedule, stop everything,
//! and build the [`Report`].

use gavel::config::Driver;

use crate::cli::Args;
use crate::report::{Placement, Report, Saturation, Stats};
use crate::run::RunConfig;
use crate::server_view::{self, ServerView};
use crate::spawn::{SpawnConfig, Spawned};

/// The driver the generator threads use: io_uring where the kernel allows it, else epoll.
pub fn generator_driver() -> Driver {
    gavel::runtime::resolve_driver(Driver::Auto).unwrap_or(Driver::Legacy)
}

pub fn spawn_config(args: &Args) -> SpawnConfig {
    SpawnConfig {
        buyers: args.buyers.unwrap_or(0),
        buyer_latency_ms: args.buyer_latency_ms,
        buyer_post_latency_ms: args.buyer_post_latency_ms,
        bid_rate: args.bid_rate,
        post_accept: args.post_accept,
        buyer_threads: args.buyer_threads,
        buyers_process: args.buyers_process,
        seed: args.seed,
        server: args.spawn_server,
        server_cores: args.server_cores,
        server_driver: args.server_driver,
        server_max_queue_delay_ms: args.server_max_queue_delay_ms,
        durable: !args.no_durable,
        webhooks: args.webhooks,
        server_tls: args.server_tls,
        buyers_tls: args.buyers_tls,
    }
}

pub fn run_config(args: &Args, spawned: &Spawned, token: Option<String>) -> RunConfig {
    RunConfig {
        base_url: spawned.base_url.clone().unwrap_or_else(|| args.url.clone()),
        token,
        scenario: args.scenario,
        arrival: args.arrival,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        connections: args.connections,
        cores: args.cores,
        seed: args.seed,
        verticals: args.verticals.clone(),
        states: args.states.clone(),
        timeout: args.timeout,
        drain: args.drain,
        intervals: args.hdr_log.is_some(),
    }
}

fn is_loopback(url: &str) -> bool {
    gavel::buyers::pool::Origin::parse(url)
        .map(|o| o.host == "localhost" || o.host.starts_with("127.") || o.host == "[::1]")
        .unwrap_or(false)
}

/// The spawned server's driver as set, and what `auto` resolves to here: `auto (uring)`.
pub fn server_driver_name(d: Driver) -> String {
    let name = |d: Driver| format!("{d:?}").to_lowercase();
    match d {
        Driver::Auto => match gavel::runtime::resolve_driver(Driver::Auto) {
            Ok(r) => format!("auto ({})", name(r)),
            Err(_) => "auto".into(),
        },
        other => name(other),
    }
}

pub fn placement(args: &Args, driver: Driver) -> Placement {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let spawned_buyers = args.buyers.is_some();
    let summary = if args.spawn_server {
        format!(
            "generator ({} cores), mock buyers ({} threads) and Gavel ({} cores, driver {}, unpinned) all shared this machine ({cpus} CPUs), {}",
            args.cores,
            args.buyer_threads,
            args.server_cores,
            server_driver_name(args.server_driver),
            if args.buyers_process {
                "the buyers in a child process (gavel mock-buyers), the rest in this one"
            } else {
                "in one process"
            }
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
        server_driver: args
            .spawn_server
            .then(|| server_driver_name(args.server_driver)),
    }
}

/// Builds the report of a finished run.
pub fn report(
    args: &Args,
    stats: Stats,
    driver: Driver,
    server: Option<Result<ServerView, String>>,
    webhooks: Option<crate::webhook_sink::WebhookView>,
    cpu: Option<Result<crate::cpu::CpuView, String>>,
) -> Report {
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
        server,
        webhooks,
        cpu,
    }
}

/// Runs `args` end to end. Spawned buyers and server are stopped before this returns.
pub fn execute(args: &Args) -> Result<Report, String> {
    args.validate()?;
    let spawned = crate::spawn::start(&spawn_config(args))?;
    if let (Some(f), None) = (&spawned.buyers_url, &spawned.server) {
        eprintln!(
            "gavel-load: mock buyers at {}/buyers/buyer-N/{{ping,post}} (N = 0..{}); point the server at them",
            f,
            args.buyers.unwrap_or(0)
        );
    }
    let driver = generator_driver();
    // The bearer token: the spawned server's, --token, or one fetched with the OAuth client.
    let token = match (
        &spawned.token,
        &args.token,
        &args.client_id,
        &args.client_secret,
    ) {
        (Some(t), _, _, _) | (None, Some(t), _, _) => Some(t.clone()),
        (None, None, Some(id), Some(secret)) => {
            let base = spawned.base_url.as_deref().unwrap_or(&args.url);
            Some(crate::client::oauth_token(base, id, secret, driver)?)
        }
        _ => None,
    };
    let cfg = run_config(args, &spawned, token);
    eprintln!(
        "gavel-load: {} at {}/s against {} for {:?} (+{:?} warm-up) …",
        args.scenario.name(),
        args.rate,
        cfg.base_url,
        args.duration,
        args.warmup
    );
    let healthz = args.scenario == crate::cli::Scenario::Healthz;
    let phase = args.scenario.primary_phase();
    let remote = spawned.server.is_none();
    let buyers_pid = spawned.buyers_pid();
    // When the warm-up ends (the generator starts 50 ms after `run` is called): this process's CPU
    // times, the remote server's CPU counter, and Gavel's histograms, in that order, so the
    // fetches' own cost falls in the window's CPU the least. Read on this helper thread, never on
    // a generator core. The same again after the run; the differences cover the measured window.
    // The latency report is read with the spawned server's operator token, which sees the
    // exchange-wide series (a seller's own report has only its own ping and post series).
    let report_token = spawned.report_token.clone().or_else(|| cfg.token.clone());
    let before = {
        let (url, token) = (cfg.base_url.clone(), cfg.token.clone());
        let report_token = report_token.clone();
        let at = args.warmup + std::time::Duration::from_millis(50);
        std::thread::spawn(move || {
            let _ = crossbeam_channel::after(at).recv();
            let cpu = crate::cpu::Reading::take(buyers_pid);
            let server_cpu = remote
                .then(|| crate::cpu::fetch_server_process_us(&url, token.as_deref(), driver).ok())
                .flatten();
            let view =
                (!healthz).then(|| server_view::fetch(&url, report_token.as_deref(), driver));
            (cpu, server_cpu, view)
        })
    };
    // The generator threads' CPU is read before they exit (a thread that exited is gone from
    // /proc/self/task).
    let mut cpu_after = Err("the run did not start".to_string());
    let stats = match crate::progress::start(phase) {
        Ok((publisher, line)) => {
            let stats = crate::run::run_with_hooks(&cfg, driver, Some(publisher), || {
                cpu_after = crate::cpu::Reading::take(buyers_pid);
            });
            line.finish();
            stats
        }
        Err(e) => Err(e),
    };
    let server_cpu_after = remote
        .then(|| {
            crate::cpu::fetch_server_process_us(&cfg.base_url, cfg.token.as_deref(), driver).ok()
        })
        .flatten();
    let (cpu_before, server_cpu_before, view_before) = before
        .join()
        .map_err(|_| "the warm-up snapshot thread panicked".to_string())?;
    let server = view_before.map(|before| {
        let after = server_view::fetch(&cfg.base_url, report_token.as_deref(), driver);
        server_view::window(&before?, &after?)
    });
    let cpu = stats.as_ref().ok().map(|s| {
        let m = &s.measured;
        let auctions = match args.scenario {
            crate::cli::Scenario::Healthz => 0,
            crate::cli::Scenario::Leads => m.leads.count,
            _ => m.ping.count,
        };
        let requests = m.ping.count + m.post.count + m.leads.count + m.healthz.count;
        let mut view = crate::cpu::CpuView::window(&cpu_before?, &cpu_after?, auctions, requests);
        if let (Some(b), Some(a)) = (server_cpu_before, server_cpu_after) {
            view.server_process_us = Some(a.saturating_sub(b));
        }
        Ok(view)
    });
    // Every event of the run, warm-up included: wait until deliveries stop arriving.
    let webhooks = spawned.sink.as_ref().map(|s| {
        eprintln!("gavel-load: waiting for the last webhooks …");
        s.finish(
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(60),
        )
    });
    spawned.stop();
    Ok(report(args, stats?, driver, server, webhooks, cpu))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn server_driver_in_placement_and_json() {
        let a = Args::try_parse_from([
            "gavel-load",
            "--spawn-server",
            "--buyers",
            "1",
            "--server-driver",
            "legacy",
        ])
        .unwrap();
        let p = placement(&a, Driver::Legacy);
        assert!(p.summary.contains("driver legacy"), "{}", p.summary);
        assert_eq!(p.server_driver.as_deref(), Some("legacy"));
        assert_eq!(spawn_config(&a).server_driver, Driver::Legacy);
        assert_eq!(a.params_json()["server_driver"], "legacy");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["server_driver"], "legacy");
        let auto = Args::try_parse_from(["gavel-load", "--spawn-server", "--buyers", "1"]).unwrap();
        assert!(placement(&auto, Driver::Legacy)
            .server_driver
            .unwrap()
            .starts_with("auto"));
        let remote = Args::try_parse_from(["gavel-load", "--token", "t"]).unwrap();
        assert_eq!(placement(&remote, Driver::Legacy).server_driver, None);
    }
}
