//! Text to syntax tree. pest does the grammar (`medgen.pest`); this file builds the AST with
//! spans, folds operators by precedence, and recovers after a syntax error so one run reports
//! every broken declaration of a file, not just the first.
//!
//! Parsing never panics and never recurses without bound: brackets nested deeper than
//! [`MAX_DEPTH`] are rejected before pest sees the text, and operator chains are folded with
//! explicit stacks and the same depth limit.

use pest::iterators::{Pair, Pairs};
use pest::Parser as _;

use super::ast::*;
use super::expected;
use crate::diagnostic::Diagnostic;
use crate::errors::ErrorKind;
use crate::source::{FileId, Span};

#[derive(pest_derive::Parser)]
#[grammar = "syntax/medgen.pest"]
pub(crate) struct Grammar;

/// Deepest nesting of brackets, and of operators in one expression, that a file may have.
pub const MAX_DEPTH: usize = 64;

/// Parses a whole file. Returns what could be parsed (items of broken declarations are left
/// out) and a diagnostic for each broken declaration.
pub fn parse_file(file: FileId, text: &str) -> (File, Vec<Diagnostic>) {
    pest::set_error_detail(true);
    let mut out = File { items: Vec::new(), comments: Vec::new(), broken: Vec::new() };
    if let Some(offset) = too_deep(text) {
        let diag = Diagnostic::new(ErrorKind::TooDeep { limit: MAX_DEPTH }, Span::new(file, offset, offset + 1));
        return (out, vec![diag]);
    }
    let mut diags = Vec::new();
    let mut start = 0;
    while start < text.len() || (start == 0 && text.is_empty()) {
        let err_pos = match Grammar::parse(Rule::file, &text[start..]) {
            Ok(pairs) => {
                build(file, start, pairs, &mut out, &mut diags);
                break;
            }
            Err(e) => start + error_offset(&e),
        };
        // Keep what parses before the broken declaration, report it, resume at the next one.
        let decl_start = segment_start(text, start, err_pos);
        if decl_start > start {
            match Grammar::parse(Rule::file, &text[start..decl_start]) {
                Ok(pairs) => build(file, start, pairs, &mut out, &mut diags),
                Err(_) => diags.push(syntax_error(file, text, start, decl_start)),
            }
        }
        let resume = next_segment(text, err_pos.max(decl_start + 1));
        diags.push(syntax_error(file, text, decl_start, resume));
        out.broken.extend(declared_names(file, text, decl_start, resume));
        start = resume;
    }
    (out, diags)
}

/// Adds the items and comments of a successfully parsed chunk starting at `offset`.
fn build(file: FileId, offset: usize, mut pairs: Pairs<'_, Rule>, out: &mut File, diags: &mut Vec<Diagnostic>) {
    let top = pairs.next().expect("the file rule matched");
    for p in top.clone().into_inner().flatten().filter(|p| p.as_rule() == Rule::COMMENT) {
        let span = p.as_span();
        out.comments.push(Comment {
            text: p.as_str().trim_end().to_string(),
            span: Span::new(file, offset + span.start(), offset + span.end()),
        });
    }
    let mut b = Builder { file, offset, diags: Vec::new() };
    for p in inner(top) {
        if p.as_rule() != Rule::EOI {
            out.items.extend(b.item(p));
        }
    }
    diags.extend(b.diags);
}

fn error_offset(e: &pest::error::Error<Rule>) -> usize {
    match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    }
}

fn syntax_error(file: FileId, text: &str, start: usize, end: usize) -> Diagnostic {
    let err = Grammar::parse(Rule::file, &text[start..end]).err();
    match err {
        Some(e) => expected::describe(file, text, start, &e),
        // Unreachable in practice (the chunk failed before); report the chunk as a whole.
        None => Diagnostic::new(
            ErrorKind::Syntax { expected: "a declaration".into(), found: "something else".into(), hint: None },
            Span::new(file, start, end),
        ),
    }
}

/// Where the top-level declaration containing `pos` starts: the last line at or before `pos`
/// that begins, in column 0, with a declaration keyword.
fn segment_start(text: &str, floor: usize, pos: usize) -> usize {
    let mut best = floor;
    for (offset, line) in line_starts(text) {
        if offset > pos {
            break;
        }
        if offset >= floor && starts_declaration(line) {
            best = offset;
        }
    }
    best
}

/// The first line after `pos` that starts a declaration, or the end of the text.
fn next_segment(text: &str, pos: usize) -> usize {
    line_starts(text)
        .find(|(offset, line)| *offset >= pos && starts_declaration(line))
        .map_or(text.len(), |(offset, _)| offset)
}

