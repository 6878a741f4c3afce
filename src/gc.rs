//! `medgen gc`: removes the stored outputs that the pipelines it is told about provably do not
//! use.
//!
//! A store holds hours of training, and "unused" can only be proved against the pipelines that
//! use the store. gc is told which they are in one of two ways, and never guesses by scanning
//! directories for pipeline files:
//!
//! - `gc FILE...`: the pipelines named (their store is beside them, or `--store`);
//! - `gc`: the pipelines named in the store's own run records (`run` records each run when it
//!   starts), each with the overrides it was run with.
//!
//! A pipeline that checks is planned as `plan` would: what its instances use now is kept, and so
//! is every output that an instance whose key is not known yet (it waits on an upstream stage
//! that must rerun) could get back through early cut-off: those whose keys differ from its own
//! only in the upstream outputs (`plan::KeyPattern`). A recorded pipeline
//! that no longer exists or no longer checks cannot be planned: unknown is not unused, so the
//! outputs its runs recorded, and every output its pipeline name made, are kept, and gc says so.
//! A store with no run record is not emptied for lack of a pipeline: gc removes nothing and
//! says what to pass. `--all` is the one explicit way to remove every stored output.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use medgen_engine::dag::Dag;
use medgen_engine::digest::StageKey;
use medgen_engine::hash::StatCache;
use medgen_engine::plan::{key_pattern, plan as plan_states, State};
use medgen_engine::runs;
use medgen_engine::store::{dir_size, KeyRecord, Store};
use medgen_stdlib::{StdRegistry, StdRuntime};

use crate::engine_cmds::{bytes, open_existing, store_root};
use crate::{Exit, StoreArg};

/// What gc keeps.
#[derive(Default)]
struct Keep {
    /// Stored outputs (committed entries).
    outputs: BTreeSet<StageKey>,
    /// Work directories: checkpoints of instances that still have to run.
    work: BTreeSet<StageKey>,
}

/// A pipeline gc was told about: a file, and the overrides it is evaluated with.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Told {
    file: PathBuf,
    overrides: Vec<String>,
}

impl Told {
    /// The file and its overrides, as a user would type them.
    fn label(&self) -> String {
        let mut label = self.file.display().to_string();
        for o in &self.overrides {
            label.push_str(&format!(" --set {o}"));
        }
        label
    }
}

/// What the store's run records say about one pipeline.
#[derive(Default)]
struct Recorded {
    /// Keys of the instances its runs keyed.
    keys: BTreeSet<StageKey>,
    /// Its `pipeline NAME`s, as the entries' `key.json` name them.
    names: BTreeSet<String>,
}

/// What one pipeline that checks uses.
#[derive(Default)]
struct Use {
    /// The stored outputs its instances use now.
    used: BTreeSet<StageKey>,
    /// Outputs that instances whose key waits on an upstream rerun (or on an input) may get
    /// back.
    maybe: BTreeSet<StageKey>,
    /// Keys of instances that must run: their checkpoints are kept.
    pending: BTreeSet<StageKey>,
}

pub fn gc(files: &[PathBuf], all: bool, dry_run: bool, store: &StoreArg, registry: &StdRegistry) -> Exit {
    let root = match gc_store(files, store) {
        Ok(root) => root,
        Err(exit) => return exit,
    };
    let opened = match open_existing(&root) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let keep = if all {
        Keep::default()
    } else {
        let stored: BTreeMap<StageKey, KeyRecord> =
            opened.keys().into_iter().filter_map(|k| Some((k, opened.key_record(k)?))).collect();
        let told = if files.is_empty() {
            keep_recorded(&opened, &stored, registry)
        } else {
            keep_named(files, &opened, &stored, registry)
        };
        match told {
            Ok(keep) => keep,
            Err(exit) => return exit,
        }
    };
    let dead: Vec<StageKey> = opened.keys().into_iter().filter(|k| !keep.outputs.contains(k)).collect();
    let kept = opened.keys().len() - dead.len();
    let freed = if dry_run {
        dead.iter().map(|k| dir_size(&opened.root().join("objects").join(k.hex()))).sum::<u64>()
    } else {
        dead.iter().map(|k| opened.remove(*k)).sum::<u64>() + opened.remove_leftovers(&keep.work)
    };
    let verb = if dry_run { "would remove" } else { "removed" };
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    eprintln!("{verb} {} stored output{} ({}), kept {kept}", dead.len(), plural(dead.len()), bytes(freed));
    Exit::Ok
}

