//! Each on-disk format, on small files the test writes itself, plus format detection and the
//! embedded default data set.

mod common;

use std::path::Path;
use vt_data::idx::{read_idx, write_idx};
use vt_data::{
    detect_format, embedded_fashion_mnist, fashion_mnist, open_classification, open_segmentation,
    Format,
};

fn write_idx_set(dir: &Path, gz: bool, n: usize, labels: &[u8]) {
    let ext = if gz { ".gz" } else { "" };
    for (split, count) in [("train", n), ("t10k", n / 2)] {
        let pixels: Vec<u8> = (0..count * 20).map(|i| (i * 3 % 256) as u8).collect();
        write_idx(
            &dir.join(format!("{split}-images-idx3-ubyte{ext}")),
            &[count, 5, 4],
            &pixels,
        )
        .unwrap();
        write_idx(
            &dir.join(format!("{split}-labels-idx1-ubyte{ext}")),
            &[count],
            &labels[..count],
        )
        .unwrap();
    }
}

#[test]
fn idx_round_trip_gz_and_raw() {
    for gz in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let labels: Vec<u8> = (0..12).map(|i| (i * 7 % 10) as u8).collect();
        write_idx_set(dir.path(), gz, 12, &labels);
        assert_eq!(detect_format(dir.path()).unwrap(), Format::Idx);
        let data = open_classification(dir.path(), None).unwrap();
        assert_eq!((data.train.len(), data.test.len()), (12, 6));
        assert_eq!(
            (data.image_size, data.channels, data.num_classes),
            ((5, 4), 1, 10)
        );
        let s = data.train.get(3).unwrap();
        assert_eq!((s.image.height, s.image.width, s.image.channels), (5, 4, 1));
        assert_eq!(s.label, labels[3] as usize);
        let want: Vec<u8> = (60..80).map(|i| (i * 3 % 256) as u8).collect();
        assert_eq!(s.image.data, want);
        let ext = if gz { ".gz" } else { "" };
        let arr = read_idx(&dir.path().join(format!("train-images-idx3-ubyte{ext}")), 3).unwrap();
        assert_eq!(arr.dims, vec![12, 5, 4]);
        // Fashion-MNIST from a given directory uses it and names it
        let fm = fashion_mnist(Some(dir.path())).unwrap();
        assert!(
            fm.source.contains(&dir.path().display().to_string()),
            "{}",
            fm.source
        );
        assert_eq!(fm.class_names[9], "Ankle boot");
    }
}

#[test]
fn embedded_default_is_a_balanced_real_fashion_mnist_subset() {
    let fm = embedded_fashion_mnist().unwrap();
    assert_eq!((fm.train.len(), fm.test.len()), (6000, 1000));
    assert_eq!(
        (fm.image_size, fm.channels, fm.num_classes),
        ((28, 28), 1, 10)
    );
    assert!(fm.source.contains("embedded"), "{}", fm.source);
    for (set, per) in [(&fm.train, 600), (&fm.test, 100)] {
        let mut counts = [0usize; 10];
        for i in 0..set.len() {
            counts[set.get(i).unwrap().label] += 1;
        }
        assert_eq!(counts, [per; 10]);
    }
    // real images: the first training item is an ankle boot (class 9) with a dark border
    let s = fm.train.get(0).unwrap();
    assert_eq!(s.label, 9);
    assert_eq!(s.image.data[0], 0);
    assert!(s.image.data.iter().filter(|&&v| v > 100).count() > 100);
    // the default picks the installed full set when present, else the embedded subset
    let fm = fashion_mnist(None).unwrap();
    if Path::new(vt_data::idx::FASHION_MNIST_SYSTEM_DIR)
        .join("train-images-idx3-ubyte.gz")
        .exists()
    {
        assert_eq!(fm.train.len(), 60000);
        assert!(fm.source.starts_with("full Fashion-MNIST"), "{}", fm.source);
    } else {
        assert_eq!(fm.train.len(), 6000);
        assert!(fm.source.contains("embedded"), "{}", fm.source);
    }
}

