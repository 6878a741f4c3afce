//! medgen-lang: the pipeline language.
//!
//! Text goes through phases, each a type: [`syntax::parse_file`] yields a [`syntax::ast::File`]
//! (what the file says, with spans); [`check::check`] resolves names, types, ranges, defaults,
//! sweeps and overrides against the stage signatures a [`signature::Registry`] provides, and
//! returns a [`checked::CheckedPipeline`], the only form later phases accept. Diagnostics are
//! data ([`diagnostic::Diagnostic`]) rendered by miette. This crate knows nothing of tensors:
//! stage kinds and their domain rules are declared by medgen-stdlib.

pub mod check;
pub mod checked;
pub mod diagnostic;
pub mod errors;
mod excerpt;
pub mod format;
pub mod reference;
pub mod signature;
pub mod source;
mod suggest;
pub mod syntax;
pub mod value;

pub use check::{check_file, check_source, Report};
pub use checked::CheckedPipeline;
pub use diagnostic::{Code, Diagnostic, Severity};
