//! The checker: syntax tree in, [`CheckedPipeline`] out.
//!
//! Order of work: read the root file (`read.rs`) and everything it `use`s (`load.rs`);
//! collect constants and declarations, reporting duplicates; apply `--set` overrides
//! (`overrides.rs`); order the declarations so each comes after what it depends on
//! (`order.rs`); then check each one against its kind's signature (`decl.rs`), evaluating
//! values against their types (`eval.rs`), and let the kind derive its outputs once per
//! instance. Every error of the file is collected; a declaration with errors is left out of
//! the result, and checks that need its outputs are skipped rather than reported a second
//! time. At most [`MAX_SHOWN_PER_FILE`] diagnostics of one file are kept, with one more that
//! counts the rest, so a file with thousands of broken values is reported in bounded output.

mod decl;
mod eval;
mod load;
mod order;
mod overrides;
mod paths;
mod read;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checked::{CheckedPipeline, CheckedStage};
use crate::diagnostic::{self, Diagnostic};
use crate::errors::{ErrorKind, FileProblem};
use crate::signature::Registry;
use crate::source::{SourceMap, Span};
use crate::syntax::ast::{Binding, Decl, Expr, Ident, Item};

pub use overrides::Override;
pub use read::MAX_FILE_BYTES;

/// Unknown names of one check that get a "did you mean": past that many the file is not one
/// typo away from right, and comparing each with every name of a large file would take long.
const MAX_NAME_SUGGESTIONS: usize = 100;

/// Most diagnostics kept per file; past it one more (W0002) counts those left out. Errors are
/// kept before warnings, so a file with errors always shows some.
pub const MAX_SHOWN_PER_FILE: usize = 50;

/// Everything a check produced: the sources (to render diagnostics), the diagnostics, sorted,
/// and the checked pipeline when there were no errors.
#[derive(Debug)]
pub struct Report {
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
    pub pipeline: Option<CheckedPipeline>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Checks the pipeline file at `path` with `--set` overrides (each `TARGET=VALUE`). A path that
/// is not a regular file, is too large or is not text is reported without a place (E0003).
pub fn check_file(path: &Path, overrides: &[String], registry: &dyn Registry) -> Report {
    checked_text(path, read::read_pipeline(path, None), overrides, registry)
}

/// Checks `bytes` as if they were the contents of the file at `path`, read from disk: a file
/// that is not text is refused as [`check_file`] refuses it, and `use` paths resolve beside
/// `path`.
pub fn check_bytes_at(path: &Path, bytes: &[u8], overrides: &[String], registry: &dyn Registry) -> Report {
    checked_text(path, read::decode(bytes.to_vec()), overrides, registry)
}

fn checked_text(
    path: &Path,
    text: Result<String, FileProblem>,
    overrides: &[String],
    registry: &dyn Registry,
) -> Report {
    let mut sources = SourceMap::new();
    match text {
        Ok(text) => {
            let root = sources.add(path.display().to_string(), Some(path), text);
            check_loaded(sources, root, overrides, registry)
        }
        Err(problem) => {
            let diag = Diagnostic::unspanned(ErrorKind::FileUnreadable { path: path.display().to_string(), problem });
            Report { sources, diagnostics: vec![diag], pipeline: None }
        }
    }
}

/// Checks pipeline text that has no file on disk (`use` paths resolve against the current
/// directory). Tests and `medgen fmt` use it.
pub fn check_source(name: &str, text: &str, overrides: &[String], registry: &dyn Registry) -> Report {
    let mut sources = SourceMap::new();
    let root = sources.add(name, None, text);
    check_loaded(sources, root, overrides, registry)
}

/// Checks `text` as if it were the contents of the file at `path` (an editor's unsaved buffer,
/// or a reformatted file): diagnostics name `path`, and `use` paths resolve beside it.
pub fn check_text_at(path: &Path, text: &str, overrides: &[String], registry: &dyn Registry) -> Report {
    let mut sources = SourceMap::new();
    let root = sources.add(path.display().to_string(), Some(path), text);
    check_loaded(sources, root, overrides, registry)
}

fn check_loaded(
    mut sources: SourceMap,
    root: crate::source::FileId,
    overrides: &[String],
    registry: &dyn Registry,
) -> Report {
    let mut diags = Vec::new();
    let (items, broken) = load::load(&mut sources, root, &mut diags);
    let overrides = overrides::parse_all(&mut sources, overrides, &mut diags);
    let base_dir = match sources.get(root).path.as_deref().and_then(Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut checker = Checker::new(registry, &items, &mut diags, base_dir);
    checker.broken = broken.into_iter().map(|i| i.name).collect();
    checker.apply_overrides(&overrides);
    let pipeline = checker.run();
    diagnostic::sort(&mut diags);
    diags.dedup();
    let diags = diagnostic::limit_per_file(diags, MAX_SHOWN_PER_FILE);
    let pipeline = if diags.iter().any(Diagnostic::is_error) { None } else { pipeline };
    Report { sources, diagnostics: diags, pipeline }
}

/// State of one check.
pub(crate) struct Checker<'a> {
    registry: &'a dyn Registry,
    diags: &'a mut Vec<Diagnostic>,
    pipeline_name: Option<String>,
    /// Top-level constants by name.
    constants: BTreeMap<String, Binding>,
    /// Declarations, in source order.
    decls: Vec<Decl>,
    /// Position of each declaration in `decls`, by name.
    decl_index: BTreeMap<String, usize>,
    /// Overridden parameters per declaration: `(param, value, span of the override)`.
    decl_overrides: BTreeMap<String, Vec<(crate::syntax::ast::Ident, Expr)>>,
    /// Results of checked declarations; `None` for one that had errors.
    done: BTreeMap<String, Option<CheckedStage>>,
    /// Constants being expanded, to catch `a = b`, `b = a`.
    expanding: Vec<String>,
    /// Constants some value refers to; the rest are checked on their own and reported unused.
    used_constants: std::collections::BTreeSet<String>,
    /// Names declared in declarations the parser could not read.
    broken: std::collections::BTreeSet<String>,
    /// Declarations on a dependency circle (reported once; not checked further).
    cyclic: std::collections::BTreeSet<String>,
    /// How deep evaluation is, in nested values and constants (see [`eval::MAX_EVAL_DEPTH`]).
    depth: usize,
    /// Unknown names that may still get a "did you mean": each costs a look at every name.
    suggestions_left: usize,
    /// Whether the pipeline seed is being evaluated: it is read before any stage, and every
    /// stage depends on it, so it cannot refer to one.
    reading_seed: bool,
    /// Where relative paths in parameters start: the root file's directory (the current
    /// directory for text without a file).
    base_dir: PathBuf,
}

impl<'a> Checker<'a> {
    fn new(registry: &'a dyn Registry, items: &[Item], diags: &'a mut Vec<Diagnostic>, base_dir: PathBuf) -> Self {
        let mut c = Checker {
            registry,
            diags,
            pipeline_name: None,
            constants: BTreeMap::new(),
            decls: Vec::new(),
            decl_index: BTreeMap::new(),
            decl_overrides: BTreeMap::new(),
            done: BTreeMap::new(),
            expanding: Vec::new(),
            cyclic: Default::default(),
            broken: Default::default(),
            used_constants: Default::default(),
            depth: 0,
            suggestions_left: MAX_NAME_SUGGESTIONS,
            reading_seed: false,
            base_dir,
        };
        let mut first_seen: BTreeMap<String, Span> = BTreeMap::new();
        for item in items {
            match item {
                Item::Pipeline { name, .. } => c.pipeline_name = Some(name.name.clone()),
                Item::Use { .. } => {}
                Item::Binding(b) => {
                    if c.note_name(&mut first_seen, &b.name.name, b.name.span, "constant") {
                        c.constants.insert(b.name.name.clone(), b.clone());
                    }
                }
                Item::Decl(d) => {
                    if c.note_name(&mut first_seen, &d.name.name, d.name.span, d.keyword.as_str()) {
                        c.decl_index.insert(d.name.name.clone(), c.decls.len());
                        c.decls.push(d.clone());
                    }
                }
            }
        }
        c
    }

