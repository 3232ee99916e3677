//! Evaluation metrics, fed one [`StepOutput`] at a time (burn's metric + adaptor: a task's step
//! gives logits and targets, each metric reads what it needs). Values are typed entries named
//! by the constants below, so the log, `metrics.json` and the report share one vocabulary.
//!
//! * [`TopK`]: classification, logits `(N, K)`, labels `(N,)`;
//! * [`ConfusionMatrix`]: segmentation, logits `(N, K, H, W)`, labels `(N, H, W)` with an ignore
//!   index; mIoU, pixel accuracy and per-class IoU as detectron2's `SemSegEvaluator` computes them.
//!
//! Every value is in percent.

use crate::step::StepOutput;
use candle_core::{bail, DType, Result};
use serde::{Deserialize, Serialize};

/// Top-1 accuracy (%).
pub const TOP1: &str = "top1";
/// Top-5 accuracy (%).
pub const TOP5: &str = "top5";
/// Mean intersection over union (%) of the classes present in the ground truth.
pub const MIOU: &str = "miou";
/// Pixel accuracy (%): correctly labelled pixels over labelled (non-ignored) pixels.
pub const PIXEL_ACC: &str = "pixel_acc";
/// IoU (%) of each class; `None` for a class with no ground-truth pixel.
pub const PER_CLASS_IOU: &str = "per_class_iou";

/// One value a metric reports. In JSON a scalar is a number and a per-class value an array
/// with `null` for undefined classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricValue {
    Scalar(f64),
    PerClass(Vec<Option<f64>>),
}

impl MetricValue {
    pub fn as_scalar(&self) -> Option<f64> {
        match self {
            MetricValue::Scalar(v) => Some(*v),
            MetricValue::PerClass(_) => None,
        }
    }

    pub fn as_per_class(&self) -> Option<&[Option<f64>]> {
        match self {
            MetricValue::Scalar(_) => None,
            MetricValue::PerClass(v) => Some(v),
        }
    }
}

/// A metric accumulated over an evaluation pass.
pub trait Metric {
    /// Adds one batch; `loss` is the batch's mean loss.
    fn update(&mut self, out: &StepOutput, loss: f64) -> Result<()>;
    /// The named values so far. A value that is undefined (nothing seen yet) is left out, so
    /// every reported number is finite.
    fn values(&self) -> Vec<(String, MetricValue)>;
    /// The additive counts behind the values (hits and samples, a confusion matrix): what a
    /// sharded evaluation sums over the ranks.
    fn counts(&self) -> Vec<f64>;
    /// Replaces the counts by `counts`, laid out as [`Metric::counts`] gives them.
    fn set_counts(&mut self, counts: &[f64]) -> Result<()>;
}

/// `counts` checked against the length a metric expects.
fn expect_counts<'a>(what: &str, counts: &'a [f64], n: usize) -> Result<&'a [f64]> {
    if counts.len() != n {
        bail!("{what}: {} counts given, {n} expected", counts.len());
    }
    Ok(counts)
}

/// Top-k accuracy in percent: the label is among the k largest logits (ties count against).
pub struct TopK {
    k: usize,
    hits: usize,
    count: usize,
}

impl TopK {
    /// Reported as `top{k}` ([`TOP1`], [`TOP5`]).
    pub fn new(k: usize) -> Self {
        Self {
            k,
            hits: 0,
            count: 0,
        }
    }
}

impl Metric for TopK {
    fn update(&mut self, out: &StepOutput, _loss: f64) -> Result<()> {
        let logits = out.logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let labels = out.targets.to_vec1::<u32>()?;
        if logits.len() != labels.len() {
            bail!(
                "top-{}: {} logits rows but {} labels",
                self.k,
                logits.len(),
                labels.len()
            );
        }
        for (i, (row, &y)) in logits.iter().zip(&labels).enumerate() {
            let Some(&target) = row.get(y as usize) else {
                bail!(
                    "top-{}: sample {i} of the batch has label {y}, outside the {} classes of the logits",
                    self.k,
                    row.len()
                )
            };
            let better = row.iter().filter(|&&v| v > target).count();
            if better < self.k {
                self.hits += 1;
            }
        }
        self.count += labels.len();
        Ok(())
    }

