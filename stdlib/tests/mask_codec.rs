//! Mask compressors (`images = [seg]`) train as mask codecs: the reconstruction loss is binary
//! cross-entropy on the decoder's logits plus soft Dice (seed pitfall 45), checked against
//! PyTorch; the KL and VQ terms stay; the decoded output becomes probabilities through the one
//! `CompressorSpec::to_pixels`, while an image compressor keeps its L1 loss and clamp.
//!
//! The reference values come from `tests/reference/mask_loss_reference.py` (torch 2.15, CPU,
//! f64); these tests never run Python. Its heart:
//!
//! ```text
//! bce = F.binary_cross_entropy_with_logits(logits, target)
//! p, t = torch.sigmoid(logits).flatten(2), target.flatten(2)
//! dice = (1 - (2 * (p * t).sum(2) + 1e-5) / (p.sum(2) + t.sum(2) + 1e-5)).mean()
//! (bce + dice).backward()   # logits.grad
//! ```

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;
use medgen_stdlib::nn::autoencoder::Reconstruction;
use medgen_stdlib::run::compressor::{Compressor, CompressorSpec, Regularisation};
use medgen_stdlib::train::loss::{bce_with_logits, l1, soft_dice};
use medgen_stdlib::train::rng::{var_builder, Purpose, Stream};

