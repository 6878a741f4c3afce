//! LPIPS, the learned perceptual image patch similarity of Zhang et al., "The Unreasonable
//! Effectiveness of Deep Features as a Perceptual Metric" (CVPR 2018), with the AlexNet-lin network
//! exactly as the `lpips` package 0.1.4 defines it (`lpips.LPIPS(net='alex', version='0.1')`,
//! `lpips/lpips.py`):
//!
//! 1. inputs in [-1, 1] (or in [0, 1] mapped by `2x − 1`, lpips' `normalize=True`; see
//!    [`InputRange`]);
//! 2. the scaling layer `(x − shift) / scale` per RGB channel, [`SHIFT`] and [`SCALE`];
//! 3. AlexNet's trunk ([`AlexNetFeatures`]), tapped after each of its five ReLUs;
//! 4. each tap unit-normalised over channels, `f / (√Σ_c f² + ε)` with ε = [`NORM_EPS`] outside
//!    the root (lpips' `normalize_tensor`);
//! 5. the squared difference of the two images' normalised taps, weighted over channels by a
//!    1×1 convolution without bias (lpips' `NetLinLayer`; its dropout is the identity in eval
//!    mode), averaged over space;
//! 6. the five layers' values summed.
//!
//! **Single-channel images** (MRI, CT) are repeated to three channels before the scaling layer,
//! as one does with lpips for grey images; each copy is then shifted and scaled with its own
//! channel's constants, exactly as lpips would treat the repeated image.
//!
//! **Weights** come from one safetensors file holding lpips' state_dict names: the trunk
//! `net.slice{s}.{i}.weight` / `.bias` and the heads `lin{l}.model.1.weight` (see
//! [`Lpips::weight_shapes`]). `scripts/convert_lpips_weights.py` writes it from torchvision's
//! ImageNet AlexNet weights and lpips' `weights/v0.1/alex.pth`; `docs/weights.md` explains the
//! one-time conversion. Other tensors in the file (lpips' `lins.*` aliases, the scaling layer's
//! buffers) are ignored: the scaling constants are fixed here.
//!
//! **Volumes** (3D LPIPS) are compared slice by slice along the chosen axes of their (depth,
//! height, width) order: along depth the slices are `v[d, :, :]`, along height `v[:, h, :]`, along
//! width `v[:, :, w]`, each an image whose rows and columns keep the volume's order (so a height
//! slice has depth rows and width columns, as `v[:, h, :]` in NumPy). Each axis gives the mean of
//! its slices' LPIPS; the combined score is the mean of the per-axis means, so each chosen axis
//! counts equally however many slices it has. Slices go through the network `chunk` at a time
//! (default [`DEFAULT_CHUNK`]), both volumes' slices in one batch, copied out of the volumes one
//! chunk at a time so that memory grows with the chunk and not with the volume. One pass per slice
//! was 10–100× slower on the seeds' GPU (pitfall 37); on 2 CPU cores, where each convolution
//! already keeps the cores busy, chunks of 8–64 measured 1.7× faster (`benches/lpips.rs`). Every
//! image in a batch is computed independently, so the chunk size does not change the values.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::data::volume::Volume;
use crate::metrics::weights::{check_tensors, TensorProblem};
use crate::nn::alexnet::{AlexNetFeatures, INPUT_CHANNELS, MIN_INPUT_SIDE, TAP_CHANNELS};
use crate::nn::conv::{Conv2d, Conv2dConfig};

/// lpips' `ScalingLayer.shift`, per RGB channel.
pub const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];

/// lpips' `ScalingLayer.scale`, per RGB channel.
pub const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// lpips' `normalize_tensor` epsilon, added to the channel norm (outside the square root).
pub const NORM_EPS: f64 = 1e-10;

/// Slices per network pass for 3D LPIPS (pitfall 37).
pub const DEFAULT_CHUNK: usize = 32;

/// The trunk's prefix in lpips' state_dict.
const TRUNK_PREFIX: &str = "net";

/// How to make a weights file that works, for error messages.
const CONVERSION_HINT: &str = "write it with scripts/convert_lpips_weights.py (see docs/weights.md)";

/// The intensity range the images are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputRange {
    /// [-1, 1], what the network expects (lpips' default).
    SignedUnit,
    /// [0, 1], mapped to [-1, 1] by `2x − 1` (lpips' `normalize=True`).
    Unit,
}

/// The name of head `layer`'s 1×1 convolution in lpips' state_dict.
fn head_name(layer: usize) -> String {
    format!("lin{layer}.model.1")
}

