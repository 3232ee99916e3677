//! `cargo xtask data inspect --data PATH [--format F] [--skip-bad]`: what a data set holds and
//! which of its files cannot be read.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use vt_data::{open_classification, open_segmentation, Dataset, Format};

/// Data set tools.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Detect the format, count samples per split and class, list image sizes, label ranges
    /// and every unreadable file; exits non-zero if any file is bad (unless --skip-bad).
    Inspect(InspectArgs),
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Data set directory.
    #[arg(long)]
    data: PathBuf,
    /// idx | cifar | folder | seg-folder | lip | cocostuff (detected when omitted).
    #[arg(long)]
    format: Option<String>,
    /// Report unreadable files but exit 0.
    #[arg(long)]
    skip_bad: bool,
    /// Threads decoding the files.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

pub fn run(args: Args) -> Result<()> {
    let DataCommand::Inspect(a) = args.command;
    let report = inspect(&a.data, a.format.as_deref(), a.workers)?;
    print!("{}", report.text);
    if report.bad > 0 && !a.skip_bad {
        bail!(
            "{} unreadable sample(s) in {} (listed above; --skip-bad to accept)",
            report.bad,
            a.data.display()
        );
    }
    Ok(())
}

/// The printed report and the number of unreadable samples.
pub struct Report {
    pub text: String,
    pub bad: usize,
}

/// What one split holds.
#[derive(Default)]
struct Stats {
    /// Classification: samples per class; segmentation: pixels per label value.
    labels: BTreeMap<usize, usize>,
    /// (height, width, channels) → samples.
    sizes: BTreeMap<(usize, usize, usize), usize>,
    bad: Vec<(usize, String)>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        for (k, v) in o.labels {
            *self.labels.entry(k).or_default() += v;
        }
        for (k, v) in o.sizes {
            *self.sizes.entry(k).or_default() += v;
        }
        self.bad.extend(o.bad);
    }
}

/// Reads every sample of `ds` on `workers` threads; `visit` records a good sample.
fn scan<S>(
    ds: &dyn Dataset<Sample = S>,
    workers: usize,
    visit: impl Fn(&S, &mut Stats) + Sync,
) -> Stats {
    let n = ds.len();
    let workers = workers.clamp(1, 64);
    let chunk = n.div_ceil(workers).max(1);
    let mut total = Stats::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let visit = &visit;
                s.spawn(move || {
                    let mut st = Stats::default();
                    for i in start..(start + chunk).min(n) {
                        match ds.get(i) {
                            Ok(sample) => visit(&sample, &mut st),
                            Err(e) => st.bad.push((i, e.to_string())),
                        }
                    }
                    st
                })
            })
            .collect();
        for h in handles {
            total.merge(h.join().expect("inspect worker panicked"));
        }
    });
    total.bad.sort();
    total
}

fn describe(out: &mut String, split: &str, len: usize, st: &Stats, what: &str, names: &[String]) {
    let _ = writeln!(out, "{split}: {len} samples");
    let sizes: Vec<String> = st
        .sizes
        .iter()
        .map(|((h, w, c), n)| format!("{h}x{w}x{c} ({n})"))
        .collect();
    let _ = writeln!(out, "  image sizes (HxWxC): {}", sizes.join(", "));
    if let (Some(lo), Some(hi)) = (st.labels.keys().next(), st.labels.keys().last()) {
        let _ = writeln!(out, "  label range: {lo}..={hi}");
    }
    let _ = writeln!(out, "  {what}:");
    for (l, n) in &st.labels {
        let name = match names.get(*l) {
            Some(s) if *s != l.to_string() => format!(" {s}"),
            _ => String::new(),
        };
        let _ = writeln!(out, "    {l:>3}{name}: {n}");
    }
    for (i, e) in &st.bad {
        let _ = writeln!(out, "  unreadable sample {i}: {e}");
    }
}

