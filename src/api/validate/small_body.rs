//! Small admin and sandbox bodies (the sandbox seed, OAuth client creation, a buyer's status
//! report): [`SmallBody`], read field by field with serde_json, and [`field_error`], the 422 for
//! one invalid field. It does not own pings, posts or leads, which go through simd-json.

use super::fields::display_key;
use super::json::not_json;
use super::{
    EXPECT_KNOWN, EXPECT_OBJECT, INVALID_FORMAT, INVALID_TYPE, MISSING_REQUIRED, OUT_OF_RANGE,
    UNKNOWN_FIELD,
};
use crate::error::{ApiError, FieldError};

/// A small JSON object body (the sandbox seed, OAuth client creation, a buyer's status report)
/// read field by field, so each error names the field and what it must be instead of quoting the
/// parser (`invalid type: floating point, expected usize`). As in pings, `null` counts as absent.
pub struct SmallBody(serde_json::Map<String, serde_json::Value>);

impl SmallBody {
    /// Malformed JSON is 400; a body that is not an object, or has a field outside `allowed`, is
    /// 422 naming it.
    pub fn parse(body: &[u8], allowed: &[&str]) -> Result<SmallBody, ApiError> {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            if body.iter().all(u8::is_ascii_whitespace) {
                not_json(true, 0)
            } else {
                ApiError::malformed_json(format_args!(
                    "the first problem is at line {}, column {}",
                    e.line(),
                    e.column()
                ))
            }
        })?;
        let serde_json::Value::Object(obj) = v else {
            return Err(field_error(
                "",
                INVALID_TYPE,
                EXPECT_OBJECT,
                "The body must be a JSON object.",
            ));
        };
        if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            let k = display_key(k);
            return Err(field_error(
                &k,
                UNKNOWN_FIELD,
                EXPECT_KNOWN,
                format!(
                    "Unknown field {k:?}; the fields are {}.",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(SmallBody(obj))
    }

    fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A required field, or 422 `missing_required` naming it.
    pub fn required<T>(key: &str, v: Option<T>) -> Result<T, ApiError> {
        v.ok_or_else(|| {
            field_error(
                key,
                MISSING_REQUIRED,
                "present",
                format!("{key} is required."),
            )
        })
    }

    /// An optional string; `expected` describes a valid one in the error.
    pub fn string(&self, key: &str, expected: &str) -> Result<Option<&str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(field_error(
                key,
                INVALID_TYPE,
                expected,
                format!("{key} must be {expected}."),
            )),
        }
    }

    /// An optional whole number within `range`. An integral float (`2.0`) counts as that whole
    /// number, as JSON Schema's `integer` says.
    pub fn whole(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = v.as_u64().or_else(|| {
            // `u64::MAX as f64` rounds up to 2^64, so that value itself is out of range.
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        });
        match n {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            _ => {
                let expected = format!("a whole number from {} to {}", range.start(), range.end());
                let code = if v.is_number() {
                    OUT_OF_RANGE
                } else {
                    INVALID_TYPE
                };
                Err(field_error(
                    key,
                    code,
                    &expected,
                    format!("{key} must be {expected}."),
                ))
            }
        }
    }

    /// An optional array of strings; `expected` describes a valid item in the error.
    pub fn strings(&self, key: &str, expected: &str) -> Result<Option<Vec<&str>>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let items = v.as_array().and_then(|a| {
            a.iter()
                .map(serde_json::Value::as_str)
                .collect::<Option<Vec<&str>>>()
        });
        items.map(Some).ok_or_else(|| {
            let expected = format!("a list of {expected}");
            field_error(
                key,
                INVALID_TYPE,
                &expected,
                format!("{key} must be {expected}."),
            )
        })
    }
}

/// One invalid field of a [`SmallBody`]: 422 `invalid_payload` whose message says what is wrong
/// and whose `field_errors` name the field, as for pings and posts.
pub fn field_error(
    field: &str,
    code: &'static str,
    expected: &str,
    message: impl Into<String>,
) -> ApiError {
    let mut e = ApiError::unprocessable("invalid_payload", message);
    e.field_errors = vec![FieldError::new(field, code, expected)];
    e
}

/// The `code` of a [`field_error`] for a value outside its allowed set or range.
pub const FIELD_OUT_OF_RANGE: &str = OUT_OF_RANGE;
/// The `code` of a [`field_error`] for a value of the wrong shape.
pub const FIELD_INVALID_FORMAT: &str = INVALID_FORMAT;
