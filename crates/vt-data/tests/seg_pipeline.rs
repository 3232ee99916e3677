//! The segmentation recipes: `SegPipeline::train` (scale, crop, flip, pad) keeps image and
//! labels aligned and pads with 0 / 255; `SegPipeline::eval` pads to a multiple; the loader
//! pads mixed-size segmentation batches; everything is a function of the seed.

use candle_core::Device;
use std::sync::Arc;
use vt_data::transforms::{Prepare, Prepared, Target};
use vt_data::{
    ClippedRandomCrop, Dataset, Image, LabelMap, Loader, LoaderConfig, Normalize, PadTo,
    RandomScale, Rng, SegPipeline, SegSample, Transform,
};

/// A 40x30 RGB image: R = 5x + 2, G = 5y + 2, B = 255; labels from `label(x, y)`.
fn ramp_sample(label: impl Fn(usize, usize) -> u8) -> SegSample {
    let (w, h) = (40, 30);
    let mut data = Vec::with_capacity(w * h * 3);
    let mut lab = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            data.extend([(5 * x + 2) as u8, (5 * y + 2) as u8, 255]);
            lab.push(label(x, y));
        }
    }
    SegSample {
        image: Image::new(w, h, 3, data).unwrap(),
        label: LabelMap::new(w, h, lab).unwrap(),
    }
}

fn prepare(p: &SegPipeline, s: SegSample, seed: u64) -> (Prepared, LabelMap) {
    let out = p.prepare(s, &mut Rng::new(seed)).unwrap();
    let Target::Map(m) = out.target.clone() else {
        panic!("segmentation target expected")
    };
    (out, m)
}

#[test]
fn train_pipeline_keeps_labels_on_their_pixels() {
    let pipe = SegPipeline::train((24, 32), (0.5, 2.0), None).unwrap();
    let (mut padded, mut flipped, mut upscaled) = (0, 0, 0);
    for seed in 0..60 {
        // the same seed gives the same draw: once with x as the label, once with y
        let (px, lx) = prepare(&pipe, ramp_sample(|x, _| x as u8), seed);
        let (py, ly) = prepare(&pipe, ramp_sample(|_, y| y as u8), seed);
        assert_eq!(
            px.image, py.image,
            "seed {seed}: the image draw depends on the labels"
        );
        let img = &px.image;
        assert_eq!((img.channels, img.height, img.width), (3, 24, 32));
        assert_eq!((lx.height, lx.width), (24, 32));
        let plane = 24 * 32;
        for p in 0..plane {
            let (r, g, b) = (img.data[p], img.data[plane + p], img.data[2 * plane + p]);
            assert_eq!(lx.data[p] == 255, ly.data[p] == 255);
            if lx.data[p] == 255 {
                assert_eq!((r, g, b), (0.0, 0.0, 0.0), "seed {seed}: padding is 0");
                continue;
            }
            assert_eq!(b, 1.0, "seed {seed}: pixel {p} is real, not padding");
            // the bilinear image value is the source coordinate of the pixel's centre; the
            // nearest label is the source pixel under that centre
            let (x, y) = ((r * 255.0 - 2.0) / 5.0, (g * 255.0 - 2.0) / 5.0);
            let (dx, dy) = (x - lx.data[p] as f32, y - ly.data[p] as f32);
            assert!(
                dx.abs() <= 0.8 && dy.abs() <= 0.8,
                "seed {seed} pixel {p}: image at ({x}, {y}), labels ({}, {})",
                lx.data[p],
                ly.data[p]
            );
        }
        padded += usize::from(lx.data.contains(&255));
        flipped += usize::from(lx.data[..32].iter().any(|&l| l < lx.data[0]));
        upscaled += usize::from(!lx.data.contains(&255) && lx.data[0].abs_diff(lx.data[31]) < 28);
    }
    // the draws cover scaling below the crop (padding), flips, and scaling up
    assert!(
        padded > 5 && flipped > 5 && upscaled > 5,
        "{padded} {flipped} {upscaled}"
    );
}

