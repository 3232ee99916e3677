//! The 14 image operations of AutoAugment / RandAugment (plus `Identity`), with the semantics
//! of torchvision's `transforms.v2.functional` on `uint8` tensors: float32 arithmetic,
//! truncation where torchvision casts back to `uint8`, rounding where it rounds, nearest
//! sampling with fill 0 for the geometric ones.
//!
//! The reference test (`tests/augment_reference.rs`) finds every op bit-exact on its images.
//! Where torchvision's kernels add with `alpha` (blends, sharpness) we use a fused
//! multiply-add, as its vectorised CPU kernels do.

use crate::error::{DataError, Result};
use crate::image::Image;

/// The operations, named as in torchvision's `_AUGMENTATION_SPACE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AugOp {
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
    Invert,
}

impl AugOp {
    pub fn name(self) -> &'static str {
        match self {
            AugOp::Identity => "Identity",
            AugOp::ShearX => "ShearX",
            AugOp::ShearY => "ShearY",
            AugOp::TranslateX => "TranslateX",
            AugOp::TranslateY => "TranslateY",
            AugOp::Rotate => "Rotate",
            AugOp::Brightness => "Brightness",
            AugOp::Color => "Color",
            AugOp::Contrast => "Contrast",
            AugOp::Sharpness => "Sharpness",
            AugOp::Posterize => "Posterize",
            AugOp::Solarize => "Solarize",
            AugOp::AutoContrast => "AutoContrast",
            AugOp::Equalize => "Equalize",
            AugOp::Invert => "Invert",
        }
    }

    pub fn from_name(name: &str) -> Option<AugOp> {
        use AugOp::*;
        [
            Identity,
            ShearX,
            ShearY,
            TranslateX,
            TranslateY,
            Rotate,
            Brightness,
            Color,
            Contrast,
            Sharpness,
            Posterize,
            Solarize,
            AutoContrast,
            Equalize,
            Invert,
        ]
        .into_iter()
        .find(|o| o.name() == name)
    }
}

/// Applies `op` with a signed `magnitude`, exactly as torchvision's
/// `_apply_image_or_video_transform` interprets it (Solarize: threshold = 255 · magnitude).
pub fn apply_op(img: &Image, op: AugOp, magnitude: f64) -> Result<Image> {
    if img.channels != 1 && img.channels != 3 {
        return Err(DataError::transform(
            "AutoAugment",
            format!("{} needs 1 or 3 channels, got {}", op.name(), img.channels),
        ));
    }
    let deg = |m: f64| m.atan().to_degrees();
    Ok(match op {
        AugOp::Identity => img.clone(),
        AugOp::ShearX => affine(img, 0.0, [0.0, 0.0], [deg(magnitude), 0.0], true),
        AugOp::ShearY => affine(img, 0.0, [0.0, 0.0], [0.0, deg(magnitude)], true),
        AugOp::TranslateX => affine(img, 0.0, [magnitude.trunc(), 0.0], [0.0, 0.0], false),
        AugOp::TranslateY => affine(img, 0.0, [0.0, magnitude.trunc()], [0.0, 0.0], false),
        AugOp::Rotate => rotate(img, magnitude),
        AugOp::Brightness => brightness(img, 1.0 + magnitude),
        AugOp::Color => saturation(img, 1.0 + magnitude),
        AugOp::Contrast => contrast(img, 1.0 + magnitude),
        AugOp::Sharpness => sharpness(img, 1.0 + magnitude),
        AugOp::Posterize => posterize(img, magnitude.trunc().clamp(0.0, 8.0) as u32),
        AugOp::Solarize => solarize(img, 255.0 * magnitude),
        AugOp::AutoContrast => autocontrast(img),
        AugOp::Equalize => equalize(img),
        AugOp::Invert => map(img, |v| 255 - v),
    })
}

fn map(img: &Image, f: impl Fn(u8) -> u8) -> Image {
    Image {
        data: img.data.iter().map(|&v| f(v)).collect(),
        ..*img
    }
}

/// float32 → uint8 as torchvision's `clamp_(0, 255).to(uint8)` (truncation).
#[inline]
fn to_u8(v: f32) -> u8 {
    v.clamp(0.0, 255.0) as u8
}

