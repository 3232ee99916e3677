//! CPU softmax and log-softmax along one axis as one op each, with a one-op backward. The
//! composite form (max, subtract, exp, sum, divide: two strided reductions candle runs on one
//! thread, and twice as many ops backward) sat in every VT attention and in the pixel loss.
//!
//! The tensor is seen as `(outer, len, inner)` around the axis. Along the last axis
//! (`inner == 1`: the projector's and the filter tokenizer's attention) each row is a
//! contiguous run, reduced in eight lanes; otherwise the loops run over `inner` innermost, so
//! they vectorise too. One task takes whole slabs of at least [`TASK_ELEMS`] elements, so a
//! softmax over 16 tokens at each of 200,000 pixels is a few dozen tasks, not 200,000.
//! Forward `y = softmax(s·x)` (or `log y`); backward `dx = s·y·(dy − Σ y·dy)` for softmax
//! and `dx = s·(dy − softmax·Σ dy)` for log-softmax, from the saved output.

use crate::gemm::{madd, wide_lanes};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Softmax (`log: false`) or log-softmax of `scale · x` over the axis of length `len`,
/// `inner` elements after it. `scale > 0` is the attention's `1/√d`, applied as the kernel
/// reads `x` instead of as one more pass over the logits, forward and backward.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SoftmaxCpu {
    pub len: usize,
    pub inner: usize,
    pub log: bool,
    pub scale: f64,
}

/// The least work of one parallel task: below this a task's scheduling costs more than it saves.
const TASK_ELEMS: usize = 16 * 1024;

pub(crate) trait Real: crate::gemm::Float {
    /// `exp(self)` written so that a loop of it vectorises (no libm call per element);
    /// `FMA` fuses its multiply-adds (only where the CPU has FMA: elsewhere each is a libm call).
    fn exp_lanes<const FMA: bool>(self) -> Self;
}

impl Real for f32 {
    /// `exp` in f32 lanes (eight to an AVX2 register): `2^n · e^r` with `n = round(x / ln 2)`,
    /// `r = x − n·ln 2` by Cody and Waite's two-part ln 2 (the first part's short mantissa
    /// keeps `n·C1` exact), `e^r = 1 + (r + r²·q(r))` with `q` the Taylor polynomial to `r⁵/7!`
    /// (truncation below 0.05 ulp for `|r| ≤ 0.35`). The tail is under 0.42, so its rounding
    /// costs at most a quarter-ulp of the result before the last addition rounds once: within
    /// an ulp of `f32::exp`, mostly its value. `2^n` goes in as two exact power-of-two factors,
    /// so a denormal result is rounded once. (An earlier form ran in f64 lanes: half as many to
    /// a register, and a conversion each way.)
    #[inline(always)]
    fn exp_lanes<const FMA: bool>(self) -> f32 {
        const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23
        const LN2_HI: f32 = 0.693_359_375; // 9 significant bits
        const LN2_LO: f32 = -2.121_944_4e-4;
        let madd = madd::<f32, FMA>;
        // beyond these f32's exp is 0 or infinite; the clamp keeps n within 2^±159
        let x = self.clamp(-110.0, 90.0);
        let t = madd(x, std::f32::consts::LOG2_E, ROUND);
        let n = t - ROUND;
        let r = madd(-n, LN2_LO, madd(-n, LN2_HI, x));
        let c = &INV_FACTORIAL;
        // q(r) = c₂ + c₃r + … + c₇r⁵ as pairs in r, then a polynomial in r²: three dependent steps
        let (r2, pair) = (r * r, |i: usize| madd(c[i + 1], r, c[i]));
        let q = madd(madd(pair(6), r2, pair(4)), r2, pair(2));
        let e = 1.0 + madd(q, r2, r);
        let k = t.to_bits() as i32 - ROUND.to_bits() as i32;
        let (k1, k2) = (k >> 1, k - (k >> 1));
        let pow2 = |k: i32| f32::from_bits(((k + 127) << 23) as u32);
        e * pow2(k1) * pow2(k2)
    }
}

/// `1 / k!` for k ≤ 7.
const INV_FACTORIAL: [f32; 8] = [
    1.0,
    1.0,
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5_040.0,
];

impl Real for f64 {
    #[inline(always)]
    fn exp_lanes<const FMA: bool>(self) -> f64 {
        self.exp()
    }
}

