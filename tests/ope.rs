//! Off-policy estimators against a known truth: ε-greedy (ε = 0.2) logging over 5 arms and
//! 10 contexts, 20,000 decisions per repetition, 200 repetitions; the target policy's true
//! value is computed exactly from the reward means.

use elvon::ope::{Estimator, Report, Sample};

mod common;
use common::rng;
use rand::RngExt;

const ARMS: usize = 5;
const CONTEXTS: usize = 10;
const DECISIONS: usize = 20_000;
const REPS: usize = 200;
const EPSILON: f64 = 0.2;

fn mean(c: usize, a: usize) -> f64 {
    0.1 + 0.8 * (((c * 7 + a * 3) % 10) as f64 / 9.0)
}

fn logging(c: usize) -> [f64; ARMS] {
    let mut p = [EPSILON / ARMS as f64; ARMS];
    p[c % ARMS] += 1.0 - EPSILON;
    p
}

fn target(c: usize) -> [f64; ARMS] {
    let mut p = [0.1; ARMS];
    p[(c + 1) % ARMS] = 0.6;
    p
}

/// A deliberately imperfect reward model for DR (off by +0.1 on every arm).
fn model(c: usize) -> [f64; ARMS] {
    std::array::from_fn(|a| mean(c, a) + 0.1)
}

/// One logged decision: a context, the arm the logging policy drew, and its reward.
fn draw(rng: &mut rand::rngs::StdRng) -> (usize, usize, f64) {
    let c = rng.random_range(0..CONTEXTS);
    let lp = logging(c);
    let u = rng.random::<f64>();
    let mut acc = 0.0;
    let mut a = ARMS - 1;
    for (i, p) in lp.iter().enumerate() {
        acc += p;
        if u < acc {
            a = i;
            break;
        }
    }
    let r = if rng.random::<f64>() < mean(c, a) {
        1.0
    } else {
        0.0
    };
    (c, a, r)
}

fn one_run(seed: u64) -> Report {
    let mut rng = rng(seed);
    let mut est = Estimator::new();
    for _ in 0..DECISIONS {
        let (c, a, r) = draw(&mut rng);
        let lp = logging(c);
        let (t, q) = (target(c), model(c));
        est.add(&Sample::new(a, lp[a], r, &t).logging(&lp).predicted(&q))
            .expect("consistent sample");
    }
    est.report()
}

/// The target policy's true value, exactly, from the reward means.
fn truth() -> f64 {
    (0..CONTEXTS)
        .map(|c| (0..ARMS).map(|a| target(c)[a] * mean(c, a)).sum::<f64>())
        .sum::<f64>()
        / CONTEXTS as f64
}

