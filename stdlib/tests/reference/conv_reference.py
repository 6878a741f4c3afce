#!/usr/bin/env python3
"""Reference values for stdlib/tests/conv.rs, computed by PyTorch.

    python3 stdlib/tests/reference/conv_reference.py

(Re)writes conv_reference.safetensors next to this script. The Rust tests only read that file;
they never run Python. Requires: pip install torch safetensors. Made with torch 2.15 on CPU.

Every case is built with a fixed seed: parameters from PyTorch's default initialisation, inputs and
probes from torch.randn, all in float32. Outputs and gradients are then computed in float64 from
those same float32 values and stored as float32, so the file holds the exact answer rounded once
and the Rust side (f32) is compared with it, not with PyTorch's own f32 rounding. For a case `c`:

    c.weight, c.bias   torch.nn.Conv2d / Conv3d parameters, named as in its state_dict
    c.input            the input
    c.output           the output
    c.probe            a fixed random tensor of the output's shape
    grad.c.<name>      the gradient of sum(output * probe) with respect to input, weight and bias

The cases are listed in CONVS and RESAMPLES below. Most heights and widths have different
parities (the sizes where Candle's stride-2 conv2d backward breaks); conv3d_k133_s122 and
conv3d_k323_p010_s2 have non-cubic kernels, per-axis paddings and strides, and in the latter the
last width position is read by no output. Each conv's float64 output is checked against the
module's own float32 forward.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

OUT = Path(__file__).with_name("conv_reference.safetensors")
SEED = 20240601

# name: (module constructor, input shape)
CONVS = {
    "conv3d_k3": (lambda: nn.Conv3d(4, 5, 3, padding=1), (2, 4, 5, 6, 7)),
    "conv3d_k3_s2": (lambda: nn.Conv3d(4, 5, 3, padding=1, stride=2), (2, 4, 5, 6, 7)),
    "conv3d_k133_s122": (lambda: nn.Conv3d(3, 4, (1, 3, 3), padding=(0, 1, 1), stride=(1, 2, 2)), (1, 3, 4, 8, 9)),
    "conv3d_k323_p010_s2": (lambda: nn.Conv3d(3, 2, (3, 2, 3), padding=(0, 1, 0), stride=2, bias=False),
                            (1, 3, 7, 6, 10)),
    "conv2d_k3": (lambda: nn.Conv2d(4, 6, 3, padding=1), (2, 4, 6, 7)),
    "conv2d_k3_s2": (lambda: nn.Conv2d(4, 6, 3, padding=1, stride=2), (2, 4, 6, 7)),
}

# name: (function, input shape)
RESAMPLES = {
    "upsample2d": (lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), (2, 3, 4, 5)),
    "upsample3d": (lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), (1, 3, 3, 4, 5)),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2), (2, 3, 6, 7)),
    "avg_pool3d": (lambda x: F.avg_pool3d(x, 2), (1, 3, 5, 6, 7)),
}


def record(out, name, run, tensors):
    """Runs `run` in float64 on the float32 `tensors` (input first), records every tensor, the output,
    a probe and the gradients of sum(output * probe)."""
    leaves = {key: t.detach().double().requires_grad_() for key, t in tensors.items()}
    output = run(leaves)
    probe = torch.randn(output.shape)
    (output * probe.double()).sum().backward()
    for key, t in tensors.items():
        out[f"{name}.{key}"] = t.detach().float().contiguous()
        out[f"grad.{name}.{key}"] = leaves[key].grad.float().contiguous()
    out[f"{name}.output"] = output.detach().float().contiguous()
    out[f"{name}.probe"] = probe.contiguous()


def conv_function(conv):
    """The functional form of `conv`, applied to the recorded leaves."""
    functional = F.conv3d if isinstance(conv, nn.Conv3d) else F.conv2d
    return lambda leaves: functional(leaves["input"], leaves["weight"], leaves.get("bias"), stride=conv.stride,
                                     padding=conv.padding)


def main():
    out = {}
    for index, (name, (build, shape)) in enumerate(CONVS.items()):
        torch.manual_seed(SEED + index)
        conv = build()
        params = {key: p.detach() for key, p in conv.state_dict().items()}
        tensors = {"input": torch.randn(shape), **params}
        record(out, name, conv_function(conv), tensors)
        torch.testing.assert_close(conv(tensors["input"]), out[f"{name}.output"], rtol=1e-5, atol=1e-5)
    for index, (name, (function, shape)) in enumerate(RESAMPLES.items()):
        torch.manual_seed(SEED + len(CONVS) + index)
        record(out, name, lambda leaves, function=function: function(leaves["input"]), {"input": torch.randn(shape)})
    save_file(out, OUT)
    print(f"wrote {len(out)} tensors to {OUT}")


if __name__ == "__main__":
    main()
