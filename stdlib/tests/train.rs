//! The training core (`medgen_stdlib::train`): AdamW, schedules, clipping and EMA against
//! PyTorch; bit-exact resumption from a checkpoint; checkpoint sharding and corruption reports;
//! health guards; per-purpose random streams; f32 losses.
//!
//! The PyTorch reference values are in `tests/reference/train_reference.json`, made by
//! `tests/reference/train_reference.py` (which records the torch version); these tests never run
//! Python.
//!
//! That Python's `safetensors` reads the checkpoints is checked outside `cargo test`: an ignored
//! test writes a sharded checkpoint, and the script's second mode opens it and checks its tensor
//! names and shapes against the index and manifest:
//!
//! ```text
//! MEDGEN_TRAIN_VERIFY_DIR=/tmp/medgen-train-verify \
//!     cargo test -p medgen-stdlib --test train -- --ignored write_checkpoint_for_python
//! python3 stdlib/tests/reference/train_reference.py --verify /tmp/medgen-train-verify
//! ```

mod common;
use common::TempDir;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{linear, Linear, VarBuilder, VarMap};
use medgen_stdlib::train::checkpoint::{
    latest, step_dir, CheckpointConfig, CheckpointErrorKind, TrainState, INDEX, MANIFEST,
};
use medgen_stdlib::train::clip::{clip_grad_norm, grad_norm, GradNorm};
use medgen_stdlib::train::ema::Ema;
use medgen_stdlib::train::guard::{Guard, GuardConfig, GuardState, Health, HealthErrorKind, OnSpike};
use medgen_stdlib::train::loss::{kl_diag_gaussian, l1, mse};
use medgen_stdlib::train::optim::{AdamW, AdamWConfig, GAN_BETAS};
use medgen_stdlib::train::params::Params;
use medgen_stdlib::train::rng::{var_builder, Purpose, Stream, Streams};
use medgen_stdlib::train::schedule::{Decay, Plateau, Schedule, ScheduleError, ValHistory};
use serde_json::Value;

// ---- Helpers ---------------------------------------------------------------------------------------

fn reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| serde_json::from_str(include_str!("reference/train_reference.json")).unwrap())
}

/// A float of the reference, written as a decimal string: serde_json's default float parser is
/// off by an ulp for about one f64 in eight, `str::parse` is exact.
fn num(value: &Value) -> f64 {
    value.as_str().unwrap().parse().unwrap()
}

/// A tensor from the script's `{"shape": [...], "data": [...]}`.
fn tensor(value: &Value, dtype: DType) -> Tensor {
    let shape: Vec<usize> = value["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let data: Vec<f64> = value["data"].as_array().unwrap().iter().map(num).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap()
}

/// Bit patterns of a tensor's values, for exact comparisons.
fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        DType::F64 => t.flatten_all().unwrap().to_vec1::<f64>().unwrap().into_iter().map(f64::to_bits).collect(),
        _ => t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(|v| u64::from(v.to_bits())).collect(),
    }
}

/// Largest distance in units in the last place between two tensors of the same dtype.
fn max_ulps(actual: &Tensor, expected: &Tensor) -> u64 {
    bits(actual)
        .iter()
        .zip(bits(expected))
        .map(|(&a, e)| ordered(a, actual.dtype()).abs_diff(ordered(e, actual.dtype())))
        .max()
        .unwrap()
}

/// Maps a float's bits to an integer that orders like the float, so differences count ulps.
fn ordered(bits: u64, dtype: DType) -> u64 {
    let sign = if dtype == DType::F64 { 1 << 63 } else { 1 << 31 };
    if bits & sign != 0 {
        sign - (bits & !sign)
    } else {
        sign + bits
    }
}

/// A VarMap holding `values` under their names.
fn varmap_of(values: &[(&str, Tensor)]) -> VarMap {
    let varmap = VarMap::new();
    for (name, value) in values {
        varmap.data().lock().unwrap().insert(name.to_string(), Var::from_tensor(value).unwrap());
    }
    varmap
}

// ---- AdamW, schedules, clipping, EMA against PyTorch -----------------------------------------------

/// Largest difference in ulps allowed between our parameters and torch.optim.AdamW's: torch.sqrt
/// on CPU (MKL's vector math) is one ulp off for about 20% of f32 inputs, which here moves 5 of
/// 468 parameter values by one ulp (all in the GAN-betas case).
const MAX_PARAM_ULPS_VS_TORCH_SQRT: u64 = 1;

/// Every AdamW trajectory of the reference: six steps with a changing learning rate, one step
/// without a bias gradient, f32 and f64, default and GAN betas (seed pitfall 58).
///
/// Against torch.optim.AdamW, the moments and step counts are bit-identical at every step, and the
/// parameters are within [`MAX_PARAM_ULPS_VS_TORCH_SQRT`]. Against the script's line-by-line
/// replay of torch's update with a correctly rounded square root (the one difference), the
/// parameters are bit-identical too.
#[test]
fn adamw_matches_torch() {
    for case in reference()["adamw"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let dtype = if case["dtype"] == "f64" { DType::F64 } else { DType::F32 };
        let betas = case["betas"].as_array().unwrap();
        let config = AdamWConfig {
            beta1: num(&betas[0]),
            beta2: num(&betas[1]),
            eps: num(&case["eps"]),
            weight_decay: num(&case["weight_decay"]),
        };
        let initial = &case["initial"];
        let varmap = varmap_of(&[("w", tensor(&initial["w"], dtype)), ("b", tensor(&initial["b"], dtype))]);
        let params = Params::from_varmap(&varmap);
        let mut adamw = AdamW::new(&params, config).unwrap();
        let steps = case["steps"].as_array().unwrap();
        let ieee = case["params_with_ieee_sqrt"].as_array().unwrap();
        for (step, grads) in case["grads"].as_array().unwrap().iter().enumerate() {
            let mut store = GradStore::default();
            for (var_name, var) in params.iter() {
                if !grads[var_name].is_null() {
                    store.insert(var.as_tensor(), tensor(&grads[var_name], dtype));
                }
            }
            adamw.step(&store, num(&case["lrs"][step])).unwrap();
            for (var_name, moments) in adamw.moments() {
                let torch = &steps[step][var_name];
                let param = params.get(var_name).unwrap().as_tensor();
                let at = format!("{name} step {step} {var_name}");
                assert_eq!(max_ulps(&moments.exp_avg, &tensor(&torch["exp_avg"], dtype)), 0, "{at}: exp_avg");
                assert_eq!(max_ulps(&moments.exp_avg_sq, &tensor(&torch["exp_avg_sq"], dtype)), 0, "{at}: exp_avg_sq");
                assert_eq!(moments.step, torch["step"].as_u64().unwrap(), "{at}: step");
                assert_eq!(max_ulps(param, &tensor(&ieee[step][var_name], dtype)), 0, "{at}: param (IEEE sqrt)");
                let ulps = max_ulps(param, &tensor(&torch["param"], dtype));
                assert!(ulps <= MAX_PARAM_ULPS_VS_TORCH_SQRT, "{at}: param {ulps} ulps from torch");
            }
        }
    }
}