fn head_config(channels: usize) -> Conv2dConfig {
    Conv2dConfig {
        in_channels: channels,
        out_channels: 1,
        kernel: [1, 1],
        padding: [0, 0],
        stride: [1, 1],
        bias: false,
    }
}

/// LPIPS with AlexNet-lin; see the module documentation.
#[derive(Debug, Clone)]
pub struct Lpips {
    trunk: AlexNetFeatures,
    heads: Vec<Conv2d>,
    /// [`SHIFT`] and [`SCALE`] as `[1, 3, 1, 1]`.
    shift: Tensor,
    scale: Tensor,
    range: InputRange,
}

impl Lpips {
    /// Builds the network from `vb` holding lpips' state_dict names (see [`Lpips::weight_shapes`]);
    /// it computes in f32 on `vb`'s device.
    pub fn new(vb: VarBuilder, range: InputRange) -> Result<Self> {
        let trunk = AlexNetFeatures::new(vb.pp(TRUNK_PREFIX))?;
        let heads = TAP_CHANNELS
            .iter()
            .enumerate()
            .map(|(layer, &channels)| Conv2d::new(vb.pp(head_name(layer)), &head_config(channels)))
            .collect::<Result<_>>()?;
        let device = vb.device();
        let shift = Tensor::new(&SHIFT, device)?.reshape((1, INPUT_CHANNELS, 1, 1))?;
        let scale = Tensor::new(&SCALE, device)?.reshape((1, INPUT_CHANNELS, 1, 1))?;
        Ok(Self { trunk, heads, shift, scale, range })
    }

    /// Loads the weights from the safetensors file `path`, after checking that it has every
    /// tensor with the right shape and a float dtype (any float dtype; computation is in f32).
    pub fn load(path: &Path, range: InputRange, device: &Device) -> std::result::Result<Self, WeightsError> {
        let error = |kind| WeightsError { path: path.to_path_buf(), kind };
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| error(WeightsErrorKind::Unreadable(Box::new(e))))?;
        let problems = check_tensors(&tensors, Lpips::weight_shapes());
        if !problems.is_empty() {
            return Err(error(WeightsErrorKind::Tensors(problems)));
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::new(vb, range).map_err(|e| error(WeightsErrorKind::Load(Box::new(e))))
    }

    /// Every tensor the weights file must hold: lpips' state_dict name and shape, trunk first.
    pub fn weight_shapes() -> Vec<(String, Vec<usize>)> {
        let trunk = AlexNetFeatures::parameter_shapes()
            .into_iter()
            .map(|(name, shape)| (format!("{TRUNK_PREFIX}.{name}"), shape));
        let heads = TAP_CHANNELS
            .iter()
            .enumerate()
            .map(|(layer, &c)| (format!("{}.weight", head_name(layer)), vec![1, c, 1, 1]));
        trunk.chain(heads).collect()
    }

    pub fn range(&self) -> InputRange {
        self.range
    }

    /// Each layer's term for the image pairs `a`, `b` `[N, C, H, W]` (`C` 1 or 3, `H` and `W` at
    /// least 31), as `[N, 5]`: lpips' `retPerLayer` values.
    pub fn per_layer(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.layers(a, b, unit_normalise)
    }

    /// The perceptual loss between `reconstruction` and `target` `[B, C, H, W]` or `[B, C, D, H,
    /// W]`, any number of channels: every channel of every (axial) slice is a grey image pair,
    /// and the loss is their mean LPIPS, differentiable with respect to `reconstruction`.
    /// Identical to the metric except that the channel norm is `√(Σ f² + 1e-20)`, so its
    /// gradient stays finite where a feature vector is zero (the value changes by less than
    /// 1e-10 there).
    pub fn loss(&self, reconstruction: &Tensor, target: &Tensor) -> Result<Tensor> {
        let slices = |x: &Tensor| -> Result<Tensor> {
            let dims = x.dims();
            let (height, width) = (dims[dims.len() - 2], dims[dims.len() - 1]);
            let x = if dims.len() == 5 { x.permute((0, 2, 1, 3, 4))? } else { x.clone() };
            x.contiguous()?.reshape(((), 1, height, width))
        };
        let (a, b) = (slices(reconstruction)?, slices(target)?);
        self.layers(&a, &b, unit_normalise_smooth)?.sum(1)?.mean_all()
    }

