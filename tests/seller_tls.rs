//! TLS on the seller-facing listener (`[server.tls]`), through the real server on a real socket:
//! a client trusting the private CA pings and reads health over https; a client trusting another
//! CA is refused at the handshake; a reload with a new certificate reaches new handshakes while a
//! keep-alive connection opened before keeps working on its old session; a key that is not the
//! certificate's is refused at load, naming `server.tls.key_file`.

// Blocking sockets on the test thread; no event loop runs here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use gavel::config::{Config, ServerTlsConfig};
use gavel_testkit::pki::{Ca, Leaf};
use rustls::pki_types::{CertificateDer, ServerName};

/// A blocking TLS client connection to Gavel, trusting exactly `ca`.
struct Client {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

fn client_config(
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

impl Client {
    /// Connects and completes the handshake, or says why it failed.
    fn connect(addr: SocketAddr, ca: &Ca) -> Result<Client, std::io::Error> {
        Client::connect_with(addr, ca, rustls::DEFAULT_VERSIONS)
    }

    /// [`Client::connect`] offering only `versions`.
    fn connect_with(
        addr: SocketAddr,
        ca: &Ca,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Client, std::io::Error> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::try_from("gavel.test").unwrap();
        let conn = rustls::ClientConnection::new(client_config(ca, versions), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Client { tls })
    }

    /// The leaf certificate the server presented.
    fn server_cert(&self) -> CertificateDer<'static> {
        self.tls.conn.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }

    fn alpn(&self) -> Option<Vec<u8>> {
        self.tls.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// One keep-alive request; returns the status and body.
    fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            self.tls,
            "{method} {path} HTTP/1.1\r\nHost: gavel.test\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        self.tls.flush().unwrap();
        let mut reader = BufReader::new(&mut self.tls);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut len = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                if n.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }
}

fn write_pair(dir: &Path, name: &str, leaf: &Leaf) -> ServerTlsConfig {
    let (cert_file, key_file) = leaf.write(dir, name);
    ServerTlsConfig {
        cert_file,
        key_file,
    }
}

fn start(tls: ServerTlsConfig) -> Env {
    Env::start(
        drivers()[0],
        vec![fixed("x", 30.0)],
        |cfg: &mut Config, _| {
            cfg.server.tls = Some(tls);
        },
    )
}

#[test]
fn sellers_reach_the_api_over_tls_and_a_reload_changes_new_handshakes_only() {
    let dir = temp_dir("seller-tls");
    let ca = Ca::new("gavel test CA");
    let first = ca.server(&["gavel.test"]);
    let mut env = start(write_pair(&dir, "first", &first));
    let addr = env.server().addr;

    let mut old = Client::connect(addr, &ca).expect("a client trusting the CA connects");
    assert_eq!(old.server_cert(), first.cert.der().clone());
    assert_eq!(old.alpn().as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(old.request("GET", "/healthz", None, "").0, 200);
    let (status, body) = old.request("POST", "/v1/ping", Some(TOKEN), &ping_body().to_string());
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"won\""), "{body}");
    // Both TLS 1.3 (the default above) and TLS 1.2 are spoken.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut c = Client::connect_with(addr, &ca, &[version]).unwrap();
        assert_eq!(c.tls.conn.protocol_version(), Some(version.version));
        assert_eq!(c.request("GET", "/healthz", None, "").0, 200);
    }

    // Plain HTTP on the TLS port gets no answer it could read as HTTP.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/1.1 200"), "plain HTTP was served");

    // A client that trusts another CA is refused at the handshake.
    let stranger = Ca::new("some other CA");
    let refused = Client::connect(addr, &stranger).err().expect("refused");
    assert!(
        refused.to_string().to_lowercase().contains("certificate"),
        "{refused}"
    );

    // New files, then the reload SIGHUP runs: new handshakes get the new certificate, the
    // keep-alive connection opened before keeps its session and is still served.
    let second = ca.server(&["gavel.test"]);
    let next = write_pair(&dir, "second", &second);
    let mut cfg = env.config.clone();
    cfg.server.tls = Some(next);
    env.server().reload(&cfg).expect("reload applies");
    env.config = cfg;
    let fresh = Client::connect(addr, &ca).unwrap();
    assert_eq!(fresh.server_cert(), second.cert.der().clone());
    assert_ne!(second.cert.der(), first.cert.der());
    assert_eq!(old.request("GET", "/healthz", None, "").0, 200);
    assert_eq!(old.server_cert(), first.cert.der().clone());

    // A reload whose key is not the certificate's changes nothing and says why.
    let mut bad = env.config.clone();
    let other = ca.server(&["gavel.test"]);
    let (_, other_key) = other.write(&dir, "other");
    bad.server.tls.as_mut().unwrap().key_file = other_key;
    let e = env.server().reload(&bad).unwrap_err();
    assert!(e.contains("server.tls.key_file"), "{e}");
    let again = Client::connect(addr, &ca).unwrap();
    assert_eq!(again.server_cert(), second.cert.der().clone());
    drop(env);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreadable_or_mismatched_files_are_refused_at_load_naming_the_key() {
    let dir = temp_dir("seller-tls-load");
    let ca = Ca::new("gavel test CA");
    let leaf = ca.server(&["gavel.test"]);
    let good = write_pair(&dir, "good", &leaf);
    let other = write_pair(&dir, "other", &ca.server(&["gavel.test"]));
    let error = |tls: ServerTlsConfig| {
        let mut cfg = base_config(drivers()[0]);
        cfg.server.tls = Some(tls);
        gavel::cli::check_config(&cfg, "test.toml")
            .unwrap_err()
            .to_string()
    };
    let e = error(ServerTlsConfig {
        key_file: other.key_file.clone(),
        ..good.clone()
    });
    assert!(
        e.contains("server.tls.key_file") && e.contains("does not fit"),
        "{e}"
    );
    let e = error(ServerTlsConfig {
        cert_file: dir.join("missing.crt"),
        ..good.clone()
    });
    assert!(
        e.contains("server.tls.cert_file") && e.contains("cannot read"),
        "{e}"
    );
    let e = error(ServerTlsConfig {
        key_file: good.cert_file.clone(),
        ..good.clone()
    });
    assert!(
        e.contains("server.tls.key_file") && e.contains("private key"),
        "{e}"
    );
    let e = error(ServerTlsConfig {
        cert_file: good.key_file.clone(),
        ..good.clone()
    });
    assert!(e.contains("server.tls.cert_file"), "{e}");
    let mut cfg = base_config(drivers()[0]);
    cfg.server.tls = Some(good);
    gavel::cli::check_config(&cfg, "test.toml").expect("a fitting pair loads");
    let _ = std::fs::remove_dir_all(&dir);
}
