//! What of a source file a rendered diagnostic shows. miette prints every line a label touches
//! in full, and panics past column 65,535; but a line of a pipeline may be megabytes long (a
//! generated list, a mutated file), and a diagnostic about it must still render, short. An
//! [`Excerpt`] holds the lines around a diagnostic's spans (the span lines and one line of
//! context either side, as miette shows), each cut to [`MAX_COLUMNS`] characters around what is
//! labelled, with `…` where text was cut, and a span over more than [`MAX_SPAN_LINES`] lines is
//! shown by its first line. It answers miette with the real line numbers and, for a label's
//! start, the real column, so the header still reads `file:line:column` of the original text.

use miette::{MietteError, MietteSpanContents, SourceCode, SourceSpan, SpanContents};

use crate::source::{SourceFile, Span};

/// Most characters of one source line shown.
pub const MAX_COLUMNS: usize = 200;

/// Most lines of one span shown; a longer span is shown by its first line.
pub const MAX_SPAN_LINES: usize = 8;

/// Characters shown before a label's start when a line is cut.
const LEAD: usize = MAX_COLUMNS / 4;

const CUT: &str = "…";

/// Lines of one source, cut to size, as miette reads them.
#[derive(Debug)]
pub(crate) struct Excerpt {
    name: String,
    text: String,
    /// 0-based line of the file where `text` starts.
    first_line: usize,
    /// Offset in `text` of each span's start, with its real 0-based line and column.
    starts: Vec<(usize, usize, usize)>,
}

/// Where one shown line of the file is in the excerpt.
struct LineMap {
    /// The line in the file: its start, and the end of its text (its `\n`, or the end of file).
    start: usize,
    end: usize,
    /// The part of the line kept, in file offsets, and where that part begins in the excerpt.
    kept: (usize, usize),
    kept_at: usize,
    /// Offsets in the excerpt of the line's start and of the end of its text.
    at: usize,
    end_at: usize,
}

impl Excerpt {
    /// The excerpt of `file` that shows `spans` (all in `file`), and each span in its offsets.
    pub(crate) fn new(file: &SourceFile, spans: &[Span]) -> (Excerpt, Vec<SourceSpan>) {
        let text = file.text.as_str();
        let spans: Vec<(usize, usize)> = spans.iter().map(|s| clip(text, s.start, s.end)).collect();
        let from = spans.iter().map(|s| s.0).min().unwrap_or(0);
        let to = spans.iter().map(|s| s.1).max().unwrap_or(0);
        let first = line_start(text, line_start(text, from).saturating_sub(1));
        let last = line_end(text, (line_end(text, to) + 1).min(text.len()));
        let first_line = text.as_bytes()[..first].iter().filter(|b| **b == b'\n').count();

        let mut out = String::new();
        let mut lines = Vec::new();
        let mut start = first;
        loop {
            let end = line_end(text, start);
            let anchor = anchor(&spans, start, end);
            let kept = window(text, start, end, anchor);
            let at = out.len();
            if kept.0 > start {
                out.push_str(CUT);
            }
            let kept_at = out.len();
            out.push_str(&text[kept.0..kept.1]);
            if kept.1 < end {
                out.push_str(CUT);
            }
            let end_at = out.len();
            lines.push(LineMap { start, end, kept, kept_at, at, end_at });
            if end >= last || end >= text.len() {
                break;
            }
            out.push('\n');
            start = end + 1;
        }
        if last < text.len() {
            out.push('\n');
        }

        let map = |offset: usize| match lines.iter().find(|l| l.start <= offset && offset <= l.end).or(lines.last()) {
            Some(line) if offset < line.kept.0 => line.at,
            Some(line) if offset > line.kept.1 => line.end_at,
            Some(line) => line.kept_at + (offset - line.kept.0),
            None => 0,
        };
        let mapped: Vec<SourceSpan> = spans
            .iter()
            .map(|(s, e)| {
                let (s, e) = (map(*s), map(*e));
                SourceSpan::new(s.into(), e.max(s) - s)
            })
            .collect();
        let starts = spans
            .iter()
            .zip(&mapped)
            .map(|((s, _), m)| {
                let (line, column) = file.line_col(*s);
                (m.offset(), line - 1, column - 1)
            })
            .collect();
        (Excerpt { name: file.name.clone(), text: out, first_line, starts }, mapped)
    }
}

