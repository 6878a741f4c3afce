//! The PatchGAN discriminator and adversarial losses of `medgen_stdlib::nn::patchgan`: the whole
//! model against MONAI's `PatchDiscriminator` (every block's output and the input gradient) in 2D
//! and 3D, MONAI's `PatchAdversarialLoss` on its logits and on hand-computed values, LeakyReLU's
//! gradient against central finite differences, shapes in 2D and 3D, a gradient for every
//! trainable variable, MONAI's initialisation, and the configurations and inputs it refuses.
//!
//! The reference values in `tests/reference/patchgan_reference.safetensors` were made by
//! `tests/reference/patchgan_reference.py` (torch 2.15, MONAI 1.6.1, CPU, f32), which documents
//! what the file holds; these tests never run Python. To regenerate:
//!
//! ```text
//! python3 stdlib/tests/reference/patchgan_reference.py
//! ```
//!
//! The heart of it, for the 2D case (`d3` is the same with `spatial_dims=3` and a
//! `[1, 1, 14, 12, 16]` input):
//!
//! ```text
//! model = PatchDiscriminator(spatial_dims=2, channels=2, in_channels=1, num_layers_d=2, kernel_size=4,
//!                            norm=("group", {"num_groups": 2}), padding=1)
//! features = model(x)                      # d2.features.0 … d2.features.3, the logits last
//! (features[-1] * probe).sum().backward()  # grad.d2.input
//! PatchAdversarialLoss(criterion="hinge")(features[-1], target_is_real=False, for_discriminator=True)
//! ```
//!
//! The tests run on the CPU: the crate has no CUDA feature yet.

use std::collections::{BTreeSet, HashMap};

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use medgen_stdlib::nn::conv::SpatialDims;
use medgen_stdlib::nn::patchgan::{
    leaky_relu, AdversarialCriterion, AdversarialTarget, PatchGan, PatchGanConfig, LEAKY_SLOPE, LEAST_SQUARES_SLOPE,
};
use medgen_stdlib::train::params::Params;
use medgen_stdlib::train::rng::{var_builder, Purpose, Stream};

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/patchgan_reference.safetensors");

/// Largest f32 difference allowed against MONAI, relative to the largest magnitude in the
/// reference tensor: `max |actual - expected| / max |expected|`.
const F32_TOLERANCE: f32 = 1e-5;

/// Step of the central differences: LeakyReLU is linear on either side of 0 and every probed
/// input is further than this from 0, so the difference quotient is exact up to f64 rounding.
const FD_STEP: f64 = 1e-3;
const FD_TOLERANCE: f64 = 1e-9;

const SEED: u64 = 31;

/// The configuration of the reference file's discriminators.
fn reference_config(dims: SpatialDims) -> PatchGanConfig {
    PatchGanConfig { dims, in_channels: 1, channels: 2, num_layers: 2, norm_groups: 2 }
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(REFERENCE, &Device::Cpu).expect("tests/reference/patchgan_reference.safetensors")
}

fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

/// `max |actual - expected| / max |expected|`, in f32.
fn relative_error(actual: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(actual.dims(), expected.dims());
    max_abs(&(actual - expected).unwrap()) / max_abs(expected)
}

fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, tolerance: f32) {
    let error = relative_error(actual, expected);
    println!("{what}: relative error {error:.1e}");
    assert!(error <= tolerance, "{what}: relative error {error:e} > {tolerance:e}");
}

/// A deterministic, irregular tensor (Candle's CPU generator cannot be seeded).
fn pattern(shape: &[usize], phase: f64, dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let t = Tensor::arange(0u32, n as u32, &Device::Cpu).unwrap().to_dtype(DType::F64).unwrap();
    ((t * 0.737).unwrap() + phase).unwrap().sin().unwrap().reshape(shape).unwrap().to_dtype(dtype).unwrap()
}

