//! 2-d convolution of `L` maps stored interleaved, `x (N, C, H, W, L)`: map `l` is
//! `x[.., l]`, and one weight `(O, C, k, k)` convolves all of them. The VT position encoder's
//! input is such a stack: the token coefficients `(N, h, HW, L)` are, per token `l`, an
//! `h`-channel map. Read in this layout they need no permute to `(N·L, h, H, W)` and back, and
//! on the CPU every tap of the im2col copies a run of `L` values where the planar layout's
//! stride-2 taps copied single pixels; the backward's col2im adds runs alike.
//!
//! CPU (f32 / f64): per sample, columns `B (C·k² × P·L)` (`P` output pixels), `Y = W·B` in one
//! GEMM, written in place; `dX = col2im(Wᵀ·dY)`; `dW = Σ dY·Bᵀ` (columns recomputed). Other
//! devices: permute to `(N·L, C, H, W)`, [`crate::conv::conv2d`], permute back.

use crate::gemm::{gemm_acc, scratch, sum_parts, Float, Scratch, View};
use crate::nn::Conv2d;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `conv2d` of each of the `L` interleaved maps of `x (N, C, H, W, L)` with `w (O, C, k, k)`
/// (square kernel, one group, no dilation): `(N, O, H', W', L)`.
pub fn conv2d_interleaved(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, wd, l) = x.dims5()?;
    let (o, wc, kh, kw) = w.dims4()?;
    let fits = |size: usize| size + 2 * padding >= kh;
    if wc != c || kh != kw || kh == 0 || stride == 0 || !fits(h) || !fits(wd) {
        bail!(
            "conv2d_interleaved: input {:?} and weight {:?} (stride {stride}, padding {padding}) do not fit",
            x.shape(),
            w.shape()
        );
    }
    let out = |size: usize| (size + 2 * padding - kh) / stride + 1;
    let g = Geometry {
        n,
        c,
        h,
        w: wd,
        l,
        o,
        k: kh,
        stride,
        padding,
        ho: out(h),
        wo: out(wd),
    };
    let cpu = crate::cpu_kernels(x.device())
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && w.dtype() == x.dtype();
    if cpu {
        let op = InterleavedConv {
            g,
            pass: Pass::Forward,
        };
        return x.contiguous()?.apply_op2(&w.contiguous()?, op);
    }
    let planar = x.permute((0, 4, 1, 2, 3))?.reshape((n * l, c, h, wd))?;
    crate::conv::conv2d(&planar, w, stride, padding, 1, 1)?
        .reshape((n, l, o, g.ho, g.wo))?
        .permute((0, 2, 3, 4, 1))?
        .contiguous()
}

impl Conv2d {
    /// This convolution (and its bias) applied to each of the `L` interleaved maps of
    /// `x (N, C, H, W, L)` ([`conv2d_interleaved`]); one group only.
    pub fn forward_interleaved(&self, x: &Tensor) -> Result<Tensor> {
        self.interleaved_with(x, &self.weight, self.cfg.stride, self.cfg.padding)
    }

