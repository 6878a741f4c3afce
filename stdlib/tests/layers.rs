//! The normalisation, embedding and attention blocks of `medgen_stdlib::nn`: values and gradients
//! against PyTorch and MONAI, a gradient for every trainable variable, shapes in 2D and 3D, half
//! precision, and the configurations they refuse.
//!
//! The reference values in `tests/reference/layers_reference.safetensors` were made by
//! `tests/reference/layers_reference.py` (torch 2.15, MONAI 1.6.1, CPU, f32), which documents what
//! the file holds; these tests never run Python. To regenerate:
//!
//! ```text
//! python3 stdlib/tests/reference/layers_reference.py
//! ```
//!
//! Each block is rebuilt here under the same name, its parameters loaded from the file by name (so
//! a Rust parameter missing from the PyTorch state_dict fails the load), run on the same inputs,
//! and compared on its output and on the gradients of `sum(output * probe)` with respect to its
//! inputs and every parameter. The tests run on the CPU: the crate has no CUDA feature yet.

use std::collections::{BTreeSet, HashMap};

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use medgen_stdlib::nn::attention::{SpatialAttention, SpatialAttentionConfig, TokenAttention, TokenAttentionConfig};
use medgen_stdlib::nn::embed::{
    timestep_embedding, ConditionEmbedding, ConditionEmbeddingConfig, Conditioning, TimeEmbedding, TimeEmbeddingConfig,
    TimeScale, CONTINUOUS_TIME_SCALE,
};
use medgen_stdlib::nn::norm::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, TORCH_NORM_EPS};

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/layers_reference.safetensors");

/// Largest f32 difference allowed against PyTorch, relative to the largest magnitude in the
/// reference tensor: `max |actual - expected| / max |expected|`.
const F32_TOLERANCE: f32 = 1e-5;

/// The sinusoidal embedding's tolerance: one f32 ulp at its largest argument, t · freq₀ = 1000
/// (2⁻¹⁴ ≈ 6.1e-5). The argument `t · freq` is rounded to f32 on both sides, so a frequency one
/// ulp apart moves it by up to 1000 ulp(freq); and PyTorch's vectorised `expf` is one ulp off the
/// correctly rounded frequency for some exponents (i = 12 and 106 of 128), where Rust's `expf` is
/// correctly rounded. Measured: 3.0e-5.
const SINUSOID_TOLERANCE: f32 = 6.1e-5;

/// The tolerance of a half-precision run against the f32 run of the same block (bf16 keeps 8 bits
/// of mantissa, a relative step of 2⁻⁸ ≈ 4e-3).
const HALF_TOLERANCE: f32 = 1.5e-2;

/// MONAI's `SpatialAttentionBlock` gives the key projection a bias whose gradient is zero up
/// to rounding (the softmax ignores a shift shared by a whole row); it is compared on scale, not
/// on digits: both sides must stay below this fraction of the block's largest bias gradient.
const STRUCTURAL_ZERO: f32 = 1e-5;

/// The parameter with the structurally zero gradient, as a suffix of its full name.
const KEY_BIAS: &str = "attn.to_k.bias";

/// Every block the reference file holds, with the configuration the script used.
const GROUP_NORM: GroupNormConfig = GroupNormConfig { num_groups: 8, num_channels: 32, eps: TORCH_NORM_EPS };
const LAYER_NORM: LayerNormConfig = LayerNormConfig { dim: 32, eps: TORCH_NORM_EPS, affine: true };
/// DiT's: no affine parameters, eps 1e-6.
const LAYER_NORM_PLAIN: LayerNormConfig = LayerNormConfig { dim: 32, eps: 1e-6, affine: false };
const TIME_EMBEDDING: TimeEmbeddingConfig =
    TimeEmbeddingConfig { frequency_dim: 32, embed_dim: 64, scale: TimeScale::Continuous };
const ADDITIVE: ConditionEmbeddingConfig =
    ConditionEmbeddingConfig { cond_dim: 3, embed_dim: 32, mode: Conditioning::Additive };
const FILM: ConditionEmbeddingConfig =
    ConditionEmbeddingConfig { cond_dim: 5, embed_dim: 32, mode: Conditioning::Film };
const SPATIAL: SpatialAttentionConfig =
    SpatialAttentionConfig { channels: 32, head_channels: 8, norm_groups: 8, norm_eps: 1e-6 };
