//! The [`Dataset`] trait, the sample types, and the entry points that open any supported format
//! ([`open_classification`], [`open_segmentation`]) with format detection.

use crate::error::{DataError, Result};
use crate::image::{Image, LabelMap};
use std::path::Path;
use std::sync::Arc;

/// A random-access data set. `get` is fallible: files are decoded lazily and may be corrupt.
pub trait Dataset: Send + Sync {
    type Sample;
    fn len(&self) -> usize;
    fn get(&self, index: usize) -> Result<Self::Sample>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Where sample `index` comes from (a file, or a file and record), for error reports.
    fn describe(&self, index: usize) -> String {
        format!("sample {index}")
    }
}

/// An image with its class index.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassSample {
    pub image: Image,
    pub label: usize,
}

/// An image with its per-pixel labels (same width and height).
#[derive(Clone, Debug, PartialEq)]
pub struct SegSample {
    pub image: Image,
    pub label: LabelMap,
}

pub type ClassSet = Arc<dyn Dataset<Sample = ClassSample>>;
pub type SegSet = Arc<dyn Dataset<Sample = SegSample>>;

/// The train and test splits of a classification data set and what a model needs to know.
#[derive(Clone)]
pub struct ClassificationData {
    pub train: ClassSet,
    pub test: ClassSet,
    pub num_classes: usize,
    pub channels: usize,
    /// (height, width) of the stored images; for image folders, of the first training image.
    pub image_size: (usize, usize),
    /// Human-readable: which files or directory were used.
    pub source: String,
    /// Class names in label order (folder names, or the data set's own names).
    pub class_names: Vec<String>,
}

/// The train and test splits of a segmentation data set.
#[derive(Clone)]
pub struct SegmentationData {
    pub train: SegSet,
    pub test: SegSet,
    /// Number of classes, background included; labels `>= num_classes` other than
    /// `ignore_index` are errors.
    pub num_classes: usize,
    /// Label of pixels that carry no class (COCO-stuff's "unlabeled", padding): 255 for every
    /// layout vt-data reads.
    pub ignore_index: u8,
    pub source: String,
    /// Class names in label order; empty where the layout names none (COCO-stuff, generic
    /// folders without `classes.txt`).
    pub class_names: Vec<String>,
}

/// The on-disk formats vt-data reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// IDX files (MNIST, Fashion-MNIST), `.gz` or raw.
    Idx,
    /// CIFAR-10 (`data_batch_*.bin`, `test_batch.bin`) or CIFAR-100 (`train.bin`, `test.bin`).
    Cifar,
    /// ImageNet-style `train/<class>/*` and `val/<class>/*` (or `test/`).
    Folder,
    /// Generic segmentation: `images/` + `labels/` (optionally with `train/` and `val/` inside).
    SegFolder,
    /// LIP: `train_images/`, `train_segmentations/`, `val_images/`, `val_segmentations/`.
    Lip,
    /// COCO-stuff: `images/{train,val}2017/*.jpg` + `annotations/{train,val}2017/*.png`.
    CocoStuff,
    /// PASCAL VOC: `JPEGImages/`, `SegmentationClass/` (palette PNGs),
    /// `ImageSets/Segmentation/{train,val}.txt`.
    Voc,
}

impl Format {
    pub const ALL: [Format; 7] = [
        Format::Idx,
        Format::Cifar,
        Format::Folder,
        Format::SegFolder,
        Format::Lip,
        Format::CocoStuff,
        Format::Voc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Idx => "idx",
            Format::Cifar => "cifar",
            Format::Folder => "folder",
            Format::SegFolder => "seg-folder",
            Format::Lip => "lip",
            Format::CocoStuff => "cocostuff",
            Format::Voc => "voc",
        }
    }

    pub fn is_segmentation(self) -> bool {
        matches!(
            self,
            Format::SegFolder | Format::Lip | Format::CocoStuff | Format::Voc
        )
    }
}

