//! The training loop every training stage shares: epochs over a [`BatchSource`], AdamW with a
//! warmup + cosine schedule, gradient clipping, EMA, health guards, validation, checkpoints and
//! resumption, best and last weights, loss logs, progress.
//!
//! A stage supplies an [`Objective`] (its loss on a batch, and what validation measures) and the
//! data; everything that makes a run trustworthy is here, once:
//!
//! - **Resumption.** After every epoch the whole [`TrainState`] is checkpointed into the stage's
//!   work directory, which survives crashes and kills; a rerun of the same cache key finds the
//!   newest complete checkpoint and continues from it. Batches are a pure function of (seed,
//!   epoch) and every random number comes from a checkpointed stream, so a resumed run ends with
//!   the weights an uninterrupted run ends with, bit for bit on CPU. The two newest checkpoints
//!   are kept: a kill during a save leaves the previous one.
//! - **Validation** runs every `val_every` epochs and after the last, on the EMA weights when
//!   there is an EMA, with a validation stream restarted from the seed each time: every
//!   validation sees the same noise, so losses compare across epochs, and the training streams
//!   are untouched (seed pitfall 42). An empty validation split is an error before training
//!   starts (pitfall 39: the seeds' empty validation scored 0.0 and won "best").
//! - **Best and last.** The weights of the best validation so far are written atomically to the
//!   work directory at once, so a resumed run still knows them; the outputs hold both.
//! - **Health.** A non-finite loss or gradient, or a gradient spike, stops the stage with the
//!   guard's message instead of training on garbage.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use medgen_engine::runner::{RunContext, StageError};
use serde::{Deserialize, Serialize};

use super::checkpoint::{latest, CheckpointConfig, TrainState};
use super::clip::{clip_grad_norm, grad_norm};
use super::ema::Ema;
use super::guard::{Guard, GuardConfig, Health, HealthError, HealthErrorKind, OnSpike};
use super::optim::{AdamW, AdamWConfig};
use super::params::Params;
use super::rng::{Purpose, Stream, Streams};
use super::schedule::{Decay, Schedule, ValHistory};
use crate::data::loader::Batch;

/// Checkpoints kept in the work directory.
const KEPT_CHECKPOINTS: usize = 2;
/// Where checkpoints go inside the work directory.
const CHECKPOINT_DIR: &str = "checkpoints";
/// The best weights so far, in the work directory and in the outputs.
pub const BEST_WEIGHTS: &str = "best.safetensors";
/// The weights after the last epoch (EMA weights when there is an EMA), in the outputs.
pub const LAST_WEIGHTS: &str = "last.safetensors";
/// The shortest interval between two progress lines.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// A stream of batches, the same for the same epoch.
pub trait BatchSource {
    /// Batches per epoch.
    fn batches(&self) -> usize;
    /// Samples per epoch.
    fn samples(&self) -> usize;
    /// The batches of `epoch`, in order.
    fn epoch(&self, epoch: u64) -> Box<dyn Iterator<Item = Result<Batch, String>> + '_>;
}

impl BatchSource for crate::data::loader::Loader {
    fn batches(&self) -> usize {
        crate::data::loader::Loader::batches(self)
    }

    fn samples(&self) -> usize {
        self.len()
    }

    fn epoch(&self, epoch: u64) -> Box<dyn Iterator<Item = Result<Batch, String>> + '_> {
        Box::new(crate::data::loader::Loader::epoch(self, epoch))
    }
}

/// Mean validation measures by name; `None` where no sample contributed.
pub type Means = BTreeMap<String, Option<f64>>;

/// Sums over a validation pass: the loss, and any per-sample measures an objective adds (the
/// reconstruction PSNR, the velocity error per timestep bin), each a sum and a count.
#[derive(Clone, Debug, Default)]
pub struct ValSums {
    pub loss: f64,
    pub samples: usize,
    pub extra: BTreeMap<String, (f64, usize)>,
}

impl ValSums {
    pub fn add(&mut self, name: &str, value: f64) {
        let entry = self.extra.entry(name.to_string()).or_default();
        entry.0 += value;
        entry.1 += 1;
    }

    /// Makes `name` a column of the log even when no sample adds to it.
    pub fn declare(&mut self, name: &str) {
        self.extra.entry(name.to_string()).or_default();
    }

    /// The mean of every measure; `None` where no sample added to it.
    fn means(&self) -> Means {
        self.extra.iter().map(|(k, (s, n))| (k.clone(), (*n > 0).then(|| s / *n as f64))).collect()
    }
}

