//! The compression models of `medgen_stdlib::nn::autoencoder` on tiny configurations (channels
//! `[8, 16]`, 2 latent channels, 16 codes, 8×8 slices and 4×8×8 volumes): latent shapes and scale
//! factors in 2D and 3D, nearest-code quantisation against a hand-made codebook, the
//! straight-through gradient, a gradient for every trainable variable, the KL term against values
//! computed by hand, and overfitting a fixed batch of two samples with AdamW. The VQ-VAE's EMA
//! codebook: its updates against MONAI's `EMAQuantizer`, its buffers kept out of the optimiser and
//! in the checkpoint, and overfitting with it. CPU only: the crate has no CUDA feature yet.
//!
//! The EMA reference values in `tests/reference/vq_ema_reference.safetensors` were made by
//! `tests/reference/vq_ema_reference.py` (torch 2.15, MONAI 1.6.1, CPU, f32), which documents what
//! the file holds; these tests never run Python. To regenerate:
//!
//! ```text
//! python3 stdlib/tests/reference/vq_ema_reference.py
//! ```
//!
//! The heart of it, for the 2D quantizer `q2` (`q3` is the same in 3D, decay 0.9, epsilon 1e-3,
//! one step):
//!
//! ```text
//! quantizer = EMAQuantizer(2, 8, 3, commitment_cost=0.25, decay=0.99, epsilon=1e-5).train()
//! for step in (1, 2):
//!     quantized, loss, indices = quantizer(torch.randn(2, 3, 3, 4))  # updates the codebook
//!     # q2.step<s>.{z, indices, quantized, loss}, then embedding.weight, ema_cluster_size, ema_w
//! ```

mod common;
use common::TempDir;
use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;
use medgen_stdlib::nn::autoencoder::{
    AutoencoderConfig, CodebookUpdate, KlVae, KlVaeConfig, Reconstruction, VqVae, VqVaeConfig, DEFAULT_COMMITMENT_BETA,
    DEFAULT_EMA_DECAY, DEFAULT_EMA_EPSILON,
};
use medgen_stdlib::nn::conv::SpatialDims;
use medgen_stdlib::train::checkpoint::{CheckpointConfig, TrainState};
use medgen_stdlib::train::guard::{Guard, GuardConfig};
use medgen_stdlib::train::loss::kl_diag_gaussian;
use medgen_stdlib::train::optim::{AdamW, AdamWConfig};
use medgen_stdlib::train::params::Params;
use medgen_stdlib::train::rng::{var_builder, Purpose, Stream, Streams};
use medgen_stdlib::train::schedule::ValHistory;

const SEED: u64 = 29;
const CODES: usize = 16;
const LATENT: usize = 2;

fn config(dims: SpatialDims) -> AutoencoderConfig {
    AutoencoderConfig {
        dims,
        in_channels: 1,
        channels: vec![8, 16],
        num_res_blocks: 1,
        latent_channels: LATENT,
        norm_groups: 4,
        norm_eps: 1e-6,
    }
}

fn kl_config(dims: SpatialDims) -> KlVaeConfig {
    KlVaeConfig { autoencoder: config(dims), reconstruction: Reconstruction::Mse, kl_weight: 1e-6 }
}

fn vq_config(dims: SpatialDims) -> VqVaeConfig {
    VqVaeConfig { reconstruction: Reconstruction::Mse, ..VqVaeConfig::new(config(dims), CODES) }
}

fn kl_vae(dims: SpatialDims) -> Result<(KlVae, VarMap)> {
    let varmap = VarMap::new();
    let vb = var_builder(&varmap, Stream::new(SEED, Purpose::Init), DType::F32, &Device::Cpu);
    Ok((KlVae::new(vb, &kl_config(dims))?, varmap))
}

fn vq_vae(dims: SpatialDims) -> Result<(VqVae, VarMap)> {
    let varmap = VarMap::new();
    let vb = var_builder(&varmap, Stream::new(SEED, Purpose::Init), DType::F32, &Device::Cpu);
    Ok((VqVae::new(vb, &vq_config(dims))?, varmap))
}