#[test]
fn adamw_rejects_invalid_hyperparameters() {
    let params = Params::from_varmap(&varmap_of(&[("w", Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap())]));
    for config in [
        AdamWConfig { beta1: 1.0, ..AdamWConfig::default() },
        AdamWConfig { beta2: -0.1, ..AdamWConfig::default() },
        AdamWConfig { eps: 0.0, ..AdamWConfig::default() },
        AdamWConfig { weight_decay: f64::NAN, ..AdamWConfig::default() },
    ] {
        assert!(AdamW::new(&params, config).is_err(), "{config:?}");
    }
    let gan = AdamWConfig { beta1: GAN_BETAS.0, beta2: GAN_BETAS.1, ..AdamWConfig::default() };
    assert!(AdamW::new(&params, gan).is_ok());
}

fn schedule_reference() -> &'static Value {
    &reference()["schedules"]
}

fn assert_close_lrs(actual: &[f64], expected: &Value, what: &str) {
    let expected: Vec<f64> = expected.as_array().unwrap().iter().map(num).collect();
    assert_eq!(actual.len(), expected.len(), "{what}");
    for (step, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert!(((a - e) / e).abs() < 1e-12, "{what} step {step}: {a} vs torch {e}");
    }
}

/// Warmup + cosine against torch's `SequentialLR(LinearLR, CosineAnnealingLR)`: equal to 1e-12
/// relative (torch computes both recursively, we in closed form; the largest difference is a few
/// ulps).
#[test]
fn warmup_cosine_matches_torch() {
    let r = schedule_reference();
    let (base_lr, min_lr) = (num(&r["base_lr"]), num(&r["min_lr"]));
    let schedule = Schedule {
        base_lr,
        warmup_steps: r["warmup"].as_u64().unwrap(),
        decay: Decay::Cosine { total_steps: r["total"].as_u64().unwrap(), min_lr },
    };
    schedule.validate().unwrap();
    let history = ValHistory::default();
    let lrs: Vec<f64> = (0..=20).map(|step| schedule.lr(step, &history)).collect();
    assert_close_lrs(&lrs, &r["warmup_cosine"], "warmup+cosine");
    assert_eq!(schedule.lr(0, &history), base_lr / 5.0, "the first step is not wasted at rate 0");
    assert_eq!(schedule.lr(1000, &history), min_lr, "after total_steps the rate stays at min_lr");
}

#[test]
fn warmup_constant_matches_torch() {
    let r = schedule_reference();
    let schedule = Schedule { base_lr: num(&r["base_lr"]), warmup_steps: 5, decay: Decay::Constant };
    let lrs: Vec<f64> = (0..12).map(|step| schedule.lr(step, &ValHistory::default())).collect();
    assert_close_lrs(&lrs, &r["warmup_constant"], "warmup+constant");
}

/// ReduceLROnPlateau replayed over the validation history: identical to torch after every
/// validation (three reductions, a clamp at min_lr, cooldowns, a loss exactly at the threshold).
#[test]
fn plateau_matches_torch() {
    let r = &schedule_reference()["plateau"];
    let c = &r["config"];
    let plateau = Plateau {
        factor: num(&c["factor"]),
        patience: c["patience"].as_u64().unwrap() as u32,
        threshold: num(&c["threshold"]),
        cooldown: c["cooldown"].as_u64().unwrap() as u32,
        min_lr: num(&c["min_lr"]),
    };
    let schedule =
        Schedule { base_lr: num(&schedule_reference()["base_lr"]), warmup_steps: 0, decay: Decay::Plateau(plateau) };
    schedule.validate().unwrap();
    let mut history = ValHistory::default();
    for (loss, expected) in r["val_losses"].as_array().unwrap().iter().zip(r["lrs_after_each"].as_array().unwrap()) {
        history.record(num(loss), 10).unwrap();
        assert_eq!(schedule.lr(100, &history), num(expected), "after {:?}", history.losses());
    }
}

/// Seed pitfall 39: an empty validation has no loss and must not enter the history.
#[test]
fn validation_history_refuses_empty_and_non_finite_losses() {
    let mut history = ValHistory::default();
    assert_eq!(history.record(0.0, 0), Err(ScheduleError::EmptyValidation));
    assert!(matches!(history.record(f64::NAN, 4), Err(ScheduleError::NonFiniteValidationLoss { .. })));
    assert!(history.losses().is_empty());
    assert!(ScheduleError::EmptyValidation.to_string().contains("pitfall 39"));
}

#[test]
fn schedule_validation_rejects_bad_parameters() {
    let cosine = |total_steps, min_lr| Schedule {
        base_lr: 1e-3,
        warmup_steps: 10,
        decay: Decay::Cosine { total_steps, min_lr },
    };
    assert!(cosine(10, 0.0).validate().is_err(), "total_steps must exceed warmup_steps");
    assert!(cosine(100, 1e-2).validate().is_err(), "min_lr above base_lr");
    let plateau = Plateau { factor: 1.0, patience: 1, threshold: 1e-4, cooldown: 0, min_lr: 0.0 };
    let err = Schedule { base_lr: 1e-3, warmup_steps: 0, decay: Decay::Plateau(plateau) }.validate().unwrap_err();
    assert_eq!(err.to_string(), "learning-rate schedule: factor = 1 must be in (0, 1)");
}

/// Largest difference in ulps allowed between our clipped gradients and torch's. torch sums
/// squares in f32 (its norm of `w` below is already an ulp from the exact value) and takes the
/// norm of per-tensor norms; ours accumulates in f64 and rounds once. The clip coefficients then
/// differ by up to two ulps, the products by up to three.
const MAX_CLIP_ULPS: u64 = 3;

