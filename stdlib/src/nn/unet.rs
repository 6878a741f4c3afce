//! The denoising UNet of latent and pixel diffusion, for 2D slices `[B, C, H, W]` and 3D volumes
//! `[B, C, D, H, W]`: MONAI's `DiffusionModelUNet` (`monai/networks/nets/diffusion_model_unet.py`,
//! after Ho et al., "Denoising Diffusion Probabilistic Models", 2020, and Rombach et al.,
//! "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022) with its defaults
//! `resblock_updown=False`, `upcast_attention=False`, no cross-attention, `norm_eps = 1e-6`.
//!
//! ```text
//! conv_in (3×3[×3])
//! down_blocks.i   for each level i: res_blocks × (resnets.j [→ attentions.j if attention[i]]),
//!                 then downsampler.op: a stride-2 3×3[×3] conv, except at the last level
//! middle_block    resnet_1 → attention → resnet_2
//! up_blocks.i     levels in reverse: (res_blocks + 1) × (cat skip → resnets.j [→ attentions.j]),
//!                 then upsampler: nearest ×2 → conv.conv (3×3[×3]), except at the last block
//! out             out.0 GroupNorm → SiLU → out.2 conv (3×3[×3])
//! ```
//!
//! Every feature map after `conv_in`, after each down resnet (or its attention) and after each
//! downsampler is kept and concatenated, last first, onto the channels of an up resnet, as in MONAI.
//! A resnet (`ResBlock`, MONAI's `DiffusionUNetResnetBlock`) is `norm1 → SiLU → conv1`, plus
//! `time_emb_proj(SiLU(emb))` broadcast over space, `norm2 → SiLU → conv2`, added to the input
//! (through the 1×1 `skip_connection` conv when the channel count changes).
//!
//! The time embedding is `time_embed` ([`TimeEmbedding`]: sinusoid of width `channels[0]` →
//! `Linear → SiLU → Linear` of width `4 · channels[0]`). An optional conditioning vector (class,
//! mode, tumour size bins) acts on it through `cond_embed` ([`ConditionEmbedding`]), additively or
//! as FiLM.
//!
//! **Initialisation** as MONAI's `zero_module`: each resnet's `conv2` and the output conv start at
//! zero (weights and biases), so every resnet starts as its skip path and the untrained network
//! predicts zero. All other layers use PyTorch's default initialisation.
//!
//! **Parameter names** are MONAI's, so a `DiffusionModelUNet` state_dict with the same options
//! names the same tensors; MONAI's `Convolution` wrapper adds a `.conv` level (`conv_in.conv.weight`,
//! `down_blocks.0.resnets.0.conv1.conv.weight`, `down_blocks.0.downsampler.op.conv.weight`,
//! `up_blocks.0.upsampler.conv.conv.weight`, `out.2.conv.weight`). Attention blocks are
//! [`SpatialAttention`] (`attn.to_q` … `attn.out_proj`, MONAI ≥ 1.4).
//!
//! Deviations from MONAI: the conditioning vector goes through an MLP ([`ConditionEmbedding`],
//! `cond_embed`) instead of MONAI's `class_embedding` lookup table of integer labels, and may act
//! as FiLM; there is no cross-attention (`with_conditioning`), no dropout, and the time scale of
//! continuous (rectified-flow) times is chosen per call ([`TimeScale`]).
//!
//! Upsampling is [`upsample_nearest`] (reshape and broadcast), never Candle's
//! `upsample_nearest2d`, whose backward is wrong when its input also feeds a skip connection
//! (`shared/docs/candle-notes.md`).

use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::{linear, Init, Linear, VarBuilder};

use crate::nn::attention::{SpatialAttention, SpatialAttentionConfig};
use crate::nn::conv::{Conv, SpatialDims, FIRST_SPATIAL};
use crate::nn::embed::{
    ConditionEmbedding, ConditionEmbeddingConfig, Conditioning, TimeEmbedding, TimeEmbeddingConfig, TimeScale,
    CONTINUOUS_TIME_SCALE,
};
use crate::nn::norm::{GroupNorm, GroupNormConfig};
use crate::nn::resample::upsample_nearest;

/// GroupNorm eps of every norm in the network (MONAI's `norm_eps` default).
pub const UNET_NORM_EPS: f64 = 1e-6;

/// The width of the time embedding relative to `channels[0]` (MONAI's `time_embed_dim`).
const TIME_EMBED_MULTIPLIER: usize = 4;