/// A fixed batch of two smooth images in `[-1, 1]`, `[2, 1, *spatial]`.
fn batch(dims: SpatialDims) -> Result<Tensor> {
    let spatial: &[usize] = match dims {
        SpatialDims::Two => &[8, 8],
        SpatialDims::Three => &[4, 8, 8],
    };
    let per_sample: usize = spatial.iter().product();
    let values: Vec<f32> = (0..2 * per_sample)
        .map(|i| {
            let (sample, position) = ((i / per_sample) as f32, i % per_sample);
            let (row, col) = ((position / 8 % 8) as f32, (position % 8) as f32);
            let depth = (position / 64) as f32;
            (0.7 * row + sample).sin() * (0.5 * col - 2.0 * sample).cos() * (1.0 - 0.2 * depth)
        })
        .collect();
    Tensor::from_vec(values, [&[2, 1], spatial].concat(), &Device::Cpu)
}

fn assert_close(actual: f32, expected: f32, tolerance: f32, what: &str) {
    assert!((actual - expected).abs() <= tolerance, "{what}: {actual} vs {expected}");
}

#[test]
fn latent_shapes_and_scale_factor_2d_and_3d() -> Result<()> {
    for (dims, image, latent) in [
        (SpatialDims::Two, vec![2, 1, 8, 8], vec![2, LATENT, 4, 4]),
        (SpatialDims::Three, vec![2, 1, 4, 8, 8], vec![2, LATENT, 2, 4, 4]),
    ] {
        let x = batch(dims)?;
        assert_eq!(x.dims(), image.as_slice());

        let (kl, _) = kl_vae(dims)?;
        assert_eq!((kl.scale_factor(), kl.latent_channels()), (2, LATENT));
        let (mean, logvar) = kl.encode(&x)?;
        assert_eq!((mean.dims(), logvar.dims()), (latent.as_slice(), latent.as_slice()));
        assert_eq!(kl.decode(&mean)?.dims(), image.as_slice());

        let (vq, _) = vq_vae(dims)?;
        assert_eq!((vq.scale_factor(), vq.latent_channels()), (2, LATENT));
        let quantized = vq.quantize(&vq.encode(&x)?)?;
        assert_eq!(quantized.latent.dims(), latent.as_slice());
        assert_eq!(quantized.indices.dims(), [&[2], &latent[2..]].concat().as_slice());
        assert_eq!(vq.decode(&quantized.latent)?.dims(), image.as_slice());
    }
    let deeper = AutoencoderConfig { channels: vec![8, 8, 16, 16], ..config(SpatialDims::Two) };
    assert_eq!(deeper.scale_factor(), 8);
    assert_eq!(AutoencoderConfig { channels: vec![8, 8, 16], ..deeper }.scale_factor(), 4);
    Ok(())
}

#[test]
fn spatial_sizes_not_divisible_by_the_scale_factor_are_refused() -> Result<()> {
    let (kl, _) = kl_vae(SpatialDims::Two)?;
    let odd = Tensor::zeros((1, 1, 8, 7), DType::F32, &Device::Cpu)?;
    assert!(kl.encode(&odd).is_err());
    Ok(())
}

/// Code `k` of the hand-made codebook: a 4×4 grid of points in the plane.
fn grid_code(k: usize) -> [f32; 2] {
    [(k % 4) as f32 - 1.5, (k / 4) as f32 - 1.5]
}

