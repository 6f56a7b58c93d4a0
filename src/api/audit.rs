//! `GET /v1/admin/audit` (scope `admin`, the operator's only): the caller's tenant's audit log,
//! newest first, filtered by time (`from`, `to`: RFC 3339, both inclusive) and by the party that
//! made the change (`party`: `operator`, `seller:ID` or `buyer:ID`), a page of `limit` at a time
//! (`cursor` continues where the last page stopped). A window with `from` after `to` is empty, not
//! an error. Any other party gets `404`.
//!
//! Reads go to the store directly (its page cache, like every listing). The entries themselves,
//! and the masking of their secrets, are [`crate::audit`]'s.

use std::rc::Rc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::value::RawValue;

use super::store_error;
use crate::auction::rfc3339_ms;
use crate::error::ApiError;
use crate::exchange::Core;
use crate::http::Reply;
use crate::store::AuditRecord;

/// Largest page of `GET /v1/admin/audit`.
pub const MAX_AUDIT_PAGE: usize = 200;
/// Page size when `limit` is not given.
pub const DEFAULT_AUDIT_PAGE: usize = 50;
/// Entries one page request reads at most before it answers with a cursor, so a rare `party`
/// filter never holds the core for long.
pub const MAX_AUDIT_SCANNED_PER_PAGE: usize = 10_000;

#[derive(Serialize)]
struct TargetOut<'a> {
    kind: &'a str,
    id: &'a str,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    id: &'a str,
    at: String,
    party: &'a str,
    client: &'a str,
    action: &'a str,
    target: TargetOut<'a>,
    before: Option<Box<RawValue>>,
    after: Option<Box<RawValue>>,
}

fn entry_out(r: &AuditRecord) -> EntryOut<'_> {
    // Stored as JSON text written by `audit::Entry`; a damaged one shows as null.
    let json = |t: &Option<String>| {
        t.as_ref()
            .and_then(|t| RawValue::from_string(t.clone()).ok())
    };
    EntryOut {
        id: &r.id,
        at: rfc3339_ms(r.created_ms),
        party: &r.party,
        client: &r.client,
        action: &r.action,
        target: TargetOut {
            kind: &r.target_kind,
            id: &r.target_id,
        },
        before: json(&r.before_json),
        after: json(&r.after_json),
    }
}

/// An RFC 3339 time as unix milliseconds; a time before 1970 is 0 (no entry is older).
fn unix_ms(v: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok()?;
    Some(u64::try_from((t.unix_timestamp_nanos() / 1_000_000).max(0)).unwrap_or(u64::MAX))
}

fn bad_query(msg: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_query", msg)
}

/// Whether `p` is a party as entries name it: `operator`, or `seller:` / `buyer:` and an id (an
/// implicit seller's id is its credential's client name, so any non-empty id without spaces).
fn is_party_label(p: &str) -> bool {
    p == "operator"
        || p.split_once(':').is_some_and(|(kind, id)| {
            matches!(kind, "seller" | "buyer")
                && !id.is_empty()
                && id.len() <= 128
                && !id.chars().any(|c| c.is_whitespace() || c.is_control())
        })
}

/// `GET /v1/admin/audit`.
pub async fn list(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let (mut from_ms, mut to_ms) = (0, u64::MAX);
    let (mut party, mut cursor) = (None, None);
    let mut limit = DEFAULT_AUDIT_PAGE;
    let time = |name: &str, v: &str| {
        unix_ms(v).ok_or_else(|| {
            bad_query(format!(
                "{name} must be an RFC 3339 time such as 2026-05-11T14:22:06Z."
            ))
        })
    };
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "from" => from_ms = time("from", &v)?,
            "to" => to_ms = time("to", &v)?,
            "party" if is_party_label(&v) => party = Some(v.into_owned()),
            "party" => return Err(bad_query("party must be operator, seller:ID or buyer:ID.")),
            "cursor" => {
                let key = hex::decode(v.as_bytes())
                    .map_err(|_| bad_query("cursor must be a next_cursor this endpoint gave."))?;
                cursor = Some(key);
            }
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_AUDIT_PAGE).contains(n))
                    .ok_or_else(|| bad_query(format!("limit must be 1..={MAX_AUDIT_PAGE}.")))?;
            }
            other => {
                return Err(bad_query(format!(
                    "Unknown query parameter {other:?}; use from, to, party, limit, cursor."
                )))
            }
        }
    }
    let keep = |r: &AuditRecord| party.as_deref().is_none_or(|p| p == r.party);
    let (page, next) = core
        .shared
        .store
        .list_audit(
            admin.tenant.as_str(),
            from_ms,
            to_ms,
            cursor.as_deref(),
            limit,
            MAX_AUDIT_SCANNED_PER_PAGE,
            &keep,
        )
        .map_err(store_error)?;
    let entries: Vec<EntryOut> = page.iter().map(entry_out).collect();
    Ok(Reply::json(
        StatusCode::OK,
        &serde_json::json!({
            "entries": entries,
            "next_cursor": next.map(hex::encode),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_1970_are_the_start_and_bad_ones_are_refused() {
        assert_eq!(unix_ms("1888-02-14T20:05:47Z"), Some(0));
        assert_eq!(unix_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(unix_ms("yesterday"), None);
        assert!(is_party_label("operator"));
        assert!(is_party_label("seller:cl_AbC-9"));
        assert!(!is_party_label("seller:"));
        assert!(!is_party_label("admin:x"));
    }
}
