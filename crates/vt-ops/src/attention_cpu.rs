//! CPU kernels of [`crate::attention`]. Each head of each sample is a few small products on
//! channel-major data: `q (d, m)`, `k (d, lk)`, `v (dv, lk)`, `P (lk, m)`, `out (dv, m)`. Each
//! product is one [`small_gemm`] (register blocks, no call into the GEMM crate). One task takes whole heads, at least
//! [`TASK_WORK`] multiply-adds of them. Candle's batched matmul (one GEMM call per head, for
//! products of depth 4-16) and the transposed copies around it cost more than the arithmetic.
//!
//! Backward: `dS = s·P·(dP − Σ_l P·dP)` (the softmax's), `dq = k·dS`, `dk = q·dSᵀ`;
//! `dv = dout·Pᵀ`, `dP = vᵀ·dout`; the products along the queries (`dk`, `dv`) are dot
//! products in lanes where the queries outnumber the keys 4 to 1, else a [`small_gemm`] on a
//! transposed copy of `P` (or `dS`); with a key bias, `dβ = Σ_m dS`. Each backward writes all
//! its gradients into one buffer in one pass; the tensors are views of it.

use crate::gemm::{small_gemm, small_gemm_nt, sum_lanes, wide_lanes, Strided};
use crate::softmax_cpu::Real;
use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// Multiply-adds (or exps) below which one more parallel task costs more than it saves.
const TASK_WORK: usize = 32 * 1024;

/// One attention's sizes: `b` = samples × heads; per head `d` channels on the side that is
/// summed over (`q`/`k` for the weights, `v` for [`AttendCpu`]), `lk` keys, `m` queries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heads {
    pub b: usize,
    pub heads: usize,
    pub d: usize,
    pub lk: usize,
    pub m: usize,
}

impl Heads {
    /// Heads per task.
    fn per_task(&self) -> usize {
        TASK_WORK.div_ceil(((self.d + 1) * self.lk * self.m).max(1))
    }

    fn p_shape(&self) -> Shape {
        Shape::from((self.b / self.heads, self.heads, self.lk, self.m))
    }
}

/// `C = A·Bᵀ` along the queries (`depth` = m): `A (rows × m)`, `B (lk × m)`, `C (rows × lk)`.
/// Dot products in lanes where the queries are many against the keys (a projector's pixels
/// against its tokens: no transpose, and every lane busy however few the keys); otherwise `B`
/// transposed into `scratch` and a [`small_gemm`] across the keys, which then fill its blocks.
#[inline(always)]
fn a_bt<T: Real>(c: &mut [T], a: &[T], b: &[T], depth: usize, scratch: &mut [T]) {
    let lk = b.len() / depth.max(1);
    if depth >= 4 * lk {
        return small_gemm_nt(c, a, b, depth);
    }
    transpose(b, depth, scratch);
    small_gemm(
        c,
        lk,
        Strided {
            data: a,
            rs: depth,
            cs: 1,
        },
        scratch,
        depth,
    );
}

/// `Σ x` in eight lanes (a left-to-right fold is one serial chain of adds).
#[inline(always)]
fn lane_sum<T: Real>(x: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let lanes = x.chunks_exact(8);
    let tail = lanes.remainder().iter().fold(T::zero(), |a, &v| a + v);
    for l in lanes {
        for j in 0..8 {
            acc[j] += l[j];
        }
    }
    sum_lanes(&acc) + tail
}

/// `(rows × cols)` → `(cols × rows)`.
#[inline(always)]
fn transpose<T: Copy>(x: &[T], cols: usize, out: &mut [T]) {
    let rows = x.len() / cols;
    for (r, row) in x.chunks(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            out[j * rows + r] = v;
        }
    }
}

/// `P = softmax over keys of s · (kᵀq + β)`, per head: `(N, h, lk, m)` from `q (N, h·d, m)`,
/// `k (N, h·d, lk)` and, as a [`CustomOp3`], a bias per key `β (N, h, lk)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WeightsCpu {
    pub shape: Heads,
    pub scale: f64,
}

