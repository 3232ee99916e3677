//! What a task gives the trainer: [`TrainStep`], one forward of a batch to its loss and its
//! outputs, and the metrics its evaluation reports (burn's `TrainStep` + metric adaptors).
//!
//! * [`ClassificationStep`] over a [`Classifier`] (logits `(N, K)`, labels `(N,)`): cross
//!   entropy with label smoothing (train) or plain (eval), optional distillation; top-1, top-5;
//! * [`SegmentationStep`] over a [`Segmenter`] (logits `(N, K, H, W)`, labels `(N, H, W)` with
//!   255 = ignore): per-pixel cross entropy; mIoU, pixel accuracy, per-class IoU.

use crate::config::TrainConfig;
use crate::loss::{cross_entropy, distillation, pixel_cross_entropy, IGNORE_INDEX};
use crate::metrics::{ConfusionMatrix, Metric, TopK};
use candle_core::{bail, Result, Tensor};
use vt_ops::NoiseSource;

/// One batch through a task: the loss to minimise, and what the metrics read.
pub struct StepOutput {
    /// Mean loss of the batch (a scalar tensor, differentiable in train mode).
    pub loss: Tensor,
    /// The model's output, which the metrics read.
    pub logits: Tensor,
    /// The batch's targets, as given.
    pub targets: Tensor,
}

/// A task the trainer can train and evaluate.
pub trait TrainStep {
    /// The loss and outputs of a batch `(images, targets)`; `train` selects training mode
    /// (dropout, BN batch statistics, the training loss) or evaluation mode.
    fn step(&self, images: &Tensor, targets: &Tensor, train: bool) -> Result<StepOutput>;
    /// Fresh metrics for one evaluation pass.
    fn eval_metrics(&self) -> Vec<Box<dyn Metric>>;
    /// The source of the model's dropout / drop-path masks, if it has one (the trainer sets its
    /// seed and step).
    fn noise(&self) -> Option<&NoiseSource> {
        None
    }
}

/// An image classifier.
pub trait Classifier {
    /// Logits `(N, K)` of images `(N, C, H, W)`.
    fn logits(&self, images: &Tensor, train: bool) -> Result<Tensor>;
    /// The source of dropout / drop-path masks, if the model has one.
    fn noise(&self) -> Option<&NoiseSource> {
        None
    }
}

/// A semantic segmenter.
pub trait Segmenter {
    /// Per-pixel logits `(N, K, H, W)` of images `(N, C, H, W)`, at the input resolution.
    fn logits(&self, images: &Tensor, train: bool) -> Result<Tensor>;
    /// The source of dropout / drop-path masks, if the model has one.
    fn noise(&self) -> Option<&NoiseSource> {
        None
    }
}

/// Teacher for knowledge distillation (see [`distillation`]): evaluated in eval mode, constant.
pub struct Teacher<'a> {
    pub model: &'a dyn Classifier,
    pub temperature: f64,
    /// Weight of the KD term (the paper: 0.8).
    pub kd_weight: f64,
}

/// Classification: in training, cross entropy with `label_smoothing` (or the distillation loss
/// when a teacher is set); in evaluation, plain cross entropy. Metrics: top-1, top-5.
pub struct ClassificationStep<'a> {
    pub model: &'a dyn Classifier,
    pub label_smoothing: f64,
    pub teacher: Option<Teacher<'a>>,
}

impl<'a> ClassificationStep<'a> {
    /// The step a `[train]` config asks for: its label smoothing, and its distillation with
    /// `teacher`; `[train.distillation]` and the teacher must come together.
    pub fn from_config(
        model: &'a dyn Classifier,
        cfg: &TrainConfig,
        teacher: Option<&'a dyn Classifier>,
    ) -> Result<Self> {
        let teacher = match (&cfg.distillation, teacher) {
            (Some(d), Some(t)) => Some(Teacher {
                model: t,
                temperature: d.temperature,
                kd_weight: d.kd_weight,
            }),
            (None, None) => None,
            (d, t) => bail!(
                "[train.distillation] and the teacher must be given together (config has distillation: {}, teacher given: {})",
                d.is_some(),
                t.is_some()
            ),
        };
        Ok(Self {
            model,
            label_smoothing: cfg.label_smoothing,
            teacher,
        })
    }
}

impl TrainStep for ClassificationStep<'_> {
    fn step(&self, images: &Tensor, targets: &Tensor, train: bool) -> Result<StepOutput> {
        let logits = self.model.logits(images, train)?;
        let loss = match (&self.teacher, train) {
            (_, false) => cross_entropy(&logits, targets, 0.0)?,
            (None, true) => cross_entropy(&logits, targets, self.label_smoothing)?,
            (Some(t), true) => {
                // the teacher is a fixed target: always in eval mode
                let tl = t.model.logits(images, false)?;
                distillation(
                    &logits,
                    &tl,
                    targets,
                    t.temperature,
                    t.kd_weight,
                    self.label_smoothing,
                )?
            }
        };
        Ok(StepOutput {
            loss,
            logits,
            targets: targets.clone(),
        })
    }

    fn eval_metrics(&self) -> Vec<Box<dyn Metric>> {
        vec![Box::new(TopK::new(1)), Box::new(TopK::new(5))]
    }

    fn noise(&self) -> Option<&NoiseSource> {
        self.model.noise()
    }
}

/// Semantic segmentation: per-pixel cross entropy over the pixels not labelled
/// `ignore_index`, in training and evaluation alike. Metric: one confusion matrix over the
/// evaluation pass (mIoU, pixel accuracy, per-class IoU).
pub struct SegmentationStep<'a> {
    pub model: &'a dyn Segmenter,
    pub num_classes: usize,
    pub ignore_index: u32,
}

impl<'a> SegmentationStep<'a> {
    /// With the usual ignore index 255.
    pub fn new(model: &'a dyn Segmenter, num_classes: usize) -> Self {
        Self {
            model,
            num_classes,
            ignore_index: IGNORE_INDEX,
        }
    }

    /// As [`SegmentationStep::new`], refusing the `[train]` knobs this task would ignore.
    pub fn from_config(
        model: &'a dyn Segmenter,
        num_classes: usize,
        cfg: &TrainConfig,
    ) -> Result<Self> {
        if cfg.label_smoothing != 0.0 || cfg.distillation.is_some() {
            bail!("segmentation does not use train.label_smoothing or [train.distillation]; set label_smoothing = 0 and remove the distillation section");
        }
        Ok(Self::new(model, num_classes))
    }
}

impl TrainStep for SegmentationStep<'_> {
    fn step(&self, images: &Tensor, targets: &Tensor, train: bool) -> Result<StepOutput> {
        let logits = self.model.logits(images, train)?;
        let k = logits.dim(1)?;
        if k != self.num_classes {
            bail!(
                "the segmenter gives {k} class maps, the task has {} classes",
                self.num_classes
            );
        }
        let loss = pixel_cross_entropy(&logits, targets, self.ignore_index)?;
        Ok(StepOutput {
            loss,
            logits,
            targets: targets.clone(),
        })
    }

    fn eval_metrics(&self) -> Vec<Box<dyn Metric>> {
        vec![Box::new(ConfusionMatrix::new(
            self.num_classes,
            self.ignore_index,
        ))]
    }

    fn noise(&self) -> Option<&NoiseSource> {
        self.model.noise()
    }
}
