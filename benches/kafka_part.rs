//! The Kafka part of the latency harness (`cargo bench --bench latency --features kafka`):
//! the decision-log sink against librdkafka's in-process mock cluster. Throughput: decisions
//! offered as fast as one thread can decide, until all are delivered. Latency: per-call
//! `decide` p99 of W1 with the Kafka sink and with the no-op sink, over the same users.

use std::time::{Duration, Instant};

use elvon::kafka::{KafkaDecisionSink, KafkaSinkOptions};
use elvon::Engine;
use hdrhistogram::Histogram;
use rdkafka::mocking::MockCluster;
use serde::Serialize;

use crate::workloads;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct KafkaFigures {
    /// Decisions delivered per second, from the first decide to the last delivery report.
    pub delivered_per_s: f64,
    pub delivered: u64,
    pub dropped: u64,
    pub noop_p99_ns: f64,
    pub kafka_p99_ns: f64,
    pub kafka_p50_ns: f64,
    /// Events the `FeatureUpdater` applied to a memory store per second, from its first
    /// applied batch to its last (joining the group excluded).
    pub consumer_events_per_s: f64,
}

const N: usize = 1_000_000;

fn p99(engine: &Engine, w: &workloads::Workload, calls: usize) -> (f64, f64) {
    let mut h = Histogram::<u64>::new_with_bounds(1, 100_000_000, 3).expect("histogram");
    for i in 0..calls {
        let (u, f) = &w.users[i % w.users.len()];
        let t = Instant::now();
        let d = engine.decide(w.slot, u, f);
        h.saturating_record(t.elapsed().as_nanos() as u64);
        std::hint::black_box(d);
    }
    (
        h.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64,
    )
}

pub fn run() -> KafkaFigures {
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic("decisions", 6, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let w = workloads::w1();

    // Throughput: a queue that holds everything, so nothing is dropped and the figure is
    // what the writer and librdkafka sustain.
    let sink = KafkaDecisionSink::new(
        KafkaSinkOptions::new(&bootstrap, "decisions")
            .queue_capacity(N)
            .set("queue.buffering.max.messages", "1000000"),
    )
    .expect("sink");
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(&w.configs[0]).expect("config");
    let start = Instant::now();
    for i in 0..N {
        let (u, f) = &w.users[i % w.users.len()];
        std::hint::black_box(engine.decide(w.slot, u, f));
    }
    let flushed = sink.flush(Duration::from_secs(120));
    let took = start.elapsed();
    let s = sink.stats();
    if let Err(e) = flushed {
        eprintln!("kafka: {e}");
    }

    // Latency: the same slot with the Kafka sink (default queue) and with no sink, paced so
    // the writer keeps up (the figure is decide's own cost, not queueing).
    let sink2 =
        KafkaDecisionSink::new(KafkaSinkOptions::new(&bootstrap, "decisions")).expect("sink");
    let with_kafka = Engine::builder().sink(sink2.clone()).build();
    with_kafka.load_config_json(&w.configs[0]).expect("config");
    let noop = Engine::builder().build();
    noop.load_config_json(&w.configs[0]).expect("config");
    let mut noop_p99 = Vec::new();
    let mut kafka = Vec::new();
    for _ in 0..5 {
        noop_p99.push(p99(&noop, &w, 100_000).1);
        kafka.push(p99(&with_kafka, &w, 100_000));
        let _ = sink2.flush(Duration::from_secs(30));
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // A cluster of its own: the sink run above left a million records in this one.
    let events_cluster = MockCluster::new(1).expect("mock cluster");
    events_cluster.create_topic("events", 4, 1).expect("topic");
    events_cluster.create_topic("dead", 1, 1).expect("topic");
    let consumer_events_per_s = consumer(&events_cluster.bootstrap_servers());
    KafkaFigures {
        delivered_per_s: s.written as f64 / took.as_secs_f64(),
        delivered: s.written,
        dropped: s.dropped,
        noop_p99_ns: med(noop_p99),
        kafka_p99_ns: med(kafka.iter().map(|k| k.1).collect()),
        kafka_p50_ns: med(kafka.iter().map(|k| k.0).collect()),
        consumer_events_per_s,
    }
}

const EVENTS: usize = 100_000;

fn consumer(bootstrap: &str) -> f64 {
    use elvon::aggregate::{Aggregate, Aggregates, Event};
    use elvon::kafka::{FeatureUpdater, MemoryTarget, UpdaterOptions};
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use std::sync::Arc;

    let aggregates = Arc::new(
        Aggregates::new(vec![
            Aggregate::count("page_view_7d", "page_view").window(Duration::from_secs(86_400), 7),
            Aggregate::last("last_category", "page_view", "category"),
        ])
        .expect("valid aggregates"),
    );
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    for i in 0..EVENTS {
        let user = format!("user-{}", i % 10_000);
        let e = Event::new(format!("pv-{i}"), &user, "page_view", now).with("category", "shoes");
        let body = serde_json::to_string(&e).expect("json");
        producer
            .send(BaseRecord::to("events").key(&user).payload(&body))
            .map_err(|(e, _)| e)
            .expect("queued");
    }
    producer.flush(Duration::from_secs(60)).expect("stored");
    let updater = FeatureUpdater::spawn(
        UpdaterOptions::new(
            bootstrap,
            "bench",
            ["events"],
            "dead",
            Arc::clone(&aggregates),
        )
        .batch_size(2_000),
        MemoryTarget {
            store: elvon::MemoryStore::new(),
            aggregates,
        },
        None,
    )
    .expect("updater");
    let t = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    while updater.stats().applied < EVENTS as u64 {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "consumer stalled: {:?}",
            updater.stats()
        );
        let applied = updater.stats().applied;
        if first.is_none() && applied > 0 {
            first = Some((Instant::now(), applied));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (since, base) = first.unwrap_or((t, 0));
    (EVENTS as u64 - base) as f64 / since.elapsed().as_secs_f64()
}
