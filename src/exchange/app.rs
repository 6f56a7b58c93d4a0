//! The exchange as the runtime runs it: the state every core shares (bid-token keys, the buyers,
//! static tokens and webhook endpoints as of start), the state each core owns (its auction
//! shard, buyer connection pool, in-flight keys, OAuth client table, and its current snapshots of
//! the buyers, static tokens, lead rules and webhook endpoints, swapped whole when an admin
//! change or a reload replaces them),
//! the webhook dispatcher started beside the cores, and each core's eviction timer. The runtime
//! holds all of it without knowing what it is ([`crate::runtime::App`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::auction::shard::Shard;
use crate::auction::token::{BidKeys, MIN_SECRET_BYTES};
use crate::auth::oauth::{AccessKeys, ClientRecord, ClientTable, META_PREFIX};
use crate::auth::{Auth, Client};
use crate::buyers::egress::Egress;
use crate::buyers::pool::Pool;
use crate::buyers::seal::{key_from_env, SealError, SealKey, SEAL_KEY_BYTES};
use crate::buyers::table::TableError;
use crate::buyers::Registry;
use crate::config::{Config, RuleConfig};
use crate::error::ApiError;
use crate::limits::ClientLimits;
use crate::parties::Sellers;
use crate::runtime::{App, Stop};
use crate::store::{Store, StoreError};
use crate::types::Clock;
use crate::webhooks::worker::WorkerHandle;
use crate::webhooks::Webhooks;

/// The exchange, as an [`App`] of the runtime.
pub struct Exchange;

/// A core of the exchange.
pub type Core = crate::runtime::Core<Exchange>;
/// What the exchange's cores share.
pub type Shared = crate::runtime::Shared<Exchange>;
/// A running exchange server.
pub type ServerHandle = crate::runtime::ServerHandle<Exchange>;

/// Longest a core waits between two eviction passes over its shard, in milliseconds.
pub const SHARD_EXPIRY_INTERVAL_MS: u64 = 1_000;

/// What every core of the exchange shares, immutable after start.
pub struct Services {
    /// The buyers as of start (the stored table after the file seeded it). Each core starts from
    /// it and then holds its own current snapshot ([`CoreState::registry`]).
    pub initial_registry: Arc<Registry>,
    pub keys: BidKeys,
    /// Static bearer tokens as of start; each core then holds its own ([`CoreState::auth`]).
    pub initial_auth: Arc<Auth>,
    /// Signs and verifies OAuth access tokens (key generated once, kept in the store).
    pub access_keys: AccessKeys,
    /// OAuth clients as stored at start; each core builds its own table from them, and later
    /// changes reach every core through its inbox.
    pub initial_clients: Vec<(ClientRecord, Arc<ClientLimits>)>,
    /// Sellers as of start (the stored table after the file seeded it, and the implicit sellers
    /// of party-less tokens and OAuth clients); each core then holds its own
    /// ([`CoreState::sellers`]).
    pub initial_sellers: Arc<Sellers>,
    /// Sellers' webhook endpoints as of start: cores queue events for them, the worker delivers.
    /// Each core then holds its own ([`CoreState::webhooks`]).
    pub initial_webhooks: Arc<Webhooks>,
    /// Seals buyers' secrets in the buyer table ([`crate::buyers::seal`]).
    pub seal_key: SealKey,
}

/// One core's own part of the exchange. Lives on its thread only.
pub struct CoreState {
    /// The auctions this core owns.
    pub shard: RefCell<Shard>,
    /// Keep-alive connections to buyers.
    pub pool: Pool,
    /// Encoded idempotency scopes of keyed requests (and leads with a status report) running on
    /// this core.
    pub in_flight: RefCell<std::collections::HashSet<Vec<u8>>>,
    /// This core's copy of the active OAuth clients.
    pub clients: RefCell<ClientTable>,
    /// The current buyer snapshot: an auction takes it when it opens and keeps it. Replaced whole
    /// (never edited) by `exchange::buyers` on every core before an admin change answers.
    pub registry: RefCell<Arc<Registry>>,
    /// The current static tokens, replaced whole by a config reload.
    pub auth: RefCell<Arc<Auth>>,
    /// The current lead rules (`[[rules]]`), replaced whole by a config reload.
    pub rules: RefCell<Arc<[RuleConfig]>>,
    /// The current webhook endpoints (`[[webhooks]]`), replaced whole by a config reload.
    pub webhooks: RefCell<Arc<Webhooks>>,
    /// The current seller table, replaced whole (never edited) by `exchange::sellers` on every
    /// core before a seller change answers.
    pub sellers: RefCell<Arc<Sellers>>,
}

