//! Bid tokens: what Gavel hands the seller after a won auction, and checks again at post time.
//!
//! A token is `bid_` + base64url(claims ‖ HMAC-SHA256(claims)). The claims bind the token to its
//! auction, tenant, seller and seller payout, and carry its expiry and a random nonce, so a token
//! can be neither forged, altered, reused for another auction or by another seller, nor kept past
//! `valid_until`. Keys rotate: Gavel signs with the current key and accepts tokens signed by the
//! current or previous key. This module does not know auctions; the caller compares the claims
//! with the auction it holds.
//!
//! Versions: 2 (signed now) binds the seller as a [`SellerTag`]. Version 1, signed before tokens
//! named their seller, is still verified (with no seller, [`Claims::seller`] `None`) so that a
//! post or a resumed delivery across an upgrade keeps working; such a token lives at most
//! `bid_token.ttl_ms` and is only ever checked against the poster's own auction, since the
//! auction lookup is scoped by the poster's seller whatever the token says.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};

use crate::config::{BidTokenConfig, ConfigError, KeyConfig, Tenant};
use crate::model::Cents;

/// The version Gavel signs: 2, which binds the seller.
const VERSION: u8 = 2;
/// The version before tokens named their seller, still verified.
const VERSION_1: u8 = 1;
const MAC_LEN: usize = 32;
/// Bytes of a [`SellerTag`].
const SELLER_TAG_LEN: usize = 16;
/// Longest auction id a token can carry (auction ids are at most 64 bytes by validation).
const MAX_AUCTION_ID_LEN: usize = 64;
/// Shortest accepted signing secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The seller a token was issued to, as the token carries it: the first 16 bytes of the SHA-256
/// of the seller's id. A fixed size whatever the id's length (an implicit seller is named by its
/// client, which has no length limit of its own), and no seller can choose an id whose tag is
/// another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SellerTag([u8; SELLER_TAG_LEN]);

impl SellerTag {
    /// The tag of seller `seller`.
    pub fn of(seller: &str) -> SellerTag {
        let d = digest::digest(&digest::SHA256, seller.as_bytes());
        let mut tag = [0u8; SELLER_TAG_LEN];
        tag.copy_from_slice(&d.as_ref()[..SELLER_TAG_LEN]);
        SellerTag(tag)
    }
}

/// What a bid token asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub auction_id: String,
    pub tenant: Tenant,
    /// The seller the token was issued to. Every token Gavel signs names one; `None` only for a
    /// version-1 token, signed before tokens did.
    pub seller: Option<SellerTag>,
    pub amount_cents: Cents,
    pub valid_until_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the bid token is malformed or its signature does not verify")]
    Invalid,
}

/// The signing keys: current (signs and verifies) and previous (verifies only).
pub struct BidKeys {
    current: (u8, hmac::Key),
    previous: Option<(u8, hmac::Key)>,
    rng: SystemRandom,
}

/// Why a configured `[bid_token]` key cannot be used. Always the operator's configuration: the
/// file, or the environment variable it names.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("environment variable {var} is not set")]
    EnvUnset {
        var: String,
        #[source]
        source: std::env::VarError,
    },
    #[error("needs `secret` or `secret_env`")]
    NoSecret,
    #[error("secret is not valid base64: {0}")]
    NotBase64(#[source] base64::DecodeError),
    #[error("secret must be at least {MIN_SECRET_BYTES} bytes, got {0}")]
    TooShort(usize),
}

impl KeyError {
    /// Whose fault it is: the operator's, always.
    pub fn cause(&self) -> crate::error::Cause {
        crate::error::Cause::Operator
    }
}

/// Decodes a configured secret from `secret` or `secret_env`, enforcing the minimum length.
pub fn resolve_secret(k: &KeyConfig) -> Result<Vec<u8>, KeyError> {
    let b64 = match (&k.secret, &k.secret_env) {
        (Some(s), _) => s.clone(),
        (None, Some(env)) => std::env::var(env).map_err(|source| KeyError::EnvUnset {
            var: env.clone(),
            source,
        })?,
        (None, None) => return Err(KeyError::NoSecret),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(KeyError::NotBase64)?;
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(KeyError::TooShort(bytes.len()));
    }
    Ok(bytes)
}

