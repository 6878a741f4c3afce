//! The convolutional trunk of AlexNet as LPIPS uses it: torchvision's `alexnet().features` (the
//! "one weird trick" variant of Krizhevsky 2014, arXiv:1404.5997, with 64-192-384-256-256
//! channels), cut by the `lpips` package (`pretrained_networks.alexnet`) into five slices that
//! each end at a ReLU, whose outputs relu1 … relu5 are the taps LPIPS compares.
//!
//! | slice | torchvision `features` indices | layers                                             |
//! |-------|--------------------------------|----------------------------------------------------|
//! | 1     | 0, 1                           | conv 3→64, 11×11, stride 4, padding 2; ReLU        |
//! | 2     | 2, 3, 4                        | max-pool 3, stride 2; conv 64→192, 5×5, padding 2; ReLU |
//! | 3     | 5, 6, 7                        | max-pool 3, stride 2; conv 192→384, 3×3, padding 1; ReLU |
//! | 4     | 8, 9                           | conv 384→256, 3×3, padding 1; ReLU                 |
//! | 5     | 10, 11                         | conv 256→256, 3×3, padding 1; ReLU                 |
//!
//! `features`' last max-pool (index 12) and the classifier are not part of the trunk. Parameter
//! names are lpips' state_dict names below its `net.` prefix, `slice{s}.{i}.weight` and
//! `slice{s}.{i}.bias` with `i` the torchvision index, so lpips' trunk loads 1:1 through
//! [`Conv2d`].
//!
//! Pooling is `torch.nn.MaxPool2d(3, 2)` (no padding, `ceil_mode=False`: `⌊(n − 3) / 2⌋ + 1`
//! outputs per axis) written as the elementwise maximum of the nine stride-2 views that start at
//! each window offset ([`max_pool_3_2`]). Candle's own pooling has a backward only when kernel
//! equals stride (`shared/docs/candle-notes.md`), and LPIPS is also a training loss (`compress`'s
//! perceptual loss), which needs gradients through the trunk to the image. Where a window's
//! maximum is tied, the gradient is shared between the tied inputs (PyTorch gives it to one).
//!
//! The smallest input is 31×31 pixels ([`MIN_INPUT_SIDE`]): 31 gives 7 after the first conv,
//! 3 after the first pool and 1 after the second; 30 gives 6, then 2, and the second pool has no
//! complete window.

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::conv::{Conv2d, Conv2dConfig};

/// The number of taps (ReLU outputs), one per slice.
pub const TAPS: usize = 5;

/// The image channels the trunk takes (RGB).
pub const INPUT_CHANNELS: usize = 3;

/// The smallest height and width the trunk accepts; see the module documentation.
pub const MIN_INPUT_SIDE: usize = 31;

const POOL_KERNEL: usize = 3;
const POOL_STRIDE: usize = 2;

/// One slice: an optional max-pool, then a convolution and a ReLU.
struct SliceSpec {
    /// lpips' slice number, 1 to 5.
    slice: usize,
    /// The convolution's index in torchvision's `features`.
    index: usize,
    pooled: bool,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

const SLICES: [SliceSpec; TAPS] = [
    SliceSpec {
        slice: 1,
        index: 0,
        pooled: false,
        in_channels: 3,
        out_channels: 64,
        kernel: 11,
        stride: 4,
        padding: 2,
    },
    SliceSpec {
        slice: 2,
        index: 3,
        pooled: true,
        in_channels: 64,
        out_channels: 192,
        kernel: 5,
        stride: 1,
        padding: 2,
    },
    SliceSpec {
        slice: 3,
        index: 6,
        pooled: true,
        in_channels: 192,
        out_channels: 384,
        kernel: 3,
        stride: 1,
        padding: 1,
    },
    SliceSpec {
        slice: 4,
        index: 8,
        pooled: false,
        in_channels: 384,
        out_channels: 256,
        kernel: 3,
        stride: 1,
        padding: 1,
    },
    SliceSpec {
        slice: 5,
        index: 10,
        pooled: false,
        in_channels: 256,
        out_channels: 256,
        kernel: 3,
        stride: 1,
        padding: 1,
    },
];

/// The channels of relu1 … relu5.
pub const TAP_CHANNELS: [usize; TAPS] = {
    let mut channels = [0; TAPS];
    let mut i = 0;
    while i < TAPS {
        channels[i] = SLICES[i].out_channels;
        i += 1;
    }
    channels
};

impl SliceSpec {
    /// The convolution's name below the trunk's prefix, `slice{s}.{i}`.
    fn name(&self) -> String {
        format!("slice{}.{}", self.slice, self.index)
    }

