//! The experiment library is `vt-run` (config, data recipes, adapters, training, results); the
//! commands reach it through this module, which adds only what a terminal shows of a run.

pub use vt_run::*;

use std::collections::BTreeMap;
use vt_train::metrics::{MIOU, PIXEL_ACC, TOP1, TOP5};
use vt_train::MetricValue;

/// `top-1 85.00%, top-5 99.00%, loss 0.4000`: the scalar test metrics (in percent) and the
/// loss, for one line of output.
pub fn figures(metrics: &BTreeMap<String, MetricValue>, loss: f64) -> String {
    let mut parts: Vec<String> = metrics
        .iter()
        .filter_map(|(name, v)| {
            let label = match name.as_str() {
                TOP1 => "top-1",
                TOP5 => "top-5",
                MIOU => "mIoU",
                PIXEL_ACC => "pixel accuracy",
                other => other,
            };
            Some(format!("{label} {:.2}%", v.as_scalar()?))
        })
        .collect();
    parts.push(format!("loss {loss:.4}"));
    parts.join(", ")
}
