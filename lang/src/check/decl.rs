//! Checking one declaration against its kind's signature: inputs bound and typed, parameters
//! evaluated, defaults filled, sweeps expanded, and the kind's `derive` run once per instance
//! (per combination of this stage's sweep values and its inputs' variants).

use std::collections::BTreeMap;

use crate::checked::{CheckedExpect, CheckedInstance, CheckedStage, CheckedSweep, ResolvedInput};
use crate::diagnostic::Diagnostic;
use crate::errors::ErrorKind;
use crate::signature::{path_params, DeriveCx, Field, InputView, Origin, Param, ParamDefault, Signature, StageKind};
use crate::source::Span;
use crate::suggest::nearest;
use crate::syntax::ast::{BlockItem, Decl, Expect, Expr, ExprKind, Ident, Sweep};
use crate::value::Value;

use super::Checker;

/// Most instances one stage may expand to (sweep values × input variants).
pub const MAX_INSTANCES: usize = 1024;

/// A consistent choice of upstream instances, as instances of a stage are built up.
#[derive(Clone, Default)]
struct Upstream {
    /// Upstream stage → the index of its chosen instance.
    instances: BTreeMap<String, usize>,
    /// Swept stage → its sweep choice, over every swept ancestor.
    coords: BTreeMap<String, usize>,
    /// The sweep values of every swept ancestor, `stage.param = value`.
    label: Vec<(String, Value)>,
}

impl Upstream {
    /// This choice extended with instance `index` of `stage`, unless they disagree on the
    /// sweep choice of a common ancestor.
    fn with(&self, stage: &str, index: usize, inst: &CheckedInstance) -> Option<Upstream> {
        if inst.coords.iter().any(|(k, v)| self.coords.get(k).is_some_and(|c| c != v)) {
            return None;
        }
        let mut next = self.clone();
        next.instances.insert(stage.to_string(), index);
        next.coords.extend(inst.coords.iter().map(|(k, v)| (k.clone(), *v)));
        for (key, value) in &inst.label {
            if !next.label.iter().any(|(k, _)| k == key) {
                next.label.push((key.clone(), value.clone()));
            }
        }
        Some(next)
    }
}

/// What the file gives a declaration, sorted into inputs and parameters.
struct Given<'d> {
    inputs: BTreeMap<&'static str, &'d Expr>,
    params: Vec<(Ident, Expr, Origin)>,
    sweeps: Vec<&'d Sweep>,
    expects: Vec<&'d Expect>,
}

