//! Buyer formats ("posting instructions"): how Gavel's ping or post becomes one buyer's own
//! request, and how that buyer's answer is read, compiled at load from `[buyers.ping_format]` /
//! `[buyers.post_format]`.
//!
//! This module owns compiling a format (every field name and path checked, sources resolved to an
//! enum), building a request from it, and reading values out of an answer. It does not send
//! requests ([`super::pool`]) and does not decide what an answer means for the auction: the
//! fan-out and delivery ([`crate::auction`]) apply the same rules to a formatted answer as to a
//! contract one. A buyer without a format speaks Gavel's buyer contract, on the contract's own
//! code path.

mod answer;
mod request;

use std::borrow::Cow;

use http::{HeaderName, HeaderValue};

use super::pool::{Answer, CallError, Pool, Target};

use crate::config::{BuyerConfig, ConfigError, FormatConfig};
use crate::model::{Lead, Ping};

pub use answer::{PingVerdict, PostVerdict, Reader};
pub use request::Built;

/// Which call a format describes: the two admit different source fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Ping,
    Post,
}

/// What one request is built from.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Ping {
        auction_id: &'a str,
        /// The auction deadline, RFC 3339.
        expires_at: &'a str,
        ping: &'a Ping,
    },
    Post {
        auction_id: &'a str,
        /// The buyer's own bid token (empty for a direct-post buyer).
        bid_token: &'a str,
        lead: &'a Lead,
    },
}

/// Why a format did not compile: the key under the format (`fields.zip`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub key: String,
    pub reason: String,
}

impl FormatError {
    fn new(key: String, reason: String) -> FormatError {
        FormatError { key, reason }
    }
}

/// A compiled format.
#[derive(Debug)]
pub struct Format {
    plan: request::Plan,
    headers: Vec<(HeaderName, HeaderValue)>,
    answer: Option<Reader>,
}

impl Format {
    pub fn compile(c: &FormatConfig, call: Call) -> Result<Format, FormatError> {
        let plan = request::Plan::compile(c.method, c.encoding, &c.fields, call)?;
        let headers = c
            .headers
            .iter()
            .map(|(n, v)| {
                let bad = |what: &str| {
                    FormatError::new(format!("headers.{n}"), format!("not a valid header {what}"))
                };
                let name = HeaderName::from_bytes(n.as_bytes()).map_err(|_| bad("name"))?;
                let mut value = HeaderValue::from_str(v).map_err(|_| bad("value"))?;
                // Such headers often carry an API key: keep them out of any debug output.
                value.set_sensitive(true);
                Ok((name, value))
            })
            .collect::<Result<_, FormatError>>()?;
        let answer = c
            .answer
            .as_ref()
            .map(|a| Reader::compile(a, call))
            .transpose()?;
        Ok(Format {
            plan,
            headers,
            answer,
        })
    }

    /// The request for one ping or post.
    pub fn build(&self, input: &Input<'_>) -> Built {
        self.plan.build(input)
    }

    /// The format's constant headers, sent besides Gavel's own (idempotency key, auth header).
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// How the answer is read; `None`: it follows Gavel's buyer contract.
    pub fn answer(&self) -> Option<&Reader> {
        self.answer.as_ref()
    }
}

/// Sends one call in `format`: builds the request from `input`, adds the format's headers to
/// `headers` (Gavel's own: idempotency key, auth), and reads the whole answer. The caller bounds
/// it with its timeout, as for [`Pool::post_json`].
pub async fn send(
    pool: &Pool,
    target: &Target,
    format: &Format,
    input: Input<'_>,
    headers: &[(HeaderName, HeaderValue)],
    max_body: usize,
) -> Result<Answer, CallError> {
    let built = format.build(&input);
    let mut all = headers.to_vec();
    all.extend(format.headers().iter().cloned());
    // A GET carries the fields in the query string, after any query the URL already has.
    let target = match &built.query {
        Some(q) if !q.is_empty() => {
            let sep = if target.path.contains('?') { '&' } else { '?' };
            Cow::Owned(Target {
                path: format!("{}{sep}{q}", target.path),
                ..target.clone()
            })
        }
        _ => Cow::Borrowed(target),
    };
    pool.call(
        &target,
        built.method,
        built.content_type,
        &all,
        built.body,
        max_body,
    )
    .await
}

/// Compiles every buyer's formats, so `gavel check-config` refuses a template that names an
/// unknown field or a path that is no path. The error names the buyer, the key and the field.
pub fn check_config(buyers: &[BuyerConfig], file: &str) -> Result<(), ConfigError> {
    for (i, b) in buyers.iter().enumerate() {
        for (name, f, call) in [
            ("ping_format", &b.ping_format, Call::Ping),
            ("post_format", &b.post_format, Call::Post),
        ] {
            if let Some(f) = f {
                Format::compile(f, call).map_err(|e| ConfigError::Invalid {
                    file: file.to_string(),
                    key: format!("buyers[{i}].{name}.{}", e.key),
                    reason: format!("buyer {:?}: {}", b.id, e.reason),
                })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