impl WeightsCpu {
    fn forward<T: Real>(&self, q: &[T], k: &[T], bias: Option<&[T]>) -> Vec<T> {
        let Heads { b, d, lk, m, .. } = self.shape;
        // every head's rows are written below
        let mut p = crate::output_vec(b * lk * m);
        let bt = self.shape.per_task();
        let wide = wide_lanes();
        p.par_chunks_mut(bt * lk * m)
            .zip(q.par_chunks(bt * d * m).zip(k.par_chunks(bt * d * lk)))
            .enumerate()
            .for_each(|(i, (p, (q, k)))| {
                let bias = bias.map(|b| &b[i * bt * lk..]);
                match wide {
                    // SAFETY: `wide_lanes` checked that this CPU has AVX2 and FMA
                    #[cfg(target_arch = "x86_64")]
                    true => unsafe { self.forward_task_avx2(p, q, k, bias) },
                    _ => self.forward_task::<T, false>(p, q, k, bias),
                }
            });
        p
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_task_avx2<T: Real>(&self, p: &mut [T], q: &[T], k: &[T], bias: Option<&[T]>) {
        self.forward_task::<T, true>(p, q, k, bias)
    }

    #[inline(always)]
    fn forward_task<T: Real, const FMA: bool>(
        &self,
        p: &mut [T],
        q: &[T],
        k: &[T],
        bias: Option<&[T]>,
    ) {
        let Heads { d, lk, m, .. } = self.shape;
        let scale = T::from_f64(self.scale);
        let (mut max, mut sum) = (vec![T::zero(); m], vec![T::zero(); m]);
        for (h, ((p, q), k)) in p
            .chunks_mut(lk * m)
            .zip(q.chunks(d * m))
            .zip(k.chunks(d * lk))
            .enumerate()
        {
            // logits kᵀq: A[l, d] = k[d, l]
            let kt = Strided {
                data: k,
                rs: 1,
                cs: lk,
            };
            small_gemm(p, m, kt, q, d);
            if let Some(bias) = bias {
                for (row, &b) in p.chunks_mut(m).zip(&bias[h * lk..][..lk]) {
                    row.iter_mut().for_each(|o| *o += b);
                }
            }
            // softmax over the rows of each column, as `SoftmaxCpu` does along a middle axis:
            // exp(s·(x − max x)), then times 1 / Σ
            max.copy_from_slice(&p[..m]);
            for row in p.chunks(m).skip(1) {
                for (mx, &v) in max.iter_mut().zip(row) {
                    *mx = num_traits::Float::max(*mx, v);
                }
            }
            sum.fill(T::zero());
            for row in p.chunks_mut(m) {
                for ((o, &mx), s) in row.iter_mut().zip(&max).zip(&mut sum) {
                    let e = ((*o - mx) * scale).exp_lanes::<FMA>();
                    *s += e;
                    *o = e;
                }
            }
            for s in sum.iter_mut() {
                *s = T::one() / *s;
            }
            for row in p.chunks_mut(m) {
                for (o, &r) in row.iter_mut().zip(&sum) {
                    *o *= r;
                }
            }
        }
    }

    /// `[dq | dk]`, and `dβ` after them when `bias`, from `q`, `k`, `P` and `dP`.
    fn backward<T: Real>(&self, q: &[T], k: &[T], p: &[T], dp: &[T], bias: bool) -> Vec<T> {
        let Heads { b, d, lk, m, .. } = self.shape;
        let db_len = if bias { b * lk } else { 0 };
        // dq's rows, dk's dots and dβ's sums are all written below
        let mut grads = crate::output_vec(b * d * (m + lk) + db_len);
        let (dq, rest) = grads.split_at_mut(b * d * m);
        let (dk, db) = rest.split_at_mut(b * d * lk);
        let bt = self.shape.per_task();
        let (pm, dm, dl) = (bt * lk * m, bt * d * m, bt * d * lk);
        let wide = wide_lanes();
        let run = |(((dq, dk), (q, k)), (p, dp)), db: Option<&mut [T]>| match wide {
            // SAFETY: `wide_lanes` checked that this CPU has AVX2 and FMA
            #[cfg(target_arch = "x86_64")]
            true => unsafe { self.backward_task_avx2(dq, dk, db, q, k, p, dp) },
            _ => self.backward_task(dq, dk, db, q, k, p, dp),
        };
        let tasks = dq
            .par_chunks_mut(dm)
            .zip(dk.par_chunks_mut(dl))
            .zip(q.par_chunks(dm).zip(k.par_chunks(dl)))
            .zip(p.par_chunks(pm).zip(dp.par_chunks(pm)));
        match bias {
            true => tasks
                .zip(db.par_chunks_mut(bt * lk))
                .for_each(|(t, db)| run(t, Some(db))),
            false => tasks.for_each(|t| run(t, None)),
        }
        grads
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn backward_task_avx2<T: Real>(
        &self,
        dq: &mut [T],
        dk: &mut [T],
        db: Option<&mut [T]>,
        q: &[T],
        k: &[T],
        p: &[T],
        dp: &[T],
    ) {
        self.backward_task(dq, dk, db, q, k, p, dp)
    }

    /// The heads of one task; `db`, when the logits had a bias, gets `dβ[l] = Σ_m dS[l, m]`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn backward_task<T: Real>(
        &self,
        dq: &mut [T],
        dk: &mut [T],
        mut db: Option<&mut [T]>,
        q: &[T],
        k: &[T],
        p: &[T],
        dp: &[T],
    ) {
        let Heads { d, lk, m, .. } = self.shape;
        let scale = T::from_f64(self.scale);
        let mut ds = vec![T::zero(); lk * m];
        let mut ds_t = vec![T::zero(); m * lk];
        let mut dot = vec![T::zero(); m];
        let heads = dq
            .chunks_mut(d * m)
            .zip(dk.chunks_mut(d * lk))
            .zip(q.chunks(d * m).zip(k.chunks(d * lk)))
            .zip(p.chunks(lk * m).zip(dp.chunks(lk * m)));
        for (h, (((dq, dk), (q, k)), (p, dp))) in heads.enumerate() {
            // the softmax's backward, as `SoftmaxBackward`: s·y·(dy − Σ y·dy)
            dot.fill(T::zero());
            for (pr, dr) in p.chunks(m).zip(dp.chunks(m)) {
                for ((s, &y), &g) in dot.iter_mut().zip(pr).zip(dr) {
                    *s += y * g;
                }
            }
            for (o, (pr, dr)) in ds.chunks_mut(m).zip(p.chunks(m).zip(dp.chunks(m))) {
                for (((o, &y), &g), &s) in o.iter_mut().zip(pr).zip(dr).zip(&dot) {
                    *o = y * (g - s) * scale;
                }
            }
            if let Some(db) = db.as_deref_mut() {
                for (b, row) in db[h * lk..][..lk].iter_mut().zip(ds.chunks(m)) {
                    *b = lane_sum(row);
                }
            }
            // dq = k·dS; dk = q·dSᵀ
            small_gemm(
                dq,
                m,
                Strided {
                    data: k,
                    rs: lk,
                    cs: 1,
                },
                &ds,
                lk,
            );
            a_bt(dk, q, &ds, m, &mut ds_t);
        }
    }
}

impl WeightsCpu {
    /// The backward of either op: the gradients of `q`, `k` and, when there is one, `bias`.
    fn grads(
        &self,
        q: &Tensor,
        k: &Tensor,
        bias: Option<&Tensor>,
        p: &Tensor,
        dp: &Tensor,
    ) -> Result<std::vec::IntoIter<Tensor>> {
        let dp = dp.contiguous()?;
        let grads = with_cpu_data!(
            "attention_weights backward",
            [q, k, p, &dp],
            |q, k, p, dp| self.backward(q, k, p, dp, bias.is_some())
        );
        match bias {
            Some(b) => grad_views(grads, &[q, k, b]),
            None => grad_views(grads, &[q, k]),
        }
    }
}

impl CustomOp2 for WeightsCpu {
    fn name(&self) -> &'static str {
        "vt-attention-weights"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let what = "attention_weights";
        let p = crate::float_kernel!(what, [(s1, l1, "q") => q, (s2, l2, "k") => k], self.forward(q, k, None));
        Ok((p, self.shape.p_shape()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        p: &Tensor,
        dp: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let mut g = self.grads(q, k, None, p, dp)?;
        Ok((g.next(), g.next()))
    }
}

impl CustomOp3 for WeightsCpu {
    fn name(&self) -> &'static str {
        "vt-attention-weights-biased"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let what = "attention_weights_with_key_bias";
        let p = crate::float_kernel!(
            what,
            [(s1, l1, "q") => q, (s2, l2, "k") => k, (s3, l3, "bias") => b],
            self.forward(q, k, Some(b))
        );
        Ok((p, self.shape.p_shape()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        bias: &Tensor,
        p: &Tensor,
        dp: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut g = self.grads(q, k, Some(bias), p, dp)?;
        Ok((g.next(), g.next(), g.next()))
    }
}

/// `out = v·P` per head: `(N, h·dv, m)` from `v (N, h·dv, lk)` and `P (N, h, lk, m)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttendCpu {
    pub shape: Heads,
}

impl AttendCpu {
    fn forward<T: Real>(&self, v: &[T], p: &[T]) -> Vec<T> {
        let Heads { b, d, lk, m, .. } = self.shape;
        // every output row is written below
        let mut out = crate::output_vec(b * d * m);
        let bt = self.shape.per_task();
        out.par_chunks_mut(bt * d * m)
            .zip(v.par_chunks(bt * d * lk).zip(p.par_chunks(bt * lk * m)))
            .for_each(|(o, (v, p))| self.forward_task(o, v, p));
        out
    }

