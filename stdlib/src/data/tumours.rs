//! Tumours measured from a mask: connected components (26-connectivity, as scikit-image's
//! `label` with full connectivity) and each one's longest diameter in millimetres — the largest
//! distance between the centres of two of its voxels, through the voxel spacing (a Feret
//! diameter on the voxel grid; seed pitfall 28 bins tumours by it). The `nifti` dataset kind
//! records these, so `seg_conditioned` size bins exist for real data as for the phantom.

use crate::data::volume::Volume;

/// Longest diameters (mm) of the mask's connected components, largest first.
pub fn diameters(mask: &Volume) -> Vec<f64> {
    let [d, h, w] = mask.shape;
    let mut label = vec![0u32; mask.data.len()];
    let mut out = Vec::new();
    for start in 0..mask.data.len() {
        if mask.data[start] <= 0.5 || label[start] != 0 {
            continue;
        }
        let id = out.len() as u32 + 1;
        label[start] = id;
        let mut stack = vec![start];
        let mut surface: Vec<[f64; 3]> = Vec::new();
        while let Some(i) = stack.pop() {
            let (z, y, x) = (i / (h * w), i / w % h, i % w);
            let mut boundary = false;
            for dz in -1i64..=1 {
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (nz, ny, nx) = (z as i64 + dz, y as i64 + dy, x as i64 + dx);
                        if nz < 0 || ny < 0 || nx < 0 || nz >= d as i64 || ny >= h as i64 || nx >= w as i64 {
                            boundary = true;
                            continue;
                        }
                        let j = mask.index(nz as usize, ny as usize, nx as usize);
                        if mask.data[j] <= 0.5 {
                            boundary = true;
                        } else if label[j] == 0 {
                            label[j] = id;
                            stack.push(j);
                        }
                    }
                }
            }
            if boundary {
                let s = mask.spacing;
                surface.push([z as f64 * s.depth, y as f64 * s.height, x as f64 * s.width]);
            }
        }
        out.push(longest(&surface));
    }
    out.sort_by(|a, b| b.total_cmp(a));
    out
}

/// The largest distance between two points (the farthest pair lies on the surface).
fn longest(points: &[[f64; 3]]) -> f64 {
    let mut best = 0.0f64;
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let d2 = (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2);
            best = best.max(d2);
        }
    }
    best.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::volume::Spacing;

    #[test]
    fn components_and_their_longest_diameters() {
        let mut mask = Volume::zeros([3, 10, 10], Spacing::new(2.0, 1.0, 0.5));
        // A bar along width: voxels 1..=7 at depth 1, row 2 → (7 - 1) * 0.5 mm = 3 mm.
        for x in 1..=7 {
            mask.set(1, 2, x, 1.0);
        }
        // A single voxel elsewhere, diagonal neighbours only of nothing: 0 mm.
        mask.set(0, 8, 8, 1.0);
        // Two voxels touching by a corner belong together (26-connectivity): sqrt(2² + 1² + 0.5²).
        mask.set(0, 5, 0, 1.0);
        mask.set(1, 6, 1, 1.0);
        let d = diameters(&mask);
        assert_eq!(d.len(), 3);
        assert!((d[0] - 3.0).abs() < 1e-9, "{d:?}");
        assert!((d[1] - (4.0f64 + 1.0 + 0.25).sqrt()).abs() < 1e-9, "{d:?}");
        assert_eq!(d[2], 0.0);
    }
}
