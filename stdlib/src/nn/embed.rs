//! Timestep and conditioning embeddings.
//!
//! **Sinusoidal timestep embedding** ([`timestep_embedding`]): the transformer position encoding
//! of Vaswani et al. (2017) applied to the diffusion time, as in Ho et al., "Denoising Diffusion
//! Probabilistic Models" (2020). The formula is diffusers' `get_timestep_embedding`
//! (`diffusers/models/embeddings.py`) with `flip_sin_to_cos=True, downscale_freq_shift=0,
//! scale=1, max_period=10000`, which is exactly MONAI's `get_timestep_embedding`
//! (`monai/networks/nets/diffusion_model_unet.py`) and DiT's `TimestepEmbedder.timestep_embedding`
//! (`facebookresearch/DiT`, `models.py`): with `half = dim / 2`,
//!
//! ```text
//! freq_i = exp(-ln(10000) * i / half)              i = 0 .. half-1
//! emb(t) = [cos(t * freq_0) .. cos(t * freq_{half-1}), sin(t * freq_0) .. sin(t * freq_{half-1})]
//! ```
//!
//! cosines first, one zero appended when `dim` is odd. Everything is computed in f32 in PyTorch's
//! order of operations. Our frequencies are correctly rounded (Rust's `expf`), while PyTorch's
//! vectorised `expf` is one ulp off for a few exponents; at `t ≈ 1000` that moves an argument by
//! up to ~3e-5, the f32 resolution of the argument itself (`tests/layers.rs` measures it).
//!
//! **Time scale** ([`TimeScale`]): a DDPM timestep is an integer `t ∈ [0, T)` and is embedded as
//! it is. A rectified-flow time is continuous, `t ∈ [0, 1]` (seed pitfall 68: 0 clean, 1 noise),
//! and is embedded as `t · 1000` ([`CONTINUOUS_TIME_SCALE`]) like the seeds' code (pitfall 65:
//! continuous timesteps span 0.0 to 1000.0), so both strategies use the same frequencies over the
//! same range when `T = 1000`, and a continuous `t` lands where the discrete step `t · T` would.
//!
//! **MLP time embedding** ([`TimeEmbedding`]): sinusoid → `Linear → SiLU → Linear`, MONAI's
//! `DiffusionModelUNet.time_embed` and DiT's `TimestepEmbedder.mlp`. Both are an
//! `nn.Sequential`, so the linears are named `0` and `2` like their checkpoints.
//!
//! **Conditioning embeddings** ([`ConditionEmbedding`]): a conditioning vector per sample
//! (one-hot class or mode, tumour size-bin counts) goes through the same `Linear → SiLU → Linear`
//! and then acts on the time embedding, either by addition (MONAI's `class_embedding`, the seeds'
//! default mode embedding) or as FiLM (Perez et al., "FiLM: Visual Reasoning with a General
//! Conditioning Layer", AAAI 2018; seed pitfall 47), which predicts a scale and a shift:
//! `emb · (1 + scale) + shift`. Pitfall 47 writes `scale · x + shift`; our `1 + scale` is the same
//! layer with the scale measured from 1 (as in DiT's adaLN `modulate` and diffusers' `scale_shift`
//! norm), so that small initial outputs leave the time embedding almost unchanged instead of
//! multiplying it by almost zero.

use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};

/// The longest period of the sinusoids (`max_period` in diffusers, MONAI and DiT).
pub const MAX_PERIOD: f64 = 10_000.0;

/// A continuous time `t ∈ [0, 1]` is embedded as `t · CONTINUOUS_TIME_SCALE`, the seeds'
/// `num_train_timesteps`, so continuous and discrete times share frequencies.
pub const CONTINUOUS_TIME_SCALE: f64 = 1000.0;

/// Names of the two linears inside PyTorch's `nn.Sequential(Linear, SiLU, Linear)`.
const MLP_IN: &str = "0";
const MLP_OUT: &str = "2";

/// What the timestep tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeScale {
    /// Rectified-flow time `t ∈ [0, 1]`, embedded as `t · CONTINUOUS_TIME_SCALE`.
    Continuous,
    /// DDPM step `t ∈ [0, T)`, integer or float, embedded as it is.
    Discrete,
}

/// The sinusoid frequencies `exp(-ln(MAX_PERIOD) * i / half)`, rounded step by step in f32 as
/// PyTorch computes them.
fn frequencies(half: usize, device: &Device) -> Result<Tensor> {
    let log_period = -(MAX_PERIOD.ln() as f32);
    let freqs: Vec<f32> = (0..half).map(|i| (log_period * i as f32 / half as f32).exp()).collect();
    Tensor::from_vec(freqs, (1, half), device)
}

