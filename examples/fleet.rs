//! Three instances of one service learning as one fleet over Kafka: traffic spread
//! round-robin, rewards sent by another process on a reward topic, increments merged through
//! one learner topic. Prints what each instance applied and the fleet's common model.
//!
//! ```sh
//! cargo run --release --features kafka --example fleet   # in-process mock cluster
//! KAFKA_BROKERS=localhost:9092 cargo run --release --features kafka --example fleet
//! ```
//!
//! On a real cluster, create `elvon-learner` with one partition and `elvon-rewards` with any
//! number first.

use std::time::{Duration, Instant};

use elvon::kafka::{FleetOptions, FleetSync};
use elvon::{Engine, Features};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const ARMS: usize = 10;
const DECISIONS: usize = 30_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = match std::env::var("KAFKA_BROKERS") {
        Ok(_) => None,
        Err(_) => Some(rdkafka::mocking::MockCluster::new(1)?),
    };
    let brokers = match &mock {
        Some(m) => {
            m.create_topic("elvon-learner", 1, 1)?;
            m.create_topic("elvon-rewards", 3, 1)?;
            m.bootstrap_servers()
        }
        None => std::env::var("KAFKA_BROKERS")?,
    };
    let arms: Vec<String> = (0..ARMS).map(|i| format!("arm{i}")).collect();
    let config = serde_json::json!({"version": "1", "slots": [{
        "id": "offer",
        "variants": arms.iter().map(|a| serde_json::json!({"id": a})).collect::<Vec<_>>(),
        "default": "arm0",
        "rules": [{"bandit": {"policy": "thompson", "arms": arms}}]
    }]})
    .to_string();
    let options = FleetOptions::new(&brokers, "elvon-learner", "elvon-rewards")
        .interval(Duration::from_millis(50));
    let mut instances = Vec::new();
    for _ in 0..3 {
        let engine = Engine::default();
        engine.load_config_json(&config)?;
        let sync = FleetSync::spawn(engine.clone(), &options)?;
        sync.wait_ready(Duration::from_secs(10));
        instances.push((engine, sync));
    }
    // The "click" process: arm i converts with probability 2% + 0.3% × i.
    let clicks: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    let mut rng = StdRng::seed_from_u64(42);
    let none = Features::new();
    let started = Instant::now();
    let mut converted = 0u64;
    for t in 0..DECISIONS {
        let (engine, _) = &instances[t % 3];
        let d = engine.decide("offer", &format!("user-{t}"), &none);
        let arm: usize = d.variant().unwrap_or("arm0")[3..].parse()?;
        let reward = u8::from(rng.random::<f64>() < 0.02 + 0.003 * arm as f64);
        converted += u64::from(reward);
        let body = format!(r#"{{"decision_id": "{}", "reward": {reward}}}"#, d.id());
        let key = d.id().to_string();
        clicks
            .send(BaseRecord::to("elvon-rewards").key(&key).payload(&body))
            .map_err(|(e, _)| e)?;
        if t % 1_000 == 999 {
            clicks.poll(Duration::ZERO);
            // Traffic paced so the fleet learns while it serves.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    clicks.flush(Duration::from_secs(10))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let applied = |i: &[(Engine, FleetSync)]| -> u64 {
        i.iter().map(|(_, s)| s.stats().rewards_applied).sum()
    };
    while applied(&instances) < DECISIONS as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300)); // the last increments go round
    println!(
        "{DECISIONS} decisions on 3 instances in {:?}, {converted} conversions sent as rewards",
        started.elapsed()
    );
    for (i, (engine, sync)) in instances.iter().enumerate() {
        let s = sync.stats();
        let d = engine.decide("offer", "probe", &none);
        println!(
            "instance {i} (prefix {:016x}): applied {} own rewards, {} foreign, {} not applied; \
             merged {} log entries; model version {:?}, P(arm9) {:.3}",
            engine.id_prefix(),
            s.rewards_applied,
            s.rewards_foreign,
            s.rewards_not_applied,
            s.merged,
            d.model_version(),
            d.probability_vector().map_or(0.0, |p| p[ARMS - 1]),
        );
    }
    let state = instances[0].0.learner_state();
    let n: f64 = state.bandits[0].arms.iter().map(|a| a.n).sum();
    let same = instances.iter().all(|(e, _)| e.learner_state() == state);
    println!("fleet statistics: {n} rewards; identical on every instance: {same}");
    Ok(())
}
