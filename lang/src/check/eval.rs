//! Evaluating an expression against the type its position expects. A bare name means an enum
//! value or a constructor where the type wants one, and a constant or stage otherwise;
//! constants are expanded where they are used, so they take the type of each use; arithmetic
//! is folded with overflow and division checks; ranges, list lengths and record fields are
//! checked here. Errors point at the smallest span that is wrong.

use std::collections::BTreeMap;

use crate::diagnostic::Diagnostic;
use crate::errors::ErrorKind;
use crate::signature::{Bound, Ctor, Field, ParamDefault, ParamSig, Type};
use crate::source::Span;
use crate::suggest::nearest;
use crate::syntax::ast::{Args, BinOp, Expr, ExprKind, Ident};
use crate::value::{Float, Value};

use super::Checker;

#[derive(Clone, Copy, Debug)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Deepest evaluation: values nested in values and constants expanded in constants, counted
/// together. The parser bounds one expression ([`crate::syntax::MAX_DEPTH`]), but constants
/// that refer to constants could nest without end, and evaluating them would overflow the
/// stack; past this depth the value is reported (E0002) instead.
pub const MAX_EVAL_DEPTH: usize = 256;

impl Checker<'_> {
    /// Runs `f` one level deeper into a value, unless that is past [`MAX_EVAL_DEPTH`].
    fn deeper<T>(&mut self, span: Span, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        if self.depth >= MAX_EVAL_DEPTH {
            self.error(ErrorKind::TooDeepThroughConstants { limit: MAX_EVAL_DEPTH }, span);
            return None;
        }
        self.depth += 1;
        let value = f(self);
        self.depth -= 1;
        value
    }

    /// The value of `e` as a `ty`, or `None` after reporting why it is not one.
    pub(super) fn eval(&mut self, e: &Expr, ty: &Type) -> Option<Value> {
        self.deeper(e.span, |c| c.eval_here(e, ty))
    }

    fn eval_here(&mut self, e: &Expr, ty: &Type) -> Option<Value> {
        if let ExprKind::Group(inner) = &e.kind {
            return self.eval(inner, ty);
        }
        // A constant stands for its expression, evaluated as this position's type.
        if let ExprKind::Path(segs) = &e.kind {
            // A name chosen by the user (a shell output) is never a constant's value.
            if segs.len() == 1 && *ty != Type::Name && self.constants.contains_key(&segs[0].name) {
                return self.expand_constant(&segs[0], |c, expr| c.eval(expr, ty));
            }
        }
        match ty {
            Type::Optional(inner) => match &e.kind {
                ExprKind::None => Some(Value::None),
                _ => self.eval(e, inner),
            },
            Type::Int { .. } | Type::Float { .. } => self.eval_number(e, ty),
            Type::Scalar => match &e.kind {
                ExprKind::Bool(b) => Some(Value::Bool(*b)),
                ExprKind::Str { value, .. } => Some(Value::Str(value.clone())),
                _ => self.eval_number(e, &Type::Float { min: None, max: None }).map(|v| match (v, self.num(e)) {
                    (_, Some(Num::Int(i))) => Value::Int(i),
                    (v, _) => v,
                }),
            },
            Type::Bool => match &e.kind {
                ExprKind::Bool(b) => Some(Value::Bool(*b)),
                _ => self.by_reference(e, ty),
            },
            Type::Str | Type::Path(_) | Type::Template => match &e.kind {
                ExprKind::Str { value, .. } => {
                    if matches!(ty, Type::Template) {
                        self.check_template_stages(value, e.span);
                    }
                    Some(Value::Str(value.clone()))
                }
                _ => self.by_reference(e, ty),
            },
            Type::Name => match &e.kind {
                ExprKind::Path(segs) if segs.len() == 1 => Some(Value::Enum(segs[0].name.clone())),
                _ => self.mismatch(e, ty),
            },
            Type::Enum { of, values } => match &e.kind {
                ExprKind::Path(segs) if segs.len() == 1 && !self.is_decl(&segs[0].name) => {
                    let name = &segs[0].name;
                    if values.contains(&name.as_str()) {
                        Some(Value::Enum(name.clone()))
                    } else {
                        self.unknown_variant(name, of, values.iter().copied(), e.span)
                    }
                }
                // `none` is a literal, but where a choice is literally named `none` it means that.
                ExprKind::None if values.contains(&"none") => Some(Value::Enum("none".into())),
                _ => self.by_reference(e, ty),
            },
            Type::Variant { of, ctors } => match &e.kind {
                ExprKind::Path(segs) if segs.len() == 1 && !self.is_decl(&segs[0].name) => {
                    self.ctor(&segs[0], None, of, ctors, e.span)
                }
                ExprKind::Call { func, args } => self.ctor(func, Some(args), of, ctors, e.span),
                _ => self.by_reference(e, ty),
            },
            Type::List { item, min_len, max_len, unique } => {
                let ExprKind::List(items) = &e.kind else {
                    return self.by_reference(e, ty);
                };
                let values: Vec<Option<Value>> = items.iter().map(|i| self.eval(i, item)).collect();
                if items.len() < *min_len || max_len.is_some_and(|m| items.len() > m) {
                    let range = match max_len {
                        Some(m) if m == min_len => format!("exactly {m} items"),
                        Some(m) => format!("{min_len} to {m} items"),
                        None => format!("at least {min_len} item{}", if *min_len == 1 { "" } else { "s" }),
                    };
                    self.error(
                        ErrorKind::OutOfRange { value: format!("a list of {} items", items.len()), range },
                        e.span,
                    );
                    return None;
                }
                let values: Vec<Value> = values.into_iter().collect::<Option<_>>()?;
                if *unique {
                    for (i, v) in values.iter().enumerate() {
                        if values[..i].contains(v) {
                            self.error(ErrorKind::GivenTwice { name: v.to_string() }, items[i].span);
                            return None;
                        }
                    }
                }
                Some(Value::List(values))
            }
            Type::Record { of, fields } => {
                let ExprKind::Record(given) = &e.kind else {
                    return self.by_reference(e, ty);
                };
                let pairs: Vec<(&Ident, &Expr)> = given.iter().map(|f| (&f.name, &f.value)).collect();
                let args = self.bind_fields(of, fields, &pairs, e.span)?;
                Some(Value::Record(args))
            }
            Type::Map { value } => {
                let ExprKind::Record(given) = &e.kind else {
                    return self.by_reference(e, ty);
                };
                let mut out = BTreeMap::new();
                let mut ok = true;
                for f in given {
                    if out.contains_key(&f.name.name) {
                        self.error(ErrorKind::GivenTwice { name: f.name.name.clone() }, f.name.span);
                        ok = false;
                        continue;
                    }
                    match self.eval(&f.value, value) {
                        Some(v) => {
                            out.insert(f.name.name.clone(), v);
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(Value::Record(out))
            }
        }
    }

    fn is_decl(&self, name: &str) -> bool {
        self.decl(name).is_some()
    }

    pub(super) fn expand_constant<T>(
        &mut self,
        name: &Ident,
        f: impl FnOnce(&mut Self, &Expr) -> Option<T>,
    ) -> Option<T> {
        if self.expanding.contains(&name.name) {
            let start = self.expanding.iter().position(|n| *n == name.name).unwrap_or(0);
            let mut path = self.expanding[start..].to_vec();
            path.push(name.name.clone());
            self.error(ErrorKind::ConstantCycle { path }, name.span);
            return None;
        }
        let binding = self.constants.get(&name.name)?.clone();
        self.used_constants.insert(name.name.clone());
        self.expanding.push(name.name.clone());
        let before = self.diags.len();
        let v = f(self, &binding.value);
        self.expanding.pop();
        // A constant's value is checked where it is used: point at the use too.
        let note = format!("`{}` is used here", name.name);
        for d in &mut self.diags[before..] {
            if d.span.is_some_and(|s| {
                binding.span.start <= s.start && s.end <= binding.span.end && s.file == binding.span.file
            }) && !d.related.iter().any(|(s, _)| *s == name.span)
            {
                d.related.push((name.span, note.clone()));
            }
        }
        v
    }

    fn mismatch(&mut self, e: &Expr, ty: &Type) -> Option<Value> {
        let found = describe_expr(e);
        self.error(ErrorKind::TypeMismatch { expected: ty.describe(), found }, e.span);
        None
    }

    fn unknown_variant<'s>(
        &mut self,
        name: &str,
        of: &str,
        options: impl Iterator<Item = &'s str> + Clone,
        span: Span,
    ) -> Option<Value> {
        if let Some(d) = self.registry.misplaced_value(of, name, span) {
            self.diags.push(d);
            return None;
        }
        let suggestion = nearest(name, options.clone());
        let options = options.map(str::to_string).collect();
        self.error(
            ErrorKind::UnknownVariant { value: name.to_string(), of: of.to_string(), suggestion, options },
            span,
        );
        None
    }

    /// A value reached through `stage.field` (or a constant holding one), checked against `ty`.
    fn by_reference(&mut self, e: &Expr, ty: &Type) -> Option<Value> {
        let ExprKind::Path(segs) = &e.kind else {
            return self.mismatch(e, ty);
        };
        let value = self.field_value(segs, e.span)?;
        if conforms(&value, ty) {
            Some(value)
        } else {
            self.error(ErrorKind::TypeMismatch { expected: ty.describe(), found: value.describe() }, e.span);
            None
        }
    }

    /// The checked value of `stage.field`. Reports unknown names and fields; returns `None`
    /// silently when the stage itself failed (its errors are already reported).
    pub(super) fn field_value(&mut self, segs: &[Ident], span: Span) -> Option<Value> {
        let head = &segs[0];
        if self.decl(&head.name).is_none() {
            self.unknown_name(head);
            return None;
        }
        let reference = || segs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(".");
        if self.reading_seed {
            self.error(ErrorKind::SeedFromStage { reference: reference() }, span);
            return None;
        }
        let Some(field) = segs.get(1) else {
            self.error(
                ErrorKind::TypeMismatch { expected: "a value".into(), found: format!("the stage `{}`", head.name) },
                span,
            );
            return None;
        };
        // Declarations are checked upstream first, so one not checked yet is not upstream of
        // this value (an `expect` threshold is no dependency): its value is unknown here.
        let Some(done) = self.done.get(&head.name) else {
            self.error(ErrorKind::CheckedLater { reference: reference(), stage: head.name.clone() }, span);
            return None;
        };
        let stage = done.as_ref()?;
        let outputs: Vec<&crate::signature::Outputs> = stage.instances.iter().map(|i| &i.outputs).collect();
        let known: Vec<String> = outputs.first().map(|o| o.fields.keys().cloned().collect()).unwrap_or_default();
        let values: Vec<Option<&Field>> = outputs.iter().map(|o| o.fields.get(&field.name)).collect();
        match values.first().copied().flatten() {
            None => {
                let suggestion = nearest(&field.name, known.iter().map(String::as_str));
                let kind = ErrorKind::UnknownField {
                    stage: head.name.clone(),
                    field: field.name.clone(),
                    suggestion,
                    fields: known,
                };
                self.error(kind, field.span);
                None
            }
            Some(Field::Value(v)) => {
                if segs.len() > 2 {
                    self.error(
                        ErrorKind::UnknownField {
                            stage: format!("{}.{}", head.name, field.name),
                            field: segs[2].name.clone(),
                            suggestion: None,
                            fields: vec![],
                        },
                        segs[2].span,
                    );
                    return None;
                }
                if values.iter().any(|o| *o != Some(&Field::Value(v.clone()))) {
                    let kind = ErrorKind::TypeMismatch {
                        expected: "a single value".into(),
                        found: format!("`{}.{}`, which differs between the sweep's instances", head.name, field.name),
                    };
                    self.error(kind, span);
                    return None;
                }
                Some(v.clone())
            }
            Some(Field::Data(_) | Field::File) if segs.len() > 2 => {
                let kind = ErrorKind::UnknownField {
                    stage: format!("{}.{}", head.name, field.name),
                    field: segs[2].name.clone(),
                    suggestion: None,
                    fields: vec![],
                };
                self.error(kind, segs[2].span);
                None
            }
            Some(Field::Data(kind)) => {
                let found = format!("`{}.{}`, {kind} (usable only as a stage input)", head.name, field.name);
                self.error(ErrorKind::TypeMismatch { expected: "a value".into(), found }, span);
                None
            }
            Some(Field::File) => {
                let found = format!(
                    "`{}.{}`, a file (usable in a shell command as `{{{}.{}}}`)",
                    head.name, field.name, head.name, field.name
                );
                self.error(ErrorKind::TypeMismatch { expected: "a value".into(), found }, span);
                None
            }
        }
    }

    /// `{STAGE.OUTPUT}` placeholders must name a stage and one of its files.
    fn check_template_stages(&mut self, s: &str, span: Span) {
        for (start, end, scope, field) in super::order::placeholders(s) {
            let span = super::order::placeholder_span(span, s, start, end);
            if super::order::PLACEHOLDER_SCOPES.contains(&scope) {
                continue;
            }
            if self.decl(scope).is_none() {
                let reason = format!("names no stage: `{scope}` is not declared");
                self.error(ErrorKind::PlaceholderUnknown { placeholder: format!("{scope}.{field}"), reason }, span);
                continue;
            }
            let Some(Some(stage)) = self.done.get(scope) else {
                continue;
            };
            let has_file = stage.instances.iter().any(|i| matches!(i.outputs.fields.get(field), Some(Field::File)));
            if !has_file {
                let files: Vec<&str> = stage.instances.first().map_or(vec![], |i| {
                    i.outputs.fields.iter().filter(|(_, f)| matches!(f, Field::File)).map(|(k, _)| k.as_str()).collect()
                });
                let reason = if files.is_empty() {
                    format!("names no file: `{scope}` writes no files")
                } else {
                    format!(
                        "names no file: `{scope}` writes {}",
                        files.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                    )
                };
                self.error(ErrorKind::PlaceholderUnknown { placeholder: format!("{scope}.{field}"), reason }, span);
            }
        }
    }

    fn ctor(&mut self, func: &Ident, args: Option<&Args>, of: &str, ctors: &[Ctor], span: Span) -> Option<Value> {
        let Some(ctor) = ctors.iter().find(|c| c.name == func.name) else {
            return self.unknown_variant(&func.name, of, ctors.iter().map(|c| c.name), func.span);
        };
        let mut pairs: Vec<(&Ident, &Expr)> = Vec::new();
        let mut positional = Vec::new();
        if let Some(args) = args {
            for a in &args.args {
                match &a.name {
                    Some(n) => pairs.push((n, &a.value)),
                    None => positional.push(&a.value),
                }
            }
        }
        if positional.len() > ctor.params.len() {
            let kind = ErrorKind::TooManyArguments { ctor: ctor.name.to_string(), max: ctor.params.len() };
            self.error(kind, positional[ctor.params.len()].span);
            return None;
        }
        let names: Vec<Ident> = ctor
            .params
            .iter()
            .zip(&positional)
            .map(|(p, e)| Ident { name: p.name.to_string(), span: e.span })
            .collect();
        let mut all: Vec<(&Ident, &Expr)> = names.iter().zip(positional.iter().copied()).collect();
        all.extend(pairs);
        let args = self.bind_fields(ctor.name, &ctor.params, &all, span)?;
        Some(Value::Ctor { name: ctor.name.to_string(), args })
    }

    /// Binds `name: value` pairs to parameter signatures: unknown names, repeats, types,
    /// required ones missing, defaults filled (`Derived` ones are left for the stage kind).
    fn bind_fields(
        &mut self,
        of: &str,
        sigs: &[ParamSig],
        given: &[(&Ident, &Expr)],
        span: Span,
    ) -> Option<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        let mut seen: BTreeMap<&str, Span> = BTreeMap::new();
        let mut ok = true;
        // Fields a misspelt one was taken for: "did you mean `val`?" says enough about them.
        let mut suggested: Vec<String> = Vec::new();
        for (name, expr) in given {
            let Some(sig) = sigs.iter().find(|s| s.name == name.name) else {
                let suggestion = nearest(&name.name, sigs.iter().map(|s| s.name));
                suggested.extend(suggestion.clone());
                self.error(
                    ErrorKind::UnknownParam { name: name.name.clone(), kind: of.to_string(), suggestion },
                    name.span,
                );
                ok = false;
                continue;
            };
            if let Some(first) = seen.get(name.name.as_str()) {
                let d = Diagnostic::new(ErrorKind::GivenTwice { name: name.name.clone() }, name.span)
                    .with_related(*first, "first given here");
                self.diags.push(d);
                ok = false;
                continue;
            }
            seen.insert(&name.name, name.span);
            match self.eval(expr, &sig.ty) {
                Some(v) => {
                    out.insert(sig.name.to_string(), v);
                }
                None => ok = false,
            }
        }
        for sig in sigs {
            if out.contains_key(sig.name) || seen.contains_key(sig.name) {
                continue;
            }
            match &sig.default {
                ParamDefault::Value(v) => {
                    out.insert(sig.name.to_string(), v.clone());
                }
                ParamDefault::Required => {
                    if !suggested.iter().any(|s| s == sig.name) {
                        self.error(ErrorKind::MissingParam { name: sig.name.to_string(), of: format!("`{of}`") }, span);
                    }
                    ok = false;
                }
                ParamDefault::Derived(_) => {}
            }
        }
        ok.then_some(out)
    }

    fn eval_number(&mut self, e: &Expr, ty: &Type) -> Option<Value> {
        let n = self.num(e)?;
        let value = match (ty, n) {
            (Type::Int { .. }, Num::Int(i)) => Value::Int(i),
            (Type::Int { .. }, Num::Float(f)) => {
                self.error(
                    ErrorKind::TypeMismatch {
                        expected: "an integer".into(),
                        found: format!("the number `{}`", Float(f)),
                    },
                    e.span,
                );
                return None;
            }
            (_, n) => Value::Float(n.as_f64()),
        };
        if !in_range(&value, ty) {
            let range = ty.range().unwrap_or_default();
            self.error(ErrorKind::OutOfRange { value: value.to_string(), range }, e.span);
            return None;
        }
        Some(value)
    }

    /// Folds a numeric expression. Reports non-numbers, overflow and division by zero.
    fn num(&mut self, e: &Expr) -> Option<Num> {
        self.deeper(e.span, |c| c.num_here(e))
    }

    fn num_here(&mut self, e: &Expr) -> Option<Num> {
        match &e.kind {
            ExprKind::Int { value, .. } => Some(Num::Int(*value)),
            ExprKind::Float { value, .. } => Some(Num::Float(*value)),
            ExprKind::Group(inner) => self.num(inner),
            ExprKind::Neg(inner) => match self.num(inner)? {
                Num::Int(i) => i.checked_neg().map(Num::Int).or_else(|| self.overflow(e.span)),
                Num::Float(f) => Some(Num::Float(-f)),
            },
            ExprKind::Binary { op, lhs, rhs } => {
                if !could_be_number(lhs) || !could_be_number(rhs) {
                    self.error(ErrorKind::NotANumber { op: op.as_str() }, e.span);
                    return None;
                }
                let (l, r) = (self.num(lhs), self.num(rhs));
                let (l, r) = (l?, r?);
                self.arith(*op, l, r, e.span)
            }
            ExprKind::Path(segs) if segs.len() == 1 && self.constants.contains_key(&segs[0].name) => {
                self.expand_constant(&segs[0], |c, expr| c.num(expr))
            }
            ExprKind::Path(segs) if self.decl(&segs[0].name).is_some() || segs.len() > 1 => {
                match self.field_value(segs, e.span)? {
                    crate::value::Value::Int(i) => Some(Num::Int(i)),
                    crate::value::Value::Float(f) => Some(Num::Float(f)),
                    other => {
                        self.error(
                            ErrorKind::TypeMismatch { expected: "a number".into(), found: other.describe() },
                            e.span,
                        );
                        None
                    }
                }
            }
            ExprKind::Path(segs) => {
                self.unknown_name(&segs[0]);
                None
            }
            _ => {
                self.error(ErrorKind::TypeMismatch { expected: "a number".into(), found: describe_expr(e) }, e.span);
                None
            }
        }
    }

    fn arith(&mut self, op: BinOp, l: Num, r: Num, span: Span) -> Option<Num> {
        match (l, r) {
            (Num::Int(a), Num::Int(b)) => {
                let v = match op {
                    BinOp::Add => a.checked_add(b),
                    BinOp::Sub => a.checked_sub(b),
                    BinOp::Mul => a.checked_mul(b),
                    BinOp::Div if b == 0 => {
                        self.error(ErrorKind::DivisionByZero, span);
                        return None;
                    }
                    // Exact integer division stays an integer; otherwise the result is a float.
                    // Both overflow only for `i64::MIN / -1`, which gives `None` here.
                    BinOp::Div => match a.checked_rem(b) {
                        Some(0) => a.checked_div(b),
                        Some(_) => return Some(Num::Float(a as f64 / b as f64)),
                        None => None,
                    },
                };
                v.map(Num::Int).or_else(|| self.overflow(span))
            }
            (l, r) => {
                let (a, b) = (l.as_f64(), r.as_f64());
                if op == BinOp::Div && b == 0.0 {
                    self.error(ErrorKind::DivisionByZero, span);
                    return None;
                }
                let v = match op {
                    BinOp::Add => a + b,
                    BinOp::Sub => a - b,
                    BinOp::Mul => a * b,
                    BinOp::Div => a / b,
                };
                if v.is_finite() {
                    Some(Num::Float(v))
                } else {
                    self.error(ErrorKind::FloatNotFinite, span);
                    None
                }
            }
        }
    }

    fn overflow(&mut self, span: Span) -> Option<Num> {
        self.error(ErrorKind::Overflow, span);
        None
    }
}

