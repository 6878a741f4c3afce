#!/usr/bin/env python3
"""Reference values for stdlib/tests/metrics_seg.rs (segmentation and regional metrics).

    python3 stdlib/tests/reference/metrics_seg_reference.py

(Re)writes metrics_seg_reference.json next to this script; the Rust tests only read that file.
Made with MONAI 1.6.1, SciPy 1.17.1, scikit-image 0.26.0, NumPy and torch on CPU.

Inputs are never stored, only the recipe that builds them, which the Rust test follows exactly:

- A mask is the union of axis-aligned ellipsoids given in voxels, (cz, cy, cx, rz, ry, rx), all
  integers, with semi-axes r + 1/2 (so r = 0 is one voxel thick): with a = 2r + 1 per axis, voxel
  (z, y, x) is inside when (2dz)²·ay²·ax² + (2dy)²·az²·ax² + (2dx)²·az²·ay² <= az²·ay²·ax²
  (integer arithmetic, no rounding).
  Optionally some voxels are then flipped: one splitmix64 draw per voxel in raster order (width
  fastest), flipped when `draw >> 40 < flip_below` (a 24-bit threshold). A purely random mask is
  the empty union with flips.
- An image is one splitmix64 draw per voxel, `(draw >> 40) / 2**24` (exact in float32). A
  generated image is `reference + scale * noise` in float32, with the scale inside or outside the
  tumour mask given per case, `noise` another such image.

References:

- components: scipy.ndimage.label with a full 3x3x3 structure (26-connectivity) or, for stacks of
  2D slices, with only the middle plane of it (8-connectivity within a slice), label arrays stored;
- Feret diameters: brute-force maximum over all pairs of voxel centres (scipy.spatial.distance.pdist
  on coordinates times spacing); plus scikit-image's regionprops feret_diameter_max on the 2D
  components, or null where it raises (it measures to pixel edges, so only a bound is checked);
- Dice, IoU, precision, recall: monai.metrics.compute_dice, compute_iou, and
  compute_confusion_matrix_metric("precision" / "sensitivity") over get_confusion_matrix;
- HD95 and HD: monai.metrics.compute_hausdorff_distance(percentile=95 or None,
  include_background=True, spacing=...), on (H, W) arrays for single-slice 2D cases;
- regional errors: NumPy float64 sums over voxels, pooled over volumes.
"""

import json
from pathlib import Path

import numpy as np
import scipy
import skimage
import torch
import monai
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)
from scipy import ndimage
from scipy.spatial.distance import pdist
from skimage.measure import regionprops

OUT = Path(__file__).with_name("metrics_seg_reference.json")
MASK64 = (1 << 64) - 1

# RANO-BM bins by longest diameter in mm (stdlib/src/data/phantom.rs).
TINY_BELOW_MM, SMALL_BELOW_MM, LARGE_ABOVE_MM = 10.0, 20.0, 30.0


def splitmix64(seed, n):
    """n draws of splitmix64 from `seed`, as Python ints."""
    state = seed & MASK64
    out = []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append(z ^ (z >> 31))
    return out


def build_mask(spec):
    d, h, w = spec["shape"]
    z, y, x = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    mask = np.zeros((d, h, w), dtype=bool)
    for cz, cy, cx, rz, ry, rx in spec["ellipsoids"]:
        az, ay, ax = 2 * rz + 1, 2 * ry + 1, 2 * rx + 1
        lhs = (2 * (z - cz)) ** 2 * ay**2 * ax**2 + (2 * (y - cy)) ** 2 * az**2 * ax**2 \
            + (2 * (x - cx)) ** 2 * az**2 * ay**2
        mask |= lhs <= az**2 * ay**2 * ax**2
    flips = spec.get("flips")
    if flips is not None:
        draws = np.array([v >> 40 for v in splitmix64(flips["seed"], d * h * w)], dtype=np.int64)
        mask ^= (draws < flips["below"]).reshape(d, h, w)
    return mask


def build_image(shape, seed):
    draws = np.array([v >> 40 for v in splitmix64(seed, int(np.prod(shape)))], dtype=np.float64)
    return (draws / 2.0**24).astype(np.float32).reshape(shape)


