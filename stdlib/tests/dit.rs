//! DiT / SiT (`medgen_stdlib::nn::dit`) at the tiny test size (hidden 32, depth 2, 4 heads,
//! patch 2): output shapes in 2D and 3D with and without a condition, positional embeddings that
//! follow the input's size, the reference's sin-cos values and parameter names, zero output at
//! initialisation, a gradient for every trainable variable once the zero-initialised gates have
//! opened, and overfitting a fixed batch with AdamW. CPU only (the crate has no CUDA feature yet).

use std::collections::BTreeSet;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarMap;
use medgen_stdlib::nn::conv::SpatialDims;
use medgen_stdlib::nn::dit::{sincos_pos_embed, DiT, DiTConfig, Variant};
use medgen_stdlib::nn::embed::TimeScale;
use medgen_stdlib::train::loss::mse;
use medgen_stdlib::train::optim::{AdamW, AdamWConfig};
use medgen_stdlib::train::params::Params;
use medgen_stdlib::train::rng::{var_builder, Purpose, Stream};

const SEED: u64 = 7;
const CHANNELS: usize = 2;
const CONDITION_DIM: usize = 3;
const BATCH: usize = 2;

fn tiny(dims: SpatialDims, condition_dim: Option<usize>) -> DiTConfig {
    DiTConfig { condition_dim, ..DiTConfig::tiny(Variant::SiT, dims, (CHANNELS, CHANNELS), 2) }
}

fn build(cfg: &DiTConfig) -> Result<(DiT, VarMap)> {
    let varmap = VarMap::new();
    let vb = var_builder(&varmap, Stream::new(SEED, Purpose::Init), DType::F32, &Device::Cpu);
    Ok((DiT::new(vb, cfg)?, varmap))
}

fn spatial(dims: SpatialDims) -> Vec<usize> {
    match dims {
        SpatialDims::Two => vec![8, 8],
        SpatialDims::Three => vec![4, 8, 8],
    }
}

/// A fixed batch: inputs, continuous times, conditions (when asked) and targets.
struct Batch {
    x: Tensor,
    t: Tensor,
    cond: Option<Tensor>,
    target: Tensor,
}

fn batch(size: &[usize], condition: bool) -> Result<Batch> {
    let mut noise = Stream::new(SEED, Purpose::Noise);
    let shape: Vec<usize> = [BATCH, CHANNELS].into_iter().chain(size.iter().copied()).collect();
    Ok(Batch {
        x: noise.normal(shape.clone(), &Device::Cpu)?,
        t: Stream::new(SEED, Purpose::Timesteps).uniform(BATCH, &Device::Cpu)?,
        cond: if condition { Some(noise.uniform((BATCH, CONDITION_DIM), &Device::Cpu)?) } else { None },
        target: noise.normal(shape, &Device::Cpu)?,
    })
}

fn predict(model: &DiT, b: &Batch) -> Result<Tensor> {
    model.forward(&b.x, &b.t, TimeScale::Continuous, b.cond.as_ref())
}

