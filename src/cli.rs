//! The `gavel` command line: `serve`, `mock-buyers`, `check-config`, `token create`,
//! `clients create|list|revoke`, `webhooks list|events|replay|enable`,
//! `buyers list|show|create|update|pause|resume|delete` and
//! `sellers list|show|create|update|suspend|resume`.
//!
//! Each subcommand loads and validates the config ([`load_config`]: the config module's range
//! checks and every subsystem's check of its own section, run here because only this layer sees
//! them all), applies CLI overrides and calls into the library; no business logic lives here.
//! `clients`, `webhooks`, `buyers` and `sellers` talk to a running server's admin API (the server owns the store, a
//! revocation must reach its cores, and only its delivery worker may touch a delivery), with a
//! token holding the `admin` scope.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, Overrides, Scope, Tenant};
use crate::types::Party;

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
    /// Run the exchange (and, when sandbox.enabled, the mock buyers) until SIGINT or SIGTERM;
    /// SIGHUP reloads the config file's buyers, sellers, tokens, lead rules and webhook endpoints.
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
    /// Manage the buyers of a running server (its admin API, scope `admin`, the token's tenant).
    Buyers {
        /// Base URL of the running Gavel.
        #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
        url: String,
        /// Token with the `admin` scope (static token or OAuth access token).
        #[arg(long, env = "GAVEL_ADMIN_TOKEN", hide_env_values = true, global = true)]
        token: Option<String>,
        #[command(subcommand)]
        cmd: BuyersCmd,
    },
    /// Manage the sellers of a running server (its admin API, scope `admin`, an operator token,
    /// the token's tenant).
    Sellers {
        /// Base URL of the running Gavel.
        #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
        url: String,
        /// An operator's token with the `admin` scope (static token or OAuth access token).
        #[arg(long, env = "GAVEL_ADMIN_TOKEN", hide_env_values = true, global = true)]
        token: Option<String>,
        #[command(subcommand)]
        cmd: SellersCmd,
    },
    /// Inspect webhook deliveries and redeliver events of a running server (admin API).
    Webhooks {
        /// Base URL of the running Gavel.
        #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
        url: String,
        /// Token with the `admin` scope (static token or OAuth access token).
        #[arg(long, env = "GAVEL_ADMIN_TOKEN", hide_env_values = true, global = true)]
        token: Option<String>,
        #[command(subcommand)]
        cmd: WebhooksCmd,
    },
}

#[derive(Subcommand)]
enum BuyersCmd {
    /// The tenant's buyers, one line each.
    List,
    /// One buyer's whole definition, as JSON (its auth header's value is never shown).
    Show { id: String },
    /// Create a buyer from a definition file: JSON, or TOML with the `[[buyers]]` entry's keys.
    Create {
        #[arg(long)]
        file: PathBuf,
    },
    /// Replace a buyer's definition with a file's (JSON or TOML).
    Update {
        id: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Stop pinging a buyer (running auctions keep it).
    Pause { id: String },
    /// Ping a paused buyer again.
    Resume { id: String },
    /// Remove a buyer (a config-file buyer comes back at the next reload or restart).
    Delete { id: String },
}

/// A seller's settings as `sellers create` and `sellers update` take them; a limit left out takes
/// the `[limits]` default (create) or stays as it is (update).
#[derive(clap::Args)]
struct SellerArgs {
    /// Display name for operators.
    #[arg(long)]
    name: Option<String>,
    /// Auctions the seller may run at once, all its credentials and cores together.
    #[arg(long)]
    max_concurrent_auctions: Option<u32>,
    /// Pings per second the seller may send.
    #[arg(long)]
    pings_per_s: Option<f64>,
    /// Won auctions the seller may hold without posting them.
    #[arg(long)]
    max_unposted_auctions: Option<u32>,
    /// Whether the seller's view of its auctions names the winning buyer.
    #[arg(long)]
    reveal_winner: Option<bool>,
}

impl SellerArgs {
    /// The settings given, as JSON fields.
    fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        let mut set = |k: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        };
        set("name", self.name.clone().map(Into::into));
        set(
            "max_concurrent_auctions",
            self.max_concurrent_auctions.map(Into::into),
        );
        set("pings_per_s", self.pings_per_s.map(Into::into));
        set(
            "max_unposted_auctions",
            self.max_unposted_auctions.map(Into::into),
        );
        set("reveal_winner", self.reveal_winner.map(Into::into));
        m
    }
}

