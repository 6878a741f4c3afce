//! Crash-safe, sharded, verified checkpoints of a whole training state, for bit-exact resumption.
//!
//! # What a checkpoint holds
//!
//! Everything the next step depends on ([`TrainState`]): the model weights, the EMA weights, the
//! AdamW moments and per-variable step counts, the step, the position of every random stream, the
//! validation history (the plateau schedule's input; the other schedules are pure functions of the
//! step), the gradient-spike window, and the caller's JSON metadata. Restored into a freshly built
//! state, training continues exactly as if it had never stopped — the tests check every weight,
//! EMA weight and moment bit for bit.
//!
//! # Layout
//!
//! One directory per step, `<root>/step-0000001200/`, in the safetensors format and its
//! HuggingFace sharding convention, so Python reads it with `safetensors` alone:
//!
//! - `train_state-00001-of-00003.safetensors`, …: the tensors, named `model.<var>`, `ema.<var>`,
//!   `adamw.exp_avg.<var>` and `adamw.exp_avg_sq.<var>`, packed in that order into shards of at
//!   most [`CheckpointConfig::max_shard_bytes`] of tensor data (a larger tensor gets a shard of its
//!   own). The default of 1 GiB keeps every file below the 2 GB limit that broke the seeds'
//!   checkpoints of models above ~1B parameters.
//! - `train_state.safetensors.index.json`: HuggingFace's index (`weight_map` from tensor to shard,
//!   `metadata.total_size`), whose metadata also carries the non-tensor state as JSON.
//! - `manifest.json`, written last: the size and BLAKE3 hash of every other file.
//!
//! # Crash safety and verification
//!
//! Every file is written to a temporary name in the same directory, fsynced and renamed, and the
//! directory is fsynced; the manifest goes last. A directory without a manifest is an interrupted
//! save: [`latest`] skips it and [`TrainState::load`] refuses it. Re-saving a step first removes
//! the old manifest, so the directory is never complete with a mix of old and new files.
//!
//! Loading reads the manifest, then every file it lists, checking presence, size and hash, and
//! checks the tensors' names, shapes and dtypes against the state being restored — all before
//! changing anything. A truncated, corrupt or missing file (one batch of the seeds' runs met
//! ~1,768 checkpoint failures from file-system errors) is reported with its path and never loaded. The shards are
//! then read a second time to fill the state, one at a time so that host memory holds one shard,
//! not the whole checkpoint, and each is hashed again before its tensors are used.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use candle_core::safetensors::SliceSafetensors;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::ema::Ema;
use super::guard::{Guard, GuardState};
use super::optim::{AdamW, AdamWConfig, Moments};
use super::params::Params;
use super::rng::{Streams, StreamsState};
use super::schedule::ValHistory;

/// Default limit on the tensor bytes of one shard: 1 GiB, half the 2 GB file size at which the
/// seeds' checkpoints failed.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 1 << 30;
/// The file written last, listing every other file with its size and hash.
pub const MANIFEST: &str = "manifest.json";
/// HuggingFace-style index of the shards.
pub const INDEX: &str = "train_state.safetensors.index.json";
/// Stem of the shard file names.
const SHARD_STEM: &str = "train_state";
/// Prefix of a step directory's name; the step follows, zero-padded to [`STEP_DIGITS`].
const STEP_PREFIX: &str = "step-";
const STEP_DIGITS: usize = 10;
/// Recorded in the manifest and the index; a checkpoint of another format is refused.
const FORMAT: &str = "medgen-train-state";
const FORMAT_VERSION: u32 = 1;
/// Read size when hashing a file.
const HASH_BUFFER_BYTES: usize = 1 << 20;

/// Tensor name prefixes, one per kind of tensor.
const MODEL: &str = "model.";
const EMA: &str = "ema.";
const EXP_AVG: &str = "adamw.exp_avg.";
const EXP_AVG_SQ: &str = "adamw.exp_avg_sq.";

/// How checkpoints are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// Most tensor bytes in one shard.
    pub max_shard_bytes: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { max_shard_bytes: DEFAULT_MAX_SHARD_BYTES }
    }
}

