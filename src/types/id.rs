//! Identifier forms shared by the request rules and the config file: a snake_case id (verticals,
//! sub-verticals, webhook endpoint ids). It owns only the predicate; which field must hold such an
//! id, and the error when it does not, belong to the caller.

/// Longest identifier, in bytes (ids are ASCII, so also in characters).
pub const MAX_ID_LEN: usize = 64;

/// A lowercase id of a-z, 0-9 and `_`, at most [`MAX_ID_LEN`] bytes (verticals, sub-verticals).
pub fn is_snake_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