    /// [`conv2d_interleaved`] with `weight`, `stride` and `padding` (a folded form of this
    /// convolution's), plus this convolution's bias.
    pub(crate) fn interleaved_with(
        &self,
        x: &Tensor,
        weight: &Tensor,
        stride: usize,
        padding: usize,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        if c.groups != 1 || c.dilation != 1 {
            bail!("forward_interleaved: needs one group and no dilation, got {c:?}");
        }
        let y = conv2d_interleaved(x, weight, stride, padding)?;
        match &self.bias {
            Some(b) => crate::bias::add_channel_bias(&y, b),
            None => Ok(y),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    l: usize,
    o: usize,
    k: usize,
    stride: usize,
    padding: usize,
    ho: usize,
    wo: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Forward,
    InputGrad,
    WeightGrad,
}

impl Geometry {
    /// Rows of the columns: `C·k²`.
    fn depth(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Columns per sample: output pixels × maps.
    fn cols(&self) -> usize {
        self.ho * self.wo * self.l
    }

    fn x_len(&self) -> usize {
        self.c * self.h * self.w * self.l
    }

    /// Calls `f(row, column of the run's start, input offset of the run or None for padding)`
    /// for every run of `L` values of one sample's columns.
    #[inline(always)]
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, Option<usize>)) {
        let (k, l) = (self.k, self.l);
        let inside = |o: usize, t: usize, size: usize| {
            (o * self.stride + t)
                .checked_sub(self.padding)
                .filter(|&i| i < size)
        };
        for c in 0..self.c {
            for ky in 0..k {
                for kx in 0..k {
                    let row = (c * k + ky) * k + kx;
                    for oy in 0..self.ho {
                        let iy = inside(oy, ky, self.h);
                        for ox in 0..self.wo {
                            let src = iy
                                .zip(inside(ox, kx, self.w))
                                .map(|(iy, ix)| ((c * self.h + iy) * self.w + ix) * l);
                            f(row, (oy * self.wo + ox) * l, src);
                        }
                    }
                }
            }
        }
    }

    /// One sample's columns `(C·k² × P·L)` into `cols`.
    fn im2col<'a, T: Float>(&self, x: &[T], cols: &'a mut Vec<T>) -> &'a [T] {
        let (l, pl) = (self.l, self.cols());
        let b = scratch(cols, self.depth() * pl);
        self.for_each_run(|row, col, src| {
            let dst = &mut b[row * pl + col..][..l];
            match src {
                Some(s) => dst.copy_from_slice(&x[s..s + l]),
                None => dst.fill(T::default()),
            }
        });
        b
    }

    /// Samples handled in parallel (one per task) or, for fewer samples than threads, one
    /// at a time with a parallel GEMM: `(outer, GEMM threads)`.
    fn plan(&self) -> (bool, usize) {
        let threads = rayon::current_num_threads();
        match self.n >= threads {
            true => (true, 1),
            false => (false, threads),
        }
    }

    fn forward<T: Float>(&self, x: &[T], wt: &[T]) -> Vec<T> {
        let (o, d, pl) = (self.o, self.depth(), self.cols());
        // every sample's GEMM writes all of its outputs
        let mut y = crate::output_vec(self.n * o * pl);
        let (outer, threads) = self.plan();
        let run = |(s, y_s): (usize, &mut [T]), Scratch(cols, _): &mut Scratch<T>| {
            let b = self.im2col(&x[s * self.x_len()..][..self.x_len()], cols);
            let lhs = View {
                data: wt,
                rs: d,
                cs: 1,
            };
            let rhs = View {
                data: b,
                rs: pl,
                cs: 1,
            };
            gemm_acc(o, pl, d, y_s, pl, lhs, rhs, false, threads);
        };
        crate::gemm::for_each_tile(&mut y, o * pl, outer, run);
        y
    }

    fn input_grad<T: Float>(&self, dy: &[T], wt: &[T]) -> Vec<T> {
        let (o, d, pl, l) = (self.o, self.depth(), self.cols(), self.l);
        let mut dx = vec![T::default(); self.n * self.x_len()];
        let (outer, threads) = self.plan();
        let run = |(s, dx_s): (usize, &mut [T]), Scratch(cols, _): &mut Scratch<T>| {
            let g = scratch(cols, d * pl);
            let lhs = View {
                data: wt,
                rs: 1,
                cs: d,
            };
            let rhs = View {
                data: &dy[s * o * pl..][..o * pl],
                rs: pl,
                cs: 1,
            };
            gemm_acc(d, pl, o, g, pl, lhs, rhs, false, threads);
            self.for_each_run(|row, col, src| {
                if let Some(s) = src {
                    for (a, &v) in dx_s[s..s + l].iter_mut().zip(&g[row * pl + col..][..l]) {
                        *a += v;
                    }
                }
            });
        };
        crate::gemm::for_each_tile(&mut dx, self.x_len(), outer, run);
        dx
    }

    fn weight_grad<T: Float>(&self, x: &[T], dy: &[T]) -> Vec<T> {
        let (o, d, pl) = (self.o, self.depth(), self.cols());
        let (outer, threads) = self.plan();
        let parts = if outer {
            rayon::current_num_threads()
        } else {
            1
        };
        // each part sums a contiguous run of samples into its own accumulator
        let part = |p: usize| {
            let mut acc = vec![T::default(); o * d];
            let mut buffers = Scratch::default();
            for s in (p * self.n / parts)..((p + 1) * self.n / parts) {
                let b = self.im2col(&x[s * self.x_len()..][..self.x_len()], &mut buffers.0);
                let lhs = View {
                    data: &dy[s * o * pl..][..o * pl],
                    rs: pl,
                    cs: 1,
                };
                // Bᵀ: element (column, row) of the columns
                let rhs = View {
                    data: b,
                    rs: 1,
                    cs: pl,
                };
                gemm_acc(o, d, pl, &mut acc, d, lhs, rhs, true, threads);
            }
            acc
        };
        sum_parts((0..parts).into_par_iter().map(part).collect())
    }
}

#[derive(Clone, Copy, Debug)]
struct InterleavedConv {
    g: Geometry,
    pass: Pass,
}

