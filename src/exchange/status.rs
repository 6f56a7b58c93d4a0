//! What became of a sold lead: the buyer's status reports (CONTRACT §4.6) as a typed state machine,
//! and the use-case that records one on the lead's owning core.
//!
//! A lead starts `sold` (Gavel's sale to the buyer). The buyer then reports `qualified` and
//! `contacted` as it works the lead, `sold` when it converts it (after which only `returned` may
//! follow), and `returned` only once it was sold or contacted (a return needs a lead the buyer
//! actually kept or worked). `returned` is final. On the wire and in records both kinds of `sold`
//! are the same word; in memory they are [`LeadState::Delivered`] and [`LeadState::Converted`],
//! told apart by whether the `sold` is the history's first event.
//!
//! Owns the rules and the durable change (history, `lead.status_changed` event, one commit); it
//! does not own parsing the report or answering it.

use std::rc::Rc;

use super::app::{Core, InFlightKey};
use super::error::ExchangeError;
use super::events;
use crate::store::{Batch, LeadEvent, LeadRecord};
use crate::types::Tenant;

/// Most status changes one lead's history keeps, Gavel's own `sold` included. A buyer could
/// otherwise cycle `qualified` ↔ `contacted` until the record outgrows what the store accepts,
/// after which every report would fail; past this limit a change is refused and the history stays
/// readable as it is.
pub const MAX_STATUS_CHANGES_PER_LEAD: usize = 32;

/// A status a buyer may report: a word of the one vocabulary ([`crate::types::words`]).
pub use crate::types::words::Reported;

/// Where a lead stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadState {
    /// Gavel sold it to the buyer; the buyer reported nothing yet (or reported `sold` as a no-op).
    Delivered,
    Qualified,
    Contacted,
    /// The buyer reported `sold`: it converted the lead.
    Converted,
    /// Final.
    Returned,
}

impl LeadState {
    /// The state a lead's history ends in. An unknown status word (a record written by a newer
    /// Gavel) reads as final, so nothing is built on a state this code does not understand.
    pub fn of(history: &[LeadEvent]) -> LeadState {
        match history.last().map(|e| Reported::parse(&e.status)) {
            None => LeadState::Delivered,
            Some(Some(Reported::Sold)) if history.len() == 1 => LeadState::Delivered,
            Some(Some(Reported::Sold)) => LeadState::Converted,
            Some(Some(Reported::Qualified)) => LeadState::Qualified,
            Some(Some(Reported::Contacted)) => LeadState::Contacted,
            Some(Some(Reported::Returned) | None) => LeadState::Returned,
        }
    }

    /// The wire name (both kinds of sale are `sold`).
    pub fn as_str(self) -> &'static str {
        match self {
            LeadState::Delivered | LeadState::Converted => Reported::Sold,
            LeadState::Qualified => Reported::Qualified,
            LeadState::Contacted => Reported::Contacted,
            LeadState::Returned => Reported::Returned,
        }
        .as_str()
    }

    /// The reports that may follow this state.
    pub fn allowed(self) -> &'static [Reported] {
        use Reported::*;
        match self {
            LeadState::Delivered => &[Qualified, Contacted, Returned],
            LeadState::Qualified => &[Contacted, Sold],
            LeadState::Contacted => &[Qualified, Sold, Returned],
            LeadState::Converted => &[Returned],
            LeadState::Returned => &[],
        }
    }

    /// What a report does to this state: nothing when it repeats the current status word, the
    /// new state when it is allowed, else the refusal.
    pub fn apply(self, reported: Reported) -> Result<Option<LeadState>, ExchangeError> {
        if reported.as_str() == self.as_str() {
            return Ok(None);
        }
        if !self.allowed().contains(&reported) {
            return Err(ExchangeError::InvalidTransition {
                current: self.as_str(),
                allowed: self.allowed().iter().map(|r| r.as_str()).collect(),
                requested: reported.as_str(),
            });
        }
        Ok(Some(match reported {
            Reported::Qualified => LeadState::Qualified,
            Reported::Contacted => LeadState::Contacted,
            Reported::Sold => LeadState::Converted,
            Reported::Returned => LeadState::Returned,
        }))
    }
}

/// A recorded (or repeated) report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub status: &'static str,
    pub previous_status: &'static str,
    /// When the lead took its current status (unix ms).
    pub at_ms: u64,
}

