//! Fashion-MNIST mosaics: a segmentation set derived from real classification images.
//!
//! Sample `i` is a pure function of `(seed, i)`: a square canvas holding 1 to `max_items`
//! non-overlapping items, each a source image (upscaled by the integer `item_scale`) pasted at
//! a random position. The canvas is cut into a grid of cells as large as fits an item (2×2
//! cells of 32 px for 28 px items on 64 px; 4×4 cells of 64 px for 2× items on 256 px); items
//! go to distinct random cells, at a random offset inside their cell, so boxes never intersect
//! and every count up to the number of cells is reachable. A source pixel whose intensity is
//! above `threshold` is labelled `class + 1` (upscaled items: every pixel it covers, nearest
//! neighbour, while the image is upscaled bilinearly); every other pixel is 0 (background).
//! So a 10-class source gives 11 classes.

use crate::dataset::{ClassSet, Dataset, SegSample, SegmentationData};
use crate::error::{DataError, Result};
use crate::image::{Image, LabelMap};
use std::path::Path;
use std::sync::Arc;
use vt_ops::Rng;

/// Stream label of mosaic sampling (kept apart from the loader's streams).
const MOSAIC_STREAM: u64 = 0x6d6f_7361_6963;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MosaicConfig {
    /// Canvas side in pixels.
    pub canvas: usize,
    /// Integer upscale of every item (1 keeps Fashion-MNIST's 28 px; 2 gives 56 px items).
    pub item_scale: usize,
    pub min_items: usize,
    pub max_items: usize,
    /// Item pixels strictly above this intensity are foreground.
    pub threshold: u8,
    /// Number of mosaics in the set.
    pub len: usize,
    pub seed: u64,
}

impl MosaicConfig {
    /// 64×64 canvases with 1-4 items at their own size, foreground above intensity 32.
    pub fn new(len: usize, seed: u64) -> Self {
        Self {
            canvas: 64,
            item_scale: 1,
            min_items: 1,
            max_items: 4,
            threshold: 32,
            len,
            seed,
        }
    }
}

/// Where one item of a mosaic came from and where it lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MosaicItem {
    pub source_index: usize,
    pub class: usize,
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

pub struct Mosaics {
    source: ClassSet,
    cfg: MosaicConfig,
    num_source_classes: usize,
    /// Cells per side and the side of a cell.
    grid: usize,
    cell: usize,
}

impl Mosaics {
    pub fn new(source: ClassSet, num_source_classes: usize, cfg: MosaicConfig) -> Result<Self> {
        if source.is_empty() {
            return Err(DataError::Config("mosaics need a non-empty source".into()));
        }
        if cfg.min_items == 0 || cfg.min_items > cfg.max_items {
            return Err(DataError::Config(format!(
                "mosaic items must satisfy 1 <= min_items <= max_items, got {}..={}",
                cfg.min_items, cfg.max_items
            )));
        }
        if cfg.item_scale == 0 {
            return Err(DataError::Config(
                "mosaic item_scale must be at least 1".into(),
            ));
        }
        let first = source.get(0)?.image;
        let item = first.width.max(first.height) * cfg.item_scale;
        if first.channels != 1 || item > cfg.canvas {
            return Err(DataError::Config(format!(
                "mosaic items must be grayscale and fit the {0}x{0} canvas at item_scale {1}, \
                 got {2:?} (HxWxC)",
                cfg.canvas,
                cfg.item_scale,
                first.shape()
            )));
        }
        let grid = cfg.canvas / item;
        if cfg.max_items > grid * grid {
            return Err(DataError::Config(format!(
                "a {0}x{0} canvas holds at most {1} non-overlapping {2}x{2} items, max_items is {3}",
                cfg.canvas,
                grid * grid,
                item,
                cfg.max_items
            )));
        }
        Ok(Self {
            source,
            cfg,
            num_source_classes,
            grid,
            cell: cfg.canvas / grid,
        })
    }

    pub fn num_classes(&self) -> usize {
        self.num_source_classes + 1
    }

