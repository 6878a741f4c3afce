//! Helpers shared by the stdlib's integration tests.

use std::fs;
use std::path::PathBuf;

/// A fresh directory under the system temp dir, named after the test binary, the process and
/// `name`, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("medgen-{}-{}-{name}", env!("CARGO_CRATE_NAME"), std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
