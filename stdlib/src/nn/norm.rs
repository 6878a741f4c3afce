//! Normalisation layers, written with primitive Candle ops so that the input and every parameter
//! receive gradients.
//!
//! - [`GroupNorm`]: Wu & He, "Group Normalization" (ECCV 2018), computed as
//!   `torch.nn.GroupNorm(num_groups, num_channels, eps, affine=True)` on `[B, C, *spatial]` with
//!   any number of spatial dimensions (2D `[B, C, H, W]`, 3D `[B, C, D, H, W]`). It is the norm of
//!   MONAI's `DiffusionModelUNet` blocks (`monai/networks/nets/diffusion_model_unet.py`), which
//!   use `eps = 1e-6`; parameters are named `weight` and `bias` as in PyTorch.
//! - [`LayerNorm`]: Ba, Kiros & Hinton, "Layer Normalization" (2016), computed as
//!   `torch.nn.LayerNorm(dim, eps, elementwise_affine)` over the last dimension. DiT
//!   (`facebookresearch/DiT`, `models.py`) uses it without affine parameters and `eps = 1e-6`.
//!
//! Why not `candle_nn`'s: `candle_nn::LayerNorm::forward` on contiguous input and
//! `candle_nn::ops::layer_norm` are forward-only kernels that drop gradients without an error
//! (`shared/docs/candle-notes.md`).
//!
//! Statistics are always taken in f32 or wider (seed pitfall 41: norms and losses in f32 whatever
//! the compute dtype): an f16/bf16 input is upcast, normalised and scaled in f32, and the result
//! is cast back to the input dtype. Like PyTorch, the variance is the biased one (divided by the
//! element count) and both layers compute it in two passes (mean, then mean of squared deviations).

use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// PyTorch's default `eps` for `GroupNorm` and `LayerNorm`.
pub const TORCH_NORM_EPS: f64 = 1e-5;

/// Where the affine parameters of a fresh norm start: the identity transform, as in PyTorch.
const WEIGHT_INIT: Init = Init::Const(1.0);
const BIAS_INIT: Init = Init::Const(0.0);

/// The dtype in which a norm computes: f32 for half-precision inputs, the input's own otherwise.
pub fn statistics_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

/// `(x - mean) / sqrt(var + eps)` along `dim`, with the biased variance, from primitive ops.
fn standardise(x: &Tensor, dim: usize, eps: f64) -> Result<Tensor> {
    let centred = x.broadcast_sub(&x.mean_keepdim(dim)?)?;
    let variance = centred.sqr()?.mean_keepdim(dim)?;
    centred.broadcast_div(&(variance + eps)?.sqrt()?)
}

/// `x * weight + bias` with the parameters cast to `x`'s dtype and reshaped to `shape`.
fn scale_and_shift(x: &Tensor, weight: &Tensor, bias: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let weight = weight.to_dtype(x.dtype())?.reshape(shape)?;
    let bias = bias.to_dtype(x.dtype())?.reshape(shape)?;
    x.broadcast_mul(&weight)?.broadcast_add(&bias)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupNormConfig {
    pub num_groups: usize,
    pub num_channels: usize,
    pub eps: f64,
}

/// Group normalisation over `[B, C, *spatial]`; see the module documentation.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    cfg: GroupNormConfig,
}

impl GroupNorm {
    /// Parameters `weight` and `bias`, each `[num_channels]`, start at 1 and 0.
    pub fn new(vb: VarBuilder, cfg: &GroupNormConfig) -> Result<Self> {
        if cfg.num_groups == 0 || !cfg.num_channels.is_multiple_of(cfg.num_groups) {
            bail!("GroupNorm: {} groups do not divide {} channels", cfg.num_groups, cfg.num_channels)
        }
        let weight = vb.get_with_hints(cfg.num_channels, "weight", WEIGHT_INIT)?;
        let bias = vb.get_with_hints(cfg.num_channels, "bias", BIAS_INIT)?;
        Ok(Self { weight, bias, cfg: *cfg })
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() < 3 || dims[1] != self.cfg.num_channels {
            bail!("GroupNorm: expected [B, {}, *spatial], got {:?}", self.cfg.num_channels, dims)
        }
        let grouped = x.to_dtype(statistics_dtype(x.dtype()))?.reshape((dims[0], self.cfg.num_groups, ()))?;
        let normalised = standardise(&grouped, 2, self.cfg.eps)?.reshape(dims)?;
        let (weight, bias) = (self.weight.to_dtype(normalised.dtype())?, self.bias.to_dtype(normalised.dtype())?);
        super::channel_affine::channel_affine(&normalised, &weight, &bias)?.to_dtype(x.dtype())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNormConfig {
    /// Size of the last dimension, the one normalised.
    pub dim: usize,
    pub eps: f64,
    /// Learn `weight` and `bias` (PyTorch's `elementwise_affine`); DiT's blocks do not.
    pub affine: bool,
}

/// Per-element `weight` and `bias` of an affine [`LayerNorm`].
#[derive(Debug, Clone)]
struct Affine {
    weight: Tensor,
    bias: Tensor,
}

/// Layer normalisation over the last dimension; see the module documentation.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    affine: Option<Affine>,
    cfg: LayerNormConfig,
}

impl LayerNorm {
    /// With `affine`, parameters `weight` and `bias`, each `[dim]`, start at 1 and 0.
    pub fn new(vb: VarBuilder, cfg: &LayerNormConfig) -> Result<Self> {
        let affine = if cfg.affine {
            let weight = vb.get_with_hints(cfg.dim, "weight", WEIGHT_INIT)?;
            let bias = vb.get_with_hints(cfg.dim, "bias", BIAS_INIT)?;
            Some(Affine { weight, bias })
        } else {
            None
        };
        Ok(Self { affine, cfg: *cfg })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dims().last() != Some(&self.cfg.dim) {
            bail!("LayerNorm: expected a last dimension of {}, got {:?}", self.cfg.dim, x.dims())
        }
        let upcast = x.to_dtype(statistics_dtype(x.dtype()))?;
        let normalised = standardise(&upcast, upcast.dims().len() - 1, self.cfg.eps)?;
        let out = match &self.affine {
            Some(Affine { weight, bias }) => scale_and_shift(&normalised, weight, bias, &[self.cfg.dim])?,
            None => normalised,
        };
        out.to_dtype(x.dtype())
    }
}

/// The largest of MONAI's usual GroupNorm group counts (32, 16, …, 1) that divides every entry of
/// `channels`, for models whose widths come from a pipeline rather than a fixed recipe.
pub fn norm_groups_for(channels: &[usize]) -> usize {
    [32, 16, 8, 4, 2, 1].into_iter().find(|g| channels.iter().all(|c| c % g == 0)).unwrap_or(1)
}
