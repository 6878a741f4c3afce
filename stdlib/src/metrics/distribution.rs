//! Distribution metrics over feature sets ([`Features`], from `metrics::features`): FID and KID,
//! for 2D image sets and, per axis, for the 2.5D slices of volumes.
//!
//! **FID** (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
//! Equilibrium", NeurIPS 2017) is the Fréchet distance between Gaussians fitted to the two sets,
//! `|μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂)`, as pytorch-fid's `calculate_frechet_distance`
//! computes it. The statistics are pytorch-fid's: the mean and the unbiased covariance
//! (`np.cov(rowvar=False)`, divisor `n − 1`), in f64 from the f32 features.
//!
//! **The trace term, done properly.** pytorch-fid takes `scipy.linalg.sqrtm` of the product
//! `Σ₁Σ₂`, which is not symmetric, may not be diagonalisable in floating point, and comes back with
//! a complex part. Here: `Σ₁ = U Λ Uᵀ` (symmetric eigendecomposition), `B = U √Λ` over the
//! eigenvalues that are numerically non-zero, and `tr √(Σ₁Σ₂) = Σᵢ √μᵢ` over the eigenvalues `μ`
//! of the symmetric positive semi-definite `M = Bᵀ Σ₂ B`. `M` is orthogonally similar to
//! `√Σ₁ Σ₂ √Σ₁`, whose eigenvalues are those of `Σ₁Σ₂` (`XY` and `YX` share them), so the sum is
//! the trace of the principal square root. An eigenvalue counts as zero below
//! `d · ε · λ_max` (`ε` = f64's machine epsilon, NumPy's `matrix_rank` tolerance): these are
//! rounding noise, and taking their square roots (√1e-17 ≈ 3e-9 each) is what makes SciPy's
//! result wrong by about 1e-8 when there are fewer samples than features (the tests compare both
//! against exact 40-digit arithmetic).
//!
//! **pytorch-fid's fallback** for a near-singular product (when `sqrtm` returns non-finite values
//! it adds `eps·I`, `eps = 1e-6`, to both covariances and takes the square root again) is kept
//! for the same situation here: if the eigendecomposition does not converge or yields non-finite
//! values, the trace term is recomputed from `Σ₁ + εI` and `Σ₂ + εI` with `ε` =
//! [`FID_FALLBACK_EPS`], while `tr Σ₁ + tr Σ₂` stay unregularised, exactly as pytorch-fid does,
//! and [`Fid::regularised`] says so. Rank deficiency itself (fewer samples than features, the
//! usual case for small reference sets with 2048 features) needs no fallback: the symmetric form
//! handles it exactly. The FID is not clamped at 0; identical sets give 0 up to rounding.
//!
//! **KID** (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018) is the squared maximum mean
//! discrepancy with the cubic polynomial kernel `k(x, y) = (x·y / d + 1)³`, estimated without bias
//! (the diagonal of the within-set kernel matrices left out) on random subsets, as torchmetrics'
//! `KernelInceptionDistance` does: [`KidConfig::default`] has its defaults, 100 subsets of 1000;
//! the result is the mean over subsets and their standard deviation (population, torchmetrics'
//! `std(unbiased=False)`). Each subset draws `subset_size` features of each set without
//! replacement (a random permutation's prefix, like torchmetrics' `randperm`). Two differences
//! from torchmetrics, both deliberate:
//! - where torchmetrics raises an error when a set is smaller than `subset_size`, the subset size
//!   is clamped to the smaller set (`min(subset_size, n_real, n_fake)`, at least 2), and
//!   [`Kid::subset_size`] reports the size used;
//! - subsets come from medgen's seeded generator ([`Stream`], purpose `Validation`, seed
//!   [`KidConfig::seed`]), not from torch's global generator, so the subsets, and hence the mean
//!   and standard deviation, differ from a torchmetrics run by sampling noise. With subsets that
//!   hold whole sets the estimate is deterministic and equals torchmetrics' `poly_mmd`.
//!
//! **Volumes (2.5D)**: FID and KID are computed per slicing axis, between the two sets' pooled
//! slices along that axis ([`VolumeFeatures::pool`]), and combined as the mean of the three axes'
//! values, so each axis counts equally however many slices it has (as 3D LPIPS combines its axes).
//! For KID each axis draws its subsets from a fresh stream with the same seed, so an axis' value
//! equals [`kid`] on that axis' features alone.

