//! HTTP plumbing shared by the seller API and the sandbox buyers: serving one hyper connection on a
//! monoio stream, reading bounded bodies, request ids and building responses.
//!
//! It knows nothing about routes or auctions: [`crate::api`] owns routing and the endpoints. The
//! [`Reply`] type is `Send` on purpose so a reply computed on the owning core can travel back to the
//! core that holds the client's connection.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::error::ApiError;

pub mod shutdown;
pub mod tls;
pub mod watch;

/// A response before it becomes a hyper `Response`: plain data, cheap to move across cores.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Reply {
    /// A JSON reply from any `Serialize` value, serialized straight to bytes.
    pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Reply {
        let body = serde_json::to_vec(value).expect("response types serialize");
        Reply {
            status,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: body.into(),
        }
    }

    pub fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            )],
            body: body.into(),
        }
    }

    pub fn error(err: &ApiError, request_id: &str) -> Reply {
        let mut reply = Reply {
            status: err.status,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: err.body(request_id).into(),
        };
        for (name, value) in &err.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                reply.headers.push((name.clone(), v));
            }
        }
        reply
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.headers.push((name, value));
        self
    }

    pub fn into_response(self, request_id: &str) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(self.body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        for (name, value) in self.headers {
            h.append(name, value);
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(HeaderName::from_static("x-request-id"), v);
        }
        resp
    }
}

/// A fresh request id: `req_` + ULID (CONTRACT §2).
pub fn request_id() -> String {
    format!("req_{}", ulid::Ulid::new())
}

/// Most bytes read and thrown away from an oversized body so the client can finish sending and
/// read its 413; past this the connection is closed instead.
pub const MAX_DISCARD_BYTES: usize = 1024 * 1024;

/// Marks whether a request's body was read to its end. [`crate::api::handle`] puts one in every
/// request's extensions; an answer sent while the body is still unread (a refusal before the body
/// mattered, such as a 401 or 429) must carry `Connection: close`, because the connection cannot
/// serve another request and a client that reused it would see it cut off.
#[derive(Debug, Clone, Default)]
pub struct BodyRead(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl BodyRead {
    pub fn done(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Whether a request announces a body (a non-zero `Content-Length`, or any `Transfer-Encoding`).
pub fn has_body<B>(req: &http::Request<B>) -> bool {
    let h = req.headers();
    h.contains_key(http::header::TRANSFER_ENCODING)
        || h.get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Reads a request body of at most `limit` bytes within `timeout`.
///
/// An oversized body (declared or streamed) is 413. Up to [`MAX_DISCARD_BYTES`] of it are read and
/// discarded first, so an ordinary client that is still writing sees the 413 instead of a reset.
pub async fn read_body(
    req: http::Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let marker = req.extensions().get::<BodyRead>().cloned();
    let mut body = req.into_body();
    let read = async {
        let mut buf =
            bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
        let mut total: usize = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_body",
                    "The request body could not be read.",
                )
            })?;
            if let Ok(data) = frame.into_data() {
                total = total.saturating_add(data.len());
                if total <= limit {
                    buf.extend_from_slice(&data);
                } else if total > MAX_DISCARD_BYTES {
                    return Ok::<_, ApiError>((buf.freeze(), total));
                }
            }
        }
        // The whole body arrived: the connection can serve the next request.
        if let Some(m) = &marker {
            m.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok::<_, ApiError>((buf.freeze(), total))
    };
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("The request body exceeds the limit of {limit} bytes."),
        )
    };
    if declared.is_some_and(|len| len > MAX_DISCARD_BYTES as u64) {
        return Err(too_large());
    }
    match monoio::time::timeout(timeout, read).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "The request body did not arrive in time.",
        )),
        Ok(Err(e)) => Err(e),
        Ok(Ok((_, total))) if total > limit => Err(too_large()),
        Ok(Ok((bytes, _))) => Ok(bytes),
    }
}

