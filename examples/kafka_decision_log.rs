//! Decisions logged to Kafka: decides for 100,000 users with the Kafka sink, flushes, and
//! prints the delivery counts.
//!
//! ```sh
//! KAFKA_BROKERS=localhost:9092 cargo run --release --features kafka --example kafka_decision_log
//! cargo run --release --features kafka --example kafka_decision_log   # in-process mock cluster
//! ```

use std::time::{Duration, Instant};

use elvon::kafka::{KafkaDecisionSink, KafkaSinkOptions};
use elvon::{Engine, Features};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Without KAFKA_BROKERS, librdkafka's mock cluster stands in for a real one.
    let mock = match std::env::var("KAFKA_BROKERS") {
        Ok(_) => None,
        Err(_) => Some(rdkafka::mocking::MockCluster::new(3)?),
    };
    let brokers = match &mock {
        Some(m) => {
            m.create_topic("elvon-decisions", 6, 1)?;
            m.bootstrap_servers()
        }
        None => std::env::var("KAFKA_BROKERS")?,
    };
    println!(
        "brokers: {brokers}{}",
        if mock.is_some() {
            " (mock cluster)"
        } else {
            ""
        }
    );
    let sink = KafkaDecisionSink::new(
        KafkaSinkOptions::new(&brokers, "elvon-decisions").queue_capacity(100_000),
    )?;
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(
        r#"{"version": "log-demo", "slots": [{"id": "banner",
            "variants": [{"id": "control"}, {"id": "sale"}], "default": "control",
            "rules": [{"split": {"variants": [{"variant": "control", "weight": 50}, {"variant": "sale", "weight": 50}]}}]}]}"#,
    )?;
    let t = Instant::now();
    let none = Features::new();
    for i in 0..100_000 {
        engine.decide("banner", &format!("user-{}", i % 10_000), &none);
    }
    let decided = t.elapsed();
    sink.flush(Duration::from_secs(30))?;
    let s = sink.stats();
    println!(
        "decided 100,000 in {decided:?}; all delivered after {:?}",
        t.elapsed()
    );
    println!(
        "offered {}, written {}, dropped {}, failed {}, pending {}",
        s.offered,
        s.written,
        s.dropped,
        s.failed,
        s.pending()
    );
    Ok(())
}
