//! Direct stride-1 "same" convolution (odd k, padding (k−1)/2, no dilation, one group) on a
//! zero-padded, flattened grid, for [`crate::conv`]: no column matrix and no GEMM packing.
//!
//! Each sample's planes are copied once onto a grid `(H+k−1) × (W+k−1)` with zeros around
//! them. Counting output positions `p` on that grid's width too, tap `(c, ky, kx)` of output
//! `p` reads grid element `p + off(c, ky, kx)`, so 16 consecutive outputs read 16 consecutive
//! inputs under every tap, whichever rows they lie on. The k−1 padding columns of each output
//! row are computed and dropped: `(W+k−1)/W` of the useful work, instead of im2col's k-fold
//! copy of the input and the GEMM's packing of it (a fifth of a 28 px train step).
//!
//! * forward: a register tile of 16 positions × 4 output channels (32 × 4 where AVX-512VL
//!   gives 32 registers), one multiply-add per tap and channel (a GEMM microkernel reading the
//!   grid in place);
//! * input gradient: this forward with the transposed kernels rotated by 180° (conv.rs's
//!   transposed convolution, which takes this kernel wherever the forward does);
//! * weight gradient: `dW[o, (c, t)] = Σ_n Σ_p dY[n, o, p] · X̃[n, p + off(c, t)]`, dot
//!   products in tiles of 4 output channels × 3 taps, with `dY` on the grid (zeros in its
//!   padding columns).
//!
//! The tiles have an AVX2 + FMA build for f32 (the forward tile also an AVX-512VL one),
//! chosen at run time, and a portable one.

use crate::gemm::{scratch, sum_parts, Float, Scratch};
use rayon::prelude::*;

/// Output positions × output channels of a forward tile: eight accumulators, two vector loads
/// and four broadcasts per tap. 24 × 4 needs 17 vector registers (it spilled one to the stack);
/// 16 × 6 ran as fast, but computes 18 channels where the models have 16 or 32.
const MR: usize = 16;
const NR: usize = 4;
/// The tile's positions where the CPU has AVX-512VL: the same 256-bit code then has 32
/// registers, room for 32 × 4 (sixteen accumulators, four loads and four broadcasts per tap)
/// without a spill. 16 × 8 there ran no faster than 16 × 4.
const MR_WIDE: usize = 32;
/// Output channels × taps per weight-gradient tile, and its vector width.
const DO: usize = 4;
const DK: usize = 3;
const DL: usize = 8;

/// Sizes of one stride-1 "same" convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SameConv {
    pub n: usize,
    pub c: usize,
    pub o: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
}

/// The tile kernels, per element type.
pub(crate) trait SameConvFloat: Float {
    /// Output positions of one forward tile on this CPU: [`MR`] or [`MR_WIDE`].
    fn tile_width() -> usize {
        MR
    }
    /// `out[j·ld + i] = Σ_q w[q·NR + j] · x[off[q] + i]` for `i < tile_width()`, `j < NR`.
    fn tile_forward(x: &[Self], off: &[usize], w: &[Self], out: &mut [Self], ld: usize) {
        tile_forward_portable(x, off, w, out, ld)
    }
    /// `Σ_{p < len} dy[r·ld + p] · x[off[t] + p]` for `r < DO`, `t < DK`.
    fn tile_dots(
        dy: &[Self],
        ld: usize,
        x: &[Self],
        off: [usize; DK],
        len: usize,
    ) -> [[Self; DK]; DO] {
        tile_dots_portable(dy, ld, x, off, len)
    }
}

impl SameConvFloat for f64 {}

impl SameConvFloat for f32 {
    fn tile_width() -> usize {
        #[cfg(target_arch = "x86_64")]
        if avx512vl() {
            return MR_WIDE;
        }
        MR
    }

    fn tile_forward(x: &[f32], off: &[usize], w: &[f32], out: &mut [f32], ld: usize) {
        #[cfg(target_arch = "x86_64")]
        if avx512vl() {
            check_forward(x, off, w, out, ld, MR_WIDE);
            // SAFETY: the CPU has AVX-512F/VL (so AVX2 and FMA), and `check_forward` proved
            // every read and write in bounds.
            return unsafe { avx2::tile_forward_wide(x, off, w, out, ld) };
        }
        #[cfg(target_arch = "x86_64")]
        if avx2_fma() {
            check_forward(x, off, w, out, ld, MR);
            // SAFETY: the CPU has AVX2 and FMA, and `check_forward` proved every read and write
            // in bounds.
            return unsafe { avx2::tile_forward(x, off, w, out, ld) };
        }
        tile_forward_portable(x, off, w, out, ld)
    }

