//! # vt-ops
//!
//! Tensor ops and leaf layers that candle lacks or does without a gradient, for the Visual
//! Transformer models of vt. Each op has a forward and a backward, checked by finite
//! differences ([`gradcheck`]). Depends only on candle; every other vt crate builds on it.
//!
//! * [`pool`]: max / average pooling with padding and overlapping windows (one op on the CPU);
//! * [`residual`]: `relu(a + b)`, the residual tail, as one CPU op;
//! * [`resize`]: bilinear (PyTorch, `align_corners=False`) and nearest resize, adaptive pooling;
//! * [`softmax`]: softmax / log-softmax along any axis;
//! * [`attention`]: multi-head attention weights (optionally with a bias per key) and pooling
//!   on channel-major maps (one op each on the CPU);
//! * [`batch_norm`]: fused CPU batch norm (train mode, optionally + ReLU) with its backward;
//! * [`conv`]: CPU convolution as one op (tiled im2col + GEMM, columns recomputed in the
//!   backward; a direct kernel for stride-1 "same" windows on small channel counts);
//! * [`nn`]: conv2d, grouped 1x1 conv (and its transpose), linear, batch norm; [`group_norm`]:
//!   group norm;
//! * [`conv2d_interleaved`]: conv2d of `L` maps stored interleaved, `(N, C, H, W, L)` (one op on
//!   the CPU), the position encoder's conv of the token coefficients;
//! * [`stochastic`]: dropout and drop-path;
//! * [`store`]: seeded initialisation and checked weight loading (one error lists every bad key);
//! * [`rng`]: the seeded generator and the mask source of stochastic layers;
//! * [`collective`]: the ranks of a data-parallel run (`ProcessGroup`), a differentiable
//!   all-reduce, synchronised batch norm;
//! * [`cost`]: MAC and parameter accounting;
//! * [`in_thread_pool`]: runs a step on the thread pool the CPU kernels split their work over;
//! * [`mutate`]: seeded byte mutations of files, for the readers' robustness tests.

pub mod attention;
mod attention_cpu;
pub mod batch_norm;
pub mod bias;
pub mod collective;
pub mod conv;
mod conv1x1;
pub mod cost;
mod gemm;
pub mod gradcheck;
pub mod group_norm;
mod group_norm_cpu;
mod im2col;
mod interleaved_conv;
pub mod mutate;
mod nearest;
pub mod nn;
pub mod pool;
pub mod residual;
pub mod resize;
pub mod rng;
mod same_conv;
pub mod softmax;
mod softmax_cpu;
pub mod stochastic;
pub mod store;

pub use attention::{attend, attention_weights, attention_weights_with_key_bias};
pub use collective::{Group, ProcessGroup, SingleProcess};
pub use cost::{Cost, CostBreakdown};
pub use group_norm::GroupNorm;
pub use interleaved_conv::conv2d_interleaved;
pub use nn::{BatchNorm, Conv1x1, Conv2d, Conv2dConfig, Linear};
pub use rng::{NoiseSource, Rng};
pub use softmax::{log_softmax, scaled_softmax, softmax};
pub use stochastic::{DropPath, Dropout};
pub use store::VarStore;

/// The one place that chooses between vt's CPU kernels (conv2d, fused batch norm, max pooling)
/// and candle's own ops: vt's on the CPU, candle's on other devices. Setting the
/// environment variable `VT_CPU_KERNELS=candle` selects candle's ops on the CPU too (for
/// comparisons such as `cargo xtask bench-peer`); `VT_CPU_KERNELS=im2col` keeps vt's kernels
/// but runs every convolution as im2col + GEMM, without the direct kernel of small stride-1
/// convolutions (to measure what that kernel gains); `VT_CPU_KERNELS=narrow_tile` keeps that
/// kernel's 16-position forward tile on CPUs with AVX-512VL, where it takes a 32-position one.
pub fn cpu_kernels(device: &candle_core::Device) -> bool {
    device.is_cpu() && kernel_choice() != "candle"
}

