//! Running `diffuse`: train a denoiser with a strategy (how to noise) for a mode (what to
//! generate), on pixels from a dataset or on latents from `encode`.
//!
//! **Inputs by mode.** The images are the mode's channels (`dual`: t1_pre and t1_gd); image modes
//! are conditioned on the tumour mask by an extra input channel (at latent resolution in latent
//! space); `seg_conditioned` adds the tumour count per RANO-BM size bin as a vector, and `multi`
//! the one-hot modality (FiLM), so the one network knows which modality it generates.
//!
//! **Classifier-free guidance** training: with probability `cfg_dropout` a sample's condition
//! (mask channel and vector) is replaced by zeros, drawn from the augmentation stream; `sample`
//! then calls the network with and without the condition.
//!
//! **Spaces.** Latents arrive scaled to unit variance by the scale `encode` measured; pixels are
//! in [0, 1], or [-1, 1] with `rescale = true` (then `sample` maps back before clamping: seed
//! pitfall 77).
//!
//! **Validation** measures the same loss on the val split, with the validation stream, and the
//! velocity (or noise) MSE per tenth of the time range, `t_0.0-0.1` … `t_0.9-1.0` (pitfall 69:
//! the training MSE says nothing about which noise levels the model gets wrong).
//!
//! `denoiser.json` records everything `sample` needs: architecture, strategy, mode, space,
//! the latent scale, shapes and spacing.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use medgen_engine::runner::{Outcome, RunContext, StageError};
use serde::{Deserialize, Serialize};

use super::denoiser::{Denoiser, DenoiserSpec, VectorCondition};
use super::latents::{LatentMeta, LatentSource, LatentSourceConfig};
use super::stage_io::{input_dir, view_for, write_json};
use super::strategy_spec::StrategySpec;
use super::Run;
use crate::data::augment::Preset;
use crate::data::layout::DatasetMeta;
use crate::data::loader::{Batch, Loader, Mode};
use crate::diffusion::strategy::Strategy;
use crate::split::Split;
use crate::stages::{DiffuseConfig, SpaceKind};
use crate::train::rng::{var_builder, Purpose, Stream, Streams};
use crate::train::trainer::{failed, model_error, train, trainable, BatchSource, Objective, ValSums};

/// Bins of the normalised time range for the per-timestep validation MSE.
const TIME_BINS: usize = 10;

/// The file `sample` reads.
pub const DENOISER_RECORD: &str = "denoiser.json";

/// Where a denoiser works.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "space", rename_all = "snake_case")]
pub enum Space {
    /// Pixels in [0, 1], or [-1, 1] when `rescale`.
    Pixel { rescale: bool },
    /// Latents multiplied by `scale` (1 / std of the training latents).
    Latent { scale: f64 },
}

/// Everything `sample` needs to know about a trained denoiser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenoiserRecord {
    pub denoiser: DenoiserSpec,
    pub strategy: StrategySpec,
    pub mode: Mode,
    pub space: Space,
    /// The generated image modalities, one per output channel (for `multi`, the choices).
    pub images: Vec<String>,
    /// Whether the network takes the tumour mask as an extra input channel.
    pub mask_condition: bool,
    /// `[C, D, H, W]` of one generated volume in the denoiser's space.
    pub volume_shape: [usize; 4],
    /// Millimetres per voxel of the output images, (depth, height, width).
    pub pixel_spacing: [f64; 3],
    /// `[D, H, W]` of the output images.
    pub pixel_shape: [usize; 3],
}

/// What the data says about the volumes a denoiser generates (a `nifti` dataset without
/// `shape` says it only here).
struct DataInfo {
    space: Space,
    volume_shape: [usize; 4],
    pixel_spacing: [f64; 3],
    pixel_shape: [usize; 3],
}

pub struct Diffuse;

impl Run for Diffuse {
    type Config = DiffuseConfig;

    fn version(&self) -> u32 {
        1
    }

