//! Quickstart: load a realistic config, simulate 100 000 users with features in the memory
//! store, print the variant distribution per slot and the decide latency, and write the
//! decision log to a JSON-lines file. Needs no services.
//!
//! ```text
//! cargo run --release --example quickstart [-- path/to/decisions.jsonl]
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use elvon::features::MemoryStore;
use elvon::sink::JsonlSink;
use elvon::sink::{JsonlOptions, Overflow};
use elvon::{Engine, Features};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const USERS: usize = 100_000;
const COUNTRIES: [&str; 6] = ["KR", "JP", "TW", "US", "DE", "BR"];
const PLANS: [&str; 3] = ["free", "pro", "vip"];
const VERSIONS: [&str; 4] = ["3.1.9", "3.2.0", "3.4.1", "4.0.0"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let log_path = std::env::args().nth(1).unwrap_or_else(|| {
        std::env::temp_dir()
            .join("elvon-quickstart.jsonl")
            .display()
            .to_string()
    });
    let _ = std::fs::remove_file(&log_path);

    // 1. Features live in a store; here the in-memory one.
    let store = MemoryStore::new();
    // Simulated users: a seeded generator, so every run sees the same population.
    let mut rng = StdRng::seed_from_u64(2026);
    for i in 0..USERS {
        let plan = if rng.random_range(0..50) == 0 {
            PLANS[2]
        } else {
            PLANS[rng.random_range(0..2)]
        };
        let mut f = Features::new()
            .with("country", COUNTRIES[rng.random_range(0..COUNTRIES.len())])
            .with("plan", plan)
            .with("app_version", VERSIONS[rng.random_range(0..VERSIONS.len())])
            .with("page_view_7d", rng.random_range(0..20i64))
            .with("purchase_7d", rng.random_range(0..4i64))
            .with("cart_abandon_7d", rng.random_range(0..5i64));
        if rng.random_range(0..10) == 0 {
            f.insert("email", format!("user{i}@example.com"));
        }
        store.set(&format!("user-{i}"), f);
    }

    // 2. An engine with the store as feature source and a JSON-lines decision log.
    // The log blocks (up to a second) instead of dropping when a burst fills its queue: this
    // example must keep every record. A request path would keep the default, Overflow::Drop.
    let sink = JsonlSink::create(
        &log_path,
        JsonlOptions::default().overflow(Overflow::Block(Duration::from_secs(1))),
    )?;
    let engine = Engine::builder()
        .source(store.clone())
        .sink(sink.clone())
        .build();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.json");
    let loaded = engine.load_config_file(config)?;
    println!(
        "loaded config version {} ({} warnings)",
        loaded.version,
        loaded.warnings.len()
    );
    if cfg!(debug_assertions) {
        println!("note: debug build; latencies below are not representative (use --release)");
    }

    // 3. Decide every user in every slot; time each call.
    let users: Vec<String> = (0..USERS).map(|i| format!("user-{i}")).collect();
    // decide() alone, with features already in hand, into a no-op sink.
    let quiet = Engine::default();
    quiet.load_config_file(config)?;
    let prepared: Vec<Features> = users
        .iter()
        .map(|u| store.get(u).unwrap_or_default())
        .collect();
    for slot in ["banner", "ranking"] {
        let mut variants: BTreeMap<String, usize> = BTreeMap::new();
        let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut fetch_and_decide = Vec::with_capacity(USERS);
        let mut decide_only = Vec::with_capacity(USERS);
        for user in &users {
            let t = Instant::now();
            let d = engine.decide_for(slot, user);
            fetch_and_decide.push(t.elapsed());
            *variants
                .entry(d.variant().unwrap_or("<none>").to_owned())
                .or_default() += 1;
            *reasons.entry(d.reason().kind().as_str()).or_default() += 1;
        }
        for (user, f) in users.iter().zip(&prepared) {
            let t = Instant::now();
            let d = quiet.decide(slot, user, f);
            decide_only.push(t.elapsed());
            std::hint::black_box(d);
        }
        println!("\nslot {slot:?}: {USERS} users");
        for (v, n) in &variants {
            println!(
                "  {v:<14} {n:>7}  {:>5.1}%",
                *n as f64 * 100.0 / USERS as f64
            );
        }
        let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r}={n}")).collect();
        println!("  reasons: {}", reasons.join(", "));
        println!(
            "  decide (no-op sink):            {}",
            percentiles(&mut decide_only)
        );
        println!(
            "  decide_for (memory store, JSONL log): {}",
            percentiles(&mut fetch_and_decide)
        );
    }

    // 4. Flush the log and show its accounting.
    sink.flush(Duration::from_secs(10))?;
    let s = sink.stats();
    println!(
        "\ndecision log {log_path}: offered {} written {} dropped {} failed {}",
        s.offered, s.written, s.dropped, s.failed
    );
    assert_eq!(
        s.offered,
        s.written + s.dropped + s.failed,
        "sink accounting must add up"
    );
    assert_eq!(
        (s.dropped, s.failed),
        (0, 0),
        "the blocking log keeps every record"
    );
    // Explain the first user who landed in the 3-way split.
    let user = users
        .iter()
        .find(|u| {
            matches!(
                engine
                    .explain("banner", u, &store.get(u).unwrap_or_default())
                    .decision
                    .reason(),
                elvon::Reason::Split { .. }
            )
        })
        .ok_or("no user in the split")?;
    let explained = engine.explain("banner", user, &store.get(user).unwrap_or_default());
    println!("\nexplain(banner, {user}):");
    for step in &explained.steps {
        println!("  {step}");
    }
    Ok(())
}

fn percentiles(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize].as_nanos();
    format!(
        "p50 {} ns, p99 {} ns, p99.9 {} ns",
        p(0.50),
        p(0.99),
        p(0.999)
    )
}