    fn config(&self) -> Conv2dConfig {
        Conv2dConfig {
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            kernel: [self.kernel; 2],
            padding: [self.padding; 2],
            stride: [self.stride; 2],
            bias: true,
        }
    }
}

/// One loaded slice.
#[derive(Debug, Clone)]
struct Slice {
    pooled: bool,
    conv: Conv2d,
}

impl Slice {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.pooled { max_pool_3_2(x)? } else { x.clone() };
        self.conv.forward(&x)?.relu()
    }
}

/// `torch.nn.MaxPool2d(3, 2)` on `[N, C, H, W]`, differentiable; see the module documentation.
pub fn max_pool_3_2(x: &Tensor) -> Result<Tensor> {
    let (_, _, height, width) = x.dims4()?;
    if height < POOL_KERNEL || width < POOL_KERNEL {
        bail!("max-pool 3/2: the input {:?} is smaller than its 3×3 window", x.dims())
    }
    let outputs = |n: usize| (n - POOL_KERNEL) / POOL_STRIDE + 1;
    let (rows, columns) = (outputs(height), outputs(width));
    let mut pooled: Option<Tensor> = None;
    for i in 0..POOL_KERNEL {
        let band = every_other(x, 2, i, rows)?;
        for j in 0..POOL_KERNEL {
            let view = every_other(&band, 3, j, columns)?;
            pooled = Some(match pooled {
                None => view,
                Some(max) => max.maximum(&view)?,
            });
        }
    }
    pooled.ok_or_else(|| candle_core::Error::Msg("max-pool 3/2: empty window".into()))
}

/// The `count` elements `start, start + 2, …` along `dim`, by reshaping a run of `2·count` into
/// `[count, 2]` pairs and keeping each pair's first (the run's last pair is padded).
fn every_other(x: &Tensor, dim: usize, start: usize, count: usize) -> Result<Tensor> {
    let run = x.narrow(dim, start, POOL_STRIDE * count - 1)?.pad_with_zeros(dim, 0, 1)?;
    let mut shape = run.dims().to_vec();
    shape[dim] = count;
    shape.insert(dim + 1, POOL_STRIDE);
    run.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// AlexNet's `features` up to relu5; see the module documentation.
#[derive(Debug, Clone)]
pub struct AlexNetFeatures {
    slices: Vec<Slice>,
}

impl AlexNetFeatures {
    /// Loads `slice{s}.{i}.weight` and `.bias` for the five convolutions from `vb` (lpips' `net`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let slices = SLICES
            .iter()
            .map(|spec| Ok(Slice { pooled: spec.pooled, conv: Conv2d::new(vb.pp(spec.name()), &spec.config())? }))
            .collect::<Result<_>>()?;
        Ok(Self { slices })
    }

    /// The names (below the trunk's prefix) and shapes of every parameter, in slice order.
    pub fn parameter_shapes() -> Vec<(String, Vec<usize>)> {
        SLICES
            .iter()
            .flat_map(|spec| {
                let weight = vec![spec.out_channels, spec.in_channels, spec.kernel, spec.kernel];
                [
                    (format!("{}.weight", spec.name()), weight),
                    (format!("{}.bias", spec.name()), vec![spec.out_channels]),
                ]
            })
            .collect()
    }

    /// relu1 … relu5 of `x` `[N, 3, H, W]`, with `H` and `W` at least [`MIN_INPUT_SIDE`].
    pub fn taps(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let (_, channels, height, width) = x.dims4()?;
        if channels != INPUT_CHANNELS {
            bail!("AlexNet takes {INPUT_CHANNELS}-channel images, got {channels} channels (input {:?})", x.dims())
        }
        if height.min(width) < MIN_INPUT_SIDE {
            bail!("AlexNet needs images of at least {MIN_INPUT_SIDE}x{MIN_INPUT_SIDE} pixels, got {height}x{width}")
        }
        let mut taps = Vec::with_capacity(TAPS);
        let mut h = x.clone();
        for slice in &self.slices {
            h = slice.forward(&h)?;
            taps.push(h.clone());
        }
        Ok(taps)
    }
}
