//! [`VarStore`]: where a model's variables come from.
//!
//! One mechanism covers the three ways a model gets its weights:
//! * fresh, seeded initialisation (PyTorch's init per layer type, from [`crate::rng`]): each
//!   variable is drawn from the stream `(seed, hash(name))`, so it does not depend on the order
//!   modules are built in;
//! * a checkpoint or fixture (safetensors with PyTorch names), checked key by key: after the
//!   model is built, [`VarStore::finish`] reports every missing, unexpected and mis-shaped key in
//!   one error;
//! * both at once is not allowed: a loaded model never silently gets random weights.
//!
//! Every tensor handed out is a [`Var`] kept in a [`VarMap`], so it can be trained, saved and
//! differentiated.

use crate::rng::{hash_str, Rng};
use candle_core::{bail, DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Report {
    missing: Vec<(String, Shape)>,
    mismatched: Vec<(String, Shape, Shape)>,
    /// Variables under a fresh prefix that the source lacked or had in another shape:
    /// initialised from the seed instead.
    fresh: Vec<String>,
}

struct Source {
    origin: String,
    tensors: HashMap<String, Tensor>,
    /// Key prefixes (a classifier head) that may be initialised fresh when they do not fit.
    fresh: Vec<String>,
}

impl Source {
    fn is_fresh(&self, name: &str) -> bool {
        self.fresh.iter().any(|p| name.starts_with(p.as_str()))
    }
}

struct Backend {
    varmap: VarMap,
    seed: u64,
    source: Option<Arc<Source>>,
    report: Arc<Mutex<Report>>,
}

/// Draw a tensor for an init hint from a seeded generator (f32, then cast).
pub fn init_tensor(
    init: Init,
    shape: &Shape,
    rng: &mut Rng,
    dtype: DType,
    dev: &Device,
) -> Result<Tensor> {
    let n = shape.elem_count();
    let v = match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Randn { mean, stdev } => rng.normal_vec(n, mean, stdev),
        Init::Uniform { lo, up } => rng.uniform_vec(n, lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => rng.normal_vec(n, 0.0, std),
                NormalOrUniform::Uniform => {
                    let b = 3f64.sqrt() * std;
                    rng.uniform_vec(n, -b, b)
                }
            }
        }
    };
    Tensor::from_vec(v, shape.clone(), dev)?.to_dtype(dtype)
}

impl SimpleBackend for Backend {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.varmap.data().lock().unwrap();
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                bail!("variable `{name}` requested with shape {s:?} but already exists with shape {:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let t = match &self.source {
            None => init_tensor(
                h,
                &s,
                &mut Rng::derive(self.seed, &[hash_str(name)]),
                dtype,
                dev,
            )?,
            Some(src) => match src.tensors.get(name) {
                Some(t) if t.shape() == &s => t.to_device(dev)?.to_dtype(dtype)?,
                _ if src.is_fresh(name) => {
                    self.report.lock().unwrap().fresh.push(name.to_string());
                    let mut rng = Rng::derive(self.seed, &[hash_str(name)]);
                    init_tensor(h, &s, &mut rng, dtype, dev)?
                }
                found => {
                    let mut rep = self.report.lock().unwrap();
                    match found {
                        Some(t) => {
                            rep.mismatched
                                .push((name.to_string(), s.clone(), t.shape().clone()))
                        }
                        None => rep.missing.push((name.to_string(), s.clone())),
                    }
                    // keep building so that one error can list every bad key
                    Tensor::zeros(s.clone(), dtype, dev)?
                }
            },
        };
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        if let Some(v) = self.varmap.data().lock().unwrap().get(name) {
            return Ok(v.as_tensor().clone());
        }
        match self.source.as_ref().and_then(|s| s.tensors.get(name)) {
            Some(t) => t.to_device(dev)?.to_dtype(dtype),
            None => bail!("no tensor named `{name}`"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().unwrap().contains_key(name)
            || self
                .source
                .as_ref()
                .is_some_and(|s| s.tensors.contains_key(name))
    }
}

/// The variables of one model, with their origin (seeded init or a weights file).
#[derive(Clone)]
pub struct VarStore {
    varmap: VarMap,
    seed: u64,
    source: Option<Arc<Source>>,
    report: Arc<Mutex<Report>>,
    dtype: DType,
    device: Device,
}

/// Buffers that PyTorch state dicts carry but vt does not model.
fn ignored_key(k: &str) -> bool {
    k.ends_with("num_batches_tracked")
}

impl VarStore {
    /// Fresh variables, drawn from `seed` with each layer's init hint.
    pub fn seeded(seed: u64, dtype: DType, device: &Device) -> Self {
        Self {
            varmap: VarMap::new(),
            seed,
            source: None,
            report: Default::default(),
            dtype,
            device: device.clone(),
        }
    }

