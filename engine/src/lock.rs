//! Per-key locks between processes (and threads): files in the store's `locks/`.
//!
//! A lock is an `flock` on `locks/<key>.lock`. The kernel releases it when its holder dies,
//! even by SIGKILL, so a crashed run never leaves a key locked. The file itself would stay
//! forever (one per key ever computed) unless someone removes it, and removing it is where the
//! care goes: another process may have opened the file and be waiting for the lock when the
//! holder removes it. Once that process gets the lock, it holds a lock on a file nobody else can
//! find any more, while a third process creates a new file at the path and locks that one —
//! two holders of one key.
//!
//! So the protocol is: open (creating it if needed) the file at the path, take the lock, then
//! check that the path still leads to the file locked (same device and inode), and start again
//! if it does not. The holder removes the file while it still holds the lock, and only then
//! releases it. A lock taken on a removed file is never kept, so at any moment only the holder
//! of the file at the path holds the key. Lock files left by processes that died are removed by
//! `medgen gc` the same way: it takes the lock without waiting, checks, and removes the file
//! while holding it; a lock someone holds or waits for is left alone.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long to wait between two tries at a lock someone holds.
const POLL: Duration = Duration::from_millis(50);

/// A held lock. Dropping it removes its file and releases it, in that order.
pub struct KeyLock {
    /// Open for as long as the lock is held: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        // Still holding the lock: whoever opened this file meanwhile will find, once it gets the
        // lock, that the path no longer leads to it, and try again on a new file.
        let _ = fs::remove_file(&self.path);
    }
}

/// Takes the lock at `path`, waiting while someone else holds it; `None` when `cancel` is set
/// while waiting.
pub fn acquire(path: &Path, cancel: &AtomicBool) -> io::Result<Option<KeyLock>> {
    loop {
        let file = File::options().create(true).truncate(false).write(true).open(path)?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {
                    if cancel.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                    std::thread::sleep(POLL);
                }
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        if still_at(&file, path)? {
            return Ok(Some(KeyLock { _file: file, path: path.to_path_buf() }));
        }
        // The holder before us removed the file as it released it: lock the file at the path now.
    }
}

/// Removes the lock file at `path` if nobody holds the lock or waits on this file; says whether
/// it did.
pub fn remove_if_free(path: &Path) -> bool {
    // Not created: a file already gone needs no removing.
    let Ok(file) = File::options().write(true).open(path) else { return false };
    if file.try_lock().is_err() || !still_at(&file, path).unwrap_or(false) {
        return false;
    }
    fs::remove_file(path).is_ok()
}

/// Whether `path` still leads to the open `file`.
fn still_at(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    match fs::metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("medgen-lock-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// A waiter that opened the file before its holder removed it must not keep a lock on the
    /// removed file: then a third party would lock a new file at the path, and two would hold
    /// the key at once.
    #[test]
    fn a_lock_released_to_a_waiter_is_still_exclusive_and_its_file_goes() {
        let dir = temp_dir("handover");
        let path = dir.join("k.lock");
        let wait = AtomicBool::new(false);
        let give_up = AtomicBool::new(true);
        let first = acquire(&path, &wait).expect("lock").expect("free");
        let (acquired, got) = mpsc::channel();
        let (release, done) = mpsc::channel::<()>();
        let at = &path;
        std::thread::scope(|s| {
            s.spawn(move || {
                let second = acquire(at, &AtomicBool::new(false)).expect("lock").expect("taken in the end");
                acquired.send(()).expect("main waits");
                done.recv().expect("main says when");
                drop(second);
            });
            // Let the waiter open the file and start waiting on it.
            std::thread::sleep(POLL * 4);
            assert!(acquire(&path, &give_up).expect("try").is_none(), "held by the first");
            drop(first);
            got.recv().expect("the waiter gets the lock");
            assert!(
                acquire(&path, &give_up).expect("try").is_none(),
                "the waiter's lock must be on the file at the path"
            );
            assert!(!remove_if_free(&path), "a held lock's file is not removed");
            assert!(path.exists());
            release.send(()).expect("release");
        });
        assert!(!path.exists(), "the lock file goes with the last release");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_lock_file_left_by_a_dead_holder_is_removed_when_free() {
        let dir = temp_dir("leftover");
        let path = dir.join("k.lock");
        // What a process killed while holding the lock leaves: the file, and no lock.
        fs::write(&path, b"").expect("a leftover lock file");
        assert!(remove_if_free(&path));
        assert!(!path.exists());
        assert!(!remove_if_free(&path), "nothing to remove");
        let held = acquire(&path, &AtomicBool::new(false)).expect("lock").expect("free");
        assert!(!remove_if_free(&path));
        drop(held);
        assert!(!path.exists());
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
