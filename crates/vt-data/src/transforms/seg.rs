//! Joint transforms of segmentation samples: one geometric plan, bilinear for the image and
//! nearest for the label map, padding the label map with the ignore index; and
//! [`SegPipeline`], with the training and evaluation recipes of semantic FPN.

use super::geometric::{
    run_plan, ClippedRandomCrop, Geometric, Interp, RandomHorizontalFlip, RandomScale,
};
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

/// Right/bottom padding applied after `ToTensor` + `Normalize`: image pixels 0.0 (the mean
/// colour once normalised), labels [`crate::seg::IGNORE_INDEX`]. detectron2 (`ImageList`) and
/// mmseg (`Pad` after `Normalize`, or `SegDataPreProcessor`) pad the same way; the loader
/// pads the images of a mixed-size batch with the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadTo {
    /// At least `(height, width)`: the crop size of a training pipeline.
    Size(usize, usize),
    /// Up to the next multiple of the divisor (detectron2's `size_divisibility`).
    Multiple(usize),
}

impl PadTo {
    /// The padded `(height, width)` of an image of `(height, width)`.
    pub fn target(self, height: usize, width: usize) -> (usize, usize) {
        match self {
            PadTo::Size(h, w) => (height.max(h), width.max(w)),
            PadTo::Multiple(d) => {
                let d = d.max(1);
                (height.div_ceil(d) * d, width.div_ceil(d) * d)
            }
        }
    }
}

/// Segmentation: joint transforms, then `ToTensor` (+ `Normalize`) on the image, then the
/// optional [`PadTo`]; the target is the label map.
#[derive(Default)]
pub struct SegPipeline {
    pub transforms: Vec<Box<dyn SegTransform>>,
    pub normalize: Option<Normalize>,
    pub pad: Option<PadTo>,
}

impl SegPipeline {
    pub fn then(mut self, t: impl SegTransform + 'static) -> Self {
        self.transforms.push(Box::new(t));
        self
    }

    /// The training recipe (mmseg's semantic FPN, detectron2's multi-scale crop): random scale
    /// by a factor uniform in `scale` (image bilinear, labels nearest), a random crop of at
    /// most `crop = (height, width)`, a horizontal flip with p = 0.5, then padding to `crop`
    /// where the scaled image was smaller. Every step moves image and labels with one draw.
    pub fn train(
        crop: (usize, usize),
        scale: (f64, f64),
        normalize: Option<Normalize>,
    ) -> Result<Self> {
        if crop.0 == 0 || crop.1 == 0 {
            return Err(DataError::Config(format!(
                "segmentation crop must be at least 1x1, got {}x{} (HxW)",
                crop.0, crop.1
            )));
        }
        Ok(Self {
            normalize,
            pad: Some(PadTo::Size(crop.0, crop.1)),
            ..Self::default()
        }
        .then(Joint::new(RandomScale::new(scale.0, scale.1)?))
        .then(Joint::new(ClippedRandomCrop { size: crop }))
        .then(Joint::new(RandomHorizontalFlip::default())))
    }

    /// The evaluation recipe: the whole image, padded on the right and bottom to a multiple
    /// of `size_divisibility` (32 for a stride-32 trunk; 1 pads nothing).
    pub fn eval(size_divisibility: usize, normalize: Option<Normalize>) -> Result<Self> {
        if size_divisibility == 0 {
            return Err(DataError::Config(
                "size_divisibility must be at least 1".into(),
            ));
        }
        Ok(Self {
            normalize,
            pad: Some(PadTo::Multiple(size_divisibility)),
            ..Self::default()
        })
    }
}

impl Prepare<SegSample> for SegPipeline {
    fn prepare(&self, mut s: SegSample, rng: &mut Rng) -> Result<Prepared> {
        for t in &self.transforms {
            s = t.apply(s, rng)?;
        }
        if (s.image.width, s.image.height) != (s.label.width, s.label.height) {
            return Err(DataError::transform(
                "SegPipeline",
                format!(
                    "label map {}x{} does not match its image {}x{}",
                    s.label.width, s.label.height, s.image.width, s.image.height
                ),
            ));
        }
        let mut x = ToTensor.apply(&s.image);
        if let Some(n) = &self.normalize {
            x = n.apply(x)?;
        }
        let mut label = s.label;
        if let Some(pad) = self.pad {
            let (h, w) = pad.target(x.height, x.width);
            x = x.pad_to(h, w, 0.0);
            label = label.pad_to(h, w, crate::seg::IGNORE_INDEX);
        }
        Ok(Prepared {
            image: x,
            target: Target::Map(label),
        })
    }
}
