//! # vt-dist
//!
//! The process groups vt's data-parallel training runs on ([`vt_ops::ProcessGroup`]): one
//! process per rank, started by `mpirun -n N` or Slurm's `srun`, rank and world size from MPI.
//!
//! * [`init`]: the job's group. With the `mpi` feature, MPI's world (a process started
//!   without `mpirun` is a world of one); without it, an error naming the feature;
//! * `Mpi` (feature `mpi`): sums and broadcasts of host buffers over `MPI_COMM_WORLD`, and
//!   `MPI_Abort` so that a failing rank ends the job instead of leaving its peers waiting.
//!
//! The trainer (`vt_train::data_parallel`) and the loaders (`vt_data::Shard`) use the group;
//! this crate only connects the processes.

#[cfg(feature = "mpi")]
mod mpi_group;

#[cfg(feature = "mpi")]
pub use mpi_group::Mpi;

use vt_ops::Group;

/// The group of this process's job: MPI's world under `mpirun` / `srun`.
pub fn init() -> candle_core::Result<Group> {
    #[cfg(feature = "mpi")]
    {
        Ok(Group::new(Mpi::init()?))
    }
    #[cfg(not(feature = "mpi"))]
    {
        candle_core::bail!(
            "this build has no MPI: data-parallel training needs the `mpi` feature (cargo build --release -p xtask --features mpi, with OpenMPI installed: apt-get install openmpi-bin libopenmpi-dev libclang-dev)"
        )
    }
}
