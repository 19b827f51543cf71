//! `GET /metrics` (feature `prometheus`): elvon's metrics, scraped through the router.
#![cfg(feature = "prometheus")]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use elvon::http::{router, HttpOptions, Prometheus};
use elvon::{Engine, Features};

async fn get(app: &axum::Router, uri: &str, method: &str, body: &str) -> (StatusCode, String) {
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

#[test]
fn metrics_endpoint_exposes_elvon_counters_in_the_prometheus_format() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let prom = Prometheus::install().expect("first install");
        // Installing again hands back the same recorder rather than failing.
        let again = Prometheus::install().expect("second install");
        let e = Engine::default();
        e.load_config_json(
            r#"{"version": "m1", "slots": [{"id": "metered", "variants": [{"id": "a"}, {"id": "b"}],
               "default": "a", "rules": [{"when": {"feature": "vip", "op": "eq", "value": true}, "serve": "b"}]}]}"#,
        )
        .expect("valid");
        let app = router(e.clone(), HttpOptions::default().prometheus(prom));
        for i in 0..7 {
            let body = format!(r#"{{"context": {{"targetingKey": "u{i}", "vip": {}}}}}"#, i < 3);
            let (status, _) = get(&app, "/ofrep/v1/evaluate/flags/metered", "POST", &body).await;
            assert_eq!(status, StatusCode::OK);
        }
        let _ = e.decide("metered", "x", &Features::new());
        let (status, text) = get(&app, "/metrics", "GET", "").await;
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
        assert!(text.contains("elvon_config_swaps_total 1"), "{text}");
        assert!(text.contains("# TYPE elvon_decisions_total counter"), "{text}");
        assert!(
            again.render().contains(r#"slot="metered""#),
            "the second handle reads the same recorder"
        );
        // A router without the option has no /metrics.
        let bare = router(e, HttpOptions::default());
        assert_eq!(get(&bare, "/metrics", "GET", "").await.0, StatusCode::NOT_FOUND);
    });
}
