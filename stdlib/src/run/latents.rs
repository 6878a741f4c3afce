//! The latent dataset an `encode` stage writes and a latent `diffuse` stage reads.
//!
//! Layout: `latents.json` ([`LatentMeta`]: geometry, the measured scale, the patients with their
//! splits and tumours) and one `<patient>.safetensors` per patient holding `latent`
//! `[C, D, h, w]` and, when the dataset has a mask, `seg` `[1, D, h, w]`: the mask average-pooled
//! to latent resolution ([`mask_to_latent`]), the condition of seg-conditioned modes.
//!
//! **The latent scale** (seed pitfall 72) is measured here, on the training split only, as
//! `1 / std` of every latent value, and applied by [`LatentSource`] so the denoiser sees latents
//! of unit variance; `sample` divides by the same number before decoding. It is never assumed
//! (Stable Diffusion's 0.18215 belongs to one particular VAE).
//!
//! A whole split is held in memory: latents are 16–64 times smaller than the images (150 patients
//! of 4×160×64×64 latents are 1.6 GB), which is the point of latent diffusion.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::stage_io::read_json;
use crate::data::layout::PatientMeta;
use crate::data::loader::{shuffle, size_bins, Batch};
use crate::nn::resample::avg_pool;
use crate::split::Split;
use crate::train::trainer::BatchSource;

/// The description of a latent dataset.
pub const LATENT_META: &str = "latents.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatentMeta {
    /// The image modalities the compressor encoded, one latent per patient for all of them.
    pub images: Vec<String>,
    pub channels: usize,
    /// The compressor's dimensionality: 2 encodes each axial slice, 3 the whole volume.
    pub dims: usize,
    /// `[D, h, w]` of every latent.
    pub shape: [usize; 3],
    /// Millimetres per latent voxel, (depth, height, width).
    pub spacing: [f64; 3],
    pub pixel_shape: [usize; 3],
    pub pixel_spacing: [f64; 3],
    /// Multiplies latents to unit variance: `1 / std` over the training split.
    pub scale: f64,
    /// Mean and standard deviation of the training latents, before scaling.
    pub mean: f64,
    pub std: f64,
    /// Whether each patient has a `seg` condition at latent resolution.
    pub has_seg: bool,
    pub patients: Vec<PatientMeta>,
}

impl LatentMeta {
    pub fn read(dir: &Path) -> Result<LatentMeta, String> {
        read_json(&dir.join(LATENT_META))
    }

    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(LATENT_META), bytes).map_err(|e| format!("cannot write {LATENT_META}: {e}"))
    }
}

/// Where a patient's latent is stored.
pub fn latent_path(dir: &Path, patient: &str) -> PathBuf {
    dir.join(format!("{patient}.safetensors"))
}

/// A mask `[1, D, H, W]` at latent resolution: average-pooled by `scale` over the axes the
/// compressor downsamples (height and width; depth too for a 3D compressor), so a latent voxel
/// holds the tumour fraction of its footprint.
pub fn mask_to_latent(mask: &Tensor, scale: usize, dims: usize) -> candle_core::Result<Tensor> {
    if scale == 1 {
        return Ok(mask.clone());
    }
    if dims == 3 {
        return avg_pool(&mask.unsqueeze(0)?, scale)?.squeeze(0);
    }
    // [1, D, H, W] → slices [D, 1, H, W] → pooled → [1, D, h, w].
    avg_pool(&mask.transpose(0, 1)?.contiguous()?, scale)?.transpose(0, 1)?.contiguous()
}

/// One patient's latent (scaled) and condition.
struct Entry {
    latent: Tensor,
    seg: Option<Tensor>,
    bins: [f32; 4],
    id: String,
}

/// Batches of scaled latents for training or validating a latent denoiser: volumes for a 3D
/// model, axial slices for a 2D one, shuffled per epoch from the seed like `data::loader`.
pub struct LatentSource {
    entries: Vec<Entry>,
    /// (patient, slice) pairs; slice `None` for volumes.
    items: Vec<(usize, Option<usize>)>,
    batch_size: usize,
    seed: u64,
    condition: bool,
    size_bins: bool,
}

/// What a [`LatentSource`] yields.
pub struct LatentSourceConfig {
    pub split: Split,
    /// 2: axial slices; 3: volumes.
    pub model_dims: usize,
    /// Give the mask as `Batch::condition`.
    pub condition: bool,
    /// Give the tumour counts per size bin as `Batch::size_bins`.
    pub size_bins: bool,
    pub batch_size: usize,
    pub seed: u64,
}