/// Resampling factor between two levels.
const LEVEL_FACTOR: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UNetConfig {
    pub dims: SpatialDims,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Channels per level (MONAI's `channels`), finest first; one level fewer downsamplings.
    pub channels: Vec<usize>,
    /// Whether each level has attention after its resnets (MONAI's `attention_levels`).
    pub attention: Vec<bool>,
    /// Resnets per down level (MONAI's `num_res_blocks`); up levels have one more.
    pub res_blocks: usize,
    /// Channels per attention head at each level (MONAI's `num_head_channels` as a sequence);
    /// only attended levels use theirs.
    pub head_channels: Vec<usize>,
    /// GroupNorm groups (MONAI's `norm_num_groups`).
    pub norm_groups: usize,
    /// Length of the per-sample conditioning vector, if the network is conditioned.
    pub condition_dim: Option<usize>,
    /// How the conditioning vector acts on the time embedding (unused without `condition_dim`).
    pub conditioning: Conditioning,
}

impl UNetConfig {
    fn time_embed_dim(&self) -> usize {
        TIME_EMBED_MULTIPLIER * self.channels[0]
    }

    fn check(&self) -> Result<()> {
        if self.channels.is_empty()
            || self.channels.len() != self.attention.len()
            || self.channels.len() != self.head_channels.len()
        {
            bail!(
                "UNet: channels ({}), attention ({}) and head_channels ({}) need one entry per level, at least one \
                 level",
                self.channels.len(),
                self.attention.len(),
                self.head_channels.len()
            )
        }
        if let Some(&c) = self.channels.iter().find(|&&c| self.norm_groups == 0 || !c.is_multiple_of(self.norm_groups))
        {
            bail!("UNet: {} norm groups do not divide {c} channels", self.norm_groups)
        }
        if self.condition_dim == Some(0) {
            bail!("UNet: a conditioning vector needs at least one entry")
        }
        Ok(())
    }

    /// Every spatial length must be divisible by this (one halving per level transition).
    fn spatial_multiple(&self) -> usize {
        LEVEL_FACTOR.pow(self.channels.len() as u32 - 1)
    }
}

/// A conv whose weight and bias start at zero (MONAI's `zero_module`): the variables are created
/// with zeros before the conv asks for them, and a checkpoint overrides them as usual.
fn zero_conv(vb: VarBuilder, dims: SpatialDims, in_channels: usize, out_channels: usize) -> Result<Conv> {
    let kernel = 3;
    let shape: Vec<usize> = [out_channels, in_channels].into_iter().chain(vec![kernel; dims.count()]).collect();
    vb.get_with_hints(shape, "weight", Init::Const(0.0))?;
    vb.get_with_hints(out_channels, "bias", Init::Const(0.0))?;
    Conv::new(vb, dims, in_channels, out_channels, kernel, 1, 1)
}

/// A 3×3[×3] conv with padding 1 and the given stride, named `conv` inside `vb` like MONAI's
/// `Convolution` wrapper.
fn conv3(vb: VarBuilder, dims: SpatialDims, in_channels: usize, out_channels: usize, stride: usize) -> Result<Conv> {
    Conv::new(vb.pp("conv"), dims, in_channels, out_channels, 3, 1, stride)
}

fn group_norm(vb: VarBuilder, groups: usize, channels: usize) -> Result<GroupNorm> {
    GroupNorm::new(vb, &GroupNormConfig { num_groups: groups, num_channels: channels, eps: UNET_NORM_EPS })
}

/// MONAI's `DiffusionUNetResnetBlock`; see the module documentation.
#[derive(Debug, Clone)]
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv,
    skip_connection: Option<Conv>,
}

impl ResBlock {
    fn new(vb: VarBuilder, cfg: &UNetConfig, in_channels: usize, out_channels: usize) -> Result<Self> {
        let dims = cfg.dims;
        let skip_connection = if in_channels == out_channels {
            None
        } else {
            Some(Conv::new(vb.pp("skip_connection").pp("conv"), dims, in_channels, out_channels, 1, 0, 1)?)
        };
        Ok(Self {
            norm1: group_norm(vb.pp("norm1"), cfg.norm_groups, in_channels)?,
            conv1: conv3(vb.pp("conv1"), dims, in_channels, out_channels, 1)?,
            time_emb_proj: linear(cfg.time_embed_dim(), out_channels, vb.pp("time_emb_proj"))?,
            norm2: group_norm(vb.pp("norm2"), cfg.norm_groups, out_channels)?,
            conv2: zero_conv(vb.pp("conv2").pp("conv"), dims, out_channels, out_channels)?,
            skip_connection,
        })
    }

    /// `x` `[B, in, *spatial]`, `emb` `[B, time_embed_dim]`.
    fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x)?.silu()?)?;
        let projected = self.time_emb_proj.forward(&emb.silu()?)?;
        let mut shape = vec![1; x.rank()];
        shape[..2].copy_from_slice(projected.dims());
        let h = h.broadcast_add(&projected.reshape(shape)?)?;
        let h = self.conv2.forward(&self.norm2.forward(&h)?.silu()?)?;
        match &self.skip_connection {
            Some(skip) => skip.forward(x)? + h,
            None => x + h,
        }
    }
}

