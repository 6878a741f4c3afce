//! NIfTI-1 volumes (`.nii`, `.nii.gz`): the one reader, the one writer and the one mapping
//! between medgen's spacing and a NIfTI affine.
//!
//! Why this module is shaped the way it is:
//!
//! - **One affine function pair** (seed pitfall 82). A [`Volume`] keeps its data in
//!   (depth, height, width) order with width fastest, which is byte for byte NIfTI's order with
//!   x = width, y = height, z = depth. The spacing travels in the same (depth, height, width)
//!   order. The only code that knows NIfTI's axes are the other way round is
//!   [`spacing_to_affine`] and [`affine_to_spacing`]; the reader and the writer go through them,
//!   so an anisotropic in-plane spacing can never be silently transposed.
//! - **One writer** (seed pitfall 81). [`save_nifti_at`] is the only function that writes a
//!   NIfTI file: float32 data, a diagonal sform (code 1) whose translation is the volume's
//!   [`Origin`] (the world position of voxel (0, 0, 0)), a qform (code 1, no rotation) with the
//!   same diagonal and the same offset, pixdim from the same affine, units mm. [`save_nifti`] is
//!   that writer at origin 0, for volumes that belong to no patient. Callers never assemble
//!   headers themselves.
//! - **The patient's place in the world survives**. [`load_nifti_ras`] returns the
//!   world position of the RAS volume's voxel (0, 0, 0) with it, [`Volume::fitted_origin`]
//!   follows a crop or pad, and [`save_nifti_at`] writes it: a volume medgen writes from a
//!   patient's file overlays that file in a viewer.
//! - **Atomic writes**. The file is written under a temporary name in the target directory,
//!   flushed to disk, and renamed over the target, so a crash or a full disk leaves either the
//!   old file or the complete new one, never a half-written volume that a later stage would read
//!   as truncated (or, worse, as a shorter valid file).
//! - **Errors are data**. Every failure is a [`NiftiError`] naming the file and what is wrong
//!   with it; nothing here panics on a bad file.
//!
//! Reading accepts any real numeric datatype, applies `scl_slope`/`scl_inter` the way nibabel
//! does (in f64, then rounded once to f32), takes spacing from the sform, else the qform, else
//! pixdim, and refuses volumes with NaN or infinite voxels. Whether a file is gzip-compressed is
//! decided by its first bytes, not its name.
//!
//! The module also holds the two per-voxel steps every loader applies right after reading:
//! [`binarize_gt`] for ground-truth masks (seed pitfall 36) and [`normalize_intensity`] for
//! images.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ::nifti::writer::WriterOptions;
use ::nifti::{InMemNiftiVolume, IntoNdArray, NiftiHeader, NiftiType, Unit, XForm};
use flate2::bufread::MultiGzDecoder;
use ndarray::ArrayView3;

use crate::data::volume::{Origin, Shape, Spacing, Volume};

/// Where `dim` starts in a NIfTI-1 header.
const DIM_OFFSET: usize = 40;
/// Where the magic string (`n+1`, or `ni1` for a header-only file) starts in a NIfTI-1 header.
const MAGIC_OFFSET: usize = 344;

/// Size of a NIfTI-1 header in bytes (`sizeof_hdr`).
const HEADER_BYTES: u64 = 348;
/// `sizeof_hdr` of a NIfTI-2 header, recognised only to say so.
const NIFTI2_HEADER_BYTES: i32 = 540;
/// Header plus the 4-byte extension flag: where voxel data starts when there are no extensions.
const MIN_VOX_OFFSET: u64 = 352;
/// NIfTI-1 stores each dimension as a signed 16-bit integer.
const MAX_AXIS: usize = i16::MAX as usize;
/// Below this volume of the parallelepiped spanned by an affine's unit-length axes, the axes are
/// taken as linearly dependent (1 for perpendicular axes, 0 for dependent ones).
const MIN_AFFINE_VOLUME_RATIO: f64 = 1e-6;

/// Threshold that turns a ground-truth mask into {0, 1}: a voxel is foreground when its value is
/// strictly greater than this.
///
/// Seed pitfall 36: ground truth is binarised with a very low threshold so that every positive
/// voxel survives, including the fractional values resampling or interpolation leaves on a
/// lesion's border. Generated masks use the higher [`BINARY_THRESHOLD_GENERATED`], which filters
/// the network's low-level noise.
pub const BINARY_THRESHOLD_GT: f32 = 0.01;

/// The threshold of [`binarize_seg`] for generated masks, whose values spread over [0, 1].
pub const BINARY_THRESHOLD_GENERATED: f32 = 0.5;

/// Default (low, high) percentiles for [`normalize_intensity`]: clipping the darkest and
/// brightest 0.5 % of voxels removes isolated outliers (hot pixels, vessels in MR) that would
/// otherwise squeeze the tissue contrast into a small part of [0, 1], while leaving the body of
/// the histogram untouched.
pub const INTENSITY_PERCENTILES: (f64, f64) = (0.5, 99.5);

