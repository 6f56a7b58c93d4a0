//! Persistence: the only module that touches sled.
//!
//! It owns the on-disk layout (trees and key encodings), the record encoding (rkyv archives behind a
//! version byte, validated on every read, see [`records`]), durability (a core's write is acknowledged
//! only after its own write-ahead log is synced, with group commit, see [`wal`]; sled is the index
//! the logs are replayed into at open) and retention (a
//! background thread deletes what is older than its retention, see [`expiry`]). It does not own any
//! business rule: what goes into a record, when to store it, and what a stored record means are
//! decided by the callers, which convert their own types to and from the plain records here.
//!
//! # On-disk layout
//! One sled database, these trees (all keys are bytes; `BE` is big-endian):
//!
//! | tree               | key                                   | value                         |
//! |--------------------|---------------------------------------|-------------------------------|
//! | `idem`             | [`IdemScope::encode_key`]             | `[1] ++ rkyv(IdemRecord)`     |
//! | `idem_by_time`     | `created_ms BE(8) ++ idem key`        | empty                         |
//! | `auctions`         | [`record_key`]: tenant, id, seller    | `[2] ++ rkyv(AuctionRecord)`  |
//! | `auctions_by_time` | `created_ms BE(8) ++ auctions key`    | empty                         |
//! | `leads`            | [`record_key`]: tenant, uuid, seller  | `[2] ++ rkyv(LeadRecord)`     |
//! | `leads_by_time`    | `created_ms BE(8) ++ leads key`       | empty                         |
//! | `meta`             | caller's key (UTF-8)                  | caller's bytes, never expired |
//! | `outbox`           | [`delivery_key`]: `event id/endpoint` | `[1] ++ rkyv(DeliveryRecord)` |
//! | `outbox_by_time`   | `created_ms BE(8) ++ outbox key`      | empty                         |
//! | `outbox_due`       | [`due_key`]                           | empty                         |
//! | `audit`            | [`audit_key`]: tenant ++ 0x00 ++ `created_ms BE(8)` ++ id | `[1] ++ rkyv(AuditRecord)` |
//!
//! The default tree holds `layout_version` (one byte): a database written by a newer, incompatible
//! Gavel is refused at open instead of misread, and an older one is marked as this layout once
//! opened (its records stay where they are and are read as they are, see below).
//!
//! Auctions and leads are keyed `tenant ++ 0x00 ++ id ++ 0x00 ++ seller` ([`record_key`]): a
//! seller-chosen id names one record per tenant and seller, and every seller's record under one id
//! shares the prefix `tenant ++ 0x00 ++ id ++ 0x00`, so the records of one id are one short prefix
//! scan ([`Store::auctions_by_id`], at most [`MAX_SAME_ID_SELLERS`] rows read). Ids and sellers
//! never contain a NUL byte, so no key of one id starts with another id's prefix. Layout 1 keyed
//! them `tenant ++ 0x00 ++ id`, and before tenants were scoped by the bare id; those keys are still
//! read (a record found there counts only for the seller it names, see [`Store::get_auction`]) and
//! expire like any other, but never written again.
//!
//! `outbox_due` holds one entry per pending webhook delivery, ordered by endpoint and then by
//! when its next attempt is due, so the delivery worker finds an endpoint's due work with one
//! range scan. An entry whose record is gone (expired) is dropped by the worker.
//!
//! `audit` needs no by-time index: its key is time-ordered within each tenant, so one tenant's
//! entries list newest first with one reverse range scan, and expiry deletes each tenant's
//! expired prefix. Its entries are never rewritten.
//!
//! The `*_by_time` trees make expiry a range scan instead of a full scan. They are keyed by
//! `created_ms`, which never changes when a record is rewritten (an auction is rewritten at close
//! and at post), so a rewrite puts the same index key again: no duplicates, no early expiry.
//!
//! # Atomicity
//! A core's [`Batch`] is one frame of its write-ahead log, written and checksummed as a whole:
//! recovery replays a frame entirely or not at all, so an auction and the lead written with it
//! appear together or not at all after a crash, and a record never exists without its index entry
//! (an index entry whose record is gone is harmless: expiry drops it). While running, a synced
//! group is inserted into sled without a transaction, so another thread may briefly see part of a
//! batch in memory; every such write is already durable. Batches written outside a core (the
//! webhook worker, startup) go through [`Store::write_durable`]: one sled multi-tree transaction,
//! which sled recovers all or nothing, then a flush.
//! One tree with key prefixes and `Tree::apply_batch` would give the same guarantee and was not
//! measurably faster per write; separate trees were chosen so each kind of record can be scanned,
//! counted and expired on its own. Note that a sled transaction briefly takes a process-wide write
//! lock that sled reads and inserts also respect; it is held only while the writes are put in
//! memory, never during the fsync, and only the off-core writers use transactions.

pub mod commit;
pub mod expiry;
pub mod legacy;
pub mod records;
pub mod wal;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use sled::transaction::{TransactionError, Transactional};
use sled::IVec;

