//! NIfTI input and output (`medgen_stdlib::io::nifti`): reading files written by nibabel, the
//! memory-order mapping, bit-exact round trips, the world position of voxels through
//! reorientation, cropping, padding and writing, atomic writes, every error case, intensity
//! normalisation against numpy, and ground-truth binarisation.
//!
//! The reference files in `tests/data/` and the constants at the end of this file were made by
//! `tests/data/make_reference.py` (nibabel and numpy); these tests never run Python.
//!
//! That nibabel reads the files `save_nifti` writes is checked outside `cargo test`, since it
//! needs Python: an ignored test writes a set of volumes with a JSON description of each, and
//! the script's second mode compares what nibabel reads with the description:
//!
//! ```text
//! MEDGEN_NIFTI_VERIFY_DIR=/tmp/medgen-nifti-verify \
//!     cargo test -p medgen-stdlib --test nifti -- --ignored write_files_for_nibabel
//! python3 stdlib/tests/data/make_reference.py --verify /tmp/medgen-nifti-verify
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use medgen_stdlib::data::volume::{Origin, Shape, Spacing, Volume};
use medgen_stdlib::io::nifti::{
    affine_to_spacing, binarize_gt, load_nifti, load_nifti_ras, normalize_intensity, percentile, save_nifti,
    save_nifti_at, spacing_to_affine, NiftiError, NiftiErrorKind, BINARY_THRESHOLD_GT, INTENSITY_PERCENTILES,
};

/// The references' shape in nibabel's (x, y, z) = (width, height, depth).
const XYZ: [usize; 3] = [6, 5, 4];
/// Where every reference has its largest voxel, at nibabel index [x, y, z].
const MARKER_XYZ: [usize; 3] = [5, 1, 3];
/// Byte offsets of NIfTI-1 header fields.
const DIM: u64 = 40;
const DATATYPE: u64 = 70;
const BITPIX: u64 = 72;
const PIXDIM: u64 = 76;
const VOX_OFFSET: u64 = 108;
const SCL_SLOPE: u64 = 112;
const XYZT_UNITS: u64 = 123;
const QFORM_CODE: u64 = 252;
const SFORM_CODE: u64 = 254;
const QUATERN: u64 = 256;
const SROW_X: u64 = 280;
const SROW_Y: u64 = 296;
const SROW_Z: u64 = 312;
const MAGIC: u64 = 344;
const DATA: u64 = 352;

