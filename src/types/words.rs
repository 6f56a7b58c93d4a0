//! The exchange's closed vocabularies: every word Gavel itself says about a buyer's ping, an
//! auction without a winner, a delivery attempt, a call that never reached its buyer, an overload
//! refusal and a rate limit, each typed once.
//!
//! Each vocabulary is an enum with one `as_str` (the word on the wire, in stored records and as a
//! metric label), one `parse` and an `ALL` list in declaration order. The engine, the records'
//! conversions, the metrics and the API all take the enum, so a label or stored word outside the
//! list cannot be produced, and a metric series is an array indexed by [`Word::index`] rather
//! than a second list of strings kept in step.
//!
//! Stored records keep the words as strings (the on-disk layout did not change with these types):
//! records written before read back identically, and a word this build does not know is a
//! record error that names it, never a silent default.
//!
//! What is not here: the free-form reasons buyers give for not bidding (their own snake_case
//! words, cleaned by the fan-out), the states of a lead's life (`exchange::status::LeadState`, a
//! state machine written with these words), and the API's error codes, which `crate::error` owns.

/// A closed vocabulary: its words, and the position of each in [`Word::ALL`].
pub trait Word: Copy + Eq + Sized + 'static {
    /// Every word, in declaration order; a metric family's series follow this order.
    const ALL: &'static [Self];

    /// The word as written on the wire, in records and in metric labels.
    fn as_str(self) -> &'static str;

    /// Position of `self` in [`Word::ALL`].
    fn index(self) -> usize;

    /// The word `s` names; `None` for one this build does not know.
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|w| w.as_str() == s)
    }
}

