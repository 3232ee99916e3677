//! The trainer: one run = one config, one JSON-lines log, one checkpoint directory.
//!
//! It knows no model and no task: it trains any [`TrainStep`] on any [`BatchSource`] and
//! evaluates with the step's metrics. Everything random is a function of `(seed, epoch, index)`
//! or `(seed, step, layer)`, so a resumed run continues bit-identically.

use crate::checkpoint::{self, TrainState};
use crate::config::TrainConfig;
use crate::data_parallel::{average_gradients, broadcast_from_rank0, sum_over_ranks};
use crate::ema::Ema;
use crate::eval::{evaluate_maybe_ema, scalar, EvalResult};
use crate::log::{LogRecord, LogWriter};
use crate::optim::{clip_grad_norm, is_running_stat, param_groups, Optimizer, Param};
use crate::step::TrainStep;
use candle_core::{bail, Error, Result, Tensor, Var};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;
use vt_ops::{Group, VarStore};

/// Batches of `(images, targets)`: targets are what the step expects (class labels `(N,)` u32,
/// label maps `(N, H, W)` u32, ...). The order of epoch `e` must depend only on the seed and `e`.
pub trait BatchSource {
    fn batches_per_epoch(&self) -> usize;
    /// The batches of epoch `epoch`, starting at batch `skip`.
    fn epoch(
        &self,
        epoch: usize,
        skip: usize,
    ) -> Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + '_>;
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

pub struct Trainer<'a> {
    pub cfg: TrainConfig,
    pub run_dir: PathBuf,
    /// The variables of the model the step trains (optimised, EMA'd, checkpointed).
    pub store: &'a VarStore,
    /// Stop after this many optimizer steps (a budget; tests use it to simulate a kill).
    pub max_steps: Option<u64>,
    /// Show progress (a bar on a terminal, plain lines otherwise; rank 0 only).
    pub progress: bool,
    /// The ranks of a data-parallel run (`Group::default()`: this process alone). Each rank's
    /// `BatchSource`s yield its shard; rank 0 alone writes the log and the checkpoints.
    pub group: Group,
}

