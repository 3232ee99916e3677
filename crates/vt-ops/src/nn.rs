//! The leaf layers every vt model is built from: convolutions (2-d here; the 1x1 "Conv1d" of the
//! VT modules in `conv1x1.rs`, re-exported), linear and batch norm (dropout and drop-path live
//! in [`crate::stochastic`]).
//!
//! Each initialises as PyTorch does by default (`U(±1/√fan_in)` for weights and biases), takes
//! its parameters from a `VarBuilder` under PyTorch names, and reports its [`Cost`].

pub use crate::conv1x1::Conv1x1;
use crate::cost::Cost;
use candle_core::{bail, Module, ModuleT, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

pub(crate) fn default_uniform(fan_in: usize) -> Init {
    let b = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// Options of a 2-d convolution (PyTorch defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }
}

/// `nn.Conv2d`: weight `(out, in/groups, k, k)`, optional bias. Its convolution of a resized
/// map, `forward_resized`, is in [`crate::resize`].
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
    pub(crate) cfg: Conv2dConfig,
}

impl Conv2d {
    /// A convolution with PyTorch's default init, or `init` for the weight when given
    /// (ResNet uses Kaiming-normal, fan-out).
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        cfg: Conv2dConfig,
        init: Option<Init>,
        vb: VarBuilder,
    ) -> Result<Self> {
        if cfg.groups == 0 || cin % cfg.groups != 0 || cout % cfg.groups != 0 {
            bail!(
                "conv2d {}: channels {cin}->{cout} not divisible by groups {}",
                vb.prefix(),
                cfg.groups
            );
        }
        let fan_in = cin / cfg.groups * k * k;
        let weight = vb.get_with_hints(
            (cout, cin / cfg.groups, k, k),
            "weight",
            init.unwrap_or(default_uniform(fan_in)),
        )?;
        let bias = if cfg.bias {
            Some(vb.get_with_hints(cout, "bias", default_uniform(fan_in))?)
        } else {
            None
        };
        Ok(Self { weight, bias, cfg })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let k = self.weight.dim(2).unwrap_or(1);
        let c = &self.cfg;
        let f = |n: usize| (n + 2 * c.padding - c.dilation * (k - 1) - 1) / c.stride + 1;
        (f(h), f(w))
    }

    /// Cost on an `h × w` input; also returns the output size.
    pub fn cost(&self, h: usize, w: usize) -> (Cost, (usize, usize)) {
        let (ho, wo) = self.out_size(h, w);
        let per_out = self.weight.elem_count() as u64;
        let params = per_out + self.bias.as_ref().map_or(0, |b| b.elem_count() as u64);
        (Cost::new(per_out * (ho * wo) as u64, params), (ho, wo))
    }
}

impl Conv2d {
    /// Inference with a following batch norm (and ReLU, when `relu`) folded in:
    /// `conv(x, W·scale) + shift`, one pass over the activations after the conv instead of
    /// three (four). Same result as `bn(conv(x))` (`relu(bn(conv(x)))`) in eval mode.
    pub fn forward_folded(&self, x: &Tensor, bn: &BatchNorm, relu: bool) -> Result<Tensor> {
        let (scale, shift) = bn.eval_affine()?;
        let mut shift = shift;
        if let Some(b) = &self.bias {
            shift = (shift + (b * &scale)?)?;
        }
        let w = self.weight.broadcast_mul(&scale.reshape(((), 1, 1, 1))?)?;
        let c = &self.cfg;
        let y = crate::conv::conv2d(x, &w, c.stride, c.padding, c.dilation, c.groups)?;
        match relu {
            true => crate::bias::add_channel_bias_relu(&y, &shift),
            false => crate::bias::add_channel_bias(&y, &shift),
        }
    }
}

