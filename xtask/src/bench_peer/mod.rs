//! `cargo xtask bench-peer`: vt against PyTorch (and candle's own kernels) on the same model
//! workloads, in the same run, alternating, each workload in a fresh process so peak memory
//! is its own.

mod end_to_end;
mod workload;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::process::Command;
use vt_backbones::{preset, Task};
use workload::{Recipe, Spec, Timing};

/// Time model workloads in vt and, when `--python` has torch, in PyTorch, alternating; print
/// times, the ratio PyTorch / vt (≥ 1 means vt is at least as fast), peak memory, forward
/// MACs, and for every `vt_X` beside its `X` the VT / base ratios of time and MACs.
///
/// Modes: `train` = forward + loss + backward + optimizer step (cross entropy for classifiers,
/// per-pixel cross entropy with ignore index 255 for segmenters); `infer` = eval forward;
/// `neck` (segmentation models only) = forward + backward of the FPN / VT-FPN neck alone on
/// random C2..C5 of a `size` input (strides 4..32), its loss the sum of the levels' means.
///
/// Without `--models` the suite's rows run (`all` by default); `--models` times one group of
/// rows from `--sizes`, `--modes`, `--batch` and `--recipe` instead.
#[derive(clap::Args)]
pub struct Args {
    /// A python with torch and torchvision (e.g. a venv's bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Folder with vt_reference.py and vt_seg_reference.py, for the PyTorch VT models
    /// (default: the copies in benches/peer/reference).
    #[arg(long)]
    reference: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "all")]
    suite: Suite,
    /// Presets (`cargo xtask list`): classifiers and segmenters.
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Input sizes (square; segmenters need multiples of 32). Default: the recipe's
    /// (plain: 64 and 224 for classifiers, 256 for segmenters; reproduce: the size
    /// `reproduce --preset cpu` trains the model at).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Modes to time; `neck` is skipped for classifiers.
    #[arg(long, value_enum, default_value = "train,infer", value_delimiter = ',')]
    modes: Vec<Mode>,
    /// Batch size (default: the recipe's; plain 32 for classifiers, 8 for segmenters;
    /// reproduce: the preset's batch for the model).
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long, value_enum, default_value = "plain")]
    recipe: Recipe,
    /// Timed iterations per measurement, after `workload::WARMUP` untimed ones on both sides (the
    /// first steps of either framework allocate and pick kernels).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Alternating repetitions per workload (the median is reported).
    #[arg(long, default_value_t = 2)]
    reps: usize,
    /// Also time vt with candle's built-in CPU conv / batch norm (VT_CPU_KERNELS=candle).
    #[arg(long)]
    candle_builtin: bool,
    /// Print JSON: the rows (or with `--interleave`, one line with each workload's timing).
    #[arg(long)]
    json: bool,
    /// cpu, or cuda (needs `--features cuda`; PyTorch then runs on its GPU too, and the
    /// peak columns are host memory, not GPU memory).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Instead of the step rows: a whole `train` run of the first of `--models` (default
    /// resnet18) with the default recipe against `benches/peer/train.py`, each timed from start
    /// to exit (needs `--python`).
    #[arg(long)]
    end_to_end: bool,
    /// End to end: the IDX data folder (default: the full Fashion-MNIST of the Debian package).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    data: PathBuf,
    /// End to end: epochs and the class-balanced training subset.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 8000)]
    train_limit: usize,
    /// End to end: where both runs write.
    #[arg(long, default_value = "runs/bench-peer")]
    out: PathBuf,
    /// Internal: run one vt workload `model:mode:size:batch:recipe` and print its JSON.
    #[arg(long, hide = true)]
    single: Option<String>,
    /// Time these vt workloads (`model:mode:size:batch:recipe`, comma-separated) in one process,
    /// a step of each in turn, and print each one's JSON and its median's ratio to the first's:
    /// e.g. a VT model's step against its ResNet's, steadier on a shared host than separate runs.
    #[arg(long, value_delimiter = ',')]
    interleave: Vec<String>,
    /// With `--interleave`: an A/B of an environment setting (`KEY=VALUE`, several joined by
    /// `+`, e.g. a candle or vt tuning variable) in `--reps` pairs of processes, the order
    /// alternating; prints each workload's time with the setting / without, per pair and the
    /// median. For settings read once per process, which `--interleave` alone cannot switch.
    #[arg(long)]
    env_ab: Option<String>,
}

