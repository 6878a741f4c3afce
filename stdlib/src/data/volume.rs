//! A volume in medgen's one memory order: (depth, height, width), row-major, so width varies
//! fastest — the same bytes NIfTI stores with x = width, y = height, z = depth. Voxel spacing
//! travels with the data in the same (depth, height, width) order, in millimetres; conversion
//! to and from a NIfTI affine happens in exactly one place, `io::nifti` (seed pitfall 82).

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

impl Volume {
    /// The volume centred in `shape`: cropped where it is larger, padded with zeros where it is
    /// smaller, axis by axis. Spacing is unchanged.
    pub fn fit_to(&self, shape: Shape) -> Volume {
        let mut out = Volume::zeros(shape, self.spacing);
        // For each axis: where the copied range starts in the source and in the target.
        let offsets: Vec<(usize, usize, usize)> = (0..3)
            .map(|a| {
                let (from, to) = (self.shape[a], shape[a]);
                if from >= to {
                    ((from - to) / 2, 0, to)
                } else {
                    (0, (to - from) / 2, from)
                }
            })
            .collect();
        let [(sd, td, nd), (sh, th, nh), (sw, tw, nw)] = [offsets[0], offsets[1], offsets[2]];
        for d in 0..nd {
            for h in 0..nh {
                let src = self.index(sd + d, sh + h, sw);
                let dst = out.index(td + d, th + h, tw);
                out.data[dst..dst + nw].copy_from_slice(&self.data[src..src + nw]);
            }
        }
        out
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
}
