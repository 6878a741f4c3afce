//! One training step (forward + MSE loss + backward + AdamW step) of a small reference UNet, built
//! from medgen's own layers (`medgen_stdlib::nn`) and training core (`medgen_stdlib::train`), on
//! the CPU, for 2D and 3D inputs. `benches/torch/train_step.py` is the same model and step in
//! PyTorch; `docs/performance.md` ("Training step vs PyTorch (CPU)") compares the two.
//!
//! ```sh
//! cargo bench -p medgen-stdlib --bench train_step -- [2d|3d] [--steps N] [--warmup N]
//!     [--op-reps N] [--no-ops] [--dump DIR]
//! ```
//!
//! The reference UNet (identical on both sides; the parameter count printed by both must agree):
//! - a *block* is GroupNorm(8 groups, `in` channels, eps 1e-5, affine) → SiLU → 3×3 (3×3×3) conv
//!   `in → out`, padding 1, with bias; no residual connection;
//! - encoder: `conv_in` 3×3 conv 1 → 32; level 0: blocks 32→32, 32→32; average-pool 2; level 1:
//!   blocks 32→64, 64→64; average-pool 2; level 2: blocks 64→128, 128→128;
//! - decoder: nearest upsample 2, concatenate [upsampled, skip of level 1] (128 + 64 = 192),
//!   blocks 192→64, 64→64; nearest upsample 2, concatenate [upsampled, skip of level 0]
//!   (64 + 32 = 96), blocks 96→32, 32→32; the skips are the outputs of the last block of levels 0
//!   and 1, before pooling;
//! - head: a block 32 → 1 (GroupNorm(8, 32) → SiLU → 3×3 conv 32 → 1);
//! - loss: mean squared error against a fixed random target; AdamW lr 1e-3, betas (0.9, 0.999),
//!   eps 1e-8, weight decay 1e-2.
//!
//! Timing: `--warmup` untimed steps, then `--steps` timed steps (defaults: 3 + 15 for 2D, 1 + 3
//! for 3D); every step is split into forward (model + loss), backward, optimizer step and freeing
//! the step's graph and gradients, each timed with `Instant` (CPU ops run synchronously).
//! Reported: median and min per phase and for the whole step.
//!
//! Where the time goes: the forward records every op it runs (kind, input shape, whether the input
//! takes a gradient). Each distinct op is then replayed in isolation, on random inputs of the same
//! shape with a fresh layer: forward, then backward seeded with ones (Candle's `backward` on a
//! non-scalar output), `--op-reps` times after one warmup (defaults 7 for 2D, 2 for 3D); the
//! medians times the number of occurrences give each op kind's share of one forward + backward.
//! The replays reuse the memory the previous repetition freed, while a model step touches fresh
//! memory for every activation it keeps, so their sum comes out below the measured step by the
//! cost of those page faults (`docs/performance.md`).
//!
//! `--dump DIR` writes the initial parameters, input, target, prediction, loss and first-step
//! gradients to `DIR/train_step_{2d,3d}.safetensors`, which `train_step.py --check DIR` loads to
//! confirm that both sides compute the same model.
//!
//! `cargo bench` passes `--bench`; without it (`cargo test --benches`) the binary exits at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use medgen_stdlib::nn::conv::{Conv, SpatialDims};
use medgen_stdlib::nn::norm::{GroupNorm, GroupNormConfig, TORCH_NORM_EPS};
use medgen_stdlib::nn::resample::{avg_pool, upsample_nearest};
use medgen_stdlib::train::loss::mse;
use medgen_stdlib::train::optim::{AdamW, AdamWConfig};
use medgen_stdlib::train::params::Params;
use medgen_stdlib::train::rng::{var_builder, Purpose, Stream};

const GROUPS: usize = 8;
const BASE_CHANNELS: usize = 32;
/// `(in, out)` channels of the two blocks of each encoder level.
const ENCODER: [[(usize, usize); 2]; 3] = [[(32, 32), (32, 32)], [(32, 64), (64, 64)], [(64, 128), (128, 128)]];
/// `(in, out)` channels of the two blocks of each decoder level, deepest first; the first block
/// of a level takes the upsampled features concatenated with the skip.
const DECODER: [[(usize, usize); 2]; 2] = [[(192, 64), (64, 64)], [(96, 32), (32, 32)]];
const LR: f64 = 1e-3;
const WEIGHT_DECAY: f64 = 1e-2;
const SEED: u64 = 20_240_601;

