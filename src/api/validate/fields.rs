//! Reading one JSON object's fields: [`Fields`] (known fields looked up once, unknown and repeated
//! keys reported), the typed readers (string, bool, object, score, vehicle count, `expires_at`,
//! attributes) and [`Errors`], the field errors of one request. It does not say which fields a
//! request has (`ping`, `lead`) or what a valid string looks like (`formats`).

use simd_json::borrowed::{Object, Value};
use simd_json::StaticNode;

use super::formats::{rfc3339_unix_ms, Kind, Spec, TIMESTAMP};
use super::{
    EXPECT_BOOL, EXPECT_FUTURE, EXPECT_OBJECT, EXPECT_SCALAR, EXPECT_SCORE, EXPECT_UNIQUE_KEY,
    EXPECT_VEHICLES, INVALID_FORMAT, INVALID_TYPE, MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY_LEN,
    MAX_FIELD_ERRORS, MAX_STRING_LEN, MAX_VEHICLE_COUNT, MISSING_REQUIRED, OUT_OF_RANGE, TOO_LONG,
    UNKNOWN_FIELD,
};
use crate::error::{ApiError, FieldError};
use crate::model::Scalar;

/// A key as it may appear in a field path: cut to [`MAX_ATTRIBUTE_KEY_LEN`] characters, because an
/// unknown key can be as long as the body and the error must stay small.
pub(super) fn display_key(key: &str) -> String {
    match key.char_indices().nth(MAX_ATTRIBUTE_KEY_LEN) {
        Some((cut, _)) => format!("{}…", &key[..cut]),
        None => key.to_owned(),
    }
}

/// The field errors of one request, in the order the fields are checked.
#[derive(Default)]
pub(super) struct Errors(Vec<FieldError>);

impl Errors {
    pub(super) fn push(
        &mut self,
        field: impl Into<String>,
        code: &'static str,
        expected: impl Into<String>,
    ) {
        self.0.push(FieldError::new(field, code, expected));
    }

    pub(super) fn check(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(validation_error(self.0))
        }
    }
}

pub(super) fn validation_error(mut errs: Vec<FieldError>) -> ApiError {
    if errs.len() <= MAX_FIELD_ERRORS {
        return ApiError::validation(errs);
    }
    errs.truncate(MAX_FIELD_ERRORS);
    let mut err = ApiError::validation(errs);
    err.message = format!(
        "The request has more than {MAX_FIELD_ERRORS} invalid fields; the first \
         {MAX_FIELD_ERRORS} are in field_errors."
    );
    err
}

/// Reached only if a required field came back empty without recording an error, which would be a
/// bug here; it answers 500 instead of panicking on a request.
pub(super) fn lost_required_field() -> ApiError {
    ApiError::internal("Validation lost a required field.")
}

/// The known fields of one JSON object, looked up once, with its unknown and repeated keys.
pub(super) struct Fields<'o, 'v> {
    prefix: &'static str,
    known: &'static [&'static str],
    slots: Vec<Option<&'o Value<'v>>>,
    /// Unknown or repeated keys, reported by [`Fields::finish`] after the known fields' errors.
    extras: Vec<(String, &'static str)>,
}

impl<'o, 'v> Fields<'o, 'v> {
    pub(super) fn new(
        obj: &'o Object<'v>,
        prefix: &'static str,
        known: &'static [&'static str],
    ) -> Self {
        let mut slots = vec![None; known.len()];
        let mut extras = Vec::new();
        for (key, value) in obj.iter() {
            let key: &str = key;
            match known.iter().position(|k| *k == key) {
                // simd-json keeps every copy of a repeated key; which one a lookup finds is an
                // accident of its map, so a repeat is refused rather than guessed at.
                Some(i) if slots[i].is_some() => extras.push((key.to_owned(), EXPECT_UNIQUE_KEY)),
                Some(i) => slots[i] = Some(value),
                None => extras.push((display_key(key), UNKNOWN_FIELD)),
            }
        }
        Self {
            prefix,
            known,
            slots,
            extras,
        }
    }

    /// The field's value; `null` counts as absent.
    fn get(&self, name: &str) -> Option<&'o Value<'v>> {
        let i = self.known.iter().position(|k| *k == name)?;
        self.slots[i].filter(|v| !matches!(v, Value::Static(StaticNode::Null)))
    }

    pub(super) fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Reports unknown and repeated keys, sorted so the order does not depend on the map.
    pub(super) fn finish(mut self, unknown_expected: &'static str, errs: &mut Errors) {
        self.extras.sort();
        self.extras.dedup();
        for (key, kind) in self.extras.iter() {
            if *kind == UNKNOWN_FIELD {
                errs.push(self.path(key), UNKNOWN_FIELD, unknown_expected);
            } else {
                errs.push(self.path(key), INVALID_FORMAT, *kind);
            }
        }
    }
}

