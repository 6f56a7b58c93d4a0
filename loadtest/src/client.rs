//! The generator's blocking HTTP pieces: a tiny GET for `/metrics` before and after a run, summing
//! Prometheus samples, and getting an OAuth access token before a run (on a short-lived runtime,
//! through `gavel::buyers::pool::Pool`). Requests on generator cores go through
//! [`crate::http1::Client`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Blocking `GET path` on a fresh connection (`Connection: close`); returns status and body.
/// For `/metrics` (on the server's operations listener, which needs no token) before and after
/// a run, never on a generator core.
pub fn blocking_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP head"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        gavel_testkit::dechunk(body)
            .ok_or_else(|| std::io::Error::other("malformed chunked body"))?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// An access token from `{base_url}/oauth/token` for the OAuth client `id` / `secret` (client
/// credentials, body authentication, JSON body; every scope the client holds), fetched on a
/// short-lived runtime of `driver` before the run starts.
pub fn oauth_token(
    base_url: &str,
    id: &str,
    secret: &str,
    driver: gavel::config::Driver,
) -> Result<String, String> {
    use gavel::buyers::pool::Pool;
    let target = crate::tls::target(&format!("{}/oauth/token", base_url.trim_end_matches('/')))?;
    let body = serde_json::json!({
        "grant_type": "client_credentials", "client_id": id, "client_secret": secret
    });
    let answer = gavel::runtime::block_on(driver, 64, || async {
        let pool = Pool::new();
        monoio::time::timeout(
            Duration::from_secs(10),
            pool.post_json(
                &target,
                &[],
                bytes::Bytes::from(body.to_string()),
                64 * 1024,
            ),
        )
        .await
    })
    .map_err(|e| format!("cannot start a runtime: {e}"))?
    .map_err(|_| "POST /oauth/token timed out".to_string())?
    .map_err(|e| format!("POST /oauth/token: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    match v["access_token"].as_str() {
        Some(t) if answer.status.is_success() => Ok(t.to_string()),
        _ => Err(format!(
            "POST /oauth/token answered {}: {} ({})",
            answer.status,
            v["error"].as_str().unwrap_or("no error code"),
            v["error_description"].as_str().unwrap_or("")
        )),
    }
}

/// Sum of every sample of `name` whose label set contains all of `labels` (e.g.
/// `endpoint="/v1/ping"`), from Prometheus text.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_labelled_samples() {
        let text = "# HELP x\n\
            gavel_http_requests_total{endpoint=\"/v1/ping\",status=\"200\"} 7\n\
            gavel_http_requests_total{endpoint=\"/v1/ping\",status=\"422\"} 2\n\
            gavel_http_requests_total{endpoint=\"/v1/post\",status=\"201\"} 3\n\
            gavel_http_requests_total_other 100\n";
        let n = "gavel_http_requests_total";
        assert_eq!(metric_sum(text, n, &["endpoint=\"/v1/ping\""]), 9);
        assert_eq!(
            metric_sum(text, n, &["endpoint=\"/v1/ping\"", "status=\"200\""]),
            7
        );
        assert_eq!(metric_sum(text, n, &[]), 12);
    }
}
