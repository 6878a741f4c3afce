//! Explicit Runge–Kutta solvers for an ODE `dy/ds = f(y, s)` on tensors.
//!
//! The solvers know nothing of diffusion: a strategy ([`crate::diffusion::Strategy`]) turns
//! sampling into such an ODE, and [`crate::diffusion::sample`] wires the two together. Every
//! method is a Butcher tableau run by the same stepper, so adding one is adding a table.
//!
//! **Fixed-step** solvers take one step per interval of the grid they are given (the strategy's
//! [`Strategy::grid`](crate::diffusion::Strategy::grid), which is why the DDPM grid makes Euler
//! exactly DDIM). Each step evaluates `f` once per stage and reuses nothing, so the number of
//! function evaluations (NFE, here one model call each) is exact and fixed:
//!
//! | solver | order | NFE for N steps |
//! |---|---|---|
//! | Euler | 1 | N |
//! | midpoint | 2 | 2N |
//! | Heun (explicit trapezoid) | 2 | 2N |
//! | RK4 (classical) | 4 | 4N |
//!
//! Heun's corrector evaluates at the predicted point, not the accepted one, so the next step
//! cannot reuse it: 2N. k-diffusion's Heun costs 2N − 1 because it takes the last step to σ = 0
//! with Euler, to avoid evaluating the model there; our DDPM right-hand side stays finite at
//! σ = 0 (see [`crate::diffusion::strategy`]), so every step is a Heun step.
//!
//! **Adaptive** solvers integrate from the grid's first time to its last with an error-controlled
//! step: Bogacki–Shampine 3(2) ("A 3(2) pair of Runge–Kutta formulas", Appl. Math. Lett. 1989)
//! and Dormand–Prince 5(4) ("A family of embedded Runge–Kutta formulae", J. Comput. Appl. Math.
//! 1980), both propagating the higher-order solution and both "first same as last" (the last
//! stage of an accepted step is the first of the next). A step is accepted when the RMS over all
//! elements of `err / (atol + rtol·max(|y|, |y_new|))` is at most 1; the next step is
//! `h · clamp(0.9 · err^(−1/p), 0.2, 10)` (at most `h` after a rejection), with `p` the method's
//! order; the first step comes from Hairer, Nørsett & Wanner, *Solving Ordinary Differential
//! Equations I*, §II.4, which costs one evaluation. This is torchdiffeq's scheme
//! (`rtchen/torchdiffeq`, `_impl/rk_common.py`) with its plain integral controller. Their NFE:
//! `2 + (stages − 1)·(accepted + rejected)`, stages 4 and 7. More than [`MAX_ADAPTIVE_STEPS`]
//! attempts, or a step that shrinks below the resolution of `s`, is an error rather than a hang.
//!
//! Restart sampling (Xu et al., "Restart Sampling for Improving Generative Processes", NeurIPS
//! 2023) is not implemented: it re-noises the state partway, so it needs noise from the
//! caller's seeded stream inside the loop, and no stage asks for it yet.
//!
//! An optional observer sees every accepted step ([`Progress`]); returning an error from it stops
//! the solve with that error, which is how a caller cancels.

use candle_core::{bail, DType, Result, Tensor};

use crate::diffusion::strategy::Strategy;

/// The most steps (accepted and rejected) an adaptive solve may attempt.
pub const MAX_ADAPTIVE_STEPS: usize = 10_000;

/// Safety factor on the optimal step-size factor.
const SAFETY: f64 = 0.9;
/// Smallest and largest factor by which one step may change the step size.
const MIN_FACTOR: f64 = 0.2;
const MAX_FACTOR: f64 = 10.0;

/// An ODE right-hand side: `f(y, s) = dy/ds`.
pub type OdeFn<'a> = dyn FnMut(&Tensor, f64) -> Result<Tensor> + 'a;

/// An observer of accepted steps; an error stops the solve.
pub type Observer<'a> = dyn FnMut(&Progress) -> Result<()> + 'a;

/// An ODE solver and its step count or tolerances, by its name in the language.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "solver", rename_all = "snake_case", deny_unknown_fields)]
pub enum Solver {
    Euler { steps: usize },
    Midpoint { steps: usize },
    Heun { steps: usize },
    Rk4 { steps: usize },
    Bosh3 { rtol: f64, atol: f64 },
    Dopri5 { rtol: f64, atol: f64 },
}