/// A failed NIfTI read or write: which file, and what is wrong.
#[derive(Debug)]
pub struct NiftiError {
    /// The file being read or written, as the caller gave it.
    pub path: PathBuf,
    /// What is wrong with it.
    pub kind: NiftiErrorKind,
}

/// What went wrong with a NIfTI file. `Display` gives the problem without the file name;
/// [`NiftiError`]'s `Display` prefixes the path.
#[derive(Debug)]
pub enum NiftiErrorKind {
    /// The file does not exist.
    NotFound,
    /// The file exists but could not be opened or read (permissions, I/O error, corrupt gzip).
    Unreadable(io::Error),
    /// The path names a directory, a FIFO, a socket or a device: opening a FIFO would block until
    /// something writes to it, and a device may never end.
    NotARegularFile { what: &'static str },
    /// The bytes are not a single-file NIfTI-1 image (too short for a header, bad magic, wrong
    /// header size).
    NotNifti(String),
    /// A NIfTI-1 header whose fields are inconsistent or unsupported (dimensions, units,
    /// header-only `.hdr` files).
    BadHeader(String),
    /// A datatype code that is not a real number type (complex, RGB, float128, unknown).
    UnsupportedDatatype { code: i16 },
    /// Not a 3D volume, nor a 4D one with a single time point; `dims` are NIfTI's (x, y, z, ...).
    UnsupportedDimensionality { dims: Vec<usize> },
    /// The voxel data ends early: `found` of the `expected` bytes are there.
    Truncated { expected: usize, found: usize },
    /// Some voxels are NaN or infinite after scaling (or beyond the range of f32).
    NonFinite { nan: usize, infinite: usize, total: usize },
    /// An affine that does not define a 3D grid: non-finite entries, a zero-length axis, or
    /// linearly dependent axes.
    DegenerateAffine { affine: Box<[[f64; 4]; 4]>, reason: &'static str },
    /// Voxel axes not aligned with the world's (reading for a dataset, `load_nifti_ras`):
    /// `direction[world][voxel]`.
    Oblique { direction: Box<super::orientation::Direction> },
    /// A file name that ends in neither `.nii` nor `.nii.gz` (writing only).
    UnsupportedExtension,
    /// The volume's data length does not match its shape (writing only).
    ShapeMismatch { shape: Shape, voxels: usize },
    /// An axis of length 0 or longer than NIfTI-1 can store (writing only).
    ShapeTooLarge { shape: Shape },
    /// A spacing that is not finite and positive (writing only).
    InvalidSpacing { spacing: Spacing },
    /// An origin that is not finite, even as the header's f32 (writing only).
    InvalidOrigin { origin: Origin },
    /// The file (or its temporary) could not be written, synced or renamed.
    Unwritable(io::Error),
}

impl fmt::Display for NiftiErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use NiftiErrorKind::*;
        match self {
            NotFound => write!(f, "no such file"),
            Unreadable(err) => write!(f, "cannot be read: {err}"),
            NotARegularFile { what } => write!(f, "is {what}, not a regular file"),
            NotNifti(reason) => write!(f, "not a NIfTI-1 file: {reason}"),
            BadHeader(reason) => write!(f, "invalid NIfTI-1 header: {reason}"),
            UnsupportedDatatype { code } => {
                write!(f, "unsupported datatype code {code}: only real integer and float voxels can be read")
            }
            UnsupportedDimensionality { dims } => write!(
                f,
                "unsupported dimensionality {} (dims {dims:?}): only 3D volumes, or 4D with a single volume, are read",
                dims.len()
            ),
            Truncated { expected, found } => {
                write!(f, "truncated: voxel data has {found} of the {expected} bytes the header announces")
            }
            NonFinite { nan, infinite, total } => {
                write!(f, "{} of {total} voxels are not finite ({nan} NaN, {infinite} infinite)", nan + infinite)
            }
            DegenerateAffine { affine, reason } => write!(f, "degenerate affine ({reason}): {affine:?}"),
            Oblique { direction } => write!(
                f,
                "oblique voxel grid (axis directions {direction:?}): medgen reorients by permuting and flipping \
                 axes, never by interpolating; resample the volume to an axis-aligned grid first"
            ),
            UnsupportedExtension => write!(f, "file name must end in .nii or .nii.gz"),
            ShapeMismatch { shape, voxels } => write!(
                f,
                "volume of shape {shape:?} (depth, height, width) has {voxels} voxels instead of {}",
                shape.iter().product::<usize>()
            ),
            ShapeTooLarge { shape } => {
                write!(f, "shape {shape:?} (depth, height, width) needs every axis in 1..={MAX_AXIS} for NIfTI-1")
            }
            InvalidSpacing { spacing } => {
                write!(f, "spacing {:?} (depth, height, width) must be finite and positive", spacing.dhw())
            }
            InvalidOrigin { origin } => write!(f, "origin {:?} mm (x, y, z) must be finite", origin.xyz()),
            Unwritable(err) => write!(f, "cannot be written: {err}"),
        }
    }
}

