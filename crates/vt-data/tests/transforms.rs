//! Geometric transforms against torchvision's definitions, RandomResizedCrop statistics,
//! joint segmentation transforms, tensors, and the mosaics' labels.

use vt_data::image::Image;
use vt_data::transforms::geometric::Geometric;
use vt_data::transforms::seg::{Joint, SegTransform};
use vt_data::{
    CenterCrop, GrayscaleToRgb, LabelMap, MosaicConfig, Mosaics, Normalize, Pad, RandomCrop,
    RandomHorizontalFlip, RandomResizedCrop, Resize, Rng, SegSample, ToTensor, Transform,
};

fn ramp(w: usize, h: usize, c: usize) -> Image {
    Image::new(w, h, c, (0..w * h * c).map(|i| (i % 256) as u8).collect()).unwrap()
}

/// Statistics of torchvision's crop boxes (tests/data/rrc_stats.txt, 200,000 draws).
fn torchvision_rrc_stats() -> std::collections::HashMap<String, f64> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rrc_stats.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn random_resized_crop_statistics() {
    let rrc = RandomResizedCrop::new(8);
    let (w, h) = (300usize, 200usize);
    let mut rng = Rng::new(42);
    let n = 40000;
    let (mut log_ratio, mut area, mut small, mut rel_x, mut rel_n) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for _ in 0..n {
        let (x, y, cw, ch) = rrc.crop_box(w, h, &mut rng);
        assert!(x + cw <= w && y + ch <= h && cw > 0 && ch > 0);
        let frac = (cw * ch) as f64 / (w * h) as f64;
        let ratio = cw as f64 / ch as f64;
        // rounding of w and h moves the ratio and area a little beyond the sampled range
        assert!((0.07..=1.0).contains(&frac), "{frac}");
        assert!((0.70..=1.45).contains(&ratio), "{ratio}");
        log_ratio += ratio.ln();
        area += frac;
        small += (frac < 0.5) as u8 as f64;
        if w > cw {
            rel_x += x as f64 / (w - cw) as f64;
            rel_n += 1.0;
        }
    }
    let n = n as f64;
    let tv = torchvision_rrc_stats();
    // tolerances: about 5 standard errors of our 40,000 draws
    for (name, ours, tol) in [
        ("mean_area", area / n, 0.007),
        ("mean_log_ratio", log_ratio / n, 0.005),
        ("share_small", small / n, 0.012),
        ("mean_rel_x", rel_x / rel_n, 0.008),
    ] {
        let want = tv[name];
        assert!(
            (ours - want).abs() < tol,
            "{name}: ours {ours}, torchvision {want}"
        );
    }

    // the fallback: a 1000x10 image can never fit a ratio in [3/4, 4/3] at scale >= 0.99,
    // so torchvision's central crop of width round(10 · 4/3) = 13 is used
    let fallback = RandomResizedCrop {
        size: (8, 8),
        scale: (0.99, 1.0),
        ratio: (3.0 / 4.0, 4.0 / 3.0),
    };
    assert_eq!(fallback.crop_box(1000, 10, &mut rng), (493, 0, 13, 10));
    assert_eq!(fallback.crop_box(10, 1000, &mut rng), (0, 493, 10, 13));
    let out = fallback.apply(ramp(1000, 10, 3), &mut rng).unwrap();
    assert_eq!((out.width, out.height, out.channels), (8, 8, 3));
}