/// Against `torch.nn.utils.clip_grad_norm_`: the norm to 1e-6 relative, the clipped gradients
/// within [`MAX_CLIP_ULPS`]; nothing changes when the norm is within the limit.
#[test]
fn clipping_matches_torch() {
    let r = &reference()["clipping"];
    for case in r["cases"].as_array().unwrap() {
        let varmap = varmap_of(&[
            ("w", Tensor::zeros((3, 7), DType::F32, &Device::Cpu).unwrap()),
            ("b", Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap()),
        ]);
        let params = Params::from_varmap(&varmap);
        let mut grads = GradStore::default();
        for (name, var) in params.iter() {
            grads.insert(var.as_tensor(), tensor(&r["grads"][name], DType::F32));
        }
        let max_norm = num(&case["max_norm"]);
        let norm = clip_grad_norm(&params, &mut grads, max_norm).unwrap();
        let expected = num(&case["total_norm"]);
        assert!(((norm.total - expected) / expected).abs() < 1e-6, "norm {} vs torch {expected}", norm.total);
        assert!(norm.non_finite.is_empty());
        for (name, var) in params.iter() {
            let clipped = grads.get(var.as_tensor()).unwrap();
            let ulps = max_ulps(clipped, &tensor(&case["clipped"][name], DType::F32));
            assert!(ulps <= MAX_CLIP_ULPS, "max_norm {max_norm} {name}: {ulps} ulps");
        }
        let after = grad_norm(&params, &grads).unwrap().total;
        assert!(after <= max_norm * (1.0 + 1e-6), "norm after clipping {after}");
    }
}

/// Against `AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))`: bit-identical after the
/// initial copy and three updates.
#[test]
fn ema_matches_torch() {
    let r = &reference()["ema"];
    let states = r["states"].as_array().unwrap();
    let varmap = varmap_of(&[("w", tensor(&states[0]["w"], DType::F32)), ("b", tensor(&states[0]["b"], DType::F32))]);
    let params = Params::from_varmap(&varmap);
    let mut ema = Ema::new(&params, num(&r["decay"])).unwrap();
    for (i, (state, expected)) in states.iter().zip(r["after_each"].as_array().unwrap()).enumerate() {
        if i > 0 {
            for (name, var) in params.iter() {
                var.set(&tensor(&state[name], DType::F32)).unwrap();
            }
            ema.update().unwrap();
        }
        for (name, weight) in ema.weights() {
            assert_eq!(max_ulps(weight, &tensor(&expected[name], DType::F32)), 0, "update {i} {name}");
        }
    }
}

#[test]
fn ema_copy_in_copy_out_and_swap() {
    let varmap = varmap_of(&[("w", Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap())]);
    let params = Params::from_varmap(&varmap);
    let var = params.get("w").unwrap();
    let mut ema = Ema::new(&params, 0.5).unwrap();
    var.set(&Tensor::new(&[3f32, 6.0], &Device::Cpu).unwrap()).unwrap();
    ema.update().unwrap();
    let averaged = [2f64, 4.0];
    assert_eq!(f64s(ema.weights().next().unwrap().1), averaged, "the shadow does not alias the variable");
    ema.swap().unwrap();
    assert_eq!(f64s(var.as_tensor()), averaged);
    ema.swap().unwrap();
    assert_eq!(f64s(var.as_tensor()), [3.0, 6.0], "a second swap restores the training weights");
    ema.copy_out().unwrap();
    assert_eq!(f64s(var.as_tensor()), averaged);
    var.set(&Tensor::new(&[5f32, 5.0], &Device::Cpu).unwrap()).unwrap();
    ema.copy_in().unwrap();
    assert_eq!(f64s(ema.weights().next().unwrap().1), [5.0, 5.0]);
    assert!(Ema::new(&params, 1.5).is_err());
}

// ---- A tiny training run ---------------------------------------------------------------------------

const SEED: u64 = 20260214;
/// Seed of the fixed dataset (not part of the run's streams).
const DATA_SEED: u64 = 7;
const SAMPLES: usize = 16;
const BATCH: usize = 4;
const FEATURES: usize = 4;
const HIDDEN: usize = 16;
/// Noise scale levels, drawn per sample like diffusion timesteps.
const TIMESTEPS: u32 = 10;
const MAX_GRAD_NORM: f64 = 1.0;
const EMA_DECAY: f64 = 0.9;
const VALIDATE_EVERY: u64 = 3;
/// Steps before the checkpoint; the straight run trains twice as many.
const HALF: u64 = 6;

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(vb: VarBuilder, hidden: usize) -> Mlp {
        Mlp {
            fc1: linear(FEATURES, hidden, vb.pp("fc1")).unwrap(),
            fc2: linear(hidden, FEATURES, vb.pp("fc2")).unwrap(),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.fc1.forward(x).unwrap().relu().unwrap()).unwrap()
    }
}

/// A run: its state, model, schedule and data.
struct Run {
    state: TrainState,
    model: Mlp,
    schedule: Schedule,
    inputs: Tensor,
    targets: Tensor,
}

/// A freshly built run whose initial weights come from `init_seed`.
fn new_run(init_seed: u64) -> Run {
    new_run_with_hidden(init_seed, HIDDEN)
}

fn new_run_with_hidden(init_seed: u64, hidden: usize) -> Run {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = Mlp::new(var_builder(&varmap, Stream::new(init_seed, Purpose::Init), DType::F32, &device), hidden);
    let params = Params::from_varmap(&varmap);
    let mut data = Stream::new(DATA_SEED, Purpose::Sampling);
    let inputs = data.normal((SAMPLES, FEATURES), &device).unwrap();
    let targets = ((&inputs * 0.5).unwrap().sin().unwrap() + 0.1).unwrap();
    let state = TrainState {
        step: 0,
        optimizer: AdamW::new(&params, AdamWConfig::default()).unwrap(),
        ema: Some(Ema::new(&params, EMA_DECAY).unwrap()),
        model: params,
        streams: Streams::new(SEED),
        val_history: ValHistory::default(),
        guard: Guard::new(GuardConfig { min_history: 3, ..GuardConfig::default() }),
        metadata: serde_json::json!({"run": "tiny-mlp"}),
    };
    let schedule =
        Schedule { base_lr: 1e-2, warmup_steps: 3, decay: Decay::Cosine { total_steps: 2 * HALF, min_lr: 1e-4 } };
    Run { state, model, schedule, inputs, targets }
}

