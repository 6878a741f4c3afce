//! Multi-head self-attention (Vaswani et al., "Attention Is All You Need", 2017):
//! `softmax(q kᵀ / sqrt(head_dim)) v` per head, heads taken as consecutive slices of the channels.
//!
//! - [`SpatialAttention`]: MONAI's `SpatialAttentionBlock` (`monai/networks/blocks/
//!   spatialattention.py`), the attention of `DiffusionModelUNet`: GroupNorm, self-attention over
//!   the flattened spatial positions of a `[B, C, H, W]` or `[B, C, D, H, W]` feature map, and a
//!   residual connection. Parameter names follow its checkpoints: `norm.{weight,bias}`,
//!   `attn.to_q`, `attn.to_k`, `attn.to_v` and `attn.out_proj` (MONAI's `SABlock` with
//!   `use_combined_linear=False, include_fc=True, qkv_bias=True`; older MONAI Generative
//!   checkpoints call the output `proj_attn` and lack the `attn.` level).
//! - [`TokenAttention`]: timm's `Attention` (`timm/models/vision_transformer.py`) as used by DiT
//!   (`facebookresearch/DiT`, `models.py`, `qkv_bias=True`) over tokens `[B, N, C]`: one fused
//!   `qkv` linear whose outputs are `[q | k | v]`, each split into heads, and a `proj` linear.
//!
//! The softmax is `candle_nn::ops::softmax`, built from differentiable ops
//! (`softmax_last_dim` and the CPU `flash_attn` drop gradients, `shared/docs/candle-notes.md`),
//! and it runs in f32 for half-precision inputs like the norms (seed pitfall 41). The attention
//! matrix `[B, heads, N, N]` is materialised: fine for the low-resolution levels where UNets
//! attend (e.g. 16³ = 4096 positions), not for full-resolution volumes.
//!
//! Note: since the softmax of a row is unchanged by adding the same number to every score, the
//! key bias adds `q · b_k` to a whole row and never changes the output; its gradient is zero up
//! to rounding, in PyTorch as here. It is kept so that checkpoints load.

use candle_core::{bail, Module, Result, Tensor, D};
use candle_nn::{linear, ops::softmax, Linear, VarBuilder};

use super::norm::{statistics_dtype, GroupNorm, GroupNormConfig};

/// `[B, N, heads · d]` → `[B, heads, N, d]`, contiguous for the matmuls.
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (batch, tokens, channels) = x.dims3()?;
    x.reshape((batch, tokens, heads, channels / heads))?.transpose(1, 2)?.contiguous()
}

/// `[B, heads, N, d]` → `[B, N, heads · d]`.
fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (batch, heads, tokens, head_dim) = x.dims4()?;
    x.transpose(1, 2)?.reshape((batch, tokens, heads * head_dim))
}

/// Scaled dot-product attention of `[B, heads, N, d]` queries, keys and values.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let head_dim = q.dim(D::Minus1)?;
    let scores = (q.matmul(&k.t()?)? * (head_dim as f64).powf(-0.5))?;
    let probs = softmax(&scores.to_dtype(statistics_dtype(scores.dtype()))?, D::Minus1)?;
    probs.to_dtype(v.dtype())?.matmul(v)
}

/// Multi-head attention of tokens `[B, N, C]` from separate projections, then a merge of the
/// heads: the shared tail of both blocks.
fn multi_head(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    merge_heads(&attend(&split_heads(q, heads)?, &split_heads(k, heads)?, &split_heads(v, heads)?)?)
}

/// Checks that `divisor` (a count of `what`) divides `channels`, naming the block that asks.
fn check_divides(block: &str, what: &str, divisor: usize, channels: usize) -> Result<()> {
    if divisor == 0 || !channels.is_multiple_of(divisor) {
        bail!("{block}: {divisor} {what} do not divide {channels} channels")
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpatialAttentionConfig {
    pub channels: usize,
    /// Channels per head (MONAI's `num_head_channels`); `channels / head_channels` heads.
    pub head_channels: usize,
    /// GroupNorm groups (MONAI's `norm_num_groups`, 32 by default).
    pub norm_groups: usize,
    /// GroupNorm eps (MONAI's `norm_eps`, 1e-6 by default).
    pub norm_eps: f64,
}

/// MONAI's `SABlock` with separate `to_q`, `to_k`, `to_v` and an `out_proj`.
#[derive(Debug, Clone)]
struct SeparateQkvAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    out_proj: Linear,
    heads: usize,
}

impl SeparateQkvAttention {
    fn new(vb: VarBuilder, channels: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            to_q: linear(channels, channels, vb.pp("to_q"))?,
            to_k: linear(channels, channels, vb.pp("to_k"))?,
            to_v: linear(channels, channels, vb.pp("to_v"))?,
            out_proj: linear(channels, channels, vb.pp("out_proj"))?,
            heads,
        })
    }
}

impl Module for SeparateQkvAttention {
    fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (q, k, v) = (self.to_q.forward(tokens)?, self.to_k.forward(tokens)?, self.to_v.forward(tokens)?);
        self.out_proj.forward(&multi_head(&q, &k, &v, self.heads)?)
    }
}

/// `x + attention(norm(x))` over the spatial positions of `[B, C, *spatial]`; see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct SpatialAttention {
    norm: GroupNorm,
    attn: SeparateQkvAttention,
}

impl SpatialAttention {
    pub fn new(vb: VarBuilder, cfg: &SpatialAttentionConfig) -> Result<Self> {
        check_divides("SpatialAttention", "channels per head", cfg.head_channels, cfg.channels)?;
        let norm_cfg = GroupNormConfig { num_groups: cfg.norm_groups, num_channels: cfg.channels, eps: cfg.norm_eps };
        let norm = GroupNorm::new(vb.pp("norm"), &norm_cfg)?;
        let attn = SeparateQkvAttention::new(vb.pp("attn"), cfg.channels, cfg.channels / cfg.head_channels)?;
        Ok(Self { norm, attn })
    }
}

impl Module for SpatialAttention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let tokens = self.norm.forward(x)?.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let attended = self.attn.forward(&tokens)?.transpose(1, 2)?.reshape(x.dims())?;
        attended + x
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenAttentionConfig {
    /// Token width `C` (DiT's `hidden_size`).
    pub dim: usize,
    pub num_heads: usize,
}

/// timm/DiT multi-head self-attention over tokens `[B, N, C]`; see the module documentation.
/// Parameters: `qkv.{weight,bias}` (`[3C, C]`, `[3C]`) and `proj.{weight,bias}`.
#[derive(Debug, Clone)]
pub struct TokenAttention {
    qkv: Linear,
    proj: Linear,
    cfg: TokenAttentionConfig,
}

impl TokenAttention {
    pub fn new(vb: VarBuilder, cfg: &TokenAttentionConfig) -> Result<Self> {
        check_divides("TokenAttention", "heads", cfg.num_heads, cfg.dim)?;
        let qkv = linear(cfg.dim, 3 * cfg.dim, vb.pp("qkv"))?;
        let proj = linear(cfg.dim, cfg.dim, vb.pp("proj"))?;
        Ok(Self { qkv, proj, cfg: *cfg })
    }
}

impl Module for TokenAttention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        let dim = self.cfg.dim;
        let (q, k, v) = (qkv.narrow(2, 0, dim)?, qkv.narrow(2, dim, dim)?, qkv.narrow(2, 2 * dim, dim)?);
        self.proj.forward(&multi_head(&q, &k, &v, self.cfg.num_heads)?)
    }
}
