//! Geometric transforms. Each one draws a [`Plan`] (a list of pad / crop / resize / flip steps)
//! from the image size and the generator, so the same plan can be applied to an image
//! (bilinear, fill 0) and to its label map (nearest, fill = ignore index): see
//! [`super::seg::Joint`].

use crate::error::{DataError, Result};
use crate::image::{self, Image};
use vt_ops::Rng;

/// One primitive step of a geometric plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Pad {
        left: usize,
        top: usize,
        right: usize,
        bottom: usize,
    },
    Crop {
        x: usize,
        y: usize,
        width: usize,
        height: usize,
    },
    Resize {
        width: usize,
        height: usize,
    },
    HFlip,
}

pub type Plan = Vec<Step>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    /// Antialiased bilinear (images).
    Bilinear,
    /// Centre-aligned nearest neighbour (label maps; see [`image::nearest_exact_indices`]).
    Nearest,
}

/// Applies a plan. `fill` is the value of padded pixels. A resize to the image's own size and a
/// crop of the whole image are identities and cost nothing, so a pipeline may fit every image
/// to the model's input without slowing the images that already fit.
pub fn run_plan(mut img: Image, plan: &[Step], interp: Interp, fill: u8) -> Image {
    for step in plan {
        img = match *step {
            Step::Resize { width, height }
            | Step::Crop {
                x: 0,
                y: 0,
                width,
                height,
            } if (width, height) == (img.width, img.height) => img,
            Step::Pad {
                left,
                top,
                right,
                bottom,
            } => image::pad(&img, left, top, right, bottom, fill),
            Step::Crop {
                x,
                y,
                width,
                height,
            } => image::crop(&img, x, y, width, height),
            Step::Resize { width, height } => match interp {
                Interp::Bilinear => image::resize_bilinear(&img, width, height),
                Interp::Nearest => Image {
                    data: image::resize_nearest_raw(
                        &img.data,
                        (img.width, img.height, img.channels),
                        width,
                        height,
                    ),
                    width,
                    height,
                    channels: img.channels,
                },
            },
            Step::HFlip => image::hflip(&img),
        };
    }
    img
}

/// A transform that only moves pixels. Implementors get [`super::Transform`] for free
/// (bilinear, fill 0 or their own fill) and a joint version for segmentation.
pub trait Geometric: Send + Sync {
    const NAME: &'static str;
    fn plan(&self, width: usize, height: usize, rng: &mut Rng) -> Result<Plan>;
    /// Fill value for padded image pixels.
    fn fill(&self) -> u8 {
        0
    }
}

/// Python's `round` (half to even), which torchvision's size arithmetic uses.
fn py_round(v: f64) -> usize {
    v.round_ties_even().max(0.0) as usize
}

/// torchvision's `RandomResizedCrop`: a crop of random area fraction in `scale` and aspect
/// ratio in `ratio` (log-uniform), 10 tries, then the central-crop fallback; resized to `size`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomResizedCrop {
    /// (height, width) of the output.
    pub size: (usize, usize),
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// Square output with torchvision's defaults: scale (0.08, 1), ratio (3/4, 4/3).
    pub fn new(size: usize) -> Self {
        Self {
            size: (size, size),
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }

    /// The crop box `(x, y, w, h)`, exactly torchvision's `get_params`.
    pub fn crop_box(
        &self,
        width: usize,
        height: usize,
        rng: &mut Rng,
    ) -> (usize, usize, usize, usize) {
        let area = (width * height) as f64;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * (self.scale.0 + (self.scale.1 - self.scale.0) * rng.uniform());
            let aspect = (lr0 + (lr1 - lr0) * rng.uniform()).exp();
            let w = py_round((target * aspect).sqrt());
            let h = py_round((target / aspect).sqrt());
            if 0 < w && w <= width && 0 < h && h <= height {
                let y = rng.below((height - h + 1) as u64) as usize;
                let x = rng.below((width - w + 1) as u64) as usize;
                return (x, y, w, h);
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (lo, hi) = (
            self.ratio.0.min(self.ratio.1),
            self.ratio.0.max(self.ratio.1),
        );
        let (w, h) = if in_ratio < lo {
            (width, py_round(width as f64 / lo))
        } else if in_ratio > hi {
            (py_round(height as f64 * hi), height)
        } else {
            (width, height)
        };
        ((width - w) / 2, (height - h) / 2, w, h)
    }
}

impl Geometric for RandomResizedCrop {
    const NAME: &'static str = "RandomResizedCrop";
    fn plan(&self, width: usize, height: usize, rng: &mut Rng) -> Result<Plan> {
        if width == 0 || height == 0 {
            return Err(DataError::transform(Self::NAME, "empty image"));
        }
        let (x, y, w, h) = self.crop_box(width, height, rng);
        Ok(vec![
            Step::Crop {
                x,
                y,
                width: w,
                height: h,
            },
            Step::Resize {
                width: self.size.1,
                height: self.size.0,
            },
        ])
    }
}

/// Mirrors left-right with probability `p`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomHorizontalFlip {
    pub p: f64,
}

