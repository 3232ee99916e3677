//! # vt-train
//!
//! Model- and task-agnostic training for vt: it trains anything implementing [`TrainStep`] on
//! anything implementing [`BatchSource`], and knows no backbone or data set (depends on
//! `vt-ops` and candle only).
//!
//! * [`step`]: the [`TrainStep`] trait and the two tasks, [`ClassificationStep`] (over a
//!   [`Classifier`]) and [`SegmentationStep`] (over a [`Segmenter`]);
//! * [`optim`]: RMSProp (TensorFlow form), SGD (momentum / Nesterov), AdamW, with exportable
//!   state and weight-decay groups;
//! * [`schedule`]: learning rate as a pure function of the step (warmup + step / exponential /
//!   cosine decay);
//! * [`loss`]: cross entropy with label smoothing, knowledge distillation, per-pixel cross
//!   entropy with an ignore index;
//! * [`ema`]: EMA of weights and BN statistics;
//! * [`metrics`]: the [`Metric`] trait, top-k, the confusion matrix (mIoU, pixel accuracy);
//! * [`eval`]: [`evaluate`] and its typed [`EvalResult`];
//! * [`checkpoint`]: atomic checkpoints, bit-identical resume;
//! * [`data_parallel`]: DDP's gradient averaging in buckets over a `vt_ops::Group`;
//! * [`log`]: the typed JSON-lines records ([`LogRecord`], [`read_log`]);
//! * [`trainer`]: the loop and its progress display.

pub mod checkpoint;
pub mod config;
pub mod data_parallel;
pub mod ema;
pub mod eval;
pub mod log;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod schedule;
pub mod step;
pub mod trainer;

pub use config::{DistillConfig, TrainConfig};
pub use eval::{evaluate, evaluate_sharded, EvalResult};
pub use log::{read_log, LogRecord};
pub use metrics::{ConfusionMatrix, Metric, MetricValue, TopK};
pub use optim::{Optimizer, OptimizerConfig};
pub use schedule::{Decay, LrSchedule};
pub use step::{
    ClassificationStep, Classifier, SegmentationStep, Segmenter, StepOutput, Teacher, TrainStep,
};
pub use trainer::{BatchSource, FitSummary, Trainer};