/// A resnet followed, at attention levels, by a [`SpatialAttention`].
#[derive(Debug, Clone)]
struct Stage {
    resnet: ResBlock,
    attention: Option<SpatialAttention>,
}

impl Stage {
    fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self.resnet.forward(x, emb)?;
        match &self.attention {
            Some(attention) => attention.forward(&h),
            None => Ok(h),
        }
    }
}

/// Builds `resnets.j` (and `attentions.j`, with `attend`'s channels per head, when given) inside
/// `vb`, the first taking `in_channels(j)` input channels.
fn stages(
    vb: &VarBuilder,
    cfg: &UNetConfig,
    count: usize,
    attend: Option<usize>,
    out_channels: usize,
    in_channels: impl Fn(usize) -> usize,
) -> Result<Vec<Stage>> {
    (0..count)
        .map(|j| {
            let resnet = ResBlock::new(vb.pp("resnets").pp(j), cfg, in_channels(j), out_channels)?;
            let attention = match attend {
                Some(head_channels) => Some(attention(vb.pp("attentions").pp(j), cfg, out_channels, head_channels)?),
                None => None,
            };
            Ok(Stage { resnet, attention })
        })
        .collect()
}

fn attention(vb: VarBuilder, cfg: &UNetConfig, channels: usize, head_channels: usize) -> Result<SpatialAttention> {
    let attention_cfg =
        SpatialAttentionConfig { channels, head_channels, norm_groups: cfg.norm_groups, norm_eps: UNET_NORM_EPS };
    SpatialAttention::new(vb, &attention_cfg)
}

#[derive(Debug, Clone)]
struct DownBlock {
    stages: Vec<Stage>,
    /// MONAI's `Downsample(use_conv=True)`: a stride-2 conv (`downsampler.op.conv`).
    downsampler: Option<Conv>,
}

#[derive(Debug, Clone)]
struct UpBlock {
    stages: Vec<Stage>,
    /// MONAI's `Upsample(use_conv=True)`: nearest ×2, then a conv (`upsampler.conv.conv`).
    upsampler: Option<Conv>,
}

#[derive(Debug, Clone)]
struct MiddleBlock {
    resnet_1: ResBlock,
    attention: SpatialAttention,
    resnet_2: ResBlock,
}

/// MONAI's `DiffusionModelUNet`; see the module documentation.
#[derive(Debug, Clone)]
pub struct UNet {
    conv_in: Conv,
    time_embed: TimeEmbedding,
    cond_embed: Option<ConditionEmbedding>,
    down_blocks: Vec<DownBlock>,
    middle_block: MiddleBlock,
    up_blocks: Vec<UpBlock>,
    out_norm: GroupNorm,
    out_conv: Conv,
    cfg: UNetConfig,
}

impl UNet {
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        cfg.check()?;
        let (dims, channels, levels) = (cfg.dims, &cfg.channels, cfg.channels.len());
        let conv_in = conv3(vb.pp("conv_in"), dims, cfg.in_channels, channels[0], 1)?;
        let embed_dim = cfg.time_embed_dim();
        let time_cfg = TimeEmbeddingConfig { frequency_dim: channels[0], embed_dim, scale: TimeScale::Discrete };
        let time_embed = TimeEmbedding::new(vb.pp("time_embed"), &time_cfg)?;
        let cond_embed = match cfg.condition_dim {
            Some(cond_dim) => {
                let cond_cfg = ConditionEmbeddingConfig { cond_dim, embed_dim, mode: cfg.conditioning };
                Some(ConditionEmbedding::new(vb.pp("cond_embed"), &cond_cfg)?)
            }
            None => None,
        };

        let mut down_blocks = Vec::with_capacity(levels);
        for (i, (&out, &attend)) in channels.iter().zip(&cfg.attention).enumerate() {
            let vb = vb.pp("down_blocks").pp(i);
            let first_in = channels[i.saturating_sub(1)];
            let attend = attend.then_some(cfg.head_channels[i]);
            let stages = stages(&vb, cfg, cfg.res_blocks, attend, out, |j| if j == 0 { first_in } else { out })?;
            let downsampler = if i + 1 < levels {
                Some(conv3(vb.pp("downsampler").pp("op"), dims, out, out, LEVEL_FACTOR)?)
            } else {
                None
            };
            down_blocks.push(DownBlock { stages, downsampler });
        }

        let last = channels[levels - 1];
        let vb_mid = vb.pp("middle_block");
        let middle_block = MiddleBlock {
            resnet_1: ResBlock::new(vb_mid.pp("resnet_1"), cfg, last, last)?,
            attention: attention(vb_mid.pp("attention"), cfg, last, cfg.head_channels[levels - 1])?,
            resnet_2: ResBlock::new(vb_mid.pp("resnet_2"), cfg, last, last)?,
        };

