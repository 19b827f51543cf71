//! The p99 latency harness: `cargo bench --bench latency`.
//!
//! For each reference workload (see `benches/workloads/mod.rs`), on 1 and 2 threads, with and
//! without a config swap every millisecond, with the no-op and the JSON-lines sink: per-call
//! latency (an `Instant` around each call, into an HDR histogram), throughput from untimed
//! batches, and heap allocations per decide (a counting global allocator). Every scenario runs
//! `ELVON_BENCH_RUNS` times (default 5) and each figure is the median over runs
//! (`ELVON_BENCH_WORKLOADS=W1,W2` runs only those workloads, for development). Prints one
//! table, writes `target/elvon-latency.json`, then checks `benches/budget.toml` and exits
//! non-zero naming every budget exceeded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use elvon::sink::JsonlSink;
use elvon::{Engine, Features};
use hdrhistogram::Histogram;
use serde::Serialize;

#[path = "workloads/mod.rs"]
mod workloads;

use workloads::Workload;

mod budget_part;
#[cfg(feature = "kafka")]
mod kafka_part;
mod recorder_part;
mod shadow_part;
mod sticky_part;

use budget_part::Budget;
#[cfg(feature = "redis")]
mod redis_part;

#[path = "../tests/common/counting.rs"]
mod counting;

