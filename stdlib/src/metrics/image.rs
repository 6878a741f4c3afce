//! PSNR, SSIM and MS-SSIM of 2D images (`[H, W]`) and 3D volumes (`[D, H, W]`), defined exactly as
//! MONAI 1.6.1 defines them (`PSNRMetric`, `SSIMMetric`, `MultiScaleSSIMMetric` and
//! `monai.metrics.regression.compute_ssim_and_cs`), computed in f64.
//!
//! - PSNR: `20·log10(data_range) − 10·log10(MSE)` over the whole image; identical images give +∞.
//! - SSIM (Wang et al. 2004): local means, variances and covariance from a Gaussian window (11
//!   taps, sigma 1.5, normalised to sum 1, built as MONAI builds it), applied *without padding*
//!   ("valid" filtering, so the result covers only positions where the whole window fits);
//!   `C1 = (K1·L)²`, `C2 = (K2·L)²` with K1 0.01, K2 0.03 and `L` the data range; the SSIM map is
//!   averaged over all valid positions. scikit-image's `structural_similarity(gaussian_weights=True,
//!   sigma=1.5, use_sample_covariance=False)` is the same definition.
//! - MS-SSIM (Wang et al. 2003): at each of S scales the mean contrast-sensitivity term `cs` is
//!   taken, the image is halved by 2x average pooling (floor: an odd last row or slice is
//!   dropped), and at the coarsest scale the mean SSIM replaces `cs`; the result is
//!   `Π relu(vᵢ)^wᵢ`. In 3D all three axes are filtered and pooled.
//!
//! **Fewer than 5 scales.** Each scale halves the image and the coarsest must still hold one
//! window, so S scales need every side to be at least `window · 2^(S−1)` (176 for 5 scales, 88
//! for 4): a 160-slice volume cannot have 5, and MONAI raises for it. [`ms_ssim`] therefore takes
//! the number of scales explicitly and refuses images too small for it (see
//! [`ms_ssim_max_scales`]); with S < 5 it uses the first S standard weights divided by their sum
//! ([`ms_ssim_weights`]), which is what MONAI computes when given those weights. MONAI's own size
//! check uses `side // (S−1)² > window − 1`, which coincides with ours for 3 and 5 scales but is
//! stricter for 4 (it wants sides of 99, not 88): there MONAI refuses images this module scores.
//!
//! The filtering is separable (width, then height, then depth), and a volume is processed in
//! runs of output slices, in parallel, each keeping only a window's worth of in-plane-filtered
//! slices, so memory stays a few planes per thread even for 160x256x256 volumes. Sums are taken
//! per output plane and added in order, so results do not depend on the number of threads.

use std::borrow::Cow;
use std::fmt;

use rayon::prelude::*;

/// The five MS-SSIM weights of Wang et al. (2003), finest scale first (MONAI's defaults).
pub const MS_SSIM_WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];

/// A 2D image (`[H, W]`) or 3D volume (`[D, H, W]`), row-major with the last axis fastest — the
/// layout of [`crate::data::volume::Volume`].
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    data: &'a [f32],
    shape: &'a [usize],
}

impl<'a> Image<'a> {
    /// Checks that `shape` has 2 or 3 non-zero sides whose product is `data.len()`.
    pub fn new(data: &'a [f32], shape: &'a [usize]) -> Result<Self, ImageMetricError> {
        if !(2..=3).contains(&shape.len()) || shape.contains(&0) {
            return Err(ImageMetricError::Shape { shape: shape.to_vec() });
        }
        if shape.iter().product::<usize>() != data.len() {
            return Err(ImageMetricError::Length { shape: shape.to_vec(), len: data.len() });
        }
        Ok(Image { data, shape })
    }

    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// `[depth, height, width]`, with depth 1 for a 2D image.
    fn dims(&self) -> [usize; 3] {
        match *self.shape {
            [h, w] => [1, h, w],
            [d, h, w] => [d, h, w],
            _ => unreachable!("Image::new accepts only 2 or 3 axes"),
        }
    }

    fn is_volume(&self) -> bool {
        self.shape.len() == 3
    }
}