impl Default for RandomHorizontalFlip {
    fn default() -> Self {
        Self { p: 0.5 }
    }
}

impl Geometric for RandomHorizontalFlip {
    const NAME: &'static str = "RandomHorizontalFlip";
    fn plan(&self, _: usize, _: usize, rng: &mut Rng) -> Result<Plan> {
        Ok(if rng.uniform() < self.p {
            vec![Step::HFlip]
        } else {
            vec![]
        })
    }
}

/// Resizes so that the shorter side is `shorter` (torchvision's `Resize(int)`; the longer side
/// is `int(shorter · long / short)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resize {
    pub shorter: usize,
}

impl Geometric for Resize {
    const NAME: &'static str = "Resize";
    fn plan(&self, width: usize, height: usize, _: &mut Rng) -> Result<Plan> {
        if width == 0 || height == 0 || self.shorter == 0 {
            return Err(DataError::transform(
                Self::NAME,
                format!(
                    "cannot resize {width}x{height} to shorter side {}",
                    self.shorter
                ),
            ));
        }
        let (w, h) = if width <= height {
            (self.shorter, self.shorter * height / width)
        } else {
            (self.shorter * width / height, self.shorter)
        };
        Ok(vec![Step::Resize {
            width: w,
            height: h,
        }])
    }
}

/// Central crop of `size = (height, width)`; an image smaller than the crop is zero-padded
/// first, as torchvision does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CenterCrop {
    pub size: (usize, usize),
}

impl Geometric for CenterCrop {
    const NAME: &'static str = "CenterCrop";
    fn plan(&self, width: usize, height: usize, _: &mut Rng) -> Result<Plan> {
        let (ch, cw) = self.size;
        let mut plan = vec![];
        let (mut w, mut h) = (width, height);
        if cw > w || ch > h {
            let (pw, ph) = (cw.saturating_sub(w), ch.saturating_sub(h));
            plan.push(Step::Pad {
                left: pw / 2,
                top: ph / 2,
                right: pw.div_ceil(2),
                bottom: ph.div_ceil(2),
            });
            w += pw;
            h += ph;
        }
        plan.push(Step::Crop {
            x: py_round((w - cw) as f64 / 2.0),
            y: py_round((h - ch) as f64 / 2.0),
            width: cw,
            height: ch,
        });
        Ok(plan)
    }
}

/// Constant padding on every side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pad {
    pub padding: usize,
    pub fill: u8,
}

impl Geometric for Pad {
    const NAME: &'static str = "Pad";
    fn plan(&self, _: usize, _: usize, _: &mut Rng) -> Result<Plan> {
        let p = self.padding;
        Ok(vec![Step::Pad {
            left: p,
            top: p,
            right: p,
            bottom: p,
        }])
    }
    fn fill(&self) -> u8 {
        self.fill
    }
}

