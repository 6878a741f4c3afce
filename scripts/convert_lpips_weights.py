#!/usr/bin/env python3
"""Converts the official LPIPS AlexNet-lin weights into the one safetensors file medgen reads.

LPIPS (lpips 0.1.4, `lpips.LPIPS(net='alex', version='0.1')`) is two sets of weights:

- the trunk, torchvision's ImageNet AlexNet (`alexnet-owt-7be5be79.pth`, from
  https://download.pytorch.org/models/alexnet-owt-7be5be79.pth), of which medgen needs the five
  convolutions of `features` (indices 0, 3, 6, 8, 10);
- the linear heads, lpips' `weights/v0.1/alex.pth`, shipped inside the lpips pip package.

This script reads both (no network access), renames the trunk to lpips' state_dict names
(`features.{i}.weight` -> `net.slice{s}.{i}.weight`, the way `lpips.pretrained_networks.alexnet`
slices it), checks every name and shape, and writes f32 tensors:

    net.slice1.0.weight [64, 3, 11, 11]    net.slice1.0.bias [64]
    net.slice2.3.weight [192, 64, 5, 5]    net.slice2.3.bias [192]
    net.slice3.6.weight [384, 192, 3, 3]   net.slice3.6.bias [384]
    net.slice4.8.weight [256, 384, 3, 3]   net.slice4.8.bias [256]
    net.slice5.10.weight [256, 256, 3, 3]  net.slice5.10.bias [256]
    lin{0..4}.model.1.weight [1, C, 1, 1]  C = 64, 192, 384, 256, 256

Usage:

    python3 scripts/convert_lpips_weights.py --torchvision alexnet-owt-7be5be79.pth \\
        [--lpips path/to/lpips/weights/v0.1/alex.pth] --output lpips-alex.safetensors

`--lpips` defaults to the alex.pth of the installed lpips package. The source files' SHA-256
digests are stored in the output's metadata. When the lpips package is installed, the result is
also loaded into `lpips.LPIPS(net='alex')` as a check that the names are lpips' own. Needs torch
and safetensors.
"""

import argparse
import hashlib
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

# (lpips slice, torchvision features index, in channels, out channels, kernel) of the five convs.
TRUNK = [(1, 0, 3, 64, 11), (2, 3, 64, 192, 5), (3, 6, 192, 384, 3), (4, 8, 384, 256, 3), (5, 10, 256, 256, 3)]
TAP_CHANNELS = [64, 192, 384, 256, 256]
OFFICIAL_NAME = re.compile(r"alexnet-owt-([0-9a-f]{8})\.pth$")


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict(path, what):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds; all mean the file is not usable
        sys.exit(f"{path}: cannot read the {what} weights: {err}")
    if not isinstance(state, dict):
        sys.exit(f"{path}: the {what} weights are not a state_dict (found {type(state).__name__})")
    return state


def take(state, source_name, shape, path, problems):
    """The tensor `source_name` of `state` as contiguous f32, or None with a problem recorded."""
    tensor = state.get(source_name)
    if tensor is None:
        problems.append(f"{path}: no tensor {source_name} (shape {shape})")
        return None
    if list(tensor.shape) != shape:
        problems.append(f"{path}: tensor {source_name} has shape {list(tensor.shape)}, expected {shape}")
        return None
    return tensor.detach().to(torch.float32).contiguous()


def convert(torchvision_path, lpips_path):
    trunk = load_state_dict(torchvision_path, "torchvision AlexNet")
    heads = load_state_dict(lpips_path, "lpips v0.1 alex")
    problems = []
    tensors = {}
    for s, i, cin, cout, k in TRUNK:
        for param, shape in (("weight", [cout, cin, k, k]), ("bias", [cout])):
            tensor = take(trunk, f"features.{i}.{param}", shape, torchvision_path, problems)
            tensors[f"net.slice{s}.{i}.{param}"] = tensor
    for layer, c in enumerate(TAP_CHANNELS):
        name = f"lin{layer}.model.1.weight"
        tensors[name] = take(heads, name, [1, c, 1, 1], lpips_path, problems)
    if problems:
        sys.exit("not the official LPIPS AlexNet-lin weights:\n  - " + "\n  - ".join(problems))
    return tensors


def check_official_digest(path, digest):
    """torchvision names its files after the first 8 hex digits of their SHA-256."""
    match = OFFICIAL_NAME.search(path.name)
    if match and not digest.startswith(match.group(1)):
        sys.exit(f"{path}: SHA-256 {digest} does not start with {match.group(1)}: the download is corrupt")


def check_with_lpips(tensors):
    """Loads the tensors into lpips' own AlexNet-lin model when lpips is installed."""
    try:
        import lpips
    except ImportError:
        print("lpips is not installed: skipped loading the result into lpips.LPIPS")
        return
    model = lpips.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=True, verbose=False)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    left_out = [n for n in missing if not n.startswith(("lins.", "scaling_layer."))]
    if left_out or unexpected:
        sys.exit(f"lpips.LPIPS does not take these names: missing {left_out}, unexpected {unexpected}")
    print("checked: lpips.LPIPS(net='alex', version='0.1') loads every tensor by name")


def default_lpips_path():
    try:
        import lpips
    except ImportError:
        return None
    return Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / "alex.pth"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torchvision", type=Path, required=True, help="alexnet-owt-7be5be79.pth")
    parser.add_argument("--lpips", type=Path, default=default_lpips_path(), help="lpips' weights/v0.1/alex.pth")
    parser.add_argument("--output", type=Path, required=True, help="the safetensors file to write")
    args = parser.parse_args()
    if args.lpips is None:
        sys.exit("the lpips package is not installed: give its weights/v0.1/alex.pth with --lpips")
    for path in (args.torchvision, args.lpips):
        if not path.is_file():
            sys.exit(f"{path}: no such file")

    digests = {"torchvision": sha256(args.torchvision), "lpips": sha256(args.lpips)}
    check_official_digest(args.torchvision, digests["torchvision"])
    tensors = convert(args.torchvision, args.lpips)
    check_with_lpips(tensors)
    metadata = {
        "format": "medgen LPIPS AlexNet-lin (lpips 0.1 state_dict names)",
        "torchvision_file": args.torchvision.name,
        "torchvision_sha256": digests["torchvision"],
        "lpips_file": args.lpips.name,
        "lpips_sha256": digests["lpips"],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.output), metadata=metadata)
    print(f"wrote {args.output}: {len(tensors)} tensors")
    for key, value in metadata.items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