/// A span within the text and on character boundaries, and cut to its first line when it runs
/// over more than [`MAX_SPAN_LINES`].
fn clip(text: &str, start: usize, end: usize) -> (usize, usize) {
    let floor = |mut i: usize| {
        i = i.min(text.len());
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let (start, end) = (floor(start), floor(end));
    let end = end.max(start);
    if text[start..end].bytes().filter(|b| *b == b'\n').count() >= MAX_SPAN_LINES {
        (start, line_end(text, start))
    } else {
        (start, end)
    }
}

fn line_start(text: &str, offset: usize) -> usize {
    text[..offset].rfind('\n').map_or(0, |i| i + 1)
}

/// The end of the text of the line at `offset`: its `\n`, or the end of the file.
fn line_end(text: &str, offset: usize) -> usize {
    text[offset..].find('\n').map_or(text.len(), |i| offset + i)
}

/// Where the window of a long line is placed: at the first span's start when it is on the line,
/// else at the first span start or end that is.
fn anchor(spans: &[(usize, usize)], start: usize, end: usize) -> usize {
    let on = |o: &usize| (start..=end).contains(o);
    spans
        .first()
        .map(|s| s.0)
        .filter(on)
        .or_else(|| spans.iter().map(|s| s.0).find(on))
        .or_else(|| spans.iter().map(|s| s.1).find(on))
        .unwrap_or(start)
}

/// The part of `text[start..end]` shown: all of it when it is at most [`MAX_COLUMNS`]
/// characters, else that many from a little before `anchor`.
fn window(text: &str, start: usize, end: usize, anchor: usize) -> (usize, usize) {
    let line = &text[start..end];
    let chars = line.chars().count();
    if chars <= MAX_COLUMNS {
        return (start, end);
    }
    let anchor_char = line[..anchor - start].chars().count();
    let first = anchor_char.saturating_sub(LEAD).min(chars - MAX_COLUMNS);
    let offset_of = |n: usize| line.char_indices().nth(n).map_or(end, |(i, _)| start + i);
    (offset_of(first), offset_of(first + MAX_COLUMNS))
}

impl SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let inner = self.text.as_str().read_span(span, context_lines_before, context_lines_after)?;
        let real = self.starts.iter().find(|(at, _, _)| *at == span.offset() && context_lines_before == 0);
        let (line, column) = match real {
            Some((_, line, column)) => (*line, *column),
            None => (inner.line() + self.first_line, inner.column()),
        };
        let contents = MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            line,
            column,
            inner.line_count() + self.first_line,
        )
        .with_language("medgen");
        Ok(Box::new(contents))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceMap;

    fn excerpt(text: &str, spans: &[(usize, usize)]) -> (String, Vec<(usize, usize)>) {
        let mut sources = SourceMap::new();
        let id = sources.add("t.mg", None, text);
        let spans: Vec<Span> = spans.iter().map(|(s, e)| Span::new(id, *s, *e)).collect();
        let (ex, mapped) = Excerpt::new(sources.get(id), &spans);
        (ex.text, mapped.iter().map(|m| (m.offset(), m.offset() + m.len())).collect())
    }

    #[test]
    fn short_lines_are_kept_with_one_line_of_context() {
        let text = "a\nb\nc = 1\nd\ne\n";
        let (shown, spans) = excerpt(text, &[(4, 5)]);
        assert_eq!(shown, "b\nc = 1\nd\n");
        assert_eq!(&shown[spans[0].0..spans[0].1], "c");
    }

    #[test]
    fn a_long_line_is_cut_around_the_span() {
        let text = format!("p\n{}x{}\nq", "a".repeat(70_000), "b".repeat(70_000));
        let (shown, spans) = excerpt(&text, &[(70_002, 70_003)]);
        assert!(shown.lines().all(|l| l.chars().count() <= MAX_COLUMNS + 2), "{shown}");
        assert_eq!(&shown[spans[0].0..spans[0].1], "x");
        assert!(shown.contains(&format!("{CUT}{}x", "a".repeat(LEAD))));
    }

    #[test]
    fn a_span_over_many_lines_is_shown_by_its_first() {
        let text = format!("x = [\n{}]\n", "1,\n".repeat(100));
        let (shown, spans) = excerpt(&text, &[(4, text.len() - 1)]);
        assert_eq!(shown.lines().count(), 2);
        assert_eq!(&shown[spans[0].0..spans[0].1], "[");
    }
}
