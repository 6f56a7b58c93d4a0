//! What can stop a use-case, in the exchange's own terms. Each variant says who caused it
//! ([`ExchangeError::cause`]); the HTTP layer maps each to one status code, one error code and one
//! metric label, and the exchange never builds an HTTP answer itself.

use crate::error::{Cause, FieldError};
use crate::store::StoreError;
use crate::types::Tenant;

// Architecture Invariant [exchange-no-http-errors]: the exchange returns these, never an HTTP
// answer; `api` maps each variant to one status and error code.
/// Why a use-case did not run (or did not finish being recorded).
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The seller named an auction id that already names one of its own auctions (another
    /// seller's auction under the same id is no conflict).
    #[error("an auction with id {auction_id} already exists")]
    AuctionExists { auction_id: String },
    /// The caller may see auctions of several sellers under this id and did not name one
    /// (`?seller_id=`). `sellers` lists them for the operator only; it is empty for a buyer.
    #[error("auction id {auction_id} names auctions of several sellers")]
    AmbiguousAuctionId {
        auction_id: String,
        sellers: Vec<String>,
    },
    /// The reporting buyer bought leads of several sellers under this lead uuid, and a status
    /// report cannot say which.
    #[error("the buyer bought several sellers' leads under lead uuid {lead_uuid}")]
    AmbiguousLeadUuid { lead_uuid: String },
    /// The credential is not a seller's (the operator's or a buyer's): only sellers send leads.
    #[error("only a seller's credential sends leads; this one is the {party}'s")]
    NotASeller { party: &'static str },
    /// The seller's credential is refused: the operator suspended the seller.
    #[error("seller {seller} is suspended")]
    SellerSuspended { seller: String },
    /// The credential names a seller Gavel no longer has (removed from the config file while an
    /// OAuth client of it remains).
    #[error("seller {seller} does not exist")]
    SellerUnknown { seller: String },
    /// The seller already runs its maximum number of auctions at once.
    #[error("seller {seller} runs its maximum of {max} auctions at once")]
    TooManyRunning { seller: String, max: u32 },
    /// The seller sent more pings per second than its limit; the next fits in `retry_after_ms`.
    #[error("seller {seller} is over its {per_s} pings per second")]
    SellerPingRate {
        seller: String,
        per_s: f64,
        retry_after_ms: u64,
        reset_ms: u64,
    },
    /// The seller holds its maximum of won auctions it has not posted (a ping in flight holds
    /// one too, until its auction closes without a winner).
    #[error("seller {seller} holds its maximum of {max} unposted auctions")]
    TooManyUnposted { seller: String, max: u32 },
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
    /// The post (or lookup) names an auction the caller's tenant and seller do not have (or no
    /// longer keep); another seller's auction under the id is not found either.
    #[error("auction {auction_id} is unknown here or its post window has passed")]
    AuctionNotFound { auction_id: String },
    /// The bid token does not entitle this post (forged, another auction's, another amount).
    #[error("invalid bid token: {0}")]
    InvalidBidToken(&'static str),
    /// The bid token's time ran out before the delivery started.
    #[error("the bid token expired")]
    BidExpired,
    /// The idempotency key was used with a different request body.
    #[error("the idempotency key was used with a different body")]
    KeyReused,
    /// A delivery under the same idempotency key is still running.
    #[error("a post with this idempotency key is still being delivered")]
    KeyInFlight,
    /// The auction was posted under another idempotency key.
    #[error("auction {auction_id} was already posted with another key")]
    AlreadyPosted { auction_id: String },
    /// The lead does not agree with its ping; one field error per disagreement.
    #[error("the lead does not agree with its ping")]
    LeadMismatch(Vec<FieldError>),
    /// The configured lead rules are not met; one field error per unmet rule.
    #[error("the lead does not meet the configured rules")]
    RulesUnmet(Vec<FieldError>),
    /// The intent to deliver could not be made durable, so no buyer was called for that step.
    #[error("the delivery could not be recorded")]
    DeliveryNotRecorded,
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
            | ExchangeError::AmbiguousAuctionId { .. }
            | ExchangeError::AmbiguousLeadUuid { .. }
            | ExchangeError::NotASeller { .. }
            | ExchangeError::SellerSuspended { .. }
            | ExchangeError::SellerUnknown { .. }
            | ExchangeError::TooManyRunning { .. }
            | ExchangeError::SellerPingRate { .. }
            | ExchangeError::TooManyUnposted { .. }
            | ExchangeError::LeadNotFound { .. }
            | ExchangeError::StatusInFlight
            | ExchangeError::InvalidTransition { .. }
            | ExchangeError::StatusHistoryFull { .. }
            | ExchangeError::AuctionNotFound { .. }
            | ExchangeError::InvalidBidToken(_)
            | ExchangeError::BidExpired
            | ExchangeError::KeyReused
            | ExchangeError::KeyInFlight
            | ExchangeError::AlreadyPosted { .. }
            | ExchangeError::LeadMismatch(_)
            | ExchangeError::RulesUnmet(_) => Cause::Seller,
            ExchangeError::RoomFull { .. }
            | ExchangeError::RecordUnreadable { .. }
            | ExchangeError::Inconsistent(_)
            | ExchangeError::DeliveryNotRecorded
            | ExchangeError::Store(_) => Cause::Internal,
        }
    }
}
