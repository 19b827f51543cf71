//! Off-policy evaluation: estimate what a candidate policy would have earned from decisions
//! logged under another policy, with inverse propensity scoring (IPS), self-normalized IPS
//! (SNIPS), the direct method (DM, the reward model alone) and the doubly robust (DR)
//! estimator, each with a 95% normal interval and, on request, a bootstrap interval; plus the
//! effective sample size, the number of decisions that carry any reward, and a support check.
//!
//! Every logged decision carries the probability the logging policy gave the chosen arm (and,
//! for bandit rules, the whole vector), so any candidate can be scored offline:
//!
//! ```
//! use elvon::ope::{Estimator, Sample};
//! let mut est = Estimator::new();
//! // Logged with a 50/50 policy; the candidate always plays arm 0.
//! let (logging, target) = ([0.5, 0.5], [1.0, 0.0]);
//! est.add(&Sample::new(0, 0.5, 1.0, &target).logging(&logging))?; // arm 0 earned 1
//! est.add(&Sample::new(1, 0.5, 0.0, &target).logging(&logging))?; // arm 1 earned 0
//! let r = est.report();
//! assert_eq!(r.ips.value, 1.0);
//! assert_eq!(r.unsupported, 0);
//! println!("{r}");
//! # Ok::<(), elvon::ope::SampleError>(())
//! ```
//!
//! Things that make the estimates easy to misread, and what this module does about them:
//! - **Rare rewards.** With tens of non-zero rewards in thousands of decisions the normal
//!   interval is far too wide on one side (its lower end goes below 0 for a reward that cannot
//!   be negative). [`Estimator::with_bootstrap`] adds a percentile bootstrap interval, and
//!   [`Report::warnings`] says when few decisions carry a non-zero reward term.
//! - **In-sample reward models.** DR with a reward model fitted on the same log collapses
//!   towards the direct method: its correction terms cancel on the data the model was fitted
//!   to. [`evaluate_records_with`] cross-fits (the model for each fold is fitted on the other
//!   folds), and reports DM on its own so the two can be compared.
//! - **Inconsistent inputs.** A logging vector that does not match the target vector in
//!   length, or a logged propensity that is not the logging vector's probability of the logged
//!   arm, is a [`SampleError`] naming the row, not a silent skew.
//! - **Several logs.** Estimators of several instances or files [merge](Estimator::merge).

mod estimator;
mod records;

pub use estimator::Estimator;
pub use records::{evaluate_records, evaluate_records_with, EvalOptions};

use std::fmt;

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
    /// check: the candidate must not play arms the logging policy could not). Must have the
    /// target's length, and give the logged arm `propensity`.
    pub logging: Option<&'a [f64]>,
    /// The candidate's probability of each arm in this context.
    pub target: &'a [f64],
    /// A reward model's prediction for each arm in this context (for DM and DR; `None`
    /// means 0, which makes DR equal to IPS). Must have the target's length.
    pub predicted: Option<&'a [f64]>,
    /// How many logged decisions this sample stands for: `1 / pass probability` for a
    /// record kept by sampling the log (1 for an unsampled log). Estimates are weighted
    /// means over samples, and their standard errors account for the weights.
    pub weight: f64,
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
            weight: 1.0,
        }
    }

    /// Standing for `weight` logged decisions (`1 / pass probability` of a sampled record;
    /// default 1). A weight that is not finite and positive makes the sample skipped.
    #[must_use]
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// With the logging policy's probability vector.
    #[must_use]
    pub fn logging(mut self, probs: &'a [f64]) -> Self {
        self.logging = Some(probs);
        self
    }

    /// With a reward model's per-arm predictions (for DM and DR).
    #[must_use]
    pub fn predicted(mut self, rewards: &'a [f64]) -> Self {
        self.predicted = Some(rewards);
        self
    }
}

/// A sample whose inputs contradict each other; it was not added.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("row {row}: {problem}")]
#[non_exhaustive]
pub struct SampleError {
    /// The sample's position among those given to this estimator (from 0).
    pub row: u64,
    /// What is wrong.
    pub problem: SampleProblem,
}

