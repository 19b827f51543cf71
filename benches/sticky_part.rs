//! What a sticky slot costs (a module of the latency harness): W1 on an engine without a
//! store against W1 with its slot `sticky` on an engine with a `MemoryAssignments` store
//! holding every user's assignment (so each timed call reads the store, and the users the
//! split reaches are served their stored assignment), in alternating blocks.

use elvon::sticky::MemoryAssignments;
use elvon::Engine;
use serde::Serialize;

/// The sticky figures.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct StickyFigures {
    /// Alternating blocks measured.
    pub(crate) blocks: usize,
    /// W1 batch ns per decide, 1 thread, plain and sticky (medians over blocks).
    pub(crate) plain_batch_ns: f64,
    pub(crate) sticky_batch_ns: f64,
    /// Median over blocks of sticky / plain, and its range.
    pub(crate) ratio: f64,
    pub(crate) ratio_min: f64,
    pub(crate) ratio_max: f64,
    /// Assignments the store held when timing started.
    pub(crate) stored: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `measure(engine)` returns the batch ns per decide of W1 on `engine`; `config` is W1's.
pub(crate) fn run(
    runs: usize,
    users: usize,
    measure: impl Fn(&Engine) -> f64,
    config: &str,
) -> StickyFigures {
    let plain = Engine::default();
    plain.load_config_json(config).expect("W1 config is valid");
    let mut sticky_config: serde_json::Value =
        serde_json::from_str(config).expect("W1 config is JSON");
    sticky_config["slots"][0]["sticky"] = serde_json::json!({});
    let store = std::sync::Arc::new(MemoryAssignments::new(users * 2));
    let sticky = Engine::builder()
        .assignments(std::sync::Arc::clone(&store))
        .assignment_queue(users)
        .build();
    sticky
        .load_config_json(&sticky_config.to_string())
        .expect("sticky W1 config is valid");
    // The first pass assigns; timing starts once the assignments are stored.
    measure(&sticky);
    sticky
        .flush_assignments(std::time::Duration::from_secs(60))
        .expect("assignments written");
    let blocks = (runs.max(5) * 2 + 1).min(11);
    let (mut p, mut s, mut ratio) = (vec![], vec![], vec![]);
    for _ in 0..blocks {
        let a = measure(&plain);
        let b = measure(&sticky);
        p.push(a);
        s.push(b);
        ratio.push(b / a);
    }
    let min = ratio.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratio.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    StickyFigures {
        blocks,
        plain_batch_ns: median(p),
        sticky_batch_ns: median(s),
        ratio: median(ratio),
        ratio_min: min,
        ratio_max: max,
        stored: store.len(),
    }
}
