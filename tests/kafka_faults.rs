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

mod updater {
    use super::*;
    use crate::kafka_common::{aggs, cluster, produce, read_with_headers, view, wait_for};
    use elvon::features::aggregate::Event;
    use elvon::features::MemoryStore;
    use elvon::kafka::{
        ApplyError, EventTarget, FeatureUpdater, MemoryTarget, UpdaterError, UpdaterOptions,
    };
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    fn target() -> MemoryTarget {
        MemoryTarget::new(MemoryStore::new(), aggs())
    }

    /// The sum of the committed offsets of `group` over the 4 partitions of `events`.
    fn committed(bootstrap: &str, group: &str) -> i64 {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..4 {
            tpl.add_partition("events", p);
        }
        let got = c
            .committed_offsets(tpl, Duration::from_secs(5))
            .expect("committed offsets");
        got.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .sum()
    }

    /// Point 2: while the dead-letter topic refuses writes, the poison message's offset is
    /// not committed and the failures are counted; once it accepts them the message arrives
    /// and the offset is committed. Before, the failure was ignored, the message counted as
    /// dead-lettered and its offset committed: it was lost.
    #[test]
    fn a_failed_dead_letter_write_holds_the_commit_and_is_retried() {
        let _serial = serial();
        let (cluster, bootstrap) = cluster();
        // A good event, then a poison message; the dead-letter topic refuses writes (every
        // produce request fails, not retriable) until the errors are cleared.
        produce(&bootstrap, "events", &[view(1, "u1")]);
        produce(&bootstrap, "events", &["poison".to_owned()]);
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 500],
        );
        let updater = FeatureUpdater::spawn(
            UpdaterOptions::new(&bootstrap, "dl1", ["events"], "dead", aggs()).batch_size(1),
            target(),
            None,
        )
        .expect("updater");
        wait_for("the good event", || updater.stats().applied == 1);
        wait_for("failed dead-letter writes", || {
            updater.stats().dead_letter_failed >= 2
        });
        let s = updater.stats();
        assert_eq!(s.dead_lettered, 0, "{s:?}");
        assert!(
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("dead-letter")),
            "{s:?}"
        );
        let before = committed(&bootstrap, "dl1");
        cluster.clear_request_errors(RDKafkaApiKey::Produce);
        wait_for("the dead letter", || updater.stats().dead_lettered == 1);
        let dead = read_with_headers(&bootstrap, "dead", 1, Duration::from_secs(10));
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].0, b"poison");
        assert!(
            dead[0].1["elvon-error"].contains("not JSON"),
            "{:?}",
            dead[0].1
        );
        wait_for("the commit past the poison", || {
            committed(&bootstrap, "dl1") > before
        });
        updater.stop();
    }

    /// Point 27: a poison message larger than the dead-letter producer takes is sent as a
    /// bounded prefix with its original size, never lost.
    #[test]
    fn an_oversized_poison_message_is_dead_lettered_truncated() {
        let _serial = serial();
        let (_cluster, bootstrap) = cluster();
        let big = format!("{{\"oops\": \"{}\"", "x".repeat(1_500_000));
        let p: rdkafka::producer::BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("message.max.bytes", "4000000")
            .create()
            .expect("producer");
        use rdkafka::producer::Producer;
        p.send(
            rdkafka::producer::BaseRecord::to("events")
                .key("k")
                .payload(&big),
        )
        .map_err(|(e, _)| e)
        .expect("queued");
        p.flush(Duration::from_secs(10)).expect("stored");
        produce(&bootstrap, "events", &["small poison".to_owned()]);
        let updater = FeatureUpdater::spawn(
            UpdaterOptions::new(&bootstrap, "dl2", ["events"], "dead", aggs())
                .set("fetch.message.max.bytes", "4000000"),
            target(),
            None,
        )
        .expect("updater");
        wait_for("both dead letters", || updater.stats().dead_lettered == 2);
        let dead = read_with_headers(&bootstrap, "dead", 2, Duration::from_secs(10));
        assert_eq!(dead.len(), 2);
        let (payload, headers) = dead
            .iter()
            .find(|(_, h)| h.contains_key("elvon-truncated"))
            .expect("the large one, truncated");
        assert_eq!(payload.len(), 64 * 1024);
        assert_eq!(headers["elvon-original-size"], big.len().to_string());
        assert!(headers.contains_key("elvon-offset"), "{headers:?}");
        assert!(dead.iter().any(|(p, _)| p == b"small poison"));
        updater.stop();
    }

    /// Fails every batch, transiently or for good.
    struct Failing {
        transient: bool,
        calls: AtomicUsize,
        inner: MemoryTarget,
        heal_after: usize,
    }

    impl EventTarget for Failing {
        fn apply(&self, events: &[Event]) -> Result<(), ApplyError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n >= self.heal_after {
                return self.inner.apply(events);
            }
            Err(if self.transient {
                ApplyError::transient("store is down")
            } else {
                ApplyError::permanent("these events are not for me")
            })
        }
    }

    /// Point 3: target failures are counted, kept and reported; a permanent one sends the
    /// batch to the dead-letter topic after the configured tries, a transient one is retried
    /// until it passes. Before, errors were discarded and a permanent failure was retried
    /// every 100 ms forever, stalling the partition.
    #[test]
    fn target_failures_are_surfaced_and_permanent_ones_dead_lettered() {
        let _serial = serial();
        let (_cluster, bootstrap) = cluster();
        let events: Vec<String> = (0..10).map(|i| view(i, "u1")).collect();
        produce(&bootstrap, "events", &events);
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s2 = Arc::clone(&seen);
        let updater = FeatureUpdater::spawn(
            UpdaterOptions::new(&bootstrap, "ap1", ["events"], "dead", aggs())
                .permanent_retries(2)
                .on_error(move |e: &UpdaterError| {
                    s2.lock().expect("lock").push(e.to_string());
                }),
            Failing {
                transient: false,
                calls: AtomicUsize::new(0),
                inner: target(),
                heal_after: usize::MAX,
            },
            None,
        )
        .expect("updater");
        wait_for("the rejected events dead-lettered", || {
            updater.stats().dead_lettered == 10
        });
        let s = updater.stats();
        assert_eq!((s.applied, s.rejected), (0, 10), "{s:?}");
        assert!(s.apply_errors >= 1, "{s:?}");
        assert!(s.last_error.is_some());
        let dead = read_with_headers(&bootstrap, "dead", 10, Duration::from_secs(10));
        assert_eq!(dead.len(), 10);
        assert!(
            dead[0].1["elvon-error"].contains("not for me"),
            "{:?}",
            dead[0].1
        );
        assert!(
            seen.lock()
                .expect("lock")
                .iter()
                .any(|e| e.contains("not for me")),
            "the callback saw the error"
        );
        updater.stop();

        // Transient: retried (with back-off) until the store heals; nothing dead-lettered.
        produce(&bootstrap, "events", &[view(100, "u2")]);
        let healing = Failing {
            transient: true,
            calls: AtomicUsize::new(0),
            inner: target(),
            heal_after: 3,
        };
        let updater = FeatureUpdater::spawn(
            UpdaterOptions::new(&bootstrap, "ap2", ["events"], "dead2", aggs()),
            healing,
            None,
        )
        .expect("updater");
        wait_for("the events applied once healed", || {
            updater.stats().applied == 11
        });
        let s = updater.stats();
        assert_eq!(
            (s.apply_errors, s.dead_lettered, s.rejected),
            (3, 0, 0),
            "{s:?}"
        );
        updater.stop();
    }

    /// Point 3: poll errors are counted and reported, not skipped silently.
    #[test]
    fn poll_errors_are_surfaced() {
        let _serial = serial();
        let (cluster, bootstrap) = cluster();
        let updater = FeatureUpdater::spawn(
            UpdaterOptions::new(&bootstrap, "pe1", ["events"], "dead", aggs()),
            target(),
            None,
        )
        .expect("updater");
        std::thread::sleep(Duration::from_millis(300));
        cluster.broker_down(1).expect("broker down");
        wait_for("a poll error", || updater.stats().poll_errors > 0);
        assert!(updater.stats().last_error.is_some());
        cluster.broker_up(1).expect("broker up");
        updater.stop();
    }
}