    fn run(&self, cx: &RunContext<'_>, c: DiffuseConfig) -> Result<Outcome, StageError> {
        let spec = &c.model;
        let device = crate::device::select().map_err(failed)?;
        let data = input_dir(cx, "data")?;
        let (sources, info) = match c.space {
            SpaceKind::Latent => latent_sources(&data, &c, &device)?,
            SpaceKind::Pixel => pixel_sources(&data, &c, &device)?,
        };
        let strategy_spec = c.strategy.spec(&model_spatial(&info.volume_shape, spec.dims));
        let strategy = strategy_spec.build().map_err(model_error)?;

        let varmap = VarMap::new();
        let vb = var_builder(&varmap, Stream::new(c.train.seed, Purpose::Init), DType::F32, &device);
        let model = spec.build(vb).map_err(model_error)?;
        let mut objective = Denoise {
            model: &model,
            strategy: &strategy,
            cfg_dropout: c.cfg_dropout,
            rescale: c.space == SpaceKind::Pixel && c.rescale,
            augment: c.augment,
            vector: spec.vector,
            timesteps: strategy_spec.time_range(),
        };
        let (train_data, val_data) = (&*sources.0, &*sources.1);
        let report = train(cx, &varmap, trainable(&varmap, &[]), &mut objective, (train_data, val_data), &c.train)?;

        let record = DenoiserRecord {
            denoiser: spec.clone(),
            strategy: strategy_spec,
            mode: c.mode,
            space: info.space,
            images: c.images.clone(),
            mask_condition: c.mask_condition,
            volume_shape: info.volume_shape,
            pixel_spacing: info.pixel_spacing,
            pixel_shape: info.pixel_shape,
        };
        write_json(&cx.out_dir, DENOISER_RECORD, &record)?;
        write_json(&cx.out_dir, "config.json", &serde_json::json!({ "denoiser": record, "config": c }))?;
        report.write_logs(&cx.out_dir)?;
        let metrics: BTreeMap<String, f64> =
            [("val_loss".to_string(), report.best.1), ("train_loss".to_string(), report.last().train_loss)]
                .into_iter()
                .collect();
        Ok(Outcome { metrics })
    }
}

type Sources = (Box<dyn BatchSource>, Box<dyn BatchSource>);

/// The spatial shape the network sees: a slice `[H, W]` for a 2D model, the volume otherwise.
pub fn model_spatial(volume_shape: &[usize; 4], dims: usize) -> Vec<usize> {
    if dims == 3 {
        volume_shape[1..].to_vec()
    } else {
        volume_shape[2..].to_vec()
    }
}

fn pixel_sources(data: &Path, c: &DiffuseConfig, device: &Device) -> Result<(Sources, DataInfo), StageError> {
    let meta = DatasetMeta::read(data).map_err(failed)?;
    let (mode, batch, seed) = (c.mode, c.batch, c.train.seed);
    let view = view_for(c.model.dims);
    let loader = |split| Loader::new(data, split, mode, view, batch, seed, device.clone()).map_err(failed);
    let sources: Sources = (Box::new(loader(Split::Train)?), Box::new(loader(Split::Val)?));
    let [d, h, w] = meta.shape;
    let info = DataInfo {
        space: Space::Pixel { rescale: c.rescale },
        volume_shape: [c.model.out_channels, d, h, w],
        pixel_spacing: meta.spacing,
        pixel_shape: meta.shape,
    };
    Ok((sources, info))
}

fn latent_sources(data: &Path, c: &DiffuseConfig, device: &Device) -> Result<(Sources, DataInfo), StageError> {
    let meta = LatentMeta::read(data).map_err(failed)?;
    let config = |split| LatentSourceConfig {
        split,
        model_dims: c.model.dims,
        condition: c.mask_condition,
        size_bins: c.mode == Mode::SegConditioned,
        batch_size: c.batch,
        seed: c.train.seed,
    };
    let source = |split| LatentSource::new(data, &meta, &config(split), device).map_err(failed);
    let sources: Sources = (Box::new(source(Split::Train)?), Box::new(source(Split::Val)?));
    let [d, h, w] = meta.shape;
    let info = DataInfo {
        space: Space::Latent { scale: meta.scale },
        volume_shape: [meta.channels, d, h, w],
        pixel_spacing: meta.pixel_spacing,
        pixel_shape: meta.pixel_shape,
    };
    Ok((sources, info))
}

struct Denoise<'a> {
    model: &'a Denoiser,
    strategy: &'a Strategy,
    cfg_dropout: f64,
    rescale: bool,
    augment: Preset,
    vector: Option<VectorCondition>,
    /// The model-time value of pure noise (`T` for DDPM, 1 for rectified flow), to bin by.
    timesteps: f64,
}