/// Whether an operand can be a number at all (names are checked when they are resolved).
fn could_be_number(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Group(inner) => could_be_number(inner),
        ExprKind::Int { .. }
        | ExprKind::Float { .. }
        | ExprKind::Neg(_)
        | ExprKind::Binary { .. }
        | ExprKind::Path(_) => true,
        _ => false,
    }
}

fn in_range(v: &Value, ty: &Type) -> bool {
    let within = |x: f64, min: &Option<Bound>, max: &Option<Bound>| {
        min.is_none_or(|b| if b.inclusive { x >= b.value } else { x > b.value })
            && max.is_none_or(|b| if b.inclusive { x <= b.value } else { x < b.value })
    };
    match (ty, v) {
        (Type::Int { min, max }, Value::Int(i)) => min.is_none_or(|m| *i >= m) && max.is_none_or(|m| *i <= m),
        (Type::Float { min, max }, v) => v.as_f64().is_some_and(|x| within(x, min, max)),
        (Type::Optional(inner), v) => v.is_none() || in_range(v, inner),
        _ => true,
    }
}

/// Whether a value reached by reference fits a type.
fn conforms(v: &Value, ty: &Type) -> bool {
    match (ty, v) {
        (Type::Optional(_), Value::None) => true,
        (Type::Optional(inner), v) => conforms(v, inner),
        (Type::Bool, Value::Bool(_)) | (Type::Str | Type::Path(_) | Type::Template, Value::Str(_)) => true,
        (Type::Int { .. }, Value::Int(_)) | (Type::Float { .. }, Value::Int(_) | Value::Float(_)) => in_range(v, ty),
        (Type::Scalar, Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Str(_)) => true,
        (Type::Enum { values, .. }, Value::Enum(s)) => values.contains(&s.as_str()),
        (Type::Name, Value::Enum(_)) => true,
        (Type::Variant { ctors, .. }, Value::Ctor { name, .. }) => ctors.iter().any(|c| c.name == name),
        (Type::List { item, min_len, max_len, .. }, Value::List(items)) => {
            items.len() >= *min_len
                && max_len.is_none_or(|m| items.len() <= m)
                && items.iter().all(|i| conforms(i, item))
        }
        (Type::Record { .. } | Type::Map { .. }, Value::Record(_)) => true,
        _ => false,
    }
}

