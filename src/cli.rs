//! The `gavel` command line: `serve`, `mock-buyers`, `check-config` and `token create`.
//!
//! Each subcommand loads and validates the config, applies CLI overrides and calls into the library;
//! no business logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides, Scope, Tenant};

#[derive(Parser)]
#[command(
    name = "gavel",
    version,
    about = "Thread-per-core ping-post lead auction exchange"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the exchange (and, when sandbox.enabled, the mock buyers) until SIGINT or SIGTERM.
    Serve {
        /// Config file.
        #[arg(long, short, default_value = "config/gavel.toml")]
        config: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Run only the sandbox buyer fleet from a config's [sandbox] section.
    MockBuyers {
        #[arg(long, short, default_value = "config/gavel.toml")]
        config: PathBuf,
        /// Address to listen on (overrides sandbox.listen).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Threads serving the fleet.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Load and validate a config file, then print a summary.
    CheckConfig {
        #[arg(long, short, default_value = "config/gavel.toml")]
        config: PathBuf,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token, print it once, and print the [[tokens]] entry (hash only) for the config.
    Create {
        /// Client name the token belongs to.
        #[arg(long)]
        client: String,
        #[arg(long, value_parser = parse_tenant)]
        tenant: Tenant,
        /// Comma-separated scopes: ping,post,status,reports,dev.
        #[arg(long, value_delimiter = ',', value_parser = parse_scope, default_value = "ping,post")]
        scopes: Vec<Scope>,
    },
}

fn parse_tenant(s: &str) -> Result<Tenant, String> {
    match s {
        "sandbox" => Ok(Tenant::Sandbox),
        "production" => Ok(Tenant::Production),
        _ => Err("tenant must be sandbox or production".into()),
    }
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    match s {
        "ping" => Ok(Scope::Ping),
        "post" => Ok(Scope::Post),
        "status" => Ok(Scope::Status),
        "reports" => Ok(Scope::Reports),
        "dev" => Ok(Scope::Dev),
        _ => Err(format!("unknown scope {s:?}")),
    }
}

fn load(path: &std::path::Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| e.to_string())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Serve { config, overrides } => serve(&config, &overrides),
        Cmd::MockBuyers {
            config,
            listen,
            threads,
        } => mock_buyers(&config, listen, threads),
        Cmd::CheckConfig { config } => load(&config).map(|c| {
            println!(
                "{}: ok ({} cores, {} buyers, {} tokens, sandbox {})",
                config.display(),
                c.core_count(),
                c.buyers.len(),
                c.tokens.len(),
                if c.sandbox.enabled { "on" } else { "off" }
            );
        }),
        Cmd::Token {
            cmd:
                TokenCmd::Create {
                    client,
                    tenant,
                    scopes,
                },
        } => {
            let token = crate::auth::generate_token(tenant);
            let scopes: Vec<String> = scopes
                .iter()
                .map(|s| format!("\"{}\"", s.as_str()))
                .collect();
            println!("token (shown once, store it now): {token}");
            println!();
            println!("[[tokens]]");
            println!("client = \"{client}\"");
            println!("tenant = \"{}\"", tenant.as_str());
            println!("sha256 = \"{}\"", crate::auth::sha256_hex(&token));
            println!("scopes = [{}]", scopes.join(", "));
            Ok(())
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gavel: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Blocks until SIGINT or SIGTERM arrives.
fn wait_for_signal() -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    if let Some(sig) = signals.forever().next() {
        tracing::info!(
            signal = sig,
            "shutting down: no new connections, finishing in-flight requests"
        );
    }
    Ok(())
}

fn serve(path: &std::path::Path, overrides: &Overrides) -> Result<(), String> {
    let mut cfg = load(path)?;
    cfg.apply(overrides);
    cfg.validate(&path.display().to_string())
        .map_err(|e| e.to_string())?;
    let _log = crate::telemetry::init(&cfg.log);
    let fleet = if cfg.sandbox.enabled {
        let listen = cfg.sandbox.listen.expect("validated");
        let fleet = crate::sandbox::MockFleet::start(
            listen,
            cfg.sandbox.seed,
            cfg.sandbox.buyers.clone(),
            1,
        )
        .map_err(|e| format!("cannot start sandbox buyers on {listen}: {e}"))?;
        tracing::info!(addr = %fleet.addr(), buyers = cfg.sandbox.buyers.len(), "sandbox buyers serving");
        Some(fleet)
    } else {
        None
    };
    let server = crate::runtime::start(cfg)?;
    eprintln!("gavel listening on http://{}", server.addr);
    wait_for_signal()?;
    server.stop();
    drop(fleet);
    Ok(())
}

fn mock_buyers(
    path: &std::path::Path,
    listen: Option<std::net::SocketAddr>,
    threads: usize,
) -> Result<(), String> {
    let cfg = load(path)?;
    let _log = crate::telemetry::init(&cfg.log);
    let listen = listen
        .or(cfg.sandbox.listen)
        .ok_or("no address: set sandbox.listen or pass --listen")?;
    let fleet = crate::sandbox::MockFleet::start(
        listen,
        cfg.sandbox.seed,
        cfg.sandbox.buyers.clone(),
        threads.max(1),
    )
    .map_err(|e| format!("cannot start sandbox buyers on {listen}: {e}"))?;
    eprintln!(
        "sandbox buyers listening on http://{} ({} buyers)",
        fleet.addr(),
        cfg.sandbox.buyers.len()
    );
    wait_for_signal()?;
    drop(fleet);
    Ok(())
}