#[test]
fn resize_center_crop_pad_random_crop_flip() {
    let mut rng = Rng::new(0);
    let img = ramp(40, 20, 3);
    let r = Resize { shorter: 10 }.apply(img.clone(), &mut rng).unwrap();
    assert_eq!((r.width, r.height), (20, 10));
    let r = Resize { shorter: 7 }
        .apply(ramp(20, 30, 1), &mut rng)
        .unwrap();
    assert_eq!((r.width, r.height), (7, 10)); // int(7 * 30 / 20) = 10

    // centre crop: top-left at round((H - h) / 2), round((W - w) / 2)
    let c = CenterCrop { size: (5, 7) }
        .apply(ramp(10, 8, 1), &mut rng)
        .unwrap();
    assert_eq!(c.data[0], ramp(10, 8, 1).at(2, 2, 0)); // round(1.5) = 2 (half to even), round(1.5) = 2
    let c = CenterCrop { size: (4, 4) }
        .apply(ramp(2, 2, 1), &mut rng)
        .unwrap();
    assert_eq!(c.data, vec![0, 0, 0, 0, 0, 0, 1, 0, 0, 2, 3, 0, 0, 0, 0, 0]);

    let p = Pad {
        padding: 2,
        fill: 9,
    }
    .apply(ramp(3, 3, 1), &mut rng)
    .unwrap();
    assert_eq!(
        (p.width, p.height, p.at(0, 0, 0), p.at(2, 2, 0)),
        (7, 7, 9, 0)
    );

    // pad 4 + crop 28 gives every offset in 0..=8, the crop equals a window of the padded image
    let base = ramp(28, 28, 1);
    let padded = Pad {
        padding: 4,
        fill: 0,
    }
    .apply(base.clone(), &mut rng)
    .unwrap();
    let rc = RandomCrop::padded(28, 4);
    let mut seen = [false; 9];
    for i in 0..400 {
        let mut r1 = Rng::new(i);
        let plan = rc.plan(28, 28, &mut r1).unwrap();
        let out = rc.apply(base.clone(), &mut Rng::new(i)).unwrap();
        if let vt_data::transforms::geometric::Step::Crop { x, y, .. } = plan[1] {
            seen[x] = true;
            assert_eq!(out, vt_data::image::crop(&padded, x, y, 28, 28));
        } else {
            panic!("plan {plan:?}");
        }
    }
    assert!(seen.iter().all(|&s| s));
    let err = RandomCrop::padded(40, 2).apply(base, &mut rng).unwrap_err();
    assert!(
        err.to_string()
            .contains("RandomCrop: crop 40x40 is larger than the padded image 32x32"),
        "{err}"
    );

    let img = ramp(5, 2, 3);
    let always = RandomHorizontalFlip { p: 1.0 }
        .apply(img.clone(), &mut rng)
        .unwrap();
    assert_eq!(always.at(0, 1, 2), img.at(4, 1, 2));
    assert_eq!(
        RandomHorizontalFlip { p: 0.0 }
            .apply(img.clone(), &mut rng)
            .unwrap(),
        img
    );
    let flips = (0..1000)
        .filter(|&i| {
            RandomHorizontalFlip::default()
                .apply(img.clone(), &mut Rng::new(i))
                .unwrap()
                != img
        })
        .count();
    assert!((430..570).contains(&flips), "{flips}");
}

#[test]
fn to_tensor_normalize_grayscale() {
    let mut rng = Rng::new(0);
    let g = Image::new(2, 1, 1, vec![0, 255]).unwrap();
    let rgb = GrayscaleToRgb.apply(g, &mut rng).unwrap();
    assert_eq!(rgb.data, vec![0, 0, 0, 255, 255, 255]);
    let x = ToTensor.apply(&Image::new(2, 1, 3, vec![0, 51, 102, 153, 204, 255]).unwrap());
    // CHW: channel 0 is pixels (0, 153)
    assert_eq!(x.data, vec![0.0, 0.6, 0.2, 0.8, 0.4, 1.0]);
    let n = Normalize::imagenet().apply(x.clone()).unwrap();
    assert!((n.data[0] - (0.0 - 0.485) / 0.229).abs() < 1e-6);
    assert!((n.data[5] - (1.0 - 0.406) / 0.225).abs() < 1e-6);
    let err = Normalize::new(vec![0.5], vec![0.5])
        .unwrap()
        .apply(x)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("image has 3 channels, mean/std have 1"),
        "{err}"
    );
    let err = Normalize::new(vec![0.5], vec![0.0]).unwrap_err();
    assert!(err.to_string().contains("positive std"), "{err}");
}

#[test]
fn joint_transforms_keep_labels_aligned() {
    // label = 4x4 block index, image channel 0 = the same block index * 10
    let (w, h) = (16, 12);
    let block = |x: usize, y: usize| ((y / 4) * 4 + x / 4) as u8;
    let mut img = Image::filled(w, h, 3, 0);
    let mut lab = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            img.data[(y * w + x) * 3] = block(x, y) * 10 + 5;
            lab[y * w + x] = block(x, y);
        }
    }
    let sample = SegSample {
        image: img,
        label: LabelMap::new(w, h, lab).unwrap(),
    };
    for i in 0..50 {
        let mut rng = Rng::new(i);
        let crop = Joint::new(RandomCrop {
            size: (12, 12),
            padding: 3,
            fill: 0,
        });
        let flip = Joint::new(RandomHorizontalFlip::default());
        let s = flip
            .apply(crop.apply(sample.clone(), &mut rng).unwrap(), &mut rng)
            .unwrap();
        assert_eq!((s.label.width, s.label.height), (12, 12));
        for (p, &l) in s.label.data.iter().enumerate() {
            let v = s.image.data[p * 3];
            if l == 255 {
                assert_eq!(v, 0, "padding: image fill 0, label ignore");
            } else {
                assert_eq!(v, l * 10 + 5, "pixel {p} of draw {i}");
            }
        }
        // resampling: label maps only ever take values that exist (nearest neighbour)
        let s = Joint::new(RandomResizedCrop::new(20))
            .apply(sample.clone(), &mut rng)
            .unwrap();
        assert_eq!((s.image.width, s.label.width), (20, 20));
        assert!(s.label.data.iter().all(|&l| l < 12));
    }
    let bad = SegSample {
        image: Image::filled(4, 4, 3, 0),
        label: LabelMap::new(3, 4, vec![0; 12]).unwrap(),
    };
    let err = Joint::new(Resize { shorter: 2 })
        .apply(bad, &mut Rng::new(0))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("label map 3x4 does not match its image 4x4"),
        "{err}"
    );
}

