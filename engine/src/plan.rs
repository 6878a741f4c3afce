//! What would run, and why: `medgen plan` and `medgen status`, and the first half of every
//! `medgen run`. Instances are visited upstream first; an instance whose upstream outputs are
//! all known gets its key, and is up to date when the store has a sound entry for that key.
//! An instance downstream of one that must run waits: its key depends on output not yet made
//! (and it may turn out up to date, if that output comes out identical).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use petgraph::graph::NodeIndex;

use crate::dag::{Dag, Instance};
use crate::digest::{OutputDigest, StageKey};
use crate::hash::StatCache;
use crate::key::{CacheKey, StaleReason, UpstreamKey, KEY_SCHEMA};
use crate::runner::Runtime;
use crate::store::{Entry, KeyRecord, Store};

/// The state of one instance before running.
#[derive(Clone, Debug)]
pub enum State {
    /// Its output is in the store.
    UpToDate(Entry),
    /// It must run, for these reasons.
    Stale { record: KeyRecord, reasons: Vec<StaleReason> },
    /// An upstream instance must run first; this one runs if that output changes.
    Waiting { on: Vec<String> },
    /// It cannot run: an input file is missing, or no runner exists for its kind.
    Blocked { why: String },
}

/// The key of an instance whose upstream outputs are known, with what made it. `Err` when an
/// input file cannot be read.
pub fn instance_key(
    dag: &Dag,
    node: NodeIndex,
    outputs: &BTreeMap<NodeIndex, OutputDigest>,
    stats: &StatCache,
    pipeline_dir: &Path,
    runtime: &dyn Runtime,
    verify: bool,
) -> Result<KeyRecord, String> {
    let inst = dag.instance(node);
    let mut files = BTreeMap::new();
    for (position, rel) in &inst.files {
        let path = pipeline_dir.join(rel);
        let digest =
            stats.path(&path, verify).map_err(|e| format!("cannot read input file `{rel}` ({position}): {e}"))?;
        files.insert(position.clone(), digest);
    }
    let mut upstream = BTreeMap::new();
    let mut upstream_instances = BTreeMap::new();
    for (input, edge) in &inst.inputs {
        upstream.insert(input.clone(), UpstreamKey { output: outputs[&edge.node], field: edge.field.clone() });
        upstream_instances.insert(input.clone(), dag.instance(edge.node).name.clone());
    }
    for (stage, up) in &inst.placeholders {
        let name = format!("{{{stage}}}");
        upstream.insert(name.clone(), UpstreamKey { output: outputs[up], field: None });
        upstream_instances.insert(name, dag.instance(*up).name.clone());
    }
    let key = CacheKey {
        schema: KEY_SCHEMA,
        kind: inst.kind.clone(),
        implementation: runtime.runner(&inst.kind).map_or(0, |r| r.version()),
        config: inst.config.clone(),
        files,
        upstream,
    };
    Ok(KeyRecord {
        pipeline: dag.pipeline.clone(),
        instance: inst.name.clone(),
        key,
        file_paths: inst.files.clone(),
        upstream_instances,
    })
}

/// What an instance's key will hold once its upstream outputs are known: everything but them.
/// An instance that waits on an upstream rerun (or on an input file that cannot be read now)
/// has no key yet, but only a stored output whose key matches this pattern can become its
/// output again — through early cut-off, when the upstream rerun reproduces the output that
/// key was made with. `medgen gc` keeps those and can remove the rest.
#[derive(Clone, Debug)]
pub struct KeyPattern {
    kind: String,
    implementation: u32,
    config: serde_json::Value,
    /// Dotted parameter position → the file's digest; `None` when it cannot be read now (it
    /// may be there again, with any content).
    files: BTreeMap<String, Option<crate::digest::FileDigest>>,
}

impl KeyPattern {
    /// Whether `key` could be the instance's key.
    pub fn matches(&self, key: &CacheKey) -> bool {
        key.schema == KEY_SCHEMA
            && key.kind == self.kind
            && key.implementation == self.implementation
            && key.config == self.config
            && key.files.len() == self.files.len()
            && self.files.iter().all(|(position, digest)| {
                key.files.get(position).is_some_and(|d| digest.is_none_or(|digest| *d == digest))
            })
    }
}

