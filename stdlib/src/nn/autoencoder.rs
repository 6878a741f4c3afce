//! The compression models of latent diffusion, for 2D slices `[B, C, H, W]` and 3D volumes
//! `[B, C, D, H, W]`: a convolutional [`Encoder`] / [`Decoder`] pair shared by a KL-regularised
//! VAE ([`KlVae`]) and a vector-quantised VAE ([`VqVae`]).
//!
//! **Encoder and decoder** follow MONAI's `AutoencoderKL` (`monai.networks.nets.autoencoderkl`,
//! after Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models"):
//! `conv_in` → per level `num_res_blocks` ResBlocks (GroupNorm → SiLU → conv, twice, with a 1×1
//! `nin_shortcut` where the channel count changes) and a stride-2 conv between levels → a middle
//! of two ResBlocks → GroupNorm → SiLU → `conv_out`. The decoder mirrors it, with nearest
//! upsampling by 2 and a conv between levels ([`upsample_nearest`], whose gradient adds up, unlike
//! Candle's own). `channels = [c₁, …, c_L]` gives `L − 1` downsamplings, a [`scale_factor`] of
//! `2^(L−1)`. Differences from MONAI: the downsampling conv pads 1 on both sides (MONAI pads
//! `(0, 1)` and convolves without padding), and the middle has no self-attention block.
//!
//! **[`KlVae`]**: 1×1 convs map the encoder's output to the posterior's mean and log-variance
//! (clamped to `[-30, 20]` as MONAI does), `z = mean + exp(logvar / 2) · noise` with the noise
//! drawn by the caller from a seeded `train::rng` stream (Candle's CPU `randn` cannot be seeded),
//! and a 1×1 conv precedes the decoder. Its KL term is [`kl_diag_gaussian`]: summed over the latent
//! channels and positions, averaged over the batch (seed pitfall 32).
//!
//! **[`VqVae`]** (van den Oord et al. 2017, "Neural Discrete Representation Learning"): every
//! latent vector is replaced by its nearest codebook entry (squared Euclidean distance), the
//! decoder receives `z + (q − z).detach()` (the straight-through estimator, so the reconstruction
//! gradient reaches the encoder), and the loss adds `β · ‖z − sg(q)‖²`, the commitment term. The
//! codebook `[codebook, latent_channels]` starts uniform in `±1 / codebook`, as in the reference
//! implementation, and is learnt in one of two ways ([`CodebookUpdate`]):
//! - `Loss`: it is a trainable variable, `codebook.weight`, and the loss adds the codebook term
//!   `‖q − sg(z)‖²`.
//! - `Ema { decay, epsilon }`: exponential moving averages (the paper's appendix A.1, MONAI's
//!   `EMAQuantizer`, after Sonnet's `VectorQuantizerEMA`). After each training step,
//!   [`VqVae::update_codebook`] takes the step's latents and codes and sets, per code `k`, with
//!   `nₖ` the number of latent vectors assigned to it and `sₖ` their sum:
//!   `Nₖ ← decay · Nₖ + (1 − decay) · nₖ`, `mₖ ← decay · mₖ + (1 − decay) · sₖ`, the Laplace-smoothed
//!   size `Ñₖ = (Nₖ + ε) / (N + K · ε) · N` with `N = Σₖ Nₖ`, and code `eₖ = mₖ / Ñₖ`, all in f32.
//!   The codebook gets no gradient, the loss has no codebook term, and `N`, `m` and `e` are
//!   buffers rather than parameters (below). As in MONAI, `N` starts at zero and `m` at the codes
//!   themselves, with no bias correction (Sonnet corrects its averages as Adam does), so over the
//!   first `~1 / (1 − decay)` steps the codes overshoot: at the first update a code `e` used by
//!   `n` vectors moves to about `(decay · e + (1 − decay) · s) / ((1 − decay) · n)`, and a code no
//!   vector uses to about `decay · e / ε`, shrinking by `decay` per step while it stays unused.
//!   `tests/autoencoder.rs` checks the update against MONAI's, step for step.
//!
//! **The EMA buffers**, `codebook.weight`, `codebook.cluster_size` (`N`, `[codebook]`) and
//! `codebook.embed_sum` (`m`, `[codebook, latent_channels]`), are Candle variables created through
//! the model's `VarBuilder` like its parameters, so the `VarMap`, and with it a checkpoint's
//! `model.*` tensors, holds them, and loading restores them in place. The statistics `N` and `m`
//! are f32 whatever the model's dtype (seed pitfall 41). What keeps them away from the optimiser
//! is the split the training code makes: [`VqVae::trainable_vars`] is the model's `VarMap` less
//! [`VqVae::ema_buffer_names`], sharing the same variables, and it is what `Params::from_varmap`
//! and `AdamW::new` take, while the checkpoint saves the whole `VarMap`. A separate `VarMap` for
//! the buffers would leave them out of `TrainState::model` and so out of checkpoints. The buffers
//! also never enter the autograd graph (the codebook is read detached), so even an optimiser that
//! held them would find no gradient and leave them alone.
//!
//! Both models report [`latent_channels`] and [`scale_factor`] as values, for downstream stages to
//! read and record (seed pitfall 72: a guessed default scale factor built a DiT for the wrong
//! latent size).
//!
//! [`scale_factor`]: KlVae::scale_factor
//! [`latent_channels`]: KlVae::latent_channels