/// Named sets of rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
    /// ResNet-18 and VT-ResNet-18 as the paper sizes them, at 64 and 224 px, batch 32,
    /// train and infer, plain SGD.
    Paper,
    /// The models `reproduce --preset cpu` trains, as it trains them (`Recipe::Reproduce`, at
    /// the preset's image size and batch: ResNet-18/34 and VT-ResNet-18/34 train and infer,
    /// the FPN and VT-FPN R-50 train step), and `train --model M`'s default workload
    /// (ResNet-18 / VT-ResNet-18 at 28 px, batch 64).
    Reproduce,
    /// Both.
    All,
}

/// The rows of a suite.
fn suite_rows(suite: Suite) -> Result<Vec<Spec>> {
    let row = |model: &str, mode, size, batch, recipe| Spec {
        model: model.into(),
        mode,
        size,
        batch,
        recipe,
    };
    let mut rows = vec![];
    if matches!(suite, Suite::Paper | Suite::All) {
        for m in ["resnet18", "vt_resnet18"] {
            for size in [64, 224] {
                for mode in [Mode::Train, Mode::Infer] {
                    rows.push(row(m, mode, size, 32, Recipe::Plain));
                }
            }
        }
    }
    if matches!(suite, Suite::Reproduce | Suite::All) {
        for m in vt_run::reproduce::CLASSIFICATION {
            let (size, batch) = Recipe::Reproduce.geometry(m)?;
            for mode in [Mode::Train, Mode::Infer] {
                rows.push(row(m, mode, size, batch, Recipe::Reproduce));
            }
        }
        for m in vt_run::reproduce::SEGMENTATION {
            let (size, batch) = Recipe::Reproduce.geometry(m)?;
            rows.push(row(m, Mode::Train, size, batch, Recipe::Reproduce));
        }
        // `train --model M` with no other flag: 28 px, batch 64
        let default = vt_run::RunConfig::small_data("resnet18", 1, 64);
        let (size, batch) = (default.data.image_size, default.train.batch_size);
        for m in ["resnet18", "vt_resnet18"] {
            for mode in [Mode::Train, Mode::Infer] {
                rows.push(row(m, mode, size, batch, Recipe::Reproduce));
            }
        }
    }
    Ok(rows)
}

