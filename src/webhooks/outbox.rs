//! The webhook outbox: which endpoints an event goes to, and how an event enters the store in the
//! same [`Batch`] as the state change that caused it.
//!
//! Owns the endpoint table the cores and the delivery worker use ([`Webhooks`]): each endpoint's
//! config and secrets, whether a 410 disabled it, and its counters. A table is never edited: a
//! config reload builds the next one off the cores ([`Webhooks::reloaded`]), carrying over by `Arc`
//! the state of every endpoint whose id stays, and each core and the worker swap theirs whole.
//! It does not own sending (see [`super::worker`]) nor the choice of which state change emits
//! which event (the API layer decides that and calls [`Webhooks::enqueue`]).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use super::{new_event_id, Envelope, Secret, WebhookError};
use crate::config::{Config, Tenant, WebhookConfig, WebhookDeliveryConfig};
use crate::store::{Batch, DeliveryRecord, DeliveryState, Store, StoreError};

/// `meta` key prefix under which an endpoint disabled by a 410 is remembered across restarts.
pub const DISABLED_PREFIX: &str = "webhook_disabled/";

/// How one attempt to deliver a webhook ended. The delivery log and the attempt metric's labels
/// carry it as [`SendOutcome::as_str`]; the worker decides what comes next on the enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The receiver answered 2xx.
    Delivered = 0,
    /// Any other answer, or a failure that is neither a timeout nor a connect error.
    Failed = 1,
    Timeout = 2,
    /// The receiver could not be reached (connect or name resolution failed).
    ConnectError = 3,
    /// The receiver answered 410: its endpoint is disabled.
    Gone = 4,
}

