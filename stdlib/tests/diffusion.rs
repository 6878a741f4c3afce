//! The diffusion maths of `medgen_stdlib::diffusion`: strategies against hand-computed values and
//! against MONAI's schedulers, sampling ODEs against DDIM and against exact solutions, and the
//! solvers' orders and evaluation counts on ODEs with closed forms.
//!
//! The MONAI values in `tests/reference/diffusion_reference.safetensors` were made by
//! `tests/reference/diffusion_reference.py` (torch 2.15, MONAI 1.6.1, CPU), which documents what
//! the file holds; these tests never run Python. To regenerate:
//!
//! ```text
//! python3 stdlib/tests/reference/diffusion_reference.py
//! ```

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use medgen_stdlib::diffusion::solver::MAX_ADAPTIVE_STEPS;
use medgen_stdlib::diffusion::strategy::SHIFT_BASE_EDGE;
use medgen_stdlib::diffusion::{
    resolution_shift, sample, shift_time, BetaSchedule, Prediction, Progress, Solver, Strategy, TimeSampling,
};
use medgen_stdlib::nn::embed::TimeScale;

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/diffusion_reference.safetensors");

/// MONAI's `num_train_timesteps` in every reference value.
const T: usize = 1000;

const SCHEDULES: [(&str, BetaSchedule); 3] =
    [("linear", BetaSchedule::Linear), ("scaled_linear", BetaSchedule::ScaledLinear), ("cosine", BetaSchedule::Cosine)];

const PREDICTIONS: [(&str, Prediction); 3] =
    [("epsilon", Prediction::Epsilon), ("v", Prediction::V), ("sample", Prediction::Sample)];

/// Largest difference from a MONAI f32 tensor, relative to the tensor's largest magnitude.
/// Our coefficients are f64 rounded once; MONAI rounds each f32 operation (a few ulp, 6e-8 each).
/// Measured: at most 8.2e-7 (noising), 5.1e-7 (one DDIM step).
const F32_TOLERANCE: f64 = 2e-6;

/// Ten DDIM steps against MONAI's. An x0 prediction becomes `ε̂ = (y − x0̂)/σ`, a difference that
/// cancels in f32 at small σ, at every step. Measured: 5.6e-6 (scaled_linear, x0 prediction).
const TRAJECTORY_TOLERANCE: f64 = 1e-5;

/// MONAI stores `RFlowScheduler.set_timesteps` in float16, whose spacing in [512, 1024) is 0.5:
/// a quarter step (rounding) in `[0, 1]` units, plus f64 noise.
const FLOAT16_GRID_TOLERANCE: f64 = 0.25 / T as f64 + 1e-12;

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(REFERENCE, &Device::Cpu).expect("tests/reference/diffusion_reference.safetensors")
}

fn get(r: &HashMap<String, Tensor>, name: &str) -> Tensor {
    r.get(name).unwrap_or_else(|| panic!("{name} is not in the reference file")).clone()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap()
}

fn tensor(values: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(values, shape, &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap()
}

fn times(values: &[f64]) -> Tensor {
    tensor(values, &[values.len()])
}

/// `max |actual − expected| / max |expected|`.
fn relative_error(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.dims(), expected.dims());
    let (a, e) = (values(actual), values(expected));
    let scale = e.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter().zip(&e).map(|(a, e)| (a - e).abs()).fold(0.0, f64::max) / scale
}

fn assert_close(actual: &Tensor, expected: &Tensor, tolerance: f64, what: &str) {
    let error = relative_error(actual, expected);
    assert!(error <= tolerance, "{what}: relative error {error:.3e} > {tolerance:.1e}");
}

fn assert_all_close(actual: &[f64], expected: &[f64], tolerance: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tolerance, "{what}[{i}]: {a} vs {e} (tolerance {tolerance:.1e})");
    }
}

fn ddpm(schedule: BetaSchedule, prediction: Prediction) -> Strategy {
    Strategy::ddpm(T, schedule, prediction, None).unwrap()
}

fn ddpm_parts(strategy: &Strategy) -> &medgen_stdlib::diffusion::Ddpm {
    match strategy {
        Strategy::Ddpm(d) => d,
        Strategy::RFlow(_) => panic!("not DDPM"),
    }
}

fn continuous_rflow(shift: Option<f64>) -> Strategy {
    Strategy::rflow(TimeSampling::Uniform, true, T, shift).unwrap()
}

// ---------------------------------------------------------------------------------------------
// DDPM schedules, noising, targets, weights

