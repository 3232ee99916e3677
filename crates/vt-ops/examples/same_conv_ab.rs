//! What the direct kernel of stride-1 "same" convolutions gains over im2col + GEMM, per conv
//! shape, measured in one run: `cargo run --release -p vt-ops --example same_conv_ab`.
//!
//! The kernel choice is read once per process (`VT_CPU_KERNELS=im2col` turns the direct kernel
//! off), so the example runs itself as a child, alternating the two, and prints the ratio
//! im2col time / default time of the medians (above 1: the default is faster).
//! `SAME_CONV_AB_BASE=narrow_tile` compares against another setting of `VT_CPU_KERNELS`
//! instead (there: the direct kernel's AVX2 tiles against its AVX-512VL ones).

use candle_core::{Device, Result, Tensor, Var};
use std::process::Command;
use std::time::Instant;

/// (batch, channels in = out, side): the 3×3 convs of the small-image models at 28 and 56 px
/// (width 1/4), full-width ResNet-18's first stage at 56 px, 7 px (where only the forward and
/// input gradient take the direct kernel, `MIN_SAME_WIDTH`), and 128 channels, past
/// `MAX_SAME_CHANNELS`, which stays on im2col: its ratio reads 1 within the noise, a control.
const SHAPES: &[(usize, usize, usize)] = &[
    (64, 16, 28),
    (64, 32, 14),
    (64, 64, 7),
    (64, 16, 56),
    (16, 64, 14),
    (8, 64, 56),
    (8, 128, 28),
];
const ITERS: usize = 15;
const ROUNDS: usize = 6;

/// Median forward and forward + backward milliseconds of each shape, one line per shape.
fn child() -> Result<()> {
    for &(n, c, hw) in SHAPES {
        let x = Var::from_tensor(&normal(&[n, c, hw, hw], 1.0, 1)?)?;
        let w = Var::from_tensor(&normal(&[c, c, 3, 3], 0.1, 2)?)?;
        let (mut fwd, mut both) = (vec![], vec![]);
        for i in 0..ITERS + 2 {
            let t0 = Instant::now();
            let y = vt_ops::conv::conv2d(x.as_tensor(), w.as_tensor(), 1, 1, 1, 1)?;
            let t1 = Instant::now();
            // the output gradient is all ones: only the conv's two backward passes run
            y.backward()?;
            if i >= 2 {
                fwd.push((t1 - t0).as_secs_f64());
                both.push(t0.elapsed().as_secs_f64());
            }
        }
        println!("{} {}", median(&mut fwd) * 1e3, median(&mut both) * 1e3);
    }
    Ok(())
}

fn normal(shape: &[usize], std: f64, seed: u64) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(
        vt_ops::Rng::new(seed).normal_vec(n, 0.0, std),
        shape,
        &Device::Cpu,
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    if std::env::var_os("SAME_CONV_AB_CHILD").is_some() {
        return child();
    }
    let exe = std::env::current_exe()?;
    let base = std::env::var("SAME_CONV_AB_BASE").unwrap_or_else(|_| "im2col".to_string());
    // [variant][shape] → (forward ms, forward + backward ms) of every round
    let mut times = vec![vec![(vec![], vec![]); SHAPES.len()]; 2];
    for round in 0..ROUNDS {
        // alternate which variant runs first: the last row (the same code in both) showed a
        // bias of several per cent for one position
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for v in order {
            let kernels = ["", base.as_str()][v];
            let out = Command::new(&exe)
                .env("SAME_CONV_AB_CHILD", "1")
                .env("VT_CPU_KERNELS", kernels)
                .output()?;
            if !out.status.success() {
                candle_core::bail!("child failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            for (s, line) in String::from_utf8_lossy(&out.stdout).lines().enumerate() {
                let ms: Vec<f64> = line.split(' ').filter_map(|t| t.parse().ok()).collect();
                times[v][s].0.push(ms[0]);
                times[v][s].1.push(ms[1]);
            }
        }
    }
    println!("| conv 3×3 s1 (N×C×H×W → C) | fwd default ms | fwd {base} ms | fwd ratio | fwd+bwd default ms | fwd+bwd {base} ms | fwd+bwd ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (s, &(n, c, hw)) in SHAPES.iter().enumerate() {
        let [(df, db), (if_, ib)] = [0, 1].map(|v| {
            let (f, b) = &mut times[v][s];
            (median(f), median(b))
        });
        println!(
            "| {n}×{c}×{hw}×{hw} | {df:.2} | {if_:.2} | {:.2} | {db:.2} | {ib:.2} | {:.2} |",
            if_ / df,
            ib / db
        );
    }
    Ok(())
}
