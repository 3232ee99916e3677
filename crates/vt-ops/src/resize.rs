//! Resizes and adaptive pooling with PyTorch semantics, differentiable.
//!
//! Bilinear resize and adaptive average pooling are separable linear maps, so they are written
//! as two small constant matrices applied by matmul: `out = M_h · X · M_wᵀ`. Their backward is
//! the transposed matmul, which candle already differentiates, on every device.
//! Nearest resize is a gather (`index_select`), whose backward is a scatter-add; on the CPU
//! both run as one op each (`nearest.rs`). A convolution of a map resized by nearest
//! neighbour to its stride's multiple folds the resize into its kernel
//! ([`Conv2d::forward_resized`]).

use crate::nn::Conv2d;
use candle_core::{bail, DType, Module, Result, Tensor, D};

/// (n_out × n_in) row-major weights of PyTorch's `linear` interpolation with
/// `align_corners=False` and no antialias:
/// `src = max((dst + 0.5)·in/out − 0.5, 0)`, `i0 = floor(src)`, `i1 = min(i0 + 1, in − 1)`.
pub fn linear_weights(n_in: usize, n_out: usize) -> Vec<f64> {
    let mut m = vec![0.0; n_out * n_in];
    let scale = n_in as f64 / n_out as f64;
    for d in 0..n_out {
        let src = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let w1 = src - i0 as f64;
        m[d * n_in + i0] += 1.0 - w1;
        m[d * n_in + i1] += w1;
    }
    m
}

/// PyTorch's legacy `nearest` source indices, `src = floor(dst·in/out)` in exact integer
/// arithmetic, for any ratio.
pub fn nearest_indices(n_in: usize, n_out: usize) -> Vec<u32> {
    (0..n_out)
        .map(|d| ((d * n_in) / n_out).min(n_in - 1) as u32)
        .collect()
}

/// (n_out × n_in) weights of adaptive average pooling:
/// window `[floor(i·in/out), ceil((i+1)·in/out))`.
pub fn adaptive_avg_weights(n_in: usize, n_out: usize) -> Vec<f64> {
    let mut m = vec![0.0; n_out * n_in];
    for i in 0..n_out {
        let start = (i * n_in) / n_out;
        let end = ((i + 1) * n_in).div_ceil(n_out);
        for j in start..end {
            m[i * n_in + j] = 1.0 / (end - start) as f64;
        }
    }
    m
}

/// A constant matrix in `like`'s dtype and device.
fn matrix(rows: usize, cols: usize, data: Vec<f64>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(data, (rows, cols), like.device())?.to_dtype(like.dtype())
}

/// `M_h · X · M_wᵀ` for an NCHW (or any rank ≥ 2) tensor, given row-major weight matrices.
fn separable(x: &Tensor, mh: Vec<f64>, mw: Vec<f64>, out: (usize, usize)) -> Result<Tensor> {
    let rank = x.rank();
    if rank < 2 {
        bail!(
            "resize needs a tensor of rank >= 2, got shape {:?}",
            x.shape()
        );
    }
    let (h, w) = (x.dim(rank - 2)?, x.dim(rank - 1)?);
    let mw_t = matrix(out.1, w, mw, x)?.t()?;
    let mh = matrix(out.0, h, mh, x)?;
    let y = x.broadcast_matmul(&mw_t)?;
    mh.broadcast_matmul(&y)
}

fn check_size(x: &Tensor, out: (usize, usize), what: &str) -> Result<()> {
    let r = x.rank();
    if r < 2 || out.0 == 0 || out.1 == 0 || x.dim(r - 1)? == 0 || x.dim(r - 2)? == 0 {
        bail!("{what}: cannot resize shape {:?} to {out:?}", x.shape());
    }
    Ok(())
}

/// Bilinear resize of the last two axes to `out = (h, w)` (PyTorch, `align_corners=False`).
pub fn resize_bilinear(x: &Tensor, out: (usize, usize)) -> Result<Tensor> {
    check_size(x, out, "resize_bilinear")?;
    let r = x.rank();
    let (h, w) = (x.dim(r - 2)?, x.dim(r - 1)?);
    separable(x, linear_weights(h, out.0), linear_weights(w, out.1), out)
}

