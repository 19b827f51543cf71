//! Hot-swap stress: readers decide while a writer swaps configs every millisecond. Every
//! decision must be exactly what the config version it reports would decide.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use elvon::{Config, Engine, Features};
use serde_json::json;

/// Two configs that disagree on everything observable: variants, weights, salts, targeting.
fn configs() -> [(String, Config); 2] {
    let a = json!({"version": "A", "slots": [
        {"id": "s", "variants": [{"id": "a1", "payload": "A"}, {"id": "a2", "payload": "A"}], "default": "a1",
         "rules": [{"when": {"feature": "country", "op": "eq", "value": "KR"}, "serve": "a2"},
                   {"split": {"salt": "A", "variants": [{"variant": "a1", "weight": 30}, {"variant": "a2", "weight": 70}]}}]},
        {"id": "t", "variants": [{"id": "ta"}], "default": "ta"}]});
    let b = json!({"version": "B", "slots": [
        {"id": "s", "variants": [{"id": "b1", "payload": "B"}, {"id": "b2", "payload": "B"}, {"id": "b3", "payload": "B"}], "default": "b3",
         "rules": [{"when": {"feature": "country", "op": "eq", "value": "US"}, "serve": "b3"},
                   {"split": {"salt": "B", "variants": [{"variant": "b1", "weight": 50}, {"variant": "b2", "weight": 50}]}}]}]});
    [a, b].map(|v| {
        let c: Config = serde_json::from_value(v).expect("config");
        (c.version().expect("version"), c)
    })
}

#[test]
fn decisions_stay_consistent_with_one_version_during_millisecond_swaps() {
    let configs = configs();
    // Reference answers per version from engines that never swap.
    let reference: HashMap<String, Engine> = configs
        .iter()
        .map(|(v, c)| {
            let e = Engine::default();
            e.load_config(c).expect("valid");
            (v.clone(), e)
        })
        .collect();
    let users: Arc<Vec<(String, Features)>> = Arc::new(
        (0..2_000)
            .map(|i| {
                (
                    format!("user-{i}"),
                    Features::new().with("country", ["KR", "US", "DE"][i % 3]),
                )
            })
            .collect(),
    );
    let expected: Arc<HashMap<(String, String, usize), Option<String>>> = Arc::new(
        reference
            .iter()
            .flat_map(|(v, e)| {
                users.iter().enumerate().flat_map(move |(i, (u, f))| {
                    ["s", "t"].map(|slot| {
                        (
                            (v.clone(), slot.to_owned(), i),
                            e.decide(slot, u, f).variant().map(str::to_owned),
                        )
                    })
                })
            })
            .collect(),
    );

    let engine = Engine::default();
    engine.load_config(&configs[0].1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (engine, users, expected, stop, checked) = (
                engine.clone(),
                Arc::clone(&users),
                Arc::clone(&expected),
                Arc::clone(&stop),
                Arc::clone(&checked),
            );
            thread::spawn(move || {
                let mut seen = HashMap::<String, u64>::new();
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    let idx = i % users.len();
                    let (u, f) = &users[idx];
                    for slot in ["s", "t"] {
                        let d = engine.decide(slot, u, f);
                        let version = d.config_version().to_owned();
                        let want = expected
                            .get(&(version.clone(), slot.to_owned(), idx))
                            .unwrap_or_else(|| {
                                panic!("decision reports unknown version {version:?}")
                            });
                        assert_eq!(
                            d.variant().map(str::to_owned),
                            *want,
                            "slot {slot} user {u} version {version}"
                        );
                        if slot == "s" {
                            let p = d.payload().expect("slot s exists in both versions");
                            assert_eq!(&p[..], version.as_bytes(), "payload from another version");
                        }
                        *seen.entry(version).or_default() += 1;
                        checked.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 7;
                }
                seen
            })
        })
        .collect();

    let start = Instant::now();
    let mut swaps = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        let (_, c) = &configs[(swaps % 2) as usize];
        engine.load_config(c).expect("valid");
        swaps += 1;
        thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = HashMap::<String, u64>::new();
    for r in readers {
        for (v, n) in r.join().expect("reader did not panic") {
            *seen.entry(v).or_default() += n;
        }
    }
    let checked = checked.load(Ordering::Relaxed);
    eprintln!("{swaps} swaps, {checked} decisions checked, by version {seen:?}");
    assert!(swaps >= 500, "only {swaps} swaps in 2 s");
    assert!(
        seen.get("A").copied().unwrap_or(0) > 1_000 && seen.get("B").copied().unwrap_or(0) > 1_000,
        "{seen:?}"
    );
}
