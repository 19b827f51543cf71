//! Compiled targeting conditions and their evaluation.

use std::cmp::Ordering;
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

    /// Whether `a.cmp(b)` being `o` satisfies the operator.
    #[inline]
    fn holds_ordering(self, o: Ordering) -> bool {
        match self {
            Cmp::Lt => o.is_lt(),
            Cmp::Le => o.is_le(),
            Cmp::Gt => o.is_gt(),
            Cmp::Ge => o.is_ge(),
            Cmp::Eq => o.is_eq(),
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
    /// The last feature read as a version or an instant in this decision, parsed: each is
    /// parsed once per decision, not once per condition that reads it.
    pub(crate) parsed: Parsed,
}

/// Per-decision memo of parsed feature values (by feature id).
#[derive(Default)]
pub(crate) struct Parsed {
    version: Option<(u32, Option<Ver>)>,
    instant: Option<(u32, Option<i128>)>,
}

impl Parsed {
    fn version(&mut self, id: u32, v: &Value) -> Option<&Ver> {
        if !matches!(&self.version, Some((k, _)) if *k == id) {
            let parsed = v.as_str().and_then(Ver::parse);
            self.version = Some((id, parsed));
        }
        self.version.as_ref()?.1.as_ref()
    }

    fn instant(&mut self, id: u32, v: &Value) -> Option<i128> {
        match self.instant {
            Some((k, t)) if k == id => t,
            _ => {
                let t = feature_instant(v);
                self.instant = Some((id, t));
                t
            }
        }
    }
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
                    Some(v) => match eval_parsed(test, key.id, v, &mut self.parsed) {
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

/// [`eval_test`], with versions and instants read through the decision's memo.
#[inline]
fn eval_parsed(test: &Test, id: u32, v: &Value, parsed: &mut Parsed) -> Option<bool> {
    Some(match test {
        Test::Semver(op, x) => op.holds_ordering(parsed.version(id, v)?.cmp_to(x)),
        Test::SemverReq(req) => parsed.version(id, v)?.matches(req),
        Test::Before(t) => parsed.instant(id, v)? < *t,
        Test::After(t) => parsed.instant(id, v)? > *t,
        _ => return eval_test(test, v),
    })
}

/// A feature read as a version: a plain `MAJOR.MINOR.PATCH` kept as three numbers (no
/// `semver::Version` built or dropped), anything else as `semver` parsed it.
pub(crate) enum Ver {
    Plain([u64; 3]),
    Full(Version),
}

impl Ver {
    /// `None` where `semver::Version::parse` fails.
    #[inline]
    fn parse(s: &str) -> Option<Ver> {
        match plain_version(s.as_bytes()) {
            Some(t) => Some(Ver::Plain(t)),
            None => Version::parse(s).ok().map(Ver::Full),
        }
    }

    /// The same as `Version::cmp` of the parsed version against `x`.
    #[inline]
    fn cmp_to(&self, x: &Version) -> Ordering {
        match self {
            Ver::Plain(t) => {
                let o = t.cmp(&[x.major, x.minor, x.patch]);
                if o.is_ne() || (x.pre.is_empty() && x.build.is_empty()) {
                    o
                } else {
                    // Same numbers, `x` has a pre-release or build part: semver decides.
                    Version::new(t[0], t[1], t[2]).cmp(x)
                }
            }
            Ver::Full(v) => v.cmp(x),
        }
    }

    fn matches(&self, req: &VersionReq) -> bool {
        match self {
            Ver::Plain(t) => req.matches(&Version::new(t[0], t[1], t[2])),
            Ver::Full(v) => req.matches(v),
        }
    }
}

/// A version as `semver::Version::parse` reads it. A plain `MAJOR.MINOR.PATCH` (the common
/// app-version form) is read without the general parser; the result is the same.
#[inline]
pub(crate) fn parse_version(s: &str) -> Option<Version> {
    match plain_version(s.as_bytes()) {
        Some([major, minor, patch]) => Some(Version::new(major, minor, patch)),
        None => Version::parse(s).ok(),
    }
}

/// `MAJOR.MINOR.PATCH` of ASCII digits, each without a leading zero and fitting a `u64`;
/// `None` for anything else (which the general parser then reads or rejects).
#[inline]
fn plain_version(b: &[u8]) -> Option<[u64; 3]> {
    let mut out = [0u64; 3];
    let mut i = 0;
    for (k, part) in out.iter_mut().enumerate() {
        let start = i;
        let mut n: u64 = 0;
        while let Some(&c) = b.get(i) {
            if !c.is_ascii_digit() {
                break;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            i += 1;
        }
        let len = i - start;
        if len == 0 || (len > 1 && b[start] == b'0') {
            return None;
        }
        *part = n;
        match b.get(i) {
            Some(b'.') if k < 2 => i += 1,
            None if k == 2 => return Some(out),
            _ => return None,
        }
    }
    None
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
        Test::Semver(op, x) => op.holds(&parse_version(v.as_str()?)?, x),
        Test::SemverReq(req) => req.matches(&parse_version(v.as_str()?)?),
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

    /// The plain-version fast path gives what `semver` gives, valid or not.
    #[test]
    fn parse_version_agrees_with_semver() {
        for s in [
            "0.0.0",
            "1.2.3",
            "4.10.0",
            "18446744073709551615.0.1",
            "18446744073709551616.0.0",
            "01.2.3",
            "1.02.3",
            "1.2.03",
            "1.2",
            "1.2.3.4",
            "",
            ".",
            "1..3",
            "1.2.3-beta.1",
            "1.2.3+build.5",
            "1.2.3-rc.1+b",
            " 1.2.3",
            "1.2.3 ",
            "+1.2.3",
            "1.2.-3",
            "１.2.3",
            "1.2.3-",
            "1.2.3+",
        ] {
            assert_eq!(parse_version(s), Version::parse(s).ok(), "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_version_agrees_with_semver_on_any_text(s in "[0-9.+a-z-]{0,14}") {
            proptest::prop_assert_eq!(parse_version(&s), Version::parse(&s).ok());
        }
    }

    /// Comparing the memo's form against a config version orders as `semver` does,
    /// pre-release and build parts included (every pair of a small grid).
    #[test]
    fn ver_orders_as_semver() {
        let mut all = Vec::new();
        for t in 0..8u64 {
            for pre in ["", "-rc.1", "-alpha", "-0"] {
                for build in ["", "+5", "+b1"] {
                    all.push(format!("{}.{}.{}{pre}{build}", t >> 2, (t >> 1) & 1, t & 1));
                }
            }
        }
        for a in &all {
            let (ver, full) = (Ver::parse(a).unwrap(), Version::parse(a).unwrap());
            for b in &all {
                let b = Version::parse(b).unwrap();
                assert_eq!(ver.cmp_to(&b), full.cmp(&b), "{a} vs {b}");
                let req = VersionReq::parse(&format!(">={b}")).unwrap();
                assert_eq!(ver.matches(&req), req.matches(&full), "{a} vs {req}");
            }
        }
    }

    /// One decision reads two version features and an instant feature in several conditions:
    /// the memo keeps each feature's own parse.
    #[test]
    fn the_parse_memo_is_per_feature() {
        use crate::Features;
        let f = Features::new()
            .with("app", "2.0.0")
            .with("os", "17.1.0")
            .with("seen", "2024-01-02");
        let key = |name: &str, id| FeatureKey {
            id,
            hash: crate::bucketing::name_hash(name),
            name: name.into(),
        };
        let ge = |name, id, v: &str| {
            Cond::Test(
                key(name, id),
                Test::Semver(Cmp::Ge, Version::parse(v).unwrap()),
            )
        };
        let after = |id, t| Cond::Test(key("seen", id), Test::After(t));
        let day = parse_instant("2024-01-02").unwrap();
        let cases = [
            (
                Cond::All(vec![
                    ge("app", 0, "2.0.0"),
                    ge("os", 1, "17.0.0"),
                    ge("app", 0, "1.0.0"),
                ]),
                true,
            ),
            (
                Cond::All(vec![ge("os", 1, "17.0.0"), ge("app", 0, "2.0.1")]),
                false,
            ),
            (
                Cond::Any(vec![
                    ge("app", 0, "3.0.0"),
                    ge("os", 1, "18.0.0"),
                    ge("app", 0, "2.0.0"),
                ]),
                true,
            ),
            (
                Cond::All(vec![
                    after(2, day - 1),
                    ge("app", 0, "2.0.0"),
                    after(2, day - 1),
                ]),
                true,
            ),
            (Cond::All(vec![after(2, day - 1), after(2, day)]), false),
        ];
        for (i, (c, want)) in cases.iter().enumerate() {
            let mut ev = Eval {
                features: &f,
                segments: &[],
                segment_names: &[],
                issue: None,
                trace: super::super::trace::NoTrace,
                parsed: Parsed::default(),
            };
            assert_eq!(ev.cond(c), *want, "case {i}");
            assert_eq!(ev.issue, None, "case {i}");
        }
    }

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
