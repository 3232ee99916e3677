//! The stochastic layers: dropout and drop-path (stochastic depth), with masks drawn from the
//! model's [`NoiseSource`], so a run is reproducible from its seed and step.

use crate::rng::{hash_str, NoiseSource};
use candle_core::{bail, ModuleT, Result, Tensor};

/// Inverted dropout with masks from the model's [`NoiseSource`]; the identity in eval mode.
#[derive(Clone, Debug)]
pub struct Dropout {
    p: f64,
    id: u64,
    noise: NoiseSource,
}

impl Dropout {
    /// `name` identifies the layer's mask stream (use the module path).
    pub fn new(p: f64, name: &str, noise: &NoiseSource) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            bail!("dropout probability {p} at {name} is outside [0, 1)");
        }
        Ok(Self {
            p,
            id: hash_str(name),
            noise: noise.clone(),
        })
    }
}

impl ModuleT for Dropout {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        x * self
            .noise
            .keep_mask(self.id, x.shape(), 1.0 - self.p, x.dtype(), x.device())?
    }
}

/// Drop-path (stochastic depth) on a residual branch: in train mode each sample's branch is
/// zeroed with probability `p` and scaled by `1/(1−p)` otherwise; the identity in eval mode.
/// Formula and placement as timm's `drop_path`.
#[derive(Clone, Debug)]
pub struct DropPath {
    p: f64,
    id: u64,
    noise: NoiseSource,
}

impl DropPath {
    pub fn new(p: f64, name: &str, noise: &NoiseSource) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            bail!("drop-path probability {p} at {name} is outside [0, 1)");
        }
        Ok(Self {
            p,
            id: hash_str(name),
            noise: noise.clone(),
        })
    }
}

impl ModuleT for DropPath {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        let mut shape = vec![1usize; x.rank()];
        shape[0] = x.dim(0)?;
        x.broadcast_mul(&self.noise.keep_mask(
            self.id,
            shape,
            1.0 - self.p,
            x.dtype(),
            x.device(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    #[test]
    fn drop_path_scales_in_train_and_is_identity_in_eval() -> Result<()> {
        let dev = Device::Cpu;
        let noise = NoiseSource::new(0);
        let dp = DropPath::new(0.25, "layer1.0", &noise)?;
        let x = Tensor::ones((4000, 3), DType::F32, &dev)?;
        assert_eq!(
            dp.forward_t(&x, false)?.sum_all()?.to_scalar::<f32>()?,
            12000.0
        );
        let y = dp.forward_t(&x, true)?;
        let rows = y.max(D::Minus1)?.to_vec1::<f32>()?;
        assert!(rows
            .iter()
            .all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        let kept = rows.iter().filter(|&&v| v > 0.0).count() as f64 / 4000.0;
        assert!((kept - 0.75).abs() < 0.03, "{kept}");
        // every element of a sample shares the sample's mask
        let v = y.to_vec2::<f32>()?;
        assert!(v.iter().all(|r| r.iter().all(|&e| e == r[0])));
        Ok(())
    }

    /// Masks follow the input's dtype (a model in f64, f16 or bf16 with dropout), with the
    /// same draws as in f32.
    #[test]
    fn masks_follow_the_model_dtype() -> Result<()> {
        let dev = Device::Cpu;
        let noise = NoiseSource::new(5);
        let drop = Dropout::new(0.5, "head.drop", &noise)?;
        let path = DropPath::new(0.5, "layer2.1", &noise)?;
        let x32 = Tensor::ones((16, 8), DType::F32, &dev)?;
        let want_drop = drop.forward_t(&x32, true)?.to_vec2::<f32>()?;
        let want_path = path.forward_t(&x32, true)?.to_vec2::<f32>()?;
        for dtype in [DType::F64, DType::F16, DType::BF16] {
            let x = x32.to_dtype(dtype)?;
            let d = drop.forward_t(&x, true)?;
            let p = path.forward_t(&x, true)?;
            assert_eq!((d.dtype(), p.dtype()), (dtype, dtype));
            assert_eq!(d.to_dtype(DType::F32)?.to_vec2::<f32>()?, want_drop);
            assert_eq!(p.to_dtype(DType::F32)?.to_vec2::<f32>()?, want_path);
        }
        Ok(())
    }
}
