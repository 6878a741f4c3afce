//! Running a DAG: instances in dependency order, independent ones in parallel.
//!
//! The coordinator (the calling thread) keeps each instance's state. An instance becomes ready
//! when all its upstream instances are done; the coordinator then computes its key and, when
//! the store holds a sound entry, marks it done on the spot — a no-op rerun never starts a
//! thread. Otherwise a worker thread takes the key's lock (so two `medgen run` processes never
//! compute one key twice: the second waits, then finds the entry), checks the store again, runs
//! the stage in a private attempt directory and commits it. A failure skips everything
//! downstream of it; without `keep_going` nothing new starts after the first failure. Setting
//! `cancel` stops scheduling, asks running stages to stop, and records nothing of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use petgraph::graph::NodeIndex;
use serde::Serialize;

use crate::dag::Dag;
use crate::digest::OutputDigest;
use crate::hash::StatCache;
use crate::key::StaleReason;
use crate::plan::{absolute_files, instance_key, not_runnable, reasons, sound_entry};
use crate::runner::{RunContext, Runtime, StageError, UpstreamData};
use crate::store::{Entry, IndexEntry, KeyRecord, Store};

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Most stages running at once.
    pub jobs: usize,
    /// After a failure, keep running what does not depend on it.
    pub keep_going: bool,
    /// Re-hash inputs and stored outputs instead of trusting stat information and sizes.
    pub verify: bool,
}

/// What happened to an instance, as the progress display and the run record see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// Its output was already in the store.
    Cached,
    /// It ran and its output was committed.
    Ran {
        seconds: f64,
    },
    Failed {
        error: String,
    },
    /// An upstream instance failed or was cancelled.
    Skipped {
        because: String,
    },
    /// Interrupted while running, or never started because of an interruption.
    Cancelled,
    /// Not started: an earlier failure stopped the run (without `keep_going`).
    NotStarted,
}

/// Events for a progress display.
#[derive(Clone, Debug)]
pub enum Event {
    /// An instance started running, and why it had to.
    Started { name: String, reasons: Vec<StaleReason> },
    /// A running instance reported its status.
    Status { name: String, line: String },
    /// An instance is done, one way or another.
    Finished { name: String, outcome: Outcome },
}

/// Receives events; called from the coordinator and worker threads.
pub trait Observer: Sync {
    fn event(&self, event: Event);
}

/// The result of one `expect` line.
#[derive(Clone, Debug, Serialize)]
pub struct ExpectResult {
    pub instance: String,
    pub metric: String,
    pub op: String,
    pub threshold: f64,
    /// The measured value; `None` when the stage did not report the metric.
    pub value: Option<f64>,
    pub passed: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct InstanceReport {
    pub name: String,
    pub stage: String,
    pub key: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub metrics: BTreeMap<String, f64>,
}

/// Everything a run did, in dependency order; serialised as the run record.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub pipeline: String,
    pub started: u64,
    pub seconds: f64,
    pub instances: Vec<InstanceReport>,
    pub expects: Vec<ExpectResult>,
    pub cancelled: bool,
}

impl RunReport {
    /// The report of a run that has not done anything yet: what its record says while it runs.
    pub fn starting(pipeline: &str, started: u64) -> RunReport {
        RunReport {
            pipeline: pipeline.to_string(),
            started,
            seconds: 0.0,
            instances: Vec::new(),
            expects: Vec::new(),
            cancelled: false,
        }
    }

    pub fn failed(&self) -> bool {
        self.instances.iter().any(|i| matches!(i.outcome, Outcome::Failed { .. } | Outcome::Skipped { .. }))
    }

    pub fn expects_failed(&self) -> bool {
        self.expects.iter().any(|e| !e.passed)
    }
}

/// A worker's result.
struct Done {
    node: NodeIndex,
    result: Result<Attempted, StageError>,
}

/// A successful attempt: the committed entry, and how long the stage ran (`None` when another
/// process committed the key while this one waited for its lock).
struct Attempted {
    entry: Entry,
    record: KeyRecord,
    seconds: Option<f64>,
}

/// An instance whose key is known and whose output is not in the store.
struct Prepared {
    record: KeyRecord,
    /// Why the stored output was rejected, when it was found corrupt.
    corrupt: Option<String>,
}

