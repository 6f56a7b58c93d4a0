//! Attribute rules of `[buyers.filters]`, compiled at load into what a check needs: sorted value
//! lists searched without allocating, and range bounds with their open ends filled in.
//!
//! A rule looks up its key in the ping's `attributes` (at most a few dozen entries, so a linear
//! scan is as fast as any index and needs no memory per ping). A key that is absent or `null` is a
//! missing value: every op refuses it except `not_in`, which only keeps named values out.

use crate::config::{AttributeOp, AttributeRule, FilterValue};
use crate::model::Scalar;

use super::FilterReason;

/// The values of an `eq`, `in` or `not_in` rule, split by kind so a ping value is compared only
/// with values of its own kind. Integral numbers are kept as integers, so `3` and `3.0` are the
/// same value on either side and large integers compare exactly.
#[derive(Debug, Default)]
struct ValueSet {
    strs: Vec<String>,
    ints: Vec<i64>,
    floats: Vec<f64>,
    has_true: bool,
    has_false: bool,
}

/// `f` as an integer when it is one that `i64` holds exactly.
fn as_int(f: f64) -> Option<i64> {
    // 2^63 as f64 is exact; anything at or above it does not fit.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

impl ValueSet {
    fn compile<'a>(values: impl IntoIterator<Item = &'a FilterValue>) -> ValueSet {
        let mut set = ValueSet::default();
        for v in values {
            match v {
                FilterValue::Bool(true) => set.has_true = true,
                FilterValue::Bool(false) => set.has_false = true,
                FilterValue::Int(i) => set.ints.push(*i),
                FilterValue::Float(f) => match as_int(*f) {
                    Some(i) => set.ints.push(i),
                    None => set.floats.push(*f),
                },
                FilterValue::Str(s) => set.strs.push(s.clone()),
            }
        }
        set.strs.sort_unstable();
        set.ints.sort_unstable();
        // Config validation refused NaN, so every float compares.
        set.floats.sort_unstable_by(f64::total_cmp);
        set
    }

    fn contains(&self, v: &Scalar) -> bool {
        match v {
            Scalar::Bool(true) => self.has_true,
            Scalar::Bool(false) => self.has_false,
            Scalar::Int(i) => self.ints.binary_search(i).is_ok(),
            Scalar::Float(f) => match as_int(*f) {
                Some(i) => self.ints.binary_search(&i).is_ok(),
                None => self.floats.binary_search_by(|x| x.total_cmp(f)).is_ok(),
            },
            Scalar::Str(s) => self
                .strs
                .binary_search_by(|x| x.as_str().cmp(s.as_str()))
                .is_ok(),
            Scalar::Null => false,
        }
    }
}

#[derive(Debug)]
enum Test {
    Eq(ValueSet),
    In(ValueSet),
    NotIn(ValueSet),
    /// Inclusive bounds; an open end is infinite.
    Range(f64, f64),
    Exists,
}

/// One compiled attribute rule.
#[derive(Debug)]
pub(super) struct Rule {
    key: String,
    test: Test,
}

impl Rule {
    /// Compiles a rule that `Config::validate` accepted.
    pub(super) fn compile(r: &AttributeRule) -> Rule {
        let test = match r.op {
            AttributeOp::Eq => Test::Eq(ValueSet::compile(r.value.iter())),
            AttributeOp::In => Test::In(ValueSet::compile(&r.values)),
            AttributeOp::NotIn => Test::NotIn(ValueSet::compile(&r.values)),
            AttributeOp::Range => Test::Range(
                r.min.unwrap_or(f64::NEG_INFINITY),
                r.max.unwrap_or(f64::INFINITY),
            ),
            AttributeOp::Exists => Test::Exists,
        };
        Rule {
            key: r.key.clone(),
            test,
        }
    }

