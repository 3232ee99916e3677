//! CIFAR-10 and CIFAR-100 binary batches (the "binary version" of the official archives).
//!
//! A CIFAR-10 record is `label (1 byte) + 3072 bytes` (R, G, B planes of 32×32); a CIFAR-100
//! record is `coarse label, fine label, 3072 bytes` (the fine label is used). The files may sit
//! in `dir` or in the archive's own sub-folder (`cifar-10-batches-bin/`, `cifar-100-binary/`).

use crate::dataset::{ChannelStats, ClassificationData, InMemory};
use crate::error::{DataError, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const PIXELS: usize = 32 * 32 * 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Cifar10,
    Cifar100,
}

impl Variant {
    fn label_bytes(self) -> usize {
        match self {
            Variant::Cifar10 => 1,
            Variant::Cifar100 => 2,
        }
    }
    pub fn num_classes(self) -> usize {
        match self {
            Variant::Cifar10 => 10,
            Variant::Cifar100 => 100,
        }
    }
    fn files(self) -> (Vec<&'static str>, &'static str) {
        match self {
            Variant::Cifar10 => (
                vec![
                    "data_batch_1.bin",
                    "data_batch_2.bin",
                    "data_batch_3.bin",
                    "data_batch_4.bin",
                    "data_batch_5.bin",
                ],
                "test_batch.bin",
            ),
            Variant::Cifar100 => (vec!["train.bin"], "test.bin"),
        }
    }
    fn names_file(self) -> &'static str {
        match self {
            Variant::Cifar10 => "batches.meta.txt",
            Variant::Cifar100 => "fine_label_names.txt",
        }
    }
}

/// Finds the folder holding CIFAR binaries and which variant they are.
pub fn detect(dir: &Path) -> Option<(PathBuf, Variant)> {
    for root in [
        dir.to_path_buf(),
        dir.join("cifar-10-batches-bin"),
        dir.join("cifar-100-binary"),
    ] {
        if root.join("data_batch_1.bin").is_file() || root.join("test_batch.bin").is_file() {
            return Some((root, Variant::Cifar10));
        }
        if root.join("train.bin").is_file() {
            return Some((root, Variant::Cifar100));
        }
    }
    None
}

/// Reads one binary batch file, checking the record size and the label range.
pub fn read_batch(path: &Path, variant: Variant) -> Result<(Vec<u8>, Vec<usize>)> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let record = variant.label_bytes() + PIXELS;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(DataError::format(
            path,
            format!(
                "truncated or corrupt CIFAR batch: {} bytes is not a whole number of {record}-byte records (record {} is incomplete)",
                bytes.len(),
                bytes.len() / record
            ),
        ));
    }
    let n = bytes.len() / record;
    let mut pixels = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[variant.label_bytes() - 1] as usize;
        if label >= variant.num_classes() {
            return Err(DataError::Label {
                path: path.to_path_buf(),
                index: i,
                label,
                num_classes: variant.num_classes(),
            });
        }
        labels.push(label);
        let planes = &rec[variant.label_bytes()..];
        for p in 0..32 * 32 {
            pixels.extend_from_slice(&[planes[p], planes[1024 + p], planes[2048 + p]]);
        }
    }
    Ok((pixels, labels))
}

fn read_split(root: &Path, files: &[&str], variant: Variant) -> Result<InMemory> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for f in files {
        let path = root.join(f);
        if !path.is_file() {
            return Err(DataError::missing(path, "CIFAR binary batch"));
        }
        let (p, l) = read_batch(&path, variant)?;
        // Records carry no header, so a batch cut at a record boundary reads as a shorter
        // batch; the official batches of a split all hold the same number of records.
        if let Some(&(first, n)) = counts.first() {
            if l.len() != n {
                return Err(DataError::format(
                    &path,
                    format!(
                        "truncated CIFAR batch: {} records, where {first} has {n} (the batches of a split are equal)",
                        l.len()
                    ),
                ));
            }
        }
        counts.push((*f, l.len()));
        pixels.extend(p);
        labels.extend(l);
    }
    Ok(InMemory {
        shape: (32, 32, 3),
        pixels,
        labels,
        source: root.join(files[0]).display().to_string(),
    })
}

/// Opens CIFAR-10 or CIFAR-100 binary batches under `dir`.
pub fn open(dir: &Path) -> Result<ClassificationData> {
    let (root, variant) = detect(dir).ok_or_else(|| {
        DataError::missing(
            dir,
            "CIFAR binaries (data_batch_1.bin ... test_batch.bin, or train.bin + test.bin)",
        )
    })?;
    let (train_files, test_file) = variant.files();
    let train = read_split(&root, &train_files, variant)?;
    let test = read_split(&root, &[test_file], variant)?;
    let class_names = std::fs::read_to_string(root.join(variant.names_file()))
        .ok()
        .map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|v| v.len() == variant.num_classes())
        .unwrap_or_else(|| (0..variant.num_classes()).map(|i| i.to_string()).collect());
    let stats = Some(ChannelStats::of_pixels(&train.pixels, 3));
    Ok(ClassificationData {
        train: Arc::new(train),
        test: Arc::new(test),
        num_classes: variant.num_classes(),
        channels: 3,
        image_size: (32, 32),
        source: format!("{variant:?} binary batches in {}", root.display()),
        class_names,
        stats,
    })
}