impl Trainer<'_> {
    /// Trains `task` for `cfg.epochs` epochs (continuing from the newest checkpoint when
    /// `resume`), evaluating on `test` after each epoch.
    pub fn fit(
        &self,
        task: &dyn TrainStep,
        train: &dyn BatchSource,
        test: &dyn BatchSource,
        resume: bool,
    ) -> Result<FitSummary> {
        let mut fit = Fit::start(self, task, train.batches_per_epoch() as u64, resume)?;
        let mut last_test = None;
        while fit.state.epoch < self.cfg.epochs {
            for batch in train.epoch(fit.state.epoch, fit.state.batch_in_epoch) {
                if self.max_steps.is_some_and(|m| fit.state.step >= m) {
                    return Ok(fit.summary(last_test.unwrap_or_default(), true));
                }
                let (x, y) = batch?;
                fit.train_step(&x, &y)?;
            }
            last_test = Some(fit.end_epoch(test)?);
        }
        if let Some(b) = &fit.bar {
            b.finish_and_clear();
        }
        let test = match last_test {
            Some(t) => t,
            // resumed a finished run: evaluate what the checkpoint holds
            None => fit.evaluate(test)?,
        };
        Ok(fit.summary(test, false))
    }

    fn progress_bar(&self, total: u64, at: u64) -> Option<indicatif::ProgressBar> {
        if !self.progress || !self.group.is_main() || !std::io::stderr().is_terminal() {
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

/// The state of one `fit` call: the optimizer, EMA, position and log.
struct Fit<'t> {
    trainer: &'t Trainer<'t>,
    task: &'t dyn TrainStep,
    vars: BTreeMap<String, Var>,
    params: Vec<Param>,
    opt: Box<dyn Optimizer>,
    ema: Option<Ema>,
    state: TrainState,
    /// Rank 0's log (`None` on the other ranks).
    log: Option<LogWriter>,
    bar: Option<indicatif::ProgressBar>,
    steps_per_epoch: u64,
    /// Seconds of this epoch's steps spent in collectives (data-parallel runs).
    all_reduce_seconds: f64,
}

impl<'t> Fit<'t> {
    /// Builds the optimizer and EMA, and restores the newest checkpoint when `resume`.
    fn start(
        trainer: &'t Trainer<'t>,
        task: &'t dyn TrainStep,
        steps_per_epoch: u64,
        resume: bool,
    ) -> Result<Self> {
        let dir = &trainer.run_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Io(e).context(format!("cannot create {}", dir.display())))?;
        if steps_per_epoch == 0 {
            bail!(
                "the training data yields no batch (fewer samples than one batch with drop_last?)"
            );
        }
        let cfg = &trainer.cfg;
        let vars = trainer.store.vars();
        let mut opt = cfg.optimizer.build(&vars)?;
        let mut ema = match cfg.ema_decay {
            Some(d) => Some(Ema::new(&vars, d)?),
            None => None,
        };
        let group = &trainer.group;
        let mut state = TrainState {
            seed: cfg.seed,
            world_size: group.world_size(),
            ..Default::default()
        };
        let loaded = if resume {
            checkpoint::load_latest(dir, trainer.store.device())?
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
            if ck.state.world_size != group.world_size() {
                bail!(
                    "checkpoint {} was written by a run of {} process(es); this run has {}: resume it with the same world size (mpirun -n {})",
                    ck.dir.display(),
                    ck.state.world_size,
                    group.world_size(),
                    ck.state.world_size
                );
            }
            state = ck.state.clone();
        } else {
            // every rank starts from rank 0's weights, as DDP does
            broadcast_from_rank0(&vars, group, |_| true)?;
        }
        let log = match group.is_main() {
            true => Some(LogWriter::open(
                &dir.join("log.jsonl"),
                loaded.map(|c| c.state.step),
            )?),
            false => None,
        };
        if let Some(noise) = task.noise() {
            noise.set_seed(cfg.seed);
        }
        let total = steps_per_epoch * cfg.epochs as u64;
        Ok(Self {
            trainer,
            task,
            params: param_groups(&vars, 0.0),
            vars,
            opt,
            ema,
            bar: trainer.progress_bar(total, state.step),
            state,
            log,
            steps_per_epoch,
            all_reduce_seconds: 0.0,
        })
    }

    /// One optimizer step on a batch: loss, NaN check, backward, clip, update, EMA, log,
    /// checkpoint.
    fn train_step(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        let (cfg, group) = (&self.trainer.cfg, &self.trainer.group);
        let t0 = Instant::now();
        if let Some(noise) = self.task.noise() {
            noise.set_step(self.state.step);
        }
        let lr = cfg.schedule.lr(self.state.step, self.steps_per_epoch);
        let out = self.task.step(x, y, true)?;
        let n = y.dim(0)?;
        let local_loss = scalar(&out.loss)? * n as f64;
        let t_comm = Instant::now();
        // the global batch's mean loss: every rank sees the same value and stops together
        let (loss_sum, n) = sum_over_ranks(local_loss, n as f64, group)?;
        let mut comm = t_comm.elapsed().as_secs_f64();
        let (loss, n) = (loss_sum / n, n as usize);
        if !loss.is_finite() {
            bail!(
                "loss is {loss} at step {} (epoch {}, batch {}); stopped. The last good checkpoint is kept in {}",
                self.state.step + 1,
                self.state.epoch,
                self.state.batch_in_epoch,
                self.trainer.run_dir.join("checkpoints").display()
            );
        }
        let mut grads = out.loss.backward()?;
        let t_comm = Instant::now();
        average_gradients(&mut grads, &self.params, group)?;
        comm += t_comm.elapsed().as_secs_f64();
        self.all_reduce_seconds += comm;
        let grad_norm = match cfg.grad_clip {
            Some(max) => Some(clip_grad_norm(&mut grads, &self.params, max)?),
            None => None,
        };
        self.opt.step(&grads, lr)?;
        if let Some(e) = &mut self.ema {
            e.update(&self.vars)?;
        }
        let s = &mut self.state;
        s.step += 1;
        s.batch_in_epoch += 1;
        s.epoch_loss_sum += loss * n as f64;
        s.epoch_samples += n;
        let dt = t0.elapsed().as_secs_f64();
        s.train_seconds += dt;
        s.train_images += n as u64;
        self.report_step(loss, lr, grad_norm, n as f64 / dt.max(1e-9))?;
        let every = cfg.checkpoint_every;
        if every > 0 && self.state.step % every == 0 {
            self.save()?;
        }
        Ok(())
    }

    /// The step record (every `log_every` steps) and the progress display.
    fn report_step(&mut self, loss: f64, lr: f64, grad_norm: Option<f64>, ips: f64) -> Result<()> {
        let (step, epoch) = (self.state.step, self.state.epoch);
        let log_now = step % self.trainer.cfg.log_every.max(1) == 0;
        if let Some(log) = self.log.as_mut().filter(|_| log_now) {
            log.write(&LogRecord::Step {
                step,
                epoch,
                loss,
                lr,
                images_per_sec: ips,
                grad_norm,
            })?;
        }
        if let Some(b) = &self.bar {
            b.set_position(step);
            b.set_message(format!(
                "epoch {} loss {loss:.4} lr {lr:.4} {ips:.0} img/s",
                epoch + 1
            ));
        } else if self.trainer.progress && self.trainer.group.is_main() && step % 50 == 0 {
            let total = self.steps_per_epoch * self.trainer.cfg.epochs as u64;
            eprintln!(
                "step {step}/{total} epoch {} loss {loss:.4} lr {lr:.5} {ips:.0} img/s",
                epoch + 1
            );
        }
        Ok(())
    }

    /// The end of an epoch: test evaluation, epoch and eval records, checkpoint.
    fn end_epoch(&mut self, test: &dyn BatchSource) -> Result<EvalResult> {
        let result = self.evaluate(test)?;
        let s = &self.state;
        let train_loss = s.epoch_loss_sum / s.epoch_samples.max(1) as f64;
        let cfg = &self.trainer.cfg;
        if let Some(log) = &mut self.log {
            log.write(&LogRecord::Epoch {
                step: s.step,
                epoch: s.epoch,
                train_loss,
                lr: cfg.schedule.lr(s.step, self.steps_per_epoch),
                train_images_per_sec: s.train_images as f64 / s.train_seconds.max(1e-9),
                all_reduce_seconds: (self.trainer.group.is_distributed())
                    .then_some(self.all_reduce_seconds),
            })?;
            log.write(&LogRecord::Eval {
                step: s.step,
                epoch: s.epoch,
                ema: self.ema.is_some(),
                result: result.clone(),
            })?;
        }
        if self.trainer.progress && self.trainer.group.is_main() {
            let line = format!(
                "epoch {}/{}: train loss {train_loss:.4}; test {}",
                s.epoch + 1,
                cfg.epochs,
                result.summary()
            );
            match &self.bar {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            }
        }
        let s = &mut self.state;
        s.epoch += 1;
        s.batch_in_epoch = 0;
        s.epoch_loss_sum = 0.0;
        s.epoch_samples = 0;
        self.all_reduce_seconds = 0.0;
        self.save()?;
        Ok(result)
    }

    /// The test pass of every rank's shard, reduced, with rank 0's batch-norm statistics (the
    /// weights are equal on every rank).
    fn evaluate(&mut self, test: &dyn BatchSource) -> Result<EvalResult> {
        broadcast_from_rank0(&self.vars, &self.trainer.group, is_running_stat)?;
        if let Some(e) = &mut self.ema {
            e.broadcast_from_rank0(&self.trainer.group, is_running_stat)?;
        }
        let ema = self.ema.as_ref();
        evaluate_maybe_ema(self.task, test, ema, &self.vars, &self.trainer.group)
    }

    /// Rank 0 writes the checkpoint; the other ranks hold the same weights and state.
    fn save(&self) -> Result<()> {
        if !self.trainer.group.is_main() {
            return Ok(());
        }
        let model = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        checkpoint::save(
            &self.trainer.run_dir,
            &self.state,
            &model,
            &self.opt.state()?,
            self.ema.as_ref().map(|e| e.state()).as_ref(),
        )?;
        Ok(())
    }

    fn summary(&self, test: EvalResult, stopped_early: bool) -> FitSummary {
        let s = &self.state;
        FitSummary {
            steps: s.step,
            epochs: s.epoch,
            test,
            train_images_per_sec: s.train_images as f64 / s.train_seconds.max(1e-9),
            stopped_early,
        }
    }
}
