//! The Kafka adapters under faults (issue 13), on librdkafka's in-process mock cluster:
//! a dropped sink drains, `flush` waits only for earlier records.
#![cfg(feature = "kafka")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use elvon::kafka::{KafkaDecisionSink, KafkaSinkOptions};
use elvon::{Engine, Features};
use rdkafka::mocking::MockCluster;

#[path = "common/kafka.rs"]
mod kafka_common;
use kafka_common::{read_back, serial};
#[path = "common/recorder.rs"]
mod recorder;

const CONFIG: &str = r#"{"version": "k1", "slots": [{"id": "s", "variants": [{"id": "a"}, {"id": "b"}],
    "default": "a", "rules": [{"split": {"variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}}]}]}"#;

/// Point 1: dropping the last handle without `flush` delivers everything queued. Before, the
/// producer's drop purged what librdkafka still held and the tail of the log was lost.
#[test]
fn dropping_the_sink_without_flush_delivers_every_record() {
    let _serial = serial();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("decisions", 3, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let sink = KafkaDecisionSink::new(
        KafkaSinkOptions::new(&bootstrap, "decisions")
            .queue_capacity(50_000)
            // Hold records back in librdkafka for a while, as a busy producer would.
            .set("linger.ms", "200"),
    )
    .expect("sink");
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(CONFIG).expect("config");
    let none = Features::new();
    for i in 0..20_000 {
        engine.decide("s", &format!("u{i}"), &none);
    }
    let s = sink.stats();
    assert_eq!((s.offered, s.dropped), (20_000, 0), "{s:?}");
    drop(engine);
    drop(sink);
    let got = read_back(&bootstrap, "decisions", 20_000, Duration::from_secs(60));
    assert_eq!(got.len(), 20_000, "every accepted record reached the topic");
}

/// Point 1, broker down: the drop waits at most the drain timeout and counts what it could
/// not deliver as failed (offered = written + dropped + failed, seen through the metrics).
#[test]
fn dropping_the_sink_with_the_broker_down_is_bounded_and_counts_failures() {
    let _serial = serial();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("decisions", 1, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let rec = recorder::Rec::default();
    let sink = metrics::with_local_recorder(&rec, || {
        KafkaDecisionSink::new(
            KafkaSinkOptions::new(&bootstrap, "decisions")
                .queue_capacity(5_000)
                .drain_timeout(Duration::from_millis(500)),
        )
    })
    .expect("sink");
    cluster.broker_down(1).expect("broker down");
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(CONFIG).expect("config");
    for i in 0..3_000 {
        engine.decide("s", &format!("u{i}"), &Features::new());
    }
    let offered = sink.stats().offered;
    drop(engine);
    let t = Instant::now();
    drop(sink);
    let took = t.elapsed();
    // Generous: the bound is 0.5 s + the purge; a hang would take forever.
    assert!(took < Duration::from_secs(20), "drop took {took:?}");
    let get = |o: &str| {
        rec.get(&format!(
            "elvon_sink_records_total{{outcome={o},sink=kafka}}"
        ))
    };
    let (written, dropped, failed) = (get("written"), get("dropped"), get("failed"));
    assert_eq!(offered, 3_000);
    assert_eq!(
        written + dropped + failed,
        offered,
        "written {written} dropped {dropped} failed {failed}"
    );
    assert!(failed > 0, "undelivered records counted as failed");
}

/// Point 5: `flush` returns once the records offered before it are delivered, while another
/// thread keeps the sink busy. Before, it waited for the whole backlog to reach zero, which
/// a busy sink never does.
#[test]
fn flush_waits_for_earlier_records_not_for_a_backlog_others_refill() {
    let _serial = serial();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("decisions", 3, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let sink =
        KafkaDecisionSink::new(KafkaSinkOptions::new(&bootstrap, "decisions")).expect("sink");
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(CONFIG).expect("config");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let none = Features::new();
            while !stop.load(Ordering::Relaxed) {
                engine.decide("s", "busy", &none);
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        for i in 0..1_000 {
            engine.decide("s", &format!("mine-{i}"), &Features::new());
        }
        let flushed = engine.flush(Duration::from_secs(10));
        stop.store(true, Ordering::Relaxed);
        flushed.expect("flushed while another thread keeps recording");
    });
}