// ---------------------------------------------------------------------------------------------
// The reference UNet.

/// The kind of an op of the forward pass, for the per-op breakdown.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum OpKind {
    /// 3×3 (3×3×3) conv, padding 1, with bias, to `out` channels.
    Conv {
        out: usize,
    },
    GroupNorm,
    Silu,
    AvgPool,
    Upsample,
    /// Concatenation along channels with a skip of this shape.
    Concat {
        skip: Vec<usize>,
    },
    Mse,
}

impl OpKind {
    fn label(&self) -> &'static str {
        match self {
            OpKind::Conv { .. } => "conv",
            OpKind::GroupNorm => "group norm",
            OpKind::Silu => "SiLU",
            OpKind::AvgPool => "avg-pool",
            OpKind::Upsample => "nearest upsample",
            OpKind::Concat { .. } => "concat",
            OpKind::Mse => "MSE loss",
        }
    }
}

/// One op the forward ran.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OpRecord {
    kind: OpKind,
    input: Vec<usize>,
    input_grad: bool,
}

/// The ops of a forward pass, when recording.
struct Trace(Option<Vec<OpRecord>>);

impl Trace {
    fn off() -> Self {
        Trace(None)
    }

    fn on() -> Self {
        Trace(Some(Vec::new()))
    }

    fn note(&mut self, kind: OpKind, input: &Tensor) {
        if let Some(ops) = &mut self.0 {
            ops.push(OpRecord { kind, input: input.dims().to_vec(), input_grad: input.track_op() });
        }
    }
}

/// GroupNorm(8, in) → SiLU → 3×3 conv in → out.
struct Block {
    norm: GroupNorm,
    conv: Conv,
    out: usize,
}

fn group_norm(vb: VarBuilder, channels: usize) -> Result<GroupNorm> {
    GroupNorm::new(vb, &GroupNormConfig { num_groups: GROUPS, num_channels: channels, eps: TORCH_NORM_EPS })
}

fn conv3(vb: VarBuilder, dims: SpatialDims, in_channels: usize, out_channels: usize) -> Result<Conv> {
    Conv::new(vb, dims, in_channels, out_channels, 3, 1, 1)
}

impl Block {
    fn new(vb: VarBuilder, dims: SpatialDims, (in_channels, out): (usize, usize)) -> Result<Self> {
        Ok(Block {
            norm: group_norm(vb.pp("norm"), in_channels)?,
            conv: conv3(vb.pp("conv"), dims, in_channels, out)?,
            out,
        })
    }

    fn forward(&self, x: &Tensor, trace: &mut Trace) -> Result<Tensor> {
        trace.note(OpKind::GroupNorm, x);
        let h = self.norm.forward(x)?;
        trace.note(OpKind::Silu, &h);
        let h = h.silu()?;
        trace.note(OpKind::Conv { out: self.out }, &h);
        self.conv.forward(&h)
    }
}

/// The reference UNet; parameter names match the PyTorch module's `state_dict`.
struct ReferenceUNet {
    conv_in: Conv,
    encoder: Vec<Vec<Block>>,
    decoder: Vec<Vec<Block>>,
    head: Block,
}

impl ReferenceUNet {
    fn new(vb: VarBuilder, dims: SpatialDims) -> Result<Self> {
        let conv_in = conv3(vb.pp("conv_in"), dims, 1, BASE_CHANNELS)?;
        let levels = |name: &str, spec: &[[(usize, usize); 2]]| -> Result<Vec<Vec<Block>>> {
            let vb = vb.pp(name);
            spec.iter()
                .enumerate()
                .map(|(l, level)| {
                    level.iter().enumerate().map(|(b, &channels)| Block::new(vb.pp(l).pp(b), dims, channels)).collect()
                })
                .collect()
        };
        let encoder = levels("enc", &ENCODER)?;
        let decoder = levels("dec", &DECODER)?;
        let head = Block::new(vb.pp("head"), dims, (BASE_CHANNELS, 1))?;
        Ok(ReferenceUNet { conv_in, encoder, decoder, head })
    }

