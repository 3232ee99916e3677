//! The PASCAL VOC layout, on small files the test writes: palette PNGs whose colours are
//! VOC's colour map (never equal to the indices), detection, class names, and every kind of
//! bad input naming its file.

mod common;

use std::path::Path;
use vt_data::voc::VOC_CLASSES;
use vt_data::{detect_format, open_segmentation, Format};

/// VOC's colour of palette index `i` (the bit-interleaved map of the devkit's `labelcolormap`).
fn voc_colour(i: u8) -> [u8; 3] {
    let (mut c, mut rgb) = (i, [0u8; 3]);
    for j in 0..8 {
        for (k, v) in rgb.iter_mut().enumerate() {
            *v |= ((c >> k) & 1) << (7 - j);
        }
        c >>= 3;
    }
    rgb
}

/// An 8-bit palette PNG with VOC's colours; the indices come from `f(x, y)`.
fn write_voc_label(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    let palette: Vec<u8> = (0..=255u8).flat_map(voc_colour).collect();
    common::write_indexed_png(path, w, h, &palette, f);
}

/// Labels of the test images: 255 on the diagonal (borders), else (x + 2y) mod 21.
fn label(x: u32, y: u32) -> u8 {
    if x == y {
        255
    } else {
        ((x + 2 * y) % 21) as u8
    }
}

/// A VOC root with images a, b (train) and c (val), 7x5 (WxH).
fn voc(root: &Path) {
    for (k, id) in ["a", "b", "c"].into_iter().enumerate() {
        common::write_jpeg(&root.join(format!("JPEGImages/{id}.jpg")), 7, 5, k as u8);
        write_voc_label(
            &root.join(format!("SegmentationClass/{id}.png")),
            7,
            5,
            label,
        );
    }
    let lists = root.join("ImageSets/Segmentation");
    std::fs::create_dir_all(&lists).unwrap();
    std::fs::write(lists.join("train.txt"), "a\n\nb\n").unwrap();
    std::fs::write(lists.join("val.txt"), "c\n").unwrap();
}

fn err_text<T: std::fmt::Debug>(r: Result<T, vt_data::DataError>) -> String {
    r.unwrap_err().to_string()
}

fn assert_has(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "`{text}` lacks `{p}`");
    }
}

#[test]
fn voc_layout_reads_palette_indices() {
    assert_eq!(voc_colour(1), [128, 0, 0]);
    assert_eq!(voc_colour(15), [192, 128, 128]);
    assert_eq!(voc_colour(255), [224, 224, 192]);
    let dir = tempfile::tempdir().unwrap();
    voc(dir.path());
    assert_eq!(detect_format(dir.path()).unwrap(), Format::Voc);
    assert!(Format::Voc.is_segmentation());
    assert_eq!("voc".parse::<Format>().unwrap(), Format::Voc);
    let data = open_segmentation(dir.path(), None).unwrap();
    assert_eq!(
        (
            data.num_classes,
            data.ignore_index,
            data.train.len(),
            data.test.len()
        ),
        (21, 255, 2, 1)
    );
    assert_eq!(data.class_names, VOC_CLASSES);
    assert_eq!(
        (data.class_names[0].as_str(), data.class_names[15].as_str()),
        ("background", "person")
    );
    for s in [data.train.get(1).unwrap(), data.test.get(0).unwrap()] {
        assert_eq!((s.image.width, s.image.height, s.image.channels), (7, 5, 3));
        let want: Vec<u8> = (0..5)
            .flat_map(|y| (0..7).map(move |x| label(x, y)))
            .collect();
        assert_eq!(s.label.data, want, "labels are the palette indices");
    }
    assert!(data.train.describe(1).contains("JPEGImages/b.jpg"));

    // inside VOCdevkit/VOC2012, with its own class names and no val list
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("VOCdevkit/VOC2012");
    voc(&root);
    std::fs::remove_file(root.join("ImageSets/Segmentation/val.txt")).unwrap();
    let names: String = (0..21).map(|i| format!("c{i}\n")).collect();
    std::fs::write(root.join("class_names.txt"), format!("{names}\n")).unwrap();
    assert_eq!(detect_format(dir.path()).unwrap(), Format::Voc);
    let data = open_segmentation(dir.path(), Some(Format::Voc)).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (2, 0));
    assert_eq!(
        (data.num_classes, data.class_names[20].as_str()),
        (21, "c20")
    );
    assert!(data.source.contains("VOC2012"), "{}", data.source);
}

#[test]
fn voc_bad_input_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    voc(d);
    let lists = d.join("ImageSets/Segmentation");

    // an id without its image, or without its label map, fails at open time
    std::fs::write(lists.join("train.txt"), "a\nzz\n").unwrap();
    assert_has(
        &err_text(open_segmentation(d, None)),
        &["JPEGImages/zz.jpg", "image of id `zz`", "train.txt"],
    );
    common::write_jpeg(&d.join("JPEGImages/zz.jpg"), 7, 5, 9);
    assert_has(
        &err_text(open_segmentation(d, None)),
        &[
            "SegmentationClass/zz.png",
            "label map of id `zz`",
            "train.txt",
        ],
    );
    std::fs::write(lists.join("train.txt"), "a\n").unwrap();
    std::fs::write(lists.join("val.txt"), "c\nmissing_val\n").unwrap();
    assert_has(
        &err_text(open_segmentation(d, None)),
        &["JPEGImages/missing_val.jpg", "val.txt"],
    );
    std::fs::write(lists.join("val.txt"), "\n\n").unwrap();
    assert_has(
        &err_text(open_segmentation(d, None)),
        &["val.txt", "no image ids"],
    );
    std::fs::write(lists.join("val.txt"), "c\n").unwrap();
    std::fs::remove_file(lists.join("train.txt")).unwrap();
    assert_has(
        &err_text(open_segmentation(d, Some(Format::Voc))),
        &["train.txt", "VOC training id list"],
    );
    std::fs::write(lists.join("train.txt"), "a\n").unwrap();

    // a label map of another size than its image, at read time
    write_voc_label(&d.join("SegmentationClass/a.png"), 6, 5, label);
    let data = open_segmentation(d, None).unwrap();
    assert_has(
        &err_text(data.train.get(0)),
        &[
            "SegmentationClass/a.png",
            "label map is 6x5 (WxH) but its image is 7x5",
        ],
    );
    // a label outside the 21 classes that is not 255
    write_voc_label(&d.join("SegmentationClass/a.png"), 7, 5, |x, y| {
        if (x, y) == (4, 1) {
            30
        } else {
            label(x, y)
        }
    });
    let data = open_segmentation(d, None).unwrap();
    assert_has(
        &err_text(data.train.get(0)),
        &[
            "SegmentationClass/a.png",
            "pixel (x 4, y 1) has label 30 outside the class range 0..21",
        ],
    );
    // fewer class names make in-range VOC labels errors; an empty names file is an error
    std::fs::write(d.join("class_names.txt"), "background\nthing\n").unwrap();
    let data = open_segmentation(d, None).unwrap();
    assert_eq!(data.num_classes, 2);
    assert_has(
        &err_text(data.test.get(0)),
        &["SegmentationClass/c.png", "outside the class range 0..2"],
    );
    std::fs::write(d.join("class_names.txt"), " \n").unwrap();
    assert_has(
        &err_text(open_segmentation(d, None)),
        &["class_names.txt", "no class names"],
    );
    // not a VOC root at all
    let empty = tempfile::tempdir().unwrap();
    assert_has(
        &err_text(open_segmentation(empty.path(), Some(Format::Voc))),
        &["JPEGImages", "VOC layout"],
    );
}