/// [`REPS`] runs, `run(seed)` for seeds `h·1000 + i` (`h` 0 or 1, `i` below `REPS / 2`), on
/// two threads.
fn repeat(run: impl Fn(u64) -> Report + Sync) -> Vec<Report> {
    let run = &run;
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2u64)
            .map(|half| {
                s.spawn(move || {
                    (0..REPS as u64 / 2)
                        .map(|i| run(half * 1_000 + i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("runs"))
            .collect()
    })
}

#[test]
fn estimators_are_unbiased_and_intervals_cover() {
    let truth = truth();
    let reports = repeat(|seed| one_run(1 + seed));
    assert_eq!(reports.len(), REPS);
    for (name, pick) in [
        (
            "IPS",
            (|r: &Report| r.ips) as fn(&Report) -> elvon::ope::Estimate,
        ),
        ("SNIPS", |r: &Report| r.snips),
        ("DR", |r: &Report| r.dr),
    ] {
        let values: Vec<f64> = reports.iter().map(|r| pick(r).value).collect();
        let m = values.iter().sum::<f64>() / REPS as f64;
        let sd = (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (REPS as f64 - 1.0)).sqrt();
        let sem = sd / (REPS as f64).sqrt();
        let coverage =
            reports.iter().filter(|r| pick(r).covers(truth)).count() as f64 / REPS as f64;
        println!(
            "{name}: mean {m:.5} (truth {truth:.5}), bias {:+.5}, 3 SEM {:.5}, coverage {:.1}%",
            m - truth,
            3.0 * sem,
            coverage * 100.0
        );
        assert!(
            (m - truth).abs() <= 3.0 * sem,
            "{name} bias {} > 3 SEM {}",
            m - truth,
            3.0 * sem
        );
        assert!(
            (0.92..=0.98).contains(&coverage),
            "{name} 95% intervals cover the truth in {:.1}% of repetitions",
            coverage * 100.0
        );
    }
    let r = &reports[0];
    assert_eq!(r.n, DECISIONS as u64);
    assert_eq!(r.unsupported, 0);
    assert!(r.effective_sample_size > 0.0 && r.effective_sample_size < DECISIONS as f64);
}

#[test]
fn unsupported_actions_are_flagged() {
    let mut est = Estimator::new();
    let (logging, target) = ([1.0, 0.0], [0.5, 0.5]);
    for _ in 0..10 {
        est.add(&Sample::new(0, 1.0, 1.0, &target).logging(&logging))
            .expect("consistent");
    }
    let r = est.report();
    assert_eq!(r.unsupported, 10);
    assert!(r.warnings().iter().any(|w| w.contains("never could")));
    // Bad propensities are skipped, not divided by.
    est.add(&Sample::new(0, 0.0, 1.0, &target))
        .expect("skipped, not refused");
    est.add(&Sample::new(7, 0.5, 1.0, &target))
        .expect("skipped, not refused");
    assert_eq!(est.report().skipped, 2);
}

/// Rare rewards (about 30 clicks in 10,000 decisions): the normal interval reaches below 0,
/// which a click rate cannot; the percentile bootstrap stays at or above 0, covers the truth
/// about as often as it should, and the report warns.
#[test]
fn rare_rewards_get_a_bootstrap_interval_and_a_warning() {
    const N: usize = 10_000;
    const LOGS: u64 = 60;
    let truth = 0.003;
    let (logging, target) = ([0.9, 0.1], [0.0, 1.0]);
    let mut covered = 0;
    let mut normal_below_zero = 0;
    for seed in 0..LOGS {
        let mut rng = rng(500 + seed);
        let mut est = Estimator::with_bootstrap(200, seed);
        for _ in 0..N {
            let a = usize::from(rng.random::<f64>() >= 0.9);
            let p = if a == 1 { 0.003 } else { 0.01 };
            let r = f64::from(u8::from(rng.random::<f64>() < p));
            est.add(&Sample::new(a, logging[a], r, &target).logging(&logging))
                .expect("consistent");
        }
        let report = est.report();
        let (lo, hi) = report.ips.bootstrap.expect("bootstrap interval");
        assert!(
            lo >= 0.0 && lo <= report.ips.value && report.ips.value <= hi,
            "{report}"
        );
        normal_below_zero += usize::from(report.ips.lower < 0.0);
        covered += usize::from(lo <= truth && truth <= hi);
        assert!(report.nonzero_rewards < 100);
        assert!(
            report
                .warnings()
                .iter()
                .any(|w| w.contains("non-zero reward term")),
            "{report}"
        );
    }
    let coverage = covered as f64 / LOGS as f64;
    println!("rare rewards: bootstrap coverage {coverage:.2}, normal lower end < 0 in {normal_below_zero} of {LOGS}");
    assert!(
        normal_below_zero > 0,
        "the normal interval is the problem being fixed"
    );
    assert!(
        (0.85..=1.0).contains(&coverage),
        "bootstrap coverage {coverage}"
    );
}

/// Row-level errors for inputs that contradict each other, and nothing added for them.
#[test]
fn mismatched_inputs_are_errors_that_name_the_row() {
    use elvon::ope::SampleProblem;
    let mut est = Estimator::new();
    let (logging, target) = ([0.5, 0.5], [1.0, 0.0]);
    est.add(&Sample::new(0, 0.5, 1.0, &target).logging(&logging))
        .expect("consistent");
    let short = [1.0];
    let e = est
        .add(&Sample::new(0, 0.5, 1.0, &short).logging(&logging))
        .expect_err("lengths differ");
    assert_eq!(e.row, 1);
    assert!(matches!(
        e.problem,
        SampleProblem::LoggingLength {
            logging: 2,
            target: 1
        }
    ));
    let e = est
        .add(&Sample::new(0, 0.4, 1.0, &target).logging(&logging))
        .expect_err("propensity differs from the vector");
    assert_eq!(e.row, 2);
    assert!(e.to_string().starts_with("row 2: propensity 0.4"), "{e}");
    let e = est
        .add(&Sample::new(0, 0.5, 1.0, &target).predicted(&short))
        .expect_err("model vector too short");
    assert!(matches!(e.problem, SampleProblem::PredictedLength { .. }));
    assert_eq!(est.report().n, 1, "refused samples are not added");
}

/// Estimators over parts of a log merge into the estimator over the whole log.
#[test]
fn estimators_merge() {
    let mut rng = rng(77);
    let (mut whole, mut a, mut b) = (Estimator::new(), Estimator::new(), Estimator::new());
    for i in 0..2_000 {
        let c = rng.random_range(0..CONTEXTS);
        let lp = logging(c);
        let arm = rng.random_range(0..ARMS);
        let r = f64::from(u8::from(rng.random::<f64>() < mean(c, arm)));
        let (t, q) = (target(c), model(c));
        let s = Sample::new(arm, lp[arm], r, &t).logging(&lp).predicted(&q);
        whole.add(&s).expect("consistent");
        if i % 2 == 0 { &mut a } else { &mut b }
            .add(&s)
            .expect("consistent");
    }
    a.merge(&b);
    let (m, w) = (a.report(), whole.report());
    assert_eq!((m.n, m.nonzero_rewards), (w.n, w.nonzero_rewards));
    for (x, y) in [
        (m.ips, w.ips),
        (m.snips, w.snips),
        (m.dm, w.dm),
        (m.dr, w.dr),
    ] {
        assert!((x.value - y.value).abs() < 1e-12 && (x.std_error - y.std_error).abs() < 1e-9);
    }
    let text = m.to_string();
    assert!(
        text.contains("IPS") && text.contains("DR") && text.contains("2000 decisions"),
        "{text}"
    );
}

/// With the reward model fitted on the same log (one fold), DR's correction terms cancel and
/// it equals the direct method; cross-fitted (5 folds), they do not, and DM is reported on
/// its own to compare.
#[test]
fn cross_fitting_keeps_dr_from_collapsing_to_the_direct_method() {
    use elvon::ope::{evaluate_records_with, EvalOptions};
    use elvon::sink::MemorySink;
    use elvon::{Engine, Features};
    let slot = |rule: serde_json::Value| {
        serde_json::json!({"version": "1", "slots": [{"id": "s",
            "variants": [{"id": "a"}, {"id": "b"}], "default": "a", "rules": [rule]}]})
        .to_string()
    };
    let sink = MemorySink::new(20_000);
    let logger = Engine::builder().sink(sink.clone()).id_prefix(5).build();
    logger
        .load_config_json(&slot(serde_json::json!({"split": {"variants": [
            {"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}})))
        .expect("valid");
    let candidate = Engine::default();
    candidate
        .load_config_json(&slot(serde_json::json!({"serve": "b"})))
        .expect("valid");
    let mut rng = rng(31);
    let mut rewards = std::collections::HashMap::new();
    for u in 0..10_000 {
        let d = logger.decide("s", &format!("user-{u}"), &Features::new());
        let p = if d.variant() == Some("b") { 0.6 } else { 0.3 };
        rewards.insert(d.id(), f64::from(u8::from(rng.random::<f64>() < p)));
    }
    let records = sink.records();
    let eval = |folds| {
        evaluate_records_with(
            records.iter().map(|r| (r, rewards[&r.id])),
            &candidate,
            &EvalOptions::default().folds(folds).bootstrap(0),
        )
    };
    let (in_sample, cross) = (eval(1), eval(5));
    println!("in-sample: {in_sample}cross-fitted: {cross}");
    assert_eq!(in_sample.n, 10_000);
    assert!(
        (in_sample.dr.value - in_sample.dm.value).abs() < 1e-9,
        "{in_sample}"
    );
    assert!((cross.dr.value - cross.dm.value).abs() > 1e-6, "{cross}");
    for r in [&in_sample, &cross] {
        assert!(r.dr.covers(0.6) && r.ips.covers(0.6), "{r}");
    }
}

/// Pass probability of a decision in context `c` in the sampled log: 10% for even contexts,
/// 30% for odd ones (a log sampled at different rates per slot, say).
fn pass(c: usize) -> f64 {
    if c.is_multiple_of(2) {
        0.1
    } else {
        0.3
    }
}

/// `one_run` on a log sampled with [`pass`]: a kept decision stands for `1 / pass` decisions
/// when `weighted`, for one otherwise.
fn one_sampled_run(seed: u64, weighted: bool) -> Report {
    let mut rng = rng(seed);
    let mut est = Estimator::new();
    for _ in 0..DECISIONS * 4 {
        let (c, a, r) = draw(&mut rng);
        let lp = logging(c);
        if rng.random::<f64>() >= pass(c) {
            continue; // not in the log
        }
        let (t, q) = (target(c), model(c));
        let v = if weighted { 1.0 / pass(c) } else { 1.0 };
        est.add(
            &Sample::new(a, lp[a], r, &t)
                .logging(&lp)
                .predicted(&q)
                .weight(v),
        )
        .expect("consistent sample");
    }
    est.report()
}

#[test]
fn a_log_sampled_at_different_rates_is_unbiased_when_weighted_by_one_over_pass() {
    let truth = truth();
    for weighted in [true, false] {
        let reports = repeat(|seed| one_sampled_run(7_000 + seed, weighted));
        for (name, pick) in [
            (
                "IPS",
                (|r: &Report| r.ips) as fn(&Report) -> elvon::ope::Estimate,
            ),
            ("SNIPS", |r: &Report| r.snips),
            ("DR", |r: &Report| r.dr),
        ] {
            let values: Vec<f64> = reports.iter().map(|r| pick(r).value).collect();
            let m = values.iter().sum::<f64>() / REPS as f64;
            let sd =
                (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (REPS as f64 - 1.0)).sqrt();
            let sem = sd / (REPS as f64).sqrt();
            let coverage =
                reports.iter().filter(|r| pick(r).covers(truth)).count() as f64 / REPS as f64;
            println!(
                "weighted {weighted} {name}: mean {m:.5} (truth {truth:.5}), bias {:+.5}, 3 SEM {:.5}, coverage {:.1}%",
                m - truth,
                3.0 * sem,
                coverage * 100.0
            );
            if weighted {
                assert!(
                    (m - truth).abs() <= 3.0 * sem,
                    "{name} bias {} > 3 SEM {}",
                    m - truth,
                    3.0 * sem
                );
                assert!(
                    (0.92..=0.98).contains(&coverage),
                    "{name} 95% intervals cover the truth in {:.1}% of repetitions",
                    coverage * 100.0
                );
            } else {
                // The control: the same log read as if unsampled is biased (even contexts
                // are under-represented), which is what the weights correct.
                assert!(
                    (m - truth).abs() > 3.0 * sem,
                    "{name}: the unweighted log should be biased: {} vs 3 SEM {}",
                    m - truth,
                    3.0 * sem
                );
            }
        }
    }
}
