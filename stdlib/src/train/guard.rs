//! Loss and gradient health checks: a NaN or infinite loss or gradient, or a gradient spike, stops
//! the step with an error instead of an update.
//!
//! One NaN gradient applied by the optimiser makes every weight NaN, and the run keeps going,
//! checkpointing garbage. A spike is subtler: two of the seeds' latent-diffusion reruns logged
//! 26K and 31K gradient spikes where the original runs had none. A step is a spike when
//! its gradient norm (before clipping — clipping hides spikes, it does not cure them) exceeds
//! [`GuardConfig::spike_factor`] times the median norm of the last [`GuardConfig::window`]
//! healthy steps. The median, unlike a mean, is not dragged up by the spikes themselves; spikes
//! and non-finite norms are never added to the window. No verdict is given until
//! [`GuardConfig::min_history`] norms are known, since early training moves the norm by orders of
//! magnitude.
//!
//! **Divergence** can stay finite: with a learning rate far too high the loss climbs from 0.34 to
//! 65,521 without a NaN, and every later stage trains on garbage. A step diverges when its loss
//! exceeds [`GuardConfig::divergence_factor`] times the *lowest* running median of the loss seen
//! so far (the median of the last [`GuardConfig::window`] healthy losses, once
//! [`GuardConfig::loss_min_history`] are known: a runaway learning rate blows the loss up within
//! the first steps). The lowest median, not the current one, so that a slow
//! climb cannot drag its own reference up with it; a factor of 100 leaves room for the noise of
//! per-step losses (a diffusion loss varies several-fold with the timesteps drawn).
//!
//! The error is data ([`HealthError`]); a trainer may stop, or skip the step and continue. The
//! windows are part of the checkpoint ([`GuardState`]) so that a resumed run judges spikes and
//! divergence exactly as the uninterrupted one would.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::clip::GradNorm;

/// Healthy steps whose gradient norms make up the median.
pub const DEFAULT_WINDOW: usize = 100;
/// Norms needed before spikes are judged.
pub const DEFAULT_MIN_HISTORY: usize = 20;
/// How many times the median norm counts as a spike.
pub const DEFAULT_SPIKE_FACTOR: f64 = 10.0;
/// How many times the lowest running median of the loss counts as divergence.
pub const DEFAULT_DIVERGENCE_FACTOR: f64 = 100.0;
/// Losses needed before divergence is judged: one, since a runaway learning rate blows the loss
/// up with its first update (0.41 to 8,861 for a KL-VAE at `lr = 1.0`), and the generous factor
/// absorbs the noise of a short window.
pub const DEFAULT_LOSS_MIN_HISTORY: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuardConfig {
    pub window: usize,
    pub min_history: usize,
    /// `None`: spikes are not judged (the stage's `spike_guard = none`).
    pub spike_factor: Option<f64>,
    pub on_spike: OnSpike,
    /// `None`: divergence is not judged (the stage's `divergence_guard = none`).
    pub divergence_factor: Option<f64>,
    /// Losses needed before divergence is judged.
    pub loss_min_history: usize,
}

/// What a gradient spike does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSpike {
    /// Stop the stage without applying the update.
    Stop,
    /// Apply the update, whose gradients the stage clips (`grad_clip`), and keep the spike out
    /// of the window.
    Clip,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            window: DEFAULT_WINDOW,
            min_history: DEFAULT_MIN_HISTORY,
            spike_factor: Some(DEFAULT_SPIKE_FACTOR),
            on_spike: OnSpike::Stop,
            divergence_factor: Some(DEFAULT_DIVERGENCE_FACTOR),
            loss_min_history: DEFAULT_LOSS_MIN_HISTORY,
        }
    }
}

/// A step the guard let through.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Health {
    Healthy,
    /// A spike that was clipped rather than stopped on ([`OnSpike::Clip`]).
    ClippedSpike {
        norm: f64,
        median: f64,
    },
}

/// The gradient norms and losses of the last healthy steps, oldest first, and the lowest running
/// median of the loss so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardState {
    #[serde(with = "super::json_f64")]
    pub recent_norms: Vec<f64>,
    /// Absent from checkpoints written before divergence was judged.
    #[serde(default, with = "super::json_f64")]
    pub recent_losses: Vec<f64>,
    #[serde(default)]
    pub lowest_loss_median: Option<f64>,
}

/// Watches the loss and gradient norm of every step.
#[derive(Clone, Debug)]
pub struct Guard {
    config: GuardConfig,
    recent: VecDeque<f64>,
    losses: VecDeque<f64>,
    lowest_loss_median: Option<f64>,
}

