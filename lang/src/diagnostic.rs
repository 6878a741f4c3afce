//! Diagnostics are data: a [`Diagnostic`] is a stable [`Code`], a span, a message and a help
//! line. Each crate that raises diagnostics keeps an enum of what can go wrong and writes every
//! message in one `Display` match (`errors.rs` here, `pitfalls.rs` in medgen-stdlib), so raise
//! sites never format prose. Rendering to text with a caret under the span is done by miette.
//!
//! What is rendered is bounded whatever the input: the source shown is an [`Excerpt`] (lines
//! cut to a width around the span), and the message, help and labels are cut to
//! [`MAX_TEXT_CHARS`] characters, so a name a megabyte long is reported in a few lines.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan};

use crate::errors::ErrorKind;
use crate::excerpt::{Excerpt, MAX_COLUMNS};
use crate::source::{SourceMap, Span};

/// Most characters of a message, help or label rendered.
pub const MAX_TEXT_CHARS: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A stable diagnostic code (`E0xxx` error, `W0xxx` warning) with its long explanation, printed
/// by `medgen explain` and listed in `docs/errors.md`.
#[derive(Debug, PartialEq, Eq)]
pub struct Code {
    pub id: &'static str,
    pub severity: Severity,
    /// One line: what the code is about.
    pub title: &'static str,
    /// Markdown: why it is a problem, an example that triggers it, and the fix.
    pub explanation: &'static str,
}

/// Something that can go wrong, as an enum variant: its `Display` is the message.
pub trait DiagnosticKind: fmt::Display {
    fn code(&self) -> &'static Code;
    /// What to do about it, when there is something to say.
    fn help(&self) -> Option<String> {
        None
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: &'static Code,
    pub message: String,
    /// Where; `None` only for problems of the file named on the command line as a whole (it
    /// cannot be read, or is not text: E0003, whose message then gives the line and byte).
    pub span: Option<Span>,
    /// Short text under the caret.
    pub label: Option<String>,
    pub help: Option<String>,
    /// Other places that explain this one ("first defined here").
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn new(kind: impl DiagnosticKind, span: Span) -> Self {
        Self::build(&kind, Some(span))
    }

    pub fn unspanned(kind: impl DiagnosticKind) -> Self {
        Self::build(&kind, None)
    }

    fn build(kind: &dyn DiagnosticKind, span: Option<Span>) -> Self {
        Diagnostic {
            code: kind.code(),
            message: kind.to_string(),
            span,
            label: None,
            help: kind.help(),
            related: Vec::new(),
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_related(mut self, span: Span, note: impl Into<String>) -> Self {
        self.related.push((span, note.into()));
        self
    }

    pub fn severity(&self) -> Severity {
        self.code.severity
    }

    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }

    /// Renders the diagnostic with the offending line and a caret, as `medgen check` prints it.
    pub fn render(&self, sources: &SourceMap, color: bool) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100).with_links(false);
        let mut out = String::new();
        let report = Rendered::new(self, sources);
        if handler.render_report(&mut out, &report).is_err() {
            out = format!("{}: {}", self.code.id, self.message);
        }
        out
    }
}

/// A diagnostic prepared for miette: an excerpt of its file, and spans converted to offsets in it.
#[derive(Debug)]
struct Rendered {
    code: &'static str,
    severity: Severity,
    message: String,
    help: Option<String>,
    source: Option<Excerpt>,
    labels: Vec<LabeledSpan>,
    related: Vec<Rendered>,
    /// A note on another diagnostic (in another file), not a problem of its own.
    note: bool,
}

impl Rendered {
    fn new(diag: &Diagnostic, sources: &SourceMap) -> Self {
        let mut source = None;
        let mut labels = Vec::new();
        let mut related = Vec::new();
        if let Some(span) = diag.span {
            let here: Vec<&(Span, String)> = diag.related.iter().filter(|(s, _)| s.file == span.file).collect();
            let spans: Vec<Span> = std::iter::once(span).chain(here.iter().map(|(s, _)| *s)).collect();
            let (excerpt, mapped) = Excerpt::new(sources.get(span.file), &spans);
            let texts = std::iter::once(diag.label.as_deref()).chain(here.iter().map(|(_, note)| Some(note.as_str())));
            for (i, (at, text)) in mapped.into_iter().zip(texts).enumerate() {
                let text = text.map(|t| clipped(t, MAX_COLUMNS));
                labels.push(if i == 0 {
                    LabeledSpan::new_primary_with_span(text, at)
                } else {
                    LabeledSpan::new_with_span(text, at)
                });
            }
            source = Some(excerpt);
            for (other, note) in diag.related.iter().filter(|(s, _)| s.file != span.file) {
                let (excerpt, mapped) = Excerpt::new(sources.get(other.file), &[*other]);
                related.push(Rendered {
                    code: diag.code.id,
                    severity: diag.severity(),
                    message: clipped(note, MAX_TEXT_CHARS),
                    help: None,
                    source: Some(excerpt),
                    labels: mapped.into_iter().map(|at| LabeledSpan::new_primary_with_span(None, at)).collect(),
                    related: Vec::new(),
                    note: true,
                });
            }
        }
        Rendered {
            code: diag.code.id,
            severity: diag.severity(),
            message: clipped(&diag.message, MAX_TEXT_CHARS),
            help: diag.help.as_deref().map(|h| clipped(h, MAX_TEXT_CHARS)),
            source,
            labels,
            related,
            note: false,
        }
    }
}

/// `text`, cut to `max` characters with `…` when it is longer.
fn clipped(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

impl fmt::Display for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rendered {}

impl miette::Diagnostic for Rendered {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            _ if self.note => miette::Severity::Advice,
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        (!self.note).then(|| Box::new(self.code) as Box<dyn fmt::Display>)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(self.related.iter().map(|r| r as &dyn miette::Diagnostic)))
        }
    }
}

/// Diagnostics in the order a reader wants them: by file, then position.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| d.span.map(|s| (s.file, s.start, s.end)));
}

/// At most `max` of the (sorted) diagnostics of each file, errors kept before warnings, and for
/// a file that had more, one W0002 at the first left out that counts them. Sorted again.
pub fn limit_per_file(diags: Vec<Diagnostic>, max: usize) -> Vec<Diagnostic> {
    let mut by_file: Vec<Vec<Diagnostic>> = Vec::new();
    for d in diags {
        let file = d.span.map(|s| s.file);
        match by_file.last_mut() {
            Some(group) if group.first().map(|g| g.span.map(|s| s.file)) == Some(file) => group.push(d),
            _ => by_file.push(vec![d]),
        }
    }
    let mut out = Vec::new();
    for group in by_file {
        if group.len() <= max {
            out.extend(group);
            continue;
        }
        let (mut kept, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) =
            group.into_iter().partition(Diagnostic::is_error);
        kept.extend(warnings);
        let left_out = kept.split_off(max);
        let errors = left_out.iter().filter(|d| d.is_error()).count();
        let first = left_out.iter().filter_map(|d| d.span).min_by_key(|s| (s.start, s.end));
        let kind = ErrorKind::NotShown { errors, warnings: left_out.len() - errors, shown: max };
        kept.push(match first {
            Some(span) => Diagnostic::new(kind, span).with_label("the first not shown"),
            None => Diagnostic::unspanned(kind),
        });
        out.extend(kept);
    }
    sort(&mut out);
    out
}
