//! The decide service's routes (feature `http`), driven in process through the router.
#![cfg(feature = "http")]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use elvon::features::MemoryStore;
use elvon::http::{router, HttpOptions};
use elvon::{Engine, Features};

const CONFIG: &str = r#"{"version": "7", "slots": [
  {"id": "banner", "variants": [{"id": "off"}, {"id": "on", "payload": {"color": "blue"}}],
   "default": "off",
   "rules": [{"id": "kr", "when": {"feature": "country", "op": "eq", "value": "KR"}, "serve": "on"}]},
  {"id": "killed", "variants": [{"id": "a"}], "default": "a", "killed": true},
  {"id": "split", "variants": [{"id": "x"}, {"id": "y"}], "default": "x",
   "rules": [{"split": {"variants": [{"variant": "x", "weight": 50}, {"variant": "y", "weight": 50}]}}]}
]}"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime")
}

fn engine() -> Engine {
    let store = MemoryStore::new();
    store.set("u-kr", Features::new().with("country", "KR"));
    let e = Engine::builder().source(store).build();
    e.load_config_json(CONFIG).expect("valid");
    e
}

/// Sends one request; returns the status, the headers and the body as JSON (`Null` if empty
/// or not JSON).
async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

#[test]
fn ofrep_evaluates_a_flag_with_reason_variant_value_and_metadata() {
    runtime().block_on(async {
        let app = router(engine(), HttpOptions::default());
        let eval = |key: &'static str, ctx: Value| {
            let app = app.clone();
            async move {
                let body = json!({"context": ctx}).to_string();
                send(
                    &app,
                    "POST",
                    &format!("/ofrep/v1/evaluate/flags/{key}"),
                    &body,
                    &[],
                )
                .await
            }
        };
        let (status, _, v) = eval("banner", json!({"targetingKey": "u1", "country": "KR"})).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["key"], "banner");
        assert_eq!(v["value"], json!({"color": "blue"}));
        assert_eq!(v["variant"], "on");
        assert_eq!(v["reason"], "TARGETING_MATCH");
        let m = &v["metadata"];
        assert_eq!(m["configVersion"], "7");
        assert_eq!(m["propensity"], 1.0);
        assert_eq!(m["decisionId"].as_str().map(str::len), Some(32));
        // Every metadata value is a string, number or boolean, as OFREP requires.
        assert!(m
            .as_object()
            .expect("object")
            .values()
            .all(|x| x.is_string() || x.is_number() || x.is_boolean()));
        let (_, _, v) = eval("banner", json!({"targetingKey": "u1", "country": "US"})).await;
        assert_eq!(
            (v["reason"].as_str(), v["value"].as_str()),
            (Some("DEFAULT"), Some("off"))
        );
        let (_, _, v) = eval("killed", json!({"targetingKey": "u1"})).await;
        assert_eq!(v["reason"], "DISABLED");
        let (_, _, v) = eval("split", json!({"targetingKey": "u1"})).await;
        assert_eq!(v["reason"], "SPLIT");
        assert_eq!(v["metadata"]["propensity"], 0.5);
    });
}

#[test]
fn ofrep_errors_are_the_protocols() {
    runtime().block_on(async {
        let app = router(engine(), HttpOptions::default());
        let post = |key: &'static str, body: &'static str| {
            let app = app.clone();
            async move {
                send(
                    &app,
                    "POST",
                    &format!("/ofrep/v1/evaluate/flags/{key}"),
                    body,
                    &[],
                )
                .await
            }
        };
        let cases = [
            (
                "banner",
                "{not json",
                StatusCode::BAD_REQUEST,
                "PARSE_ERROR",
            ),
            (
                "banner",
                r#"{"ctx": {}}"#,
                StatusCode::BAD_REQUEST,
                "INVALID_CONTEXT",
            ),
            (
                "banner",
                r#"{"context": {"country": "KR"}}"#,
                StatusCode::BAD_REQUEST,
                "TARGETING_KEY_MISSING",
            ),
            (
                "banner",
                r#"{"context": {"targetingKey": 5}}"#,
                StatusCode::BAD_REQUEST,
                "INVALID_CONTEXT",
            ),
            (
                "banner",
                r#"{"context": {"targetingKey": "u", "geo": {"lat": 1}}}"#,
                StatusCode::BAD_REQUEST,
                "INVALID_CONTEXT",
            ),
            (
                "nope",
                r#"{"context": {"targetingKey": "u"}}"#,
                StatusCode::NOT_FOUND,
                "FLAG_NOT_FOUND",
            ),
        ];
        for (key, body, status, code) in cases {
            let (s, _, v) = post(key, body).await;
            assert_eq!(
                (s, v["errorCode"].as_str()),
                (status, Some(code)),
                "{body}: {v}"
            );
            assert_eq!(v["key"], key);
            assert!(v["errorDetails"].as_str().is_some_and(|d| !d.is_empty()));
        }
        let (_, _, v) = post(
            "banner",
            r#"{"context": {"targetingKey": "u", "geo": {"lat": 1}}}"#,
        )
        .await;
        assert!(
            v["errorDetails"]
                .as_str()
                .is_some_and(|d| d.contains("\"geo\"")),
            "{v}"
        );
    });
}

