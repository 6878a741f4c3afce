//! The engine commands: `run`, `plan`, `status`, `graph`, `show` (and, in `gc.rs`, `gc`).

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use medgen_engine::dag::Dag;
use medgen_engine::hash::StatCache;
use medgen_engine::plan::{plan as plan_states, State};
use medgen_engine::runs::{self, RunRecord};
use medgen_engine::schedule::{self, Outcome, RunOptions, RunReport};
use medgen_engine::store::Store;
use medgen_lang::CheckedPipeline;
use medgen_stdlib::{StdRegistry, StdRuntime};

use crate::progress::{duration, Progress};
use crate::{lang_cmds, Exit, GraphFormat, PipelineArgs, StoreArg};

/// A checked, lowered pipeline with its store.
struct Loaded {
    pipeline: CheckedPipeline,
    dag: Dag,
    store: Store,
    stats: StatCache,
    /// The pipeline file's directory: relative paths in it start here.
    dir: PathBuf,
    file: PathBuf,
}

/// Where a command's store is. Every command follows this one rule, so that `show`, `status`
/// and `gc` find what `run` stored, from any working directory:
///
/// 1. `--store DIR`, or `$MEDGEN_STORE`;
/// 2. given a pipeline file, `.medgen/` beside it — where `run` stores;
/// 3. given none, `.medgen/` in the current directory if it is a store (the store of the
///    pipelines here); otherwise there is no store to guess, and the error says what to pass.
pub fn store_root(arg: &StoreArg, pipeline: Option<&Path>) -> Result<PathBuf, Exit> {
    if let Some(dir) = &arg.store {
        return Ok(dir.clone());
    }
    if let Some(file) = pipeline {
        let file = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
        return Ok(file.parent().unwrap_or_else(|| Path::new(".")).join(".medgen"));
    }
    let here = PathBuf::from(".medgen");
    if is_store(&here) {
        return Ok(here);
    }
    eprintln!(
        "error: no store in the current directory (.medgen/); name the pipeline (`run` stores beside it) or the \
         store (`--store DIR`)"
    );
    Err(Exit::Errors)
}

/// Whether `root` holds a store (`run` has used it).
pub fn is_store(root: &Path) -> bool {
    root.join("objects").is_dir()
}

/// Opens a store that must exist already (commands that only read or collect do not create
/// one); prints why not.
pub fn open_existing(root: &Path) -> Result<Store, Exit> {
    if !is_store(root) {
        eprintln!("error: {} is not a medgen store (no objects/): nothing was run with it", root.display());
        return Err(Exit::Errors);
    }
    Store::open(root).map_err(|e| {
        eprintln!("error: cannot open the store {}: {e}", root.display());
        Exit::Errors
    })
}

/// Checks and lowers a pipeline and opens the store at `root` (creating it); prints
/// diagnostics, and on errors the summary line, and returns the exit status to use.
fn load(file: &Path, overrides: &[String], root: &Path, registry: &StdRegistry, color: bool) -> Result<Loaded, Exit> {
    let report = medgen_lang::check_file(file, overrides, registry);
    let Some(pipeline) = report.pipeline else {
        lang_cmds::report(file, &report, false, color);
        return Err(Exit::Errors);
    };
    lang_cmds::print_diagnostics(&report.diagnostics, &report.sources, color);
    let file = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
    let dir = file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let store = Store::open(root).map_err(|e| {
        eprintln!("error: cannot open the store {}: {e}", root.display());
        Exit::Errors
    })?;
    let stats = StatCache::load(&store.stat_cache_path());
    let dag = Dag::lower(&pipeline, registry);
    Ok(Loaded { pipeline, dag, store, stats, dir, file })
}

/// [`load`] for a command given a pipeline file, with its store where [`store_root`] says.
fn load_args(args: &PipelineArgs, registry: &StdRegistry, color: bool) -> Result<Loaded, Exit> {
    let root = store_root(&args.store, Some(&args.file))?;
    load(&args.file, &args.overrides, &root, registry, color)
}

