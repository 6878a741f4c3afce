//! ResNet-50 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) as the feature
//! network of FID and KID: the stem, the four stages of bottleneck blocks (`[3, 4, 6, 3]`), and a
//! global average pool of the last stage, 2048 features per image. There is no classifier: a
//! checkpoint's `fc.*` tensors are ignored.
//!
//! **Two variants, one set of names.** Both load from a safetensors file with torchvision's
//! state_dict names (`conv1`, `bn1`, `layer{1..4}.{b}.conv{1,2,3}`, `layer{1..4}.{b}.bn{1,2,3}`,
//! `layer{1..4}.0.downsample.{0,1}`), but they are different functions of those weights:
//! - [`ResNetVariant::Torchvision`]: `torchvision.models.resnet50` ("ResNet v1.5"): a block's
//!   stride sits in its 3×3 conv, convs have no bias, BatchNorm eps is 1e-5.
//! - [`ResNetVariant::RadImageNet`]: the ResNet-50 of RadImageNet (Mei et al., Radiology: AI
//!   2022), trained in Keras and ported to PyTorch by Warvito/radimagenet-models
//!   (`radimagenet_models/models/resnet.py`, the `radimagenet_resnet50` that MONAI's generative
//!   models and NVIDIA's NV-Generate-CTMR use for medical FID): the stride sits in the block's
//!   first 1×1 conv (Keras' ResNet v1), every conv has a bias, BatchNorm eps is 1.001e-5.
//!
//! Loading RadImageNet weights into the torchvision layout would run without complaint and compute
//! something else (the strides move), so the variant is part of the model and
//! [`ResNetVariant::detect`] tells them apart by the conv biases that only the port has.
//!
//! **Inference only.** BatchNorm runs in eval mode with its running statistics and is folded into
//! the conv before it, in f64 (`w·γ/√(σ² + ε)`, `(b − μ)·γ/√(σ² + ε) + β`), so each conv+norm pair
//! is one conv with a bias. The 3×3 max pool of the stem pads with zeros where PyTorch pads with
//! −∞: its input comes out of a ReLU, so it is non-negative and every window holds at least one
//! real value, which makes the two identical.

use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::Serialize;

/// Features per image: the channels of the last stage, averaged over space.
pub const FEATURE_DIM: usize = 2048;

/// Channels of the input images (RGB, or grey repeated).
pub const INPUT_CHANNELS: usize = 3;

/// Bottleneck blocks per stage.
const STAGE_BLOCKS: [usize; 4] = [3, 4, 6, 3];

/// Channels inside each stage's blocks; a block's output has [`EXPANSION`] times as many.
const STAGE_WIDTHS: [usize; 4] = [64, 128, 256, 512];

/// A bottleneck block's output channels per inner channel.
const EXPANSION: usize = 4;

/// Channels of the stem's 7×7 conv.
const STEM_CHANNELS: usize = 64;

/// Which function of the weights the network computes; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResNetVariant {
    /// `torchvision.models.resnet50`: stride in the 3×3 conv, no conv biases, eps 1e-5.
    Torchvision,
    /// RadImageNet's Keras ResNet50 as Warvito/radimagenet-models ports it: stride in the first
    /// 1×1 conv, conv biases, eps 1.001e-5.
    RadImageNet,
}

impl ResNetVariant {
    /// The variant whose layout a weights file has: conv biases (`conv1.bias`) exist only in the
    /// RadImageNet port.
    pub fn detect(has_tensor: impl Fn(&str) -> bool) -> Self {
        if has_tensor("conv1.bias") {
            ResNetVariant::RadImageNet
        } else {
            ResNetVariant::Torchvision
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ResNetVariant::Torchvision => "torchvision",
            ResNetVariant::RadImageNet => "radimagenet",
        }
    }

    /// BatchNorm's epsilon (PyTorch's default, or Keras' 1.001e-5 kept by the port).
    pub fn batch_norm_eps(self) -> f64 {
        match self {
            ResNetVariant::Torchvision => 1e-5,
            ResNetVariant::RadImageNet => 1.001e-5,
        }
    }

    fn conv_bias(self) -> bool {
        self == ResNetVariant::RadImageNet
    }

