"""One training step (forward + MSE loss + backward + AdamW step) of the reference UNet in PyTorch, on the
CPU: the counterpart of `stdlib/benches/train_step.rs`, same model, same step, same timing method.
`docs/performance.md` ("Training step vs PyTorch (CPU)") compares the two.

    python3 stdlib/benches/torch/train_step.py [2d|3d] [--steps N] [--warmup N] [--op-reps N]
        [--threads N] [--no-ops] [--no-profile] [--check DIR]

The reference UNet (see the Rust file for the full description; the parameter counts must agree):
a block is GroupNorm(8, in, eps 1e-5) -> SiLU -> 3x3 (3x3x3) conv in -> out, padding 1, with bias, no
residual; conv_in 1 -> 32; encoder levels [32->32, 32->32], avg-pool 2, [32->64, 64->64], avg-pool 2,
[64->128, 128->128]; decoder: nearest upsample 2, cat [upsampled, skip], [192->64, 64->64], upsample,
cat, [96->32, 32->32]; head: block 32 -> 1; MSE loss; AdamW lr 1e-3, weight decay 1e-2 (torch defaults
otherwise: betas (0.9, 0.999), eps 1e-8, and on CPU the single-tensor, for-loop implementation).

Threads: `torch.set_num_threads(--threads)`, by default the number of CPUs, which is what Candle uses
(rayon and gemm threads = available parallelism).

Timing: `--warmup` untimed steps, then `--steps` timed steps, each split into forward (model + loss),
backward, optimizer step and freeing (zero_grad(set_to_none=True) and dropping the step's tensors),
each timed with time.perf_counter. Where the time goes: (1) torch.profiler over timed steps, top ops
by self CPU time; (2) as on the Rust side, every distinct op of the forward replayed in isolation on
random inputs of the same shape, forward then backward seeded with ones, medians of --op-reps.

`--check DIR` loads `DIR/train_step_{2d,3d}.safetensors` written by the Rust bench with `--dump DIR`
(initial parameters, input, target, prediction, loss, first-step gradients) and compares.
"""

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 8
BASE_CHANNELS = 32
ENCODER = [[(32, 32), (32, 32)], [(32, 64), (64, 64)], [(64, 128), (128, 128)]]
DECODER = [[(192, 64), (64, 64)], [(96, 32), (32, 32)]]
LR = 1e-3
WEIGHT_DECAY = 1e-2
SEED = 20240601

CASES = {
    "2d": dict(dims=2, input=(8, 1, 64, 64), warmup=3, steps=15, op_reps=7),
    "3d": dict(dims=3, input=(2, 1, 32, 64, 64), warmup=1, steps=3, op_reps=2),
}


def conv3(dims, cin, cout):
    return (nn.Conv2d if dims == 2 else nn.Conv3d)(cin, cout, 3, padding=1)


def avg_pool(x):
    return F.avg_pool2d(x, 2) if x.dim() == 4 else F.avg_pool3d(x, 2)