/// Where a solve stands after an accepted step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// The solver time reached.
    pub s: f64,
    /// Accepted steps so far.
    pub step: usize,
    /// Function evaluations so far.
    pub nfe: usize,
}

/// The result of a solve.
#[derive(Debug, Clone)]
pub struct Solution {
    /// The state at the last time.
    pub y: Tensor,
    /// Function evaluations, exactly.
    pub nfe: usize,
    /// Accepted steps.
    pub steps: usize,
    /// Rejected steps (adaptive solvers only).
    pub rejected: usize,
}

/// A Butcher tableau; row `i` of `a` holds the `i` coefficients of stage `i`.
struct Tableau {
    c: &'static [f64],
    a: &'static [&'static [f64]],
    b: &'static [f64],
    /// `b − b̂`, the embedded error estimate (empty for fixed-step methods).
    error: &'static [f64],
    order: u32,
    /// The last stage is evaluated at the new state (its row of `a` is `b`).
    fsal: bool,
}

const EULER: Tableau = Tableau { c: &[0.0], a: &[&[]], b: &[1.0], error: &[], order: 1, fsal: false };

const MIDPOINT: Tableau =
    Tableau { c: &[0.0, 0.5], a: &[&[], &[0.5]], b: &[0.0, 1.0], error: &[], order: 2, fsal: false };

const HEUN: Tableau = Tableau { c: &[0.0, 1.0], a: &[&[], &[1.0]], b: &[0.5, 0.5], error: &[], order: 2, fsal: false };

const RK4: Tableau = Tableau {
    c: &[0.0, 0.5, 0.5, 1.0],
    a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
    error: &[],
    order: 4,
    fsal: false,
};

const BOSH3: Tableau = Tableau {
    c: &[0.0, 0.5, 0.75, 1.0],
    a: &[&[], &[0.5], &[0.0, 0.75], &[2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0]],
    b: &[2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0, 0.0],
    error: &[2.0 / 9.0 - 7.0 / 24.0, 1.0 / 3.0 - 1.0 / 4.0, 4.0 / 9.0 - 1.0 / 3.0, -1.0 / 8.0],
    order: 3,
    fsal: true,
};

const DOPRI5: Tableau = Tableau {
    c: &[0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0],
    a: &[
        &[],
        &[1.0 / 5.0],
        &[3.0 / 40.0, 9.0 / 40.0],
        &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
        &[19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0],
        &[9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0],
        &[35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0],
    ],
    b: &[35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0, 0.0],
    error: &[
        35.0 / 384.0 - 5179.0 / 57600.0,
        0.0,
        500.0 / 1113.0 - 7571.0 / 16695.0,
        125.0 / 192.0 - 393.0 / 640.0,
        -2187.0 / 6784.0 + 92097.0 / 339200.0,
        11.0 / 84.0 - 187.0 / 2100.0,
        -1.0 / 40.0,
    ],
    order: 5,
    fsal: true,
};