use std::fmt;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};

use crate::metrics::features::{Features, VolumeFeatures};
use crate::metrics::lpips::SliceAxis;
use crate::train::rng::{Purpose, Stream};

/// pytorch-fid's `eps`: added to both covariances' diagonals when the trace term cannot be
/// computed from them as they are.
pub const FID_FALLBACK_EPS: f64 = 1e-6;

/// torchmetrics' `KernelInceptionDistance` default number of subsets.
pub const KID_SUBSETS: usize = 100;

/// torchmetrics' `KernelInceptionDistance` default subset size.
pub const KID_SUBSET_SIZE: usize = 1000;

/// Rows of centred features per covariance update: bounds the f64 copy of a large feature set.
const COVARIANCE_BLOCK_ROWS: usize = 4096;

/// The mean and unbiased covariance of a feature set, in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianStats {
    count: usize,
    mean: Vec<f64>,
    /// `dim × dim`, symmetric.
    covariance: Vec<f64>,
}

impl GaussianStats {
    /// pytorch-fid's statistics of `features`: `np.mean(axis=0)` and `np.cov(rowvar=False)`.
    pub fn from_features(features: &Features) -> Result<Self, DistributionError> {
        check_finite(features)?;
        let (count, dim) = (features.rows(), features.dim());
        if count < 2 {
            return Err(DistributionError::TooFewSamples { metric: "FID", count, needed: 2 });
        }
        let mut mean = vec![0.0f64; dim];
        for i in 0..count {
            mean.iter_mut().zip(features.row(i)).for_each(|(m, &x)| *m += f64::from(x));
        }
        mean.iter_mut().for_each(|m| *m /= count as f64);

        let mut covariance = Mat::<f64>::zeros(dim, dim);
        for start in (0..count).step_by(COVARIANCE_BLOCK_ROWS) {
            let rows = COVARIANCE_BLOCK_ROWS.min(count - start);
            let centred = Mat::from_fn(rows, dim, |i, j| f64::from(features.row(start + i)[j]) - mean[j]);
            let scale = 1.0 / (count - 1) as f64;
            matmul(covariance.as_mut(), Accum::Add, centred.transpose(), centred.as_ref(), scale, Par::rayon(0));
        }
        let covariance = symmetric_values(covariance.as_ref());
        Ok(Self { count, mean, covariance })
    }

    /// Statistics from their parts (e.g. precomputed for a reference set): `mean` of length `d`,
    /// `covariance` `d × d` row-major and symmetric, all finite.
    pub fn new(count: usize, mean: Vec<f64>, covariance: Vec<f64>) -> Result<Self, DistributionError> {
        let dim = mean.len();
        if covariance.len() != dim * dim {
            return Err(DistributionError::CovarianceShape { dim, values: covariance.len() });
        }
        let asymmetric = (0..dim).any(|i| (0..i).any(|j| covariance[i * dim + j] != covariance[j * dim + i]));
        if asymmetric || mean.iter().chain(&covariance).any(|v| !v.is_finite()) {
            return Err(DistributionError::InvalidCovariance);
        }
        Ok(Self { count, mean, covariance })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// `dim × dim`, row-major (and column-major: it is symmetric).
    pub fn covariance(&self) -> &[f64] {
        &self.covariance
    }

    fn covariance_matrix(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.covariance, self.dim(), self.dim())
    }

    fn covariance_trace(&self) -> f64 {
        (0..self.dim()).map(|i| self.covariance[i * self.dim() + i]).sum()
    }
}

/// `(A + Aᵀ) / 2` of a square matrix, column by column.
fn symmetric_values(a: MatRef<'_, f64>) -> Vec<f64> {
    let n = a.nrows();
    (0..n).flat_map(|j| (0..n).map(move |i| 0.5 * (a[(i, j)] + a[(j, i)]))).collect()
}

/// A Fréchet distance, and whether pytorch-fid's fallback was needed; see the module
/// documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fid {
    pub value: f64,
    /// The trace term was computed from `Σ + εI` (pytorch-fid's fallback).
    pub regularised: bool,
}

