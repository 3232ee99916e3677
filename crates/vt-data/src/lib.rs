//! # vt-data
//!
//! Data for vt's experiments: data sets in the formats users have on disk, torchvision-exact
//! augmentations, and a deterministic parallel batch loader producing candle tensors.
//! Depends on `vt-ops` (the seeded [`Rng`]) and candle only; no ambient randomness.
//!
//! * [`dataset`]: the [`Dataset`] trait, samples, [`open_classification`] /
//!   [`open_segmentation`] with format detection;
//! * formats: [`idx`] (MNIST, Fashion-MNIST, the embedded default subset), [`cifar`],
//!   [`folder`] (ImageNet layout), [`seg`] (LIP, COCO-stuff, generic), [`voc`] (PASCAL VOC,
//!   palette indices as labels), [`mosaic`] (Fashion-MNIST mosaics, the default CPU
//!   segmentation data);
//! * [`transforms`]: crops, flips, resize, normalize, AutoAugment, RandAugment; joint
//!   segmentation transforms (one draw moves image and labels) and the semantic-FPN recipes
//!   [`SegPipeline::train`] (random scale, crop, flip, pad with 255) and
//!   [`SegPipeline::eval`] (whole image padded to a multiple of 32);
//! * [`loader`]: batches of `(N, C, H, W)` f32 images and u32 labels, identical for any
//!   number of workers; segmentation batches of mixed sizes are padded to the largest;
//! * [`image`]: pixel buffers; [`decode`]: strict JPEG / PNG decoding (truncation is an error); [`error`]: [`DataError`], which names the file.
//!
//! ```
//! use std::sync::Arc;
//! use vt_data::{fashion_mnist, Compose, Loader, LoaderConfig, Normalize, Pipeline, RandomCrop, RandomHorizontalFlip};
//! let fm = fashion_mnist(None)?; // the installed full set, else the embedded subset (fm.source says which)
//! let augment = Compose::new().then(RandomCrop::padded(28, 4)).then(RandomHorizontalFlip::default());
//! let pipeline = Arc::new(Pipeline::new(augment, Some(Normalize::new(vec![0.286], vec![0.353])?)));
//! let train = Loader::new(fm.train.clone(), pipeline, LoaderConfig::new(128), &candle_core::Device::Cpu)?;
//! let batch = train.epoch(0).next().unwrap()?; // images (128, 1, 28, 28) f32, labels (128,) u32
//! assert_eq!(batch.images.dims(), &[128, 1, 28, 28]);
//! # Ok::<(), vt_data::DataError>(())
//! ```

pub mod cifar;
pub mod dataset;
pub mod decode;
pub mod error;
pub mod folder;
pub mod idx;
pub mod image;
pub mod loader;
pub mod mosaic;
pub mod seg;
pub mod transforms;
pub mod voc;

pub use dataset::{
    detect_format, open_classification, open_segmentation, ChannelStats, ClassSample,
    ClassificationData, Dataset, Format, SegSample, SegmentationData,
};
pub use error::DataError;
pub use idx::{embedded_fashion_mnist, fashion_mnist};
pub use image::{FloatImage, Image, LabelMap};
pub use loader::{Batch, Epoch, Loader, LoaderConfig, Shard};
pub use mosaic::{fashion_mnist_mosaics, MosaicConfig, Mosaics};
pub use transforms::auto::{AutoAugment, RandAugment};
pub use transforms::geometric::{
    CenterCrop, ClippedRandomCrop, Pad, RandomCrop, RandomHorizontalFlip, RandomResizedCrop,
    RandomScale, Resize,
};
pub use transforms::seg::{Joint, PadTo, SegPipeline};
pub use transforms::{Compose, GrayscaleToRgb, Normalize, Pipeline, ToTensor, Transform};
pub use vt_ops::Rng;
