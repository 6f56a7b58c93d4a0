//! The records the store keeps, and their byte encoding.
//!
//! Every stored value is `[version: u8] ++ rkyv archive`. The version byte lets a record type evolve:
//! a new layout gets a new version, and [`decode`] learns to read (or migrate) the old one. A value
//! is validated with bytecheck before any field is read, so a corrupted or foreign value becomes
//! [`StoreError::Corrupt`] (or [`StoreError::UnknownVersion`]), never a panic or undefined behaviour.
//!
//! Records are plain data (strings, vectors, options, integers) and self-describing: buyers are named
//! by id, not by an index into the in-memory registry, so a record still reads correctly after the
//! buyer list changes. The business layer converts its own types to and from these; this module
//! holds no business rules.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::de::Pool;
use rkyv::rancor::{self, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use super::StoreError;

/// Largest encoded value the store accepts, version byte included. A record this large is a bug in
/// the caller (responses and pings are capped far below it), so it is refused instead of stored.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// A stored answer to replay for a repeated `Idempotency-Key` (CONTRACT §6).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct IdemRecord {
    /// SHA-256 of the request body; a retry with another body is `idempotency_key_reused`.
    pub fingerprint: [u8; 32],
    /// HTTP status of the original answer.
    pub status: u16,
    /// Response headers to replay, in order (name, value).
    pub headers: Vec<(String, String)>,
    /// Response body to replay, byte for byte.
    pub body: Vec<u8>,
    /// When the answer was stored (unix ms); retention counts from here and never moves.
    pub created_ms: u64,
}

/// One buyer's outcome in an auction: the bid log entry (CONTRACT §4.3).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    /// The buyer's configured id.
    pub buyer_id: String,
    /// `bid`, `no_bid`, `timeout`, `error`, `filtered`, `rate_limited` or `capped`.
    pub kind: String,
    /// Bid amount in cents, for `bid`.
    pub amount_cents: Option<u64>,
    /// The buyer's own bid token, echoed back to it at post time.
    pub buyer_bid_token: Option<String>,
    /// Until when the buyer honours its bid (unix ms).
    pub valid_until_ms: Option<u64>,
    /// Machine-readable reason for a no_bid, error or filter (snake_case).
    pub reject_reason: Option<String>,
    /// Human-readable detail for the reason; never contains PII.
    pub reject_detail: Option<String>,
    /// From sending the ping to the buyer's complete answer (or to giving up).
    pub latency_us: u64,
    /// Order in which answers arrived; ties in price go to the lower number.
    pub arrival: u32,
}

/// Where the post of an auction stands, with what a retry needs to resume or replay it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PostRecord {
    /// `none`, `delivering`, `unresolved`, `sold` or `unsold`.
    pub state: String,
    /// Idempotency key of the post that owns the delivery.
    pub key: Option<String>,
    /// Slot (index into `outcomes`) of the buyer a delivery is, or was last, offered to.
    pub slot: Option<u32>,
    /// SHA-256 of the post body that owns the delivery.
    pub fingerprint: Option<[u8; 32]>,
    /// Final answer to replay: status.
    pub reply_status: Option<u16>,
    /// Final answer to replay: headers (name, value).
    pub reply_headers: Vec<(String, String)>,
    /// Final answer to replay: body.
    pub reply_body: Vec<u8>,
    /// Gavel's id of the sold lead.
    pub lead_uuid: Option<String>,
    /// The buying buyer's own id for the lead.
    pub buyer_lead_id: Option<String>,
    /// Slot of the buyer that bought the lead.
    pub sold_slot: Option<u32>,
}

/// One attempt to deliver a post to a buyer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The buyer's configured id.
    pub buyer_id: String,
    /// 1 for the first attempt at this buyer.
    pub attempt: u32,
    /// `accepted`, `rejected`, `error`, `timeout` or `connect_error`.
    pub result: String,
    /// HTTP status the buyer answered, when it answered.
    pub http_status: Option<u16>,
    /// Duration of the attempt.
    pub latency_us: u64,
}