/// The three schedules against MONAI's tables, per element and relative. The linear and
/// scaled-linear tables are MONAI's float32 (its linspace is float32 whatever the default dtype):
/// one rounding per beta, and an ulp of drift per factor of the cumulative product (measured
/// 3.0e-7 and 7.5e-7 at worst). The cosine table is MONAI's function run in float64 (see the
/// script: its float32 betas lose up to 1e-3 of their value to cancellation); in float64 the
/// same cancellation leaves a few ulp of 1 on betas down to 4e-5 (measured 2e-12 relative).
#[test]
fn ddpm_tables_match_monai() {
    let r = reference();
    let tolerances = [(5e-7, 1e-6), (5e-7, 1e-6), (1e-10, 1e-10)];
    for ((name, schedule), (beta_tolerance, bar_tolerance)) in SCHEDULES.into_iter().zip(tolerances) {
        let strategy = ddpm(schedule, Prediction::Epsilon);
        let d = ddpm_parts(&strategy);
        let tables = [("betas", d.betas(), beta_tolerance), ("alphas_cumprod", d.alphas_cumprod(), bar_tolerance)];
        for (table, ours, tolerance) in tables {
            let expected = values(&get(&r, &format!("ddpm.{name}.{table}")));
            assert_eq!(ours.len(), expected.len());
            for (t, (a, e)) in ours.iter().zip(&expected).enumerate() {
                assert!((a - e).abs() <= tolerance * e, "{name} {table}[{t}]: {a} vs {e}");
            }
        }
    }
}

/// Hand-computed: T = 2 linear betas are `[1e-4, 2e-2]`, `ᾱ = [0.9999, 0.9999 · 0.98]`.
#[test]
fn ddpm_noising_and_targets_by_hand() {
    let x0 = tensor(&[1.0, -2.0], &[2, 1, 1, 1]);
    let eps = tensor(&[0.5, 3.0], &[2, 1, 1, 1]);
    let t = times(&[0.0, 1.0]);
    let bars = [0.9999, 0.9999 * 0.98];
    let (x, e) = ([1.0, -2.0], [0.5, 3.0]);
    for (_, prediction) in PREDICTIONS {
        let strategy = Strategy::ddpm(2, BetaSchedule::Linear, prediction, None).unwrap();
        assert_all_close(ddpm_parts(&strategy).betas(), &[1e-4, 2e-2], 1e-15, "betas");
        assert_all_close(ddpm_parts(&strategy).alphas_cumprod(), &bars, 1e-15, "alphas_cumprod");
        let noisy = strategy.noisy(&x0, &eps, &t).unwrap();
        let expected: Vec<f64> = (0..2).map(|i| bars[i].sqrt() * x[i] + (1.0 - bars[i]).sqrt() * e[i]).collect();
        assert_all_close(&values(&noisy), &expected, 1e-6, "x_t");
        let target = values(&strategy.target(&x0, &eps, &t).unwrap());
        let expected: Vec<f64> = match prediction {
            Prediction::Epsilon => e.to_vec(),
            Prediction::Sample => x.to_vec(),
            Prediction::V => (0..2).map(|i| bars[i].sqrt() * e[i] - (1.0 - bars[i]).sqrt() * x[i]).collect(),
        };
        assert_all_close(&target, &expected, 1e-6, "target");
    }
}

#[test]
fn ddpm_noising_and_velocity_match_monai() {
    let r = reference();
    let (x0, noise, t) = (get(&r, "ddpm.x0"), get(&r, "ddpm.noise"), get(&r, "ddpm.t"));
    for (name, schedule) in SCHEDULES {
        let noisy = ddpm(schedule, Prediction::Epsilon).noisy(&x0, &noise, &t).unwrap();
        assert_close(&noisy, &get(&r, &format!("ddpm.{name}.noisy")), F32_TOLERANCE, name);
        let v = ddpm(schedule, Prediction::V).target(&x0, &noise, &t).unwrap();
        assert_close(&v, &get(&r, &format!("ddpm.{name}.velocity")), F32_TOLERANCE, name);
        assert_eq!(values(&ddpm(schedule, Prediction::Epsilon).target(&x0, &noise, &t).unwrap()), values(&noise));
        assert_eq!(values(&ddpm(schedule, Prediction::Sample).target(&x0, &noise, &t).unwrap()), values(&x0));
    }
}

