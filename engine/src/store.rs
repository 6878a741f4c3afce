//! The store: `.medgen/` beside the pipeline (or `--store` / `MEDGEN_STORE`).
//!
//! ```text
//! objects/<key>/      one committed stage instance: out/ (its files), manifest.json,
//!                     manifest.blake3 (the manifest's digest), key.json (what made the key),
//!                     log.txt (the stage's output)
//! tmp/<key>.<pid>.<n> an attempt in progress; never read by anyone but its owner
//! work/<key>/         a stage's checkpoints, kept across crashes so a rerun resumes
//! locks/<key>.lock    per-key locks, removed on release (see `lock.rs`)
//! index/<pipeline>/   per instance name, the key and output of its last success
//! runs/               one record per `medgen run` (see `runs.rs`)
//! statcache.json      input-file hashes by stat, to skip re-reading unchanged data
//! ```
//!
//! Crash safety comes from one rule: an attempt writes only inside its own `tmp/` directory,
//! and the directory is renamed to `objects/<key>` — one atomic step — only after the stage
//! succeeded and every file and the manifest were flushed to disk. A failed, killed or
//! cancelled attempt leaves at most a `tmp/` directory, which nothing trusts and `medgen gc`
//! removes.
//!
//! Nothing in an entry is trusted because it is there. Before each use an entry is checked
//! cheaply: its manifest parses, its digest is the one recorded beside it when it was written
//! (so an edited metric, which no file hash covers, is caught — and the manifest's digest is
//! what downstream keys depend on), and every file has its recorded size. `--verify` also
//! re-hashes every file, refuses files the manifest does not list, and checks that `key.json`
//! describes the entry's key. A corrupt entry is moved to `corrupt/` and recomputed.
//!
//! Files of one entry with identical content (a training stage's best weights that are also its
//! last) are stored once: hard links to one file, made in the attempt before it is committed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::digest::{FileDigest, OutputDigest, StageKey};
use crate::hash::hash_file;
use crate::key::CacheKey;
use crate::lock::{self, KeyLock};

/// An entry's manifest: each file's digest and size, and the metrics.
const MANIFEST: &str = "manifest.json";

/// The manifest's digest, recorded when the entry was written.
const MANIFEST_DIGEST: &str = "manifest.blake3";

/// What made an entry's key.
const KEY_RECORD: &str = "key.json";

/// Writes `bytes` to `path` through a temporary file and a rename, flushed to disk.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), next_id()));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One output file as the manifest records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub digest: FileDigest,
    pub size: u64,
}

/// What a committed instance holds: its files (relative to `out/`) and measured metrics.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub files: BTreeMap<String, FileEntry>,
    pub metrics: BTreeMap<String, f64>,
}

impl Manifest {
    /// The output digest: what downstream keys depend on.
    pub fn digest(&self) -> OutputDigest {
        OutputDigest::from_hash(blake3::hash(&serde_json::to_vec(self).expect("a manifest serialises")))
    }

    /// Hashes every file under `out` into a manifest.
    pub fn of_dir(out: &Path, metrics: BTreeMap<String, f64>) -> io::Result<Manifest> {
        let mut rels = Vec::new();
        collect(out, out, &mut rels)?;
        let mut files = BTreeMap::new();
        for rel in rels {
            let path = out.join(&rel);
            let size = fs::metadata(&path)?.len();
            files.insert(rel, FileEntry { digest: hash_file(&path)?, size });
        }
        Ok(Manifest { files, metrics })
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// The key and what it was made from, stored beside an output and in the index.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRecord {
    pub pipeline: String,
    pub instance: String,
    pub key: CacheKey,
    /// Dotted parameter position → the path it had (relative to the pipeline file).
    pub file_paths: BTreeMap<String, String>,
    /// Upstream input name → the upstream instance's name.
    pub upstream_instances: BTreeMap<String, String>,
}

/// A committed instance.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: StageKey,
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub output: OutputDigest,
}

impl Entry {
    /// Where its files are.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }
}

/// The last success of an instance, by name: what `plan` compares against to say why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexEntry {
    pub record: KeyRecord,
    pub stage_key: StageKey,
    pub output: OutputDigest,
    /// Seconds since the epoch when it finished.
    pub finished: u64,
    /// How long the stage ran, in seconds (0 for an instance that was already cached).
    pub seconds: f64,
}

/// An attempt's private directory.
pub struct Attempt {
    pub dir: PathBuf,
}

impl Attempt {
    /// Where the stage writes its outputs.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// A fresh, empty working directory for the stage's process.
    pub fn scratch_dir(&self) -> PathBuf {
        self.dir.join("scratch")
    }

