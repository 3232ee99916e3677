//! IDX files (MNIST, Fashion-MNIST), gzip-compressed or raw, and the Fashion-MNIST entry point
//! with its three sources: a given directory, the Debian package, the embedded subset.

use crate::dataset::{ChannelStats, ClassificationData, InMemory};
use crate::error::{DataError, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the Debian package `dataset-fashion-mnist` installs the full set.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// MNIST-family IDX sets have 10 classes; a label outside `0..10` is an error.
pub const IDX_NUM_CLASSES: usize = 10;

const EMBEDDED: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../../../datasets/fashion-mnist-subset/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../../../datasets/fashion-mnist-subset/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../../../datasets/fashion-mnist-subset/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../../../datasets/fashion-mnist-subset/t10k-labels-idx1-ubyte.gz"),
    ),
];

/// A parsed IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Inflates `bytes` if they start with the gzip magic; `name` is used in errors.
fn maybe_gunzip(bytes: Vec<u8>, name: &Path) -> Result<Vec<u8>> {
    if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(name, format!("corrupt or truncated gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Parses IDX bytes (after decompression), checking the magic, the number of dimensions and
/// that the payload matches the header.
pub fn parse_idx(bytes: &[u8], expected_ndim: usize, name: &Path) -> Result<IdxArray> {
    if bytes.len() < 4 {
        return Err(DataError::format(
            name,
            format!("truncated IDX file: {} bytes, no header", bytes.len()),
        ));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let expected = 0x0800 | expected_ndim as u32;
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(DataError::format(
            name,
            format!("wrong IDX magic 0x{magic:08x}: expected 0x{expected:08x} (unsigned bytes, {expected_ndim} dimensions)"),
        ));
    }
    let ndim = bytes[3] as usize;
    if ndim != expected_ndim {
        return Err(DataError::format(
            name,
            format!(
                "IDX file has {ndim} dimensions, expected {expected_ndim} (magic 0x{magic:08x})"
            ),
        ));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(DataError::format(name, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let got = bytes.len() - header;
    let shape = || {
        dims.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x")
    };
    let Some(want) = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
        return Err(DataError::format(
            name,
            format!(
                "IDX header says {} elements, more than memory can hold",
                shape()
            ),
        ));
    };
    if got != want {
        let what = if got < want { "truncated" } else { "too long" };
        return Err(DataError::format(
            name,
            format!(
                "{what} IDX data: header says {} = {want} bytes, file has {got}",
                shape()
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads an IDX file, `.gz` or raw.
pub fn read_idx(path: &Path, expected_ndim: usize) -> Result<IdxArray> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_idx(&maybe_gunzip(bytes, path)?, expected_ndim, path)
}

/// Writes an IDX file of unsigned bytes, gzip-compressed when the name ends in `.gz`.
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8]) -> Result<()> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        bytes.extend_from_slice(&(d as u32).to_be_bytes());
    }
    bytes.extend_from_slice(data);
    if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).map_err(|e| DataError::io(path, e))?;
        bytes = enc.finish().map_err(|e| DataError::io(path, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| DataError::io(path, e))
}

/// Builds a split from an images array (N, H, W) and a labels array (N,).
fn split_from_arrays(
    images: IdxArray,
    labels: IdxArray,
    names: (&Path, &Path),
    source: String,
) -> Result<InMemory> {
    let n = images.dims[0];
    if labels.dims[0] != n {
        return Err(DataError::format(
            names.1,
            format!(
                "{} labels for {n} images in {}",
                labels.dims[0],
                names.0.display()
            ),
        ));
    }
    if let Some((index, &l)) = labels
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= IDX_NUM_CLASSES)
    {
        return Err(DataError::Label {
            path: names.1.to_path_buf(),
            index,
            label: l as usize,
            num_classes: IDX_NUM_CLASSES,
        });
    }
    Ok(InMemory {
        shape: (images.dims[1], images.dims[2], 1),
        pixels: images.data,
        labels: labels.data.iter().map(|&l| l as usize).collect(),
        source,
    })
}

/// Finds `{split}-images-idx3-ubyte[.gz]` and `{split}-labels-idx1-ubyte[.gz]` in `dir`
/// (a `.` instead of the last `-` is accepted too, as some MNIST mirrors name them).
pub fn find_split(dir: &Path, split: &str) -> Result<(PathBuf, PathBuf)> {
    let find = |kind: &str, nd: usize| {
        ["-", "."]
            .iter()
            .flat_map(|sep| ["", ".gz"].map(|gz| format!("{split}-{kind}{sep}idx{nd}-ubyte{gz}")))
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                DataError::missing(
                    dir.join(format!("{split}-{kind}-idx{nd}-ubyte.gz")),
                    format!("no IDX {kind} file for split `{split}`"),
                )
            })
    };
    Ok((find("images", 3)?, find("labels", 1)?))
}

fn load_split(dir: &Path, split: &str) -> Result<InMemory> {
    let (img_path, lbl_path) = find_split(dir, split)?;
    let images = read_idx(&img_path, 3)?;
    let labels = read_idx(&lbl_path, 1)?;
    let source = img_path.display().to_string();
    split_from_arrays(images, labels, (&img_path, &lbl_path), source)
}

fn assemble(train: InMemory, test: InMemory, source: String) -> Result<ClassificationData> {
    if train.shape != test.shape {
        return Err(DataError::Shape {
            path: PathBuf::from(&test.source),
            msg: format!(
                "test images are {:?} (HxWxC) but training images are {:?}",
                test.shape, train.shape
            ),
        });
    }
    let (h, w, c) = train.shape;
    let stats = Some(ChannelStats::of_pixels(&train.pixels, c));
    Ok(ClassificationData {
        train: Arc::new(train),
        test: Arc::new(test),
        num_classes: IDX_NUM_CLASSES,
        channels: c,
        image_size: (h, w),
        source,
        class_names: (0..IDX_NUM_CLASSES).map(|i| i.to_string()).collect(),
        stats,
    })
}

/// Opens a directory of IDX files: `train-*` and `t10k-*` images and labels.
pub fn open_dir(dir: &Path) -> Result<ClassificationData> {
    if !dir.is_dir() {
        return Err(DataError::missing(dir, "IDX data set directory"));
    }
    let train = load_split(dir, "train")?;
    let test = load_split(dir, "t10k")?;
    assemble(train, test, format!("IDX files in {}", dir.display()))
}

/// The embedded class-balanced Fashion-MNIST subset (6,000 train / 1,000 test images).
pub fn embedded_fashion_mnist() -> Result<ClassificationData> {
    let part = |i: usize, nd: usize| {
        let (name, bytes) = EMBEDDED[i];
        let path = PathBuf::from(format!("<embedded>/{name}"));
        let raw = maybe_gunzip(bytes.to_vec(), &path)?;
        Ok::<_, DataError>((parse_idx(&raw, nd, &path)?, path))
    };
    let split = |i: usize, name: &str| -> Result<InMemory> {
        let (images, ip) = part(i, 3)?;
        let (labels, lp) = part(i + 1, 1)?;
        split_from_arrays(images, labels, (&ip, &lp), format!("embedded {name}"))
    };
    let train = split(0, "train")?;
    let test = split(2, "test")?;
    let mut data = assemble(
        train,
        test,
        "embedded Fashion-MNIST subset (6,000 train / 1,000 test, datasets/fashion-mnist-subset)"
            .into(),
    )?;
    data.class_names = FASHION_MNIST_CLASSES.map(String::from).to_vec();
    Ok(data)
}

/// Fashion-MNIST: the full set from `dir` when given, else from
/// [`FASHION_MNIST_SYSTEM_DIR`] when the Debian package is installed, else the embedded subset.
/// `source` says which one was used.
pub fn fashion_mnist(dir: Option<&Path>) -> Result<ClassificationData> {
    let mut data = match dir {
        Some(d) => open_dir(d)?,
        None => {
            let sys = Path::new(FASHION_MNIST_SYSTEM_DIR);
            if find_split(sys, "train").is_ok() {
                let mut d = open_dir(sys)?;
                d.source = format!("full Fashion-MNIST from {FASHION_MNIST_SYSTEM_DIR}");
                d
            } else {
                return embedded_fashion_mnist();
            }
        }
    };
    data.class_names = FASHION_MNIST_CLASSES.map(String::from).to_vec();
    Ok(data)
}
