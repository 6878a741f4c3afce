//! Source files and spans. Every AST node and every diagnostic points into a [`SourceMap`] by
//! [`Span`] (a file id and a byte range), so a pipeline split over several files with `use`, or a
//! value given on the command line with `--set`, is reported at the right place.
//!
//! A text enters the map through [`SourceMap::add`], which settles line endings and a byte order
//! mark once for every later phase: a leading BOM (which editors on Windows write) is dropped,
//! and a lone carriage return (the line ending of old Mac files) becomes a newline of the same
//! length. Lines and columns are then those the user sees, and the grammar, the line counting and
//! miette need to know only `\n` (`\r\n` is whitespace before it): a `#` comment ends at the end
//! of its line whatever the file's line endings.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Index of a file in its [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        Span { file, start, end }
    }

    /// The smallest span covering both (which must be in the same file).
    pub fn to(self, other: Span) -> Span {
        Span { file: self.file, start: self.start.min(other.start), end: self.end.max(other.end) }
    }

    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// One source text: a pipeline file, a `use`d file, or a synthetic one such as `--set a.b=1`.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name diagnostics show: the path as the user gave it, or a description.
    pub name: String,
    /// The path on disk, for files that have one (relative `use` paths resolve against it).
    pub path: Option<PathBuf>,
    pub text: String,
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }
}

/// The text as every phase reads it: without a leading byte order mark, and with each carriage
/// return that no newline follows turned into a newline (same length, so offsets are kept).
pub fn normalise(text: &str) -> Cow<'_, str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bytes = text.as_bytes();
    let lone_cr = |i: usize| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n');
    if !(0..bytes.len()).any(lone_cr) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() != Some(&'\n') => out.push('\n'),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// All source texts of one check, indexed by [`FileId`].
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a text, its line endings and BOM read as the module docs say.
    pub fn add(&mut self, name: impl Into<String>, path: Option<&Path>, text: impl Into<String>) -> FileId {
        let id = FileId(self.files.len() as u32);
        let text = text.into();
        let text = match normalise(&text) {
            Cow::Borrowed(same) if same.len() == text.len() => text,
            changed => changed.into_owned(),
        };
        self.files.push(SourceFile { name: name.into(), path: path.map(Path::to_path_buf), text });
        id
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// The text a span covers.
    pub fn slice(&self, span: Span) -> &str {
        &self.get(span.file).text[span.start..span.end]
    }

    /// `name:line:column` of the start of a span.
    pub fn location(&self, span: Span) -> String {
        let file = self.get(span.file);
        let (line, col) = file.line_col(span.start);
        format!("{}:{line}:{col}", file.name)
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i as u32), f))
    }
}
