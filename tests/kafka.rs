//! The Kafka decision-log sink against librdkafka's in-process mock cluster, read back with
//! an independent consumer.
#![cfg(feature = "kafka")]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use elvon::kafka::{KafkaDecisionSink, KafkaSinkOptions};
use elvon::sink::DecisionRecord;
use elvon::{Engine, Features};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::Message;

#[path = "common/kafka.rs"]
mod kafka_common;
use kafka_common::{read_back, serial, Broker};

const CONFIG: &str = r#"{"version": "k1", "slots": [{
    "id": "banner",
    "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
    "default": "a",
    "rules": [{"split": {"variants": [
        {"variant": "a", "weight": 40}, {"variant": "b", "weight": 30}, {"variant": "c", "weight": 30}]}}]
}]}"#;

#[test]
fn every_decision_arrives_once_in_user_order_and_decodes_to_itself() {
    let _serial = serial();
    let broker = Broker::new(3, &[("decisions", 6)]);
    let (bootstrap, topic) = (broker.bootstrap(), broker.t("decisions"));
    // Room for all of them: deciding in a tight loop outruns the writer, and this test is
    // about delivery, not overload (the next one is).
    let sink =
        KafkaDecisionSink::new(KafkaSinkOptions::new(&bootstrap, &topic).queue_capacity(100_000))
            .expect("sink");
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(CONFIG).expect("config");
    let n = 100_000;
    let mut made: HashMap<String, (String, String)> = HashMap::with_capacity(n);
    let none = Features::new();
    for i in 0..n {
        let user = format!("user-{}", i % 1_000);
        let d = engine.decide("banner", &user, &none);
        made.insert(
            d.id().to_string(),
            (user, d.variant().unwrap_or("").to_owned()),
        );
    }
    sink.flush(Duration::from_secs(30)).expect("flushed");
    let stats = sink.stats();
    assert_eq!(
        (stats.offered, stats.written, stats.dropped, stats.failed),
        (n as u64, n as u64, 0, 0)
    );

    let got = read_back(&bootstrap, &topic, n, Duration::from_secs(60));
    assert_eq!(got.len(), n, "each decision exactly once");
    let mut last_seq: HashMap<String, u128> = HashMap::new();
    for (key, payload) in &got {
        let r: DecisionRecord = serde_json::from_slice(payload).expect("a decision record");
        let (user, variant) = made
            .remove(&r.id.to_string())
            .expect("a decision we made, not seen before");
        assert_eq!((&r.user, key), (&user, &user));
        assert_eq!(r.variant.as_deref(), Some(variant.as_str()));
        assert_eq!(r.slot, "banner");
        // One thread made them all, so ids grow with time; per user they must arrive in
        // that order.
        let seq = r.id.as_u128();
        if let Some(prev) = last_seq.insert(user.clone(), seq) {
            assert!(prev < seq, "user {user}: {prev:#x} then {seq:#x}");
        }
    }
    assert!(made.is_empty());
}

