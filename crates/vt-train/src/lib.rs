//! # vt-train
//!
//! Model-agnostic training for vt: it trains anything implementing [`Classifier`] on anything
//! implementing [`BatchSource`], and knows no backbone or data set (depends on `vt-ops` and
//! candle only).
//!
//! * [`optim`]: RMSProp (TensorFlow form), SGD (momentum / Nesterov), AdamW, with exportable
//!   state and weight-decay groups;
//! * [`schedule`]: learning rate as a pure function of the step (warmup + step / exponential /
//!   cosine decay);
//! * [`loss`]: cross entropy with label smoothing, knowledge distillation;
//! * [`ema`]: EMA of weights and BN statistics;
//! * [`metrics`]: loss, top-k (a trait other tasks extend);
//! * [`checkpoint`]: atomic checkpoints, bit-identical resume;
//! * [`trainer`]: the loop, its JSON-lines log and progress display.

pub mod checkpoint;
pub mod config;
pub mod ema;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use config::{DistillConfig, TrainConfig};
pub use optim::{Optimizer, OptimizerConfig};
pub use schedule::{Decay, LrSchedule};
pub use trainer::{evaluate, BatchSource, Classifier, EvalResult, FitSummary, Teacher, Trainer};
