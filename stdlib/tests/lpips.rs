//! LPIPS (`medgen_stdlib::metrics::lpips`) against the `lpips` package 0.1.4,
//! `lpips.LPIPS(net='alex', version='0.1')`: per-layer values and distances of image pairs (RGB
//! 64×64, a grey 48×79 pair repeated to three channels, a non-square RGB pair in [0, 1] with
//! `normalize=True`) and 3D LPIPS per slice, per axis and combined; chunked 3D LPIPS equal to slice
//! by slice; LPIPS(x, x) = 0; the weights file's names against lpips' state_dict; the errors for
//! missing or mis-shaped tensors and for inputs the network cannot take.
//!
//! The reference values in `tests/reference/lpips_reference.json` were made by
//! `tests/reference/lpips_reference.py` (torch 2.15, lpips 0.1.4, CPU, f32), which documents the
//! closed-form weights and images; these tests never run Python. Each test writes the same
//! weights into a safetensors file and loads it with `Lpips::load`, as users load the real ones.
//! The heart of the script:
//!
//! ```text
//! model = lpips.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=True)
//! state = model.state_dict(); state[name].copy_(formula(k, name, shape))   # for every tensor
//! total, layers = model(a, b, retPerLayer=True, normalize=value_range == "unit")
//! model(v[:, h, :] slices ...)                                            # 3D, per axis
//! ```

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::TempDir;
use medgen_stdlib::data::volume::{Spacing, Volume};
use medgen_stdlib::metrics::lpips::{InputRange, Lpips, SliceAxis, VolumeLpipsConfig, WeightsErrorKind, DEFAULT_CHUNK};
use medgen_stdlib::metrics::weights::TensorProblem;
use serde::Deserialize;

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/lpips_reference.json");

/// Largest relative difference allowed against lpips, `|actual − expected| / |expected|` per value.
const TOLERANCE: f64 = 1e-5;

/// Largest relative difference between chunk sizes: each image is computed independently, so
/// only a change in Candle's kernels for another batch size could move a value.
const CHUNK_TOLERANCE: f64 = 1e-6;

#[derive(Deserialize)]
struct Reference {
    tensors: Vec<TensorEntry>,
    images: Vec<ImageCase>,
    volume: VolumeCase,
}

#[derive(Deserialize)]
struct TensorEntry {
    name: String,
    shape: Vec<usize>,
}

#[derive(Deserialize)]
struct ImageCase {
    name: String,
    shape: [usize; 4],
    range: String,
    freqs: Vec<f64>,
    phase: f64,
    stream: u64,
    per_layer: Vec<Vec<f64>>,
    distance: Vec<f64>,
}

#[derive(Deserialize)]
struct VolumeCase {
    shape: [usize; 3],
    range: String,
    freqs: Vec<f64>,
    phase: f64,
    stream: u64,
    per_slice: HashMap<String, Vec<f64>>,
    means: HashMap<String, f64>,
    combined: f64,
}

fn reference() -> Reference {
    serde_json::from_str(&std::fs::read_to_string(REFERENCE).expect(REFERENCE)).expect("lpips_reference.json")
}

fn range(name: &str) -> InputRange {
    match name {
        "signed" => InputRange::SignedUnit,
        "unit" => InputRange::Unit,
        other => panic!("unknown range {other}"),
    }
}

/// splitmix64's finaliser of `stream · 2³² + i`, top 24 bits / 2²⁴: a float in [0, 1).
fn unit(stream: u64, i: u64) -> f64 {
    let mut z = (stream << 32).wrapping_add(i).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f64 / (1u64 << 24) as f64
}

/// Parameter number `k` (in `Lpips::weight_shapes` order), as `lpips_reference.py` makes it.
fn parameter(k: u64, name: &str, shape: &[usize]) -> Tensor {
    let count = shape.iter().product::<usize>() as u64;
    let fan_in = shape.iter().skip(1).product::<usize>() as f64;
    let values: Vec<f32> = (0..count)
        .map(|i| {
            let u = unit(k, i);
            let value = if name.starts_with("lin") {
                u
            } else if name.ends_with(".bias") {
                (2.0 * u - 1.0) * 0.1
            } else {
                (2.0 * u - 1.0) * (6.0 / fan_in).sqrt()
            };
            value as f32
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn formula_weights() -> HashMap<String, Tensor> {
    Lpips::weight_shapes()
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape))| {
            let t = parameter(k as u64, &name, &shape);
            (name, t)
        })
        .collect()
}

