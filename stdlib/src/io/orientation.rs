//! Orientation: which way a NIfTI file's voxel axes point in the scanner's world, and bringing a
//! volume to the one orientation medgen works in, RAS: voxel x increases towards the patient's
//! right (NIfTI's world +x), y towards anterior (+y), z towards superior (+z). It is the
//! orientation of every file medgen writes (a positive diagonal affine) and the one MONAI's
//! `Orientationd(axcodes="RAS")` and nibabel's `as_closest_canonical` produce, so that volumes of
//! patients scanned or exported differently line up voxel for voxel before any model sees them.
//!
//! Reorienting an axis-aligned grid only permutes and flips axes: no voxel is interpolated. An
//! oblique grid (a voxel axis more than [`AXIS_TOLERANCE`] off every world axis) would need
//! resampling, which medgen does not do: it is refused, and the message says so.
//!
//! The voxels stay where they were in the world: flipping an axis makes its last voxel the first,
//! so [`to_ras`] moves the [`Origin`] (the world position of voxel (0, 0, 0)) to where that voxel
//! lies; permuting axes only renames them. The RAS volume with its spacing and origin is the
//! file's grid again, up to the header rounding [`AXIS_TOLERANCE`] allows.

use crate::data::volume::{Origin, Spacing, Volume};

use super::nifti::NiftiErrorKind;

/// The largest component of a unit voxel axis that may point off its world axis (about 0.06°):
/// rounding in headers, not a rotation.
pub const AXIS_TOLERANCE: f64 = 1e-3;

/// Directions of the voxel axes x, y and z in world (R, A, S) coordinates:
/// `direction[world][voxel]`, the columns of the affine's linear part (any length).
pub type Direction = [[f64; 3]; 3];

/// Where one voxel axis points: its world axis (0 = R, 1 = A, 2 = S) and whether it runs the
/// other way (towards L, P or I).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisCode {
    pub world: usize,
    pub flipped: bool,
}

/// The world axis of each voxel axis (x, y, z); an oblique grid, or two voxel axes along one
/// world axis, is an error.
pub fn axis_codes(direction: &Direction) -> Result<[AxisCode; 3], NiftiErrorKind> {
    let mut codes = [AxisCode { world: 0, flipped: false }; 3];
    for (voxel, code) in codes.iter_mut().enumerate() {
        let column = [direction[0][voxel], direction[1][voxel], direction[2][voxel]];
        let norm = column.iter().map(|c| c * c).sum::<f64>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            let reason = "an axis has zero or non-finite length";
            return Err(NiftiErrorKind::DegenerateAffine { affine: Box::new(affine_of(direction)), reason });
        }
        let column = column.map(|c| c / norm);
        let world = (0..3).max_by(|&a, &b| column[a].abs().total_cmp(&column[b].abs())).unwrap_or(0);
        let off_axis = (0..3).filter(|&w| w != world).map(|w| column[w].abs()).fold(0.0, f64::max);
        if off_axis > AXIS_TOLERANCE {
            return Err(NiftiErrorKind::Oblique { direction: Box::new(*direction) });
        }
        *code = AxisCode { world, flipped: column[world] < 0.0 };
    }
    let mut seen = [false; 3];
    for code in &codes {
        if std::mem::replace(&mut seen[code.world], true) {
            return Err(NiftiErrorKind::DegenerateAffine {
                affine: Box::new(affine_of(direction)),
                reason: "two voxel axes point along one world axis",
            });
        }
    }
    Ok(codes)
}

fn affine_of(direction: &Direction) -> [[f64; 4]; 4] {
    let row = |r: usize| [direction[r][0], direction[r][1], direction[r][2], 0.0];
    [row(0), row(1), row(2), [0.0, 0.0, 0.0, 1.0]]
}

