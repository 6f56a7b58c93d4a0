//! Retention: deleting records older than their retention, on a background thread.
//!
//! Each record type has a by-time index (`created_ms BE ++ primary key`), so a pass is a range scan
//! over the expired prefix of the index, never a scan of the records. For each index entry the pass
//! deletes the record only if it still is the one the entry describes (compare-and-swap on the exact
//! bytes read), then the entry. The order makes a crash harmless: a record is never left without its
//! entry, and an entry whose record is gone is dropped by the next pass. Deletions are single-key
//! sled writes, never a transaction, so a pass never holds sled's global transaction lock and never
//! blocks a core; it also checks for shutdown between entries.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender, TryRecvError};
use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;

use super::records::{self, Record};
use super::{AuctionRecord, DeliveryRecord, IdemRecord, LeadRecord, Store, StoreError, TreeId};
use crate::types::clock::Clock;

/// What one expiry pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryStats {
    /// Idempotency records deleted.
    pub idempotency: u64,
    /// Auction records deleted.
    pub auctions: u64,
    /// Lead records deleted.
    pub leads: u64,
    /// Webhook deliveries deleted (a due-index entry left behind is dropped by the worker).
    pub outbox: u64,
    /// Audit log entries deleted.
    pub audit: u64,
    /// Index entries dropped because their record was gone or had been rewritten with another
    /// `created_ms` (which has its own entry).
    pub stale_index: u64,
    /// Expired records left in place because they could not be read (corrupt, or written by a newer
    /// Gavel); each is logged.
    pub unreadable: u64,
    /// Expired records left in place because they changed while the pass ran; the next pass
    /// looks at them again.
    pub raced: u64,
    /// `true` when the pass stopped early for shutdown.
    pub interrupted: bool,
}

impl ExpiryStats {
    /// Records deleted, all trees together.
    pub fn deleted(&self) -> u64 {
        self.idempotency + self.auctions + self.leads + self.outbox + self.audit
    }
}

/// How a record compares with the index entry that points at it.
enum Verdict {
    Delete,
    Stale,
    Unreadable(StoreError),
}

fn verdict<R>(key: &[u8], value: &[u8], indexed_ms: u64) -> Verdict
where
    R: Record,
    R::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    match records::created_ms::<R>(key, value) {
        Ok(ms) if ms == indexed_ms => Verdict::Delete,
        Ok(_) => Verdict::Stale,
        Err(e) => Verdict::Unreadable(e),
    }
}

impl Store {
    /// Deletes idempotency records older than `idempotency_retention_ms` and auction and lead
    /// records, webhook deliveries and audit entries older than `record_retention_ms`, as of
    /// `now_ms`, with their index entries. Blocking:
    /// runs on the expiry thread (or in tests).
    pub fn expire(&self, now_ms: u64) -> Result<ExpiryStats, StoreError> {
        self.expire_until(now_ms, &|| false)
    }

    fn expire_until(
        &self,
        now_ms: u64,
        stop: &dyn Fn() -> bool,
    ) -> Result<ExpiryStats, StoreError> {
        let mut stats = ExpiryStats::default();
        let idem = self.opts.idempotency_retention_ms;
        let records = self.opts.record_retention_ms;
        stats.idempotency = self.expire_tree::<IdemRecord>(
            TreeId::Idem,
            TreeId::IdemByTime,
            now_ms.checked_sub(idem),
            &mut stats,
            stop,
        )?;
        stats.auctions = self.expire_tree::<AuctionRecord>(
            TreeId::Auctions,
            TreeId::AuctionsByTime,
            now_ms.checked_sub(records),
            &mut stats,
            stop,
        )?;
        stats.leads = self.expire_tree::<LeadRecord>(
            TreeId::Leads,
            TreeId::LeadsByTime,
            now_ms.checked_sub(records),
            &mut stats,
            stop,
        )?;
        stats.outbox = self.expire_tree::<DeliveryRecord>(
            TreeId::Outbox,
            TreeId::OutboxByTime,
            now_ms.checked_sub(records),
            &mut stats,
            stop,
        )?;
        stats.audit = self.expire_audit(now_ms.checked_sub(records), &mut stats, stop)?;
        Ok(stats)
    }

