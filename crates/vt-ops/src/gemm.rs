//! The strided GEMM call the CPU convolution kernels share (`gemm`, the crate candle itself
//! runs on), with its bounds checks; a register-blocked kernel for products too small for it
//! (the attention's); the tile loop that runs them serially or in parallel; and the per-thread
//! scratch buffers the tiles reuse.

use rayon::prelude::*;
use std::cell::RefCell;

/// The element types the kernels run on.
pub(crate) trait Float:
    candle_core::WithDType + Default + std::ops::AddAssign + num_traits::Float
{
    const ONE: Self;
    /// Runs `f` on this thread's pool of spare scratch buffers of this type.
    fn with_pool<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R;
}

thread_local! {
    static POOL_F32: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    static POOL_F64: RefCell<Vec<Vec<f64>>> = const { RefCell::new(Vec::new()) };
}

impl Float for f32 {
    const ONE: Self = 1.0;
    fn with_pool<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R {
        POOL_F32.with(|p| f(&mut p.borrow_mut()))
    }
}

impl Float for f64 {
    const ONE: Self = 1.0;
    fn with_pool<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R {
        POOL_F64.with(|p| f(&mut p.borrow_mut()))
    }
}

/// Spare buffers a thread keeps per type (two per tile job; a few jobs may nest).
const POOL_KEEP: usize = 4;

/// Two scratch buffers of a tile job, taken from the running thread's pool and given back
/// when the job ends, so a steady-state step neither allocates (nor faults in fresh pages for)
/// its column matrices nor zeroes them: every kernel writes all of a buffer it reads.
pub(crate) struct Scratch<T: Float>(pub Vec<T>, pub Vec<T>);

impl<T: Float> Default for Scratch<T> {
    fn default() -> Self {
        T::with_pool(|p| Self(p.pop().unwrap_or_default(), p.pop().unwrap_or_default()))
    }
}

impl<T: Float> Drop for Scratch<T> {
    fn drop(&mut self) {
        let (a, b) = (std::mem::take(&mut self.0), std::mem::take(&mut self.1));
        T::with_pool(|p| {
            for v in [a, b] {
                if p.len() < POOL_KEEP {
                    p.push(v);
                }
            }
        });
    }
}

/// The first `n` elements of `v`, grown (and only the growth zeroed) when it is shorter; the
/// caller overwrites them.
pub(crate) fn scratch<T: Float>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}

/// The element-wise sum of the per-thread partial results of a reduction (at least one).
pub(crate) fn sum_parts<T: Float>(mut parts: Vec<Vec<T>>) -> Vec<T> {
    let mut sum = parts.swap_remove(0);
    for p in parts {
        for (a, b) in sum.iter_mut().zip(p) {
            *a += b;
        }
    }
    sum
}

/// A strided matrix over a slice: element `(i, j)` at `data[i·rs + j·cs]`.
pub(crate) struct View<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

/// `dst (m×n) += lhs (m×k) · rhs (k×n)`, or `=` when `!acc` (then `dst` may hold anything);
/// `dst` is row-major with row stride `dst_rs`.
/// Bounds are checked here, so the call into `gemm` reads and writes only inside the slices.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_acc<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_rs: usize,
    lhs: View<T>,
    rhs: View<T>,
    acc: bool,
    threads: usize,
) {
    let fits = |len: usize, rows: usize, cols: usize, rs: usize, cs: usize| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
    };
    assert!(
        fits(dst.len(), m, n, dst_rs, 1)
            && fits(lhs.data.len(), m, k, lhs.rs, lhs.cs)
            && fits(rhs.data.len(), k, n, rhs.rs, rhs.cs),
        "conv gemm: view out of bounds ({m}x{n}x{k})"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // an empty sum: `=` still has to write the zeros its caller relies on
        if !acc {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(T::default());
            }
        }
        return;
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every element the three views address lies inside its slice (checked above),
    // and `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            acc,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `C = A·B` for small products (the VT modules' per-head attention, depth 4-16), where a