def build_generated(reference, noise, mask, inside, outside):
    scale = np.where(mask, np.float32(inside), np.float32(outside)).astype(np.float32)
    return (reference + scale * noise).astype(np.float32)


def brute_feret(labels, count, spacing):
    out = []
    for k in range(1, count + 1):
        coords = np.argwhere(labels == k).astype(np.float64) * np.asarray(spacing, dtype=np.float64)
        out.append(float(np.sqrt(pdist(coords, "sqeuclidean").max())) if len(coords) > 1 else 0.0)
    return out


def size_bin(d):
    if d < TINY_BELOW_MM:
        return "tiny"
    if d < SMALL_BELOW_MM:
        return "small"
    if d <= LARGE_ABOVE_MM:
        return "medium"
    return "large"


# ---- Components and Feret diameters ---------------------------------------------------------------

COMPONENT_CASES = [
    # Sparse random voxels in 3D (below the 26-neighbour percolation threshold: many components).
    {"name": "random_3d", "geometry": "volume", "shape": [9, 11, 13], "spacing": [2.0, 0.9, 0.7],
     "ellipsoids": [], "flips": {"seed": 11, "below": 1_300_000}},
    # Random pixels, each slice its own 2D image (8-connectivity).
    {"name": "random_slices", "geometry": "slices", "shape": [4, 16, 18], "spacing": [3.0, 0.8, 1.1],
     "ellipsoids": [], "flips": {"seed": 12, "below": 4_800_000}},
    # Ellipsoids (one clipped by the border, one a single slice thick) with a few flipped voxels.
    {"name": "ellipsoids_3d", "geometry": "volume", "shape": [14, 22, 26], "spacing": [2.5, 0.9, 0.7],
     "ellipsoids": [[4, 6, 7, 3, 5, 6], [10, 15, 18, 3, 6, 7], [7, 0, 22, 2, 3, 3], [12, 3, 20, 0, 2, 4]],
     "flips": {"seed": 13, "below": 200_000}},
]


def components_case(case):
    mask = build_mask(case)
    if case["geometry"] == "volume":
        structure = np.ones((3, 3, 3), dtype=bool)
    else:
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = True
    labels, count = ndimage.label(mask, structure=structure)
    feret = brute_feret(labels, count, case["spacing"])
    out = {**case, "count": int(count), "labels": labels.ravel().tolist(), "feret_mm": feret}
    if case["geometry"] == "slices":
        out["skimage_feret_mm"] = skimage_feret_2d(labels, case["spacing"])
    return out


def skimage_feret_2d(labels, spacing):
    """scikit-image's feret_diameter_max of every component (each within one slice), or None where
    it raises on a degenerate region."""
    out = {}
    for z in range(labels.shape[0]):
        for region in regionprops(labels[z], spacing=tuple(spacing[1:])):
            try:
                out[region.label] = float(region.feret_diameter_max)
            except Exception:  # QhullError or ValueError on flat regions (seed pitfall 74)
                out[region.label] = None
    return [out[k] for k in sorted(out)]


# ---- Overlap scores and Hausdorff distances --------------------------------------------------------