pub use commit::{CommitCounters, CommitStats};
pub use expiry::{ExpiryHandle, ExpiryStats};
pub use records::{
    AttemptRecord, AuctionRecord, AuditRecord, DeliveryRecord, DeliveryState, IdemRecord,
    LeadEvent, LeadRecord, OutcomeRecord, PostRecord, WebhookAttemptRecord,
};
pub use wal::{Checkpointer, CoreLog};

use records::Record;

/// Highest on-disk layout this build reads and writes (the byte under `layout_version`).
/// 2: auctions and leads keyed by tenant, id and seller ([`record_key`]); a layout-1 database is
/// read as it is and marked 2 at open, so a Gavel that knows only layout 1 refuses it instead of
/// missing every record written since.
pub const LAYOUT_VERSION: u8 = 2;

/// Most rows a by-id read of the `auctions` or `leads` tree looks at ([`Store::auctions_by_id`],
/// [`Store::leads_by_id`]): the records of one id across sellers, in seller order. Ids a seller
/// chooses rarely meet another seller's, so a few rows cover every real case; past this many, the
/// later sellers' records are reached only by naming the seller ([`Store::get_auction`]).
pub const MAX_SAME_ID_SELLERS: usize = 16;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// How the store is opened and how long it keeps records.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Directory of the sled database; created when missing.
    pub path: PathBuf,
    /// sled's page cache. Reads that miss it go to disk, so it should hold the hot idempotency keys.
    pub cache_capacity_bytes: u64,
    /// How long an idempotency record replays its answer, from its `created_ms` (CONTRACT §6).
    pub idempotency_retention_ms: u64,
    /// How long auction and lead records are kept, from their `created_ms`.
    pub record_retention_ms: u64,
    /// Pause between two expiry passes of [`Store::spawn_expiry`].
    pub expiry_interval_ms: u64,
    /// Sizes each core's log queue: `8 ×` this many writes may wait for the disk.
    pub group_commit_max_batch: usize,
    /// `false` makes a [`CoreLog`] skip the log and answer once sled has the writes in memory
    /// (records still reach the disk within sled's background flush interval). Only for measuring what durability costs: a crash then
    /// loses acknowledged writes. [`Store::write_durable`] always flushes.
    pub durable: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/gavel.sled"),
            cache_capacity_bytes: 256 * 1024 * 1024,
            idempotency_retention_ms: 30 * DAY_MS,
            record_retention_ms: 90 * DAY_MS,
            expiry_interval_ms: 60_000,
            group_commit_max_batch: 1024,
            durable: true,
        }
    }
}

