//! `cargo xtask bench-peer`: vt against PyTorch (and candle's own kernels) on the same model
//! workloads, in the same run, alternating, each workload in a fresh process so peak memory
//! is its own.

use anyhow::{bail, Context, Result};
use candle_core::{DType, ModuleT, Tensor};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use vt_backbones::{preset, ResNet};
use vt_ops::{Rng, VarStore};
use vt_train::optim::{Optimizer, Sgd};

/// Time model workloads (train step = forward + backward + SGD step; inference = eval forward)
/// in vt and, when `--python` has torch, in PyTorch, alternating; print times, the ratio
/// PyTorch / vt (≥ 1 means vt is at least as fast), peak memory and the machine load.
#[derive(clap::Args)]
pub struct Args {
    /// A python with torch and torchvision (e.g. a venv's bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Folder with vt_reference.py, for the PyTorch VT-ResNet.
    #[arg(long, default_value = "../shared/reference")]
    reference: PathBuf,
    #[arg(long, default_value = "resnet18,vt_resnet18", value_delimiter = ',')]
    models: Vec<String>,
    #[arg(long, default_value = "64,224", value_delimiter = ',')]
    sizes: Vec<usize>,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Timed iterations per measurement (after one warm-up).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Alternating repetitions per workload (the median is reported).
    #[arg(long, default_value_t = 2)]
    reps: usize,
    /// Also time vt with candle's built-in CPU conv / batch norm (VT_CPU_KERNELS=candle).
    #[arg(long)]
    candle_builtin: bool,
    #[arg(long)]
    json: bool,
    /// cpu, or cuda (needs `--features cuda`; PyTorch then runs on its GPU too, and the
    /// peak columns are host memory, not GPU memory).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Internal: run one vt workload `model:mode:size` and print its JSON.
    #[arg(long, hide = true)]
    single: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Timing {
    median_ms: f64,
    min_ms: f64,
    peak_rss_mb: f64,
}

#[derive(Serialize)]
struct Row {
    workload: String,
    vt_ms: f64,
    torch_ms: Option<f64>,
    ratio: Option<f64>,
    candle_builtin_ms: Option<f64>,
    vt_peak_mb: f64,
    torch_peak_mb: Option<f64>,
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The PyTorch side, `benches/peer/models.py`: in the checkout this binary was built from, or
/// else under the current directory (a binary carried to another machine).
fn peer_script() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/peer/models.py");
    match built.exists() {
        true => built,
        false => PathBuf::from("benches/peer/models.py"),
    }
}

/// One vt workload in this process.
fn single(spec: &str, batch: usize, iters: usize, device: &str) -> Result<Timing> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [model, mode, size] = parts.as_slice() else {
        bail!("workload `{spec}` is not model:mode:size")
    };
    let size: usize = size.parse()?;
    let dev = crate::device(device)?;
    let cfg = (preset(model)?.config)().with_classes(10);
    let store = VarStore::seeded(0, DType::F32, &dev);
    let net = ResNet::new(&cfg, store.var_builder())?;
    let x = Tensor::from_vec(
        Rng::new(1).normal_vec(batch * 3 * size * size, 0.0, 1.0),
        (batch, 3, size, size),
        &dev,
    )?;
    let y = Tensor::from_vec(
        (0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(),
        batch,
        &dev,
    )?;
    let mut opt = Sgd::new(
        vt_train::optim::param_groups(&store.vars(), 0.0),
        0.9,
        false,
    )?;
    let mut step = || -> Result<()> {
        match *mode {
            "train" => {
                let loss = vt_train::loss::cross_entropy(&net.forward_t(&x, true)?, &y, 0.0)?;
                opt.step(&loss.backward()?, 0.01)?;
                // GPU work is queued; the time must include it
                dev.synchronize()?;
            }
            "infer" => {
                net.forward_t(&x, false)?.to_vec2::<f32>()?;
            }
            other => bail!("unknown mode `{other}` (train or infer)"),
        }
        Ok(())
    };
    step()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        step()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(Timing {
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        peak_rss_mb: peak_rss_mb(),
    })
}

fn parse(out: std::process::Output, what: &str) -> Result<Timing> {
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("{what} printed `{line}`"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: Args) -> Result<()> {
    if let Some(spec) = &args.single {
        println!(
            "{}",
            serde_json::to_string(&single(spec, args.batch, args.iters, &args.device)?)?
        );
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let vt = |spec: &str, candle: bool| -> Result<Timing> {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "bench-peer",
            "--single",
            spec,
            "--batch",
            &args.batch.to_string(),
            "--iters",
            &args.iters.to_string(),
            "--device",
            &args.device,
        ]);
        if candle {
            cmd.env("VT_CPU_KERNELS", "candle");
        }
        parse(cmd.output()?, &format!("vt {spec}"))
    };
    let torch = |model: &str, mode: &str, size: usize| -> Result<Option<Timing>> {
        let Some(py) = &args.python else {
            return Ok(None);
        };
        let script = peer_script();
        let mut cmd = Command::new(py);
        cmd.arg(&script).args([
            "--model",
            model,
            "--mode",
            mode,
            "--size",
            &size.to_string(),
            "--batch",
            &args.batch.to_string(),
            "--iters",
            &args.iters.to_string(),
            "--device",
            &args.device,
        ]);
        if args.reference.join("vt_reference.py").exists() {
            cmd.arg("--reference").arg(&args.reference);
        }
        Ok(Some(parse(
            cmd.output()?,
            &format!("torch {model} {mode} {size}"),
        )?))
    };
    let load_before = load();
    let mut rows = vec![];
    for model in &args.models {
        for &size in &args.sizes {
            for mode in ["train", "infer"] {
                let spec = format!("{model}:{mode}:{size}");
                let (mut v, mut t, mut c) = (vec![], vec![], vec![]);
                let (mut vmem, mut tmem) = (0f64, None);
                for _ in 0..args.reps {
                    let a = vt(&spec, false)?;
                    vmem = vmem.max(a.peak_rss_mb);
                    v.push(a.median_ms);
                    if let Some(b) = torch(model, mode, size)? {
                        tmem = Some(tmem.unwrap_or(0f64).max(b.peak_rss_mb));
                        t.push(b.median_ms);
                    }
                    if args.candle_builtin {
                        c.push(vt(&spec, true)?.median_ms);
                    }
                }
                let vt_ms = median(v);
                let torch_ms = (!t.is_empty()).then(|| median(t));
                rows.push(Row {
                    workload: format!("{model} {mode} {size}px b{}", args.batch),
                    vt_ms,
                    torch_ms,
                    ratio: torch_ms.map(|t| t / vt_ms),
                    candle_builtin_ms: (!c.is_empty()).then(|| median(c)),
                    vt_peak_mb: vmem,
                    torch_peak_mb: tmem,
                });
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let opt = |x: Option<f64>, p: usize| x.map_or("-".to_string(), |v| format!("{v:.p$}"));
    println!("| workload | vt ms | PyTorch ms | PyTorch / vt | candle built-in ms | vt peak MB | PyTorch peak MB |\n|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {} | {} | {} | {:.0} | {} |",
            r.workload,
            r.vt_ms,
            opt(r.torch_ms, 0),
            opt(r.ratio, 2),
            opt(r.candle_builtin_ms, 0),
            r.vt_peak_mb,
            opt(r.torch_peak_mb, 0)
        );
    }
    println!(
        "\nload average (1/5/15 min) before: {load_before}; after: {}",
        load()
    );
    Ok(())
}
