//! Checkpoints: model (PyTorch names), optimizer, EMA and the training position, written
//! atomically.
//!
//! Layout: `<run>/checkpoints/step-<N>/{model,optimizer,ema}.safetensors + state.json`, and
//! `<run>/checkpoints/latest` naming the newest one. A checkpoint is written into a `.tmp`
//! directory and renamed into place, then `latest` is replaced by rename: a kill at any moment
//! leaves the previous checkpoint intact and `latest` pointing at a complete one.

use candle_core::{bail, Device, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where training stands; with the tensors, enough to continue bit-identically.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// Current epoch (0-based) and batches of it already done.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    pub seed: u64,
    /// Running sums of the current epoch's training loss.
    pub epoch_loss_sum: f64,
    pub epoch_samples: usize,
    /// Seconds spent in training steps and images processed (for images/s across resumes).
    pub train_seconds: f64,
    pub train_images: u64,
    /// Processes of the data-parallel run that wrote it (a resume needs as many).
    #[serde(default = "one")]
    pub world_size: usize,
}

fn one() -> usize {
    1
}

pub struct Loaded {
    pub state: TrainState,
    pub model: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
    pub ema: Option<HashMap<String, Tensor>>,
    pub dir: PathBuf,
}

/// `e` (an I/O, safetensors or JSON error, kept as the cause) with the action and the file.
fn io_err(what: &str, p: &Path, e: impl Into<CauseError>) -> candle_core::Error {
    e.into().0.context(format!("cannot {what} {}", p.display()))
}

/// The causes a checkpoint operation can have, as candle errors.
struct CauseError(candle_core::Error);

impl From<std::io::Error> for CauseError {
    fn from(e: std::io::Error) -> Self {
        Self(e.into())
    }
}

impl From<candle_core::Error> for CauseError {
    fn from(e: candle_core::Error) -> Self {
        Self(e)
    }
}

impl From<serde_json::Error> for CauseError {
    fn from(e: serde_json::Error) -> Self {
        Self(candle_core::Error::wrap(e))
    }
}

fn checkpoints(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes a checkpoint and points `latest` at it; older checkpoints are removed afterwards.
pub fn save(
    run_dir: &Path,
    state: &TrainState,
    model: &HashMap<String, Tensor>,
    optimizer: &HashMap<String, Tensor>,
    ema: Option<&HashMap<String, Tensor>>,
) -> Result<PathBuf> {
    let root = checkpoints(run_dir);
    std::fs::create_dir_all(&root).map_err(|e| io_err("create", &root, e))?;
    let name = format!("step-{:09}", state.step);
    let final_dir = root.join(&name);
    let tmp = root.join(format!("{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io_err("remove", &tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    let write = |tensors: &HashMap<String, Tensor>, file: &str| {
        let p = tmp.join(file);
        candle_core::safetensors::save(tensors, &p).map_err(|e| io_err("write", &p, e))
    };
    write(model, "model.safetensors")?;
    write(optimizer, "optimizer.safetensors")?;
    if let Some(ema) = ema {
        write(ema, "ema.safetensors")?;
    }
    let state_path = tmp.join("state.json");
    let json = serde_json::to_string_pretty(state).map_err(|e| io_err("encode", &state_path, e))?;
    std::fs::write(&state_path, json).map_err(|e| io_err("write", &state_path, e))?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| io_err("remove", &final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| io_err("rename", &tmp, e))?;
    let latest_tmp = root.join("latest.tmp");
    std::fs::write(&latest_tmp, &name).map_err(|e| io_err("write", &latest_tmp, e))?;
    std::fs::rename(&latest_tmp, root.join("latest"))
        .map_err(|e| io_err("rename", &latest_tmp, e))?;
    for entry in std::fs::read_dir(&root)
        .map_err(|e| io_err("list", &root, e))?
        .flatten()
    {
        let n = entry.file_name().to_string_lossy().to_string();
        if n.starts_with("step-") && n != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(final_dir)
}

/// The newest complete checkpoint of a run, if any.
pub fn load_latest(run_dir: &Path, device: &Device) -> Result<Option<Loaded>> {
    let root = checkpoints(run_dir);
    let latest = root.join("latest");
    if !latest.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&latest).map_err(|e| io_err("read", &latest, e))?;
    let dir = root.join(name.trim());
    let read = |f: &str| -> Result<HashMap<String, Tensor>> {
        let p = dir.join(f);
        candle_core::safetensors::load(&p, device)
            .map_err(|e| io_err("read checkpoint file", &p, e))
    };
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| io_err("read", &state_path, e))?;
    let state: TrainState =
        serde_json::from_str(&text).map_err(|e| io_err("parse", &state_path, e))?;
    let ema = if dir.join("ema.safetensors").exists() {
        Some(read("ema.safetensors")?)
    } else {
        None
    };
    Ok(Some(Loaded {
        state,
        model: read("model.safetensors")?,
        optimizer: read("optimizer.safetensors")?,
        ema,
        dir,
    }))
}

/// Copies checkpoint tensors into the model's variables; every variable must be present with
/// its shape.
pub fn restore_vars(
    vars: &std::collections::BTreeMap<String, candle_core::Var>,
    tensors: &HashMap<String, Tensor>,
    origin: &Path,
) -> Result<()> {
    for (k, v) in vars {
        let Some(t) = tensors.get(k) else {
            bail!("checkpoint {} has no `{k}`", origin.display())
        };
        if t.shape() != v.shape() {
            bail!(
                "checkpoint {}: `{k}` has shape {:?}, the model {:?}",
                origin.display(),
                t.shape(),
                v.shape()
            );
        }
        v.set(&t.to_dtype(v.dtype())?)?;
    }
    Ok(())
}
