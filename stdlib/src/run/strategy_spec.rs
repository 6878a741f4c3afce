//! A strategy as the pipeline states it (`ddpm(...)`, `rflow(...)`), resolved once — including
//! the resolution shift, computed from the spatial size the denoiser actually sees — and recorded
//! in `denoiser.json`, so `sample` integrates the ODE of the strategy that was trained.

use medgen_lang::value::Value;
use serde::{Deserialize, Serialize};

use crate::diffusion::strategy::{resolution_shift, BetaSchedule, Prediction, Strategy, TimeSampling};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum StrategySpec {
    Ddpm { timesteps: usize, schedule: String, prediction: String, min_snr: Option<f64> },
    Rflow { sampling: String, continuous: bool, timesteps: usize, shift: Option<f64> },
}

impl StrategySpec {
    /// From a stage's `strategy` and `min_snr` values; `spatial` is the shape the network sees
    /// (for rectified flow's resolution shift).
    pub fn from_value(strategy: &Value, min_snr: Option<&Value>, spatial: &[usize]) -> Result<StrategySpec, String> {
        let text = |k: &str, d: &str| strategy.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
        let timesteps = strategy.get("timesteps").and_then(Value::as_i64).unwrap_or(1000) as usize;
        match strategy.variant() {
            Some("ddpm") => Ok(StrategySpec::Ddpm {
                timesteps,
                schedule: text("schedule", "linear"),
                prediction: text("prediction", "epsilon"),
                min_snr: min_snr.and_then(Value::as_f64),
            }),
            Some("rflow") | None => {
                let shifted = strategy.get("timestep_transform").and_then(Value::as_bool).unwrap_or(true);
                Ok(StrategySpec::Rflow {
                    sampling: text("sampling", "logit_normal"),
                    continuous: strategy.get("continuous").and_then(Value::as_bool).unwrap_or(true),
                    timesteps,
                    shift: shifted.then(|| resolution_shift(spatial)),
                })
            }
            Some(other) => Err(format!("unknown strategy `{other}`")),
        }
    }

    pub fn build(&self) -> candle_core::Result<Strategy> {
        match self {
            StrategySpec::Ddpm { timesteps, schedule, prediction, min_snr } => {
                let schedule = match schedule.as_str() {
                    "cosine" => BetaSchedule::Cosine,
                    "scaled_linear" => BetaSchedule::ScaledLinear,
                    _ => BetaSchedule::Linear,
                };
                let prediction = match prediction.as_str() {
                    "v" => Prediction::V,
                    "sample" => Prediction::Sample,
                    _ => Prediction::Epsilon,
                };
                Strategy::ddpm(*timesteps, schedule, prediction, *min_snr)
            }
            StrategySpec::Rflow { sampling, continuous, timesteps, shift } => {
                let sampling = if sampling == "uniform" { TimeSampling::Uniform } else { TimeSampling::LogitNormal };
                Strategy::rflow(sampling, *continuous, *timesteps, *shift)
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
