//! The pending-reward store alone: a ring model, contexts and expiry, racing threads.

use super::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;

fn pending(arm: u32, expires_ms: u64) -> Pending {
    Pending {
        learner: 7,
        arm,
        gen: 3,
        expires_ms,
        dim: 0,
        has_default: true,
        evicted: false,
    }
}

fn id(store: &Store, n: u64) -> u128 {
    u128::from(store.prefix) << 64 | u128::from(n | BANDIT_SEQ)
}

fn seq(id: u128) -> u64 {
    id as u64 & !BANDIT_SEQ
}

/// One thread: the table is a ring of the last `cap` decisions, against a map model, with
/// random takes of remembered, taken and never-seen ids; what it overwrites while pending
/// is counted and goes to the due ring.
#[test]
fn the_table_is_a_ring_of_the_last_decisions() {
    let store = Store::new(64, 5);
    let mut model: HashMap<u64, u32> = HashMap::new();
    let mut rng: StdRng = SeedableRng::seed_from_u64(0x9e37_79b9);
    let mut rand = || rng.random::<u64>();
    let mut due = Vec::new();
    let (engine, mut evicted) = (crate::decision::engine_serial(), 0);
    for n in 0..20_000u64 {
        if model.remove(&n.wrapping_sub(64)).is_some() {
            evicted += 1;
        }
        let i = store.next_id(engine);
        assert_eq!(
            (seq(i), i >> 64),
            (n, 5),
            "one thread numbers consecutively"
        );
        store.remember(i, &pending(n as u32, u64::MAX), &[], 0);
        model.insert(n, n as u32);
        if rand() % 3 == 0 {
            let probe = n.saturating_sub(rand() % 100);
            let got = store.take(id(&store, probe)).map(|t| t.p.arm);
            assert_eq!(got, model.remove(&probe), "step {n}, probe {probe}");
        }
        if n % 1_000 == 0 {
            store.drain_due(&mut due);
        }
    }
    store.drain_due(&mut due);
    assert_eq!(store.evicted(), evicted);
    assert!(evicted > 10_000, "{evicted}");
    assert!(due.iter().all(|t| t.p.evicted && t.p.learner == 7));
    assert_eq!(
        due.len() as u64,
        evicted,
        "each eviction reached the due ring once"
    );
    // Another engine's id, and a non-bandit id of this one, are unknown.
    assert!(store
        .take(u128::from(6u64) << 64 | u128::from(BANDIT_SEQ | 19_999))
        .is_none());
    assert!(store.take(u128::from(5u64) << 64 | 19_999).is_none());
    for (n, arm) in model {
        assert_eq!(store.take(id(&store, n)).map(|t| t.p.arm), Some(arm));
    }
}

/// Contexts travel with their decision, and a sweep takes exactly the expired ones.
#[test]
fn contexts_and_expiry() {
    let store = Store::new(16, 1);
    let engine = crate::decision::engine_serial();
    for n in 0..10u64 {
        let p = Pending {
            dim: 3,
            ..pending(n as u32, 100 + n)
        };
        store.remember(store.next_id(engine), &p, &[n as f64, 0.5, -1.0], 0);
    }
    let mut out = Vec::new();
    store.sweep(104, 16, &mut out);
    let mut arms: Vec<u32> = out.iter().map(|t| t.p.arm).collect();
    arms.sort_unstable();
    assert_eq!(arms, [0, 1, 2, 3]);
    assert!(out.iter().all(|t| t.x() == [f64::from(t.p.arm), 0.5, -1.0]));
    let t = store.take(id(&store, 9)).expect("pending");
    assert_eq!(t.x(), [9.0, 0.5, -1.0]);
    out.clear();
    store.sweep_all(u64::MAX - 1, &mut out);
    assert_eq!(out.len(), 5, "4..=8 left");
}

/// Writers and claimers race on a small table: every decision ends exactly once, as a
/// successful take, an eviction found in the due ring, an overflow of the due ring, or
/// still pending at the end; no take returns another decision's payload.
#[test]
fn racing_writers_and_takers_account_for_every_decision() {
    let store = Arc::new(Store::new(256, 2));
    let threads = 4u64;
    let per = 50_000u64;
    let taken = Arc::new(AtomicU64::new(0));
    let drained = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (store, taken, drained) = (&store, &taken, &drained);
            s.spawn(move || {
                let (mut due, engine) = (Vec::new(), crate::decision::engine_serial());
                for k in 0..per {
                    let i = store.next_id(engine);
                    let n = seq(i);
                    // The payload is a function of the number, to detect a torn copy.
                    let p = Pending {
                        learner: n as u32,
                        arm: (n >> 32) as u32 ^ 0xa5a5,
                        gen: !(n as u32),
                        expires_ms: u64::MAX - 1,
                        dim: 2,
                        has_default: true,
                        evicted: false,
                    };
                    store.remember(i, &p, &[n as f64, -(n as f64)], 0);
                    // Take an id of this or another thread, near the frontier.
                    let probe = n.saturating_sub(k % 200);
                    if let Some(got) = store.take(id(store, probe)) {
                        assert_eq!(got.p.learner, probe as u32);
                        assert_eq!(got.p.gen, !(probe as u32));
                        assert_eq!(got.p.arm, (probe >> 32) as u32 ^ 0xa5a5);
                        assert_eq!(got.x(), [probe as f64, -(probe as f64)]);
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                    if k % 64 == 0 {
                        store.drain_due(&mut due);
                        for t in due.drain(..) {
                            assert_eq!(t.p.gen, !t.p.learner);
                            assert_eq!(t.x(), [f64::from(t.p.learner), -f64::from(t.p.learner)]);
                            drained.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let mut rest = Vec::new();
    store.drain_due(&mut rest);
    let drained = drained.load(Ordering::Relaxed) + rest.len() as u64;
    let mut left = Vec::new();
    store.sweep(u64::MAX, 256, &mut left);
    let pending = left.len() as u64;
    let (taken, evicted) = (taken.load(Ordering::Relaxed), store.evicted());
    assert!(
        taken > 0 && evicted > 0,
        "the test raced: {taken} taken, {evicted} evicted"
    );
    // Each decision was taken, evicted, or is still in the table.
    assert_eq!(
        taken + evicted + pending,
        threads * per,
        "{taken} + {evicted} + {pending}"
    );
    // Evicted ones reached the due ring unless it was full (then only counted).
    assert!(drained <= evicted, "{drained} > {evicted}");
    assert_eq!(store.expired(), 0, "no expired decisions here");
}
