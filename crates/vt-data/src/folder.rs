//! Image folders in the ImageNet layout: `train/<class>/**/*.JPEG`, `val/<class>/...` (or
//! `test/`). Classes are the sub-folder names sorted by code point and files are walked in
//! sorted order, as torchvision's `ImageFolder` does; only JPEG and PNG files are read.

use crate::dataset::{ChannelStats, ClassSample, ClassificationData, Dataset};
use crate::error::{DataError, Result};
use crate::image::Image;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

pub fn is_image_file(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Sorted entries of a directory; errors name the directory.
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut out = Vec::new();
    for e in rd {
        out.push(e.map_err(|e| DataError::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// Every image file below `dir`, walked in sorted order (files of a folder before its
/// sub-folders' files, as `os.walk` + `sorted` gives).
pub(crate) fn walk_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = sorted_entries(dir)?;
    out.extend(
        entries
            .iter()
            .filter(|p| p.is_file() && is_image_file(p))
            .cloned(),
    );
    for sub in entries.iter().filter(|p| p.is_dir()) {
        walk_images(sub, out)?;
    }
    Ok(())
}

/// One split of an image folder: (file, class) pairs decoded on `get`.
pub struct ImageFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub samples: Vec<(PathBuf, usize)>,
}

impl ImageFolder {
    /// Scans `root/<class>/...`. `classes` fixes the class list (for a validation split that
    /// must use the training split's classes); otherwise it is the sorted sub-folder names.
    pub fn scan(root: &Path, classes: Option<&[String]>) -> Result<Self> {
        if !root.is_dir() {
            return Err(DataError::missing(root, "image folder split"));
        }
        let found: Vec<String> = sorted_entries(root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        if found.is_empty() {
            return Err(DataError::format(root, "no class folders"));
        }
        let classes: Vec<String> = match classes {
            None => found.clone(),
            Some(known) => {
                if let Some(extra) = found.iter().find(|c| !known.contains(c)) {
                    return Err(DataError::format(
                        root.join(extra),
                        "class folder not present in the training split",
                    ));
                }
                known.to_vec()
            }
        };
        let mut samples = Vec::new();
        for name in &found {
            let label = classes.iter().position(|c| c == name).unwrap_or(0);
            let dir = root.join(name);
            let mut files = Vec::new();
            walk_images(&dir, &mut files)?;
            if files.is_empty() {
                return Err(DataError::format(
                    dir,
                    format!(
                        "empty class folder: no {} files",
                        IMAGE_EXTENSIONS.join("/")
                    ),
                ));
            }
            samples.extend(files.into_iter().map(|f| (f, label)));
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            samples,
        })
    }

    /// Number of samples per class, in class order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &(_, l) in &self.samples {
            counts[l] += 1;
        }
        counts
    }
}

impl Dataset for ImageFolder {
    type Sample = ClassSample;
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn get(&self, index: usize) -> Result<ClassSample> {
        let (path, label) = self.samples.get(index).ok_or_else(|| DataError::Index {
            index,
            len: self.samples.len(),
            source_name: self.root.display().to_string(),
        })?;
        Ok(ClassSample {
            image: Image::open_rgb(path)?,
            label: *label,
        })
    }
    fn describe(&self, index: usize) -> String {
        self.samples
            .get(index)
            .map(|(p, _)| p.display().to_string())
            .unwrap_or_else(|| format!("sample {index}"))
    }
    fn class_label(&self, index: usize) -> Option<Result<usize>> {
        Some(
            self.samples
                .get(index)
                .map(|s| s.1)
                .ok_or_else(|| DataError::Index {
                    index,
                    len: self.samples.len(),
                    source_name: self.root.display().to_string(),
                }),
        )
    }
}

/// Opens `dir/train` and `dir/val` (or `dir/test`) as an image-folder data set.
pub fn open(dir: &Path) -> Result<ClassificationData> {
    if !dir.is_dir() {
        return Err(DataError::missing(dir, "image folder data set"));
    }
    let train = ImageFolder::scan(&dir.join("train"), None)?;
    let test_dir = ["val", "test"]
        .iter()
        .map(|s| dir.join(s))
        .find(|p| p.is_dir())
        .ok_or_else(|| DataError::missing(dir.join("val"), "validation split (val/ or test/)"))?;
    let test = ImageFolder::scan(&test_dir, Some(&train.classes))?;
    // The nominal image size is the first decodable image's (an unreadable one is reported
    // when it is read, and skipped under `skip_bad`, rather than failing the whole set here).
    let mut probe = train
        .samples
        .iter()
        .take(32)
        .map(|(p, _)| Image::open_rgb(p));
    let first = match probe.find(|r| r.is_ok()) {
        Some(ok) => ok?,
        None => Image::open_rgb(&train.samples[0].0)?,
    };
    Ok(ClassificationData {
        // Photos in the ImageNet layout: ImageNet's constants, as torchvision's recipes use.
        stats: Some(ChannelStats::imagenet()),
        num_classes: train.classes.len(),
        class_names: train.classes.clone(),
        channels: 3,
        image_size: (first.height, first.width),
        source: format!(
            "image folders {} and {}",
            train.root.display(),
            test.root.display()
        ),
        train: Arc::new(train),
        test: Arc::new(test),
    })
}
