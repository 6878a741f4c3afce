//! Diffusion and interpolant transformers on 2D slices `[B, C, H, W]` and 3D volumes
//! `[B, C, D, H, W]`.
//!
//! - **DiT**: Peebles & Xie, "Scalable Diffusion Models with Transformers" (ICCV 2023); reference
//!   implementation `facebookresearch/DiT`, `models.py`.
//! - **SiT**: Ma et al., "SiT: Exploring Flow and Diffusion-based Generative Models with Scalable
//!   Interpolant Transformers" (ECCV 2024); reference `willisma/SiT`, `models.py`. SiT's network is
//!   DiT's, unchanged: only the training objective (an interpolant instead of DDPM) differs, so
//!   both are one type, [`DiT`], and [`Variant`] only names the model.
//!
//! The network, as in the reference: the input is cut into `patch`-sized cubes by a convolution
//! with kernel = stride = `patch` (`x_embedder.proj`, timm's `PatchEmbed`), giving tokens
//! `[B, N, hidden]`, to which fixed sin-cos positional embeddings are added. The time goes through
//! the sinusoid of [`super::embed`] (256 frequencies) and `Linear → SiLU → Linear`
//! (`t_embedder.mlp.{0,2}`); an optional conditioning vector is added to it
//! ([`ConditionEmbedding`], `y_embedder.mlp.{0,2}`). Each of the `depth` adaLN-Zero blocks
//! (`blocks.N`) does
//!
//! ```text
//! shift₁ scale₁ gate₁ shift₂ scale₂ gate₂ = adaLN_modulation(c)      (SiLU → Linear, 6 · hidden)
//! x += gate₁ · attn(LayerNorm(x) · (1 + scale₁) + shift₁)
//! x += gate₂ · mlp(LayerNorm(x) · (1 + scale₂) + shift₂)             (fc1 → GELU(tanh) → fc2)
//! ```
//!
//! with LayerNorms without affine parameters (eps 1e-6) and timm's attention
//! ([`TokenAttention`], `blocks.N.attn.{qkv,proj}`). The final layer (`final_layer`) modulates a
//! last LayerNorm with a shift and scale from `c` and projects each token to `patch^dims ·
//! out_channels` values (`final_layer.linear`), which are put back in place (unpatchify; per
//! token the values are ordered by position in the patch, (depth,) row, column, with the channel
//! last, like the reference's `einsum('nhwpqc->nchpwq')`).
//!
//! **Zero initialisation** (adaLN-Zero): every `adaLN_modulation.1` and `final_layer.linear` start
//! at zero, as in the reference, so a fresh model **outputs exactly zero** and each block starts
//! as the identity. In the first backward pass only `final_layer.linear` receives a gradient (all
//! other paths go through a zero weight); after one optimiser step the modulations receive
//! gradients, and after a second the attention and MLP weights behind the gates do.
//!
//! **Positional embeddings are computed from the input's own grid at every forward pass**
//! ([`sincos_pos_embed`]), never from a size fixed at construction or from an assumed compression
//! factor (seed pitfall 72: a DiT built for a latent 8× smaller than the real 4× one crashed on a
//! positional-embedding size mismatch). A spatial size not divisible by `patch` is an error that
//! says so. In 2D they are MAE's/DiT's `get_2d_sincos_pos_embed` (non-square grids allowed): for
//! the token in row `h`, column `w`, `[emb₁(w) | emb₁(h)]`, each half `hidden / 2` wide, where
//! `emb₁(pos)` of width `d` is `[sin(pos · ω_i) | cos(pos · ω_i)]`, `ω_i = 10000^(-i / (d/2))`,
//! `i < d/2`, computed in f64. In 3D the width is split across the three axes as
//! `[emb₁(w) | emb₁(h) | emb₁(d)]` with widths `a`, `a` and `hidden − 2a`, `a = 2·⌊hidden / 6⌋`
//! (even, so that each axis has as many sines as cosines; the depth axis takes the remainder):
//! thirds when 6 divides `hidden` (128 each for S, 256 for B), 10, 10 and 12 for `hidden = 32`.
//! Tokens are ordered depth, row, column, column fastest, as the patch convolution lays them out.
//!
//! **Deviations from the reference.** The class-label embedding table (`LabelEmbedder`, with its
//! label dropout for classifier-free guidance) is replaced by a conditioning vector through an MLP
//! added to the time embedding; dropping the condition for guidance is left to the training loop.
//! Non-zero-initialised weights keep the initialisers of the building blocks (Candle's linear
//! initialisation, PyTorch's default convolution initialisation) instead of DiT's Xavier-uniform
//! linears and `N(0, 0.02)` time-embedding weights. The output channels are given explicitly
//! (DiT's `learn_sigma` doubles them; set `out_channels = 2 · in_channels` for that).

