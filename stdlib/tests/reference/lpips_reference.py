#!/usr/bin/env python3
"""Reference values for `stdlib/tests/lpips.rs`, computed with the `lpips` package (0.1.4).

    python3 stdlib/tests/reference/lpips_reference.py

writes `lpips_reference.json` beside this script. The network is
`lpips.LPIPS(pretrained=False, net='alex', version='0.1', pnet_rand=True)` with every parameter
overwritten by a closed-form formula, so the Rust test can write the same weights into a
safetensors file and load them the way users load the real ones. Images and volumes are closed-form
too; nothing random is involved, and the JSON holds only the results (torch runs on one thread so
that reruns reproduce the file exactly).

The formulas (the Rust test implements them identically):

- `unit(stream, i)`: splitmix64's finaliser of `stream * 2**32 + i`, top 24 bits / 2**24, a float
  in [0, 1) exact in f32 and f64.
- Parameter number `k` in the order of `TENSORS` (stream `k`), element `i` of its flattened
  tensor: trunk weights `(2u - 1) * sqrt(6 / fan_in)`, trunk biases `(2u - 1) * 0.1`, heads `u`
  (non-negative, as lpips' trained heads are); computed in f64, stored as f32.
- An image (or volume) pair with element `i` at coordinates `(c_0, ..., c_k)`:
  `a = 0.6 sin(sum_j f_j c_j + phase) + 0.3 (2 unit(stream, i) - 1)` and
  `b = 0.8 a + 0.2 (2 unit(stream + 1, i) - 1)`, in f64 (the sum accumulated from 0.0 in axis
  order), mapped to [0, 1] by `(x + 1) / 2` for the `unit` range, then rounded to f32.

3D LPIPS is lpips applied to the slices `v[d]`, `v[:, h, :]` and `v[:, :, w]` of both volumes
(each a one-channel image repeated to three channels); the per-axis mean is taken in f64 and the
combined score is the mean of the three per-axis means.
"""

import importlib.metadata
import json
import math
from pathlib import Path

import numpy as np
import torch
import lpips

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "lpips_reference.json"

# (slice, torchvision features index, in channels, out channels, kernel) of AlexNet's five convs.
TRUNK = [(1, 0, 3, 64, 11), (2, 3, 64, 192, 5), (3, 6, 192, 384, 3), (4, 8, 384, 256, 3), (5, 10, 256, 256, 3)]
TAP_CHANNELS = [64, 192, 384, 256, 256]


def tensor_list():
    """lpips' state_dict names and shapes that medgen reads, in medgen's order."""
    tensors = []
    for s, i, cin, cout, k in TRUNK:
        tensors.append((f"net.slice{s}.{i}.weight", [cout, cin, k, k]))
        tensors.append((f"net.slice{s}.{i}.bias", [cout]))
    for layer, c in enumerate(TAP_CHANNELS):
        tensors.append((f"lin{layer}.model.1.weight", [1, c, 1, 1]))
    return tensors


TENSORS = tensor_list()

# name, batch, channels, height, width, range, per-axis frequencies (n, c, h, w), phase, stream
IMAGE_CASES = [
    ("rgb_64x64", 2, 3, 64, 64, "signed", [0.7, 0.9, 0.21, 0.13], 0.0, 1000),
    ("grey_48x79", 2, 1, 48, 79, "signed", [0.5, 0.0, 0.17, 0.29], 0.4, 1010),
    ("rgb_35x67_unit", 1, 3, 35, 67, "unit", [0.0, 1.1, 0.31, 0.07], 1.3, 1020),
]

# (depth, height, width), range, frequencies (d, h, w), phase, stream
VOLUME_CASE = ([32, 33, 34], "signed", [0.19, 0.23, 0.11], 0.6, 2000)