/// Point 29: a new watcher reads the config topic to its end first and loads only the
/// newest valid config there (reporting the newer invalid ones), then says it is ready.
/// Before, it loaded every old config in turn and gave no "caught up" signal.
#[test]
fn a_new_config_watcher_loads_only_the_newest_valid_config_and_says_when_ready() {
    let _serial = serial();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("configs", 1, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let config = |v: &str| CONFIG.replace("\"k1\"", &format!("\"{v}\""));
    let bad_config = config("v4").replace("\"weight\": 50}]", "\"weight\": 40}]");
    kafka_common::produce_keyed(
        &bootstrap,
        "configs",
        elvon::kafka::CONFIG_KEY,
        &[
            config("v1"),
            config("v2"),
            "{not json".to_owned(),
            bad_config,
        ],
    );
    let engine = Engine::default();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = std::sync::Arc::clone(&events);
    let watcher = elvon::kafka::KafkaConfigWatcher::spawn(
        engine.clone(),
        &elvon::kafka::ConfigTopicOptions::new(&bootstrap, "configs"),
        move |e| {
            let what = match e {
                elvon::WatchEvent::Loaded(o) => format!("loaded {}", o.version),
                elvon::WatchEvent::Rejected(_) => "rejected".to_owned(),
                _ => "other".to_owned(),
            };
            seen.lock().expect("lock").push(what);
        },
    )
    .expect("watcher");
    assert!(watcher.wait_ready(Duration::from_secs(20)), "caught up");
    assert_eq!(engine.config_version(), "v2");
    assert_eq!(
        *events.lock().expect("lock"),
        ["rejected", "rejected", "loaded v2"],
        "newest first, and nothing older than the newest valid one loaded"
    );
    elvon::kafka::publish_config(
        &elvon::kafka::ConfigTopicOptions::new(&bootstrap, "configs"),
        &config("v5"),
        Duration::from_secs(5),
    )
    .expect("published");
    let t = Instant::now();
    while engine.config_version() != "v5" && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        engine.config_version(),
        "v5",
        "follows the topic once ready"
    );
    // An empty (or missing) topic: ready at once, nothing loaded.
    let other = Engine::default();
    let w = elvon::kafka::KafkaConfigWatcher::spawn(
        other.clone(),
        &elvon::kafka::ConfigTopicOptions::new(&bootstrap, "no-configs"),
        |_| {},
    )
    .expect("watcher");
    assert!(w.wait_ready(Duration::from_secs(20)));
    assert_eq!(other.config_version(), "");
}