impl LatentSource {
    pub fn new(
        dir: &Path,
        meta: &LatentMeta,
        config: &LatentSourceConfig,
        device: &Device,
    ) -> Result<LatentSource, String> {
        let LatentSourceConfig { split, model_dims, condition, size_bins: size_bins_wanted, batch_size, seed } =
            *config;
        if condition && !meta.has_seg {
            return Err(format!("{}: the latents have no mask to condition on", dir.display()));
        }
        let mut entries = Vec::new();
        for patient in meta.patients.iter().filter(|p| p.split == split) {
            let path = latent_path(dir, &patient.id);
            let tensors =
                candle_core::safetensors::load(&path, device).map_err(|e| format!("{}: {e}", path.display()))?;
            let get = |name: &str| tensors.get(name).cloned().ok_or(format!("{}: no tensor `{name}`", path.display()));
            let latent = (get("latent")?.affine(meta.scale, 0.0)).map_err(|e| e.to_string())?;
            let seg = if condition { Some(get("seg")?) } else { None };
            entries.push(Entry { latent, seg, bins: size_bins(patient), id: patient.id.clone() });
        }
        let slices = if model_dims == 2 { meta.shape[0] } else { 0 };
        let items = (0..entries.len())
            .flat_map(|p| if slices == 0 { vec![(p, None)] } else { (0..slices).map(|s| (p, Some(s))).collect() })
            .collect();
        Ok(LatentSource { entries, items, batch_size: batch_size.max(1), seed, condition, size_bins: size_bins_wanted })
    }

    fn sample(tensor: &Tensor, slice: Option<usize>) -> candle_core::Result<Tensor> {
        match slice {
            Some(s) => tensor.narrow(1, s, 1)?.squeeze(1),
            None => Ok(tensor.clone()),
        }
    }

    fn batch(&self, items: &[(usize, Option<usize>)]) -> candle_core::Result<Batch> {
        let mut latents = Vec::new();
        let mut segs = Vec::new();
        let mut bins = Vec::new();
        for &(p, slice) in items {
            let entry = &self.entries[p];
            latents.push(Self::sample(&entry.latent, slice)?);
            if let Some(seg) = &entry.seg {
                segs.push(Self::sample(seg, slice)?);
            }
            bins.extend(entry.bins);
        }
        let device = latents[0].device().clone();
        Ok(Batch {
            images: Tensor::stack(&latents, 0)?,
            condition: if self.condition { Some(Tensor::stack(&segs, 0)?) } else { None },
            size_bins: if self.size_bins { Some(Tensor::from_vec(bins, (items.len(), 4), &device)?) } else { None },
            mode_id: None,
            origins: items.iter().map(|&(p, s)| (self.entries[p].id.clone(), s)).collect(),
        })
    }
}

impl BatchSource for LatentSource {
    fn batches(&self) -> usize {
        self.items.len().div_ceil(self.batch_size)
    }

    fn samples(&self) -> usize {
        self.items.len()
    }

    fn epoch(&self, epoch: u64) -> Box<dyn Iterator<Item = Result<Batch, String>> + '_> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut order = self.items.clone();
        shuffle(&mut order, &mut rng);
        let chunks: Vec<Vec<(usize, Option<usize>)>> = order.chunks(self.batch_size).map(<[_]>::to_vec).collect();
        Box::new(chunks.into_iter().map(move |items| self.batch(&items).map_err(|e| e.to_string())))
    }
}

/// Mean and standard deviation of many tensors' values together, in f64.
pub fn moments(tensors: &[Tensor]) -> candle_core::Result<(f64, f64)> {
    let (mut n, mut sum, mut sq) = (0f64, 0f64, 0f64);
    for t in tensors {
        let t = t.to_dtype(candle_core::DType::F64)?;
        n += t.elem_count() as f64;
        sum += t.sum_all()?.to_scalar::<f64>()?;
        sq += t.sqr()?.sum_all()?.to_scalar::<f64>()?;
    }
    let mean = sum / n.max(1.0);
    Ok((mean, (sq / n.max(1.0) - mean * mean).max(0.0).sqrt()))
}

/// Named tensors of one patient, for [`latent_path`].
pub fn save_latent(path: &Path, latent: &Tensor, seg: Option<&Tensor>) -> Result<(), String> {
    let mut tensors = HashMap::from([("latent".to_string(), latent.clone())]);
    if let Some(seg) = seg {
        tensors.insert("seg".to_string(), seg.clone());
    }
    candle_core::safetensors::save(&tensors, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
