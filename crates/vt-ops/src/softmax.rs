//! Softmax and log-softmax along any axis, differentiable.
//!
//! candle-nn's `softmax_last_dim` has no backward. On the CPU (f32 / f64) each is one op with
//! a one-op backward (`softmax_cpu.rs`); elsewhere they are built from differentiable ops,
//! the max subtracted for stability and *detached*: softmax is shift-invariant, so the shift
//! carries no gradient, and detaching it avoids routing a spurious gradient through `max`.

use candle_core::{DType, Result, Tensor, D};

/// The CPU kernel for `scale · x` along `dim`, when it applies.
fn cpu_op<Dm: candle_core::shape::Dim>(
    x: &Tensor,
    dim: Dm,
    log: bool,
    scale: f64,
) -> Result<Option<crate::softmax_cpu::SoftmaxCpu>> {
    if !crate::cpu_kernels(x.device())
        || !matches!(x.dtype(), DType::F32 | DType::F64)
        || x.elem_count() == 0
        || !(scale > 0.0 && scale.is_finite())
    {
        return Ok(None);
    }
    let d = dim.to_index(x.shape(), "softmax")?;
    let dims = x.dims();
    Ok(Some(crate::softmax_cpu::SoftmaxCpu {
        len: dims[d],
        inner: dims[d + 1..].iter().product(),
        log,
        scale,
    }))
}

/// `exp(x_i) / sum_j exp(x_j)` along `dim`.
pub fn softmax<Dm: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dm) -> Result<Tensor> {
    scaled_softmax(x, 1.0, dim)
}

/// `softmax(scale · x)` along `dim`: attention's `softmax(q·k / √d)`. On the CPU the scale is
/// part of the softmax op (one pass less over the logits, forward and backward).
pub fn scaled_softmax<Dm: candle_core::shape::Dim + Copy>(
    x: &Tensor,
    scale: f64,
    dim: Dm,
) -> Result<Tensor> {
    if let Some(op) = cpu_op(x, dim, false, scale)? {
        return x.contiguous()?.apply_op1(op);
    }
    let x = if scale == 1.0 {
        x.clone()
    } else {
        (x * scale)?
    };
    let shift = x.max_keepdim(dim)?.detach();
    let e = x.broadcast_sub(&shift)?.exp()?;
    let s = e.sum_keepdim(dim)?;
    e.broadcast_div(&s)
}

/// `x_i - log sum_j exp(x_j)` along `dim`.
pub fn log_softmax<Dm: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dm) -> Result<Tensor> {
    if let Some(op) = cpu_op(x, dim, true, 1.0)? {
        return x.contiguous()?.apply_op1(op);
    }
    let shift = x.max_keepdim(dim)?.detach();
    let z = x.broadcast_sub(&shift)?;
    let lse = z.exp()?.sum_keepdim(dim)?.log()?;
    z.broadcast_sub(&lse)
}