/// Everything a training run needs to continue exactly where it stopped.
pub struct TrainState {
    /// Updates applied so far; the next step has this (0-based) number.
    pub step: u64,
    pub model: Params,
    pub optimizer: AdamW,
    pub ema: Option<Ema>,
    pub streams: Streams,
    pub val_history: ValHistory,
    pub guard: Guard,
    /// Free-form JSON saved with the checkpoint (run name, configuration digest, metrics). Floats
    /// in it come back through serde_json's parser, which may be an ulp off (see `json_f64.rs`).
    pub metadata: serde_json::Value,
}

/// A checkpoint that cannot be written or read: the file (or directory) and what is wrong.
#[derive(Debug)]
pub struct CheckpointError {
    pub path: PathBuf,
    pub kind: CheckpointErrorKind,
}

/// What is wrong with a checkpoint. `Display` gives the problem; [`CheckpointError`]'s prefixes
/// the path.
#[derive(Debug)]
pub enum CheckpointErrorKind {
    /// Reading, writing, syncing or renaming failed.
    Io(io::Error),
    /// Converting tensors to or from safetensors failed.
    Tensor(Box<candle_core::Error>),
    /// The directory has no manifest: its save never finished.
    Incomplete,
    /// The manifest or the index is not what this version writes.
    BadMetadata(String),
    /// A file the manifest lists is absent.
    MissingFile,
    /// A file is shorter or longer than the manifest records.
    WrongSize { expected: u64, found: u64 },
    /// A file's content does not hash to what the manifest records.
    HashMismatch { expected: String, found: String },
    /// A shard is not a readable safetensors file although its hash matches.
    BadShard(Box<candle_core::Error>),
    /// The state being restored has a tensor the checkpoint lacks.
    MissingTensor { name: String },
    /// The checkpoint has a tensor the state being restored lacks.
    UnexpectedTensor { name: String },
    /// A tensor differs in shape or dtype from the one it would replace.
    TensorMismatch { name: String, expected: (Vec<usize>, DType), found: (Vec<usize>, DType) },
    /// The optimiser's step counts do not name exactly the optimised variables.
    StepCountsMismatch,
    /// The run's streams have another seed than the checkpoint's.
    SeedMismatch { checkpoint: u64, run: u64 },
    /// A file changed between verification and loading; the state is partly restored.
    ChangedDuringLoad(Box<CheckpointErrorKind>),
}

impl fmt::Display for CheckpointErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CheckpointErrorKind::*;
        match self {
            Io(err) => write!(f, "I/O error: {err}"),
            Tensor(err) => write!(f, "tensor conversion failed: {err}"),
            Incomplete => write!(f, "incomplete checkpoint: no {MANIFEST}, the save did not finish; not loaded"),
            BadMetadata(reason) => write!(f, "not a {FORMAT} v{FORMAT_VERSION} checkpoint: {reason}; not loaded"),
            MissingFile => write!(f, "missing: the manifest lists it but it does not exist; checkpoint not loaded"),
            WrongSize { expected, found } => write!(
                f,
                "{} file: {found} bytes where the manifest records {expected}; checkpoint not loaded",
                if found < expected { "truncated" } else { "oversized" }
            ),
            HashMismatch { expected, found } => {
                write!(f, "corrupt: BLAKE3 {found} where the manifest records {expected}; checkpoint not loaded")
            }
            BadShard(err) => write!(f, "not a readable safetensors file: {err}; checkpoint not loaded"),
            MissingTensor { name } => write!(f, "no tensor {name}, which the state being restored needs"),
            UnexpectedTensor { name } => write!(f, "tensor {name} has no place in the state being restored"),
            TensorMismatch { name, expected, found } => write!(
                f,
                "tensor {name} has shape {:?} and dtype {:?}, the state being restored expects {:?} and {:?}",
                found.0, found.1, expected.0, expected.1
            ),
            StepCountsMismatch => write!(f, "AdamW step counts do not name exactly the optimised variables"),
            SeedMismatch { checkpoint, run } => {
                write!(f, "checkpoint was trained with seed {checkpoint}, this run has seed {run}")
            }
            ChangedDuringLoad(cause) => write!(
                f,
                "changed while being loaded ({cause}); the training state is partly restored and must be discarded"
            ),
        }
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            CheckpointErrorKind::Io(err) => Some(err),
            CheckpointErrorKind::Tensor(err) | CheckpointErrorKind::BadShard(err) => Some(err.as_ref()),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, CheckpointError>;

