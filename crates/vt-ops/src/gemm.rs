//! The strided GEMM call the CPU convolution kernels share (`gemm`, the crate candle itself
//! runs on), with its bounds checks; the tile loop that runs them serially or in parallel; and
//! the per-thread scratch buffers the tiles reuse.

use rayon::prelude::*;
use std::cell::RefCell;

/// The element types the kernels run on.
pub(crate) trait Float: candle_core::WithDType + Default + std::ops::AddAssign {
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