/// Min-SNR-5 weights against the formulas of Hang et al. evaluated on MONAI's linear table, and
/// by hand: at `t = 700` (SNR ≈ 0.04 < γ) ε-weights are 1 and x0-weights are the SNR itself.
#[test]
fn min_snr_weights() {
    let r = reference();
    let t = get(&r, "ddpm.t");
    for (name, prediction) in PREDICTIONS {
        let strategy = Strategy::ddpm(T, BetaSchedule::Linear, prediction, Some(5.0)).unwrap();
        let weights = strategy.loss_weights(&t).unwrap().expect("min-SNR weights");
        assert_eq!(weights.dtype(), DType::F32);
        assert_all_close(&values(&weights), &values(&get(&r, &format!("min_snr.{name}"))), 1e-6, name);
        let bar = ddpm_parts(&strategy).alphas_cumprod()[700];
        let snr = bar / (1.0 - bar);
        let by_hand = match prediction {
            Prediction::Epsilon => 1.0,
            Prediction::V => snr / (snr + 1.0),
            Prediction::Sample => snr,
        };
        assert_all_close(&values(&weights)[1..], &[by_hand], 1e-7, name);
    }
    assert!(ddpm(BetaSchedule::Linear, Prediction::Epsilon).loss_weights(&t).unwrap().is_none());
    assert!(continuous_rflow(None).loss_weights(&times(&[0.5])).unwrap().is_none());
}

/// `predict_x0` inverts noising when the model outputs the exact target, for every prediction of
/// both strategies, including values far outside [0, 1] (never clamped).
#[test]
fn predict_x0_inverts_noising_without_clamping() {
    let x0 = tensor(&[4.0, -3.0, 0.5, 10.0, -0.25, 2.0], &[2, 3, 1]);
    let eps = tensor(&[0.3, -1.2, 2.0, 0.1, 0.7, -0.4], &[2, 3, 1]);
    let mut strategies: Vec<(&str, Strategy, Tensor)> =
        PREDICTIONS.iter().map(|(name, p)| (*name, ddpm(BetaSchedule::Cosine, *p), times(&[3.0, 640.0]))).collect();
    strategies.push(("rflow", continuous_rflow(None), times(&[0.05, 0.9])));
    for (name, strategy, t) in strategies {
        let x_t = strategy.noisy(&x0, &eps, &t).unwrap();
        let out = strategy.target(&x0, &eps, &t).unwrap();
        let x0_hat = strategy.predict_x0(&x_t, &out, &t).unwrap();
        assert_close(&x0_hat, &x0, 1e-5, name);
    }
}

// ---------------------------------------------------------------------------------------------
// Training times and the resolution shift

#[test]
fn ddpm_training_times_are_integer_steps() {
    let strategy = ddpm(BetaSchedule::Linear, Prediction::Epsilon);
    let t = strategy.sample_t(&times(&[0.0, 0.5, 0.0015, 0.9999999]), &times(&[9.0, -9.0, 0.0, 1.0])).unwrap();
    assert_eq!(t.dtype(), DType::F32);
    assert_eq!(values(&t), [0.0, 500.0, 1.0, 999.0]);
    assert_eq!(strategy.time_scale(), TimeScale::Discrete);
}

/// Hand-computed rectified-flow times: uniform `t = u`, logit-normal `sigmoid(n)` (0.5 at 0,
/// `1/(1+e^{-ln 3}) = 0.75` at `ln 3`), floored to `k/T`, then shifted (`r = 2`, `t = 0.5 → 2/3`).
#[test]
fn rflow_training_times_by_hand() {
    let u = times(&[0.25, 0.5, 0.12345]);
    let n = times(&[0.0, 3f64.ln(), -1.0]);
    let sample = |sampling, continuous, shift| {
        values(&Strategy::rflow(sampling, continuous, T, shift).unwrap().sample_t(&u, &n).unwrap())
    };
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    assert_all_close(&sample(TimeSampling::Uniform, true, None), &[0.25, 0.5, 0.12345], 1e-7, "uniform");
    assert_all_close(&sample(TimeSampling::Uniform, false, None), &[0.25, 0.5, 0.123], 1e-7, "discrete");
    assert_all_close(
        &sample(TimeSampling::Uniform, true, Some(2.0)),
        &[0.4, 2.0 / 3.0, 0.2469 / 1.12345],
        1e-7,
        "shift",
    );
    assert_all_close(&sample(TimeSampling::LogitNormal, true, None), &[0.5, 0.75, sigmoid(-1.0)], 1e-7, "logit-normal");
    assert_eq!(continuous_rflow(None).time_scale(), TimeScale::Continuous);
}

