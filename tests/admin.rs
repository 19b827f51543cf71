//! The admin router against a real PostgreSQL config store (issue 18, point 2).
#![cfg(all(feature = "http", feature = "postgres"))]

#[path = "common/postgres.rs"]
mod pg;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use elvon::http::{admin_router, AdminError, AdminOptions};
use elvon::postgres::ConfigStore;
use elvon::{Config, Engine, Features};

const BOT: &str = "Bearer bot-secret-0123456789";
const ALICE: &str = "Bearer alice-secret-9876543210";

fn serving(version: &str, variant: &str) -> String {
    json!({"version": version, "slots": [{
        "id": "s", "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
        "rules": [{"serve": variant}]
    }]})
    .to_string()
}

async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: impl Into<Body>,
    auth: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let resp = app
        .clone()
        .oneshot(req.body(body.into()).expect("request"))
        .await
        .expect("infallible");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

async fn setup() -> (pg::Postgres, Arc<ConfigStore>) {
    let server = pg::Postgres::start();
    let store = ConfigStore::connect(&server.url()).await.expect("connect");
    store.migrate().await.expect("migrate");
    (server, Arc::new(store))
}

fn options() -> AdminOptions {
    AdminOptions::new()
        .token("deploy-bot", "bot-secret-0123456789")
        .token("alice", "alice-secret-9876543210")
        .body_limit(16 * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_refuses_to_start_open_unless_told_to() {
    let (_server, store) = setup().await;
    assert_eq!(
        admin_router(store.clone(), AdminOptions::new()).err(),
        Some(AdminError::NoToken)
    );
    assert_eq!(
        admin_router(store.clone(), AdminOptions::new().token("x", "")).err(),
        Some(AdminError::EmptyToken { index: 0 })
    );
    let open = admin_router(store.clone(), AdminOptions::new().allow_unauthenticated())
        .expect("open on request");
    let (status, _, body) = send(&open, "PUT", "/admin/v1/configs", serving("1", "a"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let audit = store.audit(1).await.expect("audit");
    assert_eq!(audit[0].actor, elvon::http::OPEN_ACTOR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_good_token_are_refused() {
    let (_server, store) = setup().await;
    let app = admin_router(store.clone(), options()).expect("router");
    for (method, uri) in [
        ("PUT", "/admin/v1/configs"),
        ("GET", "/admin/v1/configs"),
        ("POST", "/admin/v1/configs/1/activate"),
        ("POST", "/admin/v1/rollback"),
        ("GET", "/admin/v1/audit"),
        ("GET", "/admin/v1/shadow"),
    ] {
        let (status, headers, _) = send(&app, method, uri, serving("1", "a"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        for wrong in [
            "Bearer bot-secret-012345678",
            "Bearer bot-secret-01234567890",
            "Bearer Bot-secret-0123456789",
        ] {
            let (status, _, _) = send(&app, method, uri, serving("1", "a"), Some(wrong)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri} {wrong}");
        }
        let (status, _, _) = send(
            &app,
            method,
            uri,
            serving("1", "a"),
            Some("Basic Ym90OnNlY3JldA=="),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(
        store.history(10).await.expect("history").is_empty(),
        "nothing refused was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_activate_rollback_history_and_audit() {
    let (server, store) = setup().await;
    let app = admin_router(store.clone(), options()).expect("router");

    let (status, _, body) = send(
        &app,
        "PUT",
        "/admin/v1/configs",
        serving("1", "a"),
        Some(BOT),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (body["version"].as_str(), body["existed"].as_bool()),
        (Some("1"), Some(false))
    );
    let (status, _, body) = send(
        &app,
        "PUT",
        "/admin/v1/configs",
        serving("1", "a"),
        Some(BOT),
    )
    .await;
    assert_eq!(
        (status, body["existed"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, _, body) = send(
        &app,
        "PUT",
        "/admin/v1/configs",
        serving("1", "b"),
        Some(BOT),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Invalid: 422 with every problem and its path; stored as rejected.
    let bad = json!({"version": "2", "slots": [{"id": "s", "variants": [{"id": "a"}], "default": "zz",
        "rules": [{"when": {"feature": "x", "op": "gtt", "value": 1}, "serve": "a"}]}]});
    let (status, _, body) = send(
        &app,
        "PUT",
        "/admin/v1/configs",
        bad.to_string(),
        Some(ALICE),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let paths: Vec<&str> = body["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert!(paths.len() >= 2, "{body}");
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("slots[0].rules[0].when")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.starts_with("slots[0].default")),
        "{paths:?}"
    );
    let (status, _, _) = send(
        &app,
        "POST",
        "/admin/v1/configs/2/activate",
        "",
        Some(ALICE),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a rejected version cannot be activated"
    );

    // Too large: 413; not UTF-8: 400.
    let huge = format!(r#"{{"version": "3", "pad": "{}"}}"#, "x".repeat(20 * 1024));
    let (status, _, _) = send(&app, "PUT", "/admin/v1/configs", huge, Some(BOT)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, _) = send(
        &app,
        "PUT",
        "/admin/v1/configs",
        vec![0xffu8, 0xfe],
        Some(BOT),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, _, _) = send(&app, "POST", "/admin/v1/configs/9/activate", "", Some(BOT)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(&app, "POST", "/admin/v1/rollback", "", Some(BOT)).await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing to roll back to");

    send(
        &app,
        "PUT",
        "/admin/v1/configs",
        serving("3", "b"),
        Some(ALICE),
    )
    .await;
    for v in ["1", "3"] {
        let uri = format!("/admin/v1/configs/{v}/activate");
        let (status, _, body) = send(&app, "POST", &uri, "", Some(BOT)).await;
        assert_eq!(
            (status, body["version"].as_str()),
            (StatusCode::OK, Some(v)),
            "{body}"
        );
    }
    let (status, _, body) = send(&app, "POST", "/admin/v1/rollback", "", Some(ALICE)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["version"].as_str(), body["replaced"].as_str()),
        (Some("1"), Some("3"))
    );

    let (status, _, body) = send(&app, "GET", "/admin/v1/configs?limit=10", "", Some(BOT)).await;
    assert_eq!(status, StatusCode::OK);
    let states: Vec<(&str, &str)> = body["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .map(|c| {
            (
                c["version"].as_str().unwrap_or("?"),
                c["state"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("3", "retired"), ("2", "rejected"), ("1", "active")]
    );
    let (status, _, _) = send(&app, "GET", "/admin/v1/configs?limit=ten", "", Some(BOT)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Every change, with the name of the token that made it.
    let (_, _, body) = send(&app, "GET", "/admin/v1/audit", "", Some(BOT)).await;
    let trail: Vec<(&str, &str, &str)> = body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("?"),
                e["version"].as_str().unwrap_or("?"),
                e["actor"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            ("rollback", "1", "alice"),
            ("activate", "3", "deploy-bot"),
            ("activate", "1", "deploy-bot"),
            ("publish", "3", "alice"),
            ("reject", "2", "alice"),
            ("publish", "1", "deploy-bot"),
        ]
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_report_is_served_while_a_shadow_evaluation_runs() {
    let (_server, store) = setup().await;
    let engine = Engine::default();
    engine.load_config_json(&serving("1", "a")).expect("valid");
    let app = admin_router(store, options().shadow_engine(engine.clone())).expect("router");
    let (status, _, _) = send(&app, "GET", "/admin/v1/shadow", "", Some(BOT)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "none running");
    let candidate = Config::from_json(&serving("2", "b")).expect("json");
    engine.shadow(&candidate, 1.0).expect("valid");
    for i in 0..100 {
        let _ = engine.decide("s", &format!("u{i}"), &Features::new());
    }
    let (status, _, body) = send(&app, "GET", "/admin/v1/shadow", "", Some(BOT)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["candidate_version"], "2");
    assert_eq!(body["slots"][0]["sampled"], 100);
    assert_eq!(body["slots"][0]["agreement"], 0.0);
    assert_eq!(
        body["slots"][0]["candidate"][0],
        json!({"variant": "b", "count": 100})
    );
}