#[test]
fn padding_is_zero_after_normalize_and_255_for_labels() {
    let norm = Normalize::new(vec![0.5, 0.5, 0.5], vec![0.25, 0.25, 0.25]).unwrap();
    // scale fixed at 0.5: 40x30 -> 20x15, inside a 24x32 crop
    let pipe = SegPipeline::train((24, 32), (0.5, 0.5), Some(norm.clone())).unwrap();
    let (p, m) = prepare(&pipe, ramp_sample(|x, _| (x % 7) as u8), 3);
    let plane = 24 * 32;
    for y in 0..24 {
        for x in 0..32 {
            let q = y * 32 + x;
            let inside = x < 20 && y < 15;
            assert_eq!(m.data[q] == 255, !inside, "({x}, {y})");
            if inside {
                assert_eq!(p.image.data[2 * plane + q], (1.0 - 0.5) / 0.25);
            } else {
                assert!((0..3).all(|c| p.image.data[c * plane + q] == 0.0));
            }
        }
    }
    // eval pads the whole image to multiples of 32, also after normalising
    let eval = SegPipeline::eval(32, Some(norm)).unwrap();
    let (p, m) = prepare(&eval, ramp_sample(|x, _| (x % 7) as u8), 0);
    assert_eq!(
        (p.image.height, p.image.width, m.height, m.width),
        (32, 64, 32, 64)
    );
    assert_eq!(
        (m.data[29 * 64 + 39], m.data[29 * 64 + 40], m.data[30 * 64]),
        (39 % 7, 255, 255)
    );
    let plane = 32 * 64;
    assert_eq!(p.image.data[2 * plane + 29 * 64 + 39], 2.0);
    assert_eq!(p.image.data[2 * plane + 29 * 64 + 40], 0.0);
    assert_eq!(p.image.data[2 * plane + 31 * 64 + 63], 0.0);
}

#[test]
fn pad_to_multiple_sizes() {
    let cases = [
        ((45, 33), 32, (64, 64)),
        ((64, 64), 32, (64, 64)),
        ((1, 1), 32, (32, 32)),
        ((65, 31), 32, (96, 32)),
        ((7, 5), 1, (7, 5)),
    ];
    for ((h, w), d, want) in cases {
        assert_eq!(PadTo::Multiple(d).target(h, w), want, "{h}x{w} to {d}");
        let s = SegSample {
            image: Image::filled(w, h, 1, 9),
            label: LabelMap::new(w, h, vec![1; w * h]).unwrap(),
        };
        let (p, m) = prepare(&SegPipeline::eval(d, None).unwrap(), s, 0);
        assert_eq!((p.image.height, p.image.width), want);
        assert_eq!((m.height, m.width), want);
        let real = m.data.iter().filter(|&&l| l == 1).count();
        assert_eq!(real, h * w);
        assert_eq!(
            m.data.iter().filter(|&&l| l == 255).count(),
            want.0 * want.1 - h * w
        );
    }
    assert_eq!(PadTo::Size(24, 32).target(30, 20), (30, 32));
}

#[test]
fn pipelines_are_deterministic_in_the_seed_and_checked() {
    let pipe = SegPipeline::train((16, 16), (0.5, 2.0), None).unwrap();
    let s = || ramp_sample(|x, y| ((x + y) % 11) as u8);
    let first = prepare(&pipe, s(), 42);
    assert_eq!(prepare(&pipe, s(), 42), first);
    assert!((0..8).any(|seed| prepare(&pipe, s(), seed) != first));
    // scale draws stay inside the range; a clipped crop never exceeds the image
    for seed in 0..30 {
        let out = RandomScale::new(0.5, 2.0)
            .unwrap()
            .apply(Image::filled(40, 30, 1, 0), &mut Rng::new(seed))
            .unwrap();
        assert!((20..=80).contains(&out.width) && (15..=60).contains(&out.height));
        let c = ClippedRandomCrop { size: (24, 50) }
            .apply(Image::filled(40, 30, 1, 0), &mut Rng::new(seed))
            .unwrap();
        assert_eq!((c.width, c.height), (40, 24));
    }
    let err = |r: vt_data::error::Result<SegPipeline>| r.err().unwrap().to_string();
    let e = err(SegPipeline::train((0, 16), (0.5, 2.0), None));
    assert!(e.contains("crop must be at least 1x1, got 0x16"), "{e}");
    let e = err(SegPipeline::train((16, 16), (2.0, 0.5), None));
    assert!(
        e.contains("RandomScale: scale range must satisfy 0 < lo <= hi, got (2, 0.5)"),
        "{e}"
    );
    let e = err(SegPipeline::eval(0, None));
    assert!(e.contains("size_divisibility must be at least 1"), "{e}");
    let bad = SegSample {
        image: Image::filled(4, 4, 1, 0),
        label: LabelMap::new(3, 4, vec![0; 12]).unwrap(),
    };
    let e = SegPipeline::eval(32, None)
        .unwrap()
        .prepare(bad, &mut Rng::new(0))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("label map 3x4 does not match its image 4x4"),
        "{e}"
    );
}

