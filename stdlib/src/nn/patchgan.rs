//! The PatchGAN discriminator and its adversarial losses, for 2D slices `[B, C, H, W]` and 3D
//! volumes `[B, C, D, H, W]`.
//!
//! **[`PatchGan`]** is MONAI's `PatchDiscriminator` (`monai.networks.nets.patchgan_discriminator`),
//! the discriminator of Isola et al. 2017 ("Image-to-Image Translation with Conditional Adversarial
//! Networks", pix2pix) as Wang et al. 2018 (pix2pixHD) use it: a fully convolutional network whose
//! output is a grid of logits, one per overlapping input patch, rather than one per image. Layers,
//! all with kernel 4 and padding 1:
//! - `initial_conv`: `in_channels → channels`, stride 2, with a bias, then LeakyReLU(0.2), no norm;
//! - `layers.{l}` for `l < num_layers`: conv `channels·2^l → channels·2^(l+1)` without a bias
//!   (MONAI's `bias=False`: the norm follows), stride 2 except the last layer's stride 1, then norm,
//!   then LeakyReLU(0.2);
//! - `final_conv`: to one logit per position, stride 1, with a bias, no activation.
//!
//! Each spatial length `n` becomes `⌊n / 2⌋` per stride-2 conv and `n − 1` per stride-1 conv, so an
//! input needs at least [`PatchGanConfig::min_spatial_len`] `= 3 · 2^num_layers` positions per axis.
//! [`PatchGan::forward_features`] returns every block's output, the logits last, as MONAI's
//! `forward` does (the intermediate features serve feature-matching losses); `forward` returns
//! the logits alone. Conv weights start from N(0, 0.02²) and biases from 0, MONAI's `normal_init`;
//! dropout is MONAI's default 0 and is left out.
//!
//! **Norm: GroupNorm, where MONAI defaults to batch norm.** 3D training runs one or two volumes per
//! batch. Batch statistics over one or two samples are noise, and at the stride-1 layer of a 3D
//! discriminator they come from a handful of positions per channel (`[2, 2, 3]` for a 14×12×16
//! input with two layers); the discriminator sees real and fake images in separate batches, so
//! batch norm normalises them with different statistics, which it can learn to tell apart instead
//! of the images; and evaluation switches to running averages that training never used. GroupNorm
//! (Wu & He 2018) takes its statistics per sample, over the channels of a group and all positions:
//! independent of the batch, identical in training and evaluation. Instance norm (pix2pix's other
//! choice) would take them per channel, from those few positions alone. One group count,
//! `norm_groups`, serves every layer (it must divide `2 · channels`, hence every layer's channels);
//! `eps` is PyTorch's 1e-5. MONAI builds the same network with
//! `PatchDiscriminator(..., norm=("group", {"num_groups": norm_groups}))`, whose state_dict maps
//! onto the names here (`tests/reference/patchgan_reference.py`).
//!
//! **LeakyReLU** is [`leaky_relu`], `where(x > 0, x, slope · x)`: its gradient is PyTorch's, 1 or
//! `slope`, including `slope` at exactly 0. `candle_nn::ops::leaky_relu` computes `max(x, 0) +
//! slope · min(x, 0)`, whose gradient at 0 is `(1 + slope) / 2` (Candle splits the gradient of a
//! `maximum`/`minimum` tie in halves).
//!
//! **Adversarial losses** ([`AdversarialCriterion`]) are MONAI's `PatchAdversarialLoss` for one
//! discriminator with mean reduction, computed in f32 whatever the logits' dtype, and they apply
//! MONAI's activation to the raw logits themselves:
//! - `LeastSquares` (Mao et al. 2017, LSGAN; MONAI's default criterion): `a = leaky_relu(x, 0.05)`,
//!   `mean((a − 1)²)` for real, `mean(a²)` for fake;
//! - `Hinge`: `a = tanh(x)`, `mean(max(0, 1 − a))` for real, `mean(max(0, 1 + a))` for fake. MONAI
//!   squashes the logits with tanh before the hinge, so unlike the hinge loss of Lim & Ye 2017 it
//!   never saturates: `|a| < 1` makes it `1 ∓ mean(tanh x)`.
//!
//! The generator's loss is the loss of its fakes judged as real (MONAI forces `target_is_real`
//! when `for_discriminator` is false), so it is the `Real` loss, not the non-saturating `−mean(x)`
//! of the hinge GAN literature.

use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::conv::{Conv, Conv2d, Conv3d, ConvConfig, SpatialDims, FIRST_SPATIAL};
use super::norm::{GroupNorm, GroupNormConfig, TORCH_NORM_EPS};