    /// Variables taken from `tensors` (named as PyTorch names them); `origin` names them in errors.
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        origin: &str,
        dtype: DType,
        device: &Device,
    ) -> Self {
        let mut s = Self::seeded(0, dtype, device);
        s.source = Some(Arc::new(Source {
            origin: origin.to_string(),
            tensors,
            fresh: vec![],
        }));
        s
    }

    /// Pretrained variables from `tensors`, except under the key prefixes `fresh` (a
    /// classifier head for another number of classes or another kind of head): there a
    /// variable the source lacks or has in another shape is initialised from `seed`, and a
    /// source key the model does not use is skipped ([`VarStore::fresh_keys`] lists both).
    /// Every other mismatch is [`VarStore::finish`]'s error, as for [`VarStore::from_tensors`].
    pub fn pretrained(
        seed: u64,
        tensors: HashMap<String, Tensor>,
        origin: &str,
        fresh: &[&str],
        dtype: DType,
        device: &Device,
    ) -> Self {
        let mut s = Self::seeded(seed, dtype, device);
        s.source = Some(Arc::new(Source {
            origin: origin.to_string(),
            tensors,
            fresh: fresh.iter().map(|p| p.to_string()).collect(),
        }));
        s
    }

    /// After the model is built: the variables initialised fresh, and the source keys under a
    /// fresh prefix that were skipped (both sorted).
    pub fn fresh_keys(&self) -> (Vec<String>, Vec<String>) {
        let Some(src) = &self.source else {
            return (vec![], vec![]);
        };
        let mut fresh = self.report.lock().unwrap().fresh.clone();
        fresh.sort();
        let data = self.varmap.data().lock().unwrap();
        let mut skipped: Vec<String> = src
            .tensors
            .keys()
            .filter(|k| src.is_fresh(k) && !data.contains_key(*k) || fresh.contains(k))
            .cloned()
            .collect();
        skipped.sort();
        (fresh, skipped)
    }

