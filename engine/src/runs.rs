//! Run records: the store's `runs/` holds one JSON file per `medgen run`, written when the run
//! starts and rewritten when it ends. They are how a store knows which pipelines use it:
//! `medgen show` without `--pipeline` reads the newest to know which pipeline (and overrides)
//! to describe, and `medgen gc` reads them all to know whose outputs to keep. Written at the
//! start, a record also names the pipeline of a run that is still going or was killed, so its
//! outputs are never taken for nobody's.
//!
//! A record names its pipeline file twice: as it was (absolute), and relative to the store's
//! parent directory when the file is inside it (the usual `.medgen/` beside the pipeline). A
//! project moved or copied together with its store then finds its own pipeline, not the file it
//! was copied from.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::StageKey;
use crate::schedule::RunReport;
use crate::store::Store;

/// What `runs/` keeps of a run.
#[derive(Serialize)]
pub struct RunRecord<'a> {
    /// The pipeline file, absolute.
    pub file: &'a Path,
    /// The pipeline file relative to the store's parent directory, when it is inside it.
    pub relative_file: Option<PathBuf>,
    pub overrides: &'a [String],
    /// False while the run is going (and forever, for a run that was killed).
    pub finished: bool,
    #[serde(flatten)]
    pub report: &'a RunReport,
}

impl<'a> RunRecord<'a> {
    pub fn new(store: &Store, file: &'a Path, overrides: &'a [String], report: &'a RunReport) -> RunRecord<'a> {
        let relative_file = store.root().parent().and_then(|base| file.strip_prefix(base).ok()).map(Path::to_path_buf);
        RunRecord { file, relative_file, overrides, finished: false, report }
    }
}

/// A run record as read back: only what `show` and `gc` need.
#[derive(Clone, Debug, Deserialize)]
pub struct RecordedRun {
    file: PathBuf,
    #[serde(default)]
    relative_file: Option<PathBuf>,
    #[serde(default)]
    pub overrides: Vec<String>,
    /// The pipeline's name (`pipeline NAME`), as the store's `key.json` files name it.
    #[serde(default)]
    pub pipeline: String,
    #[serde(default)]
    instances: Vec<RecordedInstance>,
}

#[derive(Clone, Debug, Deserialize)]
struct RecordedInstance {
    #[serde(default)]
    key: Option<StageKey>,
}

impl RecordedRun {
    /// The pipeline file: the one beside the store, when the record says it was there and it
    /// still is; otherwise the one the run was given.
    pub fn pipeline_file(&self, store: &Store) -> PathBuf {
        let near = self
            .relative_file
            .as_deref()
            .filter(|rel| rel.components().all(|c| matches!(c, Component::Normal(_))))
            .and_then(|rel| Some(store.root().parent()?.join(rel)));
        near.filter(|f| f.is_file()).unwrap_or_else(|| self.file.clone())
    }

    /// The keys of the instances the run got as far as keying.
    pub fn keys(&self) -> BTreeSet<StageKey> {
        self.instances.iter().filter_map(|i| i.key).collect()
    }
}

/// The store's run records, oldest first: each path with its record, or why it cannot be read.
pub fn all(store: &Store) -> Vec<(PathBuf, Result<RecordedRun, String>)> {
    store.runs().into_iter().map(|path| (path.clone(), read(&path))).collect()
}

/// The newest run record, if there is one.
pub fn latest(store: &Store) -> Option<(PathBuf, Result<RecordedRun, String>)> {
    let path = store.runs().pop()?;
    let record = read(&path);
    Some((path, record))
}

fn read(path: &Path) -> Result<RecordedRun, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}
