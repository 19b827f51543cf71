//! A path-tracking walker over `serde_json::Value` that collects problems instead of stopping.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::ConfigProblem;

pub(crate) type Obj = Map<String, Value>;

/// The longest id, version or feature name a config may use, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 256;

#[derive(Default)]
pub(crate) struct Ctx {
    path: String,
    pub(crate) problems: Vec<ConfigProblem>,
    pub(crate) warnings: Vec<ConfigProblem>,
}

impl Ctx {
    /// Runs `f` with `.name` appended to the path.
    pub(crate) fn field<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(name);
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Runs `f` with `[i]` appended to the path.
    pub(crate) fn index<R>(&mut self, i: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        // Writing to a String cannot fail.
        let _ = write!(self.path, "[{i}]");
        let r = f(self);
        self.path.truncate(len);
        r
    }

    pub(crate) fn path(&self) -> &str {
        if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        }
    }

    pub(crate) fn error(&mut self, message: impl Into<String>) {
        let p = ConfigProblem::new(self.path(), message);
        self.problems.push(p);
    }

    pub(crate) fn warn(&mut self, message: impl Into<String>) {
        let p = ConfigProblem::new(self.path(), message);
        self.warnings.push(p);
    }

    /// The value as an object, or a problem.
    pub(crate) fn object<'v>(&mut self, v: &'v Value) -> Option<&'v Obj> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.error(format!("expected an object, found {}", kind(other)));
                None
            }
        }
    }

    /// The value as an array, or a problem.
    pub(crate) fn array<'v>(&mut self, v: &'v Value) -> Option<&'v [Value]> {
        match v {
            Value::Array(a) => Some(a),
            other => {
                self.error(format!("expected an array, found {}", kind(other)));
                None
            }
        }
    }

    /// Reports keys of `obj` that are not in `allowed` (typos must not pass silently).
    pub(crate) fn check_keys(&mut self, obj: &Obj, allowed: &[&str]) {
        for k in obj.keys() {
            if !allowed.contains(&k.as_str()) {
                self.field(k, |c| {
                    c.error(format!(
                        "unknown field {k:?} (expected one of: {})",
                        allowed.join(", ")
                    ))
                });
            }
        }
    }

    /// Runs `f` on a required field (with the field's path), or reports it missing.
    pub(crate) fn required<'v, R>(
        &mut self,
        obj: &'v Obj,
        key: &str,
        f: impl FnOnce(&mut Self, &'v Value) -> Option<R>,
    ) -> Option<R> {
        match obj.get(key) {
            Some(v) => self.field(key, |c| f(c, v)),
            None => {
                self.error(format!("missing required field {key:?}"));
                None
            }
        }
    }

    /// A required, non-empty array field; `if_empty` is the message for an empty one.
    pub(crate) fn nonempty_array<'v>(
        &mut self,
        obj: &'v Obj,
        key: &str,
        if_empty: &str,
    ) -> Option<&'v [Value]> {
        self.required(obj, key, |c, v| {
            let items = c.array(v)?;
            if items.is_empty() {
                c.error(if_empty);
                return None;
            }
            Some(items)
        })
    }

    /// A string field; reports a problem when required and absent, or when not a string.
    pub(crate) fn str_field<'v>(
        &mut self,
        obj: &'v Obj,
        key: &str,
        required: bool,
    ) -> Option<&'v str> {
        match obj.get(key) {
            None if required => {
                self.error(format!("missing required field {key:?}"));
                None
            }
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                self.field(key, |c| {
                    c.error(format!("expected a string, found {}", kind(other)))
                });
                None
            }
        }
    }

    /// A non-empty string field of at most [`MAX_NAME_LEN`] bytes.
    pub(crate) fn id_field<'v>(&mut self, obj: &'v Obj, key: &str) -> Option<&'v str> {
        let s = self.str_field(obj, key, true)?;
        if s.is_empty() {
            self.field(key, |c| c.error("must not be empty"));
            return None;
        }
        self.field(key, |c| c.name_fits(s)).then_some(s)
    }

    /// Whether a name (an id, a version, a feature name) fits [`MAX_NAME_LEN`]; reports a
    /// problem at the current path when it does not. Names are copied into every decision
    /// record, so an unbounded one multiplies into the log.
    pub(crate) fn name_fits(&mut self, s: &str) -> bool {
        if s.len() <= MAX_NAME_LEN {
            return true;
        }
        self.error(format!(
            "is {} bytes long; ids, versions and feature names are at most {MAX_NAME_LEN} bytes",
            s.len()
        ));
        false
    }

    /// A finite number field.
    pub(crate) fn num_field(&mut self, obj: &Obj, key: &str, required: bool) -> Option<f64> {
        match obj.get(key) {
            None if required => {
                self.error(format!("missing required field {key:?}"));
                None
            }
            None => None,
            Some(v) => self.field(key, |c| c.number(v)),
        }
    }

    pub(crate) fn number(&mut self, v: &Value) -> Option<f64> {
        match v.as_f64() {
            Some(x) if x.is_finite() => Some(x),
            _ => {
                self.error(format!("expected a number, found {}", kind(v)));
                None
            }
        }
    }

    /// A boolean field (absent = `false`).
    pub(crate) fn bool_field(&mut self, obj: &Obj, key: &str) -> bool {
        match obj.get(key) {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.field(key, |c| {
                    c.error(format!("expected true or false, found {}", kind(other)))
                });
                false
            }
        }
    }

    /// A percentage (0–100, at most two decimals) as a number of buckets (0–10 000).
    pub(crate) fn percent_buckets(&mut self, v: f64) -> Option<u32> {
        if !(0.0..=100.0).contains(&v) {
            self.error(format!("percentage {v} is outside 0..=100"));
            return None;
        }
        let b = (v * 100.0).round();
        if (v * 100.0 - b).abs() > 1e-6 {
            self.error(format!(
                "percentage {v} has more than two decimals (resolution is 0.01%)"
            ));
            return None;
        }
        Some(b as u32)
    }
}

/// The index of the variant `v` names, or an error at the current path.
pub(crate) fn variant_ref(
    ctx: &mut Ctx,
    v: &Value,
    index: &std::collections::HashMap<&str, u32>,
) -> Option<u32> {
    let Value::String(s) = v else {
        ctx.error(format!("expected a variant id, found {}", kind(v)));
        return None;
    };
    let found = index.get(s.as_str()).copied();
    if found.is_none() {
        ctx.error(format!("unknown variant {s:?}"));
    }
    found
}

/// A short description of a JSON value's kind, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