/// The [`KeyPattern`] of an instance, whatever the state of its upstream instances.
pub fn key_pattern(
    dag: &Dag,
    node: NodeIndex,
    stats: &StatCache,
    pipeline_dir: &Path,
    runtime: &dyn Runtime,
) -> KeyPattern {
    let inst = dag.instance(node);
    let files = inst
        .files
        .iter()
        .map(|(position, rel)| (position.clone(), stats.path(&pipeline_dir.join(rel), false).ok()))
        .collect();
    KeyPattern {
        kind: inst.kind.clone(),
        implementation: runtime.runner(&inst.kind).map_or(0, |r| r.version()),
        config: inst.config.clone(),
        files,
    }
}

/// Why an instance with this record must run (it has no sound entry).
pub fn reasons(store: &Store, record: &KeyRecord) -> Vec<StaleReason> {
    match store.last(&record.pipeline, &record.instance) {
        None => vec![StaleReason::New],
        Some(last) => {
            let reasons = record.key.compare(&last.record.key);
            if reasons.is_empty() {
                vec![StaleReason::OutputMissing]
            } else {
                reasons
            }
        }
    }
}

/// The sound entry of a key: checked cheaply, or re-hashed with `verify`. A corrupt entry is
/// reported through `Err` and, with `repair`, moved aside so that it is recomputed.
pub fn sound_entry(store: &Store, key: StageKey, verify: bool, repair: bool) -> Result<Option<Entry>, String> {
    let checked = store.entry(key).and_then(|e| match e {
        Some(entry) if verify => store.verify(&entry).map(|()| Some(entry)),
        other => Ok(other),
    });
    match checked {
        Ok(entry) => Ok(entry),
        Err(detail) if !repair => Err(detail),
        Err(detail) => {
            let moved = store
                .quarantine(key)
                .map_or_else(|e| format!("could not move it aside: {e}"), |p| format!("moved to {}", p.display()));
            Err(format!("{detail}; {moved}"))
        }
    }
}

/// The state of every instance, upstream first.
pub fn plan(
    dag: &Dag,
    store: &Store,
    stats: &StatCache,
    pipeline_dir: &Path,
    runtime: &dyn Runtime,
    verify: bool,
) -> Vec<(NodeIndex, State)> {
    let mut outputs: BTreeMap<NodeIndex, OutputDigest> = BTreeMap::new();
    let mut states = Vec::with_capacity(dag.order.len());
    let mut blocked = std::collections::BTreeSet::new();
    for &node in &dag.order {
        let inst = dag.instance(node);
        let waiting: Vec<String> =
            dag.upstream(node).filter(|u| !outputs.contains_key(u)).map(|u| dag.instance(u).name.clone()).collect();
        let blocked_by = dag.upstream(node).find(|u| blocked.contains(u));
        let state = if let Some(up) = blocked_by {
            State::Blocked { why: format!("`{}` cannot run", dag.instance(up).name) }
        } else if !waiting.is_empty() {
            State::Waiting { on: waiting }
        } else {
            match instance_key(dag, node, &outputs, stats, pipeline_dir, runtime, verify) {
                Err(why) => State::Blocked { why },
                Ok(record) => match sound_entry(store, record.key.digest(), verify, false) {
                    Ok(Some(entry)) => {
                        outputs.insert(node, entry.output);
                        State::UpToDate(entry)
                    }
                    Ok(None) => stale(store, record, None, runtime, inst),
                    Err(detail) => stale(store, record, Some(detail), runtime, inst),
                },
            }
        };
        if matches!(state, State::Blocked { .. }) {
            blocked.insert(node);
        }
        states.push((node, state));
    }
    states
}

fn stale(store: &Store, record: KeyRecord, corrupt: Option<String>, runtime: &dyn Runtime, inst: &Instance) -> State {
    if runtime.runner(&inst.kind).is_none() {
        return State::Blocked { why: not_runnable(&inst.kind) };
    }
    let reasons = match corrupt {
        Some(detail) => vec![StaleReason::OutputCorrupt { detail }],
        None => reasons(store, &record),
    };
    State::Stale { record, reasons }
}

/// The message for a stage kind that has no runner yet.
pub fn not_runnable(kind: &str) -> String {
    format!("`{kind}` stages cannot run yet: this version of medgen checks them but has no implementation")
}

/// Absolute paths of an instance's path parameters.
pub fn absolute_files(inst: &Instance, pipeline_dir: &Path) -> BTreeMap<String, PathBuf> {
    inst.files.iter().map(|(k, rel)| (k.clone(), pipeline_dir.join(rel))).collect()
}