/// call into the `gemm` crate costs more than the arithmetic: `C (rows × n)` and `B (depth × n)` row-major with rows of `n`, `A[r, t]` read
/// at `a.data[r·rs + t·cs]` (so `A` may be a transposed operand). Blocks of 4 rows × 16 (then
/// 8) columns keep their sums in registers over the whole depth; the few columns past the
/// last block of 8 are summed one by one. AVX2 + FMA where the CPU has them (checked once).
pub(crate) fn small_gemm<T: Float>(c: &mut [T], n: usize, a: Strided<T>, b: &[T], depth: usize) {
    #[cfg(target_arch = "x86_64")]
    if wide_lanes() {
        // SAFETY: `wide_lanes` checked that this CPU has AVX2 and FMA
        return unsafe { small_gemm_avx2(c, n, a, b, depth) };
    }
    small_gemm_in::<T, false>(c, n, a, b, depth)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn small_gemm_avx2<T: Float>(c: &mut [T], n: usize, a: Strided<T>, b: &[T], depth: usize) {
    small_gemm_in::<T, true>(c, n, a, b, depth)
}

/// Whether this CPU has AVX2 and FMA (detected once; std caches it).
pub(crate) fn wide_lanes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`small_gemm`]'s body; `FMA` fuses each multiply-add (a libm call where the CPU has no FMA).
#[inline(always)]
fn small_gemm_in<T: Float, const FMA: bool>(
    c: &mut [T],
    n: usize,
    a: Strided<T>,
    b: &[T],
    depth: usize,
) {
    let rows = c.len() / n;
    if rows == 0 || depth == 0 {
        c.fill(T::zero());
        return;
    }
    // the blocks index without bounds checks: every index they form is below these
    assert!(
        c.len() == rows * n
            && b.len() >= depth * n
            && a.data.len() > (rows - 1) * a.rs + (depth - 1) * a.cs,
        "small_gemm: operands too short for {rows} × {n} × {depth}"
    );
    let (wide, narrow) = (n / 16 * 16, n / 8 * 8);
    let mut r = 0;
    while r + 4 <= rows {
        block::<T, 4, 16, FMA>(c, r, n, 0, wide, a, b, depth);
        block::<T, 4, 8, FMA>(c, r, n, wide, narrow, a, b, depth);
        r += 4;
    }
    for r in r..rows {
        block::<T, 1, 16, FMA>(c, r, n, 0, wide, a, b, depth);
        block::<T, 1, 8, FMA>(c, r, n, wide, narrow, a, b, depth);
    }
    for r in 0..rows {
        for j in narrow..n {
            let mut s = T::zero();
            for t in 0..depth {
                s = madd::<T, FMA>(a.at(r, t), b[t * n + j], s);
            }
            c[r * n + j] = s;
        }
    }
}

