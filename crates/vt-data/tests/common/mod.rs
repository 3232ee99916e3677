//! Fixture writers shared by the integration tests: every file a test reads, it writes itself.
#![allow(dead_code)]

use std::path::Path;

/// A deterministic RGB test pattern, `seed` varies it.
pub fn pattern(w: u32, h: u32, seed: u8) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w.max(1)) as u8 ^ seed,
            (y * 255 / h.max(1)) as u8,
            ((x + y) as u8).wrapping_mul(seed | 1),
        ])
    })
}

pub fn write_png(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    pattern(w, h, seed).save(path).unwrap();
}

pub fn write_jpeg(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    pattern(w, h, seed)
        .save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

/// A grayscale PNG label map from a function of (x, y).
pub fn write_labels(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]))
        .save(path)
        .unwrap();
}

/// An 8-bit palette PNG (VOC style): the indices are the labels; the palette's colours are
/// unrelated to them.
pub fn write_palette_labels(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    let palette: Vec<u8> = (0..=255u8).flat_map(|i| [i, 255 - i, i / 2]).collect();
    write_indexed_png(path, w, h, &palette, f);
}

/// An 8-bit palette PNG with the given palette (256 RGB triples); indices from `f(x, y)`.
pub fn write_indexed_png(path: &Path, w: u32, h: u32, palette: &[u8], f: impl Fn(u32, u32) -> u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(palette.to_vec());
    let mut writer = enc.write_header().unwrap();
    let data: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| f(x, y))
        .collect();
    writer.write_image_data(&data).unwrap();
}

/// CIFAR records: `label_bytes` label bytes then 3072 planar pixels derived from the index.
pub fn cifar_records(labels: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![];
    for (i, l) in labels.iter().enumerate() {
        out.extend_from_slice(l);
        out.extend((0..3072).map(|p| ((p + 31 * i) % 256) as u8));
    }
    out
}
