//! The feature value type.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::Serialize;

/// Text held by a feature: borrowed for `&'static str` literals, owned otherwise.
pub type Text = Cow<'static, str>;

/// One feature value.
///
/// Serialized untagged: `true`, `12`, `0.5`, `"KR"`, `["a", "b"]`.
///
/// Built with `From`: booleans, floats, integers that always fit an `i64` (`u64`, `usize`
/// and 128-bit integers through `TryFrom`), strings and lists of strings. A `&str` is
/// copied, so a value can come from a borrowed request field; `Value::from_static` keeps a
/// `&'static str` without a copy.
///
/// ```
/// use elvon::{Features, Value};
///
/// let country = String::from("KR");
/// let f = Features::new()
///     .with("country", country.as_str()) // borrowed: copied
///     .with("plan", Value::from_static("pro")) // static: not copied
///     .with("visits", 12u32)
///     .with("orders", Value::try_from(7u64).expect("fits an i64"));
/// assert_eq!(f.get("country").and_then(Value::as_str), Some("KR"));
/// assert!(Value::try_from(u64::MAX).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(Text),
    /// A list of strings (tags, categories, segments the user belongs to).
    List(Vec<Text>),
}

impl Value {
    /// A string value borrowing a `&'static str` (no copy, unlike `Value::from(&str)`).
    #[inline]
    #[must_use]
    pub const fn from_static(s: &'static str) -> Self {
        Value::Str(Cow::Borrowed(s))
    }

    /// A list value borrowing `&'static str`s (no copy of the strings).
    #[must_use]
    pub fn from_static_list(items: &[&'static str]) -> Self {
        Value::List(items.iter().map(|s| Cow::Borrowed(*s)).collect())
    }

    /// The value as a number, for integer and float values.
    #[inline]
    #[must_use]
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value as a string slice, for string values.
    #[inline]
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Name of the value's type, as used in error messages and traces.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::List(_) => "list",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::List(l) => write!(f, "{l:?}"),
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            #[inline]
            fn from(v: $t) -> Self { Value::Int(i64::from(v)) }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<isize> for Value {
    #[inline]
    fn from(v: isize) -> Self {
        // No Rust target has an `isize` wider than 64 bits.
        Value::Int(v as i64)
    }
}

macro_rules! try_from_int {
    ($($t:ty),*) => {$(
        /// Fails for values above `i64::MAX` (feature integers are `i64`).
        impl TryFrom<$t> for Value {
            type Error = std::num::TryFromIntError;
            #[inline]
            fn try_from(v: $t) -> Result<Self, Self::Error> {
                i64::try_from(v).map(Value::Int)
            }
        }
    )*};
}
try_from_int!(u64, usize, u128, i128);

impl From<bool> for Value {
    #[inline]
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<f32> for Value {
    #[inline]
    fn from(v: f32) -> Self {
        Value::Float(f64::from(v))
    }
}
impl From<f64> for Value {
    #[inline]
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
/// Copies the string. For a `&'static str` with no copy, use [`Value::from_static`].
impl From<&str> for Value {
    #[inline]
    fn from(v: &str) -> Self {
        Value::Str(Cow::Owned(v.to_owned()))
    }
}
impl From<&String> for Value {
    #[inline]
    fn from(v: &String) -> Self {
        Value::from(v.as_str())
    }
}
impl From<String> for Value {
    #[inline]
    fn from(v: String) -> Self {
        Value::Str(Cow::Owned(v))
    }
}
impl From<Text> for Value {
    #[inline]
    fn from(v: Text) -> Self {
        Value::Str(v)
    }
}
/// Copies the strings.
impl From<Vec<&str>> for Value {
    fn from(v: Vec<&str>) -> Self {
        Value::from(v.as_slice())
    }
}
/// Copies the strings.
impl From<&[&str]> for Value {
    fn from(v: &[&str]) -> Self {
        Value::List(v.iter().map(|s| Cow::Owned((*s).to_owned())).collect())
    }
}
impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Self {
        Value::List(v.into_iter().map(Cow::Owned).collect())
    }
}

/// Read straight from the format's own types (an `untagged` derive would buffer the value
/// and build an error message for every variant it tries first): booleans, integers (an
/// unsigned one beyond `i64` becomes a float), floats, strings and lists of strings.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a feature value (a boolean, a number, a string or a list of strings)")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(s) = seq.next_element::<String>()? {
            items.push(Cow::Owned(s));
        }
        Ok(Value::List(items))
    }
}

#[cfg(test)]
mod tests {
    use super::Value;

    fn parse(json: &str) -> Result<Value, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn values_read_from_json_by_kind() {
        assert_eq!(parse("true"), Ok(Value::Bool(true)));
        assert_eq!(parse("-12"), Ok(Value::Int(-12)));
        assert_eq!(parse("9223372036854775807"), Ok(Value::Int(i64::MAX)));
        assert_eq!(
            parse("18446744073709551615"),
            Ok(Value::Float(18_446_744_073_709_551_615.0))
        );
        assert_eq!(parse("2.0"), Ok(Value::Float(2.0)));
        assert_eq!(parse("0.25"), Ok(Value::Float(0.25)));
        assert_eq!(parse(r#""KR""#), Ok(Value::from("KR")));
        assert_eq!(parse(r#"["a", "b"]"#), Ok(Value::from(vec!["a", "b"])));
        assert_eq!(parse("[]"), Ok(Value::List(vec![])));
        for bad in ["null", r#"{"a": 1}"#, "[1]", r#"["a", null]"#] {
            let e = parse(bad).expect_err(bad);
            assert!(
                e.contains("feature value") || e.contains("a string"),
                "{bad}: {e}"
            );
        }
        for v in [
            Value::Bool(false),
            Value::Int(7),
            Value::Float(-1.5),
            Value::from("x"),
            Value::from(vec!["p", "q"]),
        ] {
            let text = serde_json::to_string(&v).expect("serializes");
            assert_eq!(parse(&text), Ok(v), "{text}");
        }
    }
}
