//! Diagnostics are data: a [`Diagnostic`] is a stable [`Code`], a span, a message and a help
//! line. Each crate that raises diagnostics keeps an enum of what can go wrong and writes every
//! message in one `Display` match (`errors.rs` here, `pitfalls.rs` in medgen-stdlib), so raise
//! sites never format prose. Rendering to text with a caret under the span is done by miette.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};

use crate::source::{SourceMap, Span};

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
    /// Where; `None` only for problems that belong to no file (a missing file on the command line).
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

/// A diagnostic prepared for miette: the source of its file, and spans converted to offsets.
#[derive(Debug)]
struct Rendered {
    code: &'static str,
    severity: Severity,
    message: String,
    help: Option<String>,
    source: Option<NamedSource<String>>,
    labels: Vec<LabeledSpan>,
    related: Vec<Rendered>,
    /// A note on another diagnostic (in another file), not a problem of its own.
    note: bool,
}

impl Rendered {
    fn new(diag: &Diagnostic, sources: &SourceMap) -> Self {
        let mut labels = Vec::new();
        let mut related = Vec::new();
        if let Some(span) = diag.span {
            labels.push(LabeledSpan::new_primary_with_span(diag.label.clone(), to_miette(span)));
            for (other, note) in &diag.related {
                if other.file == span.file {
                    labels.push(LabeledSpan::new_with_span(Some(note.clone()), to_miette(*other)));
                } else {
                    related.push(Rendered {
                        code: diag.code.id,
                        severity: diag.severity(),
                        message: note.clone(),
                        help: None,
                        source: Some(named_source(sources, *other)),
                        labels: vec![LabeledSpan::new_primary_with_span(None, to_miette(*other))],
                        related: Vec::new(),
                        note: true,
                    });
                }
            }
        }
        Rendered {
            code: diag.code.id,
            severity: diag.severity(),
            message: diag.message.clone(),
            help: diag.help.clone(),
            source: diag.span.map(|s| named_source(sources, s)),
            labels,
            related,
            note: false,
        }
    }
}

fn named_source(sources: &SourceMap, span: Span) -> NamedSource<String> {
    let file = sources.get(span.file);
    NamedSource::new(file.name.clone(), file.text.clone()).with_language("medgen")
}

fn to_miette(span: Span) -> SourceSpan {
    SourceSpan::new(span.start.into(), span.len())
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
