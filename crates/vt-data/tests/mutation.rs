//! Seeded mutations of real files for every reader of vt-data: the embedded Fashion-MNIST IDX
//! files (gzip and raw), CIFAR batches, JPEG and PNG images in a folder, and segmentation
//! label maps. Each mutant is truncated at many points, has random bytes flipped, or has its
//! header edited (huge or zero sizes, wrong counts, out-of-range labels). Every case must
//! return a value or the reader's error, never panic; truncated or structurally broken files
//! must be errors that name the file.

mod common;

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use vt_data::idx::read_idx;
use vt_data::{cifar, DataError, Image, LabelMap};
use vt_ops::mutate::{byte_flips, overwrite, truncations, Mutant};

const SEED: u64 = 0x005e_ed11;

fn subset(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../datasets/fashion-mnist-subset")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Writes each mutant to `path`, runs `read` under `catch_unwind` and returns the outcomes.
/// A panic fails the test with the mutant's description.
fn run_mutants<T>(
    path: &Path,
    mutants: &[Mutant],
    read: impl Fn(&Path) -> Result<T, DataError>,
) -> Vec<(String, Result<T, DataError>)> {
    mutants
        .iter()
        .map(|m| {
            std::fs::write(path, &m.bytes).unwrap();
            let out = catch_unwind(AssertUnwindSafe(|| read(path))).unwrap_or_else(|_| {
                panic!("{}: reader panicked on a file {}", path.display(), m.what)
            });
            (m.what.clone(), out)
        })
        .collect()
}

/// Every outcome is an error whose message names the file.
fn all_errors_naming<T>(path: &Path, outcomes: &[(String, Result<T, DataError>)]) {
    let name = path.file_name().unwrap().to_string_lossy();
    for (what, out) in outcomes {
        match out {
            Ok(_) => panic!("{}: a file {what} was read as valid", path.display()),
            Err(e) => assert!(
                e.to_string().contains(&*name),
                "{what}: `{e}` does not name {name}"
            ),
        }
    }
}

#[test]
fn idx_files_gzip_and_raw() {
    let dir = tempfile::tempdir().unwrap();
    for (file, ndim) in [
        ("t10k-images-idx3-ubyte.gz", 3),
        ("t10k-labels-idx1-ubyte.gz", 1),
    ] {
        let gz = subset(file);
        let raw = gunzip(&gz);
        let read = |p: &Path| read_idx(p, ndim);
        // gzip: every cut and header edit is an error; flips are caught by the CRC or fail the
        // inflate, and must never panic.
        let p = dir.path().join(file);
        all_errors_naming(&p, &run_mutants(&p, &truncations(&gz, 8), read));
        run_mutants(&p, &byte_flips(&gz, SEED, 24, None), read);
        run_mutants(&p, &byte_flips(&gz, SEED + 1, 24, Some(0..20)), read);

        let p = dir.path().join(file.trim_end_matches(".gz"));
        all_errors_naming(&p, &run_mutants(&p, &truncations(&raw, 8), read));
        run_mutants(&p, &byte_flips(&raw, SEED, 24, Some(0..4 + 4 * ndim)), read);
        let mut edits = vec![
            overwrite(&raw, 3, &[9], "with 9 dimensions"),
            overwrite(&raw, 2, &[0x0d], "with a float element type"),
            overwrite(&raw, 4, &[0xff; 4], "with a count of 2^32 - 1"),
            overwrite(&raw, 4, &[0; 4], "with a count of 0"),
            overwrite(&raw, 4, &[0, 0, 0, 1], "with a count of 1"),
        ];
        if ndim == 3 {
            edits.push(overwrite(
                &raw,
                8,
                &[0xff; 8],
                "with rows and columns of 2^32 - 1",
            ));
            edits.push(overwrite(&raw, 8, &[0; 4], "with 0 rows"));
        }
        all_errors_naming(&p, &run_mutants(&p, &edits, read));
    }

    // Through the data set: labels out of range and counts that disagree name the file.
    for (edit, expect) in [
        (Some(20usize), "label 200 is outside the class range 0..10"),
        (None, "labels for"),
    ] {
        let d = tempfile::tempdir().unwrap();
        for f in ["images", "labels"] {
            for split in ["train", "t10k"] {
                let name = format!(
                    "{split}-{f}-idx{}-ubyte.gz",
                    if f == "images" { 3 } else { 1 }
                );
                std::fs::write(
                    d.path().join(&name),
                    subset(&format!(
                        "t10k-{f}-idx{}-ubyte.gz",
                        if f == "images" { 3 } else { 1 }
                    )),
                )
                .unwrap();
            }
        }
        let labels = gunzip(&subset("t10k-labels-idx1-ubyte.gz"));
        let bad = match edit {
            Some(at) => overwrite(&labels, 8 + at, &[200], "label 200").bytes,
            None => labels[..labels.len() - 3].to_vec(),
        };
        let bad = match edit {
            Some(_) => bad,
            // a shorter label file whose header agrees with it
            None => {
                let n = (bad.len() - 8) as u32;
                overwrite(&bad, 4, &n.to_be_bytes(), "count").bytes
            }
        };
        std::fs::remove_file(d.path().join("train-labels-idx1-ubyte.gz")).unwrap();
        std::fs::write(d.path().join("train-labels-idx1-ubyte"), bad).unwrap();
        let e = vt_data::open_classification(d.path(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train-labels-idx1-ubyte") && e.contains(expect),
            "{e}"
        );
    }
}

#[test]
fn cifar_batches() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data_batch_1.bin");
    let labels: Vec<&[u8]> = vec![&[1], &[2], &[9], &[0]];
    let bytes = common::cifar_records(&labels);
    let read = |p: &Path| cifar::read_batch(p, cifar::Variant::Cifar10);
    // A cut at a record boundary is a shorter valid batch (records have no header); every
    // other cut is an error, and a short batch among full ones is caught by `open`.
    let cuts: Vec<Mutant> = truncations(&bytes, 12)
        .into_iter()
        .filter(|m| m.bytes.is_empty() || m.bytes.len() % 3073 != 0)
        .collect();
    all_errors_naming(&p, &run_mutants(&p, &cuts, read));
    run_mutants(&p, &byte_flips(&bytes, SEED, 32, None), read);
    for b in 2..=5 {
        std::fs::write(dir.path().join(format!("data_batch_{b}.bin")), &bytes).unwrap();
    }
    std::fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
    std::fs::write(dir.path().join("data_batch_4.bin"), &bytes[..2 * 3073]).unwrap();
    let e = vt_data::open_classification(dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "data_batch_4.bin: truncated CIFAR batch: 2 records, where data_batch_1.bin has 4"
        ),
        "{e}"
    );
    let edits: Vec<Mutant> = (0..4)
        .map(|i| {
            overwrite(
                &bytes,
                i * 3073,
                &[10 + i as u8],
                format!("label of record {i} set to {}", 10 + i),
            )
        })
        .collect();
    let outcomes = run_mutants(&p, &edits, read);
    all_errors_naming(&p, &outcomes);
    for (i, (_, out)) in outcomes.iter().enumerate() {
        let e = out.as_ref().err().unwrap().to_string();
        assert!(e.contains(&format!("sample {i}: label {}", 10 + i)), "{e}");
    }
}

