//! [`vt_ops::ProcessGroup`] over MPI's world communicator (rsmpi).

use candle_core::{bail, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;
use std::sync::Mutex;

/// MPI's world. Dropping it finalises MPI, so it lives as long as the job's [`vt_ops::Group`].
pub struct Mpi {
    /// Every call goes through this lock: MPI is initialised for one calling thread at a time.
    world: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    // declared last: dropped after `world`, it calls MPI_Finalize
    _universe: Universe,
}

// SAFETY: MPI handles are plain integers or pointers owned by the MPI library; with
// `Threading::Serialized` any thread may call MPI as long as calls do not overlap, which the
// mutex guarantees.
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

impl Mpi {
    /// Initialises MPI (once per process). Started without `mpirun` it is a world of one.
    pub fn init() -> Result<Self> {
        let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Serialized)
        else {
            bail!("MPI is already initialised in this process (vt_dist::init runs once)")
        };
        if threading < Threading::Serialized {
            bail!("this MPI library offers {threading:?} threading; vt needs Serialized (calls from any one thread at a time)")
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Self {
            world: Mutex::new(world),
            rank,
            size,
            _universe: universe,
        })
    }

    /// Copies rank `root`'s bytes into every other rank's `buf` (NCCL's unique id travels so).
    #[cfg_attr(not(feature = "nccl"), allow(dead_code))]
    pub(crate) fn broadcast_bytes(&self, buf: &mut [u8], root: usize) {
        self.with(|w| w.process_at_rank(root as i32).broadcast_into(buf));
    }

    fn with<T>(&self, f: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        f(&self.world.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl vt_ops::ProcessGroup for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<()> {
        let send = buf.to_vec();
        self.with(|w| w.all_reduce_into(&send[..], buf, SystemOperation::sum()));
        Ok(())
    }

    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()> {
        let send = buf.to_vec();
        self.with(|w| w.all_reduce_into(&send[..], buf, SystemOperation::sum()));
        Ok(())
    }

    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()> {
        self.with(|w| w.process_at_rank(root as i32).broadcast_into(buf));
        Ok(())
    }

    fn broadcast_f64(&self, buf: &mut [f64], root: usize) -> Result<()> {
        self.with(|w| w.process_at_rank(root as i32).broadcast_into(buf));
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.with(|w| w.barrier());
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        // not through the lock: the failing thread may hold it
        let world = SimpleCommunicator::world();
        world.abort(code)
    }
}
