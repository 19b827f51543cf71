//! Metrics reach an installed recorder: decisions by slot and reason, fallbacks, swaps,
//! rejections, sink counts.

use elvon::sink::MemorySink;
use elvon::{Engine, Features};

#[path = "common/recorder.rs"]
mod recorder;

use recorder::Rec;

#[test]
fn counters_by_slot_reason_and_config_events() {
    let rec = Rec::default();
    metrics::with_local_recorder(&rec, || {
        let sink = MemorySink::new(1);
        let engine = Engine::builder().sink(sink).build();
        engine
            .load_config_json(include_str!("data/kinds.json"))
            .unwrap();
        assert!(engine.load_config_json(r#"{"version": 2}"#).is_err());
        for i in 0..100 {
            let u = format!("u{i}");
            let _ = engine.decide("split", &u, &Features::new());
            let _ = engine.decide("fallback", &u, &Features::new());
            let _ = engine.decide("killed", &u, &Features::new());
            let _ = engine.decide("nope", &u, &Features::new());
        }
    });
    let holdout = rec.get("elvon_decisions_total{reason=holdout,slot=split}");
    assert_eq!(
        rec.get("elvon_decisions_total{reason=split,slot=split}") + holdout,
        100
    );
    assert_eq!(
        rec.get("elvon_decisions_total{reason=kill_switch,slot=killed}"),
        100
    );
    assert_eq!(
        rec.get("elvon_decisions_total{reason=unknown_slot,slot=<unknown>}"),
        100
    );
    let fb = rec.get("elvon_decisions_total{reason=fallback,slot=fallback}");
    assert!(fb > 90, "{fb}");
    assert_eq!(
        rec.get("elvon_fallbacks_total{cause=feature_missing,slot=fallback}"),
        fb
    );
    assert_eq!(rec.get("elvon_config_swaps_total{}"), 1);
    assert_eq!(rec.get("elvon_config_rejections_total{}"), 1);
    assert_eq!(
        rec.get("elvon_sink_records_total{outcome=offered,sink=memory}"),
        400
    );
    assert_eq!(
        rec.get("elvon_sink_records_total{outcome=written,sink=memory}"),
        1
    );
    assert_eq!(
        rec.get("elvon_sink_records_total{outcome=dropped,sink=memory}"),
        399
    );
}

/// Deciding threads count into cells of their own; after `publish` the recorder's counters
/// hold every decision. 24 threads is more than the 16 shards a thread can own alone (the
/// rest share one), and the second wave's threads take over shards the first wave's gave
/// back.
#[test]
fn counters_are_exact_after_many_threads_decide() {
    const THREADS: u64 = 24;
    const WAVES: u64 = 2;
    const EACH: u64 = 100_000;
    let rec = Rec::default();
    let engine = metrics::with_local_recorder(&rec, || {
        let engine = Engine::default();
        engine
            .load_config_json(include_str!("data/kinds.json"))
            .unwrap();
        engine
    });
    let fallbacks = std::sync::atomic::AtomicU64::new(0);
    for wave in 0..WAVES {
        // All threads of a wave decide at once, so those sharing a shard overlap.
        let start = std::sync::Barrier::new(THREADS as usize);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (engine, fallbacks, start) = (&engine, &fallbacks, &start);
                s.spawn(move || {
                    start.wait();
                    for i in 0..EACH {
                        let u = format!("u{wave}-{t}-{i}");
                        let _ = engine.decide("killed", &u, &Features::new());
                        let _ = engine.decide("nope", &u, &Features::new());
                        let d = engine.decide("fallback", &u, &Features::new());
                        if d.reason().kind() == elvon::ReasonKind::Fallback {
                            fallbacks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
    }
    let all = THREADS * WAVES * EACH;
    elvon::metrics::publish();
    let read = || {
        (
            rec.get("elvon_decisions_total{reason=kill_switch,slot=killed}"),
            rec.get("elvon_decisions_total{reason=unknown_slot,slot=<unknown>}"),
            rec.get("elvon_decisions_total{reason=fallback,slot=fallback}"),
            rec.get("elvon_fallbacks_total{cause=feature_missing,slot=fallback}"),
        )
    };
    let fb = fallbacks.into_inner();
    assert!(fb > all / 2, "{fb}");
    assert_eq!(read(), (all, all, fb, fb));
    // Publishing again, and freeing the snapshot (which publishes once more), adds nothing.
    elvon::metrics::publish();
    drop(engine);
    assert_eq!(read(), (all, all, fb, fb));
}

/// Counts a config made are published when a swap replaces it, without a call to `publish`
/// (the periodic publish waits a second): kept for rollback (the default) or freed.
#[test]
fn counts_of_a_swapped_out_config_are_published() {
    for keep in [elvon::DEFAULT_KEEP_PREVIOUS, 0] {
        swapped_out_counts_are_published(Engine::builder().keep_previous(keep).build());
    }
}

fn swapped_out_counts_are_published(engine: Engine) {
    let rec = Rec::default();
    metrics::with_local_recorder(&rec, || {
        engine
            .load_config_json(include_str!("data/kinds.json"))
            .unwrap();
    });
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..1_000 {
                let _ = engine.decide("killed", &format!("u{i}"), &Features::new());
            }
        });
    });
    let first = "elvon_decisions_total{reason=kill_switch,slot=killed}";
    engine
        .load_config_json(r#"{"version": "2", "slots": []}"#)
        .unwrap();
    assert_eq!(rec.get(first), 1_000);
}

#[test]
fn fetch_latency_is_recorded_only_for_real_fetches() {
    let rec = Rec::default();
    metrics::with_local_recorder(&rec, || {
        let store = elvon::features::MemoryStore::new();
        store.set("u", Features::new().with("plan", "vip"));
        let engine = Engine::builder().source(store).build();
        engine
            .load_config_json(include_str!("data/kinds.json"))
            .unwrap();
        for _ in 0..5 {
            // `split` reads no features: nothing to fetch, nothing to time.
            let _ = engine.decide_for("split", "u");
        }
        assert_eq!(rec.samples("elvon_feature_fetch_seconds{outcome=ok}"), 0);
        let d = engine.decide_for("serve", "u");
        assert_eq!(d.variant(), Some("vip"));
        assert_eq!(rec.samples("elvon_feature_fetch_seconds{outcome=ok}"), 1);
    });
}

#[test]
fn rewards_and_model_refreshes_are_counted() {
    let rec = Rec::default();
    let (bandit_decisions, refreshes) = metrics::with_local_recorder(&rec, || {
        let engine = Engine::default();
        engine
            .load_config_json(include_str!("data/kinds.json"))
            .unwrap();
        let mut n = 0;
        for i in 0..50 {
            let d = engine.decide("bandit", &format!("u{i}"), &Features::new());
            if d.model_version().is_some() {
                n += 1;
                engine.reward(d.id(), 1.0);
                engine.reward(d.id(), 1.0); // a second time: unknown
            }
        }
        engine.reward_variant("bandit", "nope", 1.0);
        engine.reward_variant("bandit", "a", f64::INFINITY);
        (n, engine.reward_stats().refreshes)
    });
    // The 1% global holdout may take a few users away from the bandit.
    assert!(bandit_decisions > 40, "{bandit_decisions}");
    assert_eq!(
        rec.get("elvon_rewards_total{outcome=applied}"),
        bandit_decisions
    );
    assert_eq!(
        rec.get("elvon_rewards_total{outcome=unknown}"),
        bandit_decisions
    );
    assert_eq!(rec.get("elvon_rewards_total{outcome=rejected}"), 2);
    assert_eq!(rec.get("elvon_model_refreshes_total{}"), refreshes);
    assert!(refreshes >= 1);
    assert_eq!(
        rec.get("elvon_decisions_total{reason=bandit,slot=bandit}"),
        bandit_decisions
    );
}