/// The store to collect: [`store_root`] of the pipelines named, which must agree.
fn gc_store(files: &[PathBuf], store: &StoreArg) -> Result<PathBuf, Exit> {
    let Some(first) = files.first() else {
        return store_root(store, None).inspect_err(|_| {
            eprintln!("  e.g. `medgen gc FILE...` (the pipelines whose outputs to keep) or `medgen gc --store DIR`");
        });
    };
    let root = store_root(store, Some(first))?;
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    for file in &files[1..] {
        let other = store_root(store, Some(file))?;
        if canonical(&other) != canonical(&root) {
            eprintln!(
                "error: {} and {} keep their outputs in different stores ({} and {}); collect one store at a time",
                first.display(),
                file.display(),
                root.display(),
                other.display()
            );
            return Err(Exit::Errors);
        }
    }
    Ok(root)
}

/// `gc FILE...`: what the named pipelines use. A named pipeline that does not check stops gc:
/// what it uses cannot be known.
fn keep_named(
    files: &[PathBuf],
    store: &Store,
    stored: &BTreeMap<StageKey, KeyRecord>,
    registry: &StdRegistry,
) -> Result<Keep, Exit> {
    let stats = StatCache::load(&store.stat_cache_path());
    let runtime = StdRuntime::new();
    let mut keep = Keep::default();
    let mut broken = Vec::new();
    let mut named = BTreeSet::new();
    eprintln!("keeping what the pipelines named use:");
    for file in files {
        let told = Told { file: file.clone(), overrides: Vec::new() };
        match evaluate(&told, store, stored, &stats, &runtime, registry) {
            Ok(uses) => {
                report_use(&told, &uses);
                keep.add(uses);
            }
            Err(why) => broken.push(format!("{} ({why})", file.display())),
        }
        named.insert(file.canonicalize().unwrap_or_else(|_| file.clone()));
    }
    if !broken.is_empty() {
        eprintln!("error: cannot tell what these pipelines use: {}", broken.join(", "));
        eprintln!("  fix them (`medgen check`), or name only the others; nothing was removed");
        return Err(Exit::Errors);
    }
    let others: BTreeSet<String> = runs::all(store)
        .into_iter()
        .filter_map(|(_, run)| run.ok())
        .map(|run| run.pipeline_file(store))
        .filter(|file| !named.contains(file))
        .map(|file| file.display().to_string())
        .collect();
    if !others.is_empty() {
        eprintln!(
            "note: runs recorded in this store also used {}: name them too to keep their outputs",
            others.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(keep)
}

/// `gc`: what the pipelines of the store's run records use, and everything of those that
/// cannot be evaluated.
fn keep_recorded(store: &Store, stored: &BTreeMap<StageKey, KeyRecord>, registry: &StdRegistry) -> Result<Keep, Exit> {
    let mut recorded: BTreeMap<Told, Recorded> = BTreeMap::new();
    for (path, run) in runs::all(store) {
        let run = match run {
            Ok(run) => run,
            Err(e) => {
                eprintln!(
                    "error: cannot read the run record {} ({e}), so cannot tell which pipeline it names",
                    path.display()
                );
                eprintln!("  remove it, or name the pipelines to keep: `medgen gc FILE...`; nothing was removed");
                return Err(Exit::Errors);
            }
        };
        let told = Told { file: run.pipeline_file(store), overrides: run.overrides.clone() };
        let entry = recorded.entry(told).or_default();
        entry.keys.extend(run.keys());
        entry.names.insert(run.pipeline.clone());
    }
    if recorded.is_empty() {
        eprintln!(
            "error: no run is recorded in {}, so gc cannot tell which pipelines use it; nothing was removed",
            store.root().display()
        );
        eprintln!("  name them (`medgen gc FILE...`), or remove every stored output (`medgen gc --all`)");
        return Err(Exit::Errors);
    }
    let stats = StatCache::load(&store.stat_cache_path());
    let runtime = StdRuntime::new();
    let existing: BTreeSet<StageKey> = store.keys().into_iter().collect();
    let mut keep = Keep::default();
    let mut unknown = false;
    eprintln!("keeping what the pipelines of this store's runs use:");
    for (told, record) in &recorded {
        match evaluate(told, store, stored, &stats, &runtime, registry) {
            Ok(uses) => {
                report_use(told, &uses);
                keep.add(uses);
            }
            Err(why) => {
                unknown = true;
                let by_name = stored.iter().filter(|(_, r)| record.names.contains(&r.pipeline)).map(|(k, _)| *k);
                let mut outputs: BTreeSet<StageKey> = by_name.collect();
                outputs.extend(record.keys.iter().copied().filter(|k| existing.contains(k)));
                eprintln!(
                    "  {}: {why}; keeping the {} stored output{} its runs made (unknown is not unused)",
                    told.label(),
                    outputs.len(),
                    if outputs.len() == 1 { "" } else { "s" }
                );
                keep.outputs.extend(outputs);
                keep.work.extend(record.keys.iter().copied());
            }
        }
    }
    if unknown {
        eprintln!("  to collect those too: name the pipelines to keep (`medgen gc FILE...`), or use `medgen gc --all`");
    }
    Ok(keep)
}

impl Keep {
    fn add(&mut self, uses: Use) {
        self.outputs.extend(uses.used);
        self.outputs.extend(uses.maybe);
        self.work.extend(uses.pending);
    }
}

/// What a pipeline uses, as `plan` sees it; `Err` says why it cannot be known.
fn evaluate(
    told: &Told,
    store: &Store,
    stored: &BTreeMap<StageKey, KeyRecord>,
    stats: &StatCache,
    runtime: &StdRuntime,
    registry: &StdRegistry,
) -> Result<Use, String> {
    if !told.file.is_file() {
        return Err("no longer exists".to_string());
    }
    let report = medgen_lang::check_file(&told.file, &told.overrides, registry);
    let Some(pipeline) = report.pipeline else { return Err("does not check".to_string()) };
    let dag = Dag::lower(&pipeline, registry);
    let dir = told.file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut uses = Use::default();
    for (node, state) in plan_states(&dag, store, stats, &dir, runtime, false) {
        match state {
            State::UpToDate(entry) => {
                uses.used.insert(entry.key);
            }
            State::Stale { record, .. } => {
                uses.pending.insert(record.key.digest());
            }
            State::Waiting { .. } | State::Blocked { .. } => {
                let pattern = key_pattern(&dag, node, stats, &dir, runtime);
                uses.maybe.extend(stored.iter().filter(|(_, r)| pattern.matches(&r.key)).map(|(k, _)| *k));
            }
        }
    }
    Ok(uses)
}

/// `  p.mg: uses 3 stored outputs, and keeps 1 more whose stage cannot be keyed yet (...)`.
fn report_use(told: &Told, uses: &Use) {
    let used = uses.used.len();
    let maybe = uses.maybe.difference(&uses.used).count();
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let mut line = format!("  {}: uses {used} stored output{}", told.label(), plural(used));
    if maybe > 0 {
        line.push_str(&format!(
            ", and keeps {maybe} more that a stage waiting on an upstream rerun may get back (early cut-off)"
        ));
    }
    eprintln!("{line}");
}
