//! How stages run. The engine knows nothing of models: each stage kind has a [`StageRunner`]
//! (registered by medgen-stdlib through a [`Runtime`]) that turns a [`RunContext`] — resolved
//! parameters, upstream outputs, input files, an output directory — into output files and
//! metrics. The engine does the rest: keys, locks, attempts, commits, records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use medgen_lang::signature::DataKind;

use crate::dag::Instance;

/// Runs instances of one stage kind.
pub trait StageRunner: Send + Sync {
    /// Bumped whenever a change to the implementation changes what it computes; part of
    /// every cache key of the kind.
    fn version(&self) -> u32;

    fn run(&self, cx: &RunContext<'_>) -> Result<Outcome, StageError>;
}

/// The runners of every stage kind that can run.
pub trait Runtime: Send + Sync {
    fn runner(&self, kind: &str) -> Option<&dyn StageRunner>;
}

/// An upstream output as a stage reads it.
#[derive(Clone, Debug)]
pub struct UpstreamData {
    /// The upstream instance's name.
    pub instance: String,
    /// Its committed files (read only).
    pub dir: PathBuf,
    /// The part selected, e.g. the split `test` of `brain.test`.
    pub field: Option<String>,
    /// What the selected part is (the checker typed it).
    pub kind: DataKind,
}

/// Everything one attempt at an instance gets.
pub struct RunContext<'a> {
    pub instance: &'a Instance,
    /// The directory of the pipeline file: relative paths in parameters start here.
    pub pipeline_dir: &'a Path,
    /// Where outputs go; everything in it becomes the committed output.
    pub out_dir: PathBuf,
    /// An empty directory for the stage's process to work in; discarded after the attempt.
    pub scratch_dir: PathBuf,
    /// Survives crashes and kills (per key): checkpoints go here, and a rerun resumes.
    pub work_dir: PathBuf,
    /// Store-wide, content-addressed caches shared by every stage and pipeline of the store (e.g.
    /// the features of a reference dataset). Stages key entries by the digest of what determines
    /// them, write them atomically and check them on reading; `medgen gc` leaves this alone.
    pub cache_dir: PathBuf,
    /// The stage's log (its processes' stdout and stderr go here); kept with the output.
    pub log_path: PathBuf,
    /// Typed inputs by input name.
    pub inputs: BTreeMap<String, UpstreamData>,
    /// Output directories of stages named in `{STAGE.OUTPUT}` placeholders, by stage name.
    pub placeholders: BTreeMap<String, PathBuf>,
    /// Path parameters, by dotted position (`inputs.raw`), made absolute.
    pub files: BTreeMap<String, PathBuf>,
    /// Set when the user interrupts: stop soon, return [`StageError::Cancelled`].
    pub cancel: &'a AtomicBool,
    /// Reports a one-line status (`epoch 3/20  loss 0.0412`) to the progress display.
    pub progress: &'a (dyn Fn(String) + Sync),
}

/// What a successful attempt measured (its files are in `out_dir`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StageError {
    /// The stage failed; the message says why (for a command, its exit status and stderr tail).
    Failed(String),
    /// The attempt stopped because the user interrupted.
    Cancelled,
}