impl StoreOptions {
    /// Refuses options that would make the store misbehave (zero retention wipes every record,
    /// a zero interval spins the expiry thread, a zero batch commits nothing).
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |field: &'static str, reason: &str| {
            Err(StoreError::InvalidOptions {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.path.as_os_str().is_empty() {
            return bad("path", "must not be empty");
        }
        if self.idempotency_retention_ms == 0 {
            return bad("idempotency_retention_ms", "must be > 0");
        }
        if self.record_retention_ms == 0 {
            return bad("record_retention_ms", "must be > 0");
        }
        if self.expiry_interval_ms == 0 {
            return bad("expiry_interval_ms", "must be > 0");
        }
        if self.group_commit_max_batch == 0 {
            return bad("group_commit_max_batch", "must be > 0");
        }
        Ok(())
    }
}

/// Everything that can go wrong in the store. All of it is Gavel's fault from a client's point of
/// view (a 5xx), except that [`StoreError::Overloaded`] says a retry may soon succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// sled failed: I/O error, on-disk corruption detected by sled's checksums, or a sled bug.
    #[error("storage error: {0}")]
    Io(#[from] sled::Error),
    /// A stored value failed validation; it is not read, and the rest of the store is unaffected.
    #[error("corrupt record in tree `{tree}` at key {key}: {reason}")]
    Corrupt {
        /// Tree the value was read from.
        tree: &'static str,
        /// The key, as text or hex.
        key: String,
        /// What the validator found.
        reason: String,
    },
    /// A stored value (or the database) carries a layout version this build does not know,
    /// typically written by a newer Gavel.
    #[error("record in tree `{tree}` at key {key} has unknown layout version {version}")]
    UnknownVersion {
        /// Tree the value was read from.
        tree: &'static str,
        /// The key, as text or hex.
        key: String,
        /// The version byte found.
        version: u8,
    },
    /// A record could not be encoded (e.g. larger than [`records::MAX_VALUE_BYTES`]).
    #[error("cannot encode record for tree `{tree}` at key {key}: {reason}")]
    Encode {
        /// Tree the record was meant for.
        tree: &'static str,
        /// The key, as text or hex.
        key: String,
        /// Why.
        reason: String,
    },
    /// A [`StoreOptions`] field is out of range.
    #[error("store option `{field}`: {reason}")]
    InvalidOptions {
        /// The field.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The core's log has too many writes waiting for the disk: it cannot keep up. Refuse the
    /// request (503) rather than queue without bound.
    #[error("store commit queue is full")]
    Overloaded,
    /// The core's log was closed (shutdown) or broken by a failed write or sync; nothing more can
    /// be committed through it.
    #[error("store log is closed")]
    Closed,
}

impl StoreError {
    /// Whether the same write may succeed if tried again soon: only when the commit queue was
    /// full ([`StoreError::Overloaded`]), which is why it is answered 503 with `Retry-After`.
    /// sled failures, damaged or unknown records, records too large and a closed log fail the
    /// same way again.
    pub fn retryable(&self) -> bool {
        matches!(self, StoreError::Overloaded)
    }

    /// Whose fault it is: store options out of range are the operator's configuration, every
    /// other store failure is Gavel's own.
    pub fn cause(&self) -> crate::error::Cause {
        match self {
            StoreError::InvalidOptions { .. } => crate::error::Cause::Operator,
            _ => crate::error::Cause::Internal,
        }
    }
}

/// The scope of an idempotency key (CONTRACT §6): the same key from another tenant, client,
/// method or path is another key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdemScope {
    /// Tenant name.
    pub tenant: String,
    /// Calling client id.
    pub client: String,
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path, e.g. `/v1/ping`.
    pub path: String,
    /// The `Idempotency-Key` header value (1–255 printable ASCII).
    pub key: String,
}

impl IdemScope {
    /// The sled key: each part as `len u32 BE ++ bytes`, in field order. Length prefixes make the
    /// encoding injective, so ("a","bc") and ("ab","c") never share a key, whatever the parts
    /// contain; a separator byte could not promise that.
    pub fn encode_key(&self) -> Vec<u8> {
        let parts = [
            &self.tenant,
            &self.client,
            &self.method,
            &self.path,
            &self.key,
        ];
        let len: usize = parts.iter().map(|p| 4 + p.len()).sum();
        let mut out = Vec::with_capacity(len);
        for part in parts {
            // Parts are header values and paths bounded by the HTTP limits, far below 4 GiB.
            let n = u32::try_from(part.len()).expect("idempotency scope part shorter than 4 GiB");
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }
}

/// The trees, in a fixed order that indexes [`Store`]'s tree array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum TreeId {
    Idem = 0,
    IdemByTime = 1,
    Auctions = 2,
    AuctionsByTime = 3,
    Leads = 4,
    LeadsByTime = 5,
    Meta = 6,
    Outbox = 7,
    OutboxByTime = 8,
    OutboxDue = 9,
    Audit = 10,
}

const TREE_COUNT: usize = 11;

impl TreeId {
    const ALL: [TreeId; TREE_COUNT] = [
        TreeId::Idem,
        TreeId::IdemByTime,
        TreeId::Auctions,
        TreeId::AuctionsByTime,
        TreeId::Leads,
        TreeId::LeadsByTime,
        TreeId::Meta,
        TreeId::Outbox,
        TreeId::OutboxByTime,
        TreeId::OutboxDue,
        TreeId::Audit,
    ];

    /// The sled tree name; part of the on-disk layout, never rename.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TreeId::Idem => "idem",
            TreeId::IdemByTime => "idem_by_time",
            TreeId::Auctions => "auctions",
            TreeId::AuctionsByTime => "auctions_by_time",
            TreeId::Leads => "leads",
            TreeId::LeadsByTime => "leads_by_time",
            TreeId::Meta => "meta",
            TreeId::Outbox => "outbox",
            TreeId::OutboxByTime => "outbox_by_time",
            TreeId::OutboxDue => "outbox_due",
            TreeId::Audit => "audit",
        }
    }
}

/// `created_ms BE ++ primary key`: the by-time index key.
fn time_key(created_ms: u64, primary: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + primary.len());
    k.extend_from_slice(&created_ms.to_be_bytes());
    k.extend_from_slice(primary);
    k
}

/// The `outbox` key of one event's delivery to one endpoint: `{event_id}/{endpoint_id}`, so an
/// event's deliveries sit together and sort by the event's ULID (its creation time).
pub fn delivery_key(event_id: &str, endpoint_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(event_id.len() + 1 + endpoint_id.len());
    k.extend_from_slice(event_id.as_bytes());
    k.push(b'/');
    k.extend_from_slice(endpoint_id.as_bytes());
    k
}

/// The `outbox_due` key: `len(endpoint) u8 ++ endpoint ++ due_ms BE(8) ++ event_id`. The length
/// prefix keeps one endpoint's entries apart from another's whose id starts the same.
pub fn due_key(endpoint_id: &str, due_ms: u64, event_id: &str) -> Vec<u8> {
    let mut k = due_prefix(endpoint_id);
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(event_id.as_bytes());
    k
}

fn due_prefix(endpoint_id: &str) -> Vec<u8> {
    // Endpoint ids are validated to at most 64 bytes.
    let len = u8::try_from(endpoint_id.len()).expect("endpoint id shorter than 256 bytes");
    let mut k = Vec::with_capacity(1 + endpoint_id.len() + 8 + 32);
    k.push(len);
    k.extend_from_slice(endpoint_id.as_bytes());
    k
}