/// Runs every instance of `dag` that is not up to date.
#[allow(clippy::too_many_arguments)]
pub fn run(
    dag: &Dag,
    store: &Store,
    stats: &StatCache,
    pipeline_dir: &Path,
    runtime: &dyn Runtime,
    options: &RunOptions,
    observer: &dyn Observer,
    cancel: &AtomicBool,
) -> RunReport {
    let started_at = Instant::now();
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut outputs: BTreeMap<NodeIndex, OutputDigest> = BTreeMap::new();
    let mut outcomes: BTreeMap<NodeIndex, Outcome> = BTreeMap::new();
    let mut entries: BTreeMap<NodeIndex, Entry> = BTreeMap::new();
    let mut keys: BTreeMap<NodeIndex, String> = BTreeMap::new();
    let mut running: BTreeSet<NodeIndex> = BTreeSet::new();
    let mut prepared: BTreeMap<NodeIndex, Prepared> = BTreeMap::new();
    let mut stopped = false;
    let (tx, rx) = mpsc::channel::<Done>();

    std::thread::scope(|scope| loop {
        if cancel.load(Ordering::Relaxed) {
            stopped = true;
        }
        // Start (or settle) everything that is ready.
        let mut progressed = false;
        for &node in &dag.order {
            if outcomes.contains_key(&node) || running.contains(&node) {
                continue;
            }
            let ups: Vec<NodeIndex> = dag.upstream(node).collect();
            if let Some(bad) = ups
                .iter()
                .find(|u| outcomes.get(u).is_some_and(|o| !matches!(o, Outcome::Cached | Outcome::Ran { .. })))
            {
                let because = match &outcomes[bad] {
                    Outcome::Cancelled | Outcome::NotStarted => None,
                    _ => Some(format!("`{}` did not succeed", dag.instance(*bad).name)),
                };
                let outcome = because.map_or(Outcome::NotStarted, |because| Outcome::Skipped { because });
                finish(observer, dag, node, outcome.clone());
                outcomes.insert(node, outcome);
                progressed = true;
                continue;
            }
            if !ups.iter().all(|u| outputs.contains_key(u)) {
                continue;
            }
            if stopped {
                let outcome = if cancel.load(Ordering::Relaxed) { Outcome::Cancelled } else { Outcome::NotStarted };
                outcomes.insert(node, outcome);
                progressed = true;
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = prepared.entry(node) {
                let record = match instance_key(dag, node, &outputs, stats, pipeline_dir, runtime, options.verify) {
                    Ok(r) => r,
                    Err(error) => {
                        fail(observer, dag, node, error, &mut outcomes, &mut stopped, options);
                        progressed = true;
                        continue;
                    }
                };
                let key = record.key.digest();
                keys.insert(node, key.hex());
                match sound_entry(store, key, options.verify, true) {
                    Ok(Some(entry)) => {
                        tracing::debug!(instance = %record.instance, key = %key.short(), "up to date");
                        remember(store, &record, &entry, 0.0);
                        outputs.insert(node, entry.output);
                        entries.insert(node, entry);
                        finish(observer, dag, node, Outcome::Cached);
                        outcomes.insert(node, Outcome::Cached);
                        progressed = true;
                        continue;
                    }
                    Ok(None) => slot.insert(Prepared { record, corrupt: None }),
                    Err(detail) => slot.insert(Prepared { record, corrupt: Some(detail) }),
                };
            }
            let inst = dag.instance(node);
            let Some(runner) = runtime.runner(&inst.kind) else {
                fail(observer, dag, node, not_runnable(&inst.kind), &mut outcomes, &mut stopped, options);
                progressed = true;
                continue;
            };
            if running.len() >= options.jobs.max(1) {
                continue;
            }
            let Prepared { record, corrupt } = prepared.remove(&node).expect("prepared above");
            let why = match corrupt {
                Some(detail) => vec![StaleReason::OutputCorrupt { detail }],
                None => reasons(store, &record),
            };
            tracing::info!(instance = %inst.name, key = %record.key.digest().short(), "running: {}", why.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
            observer.event(Event::Started { name: inst.name.clone(), reasons: why });
            let upstream: BTreeMap<NodeIndex, Entry> = ups.iter().map(|u| (*u, entries[u].clone())).collect();
            let tx = tx.clone();
            running.insert(node);
            progressed = true;
            scope.spawn(move || {
                let result = attempt(dag, node, store, pipeline_dir, runner, record, &upstream, observer, cancel);
                let _ = tx.send(Done { node, result });
            });
        }
        if running.is_empty() && !progressed {
            break;
        }
        if running.is_empty() {
            continue;
        }
        // Wait for a worker; wake up now and then to notice an interruption.
        match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(done) => {
                running.remove(&done.node);
                match done.result {
                    Ok(Attempted { entry, record, seconds }) => {
                        remember(store, &record, &entry, seconds.unwrap_or(0.0));
                        outputs.insert(done.node, entry.output);
                        entries.insert(done.node, entry);
                        let outcome = seconds.map_or(Outcome::Cached, |seconds| Outcome::Ran { seconds });
                        finish(observer, dag, done.node, outcome.clone());
                        outcomes.insert(done.node, outcome);
                    }
                    Err(StageError::Cancelled) => {
                        finish(observer, dag, done.node, Outcome::Cancelled);
                        outcomes.insert(done.node, Outcome::Cancelled);
                        stopped = true;
                    }
                    Err(StageError::Failed(error)) => {
                        fail(observer, dag, done.node, error, &mut outcomes, &mut stopped, options)
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    });

    let mut expects = Vec::new();
    let instances = dag
        .order
        .iter()
        .map(|&node| {
            let inst = dag.instance(node);
            let metrics = entries.get(&node).map(|e| e.manifest.metrics.clone()).unwrap_or_default();
            if entries.contains_key(&node) {
                for e in &inst.expects {
                    let value = metrics.get(&e.metric).copied();
                    expects.push(ExpectResult {
                        instance: inst.name.clone(),
                        metric: e.metric.clone(),
                        op: e.op.as_str().to_string(),
                        threshold: e.threshold,
                        value,
                        passed: value.is_some_and(|v| e.op.holds(v, e.threshold)),
                    });
                }
            }
            InstanceReport {
                name: inst.name.clone(),
                stage: inst.stage.clone(),
                key: keys.get(&node).cloned(),
                outcome: outcomes.get(&node).cloned().unwrap_or(Outcome::NotStarted),
                metrics,
            }
        })
        .collect();
    RunReport {
        pipeline: dag.pipeline.clone(),
        started,
        seconds: started_at.elapsed().as_secs_f64(),
        instances,
        expects,
        cancelled: cancel.load(Ordering::Relaxed),
    }
}

fn finish(observer: &dyn Observer, dag: &Dag, node: NodeIndex, outcome: Outcome) {
    observer.event(Event::Finished { name: dag.instance(node).name.clone(), outcome });
}

fn fail(
    observer: &dyn Observer,
    dag: &Dag,
    node: NodeIndex,
    error: String,
    outcomes: &mut BTreeMap<NodeIndex, Outcome>,
    stopped: &mut bool,
    options: &RunOptions,
) {
    let outcome = Outcome::Failed { error };
    finish(observer, dag, node, outcome.clone());
    outcomes.insert(node, outcome);
    if !options.keep_going {
        *stopped = true;
    }
}

fn remember(store: &Store, record: &KeyRecord, entry: &Entry, seconds: f64) {
    let finished = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let index = IndexEntry { record: record.clone(), stage_key: entry.key, output: entry.output, finished, seconds };
    if let Err(e) = store.remember(&index) {
        tracing::warn!("could not update the index for {}: {e}", record.instance);
    }
}

/// One attempt at an instance, on a worker thread: lock, check again, run, commit.
#[allow(clippy::too_many_arguments)]
fn attempt(
    dag: &Dag,
    node: NodeIndex,
    store: &Store,
    pipeline_dir: &Path,
    runner: &dyn crate::runner::StageRunner,
    record: KeyRecord,
    upstream: &BTreeMap<NodeIndex, Entry>,
    observer: &dyn Observer,
    cancel: &AtomicBool,
) -> Result<Attempted, StageError> {
    let inst = dag.instance(node);
    let key = record.key.digest();
    let io = |what: &str, e: std::io::Error| StageError::Failed(format!("{what}: {e}"));
    let Some(_lock) = store.lock(key, cancel).map_err(|e| io("cannot take the stage's lock", e))? else {
        return Err(StageError::Cancelled);
    };
    // Another process may have computed it while this one waited for the lock.
    if let Ok(Some(entry)) = store.entry(key) {
        return Ok(Attempted { entry, record, seconds: None });
    }
    let attempt = store.attempt(key).map_err(|e| io("cannot create the attempt directory", e))?;
    let inputs = inst
        .inputs
        .iter()
        .map(|(name, edge)| {
            let data = UpstreamData {
                instance: dag.instance(edge.node).name.clone(),
                dir: upstream[&edge.node].out_dir(),
                field: edge.field.clone(),
                kind: edge.kind,
            };
            (name.clone(), data)
        })
        .collect();
    let placeholders = inst.placeholders.iter().map(|(stage, up)| (stage.clone(), upstream[up].out_dir())).collect();
    let name = inst.name.clone();
    let progress = move |line: String| observer.event(Event::Status { name: name.clone(), line });
    let cx = RunContext {
        instance: inst,
        pipeline_dir,
        out_dir: attempt.out_dir(),
        scratch_dir: attempt.scratch_dir(),
        work_dir: store.work_dir(key).map_err(|e| io("cannot create the work directory", e))?,
        cache_dir: store.cache_dir().map_err(|e| io("cannot create the cache directory", e))?,
        log_path: attempt.dir.join("log.txt"),
        inputs,
        placeholders,
        files: absolute_files(inst, pipeline_dir),
        cancel,
        progress: &progress,
    };
    let started = Instant::now();
    let outcome = match runner.run(&cx) {
        Ok(o) => o,
        Err(e) => {
            attempt.discard();
            return Err(e);
        }
    };
    if cancel.load(Ordering::Relaxed) {
        attempt.discard();
        return Err(StageError::Cancelled);
    }
    let seconds = started.elapsed().as_secs_f64();
    let entry = store.commit(attempt, &record, outcome.metrics).map_err(|e| io("cannot commit the output", e))?;
    Ok(Attempted { entry, record, seconds: Some(seconds) })
}