    /// The heads of one task (each product is a [`small_gemm`], which picks its own build).
    fn forward_task<T: Real>(&self, o: &mut [T], v: &[T], p: &[T]) {
        let Heads { d, lk, m, .. } = self.shape;
        for ((o, v), p) in o
            .chunks_mut(d * m)
            .zip(v.chunks(d * lk))
            .zip(p.chunks(lk * m))
        {
            small_gemm(
                o,
                m,
                Strided {
                    data: v,
                    rs: lk,
                    cs: 1,
                },
                p,
                lk,
            );
        }
    }

    /// `[dv | dP]` from `v`, `P` and `dout`.
    fn backward<T: Real>(&self, v: &[T], p: &[T], dout: &[T]) -> Vec<T> {
        let Heads { b, d, lk, m, .. } = self.shape;
        // dv's dots and dP's rows are all written below
        let mut grads = crate::output_vec(b * lk * (d + m));
        let (dv, dp) = grads.split_at_mut(b * d * lk);
        let bt = self.shape.per_task();
        let (vm, pm, om) = (bt * d * lk, bt * lk * m, bt * d * m);
        dv.par_chunks_mut(vm)
            .zip(dp.par_chunks_mut(pm))
            .zip(
                v.par_chunks(vm)
                    .zip(p.par_chunks(pm))
                    .zip(dout.par_chunks(om)),
            )
            .for_each(|((dv, dp), ((v, p), dout))| self.backward_task(dv, dp, v, p, dout));
        grads
    }

