//! PSNR, SSIM and MS-SSIM of `medgen_stdlib::metrics::image` against MONAI 1.6.1 (`PSNRMetric`,
//! `SSIMMetric`, `compute_ms_ssim`, 2D SSIM averaged over the slices of a volume) to 1e-5, and
//! against scikit-image in float64 far tighter; plus invariants (SSIM(x, x) = MS-SSIM(x, x) = 1,
//! PSNR symmetric, one MS-SSIM scale is SSIM, results independent of the thread count) and the
//! inputs each function refuses.
//!
//! The reference values in `tests/reference/metrics_image_reference.json` were made by
//! `tests/reference/metrics_image_reference.py` (torch 2.15, MONAI 1.6.1, scikit-image 0.26, CPU),
//! which documents what the file holds; these tests never run Python. To regenerate:
//!
//! ```text
//! python3 stdlib/tests/reference/metrics_image_reference.py
//! ```
//!
//! The heart of it, per case (`x`, `y` of shape [1, 1, *shape], drawn by `image` on both sides):
//!
//! ```text
//! PSNRMetric(max_val=data_range)(x, y)
//! SSIMMetric(spatial_dims=dims, data_range=data_range)(x, y)
//! compute_ms_ssim(x, y, spatial_dims=dims, data_range=data_range, weights=w)  # w: first S of the 5, / their sum
//! structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range)
//! ```

use std::sync::OnceLock;

use medgen_stdlib::metrics::image::{
    mean_over_slices, ms_ssim, ms_ssim_max_scales, ms_ssim_weights, psnr, ssim, Image, ImageMetricError, SsimConfig,
    MS_SSIM_WEIGHTS,
};
use serde_json::Value;

/// Largest absolute difference allowed against MONAI, which computes in float32.
const MONAI_TOLERANCE: f64 = 1e-5;

/// Largest absolute difference allowed against scikit-image, which computes in float64 like
/// medgen: only the order of summation differs.
const SKIMAGE_TOLERANCE: f64 = 1e-10;

const SEED_X: u64 = 1000;
const SEED_Y: u64 = 2000;

fn reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| serde_json::from_str(include_str!("reference/metrics_image_reference.json")).unwrap())
}

/// A float of the reference, written as Python's repr in a string.
fn float(v: &Value) -> f64 {
    v.as_str().expect("floats are stored as strings").parse().unwrap()
}

/// n uniforms in [0, 1) with 24 bits each, SplitMix64 from `seed` (as in the Python script).
fn splitmix64(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f64 / (1u64 << 24) as f64
        })
        .collect()
}

/// The pair (x, y) of a case, row-major: a smooth pattern plus noise, and `x` plus more noise
/// and a slow ripple along the first axis (the Python script's `image`).
fn image(shape: &[usize], seed_x: u64, seed_y: u64) -> (Vec<f32>, Vec<f32>) {
    let n: usize = shape.iter().product();
    let (ux, uy) = (splitmix64(seed_x, n), splitmix64(seed_y, n));
    let freqs = &[0.21, 0.17, 0.13][3 - shape.len()..];
    let mut x = Vec::with_capacity(n);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let mut rest = i;
        let mut coords = vec![0usize; shape.len()];
        for (c, &side) in coords.iter_mut().zip(shape).rev() {
            *c = rest % side;
            rest /= side;
        }
        let phase = freqs.iter().zip(&coords).fold(0.0, |acc, (f, &c)| acc + f * c as f64);
        let total: usize = coords.iter().sum();
        let v = 0.5 + 0.3 * phase.sin() * (0.05 * total as f64).cos() + 0.15 * (ux[i] - 0.5);
        x.push(v as f32);
        y.push((v + 0.1 * (uy[i] - 0.5) + 0.05 * (0.3 * coords[0] as f64).sin()) as f32);
    }
    (x, y)
}

struct Case {
    name: String,
    shape: Vec<usize>,
    data_range: f64,
    x: Vec<f32>,
    y: Vec<f32>,
    expected: &'static Value,
}

impl Case {
    fn images(&self) -> (Image<'_>, Image<'_>) {
        (Image::new(&self.x, &self.shape).unwrap(), Image::new(&self.y, &self.shape).unwrap())
    }

    fn config(&self) -> SsimConfig {
        SsimConfig { data_range: self.data_range, ..SsimConfig::default() }
    }
}

fn cases() -> Vec<Case> {
    let cases = reference()["cases"].as_array().unwrap();
    cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let shape: Vec<usize> =
                c["shape"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap() as usize).collect();
            let data_range = float(&c["data_range"]);
            let (x, y) = image(&shape, SEED_X + i as u64, SEED_Y + i as u64);
            let scale = |v: Vec<f32>| v.into_iter().map(|v| v * data_range as f32).collect();
            Case {
                name: c["name"].as_str().unwrap().to_string(),
                shape,
                data_range,
                x: scale(x),
                y: scale(y),
                expected: c,
            }
        })
        .collect()
}

