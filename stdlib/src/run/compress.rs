//! Running `compress`: train a KL-VAE or VQ-VAE on a dataset's images with the shared training
//! loop, validating reconstructions on the val split.
//!
//! A 2D compressor trains on the axial slices of a 3D dataset, a 3D one on whole volumes.
//! Validation reconstructs deterministically (the KL-VAE decodes its posterior mean, the VQ-VAE
//! its quantised latent) and measures the L1 reconstruction error (the validation loss, which
//! picks the best weights) and the PSNR of the reconstruction clamped to [0, 1] (data range 1,
//! per image, then averaged).
//!
//! Training batches are augmented with the `augment` preset (`data::augment`; `vae` by default).
//!
//! With `perceptual_weight > 0` the loss adds that weight times the LPIPS (AlexNet-lin,
//! `metrics::lpips`, from the user's `lpips_weights`) between the decoded training batch and the
//! batch, every channel of every axial slice a grey image pair: the 2.5D perceptual loss for 3D
//! compressors. Not yet run: the adversarial phase (`adv_weight > 0`) is not wired to the
//! PatchGAN; it is refused with a message rather than silently dropped.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use medgen_engine::runner::{Outcome, RunContext, StageError, StageRunner};
use medgen_lang::value::Value;

use super::compressor::{Compressor, CompressorSpec, COMPRESSOR_SPEC};
use super::stage_io::{augment_param, float_param, input_dir, seed_param, strings_param, view_for, write_json};
use crate::data::augment::Preset;
use crate::data::layout::DatasetMeta;
use crate::data::loader::{Batch, Loader};
use crate::metrics::image::PSNR_CAP_DB;
use crate::metrics::lpips::{InputRange, Lpips};
use crate::nn::alexnet::MIN_INPUT_SIDE;
use crate::split::Split;
use crate::train::rng::{var_builder, Purpose, Stream, Streams};
use crate::train::trainer::{failed, model_error, train, trainable, Objective, TrainConfig, ValSums};

pub struct Compress;

impl StageRunner for Compress {
    fn version(&self) -> u32 {
        1
    }

    fn run(&self, cx: &RunContext<'_>) -> Result<Outcome, StageError> {
        let p = &cx.instance.params;
        if float_param(p, "adv_weight") > 0.0 {
            return Err(failed("the adversarial phase is not wired yet: set `adv_weight = 0`"));
        }
        let images = strings_param(p, "images");
        let spec =
            CompressorSpec::from_value(p.get("model").unwrap_or(&Value::None), images.clone()).map_err(failed)?;
        let device = crate::device::select().map_err(failed)?;
        let perceptual = perceptual_loss(cx, &device)?;
        let cfg = TrainConfig::from_params(p);
        let batch = p.get("batch").and_then(Value::as_i64).unwrap_or(16) as usize;
        let data = input_dir(cx, "data")?;
        let view = view_for(spec.dims);
        let loader = |split| Loader::for_channels(&data, split, images.clone(), view, batch, cfg.seed, device.clone());
        let (train_data, val_data) = (loader(Split::Train).map_err(failed)?, loader(Split::Val).map_err(failed)?);

        let varmap = VarMap::new();
        let vb = var_builder(&varmap, Stream::new(seed_param(p), Purpose::Init), DType::F32, &device);
        let model = spec.build(vb).map_err(model_error)?;
        let augment = augment_param(p);
        if p.get("batch_augment").and_then(Value::as_str).is_some_and(|b| b != "none") {
            return Err(failed(
                "batch augmentation (mixup, cutmix) is not implemented yet: set `batch_augment = none`",
            ));
        }
        let mut objective =
            Reconstruct { model: &model, augment, codes: None, perceptual: perceptual.as_ref().map(|(l, w)| (l, *w)) };
        let params = trainable(&varmap, &model.buffers());
        let report = train(cx, &varmap, params, &mut objective, (&train_data, &val_data), &cfg)?;

        write_json(&cx.out_dir, COMPRESSOR_SPEC, &spec)?;
        write_json(&cx.out_dir, "config.json", &serde_json::json!({ "compressor": spec, "training": cfg }))?;
        report.write_logs(&cx.out_dir)?;
        let best = report.best_record();
        let mut metrics = std::collections::BTreeMap::new();
        metrics.insert("val_loss".to_string(), report.best.1);
        metrics.insert("train_loss".to_string(), report.last().train_loss);
        if let Some(Some(psnr)) = best.val.get("psnr") {
            metrics.insert("psnr".to_string(), *psnr);
        }
        Ok(Outcome { metrics })
    }
}

