//! Data-parallel training as PyTorch's DistributedDataParallel does it: every rank starts from
//! rank 0's weights, trains on its shard of each global batch, and averages the gradients over
//! the ranks after every backward, flattened into a few large buckets (one all-reduce each),
//! so the optimizer, schedule and EMA see the same gradient on every rank. Batch-norm running
//! statistics stay per rank and are taken from rank 0 before evaluating and saving (DDP's
//! `broadcast_buffers`).

use crate::optim::Param;
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use std::collections::BTreeMap;
use vt_ops::Group;

/// Bytes of gradient per all-reduce (DDP's default `bucket_cap_mb` is 25).
const BUCKET_BYTES: usize = 25 << 20;

/// Replaces each gradient of `params` by its mean over the ranks of `group`.
pub fn average_gradients(grads: &mut GradStore, params: &[Param], group: &Group) -> Result<()> {
    if !group.is_distributed() {
        return Ok(());
    }
    let scale = 1.0 / group.world_size() as f64;
    let mut bucket: Vec<(&Var, Tensor)> = vec![];
    let mut bytes = 0;
    for p in params {
        let Some(g) = grads.remove(p.var.as_tensor()) else {
            continue; // the same parameters have no gradient on every rank: one graph
        };
        bytes += g.elem_count() * g.dtype().size_in_bytes();
        bucket.push((&p.var, g));
        if bytes >= BUCKET_BYTES {
            reduce_bucket(std::mem::take(&mut bucket), grads, group, scale)?;
            bytes = 0;
        }
    }
    reduce_bucket(bucket, grads, group, scale)
}

fn reduce_bucket(
    bucket: Vec<(&Var, Tensor)>,
    grads: &mut GradStore,
    group: &Group,
    scale: f64,
) -> Result<()> {
    if bucket.is_empty() {
        return Ok(());
    }
    let flat: Vec<Tensor> = bucket
        .iter()
        .map(|(_, g)| g.flatten_all())
        .collect::<Result<_>>()?;
    let summed = (group.all_reduce_tensor(&Tensor::cat(&flat, 0)?)? * scale)?;
    let mut at = 0;
    for (var, g) in bucket {
        let n = g.elem_count();
        grads.insert(
            var.as_tensor(),
            summed.narrow(0, at, n)?.reshape(g.shape())?,
        );
        at += n;
    }
    Ok(())
}

/// Sets every variable in `vars` (all of them, or only those `which` selects) to rank 0's value.
pub fn broadcast_from_rank0(
    vars: &BTreeMap<String, Var>,
    group: &Group,
    which: impl Fn(&str) -> bool,
) -> Result<()> {
    if !group.is_distributed() {
        return Ok(());
    }
    for (name, v) in vars.iter().filter(|(n, _)| which(n)) {
        v.set(&group.broadcast_tensor(v.as_tensor(), 0)?)
            .map_err(|e| e.context(format!("broadcasting {name} from rank 0")))?;
    }
    Ok(())
}

/// `(Σ_ranks sum, Σ_ranks count)` of a per-rank sum and count.
pub fn sum_over_ranks(sum: f64, count: f64, group: &Group) -> Result<(f64, f64)> {
    let mut v = [sum, count];
    group.all_reduce_f64(&mut v)?;
    Ok((v[0], v[1]))
}
