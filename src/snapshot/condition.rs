//! Compiled targeting conditions and their evaluation.

use std::collections::HashSet;

use regex::Regex;
use semver::{Version, VersionReq};

use super::lookup::StrSet;
use super::trace::Trace;
use crate::features::{str_eq, FeatureKey};
use crate::features::{Features, Value};

/// Numeric comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl Cmp {
    #[inline]
    fn holds<T: PartialOrd>(self, a: &T, b: &T) -> bool {
        match self {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Eq => a == b,
        }
    }
}

/// A literal compared for (in)equality.
#[derive(Debug, Clone)]
pub(crate) enum Lit {
    Bool(bool),
    Num(f64),
    Str(Box<str>),
}

impl std::fmt::Display for Lit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lit::Bool(b) => write!(f, "{b}"),
            Lit::Num(n) => write!(f, "{n}"),
            Lit::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// An in-list as hash sets.
#[derive(Debug, Clone, Default)]
pub(crate) struct Set {
    pub(crate) strs: StrSet,
    pub(crate) ints: HashSet<i64, ahash::RandomState>,
}

impl Set {
    /// `Some(hit)` when the value's type can be looked up, `None` on a type mismatch.
    #[inline]
    fn contains(&self, v: &Value) -> Option<bool> {
        match v {
            Value::Str(s) => Some(self.strs.contains(s)),
            Value::Int(i) => Some(self.ints.contains(i)),
            Value::Float(f) if f.fract() == 0.0 && f.is_finite() => {
                Some(self.ints.contains(&(*f as i64)))
            }
            Value::Float(_) => Some(false),
            Value::List(l) => Some(l.iter().any(|s| self.strs.contains(s))),
            Value::Bool(_) => None,
        }
    }
}

/// One operator with its compiled operand.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    Exists,
    Missing,
    Eq(Lit),
    Ne(Lit),
    In(Set),
    NotIn(Set),
    Num(Cmp, f64),
    Between(f64, f64),
    StartsWith(Box<str>),
    EndsWith(Box<str>),
    Contains(Box<str>),
    Matches(std::sync::Arc<Regex>),
    Semver(Cmp, Version),
    SemverReq(VersionReq),
    /// Instant as unix nanoseconds.
    Before(i128),
    After(i128),
}

/// A compiled condition tree.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Segment(u32),
    Test(FeatureKey, Test),
}

/// What went wrong with a feature while evaluating (first one wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Issue {
    Missing(u32),
    WrongType(u32),
}

/// Evaluation context shared by the conditions of one decision.
pub(crate) struct Eval<'a, T> {
    pub(crate) features: &'a Features,
    pub(crate) segments: &'a [Cond],
    pub(crate) segment_names: &'a [Box<str>],
    pub(crate) issue: Option<Issue>,
    pub(crate) trace: T,
}

impl<T: Trace> Eval<'_, T> {
    pub(crate) fn cond(&mut self, c: &Cond) -> bool {
        match c {
            Cond::All(cs) => cs.iter().all(|c| self.cond(c)),
            Cond::Any(cs) => cs.iter().any(|c| self.cond(c)),
            Cond::Not(c) => !self.cond(c),
            Cond::Segment(i) => {
                let i = *i as usize;
                let r = self.segments.get(i).is_some_and(|seg| self.cond(seg));
                self.trace.note(|| {
                    format!(
                        "segment {:?} → {r}",
                        self.segment_names.get(i).map_or("?", |s| &**s)
                    )
                });
                r
            }
            Cond::Test(key, test) => {
                let v = key.get(self.features);
                let r = match v {
                    None => {
                        if !matches!(test, Test::Missing | Test::Exists) {
                            self.issue.get_or_insert(Issue::Missing(key.id));
                        }
                        matches!(test, Test::Missing)
                    }
                    Some(v) => match eval_test(test, v) {
                        Some(r) => r,
                        None => {
                            self.issue.get_or_insert(Issue::WrongType(key.id));
                            false
                        }
                    },
                };
                self.trace.note(|| match v {
                    Some(v) => format!("{} = {v}: {} → {r}", key.name, describe(test)),
                    None => format!("{} is missing: {} → {r}", key.name, describe(test)),
                });
                r
            }
        }
    }
}