/// torchvision's `_get_inverse_affine_matrix` (computed in f64, as Python does).
pub fn inverse_affine_matrix(
    center: [f64; 2],
    angle: f64,
    translate: [f64; 2],
    scale: f64,
    shear: [f64; 2],
) -> [f64; 6] {
    let rot = angle.to_radians();
    let (sx, sy) = (shear[0].to_radians(), shear[1].to_radians());
    let (cx, cy) = (center[0], center[1]);
    let (tx, ty) = (translate[0], translate[1]);
    let cos_sy = sy.cos();
    let tan_sx = sx.tan();
    let a = (rot - sy).cos() / cos_sy;
    let b = -(a * tan_sx + rot.sin());
    let c = (rot - sy).sin() / cos_sy;
    let d = rot.cos() - c * tan_sx;
    let mut m = [d / scale, -b / scale, 0.0, -c / scale, a / scale, 0.0];
    m[2] += cx - m[0] * (cx + tx) - m[1] * (cy + ty);
    m[5] += cy - m[3] * (cx + tx) - m[4] * (cy + ty);
    m
}

/// `F.affine` on a uint8 tensor with nearest sampling and zero fill. `corner_center` is
/// AutoAugment's `center=[0, 0]` (shears about the top-left corner); otherwise the centre.
fn affine(
    img: &Image,
    angle: f64,
    translate: [f64; 2],
    shear: [f64; 2],
    corner_center: bool,
) -> Image {
    let (w, h) = (img.width as f64, img.height as f64);
    let center = if corner_center {
        [-w * 0.5, -h * 0.5]
    } else {
        [0.0, 0.0]
    };
    let m = inverse_affine_matrix(center, angle, translate, 1.0, shear);
    grid_sample_nearest(img, m)
}

/// `F.rotate` (no expand, centre of the image, nearest, zero fill).
fn rotate(img: &Image, angle: f64) -> Image {
    let m = inverse_affine_matrix([0.0, 0.0], -angle, [0.0, 0.0], 1.0, [0.0, 0.0]);
    grid_sample_nearest(img, m)
}

/// torchvision's `_affine_grid` followed by `grid_sample(mode="nearest",
/// align_corners=False)`, in float32 like torchvision: output pixel centres relative to the
/// image centre go through `theta`, are normalised by half the size, then unnormalised with
/// `((g + 1)·size − 1) / 2` and rounded half to even.
fn grid_sample_nearest(img: &Image, m: [f64; 6]) -> Image {
    let (w, h, c) = (img.width, img.height, img.channels);
    let (hw, hh) = (0.5 * w as f32, 0.5 * h as f32);
    let t: Vec<f32> = m.iter().map(|&v| v as f32).collect();
    let (ax, bx, cx) = (t[0] / hw, t[1] / hw, t[2] / hw);
    let (ay, by, cy) = (t[3] / hh, t[4] / hh, t[5] / hh);
    let (wf, hf) = (w as f32, h as f32);
    let mut out = vec![0u8; w * h * c];
    for y in 0..h {
        let yb = y as f32 - (h as f32 - 1.0) * 0.5;
        for x in 0..w {
            let xb = x as f32 - (w as f32 - 1.0) * 0.5;
            let gx = xb.mul_add(ax, yb.mul_add(bx, cx));
            let gy = xb.mul_add(ay, yb.mul_add(by, cy));
            let ix = (((gx + 1.0) * wf - 1.0) / 2.0).round_ties_even();
            let iy = (((gy + 1.0) * hf - 1.0) / 2.0).round_ties_even();
            if ix >= 0.0 && iy >= 0.0 && ix < wf && iy < hf {
                let src = (iy as usize * w + ix as usize) * c;
                out[(y * w + x) * c..(y * w + x + 1) * c].copy_from_slice(&img.data[src..src + c]);
            }
        }
    }
    Image { data: out, ..*img }
}

fn brightness(img: &Image, factor: f64) -> Image {
    let f = factor as f32;
    map(img, |v| to_u8(v as f32 * f))
}

/// `_blend(image, other, ratio)`: `image·ratio + other·(1 − ratio)`, truncated.
#[inline]
fn blend(v: u8, other: f32, ratio: f32, alpha: f32) -> u8 {
    to_u8(other.mul_add(alpha, v as f32 * ratio))
}

