//! The mathematics of diffusion training and sampling, on Candle tensors: how to noise a clean
//! batch and what the network learns ([`Strategy`]), and how to integrate a trained network from
//! noise back to data ([`Solver`], [`sample`]).
//!
//! **Strategies and modes are separate** (seed pitfall 1). A *mode* (seg, bravo, dual, …) says
//! *what* is generated: which channels are noised, which are conditioning, how many the network
//! outputs. A *strategy* (DDPM, rectified flow) says *how*: the noising path, the training target
//! and the sampling ODE. Every mode trains with every strategy, so neither may know the other: a
//! strategy sees only `[B, C, *spatial]` tensors of noised channels, and the mode assembles the
//! model's input around them. The same holds for spaces: a strategy does not know whether its
//! tensors are pixels, latents or wavelet coefficients, and therefore never clamps (pitfalls
//! 75-78).
//!
//! **Conventions** (details in [`strategy`]):
//! - Times are in the units the model's time embedding expects ([`Strategy::time_scale`]): DDPM
//!   steps are integers in `[0, T)`, rectified-flow times lie in `[0, 1]` with `t = 0` clean and
//!   `t = 1` noise (pitfall 68).
//! - Sampling is an ODE in a solver time `s` that decreases from pure noise to clean (rectified
//!   flow: `s = t`; DDPM: `s = σ = √((1−ᾱ)/ᾱ)`, where Euler is exactly DDIM with `eta = 0`), so
//!   any solver integrates either strategy, and the number of model calls (NFE) is the solver's.
//! - Random numbers come from the caller (uniforms and normals for training times, the initial
//!   noise for sampling), drawn from its own seeded stream (`crate::train::rng`), so nothing here
//!   shifts another purpose's numbers (pitfall 42).
//! - Min-SNR weighting exists only for DDPM (pitfall 64).
//!
//! Restart sampling is not implemented (see [`solver`]).

pub mod solver;
pub mod strategy;

use candle_core::{Result, Tensor};

pub use solver::{Observer, OdeFn, Progress, Solution, Solver};
pub use strategy::{resolution_shift, shift_time, BetaSchedule, Ddpm, Prediction, RFlow, Strategy, TimeSampling};

/// Samples from `noise` (`N(0, 1)`, `[B, C, *spatial]`): the strategy's prior at the start of the
/// solver's grid, the ODE `model` defines, integrated by `solver`, and the clean sample at the
/// end. `model(x_t, t)` returns the network's output for `x_t` at time `t` (in the units of
/// [`Strategy::time_scale`], the same for the whole batch); the returned solution holds the
/// sample (never clamped) and the number of model calls.
pub fn sample(
    strategy: &Strategy,
    solver: &Solver,
    noise: &Tensor,
    model: &mut dyn FnMut(&Tensor, f64) -> Result<Tensor>,
    observe: Option<&mut Observer<'_>>,
) -> Result<Solution> {
    let grid = solver.grid(strategy)?;
    let (start, end) = (grid[0], grid[grid.len() - 1]);
    let mut ode = |y: &Tensor, s: f64| {
        let (x_t, t) = strategy.model_input(y, s)?;
        strategy.derivative(y, s, &model(&x_t, t)?)
    };
    let mut solution = solver.solve(strategy.prior(noise, start)?, &grid, &mut ode, observe)?;
    solution.y = strategy.finish(&solution.y, end)?;
    Ok(solution)
}