/// What a training stage optimises.
pub trait Objective {
    /// The f32 scalar loss of a training batch; random numbers come from `streams`.
    fn loss(&mut self, batch: &Batch, streams: &mut Streams) -> candle_core::Result<Tensor>;

    /// Adds one validation batch to `sums` (the loss summed over samples, and extra measures);
    /// random numbers come from `stream`, restarted for every validation.
    fn validate(&mut self, batch: &Batch, stream: &mut Stream, sums: &mut ValSums) -> candle_core::Result<()>;

    /// Called after every optimiser step with the batch just trained on (the VQ-VAE's EMA
    /// codebook update happens here).
    fn after_step(&mut self, _batch: &Batch) -> candle_core::Result<()> {
        Ok(())
    }
}

/// The training parameters every training stage has (`vocab::training_params`), as
/// `stages::train_config` resolves them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: u64,
    pub lr: f64,
    pub warmup_epochs: u64,
    pub grad_clip: Option<f64>,
    pub ema: Option<f64>,
    pub adamw: AdamWConfig,
    pub val_every: u64,
    pub seed: u64,
    /// A gradient norm this many times the recent median is a spike; `None`: not judged.
    pub spike_guard: Option<f64>,
    /// A loss this many times its lowest running median is divergence; `None`: not judged.
    pub divergence_guard: Option<f64>,
}

/// One epoch's line of the loss log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    /// Optimiser steps at the end of the epoch.
    pub step: u64,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    /// The objective's extra validation measures (`None`: no validation sample fell in it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub val: Means,
    /// Gradient spikes clipped rather than stopped on (`grad_clip` set).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub clipped_spikes: u64,
}

/// What a finished training reports.
#[derive(Clone, Debug)]
pub struct TrainReport {
    pub history: Vec<EpochRecord>,
    /// The best validation: its epoch (1-based) and loss.
    pub best: (u64, f64),
}

impl TrainReport {
    pub fn last(&self) -> &EpochRecord {
        self.history.last().expect("training runs at least one epoch")
    }

    /// The record of the best validation.
    pub fn best_record(&self) -> &EpochRecord {
        self.history.iter().find(|r| r.epoch == self.best.0).unwrap_or_else(|| self.last())
    }

