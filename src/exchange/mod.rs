//! The exchange: the use-cases Gavel exists for, run on the core that owns the auction, with no
//! knowledge of HTTP. Running a ping's auction and recording it ([`auction`]), delivering a
//! posted lead with fallback and resume ([`post`]), the one-call lead that does both ([`lead`]), buyers' status reports on sold leads
//! ([`status`]), the webhook events state changes emit ([`events`]), and buyers and sellers
//! changed while Gavel runs ([`buyers`], [`sellers`]: admin API and config reload).
//!
//! The HTTP layer (`api`) authenticates, decodes, calls a function here and encodes what it
//! returns: a domain result or an [`ExchangeError`], which says who caused it. The exchange uses
//! the layers below it (the auction shard and clearing, buyers, the store, the runtime's cores)
//! and nothing above.

pub mod app;
pub mod auction;
pub mod buyers;
pub mod error;
pub mod events;
pub mod lead;
pub mod post;
pub mod sellers;
pub mod status;

pub use app::{Core, Exchange, ServerHandle, Shared};
pub use error::ExchangeError;