fn reference(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("medgen-nifti-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Deterministic values in [-1, 1) (a 64-bit LCG), scaled.
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn volume(shape: [usize; 3], spacing: Spacing, seed: u64) -> Volume {
    let n = shape.iter().product();
    Volume { shape, spacing, data: values(n, seed, 100.0) }
}

fn aniso() -> Spacing {
    Spacing::new(2.0, 0.9375, 0.8)
}

/// Spacing whose values are exact in f32, so it survives the header's f32 fields bit for bit.
fn aniso_exact() -> Spacing {
    Spacing::new(2.0, 0.9375, 0.75)
}

fn bits(data: &[f32]) -> Vec<u32> {
    data.iter().map(|v| v.to_bits()).collect()
}

/// Asserts every voxel against nibabel's values, given in C order of [x][y][z], through the
/// mapping (d = z, h = y, w = x).
fn assert_matches_nibabel(volume: &Volume, expected: &[f32]) {
    let [nx, ny, nz] = XYZ;
    assert_eq!(volume.shape, [nz, ny, nx]);
    for x in 0..nx {
        for y in 0..ny {
            for z in 0..nz {
                let want = expected[(x * ny + y) * nz + z];
                let got = volume.get(z, y, x);
                assert_eq!(got.to_bits(), want.to_bits(), "nibabel [{x}, {y}, {z}]: got {got}, nibabel {want}");
            }
        }
    }
}

fn assert_spacing(volume: &Volume, dhw: [f64; 3]) {
    assert_eq!(volume.spacing.dhw().map(f64::to_bits), dhw.map(f64::to_bits), "{:?} != {dhw:?}", volume.spacing);
}

fn argmax_dhw(volume: &Volume) -> [usize; 3] {
    let i = (0..volume.data.len()).max_by(|&a, &b| volume.data[a].total_cmp(&volume.data[b])).unwrap();
    let [_, h, w] = volume.shape;
    [i / (h * w), i / w % h, i % w]
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let mut file = fs::read(path).unwrap();
    file[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
    fs::write(path, file).unwrap();
}

fn patch_f32s(path: &Path, offset: u64, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
    patch(path, offset, &bytes);
}

fn patch_i16s(path: &Path, offset: u64, values: &[i16]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
    patch(path, offset, &bytes);
}

fn read_i16(bytes: &[u8], offset: u64) -> i16 {
    i16::from_ne_bytes(bytes[offset as usize..offset as usize + 2].try_into().unwrap())
}

fn read_f32s<const N: usize>(bytes: &[u8], offset: u64) -> [f32; N] {
    std::array::from_fn(|i| {
        let at = offset as usize + 4 * i;
        f32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap())
    })
}

/// A saved 4x5x6 volume in `dir`, to be damaged by a test.
fn saved(dir: &TempDir, name: &str) -> PathBuf {
    let path = dir.join(name);
    save_nifti(&path, &volume([4, 5, 6], aniso(), 1)).unwrap();
    path
}

/// Loads `path`, expecting an error whose `Display` names the file and contains `problem`.
fn load_err(path: &Path, problem: &str) -> NiftiErrorKind {
    let err = load_nifti(path).expect_err("load should fail");
    assert_error_names(&err, path, problem);
    err.kind
}

fn assert_error_names(err: &NiftiError, path: &Path, problem: &str) {
    let text = err.to_string();
    assert_eq!(err.path, path);
    assert!(text.starts_with(&format!("{}: ", path.display())), "does not name the file: {text}");
    assert!(text.contains(problem), "{text:?} does not contain {problem:?}");
}

// ---- Reading nibabel's files -------------------------------------------------------------------

#[test]
fn int16_with_scaling_reads_as_nibabel_reports() {
    let volume = load_nifti(&reference("int16_scaled.nii")).unwrap();
    assert_matches_nibabel(&volume, &INT16_SCALED);
    assert_spacing(&volume, INT16_SCALED_SPACING_DHW);
}

#[test]
fn gzipped_int16_reads_as_nibabel_reports() {
    let volume = load_nifti(&reference("int16_scaled.nii.gz")).unwrap();
    assert_matches_nibabel(&volume, &INT16_SCALED);
    assert_spacing(&volume, INT16_SCALED_SPACING_DHW);
}

#[test]
fn float32_with_rotated_sform_reads_as_nibabel_reports() {
    let volume = load_nifti(&reference("float32_rotated.nii.gz")).unwrap();
    // -0.0 and a subnormal survive bit for bit.
    assert_matches_nibabel(&volume, &FLOAT32_ROTATED);
    // Column norms of the rotated, flipped sform: positive, and not the pixdims.
    assert_spacing(&volume, FLOAT32_ROTATED_SPACING_DHW);
}

#[test]
fn uint8_4d_with_qform_only_reads_as_nibabel_reports() {
    let volume = load_nifti(&reference("uint8_qform_4d.nii")).unwrap();
    assert_matches_nibabel(&volume, &UINT8_QFORM_4D);
    assert_spacing(&volume, UINT8_QFORM_4D_SPACING_DHW);
}

#[test]
fn big_endian_float64_reads_as_nibabel_reports() {
    let volume = load_nifti(&reference("float64_bigendian.nii")).unwrap();
    assert_matches_nibabel(&volume, &FLOAT64_BIGENDIAN);
    assert_spacing(&volume, FLOAT64_BIGENDIAN_SPACING_DHW);
}

#[test]
fn nibabel_voxel_x_y_z_is_our_depth_z_height_y_width_x() {
    let [x, y, z] = MARKER_XYZ;
    for name in [
        "int16_scaled.nii",
        "int16_scaled.nii.gz",
        "float32_rotated.nii.gz",
        "uint8_qform_4d.nii",
        "float64_bigendian.nii",
    ] {
        let volume = load_nifti(&reference(name)).unwrap();
        assert_eq!(volume.shape, [4, 5, 6], "{name}");
        assert_eq!(argmax_dhw(&volume), [z, y, x], "{name}");
    }
}

#[test]
fn compression_is_detected_from_the_content_not_the_name() {
    let dir = TempDir::new("sniff");
    let gz_named_nii = dir.join("compressed.nii");
    let nii_named_gz = dir.join("plain.nii.gz");
    fs::copy(reference("int16_scaled.nii.gz"), &gz_named_nii).unwrap();
    fs::copy(reference("int16_scaled.nii"), &nii_named_gz).unwrap();
    assert_matches_nibabel(&load_nifti(&gz_named_nii).unwrap(), &INT16_SCALED);
    assert_matches_nibabel(&load_nifti(&nii_named_gz).unwrap(), &INT16_SCALED);
}

// ---- Writing -----------------------------------------------------------------------------------

#[test]
fn save_then_load_is_bit_exact_for_nii_and_nii_gz() {
    let dir = TempDir::new("roundtrip");
    let mut original = volume([4, 5, 6], aniso_exact(), 7);
    original.data[..6].copy_from_slice(&[-0.0, 1e-42, f32::MAX, f32::MIN, f32::MIN_POSITIVE, 0.1]);
    for name in ["volume.nii", "volume.nii.gz"] {
        let path = dir.join(name);
        save_nifti(&path, &original).unwrap();
        let loaded = load_nifti(&path).unwrap();
        assert_eq!(loaded.shape, original.shape, "{name}");
        assert_eq!(bits(&loaded.data), bits(&original.data), "{name}");
        assert_eq!(loaded.spacing.dhw().map(f64::to_bits), original.spacing.dhw().map(f64::to_bits), "{name}");
    }
}

#[test]
fn singleton_axes_round_trip() {
    let dir = TempDir::new("singleton");
    for (i, shape) in [[1, 5, 6], [4, 1, 6], [4, 5, 1], [1, 1, 6], [1, 1, 1], [17, 33, 29]].into_iter().enumerate() {
        let original = volume(shape, aniso_exact(), i as u64);
        for name in [format!("v{i}.nii"), format!("v{i}.nii.gz")] {
            let path = dir.join(&name);
            save_nifti(&path, &original).unwrap();
            let loaded = load_nifti(&path).unwrap();
            assert_eq!(loaded.shape, shape, "{name}");
            assert_eq!(bits(&loaded.data), bits(&original.data), "{name}");
        }
    }
}

#[test]
fn spacing_comes_back_at_the_headers_f32_precision() {
    let dir = TempDir::new("f32spacing");
    let path = dir.join("v.nii.gz");
    save_nifti(&path, &volume([4, 5, 6], aniso(), 2)).unwrap();
    let loaded = load_nifti(&path).unwrap();
    assert_eq!(loaded.spacing, Spacing::new(2.0, 0.9375, f64::from(0.8f32)));
}

#[test]
fn saved_voxel_d_h_w_is_stored_at_nifti_x_w_y_h_z_d() {
    let dir = TempDir::new("layout");
    let path = dir.join("v.nii");
    let mut original = Volume::zeros([4, 5, 6], aniso());
    original.set(3, 1, 5, 42.0);
    save_nifti(&path, &original).unwrap();
    let bytes = fs::read(&path).unwrap();
    let [nx, ny, _] = XYZ;
    let (x, y, z) = (5, 1, 3);
    let [value] = read_f32s::<1>(&bytes, DATA + 4 * (x + nx * (y + ny * z)) as u64);
    assert_eq!(value, 42.0);
    assert_eq!(bytes.len() as u64, DATA + 4 * 120);
}

#[test]
fn saved_header_is_float32_with_one_diagonal_affine_in_mm() {
    let dir = TempDir::new("header");
    let path = dir.join("v.nii");
    save_nifti(&path, &volume([4, 5, 6], aniso(), 3)).unwrap();
    let bytes = fs::read(&path).unwrap();
    let dims: Vec<i16> = (0..4).map(|i| read_i16(&bytes, DIM + 2 * i)).collect();
    assert_eq!(dims, [3, 6, 5, 4]);
    assert_eq!((read_i16(&bytes, DATATYPE), read_i16(&bytes, BITPIX)), (16, 32));
    assert_eq!(read_f32s::<4>(&bytes, PIXDIM), [1.0, 0.8, 0.9375, 2.0]);
    assert_eq!(read_f32s::<1>(&bytes, VOX_OFFSET), [352.0]);
    assert_eq!(read_f32s::<2>(&bytes, SCL_SLOPE), [1.0, 0.0]);
    assert_eq!(bytes[XYZT_UNITS as usize], 2, "units mm");
    assert_eq!((read_i16(&bytes, QFORM_CODE), read_i16(&bytes, SFORM_CODE)), (1, 1));
    assert_eq!(read_f32s::<6>(&bytes, QUATERN), [0.0; 6], "qform: no rotation, no offset");
    assert_eq!(read_f32s::<4>(&bytes, SROW_X), [0.8, 0.0, 0.0, 0.0]);
    assert_eq!(read_f32s::<4>(&bytes, SROW_Y), [0.0, 0.9375, 0.0, 0.0]);
    assert_eq!(read_f32s::<4>(&bytes, SROW_Z), [0.0, 0.0, 2.0, 0.0]);
    assert_eq!(&bytes[MAGIC as usize..MAGIC as usize + 4], b"n+1\0");
}

#[test]
fn saved_header_carries_the_origin_in_sform_and_qform() {
    let dir = TempDir::new("origin");
    let path = dir.join("v.nii");
    let origin = Origin { x: -90.5, y: 126.25, z: -72.0 };
    save_nifti_at(&path, &volume([4, 5, 6], aniso_exact(), 3), origin).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!((read_i16(&bytes, QFORM_CODE), read_i16(&bytes, SFORM_CODE)), (1, 1));
    assert_eq!(read_f32s::<4>(&bytes, SROW_X), [0.75, 0.0, 0.0, -90.5]);
    assert_eq!(read_f32s::<4>(&bytes, SROW_Y), [0.0, 0.9375, 0.0, 126.25]);
    assert_eq!(read_f32s::<4>(&bytes, SROW_Z), [0.0, 0.0, 2.0, -72.0]);
    assert_eq!(read_f32s::<6>(&bytes, QUATERN), [0.0, 0.0, 0.0, -90.5, 126.25, -72.0], "no rotation, the offset");
    assert_eq!(read_f32s::<4>(&bytes, PIXDIM), [1.0, 0.75, 0.9375, 2.0]);
    let (loaded, read_origin) = load_nifti_ras(&path).unwrap();
    assert_eq!((loaded.shape, read_origin), ([4, 5, 6], origin));
}

#[test]
fn save_leaves_only_the_target_and_keeps_dotted_names() {
    let dir = TempDir::new("atomic");
    save_nifti(&dir.join("scan.v2.nii"), &volume([4, 5, 6], aniso(), 4)).unwrap();
    save_nifti(&dir.join("scan.v2.nii.gz"), &volume([4, 5, 6], aniso(), 4)).unwrap();
    assert_eq!(dir.entries(), ["scan.v2.nii", "scan.v2.nii.gz"]);
}

#[test]
fn save_replaces_an_existing_file() {
    let dir = TempDir::new("replace");
    let path = dir.join("v.nii.gz");
    save_nifti(&path, &volume([4, 5, 6], aniso(), 5)).unwrap();
    let second = volume([2, 3, 4], aniso_exact(), 6);
    save_nifti(&path, &second).unwrap();
    assert_eq!(load_nifti(&path).unwrap(), second);
    assert_eq!(dir.entries(), ["v.nii.gz"]);
}

#[test]
fn a_failed_save_leaves_no_temporary_and_the_old_file_intact() {
    let dir = TempDir::new("failed");
    // The rename cannot replace a non-empty directory.
    let blocked = dir.join("blocked.nii");
    fs::create_dir(&blocked).unwrap();
    fs::write(blocked.join("keep"), b"x").unwrap();
    let err = save_nifti(&blocked, &volume([4, 5, 6], aniso(), 8)).unwrap_err();
    assert_error_names(&err, &blocked, "cannot be written");
    assert_eq!(dir.entries(), ["blocked.nii"]);
    // A refused volume does not touch the existing file.
    let existing = saved(&dir, "existing.nii");
    let before = fs::read(&existing).unwrap();
    let mut bad = volume([4, 5, 6], aniso(), 9);
    bad.data[0] = f32::NAN;
    assert!(save_nifti(&existing, &bad).is_err());
    assert_eq!(fs::read(&existing).unwrap(), before);
    assert_eq!(dir.entries(), ["blocked.nii", "existing.nii"]);
}

// ---- Errors ------------------------------------------------------------------------------------

#[test]
fn missing_file() {
    let dir = TempDir::new("missing");
    let kind = load_err(&dir.join("absent.nii.gz"), "no such file");
    assert!(matches!(kind, NiftiErrorKind::NotFound));
}

#[test]
fn a_path_that_is_not_a_regular_file_is_refused_without_opening_it() {
    let dir = TempDir::new("unreadable");
    fs::create_dir(dir.join("folder.nii")).unwrap();
    let kind = load_err(&dir.join("folder.nii"), "is a directory, not a regular file");
    assert!(matches!(kind, NiftiErrorKind::NotARegularFile { .. }));
    // A FIFO named like a volume: opening it would block until something writes to it.
    let fifo = dir.join("t1.nii.gz");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let (sender, receiver) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || sender.send(load_nifti(&path).map(|_| ()).map_err(|e| e.to_string())));
    let result = receiver.recv_timeout(std::time::Duration::from_secs(10)).expect("reading a FIFO must not hang");
    let err = result.expect_err("a FIFO is not a volume");
    assert!(err.contains("is a FIFO (named pipe), not a regular file"), "{err}");
}

#[test]
fn not_nifti_too_short() {
    let dir = TempDir::new("short");
    let path = dir.join("notes.nii");
    fs::write(&path, "just some text\n").unwrap();
    let kind = load_err(&path, "not a NIfTI-1 file: shorter than the 348-byte header");
    assert!(matches!(kind, NiftiErrorKind::NotNifti(_)));
}

#[test]
fn not_nifti_bad_magic() {
    let dir = TempDir::new("magic");
    let path = dir.join("notes.nii");
    fs::write(&path, "text that is long enough to hold a header. ".repeat(20)).unwrap();
    let kind = load_err(&path, "not a NIfTI-1 file: bad magic");
    assert!(matches!(kind, NiftiErrorKind::NotNifti(_)));
    // A valid header with the magic bytes changed.
    let path = saved(&dir, "v.nii");
    patch(&path, MAGIC, b"abc\0");
    load_err(&path, "bad magic");
}

#[test]
fn nifti2_and_header_only_files() {
    let dir = TempDir::new("nifti2");
    let path = saved(&dir, "v2.nii");
    patch(&path, 0, &540i32.to_ne_bytes());
    let kind = load_err(&path, "not a NIfTI-1 file: a NIfTI-2 header");
    assert!(matches!(kind, NiftiErrorKind::NotNifti(_)));
    let path = saved(&dir, "size.nii");
    patch(&path, 0, &350i32.to_ne_bytes());
    load_err(&path, "not a NIfTI-1 file: sizeof_hdr is 350, not 348");
    let path = saved(&dir, "pair.nii");
    patch(&path, MAGIC, b"ni1\0");
    let kind = load_err(&path, "a header-only .hdr file");
    assert!(matches!(kind, NiftiErrorKind::BadHeader(_)));
}

/// `dim` holds signed 16-bit lengths: a negative one is reported as it is written, not as the
/// 65,504 an unsigned reading gives; and a `dim[0]` outside 1..=7 is reported as such, not as a
/// wrong `sizeof_hdr` (the byte order is taken from `sizeof_hdr`, not guessed from `dim[0]`).
#[test]
fn impossible_dimensions_are_reported_as_written() {
    let dir = TempDir::new("dims");
    let path = saved(&dir, "negative.nii");
    patch_i16s(&path, DIM + 2, &[-32]);
    let kind = load_err(&path, "dims [-32, 5, 4] must each be in 1..=32767");
    assert!(matches!(kind, NiftiErrorKind::BadHeader(_)));
    for dim0 in [8, 0, -3] {
        let path = saved(&dir, &format!("dim0_{dim0}.nii"));
        patch_i16s(&path, DIM, &[dim0]);
        load_err(&path, &format!("invalid NIfTI-1 header: dim[0] is {dim0}, not in 1..=7"));
    }
}

#[test]
fn truncated_nii() {
    let dir = TempDir::new("truncated");
    let path = saved(&dir, "v.nii");
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(DATA + 100).unwrap();
    let kind = load_err(&path, "truncated: voxel data has 100 of the 480 bytes");
    assert!(matches!(kind, NiftiErrorKind::Truncated { expected: 480, found: 100 }));
}

#[test]
fn truncated_nii_gz() {
    let dir = TempDir::new("truncated_gz");
    let path = dir.join("v.nii.gz");
    save_nifti(&path, &volume([8, 8, 8], aniso(), 10)).unwrap();
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let kind = load_err(&path, "truncated: voxel data has");
    assert!(matches!(kind, NiftiErrorKind::Truncated { expected: 2048, found } if found < 2048));
}

#[test]
fn truncated_before_the_voxels() {
    let dir = TempDir::new("truncated_header");
    let path = saved(&dir, "v.nii");
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(350).unwrap();
    load_err(&path, "truncated: voxel data has 0 of the 480 bytes");
}

#[test]
fn nan_and_infinite_voxels_are_counted() {
    let dir = TempDir::new("nan");
    let path = saved(&dir, "v.nii");
    patch_f32s(&path, DATA + 4 * 7, &[f32::NAN, f32::INFINITY, f32::NAN]);
    let kind = load_err(&path, "3 of 120 voxels are not finite (2 NaN, 1 infinite)");
    assert!(matches!(kind, NiftiErrorKind::NonFinite { nan: 2, infinite: 1, total: 120 }));
}

#[test]
fn five_dimensional_file() {
    let dir = TempDir::new("5d");
    let path = saved(&dir, "v.nii");
    // Same 120 voxels, as (x, y, z, t, u) = (6, 5, 2, 1, 2).
    patch_i16s(&path, DIM, &[5, 6, 5, 2, 1, 2]);
    let kind = load_err(&path, "unsupported dimensionality 5 (dims [6, 5, 2, 1, 2])");
    assert!(matches!(kind, NiftiErrorKind::UnsupportedDimensionality { dims } if dims == [6, 5, 2, 1, 2]));
}

#[test]
fn four_dimensional_file_with_two_volumes() {
    let dir = TempDir::new("4d");
    let path = saved(&dir, "v.nii");
    patch_i16s(&path, DIM, &[4, 6, 5, 2, 2]);
    load_err(&path, "unsupported dimensionality 4 (dims [6, 5, 2, 2])");
}

#[test]
fn two_dimensional_file() {
    let dir = TempDir::new("2d");
    let path = saved(&dir, "v.nii");
    patch_i16s(&path, DIM, &[2, 6, 20]);
    load_err(&path, "unsupported dimensionality 2");
}

#[test]
fn bad_dims() {
    let dir = TempDir::new("dims");
    let path = saved(&dir, "v.nii");
    patch_i16s(&path, DIM, &[3, 6, 0, 4]);
    let kind = load_err(&path, "invalid NIfTI-1 header: dims [6, 0, 4]");
    assert!(matches!(kind, NiftiErrorKind::BadHeader(_)));
}

#[test]
fn complex_datatype() {
    let dir = TempDir::new("complex");
    let path = saved(&dir, "v.nii");
    patch_i16s(&path, DATATYPE, &[32, 64]);
    let kind = load_err(&path, "unsupported datatype code 32");
    assert!(matches!(kind, NiftiErrorKind::UnsupportedDatatype { code: 32 }));
}

#[test]
fn degenerate_sform() {
    let dir = TempDir::new("degenerate");
    let path = saved(&dir, "zero.nii");
    patch_f32s(&path, SROW_X, &[0.0; 4]);
    let kind = load_err(&path, "degenerate affine (an axis has zero length)");
    assert!(matches!(kind, NiftiErrorKind::DegenerateAffine { .. }));
    let path = saved(&dir, "parallel.nii");
    patch_f32s(&path, SROW_X, &[0.8, 0.9375, 0.0, 0.0]);
    patch_f32s(&path, SROW_Y, &[0.8, 0.9375, 0.0, 0.0]);
    load_err(&path, "degenerate affine (the axes are linearly dependent)");
}

#[test]
fn degenerate_pixdim_without_transforms() {
    let dir = TempDir::new("pixdim");
    let path = saved(&dir, "v.nii");
    patch_i16s(&path, QFORM_CODE, &[0, 0]);
    patch_f32s(&path, PIXDIM + 4 * 2, &[0.0]);
    load_err(&path, "degenerate affine (an axis has zero length)");
}

#[test]
fn save_refuses_what_load_would_refuse() {
    let dir = TempDir::new("refuse");
    let good = volume([4, 5, 6], aniso(), 11);
    let err = save_nifti(&dir.join("v.img"), &good).unwrap_err();
    assert_error_names(&err, &dir.join("v.img"), "file name must end in .nii or .nii.gz");
    let err = save_nifti(&dir.join(".nii"), &good).unwrap_err();
    assert!(matches!(err.kind, NiftiErrorKind::UnsupportedExtension));

    let mut nan = good.clone();
    nan.data[3] = f32::NAN;
    nan.data[4] = f32::NEG_INFINITY;
    let err = save_nifti(&dir.join("nan.nii"), &nan).unwrap_err();
    assert_error_names(&err, &dir.join("nan.nii"), "2 of 120 voxels are not finite (1 NaN, 1 infinite)");

    let mut short = good.clone();
    short.data.pop();
    let err = save_nifti(&dir.join("short.nii"), &short).unwrap_err();
    assert_error_names(&err, &dir.join("short.nii"), "has 119 voxels instead of 120");

    let empty = Volume::zeros([0, 5, 6], aniso());
    let err = save_nifti(&dir.join("empty.nii"), &empty).unwrap_err();
    assert_error_names(&err, &dir.join("empty.nii"), "needs every axis in 1..=32767");

    let err = save_nifti_at(&dir.join("far.nii"), &good, Origin { x: 0.0, y: f64::NAN, z: 1e300 }).unwrap_err();
    assert_error_names(&err, &dir.join("far.nii"), "origin [0.0, NaN, 1e300] mm (x, y, z) must be finite");

    let flat = Volume { spacing: Spacing::new(2.0, 0.0, 0.8), ..good };
    let err = save_nifti(&dir.join("flat.nii"), &flat).unwrap_err();
    assert_error_names(&err, &dir.join("flat.nii"), "spacing [2.0, 0.0, 0.8] (depth, height, width) must be finite");
    assert!(dir.entries().is_empty());
}

// ---- Header details ----------------------------------------------------------------------------

#[test]
fn spatial_units_are_converted_to_mm() {
    let dir = TempDir::new("units");
    let path = saved(&dir, "v.nii");
    let mm = load_nifti(&path).unwrap().spacing;
    for (code, factor) in [(0u8, 1.0), (1, 1000.0), (2, 1.0), (3, 0.001), (2 | 8, 1.0)] {
        patch(&path, XYZT_UNITS, &[code]);
        let spacing = load_nifti(&path).unwrap().spacing;
        assert_eq!(spacing.dhw(), mm.dhw().map(|s| s * factor), "xyzt_units {code}");
    }
    patch(&path, XYZT_UNITS, &[5]);
    load_err(&path, "unknown spatial unit code 5");
}

#[test]
fn the_origin_is_read_in_mm_like_the_spacing_and_must_be_finite() {
    let dir = TempDir::new("origin-units");
    let path = dir.join("v.nii");
    save_nifti_at(&path, &volume([4, 5, 6], aniso(), 1), Origin { x: 0.5, y: -0.25, z: 2.0 }).unwrap();
    patch(&path, XYZT_UNITS, &[1]);
    assert_eq!(load_nifti_ras(&path).unwrap().1, Origin { x: 500.0, y: -250.0, z: 2000.0 }, "metres");
    patch(&path, XYZT_UNITS, &[2]);
    // Without an sform the qform's offset is the origin.
    patch_i16s(&path, SFORM_CODE, &[0]);
    patch_f32s(&path, QUATERN + 12, &[7.0, 8.0, 9.0]);
    assert_eq!(load_nifti_ras(&path).unwrap().1, Origin { x: 7.0, y: 8.0, z: 9.0 });
    patch_f32s(&path, QUATERN + 16, &[f32::INFINITY]);
    let err = load_nifti_ras(&path).unwrap_err();
    assert_error_names(&err, &path, "the affine's translation [7.0, inf, 9.0] is not finite");
    // Neither transform: NIfTI's method 1, at the origin.
    patch_i16s(&path, QFORM_CODE, &[0]);
    assert_eq!(load_nifti_ras(&path).unwrap().1, Origin::ZERO);
}

#[test]
fn scaling_follows_nibabel() {
    let dir = TempDir::new("scaling");
    let path = saved(&dir, "v.nii");
    let raw = load_nifti(&path).unwrap().data;
    let scaled = |slope: f32, inter: f32| {
        patch_f32s(&path, SCL_SLOPE, &[slope, inter]);
        load_nifti(&path).unwrap().data
    };
    // Slope 0 or not finite: no scaling at all, whatever the intercept.
    assert_eq!(bits(&scaled(0.0, 5.0)), bits(&raw));
    assert_eq!(bits(&scaled(f32::NAN, 5.0)), bits(&raw));
    assert_eq!(bits(&scaled(f32::INFINITY, 5.0)), bits(&raw));
    // Otherwise v * slope + inter in f64, rounded once.
    let expected: Vec<f32> = raw.iter().map(|&v| (f64::from(v) * f64::from(0.3f32) + 2.5) as f32).collect();
    assert_eq!(bits(&scaled(0.3, 2.5)), bits(&expected));
    // A stored -0.0 stays -0.0 when there is no intercept to add.
    patch_f32s(&path, DATA, &[-0.0]);
    assert_eq!(scaled(2.0, 0.0)[0].to_bits(), (-0.0f32).to_bits());
}

#[test]
fn extensions_before_the_voxels_are_skipped() {
    let dir = TempDir::new("extensions");
    let path = saved(&dir, "v.nii");
    let original = load_nifti(&path).unwrap();
    // Insert one 16-byte extension (esize 16, ecode 0, 8 bytes of content) and move vox_offset.
    let mut bytes = fs::read(&path).unwrap();
    bytes[348] = 1;
    let mut extension = Vec::new();
    extension.extend_from_slice(&16i32.to_ne_bytes());
    extension.extend_from_slice(&0i32.to_ne_bytes());
    extension.extend_from_slice(b"comment\0");
    bytes.splice(352..352, extension);
    fs::write(&path, bytes).unwrap();
    patch_f32s(&path, VOX_OFFSET, &[368.0]);
    assert_eq!(load_nifti(&path).unwrap(), original);
}

// ---- The affine --------------------------------------------------------------------------------

#[test]
fn spacing_to_affine_puts_width_on_x_and_depth_on_z() {
    assert_eq!(
        spacing_to_affine(Spacing::new(2.0, 0.9375, 0.8), Origin::ZERO),
        [[0.8, 0.0, 0.0, 0.0], [0.0, 0.9375, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    );
    assert_eq!(
        spacing_to_affine(Spacing::new(2.0, 0.9375, 0.8), Origin { x: 1.5, y: -2.0, z: 30.0 }),
        [[0.8, 0.0, 0.0, 1.5], [0.0, 0.9375, 0.0, -2.0], [0.0, 0.0, 2.0, 30.0], [0.0, 0.0, 0.0, 1.0]]
    );
}

#[test]
fn affine_to_spacing_inverts_spacing_to_affine() {
    for spacing in [
        aniso(),
        aniso_exact(),
        Spacing::new(1.0, 1.0, 1.0),
        Spacing::new(5.0, 0.3, 0.7),
        Spacing::new(1e-120, 1e-120, 1e-120),
    ] {
        assert_eq!(
            affine_to_spacing(&spacing_to_affine(spacing, Origin { x: 3.0, y: -4.0, z: 5.0 })).unwrap(),
            spacing
        );
    }
}

#[test]
fn affine_to_spacing_reads_column_norms_of_rotated_and_flipped_affines() {
    let (c, s) = (0.6, 0.8); // a rotation by atan2(0.8, 0.6) about z
    let affine = [
        [-0.8 * c, -0.9375 * s, 0.0, 90.0],
        [-0.8 * s, 0.9375 * c, 0.0, -126.0],
        [0.0, 0.0, -2.0, -72.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let spacing = affine_to_spacing(&affine).unwrap();
    for (got, want) in spacing.dhw().into_iter().zip([2.0, 0.9375, 0.8]) {
        assert!((got - want).abs() < 1e-12, "{spacing:?}");
    }
}

#[test]
fn affine_to_spacing_rejects_degenerate_affines() {
    let mut zero_column = spacing_to_affine(aniso(), Origin::ZERO);
    zero_column[1][1] = 0.0;
    let mut parallel = spacing_to_affine(aniso(), Origin::ZERO);
    parallel[0][2] = 1.0;
    parallel[2][2] = 0.0;
    let mut nan = spacing_to_affine(aniso(), Origin::ZERO);
    nan[2][0] = f64::NAN;
    for (affine, reason) in [
        (zero_column, "an axis has zero length"),
        (parallel, "the axes are linearly dependent"),
        (nan, "non-finite entries"),
    ] {
        match affine_to_spacing(&affine) {
            Err(NiftiErrorKind::DegenerateAffine { reason: got, .. }) => assert_eq!(got, reason),
            other => panic!("{affine:?}: {other:?}"),
        }
    }
}

// ---- World position ----------------------------------------------------------------------------

/// The oriented file of the world-position tests: shape (x, y, z) = (6, 5, 4), voxel x running
/// towards P by 0.75 mm, y towards S by 0.9375 mm, z towards L by 2 mm, voxel (0, 0, 0) at
/// (12.5, -30.25, 47) mm: the rows of its affine.
const ORIENTED_AFFINE: [[f32; 4]; 3] = [[0.0, 0.0, -2.0, 12.5], [-0.75, 0.0, 0.0, -30.25], [0.0, 0.9375, 0.0, 47.0]];
/// The same affine as a qform: the rotation's quaternion (b, c, d), with a = 0.5 and qfac 1, and
/// the offset.
const ORIENTED_QFORM: [f32; 6] = [0.5, -0.5, -0.5, 12.5, -30.25, 47.0];
/// The marked voxel, at NIfTI index (x, y, z) = (4, 1, 2) of the oriented file.
const MARKED_XYZ: [usize; 3] = [4, 1, 2];
/// Its world position, by hand: x = -2 · 2 + 12.5, y = -0.75 · 4 - 30.25, z = 0.9375 · 1 + 47.
const MARKED_WORLD: [f64; 3] = [8.5, -33.25, 47.9375];
const MARK: f32 = 1000.0;

/// `affine · (x, y, z, 1)` for the three rows of an affine.
fn world(rows: [[f32; 4]; 3], xyz: [usize; 3]) -> [f64; 3] {
    rows.map(|row| (0..3).map(|i| f64::from(row[i]) * xyz[i] as f64).sum::<f64>() + f64::from(row[3]))
}

/// Writes the oriented file with the marked voxel, its affine in the sform or (with `qform`) in
/// the qform alone.
fn write_oriented(path: &Path, qform: bool) {
    let mut v = Volume::zeros([4, 5, 6], aniso_exact());
    let [x, y, z] = MARKED_XYZ;
    v.set(z, y, x, MARK);
    save_nifti(path, &v).unwrap();
    if qform {
        patch_i16s(path, SFORM_CODE, &[0]);
        patch_f32s(path, QUATERN, &ORIENTED_QFORM);
    } else {
        for (offset, row) in [SROW_X, SROW_Y, SROW_Z].into_iter().zip(ORIENTED_AFFINE) {
            patch_f32s(path, offset, &row);
        }
    }
}

/// The affine rows of a file medgen wrote, after checking that its sform and qform are the same
/// diagonal affine.
fn written_affine(path: &Path) -> [[f32; 4]; 3] {
    let bytes = fs::read(path).unwrap();
    let rows = [SROW_X, SROW_Y, SROW_Z].map(|offset| read_f32s::<4>(&bytes, offset));
    assert_eq!((read_i16(&bytes, QFORM_CODE), read_i16(&bytes, SFORM_CODE)), (1, 1));
    let [b, c, d, qx, qy, qz] = read_f32s::<6>(&bytes, QUATERN);
    let pixdim = read_f32s::<4>(&bytes, PIXDIM);
    assert_eq!([b, c, d, pixdim[0]], [0.0, 0.0, 0.0, 1.0], "qform: no rotation, qfac 1");
    for (i, row) in rows.iter().enumerate() {
        assert!((0..3).filter(|&j| j != i).all(|j| row[j] == 0.0), "sform row {i}: {row:?}");
        assert_eq!(row[i], pixdim[i + 1], "sform row {i} and pixdim");
        assert_eq!(row[3], [qx, qy, qz][i], "sform row {i} and qoffset");
    }
    rows
}

#[test]
fn a_voxel_keeps_its_world_position_through_reorientation_crop_pad_and_save() {
    let dir = TempDir::new("world");
    assert_eq!(world(ORIENTED_AFFINE, MARKED_XYZ), MARKED_WORLD);
    for qform in [false, true] {
        let input = dir.join(if qform { "qform.nii" } else { "sform.nii" });
        write_oriented(&input, qform);
        let (ras, origin) = load_nifti_ras(&input).unwrap();
        // RAS: width from file z (4, 2 mm), height from file x (6, 0.75 mm), depth from file y.
        assert_eq!(ras.shape, [5, 6, 4], "qform {qform}");
        assert_eq!(ras.spacing.dhw(), [0.9375, 0.75, 2.0], "qform {qform}");
        // RAS voxel (0, 0, 0) is file voxel (5, 0, 3): x = -2 · 3 + 12.5, y = -0.75 · 5 - 30.25.
        assert_eq!(origin, Origin { x: 6.5, y: -34.0, z: 47.0 }, "qform {qform}");
        let shapes: [(&str, Shape); 3] = [("crop", [3, 4, 2]), ("pad", [8, 9, 7]), ("mixed", [4, 10, 3])];
        for (name, shape) in shapes {
            let output = dir.join(&format!("{name}-{qform}.nii"));
            let fitted = ras.fit_to(shape);
            save_nifti_at(&output, &fitted, ras.fitted_origin(shape, origin)).unwrap();
            let written = load_nifti(&output).unwrap();
            let [d, h, w] = argmax_dhw(&written);
            assert_eq!(written.get(d, h, w), MARK, "{name}, qform {qform}: the marked voxel is kept");
            let found = world(written_affine(&output), [w, h, d]);
            for (axis, (got, want)) in found.iter().zip(MARKED_WORLD).enumerate() {
                assert!((got - want).abs() <= 1e-4, "{name}, qform {qform}, world axis {axis}: {found:?}");
            }
        }
    }
}

// ---- Voxel steps -------------------------------------------------------------------------------

#[test]
fn binarize_gt_keeps_every_voxel_above_the_low_threshold() {
    assert_eq!(BINARY_THRESHOLD_GT, 0.01);
    let input = [-1.0, 0.0, 0.005, 0.01, 0.0101, 0.02, 0.5, 1.0, 7.0, f32::NAN];
    let mut volume = Volume { shape: [1, 2, 5], spacing: aniso(), data: input.to_vec() };
    binarize_gt(&mut volume);
    assert_eq!(volume.data, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
}

#[test]
fn percentile_matches_numpy() {
    for (p, expected) in PERCENTILE_VALUES {
        let got = percentile(&PERCENTILE_INPUT, p);
        assert_eq!(got.to_bits(), expected.to_bits(), "p = {p}: {got} != numpy {expected}");
    }
    assert!(percentile(&[], 50.0).is_nan());
}

#[test]
fn normalize_intensity_matches_numpy() {
    for ((low, high), expected) in PERCENTILE_CASES {
        let mut volume =
            Volume { shape: [1, 1, PERCENTILE_INPUT.len()], spacing: aniso(), data: PERCENTILE_INPUT.to_vec() };
        normalize_intensity(&mut volume, low, high);
        assert_eq!(bits(&volume.data), bits(&expected), "percentiles ({low}, {high}): {:?}", volume.data);
    }
}

#[test]
fn normalize_intensity_defaults_and_edge_cases() {
    assert_eq!(INTENSITY_PERCENTILES, (0.5, 99.5));
    let (low, high) = INTENSITY_PERCENTILES;
    let mut constant = Volume { shape: [2, 2, 2], spacing: aniso(), data: vec![3.5; 8] };
    normalize_intensity(&mut constant, low, high);
    assert_eq!(constant.data, [0.0; 8]);
    let mut single = Volume { shape: [1, 1, 1], spacing: aniso(), data: vec![-4.0] };
    normalize_intensity(&mut single, low, high);
    assert_eq!(single.data, [0.0]);
    let mut ramp = Volume { shape: [1, 1, 5], spacing: aniso(), data: vec![4.0, 0.0, 2.0, 1.0, 3.0] };
    normalize_intensity(&mut ramp, 0.0, 100.0);
    assert_eq!(ramp.data, [1.0, 0.0, 0.5, 0.25, 0.75]);
}

#[test]
#[should_panic(expected = "percentiles must satisfy 0 <= low <= high <= 100")]
fn normalize_intensity_rejects_inverted_percentiles() {
    let mut volume = Volume::zeros([1, 1, 4], aniso());
    normalize_intensity(&mut volume, 90.0, 10.0);
}

// ---- nibabel verification (ignored: needs a directory and, afterwards, Python) -----------------

/// Writes volumes with `save_nifti` into `$MEDGEN_NIFTI_VERIFY_DIR`, each with a JSON description
/// for `make_reference.py --verify` (see the module doc).
#[test]
#[ignore = "writes files for make_reference.py --verify; set MEDGEN_NIFTI_VERIFY_DIR"]
fn write_files_for_nibabel() {
    let dir = PathBuf::from(std::env::var("MEDGEN_NIFTI_VERIFY_DIR").expect("set MEDGEN_NIFTI_VERIFY_DIR"));
    fs::create_dir_all(&dir).unwrap();
    let mut special = volume([2, 3, 4], aniso_exact(), 12);
    special.data[..7].copy_from_slice(&[-0.0, 1e-42, f32::MAX, f32::MIN, f32::MIN_POSITIVE, 0.1, -7.25]);
    let cases = [
        ("aniso.nii", volume([4, 5, 6], aniso(), 13)),
        ("aniso.nii.gz", volume([4, 5, 6], aniso(), 13)),
        ("depth1.nii.gz", volume([1, 7, 3], Spacing::new(3.0, 0.5, 0.25), 14)),
        ("height1.nii", volume([5, 1, 4], Spacing::new(1.5, 0.7, 0.6), 15)),
        ("larger.v2.nii.gz", volume([17, 33, 29], Spacing::new(1.0, 0.9375, 0.9375), 16)),
        ("special.nii", special),
    ];
    for (name, volume) in cases {
        save_nifti(&dir.join(name), &volume).unwrap();
        let description = serde_json::json!({
            "file": name,
            "shape_dhw": volume.shape,
            "spacing_dhw": volume.spacing.dhw(),
            "bits_dhw": bits(&volume.data),
        });
        fs::write(dir.join(format!("{name}.json")), description.to_string()).unwrap();
    }
}

// ---- Reference values ----------------------------------------------------------------------------

// Generated by stdlib/tests/data/make_reference.py (nibabel 5.4.2, numpy 2.4.6).
// int16_scaled.nii: datatype int16, shape (6, 5, 4), scl_slope 0.007727217860519886, scl_inter 106.80224609375, sform_code 2, qform_code 0,
// zooms (0.800000011920929, 0.9375, 2.0). Values: np.float32(img.get_fdata()), C order of [x][y][z].
const INT16_SCALED: [f32; 120] = [
    89.43146,
    55.145794,
    -97.75266,
    85.23558,
    -51.937992,
    75.37565,
    -96.24586,
    -76.71918,
    78.52063,
    -115.247086,
    -25.642267,
    -63.706543,
    57.038963,
    -131.04924,
    -124.91383,
    -30.966322,
    32.342773,
    -116.90844,
    -5.064687,
    -52.069355,
    26.562817,
    -40.130802,
    -87.01956,
    -28.099524,
    41.43771,
    -72.29921,
    22.482845,
    11.502468,
    -51.087997,
    -3.040156,
    -114.69073,
    41.7468,
    -140.546,
    -86.50184,
    -13.131903,
    -113.021645,
    -110.89666,
    32.845043,
    -30.464052,
    -124.512024,
    -20.495941,
    23.819653,
    -101.14491,
    51.55264,
    -144.82687,
    -40.478527,
    -12.390089,
    66.752075,
    -120.47069,
    -39.52808,
    28.641438,
    -122.99748,
    -128.3679,
    -12.243272,
    -36.205376,
    -36.537643,
    35.874115,
    10.119296,
    -26.60817,
    -4.423328,
    -119.334785,
    -124.80566,
    72.74067,
    -34.397205,
    -4.871506,
    -96.36949,
    -56.095234,
    -81.64142,
    -93.06224,
    -140.90144,
    51.514004,
    62.208473,
    -55.10615,
    60.840755,
    -121.93886,
    -46.24303,
    -59.52612,
    -48.453014,
    68.63752,
    -51.38936,
    -126.98473,
    -0.5829005,
    -7.2205806,
    -59.52612,
    46.653584,
    -36.16674,
    -52.200714,
    62.911648,
    -55.283875,
    36.670017,
    -1.9119819,
    -23.980917,
    83.43514,
    75.58429,
    -146.40323,
    -0.83789873,
    -116.65344,
    77.724724,
    -66.98289,
    43.35406,
    -57.084316,
    -69.88832,
    45.641315,
    -77.31417,
    -21.075481,
    69.74251,
    87.34511,
    360.0,
    64.503456,
    55.99579,
    -116.66117,
    -132.0847,
    -27.280437,
    10.289295,
    58.051228,
    -129.88243,
    -92.28952,
    1.3102678,
    22.459663,
    -34.126755,
];
// Spacing (depth, height, width): column norms of img.affine (pixdims when qform only).
const INT16_SCALED_SPACING_DHW: [f64; 3] = [2.0, 0.9375, 0.800000011920929];

// int16_scaled.nii.gz: the same image as int16_scaled.nii, gzip-compressed.

// float32_rotated.nii.gz: datatype float32, shape (6, 5, 4), scl_slope 1.0, scl_inter 0.0, sform_code 2, qform_code 0,
// zooms (0.800000011920929, 0.9375, 2.0). Values: np.float32(img.get_fdata()), C order of [x][y][z].
const FLOAT32_ROTATED: [f32; 120] = [
    -0.0,
    -1.657629,
    2.6358411,
    1.059619,
    -1.3635163,
    1.3883252,
    -1.2363048,
    -1.0043316,
    0.77391285,
    -0.40240592,
    -0.29576236,
    1.5958419,
    0.13546984,
    1.650479,
    1.3185921,
    -0.9703623,
    0.31801325,
    1.3298812,
    0.9573401,
    0.2994899,
    1e-42,
    2.283401,
    0.439985,
    2.5193908,
    2.6973674,
    2.328284,
    2.479375,
    -1.5587829,
    0.30823383,
    2.2539356,
    0.9371981,
    -1.099917,
    0.8612369,
    2.4107995,
    2.8132746,
    -1.5170614,
    0.5198144,
    -0.35564843,
    -0.7442486,
    0.96626467,
    -1.1933577,
    2.5185468,
    1.9074057,
    -0.2149937,
    -1.1761309,
    -0.7091694,
    0.92656463,
    1.882544,
    1.8337784,
    1.6674355,
    0.9420001,
    2.6062908,
    -0.62548035,
    -0.9898078,
    2.0415459,
    -1.1470969,
    1.3863592,
    0.8703046,
    -0.020564346,
    -0.015098167,
    0.8324459,
    2.4715679,
    -1.0154467,
    0.58864456,
    -0.8098848,
    -1.4732789,
    -1.8724121,
    -1.3931564,
    -0.40564907,
    1.5886161,
    -1.4871153,
    2.1459656,
    -1.4174157,
    -0.7390609,
    -0.026439175,
    2.0150034,
    2.460042,
    1.799367,
    -1.940599,
    -0.9200559,
    2.6574423,
    -1.551557,
    -1.4517378,
    -0.09036581,
    -1.2889653,
    -1.6496115,
    -0.32181776,
    -1.3442177,
    -0.30237186,
    0.06735417,
    -0.33980674,
    1.6639665,
    -1.0371598,
    -0.32591194,
    2.1982431,
    0.25979048,
    -0.55351496,
    2.49563,
    -0.56492645,
    -0.028145675,
    1.2975713,
    1.6835476,
    0.6881789,
    2.3326335,
    -0.67942095,
    -1.4688234,
    2.4666374,
    12.0,
    -0.26283735,
    2.4021986,
    1.2044606,
    2.2860768,
    1.838495,
    0.112290956,
    2.7472463,
    0.6551245,
    -0.68401945,
    2.3731363,
    2.481613,
    2.2871864,
];
// Spacing (depth, height, width): column norms of img.affine (pixdims when qform only).
const FLOAT32_ROTATED_SPACING_DHW: [f64; 3] = [2.0, 0.937500009963522, 0.7999999922112934];

// uint8_qform_4d.nii: datatype uint8, shape (6, 5, 4, 1), scl_slope 1.0, scl_inter 0.0, sform_code 0, qform_code 1,
// zooms (0.800000011920929, 0.9375, 2.0). Values: np.float32(img.get_fdata()), C order of [x][y][z].
const UINT8_QFORM_4D: [f32; 120] = [
    1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0,
    0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0,
    1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0,
    0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0,
    0.0, 1.0, 0.0, 1.0, 0.0,
];
// Spacing (depth, height, width): column norms of img.affine (pixdims when qform only).
const UINT8_QFORM_4D_SPACING_DHW: [f64; 3] = [2.0, 0.9375, 0.800000011920929];

// float64_bigendian.nii: datatype >f8, shape (6, 5, 4), scl_slope 1.0, scl_inter 0.0, sform_code 2, qform_code 0,
// zooms (0.800000011920929, 0.9375, 2.0). Values: np.float32(img.get_fdata()), C order of [x][y][z].
const FLOAT64_BIGENDIAN: [f32; 120] = [
    0.120201804,
    -0.23171096,
    -0.29334193,
    0.2929839,
    -0.12971307,
    0.27223662,
    -0.3226189,
    0.24441785,
    -0.13445432,
    -0.31323054,
    -0.036141723,
    -0.26618302,
    -0.22123271,
    -0.13607924,
    0.21539806,
    -0.09331144,
    0.006917331,
    -0.05468858,
    -0.11479232,
    -0.12980829,
    0.10101045,
    -0.274451,
    0.13201238,
    0.20688765,
    0.14083886,
    0.18780576,
    -0.24624221,
    0.040825546,
    0.22434828,
    -0.06793751,
    -0.03619768,
    -0.25342536,
    0.14755979,
    -0.24213283,
    0.13032128,
    -0.17891265,
    0.27780056,
    0.23225848,
    0.004233783,
    0.049615562,
    -0.08869653,
    0.06882918,
    -0.3057401,
    0.1465774,
    -0.06186539,
    0.03159162,
    0.17795925,
    0.181871,
    0.2647269,
    -0.08030243,
    -0.22537184,
    0.099888235,
    -0.08736613,
    -0.07428022,
    0.1412407,
    -0.116921484,
    -0.19210368,
    0.10930001,
    0.033769283,
    -0.0018183261,
    -0.28884262,
    0.10470207,
    0.29979962,
    -0.11773314,
    0.294101,
    -0.1638721,
    0.050286446,
    0.19040485,
    -0.25814113,
    0.24842496,
    -0.26251626,
    0.10940583,
    0.098156005,
    0.32178438,
    -0.30377173,
    0.025159394,
    0.21784782,
    0.27447724,
    -0.32894707,
    0.17799921,
    0.15334922,
    -0.29531267,
    0.017903738,
    -0.03530274,
    -0.27292725,
    0.24325137,
    0.17715666,
    0.3210503,
    0.11467158,
    -0.011144889,
    -0.14206423,
    0.08830408,
    0.113030575,
    0.28872633,
    -0.03556318,
    0.053049415,
    -0.17969336,
    -0.07378319,
    -0.12687814,
    -0.012725932,
    -0.19122231,
    -0.2814984,
    0.25702164,
    -0.03734393,
    -0.19480129,
    0.30043238,
    -0.010352439,
    1.3333334,
    0.23125283,
    0.2892001,
    0.1444512,
    0.25020528,
    0.21423344,
    -0.19669153,
    0.039469082,
    -0.055814456,
    -0.1539102,
    -0.11769599,
    0.0029392878,
    0.22170568,
];
// Spacing (depth, height, width): column norms of img.affine (pixdims when qform only).
const FLOAT64_BIGENDIAN_SPACING_DHW: [f64; 3] = [2.0, 0.9375, 0.800000011920929];

// percentile: np.percentile(input.astype(np.float64), p) (numpy 2.4.6, method 'linear');
// the textbook a + (b - a) * t gives a different f64 at p = [30.3, 47.0, 55.0, 83.0].
const PERCENTILE_VALUES: [(f64, f64); 13] = [
    (0.0, -131.2395782470703),
    (0.5, -131.2395782470703),
    (10.0, -105.86160430908203),
    (25.0, -75.62043762207031),
    (30.3, -55.16439801025391),
    (33.3, -42.99886941528321),
    (47.0, -23.89227836608887),
    (50.0, -21.758682250976562),
    (55.0, -11.862005996704097),
    (66.7, 17.2109935836792),
    (83.0, 56.18201507568357),
    (99.5, 153.88199996948242),
    (100.0, 162.47869873046875),
];
// normalize_intensity: input (f32), then for each (low, high) percentile pair
// ((np.clip(a, lo, hi) - lo) / (hi - lo)).astype(np.float32) with a = input.astype(np.float64)
// and lo, hi = np.percentile(a, low), np.percentile(a, high) (numpy 2.4.6, method 'linear').
const PERCENTILE_INPUT: [f32; 37] = [
    -110.98058, -28.793602, -26.313362, -23.68175, 111.88017, -131.23958, 35.890167, 0.5797632, -89.840935, 17.18376,
    72.619415, 11.723705, -54.80144, -122.11965, 162.4787, -78.74102, -79.45858, -131.23958, 31.208538, 10.726449,
    -75.62044, -17.826818, 19.45325, -40.035, -102.44895, -28.842272, 21.270756, -97.87126, -58.746624, 58.949085,
    105.0995, 77.25214, 27.178242, 114.71926, -42.85552, -10.370803, -21.758682,
];
const PERCENTILE_CASES: [((f64, f64), [f32; 37]); 5] = [
    // lo = -131.2395782470703, hi = 153.88199996948242
    (
        (0.5, 99.5),
        [
            0.071053885,
            0.35930628,
            0.3680052,
            0.37723497,
            0.852688,
            0.0,
            0.5861701,
            0.4623268,
            0.14519645,
            0.5205616,
            0.7149897,
            0.5014117,
            0.26808962,
            0.0319861,
            1.0,
            0.18412691,
            0.18161024,
            0.0,
            0.56975037,
            0.49791402,
            0.19507167,
            0.3977698,
            0.5285213,
            0.31987962,
            0.10097667,
            0.3591356,
            0.5348958,
            0.11703189,
            0.2542528,
            0.6670441,
            0.82890636,
            0.73123795,
            0.555615,
            0.86264545,
            0.30998728,
            0.42392012,
            0.38397968,
        ],
    ),
    // lo = -105.86160430908203, hi = 88.39108276367183
    (
        (10.0, 90.0),
        [
            0.0,
            0.39674097,
            0.4095091,
            0.42305645,
            1.0,
            0.0,
            0.72972876,
            0.5479531,
            0.082473345,
            0.6334294,
            0.9188085,
            0.6053214,
            0.26285434,
            0.0,
            1.0,
            0.13961497,
            0.13592103,
            0.0,
            0.70562804,
            0.6001876,
            0.15567952,
            0.45319727,
            0.6451126,
            0.338871,
            0.01756811,
            0.39649042,
            0.654469,
            0.041133758,
            0.2425448,
            0.84843457,
            1.0,
            0.9426574,
            0.6848803,
            1.0,
            0.32435116,
            0.49158034,
            0.43295628,
        ],
    ),
    // lo = -131.2395782470703, hi = 162.47869873046875
    (
        (0.0, 100.0),
        [
            0.06897424,
            0.34878993,
            0.3572342,
            0.36619386,
            0.8277311,
            0.0,
            0.5690138,
            0.44879517,
            0.14094678,
            0.5053255,
            0.694063,
            0.4867361,
            0.26024303,
            0.031049911,
            1.0,
            0.1787378,
            0.17629477,
            0.0,
            0.5530746,
            0.4833408,
            0.1893622,
            0.38612768,
            0.5130523,
            0.3105172,
            0.09802123,
            0.34862423,
            0.5192402,
            0.113606535,
            0.24681118,
            0.6475207,
            0.8046455,
            0.7098357,
            0.53935295,
            0.8373971,
            0.3009144,
            0.4115126,
            0.37274116,
        ],
    ),
    // lo = -75.62043762207031, hi = 27.178241729736328
    (
        (25.0, 75.0),
        [
            0.0, 0.45551983, 0.47964698, 0.50524664, 1.0, 0.0, 1.0, 0.7412566, 0.0, 0.9027762, 1.0, 0.8496621,
            0.20252202, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.83996105, 0.0, 0.562202, 0.9248532, 0.34616628, 0.0,
            0.45504636, 0.94253343, 0.0, 0.16414426, 1.0, 1.0, 1.0, 1.0, 1.0, 0.31872898, 0.63473225, 0.5239538,
        ],
    ),
    // lo = -42.99886941528321, hi = 17.2109935836792
    (
        (33.3, 66.7),
        [
            0.0,
            0.23592925,
            0.2771225,
            0.32082984,
            1.0,
            0.0,
            1.0,
            0.72377896,
            0.0,
            0.99954766,
            1.0,
            0.90886396,
            0.0,
            0.0,
            1.0,
            0.0,
            0.0,
            0.0,
            1.0,
            0.89230096,
            0.0,
            0.4180719,
            1.0,
            0.049225647,
            0.0,
            0.2351209,
            1.0,
            0.0,
            0.0,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            0.002380857,
            0.5419057,
            0.35276923,
        ],
    ),
];
