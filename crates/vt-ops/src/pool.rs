//! Max and average pooling with any kernel, stride and padding (overlapping windows allowed),
//! differentiable on every device.
//!
//! candle's pooling backward fails unless kernel == stride. Here each of the k×k window taps is
//! a strided gather of the padded input, and the pool is a max (or sum) over the taps: candle
//! differentiates gathers, stacks and reductions. A faster fused CPU kernel can replace this
//! behind the same functions.

use candle_core::{bail, Result, Tensor};

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

/// 2-d max pooling of an NCHW tensor; padding counts as −∞ (PyTorch `MaxPool2d`).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let t = taps(x, kernel, stride, padding, f64::NEG_INFINITY)?;
    Tensor::stack(&t, 0)?.max(0)
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
    fn bad_window_is_an_error() {
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let e = max_pool2d(&x, 5, 1, 0).unwrap_err().to_string();
        assert!(e.contains("kernel 5"), "{e}");
    }
}
