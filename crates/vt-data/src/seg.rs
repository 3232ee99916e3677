//! Segmentation folders: pairs of an image and a PNG label map of the same size.
//!
//! * LIP: `train_images/*.jpg` + `train_segmentations/*.png`, `val_images/` +
//!   `val_segmentations/` (optionally under `TrainVal_images/` and
//!   `TrainVal_parsing_annotations/`); 20 classes, 0 = background.
//! * COCO-stuff (164k): `images/{train,val}2017/*.jpg` + `annotations/{train,val}2017/*.png`;
//!   182 label ids, 255 = unlabeled (ignored).
//! * Generic: `images/` + `labels/`, either with `train/` and `val/` inside both or flat (then
//!   every pair is a training pair and the test split is empty). The class count comes from a
//!   `classes.txt` (one name per line) when present, else from the largest label found.
//!
//! In every layout 255 is the ignore index; any other label `>= num_classes` is an error.

use crate::dataset::{ChannelStats, Dataset, Empty, SegSample, SegSet, SegmentationData};
use crate::error::{DataError, Result};
use crate::folder::walk_images;
use crate::image::{Image, LabelMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const IGNORE_INDEX: u8 = 255;
pub const LIP_NUM_CLASSES: usize = 20;
pub const COCOSTUFF_NUM_CLASSES: usize = 182;
/// LIP's class names in label order.
pub const LIP_CLASSES: [&str; LIP_NUM_CLASSES] = [
    "background",
    "hat",
    "hair",
    "glove",
    "sunglasses",
    "upper-clothes",
    "dress",
    "coat",
    "socks",
    "pants",
    "jumpsuits",
    "scarf",
    "skirt",
    "face",
    "left-arm",
    "right-arm",
    "left-leg",
    "right-leg",
    "left-shoe",
    "right-shoe",
];

/// One split: (image, label map) file pairs decoded on `get`.
pub struct SegFolder {
    pub images_root: PathBuf,
    pub pairs: Vec<(PathBuf, PathBuf)>,
    pub num_classes: usize,
}

impl SegFolder {
    /// Pairs every image below `images` with `labels/<same relative path>.png`.
    pub fn scan(images: &Path, labels: &Path, num_classes: usize) -> Result<Self> {
        for (dir, what) in [(images, "images folder"), (labels, "label maps folder")] {
            if !dir.is_dir() {
                return Err(DataError::missing(dir, what));
            }
        }
        let mut files = Vec::new();
        walk_images(images, &mut files)?;
        if files.is_empty() {
            return Err(DataError::format(images, "no JPEG or PNG images"));
        }
        let mut pairs = Vec::with_capacity(files.len());
        for f in files {
            let rel = f.strip_prefix(images).unwrap_or(&f);
            let label = labels.join(rel).with_extension("png");
            if !label.is_file() {
                return Err(DataError::missing(
                    label,
                    format!("label map for image {}", f.display()),
                ));
            }
            pairs.push((f, label));
        }
        Ok(Self {
            images_root: images.to_path_buf(),
            pairs,
            num_classes,
        })
    }

    /// Reads only the label map of sample `index` (for class statistics).
    pub fn label(&self, index: usize) -> Result<LabelMap> {
        let (_, lp) = self.pair(index)?;
        LabelMap::open_png(lp)
    }

    fn pair(&self, index: usize) -> Result<&(PathBuf, PathBuf)> {
        self.pairs.get(index).ok_or_else(|| DataError::Index {
            index,
            len: self.pairs.len(),
            source_name: self.images_root.display().to_string(),
        })
    }
}

/// Checks a label map against its image and the class range.
pub fn check_label_map(
    label: &LabelMap,
    image: &Image,
    path: &Path,
    num_classes: usize,
) -> Result<()> {
    if (label.width, label.height) != (image.width, image.height) {
        return Err(DataError::Shape {
            path: path.to_path_buf(),
            msg: format!(
                "label map is {}x{} (WxH) but its image is {}x{}",
                label.width, label.height, image.width, image.height
            ),
        });
    }
    if let Some(i) = label
        .data
        .iter()
        .position(|&l| l != IGNORE_INDEX && l as usize >= num_classes)
    {
        return Err(DataError::format(
            path,
            format!(
                "pixel (x {}, y {}) has label {} outside the class range 0..{num_classes} (255 = ignore)",
                i % label.width,
                i / label.width,
                label.data[i]
            ),
        ));
    }
    Ok(())
}

impl Dataset for SegFolder {
    type Sample = SegSample;
    fn len(&self) -> usize {
        self.pairs.len()
    }
    fn get(&self, index: usize) -> Result<SegSample> {
        let (ip, lp) = self.pair(index)?;
        let image = Image::open_rgb(ip)?;
        let label = LabelMap::open_png(lp)?;
        check_label_map(&label, &image, lp, self.num_classes)?;
        Ok(SegSample { image, label })
    }
    fn describe(&self, index: usize) -> String {
        self.pairs
            .get(index)
            .map(|(i, l)| format!("{} + {}", i.display(), l.display()))
            .unwrap_or_else(|| format!("sample {index}"))
    }
}

/// `(images root, annotations root)` of a LIP layout, if `dir` holds one.
pub fn lip_root(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    [
        (dir.to_path_buf(), dir.to_path_buf()),
        (
            dir.join("TrainVal_images"),
            dir.join("TrainVal_parsing_annotations"),
        ),
    ]
    .into_iter()
    .find(|(i, a)| i.join("train_images").is_dir() && a.join("train_segmentations").is_dir())
}

pub(crate) fn data(
    train: SegFolder,
    test: SegSet,
    source: String,
    class_names: Vec<String>,
) -> SegmentationData {
    SegmentationData {
        num_classes: train.num_classes,
        ignore_index: IGNORE_INDEX,
        source,
        class_names,
        // Photos (LIP, COCO-stuff, generic folders): ImageNet's constants, as detectron2 uses.
        stats: Some(ChannelStats::imagenet()),
        train: Arc::new(train),
        test,
    }
}

pub fn open_lip(dir: &Path) -> Result<SegmentationData> {
    let (imgs, anns) = lip_root(dir).ok_or_else(|| {
        DataError::missing(
            dir.join("train_images"),
            "LIP layout (train_images/ + train_segmentations/)",
        )
    })?;
    let n = LIP_NUM_CLASSES;
    let train = SegFolder::scan(
        &imgs.join("train_images"),
        &anns.join("train_segmentations"),
        n,
    )?;
    let test = SegFolder::scan(&imgs.join("val_images"), &anns.join("val_segmentations"), n)?;
    Ok(data(
        train,
        Arc::new(test),
        format!("LIP in {}", dir.display()),
        LIP_CLASSES.map(String::from).to_vec(),
    ))
}

pub fn open_cocostuff(dir: &Path) -> Result<SegmentationData> {
    let n = COCOSTUFF_NUM_CLASSES;
    let split = |s: &str| {
        SegFolder::scan(
            &dir.join("images").join(s),
            &dir.join("annotations").join(s),
            n,
        )
    };
    let train = split("train2017")?;
    let test = split("val2017")?;
    Ok(data(
        train,
        Arc::new(test),
        format!("COCO-stuff in {}", dir.display()),
        Vec::new(),
    ))
}

pub fn open_generic(dir: &Path) -> Result<SegmentationData> {
    let (images, labels) = (dir.join("images"), dir.join("labels"));
    let classes = dir.join("classes.txt");
    let names = if classes.is_file() {
        read_names(&classes)?
    } else {
        Vec::new()
    };
    let declared = (!names.is_empty()).then_some(names.len());
    let split_dirs = images.join("train").is_dir();
    let scan = |sub: Option<&str>| {
        let (i, l) = match sub {
            Some(s) => (images.join(s), labels.join(s)),
            None => (images.clone(), labels.clone()),
        };
        SegFolder::scan(&i, &l, declared.unwrap_or(usize::from(IGNORE_INDEX)))
    };
    let (mut train, mut test) = if split_dirs {
        let val = if images.join("val").is_dir() {
            "val"
        } else {
            "test"
        };
        (scan(Some("train"))?, Some(scan(Some(val))?))
    } else {
        (scan(None)?, None)
    };
    if declared.is_none() {
        // no classes.txt: the class count is one past the largest label in any map
        let mut max = 0u8;
        for set in std::iter::once(&train).chain(test.as_ref()) {
            for i in 0..set.len() {
                let m = set.label(i)?;
                max = m
                    .data
                    .iter()
                    .copied()
                    .filter(|&l| l != IGNORE_INDEX)
                    .fold(max, u8::max);
            }
        }
        train.num_classes = max as usize + 1;
        if let Some(t) = test.as_mut() {
            t.num_classes = max as usize + 1;
        }
    }
    let test: SegSet = match test {
        Some(t) => Arc::new(t),
        None => Arc::new(Empty::<SegSample>::new()),
    };
    Ok(data(
        train,
        test,
        format!("segmentation folders {}", dir.display()),
        names,
    ))
}

/// Class names, one a line (blank lines skipped, names trimmed); an empty file is an error.
pub(crate) fn read_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.is_empty() {
        return Err(DataError::format(path, "no class names (one name a line)"));
    }
    if names.len() > usize::from(IGNORE_INDEX) {
        return Err(DataError::format(
            path,
            format!(
                "{} class names, but labels are 8-bit with 255 = ignore (at most 255 classes)",
                names.len()
            ),
        ));
    }
    Ok(names)
}