const TOKEN: TokenAttentionConfig = TokenAttentionConfig { dim: 32, num_heads: 4 };

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(REFERENCE, &Device::Cpu).expect("tests/reference/layers_reference.safetensors")
}

fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

/// `max |actual - expected| / max |expected|`, in f32.
fn relative_error(actual: &Tensor, expected: &Tensor) -> f32 {
    let actual = actual.to_dtype(DType::F32).unwrap();
    let expected = expected.to_dtype(DType::F32).unwrap();
    assert_eq!(actual.dims(), expected.dims());
    max_abs(&(actual - &expected).unwrap()) / max_abs(&expected)
}

fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, tolerance: f32) {
    let error = relative_error(actual, expected);
    println!("{what}: relative error {error:.1e}");
    assert!(error <= tolerance, "{what}: relative error {error:e} > {tolerance:e}");
}

/// A deterministic, irregular tensor (Candle's CPU generator cannot be seeded).
fn pattern(shape: &[usize], phase: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let t = Tensor::arange(0u32, n as u32, &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
    ((t * 0.737).unwrap() + phase).unwrap().sin().unwrap().reshape(shape).unwrap()
}

fn single<B: Module>(block: &B, inputs: &[Tensor]) -> Result<Tensor> {
    block.forward(&inputs[0])
}

fn conditioned(block: &ConditionEmbedding, inputs: &[Tensor]) -> Result<Tensor> {
    block.condition(&inputs[0], &inputs[1])
}

/// Rebuilds the reference block `name` with `build`, loads its parameters, runs it on its inputs
/// and compares output and gradients with PyTorch's.
fn check_against_reference<B>(
    name: &str,
    inputs: &[&str],
    build: impl FnOnce(VarBuilder) -> Result<B>,
    run: impl Fn(&B, &[Tensor]) -> Result<Tensor>,
) {
    let reference = reference();
    let get = |key: &str| reference.get(key).unwrap_or_else(|| panic!("{key} is not in the reference file"));
    let mut varmap = VarMap::new();
    let block = build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu).pp(name)).unwrap();
    varmap.load(REFERENCE).unwrap();
    let vars: Vec<Var> =
        inputs.iter().map(|input| Var::from_tensor(get(&format!("{name}.{input}"))).unwrap()).collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let output = run(&block, &tensors).unwrap();
    assert_close(&format!("{name}.output"), &output, get(&format!("{name}.output")), F32_TOLERANCE);

    let grads = (output * get(&format!("{name}.probe"))).unwrap().sum_all().unwrap().backward().unwrap();
    let params = varmap.data().lock().unwrap().clone();
    let differentiated = inputs.iter().zip(&vars).map(|(input, var)| (format!("{name}.{input}"), var));
    let mut compared = BTreeSet::new();
    for (key, var) in differentiated.chain(params.iter().map(|(k, v)| (k.clone(), v))) {
        let actual = grads.get(var).unwrap_or_else(|| panic!("{key} received no gradient"));
        let expected = get(&format!("grad.{key}"));
        if key.ends_with(KEY_BIAS) {
            assert_structural_zero(&key, actual, expected, &grads, &params);
        } else {
            assert_close(&format!("grad.{key}"), actual, expected, F32_TOLERANCE);
        }
        compared.insert(format!("grad.{key}"));
    }
    let expected: BTreeSet<_> = reference.keys().filter(|k| k.starts_with(&format!("grad.{name}."))).cloned().collect();
    assert_eq!(compared, expected, "{name}: the Rust block and the PyTorch one differ in parameters");
}

/// Both sides of a structurally zero gradient are rounding noise, far below the other biases'.
fn assert_structural_zero(
    key: &str,
    actual: &Tensor,
    expected: &Tensor,
    grads: &candle_core::backprop::GradStore,
    params: &HashMap<String, Var>,
) {
    let scale = params
        .iter()
        .filter(|(k, _)| k.ends_with(".bias") && !k.ends_with(KEY_BIAS))
        .map(|(_, v)| max_abs(grads.get(v).unwrap()))
        .fold(0.0, f32::max);
    let (actual, expected) = (max_abs(actual) / scale, max_abs(expected) / scale);
    println!("grad.{key}: structurally zero, {actual:.1e} here and {expected:.1e} in PyTorch (of the bias scale)");
    assert!(actual <= STRUCTURAL_ZERO && expected <= STRUCTURAL_ZERO, "{key}: gradient not ~0");
}

