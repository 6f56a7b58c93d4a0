//! Record layouts the store no longer writes but still reads: each is the exact shape an older
//! release archived, kept so that its values decode and convert to the current record
//! ([`super::records::Record::migrate`]).
//!
//! This module owns only those shapes, their conversion, and [`write_layout_1`], which writes them
//! the way the release before seller-scoped ids did, for upgrade tests. A layout here never
//! changes: a new layout of a record is a new version in `records`, and the one it replaces moves
//! here.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use super::records::{
    AttemptRecord, AuctionRecord, LeadEvent, LeadRecord, OutcomeRecord, PostRecord,
};
use super::{old_tenant_key, time_key, Store, StoreError, TreeId};

/// [`AuctionRecord`] as layout 1 wrote it: before auctions named their seller.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AuctionRecordV1 {
    pub id: String,
    pub tenant: String,
    pub client: String,
    pub ping_json: Vec<u8>,
    pub created_ms: u64,
    pub deadline_ms: u64,
    pub closed_ms: Option<u64>,
    pub status: String,
    pub reject_reason: Option<String>,
    pub outcomes: Vec<OutcomeRecord>,
    pub ranked: Vec<u32>,
    pub payout_cents: Option<u64>,
    pub token_valid_until_ms: Option<u64>,
    pub post: PostRecord,
    pub post_attempts: Vec<AttemptRecord>,
}

/// [`LeadRecord`] as layout 1 wrote it: before leads named their seller.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LeadRecordV1 {
    pub lead_uuid: String,
    pub auction_id: String,
    pub tenant: String,
    pub buyer_id: String,
    pub buyer_lead_id: String,
    pub created_ms: u64,
    pub history: Vec<LeadEvent>,
}

fn aligned(archive: &[u8]) -> AlignedVec {
    let mut a = AlignedVec::<16>::with_capacity(archive.len());
    a.extend_from_slice(archive);
    a
}

/// A layout-1 auction, validated, as the current record. Its seller is its client: before
/// parties, every token spoke for the implicit seller named by its client.
pub fn auction_v1(archive: &[u8]) -> Result<AuctionRecord, String> {
    let r = rkyv::from_bytes::<AuctionRecordV1, rancor::Error>(&aligned(archive))
        .map_err(|e| e.to_string())?;
    Ok(AuctionRecord {
        seller: r.client.clone(),
        id: r.id,
        tenant: r.tenant,
        client: r.client,
        ping_json: r.ping_json,
        // Before the upgrade buyers were pinged under the auction id itself.
        buyer_ref: String::new(),
        created_ms: r.created_ms,
        deadline_ms: r.deadline_ms,
        closed_ms: r.closed_ms,
        status: r.status,
        reject_reason: r.reject_reason,
        outcomes: r.outcomes,
        ranked: r.ranked,
        payout_cents: r.payout_cents,
        token_valid_until_ms: r.token_valid_until_ms,
        post: r.post,
        post_attempts: r.post_attempts,
    })
}

/// A layout-1 lead, validated, as the current record. Layout 1 did not name the seller; the
/// reader that needs it takes it from the lead's auction.
pub fn lead_v1(archive: &[u8]) -> Result<LeadRecord, String> {
    let r = rkyv::from_bytes::<LeadRecordV1, rancor::Error>(&aligned(archive))
        .map_err(|e| e.to_string())?;
    Ok(LeadRecord {
        lead_uuid: r.lead_uuid,
        auction_id: r.auction_id,
        tenant: r.tenant,
        seller: String::new(),
        buyer_id: r.buyer_id,
        buyer_lead_id: r.buyer_lead_id,
        created_ms: r.created_ms,
        history: r.history,
    })
}

/// Writes layout-1 auctions and leads as the release before seller-scoped ids left them: version
/// byte 1, keyed `tenant ++ 0x00 ++ id`, each with its by-time entry, in a database marked layout
/// 1. Gavel itself never writes this form; it exists so a test can start a server on the store a
/// previous release left behind. Blocking (it flushes): never on a core.
#[doc(hidden)]
pub fn write_layout_1(
    store: &Store,
    auctions: &[AuctionRecordV1],
    leads: &[LeadRecordV1],
) -> Result<(), StoreError> {
    let encode = |archive: Result<AlignedVec, rancor::Error>| -> Result<Vec<u8>, StoreError> {
        let archive = archive.map_err(|e| StoreError::Encode {
            tree: "layout 1",
            key: String::new(),
            reason: e.to_string(),
        })?;
        let mut value = vec![1u8];
        value.extend_from_slice(&archive);
        Ok(value)
    };
    let put = |tree: TreeId, index: TreeId, key: Vec<u8>, value: Vec<u8>, created_ms: u64| {
        store.tree(index).insert(time_key(created_ms, &key), &[])?;
        store.tree(tree).insert(key, value)?;
        Ok::<(), StoreError>(())
    };
    for a in auctions {
        let value = encode(rkyv::to_bytes::<rancor::Error>(a))?;
        put(
            TreeId::Auctions,
            TreeId::AuctionsByTime,
            old_tenant_key(&a.tenant, &a.id),
            value,
            a.created_ms,
        )?;
    }
    for l in leads {
        let value = encode(rkyv::to_bytes::<rancor::Error>(l))?;
        put(
            TreeId::Leads,
            TreeId::LeadsByTime,
            old_tenant_key(&l.tenant, &l.lead_uuid),
            value,
            l.created_ms,
        )?;
    }
    store.db.insert("layout_version", &[1])?;
    store.flush()
}
