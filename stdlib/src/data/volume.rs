//! A volume in medgen's one memory order: (depth, height, width), row-major, so width varies
//! fastest — the same bytes NIfTI stores with x = width, y = height, z = depth. Voxel spacing
//! travels with the data in the same (depth, height, width) order, in millimetres; conversion
//! to and from a NIfTI affine happens in exactly one place, `io::nifti` (seed pitfall 82).
//!
//! Where a volume lies in the scanner's world is its [`Origin`], kept beside the volume by the
//! code that knows it (a `nifti` dataset's patients) rather than in it: medgen's volumes are in
//! RAS voxel order, so spacing and origin are the whole affine.

use serde::{Deserialize, Serialize};

/// Voxel size in millimetres, in (depth, height, width) order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spacing {
    pub depth: f64,
    pub height: f64,
    pub width: f64,
}

impl Spacing {
    pub fn new(depth: f64, height: f64, width: f64) -> Self {
        Spacing { depth, height, width }
    }

    /// From a `[depth, height, width]` list (a pipeline's `spacing`).
    pub fn from_dhw(v: [f64; 3]) -> Self {
        Spacing { depth: v[0], height: v[1], width: v[2] }
    }

    pub fn dhw(&self) -> [f64; 3] {
        [self.depth, self.height, self.width]
    }

    /// The volume of one voxel, in mm³.
    pub fn voxel_mm3(&self) -> f64 {
        self.depth * self.height * self.width
    }
}

/// Where the centre of a volume's voxel (0, 0, 0) lies in the scanner's world: NIfTI's world
/// coordinates in millimetres, x towards the patient's right, y anterior, z superior (RAS).
///
/// The order is the world's (x, y, z), not the volume's (depth, height, width). For a volume in
/// RAS voxel order (every volume medgen writes, `io::orientation`), x runs along width, y along
/// height and z along depth, so voxel (d, h, w) lies at this origin plus
/// (w · width, h · height, d · depth) of its spacing ([`Origin::of_voxel`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    pub x: f64,
    pub y: f64,
    pub z: f64,
}

impl Origin {
    /// The world's origin: where medgen places volumes that have no patient (the phantom,
    /// unconditioned samples).
    pub const ZERO: Origin = Origin { x: 0.0, y: 0.0, z: 0.0 };

    /// From an `[x, y, z]` list.
    pub fn from_xyz(v: [f64; 3]) -> Self {
        Origin { x: v[0], y: v[1], z: v[2] }
    }

    pub fn xyz(&self) -> [f64; 3] {
        [self.x, self.y, self.z]
    }

    /// Where voxel `index` (depth, height, width; it may lie outside the volume) of an
    /// RAS-ordered volume with this origin and `spacing` lies.
    pub fn of_voxel(&self, index: [isize; 3], spacing: Spacing) -> Origin {
        let [d, h, w] = index.map(|i| i as f64);
        Origin { x: self.x + w * spacing.width, y: self.y + h * spacing.height, z: self.z + d * spacing.depth }
    }
}

/// Shape in (depth, height, width) order.
pub type Shape = [usize; 3];

/// A single-channel volume of `f32` voxels.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub shape: Shape,
    pub spacing: Spacing,
    /// `shape[0] * shape[1] * shape[2]` voxels, width fastest.
    pub data: Vec<f32>,
}

impl Volume {
    pub fn zeros(shape: Shape, spacing: Spacing) -> Self {
        Volume { shape, spacing, data: vec![0.0; shape[0] * shape[1] * shape[2]] }
    }

    /// Flat index of voxel (d, h, w).
    pub fn index(&self, d: usize, h: usize, w: usize) -> usize {
        (d * self.shape[1] + h) * self.shape[2] + w
    }

    pub fn get(&self, d: usize, h: usize, w: usize) -> f32 {
        self.data[self.index(d, h, w)]
    }

    pub fn set(&mut self, d: usize, h: usize, w: usize, v: f32) {
        let i = self.index(d, h, w);
        self.data[i] = v;
    }

    /// One axial slice (fixed depth), `shape[1] * shape[2]` voxels.
    pub fn slice(&self, d: usize) -> &[f32] {
        let n = self.shape[1] * self.shape[2];
        &self.data[d * n..(d + 1) * n]
    }
}

