//! The canonical formatter: one layout for every pipeline file, so that a diff shows what
//! changed and never how it was typed.
//!
//! The formatter prints the syntax tree, not the text, and refuses a file the parser could not
//! read completely: a broken declaration is left out of the tree, and its comments would be lost.
//!
//! Comments are not in the tree; the parser hands them over as a list of spans, and each one is
//! attached by position. Whatever the formatter lays out one unit per line (the items of the
//! file, the items of a `{ }` block, the elements of a broken list, record or argument list) has
//! slots between its units, and a comment in a slot is printed there: at the end of the previous
//! line when it was on the same line as the code before it (a trailing comment), on a line of its
//! own otherwise. A comment inside a unit but outside all of its brackets (`x = # why` before the
//! value) has no line of its own to go to, so it is printed on its own line just before the unit.
//! Positions are used rather than guesses about what a comment talks about because they survive
//! printing: a comment printed in a slot is found in the same slot when the output is read back,
//! which makes formatting idempotent.
//!
//! Trailing comments of consecutive lines are aligned in one column, two spaces after the
//! longest code among them.
//!
//! Breaking: a list, record or argument list is printed flat (`[a, b]`) when it holds no comment
//! and fits in [`MAX_WIDTH`] columns together with the code after it on its line; otherwise it
//! is broken, one element per line, indented one level deeper than the line that opened it, each
//! element followed by a comma, the closing bracket back at the opening line's indentation. The
//! elements are laid out by the same rule, so inner containers stay flat when they fit. The
//! choice depends only on the tree and on which brackets hold comments, never on how the input
//! was broken, so it too comes out the same the second time.

use std::ops::Range;

use crate::diagnostic::Diagnostic;
use crate::source::{normalise, FileId, Span};
use crate::syntax::ast::*;
use crate::syntax::parse_file;

/// Lines longer than this, trailing comments aside, break their lists, records and arguments.
const MAX_WIDTH: usize = 100;
/// Spaces per level of indentation.
const INDENT: usize = 2;
/// How a block with neither items nor comments is printed.
const EMPTY_BLOCK: &str = " {}";
/// What opens a block with something in it.
const OPEN_BLOCK: &str = " {";

/// Formats a pipeline file.
///
/// # Errors
///
/// A file with a syntax error is not formatted: its diagnostics are returned instead, with
/// spans into the text as [`crate::source::SourceMap::add`] stores it (BOM dropped, lone `\r`
/// read as `\n`), which is also how the output is laid out.
pub fn format_source(text: &str) -> Result<String, Vec<Diagnostic>> {
    let text = &*normalise(text);
    let (file, diags) = parse_file(FileId(0), text);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    let mut comments = file.comments;
    comments.sort_by_key(|c| c.span.start);
    Ok(align_trailing_comments(&Formatter { text, comments }.file(&file.items)))
}

/// Marks where a trailing comment starts while lines are built; the grammar rejects NUL in
/// any file, so the mark cannot collide with the file's own text.
const TRAIL_MARK: char = '\0';

/// Aligns the trailing comments of consecutive lines two columns after the longest code among
/// them, as the example pipelines are written; a line without one ends the run.
fn align_trailing_comments(text: &str) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let run = lines[i..].iter().take_while(|l| l.contains(TRAIL_MARK)).count();
        if run == 0 {
            out.push(lines[i].to_string());
            i += 1;
            continue;
        }
        let split: Vec<(&str, &str)> = lines[i..i + run].iter().filter_map(|l| l.split_once(TRAIL_MARK)).collect();
        let column = split.iter().map(|(code, _)| width(code)).max().unwrap_or(0) + 2;
        for (code, comment) in split {
            out.push(format!("{code}{}{comment}", " ".repeat(column - width(code))));
        }
        i += run;
    }
    out.join("\n")
}

struct Formatter<'t> {
    text: &'t str,
    /// Every comment of the file, by position.
    comments: Vec<Comment>,
}

/// Something printed starting on a line of its own: an item, a block item, or an element of a
/// broken container.
trait Unit {
    /// The bytes of the unit's code. Not always its AST span, which can run on over the
    /// whitespace and comments after a binding.
    fn range(&self) -> Range<usize>;
    /// The insides of the unit's outermost brackets: comments there are laid out by them.
    fn interiors(&self, out: &mut Vec<Range<usize>>);
}

/// A comment on a line of its own.
struct Note<'c> {
    /// Whether a blank line comes before it.
    blank: bool,
    comment: &'c Comment,
}