/// A string field checked against `spec`; `None` when absent or invalid (the error is recorded).
pub(super) fn string_field<'o>(
    f: &Fields<'o, '_>,
    name: &str,
    required: bool,
    spec: &Spec,
    errs: &mut Errors,
) -> Option<&'o str> {
    let missing = |errs: &mut Errors| {
        if required {
            errs.push(f.path(name), MISSING_REQUIRED, spec.expected);
        }
    };
    let Some(value) = f.get(name) else {
        missing(errs);
        return None;
    };
    let Value::String(s) = value else {
        errs.push(f.path(name), INVALID_TYPE, spec.expected);
        return None;
    };
    let s: &'o str = s.as_ref();
    let trimmed = s.trim();
    if trimmed.is_empty() {
        missing(errs);
        return None;
    }
    if let Some(max) = spec.max_chars {
        // Bytes bound characters from above, so counting is needed only for long values.
        if s.len() > max && s.chars().count() > max {
            errs.push(f.path(name), TOO_LONG, format!("at most {max} characters"));
            return None;
        }
    }
    let (value, ok) = match spec.kind {
        Kind::Text => (trimmed, !trimmed.chars().any(char::is_control)),
        Kind::MultilineText => (
            trimmed,
            !trimmed
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')),
        ),
        Kind::Format(is_valid) => (s, is_valid(s)),
    };
    if ok {
        Some(value)
    } else {
        let expected = match spec.kind {
            Kind::Format(_) => spec.expected,
            Kind::Text | Kind::MultilineText => "text without control characters",
        };
        errs.push(f.path(name), INVALID_FORMAT, expected);
        None
    }
}

pub(super) fn bool_field(
    f: &Fields<'_, '_>,
    name: &str,
    required: bool,
    errs: &mut Errors,
) -> Option<bool> {
    match f.get(name) {
        None => {
            if required {
                errs.push(f.path(name), MISSING_REQUIRED, EXPECT_BOOL);
            }
            None
        }
        Some(Value::Static(StaticNode::Bool(b))) => Some(*b),
        Some(_) => {
            errs.push(f.path(name), INVALID_TYPE, EXPECT_BOOL);
            None
        }
    }
}

/// A nested object; when it is missing or not an object only that is reported, not its children.
pub(super) fn object_field<'o, 'v>(
    f: &Fields<'o, 'v>,
    name: &str,
    required: bool,
    errs: &mut Errors,
) -> Option<&'o Object<'v>> {
    match f.get(name) {
        None => {
            if required {
                errs.push(f.path(name), MISSING_REQUIRED, EXPECT_OBJECT);
            }
            None
        }
        Some(Value::Object(obj)) => Some(obj),
        Some(_) => {
            errs.push(f.path(name), INVALID_TYPE, EXPECT_OBJECT);
            None
        }
    }
}

pub(super) fn score_field(f: &Fields<'_, '_>, name: &str, errs: &mut Errors) -> Option<f64> {
    let value = f.get(name)?;
    let score = match value {
        Value::Static(StaticNode::I64(i)) => *i as f64,
        Value::Static(StaticNode::U64(u)) => *u as f64,
        Value::Static(StaticNode::F64(x)) => *x,
        _ => {
            errs.push(f.path(name), INVALID_TYPE, EXPECT_SCORE);
            return None;
        }
    };
    if (0.0..=1.0).contains(&score) {
        Some(score)
    } else {
        errs.push(f.path(name), OUT_OF_RANGE, EXPECT_SCORE);
        None
    }
}

pub(super) fn vehicle_count_field(
    f: &Fields<'_, '_>,
    name: &str,
    errs: &mut Errors,
) -> Option<u32> {
    let value = f.get(name)?;
    // A whole float such as 2.0 is an integer in JSON's number model, so it is accepted.
    let count: i128 = match value {
        Value::Static(StaticNode::I64(i)) => i128::from(*i),
        Value::Static(StaticNode::U64(u)) => i128::from(*u),
        Value::Static(StaticNode::F64(x)) if x.fract() == 0.0 => *x as i128,
        _ => {
            errs.push(f.path(name), INVALID_TYPE, EXPECT_VEHICLES);
            return None;
        }
    };
    match u32::try_from(count) {
        Ok(n) if n <= MAX_VEHICLE_COUNT => Some(n),
        _ => {
            errs.push(f.path(name), OUT_OF_RANGE, EXPECT_VEHICLES);
            None
        }
    }
}

