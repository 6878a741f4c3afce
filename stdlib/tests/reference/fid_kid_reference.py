#!/usr/bin/env python3
"""Reference values for `stdlib/tests/fid_kid.rs`: FID, KID, the bilinear resize and the ResNet-50
feature networks.

    pip install pytorch-fid==0.3.0     # (--no-deps is enough: it needs only numpy, scipy, torch)
    python3 stdlib/tests/reference/fid_kid_reference.py

regenerates `fid_kid_reference.json` beside this script (torch 2.15, torchvision 0.29,
torchmetrics 1.9.0, pytorch-fid 0.3.0, SciPy 1.17, mpmath 1.3, CPU). The Rust tests only read the
JSON; they never run Python. Floats are JSON numbers written by Python's repr, which round-trips
them exactly.

Inputs are not stored: both sides compute them from the same closed forms, mirrored by the
functions of the same names in the Rust test:
- `features(seed, n, d, scale, shift)`: uniforms from SplitMix64's finaliser applied to
  `seed * golden ^ index` (a counter-based generator), centred, mixed with the next column, then
  scaled and shifted by `shift * sin(column)`, rounded to float32 (the Rust `Features` are f32);
- `image(n, h, w)`: a smooth pattern in (0, 1), rounded to float32;
- `weight_values(name, shape)`: every parameter of the ResNet-50s, uniforms in [-1, 1) from the
  same generator seeded with the FNV-1a hash of the parameter's name, scaled per kind of tensor
  (He-like conv weights, BatchNorm statistics near the identity, small residual-branch gains so
  that 16 blocks neither explode nor vanish).

What the fixture holds:
- `fid`: per case, the trace term `tr sqrtm(S1 S2)` by `scipy.linalg.sqrtm` (`trace_scipy`, the
  real part) and by exact arithmetic (`trace_exact`: covariances and eigenvalues of their product
  in 40-digit mpmath from the float32 features), and the FID by pytorch-fid's own
  `calculate_frechet_distance` (`fid_pytorch_fid`, on `np.mean` / `np.cov(rowvar=False)` statistics,
  as its `calculate_activation_statistics` computes them) and from the exact trace (`fid_exact`);
  plus `np.cov` checksums. In the rank-deficient cases (fewer samples than features) SciPy's
  Schur-based square root takes the square roots of the rounding-level eigenvalues of the singular
  product (about 1e-17, so about 3e-9 each) and is off by a few 1e-8; the exact values show it.
- `kid`: torchmetrics' `poly_mmd` (cubic polynomial kernel `(x.y / d + 1)^3`, the unbiased MMD^2
  of `maximum_mean_discrepancy`) on whole sets, in float64.
- `resize`: `torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
  antialias=False)` of single-channel images to a square size, every value.
- `resnet`: features (global average pool of the last stage, 2048 per image) of two images,
  through the preprocessing medgen applies, for
  - `torchvision`: `torchvision.models.resnet50()` (stride in the 3x3 conv, no conv biases,
    BatchNorm eps 1e-5), preprocessing: resize to 64x64, repeat to 3 channels, ImageNet mean/std;
  - `radimagenet`: the ResNet-50 of Warvito/radimagenet-models (`radimagenet_models/models/
    resnet.py`, the PyTorch port of RadImageNet's Keras ResNet50 that MONAI's generative models and
    NV-Generate-CTMR use: stride in the first 1x1 conv, biases on every conv, BatchNorm eps
    1.001e-5; copied below as `RadImageNetResNet50`), preprocessing: no resize, repeat to
    3 channels, BGR order, subtract [0.406, 0.456, 0.485] (MONAI's `subtract_mean`).
  Every 8th feature of each image is stored, with the sum, the sum of squares and the
  `sin(index)`-weighted sum of all 2048.
"""

import json
import math
from pathlib import Path

import mpmath
import numpy as np
import scipy
import scipy.linalg
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchmetrics
import torchvision
from pytorch_fid.fid_score import calculate_frechet_distance
from torchmetrics.image.kid import poly_mmd

OUTPUT = Path(__file__).with_name("fid_kid_reference.json")

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15