/// SSIM's parameters; [`Default`] gives MONAI's (and Wang et al.'s).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SsimConfig {
    /// Taps of the Gaussian window along every axis.
    pub window: usize,
    /// Standard deviation of the Gaussian window, in pixels.
    pub sigma: f64,
    /// Luminance stability constant: `C1 = (k1 · data_range)²`.
    pub k1: f64,
    /// Contrast stability constant: `C2 = (k2 · data_range)²`.
    pub k2: f64,
    /// Value range of the images (1 for images scaled to [0, 1]).
    pub data_range: f64,
}

impl Default for SsimConfig {
    fn default() -> Self {
        SsimConfig { window: 11, sigma: 1.5, k1: 0.01, k2: 0.03, data_range: 1.0 }
    }
}

impl SsimConfig {
    fn validate(&self) -> Result<(), ImageMetricError> {
        if self.window == 0 {
            return Err(ImageMetricError::Parameter { name: "window", value: 0.0 });
        }
        let positive = [("sigma", self.sigma), ("k1", self.k1), ("k2", self.k2), ("data_range", self.data_range)];
        match positive.into_iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
            Some((name, value)) => Err(ImageMetricError::Parameter { name, value }),
            None => Ok(()),
        }
    }
}

/// Why an image metric could not be computed.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageMetricError {
    /// Not 2 or 3 axes, or an axis of length 0.
    Shape { shape: Vec<usize> },
    /// The data does not hold `product(shape)` values.
    Length { shape: Vec<usize>, len: usize },
    /// The two images differ in shape.
    Mismatch { x: Vec<usize>, y: Vec<usize> },
    /// A side is shorter than `scales` scales of the window need.
    TooSmall { shape: Vec<usize>, window: usize, scales: usize },
    /// MS-SSIM scales outside 1..=5.
    Scales { scales: usize },
    /// A slicing axis the image does not have (slices are taken from 3D volumes).
    Axis { axis: usize, shape: Vec<usize> },
    /// A parameter that must be a positive finite number (at least 1 for `window`).
    Parameter { name: &'static str, value: f64 },
}

impl fmt::Display for ImageMetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageMetricError::Shape { shape } => write!(
                f,
                "image shape {} is not a 2D [H, W] or 3D [D, H, W] shape with non-empty axes; \
                 pass single-channel images without batch or channel axes",
                shape_text(shape)
            ),
            ImageMetricError::Length { shape, len } => write!(
                f,
                "an image of shape {} holds {} values, but {len} were given; check the shape's order",
                shape_text(shape),
                shape.iter().product::<usize>()
            ),
            ImageMetricError::Mismatch { x, y } => write!(
                f,
                "images of shapes {} and {} cannot be compared; resample or crop them to one shape first",
                shape_text(x),
                shape_text(y)
            ),
            ImageMetricError::TooSmall { shape, window, scales: 1 } => write!(
                f,
                "SSIM's {window}-pixel window does not fit in an image of shape {}: every side must be at \
                 least {window} pixels",
                shape_text(shape)
            ),
            ImageMetricError::TooSmall { shape, window, scales } => {
                let fits = ms_ssim_max_scales(shape, *window);
                let advice = match fits {
                    0 => format!("not even SSIM's {window}-pixel window fits"),
                    n => format!("use at most {n} scale{}", if n == 1 { "" } else { "s" }),
                };
                write!(
                    f,
                    "MS-SSIM with {scales} scales needs every side to be at least {} pixels (the image is halved \
                     {} times and the coarsest scale must still hold the {window}-pixel window), but the image \
                     has shape {}: {advice}",
                    window << (scales - 1),
                    scales - 1,
                    shape_text(shape)
                )
            }
            ImageMetricError::Scales { scales } => {
                write!(f, "MS-SSIM takes 1 to {} scales, not {scales}", MS_SSIM_WEIGHTS.len())
            }
            ImageMetricError::Axis { axis, shape } => write!(
                f,
                "cannot take slices along axis {axis} of an image of shape {}: slices come from 3D [D, H, W] \
                 volumes, along axis 0, 1 or 2",
                shape_text(shape)
            ),
            ImageMetricError::Parameter { name: "window", .. } => {
                write!(f, "the SSIM window must have at least 1 tap (the standard is 11)")
            }
            ImageMetricError::Parameter { name, value } => {
                write!(f, "`{name}` must be a positive finite number, not {value}")
            }
        }
    }
}