/// Records `buyer`'s report on `lead_uuid`, on the lead id's owning core. Reports on one lead are
/// decided one at a time there, so two can never both read the same history and lose one
/// another's change. The change and its `lead.status_changed` event are durable before this
/// returns; a repeated status changes nothing and emits nothing.
///
/// Lead uuids a seller chooses are scoped by seller, so several sellers' leads may share one;
/// the report is about the one this buyer bought (see `bought_lead`). The event goes to that
/// lead's seller.
pub async fn report(
    core: &Rc<Core>,
    tenant: Tenant,
    buyer: &str,
    lead_uuid: &str,
    reported: Reported,
    reason: Option<String>,
) -> Result<StatusReport, ExchangeError> {
    let key = format!("lead_status\0{}\0{lead_uuid}", tenant.as_str()).into_bytes();
    let _busy = InFlightKey::claim(core, key).ok_or(ExchangeError::StatusInFlight)?;
    let not_found = || ExchangeError::LeadNotFound {
        lead_uuid: lead_uuid.to_string(),
    };
    let mut lead = bought_lead(core, tenant, buyer, lead_uuid)?.ok_or_else(not_found)?;
    let current = LeadState::of(&lead.history);
    let Some(next) = current.apply(reported)? else {
        return Ok(StatusReport {
            status: current.as_str(),
            previous_status: current.as_str(),
            at_ms: lead.history.last().map_or(0, |e| e.at_ms),
        });
    };
    if lead.history.len() >= MAX_STATUS_CHANGES_PER_LEAD {
        return Err(ExchangeError::StatusHistoryFull {
            current: current.as_str(),
        });
    }
    let at_ms = core.shared.clock.now_ms();
    let mut batch = Batch::new();
    let emitted = events::status_changed(
        core,
        &mut batch,
        tenant,
        &lead.seller,
        &events::StatusChange {
            lead_uuid,
            auction_id: &lead.auction_id,
            status: next.as_str(),
            previous_status: current.as_str(),
            reason: reason.as_deref(),
            at_ms,
        },
    )?;
    lead.history.push(LeadEvent {
        at_ms,
        status: next.as_str().to_string(),
        reason,
    });
    batch.put_lead(&lead)?;
    core.commit(batch).await?;
    events::committed(core, emitted);
    Ok(StatusReport {
        status: next.as_str(),
        previous_status: current.as_str(),
        at_ms,
    })
}

/// The lead under `lead_uuid` that `buyer` bought, among every seller's leads under that uuid
/// (at most [`crate::store::MAX_SAME_ID_SELLERS`] read). Only the buyer that bought a lead may
/// know it exists, so another buyer's is not found. Two sellers' leads under one uuid both bought
/// by this buyer cannot be told apart by the report: [`ExchangeError::AmbiguousLeadUuid`].
fn bought_lead(
    core: &Core,
    tenant: Tenant,
    buyer: &str,
    lead_uuid: &str,
) -> Result<Option<LeadRecord>, ExchangeError> {
    let mut bought: Vec<LeadRecord> = core
        .shared
        .store
        .leads_by_id(tenant.as_str(), lead_uuid)?
        .into_iter()
        .filter(|l| l.buyer_id == buyer)
        .collect();
    match bought.len() {
        0 | 1 => Ok(bought.pop()),
        _ => Err(ExchangeError::AmbiguousLeadUuid {
            lead_uuid: lead_uuid.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(words: &[&str]) -> Vec<LeadEvent> {
        words
            .iter()
            .enumerate()
            .map(|(i, w)| LeadEvent {
                at_ms: i as u64,
                status: w.to_string(),
                reason: None,
            })
            .collect()
    }

    #[test]
    fn the_first_sold_is_the_sale_and_a_later_one_the_conversion() {
        assert_eq!(LeadState::of(&history(&["sold"])), LeadState::Delivered);
        assert_eq!(
            LeadState::of(&history(&["sold", "qualified", "sold"])),
            LeadState::Converted
        );
        assert_eq!(
            LeadState::of(&history(&["sold", "contacted"])),
            LeadState::Contacted
        );
        assert_eq!(
            LeadState::of(&history(&["sold", "bogus"])),
            LeadState::Returned
        );
    }

    #[test]
    fn returned_only_after_a_sale_or_contact_and_it_is_final() {
        use Reported::*;
        let ok = |s: LeadState, r| matches!(s.apply(r), Ok(Some(_)));
        assert!(ok(LeadState::Delivered, Returned));
        assert!(ok(LeadState::Contacted, Returned));
        assert!(ok(LeadState::Converted, Returned));
        assert!(!ok(LeadState::Qualified, Returned));
        for &r in Reported::ALL {
            assert!(!ok(LeadState::Returned, r), "returned -> {r:?}");
        }
    }

    #[test]
    fn a_converted_lead_can_only_be_returned() {
        assert_eq!(LeadState::Converted.allowed(), &[Reported::Returned]);
        let refused = LeadState::Converted.apply(Reported::Qualified);
        assert!(matches!(
            refused,
            Err(ExchangeError::InvalidTransition {
                current: "sold",
                requested: "qualified",
                ..
            })
        ));
    }

    #[test]
    fn repeating_the_current_word_is_a_no_op_even_for_the_initial_sale() {
        assert!(matches!(
            LeadState::Delivered.apply(Reported::Sold),
            Ok(None)
        ));
        assert!(matches!(
            LeadState::Qualified.apply(Reported::Qualified),
            Ok(None)
        ));
        // A returned lead repeating `returned` changes nothing rather than being refused.
        assert!(matches!(
            LeadState::Returned.apply(Reported::Returned),
            Ok(None)
        ));
    }

    #[test]
    fn every_state_reaches_only_the_states_its_reports_name() {
        for s in [
            LeadState::Delivered,
            LeadState::Qualified,
            LeadState::Contacted,
            LeadState::Converted,
            LeadState::Returned,
        ] {
            for &r in Reported::ALL {
                match s.apply(r) {
                    Ok(Some(next)) => assert_eq!(next.as_str(), r.as_str()),
                    Ok(None) => assert_eq!(s.as_str(), r.as_str()),
                    Err(_) => assert!(!s.allowed().contains(&r)),
                }
            }
        }
    }
}