/// Nearest resize of the last two axes (PyTorch legacy `nearest`).
pub fn resize_nearest(x: &Tensor, out: (usize, usize)) -> Result<Tensor> {
    check_size(x, out, "resize_nearest")?;
    let r = x.rank();
    let (h, w) = (x.dim(r - 2)?, x.dim(r - 1)?);
    if (h, w) == out {
        // every index is its own: the position encoder's maps at 56 and 224 px are already
        // at its size, and the gather and its scatter backward would copy them twice
        return Ok(x.clone());
    }
    let (iy, ix) = (nearest_indices(h, out.0), nearest_indices(w, out.1));
    if crate::cpu_kernels(x.device()) && matches!(x.dtype(), DType::F32 | DType::F64) {
        let op = crate::nearest::NearestResize { iy, ix, h, w };
        return x.contiguous()?.apply_op1(op);
    }
    let iy = Tensor::new(iy, x.device())?;
    let ix = Tensor::new(ix, x.device())?;
    x.index_select(&iy, r - 2)?.index_select(&ix, r - 1)
}

/// Adaptive average pooling of the last two axes to `out` (PyTorch `adaptive_avg_pool2d`).
pub fn adaptive_avg_pool2d(x: &Tensor, out: (usize, usize)) -> Result<Tensor> {
    check_size(x, out, "adaptive_avg_pool2d")?;
    let r = x.rank();
    let (h, w) = (x.dim(r - 2)?, x.dim(r - 1)?);
    if out == (1, 1) {
        return x.mean_keepdim(r - 1)?.mean_keepdim(r - 2);
    }
    separable(
        x,
        adaptive_avg_weights(h, out.0),
        adaptive_avg_weights(w, out.1),
        out,
    )
}

/// The `(h', w')` token grid of `L` pooled tokens: `h'` is the largest divisor of L with
/// `h' ≤ √L`, `w' = L / h'` (4×4 for 16, 2×4 for 8).
pub fn pool_grid(num_tokens: usize) -> (usize, usize) {
    let h = (1..=num_tokens)
        .take_while(|d| d * d <= num_tokens)
        .filter(|d| num_tokens % d == 0)
        .max();
    let h = h.unwrap_or(1);
    (h, num_tokens / h)
}

/// The (HW × L) matrix B with `X.flatten(2) · B` = bilinear resize of X to `pool_grid(L)`,
/// flattened row-major.
pub fn bilinear_matrix(h: usize, w: usize, num_tokens: usize, like: &Tensor) -> Result<Tensor> {
    let (gh, gw) = pool_grid(num_tokens);
    let (mh, mw) = (linear_weights(h, gh), linear_weights(w, gw));
    let mut b = vec![0.0; h * w * gh * gw];
    for y in 0..h {
        for x in 0..w {
            for a in 0..gh {
                for c in 0..gw {
                    b[(y * w + x) * gh * gw + a * gw + c] = mh[a * h + y] * mw[c * w + x];
                }
            }
        }
    }
    matrix(h * w, gh * gw, b, like)
}

impl Conv2d {
    /// This convolution of `x` resized by nearest neighbour to `size` (PyTorch's legacy
    /// `nearest`). Where `size` is `x`'s size times the stride and the output is `x`'s size
    /// (dilation 1), no resized map is made: the upsampled input repeats each pixel `stride`
    /// times, so the taps that land on one source pixel sum into one weight, and what remains
    /// is a stride-1 "same" convolution of `x` itself. 3×3 stride 2, padding 1 becomes the
    /// 3×3 kernel `(W₀, W₁ + W₂, 0)` along each axis. The VT position encoder's conv of 7 px
    /// coefficient maps resized to 14 px (28 px images) then runs the direct kernel on 49
    /// pixels instead of im2col over 196.
    pub fn forward_resized(&self, x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
        let hw = (x.dim(D::Minus2)?, x.dim(D::Minus1)?);
        let Some((wt, padding)) = self.folded(hw, size)? else {
            return self.forward(&resize_nearest(x, size)?);
        };
        let y = crate::conv::conv2d(x, &wt, 1, padding, 1, self.cfg.groups)?;
        match &self.bias {
            Some(b) => crate::bias::add_channel_bias(&y, b),
            None => Ok(y),
        }
    }

