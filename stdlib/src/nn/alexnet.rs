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
//! Pooling is Candle's `max_pool2d_with_stride(3, 2)`, which like `torch.nn.MaxPool2d(3, 2)`
//! (no padding, `ceil_mode=False`) gives `⌊(n − 3) / 2⌋ + 1` outputs per axis. Candle's pooling
//! has a backward only when kernel equals stride (`shared/docs/candle-notes.md`); LPIPS is used as
//! a metric here, forward only.
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
        let x = if self.pooled { x.max_pool2d_with_stride(POOL_KERNEL, POOL_STRIDE)? } else { x.clone() };
        self.conv.forward(&x)?.relu()
    }
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