    /// Removes the attempt (after a failure or cancellation).
    pub fn discard(self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating as needed) the store at `root`.
    pub fn open(root: &Path) -> io::Result<Store> {
        for sub in ["objects", "tmp", "work", "locks", "index", "runs", "corrupt"] {
            fs::create_dir_all(root.join(sub))?;
        }
        // Absolute, because stages run in their own working directories.
        Ok(Store { root: root.canonicalize()? })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stat_cache_path(&self) -> PathBuf {
        self.root.join("statcache.json")
    }

    fn object_dir(&self, key: StageKey) -> PathBuf {
        self.root.join("objects").join(key.hex())
    }

    /// The persistent work directory of a key (checkpoints for resuming).
    pub fn work_dir(&self, key: StageKey) -> io::Result<PathBuf> {
        let dir = self.root.join("work").join(key.hex());
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// The directory of the store-wide caches (see `RunContext::cache_dir`).
    pub fn cache_dir(&self) -> io::Result<PathBuf> {
        let dir = self.root.join("cache");
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// The committed entry of `key`, if there is one and it passes the cheap check: its
    /// manifest parses and has the digest recorded when it was written, and every file exists
    /// with its recorded size.
    pub fn entry(&self, key: StageKey) -> Result<Option<Entry>, String> {
        let dir = self.object_dir(key);
        let bytes = match fs::read(dir.join(MANIFEST)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read its manifest: {e}")),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| format!("unreadable manifest: {e}"))?;
        let output = manifest.digest();
        let recorded = match fs::read_to_string(dir.join(MANIFEST_DIGEST)) {
            Ok(text) => OutputDigest::parse(text.trim()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!(
                    "{MANIFEST_DIGEST}, the digest of its manifest, is missing (written by an older medgen, or removed)"
                ))
            }
            Err(e) => return Err(format!("cannot read {MANIFEST_DIGEST}: {e}")),
        };
        match recorded {
            Some(d) if d == output => {}
            Some(_) => {
                return Err(format!("{MANIFEST} was changed after it was written (its files or metrics differ)"))
            }
            None => return Err(format!("{MANIFEST_DIGEST} is not a digest")),
        }
        for (rel, f) in &manifest.files {
            match fs::metadata(dir.join("out").join(rel)) {
                Ok(m) if m.len() == f.size => {}
                Ok(m) => return Err(format!("{rel} has {} bytes, {} were written", m.len(), f.size)),
                Err(_) => return Err(format!("{rel} is missing")),
            }
        }
        Ok(Some(Entry { key, dir, manifest, output }))
    }

    /// Checks an entry (already checked cheaply) against everything it records: re-hashes every
    /// file, refuses files its manifest does not list, and checks that its key record describes
    /// its key.
    pub fn verify(&self, entry: &Entry) -> Result<(), String> {
        let out = entry.out_dir();
        let mut present = Vec::new();
        collect(&out, &out, &mut present).map_err(|e| format!("cannot list its files: {e}"))?;
        if let Some(extra) = present.iter().find(|rel| !entry.manifest.files.contains_key(*rel)) {
            return Err(format!("{extra} is not in its manifest"));
        }
        for (rel, f) in &entry.manifest.files {
            let digest = hash_file(&out.join(rel)).map_err(|e| format!("{rel}: {e}"))?;
            if digest != f.digest {
                return Err(format!("{rel} does not match its recorded hash"));
            }
        }
        let record: KeyRecord = fs::read(entry.dir.join(KEY_RECORD))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| format!("unreadable {KEY_RECORD}: {e}"))?;
        if record.key.digest() != entry.key {
            return Err(format!("{KEY_RECORD} describes another key"));
        }
        Ok(())
    }

    /// Moves a corrupt entry out of the way, keeping it for inspection.
    pub fn quarantine(&self, key: StageKey) -> io::Result<PathBuf> {
        let target = self.root.join("corrupt").join(format!("{}.{}", key.hex(), next_id_for_name()));
        fs::rename(self.object_dir(key), &target)?;
        Ok(target)
    }

    fn lock_path(&self, key: StageKey) -> PathBuf {
        self.root.join("locks").join(format!("{}.lock", key.hex()))
    }

    /// Takes the lock of `key`, waiting while another process (or thread) holds it; `None` when
    /// `cancel` is set while waiting. A lock whose holder died is free: the kernel releases it
    /// with the process. Releasing the lock removes its file (see `lock.rs`).
    pub fn lock(&self, key: StageKey, cancel: &AtomicBool) -> io::Result<Option<KeyLock>> {
        lock::acquire(&self.lock_path(key), cancel)
    }

    /// A private directory for one attempt at `key`.
    pub fn attempt(&self, key: StageKey) -> io::Result<Attempt> {
        let dir = self.root.join("tmp").join(format!("{}.{}.{}", key.hex(), std::process::id(), next_id()));
        fs::create_dir_all(dir.join("out"))?;
        fs::create_dir_all(dir.join("scratch"))?;
        Ok(Attempt { dir })
    }

    /// Makes a successful attempt the entry of `key`: hashes its outputs, writes the manifest
    /// and key record, flushes everything, and renames the directory into place.
    pub fn commit(&self, attempt: Attempt, record: &KeyRecord, metrics: BTreeMap<String, f64>) -> io::Result<Entry> {
        let key = record.key.digest();
        let _ = fs::remove_dir_all(attempt.scratch_dir());
        let manifest = Manifest::of_dir(&attempt.out_dir(), metrics)?;
        let relinked = link_identical(&attempt, &manifest);
        for rel in manifest.files.keys() {
            File::open(attempt.out_dir().join(rel))?.sync_all()?;
        }
        for dir in relinked {
            File::open(dir)?.sync_all()?;
        }
        let output = manifest.digest();
        write_atomic(&attempt.dir.join(KEY_RECORD), &pretty(record))?;
        write_atomic(&attempt.dir.join(MANIFEST_DIGEST), format!("{}\n", output.hex()).as_bytes())?;
        write_atomic(&attempt.dir.join(MANIFEST), &pretty(&manifest))?;
        File::open(&attempt.dir)?.sync_all()?;
        let target = self.object_dir(key);
        if let Err(e) = fs::rename(&attempt.dir, &target) {
            if target.join(MANIFEST).exists() {
                // Another process committed the same key first: its bytes are as good as ours.
                attempt.discard();
            } else if target.exists() {
                // A directory without a manifest is no entry (something removed it halfway):
                // move it aside and put ours in its place.
                self.quarantine(key)?;
                fs::rename(&attempt.dir, &target)?;
            } else {
                return Err(e);
            }
        }
        File::open(self.root.join("objects"))?.sync_all()?;
        let _ = fs::remove_dir_all(self.root.join("work").join(key.hex()));
        Ok(Entry { key, dir: target, manifest, output })
    }

    fn index_path(&self, pipeline: &str, instance: &str) -> PathBuf {
        let name = blake3::hash(instance.as_bytes()).to_hex();
        self.root.join("index").join(sanitize(pipeline)).join(format!("{}.json", &name[..32]))
    }

    /// The last success of an instance.
    pub fn last(&self, pipeline: &str, instance: &str) -> Option<IndexEntry> {
        let bytes = fs::read(self.index_path(pipeline, instance)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records a success (skipped when the index already says the same: the common case of a
    /// cached instance, so only the two fields that decide it are read).
    pub fn remember(&self, entry: &IndexEntry) -> io::Result<()> {
        #[derive(Deserialize)]
        struct Brief {
            stage_key: StageKey,
            output: OutputDigest,
        }
        let path = self.index_path(&entry.record.pipeline, &entry.record.instance);
        if entry.seconds == 0.0 {
            let old: Option<Brief> = fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
            if old.is_some_and(|o| o.stage_key == entry.stage_key && o.output == entry.output) {
                return Ok(());
            }
        }
        fs::create_dir_all(path.parent().expect("index file has a parent"))?;
        write_atomic(&path, &pretty(entry))
    }

    /// Every index entry of a pipeline.
    pub fn index(&self, pipeline: &str) -> Vec<IndexEntry> {
        let dir = self.root.join("index").join(sanitize(pipeline));
        let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
        entries.filter_map(|e| fs::read(e.ok()?.path()).ok()).filter_map(|b| serde_json::from_slice(&b).ok()).collect()
    }

    /// Writes a new run record; returns its path.
    pub fn record_run(&self, record: &impl Serialize, started: u64) -> io::Result<PathBuf> {
        // Zero-padded so that names sort by time.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = self.root.join("runs").join(format!("{started:012}.{nanos:09}-{}.json", std::process::id()));
        write_atomic(&path, &pretty(record))?;
        Ok(path)
    }

    /// Replaces the run record at `path` (what `record_run` returned) by `record`.
    pub fn rewrite_run(&self, path: &Path, record: &impl Serialize) -> io::Result<()> {
        write_atomic(path, &pretty(record))
    }

    /// The run records, oldest first (see `runs.rs` for what is in them).
    pub fn runs(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(self.root.join("runs")) else { return Vec::new() };
        let mut runs: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        runs.sort();
        runs
    }

    /// The key record of a committed entry.
    pub fn key_record(&self, key: StageKey) -> Option<KeyRecord> {
        let bytes = fs::read(self.object_dir(key).join(KEY_RECORD)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keys of every committed entry.
    pub fn keys(&self) -> Vec<StageKey> {
        let Ok(entries) = fs::read_dir(self.root.join("objects")) else { return Vec::new() };
        entries.filter_map(|e| StageKey::parse(&e.ok()?.file_name().to_string_lossy())).collect()
    }

    /// Removes an entry (and its work directory); returns the bytes freed. The entry is first
    /// renamed out of `objects/` in one step, so an interrupted removal never leaves a partial
    /// entry behind.
    pub fn remove(&self, key: StageKey) -> u64 {
        let doomed = self.root.join("tmp").join(format!("{}.{}.{}", key.hex(), std::process::id(), next_id()));
        let mut freed = 0;
        if fs::rename(self.object_dir(key), &doomed).is_ok() {
            freed += dir_size(&doomed);
            let _ = fs::remove_dir_all(&doomed);
        }
        let work = self.root.join("work").join(key.hex());
        freed += dir_size(&work);
        let _ = fs::remove_dir_all(&work);
        freed
    }

    /// Removes attempts and work directories left by processes that are gone, what is in
    /// `corrupt/`, and lock files nobody holds; returns the bytes freed. `live_work` are keys
    /// whose checkpoints to keep.
    pub fn remove_leftovers(&self, live_work: &BTreeSet<StageKey>) -> u64 {
        let mut freed = 0;
        if let Ok(entries) = fs::read_dir(self.root.join("tmp")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid: Option<i32> = name.split('.').nth(1).and_then(|p| p.parse().ok());
                if pid.is_none_or(|p| !process_alive(p)) {
                    freed += dir_size(&e.path());
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        for sub in ["work", "corrupt"] {
            if let Ok(entries) = fs::read_dir(self.root.join(sub)) {
                for e in entries.flatten() {
                    let key = StageKey::parse(&e.file_name().to_string_lossy());
                    if sub == "corrupt" || key.is_none_or(|k| !live_work.contains(&k)) {
                        freed += dir_size(&e.path());
                        let _ = fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        if let Ok(entries) = fs::read_dir(self.root.join("locks")) {
            for e in entries.flatten() {
                lock::remove_if_free(&e.path());
            }
        }
        freed
    }
}

fn next_id_for_name() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{now}.{}", next_id())
}

/// Whether a process with this id exists (signal 0 probes without sending anything).
fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for the process; it has no other effect.
    unsafe { libc::kill(pid, 0) == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) }
}

/// Total size of the files under `path`, each file counted once however many links it has.
pub fn dir_size(path: &Path) -> u64 {
    size_once(path, &mut HashSet::new())
}

fn size_once(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
    if meta.is_dir() {
        let Ok(entries) = fs::read_dir(path) else { return 0 };
        return entries.flatten().map(|e| size_once(&e.path(), seen)).sum();
    }
    if seen.insert((meta.dev(), meta.ino())) {
        meta.len()
    } else {
        0
    }
}

/// Makes the files of an attempt with identical content one file: each is replaced by a hard
/// link to the first of them. Only regular files with no other link take part, so nothing
/// outside the attempt is ever linked to. Saving space is all it does, so it gives up quietly
/// where links cannot be made (the files stay as they are). Returns the directories it changed,
/// to be flushed with the rest.
fn link_identical(attempt: &Attempt, manifest: &Manifest) -> BTreeSet<PathBuf> {
    let out = attempt.out_dir();
    let single = |rel: &str| fs::symlink_metadata(out.join(rel)).is_ok_and(|m| m.is_file() && m.nlink() == 1);
    let mut first: BTreeMap<FileDigest, &str> = BTreeMap::new();
    let mut changed = BTreeSet::new();
    for (rel, f) in &manifest.files {
        if f.size == 0 || !single(rel) {
            continue;
        }
        let Some(original) = first.get(&f.digest) else {
            first.insert(f.digest, rel);
            continue;
        };
        let link = attempt.dir.join(format!("link.{}", next_id()));
        let target = out.join(rel);
        match fs::hard_link(out.join(original), &link).and_then(|()| fs::rename(&link, &target)) {
            Ok(()) => {
                changed.extend(target.parent().map(Path::to_path_buf));
            }
            Err(e) => {
                tracing::debug!("{rel} stays a copy of {original}: {e}");
                let _ = fs::remove_file(&link);
            }
        }
    }
    changed
}

/// A pipeline name as a directory name.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

/// A store record as indented JSON.
fn pretty(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("store records serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest read back from its JSON has the digest it had when written: downstream keys
    /// depend on it, and a metric parsed an ulp off once made every rerun recompute the stages
    /// downstream of a training stage (serde_json needs `float_roundtrip` for exact parsing).
    #[test]
    fn a_manifest_keeps_its_digest_through_json() {
        let metrics: BTreeMap<String, f64> = [14.895603424486923, 0.09450358003377916, 1.0 / 3.0, 2.0e-308, 1e300]
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("m{i}"), *v))
            .collect();
        let manifest = Manifest { files: BTreeMap::new(), metrics };
        let back: Manifest = serde_json::from_slice(&pretty(&manifest)).expect("a manifest parses");
        assert_eq!(back.metrics, manifest.metrics);
        assert_eq!(back.digest(), manifest.digest());
    }

    fn temp_store(name: &str) -> Store {
        let dir = std::env::temp_dir().join(format!("medgen-store-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Store::open(&dir).expect("a store")
    }

    /// Commits an entry whose stage wrote `files` and measured `acc = 0.9`.
    fn commit(store: &Store, files: &[(&str, &str)]) -> Entry {
        let key = CacheKey {
            schema: crate::key::KEY_SCHEMA,
            kind: "shell".into(),
            implementation: 1,
            config: serde_json::json!({"files": files.len()}),
            files: BTreeMap::new(),
            upstream: BTreeMap::new(),
        };
        let record = KeyRecord {
            pipeline: "p".into(),
            instance: "s".into(),
            key,
            file_paths: BTreeMap::new(),
            upstream_instances: BTreeMap::new(),
        };
        let attempt = store.attempt(record.key.digest()).expect("an attempt");
        for (rel, text) in files {
            fs::write(attempt.out_dir().join(rel), text).expect("an output");
        }
        store.commit(attempt, &record, [("acc".to_string(), 0.9)].into()).expect("committed")
    }

    #[test]
    fn an_edited_manifest_is_no_entry() {
        let store = temp_store("edited");
        let entry = commit(&store, &[("o", "x")]);
        assert!(store.entry(entry.key).expect("sound").is_some());
        let path = entry.dir.join(MANIFEST);
        let text = fs::read_to_string(&path).expect("manifest");
        fs::write(&path, text.replace("0.9", "0.99")).expect("edit a metric");
        let err = store.entry(entry.key).expect_err("an edited metric is caught");
        assert!(err.contains("manifest.json was changed after it was written"), "{err}");
        fs::write(&path, text).expect("put it back");
        assert!(store.entry(entry.key).expect("sound again").is_some(), "only content counts, not the bytes' layout");
        fs::remove_file(entry.dir.join(MANIFEST_DIGEST)).expect("remove the digest");
        assert!(store.entry(entry.key).expect_err("no recorded digest").contains("is missing"));
        fs::remove_dir_all(store.root()).expect("cleanup");
    }

    #[test]
    fn identical_files_of_an_entry_are_stored_once() {
        let store = temp_store("dedup");
        let entry =
            commit(&store, &[("best", "weights"), ("last", "weights"), ("log", "other"), ("e1", ""), ("e2", "")]);
        let ino = |rel: &str| fs::metadata(entry.out_dir().join(rel)).expect("stored").ino();
        assert_eq!(ino("best"), ino("last"));
        assert_ne!(ino("best"), ino("log"));
        assert_ne!(ino("e1"), ino("e2"), "empty files are left alone");
        assert_eq!(dir_size(&entry.out_dir()), ("weights".len() + "other".len()) as u64);
        store.verify(&entry).expect("a linked entry verifies");
        fs::remove_dir_all(store.root()).expect("cleanup");
    }

    #[test]
    fn verify_refuses_what_the_entry_does_not_record() {
        let store = temp_store("verify");
        let entry = commit(&store, &[("o", "x")]);
        store.verify(&entry).expect("sound");
        fs::write(entry.out_dir().join("extra"), "y").expect("a file added later");
        assert_eq!(store.verify(&entry).expect_err("an extra file"), "extra is not in its manifest");
        fs::remove_file(entry.out_dir().join("extra")).expect("remove it");
        let path = entry.dir.join(KEY_RECORD);
        let text = fs::read_to_string(&path).expect("key.json");
        fs::write(&path, text.replace("\"files\": 1", "\"files\": 2")).expect("edit the key record");
        assert_eq!(store.verify(&entry).expect_err("another key"), "key.json describes another key");
        fs::remove_dir_all(store.root()).expect("cleanup");
    }
}
