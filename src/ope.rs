//! Off-policy evaluation: estimate what a candidate policy would have earned from decisions
//! logged under another policy, with inverse propensity scoring (IPS), self-normalized IPS
//! (SNIPS) and the doubly robust (DR) estimator, each with a 95% confidence interval, plus
//! the effective sample size and a support check.
//!
//! Every logged decision carries the probability the logging policy gave the chosen arm (and,
//! for bandit rules, the whole vector), so any candidate can be scored offline:
//!
//! ```
//! use elvon::ope::{Estimator, Sample};
//! let mut est = Estimator::new();
//! // Logged with a 50/50 policy; the candidate always plays arm 0.
//! let (logging, target) = ([0.5, 0.5], [1.0, 0.0]);
//! est.add(&Sample::new(0, 0.5, 1.0, &target).logging(&logging)); // arm 0 earned 1
//! est.add(&Sample::new(1, 0.5, 0.0, &target).logging(&logging)); // arm 1 earned 0
//! let r = est.report();
//! assert_eq!(r.ips.value, 1.0);
//! assert_eq!(r.unsupported, 0);
//! ```

/// One logged decision as the estimators see it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Sample<'a> {
    /// Index of the arm the logging policy chose.
    pub logged_arm: usize,
    /// Probability the logging policy gave that arm (its propensity, > 0).
    pub propensity: f64,
    /// The observed reward.
    pub reward: f64,
    /// The logging policy's full probability vector, when logged (used for the support
    /// check: the candidate must not play arms the logging policy could not).
    pub logging: Option<&'a [f64]>,
    /// The candidate's probability of each arm in this context.
    pub target: &'a [f64],
    /// A reward model's prediction for each arm in this context (for DR; `None` means 0,
    /// which makes DR equal to IPS).
    pub predicted: Option<&'a [f64]>,
}

impl<'a> Sample<'a> {
    /// A sample without a logging vector or reward model.
    #[must_use]
    pub fn new(logged_arm: usize, propensity: f64, reward: f64, target: &'a [f64]) -> Self {
        Sample {
            logged_arm,
            propensity,
            reward,
            logging: None,
            target,
            predicted: None,
        }
    }

    /// With the logging policy's probability vector.
    #[must_use]
    pub fn logging(mut self, probs: &'a [f64]) -> Self {
        self.logging = Some(probs);
        self
    }

    /// With a reward model's per-arm predictions (for DR).
    #[must_use]
    pub fn predicted(mut self, rewards: &'a [f64]) -> Self {
        self.predicted = Some(rewards);
        self
    }
}

/// A point estimate with its standard error and 95% confidence interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Estimate {
    /// The estimated value (mean reward per decision) of the candidate.
    pub value: f64,
    /// Standard error of the estimate.
    pub std_error: f64,
    /// Lower end of the 95% confidence interval (normal approximation).
    pub lower: f64,
    /// Upper end of the 95% confidence interval.
    pub upper: f64,
}

impl Estimate {
    fn new(value: f64, std_error: f64) -> Self {
        Estimate {
            value,
            std_error,
            lower: value - 1.96 * std_error,
            upper: value + 1.96 * std_error,
        }
    }

    /// `true` if `x` is inside the 95% interval.
    #[must_use]
    pub fn covers(&self, x: f64) -> bool {
        self.lower <= x && x <= self.upper
    }
}

/// The estimates for one candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// Samples used.
    pub n: u64,
    /// Samples skipped because their propensity was not in (0, 1] or their arm was out of
    /// range of the target vector.
    pub skipped: u64,
    /// Inverse propensity scoring.
    pub ips: Estimate,
    /// Self-normalized IPS.
    pub snips: Estimate,
    /// Doubly robust.
    pub dr: Estimate,
    /// Effective sample size of the importance weights, `(Σw)² / Σw²`.
    pub effective_sample_size: f64,
    /// Samples where the candidate gives probability to an arm the logging policy gave none
    /// (only checked when the logging vector is known). Non-zero means the estimates are
    /// biased: the logs cannot say what those arms earn.
    pub unsupported: u64,
}

impl Report {
    /// Human-readable warnings about the estimates (empty when there are none).
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.unsupported > 0 {
            w.push(format!(
                "the candidate plays arms the logging policy never could in {} of {} decisions: estimates are biased",
                self.unsupported, self.n
            ));
        }
        if self.n > 0 && self.effective_sample_size < 0.01 * self.n as f64 {
            w.push(format!(
                "effective sample size {:.0} is under 1% of {} decisions: intervals are unreliable",
                self.effective_sample_size, self.n
            ));
        }
        if self.skipped > 0 {
            w.push(format!(
                "{} samples skipped (invalid propensity or arm)",
                self.skipped
            ));
        }
        w
    }
}

/// Accumulates samples in one pass (constant memory) and reports the estimates.
#[derive(Debug, Clone, Default)]
pub struct Estimator {
    n: u64,
    skipped: u64,
    unsupported: u64,
    // IPS terms w·r; SNIPS sums; DR terms.
    ips_sum: f64,
    ips_sq: f64,
    w_sum: f64,
    w_sq: f64,
    wr_sum: f64,
    w2r_sum: f64,
    w2r2_sum: f64,
    dr_sum: f64,
    dr_sq: f64,
}