#[derive(Subcommand)]
enum SellersCmd {
    /// The tenant's sellers (implicit ones included), one line each.
    List,
    /// One seller: definition, limits in force, what it holds now, as JSON.
    Show { id: String },
    /// Create a seller of the token's tenant.
    Create {
        /// Stable id: a-z, 0-9, `_`, `-`, at most 64 characters.
        id: String,
        #[command(flatten)]
        settings: SellerArgs,
    },
    /// Change a seller's name, limits or reveal_winner (a merge patch).
    Update {
        id: String,
        #[command(flatten)]
        settings: SellerArgs,
        /// Set a limit back to the `[limits]` default (repeatable): max_concurrent_auctions,
        /// pings_per_s or max_unposted_auctions.
        #[arg(long)]
        reset: Vec<String>,
    },
    /// Refuse the seller's credentials (403 seller_suspended on ping, post, leads and seed).
    Suspend { id: String },
    /// Accept a suspended seller's credentials again.
    Resume { id: String },
}

#[derive(Subcommand)]
enum WebhooksCmd {
    /// The tenant's endpoints: state, outbox depth, attempts by result.
    List,
    /// Deliveries, newest first (exhausted ones stay listed until retention removes them).
    Events {
        /// pending, delivered, exhausted or disabled.
        #[arg(long)]
        state: Option<String>,
        /// Only this endpoint's deliveries.
        #[arg(long)]
        endpoint: Option<String>,
        /// Only this event type, e.g. lead.posted.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Most deliveries shown (1-500).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Deliver an event again now, with the same webhook-id and a fresh retry schedule.
    Replay {
        /// The event id (`evt_…`).
        #[arg(long)]
        event: String,
        /// Only to this endpoint (default: every endpoint the event went to).
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Take deliveries again after the endpoint answered 410 and was disabled.
    Enable {
        /// The endpoint id.
        endpoint_id: String,
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
        /// Who the client speaks for: operator, seller:ID or buyer:ID (an operator token names
        /// any party of its tenant; a seller token's clients are always its own). Left out by an
        /// operator: the implicit seller named by the new client's id.
        #[arg(long, value_parser = parse_party)]
        party: Option<Party>,
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
        /// The seller the token speaks for (a `[[sellers]]` id of the same tenant).
        #[arg(long, group = "party")]
        seller: Option<String>,
        /// The token is the operator's (buyers, sellers, other parties' clients, audit log).
        #[arg(long, group = "party")]
        operator: bool,
        /// The buyer the token speaks for (a `[[buyers]]` id of the same tenant).
        #[arg(long, group = "party")]
        buyer: Option<String>,
    },
}

fn parse_tenant(s: &str) -> Result<Tenant, String> {
    match s {
        "sandbox" => Ok(Tenant::Sandbox),
        "production" => Ok(Tenant::Production),
        _ => Err("tenant must be sandbox or production".into()),
    }
}

fn parse_party(s: &str) -> Result<Party, String> {
    Party::parse(s)
        .ok_or_else(|| format!("party must be operator, seller:ID or buyer:ID, got {s:?}"))
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s).ok_or_else(|| format!("unknown scope {s:?}"))
}

/// One call to a running server's admin API; an error answer becomes the command's error.
fn admin_call(
    url: &str,
    token: Option<&str>,
    method: &str,
    path_and_query: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let token = token.ok_or("set --token or GAVEL_ADMIN_TOKEN to a token with the admin scope")?;
    let base = url.trim_end_matches('/');
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(10))
        .build();
    let req = agent
        .request(method, &format!("{base}{path_and_query}"))
        .set("Authorization", &format!("Bearer {token}"));
    #[allow(
        clippy::disallowed_methods,
        reason = "the CLI's own blocking client, on its main thread: no core here"
    )]
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match res {
        Ok(r) => r.into_json().map_err(|e| format!("unreadable answer: {e}")),
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            Err(format!("{base} answered {code}: {text}"))
        }
        Err(e) => Err(format!("cannot reach {base}: {e}")),
    }
}

