//! `--distributed` and `--sync-bn`: how `train` and `reproduce` join a data-parallel job, and
//! how a failing rank ends it.

use anyhow::Result;
use candle_core::Device;
use vt_ops::Group;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct Launch {
    /// Data-parallel training, one process per rank, started by `mpirun -n N` or `srun`
    /// (rank and world size come from MPI; needs a build with `--features mpi`).
    /// --batch-size is the global batch; rank 0 writes the log, checkpoints and metrics.
    #[arg(long)]
    pub distributed: bool,
    /// With --distributed: batch norm normalises with the statistics of the global batch
    /// (all-reduced forward and backward), so results do not depend on the world size.
    #[arg(long, requires = "distributed")]
    pub sync_bn: bool,
}

impl Launch {
    /// Runs `body` on this process's device (`cpu` or `cuda`; under --distributed a rank takes
    /// GPU `local rank % GPUs`) as its part of the job. In a job of several ranks an error is
    /// printed with the rank and ends every rank (MPI_Abort), so none waits on a dead peer.
    pub fn run(
        &self,
        device: &str,
        body: impl FnOnce(&Device, &Group) -> Result<()>,
    ) -> Result<()> {
        if !self.distributed {
            return body(&crate::device(device)?, &Group::default());
        }
        let device = crate::device_at(device, vt_dist::local_rank())?;
        if device.is_cuda() && !cfg!(feature = "nccl") {
            eprintln!("note: this build has no NCCL (--features nccl): CUDA gradients are all-reduced through host memory over MPI");
        }
        let group = vt_dist::init(&device)?;
        if self.sync_bn {
            vt_ops::collective::set_sync_batch_norm(Some(group.clone()));
        }
        let result = body(&device, &group);
        if let (Err(e), true) = (&result, group.is_distributed()) {
            eprintln!(
                "error on rank {} of {}: {}",
                group.rank(),
                group.world_size(),
                crate::error_text(e)
            );
            group.abort(1);
        }
        vt_ops::collective::set_sync_batch_norm(None);
        result
    }
}
