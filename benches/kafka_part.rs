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
    KafkaFigures {
        delivered_per_s: s.written as f64 / took.as_secs_f64(),
        delivered: s.written,
        dropped: s.dropped,
        noop_p99_ns: med(noop_p99),
        kafka_p99_ns: med(kafka.iter().map(|k| k.1).collect()),
        kafka_p50_ns: med(kafka.iter().map(|k| k.0).collect()),
    }
}
