//! Shared helpers of vt's criterion benchmarks (one bench file per area under `benches/`;
//! names `area/op/shape/dtype/device`). The peer scripts under `peer/` measure PyTorch on the
//! same inputs.

use std::path::{Path, PathBuf};

/// Where benches keep the inputs they generate (`target/bench-data/`), shared with `peer/`.
pub fn bench_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data")
}

/// The committed Fashion-MNIST subset (gzip IDX), so Rust and PyTorch read the same files.
pub fn fashion_mnist_subset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/fashion-mnist-subset")
}

/// A deterministic ImageNet-like JPEG folder: `train/` and `val/` with `classes` classes of
/// `per_class` images of `w`×`h` (smooth colour fields plus noise, quality 90, so decoding
/// costs about what a photo of that size costs). Written once; reused when present.
pub fn jpeg_folder(
    root: &Path,
    classes: usize,
    per_class: usize,
    w: u32,
    h: u32,
) -> std::io::Result<PathBuf> {
    let done = root.join(".complete");
    if done.exists() {
        return Ok(root.to_path_buf());
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 48) as i32 - 24
    };
    for split in ["train", "val"] {
        for c in 0..classes {
            let dir = root.join(split).join(format!("class_{c:02}"));
            std::fs::create_dir_all(&dir)?;
            let n = if split == "train" { per_class } else { 1 };
            for i in 0..n {
                let (fx, fy) = (1 + (c + i) % 5, 1 + (c * 3 + i) % 4);
                let img = image::RgbImage::from_fn(w, h, |x, y| {
                    let u = (x as f32 / w as f32 * fx as f32 * 3.1).sin();
                    let v = (y as f32 / h as f32 * fy as f32 * 3.1).cos();
                    let mut px = |base: f32| (base + noise() as f32).clamp(0.0, 255.0) as u8;
                    image::Rgb([
                        px(128.0 + 100.0 * u),
                        px(128.0 + 100.0 * v),
                        px(128.0 + 60.0 * u * v),
                    ])
                });
                let file = std::fs::File::create(dir.join(format!("img_{i:04}.JPEG")))?;
                let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(
                    std::io::BufWriter::new(file),
                    90,
                );
                enc.encode_image(&img).map_err(std::io::Error::other)?;
            }
        }
    }
    std::fs::write(done, "")?;
    Ok(root.to_path_buf())
}