use candle_core::{bail, DType, Device, Module, Result, Tensor, D};
use candle_nn::{linear, Init, Linear, VarBuilder};

use super::attention::{TokenAttention, TokenAttentionConfig};
use super::conv::{Conv, SpatialDims, FIRST_SPATIAL};
use super::embed::{
    timestep_embedding, ConditionEmbedding, ConditionEmbeddingConfig, Conditioning, TimeScale, MAX_PERIOD,
};
use super::norm::{LayerNorm, LayerNormConfig};

/// Width of the time sinusoid (DiT's `frequency_embedding_size`).
pub const FREQUENCY_DIM: usize = 256;

/// The LayerNorm eps of DiT's blocks and final layer.
const NORM_EPS: f64 = 1e-6;

/// Names of the linear inside PyTorch's `nn.Sequential(SiLU, Linear)` and of the two linears
/// inside `nn.Sequential(Linear, SiLU, Linear)`.
const MODULATION_LINEAR: &str = "1";
const MLP_IN: &str = "0";
const MLP_OUT: &str = "2";

/// Which model the network is trained as; architecturally identical, see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Diffusion (DDPM) objective, Peebles & Xie 2023.
    DiT,
    /// Interpolant (flow-matching) objective, Ma et al. 2024.
    SiT,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::DiT => "DiT",
            Variant::SiT => "SiT",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiTConfig {
    pub variant: Variant,
    pub dims: SpatialDims,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Patch edge length along every spatial axis.
    pub patch: usize,
    /// Token width (DiT's `hidden_size`).
    pub hidden: usize,
    /// Number of adaLN-Zero blocks.
    pub depth: usize,
    pub heads: usize,
    /// MLP width as a multiple of `hidden` (4 in DiT).
    pub mlp_ratio: f64,
    /// Length of an optional conditioning vector per sample.
    pub condition_dim: Option<usize>,
}

impl DiTConfig {
    /// A DiT with the given transformer size, MLP ratio 4 and no condition.
    fn sized(
        variant: Variant,
        dims: SpatialDims,
        channels: (usize, usize),
        patch: usize,
        [hidden, depth, heads]: [usize; 3],
    ) -> Self {
        let (in_channels, out_channels) = channels;
        Self {
            variant,
            dims,
            in_channels,
            out_channels,
            patch,
            hidden,
            depth,
            heads,
            mlp_ratio: 4.0,
            condition_dim: None,
        }
    }

    /// DiT-S / SiT-S: hidden 384, depth 12, 6 heads.
    pub fn small(variant: Variant, dims: SpatialDims, channels: (usize, usize), patch: usize) -> Self {
        Self::sized(variant, dims, channels, patch, [384, 12, 6])
    }

    /// DiT-B / SiT-B: hidden 768, depth 12, 12 heads.
    pub fn base(variant: Variant, dims: SpatialDims, channels: (usize, usize), patch: usize) -> Self {
        Self::sized(variant, dims, channels, patch, [768, 12, 12])
    }

    /// A size for tests: hidden 32, depth 2, 4 heads.
    pub fn tiny(variant: Variant, dims: SpatialDims, channels: (usize, usize), patch: usize) -> Self {
        Self::sized(variant, dims, channels, patch, [32, 2, 4])
    }

    /// The reference's model name, e.g. `SiT-S/2` (`-T` for the test size, `-h384d12` otherwise).
    pub fn name(&self) -> String {
        let size = match (self.hidden, self.depth, self.heads) {
            (384, 12, 6) => "S".to_string(),
            (768, 12, 12) => "B".to_string(),
            (32, 2, 4) => "T".to_string(),
            (hidden, depth, _) => format!("h{hidden}d{depth}"),
        };
        format!("{}-{size}/{}", self.variant.name(), self.patch)
    }

