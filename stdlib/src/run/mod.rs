//! Runners: how each stage kind executes, for the engine: `shell`, the datasets (`phantom`,
//! `nifti`), `compress`, `encode`, `diffuse`, `sample` and `evaluate`.

mod compress;
mod compress_validation;
pub mod compressor;
mod dataset;
pub mod denoiser;
pub mod diffuse;
mod encode;
mod evaluate;
mod evaluate_report;
mod evaluate_subject;
pub mod latents;
mod sample;
mod shell;
mod stage_io;
pub mod strategy_spec;

use medgen_engine::runner::{Runtime, StageRunner};

pub(crate) use shell::declared_outputs;
pub use shell::Shell;

/// Every stage kind that can run. Runners hold no state, so the runtime is a name → runner
/// table.
#[derive(Default)]
pub struct StdRuntime;

impl StdRuntime {
    pub fn new() -> Self {
        StdRuntime
    }
}

impl Runtime for StdRuntime {
    fn runner(&self, kind: &str) -> Option<&dyn StageRunner> {
        match kind {
            "shell" => Some(&Shell),
            "phantom" => Some(&dataset::Phantom),
            "nifti" => Some(&dataset::Nifti),
            "compress" => Some(&compress::Compress),
            "encode" => Some(&encode::Encode),
            "diffuse" => Some(&diffuse::Diffuse),
            "sample" => Some(&sample::Sample),
            "evaluate" => Some(&evaluate::Evaluate),
            _ => None,
        }
    }
}