/// `_rgb_to_grayscale_image(..., preserve_dtype=False).floor_()` of one RGB pixel.
#[inline]
fn gray(px: &[u8]) -> f32 {
    let l = px[0] as f32 * 0.2989;
    let l = (px[1] as f32).mul_add(0.587, l);
    (px[2] as f32).mul_add(0.114, l).floor()
}

fn saturation(img: &Image, factor: f64) -> Image {
    if img.channels == 1 {
        return img.clone();
    }
    let (r, a) = (factor as f32, (1.0 - factor) as f32);
    let mut out = img.clone();
    for px in out.data.chunks_mut(3) {
        let g = gray(px);
        for v in px.iter_mut() {
            *v = blend(*v, g, r, a);
        }
    }
    out
}

fn contrast(img: &Image, factor: f64) -> Image {
    let sum: f64 = if img.channels == 3 {
        img.data.chunks(3).map(|px| gray(px) as f64).sum()
    } else {
        img.data.iter().map(|&v| v as f64).sum()
    };
    let mean = (sum / (img.width * img.height) as f64) as f32;
    let (r, a) = (factor as f32, (1.0 - factor) as f32);
    map(img, |v| blend(v, mean, r, a))
}

fn sharpness(img: &Image, factor: f64) -> Image {
    let (w, h, c) = (img.width, img.height, img.channels);
    if w <= 2 || h <= 2 {
        return img.clone();
    }
    let (ka, kb) = (1.0f32 / 13.0, 5.0f32 / 13.0);
    let alpha = (1.0 - factor) as f32;
    let mut out = img.clone();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for ch in 0..c {
                let mut acc = 0f32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        let v = img.at(x + dx - 1, y + dy - 1, ch) as f32;
                        acc += v * if dx == 1 && dy == 1 { kb } else { ka };
                    }
                }
                let blurred = acc.round_ties_even();
                let v = img.at(x, y, ch) as f32;
                out.data[(y * w + x) * c + ch] = to_u8((blurred - v).mul_add(alpha, v));
            }
        }
    }
    out
}

fn posterize(img: &Image, bits: u32) -> Image {
    if bits >= 8 {
        return img.clone();
    }
    let mask = (((1u32 << bits) - 1) << (8 - bits)) as u8;
    map(img, |v| v & mask)
}

fn solarize(img: &Image, threshold: f64) -> Image {
    let t = threshold as f32;
    map(img, |v| if v as f32 >= t { 255 - v } else { v })
}

fn autocontrast(img: &Image) -> Image {
    let c = img.channels;
    let mut out = img.clone();
    for ch in 0..c {
        let vals = img.data.iter().skip(ch).step_by(c);
        let (lo, hi) = vals.fold((255u8, 0u8), |(l, h), &v| (l.min(v), h.max(v)));
        let (min, inv_scale) = if lo == hi {
            (0.0f32, 1.0f32)
        } else {
            (lo as f32, (hi as f32 - lo as f32) * (1.0f32 / 255.0))
        };
        for v in out.data.iter_mut().skip(ch).step_by(c) {
            *v = to_u8((*v as f32 - min) / inv_scale);
        }
    }
    out
}

/// PIL's equalisation as torchvision reimplements it: per channel,
/// `lut[k] = (cum_hist[k-1] + step/2) / step` with `step = (pixels − count of the largest
/// value) / 255`; channels with `step == 0` are left as they are.
fn equalize(img: &Image) -> Image {
    let c = img.channels;
    let n = img.width * img.height;
    let mut out = img.clone();
    for ch in 0..c {
        let mut hist = [0usize; 256];
        for &v in img.data.iter().skip(ch).step_by(c) {
            hist[v as usize] += 1;
        }
        let last = (0..256).rev().find(|&k| hist[k] > 0).unwrap_or(0);
        let step = (n - hist[last]) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0u8; 256];
        let mut cum = 0usize;
        for k in 1..256 {
            cum += hist[k - 1];
            lut[k] = ((cum + step / 2) / step).min(255) as u8;
        }
        for v in out.data.iter_mut().skip(ch).step_by(c) {
            *v = lut[*v as usize];
        }
    }
    out
}