/// How [`Volume::fit_to`] places one axis of `from` voxels in `to`: the copied range starts at
/// voxel `source` of the volume and at voxel `target` of the result, and is `len` voxels long.
/// One of `source` and `target` is 0: the axis is cropped or padded around its centre.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AxisFit {
    source: usize,
    target: usize,
    len: usize,
}

impl AxisFit {
    /// Each axis (depth, height, width) of `from` fitted into `to`.
    fn per_axis(from: Shape, to: Shape) -> [AxisFit; 3] {
        [0, 1, 2].map(|a| AxisFit::new(from[a], to[a]))
    }

    fn new(from: usize, to: usize) -> Self {
        if from >= to {
            AxisFit { source: (from - to) / 2, target: 0, len: to }
        } else {
            AxisFit { source: 0, target: (to - from) / 2, len: from }
        }
    }

    /// The voxel of the volume that becomes the result's voxel 0 (negative where padded).
    fn first_voxel(&self) -> isize {
        self.source as isize - self.target as isize
    }
}

impl Volume {
    /// The volume centred in `shape`: cropped where it is larger, padded with zeros where it is
    /// smaller, axis by axis. Spacing is unchanged; where the result lies in the world is
    /// [`Volume::fitted_origin`].
    pub fn fit_to(&self, shape: Shape) -> Volume {
        let mut out = Volume::zeros(shape, self.spacing);
        let [d, h, w] = AxisFit::per_axis(self.shape, shape);
        for i in 0..d.len {
            for j in 0..h.len {
                let src = self.index(d.source + i, h.source + j, w.source);
                let dst = out.index(d.target + i, h.target + j, w.target);
                out.data[dst..dst + w.len].copy_from_slice(&self.data[src..src + w.len]);
            }
        }
        out
    }

    /// The origin of `self.fit_to(shape)` when this volume, in RAS voxel order, has its voxel
    /// (0, 0, 0) at `origin`: cropping moves it inwards, padding outwards, by whole voxels of
    /// this volume's spacing.
    pub fn fitted_origin(&self, shape: Shape, origin: Origin) -> Origin {
        let first = AxisFit::per_axis(self.shape, shape).map(|fit| fit.first_voxel());
        origin.of_voxel(first, self.spacing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_to_crops_and_pads_around_the_centre() {
        let spacing = Spacing::new(1.0, 1.0, 1.0);
        let mut v = Volume::zeros([2, 4, 4], spacing);
        for (i, x) in v.data.iter_mut().enumerate() {
            *x = i as f32;
        }
        let fitted = v.fit_to([4, 2, 6]);
        assert_eq!(fitted.shape, [4, 2, 6]);
        // Depth 2 -> 4 pads one slice each side; height 4 -> 2 keeps rows 1..3; width 4 -> 6 pads one column each side.
        assert_eq!(fitted.get(0, 0, 1), 0.0);
        assert_eq!(fitted.get(1, 0, 1), v.get(0, 1, 0));
        assert_eq!(fitted.get(2, 1, 4), v.get(1, 2, 3));
        assert_eq!(fitted.get(2, 1, 5), 0.0);
        assert_eq!(v.fit_to([2, 4, 4]), v);
    }

    #[test]
    fn the_fitted_origin_is_where_the_new_first_voxel_was() {
        let v = Volume::zeros([2, 4, 5], Spacing::new(3.0, 2.0, 0.5));
        let origin = Origin { x: 10.0, y: -20.0, z: 5.0 };
        // Depth 2 -> 4 pads one slice (z - 3 mm); height 4 -> 2 crops one row (y + 2 mm); width
        // 5 -> 2 crops one column (x + 0.5 mm).
        assert_eq!(v.fitted_origin([4, 2, 2], origin), Origin { x: 10.5, y: -18.0, z: 2.0 });
        assert_eq!(v.fitted_origin([2, 4, 5], origin), origin);
        assert_eq!(origin.of_voxel([1, 0, -2], v.spacing), Origin { x: 9.0, y: -20.0, z: 8.0 });
    }
}