/// The FID between two feature sets.
pub fn fid(a: &Features, b: &Features) -> Result<Fid, DistributionError> {
    check_dims(a.dim(), b.dim())?;
    frechet_distance(&GaussianStats::from_features(a)?, &GaussianStats::from_features(b)?)
}

/// The Fréchet distance between two Gaussians (pytorch-fid's `calculate_frechet_distance`).
pub fn frechet_distance(a: &GaussianStats, b: &GaussianStats) -> Result<Fid, DistributionError> {
    check_dims(a.dim(), b.dim())?;
    let (trace, regularised) = match trace_sqrt_product(a, b) {
        Ok(trace) => (trace, false),
        Err(_) => (trace_sqrt_product(&a.regularised(), &b.regularised())?, true),
    };
    let mean_term: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y) * (x - y)).sum();
    let value = mean_term + a.covariance_trace() + b.covariance_trace() - 2.0 * trace;
    Ok(Fid { value, regularised })
}

impl GaussianStats {
    /// The same statistics with [`FID_FALLBACK_EPS`] added to the covariance's diagonal.
    fn regularised(&self) -> Self {
        let mut covariance = self.covariance.clone();
        let dim = self.dim();
        (0..dim).for_each(|i| covariance[i * dim + i] += FID_FALLBACK_EPS);
        Self { count: self.count, mean: self.mean.clone(), covariance }
    }
}

/// `tr √(Σ₁Σ₂)` of the two covariances by the symmetric form; see the module documentation.
/// Fails (without fallback) when an eigendecomposition does not converge or the result is not
/// finite.
pub fn trace_sqrt_product(a: &GaussianStats, b: &GaussianStats) -> Result<f64, DistributionError> {
    check_dims(a.dim(), b.dim())?;
    let dim = a.dim();
    let eigen = a.covariance_matrix().self_adjoint_eigen(Side::Lower).map_err(|_| DistributionError::NoSquareRoot)?;
    let lambda = finite(eigen.S().column_vector().iter().copied().collect())?;
    let kept = significant(&lambda, dim);
    if kept.is_empty() {
        return Ok(0.0);
    }
    let u = eigen.U();
    let root = Mat::from_fn(dim, kept.len(), |i, k| u[(i, kept[k])] * lambda[kept[k]].sqrt());
    let mut sigma_root = Mat::<f64>::zeros(dim, kept.len());
    matmul(sigma_root.as_mut(), Accum::Replace, b.covariance_matrix(), root.as_ref(), 1.0, Par::rayon(0));
    let mut product = Mat::<f64>::zeros(kept.len(), kept.len());
    matmul(product.as_mut(), Accum::Replace, root.transpose(), sigma_root.as_ref(), 1.0, Par::rayon(0));
    let symmetric = symmetric_values(product.as_ref());
    let product = MatRef::from_column_major_slice(&symmetric, kept.len(), kept.len());
    let mu = finite(product.self_adjoint_eigenvalues(Side::Lower).map_err(|_| DistributionError::NoSquareRoot)?)?;
    Ok(significant(&mu, dim).iter().map(|&i| mu[i].sqrt()).sum())
}

/// `eigenvalues` if all are finite; otherwise the square root cannot be taken.
fn finite(eigenvalues: Vec<f64>) -> Result<Vec<f64>, DistributionError> {
    if eigenvalues.iter().all(|v| v.is_finite()) {
        Ok(eigenvalues)
    } else {
        Err(DistributionError::NoSquareRoot)
    }
}

/// The indices of the eigenvalues above `dim · ε · max` (NumPy's `matrix_rank` tolerance): the
/// rest, negative ones included, are rounding noise around 0.
fn significant(eigenvalues: &[f64], dim: usize) -> Vec<usize> {
    let max = eigenvalues.iter().copied().fold(0.0f64, f64::max);
    let tolerance = dim as f64 * f64::EPSILON * max;
    (0..eigenvalues.len()).filter(|&i| eigenvalues[i] > tolerance).collect()
}

/// KID's subsets; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KidConfig {
    /// Subsets to average over, at least 1.
    pub subsets: usize,
    /// Features drawn from each set per subset; clamped to the smaller set.
    pub subset_size: usize,
    /// The seed of the subset sampler.
    pub seed: u64,
}

