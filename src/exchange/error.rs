//! What can stop a use-case, in the exchange's own terms. Each variant says who caused it
//! ([`ExchangeError::cause`]); the HTTP layer maps each to one status code, one error code and one
//! metric label, and the exchange never builds an HTTP answer itself.

use crate::error::Cause;
use crate::store::StoreError;
use crate::types::Tenant;

/// Why a use-case did not run (or did not finish being recorded).
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The seller named an auction id that already names an auction of its tenant.
    #[error("an auction with id {auction_id} already exists")]
    AuctionExists { auction_id: String },
    /// The seller already runs its maximum number of auctions at once.
    #[error("the client runs its maximum of {max} auctions at once")]
    TooManyRunning { max: u32 },
    /// This core holds the tenant's maximum number of auctions; the earliest may leave in
    /// `retry_after_ms`.
    #[error("the {tenant:?} tenant's room on this core is full")]
    RoomFull { tenant: Tenant, retry_after_ms: u64 },
    /// A stored auction record could not be read or decoded.
    #[error("the auction record of {auction_id} is unreadable: {reason}")]
    RecordUnreadable { auction_id: String, reason: String },
    /// No lead with this id was bought by the reporting buyer (or it is another buyer's).
    #[error("no lead {lead_uuid} bought by this buyer")]
    LeadNotFound { lead_uuid: String },
    /// Another status report for the same lead is being recorded.
    #[error("another status report for this lead is being recorded")]
    StatusInFlight,
    /// The reported status may not follow the lead's current one.
    #[error("the lead is {current}; it cannot become {requested}")]
    InvalidTransition {
        current: &'static str,
        allowed: Vec<&'static str>,
        requested: &'static str,
    },
    /// The lead's history holds the most status changes one lead may record.
    #[error("the lead's status history is full; it stays {current}")]
    StatusHistoryFull { current: &'static str },
    /// Gavel broke one of its own rules (a bug): the request fails rather than record nonsense.
    #[error("internal inconsistency: {0}")]
    Inconsistent(&'static str),
    /// A write could not be made durable (or the store refused it as overloaded).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ExchangeError {
    /// Whose fault it is: the seller's for what it asked, Gavel's for its store and capacity.
    pub fn cause(&self) -> Cause {
        match self {
            ExchangeError::AuctionExists { .. }
            | ExchangeError::TooManyRunning { .. }
            | ExchangeError::LeadNotFound { .. }
            | ExchangeError::StatusInFlight
            | ExchangeError::InvalidTransition { .. }
            | ExchangeError::StatusHistoryFull { .. } => Cause::Seller,
            ExchangeError::RoomFull { .. }
            | ExchangeError::RecordUnreadable { .. }
            | ExchangeError::Inconsistent(_)
            | ExchangeError::Store(_) => Cause::Internal,
        }
    }
}
