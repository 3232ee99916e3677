//! The paper's experiments as planned runs: ResNet-18/34 against VT-ResNet-18/34 (Tables 2/8),
//! the VT-ResNet-18 ablations (Tables 3-7) and FPN against VT-FPN (Tables 9/10), each model
//! trained with several paired seeds (model A and model B share seed `k`, so they share the
//! training subset and its order and differ in what the comparison is about).
//!
//! [`plan`] turns a [`Request`] into [`Planned`] runs, [`execute`] trains, resumes or skips one,
//! and [`ModelRuns`] gathers a model's seeds for the statistics of [`crate::stats`].

mod recipes;

use recipes::{advanced, classification_template, segmentation_template};
pub use recipes::{cpu_recipe, recipe_notes, Budget};

use crate::config::RunConfig;
use crate::error::{invalid, Result, RunError};
use crate::results::{copy_run, load_result, RunResult};
use crate::stats::{PairedDifference, Summary};
use crate::train::{train, RunOptions};
use candle_core::Device;
use std::path::{Path, PathBuf};
use vt_backbones::preset;
use vt_ops::Group;

/// Which experiments to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    Classification,
    Ablation,
    Segmentation,
    All,
}

/// The scale of a reproduction: data, input size, width, budget and seeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Everything tiny (28 px, width 1/8, 256 images, 1 epoch, 2 seeds): checks the pipeline.
    Smoke,
    /// Fashion-MNIST on 2 CPU cores within an hour, at the paper's geometry scaled down (56 px
    /// with the small stem: VT sees 14 x 14 maps and costs fewer MACs than its ResNet).
    Cpu,
    /// The `cpu` geometry with budgets for an overnight run.
    Long,
    /// ImageNet at 224 px from `--data` with the paper's recipes; LIP or COCO-stuff.
    Paper,
}

macro_rules! names {
    ($t:ty { $($v:ident = $s:literal),* }) => {
        impl $t {
            pub const ALL: &'static [$t] = &[$(<$t>::$v),*];
            pub fn name(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
        }
        impl std::str::FromStr for $t {
            type Err = RunError;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($s => Ok(<$t>::$v),)*
                    _ => invalid!("`{s}` is not one of: {}", [$($s),*].join(", ")),
                }
            }
        }
    };
}
names!(Suite { Classification = "classification", Ablation = "ablation", Segmentation = "segmentation", All = "all" });
names!(Level { Smoke = "smoke", Cpu = "cpu", Long = "long", Paper = "paper" });

impl Level {
    /// Paired seeds per model unless the request says otherwise.
    pub fn default_seeds(self) -> usize {
        match self {
            Level::Smoke => 2,
            _ => 3,
        }
    }
}

/// What to reproduce, at what scale, from which data.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub suite: Suite,
    pub level: Level,
    /// Seeds per model (`None`: the level's default).
    pub seeds: Option<usize>,
    /// Classification data (required for `paper`; default Fashion-MNIST).
    pub data: Option<PathBuf>,
    /// Segmentation data (required for `paper`; default Fashion-MNIST mosaics).
    pub seg_data: Option<PathBuf>,
}

impl Request {
    pub fn seeds(&self) -> usize {
        self.seeds.unwrap_or(self.level.default_seeds())
    }
}

/// One planned run: a model of a suite with one seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// Report label (the preset, or `<preset>_advanced` for Table 8's recipe).
    pub name: String,
    pub suite: Suite,
    pub preset: &'static str,
    pub seed: u64,
    pub cfg: RunConfig,
}

impl Planned {
    /// `<out>/<suite>/<name>/seed<k>`.
    pub fn dir(&self, out: &Path) -> PathBuf {
        out.join(self.suite.name())
            .join(&self.name)
            .join(format!("seed{}", self.seed))
    }
}

pub const CLASSIFICATION: [&str; 4] = ["resnet18", "vt_resnet18", "resnet34", "vt_resnet34"];
pub const ABLATION: [&str; 9] = [
    "vt_resnet18",
    "vt_resnet18_pooling",
    "vt_resnet18_clustering",
    "vt_resnet18_no_rt",
    "vt_resnet18_no_relation",
    "vt_resnet18_graphconv",
    "vt_resnet18_l32",
    "vt_resnet18_l64",
    "vt_resnet18_no_projector",
];
pub const SEGMENTATION: [&str; 2] = ["fpn_resnet50", "vt_fpn_resnet50"];

/// The comparison a level spends most of its budget on: VT-ResNet-18 against ResNet-18.
pub fn is_main_claim(suite: Suite, preset_name: &str) -> bool {
    suite == Suite::Classification && matches!(preset_name, "resnet18" | "vt_resnet18")
}