/// The threads the exchange starts beside the cores.
pub struct Handles {
    webhook_worker: WorkerHandle,
}

impl Stop for Handles {
    fn stop(&mut self) {
        self.webhook_worker.stop();
    }
}

impl App for Exchange {
    type Global = Services;
    type Local = CoreState;
    type Handles = Handles;

    fn global(
        config: &Config,
        store: &Arc<Store>,
        clock: &Clock,
    ) -> Result<(Services, Handles), String> {
        let (seal_key, older_seal_key) = seal_keys(store, config).map_err(|e| e.to_string())?;
        let registry = Arc::new(
            seed_buyers(store, config, clock, &seal_key, older_seal_key.as_ref())
                .map_err(|e| e.to_string())?,
        );
        let auth = Arc::new(Auth::from_config(&config.tokens, &config.limits)?);
        let keys = BidKeys::from_config(
            &config.bid_token,
            &stored_secret(store, "bid_token_secret", "bid-token key")
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let access_keys = AccessKeys::new(
            &stored_secret(store, "oauth_access_token_secret", "OAuth access-token key")
                .map_err(|e| e.to_string())?,
        );
        let initial_clients: Vec<_> = load_clients(store)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|r| (r, Arc::new(crate::auth::client_limits(&config.limits))))
            .collect();
        // OAuth clients that name no party are sellers of their own (implicit, not stored).
        let oauth_implicit = initial_clients
            .iter()
            .filter(|(r, _)| r.party.is_none())
            .map(|(r, _)| (r.tenant, r.client_id.clone()));
        let sellers = super::sellers::seed(store, config, clock, oauth_implicit)
            .map_err(|e| e.to_string())?;
        let webhooks = Arc::new(Webhooks::from_config(config).map_err(|e| e.to_string())?);
        webhooks
            .load_state(store)
            .map_err(|e| format!("cannot read the webhook outbox: {e}"))?;
        let webhook_worker =
            crate::webhooks::worker::start(store.clone(), webhooks.clone(), clock.clone())
                .map_err(|e| e.to_string())?;
        let services = Services {
            initial_registry: registry,
            keys,
            initial_auth: auth,
            access_keys,
            initial_clients,
            initial_sellers: Arc::new(sellers),
            initial_webhooks: webhooks,
            seal_key,
        };
        Ok((services, Handles { webhook_worker }))
    }

    fn metric_buyers(global: &Services) -> Vec<crate::metrics::BuyerKey> {
        global
            .initial_registry
            .buyers
            .iter()
            .map(|b| (b.tenant, b.id.clone()))
            .collect()
    }

    fn local(id: usize, shared: &Shared) -> CoreState {
        CoreState {
            // Owned by this core: debug builds check every access runs on it.
            shard: RefCell::new(Shard::owned_by(
                id,
                shared.config.auction.max_auctions_per_core,
            )),
            pool: Pool::new()
                .with_dns(crate::buyers::resolve::Cache::new(
                    crate::buyers::resolve::Settings::from_config(&shared.config.dns),
                    shared.clock.clone(),
                ))
                .with_egress(Arc::new(egress(shared))),
            in_flight: RefCell::new(std::collections::HashSet::new()),
            clients: RefCell::new(ClientTable::new(shared.initial_clients.iter().cloned())),
            registry: RefCell::new(shared.initial_registry.clone()),
            auth: RefCell::new(shared.initial_auth.clone()),
            rules: RefCell::new(shared.config.rules.clone().into()),
            webhooks: RefCell::new(shared.initial_webhooks.clone()),
            sellers: RefCell::new(shared.initial_sellers.clone()),
        }
    }

