//! Segmentation metrics on binary masks: Dice, IoU, precision, recall and the percentile
//! Hausdorff distance (HD95) in millimetres.
//!
//! **Binary masks only.** The seeds report a whole evaluation invalidated because a sigmoid output
//! was scored without being thresholded. A [`BinaryMask`] can only be made from a volume whose
//! every voxel is exactly 0 or 1; anything else (0.73, NaN, 255) is refused with an error that says
//! the volume looks like a probability map and names the binarisation to apply
//! ([`binarize_seg`](crate::io::nifti::binarize_seg) for generated masks,
//! [`binarize_gt`](crate::io::nifti::binarize_gt) for ground truth).
//!
//! **Overlap scores** ([`Overlap`]) count voxels in integers and match MONAI 1.6.1's
//! `compute_dice`, `compute_iou` and `compute_confusion_matrix_metric` ("precision",
//! "sensitivity") on binary inputs. The counts add across volumes, for pooled scores.
//!
//! **Hausdorff distance** ([`hausdorff_distance`], [`hd95`]) follows MONAI's
//! `compute_hausdorff_distance(percentile=95, spacing=...)`: the edge of a mask is its foreground
//! voxels with a face neighbour (6 in 3D, 4 within the slice in 2D) that is background or outside
//! the image (SciPy's binary erosion XOR the mask); for every edge voxel of one mask, the Euclidean
//! distance in mm to the nearest edge voxel of the other is taken, both ways; the percentile of
//! each direction's distances (linear interpolation, as `torch.quantile`) is taken and the larger
//! of the two is the result. Distances come from an exact Euclidean distance transform
//! (Felzenszwalb and Huttenlocher, "Distance Transforms of Sampled Functions", 2012: one lower
//! envelope of parabolas per grid line, axis after axis, each with its own spacing) over the
//! bounding box of the two masks, in f64, so a 160×256×256 pair costs a few passes over the box.
//!
//! **Empty masks.** MONAI returns NaN or infinity (or, for Dice with `ignore_empty`, NaN); here
//! every case has an explicit value:
//!
//! | prediction | reference | Dice, IoU | precision | recall | HD |
//! |---|---|---|---|---|---|
//! | empty | empty | 1 | 1 | 1 | absent |
//! | empty | not empty | 0 | absent | 0 | absent |
//! | not empty | empty | 0 | 0 | absent | absent |
//!
//! Both empty is perfect agreement (MONAI's Dice with `ignore_empty=False` says 1 too). A
//! precision with nothing predicted, or a recall with nothing to find, is `None`, as is a
//! Hausdorff distance unless both masks have voxels: no number is made up for an undefined score.

use std::fmt;

use serde::Serialize;

use crate::data::tumours::Geometry;
use crate::data::volume::{Shape, Spacing, Volume};

/// The percentile of [`hd95`].
pub const HD_PERCENTILE: f64 = 95.0;

/// Two masks (or a mask and an image) are on the same grid when their spacings differ by at most
/// this, in mm, along every axis: NIfTI stores spacing as f32, so a volume written by another tool
/// may differ from ours in the last bits.
pub const SPACING_TOLERANCE_MM: f64 = 1e-4;

/// Which mask of a comparison, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskRole {
    Prediction,
    Reference,
}

impl fmt::Display for MaskRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MaskRole::Prediction => "predicted mask",
            MaskRole::Reference => "reference mask",
        })
    }
}

/// Why a segmentation metric could not be computed.
#[derive(Clone, Debug, PartialEq)]
pub enum SegError {
    /// A voxel is neither 0 nor 1.
    NotBinary { role: MaskRole, voxel: [usize; 3], value: f32 },
    /// The two volumes have different shapes.
    ShapeMismatch { prediction: Shape, reference: Shape },
    /// The two volumes have different voxel spacings.
    SpacingMismatch { prediction: [f64; 3], reference: [f64; 3] },
    /// A 2D Hausdorff distance was asked of a volume with more than one slice.
    SlicesNeedOneSlice { depth: usize },
    /// The percentile is outside [0, 100].
    BadPercentile(f64),
}

impl fmt::Display for SegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SegError::NotBinary { role, voxel, value } => write!(
                f,
                "the {role} holds {value} at voxel (depth, height, width) {voxel:?}, but segmentation metrics need \
                 a binary mask of exactly 0 and 1: this looks like a probability map (e.g. a sigmoid output); \
                 threshold it first with io::nifti::binarize_seg (generated masks, threshold 0.5) or \
                 io::nifti::binarize_gt (ground truth)"
            ),
            SegError::ShapeMismatch { prediction, reference } => write!(
                f,
                "the predicted mask has shape {prediction:?} but the reference mask {reference:?} \
                 (depth, height, width); resample or crop them onto the same grid first"
            ),
            SegError::SpacingMismatch { prediction, reference } => write!(
                f,
                "the predicted mask has spacing {prediction:?} mm but the reference mask {reference:?} mm \
                 (depth, height, width); distances in mm need both on the same grid"
            ),
            SegError::SlicesNeedOneSlice { depth } => write!(
                f,
                "a 2D Hausdorff distance needs one 2D image (a volume of depth 1), but this volume has {depth} \
                 slices; score it as a 3D volume, or each slice as its own one-slice volume"
            ),
            SegError::BadPercentile(p) => write!(f, "the Hausdorff percentile must lie in [0, 100], not {p}"),
        }
    }
}