    /// The heads of one task: a transpose and two [`small_gemm`]s each.
    fn backward_task<T: Real>(&self, dv: &mut [T], dp: &mut [T], v: &[T], p: &[T], dout: &[T]) {
        let Heads { d, lk, m, .. } = self.shape;
        let mut p_t = vec![T::zero(); m * lk];
        let heads = dv.chunks_mut(d * lk).zip(dp.chunks_mut(lk * m)).zip(
            v.chunks(d * lk)
                .zip(p.chunks(lk * m))
                .zip(dout.chunks(d * m)),
        );
        for ((dv, dp), ((v, p), dout)) in heads {
            // dv = dout·Pᵀ; dP = vᵀ·dout
            a_bt(dv, dout, p, m, &mut p_t);
            small_gemm(
                dp,
                m,
                Strided {
                    data: v,
                    rs: 1,
                    cs: lk,
                },
                dout,
                d,
            );
        }
    }
}

impl CustomOp2 for AttendCpu {
    fn name(&self) -> &'static str {
        "vt-attend"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let what = "attend";
        let out = crate::float_kernel!(what, [(s1, l1, "v") => v, (s2, l2, "P") => p], self.forward(v, p));
        let Heads { b, heads, d, m, .. } = self.shape;
        Ok((out, Shape::from((b / heads, heads * d, m))))
    }

