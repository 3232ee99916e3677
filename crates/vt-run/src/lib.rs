//! # vt-run
//!
//! The experiment library of vt: what `cargo xtask train | eval | reproduce` and a Rust user
//! both call to run an experiment. It ties the other crates together (vt-ops, vt-backbones,
//! vt-data, vt-train) and nothing depends on it but the CLI and benches.
//!
//! * [`config`]: the run's `[model] [data] [train]` tree ([`RunConfig`]) and the named
//!   recipes; the model's preset decides the task ([`Task`]);
//! * [`data`]: opening the data, class-balanced subsets, the recipes' pipelines, the loader as
//!   a vt-train [`vt_train::BatchSource`];
//! * [`model`]: the backbones as vt-train models, checkpoint weights, the distillation teacher;
//! * [`train()`]: one run end to end;
//! * [`predict`]: class maps of a trained segmentation run, PNG class maps and overlays;
//! * [`reproduce`]: the paper's experiments as planned runs over paired seeds, executed,
//!   skipped or resumed, and gathered per model;
//! * [`results`]: `metrics.json`, a finished run read back, a checkpoint evaluated again;
//! * [`stats`]: statistics over seeds (mean, std, paired 95 % intervals, the verdict rule);
//! * [`tokens`]: what the VT tokens attend to (the token picture, entropy, foreground ratio);
//! * [`error`]: the one error type, [`RunError`], naming the file or key at fault.
//!
//! ```no_run
//! use vt_run::{load_result, train, RunConfig, RunOptions};
//! let cfg = RunConfig::small_data("vt_resnet18", 2, 64); // Fashion-MNIST, 28 px
//! let out = std::path::Path::new("runs/vt18");
//! let m = train(cfg, out, &candle_core::Device::Cpu, &RunOptions::default())?;
//! println!("top-1 {:?}", m.scalar(vt_train::metrics::TOP1));
//! let curve = load_result(out)?.curve(vt_train::metrics::TOP1); // (epoch, top-1)
//! # Ok::<(), vt_run::RunError>(())
//! ```

pub mod config;
pub mod data;
pub mod error;
pub mod model;
pub mod predict;
pub mod reproduce;
pub mod results;
pub mod stats;
pub mod tokens;
mod train;

pub use config::{
    saved_config, Augment, DataSection, ModelSection, MosaicSection, NormalizeSection, RunConfig,
};
pub use data::{
    class_balanced_subset, open_classification_data, open_segmentation_data, prepare,
    segmentation_pipelines, LoaderSource, Prepared,
};
pub use error::{Result, RunError};
pub use model::{checkpoint_weights, initial_store, load_teacher, Net, SegNet};
pub use predict::{write_class_map, write_overlay, Prediction, Segmentation};
pub use results::{
    copy_run, evaluate_pretrained, evaluate_run, load_result, EvalPoint, Evaluation, RunMetrics,
    RunResult,
};
pub use tokens::{token_statistics, token_view, write_token_png, TokenStatistics, TokenView};
pub use train::{train, RunOptions};
pub use vt_backbones::Task;
