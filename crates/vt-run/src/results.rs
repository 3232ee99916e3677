//! What a run leaves: `metrics.json` ([`RunMetrics`]), the typed log read back
//! ([`load_result`]), and a fresh evaluation of its newest checkpoint ([`evaluate_run`]).

use crate::config::saved_config;
use crate::data::{prepare, Prepared};
use crate::error::{invalid, Result, RunError};
use crate::model::{checkpoint_weights, initial_store, Net, SegNet};
use crate::RunConfig;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use vt_backbones::Task;
use vt_ops::VarStore;
use vt_train::{
    evaluate, read_log, ClassificationStep, EvalResult, LogRecord, MetricValue, SegmentationStep,
};

/// What `metrics.json` holds at the end of a run: the final test figures, cost and speed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// The preset trained.
    pub model: String,
    /// The preset's task (files without it are classification runs).
    #[serde(default = "classification")]
    pub task: Task,
    /// Test loss (`null` in the file when not finite).
    #[serde(with = "vt_train::eval::finite_or_null")]
    pub loss: f64,
    /// The task's test metrics as top-level keys named by `vt_train::metrics`: `top1`,
    /// `top5` for classification; `miou`, `pixel_acc`, `per_class_iou` for segmentation.
    #[serde(flatten)]
    pub test: BTreeMap<String, MetricValue>,
    /// MACs and parameters at the run's input size.
    pub macs: u64,
    pub params: u64,
    /// Training throughput (images per second of training step).
    pub images_per_sec: f64,
    pub epochs: usize,
    pub steps: u64,
    /// Samples seen per training epoch, and test samples.
    pub train_samples: usize,
    pub test_samples: usize,
    pub data_source: String,
    /// Processes of the data-parallel run (1: a single process).
    #[serde(default = "one")]
    pub world_size: usize,
}

fn classification() -> Task {
    Task::Classification
}

fn one() -> usize {
    1
}

impl RunMetrics {
    /// A scalar test metric (`top1`, `miou`, ...), if the run reported it.
    pub fn scalar(&self, name: &str) -> Option<f64> {
        self.test.get(name).and_then(MetricValue::as_scalar)
    }

    /// A per-class test metric (`per_class_iou`), if the run reported it.
    pub fn per_class(&self, name: &str) -> Option<&[Option<f64>]> {
        self.test.get(name).and_then(MetricValue::as_per_class)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| RunError::io("read", path, e))?;
        serde_json::from_str(&text).map_err(|source| RunError::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the file atomically (tmp + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|source| RunError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(|e| RunError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| RunError::io("write", path, e))
    }
}

/// A test evaluation of the log.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPoint {
    /// The epoch it followed (0-based) and the steps done.
    pub epoch: usize,
    pub step: u64,
    pub result: EvalResult,
}

/// A finished run read back: its final figures and its curves.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    pub metrics: RunMetrics,
    /// The test evaluation after each epoch, in order.
    pub evals: Vec<EvalPoint>,
    /// `(step, training loss)` of every step record.
    pub train_loss: Vec<(u64, f64)>,
}

impl RunResult {
    /// `(epoch counted from 1, value)` of a scalar test metric after each epoch.
    pub fn curve(&self, metric: &str) -> Vec<(f64, f64)> {
        self.evals
            .iter()
            .filter_map(|e| Some((e.epoch as f64 + 1.0, e.result.scalar(metric)?)))
            .collect()
    }
}

/// Reads a finished run directory: `metrics.json` and the log.
pub fn load_result(dir: &Path) -> Result<RunResult> {
    let metrics = RunMetrics::load(&dir.join("metrics.json"))?;
    let (mut evals, mut train_loss) = (vec![], vec![]);
    for r in read_log(&dir.join("log.jsonl"))? {
        match r {
            LogRecord::Step { step, loss, .. } => train_loss.push((step, loss)),
            LogRecord::Eval {
                step,
                epoch,
                result,
                ..
            } => evals.push(EvalPoint {
                epoch,
                step,
                result,
            }),
            LogRecord::Epoch { .. } => {}
        }
    }
    Ok(RunResult {
        metrics,
        evals,
        train_loss,
    })
}

/// A fresh evaluation of a run's newest checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The preset.
    pub model: String,
    /// Steps the checkpoint had trained, and whether its EMA weights were evaluated.
    pub step: u64,
    pub ema: bool,
    pub result: EvalResult,
    /// Which files or directory the test data came from.
    pub source: String,
}

/// Evaluates the newest checkpoint of the run in `dir` (its EMA weights when the run keeps an
/// EMA, as training evaluates) on the run's test data, or on the data in `data`.
pub fn evaluate_run(dir: &Path, data: Option<&Path>, device: &Device) -> Result<Evaluation> {
    // on the CPU kernels' thread pool, as training
    vt_ops::in_thread_pool(|| evaluate_run_here(dir, data, device))
}

fn evaluate_run_here(dir: &Path, data: Option<&Path>, device: &Device) -> Result<Evaluation> {
    let mut cfg = saved_config(dir)?;
    if let Some(d) = data {
        cfg.data.path = Some(d.to_path_buf());
    }
    let p = prepare(cfg, device)?;
    let (store, step, ema) = checkpoint_weights(dir, device)?;
    let result = evaluate_store(&p, &store, |s| s.finish().map_err(Into::into))?;
    Ok(Evaluation {
        model: p.cfg.model.preset.clone(),
        step,
        ema,
        result,
        source: p.source,
    })
}

