//! The [`Dataset`] trait, the sample types, and the entry points that open any supported format
//! ([`open_classification`], [`open_segmentation`]) with format detection.

use crate::error::{DataError, Result};
use crate::image::{Image, LabelMap};
use crate::transforms::Normalize;
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
    /// The class label of sample `index` without decoding its image, where the format keeps
    /// labels apart from pixels (`None`: read it through `get`).
    fn class_label(&self, index: usize) -> Option<Result<usize>> {
        let _ = index;
        None
    }
}

/// Per-channel mean and standard deviation of a data set's pixels scaled to `[0, 1]`: what
/// `Normalize` takes.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelStats {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl ChannelStats {
    /// The ImageNet constants torchvision uses, the known statistics of natural RGB photos.
    pub fn imagenet() -> Self {
        Self {
            mean: Normalize::IMAGENET_MEAN.to_vec(),
            std: Normalize::IMAGENET_STD.to_vec(),
        }
    }

    /// Of interleaved (HWC) 8-bit pixels with `channels` channels, exactly (a histogram per
    /// channel, so 60,000 digits take milliseconds).
    pub fn of_pixels(pixels: &[u8], channels: usize) -> Self {
        let mut hist = vec![[0u64; 256]; channels.max(1)];
        for px in pixels.chunks_exact(channels.max(1)) {
            for (h, &v) in hist.iter_mut().zip(px) {
                h[v as usize] += 1;
            }
        }
        Self::of_histograms(&hist)
    }

    /// Of a sample of images (all with the same channel count).
    pub fn of_images<'a>(images: impl IntoIterator<Item = &'a Image>) -> Self {
        let mut hist: Vec<[u64; 256]> = Vec::new();
        for img in images {
            hist.resize(img.channels, [0; 256]);
            for px in img.data.chunks_exact(img.channels) {
                for (h, &v) in hist.iter_mut().zip(px) {
                    h[v as usize] += 1;
                }
            }
        }
        Self::of_histograms(&hist)
    }

    fn of_histograms(hist: &[[u64; 256]]) -> Self {
        let (mut mean, mut std) = (vec![], vec![]);
        for h in hist {
            let n = h.iter().sum::<u64>().max(1) as f64;
            let m = (0..256).map(|v| h[v] as f64 * v as f64).sum::<f64>() / n / 255.0;
            let var = (0..256)
                .map(|v| h[v] as f64 * (v as f64 / 255.0 - m).powi(2))
                .sum::<f64>()
                / n;
            mean.push(m as f32);
            // A constant channel would divide by zero: floor at one grey level.
            std.push(var.sqrt().max(1.0 / 255.0) as f32);
        }
        Self { mean, std }
    }

    pub fn normalize(&self) -> Result<Normalize> {
        Normalize::new(self.mean.clone(), self.std.clone())
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
    /// Pixel statistics of the training split, or the known constants of its kind of images
    /// (`None`: unknown; estimate them from samples).
    pub stats: Option<ChannelStats>,
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
    /// As [`ClassificationData::stats`].
    pub stats: Option<ChannelStats>,
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
    fn class_label(&self, index: usize) -> Option<Result<usize>> {
        Some(
            self.labels
                .get(index)
                .copied()
                .ok_or_else(|| DataError::Index {
                    index,
                    len: self.labels.len(),
                    source_name: self.source.clone(),
                }),
        )
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
