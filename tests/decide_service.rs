//! `examples/decide_service` as a process: on its embedded defaults, and wired to a real
//! `redis-server` and a Kafka (mock) cluster. Each run ends with SIGTERM and checks that
//! every decision answered with `200` is in the decision log.
#![cfg(all(
    feature = "http",
    feature = "prometheus",
    feature = "redis",
    feature = "kafka"
))]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "common/kafka.rs"]
mod kafka_common;
#[path = "common/redis.rs"]
mod redis_common;

/// The example binary `cargo test` built next to this test.
fn example_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let bin = dir.join("examples").join("decide_service");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --example decide_service --features \
         http,prometheus,redis,kafka` (a plain `cargo test --all-features` builds it)",
        bin.display()
    );
    bin
}

/// The service process; killed if the test fails before stopping it.
struct Service {
    child: Child,
    addr: String,
    out: std::sync::mpsc::Receiver<String>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn start(env: &[(&str, &str)]) -> Service {
        let mut cmd = Command::new(example_bin());
        for v in [
            "REDIS_URL",
            "KAFKA_BROKERS",
            "ELVON_CONFIG",
            "ELVON_DECISION_LOG",
            "ELVON_DEMO_USERS",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("ELVON_LISTEN", "127.0.0.1:0")
            .env("ELVON_THREADS", "2");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, out) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("service: {line}");
                let _ = tx.send(line);
            }
        });
        let mut s = Service {
            child,
            addr: String::new(),
            out,
        };
        let line = s.wait_line("listening on http://", Duration::from_secs(60));
        s.addr = line["listening on http://".len()..].trim().to_owned();
        s
    }

    /// The first output line starting with `prefix`.
    fn wait_line(&self, prefix: &str, within: Duration) -> String {
        let t = Instant::now();
        while t.elapsed() < within {
            match self.out.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.starts_with(prefix) => return l,
                _ => {}
            }
        }
        panic!("the service did not print {prefix:?} within {within:?}");
    }

    /// One request (`Connection: close`); the status and the body.
    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut c = TcpStream::connect(&self.addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut resp = String::new();
        c.read_to_string(&mut resp).expect("response");
        let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = resp
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }

    fn json(&self, path: &str, body: &Value) -> Value {
        let (status, text) = self.request("POST", path, &body.to_string());
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).expect("JSON body")
    }

    fn wait_ready(&self, within: Duration) {
        let t = Instant::now();
        while self.request("GET", "/readyz", "").0 != 200 {
            assert!(t.elapsed() < within, "not ready within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of the first metric line starting with `prefix`.
    fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, text) = self.request("GET", "/metrics", "");
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// The sum of the metric lines starting with `prefix`.
    fn metric_sum(&self, prefix: &str) -> f64 {
        let (_, text) = self.request("GET", "/metrics", "");
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGTERM, then the exit status must be success.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "the service exited with {status}");
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_line("stopped", Duration::from_secs(5));
    }
}

/// Decides `n` times over OFREP and the native API; the decision ids answered.
fn decide_some(s: &Service, slots: &[&str], n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let user = format!("user-{i}");
        if i % 2 == 0 {
            let v = s.json("/v1/decide", &json!({"slots": slots, "user": user}));
            for d in v["decisions"].as_array().expect("decisions") {
                ids.push(d["decision_id"].as_str().expect("id").to_owned());
            }
        } else {
            let path = format!("/ofrep/v1/evaluate/flags/{}", slots[i % slots.len()]);
            let v = s.json(&path, &json!({"context": {"targetingKey": user}}));
            ids.push(v["metadata"]["decisionId"].as_str().expect("id").to_owned());
        }
    }
    ids
}

#[test]
fn runs_on_embedded_defaults_without_services() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("decisions.jsonl");
    let s = Service::start(&[("ELVON_DECISION_LOG", log.to_str().expect("utf-8"))]);
    s.wait_ready(Duration::from_secs(10));
    assert_eq!(s.request("GET", "/healthz", "").0, 200);
    // A demo user's features come from the in-memory store.
    let v = s.json("/v1/decide", &json!({"slot": "ranking", "user": "user-3"}));
    assert_eq!(v["decisions"][0]["features"], "fetched", "{v}");
    assert_eq!(v["decisions"][0]["config_version"], "2026-11-24.1", "{v}");
    let mut ids = vec![v["decisions"][0]["decision_id"]
        .as_str()
        .expect("id")
        .to_owned()];
    ids.extend(decide_some(&s, &["banner", "ranking"], 200));
    let decided = s.metric_sum("elvon_decisions_total{");
    assert_eq!(
        decided as usize,
        ids.len(),
        "every decision is counted in /metrics"
    );
    s.terminate();
    let text = std::fs::read_to_string(&log).expect("decision log");
    let logged: std::collections::HashSet<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("record")["id"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .collect();
    let missing: Vec<_> = ids.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} not logged",
        missing.len(),
        ids.len()
    );
}

const SERVICE_CONFIG: &str = r#"{"version": "svc-1", "slots": [
  {"id": "greet", "variants": [{"id": "plain"}, {"id": "vip", "payload": "Welcome back"}],
   "default": "plain",
   "rules": [{"when": {"feature": "plan", "op": "eq", "value": "vip"}, "serve": "vip"}]},
  {"id": "hero", "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
   "rules": [{"bandit": {"policy": "thompson", "arms": ["a", "b"]}}]}
]}"#;

#[test]
fn runs_with_redis_features_and_kafka_config_log_and_rewards() {
    let redis = redis_common::Server::start(&[]);
    let source = elvon::redis::RedisFeatureSource::builder(redis.url())
        .key_prefix("elvon:")
        .build()
        .expect("source");
    source
        .set_features("redis-vip", &elvon::Features::new().with("plan", "vip"))
        .expect("write features");
    let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    for (t, p) in [
        ("elvon-decisions", 2),
        ("elvon-config", 1),
        ("elvon-events", 1),
        ("elvon-dead-letter", 1),
    ] {
        mock.create_topic(t, p, 1).expect("topic");
    }
    let brokers = mock.bootstrap_servers();
    let topic = elvon::kafka::ConfigTopicOptions::new(&brokers, "elvon-config");
    elvon::kafka::publish_config(&topic, SERVICE_CONFIG, Duration::from_secs(10))
        .expect("published");

    let url = redis.url();
    let s = Service::start(&[
        ("REDIS_URL", url.as_str()),
        ("KAFKA_BROKERS", brokers.as_str()),
    ]);
    s.wait_ready(Duration::from_secs(30));
    // Features from Redis: the stored plan picks the rule (and the string payload).
    let v = s.json("/v1/decide", &json!({"slot": "greet", "user": "redis-vip"}));
    let d = &v["decisions"][0];
    assert_eq!(
        (d["variant"].as_str(), d["features"].as_str()),
        (Some("vip"), Some("fetched")),
        "{v}"
    );
    assert_eq!(d["payload"], "Welcome back");
    assert_eq!(d["config_version"], "svc-1");
    let mut ids = vec![d["decision_id"].as_str().expect("id").to_owned()];

    // Rewards for bandit decisions, through the events topic.
    let producer: rdkafka::producer::BaseProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    let mut bandit = Vec::new();
    for i in 0..30 {
        let v = s.json(
            "/v1/decide",
            &json!({"slot": "hero", "user": format!("h{i}"), "features": {}}),
        );
        bandit.push(
            v["decisions"][0]["decision_id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    for id in &bandit {
        let body = json!({"decision_id": id, "reward": 1.0}).to_string();
        producer
            .send(rdkafka::producer::BaseRecord::<(), _>::to("elvon-events").payload(&body))
            .map_err(|(e, _)| e)
            .expect("sent");
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).expect("flushed");
    let t = Instant::now();
    while s.metric(r#"elvon_rewards_total{outcome="applied"}"#) != Some(30.0) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "rewards applied: {:?}",
            s.metric(r#"elvon_rewards_total{outcome="applied"}"#)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ids.extend(bandit);
    ids.extend(decide_some(&s, &["greet", "hero"], 100));
    s.terminate();

    let logged: std::collections::HashSet<String> = kafka_common::read_back(
        &brokers,
        "elvon-decisions",
        ids.len(),
        Duration::from_secs(30),
    )
    .into_iter()
    .map(|(_, p)| {
        serde_json::from_slice::<Value>(&p).expect("record")["id"]
            .as_str()
            .expect("id")
            .to_owned()
    })
    .collect();
    let missing = ids.iter().filter(|id| !logged.contains(*id)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} decisions not in the topic",
        ids.len()
    );
}