    fn layers(&self, a: &Tensor, b: &Tensor, normalise: fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        if a.dims() != b.dims() {
            bail!("LPIPS compares images of one shape, got {:?} and {:?}", a.dims(), b.dims())
        }
        let batch = a.dims4()?.0;
        let taps = self.trunk.taps(&self.prepare(&Tensor::cat(&[a, b], 0)?)?)?;
        let layers = taps
            .iter()
            .zip(&self.heads)
            .map(|(tap, head)| {
                let unit = normalise(tap)?;
                let squared = (unit.narrow(0, 0, batch)? - unit.narrow(0, batch, batch)?)?.sqr()?;
                head.forward(&squared)?.mean((1, 2, 3))
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&layers, 1)
    }

    /// LPIPS of the image pairs `a`, `b` `[N, C, H, W]`, as `[N]`; see [`Lpips::per_layer`].
    pub fn distance(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.per_layer(a, b)?.sum(1)
    }

    /// 3D LPIPS of two volumes of one shape over slices along `config.axes`; see the module
    /// documentation.
    pub fn volume(&self, a: &Volume, b: &Volume, config: &VolumeLpipsConfig) -> Result<VolumeLpips> {
        if a.shape != b.shape {
            bail!("3D LPIPS compares volumes of one shape, got {:?} and {:?} (depth, height, width)", a.shape, b.shape)
        }
        config.check(a.shape)?;
        let axes = config.axes.iter().map(|&axis| self.axis(a, b, axis, config.chunk)).collect::<Result<Vec<_>>>()?;
        let combined = axes.iter().map(|axis| axis.mean).sum::<f64>() / axes.len() as f64;
        Ok(VolumeLpips { axes, combined })
    }

    /// The LPIPS of every slice of `a`, `b` along `axis`, `chunk` slices per pass.
    fn axis(&self, a: &Volume, b: &Volume, axis: SliceAxis, chunk: usize) -> Result<AxisLpips> {
        let device = self.shift.device();
        let count = a.shape[axis.dim()];
        let mut per_slice = Vec::with_capacity(count);
        for start in (0..count).step_by(chunk) {
            let len = chunk.min(count - start);
            let distances =
                self.distance(&axis.slices(a, start, len, device)?, &axis.slices(b, start, len, device)?)?;
            per_slice.extend(distances.to_vec1::<f32>()?);
        }
        let mean = per_slice.iter().map(|&d| f64::from(d)).sum::<f64>() / count as f64;
        Ok(AxisLpips { axis, per_slice, mean })
    }

    /// Maps the input range to [-1, 1], repeats one channel to three, and applies the scaling
    /// layer.
    fn prepare(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let x = match self.range {
            InputRange::SignedUnit => x,
            InputRange::Unit => ((x * 2.0)? - 1.0)?,
        };
        let x = match x.dim(1)? {
            1 => x.repeat((1, INPUT_CHANNELS, 1, 1))?,
            INPUT_CHANNELS => x,
            other => bail!("LPIPS takes 1- or 3-channel images, got {other} channels (input {:?})", x.dims()),
        };
        x.broadcast_sub(&self.shift)?.broadcast_div(&self.scale)
    }
}

/// `f / (√Σ_c f² + ε)` over the channel axis of `[N, C, H, W]` (lpips' `normalize_tensor`).
fn unit_normalise(f: &Tensor) -> Result<Tensor> {
    let norm = f.sqr()?.sum_keepdim(1)?.sqrt()?;
    f.broadcast_div(&(norm + NORM_EPS)?)
}

/// [`unit_normalise`] with `1e-20` under the root, for a finite gradient at zero (`Lpips::loss`).
fn unit_normalise_smooth(f: &Tensor) -> Result<Tensor> {
    let norm = (f.sqr()?.sum_keepdim(1)? + 1e-20)?.sqrt()?;
    f.broadcast_div(&(norm + NORM_EPS)?)
}

/// The axis of a (depth, height, width) volume that slices are taken along.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SliceAxis {
    Depth,
    Height,
    Width,
}

impl SliceAxis {
    pub const ALL: [SliceAxis; 3] = [SliceAxis::Depth, SliceAxis::Height, SliceAxis::Width];