fn write_weights(dir: &Path, tensors: &HashMap<String, Tensor>) -> PathBuf {
    let path = dir.join("lpips-alex.safetensors");
    candle_core::safetensors::save(tensors, &path).unwrap();
    path
}

fn load(dir: &TempDir, range: InputRange) -> Lpips {
    let path = write_weights(&dir.0, &formula_weights());
    Lpips::load(&path, range, &Device::Cpu).unwrap()
}

/// The pair `(a, b)` of `lpips_reference.py` for `shape`, flattened in row-major order.
fn pair(shape: &[usize], freqs: &[f64], phase: f64, stream: u64, range: InputRange) -> (Vec<f32>, Vec<f32>) {
    let count: usize = shape.iter().product();
    let mut coords = vec![0usize; shape.len()];
    let (mut a, mut b) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count as u64 {
        let mut acc = 0.0;
        for (f, &c) in freqs.iter().zip(&coords) {
            acc += f * c as f64;
        }
        let mut va = 0.6 * (acc + phase).sin() + 0.3 * (2.0 * unit(stream, i) - 1.0);
        let mut vb = 0.8 * va + 0.2 * (2.0 * unit(stream + 1, i) - 1.0);
        if range == InputRange::Unit {
            (va, vb) = ((va + 1.0) / 2.0, (vb + 1.0) / 2.0);
        }
        a.push(va as f32);
        b.push(vb as f32);
        for axis in (0..shape.len()).rev() {
            coords[axis] += 1;
            if coords[axis] < shape[axis] {
                break;
            }
            coords[axis] = 0;
        }
    }
    (a, b)
}

fn volumes(case: &VolumeCase) -> (Volume, Volume) {
    let (a, b) = pair(&case.shape, &case.freqs, case.phase, case.stream, range(&case.range));
    let spacing = Spacing::new(1.0, 1.0, 1.0);
    (Volume { shape: case.shape, spacing, data: a }, Volume { shape: case.shape, spacing, data: b })
}

/// `max |actual − expected| / |expected|` over the values.
fn relative_error(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    actual.iter().zip(expected).map(|(a, e)| (a - e).abs() / e.abs()).fold(0.0, f64::max)
}

fn assert_close(what: &str, actual: &[f64], expected: &[f64], tolerance: f64) {
    let error = relative_error(actual, expected);
    println!("{what}: relative error {error:.1e}");
    assert!(error <= tolerance, "{what}: relative error {error:e} > {tolerance:e}\n{actual:?}\n{expected:?}");
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f64::from).collect()
}

#[test]
fn weights_file_names_are_lpips_state_dict_names() {
    let expected: Vec<(String, Vec<usize>)> =
        reference().tensors.into_iter().map(|entry| (entry.name, entry.shape)).collect();
    assert_eq!(Lpips::weight_shapes(), expected);
}