    /// Values per token out of the final layer: `patch^dims · out_channels`.
    fn patch_values(&self) -> usize {
        self.patch.pow(self.dims.count() as u32) * self.out_channels
    }

    fn validate(&self) -> Result<()> {
        let counts = [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("patch", self.patch),
            ("hidden", self.hidden),
            ("depth", self.depth),
        ];
        if let Some((what, _)) = counts.iter().find(|&&(_, n)| n == 0) {
            bail!("DiT: {what} must be positive, got {self:?}")
        }
        // Each axis's sin-cos embedding needs an even width: hidden / 2 per axis in 2D, and an even
        // remainder for the depth axis in 3D.
        let multiple = match self.dims {
            SpatialDims::Two => 4,
            SpatialDims::Three => 2,
        };
        if !self.hidden.is_multiple_of(multiple) {
            bail!(
                "DiT: hidden {} must be a multiple of {multiple} for the {:?} positional embedding",
                self.hidden,
                self.dims
            )
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) {
            bail!("DiT: mlp_ratio {} must be finite and positive", self.mlp_ratio)
        }
        Ok(())
    }
}

/// MAE's `get_1d_sincos_pos_embed_from_grid` for one position: `[sin(pos · ω) | cos(pos · ω)]`,
/// `width` values, pushed onto `out`.
fn push_sincos(out: &mut Vec<f64>, width: usize, pos: usize) {
    let half = width / 2;
    let angles: Vec<f64> = (0..half).map(|i| pos as f64 / MAX_PERIOD.powf(i as f64 / half as f64)).collect();
    out.extend(angles.iter().map(|a| a.sin()));
    out.extend(angles.iter().map(|a| a.cos()));
}

/// The widths of the per-axis embeddings, innermost axis (width) first; see the module
/// documentation.
fn axis_widths(hidden: usize, axes: usize) -> Vec<usize> {
    match axes {
        3 => {
            let share = 2 * (hidden / 6);
            vec![share, share, hidden - 2 * share]
        }
        _ => vec![hidden / axes; axes],
    }
}

/// The fixed sin-cos positional embeddings `[1, N, hidden]` (f32) of a token grid (`[gh, gw]` or
/// `[gd, gh, gw]`), tokens in the patch convolution's order; see the module documentation.
pub fn sincos_pos_embed(hidden: usize, grid: &[usize], device: &Device) -> Result<Tensor> {
    if !(2..=3).contains(&grid.len()) {
        bail!("sincos_pos_embed: expected a 2D or 3D grid, got {grid:?}")
    }
    let widths = axis_widths(hidden, grid.len());
    if widths.iter().any(|w| w % 2 == 1) || widths.iter().sum::<usize>() != hidden {
        bail!("sincos_pos_embed: width {hidden} cannot be split evenly across {} axes", grid.len())
    }
    let tokens: usize = grid.iter().product();
    let mut values = Vec::with_capacity(tokens * hidden);
    for index in 0..tokens {
        // Coordinates, innermost axis first, then the embeddings in that order.
        let mut rest = index;
        for (&len, &width) in grid.iter().rev().zip(&widths) {
            push_sincos(&mut values, width, rest % len);
            rest /= len;
        }
    }
    let values: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
    Tensor::from_vec(values, (1, tokens, hidden), device)
}

/// A linear whose weight and bias start at zero (adaLN-Zero).
fn zero_linear(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", Init::Const(0.0))?;
    let bias = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
    Ok(Linear::new(weight, Some(bias)))
}

/// `x · (1 + scale) + shift` with per-sample `[B, C]` scale and shift over tokens `[B, N, C]`.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale.unsqueeze(1)? + 1.0)?)?.broadcast_add(&shift.unsqueeze(1)?)
}

/// `SiLU → Linear(hidden, chunks · hidden)` split into `chunks` tensors `[B, hidden]`.
fn modulation(linear: &Linear, c: &Tensor, chunks: usize) -> Result<Vec<Tensor>> {
    linear.forward(&c.silu()?)?.chunk(chunks, D::Minus1)
}

/// A LayerNorm without affine parameters and DiT's eps.
fn plain_norm(vb: VarBuilder, hidden: usize) -> Result<LayerNorm> {
    LayerNorm::new(vb, &LayerNormConfig { dim: hidden, eps: NORM_EPS, affine: false })
}

