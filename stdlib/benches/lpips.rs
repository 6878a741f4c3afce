//! 3D LPIPS (`medgen_stdlib::metrics::lpips`) on a pair of 160×256×256 volumes, slices in chunks
//! against one slice at a time (pitfall 37): wall time and peak memory, on the CPU.
//!
//! ```sh
//! cargo bench -p medgen-stdlib --bench lpips -- [--shape D,H,W] [--axes depth,height,width]
//!     [--chunks 1,8,32,64] [--slices N]
//! ```
//!
//! Every (axis, chunk) pair is a variant, run by a fresh child process of this binary so that its
//! peak resident memory (`VmHWM` in `/proc/self/status`) is its own. A child builds the model and
//! the two volumes, reads its resident size (`VmRSS`), times one `Lpips::volume` call for that
//! axis alone, and reads its peak. The table gives, per variant: the slices run, the wall time,
//! slices per second, the speedup over chunk 1 on the same axis, the peak RSS, and the peak's
//! growth over the RSS before the call (the weights and the input volumes are in that baseline; the
//! volumes' tensor copies and every activation are in the growth). A summary sums the axes per
//! chunk size.
//!
//! `--slices N` keeps only the first N slices along the measured axis (the volume is cropped
//! along that axis alone, so the slices keep their size): a shorter run whose times the summary
//! scales linearly to the full slice count, saying so.
//!
//! The weights are closed-form (the speed of a forward pass does not depend on their values, so
//! no real weights are needed); the volumes are smooth closed-form patterns in [-1, 1]. The
//! process allocator is tuned as the medgen binary tunes it (`allocator::keep_freed_memory`).
//!
//! `cargo bench` passes `--bench`; without it (`cargo test --benches`) the binary exits at once.

use std::collections::HashMap;
use std::process::{Command, ExitCode};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use medgen_stdlib::data::volume::{Spacing, Volume};
use medgen_stdlib::metrics::lpips::{InputRange, Lpips, SliceAxis, VolumeLpipsConfig};

const DEFAULT_SHAPE: [usize; 3] = [160, 256, 256];
const DEFAULT_CHUNKS: [usize; 4] = [1, 8, 32, 64];
const USAGE: &str = "usage: [--shape D,H,W] [--axes depth,height,width] [--chunks 1,8,32,64] [--slices N]";

/// What the parent runs: every axis with every chunk size.
struct Options {
    shape: [usize; 3],
    axes: Vec<SliceAxis>,
    chunks: Vec<usize>,
    slices: Option<usize>,
}

/// One variant, as a child process runs it.
#[derive(Debug, Clone, Copy)]
struct Variant {
    shape: [usize; 3],
    axis: SliceAxis,
    chunk: usize,
    /// Slices run along `axis` (the full count unless `--slices` cropped it).
    slices: usize,
}

/// What a child reports.
struct Measurement {
    seconds: f64,
    base_kib: u64,
    peak_kib: u64,
    mean: f64,
}

fn parse_axis(name: &str) -> Result<SliceAxis, String> {
    SliceAxis::ALL.into_iter().find(|a| a.name() == name).ok_or_else(|| format!("unknown axis {name}; {USAGE}"))
}

fn parse_list(flag: &str, value: Option<String>) -> Result<Vec<usize>, String> {
    let value = value.ok_or_else(|| format!("{flag} takes a comma-separated list of numbers"))?;
    value.split(',').map(|v| v.parse().map_err(|_| format!("{flag}: {v} is not a number"))).collect()
}

fn options(args: Vec<String>) -> Result<Options, String> {
    let mut opts =
        Options { shape: DEFAULT_SHAPE, axes: SliceAxis::ALL.to_vec(), chunks: DEFAULT_CHUNKS.to_vec(), slices: None };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {}
            "--shape" => {
                opts.shape = parse_list("--shape", args.next())?.try_into().map_err(|_| "--shape takes D,H,W")?
            }
            "--axes" => {
                let value = args.next().ok_or("--axes takes a comma-separated list of axes")?;
                opts.axes = value.split(',').map(parse_axis).collect::<Result<_, _>>()?;
            }
            "--chunks" => opts.chunks = parse_list("--chunks", args.next())?,
            "--slices" => opts.slices = Some(parse_list("--slices", args.next())?.first().copied().ok_or(USAGE)?),
            other => return Err(format!("unknown argument {other}; {USAGE}")),
        }
    }
    if opts.chunks.contains(&0) || opts.slices == Some(0) {
        return Err("chunk sizes and --slices must be positive".into());
    }
    Ok(opts)
}

