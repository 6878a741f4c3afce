//! Neural-network building blocks on Candle, for 2D slices and 3D volumes alike. Layers follow
//! Candle's conventions (`new(vb, &cfg)`, `vb.pp("name")` mirroring checkpoint names,
//! `impl Module`); every trainable variable must receive a gradient (see
//! `../shared/docs/candle-notes.md` for the Candle ops that silently drop them).

pub mod alexnet;
pub mod attention;
pub mod autoencoder;
mod channel_affine;
pub mod conv;
mod conv_grad;
pub mod dit;
pub mod embed;
pub mod norm;
pub mod patchgan;
pub mod resample;
pub mod resnet;
pub mod unet;