    /// [`Self::forward_resized`] of each of the `L` interleaved maps of `x (N, C, H, W, L)`
    /// ([`crate::conv2d_interleaved`]): folded where the resize folds, the plain conv where
    /// the resize is the identity, else resize + conv of the permuted planar maps.
    pub fn forward_resized_interleaved(&self, x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
        let (n, c, h, w, l) = x.dims5()?;
        if let Some((wt, padding)) = self.folded((h, w), size)? {
            return self.interleaved_with(x, &wt, 1, padding);
        }
        if size == (h, w) {
            return self.forward_interleaved(x);
        }
        let planar = x.permute((0, 4, 1, 2, 3))?.reshape((n * l, c, h, w))?;
        let y = self.forward_resized(&planar, size)?;
        let (o, ho, wo) = (y.dim(1)?, y.dim(2)?, y.dim(3)?);
        y.reshape((n, l, o, ho, wo))?
            .permute((0, 2, 3, 4, 1))?
            .contiguous()
    }

    /// The stride-1 kernel and padding equivalent to this convolution of an `hw` map resized
    /// (nearest) to `size`, when the resize folds into the kernel; `None` otherwise.
    fn folded(
        &self,
        (h, w): (usize, usize),
        size: (usize, usize),
    ) -> Result<Option<(Tensor, usize)>> {
        let c = &self.cfg;
        let (k, s) = (self.weight.dim(3)?, c.stride);
        let folds = s > 1
            && c.dilation == 1
            && size == (h * s, w * s)
            && self.out_size(size.0, size.1) == (h, w);
        if !folds {
            return Ok(None);
        }
        // tap t reads the source pixel ⌊(t − pad)/s⌋ away from the output position (≤ 0 for
        // t = 0); the "same" kernel spans as far on both sides
        let offset = |t: usize| (t as isize - c.padding as isize).div_euclid(s as isize);
        let reach = (-offset(0)).max(offset(k - 1));
        let mut wt = self.weight.clone();
        for axis in [2, 3] {
            let folded = (-reach..=reach)
                .map(|d| {
                    let mut taps = (0..k).filter(|&t| offset(t) == d);
                    let Some(first) = taps.next() else {
                        return wt.narrow(axis, 0, 1)?.zeros_like();
                    };
                    taps.try_fold(wt.narrow(axis, first, 1)?, |sum, t| {
                        sum + wt.narrow(axis, t, 1)?
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            wt = Tensor::cat(&folded, axis)?;
        }
        Ok(Some((wt, reach as usize)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_gradient;
    use candle_core::Device;

    #[test]
    fn bilinear_matches_pytorch_values() -> Result<()> {
        // x[r, c] = 4r + c, 4x4 -> 2x3. Rows: src = 0.5, 2.5 -> mean of rows (0,1) and (2,3),
        // i.e. 2 + c and 10 + c. Columns: src = max((d + 0.5)·4/3 − 0.5, 0) = 1/6, 3/2, 17/6.
        let x = Tensor::arange(0f32, 16., &Device::Cpu)?.reshape((1, 1, 4, 4))?;
        let y = resize_bilinear(&x, (2, 3))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let want = [
            2.0 + 1.0 / 6.0,
            3.5,
            2.0 + 17.0 / 6.0,
            10.0 + 1.0 / 6.0,
            11.5,
            10.0 + 17.0 / 6.0,
        ];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{y:?}");
        }
        // upsampling 2 -> 4 along one axis: [0, 1] -> [0, 0.25, 0.75, 1]
        let x = Tensor::new(&[[0f32, 1.]], &Device::Cpu)?;
        let y = resize_bilinear(&x, (1, 4))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(y, vec![0.0, 0.25, 0.75, 1.0]);
        Ok(())
    }

    #[test]
    fn nearest_indices_any_ratio() {
        assert_eq!(
            nearest_indices(5, 14),
            vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4]
        );
        assert_eq!(
            nearest_indices(7, 14),
            vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
        );
        assert_eq!(nearest_indices(4, 2), vec![0, 2]);
    }

    #[test]
    fn adaptive_avg_matches_windows() -> Result<()> {
        let x = Tensor::arange(0f32, 5., &Device::Cpu)?.reshape((1, 5))?;
        let y = adaptive_avg_pool2d(&x, (1, 3))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        // windows [0,2) [1,4) [3,5)
        assert_eq!(y, vec![0.5, 2.0, 3.5]);
        Ok(())
    }

    #[test]
    fn pool_grid_and_matrix() -> Result<()> {
        assert_eq!(pool_grid(16), (4, 4));
        assert_eq!(pool_grid(8), (2, 4));
        assert_eq!(pool_grid(32), (4, 8));
        let x = Tensor::arange(0f32, 2. * 49., &Device::Cpu)?.reshape((1, 2, 7, 7))?;
        let b = bilinear_matrix(7, 7, 8, &x)?;
        let via_matrix = x.flatten_from(2)?.broadcast_matmul(&b)?;
        let direct = resize_bilinear(&x, (2, 4))?.flatten_from(2)?;
        let d = (via_matrix - direct)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-4, "{d}");
        Ok(())
    }

    /// The CPU op against the portable gather (`index_select`), values and gradients, up,
    /// down and by uneven ratios, on planes above and below the parallel batch size.
    #[test]
    fn nearest_kernel_equals_index_select() -> Result<()> {
        let dev = Device::Cpu;
        for (shape, out) in [
            ((2usize, 3usize, 7usize, 7usize), (14usize, 14usize)),
            ((1, 2, 5, 9), (3, 4)),
            ((3, 1, 4, 6), (13, 7)),
            ((2, 2, 40, 70), (80, 140)),
        ] {
            let n = shape.0 * shape.1 * shape.2 * shape.3;
            let x = crate::Rng::new(n as u64).normal_vec(n, 0.0, 1.0);
            let x = candle_core::Var::from_vec(x, shape, &dev)?;
            let seed = Tensor::arange(0f32, (shape.0 * shape.1 * out.0 * out.1) as f32, &dev)?
                .reshape((shape.0, shape.1, out.0, out.1))?
                .sin()?;
            let ours = resize_nearest(&x, out)?;
            let iy = Tensor::new(nearest_indices(shape.2, out.0), &dev)?;
            let ix = Tensor::new(nearest_indices(shape.3, out.1), &dev)?;
            let theirs = x.index_select(&iy, 2)?.index_select(&ix, 3)?;
            let dx = |y: &Tensor| -> Result<Tensor> {
                let g = (y * &seed)?.sum_all()?.backward()?;
                Ok(g.get(x.as_tensor()).unwrap().clone())
            };
            let diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
                (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
            };
            assert_eq!(diff(&ours, &theirs)?, 0.0, "{shape:?} -> {out:?}");
            assert!(
                diff(&dx(&ours)?, &dx(&theirs)?)? < 1e-5,
                "{shape:?} -> {out:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn resize_gradients() -> Result<()> {
        check_gradient(&[(1, 2, 3, 5)], DType::F64, |x| {
            let w = Tensor::arange(0f64, 2. * 7. * 4., x[0].device())?
                .reshape((1, 2, 7, 4))?
                .sin()?;
            (resize_bilinear(&x[0], (7, 4))? * w)?.sum_all()
        })?;
        check_gradient(&[(1, 2, 5, 5)], DType::F64, |x| {
            let w = Tensor::arange(0f64, 2. * 14. * 14., x[0].device())?
                .reshape((1, 2, 14, 14))?
                .cos()?;
            (resize_nearest(&x[0], (14, 14))? * w)?.sum_all()
        })?;
        check_gradient(&[(2, 1, 7, 6)], DType::F64, |x| {
            let w = Tensor::arange(0f64, 2. * 12., x[0].device())?
                .reshape((2, 1, 3, 4))?
                .cos()?;
            (adaptive_avg_pool2d(&x[0], (3, 4))? * w)?.sum_all()
        })
    }
}
