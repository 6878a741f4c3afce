//! Resampling by an integer factor along every spatial axis of `[B, C, H, W]` or `[B, C, D, H, W]`,
//! the steps between a UNet's resolution levels (factor 2 there):
//! - [`upsample_nearest`]: PyTorch's `F.interpolate(x, scale_factor=f, mode="nearest")`, every
//!   pixel or voxel repeated `f` times along each axis (the upsampling of MONAI's
//!   `DiffusionModelUNet` and of diffusers' `Upsample2D` before their conv);
//! - [`avg_pool`]: PyTorch's `F.avg_pool2d` / `F.avg_pool3d` with `kernel_size = stride = f`, no
//!   padding and `ceil_mode=False`: trailing positions that do not fill a window are dropped.
//!
//! Both are reshapes, a broadcast or a mean, so their gradients come from Candle's autograd and add
//! up wherever the input is also used elsewhere. Candle's own `upsample_nearest2d` is avoided on
//! purpose: its backward assigns the gradient instead of adding it, which is wrong as soon as its
//! input feeds another op too (`candle-core` `backprop.rs`, PR #3507; `shared/docs/candle-notes.md`),
//! and Candle has neither a 3D upsampling nor a 3D pooling.

use candle_core::{bail, Result, Tensor};

use super::conv::FIRST_SPATIAL;

/// The spatial lengths of `x`, which must be `[B, C, H, W]` or `[B, C, D, H, W]`, for a positive
/// `factor`; `op` names the caller in errors.
fn spatial_lengths<'a>(op: &str, x: &'a Tensor, factor: usize) -> Result<&'a [usize]> {
    if !matches!(x.rank(), 4 | 5) {
        bail!("{op}: expects [B, C, H, W] or [B, C, D, H, W], got {:?}", x.dims())
    }
    if factor == 0 {
        bail!("{op}: the factor must be positive")
    }
    Ok(&x.dims()[FIRST_SPATIAL..])
}

/// `[B, C]` followed by `each(n)` for every spatial length `n`.
fn shape_with(x: &Tensor, spatial: &[usize], each: impl Fn(usize) -> Vec<usize>) -> Vec<usize> {
    x.dims()[..FIRST_SPATIAL].iter().copied().chain(spatial.iter().flat_map(|&n| each(n))).collect()
}

/// Nearest-neighbour upsampling by `factor` on every spatial axis: `[.., n, ..]` → `[.., n, 1, ..]`,
/// broadcast to `[.., n, factor, ..]`, merged to `[.., n · factor, ..]`.
pub fn upsample_nearest(x: &Tensor, factor: usize) -> Result<Tensor> {
    let spatial = spatial_lengths("upsample_nearest", x, factor)?;
    let single = shape_with(x, spatial, |n| vec![n, 1]);
    let repeated = shape_with(x, spatial, |n| vec![n, factor]);
    let merged = shape_with(x, spatial, |n| vec![n * factor]);
    x.reshape(single)?.broadcast_as(repeated)?.reshape(merged)
}

/// Average pooling over non-overlapping `factor`-sized windows on every spatial axis: each axis is
/// cropped to a multiple of `factor`, split into `[n / factor, factor]` and averaged over the
/// window axes.
pub fn avg_pool(x: &Tensor, factor: usize) -> Result<Tensor> {
    let spatial = spatial_lengths("avg_pool", x, factor)?;
    if let Some(&n) = spatial.iter().find(|&&n| n < factor) {
        bail!("avg_pool: a spatial length {n} is shorter than the window {factor} (input {:?})", x.dims())
    }
    let mut cropped = x.clone();
    for (axis, &n) in spatial.iter().enumerate() {
        cropped = cropped.narrow(FIRST_SPATIAL + axis, 0, n - n % factor)?;
    }
    let windows = shape_with(x, spatial, |n| vec![n / factor, factor]);
    let window_axes: Vec<usize> = (0..spatial.len()).map(|axis| FIRST_SPATIAL + 2 * axis + 1).collect();
    cropped.reshape(windows)?.mean(window_axes)
}