    /// Mosaic `index` and the items it holds.
    pub fn compose(&self, index: usize) -> Result<(SegSample, Vec<MosaicItem>)> {
        if index >= self.cfg.len {
            return Err(DataError::Index {
                index,
                len: self.cfg.len,
                source_name: "mosaics".into(),
            });
        }
        let c = self.cfg.canvas;
        let mut rng = Rng::derive(self.cfg.seed, &[MOSAIC_STREAM, index as u64]);
        let span = (self.cfg.max_items - self.cfg.min_items + 1) as u64;
        let want = self.cfg.min_items + rng.below(span) as usize;
        let mut image = Image::filled(c, c, 1, 0);
        let mut label = LabelMap::new(c, c, vec![0; c * c])?;
        let mut cells: Vec<usize> = (0..self.grid * self.grid).collect();
        rng.shuffle(&mut cells);
        let mut items: Vec<MosaicItem> = Vec::with_capacity(want);
        for &cell in &cells[..want] {
            let source_index = rng.below(self.source.len() as u64) as usize;
            let sample = self.source.get(source_index)?;
            let k = self.cfg.item_scale;
            let (sw, sh) = (sample.image.width, sample.image.height);
            let (w, h) = (sw * k, sh * k);
            if w > self.cell || h > self.cell || sample.image.channels != 1 {
                return Err(DataError::Shape {
                    path: self.source.describe(source_index).into(),
                    msg: format!(
                        "item {:?} (HxWxC) at scale {k} does not fit a {1}x{1} mosaic cell",
                        sample.image.shape(),
                        self.cell
                    ),
                });
            }
            let scaled = crate::image::resize_bilinear(&sample.image, w, h);
            let x = (cell % self.grid) * self.cell + rng.below((self.cell - w + 1) as u64) as usize;
            let y = (cell / self.grid) * self.cell + rng.below((self.cell - h + 1) as u64) as usize;
            let class = sample.label;
            for yy in 0..h {
                for xx in 0..w {
                    let p = (y + yy) * c + x + xx;
                    image.data[p] = scaled.data[yy * w + xx];
                    // the mask of an upscaled item is the source mask, nearest neighbour
                    if sample.image.data[(yy / k) * sw + xx / k] > self.cfg.threshold {
                        label.data[p] = (class + 1) as u8;
                    }
                }
            }
            items.push(MosaicItem {
                source_index,
                class,
                x,
                y,
                width: w,
                height: h,
            });
        }
        Ok((SegSample { image, label }, items))
    }
}

impl Dataset for Mosaics {
    type Sample = SegSample;
    fn len(&self) -> usize {
        self.cfg.len
    }
    fn get(&self, index: usize) -> Result<SegSample> {
        Ok(self.compose(index)?.0)
    }
    fn describe(&self, index: usize) -> String {
        format!("mosaic {index} (seed {})", self.cfg.seed)
    }
}

/// Fashion-MNIST mosaics (11 classes, 0 = background) built from [`crate::fashion_mnist`]:
/// training mosaics from the training split, test mosaics from the test split (seed + 1).
pub fn fashion_mnist_mosaics(
    dir: Option<&Path>,
    train: MosaicConfig,
    test_len: usize,
) -> Result<SegmentationData> {
    let fm = crate::idx::fashion_mnist(dir)?;
    let test_cfg = MosaicConfig {
        len: test_len,
        seed: train.seed.wrapping_add(1),
        ..train
    };
    let tr = Mosaics::new(fm.train.clone(), fm.num_classes, train)?;
    let te = Mosaics::new(fm.test.clone(), fm.num_classes, test_cfg)?;
    let class_names = std::iter::once("background".to_string())
        .chain(fm.class_names.iter().cloned())
        .collect();
    Ok(SegmentationData {
        num_classes: tr.num_classes(),
        class_names,
        ignore_index: crate::seg::IGNORE_INDEX,
        source: format!("Fashion-MNIST mosaics of {}", fm.source),
        stats: None, // mostly background: estimated from samples by the run
        train: Arc::new(tr),
        test: Arc::new(te),
    })
}