/// Inspects the data set at `path`.
pub fn inspect(path: &std::path::Path, format: Option<&str>, workers: usize) -> Result<Report> {
    let hub = path
        .to_str()
        .is_some_and(|p| p.starts_with(vt_run::data::HUB_PREFIX));
    let format = match format {
        Some(f) => f.parse::<Format>()?,
        None if hub => Format::Folder, // a classification set of encoded images
        None => vt_data::detect_format(path)?,
    };
    let mut text = String::new();
    let mut bad = 0;
    if format.is_segmentation() {
        let data = open_segmentation(path, Some(format))
            .with_context(|| format!("opening {} as {format}", path.display()))?;
        let _ = writeln!(text, "format: {format} ({})", data.source);
        let _ = writeln!(
            text,
            "classes: {} (ignore index {})",
            data.num_classes, data.ignore_index
        );
        for (split, ds) in [("train", &data.train), ("test", &data.test)] {
            let st = scan(&**ds, workers, |s: &vt_data::SegSample, st| {
                *st.sizes
                    .entry((s.image.height, s.image.width, s.image.channels))
                    .or_default() += 1;
                for &l in &s.label.data {
                    *st.labels.entry(l as usize).or_default() += 1;
                }
            });
            bad += st.bad.len();
            describe(&mut text, split, ds.len(), &st, "pixels per label", &[]);
        }
    } else {
        let data = match hub {
            true => vt_run::open_classification_data(path, None)?,
            false => open_classification(path, Some(format))
                .with_context(|| format!("opening {} as {format}", path.display()))?,
        };
        let name = if hub {
            "hub".to_string()
        } else {
            format.to_string()
        };
        let _ = writeln!(text, "format: {name} ({})", data.source);
        let _ = writeln!(text, "classes: {}", data.num_classes);
        for (split, ds) in [("train", &data.train), ("test", &data.test)] {
            let st = scan(&**ds, workers, |s: &vt_data::ClassSample, st| {
                *st.sizes
                    .entry((s.image.height, s.image.width, s.image.channels))
                    .or_default() += 1;
                *st.labels.entry(s.label).or_default() += 1;
            });
            bad += st.bad.len();
            describe(
                &mut text,
                split,
                ds.len(),
                &st,
                "samples per class",
                &data.class_names,
            );
        }
    }
    let _ = writeln!(text, "unreadable samples: {bad}");
    Ok(Report { text, bad })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_counts_classes_and_lists_bad_files() {
        let dir = std::env::temp_dir().join(format!("vt-xtask-data-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (split, class, name) in [
            ("train", "cat", "a.png"),
            ("train", "cat", "b.png"),
            ("train", "dog", "c.png"),
            ("val", "dog", "d.png"),
        ] {
            let p = dir.join(split).join(class).join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            image_png(&p, 3, 2);
        }
        let r = inspect(&dir, None, 2).unwrap();
        assert_eq!(r.bad, 0);
        assert!(r.text.contains("format: folder"), "{}", r.text);
        assert!(r.text.contains("train: 3 samples"), "{}", r.text);
        assert!(r.text.contains("  0 cat: 2"), "{}", r.text);
        assert!(r.text.contains("2x3x3 (3)"), "{}", r.text);
        std::fs::write(dir.join("train/dog/broken.png"), b"garbage").unwrap();
        let r = inspect(&dir, Some("folder"), 3).unwrap();
        assert_eq!(r.bad, 1);
        assert!(
            r.text.contains("broken.png: cannot decode image"),
            "{}",
            r.text
        );
        let err = inspect(&dir, Some("parquet"), 1).err().unwrap();
        assert!(
            format!("{err:#}").contains("unknown format `parquet`"),
            "{err:#}"
        );
        let err = inspect(&dir, Some("lip"), 1).err().unwrap();
        assert!(format!("{err:#}").contains("LIP layout"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// xtask has no image encoder dependency: write a minimal valid PNG by hand.
    fn image_png(path: &std::path::Path, w: u32, h: u32) {
        std::fs::write(path, tiny_png(w, h)).unwrap();
    }

    /// A valid RGB PNG (stored deflate blocks, CRCs computed here).
    fn tiny_png(w: u32, h: u32) -> Vec<u8> {
        fn crc(bytes: &[u8]) -> u32 {
            let mut c = 0xffff_ffffu32;
            for &b in bytes {
                c ^= b as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0xedb8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        }
        fn adler(bytes: &[u8]) -> u32 {
            let (mut a, mut b) = (1u32, 0u32);
            for &x in bytes {
                a = (a + x as u32) % 65521;
                b = (b + a) % 65521;
            }
            (b << 16) | a
        }
        fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
            out.extend((data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend(data);
            out.extend(&body);
            out.extend(crc(&body).to_be_bytes());
        }
        let mut raw = vec![];
        for y in 0..h {
            raw.push(0);
            for x in 0..w {
                raw.extend([(x * 80) as u8, (y * 100) as u8, 7]);
            }
        }
        let mut z = vec![0x78, 0x01, 1];
        z.extend((raw.len() as u16).to_le_bytes());
        z.extend((!(raw.len() as u16)).to_le_bytes());
        z.extend(&raw);
        z.extend(adler(&raw).to_be_bytes());
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = vec![];
        ihdr.extend(w.to_be_bytes());
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"IDAT", &z);
        chunk(&mut out, b"IEND", &[]);
        out
    }
}