    fn forward(&self, x: &Tensor, trace: &mut Trace) -> Result<Tensor> {
        trace.note(OpKind::Conv { out: BASE_CHANNELS }, x);
        let mut h = self.conv_in.forward(x)?;
        let mut skips = Vec::new();
        for (l, level) in self.encoder.iter().enumerate() {
            if l > 0 {
                trace.note(OpKind::AvgPool, &h);
                h = avg_pool(&h, 2)?;
            }
            for block in level {
                h = block.forward(&h, trace)?;
            }
            if l + 1 < self.encoder.len() {
                skips.push(h.clone());
            }
        }
        for level in &self.decoder {
            trace.note(OpKind::Upsample, &h);
            h = upsample_nearest(&h, 2)?;
            let skip = skips.pop().expect("one skip per decoder level");
            trace.note(OpKind::Concat { skip: skip.dims().to_vec() }, &h);
            h = Tensor::cat(&[&h, &skip], 1)?;
            for block in level {
                h = block.forward(&h, trace)?;
            }
        }
        self.head.forward(&h, trace)
    }
}

// ---------------------------------------------------------------------------------------------
// Benchmark set-up.

/// One benchmark case: 2D or 3D.
#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    dims: SpatialDims,
    /// `[B, 1, *spatial]`.
    input: &'static [usize],
    warmup: usize,
    steps: usize,
    op_reps: usize,
}

const CASES: [Case; 2] = [
    Case { name: "2d", dims: SpatialDims::Two, input: &[8, 1, 64, 64], warmup: 3, steps: 15, op_reps: 7 },
    Case { name: "3d", dims: SpatialDims::Three, input: &[2, 1, 32, 64, 64], warmup: 1, steps: 3, op_reps: 2 },
];

struct Options {
    cases: Vec<Case>,
    steps: Option<usize>,
    warmup: Option<usize>,
    op_reps: Option<usize>,
    ops: bool,
    dump: Option<PathBuf>,
}

fn options() -> std::result::Result<Option<Options>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return Ok(None);
    }
    let mut opts = Options { cases: Vec::new(), steps: None, warmup: None, op_reps: None, ops: true, dump: None };
    let mut args = args.into_iter();
    let count = |flag: &str, value: Option<String>| -> std::result::Result<usize, String> {
        value.and_then(|v| v.parse().ok()).ok_or_else(|| format!("{flag} takes a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {}
            "2d" | "3d" => opts.cases.extend(CASES.iter().filter(|c| c.name == arg)),
            "--steps" => opts.steps = Some(count("--steps", args.next())?.max(1)),
            "--warmup" => opts.warmup = Some(count("--warmup", args.next())?),
            "--op-reps" => opts.op_reps = Some(count("--op-reps", args.next())?.max(1)),
            "--no-ops" => opts.ops = false,
            "--dump" => opts.dump = Some(args.next().ok_or("--dump takes a directory")?.into()),
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: [2d|3d] [--steps N] [--warmup N] [--op-reps N] [--no-ops] [--dump DIR]"
                ))
            }
        }
    }
    if opts.cases.is_empty() {
        opts.cases = CASES.to_vec();
    }
    Ok(Some(opts))
}

