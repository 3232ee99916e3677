//! CPU softmax and log-softmax along one axis as one op each, with a one-op backward. The
//! composite form (max, subtract, exp, sum, divide: two strided reductions candle runs on one
//! thread, and twice as many ops backward) sat in every VT attention and in the pixel loss.
//!
//! The tensor is seen as `(outer, len, inner)` around the axis; each outer slab is one task,
//! and its loops run over `inner` innermost, so they vectorise for any axis but the last.
//! Forward `y = softmax(x)` (or `log y`); backward `dx = y·(dy − Σ y·dy)` for softmax and
//! `dx = dy − softmax·Σ dy` for log-softmax, from the saved output.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Softmax (`log: false`) or log-softmax over the axis of length `len`, `inner` elements
/// after it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SoftmaxCpu {
    pub len: usize,
    pub inner: usize,
    pub log: bool,
}

trait Real: candle_core::WithDType + num_traits::Float {}
impl Real for f32 {}
impl Real for f64 {}

impl SoftmaxCpu {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let (len, inner) = (self.len, self.inner);
        // every row of every slice is written below
        let mut y = crate::output_vec(x.len());
        y.par_chunks_mut(len * inner)
            .zip(x.par_chunks(len * inner))
            .for_each(|(ys, xs)| {
                let mut max = xs[..inner].to_vec();
                for row in xs.chunks(inner).skip(1) {
                    for (m, &v) in max.iter_mut().zip(row) {
                        *m = num_traits::Float::max(*m, v);
                    }
                }
                let mut sum = vec![T::zero(); inner];
                for (yr, xr) in ys.chunks_mut(inner).zip(xs.chunks(inner)) {
                    for (((o, &v), &m), s) in yr.iter_mut().zip(xr).zip(&max).zip(sum.iter_mut()) {
                        let e = (v - m).exp();
                        *s += e;
                        *o = if self.log { v - m } else { e };
                    }
                }
                if self.log {
                    let lse: Vec<T> = sum.iter().map(|s| s.ln()).collect();
                    for yr in ys.chunks_mut(inner) {
                        for (o, &l) in yr.iter_mut().zip(&lse) {
                            *o -= l;
                        }
                    }
                } else {
                    let inv: Vec<T> = sum.iter().map(|s| T::one() / *s).collect();
                    for yr in ys.chunks_mut(inner) {
                        for (o, &r) in yr.iter_mut().zip(&inv) {
                            *o *= r;
                        }
                    }
                }
            });
        y
    }
}

impl CustomOp1 for SoftmaxCpu {
    fn name(&self) -> &'static str {
        "vt-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = crate::float_kernel!(
            "softmax",
            [(storage, layout, "softmax") => v],
            self.forward(v)
        );
        Ok((y, layout.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(
            &dy.contiguous()?,
            &SoftmaxBackward(*self),
        )?))
    }
}

/// `(y, dy) → dx` of [`SoftmaxCpu`].
struct SoftmaxBackward(SoftmaxCpu);

impl SoftmaxBackward {
    fn run<T: Real>(&self, y: &[T], dy: &[T]) -> Vec<T> {
        let SoftmaxCpu { len, inner, log } = self.0;
        let mut dx = crate::output_vec(y.len());
        dx.par_chunks_mut(len * inner)
            .zip(y.par_chunks(len * inner).zip(dy.par_chunks(len * inner)))
            .for_each(|(dxs, (ys, ds))| {
                // softmax: Σ y·dy; log-softmax: Σ dy
                let mut dot = vec![T::zero(); inner];
                for (yr, dr) in ys.chunks(inner).zip(ds.chunks(inner)) {
                    for ((s, &yv), &dv) in dot.iter_mut().zip(yr).zip(dr) {
                        *s += if log { dv } else { yv * dv };
                    }
                }
                for (xr, (yr, dr)) in dxs
                    .chunks_mut(inner)
                    .zip(ys.chunks(inner).zip(ds.chunks(inner)))
                {
                    for (((o, &yv), &dv), &s) in xr.iter_mut().zip(yr).zip(dr).zip(&dot) {
                        *o = if log {
                            dv - yv.exp() * s
                        } else {
                            yv * (dv - s)
                        };
                    }
                }
            });
        dx
    }
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "vt-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let what = "softmax backward";
        let dx = crate::float_kernel!(
            what,
            [(s1, l1, what) => y, (s2, l2, what) => d],
            self.run(y, d)
        );
        Ok((dx, l1.shape().clone()))
    }
}
