//! Engine benchmark: `cargo bench --bench engine` (results and method in docs/performance.md).
//!
//! For generated pipelines of 10, 100 and 1000 `shell` stages it measures, with the release
//! `medgen` binary, the wall time of
//!
//! - the cold run (every stage runs; one measurement, reported separately);
//! - the no-op rerun (`medgen run`, nothing changed);
//! - the dry run (`medgen plan`);
//! - the rerun after one input file changed (its descendants run, the rest is cached);
//!
//! then, for the largest pipeline, where a no-op run's time goes (its steps timed in this
//! process through the library crates); and the hashing throughput of
//! `medgen_engine::hash::hash_file` on a 1 GiB file, against `b3sum` when one is on `PATH`.
//!
//! Arguments (after `--`) choose parts: sizes (`10 100 1000`, or any other size of at least
//! 6), `pipelines` (every size), `hash`. Without any, everything runs. Environment:
//! `MEDGEN_BENCH_DIR` (where the temporary directory goes; the hashing part needs 1 GiB free
//! there), `MEDGEN_BENCH_KEEP=1` (keep it, to profile the generated pipelines by hand),
//! `MEDGEN_BIN` (another `medgen` binary to measure).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use medgen_engine::dag::Dag;
use medgen_engine::hash::{hash_file, StatCache};
use medgen_engine::plan::{plan as plan_states, State};
use medgen_engine::schedule::{self, Event, Observer, RunOptions};
use medgen_engine::store::Store;
use medgen_lang::source::FileId;
use medgen_stdlib::{StdRegistry, StdRuntime};

type Result<T> = std::result::Result<T, String>;

/// Pipeline sizes measured by default.
const SIZES: [usize; 3] = [10, 100, 1000];
/// Repetitions of each pipeline measurement.
const REPS: usize = 7;
/// Size of the hashed file.
const HASH_BYTES: u64 = 1 << 30;
/// Repetitions of each warm hashing measurement.
const HASH_REPS: usize = 5;
/// The stat cache re-hashes a file changed less than this long before it was last hashed
/// (git's "racy clean" rule; `RACY_WINDOW_NS` in engine/src/hash.rs), with some margin.
const RACY_WINDOW: Duration = Duration::from_millis(2200);

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What to measure, from the command line.
struct Selection {
    sizes: Vec<usize>,
    hash: bool,
}

fn selection() -> Result<Selection> {
    // `cargo bench` passes `--bench` (and libtest options given by the user); none of them
    // mean anything here.
    let words: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if words.is_empty() {
        return Ok(Selection { sizes: SIZES.to_vec(), hash: true });
    }
    let mut chosen = Selection { sizes: Vec::new(), hash: false };
    for word in &words {
        match word.as_str() {
            "hash" => chosen.hash = true,
            "pipelines" => chosen.sizes.extend(SIZES),
            n => match n.parse::<usize>() {
                Ok(n) if n >= 6 => chosen.sizes.push(n),
                _ => {
                    return Err(format!(
                        "unknown argument `{word}`: give pipeline sizes (at least 6), `pipelines` or `hash`, \
                         e.g. `cargo bench --bench engine -- 1000 hash`"
                    ))
                }
            },
        }
    }
    chosen.sizes.sort_unstable();
    chosen.sizes.dedup();
    Ok(chosen)
}