/// Checks the `[bid_token]` keys the config module cannot: that each configured secret resolves
/// and is long enough. The error names `file` and the field the secret came from
/// (`bid_token.current.secret`, or `….secret_env`; the table itself when it has neither).
pub fn check_config(c: &BidTokenConfig, file: &str) -> Result<(), ConfigError> {
    for (table, k) in [
        ("bid_token.current", &c.current),
        ("bid_token.previous", &c.previous),
    ] {
        if let Some(k) = k {
            // Name the field the secret came from; with neither set, the table lacks one.
            let key = match (&k.secret, &k.secret_env) {
                (Some(_), _) => format!("{table}.secret"),
                (None, Some(_)) => format!("{table}.secret_env"),
                (None, None) => table.to_string(),
            };
            resolve_secret(k).map_err(|e| ConfigError::Invalid {
                file: file.to_string(),
                key,
                reason: e.to_string(),
            })?;
        }
    }
    Ok(())
}

impl BidKeys {
    /// Builds keys from config. Without a configured current key, `stored_secret` (a key Gavel
    /// generated once and keeps in its store, id 0) signs instead, so tokens survive restarts.
    pub fn from_config(c: &BidTokenConfig, stored_secret: &[u8]) -> Result<BidKeys, KeyError> {
        let current = match &c.current {
            Some(k) => (k.id, hmac::Key::new(hmac::HMAC_SHA256, &resolve_secret(k)?)),
            None => (0, hmac::Key::new(hmac::HMAC_SHA256, stored_secret)),
        };
        let previous = match &c.previous {
            Some(k) => Some((k.id, hmac::Key::new(hmac::HMAC_SHA256, &resolve_secret(k)?))),
            None => None,
        };
        Ok(BidKeys {
            current,
            previous,
            rng: SystemRandom::new(),
        })
    }

