//! The native API: decide, reward, explain.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

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

/// One decision as the native API answers it (serialized straight from the decision).
#[derive(Serialize)]
struct DecisionOut<'a> {
    slot: &'a str,
    variant: Option<&'a str>,
    payload: Option<&'a RawValue>,
    reason: &'static str,
    propensity: f64,
    decision_id: DecisionId,
    config_version: &'a str,
    model_version: Option<u64>,
    features: &'static str,
}

fn decision_out<'a, H: crate::SnapshotHold>(slot: &'a str, d: &'a Decision<H>) -> DecisionOut<'a> {
    DecisionOut {
        slot,
        variant: d.variant(),
        payload: d.payload_raw(),
        reason: d.reason().kind().as_str(),
        propensity: d.propensity(),
        decision_id: d.id(),
        config_version: d.config_version(),
        model_version: d.model_version(),
        features: d.feature_status().as_str(),
    }
}

/// `{"decisions": [...]}`.
fn decisions_response(slots: &[String], decisions: &[crate::OwnedDecision]) -> Response {
    #[derive(Serialize)]
    struct Out<'a> {
        decisions: Vec<DecisionOut<'a>>,
    }
    let decisions = slots
        .iter()
        .zip(decisions)
        .map(|(s, d)| decision_out(s, d))
        .collect();
    (StatusCode::OK, Json(Out { decisions })).into_response()
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
    // With the features given nothing waits, so there is no deadline to keep.
    if let Some(f) = &req.features {
        let out: Vec<_> = slots
            .iter()
            .map(|slot| s.engine.decide(slot, &req.user, f).into_owned())
            .collect();
        return decisions_response(&slots, &out);
    }
    super::within(
        s.timeout,
        async move {
            let mut out = Vec::with_capacity(slots.len());
            for slot in &slots {
                out.push(s.engine.decide_for_async(slot, &req.user).await);
            }
            decisions_response(&slots, &out)
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
    let body = json!({"decision": decision_out(&req.slot, &x.decision), "steps": x.steps});
    (StatusCode::OK, Json(body)).into_response()
}
