//! `cargo xtask bench-peer`: vt against PyTorch (and candle's own kernels) on the same model
//! workloads, in the same run, alternating, each workload in a fresh process so peak memory
//! is its own.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use vt_backbones::{
    preset, Fpn, Neck, NeckConfig, Preset, PresetKind, ResNet, SemanticFpn, SemanticFpnConfig,
    Task, VtFpn,
};
use vt_ops::{Rng, VarStore};
use vt_train::loss::{cross_entropy, pixel_cross_entropy, IGNORE_INDEX};
use vt_train::optim::{Optimizer, Sgd};

/// Time model workloads in vt and, when `--python` has torch, in PyTorch, alternating; print
/// times, the ratio PyTorch / vt (≥ 1 means vt is at least as fast), peak memory, forward
/// MACs, and for every `vt_X` beside its `X` the VT / base ratios of time and MACs.
///
/// Modes: `train` = forward + loss + backward + SGD step (cross entropy for classifiers,
/// per-pixel cross entropy with ignore index 255 for segmenters); `infer` = eval forward;
/// `neck` (segmentation models only) = forward + backward of the FPN / VT-FPN neck alone on
/// random C2..C5 of a `size` input (strides 4..32), its loss the sum of the levels' means.
/// The segmentation workload (not in the defaults):
/// `--models fpn_resnet50,vt_fpn_resnet50 --sizes 256 --batch 8 --modes train,neck`.
#[derive(clap::Args)]
pub struct Args {
    /// A python with torch and torchvision (e.g. a venv's bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Folder with vt_reference.py and vt_seg_reference.py, for the PyTorch VT models
    /// (default: the copies in benches/peer/reference).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Presets (`cargo xtask list`): classifiers and segmenters.
    #[arg(long, default_value = "resnet18,vt_resnet18", value_delimiter = ',')]
    models: Vec<String>,
    /// Input sizes (square); segmenters need multiples of 32.
    #[arg(long, default_value = "64,224", value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Modes to time; `neck` is skipped for classifiers.
    #[arg(
        long,
        value_enum,
        default_value = "train,infer,neck",
        value_delimiter = ','
    )]
    modes: Vec<Mode>,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Train,
    Infer,
    Neck,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Infer => "infer",
            Self::Neck => "neck",
        }
    }
}