impl fmt::Display for NiftiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)
    }
}

impl std::error::Error for NiftiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            NiftiErrorKind::Unreadable(err) | NiftiErrorKind::Unwritable(err) => Some(err),
            _ => None,
        }
    }
}

/// The NIfTI affine of an RAS-ordered volume with this spacing whose voxel (0, 0, 0) lies at
/// `origin`: x = width, y = height, z = depth on the diagonal, the origin as the translation.
/// Together with [`affine_to_spacing`], the only place where medgen's (depth, height, width)
/// order meets NIfTI's (x, y, z) (seed pitfall 82).
pub fn spacing_to_affine(spacing: Spacing, origin: Origin) -> [[f64; 4]; 4] {
    [
        [spacing.width, 0.0, 0.0, origin.x],
        [0.0, spacing.height, 0.0, origin.y],
        [0.0, 0.0, spacing.depth, origin.z],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// The spacing of a NIfTI affine: the lengths of its first three columns (the voxel's x, y and
/// z edges in world space), so a rotated or flipped affine still gives positive spacings.
/// Inverse of [`spacing_to_affine`] for a diagonal affine with positive entries.
///
/// Rejects affines with non-finite entries, a zero-length axis, or axes that are (numerically)
/// linearly dependent, with [`NiftiErrorKind::DegenerateAffine`].
pub fn affine_to_spacing(affine: &[[f64; 4]; 4]) -> Result<Spacing, NiftiErrorKind> {
    let degenerate = |reason| Err(NiftiErrorKind::DegenerateAffine { affine: Box::new(*affine), reason });
    if !affine[..3].iter().flatten().all(|v| v.is_finite()) {
        return degenerate("non-finite entries");
    }
    let norm = |j: usize| (0..3).map(|i| affine[i][j] * affine[i][j]).sum::<f64>().sqrt();
    let (x, y, z) = (norm(0), norm(1), norm(2));
    if x == 0.0 || y == 0.0 || z == 0.0 {
        return degenerate("an axis has zero length");
    }
    let unit = |j: usize, norm: f64| [affine[0][j] / norm, affine[1][j] / norm, affine[2][j] / norm];
    if triple_product(unit(0, x), unit(1, y), unit(2, z)).abs() < MIN_AFFINE_VOLUME_RATIO {
        return degenerate("the axes are linearly dependent");
    }
    Ok(Spacing { depth: z, height: y, width: x })
}

/// `u · (v × w)`: the signed volume of the parallelepiped spanned by `u`, `v` and `w`.
fn triple_product(u: [f64; 3], v: [f64; 3], w: [f64; 3]) -> f64 {
    u[0] * (v[1] * w[2] - v[2] * w[1]) - u[1] * (v[0] * w[2] - v[2] * w[0]) + u[2] * (v[0] * w[1] - v[1] * w[0])
}

/// [`save_nifti_at`] at origin 0: for volumes that belong to no patient (the phantom, an
/// unconditioned sample), or whose place in the world does not matter.
pub fn save_nifti(path: &Path, volume: &Volume) -> Result<(), NiftiError> {
    save_nifti_at(path, volume, Origin::ZERO)
}

/// Writes `volume`, in RAS voxel order with its voxel (0, 0, 0) at `origin`, to `path` as a
/// NIfTI-1 file, gzip-compressed when the name ends in `.nii.gz` and plain for `.nii`; the only
/// NIfTI writer in medgen (seed pitfall 81).
///
/// The file holds float32 voxels, `dim` from the shape, an sform (code 1, scanner anatomical)
/// from [`spacing_to_affine`], a qform (code 1) with no rotation and the same offset (so both
/// give the same affine), pixdim from that affine's diagonal, units mm, and no intensity
/// scaling. NIfTI stores spacing and origin as f32, so a spacing comes back from [`load_nifti`]
/// exactly when it is representable in f32, and otherwise as the nearest f32; likewise the
/// origin.
///
/// The write is atomic: a temporary file in the same directory is written, synced to disk and
/// renamed over `path`. Volumes with NaN or infinite voxels are refused, since [`load_nifti`]
/// would refuse the file, and so are non-finite origins.
pub fn save_nifti_at(path: &Path, volume: &Volume, origin: Origin) -> Result<(), NiftiError> {
    write_volume(path, volume, origin).map_err(|kind| NiftiError { path: path.to_path_buf(), kind })
}

fn write_volume(path: &Path, volume: &Volume, origin: Origin) -> Result<(), NiftiErrorKind> {
    let extension = nifti_extension(path)?;
    check_writable(volume)?;
    if !origin.xyz().iter().all(|&v| (v as f32).is_finite()) {
        return Err(NiftiErrorKind::InvalidOrigin { origin });
    }
    let header = header_for(volume.spacing, origin);
    let tmp = temp_path(path, extension);
    let result = write_synced(&tmp, volume, &header, extension)
        .and_then(|()| fs::rename(&tmp, path).map_err(NiftiErrorKind::Unwritable));
    if result.is_err() {
        // Best effort: the temporary may not exist, and the error to report is the first one.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `"nii"` or `"nii.gz"`, from the end of the file name.
fn nifti_extension(path: &Path) -> Result<&'static str, NiftiErrorKind> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".nii.gz") && name.len() > ".nii.gz".len() {
        Ok("nii.gz")
    } else if name.ends_with(".nii") && name.len() > ".nii".len() {
        Ok("nii")
    } else {
        Err(NiftiErrorKind::UnsupportedExtension)
    }
}

fn check_writable(volume: &Volume) -> Result<(), NiftiErrorKind> {
    let Volume { shape, spacing, data } = volume;
    if shape.iter().any(|&n| n == 0 || n > MAX_AXIS) {
        return Err(NiftiErrorKind::ShapeTooLarge { shape: *shape });
    }
    if data.len() != shape.iter().product::<usize>() {
        return Err(NiftiErrorKind::ShapeMismatch { shape: *shape, voxels: data.len() });
    }
    if !spacing.dhw().iter().all(|s| s.is_finite() && *s > 0.0) {
        return Err(NiftiErrorKind::InvalidSpacing { spacing: *spacing });
    }
    check_finite(data)
}

/// The header [`save_nifti_at`] writes; `dim`, `datatype`, `bitpix`, `vox_offset`, the magic
/// and the (identity) scaling are filled in by the `nifti` crate's writer.
fn header_for(spacing: Spacing, origin: Origin) -> NiftiHeader {
    let affine = spacing_to_affine(spacing, origin);
    let row = |i: usize| affine[i].map(|v| v as f32);
    let diagonal = |i: usize| affine[i][i] as f32;
    let translation = |i: usize| affine[i][3] as f32;
    NiftiHeader {
        pixdim: [1.0, diagonal(0), diagonal(1), diagonal(2), 1.0, 1.0, 1.0, 1.0],
        xyzt_units: Unit::Mm as u8,
        // qform: quaternion (0, 0, 0), i.e. no rotation, and the sform's translation; with
        // qfac = pixdim[0] = 1 it is the same affine as the sform.
        quatern_x: translation(0),
        quatern_y: translation(1),
        quatern_z: translation(2),
        qform_code: XForm::ScannerAnat as i16,
        sform_code: XForm::ScannerAnat as i16,
        srow_x: row(0),
        srow_y: row(1),
        srow_z: row(2),
        ..NiftiHeader::default()
    }
}

/// A fresh name next to `path`, so the final rename stays within one file system. The name has
/// no dot before its extension: the `nifti` crate's writer rebuilds the output name from the
/// part before the last dot, which would change a name like `a.b.nii`.
fn temp_path(path: &Path, extension: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".medgen-tmp-{}-{n}.{extension}", std::process::id()))
}