use candle_core::{bail, DType, Module, Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder, VarMap};

use super::conv::{Conv, SpatialDims, FIRST_SPATIAL};
use super::norm::{GroupNorm, GroupNormConfig};
use super::resample::upsample_nearest;
use crate::train::loss::{bce_with_logits, kl_diag_gaussian, l1, mse, soft_dice};

/// MONAI's bounds for the KL-VAE's log-variance (`torch.clamp(z_log_var, -30.0, 20.0)`).
pub const LOGVAR_CLAMP: (f64, f64) = (-30.0, 20.0);

/// The commitment weight β of van den Oord et al. 2017 (and MONAI's `VectorQuantizer`).
pub const DEFAULT_COMMITMENT_BETA: f64 = 0.25;

/// The EMA codebook's decay, MONAI's `EMAQuantizer` and the paper's (γ = 0.99).
pub const DEFAULT_EMA_DECAY: f64 = 0.99;

/// The EMA codebook's Laplace smoothing ε, MONAI's `EMAQuantizer` and Sonnet's.
pub const DEFAULT_EMA_EPSILON: f64 = 1e-5;

/// The shape shared by the encoder and the decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoencoderConfig {
    pub dims: SpatialDims,
    /// Image channels, in and out.
    pub in_channels: usize,
    /// Channels per resolution level; `L` levels downsample by `2^(L−1)`.
    pub channels: Vec<usize>,
    /// ResBlocks per level (MONAI's `num_res_blocks`).
    pub num_res_blocks: usize,
    pub latent_channels: usize,
    /// GroupNorm groups; must divide every entry of `channels`.
    pub norm_groups: usize,
    /// GroupNorm epsilon (MONAI's `norm_eps`, 1e-6 by default).
    pub norm_eps: f64,
}

impl AutoencoderConfig {
    /// The downsampling from image to latent along every spatial axis, `2^(levels − 1)`.
    pub fn scale_factor(&self) -> usize {
        1 << self.channels.len().saturating_sub(1)
    }

    fn validate(&self) -> Result<()> {
        if self.channels.is_empty() || self.num_res_blocks == 0 {
            bail!("autoencoder: needs at least one level and one ResBlock per level, got {self:?}")
        }
        if [self.in_channels, self.latent_channels].contains(&0) || self.channels.contains(&0) {
            bail!("autoencoder: channel counts must be positive, got {self:?}")
        }
        if self.norm_groups == 0 || self.channels.iter().any(|c| !c.is_multiple_of(self.norm_groups)) {
            bail!("autoencoder: {} groups do not divide every level's channels {:?}", self.norm_groups, self.channels)
        }
        Ok(())
    }

    fn norm(&self, vb: VarBuilder, channels: usize) -> Result<GroupNorm> {
        GroupNorm::new(
            vb,
            &GroupNormConfig { num_groups: self.norm_groups, num_channels: channels, eps: self.norm_eps },
        )
    }

    fn conv(&self, vb: VarBuilder, in_channels: usize, out_channels: usize, kernel: usize) -> Result<Conv> {
        Conv::new(vb, self.dims, in_channels, out_channels, kernel, kernel / 2, 1)
    }
}

