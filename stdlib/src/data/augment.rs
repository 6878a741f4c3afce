//! Clean-image augmentation presets (`augment = none | diffusion | vae`), applied to training
//! batches only, with the augmentation stream (so validation and the training noise never move).
//!
//! Seed pitfall 20: compression models want aggressive augmentation, diffusion models a
//! conservative one — a denoiser learns to *generate* whatever distortions it was shown.
//!
//! - `diffusion`: a left-right flip (the last axis, width) with probability 1/2 per sample. Brains
//!   are near-symmetric left to right; nothing else is physically plausible for MRI.
//! - `vae`: the same flip, then per sample an intensity scale in [0.9, 1.1] and shift in
//!   [-0.05, 0.05], clamped back to [0, 1]. The compressor learns to reproduce contrast it has
//!   not seen exactly, the kind of variation between scanners.
//!
//! Flips apply to the images and the condition mask together, so a mask stays on its tumour.
//! Intensity changes apply to the images only.

use candle_core::{DType, Result, Tensor, D};

use crate::data::loader::Batch;
use crate::train::rng::Stream;

/// Largest relative intensity scaling of the `vae` preset.
const SCALE_RANGE: f64 = 0.1;
/// Largest intensity shift of the `vae` preset.
const SHIFT_RANGE: f64 = 0.05;

/// A clean-image augmentation preset, by its name in the language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    None,
    Diffusion,
    Vae,
}

impl Preset {
    /// The batch augmented (images and condition); unchanged for `none`.
    pub fn apply(self, batch: &Batch, stream: &mut Stream) -> Result<(Tensor, Option<Tensor>)> {
        let images = &batch.images;
        if self == Preset::None {
            return Ok((images.clone(), batch.condition.clone()));
        }
        let device = images.device();
        let b = images.dim(0)?;
        let flips = stream.uniform(b, device)?.lt(0.5)?.to_dtype(DType::F32)?;
        let images = flip_width(images, &flips)?;
        let condition = batch.condition.as_ref().map(|c| flip_width(c, &flips)).transpose()?;
        if self == Preset::Diffusion {
            return Ok((images, condition));
        }
        let scale = stream.uniform(b, device)?.affine(2.0 * SCALE_RANGE, 1.0 - SCALE_RANGE)?;
        let shift = stream.uniform(b, device)?.affine(2.0 * SHIFT_RANGE, -SHIFT_RANGE)?;
        let per_sample = |t: Tensor| -> Result<Tensor> {
            let mut shape = vec![b];
            shape.extend(std::iter::repeat_n(1, images.rank() - 1));
            t.reshape(shape)
        };
        let images =
            images.broadcast_mul(&per_sample(scale)?)?.broadcast_add(&per_sample(shift)?)?.clamp(0f32, 1f32)?;
        Ok((images, condition))
    }
}

/// Reverses the last axis of the samples whose entry in `flips` (`[B]`, 0 or 1) is 1.
fn flip_width(x: &Tensor, flips: &Tensor) -> Result<Tensor> {
    let width = x.dim(D::Minus1)?;
    let reversed: Vec<u32> = (0..width as u32).rev().collect();
    let index = Tensor::from_vec(reversed, width, x.device())?;
    let flipped = x.index_select(&index, x.rank() - 1)?;
    let mut shape = vec![x.dim(0)?];
    shape.extend(std::iter::repeat_n(1, x.rank() - 1));
    let m = flips.reshape(shape)?;
    flipped.broadcast_mul(&m)? + x.broadcast_mul(&(1.0 - m)?)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::rng::Purpose;
    use candle_core::Device;

    fn batch() -> Batch {
        let images = Tensor::arange(0f32, 16.0, &Device::Cpu).unwrap().affine(1.0 / 16.0, 0.0).unwrap();
        let images = images.reshape((4, 1, 2, 2)).unwrap();
        let condition = Some(Tensor::from_vec([1f32, 0., 0., 0.].repeat(4), (4, 1, 2, 2), &Device::Cpu).unwrap());
        Batch { images, condition, size_bins: None, mode_id: None, origins: Vec::new() }
    }

    #[test]
    fn a_flip_moves_image_and_mask_together() {
        let b = batch();
        let mut stream = Stream::new(1, Purpose::Augmentation);
        let (images, condition) = Preset::Diffusion.apply(&b, &mut stream).unwrap();
        let rows = |t: &Tensor| t.flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
        let (images, mask, original) = (rows(&images), rows(&condition.unwrap()), rows(&b.images));
        let mut flipped = 0;
        for i in 0..4 {
            let o = &original[i];
            if mask[i] == [0.0, 1.0, 0.0, 0.0] {
                flipped += 1;
                assert_eq!(images[i], vec![o[1], o[0], o[3], o[2]]);
            } else {
                assert_eq!(mask[i], [1.0, 0.0, 0.0, 0.0]);
                assert_eq!(&images[i], o);
            }
        }
        assert!((1..4).contains(&flipped), "4 coin flips gave {flipped} flips with this seed");
    }

    #[test]
    fn the_vae_preset_changes_intensity_within_bounds() {
        let b = batch();
        let mut stream = Stream::new(2, Purpose::Augmentation);
        let (images, _) = Preset::Vae.apply(&b, &mut stream).unwrap();
        let values = images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_ne!(values, b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let (same, _) = Preset::None.apply(&b, &mut stream).unwrap();
        assert_eq!(
            same.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