/// torchvision's `RandomCrop(size, padding)`: optional constant padding, then a uniformly
/// placed crop of `size = (height, width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RandomCrop {
    pub size: (usize, usize),
    pub padding: usize,
    pub fill: u8,
}

impl RandomCrop {
    /// The CIFAR/Fashion-MNIST recipe: pad by `padding`, crop back to `size × size`.
    pub fn padded(size: usize, padding: usize) -> Self {
        Self {
            size: (size, size),
            padding,
            fill: 0,
        }
    }
}

impl Geometric for RandomCrop {
    const NAME: &'static str = "RandomCrop";
    fn plan(&self, width: usize, height: usize, rng: &mut Rng) -> Result<Plan> {
        let p = self.padding;
        let (w, h) = (width + 2 * p, height + 2 * p);
        let (ch, cw) = self.size;
        if cw > w || ch > h {
            return Err(DataError::transform(
                Self::NAME,
                format!("crop {cw}x{ch} is larger than the padded image {w}x{h}"),
            ));
        }
        let mut plan = vec![];
        if p > 0 {
            plan.push(Step::Pad {
                left: p,
                top: p,
                right: p,
                bottom: p,
            });
        }
        let y = rng.below((h - ch + 1) as u64) as usize;
        let x = rng.below((w - cw + 1) as u64) as usize;
        plan.push(Step::Crop {
            x,
            y,
            width: cw,
            height: ch,
        });
        Ok(plan)
    }
    fn fill(&self) -> u8 {
        self.fill
    }
}

/// Scales both sides by one factor drawn uniformly from `range` (mmseg's `ratio_range`,
/// detectron2's `ResizeScale` without its target size): `round(side · f)`, at least 1 px.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomScale {
    pub range: (f64, f64),
}

impl RandomScale {
    pub fn new(lo: f64, hi: f64) -> Result<Self> {
        let s = Self { range: (lo, hi) };
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<()> {
        let (lo, hi) = self.range;
        if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
            return Err(DataError::transform(
                Self::NAME,
                format!("scale range must satisfy 0 < lo <= hi, got ({lo}, {hi})"),
            ));
        }
        Ok(())
    }
}

impl Geometric for RandomScale {
    const NAME: &'static str = "RandomScale";
    fn plan(&self, width: usize, height: usize, rng: &mut Rng) -> Result<Plan> {
        self.check()?;
        if width == 0 || height == 0 {
            return Err(DataError::transform(Self::NAME, "empty image"));
        }
        let (lo, hi) = self.range;
        let f = lo + (hi - lo) * rng.uniform();
        let side = |n: usize| ((n as f64 * f).round() as usize).max(1);
        Ok(vec![Step::Resize {
            width: side(width),
            height: side(height),
        }])
    }
}

/// A uniformly placed crop of at most `size = (height, width)`: an axis shorter than the crop
/// is kept whole (mmseg's `RandomCrop`, without its category-ratio retries). Follow it with
/// [`super::seg::PadTo::Size`], which pads after normalising, as mmseg and detectron2 do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClippedRandomCrop {
    pub size: (usize, usize),
}

impl Geometric for ClippedRandomCrop {
    const NAME: &'static str = "ClippedRandomCrop";
    fn plan(&self, width: usize, height: usize, rng: &mut Rng) -> Result<Plan> {
        let (ch, cw) = (self.size.0.min(height), self.size.1.min(width));
        if ch == 0 || cw == 0 {
            return Err(DataError::transform(
                Self::NAME,
                format!(
                    "cannot crop {}x{} (HxW) from {height}x{width}",
                    self.size.0, self.size.1
                ),
            ));
        }
        let y = rng.below((height - ch + 1) as u64) as usize;
        let x = rng.below((width - cw + 1) as u64) as usize;
        Ok(vec![Step::Crop {
            x,
            y,
            width: cw,
            height: ch,
        }])
    }
}