/// Asserts `|actual − expected| ≤ tolerance` and returns the difference.
fn close(what: &str, actual: f64, expected: f64, tolerance: f64) -> f64 {
    let diff = (actual - expected).abs();
    assert!(diff <= tolerance, "{what}: {actual} against {expected} (difference {diff:e} > {tolerance:e})");
    diff
}

#[test]
fn psnr_matches_monai_and_scikit_image() {
    for case in cases() {
        let (x, y) = case.images();
        let value = psnr(x, y, case.data_range).unwrap();
        close(&format!("{} psnr vs MONAI", case.name), value, float(&case.expected["psnr"]), MONAI_TOLERANCE);
        let skimage = float(&case.expected["skimage_psnr"]);
        close(&format!("{} psnr vs scikit-image", case.name), value, skimage, SKIMAGE_TOLERANCE);
    }
}

#[test]
fn ssim_matches_monai_and_scikit_image() {
    for case in cases() {
        let (x, y) = case.images();
        let value = ssim(x, y, &case.config()).unwrap();
        close(&format!("{} ssim vs MONAI", case.name), value, float(&case.expected["ssim"]), MONAI_TOLERANCE);
        let skimage = float(&case.expected["skimage_ssim"]);
        close(&format!("{} ssim vs scikit-image", case.name), value, skimage, SKIMAGE_TOLERANCE);
    }
}

#[test]
fn ms_ssim_matches_monai_with_the_same_weights() {
    let mut checked = Vec::new();
    for case in cases() {
        let (x, y) = case.images();
        for (scales, expected) in case.expected["ms_ssim"].as_object().unwrap() {
            let scales: usize = scales.parse().unwrap();
            let value = ms_ssim(x, y, &case.config(), scales).unwrap();
            close(&format!("{} ms_ssim with {scales} scales", case.name), value, float(expected), MONAI_TOLERANCE);
            checked.push((case.shape.len(), scales));
        }
    }
    // Every scale count, in 2D, and fewer scales in 3D.
    for scales in 1..=5 {
        assert!(checked.contains(&(2, scales)), "no 2D case with {scales} scales");
    }
    assert!(checked.iter().any(|&(dims, _)| dims == 3), "no 3D case");
}

