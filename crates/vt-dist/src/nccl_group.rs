//! [`vt_ops::ProcessGroup`] for ranks that train on CUDA devices: gradients and broadcasts of
//! CUDA tensors go over NCCL on the device's stream, everything else (host buffers, barriers,
//! abort, CPU tensors) over MPI, which also carries NCCL's unique id from rank 0 to the others.

use crate::Mpi;
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda::cudarc::driver::{CudaSlice, DeviceRepr};
use candle_core::cuda::cudarc::nccl::{Comm, Id, NcclType, ReduceOp};
use candle_core::cuda::{CudaDType, CudaDevice, CudaStorage};
use candle_core::{bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use std::sync::Mutex;
use vt_ops::ProcessGroup;

/// MPI's world with an NCCL communicator over the same ranks, each on its own CUDA device (or
/// several ranks on one GPU with `NCCL_MULTI_RANK_GPU_ENABLE=1`, NCCL 2.30 and later).
pub struct Nccl {
    mpi: Mpi,
    comm: Mutex<NcclComm>,
    device: CudaDevice,
}

/// NCCL's communicator handle, used by one thread at a time (the mutex in [`Nccl`]).
struct NcclComm(Comm);

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it do not
// overlap (NCCL's thread-safety rules); the mutex that owns it serialises them.
unsafe impl Send for NcclComm {}

/// NCCL's failure code: its `Debug` alone prints only "NcclError".
fn nccl_error(
    what: &str,
    e: candle_core::cuda::cudarc::nccl::result::NcclError,
) -> candle_core::Error {
    candle_core::Error::Msg(format!("NCCL {what} failed: {:?}", e.0))
}

impl Nccl {
    /// Joins MPI's world and builds the NCCL communicator of its ranks on `device`.
    pub fn init(device: &Device) -> Result<Self> {
        let Device::Cuda(cuda) = device else {
            bail!("an NCCL group trains on CUDA devices; this rank's device is {device:?}")
        };
        let mpi = Mpi::init()?;
        let (rank, world) = (mpi.rank(), mpi.world_size());
        let mut id = [0u8; 128];
        if rank == 0 {
            let fresh = Id::new().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
            for (b, c) in id.iter_mut().zip(fresh.internal()) {
                *b = *c as u8;
            }
        }
        mpi.broadcast_bytes(&mut id, 0);
        let id = Id::uninit(id.map(|b| b as std::ffi::c_char));
        let comm = Comm::from_rank(cuda.cuda_stream(), rank, world, id).map_err(|e| {
            nccl_error(
                &format!("ncclCommInitRank (rank {rank} of {world}; ranks sharing one GPU need NCCL_MULTI_RANK_GPU_ENABLE=1)"),
                e,
            )
        })?;
        Ok(Self {
            mpi,
            comm: Mutex::new(NcclComm(comm)),
            device: cuda.clone(),
        })
    }

    /// Whether NCCL reduces `t`: an f32 or f64 tensor on this group's device (a tensor on
    /// another GPU is an error; CPU tensors and other dtypes go through host memory).
    fn on_device(&self, t: &Tensor) -> Result<bool> {
        match t.device() {
            Device::Cuda(d) if d.same_device(&self.device) => {
                Ok(matches!(t.dtype(), DType::F32 | DType::F64))
            }
            Device::Cuda(d) => bail!("NCCL group of {:?} given a tensor on {d:?}", self.device),
            _ => Ok(false),
        }
    }

    fn collective(&self, t: &Tensor, op: Collective) -> Result<Tensor> {
        t.contiguous()?
            .apply_op1_no_bwd(&NcclOp { group: self, op })
    }
}

impl ProcessGroup for Nccl {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }

    fn world_size(&self) -> usize {
        self.mpi.world_size()
    }

    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.mpi.all_reduce_f32(buf)
    }

    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.mpi.all_reduce_f64(buf)
    }

    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()> {
        self.mpi.broadcast_f32(buf, root)
    }

    fn broadcast_f64(&self, buf: &mut [f64], root: usize) -> Result<()> {
        self.mpi.broadcast_f64(buf, root)
    }

    fn barrier(&self) -> Result<()> {
        self.mpi.barrier()
    }

    fn abort(&self, code: i32) -> ! {
        self.mpi.abort(code)
    }

    fn all_reduce_tensor(&self, t: &Tensor) -> Result<Tensor> {
        if !self.on_device(t)? {
            return vt_ops::collective::all_reduce_via_host(self, t);
        }
        self.collective(t, Collective::AllReduceSum)
    }

    fn broadcast_tensor(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        if !self.on_device(t)? {
            return vt_ops::collective::broadcast_via_host(self, t, root);
        }
        self.collective(t, Collective::Broadcast { root })
    }
}

#[derive(Clone, Copy)]
enum Collective {
    AllReduceSum,
    Broadcast { root: usize },
}

/// One NCCL collective as a candle op: it reads the input's device buffer and writes a fresh
/// one, enqueued on the device's stream after the ops that produced the input.
struct NcclOp<'a> {
    group: &'a Nccl,
    op: Collective,
}

impl NcclOp<'_> {
    fn run<T: CudaDType + DeviceRepr + NcclType>(
        &self,
        s: &CudaStorage,
        l: &Layout,
    ) -> Result<CudaStorage> {
        let Some((start, end)) = l.contiguous_offsets() else {
            bail!("an NCCL collective needs a contiguous tensor")
        };
        let src = s.as_cuda_slice::<T>()?.slice(start..end);
        let dev = s.device().clone();
        // SAFETY: every element of `dst` is written by the collective before anything reads it
        let mut dst: CudaSlice<T> = unsafe { dev.alloc::<T>(end - start)? };
        let comm = self.group.comm.lock().unwrap_or_else(|e| e.into_inner());
        match self.op {
            Collective::AllReduceSum => comm
                .0
                .all_reduce(&src, &mut dst, &ReduceOp::Sum)
                .map_err(|e| nccl_error("all-reduce", e))?,
            Collective::Broadcast { root } => {
                let send = (self.group.rank() == root).then_some(&src);
                comm.0
                    .broadcast(send, &mut dst, root as i32)
                    .map_err(|e| nccl_error("broadcast", e))?
            }
        };
        Ok(CudaStorage::wrap_cuda_slice(dst, dev))
    }
}

impl CustomOp1 for NcclOp<'_> {
    fn name(&self) -> &'static str {
        "nccl-collective"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("an NCCL collective runs on CUDA tensors; CPU tensors go over MPI")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let out = match s.dtype() {
            DType::F32 => self.run::<f32>(s, l)?,
            DType::F64 => self.run::<f64>(s, l)?,
            other => bail!("NCCL collective of a {other:?} tensor: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }
}
