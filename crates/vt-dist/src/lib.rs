//! # vt-dist
//!
//! The process groups vt's data-parallel training runs on ([`vt_ops::ProcessGroup`]): one
//! process per rank, started by `mpirun -n N` or Slurm's `srun`, rank and world size from MPI.
//!
//! * [`init`]: the job's group for the device its ranks train on. With the `mpi` feature,
//!   MPI's world (a process started without `mpirun` is a world of one); with `nccl` and a
//!   CUDA device, NCCL for CUDA tensors; without the features, an error naming them;
//! * `Mpi` (feature `mpi`): sums and broadcasts of host buffers over `MPI_COMM_WORLD`, and
//!   `MPI_Abort` so that a failing rank ends the job instead of leaving its peers waiting;
//! * `Nccl` (feature `nccl`): all-reduce and broadcast of CUDA tensors on the device, the
//!   rest over MPI (which carries NCCL's unique id);
//! * [`local_rank`]: the rank among those on this machine, which picks a rank's GPU.
//!
//! The trainer (`vt_train::data_parallel`) and the loaders (`vt_data::Shard`) use the group;
//! this crate only connects the processes.

#[cfg(feature = "mpi")]
mod mpi_group;
#[cfg(feature = "nccl")]
mod nccl_group;

#[cfg(feature = "mpi")]
pub use mpi_group::Mpi;
#[cfg(feature = "nccl")]
pub use nccl_group::Nccl;

use candle_core::Device;
use vt_ops::Group;

/// The group of this process's job (`mpirun` / `srun`) whose ranks train on `device`: NCCL
/// reduces CUDA tensors when built with `nccl`, MPI carries everything else (CUDA tensors too,
/// through host memory, in a build without `nccl`).
pub fn init(device: &Device) -> candle_core::Result<Group> {
    #[cfg(feature = "nccl")]
    if device.is_cuda() {
        return Ok(Group::new(Nccl::init(device)?));
    }
    #[cfg(feature = "mpi")]
    {
        let _ = device;
        Ok(Group::new(Mpi::init()?))
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = device;
        candle_core::bail!(
            "this build has no MPI: data-parallel training needs the `mpi` feature (cargo build --release -p xtask --features mpi, with OpenMPI installed: apt-get install openmpi-bin libopenmpi-dev libclang-dev; add `nccl` for CUDA)"
        )
    }
}

/// This process's rank among the job's ranks on its machine, from the launcher's environment
/// (OpenMPI, MPICH / Intel MPI, Slurm); 0 when started by none of them.
pub fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok()?.parse().ok())
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_local_rank_comes_from_the_launcher() {
        // the only test of this binary that touches these variables
        for k in [
            "OMPI_COMM_WORLD_LOCAL_RANK",
            "MPI_LOCALRANKID",
            "SLURM_LOCALID",
        ] {
            std::env::remove_var(k);
        }
        assert_eq!(super::local_rank(), 0);
        std::env::set_var("SLURM_LOCALID", "2");
        assert_eq!(super::local_rank(), 2);
        std::env::set_var("OMPI_COMM_WORLD_LOCAL_RANK", "3");
        assert_eq!(super::local_rank(), 3, "mpirun's variable comes first");
        std::env::set_var("OMPI_COMM_WORLD_LOCAL_RANK", "x");
        assert_eq!(super::local_rank(), 2, "an unreadable value is skipped");
    }
}
