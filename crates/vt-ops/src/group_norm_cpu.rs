//! CPU GroupNorm as two ops, forward and backward. A group of one sample is a contiguous
//! block of `C/G · S` values in NCHW, so its statistics are one pass over one slice; the
//! composite form ran candle's reductions and broadcasts one after another on one thread
//! (the semantic FPN head's GroupNorms left half of the machine idle). Arithmetic and sums in
//! f64, as the batch norm kernels.
//!
//! Forward: `y = (x − μ_ng)·r_ng·γ_c + β_c`, `r = 1/√(σ² + eps)`.
//! Backward, with `x̂ = (x − μ)·r` and `g = γ_c·dy`: `dβ_c = Σ dy`, `dγ_c = Σ dy·x̂`,
//! `dx = r·(g − mean_block(g) − x̂·mean_block(g·x̂))`.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// `(N, C, S)` of the input.
fn ncs(shape: &Shape) -> Result<(usize, usize, usize)> {
    let d = shape.dims();
    if d.len() < 2 {
        bail!("group norm needs (N, C, ...), got {shape:?}");
    }
    Ok((d[0], d[1], d[2..].iter().product()))
}

/// Mean and `1/√(var + eps)` of one group's block.
fn block_stats<T: WithDType>(xs: &[T], eps: f64) -> (f64, f64) {
    let m = xs.len() as f64;
    let mean = xs.iter().map(|v| v.to_f64()).sum::<f64>() / m;
    let var = xs.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / m;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `(x, γ, β) → y`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GroupNormCpu {
    pub groups: usize,
    pub eps: f64,
}

impl GroupNormCpu {
    fn forward<T: WithDType>(&self, x: &[T], g: &[T], b: &[T], c: usize, s: usize) -> Vec<T> {
        let cg = c / self.groups;
        let mut y = crate::output_vec(x.len());
        y.par_chunks_mut(cg * s)
            .zip(x.par_chunks(cg * s))
            .enumerate()
            .for_each(|(blk, (ys, xs))| {
                let (mean, r) = block_stats(xs, self.eps);
                let c0 = (blk % self.groups) * cg;
                for (j, (yp, xp)) in ys.chunks_mut(s).zip(xs.chunks(s)).enumerate() {
                    let a = g[c0 + j].to_f64() * r;
                    let shift = b[c0 + j].to_f64();
                    for (o, &v) in yp.iter_mut().zip(xp) {
                        *o = T::from_f64((v.to_f64() - mean) * a + shift);
                    }
                }
            });
        y
    }
}

impl CustomOp3 for GroupNormCpu {
    fn name(&self) -> &'static str {
        "vt-group-norm"
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
        let (_, c, s) = ncs(l1.shape())?;
        let y = crate::float_kernel!(
            "group norm",
            [
                (s1, l1, "group norm x") => x,
                (s2, l2, "group norm weight") => g,
                (s3, l3, "group norm bias") => b,
            ],
            self.forward(x, g, b, c, s)
        );
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, s) = ncs(x.shape())?;
        let packed = x.apply_op3_no_bwd(&dy.contiguous()?, g, &GroupNormBackward(*self))?;
        let total = n * c * s;
        let dx = packed.narrow(0, 0, total)?.reshape(x.shape())?;
        let dg = packed.narrow(0, total, c)?.reshape(g.shape())?;
        let db = packed.narrow(0, total + c, c)?.reshape(g.shape())?;
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

/// `(x, dy, γ) → [dx (flattened), dγ, dβ]`.
struct GroupNormBackward(GroupNormCpu);

impl GroupNormBackward {
    fn run<T: WithDType>(&self, x: &[T], dy: &[T], gamma: &[T], c: usize, s: usize) -> Vec<T> {
        let (groups, eps) = (self.0.groups, self.0.eps);
        let cg = c / groups;
        let total = x.len();
        let mut out = vec![T::zero(); total + 2 * c];
        // per block: dx, and each channel's (Σ dy·x̂, Σ dy) over this sample
        let partial: Vec<Vec<(f64, f64)>> = out[..total]
            .par_chunks_mut(cg * s)
            .zip(x.par_chunks(cg * s).zip(dy.par_chunks(cg * s)))
            .enumerate()
            .map(|(blk, (dxs, (xs, ds)))| {
                let (mean, r) = block_stats(xs, eps);
                let c0 = (blk % groups) * cg;
                let m = (cg * s) as f64;
                let (mut sg, mut sgx) = (0.0, 0.0);
                let mut per_channel = Vec::with_capacity(cg);
                for (j, (xp, dp)) in xs.chunks(s).zip(ds.chunks(s)).enumerate() {
                    let gm = gamma[c0 + j].to_f64();
                    let (mut sd, mut sdx) = (0.0, 0.0);
                    for (&xv, &dv) in xp.iter().zip(dp) {
                        let (d, xh) = (dv.to_f64(), (xv.to_f64() - mean) * r);
                        sd += d;
                        sdx += d * xh;
                    }
                    sg += gm * sd;
                    sgx += gm * sdx;
                    per_channel.push((sdx, sd));
                }
                let (mg, mgx) = (sg / m, sgx / m);
                for (j, (dxp, (xp, dp))) in dxs
                    .chunks_mut(s)
                    .zip(xs.chunks(s).zip(ds.chunks(s)))
                    .enumerate()
                {
                    let gm = gamma[c0 + j].to_f64();
                    for (o, (&xv, &dv)) in dxp.iter_mut().zip(xp.iter().zip(dp)) {
                        let xh = (xv.to_f64() - mean) * r;
                        *o = T::from_f64(r * (gm * dv.to_f64() - mg - xh * mgx));
                    }
                }
                per_channel
            })
            .collect();
        let mut sums = vec![(0.0, 0.0); c];
        for (blk, p) in partial.iter().enumerate() {
            let c0 = (blk % groups) * cg;
            for (j, &(a, b)) in p.iter().enumerate() {
                sums[c0 + j].0 += a;
                sums[c0 + j].1 += b;
            }
        }
        for (ch, (dg, db)) in sums.into_iter().enumerate() {
            out[total + ch] = T::from_f64(dg);
            out[total + c + ch] = T::from_f64(db);
        }
        out
    }
}

impl CustomOp3 for GroupNormBackward {
    fn name(&self) -> &'static str {
        "vt-group-norm-backward"
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
            "group norm backward",
            [
                (s1, l1, "group norm x") => x,
                (s2, l2, "group norm dy") => dy,
                (s3, l3, "group norm weight") => g,
            ],
            self.run(x, dy, g, c, s)
        );
        Ok((out, Shape::from(n * c * s + 2 * c)))
    }
}
