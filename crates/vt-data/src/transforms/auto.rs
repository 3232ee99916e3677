//! AutoAugment (ImageNet policy) and RandAugment, drawing as torchvision v2 does.

use super::ops::{apply_op, AugOp};
use super::policy::{is_signed, magnitudes, PolicyOp, IMAGENET_POLICY, RANDAUGMENT_OPS};
use super::Transform;
use crate::error::{DataError, Result};
use crate::image::Image;
use vt_ops::Rng;

/// Draws the signed magnitude of `op` at `bin` (0 for ops without magnitude).
fn signed_magnitude(op: AugOp, bin: usize, bins: usize, img: &Image, rng: &mut Rng) -> f64 {
    match magnitudes(op, bins, img.height, img.width) {
        Some(table) => {
            let m = table[bin.min(bins - 1)];
            if is_signed(op) && rng.uniform() <= 0.5 {
                -m
            } else {
                m
            }
        }
        None => 0.0,
    }
}

/// `torchvision.transforms.v2.AutoAugment(AutoAugmentPolicy.IMAGENET)`: one of the 25
/// sub-policies uniformly; each of its two ops runs with its probability at its magnitude bin
/// (10 bins), with a random sign for signed ops. Nearest interpolation, fill 0.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoAugment {
    pub policy: Vec<[PolicyOp; 2]>,
}

impl AutoAugment {
    pub fn imagenet() -> Self {
        Self {
            policy: IMAGENET_POLICY.to_vec(),
        }
    }
}

impl Transform for AutoAugment {
    fn apply(&self, mut img: Image, rng: &mut Rng) -> Result<Image> {
        if self.policy.is_empty() {
            return Err(DataError::transform("AutoAugment", "empty policy"));
        }
        let sub = &self.policy[rng.below(self.policy.len() as u64) as usize];
        for &(op, p, bin) in sub {
            if rng.uniform() > p {
                continue;
            }
            let m = match bin {
                Some(b) => signed_magnitude(op, b, 10, &img, rng),
                None => 0.0,
            };
            img = apply_op(&img, op, m)?;
        }
        Ok(img)
    }
}

/// `torchvision.transforms.v2.RandAugment(num_ops, magnitude, num_magnitude_bins)`: `num_ops`
/// ops drawn uniformly (with replacement) from the 14 of [`RANDAUGMENT_OPS`], each at bin
/// `magnitude` with a random sign for signed ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RandAugment {
    pub num_ops: usize,
    pub magnitude: usize,
    pub num_magnitude_bins: usize,
}

impl RandAugment {
    /// torchvision's defaults: N = 2, M = 9 of 31 bins.
    pub fn new(num_ops: usize, magnitude: usize) -> Self {
        Self {
            num_ops,
            magnitude,
            num_magnitude_bins: 31,
        }
    }
}

impl Transform for RandAugment {
    fn apply(&self, mut img: Image, rng: &mut Rng) -> Result<Image> {
        if self.magnitude >= self.num_magnitude_bins {
            return Err(DataError::transform(
                "RandAugment",
                format!(
                    "magnitude {} is outside 0..{} bins",
                    self.magnitude, self.num_magnitude_bins
                ),
            ));
        }
        for _ in 0..self.num_ops {
            let op = RANDAUGMENT_OPS[rng.below(RANDAUGMENT_OPS.len() as u64) as usize];
            let m = signed_magnitude(op, self.magnitude, self.num_magnitude_bins, &img, rng);
            img = apply_op(&img, op, m)?;
        }
        Ok(img)
    }
}