/// An auction: the validated ping summary, the bid log, the clearing result and the post state.
/// Contains no PII by construction: the lead of a post is never part of it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AuctionRecord {
    /// Auction id (the primary key).
    pub id: String,
    /// Tenant name.
    pub tenant: String,
    /// Calling client id.
    pub client: String,
    /// The seller the auction belongs to (every record names its seller). Records of layout 1,
    /// written before parties existed, read back with their client as the seller: the implicit
    /// seller a token without a party speaks for.
    pub seller: String,
    /// The validated ping summary as JSON, serialized by the caller (no PII by construction).
    pub ping_json: Vec<u8>,
    /// The id buyers know this auction by, when it is not `id`: an auction under an id its
    /// seller chose is pinged and posted under an id Gavel minted, so two sellers' equal ids never
    /// meet at a buyer (whose idempotency keys are `ping_<id>` and `post_<id>`). Empty: `id`.
    pub buyer_ref: String,
    /// When the auction was created (unix ms); retention counts from here and never moves.
    pub created_ms: u64,
    /// When the bid window closes (unix ms).
    pub deadline_ms: u64,
    /// When the auction actually closed (unix ms).
    pub closed_ms: Option<u64>,
    /// `open`, `won` or `no_bid`.
    pub status: String,
    /// Why a `no_bid` auction ended without a winner (CONTRACT §4.1 code).
    pub reject_reason: Option<String>,
    /// One entry per buyer considered, in slot order.
    pub outcomes: Vec<OutcomeRecord>,
    /// Slots of valid bids, best first.
    pub ranked: Vec<u32>,
    /// What the seller is paid, for a `won` auction.
    pub payout_cents: Option<u64>,
    /// Until when the seller's bid token can be posted (unix ms).
    pub token_valid_until_ms: Option<u64>,
    /// The post state.
    pub post: PostRecord,
    /// Every delivery attempt, in order.
    pub post_attempts: Vec<AttemptRecord>,
}

/// One status change of a sold lead (e.g. `sold`, later `returned`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LeadEvent {
    /// When the status changed (unix ms).
    pub at_ms: u64,
    /// The new status.
    pub status: String,
    /// Why, when the status has a reason (snake_case).
    pub reason: Option<String>,
}

/// A sold lead: which auction and buyer it went to, and its status history. No PII.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LeadRecord {
    /// Gavel's id of the lead (the primary key).
    pub lead_uuid: String,
    /// The auction that sold it.
    pub auction_id: String,
    /// Tenant name.
    pub tenant: String,
    /// The seller whose lead it is. Layout-1 records read back with an empty seller: they were
    /// written before leads named one, and only the operator and the buyer see them.
    pub seller: String,
    /// The buying buyer's configured id.
    pub buyer_id: String,
    /// The buyer's own id for the lead.
    pub buyer_lead_id: String,
    /// When the lead was sold (unix ms); retention counts from here and never moves.
    pub created_ms: u64,
    /// Status changes, oldest first.
    pub history: Vec<LeadEvent>,
}

/// One attempt to deliver a webhook.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttemptRecord {
    /// When the attempt started (unix ms).
    pub at_ms: u64,
    /// `delivered`, `failed`, `timeout`, `connect_error` or `gone` (410).
    pub result: String,
    /// HTTP status the receiver answered, when it answered.
    pub http_status: Option<u16>,
    /// What went wrong, for an attempt that failed without an HTTP status.
    pub error: Option<String>,
    /// From sending the request to the receiver's answer (or to giving up).
    pub latency_us: u64,
}

/// One event on its way to one webhook endpoint: the outbox entry and its delivery log. The body
/// is fixed when the event is created, so every attempt sends the same bytes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// `evt_…`: the Standard Webhooks `webhook-id`, the same for every attempt and endpoint.
    pub event_id: String,
    /// The configured endpoint id.
    pub endpoint_id: String,
    /// Tenant name of the seller the event belongs to.
    pub tenant: String,
    /// The seller the event belongs to (the field kept its first name: before parties, a seller
    /// was named by its client).
    pub client: String,
    /// `lead.posted`, `lead.status_changed` or `auction.closed`.
    pub event_type: String,
    /// When the event was created (unix ms); retention counts from here and never moves.
    pub created_ms: u64,
    /// The JSON envelope sent as the request body.
    pub body: Vec<u8>,
    /// `pending`, `delivered`, `exhausted` (every retry failed) or `disabled` (the endpoint
    /// answered 410 and was disabled).
    pub state: String,
    /// When the next attempt is due (unix ms), while `pending`.
    pub next_attempt_ms: Option<u64>,
    /// Every attempt, oldest first.
    pub attempts: Vec<WebhookAttemptRecord>,
    /// Attempts made before the last redelivery by hand; the retry schedule counts from there.
    pub schedule_base: u32,
}

