#!/usr/bin/env python3
"""Reference values for stdlib/tests/diffusion.rs, computed by MONAI's schedulers.

    python3 stdlib/tests/reference/diffusion_reference.py

(Re)writes diffusion_reference.safetensors next to this script. The Rust tests only read that file;
they never run Python. Requires: pip install torch safetensors monai. Made with torch 2.15 and MONAI
1.6.1 on CPU; every tensor is stored as MONAI computed it (float32, or float64 for timesteps).

MONAI's cosine schedule builds its table with torch's default dtype. In float32 its betas, `1 - abar[t+1] /
abar[t]`, lose up to 1e-3 of their value to cancellation (3e-5 absolutely at t = 998), so every cosine scheduler
here is built with float64 as the default dtype: the same MONAI function, evaluated precisely. The linear and
scaled-linear schedules are float32 whatever the default (their linspace says so); those tables are stored as
they are, widened to float64.

Times are stored in the units of medgen's strategies: DDPM timesteps as integer indices, rectified-flow
times divided by num_train_timesteps (MONAI counts them in [0, 1000], medgen in [0, 1]).

What the file holds (T = 1000 throughout):

    ddpm.<schedule>.betas, .alphas_cumprod     MONAI's tables for linear_beta, scaled_linear_beta, cosine (float64)
    ddpm.x0, ddpm.noise, ddpm.t                fixed inputs of add_noise / get_velocity ([2, 2, 3, 4], t = [10, 700])
    ddpm.<schedule>.noisy, .velocity           Scheduler.add_noise and Scheduler.get_velocity on them
    min_snr.<prediction>                       min-SNR-5 weights at ddpm.t from the linear table (formula below)
    ddim.sample, ddim.model_output             fixed state and model output of one DDIM step
    ddim.<schedule>.<prediction>.mid           DDIMScheduler.step(eta=0) from t=500 with 10 inference steps (-> 400)
    ddim.<schedule>.<prediction>.last          the same from t=0 (-> alpha_cumprod 1, set_alpha_to_one)
    ddim.<schedule>.<prediction>.trajectory    10 DDIM steps on the "leading" timesteps 900, 800, ..., 0 with the
                                               synthetic model out = 0.5 * tanh(x) + t / 1000, from ddim.sample
    rflow.transform.t                          times t (in [0, 1]) fed to timestep_transform
    rflow.transform.<case>                     timestep_transform(t * T, ...) / T for the cases below
    rflow.grid.shifted                         RFlowScheduler.set_timesteps(10), continuous, transform for a 64^3
                                               input (float16, as MONAI stores it) / T
    rflow.grid.discrete                        the same, discrete timesteps, no transform / T
    rflow.uniform.u, .t                        torch.rand drawn by sample_timesteps (re-drawn from the same seed) and
                                               the times it returned / T, continuous, no transform
    rflow.logit_normal.n, .t                   the standard normals LogisticNormal drew (re-drawn from the same seed)
                                               and the times it returned / T
    rflow.logit_normal.discrete_shifted        sample_timesteps with discrete timesteps and the transform for a
                                               [4, 1, 64, 64, 64] input, from the same seed / T
    rflow.x0, rflow.noise, rflow.t             fixed inputs of add_noise (t in [0, 1])
    rflow.noisy                                RFlowScheduler.add_noise
    rflow.step.v, rflow.step                   RFlowScheduler.step(v, 600, rflow.noisy, 500) (an Euler step)

Transform cases: `vol64` (64^3, base 32^3, 3D), `vol16` (16^3, base 32^3, 3D), `slice128` (128^2, base 32^2,
2D) and `anisotropic` (128 x 128 x 160, base 32^3, 3D).

Conventions checked here:
- MONAI's DDIMScheduler.set_timesteps spaces its timesteps with linspace(T - 1, 0, N) (999, 888, ...) while
  step() always goes to t - T // N: its own loop evaluates the model at times its steps never reach. medgen's
  grid is the "leading" spacing where both agree (900, 800, ..., 0), so the trajectory sets
  scheduler.timesteps to it by hand.
- clip_sample=False everywhere: medgen never clamps a predicted x0 (seed pitfalls 75-78).
- LogisticNormal(0, 1) over one dimension samples sigmoid(n), n ~ N(0, 1) (asserted below).
"""

from pathlib import Path

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler
from monai.networks.schedulers.rectified_flow import timestep_transform
from safetensors.torch import save_file

T = 1000
SCHEDULES = {"linear": "linear_beta", "scaled_linear": "scaled_linear_beta", "cosine": "cosine"}
PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction", "sample": "sample"}
MIN_SNR_GAMMA = 5.0

out = {}
gen = torch.Generator().manual_seed(20260301)


def randn(*shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float32)


def scheduler(cls, schedule, **kwargs):
    """A MONAI scheduler whose schedule function runs with float64 as torch's default dtype."""
    torch.set_default_dtype(torch.float64)
    try:
        return cls(T, schedule=schedule, **kwargs)
    finally:
        torch.set_default_dtype(torch.float32)