const LOGITS: [f32; 8] = [2.0, -1.0, 0.5, -3.0, -0.25, 1.5, -2.0, 4.0];
/// The second sample's mask is empty.
const TARGET: [f32; 8] = [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
const BCE: f64 = 0.9231605838921778;
const DICE: f64 = 0.6064362109519494;
const TOTAL: f64 = 1.5295967948441271;
const GRADIENT: [f64; 8] = [
    -0.031570061827822515,
    0.053875882062878425,
    -0.08450382086590646,
    0.010583078802203815,
    0.05472815898476365,
    0.10219694380134628,
    0.014900459778904992,
    0.12275173965654283,
];

fn batch(values: [f32; 8]) -> Tensor {
    Tensor::from_vec(values.to_vec(), (2, 1, 2, 2), &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    f64::from(t.to_scalar::<f32>().unwrap())
}

fn assert_close(what: &str, actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-6, "{what}: {actual} against PyTorch's {expected}");
}

fn spec(images: &[&str], regularisation: Regularisation) -> CompressorSpec {
    CompressorSpec {
        regularisation,
        dims: 2,
        images: images.iter().map(|i| i.to_string()).collect(),
        channels: vec![8, 16],
        res_blocks: 1,
        latent_channels: 2,
    }
}

fn build(spec: &CompressorSpec) -> Result<Compressor> {
    let varmap = VarMap::new();
    spec.build(var_builder(&varmap, Stream::new(3, Purpose::Init), DType::F32, &Device::Cpu))
}

/// A binary 8×8 mask batch of two samples: a square, and an empty slice.
fn masks() -> Tensor {
    let square: Vec<f32> =
        (0..64).map(|i| f32::from(u8::from((2..6).contains(&(i / 8)) && (2..6).contains(&(i % 8))))).collect();
    let values: Vec<f32> = square.into_iter().chain(std::iter::repeat_n(0.0, 64)).collect();
    Tensor::from_vec(values, (2, 1, 8, 8), &Device::Cpu).unwrap()
}

#[test]
fn bce_and_soft_dice_match_pytorch() {
    let logits = Var::from_tensor(&batch(LOGITS)).unwrap();
    let target = batch(TARGET);
    assert_close("BCE", scalar(&bce_with_logits(&logits, &target).unwrap()), BCE);
    assert_close("soft Dice", scalar(&soft_dice(&logits, &target).unwrap()), DICE);
    let total = Reconstruction::MaskBceDice.loss(&logits, &target).unwrap();
    assert_close("BCE + Dice", scalar(&total), TOTAL);
    let gradient = total.backward().unwrap().get(&logits).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (i, (g, expected)) in gradient.iter().zip(GRADIENT).enumerate() {
        assert_close(&format!("gradient {i}"), f64::from(*g), expected);
    }
}

#[test]
fn bce_stays_finite_for_large_logits() {
    let logits = Tensor::from_vec(vec![200f32, -200.0, 200.0, -200.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let target = Tensor::from_vec(vec![1f32, 0.0, 0.0, 1.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
    // Two exact predictions (loss 0) and two wrong by 200 (loss 200 each): mean 100.
    assert_close("BCE", scalar(&bce_with_logits(&logits, &target).unwrap()), 100.0);
}

#[test]
fn a_mask_codec_trains_on_bce_plus_dice_and_keeps_its_kl_term() -> Result<()> {
    let kl_weight = 1e-3;
    let spec = spec(&["seg"], Regularisation::Kl { kl_weight });
    assert_eq!(spec.reconstruction(), Reconstruction::MaskBceDice);
    let Compressor::Kl(model) = build(&spec)? else { panic!("a vae(...) spec builds a KL-VAE") };
    let x = masks();
    let noise = Tensor::zeros((2, 2, 4, 4), DType::F32, &Device::Cpu)?;
    let losses = model.loss(&x, &noise)?;
    let expected = scalar(&bce_with_logits(&losses.decoded, &x)?) + scalar(&soft_dice(&losses.decoded, &x)?);
    assert_close("reconstruction", scalar(&losses.reconstruction), expected);
    assert!((scalar(&losses.reconstruction) - scalar(&l1(&losses.decoded, &x)?)).abs() > 1e-3, "not L1");
    let total = scalar(&losses.reconstruction) + kl_weight * scalar(&losses.kl);
    assert_close("total", scalar(&losses.total), total);
    assert!(scalar(&losses.kl) > 0.0, "the KL term is there");
    Ok(())
}

#[test]
fn a_mask_codec_trains_on_bce_plus_dice_and_keeps_its_vq_terms() -> Result<()> {
    let spec = spec(&["seg"], Regularisation::Vq { codebook: 16, commitment: 0.25, ema_decay: None });
    let Compressor::Vq(model) = build(&spec)? else { panic!("a vqvae(...) spec builds a VQ-VAE") };
    let x = masks();
    let losses = model.loss(&x)?;
    let expected = scalar(&bce_with_logits(&losses.decoded, &x)?) + scalar(&soft_dice(&losses.decoded, &x)?);
    assert_close("reconstruction", scalar(&losses.reconstruction), expected);
    let codebook = scalar(losses.codebook.as_ref().expect("a codebook learnt by its loss"));
    let total = scalar(&losses.reconstruction) + codebook + 0.25 * scalar(&losses.commitment);
    assert_close("total", scalar(&losses.total), total);
    Ok(())
}

#[test]
fn image_compressors_keep_l1() -> Result<()> {
    let spec = spec(&["t1_pre"], Regularisation::Kl { kl_weight: 1e-6 });
    assert_eq!(spec.reconstruction(), Reconstruction::L1);
    let Compressor::Kl(model) = build(&spec)? else { panic!("a vae(...) spec builds a KL-VAE") };
    let x = masks();
    let losses = model.loss(&x, &Tensor::zeros((2, 2, 4, 4), DType::F32, &Device::Cpu)?)?;
    assert_close("reconstruction", scalar(&losses.reconstruction), scalar(&l1(&losses.decoded, &x)?));
    Ok(())
}

#[test]
fn decoded_masks_are_probabilities_and_images_are_clamped() -> Result<()> {
    let decoded = Tensor::from_vec(vec![-2f32, 0.0, 0.4, 3.0], (1, 1, 2, 2), &Device::Cpu)?;
    let values = |images: &[&str]| -> Result<Vec<f32>> {
        spec(images, Regularisation::Kl { kl_weight: 1e-6 }).to_pixels(&decoded)?.flatten_all()?.to_vec1::<f32>()
    };
    let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
    let masks = values(&["seg"])?;
    for (p, x) in masks.iter().zip([-2f32, 0.0, 0.4, 3.0]) {
        assert!((p - sigmoid(x)).abs() < 1e-6, "σ({x}) = {p}");
    }
    assert_eq!(values(&["t1_pre", "t1_gd"])?, [0.0, 0.0, 0.4, 1.0]);
    Ok(())
}
