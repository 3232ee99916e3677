//! AutoAugment / RandAugment against torchvision: every op on fixed images, the ImageNet policy
//! entry by entry, and the magnitude tables. Reference values: `tests/data/make_reference.py`
//! (torchvision.transforms.v2 on uint8 tensors; the versions are on the first line of
//! `ops_reference.txt`).

use std::path::PathBuf;
use vt_data::transforms::ops::{apply_op, AugOp};
use vt_data::transforms::policy::{
    is_signed, magnitudes, AUTOAUGMENT_OPS, IMAGENET_POLICY, RANDAUGMENT_OPS,
};
use vt_data::{AutoAugment, Image, RandAugment, Rng, Transform};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn image(name: &str) -> Image {
    let bytes = std::fs::read(data(&format!("image_{name}.bin"))).unwrap();
    match name {
        "rgb" => Image::new(32, 24, 3, bytes).unwrap(),
        _ => Image::new(20, 18, 1, bytes).unwrap(),
    }
}

#[test]
fn every_op_matches_torchvision() {
    let text = std::fs::read_to_string(data("ops_reference.txt")).unwrap();
    let blob = std::fs::read(data("ops_reference.bin")).unwrap();
    let mut per_op: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut failures = vec![];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (img, op, mag) = (image(f[0]), f[1], f[2].parse::<f64>().unwrap());
        let (off, len) = (
            f[3].parse::<usize>().unwrap(),
            f[4].parse::<usize>().unwrap(),
        );
        let want = &blob[off..off + len];
        let got = apply_op(&img, AugOp::from_name(op).unwrap(), mag).unwrap();
        assert_eq!(got.data.len(), want.len(), "{line}");
        *per_op.entry(op).or_default() += 1;
        // bit-exact: same float32 operations, same truncation and rounding as torchvision
        let differ = got.data.iter().zip(want).filter(|(a, b)| a != b).count();
        if differ > 0 {
            failures.push(format!("{line}: {differ} of {len} values differ"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // every op of both spaces was checked
    for op in AUTOAUGMENT_OPS.iter().chain(&RANDAUGMENT_OPS) {
        if *op != AugOp::Identity {
            assert!(per_op.contains_key(op.name()), "{} not covered", op.name());
        }
    }
}

#[test]
fn imagenet_policy_matches_torchvision_entry_by_entry() {
    let text = std::fs::read_to_string(data("policy_imagenet.txt")).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 50);
    for r in rows {
        let (i, j) = (
            r[0].parse::<usize>().unwrap(),
            r[1].parse::<usize>().unwrap(),
        );
        let (op, p, bin) = IMAGENET_POLICY[i][j];
        assert_eq!(op.name(), r[2], "policy {i} slot {j}");
        assert_eq!(p, r[3].parse::<f64>().unwrap(), "policy {i} slot {j}");
        let want_bin = (r[4] != "None").then(|| r[4].parse::<usize>().unwrap());
        assert_eq!(bin, want_bin, "policy {i} slot {j}");
    }
}

#[test]
fn magnitude_tables_match_torchvision() {
    let text = std::fs::read_to_string(data("magnitudes.txt")).unwrap();
    let mut checked = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let bins = if f[0] == "autoaugment" { 10 } else { 31 };
        let op = AugOp::from_name(f[1]).unwrap();
        assert_eq!(is_signed(op), f[4] == "1", "{line}");
        let table = magnitudes(op, bins, 24, 32);
        if f[2] == "none" {
            assert!(table.is_none(), "{line}");
        } else {
            let k: usize = f[2].parse().unwrap();
            assert_eq!(table.unwrap()[k], f[3].parse::<f64>().unwrap(), "{line}");
        }
        checked += 1;
    }
    assert_eq!(checked, 11 * 10 + 3 + 11 * 31 + 3);
}

#[test]
fn autoaugment_applies_the_ops_with_their_probabilities() {
    // policy 12 is (Equalize p=0.0, Equalize p=0.8): over many draws the image is equalised
    // about 0.8 of the times that policy is chosen; check the overall change rate instead:
    // with the ImageNet policy almost every draw changes a noisy image.
    let img = image("rgb");
    let aa = AutoAugment::imagenet();
    let changed = (0..400)
        .filter(|&i| aa.apply(img.clone(), &mut Rng::derive(5, &[i])).unwrap() != img)
        .count();
    assert!((300..=400).contains(&changed), "{changed}");
    // a single-entry policy with p = 0 never applies, with p = 1 always does
    let never = AutoAugment {
        policy: vec![[(AugOp::Invert, 0.0, None), (AugOp::Invert, 0.0, None)]],
    };
    let always = AutoAugment {
        policy: vec![[(AugOp::Invert, 1.0, None), (AugOp::Posterize, 1.0, Some(9))]],
    };
    let mut rng = Rng::new(1);
    assert_eq!(never.apply(img.clone(), &mut rng).unwrap(), img);
    let out = always.apply(img.clone(), &mut rng).unwrap();
    let want: Vec<u8> = img.data.iter().map(|&v| (255 - v) & 0xF0).collect();
    assert_eq!(out.data, want);
}

#[test]
fn randaugment_is_seeded_and_uses_its_magnitude() {
    let img = image("rgb");
    let ra = RandAugment::new(2, 9);
    let a = ra.apply(img.clone(), &mut Rng::new(3)).unwrap();
    let b = ra.apply(img.clone(), &mut Rng::new(3)).unwrap();
    assert_eq!(a, b);
    // N = 0 is the identity; a larger M changes the image more on average
    assert_eq!(
        RandAugment::new(0, 9)
            .apply(img.clone(), &mut Rng::new(3))
            .unwrap(),
        img
    );
    let change = |m: usize| -> f64 {
        (0..200u64)
            .map(|i| {
                let out = RandAugment::new(1, m)
                    .apply(img.clone(), &mut Rng::new(i))
                    .unwrap();
                out.data
                    .iter()
                    .zip(&img.data)
                    .map(|(&x, &y)| (x as f64 - y as f64).abs())
                    .sum::<f64>()
            })
            .sum()
    };
    assert!(
        change(25) > 1.5 * change(3),
        "{} vs {}",
        change(25),
        change(3)
    );
    let err = RandAugment::new(2, 31)
        .apply(img, &mut Rng::new(0))
        .unwrap_err();
    assert!(
        err.to_string().contains("magnitude 31 is outside 0..31"),
        "{err}"
    );
}
