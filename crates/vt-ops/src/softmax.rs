//! Softmax and log-softmax along any axis, differentiable.
//!
//! candle-nn's `softmax_last_dim` has no backward. These are built from differentiable ops;
//! the max is subtracted for stability and *detached*: softmax is shift-invariant, so the shift
//! carries no gradient, and detaching it avoids routing a spurious gradient through `max`.

use candle_core::{Result, Tensor, D};

/// `exp(x_i) / sum_j exp(x_j)` along `dim`.
pub fn softmax<Dm: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dm) -> Result<Tensor> {
    let shift = x.max_keepdim(dim)?.detach();
    let e = x.broadcast_sub(&shift)?.exp()?;
    let s = e.sum_keepdim(dim)?;
    e.broadcast_div(&s)
}

/// `x_i - log sum_j exp(x_j)` along `dim`.
pub fn log_softmax<Dm: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dm) -> Result<Tensor> {
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