    /// Writes `losses.csv` and `losses.json` into `dir`.
    pub fn write_logs(&self, dir: &Path) -> Result<(), StageError> {
        let extra: Vec<String> = {
            let mut names: Vec<String> = self.history.iter().flat_map(|r| r.val.keys().cloned()).collect();
            names.sort();
            names.dedup();
            names
        };
        let mut csv = String::from("epoch,step,lr,train_loss,val_loss");
        for name in &extra {
            csv.push(',');
            csv.push_str(name);
        }
        csv.push('\n');
        for r in &self.history {
            let val = r.val_loss.map_or(String::new(), |v| v.to_string());
            let _ = write!(csv, "{},{},{},{},{}", r.epoch, r.step, r.lr, r.train_loss, val);
            for name in &extra {
                csv.push(',');
                if let Some(Some(v)) = r.val.get(name) {
                    csv.push_str(&v.to_string());
                }
            }
            csv.push('\n');
        }
        write_file(&dir.join("losses.csv"), csv.as_bytes())?;
        let json = serde_json::to_vec_pretty(&self.history).map_err(|e| failed(format!("losses.json: {e}")))?;
        write_file(&dir.join("losses.json"), &json)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Written to the work directory when a health check stops training, so that a rerun of the same
/// key (same data, seed and weights: the same stop) fails at once instead of training up to it.
const STOPPED: &str = "stopped.json";

/// What stopped a training for good.
#[derive(Serialize, Deserialize)]
struct Stopped {
    step: u64,
    reason: String,
}

/// The metadata saved with every checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Progress {
    history: Vec<EpochRecord>,
    best: Option<(u64, f64)>,
}

/// Trains `params` (variables of `varmap`) on `train`, validating on `val`, in the run context
/// of a stage: checkpoints in its work directory, progress to its display, cancellation from its
/// flag. `varmap` may hold more than `params` (buffers such as an EMA codebook): the weight files
/// hold all of it. Writes [`BEST_WEIGHTS`], [`LAST_WEIGHTS`] and the loss logs to the stage's
/// output directory.
pub fn train(
    cx: &RunContext<'_>,
    varmap: &VarMap,
    params: Params,
    objective: &mut dyn Objective,
    data: (&dyn BatchSource, &dyn BatchSource),
    cfg: &TrainConfig,
) -> Result<TrainReport, StageError> {
    let (train, val) = data;
    if train.samples() == 0 {
        return Err(failed("the training split is empty: give the dataset a `train` fraction with patients in it"));
    }
    if val.samples() == 0 {
        return Err(failed(
            "the validation split is empty, so no checkpoint could be judged best (seed pitfall 39): \
             give the dataset a `val` fraction with at least one patient",
        ));
    }
    let steps_per_epoch = train.batches() as u64;
    let total_steps = steps_per_epoch * cfg.epochs;
    let schedule = Schedule {
        base_lr: cfg.lr,
        warmup_steps: (cfg.warmup_epochs * steps_per_epoch).min(total_steps.saturating_sub(1)),
        decay: Decay::Cosine { total_steps, min_lr: 0.0 },
    };
    let schedule = if schedule.validate().is_ok() { schedule } else { Schedule { decay: Decay::Constant, ..schedule } };
    let optimizer = AdamW::new(&params, cfg.adamw).map_err(model_error)?;
    let ema = cfg.ema.map(|decay| Ema::new(&params, decay)).transpose().map_err(model_error)?;
    let mut state = TrainState {
        step: 0,
        model: params,
        optimizer,
        ema,
        streams: Streams::new(cfg.seed),
        val_history: ValHistory::default(),
        guard: Guard::new(GuardConfig {
            spike_factor: cfg.spike_guard,
            on_spike: if cfg.grad_clip.is_some() { OnSpike::Clip } else { OnSpike::Stop },
            divergence_factor: cfg.divergence_guard,
            ..GuardConfig::default()
        }),
        metadata: serde_json::Value::Null,
    };
    let checkpoints = cx.work_dir.join(CHECKPOINT_DIR);
    refuse_a_known_stop(&cx.work_dir)?;
    let mut progress = Progress::default();
    if let Some(dir) = latest(&checkpoints).map_err(|e| failed(e.to_string()))? {
        let cannot_resume =
            |e: &dyn std::fmt::Display| failed(format!("cannot resume: {e} (delete {} to start over)", dir.display()));
        state.load(&dir).map_err(|e| cannot_resume(&e))?;
        progress = serde_json::from_value(state.metadata.clone())
            .map_err(|e| cannot_resume(&format!("the checkpoint's training progress is unreadable ({e})")))?;
        tracing::info!(step = state.step, "resuming from {}", dir.display());
    }

    let start_epoch = state.step / steps_per_epoch.max(1);
    let started = Instant::now();
    let steps_at_start = state.step;
    let mut last_report = Instant::now() - PROGRESS_INTERVAL;
    for epoch in start_epoch..cfg.epochs {
        let epoch_started = Instant::now();
        let (mut loss_sum, mut loss_count, mut lr, mut clipped_spikes) = (0.0, 0usize, cfg.lr, 0u64);
        for batch in train.epoch(epoch) {
            if cx.cancel.load(Ordering::SeqCst) {
                return Err(StageError::Cancelled);
            }
            let batch = batch.map_err(failed)?;
            lr = schedule.lr(state.step, &state.val_history);
            let (loss, health) = match step(&mut state, objective, &batch, cfg, lr) {
                Ok(done) => done,
                Err(Stop::Health(e)) => return Err(record_stop(&cx.work_dir, epoch + 1, &e)),
                Err(Stop::Failed(e)) => return Err(e),
            };
            if let Health::ClippedSpike { norm, median } = health {
                clipped_spikes += 1;
                tracing::warn!(step = state.step, norm, median, "gradient spike clipped (grad_clip)");
            }
            loss_sum += loss;
            loss_count += 1;
            if last_report.elapsed() >= PROGRESS_INTERVAL {
                last_report = Instant::now();
                let done = state.step - steps_at_start;
                let eta = started.elapsed().as_secs_f64() / done as f64 * (total_steps - state.step) as f64;
                (cx.progress)(format!(
                    "epoch {}/{}  step {}/{}  loss {:.4}  eta {}",
                    epoch + 1,
                    cfg.epochs,
                    state.step,
                    total_steps,
                    loss_sum / loss_count as f64,
                    clock(eta)
                ));
            }
        }
        let epoch_number = epoch + 1;
        let validate_now = epoch_number % cfg.val_every == 0 || epoch_number == cfg.epochs;
        let (val_loss, val_extra) =
            if validate_now { validate(&mut state, objective, val, cfg.seed)? } else { (None, BTreeMap::new()) };
        if let Some(loss) = val_loss {
            state.val_history.record(loss, val.samples()).map_err(|e| failed(e.to_string()))?;
            if progress.best.is_none_or(|(_, best)| loss < best) {
                progress.best = Some((epoch_number, loss));
                with_eval_weights(&mut state, || save_weights(varmap, &cx.work_dir.join(BEST_WEIGHTS)))?;
            }
        }
        progress.history.push(EpochRecord {
            epoch: epoch_number,
            step: state.step,
            lr,
            train_loss: loss_sum / loss_count.max(1) as f64,
            val_loss,
            val: val_extra,
            clipped_spikes,
        });
        tracing::info!(epoch = epoch_number, seconds = epoch_started.elapsed().as_secs_f64(), "epoch done");
        state.metadata = serde_json::to_value(&progress).map_err(|e| failed(e.to_string()))?;
        state.save(&checkpoints, &CheckpointConfig::default()).map_err(|e| failed(e.to_string()))?;
        prune(&checkpoints)?;
    }

    with_eval_weights(&mut state, || save_weights(varmap, &cx.out_dir.join(LAST_WEIGHTS)))?;
    std::fs::copy(cx.work_dir.join(BEST_WEIGHTS), cx.out_dir.join(BEST_WEIGHTS))
        .map_err(|e| failed(format!("cannot copy the best weights: {e}")))?;
    let best = progress.best.ok_or_else(|| {
        failed(format!(
            "the checkpoint in {} records no validation, so no weights can be called best: delete it to start over",
            checkpoints.display()
        ))
    })?;
    Ok(TrainReport { history: progress.history, best })
}

/// Why a step did not complete: a health check, or anything else.
enum Stop {
    Health(HealthError),
    Failed(StageError),
}

impl From<StageError> for Stop {
    fn from(e: StageError) -> Self {
        Stop::Failed(e)
    }
}

/// One optimiser step; returns the loss and what the guard saw.
fn step(
    state: &mut TrainState,
    objective: &mut dyn Objective,
    batch: &Batch,
    cfg: &TrainConfig,
    lr: f64,
) -> Result<(f64, Health), Stop> {
    let loss = objective.loss(batch, &mut state.streams).map_err(model_error)?;
    let value = loss.to_dtype(candle_core::DType::F64).and_then(|l| l.to_scalar::<f64>()).map_err(model_error)?;
    state.guard.check_loss(state.step, value).map_err(Stop::Health)?;
    let mut grads = loss.backward().map_err(model_error)?;
    let norm = match cfg.grad_clip {
        Some(max) => clip_grad_norm(&state.model, &mut grads, max),
        None => grad_norm(&state.model, &grads),
    }
    .map_err(model_error)?;
    let health = state.guard.check_gradients(state.step, &norm).map_err(Stop::Health)?;
    state.optimizer.step(&grads, lr).map_err(model_error)?;
    if let Some(ema) = &mut state.ema {
        ema.update().map_err(model_error)?;
    }
    objective.after_step(batch).map_err(model_error)?;
    state.step += 1;
    Ok((value, health))
}

/// Records a health stop in the work directory and says what to change. The checkpoints of the
/// epochs before `epoch` are kept: the weights before the bad step.
fn record_stop(work_dir: &Path, epoch: u64, e: &HealthError) -> StageError {
    let stopped = Stopped { step: e.step, reason: format!("epoch {epoch}, {e}") };
    let written = serde_json::to_vec_pretty(&stopped).map_err(|e| e.to_string()).and_then(|bytes| {
        std::fs::create_dir_all(work_dir)
            .and_then(|()| std::fs::write(work_dir.join(STOPPED), bytes))
            .map_err(|e| e.to_string())
    });
    if let Err(why) = written {
        tracing::warn!("cannot record the stop in {}: {why}", work_dir.display());
    }
    failed(format!("epoch {epoch}, {e}\n{}", stop_hint(e)))
}

/// What to change after a health stop; a rerun with the same settings would stop again.
fn stop_hint(e: &HealthError) -> &'static str {
    match e.kind {
        HealthErrorKind::GradientSpike { .. } => {
            "set `grad_clip` (spikes are then clipped and logged instead of stopping), lower `lr`, or raise \
             `spike_guard` (`none` turns the check off)"
        }
        HealthErrorKind::Divergence { .. } => {
            "lower `lr`, set `grad_clip` or `warmup`; if the loss is meant to rise this far, raise `divergence_guard` \
             (`none` turns the check off)"
        }
        _ => "lower `lr`, set `grad_clip` or `warmup`, and check the data; then run again (the stage starts over)",
    }
}

