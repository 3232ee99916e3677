//! The trainer: one run = one config, one JSON-lines log, one checkpoint directory.
//!
//! It knows no model: anything implementing [`Classifier`] trains on anything implementing
//! [`BatchSource`]. Everything random is a function of `(seed, epoch, index)` or
//! `(seed, step, layer)`, so a resumed run continues bit-identically.

use crate::checkpoint::{self, TrainState};
use crate::config::TrainConfig;
use crate::ema::Ema;
use crate::loss::{cross_entropy, distillation};
use crate::metrics::{BatchOutput, MeanLoss, Metric, TopK};
use crate::optim::{clip_grad_norm, param_groups};
use candle_core::{bail, Result, Tensor};
use serde::Serialize;
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use vt_ops::{NoiseSource, VarStore};

/// What the trainer needs of a model.
pub trait Classifier {
    /// Logits `(N, K)` of images `(N, C, H, W)`.
    fn logits(&self, images: &Tensor, train: bool) -> Result<Tensor>;
    /// The source of dropout / drop-path masks, if the model has one.
    fn noise(&self) -> Option<&NoiseSource> {
        None
    }
}

/// Batches of `(images, labels u32)`; the order of epoch `e` must depend only on the seed and `e`.
pub trait BatchSource {
    fn batches_per_epoch(&self) -> usize;
    /// The batches of epoch `epoch`, starting at batch `skip`.
    fn epoch(
        &self,
        epoch: usize,
        skip: usize,
    ) -> Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + '_>;
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EvalResult {
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub samples: usize,
}

/// Eval-mode loss, top-1 and top-5 of `model` over one pass of `data`.
pub fn evaluate(model: &dyn Classifier, data: &dyn BatchSource) -> Result<EvalResult> {
    let (mut loss, mut top1, mut top5) = (MeanLoss::default(), TopK::new(1), TopK::new(5));
    let mut samples = 0;
    for batch in data.epoch(0, 0) {
        let (x, y) = batch?;
        let logits = model.logits(&x, false)?;
        let l = cross_entropy(&logits, &y, 0.0)?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        let out = BatchOutput {
            logits: &logits,
            labels: &y,
            loss: l,
        };
        for m in [&mut loss as &mut dyn Metric, &mut top1, &mut top5] {
            m.update(&out)?;
        }
        samples += y.dim(0)?;
    }
    Ok(EvalResult {
        loss: loss.value(),
        top1: top1.value(),
        top5: top5.value(),
        samples,
    })
}

/// Evaluates with the EMA weights swapped in when there is an EMA (and restores the live ones).
fn evaluate_maybe_ema(
    model: &dyn Classifier,
    data: &dyn BatchSource,
    ema: Option<&Ema>,
    vars: &std::collections::BTreeMap<String, candle_core::Var>,
) -> Result<EvalResult> {
    let Some(e) = ema else {
        return evaluate(model, data);
    };
    let saved = e.swap_in(vars)?;
    let r = evaluate(model, data);
    Ema::restore(vars, saved)?;
    r
}

#[derive(Clone, Debug, Serialize)]
pub struct FitSummary {
    pub steps: u64,
    pub epochs: usize,
    /// Test metrics after the last epoch (of the EMA weights when EMA is on).
    pub test: EvalResult,
    pub train_images_per_sec: f64,
    /// True when `max_steps` stopped the run before its last epoch.
    pub stopped_early: bool,
}

/// Teacher for knowledge distillation.
pub struct Teacher<'a> {
    pub model: &'a dyn Classifier,
}

pub struct Trainer<'a> {
    pub cfg: TrainConfig,
    pub run_dir: PathBuf,
    pub model: &'a dyn Classifier,
    pub store: &'a VarStore,
    pub teacher: Option<Teacher<'a>>,
    /// Stop after this many optimizer steps (a budget; tests use it to simulate a kill).
    pub max_steps: Option<u64>,
    /// Show progress (a bar on a terminal, plain lines otherwise).
    pub progress: bool,
}

/// The JSON-lines log, the run's single record.
struct Log {
    file: std::fs::File,
}

