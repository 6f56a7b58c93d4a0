//! Outbound HTTP/1.1 to buyers, plain or over TLS: URL targets (and the check that a configured
//! buyer's URLs and TLS files are ones this pool can use) and the per-core keep-alive connection
//! pool.
//!
//! TLS is rustls 0.23 (ring provider) through `tokio-rustls` over monoio's poll-io TCP stream:
//! monoio's `TcpStreamPoll` implements tokio's `AsyncRead`/`AsyncWrite` traits, which is all
//! `tokio-rustls` needs (no tokio runtime runs), and `monoio_compat::hyper::MonoioIo` wraps the
//! TLS stream for hyper exactly as it wraps the plain one, so one hyper client path serves both.
//! `monoio-rustls` would add a second io adapter and its own buffering for no gain here. The
//! client configurations (roots, client certificate, ALPN, session resumption) come from
//! [`super::tls`], built at load; a pooled connection is keyed by origin *and* TLS identity, so a
//! connection made with one buyer's client certificate never carries another buyer's request.
//!
//! Each core owns one [`Pool`]; connections never cross cores, so the pool is a `RefCell`, not a lock.
//! A connection whose request was abandoned (deadline hit mid-response) is never reused: dropping a
//! [`Conn`] aborts its hyper connection task and closes the socket, so a hanging or trickling buyer
//! cannot hold resources past the auction that called it. A connection idle past
//! [`POOL_IDLE_LIMIT`] is closed rather than reused, and a request that a pooled connection never
//! sent (it closed first) goes out once more on a fresh connection. Host names are resolved off
//! the core ([`super::resolve`]), through the pool's own cache, and every address is checked
//! against the server's egress rule ([`super::egress`]) before a connection opens: a name with an
//! address into the host fails the call ([`CallError::Egress`]) without connecting.

use std::cell::RefCell;
use std::collections::HashMap;

use bytes::Bytes;
use futures::future::{AbortHandle, Abortable};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;

use super::tls::{self, SettingError, TargetTls};
use crate::config::{BuyerConfig, BuyerTlsConfig, ConfigError};
use crate::types::words::CallFailure;

/// Idle connections kept per buyer origin per core; more are closed when returned.
pub const MAX_IDLE_PER_ORIGIN: usize = 256;
/// A connection idle longer than this is closed instead of reused: below the 5 s idle timeout
/// common in HTTP servers (Gavel's own `header_read_timeout_ms` default included), so Gavel does
/// not send a request on a connection the other side is closing at that moment.
pub const POOL_IDLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(4);

/// `host:port` of a buyer endpoint: what a name resolves for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses the origin of an `http://` or `https://` URL.
    pub fn parse(url: &str) -> Result<Origin, String> {
        Target::parse(url).map(|t| t.origin)
    }
}

/// Checks what the config module cannot of each `[[buyers]]` entry: that its ping and post URLs
/// are ones this pool can call, and that its TLS files read and make a client configuration. The
/// error names `file` and the key (`buyers[0].ping_url`, `buyers[0].tls.ca_file`), as
/// `Config::validate` does.
pub fn check_config(buyers: &[BuyerConfig], file: &str) -> Result<(), ConfigError> {
    let mut cache = tls::Cache::default();
    for (i, b) in buyers.iter().enumerate() {
        let bad = |e: SettingError| ConfigError::Invalid {
            file: file.to_string(),
            key: format!("buyers[{i}].{}", e.key),
            reason: e.reason,
        };
        // A direct-post buyer has no ping URL (`Config::validate` checked it has a price).
        let ping = match b.ping_url.as_str() {
            "" => None,
            url => {
                Some(Target::for_buyer(url, "ping_url", b.tls.as_ref(), &mut cache).map_err(bad)?)
            }
        };
        let post =
            Target::for_buyer(&b.post_url, "post_url", b.tls.as_ref(), &mut cache).map_err(bad)?;
        if b.tls.is_some() && ping.is_none_or(|p| p.tls.is_none()) && post.tls.is_none() {
            return Err(bad(SettingError {
                key: "tls",
                reason: "set, but neither ping_url nor post_url is https://".into(),
            }));
        }
    }
    Ok(())
}