impl CustomOp2 for InterleavedConv {
    fn name(&self) -> &'static str {
        match self.pass {
            Pass::Forward => "vt-conv2d-interleaved",
            Pass::InputGrad => "vt-conv2d-interleaved-input-grad",
            Pass::WeightGrad => "vt-conv2d-interleaved-weight-grad",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.g;
        let what = self.name();
        let (out, shape) = match self.pass {
            Pass::Forward => (
                crate::float_kernel!(what, [(s1, l1, "x") => x, (s2, l2, "w") => w], g.forward(x, w)),
                Shape::from((g.n, g.o, g.ho, g.wo, g.l)),
            ),
            Pass::InputGrad => (
                crate::float_kernel!(what, [(s1, l1, "dy") => dy, (s2, l2, "w") => w], g.input_grad(dy, w)),
                Shape::from((g.n, g.c, g.h, g.w, g.l)),
            ),
            Pass::WeightGrad => (
                crate::float_kernel!(what, [(s1, l1, "x") => x, (s2, l2, "dy") => dy], g.weight_grad(x, dy)),
                Shape::from((g.o, g.c, g.k, g.k)),
            ),
        };
        Ok((out, shape))
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
        let pass = |pass| InterleavedConv { g: self.g, pass };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_gradient;
    use candle_core::{Device, Var};

    /// Values and both gradients against the planar conv2d (`crate::conv`, itself checked
    /// against candle's conv2d and finite differences; candle's own backward mis-sizes the
    /// input gradient of a stride-2 conv of an even map) of the permuted maps, in f64, under 1,
    /// 2 and 4 threads: the position encoder's shapes (16 heads, 14 px, stride 2;
    /// 7 px, stride 1 once folded), a 1×1 conv, k = 5, odd sizes, one map, fewer samples than
    /// threads.
    #[test]
    fn matches_the_planar_conv2d_of_the_permuted_maps() -> Result<()> {
        let dev = Device::Cpu;
        // (N, C, H, W, L, O, k, stride, padding)
        let table = [
            (3, 16, 14, 14, 16, 16, 3, 2, 1),
            (3, 16, 7, 7, 16, 16, 3, 1, 1),
            (2, 16, 7, 7, 5, 1, 1, 1, 0),
            (2, 3, 9, 8, 3, 4, 5, 2, 2),
            (5, 2, 6, 5, 1, 3, 3, 1, 0),
            (1, 4, 5, 7, 9, 2, 3, 2, 1),
        ];
        for (i, &(n, c, h, w, l, o, k, s, p)) in table.iter().enumerate() {
            let xs = crate::Rng::new(50 + i as u64).normal_vec(n * c * h * w * l, 0.0, 1.0);
            let ws = crate::Rng::new(60 + i as u64).normal_vec(o * c * k * k, 0.0, 1.0);
            let ho = (h + 2 * p - k) / s + 1;
            let wo = (w + 2 * p - k) / s + 1;
            let gy = crate::Rng::new(70 + i as u64).normal_vec(n * o * ho * wo * l, 0.0, 1.0);
            let run = |threads: usize, ours: bool| -> Result<Vec<Tensor>> {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
                    let x = Var::from_vec(f64s(&xs), (n, c, h, w, l), &dev)?;
                    let wt = Var::from_vec(f64s(&ws), (o, c, k, k), &dev)?;
                    let y = match ours {
                        true => conv2d_interleaved(&x, &wt, s, p)?,
                        false => x
                            .permute((0, 4, 1, 2, 3))?
                            .reshape((n * l, c, h, w))?
                            .apply(&|m: &Tensor| crate::conv::conv2d(m, &wt, s, p, 1, 1))?
                            .reshape((n, l, o, ho, wo))?
                            .permute((0, 2, 3, 4, 1))?,
                    };
                    let g = Tensor::from_vec(f64s(&gy), (n, o, ho, wo, l), &dev)?;
                    let grads = (&y * &g)?.sum_all()?.backward()?;
                    Ok(vec![
                        y,
                        grads.get(&x).expect("dx").clone(),
                        grads.get(&wt).expect("dw").clone(),
                    ])
                })
            };
            let want = run(1, false)?;
            for threads in [1, 2, 4] {
                for ((what, a), b) in ["y", "dx", "dw"].iter().zip(run(threads, true)?).zip(&want) {
                    assert_eq!(a.dims(), b.dims(), "row {i} {what}");
                    let d = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
                    assert!(d < 1e-10, "row {i} {threads} threads {what}: {d}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn gradients_by_finite_differences() -> Result<()> {
        let shapes: [candle_core::Shape; 2] = [(2, 2, 5, 4, 3).into(), (3, 2, 3, 3).into()];
        check_gradient(&shapes, DType::F64, |xs| {
            let y = conv2d_interleaved(&xs[0], &xs[1], 2, 1)?;
            let w = Tensor::arange(0f64, y.elem_count() as f64, xs[0].device())?
                .reshape(y.shape())?
                .sin()?;
            (y * w)?.sum_all()
        })
    }

    #[test]
    fn mismatched_shapes_are_errors_naming_them() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 4, 4, 2), DType::F32, &dev)?;
        let w = Tensor::zeros((2, 4, 3, 3), DType::F32, &dev)?;
        let e = conv2d_interleaved(&x, &w, 1, 1).unwrap_err().to_string();
        assert!(
            e.contains("[1, 3, 4, 4, 2]") && e.contains("[2, 4, 3, 3]"),
            "{e}"
        );
        Ok(())
    }
}