/// One admin change, as the audit log keeps it: who made it, what it changed, and the changed
/// thing before and after (JSON, written by the caller with every secret already masked). Never
/// rewritten.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// `aud_` + a ULID of `created_ms`: unique, and in creation order within one millisecond.
    pub id: String,
    /// Tenant name the change belongs to.
    pub tenant: String,
    /// When the change was made (unix ms); part of the key, retention counts from here.
    pub created_ms: u64,
    /// The credential's party: `operator`, `seller:ID` or `buyer:ID`.
    pub party: String,
    /// The credential's client (static token's client, or OAuth client id).
    pub client: String,
    /// The action word (`create`, `update`, `suspend`, …).
    pub action: String,
    /// What kind of thing changed (`seller`, `buyer`, `oauth_client`, …).
    pub target_kind: String,
    /// The changed thing's id.
    pub target_id: String,
    /// The thing before the change, as JSON text; `None` for a creation.
    pub before_json: Option<String>,
    /// The thing after the change, as JSON text; `None` for a deletion.
    pub after_json: Option<String>,
}

/// Where a webhook delivery stands: the words [`DeliveryRecord::state`] holds. The store keeps a
/// due-index entry only for a pending delivery, and the delivery worker decides on the state, so
/// both read it as this enum rather than comparing words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// The receiver took it (2xx).
    Delivered,
    /// Every retry failed.
    Exhausted,
    /// The endpoint answered 410 and was disabled.
    Disabled,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Exhausted => "exhausted",
            DeliveryState::Disabled => "disabled",
        }
    }

    /// Every state, in declaration order.
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Exhausted,
        DeliveryState::Disabled,
    ];

    /// The state a stored word names; `None` for a word this code does not know.
    pub fn parse(s: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl DeliveryRecord {
    /// The delivery's state; `None` when the record holds a word this code does not know (it is
    /// then treated as not pending: nothing is sent on a state not understood).
    pub fn delivery_state(&self) -> Option<DeliveryState> {
        DeliveryState::parse(&self.state)
    }

    /// Whether the delivery waits for another attempt.
    pub fn is_pending(&self) -> bool {
        self.delivery_state() == Some(DeliveryState::Pending)
    }

    /// Sets the state, as the word the record stores.
    pub fn set_state(&mut self, state: DeliveryState) {
        self.state = state.as_str().to_string();
    }
}

/// What every stored record type tells the store about itself.
pub trait Record: Archive + Sized {
    /// Name of the primary tree, for error messages.
    const TREE: &'static str;
    /// Layout version written as the first byte of every value of this type.
    const VERSION: u8;
    /// The record's creation time, read from a validated archive without deserializing it.
    fn archived_created_ms(archived: &Self::Archived) -> u64;
    /// Reads a value written in an older layout (`version` < [`Record::VERSION`]; `archive` is
    /// what follows the version byte), converted to the current one. `None`: no such layout.
    fn migrate(_version: u8, _archive: &[u8]) -> Option<Result<Self, String>> {
        None
    }
    /// The creation time of a decoded record (for values read through [`Record::migrate`]).
    fn created_ms(&self) -> u64;
}

impl Record for IdemRecord {
    const TREE: &'static str = "idem";
    const VERSION: u8 = 1;
    fn archived_created_ms(archived: &ArchivedIdemRecord) -> u64 {
        archived.created_ms.to_native()
    }
    fn created_ms(&self) -> u64 {
        self.created_ms
    }
}

impl Record for AuctionRecord {
    const TREE: &'static str = "auctions";
    /// 2: the record names its seller.
    const VERSION: u8 = 2;
    fn migrate(version: u8, archive: &[u8]) -> Option<Result<Self, String>> {
        (version == 1).then(|| super::legacy::auction_v1(archive))
    }
    fn archived_created_ms(archived: &ArchivedAuctionRecord) -> u64 {
        archived.created_ms.to_native()
    }
    fn created_ms(&self) -> u64 {
        self.created_ms
    }
}

impl Record for LeadRecord {
    const TREE: &'static str = "leads";
    /// 2: the record names its seller.
    const VERSION: u8 = 2;
    fn migrate(version: u8, archive: &[u8]) -> Option<Result<Self, String>> {
        (version == 1).then(|| super::legacy::lead_v1(archive))
    }
    fn archived_created_ms(archived: &ArchivedLeadRecord) -> u64 {
        archived.created_ms.to_native()
    }
    fn created_ms(&self) -> u64 {
        self.created_ms
    }
}

impl Record for DeliveryRecord {
    const TREE: &'static str = "outbox";
    const VERSION: u8 = 1;
    fn archived_created_ms(archived: &ArchivedDeliveryRecord) -> u64 {
        archived.created_ms.to_native()
    }
    fn created_ms(&self) -> u64 {
        self.created_ms
    }
}

impl Record for AuditRecord {
    const TREE: &'static str = "audit";
    const VERSION: u8 = 1;
    fn archived_created_ms(archived: &ArchivedAuditRecord) -> u64 {
        archived.created_ms.to_native()
    }
    fn created_ms(&self) -> u64 {
        self.created_ms
    }
}

/// Encodes `record` as `[R::VERSION] ++ rkyv bytes`. `key` only names the record in errors.
pub fn encode<R>(key: &[u8], record: &R) -> Result<Vec<u8>, StoreError>
where
    R: Record + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    let archived = rkyv::to_bytes::<rancor::Error>(record).map_err(|e| StoreError::Encode {
        tree: R::TREE,
        key: printable_key(key),
        reason: e.to_string(),
    })?;
    if archived.len() + 1 > MAX_VALUE_BYTES {
        return Err(StoreError::Encode {
            tree: R::TREE,
            key: printable_key(key),
            reason: format!(
                "encoded record is {} bytes, more than the {MAX_VALUE_BYTES} allowed",
                archived.len() + 1
            ),
        });
    }
    let mut value = Vec::with_capacity(archived.len() + 1);
    value.push(R::VERSION);
    value.extend_from_slice(&archived);
    Ok(value)
}

