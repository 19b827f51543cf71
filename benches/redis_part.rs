//! The Redis part of the latency harness (`cargo bench --bench latency --features redis`):
//! `decide_for` against `redis-server` on loopback at a fixed request rate with the cache
//! disabled, and with every answer a cache hit. Uses `REDIS_URL` when set, otherwise starts
//! its own `redis-server` on a free port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use elvon::features::aggregate::{Aggregate, Aggregates, Event};
use elvon::redis::RedisFeatureSource;
use elvon::{Engine, FeatureStatus};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Requests per second of the uncached run.
pub const RATE: u64 = 5_000;
const USERS: usize = 10_000;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RedisFigures {
    pub rate_per_s: u64,
    pub calls: u64,
    pub fetched: u64,
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub p999_ns: f64,
    pub max_ns: f64,
    pub cached_calls: u64,
    pub cached_p50_ns: f64,
    pub cached_p99_ns: f64,
    pub cached_p999_ns: f64,
}

/// The server and its working directory (removed on drop).
struct OwnServer(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server() -> (String, Option<OwnServer>) {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return (url, None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let dir = tempfile::tempdir().expect("temp dir");
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}): install it (apt-get install redis-server) or set REDIS_URL")
        });
    let url = format!("redis://127.0.0.1:{port}/");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (url, Some(OwnServer(child, dir)))
}

fn engine(url: &str, cache: bool) -> Engine {
    let aggs = Aggregates::new(vec![
        Aggregate::count("page_view_7d", "page_view").window(Duration::from_secs(86_400), 7),
        Aggregate::sum("spend_30d", "purchase", "amount").window(Duration::from_secs(86_400), 30),
    ])
    .expect("valid aggregates");
    let mut b = RedisFeatureSource::builder(url).aggregates(aggs);
    if cache {
        b = b.cache(Duration::from_secs(600), 100_000);
    }
    let source = b.build().expect("redis source");
    let e = Engine::builder()
        .source(source)
        .fetch_deadline(Duration::from_millis(5))
        .build();
    e.load_config_json(
        &serde_json::json!({"version": "redis", "slots": [{
            "id": "banner",
            "variants": [{"id": "default"}, {"id": "engaged"}, {"id": "spender"}, {"id": "kr"}],
            "default": "default",
            "rules": [
                {"when": {"feature": "spend_30d", "op": "ge", "value": 100}, "serve": "spender"},
                {"when": {"feature": "page_view_7d", "op": "ge", "value": 10}, "serve": "engaged"},
                {"when": {"feature": "country", "op": "eq", "value": "KR"}, "serve": "kr"}
            ]
        }]})
        .to_string(),
    )
    .expect("valid config");
    e
}

fn load(url: &str) {
    let aggs = Aggregates::new(vec![
        Aggregate::count("page_view_7d", "page_view").window(Duration::from_secs(86_400), 7),
        Aggregate::sum("spend_30d", "purchase", "amount").window(Duration::from_secs(86_400), 30),
    ])
    .expect("valid aggregates");
    let source = RedisFeatureSource::builder(url)
        .aggregates(aggs)
        .build()
        .expect("redis source");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut events = Vec::new();
    for u in 0..USERS {
        let user = format!("user-{u}");
        for i in 0..(u % 20) {
            events.push(Event::new(
                format!("v-{u}-{i}"),
                &user,
                "page_view",
                now - 1_000,
            ));
        }
        if u % 7 == 0 {
            events.push(
                Event::new(format!("p-{u}"), &user, "purchase", now - 1_000)
                    .with("amount", (u % 300) as f64),
            );
        }
        let country = ["KR", "JP", "US"][u % 3];
        source
            .set_features(&user, &elvon::Features::new().with("country", country))
            .expect("set features");
    }
    for chunk in events.chunks(5_000) {
        source.writer().apply(chunk).expect("write events");
    }
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

pub fn run(seconds: u64) -> RedisFigures {
    let (url, _own) = server();
    load(&url);
    let users: Vec<String> = (0..USERS).map(|u| format!("user-{u}")).collect();

    // Uncached, open loop at RATE per second.
    let e = engine(&url, false);
    for u in users.iter().take(100) {
        e.decide_for("banner", u);
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram");
    let interval = Duration::from_nanos(1_000_000_000 / RATE);
    let calls = RATE * seconds;
    let mut fetched = 0;
    let start = Instant::now();
    for i in 0..calls {
        let due = start + interval * i as u32;
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            if due - now > Duration::from_micros(100) {
                std::thread::sleep(due - now - Duration::from_micros(80));
            } else {
                std::hint::spin_loop();
            }
        }
        let t = Instant::now();
        let d = e.decide_for("banner", &users[i as usize % USERS]);
        h.saturating_record(t.elapsed().as_nanos() as u64);
        fetched += u64::from(d.feature_status() == FeatureStatus::Fetched);
    }

    // Cached: warm 1,000 hot users, then every call is a hit.
    let e = engine(&url, true);
    for u in users.iter().take(1_000) {
        e.decide_for("banner", u);
    }
    let mut c = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram");
    let cached_calls = 200_000u64;
    for i in 0..cached_calls {
        let t = Instant::now();
        let d = e.decide_for("banner", &users[i as usize % 1_000]);
        c.saturating_record(t.elapsed().as_nanos() as u64);
        std::hint::black_box(d);
    }
    RedisFigures {
        rate_per_s: RATE,
        calls,
        fetched,
        p50_ns: pct(&h, 0.5),
        p99_ns: pct(&h, 0.99),
        p999_ns: pct(&h, 0.999),
        max_ns: h.max() as f64,
        cached_calls,
        cached_p50_ns: pct(&c, 0.5),
        cached_p99_ns: pct(&c, 0.99),
        cached_p999_ns: pct(&c, 0.999),
    }
}
