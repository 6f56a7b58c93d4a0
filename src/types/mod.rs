//! The leaf of the module graph: plain types every layer names (tenant, scope, money in cents,
//! the replaceable clock). Nothing here imports another Gavel module, and nothing here does I/O
//! beyond reading the system clock.

pub mod clock;
pub mod money;
pub mod tenant;

pub use clock::Clock;
pub use money::{Cents, Money};
pub use tenant::{Scope, Tenant};
