//! Max and average pooling with any kernel, stride and padding (overlapping windows allowed),
//! differentiable on every device.
//!
//! candle's pooling backward fails unless kernel == stride. Here each of the k×k window taps is
//! a strided gather of the padded input, and the pool is a max (or sum) over the taps: candle
//! differentiates gathers, stacks and reductions. On the CPU max pooling is instead one op
//! ([`MaxPool2dCpu`]) that keeps only its input and output for the backward: the taps form
//! holds about 30 activation-sized tensors for a ResNet stem's 3×3 pool.

use crate::contiguous_data;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Output size of a pooling window: `floor((n + 2p − k) / s) + 1` (PyTorch, `ceil_mode=False`).
pub fn pool_out_size(n: usize, kernel: usize, stride: usize, padding: usize) -> Result<usize> {
    if kernel == 0 || stride == 0 || n + 2 * padding < kernel || 2 * padding > kernel {
        bail!(
            "invalid pooling window: size {n}, kernel {kernel}, stride {stride}, padding {padding}"
        );
    }
    Ok((n + 2 * padding - kernel) / stride + 1)
}

fn pad_hw(x: &Tensor, p: usize, value: f64) -> Result<Tensor> {
    if p == 0 {
        return Ok(x.clone());
    }
    if value == 0.0 {
        return x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p);
    }
    let (n, c, h, w) = x.dims4()?;
    let rows = Tensor::full(value, (n, c, p, w), x.device())?.to_dtype(x.dtype())?;
    let x = Tensor::cat(&[&rows, x, &rows], 2)?;
    let cols = Tensor::full(value, (n, c, h + 2 * p, p), x.device())?.to_dtype(x.dtype())?;
    Tensor::cat(&[&cols, &x, &cols], 3)
}

/// The k×k taps of the pooling windows: tap (dy, dx) holds `x_pad[.., dy + s·i, dx + s·j]`.
fn taps(x: &Tensor, k: usize, s: usize, p: usize, pad_value: f64) -> Result<Vec<Tensor>> {
    let (_, _, h, w) = x.dims4()?;
    let (ho, wo) = (pool_out_size(h, k, s, p)?, pool_out_size(w, k, s, p)?);
    let xp = pad_hw(x, p, pad_value)?;
    let index = |d: usize, n: usize| {
        Tensor::new(
            (0..n).map(|i| (d + s * i) as u32).collect::<Vec<_>>(),
            x.device(),
        )
    };
    let mut out = Vec::with_capacity(k * k);
    for dy in 0..k {
        let rows = xp.index_select(&index(dy, ho)?, 2)?;
        for dx in 0..k {
            out.push(rows.index_select(&index(dx, wo)?, 3)?);
        }
    }
    Ok(out)
}

/// 2-d max pooling of an NCHW tensor; padding counts as −∞ (PyTorch `MaxPool2d`). The gradient
/// goes to the first maximum of each window in row-major order, as PyTorch's CPU kernel does.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if crate::cpu_kernels(x.device()) {
        let (_, _, h, w) = x.dims4()?;
        pool_out_size(h, kernel, stride, padding)?;
        pool_out_size(w, kernel, stride, padding)?;
        return x.contiguous()?.apply_op1(MaxPool2dCpu {
            k: kernel,
            s: stride,
            p: padding,
        });
    }
    let t = taps(x, kernel, stride, padding, f64::NEG_INFINITY)?;
    Tensor::stack(&t, 0)?.max(0)
}

/// CPU max pooling `x → y`, one pass per plane; the backward finds each window's first
/// maximum again from `x` and `y`.
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2dCpu {
    k: usize,
    s: usize,
    p: usize,
}

impl MaxPool2dCpu {
    /// Input rows (or columns) of output position `o`, clipped to `[0, n)`.
    fn span(&self, o: usize, n: usize) -> std::ops::Range<usize> {
        let lo = (o * self.s).saturating_sub(self.p);
        let hi = (o * self.s + self.k).saturating_sub(self.p).min(n);
        lo..hi
    }

