//! Runners: how each stage kind executes, for the engine: `shell`, the datasets (`phantom`,
//! `nifti`), `compress`, `encode`, `diffuse`, `sample` and `evaluate`.

pub(crate) mod compress;
pub(crate) mod compress_validation;
pub mod compressor;
mod dataset;
pub mod denoiser;
pub mod diffuse;
pub(crate) mod encode;
pub(crate) mod evaluate;
mod evaluate_report;
mod evaluate_subject;
pub mod latents;
pub(crate) mod sample;
mod shell;
mod stage_io;
pub mod strategy_spec;

use medgen_engine::runner::{Outcome, RunContext, Runtime, StageError, StageRunner};
use serde::de::DeserializeOwned;

pub(crate) use dataset::{Nifti, Phantom};
pub use shell::Shell;

/// A kind's runner: it receives the configuration its kind resolved at check time
/// (`StageKind::resolve`) and reads its settings from nothing else.
pub(crate) trait Run: Send + Sync {
    type Config: DeserializeOwned;

    /// Bumped whenever a change to the implementation changes what it computes.
    fn version(&self) -> u32;

    fn run(&self, cx: &RunContext<'_>, config: Self::Config) -> Result<Outcome, StageError>;
}

/// A [`Run`] as the engine sees it: the instance's configuration deserialised into the kind's
/// type, once, before the runner starts.
pub(crate) struct Typed<R>(pub R);

impl<R: Run> StageRunner for Typed<R> {
    fn version(&self) -> u32 {
        self.0.version()
    }

    fn run(&self, cx: &RunContext<'_>) -> Result<Outcome, StageError> {
        let config = serde_json::from_value(cx.instance.config.clone()).map_err(|e| {
            StageError::Failed(format!(
                "the configuration of `{}` does not fit its kind `{}` ({e}); check the pipeline again with this \
                 medgen",
                cx.instance.name, cx.instance.kind
            ))
        })?;
        self.0.run(cx, config)
    }
}

/// Every stage kind that can run, from the one table of kinds (`crate::kinds`).
pub struct StdRuntime {
    runners: Vec<(&'static str, Box<dyn StageRunner>)>,
}

impl StdRuntime {
    pub fn new() -> Self {
        StdRuntime {
            runners: crate::kinds::all().into_iter().map(|k| (k.checker.signature().kind, k.runner)).collect(),
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
        self.runners.iter().find(|(name, _)| *name == kind).map(|(_, r)| r.as_ref())
    }
}