/// Point 28: a fatal error of librdkafka's idempotent producer (here: a sequence
/// desynchronization the mock broker injects) is surfaced and the sink recovers on its own
/// with a new producer. Before, the producer stayed fatal and every later record failed,
/// with nothing logged.
#[test]
fn a_fatal_producer_error_is_surfaced_and_the_sink_recovers() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let _serial = serial();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("decisions", 1, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let fatal = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = std::sync::Arc::clone(&fatal);
    let sink = KafkaDecisionSink::new(
        KafkaSinkOptions::new(&bootstrap, "decisions")
            .on_fatal(move |e| seen.lock().expect("lock").push(e.to_owned())),
    )
    .expect("sink");
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(CONFIG).expect("config");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    for i in 0..100 {
        engine.decide("s", &format!("u{i}"), &Features::new());
    }
    let _ = sink.flush(Duration::from_secs(10));
    let t = Instant::now();
    while sink.producer_restarts() == 0 && t.elapsed() < Duration::from_secs(20) {
        // The writer replaces the producer when it next has a record (or pass) to handle.
        engine.decide("s", "nudge", &Features::new());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sink.producer_restarts(), 1, "{:?}", sink.stats());
    let s = sink.stats();
    assert!(
        s.last_error.as_deref().is_some_and(|e| e.contains("fatal")),
        "{s:?}"
    );
    assert_eq!(fatal.lock().expect("lock").len(), 1);
    // Later records are delivered by the new producer.
    let before = sink.stats().written;
    for i in 0..1_000 {
        engine.decide("s", &format!("after-{i}"), &Features::new());
    }
    sink.flush(Duration::from_secs(20)).expect("flushed");
    let s = sink.stats();
    assert!(s.written >= before + 1_000, "{s:?}");
    assert_eq!(s.offered, s.written + s.dropped + s.failed, "{s:?}");
}