#[test]
fn group_norm_2d_matches_torch() {
    check_against_reference("gn2d", &["input"], |vb| GroupNorm::new(vb, &GROUP_NORM), single);
}

#[test]
fn group_norm_3d_matches_torch() {
    check_against_reference("gn3d", &["input"], |vb| GroupNorm::new(vb, &GROUP_NORM), single);
}

#[test]
fn layer_norm_matches_torch() {
    check_against_reference("ln", &["input"], |vb| LayerNorm::new(vb, &LAYER_NORM), single);
}

#[test]
fn layer_norm_without_affine_matches_torch() {
    check_against_reference("ln_plain", &["input"], |vb| LayerNorm::new(vb, &LAYER_NORM_PLAIN), single);
}

#[test]
fn time_embedding_matches_torch() {
    // The input is a time, not differentiable: only the output and the parameters' gradients.
    check_against_reference(
        "time_mlp",
        &[],
        |vb| TimeEmbedding::new(vb, &TIME_EMBEDDING),
        |block, _| block.forward(&reference()["time_mlp.t"]),
    );
}

#[test]
fn additive_condition_matches_torch() {
    check_against_reference("cond_add", &["emb", "cond"], |vb| ConditionEmbedding::new(vb, &ADDITIVE), conditioned);
}

#[test]
fn film_condition_matches_torch() {
    check_against_reference("cond_film", &["emb", "cond"], |vb| ConditionEmbedding::new(vb, &FILM), conditioned);
}

#[test]
fn spatial_attention_2d_matches_monai() {
    check_against_reference("sattn2d", &["input"], |vb| SpatialAttention::new(vb, &SPATIAL), single);
}

#[test]
fn spatial_attention_3d_matches_monai() {
    check_against_reference("sattn3d", &["input"], |vb| SpatialAttention::new(vb, &SPATIAL), single);
}

#[test]
fn token_attention_matches_timm() {
    check_against_reference("tattn", &["input"], |vb| TokenAttention::new(vb, &TOKEN), single);
}

#[test]
fn timestep_embedding_matches_diffusers_and_monai() {
    let reference = reference();
    let cases = [("temb_continuous", 256, TimeScale::Continuous), ("temb_discrete", 64, TimeScale::Discrete)];
    for (name, dim, scale) in cases.into_iter().chain([("temb_odd", 33, TimeScale::Discrete)]) {
        let t = &reference[&format!("{name}.t")];
        let embedding = timestep_embedding(t, dim, scale).unwrap();
        assert_close(&format!("{name}.output"), &embedding, &reference[&format!("{name}.output")], SINUSOID_TOLERANCE);
    }
}

#[test]
fn continuous_time_is_embedded_as_discrete_time_times_1000() {
    let continuous = Tensor::new(&[0.0f32, 0.25, 0.5, 1.0], &Device::Cpu).unwrap();
    let discrete = Tensor::new(&[0u32, 250, 500, 1000], &Device::Cpu).unwrap();
    assert_eq!(CONTINUOUS_TIME_SCALE, 1000.0);
    let a = timestep_embedding(&continuous, 64, TimeScale::Continuous).unwrap();
    let b = timestep_embedding(&discrete, 64, TimeScale::Discrete).unwrap();
    assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    // t = 0 embeds as cos(0) = 1 then sin(0) = 0: cosines first.
    let first = a.get(0).unwrap().to_vec1::<f32>().unwrap();
    assert!(first[..32].iter().all(|&c| c == 1.0) && first[32..].iter().all(|&s| s == 0.0));
}

/// A freshly initialised block, its variables, and its output on deterministic inputs.
struct Probe {
    name: &'static str,
    inputs: Vec<Var>,
    output: Tensor,
    varmap: VarMap,
}

fn probe<B>(
    name: &'static str,
    shapes: &[&[usize]],
    build: impl FnOnce(VarBuilder) -> Result<B>,
    run: impl Fn(&B, &[Tensor]) -> Result<Tensor>,
) -> Probe {
    let varmap = VarMap::new();
    let block = build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    let inputs: Vec<Var> =
        shapes.iter().enumerate().map(|(i, s)| Var::from_tensor(&pattern(s, i as f64)).unwrap()).collect();
    let tensors: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
    let output = run(&block, &tensors).unwrap();
    Probe { name, inputs, output, varmap }
}