/// Declares a vocabulary enum and its [`Word`] impl from one list of `Variant => "word"` pairs.
macro_rules! words {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl Word for $name {
            const ALL: &'static [$name] = &[$($name::$variant,)+];

            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            fn index(self) -> usize {
                self as usize
            }
        }

        impl $name {
            /// Every word, in declaration order (also [`Word::ALL`], here without the import).
            pub const ALL: &'static [$name] = <$name as Word>::ALL;

            /// The number of words; the length of a metric family's series array.
            pub const COUNT: usize = [$($word,)+].len();

            /// The word as written on the wire, in records and in metric labels.
            pub fn as_str(self) -> &'static str {
                Word::as_str(self)
            }

            /// The word `s` names; `None` for one this build does not know.
            pub fn parse(s: &str) -> Option<$name> {
                <$name as Word>::parse(s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words! {
    /// How one buyer fared in one auction (CONTRACT §4.3): the `outcome` of each buyer in an
    /// auction record and of `gavel_buyer_pings_total`.
    pub enum OutcomeKind {
        Bid => "bid",
        NoBid => "no_bid",
        Timeout => "timeout",
        Error => "error",
        Filtered => "filtered",
        RateLimited => "rate_limited",
        Capped => "capped",
    }
}

impl OutcomeKind {
    /// Whether the buyer was actually called (as opposed to skipped by a filter, the cap on
    /// buyers per auction, or its rate limit).
    pub fn was_pinged(self) -> bool {
        matches!(
            self,
            OutcomeKind::Bid | OutcomeKind::NoBid | OutcomeKind::Error | OutcomeKind::Timeout
        )
    }
}

words! {
    /// Why an auction ended without a winner (CONTRACT §4.1): a no-bid ping answer's
    /// `reject_reason` and the `reason` of `gavel_no_bid_total`.
    pub enum NoBidReason {
        NoEligibleBuyers => "no_eligible_buyers",
        NoBids => "no_bids",
        BelowFloor => "below_floor",
    }
}

impl NoBidReason {
    /// The answer's `reject_detail`.
    pub fn detail(self) -> &'static str {
        match self {
            NoBidReason::NoEligibleBuyers => "No buyer's filters accept this lead.",
            NoBidReason::NoBids => "No buyer placed a valid bid before the deadline.",
            NoBidReason::BelowFloor => "Every bid was below the floor price.",
        }
    }
}

words! {
    /// How one attempt to deliver a post to a buyer ended: the `result` of a post attempt in the
    /// auction record and of `gavel_buyer_post_attempts_total`.
    pub enum AttemptResult {
        /// The buyer took the lead (2xx with a lead id).
        Accepted => "accepted",
        /// The buyer said no in a way Gavel can read (4xx, or a 2xx whose answer refuses).
        Rejected => "rejected",
        /// The buyer answered 5xx or 429, or the call broke mid-answer.
        Error => "error",
        /// The call ran out of time.
        Timeout => "timeout",
        /// The buyer could not be reached (connect, name resolution or TLS handshake failed).
        ConnectError => "connect_error",
        /// The buyer answered 2xx but Gavel could not read a sale or a refusal in it (malformed
        /// body, no lead id): the buyer may hold the lead, so it goes to nobody else.
        Unconfirmed => "unconfirmed",
    }
}

words! {
    /// Why a post ended without a sale (CONTRACT §5.2): the answer's `reject_reason`.
    pub enum UnsoldReason {
        /// At least one buyer refused the lead, and nobody took it.
        BuyerRejected => "buyer_rejected",
        /// No buyer could be reached (or answered usefully) within the post budget.
        BuyerUnavailable => "buyer_unavailable",
    }
}

impl UnsoldReason {
    /// The answer's `reject_detail`.
    pub fn detail(self) -> &'static str {
        match self {
            UnsoldReason::BuyerRejected => "Every bidder refused the lead.",
            UnsoldReason::BuyerUnavailable => "No bidder could be reached within the post budget.",
        }
    }
}

words! {
    /// How a post ended for good: the `status` of a final post answer and of the auction record's
    /// post (beside the unsettled `in_flight` and `unresolved`).
    pub enum PostOutcome {
        /// A buyer took the lead and named its lead id.
        Sold => "sold",
        /// Every buyer tried refused it or could not be reached.
        Unsold => "unsold",
        /// A buyer answered 2xx without a sale or a refusal Gavel could read: it may hold the lead.
        Unconfirmed => "unconfirmed",
    }
}

words! {
    /// A status a buyer reports on a lead it bought (CONTRACT §4.6), in the contract's order;
    /// also the words of a lead's stored history (Gavel's own sale is its first `sold`).
    pub enum Reported {
        Qualified => "qualified",
        Contacted => "contacted",
        /// The buyer converted the lead (or, first in a history, Gavel sold it to the buyer).
        Sold => "sold",
        Returned => "returned",
    }
}

words! {
    /// Why a call never reached its buyer: the `kind` of `gavel_buyer_call_errors_total`.
    pub enum CallFailure {
        /// The TLS handshake failed.
        Tls => "tls",
        /// The host name did not resolve (an error or a timeout).
        Dns => "dns",
        /// The TCP connection could not be opened.
        Connect => "connect",
        /// Every address of the host is one the egress rule refuses.
        Egress => "egress",
    }
}

words! {
    /// Why a core refused work before doing any of it (`gavel_requests_shed_total{reason}`).
    pub enum ShedReason {
        /// The core's event loop runs late past `server.max_queue_delay_ms`.
        LoopLag => "loop_lag",
        /// The request waited in the core's queue longer than `server.max_queue_delay_ms`.
        QueueDelay => "queue_delay",
        /// The core holds `server.max_in_flight_requests_per_core` requests already.
        InFlight => "in_flight",
        /// The owner core's hand-off inbox is full.
        InboxFull => "inbox_full",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every word parses back to its variant, its index is its position, and no two words of one
    /// vocabulary are equal.
    fn round_trips<W: Word + std::fmt::Debug>() {
        for (i, w) in W::ALL.iter().enumerate() {
            assert_eq!(w.index(), i);
            assert_eq!(W::parse(w.as_str()), Some(*w));
            assert!(
                W::ALL[..i].iter().all(|o| o.as_str() != w.as_str()),
                "{w:?} repeats a word"
            );
        }
        assert_eq!(W::parse("no such word"), None);
    }

    #[test]
    fn every_vocabulary_round_trips() {
        round_trips::<OutcomeKind>();
        round_trips::<NoBidReason>();
        round_trips::<AttemptResult>();
        round_trips::<UnsoldReason>();
        round_trips::<CallFailure>();
        round_trips::<PostOutcome>();
        round_trips::<Reported>();
        round_trips::<ShedReason>();
    }

    /// The words are the contract's and the stored records': changing one would make records
    /// written before unreadable and break sellers' code, so they are pinned here.
    #[test]
    fn words_are_the_contracts() {
        let all = |w: &[&str]| w.join(",");
        let of = |ws: Vec<&'static str>| ws.join(",");
        assert_eq!(
            of(OutcomeKind::ALL.iter().map(|w| w.as_str()).collect()),
            all(&[
                "bid",
                "no_bid",
                "timeout",
                "error",
                "filtered",
                "rate_limited",
                "capped"
            ])
        );
        assert_eq!(
            of(NoBidReason::ALL.iter().map(|w| w.as_str()).collect()),
            all(&["no_eligible_buyers", "no_bids", "below_floor"])
        );
        assert_eq!(
            of(AttemptResult::ALL.iter().map(|w| w.as_str()).collect()),
            all(&[
                "accepted",
                "rejected",
                "error",
                "timeout",
                "connect_error",
                "unconfirmed"
            ])
        );
        assert_eq!(
            of(UnsoldReason::ALL.iter().map(|w| w.as_str()).collect()),
            all(&["buyer_rejected", "buyer_unavailable"])
        );
        // Words are case-sensitive, as records and the wire write them.
        assert_eq!(OutcomeKind::parse("Bid"), None);
        assert_eq!(AttemptResult::parse("failed"), None);
        assert_eq!(NoBidReason::parse(""), None);
        assert_eq!(
            UnsoldReason::BuyerRejected.detail(),
            "Every bidder refused the lead."
        );
        assert_eq!(
            UnsoldReason::BuyerUnavailable.detail(),
            "No bidder could be reached within the post budget."
        );
    }
}