impl SendOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            SendOutcome::Delivered => "delivered",
            SendOutcome::Failed => "failed",
            SendOutcome::Timeout => "timeout",
            SendOutcome::ConnectError => "connect_error",
            SendOutcome::Gone => "gone",
        }
    }

    /// Every outcome, each at the index of its discriminant.
    pub const ALL: [SendOutcome; 5] = [
        SendOutcome::Delivered,
        SendOutcome::Failed,
        SendOutcome::Timeout,
        SendOutcome::ConnectError,
        SendOutcome::Gone,
    ];

    /// Whether the delivery is tried again (at the next step of the retry schedule): any failure
    /// but a 410, which says the receiver wants no more events.
    pub const fn retryable(self) -> bool {
        match self {
            SendOutcome::Failed | SendOutcome::Timeout | SendOutcome::ConnectError => true,
            SendOutcome::Delivered | SendOutcome::Gone => false,
        }
    }

    /// The outcome a stored attempt names; `None` for a word this code does not know.
    pub fn parse(s: &str) -> Option<SendOutcome> {
        SendOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Results an attempt can have, in the order of [`Endpoint::attempts`] (the metric's labels).
pub const ATTEMPT_RESULTS: [&str; 5] = [
    SendOutcome::Delivered.as_str(),
    SendOutcome::Failed.as_str(),
    SendOutcome::Timeout.as_str(),
    SendOutcome::ConnectError.as_str(),
    SendOutcome::Gone.as_str(),
];

/// Why an endpoint stopped receiving events, as stored and reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disabled {
    /// When it was disabled (unix ms).
    pub at_ms: u64,
    /// `gone`: the receiver answered 410.
    pub reason: String,
    /// The delivery whose answer disabled it.
    pub event_id: String,
}

/// One configured endpoint and what the worker learned about it.
pub struct Endpoint {
    pub config: WebhookConfig,
    pub secrets: Vec<Secret>,
    /// Shared by every table that holds an endpoint with this id, so a reload that changes its
    /// URL or secrets keeps its counters and its 410 state.
    state: Arc<EndpointState>,
}

/// What the worker learned about an endpoint, kept across config reloads while its id stays.
#[derive(Default)]
struct EndpointState {
    /// Set when the receiver answered 410: no more events are queued for it, and its pending
    /// deliveries become `disabled`, until it is enabled again through the admin API.
    disabled: AtomicBool,
    /// Deliveries waiting in the outbox (pending). Signed: a delivery may finish before the core
    /// that queued it has counted it, so the value can dip below zero for a moment.
    pending: AtomicI64,
    /// Attempts by result, see [`ATTEMPT_RESULTS`].
    attempts: [AtomicU64; ATTEMPT_RESULTS.len()],
    /// Deliveries that failed every retry.
    exhausted: AtomicU64,
}

impl Endpoint {
    /// An endpoint of `w` with fresh state (not disabled, nothing pending).
    fn new(w: &WebhookConfig) -> Result<Endpoint, WebhookError> {
        Ok(Endpoint {
            secrets: super::resolve_secrets(w).map_err(|e| e.of_endpoint(&w.id))?,
            config: w.clone(),
            state: Arc::default(),
        })
    }

    /// Reads what the store remembers of this endpoint: whether a 410 disabled it, and its
    /// pending deliveries. Only for an endpoint no core or worker uses yet.
    fn load_state(&self, store: &Store) -> Result<(), StoreError> {
        self.set_disabled(self.disabled_info(store)?.is_some());
        self.state
            .pending
            .store(store.count_due(self.id()) as i64, Ordering::Relaxed);
        Ok(())
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Whether a 410 disabled this endpoint.
    pub fn is_disabled(&self) -> bool {
        self.state.disabled.load(Ordering::Acquire)
    }

    /// Why and when it was disabled, as the store remembers it (`None` while it is not).
    pub fn disabled_info(&self, store: &Store) -> Result<Option<Disabled>, StoreError> {
        Ok(store
            .get_meta(&self.disabled_key())?
            .and_then(|v| serde_json::from_slice::<Disabled>(&v).ok()))
    }

    /// The `meta` key remembering that a 410 disabled this endpoint.
    pub(crate) fn disabled_key(&self) -> String {
        format!("{DISABLED_PREFIX}{}", self.id())
    }

    pub(crate) fn set_disabled(&self, disabled: bool) {
        self.state.disabled.store(disabled, Ordering::Release);
    }

    /// Attempts since start, by result, in the order of [`ATTEMPT_RESULTS`].
    pub fn attempt_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ATTEMPT_RESULTS
            .iter()
            .zip(&self.state.attempts)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
    }

    /// Counts one attempt that ended with `outcome`.
    pub(crate) fn count_attempt(&self, outcome: SendOutcome) {
        self.state.attempts[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries that failed every retry since start.
    pub fn exhausted(&self) -> u64 {
        self.state.exhausted.load(Ordering::Relaxed)
    }

    pub(crate) fn count_exhausted(&self) {
        self.state.exhausted.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries waiting in the outbox.
    pub fn pending(&self) -> u64 {
        self.state.pending.load(Ordering::Relaxed).max(0) as u64
    }

    pub(crate) fn add_pending(&self, n: i64) {
        self.state.pending.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether it takes deliveries now: enabled in config and not disabled by a 410.
    pub fn is_active(&self) -> bool {
        self.config.enabled && !self.is_disabled()
    }
}

/// A request to the delivery worker from an API call; the answer comes back on `reply`.
pub enum Command {
    /// Deliver an event of `tenant` again (to one endpoint, or every endpoint it went to); another
    /// tenant's event is as unknown as a missing one.
    Replay {
        tenant: Tenant,
        event_id: String,
        endpoint: Option<String>,
        /// The audit entry of this redelivery: the worker adds the deliveries' states before and
        /// after and writes it in the same batch.
        audit: Box<crate::audit::Entry>,
        reply: futures::channel::oneshot::Sender<Result<Vec<DeliveryRecord>, ReplayError>>,
    },
    /// Take deliveries again after a 410 disabled the endpoint.
    Enable {
        endpoint: Arc<Endpoint>,
        /// The audit entry of this change, written with it (the worker adds before and after).
        audit: Box<crate::audit::Entry>,
        reply: futures::channel::oneshot::Sender<Result<(), StoreError>>,
    },
    /// Deliver with this endpoint table from now on (a config reload); `reply` says it is taken.
    Reload {
        webhooks: Arc<Webhooks>,
        reply: crossbeam_channel::Sender<()>,
    },
    /// Stop the worker.
    Stop,
}

/// Why a redelivery by hand was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// No such event (for this endpoint).
    NotFound,
    /// An attempt of this delivery is under way.
    InFlight(String),
    /// The endpoint is disabled (by config, or by a 410 until enabled again) or no longer configured.
    EndpointInactive(String),
    Store(String),
}

/// Every webhook endpoint, as the cores (which queue events) and the worker (which delivers
/// them) hold it: built at start from the config, then replaced whole by each config reload.
pub struct Webhooks {
    pub endpoints: Vec<Arc<Endpoint>>,
    /// As of start: a reload keeps it (the sender threads and their HTTP agent are built from it).
    pub delivery: WebhookDeliveryConfig,
    /// The worker's doorbell and command queue, the same for every table of one server.
    channels: Arc<Channels>,
}

struct Channels {
    doorbell: (Sender<()>, Receiver<()>),
    commands: (Sender<Command>, Receiver<Command>),
}

/// Events put in a batch that is not committed yet: count them with [`Webhooks::committed`]
/// once the commit succeeded. It holds the endpoints themselves, not their places in a table, so
/// a reload between the enqueue and the commit counts them right.
#[derive(Default)]
#[must_use = "call Webhooks::committed after the commit succeeds"]
pub struct Queued {
    endpoints: Vec<Arc<Endpoint>>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.endpoints.iter().map(|e| e.id()))
            .finish()
    }
}

impl Queued {
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Adds what another enqueue produced.
    pub fn extend(&mut self, other: Queued) {
        self.endpoints.extend(other.endpoints);
    }
}

impl Webhooks {
    /// The endpoint table of `config` (validated: every secret parses).
    pub fn from_config(config: &Config) -> Result<Webhooks, WebhookError> {
        let endpoints = config
            .webhooks
            .iter()
            .map(|w| Endpoint::new(w).map(Arc::new))
            .collect::<Result<Vec<_>, WebhookError>>()?;
        Ok(Webhooks {
            endpoints,
            delivery: config.webhook_delivery.clone(),
            channels: Arc::new(Channels {
                doorbell: crossbeam_channel::bounded(1),
                commands: crossbeam_channel::bounded(64),
            }),
        })
    }

    /// The table that follows this one when `config` is reloaded: `config`'s endpoints, in its
    /// order. An endpoint whose id this table holds keeps its state (410, pending count,
    /// counters) by `Arc`, whatever else changed; a new one reads its state
    /// from the store. Deliveries of an endpoint that is no longer configured stay in the outbox
    /// untouched (the worker skips them) and go out if an endpoint with its id comes back.
    /// `[webhook_delivery]` stays as it is. Reads the store: call it off the cores.
    pub fn reloaded(&self, config: &Config, store: &Store) -> Result<Webhooks, WebhookError> {
        let endpoints = config
            .webhooks
            .iter()
            .map(|w| match self.endpoint(&w.id) {
                // Built again even when unchanged: `secrets_env` may name new secrets now.
                Some(old) => Ok(Arc::new(Endpoint {
                    state: old.state.clone(),
                    ..Endpoint::new(w)?
                })),
                None => {
                    let ep = Endpoint::new(w)?;
                    ep.load_state(store)
                        .map_err(|source| WebhookError::Outbox {
                            id: w.id.clone(),
                            source,
                        })?;
                    Ok(Arc::new(ep))
                }
            })
            .collect::<Result<Vec<_>, WebhookError>>()?;
        Ok(Webhooks {
            endpoints,
            delivery: self.delivery.clone(),
            channels: self.channels.clone(),
        })
    }

    /// Reads what the store remembers: endpoints disabled by a 410, and each endpoint's pending
    /// deliveries. Called once at start, before any core runs.
    pub fn load_state(&self, store: &Store) -> Result<(), StoreError> {
        self.endpoints
            .iter()
            .try_for_each(|ep| ep.load_state(store))
    }

    /// The endpoint with this id.
    pub fn endpoint(&self, id: &str) -> Option<Arc<Endpoint>> {
        self.endpoints.iter().find(|e| e.id() == id).cloned()
    }

    fn targets<'a>(
        &'a self,
        tenant: Tenant,
        seller: &'a str,
        event_type: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Endpoint>> + 'a {
        self.endpoints
            .iter()
            .filter(move |e| e.config.wants(tenant, seller, event_type) && !e.is_disabled())
    }

    /// Whether any endpoint takes `event_type` for this seller: lets callers skip building the
    /// event's data when nobody listens.
    pub fn wants(&self, tenant: Tenant, seller: &str, event_type: &str) -> bool {
        self.targets(tenant, seller, event_type).next().is_some()
    }

    /// Puts one event for every endpoint that takes it into `batch`: one pending delivery each,
    /// due at once, all with the same event id and body. Nothing is sent before the batch is
    /// committed (the worker only delivers what is on disk).
    pub fn enqueue<D: Serialize>(
        &self,
        batch: &mut Batch,
        tenant: Tenant,
        seller: &str,
        event_type: &str,
        data: &D,
        now_ms: u64,
    ) -> Result<Queued, StoreError> {
        let mut queued = Queued::default();
        let targets: Vec<Arc<Endpoint>> =
            self.targets(tenant, seller, event_type).cloned().collect();
        if targets.is_empty() {
            return Ok(queued);
        }
        let event_id = new_event_id();
        let body = serde_json::to_vec(&Envelope {
            kind: event_type,
            id: &event_id,
            created_at: crate::auction::rfc3339_ms(now_ms),
            data,
        })
        .map_err(|e| StoreError::Encode {
            tree: "outbox",
            key: event_id.clone(),
            reason: e.to_string(),
        })?;
        for ep in targets {
            batch.put_delivery(&DeliveryRecord {
                event_id: event_id.clone(),
                endpoint_id: ep.id().to_string(),
                tenant: tenant.as_str().to_string(),
                client: seller.to_string(),
                event_type: event_type.to_string(),
                created_ms: now_ms,
                body: body.clone(),
                state: DeliveryState::Pending.as_str().into(),
                next_attempt_ms: Some(now_ms),
                attempts: Vec::new(),
                schedule_base: 0,
            })?;
            queued.endpoints.push(ep);
        }
        Ok(queued)
    }

    /// Counts events whose batch is now durable and wakes the worker.
    pub fn committed(&self, queued: Queued) {
        if queued.is_empty() {
            return;
        }
        for ep in queued.endpoints {
            ep.add_pending(1);
        }
        self.ring();
    }

    /// Wakes the worker (it may have slept until the next due retry).
    pub(crate) fn ring(&self) {
        // A full doorbell already holds a wake-up the worker has not taken yet.
        let _ = self.channels.doorbell.0.try_send(());
    }

    pub(crate) fn doorbell(&self) -> &Receiver<()> {
        &self.channels.doorbell.1
    }

    pub(crate) fn command_rx(&self) -> &Receiver<Command> {
        &self.channels.commands.1
    }

    /// Sends a command to the worker; fails when its queue is full or it has stopped.
    pub fn command(&self, c: Command) -> Result<(), Command> {
        self.channels
            .commands
            .0
            .try_send(c)
            .map_err(|e| e.into_inner())
    }

    /// Sends a command to the worker, waiting up to `wait` for room in its queue. Blocks: for the
    /// main thread (a config reload), never a core.
    pub fn command_wait(&self, c: Command, wait: std::time::Duration) -> Result<(), Command> {
        self.channels
            .commands
            .0
            .send_timeout(c, wait)
            .map_err(|e| e.into_inner())
    }

    /// Asks a running worker to stop.
    pub fn stop_worker(&self) {
        // Stop must get through even when the queue is full.
        let _ = self
            .channels
            .commands
            .0
            .send_timeout(Command::Stop, std::time::Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outcomes are the words delivery logs hold and the attempt metric's labels, in the
    /// order the counters keep them; a change would change records and metric labels.
    #[test]
    fn send_outcomes_keep_their_record_words_and_counter_slots() {
        assert_eq!(
            ATTEMPT_RESULTS,
            ["delivered", "failed", "timeout", "connect_error", "gone"]
        );
        for (i, o) in SendOutcome::ALL.into_iter().enumerate() {
            assert_eq!(o as usize, i);
            assert_eq!(ATTEMPT_RESULTS[i], o.as_str());
            assert_eq!(SendOutcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(SendOutcome::parse("accepted"), None);
    }

    #[test]
    fn only_a_delivery_or_a_410_ends_the_retries() {
        let retried: Vec<_> = SendOutcome::ALL
            .into_iter()
            .filter(|o| o.retryable())
            .collect();
        assert_eq!(
            retried,
            [
                SendOutcome::Failed,
                SendOutcome::Timeout,
                SendOutcome::ConnectError
            ]
        );
    }

    fn config(endpoints: &[(&str, &str)]) -> Config {
        let secret = super::super::Secret::generate();
        let mut text = String::new();
        for (id, url) in endpoints {
            text += &format!(
                "[[webhooks]]\nid = \"{id}\"\ntenant = \"sandbox\"\nurl = \"{url}\"\n\
                 secrets = [\"{secret}\"]\nevents = [\"lead.posted\"]\n"
            );
        }
        Config::parse("t.toml", &text).unwrap()
    }

    fn queue(hooks: &Webhooks, store: &Store) -> Queued {
        let mut b = Batch::new();
        let q = hooks
            .enqueue(
                &mut b,
                Tenant::Sandbox,
                "seller",
                "lead.posted",
                &serde_json::json!({}),
                1,
            )
            .unwrap();
        store.write_durable(&b).unwrap();
        q
    }

    /// A reload re-maps by id: a kept endpoint keeps its state whatever its new place and URL, a
    /// removed one is gone from the table (its outbox untouched), a new one reads the store, and
    /// events queued before the reload count on the endpoints they went to.
    #[test]
    fn a_reload_carries_state_by_id_and_reads_new_endpoints_from_the_store() {
        let store = Store::temporary().unwrap();
        let old = Webhooks::from_config(&config(&[
            ("a", "http://127.0.0.1:1/a"),
            ("b", "http://127.0.0.1:1/b"),
        ]))
        .unwrap();
        old.load_state(&store).unwrap();
        let before = queue(&old, &store);
        old.endpoints[0].count_attempt(SendOutcome::Delivered);
        old.endpoints[1].set_disabled(true);

        // `a` moves to the second place with a new URL, `b` goes, `c` comes.
        let new = old
            .reloaded(
                &config(&[("c", "http://127.0.0.1:1/c"), ("a", "http://127.0.0.1:2/a")]),
                &store,
            )
            .unwrap();
        let ids: Vec<&str> = new.endpoints.iter().map(|e| e.id()).collect();
        assert_eq!(ids, ["c", "a"]);
        let a = new.endpoint("a").unwrap();
        assert_eq!(a.config.url, "http://127.0.0.1:2/a");
        assert_eq!(a.attempt_counts().next(), Some(("delivered", 1)));
        assert!(Arc::ptr_eq(&a.state, &old.endpoints[0].state));
        assert!(new.endpoint("b").is_none());
        // The event queued before the reload (for a and b) is counted on a's shared state.
        new.committed(before);
        assert_eq!(a.pending(), 1);
        assert_eq!(store.count_due("b"), 1, "b's delivery stays in the outbox");

        // `b` comes back: a fresh endpoint that finds its queued delivery in the store, and
        // whose 410 (never recorded in the store here) is not remembered.
        let back = new
            .reloaded(
                &config(&[("a", "http://127.0.0.1:2/a"), ("b", "http://127.0.0.1:1/b")]),
                &store,
            )
            .unwrap();
        let b = back.endpoint("b").unwrap();
        assert_eq!(b.pending(), 1);
        assert!(!b.is_disabled());
        assert_eq!(back.endpoint("a").unwrap().pending(), 1);
        assert!(
            Arc::ptr_eq(&back.channels, &old.channels),
            "one worker queue"
        );
    }

    /// The admin API filters deliveries by the words records hold; its list is the store's.
    #[test]
    fn the_admin_api_lists_every_delivery_state() {
        let words: Vec<_> = DeliveryState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(crate::api::webhooks::STATES, words.as_slice());
    }
}
