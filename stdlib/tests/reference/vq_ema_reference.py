#!/usr/bin/env python3
"""Reference values for the EMA codebook tests of stdlib/tests/autoencoder.rs, computed by MONAI's EMAQuantizer.

    python3 stdlib/tests/reference/vq_ema_reference.py

(Re)writes vq_ema_reference.safetensors next to this script. The Rust tests only read that file;
they never run Python. Requires: pip install torch safetensors monai. Made with torch 2.15, MONAI 1.6.1,
on CPU in float32.

Two quantizers with 8 codes of 3 channels, each run in training mode (which updates the codebook by
exponential moving averages after quantising) on fixed random latents:

    q2   EMAQuantizer(spatial_dims=2, num_embeddings=8, embedding_dim=3), decay 0.99, epsilon 1e-5
         (MONAI's defaults), two steps on latents [2, 3, 3, 4]
    q3   EMAQuantizer(spatial_dims=3, ...), decay 0.9, epsilon 1e-3, one step on a latent [1, 3, 2, 3, 4]

For a quantizer `q` the file holds, with MONAI's buffers under medgen's names
(embedding.weight -> codebook.weight, ema_cluster_size -> codebook.cluster_size,
ema_w -> codebook.embed_sum):

    q.codebook.{weight,cluster_size,embed_sum}          the state before the first step (MONAI's
                                                        initialisation: N(0, 1) codes, zero cluster
                                                        sizes, embed_sum a copy of the codes)
    q.step<s>.z                                         the latent of step s (1-based)
    q.step<s>.indices                                   the chosen codes, [B, *spatial], int64
    q.step<s>.quantized                                 the straight-through output
    q.step<s>.loss                                      commitment_cost * mse(q, z), commitment_cost 0.25, shape [1]
    q.step<s>.codebook.{weight,cluster_size,embed_sum}  the state after step s's update
"""

from pathlib import Path

import torch
from monai.networks.layers.vector_quantizer import EMAQuantizer
from safetensors.torch import save_file

OUT = Path(__file__).with_name("vq_ema_reference.safetensors")
CODES = 8
CHANNELS = 3


def state(quantizer):
    return {
        "codebook.weight": quantizer.embedding.weight.detach().clone(),
        "codebook.cluster_size": quantizer.ema_cluster_size.clone(),
        "codebook.embed_sum": quantizer.ema_w.clone(),
    }


def record(out, name, spatial_dims, decay, epsilon, shapes):
    quantizer = EMAQuantizer(spatial_dims, CODES, CHANNELS, commitment_cost=0.25, decay=decay, epsilon=epsilon)
    quantizer.train()
    for key, value in state(quantizer).items():
        out[f"{name}.{key}"] = value
    for step, shape in enumerate(shapes, start=1):
        z = torch.randn(shape)
        quantized, loss, indices = quantizer(z)
        prefix = f"{name}.step{step}"
        out[f"{prefix}.z"] = z
        out[f"{prefix}.indices"] = indices
        out[f"{prefix}.quantized"] = quantized.detach()
        out[f"{prefix}.loss"] = loss.detach().reshape(1)
        for key, value in state(quantizer).items():
            out[f"{prefix}.{key}"] = value


def main():
    torch.set_num_threads(1)
    out = {}
    torch.manual_seed(21)
    record(out, "q2", 2, 0.99, 1e-5, [(2, CHANNELS, 3, 4), (2, CHANNELS, 3, 4)])
    torch.manual_seed(22)
    record(out, "q3", 3, 0.9, 1e-3, [(1, CHANNELS, 2, 3, 4)])
    save_file({k: v.contiguous() for k, v in sorted(out.items())}, OUT)
    print(f"wrote {len(out)} tensors to {OUT}")


if __name__ == "__main__":
    main()