/// `volume` (voxels in the file's order: depth = z, height = y, width = x, with voxel (0, 0, 0)
/// at `origin`) with its axes permuted and flipped so that x points to R, y to A and z to S;
/// spacing follows its axes, and the returned origin is where the new voxel (0, 0, 0) lies.
pub fn to_ras(volume: Volume, direction: &Direction, origin: Origin) -> Result<(Volume, Origin), NiftiErrorKind> {
    let codes = axis_codes(direction)?;
    if codes.iter().enumerate().all(|(voxel, code)| code.world == voxel && !code.flipped) {
        return Ok((volume, origin));
    }
    let [depth, height, width] = volume.shape;
    let sizes = [width, height, depth];
    let strides = [1, width, width * height];
    let spacings = [volume.spacing.width, volume.spacing.height, volume.spacing.depth];
    let mut ras_origin = origin.xyz();
    for voxel in (0..3).filter(|&voxel| codes[voxel].flipped) {
        // The flipped axis's last voxel becomes its first: (n - 1) voxel edges along the axis.
        let column = [direction[0][voxel], direction[1][voxel], direction[2][voxel]];
        let norm = column.iter().map(|c| c * c).sum::<f64>().sqrt();
        let edge = sizes[voxel].saturating_sub(1) as f64 * spacings[voxel] / norm;
        ras_origin.iter_mut().zip(column).for_each(|(o, c)| *o += edge * c);
    }
    // For each world axis, the voxel axis that runs along it.
    let mut source = [0usize; 3];
    for (voxel, code) in codes.iter().enumerate() {
        source[code.world] = voxel;
    }
    let out_sizes = source.map(|voxel| sizes[voxel]);
    let mut data = Vec::with_capacity(volume.data.len());
    for z in 0..out_sizes[2] {
        for y in 0..out_sizes[1] {
            for x in 0..out_sizes[0] {
                let index: usize = [x, y, z]
                    .iter()
                    .enumerate()
                    .map(|(world, &at)| {
                        let voxel = source[world];
                        let at = if codes[voxel].flipped { sizes[voxel] - 1 - at } else { at };
                        at * strides[voxel]
                    })
                    .sum();
                data.push(volume.data[index]);
            }
        }
    }
    let spacing = Spacing::from_dhw([spacings[source[2]], spacings[source[1]], spacings[source[0]]]);
    let volume = Volume { shape: [out_sizes[2], out_sizes[1], out_sizes[0]], spacing, data };
    Ok((volume, Origin::from_xyz(ras_origin)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2 × 3 × 4 (depth, height, width) volume whose voxel at (z, y, x) holds 100z + 10y + x.
    fn numbered() -> Volume {
        let data = (0..2).flat_map(|z| (0..3).flat_map(move |y| (0..4).map(move |x| (100 * z + 10 * y + x) as f32)));
        Volume { shape: [2, 3, 4], spacing: Spacing::from_dhw([3.0, 2.0, 1.0]), data: data.collect() }
    }

    fn at(v: &Volume, z: usize, y: usize, x: usize) -> f32 {
        v.data[(z * v.shape[1] + y) * v.shape[2] + x]
    }

    const IDENTITY: Direction = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    const ORIGIN: Origin = Origin { x: 10.0, y: 20.0, z: 30.0 };

    #[test]
    fn ras_is_left_as_it_is() {
        assert_eq!(to_ras(numbered(), &IDENTITY, ORIGIN).unwrap(), (numbered(), ORIGIN));
    }

    #[test]
    fn lps_flips_x_and_y() {
        // x towards L, y towards P (DICOM's LPS): R and A run the other way.
        let lps = [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]];
        let (v, origin) = to_ras(numbered(), &lps, ORIGIN).unwrap();
        assert_eq!(v.shape, [2, 3, 4]);
        assert_eq!(at(&v, 0, 0, 0), 23.0, "R-most, A-most voxel of slice 0 was (y 2, x 3)");
        assert_eq!(at(&v, 1, 2, 3), 100.0);
        assert_eq!(v.spacing, numbered().spacing);
        // File voxel (x 3, y 2, z 0) lies 3 × 1 mm towards L and 2 × 2 mm towards P of the origin.
        assert_eq!(origin, Origin { x: 7.0, y: 16.0, z: 30.0 });
    }

    #[test]
    fn permuted_axes_move_with_their_spacing() {
        // Voxel x runs along S, y along R, z along A (a sagittal stack).
        let permuted = [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]];
        let (v, origin) = to_ras(numbered(), &permuted, ORIGIN).unwrap();
        assert_eq!(v.shape, [4, 2, 3], "depth = file x (4), height = file z (2), width = file y (3)");
        assert_eq!(v.spacing.dhw(), [1.0, 3.0, 2.0]);
        // RAS voxel (x = 2, y = 1, z = 3) is file (x = 3, y = 2, z = 1).
        assert_eq!(at(&v, 3, 1, 2), 123.0);
        assert_eq!(origin, ORIGIN, "nothing is flipped");
    }

    #[test]
    fn a_flipped_permuted_axis_moves_the_origin_along_its_world_axis() {
        // Voxel x runs towards P, y towards S, z towards L; columns as long as the spacing.
        let psl = [[0.0, 0.0, -3.0], [-1.0, 0.0, 0.0], [0.0, 2.0, 0.0]];
        let (v, origin) = to_ras(numbered(), &psl, ORIGIN).unwrap();
        assert_eq!(v.shape, [3, 4, 2], "depth = file y (3), height = file x (4), width = file z (2)");
        // The new voxel 0 is file (x 3, y 0, z 1): 3 voxels of 1 mm towards P, 1 of 3 mm towards L.
        assert_eq!(at(&v, 0, 0, 0), 103.0);
        assert_eq!(origin, Origin { x: 10.0 - 3.0, y: 20.0 - 3.0, z: 30.0 });
    }

    #[test]
    fn oblique_and_repeated_axes_are_refused() {
        let (s, c) = 10f64.to_radians().sin_cos();
        let oblique = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
        assert!(matches!(to_ras(numbered(), &oblique, ORIGIN), Err(NiftiErrorKind::Oblique { .. })));
        let repeated = [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(matches!(to_ras(numbered(), &repeated, ORIGIN), Err(NiftiErrorKind::DegenerateAffine { .. })));
        let within_tolerance = [[1.0, -1e-4, 0.0], [1e-4, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert_eq!(to_ras(numbered(), &within_tolerance, ORIGIN).unwrap(), (numbered(), ORIGIN));
    }
}