#[test]
fn shapes_in_2d_and_3d_with_and_without_condition() -> Result<()> {
    for dims in [SpatialDims::Two, SpatialDims::Three] {
        for condition in [false, true] {
            let cfg = tiny(dims, condition.then_some(CONDITION_DIM));
            let (model, _) = build(&cfg)?;
            let b = batch(&spatial(dims), condition)?;
            let out = predict(&model, &b)?;
            assert_eq!(out.dims(), b.x.dims(), "{dims:?}, condition {condition}");
            // adaLN-Zero: a fresh model outputs exactly zero.
            assert_eq!(out.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
            // A missing or unexpected condition is refused.
            let wrong =
                if condition { None } else { Some(Tensor::zeros((BATCH, CONDITION_DIM), DType::F32, &Device::Cpu)?) };
            assert!(model.forward(&b.x, &b.t, TimeScale::Continuous, wrong.as_ref()).is_err());
        }
    }
    Ok(())
}

#[test]
fn learn_sigma_output_channels() -> Result<()> {
    let cfg = DiTConfig::tiny(Variant::DiT, SpatialDims::Two, (CHANNELS, 2 * CHANNELS), 2);
    let (model, _) = build(&cfg)?;
    let x = Tensor::zeros((1, CHANNELS, 8, 8), DType::F32, &Device::Cpu)?;
    let t = Tensor::new(&[500u32], &Device::Cpu)?;
    assert_eq!(model.forward(&x, &t, TimeScale::Discrete, None)?.dims(), [1, 2 * CHANNELS, 8, 8]);
    assert_eq!(cfg.name(), "DiT-T/2");
    assert_eq!(DiTConfig::small(Variant::SiT, SpatialDims::Three, (4, 4), 2).name(), "SiT-S/2");
    assert_eq!(DiTConfig::base(Variant::DiT, SpatialDims::Two, (4, 8), 4).name(), "DiT-B/4");
    Ok(())
}

/// One model, two input sizes per dimensionality: the positional embeddings are computed from the
/// input's grid (seed pitfall 72), and a size the patch does not divide is a clear error.
#[test]
fn positional_embedding_follows_the_input_size() -> Result<()> {
    for (dims, sizes) in
        [(SpatialDims::Two, [vec![8, 8], vec![16, 12]]), (SpatialDims::Three, [vec![4, 8, 8], vec![6, 4, 10]])]
    {
        let (model, varmap) = build(&tiny(dims, None))?;
        // Open the gates so that the output depends on the positions.
        for (name, var) in Params::from_varmap(&varmap).iter() {
            if name.contains("adaLN_modulation") || name.starts_with("final_layer.linear") {
                var.set(&(var.as_tensor().ones_like()? * 0.01)?)?;
            }
        }
        for size in &sizes {
            let b = batch(size, false)?;
            let out = predict(&model, &b)?;
            assert_eq!(out.dims(), b.x.dims());
            assert!(out.abs()?.max_all()?.to_scalar::<f32>()? > 0.0);
        }
        let mut odd = spatial(dims);
        odd[0] += 1;
        let err = predict(&model, &batch(&odd, false)?).unwrap_err().to_string();
        assert!(err.contains("not divisible by the patch size 2"), "{err}");
    }
    Ok(())
}

/// 2D values against MAE's / DiT's `get_2d_sincos_pos_embed`, for a non-square 2 × 3 grid
/// (numpy 2.4, float64, printed as float32):
///
/// ```python
/// import numpy as np
/// def e1(D, pos):
///     om = np.arange(D // 2, dtype=np.float64) / (D / 2.); om = 1. / 10000**om
///     out = np.einsum('m,d->md', pos.reshape(-1), om); return np.concatenate([np.sin(out), np.cos(out)], axis=1)
/// gh, gw, D = 2, 3, 8
/// grid = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))
/// grid = np.stack(grid, axis=0).reshape(2, 1, gh, gw)
/// print(np.concatenate([e1(D // 2, grid[0]), e1(D // 2, grid[1])], axis=1).astype(np.float32))
/// ```
#[test]
fn sincos_values_match_the_reference() -> Result<()> {
    #[rustfmt::skip]
    let expected: [[f32; 8]; 6] = [
        [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
        [0.841471, 0.0099998, 0.5403023, 0.99995, 0.0, 0.0, 1.0, 1.0],
        [0.9092974, 0.0199987, -0.4161468, 0.9998, 0.0, 0.0, 1.0, 1.0],
        [0.0, 0.0, 1.0, 1.0, 0.841471, 0.0099998, 0.5403023, 0.99995],
        [0.841471, 0.0099998, 0.5403023, 0.99995, 0.841471, 0.0099998, 0.5403023, 0.99995],
        [0.9092974, 0.0199987, -0.4161468, 0.9998, 0.841471, 0.0099998, 0.5403023, 0.99995],
    ];
    let actual = sincos_pos_embed(8, &[2, 3], &Device::Cpu)?.squeeze(0)?.to_vec2::<f32>()?;
    for (row, want) in actual.iter().zip(&expected) {
        for (a, w) in row.iter().zip(want) {
            assert!((a - w).abs() < 1e-6, "{actual:?}");
        }
    }
    // 3D, hidden 32: widths 10 (column), 10 (row), 12 (depth); token (d, h, w) = (1, 0, 2).
    let embed = sincos_pos_embed(32, &[2, 2, 3], &Device::Cpu)?.squeeze(0)?.to_vec2::<f32>()?;
    let token = &embed[6 + 2];
    assert!((token[0] - 2f32.sin()).abs() < 1e-6 && (token[5] - 2f32.cos()).abs() < 1e-6);
    assert!(token[10] == 0.0 && token[15] == 1.0);
    assert!((token[20] - 1f32.sin()).abs() < 1e-6 && (token[26] - 1f32.cos()).abs() < 1e-6);
    Ok(())
}

#[test]
fn parameter_names_follow_the_reference() -> Result<()> {
    let (_, varmap) = build(&tiny(SpatialDims::Three, Some(CONDITION_DIM)))?;
    let params = Params::from_varmap(&varmap);
    let names: BTreeSet<&str> = params.iter().map(|(name, _)| name).collect();
    for name in [
        "x_embedder.proj.weight",
        "t_embedder.mlp.0.weight",
        "t_embedder.mlp.2.bias",
        "y_embedder.mlp.0.weight",
        "blocks.0.attn.qkv.weight",
        "blocks.1.attn.proj.bias",
        "blocks.1.mlp.fc1.weight",
        "blocks.1.mlp.fc2.weight",
        "blocks.1.adaLN_modulation.1.weight",
        "final_layer.adaLN_modulation.1.bias",
        "final_layer.linear.weight",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    assert_eq!(params.get("x_embedder.proj.weight").map(|v| v.dims().to_vec()), Some(vec![32, CHANNELS, 2, 2, 2]));
    assert_eq!(params.get("final_layer.linear.weight").map(|v| v.dims().to_vec()), Some(vec![8 * CHANNELS, 32]));
    Ok(())
}

/// Trains `steps` AdamW steps on the fixed batch, returning the losses before each step and the
/// gradients of the last step.
fn train(model: &DiT, varmap: &VarMap, b: &Batch, steps: usize, lr: f64) -> Result<(Vec<f32>, Params, Vec<Tensor>)> {
    let params = Params::from_varmap(varmap);
    let config = AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() };
    let mut optimiser = AdamW::new(&params, config)?;
    let mut losses = Vec::with_capacity(steps);
    let mut last = Vec::new();
    for _ in 0..steps {
        let loss = mse(&predict(model, b)?, &b.target)?;
        losses.push(loss.to_scalar::<f32>()?);
        let grads = loss.backward()?;
        last = params
            .iter()
            .map(|(_, var)| grads.get(var.as_tensor()).cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| candle_core::Error::Msg("a trainable variable is not in the graph".into()))?;
        optimiser.step(&grads, lr)?;
    }
    Ok((losses, params, last))
}

fn max_abs(t: &Tensor) -> Result<f32> {
    t.abs()?.max_all()?.to_scalar::<f32>()
}

/// With zero-initialised modulations and final linear, the first backward pass reaches only
/// `final_layer.linear`; the modulations open after one step and the gated attention and MLP after
/// a second, so the check is on the third step's gradients: every variable must then have a
/// non-zero gradient.
#[test]
fn every_variable_gets_a_gradient_once_the_gates_open() -> Result<()> {
    for dims in [SpatialDims::Two, SpatialDims::Three] {
        let (model, varmap) = build(&tiny(dims, Some(CONDITION_DIM)))?;
        let b = batch(&spatial(dims), true)?;
        let (_, params, first) = train(&model, &varmap, &b, 1, 1e-3)?;
        for ((name, _), grad) in params.iter().zip(&first) {
            assert_eq!(max_abs(grad)? > 0.0, name.starts_with("final_layer.linear"), "{dims:?} step 1: {name}");
        }
        let (_, params, third) = train(&model, &varmap, &b, 2, 1e-3)?;
        for ((name, _), grad) in params.iter().zip(&third) {
            assert!(max_abs(grad)? > 0.0, "{dims:?} step 3: no gradient for {name}");
        }
    }
    Ok(())
}

fn overfit(dims: SpatialDims) -> Result<()> {
    let (model, varmap) = build(&tiny(dims, Some(CONDITION_DIM)))?;
    let b = batch(&spatial(dims), true)?;
    let (losses, _, _) = train(&model, &varmap, &b, 300, 3e-3)?;
    let (first, best) = (losses[0], losses.iter().copied().fold(f32::INFINITY, f32::min));
    assert!(best * 10.0 <= first, "{dims:?}: loss {first} → {best}, less than 10× in 300 steps");
    Ok(())
}

#[test]
fn overfits_a_fixed_batch_2d() -> Result<()> {
    overfit(SpatialDims::Two)
}

#[test]
fn overfits_a_fixed_batch_3d() -> Result<()> {
    overfit(SpatialDims::Three)
}