pub fn run(
    args: &PipelineArgs,
    jobs: usize,
    keep_going: bool,
    verify: bool,
    verbose: u8,
    registry: &StdRegistry,
    color: bool,
) -> Exit {
    let loaded = match load_args(args, registry, color) {
        Ok(l) => l,
        Err(exit) => return exit,
    };
    // Recorded before anything runs, so that a store always knows which pipelines use it
    // (`gc`), even when this run is killed.
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let starting = RunReport::starting(&loaded.dag.pipeline, started);
    let record_path = loaded
        .store
        .record_run(&RunRecord::new(&loaded.store, &loaded.file, &args.overrides, &starting), started)
        .map_err(|e| eprintln!("warning: could not write the run record: {e}"))
        .ok();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted twice: exiting now (nothing half-written is recorded)");
            std::process::exit(Exit::Interrupted as i32);
        }
        eprintln!("\ninterrupting: stopping running stages (Ctrl-C again to exit at once)");
    });
    let runtime = StdRuntime::new();
    let progress = Progress::new(loaded.dag.order.len(), std::io::stderr().is_terminal(), verbose > 0);
    let options = RunOptions { jobs, keep_going, verify };
    let report =
        schedule::run(&loaded.dag, &loaded.store, &loaded.stats, &loaded.dir, &runtime, &options, &progress, &cancel);
    progress.finish();
    if let Err(e) = loaded.stats.save(&loaded.store.stat_cache_path()) {
        tracing::warn!("could not save the stat cache: {e}");
    }
    let record = RunRecord { finished: true, ..RunRecord::new(&loaded.store, &loaded.file, &args.overrides, &report) };
    let written = match &record_path {
        Some(path) => loaded.store.rewrite_run(path, &record),
        None => loaded.store.record_run(&record, report.started).map(drop),
    };
    if let Err(e) = written {
        eprintln!("warning: could not write the run record: {e}");
    }
    summarize(&report)
}

/// Prints what a run did and returns its exit status.
fn summarize(report: &RunReport) -> Exit {
    let count = |f: fn(&Outcome) -> bool| report.instances.iter().filter(|i| f(&i.outcome)).count();
    let ran = count(|o| matches!(o, Outcome::Ran { .. }));
    let cached = count(|o| matches!(o, Outcome::Cached));
    let failed = count(|o| matches!(o, Outcome::Failed { .. }));
    let skipped = count(|o| matches!(o, Outcome::Skipped { .. }));
    let mut parts = vec![format!("{ran} ran"), format!("{cached} cached")];
    if failed > 0 {
        parts.push(format!("{failed} failed"));
    }
    if skipped > 0 {
        parts.push(format!("{skipped} skipped"));
    }
    let not_started = report.instances.len() - ran - cached - failed - skipped;
    if not_started > 0 {
        parts.push(format!("{not_started} not started"));
    }
    eprintln!("{}: {} ({})", report.pipeline, parts.join(", "), duration(report.seconds));
    for i in &report.instances {
        if let Outcome::Failed { error } = &i.outcome {
            eprintln!("\nerror: stage {} failed: {error}", i.name);
        }
    }
    if !report.expects.is_empty() {
        eprintln!("\nexpectations:");
        let width = report.expects.iter().map(|e| e.instance.len()).max().unwrap_or(0);
        for e in &report.expects {
            let value = e.value.map_or_else(|| "not measured".to_string(), |v| format!("{v:.6}"));
            let verdict = if e.passed { "ok" } else { "FAILED" };
            eprintln!("  {:<width$}  {} {} {}  measured {value}  {verdict}", e.instance, e.metric, e.op, e.threshold);
        }
    }
    if report.cancelled {
        eprintln!("interrupted: stages that did not finish recorded nothing; run again to continue");
        Exit::Interrupted
    } else if report.failed() {
        if failed > 0 && not_started > 0 {
            eprintln!("stopped after the first failure; `--keep-going` runs the stages that do not depend on it");
        }
        Exit::StageFailed
    } else if report.expects_failed() {
        Exit::ExpectFailed
    } else {
        Exit::Ok
    }
}