/// Evaluates hub model `cfg.model.pretrained` as it is, without training, on the config's
/// test data ([`RunConfig::with_pretrained`] gives the geometry). Its head must fit the data's
/// classes: a head started fresh would score chance.
pub fn evaluate_pretrained(cfg: RunConfig, device: &Device) -> Result<Evaluation> {
    vt_ops::in_thread_pool(|| evaluate_pretrained_here(cfg, device))
}

fn evaluate_pretrained_here(cfg: RunConfig, device: &Device) -> Result<Evaluation> {
    let Some(id) = cfg.model.pretrained.clone() else {
        invalid!("evaluate_pretrained: model.pretrained is not set")
    };
    let p = prepare(cfg, device)?;
    let store = initial_store(&p.cfg.model, p.cfg.train.seed, device)?;
    let result = evaluate_store(&p, &store, |s| {
        s.finish()?;
        let (fresh, _) = s.fresh_keys();
        if !fresh.is_empty() {
            invalid!(
                "{id}: its head does not fit {} classes ({} would start untrained), so there is nothing to evaluate",
                p.cfg.model.num_classes.unwrap_or(0),
                fresh.join(", ")
            )
        }
        Ok(())
    })?;
    Ok(Evaluation {
        model: p.cfg.model.preset.clone(),
        step: 0,
        ema: false,
        result,
        source: p.source,
    })
}

/// The test metrics of the model of `p` with the variables of `store`; `check` runs once the
/// model is built (the store's key check).
fn evaluate_store(
    p: &Prepared,
    store: &VarStore,
    check: impl Fn(&VarStore) -> Result<()>,
) -> Result<EvalResult> {
    Ok(match p.cfg.model.task()? {
        Task::Classification => {
            let net = Net::new(&p.cfg.model, store)?;
            check(store)?;
            let task = ClassificationStep {
                model: &net,
                label_smoothing: 0.0,
                teacher: None,
            };
            evaluate(&task, p.test.as_ref())?
        }
        Task::Segmentation => {
            let net = SegNet::new(&p.cfg.model, store)?;
            check(store)?;
            let classes = net.0.config().num_classes;
            evaluate(&SegmentationStep::new(&net, classes), p.test.as_ref())?
        }
    })
}

/// Copies the finished run in `from` to `to` (a run planned twice with the same config):
/// its config, log, metrics and newest checkpoint, so `to` evaluates, resumes and reports as
/// if it had been trained there.
pub fn copy_run(from: &Path, to: &Path) -> Result<()> {
    let copy = |rel: &Path| -> Result<()> {
        let (src, dst) = (from.join(rel), to.join(rel));
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RunError::io("create", parent, e))?;
        }
        std::fs::copy(&src, &dst).map_err(|e| RunError::io("copy", &src, e))?;
        Ok(())
    };
    for f in ["config.toml", "log.jsonl", "metrics.json"] {
        copy(Path::new(f))?;
    }
    let latest = from.join("checkpoints/latest");
    if latest.exists() {
        let name =
            std::fs::read_to_string(&latest).map_err(|e| RunError::io("read", &latest, e))?;
        let step = Path::new("checkpoints").join(name.trim());
        let files = std::fs::read_dir(from.join(&step))
            .map_err(|e| RunError::io("list", from.join(&step), e))?;
        for f in files {
            let f = f.map_err(|e| RunError::io("list", from.join(&step), e))?;
            copy(&step.join(f.file_name()))?;
        }
        copy(Path::new("checkpoints/latest"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vt_train::metrics::{MIOU, PER_CLASS_IOU, PIXEL_ACC, TOP1, TOP5};

    fn metrics(test: BTreeMap<String, MetricValue>) -> RunMetrics {
        RunMetrics {
            model: "m".into(),
            task: Task::Classification,
            loss: 0.5,
            test,
            macs: 10,
            params: 2,
            images_per_sec: 100.0,
            epochs: 1,
            steps: 4,
            train_samples: 64,
            test_samples: 32,
            data_source: "d".into(),
            world_size: 1,
        }
    }

    #[test]
    fn metrics_json_has_the_metric_names_as_top_level_keys() {
        let cls = metrics(
            [
                (TOP1.to_string(), MetricValue::Scalar(81.25)),
                (TOP5.to_string(), MetricValue::Scalar(99.0)),
            ]
            .into(),
        );
        let v: serde_json::Value = serde_json::to_value(&cls).unwrap();
        assert_eq!(v["top1"], 81.25);
        assert_eq!(v["top5"], 99.0);
        assert_eq!(v["loss"], 0.5);
        assert_eq!(v["task"], "classification");
        let back: RunMetrics = serde_json::from_value(v).unwrap();
        assert_eq!(back, cls);
        assert_eq!(back.scalar(TOP1), Some(81.25));
        // the segmentation figures fit the same file
        let seg = metrics(
            [
                (MIOU.to_string(), MetricValue::Scalar(40.0)),
                (PIXEL_ACC.to_string(), MetricValue::Scalar(90.0)),
                (
                    PER_CLASS_IOU.to_string(),
                    MetricValue::PerClass(vec![Some(80.0), None]),
                ),
            ]
            .into(),
        );
        let text = serde_json::to_string(&seg).unwrap();
        assert!(text.contains(r#""per_class_iou":[80.0,null]"#), "{text}");
        let back: RunMetrics = serde_json::from_str(&text).unwrap();
        assert_eq!(back.per_class(PER_CLASS_IOU), Some(&[Some(80.0), None][..]));
        assert_eq!(back.scalar(TOP1), None);
        // a diverged test loss is written as null and read back
        let nan = RunMetrics {
            loss: f64::NAN,
            ..cls
        };
        let back: RunMetrics = serde_json::from_str(&serde_json::to_string(&nan).unwrap()).unwrap();
        assert!(back.loss.is_nan());
    }
}