impl Denoise<'_> {
    /// Per-sample squared error of the prediction, `[B]`, and the times drawn, given the
    /// standard-normal noise, and a uniform and a normal number per sample for the time.
    fn errors(&self, batch: &Batch, draws: Draws, keep: Option<&Tensor>) -> candle_core::Result<(Tensor, Tensor)> {
        let x0 = if self.rescale { batch.images.affine(2.0, -1.0)? } else { batch.images.clone() };
        let condition = batch.condition.as_ref();
        let device = x0.device().clone();
        let b = x0.dim(0)?;
        let t = self.strategy.sample_t(&draws.u, &draws.n)?;
        let xt = self.strategy.noisy(&x0, &draws.eps, &t)?;
        let input = match condition {
            Some(mask) => Tensor::cat(&[&xt, &drop(mask, keep)?], 1)?,
            None => xt,
        };
        let vector = match self.vector {
            Some(VectorCondition::SizeBins) => batch.size_bins.as_ref().map(|v| drop(v, keep)).transpose()?,
            Some(VectorCondition::Modality { count }) => {
                let id = batch.mode_id.unwrap_or(0);
                let one_hot: Vec<f32> =
                    (0..b).flat_map(|_| (0..count).map(move |i| f32::from(u8::from(i == id)))).collect();
                Some(drop(&Tensor::from_vec(one_hot, (b, count), &device)?, keep)?)
            }
            None => None,
        };
        let out = self.model.forward(&input, &t, self.strategy.time_scale(), vector.as_ref())?;
        let target = self.strategy.target(&x0, &draws.eps, &t)?;
        let err = (out.to_dtype(DType::F32)? - target.to_dtype(DType::F32)?)?.sqr()?.flatten_from(1)?.mean(1)?;
        Ok((err, t))
    }
}

/// The random numbers of one denoising step.
struct Draws {
    eps: Tensor,
    u: Tensor,
    n: Tensor,
}

impl Draws {
    /// The noise from `noise`, then the times' uniform and normal draws from `times` (from
    /// `noise` too when `None`, as validation does).
    fn draw(batch: &Batch, noise: &mut Stream, times: Option<&mut Stream>) -> candle_core::Result<Draws> {
        let (device, b) = (batch.images.device(), batch.images.dim(0)?);
        let eps = noise.normal(batch.images.shape(), device)?;
        let times = times.unwrap_or(noise);
        Ok(Draws { eps, u: times.uniform(b, device)?, n: times.normal(b, device)? })
    }
}

/// `condition` with the samples where `keep` is 0 zeroed (classifier-free guidance dropout).
fn drop(condition: &Tensor, keep: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match keep {
        Some(keep) => {
            let mut shape = vec![condition.dim(0)?];
            shape.extend(std::iter::repeat_n(1, condition.rank() - 1));
            condition.broadcast_mul(&keep.reshape(shape)?)
        }
        None => Ok(condition.clone()),
    }
}

impl Objective for Denoise<'_> {
    fn loss(&mut self, batch: &Batch, streams: &mut Streams) -> candle_core::Result<Tensor> {
        let (images, condition) = self.augment.apply(batch, streams.get(Purpose::Augmentation))?;
        let batch = &Batch {
            images,
            condition,
            size_bins: batch.size_bins.clone(),
            mode_id: batch.mode_id,
            origins: Vec::new(),
        };
        let b = batch.images.dim(0)?;
        let keep = if self.cfg_dropout > 0.0 {
            let u = streams.get(Purpose::Augmentation).uniform(b, batch.images.device())?;
            Some(u.ge(self.cfg_dropout)?.to_dtype(DType::F32)?)
        } else {
            None
        };
        let (noise, times) = streams.pair(Purpose::Noise, Purpose::Timesteps);
        let result = self.errors(batch, Draws::draw(batch, noise, Some(times))?, keep.as_ref());
        let (err, t) = result?;
        match self.strategy.loss_weights(&t)? {
            Some(w) => (err * w)?.mean_all(),
            None => err.mean_all(),
        }
    }

    fn validate(&mut self, batch: &Batch, stream: &mut Stream, sums: &mut ValSums) -> candle_core::Result<()> {
        let (err, t) = self.errors(batch, Draws::draw(batch, stream, None)?, None)?;
        let err = err.to_vec1::<f32>()?;
        let t = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let name = |bin: usize| {
            let lo = bin as f64 / TIME_BINS as f64;
            format!("t_{lo:.1}-{:.1}", lo + 1.0 / TIME_BINS as f64)
        };
        (0..TIME_BINS).for_each(|bin| sums.declare(&name(bin)));
        for (e, t) in err.iter().zip(&t) {
            sums.loss += f64::from(*e);
            let bin = ((f64::from(*t) / self.timesteps * TIME_BINS as f64) as usize).min(TIME_BINS - 1);
            sums.add(&name(bin), f64::from(*e));
        }
        sums.samples += err.len();
        Ok(())
    }
}
