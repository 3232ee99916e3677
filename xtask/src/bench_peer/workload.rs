//! One bench-peer workload: a preset at a recipe's width, stem and input channels, its
//! synthetic batch, loss and optimizer, timed in this process (`--single`), and the matching
//! arguments of the PyTorch side (`benches/peer/models.py`).

use super::Mode;
use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device, ModuleT, Tensor};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use vt_backbones::{preset, Fpn, Neck, NeckConfig, ResNet, SemanticFpn, Stem, Task, VtFpn};
use vt_ops::{Rng, VarStore};
use vt_run::RunConfig;
use vt_train::loss::{cross_entropy, pixel_cross_entropy, IGNORE_INDEX};
use vt_train::OptimizerConfig;

/// Which model shape and training recipe a workload uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Recipe {
    /// The preset as the paper sizes it (full width, ImageNet stem, 3 input channels), plain
    /// SGD (momentum 0.9, LR 0.01, no weight decay), no label smoothing.
    Plain,
    /// What `reproduce --preset cpu` trains (`reproduce::cpu_recipe`): width 1/4, the small stem
    /// for classifiers, 1-channel Fashion-MNIST (10 classes; 11 for the mosaics), the recipe's
    /// optimizer, LR and label smoothing.
    Reproduce,
}

impl Recipe {
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Reproduce => "reproduce",
        }
    }

    /// The default `(image size, batch)` of `model` under this recipe: the preset's for
    /// `Reproduce`; 64 px (and 224), batch 32 for plain classifiers, 256 px, batch 8 for
    /// plain segmenters.
    pub fn geometry(self, model: &str) -> Result<(usize, usize)> {
        Ok(match (self, preset(model)?.task()) {
            (Self::Reproduce, _) => {
                let cfg = self.config(model)?;
                (cfg.data.image_size, cfg.train.batch_size)
            }
            (Self::Plain, Task::Classification) => (64, 32),
            (Self::Plain, Task::Segmentation) => (256, 8),
        })
    }

    /// The model and training sections of `model` under this recipe, classes and channels set.
    pub fn config(self, model: &str) -> Result<RunConfig> {
        let task = preset(model)?.task();
        let mut cfg = vt_run::reproduce::cpu_recipe(model)?;
        match self {
            Self::Reproduce => {
                cfg.model.in_channels = Some(1);
                cfg.model.num_classes = Some(match task {
                    Task::Classification => 10,
                    Task::Segmentation => 11,
                });
            }
            Self::Plain => {
                cfg.model.width = 1.0;
                cfg.model.stem = Stem::Imagenet;
                cfg.model.in_channels = Some(3);
                // classifiers get 10 classes, segmenters 21 (PASCAL VOC's count)
                cfg.model.num_classes = Some(match task {
                    Task::Classification => 10,
                    Task::Segmentation => 21,
                });
                cfg.train.optimizer = OptimizerConfig::Sgd {
                    momentum: 0.9,
                    nesterov: false,
                    weight_decay: 0.0,
                };
                cfg.train.schedule.lr = 0.01;
                cfg.train.label_smoothing = 0.0;
            }
        }
        Ok(cfg)
    }
}

/// A workload: `model:mode:size:batch:recipe` on the command line of `--single`.
#[derive(Clone, Debug)]
pub struct Spec {
    pub model: String,
    pub mode: Mode,
    pub size: usize,
    pub batch: usize,
    pub recipe: Recipe,
}