impl Solver {
    pub fn name(&self) -> &'static str {
        match self {
            Solver::Euler { .. } => "euler",
            Solver::Midpoint { .. } => "midpoint",
            Solver::Heun { .. } => "heun",
            Solver::Rk4 { .. } => "rk4",
            Solver::Bosh3 { .. } => "bosh3",
            Solver::Dopri5 { .. } => "dopri5",
        }
    }

    /// The times to hand to [`Solver::solve`] when sampling with `strategy`: its grid of
    /// `steps` for a fixed-step solver, its whole span for an adaptive one.
    pub fn grid(&self, strategy: &Strategy) -> Result<Vec<f64>> {
        match *self {
            Solver::Euler { steps } | Solver::Midpoint { steps } | Solver::Heun { steps } | Solver::Rk4 { steps } => {
                strategy.grid(steps)
            }
            Solver::Bosh3 { .. } | Solver::Dopri5 { .. } => {
                let (start, end) = strategy.span();
                Ok(vec![start, end])
            }
        }
    }

    /// Integrates `dy/ds = f(y, s)` from `y0` at `grid[0]`: a fixed-step solver takes one step
    /// per interval of `grid` (strictly monotone), an adaptive one goes from `grid[0]` to the
    /// last time with its own steps. `observe` sees every accepted step.
    pub fn solve(
        &self,
        y0: Tensor,
        grid: &[f64],
        f: &mut OdeFn<'_>,
        mut observe: Option<&mut Observer<'_>>,
    ) -> Result<Solution> {
        if grid.len() < 2 {
            bail!("{} needs at least two times, got {}", self.name(), grid.len());
        }
        if let Some(bad) = grid.iter().find(|s| !s.is_finite()) {
            bail!("{}: non-finite time {bad} in the grid", self.name());
        }
        let mut rhs = Counted { f, nfe: 0 };
        match *self {
            Solver::Euler { .. } => fixed(&EULER, y0, grid, &mut rhs, &mut observe),
            Solver::Midpoint { .. } => fixed(&MIDPOINT, y0, grid, &mut rhs, &mut observe),
            Solver::Heun { .. } => fixed(&HEUN, y0, grid, &mut rhs, &mut observe),
            Solver::Rk4 { .. } => fixed(&RK4, y0, grid, &mut rhs, &mut observe),
            Solver::Bosh3 { rtol, atol } | Solver::Dopri5 { rtol, atol } => {
                if !(rtol.is_finite() && atol.is_finite() && rtol >= 0.0 && atol >= 0.0 && rtol + atol > 0.0) {
                    bail!("{}: tolerances must be finite, non-negative and not both zero", self.name());
                }
                let tableau = if matches!(self, Solver::Bosh3 { .. }) { &BOSH3 } else { &DOPRI5 };
                let tolerance = Tolerance { rtol, atol };
                adaptive(self.name(), tableau, tolerance, y0, (grid[0], grid[grid.len() - 1]), &mut rhs, &mut observe)
            }
        }
    }
}

/// The right-hand side with its evaluations counted.
struct Counted<'f, 'a> {
    f: &'f mut OdeFn<'a>,
    nfe: usize,
}

impl Counted<'_, '_> {
    fn eval(&mut self, y: &Tensor, s: f64) -> Result<Tensor> {
        self.nfe += 1;
        (self.f)(y, s)
    }
}

fn report(observe: &mut Option<&mut Observer<'_>>, progress: Progress) -> Result<()> {
    match observe {
        Some(observe) => observe(&progress),
        None => Ok(()),
    }
}

/// `y + h · Σ coefficients[j] · ks[j]`, skipping zero coefficients.
fn combine(y: &Tensor, h: f64, coefficients: &[f64], ks: &[Tensor]) -> Result<Tensor> {
    let mut sum = y.clone();
    for (c, k) in coefficients.iter().zip(ks) {
        if *c != 0.0 {
            sum = (sum + k.affine(h * c, 0.0)?)?;
        }
    }
    Ok(sum)
}

/// One step of `tableau` from `(y, s)` with signed step `h`, given the first stage `k1`:
/// the new state and every stage.
fn rk_step(
    tableau: &Tableau,
    y: &Tensor,
    s: f64,
    h: f64,
    k1: Tensor,
    rhs: &mut Counted,
) -> Result<(Tensor, Vec<Tensor>)> {
    let mut ks = vec![k1];
    let mut last_input = None;
    for (c, a) in tableau.c.iter().zip(tableau.a).skip(1) {
        let input = combine(y, h, a, &ks)?;
        ks.push(rhs.eval(&input, s + c * h)?);
        last_input = Some(input);
    }
    let y_new = match last_input {
        Some(input) if tableau.fsal => input,
        _ => combine(y, h, tableau.b, &ks)?,
    };
    Ok((y_new, ks))
}

fn fixed(
    tableau: &Tableau,
    y0: Tensor,
    grid: &[f64],
    rhs: &mut Counted,
    observe: &mut Option<&mut Observer<'_>>,
) -> Result<Solution> {
    let direction = grid[1] - grid[0];
    if grid.windows(2).any(|w| (w[1] - w[0]) * direction <= 0.0) {
        bail!("a fixed-step grid must be strictly monotone, got {grid:?}");
    }
    let mut y = y0;
    for (step, w) in grid.windows(2).enumerate() {
        let k1 = rhs.eval(&y, w[0])?;
        y = rk_step(tableau, &y, w[0], w[1] - w[0], k1, rhs)?.0;
        report(observe, Progress { s: w[1], step: step + 1, nfe: rhs.nfe })?;
    }
    Ok(Solution { y, nfe: rhs.nfe, steps: grid.len() - 1, rejected: 0 })
}

