//! Joint transforms of segmentation samples: one geometric plan, bilinear for the image and
//! nearest for the label map, padding the label map with the ignore index.

use super::geometric::{run_plan, Geometric, Interp};
use super::{Normalize, Prepare, Prepared, Target, ToTensor, Transform};
use crate::dataset::SegSample;
use crate::error::{DataError, Result};
use crate::image::LabelMap;
use vt_ops::Rng;

/// A transform of (image, label map) pairs.
pub trait SegTransform: Send + Sync {
    fn apply(&self, sample: SegSample, rng: &mut Rng) -> Result<SegSample>;
}

/// Applies a geometric transform to an image and its label map with the same random draw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Joint<G> {
    pub transform: G,
    /// Label of pixels created by padding.
    pub ignore_index: u8,
}

impl<G: Geometric> Joint<G> {
    pub fn new(transform: G) -> Self {
        Self {
            transform,
            ignore_index: crate::seg::IGNORE_INDEX,
        }
    }
}

impl<G: Geometric> SegTransform for Joint<G> {
    fn apply(&self, s: SegSample, rng: &mut Rng) -> Result<SegSample> {
        if (s.image.width, s.image.height) != (s.label.width, s.label.height) {
            return Err(DataError::transform(
                G::NAME,
                format!(
                    "label map {}x{} does not match its image {}x{}",
                    s.label.width, s.label.height, s.image.width, s.image.height
                ),
            ));
        }
        let plan = self.transform.plan(s.image.width, s.image.height, rng)?;
        let image = run_plan(s.image, &plan, Interp::Bilinear, self.transform.fill());
        let label = run_plan(
            s.label.as_image(),
            &plan,
            Interp::Nearest,
            self.ignore_index,
        );
        Ok(SegSample {
            image,
            label: LabelMap::from_image(label),
        })
    }
}

/// Applies a photometric (image-only) transform to the image of a pair.
pub struct ImageOnly<T>(pub T);

impl<T: Transform> SegTransform for ImageOnly<T> {
    fn apply(&self, s: SegSample, rng: &mut Rng) -> Result<SegSample> {
        Ok(SegSample {
            image: self.0.apply(s.image, rng)?,
            label: s.label,
        })
    }
}

/// Segmentation: joint transforms, then `ToTensor` (+ `Normalize`) on the image; the target is
/// the label map.
#[derive(Default)]
pub struct SegPipeline {
    pub transforms: Vec<Box<dyn SegTransform>>,
    pub normalize: Option<Normalize>,
}

impl SegPipeline {
    pub fn then(mut self, t: impl SegTransform + 'static) -> Self {
        self.transforms.push(Box::new(t));
        self
    }
}

impl Prepare<SegSample> for SegPipeline {
    fn prepare(&self, mut s: SegSample, rng: &mut Rng) -> Result<Prepared> {
        for t in &self.transforms {
            s = t.apply(s, rng)?;
        }
        let mut x = ToTensor.apply(&s.image);
        if let Some(n) = &self.normalize {
            x = n.apply(x)?;
        }
        Ok(Prepared {
            image: x,
            target: Target::Map(s.label),
        })
    }
}