PAIR_CASES = [
    # Two offset ellipsoids, anisotropic spacing.
    {"name": "offset_ellipsoids", "geometry": "volume", "spacing": [2.5, 0.9, 0.7],
     "prediction": {"shape": [20, 34, 30], "ellipsoids": [[9, 16, 14, 5, 11, 9]]},
     "reference": {"shape": [20, 34, 30], "ellipsoids": [[10, 18, 12, 6, 10, 10]]}},
    # The same ellipsoid with scattered false positives and holes: the percentile matters.
    {"name": "noisy_prediction", "geometry": "volume", "spacing": [1.5, 1.0, 0.8],
     "prediction": {"shape": [16, 24, 28], "ellipsoids": [[8, 12, 14, 5, 8, 9]],
                    "flips": {"seed": 21, "below": 300_000}},
     "reference": {"shape": [16, 24, 28], "ellipsoids": [[8, 12, 14, 5, 8, 9]]}},
    # Several components, clipped by the image border on both sides.
    {"name": "border_components", "geometry": "volume", "spacing": [3.0, 0.75, 0.9],
     "prediction": {"shape": [12, 26, 22], "ellipsoids": [[0, 5, 4, 3, 6, 5], [11, 20, 18, 4, 7, 6]]},
     "reference": {"shape": [12, 26, 22], "ellipsoids": [[1, 4, 3, 3, 5, 5], [9, 21, 21, 3, 6, 5],
                                                         [6, 12, 10, 1, 1, 1]]}},
    # Sparse random masks: many tiny components, most voxels edges.
    {"name": "random_masks", "geometry": "volume", "spacing": [2.0, 1.1, 0.6],
     "prediction": {"shape": [10, 14, 12], "ellipsoids": [], "flips": {"seed": 31, "below": 3_000_000}},
     "reference": {"shape": [10, 14, 12], "ellipsoids": [], "flips": {"seed": 32, "below": 3_000_000}}},
    # One 2D image (depth 1): MONAI on the (H, W) array, edges within the plane.
    {"name": "ellipses_2d", "geometry": "slices", "spacing": [5.0, 0.8, 1.3],
     "prediction": {"shape": [1, 40, 36], "ellipsoids": [[0, 18, 16, 1, 12, 9], [0, 35, 4, 1, 3, 2]]},
     "reference": {"shape": [1, 40, 36], "ellipsoids": [[0, 21, 18, 1, 11, 10]],
                   "flips": {"seed": 41, "below": 500_000}}},
]

# Empty masks: MONAI's own answers are recorded to document why medgen chooses explicit values.
EMPTY_CASES = [
    {"name": "both_empty", "geometry": "volume", "spacing": [1.0, 1.0, 1.0],
     "prediction": {"shape": [4, 5, 6], "ellipsoids": []}, "reference": {"shape": [4, 5, 6], "ellipsoids": []}},
    {"name": "prediction_empty", "geometry": "volume", "spacing": [1.0, 1.0, 1.0],
     "prediction": {"shape": [4, 5, 6], "ellipsoids": []},
     "reference": {"shape": [4, 5, 6], "ellipsoids": [[2, 2, 3, 1, 1, 2]]}},
    {"name": "reference_empty", "geometry": "volume", "spacing": [1.0, 1.0, 1.0],
     "prediction": {"shape": [4, 5, 6], "ellipsoids": [[2, 2, 3, 1, 1, 2]]},
     "reference": {"shape": [4, 5, 6], "ellipsoids": []}},
]


def as_batch(mask, geometry):
    """[1, 1, ...] float tensor; a 2D case drops the depth axis."""
    array = mask[0] if geometry == "slices" else mask
    return torch.from_numpy(array.astype(np.float32))[None, None]


def finite_or_str(value):
    value = float(value)
    return value if np.isfinite(value) else str(value)


def pair_case(case):
    pred, ref = build_mask(case["prediction"]), build_mask(case["reference"])
    p, r = as_batch(pred, case["geometry"]), as_batch(ref, case["geometry"])
    spacing = case["spacing"][1:] if case["geometry"] == "slices" else case["spacing"]
    confusion = get_confusion_matrix(p, r, include_background=True)
    out = {
        **case,
        "voxels": [int(pred.sum()), int(ref.sum())],
        "dice": finite_or_str(compute_dice(p, r, include_background=True, ignore_empty=False)),
        "dice_ignore_empty": finite_or_str(compute_dice(p, r, include_background=True, ignore_empty=True)),
        "iou": finite_or_str(compute_iou(p, r, include_background=True, ignore_empty=False)),
        "precision": finite_or_str(compute_confusion_matrix_metric("precision", confusion)),
        "recall": finite_or_str(compute_confusion_matrix_metric("sensitivity", confusion)),
    }
    for key, percentile in [("hd95_mm", 95), ("hd_mm", None)]:
        hd = compute_hausdorff_distance(p, r, include_background=True, percentile=percentile, spacing=spacing)
        out[key] = finite_or_str(hd)
    return out