def upsample(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


class Trace:
    """The ops of a forward pass, when recording: (kind, extra, input shape, input requires grad)."""

    def __init__(self, on=False):
        self.ops = [] if on else None

    def note(self, kind, x, extra=None):
        if self.ops is not None:
            self.ops.append((kind, extra, tuple(x.shape), x.requires_grad))


class Block(nn.Module):
    """GroupNorm(8, in) -> SiLU -> 3x3 conv in -> out."""

    def __init__(self, dims, cin, cout):
        super().__init__()
        self.norm = nn.GroupNorm(GROUPS, cin)
        self.conv = conv3(dims, cin, cout)
        self.out = cout

    def forward(self, x, trace):
        trace.note("group norm", x)
        h = self.norm(x)
        trace.note("SiLU", h)
        h = F.silu(h)
        trace.note("conv", h, self.out)
        return self.conv(h)


class ReferenceUNet(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.conv_in = conv3(dims, 1, BASE_CHANNELS)
        self.enc = nn.ModuleList(nn.ModuleList(Block(dims, i, o) for i, o in level) for level in ENCODER)
        self.dec = nn.ModuleList(nn.ModuleList(Block(dims, i, o) for i, o in level) for level in DECODER)
        self.head = Block(dims, BASE_CHANNELS, 1)

    def forward(self, x, trace=None):
        trace = trace or Trace()
        trace.note("conv", x, BASE_CHANNELS)
        h = self.conv_in(x)
        skips = []
        for l, level in enumerate(self.enc):
            if l > 0:
                trace.note("avg-pool", h)
                h = avg_pool(h)
            for block in level:
                h = block(h, trace)
            if l + 1 < len(self.enc):
                skips.append(h)
        for level in self.dec:
            trace.note("nearest upsample", h)
            h = upsample(h)
            skip = skips.pop()
            trace.note("concat", h, tuple(skip.shape))
            h = torch.cat([h, skip], 1)
            for block in level:
                h = block(h, trace)
        return self.head(h, trace)


def ms(since):
    return (time.perf_counter() - since) * 1e3


def summary(values):
    return statistics.median(values), min(values)


def shape_text(shape):
    return "×".join(str(n) for n in shape)


def replay(dims, op, reps):
    """(forward ms, backward ms) of one op run in isolation as in the model, medians of `reps` after one warmup."""
    kind, extra, shape, grad = op
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(shape, generator=g).requires_grad_(grad)
    channels = shape[1]
    if kind == "conv":
        layer = conv3(dims, channels, extra)
        apply = lambda: layer(x)
    elif kind == "group norm":
        layer = nn.GroupNorm(GROUPS, channels)
        apply = lambda: layer(x)
    elif kind == "SiLU":
        apply = lambda: F.silu(x)
    elif kind == "avg-pool":
        apply = lambda: avg_pool(x)
    elif kind == "nearest upsample":
        apply = lambda: upsample(x)
    elif kind == "concat":
        skip = torch.randn(extra, generator=g).requires_grad_(True)
        apply = lambda: torch.cat([x, skip], 1)
    elif kind == "MSE loss":
        target = torch.randn(shape, generator=g)
        apply = lambda: F.mse_loss(x, target)
    else:
        raise ValueError(kind)
    forward, backward = [], []
    for rep in range(reps + 1):
        start = time.perf_counter()
        y = apply()
        f = ms(start)
        t = time.perf_counter()
        y.backward(torch.ones_like(y))
        b = ms(t)
        del y
        if rep > 0:
            forward.append(f)
            backward.append(b)
    return statistics.median(forward), statistics.median(backward)


def op_breakdown(dims, ops, reps, measured):
    distinct = {}
    for op in ops:
        distinct[op] = distinct.get(op, 0) + 1
    rows = [(op, n, *replay(dims, op, reps)) for op, n in distinct.items()]
    total = sum(n * (f + b) for _, n, f, b in rows)
    kinds = {}
    for (kind, *_), n, f, b in rows:
        k = kinds.setdefault(kind, [0, 0.0, 0.0])
        k[0] += n
        k[1] += n * f
        k[2] += n * b
    print()
    print(f"### Where one forward + backward goes (isolated ops, same shapes, median of {reps} after 1 warmup)")
    print()
    print("| op | count | forward ms | backward ms | fwd + bwd ms | share |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, (n, f, b) in sorted(kinds.items(), key=lambda kv: -(kv[1][1] + kv[1][2])):
        print(f"| {kind} | {n} | {f:.1f} | {b:.1f} | {f + b:.1f} | {100 * (f + b) / total:.0f}% |")
    print(f"| **sum of isolated ops** | | | | **{total:.1f}** | |")
    print(f"| measured forward + backward of the model (medians) | | | | {measured:.1f} | |")
    print()
    print("Most expensive op instances (input shape; count; per instance):")
    print()
    print("| op | input | count | forward ms | backward ms |")
    print("|---|---|---:|---:|---:|")
    rows.sort(key=lambda r: -(r[2] + r[3]))
    for (kind, extra, shape, _), n, f, b in rows[:10]:
        what = f"conv {shape[1]} → {extra}" if kind == "conv" else kind
        print(f"| {what} | {shape_text(shape)} | {n} | {f:.1f} | {b:.1f} |")


def profile(model, optimizer, x, target, steps):
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(x), target)
            loss.backward()
            optimizer.step()
    print()
    print(f"### torch.profiler: {steps} steps, top ops by self CPU time")
    print()
    print("```text")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=40))
    print("```")


