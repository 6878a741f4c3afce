//! Running `compress`: train a KL-VAE or VQ-VAE on a dataset's images with the shared training
//! loop, validating reconstructions on the val split.
//!
//! A 2D compressor trains on the axial slices of a 3D dataset, a 3D one on whole volumes.
//! Validation reconstructs deterministically (the KL-VAE decodes its posterior mean, the VQ-VAE
//! its quantised latent) and measures the reconstruction term of the training loss per sample
//! (the validation loss, which picks the best weights) and the resolved `metrics`
//! (`run::compress_validation`). The stage reports exactly `stages::compress::metric_names`:
//! the last epoch's training loss, and the validation loss and metrics of the best epoch.
//!
//! Training batches are augmented with the `augment` preset (`data::augment`; `vae` by default,
//! the flip-only `diffusion` for masks).
//!
//! **Masks** (`images = [seg]`): the decoder outputs logits, the reconstruction loss is BCE +
//! soft Dice (`train::loss`, seed pitfall 45) with the KL or VQ terms unchanged, the targets
//! stay binary (no intensity augmentation), and Dice and IoU score the probabilities binarised
//! at `binarize_seg`'s threshold (`CompressorSpec::to_pixels`, shared with `evaluate`).
//!
//! With `perceptual_weight > 0` the loss adds that weight times the LPIPS (AlexNet-lin,
//! `metrics::lpips`, from the user's `lpips_weights`) between the decoded training batch and the
//! batch, every channel of every axial slice a grey image pair: the 2.5D perceptual loss for 3D
//! compressors. The adversarial phase (`adv_weight > 0`), batch augmentation and DC-AE are refused
//! by the checker (E0123), and intensity augmentation of masks too (E0127): a checked pipeline
//! never asks this runner for them.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use medgen_engine::runner::{Outcome, RunContext, StageError, StageRunner};
use medgen_lang::value::Value;

use super::compress_validation::Measures;
use super::compressor::{Compressor, CompressorSpec, COMPRESSOR_SPEC};
use super::stage_io::{augment_param, float_param, input_dir, seed_param, strings_param, view_for, write_json};
use crate::data::augment::Preset;
use crate::data::layout::DatasetMeta;
use crate::data::loader::{Batch, Loader};
use crate::metrics::lpips::{InputRange, Lpips};
use crate::nn::alexnet::MIN_INPUT_SIDE;
use crate::nn::autoencoder::Reconstruction;
use crate::split::Split;
use crate::stages::compress_metric_names;
use crate::train::rng::{var_builder, Purpose, Stream, Streams};
use crate::train::trainer::{failed, model_error, train, trainable, Objective, TrainConfig, TrainReport, ValSums};

pub struct Compress;

impl StageRunner for Compress {
    fn version(&self) -> u32 {
        2
    }

    fn run(&self, cx: &RunContext<'_>) -> Result<Outcome, StageError> {
        let p = &cx.instance.params;
        let images = strings_param(p, "images");
        let spec =
            CompressorSpec::from_value(p.get("model").unwrap_or(&Value::None), images.clone()).map_err(failed)?;
        let device = crate::device::select().map_err(failed)?;
        let metrics = strings_param(p, "metrics");
        let lpips = lpips_network(cx, &metrics, &device)?;
        let perceptual_weight = float_param(p, "perceptual_weight");
        let measures = Measures::new(&metrics, lpips.as_ref()).map_err(failed)?;
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
        let perceptual = lpips.as_ref().filter(|_| perceptual_weight > 0.0).map(|l| (l, perceptual_weight));
        let mut objective = Reconstruct { spec: &spec, model: &model, augment, codes: None, perceptual, measures };
        let params = trainable(&varmap, &model.buffers());
        let report = train(cx, &varmap, params, &mut objective, (&train_data, &val_data), &cfg)?;

        write_json(&cx.out_dir, COMPRESSOR_SPEC, &spec)?;
        write_json(&cx.out_dir, "config.json", &serde_json::json!({ "compressor": spec, "training": cfg }))?;
        report.write_logs(&cx.out_dir)?;
        Ok(Outcome { metrics: reported(&report, &metrics)? })
    }
}

