//! Outbound HTTP/1.1 to buyers: URL targets (and the check that a configured buyer's URLs are
//! ones this pool can call) and the per-core keep-alive connection pool.
//!
//! Each core owns one [`Pool`]; connections never cross cores, so the pool is a `RefCell`, not a lock.
//! A connection whose request was abandoned (deadline hit mid-response) is never reused: dropping a
//! [`Conn`] aborts its hyper connection task and closes the socket, so a hanging or trickling buyer
//! cannot hold resources past the auction that called it. A connection idle past
//! [`POOL_IDLE_LIMIT`] is closed rather than reused, and a request that a pooled connection never
//! sent (it closed first) goes out once more on a fresh connection. Host names are resolved off
//! the core ([`super::resolve`]), through the pool's own cache.

use std::cell::RefCell;
use std::collections::HashMap;

use bytes::Bytes;
use futures::future::{AbortHandle, Abortable};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;

use crate::config::{BuyerConfig, ConfigError};

/// Idle connections kept per buyer origin per core; more are closed when returned.
pub const MAX_IDLE_PER_ORIGIN: usize = 256;
/// A connection idle longer than this is closed instead of reused: below the 5 s idle timeout
/// common in HTTP servers (Gavel's own `header_read_timeout_ms` default included), so Gavel does
/// not send a request on a connection the other side is closing at that moment.
pub const POOL_IDLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(4);

/// `host:port` of a plain-HTTP buyer endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses the origin of an `http://` URL.
    pub fn parse(url: &str) -> Result<Origin, String> {
        Target::parse(url).map(|t| t.origin)
    }
}

/// Checks what the config module cannot of each `[[buyers]]` entry: that its ping and post URLs
/// are ones this pool can call. The error names `file` and the key (`buyers[0].ping_url`), as
/// `Config::validate` does.
pub fn check_config(buyers: &[BuyerConfig], file: &str) -> Result<(), ConfigError> {
    for (i, b) in buyers.iter().enumerate() {
        for (k, u) in [("ping_url", &b.ping_url), ("post_url", &b.post_url)] {
            // A direct-post buyer has no ping URL (`Config::validate` checked it has a price).
            if k == "ping_url" && u.is_empty() {
                continue;
            }
            Origin::parse(u).map_err(|reason| ConfigError::Invalid {
                file: file.to_string(),
                key: format!("buyers[{i}].{k}"),
                reason,
            })?;
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
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{url:?}: https buyer endpoints are not supported yet; terminate TLS in a local proxy"
                ))
            }
            _ => return Err(format!("{url:?}: URL must start with http://")),
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?}: URL has no host"))?
            .to_string();
        let port = uri.port_u16().unwrap_or(80);
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let authority = uri.authority().expect("host implies authority").as_str();
        Ok(Target {
            origin: Origin { host, port },
            path,
            host_header: HeaderValue::from_str(authority).map_err(|e| format!("{url:?}: {e}"))?,
        })
    }
}

/// Why an outbound call failed. Each maps to a buyer outcome in the auction record.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The TCP connection could not be made: the request never left Gavel.
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// The host name gave no address: the request never left Gavel.
    #[error("name resolution failed: {0}")]
    Resolve(super::resolve::ResolveError),
    /// The request was written (or may have been) but no complete answer came back.
    #[error("http error: {0}")]
    Http(hyper::Error),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

impl CallError {
    /// True when the buyer cannot have seen the request (safe to try another buyer).
    pub fn never_sent(&self) -> bool {
        matches!(self, CallError::Connect(_) | CallError::Resolve(_))
    }
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

/// Per-core pool of idle connections, keyed by origin.
pub struct Pool {
    idle: RefCell<HashMap<Origin, Vec<Conn>>>,
    idle_limit: std::time::Duration,
    dns: super::resolve::Cache,
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
        }
    }

    /// Idle connections currently held, all origins together.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }

    fn take(&self, origin: &Origin) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(origin)?;
        while let Some(conn) = list.pop() {
            if !conn.sender.is_closed() && conn.idle_since.elapsed() <= self.idle_limit {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, origin: &Origin, mut conn: Conn) {
        conn.idle_since = std::time::Instant::now();
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(origin.clone()).or_default();
        if list.len() < MAX_IDLE_PER_ORIGIN {
            list.push(conn);
        }
    }

    async fn connect(&self, origin: &Origin) -> Result<Conn, CallError> {
        use monoio::io::IntoPollIo;
        let addrs = self.dns.resolve(origin).await.map_err(CallError::Resolve)?;
        // Each address in turn, as getaddrinfo ordered them; the last failure is the answer.
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
        let (sender, conn) =
            hyper::client::conn::http1::handshake(monoio_compat::hyper::MonoioIo::new(io))
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
        let pooled = match self.take(&target.origin) {
            Some(mut c) => c.sender.ready().await.is_ok().then_some(c),
            None => None,
        };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect(&target.origin).await?,
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
                    conn = self.connect(&target.origin).await?;
                    conn.sender
                        .send_request(req)
                        .await
                        .map_err(CallError::Http)?
                }
                _ => return Err(CallError::Http(e.into_error())),
            },
        };
        let (parts, body) = resp.into_parts();
        let collected = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(he) => CallError::Http(*he),
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
            self.put(&target.origin, conn);
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
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
    fn keep_alive_reuses_a_fresh_connection() {
        assert_eq!(get_twice(Pool::new(), Duration::from_millis(10)), 1);
    }

    #[test]
    fn a_connection_idle_past_the_limit_is_not_reused() {
        let pool = Pool::with_idle_limit(Duration::from_millis(50));
        assert_eq!(get_twice(pool, Duration::from_millis(150)), 2);
    }
}
