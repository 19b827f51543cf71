//! How requested features map to hash fields, and field text to values.

use crate::features::aggregate::{bucket_field, AggregateKind};
use crate::features::{Features, Value};

use super::*;

/// How one requested feature is read from the user's hash.
pub(super) enum Part {
    /// One field, decoded from JSON.
    Plain,
    /// One field holding an all-time counter or sum.
    Total(AggregateKind),
    /// `n` bucket fields summed.
    Window(AggregateKind, usize),
}

impl Shared {
    pub(super) fn key(&self, user: &str) -> String {
        format!("{}{{{user}}}", self.prefix)
    }

    /// The hash fields to read for `names` at `now`, and how to turn them back into values.
    pub(super) fn plan(&self, names: &[Box<str>], now: u64) -> (Vec<String>, Vec<Part>) {
        let mut fields = Vec::with_capacity(names.len());
        let mut plan = Vec::with_capacity(names.len());
        for name in names {
            match self.aggregates.get(name) {
                Some(d) if !matches!(d.kind, AggregateKind::Last { .. }) => match d.window {
                    Some(w) => {
                        let first = w.first_live(now);
                        let last = w.bucket(now);
                        for b in first..=last {
                            fields.push(bucket_field(name, b));
                        }
                        plan.push(Part::Window(d.kind.clone(), (last - first + 1) as usize));
                    }
                    None => {
                        fields.push(name.to_string());
                        plan.push(Part::Total(d.kind.clone()));
                    }
                },
                _ => {
                    fields.push(name.to_string());
                    plan.push(Part::Plain);
                }
            }
        }
        (fields, plan)
    }
}

/// Turns HMGET answers back into features, following `plan`. A value that is not UTF-8, or a
/// counter that is not a number, is an error about this user's data.
pub(super) fn decode(
    names: &[Box<str>],
    plan: &[Part],
    vals: Vec<Option<Vec<u8>>>,
) -> Result<Features, String> {
    let mut out = Vec::with_capacity(names.len());
    let mut vals = vals.into_iter();
    let text = |name: &str, raw: Vec<u8>| {
        String::from_utf8(raw).map_err(|_| format!("feature {name:?} is not UTF-8 text"))
    };
    let num = |name: &str, v: Option<Vec<u8>>| -> Result<f64, String> {
        let Some(raw) = v else { return Ok(0.0) };
        let s = text(name, raw)?;
        s.trim()
            .parse::<f64>()
            .map_err(|_| format!("aggregate {name:?} holds {s:.40?}, not a number"))
    };
    for (name, part) in names.iter().zip(plan) {
        let value = match part {
            Part::Plain => match vals.next().flatten() {
                Some(raw) => decode_value(text(name, raw)?),
                None => continue,
            },
            Part::Total(kind) => kind.total_value(num(name, vals.next().flatten())?),
            Part::Window(kind, n) => {
                let mut total = 0.0;
                for v in vals.by_ref().take(*n) {
                    total += num(name, v)?;
                }
                kind.total_value(total)
            }
        };
        out.push((name.to_string(), value));
    }
    Ok(out.into_iter().collect())
}

/// A field's text as a value: JSON if it parses as one of the value types, else the string.
pub(super) fn decode_value(raw: String) -> Value {
    serde_json::from_str::<Value>(&raw).unwrap_or(Value::Str(raw.into()))
}

/// A value as field text (JSON).
pub(super) fn encode(v: &Value) -> Result<String, String> {
    if let Value::Float(x) = v {
        if !x.is_finite() {
            return Err(format!("{x} is not a finite number"));
        }
    }
    serde_json::to_string(v).map_err(|e| e.to_string())
}
