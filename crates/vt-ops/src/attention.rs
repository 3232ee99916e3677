//! Multi-head attention on channel-major maps, the one product every VT stage runs: the
//! tokenizer (queries: tokens, keys: pixels), the transformer (tokens, tokens) and the
//! projector (pixels, tokens).
//!
//! Operands are `(N, h·d, positions)`, as the 1×1 convs that make them write them, so a head
//! is a block of channels and no transpose is needed:
//! * [`attention_weights`]`(q, k)`: `P[n, h, l, m] = softmax_l(s · Σ_d k[n, h·d + d', l] q[n, h·d + d', m])`,
//!   `(N, h, L_k, M)`, the softmax over the keys;
//! * [`attend`]`(v, P)`: `out[n, h·dv + c, m] = Σ_l v[n, h·dv + c, l] P[n, h, l, m]`, `(N, h·dv, M)`.
//!
//! On the CPU (f32 / f64) each is one op with a one-op backward (`attention_cpu.rs`);
//! elsewhere they are candle's batched matmul and [`crate::scaled_softmax`].

use crate::attention_cpu::{AttendCpu, Heads, WeightsCpu};
use candle_core::{bail, DType, Result, Tensor};

/// Attention weights of `q (N, h·d, M)` against `k (N, h·d, L_k)` in `heads` heads, scaled by
/// `scale` (`1/√d`): `(N, h, L_k, M)`, each column a softmax over the `L_k` keys.
pub fn attention_weights(q: &Tensor, k: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    weights(q, k, None, heads, scale)
}

/// [`attention_weights`] with a bias per head and key, `bias (N, h, L_k)`, added to the
/// logits before the scale: `softmax_l(s · (kᵀq + bias_l))`. What a query conv's bias
/// becomes when the conv is moved onto the keys ([`crate::Conv1x1::transposed`]).
pub fn attention_weights_with_key_bias(
    q: &Tensor,
    k: &Tensor,
    bias: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    weights(q, k, Some(bias), heads, scale)
}

fn weights(
    q: &Tensor,
    k: &Tensor,
    bias: Option<&Tensor>,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    let (n, c, m) = q.dims3()?;
    let (kn, kc, lk) = k.dims3()?;
    if (kn, kc) != (n, c) || heads == 0 || c % heads != 0 {
        bail!(
            "attention_weights: q {:?} and k {:?} need the same batch and channels, divisible by {heads} heads",
            q.shape(),
            k.shape()
        );
    }
    if let Some(b) = bias {
        if b.dims() != [n, heads, lk] {
            bail!(
                "attention_weights: the key bias {:?} must be (N, heads, L_k) = ({n}, {heads}, {lk})",
                b.shape()
            );
        }
    }
    let d = c / heads;
    if cpu_kernels(q) && scale > 0.0 && scale.is_finite() {
        let op = WeightsCpu {
            shape: Heads {
                b: n * heads,
                heads,
                d,
                lk,
                m,
            },
            scale,
        };
        let (q, k) = (q.contiguous()?, k.contiguous()?);
        return match bias {
            Some(b) => q.apply_op3(&k, &b.contiguous()?, op),
            None => q.apply_op2(&k, op),
        };
    }
    let q = q.reshape((n, heads, d, m))?;
    let k = k.reshape((n, heads, d, lk))?;
    let logits = k.transpose(2, 3)?.matmul(&q)?;
    let logits = match bias {
        Some(b) => logits.broadcast_add(&b.unsqueeze(3)?)?,
        None => logits,
    };
    crate::scaled_softmax(&logits, scale, 2)
}

/// `v (N, h·dv, L_k)` pooled by the weights `p (N, h, L_k, M)` of [`attention_weights`], head by
/// head: `(N, h·dv, M)`.
pub fn attend(v: &Tensor, p: &Tensor) -> Result<Tensor> {
    let (n, c, lk) = v.dims3()?;
    let (pn, heads, plk, m) = p.dims4()?;
    if pn != n || plk != lk || heads == 0 || c % heads != 0 {
        bail!(
            "attend: values {:?} do not fit the weights {:?} (batch, keys, heads dividing the channels)",
            v.shape(),
            p.shape()
        );
    }
    let d = c / heads;
    if cpu_kernels(v) {
        let shape = Heads {
            b: n * heads,
            heads,
            d,
            lk,
            m,
        };
        return v
            .contiguous()?
            .apply_op2(&p.contiguous()?, AttendCpu { shape });
    }
    v.reshape((n, heads, d, lk))?
        .matmul(&p.contiguous()?)?
        .reshape((n, c, m))
}