/// The comments between two units (or a bracket and a unit).
struct Slot<'c> {
    /// The comment on the same line as the code before the slot.
    trailing: Option<&'c Comment>,
    notes: Vec<Note<'c>>,
    /// Whether a blank line comes before the code after the slot.
    blank_after: bool,
}

/// Where the comments around one unit go.
struct Placed<'c> {
    /// Comments on lines of their own before the unit.
    before: Vec<Note<'c>>,
    /// Whether a blank line comes right before the unit.
    blank: bool,
    /// The comment at the end of the unit's last line.
    trailing: Option<&'c Comment>,
}

/// Where the comments of a sequence of units go.
struct Layout<'c> {
    /// The comment at the end of the line that opens the sequence (`[  # note`).
    opening: Option<&'c Comment>,
    units: Vec<Placed<'c>>,
    /// Comments on lines of their own after the last unit.
    closing: Vec<Note<'c>>,
}

impl<'c> Layout<'c> {
    /// Puts a trailing comment after the last unit so far, or after the opening bracket.
    fn attach(&mut self, trailing: Option<&'c Comment>) {
        if trailing.is_some() {
            match self.units.last_mut() {
                Some(placed) => placed.trailing = trailing,
                None => self.opening = trailing,
            }
        }
    }
}

/// Where an expression starts, and what follows it on its last line.
#[derive(Clone, Copy)]
struct Pos {
    /// Indentation of the line the expression starts on.
    indent: usize,
    /// Column the expression starts at.
    col: usize,
    /// Width of the code after the expression on the same line (`,` or ` {` or ` * 2`).
    suffix: usize,
}

impl Pos {
    /// After `prefix` at the start of a line indented by `indent`.
    fn line(indent: usize, prefix: &str, suffix: usize) -> Pos {
        Pos { indent, col: indent + width(prefix), suffix }
    }

    fn after(self, text: &str) -> Pos {
        Pos { col: self.col + width(text), ..self }
    }
}

/// An element of a list, record or argument list: a value, with its name for fields and named
/// arguments.
#[derive(Clone, Copy)]
struct Elem<'a> {
    label: Option<&'a Ident>,
    value: &'a Expr,
}

impl Elem<'_> {
    fn prefix(self) -> String {
        self.label.map(|l| format!("{}: ", l.name)).unwrap_or_default()
    }

    fn flat(self) -> String {
        self.prefix() + &flat(self.value)
    }
}