/// timm's `Mlp`: `fc1 → GELU (tanh approximation) → fc2`.
#[derive(Debug, Clone)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.gelu()?)
    }
}

/// One adaLN-Zero block; see the module documentation.
#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    attn: TokenAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    ada_ln_modulation: Linear,
}

impl Block {
    fn new(vb: VarBuilder, cfg: &DiTConfig) -> Result<Self> {
        let hidden = cfg.hidden;
        let mlp_hidden = (hidden as f64 * cfg.mlp_ratio) as usize;
        let attn = TokenAttention::new(vb.pp("attn"), &TokenAttentionConfig { dim: hidden, num_heads: cfg.heads })?;
        let mlp = Mlp {
            fc1: linear(hidden, mlp_hidden, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(mlp_hidden, hidden, vb.pp("mlp").pp("fc2"))?,
        };
        Ok(Self {
            norm1: plain_norm(vb.pp("norm1"), hidden)?,
            attn,
            norm2: plain_norm(vb.pp("norm2"), hidden)?,
            mlp,
            ada_ln_modulation: zero_linear(vb.pp("adaLN_modulation").pp(MODULATION_LINEAR), hidden, 6 * hidden)?,
        })
    }

    fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let m = modulation(&self.ada_ln_modulation, c, 6)?;
        let attended = self.attn.forward(&modulate(&self.norm1.forward(x)?, &m[0], &m[1])?)?;
        let x = (x + attended.broadcast_mul(&m[2].unsqueeze(1)?)?)?;
        let mixed = self.mlp.forward(&modulate(&self.norm2.forward(&x)?, &m[3], &m[4])?)?;
        x + mixed.broadcast_mul(&m[5].unsqueeze(1)?)?
    }
}

/// DiT's `FinalLayer`: modulated LayerNorm and a linear to the patch values.
#[derive(Debug, Clone)]
struct FinalLayer {
    norm_final: LayerNorm,
    linear: Linear,
    ada_ln_modulation: Linear,
}

impl FinalLayer {
    fn new(vb: VarBuilder, cfg: &DiTConfig) -> Result<Self> {
        Ok(Self {
            norm_final: plain_norm(vb.pp("norm_final"), cfg.hidden)?,
            linear: zero_linear(vb.pp("linear"), cfg.hidden, cfg.patch_values())?,
            ada_ln_modulation: zero_linear(
                vb.pp("adaLN_modulation").pp(MODULATION_LINEAR),
                cfg.hidden,
                2 * cfg.hidden,
            )?,
        })
    }

    fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let m = modulation(&self.ada_ln_modulation, c, 2)?;
        self.linear.forward(&modulate(&self.norm_final.forward(x)?, &m[0], &m[1])?)
    }
}

/// DiT / SiT on `[B, in_channels, *spatial]`; see the module documentation.
#[derive(Debug, Clone)]
pub struct DiT {
    x_embedder: Conv,
    t_embedder: (Linear, Linear),
    y_embedder: Option<ConditionEmbedding>,
    blocks: Vec<Block>,
    final_layer: FinalLayer,
    cfg: DiTConfig,
}

impl DiT {
    pub fn new(vb: VarBuilder, cfg: &DiTConfig) -> Result<Self> {
        cfg.validate()?;
        let hidden = cfg.hidden;
        let x_embedder =
            Conv::new(vb.pp("x_embedder").pp("proj"), cfg.dims, cfg.in_channels, hidden, cfg.patch, 0, cfg.patch)?;
        let t_mlp = vb.pp("t_embedder").pp("mlp");
        let t_embedder = (linear(FREQUENCY_DIM, hidden, t_mlp.pp(MLP_IN))?, linear(hidden, hidden, t_mlp.pp(MLP_OUT))?);
        let y_embedder = match cfg.condition_dim {
            Some(cond_dim) => {
                let y_cfg = ConditionEmbeddingConfig { cond_dim, embed_dim: hidden, mode: Conditioning::Additive };
                Some(ConditionEmbedding::new(vb.pp("y_embedder").pp("mlp"), &y_cfg)?)
            }
            None => None,
        };
        let blocks = (0..cfg.depth).map(|i| Block::new(vb.pp("blocks").pp(i), cfg)).collect::<Result<_>>()?;
        let final_layer = FinalLayer::new(vb.pp("final_layer"), cfg)?;
        Ok(Self { x_embedder, t_embedder, y_embedder, blocks, final_layer, cfg: *cfg })
    }

