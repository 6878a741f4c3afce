//! Running `sample`: integrate a trained denoiser's ODE from noise with the chosen solver, decode
//! latents, and write NIfTI volumes with PNG previews.
//!
//! **Order of operations** (seed pitfalls 75–79): the solver's clean estimate is never clamped in
//! latent space; latents are divided by the latent scale and decoded (a mask codec's logits
//! become probabilities, `CompressorSpec::to_pixels`); pixels trained in [-1, 1] are mapped back
//! to [0, 1]; only then are values clamped to [0, 1], and generated masks binarised with the one
//! `binarize_seg`.
//!
//! **Conditions.** Modes conditioned on a mask (`bravo`, `dual`, `multi`) and `seg_conditioned`
//! (tumour counts per size bin) take their conditions from the `conditions` input's patients
//! (e.g. `brain.test`), cycling through them; each sample's folder keeps the mask it was
//! conditioned on as `seg.nii.gz`, so paired metrics compare a sample with its own patient. A
//! sample conditioned on a patient (its images and that mask) is written at the patient's origin
//! (`PatientMeta::origin`), so it overlays the patient's files in a viewer; unconditioned samples
//! are written at origin 0.
//! With `guidance > 1` every step runs the network twice, with and without the condition
//! (classifier-free guidance): `out = uncond + g · (cond − uncond)`.
//!
//! **Randomness**: sample `i`'s noise is drawn from the sampling stream in order, so the same
//! seed gives the same volumes. A 2D denoiser generates a volume's axial slices together, in
//! chunks of `batch` slices (independent ODEs, so chunking changes nothing but memory).
//!
//! **Reported**: the function evaluations (NFE), and against mean collapse the mean per-volume
//! standard deviation and the standard deviation *between* samples (≈ 0 when every sample is the
//! same image); with a mask, the tumour contrast (mean inside minus mean outside) of each image,
//! and for generated masks the fraction of samples that contain a tumour.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use candle_core::{Device, Tensor};
use medgen_engine::runner::{Outcome, RunContext, StageError};
use serde::{Deserialize, Serialize};

use super::compressor::{Compressor, CompressorSpec};
use super::denoiser::{Denoiser, VectorCondition};
use super::diffuse::{DenoiserRecord, Space, DENOISER_RECORD};
use super::encode::{decode_volume, load_compressor, read_volume};
use super::latents::mask_to_latent;
use super::stage_io::{input_dir, input_split, read_json, stored_weights, write_json};
use super::Run;
use crate::data::layout::{volume_path, DatasetMeta, PatientMeta};
use crate::data::loader::size_bins;
use crate::data::volume::{Origin, Spacing, Volume};
use crate::diffusion::solver::{Progress, Solver};
use crate::diffusion::strategy::Strategy;
use crate::io::nifti::{binarize_seg, save_nifti_at};
use crate::io::preview::{write_grid, Tile};
use crate::split::Split;
use crate::stages::SampleConfig;
use crate::train::rng::{Purpose, Stream};
use crate::train::trainer::{failed, model_error, BEST_WEIGHTS};
use crate::vocab::{self, SEG};

pub struct Sample;

/// What a sample was conditioned on.
struct Condition {
    patient: String,
    /// Where the patient's volumes have their voxel (0, 0, 0), and so the sample's.
    origin: Origin,
    /// `[1, D, H, W]` in pixels.
    mask: Option<Tensor>,
    bins: [f32; 4],
}

/// Generated volumes by modality, `[D·H·W]` values each.
type Generated = Vec<(String, Vec<f32>)>;

/// The middle axial slice of one generated volume.
struct Preview {
    modality: String,
    height: usize,
    width: usize,
    values: Vec<f32>,
}

/// What a `sample` output holds, for `evaluate`: the mode, the generated modalities (each sample
/// folder has those of them it generated), whether `seg.nii.gz` is the mask a sample was
/// conditioned on (otherwise it is generated, in `seg` mode), and the model's dimensionality.
#[derive(Serialize, Deserialize)]
pub struct Generation {
    pub mode: String,
    pub images: Vec<String>,
    pub mask_condition: bool,
    pub dims: usize,
}

/// The file of a sample output's [`Generation`].
pub const GENERATION: &str = "generation.json";