    /// A fresh random secret for [`BidKeys::from_config`]'s stored key.
    pub fn generate_secret() -> Vec<u8> {
        let mut secret = vec![0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .expect("system RNG works");
        secret
    }

    /// Keys from raw secrets; used by tests and benches.
    pub fn from_secrets(current: (u8, &[u8]), previous: Option<(u8, &[u8])>) -> BidKeys {
        BidKeys {
            current: (current.0, hmac::Key::new(hmac::HMAC_SHA256, current.1)),
            previous: previous.map(|(id, s)| (id, hmac::Key::new(hmac::HMAC_SHA256, s))),
            rng: SystemRandom::new(),
        }
    }

    /// Signs `c` as a version-2 token. `c.seller` must be set: Gavel issues no token that is not
    /// bound to its seller.
    pub fn sign(&self, c: &Claims) -> String {
        assert!(
            c.auction_id.len() <= MAX_AUCTION_ID_LEN,
            "auction ids are validated"
        );
        let seller = c
            .seller
            .expect("every bid token Gavel signs names its seller");
        let mut nonce = [0u8; 8];
        self.rng.fill(&mut nonce).expect("system RNG works");
        let mut buf = Vec::with_capacity(HEAD_V2 + c.auction_id.len() + MAC_LEN);
        buf.push(VERSION);
        buf.push(self.current.0);
        buf.push(match c.tenant {
            Tenant::Sandbox => 0,
            Tenant::Production => 1,
        });
        buf.extend_from_slice(&c.amount_cents.to_be_bytes());
        buf.extend_from_slice(&c.valid_until_ms.to_be_bytes());
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(&seller.0);
        buf.push(c.auction_id.len() as u8);
        buf.extend_from_slice(c.auction_id.as_bytes());
        debug_assert_eq!(buf.len(), HEAD_V2 + c.auction_id.len());
        let tag = hmac::sign(&self.current.1, &buf);
        buf.extend_from_slice(tag.as_ref());
        let mut out = String::with_capacity(4 + buf.len() * 4 / 3 + 4);
        out.push_str("bid_");
        URL_SAFE_NO_PAD.encode_string(&buf, &mut out);
        out
    }

    /// Checks the signature and decodes the claims (of a version-2 token, or of a version-1 one,
    /// which names no seller). Expiry is the caller's check, so it can tell `bid_expired` apart
    /// from `invalid_bid_token`.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let b64 = token.strip_prefix("bid_").ok_or(TokenError::Invalid)?;
        if b64.len() > 512 {
            return Err(TokenError::Invalid);
        }
        let buf = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| TokenError::Invalid)?;
        let head = match buf.first() {
            Some(&VERSION) => HEAD_V2,
            Some(&VERSION_1) => HEAD_V1,
            _ => return Err(TokenError::Invalid),
        };
        if buf.len() < head + MAC_LEN {
            return Err(TokenError::Invalid);
        }
        let (msg, tag) = buf.split_at(buf.len() - MAC_LEN);
        let key = if buf[1] == self.current.0 {
            &self.current.1
        } else {
            match &self.previous {
                Some((id, k)) if *id == buf[1] => k,
                _ => return Err(TokenError::Invalid),
            }
        };
        hmac::verify(key, msg, tag).map_err(|_| TokenError::Invalid)?;
        let tenant = match msg[2] {
            0 => Tenant::Sandbox,
            1 => Tenant::Production,
            _ => return Err(TokenError::Invalid),
        };
        let u64_at = |i: usize| u64::from_be_bytes(msg[i..i + 8].try_into().expect("8 bytes"));
        // The seller tag sits between the nonce and the id's length in version 2.
        let seller = (head == HEAD_V2).then(|| {
            let mut t = [0u8; SELLER_TAG_LEN];
            t.copy_from_slice(&msg[27..27 + SELLER_TAG_LEN]);
            SellerTag(t)
        });
        let id_len = msg[head - 1] as usize;
        if msg.len() != head + id_len {
            return Err(TokenError::Invalid);
        }
        let auction_id = std::str::from_utf8(&msg[head..])
            .map_err(|_| TokenError::Invalid)?
            .to_string();
        Ok(Claims {
            auction_id,
            tenant,
            seller,
            amount_cents: u64_at(3),
            valid_until_ms: u64_at(11),
        })
    }
}