#[test]
fn image_pairs_match_lpips() {
    let dir = TempDir::new("lpips-images");
    for case in reference().images {
        let range = range(&case.range);
        let model = load(&dir, range);
        let (a, b) = pair(&case.shape, &case.freqs, case.phase, case.stream, range);
        let a = Tensor::from_vec(a, case.shape.as_slice(), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(b, case.shape.as_slice(), &Device::Cpu).unwrap();
        let expected_layers: Vec<f64> = case.per_layer.concat();
        assert_close(
            &format!("{} per layer", case.name),
            &to_f64(&model.per_layer(&a, &b).unwrap()),
            &expected_layers,
            TOLERANCE,
        );
        assert_close(
            &format!("{} distance", case.name),
            &to_f64(&model.distance(&a, &b).unwrap()),
            &case.distance,
            TOLERANCE,
        );
    }
}

#[test]
fn volume_slices_match_lpips() {
    let dir = TempDir::new("lpips-volume");
    let case = reference().volume;
    let model = load(&dir, range(&case.range));
    let (a, b) = volumes(&case);
    let result = model.volume(&a, &b, &VolumeLpipsConfig::default()).unwrap();
    assert_eq!(result.axes.iter().map(|axis| axis.axis).collect::<Vec<_>>(), SliceAxis::ALL);
    for axis in &result.axes {
        let name = axis.axis.name();
        let per_slice: Vec<f64> = axis.per_slice.iter().map(|&d| f64::from(d)).collect();
        assert_close(&format!("{name} slices"), &per_slice, &case.per_slice[name], TOLERANCE);
        assert_close(&format!("{name} mean"), &[axis.mean], &[case.means[name]], TOLERANCE);
    }
    assert_close("combined", &[result.combined], &[case.combined], TOLERANCE);
}

#[test]
fn chunked_volume_lpips_equals_slice_by_slice() {
    let dir = TempDir::new("lpips-chunks");
    let case = reference().volume;
    let model = load(&dir, range(&case.range));
    let (a, b) = volumes(&case);
    let by_slice = model.volume(&a, &b, &VolumeLpipsConfig { chunk: 1, ..Default::default() }).unwrap();
    // 5 divides none of 32, 33, 34; the default exceeds two of them.
    for chunk in [5, DEFAULT_CHUNK] {
        let chunked = model.volume(&a, &b, &VolumeLpipsConfig { chunk, ..Default::default() }).unwrap();
        for (one, many) in by_slice.axes.iter().zip(&chunked.axes) {
            assert_eq!(one.axis, many.axis);
            let as_f64 = |v: &[f32]| v.iter().map(|&d| f64::from(d)).collect::<Vec<_>>();
            let what = format!("chunk {chunk}, {}", one.axis);
            assert_close(&what, &as_f64(&many.per_slice), &as_f64(&one.per_slice), CHUNK_TOLERANCE);
        }
        assert_close(&format!("chunk {chunk}, combined"), &[chunked.combined], &[by_slice.combined], CHUNK_TOLERANCE);
    }
}

#[test]
fn chosen_axes_come_in_the_order_given() {
    let dir = TempDir::new("lpips-axes");
    let case = reference().volume;
    let model = load(&dir, range(&case.range));
    let (a, b) = volumes(&case);
    let axes = vec![SliceAxis::Width, SliceAxis::Depth];
    let result = model.volume(&a, &b, &VolumeLpipsConfig { axes: axes.clone(), chunk: 16 }).unwrap();
    assert_eq!(result.axes.iter().map(|axis| axis.axis).collect::<Vec<_>>(), axes);
    assert_eq!(result.axes.iter().map(|axis| axis.per_slice.len()).collect::<Vec<_>>(), [34, 32]);
    let expected = (case.means["width"] + case.means["depth"]) / 2.0;
    assert_close("width and depth combined", &[result.combined], &[expected], TOLERANCE);
}

#[test]
fn identical_inputs_give_zero() {
    let dir = TempDir::new("lpips-zero");
    let model = load(&dir, InputRange::SignedUnit);
    let (a, _) = pair(&[3, 1, 40, 52], &[0.3, 0.0, 0.2, 0.1], 0.5, 7, InputRange::SignedUnit);
    let a = Tensor::from_vec(a, (3, 1, 40, 52), &Device::Cpu).unwrap();
    assert_eq!(to_f64(&model.per_layer(&a, &a).unwrap()), vec![0.0; 15]);
    let case = reference().volume;
    let (v, _) = volumes(&case);
    let result = model.volume(&v, &v, &VolumeLpipsConfig::default()).unwrap();
    assert_eq!(result.combined, 0.0);
    assert!(result.axes.iter().all(|axis| axis.per_slice.iter().all(|&d| d == 0.0)));
}

#[test]
fn missing_and_misshaped_tensors_are_named() {
    let dir = TempDir::new("lpips-missing");
    let mut tensors = formula_weights();
    tensors.remove("lin3.model.1.weight");
    tensors.insert("net.slice2.3.bias".into(), Tensor::zeros(191, candle_core::DType::F32, &Device::Cpu).unwrap());
    let path = write_weights(&dir.0, &tensors);
    let error = Lpips::load(&path, InputRange::SignedUnit, &Device::Cpu).unwrap_err();
    let WeightsErrorKind::Tensors(problems) = &error.kind else { panic!("expected tensor problems, got {error}") };
    assert_eq!(
        problems,
        &[
            TensorProblem::Shape { name: "net.slice2.3.bias".into(), expected: vec![192], found: vec![191] },
            TensorProblem::Missing { name: "lin3.model.1.weight".into(), expected: vec![1, 256, 1, 1] },
        ]
    );
    let message = error.to_string();
    println!("{message}");
    for needle in [path.display().to_string(), "lin3.model.1.weight".into(), "net.slice2.3.bias".into()] {
        assert!(message.contains(&needle), "{message:?} does not name {needle}");
    }
    assert!(message.contains("scripts/convert_lpips_weights.py"), "{message}");
}

#[test]
fn unreadable_file_is_named() {
    let dir = TempDir::new("lpips-unreadable");
    let path = dir.0.join("absent.safetensors");
    let error = Lpips::load(&path, InputRange::SignedUnit, &Device::Cpu).unwrap_err();
    assert!(matches!(error.kind, WeightsErrorKind::Unreadable(_)), "{error}");
    assert!(error.to_string().starts_with(&path.display().to_string()), "{error}");
}

#[test]
fn inputs_the_network_cannot_take_are_refused() {
    let dir = TempDir::new("lpips-refused");
    let model = load(&dir, InputRange::SignedUnit);
    let image = |shape: &[usize]| Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap();
    let smallest = image(&[1, 1, 31, 31]);
    assert_eq!(model.distance(&smallest, &smallest).unwrap().dims(), [1]);
    let refused = [
        (image(&[1, 1, 30, 64]), image(&[1, 1, 30, 64]), "at least 31x31"),
        (image(&[1, 2, 40, 40]), image(&[1, 2, 40, 40]), "1- or 3-channel"),
        (image(&[1, 1, 40, 40]), image(&[1, 1, 40, 41]), "one shape"),
    ];
    for (a, b, needle) in refused {
        let message = model.distance(&a, &b).unwrap_err().to_string();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }

    let spacing = Spacing::new(1.0, 1.0, 1.0);
    let thin = Volume::zeros([12, 40, 40], spacing);
    let config = |axes: Vec<SliceAxis>, chunk| VolumeLpipsConfig { axes, chunk };
    let depth_only = model.volume(&thin, &thin, &config(vec![SliceAxis::Depth], 8)).unwrap();
    assert_eq!(depth_only.axes[0].per_slice.len(), 12);
    let cases = [
        (config(vec![SliceAxis::Depth, SliceAxis::Height], 8), "along height"),
        (config(vec![], 8), "no axes"),
        (config(vec![SliceAxis::Depth, SliceAxis::Depth], 8), "twice"),
        (config(vec![SliceAxis::Depth], 0), "chunk"),
    ];
    for (config, needle) in cases {
        let message = model.volume(&thin, &thin, &config).unwrap_err().to_string();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    let other = Volume::zeros([12, 40, 41], spacing);
    let message = model.volume(&thin, &other, &VolumeLpipsConfig::default()).unwrap_err().to_string();
    assert!(message.contains("one shape"), "{message}");
}

#[test]
fn the_trunks_pooling_is_torchs_max_pool_and_passes_gradients_to_each_windows_maximum() {
    use medgen_stdlib::nn::alexnet::max_pool_3_2;
    for (height, width) in [(7, 8), (9, 9), (31, 40)] {
        let n = 2 * 3 * height * width;
        // Distinct values (a permutation of 0..n scaled), so every window has one maximum.
        let values: Vec<f32> = (0..n).map(|i| ((i * 7919) % n) as f32 / n as f32).collect();
        let x = candle_core::Var::from_vec(values, (2, 3, height, width), &Device::Cpu).unwrap();
        let pooled = max_pool_3_2(x.as_tensor()).unwrap();
        let candle = x.as_tensor().max_pool2d_with_stride(3, 2).unwrap();
        assert_eq!(pooled.dims(), candle.dims());
        assert_eq!(to_f64(&pooled), to_f64(&candle), "{height}x{width}: the values of MaxPool2d(3, 2)");
        // d sum(pool · probe) / dx: each window's probe lands on its maximum, added up where
        // windows overlap on the same maximum.
        let probe = Tensor::rand(0f32, 1f32, pooled.shape(), &Device::Cpu).unwrap();
        let grads = (&pooled * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let grad = to_f64(grads.get(x.as_tensor()).expect("a gradient"));
        let (input, probe) = (to_f64(x.as_tensor()), to_f64(&probe));
        let (rows, columns) = ((height - 3) / 2 + 1, (width - 3) / 2 + 1);
        let mut expected = vec![0.0; n];
        for plane in 0..6 {
            for r in 0..rows {
                for c in 0..columns {
                    let window = (0..9).map(|k| plane * height * width + (2 * r + k / 3) * width + 2 * c + k % 3);
                    let argmax = window.max_by(|&a, &b| input[a].total_cmp(&input[b])).unwrap();
                    expected[argmax] += probe[(plane * rows + r) * columns + c];
                }
            }
        }
        assert_close(&format!("{height}x{width} gradient"), &grad, &expected, 1e-6);
    }
}