impl Spec {
    pub fn encode(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            self.model,
            self.mode.name(),
            self.size,
            self.batch,
            self.recipe.name()
        )
    }

    pub fn decode(spec: &str) -> Result<Self> {
        let parts: Vec<&str> = spec.split(':').collect();
        let [model, mode, size, batch, recipe] = parts.as_slice() else {
            bail!("workload `{spec}` is not model:mode:size:batch:recipe")
        };
        let mode = clap::ValueEnum::from_str(mode, false)
            .map_err(|_| anyhow!("unknown mode `{mode}` in `{spec}` (train, infer or neck)"))?;
        let recipe = clap::ValueEnum::from_str(recipe, false)
            .map_err(|_| anyhow!("unknown recipe `{recipe}` in `{spec}` (plain or reproduce)"))?;
        Ok(Self {
            model: model.to_string(),
            mode,
            size: size.parse()?,
            batch: batch.parse()?,
            recipe,
        })
    }

    /// The arguments of `benches/peer/models.py` for the same model, batch and recipe.
    pub fn torch_args(&self) -> Result<Vec<String>> {
        let cfg = self.recipe.config(&self.model)?;
        let OptimizerConfig::Sgd {
            momentum,
            nesterov,
            weight_decay,
        } = cfg.train.optimizer
        else {
            bail!("models.py times SGD recipes only")
        };
        let stem = match cfg.model.stem {
            Stem::Imagenet => "imagenet",
            Stem::Small => "small",
        };
        let mut a: Vec<String> = [
            ("--model", self.model.clone()),
            ("--mode", self.mode.name().into()),
            ("--size", self.size.to_string()),
            ("--batch", self.batch.to_string()),
            ("--classes", cfg.model.num_classes.unwrap_or(10).to_string()),
            (
                "--in-channels",
                cfg.model.in_channels.unwrap_or(3).to_string(),
            ),
            ("--width", cfg.model.width.to_string()),
            ("--stem", stem.into()),
            ("--lr", cfg.train.schedule.lr.to_string()),
            ("--momentum", momentum.to_string()),
            ("--weight-decay", weight_decay.to_string()),
            ("--label-smoothing", cfg.train.label_smoothing.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect();
        if nesterov {
            a.push("--nesterov".into());
        }
        Ok(a)
    }
}

/// What a workload runs, with its targets.
#[allow(clippy::large_enum_variant)] // one per process
enum Net {
    Classifier(ResNet, Tensor),
    Segmenter(SemanticFpn, Tensor),
    Neck(Neck),
}

/// One built workload: the model, its inputs (an image batch, or C2..C5 for a neck), its
/// forward MACs per image and the loss's label smoothing. `models.py` builds the same ones.
struct Workload {
    net: Net,
    x: Vec<Tensor>,
    macs: u64,
    label_smoothing: f64,
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
    fn new(s: &Spec, cfg: &RunConfig, vb: candle_nn::VarBuilder, dev: &Device) -> Result<Self> {
        let (batch, size) = (s.batch, s.size);
        let mut rng = Rng::new(1);
        let mut randn = |c: usize, h: usize| {
            let v = rng.normal_vec(batch * c * h * h, 0.0, 1.0);
            Tensor::from_vec(v, (batch, c, h, h), dev)
        };
        let cin = cfg.model.in_channels.unwrap_or(3);
        let k = cfg.model.num_classes.unwrap_or(10);
        let label_smoothing = cfg.train.label_smoothing;
        let task = preset(&s.model)?.task();
        Ok(match (task, s.mode) {
            (Task::Classification, Mode::Train | Mode::Infer) => {
                let net = ResNet::new(&cfg.model.config()?, vb)?;
                let y = Tensor::from_vec(labels(batch, k, false), batch, dev)?;
                Self {
                    macs: net.cost(size, size).total().macs,
                    net: Net::Classifier(net, y),
                    x: vec![randn(cin, size)?],
                    label_smoothing,
                }
            }
            (Task::Segmentation, Mode::Train | Mode::Infer) => {
                let net = SemanticFpn::new(&cfg.model.segmentation_config()?, vb)?;
                let y = labels(batch * size * size, k, true);
                Self {
                    macs: net.cost(size, size).total().macs,
                    net: Net::Segmenter(net, Tensor::from_vec(y, (batch, size, size), dev)?),
                    x: vec![randn(cin, size)?],
                    label_smoothing,
                }
            }
            (Task::Segmentation, Mode::Neck) => {
                let cfg = cfg.model.segmentation_config()?;
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
                    label_smoothing,
                }
            }
            (Task::Classification, Mode::Neck) => {
                bail!(
                    "`neck` times a segmentation model's neck; `{}` is a classifier",
                    s.model
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
            Net::Classifier(_, y) => cross_entropy(&out[0], y, self.label_smoothing)?,
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

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timing {
    pub median_ms: f64,
    pub min_ms: f64,
    pub peak_rss_mb: f64,
    /// Forward MACs per image (vt's counter; the PyTorch side does not count).
    #[serde(default)]
    pub gmacs: Option<f64>,
    /// Trainable parameters (running statistics excluded), on both sides.
    #[serde(default)]
    pub params: Option<u64>,
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

/// Untimed steps before the timed ones, here and in `models.py`.
pub const WARMUP: usize = 2;

/// A workload built in this process, with its optimizer, ready to step.
struct Prepared {
    spec: Spec,
    w: Workload,
    opt: Box<dyn vt_train::optim::Optimizer>,
    lr: f64,
    params: u64,
    dev: Device,
}

impl Prepared {
    fn new(spec: &str, device: &str) -> Result<Self> {
        let spec = Spec::decode(spec)?;
        let cfg = spec.recipe.config(&spec.model)?;
        let dev = crate::device(device)?;
        let store = VarStore::seeded(0, DType::F32, &dev);
        let w = Workload::new(&spec, &cfg, store.var_builder(), &dev)?;
        let vars = store.vars();
        let params = vt_train::optim::param_groups(&vars, 0.0)
            .iter()
            .map(|p| p.var.elem_count() as u64)
            .sum();
        let opt = cfg.train.optimizer.build(&vars)?;
        Ok(Self {
            spec,
            w,
            opt,
            lr: cfg.train.schedule.lr,
            params,
            dev,
        })
    }

    /// One step; returns its wall time in ms.
    fn step(&mut self) -> Result<f64> {
        let t = Instant::now();
        match self.spec.mode {
            Mode::Train => self.opt.step(&self.w.loss()?.backward()?, self.lr)?,
            Mode::Neck => drop(self.w.loss()?.backward()?),
            Mode::Infer => drop(self.w.forward(false)?),
        }
        // GPU work is queued; the time must include it
        self.dev.synchronize()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }

    fn timing(&self, mut times: Vec<f64>) -> Timing {
        times.sort_by(f64::total_cmp);
        Timing {
            median_ms: times[times.len() / 2],
            min_ms: times[0],
            peak_rss_mb: peak_rss_mb(),
            gmacs: Some(self.w.macs as f64 / 1e9),
            params: Some(self.params),
        }
    }
}

/// Times one vt workload in this process.
pub fn single(spec: &str, iters: usize, device: &str) -> Result<Timing> {
    Ok(interleaved(&[spec], iters, device)?.remove(0))
}

/// Times several vt workloads in one process, one step of each in turn (after [`WARMUP`]
/// rounds), so that a slow spell of a shared host falls on all of them alike: the ratios of
/// their medians are steadier than those of separate runs. The peak memory is the process's.
pub fn interleaved(specs: &[&str], iters: usize, device: &str) -> Result<Vec<Timing>> {
    let mut runs = specs
        .iter()
        .map(|s| Prepared::new(s, device))
        .collect::<Result<Vec<_>>>()?;
    let mut times = vec![Vec::with_capacity(iters); runs.len()];
    for round in 0..WARMUP + iters {
        for (r, t) in runs.iter_mut().zip(&mut times) {
            let ms = r.step()?;
            if round >= WARMUP {
                t.push(ms);
            }
        }
    }
    Ok(runs.iter().zip(times).map(|(r, t)| r.timing(t)).collect())
}
