//! Developer and user automation for vt: `cargo xtask <command>`. `main` only dispatches;
//! each command lives in its own file, and its clap docs are its help.

mod bench_peer;
mod data;
mod eval;
mod flops;
mod infer;
mod list;
mod parity;
mod report;
mod reproduce;
mod run;
mod train;

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
    Train(train::Args),
    Eval(eval::Args),
    Reproduce(reproduce::Args),
    BenchPeer(bench_peer::Args),
}

/// `cpu`, or `cuda` (needs `--features cuda`).
pub fn device(name: &str) -> anyhow::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => Ok(candle_core::Device::new_cuda(0)?),
        other => anyhow::bail!("unknown device `{other}` (cpu or cuda)"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List(a) => list::run(a),
        Command::Data(a) => data::run(a),
        Command::Flops(a) => flops::run(a),
        Command::Parity(a) => parity::run(a),
        Command::Infer(a) => infer::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Reproduce(a) => reproduce::run(a),
        Command::BenchPeer(a) => bench_peer::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // candle attaches a backtrace to its errors when RUST_BACKTRACE is set; a user
            // needs the message, so only the text before the first frame is printed
            let msg = format!("{e:#}");
            let end = msg.find("\n   0: ").unwrap_or(msg.len());
            eprintln!("error: {}", &msg[..end]);
            ExitCode::FAILURE
        }
    }
}