    /// Deletes the records of `primary` whose index entry in `index` is at or before `cutoff_ms`;
    /// returns how many.
    fn expire_tree<R>(
        &self,
        primary: TreeId,
        index: TreeId,
        cutoff_ms: Option<u64>,
        stats: &mut ExpiryStats,
        stop: &dyn Fn() -> bool,
    ) -> Result<u64, StoreError>
    where
        R: Record,
        R::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    {
        // Nothing is old enough yet (the clock is earlier than one retention after the epoch).
        let Some(cutoff_ms) = cutoff_ms else {
            return Ok(0);
        };
        let (primary, index) = (self.tree(primary), self.tree(index));
        // Every key that starts with a time <= cutoff sorts before `cutoff + 1` as 8 bytes.
        let end = cutoff_ms.saturating_add(1).to_be_bytes();
        let mut deleted = 0;
        for entry in index.range(..end) {
            if stop() {
                stats.interrupted = true;
                break;
            }
            let (ikey, _) = entry?;
            let Some((time, pkey)) = ikey.split_first_chunk::<8>() else {
                // Not an index key this store writes: drop it.
                index.remove(&ikey)?;
                stats.stale_index += 1;
                continue;
            };
            let indexed_ms = u64::from_be_bytes(*time);
            let Some(value) = primary.get(pkey)? else {
                index.remove(&ikey)?;
                stats.stale_index += 1;
                continue;
            };
            match verdict::<R>(pkey, &value, indexed_ms) {
                Verdict::Delete => {
                    // Only if nobody rewrote the record since it was read.
                    match primary.compare_and_swap(pkey, Some(&value), None::<&[u8]>)? {
                        Ok(()) => {
                            index.remove(&ikey)?;
                            deleted += 1;
                        }
                        Err(_) => stats.raced += 1,
                    }
                }
                Verdict::Stale => {
                    index.remove(&ikey)?;
                    stats.stale_index += 1;
                }
                Verdict::Unreadable(e) => {
                    tracing::warn!(error = %e, "expiry skips an unreadable record");
                    stats.unreadable += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes the audit entries made at or before `cutoff_ms`, one tenant's expired prefix after
    /// another (an entry's key starts with its tenant, then its time); returns how many. Entries
    /// are never rewritten, so no compare-and-swap is needed.
    fn expire_audit(
        &self,
        cutoff_ms: Option<u64>,
        stats: &mut ExpiryStats,
        stop: &dyn Fn() -> bool,
    ) -> Result<u64, StoreError> {
        let Some(cutoff_ms) = cutoff_ms else {
            return Ok(0);
        };
        let tree = self.tree(TreeId::Audit);
        let mut deleted = 0;
        // Where the next tenant's entries start (at or after this key).
        let mut from: Vec<u8> = Vec::new();
        while let Some(first) = tree.range(from.clone()..).next() {
            let (first, _) = first?;
            let Some(nul) = first.iter().position(|b| *b == 0) else {
                // Not a key this store writes: step over it.
                from = first.to_vec();
                from.push(0);
                continue;
            };
            let prefix = &first[..=nul];
            let mut end = prefix.to_vec();
            end.extend_from_slice(&cutoff_ms.saturating_add(1).to_be_bytes());
            for entry in tree.range(prefix.to_vec()..end) {
                if stop() {
                    stats.interrupted = true;
                    return Ok(deleted);
                }
                let (key, _) = entry?;
                tree.remove(&key)?;
                deleted += 1;
            }
            // The next tenant: past every key that starts with this one's name and NUL.
            from = first[..nul].to_vec();
            from.push(1);
        }
        Ok(deleted)
    }

    /// Starts the background expiry thread (`gavel-expiry`): one pass at once (to catch up after
    /// downtime), then one every `expiry_interval_ms`. Dropping the handle stops it, also in the
    /// middle of a pass, and joins it.
    ///
    /// Each pass expires records as of `clock`'s now, so a test on a manual clock moves records
    /// past their retention by advancing it; the pause between passes stays on the monotonic
    /// clock, since it only bounds how late a pass notices.
    pub fn spawn_expiry(self: &Arc<Self>, clock: Clock) -> Result<ExpiryHandle, StoreError> {
        let store = Arc::clone(self);
        let interval = Duration::from_millis(self.opts.expiry_interval_ms);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("gavel-expiry".into())
            .spawn(move || {
                let stop = || !matches!(stop_rx.try_recv(), Err(TryRecvError::Empty));
                loop {
                    match store.expire_until(clock.now_ms(), &stop) {
                        Ok(stats) if stats.deleted() > 0 || stats.unreadable > 0 => {
                            tracing::info!(
                                idempotency = stats.idempotency,
                                auctions = stats.auctions,
                                leads = stats.leads,
                                audit = stats.audit,
                                stale_index = stats.stale_index,
                                unreadable = stats.unreadable,
                                "store expiry pass"
                            );
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "store expiry pass failed"),
                    }
                    // The handle never sends; it disconnects on drop, which ends the wait at once.
                    match stop_rx.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .map_err(|e| StoreError::Io(sled::Error::Io(e)))?;
        Ok(ExpiryHandle {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

/// Owns the expiry thread; dropping it stops and joins the thread.
#[derive(Debug)]
pub struct ExpiryHandle {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ExpiryHandle {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("store expiry thread panicked");
            }
        }
    }
}
