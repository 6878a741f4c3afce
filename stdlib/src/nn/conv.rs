//! Convolutions over 2D slices `[B, C, H, W]` and 3D volumes `[B, C, D, H, W]` with PyTorch's
//! semantics (`torch.nn.Conv2d`, `torch.nn.Conv3d`): cross-correlation, zero padding, output length
//! `⌊(n + 2p − k) / s⌋ + 1` per axis, parameters `weight` `[out, in, *kernel]` and `bias` `[out]`,
//! so a PyTorch state_dict loads 1:1. Kernel, padding and stride are given per axis, like
//! PyTorch's tuples; the height and width strides must be equal (Candle's conv2d takes one).
//!
//! **Conv3d is composed from Candle's conv2d** (Candle 0.11 has no conv3d, upstream issue #2997):
//! with the depth padded, output plane `o` is `Σⱼ conv2d(input plane s·o + j, weight[:, :, j])` over
//! the depth taps `j`, so the input planes are folded into the batch, one conv2d runs per depth
//! tap and the results are summed. This is exact (the same products, summed in another order) and
//! every step is a Candle op, so gradients come from Candle's autograd. Measured on the CPU
//! (2 shared cores, release, f32, `[1, 32, 16, 32, 32]` input, 3×3×3 kernel, 32 → 32 channels,
//! padding 1, forward + backward of `sum(output · probe)` for input and weight, medians of 11–21
//! runs, ranges over repeated runs):
//! - this composition: 35–45 ms forward, 145–180 ms forward + backward;
//! - explicit im2col (the 27 shifted views stacked) + one matmul: 92–97 ms forward, 395–460 ms
//!   forward + backward, about 2.3× slower, so it was not kept;
//! - the depth taps stacked into channels for a single conv2d: 35–40 ms forward, ~170 ms forward +
//!   backward, no faster and three times the input's memory.
//!
//! Those figures predate `conv_grad`: most of that backward was Candle's input gradient, a
//! conv_transpose2d per tap (direct loops on the CPU, two to three times a conv2d's time), which
//! stride-1 convolutions on the CPU now compute as a conv2d (`nn::conv_grad`).
//!
//! **Strides, and where conv2d pads.** Candle's conv2d backward takes the output padding of its
//! transposed convolution from the height alone (`candle-core` `backprop.rs`,
//! `shared/docs/candle-notes.md`): with stride > 1 it fails with a shape mismatch when height and
//! width leave different unread tails `(n + 2p − k) mod s`. Where both axes have the same padding
//! and the same tail (every stride-1 conv, and stride 2 on sizes of equal parity), conv2d pads by
//! itself. Otherwise both axes are framed explicitly, `padding` zeros in front and then padded or
//! cropped at the end to exactly the `s·(out − 1) + k` positions the outputs read (PyTorch reads
//! no others either), and conv2d runs with padding 0 and tails 0: any size works, odd or even,
//! square or not, for one copy of the input. Strided convs stay strided conv2d: stride 2 measured
//! ~7 ms forward and ~32 ms forward + backward on the input above, against ~85 ms forward +
//! backward for a stride-1 conv2d followed by subsampling. A depth stride only selects which input
//! planes each tap reads.

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// The first spatial axis of `[B, C, *spatial]`.
pub(crate) const FIRST_SPATIAL: usize = 2;

/// Whether a model works on 2D slices `[B, C, H, W]` or 3D volumes `[B, C, D, H, W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpatialDims {
    Two,
    Three,
}

impl SpatialDims {
    /// The number of spatial axes.
    pub fn count(self) -> usize {
        match self {
            SpatialDims::Two => 2,
            SpatialDims::Three => 3,
        }
    }
}

/// PyTorch's `ConvNd(in_channels, out_channels, kernel_size, stride, padding, bias)` with one entry
/// per spatial axis (`[kd, kh, kw]` for 3D); dilation 1, groups 1 and zero padding, as
/// `torch.nn.Conv3d` defaults to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvConfig<const N: usize> {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; N],
    pub padding: [usize; N],
    /// Height and width strides must be equal; the depth stride is free.
    pub stride: [usize; N],
    pub bias: bool,
}

/// The configuration of a [`Conv2d`]: `[kh, kw]` per axis.
pub type Conv2dConfig = ConvConfig<2>;

/// The configuration of a [`Conv3d`]: `[kd, kh, kw]` per axis.
pub type Conv3dConfig = ConvConfig<3>;

/// Kernel length, zero padding and stride along one spatial axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Axis {
    kernel: usize,
    padding: usize,
    stride: usize,
}

impl Axis {
    /// PyTorch's output length `⌊(n + 2p − k) / s⌋ + 1` for an input of length `n`.
    fn output_len(self, input: usize) -> Result<usize> {
        let padded = input + 2 * self.padding;
        if padded < self.kernel {
            bail!("conv: kernel length {} exceeds the padded input length {padded}", self.kernel)
        }
        Ok((padded - self.kernel) / self.stride + 1)
    }

