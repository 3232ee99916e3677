//! CPU convolution: one custom op per convolution, forward and backward, on the GEMM candle
//! itself uses (the `gemm` crate), called with strides so that no layout copy is needed.
//!
//! The batch is cut into tiles of a few samples. For each tile the kernel gathers the
//! input under every kernel tap into a column matrix `(C·k², T·L)` (im2col), multiplies
//! `W (O, C·k²)` by it, and writes the product straight into the NCHW output. Nothing of the
//! column matrices outlives the tile: the backward recomputes them, so a training step keeps
//! only the tensors PyTorch keeps (the input and the weight), and the tile buffers are reused
//! from tile to tile. Tiles run in parallel with single-threaded GEMMs when there are enough of them,
//! otherwise one after another with a multithreaded GEMM.
//!
//! * forward: `Y_t = W · cols(X_t)`;
//! * weight gradient: `dW = Σ_t dY_t · cols(X_t)ᵀ`;
//! * input gradient: `dX_t = col2im(Wᵀ · dY_t)`; for a stride-1 "same" window, the forward
//!   of the transposed convolution (rotated kernels), which gathers instead of scattering.
//!
//! A pointwise convolution's forward and input gradient take one sample per tile and read
//! and write its planes in place; stride-1 "same" windows take the direct kernel of
//! [`crate::same_conv`] where it pays.
//!
//! Groups are offsets into the same matrices. Other devices keep candle's own conv2d
//! ([`conv2d`] selects).

use crate::contiguous_data;
use crate::gemm::{for_each_tile, gemm_acc, scratch, sum_parts, Float, Scratch, View};
use crate::im2col::{col2im_plane, Im2col, Window};
use crate::same_conv::{SameConv, SameConvFloat};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// A GEMM should have at least this many columns; smaller maps batch several samples.
const MIN_COLS: usize = 256;

/// Where the direct kernel of stride-1 "same" windows ([`crate::same_conv`]) replaces im2col +
/// GEMM. Narrower maps keep im2col: the direct kernel computes `k − 1` padding columns per row
/// and rounds each sample's positions up to whole tiles; its weight gradient's dot products get
/// short sooner, so it starts at a wider map. More channels keep im2col too: there the GEMM
/// runs near its roof and im2col costs only `1/O` of it.
/// `cargo run --release -p vt-ops --example same_conv_ab`: forward + backward, the direct kernel
/// wins at 56 and 28 px and is level or ahead at 14 px; at 7 px its forward wins (1.1-1.2×) and
/// its weight gradient, run there in an earlier round, was level or behind; at 128 channels
/// im2col wins. In VT-ResNet-18 at 28 px (`bench-peer --single`), the 7 px forward cut
/// inference 7-10 % and left training level.
const MIN_SAME_WIDTH: SameWidth = SameWidth {
    forward: 7,
    weight_grad: 14,
};
const MAX_SAME_CHANNELS: usize = 64;

/// The narrowest map each pass runs the direct kernel on (the input gradient is a forward).
struct SameWidth {
    forward: usize,
    weight_grad: usize,
}

