//! The denoising UNet of `medgen_stdlib::nn::unet` (MONAI's `DiffusionModelUNet`): output shapes
//! in 2D and 3D, with and without attention and conditioning; the shape guards; a gradient for
//! every trainable variable; and a tiny network that overfits a fixed batch. Everything is
//! initialised from a seeded stream (`train::rng::var_builder`), so runs are reproducible. CPU only:
//! the crate has no CUDA feature yet.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarMap;
use medgen_stdlib::nn::conv::SpatialDims;
use medgen_stdlib::nn::embed::{Conditioning, TimeScale};
use medgen_stdlib::nn::unet::{UNet, UNetConfig};
use medgen_stdlib::train::loss::mse;
use medgen_stdlib::train::optim::{AdamW, AdamWConfig};
use medgen_stdlib::train::params::Params;
use medgen_stdlib::train::rng::{var_builder, Purpose, Stream};

const SEED: u64 = 7;
const BATCH: usize = 2;
const COND_DIM: usize = 3;

/// The attention's key bias adds the same number to every score of a row, which the softmax
/// ignores: its gradient is zero up to rounding (see `nn::attention`), so it is the one variable
/// allowed a zero gradient.
const KEY_BIAS: &str = "attn.to_k.bias";

fn config(dims: SpatialDims, attention: bool, condition: Option<Conditioning>) -> UNetConfig {
    UNetConfig {
        dims,
        in_channels: 1,
        out_channels: 1,
        channels: vec![8, 16],
        attention: vec![false, attention],
        res_blocks: 1,
        head_channels: vec![8, 8],
        norm_groups: 4,
        condition_dim: condition.map(|_| COND_DIM),
        conditioning: condition.unwrap_or(Conditioning::Additive),
    }
}

fn spatial(dims: SpatialDims) -> Vec<usize> {
    match dims {
        SpatialDims::Two => vec![8, 8],
        SpatialDims::Three => vec![4, 8, 8],
    }
}

fn build(cfg: &UNetConfig) -> Result<(VarMap, UNet)> {
    let varmap = VarMap::new();
    let vb = var_builder(&varmap, Stream::new(SEED, Purpose::Init), DType::F32, &Device::Cpu);
    let unet = UNet::new(vb, cfg)?;
    Ok((varmap, unet))
}

/// A batch `x` `[BATCH, in, *spatial]`, times `[BATCH]` in [0, 1] and, for a conditioned
/// network, one-hot conditioning vectors.
fn inputs(cfg: &UNetConfig, spatial: &[usize]) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let device = Device::Cpu;
    let mut stream = Stream::new(SEED, Purpose::Noise);
    let shape: Vec<usize> = [BATCH, cfg.in_channels].into_iter().chain(spatial.iter().copied()).collect();
    let x = stream.normal(shape, &device)?;
    let t = Tensor::new(&[0.25f32, 0.8], &device)?;
    let cond = match cfg.condition_dim {
        Some(dim) => Some(Tensor::eye(dim, DType::F32, &device)?.narrow(0, 0, BATCH)?),
        None => None,
    };
    Ok((x, t, cond))
}

#[test]
fn output_shapes_2d_and_3d() -> Result<()> {
    for dims in [SpatialDims::Two, SpatialDims::Three] {
        for attention in [false, true] {
            for condition in [None, Some(Conditioning::Additive), Some(Conditioning::Film)] {
                let cfg = UNetConfig { out_channels: 2, ..config(dims, attention, condition) };
                let (_, unet) = build(&cfg)?;
                let (x, t, cond) = inputs(&cfg, &spatial(dims))?;
                let y = unet.forward(&x, &t, TimeScale::Continuous, cond.as_ref())?;
                let expected: Vec<usize> = [BATCH, 2].into_iter().chain(spatial(dims)).collect();
                assert_eq!(y.dims(), expected, "{dims:?}, attention {attention}, {condition:?}");
            }
        }
    }
    Ok(())
}

#[test]
fn discrete_times_are_accepted() -> Result<()> {
    let cfg = config(SpatialDims::Two, true, None);
    let (_, unet) = build(&cfg)?;
    let (x, _, _) = inputs(&cfg, &[8, 8])?;
    let t = Tensor::new(&[3u32, 999], &Device::Cpu)?;
    assert_eq!(unet.forward(&x, &t, TimeScale::Discrete, None)?.dims(), x.dims());
    Ok(())
}

