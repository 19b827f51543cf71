//! Shadow evaluation's cost to the live decisions it does not sample (a module of the latency
//! harness): W2 on an engine without a shadow evaluation against one shadowing a candidate
//! (W2's config under another version) at sample rate 0, so every timed call is an unsampled
//! one, in alternating blocks of the same scenario. Also one block at rate 0.01, for the cost
//! of sampled calls on the mean.

use elvon::{Config, Engine};
use serde::Serialize;

/// The shadow figures.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ShadowFigures {
    /// Alternating blocks measured.
    pub(crate) blocks: usize,
    /// W2 p99 per call, 1 thread, without and with shadowing (medians over blocks).
    pub(crate) p99_off_ns: f64,
    pub(crate) p99_on_ns: f64,
    /// Median over blocks of p99 with / p99 without, and its range.
    pub(crate) p99_ratio: f64,
    pub(crate) p99_ratio_min: f64,
    pub(crate) p99_ratio_max: f64,
    /// Mean per call with 1% of decisions sampled, and without shadowing (one block each).
    pub(crate) mean_sampled_1pct_ns: f64,
    pub(crate) mean_off_ns: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `measure(engine)` returns (p99 ns, mean ns) of W2 on `engine` (loaded with `live`).
pub(crate) fn run(
    runs: usize,
    measure: impl Fn(&Engine) -> (f64, f64),
    live: &str,
    candidate: &str,
) -> ShadowFigures {
    let off = Engine::default();
    off.load_config_json(live).expect("W2 config is valid");
    let on = Engine::default();
    on.load_config_json(live).expect("W2 config is valid");
    let candidate = Config::from_json(candidate).expect("W2 config is JSON");
    on.shadow(&candidate, 0.0).expect("W2 config is valid");
    let blocks = (runs.max(5) * 2 + 1).min(11);
    let (mut p_off, mut p_on, mut ratio) = (vec![], vec![], vec![]);
    for _ in 0..blocks {
        let (a, _) = measure(&off);
        let (b, _) = measure(&on);
        p_off.push(a);
        p_on.push(b);
        ratio.push(b / a);
    }
    let sampled = on
        .shadow_report()
        .map_or(0, |r| r.slots.iter().map(|s| s.sampled).sum());
    assert_eq!(sampled, 0, "rate 0 samples nothing");
    on.shadow(&candidate, 0.01).expect("W2 config is valid");
    let (_, mean_sampled) = measure(&on);
    let (_, mean_off) = measure(&off);
    let min = ratio.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratio.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    ShadowFigures {
        blocks,
        p99_off_ns: median(p_off),
        p99_on_ns: median(p_on),
        p99_ratio: median(ratio),
        p99_ratio_min: min,
        p99_ratio_max: max,
        mean_sampled_1pct_ns: mean_sampled,
        mean_off_ns: mean_off,
    }
}