/// The `audit` key of an entry: `tenant ++ 0x00 ++ created_ms BE(8) ++ id`, so one tenant's
/// entries sit together in time order (tenant names hold no NUL).
pub fn audit_key(tenant: &str, created_ms: u64, id: &str) -> Vec<u8> {
    let mut k = audit_prefix(tenant);
    k.extend_from_slice(&created_ms.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn audit_prefix(tenant: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1 + 8 + 32);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k
}

/// One pending delivery as the due index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// When the attempt is due (unix ms).
    pub due_ms: u64,
    /// The event.
    pub event_id: String,
}

/// One write of a [`Batch`]: `None` removes the key.
#[derive(Debug, Clone)]
struct Op {
    tree: TreeId,
    key: IVec,
    value: Option<IVec>,
}

/// Writes to apply together, all or nothing. Records are encoded when added, on the caller's
/// thread.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch. Committing it still waits for a flush, so it works as a durability barrier.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Number of sled writes (index entries included).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn push(&mut self, tree: TreeId, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.ops.push(Op {
            tree,
            key: key.into(),
            value: value.map(IVec::from),
        });
    }

    fn put_record<R>(
        &mut self,
        primary: TreeId,
        index: TreeId,
        key: Vec<u8>,
        record: &R,
        created_ms: u64,
    ) -> Result<&mut Batch, StoreError>
    where
        R: Record
            + for<'a> rkyv::Serialize<
                rkyv::api::high::HighSerializer<
                    rkyv::util::AlignedVec,
                    rkyv::ser::allocator::ArenaHandle<'a>,
                    rkyv::rancor::Error,
                >,
            >,
    {
        let value = records::encode(&key, record)?;
        self.push(index, time_key(created_ms, &key), Some(Vec::new()));
        self.push(primary, key, Some(value));
        Ok(self)
    }

    /// Stores (or replaces) the answer of an idempotent request.
    pub fn put_idempotency(
        &mut self,
        scope: &IdemScope,
        record: &IdemRecord,
    ) -> Result<&mut Batch, StoreError> {
        self.put_record(
            TreeId::Idem,
            TreeId::IdemByTime,
            scope.encode_key(),
            record,
            record.created_ms,
        )
    }

    /// Removes an idempotency record. Its by-time entry is left for expiry, which drops entries
    /// whose record is gone.
    pub fn delete_idempotency(&mut self, scope: &IdemScope) -> &mut Batch {
        self.push(TreeId::Idem, scope.encode_key(), None);
        self
    }

    /// Stores (or replaces) an auction record. Keep `created_ms` unchanged across rewrites.
    pub fn put_auction(&mut self, record: &AuctionRecord) -> Result<&mut Batch, StoreError> {
        self.put_record(
            TreeId::Auctions,
            TreeId::AuctionsByTime,
            record_key(&record.tenant, &record.id, &record.seller),
            record,
            record.created_ms,
        )
    }

    /// Stores (or replaces) a lead record. Keep `created_ms` unchanged across rewrites.
    pub fn put_lead(&mut self, record: &LeadRecord) -> Result<&mut Batch, StoreError> {
        self.put_record(
            TreeId::Leads,
            TreeId::LeadsByTime,
            record_key(&record.tenant, &record.lead_uuid, &record.seller),
            record,
            record.created_ms,
        )
    }

    /// Stores (or replaces) a webhook delivery and, while it is `pending`, its due-index entry.
    /// Replacing one whose due time moves: also [`Batch::delete_due`] the old entry.
    pub fn put_delivery(&mut self, record: &DeliveryRecord) -> Result<&mut Batch, StoreError> {
        self.put_record(
            TreeId::Outbox,
            TreeId::OutboxByTime,
            delivery_key(&record.event_id, &record.endpoint_id),
            record,
            record.created_ms,
        )?;
        if let (true, Some(due)) = (record.is_pending(), record.next_attempt_ms) {
            self.push(
                TreeId::OutboxDue,
                due_key(&record.endpoint_id, due, &record.event_id),
                Some(Vec::new()),
            );
        }
        Ok(self)
    }

    /// Removes a due-index entry (the delivery was attempted, or its due time moved).
    pub fn delete_due(&mut self, endpoint_id: &str, due_ms: u64, event_id: &str) -> &mut Batch {
        self.push(
            TreeId::OutboxDue,
            due_key(endpoint_id, due_ms, event_id),
            None,
        );
        self
    }

    /// Adds an audit log entry (never rewritten; expired with the records' retention).
    pub fn put_audit(&mut self, record: &AuditRecord) -> Result<&mut Batch, StoreError> {
        let key = audit_key(&record.tenant, record.created_ms, &record.id);
        let value = records::encode(&key, record)?;
        self.push(TreeId::Audit, key, Some(value));
        Ok(self)
    }

    /// Stores an opaque value under `key` in the `meta` tree (never expired).
    pub fn put_meta(&mut self, key: &str, value: impl Into<Vec<u8>>) -> &mut Batch {
        self.push(TreeId::Meta, key.as_bytes().to_vec(), Some(value.into()));
        self
    }

    /// Removes `key` from the `meta` tree.
    pub fn delete_meta(&mut self, key: &str) -> &mut Batch {
        self.push(TreeId::Meta, key.as_bytes().to_vec(), None);
        self
    }
}

