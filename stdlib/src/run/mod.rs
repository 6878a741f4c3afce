//! Runners: how each stage kind executes, for the engine. `shell`, the datasets (`phantom`,
//! `nifti`), `compress`, `encode`, `diffuse` and `sample` run; `evaluate` is checked but not yet
//! executable, and the engine says so when asked to run it.

mod compress;
pub mod compressor;
mod dataset;
pub mod denoiser;
pub mod diffuse;
mod encode;
pub mod latents;
mod sample;
mod shell;
mod stage_io;
pub mod strategy_spec;

use medgen_engine::runner::{Runtime, StageRunner};

pub(crate) use shell::declared_outputs;
pub use shell::Shell;

/// Every stage kind that can run.
pub struct StdRuntime {
    shell: Shell,
    phantom: dataset::Phantom,
    nifti: dataset::Nifti,
    compress: compress::Compress,
    encode: encode::Encode,
    diffuse: diffuse::Diffuse,
    sample: sample::Sample,
}

impl StdRuntime {
    pub fn new() -> Self {
        StdRuntime {
            shell: Shell,
            phantom: dataset::Phantom,
            nifti: dataset::Nifti,
            compress: compress::Compress,
            encode: encode::Encode,
            diffuse: diffuse::Diffuse,
            sample: sample::Sample,
        }
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
            "compress" => Some(&self.compress),
            "encode" => Some(&self.encode),
            "diffuse" => Some(&self.diffuse),
            "sample" => Some(&self.sample),
            _ => None,
        }
    }
}
