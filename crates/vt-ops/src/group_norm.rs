//! `nn.GroupNorm`: the normalisation of detectron2's semantic head (and of small-batch models
//! generally, since it uses no batch statistics).
//!
//! Written with candle's differentiable ops (reshape, mean, broadcast), so it has a backward on
//! every device; the test checks it by finite differences and against a hand computation.

use crate::cost::Cost;
use candle_core::{bail, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// GroupNorm over `(N, C, ...)`: statistics per sample and group of `C / groups` channels
/// (biased variance, eps 1e-5, PyTorch's defaults), then a per-channel affine map.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
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
    use candle_core::{DType, Device};

    fn norm(groups: usize, w: &Tensor, b: &Tensor) -> GroupNorm {
        GroupNorm {
            weight: w.clone(),
            bias: b.clone(),
            groups,
            eps: 1e-5,
        }
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
