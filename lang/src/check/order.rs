//! Which declarations depend on which, and an order that puts every declaration after what it
//! needs. Dependencies come from inputs, from references in values (`vae.latent_channels`,
//! also through constants) and from `{STAGE.OUTPUT}` placeholders in strings.

use std::collections::{BTreeMap, BTreeSet};

use crate::errors::ErrorKind;
use crate::signature::Type;
use crate::source::Span;
use crate::syntax::ast::{BlockItem, Decl, Expr, ExprKind};

use super::Checker;

/// A declaration being visited by [`Checker::order`]: its dependencies, how many of them are
/// visited, and the first circle found through them.
struct Visit {
    name: String,
    deps: Vec<String>,
    next: usize,
    cycle: Option<Vec<String>>,
}

/// Reserved placeholder prefixes of shell commands; any other `{a.b}` names stage `a`.
pub const PLACEHOLDER_SCOPES: [&str; 3] = ["in", "params", "out"];

/// `{a.b}` placeholders in a string, with their byte ranges.
pub fn placeholders(s: &str) -> Vec<(usize, usize, &str, &str)> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{' {
            if let Some(len) = s[i + 1..].find('}') {
                let body = &s[i + 1..i + 1 + len];
                if let Some((a, b)) = body.split_once('.') {
                    if is_ident(a) && is_ident(b) {
                        out.push((i, i + len + 2, a, b));
                        i += len + 2;
                        continue;
                    }
                }
            }
        }
        i += 1;
    }
    out
}

/// The span of a placeholder found at `start..end` of a string's value, when the string has no
/// escapes (its text is its value); the whole string's span otherwise.
pub fn placeholder_span(string: Span, value: &str, start: usize, end: usize) -> Span {
    if string.len() == value.len() + 2 {
        Span::new(string.file, string.start + 1 + start, string.start + 1 + end)
    } else {
        string
    }
}

fn is_ident(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Checker<'_> {
    /// Declarations this one depends on, each with the span of the first reference.
    pub(super) fn dependencies(&self, decl: &Decl) -> Vec<(String, Span)> {
        let mut exprs: Vec<&Expr> = Vec::new();
        if let Some(args) = &decl.args {
            exprs.extend(args.args.iter().map(|a| &a.value));
        }
        // Names chosen by the user (a shell stage's `outputs`) are not references, even when
        // one is spelt like a stage.
        let signature = self.registry.kind(&decl.kind.name).map(|k| k.signature());
        let is_name = |param: &str| {
            signature.and_then(|s| s.param(param)).is_some_and(|p| match &p.ty {
                Type::Name => true,
                Type::List { item, .. } => **item == Type::Name,
                _ => false,
            })
        };
        if let Some(block) = &decl.block {
            for item in &block.items {
                match item {
                    BlockItem::Assign(b) if is_name(&b.name.name) => {}
                    BlockItem::Assign(b) => exprs.push(&b.value),
                    BlockItem::Sweep(s) => exprs.extend(&s.values),
                    BlockItem::Expect(_) => {}
                }
            }
        }
        if let Some(overrides) = self.decl_overrides.get(&decl.name.name) {
            exprs.extend(overrides.iter().map(|(_, e)| e));
        }
        let mut deps: BTreeMap<String, Span> = BTreeMap::new();
        let mut seen_constants = BTreeSet::new();
        while let Some(e) = exprs.pop() {
            match &e.kind {
                ExprKind::Path(segs) => {
                    let head = &segs[0].name;
                    if let Some(c) = self.constants.get(head) {
                        if seen_constants.insert(head.clone()) {
                            exprs.push(&c.value);
                        }
                    } else if self.decl(head).is_some() {
                        deps.entry(head.clone()).or_insert(segs[0].span);
                    }
                }
                ExprKind::Str { value, .. } => {
                    for (start, end, scope, _) in placeholders(value) {
                        if !PLACEHOLDER_SCOPES.contains(&scope) && self.decl(scope).is_some() {
                            deps.entry(scope.to_string()).or_insert(placeholder_span(e.span, value, start, end));
                        }
                    }
                }
                ExprKind::List(items) => exprs.extend(items),
                ExprKind::Record(fields) => exprs.extend(fields.iter().map(|f| &f.value)),
                ExprKind::Call { args, .. } => exprs.extend(args.args.iter().map(|a| &a.value)),
                ExprKind::Neg(inner) | ExprKind::Group(inner) => exprs.push(inner),
                ExprKind::Binary { lhs, rhs, .. } => exprs.extend([&**lhs, &**rhs]),
                _ => {}
            }
        }
        deps.into_iter().collect()
    }

    /// Appends `root` and everything it depends on, upstream first, to `order`, and returns the
    /// first circle found on the way. Depth first, with an explicit stack: a chain of
    /// declarations may be as long as the file allows, and recursion would overflow.
    fn visit(&self, root: &str, state: &mut BTreeMap<String, bool>, order: &mut Vec<String>) -> Option<Vec<String>> {
        let mut stack: Vec<Visit> = Vec::new();
        let mut returned = self.enter(root, state, &mut stack);
        while let Some(top) = stack.last_mut() {
            if let Some(cycle) = returned.take() {
                top.cycle.get_or_insert(cycle);
            }
            match top.deps.get(top.next).cloned() {
                Some(dep) if dep == top.name => {
                    top.next += 1;
                    top.cycle.get_or_insert(vec![dep.clone(), dep]);
                }
                Some(dep) => {
                    top.next += 1;
                    returned = self.enter(&dep, state, &mut stack);
                }
                None => {
                    let Some(done) = stack.pop() else { break };
                    state.insert(done.name.clone(), true);
                    order.push(done.name);
                    returned = done.cycle;
                }
            }
        }
        returned
    }

    /// Starts visiting `name`: the circle it closes when it is being visited already, nothing
    /// when it is done or not a declaration; otherwise it goes on the stack.
    fn enter(&self, name: &str, state: &mut BTreeMap<String, bool>, stack: &mut Vec<Visit>) -> Option<Vec<String>> {
        match state.get(name) {
            Some(true) => return None,
            Some(false) => {
                let start = stack.iter().position(|v| v.name == name).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(|v| v.name.clone()).collect();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            None => {}
        }
        let decl = self.decl(name)?;
        state.insert(name.to_string(), false);
        let deps = self.dependencies(decl).into_iter().map(|(d, _)| d).collect();
        stack.push(Visit { name: name.to_string(), deps, next: 0, cycle: None });
        None
    }

    /// Declaration names, upstream first, in source order where the graph leaves a choice;
    /// reports each circle once, at its first declaration.
    pub(super) fn order(&mut self) -> Vec<String> {
        let mut order = Vec::new();
        let mut state: BTreeMap<String, bool> = BTreeMap::new();
        let mut cycles = Vec::new();
        let names: Vec<String> = self.decls.iter().map(|d| d.name.name.clone()).collect();
        for name in &names {
            if let Some(c) = self.visit(name, &mut state, &mut order) {
                cycles.push(c);
            }
        }
        for cycle in cycles {
            if let Some(d) = self.decl(&cycle[0]) {
                let span = d.name.span;
                for member in &cycle {
                    self.cyclic.insert(member.clone());
                }
                self.error(ErrorKind::Cycle { path: cycle }, span);
            }
        }
        order
    }
}