def unit(stream, count):
    """splitmix64's finaliser of stream * 2**32 + i for i < count, as floats in [0, 1)."""
    with np.errstate(over="ignore"):
        x = (np.uint64(stream) << np.uint64(32)) + np.arange(count, dtype=np.uint64)
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def parameter(k, name, shape):
    u = unit(k, int(np.prod(shape)))
    if name.startswith("lin"):
        values = u
    elif name.endswith(".bias"):
        values = (2.0 * u - 1.0) * 0.1
    else:
        fan_in = shape[1] * shape[2] * shape[3]
        values = (2.0 * u - 1.0) * math.sqrt(6.0 / fan_in)
    return torch.from_numpy(values.astype(np.float32).reshape(shape))


def formula_model():
    model = lpips.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=True, verbose=False)
    state = model.state_dict()
    names = {name for name, _ in TENSORS}
    for name, shape in TENSORS:
        assert list(state[name].shape) == shape, (name, state[name].shape, shape)
    others = set(state) - names
    assert all(n.startswith("lins.") or n.startswith("scaling_layer.") for n in others), others
    with torch.no_grad():
        for k, (name, shape) in enumerate(TENSORS):
            state[name].copy_(parameter(k, name, shape))
    model.eval()
    return model


def pair(shape, freqs, phase, stream, value_range):
    """The image or volume pair (a, b) of the module docstring, as f32 tensors."""
    count = int(np.prod(shape))
    noise_a = unit(stream, count)
    noise_b = unit(stream + 1, count)
    a = np.empty(count, dtype=np.float64)
    b = np.empty(count, dtype=np.float64)
    for i, coords in enumerate(np.ndindex(*shape)):
        acc = 0.0
        for f, c in zip(freqs, coords):
            acc += f * c
        va = 0.6 * math.sin(acc + phase) + 0.3 * (2.0 * noise_a[i] - 1.0)
        vb = 0.8 * va + 0.2 * (2.0 * noise_b[i] - 1.0)
        if value_range == "unit":
            va, vb = (va + 1.0) / 2.0, (vb + 1.0) / 2.0
        a[i], b[i] = va, vb
    as_tensor = lambda v: torch.from_numpy(v.astype(np.float32).reshape(shape))
    return as_tensor(a), as_tensor(b)


def image_case(model, name, n, c, h, w, value_range, freqs, phase, stream):
    a, b = pair([n, c, h, w], freqs, phase, stream, value_range)
    if c == 1:
        a, b = a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)
    with torch.no_grad():
        total, layers = model(a, b, retPerLayer=True, normalize=value_range == "unit")
    per_layer = torch.cat([layer.reshape(n, 1) for layer in layers], dim=1)
    return {
        "name": name,
        "shape": [n, c, h, w],
        "range": value_range,
        "freqs": freqs,
        "phase": phase,
        "stream": stream,
        "per_layer": per_layer.tolist(),
        "distance": total.reshape(n).tolist(),
    }


def volume_case(model):
    shape, value_range, freqs, phase, stream = VOLUME_CASE
    a, b = pair(shape, freqs, phase, stream, value_range)
    axes = {
        "depth": lambda v: v,
        "height": lambda v: v.permute(1, 0, 2),
        "width": lambda v: v.permute(2, 0, 1),
    }
    per_slice = {}
    for axis, slices in axes.items():
        sa = slices(a).unsqueeze(1).repeat(1, 3, 1, 1)
        sb = slices(b).unsqueeze(1).repeat(1, 3, 1, 1)
        with torch.no_grad():
            per_slice[axis] = model(sa, sb, normalize=value_range == "unit").flatten().tolist()
    means = {axis: float(np.mean(np.array(v, dtype=np.float64))) for axis, v in per_slice.items()}
    return {
        "shape": shape,
        "range": value_range,
        "freqs": freqs,
        "phase": phase,
        "stream": stream,
        "per_slice": per_slice,
        "means": means,
        "combined": sum(means.values()) / len(means),
    }


def main():
    torch.set_num_threads(1)
    model = formula_model()
    reference = {
        "lpips_version": importlib.metadata.version("lpips"),
        "torch_version": torch.__version__,
        "tensors": [{"name": name, "shape": shape} for name, shape in TENSORS],
        "images": [image_case(model, *case) for case in IMAGE_CASES],
        "volume": volume_case(model),
    }
    OUTPUT.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
