//! The trainer end to end on a tiny model: bit-identical resume, NaN stop, EMA evaluation.

use candle_core::{DType, Device, Module, ModuleT, Result, Tensor};
use std::path::PathBuf;
use vt_ops::{BatchNorm, Dropout, Linear, NoiseSource, Rng, VarStore};
use vt_train::metrics::{TOP1, TOP5};
use vt_train::{
    read_log, BatchSource, ClassificationStep, Classifier, Decay, LogRecord, LrSchedule,
    OptimizerConfig, TrainConfig, Trainer,
};

struct Tiny {
    fc1: Linear,
    bn: BatchNorm,
    drop: Dropout,
    fc2: Linear,
    noise: NoiseSource,
    nan_after: Option<usize>,
    calls: std::cell::Cell<usize>,
}

impl Tiny {
    fn new(store: &VarStore, nan_after: Option<usize>) -> Result<Self> {
        let vb = store.var_builder();
        let noise = NoiseSource::new(0);
        Ok(Self {
            fc1: Linear::new(6, 16, vb.pp("fc1"))?,
            bn: BatchNorm::new(16, vb.pp("bn"))?,
            drop: Dropout::new(0.3, "drop", &noise)?,
            fc2: Linear::new(16, 3, vb.pp("fc2"))?,
            noise,
            nan_after,
            calls: Default::default(),
        })
    }
}

impl Classifier for Tiny {
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self
            .bn
            .forward_t(&self.fc1.forward(&x.flatten_from(1)?)?, train)?
            .relu()?;
        let y = self.fc2.forward(&self.drop.forward_t(&h, train)?)?;
        if train {
            self.calls.set(self.calls.get() + 1);
            if self.nan_after.is_some_and(|n| self.calls.get() > n) {
                return y.affine(f64::NAN, 0.0);
            }
        }
        Ok(y)
    }
    fn noise(&self) -> Option<&NoiseSource> {
        Some(&self.noise)
    }
}

/// 40 samples of 3 separable classes; batches of 8 in an order drawn from (seed, epoch).
struct Synthetic {
    x: Vec<Vec<f32>>,
    y: Vec<u32>,
    shuffle: bool,
}

impl Synthetic {
    fn new(n: usize, shuffle: bool) -> Self {
        let mut rng = Rng::new(9);
        let y: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        let x = y
            .iter()
            .map(|&c| {
                (0..6)
                    .map(|j| (rng.normal() + if j == c as usize { 2.0 } else { 0.0 }) as f32)
                    .collect()
            })
            .collect();
        Self { x, y, shuffle }
    }
}

impl BatchSource for Synthetic {
    fn batches_per_epoch(&self) -> usize {
        self.y.len() / 8
    }
    fn epoch(
        &self,
        epoch: usize,
        skip: usize,
    ) -> Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + '_> {
        let mut order: Vec<usize> = (0..self.y.len()).collect();
        if self.shuffle {
            Rng::derive(5, &[epoch as u64]).shuffle(&mut order);
        }
        Box::new((skip..self.batches_per_epoch()).map(move |b| {
            let idx = &order[b * 8..(b + 1) * 8];
            let xs: Vec<f32> = idx.iter().flat_map(|&i| self.x[i].clone()).collect();
            let ys: Vec<u32> = idx.iter().map(|&i| self.y[i]).collect();
            Ok((
                Tensor::from_vec(xs, (8, 6), &Device::Cpu)?,
                Tensor::new(ys, &Device::Cpu)?,
            ))
        }))
    }
}

fn config() -> TrainConfig {
    TrainConfig {
        epochs: 3,
        batch_size: 8,
        seed: 11,
        optimizer: OptimizerConfig::RmspropTf {
            alpha: 0.9,
            eps: 1e-3,
            momentum: 0.9,
            weight_decay: 1e-4,
            lr_in_momentum: true,
        },
        schedule: LrSchedule {
            lr: 0.05,
            decay: Decay::Exponential { gamma: 0.9 },
            warmup_epochs: 1.0,
            warmup_start_lr: 0.01,
        },
        label_smoothing: 0.1,
        ema_decay: Some(0.9),
        grad_clip: Some(5.0),
        checkpoint_every: 4,
        log_every: 1,
        distillation: None,
    }
}

fn run_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vt-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn step_losses(dir: &std::path::Path) -> Vec<(u64, f64)> {
    read_log(&dir.join("log.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            LogRecord::Step { step, loss, .. } => Some((step, loss)),
            _ => None,
        })
        .collect()
}

/// (epoch, step, test top-1) of every eval record.
fn evals(dir: &std::path::Path) -> Vec<(usize, u64, f64)> {
    read_log(&dir.join("log.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            LogRecord::Eval {
                epoch,
                step,
                result,
                ema,
            } => {
                assert!(ema);
                assert!(result.scalar(TOP5).unwrap() >= result.scalar(TOP1).unwrap());
                Some((epoch, step, result.scalar(TOP1).unwrap()))
            }
            _ => None,
        })
        .collect()
}