fn error(path: &Path, kind: CheckpointErrorKind) -> CheckpointError {
    CheckpointError { path: path.to_path_buf(), kind }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError + '_ {
    move |err| error(path, CheckpointErrorKind::Io(err))
}

fn tensor_error(path: &Path) -> impl FnOnce(candle_core::Error) -> CheckpointError + '_ {
    move |err| error(path, CheckpointErrorKind::Tensor(Box::new(err)))
}

fn shard_error(path: &Path) -> impl FnOnce(candle_core::Error) -> CheckpointError + '_ {
    move |err| error(path, CheckpointErrorKind::BadShard(Box::new(err)))
}

/// The non-tensor state, stored in the index's metadata.
#[derive(Serialize, Deserialize)]
struct StateRecord {
    step: u64,
    optimizer: OptimizerRecord,
    /// The EMA's decay, if the run keeps one.
    ema_decay: Option<f64>,
    streams: StreamsState,
    val_history: ValHistory,
    guard: GuardState,
    metadata: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct OptimizerRecord {
    config: AdamWConfig,
    /// Updates applied to each variable.
    steps: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
struct Index {
    metadata: IndexMetadata,
    weight_map: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct IndexMetadata {
    /// Bytes of tensor data in all shards (HuggingFace's field).
    total_size: u64,
    format: String,
    version: u32,
    train_state: StateRecord,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    step: u64,
    files: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    name: String,
    bytes: u64,
    blake3: String,
}

/// The directory of the checkpoint of `step` under `root`.
pub fn step_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("{STEP_PREFIX}{step:0STEP_DIGITS$}"))
}

/// The complete checkpoint (one with a manifest) of the highest step under `root`, if any.
/// Interrupted saves are skipped; whether the newest is intact is for [`TrainState::load`] to
/// find out, which reports rather than loads a damaged one.
pub fn latest(root: &Path) -> Result<Option<PathBuf>> {
    if !root.exists() {
        return Ok(None);
    }
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in fs::read_dir(root).map_err(io_error(root))? {
        let path = entry.map_err(io_error(root))?.path();
        let step = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix(STEP_PREFIX));
        let Some(step) = step.and_then(|s| s.parse::<u64>().ok()) else { continue };
        if path.join(MANIFEST).is_file() && best.as_ref().is_none_or(|(b, _)| step > *b) {
            best = Some((step, path));
        }
    }
    Ok(best.map(|(_, path)| path))
}

impl TrainState {
    /// Writes the checkpoint of the current step under `root` (see the module docs) and returns
    /// its directory. A checkpoint of the same step is replaced.
    pub fn save(&self, root: &Path, config: &CheckpointConfig) -> Result<PathBuf> {
        let dir = step_dir(root, self.step);
        fresh_dir(root, &dir)?;
        let tensors = self.named_tensors();
        let shards = plan_shards(&tensors, config.max_shard_bytes);
        let mut files = Vec::with_capacity(shards.len() + 1);
        let mut weight_map = BTreeMap::new();
        for (i, shard) in shards.iter().enumerate() {
            let name = format!("{SHARD_STEM}-{:05}-of-{:05}.safetensors", i + 1, shards.len());
            let members: HashMap<String, Tensor> = shard.iter().map(|&t| tensors[t].clone()).collect();
            weight_map.extend(members.keys().map(|tensor| (tensor.clone(), name.clone())));
            files.push(write_shard(&dir, &name, &members)?);
        }
        let index = Index {
            metadata: IndexMetadata {
                total_size: tensors.iter().map(|(_, t)| tensor_bytes(t)).sum(),
                format: FORMAT.to_string(),
                version: FORMAT_VERSION,
                train_state: self.record(),
            },
            weight_map,
        };
        files.push(write_json(&dir, INDEX, &index)?);
        let manifest = Manifest { format: FORMAT.to_string(), version: FORMAT_VERSION, step: self.step, files };
        write_json(&dir, MANIFEST, &manifest)?;
        sync_dir(&dir)?;
        sync_dir(root)?;
        Ok(dir)
    }