/// Runs `f` on a thread of rayon's global pool and returns its result: the pool that vt's CPU
/// kernels and candle's GEMMs split their work over. A parallel op called from a thread outside
/// the pool hands its work to the pool and sleeps until it is done, two thread wake-ups per
/// op; called from a pool thread it does a share itself while the others steal the rest. A
/// train step is hundreds of such ops, so runs call their steps through this (measured:
/// `cargo xtask bench-peer --interleave ... --env-ab VT_CPU_POOL=caller`).
///
/// The first call builds the global pool, with [`POOL_STACK`]-byte stacks (candle's backward
/// walks and drops the graph recursively, deeper than a default 2 MiB thread stack allows on
/// the deepest models). Where the pool already exists (built elsewhere, with unknown stacks) or
/// `VT_CPU_POOL=caller` is set, `f` runs on the calling thread, as before. Calls from several
/// threads at once share the pool: a pool thread waiting inside one call's op may run another
/// call's whole closure before it returns to its own, so closures must not wait on each other.
pub fn in_thread_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static OURS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ours = *OURS.get_or_init(|| {
        std::env::var("VT_CPU_POOL").as_deref() != Ok("caller")
            && rayon::ThreadPoolBuilder::new()
                .stack_size(POOL_STACK)
                .build_global()
                .is_ok()
    });
    match ours && rayon::current_thread_index().is_none() {
        true => rayon::scope(|_| f()),
        false => f(),
    }
}

/// The stack of each thread of the global pool [`in_thread_pool`] builds (address space; only
/// the pages used are backed).
pub const POOL_STACK: usize = 64 << 20;

/// Whether vt's CPU convolution may use its direct kernel ([`conv`]).
pub(crate) fn direct_conv() -> bool {
    kernel_choice() != "im2col"
}

/// Whether the direct kernel may take its wide forward tile where the CPU has one.
pub(crate) fn wide_tile() -> bool {
    kernel_choice() != "narrow_tile"
}

fn kernel_choice() -> &'static str {
    static CHOICE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CHOICE.get_or_init(|| std::env::var("VT_CPU_KERNELS").unwrap_or_default())
}

/// The data of a contiguous CPU tensor, for the kernels; `what` names the operand in the error.
pub(crate) fn contiguous_data<'a, T>(
    v: &'a [T],
    layout: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what} needs a contiguous input"),
    }
}

/// A vector of `n` elements that the calling kernel overwrites entirely before anything reads
/// it, allocated without zeroing: a reused allocation would otherwise be cleared first, and the
/// clearing of every activation and gradient was 4-8 % of a small-image train step (memset).
pub(crate) fn output_vec<T: candle_core::WithDType>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: `WithDType` types are plain numbers (no drop, no invalid bit patterns), and every
    // caller writes all `n` elements before the vector is read or handed on, as candle's own
    // `CpuDevice::alloc_uninit` does.
    unsafe { v.set_len(n) };
    v
}

/// Runs a kernel on the f32 or f64 data of one or more contiguous CPU operands of the same
/// dtype: `float_kernel!(what, [(storage, layout, "name") => data, ...], body)` binds each
/// `data` to its contiguous slice and wraps `body` (a `Vec`) in the matching `CpuStorage`.
/// Other dtypes are an error naming `what`.
macro_rules! float_kernel {
    ($what:expr, [$(($s:expr, $l:expr, $name:expr) => $v:ident),+ $(,)?], $body:expr) => {{
        #[allow(unused_parens)]
        match ($($s),+) {
            ($(candle_core::CpuStorage::F32($v)),+) => {
                $(let $v = $crate::contiguous_data($v, $l, $name)?;)+
                candle_core::CpuStorage::F32($body)
            }
            ($(candle_core::CpuStorage::F64($v)),+) => {
                $(let $v = $crate::contiguous_data($v, $l, $name)?;)+
                candle_core::CpuStorage::F64($body)
            }
            _ => candle_core::bail!("{}: unsupported dtype (f32 or f64, all operands alike)", $what),
        }
    }};
}
pub(crate) use float_kernel;
