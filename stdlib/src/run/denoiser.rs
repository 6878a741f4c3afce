//! The denoiser a `diffuse` stage trains and a `sample` stage loads: its architecture resolved from
//! the pipeline's `model = unet(...)`/`dit(...)`/`sit(...)` and the channel counts the checker
//! derived, written as `denoiser.json` beside the weights so that `sample` rebuilds exactly the
//! network that was trained, without re-deriving anything.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use medgen_lang::value::Value;
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
    Dit { size: String, patch: usize },
    Sit { size: String, patch: usize },
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
    /// From a stage's `model` value and derived channel counts.
    pub fn from_value(
        model: &Value,
        in_channels: usize,
        out_channels: usize,
        vector: Option<VectorCondition>,
    ) -> std::result::Result<DenoiserSpec, String> {
        let ints = |k: &str| -> Vec<usize> {
            model
                .get(k)
                .map(|v| v.as_list().iter().filter_map(Value::as_i64).map(|i| i as usize).collect())
                .unwrap_or_default()
        };
        let int = |k: &str, d: i64| model.get(k).and_then(Value::as_i64).unwrap_or(d) as usize;
        let transformer = || -> std::result::Result<(String, usize), String> {
            let size = model.get("size").and_then(Value::as_str).unwrap_or("S").to_string();
            if !matches!(size.as_str(), "S" | "B") {
                return Err(format!("unknown transformer size {size:?}"));
            }
            Ok((size, int("patch", 2)))
        };
        let architecture = match model.variant() {
            Some("unet") => {
                let channels = ints("channels");
                let attention = model
                    .get("attention")
                    .map(|a| a.as_list().iter().filter_map(Value::as_bool).collect())
                    .unwrap_or_else(|| (0..channels.len()).map(|i| i + 1 == channels.len()).collect());
                Architecture::Unet { channels, attention, res_blocks: int("res_blocks", 2), heads: int("heads", 4) }
            }
            Some("dit") => {
                let (size, patch) = transformer()?;
                Architecture::Dit { size, patch }
            }
            Some("sit") => {
                let (size, patch) = transformer()?;
                Architecture::Sit { size, patch }
            }
            other => return Err(format!("unknown denoiser model {other:?}")),
        };
        Ok(DenoiserSpec { architecture, dims: int("dims", 2), in_channels, out_channels, vector })
    }

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
                let mut cfg = match size.as_str() {
                    "B" => DiTConfig::base(variant, dims, channels, *patch),
                    _ => DiTConfig::small(variant, dims, channels, *patch),
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