/// The rows of `--models`, with the recipe's sizes and batch where not given.
fn custom_rows(args: &Args) -> Result<Vec<Spec>> {
    let mut rows = vec![];
    for model in &args.models {
        let task = preset(model)?.task();
        let (recipe_size, recipe_batch) = args.recipe.geometry(model)?;
        let sizes = match (args.sizes.is_empty(), task, args.recipe) {
            (false, ..) => args.sizes.clone(),
            (true, Task::Classification, Recipe::Plain) => vec![64, 224],
            (true, ..) => vec![recipe_size],
        };
        let batch = args.batch.unwrap_or(recipe_batch);
        for &size in &sizes {
            for &mode in &args.modes {
                if mode == Mode::Neck && task != Task::Segmentation {
                    continue;
                }
                rows.push(Spec {
                    model: model.clone(),
                    mode,
                    size,
                    batch,
                    recipe: args.recipe,
                });
            }
        }
    }
    Ok(rows)
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

#[derive(Serialize)]
struct Row {
    model: String,
    mode: &'static str,
    size: usize,
    batch: usize,
    recipe: &'static str,
    vt_ms: f64,
    torch_ms: Option<f64>,
    ratio: Option<f64>,
    /// PyTorch's fastest step over every repetition / vt's: on a shared host, slow spells
    /// lengthen steps but never shorten them, so this moves less between runs than `ratio`.
    fastest_ratio: Option<f64>,
    candle_builtin_ms: Option<f64>,
    vt_peak_mb: f64,
    torch_peak_mb: Option<f64>,
    gmacs: Option<f64>,
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

/// The JSON on the last line a child printed (a `Timing`, or `--interleave --json`'s list).
fn parse<T: serde::de::DeserializeOwned>(out: std::process::Output, what: &str) -> Result<T> {
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("{what} printed `{line}`"))
}

/// `--env-ab`: `--interleave`'s workloads in pairs of child processes, one with `setting` in
/// its environment and one without, the order alternating pair by pair.
fn env_ab(args: &Args, setting: &str) -> Result<()> {
    let vars = setting
        .split('+')
        .map(|kv| {
            kv.split_once('=')
                .with_context(|| format!("--env-ab `{kv}`: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    if args.interleave.is_empty() {
        bail!("--env-ab {setting}: give the workloads with --interleave");
    }
    let exe = std::env::current_exe()?;
    let run = |with: bool| -> Result<Vec<f64>> {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "bench-peer",
            "--json",
            "--interleave",
            &args.interleave.join(","),
        ])
        .args(["--iters", &args.iters.to_string(), "--device", &args.device]);
        for (k, v) in &vars {
            match with {
                true => cmd.env(k, v),
                false => cmd.env_remove(k),
            };
        }
        let times: Vec<Timing> = parse(cmd.output()?, &format!("--env-ab child ({with})"))?;
        Ok(times.iter().map(|t| t.median_ms).collect())
    };
    let n = args.interleave.len();
    let mut ratios = vec![vec![]; n];
    for pair in 0..args.reps {
        let (with, without) = match pair % 2 {
            0 => {
                let w = run(true)?;
                (w, run(false)?)
            }
            _ => {
                let wo = run(false)?;
                (run(true)?, wo)
            }
        };
        for (i, r) in ratios.iter_mut().enumerate() {
            r.push(with[i] / without[i]);
        }
        println!(
            "pair {pair}: {}",
            (0..n)
                .map(|i| format!("{:.1}/{:.1} ms", with[i], without[i]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("time with {setting} / without (below 1: the setting is faster):");
    for (spec, r) in args.interleave.iter().zip(ratios) {
        let all: Vec<String> = r.iter().map(|x| format!("{x:.3}")).collect();
        println!("  {spec}: median {:.3} ({})", median(r), all.join(" "));
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: Args) -> Result<()> {
    if let Some(spec) = &args.single {
        let t = workload::single(spec, args.iters, &args.device)?;
        println!("{}", serde_json::to_string(&t)?);
        return Ok(());
    }
    if let Some(setting) = &args.env_ab {
        return env_ab(&args, setting);
    }
    if !args.interleave.is_empty() {
        let specs: Vec<&str> = args.interleave.iter().map(String::as_str).collect();
        let times = workload::interleaved(&specs, args.iters, &args.device)?;
        if args.json {
            println!("{}", serde_json::to_string(&times)?);
            return Ok(());
        }
        for (spec, t) in specs.iter().zip(&times) {
            println!(
                "{spec}: {} (median / first's {:.3})",
                serde_json::to_string(t)?,
                t.median_ms / times[0].median_ms
            );
        }
        return Ok(());
    }
    let reference = args
        .reference
        .clone()
        .unwrap_or_else(|| peer_path("reference"));
    if args.python.is_some() && !reference.join("vt_reference.py").is_file() {
        bail!(
            "--reference {}: no vt_reference.py there (the PyTorch reference the VT and \
             segmentation models are built from); give --reference DIR",
            reference.display()
        )
    }
    if args.end_to_end {
        let Some(python) = &args.python else {
            bail!("--end-to-end compares with PyTorch: give --python")
        };
        return end_to_end::EndToEnd {
            python,
            reference,
            data: args.data.clone(),
            model: args.models.first().map_or("resnet18", String::as_str),
            epochs: args.epochs,
            train_limit: args.train_limit,
            out: args.out.clone(),
        }
        .run(args.reps);
    }
    let specs = match args.models.is_empty() {
        true => suite_rows(args.suite)?,
        false => custom_rows(&args)?,
    };
    let exe = std::env::current_exe()?;
    let common = [
        "--iters".to_string(),
        args.iters.to_string(),
        "--device".to_string(),
        args.device.clone(),
    ];
    let vt = |spec: &Spec, candle: bool| -> Result<Timing> {
        let mut cmd = Command::new(&exe);
        cmd.args(["bench-peer", "--single", &spec.encode()])
            .args(&common);
        if candle {
            cmd.env("VT_CPU_KERNELS", "candle");
        }
        parse(cmd.output()?, &format!("vt {}", spec.encode()))
    };
    let torch = |spec: &Spec| -> Result<Option<Timing>> {
        let Some(py) = &args.python else {
            return Ok(None);
        };
        let mut cmd = Command::new(py);
        cmd.arg(peer_path("models.py"))
            .args(spec.torch_args()?)
            .args(&common);
        cmd.arg("--reference").arg(&reference);
        Ok(Some(parse(
            cmd.output()?,
            &format!("torch {}", spec.encode()),
        )?))
    };
    let load_before = load();
    let mut rows = vec![];
    for spec in &specs {
        let (mut v, mut t, mut c) = (vec![], vec![], vec![]);
        let (mut vmem, mut tmem, mut gmacs) = (0f64, None, None);
        let (mut vt_fastest, mut torch_fastest) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..args.reps {
            let a = vt(spec, false)?;
            vmem = vmem.max(a.peak_rss_mb);
            vt_fastest = vt_fastest.min(a.min_ms);
            gmacs = a.gmacs;
            v.push(a.median_ms);
            if let Some(b) = torch(spec)? {
                // both sides must time the same model
                if b.params.is_some() && b.params != a.params {
                    bail!(
                        "{}: PyTorch's model has {:?} parameters, vt's {:?}",
                        spec.encode(),
                        b.params,
                        a.params
                    );
                }
                tmem = Some(tmem.unwrap_or(0f64).max(b.peak_rss_mb));
                torch_fastest = torch_fastest.min(b.min_ms);
                t.push(b.median_ms);
            }
            if args.candle_builtin {
                c.push(vt(spec, true)?.median_ms);
            }
        }
        let vt_ms = median(v);
        let torch_ms = (!t.is_empty()).then(|| median(t));
        rows.push(Row {
            model: spec.model.clone(),
            mode: spec.mode.name(),
            size: spec.size,
            batch: spec.batch,
            recipe: spec.recipe.name(),
            vt_ms,
            torch_ms,
            ratio: torch_ms.map(|t| t / vt_ms),
            fastest_ratio: torch_ms.map(|_| torch_fastest / vt_fastest),
            candle_builtin_ms: (!c.is_empty()).then(|| median(c)),
            vt_peak_mb: vmem,
            torch_peak_mb: tmem,
            gmacs,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let opt = |x: Option<f64>, p: usize| x.map_or("-".to_string(), |v| format!("{v:.p$}"));
    println!("| workload | vt ms | PyTorch ms | PyTorch / vt | same, fastest steps | candle built-in ms | vt peak MB | PyTorch peak MB | GMACs / image |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} {} {}px b{} {} | {:.0} | {} | {} | {} | {} | {:.0} | {} | {} |",
            r.model,
            r.mode,
            r.size,
            r.batch,
            r.recipe,
            r.vt_ms,
            opt(r.torch_ms, 0),
            opt(r.ratio, 2),
            opt(r.fastest_ratio, 2),
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

/// Each `vt_X` row beside its `X` row (same mode, size, batch and recipe): VT / base of MACs and of time,
/// in vt and in PyTorch (e.g. the VT-FPN neck against the FPN neck).
fn print_pairs(rows: &[Row]) {
    let pairs: Vec<(&Row, &Row)> = rows
        .iter()
        .filter_map(|v| {
            let base = v.model.strip_prefix("vt_")?;
            let b = rows.iter().find(|b| {
                (&b.model, b.mode, b.size, b.batch, b.recipe)
                    == (&base.to_string(), v.mode, v.size, v.batch, v.recipe)
            })?;
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