# DDPM tables, add_noise and get_velocity.
x0, noise = randn(2, 2, 3, 4), randn(2, 2, 3, 4)
t_ddpm = torch.tensor([10, 700])
out["ddpm.x0"], out["ddpm.noise"], out["ddpm.t"] = x0, noise, t_ddpm.double()
for name, schedule in SCHEDULES.items():
    s = scheduler(DDPMScheduler, schedule, clip_sample=False)
    out[f"ddpm.{name}.betas"] = s.betas.double()
    out[f"ddpm.{name}.alphas_cumprod"] = s.alphas_cumprod.double()
    out[f"ddpm.{name}.noisy"] = s.add_noise(x0, noise, t_ddpm)
    out[f"ddpm.{name}.velocity"] = s.get_velocity(x0, noise, t_ddpm)

# min-SNR-gamma (Hang et al. 2023): SNR = abar / (1 - abar); epsilon: min(SNR, g) / SNR,
# v: min(SNR, g) / (SNR + 1), x0: min(SNR, g).
abar = DDPMScheduler(T, schedule="linear_beta").alphas_cumprod.double()[t_ddpm]
snr = abar / (1 - abar)
clipped = torch.clamp(snr, max=MIN_SNR_GAMMA)
out["min_snr.epsilon"] = clipped / snr
out["min_snr.v"] = clipped / (snr + 1)
out["min_snr.sample"] = clipped

# One DDIM step (eta = 0) and a whole trajectory on the leading grid.
sample, model_output = randn(2, 2, 3, 4), randn(2, 2, 3, 4)
out["ddim.sample"], out["ddim.model_output"] = sample, model_output
for name, schedule in SCHEDULES.items():
    for pname, prediction in PREDICTIONS.items():
        s = scheduler(DDIMScheduler, schedule, clip_sample=False, prediction_type=prediction)
        s.set_timesteps(10)
        out[f"ddim.{name}.{pname}.mid"] = s.step(model_output, 500, sample)[0]
        out[f"ddim.{name}.{pname}.last"] = s.step(model_output, 0, sample)[0]
        s.timesteps = torch.arange(9, -1, -1) * (T // 10)
        x = sample.clone()
        for t in s.timesteps:
            x = s.step(0.5 * torch.tanh(x) + t.item() / 1000, int(t), x)[0]
        out[f"ddim.{name}.{pname}.trajectory"] = x

# Rectified flow: the resolution-based timestep transform.
t_transform = torch.tensor([0.0, 0.1, 0.2505, 0.5, 0.999, 1.0], dtype=torch.float64)
out["rflow.transform.t"] = t_transform
cases = {
    "vol64": (64**3, 32**3, 3),
    "vol16": (16**3, 32**3, 3),
    "slice128": (128**2, 32**2, 2),
    "anisotropic": (128 * 128 * 160, 32**3, 3),
}
for case, (numel, base, dims) in cases.items():
    shifted = timestep_transform(t_transform * T, numel, base_img_size_numel=base, spatial_dim=dims)
    out[f"rflow.transform.{case}"] = shifted / T

# Sampling grids.
s = RFlowScheduler(T, use_discrete_timesteps=False, use_timestep_transform=True)
s.set_timesteps(10, input_img_size_numel=64**3)
out["rflow.grid.shifted"] = s.timesteps.double() / T
s = RFlowScheduler(T, use_discrete_timesteps=True)
s.set_timesteps(10)
out["rflow.grid.discrete"] = s.timesteps.double() / T

# Training times, re-drawing MONAI's random numbers from the same seed.
batch = torch.zeros(4, 1, 8, 8, 8)
s = RFlowScheduler(T, use_discrete_timesteps=False, sample_method="uniform")
torch.manual_seed(7)
t = s.sample_timesteps(batch)
torch.manual_seed(7)
out["rflow.uniform.u"], out["rflow.uniform.t"] = torch.rand(4), t / T
s = RFlowScheduler(T, use_discrete_timesteps=False, sample_method="logit-normal")
torch.manual_seed(8)
t = s.sample_timesteps(batch)
torch.manual_seed(8)
n = torch.randn(4, 1)[:, 0]
assert torch.allclose(t / T, torch.sigmoid(n)), "LogisticNormal(0, 1) is not sigmoid(n)"
out["rflow.logit_normal.n"], out["rflow.logit_normal.t"] = n, t / T
s = RFlowScheduler(T, use_discrete_timesteps=True, sample_method="logit-normal", use_timestep_transform=True)
torch.manual_seed(8)
t = s.sample_timesteps(torch.zeros(4, 1, 64, 64, 64))
out["rflow.logit_normal.discrete_shifted"] = t.double() / T

# Noising and one Euler step.
x0, noise = randn(2, 2, 3, 4), randn(2, 2, 3, 4)
t_rflow = torch.tensor([0.1, 0.7505], dtype=torch.float64)
s = RFlowScheduler(T, use_discrete_timesteps=False)
noisy = s.add_noise(x0, noise, (t_rflow * T).float())
out["rflow.x0"], out["rflow.noise"], out["rflow.t"], out["rflow.noisy"] = x0, noise, t_rflow, noisy
s.set_timesteps(10)
v = randn(2, 2, 3, 4)
out["rflow.step.v"], out["rflow.step"] = v, s.step(v, 600, noisy, 500)[0]

save_file({k: v.contiguous() for k, v in out.items()}, Path(__file__).with_name("diffusion_reference.safetensors"))
