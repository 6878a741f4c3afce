//! The two strategies, DDPM and rectified flow: how a clean `x0` is noised for training, what
//! the network learns to predict, and the ODE that sampling integrates back to a clean sample.
//!
//! **DDPM** (Ho et al., "Denoising Diffusion Probabilistic Models", NeurIPS 2020): a table of
//! `T` betas, `ᾱ_t = Π_{s≤t} (1 − β_s)`, `x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε` for an integer
//! `t ∈ [0, T)`. The schedules are MONAI's (`monai/networks/schedulers/scheduler.py`):
//! `linear` (`linspace(1e-4, 2e-2, T)`), `scaled_linear` (`linspace(√1e-4, √2e-2, T)²`) and
//! `cosine` (Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021,
//! `s = 0.008`, betas clipped to `[0, 0.999]`). They are computed in f64; MONAI's f32 tables agree
//! to f32 rounding (`tests/diffusion.rs`). The network predicts `ε` ([`Prediction::Epsilon`]),
//! `v = √ᾱ·ε − √(1−ᾱ)·x0` ([`Prediction::V`]; Salimans & Ho, "Progressive Distillation", ICLR
//! 2022; MONAI's `get_velocity`) or `x0` ([`Prediction::Sample`]). Min-SNR-γ weights (Hang et al.,
//! "Efficient Diffusion Training via Min-SNR Weighting Strategy", ICCV 2023) with
//! `SNR = ᾱ/(1−ᾱ)` are `min(SNR, γ)/SNR` for ε, `min(SNR, γ)/(SNR + 1)` for v and `min(SNR, γ)` for
//! x0; they exist only for DDPM (seed pitfall 64), so [`Strategy::rflow`] has no such argument.
//!
//! **Rectified flow** (Liu et al., "Flow Straight and Fast", ICLR 2023) with the seeds'
//! convention (pitfall 68): `t = 0` is clean, `t = 1` is noise, `x_t = (1−t)·x0 + t·ε`, and the
//! network predicts `v = x0 − ε`, which points from noise to data. `t` is continuous in `[0, 1]`
//! (pitfall 65) and is embedded as `t · 1000` ([`TimeScale::Continuous`]); MONAI's
//! `RFlowScheduler` counts the same times in `[0, T]` and we divide them by `T`. Training draws
//! `t` uniformly or logit-normally (`t = sigmoid(n)`, `n ~ N(0, 1)`; Esser et al., "Scaling
//! Rectified Flow Transformers", ICML 2024), then, when `continuous = false`, floors it to
//! `k/T` as MONAI's `.long()` does (`k ∈ [0, T)`), and finally applies the resolution shift.
//!
//! **Resolution shift**: MONAI's `timestep_transform`, `t' = r·t / (1 + (r−1)·t)` with
//! `r = (numel / base)^(1/dims)`, moves training times and the sampling grid towards noise for
//! inputs larger than the base (more steps where a large volume still has structure to form).
//! MONAI's base is `32·32·32` with `spatial_dim = 3`; its constructor keeps that base for 2D
//! inputs too, which compares an area with a volume, so [`resolution_shift`] uses a
//! [`SHIFT_BASE_EDGE`]-voxel edge in every dimension (`32·32` in 2D): `r` is the input's
//! geometric-mean edge length over 32. The shift is resolved once, when the strategy is built,
//! from the shape the stage trains or samples at.
//!
//! **Sampling** is an ODE in a solver time `s` that decreases from pure noise to clean, so any
//! [`crate::diffusion::Solver`] can integrate it:
//!
//! - rectified flow: `y = x_t`, `s = t`, `dy/ds = −v̂`; an Euler step from `t` to `t − dt` is
//!   `x_{t−dt} = x_t + dt·v̂` (pitfall 68: addition). The grid is MONAI's `set_timesteps`,
//!   `1 − i/N` for `i < N` then shifted, and a final 0. With `continuous = false` the grid
//!   follows MONAI too (`round` half-to-even to `k/T`, shift, floor to `k/T`), except that
//!   MONAI's float16 storage of the times is not copied, and repeated times are dropped.
//! - DDPM: the probability-flow ODE in DDIM's parameterisation (Song et al., "Denoising
//!   Diffusion Implicit Models", ICLR 2021, eq. 14): `y = x_t/√ᾱ_t`, `s = σ = √((1−ᾱ)/ᾱ)`,
//!   `dy/dσ = ε̂`, the v and x0 predictions converted to `ε̂`. Since `y_prev = x0̂ + σ_prev·ε̂`,
//!   one Euler step between two grid points is exactly one deterministic DDIM step (`eta = 0`).
//!   The grid is DDIM's "leading" spacing `t = i·⌊T/N⌋`, `i = N−1, …, 0` (diffusers' default),
//!   mapped to σ, then `σ = 0` (`ᾱ = 1`, MONAI's `set_alpha_to_one`). MONAI 1.6.1's own
//!   `set_timesteps` spaces them with `linspace(T−1, 0, N)` (999, 888, …) while its `step` always
//!   goes to `t − ⌊T/N⌋` (899, …), so its loop queries the model at times its steps never reach;
//!   the leading grid is the one where grid and step agree.
//!
//!   Between table entries (adaptive solvers, the stages of higher-order ones) the model's
//!   timestep is interpolated linearly in `ln σ` between the two neighbouring integer steps, as
//!   k-diffusion's `DiscreteSchedule.sigma_to_t` does (`crowsonkb/k-diffusion`,
//!   `k_diffusion/external.py`); it is exact at integer steps. Below `σ_0 = σ(t = 0)` the table
//!   ends: there the right-hand side is the one at `σ_0` (the model at `t = 0`, its output read
//!   at `σ_0`), which keeps it finite down to `σ = 0` (an x0 prediction would divide by `σ`). An
//!   Euler step never evaluates there; Heun's and RK4's last stages do.
//!
//! Nothing here clamps: predicted and sampled `x0` may be latents or wavelet coefficients
//! outside `[0, 1]` (seed pitfalls 75-78). Nothing here draws random numbers either: the caller
//! passes uniforms, normals and noise from its own seeded streams (`crate::train::rng`), so the
//! strategy cannot move another purpose's numbers (pitfall 42).
//!
//! Per-sample coefficients (`√ᾱ_t`, `1 − t`, …) are computed on the host in f64 from the `[B]`
//! times and cast to the data's dtype; a batch's times are a handful of numbers to read back.

