//! Running `encode`: every patient of a dataset (all splits: diffusion trains on `train`,
//! validates on `val`, and `sample` may condition on `test`) through a trained compressor, into
//! the latent layout of `run::latents`, with the latent scale measured on the training split.
//!
//! A 2D compressor encodes a volume's axial slices, `batch` at a time, and stacks them back along
//! depth; a 3D compressor encodes the whole volume. Encoding is deterministic (see
//! `run::compressor`), so the same compressor and data always give the same latents.

use std::path::Path;
use std::sync::atomic::Ordering;

use candle_core::{Device, Tensor};
use medgen_engine::runner::{Outcome, RunContext, StageError};

use super::compressor::{Compressor, CompressorSpec};
use super::latents::{latent_path, mask_to_latent, moments, save_latent, LatentMeta};
use super::stage_io::{input_dir, stored_weights};
use super::Run;
use crate::data::layout::{volume_path, DatasetMeta};
use crate::data::volume::Volume;
use crate::io::nifti::load_nifti;
use crate::split::Split;
use crate::stages::EncodeConfig;
use crate::train::trainer::{failed, model_error, BEST_WEIGHTS};
use crate::vocab::SEG;

pub struct Encode;

impl Run for Encode {
    type Config = EncodeConfig;

    fn version(&self) -> u32 {
        1
    }

    fn run(&self, cx: &RunContext<'_>, config: EncodeConfig) -> Result<Outcome, StageError> {
        let batch = config.batch;
        let device = crate::device::select().map_err(failed)?;
        let compressor_dir = input_dir(cx, "compressor")?;
        let (spec, model) = load_compressor(&compressor_dir, &device)?;
        let data = input_dir(cx, "data")?;
        let dataset = DatasetMeta::read(&data).map_err(failed)?;
        let has_seg = dataset.modalities.iter().any(|m| m == SEG);
        let scale = spec.scale_factor();
        let depth_scale = if spec.dims == 3 { scale } else { 1 };
        let [d, h, w] = dataset.shape;
        let mut train_latents = Vec::new();
        for (i, patient) in dataset.patients.iter().enumerate() {
            if cx.cancel.load(Ordering::SeqCst) {
                return Err(StageError::Cancelled);
            }
            (cx.progress)(format!("patient {}/{}", i + 1, dataset.patients.len()));
            let volumes: Vec<Tensor> =
                spec.images.iter().map(|m| read_volume(&data, &patient.id, m, &device)).collect::<Result<_, _>>()?;
            let images = Tensor::stack(&volumes, 0).map_err(model_error)?;
            let latent = encode_volume(&model, &images, spec.dims, batch).map_err(model_error)?;
            let seg = if has_seg {
                let mask = read_volume(&data, &patient.id, SEG, &device)?.unsqueeze(0).map_err(model_error)?;
                Some(mask_to_latent(&mask, scale, spec.dims).map_err(model_error)?)
            } else {
                None
            };
            save_latent(&latent_path(&cx.out_dir, &patient.id), &latent, seg.as_ref()).map_err(failed)?;
            if patient.split == Split::Train {
                train_latents.push(latent);
            }
        }
        if train_latents.is_empty() {
            return Err(failed(
                "the dataset's training split is empty: there is nothing to measure the latent scale on",
            ));
        }
        let (mean, std) = moments(&train_latents).map_err(model_error)?;
        if !(std.is_finite() && std > 0.0) {
            return Err(failed(format!(
                "the training latents have standard deviation {std}: the compressor collapsed"
            )));
        }
        let spacing = dataset.spacing;
        let meta = LatentMeta {
            images: spec.images.clone(),
            channels: spec.latent_channels,
            dims: spec.dims,
            shape: [d / depth_scale, h / scale, w / scale],
            spacing: [spacing[0] * depth_scale as f64, spacing[1] * scale as f64, spacing[2] * scale as f64],
            pixel_shape: dataset.shape,
            pixel_spacing: spacing,
            scale: 1.0 / std,
            mean,
            std,
            has_seg,
            patients: dataset.patients.clone(),
        };
        meta.write(&cx.out_dir).map_err(failed)?;
        let metrics = [("latent_std".to_string(), std), ("latent_scale".to_string(), 1.0 / std)].into_iter().collect();
        Ok(Outcome { metrics })
    }
}

/// A trained compressor from a `compress` output directory: its specification and best weights.
pub fn load_compressor(dir: &Path, device: &Device) -> Result<(CompressorSpec, Compressor), StageError> {
    let spec = CompressorSpec::read(dir).map_err(failed)?;
    let weights = dir.join(BEST_WEIGHTS);
    let vb = stored_weights(&weights, device)?;
    let model = spec.build(vb).map_err(|e| failed(format!("{}: {e}", weights.display())))?;
    Ok((spec, model))
}

/// One modality of a patient as a `[D, H, W]` tensor.
pub fn read_volume(dir: &Path, patient: &str, modality: &str, device: &Device) -> Result<Tensor, StageError> {
    let Volume { shape, data, .. } =
        load_nifti(&volume_path(dir, patient, modality)).map_err(|e| failed(e.to_string()))?;
    Tensor::from_vec(data, shape.to_vec(), device).map_err(model_error)
}

/// Encodes `[C, D, H, W]` images to a `[c, D', h, w]` latent.
pub fn encode_volume(model: &Compressor, images: &Tensor, dims: usize, batch: usize) -> candle_core::Result<Tensor> {
    by_slices(|x| model.encode(x), images, dims, batch)
}

/// Decodes a `[c, D', h, w]` latent to `[C, D, H, W]` values in [0, 1]
/// ([`CompressorSpec::to_pixels`]: intensities, or a mask codec's probabilities).
pub fn decode_volume(
    spec: &CompressorSpec,
    model: &Compressor,
    latent: &Tensor,
    batch: usize,
) -> candle_core::Result<Tensor> {
    by_slices(|z| spec.to_pixels(&model.decode(z)?), latent, spec.dims, batch)
}

/// `f` on a `[C, D, H, W]` volume: whole for a 3D model, or on its axial slices, `batch` at a
/// time, stacked back along depth for a 2D one.
fn by_slices(
    f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    volume: &Tensor,
    dims: usize,
    batch: usize,
) -> candle_core::Result<Tensor> {
    if dims == 3 {
        return f(&volume.unsqueeze(0)?)?.squeeze(0);
    }
    let slices = volume.transpose(0, 1)?.contiguous()?;
    let depth = slices.dim(0)?;
    let mut parts = Vec::new();
    for start in (0..depth).step_by(batch) {
        parts.push(f(&slices.narrow(0, start, batch.min(depth - start))?)?);
    }
    Tensor::cat(&parts, 0)?.transpose(0, 1)?.contiguous()
}
