//! TLS on Gavel's own listener (`[server.tls]`): the rustls server configuration built from the
//! certificate and key files, and the PEM reading every TLS setting of Gavel shares (the buyers'
//! and the webhook sender's trust stores and client certificates too, in `buyers::tls`).
//!
//! Files are read with blocking I/O, only while a config is loaded: at start, at `check-config`,
//! and on SIGHUP on the main thread. Nothing here runs on a core; the handshake itself runs in
//! [`super::serve_connection`] with the configuration built here.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Config, ConfigError, ServerTlsConfig};

/// A config error: the key it is about, relative to its section (`tls.ca_file` under
/// `buyers[i]`, `ca_file` under `webhook_delivery`, `tls.key_file` under `server`), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub key: &'static str,
    pub reason: String,
}

impl std::fmt::Display for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

pub fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, SettingError> {
    // Config loading, before any core runs: the one place blocking file reads belong.
    std::fs::read(path).map_err(|e| SettingError {
        key,
        reason: format!("cannot read {}: {e}", path.display()),
    })
}

/// Every certificate in a PEM file; a file without one is an error, not an empty trust store.
pub fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SettingError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SettingError {
            key,
            reason: format!("{}: bad PEM: {e}", path.display()),
        })?;
    if certs.is_empty() {
        return Err(SettingError {
            key,
            reason: format!("{}: no PEM certificate in the file", path.display()),
        });
    }
    Ok(certs)
}

/// The server configuration for `[server.tls]`: TLS 1.2 and 1.3, ALPN `http/1.1`, no client
/// certificates. Refused, naming `tls.cert_file` or `tls.key_file`, when a file cannot be read,
/// holds no PEM certificate or key, or the key is not the certificate's.
pub fn server_config(tls: &ServerTlsConfig) -> Result<Arc<rustls::ServerConfig>, SettingError> {
    let chain = read_certs("tls.cert_file", &tls.cert_file)?;
    let pem = read("tls.key_file", &tls.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| SettingError {
        key: "tls.key_file",
        reason: format!("{}: no usable PEM private key: {e}", tls.key_file.display()),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| SettingError {
        key: "tls.cert_file",
        reason: e.to_string(),
    })?
    .with_no_client_auth()
    // rustls checks here that the key's public half is the leaf certificate's.
    .with_single_cert(chain, key)
    .map_err(|e| SettingError {
        key: "tls.key_file",
        reason: format!(
            "{} does not fit the certificate of {}: {e}",
            tls.key_file.display(),
            tls.cert_file.display()
        ),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `[server.tls]` checked as `gavel serve` would load it: both files readable and fitting.
pub fn check_config(config: &Config, file: &str) -> Result<(), ConfigError> {
    match &config.server.tls {
        None => Ok(()),
        Some(tls) => server_config(tls)
            .map(|_| ())
            .map_err(|e| ConfigError::Invalid {
                file: file.to_string(),
                key: format!("server.{}", e.key),
                reason: e.reason,
            }),
    }
}
