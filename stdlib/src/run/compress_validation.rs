//! What `compress` measures on its validation split besides the loss: the `metrics` its checker
//! resolved (`stages::compress`), each a mean over validation samples, logged per validation
//! and reported at the best epoch.
//!
//! A sample is what the model sees: an axial slice `[C, H, W]` for a 2D compressor, a volume
//! `[C, D, H, W]` for a 3D one. Reconstructions are compared in [0, 1], as
//! `CompressorSpec::to_pixels` makes them (clamped intensities, mask probabilities), and every
//! value is computed on the host from `to_vec`, in f32 and f64, so it does not depend on the
//! device or precision the model runs in (seed pitfall 41). Nothing here draws a random number:
//! validation cannot move training (pitfall 42).
//!
//! - `psnr`: over the whole sample (all channels), data range 1, capped at [`PSNR_CAP_DB`].
//! - `ssim`, `ms_ssim`: `metrics::image` (MONAI's definitions) per sample and channel — a 2D
//!   image per slice, a 3D one per volume — averaged over the channels. MS-SSIM uses as many
//!   scales as the sample's sides allow, at most five: `evaluate`'s rule.
//! - `lpips`: AlexNet-lin (`metrics::lpips`) on every axial slice of every channel as a grey
//!   image pair, as `Lpips::loss` sees them, averaged per sample.
//! - `dice`, `iou`: the mask probabilities binarised with the one threshold
//!   ([`binarize_seg`], 0.5) against the binary target, voxel counts pooled over a sample's
//!   channels, one score per sample, then the **mean over samples** (`metrics::segmentation`).
//!   For a 2D compressor a sample is a slice, so a slice without tumour reconstructed without
//!   one scores 1; `evaluate` pools each volume's slices instead.

use candle_core::{DType, Error, Result, Tensor};

use crate::data::volume::{Spacing, Volume};
use crate::io::nifti::binarize_seg;
use crate::metrics::image::{
    ms_ssim, ms_ssim_max_scales, psnr, ssim, Image, ImageMetricError, SsimConfig, MS_SSIM_WEIGHTS, PSNR_CAP_DB,
};
use crate::metrics::lpips::{Lpips, DEFAULT_CHUNK};
use crate::metrics::segmentation::{BinaryMask, MaskRole, Overlap};
use crate::train::trainer::ValSums;

/// One validation metric of `compress`, by its name in the language (`ms_ssim`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    Psnr,
    Ssim,
    MsSsim,
    Lpips,
    Dice,
    Iou,
}

impl Measure {
    pub fn name(self) -> &'static str {
        match self {
            Measure::Psnr => "psnr",
            Measure::Ssim => "ssim",
            Measure::MsSsim => "ms_ssim",
            Measure::Lpips => "lpips",
            Measure::Dice => "dice",
            Measure::Iou => "iou",
        }
    }
}

/// The validation metrics of one `compress` run, and the LPIPS network when they include it.
#[derive(Debug)]
pub struct Measures<'a> {
    measures: Vec<Measure>,
    lpips: Option<&'a Lpips>,
}

/// One sample's values, on the host: the target and its reconstruction, channel after channel.
struct Sample<'s> {
    target: &'s [f32],
    reconstruction: &'s [f32],
    channels: usize,
    /// The spatial sides of one channel: `[H, W]` or `[D, H, W]`.
    sides: &'s [usize],
}

impl<'a> Measures<'a> {
    /// The metrics named by `names` (the resolved `metrics` parameter); `lpips` must be given
    /// when they include `lpips`.
    pub fn new(measures: &[Measure], lpips: Option<&'a Lpips>) -> std::result::Result<Self, String> {
        let measures = measures.to_vec();
        if measures.contains(&Measure::Lpips) && lpips.is_none() {
            return Err("the `lpips` validation metric needs the LPIPS network: set `lpips_weights`".into());
        }
        Ok(Measures { measures, lpips })
    }