use std::fmt;

use candle_core::{bail, DType, Result, Tensor};

use crate::nn::embed::TimeScale;

/// First beta of the `linear` and `scaled_linear` schedules (MONAI's default `beta_start`).
pub const BETA_START: f64 = 1e-4;

/// Last beta of the `linear` and `scaled_linear` schedules (MONAI's default `beta_end`).
pub const BETA_END: f64 = 2e-2;

/// The cosine schedule's offset `s`, which keeps the first betas away from zero.
pub const COSINE_OFFSET: f64 = 8e-3;

/// The cosine schedule's largest beta: without the clip its last beta is 1 and `ᾱ_{T−1} = 0`.
pub const COSINE_MAX_BETA: f64 = 0.999;

/// Edge length, in voxels, of the reference input of the resolution shift (MONAI's
/// `base_img_size_numel = 32 * 32 * 32` in 3D).
pub const SHIFT_BASE_EDGE: usize = 32;

/// The fewest training timesteps a strategy accepts (the `timesteps` range of `vocab::strategy`).
pub const MIN_TIMESTEPS: usize = 2;

/// A DDPM beta schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `linspace(BETA_START, BETA_END, T)`.
    Linear,
    /// `linspace(√BETA_START, √BETA_END, T)²`.
    ScaledLinear,
    /// `ᾱ(t) ∝ cos²((t/T + s)/(1 + s) · π/2)`, betas clipped to `[0, COSINE_MAX_BETA]`.
    Cosine,
}

