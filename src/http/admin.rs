//! The admin API over a config store (see [`admin_router`](super::admin_router)).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use serde_json::json;

use super::error;
use crate::postgres::{ConfigStore, StoreError, StoredConfig};
use crate::{ConfigProblem, Engine};

/// Name recorded for changes made through an admin router that runs open.
pub const OPEN_ACTOR: &str = "unauthenticated";

/// Settings of the [`admin_router`].
#[derive(Clone)]
#[must_use]
pub struct AdminOptions {
    tokens: Vec<(String, String)>,
    open: bool,
    body_limit: usize,
    shadow: Option<Engine>,
}

impl std::fmt::Debug for AdminOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the secrets stay out of logs.
        let names: Vec<&str> = self.tokens.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("AdminOptions")
            .field("tokens", &names)
            .field("open", &self.open)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions::new()
    }
}

impl AdminOptions {
    /// No tokens (add some with [`token`](Self::token)), 4 MiB bodies, no shadow report.
    pub fn new() -> Self {
        AdminOptions {
            tokens: Vec::new(),
            open: false,
            body_limit: 4 * 1024 * 1024,
            shadow: None,
        }
    }

    /// Accepts `Authorization: Bearer <secret>`; changes made with it are audited as `name`.
    pub fn token(mut self, name: impl Into<String>, secret: impl Into<String>) -> Self {
        self.tokens.push((name.into(), secret.into()));
        self
    }

    /// Lets the router run without any token (every request accepted, changes audited as
    /// [`OPEN_ACTOR`]). For a port nothing else can reach; never the default.
    pub fn allow_unauthenticated(mut self) -> Self {
        self.open = true;
        self
    }

    /// The largest request body accepted (default 4 MiB); larger ones get `413`.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The engine whose shadow evaluation `GET /admin/v1/shadow` reports
    /// ([`Engine::shadow`](crate::Engine::shadow)).
    pub fn shadow_engine(mut self, engine: Engine) -> Self {
        self.shadow = Some(engine);
        self
    }
}

/// Why [`admin_router`] would not build a router.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No token is configured and running open was not allowed.
    #[error("the admin router needs at least one token (AdminOptions::token), or AdminOptions::allow_unauthenticated")]
    NoToken,
    /// A token with an empty name or secret.
    #[error("admin token #{index} has an empty name or secret")]
    EmptyToken {
        /// Its position among the configured tokens (from 0).
        index: usize,
    },
}

#[derive(Clone)]
struct Admin {
    store: Arc<ConfigStore>,
    tokens: Arc<[(String, String)]>,
    open: bool,
    shadow: Option<Engine>,
}