/// Calls the clients admin API and prints the answer.
fn clients(url: &str, token: Option<&str>, cmd: ClientsCmd) -> Result<(), String> {
    let body = match &cmd {
        ClientsCmd::Create {
            name,
            scopes,
            party,
        } => {
            let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            let mut body = serde_json::json!({ "name": name, "scopes": scopes });
            if let Some(p) = party {
                body["party"] = p.to_string().into();
            }
            admin_call(url, token, "POST", "/v1/admin/clients", Some(body))?
        }
        ClientsCmd::List => admin_call(url, token, "GET", "/v1/admin/clients", None)?,
        ClientsCmd::Revoke { client_id } => admin_call(
            url,
            token,
            "DELETE",
            &format!("/v1/admin/clients/{client_id}"),
            None,
        )?,
    };
    let show = |c: &serde_json::Value| {
        let scopes: Vec<&str> = c["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .collect();
        format!(
            "{}  {}  tenant={}  party={}  scopes={}  created={}{}",
            c["client_id"].as_str().unwrap_or("?"),
            c["name"].as_str().unwrap_or("?"),
            c["tenant"].as_str().unwrap_or("?"),
            c["party"].as_str().unwrap_or("?"),
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

/// Reads a buyer definition file: `.toml` (the keys of a `[[buyers]]` entry, or a file with one
/// `[[buyers]]` entry) or JSON.
fn definition_file(path: &Path) -> Result<serde_json::Value, String> {
    #[allow(
        clippy::disallowed_methods,
        reason = "the command line, not a core: reading the file the operator named"
    )]
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    let value: serde_json::Value = if is_toml {
        let v: toml::Value =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::to_value(v).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    // A file holding one `[[buyers]]` entry is the entry.
    match value.get("buyers").and_then(|b| b.as_array()) {
        Some(list) if list.len() == 1 => Ok(list[0].clone()),
        Some(_) => Err(format!(
            "{}: holds several [[buyers]] entries; give one per file",
            path.display()
        )),
        None => Ok(value),
    }
}

/// Calls the buyers admin API and prints the answer.
fn buyers(url: &str, token: Option<&str>, cmd: BuyersCmd) -> Result<(), String> {
    let line = |b: &serde_json::Value| {
        format!(
            "{}  {}  source={}  floor={}  ping={}  post={}  updated={}",
            b["id"].as_str().unwrap_or("?"),
            if b["enabled"].as_bool() == Some(false) {
                "PAUSED"
            } else {
                "enabled"
            },
            b["source"].as_str().unwrap_or("?"),
            b["floor"],
            b["ping_url"].as_str().unwrap_or("?"),
            b["post_url"].as_str().unwrap_or("?"),
            b["updated_at"].as_str().unwrap_or("?"),
        )
    };
    let path = |id: &str, action: &str| format!("/v1/admin/buyers/{id}{action}");
    match cmd {
        BuyersCmd::List => {
            let body = admin_call(url, token, "GET", "/v1/admin/buyers", None)?;
            for b in body["buyers"].as_array().into_iter().flatten() {
                println!("{}", line(b));
            }
        }
        BuyersCmd::Show { id } => {
            let body = admin_call(url, token, "GET", &path(&id, ""), None)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
        }
        BuyersCmd::Create { file } => {
            let def = definition_file(&file)?;
            let body = admin_call(url, token, "POST", "/v1/admin/buyers", Some(def))?;
            println!("created: {}", line(&body));
        }
        BuyersCmd::Update { id, file } => {
            let def = definition_file(&file)?;
            let body = admin_call(url, token, "PUT", &path(&id, ""), Some(def))?;
            println!("updated: {}", line(&body));
        }
        BuyersCmd::Pause { id } => {
            let body = admin_call(url, token, "POST", &path(&id, "/pause"), None)?;
            println!("paused: {}", line(&body));
        }
        BuyersCmd::Resume { id } => {
            let body = admin_call(url, token, "POST", &path(&id, "/resume"), None)?;
            println!("resumed: {}", line(&body));
        }
        BuyersCmd::Delete { id } => {
            let body = admin_call(url, token, "DELETE", &path(&id, ""), None)?;
            println!("deleted: {}", line(&body));
        }
    }
    Ok(())
}

/// Calls the sellers admin API and prints the answer.
fn sellers(url: &str, token: Option<&str>, cmd: SellersCmd) -> Result<(), String> {
    let line = |s: &serde_json::Value| {
        let l = &s["limits"];
        let u = &s["usage"];
        format!(
            "{}  {}  source={}  running={}/{}  unposted={}/{}  pings_per_s={}  name={:?}",
            s["id"].as_str().unwrap_or("?"),
            s["status"].as_str().unwrap_or("?"),
            s["source"].as_str().unwrap_or("?"),
            u["running_auctions"],
            l["max_concurrent_auctions"],
            u["unposted_auctions"],
            l["max_unposted_auctions"],
            l["pings_per_s"],
            s["name"].as_str().unwrap_or(""),
        )
    };
    let path = |id: &str, action: &str| format!("/v1/admin/sellers/{id}{action}");
    match cmd {
        SellersCmd::List => {
            let body = admin_call(url, token, "GET", "/v1/admin/sellers", None)?;
            for s in body["sellers"].as_array().into_iter().flatten() {
                println!("{}", line(s));
            }
        }
        SellersCmd::Show { id } => {
            let body = admin_call(url, token, "GET", &path(&id, ""), None)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
        }
        SellersCmd::Create { id, settings } => {
            let mut def = settings.fields();
            def.insert("id".into(), id.into());
            let body = admin_call(url, token, "POST", "/v1/admin/sellers", Some(def.into()))?;
            println!("created: {}", line(&body));
        }
        SellersCmd::Update {
            id,
            settings,
            reset,
        } => {
            let mut patch = settings.fields();
            for field in reset {
                patch.insert(field, serde_json::Value::Null);
            }
            if patch.is_empty() {
                return Err(
                    "nothing to change: give --name, a limit, --reveal-winner or --reset".into(),
                );
            }
            let body = admin_call(url, token, "PATCH", &path(&id, ""), Some(patch.into()))?;
            println!("updated: {}", line(&body));
        }
        SellersCmd::Suspend { id } => {
            let body = admin_call(url, token, "POST", &path(&id, "/suspend"), None)?;
            println!("suspended: {}", line(&body));
        }
        SellersCmd::Resume { id } => {
            let body = admin_call(url, token, "POST", &path(&id, "/resume"), None)?;
            println!("resumed: {}", line(&body));
        }
    }
    Ok(())
}

/// Calls the webhooks admin API and prints the answer, one line per endpoint or delivery.
fn webhooks(url: &str, token: Option<&str>, cmd: WebhooksCmd) -> Result<(), String> {
    let q = |pairs: &[(&str, Option<&str>)]| {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            if let Some(v) = v {
                ser.append_pair(k, v);
            }
        }
        let s = ser.finish();
        if s.is_empty() {
            s
        } else {
            format!("?{s}")
        }
    };
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let delivery = |d: &serde_json::Value| {
        let attempts = d["attempts"].as_array().map_or(0, Vec::len);
        let last = d["attempts"]
            .as_array()
            .and_then(|a| a.last())
            .map(|a| {
                format!(
                    "  last={} {}",
                    str_of(&a["result"]),
                    a["http_status"]
                        .as_u64()
                        .map_or(String::new(), |s| s.to_string())
                )
            })
            .unwrap_or_default();
        format!(
            "{}  {}  {}  {}  attempts={attempts}{last}  created={}  next={}",
            str_of(&d["event_id"]),
            str_of(&d["endpoint_id"]),
            str_of(&d["type"]),
            str_of(&d["state"]),
            str_of(&d["created_at"]),
            str_of(&d["next_attempt_at"]),
        )
    };
    let endpoint = |e: &serde_json::Value| {
        format!(
            "{}  {}  events={}  enabled={}  {}pending={}  exhausted={}  attempts={}",
            str_of(&e["id"]),
            str_of(&e["url"]),
            e["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
            e["enabled"],
            e["disabled"]["at"]
                .as_str()
                .map(|at| format!("DISABLED (410 at {at})  "))
                .unwrap_or_default(),
            e["pending"],
            e["exhausted"],
            e["attempts"],
        )
    };
    match cmd {
        WebhooksCmd::List => {
            let body = admin_call(url, token, "GET", "/v1/admin/webhooks", None)?;
            for e in body["webhooks"].as_array().into_iter().flatten() {
                println!("{}", endpoint(e));
            }
        }
        WebhooksCmd::Events {
            state,
            endpoint: ep,
            kind,
            limit,
        } => {
            let limit = limit.to_string();
            let path = format!(
                "/v1/admin/webhooks/events{}",
                q(&[
                    ("state", state.as_deref()),
                    ("endpoint", ep.as_deref()),
                    ("type", kind.as_deref()),
                    ("limit", Some(&limit)),
                ])
            );
            let body = admin_call(url, token, "GET", &path, None)?;
            for d in body["deliveries"].as_array().into_iter().flatten() {
                println!("{}", delivery(d));
            }
        }
        WebhooksCmd::Replay {
            event,
            endpoint: ep,
        } => {
            let path = format!(
                "/v1/admin/webhooks/events/{event}/replay{}",
                q(&[("endpoint", ep.as_deref())])
            );
            let body = admin_call(url, token, "POST", &path, None)?;
            for d in body["deliveries"].as_array().into_iter().flatten() {
                println!("queued again: {}", delivery(d));
            }
        }
        WebhooksCmd::Enable { endpoint_id } => {
            let path = format!("/v1/admin/webhooks/{endpoint_id}/enable");
            let body = admin_call(url, token, "POST", &path, None)?;
            println!("{}", endpoint(&body));
        }
    }
    Ok(())
}

/// Reads a config file and runs every check on it: the config module's own range checks
/// ([`Config::load`]), then each subsystem's check of its own section. `serve`, `mock-buyers` and
/// `check-config` all load through here, so a file any check refuses never starts a server.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let cfg = Config::load(path)?;
    check_sections(&cfg, &path.display().to_string())?;
    Ok(cfg)
}

/// Every check [`load_config`] runs, on a config built or changed in memory (after CLI overrides,
/// or in tests); `file` names the source in errors.
pub fn check_config(cfg: &Config, file: &str) -> Result<(), ConfigError> {
    cfg.validate(file)?;
    check_sections(cfg, file)
}

/// The checks that need a subsystem's knowledge, each over its own section. The config module
/// sits below these subsystems and cannot call them, so this layer does.
fn check_sections(cfg: &Config, file: &str) -> Result<(), ConfigError> {
    crate::auction::token::check_config(&cfg.bid_token, file)?;
    crate::buyers::pool::check_config(&cfg.buyers, file)?;
    crate::buyers::format::check_config(&cfg.buyers, file)?;
    crate::buyers::seal::check_config(&cfg.store, file)?;
    crate::webhooks::check_config(&cfg.webhooks, file)?;
    crate::webhooks::check_delivery(&cfg.webhook_delivery, file)?;
    crate::sandbox::check_config(&cfg.sandbox, file)?;
    crate::http::tls::check_config(cfg, file)?;
    // Last: a buyer whose URL is wrong in another way is told that first.
    crate::buyers::egress::check_config(cfg, file)
}

fn load(path: &Path) -> Result<Config, String> {
    load_config(path).map_err(|e| e.to_string())
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
                "{}: ok ({} cores, {} buyers, {} tokens, {} webhook endpoints, sandbox {})",
                config.display(),
                crate::runtime::core_count(&c.server),
                c.buyers.len(),
                c.tokens.len(),
                c.webhooks.len(),
                if c.sandbox.enabled { "on" } else { "off" }
            );
        }),
        Cmd::Clients { url, token, cmd } => clients(&url, token.as_deref(), cmd),
        Cmd::Webhooks { url, token, cmd } => webhooks(&url, token.as_deref(), cmd),
        Cmd::Buyers { url, token, cmd } => buyers(&url, token.as_deref(), cmd),
        Cmd::Sellers { url, token, cmd } => sellers(&url, token.as_deref(), cmd),
        Cmd::Token {
            cmd:
                TokenCmd::Create {
                    client,
                    tenant,
                    scopes,
                    seller,
                    operator,
                    buyer,
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
            match (seller, operator, buyer) {
                (Some(s), _, _) => println!("seller = \"{s}\""),
                (_, true, _) => println!("operator = true"),
                (_, _, Some(b)) => println!("buyer = \"{b}\""),
                _ => println!(
                    "# names no party: a seller token of the implicit seller \"{client}\" \
                     (give --seller, --operator or --buyer to name one)"
                ),
            }
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

/// Blocks until SIGINT or SIGTERM arrives, calling `on_hup` (on this thread, never a core) for
/// every SIGHUP before then.
fn wait_for_signal(mut on_hup: impl FnMut()) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    for sig in signals.forever() {
        if sig == SIGHUP {
            on_hup();
            continue;
        }
        tracing::info!(
            signal = sig,
            "shutting down: no new connections, finishing in-flight requests"
        );
        break;
    }
    Ok(())
}

/// The sections of the config a reload does not apply that differ between `running` and `new`:
/// they take effect at the next restart. Buyers, sellers, tokens, rules, webhooks and the API
/// listener's certificate and key (`[server.tls]`) are applied by a reload.
fn sections_needing_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let differ =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let sections: [(&'static str, bool); 12] = [
        // `[server.tls]` is reloaded (the files it names, read again); the rest of `[server]` is not.
        (
            "server",
            differ(
                &crate::config::ServerConfig {
                    tls: None,
                    ..running.server.clone()
                },
                &crate::config::ServerConfig {
                    tls: None,
                    ..new.server.clone()
                },
            ),
        ),
        ("auction", differ(&running.auction, &new.auction)),
        ("post", differ(&running.post, &new.post)),
        ("bid_token", differ(&running.bid_token, &new.bid_token)),
        ("oauth", differ(&running.oauth, &new.oauth)),
        ("limits", differ(&running.limits, &new.limits)),
        (
            "webhook_delivery",
            differ(&running.webhook_delivery, &new.webhook_delivery),
        ),
        ("store", differ(&running.store, &new.store)),
        ("sandbox", differ(&running.sandbox, &new.sandbox)),
        ("log", differ(&running.log, &new.log)),
        ("metrics", differ(&running.metrics, &new.metrics)),
        // Each core's buyer pool holds the rule it started with.
        ("egress", differ(&running.egress, &new.egress)),
    ];
    sections
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
}

/// `SIGHUP`: re-reads and fully checks the config file here, off the cores. An invalid file is
/// refused with its error (file, key, reason) and nothing changes. A valid one has its buyers,
/// tokens, rules and webhook endpoints applied to the running server; other changed sections are
/// named as needing a restart.
/// `running` is the config as applied so far.
fn reload(
    server: &crate::exchange::ServerHandle,
    path: &Path,
    overrides: &Overrides,
    running: &mut Config,
) {
    let file = path.display().to_string();
    let new = load(path).and_then(|mut c| {
        c.apply(overrides);
        check_config(&c, &file).map_err(|e| e.to_string())?;
        Ok(c)
    });
    let new = match new {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(file = %file, error = %e, "config reload refused; the running config stays");
            return;
        }
    };
    let restart = sections_needing_restart(running, &new);
    match server.reload(&new) {
        Ok(()) => {
            running.buyers = new.buyers;
            running.sellers = new.sellers;
            running.tokens = new.tokens;
            running.rules = new.rules;
            running.webhooks = new.webhooks;
            tracing::info!(file = %file, buyers = running.buyers.len(), sellers = running.sellers.len(), tokens = running.tokens.len(), webhooks = running.webhooks.len(), "config reloaded: buyers, sellers, tokens, rules and webhooks applied");
        }
        Err(e) => {
            tracing::error!(file = %file, error = %e, "config reload not fully applied; send SIGHUP again");
        }
    }
    if !restart.is_empty() {
        tracing::warn!(file = %file, sections = ?restart, "changed sections apply only after a restart");
    }
}

fn serve(path: &std::path::Path, overrides: &Overrides) -> Result<(), String> {
    let mut cfg = load(path)?;
    cfg.apply(overrides);
    check_config(&cfg, &path.display().to_string()).map_err(|e| e.to_string())?;
    let _log = crate::telemetry::init(&cfg.log);
    for (tenant, seller) in cfg.implicit_sellers() {
        tracing::info!(
            tenant = tenant.as_str(),
            seller = %seller,
            "a token names no party: it is a seller token of the implicit seller named by its client (add `seller`, `buyer` or `operator = true` to the [[tokens]] entry to say so)"
        );
    }
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
    let mut running = cfg.clone();
    let scheme = if cfg.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let server = crate::api::start(cfg)?;
    eprintln!("gavel listening on {scheme}://{}", server.addr);
    if let Some(m) = server.metrics_addr {
        eprintln!("gavel operations listener on http://{m} (/metrics, /healthz, /readyz)");
    }
    wait_for_signal(|| reload(&server, path, overrides, &mut running))?;
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
    wait_for_signal(|| tracing::info!("SIGHUP: the mock fleet has nothing to reload"))?;
    drop(fleet);
    Ok(())
}
