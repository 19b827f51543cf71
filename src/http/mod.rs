//! The decide service as an [`axum::Router`] a service mounts (cargo feature `http`): the
//! OpenFeature Remote Evaluation Protocol (OFREP) and elvon's native API.
//!
//! ```
//! let engine = elvon::Engine::default();
//! let app: axum::Router = elvon::http::router(engine, elvon::http::HttpOptions::default());
//! // In the service: axum::serve(tokio::net::TcpListener::bind(addr).await?, app).await?;
//! # drop(app);
//! ```
//!
//! | route | what |
//! |---|---|
//! | `POST /ofrep/v1/evaluate/flags/{key}` | OFREP: one slot (the flag) for `context.targetingKey` (the user) with the other context fields as features; a context with no other fields has its features fetched from the engine's source |
//! | `POST /ofrep/v1/evaluate/flags` | OFREP bulk: every slot, with an `ETag`; `304` on a matching `If-None-Match` |
//! | `POST /v1/decide` | `{"slot" \| "slots", "user", "features"?}`; without `features` they are fetched from the engine's source |
//! | `POST /v1/reward` | `{"decision_id", "reward"}`, or `{"slot", "variant", "reward"}` |
//! | `POST /v1/explain` | `{"slot", "user", "features"}`: the evaluation trace |
//! | `GET /healthz` | `200` while the process serves |
//! | `GET /readyz` | `200` once a config is serving, `503` before |
//! | `GET /metrics` | with [`HttpOptions::prometheus`] (cargo feature `prometheus`): the metrics in the Prometheus text format |
//!
//! OFREP mapping: a slot is a flag; its variant's payload is the flag's `value` (the variant id
//! when it has none); reasons map to `TARGETING_MATCH` (a serve or score rule), `SPLIT`
//! (splits, rollouts, bandits), `DISABLED` (a killed slot) and `DEFAULT` (the default variant,
//! holdouts, layers the user is not in, fallbacks); `metadata` carries `decisionId`,
//! `propensity`, `configVersion` and, for bandits, `modelVersion`, so a client can send the
//! reward and log the exposure. Errors are the protocol's: `400` with `PARSE_ERROR`,
//! `INVALID_CONTEXT` or `TARGETING_KEY_MISSING`, `404` with `FLAG_NOT_FOUND`.
//!
//! Every body is bounded ([`HttpOptions::body_limit`], `413` beyond). The routes that may
//! wait for the engine's feature source (decide, and OFREP without context fields) have a
//! deadline ([`HttpOptions::timeout`]; past it `503` on `/v1/decide`, OFREP's `500` general
//! error on OFREP); the engine's own fetch deadline normally answers first, with a fallback
//! decision. Bad JSON and wrong types are `400` with a message naming the field; nothing
//! panics.
//!
//! With feature `postgres` too, [`admin_router`] serves the admin API (publish, activate,
//! roll back, history, audit, shadow report) over a config store, with bearer tokens; mount
//! it on an internal port (routes and answers in [`admin_router`]).
//!
//! [`serve`] runs the router on a listener and shuts down gracefully: it stops accepting,
//! drains the requests in flight and flushes the decision sink, so no decision answered with
//! `200` is missing from the decision log.

#[cfg(feature = "postgres")]
mod admin;
mod native;
mod ofrep;
#[cfg(feature = "prometheus")]
mod prometheus;
mod serve;

#[cfg(feature = "postgres")]
pub use admin::{admin_router, AdminError, AdminOptions, OPEN_ACTOR};
#[cfg(feature = "prometheus")]
pub use prometheus::{Prometheus, PrometheusError};
pub use serve::{serve, ServeError};

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;

use crate::engine::Engine;

/// Settings of the [`router`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HttpOptions {
    body_limit: usize,
    timeout: Duration,
    drain_timeout: Duration,
    flush_timeout: Duration,
    #[cfg(feature = "prometheus")]
    prometheus: Option<Prometheus>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            body_limit: 64 * 1024,
            timeout: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            flush_timeout: Duration::from_secs(10),
            #[cfg(feature = "prometheus")]
            prometheus: None,
        }
    }
}

impl HttpOptions {
    /// The largest request body accepted (default 64 KiB); larger ones get `413`.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// How long a `/v1/decide` call may wait (default 1 s); past it the answer is `503`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long [`serve`] waits, once shutdown begins, for in-flight requests to finish
    /// (default 10 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How long [`serve`] waits for the decision sink to flush after the drain (default 10 s).
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// Serves `GET /metrics`: the process's metrics, elvon's `elvon_*` among them, in the
    /// Prometheus text format (cargo feature `prometheus`).
    #[cfg(feature = "prometheus")]
    pub fn prometheus(mut self, prometheus: Prometheus) -> Self {
        self.prometheus = Some(prometheus);
        self
    }
}

#[derive(Clone)]
struct State {
    engine: Engine,
    timeout: Duration,
}

/// The decide service's routes (see the [module docs](self)) over `engine`.
pub fn router(engine: Engine, options: HttpOptions) -> axum::Router {
    let state = State {
        engine,
        timeout: options.timeout,
    };
    let app = axum::Router::new();
    #[cfg(feature = "prometheus")]
    let app = match options.prometheus {
        Some(p) => app.route(
            "/metrics",
            get(move || {
                let p = p.clone();
                async move { p.response() }
            }),
        ),
        None => app,
    };
    app.route("/ofrep/v1/evaluate/flags/{key}", post(ofrep::evaluate))
        .route("/ofrep/v1/evaluate/flags", post(ofrep::bulk))
        .route("/v1/decide", post(native::decide))
        .route("/v1/reward", post(native::reward))
        .route("/v1/explain", post(native::explain))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .layer(DefaultBodyLimit::max(options.body_limit))
        .with_state(state)
}

async fn ready(axum::extract::State(s): axum::extract::State<State>) -> Response {
    if s.engine.config_version().is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "no config loaded").into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

/// Runs `f` within the request deadline; past it, the answer is `late()`.
async fn within<F: std::future::Future<Output = Response>>(
    timeout: Duration,
    f: F,
    late: fn() -> Response,
) -> Response {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => late(),
    }
}

/// The native API's answer past the deadline.
fn timed_out() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "request timed out")
}

/// A native-API error: `{"error": message}` with `status`.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({"error": message.to_string()})),
    )
        .into_response()
}

/// A body that the body limit refused, or that is not JSON of the expected shape.
fn body_error(e: &axum::extract::rejection::BytesRejection) -> Response {
    error(e.status(), e.body_text())
}
