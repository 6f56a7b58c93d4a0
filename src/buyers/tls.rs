//! TLS client configurations for calls to buyers (and the webhook sender's trust store): reading
//! the PEM files a `[buyers.tls]` table names, and building one `rustls::ClientConfig` per distinct
//! set of files.
//!
//! This module owns what a TLS connection to a buyer trusts and presents: the roots (the public
//! webpki roots compiled into the binary, or the buyer's own `ca_file` instead), the client
//! certificate for mutual TLS, the server name, ALPN `http/1.1`, and session resumption (rustls'
//! default in-memory store, on the shared config, so every core resumes sessions any core began).
//! It does not open connections: [`super::pool`] does, with the config built here.
//!
//! Files are read here, with blocking I/O, only while the config is loaded: at `check-config` and
//! when the registry is built, before any core runs. Nothing here runs on a core.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::config::BuyerTlsConfig;

/// A TLS client configuration with an identity: connections made with different ones are never
/// pooled together, so an mTLS connection never carries another buyer's request.
#[derive(Clone)]
pub struct Client {
    pub config: Arc<ClientConfig>,
    /// Unique per built configuration in this process.
    pub id: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tls::Client").field("id", &self.id).finish()
    }
}

/// What a TLS call to one buyer URL needs: the client configuration and the name the buyer's
/// certificate must carry (also sent as SNI when it is a DNS name).
#[derive(Debug, Clone)]
pub struct TargetTls {
    pub client: Client,
    pub server_name: ServerName<'static>,
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The ring provider, named explicitly: rustls would otherwise pick a process default, which
/// another dependency could change.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The public roots compiled into the binary (webpki-roots): no file, no OS store to read.
pub fn public_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The configuration of a buyer without a `[buyers.tls]` table: public roots, no client
/// certificate. Built once per process and shared by every such buyer.
pub fn default_client() -> Client {
    static DEFAULT: OnceLock<Client> = OnceLock::new();
    DEFAULT
        .get_or_init(|| Client {
            config: finish(public_roots(), None).expect("public roots make a valid config"),
            id: next_id(),
        })
        .clone()
}

use crate::http::tls::read;
pub use crate::http::tls::{read_certs, SettingError};

/// `roots` plus every CA certificate of the PEM file at `path`.
pub fn add_ca_file(
    roots: &mut RootCertStore,
    key: &'static str,
    path: &Path,
) -> Result<(), SettingError> {
    for cert in read_certs(key, path)? {
        roots.add(cert).map_err(|e| SettingError {
            key,
            reason: format!("{}: not a usable CA certificate: {e}", path.display()),
        })?;
    }
    Ok(())
}

fn finish(
    roots: RootCertStore,
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match client_auth {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?,
    };
    // The pool speaks HTTP/1.1 only; saying so lets a server that offers h2 pick the right one.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The files a client configuration is built from: buyers naming the same ones share it.
type FilesKey = (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>);

/// Builds client configurations, once per distinct set of files. One cache serves one load of
/// the config (the registry's buyers, or `check-config`'s check).
#[derive(Default)]
pub struct Cache {
    built: HashMap<FilesKey, Client>,
}

impl Cache {
    /// The client configuration for a buyer's `tls` table (`None`: the default one).
    pub fn client(&mut self, tls: Option<&BuyerTlsConfig>) -> Result<Client, SettingError> {
        let Some(t) = tls else {
            return Ok(default_client());
        };
        let key = (
            t.ca_file.clone(),
            t.client_cert_file.clone(),
            t.client_key_file.clone(),
        );
        if key == (None, None, None) {
            return Ok(default_client());
        }
        if let Some(c) = self.built.get(&key) {
            return Ok(c.clone());
        }
        let client = Client {
            config: build(t)?,
            id: next_id(),
        };
        self.built.insert(key, client.clone());
        Ok(client)
    }
}

/// Reads the files of a buyer's `tls` table and builds its client configuration.
pub fn build(t: &BuyerTlsConfig) -> Result<Arc<ClientConfig>, SettingError> {
    let roots = match &t.ca_file {
        None => public_roots(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            add_ca_file(&mut roots, "tls.ca_file", path)?;
            roots
        }
    };
    let client_auth = match (&t.client_cert_file, &t.client_key_file) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(SettingError {
                key: "tls.client_key_file",
                reason: "client_cert_file is set, so its private key must be too".into(),
            })
        }
        (None, Some(_)) => {
            return Err(SettingError {
                key: "tls.client_cert_file",
                reason: "client_key_file is set, so its certificate must be too".into(),
            })
        }
        (Some(cert), Some(key)) => {
            let chain = read_certs("tls.client_cert_file", cert)?;
            let pem = read("tls.client_key_file", key)?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| SettingError {
                key: "tls.client_key_file",
                reason: format!("{}: no usable PEM private key: {e}", key.display()),
            })?;
            Some((chain, key))
        }
    };
    finish(roots, client_auth).map_err(|reason| SettingError {
        // A key that does not match its certificate is the only failure left at this point.
        key: "tls.client_key_file",
        reason,
    })
}

