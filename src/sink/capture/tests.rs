//! The capture queue end to end: records in, the same records decoded out.

use super::encode::{pack_reason, unpack_reason};
use super::writer::run;
use super::*;
use crate::decision::DecisionId;
use crate::sink::{DecisionRecord, DecisionSink};
use crate::snapshot::{RawCause, RawReason};
use crate::{Engine, Features};

/// Decodes every record back into a `DecisionRecord`.
#[derive(Default)]
struct Collect(Arc<Mutex<Vec<DecisionRecord>>>);

impl Backend for Collect {
    fn record(&mut self, r: &Captured<'_>, c: &Counters) {
        let mut json = Vec::new();
        match r
            .write_json(&mut json)
            .and_then(|()| serde_json::from_slice::<DecisionRecord>(&json))
        {
            Ok(rec) => {
                lock(&self.0).push(rec);
                c.written(1);
            }
            Err(_) => c.failed(1),
        }
    }
    fn pass_done(&mut self, _: &Counters) {}
    fn flush(&mut self, _: &Counters) {}
}

struct TestSink(Arc<Queue>);

impl DecisionSink for TestSink {
    fn record(&self, event: &DecisionEvent<'_>) {
        self.0.offer(event);
    }
}

fn start(
    capacity: usize,
) -> (
    Arc<Queue>,
    Arc<Mutex<Vec<DecisionRecord>>>,
    std::thread::JoinHandle<()>,
) {
    let queue = Arc::new(Queue::new(capacity, "test", Overflow::Drop));
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut backend = Collect(Arc::clone(&out));
    let q = Arc::clone(&queue);
    let writer = std::thread::spawn(move || run(&q, &mut backend));
    (queue, out, writer)
}

