//! The engine commands: `run`, `plan`, `status`, `graph`, `show`, `gc`.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use medgen_engine::dag::Dag;
use medgen_engine::digest::StageKey;
use medgen_engine::hash::StatCache;
use medgen_engine::plan::{plan as plan_states, State};
use medgen_engine::schedule::{self, Outcome, RunOptions, RunReport};
use medgen_engine::store::{dir_size, Store};
use medgen_lang::CheckedPipeline;
use medgen_stdlib::{StdRegistry, StdRuntime};
use serde::Serialize;

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

/// Checks and lowers a pipeline and opens its store; prints diagnostics, and on errors the
/// summary line, and returns the exit status to use.
fn load(
    file: &Path,
    overrides: &[String],
    store: &StoreArg,
    registry: &StdRegistry,
    color: bool,
) -> Result<Loaded, Exit> {
    let report = medgen_lang::check_file(file, overrides, registry);
    let Some(pipeline) = report.pipeline else {
        lang_cmds::report(file, &report, false, color);
        return Err(Exit::Errors);
    };
    lang_cmds::print_diagnostics(&report.diagnostics, &report.sources, color);
    let file = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
    let dir = file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let root = store.store.clone().unwrap_or_else(|| dir.join(".medgen"));
    let store = Store::open(&root).map_err(|e| {
        eprintln!("error: cannot open the store {}: {e}", root.display());
        Exit::Errors
    })?;
    let stats = StatCache::load(&store.stat_cache_path());
    let dag = Dag::lower(&pipeline, registry);
    Ok(Loaded { pipeline, dag, store, stats, dir, file })
}

/// What `runs/` keeps of each run.
#[derive(Serialize)]
struct RunRecord<'a> {
    file: &'a Path,
    overrides: &'a [String],
    #[serde(flatten)]
    report: &'a RunReport,
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
    let loaded = match load(&args.file, &args.overrides, &args.store, registry, color) {
        Ok(l) => l,
        Err(exit) => return exit,
    };
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
    let record = RunRecord { file: &loaded.file, overrides: &args.overrides, report: &report };
    if let Err(e) = loaded.store.record_run(&record, report.started) {
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
    let loaded = match load(&args.file, &args.overrides, &args.store, registry, color) {
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
    let loaded = match load(&args.file, &args.overrides, &args.store, registry, color) {
        Ok(l) => l,
        Err(exit) => return exit,
    };
    match format {
        GraphFormat::Dot => out!("{}", medgen_engine::graph::dot(&loaded.dag)),
        GraphFormat::Mermaid => out!("{}", medgen_engine::graph::mermaid(&loaded.dag)),
    }
    Exit::Ok
}

/// The pipeline file and overrides of the newest run record of a store.
fn last_run_pipeline(store_root: &Path) -> Option<(PathBuf, Vec<String>)> {
    let store = Store::open(store_root).ok()?;
    let bytes = std::fs::read(store.latest_run()?).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let file = PathBuf::from(json.get("file")?.as_str()?);
    let overrides = json.get("overrides")?.as_array()?.iter().filter_map(|v| v.as_str().map(String::from)).collect();
    Some((file, overrides))
}

pub fn show(
    target: &str,
    pipeline: Option<PathBuf>,
    overrides: &[String],
    store: &StoreArg,
    registry: &StdRegistry,
    color: bool,
) -> Exit {
    let (file, overrides) = match pipeline {
        Some(f) => (f, overrides.to_vec()),
        None => {
            let root = store.store.clone().unwrap_or_else(|| PathBuf::from(".medgen"));
            match last_run_pipeline(&root) {
                Some((f, recorded)) => (f, if overrides.is_empty() { recorded } else { overrides.to_vec() }),
                None => {
                    eprintln!("error: no run recorded in {}; name the pipeline with `--pipeline FILE`", root.display());
                    return Exit::Errors;
                }
            }
        }
    };
    let loaded = match load(&file, &overrides, store, registry, color) {
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

/// Pipeline files under `dir`, skipping hidden directories and build output.
fn pipelines_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" || name == "node_modules" {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            pipelines_under(&path, out);
        } else if path.extension().is_some_and(|x| x == "mg") {
            out.push(path);
        }
    }
}

pub fn gc(all: bool, dry_run: bool, store: &StoreArg, registry: &StdRegistry) -> Exit {
    let root = store.store.clone().unwrap_or_else(|| PathBuf::from(".medgen"));
    if !root.join("objects").is_dir() {
        eprintln!("error: {} is not a medgen store (no objects/); give it with --store", root.display());
        return Exit::Errors;
    }
    let opened = match Store::open(&root) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot open the store {}: {e}", root.display());
            return Exit::Errors;
        }
    };
    let mut live: BTreeSet<StageKey> = BTreeSet::new();
    let mut pending: Vec<StageKey> = Vec::new();
    if !all {
        let base = root
            .canonicalize()
            .ok()
            .and_then(|r| r.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        let mut files = Vec::new();
        pipelines_under(&base, &mut files);
        files.sort();
        let runtime = StdRuntime::new();
        let stats = StatCache::load(&opened.stat_cache_path());
        let mut broken = Vec::new();
        for file in &files {
            let report = medgen_lang::check_file(file, &[], registry);
            let Some(pipeline) = report.pipeline else {
                broken.push(file.display().to_string());
                continue;
            };
            let dag = Dag::lower(&pipeline, registry);
            let dir = file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            for (_, state) in plan_states(&dag, &opened, &stats, &dir, &runtime, false) {
                match state {
                    State::UpToDate(entry) => {
                        live.insert(entry.key);
                    }
                    State::Stale { record, .. } => pending.push(record.key.digest()),
                    _ => {}
                }
            }
        }
        if !broken.is_empty() {
            eprintln!("error: cannot tell what these pipelines use, because they do not check: {}", broken.join(", "));
            eprintln!("  fix them (`medgen check`), or remove everything with `medgen gc --all`");
            return Exit::Errors;
        }
        eprintln!("{} pipelines under {} use {} stored outputs", files.len(), base.display(), live.len());
    }
    let dead: Vec<StageKey> = opened.keys().into_iter().filter(|k| !live.contains(k)).collect();
    let (count, freed) = if dry_run {
        (dead.len(), dead.iter().map(|k| dir_size(&root.join("objects").join(k.hex()))).sum::<u64>())
    } else {
        let freed: u64 = dead.iter().map(|k| opened.remove(*k)).sum::<u64>() + opened.remove_leftovers(&pending);
        (dead.len(), freed)
    };
    let verb = if dry_run { "would remove" } else { "removed" };
    eprintln!("{verb} {count} stored output{} ({})", if count == 1 { "" } else { "s" }, bytes(freed));
    Exit::Ok
}

/// `1.2 MB`.
fn bytes(n: u64) -> String {
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