/// Writes the file and syncs it to disk. For a plain `.nii` the length is checked as well: the
/// `nifti` crate drops its buffered writer without an explicit flush, so an error on the last
/// flush (a full disk) would otherwise pass unnoticed.
fn write_synced(tmp: &Path, volume: &Volume, header: &NiftiHeader, extension: &str) -> Result<(), NiftiErrorKind> {
    let [depth, height, width] = volume.shape;
    let dhw = ArrayView3::from_shape((depth, height, width), &volume.data)
        .map_err(|err| NiftiErrorKind::Unwritable(io::Error::other(err)))?;
    // NIfTI's (x, y, z) = (width, height, depth); the writer stores x fastest.
    let xyz = dhw.reversed_axes();
    WriterOptions::new(tmp).reference_header(header).write_nifti(&xyz).map_err(|err| match err {
        ::nifti::NiftiError::Io(err) => NiftiErrorKind::Unwritable(err),
        other => NiftiErrorKind::Unwritable(io::Error::other(other)),
    })?;
    let file = File::options().write(true).open(tmp).map_err(NiftiErrorKind::Unwritable)?;
    let expected = MIN_VOX_OFFSET + 4 * volume.data.len() as u64;
    let written = file.metadata().map_err(NiftiErrorKind::Unwritable)?.len();
    if extension == "nii" && written != expected {
        let msg = format!("wrote {written} bytes instead of {expected}");
        return Err(NiftiErrorKind::Unwritable(io::Error::other(msg)));
    }
    file.sync_all().map_err(NiftiErrorKind::Unwritable)
}