fn line_starts(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = 0;
    text.split_inclusive('\n').map(move |line| {
        let start = offset;
        offset += line.len();
        (start, line)
    })
}

/// Names that lines of `text[start..end]` declare, read without the grammar: `stage NAME`,
/// `dataset NAME` and `NAME =` at the start of a line.
fn declared_names(file: FileId, text: &str, start: usize, end: usize) -> Vec<Ident> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = Vec::new();
    for (offset, line) in line_starts(text).filter(|(o, _)| (start..end).contains(o)) {
        let (skip, rest) = match ["stage ", "dataset "].iter().find_map(|kw| line.strip_prefix(kw)) {
            Some(rest) => (line.len() - rest.len(), rest),
            None => (0, line),
        };
        let lead = rest.len() - rest.trim_start().len();
        let name: String = rest.trim_start().chars().take_while(|c| is_name(*c)).collect();
        let after = rest.trim_start()[name.len()..].trim_start();
        if !name.is_empty() && (skip > 0 || (lead == 0 && after.starts_with('='))) {
            let at = offset + skip + lead;
            names.push(Ident { name: name.clone(), span: Span::new(file, at, at + name.len()) });
        }
    }
    names
}

fn starts_declaration(line: &str) -> bool {
    ["pipeline", "use", "dataset", "stage"]
        .iter()
        .any(|kw| line.strip_prefix(kw).is_some_and(|rest| rest.starts_with([' ', '\t'])))
}