/// A buyer URL split into what a request needs.
#[derive(Debug, Clone)]
pub struct Target {
    pub origin: Origin,
    /// Path and query sent in the request line.
    pub path: String,
    /// `Host` header value.
    pub host_header: HeaderValue,
    /// How to speak TLS to an `https://` URL; `None` for `http://`.
    pub tls: Option<TargetTls>,
}

impl Target {
    /// Parses an `http://` or `https://` URL; https uses the public roots and the URL's host as
    /// server name (a buyer's own TLS settings go through [`Target::for_buyer`]).
    pub fn parse(url: &str) -> Result<Target, String> {
        let (mut t, https) = Target::parse_url(url)?;
        if https {
            t.tls = Some(TargetTls {
                client: tls::default_client(),
                server_name: tls::server_name(&t.origin.host, None, "url").map_err(|e| e.reason)?,
            });
        }
        Ok(t)
    }

    /// A buyer's URL under `url_key` (`ping_url`/`post_url`) with its `tls` settings; `cache`
    /// shares one client configuration among buyers naming the same files. Reads those files:
    /// call it while the config is loaded, never on a core.
    pub fn for_buyer(
        url: &str,
        url_key: &'static str,
        settings: Option<&BuyerTlsConfig>,
        cache: &mut tls::Cache,
    ) -> Result<Target, SettingError> {
        let (mut t, https) = Target::parse_url(url).map_err(|reason| SettingError {
            key: url_key,
            reason,
        })?;
        if https {
            t.tls = Some(TargetTls {
                client: cache.client(settings)?,
                server_name: tls::server_name(
                    &t.origin.host,
                    settings.and_then(|s| s.server_name.as_deref()),
                    url_key,
                )?,
            });
        }
        Ok(t)
    }

    /// The URL split up, without TLS yet, and whether it is `https://`.
    fn parse_url(url: &str) -> Result<(Target, bool), String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{url:?}: URL must start with http:// or https://")),
        };
        let default_port = if https { 443 } else { 80 };
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?}: URL has no host"))?
            .to_string();
        let port = uri.port_u16().unwrap_or(default_port);
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let authority = uri.authority().expect("host implies authority").as_str();
        let target = Target {
            origin: Origin { host, port },
            path,
            host_header: HeaderValue::from_str(authority).map_err(|e| format!("{url:?}: {e}"))?,
            tls: None,
        };
        Ok((target, https))
    }

    /// What a pooled connection to this target is keyed by: two targets with the same key share
    /// connections.
    pub fn pool_key(&self) -> PoolKey {
        PoolKey {
            origin: self.origin.clone(),
            tls: self
                .tls
                .as_ref()
                .map(|t| (t.client.id, t.server_name.clone())),
        }
    }

    /// True for an `https://` target.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// A pooled connection's identity: where it goes and, for TLS, with which client configuration
/// and server name it was made. Two buyers share connections only when all three agree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    origin: Origin,
    tls: Option<(u64, rustls::pki_types::ServerName<'static>)>,
}