/// An unhealthy step.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthError {
    /// The step (0-based) whose loss or gradients are at fault.
    pub step: u64,
    pub kind: HealthErrorKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum HealthErrorKind {
    /// The loss is NaN or infinite.
    NonFiniteLoss { loss: f64 },
    /// The gradient norm is NaN or infinite; `variables` are those whose gradients are at fault.
    NonFiniteGradient { norm: f64, variables: Vec<String> },
    /// The gradient norm exceeds `factor` times the median of the last `window` healthy norms.
    GradientSpike { norm: f64, median: f64, factor: f64, window: usize },
    /// The loss exceeds `factor` times the lowest running median of the loss so far.
    Divergence { loss: f64, lowest_median: f64, factor: f64 },
}

impl fmt::Display for HealthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = self.step;
        match &self.kind {
            HealthErrorKind::NonFiniteLoss { loss } => {
                write!(f, "step {step}: the loss is {loss}; not training on it (check the inputs, the learning rate, and that the loss is computed in f32)")
            }
            HealthErrorKind::NonFiniteGradient { norm, variables } => write!(
                f,
                "step {step}: the gradient norm is {norm}; non-finite gradients in {}; not applying the update",
                variables.join(", ")
            ),
            HealthErrorKind::GradientSpike { norm, median, factor, window } => write!(
                f,
                "step {step}: gradient spike: norm {norm:.6e} is {:.1}x the median {median:.6e} of the last {window} steps (limit {factor}x); not applying the update",
                norm / median
            ),
            HealthErrorKind::Divergence { loss, lowest_median, factor } => write!(
                f,
                "step {step}: the loss has diverged: {loss:.6e} is {:.0}x the lowest running median {lowest_median:.6e} \
                 of the training loss (limit {factor}x); not applying the update",
                loss / lowest_median
            ),
        }
    }
}

impl std::error::Error for HealthError {}

impl Guard {
    pub fn new(config: GuardConfig) -> Guard {
        Guard {
            config,
            recent: VecDeque::with_capacity(config.window),
            losses: VecDeque::with_capacity(config.window),
            lowest_loss_median: None,
        }
    }

    /// A guard that continues from a saved window.
    pub fn from_state(config: GuardConfig, state: &GuardState) -> Guard {
        let mut guard = Guard::new(config);
        let tail = |values: &[f64]| values[values.len().saturating_sub(config.window)..].to_vec();
        guard.recent.extend(tail(&state.recent_norms));
        guard.losses.extend(tail(&state.recent_losses));
        guard.lowest_loss_median = state.lowest_loss_median;
        guard
    }

    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    pub fn state(&self) -> GuardState {
        GuardState {
            recent_norms: self.recent.iter().copied().collect(),
            recent_losses: self.losses.iter().copied().collect(),
            lowest_loss_median: self.lowest_loss_median,
        }
    }

    /// Fails if the loss of `step` is NaN or infinite, or has diverged; otherwise adds it to the
    /// window of healthy losses.
    pub fn check_loss(&mut self, step: u64, loss: f64) -> Result<(), HealthError> {
        if !loss.is_finite() {
            return Err(HealthError { step, kind: HealthErrorKind::NonFiniteLoss { loss } });
        }
        if let (Some(factor), Some(lowest_median)) = (self.config.divergence_factor, self.lowest_loss_median) {
            if loss > factor * lowest_median {
                return Err(HealthError { step, kind: HealthErrorKind::Divergence { loss, lowest_median, factor } });
            }
        }
        if self.losses.len() >= self.config.window {
            self.losses.pop_front();
        }
        self.losses.push_back(loss);
        if self.losses.len() >= self.config.loss_min_history.max(1) {
            let current = median(&self.losses);
            if current > 0.0 && self.lowest_loss_median.is_none_or(|lowest| current < lowest) {
                self.lowest_loss_median = Some(current);
            }
        }
        Ok(())
    }

    /// Fails if the gradient norm of `step` is not finite, or is a spike the configuration stops
    /// on; otherwise adds a healthy norm to the window.
    pub fn check_gradients(&mut self, step: u64, norm: &GradNorm) -> Result<Health, HealthError> {
        let total = norm.total;
        if !total.is_finite() {
            let variables = norm.non_finite.clone();
            return Err(HealthError { step, kind: HealthErrorKind::NonFiniteGradient { norm: total, variables } });
        }
        if let (Some(factor), true) = (self.config.spike_factor, self.recent.len() >= self.config.min_history.max(1)) {
            let median = median(&self.recent);
            if total > factor * median {
                if self.config.on_spike == OnSpike::Clip {
                    return Ok(Health::ClippedSpike { norm: total, median });
                }
                let window = self.recent.len();
                return Err(HealthError {
                    step,
                    kind: HealthErrorKind::GradientSpike { norm: total, median, factor, window },
                });
            }
        }
        if self.recent.len() >= self.config.window {
            self.recent.pop_front();
        }
        self.recent.push_back(total);
        Ok(Health::Healthy)
    }
}

/// The median of finite, non-empty `values` (the mean of the middle two for an even count).
fn median(values: &VecDeque<f64>) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}