#[test]
fn quantisation_picks_the_nearest_code_and_passes_gradients_straight_through() -> Result<()> {
    let (vq, mut varmap) = vq_vae(SpatialDims::Two)?;
    assert_eq!(DEFAULT_COMMITMENT_BETA, 0.25);
    let grid: Vec<f32> = (0..CODES).flat_map(grid_code).collect();
    varmap.set_one("codebook.weight", Tensor::from_vec(grid, (CODES, LATENT), &Device::Cpu)?)?;

    // z [1, 2, 2, 3]: six latent vectors, each near (but not on) some code.
    let points: [[f32; 2]; 6] = [[-1.4, -1.6], [0.6, -0.3], [1.2, 1.1], [-0.2, 0.45], [1.6, -1.2], [-0.9, 1.3]];
    let channels_first: Vec<f32> = (0..LATENT).flat_map(|c| points.iter().map(move |p| p[c])).collect();
    let z = Var::from_tensor(&Tensor::from_vec(channels_first, (1, LATENT, 2, 3), &Device::Cpu)?)?;
    let quantized = vq.quantize(z.as_tensor())?;

    let nearest: Vec<u32> = points
        .iter()
        .map(|p| {
            let distance = |k: &usize| {
                let c = grid_code(*k);
                (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)
            };
            (0..CODES).min_by(|a, b| distance(a).total_cmp(&distance(b))).map(|k| k as u32).unwrap_or(0)
        })
        .collect();
    assert_eq!(nearest, [0, 6, 15, 9, 3, 13]);
    assert_eq!(quantized.indices.flatten_all()?.to_vec1::<u32>()?, nearest);
    let expected: Vec<f32> = (0..LATENT).flat_map(|c| nearest.iter().map(move |&k| grid_code(k as usize)[c])).collect();
    assert_eq!(quantized.latent.flatten_all()?.to_vec1::<f32>()?, expected);

    // Straight-through: d(Σ latent · probe)/dz is the probe itself.
    let probe = Tensor::arange(1f32, 13f32, &Device::Cpu)?.reshape((1, LATENT, 2, 3))?;
    let grads = (&quantized.latent * &probe)?.sum_all()?.backward()?;
    let gradient = grads.get(z.as_tensor()).expect("z has a gradient");
    assert_eq!(gradient.flatten_all()?.to_vec1::<f32>()?, probe.flatten_all()?.to_vec1::<f32>()?);

    // Through the whole model, the reconstruction term alone reaches the encoder's first conv.
    let x = batch(SpatialDims::Two)?;
    let quantized = vq.quantize(&vq.encode(&x)?)?;
    let reconstruction = Reconstruction::Mse.loss(&vq.decode(&quantized.latent)?, &x)?;
    let grads = reconstruction.backward()?;
    let params = Params::from_varmap(&varmap);
    let conv_in = params.get("encoder.conv_in.weight").expect("encoder.conv_in.weight exists");
    let norm = grads.get(conv_in.as_tensor()).expect("conv_in has a gradient").abs()?.sum_all()?.to_scalar::<f32>()?;
    assert!(norm > 0.0, "the reconstruction gradient does not reach the encoder");
    Ok(())
}

/// Every trainable variable's gradient from `total` exists and is not all zeros.
fn assert_every_variable_learns(varmap: &VarMap, total: &Tensor) -> Result<()> {
    let grads = total.backward()?;
    let params = Params::from_varmap(varmap);
    assert!(params.len() > 20, "only {} variables", params.len());
    for (name, var) in params.iter() {
        let gradient = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} has no gradient"));
        let norm = gradient.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert!(norm > 0.0, "{name} has an all-zero gradient");
    }
    Ok(())
}

#[test]
fn every_trainable_variable_gets_a_gradient() -> Result<()> {
    for dims in [SpatialDims::Two, SpatialDims::Three] {
        let x = batch(dims)?;
        let (kl, varmap) = kl_vae(dims)?;
        let latent_shape = kl.encode(&x)?.0.shape().clone();
        let noise = Stream::new(SEED, Purpose::Noise).normal(latent_shape, &Device::Cpu)?;
        assert_every_variable_learns(&varmap, &kl.loss(&x, &noise)?.total)?;

        let (vq, varmap) = vq_vae(dims)?;
        assert_every_variable_learns(&varmap, &vq.loss(&x)?.total)?;
    }
    Ok(())
}