    /// Auctions leave memory on time even when no new auction arrives to trigger eviction; at
    /// start, the core also opens its warm connections to https buyers ([`warm_up`]).
    async fn background(core: Rc<Core>) {
        futures::future::join(warm_up(core.clone()), evict_on_time(core)).await;
    }
}

/// The egress rule buyer calls and buyer changes follow: `[egress]`, with the addresses this
/// server listens on as its own.
pub fn egress(shared: &Shared) -> Egress {
    let bound: Vec<_> = std::iter::once(shared.addr)
        .chain(shared.metrics_addr)
        .collect();
    Egress::from_config(&shared.config, &bound)
}

/// Opens one connection from this core to each enabled https buyer's ping origin (those with
/// `tls.warm_up`, the default), all at once, each bounded by its buyer's ping timeout, so the
/// first auction does not pay the TCP and TLS handshakes. It also fills the shared TLS session
/// cache and this core's DNS cache, which later connections reuse. A failure only logs: the
/// auction that needs the buyer connects (and records the failure) as it would have anyway.
async fn warm_up(core: Rc<Core>) {
    let registry = core.registry();
    let mut seen = std::collections::HashSet::new();
    // Direct-post buyers have no ping origin to warm.
    let targets = registry
        .buyers
        .iter()
        .filter(|b| b.enabled && b.warm_up)
        .filter_map(|b| b.ping.as_ref().map(|ping| (b, ping)))
        .filter(|(_, ping)| ping.is_tls() && seen.insert(ping.pool_key()));
    let calls = targets.map(|(b, ping)| {
        let pool = &core.pool;
        async move {
            match monoio::time::timeout(b.ping_timeout, pool.warm_up(ping)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(buyer = %b.id, error = %e, "warm-up connection failed")
                }
                Err(_) => tracing::warn!(buyer = %b.id, "warm-up connection timed out"),
            }
        }
    });
    futures::future::join_all(calls).await;
}

// Architecture Invariant [expiry-without-traffic]: each core evicts due auctions at least every
// SHARD_EXPIRY_INTERVAL_MS, whether or not requests arrive.
/// Evicts this core's expired auctions as they fall due.
async fn evict_on_time(core: Rc<Core>) {
    loop {
        let now = core.shared.clock.now_ms();
        let wait_ms = core
            .shard
            .borrow()
            .next_due_ms()
            .map_or(SHARD_EXPIRY_INTERVAL_MS, |due| {
                due.saturating_sub(now).clamp(1, SHARD_EXPIRY_INTERVAL_MS)
            });
        monoio::time::sleep(Duration::from_millis(wait_ms)).await;
        let mut shard = core.shard.borrow_mut();
        if shard.evict(core.shared.clock.now_ms()) > 0 {
            core.stats()
                .auctions_in_memory
                .store(shard.len() as u64, Ordering::Relaxed);
        }
    }
}

impl Core {
    /// This core's current buyer snapshot. An auction takes it once and keeps it.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.borrow().clone()
    }

    /// This core's current lead rules (`[[rules]]`); a reload replaces them.
    pub fn rules(&self) -> Arc<[RuleConfig]> {
        self.rules.borrow().clone()
    }

    /// This core's current seller table; a seller change replaces it.
    pub fn sellers(&self) -> Arc<Sellers> {
        self.sellers.borrow().clone()
    }

    /// This core's current webhook endpoints (`[[webhooks]]`); a reload replaces them.
    pub fn webhooks(&self) -> Arc<Webhooks> {
        self.webhooks.borrow().clone()
    }

    /// Who is calling (static token or OAuth access token), counted against the client's request
    /// rate, without a scope check: a view rule first answers for the caller's party (`api::views`),
    /// then the scope is checked ([`Client::require`]).
    pub fn identify(&self, headers: &http::HeaderMap) -> Result<Client, ApiError> {
        let client = {
            let clients = self.clients.borrow();
            self.auth.borrow().identify_with(
                headers,
                Some((&clients, &self.shared.access_keys)),
                self.shared.clock.now_ms(),
            )?
        };
        if let Err(e) = crate::limits::check_requests(&client.limits) {
            self.metrics.record_rate_limited("client_requests");
            return Err(e);
        }
        Ok(client)
    }
}