struct Samples(Vec<SegSample>);

impl Dataset for Samples {
    type Sample = SegSample;
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, i: usize) -> vt_data::error::Result<SegSample> {
        Ok(self.0[i].clone())
    }
}

#[test]
fn loader_pads_mixed_size_segmentation_batches() {
    // (width, height): padded to multiples of 8 they are 16x8, 24x16, 8x8 (WxH)
    let sizes = [(10, 7), (20, 13), (5, 5)];
    let samples = sizes
        .iter()
        .enumerate()
        .map(|(k, &(w, h))| SegSample {
            image: Image::filled(w, h, 2, 51 * (k as u8 + 1)),
            label: LabelMap::new(w, h, vec![k as u8; w * h]).unwrap(),
        })
        .collect();
    let ds: Arc<dyn Dataset<Sample = SegSample>> = Arc::new(Samples(samples));
    for (pipe, (bh, bw)) in [
        (SegPipeline::eval(8, None).unwrap(), (16, 24)),
        (SegPipeline::default(), (13, 20)),
    ] {
        let mut cfg = LoaderConfig::new(3);
        cfg.shuffle = false;
        let loader = Loader::new(ds.clone(), Arc::new(pipe), cfg, &Device::Cpu).unwrap();
        let b = loader.epoch(0).next().unwrap().unwrap();
        assert_eq!(b.images.dims(), &[3, 2, bh, bw]);
        assert_eq!(b.labels.dims(), &[3, bh, bw]);
        let images: Vec<Vec<Vec<Vec<f32>>>> = (0..3)
            .map(|n| b.images.get(n).unwrap().to_vec3().unwrap())
            .collect();
        let labels: Vec<Vec<Vec<u32>>> = b.labels.to_vec3().unwrap();
        for (k, &(w, h)) in sizes.iter().enumerate() {
            for y in 0..bh {
                for x in 0..bw {
                    let inside = x < w && y < h;
                    let want_l = if inside { k as u32 } else { 255 };
                    let want_v = if inside {
                        (51 * (k + 1)) as f32 / 255.0
                    } else {
                        0.0
                    };
                    assert_eq!(labels[k][y][x], want_l, "sample {k} at ({x}, {y})");
                    for c in 0..2 {
                        assert_eq!(images[k][c][y][x], want_v, "sample {k} at ({x}, {y})");
                    }
                }
            }
        }
    }
}

#[test]
fn train_batches_of_mosaics_depend_only_on_the_seed() {
    let fm = vt_data::embedded_fashion_mnist().unwrap();
    let mosaics: Arc<dyn Dataset<Sample = SegSample>> = Arc::new(
        vt_data::Mosaics::new(fm.train.clone(), 10, vt_data::MosaicConfig::new(12, 3)).unwrap(),
    );
    let norm = Normalize::new(vec![0.2], vec![0.3]).unwrap();
    let pipe = Arc::new(SegPipeline::train((48, 40), (0.5, 2.0), Some(norm)).unwrap());
    let run = |workers: usize, seed: u64| -> Vec<(Vec<f32>, Vec<u32>)> {
        let mut cfg = LoaderConfig::new(4);
        (cfg.workers, cfg.seed) = (workers, seed);
        Loader::new(mosaics.clone(), pipe.clone(), cfg, &Device::Cpu)
            .unwrap()
            .epoch(1)
            .map(|b| {
                let b = b.unwrap();
                assert_eq!(b.images.dims(), &[4, 1, 48, 40]);
                (
                    b.images.flatten_all().unwrap().to_vec1().unwrap(),
                    b.labels.flatten_all().unwrap().to_vec1().unwrap(),
                )
            })
            .collect()
    };
    let reference = run(0, 7);
    assert!(run(3, 7) == reference, "workers change the batches");
    assert!(run(0, 8) != reference, "the seed changes nothing");
    let labels: Vec<u32> = reference.iter().flat_map(|b| b.1.clone()).collect();
    assert!(labels.iter().all(|&l| l <= 10 || l == 255));
    assert!(labels.contains(&255), "no draw padded a crop");
}