    /// The strides of a block's first 1×1 conv and of its 3×3 conv, for a block of `stride`.
    fn block_strides(self, stride: usize) -> (usize, usize) {
        match self {
            ResNetVariant::Torchvision => (1, stride),
            ResNetVariant::RadImageNet => (stride, 1),
        }
    }
}

/// A square conv followed by a BatchNorm: the names of both in the state_dict, and the geometry.
#[derive(Debug, Clone)]
struct Unit {
    conv: String,
    norm: String,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Unit {
    /// `(name, shape)` of every tensor the unit loads.
    fn parameter_shapes(&self, variant: ResNetVariant) -> Vec<(String, Vec<usize>)> {
        let mut shapes = vec![(
            format!("{}.weight", self.conv),
            vec![self.out_channels, self.in_channels, self.kernel, self.kernel],
        )];
        if variant.conv_bias() {
            shapes.push((format!("{}.bias", self.conv), vec![self.out_channels]));
        }
        for name in ["weight", "bias", "running_mean", "running_var"] {
            shapes.push((format!("{}.{name}", self.norm), vec![self.out_channels]));
        }
        shapes
    }
}

/// One bottleneck block's units: `conv1`/`bn1` (1×1), `conv2`/`bn2` (3×3), `conv3`/`bn3` (1×1),
/// and the projection `downsample.0`/`downsample.1` where the shape changes.
#[derive(Debug, Clone)]
struct BlockUnits {
    units: [Unit; 3],
    downsample: Option<Unit>,
}

/// Every block of the network, stage by stage, with its state_dict names.
fn block_layout(variant: ResNetVariant) -> Vec<BlockUnits> {
    let mut in_channels = STEM_CHANNELS;
    let mut blocks = Vec::new();
    for (stage, (&count, &width)) in STAGE_BLOCKS.iter().zip(&STAGE_WIDTHS).enumerate() {
        let out_channels = width * EXPANSION;
        for index in 0..count {
            let prefix = format!("layer{}.{index}", stage + 1);
            let stride = if stage > 0 && index == 0 { 2 } else { 1 };
            let (stride1, stride2) = variant.block_strides(stride);
            let unit = |i: usize, in_channels, out_channels, kernel, stride| Unit {
                conv: format!("{prefix}.conv{i}"),
                norm: format!("{prefix}.bn{i}"),
                in_channels,
                out_channels,
                kernel,
                stride,
                padding: kernel / 2,
            };
            let units = [
                unit(1, in_channels, width, 1, stride1),
                unit(2, width, width, 3, stride2),
                unit(3, width, out_channels, 1, 1),
            ];
            let downsample = (index == 0).then(|| Unit {
                conv: format!("{prefix}.downsample.0"),
                norm: format!("{prefix}.downsample.1"),
                in_channels,
                out_channels,
                kernel: 1,
                stride,
                padding: 0,
            });
            blocks.push(BlockUnits { units, downsample });
            in_channels = out_channels;
        }
    }
    blocks
}

fn stem_unit() -> Unit {
    Unit {
        conv: "conv1".into(),
        norm: "bn1".into(),
        in_channels: INPUT_CHANNELS,
        out_channels: STEM_CHANNELS,
        kernel: 7,
        stride: 2,
        padding: 3,
    }
}

/// A conv with its BatchNorm folded in: `conv(x, weight) + bias`.
#[derive(Debug, Clone)]
struct ConvBn {
    weight: Tensor,
    /// `[1, out, 1, 1]`.
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl ConvBn {
    /// Loads `unit`'s conv and norm from `vb` in f64, folds them, and keeps the result in `vb`'s
    /// dtype.
    fn new(vb: &VarBuilder, unit: &Unit, variant: ResNetVariant) -> Result<Self> {
        let out = unit.out_channels;
        let get = |shape: Vec<usize>, name: String| vb.get_with_hints_dtype(shape, &name, Init::Const(0.0), DType::F64);
        let weight = get(vec![out, unit.in_channels, unit.kernel, unit.kernel], format!("{}.weight", unit.conv))?;
        let norm = |name: &str| get(vec![out], format!("{}.{name}", unit.norm));
        let (gamma, beta, mean, var) = (norm("weight")?, norm("bias")?, norm("running_mean")?, norm("running_var")?);
        let scale = (gamma / (var + variant.batch_norm_eps())?.sqrt()?)?;
        let conv_bias = if variant.conv_bias() {
            get(vec![out], format!("{}.bias", unit.conv))?
        } else {
            Tensor::zeros(out, DType::F64, vb.device())?
        };
        let bias = (((conv_bias - mean)? * &scale)? + beta)?;
        let weight = weight.broadcast_mul(&scale.reshape((out, 1, 1, 1))?)?;
        Ok(Self {
            weight: weight.to_dtype(vb.dtype())?,
            bias: bias.reshape((1, out, 1, 1))?.to_dtype(vb.dtype())?,
            stride: unit.stride,
            padding: unit.padding,
        })
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?.broadcast_add(&self.bias)
    }
}

/// A bottleneck block: `relu(conv3(relu(conv2(relu(conv1(x))))) + shortcut(x))`, every conv with
/// its norm folded in; the shortcut is the identity or the `downsample` projection.
#[derive(Debug, Clone)]
struct Bottleneck {
    convs: [ConvBn; 3],
    downsample: Option<ConvBn>,
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [conv1, conv2, conv3] = &self.convs;
        let residual = conv3.forward(&conv2.forward(&conv1.forward(x)?.relu()?)?.relu()?)?;
        let shortcut = match &self.downsample {
            Some(projection) => projection.forward(x)?,
            None => x.clone(),
        };
        (residual + shortcut)?.relu()
    }
}

/// ResNet-50 without its classifier; see the module documentation.
#[derive(Debug, Clone)]
pub struct ResNet50 {
    stem: ConvBn,
    blocks: Vec<Bottleneck>,
    variant: ResNetVariant,
}

impl ResNet50 {
    /// Builds the network from `vb` holding torchvision's state_dict names (see
    /// [`ResNet50::parameter_shapes`]); it computes in `vb`'s dtype on `vb`'s device.
    pub fn new(vb: VarBuilder, variant: ResNetVariant) -> Result<Self> {
        let stem = ConvBn::new(&vb, &stem_unit(), variant)?;
        let blocks = block_layout(variant)
            .iter()
            .map(|block| {
                let [u1, u2, u3] = &block.units;
                Ok(Bottleneck {
                    convs: [
                        ConvBn::new(&vb, u1, variant)?,
                        ConvBn::new(&vb, u2, variant)?,
                        ConvBn::new(&vb, u3, variant)?,
                    ],
                    downsample: block.downsample.as_ref().map(|u| ConvBn::new(&vb, u, variant)).transpose()?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { stem, blocks, variant })
    }

    /// Every tensor a weights file must hold for `variant`: torchvision's state_dict name and
    /// shape, in network order.
    pub fn parameter_shapes(variant: ResNetVariant) -> Vec<(String, Vec<usize>)> {
        let mut shapes = stem_unit().parameter_shapes(variant);
        for block in block_layout(variant) {
            for unit in block.units.iter().chain(&block.downsample) {
                shapes.extend(unit.parameter_shapes(variant));
            }
        }
        shapes
    }

    pub fn variant(&self) -> ResNetVariant {
        self.variant
    }

    /// The last stage's feature map `[N, 2048, H/32, W/32]` (rounded up) of images
    /// `[N, 3, H, W]`, already normalised as the weights expect.
    pub fn feature_map(&self, x: &Tensor) -> Result<Tensor> {
        let (_, channels, _, _) = x.dims4()?;
        if channels != INPUT_CHANNELS {
            bail!("ResNet-50 takes [N, {INPUT_CHANNELS}, H, W] images, got {:?}", x.dims())
        }
        let stem = self.stem.forward(x)?.relu()?;
        // 3×3 max pool, stride 2, padding 1; zero padding is exact after the ReLU (module docs).
        let mut h = stem.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 2)?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        Ok(h)
    }
}

impl Module for ResNet50 {
    /// The features `[N, 2048]`: the last stage's feature map averaged over space.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.feature_map(x)?.mean((2, 3))
    }
}