/// MONAI's `AEKLResBlock`: `x + conv2(silu(norm2(conv1(silu(norm1(x))))))`, the skip through a 1×1
/// `nin_shortcut` when the channel count changes.
#[derive(Debug, Clone)]
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv,
    norm2: GroupNorm,
    conv2: Conv,
    nin_shortcut: Option<Conv>,
}

impl ResBlock {
    /// One level's `num_res_blocks` blocks, from `in_channels` to `out_channels`.
    fn level(
        vb: &VarBuilder,
        cfg: &AutoencoderConfig,
        in_channels: usize,
        out_channels: usize,
    ) -> Result<Vec<ResBlock>> {
        (0..cfg.num_res_blocks)
            .map(|j| {
                let from = if j == 0 { in_channels } else { out_channels };
                ResBlock::new(vb.pp(format!("blocks.{j}")), cfg, from, out_channels)
            })
            .collect()
    }

    fn new(vb: VarBuilder, cfg: &AutoencoderConfig, in_channels: usize, out_channels: usize) -> Result<Self> {
        let nin_shortcut = if in_channels == out_channels {
            None
        } else {
            Some(cfg.conv(vb.pp("nin_shortcut"), in_channels, out_channels, 1)?)
        };
        Ok(Self {
            norm1: cfg.norm(vb.pp("norm1"), in_channels)?,
            conv1: cfg.conv(vb.pp("conv1"), in_channels, out_channels, 3)?,
            norm2: cfg.norm(vb.pp("norm2"), out_channels)?,
            conv2: cfg.conv(vb.pp("conv2"), out_channels, out_channels, 3)?,
            nin_shortcut,
        })
    }
}

impl Module for ResBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x)?.silu()?)?;
        let h = self.conv2.forward(&self.norm2.forward(&h)?.silu()?)?;
        match &self.nin_shortcut {
            Some(shortcut) => shortcut.forward(x)? + h,
            None => x + h,
        }
    }
}

/// One resolution level: its ResBlocks, then the resampling to the next level if there is one.
#[derive(Debug, Clone)]
struct Level {
    blocks: Vec<ResBlock>,
    resample: Option<Conv>,
}

/// Image `[B, in_channels, *spatial]` → `[B, latent_channels, *spatial / scale_factor]`.
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv,
    levels: Vec<Level>,
    mid: [ResBlock; 2],
    norm_out: GroupNorm,
    conv_out: Conv,
    scale_factor: usize,
}

impl Encoder {
    pub fn new(vb: VarBuilder, cfg: &AutoencoderConfig) -> Result<Self> {
        cfg.validate()?;
        let conv_in = cfg.conv(vb.pp("conv_in"), cfg.in_channels, cfg.channels[0], 3)?;
        let mut levels = Vec::with_capacity(cfg.channels.len());
        let mut current = cfg.channels[0];
        for (i, &out) in cfg.channels.iter().enumerate() {
            let vb = vb.pp(format!("levels.{i}"));
            let blocks = ResBlock::level(&vb, cfg, current, out)?;
            current = out;
            let resample = if i + 1 < cfg.channels.len() {
                Some(Conv::new(vb.pp("downsample"), cfg.dims, out, out, 3, 1, 2)?)
            } else {
                None
            };
            levels.push(Level { blocks, resample });
        }
        let mid = [
            ResBlock::new(vb.pp("mid.0"), cfg, current, current)?,
            ResBlock::new(vb.pp("mid.1"), cfg, current, current)?,
        ];
        let norm_out = cfg.norm(vb.pp("norm_out"), current)?;
        let conv_out = cfg.conv(vb.pp("conv_out"), current, cfg.latent_channels, 3)?;
        Ok(Self { conv_in, levels, mid, norm_out, conv_out, scale_factor: cfg.scale_factor() })
    }
}

impl Module for Encoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(&n) = x.dims().get(FIRST_SPATIAL..).unwrap_or(&[]).iter().find(|&&n| n % self.scale_factor != 0) {
            bail!(
                "Encoder: spatial length {n} is not a multiple of the scale factor {} ({:?})",
                self.scale_factor,
                x.dims()
            )
        }
        let mut h = self.conv_in.forward(x)?;
        for level in &self.levels {
            for block in &level.blocks {
                h = block.forward(&h)?;
            }
            if let Some(down) = &level.resample {
                h = down.forward(&h)?;
            }
        }
        for block in &self.mid {
            h = block.forward(&h)?;
        }
        self.conv_out.forward(&self.norm_out.forward(&h)?.silu()?)
    }
}