/// Number of entries per tree, from [`Store::counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Idempotency records.
    pub idempotency: u64,
    /// Entries of the idempotency by-time index.
    pub idempotency_index: u64,
    /// Auction records.
    pub auctions: u64,
    /// Entries of the auction by-time index.
    pub auctions_index: u64,
    /// Lead records.
    pub leads: u64,
    /// Entries of the lead by-time index.
    pub leads_index: u64,
    /// Entries of the meta tree.
    pub meta: u64,
    /// Webhook deliveries (one per event and endpoint).
    pub outbox: u64,
    /// Entries of the outbox by-time index.
    pub outbox_index: u64,
    /// Deliveries waiting for an attempt.
    pub outbox_due: u64,
    /// Audit log entries.
    pub audit: u64,
}

/// The sled database and its trees. `Send + Sync`: open it once and share it by `Arc` with every
/// core, the checkpoint thread and the expiry thread.
pub struct Store {
    db: sled::Db,
    trees: [sled::Tree; TREE_COUNT],
    opts: StoreOptions,
    /// Where the cores' write-ahead logs live (`<path>/wal`); `None` for a temporary store.
    wal_dir: Option<PathBuf>,
    /// The next write-ahead log sequence number, shared by all cores (see [`wal`]).
    wal_seq: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.opts.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the database at `opts.path`. Also the way back after a crash: sled
    /// replays its log on open, and every write acknowledged as durable is there.
    pub fn open(opts: &StoreOptions) -> Result<Store, StoreError> {
        opts.validate()?;
        let db = sled::Config::new()
            .path(&opts.path)
            .cache_capacity(opts.cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let mut store = Store::from_db(db, opts.clone())?;
        let wal_dir = opts.path.join("wal");
        let recovery = wal::recover(&store, &wal_dir)?;
        store.wal_seq = AtomicU64::new(recovery.next_seq);
        store.wal_dir = Some(wal_dir);
        Ok(store)
    }

    /// A throw-away database that sled deletes when the store is dropped. Retention and batch
    /// options are the defaults; `options().path` is not where the data lives. For tests and
    /// benches (it may not fsync like a real directory: measure durability on [`Store::open`]).
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new().temporary(true).open()?;
        Store::from_db(db, StoreOptions::default())
    }