    fn values(&self) -> Vec<(String, MetricValue)> {
        if self.count == 0 {
            return vec![];
        }
        let v = 100.0 * self.hits as f64 / self.count as f64;
        vec![(format!("top{}", self.k), MetricValue::Scalar(v))]
    }

    fn counts(&self) -> Vec<f64> {
        vec![self.hits as f64, self.count as f64]
    }

    fn set_counts(&mut self, counts: &[f64]) -> Result<()> {
        let c = expect_counts("top-k", counts, 2)?;
        (self.hits, self.count) = (c[0] as usize, c[1] as usize);
        Ok(())
    }
}

/// A `K × K` confusion matrix over every labelled pixel of an evaluation pass: rows are the
/// ground truth, columns the prediction (argmax over the class axis); pixels labelled
/// `ignore_index` are not counted.
///
/// Values (detectron2's `SemSegEvaluator`): `IoU_k = TP_k / (TP_k + FP_k + FN_k)`; a class with
/// no ground-truth pixel has no IoU (`None`) and is left out of the mean, even if it was
/// predicted (its false positives still count as false negatives of the true classes); pixel
/// accuracy is `trace / total`. With no labelled pixel at all nothing is reported.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfusionMatrix {
    num_classes: usize,
    ignore_index: u32,
    /// Row-major counts, `counts[gt * K + pred]`.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(num_classes: usize, ignore_index: u32) -> Self {
        Self {
            num_classes,
            ignore_index,
            counts: vec![0; num_classes * num_classes],
        }
    }

    /// Count of pixels of ground truth `gt` predicted as `pred`.
    pub fn get(&self, gt: usize, pred: usize) -> u64 {
        self.counts[gt * self.num_classes + pred]
    }

    /// Adds predicted and ground-truth labels of the same pixels.
    pub fn add(&mut self, predictions: &[u32], labels: &[u32]) -> Result<()> {
        let k = self.num_classes;
        if predictions.len() != labels.len() {
            bail!(
                "confusion matrix: {} predictions but {} labels",
                predictions.len(),
                labels.len()
            );
        }
        for (&p, &g) in predictions.iter().zip(labels) {
            if g == self.ignore_index {
                continue;
            }
            let (g, p) = (g as usize, p as usize);
            if g >= k || p >= k {
                bail!(
                    "confusion matrix: label {g} or prediction {p} outside 0..{k} (and not the ignore index {})",
                    self.ignore_index
                );
            }
            self.counts[g * k + p] += 1;
        }
        Ok(())
    }

    /// IoU (%) of each class, `None` where the class has no ground-truth pixel.
    pub fn per_class_iou(&self) -> Vec<Option<f64>> {
        let k = self.num_classes;
        (0..k)
            .map(|c| {
                let gt: u64 = (0..k).map(|p| self.get(c, p)).sum();
                let pred: u64 = (0..k).map(|g| self.get(g, c)).sum();
                let tp = self.get(c, c);
                (gt > 0).then(|| 100.0 * tp as f64 / (gt + pred - tp) as f64)
            })
            .collect()
    }

    /// Mean IoU (%) over the classes with ground truth; `None` if there is none.
    pub fn miou(&self) -> Option<f64> {
        let ious: Vec<f64> = self.per_class_iou().into_iter().flatten().collect();
        (!ious.is_empty()).then(|| ious.iter().sum::<f64>() / ious.len() as f64)
    }

    /// Pixel accuracy (%); `None` with no labelled pixel.
    pub fn pixel_accuracy(&self) -> Option<f64> {
        let total: u64 = self.counts.iter().sum();
        let trace: u64 = (0..self.num_classes).map(|c| self.get(c, c)).sum();
        (total > 0).then(|| 100.0 * trace as f64 / total as f64)
    }
}