#[derive(Serialize, Deserialize)]
pub struct SampleRecord {
    pub name: String,
    /// The reference patient whose mask or size bins the sample was generated for.
    pub condition: Option<String>,
    pub nfe: usize,
    pub std: BTreeMap<String, f64>,
}

impl Run for Sample {
    type Config = SampleConfig;

    fn version(&self) -> u32 {
        3
    }

    fn run(&self, cx: &RunContext<'_>, c: SampleConfig) -> Result<Outcome, StageError> {
        let device = crate::device::select().map_err(failed)?;
        let denoiser_dir = input_dir(cx, "denoiser")?;
        let record: DenoiserRecord = read_json(&denoiser_dir.join(DENOISER_RECORD)).map_err(failed)?;
        let model = load_denoiser(&denoiser_dir, &record, &device)?;
        let strategy = record.strategy.build().map_err(model_error)?;
        let decoder = match record.space {
            Space::Latent { .. } => Some(load_compressor(&input_dir(cx, "decoder")?, &device)?),
            Space::Pixel { .. } => None,
        };
        let needs_conditions = record.mask_condition || record.denoiser.vector == Some(VectorCondition::SizeBins);
        let conditions = if needs_conditions { read_conditions(cx, &record, &device)? } else { Vec::new() };
        let generator = Generator {
            record: &record,
            model: &model,
            strategy: &strategy,
            solver: c.solver,
            guidance: c.guidance,
            chunk: c.batch,
            decoder: decoder.as_ref().map(|(spec, model)| (spec, model)),
            device: &device,
        };
        let count = c.count;
        let spacing = Spacing::from_dhw(record.pixel_spacing);
        let mut stream = Stream::new(c.seed, Purpose::Sampling);
        let mut stats = Stats::default();
        let mut records = Vec::new();
        let mut previews = Vec::new();
        for i in 0..count {
            if cx.cancel.load(Ordering::SeqCst) {
                return Err(StageError::Cancelled);
            }
            let condition = (!conditions.is_empty()).then(|| &conditions[i % conditions.len()]);
            let name = format!("sample_{i:04}");
            let progress = |step: &Progress| {
                (cx.progress)(format!("sample {}/{count}  step {}  nfe {}", i + 1, step.step, step.nfe));
                if cx.cancel.load(Ordering::SeqCst) {
                    candle_core::bail!("cancelled")
                }
                Ok(())
            };
            let (images, nfe) = match generator.volume(&mut stream, condition, &progress) {
                Ok(result) => result,
                Err(_) if cx.cancel.load(Ordering::SeqCst) => return Err(StageError::Cancelled),
                Err(e) => return Err(model_error(e)),
            };
            let dir = cx.out_dir.join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
            let mut std = BTreeMap::new();
            let origin = condition.map_or(Origin::ZERO, |c| c.origin);
            let save = |modality: &str, volume: &Volume| {
                save_nifti_at(&volume_path(&cx.out_dir, &name, modality), volume, origin)
                    .map_err(|e| failed(e.to_string()))
            };
            for (modality, volume) in images {
                let volume = Volume { shape: record.pixel_shape, spacing, data: volume };
                save(&modality, &volume)?;
                let mask = condition.and_then(|c| c.mask.as_ref());
                std.insert(modality.clone(), stats.add(&modality, &volume.data, mask)?);
                previews.push(middle_slice(modality, &volume));
            }
            if let Some(mask) = condition.and_then(|c| c.mask.as_ref()) {
                let data = mask.flatten_all().and_then(|m| m.to_vec1::<f32>()).map_err(model_error)?;
                save(SEG, &Volume { shape: record.pixel_shape, spacing, data })?;
            }
            stats.nfe += nfe;
            records.push(SampleRecord { name, condition: condition.map(|c| c.patient.clone()), nfe, std });
        }
        if c.previews {
            write_previews(&cx.out_dir, &record, &previews)?;
        }
        write_json(&cx.out_dir, "samples.json", &records)?;
        let generation = Generation {
            mode: record.mode.name().to_string(),
            images: record.images.clone(),
            mask_condition: record.mask_condition,
            dims: record.denoiser.dims,
        };
        write_json(&cx.out_dir, GENERATION, &generation)?;
        let mut metrics = stats.metrics(count);
        metrics.insert("count".into(), count as f64);
        Ok(Outcome { metrics })
    }
}