    fn from_db(db: sled::Db, opts: StoreOptions) -> Result<Store, StoreError> {
        match db.get("layout_version")? {
            None => {
                db.insert("layout_version", &[LAYOUT_VERSION])?;
                db.flush()?;
            }
            Some(v) if v.as_ref() == [LAYOUT_VERSION] => {}
            // Layout 1 is read as it is (its keys are looked up beside the current ones); from
            // now on it holds layout-2 keys too, which a Gavel that knows only layout 1 would miss.
            Some(v) if v.as_ref() == [1] => {
                db.insert("layout_version", &[LAYOUT_VERSION])?;
                db.flush()?;
            }
            Some(v) => {
                return Err(StoreError::UnknownVersion {
                    tree: "__sled__default",
                    key: "layout_version".into(),
                    version: v.first().copied().unwrap_or(0),
                })
            }
        }
        let open = |id: TreeId| db.open_tree(id.name());
        let trees = [
            open(TreeId::Idem)?,
            open(TreeId::IdemByTime)?,
            open(TreeId::Auctions)?,
            open(TreeId::AuctionsByTime)?,
            open(TreeId::Leads)?,
            open(TreeId::LeadsByTime)?,
            open(TreeId::Meta)?,
            open(TreeId::Outbox)?,
            open(TreeId::OutboxByTime)?,
            open(TreeId::OutboxDue)?,
            open(TreeId::Audit)?,
        ];
        Ok(Store {
            db,
            trees,
            opts,
            wal_dir: None,
            wal_seq: AtomicU64::new(1),
        })
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    pub(crate) fn tree(&self, id: TreeId) -> &sled::Tree {
        &self.trees[id as usize]
    }

    fn get_record<R>(&self, tree: TreeId, key: &[u8]) -> Result<Option<R>, StoreError>
    where
        R: Record,
        R::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<R, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
    {
        match self.tree(tree).get(key)? {
            None => Ok(None),
            Some(value) => records::decode::<R>(key, &value).map(Some),
        }
    }

    /// The stored answer for an idempotency scope. A record past its retention may still be
    /// returned until the next expiry pass removes it.
    pub fn get_idempotency(&self, scope: &IdemScope) -> Result<Option<IdemRecord>, StoreError> {
        self.get_record(TreeId::Idem, &scope.encode_key())
    }

    /// A seller's auction record by id. Ids are scoped by tenant and seller: another seller's
    /// auction under the same id is not found. A record an older layout wrote (under
    /// `tenant ++ 0x00 ++ id`, or the bare id) is found only when it names this tenant and seller
    /// (a layout-1 auction's seller is its client).
    pub fn get_auction(
        &self,
        tenant: &str,
        seller: &str,
        auction_id: &str,
    ) -> Result<Option<AuctionRecord>, StoreError> {
        let key = record_key(tenant, auction_id, seller);
        if let Some(r) = self.get_record(TreeId::Auctions, &key)? {
            return Ok(Some(r));
        }
        Ok(self
            .old_auction(tenant, auction_id)?
            .filter(|r| r.seller == seller))
    }

    /// A seller's lead record by lead uuid, scoped as auctions are. A layout-1 lead names no
    /// seller; it counts as its auction's (see [`Store::leads_by_id`]).
    pub fn get_lead(
        &self,
        tenant: &str,
        seller: &str,
        lead_uuid: &str,
    ) -> Result<Option<LeadRecord>, StoreError> {
        let key = record_key(tenant, lead_uuid, seller);
        if let Some(r) = self.get_record(TreeId::Leads, &key)? {
            return Ok(Some(r));
        }
        Ok(self
            .old_lead(tenant, lead_uuid)?
            .filter(|r| r.seller == seller))
    }

    /// Every seller's auction record under `auction_id` in `tenant`, in seller order: at most
    /// [`MAX_SAME_ID_SELLERS`] rows of the current keys, then the record an older layout kept under
    /// the id, unless its seller already has a current one (a rewrite moves a record to the
    /// current key and leaves the old copy to expire).
    pub fn auctions_by_id(
        &self,
        tenant: &str,
        auction_id: &str,
    ) -> Result<Vec<AuctionRecord>, StoreError> {
        let mut out: Vec<AuctionRecord> = self.scan_id(TreeId::Auctions, tenant, auction_id)?;
        if let Some(old) = self.old_auction(tenant, auction_id)? {
            if !out.iter().any(|r| r.seller == old.seller) {
                out.push(old);
            }
        }
        Ok(out)
    }

    /// Every seller's lead record under `lead_uuid` in `tenant`, as [`Store::auctions_by_id`]
    /// reads auctions. A layout-1 lead reads back with its auction's seller (an empty one when
    /// that auction's record is gone).
    pub fn leads_by_id(
        &self,
        tenant: &str,
        lead_uuid: &str,
    ) -> Result<Vec<LeadRecord>, StoreError> {
        let mut out: Vec<LeadRecord> = self.scan_id(TreeId::Leads, tenant, lead_uuid)?;
        if let Some(old) = self.old_lead(tenant, lead_uuid)? {
            if !out.iter().any(|r| r.seller == old.seller) {
                out.push(old);
            }
        }
        Ok(out)
    }

    /// The records under the current keys of one id: a prefix scan that reads at most
    /// [`MAX_SAME_ID_SELLERS`] rows.
    fn scan_id<R>(&self, tree: TreeId, tenant: &str, id: &str) -> Result<Vec<R>, StoreError>
    where
        R: Record,
        R::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<R, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
    {
        self.tree(tree)
            .scan_prefix(id_prefix(tenant, id))
            .take(MAX_SAME_ID_SELLERS)
            .map(|kv| {
                let (k, v) = kv?;
                records::decode::<R>(&k, &v)
            })
            .collect()
    }

    /// The auction an older layout kept under `auction_id`: under [`old_tenant_key`], else under
    /// the bare id when it names this tenant.
    fn old_auction(
        &self,
        tenant: &str,
        auction_id: &str,
    ) -> Result<Option<AuctionRecord>, StoreError> {
        self.old_record(TreeId::Auctions, tenant, auction_id, |r: &AuctionRecord| {
            &r.tenant
        })
    }

    /// The lead an older layout kept under `lead_uuid`, with its seller: a layout-1 lead names
    /// none, and is its auction's, which that layout kept under the old keys too.
    fn old_lead(&self, tenant: &str, lead_uuid: &str) -> Result<Option<LeadRecord>, StoreError> {
        let Some(mut lead) =
            self.old_record(TreeId::Leads, tenant, lead_uuid, |r: &LeadRecord| &r.tenant)?
        else {
            return Ok(None);
        };
        if lead.seller.is_empty() {
            if let Some(a) = self.old_auction(tenant, &lead.auction_id)? {
                lead.seller = a.seller;
            }
        }
        Ok(Some(lead))
    }

    /// A record kept under an older layout's key: `tenant ++ 0x00 ++ id` (layout 1), else the
    /// bare id (before ids were scoped by tenant), found there only when `tenant_of` names the
    /// same tenant.
    fn old_record<R>(
        &self,
        tree: TreeId,
        tenant: &str,
        id: &str,
        tenant_of: impl Fn(&R) -> &str,
    ) -> Result<Option<R>, StoreError>
    where
        R: Record,
        R::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<R, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
    {
        if let Some(r) = self.get_record(tree, &old_tenant_key(tenant, id))? {
            return Ok(Some(r));
        }
        let bare: Option<R> = self.get_record(tree, id.as_bytes())?;
        Ok(bare.filter(|r| tenant_of(r) == tenant))
    }

    /// A value of the `meta` tree.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(TreeId::Meta).get(key)?.map(|v| v.to_vec()))
    }