impl std::error::Error for SegError {}

/// A mask whose voxels were checked to be exactly 0 or 1.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryMask {
    shape: Shape,
    spacing: Spacing,
    foreground: Vec<bool>,
}

impl BinaryMask {
    /// Checks that every voxel of `volume` is exactly 0 or 1; `role` names it in the error.
    pub fn from_volume(volume: &Volume, role: MaskRole) -> Result<BinaryMask, SegError> {
        let [_, h, w] = volume.shape;
        let mut foreground = Vec::with_capacity(volume.data.len());
        for (i, &value) in volume.data.iter().enumerate() {
            if value == 1.0 {
                foreground.push(true);
            } else if value == 0.0 {
                foreground.push(false);
            } else {
                return Err(SegError::NotBinary { role, voxel: [i / (h * w), i / w % h, i % w], value });
            }
        }
        Ok(BinaryMask { shape: volume.shape, spacing: volume.spacing, foreground })
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn spacing(&self) -> Spacing {
        self.spacing
    }

    /// One flag per voxel, width fastest.
    pub fn foreground(&self) -> &[bool] {
        &self.foreground
    }

    /// The number of foreground voxels.
    pub fn voxels(&self) -> u64 {
        self.foreground.iter().filter(|&&v| v).count() as u64
    }
}

/// Checks that `prediction` and `reference` lie on the same grid (shape, and spacing within
/// [`SPACING_TOLERANCE_MM`]).
pub fn check_same_grid(prediction: &BinaryMask, reference: &BinaryMask) -> Result<(), SegError> {
    if prediction.shape != reference.shape {
        return Err(SegError::ShapeMismatch { prediction: prediction.shape, reference: reference.shape });
    }
    let (p, r) = (prediction.spacing.dhw(), reference.spacing.dhw());
    if p.iter().zip(&r).any(|(a, b)| (a - b).abs() > SPACING_TOLERANCE_MM) {
        return Err(SegError::SpacingMismatch { prediction: p, reference: r });
    }
    Ok(())
}

/// Voxel counts of a prediction against a reference. They add across volumes ([`Overlap::add`]),
/// so the scores can be pooled over a dataset as well as computed per volume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Overlap {
    pub true_positive: u64,
    pub false_positive: u64,
    pub false_negative: u64,
    pub true_negative: u64,
}

impl Overlap {
    pub fn of(prediction: &BinaryMask, reference: &BinaryMask) -> Result<Overlap, SegError> {
        check_same_grid(prediction, reference)?;
        let mut out = Overlap::default();
        for (&p, &r) in prediction.foreground.iter().zip(&reference.foreground) {
            match (p, r) {
                (true, true) => out.true_positive += 1,
                (true, false) => out.false_positive += 1,
                (false, true) => out.false_negative += 1,
                (false, false) => out.true_negative += 1,
            }
        }
        Ok(out)
    }

    pub fn add(&mut self, other: &Overlap) {
        self.true_positive += other.true_positive;
        self.false_positive += other.false_positive;
        self.false_negative += other.false_negative;
        self.true_negative += other.true_negative;
    }

    fn both_empty(&self) -> bool {
        self.true_positive + self.false_positive + self.false_negative == 0
    }

    /// 2·TP / (2·TP + FP + FN); 1 when both masks are empty.
    pub fn dice(&self) -> f64 {
        if self.both_empty() {
            return 1.0;
        }
        let tp = self.true_positive as f64;
        2.0 * tp / (2.0 * tp + self.false_positive as f64 + self.false_negative as f64)
    }

    /// TP / (TP + FP + FN) (Jaccard); 1 when both masks are empty.
    pub fn iou(&self) -> f64 {
        if self.both_empty() {
            return 1.0;
        }
        let tp = self.true_positive as f64;
        tp / (tp + self.false_positive as f64 + self.false_negative as f64)
    }

    /// TP / (TP + FP); 1 when both masks are empty, `None` when only the prediction is.
    pub fn precision(&self) -> Option<f64> {
        self.ratio(self.true_positive + self.false_positive)
    }

    /// TP / (TP + FN) (sensitivity); 1 when both masks are empty, `None` when only the reference
    /// is.
    pub fn recall(&self) -> Option<f64> {
        self.ratio(self.true_positive + self.false_negative)
    }

