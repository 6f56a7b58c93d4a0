//! The `gavel` command line: `serve`, `mock-buyers`, `check-config`, `token create` and
//! `clients create|list|revoke`.
//!
//! Each subcommand loads and validates the config, applies CLI overrides and calls into the library;
//! no business logic lives here. `clients` talks to a running server's admin API (the server owns
//! the store, and a revocation must reach its cores), with a token holding the `admin` scope.

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
    /// Manage OAuth clients of a running server (its admin API, scope `admin`).
    Clients {
        /// Base URL of the running Gavel.
        #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
        url: String,
        /// Token with the `admin` scope (static token or OAuth access token).
        #[arg(long, env = "GAVEL_ADMIN_TOKEN", hide_env_values = true, global = true)]
        token: Option<String>,
        #[command(subcommand)]
        cmd: ClientsCmd,
    },
}

#[derive(Subcommand)]
enum ClientsCmd {
    /// Register a client of the admin token's tenant; prints its id and secret (secret once).
    Create {
        /// Display name: 1-64 characters of A-Z, a-z, 0-9, space, _ . -.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: ping,post,status,reports,dev,admin.
        #[arg(long, value_delimiter = ',', value_parser = parse_scope, default_value = "ping,post")]
        scopes: Vec<Scope>,
    },
    /// List the tenant's clients, revoked ones included.
    List,
    /// Revoke a client: its access tokens stop working on every core at once.
    Revoke {
        /// The client id (`cl_…`).
        client_id: String,
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
        /// Comma-separated scopes: ping,post,status,reports,dev,admin.
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
    Scope::parse(s).ok_or_else(|| format!("unknown scope {s:?}"))
}

/// Calls the admin API and prints the answer; an error answer becomes the command's error.
fn clients(url: &str, token: Option<&str>, cmd: ClientsCmd) -> Result<(), String> {
    let token = token.ok_or("set --token or GAVEL_ADMIN_TOKEN to a token with the admin scope")?;
    let base = url.trim_end_matches('/');
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(10))
        .build();
    let auth = format!("Bearer {token}");
    let res = match &cmd {
        ClientsCmd::Create { name, scopes } => {
            let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            agent
                .post(&format!("{base}/v1/admin/clients"))
                .set("Authorization", &auth)
                .send_json(serde_json::json!({ "name": name, "scopes": scopes }))
        }
        ClientsCmd::List => agent
            .get(&format!("{base}/v1/admin/clients"))
            .set("Authorization", &auth)
            .call(),
        ClientsCmd::Revoke { client_id } => agent
            .delete(&format!("{base}/v1/admin/clients/{client_id}"))
            .set("Authorization", &auth)
            .call(),
    };
    let body: serde_json::Value = match res {
        Ok(r) => r
            .into_json()
            .map_err(|e| format!("unreadable answer: {e}"))?,
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            return Err(format!("{base} answered {code}: {text}"));
        }
        Err(e) => return Err(format!("cannot reach {base}: {e}")),
    };
    let show = |c: &serde_json::Value| {
        let scopes: Vec<&str> = c["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .collect();
        format!(
            "{}  {}  tenant={}  scopes={}  created={}{}",
            c["client_id"].as_str().unwrap_or("?"),
            c["name"].as_str().unwrap_or("?"),
            c["tenant"].as_str().unwrap_or("?"),
            scopes.join(","),
            c["created_at"].as_str().unwrap_or("?"),
            c["revoked_at"]
                .as_str()
                .map(|r| format!("  REVOKED {r}"))
                .unwrap_or_default()
        )
    };
    match cmd {
        ClientsCmd::Create { .. } => {
            println!("{}", show(&body));
            println!(
                "client_id:     {}",
                body["client_id"].as_str().unwrap_or("?")
            );
            println!(
                "client_secret: {}  (shown once, store it now)",
                body["client_secret"].as_str().unwrap_or("?")
            );
        }
        ClientsCmd::List => {
            for c in body["clients"].as_array().into_iter().flatten() {
                println!("{}", show(c));
            }
        }
        ClientsCmd::Revoke { .. } => println!("{}", show(&body)),
    }
    Ok(())
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
        Cmd::Clients { url, token, cmd } => clients(&url, token.as_deref(), cmd),
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