    /// Calls `f(plane, output index, input index of the window's first maximum)` for every
    /// output position of every plane, planes in parallel.
    fn for_each_argmax<T: PartialOrd + Copy + Sync, O: Send>(
        &self,
        x: &[T],
        (h, w): (usize, usize),
        out: &mut [O],
        per_plane: usize,
        f: impl Fn(&mut [O], usize, usize, T) + Sync,
    ) {
        let (ho, wo) = (
            (h + 2 * self.p - self.k) / self.s + 1,
            (w + 2 * self.p - self.k) / self.s + 1,
        );
        out.par_chunks_mut(per_plane)
            .enumerate()
            .for_each(|(i, o)| {
                let plane = &x[i * h * w..(i + 1) * h * w];
                for oy in 0..ho {
                    let rows = self.span(oy, h);
                    for ox in 0..wo {
                        let cols = self.span(ox, w);
                        let mut best = rows.start * w + cols.start;
                        for iy in rows.clone() {
                            for ix in cols.clone() {
                                if plane[iy * w + ix] > plane[best] {
                                    best = iy * w + ix;
                                }
                            }
                        }
                        f(o, oy * wo + ox, best, plane[best]);
                    }
                }
            });
    }
}

impl CustomOp1 for MaxPool2dCpu {
    fn name(&self) -> &'static str {
        "vt-max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let (ho, wo) = (
            pool_out_size(h, self.k, self.s, self.p)?,
            pool_out_size(w, self.k, self.s, self.p)?,
        );
        fn run<T: PartialOrd + Copy + Default + Send + Sync>(
            op: &MaxPool2dCpu,
            x: &[T],
            hw: (usize, usize),
            len: usize,
            l: usize,
        ) -> Vec<T> {
            let mut y = vec![T::default(); len];
            op.for_each_argmax(x, hw, &mut y, l, |o, j, _, v| o[j] = v);
            y
        }
        let len = n * c * ho * wo;
        let y = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(run(
                self,
                contiguous_data(v, layout, "max_pool2d")?,
                (h, w),
                len,
                ho * wo,
            )),
            CpuStorage::F64(v) => CpuStorage::F64(run(
                self,
                contiguous_data(v, layout, "max_pool2d")?,
                (h, w),
                len,
                ho * wo,
            )),
            other => bail!("max_pool2d: unsupported dtype {:?}", other.dtype()),
        };
        Ok((y, Shape::from((n, c, ho, wo))))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op3_no_bwd(
            y,
            &dy.contiguous()?,
            &MaxPool2dBackward(*self),
        )?))
    }
}

/// `(x, y, dy) → dx`: each output's gradient lands on its window's first maximum.
struct MaxPool2dBackward(MaxPool2dCpu);

impl CustomOp3 for MaxPool2dBackward {
    fn name(&self) -> &'static str {
        "vt-max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let l = l2.shape().elem_count() / (n * c).max(1);
        fn run<T: PartialOrd + Copy + Default + Send + Sync + std::ops::AddAssign>(
            op: &MaxPool2dCpu,
            x: &[T],
            dy: &[T],
            hw: (usize, usize),
            l: usize,
        ) -> Vec<T> {
            let mut dx = vec![T::default(); x.len()];
            let plane = hw.0 * hw.1;
            // one plane of dx per task; the output gradient index is plane·L + j
            dx.par_chunks_mut(plane).enumerate().for_each(|(i, d)| {
                op.for_each_argmax(
                    &x[i * plane..(i + 1) * plane],
                    hw,
                    d,
                    plane,
                    |d, j, at, _| d[at] += dy[i * l + j],
                );
            });
            dx
        }
        let dx = match (s1, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(dy)) => CpuStorage::F32(run(
                &self.0,
                contiguous_data(x, l1, "max_pool2d backward")?,
                contiguous_data(dy, l3, "max_pool2d backward")?,
                (h, w),
                l,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(dy)) => CpuStorage::F64(run(
                &self.0,
                contiguous_data(x, l1, "max_pool2d backward")?,
                contiguous_data(dy, l3, "max_pool2d backward")?,
                (h, w),
                l,
            )),
            (a, _) => bail!("max_pool2d backward: unsupported dtype {:?}", a.dtype()),
        };
        Ok((dx, l1.shape().clone()))
    }
}

