//! `nn.GroupNorm`: the normalisation of detectron2's semantic head (and of small-batch models
//! generally, since it uses no batch statistics).
//!
//! Written with candle's differentiable ops (reshape, mean, broadcast), so it has a backward on
//! every device; on the CPU (f32 / f64) one op forward and one backward (`group_norm_cpu.rs`).
//! The tests check both by finite differences, against each other and a hand computation.

use crate::cost::Cost;
use candle_core::{bail, DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// GroupNorm over `(N, C, ...)`: statistics per sample and group of `C / groups` channels
/// (biased variance, eps 1e-5, PyTorch's defaults), then a per-channel affine map.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
    /// The CPU kernel where it applies (off: the composite ops, for tests).
    fused: bool,
}

impl GroupNorm {
    pub fn new(groups: usize, channels: usize, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || channels % groups != 0 {
            bail!(
                "group norm {}: {channels} channels are not divisible into {groups} groups",
                vb.prefix()
            );
        }
        Ok(Self {
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            groups,
            eps: 1e-5,
            fused: true,
        })
    }

    /// The affine parameters (which the paper's parameter counts exclude, as BN's).
    pub fn cost(&self) -> Cost {
        Cost::ZERO
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        if dims.len() < 2 || dims[1] != self.weight.elem_count() {
            bail!(
                "group norm over {} channels got input of shape {:?}",
                self.weight.elem_count(),
                x.shape()
            );
        }
        let (n, c) = (dims[0], dims[1]);
        let fits = x.dtype() == self.weight.dtype() && matches!(x.dtype(), DType::F32 | DType::F64);
        if self.fused && crate::cpu_kernels(x.device()) && fits {
            let op = crate::group_norm_cpu::GroupNormCpu {
                groups: self.groups,
                eps: self.eps,
            };
            return x.contiguous()?.apply_op3(&self.weight, &self.bias, op);
        }
        let g = x.reshape((n, self.groups, ()))?;
        let mean = g.mean_keepdim(D::Minus1)?;
        let centred = g.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .reshape(dims.as_slice())?;
        let mut affine = vec![1usize; dims.len()];
        affine[1] = c;
        normed
            .broadcast_mul(&self.weight.reshape(affine.as_slice())?)?
            .broadcast_add(&self.bias.reshape(affine.as_slice())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_gradient;
    use candle_core::Device;

    fn norm(groups: usize, w: &Tensor, b: &Tensor) -> GroupNorm {
        GroupNorm {
            weight: w.clone(),
            bias: b.clone(),
            groups,
            eps: 1e-5,
            fused: true,
        }
    }

    /// The CPU kernel against the composite ops: values and every gradient, f32, with planes
    /// of one and many channels per group and a large mean.
    #[test]
    fn cpu_kernel_equals_composite() -> Result<()> {
        let dev = Device::Cpu;
        for (shape, groups, offset) in [
            (vec![2usize, 6, 3, 5], 3usize, 0.0),
            (vec![3, 8, 17], 8, 4.0),
            (vec![2, 4, 9, 9], 1, -2.0),
        ] {
            let n: usize = shape.iter().product();
            let c = shape[1];
            let x = crate::Rng::new(n as u64).normal_vec(n, offset, 1.5);
            let x = candle_core::Var::from_vec(x, shape.as_slice(), &dev)?;
            let w =
                candle_core::Var::from_vec(crate::Rng::new(2).normal_vec(c, 1.0, 0.3), c, &dev)?;
            let b =
                candle_core::Var::from_vec(crate::Rng::new(3).normal_vec(c, 0.0, 0.3), c, &dev)?;
            let seed = Tensor::arange(0f32, n as f32, &dev)?
                .reshape(shape.as_slice())?
                .sin()?;
            let run = |fused: bool| -> Result<Vec<Vec<f32>>> {
                let gn = GroupNorm {
                    fused,
                    ..norm(groups, w.as_tensor(), b.as_tensor())
                };
                let y = gn.forward(&x)?;
                let g = (&y * &seed)?.sum_all()?.backward()?;
                let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
                Ok(vec![
                    flat(&y)?,
                    flat(g.get(x.as_tensor()).unwrap())?,
                    flat(g.get(w.as_tensor()).unwrap())?,
                    flat(g.get(b.as_tensor()).unwrap())?,
                ])
            };
            let (a, z) = (run(true)?, run(false)?);
            for (u, v) in a.iter().zip(&z) {
                let scale = v.iter().fold(1f32, |m, q| m.max(q.abs()));
                let d = u
                    .iter()
                    .zip(v)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max);
                assert!(d < 1e-5 * scale, "{shape:?} groups {groups}: {d}");
            }
        }
        Ok(())
    }

    #[test]
    fn matches_a_hand_computation() -> Result<()> {
        let dev = Device::Cpu;
        // one sample, 4 channels of 2 pixels, 2 groups
        let x = Tensor::new(&[[[1f64, 3.], [5., 7.], [0., 0.], [2., -2.]]], &dev)?;
        let w = Tensor::new(&[1f64, 2., 1., 0.5], &dev)?;
        let b = Tensor::new(&[0f64, 1., 0., 0.], &dev)?;
        let y = norm(2, &w, &b)
            .forward(&x)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        // group 0 = {1, 3, 5, 7}: mean 4, var 5; group 1 = {0, 0, 2, -2}: mean 0, var 2
        let (s0, s1) = ((5f64 + 1e-5).sqrt(), (2f64 + 1e-5).sqrt());
        let want = [
            -3. / s0,
            -1. / s0,
            2. / s0 + 1.,
            6. / s0 + 1.,
            0.,
            0.,
            0.5 * 2. / s1,
            0.5 * -2. / s1,
        ];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{y:?} vs {want:?}");
        }
        Ok(())
    }

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let shapes: [candle_core::Shape; 3] = [(2, 6, 3, 2).into(), 6.into(), 6.into()];
        check_gradient(&shapes, DType::F64, |t| {
            let y = norm(3, &t[1], &t[2]).forward(&t[0])?;
            // a non-uniform weighting, so the sum of a normalised group is not trivially zero
            let seed = Tensor::arange(0f64, y.elem_count() as f64, y.device())?
                .reshape(y.shape())?
                .sin()?;
            (y * seed)?.sum_all()
        })
    }

    #[test]
    fn rejects_indivisible_groups() {
        let vs = crate::VarStore::seeded(0, DType::F32, &Device::Cpu);
        let err = GroupNorm::new(32, 48, vs.var_builder().pp("p2.0.norm")).unwrap_err();
        assert!(err.to_string().contains("p2.0.norm"), "{err}");
    }
}