/// Why an outbound call failed. Each maps to a buyer outcome in the auction record.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The TCP connection could not be made: the request never left Gavel.
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The host name gave no address: the request never left Gavel.
    #[error("name resolution failed: {0}")]
    Resolve(#[source] super::resolve::ResolveError),
    /// An address of the host is one the egress rule refuses (loopback, private, Gavel's own
    /// listener, …): nothing was connected, so the request never left Gavel.
    #[error("egress refused: {0}")]
    Egress(super::egress::Refused),
    /// The TLS handshake failed (certificate not trusted, wrong name, client certificate
    /// refused, peer closed mid-handshake): the request never reached the buyer's application.
    /// Also any TLS alert or record error in place of an answer ([`CallError::from_http`]),
    /// which in practice is a TLS 1.3 server refusing the client certificate after the
    /// client's half of the handshake finished.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The request was written (or may have been) but no complete answer came back.
    #[error("http error: {0}")]
    Http(#[source] hyper::Error),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

impl CallError {
    /// An HTTP-level failure, unless TLS caused it: with TLS 1.3 the client's side of the
    /// handshake ends before the server has checked the client certificate, so a buyer refusing
    /// it (or none) answers the first request with an alert instead of a response. That is a
    /// TLS failure, and the buyer's application never saw the request.
    fn from_http(e: hyper::Error) -> CallError {
        match tls_cause(&e) {
            Some(t) => CallError::Tls(std::io::Error::other(t.clone())),
            None => CallError::Http(e),
        }
    }

    /// True when the buyer cannot have seen the request (safe to try another buyer).
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            CallError::Connect(_)
                | CallError::Resolve(_)
                | CallError::Egress(_)
                | CallError::Tls(_)
        )
    }

    /// Why the call never reached the buyer, for `gavel_buyer_call_errors_total`; `None` when it
    /// reached it (or may have).
    pub fn failure(&self) -> Option<CallFailure> {
        match self {
            CallError::Connect(_) => Some(CallFailure::Connect),
            CallError::Resolve(_) => Some(CallFailure::Dns),
            CallError::Egress(_) => Some(CallFailure::Egress),
            CallError::Tls(_) => Some(CallFailure::Tls),
            CallError::Http(_) | CallError::TooLarge(_) => None,
        }
    }

    /// Whether calling again may succeed: a connection or an answer that failed on the way, or a
    /// name that did not resolve now. An address the egress rule refuses, a failed handshake and
    /// an oversized answer fail the same way every time.
    pub fn retryable(&self) -> bool {
        match self {
            CallError::Connect(_) | CallError::Resolve(_) | CallError::Http(_) => true,
            CallError::Egress(_) | CallError::Tls(_) | CallError::TooLarge(_) => false,
        }
    }
}

/// The rustls error somewhere in `e`'s causes, if any. An `io::Error` hides the error it wraps
/// from `source()`, so each one is opened with `get_ref`.
fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(t) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(t);
        }
        next = err.source();
    }
    None
}

/// A buyer's complete answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One keep-alive connection. Dropping it aborts its connection task.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    abort: AbortHandle,
    /// When it was returned to the pool.
    idle_since: std::time::Instant,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