fn flush(q: &Queue) {
    let ticket = q.ask_flush();
    let t = std::time::Instant::now();
    while !q.flushed(ticket) {
        assert!(t.elapsed() < Duration::from_secs(10), "flush timed out");
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// A decision as made: id, user, variant, the `tag` feature.
type Made = (DecisionId, String, Option<String>, String);

const CONFIG: &str = r#"{"version": "v1", "slots": [{"id": "s", "variants": [{"id": "a"}, {"id": "b"}],
    "default": "a", "rules": [{"when": {"feature": "tag", "op": "eq", "value": "x"}, "serve": "b"},
    {"split": {"variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}}]}]}"#;

/// Four threads, records of very different sizes (so they wrap the smallest ring at every
/// offset), a config swap half-way, threads that end: every record comes back exactly as
/// decided, each thread's in order, and the counts add up after the rings are let go.
#[test]
fn records_come_back_exactly_from_many_threads_across_wraps_and_swaps() {
    let (queue, out, writer) = start(1);
    assert_eq!(queue.words, MIN_WORDS);
    let engine = Engine::builder().sink(TestSink(Arc::clone(&queue))).build();
    engine.load_config_json(CONFIG).unwrap();
    let per_thread = 3_000usize;
    let made: Vec<Vec<Made>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let engine = engine.clone();
                s.spawn(move || {
                    let mut made = Vec::new();
                    for i in 0..per_thread {
                        if t == 0 && i == per_thread / 2 {
                            engine
                                .load_config_json(&CONFIG.replace("v1", "v2"))
                                .unwrap();
                        }
                        let user = format!("u{t}-{i}-{}", "z".repeat(i % 97));
                        let tag = if i % 3 == 0 {
                            "x".to_owned()
                        } else {
                            "é".repeat(i % 300)
                        };
                        let d = engine.decide(
                            "s",
                            &user,
                            &Features::new().with("tag", tag.clone()).with("other", 1),
                        );
                        made.push((d.id(), user, d.variant().map(str::to_owned), tag));
                        // Give the writer time now and then, so both full and
                        // non-full rings are seen.
                        if i % 500 == 0 {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                    made
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    flush(&queue);
    // The writer lets go of the rings of the ended threads.
    let t = std::time::Instant::now();
    while lock(&queue.registry).live.len() > 1 {
        assert!(t.elapsed() < Duration::from_secs(10), "rings not retired");
        queue.wake();
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = queue.stats();
    assert_eq!(s.offered, 4 * per_thread as u64, "{s:?}");
    assert_eq!(s.failed, 0, "{s:?}");
    assert_eq!(s.offered, s.written + s.dropped, "{s:?}");
    assert!(s.dropped > 0, "a 32 KiB ring must overflow: {s:?}");
    let got = lock(&out).clone();
    assert_eq!(got.len() as u64, s.written);
    let mut versions = std::collections::BTreeSet::new();
    for thread in &made {
        // This thread's records, in the order they arrived.
        let mine: Vec<&DecisionRecord> = got
            .iter()
            .filter(|r| thread.iter().any(|m| m.0 == r.id))
            .collect();
        let mut expected = thread.iter();
        for r in mine {
            let e = expected.by_ref().find(|e| e.0 == r.id).expect("in order");
            assert_eq!((&r.user, &r.variant), (&e.1, &e.2));
            assert_eq!(
                r.features.get("tag").and_then(|v| v.as_str()),
                Some(e.3.as_str())
            );
            assert!(
                r.features.get("other").is_none(),
                "only the slot's features"
            );
            versions.insert(r.config_version.clone());
        }
    }
    assert!(
        versions.contains("v1") && versions.contains("v2"),
        "{versions:?}"
    );
    drop(engine);
    queue.close();
    writer.join().unwrap();
}

#[test]
fn a_record_larger_than_the_ring_is_dropped_and_counted() {
    let (queue, out, writer) = start(1);
    let engine = Engine::builder().sink(TestSink(Arc::clone(&queue))).build();
    engine.load_config_json(CONFIG).unwrap();
    let huge = "x".repeat(MIN_WORDS * 8);
    let _ = engine.decide("s", "u", &Features::new().with("tag", huge));
    let _ = engine.decide("s", "u", &Features::new().with("tag", "x"));
    flush(&queue);
    let s = queue.stats();
    assert_eq!((s.offered, s.written, s.dropped, s.failed), (2, 1, 1, 0));
    assert_eq!(lock(&out)[0].variant.as_deref(), Some("b"));
    drop(engine);
    queue.close();
    writer.join().unwrap();
}

#[test]
fn reasons_survive_packing() {
    let all = [
        RawReason::Rule {
            rule: u16::MAX,
            bucket: u32::MAX,
        },
        RawReason::Rule { rule: 3, bucket: 0 },
        RawReason::Holdout { layer: None },
        RawReason::Holdout { layer: Some(7) },
        RawReason::NotInLayer { layer: u32::MAX },
        RawReason::Default,
        RawReason::KillSwitch,
        RawReason::UnknownSlot,
        RawReason::Fallback(RawCause::Missing(9)),
        RawReason::Fallback(RawCause::WrongType(u32::MAX)),
        RawReason::Fallback(RawCause::SourceTimeout),
        RawReason::Fallback(RawCause::SourceError),
        RawReason::Fallback(RawCause::SourceUnavailable),
        RawReason::Sticky { version: 0 },
        RawReason::Sticky { version: u32::MAX },
    ];
    let causes =
        crate::FallbackKind::ALL.map(|k| RawReason::Fallback(RawCause::from_kind(k, u32::MAX - 1)));
    for r in all.into_iter().chain(causes) {
        assert_eq!(unpack_reason(pack_reason(r)), Some(r));
    }
    assert_eq!(unpack_reason(12 << 56), None, "no such tag");
    assert_eq!(
        unpack_reason(7 << 56 | 5 << 32),
        None,
        "no such fallback kind"
    );
}

/// Records the event both ways: through the queue, and as `DecisionRecord::from_event`.
struct BothWays(Arc<Queue>, Mutex<Vec<DecisionRecord>>);

impl DecisionSink for BothWays {
    fn record(&self, event: &DecisionEvent<'_>) {
        self.0.offer(event);
        lock(&self.1).push(DecisionRecord::from_event(event));
    }
}

/// Every part of the encoding (model version and probabilities of a bandit, the name of
/// an unknown slot, every feature type, an empty user, a config swap) decodes to the same
/// record as `DecisionRecord::from_event`, apart from the coarser timestamp.
#[test]
fn every_kind_of_record_decodes_to_the_same_decision_record() {
    let (queue, out, writer) = start(1_000);
    let sink = Arc::new(BothWays(Arc::clone(&queue), Mutex::new(Vec::new())));
    let engine = Engine::builder().sink(Arc::clone(&sink)).build();
    let config = |v: &str| {
        serde_json::json!({"version": v, "slots": [
            {"id": "typed", "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
             "rules": [{"when": {"all": [
                {"feature": "flag", "op": "eq", "value": true},
                {"feature": "n", "op": "gt", "value": 1},
                {"feature": "x", "op": "lt", "value": 10.5},
                {"feature": "country", "op": "in", "value": ["KR", "US"]},
                {"feature": "tags", "op": "in", "value": ["vip"]}]}, "serve": "b"}]},
            {"id": "arms", "variants": [{"id": "p"}, {"id": "q"}, {"id": "r"}], "default": "p",
             "rules": [{"bandit": {"policy": "thompson", "arms": ["p", "q", "r"]}}]}]})
        .to_string()
    };
    engine.load_config_json(&config("v1")).unwrap();
    let full = Features::new()
        .with("flag", true)
        .with("n", -7)
        .with("x", 2.25)
        .with("country", "KR")
        .with("tags", vec!["vip".to_owned(), String::new(), "é".repeat(9)])
        .with("unused", 1);
    let long_slot = "s".repeat(1_000);
    for (i, (slot, user)) in [
        ("typed", "u1"),
        ("typed", ""),
        ("arms", "u2"),
        ("nope", "u3"),
        (long_slot.as_str(), "u4"),
        ("arms", "u5-with-a-longer-id"),
    ]
    .into_iter()
    .enumerate()
    {
        if i == 3 {
            engine.load_config_json(&config("v2")).unwrap();
        }
        let _ = engine.decide(slot, user, &full);
        let _ = engine.decide(slot, user, &Features::new().with("n", 3));
    }
    flush(&queue);
    let expected = lock(&sink.1).clone();
    let got = lock(&out).clone();
    assert_eq!(got.len(), expected.len(), "{:?}", queue.stats());
    for (mut g, e) in got.into_iter().zip(expected) {
        // Coarse clock: at most a few ticks behind the precise one.
        assert!(
            g.timestamp_ms <= e.timestamp_ms + 1 && g.timestamp_ms + 1_000 > e.timestamp_ms,
            "{} vs {}",
            g.timestamp_ms,
            e.timestamp_ms
        );
        g.timestamp_ms = e.timestamp_ms;
        assert_eq!(g, e);
    }
    let bandit = lock(&out)
        .iter()
        .filter(|r| r.probabilities.as_ref().is_some_and(|p| p.len() == 3))
        .filter(|r| r.model_version.is_some())
        .count();
    assert_eq!(
        bandit, 4,
        "bandit records carry probabilities and model version"
    );
    queue.close();
    writer.join().unwrap();
}