/// The LPIPS network and the perceptual loss's weight, when `perceptual_weight > 0`.
fn perceptual_loss(cx: &RunContext<'_>, device: &Device) -> Result<Option<(Lpips, f64)>, StageError> {
    let weight = float_param(&cx.instance.params, "perceptual_weight");
    if weight <= 0.0 {
        return Ok(None);
    }
    let path = cx.files.get("lpips_weights").ok_or_else(|| {
        failed(format!(
            "the perceptual loss (`perceptual_weight = {weight}`) needs the LPIPS network: set `lpips_weights = \
             \"path/to/lpips-alex.safetensors\"` (docs/weights.md shows the one-time conversion of the official \
             weights), or `perceptual_weight = 0` to train with the reconstruction loss alone"
        ))
    })?;
    let data = DatasetMeta::read(&input_dir(cx, "data")?).map_err(failed)?;
    let [_, height, width] = data.shape;
    if height.min(width) < MIN_INPUT_SIDE {
        return Err(failed(format!(
            "the perceptual loss compares slices of at least {MIN_INPUT_SIDE}×{MIN_INPUT_SIDE} pixels (AlexNet's \
             smallest input), these are {height}×{width}: set `perceptual_weight = 0`"
        )));
    }
    let lpips = Lpips::load(path, InputRange::Unit, device).map_err(|e| failed(e.to_string()))?;
    Ok(Some((lpips, weight)))
}

struct Reconstruct<'a> {
    model: &'a Compressor,
    augment: Preset,
    /// LPIPS and its weight in the loss.
    perceptual: Option<(&'a Lpips, f64)>,
    /// The last training step's VQ latent and codes, for the EMA codebook update.
    codes: Option<(Tensor, Tensor)>,
}

impl Reconstruct<'_> {
    /// `total` plus the weighted perceptual loss of `decoded` against `x`, when there is one.
    fn with_perceptual(&self, total: Tensor, decoded: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.perceptual {
            Some((lpips, weight)) => total + (lpips.loss(decoded, x)? * weight)?,
            None => Ok(total),
        }
    }
}

impl Objective for Reconstruct<'_> {
    fn loss(&mut self, batch: &Batch, streams: &mut Streams) -> candle_core::Result<Tensor> {
        let (x, _) = self.augment.apply(batch, streams.get(Purpose::Augmentation))?;
        let x = &x;
        match self.model {
            Compressor::Kl(m) => {
                // The reparameterisation noise comes from the checkpointed `Noise` stream, so a
                // resumed run draws what the uninterrupted one drew.
                let mut shape = x.dims().to_vec();
                shape[1] = m.latent_channels();
                shape[2..].iter_mut().for_each(|s| *s /= m.scale_factor());
                let noise = streams.get(Purpose::Noise).normal(shape, x.device())?;
                let losses = m.loss(x, &noise)?;
                self.with_perceptual(losses.total, &losses.decoded, x)
            }
            Compressor::Vq(m) => {
                let losses = m.loss(x)?;
                if !m.ema_buffer_names().is_empty() {
                    self.codes = Some((losses.encoded.detach(), losses.indices));
                }
                self.with_perceptual(losses.total, &losses.decoded, x)
            }
        }
    }

    fn after_step(&mut self, _batch: &Batch) -> candle_core::Result<()> {
        match (self.model, self.codes.take()) {
            (Compressor::Vq(m), Some((z, indices))) => m.update_codebook(&z, &indices),
            _ => Ok(()),
        }
    }

    fn validate(&mut self, batch: &Batch, _stream: &mut Stream, sums: &mut ValSums) -> candle_core::Result<()> {
        let x = &batch.images;
        let reconstruction = self.model.decode(&self.model.encode(x)?)?;
        let samples = x.dim(0)?;
        let per_sample = |t: Tensor| -> candle_core::Result<Vec<f32>> { t.flatten_from(1)?.mean(1)?.to_vec1::<f32>() };
        let l1 = per_sample((&reconstruction - x)?.abs()?)?;
        let mse = per_sample((reconstruction.clamp(0f32, 1f32)? - x)?.sqr()?)?;
        for (l1, mse) in l1.iter().zip(&mse) {
            sums.loss += f64::from(*l1);
            sums.add("psnr", psnr(f64::from(*mse)));
        }
        sums.samples += samples;
        Ok(())
    }
}

/// PSNR in dB for data range 1, capped at [`PSNR_CAP_DB`] for a perfect reconstruction.
fn psnr(mse: f64) -> f64 {
    (-10.0 * mse.log10()).min(PSNR_CAP_DB)
}
