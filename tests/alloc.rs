//! `decide` performs zero heap allocations with the no-op sink, for every rule kind.
//! This test binary installs a counting global allocator; it has one test so nothing else
//! allocates concurrently while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{kinds_users, KINDS_CONFIG, KIND_SLOTS, REASON_KINDS};
use elvon::Engine;

mod common;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decide_allocates_nothing_for_any_rule_kind() {
    let engine = Engine::default();
    engine.load_config_json(KINDS_CONFIG).expect("valid config");
    let users = kinds_users(100_000);
    // Warm up: per-thread caches (regex scratch space, decision-id block, arc-swap slots).
    for (u, f) in users.iter().take(1_000) {
        for s in KIND_SLOTS {
            std::hint::black_box(engine.decide(s, u, f));
        }
    }
    let mut reasons: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut per_slot = Vec::new();
    for slot in KIND_SLOTS {
        ALLOCS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        let mut kinds = [0u64; 10];
        for (u, f) in &users {
            let d = engine.decide(slot, u, f);
            kinds[kind_index(d.reason().kind())] += 1;
            std::hint::black_box(d.variant());
        }
        COUNTING.store(false, Ordering::SeqCst);
        per_slot.push((slot, ALLOCS.load(Ordering::SeqCst)));
        for (i, n) in kinds.iter().enumerate() {
            *reasons.entry(REASON_KINDS[i]).or_default() += n;
        }
    }
    // Every reason kind must actually have been exercised, or the test proves less than it says.
    for k in REASON_KINDS {
        assert!(
            reasons.get(k).copied().unwrap_or(0) > 0,
            "reason {k} never produced: {reasons:?}"
        );
    }
    let total: u64 = per_slot.iter().map(|(_, n)| n).sum();
    assert_eq!(
        total,
        0,
        "allocations per slot over {} decisions each: {per_slot:?}",
        users.len()
    );
}

fn kind_index(k: &str) -> usize {
    REASON_KINDS
        .iter()
        .position(|x| *x == k)
        .expect("known kind")
}