/// Every run of the request, model by model, seeds `0..n` for each.
pub fn plan(req: &Request) -> Result<Vec<Planned>> {
    let n = req.seeds();
    if n == 0 {
        invalid!("--seeds 0: every model needs at least one seed (two for an interval)")
    }
    let mut models: Vec<(Suite, String, &'static str, RunConfig)> = vec![];
    let suites = |s: Suite| req.suite == s || req.suite == Suite::All;
    if suites(Suite::Classification) {
        for p in CLASSIFICATION {
            let cfg = classification_template(
                req.level,
                p,
                is_main_claim(Suite::Classification, p),
                req.data.clone(),
            )?;
            models.push((Suite::Classification, p.into(), p, cfg.clone()));
            if req.level == Level::Paper {
                models.push((
                    Suite::Classification,
                    format!("{p}_advanced"),
                    p,
                    advanced(cfg),
                ));
            }
        }
    }
    if suites(Suite::Ablation) {
        for p in ABLATION {
            let cfg = classification_template(req.level, p, false, req.data.clone())?;
            models.push((Suite::Ablation, p.into(), p, cfg));
        }
    }
    if suites(Suite::Segmentation) {
        for p in SEGMENTATION {
            let cfg = segmentation_template(req.level, p, req.seg_data.clone())?;
            models.push((Suite::Segmentation, p.into(), p, cfg));
        }
    }
    let mut runs = vec![];
    for (suite, name, preset_name, cfg) in models {
        preset(preset_name)?; // every name must exist
        for seed in 0..n as u64 {
            let mut cfg = cfg.clone();
            cfg.train.seed = seed;
            runs.push(Planned {
                name: name.clone(),
                suite,
                preset: preset_name,
                seed,
                cfg,
            });
        }
    }
    Ok(runs)
}

/// Trains, resumes or skips `runs[i]` under `out` and reads it back. A run planned twice with
/// the same config (at equal budgets the default VT-ResNet-18 is both a classification and an
/// ablation row) is trained once and copied. In a data-parallel job every rank calls it for
/// every run; rank 0 alone copies, writes and speaks.
pub fn execute(
    runs: &[Planned],
    i: usize,
    out: &Path,
    device: &Device,
    group: &Group,
) -> Result<RunResult> {
    let r = &runs[i];
    let dir = r.dir(out);
    let label = format!("{}/{} seed {}", r.suite.name(), r.name, r.seed);
    let say = |what: String| {
        if group.is_main() {
            eprintln!("{label}: {what}");
        }
    };
    if group.is_main() && !dir.join("metrics.json").exists() {
        let twin = runs[..i]
            .iter()
            .find(|t| t.name == r.name && t.seed == r.seed && t.cfg == r.cfg);
        if let Some(t) = twin {
            copy_run(&t.dir(out), &dir)?;
            say(format!("same run as {}/{}, reused", t.suite.name(), t.name));
        }
    }
    group.barrier()?; // every rank sees what rank 0 copied
    if dir.join("metrics.json").exists() {
        say("finished earlier, skipped".into());
    } else {
        let resume = dir.join("checkpoints/latest").exists();
        say(if resume { "resuming" } else { "training" }.into());
        let cfg = match resume {
            true => crate::config::saved_config(&dir)?,
            false => r.cfg.clone(),
        };
        let opts = RunOptions {
            resume,
            progress: true,
            max_steps: None,
            group: group.clone(),
        };
        train(cfg, &dir, device, &opts)?;
        group.barrier()?; // rank 0 has written metrics.json
    }
    load_result(&dir)
}

/// One model of a suite over its seeds, in seed order.
#[derive(Clone, Debug)]
pub struct ModelRuns {
    pub name: String,
    pub suite: Suite,
    pub preset: &'static str,
    pub seeds: Vec<u64>,
    pub runs: Vec<RunResult>,
    /// The directory of each seed's run.
    pub dirs: Vec<PathBuf>,
}

impl ModelRuns {
    /// Groups the executed runs (`results[i]` of `runs[i]`) by suite and model, in plan order.
    pub fn group(runs: &[Planned], results: Vec<RunResult>, out: &Path) -> Vec<ModelRuns> {
        let mut models: Vec<ModelRuns> = vec![];
        for (r, result) in runs.iter().zip(results) {
            let m = match models
                .iter_mut()
                .position(|m| m.suite == r.suite && m.name == r.name)
            {
                Some(k) => &mut models[k],
                None => {
                    models.push(ModelRuns {
                        name: r.name.clone(),
                        suite: r.suite,
                        preset: r.preset,
                        seeds: vec![],
                        runs: vec![],
                        dirs: vec![],
                    });
                    models.last_mut().expect("just pushed")
                }
            };
            m.seeds.push(r.seed);
            m.runs.push(result);
            m.dirs.push(r.dir(out));
        }
        models
    }

    /// A scalar test metric of every seed (NaN where a run lacks it).
    pub fn values(&self, metric: &str) -> Vec<f64> {
        self.runs
            .iter()
            .map(|r| r.metrics.scalar(metric).unwrap_or(f64::NAN))
            .collect()
    }

    pub fn summary(&self, metric: &str) -> Option<Summary> {
        Summary::of(&self.values(metric))
    }

    /// The mean of a per-run figure (MACs, images/s) over the seeds.
    pub fn mean_of(&self, f: impl Fn(&RunResult) -> f64) -> f64 {
        self.runs.iter().map(f).sum::<f64>() / self.runs.len().max(1) as f64
    }

    /// `self - base` paired by seed over the seeds both have.
    pub fn paired(&self, base: &ModelRuns, metric: &str) -> Option<PairedDifference> {
        let (mut a, mut b) = (vec![], vec![]);
        for (seed, v) in self.seeds.iter().zip(self.values(metric)) {
            if let Some(k) = base.seeds.iter().position(|s| s == seed) {
                a.push(v);
                b.push(base.values(metric)[k]);
            }
        }
        PairedDifference::of(&a, &b)
    }

    /// `(x, mean, mean - std, mean + std)` of a curve over the seeds, at the x values every
    /// seed has.
    pub fn band(&self, curve: impl Fn(&RunResult) -> Vec<(f64, f64)>) -> Vec<(f64, f64, f64, f64)> {
        let curves: Vec<Vec<(f64, f64)>> = self.runs.iter().map(curve).collect();
        let Some(first) = curves.first() else {
            return vec![];
        };
        first
            .iter()
            .enumerate()
            .filter_map(|(i, &(x, _))| {
                let ys: Option<Vec<f64>> = curves
                    .iter()
                    .map(|c| c.get(i).filter(|p| p.0 == x).map(|p| p.1))
                    .collect();
                let s = Summary::of(&ys?)?;
                Some((x, s.mean, s.mean - s.std, s.mean + s.std))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(suite: Suite, level: Level, seeds: Option<usize>) -> Request {
        Request {
            suite,
            level,
            seeds,
            data: (level == Level::Paper).then(|| PathBuf::from("/imagenet")),
            seg_data: None,
        }
    }

    #[test]
    fn the_advanced_recipe_scales_its_lr_to_the_batch_and_the_report_says_so() {
        let runs = plan(&request(Suite::Classification, Level::Paper, Some(1))).unwrap();
        let advanced: Vec<&Planned> = runs
            .iter()
            .filter(|r| r.name.ends_with("_advanced"))
            .collect();
        assert_eq!(advanced.len(), CLASSIFICATION.len());
        for r in &advanced {
            assert_eq!(r.cfg.train.batch_size, 256);
            assert!((r.cfg.train.schedule.lr - 0.16 * 256.0 / 2048.0).abs() < 1e-12);
        }
        let notes = recipe_notes(&runs);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("batch 2048")
                && notes[0].contains("linear scaling rule")
                && notes[0].contains("0.0200"),
            "{}",
            notes[0]
        );
        let cpu = plan(&request(Suite::Classification, Level::Cpu, None)).unwrap();
        assert!(recipe_notes(&cpu).is_empty());
    }

    #[test]
    fn every_model_gets_the_same_seeds_and_its_own_directory() {
        let runs = plan(&request(Suite::All, Level::Cpu, None)).unwrap();
        let n = CLASSIFICATION.len() + ABLATION.len() + SEGMENTATION.len();
        assert_eq!(runs.len(), 3 * n);
        for chunk in runs.chunks(3) {
            let seeds: Vec<u64> = chunk.iter().map(|r| r.cfg.train.seed).collect();
            assert_eq!(seeds, [0, 1, 2]);
            assert!(chunk.iter().all(|r| r.name == chunk[0].name));
        }
        let out = Path::new("o");
        assert_eq!(
            runs[4].dir(out),
            Path::new("o/classification/vt_resnet18/seed1")
        );
        let smoke = plan(&request(Suite::Segmentation, Level::Smoke, None)).unwrap();
        assert_eq!(smoke.len(), 2 * 2);
        let err = plan(&request(Suite::All, Level::Cpu, Some(0))).unwrap_err();
        assert!(err.to_string().contains("--seeds 0"), "{err}");
        assert!("long".parse::<Level>().is_ok());
        let err = "huge".parse::<Level>().unwrap_err().to_string();
        assert!(err.contains("smoke, cpu, long, paper"), "{err}");
    }

    #[test]
    fn the_cpu_preset_has_the_papers_geometry() {
        // in Table 2 each VT-ResNet costs fewer MACs than its ResNet; at 28 px it would not
        for (vt, base) in [("vt_resnet18", "resnet18"), ("vt_resnet34", "resnet34")] {
            let macs = |p: &str| {
                let mut cfg = cpu_recipe(p).unwrap();
                (cfg.model.num_classes, cfg.model.in_channels) = (Some(10), Some(1));
                let store = vt_ops::VarStore::seeded(0, candle_core::DType::F32, &Device::Cpu);
                let net = crate::Net::new(&cfg.model, &store).unwrap();
                net.cost(cfg.data.image_size).macs
            };
            assert!(
                macs(vt) < macs(base),
                "{vt}: {} vs {}",
                macs(vt),
                macs(base)
            );
        }
    }
}