/// Reads a single-file NIfTI-1 volume (`.nii`, or gzip-compressed `.nii.gz`; compression is
/// detected from the content).
///
/// - Voxels of any real datatype (u8 to u64, i8 to i64, f32, f64) are scaled by
///   `scl_slope`/`scl_inter` as nibabel's `get_fdata` does (no scaling when the slope is 0 or
///   not finite), computed in f64 and rounded once to f32.
/// - Only 3D volumes, or 4D volumes with one time point, are accepted.
/// - NIfTI's voxel (x, y, z) becomes the volume's (d = z, h = y, w = x); the bytes keep their
///   order, since NIfTI stores x fastest.
/// - Spacing comes from the sform if `sform_code > 0`, else from the qform or pixdim, through
///   [`affine_to_spacing`], converted to mm when the header says metres or microns (an unknown
///   unit is taken as mm).
///
/// Every failure names the file: missing or unreadable, not NIfTI, truncated, unsupported
/// dimensionality or datatype, NaN or infinite voxels, degenerate affine.
pub fn load_nifti(path: &Path) -> Result<Volume, NiftiError> {
    read_volume(path).map(|(volume, _)| volume).map_err(|kind| NiftiError { path: path.to_path_buf(), kind })
}

/// Reads `path` as [`load_nifti`] does and brings it to RAS (`io::orientation`): how a dataset
/// reads files from elsewhere, whose voxel order may be any permutation and flip of medgen's.
///
/// Also returns where the RAS volume's voxel (0, 0, 0) lies in the world, in mm: the affine's
/// translation (sform when `sform_code > 0`, else the qform's offset, else 0, converted to mm
/// like the spacing), moved to the voxel that reorientation makes the first.
pub fn load_nifti_ras(path: &Path) -> Result<(Volume, Origin), NiftiError> {
    let error = |kind| NiftiError { path: path.to_path_buf(), kind };
    let (volume, header) = read_volume(path).map_err(error)?;
    let origin = header_origin(&header).map_err(error)?;
    super::orientation::to_ras(volume, &header_direction(&header), origin).map_err(error)
}

/// The voxels in the file's order, and the header they were read with.
fn read_volume(path: &Path) -> Result<(Volume, NiftiHeader), NiftiErrorKind> {
    let mut reader = open_maybe_gz(path)?;
    let header = read_header(&mut reader)?;
    let [x, y, z] = spatial_dims(&header)?;
    let datatype = real_datatype(&header)?;
    let spacing = header_spacing(&header)?;
    let voxel_bytes = x * y * z * datatype.size_of();
    skip_to_voxels(&mut reader, &header, voxel_bytes)?;
    let raw = read_voxel_bytes(&mut reader, voxel_bytes)?;
    let mut data = decode(&header, datatype, raw)?;
    rescale(&mut data, header.scl_slope, header.scl_inter);
    let data: Vec<f32> = data.into_iter().map(|v| v as f32).collect();
    check_finite(&data)?;
    Ok((Volume { shape: [z, y, x], spacing, data }, header))
}

/// The world position of the file's voxel (0, 0, 0) in mm: the sform's translation when
/// `sform_code > 0`, else the qform's offset, else 0 (NIfTI's "method 1").
fn header_origin(header: &NiftiHeader) -> Result<Origin, NiftiErrorKind> {
    let offset = if header.sform_code > 0 {
        [header.srow_x[3], header.srow_y[3], header.srow_z[3]]
    } else if header.qform_code > 0 {
        [header.quatern_x, header.quatern_y, header.quatern_z]
    } else {
        [0.0; 3]
    };
    if !offset.iter().all(|v| v.is_finite()) {
        return Err(NiftiErrorKind::BadHeader(format!("the affine's translation {offset:?} is not finite")));
    }
    let mm = mm_per_unit(header)?;
    Ok(Origin::from_xyz(offset.map(|v| f64::from(v) * mm)))
}