/// Largest element of a non-empty row, in eight lanes.
#[inline(always)]
fn row_max<T: Real>(x: &[T]) -> T {
    let chunks = x.chunks_exact(8);
    let mut m = x[0];
    for &v in chunks.remainder() {
        m = num_traits::Float::max(m, v);
    }
    let mut lanes = [m; 8];
    for c in chunks {
        for j in 0..8 {
            lanes[j] = num_traits::Float::max(lanes[j], c[j]);
        }
    }
    lanes.iter().fold(m, |a, &b| num_traits::Float::max(a, b))
}

/// `Σ f(a_i, b_i)` in eight lanes.
#[inline(always)]
fn lane_dot<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut s = T::zero();
    for (&x, &y) in ac.remainder().iter().zip(bc.remainder()) {
        s = s + f(x, y);
    }
    let mut lanes = [T::zero(); 8];
    for (a8, b8) in ac.zip(bc) {
        for j in 0..8 {
            lanes[j] = lanes[j] + f(a8[j], b8[j]);
        }
    }
    lanes.iter().fold(s, |a, &b| a + b)
}

/// `Σ a_i` in eight lanes.
#[inline(always)]
fn lane_sum<T: Real>(a: &[T]) -> T {
    lane_dot(a, a, |x, _| x)
}

/// `y = exp(s·(x − m))` over a row; returns `Σ y` (summed in eight lanes).
#[inline(always)]
fn exp_row<T: Real, const FMA: bool>(x: &[T], m: T, s: T, y: &mut [T]) -> T {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = ((v - m) * s).exp_lanes::<FMA>();
    }
    lane_sum(y)
}

