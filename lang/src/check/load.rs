//! Reading the root file and, recursively, every file it `use`s. A file reached twice (two
//! files using a common one) is read once; a file that is still being read when it is used
//! again is a circle and an error.
//!
//! A used file is read only when it is a pipeline file by name: its path, with symlinks
//! resolved, ends in `.mg`. A problem with a used file (missing, not a regular file, too large,
//! not text, not `.mg`) is reported at the `use` line of the file that names it, and nothing of
//! the used file is shown: `use "/etc/shadow"` must not print the first line of the shadow file.
//! A `.mg` file that is text but does not parse is shown like any other: it is a pipeline the
//! user wrote.

use std::path::{Path, PathBuf};

use crate::diagnostic::Diagnostic;
use crate::errors::{ErrorKind, FileProblem};
use crate::source::{FileId, SourceMap, Span};
use crate::syntax::ast::{Ident, Item};
use crate::syntax::parse_file;

use super::read::read_pipeline;

/// The items of the root file and every file it uses, and the names of declarations that
/// could not be parsed.
pub(super) fn load(sources: &mut SourceMap, root: FileId, diags: &mut Vec<Diagnostic>) -> (Vec<Item>, Vec<Ident>) {
    let mut loader = Loader { reading: Vec::new(), read: Vec::new(), items: Vec::new(), broken: Vec::new() };
    let root_path = sources.get(root).path.as_deref().and_then(|p| p.canonicalize().ok());
    loader.file(sources, root, root_path, true, diags);
    let pipelines: Vec<Span> = loader
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Pipeline { span, .. } if span.file == root => Some(*span),
            _ => None,
        })
        .collect();
    match pipelines.as_slice() {
        [] if !diags.iter().any(|d| d.is_error() && d.span.is_some_and(|s| s.file == root)) => {
            diags.push(Diagnostic::new(ErrorKind::PipelineMissing, Span::new(root, 0, 0)));
        }
        [_, rest @ ..] => {
            for span in rest {
                diags.push(Diagnostic::new(ErrorKind::PipelineRepeated, *span));
            }
        }
        _ => {}
    }
    (loader.items, loader.broken)
}

struct Loader {
    /// Files being read, innermost last (canonical paths).
    reading: Vec<PathBuf>,
    /// Files already read.
    read: Vec<PathBuf>,
    items: Vec<Item>,
    broken: Vec<Ident>,
}

impl Loader {
    fn file(
        &mut self,
        sources: &mut SourceMap,
        id: FileId,
        path: Option<PathBuf>,
        is_root: bool,
        diags: &mut Vec<Diagnostic>,
    ) {
        let (file, parse_diags) = parse_file(id, &sources.get(id).text);
        diags.extend(parse_diags);
        self.broken.extend(file.broken);
        if let Some(p) = &path {
            self.reading.push(p.clone());
            self.read.push(p.clone());
        }
        let base = sources.get(id).path.as_deref().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        for item in file.items {
            match &item {
                Item::Use { path: rel, path_span, .. } => self.use_file(sources, &base, rel, *path_span, diags),
                Item::Pipeline { span, .. } if !is_root => {
                    diags.push(Diagnostic::new(ErrorKind::PipelineInUsedFile, *span))
                }
                _ => {}
            }
            self.items.push(item);
        }
        if path.is_some() {
            self.reading.pop();
        }
    }

    fn use_file(&mut self, sources: &mut SourceMap, base: &Path, rel: &str, span: Span, diags: &mut Vec<Diagnostic>) {
        let full = base.join(rel);
        let unreadable = |problem| Diagnostic::new(ErrorKind::UseUnreadable { path: rel.to_string(), problem }, span);
        let canonical = match full.canonicalize() {
            Ok(c) => c,
            Err(e) => {
                diags.push(unreadable(FileProblem::Io(e.to_string())));
                return;
            }
        };
        if self.reading.contains(&canonical) {
            diags.push(Diagnostic::new(ErrorKind::UseCycle { path: rel.to_string() }, span));
            return;
        }
        if self.read.contains(&canonical) {
            return;
        }
        match read_pipeline(&canonical, Some(&full)) {
            Ok(text) => {
                let id = sources.add(full.display().to_string(), Some(&full), text);
                self.file(sources, id, Some(canonical), false, diags);
            }
            Err(problem) => diags.push(unreadable(problem)),
        }
    }
}
