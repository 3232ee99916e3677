//! What the command tests share: running the binary, and a fresh temp directory.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs `xtask ARGS` (without RUST_BACKTRACE, so messages are as a user sees them).
pub fn xtask(args: &[&str]) -> Output {
    xtask_with(args, &[])
}

/// [`xtask`] with extra environment variables.
pub fn xtask_with(args: &[&str], env: &[(&str, &OsStr)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

/// An empty directory for test `name` of this process.
pub fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vt-xtask-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