impl Run {
    /// One step: batch order, timesteps and noise from their streams, MSE, clipping, guards,
    /// scheduled AdamW, EMA.
    fn train_step(&mut self) {
        let device = Device::Cpu;
        let state = &mut self.state;
        let step = state.step;
        let order = state.streams.get(Purpose::Augmentation).permutation(SAMPLES);
        let batch: Vec<u32> = order[..BATCH].iter().map(|&i| i as u32).collect();
        let batch = Tensor::new(batch.as_slice(), &device).unwrap();
        let x = self.inputs.index_select(&batch, 0).unwrap();
        let y = self.targets.index_select(&batch, 0).unwrap();
        let t = state.streams.get(Purpose::Timesteps).integers(BATCH, TIMESTEPS, &device).unwrap();
        let scale = (t.to_dtype(DType::F32).unwrap() / f64::from(TIMESTEPS)).unwrap().unsqueeze(1).unwrap();
        let noise = state.streams.get(Purpose::Noise).normal((BATCH, FEATURES), &device).unwrap();
        let noisy = (x + noise.broadcast_mul(&scale).unwrap()).unwrap();
        let loss = mse(&self.model.forward(&noisy), &y).unwrap();
        state.guard.check_loss(step, f64::from(loss.to_scalar::<f32>().unwrap())).unwrap();
        let mut grads = loss.backward().unwrap();
        let norm = clip_grad_norm(&state.model, &mut grads, MAX_GRAD_NORM).unwrap();
        state.guard.check_gradients(step, &norm).unwrap();
        state.optimizer.step(&grads, self.schedule.lr(step, &state.val_history)).unwrap();
        state.ema.as_mut().unwrap().update().unwrap();
        state.step += 1;
    }

    /// Validation on the EMA weights with noise from the validation stream; the loss is recorded.
    fn validate(&mut self) {
        let state = &mut self.state;
        let ema = state.ema.as_mut().unwrap();
        ema.swap().unwrap();
        let noise = state.streams.get(Purpose::Validation).normal((SAMPLES, FEATURES), &Device::Cpu).unwrap();
        let noisy = (&self.inputs + (noise * 0.1).unwrap()).unwrap();
        let loss = mse(&self.model.forward(&noisy), &self.targets).unwrap().to_scalar::<f32>().unwrap();
        state.val_history.record(f64::from(loss), SAMPLES).unwrap();
        ema.swap().unwrap();
    }

    fn train(&mut self, steps: u64, validate: bool) {
        for _ in 0..steps {
            self.train_step();
            if validate && self.state.step.is_multiple_of(VALIDATE_EVERY) {
                self.validate();
            }
        }
    }
}

/// The tensors of a state by kind and name, as bit patterns.
fn tensor_bits(state: &TrainState) -> Vec<(String, Vec<u64>)> {
    let mut all = Vec::new();
    all.extend(state.model.iter().map(|(n, v)| (format!("model {n}"), bits(v.as_tensor()))));
    all.extend(state.ema.as_ref().unwrap().weights().map(|(n, w)| (format!("ema {n}"), bits(w))));
    for (n, m) in state.optimizer.moments() {
        all.push((format!("exp_avg {n} (step {})", m.step), bits(&m.exp_avg)));
        all.push((format!("exp_avg_sq {n} (step {})", m.step), bits(&m.exp_avg_sq)));
    }
    all
}

/// Every weight, EMA weight, moment and step count identical bit for bit, and the same streams,
/// validation history and guard window.
fn assert_same_state(a: &TrainState, b: &TrainState) {
    assert_eq!(a.step, b.step);
    for ((name_a, bits_a), (name_b, bits_b)) in tensor_bits(a).iter().zip(&tensor_bits(b)) {
        assert_eq!(name_a, name_b);
        assert!(bits_a == bits_b, "{name_a} differs");
    }
    assert_eq!(a.streams.state(), b.streams.state());
    assert_eq!(a.val_history, b.val_history);
    assert_eq!(a.guard.state(), b.guard.state());
}

// ---- Bit-exact resumption ---------------------------------------------------------------------------

/// 2N steps straight against N steps, a checkpoint (sharded), a state rebuilt from other initial
/// weights, a load and N more steps: bit-identical weights, EMA, moments and everything else.
/// Once with warmup + cosine, once with the plateau schedule, whose rate depends on the
/// validation history the checkpoint carries.
#[test]
fn resume_from_checkpoint_is_bit_exact() {
    let plateau = Plateau { factor: 0.5, patience: 0, threshold: 0.1, cooldown: 0, min_lr: 1e-4 };
    for decay in [None, Some(Decay::Plateau(plateau))] {
        let dir = TempDir::new("resume");
        let build = |init_seed| {
            let mut run = new_run(init_seed);
            if let Some(decay) = &decay {
                run.schedule.decay = decay.clone();
            }
            run
        };
        let mut straight = build(SEED);
        straight.train(2 * HALF, true);

        let mut first = build(SEED);
        first.train(HALF, true);
        let saved = first.state.save(&dir.0, &CheckpointConfig { max_shard_bytes: 512 }).unwrap();
        assert_eq!(saved, step_dir(&dir.0, HALF));
        drop(first);

        let mut resumed = build(SEED + 1);
        let fresh = tensor_bits(&resumed.state);
        resumed.state.load(&latest(&dir.0).unwrap().unwrap()).unwrap();
        assert_ne!(fresh, tensor_bits(&resumed.state), "the load replaced the fresh weights");
        assert_eq!(resumed.state.metadata, serde_json::json!({"run": "tiny-mlp"}));
        resumed.train(HALF, true);

        assert_same_state(&straight.state, &resumed.state);
        assert_eq!(straight.state.val_history.losses().len() as u64, 2 * HALF / VALIDATE_EVERY);
        let initial = tensor_bits(&build(SEED).state);
        assert_ne!(initial[0], tensor_bits(&straight.state)[0], "training moved the weights");
        if decay.is_some() {
            let schedule = &straight.schedule;
            assert!(
                schedule.lr(2 * HALF, &straight.state.val_history) < schedule.base_lr,
                "the plateau reduced the rate"
            );
        }
    }
}