impl BetaSchedule {
    /// The `timesteps` betas, as MONAI's schedule functions compute them (in f64).
    fn betas(self, timesteps: usize) -> Vec<f64> {
        let linspace = |start: f64, end: f64| -> Vec<f64> {
            let last = (timesteps - 1) as f64;
            (0..timesteps).map(|i| start + (end - start) * i as f64 / last).collect()
        };
        match self {
            BetaSchedule::Linear => linspace(BETA_START, BETA_END),
            BetaSchedule::ScaledLinear => {
                linspace(BETA_START.sqrt(), BETA_END.sqrt()).into_iter().map(|b| b * b).collect()
            }
            BetaSchedule::Cosine => {
                let f = |i: usize| {
                    let x = (i as f64 / timesteps as f64 + COSINE_OFFSET) / (1.0 + COSINE_OFFSET);
                    (x * std::f64::consts::FRAC_PI_2).cos().powi(2)
                };
                (0..timesteps).map(|i| (1.0 - f(i + 1) / f(i)).clamp(0.0, COSINE_MAX_BETA)).collect()
            }
        }
    }
}

/// What a DDPM network predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The noise `ε`.
    Epsilon,
    /// The velocity `v = √ᾱ·ε − √(1−ᾱ)·x0`.
    V,
    /// The clean sample `x0`.
    Sample,
}

/// How rectified-flow training draws `t` before discretisation and shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSampling {
    /// `t = u`, `u ~ U[0, 1)`.
    Uniform,
    /// `t = sigmoid(n)`, `n ~ N(0, 1)`: most samples in the middle, where the velocity is
    /// hardest to predict.
    LogitNormal,
}

/// DDPM: a beta schedule, a prediction target and optional min-SNR weights.
#[derive(Clone, PartialEq)]
pub struct Ddpm {
    schedule: BetaSchedule,
    prediction: Prediction,
    min_snr: Option<f64>,
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    /// `σ_t = √((1−ᾱ_t)/ᾱ_t)`, strictly increasing because every beta is positive.
    sigmas: Vec<f64>,
}

impl Ddpm {
    pub fn timesteps(&self) -> usize {
        self.betas.len()
    }

    pub fn schedule(&self) -> BetaSchedule {
        self.schedule
    }

    pub fn prediction(&self) -> Prediction {
        self.prediction
    }

    /// The min-SNR `γ`, if the loss is weighted.
    pub fn min_snr(&self) -> Option<f64> {
        self.min_snr
    }

    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// `ᾱ_t` for `t ∈ [0, T)`.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// The solver time `σ_t = √((1−ᾱ_t)/ᾱ_t)` of the integer step `t` (panics past the table).
    pub fn sigma(&self, t: usize) -> f64 {
        self.sigmas[t]
    }

    /// The model timestep at solver time `σ`: exact at table entries, linear in `ln σ` between
    /// them, clamped to `[0, T−1]` outside the table.
    pub fn model_time(&self, sigma: f64) -> f64 {
        let sigmas = &self.sigmas;
        let last = sigmas.len() - 1;
        if sigma <= sigmas[0] {
            return 0.0;
        }
        if sigma >= sigmas[last] {
            return last as f64;
        }
        let k = sigmas.partition_point(|&s| s <= sigma) - 1;
        let w = (sigma.ln() - sigmas[k].ln()) / (sigmas[k + 1].ln() - sigmas[k].ln());
        k as f64 + w
    }

    /// `ᾱ_t` of a training timestep, which must be an integer in `[0, T)`.
    fn alpha_bar(&self, t: f64) -> Result<f64> {
        let steps = self.timesteps();
        if !(t >= 0.0 && t < steps as f64 && t.fract() == 0.0) {
            bail!("a DDPM timestep must be an integer in [0, {steps}), got {t}");
        }
        Ok(self.alphas_cumprod[t as usize])
    }