    /// Restores this state from the checkpoint in `dir` (a step directory, e.g. from [`latest`]).
    /// The state must have been built like the one saved: the same variables with the same shapes
    /// and dtypes, an EMA if and only if the checkpoint has one, the same seed. Every file is
    /// verified and every tensor checked before anything changes; on an error other than
    /// [`CheckpointErrorKind::ChangedDuringLoad`] the state is untouched.
    pub fn load(&mut self, dir: &Path) -> Result<()> {
        let manifest = read_manifest(dir)?;
        let (index, found) = verify_files(dir, &manifest)?;
        let record = index.metadata.train_state;
        if record.step != manifest.step {
            let reason = format!("index step {} differs from manifest step {}", record.step, manifest.step);
            return Err(error(&dir.join(INDEX), CheckpointErrorKind::BadMetadata(reason)));
        }
        self.check_compatible(dir, &record, &found)?;
        for entry in manifest.files.iter().filter(|e| e.name != INDEX) {
            let bytes = read_verified(dir, entry)
                .map_err(|e| error(&e.path, CheckpointErrorKind::ChangedDuringLoad(Box::new(e.kind))))?;
            self.restore_tensors(&dir.join(&entry.name), &bytes)?;
        }
        self.restore_record(dir, record)
    }

    /// Every tensor of the state under its checkpoint name, in shard order: model, EMA, moments.
    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let model = self.model.iter().map(|(name, var)| (format!("{MODEL}{name}"), var.as_tensor().detach()));
        let ema = self.ema.iter().flat_map(|ema| ema.weights()).map(|(name, w)| (format!("{EMA}{name}"), w.clone()));
        let moments = self.optimizer.moments();
        let exp_avg = moments.map(|(name, m)| (format!("{EXP_AVG}{name}"), m.exp_avg.clone()));
        let exp_avg_sq =
            self.optimizer.moments().map(|(name, m)| (format!("{EXP_AVG_SQ}{name}"), m.exp_avg_sq.clone()));
        model.chain(ema).chain(exp_avg).chain(exp_avg_sq).collect()
    }

    fn record(&self) -> StateRecord {
        StateRecord {
            step: self.step,
            optimizer: OptimizerRecord {
                config: *self.optimizer.config(),
                steps: self.optimizer.moments().map(|(name, m)| (name.to_string(), m.step)).collect(),
            },
            ema_decay: self.ema.as_ref().map(Ema::decay),
            streams: self.streams.state(),
            val_history: self.val_history.clone(),
            guard: self.guard.state(),
            metadata: self.metadata.clone(),
        }
    }

    /// Checks, without changing anything, that the checkpoint's tensors (`found`: name → shape and
    /// dtype) and record fit this state exactly.
    fn check_compatible(&self, dir: &Path, record: &StateRecord, found: &BTreeMap<String, Spec>) -> Result<()> {
        let expected: BTreeMap<String, Spec> =
            self.named_tensors().into_iter().map(|(name, t)| (name, (t.dims().to_vec(), t.dtype()))).collect();
        let index = dir.join(INDEX);
        if let Some(name) = expected.keys().find(|n| !found.contains_key(*n)) {
            return Err(error(&index, CheckpointErrorKind::MissingTensor { name: name.clone() }));
        }
        for (name, spec) in found {
            let Some(want) = expected.get(name) else {
                return Err(error(&index, CheckpointErrorKind::UnexpectedTensor { name: name.clone() }));
            };
            if want != spec {
                let kind = CheckpointErrorKind::TensorMismatch {
                    name: name.clone(),
                    expected: want.clone(),
                    found: spec.clone(),
                };
                return Err(error(&index, kind));
            }
        }
        if !record.optimizer.steps.keys().map(String::as_str).eq(self.optimizer.moments().map(|(name, _)| name)) {
            return Err(error(&index, CheckpointErrorKind::StepCountsMismatch));
        }
        if record.streams.seed != self.streams.seed() {
            let kind = CheckpointErrorKind::SeedMismatch { checkpoint: record.streams.seed, run: self.streams.seed() };
            return Err(error(&index, kind));
        }
        Ok(())
    }

    /// Puts the tensors of one verified shard in their places.
    fn restore_tensors(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        let shard = SliceSafetensors::new(bytes).map_err(shard_error(path))?;
        for (name, _) in shard.tensors() {
            let (kind, var_name) = split_name(&name).expect("names were checked against the state");
            let var = self.model.get(var_name);
            let device = var.map_or(Device::Cpu, |var| var.device().clone());
            let tensor = shard.load(&name, &device).map_err(tensor_error(path))?;
            match kind {
                MODEL => var.expect("names were checked against the state").set(&tensor),
                EMA => self.ema.as_mut().expect("names were checked against the state").set_weight(var_name, &tensor),
                _ => self.restore_moment(kind, var_name, tensor),
            }
            .map_err(tensor_error(path))?;
        }
        Ok(())
    }

    fn restore_moment(&mut self, kind: &str, name: &str, tensor: Tensor) -> candle_core::Result<()> {
        let (_, current) = self.optimizer.moments().find(|(n, _)| *n == name).expect("names were checked");
        let mut moments = current.clone();
        if kind == EXP_AVG {
            moments.exp_avg = tensor;
        } else {
            moments.exp_avg_sq = tensor;
        }
        self.optimizer.set_moments(name, moments)
    }

    /// Restores the non-tensor state; its compatibility was checked before any tensor moved.
    fn restore_record(&mut self, dir: &Path, record: StateRecord) -> Result<()> {
        for (name, &step) in &record.optimizer.steps {
            let (_, current) = self.optimizer.moments().find(|(n, _)| n == name).expect("step counts were checked");
            let moments = Moments { step, ..current.clone() };
            self.optimizer.set_moments(name, moments).map_err(tensor_error(&dir.join(INDEX)))?;
        }
        self.step = record.step;
        self.streams = Streams::from_state(&record.streams);
        self.val_history = record.val_history;
        self.guard = Guard::from_state(*self.guard.config(), &record.guard);
        self.metadata = record.metadata;
        Ok(())
    }
}

