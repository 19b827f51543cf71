//! Decisions from Redis-backed features: writes behaviour events for a few thousand users
//! through the aggregates writer, then serves `decide_for` from Redis and prints the variant
//! distribution and latency percentiles.
//!
//! ```sh
//! redis-server --port 6379 --save '' &      # Debian: apt-get install redis-server
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --release --features redis --example redis_features
//! ```
//!
//! It writes under the key prefix `elvon:example:` and deletes nothing else.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use elvon::features::aggregate::{Aggregate, Aggregates, Event};
use elvon::redis::RedisFeatureSource;
use elvon::{Engine, FeatureStatus, Features};

const USERS: usize = 5_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let aggregates = Aggregates::new(vec![
        Aggregate::count("page_view_7d", "page_view").window(Duration::from_secs(86_400), 7),
        Aggregate::sum("spend_30d", "purchase", "amount").window(Duration::from_secs(86_400), 30),
        Aggregate::last("last_category", "page_view", "category"),
    ])?;
    let source = RedisFeatureSource::builder(&url)
        .key_prefix("elvon:example:")
        .aggregates(aggregates)
        .build()?;

    // Behaviour: user i viewed i % 15 pages and every 9th user bought something.
    let now = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let mut events = Vec::new();
    for u in 0..USERS {
        let user = format!("user-{u}");
        for i in 0..u % 15 {
            let category = ["shoes", "books", "games"][(u + i) % 3];
            events.push(
                Event::new(format!("view-{u}-{i}"), &user, "page_view", now - 60_000)
                    .with("category", category),
            );
        }
        if u % 9 == 0 {
            events.push(
                Event::new(format!("buy-{u}"), &user, "purchase", now - 60_000)
                    .with("amount", (u % 250) as f64),
            );
        }
        let country = ["KR", "JP", "US", "DE"][u % 4];
        source.set_features(&user, &Features::new().with("country", country))?;
    }
    let t = Instant::now();
    let writer = source
        .writer()
        .key_ttl(Some(Duration::from_secs(31 * 86_400)));
    let report = writer.apply(&events)?;
    let again = writer.apply(&events)?; // a redelivery: every event is a duplicate
    println!(
        "wrote {} events in {:?}; redelivered: {} applied, {} duplicates",
        report.applied,
        t.elapsed(),
        again.applied,
        again.duplicates
    );

    let engine = Engine::builder()
        .source(source)
        .fetch_deadline(Duration::from_millis(5))
        .build();
    engine.load_config_json(
        r#"{"version": "example", "slots": [{
            "id": "banner",
            "variants": [{"id": "default"}, {"id": "big-spender"}, {"id": "engaged"}, {"id": "korea"}],
            "default": "default",
            "rules": [
                {"when": {"feature": "spend_30d", "op": "ge", "value": 100}, "serve": "big-spender"},
                {"when": {"feature": "page_view_7d", "op": "ge", "value": 10}, "serve": "engaged"},
                {"when": {"feature": "country", "op": "eq", "value": "KR"}, "serve": "korea"}
            ]}]}"#,
    )?;

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut times = Vec::with_capacity(USERS);
    for u in 0..USERS {
        let user = format!("user-{u}");
        let t = Instant::now();
        let d = engine.decide_for("banner", &user);
        times.push(t.elapsed());
        *counts
            .entry(d.variant().unwrap_or("-").to_owned())
            .or_default() += 1;
        let status = match d.feature_status() {
            FeatureStatus::Fetched => "fetched",
            FeatureStatus::TimedOut => "timed out",
            FeatureStatus::Unavailable => "breaker open",
            _ => "failed",
        };
        *statuses.entry(status.to_owned()).or_default() += 1;
    }
    times.sort();
    println!("\nvariants over {USERS} users:");
    for (v, n) in &counts {
        println!(
            "  {v:<12} {n:>5}  {:>5.1}%",
            100.0 * *n as f64 / USERS as f64
        );
    }
    println!("feature fetches: {statuses:?}");
    let pct = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "decide_for latency (closed loop, one thread): p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        times[times.len() - 1]
    );
    Ok(())
}