#[test]
fn a_dead_broker_costs_decide_nothing_and_queued_records_arrive_when_it_is_back() {
    let _serial = serial();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("decisions", 2, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let sink = KafkaDecisionSink::new(
        KafkaSinkOptions::new(&bootstrap, "decisions")
            .set("queue.buffering.max.messages", "5000")
            .queue_capacity(5_000),
    )
    .expect("sink");
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(CONFIG).expect("config");
    let none = Features::new();
    let time = |users: std::ops::Range<usize>| {
        let t = Instant::now();
        for i in users.clone() {
            engine.decide("banner", &format!("u{i}"), &none);
        }
        t.elapsed() / users.len() as u32
    };
    let up = time(0..5_000);
    sink.flush(Duration::from_secs(10))
        .expect("flushed while up");
    cluster.broker_down(1).expect("broker down");
    std::thread::sleep(Duration::from_millis(200));
    let down = time(5_000..25_000);
    eprintln!("decide with the Kafka sink: {up:?} per call with the broker up, {down:?} down");
    assert!(
        down < up * 3 + Duration::from_micros(2),
        "decide slowed from {up:?} to {down:?} with the broker down"
    );
    let s = sink.stats();
    assert_eq!(s.offered, 25_000);
    assert_eq!(s.offered, s.written + s.dropped + s.failed + s.pending());
    // Both queues full: 5,000 in the sink's, 5,000 in librdkafka's, one in the writer's hand.
    assert!(s.pending() <= 10_001, "queues bounded: {s:?}");
    assert!(s.dropped >= 9_999, "overflow dropped and counted: {s:?}");
    let queued = s.pending();

    cluster.broker_up(1).expect("broker up");
    sink.flush(Duration::from_secs(30))
        .expect("queued records delivered");
    let s = sink.stats();
    assert_eq!(s.written, 5_000 + queued, "{s:?}");
    assert_eq!(s.offered, s.written + s.dropped + s.failed);
    let got = read_back(
        &bootstrap,
        "decisions",
        s.written as usize,
        Duration::from_secs(30),
    );
    assert_eq!(got.len() as u64, s.written);
}

#[test]
fn a_published_config_is_swapped_in_and_an_invalid_one_is_rejected() {
    let _serial = serial();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("configs", 1, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let engine = Engine::default();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let _watcher = elvon::kafka::KafkaConfigWatcher::spawn(
        engine.clone(),
        &elvon::kafka::ConfigTopicOptions::new(&bootstrap, "configs"),
        move |e| {
            let _ = tx.send(match e {
                elvon::WatchEvent::Loaded(o) => format!("loaded {}", o.version),
                elvon::WatchEvent::Rejected(err) => format!("rejected {err}"),
                _ => "other".to_owned(),
            });
        },
    )
    .expect("watcher");
    let t = Instant::now();
    elvon::kafka::publish_config(
        &elvon::kafka::ConfigTopicOptions::new(&bootstrap, "configs"),
        CONFIG,
        Duration::from_secs(5),
    )
    .expect("published");
    let published = t.elapsed();
    let seen = rx
        .recv_timeout(Duration::from_secs(1))
        .expect("an event within 1 s");
    assert_eq!(seen, "loaded k1");
    eprintln!(
        "config published in {published:?}, swapped in {:?} from the start",
        t.elapsed()
    );
    assert_eq!(engine.config_version(), "k1");
    assert!(engine
        .decide("banner", "u", &Features::new())
        .variant()
        .is_some());

    // The publisher refuses an invalid config; one written past it is rejected by the
    // watcher, and k1 keeps serving.
    let bad = r#"{"version": "k2", "slots": [{"id": "banner", "variants": [], "default": "x"}]}"#;
    let err = elvon::kafka::publish_config(
        &elvon::kafka::ConfigTopicOptions::new(&bootstrap, "configs"),
        bad,
        Duration::from_secs(5),
    )
    .expect_err("invalid config not published");
    assert!(err.to_string().contains("slots[0]"), "{err}");
    assert!(
        !err.is_transient(),
        "an invalid config fails the same way every time"
    );
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    producer
        .send(
            rdkafka::producer::BaseRecord::to("configs")
                .key("config")
                .payload(bad),
        )
        .map_err(|(e, _)| e)
        .expect("sent");
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(5)).expect("stored");
    let seen = rx.recv_timeout(Duration::from_secs(5)).expect("an event");
    assert!(seen.starts_with("rejected"), "{seen}");
    assert_eq!(engine.config_version(), "k1");
    assert!(engine
        .decide("banner", "u", &Features::new())
        .variant()
        .is_some());

    // A publish the broker never confirms is an error, not a silent success.
    cluster.broker_down(1).expect("broker down");
    let err = elvon::kafka::publish_config(
        &elvon::kafka::ConfigTopicOptions::new(&bootstrap, "configs"),
        CONFIG,
        Duration::from_secs(1),
    )
    .expect_err("not confirmed with the broker down");
    assert!(err.to_string().contains("config not"), "{err}");
    assert!(
        err.is_transient(),
        "a broker that is down may come back: {err:?}"
    );
}

/// A setting librdkafka refuses is a permanent error: retrying cannot help.
#[test]
fn a_refused_setting_is_a_permanent_error() {
    let options = elvon::kafka::KafkaSinkOptions::new("127.0.0.1:9", "decisions")
        .set("no.such.property", "1");
    let err = elvon::kafka::KafkaDecisionSink::new(options).expect_err("refused");
    assert!(err.to_string().contains("no.such.property"), "{err}");
    assert!(!err.is_transient(), "{err:?}");
    // The config topic's settings reach both of its clients.
    let topic = elvon::kafka::ConfigTopicOptions::new("127.0.0.1:9", "configs")
        .set("no.such.property", "1");
    let err = elvon::kafka::KafkaConfigWatcher::spawn(Engine::default(), &topic, |_| {})
        .expect_err("refused");
    assert!(
        err.to_string().contains("no.such.property") && !err.is_transient(),
        "{err}"
    );
    let err =
        elvon::kafka::publish_config(&topic, CONFIG, Duration::from_secs(1)).expect_err("refused");
    assert!(
        err.to_string().contains("no.such.property") && !err.is_transient(),
        "{err}"
    );
}

mod updater {
    use super::*;
    use crate::kafka_common::{aggs, now_ms, produce, view, wait_for, Broker};
    use elvon::features::aggregate::Event;
    use elvon::features::MemoryStore;
    use elvon::kafka::{ApplyError, EventTarget, FeatureUpdater, MemoryTarget, UpdaterOptions};
    use rdkafka::message::Headers;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn poison_goes_to_the_dead_letter_topic_and_rewards_to_the_engine() {
        let _serial = serial();
        let broker = Broker::new(1, &[("events", 4), ("dead", 1)]);
        let bootstrap = broker.bootstrap();
        let (events_topic, dead) = (broker.t("events"), broker.t("dead"));
        let store = MemoryStore::new();
        let target = MemoryTarget::new(store.clone(), aggs());
        let engine = Engine::builder().id_prefix(7).build();
        engine
            .load_config_json(
                r#"{"version": "b", "slots": [{"id": "offer", "variants": [{"id": "x"}, {"id": "y"}],
                    "default": "x", "rules": [{"bandit": {"policy": "thompson", "arms": ["x", "y"]}}]}]}"#,
            )
            .expect("config");
        let d = engine.decide("offer", "u1", &Features::new());
        let mut msgs = vec![view(1, "u1"), "not json".to_owned()];
        msgs.push(r#"{"id": "b1", "user": "u1", "kind": "buy", "time_ms": 1, "values": {"amount": "lots"}}"#.to_owned());
        msgs.push(view(2, "u1"));
        msgs.push(format!(r#"{{"decision_id": "{}", "reward": 1.0}}"#, d.id()));
        // Another instance's decision (prefix 8), and this one's again (already rewarded).
        let other = elvon::DecisionId::from_u128(8 << 64 | 1);
        msgs.push(format!(r#"{{"decision_id": "{other}", "reward": 1.0}}"#));
        msgs.push(format!(r#"{{"decision_id": "{}", "reward": 1.0}}"#, d.id()));
        msgs.push(r#"{"id": "b2", "user": "u1", "kind": "buy", "time_ms": 1, "values": {"amount": 12.5}}"#.to_owned());
        produce(&bootstrap, &events_topic, &msgs);
        let updater = FeatureUpdater::spawn(
            UpdaterOptions::new(
                &bootstrap,
                broker.t("g1"),
                [events_topic.as_str()],
                dead.as_str(),
                aggs(),
            ),
            target,
            Some(engine.clone()),
        )
        .expect("updater");
        wait_for("all messages", || {
            let s = updater.stats();
            s.applied == 3 && s.dead_lettered == 2 && s.rewards == 3
        });
        let s = updater.stats();
        assert_eq!(
            (s.rewards_applied, s.rewards_not_applied, s.rewards_foreign),
            (1, 1, 1),
            "{s:?}"
        );
        let f = store.read(&aggs(), "u1", now_ms());
        assert_eq!(f.get("views"), Some(&elvon::Value::Int(2)));
        assert_eq!(f.get("spend"), Some(&elvon::Value::Float(12.5)));
        assert_eq!(engine.reward_stats().applied, 1);

        let letters = read_back(&bootstrap, &dead, 2, Duration::from_secs(10));
        assert_eq!(letters.len(), 2);
        // The error travels in a header; read it with a consumer that keeps headers.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", broker.t("dlq-check"))
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer.subscribe(&[dead.as_str()]).expect("subscribe");
        let mut errors = Vec::new();
        let t = Instant::now();
        while errors.len() < 2 && t.elapsed() < Duration::from_secs(10) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let h = m.headers().expect("headers");
                let e = h
                    .iter()
                    .find(|h| h.key == "elvon-error")
                    .expect("error header");
                errors.push(String::from_utf8_lossy(e.value.unwrap_or_default()).into_owned());
            }
        }
        errors.sort();
        assert!(
            errors[0].starts_with("event \"b1\".values.amount"),
            "{errors:?}"
        );
        assert!(errors[1].starts_with("not JSON"), "{errors:?}");
        updater.stop();
    }

    #[test]
    fn events_delivered_twice_update_features_once() {
        let _serial = serial();
        let broker = Broker::new(1, &[("events", 4), ("dead", 1)]);
        let bootstrap = broker.bootstrap();
        let (events_topic, dead) = (broker.t("events"), broker.t("dead"));
        let store = MemoryStore::new();
        let events: Vec<String> = (0..10_000)
            .map(|i| view(i, &format!("u{}", i % 100)))
            .collect();
        produce(&bootstrap, &events_topic, &events);
        produce(&bootstrap, &events_topic, &events);
        let updater = FeatureUpdater::spawn(
            UpdaterOptions::new(
                &bootstrap,
                broker.t("g2"),
                [events_topic.as_str()],
                dead.as_str(),
                aggs(),
            ),
            MemoryTarget::new(store.clone(), aggs()),
            None,
        )
        .expect("updater");
        wait_for("20,000 messages", || updater.stats().applied == 20_000);
        // The lag is measured once a second; everything is consumed, so it drops to 0.
        wait_for("lag 0", || updater.stats().lag == Some(0));
        for u in 0..100 {
            let f = store.read(&aggs(), &format!("u{u}"), now_ms());
            assert_eq!(f.get("views"), Some(&elvon::Value::Int(100)), "user u{u}");
        }
        updater.stop();
    }

    /// Applies half of its first batch, then fails like a crashed process would.
    struct Crashes {
        inner: MemoryTarget,
        crashed: Arc<AtomicBool>,
        batches: AtomicUsize,
    }

    impl EventTarget for Crashes {
        fn apply(&self, events: &[Event]) -> Result<(), ApplyError> {
            if self.crashed.load(Ordering::SeqCst) {
                return Err(ApplyError::transient("crashed"));
            }
            if self.batches.fetch_add(1, Ordering::SeqCst) == 2 {
                self.inner.apply(&events[..events.len() / 2])?;
                self.crashed.store(true, Ordering::SeqCst);
                return Err(ApplyError::transient("crashed mid-batch"));
            }
            self.inner.apply(events)
        }
    }

    #[test]
    fn a_consumer_killed_mid_batch_loses_nothing_when_another_takes_over() {
        let _serial = serial();
        let broker = Broker::new(1, &[("events", 4), ("dead", 1)]);
        let bootstrap = broker.bootstrap();
        let (events_topic, dead) = (broker.t("events"), broker.t("dead"));
        // Both consumers join group g3 on the same topics.
        let g3 = || {
            UpdaterOptions::new(
                &bootstrap,
                broker.t("g3"),
                [events_topic.as_str()],
                dead.as_str(),
                aggs(),
            )
        };
        let store = MemoryStore::new();
        let events: Vec<String> = (0..5_000)
            .map(|i| view(i, &format!("u{}", i % 50)))
            .collect();
        produce(&bootstrap, &events_topic, &events);
        let crashed = Arc::new(AtomicBool::new(false));
        let first = FeatureUpdater::spawn(
            // A killed process does not leave its group: the group notices when its session
            // times out, so keep that short here.
            g3().batch_size(200)
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500"),
            Crashes {
                inner: MemoryTarget::new(store.clone(), aggs()),
                crashed: Arc::clone(&crashed),
                batches: AtomicUsize::new(0),
            },
            None,
        )
        .expect("updater");
        let t0 = Instant::now();
        wait_for("the crash", || crashed.load(Ordering::SeqCst));
        let before = first.stats().applied;
        eprintln!("crash after {:?}", t0.elapsed());
        drop(first); // stops without committing the failed batch
        eprintln!("first stopped after {:?}", t0.elapsed());
        assert!(before < 5_000, "{before}");
        let second = FeatureUpdater::spawn(g3(), MemoryTarget::new(store.clone(), aggs()), None)
            .expect("updater");
        let total = || {
            (0..50)
                .map(|u| {
                    store
                        .read(&aggs(), &format!("u{u}"), now_ms())
                        .get("views")
                        .and_then(elvon::Value::as_f64)
                        .unwrap_or(0.0)
                })
                .sum::<f64>()
        };
        wait_for("every event", || total() >= 5_000.0);
        eprintln!("all applied after {:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(total(), 5_000.0, "each event counted once");
        assert!(
            second.stats().applied >= 5_000 - before,
            "{:?}",
            second.stats()
        );
        second.stop();
    }
}

/// A config watcher that cannot reach its broker reports a source error, whose client error
/// is the Kafka client's own type, and keeps the current config serving.
#[test]
fn an_unreachable_config_topic_is_a_source_error() {
    let engine = Engine::default();
    engine.load_config_json(CONFIG).expect("valid");
    let served = engine.config_version();
    let (tx, rx) = std::sync::mpsc::channel();
    let topic = elvon::kafka::ConfigTopicOptions::new("127.0.0.1:9", "configs");
    let watcher = elvon::kafka::KafkaConfigWatcher::spawn(engine.clone(), &topic, move |e| {
        if let elvon::WatchEvent::SourceError(err) = e {
            let _ = tx.send(err.to_string());
            if let elvon::ConfigSourceError::Remote { system, error, .. } = err {
                assert_eq!(*system, "kafka");
                let client = error
                    .downcast_ref::<elvon::kafka::ClientError>()
                    .expect("the Kafka client's error");
                let _ = tx.send(format!("transient: {}", client.is_transient()));
            }
        }
    })
    .expect("watcher");
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a source error");
    assert!(
        first.starts_with("kafka config source (watermarks)"),
        "{first}"
    );
    let second = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("its client error");
    assert_eq!(
        second, "transient: true",
        "an unreachable broker may come back"
    );
    assert!(!watcher.is_ready());
    assert_eq!(engine.config_version(), served);
}

mod fleet {
    use super::*;
    use crate::kafka_common::{cluster, produce, wait_for};
    use elvon::kafka::{FleetOptions, FleetSync};

    fn thompson_config() -> String {
        let ids: Vec<String> = (0..10).map(|i| format!("arm{i}")).collect();
        serde_json::json!({"version": "1", "slots": [{
            "id": "s",
            "variants": ids.iter().map(|i| serde_json::json!({"id": i})).collect::<Vec<_>>(),
            "default": ids[0],
            "rules": [{"bandit": {"policy": "thompson", "arms": ids}}]
        }]})
        .to_string()
    }

    /// Issue 15: three instances, traffic round-robin, rewards from a separate producer on
    /// a reward topic of three partitions: each reward is applied once, by its instance; the
    /// instances end on the same statistics and model version.
    #[test]
    fn a_fleet_applies_every_reward_once_and_agrees_on_the_model() {
        let _serial = serial();
        let (cluster, bootstrap) = cluster();
        cluster.create_topic("learner", 1, 1).expect("topic");
        cluster.create_topic("rewards", 3, 1).expect("topic");
        let options =
            FleetOptions::new(&bootstrap, "learner", "rewards").interval(Duration::from_millis(20));
        let config = thompson_config();
        let engines: Vec<Engine> = (1..=3u64)
            .map(|p| {
                let e = Engine::builder().id_prefix(p).build();
                e.load_config_json(&config).expect("valid");
                e
            })
            .collect();
        let syncs: Vec<FleetSync> = engines
            .iter()
            .map(|e| FleetSync::spawn(e.clone(), &options).expect("fleet"))
            .collect();
        for s in &syncs {
            assert!(s.wait_ready(Duration::from_secs(10)), "caught up");
        }
        // Over 10,000 rewards, so the late instance below starts after 10,000.
        const N: usize = 10_002;
        let none = Features::new();
        let rewards: Vec<String> = (0..N)
            .map(|t| {
                let d = engines[t % 3].decide("s", "u", &none);
                let r = u8::from(d.variant() == Some("arm3") || t % 3 == 0);
                format!(r#"{{"decision_id": "{}", "reward": {r}}}"#, d.id())
            })
            .collect();
        produce(&bootstrap, "rewards", &rewards);
        wait_for("every reward applied", || {
            syncs.iter().map(|s| s.stats().rewards_applied).sum::<u64>() == N as u64
        });
        let applied_at = Instant::now();
        for (s, e) in syncs.iter().zip(&engines) {
            let st = s.stats();
            assert_eq!(st.rewards_applied, (N / 3) as u64, "{st:?}");
            assert_eq!(st.rewards_foreign, (2 * N / 3) as u64, "{st:?}");
            assert_eq!(
                (st.rewards_not_applied, st.rewards_invalid),
                (0, 0),
                "{st:?}"
            );
            assert_eq!(e.reward_stats().unknown, 0);
        }
        let total =
            |e: &Engine| -> f64 { e.learner_state().bandits[0].arms.iter().map(|a| a.n).sum() };
        wait_for("every instance merged every reward", || {
            engines.iter().all(|e| total(e) == N as f64)
        });
        let versions: Vec<_> = engines
            .iter()
            .map(|e| e.decide("s", "u", &none).model_version())
            .collect();
        let agreed = applied_at.elapsed();
        assert!(
            versions
                .iter()
                .all(|v| *v == versions[0] && v.unwrap_or(0) > 0),
            "{versions:?}"
        );
        assert!(
            agreed < Duration::from_secs(1),
            "instances agreed {agreed:?} after the last reward"
        );
        let states: Vec<_> = engines.iter().map(Engine::learner_state).collect();
        assert_eq!(states[0], states[1]);
        assert_eq!(states[0], states[2]);
        // A new instance rebuilds the fleet's state from the learner topic.
        let late = Engine::builder().id_prefix(9).build();
        late.load_config_json(&config).expect("valid");
        let started = Instant::now();
        let sync = FleetSync::spawn(late.clone(), &options).expect("fleet");
        assert!(
            sync.wait_ready(Duration::from_secs(2)),
            "caught up within 2 s"
        );
        println!(
            "instances agreed {agreed:?} after the last reward; a new one caught up on {} \
             entries in {:?}",
            sync.stats().merged,
            started.elapsed()
        );
        assert_eq!(late.learner_state(), states[0]);
        let id = engines[0].decide("s", "u", &none).id();
        assert_eq!(
            late.replay("s", "u", &none, id).probability_vector(),
            engines[0].replay("s", "u", &none, id).probability_vector()
        );
    }

    /// Issue 15: a fleet cut off from the cluster keeps deciding on its last models and
    /// keeps its increments; when the broker is back they reach every instance, and the
    /// instances agree again.
    #[test]
    fn a_fleet_cut_off_from_the_cluster_keeps_deciding_and_converges_after() {
        let _serial = serial();
        let (cluster, bootstrap) = cluster();
        cluster.create_topic("learner", 1, 1).expect("topic");
        cluster.create_topic("rewards", 1, 1).expect("topic");
        let options =
            FleetOptions::new(&bootstrap, "learner", "rewards").interval(Duration::from_millis(20));
        let config = thompson_config();
        let engines: Vec<Engine> = (1..=2u64)
            .map(|p| {
                let e = Engine::builder().id_prefix(20 + p).build();
                e.load_config_json(&config).expect("valid");
                e
            })
            .collect();
        let syncs: Vec<FleetSync> = engines
            .iter()
            .map(|e| FleetSync::spawn(e.clone(), &options).expect("fleet"))
            .collect();
        let none = Features::new();
        let total =
            |e: &Engine| -> f64 { e.learner_state().bandits[0].arms.iter().map(|a| a.n).sum() };
        // Rewards given directly to the instances (the reward topic is tested above).
        let reward_round = |n: usize| {
            for t in 0..n {
                let e = &engines[t % 2];
                let d = e.decide("s", "u", &none);
                assert_eq!(e.reward(d.id(), 1.0), elvon::RewardOutcome::Applied);
            }
        };
        reward_round(100);
        wait_for("the first rewards merged", || {
            engines.iter().all(|e| total(e) == 100.0)
        });
        let before = engines[0].decide("s", "u", &none).model_version();
        cluster.broker_down(1).expect("broker down");
        reward_round(200);
        std::thread::sleep(Duration::from_millis(300));
        for e in &engines {
            let d = e.decide("s", "u", &none);
            assert_eq!(d.model_version(), before, "cut off: the last model serves");
            assert_eq!(total(e), 100.0, "nothing merged while cut off");
        }
        cluster.broker_up(1).expect("broker up");
        wait_for(
            "the increments made while cut off merged everywhere",
            || engines.iter().all(|e| total(e) == 300.0),
        );
        wait_for("the same model version on both", || {
            let v: Vec<_> = engines
                .iter()
                .map(|e| e.decide("s", "u", &none).model_version())
                .collect();
            v[0] == v[1] && v[0] > before
        });
        assert_eq!(engines[0].learner_state(), engines[1].learner_state());
        assert_eq!(total(&engines[0]), 300.0, "every increment merged once");
        for s in &syncs {
            assert_eq!(s.stats().bad_entries, 0);
        }
    }

    /// Many rules rewarded in one interval are published as several bounded entries, not
    /// one message the broker would refuse.
    #[test]
    fn large_increments_are_split_into_bounded_entries() {
        let _serial = serial();
        let (cluster, bootstrap) = cluster();
        cluster.create_topic("learner", 1, 1).expect("topic");
        cluster.create_topic("rewards", 1, 1).expect("topic");
        let slots: Vec<serde_json::Value> = (0..3_000)
            .map(|i| {
                serde_json::json!({"id": format!("slot-{i}"), "variants": [{"id": "a"}, {"id": "b"}],
                    "default": "a", "rules": [{"bandit": {"policy": "thompson", "arms": ["a", "b"]}}]})
            })
            .collect();
        let config = serde_json::json!({"version": "1", "slots": slots}).to_string();
        let engine = Engine::builder().id_prefix(31).build();
        engine.load_config_json(&config).expect("valid");
        // Rewards before joining become increments too: all 3,000 rules in one interval.
        for i in 0..3_000 {
            let d = engine.decide(&format!("slot-{i}"), "u", &Features::new());
            assert_eq!(engine.reward(d.id(), 1.0), elvon::RewardOutcome::Applied);
        }
        let options =
            FleetOptions::new(&bootstrap, "learner", "rewards").interval(Duration::from_millis(20));
        let sync = FleetSync::spawn(engine.clone(), &options).expect("fleet");
        let total = || -> f64 {
            engine
                .learner_state()
                .bandits
                .iter()
                .flat_map(|b| &b.arms)
                .map(|a| a.n)
                .sum()
        };
        wait_for("every increment merged back", || total() == 3_000.0);
        let s = sync.stats();
        assert!(s.published >= 2 && s.merged == s.published, "{s:?}");
        assert_eq!(s.errors, 0, "{s:?}");
    }
}
