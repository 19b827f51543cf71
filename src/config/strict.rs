//! Reading a config document into a `serde_json::Value` while rejecting duplicate object
//! keys (serde_json's own `Value` keeps the last one silently) and oversized documents.

use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Deepest nesting a config may have (objects and arrays). serde_json stops at 128 on its
/// own; other serde formats may not, and this keeps the error the same for all of them.
pub(crate) const MAX_DEPTH: usize = 64;

/// Deserializes one value; `path` is where it sits (`slots[2].rules`), for messages.
pub(crate) struct Strict<'p> {
    pub(crate) path: &'p str,
    pub(crate) depth: usize,
}

impl Strict<'_> {
    fn child(&self, step: fmt::Arguments<'_>) -> String {
        let mut p = String::with_capacity(self.path.len() + 8);
        p.push_str(self.path);
        let _ = p.write_fmt(step);
        p
    }

    fn deeper<E: de::Error>(&self) -> Result<usize, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "{}: nested deeper than {MAX_DEPTH} levels",
                shown(self.path)
            )));
        }
        Ok(self.depth + 1)
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() {
        "(root)"
    } else {
        path
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.deeper()?;
        let mut out = Vec::new();
        loop {
            let path = self.child(format_args!("[{}]", out.len()));
            match seq.next_element_seed(Strict { path: &path, depth })? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.deeper()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                self.child(format_args!(".{key}"))
            };
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "{}: duplicate key {key:?}",
                    shown(self.path)
                )));
            }
            let v = map.next_value_seed(Strict { path: &path, depth })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}
