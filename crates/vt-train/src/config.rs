//! The `[train]` section of a run's config.

use crate::optim::OptimizerConfig;
use crate::schedule::LrSchedule;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// safetensors checkpoint of the teacher (same architecture family, any preset).
    pub teacher: String,
    /// Preset name of the teacher.
    pub teacher_model: String,
    pub temperature: f64,
    /// Weight of the KD term; the paper uses 0.8 (and 0.2 for cross entropy).
    pub kd_weight: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub optimizer: OptimizerConfig,
    pub schedule: LrSchedule,
    pub label_smoothing: f64,
    /// EMA decay of weights and BN statistics (paper: 0.99985); evaluation uses the EMA.
    pub ema_decay: Option<f64>,
    /// Global gradient-norm clipping.
    pub grad_clip: Option<f64>,
    /// Checkpoint every N steps (0: only at epoch ends).
    pub checkpoint_every: u64,
    pub log_every: u64,
    pub distillation: Option<DistillConfig>,
}

/// The batch the paper's advanced recipe and its learning rates are written for.
pub const PAPER_ADVANCED_BATCH: usize = 2048;

impl TrainConfig {
    /// The paper's default recipe (Table 2): 90 epochs of SGD, lr 0.1 ÷10 every 30 epochs,
    /// weight decay 4e-5, batch 256.
    pub fn paper_default() -> Self {
        Self {
            epochs: 90,
            batch_size: 256,
            seed: 0,
            optimizer: OptimizerConfig::paper_sgd(),
            schedule: LrSchedule::paper_default(),
            label_smoothing: 0.0,
            ema_decay: None,
            grad_clip: None,
            checkpoint_every: 1000,
            log_every: 20,
            distillation: None,
        }
    }

    /// The paper's advanced recipe (Table 8): 400 epochs of RMSProp (TF), warmup 0.01 → 0.16
    /// over 5 epochs then ×0.9875 per epoch, label smoothing 0.1, EMA 0.99985, batch 2048
    /// ([`PAPER_ADVANCED_BATCH`]; at another batch, scale the schedule with
    /// [`crate::LrSchedule::scaled_for_batch`]).
    /// Dropout 0.2 and stochastic depth belong to the model config.
    pub fn paper_advanced() -> Self {
        Self {
            epochs: 400,
            batch_size: PAPER_ADVANCED_BATCH,
            optimizer: OptimizerConfig::paper_rmsprop(),
            schedule: LrSchedule::paper_advanced(),
            label_smoothing: 0.1,
            ema_decay: Some(0.99985),
            ..Self::paper_default()
        }
    }
}