    fn ratio(&self, denominator: u64) -> Option<f64> {
        if self.both_empty() {
            Some(1.0)
        } else if denominator == 0 {
            None
        } else {
            Some(self.true_positive as f64 / denominator as f64)
        }
    }
}

/// All segmentation scores of one prediction against its reference.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SegmentationScores {
    pub dice: f64,
    pub iou: f64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// [`hd95`], in mm.
    pub hd95_mm: Option<f64>,
    pub overlap: Overlap,
}

/// Dice, IoU, precision, recall and HD95 of `prediction` against `reference`.
pub fn score(
    prediction: &BinaryMask,
    reference: &BinaryMask,
    geometry: Geometry,
) -> Result<SegmentationScores, SegError> {
    let overlap = Overlap::of(prediction, reference)?;
    Ok(SegmentationScores {
        dice: overlap.dice(),
        iou: overlap.iou(),
        precision: overlap.precision(),
        recall: overlap.recall(),
        hd95_mm: hd95(prediction, reference, geometry)?,
        overlap,
    })
}

/// The 95th-percentile Hausdorff distance in mm ([`hausdorff_distance`] at [`HD_PERCENTILE`]).
pub fn hd95(prediction: &BinaryMask, reference: &BinaryMask, geometry: Geometry) -> Result<Option<f64>, SegError> {
    hausdorff_distance(prediction, reference, geometry, HD_PERCENTILE)
}

/// The symmetric percentile Hausdorff distance in mm, as MONAI's `compute_hausdorff_distance`
/// (see the module doc); `percentile` 100 is the classic (maximum) Hausdorff distance. (MONAI
/// reads `percentile=0` as "no percentile", the maximum; here 0 is the 0th percentile.) `None`
/// unless both masks have foreground voxels. [`Geometry::Slices`] scores a single 2D image and
/// needs a volume of depth 1.
pub fn hausdorff_distance(
    prediction: &BinaryMask,
    reference: &BinaryMask,
    geometry: Geometry,
    percentile: f64,
) -> Result<Option<f64>, SegError> {
    check_same_grid(prediction, reference)?;
    if !(0.0..=100.0).contains(&percentile) {
        return Err(SegError::BadPercentile(percentile));
    }
    if geometry == Geometry::Slices && prediction.shape[0] != 1 {
        return Err(SegError::SlicesNeedOneSlice { depth: prediction.shape[0] });
    }
    if !prediction.foreground.contains(&true) || !reference.foreground.contains(&true) {
        return Ok(None);
    }
    let bbox = BoundingBox::of_union(prediction, reference);
    let pred_edges = edges(&bbox.crop(&prediction.foreground, prediction.shape), bbox.shape, geometry);
    let ref_edges = edges(&bbox.crop(&reference.foreground, reference.shape), bbox.shape, geometry);
    let spacing = reference.spacing.dhw();
    let forward = distances_to(&pred_edges, &ref_edges, bbox.shape, spacing);
    let backward = distances_to(&ref_edges, &pred_edges, bbox.shape, spacing);
    Ok(Some(quantile(forward, percentile).max(quantile(backward, percentile))))
}

/// The smallest box holding every foreground voxel of two masks.
struct BoundingBox {
    origin: [usize; 3],
    shape: Shape,
}

impl BoundingBox {
    /// At least one of the masks must have a foreground voxel.
    fn of_union(a: &BinaryMask, b: &BinaryMask) -> BoundingBox {
        let [_, h, w] = a.shape;
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        for (i, (&x, &y)) in a.foreground.iter().zip(&b.foreground).enumerate() {
            if x || y {
                let at = [i / (h * w), i / w % h, i % w];
                for k in 0..3 {
                    lo[k] = lo[k].min(at[k]);
                    hi[k] = hi[k].max(at[k]);
                }
            }
        }
        BoundingBox { origin: lo, shape: std::array::from_fn(|k| hi[k] - lo[k] + 1) }
    }

    /// The part of `full` (of shape `full_shape`) inside the box.
    fn crop(&self, full: &[bool], full_shape: Shape) -> Vec<bool> {
        let [d, h, w] = self.shape;
        let [od, oh, ow] = self.origin;
        let mut out = Vec::with_capacity(d * h * w);
        for z in 0..d {
            for y in 0..h {
                let start = ((od + z) * full_shape[1] + oh + y) * full_shape[2] + ow;
                out.extend_from_slice(&full[start..start + w]);
            }
        }
        out
    }
}