    fn tile_dots(
        dy: &[f32],
        ld: usize,
        x: &[f32],
        off: [usize; DK],
        len: usize,
    ) -> [[f32; DK]; DO] {
        #[cfg(target_arch = "x86_64")]
        if avx2_fma() && len.is_multiple_of(DL) {
            check_dots(dy, ld, x, &off, len);
            // SAFETY: as above, with `check_dots`.
            return unsafe { avx2::tile_dots(dy, ld, x, off, len) };
        }
        tile_dots_portable(dy, ld, x, off, len)
    }
}

/// Whether this CPU runs the AVX2 + FMA tiles (std caches the detection).
#[cfg(target_arch = "x86_64")]
fn avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Whether this CPU runs the wide forward tile: AVX-512F and VL (32 vector registers), with
/// AVX2 and FMA, unless [`crate::wide_tile`] says no.
#[cfg(target_arch = "x86_64")]
fn avx512vl() -> bool {
    avx2_fma()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && crate::wide_tile()
}

/// The offsets ascend (they follow the grid), so the last is the largest.
fn check_forward<T>(x: &[T], off: &[usize], w: &[T], out: &[T], ld: usize, mr: usize) {
    let max_off = off.last().copied().unwrap_or(0);
    assert!(
        max_off + mr <= x.len() && w.len() >= off.len() * NR && (NR - 1) * ld + mr <= out.len(),
        "same-conv forward tile out of bounds"
    );
}

fn check_dots<T>(dy: &[T], ld: usize, x: &[T], off: &[usize; DK], len: usize) {
    let max_off = off.iter().copied().max().unwrap_or(0);
    assert!(
        max_off + len <= x.len() && (DO - 1) * ld + len <= dy.len(),
        "same-conv weight-gradient tile out of bounds"
    );
}

fn tile_forward_portable<T: Float>(x: &[T], off: &[usize], w: &[T], out: &mut [T], ld: usize) {
    let mut acc = [[T::default(); MR]; NR];
    for (&o, wq) in off.iter().zip(w.chunks_exact(NR)) {
        let xs = &x[o..o + MR];
        for (a, &wj) in acc.iter_mut().zip(wq) {
            for (a, &xi) in a.iter_mut().zip(xs) {
                *a += wj * xi;
            }
        }
    }
    for (j, a) in acc.iter().enumerate() {
        out[j * ld..j * ld + MR].copy_from_slice(a);
    }
}

fn tile_dots_portable<T: Float>(
    dy: &[T],
    ld: usize,
    x: &[T],
    off: [usize; DK],
    len: usize,
) -> [[T; DK]; DO] {
    let mut acc = [[T::default(); DK]; DO];
    for (r, a) in acc.iter_mut().enumerate() {
        let d = &dy[r * ld..r * ld + len];
        for (a, &o) in a.iter_mut().zip(&off) {
            *a = d
                .iter()
                .zip(&x[o..o + len])
                .fold(T::default(), |s, (&u, &v)| s + u * v);
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{DK, DL, DO, MR, MR_WIDE, NR};
    use std::arch::x86_64::*;

    /// [`super::SameConvFloat::tile_forward`]; the caller checked the bounds.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_forward(
        x: &[f32],
        off: &[usize],
        w: &[f32],
        out: &mut [f32],
        ld: usize,
    ) {
        tile::<{ MR / 8 }>(x, off, w, out, ld)
    }

    /// The [`MR_WIDE`]-position tile: the same code compiled with AVX-512VL's 32 registers.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    pub(super) unsafe fn tile_forward_wide(
        x: &[f32],
        off: &[usize],
        w: &[f32],
        out: &mut [f32],
        ld: usize,
    ) {
        tile::<{ MR_WIDE / 8 }>(x, off, w, out, ld)
    }

    /// `8·V` positions × [`NR`] channels; inlined into each build above.
    #[inline(always)]
    unsafe fn tile<const V: usize>(
        x: &[f32],
        off: &[usize],
        w: &[f32],
        out: &mut [f32],
        ld: usize,
    ) {
        const { assert!(MR.is_multiple_of(8) && MR_WIDE.is_multiple_of(8)) };
        let (x, w, out) = (x.as_ptr(), w.as_ptr(), out.as_mut_ptr());
        let mut acc = [[_mm256_setzero_ps(); V]; NR];
        for (q, &o) in off.iter().enumerate() {
            // plain loops, not closures: a closure would not inherit the target features
            let mut a = [_mm256_setzero_ps(); V];
            for (v, a) in a.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(x.add(o + 8 * v));
            }
            let wq = w.add(q * NR);
            for (j, acc) in acc.iter_mut().enumerate() {
                let b = _mm256_broadcast_ss(&*wq.add(j));
                for v in 0..V {
                    acc[v] = _mm256_fmadd_ps(a[v], b, acc[v]);
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            for (v, &a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add(j * ld + 8 * v), a);
            }
        }
    }

    /// [`super::SameConvFloat::tile_dots`]; `len` is a multiple of 8 and the caller checked
    /// the bounds.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_dots(
        dy: &[f32],
        ld: usize,
        x: &[f32],
        off: [usize; DK],
        len: usize,
    ) -> [[f32; DK]; DO] {
        let (dy, x) = (dy.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); DO * DK];
        let mut p = 0;
        while p < len {
            let mut xs = [_mm256_setzero_ps(); DK];
            for (t, xs) in xs.iter_mut().enumerate() {
                *xs = _mm256_loadu_ps(x.add(off[t] + p));
            }
            for r in 0..DO {
                let d = _mm256_loadu_ps(dy.add(r * ld + p));
                for t in 0..DK {
                    acc[r * DK + t] = _mm256_fmadd_ps(d, xs[t], acc[r * DK + t]);
                }
            }
            p += DL;
        }
        let mut sums = [[0f32; DK]; DO];
        for r in 0..DO {
            for t in 0..DK {
                let v = acc[r * DK + t];
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
                sums[r][t] = _mm_cvtss_f32(s);
            }
        }
        sums
    }
}