/// Guards against Candle ops that drop gradients silently: every input and every trainable
/// variable of every block gets a non-zero gradient (the key bias of the spatial attention an
/// existing, structurally zero one).
#[test]
fn every_variable_receives_a_gradient() {
    let t = Tensor::new(&[0.1f32, 0.9], &Device::Cpu).unwrap();
    let time = probe("time embedding", &[], |vb| TimeEmbedding::new(vb, &TIME_EMBEDDING), |b, _| b.forward(&t));
    let probes = [
        probe("group norm 2d", &[&[2, 32, 4, 6]], |vb| GroupNorm::new(vb, &GROUP_NORM), single),
        probe("group norm 3d", &[&[2, 32, 2, 3, 4]], |vb| GroupNorm::new(vb, &GROUP_NORM), single),
        probe("layer norm", &[&[2, 5, 32]], |vb| LayerNorm::new(vb, &LAYER_NORM), single),
        probe("layer norm, no affine", &[&[2, 5, 32]], |vb| LayerNorm::new(vb, &LAYER_NORM_PLAIN), single),
        time,
        probe("additive", &[&[2, 32], &[2, 3]], |vb| ConditionEmbedding::new(vb, &ADDITIVE), conditioned),
        probe("film", &[&[2, 32], &[2, 5]], |vb| ConditionEmbedding::new(vb, &FILM), conditioned),
        probe("spatial attention 2d", &[&[2, 32, 4, 6]], |vb| SpatialAttention::new(vb, &SPATIAL), single),
        probe("spatial attention 3d", &[&[1, 32, 2, 3, 4]], |vb| SpatialAttention::new(vb, &SPATIAL), single),
        probe("token attention", &[&[2, 7, 32]], |vb| TokenAttention::new(vb, &TOKEN), single),
    ];
    let mut missing = Vec::new();
    for Probe { name, inputs, output, varmap } in &probes {
        let weights = pattern(output.dims(), 0.5);
        let grads = (output * weights).unwrap().sum_all().unwrap().backward().unwrap();
        let params = varmap.data().lock().unwrap().clone();
        let named = inputs.iter().map(|v| ("input".to_string(), v)).chain(params.iter().map(|(k, v)| (k.clone(), v)));
        for (var_name, var) in named {
            match grads.get(var) {
                None => missing.push(format!("{name}: {var_name} has no gradient")),
                Some(_) if var_name.ends_with(KEY_BIAS) => {}
                Some(g) if max_abs(g) == 0.0 => missing.push(format!("{name}: {var_name} has a zero gradient")),
                Some(_) => {}
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

fn output_dims<B>(
    shapes: &[&[usize]],
    build: impl FnOnce(VarBuilder) -> Result<B>,
    run: impl Fn(&B, &[Tensor]) -> Result<Tensor>,
) -> Vec<usize> {
    probe("shape", shapes, build, run).output.dims().to_vec()
}

#[test]
fn shapes_2d_and_3d() {
    for shape in [&[2, 32, 6, 5][..], &[1, 32, 3, 4, 5][..]] {
        assert_eq!(output_dims(&[shape], |vb| GroupNorm::new(vb, &GROUP_NORM), single), shape);
        assert_eq!(output_dims(&[shape], |vb| SpatialAttention::new(vb, &SPATIAL), single), shape);
    }
    assert_eq!(output_dims(&[&[3, 9, 32]], |vb| LayerNorm::new(vb, &LAYER_NORM), single), [3, 9, 32]);
    assert_eq!(output_dims(&[&[3, 9, 32]], |vb| TokenAttention::new(vb, &TOKEN), single), [3, 9, 32]);
    assert_eq!(output_dims(&[&[4, 32], &[4, 5]], |vb| ConditionEmbedding::new(vb, &FILM), conditioned), [4, 32]);
    assert_eq!(output_dims(&[&[4, 32], &[4, 3]], |vb| ConditionEmbedding::new(vb, &ADDITIVE), conditioned), [4, 32]);
    let t = Tensor::new(&[3u32, 7, 11], &Device::Cpu).unwrap();
    assert_eq!(timestep_embedding(&t, 17, TimeScale::Discrete).unwrap().dims(), [3, 17]);
    let time = probe("time", &[], |vb| TimeEmbedding::new(vb, &TIME_EMBEDDING), |b, _| b.forward(&t.clone()));
    assert_eq!(time.output.dims(), [3, 64]);
}

/// Runs the reference block `name`, with `varmap`'s f32 parameters cast to `dtype`, on `x` cast
/// to `dtype`.
fn run_in<B: Module>(
    name: &str,
    varmap: &VarMap,
    dtype: DType,
    x: &Tensor,
    build: impl Fn(VarBuilder) -> Result<B>,
) -> Tensor {
    let params: HashMap<String, Tensor> =
        varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.to_dtype(dtype).unwrap())).collect();
    let block = build(VarBuilder::from_tensors(params, dtype, &Device::Cpu).pp(name)).unwrap();
    block.forward(&x.to_dtype(dtype).unwrap()).unwrap()
}

/// Half-precision inputs come back in their dtype and agree with the f32 run of the reference
/// block `name` on the same (rounded) input: statistics are taken in f32 (seed pitfall 41).
/// `offset` moves the input away from zero.
fn check_half_precision<B: Module>(
    name: &str,
    dtype: DType,
    offset: f64,
    shape: &[usize],
    build: impl Fn(VarBuilder) -> Result<B>,
) {
    let mut varmap = VarMap::new();
    build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu).pp(name)).unwrap();
    varmap.load(REFERENCE).unwrap();
    let x = (pattern(shape, 0.0) + offset).unwrap().to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
    let half = run_in(name, &varmap, dtype, &x, &build);
    assert_eq!(half.dtype(), dtype, "{name}");
    let full = run_in(name, &varmap, DType::F32, &x, &build);
    assert_close(&format!("{name} in {dtype:?}"), &half, &full, HALF_TOLERANCE);
}

