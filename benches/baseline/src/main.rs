//! `gavel-baseline --config config/gavel.toml --listen 127.0.0.1:8090 [--threads N]
//! [--with-sandbox-buyers]`: see the crate docs and benches/baseline/README.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A plain tokio + axum + reqwest exchange on Gavel's business logic, for benchmarks only.
#[derive(Debug, Parser)]
#[command(name = "gavel-baseline", version)]
struct Args {
    /// Gavel's TOML config (tokens, buyers, auction settings; [server] and [store] are ignored).
    #[arg(long, default_value = "config/gavel.toml")]
    config: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// tokio worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Start the config's sandbox buyer fleet in-process on sandbox.listen, like `gavel serve`.
    #[arg(long)]
    with_sandbox_buyers: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gavel-baseline: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let cfg = gavel::cli::load_config(&args.config).map_err(|e| e.to_string())?;
    let fleet = if args.with_sandbox_buyers {
        let listen = cfg
            .sandbox
            .listen
            .ok_or("--with-sandbox-buyers needs sandbox.listen in the config")?;
        let fleet = gavel::sandbox::MockFleet::start(
            listen,
            cfg.sandbox.seed,
            cfg.sandbox.buyers.clone(),
            1,
        )
        .map_err(|e| format!("cannot start sandbox buyers on {listen}: {e}"))?;
        eprintln!("sandbox buyers listening on {}", fleet.base_url());
        Some(fleet)
    } else {
        None
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.build().map_err(|e| format!("cannot start tokio: {e}"))?;
    let app = gavel_baseline::App::new(cfg)?;
    let res = rt.block_on(async move {
        let listener = gavel_baseline::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        eprintln!("gavel-baseline listening on http://{addr} (no durability)");
        tokio::select! {
            r = gavel_baseline::serve(listener, app) => r.map_err(|e| e.to_string()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    drop(fleet);
    res
}
