//! Fused CPU batch normalisation in train mode: one op for the forward (statistics and
//! normalisation in two passes over the data) and one for the backward, instead of the dozen
//! broadcast ops and strided reductions of the composite form.
//!
//! Forward: `y = (x − μ_c)·γ_c/√(σ²_c + eps) + β_c` with the biased batch variance.
//! Backward: `dβ = Σ dy`, `dγ = Σ dy·x̂`, `dx = γ/√(σ²+eps)·(dy − dβ/M − x̂·dγ/M)`, M = N·S.
//! Arithmetic and sums run in f64; the loops are plain zips over eight-lane accumulators so
//! they vectorise. The batch statistics are kept for the running-stat update.
//!
//! With `relu` set the op is BN followed by ReLU: the forward clamps as it writes, and the
//! backward masks `dy` by `y > 0` as it reads, so the pre-activation is never stored.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// `(N, C, S)` sizes of a contiguous `(N, C, ...)` tensor.
fn ncs(shape: &Shape) -> Result<(usize, usize, usize)> {
    let d = shape.dims();
    if d.len() < 2 {
        bail!("batch norm needs (N, C, ...), got {shape:?}");
    }
    Ok((d[0], d[1], d[2..].iter().product()))
}

/// `Σ f(x)` in f64 over eight independent lanes, so the loop vectorises (a single running
/// sum is one dependent add per element).
fn lane_sum<T: WithDType>(xs: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let lanes = xs.chunks_exact(8);
    let tail: f64 = lanes.remainder().iter().map(|v| f(v.to_f64())).sum();
    for c in lanes {
        for j in 0..8 {
            acc[j] += f(c[j].to_f64());
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `(Σ d, Σ d·(x − μ))` over one plane in f64 lanes as [`lane_sum`], `d = dy` masked by
/// `y > 0` when `relu`.
fn grad_sums<T: WithDType>(x: &[T], dy: &[T], y: &[T], mean: f64, relu: bool) -> (f64, f64) {
    let d = |dv: T, yv: T| match relu && yv <= T::zero() {
        true => 0.0,
        false => dv.to_f64(),
    };
    let (mut a1, mut a2) = ([0f64; 8], [0f64; 8]);
    let (xc, dc, yc) = (x.chunks_exact(8), dy.chunks_exact(8), y.chunks_exact(8));
    let (mut s1, mut s2) = (0.0, 0.0);
    for ((&xv, &dv), &yv) in xc
        .remainder()
        .iter()
        .zip(dc.remainder())
        .zip(yc.remainder())
    {
        let g = d(dv, yv);
        s1 += g;
        s2 += g * (xv.to_f64() - mean);
    }
    for ((x8, d8), y8) in xc.zip(dc).zip(yc) {
        for j in 0..8 {
            let g = d(d8[j], y8[j]);
            a1[j] += g;
            a2[j] += g * (x8[j].to_f64() - mean);
        }
    }
    (s1 + a1.iter().sum::<f64>(), s2 + a2.iter().sum::<f64>())
}

/// Per-channel (mean, biased variance), two passes (the second about the mean), parallel
/// over channels.
fn channel_stats<T: WithDType>(x: &[T], n: usize, c: usize, s: usize) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..n).map(move |i| &x[(i * c + ch) * s..(i * c + ch + 1) * s]);
            let m = (n * s) as f64;
            let mean = planes().map(|p| lane_sum(p, |v| v)).sum::<f64>() / m;
            let var = planes()
                .map(|p| lane_sum(p, |v| (v - mean) * (v - mean)))
                .sum::<f64>()
                / m;
            (mean, var)
        })
        .collect()
}

/// Train-mode batch norm `(x, γ, β) → y` (then ReLU when `relu`); the batch statistics land
/// in `stats`.
#[derive(Clone, Debug)]
pub struct BatchNormTrain {
    pub eps: f64,
    pub relu: bool,
    pub stats: Arc<Mutex<Vec<(f64, f64)>>>,
}