impl std::error::Error for ImageMetricError {}

fn shape_text(shape: &[usize]) -> String {
    shape.iter().map(usize::to_string).collect::<Vec<_>>().join("x")
}

/// Peak signal-to-noise ratio in dB, `20·log10(data_range) − 10·log10(MSE)` (MONAI's
/// `PSNRMetric(max_val=data_range)`); +∞ for identical images.
pub fn psnr(x: Image<'_>, y: Image<'_>, data_range: f64) -> Result<f64, ImageMetricError> {
    same_shape(x, y)?;
    if !(data_range.is_finite() && data_range > 0.0) {
        return Err(ImageMetricError::Parameter { name: "data_range", value: data_range });
    }
    let sums: Vec<f64> = x
        .data
        .par_chunks(SUM_CHUNK)
        .zip(y.data.par_chunks(SUM_CHUNK))
        .map(|(a, b)| a.iter().zip(b).map(|(&a, &b)| (f64::from(b) - f64::from(a)).powi(2)).sum())
        .collect();
    let mse = sums.iter().sum::<f64>() / x.data.len() as f64;
    Ok(20.0 * data_range.log10() - 10.0 * mse.log10())
}

/// The largest PSNR medgen reports (`compress`'s validation, `evaluate`): identical images have
/// +∞, which JSON (and so the store and `expect`) cannot hold. [`psnr`] itself is uncapped.
pub const PSNR_CAP_DB: f64 = 100.0;

/// Values per partial sum in [`psnr`]: fixed, so the result does not depend on the thread count.
const SUM_CHUNK: usize = 1 << 16;

/// Mean SSIM over the valid positions of the window (MONAI's `SSIMMetric`).
pub fn ssim(x: Image<'_>, y: Image<'_>, cfg: &SsimConfig) -> Result<f64, ImageMetricError> {
    check_ssim(x, y, cfg, 1)?;
    let filter = Filter::new(cfg, x.is_volume());
    Ok(filter.means(x.data, y.data, x.dims()).ssim)
}

/// MS-SSIM over `scales` scales (1 to 5), weighted by [`ms_ssim_weights`]; with one scale it
/// equals [`ssim`]. Fails when a side is shorter than `cfg.window · 2^(scales−1)`.
pub fn ms_ssim(x: Image<'_>, y: Image<'_>, cfg: &SsimConfig, scales: usize) -> Result<f64, ImageMetricError> {
    let weights = ms_ssim_weights(scales)?;
    check_ssim(x, y, cfg, scales)?;
    let volume = x.is_volume();
    let filter = Filter::new(cfg, volume);
    let mut dims = x.dims();
    let mut means = filter.means(x.data, y.data, dims);
    let mut pooled: Option<(Vec<f64>, Vec<f64>)> = None;
    let mut terms = Vec::with_capacity(scales);
    for _ in 1..scales {
        terms.push(means.cs);
        let ((px, next), (py, _)) = match &pooled {
            None => (average_pool(x.data, dims, volume), average_pool(y.data, dims, volume)),
            Some((a, b)) => (average_pool(a, dims, volume), average_pool(b, dims, volume)),
        };
        means = filter.means(&px, &py, next);
        pooled = Some((px, py));
        dims = next;
    }
    terms.push(means.ssim);
    Ok(terms.iter().zip(&weights).map(|(v, w)| v.max(0.0).powf(*w)).product())
}

/// The weights of `scales` MS-SSIM scales: the first `scales` of [`MS_SSIM_WEIGHTS`] divided by
/// their sum, and all five unchanged for 5 scales (as published and as MONAI uses them, although
/// they sum to 1.0001).
pub fn ms_ssim_weights(scales: usize) -> Result<Vec<f64>, ImageMetricError> {
    if !(1..=MS_SSIM_WEIGHTS.len()).contains(&scales) {
        return Err(ImageMetricError::Scales { scales });
    }
    if scales == MS_SSIM_WEIGHTS.len() {
        return Ok(MS_SSIM_WEIGHTS.to_vec());
    }
    let first = &MS_SSIM_WEIGHTS[..scales];
    let total: f64 = first.iter().sum();
    Ok(first.iter().map(|w| w / total).collect())
}