/// `--child D,H,W AXIS CHUNK SLICES`, the arguments a child receives.
fn child_args(v: &Variant) -> Vec<String> {
    let [d, h, w] = v.shape;
    vec![
        "--bench".into(),
        "--child".into(),
        format!("{d},{h},{w}"),
        v.axis.name().into(),
        v.chunk.to_string(),
        v.slices.to_string(),
    ]
}

fn parse_child(args: &[String]) -> Result<Variant, String> {
    let [shape, axis, chunk, slices] = args else { return Err(format!("--child takes 4 arguments, got {args:?}")) };
    let number = |v: &String| v.parse::<usize>().map_err(|_| format!("--child: {v} is not a number"));
    Ok(Variant {
        shape: parse_list("--child", Some(shape.clone()))?.try_into().map_err(|_| "--child: shape is D,H,W")?,
        axis: parse_axis(axis)?,
        chunk: number(chunk)?,
        slices: number(slices)?,
    })
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .ok_or_else(|| format!("/proc/self/status has no {field}"))
}

/// Closed-form weights of the right names and shapes: deterministic, sign-varying in the trunk,
/// non-negative in the heads (as lpips' trained heads are).
fn formula_model() -> candle_core::Result<Lpips> {
    let tensors: HashMap<String, Tensor> = Lpips::weight_shapes()
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape))| {
            let count: usize = shape.iter().product();
            let fan_in = shape.iter().skip(1).product::<usize>().max(1) as f32;
            let head = name.starts_with("lin");
            let values: Vec<f32> = (0..count)
                .map(|i| (1.7 * i as f32 + k as f32).sin() * (3.0 / fan_in).sqrt())
                .map(|v| if head { v.abs() } else { v })
                .collect();
            Ok((name, Tensor::from_vec(values, shape, &Device::Cpu)?))
        })
        .collect::<candle_core::Result<_>>()?;
    Lpips::new(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu), InputRange::SignedUnit)
}

/// The volume pair: a smooth pattern and a perturbed copy, both in [-1, 1].
fn volumes(shape: [usize; 3]) -> (Volume, Volume) {
    let spacing = Spacing::new(1.0, 1.0, 1.0);
    let mut a = Volume::zeros(shape, spacing);
    let mut b = Volume::zeros(shape, spacing);
    for d in 0..shape[0] {
        for h in 0..shape[1] {
            for w in 0..shape[2] {
                let (z, y, x) = (d as f32, h as f32, w as f32);
                let value = 0.8 * (0.05 * z + 0.07 * y + 0.03 * x).sin();
                a.set(d, h, w, value);
                b.set(d, h, w, 0.9 * value + 0.1 * (0.31 * y - 0.17 * x + 0.11 * z).sin());
            }
        }
    }
    (a, b)
}