/// Norm inputs sit at mean 100 with spread 1, where half-precision moments would lose the
/// variance; attention inputs stay near zero, as f16 scores overflow at 65504.
#[test]
fn half_precision_inputs_keep_their_dtype() {
    const FAR_FROM_ZERO: f64 = 100.0;
    for dtype in [DType::BF16, DType::F16] {
        check_half_precision("gn3d", dtype, FAR_FROM_ZERO, &[2, 32, 3, 4, 5], |vb| GroupNorm::new(vb, &GROUP_NORM));
        check_half_precision("ln", dtype, FAR_FROM_ZERO, &[2, 5, 32], |vb| LayerNorm::new(vb, &LAYER_NORM));
    }
    // Candle has no BF16 matmul on the CPU: attention in F16 only.
    check_half_precision("sattn3d", DType::F16, 0.0, &[1, 32, 2, 3, 4], |vb| SpatialAttention::new(vb, &SPATIAL));
    check_half_precision("tattn", DType::F16, 0.0, &[2, 7, 32], |vb| TokenAttention::new(vb, &TOKEN));
}

#[test]
fn invalid_configurations_and_inputs_are_refused() {
    let vb = || VarBuilder::zeros(DType::F32, &Device::Cpu);
    assert!(GroupNorm::new(vb(), &GroupNormConfig { num_groups: 7, ..GROUP_NORM }).is_err());
    assert!(SpatialAttention::new(vb(), &SpatialAttentionConfig { head_channels: 5, ..SPATIAL }).is_err());
    assert!(TokenAttention::new(vb(), &TokenAttentionConfig { num_heads: 5, ..TOKEN }).is_err());
    let norm = GroupNorm::new(vb(), &GROUP_NORM).unwrap();
    assert!(norm.forward(&Tensor::zeros((2, 16, 4, 4), DType::F32, &Device::Cpu).unwrap()).is_err());
    assert!(norm.forward(&Tensor::zeros((2, 32), DType::F32, &Device::Cpu).unwrap()).is_err());
    let layer_norm = LayerNorm::new(vb(), &LAYER_NORM).unwrap();
    assert!(layer_norm.forward(&Tensor::zeros((2, 5, 16), DType::F32, &Device::Cpu).unwrap()).is_err());
    let film = ConditionEmbedding::new(vb(), &FILM).unwrap();
    let emb = Tensor::zeros((2, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(film.condition(&emb, &Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap()).is_err());
}