    /// Records a top-level name; reports and returns false when it is taken.
    fn note_name(&mut self, seen: &mut BTreeMap<String, Span>, name: &str, span: Span, what: &'static str) -> bool {
        if let Some(first) = seen.get(name) {
            let d = Diagnostic::new(ErrorKind::Duplicate { what, name: name.to_string() }, span)
                .with_related(*first, "first defined here");
            self.diags.push(d);
            return false;
        }
        seen.insert(name.to_string(), span);
        true
    }

    fn error(&mut self, kind: ErrorKind, span: Span) {
        self.diags.push(Diagnostic::new(kind, span));
    }

    fn decl(&self, name: &str) -> Option<&Decl> {
        self.decl_index.get(name).map(|i| &self.decls[*i])
    }

    /// Reports a reference to nothing, unless it names a declaration whose syntax was broken
    /// (that error is reported already, and the name is not really unknown).
    fn unknown_name(&mut self, name: &Ident) {
        if self.broken.contains(&name.name) {
            return;
        }
        let suggestion = match self.suggestions_left.checked_sub(1) {
            Some(left) => {
                self.suggestions_left = left;
                crate::suggest::nearest(&name.name, self.known_names())
            }
            None => None,
        };
        self.error(ErrorKind::UnknownName { name: name.name.clone(), suggestion }, name.span);
    }

    /// All names a reference could mean, for suggestions.
    fn known_names(&self) -> impl Iterator<Item = &str> {
        self.constants.keys().map(String::as_str).chain(self.decls.iter().map(|d| d.name.name.as_str()))
    }

    fn run(&mut self) -> Option<CheckedPipeline> {
        let seed = self.pipeline_seed();
        let order = self.order();
        for name in &order {
            let stage = self.check_decl(name, seed);
            self.done.insert(name.clone(), stage);
        }
        self.check_unused_constants();
        let name = self.pipeline_name.clone()?;
        let stages = order.iter().filter_map(|n| self.done.get(n).cloned().flatten()).collect();
        Some(CheckedPipeline { name, seed, stages })
    }

    /// The pipeline seed: the constant `seed` if there is one (checked to be an integer ≥ 0).
    fn pipeline_seed(&mut self) -> i64 {
        let Some(binding) = self.constants.get("seed").cloned() else {
            return 0;
        };
        let ty = crate::signature::Type::int(0, None);
        self.reading_seed = true;
        let seed = self.eval(&binding.value, &ty).and_then(|v| v.as_i64());
        self.reading_seed = false;
        // A seed that is not one is reported; 0 only lets the rest of the check go on.
        seed.unwrap_or(0)
    }

    /// A constant nothing uses is probably a mistake (a misspelt reference elsewhere); its
    /// value is still checked, as far as it can be without knowing its type.
    fn check_unused_constants(&mut self) {
        let unused: Vec<Binding> = self
            .constants
            .values()
            .filter(|b| b.name.name != "seed" && !self.used_constants.contains(&b.name.name))
            .cloned()
            .collect();
        for b in unused {
            self.check_untyped(&b.value);
            self.error(ErrorKind::UnusedConstant { name: b.name.name.clone() }, b.name.span);
        }
    }
}

pub use order::{placeholder_span, placeholders, PLACEHOLDER_SCOPES};
