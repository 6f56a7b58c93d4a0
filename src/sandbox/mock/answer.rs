//! Answer building: the §5.1 bid and no-bid bodies and the §5.2 post answers, written by hand
//! as `serde_json` would write them, the JSON and error replies, and [`MockBody`], the response
//! body that can trickle one byte per tick. It does not choose which answer a request gets: that
//! is `handler`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper::body::{Frame, SizeHint};

use super::config::MockBuyerConfig;
use super::draws::PingDraws;
use super::TRICKLE_INTERVAL;
use crate::error::ApiError;
use crate::http::shutdown::{Shutdown, Wait};
use crate::http::Reply;

/// Appends `s` as a JSON string literal, escaped exactly as `serde_json` escapes it.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("strings serialize into a Vec");
}

/// Appends `t` as RFC 3339 in UTC with the fraction trimmed of trailing zeros, the text `time`'s
/// `Rfc3339` format gives for a millisecond-precise instant, without its intermediate buffers.
fn push_rfc3339_ms(out: &mut Vec<u8>, t: time::OffsetDateTime) {
    let (year, month, day) = t.to_calendar_date();
    let mut w = VecWriter(out);
    let _ = write!(
        w,
        "{year:04}-{:02}-{day:02}T{:02}:{:02}:{:02}",
        u8::from(month),
        t.hour(),
        t.minute(),
        t.second()
    );
    let ms = t.millisecond();
    let _ = if ms == 0 {
        Ok(())
    } else if ms.is_multiple_of(100) {
        write!(w, ".{}", ms / 100)
    } else if ms.is_multiple_of(10) {
        write!(w, ".{:02}", ms / 10)
    } else {
        write!(w, ".{ms:03}")
    };
    out.push(b'Z');
}

