//! The models of a run as vt-train sees them, and where their weights come from.

use crate::config::ModelSection;
use crate::error::{Result, RunError};
use candle_core::{DType, Device, ModuleT, Tensor};
use std::path::Path;
use vt_backbones::{ResNet, SemanticFpn, Task};
use vt_ops::{Cost, VarStore};
use vt_train::{checkpoint, Classifier, DistillConfig, Segmenter};

/// A ResNet / VT-ResNet as a vt-train classifier.
pub struct Net(pub ResNet);

impl Net {
    /// The classification model of a (completed) model section, its variables in `store`.
    pub fn new(model: &ModelSection, store: &VarStore) -> Result<Self> {
        Ok(Net(ResNet::new(&model.config()?, store.var_builder())?))
    }

    /// MACs and parameters at `size × size` input.
    pub fn cost(&self, size: usize) -> Cost {
        self.0.cost(size, size).total()
    }
}

impl Classifier for Net {
    fn logits(&self, images: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.0.forward_t(images, train)
    }
    fn noise(&self) -> Option<&vt_ops::NoiseSource> {
        Some(self.0.noise())
    }
}

/// An FPN / VT-FPN semantic segmentation model as a vt-train segmenter.
pub struct SegNet(pub SemanticFpn);

impl SegNet {
    /// The segmentation model of a (completed) model section, its variables in `store`.
    pub fn new(model: &ModelSection, store: &VarStore) -> Result<Self> {
        Ok(SegNet(SemanticFpn::new(
            &model.segmentation_config()?,
            store.var_builder(),
        )?))
    }

    /// MACs and parameters at `size × size` input.
    pub fn cost(&self, size: usize) -> Cost {
        self.0.cost(size, size).total()
    }
}

impl Segmenter for SegNet {
    fn logits(&self, images: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.0.forward_t(images, train)
    }
    fn noise(&self) -> Option<&vt_ops::NoiseSource> {
        Some(self.0.noise())
    }
}

/// Weights of a run directory's newest checkpoint (its EMA weights when the run keeps an EMA,
/// as training evaluates), as a store a model loads from; with the checkpoint's step and
/// whether the weights are the EMA's.
pub fn checkpoint_weights(dir: &Path, device: &Device) -> Result<(VarStore, u64, bool)> {
    let ck = checkpoint::load_latest(dir, device)?.ok_or_else(|| {
        RunError::Invalid(format!(
            "{} has no checkpoint (checkpoints/latest)",
            dir.display()
        ))
    })?;
    let ema = ck.ema.is_some();
    let origin = ck.dir.display().to_string();
    let store = VarStore::from_tensors(ck.ema.unwrap_or(ck.model), &origin, DType::F32, device);
    Ok((store, ck.state.step, ema))
}

/// The key prefixes of a model that start fresh from pretrained ImageNet weights: a
/// classifier's head where it does not fit; everything of a segmenter but its trunk.
fn fresh_prefixes(model: &ModelSection) -> Result<&'static [&'static str]> {
    Ok(match model.task()? {
        Task::Classification => &["fc."],
        Task::Segmentation => &["backbone.body.fc.", "backbone.fpn.", "sem_seg_head."],
    })
}

/// The store a new run of `model` starts from: seeded, or hub model `model.pretrained`'s
/// `model.safetensors` (timm's and torchvision's ResNets carry torchvision's names; for a
/// segmenter they go under `backbone.body.`). After building the net, [`VarStore::finish`]
/// reports any other mismatch and [`VarStore::fresh_keys`] what started fresh.
pub fn initial_store(model: &ModelSection, seed: u64, device: &Device) -> Result<VarStore> {
    let Some(id) = &model.pretrained else {
        return Ok(VarStore::seeded(seed, DType::F32, device));
    };
    let repo: vt_hub::RepoId = id.parse()?;
    let path = vt_hub::model_file(&repo, "model.safetensors")?;
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| e.context(format!("cannot read pretrained weights {}", path.display())))?;
    if model.task()? == Task::Segmentation {
        tensors = tensors
            .into_iter()
            .map(|(k, v)| (format!("backbone.body.{k}"), v))
            .collect();
    }
    let origin = format!("{repo} ({})", path.display());
    Ok(VarStore::pretrained(
        seed,
        tensors,
        &origin,
        fresh_prefixes(model)?,
        DType::F32,
        device,
    ))
}

/// The distillation teacher: preset `teacher_model` shaped like the student (width, stem,
/// classes, channels), weights from a run directory (its newest checkpoint, EMA weights when
/// kept) or a safetensors file.
pub fn load_teacher(student: &ModelSection, d: &DistillConfig, device: &Device) -> Result<Net> {
    let section = ModelSection {
        preset: d.teacher_model.clone(),
        ..student.clone()
    };
    let path = Path::new(&d.teacher);
    let store = if path.is_dir() {
        checkpoint_weights(path, device)?.0
    } else {
        VarStore::from_safetensors(path, DType::F32, device)?
    };
    let net = Net::new(&section, &store)?;
    store
        .finish()
        .map_err(|e| e.context(format!("teacher {}", d.teacher)))?;
    Ok(net)
}
