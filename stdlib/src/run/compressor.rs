//! The compressor a `compress` stage trains and `encode`/`sample` load: its architecture resolved
//! from `model = vae(...)`/`vqvae(...)` and written as `compressor.json` beside the weights.
//!
//! What the latent is: the KL-VAE's posterior **mean** (deterministic, so encoding twice gives
//! the same latents and the cache key stays honest), and the VQ-VAE's continuous encoder output
//! *before* quantisation, as in latent diffusion's VQ-regularised models (Rombach et al. 2022):
//! decoding quantises first, which snaps a generated latent onto the codebook.
//!
//! What the decoder's output is: intensities for an image compressor, **logits** for a mask
//! compressor (`images = [seg]`), which trains with BCE + soft Dice (seed pitfall 45).
//! [`CompressorSpec::to_pixels`] is the one place that turns a decoded tensor into values in
//! [0, 1] — a clamp for intensities, the sigmoid for mask logits — so `compress`'s validation,
//! `evaluate`'s reconstructions and `sample`'s decoding read a compressor's output alike.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::stage_io::read_json;
use crate::nn::autoencoder::{
    AutoencoderConfig, CodebookUpdate, KlVae, KlVaeConfig, Reconstruction, VqVae, VqVaeConfig, DEFAULT_EMA_EPSILON,
};
use crate::nn::conv::SpatialDims;
use crate::nn::norm::norm_groups_for;
use crate::vocab::SEG;

/// MONAI's GroupNorm epsilon for autoencoders.
const NORM_EPS: f64 = 1e-6;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Regularisation {
    /// `vae(...)`: the KL term's weight.
    Kl { kl_weight: f64 },
    /// `vqvae(...)`: codebook entries, the commitment weight β, and the decay of EMA codebook
    /// updates (`None`: the codebook is learnt by its loss).
    Vq { codebook: usize, commitment: f64, ema_decay: Option<f64> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompressorSpec {
    pub regularisation: Regularisation,
    pub dims: usize,
    /// The modalities compressed together, one channel each.
    pub images: Vec<String>,
    pub channels: Vec<usize>,
    pub res_blocks: usize,
    pub latent_channels: usize,
}

impl CompressorSpec {
    pub fn read(dir: &std::path::Path) -> std::result::Result<CompressorSpec, String> {
        read_json(&dir.join(COMPRESSOR_SPEC))
    }

    pub fn scale_factor(&self) -> usize {
        1 << self.channels.len().saturating_sub(1)
    }

    /// A mask codec: it compresses the segmentation mask alone.
    pub fn is_mask_codec(&self) -> bool {
        self.images == [SEG]
    }

    /// The reconstruction loss: BCE + soft Dice on logits for a mask codec, L1 for images.
    pub fn reconstruction(&self) -> Reconstruction {
        if self.is_mask_codec() {
            Reconstruction::MaskBceDice
        } else {
            Reconstruction::L1
        }
    }

    /// Decoded output as values in [0, 1]: mask probabilities (the sigmoid of the logits) for a
    /// mask codec, intensities clamped to [0, 1] for images.
    pub fn to_pixels(&self, decoded: &Tensor) -> Result<Tensor> {
        if self.is_mask_codec() {
            candle_nn::ops::sigmoid(decoded)
        } else {
            decoded.clamp(0f32, 1f32)
        }
    }

    fn autoencoder(&self) -> AutoencoderConfig {
        AutoencoderConfig {
            dims: if self.dims == 3 { SpatialDims::Three } else { SpatialDims::Two },
            in_channels: self.images.len(),
            channels: self.channels.clone(),
            num_res_blocks: self.res_blocks,
            latent_channels: self.latent_channels,
            norm_groups: norm_groups_for(&self.channels),
            norm_eps: NORM_EPS,
        }
    }

    pub fn build(&self, vb: VarBuilder) -> Result<Compressor> {
        let autoencoder = self.autoencoder();
        let reconstruction = self.reconstruction();
        Ok(match self.regularisation {
            Regularisation::Kl { kl_weight } => {
                Compressor::Kl(Box::new(KlVae::new(vb, &KlVaeConfig { autoencoder, reconstruction, kl_weight })?))
            }
            Regularisation::Vq { codebook, commitment, ema_decay } => {
                let mut cfg = VqVaeConfig::new(autoencoder, codebook);
                cfg.beta = commitment;
                cfg.reconstruction = reconstruction;
                if let Some(decay) = ema_decay {
                    cfg.codebook_update = CodebookUpdate::Ema { decay, epsilon: DEFAULT_EMA_EPSILON };
                }
                Compressor::Vq(Box::new(VqVae::new(vb, &cfg)?))
            }
        })
    }
}

/// The file a compressor's specification is written to.
pub const COMPRESSOR_SPEC: &str = "compressor.json";

/// A built compressor.
pub enum Compressor {
    Kl(Box<KlVae>),
    Vq(Box<VqVae>),
}

impl Compressor {
    /// The latent diffusion works on (see the module docs).
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Compressor::Kl(m) => Ok(m.encode(x)?.0),
            Compressor::Vq(m) => m.encode(x),
        }
    }

    /// Variables that are not optimised: a VQ-VAE's EMA codebook buffers.
    pub fn buffers(&self) -> Vec<&str> {
        match self {
            Compressor::Kl(_) => Vec::new(),
            Compressor::Vq(m) => m.ema_buffer_names().iter().map(String::as_str).collect(),
        }
    }

    /// Images from a latent; a VQ-VAE quantises it first.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        match self {
            Compressor::Kl(m) => m.decode(z),
            Compressor::Vq(m) => m.decode(&m.quantize(z)?.latent),
        }
    }
}