impl Log {
    /// Opens the log; on resume, drops records after the checkpoint's step (they will be redone).
    fn open(path: &Path, keep_until_step: Option<u64>) -> Result<Self> {
        let err = |e: std::io::Error| {
            candle_core::Error::Msg(format!("cannot write log {}: {e}", path.display()))
        };
        let kept: Vec<String> = match keep_until_step {
            Some(step) if path.exists() => std::fs::read_to_string(path)
                .map_err(err)?
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s <= step)
                })
                .map(str::to_string)
                .collect(),
            _ => vec![],
        };
        let mut file = std::fs::File::create(path).map_err(err)?;
        for l in kept {
            writeln!(file, "{l}").map_err(err)?;
        }
        Ok(Self { file })
    }

    fn write(&mut self, v: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{v}")
            .map_err(|e| candle_core::Error::Msg(format!("cannot write log: {e}")))?;
        self.file
            .flush()
            .map_err(|e| candle_core::Error::Msg(format!("cannot write log: {e}")))
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()
}

impl Trainer<'_> {
    fn save(
        &self,
        state: &TrainState,
        opt: &dyn crate::optim::Optimizer,
        ema: Option<&Ema>,
    ) -> Result<PathBuf> {
        let model = self
            .store
            .vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().detach()))
            .collect();
        checkpoint::save(
            &self.run_dir,
            state,
            &model,
            &opt.state()?,
            ema.map(|e| e.state()).as_ref(),
        )
    }

    /// Trains for `cfg.epochs` epochs (continuing from the newest checkpoint when `resume`),
    /// evaluating on `test` after each epoch.
    pub fn fit(
        &self,
        train: &dyn BatchSource,
        test: &dyn BatchSource,
        resume: bool,
    ) -> Result<FitSummary> {
        std::fs::create_dir_all(&self.run_dir).map_err(|e| {
            candle_core::Error::Msg(format!("cannot create {}: {e}", self.run_dir.display()))
        })?;
        let vars = self.store.vars();
        let mut opt = self.cfg.optimizer.build(&vars)?;
        let params = param_groups(&vars, 0.0);
        let mut ema = match self.cfg.ema_decay {
            Some(d) => Some(Ema::new(&vars, d)?),
            None => None,
        };
        let mut state = TrainState {
            seed: self.cfg.seed,
            ..Default::default()
        };
        let loaded = if resume {
            checkpoint::load_latest(&self.run_dir, self.store.device())?
        } else {
            None
        };
        if let Some(ck) = &loaded {
            checkpoint::restore_vars(&vars, &ck.model, &ck.dir)?;
            opt.load_state(&ck.optimizer)?;
            match (&mut ema, &ck.ema) {
                (Some(e), Some(s)) => e.load_state(s)?,
                (Some(_), None) => bail!(
                    "checkpoint {} has no EMA state but the config enables EMA",
                    ck.dir.display()
                ),
                _ => {}
            }
            state = ck.state.clone();
        }
        let mut log = Log::open(
            &self.run_dir.join("log.jsonl"),
            loaded.as_ref().map(|c| c.state.step),
        )?;
        let spe = train.batches_per_epoch() as u64;
        if spe == 0 {
            bail!(
                "the training data yields no batch (fewer samples than one batch with drop_last?)"
            );
        }
        if let Some(noise) = self.model.noise() {
            noise.set_seed(self.cfg.seed);
        }
        if self.cfg.distillation.is_some() != self.teacher.is_some() {
            bail!("[train.distillation] and the teacher must be given together (config has distillation: {}, teacher given: {})", self.cfg.distillation.is_some(), self.teacher.is_some());
        }
        let total_steps = spe * self.cfg.epochs as u64;
        let bar = self.progress_bar(total_steps, state.step);
        let mut last_test = EvalResult::default();
        while state.epoch < self.cfg.epochs {
            for batch in train.epoch(state.epoch, state.batch_in_epoch) {
                if self.max_steps.is_some_and(|m| state.step >= m) {
                    return Ok(self.summary(&state, last_test, true));
                }
                let (x, y) = batch?;
                let t0 = Instant::now();
                if let Some(noise) = self.model.noise() {
                    noise.set_step(state.step);
                }
                let lr = self.cfg.schedule.lr(state.step, spe);
                let logits = self.model.logits(&x, true)?;
                let loss = match &self.teacher {
                    None => cross_entropy(&logits, &y, self.cfg.label_smoothing)?,
                    Some(t) => {
                        let d = self.cfg.distillation.as_ref().ok_or_else(|| {
                            candle_core::Error::Msg(
                                "a teacher was given but [train.distillation] is not set".into(),
                            )
                        })?;
                        let tl = t.model.logits(&x, false)?;
                        distillation(
                            &logits,
                            &tl,
                            &y,
                            d.temperature,
                            d.kd_weight,
                            self.cfg.label_smoothing,
                        )?
                    }
                };
                let loss_v = scalar(&loss)?;
                if !loss_v.is_finite() {
                    bail!(
                        "loss is {loss_v} at step {} (epoch {}, batch {}); stopped. The last good checkpoint is kept in {}",
                        state.step + 1,
                        state.epoch,
                        state.batch_in_epoch,
                        self.run_dir.join("checkpoints").display()
                    );
                }
                let mut grads = loss.backward()?;
                if let Some(max) = self.cfg.grad_clip {
                    clip_grad_norm(&mut grads, &params, max)?;
                }
                opt.step(&grads, lr)?;
                if let Some(e) = &mut ema {
                    e.update(&vars)?;
                }
                let n = y.dim(0)?;
                state.step += 1;
                state.batch_in_epoch += 1;
                state.epoch_loss_sum += loss_v * n as f64;
                state.epoch_samples += n;
                let dt = t0.elapsed().as_secs_f64();
                state.train_seconds += dt;
                state.train_images += n as u64;
                let ips = n as f64 / dt.max(1e-9);
                if state.step % self.cfg.log_every.max(1) == 0 {
                    log.write(json!({"kind": "step", "step": state.step, "epoch": state.epoch, "loss": loss_v, "lr": lr, "images_per_sec": ips}))?;
                }
                if let Some(b) = &bar {
                    b.set_position(state.step);
                    b.set_message(format!(
                        "epoch {} loss {loss_v:.4} lr {lr:.4} {ips:.0} img/s",
                        state.epoch + 1
                    ));
                } else if self.progress && state.step % 50 == 0 {
                    eprintln!(
                        "step {}/{total_steps} epoch {} loss {loss_v:.4} lr {lr:.5} {ips:.0} img/s",
                        state.step,
                        state.epoch + 1
                    );
                }
                if self.cfg.checkpoint_every > 0 && state.step % self.cfg.checkpoint_every == 0 {
                    self.save(&state, opt.as_ref(), ema.as_ref())?;
                }
            }
            last_test = evaluate_maybe_ema(self.model, test, ema.as_ref(), &vars)?;
            let train_loss = state.epoch_loss_sum / state.epoch_samples.max(1) as f64;
            log.write(json!({"kind": "epoch", "step": state.step, "epoch": state.epoch, "train_loss": train_loss,
                "test_loss": last_test.loss, "test_top1": last_test.top1, "test_top5": last_test.top5,
                "lr": self.cfg.schedule.lr(state.step, spe), "ema": ema.is_some(),
                "train_images_per_sec": state.train_images as f64 / state.train_seconds.max(1e-9)}))?;
            if self.progress {
                let line = format!("epoch {}/{}: train loss {train_loss:.4}, test top-1 {:.2}% top-5 {:.2}% loss {:.4}", state.epoch + 1, self.cfg.epochs, last_test.top1, last_test.top5, last_test.loss);
                match &bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
            state.epoch += 1;
            state.batch_in_epoch = 0;
            state.epoch_loss_sum = 0.0;
            state.epoch_samples = 0;
            self.save(&state, opt.as_ref(), ema.as_ref())?;
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if last_test.samples == 0 {
            // resumed a finished run: evaluate what the checkpoint holds
            last_test = evaluate_maybe_ema(self.model, test, ema.as_ref(), &vars)?;
        }
        Ok(self.summary(&state, last_test, false))
    }

    fn summary(&self, state: &TrainState, test: EvalResult, stopped_early: bool) -> FitSummary {
        FitSummary {
            steps: state.step,
            epochs: state.epoch,
            test,
            train_images_per_sec: state.train_images as f64 / state.train_seconds.max(1e-9),
            stopped_early,
        }
    }

    fn progress_bar(&self, total: u64, at: u64) -> Option<indicatif::ProgressBar> {
        if !self.progress || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = indicatif::ProgressBar::new(total);
        let style =
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}").ok()?;
        bar.set_style(style);
        bar.set_position(at);
        Some(bar)
    }
}