/// Seed pitfall 42: validating (which draws from its own stream and swaps in the EMA weights)
/// leaves the training trajectory exactly as without validation.
#[test]
fn validation_never_shifts_training() {
    let mut with_validation = new_run(SEED);
    with_validation.train(2 * HALF, true);
    let mut without = new_run(SEED);
    without.train(2 * HALF, false);
    assert_eq!(tensor_bits(&with_validation.state), tensor_bits(&without.state));
    let positions = |run: &Run| run.state.streams.state().positions;
    let (a, b) = (positions(&with_validation), positions(&without));
    for purpose in Purpose::ALL {
        if purpose == Purpose::Validation {
            assert!(a[&purpose] > b[&purpose], "validation drew from its own stream");
        } else {
            assert_eq!(a[&purpose], b[&purpose], "{purpose:?} untouched by validation");
        }
    }
}

// ---- Checkpoint files and their failures ------------------------------------------------------------

/// A run after a few steps, saved under `dir` with 1 KiB shards; returns the step directory.
fn saved_run(dir: &Path) -> (Run, PathBuf) {
    let mut run = new_run(SEED);
    run.train(4, true);
    let saved = run.state.save(dir, &CheckpointConfig { max_shard_bytes: 1024 }).unwrap();
    (run, saved)
}

fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut shards: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    shards.sort();
    shards
}

#[test]
fn checkpoint_shards_above_the_limit_and_loads_back() {
    let dir = TempDir::new("shards");
    let (run, saved) = saved_run(&dir.0);
    let files = shards(&saved);
    // 4 kinds x (64 + 16 + 64 + 4) f32 = 2,368 bytes of tensors in shards of at most 1 KiB.
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files[0].ends_with("train_state-00001-of-00003.safetensors"));
    let index: Value = serde_json::from_slice(&fs::read(saved.join(INDEX)).unwrap()).unwrap();
    assert_eq!(index["metadata"]["total_size"], 2368);
    assert_eq!(index["weight_map"].as_object().unwrap().len(), 16);
    assert_eq!(index["weight_map"]["model.fc1.weight"], "train_state-00001-of-00003.safetensors");
    assert_eq!(index["weight_map"]["adamw.exp_avg_sq.fc2.weight"], "train_state-00003-of-00003.safetensors");
    let manifest: Value = serde_json::from_slice(&fs::read(saved.join(MANIFEST)).unwrap()).unwrap();
    assert_eq!(manifest["files"].as_array().unwrap().len(), 4, "three shards and the index");

    let mut loaded = new_run(SEED + 1);
    loaded.state.load(&saved).unwrap();
    assert_same_state(&run.state, &loaded.state);
}

#[test]
fn default_shard_limit_is_one_gib() {
    assert_eq!(CheckpointConfig::default().max_shard_bytes, 1 << 30);
}

/// Loads `dir` into a fresh run and returns the error, after checking that the run's weights are
/// untouched.
fn load_error(dir: &Path) -> (CheckpointErrorKind, PathBuf, String) {
    let mut run = new_run(SEED + 1);
    let before = tensor_bits(&run.state);
    let err = run.state.load(dir).unwrap_err();
    assert_eq!(before, tensor_bits(&run.state), "a failed load changes nothing");
    let message = err.to_string();
    (err.kind, err.path, message)
}

#[test]
fn truncated_shard_is_reported_not_loaded() {
    let dir = TempDir::new("truncated");
    let (_, saved) = saved_run(&dir.0);
    let shard = &shards(&saved)[1];
    let length = fs::metadata(shard).unwrap().len();
    fs::OpenOptions::new().write(true).open(shard).unwrap().set_len(length - 100).unwrap();
    let (kind, path, message) = load_error(&saved);
    assert!(matches!(kind, CheckpointErrorKind::WrongSize { found, expected } if found + 100 == expected), "{message}");
    assert_eq!(&path, shard);
    assert!(message.contains("train_state-00002-of-00003.safetensors: truncated file"), "{message}");
}

#[test]
fn flipped_byte_is_reported_not_loaded() {
    let dir = TempDir::new("flipped");
    let (_, saved) = saved_run(&dir.0);
    let shard = &shards(&saved)[2];
    let mut bytes = fs::read(shard).unwrap();
    let middle = bytes.len() - 40;
    bytes[middle] ^= 0x01;
    fs::write(shard, bytes).unwrap();
    let (kind, path, message) = load_error(&saved);
    assert!(matches!(kind, CheckpointErrorKind::HashMismatch { .. }), "{message}");
    assert_eq!(&path, shard);
    assert!(message.contains("train_state-00003-of-00003.safetensors: corrupt: BLAKE3"), "{message}");
}

#[test]
fn missing_shard_is_reported_not_loaded() {
    let dir = TempDir::new("missing");
    let (_, saved) = saved_run(&dir.0);
    let shard = &shards(&saved)[0];
    fs::remove_file(shard).unwrap();
    let (kind, path, message) = load_error(&saved);
    assert!(matches!(kind, CheckpointErrorKind::MissingFile), "{message}");
    assert_eq!(&path, shard);
    assert!(message.contains("train_state-00001-of-00003.safetensors: missing"), "{message}");
}

#[test]
fn corrupt_index_is_reported_not_loaded() {
    let dir = TempDir::new("index");
    let (_, saved) = saved_run(&dir.0);
    let index = saved.join(INDEX);
    let text = fs::read_to_string(&index).unwrap().replace("\"step\": 4", "\"step\": 5");
    fs::write(&index, text).unwrap();
    let (kind, path, message) = load_error(&saved);
    assert!(matches!(kind, CheckpointErrorKind::HashMismatch { .. }), "{message}");
    assert_eq!(path, index);
}

/// A save interrupted before its manifest: `latest` skips it, `load` refuses it.
#[test]
fn interrupted_save_is_skipped_and_refused() {
    let dir = TempDir::new("interrupted");
    let (mut run, first) = saved_run(&dir.0);
    run.train(2, false);
    let second = run.state.save(&dir.0, &CheckpointConfig::default()).unwrap();
    assert_eq!(latest(&dir.0).unwrap(), Some(second.clone()));
    fs::remove_file(second.join(MANIFEST)).unwrap();
    assert_eq!(latest(&dir.0).unwrap(), Some(first), "the newest complete checkpoint");
    let (kind, path, message) = load_error(&second);
    assert!(matches!(kind, CheckpointErrorKind::Incomplete), "{message}");
    assert_eq!(path, second);
    assert!(
        message.ends_with("incomplete checkpoint: no manifest.json, the save did not finish; not loaded"),
        "{message}"
    );
    assert_eq!(latest(&dir.0.join("absent")).unwrap(), None);
}