/// Runs `install(core, value)` on this core directly and on every other core through its inbox,
/// trying every core even after one failed (a full inbox), and returns the cores that missed it.
/// How a changed snapshot (buyers, sellers) reaches every core before an admin call answers.
pub async fn install_everywhere<T>(core: &Rc<Core>, value: T, install: fn(&Core, T)) -> Vec<usize>
where
    T: Clone + Send + 'static,
{
    install(core, value.clone());
    let sends = (0..core.shared.cores)
        .filter(|&target| target != core.id)
        .map(|target| {
            let value = value.clone();
            async move {
                let res = crate::runtime::handoff::ask(core, target, move |c| async move {
                    install(&c, value)
                })
                .await;
                (target, res.is_ok())
            }
        });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .filter_map(|(target, ok)| (!ok).then_some(target))
        .collect()
}

/// The answer to a party asking for what is not its own: the same `404` as for what does not
/// exist (CONTRACT §3: anything outside a party's view is 404, never 403).
pub fn not_yours() -> ApiError {
    ApiError::not_found("Nothing here for this credential.")
}

/// A key marked in flight on its core (an idempotency scope, a lead with a status report being
/// recorded): while the guard lives, a second claim of the same key on that core fails; dropping
/// it clears the mark, also when the work's future is dropped half-way.
pub struct InFlightKey {
    core: Rc<Core>,
    key: Vec<u8>,
}

impl InFlightKey {
    /// Marks `key` in flight on `core`; `None` when it already is.
    pub fn claim(core: &Rc<Core>, key: Vec<u8>) -> Option<InFlightKey> {
        if !core.in_flight.borrow_mut().insert(key.clone()) {
            return None;
        }
        Some(InFlightKey {
            core: core.clone(),
            key,
        })
    }
}

impl Drop for InFlightKey {
    fn drop(&mut self) {
        self.core.in_flight.borrow_mut().remove(&self.key);
    }
}

