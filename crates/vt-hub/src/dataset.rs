//! A hub dataset's parquet shards as a classification data set: each row holds an encoded
//! image (a `{bytes, path}` struct column, or a binary column) and an integer label.

use crate::{dataset_snapshot, HubError, RepoId, Result};
use parquet::file::reader::SerializedFileReader;
use parquet::record::{Field, Row};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vt_data::dataset::{ClassSet, ClassificationData};
use vt_data::{ClassSample, Dataset, Image};

/// Encoded images with their labels, decoded on `get` (strictly: a truncated image is the
/// sample's error). The encoded bytes of every shard are held in memory, which suits the
/// MNIST / CIFAR sized sets; an ImageNet-sized set needs a folder layout instead.
struct EncodedImages {
    samples: Vec<(Vec<u8>, usize)>,
    /// `(first sample, shard path)` of each shard, for messages.
    shards: Vec<(usize, PathBuf)>,
    grey: bool,
}

impl EncodedImages {
    fn origin(&self, index: usize) -> (PathBuf, usize) {
        let k = self.shards.partition_point(|(first, _)| *first <= index) - 1;
        let (first, path) = &self.shards[k];
        (path.clone(), index - first)
    }
}

impl Dataset for EncodedImages {
    type Sample = ClassSample;
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn get(&self, index: usize) -> vt_data::error::Result<ClassSample> {
        let (bytes, label) = self
            .samples
            .get(index)
            .ok_or_else(|| vt_data::DataError::Index {
                index,
                len: self.samples.len(),
                source_name: "hub dataset".into(),
            })?;
        let (shard, row) = self.origin(index);
        let image = Image::decode_rgb(bytes, &shard.join(format!("row-{row}")))?;
        Ok(ClassSample {
            image: if self.grey { image.to_grey() } else { image },
            label: *label,
        })
    }
    fn describe(&self, index: usize) -> String {
        let (shard, row) = self.origin(index);
        format!("{} row {row}", shard.display())
    }
    fn class_label(&self, index: usize) -> Option<vt_data::error::Result<usize>> {
        self.samples.get(index).map(|s| Ok(s.1))
    }
}

/// Which split a shard belongs to, from its path in the repository (`data/train-00000-of-
/// 00001.parquet`, `plain_text/test/0000.parquet`): `Some(true)` train, `Some(false)` test
/// (or validation), `None` neither.
fn split_of(name: &str) -> Option<bool> {
    let parts: Vec<&str> = name.split(['/', '-', '_', '.']).collect();
    if parts.contains(&"train") {
        Some(true)
    } else if parts
        .iter()
        .any(|p| matches!(*p, "test" | "validation" | "valid" | "val"))
    {
        Some(false)
    } else {
        None
    }
}

fn integer(f: &Field) -> Option<i64> {
    Some(match f {
        Field::Byte(v) => *v as i64,
        Field::Short(v) => *v as i64,
        Field::Int(v) => *v as i64,
        Field::Long(v) => *v,
        Field::UByte(v) => *v as i64,
        Field::UShort(v) => *v as i64,
        Field::UInt(v) => *v as i64,
        Field::ULong(v) => *v as i64,
        _ => return None,
    })
}

/// The encoded image and the label of one row: the image is a binary column or the `bytes`
/// of a struct column; the label is the column named `label` / `labels` / `fine_label`, else
/// the first integer column.
fn image_and_label(row: &Row) -> std::result::Result<(Vec<u8>, usize), String> {
    let mut image = None;
    let (mut named, mut first_int) = (None, None);
    for (name, f) in row.get_column_iter() {
        match f {
            Field::Bytes(b) if image.is_none() => image = Some(b.data().to_vec()),
            Field::Group(g) if image.is_none() => {
                image = g.get_column_iter().find_map(|(n, f)| match f {
                    Field::Bytes(b) if n == "bytes" => Some(b.data().to_vec()),
                    _ => None,
                })
            }
            f => {
                if let Some(v) = integer(f) {
                    if matches!(name.as_str(), "label" | "labels" | "fine_label") {
                        named = Some(v);
                    }
                    first_int.get_or_insert(v);
                }
            }
        }
    }
    let image = image.ok_or("no image column (binary, or a struct with `bytes`)")?;
    let label = named.or(first_int).ok_or("no integer label column")?;
    let label = usize::try_from(label).map_err(|_| format!("negative label {label}"))?;
    Ok((image, label))
}