fn bench() -> Result<()> {
    let selection = selection()?;
    let bin = medgen_binary()?;
    let base = std::env::var_os("MEDGEN_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = TempDir::new(&base)?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("# medgen engine benchmark\n");
    println!("- binary: `{}`", bin.display());
    println!("- source: {}", source_version());
    println!("- working directory: `{}`", dir.path.display());
    println!("- {jobs} CPUs available to `medgen run` (its default `-j`)");
    println!("- each pipeline measurement: median (min) of {REPS} runs, wall time of the whole `medgen` process\n");

    if !selection.sizes.is_empty() {
        let mut rows = Vec::new();
        for &n in &selection.sizes {
            eprintln!("[bench] {n} stages ...");
            rows.push(pipeline_bench(&bin, &dir.path, n).map_err(|e| format!("{n}-stage pipeline: {e}"))?);
        }
        print_pipeline_table(&rows);
        let largest = &rows[rows.len() - 1];
        eprintln!("[bench] phases of the {}-stage no-op ...", largest.generated.stages);
        let (phases, process) = phases(&bin, &largest.generated).map_err(|e| format!("phases: {e}"))?;
        print_phases(largest.generated.stages, &phases, process);
    }
    if selection.hash {
        eprintln!("[bench] hashing 1 GiB ...");
        hash_bench(&dir.path)?;
    }
    Ok(())
}

/// The `medgen` binary to measure: the one cargo built for this bench (the release profile
/// under `cargo bench`), or `$MEDGEN_BIN`.
fn medgen_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("MEDGEN_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() { Ok(bin) } else { Err(format!("MEDGEN_BIN={} is not a file", bin.display())) };
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_medgen"));
    if !bin.is_file() {
        return Err(format!(
            "{} does not exist; run this benchmark with `cargo bench --bench engine`, which builds it \
             (or point MEDGEN_BIN at a medgen binary)",
            bin.display()
        ));
    }
    if !bin.components().any(|c| c.as_os_str() == "release") {
        eprintln!("warning: {} is not a release build; its timings mean little", bin.display());
    }
    Ok(bin)
}

/// The commit the workspace is at, and whether it has uncommitted changes.
fn source_version() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            format!("commit `{commit}`{}", if dirty { " with uncommitted changes" } else { "" })
        }
        None => "unknown (not a git checkout)".to_string(),
    }
}

/// A temporary directory, removed when dropped unless `MEDGEN_BENCH_KEEP` is set.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(base: &Path) -> Result<TempDir> {
        let path = base.join(format!("medgen-bench-{}", std::process::id()));
        fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let path = path.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("MEDGEN_BENCH_KEEP").is_some() {
            eprintln!("[bench] kept {}", self.path.display());
        } else if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove {}: {e}", self.path.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generated pipelines

/// A generated pipeline on disk.
struct Generated {
    stages: usize,
    sources: usize,
    edges: usize,
    max_fan_out: usize,
    max_fan_in: usize,
    file: PathBuf,
    store: PathBuf,
    /// Every input file.
    inputs: Vec<PathBuf>,
    /// The input file of the first source stage, changed by the rerun measurement.
    changed_input: PathBuf,
    /// How many stages descend from that input (itself included): what must rerun.
    descendants: usize,
}

/// Writes a pipeline of `n` shell stages (and its input files) under `dir`.
///
/// Shape: `lanes` independent groups, each a source stage reading one declared input file,
/// fanned out to up to 4 chains of stages reading the previous one, fanned back in by a
/// `merge` stage that concatenates the chains' last outputs and the previous lane's merge.
/// So a change to lane 0's input reruns lane 0 and every later lane's merge.
///
/// ```text
/// inputs/lane0.txt → l0_src ─┬→ l0_b0_0 → l0_b0_1 → … ─┐
///                            ├→ l0_b1_0 → …            ├→ l0_merge ─┐
///                            └→ l0_b2_0 → …            ┘            │
/// inputs/lane1.txt → l1_src ─┬→ …                      ┐            ↓
///                            └→ …                      ├→ l1_merge ←┘ → …
/// ```
fn generate(dir: &Path, n: usize) -> Result<Generated> {
    let lanes = if n < 50 { 2 } else { (n / 25).clamp(2, 40) };
    let io = |what: &Path, e: std::io::Error| format!("cannot write {}: {e}", what.display());
    fs::create_dir_all(dir.join("inputs")).map_err(|e| io(&dir.join("inputs"), e))?;
    let mut text = format!("pipeline bench{n}\n");
    let (mut edges, mut max_fan_out, mut max_fan_in) = (0, 0, 0);
    let mut lane0_stages = 0;
    let mut inputs = Vec::new();
    for lane in 0..lanes {
        let size = n / lanes + usize::from(lane < n % lanes);
        let input = dir.join(format!("inputs/lane{lane}.txt"));
        fs::write(&input, format!("input of lane {lane}\n")).map_err(|e| io(&input, e))?;
        inputs.push(input);
        let src = format!("l{lane}_src");
        stage(&mut text, &src, "cat {in.data} > {out.out}", Some(&format!("inputs/lane{lane}.txt")));
        // The stages between the source and the merge, spread over up to 4 chains.
        let middle = size - 2;
        let chains = middle.min(4);
        let mut tails = Vec::new();
        for chain in 0..chains {
            let length = middle / chains + usize::from(chain < middle % chains);
            let mut previous = src.clone();
            for step in 0..length {
                let name = format!("l{lane}_b{chain}_{step}");
                stage(
                    &mut text,
                    &name,
                    &format!("cat {{{previous}.out}} > {{out.out}} && echo {name} >> {{out.out}}"),
                    None,
                );
                edges += 1;
                previous = name;
            }
            tails.push(previous);
        }
        max_fan_out = max_fan_out.max(chains);
        if lane > 0 {
            tails.push(format!("l{}_merge", lane - 1));
        }
        let reads: Vec<String> = tails.iter().map(|t| format!("{{{t}.out}}")).collect();
        stage(&mut text, &format!("l{lane}_merge"), &format!("cat {} > {{out.out}}", reads.join(" ")), None);
        edges += tails.len();
        max_fan_in = max_fan_in.max(tails.len());
        if lane == 0 {
            lane0_stages = size;
        }
    }
    let file = dir.join(format!("bench{n}.mg"));
    fs::write(&file, text).map_err(|e| io(&file, e))?;
    Ok(Generated {
        stages: n,
        sources: lanes,
        edges,
        max_fan_out,
        max_fan_in,
        file,
        store: dir.join(".medgen"),
        changed_input: dir.join("inputs/lane0.txt"),
        inputs,
        descendants: lane0_stages + lanes - 1,
    })
}

