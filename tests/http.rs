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
        // Only a targeting key: the features come from the engine's source (the store
        // has u-kr in KR), single and bulk.
        let (_, _, v) = eval("banner", json!({"targetingKey": "u-kr"})).await;
        assert_eq!(
            (v["reason"].as_str(), v["variant"].as_str()),
            (Some("TARGETING_MATCH"), Some("on")),
            "{v}"
        );
        let body = json!({"context": {"targetingKey": "u-kr"}}).to_string();
        let (_, _, v) = send(&app, "POST", "/ofrep/v1/evaluate/flags", &body, &[]).await;
        let banner = v["flags"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["key"] == "banner"))
            .expect("banner in bulk");
        assert_eq!(banner["variant"], "on", "{v}");
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

/// A minimal HTTP/1.1 keep-alive client: sends `POST path` with `body` on `conn` and reads
/// one response; `None` once the server closed the connection.
async fn post_on(conn: &mut tokio::net::TcpStream, path: &str, body: &str) -> Option<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head.get(9..12)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let json = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
    Some((status, json))
}

/// A decision log that writes in the background, a little slowly (like a Kafka producer):
/// what `flush` waits for.
#[derive(Clone)]
struct SlowSink(std::sync::Arc<SlowInner>);

struct SlowInner {
    state: std::sync::Mutex<(Vec<String>, std::collections::HashSet<String>)>,
    offered: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
}

impl SlowSink {
    fn start() -> Self {
        let sink = SlowSink(std::sync::Arc::new(SlowInner {
            state: std::sync::Mutex::default(),
            offered: 0.into(),
            done: 0.into(),
        }));
        let weak = std::sync::Arc::downgrade(&sink.0);
        std::thread::spawn(move || {
            while let Some(inner) = weak.upgrade() {
                // One batch every 50 ms.
                std::thread::sleep(std::time::Duration::from_millis(50));
                let mut st = inner.state.lock().expect("lock");
                let batch = std::mem::take(&mut st.0);
                let n = batch.len() as u64;
                st.1.extend(batch);
                inner.done.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            }
        });
        sink
    }

    fn written(&self) -> std::collections::HashSet<String> {
        self.0.state.lock().expect("lock").1.clone()
    }
}

impl elvon::sink::DecisionSink for SlowSink {
    fn record(&self, event: &elvon::sink::DecisionEvent<'_>) {
        let mut st = self.0.state.lock().expect("lock");
        st.0.push(event.decision.id().to_string());
        self.0
            .offered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn flush(&self, timeout: std::time::Duration) -> Result<(), elvon::sink::FlushError> {
        let target = self.0.offered.load(std::sync::atomic::Ordering::SeqCst);
        let start = std::time::Instant::now();
        while self.0.done.load(std::sync::atomic::Ordering::SeqCst) < target {
            assert!(start.elapsed() < timeout, "the slow sink did not flush");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }
}

#[test]
fn graceful_shutdown_under_load_logs_every_decision_it_answered() {
    let sink = SlowSink::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (answered, _engine) = rt.block_on(async {
        let e = Engine::builder().sink(sink.clone()).build();
        e.load_config_json(CONFIG).expect("valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(elvon::http::serve(
            listener,
            e.clone(),
            HttpOptions::default(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let total = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // 32 keep-alive clients decide until the server closes their connection.
        let clients: Vec<_> = (0..32)
            .map(|c| {
                let total = total.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
                        return ids;
                    };
                    for i in 0.. {
                        let (path, body) = if i % 2 == 0 {
                            (
                                "/v1/decide".to_owned(),
                                json!({"slots": ["split", "banner"], "user": format!("c{c}-{i}"), "features": {}})
                                    .to_string(),
                            )
                        } else {
                            (
                                "/ofrep/v1/evaluate/flags/split".to_owned(),
                                json!({"context": {"targetingKey": format!("c{c}-{i}")}}).to_string(),
                            )
                        };
                        let Some((status, v)) = post_on(&mut conn, &path, &body).await else {
                            break;
                        };
                        assert_eq!(status, 200, "{v}");
                        if let Some(ds) = v["decisions"].as_array() {
                            ids.extend(ds.iter().map(|d| d["decision_id"].as_str().expect("id").to_owned()));
                        } else {
                            ids.push(v["metadata"]["decisionId"].as_str().expect("id").to_owned());
                        }
                        total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    ids
                })
            })
            .collect();
        while total.load(std::sync::atomic::Ordering::Relaxed) < 3_000 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        stop_tx.send(()).expect("server listens");
        server.await.expect("server task").expect("clean shutdown");
        let mut answered = Vec::new();
        for c in clients {
            answered.extend(c.await.expect("client"));
        }
        (answered, e)
    });
    // `serve` returned: the drain and the flush are done; the log must hold every answer
    // while the engine (and its sink) is still alive, as in a service that keeps it.
    let logged = sink.written();
    assert!(answered.len() >= 3_000, "{} answered", answered.len());
    let missing = answered.iter().filter(|id| !logged.contains(*id)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} decisions answered with 200 are not in the log",
        answered.len()
    );
}

#[test]
fn payloads_of_every_json_kind_are_the_value_and_the_payload() {
    runtime().block_on(async {
        let e = Engine::default();
        e.load_config_json(
            r#"{"version": "p", "slots": [
              {"id": "text", "variants": [{"id": "t", "payload": "blue"}], "default": "t"},
              {"id": "looks_like_json", "variants": [{"id": "t", "payload": "true"}], "default": "t"},
              {"id": "empty_text", "variants": [{"id": "t", "payload": ""}], "default": "t"},
              {"id": "flag", "variants": [{"id": "t", "payload": true}], "default": "t"},
              {"id": "number", "variants": [{"id": "t", "payload": 1.5}], "default": "t"},
              {"id": "none", "variants": [{"id": "t"}], "default": "t"}]}"#,
        )
        .expect("valid");
        let app = router(e, HttpOptions::default());
        for (slot, value, payload) in [
            ("text", json!("blue"), json!("blue")),
            ("looks_like_json", json!("true"), json!("true")),
            ("empty_text", json!(""), json!("")),
            ("flag", json!(true), json!(true)),
            ("number", json!(1.5), json!(1.5)),
            // No payload: OFREP's value is the variant id; the native payload is null.
            ("none", json!("t"), Value::Null),
        ] {
            let (status, _, v) = send(
                &app,
                "POST",
                &format!("/ofrep/v1/evaluate/flags/{slot}"),
                r#"{"context": {"targetingKey": "u"}}"#,
                &[],
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(v["value"], value, "{slot}: {v}");
            let body = json!({"slot": slot, "user": "u", "features": {}}).to_string();
            let (_, _, v) = send(&app, "POST", "/v1/decide", &body, &[]).await;
            assert_eq!(v["decisions"][0]["payload"], payload, "{slot}: {v}");
        }
    });
}

