//! TLS for a run: the CA the generator trusts (`--ca-file`, or the one `--server-tls` /
//! `--buyers-tls` generate), the client configuration of the generator cores, `https` targets
//! for the blocking report helpers, and the private PKI a spawned server and TLS buyers use.
//!
//! The CA is chosen once, before the run starts ([`trust`]), and read by every client made after;
//! nothing here runs while requests are timed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use gavel::buyers::pool::Target;
use gavel::config::{BuyerTlsConfig, ServerTlsConfig};
use gavel_testkit::pki::Ca;

/// The CA file https targets of this run are checked against; unset: the public roots.
static CA_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Makes `ca_file` the CA every https client of this run trusts (once; later calls are ignored).
pub fn trust(ca_file: &Path) {
    let _ = CA_FILE.set(ca_file.to_path_buf());
}

/// The generator cores' client configuration for an `https` base URL: the run's CA (or the
/// public roots), TLS 1.2/1.3, ALPN `http/1.1`. `None` for `http`.
pub fn client_config(base_url: &str) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    if !base_url.starts_with("https://") {
        return Ok(None);
    }
    let roots = match CA_FILE.get() {
        None => gavel::buyers::tls::public_roots(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            gavel::buyers::tls::add_ca_file(&mut roots, "ca_file", ca)
                .map_err(|e| e.to_string())?;
            roots
        }
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// A pool target for `url`, trusting the run's CA when it is https (the report and token
/// helpers, which use Gavel's own pool).
pub fn target(url: &str) -> Result<Target, String> {
    let settings = CA_FILE.get().map(|ca| BuyerTlsConfig {
        ca_file: Some(ca.clone()),
        client_cert_file: None,
        client_key_file: None,
        server_name: None,
        warm_up: false,
    });
    Target::for_buyer(
        url,
        "url",
        settings.as_ref(),
        &mut gavel::buyers::tls::Cache::default(),
    )
    .map_err(|e| e.to_string())
}

/// A private CA and one server certificate for `127.0.0.1` and `localhost`, as PEM files in a
/// directory of their own: what a spawned server (`--server-tls`) and TLS buyers (`--buyers-tls`)
/// present, and what the run trusts.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_file: PathBuf,
    pub server: ServerTlsConfig,
}

impl Pki {
    /// Generates the CA and the certificate into `dir` (created), with the test kit's PKI.
    #[allow(clippy::disallowed_methods)] // Before the run, on the main thread: no event loop here.
    pub fn generate(dir: &Path) -> Result<Pki, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let ca = Ca::new("gavel-load CA");
        let (cert_file, key_file) = ca.server(&["127.0.0.1", "localhost"]).write(dir, "server");
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_file: ca.write(dir, "ca.pem"),
            server: ServerTlsConfig {
                cert_file,
                key_file,
            },
        })
    }

    /// The rustls server configuration of the certificate (for the TLS buyers).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        gavel::http::tls::server_config(&self.server).map_err(|e| e.to_string())
    }

    /// How Gavel trusts the TLS buyers: this CA only.
    pub fn buyer_tls(&self) -> BuyerTlsConfig {
        BuyerTlsConfig {
            ca_file: Some(self.ca_file.clone()),
            client_cert_file: None,
            client_key_file: None,
            server_name: None,
            warm_up: true,
        }
    }
}