/// The same uniforms and normals MONAI's `sample_timesteps` drew give MONAI's times.
#[test]
fn rflow_training_times_match_monai() {
    let r = reference();
    let (u, n) = (get(&r, "rflow.uniform.u"), get(&r, "rflow.logit_normal.n"));
    let uniform = Strategy::rflow(TimeSampling::Uniform, true, T, None).unwrap();
    assert_close(&uniform.sample_t(&u, &n).unwrap(), &get(&r, "rflow.uniform.t"), F32_TOLERANCE, "uniform");
    let logit = Strategy::rflow(TimeSampling::LogitNormal, true, T, None).unwrap();
    assert_close(&logit.sample_t(&u, &n).unwrap(), &get(&r, "rflow.logit_normal.t"), F32_TOLERANCE, "logit-normal");
    let shifted = Strategy::rflow(TimeSampling::LogitNormal, false, T, Some(resolution_shift(&[64, 64, 64]))).unwrap();
    let t = shifted.sample_t(&u, &n).unwrap();
    assert_close(&t, &get(&r, "rflow.logit_normal.discrete_shifted"), F32_TOLERANCE, "discrete, shifted");
}

#[test]
fn sample_t_rejects_bad_draws() {
    let strategy = continuous_rflow(None);
    assert!(strategy.sample_t(&times(&[0.5, 1.5]), &times(&[0.0, 0.0])).is_err());
    assert!(strategy.sample_t(&times(&[0.5]), &times(&[0.0, 0.0])).is_err());
    assert!(strategy.sample_t(&times(&[0.5]), &times(&[f64::NAN])).is_err());
}

#[test]
fn resolution_shift_by_hand_and_against_monai() {
    assert_eq!(SHIFT_BASE_EDGE, 32);
    assert_all_close(&[resolution_shift(&[64, 64, 64])], &[2.0], 1e-12, "64^3");
    assert_all_close(&[resolution_shift(&[16, 16, 16])], &[0.5], 1e-12, "16^3");
    assert_all_close(&[resolution_shift(&[128, 128])], &[4.0], 1e-12, "128^2");
    assert_all_close(
        &[shift_time(0.5, 2.0), shift_time(0.0, 3.0), shift_time(1.0, 3.0)],
        &[2.0 / 3.0, 0.0, 1.0],
        1e-15,
        "t'",
    );
    let r = reference();
    let t = values(&get(&r, "rflow.transform.t"));
    let cases: [(&str, &[usize]); 4] = [
        ("vol64", &[64, 64, 64]),
        ("vol16", &[16, 16, 16]),
        ("slice128", &[128, 128]),
        ("anisotropic", &[128, 128, 160]),
    ];
    for (case, spatial) in cases {
        let ratio = resolution_shift(spatial);
        let shifted: Vec<f64> = t.iter().map(|&t| shift_time(t, ratio)).collect();
        assert_all_close(&shifted, &values(&get(&r, &format!("rflow.transform.{case}"))), 1e-12, case);
    }
}

// ---------------------------------------------------------------------------------------------
// Rectified-flow noising, grid and Euler step

#[test]
fn rflow_noising_and_target_by_hand() {
    let strategy = continuous_rflow(None);
    let x0 = tensor(&[2.0, 8.0], &[2, 1, 1]);
    let eps = tensor(&[-2.0, 0.0], &[2, 1, 1]);
    let t = times(&[0.25, 1.0]);
    assert_eq!(values(&strategy.noisy(&x0, &eps, &t).unwrap()), [1.0, 0.0]);
    assert_eq!(values(&strategy.target(&x0, &eps, &t).unwrap()), [4.0, 8.0]);
    let x0_hat =
        strategy.predict_x0(&times(&[1.0, 0.0]).reshape((2, 1, 1)).unwrap(), &tensor(&[4.0, 8.0], &[2, 1, 1]), &t);
    assert_eq!(values(&x0_hat.unwrap()), [2.0, 8.0]);
    assert!(strategy.noisy(&x0, &eps, &times(&[0.5, 1.5])).is_err());
}

#[test]
fn rflow_noising_and_euler_step_match_monai() {
    let r = reference();
    let strategy = continuous_rflow(None);
    let noisy = strategy.noisy(&get(&r, "rflow.x0"), &get(&r, "rflow.noise"), &get(&r, "rflow.t")).unwrap();
    assert_close(&noisy, &get(&r, "rflow.noisy"), F32_TOLERANCE, "add_noise");
    let v = get(&r, "rflow.step.v");
    let mut velocity = |y: &Tensor, s: f64| strategy.derivative(y, s, &v);
    let step = Solver::Euler { steps: 1 }.solve(get(&r, "rflow.noisy"), &[0.6, 0.5], &mut velocity, None).unwrap();
    assert_close(&step.y, &get(&r, "rflow.step"), F32_TOLERANCE, "step 600 -> 500");
}

