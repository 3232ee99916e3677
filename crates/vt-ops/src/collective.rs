//! The processes of a data-parallel run as the ops and the trainer see them: a rank, a world
//! size, and sums and broadcasts over ranks. `vt-dist` implements [`ProcessGroup`] over MPI;
//! [`SingleProcess`] is the world of one, where every collective is the identity.
//!
//! [`all_reduce_sum`] is differentiable: its forward sums a tensor over the ranks and its
//! backward sums the incoming gradient over the ranks (every rank's loss depends on the sum),
//! which is what a synchronised batch norm needs. [`set_sync_batch_norm`] makes every
//! [`crate::BatchNorm`] of the process normalise with the statistics of the global batch.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use std::sync::{Arc, RwLock};

/// The ranks of one job. Every rank must make the same collective calls in the same order
/// with buffers of the same length.
pub trait ProcessGroup: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Sums `buf` element-wise over every rank, in place.
    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<()>;
    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Copies rank `root`'s `buf` into every other rank's.
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()>;
    fn broadcast_f64(&self, buf: &mut [f64], root: usize) -> Result<()>;
    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<()> {
        self.all_reduce_f64(&mut [0.0])
    }
    /// Ends every rank of the job after an error on this one (a world of one just exits), so
    /// that no rank waits forever in a collective its peer will never join.
    fn abort(&self, code: i32) -> !;
    /// Sums a tensor over the ranks. This default goes through host memory
    /// ([`all_reduce_via_host`]); a group that reduces on the device (NCCL) overrides it.
    fn all_reduce_tensor(&self, t: &Tensor) -> Result<Tensor> {
        all_reduce_via_host(self, t)
    }
    /// Rank `root`'s value of `t` on every rank ([`broadcast_via_host`] by default).
    fn broadcast_tensor(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        broadcast_via_host(self, t, root)
    }
}

/// [`ProcessGroup::all_reduce_tensor`] through host memory: in f64 for f64 tensors, else in f32.
pub fn all_reduce_via_host<G: ProcessGroup + ?Sized>(g: &G, t: &Tensor) -> Result<Tensor> {
    via_host(g, t, |v| g.all_reduce_f64(v), |v| g.all_reduce_f32(v))
}

/// [`ProcessGroup::broadcast_tensor`] through host memory, in f64 or f32 as above.
pub fn broadcast_via_host<G: ProcessGroup + ?Sized>(
    g: &G,
    t: &Tensor,
    root: usize,
) -> Result<Tensor> {
    via_host(
        g,
        t,
        |v| g.broadcast_f64(v, root),
        |v| g.broadcast_f32(v, root),
    )
}

/// `t` copied to a host buffer (f64 for f64 tensors, else f32), changed in place by the
/// collective, and copied back in `t`'s shape, dtype and device; a world of one returns `t`.
fn via_host<G: ProcessGroup + ?Sized>(
    g: &G,
    t: &Tensor,
    on_f64: impl FnOnce(&mut [f64]) -> Result<()>,
    on_f32: impl FnOnce(&mut [f32]) -> Result<()>,
) -> Result<Tensor> {
    if g.world_size() == 1 {
        return Ok(t.clone());
    }
    let flat = t.flatten_all()?;
    if t.dtype() == DType::F64 {
        let mut v = flat.to_vec1::<f64>()?;
        on_f64(&mut v)?;
        return Tensor::from_vec(v, t.shape(), t.device());
    }
    let mut v = flat.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    on_f32(&mut v)?;
    Tensor::from_vec(v, t.shape(), t.device())?.to_dtype(t.dtype())
}

/// The world of one process.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl ProcessGroup for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_f32(&self, _: &mut [f32], _: usize) -> Result<()> {
        Ok(())
    }
    fn broadcast_f64(&self, _: &mut [f64], _: usize) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// A shared handle on a process group (the single process by default).
#[derive(Clone)]
pub struct Group(pub Arc<dyn ProcessGroup>);

impl Group {
    pub fn new(g: impl ProcessGroup + 'static) -> Self {
        Self(Arc::new(g))
    }
    pub fn is_distributed(&self) -> bool {
        self.0.world_size() > 1
    }
    /// Rank 0 writes the run's files and shows its progress.
    pub fn is_main(&self) -> bool {
        self.0.rank() == 0
    }
}

impl Default for Group {
    fn default() -> Self {
        Self::new(SingleProcess)
    }
}

impl std::ops::Deref for Group {
    type Target = dyn ProcessGroup;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rank {} of {}", self.rank(), self.world_size())
    }
}

impl PartialEq for Group {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.world_size() == 1 && other.world_size() == 1)
    }
}

impl Eq for Group {}

/// `Σ_ranks x`, differentiable: the gradient of each rank's `x` is the sum over ranks of the
/// gradient of the result.
pub fn all_reduce_sum(x: &Tensor, group: &Group) -> Result<Tensor> {
    if !group.is_distributed() {
        return Ok(x.clone());
    }
    x.contiguous()?.apply_op1(AllReduceSum(group.clone()))
}

struct AllReduceSum(Group);

impl AllReduceSum {
    fn reduce(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("all-reduce needs a contiguous tensor")
        };
        let out = match s {
            CpuStorage::F32(v) => {
                let mut v = v[a..b].to_vec();
                self.0.all_reduce_f32(&mut v)?;
                CpuStorage::F32(v)
            }
            CpuStorage::F64(v) => {
                let mut v = v[a..b].to_vec();
                self.0.all_reduce_f64(&mut v)?;
                CpuStorage::F64(v)
            }
            s => candle_core::bail!("all-reduce of {:?}: f32 or f64 only", s.dtype()),
        };
        Ok((out, l.shape().clone()))
    }
}

impl CustomOp1 for AllReduceSum {
    fn name(&self) -> &'static str {
        "all-reduce-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.reduce(s, l)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendDevice;
        let (host, shape) = self.reduce(&s.to_cpu_storage()?, l)?;
        Ok((s.device().storage_from_cpu_storage(&host)?, shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.0.all_reduce_tensor(grad)?))
    }
}

/// The group every train-mode [`crate::BatchNorm`] of this process takes its statistics over
/// (`None`: each rank normalises with its own batch, PyTorch's default under DDP).
static SYNC_BATCH_NORM: RwLock<Option<Group>> = RwLock::new(None);

/// Synchronised batch norm for the whole process (`--sync-bn`): batch statistics, forward and
/// backward, are all-reduced over `group`, so results do not depend on the world size.
pub fn set_sync_batch_norm(group: Option<Group>) {
    *SYNC_BATCH_NORM.write().unwrap_or_else(|e| e.into_inner()) = group;
}

pub(crate) fn sync_batch_norm() -> Option<Group> {
    SYNC_BATCH_NORM
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .filter(Group::is_distributed)
}