impl SameConv {
    /// Width of the padded grid.
    fn gw(&self) -> usize {
        self.w + self.k - 1
    }
    /// Elements of one padded plane.
    fn plane(&self) -> usize {
        (self.h + self.k - 1) * self.gw()
    }
    /// Output positions counted on the grid: `H` rows of the grid's width.
    fn lg(&self) -> usize {
        self.h * self.gw()
    }
    /// Taps per output channel: `C·k²`.
    fn taps(&self) -> usize {
        self.c * self.k * self.k
    }
    /// Grid offset of each tap `(c, ky, kx)`, in the weight's order.
    fn offsets(&self) -> Vec<usize> {
        let (k, gw, plane) = (self.k, self.gw(), self.plane());
        (0..self.c)
            .flat_map(|c| (0..k * k).map(move |t| c * plane + (t / k) * gw + t % k))
            .collect()
    }
    /// Length of a sample's padded input: the planes plus room for the last tile's overrun.
    fn grid_len(&self) -> usize {
        self.c * self.plane() + MR.max(MR_WIDE).max(DL) + self.k
    }

    /// Copies one sample `(C, H, W)` onto its zero-padded grid in `buf`.
    fn pad_into<'a, T: Float>(&self, x: &[T], buf: &'a mut Vec<T>) -> &'a [T] {
        let (h, w, gw, r) = (self.h, self.w, self.gw(), self.k / 2);
        let grid = scratch(buf, self.grid_len());
        let (planes, tail) = grid.split_at_mut(self.c * self.plane());
        tail.fill(T::default());
        for (plane, src) in planes
            .chunks_exact_mut(self.plane())
            .zip(x.chunks_exact(h * w))
        {
            plane[..r * gw + r].fill(T::default());
            for (y, line) in src.chunks_exact(w).enumerate() {
                let at = (y + r) * gw + r;
                plane[at..at + w].copy_from_slice(line);
                // the right padding of this row and the left padding of the next
                let end = (at + gw).min(plane.len());
                plane[at + w..end].fill(T::default());
            }
            plane[(h + r) * gw + r..].fill(T::default());
        }
        grid
    }

    /// The weight `(O, C, k, k)` in panels of `NR` output channels: `[panel][tap][j]`, zeros
    /// past the last channel.
    fn pack<T: Float>(&self, wt: &[T]) -> Vec<T> {
        let kc = self.taps();
        let panels = self.o.div_ceil(NR);
        let mut out = vec![T::default(); panels * kc * NR];
        for (oc, row) in wt.chunks_exact(kc).enumerate() {
            let (p, j) = (oc / NR, oc % NR);
            for (q, &v) in row.iter().enumerate() {
                out[(p * kc + q) * NR + j] = v;
            }
        }
        out
    }

    /// `y = conv(x, w)`, `x (N, C, H, W)`, `w (O, C, k, k)`.
    pub fn forward<T: SameConvFloat>(&self, x: &[T], wt: &[T]) -> Vec<T> {
        let (c, o, h, w, gw) = (self.c, self.o, self.h, self.w, self.gw());
        let (hw, kc) = (h * w, self.taps());
        let packed = self.pack(wt);
        let off = self.offsets();
        let mr = T::tile_width();
        let blocks = self.lg().div_ceil(mr);
        let ld = blocks * mr;
        let panels = o.div_ceil(NR);
        // a sample's panels are split between jobs when the batch alone cannot feed the threads
        let threads = rayon::current_num_threads();
        let split = (2 * threads).div_ceil(self.n.max(1)).clamp(1, panels);
        let per_job = panels.div_ceil(split) * NR;
        let mut y = crate::output_vec(self.n * o * hw);
        let run = |(s, o0, y_job): (usize, usize, &mut [T]),
                   Scratch(grid, tile): &mut Scratch<T>| {
            let xg = self.pad_into(&x[s * c * hw..(s + 1) * c * hw], grid);
            let tile = scratch(tile, NR * ld);
            for (pi, y_panel) in y_job.chunks_mut(NR * hw).enumerate() {
                let panel = &packed[(o0 / NR + pi) * kc * NR..][..kc * NR];
                for b in 0..blocks {
                    T::tile_forward(&xg[b * mr..], &off, panel, &mut tile[b * mr..], ld);
                }
                for (j, plane) in y_panel.chunks_exact_mut(hw).enumerate() {
                    for (yy, line) in plane.chunks_exact_mut(w).enumerate() {
                        line.copy_from_slice(&tile[j * ld + yy * gw..][..w]);
                    }
                }
            }
        };
        // jobs are (sample, run of panels): chunks of each sample's output
        y.par_chunks_mut(o * hw)
            .enumerate()
            .flat_map(|(s, ys)| {
                ys.par_chunks_mut(per_job * hw)
                    .enumerate()
                    .map(move |(j, y_job)| (s, j * per_job, y_job))
            })
            .for_each_init(Scratch::default, |buffers, job| run(job, buffers));
        y
    }

    /// `dW (O, C, k, k)` of `dY (N, O, H, W)` against `x (N, C, H, W)`.
    pub fn weight_grad<T: SameConvFloat>(&self, x: &[T], dy: &[T]) -> Vec<T> {
        let (c, o, h, w, gw) = (self.c, self.o, self.h, self.w, self.gw());
        let (hw, kc) = (h * w, self.taps());
        let off = self.offsets();
        // the dot length: the grid's output positions, rounded up to whole vectors
        let len = self.lg().div_ceil(DL) * DL;
        let rows = o.div_ceil(DO) * DO;
        let parts = rayon::current_num_threads().min(self.n).max(1);
        let part = |pi: usize| {
            let mut acc = vec![T::default(); o * kc];
            let mut buffers = Scratch::<T>::default();
            let Scratch(grid, dyg) = &mut buffers;
            for s in (pi * self.n / parts)..((pi + 1) * self.n / parts) {
                let xg = self.pad_into(&x[s * c * hw..(s + 1) * c * hw], grid);
                // dY on the grid's width, zeros in the padding columns and past the end; each
                // element written once instead of zeroed and then copied
                let dyg = scratch(dyg, rows * len);
                let (dyg_rows, dyg_pad) = dyg.split_at_mut(o * len);
                dyg_pad.fill(T::default());
                for (row, plane) in dyg_rows
                    .chunks_exact_mut(len)
                    .zip(dy[s * o * hw..(s + 1) * o * hw].chunks_exact(hw))
                {
                    let (lines, tail) = row.split_at_mut(h * gw);
                    tail.fill(T::default());
                    for (grid_line, line) in lines.chunks_exact_mut(gw).zip(plane.chunks_exact(w)) {
                        grid_line[..w].copy_from_slice(line);
                        grid_line[w..].fill(T::default());
                    }
                }
                for r0 in (0..o).step_by(DO) {
                    for t0 in (0..kc).step_by(DK) {
                        let taps = std::array::from_fn(|t| off[(t0 + t).min(kc - 1)]);
                        let d = T::tile_dots(&dyg[r0 * len..], len, xg, taps, len);
                        for (r, sums) in d.iter().enumerate().take(o - r0) {
                            let row = &mut acc[(r0 + r) * kc..][..kc];
                            for (t, &v) in sums.iter().enumerate().take(kc - t0) {
                                row[t0 + t] += v;
                            }
                        }
                    }
                }
            }
            acc
        };
        sum_parts((0..parts).into_par_iter().map(part).collect())
    }
}