fn seeded(cfg: &PatchGanConfig) -> (PatchGan, VarMap) {
    let varmap = VarMap::new();
    let vb = var_builder(&varmap, Stream::new(SEED, Purpose::Init), DType::F32, &Device::Cpu);
    (PatchGan::new(vb, cfg).unwrap(), varmap)
}

const CASES: [(AdversarialCriterion, &str); 2] =
    [(AdversarialCriterion::LeastSquares, "least_squares"), (AdversarialCriterion::Hinge, "hinge")];

/// Loads the discriminator `name` from the reference file through a safetensors-backed
/// VarBuilder, runs it on the reference input, and compares every block's output, the input
/// gradient and MONAI's adversarial losses on the logits.
fn check_against_monai(name: &str, dims: SpatialDims) {
    let reference = reference();
    let get = |key: &str| reference.get(key).unwrap_or_else(|| panic!("{key} is not in the reference file"));
    let cfg = reference_config(dims);

    // The model asks for exactly the parameters the reference file holds for it, no more, no fewer.
    let (_, varmap) = seeded(&cfg);
    let ours: BTreeSet<String> = varmap.data().lock().unwrap().keys().map(|k| format!("{name}.{k}")).collect();
    let data = ["input", "probe", "features.", "loss."].map(|s| format!("{name}.{s}"));
    let theirs: BTreeSet<String> = reference
        .keys()
        .filter(|k| k.starts_with(&format!("{name}.")) && !data.iter().any(|d| k.starts_with(d)))
        .cloned()
        .collect();
    assert_eq!(ours, theirs, "{name}: the Rust model and MONAI's differ in parameters");

    let vb = VarBuilder::from_tensors(reference.clone(), DType::F32, &Device::Cpu).pp(name);
    let model = PatchGan::new(vb, &cfg).unwrap();
    let input = Var::from_tensor(get(&format!("{name}.input"))).unwrap();
    let features = model.forward_features(input.as_tensor()).unwrap();
    assert_eq!(features.len(), cfg.num_layers + 2);
    for (i, feature) in features.iter().enumerate() {
        let key = format!("{name}.features.{i}");
        assert_close(&key, feature, get(&key), F32_TOLERANCE);
    }
    let logits = &features[features.len() - 1];
    assert_close(&format!("{name}.logits"), &model.forward(input.as_tensor()).unwrap(), logits, 0.0);

    let grads = (logits * get(&format!("{name}.probe"))).unwrap().sum_all().unwrap().backward().unwrap();
    let gradient = grads.get(input.as_tensor()).expect("the input has a gradient");
    assert_close(&format!("grad.{name}.input"), gradient, get(&format!("grad.{name}.input")), F32_TOLERANCE);

    for (criterion, criterion_name) in CASES {
        let losses = [
            ("real", criterion.discriminator_loss(logits, AdversarialTarget::Real)),
            ("fake", criterion.discriminator_loss(logits, AdversarialTarget::Fake)),
            ("generator", criterion.generator_loss(logits)),
        ];
        for (target, loss) in losses {
            let key = format!("{name}.loss.{criterion_name}.{target}");
            assert_close(&key, &loss.unwrap().reshape(1).unwrap(), get(&key), F32_TOLERANCE);
        }
    }
}

#[test]
fn matches_monai_2d() {
    check_against_monai("d2", SpatialDims::Two);
}

#[test]
fn matches_monai_3d() {
    check_against_monai("d3", SpatialDims::Three);
}