fn stage(text: &mut String, name: &str, command: &str, input: Option<&str>) {
    text.push_str(&format!("stage {name} = shell {{\n  command = \"{command}\"\n"));
    if let Some(input) = input {
        text.push_str(&format!("  inputs = {{ data: \"{input}\" }}\n"));
    }
    text.push_str("  outputs = [out]\n}\n");
}

/// Sleeps until every file's last change (modification or status change) is more than
/// [`RACY_WINDOW`] old: from then on the stat cache trusts the hashes it takes of them.
fn settle(paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        let meta = fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        let ns = |secs: i64, nsecs: i64| Duration::new(secs.max(0) as u64, nsecs.clamp(0, 999_999_999) as u32);
        let changed = UNIX_EPOCH + ns(meta.ctime(), meta.ctime_nsec()).max(ns(meta.mtime(), meta.mtime_nsec()));
        if let Ok(wait) = (changed + RACY_WINDOW).duration_since(SystemTime::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}

/// One `medgen` invocation: its wall time and what it said.
struct Invocation {
    time: Duration,
    pid: u32,
    stderr: String,
}

fn medgen(bin: &Path, args: &[&OsStr]) -> Result<Invocation> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .arg("--color")
        .arg("never")
        .env_remove("MEDGEN_STORE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let pid = child.id();
    let output = child.wait_with_output().map_err(|e| format!("cannot wait for medgen: {e}"))?;
    let time = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        let shown: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        return Err(format!("`medgen {}` failed ({}):\n{stderr}", shown.join(" "), output.status));
    }
    Ok(Invocation { time, pid, stderr })
}

/// How many instances ran and how many were cached, from the run record of process `pid`.
fn outcomes(store: &Path, pid: u32) -> Result<(usize, usize)> {
    let runs = store.join("runs");
    let suffix = format!("-{pid}.json");
    let record = fs::read_dir(&runs)
        .map_err(|e| format!("cannot list {}: {e}", runs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&suffix)))
        .ok_or_else(|| format!("no run record of process {pid} in {}", runs.display()))?;
    let bytes = fs::read(&record).map_err(|e| format!("cannot read {}: {e}", record.display()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{} is not JSON: {e}", record.display()))?;
    let instances = json
        .get("instances")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| format!("{} has no `instances` list", record.display()))?;
    let count =
        |what: &str| instances.iter().filter(|i| i.get("outcome").and_then(|o| o.as_str()) == Some(what)).count();
    Ok((count("ran"), count("cached")))
}