/// Why the exchange's shared state could not be built at start (the runtime prints the message
/// and refuses to start). A key in the environment is the operator's to fix
/// ([`StartError::cause`]); everything else is Gavel's own store.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read the {what}: {source}")]
    ReadKey {
        what: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("cannot store the {what}: {source}")]
    StoreKey {
        what: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("the stored buyer sealing key is too short")]
    StoredSealKeyTooShort,
    #[error("store.seal_key_env: {0}")]
    SealKeyEnv(#[source] SealError),
    #[error("{0}")]
    BuyerTable(#[from] TableError),
    #[error("cannot store the buyer table: {0}")]
    StoreBuyerTable(#[source] StoreError),
    #[error("{0}")]
    Buyers(#[from] crate::buyers::BuildError),
    #[error("{0}")]
    SellerTable(#[from] crate::parties::table::TableError),
    #[error("cannot store the seller table: {0}")]
    StoreSellerTable(#[source] StoreError),
    #[error("cannot read the OAuth clients: {0}")]
    ReadClients(#[source] StoreError),
    #[error("OAuth client record {key} is damaged: {source}")]
    DamagedClient {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl StartError {
    /// Whose fault it is: the operator's for `[store] seal_key_env` and for buyers the file
    /// defines that do not build, Gavel's own (its store) otherwise.
    pub fn cause(&self) -> crate::error::Cause {
        match self {
            StartError::SealKeyEnv(e) => e.cause(),
            StartError::Buyers(_) => crate::error::Cause::Operator,
            _ => crate::error::Cause::Internal,
        }
    }
}

/// A signing key Gavel generated for itself (`what`, for errors), created and made durable under
/// `key` in the store's meta tree on first start, so what it signed survives restarts.
fn stored_secret(store: &Store, key: &str, what: &'static str) -> Result<Vec<u8>, StartError> {
    match store.get_meta(key) {
        Ok(Some(secret)) if secret.len() >= MIN_SECRET_BYTES => Ok(secret),
        Ok(_) => {
            let secret = BidKeys::generate_secret();
            let mut batch = crate::store::Batch::new();
            batch.put_meta(key, secret.clone());
            store
                .write_durable(&batch)
                .map_err(|source| StartError::StoreKey { what, source })?;
            Ok(secret)
        }
        Err(source) => Err(StartError::ReadKey { what, source }),
    }
}

/// Meta key of the buyer sealing key Gavel generates when `[store] seal_key_env` is unset.
const SEAL_KEY_META: &str = "buyer_seal_key";

/// The key buyers' secrets are sealed with, and the one that sealed them before when it changed.
/// With `[store] seal_key_env` the key is the environment's, and a key Gavel generated earlier
/// (kept in the store) only opens the rows it sealed until they are sealed again at start
/// ([`seed_buyers`] then removes it from the store). Without it the key is generated once and
/// kept in the store, beside the rows.
fn seal_keys(store: &Store, config: &Config) -> Result<(SealKey, Option<SealKey>), StartError> {
    let from_store = |secret: &[u8]| {
        let bytes: &[u8; SEAL_KEY_BYTES] = secret
            .get(..SEAL_KEY_BYTES)
            .and_then(|b| b.try_into().ok())
            .ok_or(StartError::StoredSealKeyTooShort)?;
        Ok::<_, StartError>(SealKey::new(bytes))
    };
    match &config.store.seal_key_env {
        None => {
            let secret = stored_secret(store, SEAL_KEY_META, "buyer sealing key")?;
            Ok((from_store(&secret)?, None))
        }
        Some(name) => {
            let key = key_from_env(name).map_err(StartError::SealKeyEnv)?;
            let older = store
                .get_meta(SEAL_KEY_META)
                .map_err(|source| StartError::ReadKey {
                    what: "buyer sealing key",
                    source,
                })?
                .map(|secret| from_store(&secret))
                .transpose()?;
            Ok((SealKey::new(&key), older))
        }
    }
}

/// The buyer table at start: the stored rows (secrets opened with `key`, or `older`) with the
/// config file's buyers seeded over them (the ownership rule of [`crate::buyers::table`]), made
/// durable before any core runs, and the first snapshot built from it.
fn seed_buyers(
    store: &Store,
    config: &Config,
    clock: &Clock,
    key: &SealKey,
    older: Option<&SealKey>,
) -> Result<Registry, StartError> {
    let (stored, mut moved) = crate::buyers::table::load(store, key, older)?;
    if older.is_some() {
        // Every row now opens with the environment's key: the generated one leaves the store in
        // the same batch, so a copy of the store no longer carries a key to its secrets.
        moved.delete_meta(SEAL_KEY_META);
    }
    let (table, seeded) = crate::buyers::table::seed(&stored, &config.buyers, clock.now_ms(), key);
    // Rows moved to their tenant-scoped key first: the seed's writes assume they are there.
    for batch in [moved, seeded] {
        if !batch.is_empty() {
            store
                .write_durable(&batch)
                .map_err(StartError::StoreBuyerTable)?;
        }
    }
    Registry::default()
        .with_clock(clock.clone())
        .next(table, config.limits.buyer_pings_per_s)
        .map_err(StartError::from)
}

/// Every OAuth client record in the store (revoked ones included; the tables skip them).
pub fn load_clients(store: &Store) -> Result<Vec<ClientRecord>, StartError> {
    let rows = store
        .meta_with_prefix(META_PREFIX)
        .map_err(StartError::ReadClients)?;
    rows.into_iter()
        .map(|(k, v)| {
            serde_json::from_slice(&v)
                .map_err(|source| StartError::DamagedClient { key: k, source })
        })
        .collect()
}