impl SoftmaxCpu {
    /// Elements per task: whole slabs (`len · inner`), at least [`TASK_ELEMS`] of them.
    fn task_len(&self) -> usize {
        let slab = (self.len * self.inner).max(1);
        TASK_ELEMS.div_ceil(slab) * slab
    }

    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        // every row of every slab is written below
        let mut y = crate::output_vec(x.len());
        let task = self.task_len();
        let wide = wide_lanes();
        y.par_chunks_mut(task)
            .zip(x.par_chunks(task))
            .for_each(|(ys, xs)| match wide {
                // SAFETY: `wide_lanes` checked that this CPU has AVX2 and FMA
                #[cfg(target_arch = "x86_64")]
                true => unsafe { self.forward_task_avx2(ys, xs) },
                _ => self.forward_task::<T, false>(ys, xs),
            });
        y
    }

    /// [`Self::forward_task`] compiled for AVX2 and FMA: the `exp` polynomial makes the forward
    /// bound by arithmetic, not memory, so eight lanes instead of SSE2's four pay, and fused
    /// multiply-adds.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_task_avx2<T: Real>(&self, ys: &mut [T], xs: &[T]) {
        self.forward_task::<T, true>(ys, xs)
    }

    /// The forward of one task's whole slabs.
    #[inline(always)]
    fn forward_task<T: Real, const FMA: bool>(&self, ys: &mut [T], xs: &[T]) {
        let (len, inner, log) = (self.len, self.inner, self.log);
        // max(s·x) = s·max(x) for s > 0, so rows reduce x and scale (x − max) as they go
        let scale = T::from_f64(self.scale);
        if inner == 1 {
            for (yr, xr) in ys.chunks_mut(len).zip(xs.chunks(len)) {
                let m = row_max(xr);
                let s = exp_row::<T, FMA>(xr, m, scale, yr);
                if log {
                    let lse = s.ln();
                    for (o, &v) in yr.iter_mut().zip(xr) {
                        *o = (v - m) * scale - lse;
                    }
                } else {
                    let r = T::one() / s;
                    for o in yr.iter_mut() {
                        *o = *o * r;
                    }
                }
            }
            return;
        }
        let (mut max, mut sum) = (vec![T::zero(); inner], vec![T::zero(); inner]);
        for (ys, xs) in ys.chunks_mut(len * inner).zip(xs.chunks(len * inner)) {
            max.copy_from_slice(&xs[..inner]);
            for row in xs.chunks(inner).skip(1) {
                for (m, &v) in max.iter_mut().zip(row) {
                    *m = num_traits::Float::max(*m, v);
                }
            }
            sum.fill(T::zero());
            for (yr, xr) in ys.chunks_mut(inner).zip(xs.chunks(inner)) {
                for (((o, &v), &m), s) in yr.iter_mut().zip(xr).zip(&max).zip(&mut sum) {
                    let e = ((v - m) * scale).exp_lanes::<FMA>();
                    *s = *s + e;
                    *o = e;
                }
            }
            if log {
                for s in sum.iter_mut() {
                    *s = s.ln();
                }
                for (yr, xr) in ys.chunks_mut(inner).zip(xs.chunks(inner)) {
                    for (((o, &v), &m), &lse) in yr.iter_mut().zip(xr).zip(&max).zip(&sum) {
                        *o = (v - m) * scale - lse;
                    }
                }
            } else {
                for s in sum.iter_mut() {
                    *s = T::one() / *s;
                }
                for yr in ys.chunks_mut(inner) {
                    for (o, &r) in yr.iter_mut().zip(&sum) {
                        *o = *o * r;
                    }
                }
            }
        }
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
        let SoftmaxCpu {
            len,
            inner,
            log,
            scale,
        } = self.0;
        let scale = T::from_f64(scale);
        // softmax: dx = s·y·(dy − Σ y·dy); log-softmax: dx = s·(dy − exp(y)·Σ dy)
        let dx_of = move |yv: T, dv: T, s: T| match log {
            true => (dv - yv.exp_lanes::<false>() * s) * scale,
            false => yv * (dv - s) * scale,
        };
        let mut dx = crate::output_vec(y.len());
        let task = self.0.task_len();
        dx.par_chunks_mut(task)
            .zip(y.par_chunks(task).zip(dy.par_chunks(task)))
            .for_each(|(dxs, (ys, ds))| {
                if inner == 1 {
                    for (xr, (yr, dr)) in
                        dxs.chunks_mut(len).zip(ys.chunks(len).zip(ds.chunks(len)))
                    {
                        let s = match log {
                            true => lane_sum(dr),
                            false => lane_dot(yr, dr, |y, d| y * d),
                        };
                        for ((o, &yv), &dv) in xr.iter_mut().zip(yr).zip(dr) {
                            *o = dx_of(yv, dv, s);
                        }
                    }
                    return;
                }
                let mut dot = vec![T::zero(); inner];
                let slab = len * inner;
                for (dxs, (ys, ds)) in dxs
                    .chunks_mut(slab)
                    .zip(ys.chunks(slab).zip(ds.chunks(slab)))
                {
                    dot.fill(T::zero());
                    for (yr, dr) in ys.chunks(inner).zip(ds.chunks(inner)) {
                        for ((s, &yv), &dv) in dot.iter_mut().zip(yr).zip(dr) {
                            *s = *s + if log { dv } else { yv * dv };
                        }
                    }
                    for (xr, (yr, dr)) in dxs
                        .chunks_mut(inner)
                        .zip(ys.chunks(inner).zip(ds.chunks(inner)))
                    {
                        for (((o, &yv), &dv), &s) in xr.iter_mut().zip(yr).zip(dr).zip(&dot) {
                            *o = dx_of(yv, dv, s);
                        }
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

#[cfg(test)]
mod tests {
    use super::Real;

    #[test]
    fn exp_lanes_matches_exp() {
        exp_matches::<false>();
        exp_matches::<true>();
    }

    /// Within one ulp of the correctly rounded f32::exp (denormals: one denormal step), fused
    /// multiply-adds or not.
    fn exp_matches<const FMA: bool>() {
        let close = |x: f32| {
            let (ours, std) = (x.exp_lanes::<FMA>(), x.exp());
            let ulp = if std.is_finite() {
                (f32::from_bits(std.to_bits() + 1) - std).max(f32::from_bits(1))
            } else {
                0.0
            };
            assert!(
                ours == std || (ours - std).abs() <= ulp,
                "{x}: {ours} vs {std} (FMA {FMA})"
            );
        };
        let mut x = -110.0f32;
        while x < 95.0 {
            close(x);
            x += 0.000_731;
        }
        for x in [
            88.72f32, 88.73, -87.3, -103.9, -104.0, 0.0, -0.0, 1e-30, -1e-30,
        ] {
            close(x);
        }
        assert_eq!(f32::NEG_INFINITY.exp_lanes::<FMA>(), 0.0);
        assert_eq!(f32::INFINITY.exp_lanes::<FMA>(), f32::INFINITY);
        assert!(f32::NAN.exp_lanes::<FMA>().is_nan());
    }
}