/// Sizes of one convolution, fixed when the op is built and checked against its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    win: Window,
    groups: usize,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    /// Output positions per sample.
    fn l(&self) -> usize {
        self.ho * self.wo
    }
    fn kk(&self) -> usize {
        self.win.k * self.win.k
    }
    /// GEMM depth per group: one weight row, `C/groups · k²`.
    fn kg(&self) -> usize {
        self.c / self.groups * self.kk()
    }
    fn og(&self) -> usize {
        self.o / self.groups
    }
    /// A 1×1 stride-1 unpadded convolution reads a sample's input as its column matrix.
    fn pointwise(&self) -> bool {
        self.win.k == 1 && self.win.stride == 1 && self.win.pad == 0
    }
    /// `(samples per tile, tiles in parallel, GEMM threads)`. Tiles hold at least `min_cols`
    /// columns where the batch allows; they run in parallel, single-threaded, when there are
    /// enough to share evenly between the threads, otherwise one after another with a
    /// multithreaded GEMM.
    fn plan(&self, min_cols: usize) -> (usize, bool, usize) {
        let threads = rayon::current_num_threads();
        let n = self.n.max(1);
        let mut tiles = (n / min_cols.div_ceil(self.l())).max(1);
        let outer = threads > 1 && tiles >= threads;
        if outer {
            tiles -= tiles % threads;
        }
        (n.div_ceil(tiles), outer, if outer { 1 } else { threads })
    }
    /// The GEMM width the forward and input gradient batch samples up to. A pointwise
    /// convolution multiplies each sample's planes in place, with no gather and no scatter:
    /// on the VT modules' token maps (16-49 positions) that beats gathering wider GEMMs. Its
    /// weight gradient still gathers [`MIN_COLS`], as there the columns are the GEMM's depth.
    fn min_cols(&self) -> usize {
        if self.pointwise() {
            1
        } else {
            MIN_COLS
        }
    }
    /// The direct kernel of this convolution, where it has one and pays on maps at least
    /// `min_width` wide ([`MIN_SAME_WIDTH`]).
    fn same(&self, min_width: usize) -> Option<SameConv> {
        let w = &self.win;
        let same = crate::direct_conv()
            && self.groups == 1
            && w.k > 1
            && w.k % 2 == 1
            && w.stride == 1
            && w.dilation == 1
            && w.pad == w.k / 2
            && self.w >= min_width
            && self.c.max(self.o) <= MAX_SAME_CHANNELS;
        same.then_some(SameConv {
            n: self.n,
            c: self.c,
            o: self.o,
            h: self.h,
            w: self.w,
            k: w.k,
        })
    }
    fn x_dims(&self) -> (usize, usize, usize, usize) {
        (self.n, self.c, self.h, self.w)
    }
    fn w_dims(&self) -> (usize, usize, usize, usize) {
        (self.o, self.c / self.groups, self.win.k, self.win.k)
    }
    fn y_dims(&self) -> (usize, usize, usize, usize) {
        (self.n, self.o, self.ho, self.wo)
    }

    /// The column matrix `(C·k², t·L)` of samples `s0..s0+t` into `cols`; column `j·L + p`
    /// is position p of sample j.
    fn im2col<'a, T: Float>(
        &self,
        x: &[T],
        s0: usize,
        t: usize,
        cols: &'a mut Vec<T>,
        parallel: bool,
    ) -> &'a [T] {
        let (l, kk, hw) = (self.l(), self.kk(), self.h * self.w);
        let tl = t * l;
        let cols = scratch(cols, self.c * kk * tl);
        // a pointwise conv's plane is its only column row
        let gather = (!self.pointwise()).then(|| Im2col::new(&self.win, self.h, self.w));
        let fill = |(ch, rows): (usize, &mut [T])| {
            for j in 0..t {
                let plane = &x[((s0 + j) * self.c + ch) * hw..][..hw];
                match &gather {
                    None => rows[j * l..][..l].copy_from_slice(plane),
                    Some(g) => g.plane(&self.win, plane, self.h, self.w, &mut rows[j * l..], tl),
                }
            }
        };
        if parallel {
            cols.par_chunks_mut(kk * tl).enumerate().for_each(fill);
        } else {
            cols.chunks_mut(kk * tl).enumerate().for_each(fill);
        }
        cols
    }

    /// The output gradient of samples `s0..s0+t` as an `(O, t·L)` matrix: a view of `dy`
    /// itself for one sample, else gathered into `buf`. Returns the data and its row stride.
    fn dy_tile<'a, T: Float>(
        &self,
        dy: &'a [T],
        s0: usize,
        t: usize,
        buf: &'a mut Vec<T>,
    ) -> (&'a [T], usize) {
        let (o, l) = (self.o, self.l());
        if t == 1 {
            return (&dy[s0 * o * l..(s0 + 1) * o * l], l);
        }
        let buf = scratch(buf, o * t * l);
        for j in 0..t {
            for oc in 0..o {
                buf[oc * t * l + j * l..][..l].copy_from_slice(&dy[((s0 + j) * o + oc) * l..][..l]);
            }
        }
        (buf, t * l)
    }

    fn forward<T: SameConvFloat>(&self, x: &[T], wt: &[T]) -> Vec<T> {
        if let Some(same) = self.same(MIN_SAME_WIDTH.forward) {
            return same.forward(x, wt);
        }
        let (o, l, kg, og) = (self.o, self.l(), self.kg(), self.og());
        let (tile, outer, inner) = self.plan(self.min_cols());
        // every tile's GEMM (or its copy) writes all of its outputs
        let mut y = crate::output_vec(self.n * o * l);
        let run = |(ti, y_t): (usize, &mut [T]), Scratch(cols, tmp): &mut Scratch<T>| {
            let (s0, t) = (ti * tile, y_t.len() / (o * l));
            let tl = t * l;
            let src: &[T] = if self.pointwise() && t == 1 {
                &x[s0 * self.c * l..(s0 + 1) * self.c * l]
            } else {
                self.im2col(x, s0, t, cols, inner > 1)
            };
            // one sample: the GEMM writes its NCHW plane directly; several: (O, t·L), then
            // each sample's rows move to their place
            let direct = t == 1;
            let dst: &mut [T] = if direct { y_t } else { scratch(tmp, o * tl) };
            for g in 0..self.groups {
                gemm_acc(
                    og,
                    tl,
                    kg,
                    &mut dst[g * og * tl..],
                    tl,
                    View {
                        data: &wt[g * og * kg..],
                        rs: kg,
                        cs: 1,
                    },
                    View {
                        data: &src[g * kg * tl..],
                        rs: tl,
                        cs: 1,
                    },
                    false,
                    inner,
                );
            }
            if !direct {
                for j in 0..t {
                    for oc in 0..o {
                        y_t[(j * o + oc) * l..][..l].copy_from_slice(&tmp[oc * tl + j * l..][..l]);
                    }
                }
            }
        };
        for_each_tile(&mut y, tile * o * l, outer, run);
        y
    }

    /// `dW = Σ_t dY_t · cols(X_t)ᵀ`, shaped like the weight.
    fn weight_grad<T: SameConvFloat>(&self, x: &[T], dy: &[T]) -> Vec<T> {
        if let Some(same) = self.same(MIN_SAME_WIDTH.weight_grad) {
            return same.weight_grad(x, dy);
        }
        let (l, kg, og) = (self.l(), self.kg(), self.og());
        let (tile, outer, inner) = self.plan(MIN_COLS);
        let tiles = self.n.div_ceil(tile);
        // each part sums a contiguous run of tiles into its own accumulator
        let parts = if outer {
            rayon::current_num_threads()
        } else {
            1
        };
        let part = |p: usize| {
            let mut acc = vec![T::default(); self.o * kg];
            let mut buffers = Scratch::default();
            let Scratch(cols, dyb) = &mut buffers;
            for ti in (p * tiles / parts)..((p + 1) * tiles / parts) {
                let s0 = ti * tile;
                let t = tile.min(self.n - s0);
                let tl = t * l;
                let src: &[T] = if self.pointwise() && t == 1 {
                    &x[s0 * self.c * l..(s0 + 1) * self.c * l]
                } else {
                    self.im2col(x, s0, t, cols, inner > 1)
                };
                let (dyt, dy_rs) = self.dy_tile(dy, s0, t, dyb);
                for g in 0..self.groups {
                    gemm_acc(
                        og,
                        kg,
                        tl,
                        &mut acc[g * og * kg..],
                        kg,
                        View {
                            data: &dyt[g * og * dy_rs..],
                            rs: dy_rs,
                            cs: 1,
                        },
                        // colsᵀ: element (position, row) of the group's rows
                        View {
                            data: &src[g * kg * tl..],
                            rs: 1,
                            cs: tl,
                        },
                        true,
                        inner,
                    );
                }
            }
            acc
        };
        sum_parts((0..parts).into_par_iter().map(part).collect())
    }

    /// The convolution whose forward is this one's input gradient, when there is one: for a
    /// stride-1 window wider than one pixel whose output is the input's size, `dX = conv(dY, W')` with the same
    /// padding and `W'[c, o] = W[o, c]` rotated by 180°. Its forward gathers `dY` (one shifted
    /// copy per tap) where the general path scatters `Wᵀ·dY` back with col2im.
    fn transposed(&self) -> Option<Geometry> {
        // a 1×1 conv has no col2im to avoid, only the weight transpose to pay (serially)
        let same = self.win.k > 1 && self.win.stride == 1 && self.ho == self.h && self.wo == self.w;
        same.then_some(Geometry {
            c: self.o,
            o: self.c,
            ..*self
        })
    }

    /// `W'` of [`Self::transposed`]: `(C, O/groups, k, k)`, per group the transposed block with
    /// each kernel rotated by 180°.
    fn transposed_weight<T: Float>(&self, wt: &[T]) -> Vec<T> {
        let (og, cg, kk) = (self.og(), self.c / self.groups, self.kk());
        let mut out = vec![T::default(); wt.len()];
        for g in 0..self.groups {
            for o in 0..og {
                for c in 0..cg {
                    let src = &wt[((g * og + o) * cg + c) * kk..][..kk];
                    let dst = &mut out[((g * cg + c) * og + o) * kk..][..kk];
                    for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                        *d = *s;
                    }
                }
            }
        }
        out
    }

    /// `dX_t = col2im(Wᵀ · dY_t)`, or the forward of [`Self::transposed`] where it exists.
    fn input_grad<T: SameConvFloat>(&self, dy: &[T], wt: &[T]) -> Vec<T> {
        // the transposed conv's forward takes the direct kernel wherever this one does
        if let Some(t) = self.transposed() {
            return t.forward(dy, &self.transposed_weight(wt));
        }
        let (c, l, kg, og, kk) = (self.c, self.l(), self.kg(), self.og(), self.kk());
        let hw = self.h * self.w;
        let (tile, outer, inner) = self.plan(self.min_cols());
        // every plane is written whole: by the GEMM (a pointwise conv of one sample) or col2im
        let mut dx = crate::output_vec(self.n * c * hw);
        let run = |(ti, dx_t): (usize, &mut [T]), Scratch(gcols, dyb): &mut Scratch<T>| {
            let (s0, t) = (ti * tile, dx_t.len() / (c * hw));
            let tl = t * l;
            let (dyt, dy_rs) = self.dy_tile(dy, s0, t, dyb);
            // a pointwise conv of one sample writes the gradient plane directly
            let direct = self.pointwise() && t == 1;
            let dst: &mut [T] = if direct {
                dx_t
            } else {
                scratch(gcols, c * kk * tl)
            };
            for g in 0..self.groups {
                gemm_acc(
                    kg,
                    tl,
                    og,
                    &mut dst[g * kg * tl..],
                    tl,
                    // Wᵀ: element (row, out channel) of the group's block
                    View {
                        data: &wt[g * og * kg..],
                        rs: 1,
                        cs: kg,
                    },
                    View {
                        data: &dyt[g * og * dy_rs..],
                        rs: dy_rs,
                        cs: 1,
                    },
                    false,
                    inner,
                );
            }
            if !direct {
                let scatter = |(i, plane): (usize, &mut [T])| {
                    let (j, ch) = (i / c, i % c);
                    col2im_plane(
                        &self.win,
                        &gcols[ch * kk * tl + j * l..],
                        self.h,
                        self.w,
                        plane,
                        tl,
                    );
                };
                if inner > 1 {
                    dx_t.par_chunks_mut(hw).enumerate().for_each(scatter);
                } else {
                    dx_t.chunks_mut(hw).enumerate().for_each(scatter);
                }
            }
        };
        for_each_tile(&mut dx, tile * c * hw, outer, run);
        dx
    }
}