FID_CASES = [
    # name, samples, features, seed a, seed b, scale b, shift b
    ("full_rank", 200, 16, 1, 2, 1.3, 0.2),
    ("fewer_samples_than_features", 10, 32, 3, 4, 0.8, -0.1),
    ("rank_deficient_64", 40, 64, 5, 6, 1.1, 0.3),
]
KID_CASES = [
    ("equal_sizes", 50, 16, 7, 8, 1.0, 0.0),
    ("shifted", 40, 24, 9, 10, 1.2, 0.3),
]
RESIZE_CASES = [
    # name, images, height, width, size
    ("up", 2, 9, 12, 16),
    ("down", 1, 40, 36, 16),
    ("mixed", 1, 10, 40, 24),
]
FEATURE_STRIDE = 8
EXACT_DIGITS = 40


def units(seed, count):
    """`count` uniforms in [0, 1): SplitMix64's output function of `seed * golden ^ index + golden`,
    top 53 bits (numpy's uint64 arithmetic wraps like Rust's wrapping ops)."""
    with np.errstate(over="ignore"):
        z = np.uint64((seed * GOLDEN) & MASK) ^ np.arange(count, dtype=np.uint64)
        z = z + np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def features(seed, n, d, scale, shift):
    u = units(seed, n * d).reshape(n, d) - 0.5
    x = u + 0.5 * np.roll(u, -1, axis=1)
    x = scale * x + shift * np.sin(np.arange(d, dtype=np.float64))
    return x.astype(np.float32).astype(np.float64)


def image(n, h, w):
    """`[n, 1, h, w]` values in (0, 1)."""
    ni, hi, wi = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    v = 0.5 + 0.45 * np.sin((0.37 + 0.41 * ni) * hi + (0.23 - 0.11 * ni) * wi + 0.05 * hi * wi / w)
    return torch.from_numpy(v.astype(np.float32)).reshape(n, 1, h, w)


def exact_cov(x):
    n, d = x.shape
    rows = [[mpmath.mpf(float(v)) for v in row] for row in x]
    mean = [mpmath.fsum(rows[i][j] for i in range(n)) / n for j in range(d)]
    c = mpmath.matrix(d, d)
    for j in range(d):
        for k in range(j, d):
            c[j, k] = c[k, j] = mpmath.fsum((rows[i][j] - mean[j]) * (rows[i][k] - mean[k]) for i in range(n)) / (n - 1)
    return mean, c


def fid_case(name, n, d, seed_a, seed_b, scale_b, shift_b):
    a = features(seed_a, n, d, 1.0, 0.0)
    b = features(seed_b, n, d, scale_b, shift_b)
    mu1, s1 = np.mean(a, axis=0), np.cov(a, rowvar=False)
    mu2, s2 = np.mean(b, axis=0), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1.dot(s2))
    trace_scipy = float(np.trace(covmean).real)

    with mpmath.workdps(EXACT_DIGITS):
        m1, c1 = exact_cov(a)
        m2, c2 = exact_cov(b)
        eigenvalues = mpmath.eig(c1 * c2, left=False, right=False)
        trace_exact = mpmath.re(mpmath.fsum(mpmath.sqrt(e) for e in eigenvalues))
        diff = mpmath.fsum((x - y) ** 2 for x, y in zip(m1, m2))
        fid_exact = diff + sum(c1[i, i] for i in range(d)) + sum(c2[i, i] for i in range(d)) - 2 * trace_exact
    return {
        "name": name,
        "samples": n,
        "features": d,
        "seed_a": seed_a,
        "seed_b": seed_b,
        "scale_b": scale_b,
        "shift_b": shift_b,
        "trace_scipy": trace_scipy,
        "trace_exact": float(trace_exact),
        "fid_pytorch_fid": float(calculate_frechet_distance(mu1, s1, mu2, s2)),
        "fid_exact": float(fid_exact),
        "mean_a_sum": float(mu1.sum()),
        "cov_a_trace": float(np.trace(s1)),
        "cov_a_sum": float(s1.sum()),
        "cov_a_first_row": [float(v) for v in s1[0]],
    }


def kid_case(name, n, d, seed_a, seed_b, scale_b, shift_b):
    a = torch.from_numpy(features(seed_a, n, d, 1.0, 0.0))
    b = torch.from_numpy(features(seed_b, n, d, scale_b, shift_b))
    return {
        "name": name,
        "samples": n,
        "features": d,
        "seed_a": seed_a,
        "seed_b": seed_b,
        "scale_b": scale_b,
        "shift_b": shift_b,
        "poly_mmd": float(poly_mmd(a, b)),
    }


def resize_case(name, n, h, w, size):
    x = image(n, h, w)
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return {"name": name, "images": n, "height": h, "width": w, "size": size, "values": [float(v) for v in y.flatten()]}


# ---- ResNet-50s -------------------------------------------------------------------------------