/// Rows `r0..r0 + R`, columns `j0..j1` (a multiple of `W` long) of [`small_gemm`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<T: Float, const R: usize, const W: usize, const FMA: bool>(
    c: &mut [T],
    r0: usize,
    n: usize,
    j0: usize,
    j1: usize,
    a: Strided<T>,
    b: &[T],
    depth: usize,
) {
    for j in (j0..j1).step_by(W) {
        let mut acc = [[T::zero(); W]; R];
        for t in 0..depth {
            // SAFETY: j + W ≤ n and t < depth, so t·n + j + W ≤ depth·n ≤ b.len() (asserted
            // by `small_gemm`)
            let bv: &[T; W] = unsafe { &*(b.as_ptr().add(t * n + j) as *const [T; W]) };
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r0 + i < rows and t < depth (asserted by `small_gemm`)
                let av = unsafe { *a.data.get_unchecked((r0 + i) * a.rs + t * a.cs) };
                for (s, &x) in acc.iter_mut().zip(bv) {
                    *s = madd::<T, FMA>(av, x, *s);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            c[(r0 + i) * n + j..][..W].copy_from_slice(acc);
        }
    }
}

/// `C = A·Bᵀ` for products along a long depth, where [`small_gemm`] would need `B` transposed
/// and runs half-empty blocks for fewer than 16 columns (the attention's few tokens against
/// many pixels): `A (rows × depth)`, `B (cols × depth)` and `C (rows × cols)`, all row-major.
/// Each element is a dot product summed in eight lanes; blocks of 4 rows × 2 columns share
/// their loads. AVX2 + FMA where the CPU has them (checked once).
pub(crate) fn small_gemm_nt<T: Float>(c: &mut [T], a: &[T], b: &[T], depth: usize) {
    #[cfg(target_arch = "x86_64")]
    if wide_lanes() {
        // SAFETY: `wide_lanes` checked that this CPU has AVX2 and FMA
        return unsafe { small_gemm_nt_avx2(c, a, b, depth) };
    }
    small_gemm_nt_in::<T, false>(c, a, b, depth)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn small_gemm_nt_avx2<T: Float>(c: &mut [T], a: &[T], b: &[T], depth: usize) {
    small_gemm_nt_in::<T, true>(c, a, b, depth)
}

#[inline(always)]
fn small_gemm_nt_in<T: Float, const FMA: bool>(c: &mut [T], a: &[T], b: &[T], depth: usize) {
    if depth == 0 {
        c.fill(T::zero());
        return;
    }
    let (rows, cols) = (a.len() / depth, b.len() / depth);
    assert!(
        c.len() == rows * cols && a.len() == rows * depth && b.len() == cols * depth,
        "small_gemm_nt: {} × {} from {} and {} at depth {depth}",
        rows,
        cols,
        a.len(),
        b.len()
    );
    let mut r = 0;
    while r + 4 <= rows {
        let mut j = 0;
        while j + 2 <= cols {
            dots::<T, 4, 2, FMA>(c, (r, j), cols, a, b, depth);
            j += 2;
        }
        if j < cols {
            dots::<T, 4, 1, FMA>(c, (r, j), cols, a, b, depth);
        }
        r += 4;
    }
    for r in r..rows {
        for j in 0..cols {
            dots::<T, 1, 1, FMA>(c, (r, j), cols, a, b, depth);
        }
    }
}

/// Rows `r0..r0 + R` × columns `j0..j0 + C` of [`small_gemm_nt`].
#[inline(always)]
fn dots<T: Float, const R: usize, const C: usize, const FMA: bool>(
    c: &mut [T],
    (r0, j0): (usize, usize),
    cols: usize,
    a: &[T],
    b: &[T],
    depth: usize,
) {
    const L: usize = 8;
    let mut acc = [[[T::zero(); L]; C]; R];
    let full = depth / L * L;
    let (ar, br) = (&a[r0 * depth..][..R * depth], &b[j0 * depth..][..C * depth]);
    for t in (0..full).step_by(L) {
        let bv: [&[T]; C] = std::array::from_fn(|j| &br[j * depth + t..][..L]);
        for (i, acc) in acc.iter_mut().enumerate() {
            let av = &ar[i * depth + t..][..L];
            for (acc, bv) in acc.iter_mut().zip(&bv) {
                for l in 0..L {
                    acc[l] = madd::<T, FMA>(av[l], bv[l], acc[l]);
                }
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for (j, acc) in acc.iter().enumerate() {
            let (ai, bj) = (&ar[i * depth..][..depth], &br[j * depth..][..depth]);
            let mut s = sum_lanes(acc);
            for t in full..depth {
                s = madd::<T, FMA>(ai[t], bj[t], s);
            }
            c[(r0 + i) * cols + j0 + j] = s;
        }
    }
}

/// The sum of eight lane accumulators, pairwise.
#[inline(always)]
pub(crate) fn sum_lanes<T: Float>(acc: &[T; 8]) -> T {
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `a·b + s`, fused or not.
#[inline(always)]
pub(crate) fn madd<T: Float, const FMA: bool>(a: T, b: T, s: T) -> T {
    if FMA {
        a.mul_add(b, s)
    } else {
        s + a * b
    }
}

/// The left operand of [`small_gemm`]: element `(r, t)` at `data[r·rs + t·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<T: Copy> Strided<'_, T> {
    #[inline(always)]
    fn at(&self, r: usize, t: usize) -> T {
        self.data[r * self.rs + t * self.cs]
    }
}

/// Runs `run((tile index, tile), scratch)` over the `chunk`-sized tiles of `out`: in parallel
/// when `outer` (one pair of scratch buffers per rayon job), else in order.
pub(crate) fn for_each_tile<T: Send, S: Default + Send>(
    out: &mut [T],
    chunk: usize,
    outer: bool,
    run: impl Fn((usize, &mut [T]), &mut S) + Sync,
) {
    if outer {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each_init(S::default, |scratch, item| run(item, scratch));
    } else {
        let mut scratch = S::default();
        out.chunks_mut(chunk)
            .enumerate()
            .for_each(|item| run(item, &mut scratch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`small_gemm_nt`] against the plain sum, over every block remainder: rows around 4,
    /// columns around 2, depths around the eight lanes, in f32 and f64.
    #[test]
    fn small_gemm_nt_equals_the_plain_sum() {
        fn check<T: Float>(tol: f64) {
            let mut rng = crate::Rng::new(11);
            for rows in [1, 3, 4, 5, 9] {
                for cols in [1, 2, 3, 8, 16] {
                    for depth in [0, 1, 7, 8, 9, 33, 196] {
                        let mut v = |n| -> Vec<T> {
                            rng.normal_vec(n, 0.0, 1.0)
                                .iter()
                                .map(|&x| T::from_f64(x as f64))
                                .collect()
                        };
                        let (a, b) = (v(rows * depth), v(cols * depth));
                        let mut c = vec![T::from_f64(f64::NAN); rows * cols];
                        small_gemm_nt(&mut c, &a, &b, depth);
                        for r in 0..rows {
                            for j in 0..cols {
                                let want: f64 = (0..depth)
                                    .map(|t| a[r * depth + t].to_f64() * b[j * depth + t].to_f64())
                                    .sum();
                                let got = c[r * cols + j].to_f64();
                                assert!(
                                    (got - want).abs() <= tol * (1.0 + want.abs()),
                                    "{rows}×{cols}×{depth} at ({r}, {j}): {got} against {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
        check::<f32>(1e-5);
        check::<f64>(1e-12);
    }
}