#[test]
fn kl_term_matches_hand_computed_values() -> Result<()> {
    // Two samples of [1, 1, 2]: 0.5 · Σ (μ² + e^{lv} − 1 − lv) per sample, then the batch mean.
    //   sample 0: (0.25 + 1 − 1 − 0) + (1 + e − 1 − 1)           = 0.25 + (e − 1)
    //   sample 1: (0 + e^{−1} − 1 + 1) + (4 + e^{0.5} − 1 − 0.5) = e^{−1} + 2.5 + e^{0.5}
    let mean = Tensor::new(&[[[[0.5f32, -1.0]]], [[[0.0, 2.0]]]], &Device::Cpu)?;
    let logvar = Tensor::new(&[[[[0.0f32, 1.0]]], [[[-1.0, 0.5]]]], &Device::Cpu)?;
    let e = std::f32::consts::E;
    let expected = 0.5 * ((0.25 + e - 1.0) + (1.0 / e + 2.5 + e.sqrt())) / 2.0;
    assert_close(kl_diag_gaussian(&mean, &logvar)?.to_scalar::<f32>()?, expected, 1e-6, "kl");
    assert_close(expected, 1.621_220_6, 1e-6, "hand-computed kl");

    // Sampling: mean + exp(logvar / 2) · noise.
    let noise = Tensor::new(&[[[[1.0f32, -2.0]]], [[[0.5, 0.0]]]], &Device::Cpu)?;
    let z = KlVae::sample(&mean, &logvar, &noise)?.flatten_all()?.to_vec1::<f32>()?;
    let expected_z = [1.5, -1.0 - 2.0 * e.sqrt(), 0.5 / e.sqrt(), 2.0];
    for (actual, expected) in z.iter().zip(expected_z) {
        assert_close(*actual, expected, 1e-6, "sample");
    }

    // The model's KL term: summed over latent channels and positions, averaged over the batch
    // (seed pitfall 32), computed here with plain loops over the 3D model's own posterior.
    let x = batch(SpatialDims::Three)?;
    let (kl, _) = kl_vae(SpatialDims::Three)?;
    let (mean, logvar) = kl.encode(&x)?;
    let noise = Tensor::zeros(mean.shape(), DType::F32, &Device::Cpu)?;
    let per_sample = |m: Vec<f32>, lv: Vec<f32>| -> f64 {
        m.iter().zip(&lv).map(|(&m, &lv)| 0.5 * f64::from(m * m + lv.exp() - 1.0 - lv)).sum()
    };
    let mut by_hand = 0.0;
    for b in 0..2 {
        by_hand += per_sample(mean.get(b)?.flatten_all()?.to_vec1()?, logvar.get(b)?.flatten_all()?.to_vec1()?) / 2.0;
    }
    let model = kl.loss(&x, &noise)?.kl.to_scalar::<f32>()?;
    assert_close(model, by_hand as f32, 1e-4 * by_hand.abs() as f32, "model kl");
    Ok(())
}

/// AdamW steps on the fixed batch until the reconstruction term is a tenth of its first value;
/// returns the steps taken and the first and last reconstruction losses.
fn overfit(
    varmap: &VarMap,
    max_steps: usize,
    mut step: impl FnMut() -> Result<(Tensor, Tensor)>,
) -> Result<(usize, f32, f32)> {
    let config = AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() };
    let mut optimizer = AdamW::new(&Params::from_varmap(varmap), config)?;
    let mut first = None;
    let mut last = f32::INFINITY;
    for steps in 0..max_steps {
        let (reconstruction, total) = step()?;
        last = reconstruction.to_scalar::<f32>()?;
        let initial = *first.get_or_insert(last);
        if last <= initial / 10.0 {
            return Ok((steps, initial, last));
        }
        optimizer.step(&total.backward()?, 3e-3)?;
    }
    Ok((max_steps, first.unwrap_or(f32::NAN), last))
}

fn assert_overfits(dims: SpatialDims) -> Result<()> {
    const MAX_STEPS: usize = 300;
    let x = batch(dims)?;
    let (kl, varmap) = kl_vae(dims)?;
    let latent_shape = kl.encode(&x)?.0.shape().clone();
    let mut noise = Stream::new(SEED, Purpose::Noise);
    let (steps, first, last) = overfit(&varmap, MAX_STEPS, || {
        let losses = kl.loss(&x, &noise.normal(latent_shape.clone(), &Device::Cpu)?)?;
        Ok((losses.reconstruction, losses.total))
    })?;
    assert!(steps < MAX_STEPS, "KL-VAE {dims:?}: reconstruction {first} → {last} in {MAX_STEPS} steps");

    let (vq, varmap) = vq_vae(dims)?;
    let (steps, first, last) = overfit(&varmap, MAX_STEPS, || {
        let losses = vq.loss(&x)?;
        Ok((losses.reconstruction, losses.total))
    })?;
    assert!(steps < MAX_STEPS, "VQ-VAE {dims:?}: reconstruction {first} → {last} in {MAX_STEPS} steps");
    Ok(())
}

#[test]
fn both_models_overfit_a_fixed_batch_2d() -> Result<()> {
    assert_overfits(SpatialDims::Two)
}

#[test]
fn both_models_overfit_a_fixed_batch_3d() -> Result<()> {
    assert_overfits(SpatialDims::Three)
}

// ---- The EMA codebook ----------------------------------------------------------------------

const EMA_REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/vq_ema_reference.safetensors");

/// Codes and latent channels of the reference quantizers.
const REFERENCE_CODES: usize = 8;
const REFERENCE_CHANNELS: usize = 3;

