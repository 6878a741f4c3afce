//! The denoiser a `diffuse` stage trains and a `sample` stage loads: its architecture resolved from
//! the pipeline's `model = unet(...)`/`dit(...)`/`sit(...)` and the channel counts the checker
//! derived, written as `denoiser.json` beside the weights so that `sample` rebuilds exactly the
//! network that was trained, without re-deriving anything.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::nn::conv::SpatialDims;
use crate::nn::dit::{DiT, DiTConfig, Variant};
use crate::nn::embed::{Conditioning, TimeScale};
use crate::nn::norm::norm_groups_for;
use crate::nn::unet::{UNet, UNetConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "snake_case")]
pub enum Architecture {
    Unet { channels: Vec<usize>, attention: Vec<bool>, res_blocks: usize, heads: usize },
    Dit { size: TransformerSize, patch: usize },
    Sit { size: TransformerSize, patch: usize },
}

/// The transformer sizes that run (`L` and `XL` are refused by the checker, E0123).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransformerSize {
    /// 384 wide, 12 deep, 6 heads.
    S,
    /// 768 wide, 12 deep, 12 heads.
    B,
}

/// How a per-sample vector conditions the network, if it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VectorCondition {
    /// Tumours per RANO-BM size bin (`seg_conditioned`), added to the time embedding.
    SizeBins,
    /// A one-hot modality (`multi`), as FiLM on the time embedding (seed pitfall 47: the
    /// additive mode embedding let the model ignore the mode).
    Modality { count: usize },
}

impl VectorCondition {
    pub fn dim(self) -> usize {
        match self {
            VectorCondition::SizeBins => crate::data::phantom::SizeBin::ALL.len(),
            VectorCondition::Modality { count } => count,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenoiserSpec {
    pub architecture: Architecture,
    pub dims: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub vector: Option<VectorCondition>,
}

impl DenoiserSpec {
    fn spatial(&self) -> SpatialDims {
        if self.dims == 3 {
            SpatialDims::Three
        } else {
            SpatialDims::Two
        }
    }

    pub fn build(&self, vb: VarBuilder) -> Result<Denoiser> {
        let dims = self.spatial();
        let channels = (self.in_channels, self.out_channels);
        let condition_dim = self.vector.map(VectorCondition::dim);
        Ok(match &self.architecture {
            Architecture::Unet { channels: levels, attention, res_blocks, heads } => {
                let norm_groups = norm_groups_for(levels);
                let head_channels = levels.iter().map(|c| (c / heads).max(1)).collect();
                let conditioning = match self.vector {
                    Some(VectorCondition::Modality { .. }) => Conditioning::Film,
                    _ => Conditioning::Additive,
                };
                let cfg = UNetConfig {
                    dims,
                    in_channels: self.in_channels,
                    out_channels: self.out_channels,
                    channels: levels.clone(),
                    attention: attention.clone(),
                    res_blocks: *res_blocks,
                    head_channels,
                    norm_groups,
                    condition_dim,
                    conditioning,
                };
                Denoiser::Unet(Box::new(UNet::new(vb, &cfg)?))
            }
            Architecture::Dit { size, patch } | Architecture::Sit { size, patch } => {
                let variant =
                    if matches!(self.architecture, Architecture::Dit { .. }) { Variant::DiT } else { Variant::SiT };
                let mut cfg = match size {
                    TransformerSize::B => DiTConfig::base(variant, dims, channels, *patch),
                    TransformerSize::S => DiTConfig::small(variant, dims, channels, *patch),
                };
                cfg.condition_dim = condition_dim;
                Denoiser::Dit(Box::new(DiT::new(vb, &cfg)?))
            }
        })
    }
}

/// A built denoiser.
pub enum Denoiser {
    Unet(Box<UNet>),
    Dit(Box<DiT>),
}

impl Denoiser {
    pub fn forward(&self, x: &Tensor, t: &Tensor, time_scale: TimeScale, vector: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Denoiser::Unet(m) => m.forward(x, t, time_scale, vector),
            Denoiser::Dit(m) => m.forward(x, t, time_scale, vector),
        }
    }
}
