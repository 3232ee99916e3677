//! Every kind of bad input gives an error that names the file (and index or shape), never a
//! panic; `skip_bad` skips unreadable samples and counts them.

mod common;

use std::path::Path;
use std::sync::Arc;
use vt_data::idx::write_idx;
use vt_data::transforms::Pipeline;
use vt_data::{
    fashion_mnist, open_classification, open_segmentation, Compose, Format, Loader, LoaderConfig,
    Resize,
};

fn err_text<T: std::fmt::Debug>(r: Result<T, vt_data::DataError>) -> String {
    r.unwrap_err().to_string()
}

fn assert_has(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "`{text}` lacks `{p}`");
    }
}

fn idx_dir(dir: &Path) {
    write_idx(
        &dir.join("train-images-idx3-ubyte.gz"),
        &[6, 5, 4],
        &[7; 120],
    )
    .unwrap();
    write_idx(
        &dir.join("train-labels-idx1-ubyte.gz"),
        &[6],
        &[0, 1, 2, 3, 4, 5],
    )
    .unwrap();
    write_idx(&dir.join("t10k-images-idx3-ubyte.gz"), &[2, 5, 4], &[7; 40]).unwrap();
    write_idx(&dir.join("t10k-labels-idx1-ubyte.gz"), &[2], &[0, 1]).unwrap();
}

#[test]
fn idx_truncated_corrupt_wrong_magic_wrong_dims_bad_labels() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    idx_dir(d);
    let open = || err_text(open_classification(d, Some(Format::Idx)));

    // truncated raw file (replaces the .gz: raw files are found too)
    std::fs::remove_file(d.join("train-images-idx3-ubyte.gz")).unwrap();
    let mut raw = vec![0, 0, 8, 3, 0, 0, 0, 6, 0, 0, 0, 5, 0, 0, 0, 4];
    raw.extend([1u8; 100]);
    std::fs::write(d.join("train-images-idx3-ubyte"), &raw).unwrap();
    assert_has(
        &open(),
        &[
            "train-images-idx3-ubyte",
            "truncated IDX data: header says 6x5x4 = 120 bytes, file has 100",
        ],
    );

    // wrong magic
    raw[2] = 9;
    std::fs::write(d.join("train-images-idx3-ubyte"), &raw).unwrap();
    assert_has(
        &open(),
        &["train-images-idx3-ubyte", "wrong IDX magic 0x00000903"],
    );
    std::fs::remove_file(d.join("train-images-idx3-ubyte")).unwrap();
    idx_dir(d);

    // truncated gzip stream
    let p = d.join("t10k-images-idx3-ubyte.gz");
    let gz = std::fs::read(&p).unwrap();
    std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
    assert_has(
        &open(),
        &[
            "t10k-images-idx3-ubyte.gz",
            "corrupt or truncated gzip data",
        ],
    );
    idx_dir(d);

    // wrong number of dimensions
    write_idx(&d.join("train-labels-idx1-ubyte.gz"), &[6, 1, 1], &[0; 6]).unwrap();
    assert_has(
        &open(),
        &[
            "train-labels-idx1-ubyte.gz",
            "IDX file has 3 dimensions, expected 1",
        ],
    );

    // label count differs from image count
    write_idx(&d.join("train-labels-idx1-ubyte.gz"), &[5], &[0; 5]).unwrap();
    assert_has(
        &open(),
        &["train-labels-idx1-ubyte.gz", "5 labels for 6 images"],
    );

    // label outside the class range
    write_idx(
        &d.join("train-labels-idx1-ubyte.gz"),
        &[6],
        &[0, 1, 2, 3, 4, 12],
    )
    .unwrap();
    assert_has(
        &open(),
        &[
            "train-labels-idx1-ubyte.gz",
            "sample 5: label 12 is outside the class range 0..10",
        ],
    );

    // a missing file of a split
    std::fs::remove_file(d.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    idx_dir(d);
    std::fs::remove_file(d.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    assert_has(
        &open(),
        &[
            "t10k-labels-idx1-ubyte.gz",
            "no IDX labels file for split `t10k`",
        ],
    );
}

#[test]
fn cifar_truncated_and_bad_label() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for b in 1..=5 {
        std::fs::write(
            d.join(format!("data_batch_{b}.bin")),
            common::cifar_records(&[&[1], &[2]]),
        )
        .unwrap();
    }
    std::fs::write(d.join("test_batch.bin"), common::cifar_records(&[&[3]])).unwrap();
    let mut short = common::cifar_records(&[&[1], &[2]]);
    short.truncate(3073 + 1000);
    std::fs::write(d.join("data_batch_3.bin"), short).unwrap();
    assert_has(
        &err_text(open_classification(d, None)),
        &[
            "data_batch_3.bin",
            "4073 bytes is not a whole number of 3073-byte records (record 1 is incomplete)",
        ],
    );
    std::fs::write(
        d.join("data_batch_3.bin"),
        common::cifar_records(&[&[1], &[10]]),
    )
    .unwrap();
    assert_has(
        &err_text(open_classification(d, None)),
        &[
            "data_batch_3.bin",
            "sample 1: label 10 is outside the class range 0..10",
        ],
    );
    std::fs::write(d.join("data_batch_3.bin"), common::cifar_records(&[&[1]])).unwrap();
    assert_has(
        &err_text(open_classification(d, None)),
        &[
            "data_batch_3.bin",
            "1 records, where data_batch_1.bin has 2",
        ],
    );
    std::fs::write(
        d.join("data_batch_3.bin"),
        common::cifar_records(&[&[1], &[2]]),
    )
    .unwrap();
    std::fs::remove_file(d.join("data_batch_4.bin")).unwrap();
    assert_has(
        &err_text(open_classification(d, None)),
        &["data_batch_4.bin", "CIFAR binary batch"],
    );
}