/// Fails at once when an earlier run of this key stopped on a health check: the same data, seed
/// and weights would train up to the same stop.
fn refuse_a_known_stop(work_dir: &Path) -> Result<(), StageError> {
    let path = work_dir.join(STOPPED);
    let Ok(bytes) = std::fs::read(&path) else { return Ok(()) };
    let stopped: Stopped = serde_json::from_slice(&bytes)
        .map_err(|e| failed(format!("{}: unreadable ({e}); delete it to train again", path.display())))?;
    Err(failed(format!(
        "an earlier run with these settings stopped at step {} and would stop there again: {}\nchange the \
         settings (a new cache key starts over), or delete {} to retry as it is",
        stopped.step,
        stopped.reason,
        path.display()
    )))
}

/// A validation pass on the evaluation weights; the mean loss (None for an empty split) and the
/// objective's extra measures.
fn validate(
    state: &mut TrainState,
    objective: &mut dyn Objective,
    val: &dyn BatchSource,
    seed: u64,
) -> Result<(Option<f64>, Means), StageError> {
    with_eval_weights(state, || {
        let mut stream = Stream::new(seed, Purpose::Validation);
        let mut sums = ValSums::default();
        for batch in val.epoch(0) {
            let batch = batch.map_err(failed)?;
            objective.validate(&batch, &mut stream, &mut sums).map_err(model_error)?;
        }
        let mean = (sums.samples > 0).then(|| sums.loss / sums.samples as f64);
        Ok((mean, sums.means()))
    })
}