/// The sinusoidal embedding `[B, dim]` (f32) of the times `t` (`[B]`, any numeric dtype); see
/// the module documentation for the formula and the time scale.
pub fn timestep_embedding(t: &Tensor, dim: usize, scale: TimeScale) -> Result<Tensor> {
    let batch = t.dims1()?;
    let t = t.to_dtype(DType::F32)?;
    let t = match scale {
        TimeScale::Continuous => (t * CONTINUOUS_TIME_SCALE)?,
        TimeScale::Discrete => t,
    };
    let half = dim / 2;
    let args = t.reshape((batch, 1))?.broadcast_mul(&frequencies(half, t.device())?)?;
    let embedding = Tensor::cat(&[args.cos()?, args.sin()?], 1)?;
    if dim % 2 == 1 {
        embedding.pad_with_zeros(1, 0, 1)
    } else {
        Ok(embedding)
    }
}

/// `Linear(in, hidden) → SiLU → Linear(hidden, out)`, named like PyTorch's `nn.Sequential`.
#[derive(Debug, Clone)]
struct Mlp {
    input: Linear,
    output: Linear,
}

impl Mlp {
    fn new(vb: VarBuilder, in_dim: usize, hidden_dim: usize, out_dim: usize) -> Result<Self> {
        let input = linear(in_dim, hidden_dim, vb.pp(MLP_IN))?;
        let output = linear(hidden_dim, out_dim, vb.pp(MLP_OUT))?;
        Ok(Self { input, output })
    }

    /// The dtype of the parameters, to which inputs are cast.
    fn dtype(&self) -> DType {
        self.input.weight().dtype()
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.output.forward(&self.input.forward(&x.to_dtype(self.dtype())?)?.silu()?)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEmbeddingConfig {
    /// Width of the sinusoid (MONAI: the first block's channels; DiT: 256).
    pub frequency_dim: usize,
    /// Width of the embedding, of both linears' outputs (MONAI: 4 × the first block's channels).
    pub embed_dim: usize,
    pub scale: TimeScale,
}

/// Times `[B]` → embeddings `[B, embed_dim]` in the parameters' dtype; see the module
/// documentation. Parameters: `0.weight`, `0.bias`, `2.weight`, `2.bias`.
#[derive(Debug, Clone)]
pub struct TimeEmbedding {
    mlp: Mlp,
    cfg: TimeEmbeddingConfig,
}

impl TimeEmbedding {
    pub fn new(vb: VarBuilder, cfg: &TimeEmbeddingConfig) -> Result<Self> {
        let mlp = Mlp::new(vb, cfg.frequency_dim, cfg.embed_dim, cfg.embed_dim)?;
        Ok(Self { mlp, cfg: *cfg })
    }
}

impl Module for TimeEmbedding {
    fn forward(&self, t: &Tensor) -> Result<Tensor> {
        self.mlp.forward(&timestep_embedding(t, self.cfg.frequency_dim, self.cfg.scale)?)
    }
}

/// How a conditioning vector acts on the time embedding (seed pitfall 47).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conditioning {
    /// `emb + mlp(c)`.
    Additive,
    /// `emb · (1 + scale) + shift` with `[scale, shift] = mlp(c)`.
    Film,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConditionEmbeddingConfig {
    /// Length of the conditioning vector (classes, modes or size bins).
    pub cond_dim: usize,
    /// Width of the time embedding it conditions.
    pub embed_dim: usize,
    pub mode: Conditioning,
}

/// A class, mode or size-bin vector `[B, cond_dim]` applied to a time embedding
/// `[B, embed_dim]`; see the module documentation. Parameters: `0.weight`, `0.bias`,
/// `2.weight`, `2.bias`; with FiLM the last linear has `2 · embed_dim` outputs, the scale first.
#[derive(Debug, Clone)]
pub struct ConditionEmbedding {
    mlp: Mlp,
    cfg: ConditionEmbeddingConfig,
}

impl ConditionEmbedding {
    pub fn new(vb: VarBuilder, cfg: &ConditionEmbeddingConfig) -> Result<Self> {
        let out_dim = match cfg.mode {
            Conditioning::Additive => cfg.embed_dim,
            Conditioning::Film => 2 * cfg.embed_dim,
        };
        let mlp = Mlp::new(vb, cfg.cond_dim, cfg.embed_dim, out_dim)?;
        Ok(Self { mlp, cfg: *cfg })
    }

    /// The time embedding `emb` conditioned on `cond`, in the parameters' dtype.
    pub fn condition(&self, emb: &Tensor, cond: &Tensor) -> Result<Tensor> {
        let (batch, width) = emb.dims2()?;
        if width != self.cfg.embed_dim || cond.dims2()? != (batch, self.cfg.cond_dim) {
            bail!(
                "ConditionEmbedding: expected [B, {}] and [B, {}], got {:?} and {:?}",
                self.cfg.embed_dim,
                self.cfg.cond_dim,
                emb.dims(),
                cond.dims()
            )
        }
        let emb = emb.to_dtype(self.mlp.dtype())?;
        let projected = self.mlp.forward(cond)?;
        match self.cfg.mode {
            Conditioning::Additive => emb + projected,
            Conditioning::Film => {
                let scale = projected.narrow(1, 0, width)?;
                let shift = projected.narrow(1, width, width)?;
                (emb * (scale + 1.0)?)? + shift
            }
        }
    }
}