/// Saving a step again replaces its checkpoint, leaving no stale shard behind.
#[test]
fn saving_a_step_again_replaces_it() {
    let dir = TempDir::new("replace");
    let (run, saved) = saved_run(&dir.0);
    assert_eq!(shards(&saved).len(), 3);
    assert_eq!(run.state.save(&dir.0, &CheckpointConfig::default()).unwrap(), saved);
    assert_eq!(shards(&saved).len(), 1);
    let mut loaded = new_run(SEED + 1);
    loaded.state.load(&saved).unwrap();
    assert_same_state(&run.state, &loaded.state);
}

/// A checkpoint restored into a state of another architecture or another seed is refused.
#[test]
fn incompatible_state_is_refused() {
    let dir = TempDir::new("incompatible");
    let (_, saved) = saved_run(&dir.0);

    let mut other_seed = new_run(SEED + 1);
    other_seed.state.streams = Streams::new(SEED + 1);
    let err = other_seed.state.load(&saved).unwrap_err();
    assert!(
        matches!(err.kind, CheckpointErrorKind::SeedMismatch { checkpoint: SEED, run } if run == SEED + 1),
        "{err}"
    );

    let mut no_ema = new_run(SEED);
    no_ema.state.ema = None;
    let err = no_ema.state.load(&saved).unwrap_err();
    assert!(matches!(&err.kind, CheckpointErrorKind::UnexpectedTensor { name } if name == "ema.fc1.bias"), "{err}");

    let mut wider = new_run_with_hidden(SEED, HIDDEN + 1);
    let err = wider.state.load(&saved).unwrap_err();
    assert!(matches!(err.kind, CheckpointErrorKind::TensorMismatch { .. }), "{err}");
    assert!(
        err.to_string().ends_with(
            "tensor adamw.exp_avg.fc1.bias has shape [16] and dtype F32, the state being restored expects [17] and F32"
        ),
        "{err}"
    );
}

/// Writes a checkpoint of the tiny run into `$MEDGEN_TRAIN_VERIFY_DIR` for
/// `train_reference.py --verify` (see the module doc).
#[test]
#[ignore = "writes a checkpoint for train_reference.py --verify; set MEDGEN_TRAIN_VERIFY_DIR"]
fn write_checkpoint_for_python() {
    let dir = PathBuf::from(std::env::var("MEDGEN_TRAIN_VERIFY_DIR").expect("set MEDGEN_TRAIN_VERIFY_DIR"));
    let (_, saved) = saved_run(&dir);
    println!("{}", saved.display());
}

