#!/usr/bin/env python3
"""Reference values for stdlib/tests/patchgan.rs, computed by MONAI's PatchDiscriminator and PatchAdversarialLoss.

    python3 stdlib/tests/reference/patchgan_reference.py

(Re)writes patchgan_reference.safetensors next to this script. The Rust tests only read that file;
they never run Python. Requires: pip install torch safetensors monai. Made with torch 2.15, MONAI 1.6.1,
on CPU in float32.

Two discriminators, built as medgen builds them: MONAI's PatchDiscriminator with
norm=("group", {"num_groups": 2}) in place of its default batch norm (medgen's choice, see
stdlib/src/nn/patchgan.rs), kernel 4, padding 1, LeakyReLU(0.2), no dropout, bias-free convs before
the norms:

    d2   spatial_dims=2, in_channels=1, channels=2, num_layers_d=2, input [2, 1, 20, 24]
    d3   spatial_dims=3, in_channels=1, channels=2, num_layers_d=2, input [1, 1, 14, 12, 16]

(odd intermediate lengths, 7 in 3D, and unequal axes on purpose). For a discriminator `d` the file holds:

    d.<param>            its parameters, renamed from MONAI's state_dict to medgen's names (RENAMES):
                         initial_conv.{weight,bias}, layers.<l>.conv.weight, layers.<l>.norm.{weight,bias},
                         final_conv.{weight,bias}
    d.input              the input
    d.features.<i>       MONAI's outputs, in order: initial conv, each layer, and last the logits
    d.probe              a fixed random tensor of the logits' shape
    grad.d.input         the gradient of sum(logits * probe) with respect to the input
    d.loss.<criterion>.<target>
                         PatchAdversarialLoss(criterion)(logits, target_is_real, for_discriminator), shape [1], for
                         criterion in {least_squares, hinge} and target real (target_is_real=True,
                         for_discriminator=True), fake (False, True) and generator (True, False)

The weights start from MONAI's normal_init (N(0, 0.02) convs, zero biases); the conv biases and the
GroupNorm affine parameters are then redrawn so that the test sees them, and the final conv's weights
from N(0, 0.2) so that the logits are of order 1 and of both signs (the losses see both branches).
"""

from pathlib import Path

import torch
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator
from safetensors.torch import save_file

OUT = Path(__file__).with_name("patchgan_reference.safetensors")
NORM_GROUPS = 2


def renamed(key):
    """MONAI's state_dict key -> medgen's variable name."""
    prefix, rest = key.split(".", 1)
    if prefix in ("initial_conv", "final_conv"):
        return f"{prefix}.{rest.removeprefix('conv.')}"
    return f"layers.{prefix}.{rest.replace('adn.N.', 'norm.')}"


def randomise(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("adn.N.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif name == "final_conv.conv.weight":
                p.copy_(0.2 * torch.randn_like(p))


def record(out, name, spatial_dims, shape):
    model = PatchDiscriminator(
        spatial_dims=spatial_dims,
        channels=2,
        in_channels=1,
        num_layers_d=2,
        kernel_size=4,
        norm=("group", {"num_groups": NORM_GROUPS}),
        padding=1,
    )
    randomise(model)
    for key, value in model.state_dict().items():
        out[f"{name}.{renamed(key)}"] = value
    x = torch.randn(shape).requires_grad_(True)
    features = model(x)
    logits = features[-1]
    probe = torch.randn_like(logits)
    (logits * probe).sum().backward()
    out[f"{name}.input"] = x.detach()
    out[f"{name}.probe"] = probe
    out[f"grad.{name}.input"] = x.grad
    for i, f in enumerate(features):
        out[f"{name}.features.{i}"] = f.detach()
    cases = {"real": (True, True), "fake": (False, True), "generator": (True, False)}
    for criterion in ("least_squares", "hinge"):
        loss = PatchAdversarialLoss(criterion=criterion)
        for target, (is_real, for_discriminator) in cases.items():
            value = loss(logits.detach(), target_is_real=is_real, for_discriminator=for_discriminator)
            out[f"{name}.loss.{criterion}.{target}"] = value.reshape(1)


def main():
    torch.set_num_threads(1)
    out = {}
    torch.manual_seed(11)
    record(out, "d2", 2, (2, 1, 20, 24))
    torch.manual_seed(12)
    record(out, "d3", 3, (1, 1, 14, 12, 16))
    save_file({k: v.contiguous() for k, v in sorted(out.items())}, OUT)
    print(f"wrote {len(out)} tensors to {OUT}")


if __name__ == "__main__":
    main()
