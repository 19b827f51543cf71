//! The native API: decide, reward, explain.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as Json_};

use crate::{Decision, DecisionId, Features};

/// Parses a JSON body into `T`; a refused or malformed body is the response to send.
fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Box<Response>> {
    let body = body.map_err(|e| Box::new(super::body_error(&e)))?;
    serde_json::from_slice(&body).map_err(|e| {
        Box::new(super::error(
            StatusCode::BAD_REQUEST,
            format!("bad request body: {e}"),
        ))
    })
}

fn decision_json<H: crate::SnapshotHold>(slot: &str, d: &Decision<H>) -> Json_ {
    json!({
        "slot": slot,
        "variant": d.variant(),
        "payload": d.payload_json().and_then(|p| serde_json::from_str::<Json_>(&p).ok()),
        "reason": d.reason().kind().as_str(),
        "propensity": d.propensity(),
        "decision_id": d.id().to_string(),
        "config_version": d.config_version(),
        "model_version": d.model_version(),
        "features": d.feature_status().as_str(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideRequest {
    slot: Option<String>,
    #[serde(default)]
    slots: Vec<String>,
    user: String,
    features: Option<Features>,
}

pub(super) async fn decide(
    State(s): State<super::State>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: DecideRequest = match parse(body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let slots: Vec<String> = req.slot.into_iter().chain(req.slots).collect();
    if slots.is_empty() {
        return super::error(StatusCode::BAD_REQUEST, "give \"slot\" or \"slots\"");
    }
    super::within(
        s.timeout,
        async move {
            let mut out = Vec::with_capacity(slots.len());
            for slot in &slots {
                let d = match &req.features {
                    Some(f) => decision_json(slot, &s.engine.decide(slot, &req.user, f)),
                    None => decision_json(slot, &s.engine.decide_for_async(slot, &req.user).await),
                };
                out.push(d);
            }
            (StatusCode::OK, Json(json!({"decisions": out}))).into_response()
        },
        super::timed_out,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RewardRequest {
    decision_id: Option<DecisionId>,
    slot: Option<String>,
    variant: Option<String>,
    reward: f64,
}

pub(super) async fn reward(
    State(s): State<super::State>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: RewardRequest = match parse(body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let outcome = match (req.decision_id, req.slot, req.variant) {
        (Some(id), None, None) => s.engine.reward(id, req.reward),
        (None, Some(slot), Some(variant)) => s.engine.reward_variant(&slot, &variant, req.reward),
        _ => {
            return super::error(
                StatusCode::BAD_REQUEST,
                "give \"decision_id\", or \"slot\" and \"variant\"",
            )
        }
    };
    (
        StatusCode::OK,
        Json(json!({"outcome": outcome.metric_name()})),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainRequest {
    slot: String,
    user: String,
    #[serde(default)]
    features: Features,
}

pub(super) async fn explain(
    State(s): State<super::State>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: ExplainRequest = match parse(body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let x = s.engine.explain(&req.slot, &req.user, &req.features);
    let body = json!({"decision": decision_json(&req.slot, &x.decision), "steps": x.steps});
    (StatusCode::OK, Json(body)).into_response()
}