/// A tensor's shape and dtype.
type Spec = (Vec<usize>, DType);

/// `(prefix, variable name)` of a checkpoint tensor name.
fn split_name(name: &str) -> Option<(&'static str, &str)> {
    [MODEL, EMA, EXP_AVG_SQ, EXP_AVG]
        .into_iter()
        .find_map(|prefix| name.strip_prefix(prefix).map(|rest| (prefix, rest)))
}

fn tensor_bytes(tensor: &Tensor) -> u64 {
    (tensor.elem_count() * tensor.dtype().size_in_bytes()) as u64
}

/// Indices into `tensors`, grouped greedily in order into shards of at most `max_bytes` of tensor
/// data; a tensor larger than `max_bytes` gets a shard of its own. At least one shard.
fn plan_shards(tensors: &[(String, Tensor)], max_bytes: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut filled = 0u64;
    for (i, (_, tensor)) in tensors.iter().enumerate() {
        let bytes = tensor_bytes(tensor);
        let current = shards.last_mut().expect("there is always a shard");
        if !current.is_empty() && filled + bytes > max_bytes {
            shards.push(vec![i]);
            filled = bytes;
        } else {
            current.push(i);
            filled += bytes;
        }
    }
    shards
}

/// Makes `dir` an empty directory under `root`. An existing checkpoint there loses its manifest
/// first (synced), so that it never looks complete while being replaced.
fn fresh_dir(root: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(root).map_err(io_error(root))?;
    if dir.exists() {
        let manifest = dir.join(MANIFEST);
        if manifest.exists() {
            fs::remove_file(&manifest).map_err(io_error(&manifest))?;
            sync_dir(dir)?;
        }
        fs::remove_dir_all(dir).map_err(io_error(dir))?;
    }
    fs::create_dir(dir).map_err(io_error(dir))
}

/// Writes one shard through a synced temporary and returns its manifest entry.
fn write_shard(dir: &Path, name: &str, tensors: &HashMap<String, Tensor>) -> Result<FileEntry> {
    let path = dir.join(name);
    let tmp = temp_path(&path);
    let written = candle_core::safetensors::save(tensors, &tmp)
        .map_err(tensor_error(&path))
        .and_then(|()| readable_like_dir(&tmp, dir).map_err(io_error(&path)))
        .and_then(|()| File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_error(&path)))
        .and_then(|()| hash_file(&tmp).map_err(io_error(&path)))
        .and_then(|(bytes, hash)| {
            fs::rename(&tmp, &path).map_err(io_error(&path))?;
            Ok(FileEntry { name: name.to_string(), bytes, blake3: hash })
        });
    if written.is_err() {
        // Best effort: the temporary may not exist, and the error to report is the first one.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Gives `file` its directory's permissions without the execute bits. The safetensors writer
/// creates its files through a private temporary (mode 0600), which would hide the checkpoint from
/// the other users of a shared cluster account's group; the directory was made under the umask.
fn readable_like_dir(file: &Path, dir: &Path) -> io::Result<()> {
    let mode = fs::metadata(dir)?.permissions().mode() & 0o666;
    fs::set_permissions(file, fs::Permissions::from_mode(mode))
}

/// Writes `value` as JSON to `dir/name` through a synced temporary and returns its manifest entry.
fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<FileEntry> {
    let path = dir.join(name);
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| error(&path, CheckpointErrorKind::Io(e.into())))?;
    let tmp = temp_path(&path);
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(io_error(&path));
    if written.is_err() {
        // Best effort, as in `write_shard`.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    Ok(FileEntry {
        name: name.to_string(),
        bytes: bytes.len() as u64,
        blake3: blake3::hash(&bytes).to_hex().to_string(),
    })
}