#[test]
fn ofrep_bulk_has_every_flag_and_an_etag() {
    runtime().block_on(async {
        let engine = engine();
        let app = router(engine.clone(), HttpOptions::default());
        let body = json!({"context": {"targetingKey": "u1", "country": "KR"}}).to_string();
        let (status, headers, v) = send(&app, "POST", "/ofrep/v1/evaluate/flags", &body, &[]).await;
        assert_eq!(status, StatusCode::OK);
        let keys: Vec<_> = v["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .map(|f| f["key"].clone())
            .collect();
        assert_eq!(keys, [json!("banner"), json!("killed"), json!("split")]);
        assert_eq!(v["metadata"]["version"], "7");
        let etag = headers[header::ETAG].to_str().expect("etag").to_owned();
        let (status, _, v) = send(
            &app,
            "POST",
            "/ofrep/v1/evaluate/flags",
            &body,
            &[("if-none-match", &etag)],
        )
        .await;
        assert_eq!((status, v), (StatusCode::NOT_MODIFIED, Value::Null));
        // Another config gives another tag.
        engine
            .load_config_json(&CONFIG.replace(r#""version": "7""#, r#""version": "8""#))
            .expect("valid");
        let (status, headers, _) = send(
            &app,
            "POST",
            "/ofrep/v1/evaluate/flags",
            &body,
            &[("if-none-match", &etag)],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(headers[header::ETAG].to_str().ok(), Some(etag.as_str()));
        let (status, _, v) = send(
            &app,
            "POST",
            "/ofrep/v1/evaluate/flags",
            r#"{"context": {}}"#,
            &[],
        )
        .await;
        assert_eq!(
            (status, v["errorCode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("TARGETING_KEY_MISSING"))
        );
    });
}

#[test]
fn native_decide_reward_explain_and_health() {
    runtime().block_on(async {
        let app = router(Engine::default(), HttpOptions::default());
        let (status, _, _) = send(&app, "GET", "/readyz", "", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no config yet");
        let app = router(engine(), HttpOptions::default());
        assert_eq!(
            send(&app, "GET", "/healthz", "", &[]).await.0,
            StatusCode::OK
        );
        assert_eq!(
            send(&app, "GET", "/readyz", "", &[]).await.0,
            StatusCode::OK
        );
        // Features fetched from the engine's source when the body has none.
        let (status, _, v) = send(
            &app,
            "POST",
            "/v1/decide",
            r#"{"slots": ["banner", "split"], "user": "u-kr"}"#,
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let d = &v["decisions"][0];
        assert_eq!(
            (d["variant"].as_str(), d["features"].as_str()),
            (Some("on"), Some("fetched"))
        );
        assert_eq!(v["decisions"][1]["slot"], "split");
        let (_, _, v) = send(
            &app,
            "POST",
            "/v1/decide",
            r#"{"slot": "banner", "user": "u-kr", "features": {"country": "US"}}"#,
            &[],
        )
        .await;
        assert_eq!(
            v["decisions"][0]["variant"], "off",
            "the body's features win"
        );
        let id = v["decisions"][0]["decision_id"]
            .as_str()
            .expect("id")
            .to_owned();
        let (status, _, v) = send(
            &app,
            "POST",
            "/v1/reward",
            &json!({"decision_id": id, "reward": 1.0}).to_string(),
            &[],
        )
        .await;
        assert_eq!(
            (status, v["outcome"].as_str()),
            (StatusCode::OK, Some("unknown")),
            "not a bandit decision"
        );
        let (_, _, v) = send(
            &app,
            "POST",
            "/v1/explain",
            r#"{"slot": "banner", "user": "u", "features": {"country": "KR"}}"#,
            &[],
        )
        .await;
        assert!(v["steps"].as_array().is_some_and(|s| !s.is_empty()), "{v}");
        for bad in [
            r#"{"user": "u"}"#,
            r#"{"slot": "banner"}"#,
            r#"{"slot": 3, "user": "u"}"#,
            r#"{"slot": "banner", "user": "u", "extra": 1}"#,
        ] {
            let (status, _, v) = send(&app, "POST", "/v1/decide", bad, &[]).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(
                v["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{bad}: {v}"
            );
        }
        let (status, _, v) = send(
            &app,
            "POST",
            "/v1/decide",
            r#"{"slot": 3, "user": "u"}"#,
            &[],
        )
        .await;
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("invalid type")),
            "{status} {v}"
        );
    });
}

#[test]
fn oversized_bodies_are_refused_and_concurrent_requests_all_answer() {
    runtime().block_on(async {
        let app = router(engine(), HttpOptions::default().body_limit(1_024));
        let big = json!({"context": {"targetingKey": "u", "pad": "x".repeat(4_096)}}).to_string();
        let (status, _, _) = send(&app, "POST", "/ofrep/v1/evaluate/flags/banner", &big, &[]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let tasks: Vec<_> = (0..1_000)
            .map(|i| {
                let app = app.clone();
                tokio::spawn(async move {
                    let body = json!({"context": {"targetingKey": format!("u{i}")}}).to_string();
                    send(&app, "POST", "/ofrep/v1/evaluate/flags/split", &body, &[])
                        .await
                        .0
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.expect("task") == StatusCode::OK);
        }
        assert_eq!(ok, 1_000);
    });
}