fn main() -> ExitCode {
    medgen_stdlib::allocator::keep_freed_memory();
    let opts = match options() {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            eprintln!("train_step: a benchmark; run it with `cargo bench -p medgen-stdlib --bench train_step`");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("# medgen (Candle) training step, CPU");
    println!();
    println!(
        "threads: {} (candle_core::utils::get_num_threads: rayon and gemm), f32",
        candle_core::utils::get_num_threads()
    );
    for case in &opts.cases {
        let case = Case {
            steps: opts.steps.unwrap_or(case.steps),
            warmup: opts.warmup.unwrap_or(case.warmup),
            op_reps: opts.op_reps.unwrap_or(case.op_reps),
            ..*case
        };
        if let Err(e) = run_case(&case, &opts) {
            eprintln!("error in {}: {e}", case.name);
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// `(median, min)`.
fn summary(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    (median, sorted[0])
}

fn shape_text(dims: &[usize]) -> String {
    dims.iter().map(usize::to_string).collect::<Vec<_>>().join("×")
}

fn run_case(case: &Case, opts: &Options) -> Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = var_builder(&varmap, Stream::new(SEED, Purpose::Init), DType::F32, &device);
    let model = ReferenceUNet::new(vb, case.dims)?;
    let params = Params::from_varmap(&varmap);
    let parameter_count: usize = params.iter().map(|(_, var)| var.elem_count()).sum();
    let mut data = Stream::new(SEED, Purpose::Noise);
    let x = data.normal(case.input, &device)?;
    let target = data.normal(case.input, &device)?;
    let mut optimizer = AdamW::new(&params, AdamWConfig { weight_decay: WEIGHT_DECAY, ..AdamWConfig::default() })?;

    println!();
    println!("## {}: batch of {}", case.name.to_uppercase(), shape_text(case.input));
    println!();
    println!("parameters: {parameter_count} in {} tensors", params.len());
    if let Some(dir) = &opts.dump {
        dump(dir, case, &model, &params, &x, &target)?;
    }

    // Phases of every step: forward (+ loss), backward, optimizer step, freeing.
    let mut phases: [Vec<f64>; 5] = Default::default();
    let mut loss_values = Vec::new();
    for step in 0..case.warmup + case.steps {
        let start = Instant::now();
        let prediction = model.forward(&x, &mut Trace::off())?;
        let loss = mse(&prediction, &target)?;
        let forward = ms(start);
        let t = Instant::now();
        let grads = loss.backward()?;
        let backward = ms(t);
        let t = Instant::now();
        optimizer.step(&grads, LR)?;
        let optimizer_step = ms(t);
        let t = Instant::now();
        loss_values.push(loss.to_scalar::<f32>()?);
        drop((grads, loss, prediction));
        let free = ms(t);
        let total = ms(start);
        if step >= case.warmup {
            for (phase, value) in phases.iter_mut().zip([forward, backward, optimizer_step, free, total]) {
                phase.push(value);
            }
        }
    }
    println!(
        "steps: {} warmup + {} timed; loss {:.5} → {:.5}",
        case.warmup,
        case.steps,
        loss_values[0],
        loss_values[loss_values.len() - 1]
    );
    println!();
    println!("| phase | median ms | min ms |");
    println!("|---|---:|---:|");
    let names = ["forward (model + MSE)", "backward", "AdamW step", "free graph + grads", "**whole step**"];
    for (name, values) in names.iter().zip(&phases) {
        let (median, min) = summary(values);
        println!("| {name} | {median:.1} | {min:.1} |");
    }
    let per_step: Vec<String> = phases[4].iter().map(|v| format!("{v:.0}")).collect();
    println!();
    println!("whole-step times in order (ms): {}", per_step.join(" "));

    if opts.ops {
        let mut trace = Trace::on();
        let prediction = model.forward(&x, &mut trace)?;
        trace.note(OpKind::Mse, &prediction);
        drop(prediction);
        let (forward, _) = summary(&phases[0]);
        let (backward, _) = summary(&phases[1]);
        op_breakdown(case, trace.0.unwrap_or_default(), forward + backward)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Per-op breakdown.

/// An input of `dims`: a variable when the op's input takes a gradient in the model.
fn input(stream: &mut Stream, dims: &[usize], grad: bool) -> Result<Tensor> {
    let values = stream.normal(dims, &Device::Cpu)?;
    Ok(if grad { Var::from_tensor(&values)?.as_tensor().clone() } else { values })
}

/// Runs `op` in isolation as it ran in the model: `(forward ms, backward ms)`, medians of `reps`
/// after one warmup.
fn replay(case: &Case, op: &OpRecord, reps: usize) -> Result<(f64, f64)> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = var_builder(&varmap, Stream::new(SEED, Purpose::Init), DType::F32, &device);
    let mut stream = Stream::new(SEED, Purpose::Validation);
    let x = input(&mut stream, &op.input, op.input_grad)?;
    let channels = op.input[1];
    let apply: Box<dyn Fn() -> Result<Tensor>> = match &op.kind {
        OpKind::Conv { out } => {
            let conv = conv3(vb, case.dims, channels, *out)?;
            Box::new(move || conv.forward(&x))
        }
        OpKind::GroupNorm => {
            let norm = group_norm(vb, channels)?;
            Box::new(move || norm.forward(&x))
        }
        OpKind::Silu => Box::new(move || x.silu()),
        OpKind::AvgPool => Box::new(move || avg_pool(&x, 2)),
        OpKind::Upsample => Box::new(move || upsample_nearest(&x, 2)),
        OpKind::Concat { skip } => {
            let skip = input(&mut stream, skip, true)?;
            Box::new(move || Tensor::cat(&[&x, &skip], 1))
        }
        OpKind::Mse => {
            let target = input(&mut stream, &op.input, false)?;
            Box::new(move || mse(&x, &target))
        }
    };
    let (mut forward, mut backward) = (Vec::new(), Vec::new());
    for rep in 0..=reps {
        let start = Instant::now();
        let y = apply()?;
        let f = ms(start);
        let t = Instant::now();
        let grads = y.backward()?;
        let b = ms(t);
        drop((grads, y));
        if rep > 0 {
            forward.push(f);
            backward.push(b);
        }
    }
    Ok((summary(&forward).0, summary(&backward).0))
}

fn op_breakdown(case: &Case, ops: Vec<OpRecord>, measured: f64) -> Result<()> {
    // Distinct ops in order of first occurrence, with their counts.
    let mut distinct: Vec<(OpRecord, usize)> = Vec::new();
    for op in ops {
        match distinct.iter_mut().find(|(seen, _)| *seen == op) {
            Some((_, count)) => *count += 1,
            None => distinct.push((op, 1)),
        }
    }
    let mut rows = Vec::new();
    for (op, count) in &distinct {
        let (forward, backward) = replay(case, op, case.op_reps)?;
        rows.push((op, *count, forward, backward));
    }
    let total: f64 = rows.iter().map(|(_, n, f, b)| *n as f64 * (f + b)).sum();
    let mut kinds: Vec<(&str, usize, f64, f64)> = Vec::new();
    for (op, count, forward, backward) in &rows {
        let n = *count as f64;
        match kinds.iter_mut().find(|(label, ..)| *label == op.kind.label()) {
            Some(kind) => {
                kind.1 += count;
                kind.2 += n * forward;
                kind.3 += n * backward;
            }
            None => kinds.push((op.kind.label(), *count, n * forward, n * backward)),
        }
    }
    kinds.sort_by(|a, b| (b.2 + b.3).total_cmp(&(a.2 + a.3)));
    println!();
    println!(
        "### Where one forward + backward goes (isolated ops, same shapes, median of {} after 1 warmup)",
        case.op_reps
    );
    println!();
    println!("| op | count | forward ms | backward ms | fwd + bwd ms | share |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, count, forward, backward) in &kinds {
        let sum = forward + backward;
        println!("| {label} | {count} | {forward:.1} | {backward:.1} | {sum:.1} | {:.0}% |", 100.0 * sum / total);
    }
    println!("| **sum of isolated ops** | | | | **{total:.1}** | |");
    println!("| measured forward + backward of the model (medians) | | | | {measured:.1} | |");
    println!();
    println!("Most expensive op instances (input shape; count; fwd + bwd ms per instance):");
    println!();
    rows.sort_by(|a, b| (b.2 + b.3).total_cmp(&(a.2 + a.3)));
    println!("| op | input | count | forward ms | backward ms |");
    println!("|---|---|---:|---:|---:|");
    for (op, count, forward, backward) in rows.iter().take(10) {
        let what = match &op.kind {
            OpKind::Conv { out } => format!("conv {} → {out}", op.input[1]),
            other => other.label().to_string(),
        };
        println!("| {what} | {} | {count} | {forward:.1} | {backward:.1} |", shape_text(&op.input));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cross-check with PyTorch.

/// Writes the initial parameters (`param.NAME`), input, target, prediction, loss and first-step
/// gradients (`grad.NAME`) for `train_step.py --check`.
fn dump(
    dir: &std::path::Path,
    case: &Case,
    model: &ReferenceUNet,
    params: &Params,
    x: &Tensor,
    target: &Tensor,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let prediction = model.forward(x, &mut Trace::off())?;
    let loss = mse(&prediction, target)?;
    let grads = loss.backward()?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in params.iter() {
        tensors.insert(format!("param.{name}"), var.as_tensor().detach());
        if let Some(grad) = grads.get(var.as_tensor()) {
            tensors.insert(format!("grad.{name}"), grad.clone());
        }
    }
    tensors.insert("x".into(), x.clone());
    tensors.insert("target".into(), target.clone());
    tensors.insert("prediction".into(), prediction.detach());
    tensors.insert("loss".into(), loss.detach().reshape(1)?);
    let path = dir.join(format!("train_step_{}.safetensors", case.name));
    candle_core::safetensors::save(&tensors, &path)?;
    println!("wrote {}", path.display());
    Ok(())
}