/// Latent `[B, latent_channels, *spatial]` → image `[B, in_channels, *spatial · scale_factor]`.
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv,
    mid: [ResBlock; 2],
    levels: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv,
}

impl Decoder {
    pub fn new(vb: VarBuilder, cfg: &AutoencoderConfig) -> Result<Self> {
        cfg.validate()?;
        let deepest = cfg.channels[cfg.channels.len() - 1];
        let conv_in = cfg.conv(vb.pp("conv_in"), cfg.latent_channels, deepest, 3)?;
        let mid = [
            ResBlock::new(vb.pp("mid.0"), cfg, deepest, deepest)?,
            ResBlock::new(vb.pp("mid.1"), cfg, deepest, deepest)?,
        ];
        let mut levels = Vec::with_capacity(cfg.channels.len());
        let mut current = deepest;
        for (i, &out) in cfg.channels.iter().rev().enumerate() {
            let vb = vb.pp(format!("levels.{i}"));
            let blocks = ResBlock::level(&vb, cfg, current, out)?;
            current = out;
            let resample =
                if i + 1 < cfg.channels.len() { Some(cfg.conv(vb.pp("upsample"), out, out, 3)?) } else { None };
            levels.push(Level { blocks, resample });
        }
        let norm_out = cfg.norm(vb.pp("norm_out"), current)?;
        let conv_out = cfg.conv(vb.pp("conv_out"), current, cfg.in_channels, 3)?;
        Ok(Self { conv_in, mid, levels, norm_out, conv_out })
    }
}

impl Module for Decoder {
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(z)?;
        for block in &self.mid {
            h = block.forward(&h)?;
        }
        for level in &self.levels {
            for block in &level.blocks {
                h = block.forward(&h)?;
            }
            if let Some(up) = &level.resample {
                h = up.forward(&upsample_nearest(&h, 2)?)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward(&h)?.silu()?)
    }
}

/// The reconstruction term of an autoencoder's loss, an f32 scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconstruction {
    /// Mean absolute error of intensities.
    L1,
    /// Mean squared error of intensities.
    Mse,
    /// Binary masks: the decoder's output are logits, scored by binary cross-entropy plus soft
    /// Dice ([`bce_with_logits`] + [`soft_dice`], seed pitfall 45).
    MaskBceDice,
}