/// The admin API over `store` (features `http` and `postgres`): publish, activate and roll
/// back configs, list them, read the shadow report; for an internal port.
///
///
/// | route | what | answers |
/// |---|---|---|
/// | `PUT /admin/v1/configs` | publish the body (a config document) as a candidate | `201` stored, `200` already stored (same document), `422` invalid (every problem with its path; stored as rejected), `409` the version holds another document |
/// | `POST /admin/v1/configs/{version}/activate` | make it the active version | `200`, `404` unknown version, `409` rejected version |
/// | `POST /admin/v1/rollback` | re-activate the version active before the current one | `200`, `409` nothing to roll back to |
/// | `GET /admin/v1/configs?limit=N` | the newest versions (default 100, at most 1,000) with state, author and problems | `200` |
/// | `GET /admin/v1/audit?limit=N` | the newest changes with who made them | `200` |
/// | `GET /admin/v1/shadow` | the shadow report of the engine given with [`AdminOptions::shadow_engine`] | `200`, `404` when no shadow evaluation runs |
///
/// Every request needs `Authorization: Bearer <token>` with one of the configured tokens:
/// `401` (with `WWW-Authenticate: Bearer`) without one, `403` with a wrong one. Tokens are
/// compared in constant time (every byte of every configured token is examined whatever the
/// input), and each change is recorded in the store's audit log under the token's name.
/// [`admin_router`] refuses to build without a token unless told to run open
/// ([`AdminOptions::allow_unauthenticated`]). Bodies are bounded
/// ([`AdminOptions::body_limit`], `413` beyond). Store errors are `503` (database unreachable)
/// or `500`, with the message.
///
/// ```
/// # #[allow(dead_code)]
/// # async fn run(store: elvon::postgres::ConfigStore) -> Result<(), Box<dyn std::error::Error>> {
/// use elvon::http::{admin_router, AdminOptions};
/// let app: axum::Router = admin_router(
///     std::sync::Arc::new(store),
///     AdminOptions::new().token("deploy-bot", std::env::var("ELVON_ADMIN_TOKEN")?),
/// )?;
/// // axum::serve(tokio::net::TcpListener::bind("127.0.0.1:9090").await?, app).await?;
/// # drop(app); Ok(()) }
/// ```
///
///
/// # Errors
/// [`AdminError::NoToken`] without a token unless running open was allowed;
/// [`AdminError::EmptyToken`].
pub fn admin_router(
    store: Arc<ConfigStore>,
    options: AdminOptions,
) -> Result<axum::Router, AdminError> {
    if let Some(index) = options
        .tokens
        .iter()
        .position(|(n, s)| n.is_empty() || s.is_empty())
    {
        return Err(AdminError::EmptyToken { index });
    }
    if options.tokens.is_empty() && !options.open {
        return Err(AdminError::NoToken);
    }
    let state = Admin {
        store,
        tokens: options.tokens.into(),
        open: options.open,
        shadow: options.shadow,
    };
    Ok(axum::Router::new()
        .route("/admin/v1/configs", put(publish).get(history))
        .route("/admin/v1/configs/{version}/activate", post(activate))
        .route("/admin/v1/rollback", post(rollback))
        .route("/admin/v1/audit", get(audit))
        .route("/admin/v1/shadow", get(shadow))
        .layer(DefaultBodyLimit::max(options.body_limit))
        .with_state(state))
}

/// Compares `given` with `expected` looking at every byte of the longer of the two, so the
/// time taken does not tell how much of a guess was right. Returns the accumulated
/// difference (0 when equal) and how many byte positions were examined.
#[inline(never)]
pub(crate) fn compare(given: &[u8], expected: &[u8]) -> (u8, usize) {
    let n = given.len().max(expected.len());
    let mut diff = u8::from(given.len() != expected.len());
    let mut examined = 0;
    for i in 0..n {
        let a = given.get(i).copied().unwrap_or(0);
        let b = expected.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(a ^ b);
        examined += 1;
    }
    (diff, examined)
}

/// Constant-time equality of a presented token and a configured one.
pub(crate) fn token_eq(given: &[u8], expected: &[u8]) -> bool {
    compare(given, expected).0 == 0
}

