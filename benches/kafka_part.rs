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

use crate::{histogram, median, workloads};

#[derive(Debug, Clone, Copy, Serialize)]
pub struct KafkaFigures {
    /// Decisions delivered per second, from the first decide to the last delivery report.
    pub delivered_per_s: f64,
    pub delivered: u64,
    pub dropped: u64,
    pub noop_p99_ns: f64,
    pub kafka_p99_ns: f64,
    pub kafka_p50_ns: f64,
    /// Share of the sequential runs' Kafka-sink calls whose record was captured (the rest
    /// found their thread's ring full and were dropped).
    pub captured_share: f64,
    /// p99 of the two engines timed in alternating blocks of 1,000 calls.
    pub interleaved_noop_p99_ns: f64,
    pub interleaved_kafka_p99_ns: f64,
    /// Events the `FeatureUpdater` applied to a memory store per second, from its first
    /// applied batch to its last (joining the group excluded).
    pub consumer_events_per_s: f64,
}

const N: usize = 1_000_000;

/// Times `calls` decides starting at user `from` into `h`.
fn time(
    engine: &Engine,
    w: &workloads::Workload,
    from: usize,
    calls: usize,
    h: &mut Histogram<u64>,
) {
    for i in from..from + calls {
        let (u, f) = &w.users[i % w.users.len()];
        let t = Instant::now();
        let d = engine.decide(w.slot, u, f);
        h.saturating_record(t.elapsed().as_nanos() as u64);
        std::hint::black_box(d);
    }
}

fn p50_p99(h: &Histogram<u64>) -> (f64, f64) {
    (
        h.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64,
    )
}

pub fn run() -> KafkaFigures {
    let w = workloads::w1();

    // Latency first, on a cluster of its own: W1 with the Kafka sink (default options) and
    // with no sink. The deciding loop is not paced, so the writer is busy on the other core
    // the whole time and the sink's queue overflows (the overflow is dropped and counted,
    // which is part of what `record` costs). This 2-core VM is noisy: the no-op loop's p99
    // alone ranges over 80-250 ns from one run to the next.
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic("decisions", 6, 1).expect("topic");
    let sink = KafkaDecisionSink::new(KafkaSinkOptions::new(
        cluster.bootstrap_servers(),
        "decisions",
    ))
    .expect("sink");
    let with_kafka = Engine::builder().sink(sink.clone()).build();
    with_kafka.load_config_json(&w.configs[0]).expect("config");
    let noop = Engine::builder().build();
    noop.load_config_json(&w.configs[0]).expect("config");
    // Sequential: 100,000 calls without a sink, then 100,000 with the Kafka sink (then a
    // flush), eleven times; medians of the per-run figures.
    let mut noop_p99 = Vec::new();
    let mut kafka = Vec::new();
    for _ in 0..11 {
        let (mut a, mut b) = (histogram(), histogram());
        time(&noop, &w, 0, 100_000, &mut a);
        time(&with_kafka, &w, 0, 100_000, &mut b);
        noop_p99.push(p50_p99(&a).1);
        kafka.push(p50_p99(&b));
        let _ = sink.flush(Duration::from_secs(30));
    }
    let s = sink.stats();
    let captured_share = (s.offered - s.dropped) as f64 / s.offered.max(1) as f64;
    // Interleaved: blocks of 1,000 calls alternating between the two engines, 1,000,000 calls
    // each, so both see the same machine (including the sink's writer and librdkafka's
    // threads, busy the whole time); this isolates what `record` adds to the calling thread.
    let (mut a, mut b) = (histogram(), histogram());
    for block in 0..1_000 {
        time(&noop, &w, block * 1_000, 1_000, &mut a);
        time(&with_kafka, &w, block * 1_000, 1_000, &mut b);
    }
    let _ = sink.flush(Duration::from_secs(30));
    let interleaved = (p50_p99(&a).1, p50_p99(&b).1);
    drop((with_kafka, sink, cluster));

    // Throughput: a queue that holds everything, so nothing is dropped and the figure is
    // what the writer and librdkafka sustain.
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic("decisions", 6, 1).expect("topic");
    let sink = KafkaDecisionSink::new(
        KafkaSinkOptions::new(cluster.bootstrap_servers(), "decisions")
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
    drop((engine, sink, cluster));

    // A cluster of its own for the consumer too.
    let events_cluster = MockCluster::new(1).expect("mock cluster");
    events_cluster.create_topic("events", 4, 1).expect("topic");
    events_cluster.create_topic("dead", 1, 1).expect("topic");
    let consumer_events_per_s = consumer(&events_cluster.bootstrap_servers());
    KafkaFigures {
        delivered_per_s: s.written as f64 / took.as_secs_f64(),
        delivered: s.written,
        dropped: s.dropped,
        noop_p99_ns: median(noop_p99),
        kafka_p99_ns: median(kafka.iter().map(|k| k.1).collect()),
        kafka_p50_ns: median(kafka.iter().map(|k| k.0).collect()),
        captured_share,
        interleaved_noop_p99_ns: interleaved.0,
        interleaved_kafka_p99_ns: interleaved.1,
        consumer_events_per_s,
    }
}

const EVENTS: usize = 100_000;

fn consumer(bootstrap: &str) -> f64 {
    use elvon::features::aggregate::{Aggregate, Aggregates, Event};
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
        MemoryTarget::new(elvon::features::MemoryStore::new(), aggregates),
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