#[test]
fn rflow_grids() {
    assert_eq!(continuous_rflow(None).grid(4).unwrap(), [1.0, 0.75, 0.5, 0.25, 0.0]);
    let r = reference();
    let shifted = continuous_rflow(Some(resolution_shift(&[64, 64, 64]))).grid(10).unwrap();
    assert_eq!(shifted.len(), 11);
    assert_eq!(shifted[10], 0.0);
    assert_all_close(&shifted[..10], &values(&get(&r, "rflow.grid.shifted")), FLOAT16_GRID_TOLERANCE, "shifted");
    let discrete = Strategy::rflow(TimeSampling::LogitNormal, false, T, None).unwrap().grid(10).unwrap();
    assert_all_close(&discrete[..10], &values(&get(&r, "rflow.grid.discrete")), 1e-12, "discrete");
    // Python's round() ties to even: 62.5 -> 62.
    let ties = Strategy::rflow(TimeSampling::Uniform, false, T, None).unwrap().grid(16).unwrap();
    assert_eq!(ties[15], 0.062);
    // A shift below 1 maps neighbouring steps to the same floored time; those are dropped.
    let crowded = Strategy::rflow(TimeSampling::Uniform, false, 10, Some(0.1)).unwrap().grid(10).unwrap();
    assert!(crowded.len() < 11 && crowded.windows(2).all(|w| w[0] > w[1]), "{crowded:?}");
    assert!(Strategy::rflow(TimeSampling::Uniform, false, 10, None).unwrap().grid(11).is_err());
    assert!(continuous_rflow(None).grid(0).is_err());
}

// ---------------------------------------------------------------------------------------------
// DDPM sampling ODE against DDIM

/// One Euler step of the σ-ODE from `t` to `t − 100` is MONAI's DDIM step (eta 0, no clipping),
/// for every schedule and prediction, mid-chain and for the final step to `ᾱ = 1`.
#[test]
fn one_euler_step_is_one_ddim_step() {
    let r = reference();
    let (x, out) = (get(&r, "ddim.sample"), get(&r, "ddim.model_output"));
    for (name, schedule) in SCHEDULES {
        for (pname, prediction) in PREDICTIONS {
            let strategy = ddpm(schedule, prediction);
            let d = ddpm_parts(&strategy);
            for (case, grid) in [("mid", [d.sigma(500), d.sigma(400)]), ("last", [d.sigma(0), 0.0])] {
                let mut f = |y: &Tensor, s: f64| strategy.derivative(y, s, &out);
                let y0 = strategy.prior(&x, grid[0]).unwrap();
                let solution = Solver::Euler { steps: 1 }.solve(y0, &grid, &mut f, None).unwrap();
                assert_eq!(solution.nfe, 1);
                let x_prev = strategy.finish(&solution.y, grid[1]).unwrap();
                let expected = get(&r, &format!("ddim.{name}.{pname}.{case}"));
                assert_close(&x_prev, &expected, F32_TOLERANCE, &format!("{name} {pname} {case}"));
            }
        }
    }
}

/// Ten Euler steps through [`sample`] are MONAI's ten DDIM steps on the leading timesteps, with a
/// synthetic model that depends on both `x_t` and `t`; the model sees exactly those timesteps.
#[test]
fn euler_sampling_is_ddim_sampling() {
    let r = reference();
    let noise = get(&r, "ddim.sample");
    for (name, schedule) in SCHEDULES {
        for (pname, prediction) in PREDICTIONS {
            let strategy = ddpm(schedule, prediction);
            let mut seen = Vec::new();
            let mut model = |x: &Tensor, t: f64| {
                seen.push(t);
                x.tanh()?.affine(0.5, t / 1000.0)
            };
            let solution = sample(&strategy, &Solver::Euler { steps: 10 }, &noise, &mut model, None).unwrap();
            assert_eq!(seen, [900.0, 800.0, 700.0, 600.0, 500.0, 400.0, 300.0, 200.0, 100.0, 0.0]);
            assert_eq!(solution.nfe, 10);
            let expected = get(&r, &format!("ddim.{name}.{pname}.trajectory"));
            assert_close(&solution.y, &expected, TRAJECTORY_TOLERANCE, &format!("{name} {pname}"));
        }
    }
}

