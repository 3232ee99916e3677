//! `bench-peer --end-to-end`: a whole `cargo xtask train` run against the same run written in
//! PyTorch (`benches/peer/train.py`), each timed from process start to exit: data decoding,
//! the loader and augmentation, every step, logging, checkpoints and the per-epoch evaluation.

use super::peer_path;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use vt_run::{RunConfig, RunMetrics};
use vt_train::MetricValue;

/// The shape of the comparison: the default recipe on a class-balanced subset.
pub struct EndToEnd<'a> {
    pub python: &'a Path,
    pub reference: PathBuf,
    pub data: PathBuf,
    pub model: &'a str,
    pub epochs: usize,
    pub train_limit: usize,
    pub out: PathBuf,
}

/// One side's figures.
struct Side {
    wall_s: f64,
    images_per_sec: f64,
    top1: f64,
    /// PyTorch's in-script timer (from after `import torch`).
    script_wall_s: Option<f64>,
}

impl EndToEnd<'_> {
    /// `train` with `RunConfig::small_data` (batch 64) on `data`, in a fresh directory.
    fn vt(&self) -> Result<Side> {
        let dir = self.out.join(format!("vt_{}", self.model));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        let mut cfg = RunConfig::small_data(self.model, self.epochs, 64);
        cfg.data.path = Some(self.data.clone());
        cfg.data.train_limit = Some(self.train_limit);
        let config = self.out.join(format!("{}.toml", self.model));
        cfg.save(&config)?;
        let t = Instant::now();
        let out = Command::new(std::env::current_exe()?)
            .args(["train", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&dir)
            .output()?;
        let wall_s = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("vt train failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let m = RunMetrics::load(&dir.join("metrics.json"))?;
        let images = (m.train_samples * m.epochs) as f64;
        let top1 = match m.test.get("top1") {
            Some(MetricValue::Scalar(v)) => *v,
            _ => bail!("{}: no top1", dir.display()),
        };
        Ok(Side {
            wall_s,
            images_per_sec: images / wall_s,
            top1,
            script_wall_s: None,
        })
    }

    /// `train.py`, timed here from process start to exit like vt's side: its own timer starts
    /// after the interpreter has imported torch (about 2 s on the 2-core host).
    fn torch(&self) -> Result<Side> {
        let t = Instant::now();
        let out = Command::new(self.python)
            .arg(peer_path("train.py"))
            .arg("--data")
            .arg(&self.data)
            .args(["--model", self.model])
            .args(["--epochs", &self.epochs.to_string()])
            .args(["--train-limit", &self.train_limit.to_string()])
            .arg("--out")
            .arg(self.out.join(format!("torch_{}", self.model)))
            .arg("--reference")
            .arg(&self.reference)
            .output()?;
        let wall_s = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("train.py failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or_default())
            .with_context(|| format!("train.py printed `{text}`"))?;
        let get = |k: &str| v[k].as_f64().with_context(|| format!("train.py: no `{k}`"));
        Ok(Side {
            wall_s,
            images_per_sec: get("train_images")? / wall_s,
            top1: get("top1")?,
            script_wall_s: Some(get("wall_s")?),
        })
    }

    /// Runs vt, then PyTorch, `reps` times alternating, and prints the medians.
    pub fn run(&self, reps: usize) -> Result<()> {
        let (mut v, mut t) = (vec![], vec![]);
        for _ in 0..reps.max(1) {
            v.push(self.vt()?);
            t.push(self.torch()?);
        }
        let med = |s: &mut Vec<Side>| {
            s.sort_by(|a, b| a.wall_s.total_cmp(&b.wall_s));
            s.swap_remove(s.len() / 2)
        };
        let (v, t) = (med(&mut v), med(&mut t));
        println!(
            "\n| end to end: `train --model {m}`, {e} epochs of {n} images, batch 64 | vt | PyTorch | vt / PyTorch |\n|---|---:|---:|---:|",
            m = self.model,
            e = self.epochs,
            n = self.train_limit
        );
        println!(
            "| images/s (wall, start-up and evaluation included) | {:.0} | {:.0} | {:.2} |",
            v.images_per_sec,
            t.images_per_sec,
            v.images_per_sec / t.images_per_sec
        );
        println!("| wall s | {:.1} | {:.1} | |", v.wall_s, t.wall_s);
        if let Some(inner) = t.script_wall_s {
            println!(
                "| PyTorch's own timer, after `import torch`: s, and vt / PyTorch on it | | {inner:.1} | {:.2} |",
                inner / v.wall_s
            );
        }
        println!("| test top-1 % | {:.2} | {:.2} | |", v.top1, t.top1);
        Ok(())
    }
}
