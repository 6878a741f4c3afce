//! The one table of stage kinds: each kind's checker half (signature, `derive`, `resolve`) next to
//! its runner. The registry the checker sees ([`crate::StdRegistry`]) and the runtime the engine
//! runs ([`crate::StdRuntime`]) are both built from it, so a kind cannot be checked without
//! being runnable, or run under a name the checker does not know.

use medgen_engine::runner::StageRunner;
use medgen_lang::signature::StageKind;

use crate::run::{self, Typed};
use crate::stages;

pub(crate) struct Kind {
    pub checker: Box<dyn StageKind>,
    pub runner: Box<dyn StageRunner>,
}

fn kind(checker: impl StageKind + 'static, runner: impl StageRunner + 'static) -> Kind {
    Kind { checker: Box::new(checker), runner: Box::new(runner) }
}

/// Every kind, in the order the docs list them.
pub(crate) fn all() -> Vec<Kind> {
    vec![
        kind(stages::Phantom::new(), Typed(run::Phantom)),
        kind(stages::Nifti::new(), Typed(run::Nifti)),
        kind(stages::Compress::new(), Typed(run::compress::Compress)),
        kind(stages::Encode::new(), Typed(run::encode::Encode)),
        kind(stages::Diffuse::new(), Typed(run::diffuse::Diffuse)),
        kind(stages::Sample::new(), Typed(run::sample::Sample)),
        kind(stages::Evaluate::new(), Typed(run::evaluate::Evaluate)),
        kind(stages::Shell::new(), Typed(run::Shell)),
    ]
}
