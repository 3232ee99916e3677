//! Statistics over seeds, for reports whose conclusions must carry: mean and sample standard
//! deviation of a model's runs, the mean paired difference of two models run with the same
//! seeds with its Student-t confidence interval, and the verdict against the paper's sign
//! that the interval (not the point estimate) decides.

use serde::Serialize;

/// Mean and sample standard deviation (n - 1) of some runs; `std` is 0 for one run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
}

impl Summary {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
        let std = if n > 1 {
            (ss / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Self { n, mean, std })
    }
}

/// The two-sided 95 % quantile of Student's t with `df` degrees of freedom (`t_{0.975, df}`):
/// exact to three decimals from the table up to 30, the Cornish-Fisher expansion above (within
/// 2e-4 of the exact value at 30 and closer beyond).
pub fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        _ => {
            let (z, n) = (1.959_963_984_540_054_f64, df as f64);
            z + (z.powi(3) + z) / (4.0 * n)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * n * n)
        }
    }
}

/// The mean of the paired differences `a[i] - b[i]` (model A and model B trained with seed
/// `i`) and its 95 % confidence interval `mean ± t_{0.975, n-1} · sd / sqrt(n)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PairedDifference {
    pub n: usize,
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl PairedDifference {
    /// `None` unless both have the same number (at least 2) of paired runs: one pair has no
    /// interval.
    pub fn of(a: &[f64], b: &[f64]) -> Option<Self> {
        if a.len() != b.len() || a.len() < 2 {
            return None;
        }
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let s = Summary::of(&d)?;
        let half = t_975(s.n - 1) * s.std / (s.n as f64).sqrt();
        Some(Self {
            n: s.n,
            mean: s.mean,
            low: s.mean - half,
            high: s.mean + half,
        })
    }

    pub fn contains_zero(&self) -> bool {
        self.low <= 0.0 && 0.0 <= self.high
    }

    /// The verdict against the paper's difference of the same comparison.
    pub fn verdict(&self, paper: f64) -> Verdict {
        if self.contains_zero() {
            Verdict::WithinNoise
        } else if paper == 0.0 {
            Verdict::EffectThePaperLacks
        } else if (self.mean > 0.0) == (paper > 0.0) {
            Verdict::SameDirection
        } else {
            Verdict::Opposite
        }
    }
}

/// What a confidence interval says of a comparison the paper makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The interval excludes 0 on the paper's side.
    SameDirection,
    /// The interval excludes 0 on the other side.
    Opposite,
    /// The interval contains 0: this run cannot tell.
    WithinNoise,
    /// The interval excludes 0 where the paper reports no difference.
    EffectThePaperLacks,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::SameDirection => "same direction as the paper",
            Verdict::Opposite => "opposite to the paper",
            Verdict::WithinNoise => "within noise",
            Verdict::EffectThePaperLacks => "an effect the paper does not report",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn mean_and_sample_std_by_hand() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        // deviations ±1.5, ±0.5: (2.25 + 0.25) * 2 / 3 = 5/3
        assert_eq!((s.n, s.mean), (4, 2.5));
        assert!(close(s.std, (5.0f64 / 3.0).sqrt(), 1e-12));
        assert_eq!(Summary::of(&[7.0]).unwrap().std, 0.0);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        assert_eq!(
            (t_975(1), t_975(2), t_975(10), t_975(30)),
            (12.706, 4.303, 2.228, 2.042)
        );
        // exact values: 2.0211 (40), 2.0003 (60), 1.9799 (120)
        assert!(close(t_975(40), 2.0211, 2e-4));
        assert!(close(t_975(60), 2.0003, 2e-4));
        assert!(close(t_975(120), 1.9799, 2e-4));
        assert!(t_975(0).is_infinite());
    }

    #[test]
    fn paired_intervals_and_verdicts_by_hand() {
        // d = 1.1, 0.8, 0.4: mean 0.76667, sd sqrt(0.246667 / 2) = 0.351188,
        // half width 4.303 * 0.351188 / sqrt(3) = 0.872471
        let d = PairedDifference::of(&[90.1, 91.0, 89.5], &[89.0, 90.2, 89.1]).unwrap();
        assert!(close(d.mean, 0.766_667, 1e-5));
        assert!(
            close(d.low, 0.766_667 - 0.872_471, 1e-5) && close(d.high, 0.766_667 + 0.872_471, 1e-5)
        );
        assert_eq!(d.verdict(1.7), Verdict::WithinNoise);
        // d = 1.1, 1.0, 1.2: mean 1.1, sd 0.1, half width 4.303 * 0.1 / sqrt(3) = 0.248434
        let d = PairedDifference::of(&[2.1, 2.0, 2.2], &[1.0, 1.0, 1.0]).unwrap();
        assert!(close(d.low, 0.851_566, 1e-5) && close(d.high, 1.348_434, 1e-5));
        assert_eq!(d.verdict(1.7), Verdict::SameDirection);
        assert_eq!(d.verdict(-0.4), Verdict::Opposite);
        assert_eq!(d.verdict(0.0), Verdict::EffectThePaperLacks);
        assert_eq!(d.verdict(-0.4).to_string(), "opposite to the paper");
        assert!(PairedDifference::of(&[1.0], &[0.0]).is_none());
        assert!(PairedDifference::of(&[1.0, 2.0], &[0.0]).is_none());
    }
}