def check(name, model, directory):
    from safetensors.torch import load_file

    path = os.path.join(directory, f"train_step_{name}.safetensors")
    ref = load_file(path)
    state = {k[len("param."):]: v for k, v in ref.items() if k.startswith("param.")}
    model.load_state_dict(state, strict=True)
    model.zero_grad(set_to_none=True)
    prediction = model(ref["x"])
    loss = F.mse_loss(prediction, ref["target"])
    loss.backward()

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()

    print(f"check against {path}: {len(state)} parameter tensors loaded (strict)")
    print(f"  loss: torch {loss.item():.7f}, medgen {ref['loss'].item():.7f}")
    print(f"  prediction: max |diff| / max |value| = {rel(prediction.detach(), ref['prediction']):.2e}")
    worst = max(((rel(p.grad, ref[f"grad.{n}"]), n) for n, p in model.named_parameters()), key=lambda t: t[0])
    print(f"  gradients: worst max |diff| / max |value| over {len(state)} tensors = {worst[0]:.2e} ({worst[1]})")


def run_case(name, case, args):
    dims = case["dims"]
    steps = args.steps or case["steps"]
    warmup = case["warmup"] if args.warmup is None else args.warmup
    reps = args.op_reps or case["op_reps"]
    torch.manual_seed(SEED)
    model = ReferenceUNet(dims)
    params = list(model.parameters())
    print()
    print(f"## {name.upper()}: batch of {shape_text(case['input'])}")
    print()
    print(f"parameters: {sum(p.numel() for p in params)} in {len(params)} tensors")
    if args.check:
        check(name, model, args.check)
        return
    x = torch.randn(case["input"])
    target = torch.randn(case["input"])
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)

    phases = [[] for _ in range(5)]
    losses = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        prediction = model(x)
        loss = F.mse_loss(prediction, target)
        forward = ms(start)
        t = time.perf_counter()
        loss.backward()
        backward = ms(t)
        t = time.perf_counter()
        optimizer.step()
        optimizer_step = ms(t)
        t = time.perf_counter()
        losses.append(loss.item())
        optimizer.zero_grad(set_to_none=True)
        del prediction, loss
        free = ms(t)
        total = ms(start)
        if step >= warmup:
            for phase, value in zip(phases, [forward, backward, optimizer_step, free, total]):
                phase.append(value)
    print(f"steps: {warmup} warmup + {steps} timed; loss {losses[0]:.5f} → {losses[-1]:.5f}")
    print()
    print("| phase | median ms | min ms |")
    print("|---|---:|---:|")
    names = ["forward (model + MSE)", "backward", "AdamW step", "free graph + grads", "**whole step**"]
    for phase_name, values in zip(names, phases):
        median, low = summary(values)
        print(f"| {phase_name} | {median:.1f} | {low:.1f} |")
    print()
    print("whole-step times in order (ms): " + " ".join(f"{v:.0f}" for v in phases[4]))

    if args.profile:
        profile(model, optimizer, x, target, 3 if dims == 2 else 1)
    if args.ops:
        trace = Trace(on=True)
        with torch.no_grad():
            prediction = model(x, trace)
        # In the model the activations require grad; under no_grad the trace says otherwise, so
        # take requires_grad from the model's structure: everything but conv_in's input.
        ops = [(k, e, s, i > 0) for i, (k, e, s, _) in enumerate(trace.ops)]
        ops.append(("MSE loss", None, tuple(prediction.shape), True))
        measured = statistics.median(phases[0]) + statistics.median(phases[1])
        op_breakdown(dims, ops, reps, measured)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", metavar="2d|3d")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--op-reps", type=int)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-ops", dest="ops", action="store_false")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--check", metavar="DIR")
    args = parser.parse_args()
    if any(name not in CASES for name in args.cases):
        parser.error(f"cases are 2d and 3d, got {args.cases}")
    torch.set_num_threads(args.threads)
    print("# PyTorch training step, CPU")
    print()
    print(
        f"torch {torch.__version__}, threads: {torch.get_num_threads()} (torch.set_num_threads), f32, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, mkldnn {torch.backends.mkldnn.is_available()}"
    )
    for name in args.cases or ["2d", "3d"]:
        run_case(name, CASES[name], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
