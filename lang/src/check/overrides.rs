//! `--set TARGET=VALUE` overrides. `TARGET` is `STAGE.PARAM` or a top-level constant; `VALUE`
//! is parsed as a value of the language and checked exactly like one written in the file. Each
//! override is its own source (named `--set`), so a bad one is reported with a caret too.

use crate::diagnostic::Diagnostic;
use crate::errors::ErrorKind;
use crate::source::{SourceMap, Span};
use crate::suggest::nearest;
use crate::syntax::ast::{Binding, Expr, Ident};
use crate::syntax::parse_value;

use super::Checker;

#[derive(Clone, Debug)]
pub struct Override {
    /// `None` for a top-level constant.
    pub stage: Option<Ident>,
    pub key: Ident,
    pub value: Expr,
}

pub(super) fn parse_all(sources: &mut SourceMap, raw: &[String], diags: &mut Vec<Diagnostic>) -> Vec<Override> {
    raw.iter().filter_map(|r| parse_one(sources, r, diags)).collect()
}

fn parse_one(sources: &mut SourceMap, raw: &str, diags: &mut Vec<Diagnostic>) -> Option<Override> {
    let file = sources.add("--set", None, raw);
    // Spans point into the text as the map keeps it (a BOM dropped, a lone `\r` a newline).
    let raw = sources.get(file).text.clone();
    let raw = raw.as_str();
    let bad = |diags: &mut Vec<Diagnostic>| {
        diags.push(Diagnostic::new(ErrorKind::OverrideSyntax { text: raw.to_string() }, Span::new(file, 0, raw.len())));
        None
    };
    let Some(eq) = raw.find('=') else {
        return bad(diags);
    };
    let target = &raw[..eq];
    let parts: Vec<&str> = target.split('.').collect();
    let is_ident = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if parts.len() > 2 || !parts.iter().all(|p| is_ident(p)) {
        return bad(diags);
    }
    let mut offset = 0;
    let mut idents = parts.iter().map(|p| {
        let id = Ident { name: p.to_string(), span: Span::new(file, offset, offset + p.len()) };
        offset += p.len() + 1;
        id
    });
    let first = idents.next()?;
    let second = idents.next();
    match parse_value(file, raw, eq + 1) {
        Ok(value) => Some(match second {
            Some(key) => Override { stage: Some(first), key, value },
            None => Override { stage: None, key: first, value },
        }),
        Err(errors) => {
            diags.extend(errors);
            None
        }
    }
}

impl Checker<'_> {
    pub(super) fn apply_overrides(&mut self, overrides: &[Override]) {
        for o in overrides {
            match &o.stage {
                None => {
                    let span = o.key.span.to(o.value.span);
                    let binding = Binding { name: o.key.clone(), value: o.value.clone(), span };
                    if self.decl(&o.key.name).is_some() {
                        self.error(ErrorKind::OverrideWholeStage { stage: o.key.name.clone() }, o.key.span);
                        continue;
                    }
                    // `seed` always exists (it defaults to 0); any other constant must be declared.
                    if !self.constants.contains_key(&o.key.name) && o.key.name != "seed" {
                        let names = self.constants.keys().map(String::as_str).chain(["seed"]);
                        let suggestion = nearest(&o.key.name, names);
                        self.error(
                            ErrorKind::OverrideUnknownStage { stage: o.key.name.clone(), suggestion },
                            o.key.span,
                        );
                        continue;
                    }
                    self.constants.insert(o.key.name.clone(), binding);
                }
                Some(stage) if self.decl(&stage.name).is_some() => {
                    self.decl_overrides.entry(stage.name.clone()).or_default().push((o.key.clone(), o.value.clone()));
                }
                Some(stage) => {
                    let suggestion = nearest(&stage.name, self.decls.iter().map(|d| d.name.name.as_str()));
                    self.error(ErrorKind::OverrideUnknownStage { stage: stage.name.clone(), suggestion }, stage.span);
                }
            }
        }
    }
}
