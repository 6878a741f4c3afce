//! The convolutions and resampling of `medgen_stdlib::nn`: gradients against central finite
//! differences in f64, values and gradients against PyTorch, shapes in 2D and 3D through the
//! dims-generic [`Conv`], the configurations they refuse, and an ignored timing.
//!
//! The reference values in `tests/reference/conv_reference.safetensors` were made by
//! `tests/reference/conv_reference.py` (torch 2.15, CPU; f32 values, computed in f64), which
//! documents what the file holds; these tests never run Python. To regenerate:
//!
//! ```text
//! python3 stdlib/tests/reference/conv_reference.py
//! ```
//!
//! The heart of the PyTorch comparison, for a case `c` built as `nn.Conv3d(4, 5, 3, padding=1,
//! stride=2)` under a fixed seed:
//!
//! ```text
//! output = F.conv3d(input, weight, bias, stride=conv.stride, padding=conv.padding)
//! (output * probe).sum().backward()   # grad.c.input, grad.c.weight, grad.c.bias
//! ```
//!
//! The tests run on the CPU: the crate has no CUDA feature yet.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use medgen_stdlib::nn::conv::{Conv, Conv2d, Conv2dConfig, Conv3d, Conv3dConfig, SpatialDims};
use medgen_stdlib::nn::resample::{avg_pool, upsample_nearest};

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/conv_reference.safetensors");

/// Largest f32 difference allowed against PyTorch, relative to the largest magnitude in the
/// reference tensor: `max |actual - expected| / max |expected|`.
const F32_TOLERANCE: f32 = 1e-5;

/// Step of the central differences. Every loss here is linear in each tensor being perturbed, so
/// the difference quotient is exact up to f64 rounding whatever the step.
const FD_STEP: f64 = 1e-3;

/// Largest difference allowed between an autograd gradient entry and its central difference,
/// relative to the largest entry of that gradient (f64 rounding over a few hundred terms).
const FD_TOLERANCE: f64 = 1e-9;

/// The factor of the resampling tests, a UNet's.
const FACTOR: usize = 2;