impl BatchNormTrain {
    fn forward<T: WithDType>(
        &self,
        x: &[T],
        g: &[T],
        b: &[T],
        n: usize,
        c: usize,
        s: usize,
    ) -> Vec<T> {
        let stats = channel_stats(x, n, c, s);
        let mut y = crate::output_vec(x.len());
        y.par_chunks_mut(s).enumerate().for_each(|(i, out)| {
            let ch = i % c;
            let (mean, var) = stats[ch];
            let a = g[ch].to_f64() / (var + self.eps).sqrt();
            let shift = b[ch].to_f64();
            let xs = &x[i * s..(i + 1) * s];
            if self.relu {
                for (o, &v) in out.iter_mut().zip(xs) {
                    *o = T::from_f64(((v.to_f64() - mean) * a + shift).max(0.0));
                }
            } else {
                for (o, &v) in out.iter_mut().zip(xs) {
                    *o = T::from_f64((v.to_f64() - mean) * a + shift);
                }
            }
        });
        *self.stats.lock().unwrap() = stats;
        y
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "vt-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, s) = ncs(l1.shape())?;
        if l2.shape().elem_count() != c || l3.shape().elem_count() != c {
            bail!(
                "batch norm over {c} channels got weight {:?} and bias {:?}",
                l2.shape(),
                l3.shape()
            );
        }
        let out = crate::float_kernel!(
            "batch norm",
            [
                (s1, l1, "batch norm x") => x,
                (s2, l2, "batch norm weight") => g,
                (s3, l3, "batch norm bias") => b,
            ],
            self.forward(x, g, b, n, c, s)
        );
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, s) = ncs(x.shape())?;
        let back = BatchNormBackward {
            eps: self.eps,
            relu: self.relu,
            stats: self.stats.lock().unwrap().clone(),
            gamma: g.to_dtype(candle_core::DType::F64)?.to_vec1()?,
        };
        let packed = x.apply_op3_no_bwd(&dy.contiguous()?, y, &back)?;
        let total = n * c * s;
        let dx = packed.narrow(0, 0, total)?.reshape(x.shape())?;
        let dg = packed.narrow(0, total, c)?.reshape(g.shape())?;
        let db = packed.narrow(0, total + c, c)?.reshape(g.shape())?;
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

/// `(x, dy, y) → [dx (flattened), dγ, dβ]` packed in one vector; `y` masks `dy` when the
/// forward applied ReLU.
struct BatchNormBackward {
    eps: f64,
    relu: bool,
    stats: Vec<(f64, f64)>,
    gamma: Vec<f64>,
}

impl BatchNormBackward {
    fn run<T: WithDType>(
        &self,
        x: &[T],
        dy: &[T],
        y: &[T],
        n: usize,
        c: usize,
        s: usize,
    ) -> Vec<T> {
        let m = (n * s) as f64;
        let zero = T::zero();
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mean, var) = self.stats[ch];
                let (mut sdy, mut sdyx) = (0.0, 0.0);
                for i in 0..n {
                    let r = (i * c + ch) * s..(i * c + ch + 1) * s;
                    let (a, b) = grad_sums(&x[r.clone()], &dy[r.clone()], &y[r], mean, self.relu);
                    sdy += a;
                    sdyx += b;
                }
                let inv = 1.0 / (var + self.eps).sqrt();
                (sdy, sdyx * inv)
            })
            .collect();
        let total = n * c * s;
        // the channel loop writes every dx, the tail the 2·c sums
        let mut out = crate::output_vec(total + 2 * c);
        out[..total]
            .par_chunks_mut(s)
            .enumerate()
            .for_each(|(i, dx)| {
                let ch = i % c;
                let (mean, var) = self.stats[ch];
                let inv = 1.0 / (var + self.eps).sqrt();
                let (sdy, sdyx) = sums[ch];
                let k = self.gamma[ch] * inv;
                // dx = k·(d − Σd/M − x̂·Σd·x̂/M) = k·d + p·(x − μ) + q
                let p = -k * inv * sdyx / m;
                let q = -k * sdy / m;
                let r = i * s..(i + 1) * s;
                let (xs, ds, ys) = (&x[r.clone()], &dy[r.clone()], &y[r]);
                if self.relu {
                    for (((o, &xv), &dv), &yv) in dx.iter_mut().zip(xs).zip(ds).zip(ys) {
                        let d = if yv > zero { dv.to_f64() } else { 0.0 };
                        *o = T::from_f64(k * d + p * (xv.to_f64() - mean) + q);
                    }
                } else {
                    for ((o, &xv), &dv) in dx.iter_mut().zip(xs).zip(ds) {
                        *o = T::from_f64(k * dv.to_f64() + p * (xv.to_f64() - mean) + q);
                    }
                }
            });
        for (ch, (sdy, sdyx)) in sums.into_iter().enumerate() {
            out[total + ch] = T::from_f64(sdyx);
            out[total + c + ch] = T::from_f64(sdy);
        }
        out
    }
}

impl CustomOp3 for BatchNormBackward {
    fn name(&self) -> &'static str {
        "vt-batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, s) = ncs(l1.shape())?;
        let out = crate::float_kernel!(
            "batch norm backward",
            [
                (s1, l1, "batch norm x") => x,
                (s2, l2, "batch norm dy") => dy,
                (s3, l3, "batch norm y") => y,
            ],
            self.run(x, dy, y, n, c, s)
        );
        Ok((out, Shape::from(n * c * s + 2 * c)))
    }
}