/// Most MS-SSIM scales (0 to 5) an image of `shape` allows with a `window`-tap window: the
/// largest S with every side at least `window · 2^(S−1)`.
pub fn ms_ssim_max_scales(shape: &[usize], window: usize) -> usize {
    let side = shape.iter().copied().min().unwrap_or(0);
    (1..=MS_SSIM_WEIGHTS.len()).rev().find(|s| side >> (s - 1) >= window.max(1)).unwrap_or(0)
}

/// The mean of `metric` over the 2D slices of a 3D `[D, H, W]` pair taken along `axis` (0:
/// `[H, W]` slices, 1: `[D, W]`, 2: `[D, H]`), computed in parallel over slices; e.g.
/// `mean_over_slices(x, y, 0, |a, b| ssim(a, b, &cfg))`. All slices share one shape, so
/// `metric` fails on all of them or none; its error is returned.
pub fn mean_over_slices<F>(x: Image<'_>, y: Image<'_>, axis: usize, metric: F) -> Result<f64, ImageMetricError>
where
    F: Fn(Image<'_>, Image<'_>) -> Result<f64, ImageMetricError> + Sync,
{
    same_shape(x, y)?;
    if !x.is_volume() || axis > 2 {
        return Err(ImageMetricError::Axis { axis, shape: x.shape.to_vec() });
    }
    let [d, h, w] = x.dims();
    let shape = match axis {
        0 => [h, w],
        1 => [d, w],
        _ => [d, h],
    };
    let count = x.shape[axis];
    let values = (0..count)
        .into_par_iter()
        .map(|i| {
            let a = slice(x, axis, i);
            let b = slice(y, axis, i);
            metric(Image::new(&a, &shape)?, Image::new(&b, &shape)?)
        })
        .collect::<Result<Vec<f64>, _>>()?;
    Ok(values.iter().sum::<f64>() / count as f64)
}

/// Slice `index` of a 3D image along `axis`, borrowed when it is contiguous (axis 0).
fn slice<'a>(image: Image<'a>, axis: usize, index: usize) -> Cow<'a, [f32]> {
    let [d, h, w] = image.dims();
    let data = image.data;
    match axis {
        0 => Cow::Borrowed(&data[index * h * w..(index + 1) * h * w]),
        1 => Cow::Owned((0..d).flat_map(|z| &data[(z * h + index) * w..(z * h + index + 1) * w]).copied().collect()),
        _ => Cow::Owned((0..d * h).map(|row| data[row * w + index]).collect()),
    }
}

fn same_shape(x: Image<'_>, y: Image<'_>) -> Result<(), ImageMetricError> {
    if x.shape != y.shape {
        return Err(ImageMetricError::Mismatch { x: x.shape.to_vec(), y: y.shape.to_vec() });
    }
    Ok(())
}

fn check_ssim(x: Image<'_>, y: Image<'_>, cfg: &SsimConfig, scales: usize) -> Result<(), ImageMetricError> {
    same_shape(x, y)?;
    cfg.validate()?;
    if ms_ssim_max_scales(x.shape, cfg.window) < scales {
        return Err(ImageMetricError::TooSmall { shape: x.shape.to_vec(), window: cfg.window, scales });
    }
    Ok(())
}

/// Dimensions after one 2x average pooling: every axis of a volume, height and width of an image.
fn halved([d, h, w]: [usize; 3], volume: bool) -> [usize; 3] {
    [if volume { d / 2 } else { d }, h / 2, w / 2]
}