/// `plan` (what would run and why) and `status` (plus each instance's last success).
pub fn plan(args: &PipelineArgs, with_history: bool, registry: &StdRegistry, color: bool) -> Exit {
    let loaded = match load_args(args, registry, color) {
        Ok(l) => l,
        Err(exit) => return exit,
    };
    let runtime = StdRuntime::new();
    let states = plan_states(&loaded.dag, &loaded.store, &loaded.stats, &loaded.dir, &runtime, false);
    let width = states.iter().map(|(n, _)| loaded.dag.instance(*n).name.len()).max().unwrap_or(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut would_run = 0;
    for (node, state) in &states {
        let name = &loaded.dag.instance(*node).name;
        let (label, detail) = match state {
            State::UpToDate(_) => ("up to date", String::new()),
            State::Stale { reasons, .. } => {
                would_run += 1;
                ("will run", reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
            }
            State::Waiting { on } => {
                would_run += 1;
                ("may run", format!("if {} changes its output", on.join(", ")))
            }
            State::Blocked { why } => ("cannot run", why.clone()),
        };
        let mut line = format!("  {label:<10}  {name:<width$}  {detail}");
        if with_history {
            let history = match loaded.store.last(&loaded.pipeline.name, name) {
                Some(last) if last.seconds > 0.0 => {
                    format!(
                        "  [last ran {} ago, took {}]",
                        duration(now.saturating_sub(last.finished) as f64),
                        duration(last.seconds)
                    )
                }
                Some(last) => format!("  [last confirmed {} ago]", duration(now.saturating_sub(last.finished) as f64)),
                None => "  [never ran]".to_string(),
            };
            line.push_str(&history);
        }
        outln!("{}", line.trim_end());
    }
    eprintln!("{}: {would_run} of {} instances would run", loaded.pipeline.name, states.len());
    Exit::Ok
}

pub fn graph(args: &PipelineArgs, format: GraphFormat, registry: &StdRegistry, color: bool) -> Exit {
    let loaded = match load_args(args, registry, color) {
        Ok(l) => l,
        Err(exit) => return exit,
    };
    match format {
        GraphFormat::Dot => out!("{}", medgen_engine::graph::dot(&loaded.dag)),
        GraphFormat::Mermaid => out!("{}", medgen_engine::graph::mermaid(&loaded.dag)),
    }
    Exit::Ok
}

pub fn show(
    target: &str,
    pipeline: Option<PathBuf>,
    overrides: &[String],
    store: &StoreArg,
    registry: &StdRegistry,
    color: bool,
) -> Exit {
    let (file, overrides, root) = match pipeline {
        Some(file) => match store_root(store, Some(&file)) {
            Ok(root) => (file, overrides.to_vec(), root),
            Err(exit) => return exit,
        },
        None => {
            let root = match store_root(store, None) {
                Ok(root) => root,
                Err(exit) => {
                    eprintln!("  e.g. `medgen show {target} --pipeline FILE`");
                    return exit;
                }
            };
            let opened = match open_existing(&root) {
                Ok(s) => s,
                Err(exit) => return exit,
            };
            // The pipeline of the store's last run, read from this store: in a copied project,
            // the copy's pipeline and the copy's outputs.
            match runs::latest(&opened) {
                Some((_, Ok(run))) => {
                    let overrides = if overrides.is_empty() { run.overrides.clone() } else { overrides.to_vec() };
                    (run.pipeline_file(&opened), overrides, root)
                }
                Some((path, Err(e))) => {
                    eprintln!(
                        "error: cannot read the run record {} ({e}); name the pipeline with `--pipeline FILE`",
                        path.display()
                    );
                    return Exit::Errors;
                }
                None => {
                    eprintln!("error: no run recorded in {}; name the pipeline with `--pipeline FILE`", root.display());
                    return Exit::Errors;
                }
            }
        }
    };
    let loaded = match load(&file, &overrides, &root, registry, color) {
        Ok(l) => l,
        Err(exit) => return exit,
    };
    let runtime = StdRuntime::new();
    let states = plan_states(&loaded.dag, &loaded.store, &loaded.stats, &loaded.dir, &runtime, false);
    let chosen: Vec<_> = states
        .iter()
        .filter(|(n, _)| {
            let inst = loaded.dag.instance(*n);
            inst.stage == target || inst.name == target
        })
        .collect();
    if chosen.is_empty() {
        let names: BTreeSet<&str> = loaded.dag.order.iter().map(|n| loaded.dag.instance(*n).stage.as_str()).collect();
        eprintln!(
            "error: `{target}` is not a stage of {}; stages: {}",
            file.display(),
            names.into_iter().collect::<Vec<_>>().join(", ")
        );
        return Exit::Errors;
    }
    for (node, state) in chosen {
        let inst = loaded.dag.instance(*node);
        outln!("{} ({})", inst.name, inst.kind);
        match state {
            State::UpToDate(entry) => {
                outln!("  state:   up to date");
                outln!("  key:     {}", entry.key);
                outln!("  output:  {}", entry.out_dir().display());
                for (rel, f) in &entry.manifest.files {
                    outln!("    {rel}  ({} bytes, blake3 {})", f.size, &f.digest.hex()[..12]);
                }
                for (name, value) in &entry.manifest.metrics {
                    outln!("  metric:  {name} = {value}");
                }
                let log = entry.dir.join("log.txt");
                if log.exists() {
                    outln!("  log:     {}", log.display());
                }
            }
            State::Stale { reasons, .. } => {
                outln!("  state:   stale ({})", reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
            }
            State::Waiting { on } => outln!("  state:   waiting for {}", on.join(", ")),
            State::Blocked { why } => outln!("  state:   cannot run: {why}"),
        }
        for (name, value) in &inst.params {
            outln!("  param:   {name} = {value}");
        }
    }
    Exit::Ok
}

/// `1.2 MB`.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}
