//! Pixel buffers: [`Image`] (HWC `u8`, what decoders produce and augmentations work on),
//! [`LabelMap`] (H×W class indices of a segmentation sample) and [`FloatImage`] (CHW `f32`, what
//! [`crate::transforms::ToTensor`] produces), plus decoding and the resampling kernels the
//! transforms share.

use crate::decode;
use crate::error::{DataError, Result};
use std::path::Path;

/// An 8-bit image, interleaved HWC (`data[(y * width + x) * channels + c]`), 1 or 3 channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// A segmentation label map: one class index per pixel, row-major (`255` is usually "ignore").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMap {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// A float image, planar CHW (`data[(c * height + y) * width + x]`): the output of `ToTensor`.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatImage {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Image {
    /// Checks that `data` holds `width * height * channels` bytes.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Result<Self> {
        if data.len() != width * height * channels {
            return Err(DataError::Config(format!(
                "image buffer of {} bytes does not fit {width}x{height}x{channels}",
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            channels,
            data,
        })
    }

    pub fn filled(width: usize, height: usize, channels: usize, value: u8) -> Self {
        Self {
            width,
            height,
            channels,
            data: vec![value; width * height * channels],
        }
    }

    #[inline]
    pub fn at(&self, x: usize, y: usize, c: usize) -> u8 {
        self.data[(y * self.width + x) * self.channels + c]
    }

    /// The mean of the channels per pixel (a 1-channel image stays as it is).
    pub fn to_grey(&self) -> Image {
        let data = self
            .data
            .chunks(self.channels.max(1))
            .map(|p| (p.iter().map(|&v| v as u32).sum::<u32>() / p.len() as u32) as u8)
            .collect();
        Image {
            channels: 1,
            data,
            ..self.clone()
        }
    }

    /// (height, width, channels), the order error messages use.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.height, self.width, self.channels)
    }

    /// Decodes JPEG or PNG bytes (from a parquet shard, an archive) into RGB, strictly;
    /// `origin` names them in errors.
    pub fn decode_rgb(bytes: &[u8], origin: &Path) -> Result<Self> {
        let d = decode::decode_rgb(origin, bytes)?;
        Ok(Self {
            width: d.width,
            height: d.height,
            channels: d.channels,
            data: d.data,
        })
    }

    /// Decodes a JPEG or PNG file into RGB (as torchvision's default loader does), strictly:
    /// a truncated or corrupt file is an error that names it (see [`crate::decode`]).
    pub fn open_rgb(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        Self::decode_rgb(&bytes, path)
    }
}