/// Checks two operands against the shapes the geometry expects and runs `$f` on their f32 or
/// f64 data; `$f` returns the output `Vec`.
macro_rules! run_float {
    ($what:expr, ($s1:expr, $l1:expr, $d1:expr), ($s2:expr, $l2:expr, $d2:expr), |$a:ident, $b:ident| $body:expr) => {{
        for (layout, dims, name) in [($l1, $d1, "first"), ($l2, $d2, "second")] {
            if layout.shape().dims() != <[usize; 4]>::from(dims) {
                bail!(
                    "{}: {name} operand has shape {:?}, expected {:?}",
                    $what,
                    layout.shape(),
                    dims
                );
            }
        }
        match ($s1, $s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let ($a, $b) = (
                    contiguous_data(a, $l1, $what)?,
                    contiguous_data(b, $l2, $what)?,
                );
                CpuStorage::F32($body)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                let ($a, $b) = (
                    contiguous_data(a, $l1, $what)?,
                    contiguous_data(b, $l2, $what)?,
                );
                CpuStorage::F64($body)
            }
            (a, b) => bail!(
                "{}: unsupported dtypes {:?} and {:?}",
                $what,
                a.dtype(),
                b.dtype()
            ),
        }
    }};
}

/// Which product a [`ConvOp`] computes; only the forward is differentiable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// `(x, w) → y`
    Forward,
    /// `(dy, w) → dx`
    InputGrad,
    /// `(x, dy) → dw`
    WeightGrad,
}