impl Formatter<'_> {
    fn file(&self, items: &[Item]) -> String {
        let layout = self.layout(items, 0..self.text.len(), false);
        let mut out = sequence(items, &layout, 0, has_block, |_, item| self.item(item));
        if !out.is_empty() {
            out.push('\n');
        }
        out
    }

    fn item(&self, item: &Item) -> String {
        match item {
            Item::Pipeline { name, .. } => format!("pipeline {}", name.name),
            Item::Use { path_span, .. } => {
                format!("use {}", &self.text[path_span.start..path_span.end])
            }
            Item::Binding(b) => self.binding(b, 0, 0),
            Item::Decl(d) => self.decl(d, 0),
        }
    }

    /// `name = value`, the name padded to `pad` columns.
    fn binding(&self, b: &Binding, indent: usize, pad: usize) -> String {
        let head = format!("{:<pad$} = ", b.name.name);
        let value = self.expr(&b.value, Pos::line(indent, &head, 0));
        head + &value
    }

    fn decl(&self, d: &Decl, indent: usize) -> String {
        let mut out = format!("{} {} = {}", d.keyword.as_str(), d.name.name, d.kind.name);
        let block = d.block.as_ref().map(|b| self.block(b, indent));
        if let Some(args) = &d.args {
            let suffix = match block.as_deref() {
                None => 0,
                Some(EMPTY_BLOCK) => EMPTY_BLOCK.len(),
                Some(_) => OPEN_BLOCK.len(),
            };
            let at = Pos::line(indent, &out, suffix);
            out += &self.container("(", ")", &arg_elems(&args.args), inside(args.span), at);
        }
        out + &block.unwrap_or_default()
    }

    fn block(&self, b: &Block, indent: usize) -> String {
        let interior = inside(b.span);
        if b.items.is_empty() && !self.has_comments(interior.clone()) {
            return EMPTY_BLOCK.to_string();
        }
        let layout = self.layout(&b.items, interior, true);
        let pads = name_widths(&b.items, &layout.units);
        let inner = indent + INDENT;
        let body = sequence(&b.items, &layout, inner, |_| false, |i, item| self.block_item(item, inner, pads[i]));
        bracketed(OPEN_BLOCK, &layout, &body, "}", indent)
    }

    fn block_item(&self, item: &BlockItem, indent: usize, pad: usize) -> String {
        match item {
            BlockItem::Assign(b) => self.binding(b, indent, pad),
            BlockItem::Sweep(s) => {
                let head = format!("sweep {} in ", s.param.name);
                let at = Pos::line(indent, &head, 0);
                head + &self.container("[", "]", &expr_elems(&s.values), inside(s.list_span), at)
            }
            BlockItem::Expect(e) => {
                let head = "expect ";
                head.to_string() + &self.infix(&e.lhs, e.op.as_str(), &e.rhs, Pos::line(indent, head, 0))
            }
        }
    }

    fn expr(&self, e: &Expr, at: Pos) -> String {
        match &e.kind {
            ExprKind::List(items) => self.container("[", "]", &expr_elems(items), inside(e.span), at),
            ExprKind::Record(fields) => self.container("{", "}", &field_elems(fields), inside(e.span), at),
            ExprKind::Call { func, args } => {
                let elems = arg_elems(&args.args);
                func.name.clone() + &self.container("(", ")", &elems, inside(args.span), at.after(&func.name))
            }
            ExprKind::Neg(inner) => "-".to_string() + &self.expr(inner, at.after("-")),
            ExprKind::Group(inner) => {
                let at = Pos { suffix: at.suffix + 1, ..at.after("(") };
                format!("({})", self.expr(inner, at))
            }
            ExprKind::Binary { op, lhs, rhs } => self.infix(lhs, op.as_str(), rhs, at),
            _ => flat(e),
        }
    }

    /// `lhs op rhs`, where the left side counts the right side, flat, as following it.
    fn infix(&self, lhs: &Expr, op: &str, rhs: &Expr, at: Pos) -> String {
        let op = format!(" {op} ");
        let left = self.expr(lhs, Pos { suffix: width(&op) + width(&flat(rhs)) + at.suffix, ..at });
        let right = self.expr(rhs, Pos { col: end_col(at.col, &left) + width(&op), ..at });
        format!("{left}{op}{right}")
    }

    /// A bracketed, comma-separated sequence: flat when it holds no comment and fits, broken
    /// otherwise. `interior` is the text between the brackets.
    fn container(&self, open: &str, close: &str, elems: &[Elem<'_>], interior: Range<usize>, at: Pos) -> String {
        let flat = format!("{open}{}{close}", join(elems.iter().map(|e| e.flat())));
        if !self.has_comments(interior.clone()) && at.col + width(&flat) + at.suffix <= MAX_WIDTH {
            return flat;
        }
        let layout = self.layout(elems, interior, true);
        let inner = at.indent + INDENT;
        let body = sequence(elems, &layout, inner, |_| false, |_, e| self.elem(*e, inner) + ",");
        bracketed(open, &layout, &body, close, at.indent)
    }

    /// An element of a broken container, alone on its line.
    fn elem(&self, e: Elem<'_>, indent: usize) -> String {
        let prefix = e.prefix();
        let value = self.expr(e.value, Pos::line(indent, &prefix, 1));
        prefix + &value
    }

    /// Places every comment of `interior` around `units`, the code found there.
    fn layout<U: Unit>(&self, units: &[U], interior: Range<usize>, may_trail: bool) -> Layout<'_> {
        let mut layout = Layout { opening: None, units: Vec::with_capacity(units.len()), closing: Vec::new() };
        let mut prev = interior.start;
        let mut may_trail = may_trail;
        for unit in units {
            let range = unit.range();
            let slot = self.slot(prev..range.start, may_trail);
            layout.attach(slot.trailing);
            let mut before = slot.notes;
            let mut blank = slot.blank_after;
            for comment in self.loose(unit) {
                before.push(Note { blank, comment });
                blank = false;
            }
            layout.units.push(Placed { before, blank, trailing: None });
            prev = range.end;
            may_trail = true;
        }
        let slot = self.slot(prev..interior.end, may_trail);
        layout.attach(slot.trailing);
        layout.closing = slot.notes;
        layout
    }

    /// The comments of a gap between two pieces of code. The first is trailing when no line
    /// break precedes it and `may_trail` (there is code before the gap).
    fn slot(&self, gap: Range<usize>, may_trail: bool) -> Slot<'_> {
        let mut slot = Slot { trailing: None, notes: Vec::new(), blank_after: false };
        let mut last = gap.start;
        for comment in self.comments_in(gap.clone()) {
            let breaks = self.line_breaks(last..comment.span.start);
            if breaks == 0 && may_trail {
                slot.trailing = Some(comment);
            } else {
                slot.notes.push(Note { blank: breaks > 1, comment });
            }
            last = comment.span.end;
        }
        slot.blank_after = self.line_breaks(last..gap.end) > 1;
        slot
    }

    /// The comments inside a unit but outside all of its brackets.
    fn loose<U: Unit>(&self, unit: &U) -> impl Iterator<Item = &Comment> {
        let mut interiors = Vec::new();
        unit.interiors(&mut interiors);
        self.comments_in(unit.range()).iter().filter(move |c| !interiors.iter().any(|r| r.contains(&c.span.start)))
    }

    /// The comments that start in `range`.
    fn comments_in(&self, range: Range<usize>) -> &[Comment] {
        let from = self.comments.partition_point(|c| c.span.start < range.start);
        let to = self.comments.partition_point(|c| c.span.start < range.end);
        &self.comments[from..to]
    }

    fn has_comments(&self, range: Range<usize>) -> bool {
        !self.comments_in(range).is_empty()
    }

    fn line_breaks(&self, range: Range<usize>) -> usize {
        self.text[range].bytes().filter(|&b| b == b'\n').count()
    }
}