impl Estimator {
    /// An empty estimator.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one logged decision.
    pub fn add(&mut self, s: &Sample<'_>) {
        let p = s.propensity;
        let Some(&target) = s.target.get(s.logged_arm) else {
            self.skipped += 1;
            return;
        };
        if !(p > 0.0 && p <= 1.0 && s.reward.is_finite()) {
            self.skipped += 1;
            return;
        }
        if let Some(logging) = s.logging {
            if s.target
                .iter()
                .enumerate()
                .any(|(a, &t)| t > 0.0 && logging.get(a).copied().unwrap_or(0.0) <= 0.0)
            {
                self.unsupported += 1;
            }
        }
        let w = target / p;
        let r = s.reward;
        self.n += 1;
        self.ips_sum += w * r;
        self.ips_sq += (w * r) * (w * r);
        self.w_sum += w;
        self.w_sq += w * w;
        self.wr_sum += w * r;
        self.w2r_sum += w * w * r;
        self.w2r2_sum += w * w * r * r;
        let (direct, q_logged) = match s.predicted {
            Some(q) => (
                s.target.iter().zip(q).map(|(t, q)| t * q).sum::<f64>(),
                q.get(s.logged_arm).copied().unwrap_or(0.0),
            ),
            None => (0.0, 0.0),
        };
        let d = direct + w * (r - q_logged);
        self.dr_sum += d;
        self.dr_sq += d * d;
    }

    /// The estimates so far.
    #[must_use]
    pub fn report(&self) -> Report {
        let n = self.n as f64;
        if self.n == 0 {
            return Report {
                skipped: self.skipped,
                ..Report::default()
            };
        }
        let mean_se = |sum: f64, sq: f64| {
            let m = sum / n;
            let var = if self.n > 1 {
                ((sq - n * m * m) / (n - 1.0)).max(0.0)
            } else {
                0.0
            };
            (m, (var / n).sqrt())
        };
        let (ips, ips_se) = mean_se(self.ips_sum, self.ips_sq);
        let (dr, dr_se) = mean_se(self.dr_sum, self.dr_sq);
        let snips = if self.w_sum > 0.0 {
            self.wr_sum / self.w_sum
        } else {
            0.0
        };
        // Delta method: Var ≈ Σ w²(r − V)² / (Σw)².
        let snips_se = if self.w_sum > 0.0 {
            let num = self.w2r2_sum - 2.0 * snips * self.w2r_sum + snips * snips * self.w_sq;
            (num.max(0.0)).sqrt() / self.w_sum
        } else {
            0.0
        };
        Report {
            n: self.n,
            skipped: self.skipped,
            ips: Estimate::new(ips, ips_se),
            snips: Estimate::new(snips, snips_se),
            dr: Estimate::new(dr, dr_se),
            effective_sample_size: if self.w_sq > 0.0 {
                self.w_sum * self.w_sum / self.w_sq
            } else {
                0.0
            },
            unsupported: self.unsupported,
        }
    }
}

/// Evaluates a candidate engine (its config and models) on logged decisions.
///
/// For each `(record, reward)`, the candidate re-decides the record's slot, user and features
/// with the record's decision id ([`Engine::replay`](crate::Engine::replay)), which gives its
/// probability for every variant (the bandit vector, or 1 for a deterministic outcome). The
/// logging probabilities come from the record (`probabilities`, or `propensity` for the
/// logged variant). DR uses the mean logged reward per (slot, variant) as its reward model.
/// Records without a variant are skipped.
pub fn evaluate_records<'a, I>(records: I, candidate: &crate::Engine) -> Report
where
    I: IntoIterator<Item = (&'a crate::sink::DecisionRecord, f64)>,
    I::IntoIter: Clone,
{
    use std::collections::HashMap;
    let records = records.into_iter();
    // Reward model: mean reward per (slot, variant).
    let mut sums: HashMap<(&str, &str), (f64, f64)> = HashMap::new();
    for (r, reward) in records.clone() {
        if let Some(v) = &r.variant {
            let e = sums.entry((&r.slot, v)).or_default();
            e.0 += reward;
            e.1 += 1.0;
        }
    }
    let q = |slot: &str, v: &str| sums.get(&(slot, v)).map_or(0.0, |(s, n)| s / n);
    let mut est = Estimator::new();
    let (mut arms, mut logging, mut target, mut predicted) =
        (Vec::<String>::new(), Vec::new(), Vec::new(), Vec::new());
    for (r, reward) in records {
        let Some(logged) = &r.variant else {
            est.skipped += 1;
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
        predicted.clear();
        predicted.extend(arms.iter().map(|a| q(&r.slot, a)));
        let Some(logged_arm) = arms.iter().position(|a| a == logged) else {
            est.skipped += 1;
            continue;
        };
        let propensity = r
            .probabilities
            .as_ref()
            .map_or(r.propensity, |_| logging[logged_arm]);
        est.add(&Sample {
            logged_arm,
            propensity,
            reward,
            logging: Some(&logging),
            target: &target,
            predicted: Some(&predicted),
        });
    }
    est.report()
}
