//! Between OpenFeature's types and elvon's: context fields to features, payloads to values.

use std::collections::HashMap;

use open_feature::{
    EvaluationContext, EvaluationContextFieldValue as Field, EvaluationError, EvaluationErrorCode,
    StructValue, Value,
};
use serde_json::Value as Json;

use super::error;
use crate::Features;

/// The features of a context: every custom field (the targeting key is the user).
pub(super) fn features(ctx: &EvaluationContext) -> Result<Features, EvaluationError> {
    let mut out = Features::with_capacity(ctx.custom_fields.len());
    for (name, field) in &ctx.custom_fields {
        let v = match field {
            Field::Bool(b) => crate::Value::Bool(*b),
            Field::Int(i) => crate::Value::Int(*i),
            Field::Float(f) => crate::Value::Float(*f),
            Field::String(s) => crate::Value::from(s.as_str()),
            Field::DateTime(t) => crate::Value::Int(t.unix_timestamp()),
            Field::Struct(any) => match any.downcast_ref::<Vec<String>>() {
                Some(list) => crate::Value::from(list.clone()),
                None => {
                    return Err(error(
                        EvaluationErrorCode::InvalidContext,
                        format!(
                            "context field {name:?} is a structure elvon cannot read \
                             (only Vec<String> lists are features)"
                        ),
                    ))
                }
            },
        };
        out.insert(name.clone(), v);
    }
    Ok(out)
}

/// The payload as JSON; `None` for a variant without one.
fn payload(p: Option<&str>) -> Result<Option<Json>, EvaluationError> {
    p.map(|b| {
        serde_json::from_str(b).map_err(|e| {
            error(
                EvaluationErrorCode::ParseError,
                format!("the payload is not JSON: {e}"),
            )
        })
    })
    .transpose()
}

fn mismatch(want: &str, got: Option<&Json>) -> EvaluationError {
    let got = match got {
        None => "no payload (the value is the variant id, a string)",
        Some(Json::Null) => "null",
        Some(Json::Bool(_)) => "a boolean",
        Some(Json::Number(n)) if n.is_f64() => "a float",
        Some(Json::Number(_)) => "an integer",
        Some(Json::String(_)) => "a string",
        Some(Json::Array(_)) => "an array",
        Some(Json::Object(_)) => "an object",
    };
    error(
        EvaluationErrorCode::TypeMismatch,
        format!("asked for {want}, the payload is {got}"),
    )
}

pub(super) fn bool(p: Option<&str>, _variant: &str) -> Result<bool, EvaluationError> {
    match payload(p)? {
        Some(Json::Bool(b)) => Ok(b),
        other => Err(mismatch("a boolean", other.as_ref())),
    }
}

pub(super) fn int(p: Option<&str>, _variant: &str) -> Result<i64, EvaluationError> {
    match payload(p)? {
        Some(Json::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or_default()),
        other => Err(mismatch("an integer", other.as_ref())),
    }
}

pub(super) fn float(p: Option<&str>, _variant: &str) -> Result<f64, EvaluationError> {
    match payload(p)? {
        Some(Json::Number(n)) if n.as_f64().is_some() => Ok(n.as_f64().unwrap_or_default()),
        other => Err(mismatch("a float", other.as_ref())),
    }
}

pub(super) fn string(p: Option<&str>, variant: &str) -> Result<String, EvaluationError> {
    match payload(p)? {
        None => Ok(variant.to_owned()),
        Some(Json::String(s)) => Ok(s),
        other => Err(mismatch("a string", other.as_ref())),
    }
}

pub(super) fn structure(p: Option<&str>, _variant: &str) -> Result<StructValue, EvaluationError> {
    match payload(p)? {
        Some(Json::Object(m)) => Ok(object(m)),
        other => Err(mismatch("a structure (a JSON object)", other.as_ref())),
    }
}

fn object(m: serde_json::Map<String, Json>) -> StructValue {
    let fields: HashMap<String, Value> = m
        .into_iter()
        .filter_map(|(k, v)| Some((k, value(v)?)))
        .collect();
    StructValue { fields }
}

/// A JSON value as an OpenFeature value; `null` has none (the field is left out).
fn value(v: Json) -> Option<Value> {
    Some(match v {
        Json::Null => return None,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(s),
        Json::Array(a) => Value::Array(a.into_iter().filter_map(value).collect()),
        Json::Object(m) => Value::Struct(object(m)),
    })
}