/// 2-d average pooling of an NCHW tensor; padded zeros count in the average
/// (PyTorch `AvgPool2d`, `count_include_pad=True`).
pub fn avg_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let t = taps(x, kernel, stride, padding, 0.0)?;
    Tensor::stack(&t, 0)?.sum(0)? / (kernel * kernel) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_gradient;
    use candle_core::{DType, Device};

    fn naive(x: &[f32], h: usize, w: usize, k: usize, s: usize, p: usize, max: bool) -> Vec<f32> {
        let ho = (h + 2 * p - k) / s + 1;
        let wo = (w + 2 * p - k) / s + 1;
        let mut out = vec![];
        for i in 0..ho {
            for j in 0..wo {
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                for dy in 0..k {
                    for dx in 0..k {
                        let (y, xx) = (
                            (i * s + dy) as isize - p as isize,
                            (j * s + dx) as isize - p as isize,
                        );
                        let inside = y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w;
                        let v = if inside {
                            x[y as usize * w + xx as usize]
                        } else if max {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        };
                        acc = if max { acc.max(v) } else { acc + v };
                    }
                }
                out.push(if max { acc } else { acc / (k * k) as f32 });
            }
        }
        out
    }

    #[test]
    fn pools_match_a_naive_loop() -> Result<()> {
        for &(h, w, k, s, p) in &[
            (7, 6, 3, 2, 1),
            (8, 8, 2, 2, 0),
            (5, 9, 3, 1, 1),
            (112, 112, 3, 2, 1),
        ] {
            let data: Vec<f32> = (0..h * w).map(|i| ((i * 37 % 101) as f32).sin()).collect();
            let x = Tensor::from_vec(data.clone(), (1, 1, h, w), &Device::Cpu)?;
            for max in [true, false] {
                let y = if max {
                    max_pool2d(&x, k, s, p)?
                } else {
                    avg_pool2d(&x, k, s, p)?
                };
                let got = y.flatten_all()?.to_vec1::<f32>()?;
                let want = naive(&data, h, w, k, s, p, max);
                assert_eq!(got.len(), want.len());
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-6, "{h}x{w} k{k} s{s} p{p} max={max}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn pool_gradients_overlapping_windows() -> Result<()> {
        check_gradient(&[(2, 2, 7, 5)], DType::F64, |x| {
            let w = Tensor::arange(0f64, 2. * 2. * 12., x[0].device())?
                .reshape((2, 2, 4, 3))?
                .sin()?;
            (max_pool2d(&x[0], 3, 2, 1)? * w)?.sum_all()
        })?;
        check_gradient(&[(2, 2, 7, 5)], DType::F64, |x| {
            let w = Tensor::arange(0f64, 2. * 2. * 12., x[0].device())?
                .reshape((2, 2, 4, 3))?
                .cos()?;
            (avg_pool2d(&x[0], 3, 2, 1)? * w)?.sum_all()
        })
    }

    #[test]
    fn max_pool_gradient_goes_to_the_first_maximum_of_a_tie() -> Result<()> {
        let x = candle_core::Var::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu)?;
        let grads = max_pool2d(x.as_tensor(), 2, 2, 0)?.sum_all()?.backward()?;
        let dx = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f32>()?;
        let want: Vec<f32> = (0..16)
            .map(|i| {
                if (i / 4) % 2 == 0 && i % 2 == 0 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        assert_eq!(dx, want);
        Ok(())
    }

    #[test]
    fn bad_window_is_an_error() {
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let e = max_pool2d(&x, 5, 1, 0).unwrap_err().to_string();
        assert!(e.contains("kernel 5"), "{e}");
    }
}