/// A deterministic, irregular tensor (Candle's CPU generator cannot be seeded).
fn pattern(shape: &[usize], phase: f64, dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let t = Tensor::arange(0u32, n as u32, &Device::Cpu).unwrap().to_dtype(DType::F64).unwrap();
    ((t * 0.737).unwrap() + phase).unwrap().sin().unwrap().reshape(shape).unwrap().to_dtype(dtype).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Central finite differences

/// `sum(f(args) · probe)` as an f64 scalar.
fn loss(f: &impl Fn(&[Tensor]) -> Result<Tensor>, args: &[Tensor], probe: &Tensor) -> f64 {
    (f(args).unwrap() * probe).unwrap().sum_all().unwrap().to_scalar().unwrap()
}

/// Compares the autograd gradients of `sum(f(args) · probe)` for every entry of every argument
/// (all f64) with central differences.
fn check_gradients(what: &str, args: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let vars: Vec<Var> = args.iter().map(|a| Var::from_tensor(a).unwrap()).collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let output = f(&tensors).unwrap();
    let probe = pattern(output.dims(), 0.3, DType::F64);
    let grads = (&output * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    for (index, var) in vars.iter().enumerate() {
        let analytic = grads.get(var).unwrap_or_else(|| panic!("{what}: argument {index} has no gradient"));
        let analytic = analytic.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let base = args[index].flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let scale = analytic.iter().fold(0f64, |m, g| m.max(g.abs())).max(f64::MIN_POSITIVE);
        assert!(scale > 1e-3, "{what}: the gradient of argument {index} is ~0, the check would prove nothing");
        let with = |entry: usize, delta: f64| {
            let mut values = base.clone();
            values[entry] += delta;
            let mut perturbed = args.to_vec();
            perturbed[index] = Tensor::from_vec(values, args[index].dims(), &Device::Cpu).unwrap();
            loss(&f, &perturbed, &probe)
        };
        let worst = (0..base.len())
            .map(|entry| {
                let numeric = (with(entry, FD_STEP) - with(entry, -FD_STEP)) / (2.0 * FD_STEP);
                (analytic[entry] - numeric).abs() / scale
            })
            .fold(0f64, f64::max);
        println!("{what}: argument {index} ({:?}), worst relative difference {worst:.1e}", args[index].dims());
        assert!(worst <= FD_TOLERANCE, "{what}: argument {index} differs from central differences by {worst:e}");
    }
}

/// A VarBuilder holding `weight` and, if given, `bias`.
fn parameters(weight: &Tensor, bias: Option<&Tensor>) -> VarBuilder<'static> {
    let mut tensors = HashMap::from([("weight".to_string(), weight.clone())]);
    tensors.extend(bias.map(|b| ("bias".to_string(), b.clone())));
    VarBuilder::from_tensors(tensors, weight.dtype(), weight.device())
}

fn check_conv3d_gradients(input: &[usize], cfg: Conv3dConfig) {
    let weight: Vec<usize> = [cfg.out_channels, cfg.in_channels].into_iter().chain(cfg.kernel).collect();
    let mut args = vec![pattern(input, 0.0, DType::F64), pattern(&weight, 1.0, DType::F64)];
    args.extend(cfg.bias.then(|| pattern(&[cfg.out_channels], 2.0, DType::F64)));
    check_gradients(&format!("conv3d {input:?} {cfg:?}"), &args, |a| {
        Conv3d::new(parameters(&a[1], a.get(2)), &cfg)?.forward(&a[0])
    });
}

fn check_conv2d_gradients(input: &[usize], cfg: Conv2dConfig) {
    let weight: Vec<usize> = [cfg.out_channels, cfg.in_channels].into_iter().chain(cfg.kernel).collect();
    let mut args = vec![pattern(input, 0.0, DType::F64), pattern(&weight, 1.0, DType::F64)];
    args.extend(cfg.bias.then(|| pattern(&[cfg.out_channels], 2.0, DType::F64)));
    check_gradients(&format!("conv2d {input:?} {cfg:?}"), &args, |a| {
        Conv2d::new(parameters(&a[1], a.get(2)), &cfg)?.forward(&a[0])
    });
}

/// Depth 5, height 6 and width 7: every parity, so strided axes round differently.
const ODD_VOLUME: [usize; 5] = [2, 2, 5, 6, 7];

const fn conv3d(kernel: [usize; 3], padding: [usize; 3], stride: [usize; 3]) -> Conv3dConfig {
    Conv3dConfig { in_channels: 2, out_channels: 3, kernel, padding, stride, bias: true }
}

#[test]
fn conv3d_gradients_stride_1_padding_1() {
    check_conv3d_gradients(&ODD_VOLUME, conv3d([3; 3], [1; 3], [1; 3]));
}

#[test]
fn conv3d_gradients_stride_1_padding_0() {
    check_conv3d_gradients(&ODD_VOLUME, conv3d([3; 3], [0; 3], [1; 3]));
}

#[test]
fn conv3d_gradients_stride_2_padding_1() {
    check_conv3d_gradients(&ODD_VOLUME, conv3d([3; 3], [1; 3], [2; 3]));
}

#[test]
fn conv3d_gradients_stride_2_equal_parity() {
    // Height 7 and width 5 leave the same tail: conv2d pads and strides by itself.
    check_conv3d_gradients(&[2, 2, 4, 7, 5], conv3d([3; 3], [1; 3], [2; 3]));
}

#[test]
fn conv3d_gradients_stride_2_padding_0() {
    // Height 6 and width 7 read 5 positions each: one crop, one exact fit.
    check_conv3d_gradients(&ODD_VOLUME, conv3d([3; 3], [0; 3], [2; 3]));
}

#[test]
fn conv3d_gradients_flat_kernel() {
    check_conv3d_gradients(&ODD_VOLUME, conv3d([1, 3, 3], [0, 1, 1], [1; 3]));
    check_conv3d_gradients(&ODD_VOLUME, conv3d([1, 3, 3], [0, 1, 1], [1, 2, 2]));
}

#[test]
fn conv3d_gradients_uneven_kernel_without_bias() {
    let cfg = Conv3dConfig { bias: false, ..conv3d([2, 3, 1], [1, 0, 1], [2, 1, 1]) };
    check_conv3d_gradients(&[1, 2, 6, 5, 4], cfg);
}

#[test]
fn conv2d_gradients() {
    let cfg =
        |kernel, padding, stride| Conv2dConfig { in_channels: 2, out_channels: 3, kernel, padding, stride, bias: true };
    for stride in [1, 2] {
        check_conv2d_gradients(&[2, 2, 6, 7], cfg([3, 3], [1, 1], [stride; 2]));
        check_conv2d_gradients(&[2, 2, 6, 7], cfg([3, 2], [0, 1], [stride; 2]));
    }
    // Square stride-1 kernels take the input gradient as a flipped-kernel conv2d (`nn::conv_grad`).
    check_conv2d_gradients(&[2, 2, 6, 7], cfg([5, 5], [2, 2], [1, 1]));
    check_conv2d_gradients(&[2, 2, 6, 7], cfg([5, 5], [1, 1], [1, 1]));
    check_conv2d_gradients(&[2, 2, 6, 7], cfg([1, 1], [0, 0], [1, 1]));
}

#[test]
fn upsample_gradients_add_up() {
    // The input feeds two upsamplings, so a backward that assigns instead of adding shows.
    for shape in [[2, 2, 3, 4].as_slice(), &[1, 2, 2, 3, 4]] {
        check_gradients(&format!("upsample {shape:?}"), &[pattern(shape, 0.0, DType::F64)], |a| {
            upsample_nearest(&a[0], FACTOR)? + upsample_nearest(&(&a[0] * 3.0)?, FACTOR)?
        });
    }
}

#[test]
fn avg_pool_gradients() {
    for shape in [[2, 2, 4, 5].as_slice(), &[1, 2, 5, 4, 7]] {
        check_gradients(&format!("avg_pool {shape:?}"), &[pattern(shape, 0.0, DType::F64)], |a| {
            avg_pool(&a[0], FACTOR)? + avg_pool(&(&a[0] * 3.0)?, FACTOR)?
        });
    }
}

// ---------------------------------------------------------------------------------------------
// PyTorch

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(REFERENCE, &Device::Cpu).expect("tests/reference/conv_reference.safetensors")
}

fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

fn assert_close(what: &str, actual: &Tensor, expected: &Tensor) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    let error = max_abs(&(actual - expected).unwrap()) / max_abs(expected);
    println!("{what}: relative error {error:.1e}");
    assert!(error <= F32_TOLERANCE, "{what}: relative error {error:e} > {F32_TOLERANCE:e}");
}

/// Rebuilds reference case `name` with `build`, loads its parameters from the file by name (so a
/// name that differs from PyTorch's fails), and compares output and every gradient.
fn check_against_reference<M: Module>(name: &str, build: impl FnOnce(VarBuilder) -> Result<M>) {
    let reference = reference();
    let get = |key: &str| reference.get(key).unwrap_or_else(|| panic!("{key} is not in the reference file"));
    let mut varmap = VarMap::new();
    let block = build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu).pp(name)).unwrap();
    varmap.load(REFERENCE).unwrap();
    let input = Var::from_tensor(get(&format!("{name}.input"))).unwrap();
    let output = block.forward(&input).unwrap();
    assert_close(&format!("{name}.output"), &output, get(&format!("{name}.output")));

    let grads = (output * get(&format!("{name}.probe"))).unwrap().sum_all().unwrap().backward().unwrap();
    let params = varmap.data().lock().unwrap().clone();
    let mut compared = BTreeSet::new();
    for (key, var) in params.into_iter().chain([(format!("{name}.input"), input)]) {
        let actual = grads.get(&var).unwrap_or_else(|| panic!("{key} received no gradient"));
        assert_close(&format!("grad.{key}"), actual, get(&format!("grad.{key}")));
        compared.insert(format!("grad.{key}"));
    }
    let expected: BTreeSet<_> = reference.keys().filter(|k| k.starts_with(&format!("grad.{name}."))).cloned().collect();
    assert_eq!(compared, expected, "{name}: the Rust layer and the PyTorch one differ in parameters");
}

/// A stateless function as a [`Module`], for the resampling cases.
struct Function(fn(&Tensor) -> Result<Tensor>);

impl Module for Function {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        (self.0)(x)
    }
}

fn conv3d_torch(
    in_channels: usize,
    out_channels: usize,
    kernel: [usize; 3],
    padding: [usize; 3],
    stride: [usize; 3],
    bias: bool,
) -> impl FnOnce(VarBuilder) -> Result<Conv3d> {
    move |vb| Conv3d::new(vb, &Conv3dConfig { in_channels, out_channels, kernel, padding, stride, bias })
}

#[test]
fn conv3d_matches_torch() {
    check_against_reference("conv3d_k3", conv3d_torch(4, 5, [3; 3], [1; 3], [1; 3], true));
}

#[test]
fn conv3d_stride_2_matches_torch() {
    check_against_reference("conv3d_k3_s2", conv3d_torch(4, 5, [3; 3], [1; 3], [2; 3], true));
}

