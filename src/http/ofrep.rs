//! OFREP: single and bulk flag evaluation.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value as Json_};

use crate::{Decision, DecisionId, Features, SnapshotHold};

/// An OFREP error code with its details.
type Failure = (&'static str, String);

/// The user and features of an OFREP request body.
fn context(body: &[u8]) -> Result<(String, Features), Failure> {
    let mut v: Json_ = serde_json::from_slice(body)
        .map_err(|e| ("PARSE_ERROR", format!("the body is not JSON: {e}")))?;
    let ctx = match v.get_mut("context").map(Json_::take) {
        Some(Json_::Object(c)) => c,
        Some(_) => return Err(("INVALID_CONTEXT", "\"context\" is not an object".into())),
        None => return Err(("INVALID_CONTEXT", "missing \"context\"".into())),
    };
    let user = match ctx.get("targetingKey") {
        Some(Json_::String(s)) if !s.is_empty() => s.clone(),
        Some(Json_::String(_)) => {
            return Err(("TARGETING_KEY_MISSING", "\"targetingKey\" is empty".into()))
        }
        Some(_) => return Err(("INVALID_CONTEXT", "\"targetingKey\" is not a string".into())),
        None => {
            return Err((
                "TARGETING_KEY_MISSING",
                "the context has no \"targetingKey\"".into(),
            ))
        }
    };
    let mut features = Features::with_capacity(ctx.len().saturating_sub(1));
    for (name, value) in ctx.into_iter().filter(|(k, _)| k != "targetingKey") {
        let v: crate::Value = serde_json::from_value(value).map_err(|e| {
            (
                "INVALID_CONTEXT",
                format!("context field {name:?} is not a feature value: {e}"),
            )
        })?;
        features.insert(name, v);
    }
    Ok((user, features))
}

/// The evaluation of one flag, as OFREP's `evaluationSuccess` (serialized straight from the
/// decision).
#[derive(Serialize)]
pub(super) struct Evaluation<'a> {
    key: &'a str,
    value: FlagValue<'a>,
    reason: &'static str,
    variant: &'a str,
    metadata: Metadata<'a>,
}

/// The payload, or the variant id for a variant without one.
#[derive(Serialize)]
#[serde(untagged)]
enum FlagValue<'a> {
    Payload(&'a RawValue),
    VariantId(&'a str),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    decision_id: DecisionId,
    propensity: f64,
    config_version: &'a str,
    elvon_reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<u64>,
}

pub(super) fn success<'a, H: SnapshotHold>(key: &'a str, d: &'a Decision<H>) -> Evaluation<'a> {
    let variant = d.variant().unwrap_or_default();
    let value = match d.payload_raw() {
        Some(raw) => FlagValue::Payload(raw),
        None => FlagValue::VariantId(variant),
    };
    let kind = d.reason().kind();
    Evaluation {
        key,
        value,
        reason: kind.openfeature_reason(),
        variant,
        metadata: Metadata {
            decision_id: d.id(),
            propensity: d.propensity(),
            config_version: d.config_version(),
            elvon_reason: kind.as_str(),
            model_version: d.model_version(),
        },
    }
}

impl Evaluation<'_> {
    /// Feeds what a client caches (key, value, variant, reason) to the bulk ETag.
    fn tag(&self, h: &mut xxhash_rust::xxh3::Xxh3) {
        let value = match &self.value {
            FlagValue::Payload(raw) => raw.get(),
            FlagValue::VariantId(id) => id,
        };
        let kind = [u8::from(matches!(self.value, FlagValue::Payload(_)))];
        for part in [
            self.key.as_bytes(),
            &kind,
            value.as_bytes(),
            self.variant.as_bytes(),
            self.reason.as_bytes(),
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
}

fn failure(status: StatusCode, key: Option<&str>, (code, details): Failure) -> Response {
    let mut body = json!({"errorCode": code, "errorDetails": details});
    if let Some(k) = key {
        body["key"] = k.into();
    }
    (status, Json(body)).into_response()
}

/// The user and features of a request, or the answer to a body that is refused or is not
/// an OFREP request (`key` names the flag in the answer, for single evaluations).
fn request(
    body: Result<Bytes, BytesRejection>,
    key: Option<&str>,
) -> Result<(String, Features), Box<Response>> {
    let body = body.map_err(|e| Box::new(super::body_error(&e)))?;
    context(&body).map_err(|f| Box::new(failure(StatusCode::BAD_REQUEST, key, f)))
}

pub(super) async fn evaluate(
    State(s): State<super::State>,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (user, features) = match request(body, Some(&key)) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    if s.engine.snapshot().features_for(&key).is_none() {
        let f = (
            "FLAG_NOT_FOUND",
            format!("flag {key:?} is not a slot of the serving config"),
        );
        return failure(StatusCode::NOT_FOUND, Some(&key), f);
    }
    // A context with nothing but the targeting key: the features come from the source.
    if features.is_empty() {
        let f = async {
            let d = s.engine.decide_for_async(&key, &user).await;
            (StatusCode::OK, Json(success(&key, &d))).into_response()
        };
        return super::within(s.timeout, f, timed_out).await;
    }
    let d = s.engine.decide(&key, &user, &features);
    (StatusCode::OK, Json(success(&key, &d))).into_response()
}

/// OFREP's `generalErrorResponse` for a request past its deadline.
fn timed_out() -> Response {
    let body = json!({"errorDetails": "request timed out"});
    (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
}

pub(super) async fn bulk(
    State(s): State<super::State>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (user, features) = match request(body, None) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    super::within(
        s.timeout,
        bulk_answer(&s, &headers, &user, &features),
        timed_out,
    )
    .await
}

async fn bulk_answer(
    s: &super::State,
    headers: &HeaderMap,
    user: &str,
    features: &Features,
) -> Response {
    let snap = s.engine.snapshot();
    let mut flags = Vec::new();
    // The ETag covers what the client caches (key, value, variant, reason), not the
    // per-decision metadata, so the same answers give the same tag.
    let mut tag = xxhash_rust::xxh3::Xxh3::new();
    tag.update(snap.version().as_bytes());
    let mut decisions = Vec::new();
    for slot in snap.slots() {
        // Without context fields, the features come from the source.
        decisions.push(if features.is_empty() {
            s.engine.decide_for_async(slot, user).await
        } else {
            s.engine.decide(slot, user, features).into_owned()
        });
    }
    for (slot, d) in snap.slots().zip(&decisions) {
        let f = success(slot, d);
        f.tag(&mut tag);
        flags.push(f);
    }
    let etag = format!("\"{:016x}\"", tag.digest());
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let body = json!({"flags": flags, "metadata": {"version": snap.version()}});
    (StatusCode::OK, [(header::ETAG, etag)], Json(body)).into_response()
}