/// Checks the version byte and validates the archive, returning it in an aligned buffer. sled's
/// values carry no alignment guarantee and rkyv needs its archive aligned, hence the copy.
fn validated<R>(key: &[u8], value: &[u8]) -> Result<AlignedVec, StoreError>
where
    R: Record,
    R::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    let Some((&version, archive)) = value.split_first() else {
        return Err(corrupt::<R>(key, "empty value".into()));
    };
    if version != R::VERSION {
        return Err(StoreError::UnknownVersion {
            tree: R::TREE,
            key: printable_key(key),
            version,
        });
    }
    let mut aligned = AlignedVec::<16>::with_capacity(archive.len());
    aligned.extend_from_slice(archive);
    rkyv::access::<R::Archived, rancor::Error>(&aligned)
        .map_err(|e| corrupt::<R>(key, e.to_string()))?;
    Ok(aligned)
}

/// Decodes a stored value written by [`encode`]: version check, bytecheck validation, then
/// deserialization. Any mismatch is an error, never a panic.
pub fn decode<R>(key: &[u8], value: &[u8]) -> Result<R, StoreError>
where
    R: Record,
    R::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<R, Strategy<Pool, rancor::Error>>,
{
    if let Some(old) = older::<R>(key, value) {
        return old;
    }
    let aligned = validated::<R>(key, value)?;
    rkyv::from_bytes::<R, rancor::Error>(&aligned).map_err(|e| corrupt::<R>(key, e.to_string()))
}

/// A value of an older layout of `R`, converted; `None` when the value is of the current layout
/// (or of none `R` knows, which [`validated`] then reports).
fn older<R: Record>(key: &[u8], value: &[u8]) -> Option<Result<R, StoreError>> {
    let (&version, archive) = value.split_first()?;
    if version >= R::VERSION {
        return None;
    }
    Some(R::migrate(version, archive)?.map_err(|reason| corrupt::<R>(key, reason)))
}

/// Reads only `created_ms` of a stored value, after the same checks as [`decode`].
pub fn created_ms<R>(key: &[u8], value: &[u8]) -> Result<u64, StoreError>
where
    R: Record,
    R::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    if let Some(old) = older::<R>(key, value) {
        return old.map(|r| r.created_ms());
    }
    let aligned = validated::<R>(key, value)?;
    let archived = rkyv::access::<R::Archived, rancor::Error>(&aligned)
        .map_err(|e| corrupt::<R>(key, e.to_string()))?;
    Ok(R::archived_created_ms(archived))
}

fn corrupt<R: Record>(key: &[u8], reason: String) -> StoreError {
    StoreError::Corrupt {
        tree: R::TREE,
        key: printable_key(key),
        reason,
    }
}

/// A key as text for error messages: UTF-8 as is (NUL separators as `/`), anything else in hex.
/// Keys hold ids and idempotency scopes, never PII.
pub fn printable_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        // A NUL separates a key's parts (e.g. tenant and auction id); show it as a slash.
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\0') => s.replace('\0', "/"),
        _ => hex::encode(key),
    }
}