    /// `(√ᾱ_t, √(1−ᾱ_t))` per sample.
    fn coefficients(&self, t: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
        let bars = host(t)?.into_iter().map(|t| self.alpha_bar(t)).collect::<Result<Vec<_>>>()?;
        Ok((bars.iter().map(|a| a.sqrt()).collect(), bars.iter().map(|a| (1.0 - a).sqrt()).collect()))
    }

    /// `σ` below the table's clean end reads as `σ_0` (see the module documentation).
    fn effective_sigma(&self, sigma: f64) -> f64 {
        sigma.max(self.sigmas[0])
    }
}

/// The configuration, without the three tables it determines.
impl fmt::Debug for Ddpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ddpm")
            .field("timesteps", &self.timesteps())
            .field("schedule", &self.schedule)
            .field("prediction", &self.prediction)
            .field("min_snr", &self.min_snr)
            .finish_non_exhaustive()
    }
}

/// Rectified flow: how training draws `t`, its discretisation and the resolution shift.
#[derive(Debug, Clone, PartialEq)]
pub struct RFlow {
    sampling: TimeSampling,
    continuous: bool,
    timesteps: usize,
    shift: Option<f64>,
}

impl RFlow {
    pub fn sampling(&self) -> TimeSampling {
        self.sampling
    }

    pub fn continuous(&self) -> bool {
        self.continuous
    }

    /// MONAI's `num_train_timesteps`: the discretisation when `continuous` is false.
    pub fn timesteps(&self) -> usize {
        self.timesteps
    }

    /// The shift ratio `r`, if times are shifted.
    pub fn shift(&self) -> Option<f64> {
        self.shift
    }

    fn shifted(&self, t: f64) -> f64 {
        self.shift.map_or(t, |ratio| shift_time(t, ratio))
    }

    /// `t` floored to a multiple of `1/T` below 1, as MONAI's `(t * T).long()`.
    fn floored(&self, t: f64) -> f64 {
        let steps = self.timesteps as f64;
        (t * steps).floor().min(steps - 1.0) / steps
    }
}

/// MONAI's `timestep_transform` in `[0, 1]` units: `r·t / (1 + (r−1)·t)`. It fixes 0 and 1 and,
/// for `r > 1`, moves every time in between towards noise.
pub fn shift_time(t: f64, ratio: f64) -> f64 {
    ratio * t / (1.0 + (ratio - 1.0) * t)
}

/// The resolution shift ratio of an input of spatial shape `spatial`:
/// `(numel / SHIFT_BASE_EDGE^dims)^(1/dims)`, MONAI's `ratio_space` (see the module documentation
/// for the base).
pub fn resolution_shift(spatial: &[usize]) -> f64 {
    let dims = spatial.len() as f64;
    let numel: f64 = spatial.iter().map(|&n| n as f64).product();
    (numel / (SHIFT_BASE_EDGE as f64).powf(dims)).powf(1.0 / dims)
}

/// How to noise and denoise (seed pitfall 1: a strategy, never a mode).
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    Ddpm(Ddpm),
    RFlow(RFlow),
}

impl Strategy {
    /// DDPM with `timesteps` steps; `min_snr` is the `γ` of min-SNR loss weights.
    pub fn ddpm(
        timesteps: usize,
        schedule: BetaSchedule,
        prediction: Prediction,
        min_snr: Option<f64>,
    ) -> Result<Strategy> {
        if timesteps < MIN_TIMESTEPS {
            bail!("DDPM needs at least {MIN_TIMESTEPS} timesteps, got {timesteps}");
        }
        if let Some(gamma) = min_snr {
            if !(gamma.is_finite() && gamma > 0.0) {
                bail!("the min-SNR gamma must be positive and finite, got {gamma}");
            }
        }
        let betas = schedule.betas(timesteps);
        let alphas_cumprod: Vec<f64> = betas
            .iter()
            .scan(1.0, |product, beta| {
                *product *= 1.0 - beta;
                Some(*product)
            })
            .collect();
        let sigmas = alphas_cumprod.iter().map(|a| ((1.0 - a) / a).sqrt()).collect();
        Ok(Strategy::Ddpm(Ddpm { schedule, prediction, min_snr, betas, alphas_cumprod, sigmas }))
    }