impl Default for KidConfig {
    /// torchmetrics' defaults: 100 subsets of 1000; seed 0.
    fn default() -> Self {
        Self { subsets: KID_SUBSETS, subset_size: KID_SUBSET_SIZE, seed: 0 }
    }
}

/// A KID estimate over subsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    /// The mean of the subsets' unbiased MMD² estimates.
    pub mean: f64,
    /// Their standard deviation (population, as torchmetrics).
    pub std: f64,
    pub subsets: usize,
    /// The subset size used: `min(subset_size, n_real, n_fake)`.
    pub subset_size: usize,
}

/// The KID between `real` and `fake` features; see the module documentation.
pub fn kid(real: &Features, fake: &Features, config: &KidConfig) -> Result<Kid, DistributionError> {
    check_dims(real.dim(), fake.dim())?;
    check_finite(real)?;
    check_finite(fake)?;
    if config.subsets == 0 {
        return Err(DistributionError::NoSubsets);
    }
    let size = config.subset_size.min(real.rows()).min(fake.rows());
    if size < 2 {
        let count = real.rows().min(fake.rows()).min(config.subset_size);
        return Err(DistributionError::TooFewSamples { metric: "KID", count, needed: 2 });
    }
    let mut stream = Stream::new(config.seed, Purpose::Validation);
    let estimates: Vec<f64> = (0..config.subsets)
        .map(|_| {
            let x = stream.permutation(real.rows());
            let y = stream.permutation(fake.rows());
            unbiased_mmd(&gather(real, &x[..size]), &gather(fake, &y[..size]))
        })
        .collect();
    let n = estimates.len() as f64;
    let mean = estimates.iter().sum::<f64>() / n;
    let variance = estimates.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>() / n;
    Ok(Kid { mean, std: variance.sqrt(), subsets: config.subsets, subset_size: size })
}

/// torchmetrics' `poly_mmd` of two whole sets of equal size: the unbiased MMD² with the cubic
/// polynomial kernel.
pub fn polynomial_mmd(x: &Features, y: &Features) -> Result<f64, DistributionError> {
    check_dims(x.dim(), y.dim())?;
    check_finite(x)?;
    check_finite(y)?;
    if x.rows() != y.rows() {
        return Err(DistributionError::UnequalSets { first: x.rows(), second: y.rows() });
    }
    if x.rows() < 2 {
        return Err(DistributionError::TooFewSamples { metric: "KID", count: x.rows(), needed: 2 });
    }
    let all: Vec<usize> = (0..x.rows()).collect();
    Ok(unbiased_mmd(&gather(x, &all), &gather(y, &all)))
}

/// The rows `rows` of `features` as an f64 matrix.
fn gather(features: &Features, rows: &[usize]) -> Mat<f64> {
    Mat::from_fn(rows.len(), features.dim(), |i, j| f64::from(features.row(rows[i])[j]))
}

/// torchmetrics' `maximum_mean_discrepancy` of the cubic kernel matrices of `x` and `y`
/// (`m × d` each): `(Σ_{i≠j} k(xᵢ, xⱼ) + Σ_{i≠j} k(yᵢ, yⱼ)) / (m(m − 1)) − 2 Σ_{i,j} k(xᵢ, yⱼ) / m²`.
fn unbiased_mmd(x: &Mat<f64>, y: &Mat<f64>) -> f64 {
    let m = x.nrows() as f64;
    let gamma = 1.0 / x.ncols() as f64;
    let kernel_sum = |a: &Mat<f64>, b: &Mat<f64>, skip_diagonal: bool| {
        let mut gram = Mat::<f64>::zeros(a.nrows(), b.nrows());
        matmul(gram.as_mut(), Accum::Replace, a.as_ref(), b.transpose(), 1.0, Par::rayon(0));
        let mut sum = 0.0;
        for j in 0..gram.ncols() {
            for i in 0..gram.nrows() {
                if !(skip_diagonal && i == j) {
                    let t = gram[(i, j)] * gamma + 1.0;
                    sum += t * t * t;
                }
            }
        }
        sum
    };
    let within = kernel_sum(x, x, true) + kernel_sum(y, y, true);
    within / (m * (m - 1.0)) - 2.0 * kernel_sum(x, y, false) / (m * m)
}

/// FID along one slicing axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxisFid {
    pub axis: SliceAxis,
    pub fid: Fid,
}