impl Unit for Item {
    fn range(&self) -> Range<usize> {
        match self {
            Item::Pipeline { name, span } => span.start..name.span.end,
            Item::Use { path_span, span, .. } => span.start..path_span.end,
            Item::Binding(b) => binding_range(b),
            Item::Decl(d) => d.span.start..decl_end(d),
        }
    }

    fn interiors(&self, out: &mut Vec<Range<usize>>) {
        match self {
            Item::Pipeline { .. } | Item::Use { .. } => {}
            Item::Binding(b) => expr_interiors(&b.value, out),
            Item::Decl(d) => {
                out.extend(d.args.as_ref().map(|a| inside(a.span)));
                out.extend(d.block.as_ref().map(|b| inside(b.span)));
            }
        }
    }
}

impl Unit for BlockItem {
    fn range(&self) -> Range<usize> {
        match self {
            BlockItem::Assign(b) => binding_range(b),
            BlockItem::Sweep(s) => s.span.start..s.list_span.end,
            BlockItem::Expect(e) => e.span.start..e.rhs.span.end,
        }
    }

    fn interiors(&self, out: &mut Vec<Range<usize>>) {
        match self {
            BlockItem::Assign(b) => expr_interiors(&b.value, out),
            BlockItem::Sweep(s) => out.push(inside(s.list_span)),
            BlockItem::Expect(e) => {
                expr_interiors(&e.lhs, out);
                expr_interiors(&e.rhs, out);
            }
        }
    }
}

impl Unit for Elem<'_> {
    fn range(&self) -> Range<usize> {
        self.label.map_or(self.value.span.start, |l| l.span.start)..self.value.span.end
    }

    fn interiors(&self, out: &mut Vec<Range<usize>>) {
        expr_interiors(self.value, out);
    }
}

fn binding_range(b: &Binding) -> Range<usize> {
    b.name.span.start..b.value.span.end
}

/// Where a declaration's code ends: its block, its arguments, or its kind.
fn decl_end(d: &Decl) -> usize {
    match (&d.block, &d.args) {
        (Some(block), _) => block.span.end,
        (None, Some(args)) => args.span.end,
        (None, None) => d.kind.span.end,
    }
}

/// The insides of the outermost brackets of an expression.
fn expr_interiors(e: &Expr, out: &mut Vec<Range<usize>>) {
    match &e.kind {
        ExprKind::List(_) | ExprKind::Record(_) => out.push(inside(e.span)),
        ExprKind::Call { args, .. } => out.push(inside(args.span)),
        ExprKind::Neg(inner) | ExprKind::Group(inner) => expr_interiors(inner, out),
        ExprKind::Binary { lhs, rhs, .. } => {
            expr_interiors(lhs, out);
            expr_interiors(rhs, out);
        }
        _ => {}
    }
}

/// The text between the brackets a span starts and ends with.
fn inside(span: Span) -> Range<usize> {
    span.start + 1..span.end - 1
}

fn has_block(item: &Item) -> bool {
    matches!(item, Item::Decl(Decl { block: Some(_), .. }))
}