    /// The positions that `outputs` outputs read, padding included: `s·(outputs − 1) + k`.
    fn window(self, outputs: usize) -> usize {
        self.stride * (outputs - 1) + self.kernel
    }

    /// Puts `padding` zeros before `x` along `dim`, then pads with zeros or crops its end to `len`.
    fn frame(self, x: &Tensor, dim: usize, len: usize) -> Result<Tensor> {
        let available = self.padding + x.dim(dim)?;
        x.pad_with_zeros(dim, self.padding, len.saturating_sub(available))?.narrow(dim, 0, len)
    }
}

impl<const N: usize> ConvConfig<N> {
    /// The per-axis geometry, after checking that every count is positive.
    fn axes(&self) -> Result<[Axis; N]> {
        let counts = [("in_channels", self.in_channels), ("out_channels", self.out_channels)];
        let per_axis = self.kernel.iter().chain(&self.stride).map(|&n| ("kernel and stride entries", n));
        if let Some((what, _)) = counts.into_iter().chain(per_axis).find(|&(_, n)| n == 0) {
            bail!("conv: {what} must be positive, got {self:?}")
        }
        Ok(std::array::from_fn(|i| Axis { kernel: self.kernel[i], padding: self.padding[i], stride: self.stride[i] }))
    }

    /// Loads or creates `weight` `[out, in, *kernel]` and, with `bias`, `bias` `[out]`, both drawn
    /// like PyTorch's default from `U(−1/√fan_in, 1/√fan_in)`, `fan_in = in · Π kernel`.
    fn parameters(&self, vb: &VarBuilder) -> Result<(Tensor, Option<Tensor>)> {
        let fan_in = self.in_channels * self.kernel.iter().product::<usize>();
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = Init::Uniform { lo: -bound, up: bound };
        let shape: Vec<usize> = [self.out_channels, self.in_channels].into_iter().chain(self.kernel).collect();
        let weight = vb.get_with_hints(shape, "weight", init)?;
        let bias = if self.bias { Some(vb.get_with_hints(self.out_channels, "bias", init)?) } else { None };
        Ok((weight, bias))
    }
}

/// Height and width, the plane that Candle's conv2d convolves; their strides must be equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plane {
    height: Axis,
    width: Axis,
}

impl Plane {
    fn new(height: Axis, width: Axis) -> Result<Self> {
        if height.stride != width.stride {
            bail!("conv: height and width strides must be equal, got {} and {}", height.stride, width.stride)
        }
        Ok(Self { height, width })
    }

    /// Readies axes `first` (height) and `first + 1` (width) of `x` for conv2d, returning them with
    /// the padding conv2d is to add: its own where its backward is right (same padding, same unread
    /// tail on both axes, so every stride-1 conv), otherwise 0 after framing both axes explicitly.
    fn prepare(self, x: &Tensor, first: usize) -> Result<(Tensor, usize)> {
        let (height, width) = (self.height, self.width);
        let (rows, columns) = (x.dim(first)?, x.dim(first + 1)?);
        let windows = [height.window(height.output_len(rows)?), width.window(width.output_len(columns)?)];
        let unread = [rows + 2 * height.padding - windows[0], columns + 2 * width.padding - windows[1]];
        if height.padding == width.padding && unread[0] == unread[1] {
            return Ok((x.clone(), height.padding));
        }
        let x = height.frame(x, first, windows[0])?;
        Ok((width.frame(&x, first + 1, windows[1])?, 0))
    }

    /// conv2d of a prepared `[N, C, H, W]` with `weight` `[out, C, kh, kw]`.
    fn conv2d(self, x: &Tensor, weight: &Tensor, padding: usize) -> Result<Tensor> {
        super::conv_grad::conv2d(x, weight, padding, self.height.stride)
    }
}

/// Checks the channel axis of `x` against the weight's input channels.
fn check_channels(x: &Tensor, weight: &Tensor) -> Result<()> {
    let (actual, expected) = (x.dim(1)?, weight.dim(1)?);
    if actual != expected {
        bail!("conv: input has {actual} channels, the layer expects {expected} (input {:?})", x.dims())
    }
    Ok(())
}

/// Adds `bias` `[C]` along the channel axis of `[B, C, *spatial]`.
fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let Some(bias) = bias else { return Ok(y) };
    let mut shape = vec![1; y.rank()];
    shape[1] = bias.dim(0)?;
    y.broadcast_add(&bias.reshape(shape)?)
}

/// `torch.nn.Conv2d` on `[B, C, H, W]`; see the module documentation.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    plane: Plane,
}