/// 2x average pooling without padding (`avg_pool2d/3d(kernel_size=2)`) of data of dimensions
/// `from`, returning the pooled data and its dimensions [`halved`].
fn average_pool<T: Copy + Into<f64> + Sync>(data: &[T], from: [usize; 3], volume: bool) -> (Vec<f64>, [usize; 3]) {
    let to = halved(from, volume);
    let depth_taps = if volume { 2 } else { 1 };
    let scale = 1.0 / (4 * depth_taps) as f64;
    let mut out = vec![0.0; to.iter().product()];
    out.par_chunks_mut(to[1] * to[2]).enumerate().for_each(|(z, plane)| {
        for (i, row) in plane.chunks_mut(to[2]).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                let mut sum = 0.0;
                for dz in 0..depth_taps {
                    for (di, dj) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let index = ((z * depth_taps + dz) * from[1] + 2 * i + di) * from[2] + 2 * j + dj;
                        sum += data[index].into();
                    }
                }
                *v = sum * scale;
            }
        }
    });
    (out, to)
}

/// Mean SSIM and mean contrast sensitivity over the valid positions.
#[derive(Clone, Copy, Debug, Default)]
struct Means {
    ssim: f64,
    cs: f64,
}

/// The Gaussian window and constants of one SSIM configuration.
struct Filter {
    /// In-plane taps (height and width).
    taps: Vec<f64>,
    /// Depth taps: the same Gaussian for volumes, a single 1 for 2D images (depth 1, unfiltered).
    depth_taps: Vec<f64>,
    c1: f64,
    c2: f64,
}

/// Indices of the five local statistics: x, y, x², y², x·y.
const X: usize = 0;
const Y: usize = 1;
const XX: usize = 2;
const YY: usize = 3;
const XY: usize = 4;

/// The five window-filtered statistics over one output plane.
type Moments = [Vec<f64>; 5];

impl Filter {
    fn new(cfg: &SsimConfig, volume: bool) -> Self {
        let taps = gaussian_taps(cfg.window, cfg.sigma);
        let depth_taps = if volume { taps.clone() } else { vec![1.0] };
        Filter { taps, depth_taps, c1: (cfg.k1 * cfg.data_range).powi(2), c2: (cfg.k2 * cfg.data_range).powi(2) }
    }

    /// Means of the SSIM and cs maps of `x` against `y`, both of dimensions `dims`, which the
    /// caller has checked are at least the window along every filtered axis.
    fn means<T: Copy + Into<f64> + Sync>(&self, x: &[T], y: &[T], dims: [usize; 3]) -> Means {
        let out_depth = dims[0] + 1 - self.depth_taps.len();
        let halo = self.depth_taps.len() - 1;
        let run = out_depth.div_ceil(rayon::current_num_threads()).max(2 * halo).max(1);
        let starts: Vec<usize> = (0..out_depth).step_by(run).collect();
        let planes: Vec<Vec<Means>> = starts
            .into_par_iter()
            .map(|start| self.plane_sums(x, y, dims, start..(start + run).min(out_depth)))
            .collect();
        let positions = (out_depth * (dims[1] + 1 - self.taps.len()) * (dims[2] + 1 - self.taps.len())) as f64;
        let total =
            planes.iter().flatten().fold(Means::default(), |a, p| Means { ssim: a.ssim + p.ssim, cs: a.cs + p.cs });
        Means { ssim: total.ssim / positions, cs: total.cs / positions }
    }

    /// Sums of the SSIM and cs maps over each output plane in `outputs`, keeping a ring of the
    /// in-plane-filtered input slices the depth window needs.
    fn plane_sums<T: Copy + Into<f64>>(
        &self,
        x: &[T],
        y: &[T],
        dims: [usize; 3],
        outputs: std::ops::Range<usize>,
    ) -> Vec<Means> {
        let [_, h, w] = dims;
        let k = self.taps.len();
        let plane_out = (h + 1 - k) * (w + 1 - k);
        let kd = self.depth_taps.len();
        let mut scratch = PlaneScratch::new(h, w, k);
        let mut ring: Vec<Moments> = (0..kd).map(|_| zeros(plane_out)).collect();
        let mut combined = zeros(plane_out);
        let mut sums = Vec::with_capacity(outputs.len());
        for z in outputs.start..outputs.end + kd - 1 {
            let input = z * h * w..(z + 1) * h * w;
            scratch.filter(&x[input.clone()], &y[input], &self.taps, &mut ring[z % kd]);
            let Some(first) = (z + 1).checked_sub(kd).filter(|o| *o >= outputs.start) else { continue };
            let moments = if kd == 1 {
                &ring[0]
            } else {
                for (c, out) in combined.iter_mut().enumerate() {
                    out.fill(0.0);
                    for (t, &tap) in self.depth_taps.iter().enumerate() {
                        axpy(tap, &ring[(first + t) % kd][c], out);
                    }
                }
                &combined
            };
            sums.push(self.sum_maps(moments));
        }
        sums
    }