    pub fn config(&self) -> &DiTConfig {
        &self.cfg
    }

    /// The prediction `[B, out_channels, *spatial]` for inputs `x` `[B, in_channels, *spatial]`
    /// at times `t` `[B]` (read as `time_scale` says), with the conditioning vectors `cond`
    /// `[B, condition_dim]` exactly when the model was configured with a condition.
    pub fn forward(&self, x: &Tensor, t: &Tensor, time_scale: TimeScale, cond: Option<&Tensor>) -> Result<Tensor> {
        let cfg = &self.cfg;
        let rank = FIRST_SPATIAL + cfg.dims.count();
        if x.rank() != rank || x.dim(1)? != cfg.in_channels {
            bail!("{}: expected [B, {}, {:?} spatial axes], got {:?}", cfg.name(), cfg.in_channels, cfg.dims, x.dims())
        }
        let spatial = &x.dims()[FIRST_SPATIAL..];
        if spatial.iter().any(|&n| n == 0 || !n.is_multiple_of(cfg.patch)) {
            bail!("{}: spatial size {spatial:?} is not divisible by the patch size {}", cfg.name(), cfg.patch)
        }
        let grid: Vec<usize> = spatial.iter().map(|&n| n / cfg.patch).collect();
        let c = self.conditioning(t, time_scale, cond, x.dim(0)?)?;

        let patches = self.x_embedder.forward(x)?;
        let tokens = patches.flatten_from(FIRST_SPATIAL)?.transpose(1, 2)?;
        let pos = sincos_pos_embed(cfg.hidden, &grid, x.device())?.to_dtype(tokens.dtype())?;
        let mut h = tokens.broadcast_add(&pos)?;
        for block in &self.blocks {
            h = block.forward(&h, &c)?;
        }
        self.unpatchify(&self.final_layer.forward(&h, &c)?, &grid)
    }

    /// The conditioning `c` `[B, hidden]`: time embedding plus the optional condition embedding.
    fn conditioning(&self, t: &Tensor, time_scale: TimeScale, cond: Option<&Tensor>, batch: usize) -> Result<Tensor> {
        if t.dims() != [batch] {
            bail!("{}: expected times [{batch}], got {:?}", self.cfg.name(), t.dims())
        }
        let (fc1, fc2) = &self.t_embedder;
        let dtype: DType = fc1.weight().dtype();
        let sinusoid = timestep_embedding(t, FREQUENCY_DIM, time_scale)?.to_dtype(dtype)?;
        let t_emb = fc2.forward(&fc1.forward(&sinusoid)?.silu()?)?;
        match (&self.y_embedder, cond) {
            (Some(embedder), Some(cond)) => embedder.condition(&t_emb, cond),
            (None, None) => Ok(t_emb),
            (Some(_), None) => bail!("{}: the model is conditioned, but no condition was given", self.cfg.name()),
            (None, Some(_)) => bail!("{}: a condition was given to an unconditioned model", self.cfg.name()),
        }
    }

    /// Tokens `[B, N, patch^dims · out_channels]` back to `[B, out_channels, *spatial]`.
    fn unpatchify(&self, x: &Tensor, grid: &[usize]) -> Result<Tensor> {
        let (batch, p, channels) = (x.dim(0)?, self.cfg.patch, self.cfg.out_channels);
        let axes = grid.len();
        // [B, *grid, p (per axis), C] → [B, C, g₀, p, g₁, p, ...].
        let shape: Vec<usize> =
            [batch].into_iter().chain(grid.iter().copied()).chain(vec![p; axes]).chain([channels]).collect();
        let order: Vec<usize> =
            [0, 2 * axes + 1].into_iter().chain((0..axes).flat_map(|a| [1 + a, 1 + axes + a])).collect();
        let image: Vec<usize> = [batch, channels].into_iter().chain(grid.iter().map(|g| g * p)).collect();
        x.reshape(shape)?.permute(order)?.reshape(image)
    }
}
