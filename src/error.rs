//! API errors: who caused them, which status code and which error code they map to.
//!
//! Every failure a client can see is an [`ApiError`]. Its [`Cause`] says whose fault it was (the
//! seller's request, a buyer, or Gavel itself), which decides the status class and the metric label.
//! This module renders the CONTRACT §2 error body; it does not decide business outcomes such as
//! `no_bid`, which are 200 responses and never errors.

use http::StatusCode;
use serde::Serialize;

// Architecture Invariant [who-caused-it]: every error names who caused it (seller, buyer,
// internal), which fixes its status class and its metric label.
/// Who caused an error. Maps one-to-one onto the `cause` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The caller sent something wrong; retrying the same request will fail the same way.
    Seller,
    /// A buyer misbehaved; surfaced to the seller only when no other buyer could stand in.
    Buyer,
    /// Gavel itself failed or is overloaded; a retry may succeed.
    Internal,
    /// The operator's configuration (the file, its environment variables, its files) is wrong:
    /// Gavel refuses to start or reload until it is fixed. Never the cause of an API answer.
    Operator,
}

impl Cause {
    pub fn label(self) -> &'static str {
        match self {
            Cause::Seller => "seller",
            Cause::Buyer => "buyer",
            Cause::Internal => "internal",
            Cause::Operator => "operator",
        }
    }
}

/// One invalid field, reported with every other invalid field of the same request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub expected: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, expected: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            expected: expected.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field_errors: Vec<FieldError>,
    /// Extra response headers, e.g. `WWW-Authenticate` or `Retry-After`.
    pub headers: Vec<(http::HeaderName, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field_errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Whose fault this is, derived from the status so the two can never disagree.
    pub fn cause(&self) -> Cause {
        if self.status.is_server_error() {
            if self.status == StatusCode::BAD_GATEWAY {
                Cause::Buyer
            } else {
                Cause::Internal
            }
        } else {
            Cause::Seller
        }
    }

    pub fn with_header(mut self, name: http::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn malformed_json(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("The request body is not valid JSON: {detail}."),
        )
    }

    pub fn validation(field_errors: Vec<FieldError>) -> Self {
        let n = field_errors.len();
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
            format!(
                "The request has {n} invalid field{}; see field_errors.",
                if n == 1 { "" } else { "s" }
            ),
        );
        e.field_errors = field_errors;
        e
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
            .with_header(http::header::RETRY_AFTER, "1")
    }

    /// The CONTRACT §2 error body.
    pub fn body(&self, request_id: &str) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: &'a str,
            request_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            field_errors: Option<&'a [FieldError]>,
        }
        let field_errors = (self.status == StatusCode::UNPROCESSABLE_ENTITY
            && !self.field_errors.is_empty())
        .then_some(self.field_errors.as_slice());
        serde_json::to_vec(&Body {
            error: self.code,
            message: &self.message,
            request_id,
            field_errors,
        })
        .expect("error body serializes")
    }
}