#[test]
fn folders_missing_empty_and_corrupt_images() {
    let missing = Path::new("/nonexistent/vt-data-test");
    assert_has(
        &err_text(open_classification(missing, None)),
        &["/nonexistent/vt-data-test", "missing directory"],
    );
    assert_has(
        &err_text(fashion_mnist(Some(missing))),
        &["/nonexistent/vt-data-test", "missing directory"],
    );
    assert_has(
        &err_text(open_classification(missing, Some(Format::Folder))),
        &["/nonexistent/vt-data-test", "missing directory"],
    );

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write_png(&d.join("train/cat/a.png"), 4, 4, 1);
    std::fs::create_dir_all(d.join("train/dog")).unwrap();
    std::fs::write(d.join("train/dog/readme.txt"), "no images here").unwrap();
    common::write_png(&d.join("val/cat/b.png"), 4, 4, 2);
    assert_has(
        &err_text(open_classification(d, None)),
        &["train/dog", "empty class folder"],
    );

    common::write_png(&d.join("train/dog/c.png"), 4, 4, 3);
    common::write_png(&d.join("val/horse/d.png"), 4, 4, 3);
    assert_has(
        &err_text(open_classification(d, None)),
        &[
            "val/horse",
            "class folder not present in the training split",
        ],
    );
    std::fs::remove_dir_all(d.join("val/horse")).unwrap();

    // corrupt and truncated images fail on `get`, naming the file
    std::fs::write(
        d.join("train/dog/broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    common::write_jpeg(&d.join("train/dog/cut.jpg"), 32, 32, 4);
    let jpg = std::fs::read(d.join("train/dog/cut.jpg")).unwrap();
    std::fs::write(d.join("train/dog/cut.jpg"), &jpg[..jpg.len() / 3]).unwrap();
    let data = open_classification(d, None).unwrap();
    let errors: Vec<String> = (0..data.train.len())
        .filter_map(|i| data.train.get(i).err().map(|e| e.to_string()))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_has(&errors[0], &["train/dog/broken.png", "cannot decode image"]);
    assert_has(&errors[1], &["train/dog/cut.jpg", "cannot decode image"]);

    // the loader stops with the file's error, or with skip_bad skips and counts
    let pipeline = Arc::new(Pipeline::new(
        Compose::new().then(Resize { shorter: 4 }),
        None,
    ));
    let mut cfg = LoaderConfig::new(2);
    cfg.shuffle = false;
    let loader = Loader::new(
        data.train.clone(),
        pipeline.clone(),
        cfg.clone(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let results: Vec<_> = loader.epoch(0).collect();
    let err = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("an error");
    assert_has(&err.to_string(), &["broken.png", "cannot decode image"]);
    cfg.skip_bad = true;
    let loader = Loader::new(data.train.clone(), pipeline, cfg, &candle_core::Device::Cpu).unwrap();
    let mut epoch = loader.epoch(0);
    let seen: usize = epoch.by_ref().map(|b| b.unwrap().indices.len()).sum();
    assert_eq!((seen, epoch.skipped()), (2, 2));
    assert_has(&epoch.bad_samples()[0].error, &["broken.png"]);
    assert_has(&epoch.bad_samples()[1].error, &["cut.jpg"]);
}

#[test]
fn segmentation_size_mismatch_bad_label_missing_map_rgb_map() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write_png(&d.join("images/a.png"), 6, 4, 1);
    common::write_labels(&d.join("labels/a.png"), 5, 4, |_, _| 1);
    std::fs::write(d.join("classes.txt"), "bg\nthing\n").unwrap();
    let data = open_segmentation(d, None).unwrap();
    assert_has(
        &err_text(data.train.get(0)),
        &[
            "labels/a.png",
            "label map is 5x4 (WxH) but its image is 6x4",
        ],
    );

    common::write_labels(&d.join("labels/a.png"), 6, 4, |x, y| {
        if (x, y) == (3, 2) {
            9
        } else {
            1
        }
    });
    let data = open_segmentation(d, None).unwrap();
    assert_has(
        &err_text(data.train.get(0)),
        &[
            "labels/a.png",
            "pixel (x 3, y 2) has label 9 outside the class range 0..2",
        ],
    );

    common::write_png(&d.join("labels/a.png"), 6, 4, 1); // RGB, not a label map
    let data = open_segmentation(d, None).unwrap();
    assert_has(
        &err_text(data.train.get(0)),
        &["labels/a.png", "8-bit grayscale or palette PNG, got Rgb"],
    );

    common::write_png(&d.join("images/b.png"), 6, 4, 1);
    assert_has(
        &err_text(open_segmentation(d, None)),
        &["labels/b.png", "label map for image", "images/b.png"],
    );

    // LIP labels beyond its 20 classes
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for split in ["train", "val"] {
        common::write_png(&d.join(format!("{split}_images/1.jpg")), 3, 3, 1);
        common::write_labels(
            &d.join(format!("{split}_segmentations/1.png")),
            3,
            3,
            |x, _| (x * 12) as u8,
        );
    }
    let lip = open_segmentation(d, Some(Format::Lip)).unwrap();
    assert_has(
        &err_text(lip.train.get(0)),
        &[
            "train_segmentations/1.png",
            "pixel (x 2, y 0) has label 24 outside the class range 0..20",
        ],
    );
    assert_has(
        &err_text(open_segmentation(
            Path::new("/nonexistent/lip"),
            Some(Format::Lip),
        )),
        &["/nonexistent/lip"],
    );
}