/// How an expression reads in "found ...".
pub(super) fn describe_expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int { raw, .. } => format!("the integer `{raw}`"),
        ExprKind::Float { raw, .. } => format!("the number `{raw}`"),
        ExprKind::Bool(b) => format!("`{b}`"),
        ExprKind::None => "`none`".into(),
        ExprKind::Str { raw, .. } => format!("the string \"{raw}\""),
        ExprKind::Path(segs) => {
            format!("`{}`", segs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join("."))
        }
        ExprKind::List(_) => "a list".into(),
        ExprKind::Record(_) => "a record".into(),
        ExprKind::Call { func, .. } => format!("`{}(...)`", func.name),
        ExprKind::Neg(_) | ExprKind::Binary { .. } => "an arithmetic expression".into(),
        ExprKind::Group(inner) => describe_expr(inner),
    }
}

impl Checker<'_> {
    /// Checks what can be checked of a value whose type nothing fixes (an unused constant):
    /// arithmetic, references, and the same for every element.
    pub(super) fn check_untyped(&mut self, e: &Expr) {
        self.deeper(e.span, |c| {
            c.check_untyped_here(e);
            Some(())
        });
    }

    fn check_untyped_here(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Int { .. } | ExprKind::Float { .. } | ExprKind::Neg(_) | ExprKind::Binary { .. } => {
                self.num(e);
            }
            ExprKind::Path(segs) if segs.len() == 1 && self.constants.contains_key(&segs[0].name) => {
                self.expand_constant(&segs[0], |c, expr| {
                    c.check_untyped(expr);
                    Some(())
                });
            }
            ExprKind::Path(segs) if segs.len() > 1 || self.decl(&segs[0].name).is_some() => {
                self.field_value(segs, e.span);
            }
            ExprKind::Group(inner) => self.check_untyped(inner),
            ExprKind::List(items) => items.iter().for_each(|i| self.check_untyped(i)),
            ExprKind::Record(fields) => fields.iter().for_each(|f| self.check_untyped(&f.value)),
            ExprKind::Call { args, .. } => args.args.iter().for_each(|a| self.check_untyped(&a.value)),
            _ => {}
        }
    }
}