#[test]
fn rejects_bad_shapes_and_conditioning() -> Result<()> {
    let cfg = config(SpatialDims::Two, false, Some(Conditioning::Additive));
    let (_, unet) = build(&cfg)?;
    let (x, t, cond) = inputs(&cfg, &[8, 8])?;
    let (odd, _, _) = inputs(&cfg, &[8, 7])?;
    let error = unet.forward(&odd, &t, TimeScale::Continuous, cond.as_ref()).unwrap_err().to_string();
    assert!(error.contains("must be divisible by 2"), "{error}");
    let error = unet.forward(&x, &t, TimeScale::Continuous, None).unwrap_err().to_string();
    assert!(error.contains("conditioning vector is required"), "{error}");
    let unconditioned = build(&config(SpatialDims::Two, false, None))?.1;
    assert!(unconditioned.forward(&x, &t, TimeScale::Continuous, cond.as_ref()).is_err());
    assert!(UNet::new(
        var_builder(&VarMap::new(), Stream::new(SEED, Purpose::Init), DType::F32, &Device::Cpu),
        &UNetConfig { attention: vec![true], ..config(SpatialDims::Two, false, None) }
    )
    .is_err());
    Ok(())
}

/// The output conv and every resnet's `conv2` start at zero (MONAI's `zero_module`), which
/// blocks all gradients behind them at initialisation; so first every all-zero variable is
/// redrawn from the seeded stream, then every variable must receive a non-zero gradient.
#[test]
fn every_variable_receives_a_gradient() -> Result<()> {
    for dims in [SpatialDims::Two, SpatialDims::Three] {
        let cfg = config(dims, true, Some(Conditioning::Film));
        let (varmap, unet) = build(&cfg)?;
        let params = Params::from_varmap(&varmap);
        let mut stream = Stream::new(SEED, Purpose::Augmentation);
        let mut redrawn = 0;
        for (_, var) in params.iter() {
            if var.as_tensor().abs()?.max_all()?.to_scalar::<f32>()? == 0.0 {
                var.set(&(stream.normal(var.shape(), &Device::Cpu)? * 0.1)?)?;
                redrawn += 1;
            }
        }
        assert!(redrawn > 0, "the zero-initialised convs were not found");
        let (x, t, cond) = inputs(&cfg, &spatial(dims))?;
        let y = unet.forward(&x, &t, TimeScale::Continuous, cond.as_ref())?;
        let grads = mse(&y, &x)?.backward()?;
        for (name, var) in params.iter() {
            let grad = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{dims:?}: no gradient for {name}"));
            let size = grad.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(size > 0.0 || name.ends_with(KEY_BIAS), "{dims:?}: zero gradient for {name}");
        }
    }
    Ok(())
}

/// Trains on one fixed batch whose target is a fixed function of the input until the MSE has
/// fallen at least tenfold; returns the number of steps taken.
fn overfit(dims: SpatialDims, max_steps: usize) -> Result<usize> {
    let cfg = config(dims, true, Some(Conditioning::Additive));
    let (varmap, unet) = build(&cfg)?;
    let params = Params::from_varmap(&varmap);
    let mut optimizer = AdamW::new(&params, AdamWConfig::default())?;
    let (x, t, cond) = inputs(&cfg, &spatial(dims))?;
    let target = ((x.tanh()? * 0.5)? - 0.2)?;
    let mut first = None;
    for step in 1..=max_steps {
        let y = unet.forward(&x, &t, TimeScale::Continuous, cond.as_ref())?;
        let loss = mse(&y, &target)?;
        let value = loss.to_scalar::<f32>()?;
        let initial = *first.get_or_insert(value);
        if value * 10.0 <= initial {
            eprintln!("{dims:?}: the loss fell from {initial:.4} to {value:.4} in {step} steps");
            return Ok(step);
        }
        optimizer.step(&loss.backward()?, 3e-3)?;
    }
    panic!("{dims:?}: the loss did not fall tenfold in {max_steps} steps")
}

#[test]
fn overfits_a_fixed_batch_2d() -> Result<()> {
    overfit(SpatialDims::Two, 300).map(drop)
}

#[test]
fn overfits_a_fixed_batch_3d() -> Result<()> {
    overfit(SpatialDims::Three, 300).map(drop)
}

/// `heads` in a pipeline is the number of attention heads at every attended level, and in the
/// middle block (MONAI's `num_head_channels` given per level as channels / heads).
#[test]
fn the_heads_of_a_pipeline_split_every_attended_level() -> Result<()> {
    use medgen_stdlib::run::denoiser::{Architecture, Denoiser, DenoiserSpec};
    let spec = DenoiserSpec {
        architecture: Architecture::Unet {
            channels: vec![16, 32, 64],
            attention: vec![false, true, true],
            res_blocks: 1,
            heads: 4,
        },
        dims: 2,
        in_channels: 1,
        out_channels: 1,
        vector: None,
    };
    let vb = var_builder(&VarMap::new(), Stream::new(SEED, Purpose::Init), DType::F32, &Device::Cpu);
    let Denoiser::Unet(unet) = spec.build(vb)? else { panic!("a UNet") };
    assert_eq!(unet.config().head_channels, [4, 8, 16], "4 heads of 8 channels at 32, of 16 at 64");
    Ok(())
}
