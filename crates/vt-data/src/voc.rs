//! PASCAL VOC segmentation layout (VOC2012, or any year with the same folders):
//!
//! ```text
//! JPEGImages/<id>.jpg
//! SegmentationClass/<id>.png        palette PNGs: the pixel value is the palette index
//! ImageSets/Segmentation/train.txt  one image id a line (val.txt: the test split, optional)
//! class_names.txt                   optional, one name a line; else the 21 VOC classes
//! ```
//!
//! The root may also be `VOC2012/` or `VOCdevkit/VOC2012/` below the given directory. Labels
//! are the palette *indices* ([`LabelMap::open_png`](crate::image::LabelMap::open_png)), never
//! the RGB colours; 255 marks object borders and is ignored. An id listed without its image
//! or label map is an error when the set is opened; a label map whose size differs from its
//! image, or a label outside the classes (and not 255), when the sample is read.

use crate::dataset::{Empty, SegSample, SegSet, SegmentationData};
use crate::error::{DataError, Result};
use crate::seg::SegFolder;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The 21 VOC classes in label order: background and the 20 object classes.
pub const VOC_CLASSES: [&str; 21] = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// Id lists, relative to the root.
const SPLITS_DIR: &str = "ImageSets/Segmentation";

fn is_root(dir: &Path) -> bool {
    dir.join("JPEGImages").is_dir()
        && dir.join("SegmentationClass").is_dir()
        && dir.join(SPLITS_DIR).is_dir()
}

/// The VOC root at or below `dir`: `dir` itself, else a `VOC*` folder in `dir` or in
/// `dir/VOCdevkit` (the first in name order).
pub fn voc_root(dir: &Path) -> Option<PathBuf> {
    if is_root(dir) {
        return Some(dir.to_path_buf());
    }
    for parent in [dir.to_path_buf(), dir.join("VOCdevkit")] {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("VOC"))
                    && is_root(p)
            })
            .collect();
        found.sort();
        if let Some(p) = found.into_iter().next() {
            return Some(p);
        }
    }
    None
}

/// The image ids of a split list: the first token of each non-blank line.
pub fn read_ids(list: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(list).map_err(|e| DataError::io(list, e))?;
    let ids: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    if ids.is_empty() {
        return Err(DataError::format(list, "no image ids (one id a line)"));
    }
    Ok(ids)
}

/// One split: the (image, label map) pairs of the ids in `list`, each checked to exist.
fn split(root: &Path, list: &Path, num_classes: usize) -> Result<SegFolder> {
    let (images, labels) = (root.join("JPEGImages"), root.join("SegmentationClass"));
    let mut pairs = Vec::new();
    for id in read_ids(list)? {
        let image = images.join(format!("{id}.jpg"));
        if !image.is_file() {
            return Err(DataError::missing(
                image,
                format!("image of id `{id}` listed in {}", list.display()),
            ));
        }
        let label = labels.join(format!("{id}.png"));
        if !label.is_file() {
            return Err(DataError::missing(
                label,
                format!("label map of id `{id}` listed in {}", list.display()),
            ));
        }
        pairs.push((image, label));
    }
    Ok(SegFolder {
        images_root: images,
        pairs,
        num_classes,
    })
}

/// Opens a VOC layout: `train.txt` is the training split, `val.txt` (if present) the test
/// split; class names from `class_names.txt` in the root, else [`VOC_CLASSES`].
pub fn open_voc(dir: &Path) -> Result<SegmentationData> {
    let root = voc_root(dir).ok_or_else(|| {
        DataError::missing(
            dir.join("JPEGImages"),
            "VOC layout (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)",
        )
    })?;
    let names_file = root.join("class_names.txt");
    let class_names = if names_file.is_file() {
        crate::seg::read_names(&names_file)?
    } else {
        VOC_CLASSES.map(String::from).to_vec()
    };
    let n = class_names.len();
    let lists = root.join(SPLITS_DIR);
    let train_list = lists.join("train.txt");
    if !train_list.is_file() {
        return Err(DataError::missing(train_list, "VOC training id list"));
    }
    let train = split(&root, &train_list, n)?;
    let val_list = lists.join("val.txt");
    let test: SegSet = if val_list.is_file() {
        Arc::new(split(&root, &val_list, n)?)
    } else {
        Arc::new(Empty::<SegSample>::new())
    };
    Ok(crate::seg::data(
        train,
        test,
        format!("PASCAL VOC in {}", root.display()),
        class_names,
    ))
}