/// The state a resumed run depends on (validation losses, gradient norms) comes back bit for bit:
/// it is stored as exact decimal strings, and the workspace's serde_json parses numbers exactly
/// (`float_roundtrip`; without it, these values came back an ulp off).
#[test]
fn saved_floats_come_back_bit_for_bit() {
    let tricky = [0.09270399063825607, -0.24604661762714386, -1.5550950765609741, 1e-300, 5e-324];
    let via_number = |v: &f64| serde_json::from_str::<f64>(&serde_json::to_string(v).unwrap()).unwrap();
    assert!(tricky.iter().all(|v| via_number(v).to_bits() == v.to_bits()), "serde_json misreads a number");
    let mut history = ValHistory::default();
    for v in tricky {
        history.record(v, 1).unwrap();
    }
    let back: ValHistory = serde_json::from_str(&serde_json::to_string(&history).unwrap()).unwrap();
    assert!(back.losses().iter().zip(&tricky).all(|(a, b)| a.to_bits() == b.to_bits()));
    let guard = GuardState { recent_norms: tricky.to_vec(), recent_losses: tricky.to_vec(), lowest_loss_median: None };
    let back: GuardState = serde_json::from_str(&serde_json::to_string(&guard).unwrap()).unwrap();
    assert!(back.recent_norms.iter().zip(&tricky).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(back.recent_losses.iter().zip(&tricky).all(|(a, b)| a.to_bits() == b.to_bits()));
}

// ---- Guards -----------------------------------------------------------------------------------------

fn norm(total: f64) -> GradNorm {
    GradNorm { total, non_finite: Vec::new() }
}

#[test]
fn nan_loss_is_reported() {
    let mut guard = Guard::new(GuardConfig::default());
    assert!(guard.check_loss(3, 0.25).is_ok());
    let err = guard.check_loss(7, f64::NAN).unwrap_err();
    assert_eq!(err.step, 7);
    assert!(matches!(err.kind, HealthErrorKind::NonFiniteLoss { .. }));
    assert!(err.to_string().starts_with("step 7: the loss is NaN; not training on it"), "{err}");
    assert!(guard.check_loss(8, f64::INFINITY).is_err());
}

/// The seeds' runaway run: with `lr = 1.0` the loss climbed from 0.34 to 65,521 and stayed finite.
/// It is divergence once it passes the factor times the lowest running median, however slowly it
/// got there (the current median climbs with it, the lowest does not), and noise within the
/// factor is not.
#[test]
fn a_finite_runaway_loss_is_divergence() {
    let config =
        GuardConfig { window: 5, loss_min_history: 3, divergence_factor: Some(100.0), ..GuardConfig::default() };
    let mut guard = Guard::new(config);
    // Noisy but healthy: up to 20x its median.
    for (step, loss) in [0.34, 0.5, 0.2, 4.0, 0.3, 0.25, 6.0].into_iter().enumerate() {
        guard.check_loss(step as u64, loss).unwrap_or_else(|e| panic!("step {step}: {e}"));
    }
    // A slow climb, 1.5x per step: the window's median follows it, the lowest median does not.
    let mut loss = 0.3;
    let mut stopped = None;
    for step in 7..60 {
        loss *= 1.5;
        if let Err(e) = guard.check_loss(step, loss) {
            stopped = Some(e);
            break;
        }
    }
    let err = stopped.expect("the climb is caught");
    let HealthErrorKind::Divergence { loss: at, lowest_median, factor } = err.kind else { panic!("{err}") };
    assert!(at > 100.0 * lowest_median && at / 1.5 <= 100.0 * lowest_median, "caught at the first step past it");
    assert_eq!(factor, 100.0);
    assert!(err.to_string().contains("the loss has diverged"), "{err}");
    // The state carries the lowest median, so a resumed run judges the same.
    let mut resumed = Guard::from_state(config, &guard.state());
    assert!(resumed.check_loss(99, at).is_err());
    let mut off = Guard::from_state(GuardConfig { divergence_factor: None, ..config }, &guard.state());
    assert!(off.check_loss(99, at).is_ok(), "`divergence_guard = none` turns it off");
}

/// A NaN in one gradient: the clip leaves the gradients alone and names the variable; the guard
/// refuses the step.
#[test]
fn nan_gradient_is_reported_with_its_variable() {
    let varmap = varmap_of(&[
        ("a", Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()),
        ("b", Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()),
    ]);
    let params = Params::from_varmap(&varmap);
    let mut grads = GradStore::default();
    grads.insert(params.get("a").unwrap().as_tensor(), Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap());
    grads.insert(params.get("b").unwrap().as_tensor(), Tensor::new(&[f32::NAN, 2.0], &Device::Cpu).unwrap());
    let norm = clip_grad_norm(&params, &mut grads, 1.0).unwrap();
    assert!(norm.total.is_nan());
    assert_eq!(norm.non_finite, ["b"]);
    assert_eq!(f64s(grads.get(params.get("a").unwrap().as_tensor()).unwrap()), [1.0, 2.0], "not scaled by NaN");
    let err = Guard::new(GuardConfig::default()).check_gradients(12, &norm).unwrap_err();
    assert!(matches!(&err.kind, HealthErrorKind::NonFiniteGradient { variables, .. } if variables == &["b"]));
    assert_eq!(
        err.to_string(),
        "step 12: the gradient norm is NaN; non-finite gradients in b; not applying the update"
    );
}

#[test]
fn gradient_spike_is_reported_against_the_running_median() {
    let config = GuardConfig { window: 5, min_history: 3, ..GuardConfig::default() };
    let mut guard = Guard::new(config);
    assert!(guard.check_gradients(0, &norm(1000.0)).is_ok(), "no verdict before min_history norms");
    for (step, total) in [1.0, 2.0, 1.5, 2.5, 1.0, 2.0].into_iter().enumerate() {
        guard.check_gradients(step as u64 + 1, &norm(total)).unwrap();
    }
    // The window holds the last five healthy norms: 2.0, 1.5, 2.5, 1.0, 2.0, median 2.0.
    assert_eq!(guard.state().recent_norms, [2.0, 1.5, 2.5, 1.0, 2.0]);
    assert!(guard.check_gradients(7, &norm(19.9)).is_ok());
    let err = guard.check_gradients(8, &norm(250.0)).unwrap_err();
    assert!(matches!(err.kind, HealthErrorKind::GradientSpike { median, .. } if median == 2.0), "{err}");
    assert_eq!(
        err.to_string(),
        "step 8: gradient spike: norm 2.500000e2 is 125.0x the median 2.000000e0 of the last 5 steps (limit 10x); not applying the update"
    );
    assert_eq!(guard.state().recent_norms, [1.5, 2.5, 1.0, 2.0, 19.9], "the spike did not enter the window");
    let restored = Guard::from_state(config, &guard.state());
    assert_eq!(restored.state(), guard.state());
}

#[test]
fn with_clipping_a_spike_is_let_through_and_kept_out_of_the_window_and_none_turns_the_check_off() {
    let healthy = [1.0, 2.0, 1.5];
    let mut clipping =
        Guard::new(GuardConfig { window: 5, min_history: 3, on_spike: OnSpike::Clip, ..GuardConfig::default() });
    let mut unguarded =
        Guard::new(GuardConfig { window: 5, min_history: 3, spike_factor: None, ..GuardConfig::default() });
    for (step, total) in healthy.into_iter().enumerate() {
        assert_eq!(clipping.check_gradients(step as u64, &norm(total)).unwrap(), Health::Healthy);
        assert_eq!(unguarded.check_gradients(step as u64, &norm(total)).unwrap(), Health::Healthy);
    }
    let verdict = clipping.check_gradients(3, &norm(250.0)).expect("a clipped spike does not stop training");
    assert_eq!(verdict, Health::ClippedSpike { norm: 250.0, median: 1.5 });
    assert_eq!(clipping.state().recent_norms, healthy, "the spike did not enter the window");
    assert_eq!(unguarded.check_gradients(3, &norm(250.0)).unwrap(), Health::Healthy);
    assert!(clipping.check_gradients(4, &norm(f64::NAN)).is_err(), "a non-finite norm stops even with clipping");
}

// ---- Random streams ---------------------------------------------------------------------------------

#[test]
fn streams_are_reproducible_and_independent() {
    let device = Device::Cpu;
    let draw = |streams: &mut Streams| bits(&streams.get(Purpose::Noise).normal((3, 5), &device).unwrap());
    let mut a = Streams::new(SEED);
    let mut b = Streams::new(SEED);
    b.get(Purpose::Validation).normal(1000, &device).unwrap();
    b.get(Purpose::Sampling).uniform(77, &device).unwrap();
    assert_eq!(draw(&mut a), draw(&mut b), "other purposes do not move the noise stream");
    assert_ne!(draw(&mut a), draw(&mut Streams::new(SEED + 1)), "another seed, other numbers");
    let noise = bits(&Stream::new(SEED, Purpose::Noise).normal(8, &device).unwrap());
    let timesteps = bits(&Stream::new(SEED, Purpose::Timesteps).normal(8, &device).unwrap());
    assert_ne!(noise, timesteps, "purposes are different streams");
}

/// `Streams::pair` hands out the two purposes asked for, in the order asked, whichever comes
/// first in `Purpose::ALL`.
#[test]
fn a_pair_of_streams_is_the_two_purposes_asked_for() {
    let device = Device::Cpu;
    let first = |purpose| bits(&Stream::new(SEED, purpose).normal(4, &device).unwrap());
    for (a, b) in [(Purpose::Noise, Purpose::Timesteps), (Purpose::Timesteps, Purpose::Noise)] {
        let mut streams = Streams::new(SEED);
        let (x, y) = streams.pair(a, b);
        assert_eq!((x.purpose(), y.purpose()), (a, b));
        assert_eq!(bits(&x.normal(4, &device).unwrap()), first(a));
        assert_eq!(bits(&y.normal(4, &device).unwrap()), first(b));
    }
}

/// The saved position continues a stream exactly, mid-chunk and across chunk boundaries.
#[test]
fn stream_state_resumes_exactly() {
    let device = Device::Cpu;
    let mut stream = Stream::new(SEED, Purpose::Augmentation);
    stream.normal(3, &device).unwrap();
    stream.permutation(5);
    let mut copy = Stream::from_state(stream.state());
    for len in [7, 100_000, 1] {
        assert_eq!(bits(&stream.normal(len, &device).unwrap()), bits(&copy.normal(len, &device).unwrap()));
        assert_eq!(bits(&stream.uniform(len, &device).unwrap()), bits(&copy.uniform(len, &device).unwrap()));
    }
    assert_eq!(stream.permutation(9), copy.permutation(9));
    let mut streams = Streams::new(SEED);
    streams.get(Purpose::Noise).normal(5, &device).unwrap();
    let json = serde_json::to_string(&streams.state()).unwrap();
    assert_eq!(Streams::from_state(&serde_json::from_str(&json).unwrap()).state(), streams.state());
}

/// Each draw advances its stream by a fixed number of words, whatever the values.
#[test]
fn draws_advance_the_stream_by_fixed_amounts() {
    let device = Device::Cpu;
    let mut stream = Stream::new(SEED, Purpose::Noise);
    stream.normal(5, &device).unwrap();
    assert_eq!(stream.state().position, 12, "3 pairs of normals, 4 words each");
    stream.uniform(3, &device).unwrap();
    assert_eq!(stream.state().position, 16, "one word per uniform, rounded up to even counts");
    stream.integers(2, 1000, &device).unwrap();
    assert_eq!(stream.state().position, 20, "two words per integer");
}

/// Chunks start at fixed stream offsets, so the thread count does not change the values.
#[test]
fn values_do_not_depend_on_the_thread_count() {
    let device = Device::Cpu;
    let len = 3 * medgen_stdlib::train::rng::CHUNK + 17;
    let parallel = bits(&Stream::new(SEED, Purpose::Noise).normal(len, &device).unwrap());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let serial = pool.install(|| bits(&Stream::new(SEED, Purpose::Noise).normal(len, &device).unwrap()));
    assert!(parallel == serial);
}

#[test]
fn distributions_have_the_right_moments() {
    let device = Device::Cpu;
    let mut stream = Stream::new(SEED, Purpose::Sampling);
    let normal = f64s(&stream.normal(200_000, &device).unwrap());
    let mean = normal.iter().sum::<f64>() / normal.len() as f64;
    let var = normal.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / normal.len() as f64;
    assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01, "normal mean {mean} variance {var}");
    let uniform = f64s(&stream.uniform(200_000, &device).unwrap());
    assert!(uniform.iter().all(|&u| (0.0..1.0).contains(&u)));
    let mean = uniform.iter().sum::<f64>() / uniform.len() as f64;
    assert!((mean - 0.5).abs() < 0.005, "uniform mean {mean}");
    let integers = stream.integers(10_000, 7, &device).unwrap().to_vec1::<u32>().unwrap();
    assert!(integers.iter().all(|&i| i < 7) && (0..7).all(|k| integers.contains(&k)));
    let mut permutation = stream.permutation(50);
    permutation.sort();
    assert_eq!(permutation, (0..50).collect::<Vec<_>>());
    assert!(stream.integers(3, 0, &device).is_err());
}

