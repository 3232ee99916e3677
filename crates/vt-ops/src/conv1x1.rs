//! The 1×1 convolution of the VT modules (`nn.Conv1d(in, out, 1, groups)`) over
//! `(N, channels, positions)`: pixels or tokens.

use crate::cost::Cost;
use crate::nn::{default_uniform, BatchNorm};
use candle_core::{bail, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `nn.Conv1d(in, out, kernel_size=1, groups=g)` over `(N, channels, positions)`: the 1x1
/// convolution of the VT modules. Weight `(out, in/g, 1)`. A grouped one is one batched matmul
/// (group k maps input block k to output block k), not one convolution per group.
#[derive(Clone, Debug)]
pub struct Conv1x1 {
    weight: Tensor,
    bias: Option<Tensor>,
    groups: usize,
    cin: usize,
    cout: usize,
}

impl Conv1x1 {
    pub fn new(cin: usize, cout: usize, groups: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || cin % groups != 0 || cout % groups != 0 {
            bail!(
                "conv1x1 {}: channels {cin}->{cout} not divisible by groups {groups}",
                vb.prefix()
            );
        }
        let init = default_uniform(cin / groups);
        let weight = vb.get_with_hints((cout, cin / groups, 1), "weight", init)?;
        let bias = if bias {
            Some(vb.get_with_hints(cout, "bias", init)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            groups,
            cin,
            cout,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.cout
    }

    /// Cost over `positions` positions (pixels or tokens).
    pub fn cost(&self, positions: usize) -> Cost {
        let w = (self.cout * self.cin / self.groups) as u64;
        Cost::new(
            w * positions as u64,
            w + self.bias.as_ref().map_or(0, |_| self.cout as u64),
        )
    }
}

impl Module for Conv1x1 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = x.dim(1)?;
        if x.rank() != 3 || c != self.cin {
            bail!(
                "conv1x1 expects (N, {}, P), got shape {:?}",
                self.cin,
                x.shape()
            );
        }
        conv1x1(x, &self.weight, self.bias.as_ref(), self.groups)
    }
}

impl Conv1x1 {
    pub fn groups(&self) -> usize {
        self.groups
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `(C_out, C_in / groups, 1)`, as PyTorch's `Conv1d`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Inference with a following batch norm folded in, as [`Conv2d::forward_folded`]: one
    /// pass over the positions instead of three.
    pub fn forward_folded(&self, x: &Tensor, bn: &BatchNorm) -> Result<Tensor> {
        let (scale, shift) = bn.eval_affine()?;
        let shift = match &self.bias {
            Some(b) => (shift + (b * &scale)?)?,
            None => shift,
        };
        let w = self.weight.broadcast_mul(&scale.reshape(((), 1, 1))?)?;
        conv1x1(x, &w, Some(&shift), self.groups)
    }

    /// `Wᵀ y` for a square conv (`C → C`), bias left out: `(W x)ᵀ y = xᵀ (Wᵀ y)`, so a product
    /// of this conv's output on many positions with a few vectors `y` can run the conv on
    /// the few instead. Group `j`'s block transposed is a conv of the same groups.
    pub fn transposed(&self, y: &Tensor) -> Result<Tensor> {
        let c = y.dim(1)?;
        if self.cin != self.cout || y.rank() != 3 || c != self.cout {
            bail!(
                "conv1x1 transposed: needs a square conv and (N, {}, P), have {} -> {} and {:?}",
                self.cout,
                self.cin,
                self.cout,
                y.shape()
            );
        }
        let (g, i) = (self.groups, self.cin / self.groups);
        let wt = self
            .weight
            .reshape((g, i, i))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((self.cin, i, 1))?;
        conv1x1(y, &wt, None, g)
    }
}

/// `y = W x + b` on `(N, C_in, P)` with `weight (C_out, C_in / groups, 1)`.
fn conv1x1(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, g: usize) -> Result<Tensor> {
    let (n, c, p) = x.dims3()?;
    let (cout, ig) = (weight.dim(0)?, c / g);
    let og = cout / g;
    // On the CPU: vt's convolution op on (N, C, P, 1), which tiles samples into GEMMs of
    // ≥ 256 columns and differentiates without the transposed copies below (1.5-3.7x
    // faster forward + backward on the VT module's shapes).
    let y = if crate::cpu_kernels(x.device()) {
        let w = weight.unsqueeze(3)?;
        crate::conv::conv2d(&x.unsqueeze(3)?, &w, 1, 0, 1, g)?.squeeze(3)?
    } else if g == 1 {
        // One GEMM per group over all samples and positions: (N·P, I/g) · (I/g, O/g).
        // Small per-sample matmuls (N of them, e.g. 64 × 16 tokens) would spend their time
        // in thread synchronisation, forward and backward.
        let xt = x.transpose(1, 2)?.contiguous()?.reshape((n * p, c))?;
        xt.matmul(&weight.squeeze(2)?.t()?)?
            .reshape((n, p, cout))?
            .transpose(1, 2)?
    } else {
        let xg = x
            .reshape((n, g, ig, p))?
            .permute((1, 0, 3, 2))?
            .contiguous()?
            .reshape((g, n * p, ig))?;
        let w = weight.reshape((g, og, ig))?.transpose(1, 2)?;
        let y = xg.matmul(&w)?.reshape((g, n, p, og))?;
        y.permute((1, 0, 3, 2))?
            .contiguous()?
            .reshape((n, cout, p))?
    };
    match bias {
        Some(b) => crate::bias::add_channel_bias(&y, b),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::VarStore;
    use candle_core::{DType, Device, Var};

    #[test]
    fn grouped_conv1x1_equals_conv1d() -> Result<()> {
        let dev = Device::Cpu;
        let store = VarStore::seeded(1, DType::F32, &dev);
        let conv = Conv1x1::new(8, 12, 4, true, store.var_builder())?;
        let x = crate::Rng::new(2).normal_tensor((2, 8, 5), &dev)?;
        let y = conv.forward(&x)?;
        let w = store.vars()["weight"].as_tensor().clone();
        let b = store.vars()["bias"].as_tensor().clone();
        let want = x
            .conv1d(&w, 0, 1, 1, 4)?
            .broadcast_add(&b.reshape((1, 12, 1))?)?;
        assert!((y - want)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        assert_eq!(conv.cost(5), Cost::new(12 * 2 * 5, 12 * 2 + 12));
        Ok(())
    }

    /// `(W x)ᵀ y = xᵀ (Wᵀ y)` per sample, groups 1, 2 and 8, with the gradients of `x`, `y`
    /// and `W` (the transposed conv's weight is a view of the conv's); a non-square conv is
    /// an error naming both channel counts.
    #[test]
    fn transposed_conv1x1_is_the_adjoint_with_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for (i, groups) in [1, 2, 8].into_iter().enumerate() {
            let rng = |s| crate::Rng::new(s + 10 * i as u64);
            let x = Var::from_tensor(
                &rng(1)
                    .normal_tensor((3, 8, 7), &dev)?
                    .to_dtype(DType::F64)?,
            )?;
            let y = Var::from_tensor(
                &rng(2)
                    .normal_tensor((3, 8, 4), &dev)?
                    .to_dtype(DType::F64)?,
            )?;
            let run = |moved: bool| -> Result<Vec<Tensor>> {
                let store = VarStore::seeded(3 + i as u64, DType::F64, &dev);
                let conv = Conv1x1::new(8, 8, groups, false, store.var_builder())?;
                let prod = match moved {
                    false => conv.forward(&x)?.transpose(1, 2)?.matmul(&y)?,
                    true => x.transpose(1, 2)?.matmul(&conv.transposed(&y)?)?,
                };
                let w = Tensor::arange(0f64, prod.elem_count() as f64, &dev)?
                    .reshape(prod.shape())?
                    .sin()?;
                let g = (&prod * w)?.sum_all()?.backward()?;
                let weight = store.vars()["weight"].as_tensor().clone();
                let grad = |t: &Tensor| g.get(t).expect("a gradient").clone();
                Ok(vec![prod, grad(&x), grad(&y), grad(&weight)])
            };
            for (what, (a, b)) in ["product", "dx", "dy", "dW"]
                .iter()
                .zip(run(true)?.iter().zip(&run(false)?))
            {
                let d = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
                assert!(d < 1e-12, "groups {groups} {what}: {d}");
            }
        }
        let store = VarStore::seeded(0, DType::F32, &dev);
        let conv = Conv1x1::new(8, 4, 2, false, store.var_builder())?;
        let e = conv
            .transposed(&Tensor::zeros((1, 4, 2), DType::F32, &dev)?)
            .unwrap_err()
            .to_string();
        assert!(e.contains("8 -> 4"), "{e}");
        Ok(())
    }
}