/// Runs one variant in this process (a child) and prints its measurement as one `RESULT` line.
fn run_child(v: Variant) -> Result<(), String> {
    let model = formula_model().map_err(|e| e.to_string())?;
    let mut shape = v.shape;
    shape[v.axis_index()] = v.slices;
    let (a, b) = volumes(shape);
    let base_kib = status_kib("VmRSS")?;
    let config = VolumeLpipsConfig { axes: vec![v.axis], chunk: v.chunk };
    let start = Instant::now();
    let result = model.volume(&a, &b, &config).map_err(|e| e.to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    let peak_kib = status_kib("VmHWM")?;
    println!("RESULT {seconds} {base_kib} {peak_kib} {}", result.combined);
    Ok(())
}

impl Variant {
    fn axis_index(&self) -> usize {
        SliceAxis::ALL.iter().position(|&a| a == self.axis).expect("one of the three axes")
    }

    /// The slice count along the axis in the full volume.
    fn full_slices(&self) -> usize {
        self.shape[self.axis_index()]
    }

    /// The slices' (rows, columns).
    fn slice_size(&self) -> (usize, usize) {
        let [d, h, w] = self.shape;
        match self.axis {
            SliceAxis::Depth => (h, w),
            SliceAxis::Height => (d, w),
            SliceAxis::Width => (d, h),
        }
    }
}

/// Runs `v` in a fresh child process.
fn measure(v: &Variant) -> Result<Measurement, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this benchmark's binary: {e}"))?;
    let output = Command::new(exe).args(child_args(v)).output().map_err(|e| format!("cannot run a child: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("variant {v:?} failed: {}{}", stdout, String::from_utf8_lossy(&output.stderr)));
    }
    let line =
        stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).ok_or_else(|| format!("no RESULT in {stdout}"))?;
    let fields: Vec<f64> =
        line.split(' ').map(|f| f.parse().map_err(|_| format!("bad RESULT {line}"))).collect::<Result<_, _>>()?;
    let [seconds, base_kib, peak_kib, mean] = fields[..] else { return Err(format!("bad RESULT {line}")) };
    Ok(Measurement { seconds, base_kib: base_kib as u64, peak_kib: peak_kib as u64, mean })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn run_parent(opts: Options) -> Result<(), String> {
    let [d, h, w] = opts.shape;
    println!("# 3D LPIPS (AlexNet-lin), chunked vs one slice at a time, CPU");
    println!();
    println!("volumes: {d}x{h}x{w} pair (depth, height, width), f32; closed-form weights");
    println!("threads: {} (candle_core::utils::get_num_threads)", candle_core::utils::get_num_threads());
    if let Some(n) = opts.slices {
        println!("cropped: the first {n} slices along each measured axis; totals scaled to the full slice counts");
    }
    println!();
    println!(
        "| axis | chunk | slices run | slice | seconds | slices/s | speedup vs chunk 1 | peak RSS MiB | growth MiB |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|");
    // Per chunk size: (full-volume seconds over the axes, largest peak growth).
    let mut totals: Vec<(usize, f64, u64)> = opts.chunks.iter().map(|&c| (c, 0.0, 0)).collect();
    for &axis in &opts.axes {
        let mut single_slice_seconds = None;
        let mut means = Vec::new();
        for (i, &chunk) in opts.chunks.iter().enumerate() {
            let mut v = Variant { shape: opts.shape, axis, chunk, slices: 0 };
            v.slices = opts.slices.map_or(v.full_slices(), |n| n.min(v.full_slices()));
            let m = measure(&v)?;
            let per_slice = m.seconds / v.slices as f64;
            if chunk == 1 {
                single_slice_seconds = Some(per_slice);
            }
            let speedup = single_slice_seconds.map_or("–".to_string(), |s| format!("{:.2}x", s / per_slice));
            let (rows, columns) = v.slice_size();
            println!(
                "| {axis} | {chunk} | {} | {rows}x{columns} | {:.2} | {:.2} | {speedup} | {:.0} | {:.0} |",
                v.slices,
                m.seconds,
                1.0 / per_slice,
                mib(m.peak_kib),
                mib(m.peak_kib.saturating_sub(m.base_kib)),
            );
            totals[i].1 += per_slice * v.full_slices() as f64;
            totals[i].2 = totals[i].2.max(m.peak_kib.saturating_sub(m.base_kib));
            means.push(m.mean);
        }
        let spread = means.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
            - means.iter().cloned().fold(f64::INFINITY, f64::min);
        println!("| {axis} | | | | | | mean LPIPS {:.6}, spread over chunks {spread:.1e} | | |", means[0]);
    }
    println!();
    let axes: Vec<&str> = opts.axes.iter().map(|a| a.name()).collect();
    println!("Full {d}x{h}x{w} pair over {}:", axes.join(" + "));
    println!();
    println!("| chunk | seconds | speedup vs chunk 1 | largest peak growth MiB |");
    println!("|---:|---:|---:|---:|");
    let single = totals.iter().find(|t| t.0 == 1).map(|t| t.1);
    for (chunk, seconds, growth) in totals {
        let speedup = single.map_or("–".to_string(), |s| format!("{:.2}x", s / seconds));
        println!("| {chunk} | {seconds:.1} | {speedup} | {:.0} |", mib(growth));
    }
    Ok(())
}

fn main() -> ExitCode {
    medgen_stdlib::allocator::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("lpips: a benchmark; run it with `cargo bench -p medgen-stdlib --bench lpips`");
        return ExitCode::SUCCESS;
    }
    let outcome = match args.iter().position(|a| a == "--child") {
        Some(at) => parse_child(&args[at + 1..]).and_then(run_child),
        None => options(args).and_then(run_parent),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
