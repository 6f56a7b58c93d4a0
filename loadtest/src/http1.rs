//! The generator cores' HTTP/1.1 client: keep-alive connections to one origin, one request at a
//! time per connection, read with monoio's own (completion-based) I/O.
//!
//! It exists so that the generator costs little CPU per request (issue #13: on a shared machine the
//! harness must not be what is measured). Compared with `gavel::buyers::pool::Pool` (hyper, which
//! Gavel itself uses to call buyers) it has no connection task, no channel between the caller and
//! that task and no header map per answer: a request is one write of a prepared head and body, an
//! answer is read into the connection's reused buffer and parsed in place with `httparse`. What it
//! supports is what Gavel answers: `Content-Length` or chunked bodies, keep-alive unless the
//! answer says `Connection: close`. The blocking helpers in [`crate::client`] and the reporting
//! threads still use the pool.
//!
//! Over `https` the same client speaks TLS (rustls through `tokio-rustls` on monoio's poll-io
//! stream, as Gavel's own listener and buyer pool do), trusting the CA the run names: the plain
//! path keeps its completion I/O, the TLS path reads and writes through the TLS stream.

use std::cell::RefCell;
use std::io::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gavel::buyers::pool::Origin;
use gavel::buyers::resolve::Cache;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, IntoPollIo};
use monoio::net::TcpStream;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A pooled connection idle longer than this is closed instead of reused, well inside the idle
/// timeout of Gavel's listener (60 s by default), so a request never meets a connection the
/// server is closing.
const IDLE_LIMIT: Duration = Duration::from_secs(20);
/// Most header bytes of an answer.
const MAX_HEAD: usize = 16 * 1024;
/// Most headers of an answer.
const MAX_HEADERS: usize = 32;

/// Why a call got no answer. Named like the pool's errors, so the report's kinds do not change.
#[derive(Debug)]
pub enum CallError {
    Resolve(String),
    Connect(std::io::Error),
    Http(String),
    TooLarge(usize),
}

impl CallError {
    /// The transport error kind in the report.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Connect(_) => "connect",
            CallError::Resolve(_) => "dns",
            CallError::Http(_) => "http",
            CallError::TooLarge(_) => "too_large",
        }
    }
}

/// An answer: its status and whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: http::StatusCode,
    pub body: Bytes,
}

/// A connection's byte stream: plain TCP with completion I/O, or TLS over the poll-io stream.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<<TcpStream as IntoPollIo>::PollIo>>),
}

struct Conn {
    stream: Stream,
    /// Read buffer, reused from answer to answer.
    buf: Vec<u8>,
    /// Write buffer, reused from request to request.
    out: Vec<u8>,
    idle_since: Instant,
}