#[test]
fn cifar10_and_cifar100_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&root).unwrap();
    for b in 1..=5u8 {
        let recs = common::cifar_records(&[&[b], &[9 - b]]);
        std::fs::write(root.join(format!("data_batch_{b}.bin")), recs).unwrap();
    }
    std::fs::write(root.join("test_batch.bin"), common::cifar_records(&[&[3]])).unwrap();
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    std::fs::write(root.join("batches.meta.txt"), names).unwrap();
    assert_eq!(detect_format(dir.path()).unwrap(), Format::Cifar);
    let data = open_classification(dir.path(), None).unwrap();
    assert_eq!(
        (data.train.len(), data.test.len(), data.num_classes),
        (10, 1, 10)
    );
    assert_eq!(data.class_names[3], "cat");
    let s = data.train.get(3).unwrap(); // batch 2, record 1
    assert_eq!(s.label, 7);
    // planar RGB → HWC: pixel p of record i has planes ((p + 31 i) % 256) at p, p+1024, p+2048
    let px =
        |p: usize| [(p + 31) % 256, (p + 1024 + 31) % 256, (p + 2048 + 31) % 256].map(|v| v as u8);
    assert_eq!(&s.image.data[..3], &px(0));
    assert_eq!(&s.image.data[3 * 33..3 * 34], &px(33));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.bin"),
        common::cifar_records(&[&[1, 55], &[2, 99]]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("test.bin"),
        common::cifar_records(&[&[0, 42]]),
    )
    .unwrap();
    let data = open_classification(dir.path(), Some(Format::Cifar)).unwrap();
    assert_eq!(data.num_classes, 100);
    assert_eq!(data.train.get(1).unwrap().label, 99);
    assert_eq!(data.test.get(0).unwrap().label, 42);
}

#[test]
fn image_folder_sorts_classes_like_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("train");
    common::write_png(&t.join("b_cls/2.png"), 6, 5, 1);
    common::write_png(&t.join("b_cls/10.png"), 6, 5, 2);
    common::write_jpeg(&t.join("a_cls/x.JPEG"), 16, 12, 3);
    common::write_png(&t.join("a_cls/nested/y.png"), 4, 4, 4);
    common::write_png(&t.join("C_cls/z.png"), 3, 3, 5);
    std::fs::write(t.join("a_cls/notes.txt"), "not an image").unwrap();
    common::write_png(&dir.path().join("val/a_cls/v.png"), 8, 8, 6);
    assert_eq!(detect_format(dir.path()).unwrap(), Format::Folder);
    let data = open_classification(dir.path(), None).unwrap();
    // code-point order: uppercase before lowercase
    assert_eq!(data.class_names, ["C_cls", "a_cls", "b_cls"]);
    assert_eq!((data.train.len(), data.test.len()), (5, 1));
    let labels: Vec<usize> = (0..5).map(|i| data.train.get(i).unwrap().label).collect();
    assert_eq!(labels, [0, 1, 1, 2, 2]);
    // files in sorted order ("10.png" < "2.png"), a folder's files before its sub-folders'
    assert!(data.train.describe(1).ends_with("x.JPEG"));
    assert!(data.train.describe(2).ends_with("y.png"));
    assert!(data.train.describe(3).ends_with("10.png"));
    let png = data.train.get(4).unwrap().image; // b_cls/2.png, lossless
    assert_eq!(png.data, common::pattern(6, 5, 1).into_raw());
    let jpg = data.train.get(1).unwrap().image;
    assert_eq!((jpg.width, jpg.height, jpg.channels), (16, 12, 3));
    assert_eq!(data.test.get(0).unwrap().label, 1);
    assert_eq!(data.image_size, (3, 3)); // first training image
}

