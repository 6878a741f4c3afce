#!/usr/bin/env python3
"""Reference values for `stdlib/tests/train.rs`, and a check that medgen checkpoints open in Python.

Two modes:

    python3 stdlib/tests/reference/train_reference.py
        Regenerates `train_reference.json` beside this script with PyTorch: AdamW trajectories
        (torch.optim.AdamW, single-tensor CPU path; plus the parameters of a line-by-line replay
        of its update, checked here to reproduce it exactly, with torch.sqrt replaced by a
        correctly rounded square root), learning-rate schedules (LinearLR +
        CosineAnnealingLR in a SequentialLR, LinearLR alone, ReduceLROnPlateau), gradient
        clipping (torch.nn.utils.clip_grad_norm_) and EMA (torch.optim.swa_utils.AveragedModel
        with get_ema_multi_avg_fn). Inputs are drawn here and stored in the JSON too, so the Rust
        tests never run Python. Floats are written as strings holding Python's repr, which
        round-trips f32 and f64 values exactly.

    python3 stdlib/tests/reference/train_reference.py --verify DIR
        Opens a medgen checkpoint (a `step-*` directory, or a root holding some; the newest is
        taken) with `safetensors.safe_open` and `safetensors.numpy.load_file`, and checks: every
        file in the manifest exists with the recorded size; every shard opens; the index's
        weight map names exactly the tensors the shards hold; `total_size` is the sum of the
        tensors' bytes; every `model.X` has `ema.X`, `adamw.exp_avg.X` and `adamw.exp_avg_sq.X`
        of the same shape. Prints every tensor's name, dtype and shape.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "train_reference.json"

# AdamW cases: parameter shapes chosen so that one tensor spans a full AVX-512 vector of f32 plus a
# remainder (21 = 16 + 5) and one is shorter than a vector (5), exercising both of torch's CPU paths.
PARAM_SHAPES = {"w": [3, 7], "b": [5]}
ADAMW_STEPS = 6
# The bias receives no gradient at this step: torch then leaves it, its moments and its step alone.
STEP_WITHOUT_BIAS_GRAD = 2
LRS = [1e-3, 2e-3, 3e-3, 2.5e-3, 1e-3, 5e-4]


def tensor_json(t):
    return {"shape": list(t.shape), "data": t.detach().flatten().tolist()}


def adamw_case(torch, name, dtype, betas, eps, weight_decay, seed):
    gen = torch.Generator().manual_seed(seed)
    params = {k: torch.randn(s, generator=gen, dtype=dtype) for k, s in PARAM_SHAPES.items()}
    grads = [
        {k: torch.randn(s, generator=gen, dtype=dtype) * 0.5 for k, s in PARAM_SHAPES.items()}
        for _ in range(ADAMW_STEPS)
    ]
    for k in PARAM_SHAPES:
        params[k].requires_grad_(True)
    initial = {k: tensor_json(p) for k, p in params.items()}
    opt = torch.optim.AdamW(list(params.values()), lr=LRS[0], betas=betas, eps=eps, weight_decay=weight_decay)
    steps = []
    grads_json = []
    for step, step_grads in enumerate(grads):
        for group in opt.param_groups:
            group["lr"] = LRS[step]
        given = {}
        for k, p in params.items():
            if k == "b" and step == STEP_WITHOUT_BIAS_GRAD:
                p.grad = None
                given[k] = None
            else:
                p.grad = step_grads[k].clone()
                given[k] = tensor_json(step_grads[k])
        grads_json.append(given)
        opt.step()
        after = {}
        for k, p in params.items():
            state = opt.state[p]
            after[k] = {
                "param": tensor_json(p),
                "exp_avg": tensor_json(state["exp_avg"]),
                "exp_avg_sq": tensor_json(state["exp_avg_sq"]),
                "step": int(state["step"].item()),
            }
        steps.append(after)
    replay = replay_adamw(torch, initial, grads_json, dtype, betas, eps, weight_decay, torch.sqrt)
    for after, replayed in zip(steps, replay):
        for k in PARAM_SHAPES:
            if after[k]["param"] != replayed[k]:
                raise AssertionError(f"{name}: the replay is not torch.optim.AdamW")
    ieee = replay_adamw(torch, initial, grads_json, dtype, betas, eps, weight_decay, ieee_sqrt)
    return {
        "name": name,
        "dtype": "f32" if dtype == torch.float32 else "f64",
        "betas": list(betas),
        "eps": eps,
        "weight_decay": weight_decay,
        "lrs": LRS,
        "initial": initial,
        "grads": grads_json,
        "steps": steps,
        "params_with_ieee_sqrt": ieee,
    }


def ieee_sqrt(t):
    """Correctly rounded square root (numpy's, the CPU's sqrt instruction). torch.sqrt on CPU goes
    through MKL's vector math, which is one ulp off for about 20% of f32 and 1.5% of f64 inputs."""
    import numpy as np
    import torch

    return torch.from_numpy(np.sqrt(t.numpy()))


