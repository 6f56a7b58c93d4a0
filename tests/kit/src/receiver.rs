//! A minimal blocking HTTP/1.1 server for receiving webhooks on loopback: what the test suite and
//! `gavel-load --webhooks` point Gavel's webhook endpoints at. The server itself never uses it.
//!
//! One thread per keep-alive connection; each request is read whole (head, then a
//! `Content-Length` body of at most [`MAX_BODY_BYTES`]) and handed to the caller's handler,
//! whose [`Answer`] is written back with an empty body. Chunked bodies are not supported (Gavel
//! never sends them). Owns only the HTTP framing; what a receiver does with a delivery (verify,
//! count, stall, fail on purpose) is the handler's business.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Largest request body read; a larger one is answered 413 and the connection closed.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    /// Every header in arrival order, names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What to answer: a status and extra headers; the body is always empty.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
        }
    }
}

/// Answers requests; called on the connection's thread, so it may block (a slow receiver).
pub type Handler = Arc<dyn Fn(Request) -> Answer + Send + Sync>;

/// A running receiver; dropping it stops accepting (open connections finish on their own).
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Binds `127.0.0.1:0` and serves every request with `handler`.
    pub fn start(handler: Handler) -> std::io::Result<Server> {
        #[allow(
            clippy::disallowed_methods,
            reason = "a loopback literal, on a test helper's thread"
        )]
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("webhook-receiver".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let handler = handler.clone();
                    let _ = std::thread::Builder::new()
                        .name("webhook-receiver-conn".into())
                        .spawn(move || serve(conn, &handler));
                }
            })?;
        Ok(Server { addr, stop })
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        #[allow(
            clippy::disallowed_methods,
            reason = "its own SocketAddr, from a test helper's drop"
        )]
        let _ = TcpStream::connect(self.addr);
    }
}

/// Serves one keep-alive connection until the peer closes it or sends something unreadable.
fn serve(conn: TcpStream, handler: &Handler) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Some(request) = read_request(&mut reader, &mut out) {
        let answer = handler(request);
        let mut head = format!("HTTP/1.1 {} X\r\ncontent-length: 0\r\n", answer.status);
        for (n, v) in &answer.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
    }
}

/// Header names (lowercased) and values, in arrival order.
pub type Headers = Vec<(String, String)>;

/// Reads the head of the next HTTP/1.1 request on `reader`: the request line's method and target,
/// and the headers with their names lowercased. `None` at the end of the connection or on a head
/// it cannot read. Also what the tests' own blocking buyers read requests with.
pub fn read_head(reader: &mut impl BufRead) -> Option<(String, String, Headers)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Some((method, target, headers))
}

/// Reads one request; `None` at the end of the connection or on a request it cannot read.
fn read_request(reader: &mut BufReader<TcpStream>, out: &mut TcpStream) -> Option<Request> {
    let (_, path, headers) = read_head(reader)?;
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(Some(0), |(_, v)| v.parse().ok())?;
    if len > MAX_BODY_BYTES {
        let _ = out.write_all(b"HTTP/1.1 413 X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return None;
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        path,
        headers,
        body,
    })
}