/// Kernel length of every conv along every axis (MONAI's `kernel_size` default).
const KERNEL: usize = 4;
/// Zero padding of every conv (MONAI's `padding` default, `(kernel − 1) / 2` for the last).
const PADDING: usize = 1;
/// The discriminator's LeakyReLU slope (MONAI's `("LEAKYRELU", {"negative_slope": 0.2})`).
pub const LEAKY_SLOPE: f64 = 0.2;
/// The standard deviation of the conv weights' initial values (MONAI's `normal_init`, as DCGAN).
const INIT_STD: f64 = 0.02;
/// The slope of the LeakyReLU that MONAI's least-squares criterion applies to the logits.
pub const LEAST_SQUARES_SLOPE: f64 = 0.05;

/// LeakyReLU, `x` where `x > 0` and `slope · x` elsewhere, with PyTorch's gradient (`slope` at 0);
/// see the module documentation.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    x.gt(0.0)?.where_cond(x, &(x * slope)?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PatchGanConfig {
    pub dims: SpatialDims,
    /// Image channels.
    pub in_channels: usize,
    /// Channels of the initial conv; each layer doubles them (MONAI's `channels`).
    pub channels: usize,
    /// Conv → norm → LeakyReLU layers after the initial conv, at least one, all stride 2 but the
    /// last (MONAI's `num_layers_d`).
    pub num_layers: usize,
    /// GroupNorm groups of every layer; must divide `2 · channels`.
    pub norm_groups: usize,
}

impl PatchGanConfig {
    /// The shortest spatial length that leaves at least one logit: `3 · 2^num_layers`.
    pub fn min_spatial_len(&self) -> usize {
        3 << self.num_layers
    }

    fn validate(&self) -> Result<()> {
        if self.in_channels == 0 || self.channels == 0 || self.num_layers == 0 {
            bail!("PatchGan: channel counts and num_layers must be positive, got {self:?}")
        }
        if self.norm_groups == 0 || !(2 * self.channels).is_multiple_of(self.norm_groups) {
            bail!(
                "PatchGan: {} groups do not divide the first layer's {} channels",
                self.norm_groups,
                2 * self.channels
            )
        }
        Ok(())
    }

    /// A conv with kernel 4 and padding 1, its weight drawn from N(0, 0.02²) and its bias (if
    /// any) zero. `Conv2d::new` / `Conv3d::new` would draw PyTorch's default uniform values for
    /// missing variables; creating them here first, under the names those constructors ask for,
    /// gives MONAI's `normal_init` instead (a VarBuilder returns an existing variable as it is).
    fn conv(&self, vb: VarBuilder, in_channels: usize, out_channels: usize, stride: usize, bias: bool) -> Result<Conv> {
        let kernel = std::iter::repeat_n(KERNEL, self.dims.count());
        let shape: Vec<usize> = [out_channels, in_channels].into_iter().chain(kernel).collect();
        vb.get_with_hints(shape, "weight", Init::Randn { mean: 0.0, stdev: INIT_STD })?;
        if bias {
            vb.get_with_hints(out_channels, "bias", Init::Const(0.0))?;
        }
        fn config<const N: usize>(in_channels: usize, out_channels: usize, stride: usize, bias: bool) -> ConvConfig<N> {
            let (kernel, padding, stride) = ([KERNEL; N], [PADDING; N], [stride; N]);
            ConvConfig { in_channels, out_channels, kernel, padding, stride, bias }
        }
        Ok(match self.dims {
            SpatialDims::Two => Conv::D2(Conv2d::new(vb, &config(in_channels, out_channels, stride, bias))?),
            SpatialDims::Three => Conv::D3(Conv3d::new(vb, &config(in_channels, out_channels, stride, bias))?),
        })
    }
}

/// One `layers.{l}` block: conv (no bias) → GroupNorm → LeakyReLU(0.2).
#[derive(Debug, Clone)]
struct Layer {
    conv: Conv,
    norm: GroupNorm,
}

impl Module for Layer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        leaky_relu(&self.norm.forward(&self.conv.forward(x)?)?, LEAKY_SLOPE)
    }
}

/// MONAI's `PatchDiscriminator` with GroupNorm; see the module documentation. Parameters:
/// `initial_conv.{weight,bias}`, `layers.{l}.conv.weight`, `layers.{l}.norm.{weight,bias}` and
/// `final_conv.{weight,bias}`.
#[derive(Debug, Clone)]
pub struct PatchGan {
    initial_conv: Conv,
    layers: Vec<Layer>,
    final_conv: Conv,
    cfg: PatchGanConfig,
}

