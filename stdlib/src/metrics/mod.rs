//! Evaluation metrics, each matching a named reference implementation (the tests say which, and
//! keep the script that computed their reference values beside them).
//!
//! - [`image`]: PSNR, SSIM and MS-SSIM in 2D and 3D (MONAI's definitions).
//! - [`lpips`]: LPIPS with the AlexNet-lin network of the `lpips` package, 2D and chunked 3D.
//! - [`distribution`] and [`features`]: FID and KID over features of a user-supplied network.
//! - [`segmentation`]: Dice, IoU, precision, recall and HD95 on binary masks.
//! - [`regional`]: per-tumour and tumour-versus-background metrics.
//! - [`weights`]: checking the user-supplied weights files of those networks.

pub mod distribution;
pub mod features;
pub mod image;
pub mod lpips;
pub mod regional;
pub mod segmentation;
pub mod weights;
