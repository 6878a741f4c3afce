#!/usr/bin/env python3
"""Reference values for `stdlib/tests/metrics_image.rs`: PSNR, SSIM and MS-SSIM from MONAI 1.6.1.

    python3 stdlib/tests/reference/metrics_image_reference.py

regenerates `metrics_image_reference.json` beside this script (torch 2.15, MONAI 1.6.1,
scikit-image 0.26, CPU). MONAI computes in float32; its values are the reference the Rust tests
hold to 1e-5.

Inputs are not stored: both sides draw them from the same closed form (`image` below, mirrored
by `image` in the Rust test), a smooth pattern plus noise from SplitMix64, rounded to float32.
`y` is `x` plus more noise and a slow ripple, so the SSIM values sit well inside (0, 1).

Per case the fixture holds:
- `psnr`: `PSNRMetric(max_val=data_range)`;
- `ssim`: `SSIMMetric(spatial_dims, data_range)` (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03);
- `ms_ssim`: `{scales: value}` from `compute_ms_ssim(..., weights=w)`, where `w` is MONAI's five
  standard weights for 5 scales and, for fewer scales S, the first S of them divided by their sum
  (medgen's choice for images too small for 5 scales);
- `ssim_slices` (3D cases): `{axis: value}`, the mean of 2D `SSIMMetric` over the slices taken
  along that axis of the [D, H, W] volume;
- `skimage_psnr`, `skimage_ssim`: scikit-image's `peak_signal_noise_ratio` and
  `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)` in
  float64. They share MONAI's definitions exactly (skimage's window is int(3.5 * 1.5 + 0.5) * 2 + 1
  = 11 taps of the same normalised Gaussian; it filters a reflect-padded image and then crops 5
  pixels per side, which leaves exactly MONAI's unpadded "valid" filtering), so they differ from
  MONAI only by MONAI's float32 rounding, and the Rust f64 implementation is held to them far
  tighter. scikit-image has no MS-SSIM.

Floats are written as strings holding Python's repr, which round-trips them exactly.
"""

import json
import math
from pathlib import Path

import monai
import numpy as np
import skimage
import torch
from monai.metrics import PSNRMetric, SSIMMetric
from monai.metrics.regression import compute_ms_ssim
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "metrics_image_reference.json"

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MASK64 = (1 << 64) - 1

# (name, shape, data_range, MS-SSIM scales to compute). Shapes are [H, W] or [D, H, W].
# MONAI checks MS-SSIM sizes as side // (S - 1)**2 > 10, so a 4-scale case needs sides >= 99.
CASES = [
    ("2d_64x64", [64, 64], 1.0, [1, 2, 3]),
    ("2d_112x100", [112, 100], 1.0, [4]),
    ("2d_192x192", [192, 192], 1.0, [5]),
    ("2d_64x64_range255", [64, 64], 255.0, [3]),
    ("3d_24x40x48", [24, 40, 48], 1.0, [2]),
    ("3d_48x56x64", [48, 56, 64], 1.0, [3]),
]

# Seeds of the two noise streams of a case; the case index is added so cases differ.
SEED_X = 1000
SEED_Y = 2000


def splitmix64(seed, n):
    """n uniforms in [0, 1) with 24 bits each (exact in float32), SplitMix64 from `seed`."""
    out = []
    state = seed & MASK64
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z ^= z >> 31
        out.append((z >> 40) / float(1 << 24))
    return out


def image(shape, seed_x, seed_y):
    """The pair (x, y) of a case as float32 arrays; mirrored by `image` in the Rust test."""
    n = math.prod(shape)
    ux = splitmix64(seed_x, n)
    uy = splitmix64(seed_y, n)
    freqs = [0.21, 0.17, 0.13][-len(shape):]
    x = np.empty(n, dtype=np.float32)
    y = np.empty(n, dtype=np.float32)
    for i, c in enumerate(np.ndindex(*shape)):
        phase = sum(f * k for f, k in zip(freqs, c))
        v = 0.5 + 0.3 * math.sin(phase) * math.cos(0.05 * sum(c)) + 0.15 * (ux[i] - 0.5)
        x[i] = v
        y[i] = v + 0.1 * (uy[i] - 0.5) + 0.05 * math.sin(0.3 * c[0])
    return x.reshape(shape), y.reshape(shape)


def weights(scales):
    w = MS_SSIM_WEIGHTS[:scales]
    return [v / sum(w) for v in w] if scales < len(MS_SSIM_WEIGHTS) else list(w)


def batch(a):
    return torch.from_numpy(a)[None, None]


def slices(a, axis):
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, axis, 0)))[:, None]


def case(index, name, shape, data_range, scales):
    x, y = image(shape, SEED_X + index, SEED_Y + index)
    x = x * np.float32(data_range)
    y = y * np.float32(data_range)
    dims = len(shape)
    tx, ty = batch(x), batch(y)
    out = {
        "name": name,
        "shape": shape,
        "data_range": repr(data_range),
        "psnr": repr(PSNRMetric(max_val=data_range)(tx, ty).item()),
        "ssim": repr(SSIMMetric(spatial_dims=dims, data_range=data_range)(tx, ty).item()),
        "ms_ssim": {
            str(s): repr(compute_ms_ssim(tx, ty, spatial_dims=dims, data_range=data_range, weights=weights(s)).item())
            for s in scales
        },
    }
    if dims == 3:
        metric = SSIMMetric(spatial_dims=2, data_range=data_range, reduction="none")
        out["ssim_slices"] = {
            str(axis): repr(metric(slices(x, axis), slices(y, axis)).double().mean().item()) for axis in range(3)
        }
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    out["skimage_psnr"] = repr(float(peak_signal_noise_ratio(y64, x64, data_range=data_range)))
    out["skimage_ssim"] = repr(
        float(
            structural_similarity(
                x64, y64, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range
            )
        )
    )
    print(
        f"{name}: psnr {out['psnr']} (skimage {out['skimage_psnr']}), ssim {out['ssim']} "
        f"(skimage {out['skimage_ssim']}), ms_ssim {out['ms_ssim']}"
    )
    return out


def main():
    torch.set_num_threads(1)
    fixture = {
        "monai_version": monai.__version__,
        "torch_version": torch.__version__,
        "skimage_version": skimage.__version__,
        "ms_ssim_weights": [repr(w) for w in MS_SSIM_WEIGHTS],
        "cases": [case(i, *c) for i, c in enumerate(CASES)],
    }
    OUTPUT.write_text(json.dumps(fixture, indent=1) + "\n")


if __name__ == "__main__":
    main()
