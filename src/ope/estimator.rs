//! The one-pass estimator, its online bootstrap and merging.

use super::{Estimate, Report, Sample, SampleError, SampleProblem};

/// Accumulates samples in one pass (memory independent of the number of samples) and
/// reports the estimates.
#[derive(Debug, Clone, Default)]
pub struct Estimator {
    /// Samples given (added, skipped or refused): the next sample's row.
    rows: u64,
    n: u64,
    skipped: u64,
    unsupported: u64,
    nonzero: u64,
    // Sample weights v (1 unless the log was sampled): Σv, Σv².
    v_sum: f64,
    v_sq: f64,
    // IPS terms x = w·r: Σv·x, Σv·x², and Σv²·x, Σv²·x² for weighted standard errors;
    // SNIPS sums (Σv·w, Σv²·w², Σv²·w²·r, Σv²·w²·r²); DM and DR terms likewise.
    ips_v2: f64,
    ips_v2sq: f64,
    dm_v2: f64,
    dm_v2sq: f64,
    dr_v2: f64,
    dr_v2sq: f64,
    ips_sum: f64,
    ips_sq: f64,
    w_sum: f64,
    w_sq: f64,
    w2r_sum: f64,
    w2r2_sum: f64,
    dm_sum: f64,
    dm_sq: f64,
    dr_sum: f64,
    dr_sq: f64,
    boot: Option<Bootstrap>,
}

/// The Poisson bootstrap: every sample enters replicate `b` with a weight drawn from
/// Poisson(1), a hash of (seed, row, b), so replicates need no stored samples.
#[derive(Debug, Clone)]
struct Bootstrap {
    seed: u64,
    /// Per replicate: Σk, Σk·w·r, Σk·w, Σk·dm, Σk·dr.
    reps: Vec<[f64; 5]>,
}

/// Cumulative Poisson(1) probabilities of 0..=7.
const POISSON1_CDF: [f64; 8] = [
    0.367_879_441_171_442_33,
    0.735_758_882_342_884_7,
    0.919_698_602_928_605_8,
    0.981_011_843_123_846_2,
    0.996_340_153_172_656_3,
    0.999_405_815_182_418_3,
    0.999_916_758_850_711_9,
    0.999_989_750_803_325_3,
];

fn poisson1(seed: u64, row: u64, rep: usize) -> f64 {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&row.to_le_bytes());
    key[8..].copy_from_slice(&(rep as u64).to_le_bytes());
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(&key, seed);
    let u = (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    POISSON1_CDF.iter().position(|&c| u < c).unwrap_or(8) as f64
}

/// The 2.5% and 97.5% percentiles of `xs` (finite values only).
fn percentiles(mut xs: Vec<f64>) -> Option<(f64, f64)> {
    xs.retain(|x| x.is_finite());
    if xs.len() < 2 {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((q * (xs.len() - 1) as f64).round() as usize).min(xs.len() - 1)];
    Some((at(0.025), at(0.975)))
}

/// Relative tolerance between a logged propensity and the logging vector's entry.
const PROPENSITY_TOLERANCE: f64 = 1e-6;

impl Estimator {
    /// An empty estimator.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty estimator that also reports 95% percentile-bootstrap intervals from
    /// `replications` Poisson-bootstrap replicates (200 is a common choice), drawn
    /// reproducibly from `seed`. Memory grows with `replications`, not with the samples.
    #[must_use]
    pub fn with_bootstrap(replications: usize, seed: u64) -> Self {
        Estimator {
            boot: (replications > 0).then(|| Bootstrap {
                seed,
                reps: vec![[0.0; 5]; replications],
            }),
            ..Self::default()
        }
    }

    /// Adds one logged decision. Samples with a propensity outside (0, 1], a reward that is
    /// not finite or an arm outside the target vector are counted as skipped.
    ///
    /// # Errors
    /// A [`SampleError`] naming the sample's row when its vectors contradict each other
    /// (lengths, or a propensity that is not the logging vector's entry); the sample is not
    /// added.
    pub fn add(&mut self, s: &Sample<'_>) -> Result<(), SampleError> {
        let row = self.rows;
        self.rows += 1;
        let refuse = |problem| Err(SampleError { row, problem });
        let target_len = s.target.len();
        if let Some(l) = s.logging.filter(|l| l.len() != target_len) {
            return refuse(SampleProblem::LoggingLength {
                logging: l.len(),
                target: target_len,
            });
        }
        if let Some(q) = s.predicted.filter(|q| q.len() != target_len) {
            return refuse(SampleProblem::PredictedLength {
                predicted: q.len(),
                target: target_len,
            });
        }
        let p = s.propensity;
        let Some(&target) = s.target.get(s.logged_arm) else {
            self.skipped += 1;
            return Ok(());
        };
        let v = s.weight;
        if !(p > 0.0 && p <= 1.0 && s.reward.is_finite() && v.is_finite() && v > 0.0) {
            self.skipped += 1;
            return Ok(());
        }
        if let Some(logging) = s.logging {
            let lp = logging[s.logged_arm];
            if (lp - p).abs() > PROPENSITY_TOLERANCE * p.max(lp) {
                return refuse(SampleProblem::PropensityMismatch {
                    arm: s.logged_arm,
                    propensity: p,
                    logging: lp,
                });
            }
            if s.target
                .iter()
                .zip(logging)
                .any(|(&t, &l)| t > 0.0 && l <= 0.0)
            {
                self.unsupported += 1;
            }
        }
        let w = target / p;
        let r = s.reward;
        let (x, v2) = (w * r, v * v);
        self.n += 1;
        self.nonzero += u64::from(x != 0.0);
        self.v_sum += v;
        self.v_sq += v2;
        self.ips_sum += v * x;
        self.ips_sq += v * x * x;
        self.ips_v2 += v2 * x;
        self.ips_v2sq += v2 * x * x;
        self.w_sum += v * w;
        self.w_sq += v2 * w * w;
        self.w2r_sum += v2 * w * w * r;
        self.w2r2_sum += v2 * w * w * r * r;
        let (direct, q_logged) = match s.predicted {
            Some(q) => (
                s.target.iter().zip(q).map(|(t, q)| t * q).sum::<f64>(),
                q[s.logged_arm],
            ),
            None => (0.0, 0.0),
        };
        let d = direct + w * (r - q_logged);
        self.dm_sum += v * direct;
        self.dm_sq += v * direct * direct;
        self.dm_v2 += v2 * direct;
        self.dm_v2sq += v2 * direct * direct;
        self.dr_sum += v * d;
        self.dr_sq += v * d * d;
        self.dr_v2 += v2 * d;
        self.dr_v2sq += v2 * d * d;
        if let Some(b) = &mut self.boot {
            for (i, rep) in b.reps.iter_mut().enumerate() {
                let k = poisson1(b.seed, row, i) * v;
                if k > 0.0 {
                    rep[0] += k;
                    rep[1] += k * w * r;
                    rep[2] += k * w;
                    rep[3] += k * direct;
                    rep[4] += k * d;
                }
            }
        }
        Ok(())
    }