fn cpu_kernels(t: &Tensor) -> bool {
    crate::cpu_kernels(t.device()) && matches!(t.dtype(), DType::F32 | DType::F64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_gradient;
    use candle_core::{Device, Var};

    /// The composite form the kernels replace: candle's matmul and the softmax, head by head.
    fn composite(
        q: &Tensor,
        k: &Tensor,
        bias: Option<&Tensor>,
        v: &Tensor,
        heads: usize,
        scale: f64,
    ) -> Result<(Tensor, Tensor)> {
        let ((n, c, m), lk) = (q.dims3()?, k.dim(2)?);
        let q4 = q.reshape((n, heads, c / heads, m))?;
        let k4 = k.reshape((n, heads, c / heads, lk))?;
        let mut logits = k4.transpose(2, 3)?.matmul(&q4)?;
        if let Some(b) = bias {
            logits = logits.broadcast_add(&b.unsqueeze(3)?)?;
        }
        let logits = (logits * scale)?;
        let shift = logits.max_keepdim(2)?.detach();
        let e = logits.broadcast_sub(&shift)?.exp()?;
        let p = e.broadcast_div(&e.sum_keepdim(2)?)?;
        let cv = v.dim(1)?;
        let out = v
            .reshape((n, heads, cv / heads, lk))?
            .matmul(&p)?
            .reshape((n, cv, m))?;
        Ok((p, out))
    }

    /// Values and gradients of q, k, v (and the key bias, when there is one) against the
    /// composite form, in f64 and f32, on the VT stages' shapes (the transformer's 16 × 16,
    /// the projector's pixels as queries, the tokenizer's pixels as keys, VT-FPN's finest
    /// projector) and on odd sizes that leave lane remainders, under 1, 2 and 4 threads; both
    /// outputs feed the loss, as the tokenizer's weights do.
    #[test]
    fn kernels_match_the_composite_form() -> Result<()> {
        let dev = Device::Cpu;
        // (N, heads, d (q/k), dv, L_k, M)
        let table = [
            (4, 16, 8, 16, 16, 16),
            (3, 16, 4, 8, 16, 196),
            (3, 16, 4, 16, 196, 16),
            (2, 1, 5, 3, 7, 13),
            (5, 2, 3, 6, 9, 1),
            (1, 4, 1, 2, 33, 41),
            // VT-FPN's finest projector (8 tokens, 4 channels a head), and an odd key count
            // with a lane remainder on the dot-product path
            (2, 16, 4, 4, 8, 1024),
            (2, 4, 4, 4, 3, 37),
        ];
        for (i, &(n, h, d, dv, lk, m)) in table.iter().enumerate() {
            let mut rng = crate::Rng::new(11 + i as u64);
            let mut data = |shape: (usize, usize, usize), std: f64| {
                rng.normal_vec(shape.0 * shape.1 * shape.2, 0.0, std)
            };
            let (qs, ks, vs) = ((n, h * d, m), (n, h * d, lk), (n, h * dv, lk));
            let (q, k, v) = (data(qs, 2.0), data(ks, 2.0), data(vs, 1.0));
            let bs = (n, h, lk);
            let b = data(bs, 3.0);
            let wp = data((n, h * lk, m), 1.0);
            let wo = data((n, h * dv, m), 1.0);
            let scale = 1.0 / (d as f64).sqrt();
            for (dtype, biased) in [DType::F64, DType::F32]
                .into_iter()
                .flat_map(|t| [(t, false), (t, true)])
            {
                let run = |threads: usize, ours: bool| -> Result<Vec<Tensor>> {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    pool.install(|| {
                        let var = |x: &[f32], s| -> Result<Var> {
                            Var::from_tensor(&Tensor::from_slice(x, s, &dev)?.to_dtype(dtype)?)
                        };
                        let (q, k, v) = (var(&q, qs)?, var(&k, ks)?, var(&v, vs)?);
                        let b = var(&b, bs)?;
                        let bias = biased.then_some(b.as_tensor());
                        let (p, out) = match ours {
                            true => {
                                let p = match bias {
                                    Some(b) => {
                                        attention_weights_with_key_bias(&q, &k, b, h, scale)?
                                    }
                                    None => attention_weights(&q, &k, h, scale)?,
                                };
                                let out = attend(&v, &p)?;
                                (p, out)
                            }
                            false => composite(&q, &k, bias, &v, h, scale)?,
                        };
                        let weight = |x: &[f32], s: Tensor| -> Result<Tensor> {
                            Tensor::from_slice(x, s.shape(), &dev)?
                                .to_dtype(dtype)?
                                .mul(&s)?
                                .sum_all()
                        };
                        let loss = (weight(&wp, p.clone())? + weight(&wo, out.clone())?)?;
                        let g = loss.backward()?;
                        let mut r = vec![p, out];
                        for x in [&q, &k, &v] {
                            r.push(g.get(x).expect("a gradient").clone());
                        }
                        if biased {
                            r.push(g.get(&b).expect("a bias gradient").clone());
                        }
                        Ok(r)
                    })
                };
                let want = run(1, false)?;
                let tol = match dtype {
                    DType::F64 => 1e-12,
                    _ => 2e-5 * (lk.max(m) as f64).sqrt(),
                };
                for threads in [1, 2, 4] {
                    let got = run(threads, true)?;
                    assert_eq!(got.len(), want.len());
                    for (what, a, b) in ["P", "out", "dq", "dk", "dv", "dbias"]
                        .iter()
                        .zip(&got)
                        .zip(&want)
                        .map(|((w, a), b)| (w, a, b))
                    {
                        assert_eq!(a.dims(), b.dims(), "{what}");
                        let scale = b
                            .abs()?
                            .max_all()?
                            .to_dtype(DType::F64)?
                            .to_scalar::<f64>()?
                            .max(1.0);
                        let diff = (a - b)?
                            .abs()?
                            .max_all()?
                            .to_dtype(DType::F64)?
                            .to_scalar::<f64>()?;
                        assert!(
                            diff <= tol * scale,
                            "row {i} {dtype:?} bias {biased} {threads} threads {what}: {diff} (scale {scale})"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn gradients_by_finite_differences() -> Result<()> {
        // (N, h·d, M), (N, h·d, L_k), (N, h·dv, L_k) with 2 heads
        check_gradient(&[(2, 4, 5), (2, 4, 3), (2, 6, 3)], DType::F64, |xs| {
            let p = attention_weights(&xs[0], &xs[1], 2, 0.7)?;
            let out = attend(&xs[2], &p)?;
            let w = Tensor::arange(0f64, out.elem_count() as f64, xs[0].device())?
                .reshape(out.shape())?
                .sin()?;
            let wp = Tensor::arange(0f64, p.elem_count() as f64, xs[0].device())?
                .reshape(p.shape())?
                .cos()?;
            (out * w)?.sum_all()? + (p * wp)?.sum_all()?
        })?;
        // with a key bias: its gradient too
        check_gradient(&[(2, 4, 5), (2, 4, 3), (2, 2, 3)], DType::F64, |xs| {
            let p = attention_weights_with_key_bias(&xs[0], &xs[1], &xs[2], 2, 0.7)?;
            let wp = Tensor::arange(0f64, p.elem_count() as f64, xs[0].device())?
                .reshape(p.shape())?
                .cos()?;
            (p * wp)?.sum_all()
        })
    }

    #[test]
    fn mismatched_shapes_are_errors_naming_them() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::zeros((2, 8, 5), DType::F32, &dev)?;
        let k = Tensor::zeros((2, 6, 3), DType::F32, &dev)?;
        let e = attention_weights(&q, &k, 2, 1.0).unwrap_err().to_string();
        assert!(e.contains("[2, 8, 5]") && e.contains("[2, 6, 3]"), "{e}");
        let e = attention_weights(&q, &q, 3, 1.0).unwrap_err().to_string();
        assert!(e.contains("3 heads"), "{e}");
        let p = attention_weights(&q, &Tensor::zeros((2, 8, 3), DType::F32, &dev)?, 2, 1.0)?;
        assert_eq!(p.dims(), &[2, 2, 3, 5]);
        let e = attend(&Tensor::zeros((2, 6, 4), DType::F32, &dev)?, &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[2, 6, 4]") && e.contains("[2, 2, 3, 5]"), "{e}");
        let k = Tensor::zeros((2, 8, 3), DType::F32, &dev)?;
        let bias = Tensor::zeros((2, 2, 5), DType::F32, &dev)?;
        let e = attention_weights_with_key_bias(&q, &k, &bias, 2, 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[2, 2, 5]") && e.contains("(2, 2, 3)"), "{e}");
        Ok(())
    }
}