    /// Sums over one plane of the SSIM map and the contrast-sensitivity map (MONAI's formulas).
    fn sum_maps(&self, m: &Moments) -> Means {
        let (c1, c2) = (self.c1, self.c2);
        let [x, y, xx, yy, xy] = m;
        let mut sums = Means::default();
        for ((((&mx, &my), &mxx), &myy), &mxy) in x.iter().zip(y).zip(xx).zip(yy).zip(xy) {
            let sigma_x = mxx - mx * mx;
            let sigma_y = myy - my * my;
            let sigma_xy = mxy - mx * my;
            let cs = (2.0 * sigma_xy + c2) / (sigma_x + sigma_y + c2);
            sums.cs += cs;
            sums.ssim += (2.0 * mx * my + c1) / (mx * mx + my * my + c1) * cs;
        }
        sums
    }
}

fn zeros(len: usize) -> Moments {
    std::array::from_fn(|_| vec![0.0; len])
}

/// MONAI's Gaussian window: taps at offsets `(1 − window)/2 + i`, `exp(−(d/σ)²/2)`, normalised.
fn gaussian_taps(window: usize, sigma: f64) -> Vec<f64> {
    let start = (1.0 - window as f64) / 2.0;
    let taps: Vec<f64> = (0..window).map(|i| (-0.5 * ((start + i as f64) / sigma).powi(2)).exp()).collect();
    let total: f64 = taps.iter().sum();
    taps.iter().map(|t| t / total).collect()
}

/// Buffers for filtering one input plane: the five statistics of one input row, and the plane
/// after filtering along width.
struct PlaneScratch {
    height: usize,
    width: usize,
    out_width: usize,
    row: Moments,
    across: Moments,
}

impl PlaneScratch {
    fn new(height: usize, width: usize, taps: usize) -> Self {
        let out_width = width + 1 - taps;
        PlaneScratch { height, width, out_width, row: zeros(width), across: zeros(height * out_width) }
    }

    /// The five statistics of one `[height, width]` plane of `x` and `y`, filtered along width
    /// and then height (valid positions only), into `out`.
    fn filter<T: Copy + Into<f64>>(&mut self, x: &[T], y: &[T], taps: &[f64], out: &mut Moments) {
        let (w, ow) = (self.width, self.out_width);
        for r in 0..self.height {
            for (j, (a, b)) in x[r * w..(r + 1) * w].iter().zip(&y[r * w..(r + 1) * w]).enumerate() {
                let (a, b): (f64, f64) = ((*a).into(), (*b).into());
                self.row[X][j] = a;
                self.row[Y][j] = b;
                self.row[XX][j] = a * a;
                self.row[YY][j] = b * b;
                self.row[XY][j] = a * b;
            }
            for (src, dst) in self.row.iter().zip(self.across.iter_mut()) {
                correlate(src, taps, &mut dst[r * ow..(r + 1) * ow]);
            }
        }
        for (src, dst) in self.across.iter().zip(out.iter_mut()) {
            for (i, out_row) in dst.chunks_mut(ow).enumerate() {
                out_row.fill(0.0);
                for (t, &tap) in taps.iter().enumerate() {
                    axpy(tap, &src[(i + t) * ow..(i + t + 1) * ow], out_row);
                }
            }
        }
    }
}

/// `dst[j] = Σₜ taps[t] · src[j + t]`: valid correlation, `src.len() = dst.len() + taps.len() − 1`.
fn correlate(src: &[f64], taps: &[f64], dst: &mut [f64]) {
    dst.fill(0.0);
    for (t, &tap) in taps.iter().enumerate() {
        axpy(tap, &src[t..t + dst.len()], dst);
    }
}

/// `y += a · x`.
fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}