impl Reconstruction {
    pub fn loss(self, reconstruction: &Tensor, target: &Tensor) -> Result<Tensor> {
        match self {
            Reconstruction::L1 => l1(reconstruction, target),
            Reconstruction::Mse => mse(reconstruction, target),
            Reconstruction::MaskBceDice => {
                bce_with_logits(reconstruction, target)? + soft_dice(reconstruction, target)?
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KlVaeConfig {
    pub autoencoder: AutoencoderConfig,
    pub reconstruction: Reconstruction,
    /// The weight of the KL term in [`KlVaeLosses::total`].
    pub kl_weight: f64,
}

/// The loss terms of one [`KlVae`] step, f32 scalars.
#[derive(Debug, Clone)]
pub struct KlVaeLosses {
    /// The decoded sample of the posterior, what the reconstruction loss compared with `x`.
    pub decoded: Tensor,
    pub reconstruction: Tensor,
    /// [`kl_diag_gaussian`]: summed over latent channels and positions, averaged over the batch.
    pub kl: Tensor,
    /// `reconstruction + kl_weight · kl`.
    pub total: Tensor,
}

/// A KL-regularised VAE; see the module documentation. Parameters: `encoder.*`, `quant_conv_mu`,
/// `quant_conv_log_sigma`, `post_quant_conv` (1×1 convs, MONAI's names) and `decoder.*`.
#[derive(Debug, Clone)]
pub struct KlVae {
    encoder: Encoder,
    quant_conv_mu: Conv,
    quant_conv_log_sigma: Conv,
    post_quant_conv: Conv,
    decoder: Decoder,
    cfg: KlVaeConfig,
}

impl KlVae {
    pub fn new(vb: VarBuilder, cfg: &KlVaeConfig) -> Result<Self> {
        let ae = &cfg.autoencoder;
        let latent = ae.latent_channels;
        Ok(Self {
            encoder: Encoder::new(vb.pp("encoder"), ae)?,
            quant_conv_mu: ae.conv(vb.pp("quant_conv_mu"), latent, latent, 1)?,
            quant_conv_log_sigma: ae.conv(vb.pp("quant_conv_log_sigma"), latent, latent, 1)?,
            post_quant_conv: ae.conv(vb.pp("post_quant_conv"), latent, latent, 1)?,
            decoder: Decoder::new(vb.pp("decoder"), ae)?,
            cfg: cfg.clone(),
        })
    }

    pub fn latent_channels(&self) -> usize {
        self.cfg.autoencoder.latent_channels
    }

    pub fn scale_factor(&self) -> usize {
        self.cfg.autoencoder.scale_factor()
    }

    /// The posterior's `(mean, logvar)`, each `[B, latent_channels, *spatial / scale_factor]`, the
    /// log-variance clamped to [`LOGVAR_CLAMP`].
    pub fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.encoder.forward(x)?;
        let mean = self.quant_conv_mu.forward(&h)?;
        let logvar = self.quant_conv_log_sigma.forward(&h)?.clamp(LOGVAR_CLAMP.0, LOGVAR_CLAMP.1)?;
        Ok((mean, logvar))
    }

    /// The reparameterised sample `mean + exp(logvar / 2) · noise`; `noise` is standard normal, of
    /// the latent's shape, drawn by the caller from a seeded stream.
    pub fn sample(mean: &Tensor, logvar: &Tensor, noise: &Tensor) -> Result<Tensor> {
        if noise.shape() != mean.shape() {
            bail!("KlVae::sample: noise {:?} does not match the latent {:?}", noise.dims(), mean.dims())
        }
        mean + (logvar * 0.5)?.exp()?.mul(noise)?
    }

    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.decoder.forward(&self.post_quant_conv.forward(z)?)
    }

    /// Encode, sample with `noise`, decode, and the loss terms against `x`.
    pub fn loss(&self, x: &Tensor, noise: &Tensor) -> Result<KlVaeLosses> {
        let (mean, logvar) = self.encode(x)?;
        let decoded = self.decode(&Self::sample(&mean, &logvar, noise)?)?;
        let reconstruction = self.cfg.reconstruction.loss(&decoded, x)?;
        let kl = kl_diag_gaussian(&mean, &logvar)?;
        let total = (&reconstruction + (&kl * self.cfg.kl_weight)?)?;
        Ok(KlVaeLosses { decoded, reconstruction, kl, total })
    }
}

/// How a [`VqVae`] learns its codebook; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CodebookUpdate {
    /// By gradient descent on the codebook loss `‖q − sg(z)‖²`: the codebook is a parameter.
    Loss,
    /// By exponential moving averages in [`VqVae::update_codebook`]: the codebook is a buffer.
    /// `decay` in `[0, 1)` is the weight of the old averages, `epsilon > 0` the Laplace smoothing.
    Ema { decay: f64, epsilon: f64 },
}

impl CodebookUpdate {
    /// EMA updates with [`DEFAULT_EMA_DECAY`] and [`DEFAULT_EMA_EPSILON`].
    pub const EMA: CodebookUpdate = CodebookUpdate::Ema { decay: DEFAULT_EMA_DECAY, epsilon: DEFAULT_EMA_EPSILON };