# ---- Regional errors -------------------------------------------------------------------------------

REGIONAL_SPACING = [2.0, 1.2, 1.1]
REGIONAL_SHAPE = [16, 28, 30]
# Per volume: the tumour mask's recipe and, per modality, the image seeds and noise scales.
REGIONAL_VOLUMES = [
    {"mask": {"shape": REGIONAL_SHAPE, "ellipsoids": [
        [5, 13, 8, 3, 12, 4],     # longest along height: 24 * 1.2 = 28.8 mm, medium
        [11, 7, 22, 2, 4, 6],     # 12 * 1.1 = 13.2 mm, small
        [3, 25, 25, 0, 0, 0],     # a single voxel: 0 mm, tiny
        [13, 24, 15, 0, 0, 3],    # a line of 7 voxels along width: 6.6 mm, tiny
        [14, 15, 4, 0, 3, 2],     # a one-slice plane: tiny
     ]},
     "modalities": {"t1_pre": {"reference_seed": 101, "noise_seed": 102, "inside": 0.25, "outside": 0.05},
                    "t1_gd": {"reference_seed": 103, "noise_seed": 104, "inside": 0.5, "outside": 0.02}}},
    {"mask": {"shape": REGIONAL_SHAPE, "ellipsoids": [
        [8, 14, 15, 5, 13, 5],    # 26 * 1.2 = 31.2 mm, large
        [2, 3, 3, 1, 1, 1],       # tiny
     ]},
     "modalities": {"t1_pre": {"reference_seed": 201, "noise_seed": 202, "inside": 0.1, "outside": 0.1},
                    "t1_gd": {"reference_seed": 203, "noise_seed": 204, "inside": 0.75, "outside": 0.01}}},
]


def regional():
    bins = ["tiny", "small", "medium", "large"]
    totals = {}
    volumes = []
    for volume in REGIONAL_VOLUMES:
        mask = build_mask(volume["mask"])
        labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
        feret = brute_feret(labels, count, REGIONAL_SPACING)
        per_modality = {}
        for modality, m in volume["modalities"].items():
            reference = build_image(REGIONAL_SHAPE, m["reference_seed"])
            noise = build_image(REGIONAL_SHAPE, m["noise_seed"])
            generated = build_generated(reference, noise, mask, m["inside"], m["outside"])
            diff = generated.astype(np.float64) - reference.astype(np.float64)
            tumours = []
            for k in range(1, count + 1):
                d = diff[labels == k]
                tumours.append({"voxels": int(d.size), "feret_mm": feret[k - 1], "bin": size_bin(feret[k - 1]),
                                "mse": float(np.mean(d**2)), "l1": float(np.mean(np.abs(d)))})
            per_modality[modality] = tumours
            acc = totals.setdefault(modality, {"tumour": [], "background": [], **{b: [] for b in bins}})
            acc["tumour"].append(diff[mask])
            acc["background"].append(diff[~mask])
            for k, t in enumerate(tumours, start=1):
                acc[t["bin"]].append(diff[labels == k])
        volumes.append({**volume, "count": int(count), "tumours": per_modality})

    def pooled(parts):
        d = np.concatenate(parts) if parts else np.zeros(0)
        if d.size == 0:
            return {"voxels": 0, "mse": None, "l1": None}
        return {"voxels": int(d.size), "mse": float(np.mean(d**2)), "l1": float(np.mean(np.abs(d)))}

    reports = {m: {region: pooled(parts) for region, parts in acc.items()} for m, acc in totals.items()}
    return {"spacing": REGIONAL_SPACING, "volumes": volumes, "pooled": reports}


def main():
    reference = {
        "versions": {"monai": monai.__version__, "scipy": scipy.__version__, "skimage": skimage.__version__,
                     "numpy": np.__version__, "torch": torch.__version__},
        "components": [components_case(c) for c in COMPONENT_CASES],
        "pairs": [pair_case(c) for c in PAIR_CASES],
        "empty": [pair_case(c) for c in EMPTY_CASES],
        "regional": regional(),
    }
    OUT.write_text(json.dumps(reference, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