impl std::str::FromStr for Format {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
                DataError::Config(format!(
                    "unknown format `{s}` (one of: {})",
                    names.join(", ")
                ))
            })
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Recognises a data set directory by the files it holds.
pub fn detect_format(path: &Path) -> Result<Format> {
    if !path.is_dir() {
        return Err(DataError::missing(path, "expected a data set directory"));
    }
    let has = |rel: &str| path.join(rel).exists();
    if crate::idx::find_split(path, "train").is_ok() {
        return Ok(Format::Idx);
    }
    if crate::cifar::detect(path).is_some() {
        return Ok(Format::Cifar);
    }
    if crate::seg::lip_root(path).is_some() {
        return Ok(Format::Lip);
    }
    if crate::voc::voc_root(path).is_some() {
        return Ok(Format::Voc);
    }
    if has("annotations") && has("images") {
        return Ok(Format::CocoStuff);
    }
    if has("images") && has("labels") {
        return Ok(Format::SegFolder);
    }
    if has("train") && (has("val") || has("test")) {
        return Ok(Format::Folder);
    }
    Err(DataError::format(
        path,
        "cannot detect the data set format (expected IDX files, CIFAR binary batches, \
         train/ + val/ class folders, images/ + labels/, LIP, COCO-stuff or VOC folders); \
         pass --format",
    ))
}

/// Opens any classification format (auto-detected unless `format` is given).
pub fn open_classification(path: &Path, format: Option<Format>) -> Result<ClassificationData> {
    let format = match format {
        Some(f) => f,
        None => detect_format(path)?,
    };
    match format {
        Format::Idx => crate::idx::open_dir(path),
        Format::Cifar => crate::cifar::open(path),
        Format::Folder => crate::folder::open(path),
        seg => Err(DataError::format(
            path,
            format!("`{seg}` is a segmentation format; open it with open_segmentation"),
        )),
    }
}

/// Opens any segmentation format (auto-detected unless `format` is given).
pub fn open_segmentation(path: &Path, format: Option<Format>) -> Result<SegmentationData> {
    let format = match format {
        Some(f) => f,
        None => detect_format(path)?,
    };
    match format {
        Format::SegFolder => crate::seg::open_generic(path),
        Format::Lip => crate::seg::open_lip(path),
        Format::CocoStuff => crate::seg::open_cocostuff(path),
        Format::Voc => crate::voc::open_voc(path),
        cls => Err(DataError::format(
            path,
            format!("`{cls}` is a classification format; open it with open_classification"),
        )),
    }
}

/// Images and labels held in memory (IDX, CIFAR, and test fixtures).
pub struct InMemory {
    /// (height, width, channels) of every image.
    pub shape: (usize, usize, usize),
    pub pixels: Vec<u8>,
    pub labels: Vec<usize>,
    pub source: String,
}

impl Dataset for InMemory {
    type Sample = ClassSample;
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn get(&self, index: usize) -> Result<ClassSample> {
        let label = *self.labels.get(index).ok_or_else(|| DataError::Index {
            index,
            len: self.labels.len(),
            source_name: self.source.clone(),
        })?;
        let (h, w, c) = self.shape;
        let n = h * w * c;
        Ok(ClassSample {
            image: Image {
                width: w,
                height: h,
                channels: c,
                data: self.pixels[index * n..(index + 1) * n].to_vec(),
            },
            label,
        })
    }
    fn describe(&self, index: usize) -> String {
        format!("{} record {index}", self.source)
    }
}

/// An empty split (a layout with no test data).
pub struct Empty<S>(std::marker::PhantomData<fn() -> S>);

impl<S> Empty<S> {
    pub fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<S> Default for Empty<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Dataset for Empty<S> {
    type Sample = S;
    fn len(&self) -> usize {
        0
    }
    fn get(&self, index: usize) -> Result<S> {
        Err(DataError::Index {
            index,
            len: 0,
            source_name: "empty split".into(),
        })
    }
}

impl std::fmt::Debug for ClassificationData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassificationData")
            .field("train", &self.train.len())
            .field("test", &self.test.len())
            .field("num_classes", &self.num_classes)
            .field("channels", &self.channels)
            .field("image_size", &self.image_size)
            .field("source", &self.source)
            .finish()
    }
}

impl std::fmt::Debug for SegmentationData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentationData")
            .field("train", &self.train.len())
            .field("test", &self.test.len())
            .field("num_classes", &self.num_classes)
            .field("ignore_index", &self.ignore_index)
            .field("source", &self.source)
            .field("class_names", &self.class_names.len())
            .finish()
    }
}