    /// Rectified flow. `timesteps` discretises `t` when `continuous` is false; `shift` is the
    /// ratio of the resolution shift ([`resolution_shift`]), or `None` for no shift.
    pub fn rflow(sampling: TimeSampling, continuous: bool, timesteps: usize, shift: Option<f64>) -> Result<Strategy> {
        if timesteps < MIN_TIMESTEPS {
            bail!("rectified flow needs at least {MIN_TIMESTEPS} timesteps, got {timesteps}");
        }
        if let Some(ratio) = shift {
            if !(ratio.is_finite() && ratio > 0.0) {
                bail!("the timestep shift must be positive and finite, got {ratio}");
            }
        }
        Ok(Strategy::RFlow(RFlow { sampling, continuous, timesteps, shift }))
    }

    /// How the model's time embedding reads the times of [`Strategy::sample_t`] and
    /// [`Strategy::model_input`].
    pub fn time_scale(&self) -> TimeScale {
        match self {
            Strategy::Ddpm(_) => TimeScale::Discrete,
            Strategy::RFlow(_) => TimeScale::Continuous,
        }
    }

    /// Training times `[B]` (f32, on `u`'s device) from uniforms `u ∈ [0, 1]` and standard
    /// normals `n`, both `[B]`: DDPM `⌊u·T⌋` (an integer step); rectified flow `u` or
    /// `sigmoid(n)`, floored to `k/T` unless continuous, then shifted.
    pub fn sample_t(&self, u: &Tensor, n: &Tensor) -> Result<Tensor> {
        let us = host(u)?;
        let ns = host(n)?;
        if us.len() != ns.len() {
            bail!("sample_t needs as many normals as uniforms, got {} and {}", ns.len(), us.len());
        }
        if let Some(bad) = us.iter().find(|u| !(0.0..=1.0).contains(*u)) {
            bail!("sample_t needs uniforms in [0, 1], got {bad}");
        }
        if let Some(bad) = ns.iter().find(|n| !n.is_finite()) {
            bail!("sample_t needs finite normals, got {bad}");
        }
        let ts: Vec<f32> = match self {
            Strategy::Ddpm(d) => {
                let steps = d.timesteps() as f64;
                us.iter().map(|u| (u * steps).floor().min(steps - 1.0) as f32).collect()
            }
            Strategy::RFlow(r) => us
                .iter()
                .zip(&ns)
                .map(|(&u, &n)| {
                    let t = match r.sampling {
                        TimeSampling::Uniform => u,
                        TimeSampling::LogitNormal => 1.0 / (1.0 + (-n).exp()),
                    };
                    let t = if r.continuous { t } else { r.floored(t) };
                    r.shifted(t) as f32
                })
                .collect(),
        };
        Tensor::from_vec(ts, us.len(), u.device())
    }

    /// The noised `x_t` of clean `x0` and noise `eps` (`[B, C, *spatial]`) at times `t` (`[B]`).
    pub fn noisy(&self, x0: &Tensor, eps: &Tensor, t: &Tensor) -> Result<Tensor> {
        same_shape(x0, eps)?;
        let (clean, noise) = match self {
            Strategy::Ddpm(d) => d.coefficients(t)?,
            Strategy::RFlow(_) => {
                let ts = unit_times(t)?;
                (ts.iter().map(|t| 1.0 - t).collect(), ts)
            }
        };
        mix(x0, &clean, eps, &noise)
    }

    /// What the network learns to output at `t`: `ε`, `v` or `x0` for DDPM, `x0 − ε` for
    /// rectified flow.
    pub fn target(&self, x0: &Tensor, eps: &Tensor, t: &Tensor) -> Result<Tensor> {
        same_shape(x0, eps)?;
        match self {
            Strategy::Ddpm(d) => match d.prediction {
                Prediction::Epsilon => Ok(eps.clone()),
                Prediction::Sample => Ok(x0.clone()),
                Prediction::V => {
                    let (a, b) = d.coefficients(t)?;
                    mix(eps, &a, x0, &b.iter().map(|b| -b).collect::<Vec<_>>())
                }
            },
            Strategy::RFlow(_) => x0 - eps,
        }
    }