impl Metric for ConfusionMatrix {
    fn update(&mut self, out: &StepOutput, _loss: f64) -> Result<()> {
        let (_, k, _, _) = out.logits.dims4()?;
        if k != self.num_classes {
            bail!(
                "confusion matrix of {} classes fed logits of {k} classes",
                self.num_classes
            );
        }
        let pred = out.logits.argmax(1)?.flatten_all()?.to_vec1::<u32>()?;
        let labels = out.targets.flatten_all()?.to_vec1::<u32>()?;
        self.add(&pred, &labels)
    }

    fn values(&self) -> Vec<(String, MetricValue)> {
        let (Some(miou), Some(acc)) = (self.miou(), self.pixel_accuracy()) else {
            return vec![];
        };
        vec![
            (MIOU.into(), MetricValue::Scalar(miou)),
            (PIXEL_ACC.into(), MetricValue::Scalar(acc)),
            (
                PER_CLASS_IOU.into(),
                MetricValue::PerClass(self.per_class_iou()),
            ),
        ]
    }

    fn counts(&self) -> Vec<f64> {
        // exact: a pass counts far fewer than 2^53 pixels
        self.counts.iter().map(|&c| c as f64).collect()
    }

    fn set_counts(&mut self, counts: &[f64]) -> Result<()> {
        let c = expect_counts("confusion matrix", counts, self.counts.len())?;
        self.counts = c.iter().map(|&v| v as u64).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn out(logits: Tensor, targets: Tensor) -> StepOutput {
        StepOutput {
            loss: Tensor::new(0f32, &Device::Cpu).unwrap(),
            logits,
            targets,
        }
    }

    #[test]
    fn top1_top2() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(
            &[[0.1f32, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]],
            &dev,
        )?;
        let o = out(logits, Tensor::new(&[2u32, 0, 0], &dev)?);
        let (mut t1, mut t2) = (TopK::new(1), TopK::new(2));
        assert!(t1.values().is_empty());
        t1.update(&o, 2.0)?;
        t2.update(&o, 2.0)?;
        assert_eq!(t1.values()[0].0, TOP1);
        let v1 = t1.values()[0].1.as_scalar().unwrap();
        let v2 = t2.values()[0].1.as_scalar().unwrap();
        assert!((v1 - 100.0 / 3.0).abs() < 1e-9);
        assert!((v2 - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(t2.values()[0].0, "top2");
        let bad = out(
            Tensor::zeros((2, 3), candle_core::DType::F32, &dev)?,
            Tensor::new(&[1u32, 3], &dev)?,
        );
        let e = TopK::new(1).update(&bad, 0.0).unwrap_err().to_string();
        assert!(
            e.contains("sample 1 of the batch has label 3, outside the 3 classes"),
            "{e}"
        );
        Ok(())
    }

    /// gt 0 0 0 1 1 2 2 255, pred 0 0 1 1 3 2 0 2; class 3 is predicted but never in the
    /// ground truth, class 4 appears in neither.
    #[test]
    fn confusion_matrix_by_hand() -> Result<()> {
        let mut cm = ConfusionMatrix::new(5, 255);
        cm.add(&[0, 0, 1, 1, 3, 2, 0, 2], &[0, 0, 0, 1, 1, 2, 2, 255])?;
        assert_eq!(cm.get(0, 0), 2);
        assert_eq!(cm.get(0, 1), 1);
        assert_eq!(cm.get(1, 3), 1);
        assert_eq!(cm.get(2, 0), 1);
        assert_eq!(
            cm.counts.iter().sum::<u64>(),
            7,
            "the ignored pixel is not counted"
        );
        // class 0: TP 2, FN 1, FP 1 (a class-2 pixel) -> 2/4
        // class 1: TP 1, FN 1 (predicted 3), FP 1 (a class-0 pixel) -> 1/3
        // class 2: TP 1, FN 1, FP 0 (the pixel predicted 2 is ignored) -> 1/2
        let iou = cm.per_class_iou();
        let want = [Some(50.0), Some(100.0 / 3.0), Some(50.0), None, None];
        for (got, want) in iou.iter().zip(want) {
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{iou:?}"),
                (g, w) => assert_eq!(*g, w, "{iou:?}"),
            }
        }
        let miou = cm.miou().unwrap();
        assert!((miou - (50.0 + 100.0 / 3.0 + 50.0) / 3.0).abs() < 1e-9);
        assert!((cm.pixel_accuracy().unwrap() - 400.0 / 7.0).abs() < 1e-9);
        let values = cm.values();
        let names: Vec<&str> = values.iter().map(|v| v.0.as_str()).collect();
        assert_eq!(names, [MIOU, PIXEL_ACC, PER_CLASS_IOU]);
        assert_eq!(
            serde_json::to_string(&values[2].1).unwrap(),
            format!("[50.0,{},50.0,null,null]", 100.0 / 3.0)
        );
        Ok(())
    }

    #[test]
    fn confusion_matrix_from_logits_and_its_errors() -> Result<()> {
        let dev = Device::Cpu;
        // one 1x3 image, 2 classes: predictions 1 0 1
        let logits = Tensor::new(&[0f32, 1., 0., 1., 0., 1.], &dev)?.reshape((1, 2, 1, 3))?;
        let labels = Tensor::new(&[1u32, 1, 255], &dev)?.reshape((1, 1, 3))?;
        let mut cm = ConfusionMatrix::new(2, 255);
        assert!(cm.values().is_empty(), "nothing seen: nothing reported");
        cm.update(&out(logits.clone(), labels.clone()), 0.0)?;
        assert_eq!(cm.per_class_iou(), vec![None, Some(50.0)]);
        assert_eq!(cm.miou(), Some(50.0));
        let err = ConfusionMatrix::new(3, 255)
            .update(&out(logits.clone(), labels), 0.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("of 3 classes fed logits of 2"), "{err}");
        let bad = Tensor::new(&[1u32, 7, 0], &dev)?.reshape((1, 1, 3))?;
        let err = cm.update(&out(logits, bad), 0.0).unwrap_err().to_string();
        assert!(err.contains("label 7"), "{err}");
        // only ignored pixels: nothing to report
        let mut empty = ConfusionMatrix::new(2, 255);
        empty.add(&[0, 1], &[255, 255])?;
        assert!(empty.values().is_empty());
        Ok(())
    }

    /// What a sharded evaluation does: the counts of two halves, summed and set, give the
    /// values of the whole pass.
    #[test]
    fn summed_counts_of_two_shards_are_the_whole_pass() -> Result<()> {
        let (gt, pred) = ([0u32, 0, 0, 1, 1, 2, 2, 255], [0u32, 0, 1, 1, 3, 2, 0, 2]);
        let mut whole = ConfusionMatrix::new(5, 255);
        whole.add(&pred, &gt)?;
        let (mut a, mut b) = (ConfusionMatrix::new(5, 255), ConfusionMatrix::new(5, 255));
        a.add(&pred[..3], &gt[..3])?;
        b.add(&pred[3..], &gt[3..])?;
        let summed: Vec<f64> = a
            .counts()
            .iter()
            .zip(b.counts())
            .map(|(x, y)| x + y)
            .collect();
        a.set_counts(&summed)?;
        assert_eq!(a, whole);
        assert_eq!(a.values(), whole.values());
        let mut top = TopK::new(1);
        top.set_counts(&[3.0, 4.0])?;
        assert_eq!(top.values()[0].1, MetricValue::Scalar(75.0));
        let err = top.set_counts(&[1.0]).unwrap_err().to_string();
        assert!(err.contains("top-k: 1 counts given, 2 expected"), "{err}");
        Ok(())
    }
}
