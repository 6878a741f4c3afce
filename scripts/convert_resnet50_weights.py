#!/usr/bin/env python3
"""Converts a ResNet-50 checkpoint into the safetensors file medgen's FID/KID features read.

Two layouts are accepted, and medgen tells them apart by their tensors:

- RadImageNet's ResNet-50 (the intended one, as MONAI's generative models and MAISI use it):
  `torch.hub.load("Warvito/radimagenet-models", "radimagenet_resnet50")`, whose convolutions all
  have biases (`conv1.bias` present);
- torchvision's `resnet50` (`resnet50-11ad3fa6.pth` / `resnet50-0676ba61.pth`).

The input is a checkpoint saved with `torch.save`: a state_dict, a dict holding one under
`state_dict` or `model`, or a whole pickled module. The output holds every tensor but the
classifier (`fc.*`) and BatchNorm's `num_batches_tracked`, as contiguous f32, under the
checkpoint's own names (torchvision's `conv1.weight`, `layer1.0.conv1.weight`, `bn1.running_mean`, ...),
with the source file's SHA-256 in the metadata. Runs offline. Needs torch and safetensors.

Usage:

    python3 scripts/convert_resnet50_weights.py --input radimagenet_resnet50.pt \\
        --output weights/radimagenet_resnet50.safetensors

To make the input once, where the network is reachable:

    import torch
    m = torch.hub.load("Warvito/radimagenet-models", "radimagenet_resnet50", trust_repo=True)
    torch.save(m.state_dict(), "radimagenet_resnet50.pt")
"""

import argparse
import hashlib
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file


def state_dict(loaded):
    if isinstance(loaded, torch.nn.Module):
        return loaded.state_dict()
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            return loaded[key]
    if isinstance(loaded, dict):
        return loaded
    sys.exit(f"not a state_dict or a module: {type(loaded).__name__}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, type=Path, help="the torch checkpoint")
    parser.add_argument("--output", required=True, type=Path, help="the safetensors file to write")
    args = parser.parse_args()
    loaded = torch.load(args.input, map_location="cpu", weights_only=False)
    tensors = {}
    for name, value in state_dict(loaded).items():
        name = name.removeprefix("module.")
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        tensors[name] = value.detach().to(torch.float32).contiguous()
    missing = [n for n in ("conv1.weight", "layer4.2.conv3.weight", "bn1.running_var") if n not in tensors]
    if missing:
        sys.exit(f"{args.input}: not a ResNet-50 with torchvision's names (missing {', '.join(missing)})")
    variant = "RadImageNet" if "conv1.bias" in tensors else "torchvision"
    digest = hashlib.sha256(args.input.read_bytes()).hexdigest()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.output), metadata={"source": args.input.name, "source_sha256": digest, "variant": variant})
    print(f"{args.output}: {len(tensors)} tensors, {variant} layout")


if __name__ == "__main__":
    main()