/// The edge of a mask: foreground voxels with a face neighbour that is background or outside the
/// grid. Under [`Geometry::Slices`] only the neighbours within the slice count.
fn edges(foreground: &[bool], shape: Shape, geometry: Geometry) -> Vec<bool> {
    let [_, h, w] = shape;
    let steps: &[(usize, i64, usize)] = match geometry {
        Geometry::Volume => &[(0, -1, h * w), (0, 1, h * w), (1, -1, w), (1, 1, w), (2, -1, 1), (2, 1, 1)],
        Geometry::Slices => &[(1, -1, w), (1, 1, w), (2, -1, 1), (2, 1, 1)],
    };
    let mut out = vec![false; foreground.len()];
    for (i, &inside) in foreground.iter().enumerate() {
        if !inside {
            continue;
        }
        let at = [i / (h * w), i / w % h, i % w];
        out[i] = steps.iter().any(|&(axis, dir, stride)| {
            let next = at[axis] as i64 + dir;
            next < 0 || next >= shape[axis] as i64 || !foreground[(i as i64 + dir * stride as i64) as usize]
        });
    }
    out
}

/// For every voxel of `from`, the distance in mm to the nearest voxel of `to` (which must have
/// one), in raster order.
fn distances_to(from: &[bool], to: &[bool], shape: Shape, spacing: [f64; 3]) -> Vec<f64> {
    let squared = squared_distance_transform(to, shape, spacing);
    from.iter().zip(&squared).filter(|(&f, _)| f).map(|(_, &d2)| d2.sqrt()).collect()
}

/// The exact squared Euclidean distance (mm²) from every voxel to the nearest site, by one 1D
/// lower-envelope pass per axis (Felzenszwalb and Huttenlocher); infinite where there is no site.
fn squared_distance_transform(sites: &[bool], shape: Shape, spacing: [f64; 3]) -> Vec<f64> {
    let [d, h, w] = shape;
    let mut field: Vec<f64> = sites.iter().map(|&s| if s { 0.0 } else { f64::INFINITY }).collect();
    let mut envelope = Envelope::default();
    let mut line = Vec::new();
    let mut out = Vec::new();
    // (stride along the axis, its length, spacing, the other two axes' (stride, length)).
    let passes = [
        (1, w, spacing[2], [(h * w, d), (w, h)]),
        (w, h, spacing[1], [(h * w, d), (1, w)]),
        (h * w, d, spacing[0], [(w, h), (1, w)]),
    ];
    for (stride, len, step, [(outer_stride, outer_len), (inner_stride, inner_len)]) in passes {
        for a in 0..outer_len {
            for b in 0..inner_len {
                let start = a * outer_stride + b * inner_stride;
                line.clear();
                line.extend((0..len).map(|k| field[start + k * stride]));
                envelope.transform(&line, step, &mut out);
                for (k, &v) in out.iter().enumerate() {
                    field[start + k * stride] = v;
                }
            }
        }
    }
    field
}

/// Work buffers of the 1D transform: the parabolas of the lower envelope and where each starts.
#[derive(Default)]
struct Envelope {
    vertices: Vec<usize>,
    starts: Vec<f64>,
}

impl Envelope {
    /// `out[p] = min_q (step·(p − q))² + f[q]` over the finite `f[q]`; infinite when none is.
    fn transform(&mut self, f: &[f64], step: f64, out: &mut Vec<f64>) {
        self.vertices.clear();
        self.starts.clear();
        for (q, &fq) in f.iter().enumerate() {
            if fq.is_infinite() {
                continue;
            }
            let xq = q as f64 * step;
            while let Some(&p) = self.vertices.last() {
                let xp = p as f64 * step;
                let meet = ((fq + xq * xq) - (f[p] + xp * xp)) / (2.0 * (xq - xp));
                if meet <= *self.starts.last().expect("one start per vertex") {
                    self.vertices.pop();
                    self.starts.pop();
                } else {
                    self.vertices.push(q);
                    self.starts.push(meet);
                    break;
                }
            }
            if self.vertices.is_empty() {
                self.vertices.push(q);
                self.starts.push(f64::NEG_INFINITY);
            }
        }
        out.clear();
        if self.vertices.is_empty() {
            out.resize(f.len(), f64::INFINITY);
            return;
        }
        let mut k = 0;
        for p in 0..f.len() {
            let x = p as f64 * step;
            while k + 1 < self.vertices.len() && self.starts[k + 1] < x {
                k += 1;
            }
            let v = self.vertices[k];
            let dx = x - v as f64 * step;
            out.push(dx * dx + f[v]);
        }
    }
}

/// The `percentile`-th percentile of `values` (not empty) with linear interpolation between the
/// two nearest ranks, as `torch.quantile` and NumPy's default.
fn quantile(mut values: Vec<f64>, percentile: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = percentile / 100.0 * (values.len() - 1) as f64;
    let below = rank.floor() as usize;
    let above = rank.ceil() as usize;
    values[below] + (values[above] - values[below]) * (rank - below as f64)
}
