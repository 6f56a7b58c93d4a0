//! Sealing buyer secrets at rest: the values of auth headers and format headers in the durable
//! buyer table ([`super::table`]) are stored encrypted and authenticated (ChaCha20-Poly1305 from
//! `ring::aead`, a random 96-bit nonce per value), never as plaintext.
//!
//! The key is 32 bytes: from the environment variable `[store] seal_key_env` names (base64 or
//! hex), else one Gavel generates on first start and keeps in the store's meta tree beside the
//! rows it seals (the exchange loads it; this module only uses it). Each sealed value is bound to
//! its buyer and field (the additional authenticated data is `<tenant>/<id>/<field>`), so a value
//! copied into another row or field does not open.
//!
//! What sealing protects, and what not: a copy of the store's files (a backup, a disk image, a
//! `sled` dump) no longer shows buyers' API keys, unless the key travelled with it, which it does
//! when it was generated (it lives in the same store) and does not when it comes from
//! `seal_key_env`. It does not protect against someone who can read the running process's memory
//! or environment, nor against the config file, which holds its own buyers' secrets as the
//! operator wrote them (`value_env` keeps them out of it).
//!
//! This module owns the cipher and the key's checks; it does not decide which fields are secret
//! ([`super::table`] does) nor where a generated key is kept (the exchange does).

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::{ConfigError, StoreConfig};

/// Length of a sealing key, in bytes (ChaCha20-Poly1305's).
pub const SEAL_KEY_BYTES: usize = 32;

/// The cipher buyer secrets are sealed with. `Send + Sync`: one is shared by every thread that
/// writes or reads the buyer table.
pub struct SealKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.write_str("SealKey")
    }
}

impl SealKey {
    /// A key from its 32 bytes.
    pub fn new(bytes: &[u8; SEAL_KEY_BYTES]) -> SealKey {
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("32 bytes is a ChaCha20 key");
        SealKey {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// A fresh random key (tests; the server keeps its generated key in the store).
    pub fn random() -> SealKey {
        let mut bytes = [0u8; SEAL_KEY_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("system RNG works");
        SealKey::new(&bytes)
    }

    /// `plaintext` sealed under `aad` (what it is bound to): base64 of nonce, ciphertext and tag.
    pub fn seal(&self, aad: &str, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("system RNG works");
        let mut out = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut out,
            )
            .expect("a buyer secret is far below ChaCha20-Poly1305's length limit");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&out);
        base64::engine::general_purpose::STANDARD.encode(sealed)
    }

    /// The plaintext of `sealed` (from [`SealKey::seal`] under the same `aad`); an error when it was
    /// sealed with another key, for another field, or changed since.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<String, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(SealError::NotBase64)?;
        if bytes.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(SealError::TooShort);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("split at the nonce length");
        let mut buf = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| SealError::WrongKey)?;
        String::from_utf8(plain.to_vec()).map_err(SealError::NotUtf8)
    }
}

/// Why a sealed value or a sealing key could not be used. A value that does not open is the
/// store's (or a changed key's) fault; a key from the environment that is missing or malformed is
/// the operator's ([`SealError::cause`]).
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("a sealed value is not base64")]
    NotBase64(#[source] base64::DecodeError),
    #[error("a sealed value is too short")]
    TooShort,
    #[error(
        "a sealed value does not open with this key (another store's key, or a changed \
         [store] seal_key_env?)"
    )]
    WrongKey,
    #[error("a sealed value is not UTF-8")]
    NotUtf8(#[source] std::string::FromUtf8Error),
    #[error("environment variable {0} is not set (or not UTF-8)")]
    EnvUnset(String, #[source] std::env::VarError),
    #[error("environment variable {0} is neither hex nor base64")]
    EnvEncoding(String),
    #[error("environment variable {name} must hold {SEAL_KEY_BYTES} bytes, got {got}")]
    EnvLength { name: String, got: usize },
}

impl SealError {
    /// Whose fault it is: the operator's for a key taken from the environment, Gavel's own (its
    /// store) for a stored value that does not open.
    pub fn cause(&self) -> crate::error::Cause {
        match self {
            SealError::EnvUnset(..) | SealError::EnvEncoding(_) | SealError::EnvLength { .. } => {
                crate::error::Cause::Operator
            }
            SealError::NotBase64(_)
            | SealError::TooShort
            | SealError::WrongKey
            | SealError::NotUtf8(_) => crate::error::Cause::Internal,
        }
    }
}

/// The 32-byte key in environment variable `name`, written as base64 or hex.
pub fn key_from_env(name: &str) -> Result<[u8; SEAL_KEY_BYTES], SealError> {
    let text = std::env::var(name).map_err(|e| SealError::EnvUnset(name.to_string(), e))?;
    let text = text.trim();
    let bytes = hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .ok_or_else(|| SealError::EnvEncoding(name.to_string()))?;
    <[u8; SEAL_KEY_BYTES]>::try_from(bytes.as_slice()).map_err(|_| SealError::EnvLength {
        name: name.to_string(),
        got: bytes.len(),
    })
}

/// Checks what the config module cannot of `[store] seal_key_env`: that the variable is set and
/// holds a key. The error names `file` and the key.
pub fn check_config(store: &StoreConfig, file: &str) -> Result<(), ConfigError> {
    let Some(name) = &store.seal_key_env else {
        return Ok(());
    };
    key_from_env(name)
        .map(|_| ())
        .map_err(|e| ConfigError::Invalid {
            file: file.to_string(),
            key: "store.seal_key_env".into(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_binding() {
        let key = SealKey::random();
        let sealed = key.seal("sandbox/acme/auth_header.value", "Bearer s3cret");
        assert!(!sealed.contains("s3cret"));
        assert_eq!(
            key.open("sandbox/acme/auth_header.value", &sealed).unwrap(),
            "Bearer s3cret"
        );
        // A fresh nonce per value: the same secret seals differently each time.
        assert_ne!(
            sealed,
            key.seal("sandbox/acme/auth_header.value", "Bearer s3cret")
        );
        assert!(key
            .open("sandbox/other/auth_header.value", &sealed)
            .is_err());
        assert!(SealKey::random()
            .open("sandbox/acme/auth_header.value", &sealed)
            .is_err());
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let changed = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert!(key
            .open("sandbox/acme/auth_header.value", &changed)
            .is_err());
        assert!(key.open("x", "not base64!").is_err());
    }
}