/// Runs `f` with the EMA weights in the model when there is an EMA, restoring the training
/// weights afterwards (even when `f` fails).
fn with_eval_weights<T>(state: &mut TrainState, f: impl FnOnce() -> Result<T, StageError>) -> Result<T, StageError> {
    let swap = |state: &mut TrainState| state.ema.as_mut().map_or(Ok(()), Ema::swap).map_err(model_error);
    swap(state)?;
    let result = f();
    swap(state)?;
    result
}

/// Writes every variable of `varmap` to `path` as safetensors, atomically.
pub fn save_weights(varmap: &VarMap, path: &Path) -> Result<(), StageError> {
    let tmp = path.with_extension("safetensors.tmp");
    varmap.save(&tmp).map_err(|e| failed(format!("cannot write {}: {e}", tmp.display())))?;
    let file = std::fs::File::open(&tmp).and_then(|f| f.sync_all().map(|()| f));
    file.and_then(|_| std::fs::rename(&tmp, path)).map_err(|e| failed(format!("cannot write {}: {e}", path.display())))
}

/// Deletes all but the newest [`KEPT_CHECKPOINTS`] step directories.
fn prune(root: &Path) -> Result<(), StageError> {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| failed(format!("{}: {e}", root.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-")))
        .collect();
    steps.sort();
    for old in steps.iter().rev().skip(KEPT_CHECKPOINTS) {
        std::fs::remove_dir_all(old).map_err(|e| failed(format!("cannot remove {}: {e}", old.display())))?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), StageError> {
    std::fs::write(path, bytes).map_err(|e| failed(format!("cannot write {}: {e}", path.display())))
}

/// `1h02m`, `3m05s` or `42s`.
pub fn clock(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "?".into();
    }
    let s = seconds.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

pub fn failed(message: impl Into<String>) -> StageError {
    StageError::Failed(message.into())
}

/// A model error (a shape mismatch, an allocation failure) as a stage failure.
pub fn model_error(e: candle_core::Error) -> StageError {
    StageError::Failed(format!("model error: {e}"))
}

/// The variables of `varmap` except those named in `frozen` (buffers that are not optimised).
pub fn trainable(varmap: &VarMap, frozen: &[&str]) -> Params {
    let all = Params::from_varmap(varmap);
    let kept: Vec<(String, Var)> =
        all.iter().filter(|(n, _)| !frozen.contains(n)).map(|(n, v)| (n.to_string(), v.clone())).collect();
    Params::from_entries(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_health_stop_refuses_the_rerun_and_says_what_to_change() {
        let dir = std::env::temp_dir().join(format!("medgen-stop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(refuse_a_known_stop(&dir).is_ok(), "nothing recorded: training may start");
        let spike = HealthError {
            step: 41,
            kind: HealthErrorKind::GradientSpike { norm: 300.0, median: 2.0, factor: 10.0, window: 100 },
        };
        let StageError::Failed(first) = record_stop(&dir, 3, &spike) else { panic!("a failure") };
        assert!(first.starts_with("epoch 3, step 41: gradient spike") && first.contains("set `grad_clip`"), "{first}");
        let StageError::Failed(again) = refuse_a_known_stop(&dir).unwrap_err() else { panic!("a failure") };
        assert!(again.contains("stopped at step 41") && again.contains("gradient spike"), "{again}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