/// Exactly `stages::compress::metric_names`: the last epoch's training loss, the best
/// validation loss, and each validation metric at the best epoch.
fn reported(report: &TrainReport, metrics: &[String]) -> Result<BTreeMap<String, f64>, StageError> {
    let best = report.best_record();
    compress_metric_names(metrics)
        .into_iter()
        .map(|name| {
            let value = match name.as_str() {
                "train_loss" => report.last().train_loss,
                "val_loss" => report.best.1,
                metric => best
                    .val
                    .get(metric)
                    .copied()
                    .flatten()
                    .ok_or_else(|| failed(format!("validation of epoch {} measured no `{metric}`", best.epoch)))?,
            };
            Ok((name, value))
        })
        .collect()
}

/// The LPIPS network, when the perceptual loss (`perceptual_weight > 0`) or the `lpips`
/// validation metric needs it.
fn lpips_network(cx: &RunContext<'_>, metrics: &[String], device: &Device) -> Result<Option<Lpips>, StageError> {
    let weight = float_param(&cx.instance.params, "perceptual_weight");
    let metric = metrics.iter().any(|m| m == "lpips");
    if weight <= 0.0 && !metric {
        return Ok(None);
    }
    let what = if weight > 0.0 {
        format!("the perceptual loss (`perceptual_weight = {weight}`)")
    } else {
        "the `lpips` validation metric".to_string()
    };
    let path = cx.files.get("lpips_weights").ok_or_else(|| {
        failed(format!(
            "{what} needs the LPIPS network: set `lpips_weights = \"path/to/lpips-alex.safetensors\"` \
             (docs/weights.md shows the one-time conversion of the official weights), or remove it"
        ))
    })?;
    let data = DatasetMeta::read(&input_dir(cx, "data")?).map_err(failed)?;
    let [_, height, width] = data.shape;
    if height.min(width) < MIN_INPUT_SIDE {
        return Err(failed(format!(
            "{what} compares slices of at least {MIN_INPUT_SIDE}×{MIN_INPUT_SIDE} pixels (AlexNet's smallest \
             input), these are {height}×{width}"
        )));
    }
    Lpips::load(path, InputRange::Unit, device).map(Some).map_err(|e| failed(e.to_string()))
}

struct Reconstruct<'a> {
    spec: &'a CompressorSpec,
    model: &'a Compressor,
    augment: Preset,
    /// LPIPS and its weight in the loss.
    perceptual: Option<(&'a Lpips, f64)>,
    /// The last training step's VQ latent and codes, for the EMA codebook update.
    codes: Option<(Tensor, Tensor)>,
    /// The validation metrics.
    measures: Measures<'a>,
}

impl Reconstruct<'_> {
    /// The validation loss of each sample of `x`: the reconstruction term of the training loss
    /// on its deterministic reconstruction `decoded` (L1 for images, BCE + soft Dice on mask
    /// logits), without the KL or VQ terms.
    fn sample_losses(&self, decoded: &Tensor, x: &Tensor) -> candle_core::Result<Vec<f64>> {
        match self.spec.reconstruction() {
            Reconstruction::L1 => {
                let l1 = (decoded - x)?.abs()?.flatten_from(1)?.mean(1)?.to_vec1::<f32>()?;
                Ok(l1.into_iter().map(f64::from).collect())
            }
            loss => (0..x.dim(0)?)
                .map(|i| {
                    let value = loss.loss(&decoded.narrow(0, i, 1)?, &x.narrow(0, i, 1)?)?.to_scalar::<f32>()?;
                    Ok(f64::from(value))
                })
                .collect(),
        }
    }

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
        let decoded = self.model.decode(&self.model.encode(x)?)?;
        let losses = self.sample_losses(&decoded, x)?;
        sums.loss += losses.iter().sum::<f64>();
        sums.samples += losses.len();
        self.measures.add(x, &self.spec.to_pixels(&decoded)?, sums)
    }
}