#[derive(Clone, Copy, Debug)]
struct ConvOp {
    geometry: Geometry,
    pass: Pass,
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        match self.pass {
            Pass::Forward => "vt-conv2d",
            Pass::InputGrad => "vt-conv2d-input-grad",
            Pass::WeightGrad => "vt-conv2d-weight-grad",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let (x, w, y) = (g.x_dims(), g.w_dims(), g.y_dims());
        // (first operand, second operand, output) of each pass
        let (d1, d2, out) = match self.pass {
            Pass::Forward => (x, w, y),
            Pass::InputGrad => (y, w, x),
            Pass::WeightGrad => (x, y, w),
        };
        let result = run_float!(self.name(), (s1, l1, d1), (s2, l2, d2), |a, b| {
            match self.pass {
                Pass::Forward => g.forward(a, b),
                Pass::InputGrad => g.input_grad(a, b),
                Pass::WeightGrad => g.weight_grad(a, b),
            }
        });
        Ok((result, Shape::from(out)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if self.pass != Pass::Forward {
            bail!("{} has no backward", self.name());
        }
        let dy = dy.contiguous()?;
        let pass = |pass| ConvOp {
            geometry: self.geometry,
            pass,
        };
        // an input image needs no gradient: skip the larger of the two GEMMs
        let dx = match x.track_op() {
            true => Some(dy.apply_op2_no_bwd(w, &pass(Pass::InputGrad))?),
            false => None,
        };
        let dw = match w.track_op() {
            true => Some(x.apply_op2_no_bwd(&dy, &pass(Pass::WeightGrad))?),
            false => None,
        };
        Ok((dx, dw))
    }
}

/// 2-d convolution of `x (N, C, H, W)` with `w (O, C/groups, k, k)`, PyTorch semantics. On the
/// CPU: vt's tiled im2col + GEMM op; elsewhere (and for non-square kernels) candle's conv2d.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (o, cg, kh, kw) = w.dims4()?;
    if !crate::cpu_kernels(x.device()) || kh != kw {
        return x.conv2d(w, padding, stride, dilation, groups);
    }
    if groups == 0 || c != cg * groups || o % groups != 0 {
        bail!(
            "conv2d: input {:?} and weight {:?} do not fit groups {groups}",
            x.shape(),
            w.shape()
        );
    }
    if stride == 0 || dilation == 0 {
        bail!("conv2d: stride {stride} and dilation {dilation} must be positive");
    }
    let win = Window {
        k: kh,
        stride,
        pad: padding,
        dilation,
    };
    if h + 2 * padding < dilation * (kh - 1) + 1 || wd + 2 * padding < dilation * (kw - 1) + 1 {
        bail!(
            "conv2d: input {:?} is smaller than the {kh}x{kw} kernel",
            x.shape()
        );
    }
    let (ho, wo) = (win.out(h), win.out(wd));
    if n == 0 || c == 0 || o == 0 {
        // nothing to tile (and nothing to differentiate)
        return Tensor::zeros((n, o, ho, wo), x.dtype(), x.device());
    }
    let geometry = Geometry {
        win,
        groups,
        n,
        c,
        h,
        w: wd,
        o,
        ho,
        wo,
    };
    x.contiguous()?.apply_op2(
        &w.contiguous()?,
        ConvOp {
            geometry,
            pass: Pass::Forward,
        },
    )
}
