//! File input and output for volumes. Everything that turns a [`Volume`](crate::data::volume::Volume)
//! into bytes on disk, or bytes back into a volume, lives here, so that the conventions a file
//! format imposes (axis order, affine, units, scaling) are decided once and never re-derived by a
//! caller.

pub mod nifti;
pub mod orientation;
pub mod preview;