/// `None` means the value's type does not fit the operator.
#[inline]
fn eval_test(test: &Test, v: &Value) -> Option<bool> {
    Some(match test {
        Test::Exists => true,
        Test::Missing => false,
        Test::Eq(l) => lit_eq(l, v)?,
        Test::Ne(l) => !lit_eq(l, v)?,
        Test::In(s) => s.contains(v)?,
        Test::NotIn(s) => !s.contains(v)?,
        Test::Num(op, x) => op.holds(&v.as_f64()?, x),
        Test::Between(lo, hi) => {
            let n = v.as_f64()?;
            *lo <= n && n <= *hi
        }
        Test::StartsWith(p) => v.as_str()?.starts_with(&**p),
        Test::EndsWith(p) => v.as_str()?.ends_with(&**p),
        Test::Contains(p) => match v {
            Value::Str(s) => s.contains(&**p),
            Value::List(l) => l.iter().any(|s| **s == **p),
            _ => return None,
        },
        Test::Matches(re) => re.is_match(v.as_str()?),
        Test::Semver(op, x) => op.holds(&Version::parse(v.as_str()?).ok()?, x),
        Test::SemverReq(req) => req.matches(&Version::parse(v.as_str()?).ok()?),
        Test::Before(t) => feature_instant(v)? < *t,
        Test::After(t) => feature_instant(v)? > *t,
    })
}

#[inline]
fn lit_eq(l: &Lit, v: &Value) -> Option<bool> {
    match (l, v) {
        (Lit::Bool(a), Value::Bool(b)) => Some(a == b),
        (Lit::Str(a), Value::Str(b)) => Some(str_eq(a, b)),
        (Lit::Num(a), v) => Some(v.as_f64()? == *a),
        _ => None,
    }
}

/// A feature used as an instant: an RFC 3339 string, or integer unix seconds.
fn feature_instant(v: &Value) -> Option<i128> {
    match v {
        Value::Int(secs) => Some(i128::from(*secs) * 1_000_000_000),
        Value::Str(s) => parse_instant(s),
        _ => None,
    }
}

/// Parses an RFC 3339 timestamp or a `YYYY-MM-DD` date (midnight UTC) into unix nanoseconds.
pub(crate) fn parse_instant(s: &str) -> Option<i128> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp_nanos());
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &fmt).ok()?;
    Some(d.midnight().assume_utc().unix_timestamp_nanos())
}

fn describe(t: &Test) -> String {
    match t {
        Test::Exists => "exists".into(),
        Test::Missing => "missing".into(),
        Test::Eq(l) => format!("eq {l}"),
        Test::Ne(l) => format!("ne {l}"),
        Test::In(s) => format!("in {} values", s.strs.len() + s.ints.len()),
        Test::NotIn(s) => format!("not_in {} values", s.strs.len() + s.ints.len()),
        Test::Num(op, x) => format!("{op:?} {x}").to_lowercase(),
        Test::Between(a, b) => format!("between [{a}, {b}]"),
        Test::StartsWith(p) => format!("starts_with {p:?}"),
        Test::EndsWith(p) => format!("ends_with {p:?}"),
        Test::Contains(p) => format!("contains {p:?}"),
        Test::Matches(r) => format!("matches /{}/", r.as_str()),
        Test::Semver(op, v) => format!("semver {op:?} {v}").to_lowercase(),
        Test::SemverReq(r) => format!("semver matches {r}"),
        Test::Before(t) => format!("before {}s", t / 1_000_000_000),
        Test::After(t) => format!("after {}s", t / 1_000_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_both_forms() {
        assert_eq!(parse_instant("1970-01-02"), Some(86_400 * 1_000_000_000));
        assert_eq!(
            parse_instant("1970-01-01T00:00:10Z"),
            Some(10 * 1_000_000_000)
        );
        assert_eq!(parse_instant("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_instant("yesterday"), None);
    }

    #[test]
    fn tests_answer_none_on_type_mismatch() {
        assert_eq!(
            eval_test(&Test::Num(Cmp::Gt, 3.0), &Value::Str("x".into())),
            None
        );
        assert_eq!(
            eval_test(&Test::Num(Cmp::Gt, 3.0), &Value::Int(4)),
            Some(true)
        );
        assert_eq!(
            eval_test(&Test::Eq(Lit::Num(2.0)), &Value::Float(2.0)),
            Some(true)
        );
        let v = Version::parse("1.2.0").unwrap();
        assert_eq!(
            eval_test(
                &Test::Semver(Cmp::Ge, v.clone()),
                &Value::Str("1.10.0".into())
            ),
            Some(true)
        );
        assert_eq!(
            eval_test(&Test::Semver(Cmp::Ge, v), &Value::Str("1.x".into())),
            None
        );
        assert_eq!(
            eval_test(
                &Test::Contains("b".into()),
                &Value::List(vec!["a".into(), "b".into()])
            ),
            Some(true)
        );
        assert_eq!(eval_test(&Test::After(0), &Value::Int(1)), Some(true));
    }
}