/// 2.5D FID of two volume sets.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeFid {
    /// Depth, height and width, in that order.
    pub axes: Vec<AxisFid>,
    /// The mean of the three axes' FIDs.
    pub combined: f64,
}

/// The 2.5D FID between pooled volume features ([`VolumeFeatures::pool`]).
pub fn fid_2p5d(real: &VolumeFeatures, fake: &VolumeFeatures) -> Result<VolumeFid, DistributionError> {
    let axes = SliceAxis::ALL
        .iter()
        .map(|&axis| Ok(AxisFid { axis, fid: fid(real.axis(axis), fake.axis(axis))? }))
        .collect::<Result<Vec<_>, DistributionError>>()?;
    let combined = axes.iter().map(|a| a.fid.value).sum::<f64>() / axes.len() as f64;
    Ok(VolumeFid { axes, combined })
}

/// KID along one slicing axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxisKid {
    pub axis: SliceAxis,
    pub kid: Kid,
}

/// 2.5D KID of two volume sets.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeKid {
    /// Depth, height and width, in that order.
    pub axes: Vec<AxisKid>,
    /// The mean of the three axes' KID means.
    pub combined: f64,
}

/// The 2.5D KID between pooled volume features; each axis is [`kid`] with `config`.
pub fn kid_2p5d(
    real: &VolumeFeatures,
    fake: &VolumeFeatures,
    config: &KidConfig,
) -> Result<VolumeKid, DistributionError> {
    let axes = SliceAxis::ALL
        .iter()
        .map(|&axis| Ok(AxisKid { axis, kid: kid(real.axis(axis), fake.axis(axis), config)? }))
        .collect::<Result<Vec<_>, DistributionError>>()?;
    let combined = axes.iter().map(|a| a.kid.mean).sum::<f64>() / axes.len() as f64;
    Ok(VolumeKid { axes, combined })
}

fn check_dims(first: usize, second: usize) -> Result<(), DistributionError> {
    if first == second {
        Ok(())
    } else {
        Err(DistributionError::DimMismatch { first, second })
    }
}

fn check_finite(features: &Features) -> Result<(), DistributionError> {
    match features.values().iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(DistributionError::NonFinite { row: i / features.dim(), column: i % features.dim() }),
    }
}

/// Why a distribution metric could not be computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DistributionError {
    /// A set (or the subset size) is below the metric's minimum.
    TooFewSamples { metric: &'static str, count: usize, needed: usize },
    /// The two sets' features have different dimensions.
    DimMismatch { first: usize, second: usize },
    /// `polynomial_mmd` compares sets of one size.
    UnequalSets { first: usize, second: usize },
    /// A feature is NaN or infinite.
    NonFinite { row: usize, column: usize },
    /// Statistics whose covariance is not `dim × dim`.
    CovarianceShape { dim: usize, values: usize },
    /// Statistics whose covariance is not symmetric, or with non-finite values.
    InvalidCovariance,
    /// KID with zero subsets.
    NoSubsets,
    /// The trace term could not be computed even with pytorch-fid's fallback.
    NoSquareRoot,
}

impl fmt::Display for DistributionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DistributionError::TooFewSamples { metric, count, needed } => {
                write!(f, "{metric} needs at least {needed} feature vectors per set, got {count}")
            }
            DistributionError::DimMismatch { first, second } => {
                write!(f, "feature sets of dimensions {first} and {second} cannot be compared; use one feature network")
            }
            DistributionError::UnequalSets { first, second } => {
                write!(f, "polynomial MMD compares sets of one size, got {first} and {second} feature vectors")
            }
            DistributionError::NonFinite { row, column } => write!(
                f,
                "feature {column} of image {row} is not finite: the images (or the weights) hold NaN or infinite values"
            ),
            DistributionError::CovarianceShape { dim, values } => {
                write!(f, "a covariance of {values} values does not fit a mean of length {dim} ({dim}x{dim})")
            }
            DistributionError::InvalidCovariance => write!(f, "the covariance is not symmetric or not finite"),
            DistributionError::NoSubsets => write!(f, "KID needs at least one subset"),
            DistributionError::NoSquareRoot => write!(
                f,
                "FID: no square root of the covariance product, even with {FID_FALLBACK_EPS} added to the diagonals"
            ),
        }
    }
}

impl std::error::Error for DistributionError {}