    pub fn name(self) -> &'static str {
        match self {
            SliceAxis::Depth => "depth",
            SliceAxis::Height => "height",
            SliceAxis::Width => "width",
        }
    }

    /// The axis' position in (depth, height, width).
    pub(crate) fn dim(self) -> usize {
        match self {
            SliceAxis::Depth => 0,
            SliceAxis::Height => 1,
            SliceAxis::Width => 2,
        }
    }

    /// The slices' (rows, columns) in a volume of `shape`: the other two axes, in order.
    fn slice_shape(self, [depth, height, width]: [usize; 3]) -> (usize, usize) {
        match self {
            SliceAxis::Depth => (height, width),
            SliceAxis::Height => (depth, width),
            SliceAxis::Width => (depth, height),
        }
    }

    /// Slices `start .. start + len` of `volume` as single-channel images `[len, 1, rows, columns]`
    /// on `device`, copied out of the volume one chunk at a time so that memory grows with the
    /// chunk, not the volume.
    pub(crate) fn slices(self, volume: &Volume, start: usize, len: usize, device: &Device) -> Result<Tensor> {
        let [depth, height, width] = volume.shape;
        let (rows, columns) = self.slice_shape(volume.shape);
        let mut pixels = Vec::with_capacity(len * rows * columns);
        for slice in start..start + len {
            match self {
                SliceAxis::Depth => pixels.extend_from_slice(volume.slice(slice)),
                SliceAxis::Height => {
                    for d in 0..depth {
                        let row = volume.index(d, slice, 0);
                        pixels.extend_from_slice(&volume.data[row..row + width]);
                    }
                }
                SliceAxis::Width => pixels.extend(
                    (0..depth).flat_map(|d| (0..height).map(move |h| (d, h))).map(|(d, h)| volume.get(d, h, slice)),
                ),
            }
        }
        Tensor::from_vec(pixels, (len, 1, rows, columns), device)
    }
}

impl fmt::Display for SliceAxis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which axes 3D LPIPS slices along, and how many slices go through the network at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeLpipsConfig {
    /// Distinct axes, at least one; results come in this order.
    pub axes: Vec<SliceAxis>,
    /// Slices per network pass (each pass holds `2 · chunk` images: both volumes' slices).
    pub chunk: usize,
}

impl Default for VolumeLpipsConfig {
    /// All three axes, [`DEFAULT_CHUNK`] slices per pass.
    fn default() -> Self {
        Self { axes: SliceAxis::ALL.to_vec(), chunk: DEFAULT_CHUNK }
    }
}

impl VolumeLpipsConfig {
    /// Checks the configuration, and that every chosen axis gives slices AlexNet can take from a
    /// volume of `shape`.
    fn check(&self, shape: [usize; 3]) -> Result<()> {
        if self.chunk == 0 {
            bail!("3D LPIPS: chunk must be at least 1 slice per pass")
        }
        if self.axes.is_empty() {
            bail!("3D LPIPS: no axes chosen; choose one or more of depth, height and width")
        }
        if self.axes.iter().collect::<HashSet<_>>().len() != self.axes.len() {
            bail!("3D LPIPS: axes {:?} name an axis twice", self.axes)
        }
        for &axis in &self.axes {
            let (rows, columns) = axis.slice_shape(shape);
            if rows.min(columns) < MIN_INPUT_SIDE {
                bail!(
                    "3D LPIPS along {axis}: slices of this {shape:?} volume are {rows}x{columns} pixels, AlexNet needs \
                     at least {MIN_INPUT_SIDE}x{MIN_INPUT_SIDE}; leave {axis} out of the axes"
                )
            }
        }
        Ok(())
    }
}

/// LPIPS along one axis.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisLpips {
    pub axis: SliceAxis,
    /// One value per slice, in slice order.
    pub per_slice: Vec<f32>,
    /// The mean over slices (summed in f64).
    pub mean: f64,
}

/// 3D LPIPS of two volumes.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeLpips {
    /// One entry per chosen axis, in the configuration's order.
    pub axes: Vec<AxisLpips>,
    /// The mean of the per-axis means.
    pub combined: f64,
}

/// A weights file that cannot be used: the file and what is wrong.
#[derive(Debug)]
pub struct WeightsError {
    pub path: PathBuf,
    pub kind: WeightsErrorKind,
}

#[derive(Debug)]
pub enum WeightsErrorKind {
    /// The file does not exist or is not a safetensors file.
    Unreadable(Box<candle_core::Error>),
    /// Tensors are missing or do not fit; every problem is listed.
    Tensors(Vec<TensorProblem>),
    /// The checked tensors could not be moved to the device.
    Load(Box<candle_core::Error>),
}

impl fmt::Display for WeightsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsErrorKind::Unreadable(err) => write!(f, "cannot read LPIPS weights: {err}; {CONVERSION_HINT}"),
            WeightsErrorKind::Tensors(problems) => {
                write!(f, "not LPIPS AlexNet-lin weights (lpips 0.1 state_dict names):")?;
                for problem in problems {
                    write!(f, "\n  - {problem}")?;
                }
                write!(f, "\n{CONVERSION_HINT}")
            }
            WeightsErrorKind::Load(err) => write!(f, "cannot load LPIPS weights onto the device: {err}"),
        }
    }
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)
    }
}

impl std::error::Error for WeightsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            WeightsErrorKind::Unreadable(err) | WeightsErrorKind::Load(err) => Some(err.as_ref()),
            WeightsErrorKind::Tensors(_) => None,
        }
    }
}
