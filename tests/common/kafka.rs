//! Helpers of the Kafka tests (`#[path]`-included by `tests/kafka.rs` and
//! `tests/kafka_faults.rs`).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use std::sync::Arc;

use elvon::features::aggregate::{Aggregate, Aggregates, Event};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;

/// The tests of a file run one at a time (some time `decide`).
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads `n` records from `topic` with a fresh consumer group, at most `within`.
pub fn read_back(
    bootstrap: &str,
    topic: &str,
    n: usize,
    within: Duration,
) -> Vec<(String, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("check-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::with_capacity(n);
    let t = Instant::now();
    while out.len() < n && t.elapsed() < within {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("message");
            let key = String::from_utf8(m.key().expect("keyed").to_vec()).expect("utf-8 key");
            out.push((key, m.payload().expect("payload").to_vec()));
        }
    }
    // Nothing more than `n` arrives.
    let extra_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < extra_until {
        if let Some(m) = consumer.poll(Duration::from_millis(50)) {
            let m = m.expect("message");
            out.push((String::new(), m.payload().unwrap_or_default().to_vec()));
        }
    }
    out
}

pub fn aggs() -> Arc<Aggregates> {
    Arc::new(
        Aggregates::new(vec![
            Aggregate::count("views", "view"),
            Aggregate::sum("spend", "buy", "amount"),
        ])
        .expect("valid"),
    )
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

pub fn produce(bootstrap: &str, topic: &str, payloads: &[String]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for (i, body) in payloads.iter().enumerate() {
        let key = format!("k{}", i % 37);
        p.send(BaseRecord::to(topic).key(&key).payload(body))
            .map_err(|(e, _)| e)
            .expect("queued");
    }
    p.flush(Duration::from_secs(30)).expect("stored");
}

pub fn view(id: usize, user: &str) -> String {
    serde_json::to_string(&Event::new(format!("ev-{id}"), user, "view", now_ms())).expect("json")
}

pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn cluster() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("events", 4, 1).expect("topic");
    cluster.create_topic("dead", 1, 1).expect("topic");
    let b = cluster.bootstrap_servers();
    (cluster, b)
}

/// Every message of `topic` (from the start) with its headers, read with a fresh group
/// until `n` arrived or `within` passed.
pub fn read_with_headers(
    bootstrap: &str,
    topic: &str,
    n: usize,
    within: Duration,
) -> Vec<(Vec<u8>, std::collections::HashMap<String, String>)> {
    use rdkafka::message::Headers;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("headers-{topic}-{}", now_ms()))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let t = Instant::now();
    while out.len() < n && t.elapsed() < within {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            let v = String::from_utf8_lossy(h.value.unwrap_or_default());
                            (h.key.to_owned(), v.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((m.payload().unwrap_or_default().to_vec(), headers));
        }
    }
    out
}

/// Produces `payloads` to `topic` under one key, in order, and waits until stored.
pub fn produce_keyed(bootstrap: &str, topic: &str, key: &str, payloads: &[String]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for body in payloads {
        p.send(BaseRecord::to(topic).key(key).payload(body))
            .map_err(|(e, _)| e)
            .expect("queued");
        p.flush(Duration::from_secs(10)).expect("stored");
    }
}

/// Where a Kafka test runs: librdkafka's in-process mock cluster by default, or the real
/// cluster named by `KAFKA_BROKERS` (`host:port,...`). On a real cluster every topic and
/// consumer group gets a suffix unique to this run (topics are created with the admin API),
/// so runs never read each other's data; on the mock they keep their plain names.
pub struct Broker {
    pub mock: Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    bootstrap: String,
    suffix: String,
}

impl Broker {
    /// A cluster of `brokers` mock brokers (ignored on a real cluster) with these topics and
    /// partition counts.
    pub fn new(brokers: i32, topics: &[(&str, i32)]) -> Broker {
        match std::env::var("KAFKA_BROKERS") {
            Ok(bootstrap) if !bootstrap.trim().is_empty() => {
                let suffix = format!("-{}-{}", std::process::id(), now_ms());
                let b = Broker {
                    mock: None,
                    bootstrap,
                    suffix,
                };
                b.create_topics(topics);
                b
            }
            _ => {
                let mock = MockCluster::new(brokers).expect("mock cluster");
                for (t, p) in topics {
                    mock.create_topic(t, *p, 1).expect("topic");
                }
                let bootstrap = mock.bootstrap_servers();
                Broker {
                    mock: Some(mock),
                    bootstrap,
                    suffix: String::new(),
                }
            }
        }
    }

    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// The run's name for a topic or consumer group.
    pub fn t(&self, name: &str) -> String {
        format!("{name}{}", self.suffix)
    }

    fn create_topics(&self, topics: &[(&str, i32)]) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("admin client");
        let names: Vec<String> = topics.iter().map(|(t, _)| self.t(t)).collect();
        let new: Vec<NewTopic<'_>> = names
            .iter()
            .zip(topics)
            .map(|(n, (_, p))| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(10)));
        // A broker without the admin API (librdkafka's mock run as a separate process)
        // creates topics on first use instead; a real failure shows up as missing topics.
        match block_on(admin.create_topics(&new, &opts)) {
            Ok(results) => {
                for r in results {
                    r.unwrap_or_else(|(t, e)| panic!("topic {t} on {}: {e}", self.bootstrap));
                }
            }
            Err(e) => eprintln!(
                "creating topics on {} failed ({e}); relying on auto-creation",
                self.bootstrap
            ),
        }
    }
}

/// Polls a future to completion on this thread (rdkafka's futures are completed by
/// librdkafka's own threads).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = std::task::Waker::from(Arc::new(Noop));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
