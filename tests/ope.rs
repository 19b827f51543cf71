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

fn one_run(seed: u64) -> Report {
    let mut rng = rng(seed);
    let mut est = Estimator::new();
    for _ in 0..DECISIONS {
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
        let (t, q) = (target(c), model(c));
        est.add(&Sample::new(a, lp[a], r, &t).logging(&lp).predicted(&q));
    }
    est.report()
}

#[test]
fn estimators_are_unbiased_and_intervals_cover() {
    let truth: f64 = (0..CONTEXTS)
        .map(|c| (0..ARMS).map(|a| target(c)[a] * mean(c, a)).sum::<f64>())
        .sum::<f64>()
        / CONTEXTS as f64;
    let reports: Vec<Report> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2u64)
            .map(|half| {
                s.spawn(move || {
                    (0..REPS as u64 / 2)
                        .map(|i| one_run(1 + half * 1_000 + i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("runs"))
            .collect()
    });
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
        est.add(&Sample::new(0, 1.0, 1.0, &target).logging(&logging));
    }
    let r = est.report();
    assert_eq!(r.unsupported, 10);
    assert!(r.warnings().iter().any(|w| w.contains("never could")));
    // Bad propensities are skipped, not divided by.
    est.add(&Sample::new(0, 0.0, 1.0, &target));
    est.add(&Sample::new(7, 0.5, 1.0, &target));
    assert_eq!(est.report().skipped, 2);
}