/// Keep-alive connections of one generator core to one origin.
pub struct Client {
    origin: Origin,
    /// Names resolve as the pool resolves them: off the core, cached, literal IPs at once.
    dns: Cache,
    /// `host: …\r\n`, in every request head.
    host_line: Vec<u8>,
    /// The caller's headers (the bearer token), in the heads of calls that ask for them.
    auth_lines: Vec<u8>,
    idle: RefCell<Vec<Conn>>,
    /// For an `https` origin: the client configuration and the name its certificate must carry.
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl Client {
    /// A client for `origin`; `headers` go into the calls made with `auth`. With `tls`, every
    /// connection is TLS with that configuration, checking the origin's host name.
    pub fn new(
        origin: Origin,
        host_header: &str,
        headers: &[(&str, &str)],
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Client {
        let mut auth_lines = Vec::new();
        for (name, value) in headers {
            let _ = write!(auth_lines, "{name}: {value}\r\n");
        }
        let tls = tls.map(|config| {
            let host = origin.host.trim_start_matches('[').trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .expect("a URL host is a DNS name or an IP address");
            (config, name)
        });
        Client {
            tls,
            origin,
            dns: Cache::default(),
            host_line: format!("host: {host_header}\r\n").into_bytes(),
            auth_lines,
            idle: RefCell::new(Vec::new()),
        }
    }

    fn take(&self) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        while let Some(c) = idle.pop() {
            if c.idle_since.elapsed() < IDLE_LIMIT {
                return Some(c);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, CallError> {
        let addrs = self
            .dns
            .resolve(&self.origin)
            .await
            .map_err(|e| CallError::Resolve(e.to_string()))?;
        let mut last = std::io::Error::other("no address to connect to");
        for addr in addrs.iter() {
            match TcpStream::connect_addr(*addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let stream = match &self.tls {
                        None => Stream::Plain(stream),
                        Some((config, name)) => {
                            let io = stream.into_poll_io().map_err(CallError::Connect)?;
                            let tls = tokio_rustls::TlsConnector::from(config.clone())
                                .connect(name.clone(), io)
                                .await
                                .map_err(|e| CallError::Http(format!("TLS handshake: {e}")))?;
                            Stream::Tls(Box::new(tls))
                        }
                    };
                    return Ok(Conn {
                        stream,
                        buf: Vec::with_capacity(4096),
                        out: Vec::with_capacity(2048),
                        idle_since: Instant::now(),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(CallError::Connect(last))
    }

    /// `POST path` with a JSON body, or `GET path` (`get`, body ignored); reads the whole answer (at most
    /// `max_body` bytes). A dropped call (a timeout) drops its connection with it.
    pub async fn call(
        &self,
        get: bool,
        path: &str,
        auth: bool,
        body: &[u8],
        max_body: usize,
    ) -> Result<Answer, CallError> {
        let mut conn = match self.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let mut out = std::mem::take(&mut conn.out);
        out.clear();
        out.extend_from_slice(if get { b"GET " } else { b"POST " });
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        out.extend_from_slice(&self.host_line);
        if auth {
            out.extend_from_slice(&self.auth_lines);
        }
        if !get {
            let _ = write!(
                out,
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            );
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        let res = match &mut conn.stream {
            Stream::Plain(s) => {
                let (res, out) = s.write_all(out).await;
                conn.out = out;
                res.map(|_| ())
            }
            Stream::Tls(s) => {
                let res = match s.write_all(&out).await {
                    Ok(()) => s.flush().await,
                    Err(e) => Err(e),
                };
                conn.out = out;
                res
            }
        };
        res.map_err(|e| CallError::Http(format!("write: {e}")))?;
        let (answer, keep) = read_answer(&mut conn, max_body).await?;
        if keep {
            conn.idle_since = Instant::now();
            self.idle.borrow_mut().push(conn);
        }
        Ok(answer)
    }
}

/// Reads more bytes into `conn.buf`; an end of stream is an error (an answer was still due).
async fn fill(conn: &mut Conn) -> Result<(), CallError> {
    let mut buf = std::mem::take(&mut conn.buf);
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    let (filled, total) = (buf.len(), buf.capacity());
    let res = match &mut conn.stream {
        Stream::Plain(s) => {
            // Reading into the spare capacity appends to what is already there.
            let (res, slice) = s.read(buf.slice_mut(filled..total)).await;
            conn.buf = slice.into_inner();
            res
        }
        Stream::Tls(s) => {
            buf.resize(total, 0);
            let res = s.read(&mut buf[filled..]).await;
            buf.truncate(filled + *res.as_ref().unwrap_or(&0));
            conn.buf = buf;
            res
        }
    };
    match res {
        Ok(0) => Err(CallError::Http(
            "connection closed before the answer ended".into(),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(CallError::Http(format!("read: {e}"))),
    }
}

/// Reads one answer; also says whether the connection may carry another request.
async fn read_answer(conn: &mut Conn, max_body: usize) -> Result<(Answer, bool), CallError> {
    conn.buf.clear();
    let (status, head_len, length, chunked, close) = loop {
        if !conn.buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&conn.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut length = None;
                    let mut chunked = false;
                    let mut close = resp.version == Some(0);
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<usize>().ok());
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h.value.eq_ignore_ascii_case(b"chunked");
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    break (status, n, length, chunked, close);
                }
                Ok(httparse::Status::Partial) if conn.buf.len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Err(CallError::Http("answer head too large".into()))
                }
                Err(e) => return Err(CallError::Http(format!("bad answer head: {e}"))),
            }
        }
        fill(conn).await?;
    };
    let status = http::StatusCode::from_u16(status)
        .map_err(|_| CallError::Http(format!("bad status {status}")))?;
    let body = if chunked {
        read_chunked(conn, head_len, max_body).await?
    } else {
        // Gavel always declares the length; an answer without one ends with the connection.
        let Some(length) = length else {
            return Err(CallError::Http("answer without a length".into()));
        };
        if length > max_body {
            return Err(CallError::TooLarge(length));
        }
        while conn.buf.len() < head_len + length {
            fill(conn).await?;
        }
        Bytes::copy_from_slice(&conn.buf[head_len..head_len + length])
    };
    Ok((Answer { status, body }, !close))
}

/// Reads a chunked body that starts at `start` in `conn.buf` (trailers are not expected).
async fn read_chunked(conn: &mut Conn, start: usize, max_body: usize) -> Result<Bytes, CallError> {
    let mut body = Vec::new();
    let mut pos = start;
    loop {
        let Some(eol) = find_crlf(&conn.buf[pos..]) else {
            fill(conn).await?;
            continue;
        };
        let size_text = std::str::from_utf8(&conn.buf[pos..pos + eol])
            .map_err(|_| CallError::Http("bad chunk size".into()))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| CallError::Http("bad chunk size".into()))?;
        let data = pos + eol + 2;
        // The chunk, then its CRLF (for the last chunk, the CRLF that ends the body).
        while conn.buf.len() < data + size + 2 {
            fill(conn).await?;
        }
        if size == 0 {
            return Ok(Bytes::from(body));
        }
        if body.len() + size > max_body {
            return Err(CallError::TooLarge(body.len() + size));
        }
        body.extend_from_slice(&conn.buf[data..data + size]);
        pos = data + size + 2;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::disallowed_methods,
        reason = "test threads with loopback literals, not event loops"
    )]
    use super::*;
    use std::io::{BufRead, BufReader, Read};

    /// A server that answers each request on one connection with the next canned answer, written
    /// in two pieces so the client has to read more than once; it returns the request heads.
    fn canned(answers: Vec<&'static [u8]>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut heads = Vec::new();
            for answer in answers {
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.strip_prefix("content-length: ") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; length];
                r.read_exact(&mut body).unwrap();
                heads.push(head);
                let (a, b) = answer.split_at(answer.len() / 2);
                std::io::Write::write_all(&mut s, a).unwrap();
                std::io::Write::flush(&mut s).unwrap();
                std::thread::yield_now();
                std::io::Write::write_all(&mut s, b).unwrap();
            }
            heads
        });
        (port, t)
    }

    #[test]
    fn reads_lengths_chunks_and_keeps_the_connection() {
        let (port, server) = canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: application/json\r\n\r\n{\"a\"}",
            b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        ]);
        let answers = gavel::runtime::block_on(gavel::config::Driver::Legacy, 64, || async move {
            let origin = Origin::parse(&format!("http://127.0.0.1:{port}")).unwrap();
            let c = Client::new(
                origin,
                &format!("127.0.0.1:{port}"),
                &[("authorization", "Bearer t")],
                None,
            );
            let a = c.call(false, "/v1/ping", true, b"{}", 1024).await.unwrap();
            let b = c.call(true, "/healthz", false, b"", 1024).await.unwrap();
            let d = c
                .call(false, "/v1/post", true, b"{\"x\":1}", 1024)
                .await
                .unwrap();
            // The third answer closed the connection, so none is kept.
            assert!(c.idle.borrow().is_empty());
            (a, b, d)
        })
        .unwrap();
        assert_eq!(answers.0.status, 200);
        assert_eq!(answers.0.body, "{\"a\"}");
        assert_eq!(answers.1.status, 201);
        assert_eq!(answers.1.body, "abcde");
        assert_eq!(answers.2.status, 503);
        assert!(answers.2.body.is_empty());
        let heads = server.join().unwrap();
        assert_eq!(heads.len(), 3, "one connection carried all three");
        assert!(heads[0].starts_with("POST /v1/ping HTTP/1.1\r\n"));
        assert!(heads[0].contains("authorization: Bearer t\r\n"));
        assert!(heads[0].contains("content-type: application/json\r\n"));
        assert!(heads[1].starts_with("GET /healthz HTTP/1.1\r\n"));
        assert!(!heads[1].contains("authorization"));
        assert!(heads[1].contains(&format!("host: 127.0.0.1:{port}\r\n")));
    }

    #[test]
    fn refuses_oversized_answers() {
        let (port, _server) = canned(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n"]);
        let err = gavel::runtime::block_on(gavel::config::Driver::Legacy, 64, || async move {
            let origin = Origin::parse(&format!("http://127.0.0.1:{port}")).unwrap();
            let c = Client::new(origin, "x", &[], None);
            c.call(true, "/", false, b"", 10).await.unwrap_err()
        })
        .unwrap();
        assert_eq!(err.kind(), "too_large");
    }
}