impl PatchGan {
    pub fn new(vb: VarBuilder, cfg: &PatchGanConfig) -> Result<Self> {
        cfg.validate()?;
        let initial_conv = cfg.conv(vb.pp("initial_conv"), cfg.in_channels, cfg.channels, 2, true)?;
        let mut channels = cfg.channels;
        let layers = (0..cfg.num_layers)
            .map(|l| {
                let vb = vb.pp(format!("layers.{l}"));
                let stride = if l + 1 == cfg.num_layers { 1 } else { 2 };
                let conv = cfg.conv(vb.pp("conv"), channels, 2 * channels, stride, false)?;
                channels *= 2;
                let norm_cfg =
                    GroupNormConfig { num_groups: cfg.norm_groups, num_channels: channels, eps: TORCH_NORM_EPS };
                Ok(Layer { conv, norm: GroupNorm::new(vb.pp("norm"), &norm_cfg)? })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_conv = cfg.conv(vb.pp("final_conv"), channels, 1, 1, true)?;
        Ok(Self { initial_conv, layers, final_conv, cfg: *cfg })
    }

    /// The output of every block of `x` `[B, in_channels, *spatial]`: the initial conv's, each
    /// layer's, and last the logits `[B, 1, *patches]`, `num_layers + 2` tensors in all.
    pub fn forward_features(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut features = vec![self.initial(x)?];
        for layer in &self.layers {
            let next = layer.forward(&features[features.len() - 1])?;
            features.push(next);
        }
        let logits = self.final_conv.forward(&features[features.len() - 1])?;
        features.push(logits);
        Ok(features)
    }

    /// The initial conv and its LeakyReLU, after checking the input's shape.
    fn initial(&self, x: &Tensor) -> Result<Tensor> {
        let min = self.cfg.min_spatial_len();
        let spatial = x.dims().get(FIRST_SPATIAL..).unwrap_or(&[]);
        if spatial.len() != self.cfg.dims.count() || spatial.iter().any(|&n| n < min) {
            bail!(
                "PatchGan: expected [B, {}, *spatial] with {} spatial axes of at least {min} ({} layers), got {:?}",
                self.cfg.in_channels,
                self.cfg.dims.count(),
                self.cfg.num_layers,
                x.dims()
            )
        }
        leaky_relu(&self.initial_conv.forward(x)?, LEAKY_SLOPE)
    }
}

impl Module for PatchGan {
    /// The logits `[B, 1, *patches]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.initial(x)?;
        for layer in &self.layers {
            h = layer.forward(&h)?;
        }
        self.final_conv.forward(&h)
    }
}

/// MONAI's `PatchAdversarialLoss` criteria; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdversarialCriterion {
    /// `"least_squares"`, MONAI's default: LeakyReLU(0.05), then mean squared error to 1 or 0.
    LeastSquares,
    /// `"hinge"`: tanh, then the hinge `max(0, 1 ∓ a)`.
    Hinge,
}

/// What the discriminator is to call the images whose logits are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdversarialTarget {
    Real,
    Fake,
}

impl AdversarialCriterion {
    /// The discriminator's loss on `logits` of images that are `target`: MONAI's
    /// `loss(logits, target_is_real, for_discriminator=True)`, an f32 scalar.
    pub fn discriminator_loss(self, logits: &Tensor, target: AdversarialTarget) -> Result<Tensor> {
        let logits = logits.to_dtype(DType::F32)?;
        match self {
            AdversarialCriterion::LeastSquares => {
                let label = match target {
                    AdversarialTarget::Real => 1.0,
                    AdversarialTarget::Fake => 0.0,
                };
                (leaky_relu(&logits, LEAST_SQUARES_SLOPE)? - label)?.sqr()?.mean_all()
            }
            AdversarialCriterion::Hinge => {
                let activated = logits.tanh()?;
                let signed = match target {
                    AdversarialTarget::Real => activated,
                    AdversarialTarget::Fake => activated.neg()?,
                };
                (signed - 1.0)?.minimum(0.0)?.mean_all()?.neg()
            }
        }
    }

    /// The generator's loss on the `logits` of its fakes: the loss of judging them real (MONAI's
    /// `for_discriminator=False`), an f32 scalar.
    pub fn generator_loss(self, logits: &Tensor) -> Result<Tensor> {
        self.discriminator_loss(logits, AdversarialTarget::Real)
    }
}