impl LabelMap {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if data.len() != width * height {
            return Err(DataError::Config(format!(
                "label map of {} bytes does not fit {width}x{height}",
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Reads a single-channel PNG label map: 8-bit grayscale or 8-bit palette (the palette
    /// *indices* are the labels, as in VOC-style annotations; colours are ignored).
    pub fn open_png(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let (d, info) = decode::decode_png_raw(path, &bytes)?;
        use png::{BitDepth, ColorType};
        match (info.color_type, info.bit_depth) {
            (ColorType::Grayscale | ColorType::Indexed, BitDepth::Eight) => {}
            (ct, bd) => {
                return Err(DataError::format(
                    path,
                    format!(
                        "label map must be an 8-bit grayscale or palette PNG, got {ct:?} at {bd:?} bits"
                    ),
                ))
            }
        }
        Self::new(d.width, d.height, d.data)
    }
}

/// Crops `(x, y, w, h)`; the window must lie inside the image (callers clip or pad first).
pub fn crop(img: &Image, x: usize, y: usize, w: usize, h: usize) -> Image {
    let c = img.channels;
    let mut data = Vec::with_capacity(w * h * c);
    for row in y..y + h {
        let start = (row * img.width + x) * c;
        data.extend_from_slice(&img.data[start..start + w * c]);
    }
    Image {
        width: w,
        height: h,
        channels: c,
        data,
    }
}

/// Mirrors left-right.
pub fn hflip(img: &Image) -> Image {
    let c = img.channels;
    let mut data = Vec::with_capacity(img.data.len());
    for row in img.data.chunks(img.width * c) {
        for px in row.chunks(c).rev() {
            data.extend_from_slice(px);
        }
    }
    Image { data, ..*img }
}

/// Pads by `(left, top, right, bottom)` with a constant.
pub fn pad(img: &Image, left: usize, top: usize, right: usize, bottom: usize, fill: u8) -> Image {
    let c = img.channels;
    let (w, h) = (img.width + left + right, img.height + top + bottom);
    let mut out = Image::filled(w, h, c, fill);
    for y in 0..img.height {
        let src = &img.data[y * img.width * c..(y + 1) * img.width * c];
        let dst = ((y + top) * w + left) * c;
        out.data[dst..dst + img.width * c].copy_from_slice(src);
    }
    out
}

/// One axis of a separable resampler: for each output index, the first source index and the
/// weights of the source indices that follow it.
struct Taps {
    start: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

/// Bilinear taps with antialiasing (the triangle filter stretched by the downscale factor), as
/// PIL and torchvision's `antialias=True` compute them: centre `(i + 0.5)·scale`, support
/// `max(scale, 1)`, weights normalised to sum 1.
fn bilinear_taps(n_in: usize, n_out: usize) -> Taps {
    let scale = n_in as f64 / n_out as f64;
    let support = scale.max(1.0);
    let mut start = Vec::with_capacity(n_out);
    let mut weights = Vec::with_capacity(n_out);
    for i in 0..n_out {
        let center = (i as f64 + 0.5) * scale;
        let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
        let hi = ((center + support + 0.5).floor() as usize).min(n_in);
        let mut w: Vec<f64> = (lo..hi)
            .map(|j| (1.0 - ((j as f64 + 0.5 - center) / support).abs()).max(0.0))
            .collect();
        let total: f64 = w.iter().sum();
        if total > 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
        start.push(lo);
        weights.push(w.into_iter().map(|v| v as f32).collect());
    }
    Taps { start, weights }
}

/// Antialiased bilinear resize of an 8-bit image to `(out_w, out_h)` (rounded to nearest).
pub fn resize_bilinear(img: &Image, out_w: usize, out_h: usize) -> Image {
    if img.width == out_w && img.height == out_h {
        return img.clone();
    }
    let c = img.channels;
    let tx = bilinear_taps(img.width, out_w);
    let ty = bilinear_taps(img.height, out_h);
    // horizontal pass into f32 rows, then vertical pass
    let mut tmp = vec![0f32; img.height * out_w * c];
    for y in 0..img.height {
        let src = &img.data[y * img.width * c..(y + 1) * img.width * c];
        let dst = &mut tmp[y * out_w * c..(y + 1) * out_w * c];
        for x in 0..out_w {
            let s = tx.start[x];
            for ch in 0..c {
                let mut acc = 0f32;
                for (k, &w) in tx.weights[x].iter().enumerate() {
                    acc += w * src[(s + k) * c + ch] as f32;
                }
                dst[x * c + ch] = acc;
            }
        }
    }
    let mut out = vec![0u8; out_w * out_h * c];
    let row = out_w * c;
    for y in 0..out_h {
        let s = ty.start[y];
        let dst = &mut out[y * row..(y + 1) * row];
        let mut acc = vec![0f32; row];
        for (k, &w) in ty.weights[y].iter().enumerate() {
            let src = &tmp[(s + k) * row..(s + k + 1) * row];
            for (a, &v) in acc.iter_mut().zip(src) {
                *a += w * v;
            }
        }
        for (d, a) in dst.iter_mut().zip(acc) {
            *d = a.round().clamp(0.0, 255.0) as u8;
        }
    }
    Image {
        width: out_w,
        height: out_h,
        channels: c,
        data: out,
    }
}

/// Source index of each output index for a centre-aligned nearest-neighbour resize:
/// `src = floor((dst + 0.5)·in/out)`, the source pixel under the output pixel's centre.
///
/// This is PIL's `NEAREST` (what detectron2 resizes label maps with) and PyTorch's
/// `nearest-exact`, not PyTorch's legacy `nearest` (`floor(dst·in/out)`): the legacy rule
/// shifts a downscaled label map by up to half a source pixel against the bilinear image,
/// whose filter is centred at `(dst + 0.5)·in/out` too. Both agree for integer upscaling.
pub fn nearest_exact_indices(n_in: usize, n_out: usize) -> Vec<usize> {
    (0..n_out)
        .map(|d| ((2 * d + 1) * n_in / (2 * n_out)).min(n_in.saturating_sub(1)))
        .collect()
}

/// Centre-aligned nearest-neighbour resize ([`nearest_exact_indices`]) of interleaved 8-bit
/// data with `c` channels; used for label maps.
pub fn resize_nearest_raw(
    data: &[u8],
    (w, h, c): (usize, usize, usize),
    out_w: usize,
    out_h: usize,
) -> Vec<u8> {
    let xs = nearest_exact_indices(w, out_w);
    let ys = nearest_exact_indices(h, out_h);
    let mut out = Vec::with_capacity(out_w * out_h * c);
    for &sy in &ys {
        for &sx in &xs {
            let p = (sy * w + sx) * c;
            out.extend_from_slice(&data[p..p + c]);
        }
    }
    out
}

impl FloatImage {
    /// Pads on the right and bottom with `fill` to `(height, width)` (each at least the
    /// current size).
    pub fn pad_to(self, height: usize, width: usize, fill: f32) -> FloatImage {
        if (height, width) == (self.height, self.width) {
            return self;
        }
        let (h, w) = (height.max(self.height), width.max(self.width));
        let mut data = vec![fill; self.channels * h * w];
        for (c, plane) in self.data.chunks_exact(self.height * self.width).enumerate() {
            for (y, row) in plane.chunks_exact(self.width).enumerate() {
                let dst = (c * h + y) * w;
                data[dst..dst + self.width].copy_from_slice(row);
            }
        }
        FloatImage {
            channels: self.channels,
            height: h,
            width: w,
            data,
        }
    }
}

impl LabelMap {
    /// Pads on the right and bottom with `fill` (the ignore index) to `(height, width)`.
    pub fn pad_to(self, height: usize, width: usize, fill: u8) -> LabelMap {
        if (height, width) == (self.height, self.width) {
            return self;
        }
        let img = self.as_image();
        let (h, w) = (height.max(img.height), width.max(img.width));
        LabelMap::from_image(pad(&img, 0, 0, w - img.width, h - img.height, fill))
    }

    /// The label map as a 1-channel image, so geometric kernels can be shared.
    pub fn as_image(&self) -> Image {
        Image {
            width: self.width,
            height: self.height,
            channels: 1,
            data: self.data.clone(),
        }
    }

    pub fn from_image(img: Image) -> Self {
        Self {
            width: img.width,
            height: img.height,
            data: img.data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize, c: usize) -> Image {
        let data = (0..w * h * c).map(|i| (i * 7 % 251) as u8).collect();
        Image::new(w, h, c, data).unwrap()
    }

    #[test]
    fn crop_flip_pad_move_the_right_pixels() {
        let img = ramp(5, 4, 3);
        let c = crop(&img, 1, 2, 3, 2);
        assert_eq!(c.at(0, 0, 2), img.at(1, 2, 2));
        assert_eq!(c.at(2, 1, 0), img.at(3, 3, 0));
        let f = hflip(&img);
        assert_eq!(f.at(0, 1, 1), img.at(4, 1, 1));
        let p = pad(&img, 2, 1, 0, 3, 9);
        assert_eq!((p.width, p.height), (7, 8));
        assert_eq!(p.at(0, 0, 0), 9);
        assert_eq!(p.at(2, 1, 0), img.at(0, 0, 0));
        assert_eq!(p.at(6, 4, 2), img.at(4, 3, 2));
    }

    #[test]
    fn bilinear_resize_keeps_constants_and_averages_when_halving() {
        let flat = Image::filled(9, 7, 3, 77);
        let r = resize_bilinear(&flat, 4, 13);
        assert!(r.data.iter().all(|&v| v == 77));
        // halving a 2-periodic pattern averages neighbours (torchvision: [86, 100, 100, 114])
        let data = (0..8 * 8)
            .map(|i| if i % 2 == 0 { 0 } else { 200 })
            .collect();
        let stripes = Image::new(8, 8, 1, data).unwrap();
        let r = resize_bilinear(&stripes, 4, 4);
        assert_eq!(&r.data[..4], &[86, 100, 100, 114]);
    }

    #[test]
    fn bilinear_resize_matches_torchvision_antialias() {
        // tests/data/resize_reference.txt: v2.functional.resize(antialias=True) of a random
        // image; torchvision's uint8 kernel uses fixed-point weights, so allow off-by-one
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
        let src = std::fs::read(format!("{dir}resize_input.bin")).unwrap();
        let src = Image::new(17, 13, 3, src).unwrap();
        let text = std::fs::read_to_string(format!("{dir}resize_reference.txt")).unwrap();
        for line in text.lines() {
            let v: Vec<usize> = line.split(' ').map(|t| t.parse().unwrap()).collect();
            let out = resize_bilinear(&src, v[1], v[0]);
            let want = &v[2..];
            assert_eq!(out.data.len(), want.len());
            let worst = out
                .data
                .iter()
                .zip(want)
                .map(|(&a, &b)| (a as i64 - b as i64).abs())
                .max()
                .unwrap();
            assert!(worst <= 1, "{}x{}: max difference {worst}", v[0], v[1]);
        }
    }

    #[test]
    fn nearest_resize_copies_source_values() {
        let data: Vec<u8> = (0..12).collect();
        let out = resize_nearest_raw(&data, (4, 3, 1), 8, 6);
        assert_eq!(&out[..8], &[0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(out[8 * 5], 8);
        // downscaling takes the pixel under each output centre (legacy nearest: [0, 2])
        assert_eq!(nearest_exact_indices(4, 2), [1, 3]);
        assert_eq!(nearest_exact_indices(5, 3), [0, 2, 4]);
        assert_eq!(nearest_exact_indices(3, 7), [0, 0, 1, 1, 1, 2, 2]);
    }

    #[test]
    fn pad_to_fills_right_and_bottom() {
        let x = FloatImage {
            channels: 2,
            height: 1,
            width: 2,
            data: vec![1.0, 2.0, 3.0, 4.0],
        };
        let p = x.pad_to(2, 3, -1.0);
        assert_eq!((p.height, p.width), (2, 3));
        assert_eq!(
            p.data,
            [1.0, 2.0, -1.0, -1.0, -1.0, -1.0, 3.0, 4.0, -1.0, -1.0, -1.0, -1.0]
        );
        let m = LabelMap::new(2, 1, vec![5, 6]).unwrap().pad_to(2, 3, 255);
        assert_eq!(m.data, [5, 6, 255, 255, 255, 255]);
    }
}