/// What is wrong with a [`SampleError`]'s sample.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SampleProblem {
    /// The logging vector's length differs from the target vector's.
    #[error("logging vector has {logging} arms, target vector {target}")]
    LoggingLength {
        /// Arms of the logging vector.
        logging: usize,
        /// Arms of the target vector.
        target: usize,
    },
    /// The reward model's vector's length differs from the target vector's.
    #[error("reward-model vector has {predicted} arms, target vector {target}")]
    PredictedLength {
        /// Arms of the reward model's vector.
        predicted: usize,
        /// Arms of the target vector.
        target: usize,
    },
    /// The logged propensity is not the logging vector's probability of the logged arm.
    #[error("propensity {propensity} differs from the logging vector's {logging} for arm {arm}")]
    PropensityMismatch {
        /// The logged arm.
        arm: usize,
        /// The sample's propensity.
        propensity: f64,
        /// The logging vector's probability of the arm.
        logging: f64,
    },
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
    /// The 95% percentile-bootstrap interval, `(lower, upper)`, when the estimator was made
    /// [with a bootstrap](Estimator::with_bootstrap).
    pub bootstrap: Option<(f64, f64)>,
}

impl Estimate {
    fn new(value: f64, std_error: f64) -> Self {
        Estimate {
            value,
            std_error,
            lower: value - 1.96 * std_error,
            upper: value + 1.96 * std_error,
            bootstrap: None,
        }
    }

    /// `true` if `x` is inside the 95% normal interval.
    #[must_use]
    pub fn covers(&self, x: f64) -> bool {
        self.lower <= x && x <= self.upper
    }
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.4} ± {:.4} (95%: {:.4} to {:.4}",
            self.value,
            1.96 * self.std_error,
            self.lower,
            self.upper
        )?;
        if let Some((lo, hi)) = self.bootstrap {
            write!(f, "; bootstrap {lo:.4} to {hi:.4}")?;
        }
        f.write_str(")")
    }
}

/// The estimates for one candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// Samples used.
    pub n: u64,
    /// Samples skipped because their propensity was not in (0, 1], their reward was not
    /// finite, or their arm was out of range of the target vector.
    pub skipped: u64,
    /// Inverse propensity scoring.
    pub ips: Estimate,
    /// Self-normalized IPS.
    pub snips: Estimate,
    /// The direct method: the reward model's value of the candidate alone (0 without a
    /// reward model). Its intervals reflect only the spread of the predictions over the
    /// contexts, not the reward model's own error.
    pub dm: Estimate,
    /// Doubly robust.
    pub dr: Estimate,
    /// Effective sample size of the importance weights, `(Σw)² / Σw²`.
    pub effective_sample_size: f64,
    /// Samples whose IPS term `w · r` is not zero: the decisions the estimate rests on.
    pub nonzero_rewards: u64,
    /// Samples where the candidate gives probability to an arm the logging policy gave none
    /// (only checked when the logging vector is known). Non-zero means the estimates are
    /// biased: the logs cannot say what those arms earn.
    pub unsupported: u64,
}

/// Below this many non-zero IPS terms the normal intervals are unreliable.
pub const FEW_NONZERO_REWARDS: u64 = 100;

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
        if self.n > 0 && self.nonzero_rewards < FEW_NONZERO_REWARDS {
            w.push(format!(
                "only {} of {} decisions carry a non-zero reward term: the normal intervals are \
                 unreliable (use the bootstrap interval)",
                self.nonzero_rewards, self.n
            ));
        }
        if self.skipped > 0 {
            w.push(format!(
                "{} samples skipped (invalid propensity, reward or arm)",
                self.skipped
            ));
        }
        w
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} decisions ({} skipped), effective sample size {:.0}, {} with a non-zero reward term",
            self.n, self.skipped, self.effective_sample_size, self.nonzero_rewards
        )?;
        for (name, e) in [
            ("IPS", &self.ips),
            ("SNIPS", &self.snips),
            ("DM", &self.dm),
            ("DR", &self.dr),
        ] {
            writeln!(f, "  {name:<5} {e}")?;
        }
        for w in self.warnings() {
            writeln!(f, "  warning: {w}")?;
        }
        Ok(())
    }
}