/// For each block item, the width its name is padded to: the longest name among the
/// assignments of its run. A blank line, a comment line or another kind of item ends a run.
fn name_widths(items: &[BlockItem], placed: &[Placed<'_>]) -> Vec<usize> {
    let mut widths = vec![0; items.len()];
    let mut start = 0;
    for i in 1..=items.len() {
        let run_ends = i == items.len()
            || !placed[i].before.is_empty()
            || placed[i].blank
            || assigned_name(&items[i]).is_none()
            || assigned_name(&items[i - 1]).is_none();
        if run_ends {
            let longest = items[start..i].iter().filter_map(assigned_name).map(width).max().unwrap_or(0);
            widths[start..i].fill(longest);
            start = i;
        }
    }
    widths
}

fn assigned_name(item: &BlockItem) -> Option<&str> {
    match item {
        BlockItem::Assign(b) => Some(&b.name.name),
        BlockItem::Sweep(_) | BlockItem::Expect(_) => None,
    }
}

fn expr_elems(items: &[Expr]) -> Vec<Elem<'_>> {
    items.iter().map(|value| Elem { label: None, value }).collect()
}

fn field_elems(fields: &[Field]) -> Vec<Elem<'_>> {
    fields.iter().map(|f| Elem { label: Some(&f.name), value: &f.value }).collect()
}

fn arg_elems(args: &[Arg]) -> Vec<Elem<'_>> {
    args.iter().map(|a| Elem { label: a.name.as_ref(), value: &a.value }).collect()
}

/// An expression on one line.
fn flat(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int { raw, .. } | ExprKind::Float { raw, .. } => raw.clone(),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::None => "none".to_string(),
        ExprKind::Str { raw, .. } => format!("\"{raw}\""),
        ExprKind::Path(parts) => parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join("."),
        ExprKind::List(items) => format!("[{}]", join(items.iter().map(flat))),
        ExprKind::Record(fields) => format!("{{{}}}", join(field_elems(fields).into_iter().map(Elem::flat))),
        ExprKind::Call { func, args } => {
            format!("{}({})", func.name, join(arg_elems(&args.args).into_iter().map(Elem::flat)))
        }
        ExprKind::Neg(inner) => format!("-{}", flat(inner)),
        ExprKind::Binary { op, lhs, rhs } => format!("{} {} {}", flat(lhs), op.as_str(), flat(rhs)),
        ExprKind::Group(inner) => format!("({})", flat(inner)),
    }
}

fn join(parts: impl Iterator<Item = String>) -> String {
    parts.collect::<Vec<_>>().join(", ")
}

/// Prints units one per line at `indent`, with the comments `layout` places around them.
/// A blank line separates two units when the source had one, and always before and after a
/// unit for which `apart` holds.
fn sequence<U>(
    units: &[U],
    layout: &Layout<'_>,
    indent: usize,
    apart: impl Fn(&U) -> bool,
    render: impl Fn(usize, &U) -> String,
) -> String {
    let mut out = String::new();
    let mut after_apart = false;
    for (i, (unit, placed)) in units.iter().zip(&layout.units).enumerate() {
        let mut blank = after_apart || apart(unit);
        for note in &placed.before {
            push_line(&mut out, blank || note.blank, indent, &note.comment.text);
            blank = false;
        }
        push_line(&mut out, blank || placed.blank, indent, &render(i, unit));
        if let Some(comment) = placed.trailing {
            trail(&mut out, comment);
        }
        after_apart = apart(unit);
    }
    let mut blank = after_apart;
    for note in &layout.closing {
        push_line(&mut out, blank || note.blank, indent, &note.comment.text);
        blank = false;
    }
    out
}

/// `open`, the body's lines, and `close` on a line of its own at `indent`.
fn bracketed(open: &str, layout: &Layout<'_>, body: &str, close: &str, indent: usize) -> String {
    let mut out = open.to_string();
    if let Some(comment) = layout.opening {
        trail(&mut out, comment);
    }
    if !body.is_empty() {
        out.push('\n');
        out.push_str(body);
    }
    out.push('\n');
    out.push_str(&" ".repeat(indent));
    out.push_str(close);
    out
}

/// Starts a line (after a blank one when `blank`, unless it is the first) and writes `text`.
fn push_line(out: &mut String, blank: bool, indent: usize, text: &str) {
    if !out.is_empty() {
        out.push('\n');
        if blank {
            out.push('\n');
        }
    }
    out.push_str(&" ".repeat(indent));
    out.push_str(text);
}

/// Ends the current line with a comment.
fn trail(out: &mut String, comment: &Comment) {
    out.push(TRAIL_MARK);
    out.push_str(&comment.text);
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// The column after `text` printed from column `col`.
fn end_col(col: usize, text: &str) -> usize {
    match text.rfind('\n') {
        Some(i) => width(&text[i + 1..]),
        None => col + width(text),
    }
}