/// The seeded VarBuilder gives the same initial weights for the same seed, others for another.
#[test]
fn seeded_initialisation_is_reproducible() {
    let weights = |seed| tensor_bits(&new_run(seed).state)[..4].to_vec();
    assert_eq!(weights(SEED), weights(SEED));
    assert_ne!(weights(SEED), weights(SEED + 1));
}

// ---- Losses -----------------------------------------------------------------------------------------

/// Seed pitfall 41: bf16 inputs, f32 loss. The squared error 1e-3² vanishes next to 1 in bf16 but
/// not in f32.
#[test]
fn losses_are_computed_in_f32() {
    let device = Device::Cpu;
    let prediction = Tensor::new(&[1.0f32, 2.0, 3.0, 4.0], &device).unwrap();
    let target = Tensor::new(&[1.5f32, 2.0, 2.0, 4.25], &device).unwrap();
    let bf16 = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
    let loss = mse(&bf16(&prediction), &bf16(&target)).unwrap();
    assert_eq!(loss.dtype(), DType::F32);
    assert_eq!(loss.to_scalar::<f32>().unwrap(), (0.25 + 1.0 + 0.0625) / 4.0);
    assert_eq!(l1(&bf16(&prediction), &bf16(&target)).unwrap().to_scalar::<f32>().unwrap(), (0.5 + 1.0 + 0.25) / 4.0);
    assert!(mse(&prediction, &target.reshape((2, 2)).unwrap()).is_err(), "no silent broadcast");
}

/// Seed pitfall 32: the KL term sums over the latent elements of a sample and averages over the
/// batch; a mean over everything would be C·D·H·W times smaller.
#[test]
fn kl_sums_over_latent_dimensions_and_averages_over_the_batch() {
    let device = Device::Cpu;
    let shape = (2, 3, 4, 5, 6);
    let mean = Tensor::ones(shape, DType::BF16, &device).unwrap();
    let logvar = Tensor::zeros(shape, DType::BF16, &device).unwrap();
    // Each element: 0.5 * (1 + 1 - 1 - 0) = 0.5; 360 elements per sample.
    let kl = kl_diag_gaussian(&mean, &logvar).unwrap();
    assert_eq!(kl.dtype(), DType::F32);
    assert_eq!(kl.to_scalar::<f32>().unwrap(), 180.0);
    let second_sample_only = Tensor::cat(
        &[
            Tensor::zeros((1, 3, 4, 5, 6), DType::F32, &device).unwrap(),
            Tensor::ones((1, 3, 4, 5, 6), DType::F32, &device).unwrap(),
        ],
        0,
    )
    .unwrap();
    let kl = kl_diag_gaussian(&second_sample_only, &Tensor::zeros(shape, DType::F32, &device).unwrap()).unwrap();
    assert_eq!(kl.to_scalar::<f32>().unwrap(), 90.0, "averaged over the batch of two");
    assert!(kl_diag_gaussian(
        &Tensor::zeros(3, DType::F32, &device).unwrap(),
        &Tensor::zeros(3, DType::F32, &device).unwrap()
    )
    .is_err());
}
