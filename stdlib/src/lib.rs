//! medgen-stdlib: the stage kinds of medgen and everything they need.
//!
//! This crate declares each kind's signature (inputs, typed parameters with ranges and
//! defaults, output), its `derive`, which computes what an instance yields before it runs
//! (channel counts, latent geometry, metric names) and reports the seeds' pitfalls as
//! diagnostics with stable codes (`pitfalls.rs`), and its `resolve`, which turns the checked
//! parameters and what `derive` found into the kind's typed configuration (`stages/`). The
//! checker in medgen-lang sees the kinds only through [`StdRegistry`], so the language stays free
//! of domain knowledge; the engine runs them through [`StdRuntime`] (`run/`), whose runners
//! receive that configuration and read their settings from nothing else. Both are built from the
//! one table of kinds in `kinds.rs`.

pub mod allocator;
pub mod data;
pub mod device;
pub mod diffusion;
pub mod io;
mod kinds;
pub mod metrics;
pub mod nn;
pub mod pitfalls;
pub mod run;
pub mod split;
mod stages;
pub mod train;
pub mod vocab;

use medgen_lang::diagnostic::{Code, Diagnostic};
use medgen_lang::signature::{Registry, StageKind};
use medgen_lang::source::Span;

use pitfalls::Pitfall;
pub use run::StdRuntime;
pub use stages::{compress_metric_names, MetricRules};

/// Every stage kind medgen knows.
pub struct StdRegistry {
    kinds: Vec<Box<dyn StageKind>>,
}

impl StdRegistry {
    pub fn new() -> Self {
        StdRegistry { kinds: kinds::all().into_iter().map(|k| k.checker).collect() }
    }
}

impl Default for StdRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry for StdRegistry {
    fn kind(&self, name: &str) -> Option<&dyn StageKind> {
        self.kinds.iter().find(|k| k.signature().kind == name).map(|k| k.as_ref())
    }

    fn kinds(&self) -> Vec<&dyn StageKind> {
        self.kinds.iter().map(|k| k.as_ref()).collect()
    }

    fn codes(&self) -> Vec<&'static Code> {
        pitfalls::ALL.to_vec()
    }

    /// Seed pitfall 1: a strategy given as a mode, or a mode as a strategy.
    fn misplaced_value(&self, of: &str, value: &str, span: Span) -> Option<Diagnostic> {
        let kind = match of {
            "mode" if vocab::STRATEGIES.contains(&value) => Pitfall::StrategyAsMode { value: value.to_string() },
            "strategy" if vocab::MODES.contains(&value) => Pitfall::ModeAsStrategy { value: value.to_string() },
            _ => return None,
        };
        Some(Diagnostic::new(kind, span))
    }
}
