//! One evaluation pass of a [`TrainStep`] over a [`BatchSource`].

use crate::ema::Ema;
use crate::metrics::MetricValue;
use crate::step::TrainStep;
use crate::trainer::BatchSource;
use candle_core::{DType, Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vt_ops::Group;

/// Sample-weighted mean loss and the task's metrics (named by [`crate::metrics`]'s constants)
/// over one pass of the data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Written as `null` when not finite (JSON has no NaN) and read back as NaN.
    #[serde(with = "finite_or_null")]
    pub loss: f64,
    pub samples: usize,
    pub metrics: BTreeMap<String, MetricValue>,
}

impl EvalResult {
    /// A scalar metric (`top1`, `miou`, ...), if it was reported.
    pub fn scalar(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).and_then(MetricValue::as_scalar)
    }

    /// A per-class metric (`per_class_iou`), if it was reported.
    pub fn per_class(&self, name: &str) -> Option<&[Option<f64>]> {
        self.metrics.get(name).and_then(MetricValue::as_per_class)
    }

    /// `name value` for every scalar metric, for progress lines.
    pub fn summary(&self) -> String {
        let mut s = format!("loss {:.4}", self.loss);
        for (k, v) in &self.metrics {
            if let MetricValue::Scalar(v) = v {
                s.push_str(&format!(", {k} {v:.2}"));
            }
        }
        s
    }
}

pub(crate) fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// Eval-mode loss and the step's metrics over one pass of `data` (its epoch 0, in order).
pub fn evaluate(step: &dyn TrainStep, data: &dyn BatchSource) -> Result<EvalResult> {
    evaluate_sharded(step, data, &Group::default())
}

/// [`evaluate`] when each rank of `group` holds a shard of the data: every rank evaluates its
/// shard, then the loss sums, sample counts and metric counts are summed over the ranks, so
/// every rank returns the result of the whole pass.
pub fn evaluate_sharded(
    step: &dyn TrainStep,
    data: &dyn BatchSource,
    group: &Group,
) -> Result<EvalResult> {
    let mut metrics = step.eval_metrics();
    let (mut loss_sum, mut samples) = (0.0, 0usize);
    for (b, batch) in data.epoch(0, 0).enumerate() {
        let (x, y) = batch?;
        let out = step
            .step(&x, &y, false)
            .map_err(|e| e.context(format!("evaluation batch {b}")))?;
        let loss = scalar(&out.loss)?;
        let n = y.dim(0)?;
        loss_sum += loss * n as f64;
        samples += n;
        for m in metrics.iter_mut() {
            m.update(&out, loss)
                .map_err(|e| e.context(format!("evaluation batch {b}")))?;
        }
    }
    if group.is_distributed() {
        let mut counts = vec![loss_sum, samples as f64];
        let lens: Vec<usize> = metrics.iter().map(|m| m.counts().len()).collect();
        counts.extend(metrics.iter().flat_map(|m| m.counts()));
        group.all_reduce_f64(&mut counts)?;
        (loss_sum, samples) = (counts[0], counts[1] as usize);
        let mut at = 2;
        for (m, n) in metrics.iter_mut().zip(lens) {
            m.set_counts(&counts[at..at + n])?;
            at += n;
        }
    }
    Ok(EvalResult {
        loss: loss_sum / samples.max(1) as f64,
        samples,
        metrics: metrics.iter().flat_map(|m| m.values()).collect(),
    })
}

/// Evaluates with the EMA weights swapped in when there is an EMA (and restores the live ones,
/// also when the evaluation fails).
pub(crate) fn evaluate_maybe_ema(
    step: &dyn TrainStep,
    data: &dyn BatchSource,
    ema: Option<&Ema>,
    vars: &BTreeMap<String, Var>,
    group: &Group,
) -> Result<EvalResult> {
    let Some(e) = ema else {
        return evaluate_sharded(step, data, group);
    };
    let saved = e.swap_in(vars)?;
    let r = evaluate_sharded(step, data, group);
    Ema::restore(vars, saved)?;
    r
}

/// For `#[serde(with = "vt_train::eval::finite_or_null")]` on `f64` fields that may be NaN or
/// infinite: JSON has no such numbers, so they are written as `null` (what serde_json does
/// anyway) and read back as NaN instead of failing.
pub mod finite_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}