def replay_adamw(torch, initial, grads_json, dtype, betas, eps, weight_decay, sqrt):
    """torch's `_single_tensor_adam(decoupled_weight_decay=True)`, line by line, with `sqrt` for the
    square root; returns the parameters after each step."""
    beta1, beta2 = betas
    params = {k: torch.tensor(v["data"], dtype=dtype).reshape(v["shape"]) for k, v in initial.items()}
    exp_avg = {k: torch.zeros_like(p) for k, p in params.items()}
    exp_avg_sq = {k: torch.zeros_like(p) for k, p in params.items()}
    steps = {k: 0 for k in params}
    out = []
    for lr, grads in zip(LRS, grads_json):
        for k, p in params.items():
            if grads[k] is None:
                continue
            grad = torch.tensor(grads[k]["data"], dtype=dtype).reshape(grads[k]["shape"])
            steps[k] += 1
            p.mul_(1 - lr * weight_decay)
            exp_avg[k].lerp_(grad, 1 - beta1)
            exp_avg_sq[k].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = lr / (1 - beta1 ** steps[k])
            bias_correction2_sqrt = (1 - beta2 ** steps[k]) ** 0.5
            denom = (sqrt(exp_avg_sq[k]) / bias_correction2_sqrt).add_(eps)
            p.addcdiv_(exp_avg[k], denom, value=-step_size)
        out.append({k: tensor_json(p) for k, p in params.items()})
    return out


def schedules(torch):
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, ReduceLROnPlateau, SequentialLR

    base_lr, warmup, total, min_lr = 1e-3, 5, 20, 1e-5

    def optimizer():
        return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)

    def trace(sched, opt, steps):
        lrs = []
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return lrs

    opt = optimizer()
    cosine = SequentialLR(
        opt,
        [
            LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1),
            CosineAnnealingLR(opt, T_max=total - warmup, eta_min=min_lr),
        ],
        milestones=[warmup],
    )
    warmup_cosine = trace(cosine, opt, total + 1)

    opt = optimizer()
    warmup_constant = trace(LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1), opt, 12)

    # Three reductions, the last clamped at min_lr, a fourth refused by it, cooldowns, and a loss exactly
    # at the relative threshold (0.49995 = 0.5 * (1 - 1e-4)), which does not count as better.
    plateau_cfg = {"factor": 0.5, "patience": 1, "threshold": 1e-4, "cooldown": 1, "min_lr": 2e-4}
    val_losses = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 0.5, 0.6, 0.7, 0.8, 0.81, 0.82, 0.49995, 0.4]
    opt = optimizer()
    plateau = ReduceLROnPlateau(opt, mode="min", threshold_mode="rel", **plateau_cfg)
    plateau_lrs = []
    for loss in val_losses:
        plateau.step(loss)
        plateau_lrs.append(opt.param_groups[0]["lr"])

    return {
        "base_lr": base_lr,
        "warmup": warmup,
        "total": total,
        "min_lr": min_lr,
        "warmup_cosine": warmup_cosine,
        "warmup_constant": warmup_constant,
        "plateau": {"config": plateau_cfg, "val_losses": val_losses, "lrs_after_each": plateau_lrs},
    }


def clipping(torch):
    gen = torch.Generator().manual_seed(7)
    grads = {k: torch.randn(s, generator=gen) for k, s in PARAM_SHAPES.items()}
    cases = []
    for max_norm in [1.0, 100.0]:
        params = {k: torch.zeros(s, requires_grad=True) for k, s in PARAM_SHAPES.items()}
        for k, p in params.items():
            p.grad = grads[k].clone()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm)
        cases.append(
            {
                "max_norm": max_norm,
                "total_norm": norm.item(),
                "clipped": {k: tensor_json(p.grad) for k, p in params.items()},
            }
        )
    return {"grads": {k: tensor_json(g) for k, g in grads.items()}, "cases": cases}