/// Median and minimum.
#[derive(Clone, Copy)]
struct Stats {
    median: Duration,
    min: Duration,
}

impl Stats {
    fn of(times: &[Duration]) -> Stats {
        let mut sorted = times.to_vec();
        sorted.sort_unstable();
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2 };
        Stats { median, min: sorted[0] }
    }
}

struct Row {
    generated: Generated,
    cold: Duration,
    noop: Stats,
    plan: Stats,
    change: Stats,
    /// Stages run by each rerun after a change (all equal, unless something is wrong).
    rerun: Vec<usize>,
}

fn pipeline_bench(bin: &Path, base: &Path, n: usize) -> Result<Row> {
    let dir = base.join(format!("p{n}"));
    let generated = generate(&dir, n)?;
    let file = generated.file.as_os_str();
    let store = generated.store.as_os_str();
    let run: [&OsStr; 4] = ["run".as_ref(), file, "--store".as_ref(), store];
    let plan: [&OsStr; 4] = ["plan".as_ref(), file, "--store".as_ref(), store];

    let cold = medgen(bin, &run)?;
    check_counts(&generated, cold.pid, n, 0, "the cold run")?;
    // The stat cache does not trust a hash taken within 2 s of a file's last change; wait that
    // out, so the no-op measured is the common one (inputs not edited in the last seconds).
    settle(&generated.inputs)?;
    // One unmeasured no-op first: it re-hashes the inputs once, and warms the file system
    // caches for every measured run.
    medgen(bin, &run)?;

    // No-op runs and dry runs alternate, so that both see the same background load.
    let mut noop = Vec::new();
    let mut dry = Vec::new();
    let expected = format!("0 of {n} instances would run");
    for _ in 0..REPS {
        let inv = medgen(bin, &run)?;
        check_counts(&generated, inv.pid, 0, n, "a no-op rerun")?;
        noop.push(inv.time);
        let inv = medgen(bin, &plan)?;
        if !inv.stderr.contains(&expected) {
            return Err(format!("`medgen plan` after a no-op run should say \"{expected}\"; it said:\n{}", inv.stderr));
        }
        dry.push(inv.time);
    }
    let mut change = Vec::new();
    let mut rerun = Vec::new();
    for rep in 0..REPS {
        // New content every time: going back to an earlier content would find its outputs in
        // the store, and nothing would run.
        let content = format!("input of lane 0, edit {rep}\n");
        fs::write(&generated.changed_input, content)
            .map_err(|e| format!("cannot write {}: {e}", generated.changed_input.display()))?;
        let inv = medgen(bin, &run)?;
        let (ran, cached) = outcomes(&generated.store, inv.pid)?;
        if ran + cached != n {
            return Err(format!("the rerun after a change ran {ran} and found {cached} cached, of {n} stages"));
        }
        if ran != generated.descendants {
            eprintln!(
                "warning: {n} stages: the rerun after a change ran {ran} stages, but {} descend from the changed \
                 input",
                generated.descendants
            );
        }
        change.push(inv.time);
        rerun.push(ran);
    }
    Ok(Row {
        generated,
        cold: cold.time,
        noop: Stats::of(&noop),
        plan: Stats::of(&dry),
        change: Stats::of(&change),
        rerun,
    })
}