    /// Adds the metrics of every sample of `target` and its `reconstruction` (`[B, C, ...]`, in
    /// [0, 1]) to `sums`; each metric's column exists even before a value is added.
    pub fn add(&self, target: &Tensor, reconstruction: &Tensor, sums: &mut ValSums) -> Result<()> {
        for m in &self.measures {
            sums.declare(m.name());
        }
        let dims = target.dims().to_vec();
        if dims.len() < 4 || reconstruction.dims() != dims.as_slice() {
            candle_core::bail!(
                "validation compares [B, C, ...] batches of one shape, got {dims:?} and {:?}",
                reconstruction.dims()
            );
        }
        let (samples, channels, sides) = (dims[0], dims[1], &dims[2..]);
        let host = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        let (target_values, reconstruction_values) = (host(target)?, host(reconstruction)?);
        let lpips = match self.lpips.filter(|_| self.measures.contains(&Measure::Lpips)) {
            Some(network) => lpips_per_sample(network, target, reconstruction, samples)?,
            None => Vec::new(),
        };
        let len = target_values.len() / samples.max(1);
        for b in 0..samples {
            let range = b * len..(b + 1) * len;
            let sample = Sample {
                target: &target_values[range.clone()],
                reconstruction: &reconstruction_values[range],
                channels,
                sides,
            };
            for m in &self.measures {
                let value = match m {
                    Measure::Psnr => sample.psnr()?,
                    Measure::Ssim => sample.mean_over_channels(|x, y| ssim(x, y, &SsimConfig::default()))?,
                    Measure::MsSsim => sample.ms_ssim()?,
                    Measure::Lpips => *lpips.get(b).ok_or_else(|| msg("the LPIPS network is not loaded"))?,
                    Measure::Dice => sample.overlap()?.dice(),
                    Measure::Iou => sample.overlap()?.iou(),
                };
                sums.add(m.name(), value);
            }
        }
        Ok(())
    }
}

impl Sample<'_> {
    /// PSNR in dB for data range 1 over every channel (`metrics::image::psnr`), capped at
    /// [`PSNR_CAP_DB`].
    fn psnr(&self) -> Result<f64> {
        let shape = [self.channels, self.target.len() / self.channels];
        let x = Image::new(self.reconstruction, &shape).map_err(msg)?;
        let y = Image::new(self.target, &shape).map_err(msg)?;
        Ok(psnr(x, y, 1.0).map_err(msg)?.min(PSNR_CAP_DB))
    }

    /// MS-SSIM with as many scales as the sides allow, at most five; a sample too small for
    /// one is an error naming its shape.
    fn ms_ssim(&self) -> Result<f64> {
        let cfg = SsimConfig::default();
        let scales = ms_ssim_max_scales(self.sides, cfg.window).min(MS_SSIM_WEIGHTS.len()).max(1);
        self.mean_over_channels(|x, y| ms_ssim(x, y, &cfg, scales))
    }

    /// `metric` of every channel's reconstruction against its target, averaged.
    fn mean_over_channels(
        &self,
        metric: impl Fn(Image<'_>, Image<'_>) -> std::result::Result<f64, ImageMetricError>,
    ) -> Result<f64> {
        let len = self.target.len() / self.channels;
        let mut total = 0.0;
        for c in 0..self.channels {
            let range = c * len..(c + 1) * len;
            let x = Image::new(&self.reconstruction[range.clone()], self.sides).map_err(msg)?;
            let y = Image::new(&self.target[range], self.sides).map_err(msg)?;
            total += metric(x, y).map_err(msg)?;
        }
        Ok(total / self.channels as f64)
    }

    /// Voxel counts of the binarised reconstruction against the target, pooled over channels;
    /// a target that is not binary is an error.
    fn overlap(&self) -> Result<Overlap> {
        let shape = match *self.sides {
            [h, w] => [1, h, w],
            [d, h, w] => [d, h, w],
            _ => candle_core::bail!("masks are [H, W] slices or [D, H, W] volumes, got sides {:?}", self.sides),
        };
        let len = self.target.len() / self.channels;
        let mut pooled = Overlap::default();
        for c in 0..self.channels {
            let range = c * len..(c + 1) * len;
            let mut predicted = self.reconstruction[range.clone()].to_vec();
            binarize_seg(&mut predicted);
            let mask = |data: Vec<f32>, role| {
                BinaryMask::from_volume(&Volume { shape, spacing: Spacing::new(1.0, 1.0, 1.0), data }, role)
                    .map_err(msg)
            };
            let overlap = Overlap::of(
                &mask(predicted, MaskRole::Prediction)?,
                &mask(self.target[range].to_vec(), MaskRole::Reference)?,
            )
            .map_err(msg)?;
            pooled.add(&overlap);
        }
        Ok(pooled)
    }
}

/// The LPIPS of each sample: every axial slice of every channel a grey image pair, averaged;
/// [`DEFAULT_CHUNK`] slices per pass.
fn lpips_per_sample(lpips: &Lpips, target: &Tensor, reconstruction: &Tensor, samples: usize) -> Result<Vec<f64>> {
    let dims = target.dims();
    let (height, width) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let slices = |t: &Tensor| t.contiguous()?.reshape(((), 1, height, width));
    let (a, b) = (slices(reconstruction)?, slices(target)?);
    let count = a.dim(0)?;
    let mut distances = Vec::with_capacity(count);
    for start in (0..count).step_by(DEFAULT_CHUNK) {
        let len = DEFAULT_CHUNK.min(count - start);
        distances.extend(lpips.distance(&a.narrow(0, start, len)?, &b.narrow(0, start, len)?)?.to_vec1::<f32>()?);
    }
    let per_sample = count / samples.max(1);
    Ok(distances
        .chunks(per_sample.max(1))
        .map(|d| d.iter().map(|&v| f64::from(v)).sum::<f64>() / d.len() as f64)
        .collect())
}

