//! Behaviour events → features → decisions: events on a Kafka topic are applied to an
//! in-memory store by a `FeatureUpdater`, and decisions read the aggregates.
//!
//! ```sh
//! KAFKA_BROKERS=localhost:9092 cargo run --release --features kafka --example feature_updater
//! cargo run --release --features kafka --example feature_updater   # in-process mock cluster
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use elvon::features::aggregate::{Aggregate, Aggregates, Event};
use elvon::features::MemoryStore;
use elvon::kafka::{FeatureUpdater, MemoryTarget, UpdaterOptions};
use elvon::Engine;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const EVENTS: usize = 100_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = match std::env::var("KAFKA_BROKERS") {
        Ok(_) => None,
        Err(_) => Some(rdkafka::mocking::MockCluster::new(1)?),
    };
    let brokers = match &mock {
        Some(m) => {
            m.create_topic("elvon-events", 4, 1)?;
            m.create_topic("elvon-dead-letter", 1, 1)?;
            m.bootstrap_servers()
        }
        None => std::env::var("KAFKA_BROKERS")?,
    };
    let aggregates = Arc::new(Aggregates::new(vec![
        Aggregate::count("page_view_7d", "page_view").window(Duration::from_secs(86_400), 7),
        Aggregate::last("last_category", "page_view", "category"),
    ])?);

    // A behaviour pipeline: page views of 1,000 users (plus one broken message).
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let now = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    for i in 0..EVENTS {
        let user = format!("user-{}", i % 1_000);
        let cat = ["shoes", "books", "games"][i % 3];
        let e = Event::new(format!("pv-{i}"), &user, "page_view", now).with("category", cat);
        let body = serde_json::to_string(&e)?;
        producer
            .send(BaseRecord::to("elvon-events").key(&user).payload(&body))
            .map_err(|(e, _)| e)?;
    }
    producer
        .send(BaseRecord::<(), _>::to("elvon-events").payload("{not an event"))
        .map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(30))?;

    let store = MemoryStore::with_aggregates(Aggregates::clone(&aggregates));
    let t = Instant::now();
    let updater = FeatureUpdater::spawn(
        UpdaterOptions::new(
            &brokers,
            "elvon-example",
            ["elvon-events"],
            "elvon-dead-letter",
            Arc::clone(&aggregates),
        )
        .batch_size(2_000),
        MemoryTarget::new(store.clone(), aggregates),
        None,
    )?;
    // Throughput is timed from the first applied batch (joining the group takes a few
    // seconds on its own).
    let mut first: Option<(Instant, u64)> = None;
    while updater.stats().applied < EVENTS as u64 || updater.stats().dead_lettered < 1 {
        if t.elapsed() > Duration::from_secs(60) {
            return Err(format!("only {:?} after 60 s", updater.stats()).into());
        }
        let applied = updater.stats().applied;
        if first.is_none() && applied > 0 {
            first = Some((Instant::now(), applied));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = updater.stats();
    let (since, base) = first.unwrap_or((t, 0));
    let steady = since.elapsed();
    println!(
        "applied {} events, {} dead-lettered, {} commits; joined and started after {:?}, then {:.0} events/s",
        s.applied,
        s.dead_lettered,
        s.commits,
        since - t,
        (s.applied - base) as f64 / steady.as_secs_f64()
    );
    updater.stop();

    let engine = Engine::builder().source(store).build();
    engine.load_config_json(
        r#"{"version": "events-demo", "slots": [{"id": "banner",
            "variants": [{"id": "default"}, {"id": "engaged"}], "default": "default",
            "rules": [{"when": {"feature": "page_view_7d", "op": "ge", "value": 100}, "serve": "engaged"}]}]}"#,
    )?;
    for user in ["user-0", "user-999", "nobody"] {
        let d = engine.decide_for("banner", user);
        println!("{user}: {:?} ({:?})", d.variant(), d.reason());
    }
    Ok(())
}