    /// Min-SNR-γ loss weights `[B]` (f32, on `t`'s device), or `None` when the loss is not
    /// weighted (always for rectified flow, seed pitfall 64).
    pub fn loss_weights(&self, t: &Tensor) -> Result<Option<Tensor>> {
        let Strategy::Ddpm(d) = self else {
            return Ok(None);
        };
        let Some(gamma) = d.min_snr else {
            return Ok(None);
        };
        let weights = host(t)?
            .into_iter()
            .map(|t| {
                let a = d.alpha_bar(t)?;
                let snr = a / (1.0 - a);
                let clipped = snr.min(gamma);
                Ok(match d.prediction {
                    Prediction::Epsilon => clipped / snr,
                    Prediction::V => clipped / (snr + 1.0),
                    Prediction::Sample => clipped,
                } as f32)
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = weights.len();
        Tensor::from_vec(weights, batch, t.device()).map(Some)
    }

    /// The clean sample the network's output implies at `x_t` and times `t` (`[B]`). Never
    /// clamped (seed pitfalls 75-78).
    pub fn predict_x0(&self, x_t: &Tensor, model_out: &Tensor, t: &Tensor) -> Result<Tensor> {
        same_shape(x_t, model_out)?;
        match self {
            Strategy::Ddpm(d) => {
                let (a, b) = d.coefficients(t)?;
                match d.prediction {
                    Prediction::Sample => Ok(model_out.clone()),
                    Prediction::Epsilon => {
                        let inv: Vec<f64> = a.iter().map(|a| 1.0 / a).collect();
                        let eps: Vec<f64> = a.iter().zip(&b).map(|(a, b)| -b / a).collect();
                        mix(x_t, &inv, model_out, &eps)
                    }
                    Prediction::V => mix(x_t, &a, model_out, &b.iter().map(|b| -b).collect::<Vec<_>>()),
                }
            }
            Strategy::RFlow(_) => {
                let ts = unit_times(t)?;
                mix(x_t, &vec![1.0; ts.len()], model_out, &ts)
            }
        }
    }

    /// The whole solver interval `(start, end)`, noise to clean, for adaptive solvers:
    /// `(σ_{T−1}, 0)` for DDPM, `(1, 0)` for rectified flow.
    pub fn span(&self) -> (f64, f64) {
        match self {
            Strategy::Ddpm(d) => (d.sigma(d.timesteps() - 1), 0.0),
            Strategy::RFlow(_) => (1.0, 0.0),
        }
    }

    /// The `steps + 1` solver times of a fixed-step sampler, strictly decreasing from the start
    /// (pure noise) to 0 (clean); see the module documentation. A discrete rectified-flow grid
    /// may hold fewer when the shift maps two times to the same step.
    pub fn grid(&self, steps: usize) -> Result<Vec<f64>> {
        if steps == 0 {
            bail!("a sampling grid needs at least one step");
        }
        let mut grid: Vec<f64> = match self {
            Strategy::Ddpm(d) => {
                let limit = d.timesteps();
                if steps > limit {
                    bail!("DDPM sampling takes at most its {limit} training timesteps, got {steps} steps");
                }
                let stride = limit / steps;
                (0..steps).rev().map(|i| d.sigma(i * stride)).collect()
            }
            Strategy::RFlow(r) => {
                let limit = r.timesteps;
                if !r.continuous && steps > limit {
                    bail!("discrete rectified flow takes at most its {limit} timesteps, got {steps} steps");
                }
                let scale = limit as f64;
                (0..steps)
                    .map(|i| 1.0 - i as f64 / steps as f64)
                    .map(|t| {
                        if r.continuous {
                            r.shifted(t)
                        } else {
                            (r.shifted((t * scale).round_ties_even() / scale) * scale).floor() / scale
                        }
                    })
                    .collect()
            }
        };
        grid.push(0.0);
        grid.dedup();
        Ok(grid)
    }

    /// The ODE state at solver time `s` (the grid's start) when `x_t` is the noise `noise`.
    pub fn prior(&self, noise: &Tensor, s: f64) -> Result<Tensor> {
        match self {
            Strategy::Ddpm(_) => noise.affine((1.0 + s * s).sqrt(), 0.0),
            Strategy::RFlow(_) => Ok(noise.clone()),
        }
    }

    /// What the model sees at state `y` and solver time `s`: `x_t` and its timestep in the
    /// units of [`Strategy::time_scale`].
    pub fn model_input(&self, y: &Tensor, s: f64) -> Result<(Tensor, f64)> {
        match self {
            Strategy::Ddpm(d) => {
                let sigma = d.effective_sigma(s);
                Ok((y.affine(1.0 / (1.0 + sigma * sigma).sqrt(), 0.0)?, d.model_time(sigma)))
            }
            Strategy::RFlow(_) => Ok((y.clone(), s)),
        }
    }

    /// `dy/ds` at state `y` and solver time `s`, from the model's output on
    /// [`Strategy::model_input`]`(y, s)`.
    pub fn derivative(&self, y: &Tensor, s: f64, model_out: &Tensor) -> Result<Tensor> {
        same_shape(y, model_out)?;
        match self {
            Strategy::Ddpm(d) => {
                let sigma = d.effective_sigma(s);
                match d.prediction {
                    Prediction::Epsilon => Ok(model_out.clone()),
                    Prediction::V => {
                        let a2 = 1.0 / (1.0 + sigma * sigma);
                        model_out.affine(a2.sqrt(), 0.0)? + y.affine(sigma * a2, 0.0)?
                    }
                    Prediction::Sample => y.affine(1.0 / sigma, 0.0)? - model_out.affine(1.0 / sigma, 0.0)?,
                }
            }
            Strategy::RFlow(_) => model_out.neg(),
        }
    }

    /// The sample `x_s` in data units from the state `y` at solver time `s`; at the grid's end
    /// (`s = 0`) this is the clean sample, `y` itself.
    pub fn finish(&self, y: &Tensor, s: f64) -> Result<Tensor> {
        match self {
            Strategy::Ddpm(_) => y.affine(1.0 / (1.0 + s * s).sqrt(), 0.0),
            Strategy::RFlow(_) => Ok(y.clone()),
        }
    }
}

/// A `[B]` tensor's values on the host, in f64.
fn host(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.to_vec1::<f64>()
}

/// Rectified-flow times, which must lie in `[0, 1]`.
fn unit_times(t: &Tensor) -> Result<Vec<f64>> {
    let ts = host(t)?;
    if let Some(bad) = ts.iter().find(|t| !(0.0..=1.0).contains(*t)) {
        bail!("a rectified-flow time must lie in [0, 1], got {bad}");
    }
    Ok(ts)
}

fn same_shape(a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        bail!("shapes differ: {:?} and {:?}", a.dims(), b.dims());
    }
    Ok(())
}

/// `a·ca + b·cb` with one coefficient per sample, broadcast over `[B, C, *spatial]`.
fn mix(a: &Tensor, ca: &[f64], b: &Tensor, cb: &[f64]) -> Result<Tensor> {
    a.broadcast_mul(&per_sample(ca, a)?)? + b.broadcast_mul(&per_sample(cb, b)?)?
}

/// `values` as a `[B, 1, …, 1]` tensor of `like`'s rank, dtype and device.
fn per_sample(values: &[f64], like: &Tensor) -> Result<Tensor> {
    let batch = like.dim(0)?;
    if values.len() != batch {
        bail!("{} times for a batch of {batch}", values.len());
    }
    let mut shape = vec![1; like.rank()];
    shape[0] = batch;
    Tensor::from_slice(values, shape, like.device())?.to_dtype(like.dtype())
}