fn msg(e: impl std::fmt::Display) -> Error {
    Error::Msg(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The mean of `name` over the samples added.
    fn mean(sums: &ValSums, name: &str) -> f64 {
        let (sum, count) = sums.extra[name];
        sum / count as f64
    }

    fn tensor(values: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn masks_are_binarised_before_dice_and_iou() {
        // Sample 0: the target's left column is tumour; the reconstruction says 0.6 there and 0.4
        // elsewhere, a perfect mask once thresholded at 0.5 (soft Dice would be 0.6). Sample 1:
        // 0.51 at one background pixel, so one false positive: Dice 4/5, IoU 2/3.
        let target = tensor(vec![1., 0., 1., 0., 1., 0., 1., 0.], &[2, 1, 2, 2]);
        let reconstruction = tensor(vec![0.6, 0.4, 0.6, 0.4, 1.0, 0.51, 1.0, 0.49], &[2, 1, 2, 2]);
        let measures = Measures::new(&[Measure::Dice, Measure::Iou], None).unwrap();
        let mut sums = ValSums::default();
        measures.add(&target, &reconstruction, &mut sums).unwrap();
        assert!((mean(&sums, "dice") - (1.0 + 0.8) / 2.0).abs() < 1e-12, "{sums:?}");
        assert!((mean(&sums, "iou") - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12, "{sums:?}");
        assert_eq!(sums.extra["dice"].1, 2, "one value per sample");
    }

    #[test]
    fn a_target_that_is_not_binary_is_an_error() {
        let target = tensor(vec![1., 0.5, 0., 0.], &[1, 1, 2, 2]);
        let measures = Measures::new(&[Measure::Dice], None).unwrap();
        let err = measures.add(&target, &target, &mut ValSums::default()).unwrap_err().to_string();
        assert!(err.contains("0.5"), "{err}");
    }

    #[test]
    fn ssim_and_ms_ssim_are_per_slice_and_channel() {
        // Two channels of one 16×16 slice: the first reconstructed exactly (SSIM 1), the second
        // with less contrast; the sample's value is the mean of the two channels' SSIM.
        let wave: Vec<f32> =
            (0..256).map(|i| 0.5 + 0.4 * ((i % 16) as f32 * 0.7).sin() * ((i / 16) as f32 * 0.3).cos()).collect();
        let other: Vec<f32> = wave.iter().map(|v| 0.3 * v + 0.35).collect();
        let target = tensor(wave.iter().chain(&wave).copied().collect(), &[1, 2, 16, 16]);
        let reconstruction = tensor(wave.iter().chain(&other).copied().collect(), &[1, 2, 16, 16]);
        let measures = Measures::new(&[Measure::Psnr, Measure::Ssim, Measure::MsSsim], None).unwrap();
        let mut sums = ValSums::default();
        measures.add(&target, &reconstruction, &mut sums).unwrap();
        let side = [16usize, 16];
        let image = |v| Image::new(v, &side).unwrap();
        let second = ssim(image(&other), image(&wave), &SsimConfig::default()).unwrap();
        assert!((0.1..0.9).contains(&second), "the second channel is imperfect: {second}");
        assert!((mean(&sums, "ssim") - (1.0 + second) / 2.0).abs() < 1e-9, "{sums:?}");
        // 16 px allow one MS-SSIM scale, which is SSIM.
        assert!((mean(&sums, "ms_ssim") - mean(&sums, "ssim")).abs() < 1e-9, "{sums:?}");
        assert!(mean(&sums, "psnr") < PSNR_CAP_DB);
    }

    #[test]
    fn volumes_are_scored_whole_and_identical_ones_perfectly() {
        let values: Vec<f32> = (0..2 * 12 * 12 * 12).map(|i| ((i * 7919) % 101) as f32 / 100.0).collect();
        let volumes = tensor(values, &[2, 1, 12, 12, 12]);
        let measures = Measures::new(&[Measure::Psnr, Measure::Ssim, Measure::MsSsim], None).unwrap();
        let mut sums = ValSums::default();
        measures.add(&volumes, &volumes, &mut sums).unwrap();
        assert_eq!(mean(&sums, "psnr"), PSNR_CAP_DB);
        assert!((mean(&sums, "ssim") - 1.0).abs() < 1e-9);
        assert!((mean(&sums, "ms_ssim") - 1.0).abs() < 1e-9);
        assert_eq!(sums.extra["ssim"].1, 2, "one value per volume");
    }

    #[test]
    fn lpips_without_its_network_is_refused() {
        assert!(Measures::new(&[Measure::Lpips], None).unwrap_err().contains("lpips_weights"));
    }
}