/// The §5.1 bid answer, written by hand so the amount keeps exactly two decimals. Buyer ids and
/// currencies are validated to need no escaping, so only the auction id goes through the escaper.
pub(super) fn bid_body(auction_id: &str, buyer: &MockBuyerConfig, draws: &PingDraws) -> Bytes {
    let now = time::OffsetDateTime::now_utc();
    let until = now + Duration::from_millis(buyer.bid_valid_ms);
    // Millisecond precision is plenty for an expiry and keeps the timestamp short.
    let until = until
        .replace_millisecond(until.millisecond())
        .unwrap_or(until);
    let mut out = Vec::with_capacity(160 + auction_id.len());
    out.extend_from_slice(br#"{"auction_id":"#);
    push_json_str(&mut out, auction_id);
    let _ = write!(
        VecWriter(&mut out),
        r#","bid":{{"amount":{}.{:02},"currency":"{}","bid_token":"mb_{}_{:016x}","valid_until":""#,
        draws.amount_cents / 100,
        draws.amount_cents % 100,
        buyer.currency,
        buyer.id,
        draws.token_bits,
    );
    push_rfc3339_ms(&mut out, until);
    out.extend_from_slice(br#""}}"#);
    out.into()
}

/// `fmt::Write` into a byte buffer, so `write!` appends without an intermediate `String`.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The §5.1 no-bid answer, keys in the order `serde_json` writes an object's keys (sorted).
pub(super) fn no_bid_body(auction_id: &str, reason: &str, detail: &str) -> Bytes {
    let mut out = Vec::with_capacity(80 + auction_id.len() + reason.len() + detail.len());
    out.extend_from_slice(br#"{"auction_id":"#);
    push_json_str(&mut out, auction_id);
    out.extend_from_slice(br#","bid":null,"reject_detail":"#);
    push_json_str(&mut out, detail);
    out.extend_from_slice(br#","reject_reason":"#);
    push_json_str(&mut out, reason);
    out.push(b'}');
    out.into()
}

pub(super) fn json_reply(status: StatusCode, body: Bytes) -> Reply {
    Reply::text(status, "application/json", body)
}

pub(super) fn error_reply(
    status: StatusCode,
    code: &'static str,
    message: &str,
    request_id: &str,
) -> Reply {
    Reply::error(&ApiError::new(status, code, message), request_id)
}

pub(super) fn method_not_allowed(allow: &'static str, request_id: &str) -> Reply {
    let err = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("This route only answers {allow}."),
    )
    .with_header(http::header::ALLOW, allow);
    Reply::error(&err, request_id)
}

pub(super) fn unauthorized(request_id: &str) -> Reply {
    error_reply(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "The Authorization header does not match what this buyer expects.",
        request_id,
    )
}

/// `{"reason":…,"status":"rejected"}`, keys in `serde_json`'s (sorted) order.
pub(super) fn post_rejected(reason: &str) -> Reply {
    let mut out = Vec::with_capacity(40 + reason.len());
    out.extend_from_slice(br#"{"reason":"#);
    push_json_str(&mut out, reason);
    out.extend_from_slice(br#","status":"rejected"}"#);
    json_reply(StatusCode::UNPROCESSABLE_ENTITY, out.into())
}

/// `201 {"lead_id":…}`, the §5.2 answer to an accepted post.
pub(super) fn post_accepted(lead_id: &str) -> Reply {
    let mut out = Vec::with_capacity(16 + lead_id.len());
    out.extend_from_slice(br#"{"lead_id":"#);
    push_json_str(&mut out, lead_id);
    out.push(b'}');
    json_reply(StatusCode::CREATED, out.into())
}

/// The fleet's response body: a whole buffer, or a `slow_trickle` body that releases one byte per
/// tick and ends early when the fleet shuts down. Hyper drops it when the client goes away, which
/// stops the ticking.
pub struct MockBody {
    kind: BodyKind,
}

enum BodyKind {
    Full(Full<Bytes>),
    Trickle {
        data: Bytes,
        pos: usize,
        tick: Pin<Box<monoio::time::Sleep>>,
        stop: Pin<Box<Wait>>,
    },
}

impl MockBody {
    pub(super) fn full(body: Full<Bytes>) -> Self {
        Self {
            kind: BodyKind::Full(body),
        }
    }

    pub(super) fn trickle(data: Bytes, shutdown: &Shutdown) -> Self {
        Self {
            kind: BodyKind::Trickle {
                data,
                pos: 0,
                tick: Box::pin(monoio::time::sleep(TRICKLE_INTERVAL)),
                stop: Box::pin(shutdown.wait()),
            },
        }
    }
}

impl hyper::body::Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            BodyKind::Full(body) => Pin::new(body).poll_frame(cx),
            BodyKind::Trickle {
                data,
                pos,
                tick,
                stop,
            } => {
                if *pos >= data.len() {
                    return Poll::Ready(None);
                }
                if stop.as_mut().poll(cx).is_ready() {
                    *pos = data.len();
                    return Poll::Ready(None);
                }
                if tick.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let byte = data.slice(*pos..*pos + 1);
                *pos += 1;
                tick.set(monoio::time::sleep(TRICKLE_INTERVAL));
                Poll::Ready(Some(Ok(Frame::data(byte))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(body) => body.is_end_stream(),
            BodyKind::Trickle { data, pos, .. } => *pos >= data.len(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(body) => body.size_hint(),
            // No length up front, so hyper streams it chunked as each byte is released.
            BodyKind::Trickle { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::draws::draw_ping;
    use super::*;
    use serde_json::Value;

    #[test]
    fn timestamps_match_times_rfc3339() {
        use time::format_description::well_known::Rfc3339;
        let base = time::OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap();
        for ms in [
            0u64,
            1,
            10,
            100,
            120,
            123,
            500,
            999,
            86_399_999,
            31_622_400_000,
        ] {
            let t = base + Duration::from_millis(ms);
            let mut out = Vec::new();
            push_rfc3339_ms(&mut out, t);
            assert_eq!(String::from_utf8(out).unwrap(), t.format(&Rfc3339).unwrap());
        }
    }

    #[test]
    fn hand_written_bodies_are_what_serde_json_writes() {
        let odd = "auc_\"quoted\"\\\n\u{1}é";
        assert_eq!(
            no_bid_body(odd, "no_demand", "buyer x has no demand"),
            serde_json::to_vec(&serde_json::json!({
                "auction_id": odd, "bid": null,
                "reject_detail": "buyer x has no demand", "reject_reason": "no_demand",
            }))
            .unwrap()
        );
        let expected = serde_json::to_vec(
            &serde_json::json!({"reason": "duplicate_lead", "status": "rejected"}),
        )
        .unwrap();
        assert_eq!(post_rejected("duplicate_lead").body, expected);

        let buyer = MockBuyerConfig::new("b-1");
        let draws = draw_ping(7, &buyer, odd);
        let bid: Value = serde_json::from_slice(&bid_body(odd, &buyer, &draws)).unwrap();
        assert_eq!(bid["auction_id"], odd);
        let token = bid["bid"]["bid_token"].as_str().unwrap();
        assert_eq!(token, format!("mb_b-1_{:016x}", draws.token_bits));
        assert!(draws.token_matches("b-1", token));
        assert!(!draws.token_matches("b-1", &token.to_uppercase()));
        assert!(!draws.token_matches("b-2", token));
        assert!(!draws.token_matches("b-1", &token[..token.len() - 1]));
        let amount = bid["bid"]["amount"].as_f64().unwrap();
        assert_eq!((amount * 100.0).round() as u64, draws.amount_cents);
        let until = bid["bid"]["valid_until"].as_str().unwrap();
        assert!(crate::auction::parse_rfc3339_ms(until).is_some(), "{until}");
    }
}