pub(super) fn expires_at_field(
    f: &Fields<'_, '_>,
    name: &str,
    now_ms: u64,
    errs: &mut Errors,
) -> Option<u64> {
    let text = string_field(f, name, false, &TIMESTAMP, errs)?;
    let ms = rfc3339_unix_ms(text)?;
    match u64::try_from(ms) {
        Ok(ms) if ms > now_ms => Some(ms),
        _ => {
            errs.push(f.path(name), OUT_OF_RANGE, EXPECT_FUTURE);
            None
        }
    }
}

/// The `attributes` object as sorted (key, scalar) pairs; every bad entry is reported.
pub(super) fn attributes_field(
    f: &Fields<'_, '_>,
    name: &str,
    errs: &mut Errors,
) -> Vec<(String, Scalar)> {
    const EXPECT_ATTRIBUTES: &str = "JSON object of scalar values";
    let path = f.path(name);
    let obj = match f.get(name) {
        None => return Vec::new(),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            errs.push(path, INVALID_TYPE, EXPECT_ATTRIBUTES);
            return Vec::new();
        }
    };
    if obj.len() > MAX_ATTRIBUTES {
        // One error for the whole object: listing each entry would only repeat the same fix.
        errs.push(
            path,
            TOO_LONG,
            format!("at most {MAX_ATTRIBUTES} attributes"),
        );
        return Vec::new();
    }
    let mut attrs: Vec<(String, Scalar)> = Vec::with_capacity(obj.len());
    for (key, value) in obj.iter() {
        let key: &str = key;
        if let Some(scalar) = attribute(&path, key, value, errs) {
            attrs.push((key.to_owned(), scalar));
        }
    }
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    report_repeated(&path, &attrs, errs);
    attrs
}

/// One attribute's value, or `None` after recording why its key or value is refused.
fn attribute(path: &str, key: &str, value: &Value<'_>, errs: &mut Errors) -> Option<Scalar> {
    // The path is built only for an error, so valid attributes cost no allocation for it.
    let field = || format!("{path}.{}", display_key(key));
    if key.is_empty() || key.chars().any(char::is_control) {
        errs.push(field(), INVALID_FORMAT, "key of visible characters");
        return None;
    }
    if key.len() > MAX_ATTRIBUTE_KEY_LEN && key.chars().count() > MAX_ATTRIBUTE_KEY_LEN {
        errs.push(
            field(),
            TOO_LONG,
            format!("key of at most {MAX_ATTRIBUTE_KEY_LEN} characters"),
        );
        return None;
    }
    let scalar = match value {
        Value::Static(StaticNode::Null) => Scalar::Null,
        Value::Static(StaticNode::Bool(b)) => Scalar::Bool(*b),
        Value::Static(StaticNode::I64(i)) => Scalar::Int(*i),
        Value::Static(StaticNode::U64(u)) => match i64::try_from(*u) {
            Ok(i) => Scalar::Int(i),
            Err(_) => {
                errs.push(
                    field(),
                    OUT_OF_RANGE,
                    "integer within the signed 64-bit range",
                );
                return None;
            }
        },
        Value::Static(StaticNode::F64(x)) => Scalar::Float(*x),
        Value::String(s) => {
            if s.len() > MAX_STRING_LEN && s.chars().count() > MAX_STRING_LEN {
                errs.push(
                    field(),
                    TOO_LONG,
                    format!("at most {MAX_STRING_LEN} characters"),
                );
                return None;
            }
            Scalar::Str(s.to_string())
        }
        Value::Array(_) | Value::Object(_) => {
            errs.push(field(), INVALID_TYPE, EXPECT_SCALAR);
            return None;
        }
    };
    Some(scalar)
}

/// Reports each key that occurs more than once in `attrs` (sorted by key), once.
fn report_repeated(path: &str, attrs: &[(String, Scalar)], errs: &mut Errors) {
    let mut repeated: Vec<String> = Vec::new();
    for pair in attrs.windows(2) {
        if pair[0].0 == pair[1].0 && repeated.last() != Some(&pair[0].0) {
            repeated.push(pair[0].0.clone());
        }
    }
    for key in repeated {
        errs.push(format!("{path}.{key}"), INVALID_FORMAT, EXPECT_UNIQUE_KEY);
    }
}