#[derive(Debug, Clone, Copy)]
struct Tolerance {
    rtol: f64,
    atol: f64,
}

impl Tolerance {
    /// RMS of `value / (atol + rtol·max(|a|, |b|))` over all elements.
    fn norm(&self, value: &Tensor, a: &Tensor, b: &Tensor) -> Result<f64> {
        let scale = a.abs()?.maximum(&b.abs()?)?.affine(self.rtol, self.atol)?;
        value.div(&scale)?.sqr()?.mean_all()?.sqrt()?.to_dtype(DType::F64)?.to_scalar::<f64>()
    }
}

/// The first step size from `(y0, start)` towards `end`, with `f0 = f(y0, start)`:
/// Hairer–Nørsett–Wanner §II.4 (one evaluation of `f`).
fn initial_step(
    order: u32,
    tolerance: Tolerance,
    y0: &Tensor,
    f0: &Tensor,
    (start, end): (f64, f64),
    rhs: &mut Counted,
) -> Result<f64> {
    let direction = (end - start).signum();
    let length = (end - start).abs();
    let d0 = tolerance.norm(y0, y0, y0)?;
    let d1 = tolerance.norm(f0, y0, y0)?;
    let h0 = if d0 < 1e-5 || d1 < 1e-5 { 1e-6 * length } else { (0.01 * d0 / d1).min(length) };
    let y1 = combine(y0, direction * h0, &[1.0], std::slice::from_ref(f0))?;
    let f1 = rhs.eval(&y1, start + direction * h0)?;
    let d2 = tolerance.norm(&(f1 - f0)?, y0, y0)? / h0;
    let largest = d1.max(d2);
    let h1 =
        if largest <= 1e-15 { (h0 * 1e-3).max(1e-6 * length) } else { (0.01 / largest).powf(1.0 / (order + 1) as f64) };
    Ok((100.0 * h0).min(h1).min(length))
}

fn adaptive(
    name: &str,
    tableau: &Tableau,
    tolerance: Tolerance,
    y0: Tensor,
    (start, end): (f64, f64),
    rhs: &mut Counted,
    observe: &mut Option<&mut Observer<'_>>,
) -> Result<Solution> {
    if start == end {
        bail!("{name} needs distinct start and end times, got {start} twice");
    }
    let direction = (end - start).signum();
    let length = (end - start).abs();
    let mut y = y0;
    let mut s = start;
    let mut k1 = rhs.eval(&y, s)?;
    let mut h = initial_step(tableau.order, tolerance, &y, &k1, (start, end), rhs)?;
    let (mut steps, mut rejected) = (0, 0);
    while s != end {
        if steps + rejected >= MAX_ADAPTIVE_STEPS {
            bail!(
                "{name} gave up after {MAX_ADAPTIVE_STEPS} steps ({steps} accepted, {rejected} rejected) at s = {s}; \
                 loosen rtol/atol or use a fixed-step solver"
            );
        }
        let remaining = (end - s).abs();
        let last = h >= remaining;
        let h_now = if last { remaining } else { h };
        let (y_new, ks) = rk_step(tableau, &y, s, direction * h_now, k1.clone(), rhs)?;
        let estimate = combine(&y_new.zeros_like()?, h_now, tableau.error, &ks)?;
        let error = tolerance.norm(&estimate, &y, &y_new)?;
        let accepted = error <= 1.0;
        if accepted {
            s = if last { end } else { s + direction * h_now };
            k1 = match ks.last() {
                Some(k) if tableau.fsal => k.clone(),
                _ => rhs.eval(&y_new, s)?,
            };
            y = y_new;
            steps += 1;
            report(observe, Progress { s, step: steps, nfe: rhs.nfe })?;
        } else {
            rejected += 1;
        }
        let factor = if !error.is_finite() {
            MIN_FACTOR
        } else if error == 0.0 {
            MAX_FACTOR
        } else {
            (SAFETY * error.powf(-1.0 / tableau.order as f64)).clamp(MIN_FACTOR, MAX_FACTOR)
        };
        h = h_now * if accepted { factor } else { factor.min(1.0) };
        if s != end && h <= f64::EPSILON * s.abs().max(length) {
            bail!(
                "{name}: step size underflow at s = {s} (error {error:.3e}); the ODE is too stiff or not finite there"
            );
        }
    }
    Ok(Solution { y, nfe: rhs.nfe, steps, rejected })
}