/// The EMA buffers, by their names under `codebook.`.
const BUFFERS: [&str; 3] = ["weight", "cluster_size", "embed_sum"];

/// Largest f32 difference allowed against MONAI, per row (code) of a tensor, relative to the
/// row's largest magnitude: the codes MONAI's update leaves unused grow to ~1e5 while the used
/// ones stay near 1, so one scale for the whole codebook would hide the used codes' errors.
const F32_TOLERANCE: f32 = 1e-5;

fn vq_ema_vae(dims: SpatialDims, update: CodebookUpdate) -> Result<(VqVae, VarMap)> {
    let varmap = VarMap::new();
    let vb = var_builder(&varmap, Stream::new(SEED, Purpose::Init), DType::F32, &Device::Cpu);
    Ok((VqVae::new(vb, &VqVaeConfig { codebook_update: update, ..vq_config(dims) })?, varmap))
}

/// `max |actual − expected| / max |expected|` within every row (first axis) of two tensors of the
/// same shape, at most `tolerance` (rows of zeros must match exactly).
fn assert_rows_close(what: &str, actual: &Tensor, expected: &Tensor, tolerance: f32) -> Result<()> {
    assert_eq!(actual.dims(), expected.dims(), "{what}");
    let rows = expected.dim(0)?;
    let actual = actual.to_dtype(DType::F32)?.reshape((rows, ()))?.to_vec2::<f32>()?;
    let expected = expected.to_dtype(DType::F32)?.reshape((rows, ()))?.to_vec2::<f32>()?;
    let mut worst = 0f32;
    for (row, (a, e)) in actual.iter().zip(&expected).enumerate() {
        let error = a.iter().zip(e).map(|(a, e)| (a - e).abs()).fold(0.0, f32::max);
        let scale = e.iter().map(|e| e.abs()).fold(0.0, f32::max);
        assert!(error <= tolerance * scale, "{what}, row {row}: {a:?} vs {e:?}");
        worst = worst.max(if scale > 0.0 { error / scale } else { 0.0 });
    }
    println!("{what}: relative error {worst:.1e}");
    Ok(())
}

fn buffer(varmap: &VarMap, name: &str) -> Tensor {
    let vars = varmap.data().lock().unwrap();
    vars.get(&format!("codebook.{name}")).unwrap_or_else(|| panic!("codebook.{name} is missing")).as_tensor().clone()
}

#[test]
fn ema_codebook_updates_match_monai() -> Result<()> {
    let reference = candle_core::safetensors::load(EMA_REFERENCE, &Device::Cpu)?;
    let get = |key: &str| reference.get(key).unwrap_or_else(|| panic!("{key} is not in the reference file"));
    let cases = [
        ("q2", SpatialDims::Two, CodebookUpdate::EMA, 2),
        ("q3", SpatialDims::Three, CodebookUpdate::Ema { decay: 0.9, epsilon: 1e-3 }, 1),
    ];
    assert_eq!(CodebookUpdate::EMA, CodebookUpdate::Ema { decay: 0.99, epsilon: 1e-5 });
    assert_eq!((DEFAULT_EMA_DECAY, DEFAULT_EMA_EPSILON), (0.99, 1e-5));
    for (name, dims, update, steps) in cases {
        let autoencoder = AutoencoderConfig { latent_channels: REFERENCE_CHANNELS, ..config(dims) };
        let cfg = VqVaeConfig { codebook_update: update, ..VqVaeConfig::new(autoencoder, REFERENCE_CODES) };
        let mut varmap = VarMap::new();
        let vq = VqVae::new(var_builder(&varmap, Stream::new(SEED, Purpose::Init), DType::F32, &Device::Cpu), &cfg)?;
        for field in BUFFERS {
            varmap.set_one(format!("codebook.{field}"), get(&format!("{name}.codebook.{field}")))?;
        }
        for step in 1..=steps {
            let prefix = format!("{name}.step{step}");
            let z = get(&format!("{prefix}.z"));
            let quantized = vq.quantize(z)?;
            let expected_indices = get(&format!("{prefix}.indices")).flatten_all()?.to_vec1::<i64>()?;
            let indices: Vec<i64> =
                quantized.indices.flatten_all()?.to_vec1::<u32>()?.into_iter().map(i64::from).collect();
            assert_eq!(indices, expected_indices, "{prefix}.indices");
            assert_rows_close(
                &format!("{prefix}.quantized"),
                &quantized.latent,
                get(&format!("{prefix}.quantized")),
                F32_TOLERANCE,
            )?;
            assert!(quantized.codebook_loss.is_none());
            let loss = (&quantized.commitment_loss * DEFAULT_COMMITMENT_BETA)?.reshape(1)?;
            assert_rows_close(&format!("{prefix}.loss"), &loss, get(&format!("{prefix}.loss")), F32_TOLERANCE)?;

            vq.update_codebook(z, &quantized.indices)?;
            for field in BUFFERS {
                let key = format!("{prefix}.codebook.{field}");
                assert_rows_close(&key, &buffer(&varmap, field), get(&key), F32_TOLERANCE)?;
            }
            assert_eq!(vq.codebook().to_vec2::<f32>()?, buffer(&varmap, "weight").to_vec2::<f32>()?);
        }
    }
    Ok(())
}