/// Softmax over the last axis (the common case), differentiable unlike candle-nn's.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    softmax(x, D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_gradient;
    use candle_core::{DType, Device};

    #[test]
    fn softmax_matches_definition_and_is_stable() -> Result<()> {
        let x = Tensor::new(&[[1000f32, 1001., 1002.], [-3., 0., 2.]], &Device::Cpu)?;
        let s = softmax(&x, 1)?.to_vec2::<f32>()?;
        let e: Vec<f64> = [-3f64, 0., 2.].iter().map(|v| v.exp()).collect();
        let z: f64 = e.iter().sum();
        for j in 0..3 {
            assert!((s[1][j] as f64 - e[j] / z).abs() < 1e-6);
            assert!(s[0][j].is_finite());
        }
        assert!((s[0].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let ls = log_softmax(&x, 0)?
            .exp()?
            .sum_keepdim(0)?
            .to_vec2::<f32>()?;
        assert!(ls[0].iter().all(|v| (v - 1.0).abs() < 1e-5));
        Ok(())
    }

    /// The CPU kernels against the composite ops (run on the same data by hand), values and
    /// gradients, on every axis of a rank-3 tensor with large logits.
    #[test]
    fn cpu_kernels_equal_the_composite_form() -> Result<()> {
        let dev = Device::Cpu;
        let x = crate::Rng::new(5).normal_vec(3 * 5 * 7, 0.0, 8.0);
        let x = candle_core::Var::from_vec(x, (3, 5, 7), &dev)?;
        let w = Tensor::arange(0f32, 105., &dev)?
            .reshape((3, 5, 7))?
            .sin()?;
        for dim in 0..3 {
            for log in [false, true] {
                let ours = match log {
                    false => softmax(&x, dim)?,
                    true => log_softmax(&x, dim)?,
                };
                let shift = x.max_keepdim(dim)?.detach();
                let z = x.broadcast_sub(&shift)?;
                let theirs = match log {
                    false => {
                        let e = z.exp()?;
                        e.broadcast_div(&e.sum_keepdim(dim)?)?
                    }
                    true => z.broadcast_sub(&z.exp()?.sum_keepdim(dim)?.log()?)?,
                };
                let grad = |y: &Tensor| -> Result<Tensor> {
                    Ok((y * &w)?.sum_all()?.backward()?.remove(&x).unwrap())
                };
                for (a, b) in [
                    (ours.clone(), theirs.clone()),
                    (grad(&ours)?, grad(&theirs)?),
                ] {
                    let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(d < 1e-5, "dim {dim} log {log}: {d}");
                }
            }
        }
        Ok(())
    }

    /// The kernels against the composite form in f64, on shapes whose rows span several
    /// parallel tasks and eight-lane chunks with remainders, under 1, 2 and 4 threads.
    #[test]
    fn cpu_kernels_on_large_shapes_and_thread_counts() -> Result<()> {
        let dev = Device::Cpu;
        for shape in [(700usize, 3usize, 37usize), (3, 37, 700), (2, 4099, 5)] {
            let shape_dims = [shape.0, shape.1, shape.2];
            let n = shape.0 * shape.1 * shape.2;
            let x = crate::Rng::new(7).normal_vec(n, 0.0, 6.0);
            let w = crate::Rng::new(8).normal_vec(n, 0.0, 1.0);
            let x_var =
                candle_core::Var::from_vec(x.iter().map(|&v| v as f64).collect(), shape, &dev)?;
            let x64 = x_var.as_tensor();
            let w64 = Tensor::from_vec(w.iter().map(|&v| v as f64).collect(), shape, &dev)?;
            for dim in 0..3 {
                for (log, scale) in [(false, 1.0), (true, 1.0), (false, 0.37)] {
                    let x64 = (x64 * scale)?;
                    let shift = x64.max_keepdim(dim)?.detach();
                    let z = x64.broadcast_sub(&shift)?;
                    let want = match log {
                        false => z.exp()?.broadcast_div(&z.exp()?.sum_keepdim(dim)?)?,
                        true => z.broadcast_sub(&z.exp()?.sum_keepdim(dim)?.log()?)?,
                    };
                    let want_grad = (&want * &w64)?
                        .sum_all()?
                        .backward()?
                        .remove(&x_var)
                        .unwrap();
                    for threads in [1, 2, 4] {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .unwrap();
                        let (y, g) = pool.install(|| -> Result<(Tensor, Tensor)> {
                            let x = candle_core::Var::from_vec(x.clone(), shape, &dev)?;
                            let w = Tensor::from_vec(w.clone(), shape, &dev)?;
                            let y = match log {
                                true => log_softmax(&x, dim)?,
                                false => scaled_softmax(&x, scale, dim)?,
                            };
                            let g = (&y * &w)?.sum_all()?.backward()?.remove(&x).unwrap();
                            Ok((y, g))
                        })?;
                        for (what, ours, theirs) in [("y", y, &want), ("grad", g, &want_grad)] {
                            let d = (ours.to_dtype(DType::F64)? - theirs)?.abs()?.max_all()?;
                            let d = d.to_scalar::<f64>()?;
                            // f32 sums over the axis: error grows with its length
                            let tol = 2e-5 + 4e-7 * shape_dims[dim] as f64;
                            assert!(d < tol, "{shape:?} dim {dim} log {log} scale {scale} {threads} threads {what}: {d}");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn gradients_on_every_axis() -> Result<()> {
        for dim in 0..3 {
            check_gradient(&[(2, 3, 4)], DType::F64, |xs| {
                let w = Tensor::arange(0f64, 24., xs[0].device())?
                    .reshape((2, 3, 4))?
                    .sin()?;
                (softmax(&xs[0], dim)? * &w)?.sum_all()
            })?;
            check_gradient(&[(2, 3, 4)], DType::F64, |xs| {
                let w = Tensor::arange(0f64, 24., xs[0].device())?
                    .reshape((2, 3, 4))?
                    .cos()?;
                (log_softmax(&xs[0], dim)? * &w)?.sum_all()
            })?;
        }
        Ok(())
    }
}
