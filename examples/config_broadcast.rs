//! Config broadcast over Kafka: a watcher follows the config topic; publishing a config swaps
//! it in; an invalid one is refused by the publisher, and one slipped past it is rejected by
//! the watcher while the previous config keeps serving.
//!
//! ```sh
//! KAFKA_BROKERS=localhost:9092 cargo run --features kafka --example config_broadcast
//! cargo run --features kafka --example config_broadcast   # in-process mock cluster
//! ```

use std::time::{Duration, Instant};

use elvon::kafka::{publish_config, ConfigTopicOptions, KafkaConfigWatcher};
use elvon::{Engine, WatchEvent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = match std::env::var("KAFKA_BROKERS") {
        Ok(_) => None,
        Err(_) => Some(rdkafka::mocking::MockCluster::new(1)?),
    };
    let brokers = match &mock {
        Some(m) => {
            m.create_topic("elvon-config", 1, 1)?;
            m.bootstrap_servers()
        }
        None => std::env::var("KAFKA_BROKERS")?,
    };
    // TLS, SASL and other librdkafka settings go on the topic options with `.set(k, v)`.
    let topic = ConfigTopicOptions::new(&brokers, "elvon-config");
    let engine = Engine::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let _watcher = KafkaConfigWatcher::spawn(engine.clone(), &topic, move |e| {
        let line = match e {
            WatchEvent::Loaded(o) => format!("loaded version {:?}", o.version),
            WatchEvent::Rejected(err) => format!("rejected: {err}"),
            _ => "other event".to_owned(),
        };
        let _ = tx.send(line);
    })?;
    for version in ["v1", "v2"] {
        let t = Instant::now();
        let config = format!(
            r#"{{"version": "{version}", "slots": [{{"id": "banner", "variants": [{{"id": "a"}}], "default": "a"}}]}}"#
        );
        publish_config(&topic, &config, Duration::from_secs(5))?;
        let seen = rx.recv_timeout(Duration::from_secs(5))?;
        println!(
            "published {version}: watcher {seen} after {:?}; serving {:?}",
            t.elapsed(),
            engine.config_version()
        );
    }
    let bad =
        r#"{"version": "v3", "slots": [{"id": "banner", "variants": [], "default": "nope"}]}"#;
    match publish_config(&topic, bad, Duration::from_secs(5)) {
        Ok(()) => println!("v3 published (unexpected)"),
        Err(e) => println!("publisher refused v3: {e}"),
    }
    println!("still serving {:?}", engine.config_version());
    Ok(())
}