/// A configuration, an input shape, and the shape of every block's output.
type ShapeCase = (PatchGanConfig, &'static [usize], Vec<Vec<usize>>);

#[test]
fn output_shapes_2d_and_3d() {
    let cases: [ShapeCase; 2] = [
        (
            PatchGanConfig { dims: SpatialDims::Two, in_channels: 1, channels: 4, num_layers: 3, norm_groups: 4 },
            &[2, 1, 32, 40],
            vec![vec![2, 4, 16, 20], vec![2, 8, 8, 10], vec![2, 16, 4, 5], vec![2, 32, 3, 4], vec![2, 1, 2, 3]],
        ),
        (
            PatchGanConfig { dims: SpatialDims::Three, in_channels: 2, channels: 4, num_layers: 2, norm_groups: 2 },
            &[1, 2, 13, 16, 21],
            vec![vec![1, 4, 6, 8, 10], vec![1, 8, 3, 4, 5], vec![1, 16, 2, 3, 4], vec![1, 1, 1, 2, 3]],
        ),
    ];
    for (cfg, input, expected) in cases {
        let (model, _) = seeded(&cfg);
        let x = pattern(input, 0.0, DType::F32);
        let shapes: Vec<Vec<usize>> = model.forward_features(&x).unwrap().iter().map(|f| f.dims().to_vec()).collect();
        assert_eq!(shapes, expected, "{cfg:?}");
        assert_eq!(model.forward(&x).unwrap().dims(), expected[expected.len() - 1].as_slice());
    }
}

#[test]
fn inputs_below_the_minimum_size_and_invalid_configurations_are_refused() {
    let cfg = PatchGanConfig { dims: SpatialDims::Two, in_channels: 1, channels: 4, num_layers: 3, norm_groups: 4 };
    assert_eq!(cfg.min_spatial_len(), 24);
    assert_eq!(reference_config(SpatialDims::Three).min_spatial_len(), 12);
    let (model, _) = seeded(&cfg);
    // 24 is the smallest length that leaves one logit: 24 → 12 → 6 → 3 → 2 → 1.
    assert_eq!(
        model.forward(&Tensor::zeros((1, 1, 24, 25), DType::F32, &Device::Cpu).unwrap()).unwrap().dims(),
        [1, 1, 1, 1]
    );
    assert!(model.forward(&Tensor::zeros((1, 1, 23, 32), DType::F32, &Device::Cpu).unwrap()).is_err());
    assert!(model.forward(&Tensor::zeros((1, 1, 24, 24, 24), DType::F32, &Device::Cpu).unwrap()).is_err());
    assert!(model.forward(&Tensor::zeros((1, 2, 24, 24), DType::F32, &Device::Cpu).unwrap()).is_err());

    let vb = || VarBuilder::zeros(DType::F32, &Device::Cpu);
    assert!(PatchGan::new(vb(), &PatchGanConfig { norm_groups: 3, ..cfg }).is_err());
    assert!(PatchGan::new(vb(), &PatchGanConfig { norm_groups: 0, ..cfg }).is_err());
    assert!(PatchGan::new(vb(), &PatchGanConfig { num_layers: 0, ..cfg }).is_err());
    assert!(PatchGan::new(vb(), &PatchGanConfig { channels: 0, ..cfg }).is_err());
    // 8 groups divide every layer's channels (8, 16, 32) though not the initial conv's 4.
    assert!(PatchGan::new(vb(), &PatchGanConfig { norm_groups: 8, ..cfg }).is_ok());
}

/// Guards against Candle ops that drop gradients silently: in 2D and 3D, every variable gets a
/// non-zero gradient from the discriminator's loss, and the input one from the generator's.
#[test]
fn every_trainable_variable_gets_a_gradient() {
    let cases = [
        (
            PatchGanConfig { dims: SpatialDims::Two, in_channels: 1, channels: 4, num_layers: 3, norm_groups: 2 },
            &[2, 1, 24, 28][..],
        ),
        (
            PatchGanConfig { dims: SpatialDims::Three, in_channels: 1, channels: 2, num_layers: 2, norm_groups: 2 },
            &[1, 1, 12, 14, 16][..],
        ),
    ];
    for (cfg, shape) in cases {
        let (model, varmap) = seeded(&cfg);
        let params = Params::from_varmap(&varmap);
        assert_eq!(params.len(), 2 + 3 * cfg.num_layers + 2, "{cfg:?}");
        let input = Var::from_tensor(&pattern(shape, 0.1, DType::F32)).unwrap();
        let logits = model.forward(input.as_tensor()).unwrap();
        for criterion in [AdversarialCriterion::LeastSquares, AdversarialCriterion::Hinge] {
            let grads = criterion.discriminator_loss(&logits, AdversarialTarget::Fake).unwrap().backward().unwrap();
            for (name, var) in params.iter() {
                let gradient = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{cfg:?} {criterion:?}: {name} has no gradient"));
                assert!(max_abs(gradient) > 0.0, "{cfg:?} {criterion:?}: {name} has an all-zero gradient");
            }
            let grads = criterion.generator_loss(&logits).unwrap().backward().unwrap();
            let gradient = grads.get(input.as_tensor()).expect("the input has a gradient");
            assert!(max_abs(gradient) > 0.0, "{cfg:?} {criterion:?}: the generator's gradient is zero");
        }
    }
}

/// Conv weights start from N(0, 0.02²) and biases from zero (MONAI's `normal_init`); the norms
/// from the identity.
#[test]
fn initialisation_follows_monai() {
    let cfg = PatchGanConfig { dims: SpatialDims::Two, in_channels: 1, channels: 8, num_layers: 3, norm_groups: 4 };
    let (_, varmap) = seeded(&cfg);
    let params = Params::from_varmap(&varmap);
    let values = |name: &str| params.get(name).unwrap().as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    // 64 · 32 · 4 · 4 = 32768 draws: the sample deviation is within 2% of 0.02 (its standard error is 0.4%).
    let weights = values("layers.2.conv.weight");
    assert_eq!(weights.len(), 32768);
    let n = weights.len() as f64;
    let mean = weights.iter().map(|&w| f64::from(w)).sum::<f64>() / n;
    let std = (weights.iter().map(|&w| (f64::from(w) - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(mean.abs() < 1e-3 && (std - 0.02).abs() < 4e-4, "mean {mean}, std {std}");
    for name in ["initial_conv.bias", "final_conv.bias", "layers.0.norm.bias"] {
        assert!(values(name).iter().all(|&b| b == 0.0), "{name}");
    }
    assert!(values("layers.1.norm.weight").iter().all(|&w| w == 1.0));
    assert!(params.get("layers.0.conv.bias").is_none(), "the convs before a norm have no bias");
}

#[test]
fn leaky_relu_gradient_matches_central_differences() {
    // Twelve inputs, none within FD_STEP of 0, both signs.
    let base: Vec<f64> =
        (0..12).map(|i| (f64::from(i) * 1.3).sin() * 2.0 + if i % 2 == 0 { 0.05 } else { -0.05 }).collect();
    assert!(base.iter().all(|x| x.abs() > 10.0 * FD_STEP));
    let probe: Vec<f64> = (0..12).map(|i| (f64::from(i) * 0.7).cos() + 1.5).collect();
    let probe_tensor = Tensor::from_vec(probe.clone(), (3, 4), &Device::Cpu).unwrap();
    let loss = |values: &[f64]| -> f64 {
        let x = Tensor::from_vec(values.to_vec(), (3, 4), &Device::Cpu).unwrap();
        (leaky_relu(&x, LEAKY_SLOPE).unwrap() * &probe_tensor).unwrap().sum_all().unwrap().to_scalar().unwrap()
    };
    let x = Var::from_tensor(&Tensor::from_vec(base.clone(), (3, 4), &Device::Cpu).unwrap()).unwrap();
    let y = leaky_relu(x.as_tensor(), LEAKY_SLOPE).unwrap();
    let expected: Vec<f64> = base.iter().map(|&v| if v > 0.0 { v } else { LEAKY_SLOPE * v }).collect();
    assert_eq!(y.flatten_all().unwrap().to_vec1::<f64>().unwrap(), expected);
    let grads = (&y * &probe_tensor).unwrap().sum_all().unwrap().backward().unwrap();
    let analytic = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    for entry in 0..base.len() {
        let shifted = |delta: f64| {
            let mut values = base.clone();
            values[entry] += delta;
            loss(&values)
        };
        let numeric = (shifted(FD_STEP) - shifted(-FD_STEP)) / (2.0 * FD_STEP);
        assert!(
            (numeric - analytic[entry]).abs() <= FD_TOLERANCE * probe[entry].abs(),
            "entry {entry}: {numeric} vs {}",
            analytic[entry]
        );
        let slope = if base[entry] > 0.0 { 1.0 } else { LEAKY_SLOPE };
        assert!((analytic[entry] - slope * probe[entry]).abs() < 1e-12);
    }

    // At exactly 0 the gradient is PyTorch's, `slope`, not the `(1 + slope) / 2` of
    // max(x, 0) + slope · min(x, 0).
    let zero = Var::from_tensor(&Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let grads = leaky_relu(zero.as_tensor(), LEAKY_SLOPE).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.get(zero.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), [LEAKY_SLOPE as f32; 3]);
}

#[test]
fn adversarial_losses_match_hand_computed_values() {
    // Logits [-2, -0.5, 0.3, 1.5], as a [1, 1, 2, 2] patch grid.
    let x = [-2.0f64, -0.5, 0.3, 1.5];
    let logits = Tensor::new(&[[[[-2.0f32, -0.5], [0.3, 1.5]]]], &Device::Cpu).unwrap();
    // Least squares: a = LeakyReLU_0.05(x) = [-0.1, -0.025, 0.3, 1.5];
    //   real: mean((a − 1)²) = (1.21 + 1.050625 + 0.49 + 0.25) / 4 = 0.75015625
    //   fake: mean(a²)       = (0.01 + 0.000625 + 0.09 + 2.25) / 4 = 0.58765625
    let a: Vec<f64> = x.iter().map(|&v| if v > 0.0 { v } else { LEAST_SQUARES_SLOPE * v }).collect();
    let ls_real = a.iter().map(|v| (v - 1.0).powi(2)).sum::<f64>() / 4.0;
    let ls_fake = a.iter().map(|v| v * v).sum::<f64>() / 4.0;
    assert!((ls_real - 0.750_156_25).abs() < 1e-12 && (ls_fake - 0.587_656_25).abs() < 1e-12);
    // Hinge: a = tanh(x) ∈ (−1, 1), so max(0, 1 ∓ a) = 1 ∓ a:
    //   real: 1 − mean(tanh x),  fake: 1 + mean(tanh x),
    //   mean(tanh x) = (−0.96403 − 0.46212 + 0.29131 + 0.90515) / 4 = −0.05742…
    let mean_tanh = x.iter().map(|v| v.tanh()).sum::<f64>() / 4.0;
    assert!((mean_tanh + 0.057_421).abs() < 1e-6, "{mean_tanh}");
    let expected = [
        (AdversarialCriterion::LeastSquares, ls_real, ls_fake),
        (AdversarialCriterion::Hinge, 1.0 - mean_tanh, 1.0 + mean_tanh),
    ];
    for (criterion, real, fake) in expected {
        let value = |loss: Result<Tensor>| f64::from(loss.unwrap().to_scalar::<f32>().unwrap());
        let tolerance = 1e-6;
        assert!((value(criterion.discriminator_loss(&logits, AdversarialTarget::Real)) - real).abs() < tolerance);
        assert!((value(criterion.discriminator_loss(&logits, AdversarialTarget::Fake)) - fake).abs() < tolerance);
        assert!((value(criterion.generator_loss(&logits)) - real).abs() < tolerance, "{criterion:?}");
    }

    // Computed in f32 whatever the logits' dtype.
    for criterion in [AdversarialCriterion::LeastSquares, AdversarialCriterion::Hinge] {
        let loss = criterion.generator_loss(&logits.to_dtype(DType::BF16).unwrap()).unwrap();
        assert_eq!(loss.dtype(), DType::F32);
    }
}