#[test]
fn segmentation_layouts() {
    // LIP, inside TrainVal_* folders
    let dir = tempfile::tempdir().unwrap();
    let (imgs, anns) = (
        dir.path().join("TrainVal_images"),
        dir.path().join("TrainVal_parsing_annotations"),
    );
    for split in ["train", "val"] {
        common::write_jpeg(&imgs.join(format!("{split}_images/100_a.jpg")), 6, 4, 1);
        common::write_labels(
            &anns.join(format!("{split}_segmentations/100_a.png")),
            6,
            4,
            |x, _| (x * 3) as u8,
        );
    }
    assert_eq!(detect_format(dir.path()).unwrap(), Format::Lip);
    let lip = open_segmentation(dir.path(), None).unwrap();
    assert_eq!(
        (
            lip.num_classes,
            lip.ignore_index,
            lip.train.len(),
            lip.test.len()
        ),
        (20, 255, 1, 1)
    );
    let s = lip.train.get(0).unwrap();
    assert_eq!(s.label.data[..6], [0, 3, 6, 9, 12, 15]);
    assert_eq!((s.image.width, s.image.height), (6, 4));

    // COCO-stuff: 255 = unlabeled is allowed, palette PNGs give their indices
    let dir = tempfile::tempdir().unwrap();
    for split in ["train2017", "val2017"] {
        common::write_jpeg(
            &dir.path().join(format!("images/{split}/000000000009.jpg")),
            5,
            5,
            2,
        );
        common::write_palette_labels(
            &dir.path()
                .join(format!("annotations/{split}/000000000009.png")),
            5,
            5,
            |x, y| if x == y { 255 } else { (x * 40 + y) as u8 },
        );
    }
    assert_eq!(detect_format(dir.path()).unwrap(), Format::CocoStuff);
    let coco = open_segmentation(dir.path(), None).unwrap();
    assert_eq!(coco.num_classes, 182);
    let s = coco.test.get(0).unwrap();
    assert_eq!(s.label.data[..5], [255, 40, 80, 120, 160]);

    // generic, flat, no classes.txt: the class count is one past the largest label
    let dir = tempfile::tempdir().unwrap();
    common::write_png(&dir.path().join("images/a.png"), 3, 2, 1);
    common::write_png(&dir.path().join("images/b.png"), 3, 2, 2);
    common::write_labels(&dir.path().join("labels/a.png"), 3, 2, |x, _| x as u8);
    common::write_labels(&dir.path().join("labels/b.png"), 3, 2, |_, y| {
        if y == 0 {
            255
        } else {
            6
        }
    });
    assert_eq!(detect_format(dir.path()).unwrap(), Format::SegFolder);
    let g = open_segmentation(dir.path(), None).unwrap();
    assert_eq!((g.num_classes, g.train.len(), g.test.len()), (7, 2, 0));

    // generic with train/ and val/ and classes.txt
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "val"] {
        common::write_png(&dir.path().join(format!("images/{split}/a.png")), 3, 2, 1);
        common::write_labels(
            &dir.path().join(format!("labels/{split}/a.png")),
            3,
            2,
            |x, _| x as u8,
        );
    }
    std::fs::write(dir.path().join("classes.txt"), "bg\nroad\nsky\ncar\n").unwrap();
    let g = open_segmentation(dir.path(), Some(Format::SegFolder)).unwrap();
    assert_eq!((g.num_classes, g.train.len(), g.test.len()), (4, 1, 1));
    // a segmentation format is refused by the classification entry point, and vice versa
    let err = open_classification(dir.path(), Some(Format::SegFolder)).unwrap_err();
    assert!(
        err.to_string().contains("is a segmentation format"),
        "{err}"
    );
}

#[test]
fn format_names_parse_and_unknown_ones_are_listed() {
    for f in Format::ALL {
        assert_eq!(f.name().parse::<Format>().unwrap(), f);
    }
    let err = "tfrecord".parse::<Format>().unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown format `tfrecord` (one of: idx, cifar, folder"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("readme.txt"), "?").unwrap();
    let err = detect_format(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot detect the data set format"),
        "{err}"
    );
}