impl Checker<'_> {
    pub(super) fn check_decl(&mut self, name: &str, seed: i64) -> Option<CheckedStage> {
        if self.cyclic.contains(name) {
            return None;
        }
        let decl = self.decl(name)?.clone();
        let diags_before = self.diags.len();
        let Some(kind) = self.registry.kind(&decl.kind.name) else {
            let known: Vec<String> = self.registry.kinds().iter().map(|k| k.signature().kind.to_string()).collect();
            let suggestion = nearest(&decl.kind.name, known.iter().map(String::as_str));
            self.error(ErrorKind::UnknownKind { kind: decl.kind.name.clone(), suggestion, known }, decl.kind.span);
            return None;
        };
        let sig = kind.signature().clone();
        if sig.keyword != decl.keyword {
            let kind = ErrorKind::WrongKeyword {
                kind: sig.kind.to_string(),
                used: decl.keyword.as_str(),
                expected: sig.keyword.as_str(),
            };
            self.error(kind, decl.span.to(decl.kind.span));
        }
        let given = self.sort_given(&decl, &sig);
        let inputs = self.resolve_inputs(&decl, &sig, &given);
        let inputs_ok = inputs.len() == given.inputs.len();
        let params = self.resolve_params(&decl, &sig, &given);
        let sweeps = self.resolve_sweeps(&sig, &given);
        if !inputs_ok || self.errors_since(diags_before) {
            // The domain rules would read defaults where the file's values failed, or miss an
            // input, and invent errors; the ones reported are the real ones.
            return None;
        }
        let mut depends_on: Vec<String> = self.dependencies(&decl).into_iter().map(|(d, _)| d).collect();
        depends_on.sort();
        let instances = self.expand(kind, &decl, &params, &sweeps, &inputs, &depends_on, seed)?;
        let expects = self.resolve_expects(sig.kind, &given, &instances);
        if self.errors_since(diags_before) {
            return None;
        }
        Some(CheckedStage {
            name: name.to_string(),
            keyword: decl.keyword,
            kind: sig.kind.to_string(),
            inputs,
            sweeps,
            expects,
            instances,
            depends_on,
            span: decl.span,
        })
    }

    /// Whether an error was reported after the first `before` diagnostics (which are only ever
    /// added to during a check). Looking at the new ones only keeps a file of many declarations
    /// with many errors linear.
    fn errors_since(&self, before: usize) -> bool {
        self.diags.get(before..).is_some_and(|new| new.iter().any(Diagnostic::is_error))
    }

    /// Sorts arguments and block items into inputs, parameters, sweeps and expects, and
    /// applies `--set` overrides (which replace the file's value, or its sweep).
    fn sort_given<'d>(&mut self, decl: &'d Decl, sig: &Signature) -> Given<'d> {
        let mut given = Given { inputs: BTreeMap::new(), params: Vec::new(), sweeps: Vec::new(), expects: Vec::new() };
        let mut input_spans: BTreeMap<&'static str, Span> = BTreeMap::new();
        let mut add_input = |this: &mut Self, given: &mut Given<'d>, name: &'static str, e: &'d Expr, at: Span| {
            if let Some(first) = input_spans.get(name) {
                let d = Diagnostic::new(ErrorKind::GivenTwice { name: name.to_string() }, at)
                    .with_related(*first, "first given here");
                this.diags.push(d);
            } else {
                input_spans.insert(name, at);
                given.inputs.insert(name, e);
            }
        };
        if let Some(args) = &decl.args {
            let mut position = 0;
            for arg in &args.args {
                match &arg.name {
                    None => {
                        match sig.inputs.get(position) {
                            Some(input) => add_input(self, &mut given, input.name, &arg.value, arg.value.span),
                            None => {
                                let kind =
                                    ErrorKind::TooManyInputs { kind: sig.kind.to_string(), max: sig.inputs.len() };
                                self.error(kind, arg.value.span);
                            }
                        }
                        position += 1;
                    }
                    Some(n) => match sig.input(&n.name) {
                        Some(input) => add_input(self, &mut given, input.name, &arg.value, n.span),
                        None => given.params.push((n.clone(), arg.value.clone(), Origin::File)),
                    },
                }
            }
        }
        if let Some(block) = &decl.block {
            for item in &block.items {
                match item {
                    BlockItem::Assign(b) => match sig.input(&b.name.name) {
                        Some(input) => add_input(self, &mut given, input.name, &b.value, b.name.span),
                        None => given.params.push((b.name.clone(), b.value.clone(), Origin::File)),
                    },
                    BlockItem::Sweep(s) => given.sweeps.push(s),
                    BlockItem::Expect(e) => given.expects.push(e),
                }
            }
        }
        for (key, value) in self.decl_overrides.get(&decl.name.name).cloned().unwrap_or_default() {
            given.params.retain(|(n, _, _)| n.name != key.name);
            given.sweeps.retain(|s| s.param.name != key.name);
            given.params.push((key, value, Origin::Override));
        }
        given
    }

    /// Binds inputs to upstream stages.
    fn resolve_inputs(&mut self, decl: &Decl, sig: &Signature, given: &Given<'_>) -> Vec<ResolvedInput> {
        let mut inputs = Vec::new();
        for input in &sig.inputs {
            let expected = join_kinds(&input.kinds);
            let Some(expr) = given.inputs.get(input.name) else {
                if input.required {
                    let kind = ErrorKind::MissingInput { input: input.name.to_string(), expected };
                    self.error(kind, decl.kind.span);
                }
                continue;
            };
            let ExprKind::Path(segs) = &expr.kind else {
                self.error(ErrorKind::NotAStage { input: input.name.to_string(), expected }, expr.span);
                continue;
            };
            let head = &segs[0];
            if self.decl(&head.name).is_none() {
                if self.constants.contains_key(&head.name) {
                    self.error(ErrorKind::NotAStage { input: input.name.to_string(), expected }, expr.span);
                } else {
                    self.unknown_name(head);
                }
                continue;
            }
            // An upstream with errors was reported already; nothing more to say here.
            let Some(Some(stage)) = self.done.get(&head.name) else {
                continue;
            };
            let stage = stage.clone();
            let field = segs.get(1);
            let kind = match field {
                None => self.registry.kind(&stage.kind).map(|k| k.signature().output),
                Some(f) => match stage.instances.first().and_then(|i| i.outputs.fields.get(&f.name)) {
                    Some(Field::Data(k)) => Some(*k),
                    Some(_) => {
                        let found = format!("the value `{}.{}`", head.name, f.name);
                        self.error(ErrorKind::InputType { input: input.name.to_string(), expected, found }, expr.span);
                        continue;
                    }
                    None => {
                        let known: Vec<String> = stage
                            .instances
                            .first()
                            .map(|i| i.outputs.fields.keys().cloned().collect())
                            .unwrap_or_default();
                        let suggestion = nearest(&f.name, known.iter().map(String::as_str));
                        let kind = ErrorKind::UnknownField {
                            stage: head.name.clone(),
                            field: f.name.clone(),
                            suggestion,
                            fields: known,
                        };
                        self.error(kind, f.span);
                        continue;
                    }
                },
            };
            let Some(kind) = kind else { continue };
            if segs.len() > 2 {
                let kind = ErrorKind::UnknownField {
                    stage: format!("{}.{}", head.name, segs[1].name),
                    field: segs[2].name.clone(),
                    suggestion: None,
                    fields: vec![],
                };
                self.error(kind, segs[2].span);
                continue;
            }
            if !input.kinds.contains(&kind) {
                let found = format!("`{}`, {kind}", segs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join("."));
                self.error(ErrorKind::InputType { input: input.name.to_string(), expected, found }, expr.span);
                continue;
            }
            inputs.push(ResolvedInput {
                name: input.name.to_string(),
                stage: head.name.clone(),
                field: field.map(|f| f.name.clone()),
                kind,
                span: expr.span,
            });
        }
        inputs
    }

    fn resolve_params(&mut self, decl: &Decl, sig: &Signature, given: &Given<'_>) -> BTreeMap<String, Param> {
        let mut params = BTreeMap::new();
        let mut seen: BTreeMap<String, Span> = BTreeMap::new();
        // Parameters a misspelt one was taken for: "did you mean `dir`?" says enough about them.
        let mut suggested: Vec<String> = Vec::new();
        for (name, expr, origin) in &given.params {
            let Some(psig) = sig.param(&name.name) else {
                let candidates = sig.params.iter().map(|p| p.name).chain(sig.inputs.iter().map(|i| i.name));
                let suggestion = nearest(&name.name, candidates);
                suggested.extend(suggestion.clone());
                self.error(
                    ErrorKind::UnknownParam { name: name.name.clone(), kind: sig.kind.to_string(), suggestion },
                    name.span,
                );
                continue;
            };
            if let Some(first) = seen.get(&name.name) {
                let d = Diagnostic::new(ErrorKind::GivenTwice { name: name.name.clone() }, name.span)
                    .with_related(*first, "first given here");
                self.diags.push(d);
                continue;
            }
            seen.insert(name.name.clone(), name.span);
            if let Some(value) = self.eval(expr, &psig.ty) {
                params.insert(name.name.clone(), Param { value, origin: *origin, span: Some(expr.span) });
            }
        }
        let swept: Vec<&str> = given.sweeps.iter().map(|s| s.param.name.as_str()).collect();
        for psig in &sig.params {
            if seen.contains_key(psig.name) || swept.contains(&psig.name) {
                continue;
            }
            match &psig.default {
                ParamDefault::Value(v) => {
                    params
                        .insert(psig.name.to_string(), Param { value: v.clone(), origin: Origin::Default, span: None });
                }
                ParamDefault::Required if suggested.iter().any(|s| s == psig.name) => {}
                ParamDefault::Required => {
                    let kind = ErrorKind::MissingParam {
                        name: psig.name.to_string(),
                        of: format!("`{}` {} `{}`", sig.kind, decl.keyword.as_str(), decl.name.name),
                    };
                    self.error(kind, decl.name.span);
                }
                ParamDefault::Derived(_) => {}
            }
        }
        params
    }

    fn resolve_sweeps(&mut self, sig: &Signature, given: &Given<'_>) -> Vec<CheckedSweep> {
        let mut sweeps = Vec::new();
        let mut seen: BTreeMap<&str, Span> = BTreeMap::new();
        for s in &given.sweeps {
            let name = &s.param;
            let Some(psig) = sig.param(&name.name) else {
                let suggestion = nearest(&name.name, sig.params.iter().map(|p| p.name));
                let kind = match suggestion {
                    Some(_) => {
                        ErrorKind::UnknownParam { name: name.name.clone(), kind: sig.kind.to_string(), suggestion }
                    }
                    None => ErrorKind::SweepNotAParam { name: name.name.clone() },
                };
                self.error(kind, name.span);
                continue;
            };
            if let Some(first) = seen.get(name.name.as_str()) {
                let d = Diagnostic::new(ErrorKind::GivenTwice { name: name.name.clone() }, name.span)
                    .with_related(*first, "first swept here");
                self.diags.push(d);
                continue;
            }
            seen.insert(&name.name, name.span);
            if let Some((set, _, _)) = given.params.iter().find(|(n, _, _)| n.name == name.name) {
                let d = Diagnostic::new(ErrorKind::SweepAndSet { name: name.name.clone() }, name.span)
                    .with_related(set.span, "set here");
                self.diags.push(d);
                continue;
            }
            if s.values.is_empty() {
                self.error(ErrorKind::SweepEmpty { name: name.name.clone() }, s.list_span);
                continue;
            }
            let values: Vec<Option<Value>> = s.values.iter().map(|v| self.eval(v, &psig.ty)).collect();
            if let Some(values) = values.into_iter().collect::<Option<Vec<_>>>() {
                for (i, v) in values.iter().enumerate() {
                    if values[..i].contains(v) {
                        self.error(ErrorKind::GivenTwice { name: v.to_string() }, s.values[i].span);
                    }
                }
                sweeps.push(CheckedSweep { param: name.name.clone(), values, span: s.span });
            }
        }
        sweeps
    }

    /// Expands the stage into instances and runs `derive` for each. An instance is one
    /// consistent choice of an instance of every stage this one depends on (two paths to one
    /// swept ancestor must agree on its sweep values) combined with one value of each of this
    /// stage's own sweeps.
    #[allow(clippy::too_many_arguments)]
    fn expand(
        &mut self,
        kind: &dyn StageKind,
        decl: &Decl,
        params: &BTreeMap<String, Param>,
        sweeps: &[CheckedSweep],
        inputs: &[ResolvedInput],
        depends_on: &[String],
        seed: i64,
    ) -> Option<Vec<CheckedInstance>> {
        let mut combos: Vec<Upstream> = vec![Upstream::default()];
        for dep in depends_on {
            let Some(Some(stage)) = self.done.get(dep) else { return None };
            let mut next = Vec::new();
            for combo in &combos {
                for (index, inst) in stage.instances.iter().enumerate() {
                    if let Some(merged) = combo.with(dep, index, inst) {
                        next.push(merged);
                    }
                }
            }
            if next.len() > MAX_INSTANCES {
                self.error(ErrorKind::SweepTooLarge { instances: next.len(), limit: MAX_INSTANCES }, decl.name.span);
                return None;
            }
            combos = next;
        }
        let own = sweeps.iter().fold(1usize, |n, s| n.saturating_mul(s.values.len()));
        let count = combos.len().saturating_mul(own);
        if count > MAX_INSTANCES {
            self.error(ErrorKind::SweepTooLarge { instances: count, limit: MAX_INSTANCES }, decl.name.span);
            return None;
        }
        let labels: Vec<Vec<Vec<(String, Value)>>> = sweeps.iter().map(sweep_labels).collect();
        let mut instances = Vec::with_capacity(count);
        let mut diags: Vec<Diagnostic> = Vec::new();
        for combo in &combos {
            for choice in 0..own {
                let mut p = params.clone();
                let mut label = combo.label.clone();
                let mut coords = combo.coords.clone();
                let mut rest = choice;
                for (s, labels) in sweeps.iter().zip(&labels) {
                    let at = rest % s.values.len();
                    rest /= s.values.len();
                    label.extend(labels[at].iter().map(|(k, v)| (format!("{}.{k}", decl.name.name), v.clone())));
                    let value = s.values[at].clone();
                    p.insert(s.param.clone(), Param { value, origin: Origin::Sweep, span: Some(s.span) });
                }
                if !sweeps.is_empty() {
                    coords.insert(decl.name.name.clone(), choice);
                }
                let views = self.input_views(kind, inputs, &combo.instances);
                let mut cx = DeriveCx {
                    stage: &decl.name.name,
                    decl_span: decl.span,
                    params: p,
                    inputs: views,
                    pipeline_seed: seed,
                    diags: Vec::new(),
                };
                let outputs = kind.derive(&mut cx);
                cx.diags.extend(self.unreadable_paths(kind.signature(), &cx.params, decl.span));
                let config = if cx.has_errors() {
                    serde_json::Value::Null
                } else {
                    kind.resolve(&cx, &outputs).unwrap_or_else(|detail| {
                        let stage = decl.name.name.clone();
                        cx.diags.push(Diagnostic::new(ErrorKind::Unresolved { stage, detail }, decl.span));
                        serde_json::Value::Null
                    })
                };
                for d in cx.diags {
                    if !diags.contains(&d) {
                        diags.push(d);
                    }
                }
                instances.push(CheckedInstance {
                    label,
                    coords,
                    upstream: combo.instances.clone(),
                    params: cx.params,
                    outputs,
                    config,
                });
            }
        }
        let failed = diags.iter().any(Diagnostic::is_error);
        self.diags.extend(diags);
        (!failed).then_some(instances)
    }

    /// A diagnostic for every path among `params` that does not name a readable file or
    /// directory of its parameter's kind (`paths.rs`).
    fn unreadable_paths(&self, sig: &Signature, params: &BTreeMap<String, Param>, decl_span: Span) -> Vec<Diagnostic> {
        let base = self.base_dir.as_path();
        let mut diags = Vec::new();
        for psig in &sig.params {
            let Some(param) = params.get(psig.name) else { continue };
            for path in path_params(psig.name, &param.value, &psig.ty) {
                if let Some(reason) = super::paths::unreadable(base, &path) {
                    let kind = ErrorKind::PathUnreadable {
                        path: path.path,
                        param: path.position,
                        kind: path.kind.noun(),
                        reason,
                        base: base.display().to_string(),
                    };
                    diags.push(Diagnostic::new(kind, param.span.unwrap_or(decl_span)));
                }
            }
        }
        diags
    }

    /// The inputs of one instance, as `derive` sees them: each upstream instance's outputs.
    fn input_views<'s>(
        &'s self,
        kind: &dyn StageKind,
        inputs: &'s [ResolvedInput],
        upstream: &BTreeMap<String, usize>,
    ) -> BTreeMap<&'static str, InputView<'s>> {
        let mut views = BTreeMap::new();
        for input in inputs {
            let Some(Some(stage)) = self.done.get(&input.stage) else { continue };
            let Some(inst) = upstream.get(&input.stage).and_then(|i| stage.instances.get(*i)) else { continue };
            let Some(sig) = kind.signature().input(&input.name) else { continue };
            views.insert(
                sig.name,
                InputView {
                    stage: &input.stage,
                    kind: input.kind,
                    field: input.field.as_deref(),
                    outputs: &inst.outputs,
                    span: input.span,
                },
            );
        }
        views
    }

    fn resolve_expects(&mut self, kind: &str, given: &Given<'_>, instances: &[CheckedInstance]) -> Vec<CheckedExpect> {
        let mut metrics: Vec<String> = instances.iter().flat_map(|i| i.outputs.metrics.iter().cloned()).collect();
        metrics.sort();
        metrics.dedup();
        let mut out = Vec::new();
        for e in &given.expects {
            let metric = match &e.lhs.kind {
                ExprKind::Path(segs) if segs.len() == 1 => segs[0].name.clone(),
                _ => {
                    self.error(ErrorKind::ExpectNotNumeric, e.lhs.span);
                    continue;
                }
            };
            if metrics.is_empty() {
                self.error(ErrorKind::ExpectNoMetrics { kind: kind.to_string() }, e.span);
                continue;
            }
            if !metrics.contains(&metric) {
                let suggestion = nearest(&metric, metrics.iter().map(String::as_str));
                self.error(
                    ErrorKind::ExpectUnknownMetric { name: metric, suggestion, metrics: metrics.clone() },
                    e.lhs.span,
                );
                continue;
            }
            let threshold = match self.eval(&e.rhs, &crate::signature::Type::Float { min: None, max: None }) {
                Some(v) => v.as_f64(),
                None => continue,
            };
            if let Some(threshold) = threshold {
                out.push(CheckedExpect { metric, op: e.op, threshold, span: e.span });
            }
        }
        out
    }
}

