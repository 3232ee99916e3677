//! Learning-rate schedules as pure functions of the step (stateless, so resuming is trivial).
//!
//! A schedule is an optional linear warmup wrapped around one decay rule; the decay's clock
//! starts when the warmup ends. Decays are per epoch and staircase, as the paper's recipes:
//! step (÷10 every 30 epochs), exponential (×0.9875 per epoch), or cosine (continuous).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decay {
    Constant,
    /// `lr · gamma^floor(epoch / every_epochs)`.
    Step {
        gamma: f64,
        every_epochs: f64,
    },
    /// `lr · gamma^floor(epoch)`.
    Exponential {
        gamma: f64,
    },
    /// `min_lr + (lr − min_lr)·(1 + cos(π·epoch/epochs))/2`, continuous in the step.
    Cosine {
        min_lr: f64,
        epochs: f64,
    },
    /// `min_lr + (lr − min_lr)·(1 − epoch/epochs)^power`, continuous in the step: the
    /// segmentation schedule of mmseg / DeepLab (power 0.9).
    Poly {
        power: f64,
        min_lr: f64,
        epochs: f64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    /// Peak learning rate (reached at the end of the warmup).
    pub lr: f64,
    pub decay: Decay,
    pub warmup_epochs: f64,
    /// Learning rate at step 0 when there is a warmup.
    pub warmup_start_lr: f64,
}

impl LrSchedule {
    /// The paper's default recipe: 0.1, divided by 10 every 30 epochs.
    pub fn paper_default() -> Self {
        Self {
            lr: 0.1,
            decay: Decay::Step {
                gamma: 0.1,
                every_epochs: 30.0,
            },
            warmup_epochs: 0.0,
            warmup_start_lr: 0.0,
        }
    }

    /// The paper's advanced recipe: 0.01 → 0.16 over 5 warmup epochs, then ×0.9875 per epoch.
    pub fn paper_advanced() -> Self {
        Self {
            lr: 0.16,
            decay: Decay::Exponential { gamma: 0.9875 },
            warmup_epochs: 5.0,
            warmup_start_lr: 0.01,
        }
    }

    /// The schedule written for `reference_batch` at batch `batch`: every learning rate times
    /// `batch / reference_batch` (the linear scaling rule of Goyal et al., 2017).
    pub fn scaled_for_batch(self, reference_batch: usize, batch: usize) -> Self {
        let k = batch as f64 / reference_batch.max(1) as f64;
        Self {
            lr: self.lr * k,
            warmup_start_lr: self.warmup_start_lr * k,
            ..self
        }
    }

    /// Learning rate at `step` with `steps_per_epoch` steps per epoch.
    pub fn lr(&self, step: u64, steps_per_epoch: u64) -> f64 {
        let epoch = step as f64 / steps_per_epoch.max(1) as f64;
        if epoch < self.warmup_epochs {
            return self.warmup_start_lr
                + (self.lr - self.warmup_start_lr) * epoch / self.warmup_epochs;
        }
        let e = epoch - self.warmup_epochs;
        match self.decay {
            Decay::Constant => self.lr,
            Decay::Step {
                gamma,
                every_epochs,
            } => self.lr * gamma.powf((e / every_epochs + 1e-9).floor()),
            Decay::Exponential { gamma } => self.lr * gamma.powf((e + 1e-9).floor()),
            Decay::Cosine { min_lr, epochs } => {
                let t = (e / epochs).min(1.0);
                min_lr + (self.lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
            Decay::Poly {
                power,
                min_lr,
                epochs,
            } => {
                let t = (e / epochs).min(1.0);
                min_lr + (self.lr - min_lr) * (1.0 - t).powf(power)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn paper_default_divides_by_ten_every_30_epochs() {
        let s = LrSchedule::paper_default();
        let spe = 100;
        assert!(close(s.lr(0, spe), 0.1));
        assert!(close(s.lr(29 * spe + 99, spe), 0.1));
        assert!(close(s.lr(30 * spe, spe), 0.01));
        assert!(close(s.lr(60 * spe, spe), 0.001));
        assert!(close(s.lr(89 * spe, spe), 0.001));
    }

    #[test]
    fn linear_scaling_rule_scales_every_rate() {
        let s = LrSchedule::paper_advanced().scaled_for_batch(2048, 256);
        assert!(close(s.lr, 0.02) && close(s.warmup_start_lr, 0.00125));
        assert_eq!(s.decay, LrSchedule::paper_advanced().decay);
    }

    #[test]
    fn paper_advanced_warms_up_then_decays_per_epoch() {
        let s = LrSchedule::paper_advanced();
        let spe = 10;
        assert!(close(s.lr(0, spe), 0.01));
        assert!(close(s.lr(25, spe), 0.01 + 0.15 * 0.5)); // epoch 2.5 of 5
        assert!(close(s.lr(50, spe), 0.16));
        assert!(close(s.lr(59, spe), 0.16));
        assert!(close(s.lr(60, spe), 0.16 * 0.9875));
        assert!(close(s.lr(50 + 100 * spe, spe), 0.16 * 0.9875f64.powi(100)));
    }

    #[test]
    fn cosine_reaches_min_at_the_end() {
        let s = LrSchedule {
            lr: 1.0,
            decay: Decay::Cosine {
                min_lr: 0.1,
                epochs: 10.0,
            },
            warmup_epochs: 1.0,
            warmup_start_lr: 0.0,
        };
        assert!(close(s.lr(5, 10), 0.5));
        assert!(close(s.lr(10, 10), 1.0));
        assert!(close(s.lr(60, 10), 0.55));
        assert!(close(s.lr(110, 10), 0.1));
        assert!(close(s.lr(500, 10), 0.1));
    }

    #[test]
    fn poly_decays_to_min_with_its_power() {
        let s = LrSchedule {
            lr: 0.02,
            decay: Decay::Poly {
                power: 0.9,
                min_lr: 1e-4,
                epochs: 4.0,
            },
            warmup_epochs: 0.0,
            warmup_start_lr: 0.0,
        };
        assert!(close(s.lr(0, 10), 0.02));
        assert!(close(s.lr(20, 10), 1e-4 + (0.02 - 1e-4) * 0.5f64.powf(0.9)));
        assert!(close(s.lr(40, 10), 1e-4));
        assert!(close(s.lr(90, 10), 1e-4));
    }
}