    /// Adds another estimator's samples, as if they had been added to this one (one
    /// estimator per instance or per file, combined). Bootstrap intervals survive when both
    /// have the same number of replicates; give each part its own seed, or their replicates
    /// draw the same weights for the same rows. Otherwise the merged estimator has none.
    pub fn merge(&mut self, other: &Estimator) {
        self.rows += other.rows;
        self.n += other.n;
        self.skipped += other.skipped;
        self.unsupported += other.unsupported;
        self.nonzero += other.nonzero;
        for (a, b) in [
            (&mut self.v_sum, other.v_sum),
            (&mut self.v_sq, other.v_sq),
            (&mut self.ips_v2, other.ips_v2),
            (&mut self.ips_v2sq, other.ips_v2sq),
            (&mut self.dm_v2, other.dm_v2),
            (&mut self.dm_v2sq, other.dm_v2sq),
            (&mut self.dr_v2, other.dr_v2),
            (&mut self.dr_v2sq, other.dr_v2sq),
            (&mut self.ips_sum, other.ips_sum),
            (&mut self.ips_sq, other.ips_sq),
            (&mut self.w_sum, other.w_sum),
            (&mut self.w_sq, other.w_sq),
            (&mut self.w2r_sum, other.w2r_sum),
            (&mut self.w2r2_sum, other.w2r2_sum),
            (&mut self.dm_sum, other.dm_sum),
            (&mut self.dm_sq, other.dm_sq),
            (&mut self.dr_sum, other.dr_sum),
            (&mut self.dr_sq, other.dr_sq),
        ] {
            *a += b;
        }
        self.boot = match (self.boot.take(), &other.boot) {
            (Some(mut a), Some(b)) if a.reps.len() == b.reps.len() => {
                for (x, y) in a.reps.iter_mut().zip(&b.reps) {
                    for (u, v) in x.iter_mut().zip(y) {
                        *u += v;
                    }
                }
                Some(a)
            }
            _ => None,
        };
    }

    /// Counts a sample the caller could not turn into one.
    pub(super) fn skip(&mut self) {
        self.rows += 1;
        self.skipped += 1;
    }

    /// Counts as skipped a sample [`add`](Self::add) refused (its row is counted already).
    pub(crate) fn refused(&mut self) {
        self.skipped += 1;
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
        // Every weight 1 (an unsampled log): the sample mean and its standard error.
        // Otherwise the weighted (Hájek) mean Σv·x / Σv, with the linearized standard error
        // √(Σv²(x − m)²) / Σv, which counts both the decisions' spread and the sampling.
        let unweighted = self.v_sum == n && self.v_sq == n;
        let mean_se = |sum: f64, sq: f64, v2: f64, v2sq: f64| {
            if unweighted {
                let m = sum / n;
                let var = if self.n > 1 {
                    ((sq - n * m * m) / (n - 1.0)).max(0.0)
                } else {
                    0.0
                };
                Estimate::new(m, (var / n).sqrt())
            } else {
                let m = sum / self.v_sum;
                let num = v2sq - 2.0 * m * v2 + m * m * self.v_sq;
                Estimate::new(m, num.max(0.0).sqrt() / self.v_sum)
            }
        };
        let snips = if self.w_sum > 0.0 {
            self.ips_sum / self.w_sum
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
        let mut report = Report {
            n: self.n,
            skipped: self.skipped,
            ips: mean_se(self.ips_sum, self.ips_sq, self.ips_v2, self.ips_v2sq),
            snips: Estimate::new(snips, snips_se),
            dm: mean_se(self.dm_sum, self.dm_sq, self.dm_v2, self.dm_v2sq),
            dr: mean_se(self.dr_sum, self.dr_sq, self.dr_v2, self.dr_v2sq),
            effective_sample_size: if self.w_sq > 0.0 {
                self.w_sum * self.w_sum / self.w_sq
            } else {
                0.0
            },
            nonzero_rewards: self.nonzero,
            unsupported: self.unsupported,
        };
        if let Some(b) = &self.boot {
            let of = |f: fn(&[f64; 5]) -> f64| percentiles(b.reps.iter().map(f).collect());
            report.ips.bootstrap = of(|r| r[1] / r[0]);
            report.snips.bootstrap = of(|r| r[1] / r[2]);
            report.dm.bootstrap = of(|r| r[3] / r[0]);
            report.dr.bootstrap = of(|r| r[4] / r[0]);
        }
        report
    }
}