use counting::{allocs, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
enum Sink {
    Noop,
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct Scenario {
    threads: usize,
    swap: bool,
    sink: Sink,
}

/// One run's (or the median of runs') figures.
#[derive(Debug, Clone, Default, Serialize)]
struct Figures {
    ops_per_s: f64,
    batch_ns: f64,
    mean_ns: f64,
    p50_ns: f64,
    p99_ns: f64,
    p999_ns: f64,
    max_ns: f64,
    allocs_per_decide: f64,
}

#[derive(Serialize)]
struct Row {
    workload: &'static str,
    scenario: Scenario,
    figures: Figures,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    runs: usize,
    timer_overhead_ns: f64,
    rows: Vec<Row>,
    scaling: BTreeMap<&'static str, f64>,
    memory_growth_mib: f64,
    memory_users: u64,
    /// Resident bytes per user of a `MemoryStore` of `STORE_USERS` users x 10 features.
    store_bytes_per_user: f64,
    /// Slots of the config timed loading, and the median time of one load (ms).
    config_slots: usize,
    config_load_ms: f64,
    /// W1 with a Prometheus recorder installed.
    recorder: recorder_part::RecorderFigures,
    /// W2 with a shadow evaluation running, unsampled calls.
    shadow: shadow_part::ShadowFigures,
    /// W1 with its slot sticky, every user's assignment stored in memory.
    sticky: sticky_part::StickyFigures,
    /// `decide_for` with Redis features (only with `--features redis`).
    #[cfg(feature = "redis")]
    redis: redis_part::RedisFigures,
    /// The Kafka decision-log sink (only with `--features kafka`).
    #[cfg(feature = "kafka")]
    kafka: kafka_part::KafkaFigures,
}

fn main() {
    // `cargo bench` passes `--bench`; filters are not supported, everything runs.
    let runs: usize = std::env::var("ELVON_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let budget = Budget::load();
    // First, while the heap holds nothing freed that the store could reuse unseen.
    let store_bytes_per_user = store_bytes_per_user(STORE_USERS);
    let overhead = timer_overhead();
    println!("elvon latency harness: {runs} run(s) per scenario, figures are medians over runs");
    println!("timer overhead (Instant::now + elapsed, median): {overhead:.1} ns, included in per-call figures\n");
    let mut rows = Vec::new();
    let scenarios: Vec<Scenario> = [1, 2]
        .into_iter()
        .flat_map(|threads| [false, true].into_iter().map(move |swap| (threads, swap)))
        .flat_map(|(threads, swap)| {
            [Sink::Noop, Sink::Jsonl]
                .into_iter()
                .map(move |sink| Scenario {
                    threads,
                    swap,
                    sink,
                })
        })
        .collect();
    println!(
        "{:<4} {:>3} {:>5} {:<5} {:>12} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>7}",
        "load",
        "thr",
        "swap",
        "sink",
        "ops/s",
        "batch",
        "mean",
        "p50",
        "p99",
        "p99.9",
        "max",
        "allocs"
    );
    // `ELVON_BENCH_WORKLOADS=W1,W2` runs those only (for development: the budget check then
    // reports the others as missing and the run exits 1).
    let only = std::env::var("ELVON_BENCH_WORKLOADS").ok();
    let mut loads = workloads::all();
    if let Some(only) = &only {
        loads.retain(|w| only.split(',').any(|o| o.trim() == w.name));
    }
    for w in &loads {
        for s in &scenarios {
            let all: Vec<Figures> = (0..runs).map(|_| run(w, *s)).collect();
            let f = median_figures(&all);
            println!(
                "{:<4} {:>3} {:>5} {:<5} {:>12.0} {:>6.1}ns {:>6.1}ns {:>6.0}ns {:>6.0}ns {:>7.0}ns {:>7.0}ns {:>7.3}",
                w.name,
                s.threads,
                if s.swap { "1ms" } else { "-" },
                format!("{:?}", s.sink).to_lowercase(),
                f.ops_per_s,
                f.batch_ns,
                f.mean_ns,
                f.p50_ns,
                f.p99_ns,
                f.p999_ns,
                f.max_ns,
                f.allocs_per_decide
            );
            rows.push(Row {
                workload: w.name,
                scenario: *s,
                figures: f,
            });
        }
    }
    let mut scaling = BTreeMap::new();
    for w in ["W1", "W2", "W3", "W4", "W5"] {
        let ops = |threads| {
            rows.iter()
                .find(|r| {
                    r.workload == w
                        && r.scenario
                            == Scenario {
                                threads,
                                swap: false,
                                sink: Sink::Noop,
                            }
                })
                .map_or(0.0, |r| r.figures.ops_per_s)
        };
        scaling.insert(w, ops(2) / ops(1));
    }
    println!(
        "\nscaling, 2 threads / 1 thread (no-op sink, no swap): {}",
        fmt_map(&scaling)
    );
    println!("memory: a MemoryStore of {STORE_USERS} users x 10 features (5 numbers, 5 short strings; names and values owned, as decoded from events or Redis) took {store_bytes_per_user:.0} resident bytes per user (measured first, on a fresh heap)");
    let config_load_ms = config_load_ms(CONFIG_SLOTS);
    println!("config: validate + compile + swap of a {CONFIG_SLOTS}-slot config (`workloads::many_slots`, as in `benches/config.rs`): median {config_load_ms:.1} ms over 7 loads");
    let (memory_users, memory_growth_mib) = memory_growth(budget.memory_users);
    println!("memory: deciding for {memory_users} distinct users grew resident memory by {memory_growth_mib:.2} MiB");
    #[cfg(feature = "redis")]
    let redis = {
        let seconds = std::env::var("ELVON_REDIS_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        let r = redis_part::run(seconds);
        println!(
            "redis: decide_for at {}/s, cache off, {} calls ({} fetched): p50 {:.0}ns p99 {:.0}ns p99.9 {:.0}ns max {:.0}ns",
            r.rate_per_s, r.calls, r.fetched, r.p50_ns, r.p99_ns, r.p999_ns, r.max_ns
        );
        println!(
            "redis: decide_for, every answer a cache hit, {} calls: p50 {:.0}ns p99 {:.0}ns p99.9 {:.0}ns",
            r.cached_calls, r.cached_p50_ns, r.cached_p99_ns, r.cached_p999_ns
        );
        r
    };
    #[cfg(feature = "kafka")]
    let kafka = {
        let k = kafka_part::run();
        println!(
            "kafka: sink delivered {} decisions at {:.0}/s to the mock cluster ({} dropped); W1 decide p99 {:.0}ns with the Kafka sink (p50 {:.0}ns) vs {:.0}ns with none; FeatureUpdater applied {:.0} events/s to memory",
            k.delivered, k.delivered_per_s, k.dropped, k.kafka_p99_ns, k.kafka_p50_ns, k.noop_p99_ns, k.consumer_events_per_s
        );
        println!(
            "kafka: W1 decide p99 timed in alternating blocks of 1,000 calls: {:.0}ns with the Kafka sink vs {:.0}ns with none",
            k.interleaved_kafka_p99_ns, k.interleaved_noop_p99_ns
        );
        println!(
            "kafka: {:.1}% of the sequential runs' calls with the Kafka sink were captured (the rest dropped: their thread's queue was full)",
            100.0 * k.captured_share
        );
        k
    };
    // Workloads the parts below need when ELVON_BENCH_WORKLOADS left them out.
    let mut spare = None;
    let shadow = {
        let w2 = named(&loads, &mut spare, "W2");
        let s = Scenario {
            threads: 1,
            swap: false,
            sink: Sink::Noop,
        };
        let r = shadow_part::run(
            runs,
            |engine| {
                let f = run_on(engine, None, w2, s);
                (f.p99_ns, f.mean_ns)
            },
            &w2.configs[0],
            &w2.configs[1],
        );
        println!(
            "shadow: W2, 1 thread, {} alternating blocks: p99 {:.0}ns with a shadow evaluation at sample rate 0 (every call unsampled) vs {:.0}ns without ({:.2}x, median of per-block ratios; spread {:.2} to {:.2}); mean {:.0}ns with 1% sampled vs {:.0}ns without",
            r.blocks, r.p99_on_ns, r.p99_off_ns, r.p99_ratio, r.p99_ratio_min, r.p99_ratio_max, r.mean_sampled_1pct_ns, r.mean_off_ns
        );
        r
    };
    let sticky = {
        let w1 = named(&loads, &mut spare, "W1");
        let s = Scenario {
            threads: 1,
            swap: false,
            sink: Sink::Noop,
        };
        let r = sticky_part::run(
            runs,
            w1.users.len(),
            |engine| run_on(engine, None, w1, s).batch_ns,
            &w1.configs[0],
        );
        println!(
            "sticky: W1, 1 thread, {} alternating blocks: batch {:.1}ns with the slot sticky ({} assignments in a MemoryAssignments store) vs {:.1}ns without ({:.2}x, median of per-block ratios; spread {:.2} to {:.2})",
            r.blocks, r.sticky_batch_ns, r.stored, r.plain_batch_ns, r.ratio, r.ratio_min, r.ratio_max
        );
        r
    };
    // Last: the recorder is process-global.
    let recorder = {
        let w1 = named(&loads, &mut spare, "W1");
        let r = recorder_part::run(
            runs,
            |engine, threads| {
                let s = Scenario {
                    threads,
                    swap: false,
                    sink: Sink::Noop,
                };
                let f = run_on(engine, None, w1, s);
                // Each thread decides a warm-up quarter, then the timed and the batch pass.
                let n = w1.users.len();
                (f.batch_ns, f.ops_per_s, (threads * (n / 4 + 2 * n)) as u64)
            },
            &w1.configs[0],
        );
        println!(
            "recorder: W1 with a Prometheus recorder installed, {} alternating blocks: batch {:.1}ns vs {:.1}ns for an engine whose counters record nothing (cost {:+.1}ns, median of per-block differences; spread {:+.1} to {:+.1}); {:.0} decisions/s on 1 thread, {:.0} on 2 ({:.2}x, median of per-block ratios; spread {:.2} to {:.2}); counted {} of {} decisions",
            r.blocks, r.batch_ns, r.plain_batch_ns, r.cost_ns, r.cost_min_ns, r.cost_max_ns, r.ops_1, r.ops_2, r.scaling, r.scaling_min, r.scaling_max, r.counted, r.decided
        );
        r
    };
    let report = Report {
        recorder,
        shadow,
        sticky,
        machine: machine(),
        runs,
        timer_overhead_ns: overhead,
        rows,
        scaling,
        memory_growth_mib,
        memory_users,
        store_bytes_per_user,
        config_slots: CONFIG_SLOTS,
        config_load_ms,
        #[cfg(feature = "redis")]
        redis,
        #[cfg(feature = "kafka")]
        kafka,
    };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/elvon-latency.json");
    match serde_json::to_vec_pretty(&report) {
        Ok(json) => match std::fs::write(path, json) {
            Ok(()) => println!("wrote {path}"),
            Err(e) => eprintln!("cannot write {path}: {e}"),
        },
        Err(e) => eprintln!("cannot serialize the report: {e}"),
    }
    let failures = budget.check(&report);
    if failures.is_empty() {
        println!("all budgets met (benches/budget.toml)");
    } else {
        for f in &failures {
            eprintln!("BUDGET EXCEEDED: {f}");
        }
        std::process::exit(1);
    }
}

fn fmt_map(m: &BTreeMap<&str, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.2}x"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One run of one scenario.
fn run(w: &Workload, s: Scenario) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = match s.sink {
        Sink::Noop => None,
        Sink::Jsonl => Some(
            JsonlSink::create(dir.path().join("log.jsonl"), Default::default())
                .expect("jsonl sink"),
        ),
    };
    let engine = match &sink {
        None => Engine::builder().build(),
        Some(k) => Engine::builder().sink(k.clone()).build(),
    };
    engine
        .load_config_json(&w.configs[0])
        .expect("workload config is valid");
    run_on(&engine, sink.as_ref(), w, s)
}

/// One run of one scenario on `engine` (loaded with `w`'s first config, writing to `sink`).
/// Workload `name` from those run, or from `spare` (all of them, built on first use).
fn named<'a>(
    loads: &'a [Workload],
    spare: &'a mut Option<Vec<Workload>>,
    name: &str,
) -> &'a Workload {
    if let Some(w) = loads.iter().find(|w| w.name == name) {
        return w;
    }
    spare
        .get_or_insert_with(workloads::all)
        .iter()
        .find(|w| w.name == name)
        .expect("a reference workload of that name")
}

fn run_on(engine: &Engine, sink: Option<&JsonlSink>, w: &Workload, s: Scenario) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = s.swap.then(|| {
        let (engine, stop, configs) = (engine.clone(), Arc::clone(&stop), w.configs.clone());
        thread::spawn(move || {
            let parsed: Vec<elvon::Config> = configs
                .iter()
                .map(|c| elvon::Config::from_json(c).expect("valid"))
                .collect();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let _ = engine.load_config(&parsed[i % 2]);
                thread::sleep(Duration::from_millis(1));
            }
        })
    });
    let users: &[(String, Features)] = &w.users;
    let n = users.len();
    let barrier = Barrier::new(s.threads);
    let per_thread: Vec<(Histogram<u64>, Duration, u64)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..s.threads)
            .map(|t| {
                let (engine, barrier) = (engine, &barrier);
                scope.spawn(move || {
                    let order = |k: usize| &users[(k + t * n / 2) % n];
                    // Warm-up pass (caches, thread-locals, regex scratch).
                    for k in 0..n / 4 {
                        let (u, f) = order(k);
                        black_box(engine.decide(w.slot, u, f));
                    }
                    let mut h = histogram();
                    barrier.wait();
                    for k in 0..n {
                        let (u, f) = order(k);
                        let t0 = Instant::now();
                        let d = engine.decide(w.slot, u, f);
                        black_box(&d);
                        drop(d);
                        let dt = t0.elapsed().as_nanos() as u64;
                        h.saturating_record(dt.max(1));
                    }
                    barrier.wait();
                    let a0 = allocs();
                    let b0 = Instant::now();
                    for k in 0..n {
                        let (u, f) = order(k);
                        black_box(engine.decide(w.slot, u, f));
                    }
                    let batch = b0.elapsed();
                    let allocs = allocs() - a0;
                    (h, batch, allocs)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = swapper {
        h.join().expect("swapper");
    }
    if let Some(k) = sink {
        let _ = k.flush(Duration::from_secs(30));
    }
    let mut h = histogram();
    let mut batch_total = Duration::ZERO;
    let mut allocs = 0;
    let mut wall = Duration::ZERO;
    for (ph, b, a) in &per_thread {
        h.add(ph).expect("same bounds");
        batch_total += *b;
        wall = wall.max(*b);
        allocs += a;
    }
    // Allocations counted on the deciding threads only.
    let decisions = (n * s.threads) as f64;
    Figures {
        ops_per_s: decisions / wall.as_secs_f64(),
        batch_ns: batch_total.as_nanos() as f64 / decisions,
        mean_ns: h.mean(),
        p50_ns: h.value_at_quantile(0.50) as f64,
        p99_ns: h.value_at_quantile(0.99) as f64,
        p999_ns: h.value_at_quantile(0.999) as f64,
        max_ns: h.max() as f64,
        allocs_per_decide: allocs as f64 / decisions,
    }
}

/// A per-call latency histogram: 1 ns to 100 ms, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 100_000_000, 3).expect("histogram")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_figures(all: &[Figures]) -> Figures {
    let m = |f: fn(&Figures) -> f64| median(all.iter().map(f).collect());
    Figures {
        ops_per_s: m(|f| f.ops_per_s),
        batch_ns: m(|f| f.batch_ns),
        mean_ns: m(|f| f.mean_ns),
        p50_ns: m(|f| f.p50_ns),
        p99_ns: m(|f| f.p99_ns),
        p999_ns: m(|f| f.p999_ns),
        max_ns: m(|f| f.max_ns),
        allocs_per_decide: m(|f| f.allocs_per_decide),
    }
}

/// Median cost of the timing itself.
fn timer_overhead() -> f64 {
    let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).expect("histogram");
    for _ in 0..1_000_000 {
        let t0 = Instant::now();
        let dt = black_box(t0).elapsed().as_nanos() as u64;
        h.saturating_record(dt.max(1));
    }
    h.value_at_quantile(0.5) as f64
}

/// Resident memory growth while deciding for `users` distinct users.
fn memory_growth(users: u64) -> (u64, f64) {
    let w = workloads::w1();
    let engine = Engine::default();
    engine.load_config_json(&w.configs[0]).expect("valid");
    let f = Features::new()
        .with("country", "KR")
        .with("plan", "free")
        .with("age", 30);
    let mut user = String::with_capacity(32);
    // Warm up, then measure.
    for i in 0..10_000u64 {
        user.clear();
        user.push_str("warm-");
        user.push_str(&i.to_string());
        black_box(engine.decide(w.slot, &user, &f));
    }
    let before = rss_bytes();
    for i in 0..users {
        user.clear();
        // Formatting into a String with spare capacity does not allocate.
        let _ = write!(user, "user-{i}");
        black_box(engine.decide(w.slot, &user, &f));
    }
    let after = rss_bytes();
    (
        users,
        after.saturating_sub(before) as f64 / (1024.0 * 1024.0),
    )
}

/// Slots of the config-load figure.
const CONFIG_SLOTS: usize = 10_000;

/// Median wall time of `Engine::load_config` (validate, compile, swap, free the old
/// snapshot) for the `workloads::many_slots` config of `slots` slots, over 7 loads after one.
fn config_load_ms(slots: usize) -> f64 {
    let config = workloads::many_slots(slots);
    let engine = Engine::default();
    engine.load_config(&config).expect("bench config is valid");
    let mut ms: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            engine.load_config(&config).expect("bench config is valid");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

/// Users of the `MemoryStore` memory figure.
const STORE_USERS: u64 = 1_000_000;

/// Resident memory per user of a `MemoryStore` holding `users` users with 10 features each:
/// 5 numbers (integers and floats) and 5 strings of 2 to 8 bytes, every name and value owned
/// (as the Redis codec and the event path produce them).
fn store_bytes_per_user(users: u64) -> f64 {
    const NAMES: [&str; 10] = [
        "country",
        "plan",
        "platform",
        "device",
        "segment",
        "age",
        "sessions_30d",
        "days_since_signup",
        "spend_30d",
        "score",
    ];
    const WORDS: [&str; 8] = [
        "KR", "US", "free", "pro", "ios", "android", "desktop", "tablet",
    ];
    let store = elvon::features::MemoryStore::new();
    let before = rss_bytes();
    for i in 0..users {
        let f: Features = (0..10)
            .map(|k| {
                let name = NAMES[k].to_owned();
                let value = match k {
                    0..=4 => elvon::Value::from(WORDS[(i as usize + k) % 8].to_owned()),
                    5..=7 => elvon::Value::from(((i * 7 + k as u64) % 1000) as i64),
                    _ => elvon::Value::from((i % 997) as f64 / 7.0),
                };
                (name, value)
            })
            .collect();
        store.set(&format!("user-{i}"), f);
    }
    let after = rss_bytes();
    black_box(&store);
    after.saturating_sub(before) as f64 / users as f64
}

fn rss_bytes() -> u64 {
    // Linux: the second field of /proc/self/statm is resident pages.
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}