def fnv1a(name):
    """FNV-1a (64 bits) of the name's UTF-8 bytes: the seed of a parameter's values."""
    h = 0xCBF29CE484222325
    for byte in name.encode():
        h = ((h ^ byte) * 0x100000001B3) & MASK
    return h


def weight_values(name, shape):
    """The deterministic value of every parameter; mirrored by `weight_values` in the Rust test."""
    base = 2.0 * units(fnv1a(name), int(np.prod(shape))) - 1.0
    module, kind = name.rsplit(".", 1)
    norm = module.rsplit(".", 1)[-1].startswith("bn") or module.endswith("downsample.1")
    residual_gain = module.endswith("bn3") or module.endswith("downsample.1")
    if kind == "weight" and not norm:
        v = base * math.sqrt(6.0 / np.prod(shape[1:]))
    elif kind == "weight":
        v = (0.3 if residual_gain else 1.0) + 0.1 * base
    elif kind == "bias":
        v = (0.1 if norm else 0.05) * base
    elif kind == "running_mean":
        v = 0.1 * base
    elif kind == "running_var":
        v = 1.0 + 0.25 * (base + 1.0)
    else:
        raise ValueError(f"unexpected parameter {name}")
    return torch.from_numpy(v.astype(np.float32)).reshape(shape)


def set_weights(model):
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value
        else:
            state[key] = weight_values(key, tuple(value.shape))
    model.load_state_dict(state)
    return model.eval()


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=True)


class RadImageNetBottleneck(nn.Module):
    """Warvito/radimagenet-models `Bottleneck` (copied; stride on conv1, biases, eps 1.001e-5)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        width = int(planes)
        self.conv1 = conv1x1(inplanes, width, stride=stride)
        self.bn1 = nn.BatchNorm2d(width, eps=1.001e-5, momentum=0.99)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(width, eps=1.001e-5, momentum=0.99)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, eps=1.001e-5, momentum=0.99)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class RadImageNetResNet50(nn.Module):
    """Warvito/radimagenet-models `ResNet50` (copied): returns the last stage's feature map."""

    def __init__(self):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=True)
        self.bn1 = nn.BatchNorm2d(64, eps=1.001e-5, momentum=0.01)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, stride=2)
        self.layer4 = self._make_layer(512, 3, stride=2)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * 4, stride), nn.BatchNorm2d(planes * 4, eps=1.001e-5, momentum=0.99)
            )
        layers = [RadImageNetBottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [RadImageNetBottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def torchvision_features(x):
    """resize to 64, 3 channels, ImageNet mean/std, torchvision's ResNet-50 without `fc`."""
    model = set_weights(torchvision.models.resnet50())
    model.fc = nn.Identity()
    x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=False)
    x = x.repeat(1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    with torch.no_grad():
        return model((x - mean) / std)


def radimagenet_features(x):
    """MONAI's RadImageNet recipe: 3 channels, RGB -> BGR, subtract_mean, spatial average."""
    model = set_weights(RadImageNetResNet50())
    x = x.repeat(1, 3, 1, 1)[:, [2, 1, 0], ...]
    mean = torch.tensor([0.406, 0.456, 0.485]).reshape(1, 3, 1, 1)
    with torch.no_grad():
        return model(x - mean).mean([2, 3])


def resnet_case(variant, n, h, w, compute):
    f = compute(image(n, h, w)).double()
    weights = torch.sin(torch.arange(f.shape[1], dtype=torch.float64))
    return {
        "variant": variant,
        "images": n,
        "height": h,
        "width": w,
        "stride": FEATURE_STRIDE,
        "strided": [[float(v) for v in row[::FEATURE_STRIDE]] for row in f],
        "sum": [float(v) for v in f.sum(1)],
        "sum_squares": [float(v) for v in (f * f).sum(1)],
        "weighted_sum": [float(v) for v in (f * weights).sum(1)],
    }


def main():
    torch.set_num_threads(1)
    fixture = {
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "torchmetrics": torchmetrics.__version__,
            "scipy": scipy.__version__,
            "mpmath": mpmath.__version__,
        },
        "fid": [fid_case(*case) for case in FID_CASES],
        "kid": [kid_case(*case) for case in KID_CASES],
        "resize": [resize_case(*case) for case in RESIZE_CASES],
        "resnet": [
            resnet_case("torchvision", 2, 50, 60, torchvision_features),
            resnet_case("radimagenet", 2, 64, 64, radimagenet_features),
        ],
    }
    OUTPUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