        let mut up_blocks = Vec::with_capacity(levels);
        let mut previous = last;
        for i in 0..levels {
            let level = levels - 1 - i;
            let vb = vb.pp("up_blocks").pp(i);
            let out = channels[level];
            // The channels of the down level below this one: the skip taken before its first resnet.
            let below = channels[level.saturating_sub(1)];
            let count = cfg.res_blocks + 1;
            let resnet_in = |j: usize| {
                let input = if j == 0 { previous } else { out };
                let skip = if j + 1 == count { below } else { out };
                input + skip
            };
            let attend = cfg.attention[level].then_some(cfg.head_channels[level]);
            let stages = stages(&vb, cfg, count, attend, out, resnet_in)?;
            let upsampler =
                if level > 0 { Some(conv3(vb.pp("upsampler").pp("conv"), dims, out, out, 1)?) } else { None };
            up_blocks.push(UpBlock { stages, upsampler });
            previous = out;
        }

        let out_norm = group_norm(vb.pp("out").pp(0), cfg.norm_groups, channels[0])?;
        let out_conv = zero_conv(vb.pp("out").pp(2).pp("conv"), dims, channels[0], cfg.out_channels)?;
        Ok(Self {
            conv_in,
            time_embed,
            cond_embed,
            down_blocks,
            middle_block,
            up_blocks,
            out_norm,
            out_conv,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// The prediction `[B, out_channels, *spatial]` for `x` `[B, in_channels, *spatial]` at times
    /// `t` `[B]` (read as `time_scale` says) and, for a conditioned network, the conditioning
    /// vectors `cond` `[B, condition_dim]`. Every spatial length must be divisible by
    /// `2^(levels − 1)`.
    pub fn forward(&self, x: &Tensor, t: &Tensor, time_scale: TimeScale, cond: Option<&Tensor>) -> Result<Tensor> {
        self.check_input(x, t)?;
        let t = match time_scale {
            TimeScale::Continuous => (t.to_dtype(DType::F32)? * CONTINUOUS_TIME_SCALE)?,
            TimeScale::Discrete => t.clone(),
        };
        let emb = self.time_embed.forward(&t)?;
        let emb = match (&self.cond_embed, cond) {
            (Some(embed), Some(cond)) => embed.condition(&emb, cond)?,
            (None, None) => emb,
            (Some(_), None) => bail!("UNet: this network is conditioned; a conditioning vector is required"),
            (None, Some(_)) => bail!("UNet: this network has no conditioning, but a conditioning vector was given"),
        };

        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            for stage in &block.stages {
                h = stage.forward(&h, &emb)?;
                skips.push(h.clone());
            }
            if let Some(downsampler) = &block.downsampler {
                h = downsampler.forward(&h)?;
                skips.push(h.clone());
            }
        }

        let middle = &self.middle_block;
        h = middle.resnet_1.forward(&h, &emb)?;
        h = middle.attention.forward(&h)?;
        h = middle.resnet_2.forward(&h, &emb)?;

        for block in &self.up_blocks {
            for stage in &block.stages {
                let Some(skip) = skips.pop() else { bail!("UNet: skip connections exhausted") };
                h = stage.forward(&Tensor::cat(&[&h, &skip], 1)?, &emb)?;
            }
            if let Some(upsampler) = &block.upsampler {
                h = upsampler.forward(&upsample_nearest(&h, LEVEL_FACTOR)?)?;
            }
        }
        self.out_conv.forward(&self.out_norm.forward(&h)?.silu()?)
    }

    /// The runtime guard on shapes: rank, channels, batch of `t`, and spatial lengths divisible by
    /// `2^(levels − 1)` (the pipeline checker rejects the latter statically already).
    fn check_input(&self, x: &Tensor, t: &Tensor) -> Result<()> {
        let rank = FIRST_SPATIAL + self.cfg.dims.count();
        if x.rank() != rank || x.dims()[1] != self.cfg.in_channels {
            bail!(
                "UNet: expected [B, {}, {} spatial axes], got {:?}",
                self.cfg.in_channels,
                self.cfg.dims.count(),
                x.dims()
            )
        }
        if t.dims() != [x.dims()[0]] {
            bail!("UNet: expected one time per sample, [{}], got {:?}", x.dims()[0], t.dims())
        }
        let multiple = self.cfg.spatial_multiple();
        let spatial = &x.dims()[FIRST_SPATIAL..];
        if spatial.iter().any(|&n| n == 0 || !n.is_multiple_of(multiple)) {
            bail!(
                "UNet: spatial size {spatial:?} must be divisible by {multiple} (2^(levels − 1) for {} levels)",
                self.cfg.channels.len()
            )
        }
        Ok(())
    }
}
