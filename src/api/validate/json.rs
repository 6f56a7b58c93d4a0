//! From bytes to a JSON object: the nesting limit, the in-place simd-json parse, the 400 for a
//! body that is not JSON (never quoting it) and the 422 for a root that is not an object. It does
//! not look at any field.

use simd_json::borrowed::{Object, Value};

use super::fields::validation_error;
use super::{EXPECT_OBJECT, INVALID_TYPE, MAX_JSON_DEPTH, OUT_OF_RANGE};
use crate::error::{ApiError, FieldError};

pub(super) fn parse_root(body: &mut [u8]) -> Result<Value<'_>, ApiError> {
    if exceeds_depth(body, MAX_JSON_DEPTH) {
        return Err(validation_error(vec![FieldError::new(
            "",
            OUT_OF_RANGE,
            format!("JSON nested at most {MAX_JSON_DEPTH} levels deep"),
        )]));
    }
    // The error's own Display quotes the character at the failure, which could be part of a
    // name or an email; only where the failure lies is reported. simd-json parses in place, so
    // whether the body was blank is read first.
    let blank = body.iter().all(u8::is_ascii_whitespace);
    simd_json::to_borrowed_value(body).map_err(|e| not_json(blank, e.index()))
}

/// A 400 for a body that is not JSON, in the caller's terms: where the first problem lies, never
/// the parser's own words, which name its internals (`InternalError(TapeError)`) or quote the body.
pub(super) fn not_json(blank: bool, at_byte: usize) -> ApiError {
    if blank {
        ApiError::malformed_json("the body is empty; send a JSON object")
    } else if at_byte > 0 {
        ApiError::malformed_json(format_args!("the first problem is near byte {at_byte}"))
    } else {
        ApiError::malformed_json("check its syntax")
    }
}

pub(super) fn root_object<'o, 'v>(root: &'o Value<'v>) -> Result<&'o Object<'v>, ApiError> {
    match root {
        Value::Object(obj) => Ok(obj),
        _ => Err(validation_error(vec![FieldError::new(
            "",
            INVALID_TYPE,
            EXPECT_OBJECT,
        )])),
    }
}

/// Whether arrays and objects nest deeper than `max`, counting only brackets outside strings.
/// For valid JSON the count is exact; for invalid JSON it may be off, which is harmless because
/// simd-json then refuses the body before building any value.
fn exceeds_depth(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}