    /// Every `meta` value whose key starts with `prefix`, in key order.
    pub fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.tree(TreeId::Meta)
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    /// Applies `batch` atomically across trees, in memory and sled's log, without waiting for the
    /// disk. [`Store::write_durable`] calls this, then flushes.
    pub(crate) fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        // Only the trees the batch touches take part in the transaction.
        let mut slot = [usize::MAX; TREE_COUNT];
        let mut trees: Vec<&sled::Tree> = Vec::with_capacity(TREE_COUNT);
        for op in &batch.ops {
            let i = op.tree as usize;
            if slot[i] == usize::MAX {
                slot[i] = trees.len();
                trees.push(&self.trees[i]);
            }
        }
        let result = Transactional::<()>::transaction(trees.as_slice(), |views| {
            for op in &batch.ops {
                let view = &views[slot[op.tree as usize]];
                match &op.value {
                    Some(v) => view.insert(op.key.clone(), v.clone())?,
                    None => view.remove(op.key.clone())?,
                };
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(StoreError::Io(e)),
            // The closure never aborts.
            Err(TransactionError::Abort(())) => Ok(()),
        }
    }

    /// Flushes sled's log and fsyncs: every write applied before the call is durable after it.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// A webhook delivery by event id and endpoint.
    pub fn get_delivery(
        &self,
        event_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        self.get_record(TreeId::Outbox, &delivery_key(event_id, endpoint_id))
    }

    /// Every delivery of one event, one per endpoint it went to.
    pub fn get_deliveries(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut prefix = event_id.as_bytes().to_vec();
        prefix.push(b'/');
        self.tree(TreeId::Outbox)
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                records::decode(&k, &v)
            })
            .collect()
    }

    /// Up to `limit` deliveries, newest event first, starting below `before` (an outbox key
    /// from a previous page) and reading at most `max_scanned` records; `keep` picks which to
    /// return, and unreadable records are skipped (and logged). Returns the page and, when the
    /// scan stopped early, where the next page starts.
    pub fn list_deliveries(
        &self,
        before: Option<&[u8]>,
        limit: usize,
        max_scanned: usize,
        keep: &dyn Fn(&DeliveryRecord) -> bool,
    ) -> Result<(Vec<DeliveryRecord>, Option<Vec<u8>>), StoreError> {
        let tree = self.tree(TreeId::Outbox);
        let iter = match before {
            Some(b) => tree.range(..b.to_vec()),
            None => tree.range::<Vec<u8>, _>(..),
        };
        let mut out = Vec::new();
        // The cursor is the last key read: the next page starts below it.
        let mut last: Option<IVec> = None;
        for (scanned, kv) in iter.rev().enumerate() {
            let (k, v) = kv?;
            if out.len() == limit || scanned == max_scanned {
                let cursor =
                    last.map_or_else(|| before.unwrap_or_default().to_vec(), |l| l.to_vec());
                return Ok((out, Some(cursor)));
            }
            match records::decode::<DeliveryRecord>(&k, &v) {
                Ok(r) if keep(&r) => out.push(r),
                Ok(_) => {}
                // One damaged record must not hide the rest of the outbox.
                Err(e) => tracing::warn!(error = %e, "outbox listing skips an unreadable delivery"),
            }
            last = Some(k);
        }
        Ok((out, None))
    }

    /// Up to `limit` of `tenant`'s audit entries made in `from_ms..=to_ms`, newest first,
    /// starting below `before` (a key from a previous page; one outside the tenant's entries
    /// starts at the newest) and reading at most `max_scanned` entries; `keep` picks which to
    /// return, and unreadable entries are skipped (and logged). Returns the page and, when the
    /// scan stopped early, the key the next page starts below.
    #[allow(clippy::too_many_arguments)]
    pub fn list_audit(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
        before: Option<&[u8]>,
        limit: usize,
        max_scanned: usize,
        keep: &dyn Fn(&AuditRecord) -> bool,
    ) -> Result<(Vec<AuditRecord>, Option<Vec<u8>>), StoreError> {
        let prefix = audit_prefix(tenant);
        let mut low = prefix.clone();
        low.extend_from_slice(&from_ms.to_be_bytes());
        // Exclusive: every key of `to_ms` sorts below `to_ms + 1`; past `u64::MAX`, the tenant's end.
        let mut high = prefix.clone();
        match to_ms.checked_add(1) {
            Some(t) => high.extend_from_slice(&t.to_be_bytes()),
            None => *high.last_mut().expect("the prefix ends in NUL") = 1,
        }
        if let Some(b) = before.filter(|b| b.starts_with(&prefix)) {
            high = high.min(b.to_vec());
        }
        let mut out = Vec::new();
        if low >= high {
            return Ok((out, None));
        }
        let mut last: Option<IVec> = None;
        let tree = self.tree(TreeId::Audit);
        for (scanned, kv) in tree.range(low..high.clone()).rev().enumerate() {
            let (k, v) = kv?;
            if out.len() == limit || scanned == max_scanned {
                let cursor = last.map_or(high, |l| l.to_vec());
                return Ok((out, Some(cursor)));
            }
            match records::decode::<AuditRecord>(&k, &v) {
                Ok(r) if keep(&r) => out.push(r),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "audit listing skips an unreadable entry"),
            }
            last = Some(k);
        }
        Ok((out, None))
    }

    /// Up to `limit` of an endpoint's pending deliveries due at or before `until_ms`, earliest
    /// first, leaving out those `skip` names (attempts already under way).
    pub fn due_deliveries(
        &self,
        endpoint_id: &str,
        until_ms: u64,
        limit: usize,
        skip: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<Due>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for due in self.due_iter(endpoint_id) {
            let due = due?;
            if due.due_ms > until_ms {
                break;
            }
            if !skip(&due.event_id) {
                out.push(due);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// When the earliest pending delivery of an endpoint not named by `skip` is due.
    pub fn next_due(
        &self,
        endpoint_id: &str,
        skip: &dyn Fn(&str) -> bool,
    ) -> Result<Option<u64>, StoreError> {
        for due in self.due_iter(endpoint_id) {
            let due = due?;
            if !skip(&due.event_id) {
                return Ok(Some(due.due_ms));
            }
        }
        Ok(None)
    }

    /// Number of pending deliveries of an endpoint. A scan: for start-up and tests.
    pub fn count_due(&self, endpoint_id: &str) -> u64 {
        self.tree(TreeId::OutboxDue)
            .scan_prefix(due_prefix(endpoint_id))
            .count() as u64
    }

    fn due_iter(&self, endpoint_id: &str) -> impl Iterator<Item = Result<Due, StoreError>> {
        let prefix = due_prefix(endpoint_id);
        let n = prefix.len();
        self.tree(TreeId::OutboxDue)
            .scan_prefix(prefix)
            .map(move |kv| {
                let (k, _) = kv?;
                let rest = &k[n..];
                match rest.split_first_chunk::<8>() {
                    Some((due, id)) => Ok(Due {
                        due_ms: u64::from_be_bytes(*due),
                        event_id: String::from_utf8_lossy(id).into_owned(),
                    }),
                    None => Err(StoreError::Corrupt {
                        tree: "outbox_due",
                        key: records::printable_key(&k),
                        reason: "shorter than its due time".into(),
                    }),
                }
            })
    }

    /// Applies a batch atomically across trees and makes it durable (flush and fsync) before
    /// returning. Blocking: only for off-core threads (the webhook worker), startup code and
    /// tests; a core uses its [`CoreLog`].
    pub fn write_durable(&self, batch: &Batch) -> Result<(), StoreError> {
        self.apply(batch)?;
        self.flush()
    }

    /// Number of entries per tree. Costs a full scan of every tree (sled keeps no count): for the
    /// ops endpoints and tests, never the request path.
    pub fn counts(&self) -> StoreCounts {
        let n = |id: TreeId| self.tree(id).len() as u64;
        StoreCounts {
            idempotency: n(TreeId::Idem),
            idempotency_index: n(TreeId::IdemByTime),
            auctions: n(TreeId::Auctions),
            auctions_index: n(TreeId::AuctionsByTime),
            leads: n(TreeId::Leads),
            leads_index: n(TreeId::LeadsByTime),
            meta: n(TreeId::Meta),
            outbox: n(TreeId::Outbox),
            outbox_index: n(TreeId::OutboxByTime),
            outbox_due: n(TreeId::OutboxDue),
            audit: n(TreeId::Audit),
        }
    }

    /// Size of the database files on disk.
    pub fn size_on_disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Writes raw bytes into a tree, bypassing encoding, to plant corrupt values in tests.
    #[cfg(test)]
    pub(crate) fn raw_insert(&self, tree: TreeId, key: &[u8], value: &[u8]) {
        self.tree(tree).insert(key, value).expect("raw insert");
    }
}

// `ALL` documents the order of `Store::trees`; keep it in step with `from_db`.
const _: () = {
    let mut i = 0;
    while i < TREE_COUNT {
        assert!(TreeId::ALL[i] as usize == i);
        i += 1;
    }
};

// Architecture Invariant [ids-per-tenant-and-seller]: auctions and leads are keyed by tenant, id
// and seller, so a seller-chosen id names a different record for each tenant and seller.
/// The key of a record in the `auctions` and `leads` trees: `tenant ++ 0x00 ++ id ++ 0x00 ++
/// seller`, so one id names a different record in each tenant and for each seller, and every
/// seller's record of one id starts with `tenant ++ 0x00 ++ id ++ 0x00`. Ids never contain a NUL
/// byte (validation allows printable characters only), so the keys of two ids never share that
/// prefix.
pub fn record_key(tenant: &str, id: &str, seller: &str) -> Vec<u8> {
    let mut k = id_prefix(tenant, id);
    k.extend_from_slice(seller.as_bytes());
    k
}

/// `tenant ++ 0x00 ++ id ++ 0x00`: what the key of every seller's record under `id` starts with.
fn id_prefix(tenant: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + id.len() + 2 + 64);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k
}

/// Layout 1's key of a record in the `auctions` and `leads` trees: `tenant ++ 0x00 ++ id`, one
/// record per tenant and id whichever seller it was. Read, never written.
fn old_tenant_key(tenant: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1 + id.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}
