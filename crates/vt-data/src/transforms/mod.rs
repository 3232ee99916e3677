//! Transforms: typed structs whose randomness comes from a `&mut Rng` argument.
//!
//! * [`Transform`]: `Image -> Image` (HWC `u8`); chained by [`Compose`].
//! * geometric ([`geometric`]): `RandomResizedCrop`, `RandomHorizontalFlip`, `Resize`,
//!   `CenterCrop`, `Pad`, `RandomCrop`, all as torchvision defines them; `RandomScale` and
//!   `ClippedRandomCrop` (mmseg's) for segmentation;
//! * photometric: [`GrayscaleToRgb`], [`auto::AutoAugment`], [`auto::RandAugment`]
//!   (ops in [`ops`], tables in [`policy`]);
//! * the end of a pipeline: [`ToTensor`] (CHW `f32` in [0, 1]) and [`Normalize`];
//! * segmentation: [`seg::Joint`] applies one geometric plan to an image and its label map;
//!   [`seg::SegPipeline::train`] / [`seg::SegPipeline::eval`] are the recipes, padding after
//!   `Normalize` ([`seg::PadTo`]).
//!
//! A loader turns samples into tensors through [`Prepare`]: [`Pipeline`] for classification,
//! [`seg::SegPipeline`] for segmentation.

pub mod auto;
pub mod geometric;
pub mod ops;
pub mod policy;
pub mod seg;

use crate::dataset::ClassSample;
use crate::error::{DataError, Result};
use crate::image::{FloatImage, Image, LabelMap};
use geometric::{run_plan, Geometric, Interp};
use vt_ops::Rng;

/// An image-to-image transform. Randomness comes only from `rng`.
pub trait Transform: Send + Sync {
    fn apply(&self, img: Image, rng: &mut Rng) -> Result<Image>;
}

impl<G: Geometric> Transform for G {
    fn apply(&self, img: Image, rng: &mut Rng) -> Result<Image> {
        let plan = self.plan(img.width, img.height, rng)?;
        Ok(run_plan(img, &plan, Interp::Bilinear, self.fill()))
    }
}

/// Transforms applied in order.
#[derive(Default)]
pub struct Compose(pub Vec<Box<dyn Transform>>);

impl Compose {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Appends a transform (builder style).
    pub fn then(mut self, t: impl Transform + 'static) -> Self {
        self.0.push(Box::new(t));
        self
    }
}

impl Transform for Compose {
    fn apply(&self, mut img: Image, rng: &mut Rng) -> Result<Image> {
        for t in &self.0 {
            img = t.apply(img, rng)?;
        }
        Ok(img)
    }
}

/// Replicates a grayscale image to 3 channels (RGB images pass unchanged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrayscaleToRgb;

impl Transform for GrayscaleToRgb {
    fn apply(&self, img: Image, _: &mut Rng) -> Result<Image> {
        match img.channels {
            3 => Ok(img),
            1 => Ok(Image {
                data: img.data.iter().flat_map(|&v| [v, v, v]).collect(),
                channels: 3,
                ..img
            }),
            c => Err(DataError::transform(
                "GrayscaleToRgb",
                format!("expected 1 or 3 channels, got {c}"),
            )),
        }
    }
}

/// HWC `u8` → CHW `f32` scaled to [0, 1] (torchvision's `ToTensor`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ToTensor;

impl ToTensor {
    pub fn apply(&self, img: &Image) -> FloatImage {
        let (w, h, c) = (img.width, img.height, img.channels);
        let mut data = vec![0f32; w * h * c];
        for (p, px) in img.data.chunks_exact(c).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                data[ch * w * h + p] = v as f32 / 255.0;
            }
        }
        FloatImage {
            channels: c,
            height: h,
            width: w,
            data,
        }
    }
}

/// Per-channel `(x − mean) / std` on a CHW float image.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.len() != std.len() || mean.is_empty() || std.iter().any(|&s| s <= 0.0) {
            return Err(DataError::transform(
                "Normalize",
                format!("need one positive std per mean, got mean {mean:?}, std {std:?}"),
            ));
        }
        Ok(Self { mean, std })
    }

    pub fn imagenet() -> Self {
        Self {
            mean: Self::IMAGENET_MEAN.to_vec(),
            std: Self::IMAGENET_STD.to_vec(),
        }
    }

    pub fn apply(&self, mut x: FloatImage) -> Result<FloatImage> {
        if x.channels != self.mean.len() {
            return Err(DataError::transform(
                "Normalize",
                format!(
                    "image has {} channels, mean/std have {}",
                    x.channels,
                    self.mean.len()
                ),
            ));
        }
        let plane = x.width * x.height;
        for (c, chunk) in x.data.chunks_mut(plane).enumerate() {
            let (m, s) = (self.mean[c], self.std[c]);
            chunk.iter_mut().for_each(|v| *v = (*v - m) / s);
        }
        Ok(x)
    }
}

/// What a sample becomes before batching: a CHW float image and its target.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub image: FloatImage,
    pub target: Target,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Class(usize),
    Map(LabelMap),
}

/// Turns one sample into a [`Prepared`] one; the loader calls it with the sample's own
/// generator `Rng::derive(seed, &[epoch, index])`.
pub trait Prepare<S>: Send + Sync {
    fn prepare(&self, sample: S, rng: &mut Rng) -> Result<Prepared>;
}

/// Classification: augmentations, then `ToTensor`, then an optional `Normalize`.
#[derive(Default)]
pub struct Pipeline {
    pub augment: Compose,
    pub normalize: Option<Normalize>,
}

impl Pipeline {
    pub fn new(augment: Compose, normalize: Option<Normalize>) -> Self {
        Self { augment, normalize }
    }
}

impl Prepare<ClassSample> for Pipeline {
    fn prepare(&self, sample: ClassSample, rng: &mut Rng) -> Result<Prepared> {
        let img = self.augment.apply(sample.image, rng)?;
        let mut x = ToTensor.apply(&img);
        if let Some(n) = &self.normalize {
            x = n.apply(x)?;
        }
        Ok(Prepared {
            image: x,
            target: Target::Class(sample.label),
        })
    }
}