/// Directions of the voxel axes in world space: the sform's columns when `sform_code > 0`,
/// else the qform's rotation (its quaternion, with `qfac` = pixdim[0] flipping z), else none
/// (NIfTI's "method 1": the identity).
fn header_direction(header: &NiftiHeader) -> super::orientation::Direction {
    let mut direction = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    if header.sform_code > 0 {
        let row = |r: [f32; 4]| [r[0], r[1], r[2]].map(f64::from);
        direction = [row(header.srow_x), row(header.srow_y), row(header.srow_z)];
    } else if header.qform_code > 0 {
        let [b, c, d] = [header.quatern_b, header.quatern_c, header.quatern_d].map(f64::from);
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        direction = [
            [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
            [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
            [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ];
        if header.pixdim[0] < 0.0 {
            direction.iter_mut().for_each(|row| row[2] = -row[2]);
        }
    }
    direction
}

/// Opens `path`, decompressing when it starts with the gzip magic bytes. Only a regular file (a
/// symbolic link is followed) is opened: its metadata is read first, so a FIFO named like a
/// volume is refused instead of blocking the reader forever.
fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>, NiftiErrorKind> {
    let failed = |err: io::Error| match err.kind() {
        io::ErrorKind::NotFound => NiftiErrorKind::NotFound,
        _ => NiftiErrorKind::Unreadable(err),
    };
    let kind = std::fs::metadata(path).map_err(failed)?.file_type();
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(NiftiErrorKind::NotARegularFile { what });
    }
    let file = File::open(path).map_err(failed)?;
    let mut reader = BufReader::new(file);
    let gzip = reader.fill_buf().map_err(NiftiErrorKind::Unreadable)?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip { Box::new(MultiGzDecoder::new(reader)) } else { Box::new(reader) })
}

fn read_header(reader: &mut impl Read) -> Result<NiftiHeader, NiftiErrorKind> {
    let mut bytes = [0u8; HEADER_BYTES as usize];
    reader.read_exact(&mut bytes).map_err(|err| match err.kind() {
        io::ErrorKind::UnexpectedEof => {
            NiftiErrorKind::NotNifti(format!("shorter than the {HEADER_BYTES}-byte header"))
        }
        _ => NiftiErrorKind::Unreadable(err),
    })?;
    let sizeof_hdr =
        [i32::from_le_bytes, i32::from_be_bytes].map(|read| read([bytes[0], bytes[1], bytes[2], bytes[3]]));
    if sizeof_hdr.contains(&NIFTI2_HEADER_BYTES) {
        return Err(NiftiErrorKind::NotNifti("a NIfTI-2 header (sizeof_hdr 540); only NIfTI-1 is read".into()));
    }
    if !matches!(&bytes[MAGIC_OFFSET..HEADER_BYTES as usize], b"n+1\0" | b"ni1\0") {
        return Err(NiftiErrorKind::NotNifti("bad magic (expected \"n+1\")".into()));
    }
    // The byte order is the one in which sizeof_hdr reads 348. The nifti crate guesses it from
    // dim[0] instead, so a dim[0] outside 1..=7 would be misreported as a wrong sizeof_hdr.
    let Some(little) = [true, false].into_iter().zip(sizeof_hdr).find(|(_, n)| u64::try_from(*n) == Ok(HEADER_BYTES))
    else {
        return Err(NiftiErrorKind::NotNifti(format!("sizeof_hdr is {}, not {HEADER_BYTES}", sizeof_hdr[0])));
    };
    let dim0 = [bytes[DIM_OFFSET], bytes[DIM_OFFSET + 1]];
    let dim0 = if little.0 { i16::from_le_bytes(dim0) } else { i16::from_be_bytes(dim0) };
    if !(1..=7).contains(&dim0) {
        return Err(NiftiErrorKind::BadHeader(format!("dim[0] is {dim0}, not in 1..=7")));
    }
    let header = NiftiHeader::from_reader(&bytes[..]).map_err(|err| match err {
        ::nifti::NiftiError::InvalidFormat => NiftiErrorKind::NotNifti("bad magic (expected \"n+1\")".into()),
        other => NiftiErrorKind::BadHeader(other.to_string()),
    })?;
    if u64::try_from(header.sizeof_hdr) != Ok(HEADER_BYTES) {
        return Err(NiftiErrorKind::NotNifti(format!("sizeof_hdr is {}, not {HEADER_BYTES}", header.sizeof_hdr)));
    }
    if &header.magic == ::nifti::header::MAGIC_CODE_NI1 {
        return Err(NiftiErrorKind::BadHeader("a header-only .hdr file; .hdr/.img pairs are not supported".into()));
    }
    Ok(header)
}

/// NIfTI's (x, y, z) lengths: `dim` must describe a 3D volume, or a 4D one with `dim[4] = 1`.
/// The header stores them as signed 16-bit integers (the nifti crate hands them over unsigned,
/// so a negative length would read as 65,504).
fn spatial_dims(header: &NiftiHeader) -> Result<[usize; 3], NiftiErrorKind> {
    let signed: Vec<i16> = header.dim.iter().map(|&n| n as i16).collect();
    let ndim = signed[0];
    if !(1..=7).contains(&ndim) {
        return Err(NiftiErrorKind::BadHeader(format!("dim[0] is {ndim}, not in 1..=7")));
    }
    let lengths = &signed[1..=ndim as usize];
    if lengths.iter().any(|&n| n < 1) {
        return Err(NiftiErrorKind::BadHeader(format!("dims {lengths:?} must each be in 1..={MAX_AXIS}")));
    }
    let dims: Vec<usize> = lengths.iter().map(|&n| n as usize).collect();
    match dims[..] {
        [x, y, z] | [x, y, z, 1] => Ok([x, y, z]),
        _ => Err(NiftiErrorKind::UnsupportedDimensionality { dims }),
    }
}

fn real_datatype(header: &NiftiHeader) -> Result<NiftiType, NiftiErrorKind> {
    use NiftiType::*;
    match header.data_type() {
        Ok(t @ (Uint8 | Int8 | Uint16 | Int16 | Uint32 | Int32 | Uint64 | Int64 | Float32 | Float64)) => Ok(t),
        _ => Err(NiftiErrorKind::UnsupportedDatatype { code: header.datatype }),
    }
}

/// Spacing in mm, from the sform when `sform_code > 0`, otherwise from pixdim. A qform's
/// rotation is orthonormal, so the column lengths of a qform affine are exactly |pixdim[1..4]|:
/// the qform and the no-transform case (NIfTI's "method 1") give the same spacing.
fn header_spacing(header: &NiftiHeader) -> Result<Spacing, NiftiErrorKind> {
    let affine = if header.sform_code > 0 {
        let row = |r: [f32; 4]| r.map(f64::from);
        [row(header.srow_x), row(header.srow_y), row(header.srow_z), [0.0, 0.0, 0.0, 1.0]]
    } else {
        let p = |i: usize| f64::from(header.pixdim[i]);
        [[p(1), 0.0, 0.0, 0.0], [0.0, p(2), 0.0, 0.0], [0.0, 0.0, p(3), 0.0], [0.0, 0.0, 0.0, 1.0]]
    };
    let spacing = affine_to_spacing(&affine)?;
    let mm = mm_per_unit(header)?;
    Ok(Spacing::from_dhw(spacing.dhw().map(|s| s * mm)))
}

/// Millimetres per spatial unit of `xyzt_units`.
fn mm_per_unit(header: &NiftiHeader) -> Result<f64, NiftiErrorKind> {
    match header.xyzt_to_space() {
        Ok(Unit::Unknown | Unit::Mm) => Ok(1.0),
        Ok(Unit::Meter) => Ok(1000.0),
        Ok(Unit::Micron) => Ok(0.001),
        _ => Err(NiftiErrorKind::BadHeader(format!("unknown spatial unit code {}", header.xyzt_units & 0o7))),
    }
}

/// Skips the extension flag and any extensions, up to `vox_offset` (at least 352). A file that
/// ends before that has none of the `voxel_bytes`.
fn skip_to_voxels(reader: &mut impl Read, header: &NiftiHeader, voxel_bytes: usize) -> Result<(), NiftiErrorKind> {
    // `as` saturates: a NaN or negative offset becomes 0, then the minimum.
    let skip = (header.vox_offset as u64).max(MIN_VOX_OFFSET) - HEADER_BYTES;
    match io::copy(&mut reader.take(skip), &mut io::sink()) {
        Ok(skipped) if skipped == skip => Ok(()),
        Ok(_) => Err(NiftiErrorKind::Truncated { expected: voxel_bytes, found: 0 }),
        Err(err) => Err(truncated_or_unreadable(err, voxel_bytes, 0)),
    }
}

fn read_voxel_bytes(reader: &mut impl Read, expected: usize) -> Result<Vec<u8>, NiftiErrorKind> {
    let mut raw = Vec::new();
    match reader.take(expected as u64).read_to_end(&mut raw) {
        Ok(found) if found == expected => Ok(raw),
        Ok(found) => Err(NiftiErrorKind::Truncated { expected, found }),
        Err(err) => Err(truncated_or_unreadable(err, expected, raw.len())),
    }
}

/// A gzip stream that ends early reports `UnexpectedEof`: that is truncation, not an I/O error.
fn truncated_or_unreadable(err: io::Error, expected: usize, found: usize) -> NiftiErrorKind {
    match err.kind() {
        io::ErrorKind::UnexpectedEof => NiftiErrorKind::Truncated { expected, found },
        _ => NiftiErrorKind::Unreadable(err),
    }
}

/// The raw voxel bytes as f64, in file order (x fastest), byte order and datatype from the
/// header, before scaling.
fn decode(header: &NiftiHeader, datatype: NiftiType, raw: Vec<u8>) -> Result<Vec<f64>, NiftiErrorKind> {
    // Slope 0 means "no scaling" in NIfTI: scaling is applied by `rescale`, in f64.
    let volume = InMemNiftiVolume::from_raw_fields(header.dim, datatype, 0.0, 0.0, raw, header.endianness)
        .and_then(|volume| volume.into_ndarray::<f64>())
        .map_err(|err| NiftiErrorKind::BadHeader(err.to_string()))?;
    // The array has NIfTI's shape (x, y, z[, 1]); reversed, its logical order is width fastest.
    Ok(volume.reversed_axes().iter().copied().collect())
}

/// `v * slope + inter` in f64, following nibabel step for step: no scaling at all when the
/// slope is 0 or not finite (NIfTI's "no scaling"), no multiplication by a slope of 1 and no
/// addition of an intercept of 0 (so a stored -0.0 stays -0.0).
fn rescale(data: &mut [f64], slope: f32, inter: f32) {
    let (slope, inter) = (f64::from(slope), f64::from(inter));
    if slope == 0.0 || !slope.is_finite() {
        return;
    }
    if slope != 1.0 {
        data.iter_mut().for_each(|v| *v *= slope);
    }
    if inter != 0.0 {
        data.iter_mut().for_each(|v| *v += inter);
    }
}

fn check_finite(data: &[f32]) -> Result<(), NiftiErrorKind> {
    let nan = data.iter().filter(|v| v.is_nan()).count();
    let infinite = data.iter().filter(|v| v.is_infinite()).count();
    if nan + infinite > 0 {
        return Err(NiftiErrorKind::NonFinite { nan, infinite, total: data.len() });
    }
    Ok(())
}

/// Turns a ground-truth mask into {0, 1}: 1 where the value is greater than
/// [`BINARY_THRESHOLD_GT`], 0 elsewhere (NaN included).
pub fn binarize_gt(volume: &mut Volume) {
    for v in &mut volume.data {
        *v = if *v > BINARY_THRESHOLD_GT { 1.0 } else { 0.0 };
    }
}

/// Turns a *generated* mask (a network's output, or an augmented mask) into {0, 1}: clamped to
/// [0, 1], then 1 where the value exceeds [`BINARY_THRESHOLD_GENERATED`]. The one binarisation of
/// generated masks (seed pitfalls 36 and 79: generation and evaluation once binarised differently,
/// and an unthresholded sigmoid output invalidated a whole evaluation). NaN becomes 0.
pub fn binarize_seg(values: &mut [f32]) {
    binarize_seg_at(values, BINARY_THRESHOLD_GENERATED);
}

/// [`binarize_seg`] with another threshold (`evaluate`'s `seg_threshold`).
pub fn binarize_seg_at(values: &mut [f32], threshold: f32) {
    for v in values {
        *v = if v.clamp(0.0, 1.0) > threshold { 1.0 } else { 0.0 };
    }
}

/// Clips every voxel to the `low_percentile`-th and `high_percentile`-th [`percentile`]s of the
/// volume's voxels and rescales that range to [0, 1] (in f64, rounded once to f32); a volume
/// whose two percentiles coincide (a constant volume) becomes all zeros. See
/// [`INTENSITY_PERCENTILES`] for the usual choice. Voxels are expected to be finite (as
/// [`load_nifti`] guarantees).
///
/// # Panics
///
/// Unless `0 <= low_percentile <= high_percentile <= 100`.
pub fn normalize_intensity(volume: &mut Volume, low_percentile: f64, high_percentile: f64) {
    assert!(
        (0.0..=100.0).contains(&low_percentile) && (low_percentile..=100.0).contains(&high_percentile),
        "percentiles must satisfy 0 <= low <= high <= 100, got ({low_percentile}, {high_percentile})"
    );
    if volume.data.is_empty() {
        return;
    }
    let mut scratch = volume.data.clone();
    let low = percentile_in_place(&mut scratch, low_percentile);
    let high = percentile_in_place(&mut scratch, high_percentile);
    let range = high - low;
    for v in &mut volume.data {
        *v = if range > 0.0 { ((f64::from(*v).clamp(low, high) - low) / range) as f32 } else { 0.0 };
    }
}

/// The `p`-th percentile of `values`, exactly as numpy's default
/// `np.percentile(values.astype(np.float64), p)` (method "linear"): with the n values sorted as
/// `a[0] <= ... <= a[n-1]`, the rank is `i = (n - 1) * (p / 100)`, and the result is `a[floor(i)]`
/// interpolated linearly towards `a[floor(i) + 1]` by the fraction of `i` (from whichever end is
/// nearer, as numpy does). NaN for an empty slice.
///
/// # Panics
///
/// Unless `0 <= p <= 100`.
pub fn percentile(values: &[f32], p: f64) -> f64 {
    assert!((0.0..=100.0).contains(&p), "percentile must be in [0, 100], got {p}");
    if values.is_empty() {
        return f64::NAN;
    }
    percentile_in_place(&mut values.to_vec(), p)
}

/// [`percentile`] of a non-empty slice, reordering it.
fn percentile_in_place(values: &mut [f32], p: f64) -> f64 {
    let n = values.len();
    // numpy: `q = p / 100`, then the "linear" method's virtual index `(n - 1) * q`.
    let virtual_index = (n - 1) as f64 * (p / 100.0);
    if virtual_index >= (n - 1) as f64 {
        return f64::from(nth_smallest(values, n - 1));
    }
    let below = virtual_index.floor();
    let gamma = virtual_index - below;
    let k = below as usize;
    let a = f64::from(nth_smallest(values, k));
    let b = f64::from(values[k + 1..].iter().copied().min_by(f32::total_cmp).unwrap_or(values[k]));
    // numpy's `_lerp`: from whichever end is nearer, for accuracy.
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

/// The `k`-th smallest value; afterwards the larger values sit in `values[k + 1..]`.
fn nth_smallest(values: &mut [f32], k: usize) -> f32 {
    *values.select_nth_unstable_by(k, f32::total_cmp).1
}
