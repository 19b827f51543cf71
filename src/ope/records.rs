//! Evaluating a candidate engine on decision records, with a cross-fitted reward model.

use std::collections::HashMap;

use super::{Estimator, Report, Sample};

/// How [`evaluate_records_with`] evaluates.
#[derive(Debug, Clone)]
#[must_use]
pub struct EvalOptions {
    folds: u32,
    bootstrap: usize,
    seed: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            folds: 5,
            bootstrap: 200,
            seed: 0x0e1f_0de5,
        }
    }
}

impl EvalOptions {
    /// Cross-fitting folds of the reward model (default 5): records are split into `folds`
    /// by a hash of their decision id, and the model used for a record's DM and DR terms is
    /// fitted on the other folds only. 1 fits it on all records (in-sample: DR then leans
    /// towards DM).
    pub fn folds(mut self, folds: u32) -> Self {
        self.folds = folds.max(1);
        self
    }

    /// Poisson-bootstrap replicates for the bootstrap intervals (default 200; 0: none).
    pub fn bootstrap(mut self, replications: usize) -> Self {
        self.bootstrap = replications;
        self
    }

    /// The seed of the bootstrap draws (the same seed, the same intervals).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Sums of logged rewards per (slot, variant, fold), for the cross-fitted reward model.
#[derive(Default)]
struct RewardModel<'a> {
    folds: u32,
    /// Per key: per fold (reward sum, count).
    sums: HashMap<(&'a str, &'a str), Vec<(f64, f64)>>,
}

impl<'a> RewardModel<'a> {
    fn fold(&self, id: crate::DecisionId) -> usize {
        let h = xxhash_rust::xxh3::xxh3_64(&id.as_u128().to_le_bytes());
        (h % u64::from(self.folds)) as usize
    }

    fn add(&mut self, slot: &'a str, variant: &'a str, fold: usize, reward: f64) {
        let n = self.folds as usize;
        let e = self
            .sums
            .entry((slot, variant))
            .or_insert_with(|| vec![(0.0, 0.0); n]);
        e[fold].0 += reward;
        e[fold].1 += 1.0;
    }

    /// The mean logged reward of (slot, variant) outside `fold` (over every record with one
    /// fold); 0 without data.
    fn predict(&self, slot: &str, variant: &str, fold: usize) -> f64 {
        let Some(e) = self.sums.get(&(slot, variant)) else {
            return 0.0;
        };
        let (s, n) = e.iter().fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        let (s, n) = if self.folds > 1 {
            (s - e[fold].0, n - e[fold].1)
        } else {
            (s, n)
        };
        if n > 0.0 {
            s / n
        } else {
            0.0
        }
    }
}

/// [`evaluate_records_with`] with the default [`EvalOptions`]: a reward model cross-fitted
/// over 5 folds and 200 bootstrap replicates.
pub fn evaluate_records<'a, I>(records: I, candidate: &crate::Engine) -> Report
where
    I: IntoIterator<Item = (&'a crate::sink::DecisionRecord, f64)>,
    I::IntoIter: Clone,
{
    evaluate_records_with(records, candidate, &EvalOptions::default())
}

/// Evaluates a candidate engine (its config and models) on logged decisions.
///
/// For each `(record, reward)`, the candidate re-decides the record's slot, user and features
/// with the record's decision id ([`Engine::replay`](crate::Engine::replay)), which gives its
/// probability for every variant (the bandit vector, or 1 for a deterministic outcome). The
/// logging probabilities come from the record (`probabilities`, or `propensity` for the
/// logged variant). DM and DR use the mean logged reward per (slot, variant) as their reward
/// model, cross-fitted over [`EvalOptions::folds`]. A record kept by sampling the log
/// ([`SampleSink`](crate::sink::SampleSink)) is weighted by `1 / pass_probability`, so a log
/// sampled at different rates per slot still gives unbiased estimates (the reward model's
/// means are per slot, where the rate is one). Records without a variant are skipped; so
/// are records whose logged propensity contradicts their probability vector (counted in
/// [`Report::skipped`]).
pub fn evaluate_records_with<'a, I>(
    records: I,
    candidate: &crate::Engine,
    options: &EvalOptions,
) -> Report
where
    I: IntoIterator<Item = (&'a crate::sink::DecisionRecord, f64)>,
    I::IntoIter: Clone,
{
    let records = records.into_iter();
    let mut model = RewardModel {
        folds: options.folds.max(1),
        ..RewardModel::default()
    };
    for (r, reward) in records.clone() {
        if let Some(v) = &r.variant {
            let fold = model.fold(r.id);
            model.add(&r.slot, v, fold, reward);
        }
    }
    let mut est = Estimator::with_bootstrap(options.bootstrap, options.seed);
    let (mut arms, mut logging, mut target, mut predicted) =
        (Vec::<String>::new(), Vec::new(), Vec::new(), Vec::new());
    for (r, reward) in records {
        let Some(logged) = &r.variant else {
            est.skip();
            continue;
        };
        arms.clear();
        logging.clear();
        match &r.probabilities {
            Some(ps) => {
                for p in ps {
                    arms.push(p.variant.clone());
                    logging.push(p.probability);
                }
            }
            None => {
                arms.push(logged.clone());
                logging.push(r.propensity);
            }
        }
        let d = candidate.replay(&r.slot, &r.user, &r.features, r.id);
        let cand: Vec<(String, f64)> = match d.probabilities() {
            Some(ps) => ps.map(|(v, p)| (v.to_owned(), p)).collect(),
            None => d
                .variant()
                .map(|v| vec![(v.to_owned(), 1.0)])
                .unwrap_or_default(),
        };
        for (v, _) in &cand {
            if !arms.contains(v) {
                arms.push(v.clone());
                logging.push(0.0);
            }
        }
        target.clear();
        target.extend(
            arms.iter()
                .map(|a| cand.iter().find(|(v, _)| v == a).map_or(0.0, |(_, p)| *p)),
        );
        let fold = model.fold(r.id);
        predicted.clear();
        predicted.extend(arms.iter().map(|a| model.predict(&r.slot, a, fold)));
        let Some(logged_arm) = arms.iter().position(|a| a == logged) else {
            est.skip();
            continue;
        };
        let propensity = r
            .probabilities
            .as_ref()
            .map_or(r.propensity, |_| logging[logged_arm]);
        let sample = Sample {
            logged_arm,
            propensity,
            reward,
            logging: Some(&logging),
            target: &target,
            predicted: Some(&predicted),
            // A record kept by sampling the log stands for 1 / pass of them.
            weight: 1.0 / r.pass_probability,
        };
        if est.add(&sample).is_err() {
            est.refused();
        }
    }
    est.report()
}