/// Per-core pool of idle connections, keyed by origin and TLS identity.
pub struct Pool {
    idle: RefCell<HashMap<PoolKey, Vec<Conn>>>,
    idle_limit: std::time::Duration,
    dns: super::resolve::Cache,
    /// The addresses connections may open to; `None` (tools such as the load generator, which
    /// call Gavel itself on loopback): any.
    egress: Option<std::sync::Arc<super::egress::Egress>>,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::with_idle_limit(POOL_IDLE_LIMIT)
    }
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    /// A pool that closes connections idle longer than `idle_limit` instead of reusing them.
    pub fn with_idle_limit(idle_limit: std::time::Duration) -> Pool {
        Pool {
            idle: RefCell::new(HashMap::new()),
            idle_limit,
            dns: super::resolve::Cache::default(),
            egress: None,
        }
    }

    /// This pool, opening connections only to addresses `egress` allows (a buyer pool).
    pub fn with_egress(mut self, egress: std::sync::Arc<super::egress::Egress>) -> Pool {
        self.egress = Some(egress);
        self
    }

    /// The egress rule this pool connects by, if any.
    pub fn egress(&self) -> Option<&std::sync::Arc<super::egress::Egress>> {
        self.egress.as_ref()
    }

    /// This pool with `dns` as its name cache (its server's `[dns]` settings and clock).
    pub fn with_dns(mut self, dns: super::resolve::Cache) -> Pool {
        self.dns = dns;
        self
    }

    /// Idle connections currently held, all origins together.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }

    fn take(&self, key: &PoolKey) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        while let Some(conn) = list.pop() {
            if !conn.sender.is_closed() && conn.idle_since.elapsed() <= self.idle_limit {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, key: PoolKey, mut conn: Conn) {
        conn.idle_since = std::time::Instant::now();
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_ORIGIN {
            list.push(conn);
        }
    }

    async fn connect(&self, target: &Target) -> Result<Conn, CallError> {
        use monoio::io::IntoPollIo;
        let addrs = self
            .dns
            .resolve(&target.origin)
            .await
            .map_err(CallError::Resolve)?;
        // After resolution, so a name pointing into the host is refused like a literal address.
        // One refused address refuses the name: a public name has no business resolving into the
        // host or its network (and `localhost` resolving to both ::1 and 127.0.0.1 must not
        // reach a listener on either).
        if let Some(egress) = &self.egress {
            if let Some(refused) = addrs.iter().find_map(|a| egress.check_addr(*a).err()) {
                return Err(CallError::Egress(refused));
            }
        }
        // Each address in turn, in the resolver's order (IPv4 first); the last failure is the answer.
        let mut stream = Err(std::io::Error::other("no address to connect to"));
        for addr in addrs.iter() {
            stream = monoio::net::TcpStream::connect_addr(*addr).await;
            if stream.is_ok() {
                break;
            }
        }
        let stream = stream.map_err(CallError::Connect)?;
        let _ = stream.set_nodelay(true);
        let io = stream.into_poll_io().map_err(CallError::Connect)?;
        match &target.tls {
            None => start(monoio_compat::hyper::MonoioIo::new(io)).await,
            Some(t) => {
                let tls = tokio_rustls::TlsConnector::from(t.client.config.clone())
                    .connect(t.server_name.clone(), io)
                    .await
                    .map_err(CallError::Tls)?;
                start(monoio_compat::hyper::MonoioIo::new(tls)).await
            }
        }
    }

    /// Opens one connection to `target` and leaves it idle in the pool, unless one is already
    /// there: a core calls this at start so its first auction does not pay the connect and TLS
    /// handshake. The caller bounds it with a timeout.
    pub async fn warm_up(&self, target: &Target) -> Result<(), CallError> {
        let key = target.pool_key();
        if self.idle.borrow().get(&key).is_some_and(|l| !l.is_empty()) {
            return Ok(());
        }
        let conn = self.connect(target).await?;
        self.put(key, conn);
        Ok(())
    }

    /// Sends one POST with a JSON body and reads the whole answer (at most `max_body` bytes).
    ///
    /// The caller bounds the whole call with a timeout; if it fires, this future is dropped mid-way
    /// and the connection with it, which is exactly what must happen to a buyer that hangs.
    pub async fn post_json(
        &self,
        target: &Target,
        headers: &[(http::HeaderName, HeaderValue)],
        body: Bytes,
        max_body: usize,
    ) -> Result<Answer, CallError> {
        let mut req = Request::post(target.path.as_str())
            .body(Full::new(body))
            .expect("static request parts are valid");
        req.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in headers {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        self.send(target, req, max_body).await
    }

    /// Sends one request of any method, with an optional content type, and reads the whole
    /// answer (at most `max_body` bytes): the call of a buyer with its own format. Same pooling
    /// and abandonment rules as [`Pool::post_json`].
    pub async fn call(
        &self,
        target: &Target,
        method: http::Method,
        content_type: Option<HeaderValue>,
        headers: &[(http::HeaderName, HeaderValue)],
        body: Bytes,
        max_body: usize,
    ) -> Result<Answer, CallError> {
        let mut req = Request::builder()
            .method(method)
            .uri(target.path.as_str())
            .body(Full::new(body))
            .expect("a target's path and a method are valid request parts");
        if let Some(ct) = content_type {
            req.headers_mut().insert(http::header::CONTENT_TYPE, ct);
        }
        for (name, value) in headers {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        self.send(target, req, max_body).await
    }

    /// Sends one GET and reads the whole answer (at most `max_body` bytes). Used by the load
    /// generator for `/healthz` and Gavel's latency report; same pooling and abandonment rules as [`Pool::post_json`].
    pub async fn get(
        &self,
        target: &Target,
        headers: &[(http::HeaderName, HeaderValue)],
        max_body: usize,
    ) -> Result<Answer, CallError> {
        let mut req = Request::get(target.path.as_str())
            .body(Full::new(Bytes::new()))
            .expect("static request parts are valid");
        for (name, value) in headers {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        self.send(target, req, max_body).await
    }

    /// Sends `req` on a pooled (or new) connection to `target`, reads the whole answer, and
    /// returns the connection to the pool unless the server asked to close it.
    async fn send(
        &self,
        target: &Target,
        mut req: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Answer, CallError> {
        // A pooled connection may still be finishing its previous exchange; `ready` waits for that,
        // and a connection the peer closed meanwhile is replaced by a fresh one.
        let key = target.pool_key();
        let pooled = match self.take(&key) {
            Some(mut c) => c.sender.ready().await.is_ok().then_some(c),
            None => None,
        };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect(target).await?,
        };
        req.headers_mut()
            .insert(http::header::HOST, target.host_header.clone());
        let resp = match conn.sender.try_send_request(req).await {
            Ok(resp) => resp,
            Err(mut e) => match (reused, e.take_message()) {
                // The pooled connection closed before the request went out (hyper hands the
                // request back only then): nothing reached the peer, so a fresh connection may
                // carry it.
                (true, Some(req)) => {
                    conn = self.connect(target).await?;
                    conn.sender
                        .send_request(req)
                        .await
                        .map_err(CallError::from_http)?
                }
                _ => return Err(CallError::from_http(e.into_error())),
            },
        };
        let (parts, body) = resp.into_parts();
        let collected = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(he) => CallError::from_http(*he),
                Err(_) => CallError::TooLarge(max_body),
            })?;
        let body = collected.to_bytes();
        debug_assert!(
            body.len() <= max_body,
            "a buyer answer read past its size limit"
        );
        let keep = !parts
            .headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if keep {
            self.put(key, conn);
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// Starts hyper's HTTP/1.1 client on `io` (plain or TLS) and spawns its connection task, which
/// the returned [`Conn`] aborts when dropped.
async fn start<T>(io: T) -> Result<Conn, CallError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(CallError::Http)?;
    let (abort, reg) = AbortHandle::new_pair();
    monoio::spawn(Abortable::new(conn, reg));
    Ok(Conn {
        sender,
        abort,
        idle_since: std::time::Instant::now(),
    })
}

#[cfg(test)]
mod tests {
    // The fake server is a plain thread; sleeping there is how it waits.
    #![allow(clippy::disallowed_methods)]

    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// A keep-alive HTTP/1.1 server answering `ok` to every request; counts accepted connections.
    fn server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut pending = Vec::new();
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get_twice(pool: Pool, pause: Duration) -> usize {
        let (addr, accepted) = server();
        let target = Target::parse(&format!("http://{addr}/x")).unwrap();
        crate::runtime::block_on(crate::config::Driver::Legacy, 64, || async move {
            for i in 0..2 {
                if i == 1 {
                    monoio::time::sleep(pause).await;
                }
                let a = pool.get(&target, &[], 1024).await.expect("answer");
                assert_eq!(&a.body[..], b"ok");
            }
        })
        .unwrap();
        accepted.load(Ordering::SeqCst)
    }

    #[test]
    fn the_pool_key_holds_the_tls_identity() {
        let mut cache = tls::Cache::default();
        let named = |name: Option<&str>| BuyerTlsConfig {
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            server_name: name.map(str::to_string),
            warm_up: true,
        };
        let url = "https://127.0.0.1:8443/ping";
        let key = |s: BuyerTlsConfig, cache: &mut tls::Cache| {
            Target::for_buyer(url, "ping_url", Some(&s), cache)
                .unwrap()
                .pool_key()
        };
        // The same settings share connections; another server name does not.
        assert_eq!(key(named(None), &mut cache), key(named(None), &mut cache));
        assert_ne!(
            key(named(None), &mut cache),
            key(named(Some("buyer.test")), &mut cache)
        );
        // Plain HTTP to the same host and port is another connection too.
        let plain = Target::parse("http://127.0.0.1:8443/ping").unwrap();
        assert_ne!(plain.pool_key(), key(named(None), &mut cache));
        let https = Target::parse("https://buyer.example/x").unwrap();
        assert_eq!(https.origin.port, 443);
        assert!(https.is_tls());
    }

    #[test]
    fn keep_alive_reuses_a_fresh_connection() {
        assert_eq!(get_twice(Pool::new(), Duration::from_millis(10)), 1);
    }

    #[test]
    fn a_connection_idle_past_the_limit_is_not_reused() {
        let pool = Pool::with_idle_limit(Duration::from_millis(50));
        assert_eq!(get_twice(pool, Duration::from_millis(150)), 2);
    }
}