impl Conv2d {
    /// The one convolution equal to this one followed by `next`, a 1×1 convolution with no
    /// activation between: weight `W₂·W₁`, bias `W₂·b₁ + b₂`. One pass over the input and no
    /// intermediate map (for `C → C → 1` channels, a `C`-th of the MACs).
    pub fn then_pointwise(&self, next: &Conv2d) -> Result<Conv2d> {
        let (o2, o1, kh, kw) = next.weight.dims4()?;
        let (o, c, k1, k2) = self.weight.dims4()?;
        let n = &next.cfg;
        if (kh, kw) != (1, 1)
            || o1 != o
            || n.stride != 1
            || n.padding != 0
            || n.groups != 1
            || self.cfg.groups != 1
        {
            bail!(
                "then_pointwise: needs an ungrouped conv ({:?}) then a 1×1, stride 1, unpadded, ungrouped conv of its {o} channels ({:?})",
                self.weight.shape(),
                next.weight.shape()
            );
        }
        let w2 = next.weight.reshape((o2, o1))?;
        let weight = w2
            .matmul(&self.weight.reshape((o, c * k1 * k2))?)?
            .reshape((o2, c, k1, k2))?;
        let bias = match (&self.bias, &next.bias) {
            (None, b2) => b2.clone(),
            (Some(b1), b2) => {
                let b = w2.matmul(&b1.reshape((o1, 1))?)?.reshape(o2)?;
                Some(match b2 {
                    Some(b2) => (b + b2)?,
                    None => b,
                })
            }
        };
        Ok(Conv2d {
            weight,
            bias,
            cfg: self.cfg,
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        let y = crate::conv::conv2d(x, &self.weight, c.stride, c.padding, c.dilation, c.groups)?;
        match &self.bias {
            Some(b) => crate::bias::add_channel_bias(&y, b),
            None => Ok(y),
        }
    }
}

/// `nn.Linear`: weight `(out, in)`, bias `(out,)`.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    pub fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        let init = default_uniform(cin);
        Ok(Self {
            weight: vb.get_with_hints((cout, cin), "weight", init)?,
            bias: vb.get_with_hints(cout, "bias", init)?,
        })
    }

    pub fn cost(&self) -> Cost {
        let w = self.weight.elem_count() as u64;
        Cost::new(w, w + self.bias.elem_count() as u64)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)
    }
}

/// Batch normalisation over dim 1 of a `(N, C, ...)` tensor (`BatchNorm1d`/`2d`): eps 1e-5,
/// momentum 0.1. Train mode normalises with the biased batch variance and updates
/// `running_var` with the unbiased one, as PyTorch does. Running statistics are variables of
/// the store (saved with the model) that the optimizer must skip.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
    /// Use the fused CPU kernel in train mode (the composite form stays as the reference).
    fused: bool,
}

