//! Hashing input files by content, fast: large files are memory-mapped and hashed on every
//! core (blake3's rayon mode), directories are hashed file by file in parallel, and a stat
//! cache remembers each file's hash by (size, modification and change times, inode) so an unchanged
//! multi-gigabyte dataset is not read again on every run. `--verify` bypasses the cache.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::digest::FileDigest;

/// Files below this size are read in one go; larger ones are mapped and hashed in parallel.
const MMAP_THRESHOLD: u64 = 1 << 20;

/// A file modified this close to when its hash was cached may have changed again within the
/// same timestamp tick; such entries are not trusted (git's "racy clean" problem).
const RACY_WINDOW_NS: i128 = 2_000_000_000;

/// Hashes one file's content.
pub fn hash_file(path: &Path) -> io::Result<FileDigest> {
    let len = std::fs::metadata(path)?.len();
    let mut hasher = blake3::Hasher::new();
    if len >= MMAP_THRESHOLD {
        hasher.update_mmap_rayon(path)?;
    } else {
        let mut buf = Vec::with_capacity(len as usize);
        std::fs::File::open(path)?.read_to_end(&mut buf)?;
        hasher.update(&buf);
    }
    Ok(FileDigest::from_hash(hasher.finalize()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    size: u64,
    mtime_ns: i128,
    /// Status-change time: moves on any write, even when the modification time is put back.
    ctime_ns: i128,
    inode: u64,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Stat {
        Stat {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            inode: meta.ino(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Cached {
    stat: Stat,
    digest: FileDigest,
    /// When the hash was computed, in ns since the epoch.
    hashed_at_ns: i128,
}

/// Remembered hashes of input files, keyed by canonical path. Lives in the store; paths in it
/// never reach a cache key.
#[derive(Default, Serialize, Deserialize)]
pub struct StatCache {
    entries: Mutex<BTreeMap<PathBuf, Cached>>,
    #[serde(skip)]
    dirty: std::sync::atomic::AtomicBool,
}

fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

impl StatCache {
    pub fn load(path: &Path) -> StatCache {
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Writes the cache if it changed (atomically: a temporary file renamed over the old one).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if !self.dirty.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let bytes = serde_json::to_vec(self).map_err(io::Error::other)?;
        crate::store::write_atomic(path, &bytes)
    }

    /// The file's digest, from the cache when its stat is unchanged (unless `verify`).
    pub fn file(&self, path: &Path, verify: bool) -> io::Result<FileDigest> {
        let canonical = path.canonicalize()?;
        let meta = std::fs::metadata(&canonical)?;
        let stat = Stat::of(&meta);
        if !verify {
            let entries = self.entries.lock().expect("stat cache lock");
            if let Some(c) = entries.get(&canonical) {
                if c.stat == stat && c.hashed_at_ns - stat.mtime_ns.max(stat.ctime_ns) > RACY_WINDOW_NS {
                    return Ok(c.digest);
                }
            }
        }
        let hashed_at_ns = now_ns();
        let digest = hash_file(&canonical)?;
        self.entries.lock().expect("stat cache lock").insert(canonical, Cached { stat, digest, hashed_at_ns });
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(digest)
    }

    /// A file's digest, or a directory's: the hash of its files' relative paths and digests,
    /// in sorted order, hashed in parallel.
    pub fn path(&self, path: &Path, verify: bool) -> io::Result<FileDigest> {
        if !std::fs::metadata(path)?.is_dir() {
            return self.file(path, verify);
        }
        let mut files = Vec::new();
        walk(path, path, &mut files)?;
        files.sort();
        let digests: Vec<io::Result<FileDigest>> =
            files.par_iter().map(|rel| self.file(&path.join(rel), verify)).collect();
        let mut hasher = blake3::Hasher::new();
        for (rel, digest) in files.iter().zip(digests) {
            hasher.update(rel.to_string_lossy().as_bytes());
            hasher.update(&[0]);
            hasher.update(&digest?.0);
        }
        Ok(FileDigest::from_hash(hasher.finalize()))
    }
}

/// Relative paths of the regular files under `dir`, following no symbolic links to directories.
fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
            out.push(path.strip_prefix(root).expect("walked below root").to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_follow_content_and_the_cache_notices_changes() {
        let dir = std::env::temp_dir().join(format!("medgen-hash-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("temp dir");
        let a = dir.join("a.txt");
        std::fs::write(&a, b"hello").expect("write");
        std::fs::write(dir.join("sub/b.txt"), b"world").expect("write");
        // blake3("hello"), as `b3sum` prints it.
        assert_eq!(
            hash_file(&a).expect("hash").hex(),
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
        let cache = StatCache::default();
        let before = cache.path(&dir, false).expect("dir digest");
        std::fs::write(&a, b"hellO").expect("rewrite same size");
        assert_ne!(
            cache.path(&dir, false).expect("dir digest"),
            before,
            "a same-size change within the racy window is seen"
        );
        std::fs::write(&a, b"hello").expect("restore");
        assert_eq!(cache.path(&dir, false).expect("dir digest"), before);
        std::fs::rename(dir.join("sub/b.txt"), dir.join("sub/c.txt")).expect("rename");
        assert_ne!(
            cache.path(&dir, false).expect("dir digest"),
            before,
            "renaming a file changes a directory's digest"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