/// The name a buyer's certificate must carry: `server_name` when set, else the host of the URL
/// under `url_key`.
pub fn server_name(
    host: &str,
    override_name: Option<&str>,
    url_key: &'static str,
) -> Result<ServerName<'static>, SettingError> {
    let (key, name) = match override_name {
        Some(n) => ("tls.server_name", n),
        None => (url_key, host),
    };
    // URLs write IPv6 hosts in brackets; the certificate names the bare address.
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_string()).map_err(|e| SettingError {
        key,
        reason: format!("{name:?} is not a valid TLS server name: {e}"),
    })
}

/// The webhook sender's client configuration: the public roots plus `ca_file`'s CAs, when set.
/// One agent serves every receiver, so a private CA adds to the public roots rather than
/// replacing them.
pub fn webhook_config(ca_file: Option<&Path>) -> Result<Option<Arc<ClientConfig>>, SettingError> {
    let Some(path) = ca_file else {
        return Ok(None);
    };
    let mut roots = public_roots();
    add_ca_file(&mut roots, "ca_file", path)?;
    finish(roots, None)
        .map(Some)
        .map_err(|reason| SettingError {
            key: "ca_file",
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> BuyerTlsConfig {
        BuyerTlsConfig {
            ca_file: ca.map(PathBuf::from),
            client_cert_file: cert.map(PathBuf::from),
            client_key_file: key.map(PathBuf::from),
            server_name: None,
            warm_up: true,
        }
    }

    #[test]
    fn buyers_without_files_share_the_default_config() {
        let mut cache = Cache::default();
        let a = cache.client(None).unwrap();
        let b = cache.client(Some(&tls(None, None, None))).unwrap();
        assert_eq!(a.id, b.id);
        assert!(Arc::ptr_eq(&a.config, &b.config));
        assert_eq!(a.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn each_missing_file_is_named_by_its_key() {
        let mut cache = Cache::default();
        let e = cache
            .client(Some(&tls(Some("/nonexistent/ca.pem"), None, None)))
            .unwrap_err();
        assert_eq!(e.key, "tls.ca_file");
        assert!(e.reason.contains("/nonexistent/ca.pem"), "{e}");
        let e = cache
            .client(Some(&tls(None, Some("/nonexistent/c.pem"), None)))
            .unwrap_err();
        assert_eq!(e.key, "tls.client_key_file");
        let e = cache
            .client(Some(&tls(None, None, Some("/nonexistent/k.pem"))))
            .unwrap_err();
        assert_eq!(e.key, "tls.client_cert_file");
    }

    #[test]
    fn server_names_accept_hosts_and_addresses() {
        assert!(server_name("buyer.example", None, "ping_url").is_ok());
        assert!(server_name("127.0.0.1", None, "ping_url").is_ok());
        assert!(server_name("[::1]", None, "ping_url").is_ok());
        let e = server_name("127.0.0.1", Some("not a name!"), "ping_url").unwrap_err();
        assert_eq!(e.key, "tls.server_name");
    }
}