impl BatchNorm {
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(c, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(c, "bias", Init::Const(0.0))?,
            running_mean: Var::from_tensor(&vb.get_with_hints(
                c,
                "running_mean",
                Init::Const(0.0),
            )?)?,
            running_var: Var::from_tensor(&vb.get_with_hints(
                c,
                "running_var",
                Init::Const(1.0),
            )?)?,
            eps: 1e-5,
            momentum: 0.1,
            fused: true,
        })
    }

    /// Switches between the fused CPU kernel and the composite candle ops (for comparisons).
    pub fn with_fused(mut self, fused: bool) -> Self {
        self.fused = fused;
        self
    }

    /// BN parameters, which the paper's parameter counts exclude.
    pub fn num_params(&self) -> usize {
        2 * self.weight.elem_count()
    }

    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// `(scale, shift)` of the eval-mode affine map `y = x·scale + shift`; differentiable in
    /// the BN weight and bias (the running statistics are constants).
    pub fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let scale = (&self.weight / (self.running_var.as_tensor().detach() + self.eps)?.sqrt()?)?;
        let shift = (&self.bias - (self.running_mean.as_tensor().detach() * &scale)?)?;
        Ok((scale, shift))
    }

    /// `relu(bn(x))`. In train mode on the CPU one fused op, which keeps only its input and
    /// output for the backward (as PyTorch's in-place ReLU does).
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, true)
    }

    fn forward_act(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let rank = x.rank();
        let c = self.weight.dim(0)?;
        if rank < 2 || x.dim(1)? != c {
            bail!("batch norm over {c} channels got shape {:?}", x.shape());
        }
        let mut bshape = vec![1usize; rank];
        bshape[1] = c;
        let col = |t: &Tensor| t.reshape(bshape.as_slice());
        let act = |y: Tensor| if relu { y.relu() } else { Ok(y) };
        if !train {
            let (scale, shift) = self.eval_affine()?;
            return act(x
                .broadcast_mul(&col(&scale)?)?
                .broadcast_add(&col(&shift)?)?);
        }
        let n = x.elem_count() / c;
        if n < 2 {
            bail!(
                "batch norm in train mode needs more than one value per channel, got shape {:?}",
                x.shape()
            );
        }
        let m = self.momentum;
        let sync = crate::collective::sync_batch_norm();
        let (y, mean, var, count) = if let Some(group) = sync {
            // the global batch's statistics: one all-reduce of (Σx, Σx²) per channel, whose
            // backward all-reduces their gradients
            let dims: Vec<usize> = (0..rank).filter(|&d| d != 1).collect();
            let s1 = x.sum_keepdim(dims.as_slice())?;
            let s2 = x.sqr()?.sum_keepdim(dims.as_slice())?;
            let sums = crate::collective::all_reduce_sum(&Tensor::cat(&[&s1, &s2], 0)?, &group)?;
            let mut total = [n as f64];
            group.all_reduce_f64(&mut total)?;
            let mean = (sums.narrow(0, 0, 1)? / total[0])?;
            let var = ((sums.narrow(0, 1, 1)? / total[0])? - mean.sqr()?)?;
            let scale = col(&self.weight)?.broadcast_div(&(&var + self.eps)?.sqrt()?)?;
            let y = x
                .broadcast_sub(&mean)?
                .broadcast_mul(&scale)?
                .broadcast_add(&col(&self.bias)?)?;
            let flat = |t: Tensor| t.detach().flatten_all();
            (act(y)?, flat(mean)?, flat(var)?, total[0])
        } else if self.fused && crate::cpu_kernels(x.device()) {
            let op = crate::batch_norm::BatchNormTrain {
                eps: self.eps,
                relu,
                stats: Default::default(),
            };
            let stats = op.stats.clone();
            let y = x.contiguous()?.apply_op3(&self.weight, &self.bias, op)?;
            let (mean, var): (Vec<f64>, Vec<f64>) = stats.lock().unwrap().iter().copied().unzip();
            let dev = x.device();
            (
                y,
                Tensor::new(mean, dev)?.to_dtype(x.dtype())?,
                Tensor::new(var, dev)?.to_dtype(x.dtype())?,
                n as f64,
            )
        } else {
            let dims: Vec<usize> = (0..rank).filter(|&d| d != 1).collect();
            let mean = x.mean_keepdim(dims.as_slice())?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(dims.as_slice())?;
            let scale = col(&self.weight)?.broadcast_div(&(&var + self.eps)?.sqrt()?)?;
            let y = xc.broadcast_mul(&scale)?.broadcast_add(&col(&self.bias)?)?;
            (
                act(y)?,
                mean.detach().flatten_all()?,
                var.detach().flatten_all()?,
                n as f64,
            )
        };
        let unbiased = count / (count - 1.0);
        self.running_mean
            .set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
        self.running_var
            .set(&((self.running_var.as_tensor() * (1.0 - m))? + (var * (m * unbiased))?)?)?;
        Ok(y)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::VarStore;
    use candle_core::{DType, Device, Var};

    /// `next(conv(x)) = conv.then_pointwise(next)(x)`, values and the gradients of `x` and of
    /// both convs' weights and biases, with and without biases; a 3×3 `next` is an error.
    #[test]
    fn conv_then_pointwise_is_one_conv_with_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(
            &crate::Rng::new(5)
                .normal_tensor((2, 4, 9, 9), &dev)?
                .to_dtype(DType::F64)?,
        )?;
        for bias in [true, false] {
            let run = |fused: bool| -> Result<Vec<Tensor>> {
                let store = VarStore::seeded(6, DType::F64, &dev);
                let vb = store.var_builder();
                let cfg = |stride, padding| Conv2dConfig {
                    stride,
                    padding,
                    bias,
                    ..Default::default()
                };
                let conv = Conv2d::new(4, 4, 3, cfg(2, 1), None, vb.pp("a"))?;
                let next = Conv2d::new(4, 2, 1, cfg(1, 0), None, vb.pp("b"))?;
                let y = match fused {
                    true => conv.then_pointwise(&next)?.forward(&x)?,
                    false => next.forward(&conv.forward(&x)?)?,
                };
                let w = Tensor::arange(0f64, y.elem_count() as f64, &dev)?
                    .reshape(y.shape())?
                    .cos()?;
                let g = (&y * w)?.sum_all()?.backward()?;
                let mut out = vec![y, g.get(&x).expect("dx").clone()];
                let vars = store.vars();
                let mut names: Vec<_> = vars.keys().collect();
                names.sort();
                for n in names {
                    out.push(g.get(vars[n].as_tensor()).expect("a gradient").clone());
                }
                Ok(out)
            };
            let (a, b) = (run(true)?, run(false)?);
            assert_eq!(a.len(), if bias { 6 } else { 4 });
            for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                let d = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
                assert!(d < 1e-12, "bias {bias}, output {i}: {d}");
            }
        }
        let store = VarStore::seeded(0, DType::F32, &dev);
        let a = Conv2d::new(
            4,
            4,
            3,
            Conv2dConfig::default(),
            None,
            store.var_builder().pp("a"),
        )?;
        let e = a.then_pointwise(&a).unwrap_err().to_string();
        assert!(e.contains("[4, 4, 3, 3]"), "{e}");
        Ok(())
    }

    #[test]
    fn folded_conv_bn_equals_conv_then_bn_with_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let store = VarStore::seeded(4, DType::F32, &dev);
        let vb = store.var_builder();
        let conv = Conv2d::new(
            3,
            5,
            3,
            Conv2dConfig {
                stride: 2,
                padding: 1,
                ..Default::default()
            },
            None,
            vb.pp("c"),
        )?;
        let bn = BatchNorm::new(5, vb.pp("bn"))?;
        let x = Tensor::from_vec(
            crate::Rng::new(2).normal_vec(2 * 3 * 9 * 9, 0.0, 1.0),
            (2, 3, 9, 9),
            &dev,
        )?;
        bn.forward_t(&conv.forward(&x)?, true)?; // non-trivial running statistics
        let a = conv.forward_folded(&x, &bn, false)?;
        let b = bn.forward_t(&conv.forward(&x)?, false)?;
        assert_same_with_gradients(&store, &a, &b)?;
        let a = conv.forward_folded(&x, &bn, true)?;
        assert_same_with_gradients(&store, &a, &b.relu()?)?;
        // the 1×1 conv of tokens or pixels, grouped, with a bias
        let store = VarStore::seeded(5, DType::F32, &dev);
        let vb = store.var_builder();
        let conv = Conv1x1::new(6, 4, 2, true, vb.pp("c"))?;
        let bn = BatchNorm::new(4, vb.pp("bn"))?;
        let x = crate::Rng::new(3).normal_tensor((3, 6, 7), &dev)?;
        bn.forward_t(&conv.forward(&x)?, true)?;
        let a = conv.forward_folded(&x, &bn)?;
        let b = bn.forward_t(&conv.forward(&x)?, false)?;
        assert_same_with_gradients(&store, &a, &b)
    }

    /// `a` and `b` agree, and so do the gradients of every trained variable of `store`.
    fn assert_same_with_gradients(store: &VarStore, a: &Tensor, b: &Tensor) -> Result<()> {
        assert!((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        let (ga, gb) = (a.sum_all()?.backward()?, b.sum_all()?.backward()?);
        for (name, v) in store.vars() {
            if name.contains("running") {
                continue;
            }
            let d = (ga.get(v.as_tensor()).unwrap() - gb.get(v.as_tensor()).unwrap())?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(d < 1e-4, "{name}: {d}");
        }
        Ok(())
    }

    #[test]
    fn batch_norm_train_updates_running_stats_and_eval_keeps_them() -> Result<()> {
        let dev = Device::Cpu;
        let store = VarStore::seeded(1, DType::F32, &dev);
        let bn = BatchNorm::new(3, store.var_builder())?;
        let x = Tensor::arange(0f32, 24., &dev)?.reshape((2, 3, 2, 2))?;
        let y = bn.forward_t(&x, true)?;
        // normalised: zero mean, unit biased variance per channel
        let m = y
            .mean_keepdim(vec![0usize, 2, 3])?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!(m.iter().all(|v| v.abs() < 1e-5));
        // channel 0 holds 0..4 and 12..16: mean 7.5, sum of squared deviations 298, unbiased
        // variance 298 / 7
        let rm = bn.running_mean().to_vec1::<f32>()?;
        let rv = bn.running_var().to_vec1::<f32>()?;
        assert!((rm[0] - 0.75).abs() < 1e-5, "{rm:?}");
        assert!((rv[0] - (0.9 + 0.1 * 298.0 / 7.0)).abs() < 1e-4, "{rv:?}");
        bn.forward_t(&x, false)?;
        assert_eq!(bn.running_mean().to_vec1::<f32>()?, rm);
        Ok(())
    }

    #[test]
    fn batch_norm_gradient_fused_and_composite() -> Result<()> {
        let dev = Device::Cpu;
        for (fused, relu) in [(true, false), (false, false), (true, true), (false, true)] {
            crate::gradcheck::check_gradient(
                &[vec![3usize, 2, 2, 3], vec![2], vec![2]],
                DType::F64,
                |xs| {
                    let store = VarStore::seeded(0, DType::F64, &dev);
                    let bn = BatchNorm::new(2, store.var_builder())?.with_fused(fused);
                    let bn = BatchNorm {
                        weight: xs[1].clone(),
                        bias: xs[2].clone(),
                        ..bn
                    };
                    let w = Tensor::arange(0f64, 36., &dev)?
                        .reshape((3, 2, 2, 3))?
                        .sin()?;
                    (bn.forward_act(&xs[0], true, relu)? * w)?.sum_all()
                },
            )?;
        }
        Ok(())
    }

    #[test]
    fn fused_batch_norm_equals_composite() -> Result<()> {
        let dev = Device::Cpu;
        for (shape, relu) in [
            (vec![4usize, 5, 3, 7], false),
            (vec![2, 6, 9], false),
            (vec![4, 5, 3, 7], true),
            // planes longer than a summation block (1024), with a ragged tail
            (vec![2, 3, 37, 41], true),
        ] {
            let x = crate::Rng::new(1).normal_vec(shape.iter().product(), 0.5, 2.0);
            let x = candle_core::Var::from_vec(x, shape.as_slice(), &dev)?;
            let seed = crate::Rng::new(2).normal_vec(x.elem_count(), 0.0, 1.0);
            let seed = Tensor::from_vec(seed, shape.as_slice(), &dev)?;
            let run = |fused: bool| -> Result<[Vec<f32>; 4]> {
                let store = VarStore::seeded(0, DType::F32, &dev);
                let bn = BatchNorm::new(shape[1], store.var_builder())?.with_fused(fused);
                let y = bn.forward_act(&x, true, relu)?;
                let dx = (&y * &seed)?.sum_all()?.backward()?.remove(&x).unwrap();
                let flat = |t: Tensor| t.flatten_all()?.to_vec1::<f32>();
                Ok([
                    flat(y)?,
                    flat(dx)?,
                    bn.running_mean().to_vec1()?,
                    bn.running_var().to_vec1()?,
                ])
            };
            let (a, b) = (run(true)?, run(false)?);
            for (u, v) in a.iter().zip(&b) {
                let d = u
                    .iter()
                    .zip(v)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max);
                assert!(d < 1e-5, "{shape:?}: {d}");
            }
        }
        Ok(())
    }
}
