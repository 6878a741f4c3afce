//! The checker: syntax tree in, [`CheckedPipeline`] out.
//!
//! Order of work: load the root file and everything it `use`s (`load.rs`); collect constants
//! and declarations, reporting duplicates; apply `--set` overrides (`overrides.rs`); order the
//! declarations so each comes after what it depends on (`order.rs`); then check each one
//! against its kind's signature (`decl.rs`), evaluating values against their types
//! (`eval.rs`), and let the kind derive its outputs once per instance. Every error of the
//! file is collected; a declaration with errors is left out of the result, and checks that
//! need its outputs are skipped rather than reported a second time.

mod decl;
mod eval;
mod load;
mod order;
mod overrides;
mod paths;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checked::{CheckedPipeline, CheckedStage};
use crate::diagnostic::{self, Diagnostic};
use crate::errors::ErrorKind;
use crate::signature::Registry;
use crate::source::{SourceMap, Span};
use crate::syntax::ast::{Binding, Decl, Expr, Ident, Item};

pub use overrides::Override;

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

/// Checks the pipeline file at `path` with `--set` overrides (each `TARGET=VALUE`).
pub fn check_file(path: &Path, overrides: &[String], registry: &dyn Registry) -> Report {
    let mut sources = SourceMap::new();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let root = sources.add(path.display().to_string(), Some(path), text);
            check_loaded(sources, root, overrides, registry)
        }
        Err(e) => {
            let diag = Diagnostic::unspanned(ErrorKind::UseUnreadable {
                path: path.display().to_string(),
                reason: e.to_string(),
            });
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
        let suggestion = crate::suggest::nearest(&name.name, self.known_names());
        self.error(ErrorKind::UnknownName { name: name.name.clone(), suggestion }, name.span);
    }

    /// All names a reference could mean, for suggestions.
    fn known_names(&self) -> Vec<&str> {
        self.constants.keys().map(String::as_str).chain(self.decls.iter().map(|d| d.name.name.as_str())).collect()
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
        self.eval(&binding.value, &ty).and_then(|v| v.as_i64()).unwrap_or(0)
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
