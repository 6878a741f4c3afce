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
//! The error is data ([`HealthError`]); a trainer may stop, or skip the step and continue. The
//! window is part of the checkpoint ([`GuardState`]) so that a resumed run judges spikes exactly
//! as the uninterrupted one would.

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

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuardConfig {
    pub window: usize,
    pub min_history: usize,
    /// `None`: spikes are not judged (the stage's `spike_guard = none`).
    pub spike_factor: Option<f64>,
    pub on_spike: OnSpike,
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

/// The gradient norms of the last healthy steps, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardState {
    #[serde(with = "super::json_f64")]
    pub recent_norms: Vec<f64>,
}

/// Watches the loss and gradient norm of every step.
#[derive(Clone, Debug)]
pub struct Guard {
    config: GuardConfig,
    recent: VecDeque<f64>,
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
        }
    }
}

impl std::error::Error for HealthError {}

impl Guard {
    pub fn new(config: GuardConfig) -> Guard {
        Guard { config, recent: VecDeque::with_capacity(config.window) }
    }

    /// A guard that continues from a saved window.
    pub fn from_state(config: GuardConfig, state: &GuardState) -> Guard {
        let mut guard = Guard::new(config);
        let skip = state.recent_norms.len().saturating_sub(config.window);
        guard.recent.extend(&state.recent_norms[skip..]);
        guard
    }

    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    pub fn state(&self) -> GuardState {
        GuardState { recent_norms: self.recent.iter().copied().collect() }
    }

    /// Fails if the loss of `step` is NaN or infinite.
    pub fn check_loss(&self, step: u64, loss: f64) -> Result<(), HealthError> {
        if loss.is_finite() {
            Ok(())
        } else {
            Err(HealthError { step, kind: HealthErrorKind::NonFiniteLoss { loss } })
        }
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