    /// Checks the rule against a ping's attributes; `Err` is the rule's own reason.
    pub(super) fn check(&self, attributes: &[(String, Scalar)]) -> Result<(), FilterReason> {
        let value = attributes
            .iter()
            .find(|(k, _)| *k == self.key)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, Scalar::Null));
        let (ok, reason) = match &self.test {
            Test::Eq(set) => (
                value.is_some_and(|v| set.contains(v)),
                FilterReason::AttributeNotEqual,
            ),
            Test::In(set) => (
                value.is_some_and(|v| set.contains(v)),
                FilterReason::AttributeNotAllowed,
            ),
            Test::NotIn(set) => (
                !value.is_some_and(|v| set.contains(v)),
                FilterReason::AttributeDenied,
            ),
            Test::Range(lo, hi) => {
                let n = match value {
                    Some(Scalar::Int(i)) => Some(*i as f64),
                    Some(Scalar::Float(f)) => Some(*f),
                    _ => None,
                };
                (
                    n.is_some_and(|n| *lo <= n && n <= *hi),
                    FilterReason::AttributeOutOfRange,
                )
            }
            Test::Exists => (value.is_some(), FilterReason::AttributeMissing),
        };
        if ok {
            Ok(())
        } else {
            Err(reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(key: &str, op: AttributeOp, f: impl FnOnce(&mut AttributeRule)) -> Rule {
        let mut r = AttributeRule::new(key, op);
        f(&mut r);
        Rule::compile(&r)
    }

    fn attrs() -> Vec<(String, Scalar)> {
        vec![
            ("credit_band".into(), Scalar::Str("good".into())),
            ("homeowner".into(), Scalar::Bool(true)),
            ("years".into(), Scalar::Int(3)),
            ("ratio".into(), Scalar::Float(0.5)),
            ("gone".into(), Scalar::Null),
        ]
    }

    #[test]
    fn each_op_passes_and_refuses() {
        let a = attrs();
        let eq = |v| rule("credit_band", AttributeOp::Eq, |r| r.value = Some(v));
        assert_eq!(eq(FilterValue::Str("good".into())).check(&a), Ok(()));
        assert_eq!(
            eq(FilterValue::Str("poor".into())).check(&a),
            Err(FilterReason::AttributeNotEqual)
        );
        // Numbers compare by value whichever way they were written.
        let years = rule("years", AttributeOp::Eq, |r| {
            r.value = Some(FilterValue::Float(3.0))
        });
        assert_eq!(years.check(&a), Ok(()));
        let within = rule("years", AttributeOp::In, |r| {
            r.values = vec![FilterValue::Int(1), FilterValue::Int(3)]
        });
        assert_eq!(within.check(&a), Ok(()));
        let bools = rule("homeowner", AttributeOp::In, |r| {
            r.values = vec![FilterValue::Bool(false)]
        });
        assert_eq!(bools.check(&a), Err(FilterReason::AttributeNotAllowed));
        let deny = |key: &str| {
            rule(key, AttributeOp::NotIn, |r| {
                r.values = vec![FilterValue::Str("good".into())]
            })
        };
        assert_eq!(
            deny("credit_band").check(&a),
            Err(FilterReason::AttributeDenied)
        );
        // A missing or null value is not in any list, so not_in lets it pass.
        assert_eq!(deny("absent").check(&a), Ok(()));
        assert_eq!(deny("gone").check(&a), Ok(()));
        let range = |lo, hi| {
            rule("ratio", AttributeOp::Range, |r| {
                r.min = lo;
                r.max = hi
            })
        };
        assert_eq!(range(Some(0.5), Some(0.5)).check(&a), Ok(()));
        assert_eq!(
            range(None, Some(0.4)).check(&a),
            Err(FilterReason::AttributeOutOfRange)
        );
        assert_eq!(range(Some(0.0), None).check(&a), Ok(()));
        // A string is no number, so no range holds it.
        let text = rule("credit_band", AttributeOp::Range, |r| r.min = Some(0.0));
        assert_eq!(text.check(&a), Err(FilterReason::AttributeOutOfRange));
        let exists = |key: &str| rule(key, AttributeOp::Exists, |_| {});
        assert_eq!(exists("homeowner").check(&a), Ok(()));
        assert_eq!(
            exists("gone").check(&a),
            Err(FilterReason::AttributeMissing)
        );
        assert_eq!(
            exists("absent").check(&a),
            Err(FilterReason::AttributeMissing)
        );
        // Every op but not_in refuses a missing value with its own reason.
        assert_eq!(
            eq(FilterValue::Str("good".into())).check(&[]),
            Err(FilterReason::AttributeNotEqual)
        );
        assert_eq!(
            range(None, None).check(&[]),
            Err(FilterReason::AttributeOutOfRange)
        );
    }
}
