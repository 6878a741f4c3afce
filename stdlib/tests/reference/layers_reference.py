#!/usr/bin/env python3
"""Reference values for stdlib/tests/layers.rs, computed by PyTorch (and MONAI for the spatial attention).

    python3 stdlib/tests/reference/layers_reference.py

(Re)writes layers_reference.safetensors next to this script. The Rust tests only read that file;
they never run Python. Requires: pip install torch safetensors monai einops. Made with torch 2.15,
MONAI 1.6.1, on CPU in float32.

Every block is built with a fixed seed, its parameters drawn at random, and run on random inputs;
the file holds, for a block `b`:

    b.<param>          the block's parameters, named as in its PyTorch state_dict (and so as in medgen)
    b.<input>          its inputs (`input`, or `t`, `emb`, `cond`)
    b.output           its output
    b.probe            a fixed random tensor of the output's shape
    grad.b.<name>      the gradient of sum(output * probe) with respect to each parameter and input

(the sinusoidal embeddings have no parameters and no differentiable input, hence no probe or grad.*).

Conventions checked here:
- The timestep embedding is diffusers' get_timestep_embedding with flip_sin_to_cos=True,
  downscale_freq_shift=0, scale=1, max_period=10000 (written out below), which the script asserts
  equal to MONAI's get_timestep_embedding. Continuous rectified-flow times t in [0, 1] are
  embedded as t * 1000.
- The spatial attention is MONAI's SpatialAttentionBlock itself (DiffusionModelUNet's attention).
- The token attention is timm's Attention as DiT uses it (qkv_bias=True), written out below
  because timm needs torchvision.
- The conditioning embeddings are Linear -> SiLU -> Linear on the condition vector, added to the
  time embedding or applied as FiLM: emb * (1 + scale) + shift (seed pitfall 47).
"""

import math
from pathlib import Path

import torch
from monai.networks.blocks.spatialattention import SpatialAttentionBlock
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding as monai_timestep_embedding
from safetensors.torch import save_file
from torch import nn

OUT = Path(__file__).with_name("layers_reference.safetensors")
CONTINUOUS_TIME_SCALE = 1000.0


def get_timestep_embedding(timesteps, embedding_dim, flip_sin_to_cos=True, downscale_freq_shift=0.0, scale=1.0,
                           max_period=10000):
    """diffusers.models.embeddings.get_timestep_embedding, verbatim in its arithmetic."""
    assert len(timesteps.shape) == 1, "Timesteps should be a 1d-array"
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(start=0, end=half_dim, dtype=torch.float32,
                                                    device=timesteps.device)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = torch.exp(exponent)
    emb = timesteps[:, None].float() * emb[None, :]
    emb = scale * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half_dim:], emb[:, :half_dim]], dim=-1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1, 0, 0))
    return emb


def embed_time(t, dim, continuous):
    """medgen's convention: continuous t in [0, 1] is embedded as t * 1000, discrete t as it is."""
    t = t.float() * CONTINUOUS_TIME_SCALE if continuous else t
    emb = get_timestep_embedding(t, dim)
    assert torch.equal(emb, monai_timestep_embedding(t, dim)), "diffusers and MONAI conventions differ"
    return emb


class TimmAttention(nn.Module):
    """timm.models.vision_transformer.Attention (qk_norm off, no dropout), as in DiT."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class Mlp(nn.Sequential):
    """Linear -> SiLU -> Linear, named 0 and 2 like MONAI's time_embed and DiT's TimestepEmbedder.mlp."""

    def __init__(self, in_dim, hidden_dim, out_dim):
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, out_dim))


class TimeEmbedding(Mlp):
    """Sinusoid of a continuous time, then the MLP; parameters 0.* and 2.* as in medgen."""

    def __init__(self, frequency_dim, embed_dim):
        super().__init__(frequency_dim, embed_dim, embed_dim)
        self.frequency_dim = frequency_dim

    def forward(self, t):
        return super().forward(embed_time(t, self.frequency_dim, continuous=True))


class ConditionEmbedding(Mlp):
    """The MLP of the condition, added to the time embedding or applied to it as FiLM."""

    def __init__(self, cond_dim, embed_dim, film):
        super().__init__(cond_dim, embed_dim, 2 * embed_dim if film else embed_dim)
        self.film = film

    def forward(self, emb, cond):
        projected = super().forward(cond)
        if not self.film:
            return emb + projected
        scale, shift = projected.chunk(2, dim=1)
        return emb * (1 + scale) + shift


def randomise_norms(module):
    """Norms start as the identity; draw their affine parameters so that the test sees them."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(1.0 + 0.1 * torch.randn_like(m.weight))
                m.bias.copy_(0.1 * torch.randn_like(m.bias))