impl Conv2d {
    pub fn new(vb: VarBuilder, cfg: &Conv2dConfig) -> Result<Self> {
        let [height, width] = cfg.axes()?;
        let plane = Plane::new(height, width)?;
        let (weight, bias) = cfg.parameters(&vb)?;
        Ok(Self { weight, bias, plane })
    }

    /// `[out, in, kh, kw]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.dims4()?;
        check_channels(x, &self.weight)?;
        let (input, padding) = self.plane.prepare(x, FIRST_SPATIAL)?;
        add_bias(self.plane.conv2d(&input, &self.weight, padding)?, self.bias.as_ref())
    }
}

/// `torch.nn.Conv3d` on `[B, C, D, H, W]`, composed from one conv2d per depth tap; see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct Conv3d {
    weight: Tensor,
    bias: Option<Tensor>,
    depth: Axis,
    plane: Plane,
}

impl Conv3d {
    pub fn new(vb: VarBuilder, cfg: &Conv3dConfig) -> Result<Self> {
        let [depth, height, width] = cfg.axes()?;
        let plane = Plane::new(height, width)?;
        let (weight, bias) = cfg.parameters(&vb)?;
        Ok(Self { weight, bias, depth, plane })
    }

    /// `[out, in, kd, kh, kw]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The planes that depth tap `tap` reads for `outputs` output planes, `tap + s·o` for `o <
    /// outputs`, as a batch `[B · outputs, C, H, W]` of the framed `[B, D, C, H, W]` input: `s ·
    /// outputs` planes from `tap`, viewed as `[outputs, s]`, first of each.
    fn tap_planes(&self, planes: &Tensor, tap: usize, outputs: usize) -> Result<Tensor> {
        let (batch, _, channels, height, width) = planes.dims5()?;
        let stride = self.depth.stride;
        let run = planes.narrow(1, tap, stride * outputs)?;
        let first = run.reshape((batch, outputs, stride, channels, height, width))?.narrow(2, 0, 1)?;
        first.reshape((batch * outputs, channels, height, width))
    }
}

impl Module for Conv3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, _, depth, _, _) = x.dims5()?;
        check_channels(x, &self.weight)?;
        let out_depth = self.depth.output_len(depth)?;
        // Each tap takes `s · out_depth` planes and keeps every s-th (`tap_planes`), so the last
        // tap needs `s − 1` zero planes past the window; they are never kept.
        let depth_len = self.depth.window(out_depth) + self.depth.stride - 1;
        let (framed, padding) = self.plane.prepare(&self.depth.frame(x, FIRST_SPATIAL, depth_len)?, 3)?;
        let planes = framed.permute((0, 2, 1, 3, 4))?.contiguous()?;
        let taps = self.weight.permute((2, 0, 1, 3, 4))?.contiguous()?;
        let tap_output = |tap: usize| -> Result<Tensor> {
            self.plane.conv2d(&self.tap_planes(&planes, tap, out_depth)?, &taps.get(tap)?, padding)
        };
        let mut sum = tap_output(0)?;
        for tap in 1..self.depth.kernel {
            sum = (sum + tap_output(tap)?)?;
        }
        let (_, out_channels, out_height, out_width) = sum.dims4()?;
        let unfolded =
            sum.reshape((batch, out_depth, out_channels, out_height, out_width))?.permute((0, 2, 1, 3, 4))?;
        add_bias(unfolded, self.bias.as_ref())
    }
}

/// A convolution for 2D or 3D inputs chosen at construction, so a model can be written once for
/// both: [`Conv2d`] or [`Conv3d`], whose parameters load from `torch.nn.Conv2d` / `Conv3d`.
#[derive(Debug, Clone)]
pub enum Conv {
    D2(Conv2d),
    D3(Conv3d),
}

impl Conv {
    /// PyTorch's `ConvNd(in_channels, out_channels, kernel, stride, padding)` with a bias: the
    /// same kernel length, padding and stride on every spatial axis.
    pub fn new(
        vb: VarBuilder,
        dims: SpatialDims,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        padding: usize,
        stride: usize,
    ) -> Result<Self> {
        fn config<const N: usize>(in_channels: usize, out_channels: usize, [k, p, s]: [usize; 3]) -> ConvConfig<N> {
            ConvConfig { in_channels, out_channels, kernel: [k; N], padding: [p; N], stride: [s; N], bias: true }
        }
        let geometry = [kernel, padding, stride];
        Ok(match dims {
            SpatialDims::Two => Conv::D2(Conv2d::new(vb, &config(in_channels, out_channels, geometry))?),
            SpatialDims::Three => Conv::D3(Conv3d::new(vb, &config(in_channels, out_channels, geometry))?),
        })
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Conv::D2(conv) => conv.forward(x),
            Conv::D3(conv) => conv.forward(x),
        }
    }
}