#[test]
fn mosaic_labels_match_their_items() {
    let fm = vt_data::embedded_fashion_mnist().unwrap();
    let cfg = MosaicConfig::new(40, 9);
    let m = Mosaics::new(fm.train.clone(), 10, cfg).unwrap();
    assert_eq!(m.num_classes(), 11);
    let mut counts = [0usize; 5];
    for i in 0..40 {
        let (s, items) = m.compose(i).unwrap();
        assert!((1..=4).contains(&items.len()));
        counts[items.len()] += 1;
        let c = cfg.canvas;
        let mut covered = vec![false; c * c];
        for (k, it) in items.iter().enumerate() {
            let src = fm.train.get(it.source_index).unwrap();
            assert_eq!(src.label, it.class);
            for o in &items[k + 1..] {
                let apart = it.x + it.width <= o.x
                    || o.x + o.width <= it.x
                    || it.y + it.height <= o.y
                    || o.y + o.height <= it.y;
                assert!(apart, "items overlap in mosaic {i}");
            }
            for yy in 0..it.height {
                for xx in 0..it.width {
                    let p = (it.y + yy) * c + it.x + xx;
                    covered[p] = true;
                    let v = src.image.data[yy * it.width + xx];
                    assert_eq!(s.image.data[p], v);
                    let want = if v > cfg.threshold {
                        it.class as u8 + 1
                    } else {
                        0
                    };
                    assert_eq!(s.label.data[p], want, "mosaic {i} item {k}");
                }
            }
        }
        for p in (0..c * c).filter(|&p| !covered[p]) {
            assert_eq!((s.image.data[p], s.label.data[p]), (0, 0));
        }
    }
    assert!(counts[1..].iter().all(|&n| n > 0), "{counts:?}");
    // same seed, same set; another seed, another set
    let again = Mosaics::new(fm.train.clone(), 10, cfg).unwrap();
    assert_eq!(again.compose(7).unwrap().1, m.compose(7).unwrap().1);
    let other = Mosaics::new(fm.train.clone(), 10, MosaicConfig::new(40, 10)).unwrap();
    assert_ne!(other.compose(7).unwrap().1, m.compose(7).unwrap().1);
}

#[test]
fn mosaic_items_scale_up_on_larger_canvases() {
    let fm = vt_data::embedded_fashion_mnist().unwrap();
    let cfg = MosaicConfig {
        canvas: 256,
        item_scale: 2,
        max_items: 16,
        ..MosaicConfig::new(12, 4)
    };
    let m = Mosaics::new(fm.train.clone(), 10, cfg).unwrap();
    let mut most = 0;
    for i in 0..12 {
        let (s, items) = m.compose(i).unwrap();
        assert_eq!((s.image.width, s.label.height), (256, 256));
        most = most.max(items.len());
        for it in &items {
            assert_eq!((it.width, it.height), (56, 56));
            let src = fm.train.get(it.source_index).unwrap().image;
            let big = vt_data::image::resize_bilinear(&src, 56, 56);
            for yy in 0..56 {
                for xx in 0..56 {
                    let p = (it.y + yy) * 256 + it.x + xx;
                    assert_eq!(s.image.data[p], big.data[yy * 56 + xx]);
                    // the mask is the source mask, nearest neighbour: 2x2 blocks
                    let fg = src.data[(yy / 2) * 28 + xx / 2] > cfg.threshold;
                    let want = if fg { it.class as u8 + 1 } else { 0 };
                    assert_eq!(s.label.data[p], want, "mosaic {i} ({xx}, {yy})");
                }
            }
        }
    }
    assert!(most > 4, "a 4x4 grid holds more than 4 items: {most}");
    let bad = |cfg: MosaicConfig| {
        Mosaics::new(fm.train.clone(), 10, cfg)
            .err()
            .unwrap()
            .to_string()
    };
    let e = bad(MosaicConfig {
        item_scale: 0,
        ..MosaicConfig::new(4, 0)
    });
    assert!(e.contains("item_scale must be at least 1"), "{e}");
    let e = bad(MosaicConfig {
        item_scale: 3,
        ..MosaicConfig::new(4, 0)
    });
    assert!(e.contains("fit the 64x64 canvas at item_scale 3"), "{e}");
    let e = bad(MosaicConfig {
        canvas: 128,
        item_scale: 2,
        max_items: 5,
        ..MosaicConfig::new(4, 0)
    });
    assert!(
        e.contains("holds at most 4 non-overlapping 56x56 items"),
        "{e}"
    );
}