def record(out, name, module, inputs, differentiable=True):
    """Runs module(*inputs.values()) and stores parameters, inputs, output, probe and gradients
    (the last two only when the output depends on something differentiable)."""
    randomise_norms(module)
    inputs = {k: v.clone().requires_grad_(differentiable and v.is_floating_point()) for k, v in inputs.items()}
    output = module(*inputs.values())
    if output.requires_grad:
        probe = torch.randn_like(output)
        (output * probe).sum().backward()
        out[f"{name}.probe"] = probe
    for k, v in inputs.items():
        out[f"{name}.{k}"] = v.detach()
        if v.grad is not None:
            out[f"grad.{name}.{k}"] = v.grad
    for k, p in module.named_parameters():
        out[f"{name}.{k}"] = p.detach()
        out[f"grad.{name}.{k}"] = p.grad
    out[f"{name}.output"] = output.detach()


class Sinusoid(nn.Module):
    def __init__(self, dim, continuous):
        super().__init__()
        self.dim, self.continuous = dim, continuous

    def forward(self, t):
        return embed_time(t, self.dim, self.continuous)


def main():
    torch.set_num_threads(1)
    out = {}

    torch.manual_seed(1)
    record(out, "gn2d", nn.GroupNorm(8, 32), {"input": 2.0 + 3.0 * torch.randn(2, 32, 5, 6)})
    torch.manual_seed(2)
    record(out, "gn3d", nn.GroupNorm(8, 32), {"input": torch.randn(2, 32, 3, 4, 5)})
    torch.manual_seed(3)
    record(out, "ln", nn.LayerNorm(32), {"input": torch.randn(2, 7, 32)})
    torch.manual_seed(4)
    record(out, "ln_plain", nn.LayerNorm(32, eps=1e-6, elementwise_affine=False),
           {"input": 3.0 + torch.randn(2, 7, 32)})

    continuous = torch.tensor([0.0, 1e-3, 0.123, 0.5, 0.7071, 0.999, 1.0])
    discrete = torch.tensor([0, 1, 17, 250, 500, 998, 999], dtype=torch.int64)
    record(out, "temb_continuous", Sinusoid(256, continuous=True), {"t": continuous}, differentiable=False)
    record(out, "temb_discrete", Sinusoid(64, continuous=False), {"t": discrete}, differentiable=False)
    record(out, "temb_odd", Sinusoid(33, continuous=False), {"t": discrete}, differentiable=False)

    torch.manual_seed(5)
    record(out, "time_mlp", TimeEmbedding(32, 64), {"t": continuous}, differentiable=False)
    torch.manual_seed(6)
    one_hot = nn.functional.one_hot(torch.tensor([0, 2, 1, 2]), 3).float()
    record(out, "cond_add", ConditionEmbedding(3, 32, film=False), {"emb": torch.randn(4, 32), "cond": one_hot})
    torch.manual_seed(7)
    size_bins = torch.tensor([[0, 1, 0, 2, 0], [3, 0, 0, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]).float()
    record(out, "cond_film", ConditionEmbedding(5, 32, film=True), {"emb": torch.randn(4, 32), "cond": size_bins})

    torch.manual_seed(8)
    block = SpatialAttentionBlock(spatial_dims=2, num_channels=32, num_head_channels=8, norm_num_groups=8, norm_eps=1e-6)
    record(out, "sattn2d", block, {"input": torch.randn(2, 32, 5, 6)})
    torch.manual_seed(9)
    block = SpatialAttentionBlock(spatial_dims=3, num_channels=32, num_head_channels=8, norm_num_groups=8, norm_eps=1e-6)
    record(out, "sattn3d", block, {"input": torch.randn(2, 32, 3, 4, 5)})
    torch.manual_seed(10)
    record(out, "tattn", TimmAttention(32, num_heads=4), {"input": torch.randn(2, 10, 32)})

    save_file({k: v.contiguous() for k, v in sorted(out.items())}, OUT)
    print(f"wrote {len(out)} tensors to {OUT}")


if __name__ == "__main__":
    main()