def ema(torch):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    decay = 0.9
    gen = torch.Generator().manual_seed(11)
    states = [{k: torch.randn(s, generator=gen) for k, s in PARAM_SHAPES.items()} for _ in range(4)]
    model = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in states[0].items()})
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
    after = []
    for state in states:
        with torch.no_grad():
            for k, v in state.items():
                model[k].copy_(v)
        averaged.update_parameters(model)
        after.append({k: tensor_json(averaged.module[k]) for k in PARAM_SHAPES})
    return {
        "decay": decay,
        "states": [{k: tensor_json(v) for k, v in s.items()} for s in states],
        "after_each": after,
    }


def exact(value):
    """Floats as their shortest round-trip decimal strings: serde_json's default parser (without
    its `float_roundtrip` feature) misreads about one f64 in eight by an ulp."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [exact(v) for v in value]
    return value


def generate():
    import torch

    torch.set_num_threads(1)
    reference = {
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "adamw": [
            adamw_case(torch, "defaults_f32", torch.float32, (0.9, 0.999), 1e-8, 1e-2, 0),
            adamw_case(torch, "gan_betas_f32", torch.float32, (0.5, 0.9), 1e-6, 0.1, 1),
            adamw_case(torch, "defaults_f64", torch.float64, (0.9, 0.999), 1e-8, 1e-2, 0),
        ],
        "schedules": schedules(torch),
        "clipping": clipping(torch),
        "ema": ema(torch),
    }
    OUTPUT.write_text(json.dumps(exact(reference), indent=1) + "\n")
    print(f"wrote {OUTPUT}")


# ---- --verify DIR ------------------------------------------------------------------------------

STEP_PREFIX = "step-"
MANIFEST = "manifest.json"
INDEX = "train_state.safetensors.index.json"
MODEL_PREFIX = "model."
COMPANIONS = ["ema.", "adamw.exp_avg.", "adamw.exp_avg_sq."]


def checkpoint_dir(path):
    if (path / MANIFEST).exists():
        return path
    steps = sorted(
        (int(p.name[len(STEP_PREFIX):]), p)
        for p in path.iterdir()
        if p.name.startswith(STEP_PREFIX) and p.name[len(STEP_PREFIX):].isdigit() and (p / MANIFEST).exists()
    )
    if not steps:
        sys.exit(f"{path}: no complete checkpoint (no {MANIFEST})")
    return steps[-1][1]


def verify(path):
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file

    ckpt = checkpoint_dir(Path(path))
    problems = []
    manifest = json.loads((ckpt / MANIFEST).read_text())
    for entry in manifest["files"]:
        file = ckpt / entry["name"]
        if not file.exists():
            problems.append(f"{file}: missing")
        elif file.stat().st_size != entry["bytes"]:
            problems.append(f"{file}: {file.stat().st_size} bytes, manifest says {entry['bytes']}")

    index = json.loads((ckpt / INDEX).read_text())
    weight_map = index["weight_map"]
    shapes = {}
    total = 0
    for shard in sorted(set(weight_map.values())):
        arrays = load_file(str(ckpt / shard))
        with safe_open(str(ckpt / shard), framework="numpy") as f:
            names = set(f.keys())
            for name in names:
                shape = f.get_slice(name).get_shape()
                if list(arrays[name].shape) != list(shape):
                    problems.append(f"{shard}: {name} loads as {arrays[name].shape}, header says {shape}")
                shapes[name] = (str(arrays[name].dtype), list(shape))
                total += arrays[name].nbytes
        expected = {n for n, s in weight_map.items() if s == shard}
        if names != expected:
            problems.append(f"{shard}: holds {sorted(names ^ expected)} contrary to the index")
    if total != index["metadata"]["total_size"]:
        problems.append(f"total_size {index['metadata']['total_size']} but the tensors hold {total} bytes")
    for name, (_, shape) in shapes.items():
        if name.startswith(MODEL_PREFIX):
            var = name[len(MODEL_PREFIX):]
            for prefix in COMPANIONS:
                other = shapes.get(prefix + var)
                if other is None or other[1] != shape:
                    problems.append(f"{name} {shape}: {prefix + var} is {other}")

    for name in sorted(shapes):
        dtype, shape = shapes[name]
        print(f"{name:50} {dtype:8} {shape}")
    shards = len(set(weight_map.values()))
    print(f"{ckpt}: step {manifest['step']}, {len(shapes)} tensors in {shards} shards, numpy {np.__version__}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--verify":
        verify(sys.argv[2])
    elif len(sys.argv) == 1:
        generate()
    else:
        sys.exit(__doc__)