fn read_shard(path: &Path, into: &mut EncodedImages) -> Result<()> {
    let parquet = |source| HubError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(|e| HubError::Format {
        path: path.into(),
        msg: format!("cannot open: {e}"),
    })?;
    let reader = SerializedFileReader::new(file).map_err(parquet)?;
    into.shards.push((into.samples.len(), path.to_path_buf()));
    for (i, row) in reader.into_iter().enumerate() {
        let row = row.map_err(parquet)?;
        let sample = image_and_label(&row).map_err(|msg| HubError::Format {
            path: path.into(),
            msg: format!("row {i}: {msg}"),
        })?;
        into.samples.push(sample);
    }
    Ok(())
}

/// The train and test splits of dataset repository `repo`, from its cached parquet shards.
pub fn open_dataset(repo: &RepoId) -> Result<ClassificationData> {
    let files = dataset_snapshot(repo)?;
    let mut splits = [(); 2].map(|_| EncodedImages {
        samples: vec![],
        shards: vec![],
        grey: false,
    });
    let mut shards: Vec<&(String, PathBuf)> = files
        .iter()
        .filter(|(n, _)| n.ends_with(".parquet"))
        .collect();
    shards.sort();
    for (name, path) in shards {
        if let Some(train) = split_of(name) {
            read_shard(path, &mut splits[usize::from(!train)])?;
        }
    }
    let [train, test] = splits;
    let source = format!(
        "hub dataset {repo} (cache {})",
        crate::cache_dir().display()
    );
    if train.samples.is_empty() || test.samples.is_empty() {
        return Err(HubError::Format {
            path: crate::cache_dir(),
            msg: format!("{repo}: no train and test parquet shards in the cached snapshot"),
        });
    }
    let num_classes = 1 + train
        .samples
        .iter()
        .chain(&test.samples)
        .map(|s| s.1)
        .max()
        .unwrap_or(0);
    // Grey when the first images decode with equal channels (MNIST, Fashion-MNIST).
    // (an undecodable sample is reported when it is read, as in every other layout)
    let mut probe: Vec<Image> = (0..train.samples.len().min(16))
        .filter_map(|i| train.get(i).ok().map(|s| s.image))
        .collect();
    if probe.is_empty() {
        probe.push(train.get(0)?.image);
    }
    let grey = probe
        .iter()
        .all(|im| im.data.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    let (h, w) = (probe[0].height, probe[0].width);
    let finish = |mut s: EncodedImages| -> ClassSet {
        s.grey = grey;
        Arc::new(s)
    };
    Ok(ClassificationData {
        train: finish(train),
        test: finish(test),
        num_classes,
        channels: if grey { 1 } else { 3 },
        image_size: (h, w),
        source,
        class_names: (0..num_classes).map(|i| i.to_string()).collect(),
        stats: None,
    })
}

#[cfg(test)]
mod tests {
    use super::split_of;

    #[test]
    fn splits_from_shard_names() {
        assert_eq!(split_of("data/train-00000-of-00001.parquet"), Some(true));
        assert_eq!(split_of("plain_text/test/0000.parquet"), Some(false));
        assert_eq!(split_of("fashion_mnist/validation-0.parquet"), Some(false));
        assert_eq!(split_of("README.parquet"), None);
        assert_eq!(split_of("data/contest-0.parquet"), None);
    }
}