#[test]
fn conv3d_flat_kernel_matches_torch() {
    check_against_reference("conv3d_k133_s122", conv3d_torch(3, 4, [1, 3, 3], [0, 1, 1], [1, 2, 2], true));
}

#[test]
fn conv3d_uneven_kernel_matches_torch() {
    check_against_reference("conv3d_k323_p010_s2", conv3d_torch(3, 2, [3, 2, 3], [0, 1, 0], [2; 3], false));
}

#[test]
fn conv2d_matches_torch() {
    for (name, stride) in [("conv2d_k3", 1), ("conv2d_k3_s2", 2)] {
        check_against_reference(name, |vb| Conv::new(vb, SpatialDims::Two, 4, 6, 3, 1, stride));
    }
}

#[test]
fn resampling_matches_torch() {
    check_against_reference("upsample2d", |_| Ok(Function(|x| upsample_nearest(x, FACTOR))));
    check_against_reference("upsample3d", |_| Ok(Function(|x| upsample_nearest(x, FACTOR))));
    check_against_reference("avg_pool2d", |_| Ok(Function(|x| avg_pool(x, FACTOR))));
    check_against_reference("avg_pool3d", |_| Ok(Function(|x| avg_pool(x, FACTOR))));
}

// ---------------------------------------------------------------------------------------------
// Shapes and refusals

fn new_conv(dims: SpatialDims, kernel: usize, padding: usize, stride: usize) -> Result<Conv> {
    let varmap = VarMap::new();
    Conv::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), dims, 4, 8, kernel, padding, stride)
}

fn output_dims(conv: &Conv, input: &[usize]) -> Vec<usize> {
    conv.forward(&pattern(input, 0.0, DType::F32)).unwrap().dims().to_vec()
}

#[test]
fn dims_generic_conv_shapes() {
    let (two, three) = (SpatialDims::Two, SpatialDims::Three);
    assert_eq!((two.count(), three.count()), (2, 3));
    let same = |dims| new_conv(dims, 3, 1, 1).unwrap();
    let down = |dims| new_conv(dims, 3, 1, 2).unwrap();
    assert_eq!(output_dims(&same(two), &[2, 4, 16, 12]), [2, 8, 16, 12]);
    assert_eq!(output_dims(&down(two), &[2, 4, 16, 12]), [2, 8, 8, 6]);
    assert_eq!(output_dims(&down(two), &[2, 4, 15, 12]), [2, 8, 8, 6]);
    assert_eq!(output_dims(&same(three), &[2, 4, 6, 16, 12]), [2, 8, 6, 16, 12]);
    assert_eq!(output_dims(&down(three), &[2, 4, 6, 16, 12]), [2, 8, 3, 8, 6]);
    assert_eq!(output_dims(&down(three), &[1, 4, 5, 9, 12]), [1, 8, 3, 5, 6]);
    assert_eq!(output_dims(&new_conv(three, 1, 0, 1).unwrap(), &[1, 4, 3, 5, 7]), [1, 8, 3, 5, 7]);
    let Conv::D3(conv) = same(three) else { panic!("3D dims gave a 2D conv") };
    assert_eq!(conv.weight().dims(), [8, 4, 3, 3, 3]);
    assert_eq!(conv.bias().map(Tensor::dims), Some([8].as_slice()));
}

#[test]
fn resampling_shapes() {
    for shape in [[2, 3, 4, 6].as_slice(), &[1, 3, 2, 4, 6]] {
        let x = pattern(shape, 0.0, DType::F32);
        let up = upsample_nearest(&x, FACTOR).unwrap();
        let expected: Vec<usize> = shape.iter().enumerate().map(|(i, &n)| if i < 2 { n } else { n * FACTOR }).collect();
        assert_eq!(up.dims(), expected);
        let round_trip = avg_pool(&up, FACTOR).unwrap();
        let error = max_abs(&(round_trip - &x).unwrap());
        assert!(error <= f32::EPSILON, "pooling an upsampled tensor gives it back, up to rounding: {error:e}");
    }
    assert_eq!(avg_pool(&pattern(&[1, 1, 5, 7], 0.0, DType::F32), FACTOR).unwrap().dims(), [1, 1, 2, 3]);
}

