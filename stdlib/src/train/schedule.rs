//! Learning-rate schedules: a linear warmup, then cosine decay, a constant rate, or reduction on
//! plateaus of the validation loss.
//!
//! A schedule is a pure function of the step and, for plateaus, of the validation history
//! ([`Schedule::lr`]), never an object that is stepped. So resuming needs no scheduler state
//! beyond the step and the validation losses the checkpoint already holds, and the rate of any
//! step can be recomputed after the fact.
//!
//! Conventions are torch's, and the tests compare against torch's schedulers:
//! - warmup: step `k < warmup_steps` uses `base_lr * (k + 1) / warmup_steps`, so the first update
//!   is not wasted at rate 0 and step `warmup_steps - 1` reaches `base_lr` (`LinearLR` with
//!   `start_factor = 1 / warmup_steps`, `total_iters = warmup_steps - 1`);
//! - cosine: from `base_lr` at the end of warmup to `min_lr` at `total_steps`, then `min_lr`
//!   (`CosineAnnealingLR` with `T_max = total_steps - warmup_steps`, `eta_min = min_lr`, which
//!   torch would let rise again after `T_max`);
//! - plateau: torch's `ReduceLROnPlateau` in mode `min` with a relative threshold, replayed over
//!   the recorded validation losses; during warmup its rate is scaled by the warmup ramp.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The smallest decrease `ReduceLROnPlateau` applies (its `eps`): a reduction smaller than this
/// is skipped.
const PLATEAU_MIN_DECREASE: f64 = 1e-8;

/// A learning-rate schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The rate after warmup (the peak).
    pub base_lr: f64,
    /// Steps of linear warmup; 0 for none.
    pub warmup_steps: u64,
    /// What follows the warmup.
    pub decay: Decay,
}

/// What follows the warmup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decay {
    /// `base_lr` from then on.
    Constant,
    /// Half a cosine from `base_lr` down to `min_lr` at `total_steps` (counted from step 0,
    /// warmup included), then `min_lr`.
    Cosine { total_steps: u64, min_lr: f64 },
    /// Reduction on plateaus of the validation loss.
    Plateau(Plateau),
}

/// `ReduceLROnPlateau(mode="min", threshold_mode="rel")`'s parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    /// Multiplier applied at each reduction, in (0, 1).
    pub factor: f64,
    /// Validations without improvement tolerated before a reduction.
    pub patience: u32,
    /// Relative improvement needed to count as better: `loss < best * (1 - threshold)`.
    pub threshold: f64,
    /// Validations after a reduction during which bad ones are not counted.
    pub cooldown: u32,
    /// The rate is never reduced below this.
    pub min_lr: f64,
}

/// The mean validation losses recorded so far, oldest first; the plateau schedule's input.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValHistory {
    #[serde(with = "super::json_f64")]
    losses: Vec<f64>,
}

impl ValHistory {
    /// Records a validation's mean loss over `samples` samples. An empty validation has no loss:
    /// the seeds reported 0.0 for it, which then beat every real loss and saved a spurious
    /// "best" checkpoint (seed pitfall 39); here it is refused, as is a NaN or infinite loss.
    pub fn record(&mut self, mean_loss: f64, samples: usize) -> Result<(), ScheduleError> {
        if samples == 0 {
            return Err(ScheduleError::EmptyValidation);
        }
        if !mean_loss.is_finite() {
            return Err(ScheduleError::NonFiniteValidationLoss { loss: mean_loss });
        }
        self.losses.push(mean_loss);
        Ok(())
    }

    pub fn losses(&self) -> &[f64] {
        &self.losses
    }
}

/// A schedule that cannot be used, or a validation loss that cannot be recorded.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleError {
    /// A parameter outside its range.
    Invalid { parameter: &'static str, value: f64, requirement: &'static str },
    /// A validation over no samples.
    EmptyValidation,
    /// A NaN or infinite validation loss.
    NonFiniteValidationLoss { loss: f64 },
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::Invalid { parameter, value, requirement } => {
                write!(f, "learning-rate schedule: {parameter} = {value} must be {requirement}")
            }
            ScheduleError::EmptyValidation => {
                write!(f, "validation covered no samples, so it has no loss; it is not recorded (seed pitfall 39)")
            }
            ScheduleError::NonFiniteValidationLoss { loss } => {
                write!(f, "validation loss is {loss}; a non-finite loss is not recorded")
            }
        }
    }
}

impl std::error::Error for ScheduleError {}

impl Schedule {
    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        let invalid = |parameter, value, requirement| Err(ScheduleError::Invalid { parameter, value, requirement });
        if !(self.base_lr.is_finite() && self.base_lr > 0.0) {
            return invalid("base_lr", self.base_lr, "finite and positive");
        }
        match self.decay {
            Decay::Constant => Ok(()),
            Decay::Cosine { total_steps, min_lr } => {
                if total_steps <= self.warmup_steps {
                    return invalid("total_steps", total_steps as f64, "greater than warmup_steps");
                }
                check_min_lr(min_lr, self.base_lr)
            }
            Decay::Plateau(Plateau { factor, threshold, min_lr, .. }) => {
                if !(factor > 0.0 && factor < 1.0) {
                    return invalid("factor", factor, "in (0, 1)");
                }
                if !(0.0..1.0).contains(&threshold) {
                    return invalid("threshold", threshold, "in [0, 1)");
                }
                check_min_lr(min_lr, self.base_lr)
            }
        }
    }

    /// The learning rate of step `step` (0-based: the rate of the `step + 1`-th update), given the
    /// validation losses recorded before it (only the plateau schedule reads them).
    pub fn lr(&self, step: u64, history: &ValHistory) -> f64 {
        self.warmup_factor(step) * self.decayed(step, history)
    }

    fn warmup_factor(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            (step + 1) as f64 / self.warmup_steps as f64
        } else {
            1.0
        }
    }

    /// The rate the warmup ramp scales.
    fn decayed(&self, step: u64, history: &ValHistory) -> f64 {
        match &self.decay {
            Decay::Constant => self.base_lr,
            Decay::Cosine { total_steps, min_lr } => {
                let span = total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = (step.saturating_sub(self.warmup_steps) as f64 / span).min(1.0);
                min_lr + (self.base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Decay::Plateau(plateau) => plateau.replay(self.base_lr, history.losses()),
        }
    }
}

fn check_min_lr(min_lr: f64, base_lr: f64) -> Result<(), ScheduleError> {
    if !(min_lr >= 0.0 && min_lr <= base_lr) {
        return Err(ScheduleError::Invalid { parameter: "min_lr", value: min_lr, requirement: "in [0, base_lr]" });
    }
    Ok(())
}

impl Plateau {
    /// The rate after torch's `ReduceLROnPlateau.step` has seen `losses`, starting from `base_lr`.
    fn replay(&self, base_lr: f64, losses: &[f64]) -> f64 {
        let mut lr = base_lr;
        let mut best = f64::INFINITY;
        let (mut bad, mut cooldown) = (0u32, 0u32);
        for &loss in losses {
            if loss < best * (1.0 - self.threshold) {
                best = loss;
                bad = 0;
            } else {
                bad += 1;
            }
            if cooldown > 0 {
                cooldown -= 1;
                bad = 0;
            }
            if bad > self.patience {
                let reduced = (lr * self.factor).max(self.min_lr);
                if lr - reduced > PLATEAU_MIN_DECREASE {
                    lr = reduced;
                }
                cooldown = self.cooldown;
                bad = 0;
            }
        }
        lr
    }
}