/// How each value of a sweep names its instances: `lr=1e-4`; for constructors or records that
/// differ only in some arguments, just those (`model.latent_channels=8`).
fn sweep_labels(sweep: &CheckedSweep) -> Vec<Vec<(String, Value)>> {
    let parts = |v: &Value| match v {
        Value::Ctor { name, args } => Some((Some(name.clone()), args.clone())),
        Value::Record(fields) => Some((None, fields.clone())),
        _ => None,
    };
    let split: Option<Vec<_>> = sweep.values.iter().map(parts).collect();
    let same_shape = split.as_ref().is_some_and(|s| s.windows(2).all(|w| w[0].0 == w[1].0));
    match split {
        Some(split) if same_shape => {
            let keys: Vec<&String> =
                split[0].1.keys().filter(|k| split.iter().any(|(_, a)| a.get(*k) != split[0].1.get(*k))).collect();
            split
                .iter()
                .map(|(_, args)| {
                    keys.iter()
                        .map(|k| (format!("{}.{k}", sweep.param), args.get(*k).cloned().unwrap_or(Value::None)))
                        .collect()
                })
                .collect()
        }
        _ => sweep.values.iter().map(|v| vec![(sweep.param.clone(), v.clone())]).collect(),
    }
}

fn join_kinds(kinds: &[crate::signature::DataKind]) -> String {
    let words: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    match words.as_slice() {
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
        [] => "nothing".into(),
    }
}
