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
use medgen_engine::runner::{Outcome, RunContext, StageError};

use super::compress_validation::{Measure, Measures};
use super::compressor::{Compressor, CompressorSpec, COMPRESSOR_SPEC};
use super::stage_io::{input_dir, view_for, write_json};
use super::Run;
use crate::data::augment::Preset;
use crate::data::layout::DatasetMeta;
use crate::data::loader::{Batch, Loader};
use crate::metrics::lpips::{InputRange, Lpips};
use crate::nn::alexnet::MIN_INPUT_SIDE;
use crate::nn::autoencoder::Reconstruction;
use crate::split::Split;
use crate::stages::{compress_metric_names, CompressConfig};
use crate::train::rng::{var_builder, Purpose, Stream, Streams};
use crate::train::trainer::{failed, model_error, train, trainable, Objective, TrainReport, ValSums};

pub struct Compress;

impl Run for Compress {
    type Config = CompressConfig;

    fn version(&self) -> u32 {
        2
    }

    fn run(&self, cx: &RunContext<'_>, c: CompressConfig) -> Result<Outcome, StageError> {
        let spec = &c.model;
        let device = crate::device::select().map_err(failed)?;
        let lpips = lpips_network(cx, &c, &device)?;
        let measures = Measures::new(&c.metrics, lpips.as_ref()).map_err(failed)?;
        let data = input_dir(cx, "data")?;
        let view = view_for(spec.dims);
        let loader = |split| {
            Loader::for_channels(&data, split, spec.images.clone(), view, c.batch, c.train.seed, device.clone())
        };
        let (train_data, val_data) = (loader(Split::Train).map_err(failed)?, loader(Split::Val).map_err(failed)?);

        let varmap = VarMap::new();
        let vb = var_builder(&varmap, Stream::new(c.train.seed, Purpose::Init), DType::F32, &device);
        let model = spec.build(vb).map_err(model_error)?;
        let perceptual = lpips.as_ref().filter(|_| c.perceptual_weight > 0.0).map(|l| (l, c.perceptual_weight));
        let mut objective = Reconstruct { spec, model: &model, augment: c.augment, codes: None, perceptual, measures };
        let params = trainable(&varmap, &model.buffers());
        let report = train(cx, &varmap, params, &mut objective, (&train_data, &val_data), &c.train)?;

        write_json(&cx.out_dir, COMPRESSOR_SPEC, spec)?;
        write_json(&cx.out_dir, "config.json", &c)?;
        report.write_logs(&cx.out_dir)?;
        Ok(Outcome { metrics: reported(&report, &c.metrics)? })
    }
}

/// Exactly `stages::compress::metric_names`: the last epoch's training loss, the best
/// validation loss, and each validation metric at the best epoch.
fn reported(report: &TrainReport, metrics: &[Measure]) -> Result<BTreeMap<String, f64>, StageError> {
    let best = report.best_record();
    let names: Vec<String> = metrics.iter().map(|m| m.name().to_string()).collect();
    compress_metric_names(&names)
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
/// validation metric needs it. The checker saw to it that `lpips_weights` is given then, and
/// that the slices fit AlexNet where the dataset's shape was known; a `nifti` dataset without
/// `shape` is measured here.
fn lpips_network(cx: &RunContext<'_>, c: &CompressConfig, device: &Device) -> Result<Option<Lpips>, StageError> {
    let weight = c.perceptual_weight;
    let metric = c.metrics.contains(&Measure::Lpips);
    let Some(file) = c.lpips_weights.as_ref().filter(|_| weight > 0.0 || metric) else {
        return Ok(None);
    };
    let what = if weight > 0.0 {
        format!("the perceptual loss (`perceptual_weight = {weight}`)")
    } else {
        "the `lpips` validation metric".to_string()
    };
    let data = DatasetMeta::read(&input_dir(cx, "data")?).map_err(failed)?;
    let [_, height, width] = data.shape;
    if height.min(width) < MIN_INPUT_SIDE {
        return Err(failed(format!(
            "{what} compares slices of at least {MIN_INPUT_SIDE}×{MIN_INPUT_SIDE} pixels (AlexNet's smallest \
             input), these are {height}×{width}"
        )));
    }
    Lpips::load(&file.path(cx)?, InputRange::Unit, device).map(Some).map_err(|e| failed(e.to_string()))
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