impl Admin {
    /// The name of the token the request carries, or the response refusing it. Every
    /// configured token is compared (no early exit on a match either).
    fn actor(&self, headers: &HeaderMap) -> Result<String, Box<Response>> {
        if self.open && self.tokens.is_empty() {
            return Ok(OPEN_ACTOR.to_owned());
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(given) = given.filter(|g| !g.is_empty()) else {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing bearer token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return Err(Box::new(r));
        };
        let mut found = None;
        for (name, secret) in self.tokens.iter() {
            if token_eq(given.as_bytes(), secret.as_bytes()) && found.is_none() {
                found = Some(name.clone());
            }
        }
        found.ok_or_else(|| Box::new(error(StatusCode::FORBIDDEN, "token not accepted")))
    }
}

fn problems_json(problems: &[ConfigProblem]) -> serde_json::Value {
    problems
        .iter()
        .map(|p| json!({"path": p.path(), "message": p.message()}))
        .collect()
}

fn store_error(e: &StoreError) -> Response {
    let status = match e {
        StoreError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        StoreError::VersionExists { .. }
        | StoreError::Rejected { .. }
        | StoreError::NothingToRollBack => StatusCode::CONFLICT,
        StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
        StoreError::BadActor { .. } => StatusCode::BAD_REQUEST,
        StoreError::Database(db) if db.is_connection() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    match e {
        StoreError::Invalid {
            id,
            version,
            problems,
        } => (
            status,
            Json(json!({
                "error": format!("config rejected with {} problem(s)", problems.len()),
                "id": id,
                "version": version,
                "problems": problems_json(problems),
            })),
        )
            .into_response(),
        other => error(status, other),
    }
}

macro_rules! authorized {
    ($admin:expr, $headers:expr) => {
        match $admin.actor(&$headers) {
            Ok(actor) => actor,
            Err(refused) => return *refused,
        }
    };
}

async fn publish(
    State(admin): State<Admin>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let actor = authorized!(admin, headers);
    let body = match body {
        Ok(b) => b,
        Err(e) => return super::body_error(&e),
    };
    let Ok(document) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the config document is not UTF-8");
    };
    match admin.store.publish(document, &actor).await {
        Ok(p) => {
            let status = if p.existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let out = json!({
                "id": p.id,
                "version": p.version,
                "existed": p.existed,
                "warnings": problems_json(&p.warnings),
            });
            (status, Json(out)).into_response()
        }
        Err(e) => store_error(&e),
    }
}

async fn activate(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(version): Path<String>,
) -> Response {
    let actor = authorized!(admin, headers);
    activation(admin.store.activate(&version, &actor).await)
}

async fn rollback(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    let actor = authorized!(admin, headers);
    activation(admin.store.rollback(&actor).await)
}

fn activation(r: Result<crate::postgres::Activation, StoreError>) -> Response {
    match r {
        Ok(a) => Json(json!({
            "version": a.version,
            "replaced": a.replaced,
            "changed": a.changed,
        }))
        .into_response(),
        Err(e) => store_error(&e),
    }
}

/// `?limit=N` (default 100, clamped to 1..=1,000); anything else in the query is ignored.
fn limit(query: Option<&str>) -> Result<usize, Box<Response>> {
    let Some(value) = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit="))
    else {
        return Ok(100);
    };
    value
        .parse::<usize>()
        .map(|n| n.clamp(1, 1_000))
        .map_err(|_| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                format!("limit must be a whole number, got {value:?}"),
            ))
        })
}

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn config_json(c: &StoredConfig) -> serde_json::Value {
    json!({
        "id": c.id,
        "version": c.version,
        "author": c.author,
        "created_at_ms": millis(c.created_at),
        "state": c.state.as_str(),
        "problems": problems_json(&c.problems),
    })
}

async fn history(
    State(admin): State<Admin>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let _actor = authorized!(admin, headers);
    let n = match limit(q.as_deref()) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    match admin.store.history(n).await {
        Ok(list) => {
            let configs: Vec<_> = list.iter().map(config_json).collect();
            Json(json!({ "configs": configs })).into_response()
        }
        Err(e) => store_error(&e),
    }
}

async fn audit(State(admin): State<Admin>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let _actor = authorized!(admin, headers);
    let n = match limit(q.as_deref()) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    match admin.store.audit(n).await {
        Ok(list) => {
            let entries: Vec<_> = list
                .iter()
                .map(|e| {
                    json!({
                        "at_ms": millis(e.at),
                        "actor": e.actor,
                        "action": e.action,
                        "version": e.version,
                        "detail": e.detail,
                    })
                })
                .collect();
            Json(json!({ "entries": entries })).into_response()
        }
        Err(e) => store_error(&e),
    }
}

async fn shadow(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    let _actor = authorized!(admin, headers);
    match admin.shadow.as_ref().and_then(Engine::shadow_report) {
        Some(report) => Json(report.to_json()).into_response(),
        None => error(StatusCode::NOT_FOUND, "no shadow evaluation is running"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compare_examines_every_byte_wherever_the_first_difference_is() {
        let secret = b"s3cr3t-token-0123456789abcdef";
        let n = secret.len();
        let mut first = *secret;
        first[0] ^= 1;
        let mut last = *secret;
        last[n - 1] ^= 1;
        for (given, equal) in [
            (&secret[..], true),
            (&first[..], false),
            (&last[..], false),
            (&secret[..n - 1], false),
            (b"".as_slice(), false),
        ] {
            let (diff, examined) = compare(given, secret);
            assert_eq!(diff == 0, equal, "{given:?}");
            assert_eq!(token_eq(given, secret), equal);
            assert_eq!(
                examined, n,
                "every byte is examined, not only up to the first difference ({given:?})"
            );
        }
        let longer = [secret.as_slice(), b"-and-more"].concat();
        assert_eq!(compare(&longer, secret).1, longer.len());
        assert!(!token_eq(&longer, secret));
    }
}