    fn validate(self) -> Result<()> {
        if let CodebookUpdate::Ema { decay, epsilon } = self {
            if !((0.0..1.0).contains(&decay) && epsilon.is_finite() && epsilon > 0.0) {
                bail!("VqVae: EMA decay {decay} must lie in [0, 1) and epsilon {epsilon} be finite and positive")
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VqVaeConfig {
    pub autoencoder: AutoencoderConfig,
    /// Number of codebook entries.
    pub codebook: usize,
    /// The commitment weight β.
    pub beta: f64,
    pub reconstruction: Reconstruction,
    pub codebook_update: CodebookUpdate,
}

impl VqVaeConfig {
    /// β = [`DEFAULT_COMMITMENT_BETA`], an L1 reconstruction loss and a codebook learnt by its loss.
    pub fn new(autoencoder: AutoencoderConfig, codebook: usize) -> Self {
        Self {
            autoencoder,
            codebook,
            beta: DEFAULT_COMMITMENT_BETA,
            reconstruction: Reconstruction::L1,
            codebook_update: CodebookUpdate::Loss,
        }
    }
}

/// The result of quantising a latent.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// `z + (q − z).detach()`: the codes' values, the encoder's gradient (straight-through).
    pub latent: Tensor,
    /// The chosen code per latent position, `[B, *spatial]`, u32.
    pub indices: Tensor,
    /// `mean ‖q − sg(z)‖²`, which trains the codebook; `None` with EMA updates.
    pub codebook_loss: Option<Tensor>,
    /// `mean ‖z − sg(q)‖²`, which keeps the encoder close to its codes.
    pub commitment_loss: Tensor,
}

/// The loss terms of one [`VqVae`] step, f32 scalars, and what [`VqVae::update_codebook`] needs.
#[derive(Debug, Clone)]
pub struct VqVaeLosses {
    /// The decoded quantised latent, what the reconstruction loss compared with `x`.
    pub decoded: Tensor,
    pub reconstruction: Tensor,
    /// `None` with EMA updates.
    pub codebook: Option<Tensor>,
    pub commitment: Tensor,
    /// `reconstruction + codebook + β · commitment`, without `codebook` with EMA updates.
    pub total: Tensor,
    /// The encoder's continuous latent `z`, `[B, latent_channels, *spatial]`.
    pub encoded: Tensor,
    /// The code chosen for each latent position, `[B, *spatial]`, u32.
    pub indices: Tensor,
}

/// The codebook as a parameter, or as the EMA buffers that replace it.
#[derive(Debug, Clone)]
enum Codebook {
    Learnt(Tensor),
    Ema(EmaCodebook),
}

/// The codebook and its moving averages, and the averages' settings; see the module documentation.
#[derive(Debug, Clone)]
struct EmaCodebook {
    /// `e`, `[codebook, latent_channels]`, in the model's dtype.
    weight: Var,
    /// `N`, `[codebook]`, f32.
    cluster_size: Var,
    /// `m`, `[codebook, latent_channels]`, f32.
    embed_sum: Var,
    decay: f64,
    epsilon: f64,
    /// The full names of `weight`, `cluster_size` and `embed_sum` in the `VarBuilder` they came from.
    names: [String; 3],
}

impl EmaCodebook {
    /// `cluster_size` starts at zero and `embed_sum` as a copy of `weight`, MONAI's initial state;
    /// no `Init` hint can express the copy, so a freshly created `embed_sum` is set after creation.
    /// Variables that `vb` already holds (a loaded checkpoint) are taken as they are.
    fn new(vb: &VarBuilder, weight: &Tensor, decay: f64, epsilon: f64) -> Result<Self> {
        let (codes, channels) = weight.dims2()?;
        let fresh = !vb.contains_tensor("embed_sum");
        let cluster_size = vb.get_with_hints_dtype(codes, "cluster_size", Init::Const(0.0), DType::F32)?;
        let embed_sum = Var::from_tensor(&vb.get_with_hints_dtype(
            (codes, channels),
            "embed_sum",
            Init::Const(0.0),
            DType::F32,
        )?)?;
        if fresh {
            embed_sum.set(&weight.to_dtype(DType::F32)?)?;
        }
        let names = ["weight", "cluster_size", "embed_sum"].map(|name| format!("{}.{name}", vb.prefix()));
        Ok(Self {
            weight: Var::from_tensor(weight)?,
            cluster_size: Var::from_tensor(&cluster_size)?,
            embed_sum,
            decay,
            epsilon,
            names,
        })
    }

    /// One EMA update from the latent vectors `flat` `[N, C]` and their codes `indices` `[N]`.
    fn update(&self, flat: &Tensor, indices: &Tensor) -> Result<()> {
        let (codes, channels) = self.embed_sum.dims2()?;
        let (decay, epsilon) = (self.decay, self.epsilon);
        let device = flat.device();
        let flat = flat.detach().to_dtype(DType::F32)?;
        let counts = Tensor::zeros(codes, DType::F32, device)?.index_add(
            indices,
            &Tensor::ones(indices.dim(0)?, DType::F32, device)?,
            0,
        )?;
        let sums = Tensor::zeros((codes, channels), DType::F32, device)?.index_add(indices, &flat, 0)?;
        let cluster_size = ((self.cluster_size.as_tensor().detach() * decay)? + (counts * (1.0 - decay))?)?;
        let total = cluster_size.sum_all()?;
        let smoothed =
            (&cluster_size + epsilon)?.broadcast_div(&(&total + codes as f64 * epsilon)?)?.broadcast_mul(&total)?;
        let embed_sum = ((self.embed_sum.as_tensor().detach() * decay)? + (sums * (1.0 - decay))?)?;
        let weight = embed_sum.broadcast_div(&smoothed.unsqueeze(1)?)?;
        self.cluster_size.set(&cluster_size)?;
        self.embed_sum.set(&embed_sum)?;
        self.weight.set(&weight.to_dtype(self.weight.dtype())?)
    }
}

impl Codebook {
    /// The codes as the quantiser reads them: the parameter itself, or the EMA buffer detached.
    fn codes(&self) -> Tensor {
        match self {
            Codebook::Learnt(weight) => weight.clone(),
            Codebook::Ema(ema) => ema.weight.as_tensor().detach(),
        }
    }
}

/// A vector-quantised VAE; see the module documentation. Variables: `encoder.*`,
/// `codebook.weight` (`[codebook, latent_channels]`) and `decoder.*`; with EMA updates
/// `codebook.weight` is a buffer, joined by the buffers `codebook.cluster_size` and
/// `codebook.embed_sum`.
#[derive(Debug, Clone)]
pub struct VqVae {
    encoder: Encoder,
    codebook: Codebook,
    decoder: Decoder,
    cfg: VqVaeConfig,
}

impl VqVae {
    /// The codebook starts uniform in `±1 / codebook`, as in the reference implementation.
    pub fn new(vb: VarBuilder, cfg: &VqVaeConfig) -> Result<Self> {
        if cfg.codebook == 0 {
            bail!("VqVae: the codebook must have at least one entry")
        }
        cfg.codebook_update.validate()?;
        let bound = 1.0 / cfg.codebook as f64;
        let codebook_vb = vb.pp("codebook");
        let weight = codebook_vb.get_with_hints(
            (cfg.codebook, cfg.autoencoder.latent_channels),
            "weight",
            Init::Uniform { lo: -bound, up: bound },
        )?;
        let codebook = match cfg.codebook_update {
            CodebookUpdate::Loss => Codebook::Learnt(weight),
            CodebookUpdate::Ema { decay, epsilon } => {
                Codebook::Ema(EmaCodebook::new(&codebook_vb, &weight, decay, epsilon)?)
            }
        };
        Ok(Self {
            encoder: Encoder::new(vb.pp("encoder"), &cfg.autoencoder)?,
            codebook,
            decoder: Decoder::new(vb.pp("decoder"), &cfg.autoencoder)?,
            cfg: cfg.clone(),
        })
    }

    pub fn latent_channels(&self) -> usize {
        self.cfg.autoencoder.latent_channels
    }

    pub fn scale_factor(&self) -> usize {
        self.cfg.autoencoder.scale_factor()
    }

    /// The codes, `[codebook, latent_channels]`.
    pub fn codebook(&self) -> &Tensor {
        match &self.codebook {
            Codebook::Learnt(weight) => weight,
            Codebook::Ema(ema) => ema.weight.as_tensor(),
        }
    }

    /// The full names of the EMA buffers (`…codebook.weight`, `…codebook.cluster_size`,
    /// `…codebook.embed_sum`, under the `VarBuilder`'s prefix); empty when the codebook is learnt
    /// by its loss.
    pub fn ema_buffer_names(&self) -> &[String] {
        match &self.codebook {
            Codebook::Learnt(_) => &[],
            Codebook::Ema(ema) => &ema.names,
        }
    }

    /// The variables of `varmap`, the map this model was built from, that an optimiser is to
    /// update: all but [`VqVae::ema_buffer_names`]. The map shares `varmap`'s variables (a `Var`
    /// is a handle), so an optimiser made from `Params::from_varmap` of it updates the model.
    pub fn trainable_vars(&self, varmap: &VarMap) -> VarMap {
        let trainable = VarMap::new();
        {
            let all = varmap.data().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut kept = trainable.data().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let buffers = self.ema_buffer_names();
            kept.extend(all.iter().filter(|(name, _)| !buffers.contains(name)).map(|(n, v)| (n.clone(), v.clone())));
        }
        trainable
    }

    /// The encoder's continuous latent, before quantisation.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        self.encoder.forward(x)
    }

    /// Replace every latent vector of `z` `[B, C, *spatial]` by its nearest code.
    pub fn quantize(&self, z: &Tensor) -> Result<Quantized> {
        quantize(z, &self.codebook.codes(), matches!(self.codebook, Codebook::Learnt(_)))
    }

    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        self.decoder.forward(latent)
    }

    /// Encode, quantise, decode, and the loss terms against `x`.
    pub fn loss(&self, x: &Tensor) -> Result<VqVaeLosses> {
        let encoded = self.encode(x)?;
        let quantized = self.quantize(&encoded)?;
        let decoded = self.decode(&quantized.latent)?;
        let reconstruction = self.cfg.reconstruction.loss(&decoded, x)?;
        let Quantized { codebook_loss: codebook, commitment_loss: commitment, indices, .. } = quantized;
        let total = match &codebook {
            Some(codebook) => ((&reconstruction + codebook)? + (&commitment * self.cfg.beta)?)?,
            None => (&reconstruction + (&commitment * self.cfg.beta)?)?,
        };
        Ok(VqVaeLosses { decoded, reconstruction, codebook, commitment, total, encoded, indices })
    }

    /// The EMA update of the codebook (see the module documentation) from a training step's
    /// latent `z` `[B, C, *spatial]` and the codes `indices` `[B, *spatial]` it was quantised to,
    /// [`VqVaeLosses::encoded`] and [`VqVaeLosses::indices`]; called once per training step, and
    /// an error when the codebook is learnt by its loss.
    pub fn update_codebook(&self, z: &Tensor, indices: &Tensor) -> Result<()> {
        let Codebook::Ema(ema) = &self.codebook else {
            bail!("VqVae::update_codebook: the codebook is learnt by its loss, not by EMA updates")
        };
        let flat = channels_last(z, self.latent_channels())?;
        let indices = indices.flatten_all()?;
        if indices.dim(0)? != flat.dim(0)? {
            bail!("VqVae::update_codebook: {:?} indices for a latent {:?}", indices.dims(), z.dims())
        }
        ema.update(&flat, &indices)
    }
}

/// `z` `[B, C, *spatial]` with the channel axis moved last and the rest flattened, `[N, C]`.
fn channels_last(z: &Tensor, channels: usize) -> Result<Tensor> {
    let dims = z.dims();
    if dims.len() < 3 || dims[1] != channels {
        bail!("quantize: expected [B, {channels}, *spatial], got {dims:?}")
    }
    let rank = dims.len();
    let order: Vec<usize> = std::iter::once(0).chain(2..rank).chain(std::iter::once(1)).collect();
    z.permute(order)?.contiguous()?.reshape(((), channels))
}

/// Nearest-code quantisation of `z` `[B, C, *spatial]` against `codebook` `[K, C]`: the channel
/// axis is moved last and flattened to `[N, C]`, distances `‖z‖² − 2 z·e + ‖e‖²` are `[N, K]`.
/// With `codebook_loss`, the codebook term is computed (its gradient reaches `codebook`).
fn quantize(z: &Tensor, codebook: &Tensor, codebook_loss: bool) -> Result<Quantized> {
    let dims = z.dims().to_vec();
    let channels = codebook.dim(1)?;
    let flat = channels_last(z, channels)?;
    let rank = dims.len();
    let detached = flat.detach();
    let distances = detached
        .sqr()?
        .sum_keepdim(1)?
        .broadcast_sub(&(detached.matmul(&codebook.detach().t()?)? * 2.0)?)?
        .broadcast_add(&codebook.detach().sqr()?.sum(1)?.unsqueeze(0)?)?;
    let indices = distances.argmin(D::Minus1)?;
    let codes = codebook.index_select(&indices, 0)?;
    let codebook_loss = if codebook_loss { Some(mse(&codes, &detached)?) } else { None };
    let commitment_loss = mse(&flat, &codes.detach())?;
    let straight_through = (&flat + (&codes - &flat)?.detach())?;
    let mut spatial_first: Vec<usize> = vec![dims[0]];
    spatial_first.extend(&dims[2..]);
    let channels_first: Vec<usize> = std::iter::once(0).chain(std::iter::once(rank - 1)).chain(1..rank - 1).collect();
    let latent = straight_through.reshape([spatial_first.as_slice(), &[channels]].concat())?.permute(channels_first)?;
    Ok(Quantized { latent, indices: indices.reshape(spatial_first)?, codebook_loss, commitment_loss })
}