/// Bytes before the auction id in a version-1 token: version, key id, tenant, amount, expiry,
/// nonce, id length.
const HEAD_V1: usize = 1 + 1 + 1 + 8 + 8 + 8 + 1;
/// Bytes before the auction id in a version-2 token: version 1's, with the seller tag before the
/// id length.
const HEAD_V2: usize = HEAD_V1 + SELLER_TAG_LEN;

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            auction_id: "auc_01HZ8F3K2VN7Q9R4M0XYZ1A2B3".into(),
            tenant: Tenant::Sandbox,
            seller: Some(SellerTag::of("acme-leads")),
            amount_cents: 3465,
            valid_until_ms: 1_800_000_000_000,
        }
    }

    #[test]
    fn key_errors_keep_their_words_and_name_the_operator() {
        let key = |secret: Option<&str>, secret_env: Option<&str>| KeyConfig {
            id: 1,
            secret: secret.map(str::to_string),
            secret_env: secret_env.map(str::to_string),
        };
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 8]);
        for (k, words) in [
            (
                key(None, None),
                "needs `secret` or `secret_env`".to_string(),
            ),
            (
                key(None, Some("GAVEL_TEST_UNSET_BID_KEY")),
                "environment variable GAVEL_TEST_UNSET_BID_KEY is not set".to_string(),
            ),
            (
                key(Some(&short), None),
                format!("secret must be at least {MIN_SECRET_BYTES} bytes, got 8"),
            ),
        ] {
            let e = resolve_secret(&k).unwrap_err();
            assert_eq!(e.to_string(), words);
            assert_eq!(e.cause(), crate::error::Cause::Operator);
        }
        let e = resolve_secret(&key(Some("!!"), None)).unwrap_err();
        assert!(
            e.to_string().starts_with("secret is not valid base64: "),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn round_trip() {
        let k = BidKeys::from_secrets((1, &[7u8; 32]), None);
        let t = k.sign(&claims());
        assert!(t.starts_with("bid_"));
        assert_eq!(k.verify(&t).unwrap(), claims());
    }

    #[test]
    fn two_tokens_for_the_same_claims_differ() {
        let k = BidKeys::from_secrets((1, &[7u8; 32]), None);
        assert_ne!(k.sign(&claims()), k.sign(&claims()));
    }

    #[test]
    fn altered_token_is_rejected() {
        let k = BidKeys::from_secrets((1, &[7u8; 32]), None);
        let t = k.sign(&claims());
        let mut raw = URL_SAFE_NO_PAD.decode(&t[4..]).unwrap();
        raw[5] ^= 1; // flip a bit of the amount
        let forged = format!("bid_{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(k.verify(&forged), Err(TokenError::Invalid));
        assert_eq!(k.verify("bid_garbage"), Err(TokenError::Invalid));
        assert_eq!(k.verify(""), Err(TokenError::Invalid));
    }

    #[test]
    fn other_key_is_rejected_and_rotation_keeps_previous_valid() {
        let old = BidKeys::from_secrets((1, &[7u8; 32]), None);
        let t = old.sign(&claims());
        let stranger = BidKeys::from_secrets((1, &[8u8; 32]), None);
        assert_eq!(stranger.verify(&t), Err(TokenError::Invalid));
        let rotated = BidKeys::from_secrets((2, &[9u8; 32]), Some((1, &[7u8; 32])));
        assert_eq!(rotated.verify(&t).unwrap(), claims());
        let after = BidKeys::from_secrets((3, &[1u8; 32]), Some((2, &[9u8; 32])));
        assert_eq!(after.verify(&t), Err(TokenError::Invalid));
    }

    #[test]
    fn the_seller_is_bound_and_cannot_be_swapped() {
        let k = BidKeys::from_secrets((1, &[7u8; 32]), None);
        let t = k.sign(&claims());
        assert_eq!(
            k.verify(&t).unwrap().seller,
            Some(SellerTag::of("acme-leads"))
        );
        assert_ne!(SellerTag::of("acme-leads"), SellerTag::of("acme-leads2"));
        // Another seller's tag in place of the signed one breaks the signature.
        let mut raw = URL_SAFE_NO_PAD.decode(&t[4..]).unwrap();
        raw[27..27 + SELLER_TAG_LEN].copy_from_slice(&SellerTag::of("other").0);
        let swapped = format!("bid_{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(k.verify(&swapped), Err(TokenError::Invalid));
    }

    /// A token signed before tokens named their seller (version 1) still verifies, with no
    /// seller; an altered one does not.
    #[test]
    fn version_1_tokens_still_verify_without_a_seller() {
        let c = claims();
        let mut buf = vec![VERSION_1, 1, 0];
        buf.extend_from_slice(&c.amount_cents.to_be_bytes());
        buf.extend_from_slice(&c.valid_until_ms.to_be_bytes());
        buf.extend_from_slice(&[5u8; 8]);
        buf.push(c.auction_id.len() as u8);
        buf.extend_from_slice(c.auction_id.as_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]);
        let tag = hmac::sign(&key, &buf);
        let mut signed = buf.clone();
        signed.extend_from_slice(tag.as_ref());
        let k = BidKeys::from_secrets((1, &[7u8; 32]), None);
        let v1 = format!("bid_{}", URL_SAFE_NO_PAD.encode(&signed));
        assert_eq!(
            k.verify(&v1).unwrap(),
            Claims {
                seller: None,
                ..claims()
            }
        );
        signed[4] ^= 1;
        let altered = format!("bid_{}", URL_SAFE_NO_PAD.encode(&signed));
        assert_eq!(k.verify(&altered), Err(TokenError::Invalid));
    }
}
