//! Developer and user automation for vt: `cargo xtask <command>`. `main` only dispatches;
//! each command lives in its own file, and its clap docs are its help.

mod bench_peer;
mod data;
mod eval;
mod flops;
mod infer;
mod launch;
mod list;
mod parity;
mod plots;
mod report;
mod reproduce;
mod run;
mod seg_report;
mod token_report;
mod train;
mod visualize;

use clap::{Parser, Subcommand};

// candle allocates a fresh buffer for every op; mimalloc reuses freed pages instead of
// returning them to the OS and faulting them in again (measured in bench-peer).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "vt: Visual Transformers in Rust — experiments and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    List(list::Args),
    Data(data::Args),
    Flops(flops::Args),
    Parity(parity::Args),
    Infer(infer::Args),
    Visualize(visualize::Args),
    Train(train::Args),
    Eval(eval::Args),
    Reproduce(reproduce::Args),
    BenchPeer(bench_peer::Args),
}

/// `cpu`, or `cuda` (needs `--features cuda`): the first GPU.
pub fn device(name: &str) -> anyhow::Result<candle_core::Device> {
    device_at(name, 0)
}

/// [`device`], with `cuda` meaning GPU `index % GPUs` (a data-parallel rank's GPU).
pub fn device_at(name: &str, index: usize) -> anyhow::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => Ok(candle_core::Device::new_cuda(index % gpu_count())?),
        other => anyhow::bail!("unknown device `{other}` (cpu or cuda)"),
    }
}

#[cfg(feature = "cuda")]
fn gpu_count() -> usize {
    candle_core::cuda::cudarc::driver::CudaContext::device_count().map_or(1, |n| n.max(1) as usize)
}

#[cfg(not(feature = "cuda"))]
fn gpu_count() -> usize {
    1
}

/// Runtime settings for CPU training, each measured on a ResNet-18 train step (batch 32, 64 px,
/// 2 cores). A setting already in the environment wins.
fn tune_cpu_runtime() {
    // candle's elementwise pool spins 25,000 times after each op before parking; with vt's
    // GEMM threads on the same cores that spinning took 8 % of the step's CPU samples
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100");
    }
    // mimalloc hands freed pages back to the OS after 10 ms, and candle frees and reallocates
    // every activation each step, so each step faulted (and zeroed) them in again: 29,000 page
    // faults per run, 600 with purging off. A training process reuses its peak anyway.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // mi_option_purge_delay in mimalloc's `mi_option_e` (the Rust bindings lack the name)
        const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
        // SAFETY: sets a process-wide option; mimalloc reads it on its next purge
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() -> ExitCode {
    tune_cpu_runtime();
    let cli = Cli::parse();
    // every command's model steps on the CPU kernels' own thread pool
    let result = vt_ops::in_thread_pool(|| match cli.command {
        Command::List(a) => list::run(a),
        Command::Data(a) => data::run(a),
        Command::Flops(a) => flops::run(a),
        Command::Parity(a) => parity::run(a),
        Command::Infer(a) => infer::run(a),
        Command::Visualize(a) => visualize::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Reproduce(a) => reproduce::run(a),
        Command::BenchPeer(a) => bench_peer::run(a),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes for a user: candle attaches a backtrace to its errors when
/// RUST_BACKTRACE is set, and only the text before the first frame is kept.
fn error_text(e: &anyhow::Error) -> String {
    let msg = format!("{e:#}");
    let end = msg.find("\n   0: ").unwrap_or(msg.len());
    msg[..end].to_string()
}