#[test]
fn ema_buffers_stay_out_of_the_optimiser() -> Result<()> {
    let x = batch(SpatialDims::Two)?;
    let (vq, varmap) = vq_ema_vae(SpatialDims::Two, CodebookUpdate::EMA)?;
    let names: Vec<String> = BUFFERS.iter().map(|b| format!("codebook.{b}")).collect();
    assert_eq!(vq.ema_buffer_names(), names.as_slice());

    // MONAI's initial state: zero cluster sizes, the sums a copy of the codes, statistics in f32.
    let codes = buffer(&varmap, "weight").to_vec2::<f32>()?;
    assert_eq!(buffer(&varmap, "embed_sum").to_vec2::<f32>()?, codes);
    assert_eq!(buffer(&varmap, "cluster_size").to_vec1::<f32>()?, vec![0.0; CODES]);
    assert_eq!(
        (buffer(&varmap, "embed_sum").dtype(), buffer(&varmap, "cluster_size").dtype()),
        (DType::F32, DType::F32)
    );

    let all = Params::from_varmap(&varmap);
    let trainable = Params::from_varmap(&vq.trainable_vars(&varmap));
    assert_eq!(all.len(), trainable.len() + BUFFERS.len());
    assert!(names.iter().all(|name| all.get(name).is_some() && trainable.get(name).is_none()));

    // The loss has no codebook term; every trainable variable learns, no buffer gets a gradient.
    let losses = vq.loss(&x)?;
    assert!(losses.codebook.is_none());
    let expected = losses.reconstruction.to_scalar::<f32>()? + 0.25 * losses.commitment.to_scalar::<f32>()?;
    assert_close(losses.total.to_scalar::<f32>()?, expected, 1e-6, "total");
    let grads = losses.total.backward()?;
    for (name, var) in trainable.iter() {
        let gradient = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} has no gradient"));
        assert!(gradient.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0, "{name} has an all-zero gradient");
    }
    for name in &names {
        assert!(grads.get(all.get(name).expect("buffer").as_tensor()).is_none(), "{name} has a gradient");
    }

    // AdamW over the trainable variables leaves the buffers alone; update_codebook moves them.
    let before: Vec<Vec<f32>> =
        BUFFERS.iter().map(|b| buffer(&varmap, b).flatten_all()?.to_vec1()).collect::<Result<_>>()?;
    let mut optimizer = AdamW::new(&trainable, AdamWConfig::default())?;
    optimizer.step(&grads, 1e-2)?;
    assert!(optimizer.moments().all(|(name, _)| !name.starts_with("codebook.")));
    let after: Vec<Vec<f32>> =
        BUFFERS.iter().map(|b| buffer(&varmap, b).flatten_all()?.to_vec1()).collect::<Result<_>>()?;
    assert_eq!(before, after);
    vq.update_codebook(&losses.encoded, &losses.indices)?;
    // Σ N = (1 − decay) · (latent positions): 2 samples of 4×4.
    let total_size = buffer(&varmap, "cluster_size").sum_all()?.to_scalar::<f32>()?;
    assert_close(total_size, 0.01 * 32.0, 1e-6, "cluster sizes");
    assert_ne!(buffer(&varmap, "weight").to_vec2::<f32>()?, codes);

    // With the codebook learnt by its loss there are no buffers and no EMA update.
    let (learnt, varmap) = vq_vae(SpatialDims::Two)?;
    assert!(learnt.ema_buffer_names().is_empty());
    assert_eq!(Params::from_varmap(&learnt.trainable_vars(&varmap)).len(), Params::from_varmap(&varmap).len());
    let losses = learnt.loss(&x)?;
    assert!(losses.codebook.is_some());
    assert!(learnt.update_codebook(&losses.encoded, &losses.indices).is_err());
    let invalid = CodebookUpdate::Ema { decay: 1.0, epsilon: 1e-5 };
    assert!(vq_ema_vae(SpatialDims::Two, invalid).is_err());
    assert!(vq_ema_vae(SpatialDims::Two, CodebookUpdate::Ema { decay: 0.99, epsilon: 0.0 }).is_err());
    Ok(())
}

