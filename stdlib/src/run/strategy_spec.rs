//! A strategy as the pipeline states it (`ddpm(...)`, `rflow(...)`), resolved by the checker into a
//! [`StrategyConfig`], and as the trained denoiser records it: a [`StrategySpec`] with the
//! resolution shift computed from the spatial size the denoiser actually sees (known for a
//! `nifti` dataset without `shape` only once its files are read). `denoiser.json` keeps the spec,
//! so `sample` integrates the ODE of the strategy that was trained.

use serde::{Deserialize, Serialize};

use crate::diffusion::strategy::{resolution_shift, BetaSchedule, Prediction, Strategy, TimeSampling};

/// The strategy of a `diffuse` stage, every argument resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum StrategyConfig {
    Ddpm { timesteps: usize, schedule: BetaSchedule, prediction: Prediction, min_snr: Option<f64> },
    Rflow { sampling: TimeSampling, continuous: bool, timesteps: usize, timestep_transform: bool },
}

impl StrategyConfig {
    /// The strategy trained on `spatial`, the shape the network sees (for rectified flow's
    /// resolution shift).
    pub fn spec(&self, spatial: &[usize]) -> StrategySpec {
        match *self {
            StrategyConfig::Ddpm { timesteps, schedule, prediction, min_snr } => {
                StrategySpec::Ddpm { timesteps, schedule, prediction, min_snr }
            }
            StrategyConfig::Rflow { sampling, continuous, timesteps, timestep_transform } => StrategySpec::Rflow {
                sampling,
                continuous,
                timesteps,
                shift: timestep_transform.then(|| resolution_shift(spatial)),
            },
        }
    }
}

/// The strategy a denoiser was trained with, as `sample` rebuilds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum StrategySpec {
    Ddpm { timesteps: usize, schedule: BetaSchedule, prediction: Prediction, min_snr: Option<f64> },
    Rflow { sampling: TimeSampling, continuous: bool, timesteps: usize, shift: Option<f64> },
}

impl StrategySpec {
    pub fn build(&self) -> candle_core::Result<Strategy> {
        match *self {
            StrategySpec::Ddpm { timesteps, schedule, prediction, min_snr } => {
                Strategy::ddpm(timesteps, schedule, prediction, min_snr)
            }
            StrategySpec::Rflow { sampling, continuous, timesteps, shift } => {
                Strategy::rflow(sampling, continuous, timesteps, shift)
            }
        }
    }

    /// The model time of pure noise: `T` for DDPM (integer steps), 1 for rectified flow.
    pub fn time_range(&self) -> f64 {
        match self {
            StrategySpec::Ddpm { timesteps, .. } => *timesteps as f64,
            StrategySpec::Rflow { .. } => 1.0,
        }
    }
}