#[test]
fn ddpm_grid_and_model_time() {
    let strategy = ddpm(BetaSchedule::Linear, Prediction::Epsilon);
    let d = ddpm_parts(&strategy);
    let grid = strategy.grid(4).unwrap();
    assert_eq!(grid, [d.sigma(750), d.sigma(500), d.sigma(250), d.sigma(0), 0.0]);
    assert_eq!(strategy.span(), (d.sigma(999), 0.0));
    assert!(strategy.grid(1001).is_err());
    for k in [0, 1, 417, 998, 999] {
        assert_eq!(d.model_time(d.sigma(k)), k as f64);
    }
    let between = (d.sigma(417) * d.sigma(418)).sqrt();
    assert!((d.model_time(between) - 417.5).abs() < 1e-12, "log-σ interpolation");
    assert_eq!(d.model_time(1e9), 999.0);
    // Below σ_0 the right-hand side is frozen at σ_0: the model sees t = 0 and x_t at σ_0.
    let y = tensor(&[2.0], &[1, 1]);
    let (x, t) = strategy.model_input(&y, 0.0).unwrap();
    assert_eq!(t, 0.0);
    assert_all_close(&values(&x), &[2.0 / (1.0 + d.sigma(0).powi(2)).sqrt()], 1e-7, "x at σ = 0");
    assert_eq!(values(&strategy.finish(&y, 0.0).unwrap()), [2.0]);
    assert!(strategy.noisy(&y, &y, &times(&[2.5])).is_err(), "non-integer DDPM step");
    assert!(strategy.noisy(&y, &y, &times(&[1000.0])).is_err(), "step past the table");
}

/// Higher-order solvers evaluate the DDPM right-hand side at σ = 0, where an x0 prediction
/// would divide by σ; the frozen end keeps it finite.
#[test]
fn heun_and_rk4_stay_finite_at_the_clean_end() {
    let noise = tensor(&[0.3, -1.1, 2.2, 0.0], &[1, 1, 2, 2]);
    let strategy = ddpm(BetaSchedule::Cosine, Prediction::Sample);
    for solver in [Solver::Heun { steps: 5 }, Solver::Rk4 { steps: 5 }] {
        let mut model = |x: &Tensor, _t: f64| x.affine(0.3, 0.0);
        let solution = sample(&strategy, &solver, &noise, &mut model, None).unwrap();
        assert!(values(&solution.y).iter().all(|v| v.is_finite()), "{solver:?}");
    }
}

/// A single-point data distribution has an exact velocity/noise predictor; one Euler step of
/// rectified flow and any number of DDIM steps land exactly on the point.
#[test]
fn exact_model_reaches_the_data_point() {
    let x0 = tensor(&[3.0, -1.5, 0.25, 7.0], &[1, 1, 2, 2]);
    let noise = tensor(&[0.4, 1.3, -0.8, -2.1], &[1, 1, 2, 2]);
    let rflow = continuous_rflow(None);
    for steps in [1, 7] {
        let mut velocity = |x_t: &Tensor, t: f64| (&x0 - x_t)?.affine(1.0 / t, 0.0);
        let solution = sample(&rflow, &Solver::Euler { steps }, &noise, &mut velocity, None).unwrap();
        assert_close(&solution.y, &x0, 1e-6, &format!("rflow, {steps} steps"));
    }
    for (name, prediction) in PREDICTIONS {
        let strategy = ddpm(BetaSchedule::Linear, prediction);
        let bars = ddpm_parts(&strategy).alphas_cumprod().to_vec();
        let mut exact = |x_t: &Tensor, t: f64| {
            let bar = bars[t as usize];
            let eps = (x_t - x0.affine(bar.sqrt(), 0.0)?)?.affine(1.0 / (1.0 - bar).sqrt(), 0.0)?;
            match prediction {
                Prediction::Epsilon => Ok(eps),
                Prediction::Sample => Ok(x0.clone()),
                Prediction::V => eps.affine(bar.sqrt(), 0.0)? - x0.affine((1.0 - bar).sqrt(), 0.0)?,
            }
        };
        let solution = sample(&strategy, &Solver::Euler { steps: 4 }, &noise, &mut exact, None).unwrap();
        assert_close(&solution.y, &x0, 1e-5, name);
    }
}

// ---------------------------------------------------------------------------------------------
// Solvers

/// `dy/ds = y·cos(s)`, `y(s) = y(s0)·exp(sin(s) − sin(s0))`, integrated from 2 down to 0 (the
/// direction of sampling) in f64.
const Y0: [f64; 3] = [1.0, -0.5, 2.0];

