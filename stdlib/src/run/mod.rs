//! Runners: how each stage kind executes, for the engine. `shell` and the datasets (`phantom`,
//! `nifti`) run; the model stages (compress, encode, diffuse, sample, evaluate) are checked but
//! not yet executable, and the engine says so when asked to run one.

mod dataset;
mod shell;

use medgen_engine::runner::{Runtime, StageRunner};

pub(crate) use shell::declared_outputs;
pub use shell::Shell;

/// Every stage kind that can run.
pub struct StdRuntime {
    shell: Shell,
    phantom: dataset::Phantom,
    nifti: dataset::Nifti,
}

impl StdRuntime {
    pub fn new() -> Self {
        StdRuntime { shell: Shell, phantom: dataset::Phantom, nifti: dataset::Nifti }
    }
}

impl Default for StdRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime for StdRuntime {
    fn runner(&self, kind: &str) -> Option<&dyn StageRunner> {
        match kind {
            "shell" => Some(&self.shell),
            "phantom" => Some(&self.phantom),
            "nifti" => Some(&self.nifti),
            _ => None,
        }
    }
}
