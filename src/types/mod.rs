//! The leaf of the module graph: plain types every layer names (tenant, scope, money in cents,
//! the replaceable clock, the snake_case id form). Nothing here imports another Gavel module, and nothing here does I/O
//! beyond reading the system clock.

pub mod clock;
pub mod id;
pub mod money;
pub mod party;
pub mod tenant;
pub mod words;

pub use clock::Clock;
pub use id::is_snake_id;
pub use money::{Cents, Money};
pub use party::{Party, PartyKind};
pub use tenant::{Scope, Tenant};

/// Longest `driver_age_band`, in characters: the ping validator refuses longer ones, so a buyer
/// filter naming a longer band could never match and is refused at load.
pub const MAX_DRIVER_AGE_BAND_LEN: usize = 16;