fn closed_form(s0: f64, s1: f64) -> Vec<f64> {
    Y0.iter().map(|y| y * (s1.sin() - s0.sin()).exp()).collect()
}

fn oscillator(y: &Tensor, s: f64) -> Result<Tensor> {
    y.affine(s.cos(), 0.0)
}

fn y0() -> Tensor {
    Tensor::new(&Y0, &Device::Cpu).unwrap()
}

fn uniform_grid(s0: f64, s1: f64, steps: usize) -> Vec<f64> {
    (0..=steps).map(|i| s0 + (s1 - s0) * i as f64 / steps as f64).collect()
}

fn max_error(actual: &Tensor, expected: &[f64]) -> f64 {
    values(actual).iter().zip(expected).map(|(a, e)| (a - e).abs()).fold(0.0, f64::max)
}

/// A fixed-step solver with the given number of steps.
type FixedStep = fn(usize) -> Solver;

/// Halving the step halves the error `2^order` times; NFE is `stages · N`, counted exactly.
#[test]
fn fixed_step_orders_and_nfe() {
    let exact = closed_form(2.0, 0.0);
    let cases: [(FixedStep, f64, usize); 4] = [
        (|steps| Solver::Euler { steps }, 1.0, 1),
        (|steps| Solver::Midpoint { steps }, 2.0, 2),
        (|steps| Solver::Heun { steps }, 2.0, 2),
        (|steps| Solver::Rk4 { steps }, 4.0, 4),
    ];
    for (make, order, stages) in cases {
        let mut errors = Vec::new();
        let solver = make(0);
        for steps in [32, 64, 128] {
            let mut calls = 0;
            let mut f = |y: &Tensor, s: f64| {
                calls += 1;
                oscillator(y, s)
            };
            let grid = uniform_grid(2.0, 0.0, steps);
            let solution = make(steps).solve(y0(), &grid, &mut f, None).unwrap();
            assert_eq!((solution.nfe, calls, solution.steps), (stages * steps, stages * steps, steps), "{solver:?}");
            errors.push(max_error(&solution.y, &exact));
        }
        for pair in errors.windows(2) {
            let observed = (pair[0] / pair[1]).log2();
            assert!(
                (observed - order).abs() < 0.15,
                "{}: observed order {observed:.3}, errors {errors:?}",
                solver.name()
            );
        }
    }
}

/// The adaptive solvers meet their tolerance (the global error stays within a small multiple of
/// `atol + rtol·|y|`), tighter tolerances give smaller errors, in either direction of `s`, and
/// NFE is `2 + (stages − 1)·(accepted + rejected)`: the first stage, the initial-step probe, and
/// the stages after the first of every attempt (the first is the previous step's last).
#[test]
fn adaptive_solvers_reach_the_tolerance() {
    for (s0, s1) in [(2.0, 0.0), (0.0, 2.0)] {
        let exact = closed_form(s0, s1);
        let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (stages, make) in [(4, bosh3 as fn(f64) -> Solver), (7, dopri5)] {
            let mut previous = f64::INFINITY;
            for rtol in [1e-4, 1e-6, 1e-8] {
                let solver = make(rtol);
                let mut calls = 0;
                let mut f = |y: &Tensor, s: f64| {
                    calls += 1;
                    oscillator(y, s)
                };
                let solution = solver.solve(y0(), &[s0, s1], &mut f, None).unwrap();
                let error = max_error(&solution.y, &exact);
                assert!(error <= 10.0 * rtol * scale, "{} rtol {rtol:e}: error {error:e}", solver.name());
                assert!(error < previous, "{} rtol {rtol:e}: error {error:e} not below {previous:e}", solver.name());
                previous = error;
                assert_eq!(solution.nfe, calls);
                assert_eq!(solution.nfe, 2 + (stages - 1) * (solution.steps + solution.rejected), "{}", solver.name());
            }
        }
    }
}

fn bosh3(rtol: f64) -> Solver {
    Solver::Bosh3 { rtol, atol: rtol * 1e-3 }
}

fn dopri5(rtol: f64) -> Solver {
    Solver::Dopri5 { rtol, atol: rtol * 1e-3 }
}