fn load_denoiser(dir: &Path, record: &DenoiserRecord, device: &Device) -> Result<Denoiser, StageError> {
    let weights = dir.join(BEST_WEIGHTS);
    let vb = stored_weights(&weights, device)?;
    record.denoiser.build(vb).map_err(|e| failed(format!("{}: {e}", weights.display())))
}

/// The conditioning patients: the `conditions` input's selected split (all patients without a
/// selection), in id order.
fn read_conditions(
    cx: &RunContext<'_>,
    record: &DenoiserRecord,
    device: &Device,
) -> Result<Vec<Condition>, StageError> {
    let dir = cx.inputs.get("conditions").map(|u| u.dir.clone()).ok_or_else(|| {
        failed(format!(
            "mode `{}` generates from conditions: give the stage `conditions: DATASET.test` (the masks to generate for)",
            record.mode.name()
        ))
    })?;
    let meta = DatasetMeta::read(&dir).map_err(failed)?;
    if meta.shape != record.pixel_shape {
        return Err(failed(format!(
            "the conditions have shape {:?}, the denoiser generates {:?}",
            meta.shape, record.pixel_shape
        )));
    }
    let split: Option<Split> = input_split(cx, "conditions");
    let patients: Vec<&PatientMeta> = meta.patients.iter().filter(|p| split.is_none_or(|s| p.split == s)).collect();
    if patients.is_empty() {
        return Err(failed(format!("{}: no patients to condition on in the selected split", dir.display())));
    }
    patients
        .into_iter()
        .map(|patient| {
            let mask = if record.mask_condition {
                Some(read_volume(&dir, &patient.id, SEG, device)?.unsqueeze(0).map_err(model_error)?)
            } else {
                None
            };
            Ok(Condition { patient: patient.id.clone(), origin: patient.origin, mask, bins: size_bins(patient) })
        })
        .collect()
}

/// Everything needed to generate one volume.
struct Generator<'a> {
    record: &'a DenoiserRecord,
    model: &'a Denoiser,
    strategy: &'a Strategy,
    solver: Solver,
    guidance: f64,
    /// Slices per solve for a 2D denoiser.
    chunk: usize,
    /// The compressor's specification and model, in latent space.
    decoder: Option<(&'a CompressorSpec, &'a Compressor)>,
    device: &'a Device,
}