/// Real JPEG and PNG files (RGB and grayscale, written by `image`), and label maps.
#[test]
fn jpeg_and_png_images_and_label_maps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let jpg = d.join("photo.jpg");
    common::write_jpeg(&jpg, 97, 64, 5);
    let png = d.join("photo.png");
    common::write_png(&png, 61, 40, 3);
    let labels = d.join("labels.png");
    common::write_palette_labels(&labels, 33, 21, |x, y| ((x + y) % 7) as u8);

    for (path, read) in [
        (
            &jpg,
            (|p: &Path| Image::open_rgb(p).map(|_| ())) as fn(&Path) -> Result<(), DataError>,
        ),
        (&png, |p: &Path| Image::open_rgb(p).map(|_| ())),
        (&labels, |p: &Path| LabelMap::open_png(p).map(|_| ())),
    ] {
        let whole = std::fs::read(path).unwrap();
        read(path).unwrap_or_else(|e| panic!("the intact file fails: {e}"));
        // The cuts (10, 50, 90, 99 %) and 24 more: all errors naming the file.
        let outcomes = run_mutants(path, &truncations(&whole, 24), read);
        all_errors_naming(path, &outcomes);
        for (what, out) in &outcomes {
            let e = out.as_ref().unwrap_err().to_string();
            assert!(e.contains("cannot decode image"), "{what}: {e}");
        }
        run_mutants(path, &byte_flips(&whole, SEED, 48, None), read);
        run_mutants(path, &byte_flips(&whole, SEED + 2, 48, Some(0..64)), read);
        std::fs::write(path, &whole).unwrap();
    }

    // PNG: every flip inside a chunk is caught by its CRC (the signature aside).
    let whole = std::fs::read(&png).unwrap();
    let flips = byte_flips(&whole, SEED + 3, 32, Some(8..whole.len()));
    all_errors_naming(&png, &run_mutants(&png, &flips, Image::open_rgb));

    // Header edits: zero and huge sizes in the JPEG frame header and the PNG IHDR.
    let whole = std::fs::read(&jpg).unwrap();
    let sof = (0..whole.len() - 1)
        .find(|&i| whole[i] == 0xFF && whole[i + 1] == 0xC0)
        .expect("a baseline frame header");
    let edits = [
        overwrite(&whole, sof + 5, &[0, 0], "with height 0"),
        overwrite(&whole, sof + 7, &[0, 0], "with width 0"),
        overwrite(&whole, sof + 5, &[0xff; 4], "with 65535 x 65535 pixels"),
        overwrite(
            &whole,
            sof + 2,
            &[0xff, 0xff],
            "with a frame header claiming 65535 bytes",
        ),
    ];
    run_mutants(&jpg, &edits, Image::open_rgb);
    let whole = std::fs::read(&png).unwrap();
    let edits = [
        overwrite(&whole, 16, &[0; 4], "with width 0"),
        overwrite(
            &whole,
            16,
            &[0x7f, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
            "with 2^31 x 2^31 pixels",
        ),
        overwrite(
            &whole,
            8,
            &[0x7f, 0xff, 0xff, 0xff],
            "with an IHDR length past the end",
        ),
    ];
    all_errors_naming(&png, &run_mutants(&png, &edits, Image::open_rgb));
}

/// The case: a photo cut to 10, 50, 90 or 99 % of its bytes, in an image folder, is
/// unreadable (PIL: "image file is truncated"), and the loader's `skip_bad` counts it.
#[test]
fn truncated_photos_in_a_folder_are_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("whole.jpg");
    common::write_jpeg(&src, 160, 120, 9);
    let whole = std::fs::read(&src).unwrap();
    std::fs::remove_file(&src).unwrap();
    for class in ["a", "b"] {
        common::write_jpeg(&d.join(format!("train/{class}/ok.jpg")), 40, 30, 1);
        common::write_jpeg(&d.join(format!("val/{class}/ok.jpg")), 40, 30, 2);
    }
    for pct in [10, 50, 90, 99] {
        let cut = &whole[..whole.len() * pct / 100];
        std::fs::write(d.join(format!("train/a/cut{pct}.jpg")), cut).unwrap();
    }
    let data = vt_data::open_classification(d, None).unwrap();
    let errors: Vec<String> = (0..data.train.len())
        .filter_map(|i| data.train.get(i).err().map(|e| e.to_string()))
        .collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    for e in &errors {
        assert!(e.contains("cut") && e.contains("truncated"), "{e}");
    }
}
