//! Reconstruction and regularisation losses, always reduced in f32.
//!
//! Whatever dtype the model computes in, the inputs are widened to f32 before the difference is
//! taken (seed pitfall 41): the seeds' compiled forward passes computed MSE in bf16, whose 8-bit
//! mantissa rounds small squared errors away — the loss read 15–20% low, jumped back whenever
//! compilation fell back to f32, and runs were not reproducible.
//!
//! [`kl_diag_gaussian`] sums over every non-batch dimension and averages over the batch only.
//! The seeds' 3D VAE took the mean over all dimensions instead (seed pitfall 32), which divides
//! the KL term by the number of latent elements per sample (C·D·H·W) — about 80,000 times weaker
//! than the 2D model's for the same weight, so those VAEs trained with almost no KL
//! regularisation, and nothing in the logs said so.
//!
//! Masks are reconstructed as logits and trained with [`bce_with_logits`] plus [`soft_dice`]
//! (seed pitfall 45: a mask codec is a segmentation problem, not an intensity regression). The
//! pair is MONAI's `DiceCELoss(sigmoid=True)` with its defaults: the binary cross-entropy of the
//! logits averaged over every element, plus one minus the soft Dice of their sigmoid per sample
//! and channel, averaged.

use candle_core::{DType, Result, Tensor};

/// Mean squared error over all elements, in f32 (an f32 scalar).
pub fn mse(prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
    difference(prediction, target)?.sqr()?.mean_all()
}

/// Mean absolute error over all elements, in f32 (an f32 scalar).
pub fn l1(prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
    difference(prediction, target)?.abs()?.mean_all()
}

/// Smoothing added to the numerator and denominator of [`soft_dice`] (MONAI's `smooth_nr` and
/// `smooth_dr`): an empty mask reconstructed empty scores 1, not 0/0.
pub const DICE_SMOOTH: f64 = 1e-5;

/// Binary cross-entropy of `logits` against `target` in [0, 1], averaged over all elements, in
/// f32 (an f32 scalar): `max(x, 0) − x·t + log(1 + exp(−|x|))`, the stable form of
/// `−t·log σ(x) − (1 − t)·log(1 − σ(x))` (PyTorch's `binary_cross_entropy_with_logits`).
pub fn bce_with_logits(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    check_same_shape(logits, target, "logits", "target")?;
    let x = logits.to_dtype(DType::F32)?;
    let t = target.to_dtype(DType::F32)?;
    let softplus = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((x.relu()? - (&x * &t)?)? + softplus)?.mean_all()
}

/// `1 − (2·Σ p·t + s) / (Σ p + Σ t + s)` with `p = σ(logits)` and `s` = [`DICE_SMOOTH`], summed
/// over the spatial axes of each sample and channel of `[B, C, ...]` and averaged over them, in
/// f32 (an f32 scalar).
pub fn soft_dice(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    check_same_shape(logits, target, "logits", "target")?;
    if logits.rank() < 3 {
        candle_core::bail!("soft Dice needs [batch, channels, ...] tensors, got shape {:?}", logits.shape());
    }
    let p = candle_nn::ops::sigmoid(&logits.to_dtype(DType::F32)?)?.flatten_from(2)?;
    let t = target.to_dtype(DType::F32)?.flatten_from(2)?;
    let overlap = ((p.mul(&t)?.sum(2)? * 2.0)? + DICE_SMOOTH)?;
    let total = ((p.sum(2)? + t.sum(2)?)? + DICE_SMOOTH)?;
    overlap.div(&total)?.neg()?.affine(1.0, 1.0)?.mean_all()
}

/// KL divergence of the diagonal Gaussian N(mean, exp(logvar)) from N(0, 1),
/// `0.5 · Σ (mean² + exp(logvar) − 1 − logvar)` summed over every dimension but the first
/// (batch) and averaged over the batch, in f32 (an f32 scalar). `mean` and `logvar` have the same
/// shape `[B, ...]`.
pub fn kl_diag_gaussian(mean: &Tensor, logvar: &Tensor) -> Result<Tensor> {
    check_same_shape(mean, logvar, "mean", "logvar")?;
    let batch = mean.dims().first().copied().unwrap_or(0);
    if mean.rank() < 2 || batch == 0 {
        candle_core::bail!(
            "KL divergence needs [batch, ...] tensors with a non-empty batch, got shape {:?}",
            mean.shape()
        );
    }
    let mean = mean.to_dtype(DType::F32)?;
    let logvar = logvar.to_dtype(DType::F32)?;
    let terms = ((mean.sqr()? + logvar.exp()?)? - 1.0)?.sub(&logvar)?;
    let per_sample = terms.flatten_from(1)?.sum(1)?;
    per_sample.mean_all()? * 0.5
}

/// `prediction - target` in f32, after checking that the shapes agree (no silent broadcast).
fn difference(prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
    check_same_shape(prediction, target, "prediction", "target")?;
    prediction.to_dtype(DType::F32)?.sub(&target.to_dtype(DType::F32)?)
}

fn check_same_shape(a: &Tensor, b: &Tensor, a_name: &str, b_name: &str) -> Result<()> {
    if a.shape() != b.shape() {
        candle_core::bail!("{a_name} has shape {:?} but {b_name} has shape {:?}", a.shape(), b.shape());
    }
    Ok(())
}