impl Generator<'_> {
    /// One volume per generated modality (`[D·H·W]` values in [0, 1]) and the NFE spent.
    fn volume(
        &self,
        stream: &mut Stream,
        condition: Option<&Condition>,
        observe: &dyn Fn(&Progress) -> candle_core::Result<()>,
    ) -> candle_core::Result<(Generated, usize)> {
        let record = self.record;
        let mask = match (condition.and_then(|c| c.mask.as_ref()), self.decoder) {
            (Some(mask), Some((spec, _))) => Some(mask_to_latent(mask, spec.scale_factor(), spec.dims)?),
            (mask, _) => mask.cloned(),
        };
        let runs: Vec<(Vec<String>, Option<Tensor>)> = match record.denoiser.vector {
            Some(VectorCondition::Modality { count }) => (0..count)
                .map(|id| {
                    let one_hot: Vec<f32> = (0..count).map(|i| f32::from(u8::from(i == id))).collect();
                    Ok((vec![record.images[id].clone()], Some(Tensor::from_vec(one_hot, (1, count), self.device)?)))
                })
                .collect::<candle_core::Result<_>>()?,
            Some(VectorCondition::SizeBins) => {
                let bins = condition.map_or([0.0; 4], |c| c.bins);
                vec![(record.images.clone(), Some(Tensor::from_vec(bins.to_vec(), (1, 4), self.device)?))]
            }
            None => vec![(record.images.clone(), None)],
        };
        let mut out = Vec::new();
        let mut nfe = 0;
        for (names, vector) in runs {
            let noise = stream.normal(record.volume_shape.to_vec(), self.device)?;
            let (x0, used) = self.solve(&noise, mask.as_ref(), vector.as_ref(), observe)?;
            nfe += used;
            let pixels = self.to_pixels(&x0)?;
            for (c, name) in names.iter().enumerate() {
                let mut values = pixels.get(c)?.flatten_all()?.to_vec1::<f32>()?;
                if name == SEG || vocab::mode_generates_seg(record.mode.name()) {
                    binarize_seg(&mut values);
                }
                out.push((name.clone(), values));
            }
        }
        Ok((out, nfe))
    }

    /// Solves the ODE from `noise` (`[C, D, H, W]`); returns the clean estimate in the same
    /// layout and the NFE (per slice chunk, summed).
    fn solve(
        &self,
        noise: &Tensor,
        mask: Option<&Tensor>,
        vector: Option<&Tensor>,
        observe: &dyn Fn(&Progress) -> candle_core::Result<()>,
    ) -> candle_core::Result<(Tensor, usize)> {
        let grid = self.solver.grid(self.strategy)?;
        // Batches: [D, C, H, W] slices for a 2D model, [1, C, D, H, W] for a 3D one.
        let (states, masks): (Vec<Tensor>, Vec<Option<Tensor>>) = if self.record.denoiser.dims == 3 {
            (vec![noise.unsqueeze(0)?], vec![mask.map(|m| m.unsqueeze(0)).transpose()?])
        } else {
            let slices = noise.transpose(0, 1)?.contiguous()?;
            let mask_slices = mask.map(|m| m.transpose(0, 1)?.contiguous()).transpose()?;
            let depth = slices.dim(0)?;
            (0..depth)
                .step_by(self.chunk)
                .map(|start| {
                    let len = self.chunk.min(depth - start);
                    Ok((
                        slices.narrow(0, start, len)?,
                        mask_slices.as_ref().map(|m| m.narrow(0, start, len)).transpose()?,
                    ))
                })
                .collect::<candle_core::Result<Vec<_>>>()?
                .into_iter()
                .unzip()
        };
        let mut results = Vec::new();
        let mut nfe = 0;
        for (state, mask) in states.into_iter().zip(masks) {
            let b = state.dim(0)?;
            let vector = vector.map(|v| v.repeat((b, 1))).transpose()?;
            let mut f = |y: &Tensor, s: f64| -> candle_core::Result<Tensor> {
                let (xt, t) = self.strategy.model_input(y, s)?;
                let t = Tensor::full(t as f32, b, self.device)?;
                let scale = self.strategy.time_scale();
                let with = |mask: Option<&Tensor>| match mask {
                    Some(m) => Tensor::cat(&[&xt, m], 1),
                    None => Ok(xt.clone()),
                };
                let mut out = self.model.forward(&with(mask.as_ref())?, &t, scale, vector.as_ref())?;
                if self.guidance > 1.0 {
                    let empty_mask = mask.as_ref().map(Tensor::zeros_like).transpose()?;
                    let empty_vector = vector.as_ref().map(Tensor::zeros_like).transpose()?;
                    let uncond = self.model.forward(&with(empty_mask.as_ref())?, &t, scale, empty_vector.as_ref())?;
                    out = (&uncond + ((out - &uncond)? * self.guidance)?)?;
                }
                self.strategy.derivative(y, s, &out)
            };
            let mut observer = |p: &Progress| observe(p);
            let y0 = self.strategy.prior(&state, grid[0])?;
            let solution = self.solver.solve(y0, &grid, &mut f, Some(&mut observer))?;
            nfe += solution.nfe;
            results.push(self.strategy.finish(&solution.y, *grid.last().expect("a grid has two times"))?);
        }
        let x0 = Tensor::cat(&results, 0)?;
        let x0 = if self.record.denoiser.dims == 3 { x0.squeeze(0)? } else { x0.transpose(0, 1)?.contiguous()? };
        Ok((x0, nfe / self.slice_chunks()))
    }

    /// Solves per volume: the NFE of one volume is that of one chunk's solve (all chunks take the
    /// same steps with a fixed-step solver; adaptive ones are averaged).
    fn slice_chunks(&self) -> usize {
        if self.record.denoiser.dims == 3 {
            1
        } else {
            self.record.volume_shape[1].div_ceil(self.chunk)
        }
    }

    /// `[C, D, H, W]` in the denoiser's space to `[C', D, H, W]` pixels in [0, 1].
    fn to_pixels(&self, x0: &Tensor) -> candle_core::Result<Tensor> {
        let pixels = match (&self.record.space, self.decoder) {
            (Space::Latent { scale }, Some((spec, model))) => {
                decode_volume(spec, model, &x0.affine(1.0 / scale, 0.0)?, self.chunk)?
            }
            (Space::Pixel { rescale: true }, _) => x0.affine(0.5, 0.5)?,
            _ => x0.clone(),
        };
        pixels.clamp(0f32, 1f32)
    }
}