fn train(
    dir: &std::path::Path,
    max_steps: Option<u64>,
    resume: bool,
    nan_after: Option<usize>,
) -> Result<(vt_train::FitSummary, Vec<f32>)> {
    let store = VarStore::seeded(1, DType::F32, &Device::Cpu);
    let model = Tiny::new(&store, nan_after)?;
    let trainer = Trainer {
        cfg: config(),
        run_dir: dir.to_path_buf(),
        store: &store,
        max_steps,
        progress: false,
        group: Default::default(),
    };
    let task = ClassificationStep::from_config(&model, &trainer.cfg, None)?;
    let s = trainer.fit(
        &task,
        &Synthetic::new(40, true),
        &Synthetic::new(24, false),
        resume,
    )?;
    let w = store.vars()["fc2.weight"]
        .as_tensor()
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((s, w))
}

#[test]
fn killed_run_resumes_bit_identically() -> Result<()> {
    let a = run_dir("straight");
    let (full, w_full) = train(&a, None, false, None)?;
    assert_eq!(full.steps, 15);
    assert!(!full.stopped_early);

    let b = run_dir("killed");
    let (part, _) = train(&b, Some(10), false, None)?; // "killed" after step 10; last checkpoint at step 8
    assert!(part.stopped_early);
    let (resumed, w_resumed) = train(&b, None, true, None)?;
    assert_eq!(
        step_losses(&a),
        step_losses(&b),
        "losses after resume differ from the uninterrupted run"
    );
    assert_eq!(w_full, w_resumed);
    assert_eq!(full.test, resumed.test);
    assert!(
        full.test.scalar(TOP1).unwrap() > 60.0,
        "the tiny model should learn: {:?}",
        full.test
    );
    // one step record per step, none duplicated by the resume
    let steps: Vec<u64> = step_losses(&b).iter().map(|s| s.0).collect();
    assert_eq!(steps, (1..=15).collect::<Vec<_>>());
    // one eval record per epoch, the same in both runs
    let e = evals(&b);
    assert_eq!(
        e.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(),
        [(0, 5), (1, 10), (2, 15)]
    );
    assert_eq!(e, evals(&a));
    assert_eq!(e[2].2, full.test.scalar(TOP1).unwrap());
    Ok(())
}

#[test]
fn nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint() -> Result<()> {
    let d = run_dir("nan");
    let err = train(&d, None, false, Some(6)).unwrap_err().to_string();
    assert!(err.contains("loss is NaN at step 7"), "{err}");
    assert!(err.contains("checkpoints"), "{err}");
    let latest = std::fs::read_to_string(d.join("checkpoints/latest")).unwrap();
    assert_eq!(latest, "step-000000005"); // epoch 1 ended at step 5
    let ck = vt_train::checkpoint::load_latest(&d, &Device::Cpu)?.unwrap();
    assert_eq!(ck.state.step, 5);
    assert!(ck.model.values().all(|t| t
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite())));
    Ok(())
}

#[test]
fn distillation_needs_its_teacher_and_changes_the_loss() -> Result<()> {
    let dev = Device::Cpu;
    let distill = vt_train::DistillConfig {
        teacher: "t".into(),
        teacher_model: "tiny".into(),
        temperature: 2.0,
        kd_weight: 0.8,
    };
    let cfg = TrainConfig {
        epochs: 1,
        distillation: Some(distill),
        ..config()
    };
    let store = VarStore::seeded(1, DType::F32, &dev);
    let student = Tiny::new(&store, None)?;
    let teacher_store = VarStore::seeded(2, DType::F32, &dev);
    let teacher = Tiny::new(&teacher_store, None)?;
    let data = (Synthetic::new(40, true), Synthetic::new(24, false));

    let err = ClassificationStep::from_config(&student, &cfg, None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("teacher must be given together"), "{err}");
    let no_kd = TrainConfig {
        epochs: 1,
        ..config()
    };
    let err = ClassificationStep::from_config(&student, &no_kd, Some(&teacher))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("teacher given: true"), "{err}");

    let d = run_dir("kd");
    let with_teacher = Trainer {
        cfg,
        run_dir: d.clone(),
        store: &store,
        max_steps: Some(1),
        progress: false,
        group: Default::default(),
    };
    let task = ClassificationStep::from_config(&student, &with_teacher.cfg, Some(&teacher))?;
    with_teacher.fit(&task, &data.0, &data.1, false)?;
    let kd_loss = step_losses(&d)[0].1;
    let plain = run_dir("kd-plain");
    let store2 = VarStore::seeded(1, DType::F32, &dev);
    let student2 = Tiny::new(&store2, None)?;
    let t = Trainer {
        cfg: no_kd,
        run_dir: plain.clone(),
        store: &store2,
        max_steps: Some(1),
        progress: false,
        group: Default::default(),
    };
    let task = ClassificationStep::from_config(&student2, &t.cfg, None)?;
    t.fit(&task, &data.0, &data.1, false)?;
    assert_ne!(kd_loss, step_losses(&plain)[0].1);
    Ok(())
}