/// Checks a run's record: `ran` instances ran and `cached` were found in the store.
fn check_counts(generated: &Generated, pid: u32, ran: usize, cached: usize, what: &str) -> Result<()> {
    let got = outcomes(&generated.store, pid)?;
    if got != (ran, cached) {
        return Err(format!(
            "{what} should run {ran} and find {cached} cached; it ran {} and found {} cached",
            got.0, got.1
        ));
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

fn stats(s: Stats) -> String {
    format!("{} ({})", ms(s.median), ms(s.min))
}

fn print_pipeline_table(rows: &[Row]) {
    println!("## Pipelines\n");
    println!("| stages | sources | edges | max fan-out / fan-in | cold run (all run) | no-op `run` | dry run `plan` | rerun after 1 input change | stages rerun |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let g = &row.generated;
        let mut reruns = row.rerun.clone();
        reruns.dedup();
        let reruns: Vec<String> = reruns.iter().map(ToString::to_string).collect();
        println!(
            "| {} | {} | {} | {} / {} | {} | {} | {} | {} | {} of {} |",
            g.stages,
            g.sources,
            g.edges,
            g.max_fan_out,
            g.max_fan_in,
            ms(row.cold),
            stats(row.noop),
            stats(row.plan),
            stats(row.change),
            reruns.join(", "),
            g.stages
        );
    }
    println!(
        "\nTimes: median (min) of {REPS}. Commands, for the {n}-stage pipeline:\n",
        n = rows[rows.len() - 1].generated.stages
    );
    let g = &rows[rows.len() - 1].generated;
    println!("```sh");
    println!("medgen run {} --store {}    # cold run, then no-op", g.file.display(), g.store.display());
    println!("medgen plan {} --store {}   # dry run", g.file.display(), g.store.display());
    println!(
        "echo 'new content' > {}; medgen run {} --store {}",
        g.changed_input.display(),
        g.file.display(),
        g.store.display()
    );
    println!("```\n");
}

// ---------------------------------------------------------------------------------------------
// Where a no-op's time goes

/// Ignores the scheduler's events.
struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: Event) {}
}

/// One phase of a no-op run, timed in this process.
struct Phase {
    name: &'static str,
    /// Whether it is part of another phase (shown indented, not added to the total).
    part: bool,
    times: Vec<Duration>,
}

fn timed<T>(times: &mut Vec<Duration>, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = f();
    times.push(started.elapsed());
    value
}

/// Times, in this process and through the library crates, the steps `medgen run` takes on an
/// up-to-date pipeline (as `src/engine_cmds.rs` does them), and parts of them.
fn phases(bin: &Path, g: &Generated) -> Result<(Vec<Phase>, Stats)> {
    let names = [
        ("parse + check (`medgen_lang::check_file`)", false),
        ("read + parse alone (`medgen_lang::syntax::parse_file`)", true),
        ("lowering (`Dag::lower`)", false),
        ("open the store, load the stat cache", false),
        ("no-op run (`schedule::run`)", false),
        ("dry run instead: keys and store look-ups (`plan::plan`)", true),
        ("`Store::entry` of every instance (manifest read, output stat)", true),
        ("`Store::last` of every instance (index read; `remember` does it for each cached one)", true),
        ("stat cache save, run record write", false),
    ];
    let mut phases: Vec<Phase> = names.iter().map(|&(name, part)| Phase { name, part, times: Vec::new() }).collect();
    let registry = StdRegistry::new();
    let runtime = StdRuntime::new();
    let dir = g.file.parent().expect("the pipeline file is in a directory");
    let options = RunOptions { jobs: 2, keep_going: false, verify: false };
    let cancel = AtomicBool::new(false);
    let run_args: [&OsStr; 4] = ["run".as_ref(), g.file.as_os_str(), "--store".as_ref(), g.store.as_os_str()];
    let mut process = Vec::new();
    for _ in 0..REPS {
        // The whole process too, in turn with the steps: this machine's speed drifts.
        process.push(medgen(bin, &run_args)?.time);
        let [check, parse, lower, open, run, plan, entry, last, save] = &mut phases[..] else { unreachable!() };
        timed(&mut parse.times, || {
            let text = fs::read_to_string(&g.file).map_err(|e| format!("cannot read {}: {e}", g.file.display()))?;
            let (_, diagnostics) = medgen_lang::syntax::parse_file(FileId(0), &text);
            if diagnostics.is_empty() {
                Ok(())
            } else {
                Err(format!("{} does not parse", g.file.display()))
            }
        })?;
        let report = timed(&mut check.times, || medgen_lang::check_file(&g.file, &[], &registry));
        let pipeline = report.pipeline.ok_or_else(|| format!("{} does not check", g.file.display()))?;
        let dag = timed(&mut lower.times, || Dag::lower(&pipeline, &registry));
        let (store, stats) = timed(&mut open.times, || {
            let store = Store::open(&g.store).map_err(|e| format!("cannot open {}: {e}", g.store.display()))?;
            let stats = StatCache::load(&store.stat_cache_path());
            Ok::<_, String>((store, stats))
        })?;
        let states = timed(&mut plan.times, || plan_states(&dag, &store, &stats, dir, &runtime, false));
        let keys: Vec<_> = states
            .iter()
            .map(|(node, state)| match state {
                State::UpToDate(e) => Ok((e.key, dag.instance(*node).name.clone())),
                _ => Err(format!("{} is not up to date", dag.instance(*node).name)),
            })
            .collect::<Result<_>>()?;
        timed(&mut entry.times, || keys.iter().for_each(|(key, _)| drop(store.entry(*key))));
        timed(&mut last.times, || keys.iter().for_each(|(_, name)| drop(store.last(&dag.pipeline, name))));
        let report =
            timed(&mut run.times, || schedule::run(&dag, &store, &stats, dir, &runtime, &options, &Quiet, &cancel));
        if report.failed() || report.instances.iter().any(|i| !matches!(i.outcome, schedule::Outcome::Cached)) {
            return Err("the in-process no-op run did not find every instance cached".into());
        }
        timed(&mut save.times, || {
            stats.save(&store.stat_cache_path()).map_err(|e| format!("cannot save the stat cache: {e}"))?;
            store.record_run(&report, report.started).map_err(|e| format!("cannot write the run record: {e}"))
        })?;
    }
    Ok((phases, Stats::of(&process)))
}