fn middle_slice(modality: String, volume: &Volume) -> Preview {
    let [d, height, width] = volume.shape;
    Preview { modality, height, width, values: volume.slice(d / 2).to_vec() }
}

/// `previews/<modality>.png`: the middle slice of every sample, eight per row.
fn write_previews(out: &Path, record: &DenoiserRecord, slices: &[Preview]) -> Result<(), StageError> {
    let dir = out.join("previews");
    std::fs::create_dir_all(&dir).map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
    let mut names: Vec<&String> = record.images.iter().collect();
    names.dedup();
    for name in names {
        let tiles: Vec<Tile<'_>> = slices
            .iter()
            .filter(|p| &p.modality == name)
            .map(|p| Tile { height: p.height, width: p.width, values: &p.values })
            .collect();
        if !tiles.is_empty() {
            write_grid(&dir.join(format!("{name}.png")), &tiles, 8).map_err(failed)?;
        }
    }
    Ok(())
}

/// Sums for the anti-collapse report.
#[derive(Default)]
struct Stats {
    nfe: usize,
    /// Per modality: per-volume standard deviations, and the voxel-wise sums over samples.
    per_modality: BTreeMap<String, ModalityStats>,
}

#[derive(Default)]
struct ModalityStats {
    stds: Vec<f64>,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    contrasts: Vec<f64>,
    with_tumour: usize,
}

impl Stats {
    /// Adds a volume; returns its standard deviation.
    fn add(&mut self, modality: &str, data: &[f32], mask: Option<&Tensor>) -> Result<f64, StageError> {
        let s = self.per_modality.entry(modality.to_string()).or_default();
        if s.sum.is_empty() {
            s.sum = vec![0.0; data.len()];
            s.sum_sq = vec![0.0; data.len()];
        }
        let n = data.len() as f64;
        let mean = data.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
        let std = (data.iter().map(|v| (f64::from(*v) - mean).powi(2)).sum::<f64>() / n).sqrt();
        s.stds.push(std);
        for (i, v) in data.iter().enumerate() {
            s.sum[i] += f64::from(*v);
            s.sum_sq[i] += f64::from(*v).powi(2);
        }
        if data.iter().any(|v| *v > 0.5) {
            s.with_tumour += 1;
        }
        if let Some(mask) = mask {
            let mask = mask.flatten_all().and_then(|m| m.to_vec1::<f32>()).map_err(model_error)?;
            let (mut inside, mut outside) = ((0.0, 0usize), (0.0, 0usize));
            for (v, m) in data.iter().zip(&mask) {
                let bucket = if *m > 0.5 { &mut inside } else { &mut outside };
                bucket.0 += f64::from(*v);
                bucket.1 += 1;
            }
            if inside.1 > 0 && outside.1 > 0 {
                s.contrasts.push(inside.0 / inside.1 as f64 - outside.0 / outside.1 as f64);
            }
        }
        Ok(std)
    }

    fn metrics(&self, count: usize) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        m.insert("nfe".to_string(), self.nfe as f64 / count as f64);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        for (name, s) in &self.per_modality {
            let samples = s.stds.len() as f64;
            let between: Vec<f64> = s
                .sum
                .iter()
                .zip(&s.sum_sq)
                .map(|(sum, sq)| (sq / samples - (sum / samples).powi(2)).max(0.0).sqrt())
                .collect();
            m.insert(format!("{name}_std"), mean(&s.stds));
            m.insert(format!("{name}_between_sample_std"), mean(&between));
            if !s.contrasts.is_empty() {
                m.insert(format!("{name}_tumour_contrast"), mean(&s.contrasts));
            }
            if name == SEG {
                m.insert("tumour_fraction".to_string(), s.with_tumour as f64 / samples);
            }
        }
        m
    }
}