/// Limits applied to every server connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time from the first byte of a request head (or from accept, for the first request) to
    /// the end of that head.
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may sit with no request in progress and nothing received.
    pub idle_timeout: Duration,
    pub max_headers_bytes: usize,
}

/// Serves one accepted TCP stream with hyper HTTP/1.1 keep-alive until the client closes it,
/// it stays idle past `idle_timeout`, a request head takes longer than `header_read_timeout`, or
/// `shutdown` fires, after which in-flight requests finish and the connection closes.
///
/// With `tls`, the connection is TLS (rustls through `tokio-rustls` on monoio's poll-io stream,
/// as the buyer pool does it): the handshake must finish within `header_read_timeout`, and the
/// connection keeps the configuration it was accepted with for its whole life, so a certificate
/// reloaded meanwhile applies to new connections only.
pub async fn serve_connection<S, F, B>(
    stream: monoio::net::TcpStream,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    limits: ConnLimits,
    shutdown: shutdown::Shutdown,
    service: S,
) where
    S: Fn(http::Request<Incoming>) -> F + 'static,
    F: Future<Output = Result<Response<B>, std::convert::Infallible>> + 'static,
    B: hyper::body::Body<Data = Bytes> + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use monoio::io::IntoPollIo;
    let _ = stream.set_nodelay(true);
    let io = match stream.into_poll_io() {
        Ok(io) => io,
        Err(e) => {
            tracing::debug!(error = %e, "cannot switch stream to poll io");
            return;
        }
    };
    let Some(tls) = tls else {
        return serve_io(
            monoio_compat::hyper::MonoioIo::new(io),
            limits,
            shutdown,
            service,
        )
        .await;
    };
    let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(io);
    match monoio::time::timeout(limits.header_read_timeout, handshake).await {
        Ok(Ok(tls)) => {
            serve_io(
                monoio_compat::hyper::MonoioIo::new(tls),
                limits,
                shutdown,
                service,
            )
            .await
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake not finished in time; closing the connection"),
    }
}

/// [`serve_connection`] once the stream is ready for hyper (plain or TLS).
async fn serve_io<I, S, F, B>(io: I, limits: ConnLimits, shutdown: shutdown::Shutdown, service: S)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: Fn(http::Request<Incoming>) -> F + 'static,
    F: Future<Output = Result<Response<B>, std::convert::Infallible>> + 'static,
    B: hyper::body::Body<Data = Bytes> + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use futures::future::Either;
    let activity = watch::Activity::new();
    let io = watch::Watched::new(io, activity.clone());
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own header-read timer also runs while a keep-alive connection waits for its next
    // request, which would make it the idle timeout too; `watch` keeps both timers instead.
    builder
        .timer(monoio_compat::hyper::MonoioTimer)
        .header_read_timeout(None)
        .max_buf_size(limits.max_headers_bytes.max(8192))
        .keep_alive(true);
    let svc_activity = activity.clone();
    let service = move |req| {
        let in_progress = svc_activity.begin();
        let fut = service(req);
        async move {
            let res = fut.await;
            drop(in_progress);
            res
        }
    };
    let conn = builder.serve_connection(io, hyper::service::service_fn(service));
    let mut conn = std::pin::pin!(conn);
    let stop = std::pin::pin!(shutdown.wait());
    let timers = std::pin::pin!(watch::watch(
        activity,
        limits.idle_timeout,
        limits.header_read_timeout
    ));
    let ended = futures::future::select(stop, timers);
    match futures::future::select(conn.as_mut(), ended).await {
        Either::Left((res, _)) => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        Either::Right((Either::Left(((), _)), _)) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        Either::Right((Either::Right((watch::Expired::Idle, _)), _)) => {
            // Nothing is in progress, so hyper closes at once; the bound covers a client that
            // slipped a request in meanwhile and then stalls.
            conn.as_mut().graceful_shutdown();
            let _ = monoio::time::timeout(limits.header_read_timeout, conn).await;
        }
        Either::Right((Either::Right((watch::Expired::Head, _)), _)) => {
            tracing::debug!("request head not received in time; closing the connection");
        }
    }
}