/// The offset of the first bracket nested deeper than [`MAX_DEPTH`], ignoring strings and comments.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_comment {
            in_comment = c != '\n';
        } else if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' | '\n' => in_string = false,
                _ => {}
            }
        } else {
            match c {
                '#' => in_comment = true,
                '"' => in_string = true,
                '(' | '[' | '{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Some(i);
                    }
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// Parses a lone value: `text[offset..]`, the right-hand side of `--set stage.param=VALUE`.
pub fn parse_value(file: FileId, text: &str, offset: usize) -> Result<Expr, Vec<Diagnostic>> {
    pest::set_error_detail(true);
    let body = &text[offset..];
    if let Some(at) = too_deep(body) {
        let at = offset + at;
        return Err(vec![Diagnostic::new(ErrorKind::TooDeep { limit: MAX_DEPTH }, Span::new(file, at, at + 1))]);
    }
    let mut pairs =
        Grammar::parse(Rule::value_only, body).map_err(|e| vec![expected::describe(file, text, offset, &e)])?;
    let top = pairs.next().expect("value_only matched");
    let expr = inner(top).find(|p| p.as_rule() == Rule::expr).expect("value_only holds an expr");
    let mut b = Builder { file, offset, diags: Vec::new() };
    match b.top_expr(expr) {
        Some(e) if b.diags.is_empty() => Ok(e),
        _ => Err(b.diags),
    }
}

/// The children of a pair, without comments (they are collected separately).
fn inner(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner().filter(|p| p.as_rule() != Rule::COMMENT)
}

struct Builder {
    file: FileId,
    /// Offset of the parsed chunk in the file.
    offset: usize,
    diags: Vec<Diagnostic>,
}

impl Builder {
    /// The span of a pair's code. pest lets a rule run on over the whitespace and comments it
    /// skipped before an optional part that then did not match (`x = 1  # note` would end
    /// after the note); those are trimmed off.
    fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let start = pair.as_span().start();
        let text = pair.as_str();
        let comments: Vec<(usize, usize)> = pair
            .clone()
            .into_inner()
            .flatten()
            .filter(|p| p.as_rule() == Rule::COMMENT)
            .map(|p| (p.as_span().start() - start, p.as_span().end() - start))
            .collect();
        let mut len = text.len();
        loop {
            len = text[..len].trim_end().len();
            match comments.iter().find(|(_, end)| *end == len) {
                Some((comment_start, _)) => len = *comment_start,
                None => break,
            }
        }
        Span::new(self.file, self.offset + start, self.offset + start + len)
    }

    fn ident(&self, pair: Pair<'_, Rule>) -> Ident {
        Ident { name: pair.as_str().to_string(), span: self.span(&pair) }
    }

    fn item(&mut self, pair: Pair<'_, Rule>) -> Option<Item> {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::pipeline_decl => {
                let name = self.ident(inner(pair).next()?);
                Some(Item::Pipeline { name, span })
            }
            Rule::use_decl => {
                let s = inner(pair).next()?;
                let path_span = self.span(&s);
                let (path, _) = self.string(s);
                Some(Item::Use { path, path_span, span })
            }
            Rule::binding => self.binding(pair).map(Item::Binding),
            Rule::dataset_decl | Rule::stage_decl => {
                let keyword =
                    if pair.as_rule() == Rule::dataset_decl { DeclKeyword::Dataset } else { DeclKeyword::Stage };
                let mut parts = inner(pair);
                let name = self.ident(parts.next()?);
                let kind = self.ident(parts.next()?);
                let mut args = None;
                let mut block = None;
                for p in parts {
                    match p.as_rule() {
                        Rule::args => args = Some(self.top_args(p)),
                        Rule::block => block = Some(self.block(p)),
                        _ => {}
                    }
                }
                Some(Item::Decl(Decl { keyword, name, kind, args, block, span }))
            }
            _ => None,
        }
    }

    fn binding(&mut self, pair: Pair<'_, Rule>) -> Option<Binding> {
        let span = self.span(&pair);
        let mut parts = inner(pair);
        let name = self.ident(parts.next()?);
        let value = self.top_expr(parts.next()?)?;
        Some(Binding { name, value, span })
    }

    fn block(&mut self, pair: Pair<'_, Rule>) -> Block {
        let span = self.span(&pair);
        let mut items = Vec::new();
        for p in inner(pair) {
            let item_span = self.span(&p);
            let item = match p.as_rule() {
                Rule::binding => self.binding(p).map(BlockItem::Assign),
                Rule::sweep => {
                    let mut parts = inner(p);
                    let param = parts.next().map(|i| self.ident(i));
                    let list = parts.next();
                    match (param, list) {
                        (Some(param), Some(list)) => {
                            let list_span = self.span(&list);
                            let values = inner(list).filter_map(|e| self.top_expr(e)).collect();
                            Some(BlockItem::Sweep(Sweep { param, values, list_span, span: item_span }))
                        }
                        _ => None,
                    }
                }
                Rule::expect => {
                    let mut parts = inner(p);
                    let lhs = parts.next().and_then(|e| self.top_expr(e));
                    let op_pair = parts.next();
                    let rhs = parts.next().and_then(|e| self.top_expr(e));
                    match (lhs, op_pair, rhs) {
                        (Some(lhs), Some(op_pair), Some(rhs)) => {
                            let op_span = self.span(&op_pair);
                            let op = match op_pair.as_str() {
                                "<" => CmpOp::Lt,
                                "<=" => CmpOp::Le,
                                ">" => CmpOp::Gt,
                                ">=" => CmpOp::Ge,
                                "==" => CmpOp::Eq,
                                _ => CmpOp::Ne,
                            };
                            Some(BlockItem::Expect(Expect { lhs, op, op_span, rhs, span: item_span }))
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            items.extend(item);
        }
        Block { items, span }
    }

    fn args(&mut self, pair: Pair<'_, Rule>) -> Args {
        let span = self.span(&pair);
        let mut args = Vec::new();
        for arg in inner(pair) {
            let mut parts: Vec<_> = inner(arg).collect();
            let value = parts.pop().and_then(|e| self.expr(e));
            let name = parts.pop().map(|n| self.ident(n));
            if let Some(value) = value {
                args.push(Arg { name, value });
            }
        }
        Args { args, span }
    }

    /// An expression that is not part of another: its whole tree must stay within
    /// [`MAX_DEPTH`], so later passes may recurse over it safely.
    fn top_expr(&mut self, pair: Pair<'_, Rule>) -> Option<Expr> {
        let e = self.expr(pair)?;
        if tree_depth(&e) > MAX_DEPTH {
            self.diags.push(Diagnostic::new(ErrorKind::TooDeep { limit: MAX_DEPTH }, e.span));
            return None;
        }
        Some(e)
    }

    fn top_args(&mut self, pair: Pair<'_, Rule>) -> Args {
        let args = self.args(pair);
        let (ok, deep): (Vec<_>, Vec<_>) = args.args.into_iter().partition(|a| tree_depth(&a.value) <= MAX_DEPTH);
        for a in deep {
            self.diags.push(Diagnostic::new(ErrorKind::TooDeep { limit: MAX_DEPTH }, a.value.span));
        }
        Args { args: ok, span: args.span }
    }

    /// Folds `operand (op operand)*` by precedence with explicit stacks: no recursion per
    /// operator, and a chain deeper than [`MAX_DEPTH`] is an error, not a deep tree.
    fn expr(&mut self, pair: Pair<'_, Rule>) -> Option<Expr> {
        debug_assert_eq!(pair.as_rule(), Rule::expr);
        let mut operands: Vec<(Expr, usize)> = Vec::new();
        let mut ops: Vec<BinOp> = Vec::new();
        for p in inner(pair) {
            let op = match p.as_rule() {
                Rule::add => BinOp::Add,
                Rule::sub => BinOp::Sub,
                Rule::mul => BinOp::Mul,
                Rule::div => BinOp::Div,
                _ => {
                    operands.push((self.operand(p)?, 0));
                    continue;
                }
            };
            while ops.last().is_some_and(|top| top.precedence() >= op.precedence()) {
                self.reduce(&mut operands, &mut ops)?;
            }
            ops.push(op);
        }
        while !ops.is_empty() {
            self.reduce(&mut operands, &mut ops)?;
        }
        operands.pop().map(|(e, _)| e)
    }

    fn reduce(&mut self, operands: &mut Vec<(Expr, usize)>, ops: &mut Vec<BinOp>) -> Option<()> {
        let op = ops.pop()?;
        let (rhs, rd) = operands.pop()?;
        let (lhs, ld) = operands.pop()?;
        let depth = ld.max(rd) + 1;
        let span = lhs.span.to(rhs.span);
        if depth > MAX_DEPTH {
            self.diags.push(Diagnostic::new(ErrorKind::TooDeep { limit: MAX_DEPTH }, span));
            return None;
        }
        operands.push((Expr { kind: ExprKind::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }, span }, depth));
        Some(())
    }

    fn operand(&mut self, pair: Pair<'_, Rule>) -> Option<Expr> {
        let span = self.span(&pair);
        let mut parts: Vec<_> = inner(pair).collect();
        let primary = self.primary(parts.pop()?)?;
        if parts.is_empty() {
            Some(primary)
        } else {
            Some(Expr { kind: ExprKind::Neg(Box::new(primary)), span })
        }
    }

    fn primary(&mut self, pair: Pair<'_, Rule>) -> Option<Expr> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::int => {
                let raw = pair.as_str().to_string();
                match raw.replace('_', "").parse::<i64>() {
                    Ok(value) => ExprKind::Int { value, raw },
                    Err(_) => {
                        self.diags.push(Diagnostic::new(ErrorKind::IntTooLarge, span));
                        return None;
                    }
                }
            }
            Rule::float => {
                let raw = pair.as_str().to_string();
                match raw.replace('_', "").parse::<f64>() {
                    Ok(value) if value.is_finite() => ExprKind::Float { value, raw },
                    _ => {
                        self.diags.push(Diagnostic::new(ErrorKind::FloatNotFinite, span));
                        return None;
                    }
                }
            }
            Rule::bool => ExprKind::Bool(pair.as_str() == "true"),
            Rule::none => ExprKind::None,
            Rule::string => {
                let (value, raw) = self.string(pair);
                ExprKind::Str { value, raw }
            }
            Rule::path => ExprKind::Path(inner(pair).map(|i| self.ident(i)).collect()),
            Rule::list => ExprKind::List(inner(pair).filter_map(|e| self.expr(e)).collect()),
            Rule::record => {
                let mut fields = Vec::new();
                for f in inner(pair) {
                    let mut parts = inner(f);
                    let name = parts.next().map(|n| self.ident(n));
                    let value = parts.next().and_then(|e| self.expr(e));
                    if let (Some(name), Some(value)) = (name, value) {
                        fields.push(Field { name, value });
                    }
                }
                ExprKind::Record(fields)
            }
            Rule::call => {
                let mut parts = inner(pair);
                let func = self.ident(parts.next()?);
                let args = self.args(parts.next()?);
                ExprKind::Call { func, args }
            }
            Rule::group => ExprKind::Group(Box::new(self.expr(inner(pair).next()?)?)),
            _ => return None,
        };
        Some(Expr { kind, span })
    }

    /// A string literal's value (escapes resolved) and its body as written.
    fn string(&self, pair: Pair<'_, Rule>) -> (String, String) {
        let raw = inner(pair).next().map(|b| b.as_str().to_string()).unwrap_or_default();
        let mut value = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(other) => value.push(other),
                    None => {}
                }
            } else {
                value.push(c);
            }
        }
        (value, raw)
    }
}

/// Nesting depth of an expression tree, computed without recursion.
fn tree_depth(e: &Expr) -> usize {
    let mut max = 0;
    let mut stack = vec![(e, 1usize)];
    while let Some((e, d)) = stack.pop() {
        max = max.max(d);
        match &e.kind {
            ExprKind::List(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            ExprKind::Record(fields) => stack.extend(fields.iter().map(|f| (&f.value, d + 1))),
            ExprKind::Call { args, .. } => stack.extend(args.args.iter().map(|a| (&a.value, d + 1))),
            ExprKind::Neg(inner) | ExprKind::Group(inner) => stack.push((inner, d + 1)),
            ExprKind::Binary { lhs, rhs, .. } => stack.extend([(&**lhs, d + 1), (&**rhs, d + 1)]),
            _ => {}
        }
    }
    max
}