/// With one depth plane and depth kernel 1, Conv3d computes exactly what Conv2d does.
#[test]
fn conv3d_on_one_plane_is_conv2d() {
    let (weight, bias) = (pattern(&[3, 2, 3, 2], 1.0, DType::F32), pattern(&[3], 2.0, DType::F32));
    let input = pattern(&[2, 2, 7, 6], 0.0, DType::F32);
    let flat =
        Conv2dConfig { in_channels: 2, out_channels: 3, kernel: [3, 2], padding: [1, 0], stride: [2; 2], bias: true };
    let deep =
        Conv3dConfig { kernel: [1, 3, 2], padding: [0, 1, 0], stride: [1, 2, 2], ..conv3d([1; 3], [0; 3], [1; 3]) };
    let planar = Conv2d::new(parameters(&weight, Some(&bias)), &flat).unwrap().forward(&input).unwrap();
    let volume = Conv3d::new(parameters(&weight.unsqueeze(2).unwrap(), Some(&bias)), &deep).unwrap();
    let volumetric = volume.forward(&input.unsqueeze(2).unwrap()).unwrap().squeeze(2).unwrap();
    assert_eq!(max_abs(&(planar - volumetric).unwrap()), 0.0);
}

#[test]
fn refuses_bad_configurations() {
    let vb = || parameters(&pattern(&[3, 2, 3, 3, 3], 0.0, DType::F32), Some(&pattern(&[3], 0.0, DType::F32)));
    let base = conv3d([3; 3], [1; 3], [1; 3]);
    let unequal = Conv3d::new(vb(), &Conv3dConfig { stride: [1, 2, 1], ..base }).unwrap_err().to_string();
    assert!(unequal.contains("height and width strides must be equal"), "{unequal}");
    let zero = Conv3d::new(vb(), &Conv3dConfig { stride: [0; 3], ..base }).unwrap_err().to_string();
    assert!(zero.contains("must be positive"), "{zero}");
    let conv = Conv3d::new(vb(), &base).unwrap();
    let channels = conv.forward(&pattern(&[1, 4, 3, 3, 3], 0.0, DType::F32)).unwrap_err().to_string();
    assert!(channels.contains("input has 4 channels, the layer expects 2"), "{channels}");
    let valid = Conv3d::new(vb(), &Conv3dConfig { padding: [0; 3], ..base }).unwrap();
    let short = valid.forward(&pattern(&[1, 2, 2, 5, 5], 0.0, DType::F32)).unwrap_err().to_string();
    assert!(short.contains("exceeds the padded input length 2"), "{short}");
    assert!(upsample_nearest(&pattern(&[2, 3, 4], 0.0, DType::F32), FACTOR).is_err());
    assert!(avg_pool(&pattern(&[1, 1, 4, 4], 0.0, DType::F32), 0).is_err());
    assert!(avg_pool(&pattern(&[1, 1, 1, 4], 0.0, DType::F32), FACTOR).is_err());
}

// ---------------------------------------------------------------------------------------------
// Timing

/// Repetitions of the timing; the median is reported.
const TIMING_RUNS: usize = 11;

/// Median seconds of forward and of forward + backward (input and weight gradients).
fn time_conv3d(input: &[usize], cfg: &Conv3dConfig) -> (f64, f64) {
    let varmap = VarMap::new();
    let conv = Conv3d::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), cfg).unwrap();
    let x = Var::from_tensor(&pattern(input, 0.0, DType::F32)).unwrap();
    let probe = pattern(conv.forward(&x).unwrap().dims(), 0.3, DType::F32);
    let median = |mut runs: Vec<f64>| {
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    };
    let (mut forward, mut both) = (Vec::new(), Vec::new());
    for _ in 0..TIMING_RUNS {
        let start = Instant::now();
        let y = conv.forward(&x).unwrap();
        forward.push(start.elapsed().as_secs_f64());
        let grads = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_some() && grads.get(conv.weight()).is_some());
        both.push(start.elapsed().as_secs_f64());
    }
    (median(forward), median(both))
}

/// `cargo test --release -p medgen-stdlib --test conv -- --ignored --nocapture`
#[test]
#[ignore = "timing; run in release with --nocapture"]
fn timing_conv3d_forward_backward() {
    let input = [1, 32, 16, 32, 32];
    for stride in [1, 2] {
        let cfg = Conv3dConfig {
            in_channels: 32,
            out_channels: 32,
            kernel: [3; 3],
            padding: [1; 3],
            stride: [stride; 3],
            bias: true,
        };
        let (forward, both) = time_conv3d(&input, &cfg);
        println!(
            "conv3d {input:?} 3x3x3 32->32 stride {stride}: forward {:.1} ms, forward + backward {:.1} ms",
            forward * 1e3,
            both * 1e3
        );
    }
}