fn print_phases(stages: usize, phases: &[Phase], process: Stats) {
    println!("## Where the {stages}-stage no-op goes\n");
    println!(
        "The steps of `medgen run` on the up-to-date pipeline, timed in one process through the library crates \
         (median of {REPS}); indented rows are parts of, or alternatives to, the row above them, not added to \
         the total.\n"
    );
    println!("| step | median | min |");
    println!("|---|---:|---:|");
    let mut total = Duration::ZERO;
    for p in phases {
        let s = Stats::of(&p.times);
        if !p.part {
            total += s.median;
        }
        let indent = if p.part { "&nbsp;&nbsp;&nbsp;&nbsp;" } else { "" };
        println!("| {indent}{} | {} | {} |", p.name, ms(s.median), ms(s.min));
    }
    println!("| **sum of the steps** | **{}** | |", ms(total));
    println!(
        "| whole `medgen run` process, run in turn with the steps | {} | {} |",
        ms(process.median),
        ms(process.min)
    );
    println!(
        "| &nbsp;&nbsp;&nbsp;&nbsp;the rest: process start and exit, argument parsing, output, fresh memory | {} | |\n",
        ms(process.median.saturating_sub(total))
    );
}

// ---------------------------------------------------------------------------------------------
// Hashing

fn hash_bench(dir: &Path) -> Result<()> {
    let path = dir.join("hash-1GiB.bin");
    let result = hash_bench_on(&path);
    let _ = fs::remove_file(&path);
    result
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn hash_bench_on(path: &Path) -> Result<()> {
    let started = Instant::now();
    write_big_file(path)?;
    let write_time = started.elapsed();
    let b3sum = find_on_path("b3sum");

    // Cold-ish: the file's pages dropped from the page cache first.
    evict(path)?;
    let cold = time_hash(path)?;
    let b3sum_cold = match &b3sum {
        Some(b) => {
            evict(path)?;
            Some(time_b3sum(b, path)?)
        }
        None => None,
    };
    // Warm: the whole file in the page cache; medgen and b3sum alternate, so that both see the
    // same background load.
    let mut warm = Vec::new();
    let mut b3sum_warm = b3sum.as_ref().map(|_| Vec::new());
    for _ in 0..HASH_REPS {
        warm.push(time_hash(path)?.0);
        if let (Some(b), Some(times)) = (&b3sum, &mut b3sum_warm) {
            times.push(time_b3sum(b, path)?.0);
        }
    }
    // The stat cache: a second look at an unchanged file costs a stat, not a read.
    settle(&[path.to_path_buf()])?;
    let cache = StatCache::default();
    cache.file(path, false).map_err(|e| format!("cannot hash {}: {e}", path.display()))?;
    let hit_started = Instant::now();
    let hit = cache.file(path, false).map_err(|e| format!("cannot hash {}: {e}", path.display()))?;
    let hit_time = hit_started.elapsed();

    let threads = rayon_threads();
    println!("## Hashing a 1 GiB file\n");
    println!(
        "Written in {} ({:.2} GB/s). GB = 10^9 bytes; warm: median (min) of {HASH_REPS}; `hash_file` uses {threads} \
         threads.\n",
        ms(write_time),
        gbps(HASH_BYTES, write_time)
    );
    println!("| what | page cache | time | throughput |");
    println!("|---|---|---:|---:|");
    let warm_stats = Stats::of(&warm);
    println!("| `medgen_engine::hash::hash_file` | dropped | {} | {:.2} GB/s |", ms(cold.0), gbps(HASH_BYTES, cold.0));
    println!(
        "| `medgen_engine::hash::hash_file` | warm | {} | {:.2} GB/s ({:.2}) |",
        stats(warm_stats),
        gbps(HASH_BYTES, warm_stats.median),
        gbps(HASH_BYTES, warm_stats.min)
    );
    match (&b3sum, b3sum_cold, &b3sum_warm) {
        (Some(b), Some(cold_b3), Some(warm_b3)) => {
            let s = Stats::of(warm_b3);
            println!(
                "| `b3sum` (`{}`) | dropped | {} | {:.2} GB/s |",
                b.display(),
                ms(cold_b3.0),
                gbps(HASH_BYTES, cold_b3.0)
            );
            println!(
                "| `b3sum` | warm | {} | {:.2} GB/s ({:.2}) |",
                stats(s),
                gbps(HASH_BYTES, s.median),
                gbps(HASH_BYTES, s.min)
            );
            if cold_b3.1 != cold.1.hex() {
                eprintln!("warning: b3sum printed {}, hash_file computed {}", cold_b3.1, cold.1.hex());
            }
        }
        _ => println!("| `b3sum` | — | not found on PATH (`cargo install b3sum` to compare) | — |"),
    }
    println!("| `StatCache::file`, unchanged file (stat cache hit) | — | {:.1} µs | — |", hit_time.as_secs_f64() * 1e6);
    if hit != cold.1 {
        return Err("the stat cache returned another digest than hash_file".into());
    }
    println!();
    Ok(())
}

/// Writes [`HASH_BYTES`] of pseudo-random bytes, flushed to disk.
fn write_big_file(path: &Path) -> Result<()> {
    const CHUNK: usize = 8 << 20;
    let fail = |e: std::io::Error| {
        format!("cannot write the 1 GiB test file {}: {e} (set MEDGEN_BENCH_DIR to a place with room)", path.display())
    };
    let mut buf = vec![0u8; CHUNK];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for word in buf.chunks_exact_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes());
    }
    let mut file = File::create(path).map_err(fail)?;
    for chunk in 0..HASH_BYTES / CHUNK as u64 {
        // Every chunk different, so no two blocks of the file are equal.
        buf[..8].copy_from_slice(&chunk.to_le_bytes());
        file.write_all(&buf).map_err(fail)?;
    }
    file.sync_all().map_err(fail)
}

/// Drops a file's pages from the page cache (it must be flushed already).
fn evict(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: posix_fadvise only advises the kernel about an open descriptor's pages.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(format!("posix_fadvise(DONTNEED) on {} failed: error {rc}", path.display()));
    }
    Ok(())
}

fn time_hash(path: &Path) -> Result<(Duration, medgen_engine::digest::FileDigest)> {
    let started = Instant::now();
    let digest = hash_file(path).map_err(|e| format!("cannot hash {}: {e}", path.display()))?;
    Ok((started.elapsed(), digest))
}

/// Times `b3sum --no-names FILE`; returns the time and the printed hex digest.
fn time_b3sum(b3sum: &Path, path: &Path) -> Result<(Duration, String)> {
    let started = Instant::now();
    let out = Command::new(b3sum)
        .arg("--no-names")
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", b3sum.display()))?;
    let time = started.elapsed();
    if !out.status.success() {
        return Err(format!("{} failed: {}", b3sum.display(), String::from_utf8_lossy(&out.stderr)));
    }
    Ok((time, String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Threads in rayon's global pool, which `hash_file` uses.
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