/// `GET`/`POST` `uri`; the status and the body as text.
#[cfg(feature = "prometheus")]
async fn get_text(app: &axum::Router, uri: &str, method: &str, body: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(feature = "prometheus")]
#[test]
fn metrics_endpoint_exposes_elvon_counters_in_the_prometheus_format() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let prom = elvon::http::Prometheus::install().expect("first install");
        // Installing again hands back the same recorder rather than failing.
        let again = elvon::http::Prometheus::install().expect("second install");
        let e = Engine::default();
        e.load_config_json(
            r#"{"version": "m1", "slots": [{"id": "metered", "variants": [{"id": "a"}, {"id": "b"}],
               "default": "a", "rules": [{"when": {"feature": "vip", "op": "eq", "value": true}, "serve": "b"}]}]}"#,
        )
        .expect("valid");
        let app = router(e.clone(), HttpOptions::default().prometheus(prom));
        for i in 0..7 {
            let body = format!(r#"{{"context": {{"targetingKey": "u{i}", "vip": {}}}}}"#, i < 3);
            let (status, _) = get_text(&app, "/ofrep/v1/evaluate/flags/metered", "POST", &body).await;
            assert_eq!(status, StatusCode::OK);
        }
        let _ = e.decide("metered", "x", &Features::new());
        let (status, text) = get_text(&app, "/metrics", "GET", "").await;
        assert_eq!(status, StatusCode::OK);
        let line = |needle: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(r#"elvon_decisions_total{slot="metered""#) && l.contains(needle)
                })
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
        };
        assert_eq!(line(r#"reason="rule""#).as_deref(), Some("3"), "{text}");
        assert_eq!(line(r#"reason="default""#).as_deref(), Some("4"), "{text}");
        // The decision without the feature the rule reads is a fallback.
        assert_eq!(line(r#"reason="fallback""#).as_deref(), Some("1"), "{text}");
        // Process-wide: the other tests of this file load configs too.
        let swaps = text
            .lines()
            .find_map(|l| l.strip_prefix("elvon_config_swaps_total "))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(swaps.is_some_and(|n| n >= 1), "{text}");
        assert!(text.contains("# TYPE elvon_decisions_total counter"), "{text}");
        assert!(
            again.render().contains(r#"slot="metered""#),
            "the second handle reads the same recorder"
        );
        // A router without the option has no /metrics.
        let bare = router(e, HttpOptions::default());
        assert_eq!(get_text(&bare, "/metrics", "GET", "").await.0, StatusCode::NOT_FOUND);
    });
}