/// An adaptive solve of a whole sampling ODE: rectified flow with the exact velocity of a point
/// reaches the point, with few steps because the exact flow is a straight line.
#[test]
fn adaptive_sampling_reaches_the_data_point() {
    let x0 = tensor(&[3.0, -1.5, 0.25, 7.0], &[1, 1, 2, 2]);
    let noise = tensor(&[0.4, 1.3, -0.8, -2.1], &[1, 1, 2, 2]);
    let strategy = continuous_rflow(None);
    // v = (x0 − x_t)/t is singular at t = 0; the straight line's velocity is constant, x0 − ε.
    let mut velocity = |_x_t: &Tensor, _t: f64| &x0 - &noise;
    let solver = Solver::Dopri5 { rtol: 1e-5, atol: 1e-5 };
    let solution = sample(&strategy, &solver, &noise, &mut velocity, None).unwrap();
    assert_close(&solution.y, &x0, 1e-6, "dopri5");
    assert_eq!(solution.rejected, 0);
}

#[test]
fn the_observer_sees_every_step_and_can_cancel() {
    let mut seen: Vec<Progress> = Vec::new();
    let mut observe = |p: &Progress| {
        seen.push(*p);
        Ok(())
    };
    let grid = uniform_grid(1.0, 0.0, 5);
    let mut f = oscillator;
    Solver::Heun { steps: 5 }.solve(y0(), &grid, &mut f, Some(&mut observe)).unwrap();
    assert_eq!(seen.iter().map(|p| p.step).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(seen.iter().map(|p| p.nfe).collect::<Vec<_>>(), [2, 4, 6, 8, 10]);
    assert_eq!(seen.iter().map(|p| p.s).collect::<Vec<_>>(), grid[1..]);

    let mut calls = 0;
    let mut counted = |y: &Tensor, s: f64| {
        calls += 1;
        oscillator(y, s)
    };
    let mut cancel = |p: &Progress| if p.step == 3 { candle_core::bail!("cancelled") } else { Ok(()) };
    let error = Solver::Euler { steps: 5 }.solve(y0(), &grid, &mut counted, Some(&mut cancel)).unwrap_err();
    assert!(error.to_string().contains("cancelled"));
    assert_eq!(calls, 3);
}

#[test]
fn solvers_refuse_bad_grids_tolerances_and_blow_ups() {
    let mut f = oscillator;
    let euler = Solver::Euler { steps: 2 };
    assert!(euler.solve(y0(), &[1.0], &mut f, None).is_err());
    assert!(euler.solve(y0(), &[1.0, 0.5, 0.7], &mut f, None).is_err());
    assert!(euler.solve(y0(), &[1.0, f64::NAN], &mut f, None).is_err());
    assert!(Solver::Dopri5 { rtol: 0.0, atol: 0.0 }.solve(y0(), &[0.0, 1.0], &mut f, None).is_err());
    assert!(Solver::Dopri5 { rtol: 1e-3, atol: 1e-3 }.solve(y0(), &[1.0, 1.0], &mut f, None).is_err());
    // dy/ds = y² with y(0) = 1 blows up at s = 1: a clear error instead of a hang.
    let mut blow_up = |y: &Tensor, _s: f64| y.sqr();
    let one = Tensor::new(&[1.0f64], &Device::Cpu).unwrap();
    let error = Solver::Bosh3 { rtol: 1e-6, atol: 1e-9 }.solve(one, &[0.0, 2.0], &mut blow_up, None).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("underflow") || message.contains(&MAX_ADAPTIVE_STEPS.to_string()),
        "unexpected error: {message}"
    );
}

#[test]
fn solver_grids_follow_the_strategy() {
    let strategy = continuous_rflow(None);
    assert_eq!(Solver::Rk4 { steps: 2 }.grid(&strategy).unwrap(), [1.0, 0.5, 0.0]);
    assert_eq!(Solver::Bosh3 { rtol: 1e-3, atol: 1e-3 }.grid(&strategy).unwrap(), [1.0, 0.0]);
}

#[test]
fn constructors_refuse_bad_parameters() {
    assert!(Strategy::ddpm(1, BetaSchedule::Linear, Prediction::Epsilon, None).is_err());
    assert!(Strategy::ddpm(T, BetaSchedule::Linear, Prediction::Epsilon, Some(0.0)).is_err());
    assert!(Strategy::ddpm(T, BetaSchedule::Linear, Prediction::Epsilon, Some(f64::NAN)).is_err());
    assert!(Strategy::rflow(TimeSampling::Uniform, true, 1, None).is_err());
    assert!(Strategy::rflow(TimeSampling::Uniform, true, T, Some(-1.0)).is_err());
    assert!(Strategy::rflow(TimeSampling::Uniform, true, T, Some(f64::INFINITY)).is_err());
}