    fn bwd(
        &self,
        v: &Tensor,
        p: &Tensor,
        _out: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dout = dout.contiguous()?;
        let grads = with_cpu_data!("attend backward", [v, p, &dout], |v, p, dout| {
            self.backward(v, p, dout)
        });
        let mut g = grad_views(grads, &[v, p])?;
        Ok((g.next(), g.next()))
    }
}

/// The gradients of a backward that wrote them into one buffer, one after the other in the
/// operands' order: views shaped like the operands, no copy.
fn grad_views(grads: Storage, operands: &[&Tensor]) -> Result<std::vec::IntoIter<Tensor>> {
    let len = operands.iter().map(|t| t.elem_count()).sum::<usize>();
    let flat = Tensor::from_storage(grads, (len,), BackpropOp::none(), false);
    let mut start = 0;
    let mut views = Vec::with_capacity(operands.len());
    for t in operands {
        views.push(flat.narrow(0, start, t.elem_count())?.reshape(t.shape())?);
        start += t.elem_count();
    }
    Ok(views.into_iter())
}

/// Runs a kernel on the f32 or f64 data of contiguous CPU tensors of one dtype, for backward
/// passes with more operands than candle's custom ops take:
/// `with_cpu_data!(what, [t1, t2, ...], |d1, d2, ...| body)` binds each `d` to its tensor's
/// slice and wraps `body` (a `Vec`) in a CPU [`Storage`] of that dtype.
macro_rules! with_cpu_data {
    ($what:expr, [$($t:expr),+], |$($v:ident),+| $body:expr) => {{
        let guards = [$($t.storage_and_layout()),+];
        let mut it = guards.iter();
        let storage = match guards[0].0.dtype() {
            candle_core::DType::F32 => {
                $(let $v: &[f32] = cpu_slice(it.next().expect("one guard per tensor"), $what)?;)+
                CpuStorage::F32($body)
            }
            candle_core::DType::F64 => {
                $(let $v: &[f64] = cpu_slice(it.next().expect("one guard per tensor"), $what)?;)+
                CpuStorage::F64($body)
            }
            dt => candle_core::bail!("{}: unsupported dtype {dt:?} (f32 or f64)", $what),
        };
        Storage::Cpu(storage)
    }};
}
use with_cpu_data;

/// The contiguous data of one CPU operand of a [`with_cpu_data`] kernel.
fn cpu_slice<'a, T: candle_core::WithDType>(
    (storage, layout): &'a (candle_core::StorageRef<'_>, &Layout),
    what: &str,
) -> Result<&'a [T]> {
    match &**storage {
        Storage::Cpu(s) => crate::contiguous_data(s.as_slice::<T>()?, layout, what),
        _ => candle_core::bail!("{what}: every operand must be on the CPU"),
    }
}