/// A training state over the whole `varmap` (buffers included) with AdamW over its trainable part.
fn train_state(vq: &VqVae, varmap: &VarMap) -> Result<TrainState> {
    Ok(TrainState {
        step: 0,
        model: Params::from_varmap(varmap),
        optimizer: AdamW::new(&Params::from_varmap(&vq.trainable_vars(varmap)), AdamWConfig::default())?,
        ema: None,
        streams: Streams::new(SEED),
        val_history: ValHistory::default(),
        guard: Guard::new(GuardConfig::default()),
        metadata: serde_json::Value::Null,
    })
}

#[test]
fn ema_buffers_are_saved_and_restored_with_the_checkpoint() -> Result<()> {
    let x = batch(SpatialDims::Two)?;
    let (vq, varmap) = vq_ema_vae(SpatialDims::Two, CodebookUpdate::EMA)?;
    let mut state = train_state(&vq, &varmap)?;
    for _ in 0..2 {
        let losses = vq.loss(&x)?;
        state.optimizer.step(&losses.total.backward()?, 1e-3)?;
        vq.update_codebook(&losses.encoded, &losses.indices)?;
        state.step += 1;
    }
    let dir = TempDir::new("ema-checkpoint");
    let saved = state.save(&dir.0, &CheckpointConfig::default()).expect("checkpoint saved");

    let (restored, restored_varmap) = vq_ema_vae(SpatialDims::Two, CodebookUpdate::EMA)?;
    let snapshot = |varmap: &VarMap| -> Result<HashMap<&str, Vec<f32>>> {
        BUFFERS.iter().map(|&b| Ok((b, buffer(varmap, b).flatten_all()?.to_vec1()?))).collect()
    };
    assert_ne!(snapshot(&restored_varmap)?, snapshot(&varmap)?);
    train_state(&restored, &restored_varmap)?.load(&saved).expect("checkpoint loaded");
    assert_eq!(snapshot(&restored_varmap)?, snapshot(&varmap)?);
    assert_eq!(restored.codebook().to_vec2::<f32>()?, vq.codebook().to_vec2::<f32>()?);
    let indices = |model: &VqVae| -> Result<Vec<u32>> { model.loss(&x)?.indices.flatten_all()?.to_vec1() };
    assert_eq!(indices(&restored)?, indices(&vq)?);
    Ok(())
}

#[test]
fn vq_vae_with_an_ema_codebook_overfits_a_fixed_batch() -> Result<()> {
    const MAX_STEPS: usize = 300;
    let x = batch(SpatialDims::Two)?;
    let (vq, varmap) = vq_ema_vae(SpatialDims::Two, CodebookUpdate::EMA)?;
    let (steps, first, last) = overfit(&vq.trainable_vars(&varmap), MAX_STEPS, || {
        let losses = vq.loss(&x)?;
        vq.update_codebook(&losses.encoded, &losses.indices)?;
        Ok((losses.reconstruction, losses.total))
    })?;
    println!("EMA VQ-VAE: reconstruction {first} → {last} in {steps} steps");
    assert!(steps < MAX_STEPS, "EMA VQ-VAE: reconstruction {first} → {last} in {MAX_STEPS} steps");
    // Every step updated the codebook: Σ N = (1 − decay^updates) · 32 latent positions, the
    // closure having run once more than the optimiser stepped.
    let updates = i32::try_from(steps + 1).expect("few steps");
    let expected = (1.0 - DEFAULT_EMA_DECAY.powi(updates)) * 32.0;
    let total_size = buffer(&varmap, "cluster_size").sum_all()?.to_scalar::<f32>()?;
    assert_close(total_size, expected as f32, 1e-5, "cluster sizes");
    Ok(())
}