#[test]
fn slice_means_match_monai_2d_ssim_over_slices() {
    let mut checked = 0;
    for case in cases().into_iter().filter(|c| c.shape.len() == 3) {
        let (x, y) = case.images();
        let cfg = case.config();
        for (axis, expected) in case.expected["ssim_slices"].as_object().unwrap() {
            let axis: usize = axis.parse().unwrap();
            let value = mean_over_slices(x, y, axis, |a, b| ssim(a, b, &cfg)).unwrap();
            close(
                &format!("{} ssim over slices along axis {axis}", case.name),
                value,
                float(expected),
                MONAI_TOLERANCE,
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}

#[test]
fn the_fixture_uses_the_standard_weights() {
    let stored: Vec<f64> = reference()["ms_ssim_weights"].as_array().unwrap().iter().map(float).collect();
    assert_eq!(stored, MS_SSIM_WEIGHTS);
}

#[test]
fn fewer_scales_renormalise_the_first_weights() {
    assert_eq!(ms_ssim_weights(5).unwrap(), MS_SSIM_WEIGHTS);
    for scales in 1..=4 {
        let weights = ms_ssim_weights(scales).unwrap();
        assert_eq!(weights.len(), scales);
        assert!((weights.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        let ratio = weights[0] / MS_SSIM_WEIGHTS[0];
        for (w, standard) in weights.iter().zip(MS_SSIM_WEIGHTS) {
            assert!((w / standard - ratio).abs() < 1e-12, "{scales} scales: weights not proportional");
        }
    }
    assert_eq!(ms_ssim_weights(1).unwrap(), [1.0]);
}

#[test]
fn an_image_is_identical_to_itself() {
    let cfg = SsimConfig::default();
    for shape in [vec![48, 52], vec![24, 26, 30]] {
        let (x, _) = image(&shape, 7, 8);
        let x = Image::new(&x, &shape).unwrap();
        assert!((ssim(x, x, &cfg).unwrap() - 1.0).abs() < 1e-12, "SSIM(x, x) of {shape:?}");
        let scales = ms_ssim_max_scales(&shape, cfg.window);
        assert!(scales >= 2);
        assert!((ms_ssim(x, x, &cfg, scales).unwrap() - 1.0).abs() < 1e-12, "MS-SSIM(x, x) of {shape:?}");
        assert_eq!(psnr(x, x, 1.0).unwrap(), f64::INFINITY);
    }
}

#[test]
fn psnr_and_ssim_are_symmetric() {
    let cfg = SsimConfig::default();
    let shape = [40, 44];
    let (a, b) = image(&shape, 3, 4);
    let (a, b) = (Image::new(&a, &shape).unwrap(), Image::new(&b, &shape).unwrap());
    assert_eq!(psnr(a, b, 1.0).unwrap(), psnr(b, a, 1.0).unwrap());
    assert!((psnr(a, b, 2.0).unwrap() - psnr(a, b, 1.0).unwrap() - 20.0 * 2f64.log10()).abs() < 1e-12);
    assert!((ssim(a, b, &cfg).unwrap() - ssim(b, a, &cfg).unwrap()).abs() < 1e-14);
    assert!((ms_ssim(a, b, &cfg, 2).unwrap() - ms_ssim(b, a, &cfg, 2).unwrap()).abs() < 1e-14);
}

#[test]
fn one_scale_of_ms_ssim_is_ssim() {
    let cfg = SsimConfig::default();
    let shape = [20, 30, 25];
    let (a, b) = image(&shape, 5, 6);
    let (a, b) = (Image::new(&a, &shape).unwrap(), Image::new(&b, &shape).unwrap());
    assert_eq!(ms_ssim(a, b, &cfg, 1).unwrap(), ssim(a, b, &cfg).unwrap());
}

/// A volume deep enough that its output slices are split into several parallel runs, each
/// re-filtering the window's halo: the result must not depend on where the runs start.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let cfg = SsimConfig::default();
    let shape = [60, 24, 22];
    let (a, b) = image(&shape, 9, 10);
    let (a, b) = (Image::new(&a, &shape).unwrap(), Image::new(&b, &shape).unwrap());
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| [ssim(a, b, &cfg).unwrap(), ms_ssim(a, b, &cfg, 2).unwrap(), psnr(a, b, 1.0).unwrap()])
    };
    let single = run(1);
    assert_eq!(run(3), single);
    assert_eq!(run(8), single);
}

#[test]
fn max_scales_follow_the_pooled_size() {
    let max = |side: usize| ms_ssim_max_scales(&[side, 400], 11);
    assert_eq!(max(10), 0);
    assert_eq!(max(11), 1);
    assert_eq!(max(21), 1);
    assert_eq!(max(22), 2);
    assert_eq!(max(87), 3);
    assert_eq!(max(88), 4);
    assert_eq!(max(160), 4);
    assert_eq!(max(175), 4);
    assert_eq!(max(176), 5);
    assert_eq!(ms_ssim_max_scales(&[160, 256, 256], 11), 4);
}

#[test]
fn images_too_small_for_the_scales_are_refused() {
    let cfg = SsimConfig::default();
    let shape = [43, 60];
    let (a, b) = image(&shape, 1, 2);
    let (a, b) = (Image::new(&a, &shape).unwrap(), Image::new(&b, &shape).unwrap());
    assert!(ms_ssim(a, b, &cfg, 2).is_ok());
    let err = ms_ssim(a, b, &cfg, 3).unwrap_err();
    assert_eq!(err, ImageMetricError::TooSmall { shape: vec![43, 60], window: 11, scales: 3 });
    assert_eq!(
        err.to_string(),
        "MS-SSIM with 3 scales needs every side to be at least 44 pixels (the image is halved 2 times and the \
         coarsest scale must still hold the 11-pixel window), but the image has shape 43x60: use at most 2 scales"
    );
    assert_eq!(ms_ssim(a, b, &cfg, 0).unwrap_err(), ImageMetricError::Scales { scales: 0 });
    assert_eq!(ms_ssim(a, b, &cfg, 6).unwrap_err(), ImageMetricError::Scales { scales: 6 });

    let tiny = [10, 30];
    let (c, d) = image(&tiny, 1, 2);
    let (c, d) = (Image::new(&c, &tiny).unwrap(), Image::new(&d, &tiny).unwrap());
    let err = ssim(c, d, &cfg).unwrap_err();
    assert_eq!(err, ImageMetricError::TooSmall { shape: vec![10, 30], window: 11, scales: 1 });
    assert!(err.to_string().contains("every side must be at least 11 pixels"), "{err}");
    assert!(ms_ssim(c, d, &cfg, 2).unwrap_err().to_string().ends_with("not even SSIM's 11-pixel window fits"));
    assert!(ssim(c, d, &SsimConfig { window: 7, ..cfg }).is_ok());
}

#[test]
fn mismatched_or_malformed_images_are_refused() {
    let cfg = SsimConfig::default();
    let data = vec![0.5f32; 24 * 24];
    let square = Image::new(&data, &[24, 24]).unwrap();
    let wide = Image::new(&data, &[12, 48]).unwrap();
    let mismatch = ImageMetricError::Mismatch { x: vec![24, 24], y: vec![12, 48] };
    assert_eq!(psnr(square, wide, 1.0).unwrap_err(), mismatch);
    assert_eq!(ssim(square, wide, &cfg).unwrap_err(), mismatch);
    assert_eq!(ms_ssim(square, wide, &cfg, 1).unwrap_err(), mismatch);
    assert!(mismatch.to_string().starts_with("images of shapes 24x24 and 12x48 cannot be compared"));

    assert_eq!(Image::new(&data, &[24, 23]).unwrap_err(), ImageMetricError::Length { shape: vec![24, 23], len: 576 });
    assert_eq!(Image::new(&data, &[576]).unwrap_err(), ImageMetricError::Shape { shape: vec![576] });
    assert_eq!(Image::new(&data, &[1, 1, 24, 24]).unwrap_err(), ImageMetricError::Shape { shape: vec![1, 1, 24, 24] });
    assert_eq!(Image::new(&[], &[0, 5]).unwrap_err(), ImageMetricError::Shape { shape: vec![0, 5] });

    let bad_range = ImageMetricError::Parameter { name: "data_range", value: 0.0 };
    assert_eq!(psnr(square, square, 0.0).unwrap_err(), bad_range);
    assert_eq!(ssim(square, square, &SsimConfig { data_range: 0.0, ..cfg }).unwrap_err(), bad_range);
    let bad_sigma = SsimConfig { sigma: f64::NAN, ..cfg };
    assert!(matches!(ssim(square, square, &bad_sigma), Err(ImageMetricError::Parameter { name: "sigma", .. })));
    assert_eq!(
        ssim(square, square, &SsimConfig { window: 0, ..cfg }).unwrap_err(),
        ImageMetricError::Parameter { name: "window", value: 0.0 }
    );
}

#[test]
fn slices_come_from_volumes_along_existing_axes() {
    let cfg = SsimConfig::default();
    let data = vec![0.25f32; 12 * 12 * 12];
    let volume = Image::new(&data, &[12, 12, 12]).unwrap();
    let metric = |a: Image<'_>, b: Image<'_>| ssim(a, b, &cfg);
    assert_eq!(mean_over_slices(volume, volume, 2, metric).unwrap(), 1.0);
    let err = mean_over_slices(volume, volume, 3, metric).unwrap_err();
    assert_eq!(err, ImageMetricError::Axis { axis: 3, shape: vec![12, 12, 12] });
    let plane = Image::new(&data[..144], &[12, 12]).unwrap();
    assert_eq!(
        mean_over_slices(plane, plane, 0, metric).unwrap_err(),
        ImageMetricError::Axis { axis: 0, shape: vec![12, 12] }
    );
    let thin = Image::new(&data, &[12, 12, 12]).unwrap();
    let too_small = mean_over_slices(thin, thin, 0, |a, b| ms_ssim(a, b, &cfg, 2)).unwrap_err();
    assert_eq!(too_small, ImageMetricError::TooSmall { shape: vec![12, 12], window: 11, scales: 2 });
}

/// Slices along each axis hold the voxels of that index: a volume whose value is its index along
/// the axis gives constant slices, so each slice's PSNR against zeros is known in closed form.
#[test]
fn slices_hold_the_right_voxels() {
    let shape = [3usize, 4, 5];
    for axis in 0..3 {
        let data: Vec<f32> = (0..60usize)
            .map(|i| {
                let coords = [i / 20, (i / 5) % 4, i % 5];
                (coords[axis] + 1) as f32
            })
            .collect();
        let zeros = vec![0f32; 60];
        let (v, z) = (Image::new(&data, &shape).unwrap(), Image::new(&zeros, &shape).unwrap());
        let mean = mean_over_slices(v, z, axis, |a, b| psnr(a, b, 1.0)).unwrap();
        let expected = (1..=shape[axis]).map(|k| -20.0 * (k as f64).log10()).sum::<f64>() / shape[axis] as f64;
        assert!((mean - expected).abs() < 1e-12, "axis {axis}: {mean} against {expected}");
    }
}

/// An inverted image has negative contrast sensitivity at every scale: SSIM is negative, and
/// MS-SSIM clamps each scale's term at 0 (MONAI's `relu`), so it is exactly 0.
#[test]
fn negative_scale_terms_are_clamped_to_zero() {
    let cfg = SsimConfig::default();
    let shape = [48, 48];
    let (x, _) = image(&shape, 11, 12);
    let inverted: Vec<f32> = x.iter().map(|v| 1.0 - v).collect();
    let (x, inverted) = (Image::new(&x, &shape).unwrap(), Image::new(&inverted, &shape).unwrap());
    assert!(ssim(x, inverted, &cfg).unwrap() < -0.5);
    assert_eq!(ms_ssim(x, inverted, &cfg, 3).unwrap(), 0.0);
}