/// A name beside `path` for its temporary; it never matches a checkpoint file name.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Size and BLAKE3 hash (hex) of a file, read in blocks.
fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok((total, hasher.finalize().to_hex().to_string()));
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
}

/// Makes a directory's entries (renames, creations) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound && dir.is_dir() => {
            return Err(error(dir, CheckpointErrorKind::Incomplete))
        }
        other => other.map_err(io_error(&path))?,
    };
    let manifest: Manifest = parse_json(&path, &bytes)?;
    check_format(&path, &manifest.format, manifest.version)?;
    Ok(manifest)
}

fn parse_json<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| error(path, CheckpointErrorKind::BadMetadata(e.to_string())))
}

fn check_format(path: &Path, format: &str, version: u32) -> Result<()> {
    if format != FORMAT || version != FORMAT_VERSION {
        let reason = format!("format {format:?} version {version}");
        return Err(error(path, CheckpointErrorKind::BadMetadata(reason)));
    }
    Ok(())
}

/// The content of a manifest entry's file, after checking its presence, size and hash.
fn read_verified(dir: &Path, entry: &FileEntry) -> Result<Vec<u8>> {
    let path = dir.join(&entry.name);
    let bytes = match fs::read(&path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(error(&path, CheckpointErrorKind::MissingFile))
        }
        other => other.map_err(io_error(&path))?,
    };
    if bytes.len() as u64 != entry.bytes {
        return Err(error(&path, CheckpointErrorKind::WrongSize { expected: entry.bytes, found: bytes.len() as u64 }));
    }
    let hash = blake3::hash(&bytes).to_hex().to_string();
    if hash != entry.blake3 {
        return Err(error(&path, CheckpointErrorKind::HashMismatch { expected: entry.blake3.clone(), found: hash }));
    }
    Ok(bytes)
}

/// Verifies every file of the manifest (presence, size, hash; shards parse as safetensors), and
/// returns the index and the shape and dtype of every tensor, checking that the index maps each
/// tensor to the shard that holds it.
fn verify_files(dir: &Path, manifest: &Manifest) -> Result<(Index, BTreeMap<String, Spec>)> {
    let mut index = None;
    let mut found = BTreeMap::new();
    let mut holder = BTreeMap::new();
    for entry in &manifest.files {
        let bytes = read_verified(dir, entry)?;
        let path = dir.join(&entry.name);
        if entry.name == INDEX {
            let parsed: Index = parse_json(&path, &bytes)?;
            check_format(&path, &parsed.metadata.format, parsed.metadata.version)?;
            index = Some(parsed);
            continue;
        }
        let shard = SliceSafetensors::new(&bytes).map_err(shard_error(&path))?;
        for (name, view) in shard.tensors() {
            let dtype = DType::try_from(view.dtype()).map_err(shard_error(&path))?;
            found.insert(name.clone(), (view.shape().to_vec(), dtype));
            holder.insert(name, entry.name.clone());
        }
    }
    let index_path = dir.join(INDEX);
    let index = index.ok_or_else(|| {
        error(&dir.join(MANIFEST), CheckpointErrorKind::BadMetadata(format!("the manifest does not list {INDEX}")))
    })?;
    if index.weight_map != holder {
        let reason = "the weight map does not match the tensors the shards hold".to_string();
        return Err(error(&index_path, CheckpointErrorKind::BadMetadata(reason)));
    }
    Ok((index, found))
}