/// Classes of the synthetic labels: classifiers get 10, segmenters 21 (PASCAL VOC's count).
fn classes(task: Task) -> usize {
    match task {
        Task::Classification => 10,
        Task::Segmentation => 21,
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Timing {
    median_ms: f64,
    min_ms: f64,
    peak_rss_mb: f64,
    /// Forward MACs per image (vt's counter; the PyTorch side does not count).
    #[serde(default)]
    gmacs: Option<f64>,
}

#[derive(Serialize)]
struct Row {
    model: String,
    mode: &'static str,
    size: usize,
    batch: usize,
    vt_ms: f64,
    torch_ms: Option<f64>,
    ratio: Option<f64>,
    candle_builtin_ms: Option<f64>,
    vt_peak_mb: f64,
    torch_peak_mb: Option<f64>,
    gmacs: Option<f64>,
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

/// `benches/peer/<rel>`, the PyTorch side: in the checkout this binary was built from, or else
/// under the current directory (a binary carried to another machine).
fn peer_path(rel: &str) -> PathBuf {
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../benches/peer")
        .join(rel);
    match built.exists() {
        true => built,
        false => PathBuf::from("benches/peer").join(rel),
    }
}

/// What a workload runs, with its targets.
#[allow(clippy::large_enum_variant)] // one per process
enum Net {
    Classifier(ResNet, Tensor),
    Segmenter(SemanticFpn, Tensor),
    Neck(Neck),
}

/// One built workload: the model, its inputs (an image batch, or C2..C5 for a neck) and its
/// forward MACs per image. `models.py` builds the same ones.
struct Workload {
    net: Net,
    x: Vec<Tensor>,
    macs: u64,
}

/// `n` synthetic labels: `i % k`, and for segmentation every tenth pixel ignored.
fn labels(n: usize, k: usize, ignore: bool) -> Vec<u32> {
    (0..n)
        .map(|i| match ignore && i % 10 == 9 {
            true => IGNORE_INDEX,
            false => (i % k) as u32,
        })
        .collect()
}

impl Workload {
    fn new(
        p: &Preset,
        mode: Mode,
        size: usize,
        batch: usize,
        vb: candle_nn::VarBuilder,
        dev: &Device,
    ) -> Result<Self> {
        let mut rng = Rng::new(1);
        let mut randn = |c: usize, h: usize| {
            let v = rng.normal_vec(batch * c * h * h, 0.0, 1.0);
            Tensor::from_vec(v, (batch, c, h, h), dev)
        };
        let k = classes(p.task());
        Ok(match (p.kind, mode) {
            (PresetKind::Classifier(c), Mode::Train | Mode::Infer) => {
                let net = ResNet::new(&(c.config)().with_classes(k), vb)?;
                let y = Tensor::from_vec(labels(batch, k, false), batch, dev)?;
                Self {
                    macs: net.cost(size, size).total().macs,
                    net: Net::Classifier(net, y),
                    x: vec![randn(3, size)?],
                }
            }
            (PresetKind::Segmenter(s), Mode::Train | Mode::Infer) => {
                let cfg = SemanticFpnConfig {
                    num_classes: k,
                    ..(s.config)()
                };
                let net = SemanticFpn::new(&cfg, vb)?;
                let y = labels(batch * size * size, k, true);
                Self {
                    macs: net.cost(size, size).total().macs,
                    net: Net::Segmenter(net, Tensor::from_vec(y, (batch, size, size), dev)?),
                    x: vec![randn(3, size)?],
                }
            }
            (PresetKind::Segmenter(s), Mode::Neck) => {
                let cfg = (s.config)();
                if !size.is_multiple_of(32) {
                    bail!(
                        "neck at {size} px: the size must be a multiple of 32 (C5 is at stride 32)"
                    );
                }
                // C2..C5 of the ImageNet-stem trunk: strides 4..32
                let t = &cfg.trunk;
                let chans: Vec<usize> = t.widths.iter().map(|w| w * t.block.expansion()).collect();
                let sizes: Vec<(usize, usize)> = (0..chans.len())
                    .map(|i| (size >> (i + 2), size >> (i + 2)))
                    .collect();
                let d = cfg.fpn_channels;
                let neck = match &cfg.neck {
                    NeckConfig::Fpn => Neck::Fpn(Fpn::new(&chans, d, vb)?),
                    NeckConfig::VtFpn(v) => Neck::VtFpn(VtFpn::new(&chans, d, v, vb)?),
                };
                Self {
                    macs: neck.cost(&sizes).macs,
                    net: Net::Neck(neck),
                    x: chans
                        .iter()
                        .zip(&sizes)
                        .map(|(&c, &(h, _))| randn(c, h))
                        .collect::<candle_core::Result<_>>()?,
                }
            }
            (PresetKind::Classifier(_), Mode::Neck) => {
                bail!(
                    "`neck` times a segmentation model's neck; `{}` is a classifier",
                    p.name
                )
            }
        })
    }

    /// The outputs: logits, or P2..P5 for a neck.
    fn forward(&self, train: bool) -> Result<Vec<Tensor>> {
        Ok(match &self.net {
            Net::Classifier(n, _) => vec![n.forward_t(&self.x[0], train)?],
            Net::Segmenter(n, _) => vec![n.forward_t(&self.x[0], train)?],
            Net::Neck(n) => n.forward(&self.x, train)?,
        })
    }

    /// The training loss; a neck has no target, so the sum of its levels' means stands in.
    fn loss(&self) -> Result<Tensor> {
        let out = self.forward(true)?;
        Ok(match &self.net {
            Net::Classifier(_, y) => cross_entropy(&out[0], y, 0.0)?,
            Net::Segmenter(_, y) => pixel_cross_entropy(&out[0], y, IGNORE_INDEX)?,
            Net::Neck(_) => {
                let means = out
                    .iter()
                    .map(Tensor::mean_all)
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::stack(&means, 0)?.sum_all()?
            }
        })
    }
}

/// One vt workload in this process.
fn single(spec: &str, batch: usize, iters: usize, device: &str) -> Result<Timing> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [model, mode, size] = parts.as_slice() else {
        bail!("workload `{spec}` is not model:mode:size")
    };
    let mode: Mode = clap::ValueEnum::from_str(mode, false)
        .map_err(|_| anyhow!("unknown mode `{mode}` in `{spec}` (train, infer or neck)"))?;
    let dev = crate::device(device)?;
    let store = VarStore::seeded(0, DType::F32, &dev);
    let w = Workload::new(
        preset(model)?,
        mode,
        size.parse()?,
        batch,
        store.var_builder(),
        &dev,
    )?;
    let mut opt = Sgd::new(
        vt_train::optim::param_groups(&store.vars(), 0.0),
        0.9,
        false,
    )?;
    let mut step = || -> Result<()> {
        match mode {
            Mode::Train => opt.step(&w.loss()?.backward()?, 0.01)?,
            Mode::Neck => drop(w.loss()?.backward()?),
            Mode::Infer => drop(w.forward(false)?),
        }
        // GPU work is queued; the time must include it
        dev.synchronize()?;
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
        gmacs: Some(w.macs as f64 / 1e9),
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
    let common = [
        "--batch".to_string(),
        args.batch.to_string(),
        "--iters".to_string(),
        args.iters.to_string(),
        "--device".to_string(),
        args.device.clone(),
    ];
    let vt = |spec: &str, candle: bool| -> Result<Timing> {
        let mut cmd = Command::new(&exe);
        cmd.args(["bench-peer", "--single", spec]).args(&common);
        if candle {
            cmd.env("VT_CPU_KERNELS", "candle");
        }
        parse(cmd.output()?, &format!("vt {spec}"))
    };
    let torch = |p: &Preset, mode: Mode, size: usize| -> Result<Option<Timing>> {
        let Some(py) = &args.python else {
            return Ok(None);
        };
        let mut cmd = Command::new(py);
        cmd.arg(peer_path("models.py"))
            .args(["--model", p.name, "--mode", mode.name()])
            .args(["--size", &size.to_string()])
            .args(["--classes", &classes(p.task()).to_string()])
            .args(&common);
        let reference = args
            .reference
            .clone()
            .unwrap_or_else(|| peer_path("reference"));
        if reference.join("vt_reference.py").exists() {
            cmd.arg("--reference").arg(&reference);
        }
        let what = format!("torch {} {} {size}", p.name, mode.name());
        Ok(Some(parse(cmd.output()?, &what)?))
    };
    let load_before = load();
    let mut rows = vec![];
    for model in &args.models {
        let p = preset(model)?;
        for &size in &args.sizes {
            for &mode in &args.modes {
                if mode == Mode::Neck && p.task() != Task::Segmentation {
                    continue;
                }
                let spec = format!("{model}:{}:{size}", mode.name());
                let (mut v, mut t, mut c) = (vec![], vec![], vec![]);
                let (mut vmem, mut tmem, mut gmacs) = (0f64, None, None);
                for _ in 0..args.reps {
                    let a = vt(&spec, false)?;
                    vmem = vmem.max(a.peak_rss_mb);
                    gmacs = a.gmacs;
                    v.push(a.median_ms);
                    if let Some(b) = torch(p, mode, size)? {
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
                    model: model.clone(),
                    mode: mode.name(),
                    size,
                    batch: args.batch,
                    vt_ms,
                    torch_ms,
                    ratio: torch_ms.map(|t| t / vt_ms),
                    candle_builtin_ms: (!c.is_empty()).then(|| median(c)),
                    vt_peak_mb: vmem,
                    torch_peak_mb: tmem,
                    gmacs,
                });
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let opt = |x: Option<f64>, p: usize| x.map_or("-".to_string(), |v| format!("{v:.p$}"));
    println!("| workload | vt ms | PyTorch ms | PyTorch / vt | candle built-in ms | vt peak MB | PyTorch peak MB | GMACs / image |\n|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} {} {}px b{} | {:.0} | {} | {} | {} | {:.0} | {} | {} |",
            r.model,
            r.mode,
            r.size,
            r.batch,
            r.vt_ms,
            opt(r.torch_ms, 0),
            opt(r.ratio, 2),
            opt(r.candle_builtin_ms, 0),
            r.vt_peak_mb,
            opt(r.torch_peak_mb, 0),
            opt(r.gmacs, 2)
        );
    }
    print_pairs(&rows);
    println!(
        "\nload average (1/5/15 min) before: {load_before}; after: {}",
        load()
    );
    Ok(())
}

/// Each `vt_X` row beside its `X` row (same mode and size): VT / base of MACs and of time,
/// in vt and in PyTorch (e.g. the VT-FPN neck against the FPN neck).
fn print_pairs(rows: &[Row]) {
    let pairs: Vec<(&Row, &Row)> = rows
        .iter()
        .filter_map(|v| {
            let base = v.model.strip_prefix("vt_")?;
            let b = rows
                .iter()
                .find(|b| b.model == base && b.mode == v.mode && b.size == v.size)?;
            Some((v, b))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_string(),
    };
    println!("\n| VT / base | mode | size | MACs | vt time | PyTorch time |\n|---|---|---:|---:|---:|---:|");
    for (v, b) in pairs {
        println!(
            "| {} / {} | {} | {} | {} | {} | {} |",
            v.model,
            b.model,
            v.mode,
            v.size,
            ratio(v.gmacs, b.gmacs),
            ratio(Some(v.vt_ms), Some(b.vt_ms)),
            ratio(v.torch_ms, b.torch_ms)
        );
    }
}
