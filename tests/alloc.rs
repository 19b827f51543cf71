//! `decide` performs zero heap allocations with the no-op sink, for every rule kind.
//! This test binary installs a counting global allocator; it has one test so nothing else
//! allocates concurrently while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use elvon::{Engine, Features};

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

const SLOTS: [&str; 11] = [
    "serve",
    "split",
    "split_by_device",
    "split_by_int",
    "rollout",
    "score",
    "targeting",
    "layered",
    "killed",
    "fallback",
    "no-such-slot",
];

fn users() -> Vec<(String, Features)> {
    (0..100_000)
        .map(|i: i64| {
            let f = Features::new()
                .with("country", ["KR", "JP", "US", "DE"][(i % 4) as usize])
                .with("plan", ["free", "pro", "vip"][(i % 3) as usize])
                .with("app_version", ["3.1.0", "3.2.0", "4.0.1"][(i % 3) as usize])
                .with("age", 18 + i % 50)
                .with(
                    "email",
                    if i % 2 == 0 {
                        "ann.lee@example.com"
                    } else {
                        "bob@elsewhere.org"
                    },
                )
                .with("signup", "2024-05-01T12:00:00Z")
                .with("tags", vec!["beta", "early"])
                .with("score", (i % 10) as f64 / 10.0)
                .with("vip", i % 7 == 0)
                .with("device_id", format!("dev-{i}"))
                .with("account", i * 7)
                .with("page_view_7d", i % 20)
                .with("purchase_7d", i % 4)
                .with("cart_abandon_7d", i % 5);
            (format!("user-{i}"), f)
        })
        .collect()
}

#[test]
fn decide_allocates_nothing_for_any_rule_kind() {
    let engine = Engine::default();
    engine
        .load_config_json(include_str!("data/kinds.json"))
        .expect("valid config");
    let users = users();
    // Warm up: per-thread caches (regex scratch space, decision-id block, arc-swap slots).
    for (u, f) in users.iter().take(1_000) {
        for s in SLOTS {
            std::hint::black_box(engine.decide(s, u, f));
        }
    }
    let mut reasons: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut per_slot = Vec::new();
    for slot in SLOTS {
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
            *reasons.entry(KINDS[i]).or_default() += n;
        }
    }
    // Every reason kind must actually have been exercised, or the test proves less than it says.
    for k in KINDS {
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

const KINDS: [&str; 10] = [
    "rule",
    "split",
    "rollout",
    "score",
    "holdout",
    "not_in_layer",
    "default",
    "kill_switch",
    "unknown_slot",
    "fallback",
];

fn kind_index(k: &str) -> usize {
    KINDS.iter().position(|x| *x == k).expect("known kind")
}