    /// Variables read from a safetensors file.
    pub fn from_safetensors(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| e.context(format!("cannot read weights {}", path.display())))?;
        Ok(Self::from_tensors(
            tensors,
            &path.display().to_string(),
            dtype,
            device,
        ))
    }

    pub fn var_builder(&self) -> VarBuilder<'static> {
        let backend = Backend {
            varmap: self.varmap.clone(),
            seed: self.seed,
            source: self.source.clone(),
            report: self.report.clone(),
        };
        VarBuilder::from_backend(Box::new(backend), self.dtype, self.device.clone())
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// All variables by name, sorted.
    pub fn vars(&self) -> BTreeMap<String, Var> {
        self.varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Writes every variable (PyTorch names) to a safetensors file atomically: a temporary
    /// file in the same directory, then a rename, so a crash never leaves a partial file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().detach()))
            .collect();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        candle_core::safetensors::save(&tensors, &tmp)
            .map_err(|e| e.context(format!("cannot write {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            candle_core::Error::from(e).context(format!(
                "cannot move {} to {}",
                tmp.display(),
                path.display()
            ))
        })
    }

    /// Call after building the model: one error listing every missing, mis-shaped and
    /// unexpected key of the weights source (nothing to check for a seeded store).
    pub fn finish(&self) -> Result<()> {
        let Some(src) = &self.source else {
            return Ok(());
        };
        let rep = self.report.lock().unwrap();
        let data = self.varmap.data().lock().unwrap();
        let mut unexpected: Vec<_> = src
            .tensors
            .iter()
            .filter(|(k, _)| !data.contains_key(*k) && !ignored_key(k) && !src.is_fresh(k))
            .collect();
        unexpected.sort_by(|a, b| a.0.cmp(b.0));
        if rep.missing.is_empty() && rep.mismatched.is_empty() && unexpected.is_empty() {
            return Ok(());
        }
        let mut msg = format!("weights {} do not fit the model:", src.origin);
        for (k, s) in &rep.missing {
            msg += &format!("\n  missing    {k}: expected {s:?}");
        }
        for (k, want, got) in &rep.mismatched {
            msg += &format!("\n  mis-shaped {k}: expected {want:?}, found {got:?}");
        }
        for (k, t) in unexpected {
            msg += &format!("\n  unexpected {k}: found {:?}", t.shape());
        }
        bail!("{msg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::init::{FanInOut, NonLinearity};

    #[test]
    fn seeded_init_is_order_independent_and_follows_hints() -> Result<()> {
        let dev = Device::Cpu;
        let a = VarStore::seeded(5, DType::F32, &dev);
        let vb = a.var_builder();
        let x = vb.get_with_hints(
            (64, 32, 3, 3),
            "x",
            Init::Kaiming {
                dist: NormalOrUniform::Normal,
                fan: FanInOut::FanOut,
                non_linearity: NonLinearity::ReLU,
            },
        )?;
        let y = vb.get_with_hints(1000, "y", Init::Uniform { lo: -0.5, up: 0.5 })?;
        let b = VarStore::seeded(5, DType::F32, &dev);
        let vb2 = b.var_builder();
        let y2 = vb2.get_with_hints(1000, "y", Init::Uniform { lo: -0.5, up: 0.5 })?;
        assert_eq!(y.to_vec1::<f32>()?, y2.to_vec1::<f32>()?);
        let std = x.sqr()?.mean_all()?.to_scalar::<f32>()?.sqrt();
        let want = (2.0f32 / (64.0 * 9.0)).sqrt();
        assert!((std / want - 1.0).abs() < 0.05, "{std} vs {want}");
        let yv = y.to_vec1::<f32>()?;
        assert!(yv.iter().all(|v| v.abs() <= 0.5));
        Ok(())
    }

    #[test]
    fn loading_reports_every_bad_key() -> Result<()> {
        let dev = Device::Cpu;
        let mut t = HashMap::new();
        t.insert("a".to_string(), Tensor::zeros((2, 3), DType::F32, &dev)?);
        t.insert("b".to_string(), Tensor::zeros(4, DType::F32, &dev)?);
        t.insert("extra".to_string(), Tensor::zeros(1, DType::F32, &dev)?);
        t.insert(
            "bn.num_batches_tracked".to_string(),
            Tensor::zeros(1, DType::F32, &dev)?,
        );
        let store = VarStore::from_tensors(t, "w.safetensors", DType::F32, &dev);
        let vb = store.var_builder();
        vb.get((2, 3), "a")?;
        vb.get(5, "b")?;
        vb.get(7, "c")?;
        let err = store.finish().unwrap_err().to_string();
        assert!(err.contains("w.safetensors"), "{err}");
        assert!(err.contains("missing    c: expected [7]"), "{err}");
        assert!(
            err.contains("mis-shaped b: expected [5], found [4]"),
            "{err}"
        );
        assert!(err.contains("unexpected extra"), "{err}");
        assert!(
            !err.contains("num_batches_tracked") && !err.contains(" a:"),
            "{err}"
        );
        Ok(())
    }
}
