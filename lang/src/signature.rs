//! Stage signatures: what each stage kind takes and yields. The types live here; the
//! signatures themselves are declared by medgen-stdlib, which implements [`StageKind`] for each
//! kind and hands them to the checker through a [`Registry`]. That keeps this crate free of any
//! machine-learning knowledge while letting the checker reject a misspelt parameter, a value
//! out of range or a dataset where a denoiser was expected.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::diagnostic::{Code, Diagnostic, DiagnosticKind};
use crate::source::Span;
use crate::value::{Float, Value};

/// What flows along the DAG's edges: the typed outputs of stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    Dataset,
    Compressor,
    Latents,
    Denoiser,
    Samples,
    Metrics,
    Files,
}

impl fmt::Display for DataKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataKind::Dataset => "a dataset",
            DataKind::Compressor => "a compressor",
            DataKind::Latents => "latents",
            DataKind::Denoiser => "a denoiser",
            DataKind::Samples => "samples",
            DataKind::Metrics => "metrics",
            DataKind::Files => "files",
        })
    }
}

/// What a [`Type::Path`] must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    File,
    Dir,
    /// A file or a directory (a shell stage's inputs).
    Any,
}

impl PathKind {
    pub fn noun(self) -> &'static str {
        match self {
            PathKind::File => "file",
            PathKind::Dir => "directory",
            PathKind::Any => "file or directory",
        }
    }
}

/// A path in a parameter value: where it sits (`inputs.raw`), what it says, and what it must
/// name.
#[derive(Clone, Debug, PartialEq)]
pub struct PathParam {
    pub position: String,
    pub path: String,
    pub kind: PathKind,
}

/// The paths in `value`, a value of type `ty` found at `position`, in the value's order.
pub fn path_params(position: &str, value: &Value, ty: &Type) -> Vec<PathParam> {
    let mut out = Vec::new();
    collect_paths(position, value, ty, &mut out);
    out
}

fn collect_paths(at: &str, value: &Value, ty: &Type, out: &mut Vec<PathParam>) {
    match (ty, value) {
        (Type::Path(kind), Value::Str(path)) => {
            out.push(PathParam { position: at.to_string(), path: path.clone(), kind: *kind });
        }
        (Type::Optional(inner), v) => collect_paths(at, v, inner, out),
        (Type::Map { value: inner }, Value::Record(fields)) => {
            for (k, v) in fields {
                collect_paths(&format!("{at}.{k}"), v, inner, out);
            }
        }
        (Type::Record { fields: sigs, .. }, Value::Record(fields)) => {
            for sig in sigs {
                if let Some(v) = fields.get(sig.name) {
                    collect_paths(&format!("{at}.{}", sig.name), v, &sig.ty, out);
                }
            }
        }
        (Type::List { item, .. }, Value::List(items)) => {
            for (i, v) in items.iter().enumerate() {
                collect_paths(&format!("{at}.{i}"), v, item, out);
            }
        }
        (Type::Variant { ctors, .. }, Value::Ctor { name, args }) => {
            if let Some(ctor) = ctors.iter().find(|c| c.name == name) {
                for sig in &ctor.params {
                    if let Some(v) = args.get(sig.name) {
                        collect_paths(&format!("{at}.{}", sig.name), v, &sig.ty, out);
                    }
                }
            }
        }
        _ => {}
    }
}

/// An inclusive or exclusive numeric bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound {
    pub value: f64,
    pub inclusive: bool,
}

/// The type of a parameter value.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    Bool,
    Int {
        min: Option<i64>,
        max: Option<i64>,
    },
    Float {
        min: Option<Bound>,
        max: Option<Bound>,
    },
    Str,
    /// A path relative to the pipeline file, to a file or directory that must exist when the
    /// pipeline is checked.
    Path(PathKind),
    /// A string in which `{STAGE.OUTPUT}` placeholders refer to other stages' outputs.
    Template,
    /// One of a fixed set of names. `of` names the set in messages ("mode", "modality").
    Enum {
        of: &'static str,
        values: Vec<&'static str>,
    },
    /// A list; `unique` forbids repeated items.
    List {
        item: Box<Type>,
        min_len: usize,
        max_len: Option<usize>,
        unique: bool,
    },
    /// A record with fixed fields, each with its own type and default.
    Record {
        of: &'static str,
        fields: Vec<ParamSig>,
    },
    /// A record with free keys, all values of one type.
    Map {
        value: Box<Type>,
    },
    /// One of several constructors, each with its own parameters: `rflow(sampling: uniform)`.
    /// A bare name stands for the constructor with every default.
    Variant {
        of: &'static str,
        ctors: Vec<Ctor>,
    },
    /// The inner type, or `none`.
    Optional(Box<Type>),
    /// A bare name chosen by the user (a shell stage's output names).
    Name,
    /// Any boolean, number or string.
    Scalar,
}

impl Type {
    pub fn int(min: i64, max: Option<i64>) -> Type {
        Type::Int { min: Some(min), max }
    }

    /// A float in `[min, max]`.
    pub fn float(min: f64, max: f64) -> Type {
        Type::Float {
            min: Some(Bound { value: min, inclusive: true }),
            max: Some(Bound { value: max, inclusive: true }),
        }
    }

    /// A float between `min` and `max`, each bound inclusive or not.
    pub fn float_in(min: f64, min_inclusive: bool, max: f64, max_inclusive: bool) -> Type {
        Type::Float {
            min: Some(Bound { value: min, inclusive: min_inclusive }),
            max: Some(Bound { value: max, inclusive: max_inclusive }),
        }
    }

    /// A float strictly above zero.
    pub fn positive() -> Type {
        Type::Float { min: Some(Bound { value: 0.0, inclusive: false }), max: None }
    }

    pub fn enumeration(of: &'static str, values: &[&'static str]) -> Type {
        Type::Enum { of, values: values.to_vec() }
    }

    pub fn list(item: Type) -> Type {
        Type::List { item: Box::new(item), min_len: 0, max_len: None, unique: false }
    }

    /// A list of `min..=max` items, none repeated.
    pub fn set(item: Type, min: usize, max: Option<usize>) -> Type {
        Type::List { item: Box::new(item), min_len: min, max_len: max, unique: true }
    }

    pub fn list_len(item: Type, min: usize, max: Option<usize>) -> Type {
        Type::List { item: Box::new(item), min_len: min, max_len: max, unique: false }
    }

    pub fn optional(inner: Type) -> Type {
        Type::Optional(Box::new(inner))
    }

    /// How the type reads in a message: "an integer from 1 to 10", "a mode".
    pub fn describe(&self) -> String {
        match self {
            Type::Bool => "`true` or `false`".into(),
            Type::Int { .. } => "an integer".into(),
            Type::Float { .. } => "a number".into(),
            Type::Str | Type::Template => "a string".into(),
            Type::Path(PathKind::File) => "a file path (a string)".into(),
            Type::Path(PathKind::Dir) => "a directory path (a string)".into(),
            Type::Path(PathKind::Any) => "a path (a string)".into(),
            Type::Enum { of, .. } | Type::Variant { of, .. } => with_article(of),
            Type::List { item, .. } => format!("a list of {}", plural(&item.describe())),
            Type::Record { of, .. } => format!("{} record `{{name: value, ...}}`", with_article(of)),
            Type::Map { value } => format!("a record of {}", plural(&value.describe())),
            Type::Optional(inner) => format!("{} or `none`", inner.describe()),
            Type::Name => "a name".into(),
            Type::Scalar => "a boolean, number or string".into(),
        }
    }

    /// The allowed range of a numeric type, for messages, or `None` when unbounded.
    pub fn range(&self) -> Option<String> {
        match self {
            Type::Int { min: Some(lo), max: Some(hi) } => Some(format!("from {lo} to {hi}")),
            Type::Int { min: Some(lo), max: None } => Some(format!("at least {lo}")),
            Type::Int { min: None, max: Some(hi) } => Some(format!("at most {hi}")),
            Type::Float { min, max } => match (min, max) {
                (None, None) => None,
                (Some(lo), None) => Some(bound_text(lo, true)),
                (None, Some(hi)) => Some(bound_text(hi, false)),
                (Some(lo), Some(hi)) => Some(format!("{} and {}", bound_text(lo, true), bound_text(hi, false))),
            },
            Type::Optional(inner) => inner.range(),
            _ => None,
        }
    }
}

fn bound_text(b: &Bound, lower: bool) -> String {
    let op = match (lower, b.inclusive) {
        (true, true) => "at least",
        (true, false) => "above",
        (false, true) => "at most",
        (false, false) => "below",
    };
    format!("{op} {}", Float(b.value))
}

/// `a mode`, `an augmentation preset`.
fn with_article(noun: &str) -> String {
    let vowel = noun.starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U']);
    format!("{} {noun}", if vowel { "an" } else { "a" })
}

fn plural(s: &str) -> String {
    s.strip_prefix("a ").or_else(|| s.strip_prefix("an ")).map_or_else(|| s.to_string(), |rest| format!("{rest}s"))
}

/// What a parameter takes when the file does not say.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamDefault {
    /// The file must give it.
    Required,
    /// This value.
    Value(Value),
    /// Computed by the stage kind from its inputs (for example the channels a mode needs);
    /// `doc` says how, for the reference docs.
    Derived(&'static str),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamSig {
    pub name: &'static str,
    pub ty: Type,
    pub default: ParamDefault,
    /// One line for `--help`-style listings and the stage reference.
    pub doc: &'static str,
}

impl ParamSig {
    pub fn new(name: &'static str, ty: Type, default: ParamDefault, doc: &'static str) -> Self {
        ParamSig { name, ty, default, doc }
    }
}

/// One constructor of a [`Type::Variant`]: `vqvae(dims: 2, channels: [32, 64])`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ctor {
    pub name: &'static str,
    pub doc: &'static str,
    pub params: Vec<ParamSig>,
}

/// A typed input of a stage: given positionally in parentheses, or by name.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSig {
    pub name: &'static str,
    /// What it accepts; more than one for stages such as `diffuse` (a dataset or latents).
    pub kinds: Vec<DataKind>,
    pub required: bool,
    pub doc: &'static str,
}

/// Everything the checker needs to know about a stage kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Signature {
    pub kind: &'static str,
    /// `dataset` kinds are declared with `dataset NAME = KIND`, the rest with `stage`.
    pub keyword: crate::syntax::ast::DeclKeyword,
    pub doc: &'static str,
    pub inputs: Vec<InputSig>,
    pub params: Vec<ParamSig>,
    pub output: DataKind,
}

impl Signature {
    pub fn param(&self, name: &str) -> Option<&ParamSig> {
        self.params.iter().find(|p| p.name == name)
    }

    pub fn input(&self, name: &str) -> Option<&InputSig> {
        self.inputs.iter().find(|i| i.name == name)
    }
}

/// A field of a stage's output, as `stage.field` sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Known when the pipeline is checked (`vae.latent_channels`): usable in expressions.
    Value(Value),
    /// A part of the output that is itself an input for other stages (`brain.test`).
    Data(DataKind),
    /// A file the stage writes (`prep.table`): usable in shell placeholders.
    File,
}

/// What a stage instance yields, as far as it is known before running.
#[derive(Clone, Debug, PartialEq, Default, Serialize)]
pub struct Outputs {
    pub fields: BTreeMap<String, Field>,
    /// Metric names the stage measures, for `expect` lines.
    pub metrics: Vec<String>,
}

impl Outputs {
    pub fn value(&mut self, name: &str, value: Value) -> &mut Self {
        self.fields.insert(name.to_string(), Field::Value(value));
        self
    }

    pub fn get_value(&self, name: &str) -> Option<&Value> {
        match self.fields.get(name) {
            Some(Field::Value(v)) => Some(v),
            _ => None,
        }
    }
}

/// A resolved parameter: its value, and where it came from (for messages and `medgen plan`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Param {
    pub value: Value,
    pub origin: Origin,
    #[serde(skip)]
    pub span: Option<Span>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Default,
    File,
    Override,
    Sweep,
    Derived,
}

/// An input as a stage kind's `derive` sees it: the upstream instance's outputs, and which
/// part of them was selected (`brain.test` selects `test`).
#[derive(Clone, Debug)]
pub struct InputView<'a> {
    pub stage: &'a str,
    /// What the selected output is (`diffuse` works on pixels for a dataset, on latents else).
    pub kind: DataKind,
    pub field: Option<&'a str>,
    pub outputs: &'a Outputs,
    pub span: Span,
}

/// What `derive` works with: one instance's parameters (sweeps substituted) and inputs.
pub struct DeriveCx<'a> {
    pub stage: &'a str,
    /// Span of the whole declaration, for problems that belong to no single parameter.
    pub decl_span: Span,
    pub params: BTreeMap<String, Param>,
    pub inputs: BTreeMap<&'static str, InputView<'a>>,
    pub pipeline_seed: i64,
    pub(crate) diags: Vec<Diagnostic>,
}

impl<'a> DeriveCx<'a> {
    /// The value of a parameter (every parameter has one by the time `derive` runs, except
    /// `Derived` ones that `derive` itself fills).
    pub fn value(&self, name: &str) -> &Value {
        static NONE: Value = Value::None;
        self.params.get(name).map_or(&NONE, |p| &p.value)
    }

    /// Whether the file (or an override or sweep) set the parameter, rather than a default.
    pub fn is_set(&self, name: &str) -> bool {
        self.params.get(name).is_some_and(|p| !matches!(p.origin, Origin::Default | Origin::Derived))
    }

    /// Where to point for a problem with a parameter: its value if written, else the declaration.
    pub fn span_of(&self, name: &str) -> Span {
        self.params.get(name).and_then(|p| p.span).unwrap_or(self.decl_span)
    }

    /// Fills a `Derived` parameter, or completes one the file gave in part (a constructor
    /// whose `Derived` arguments were left out); a value the file gave keeps its origin.
    pub fn derive(&mut self, name: &str, value: Value) {
        let (origin, span) = self.params.get(name).map_or((Origin::Derived, None), |p| (p.origin, p.span));
        self.params.insert(name.to_string(), Param { value, origin, span });
    }

    /// The input bound to `name`, if it was given and its upstream checked cleanly.
    pub fn input(&self, name: &str) -> Option<&InputView<'a>> {
        self.inputs.get(name)
    }

    pub fn report(&mut self, diag: Diagnostic) {
        self.diags.push(diag);
    }

    pub fn error(&mut self, kind: impl DiagnosticKind, span: Span) {
        self.diags.push(Diagnostic::new(kind, span));
    }

    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }
}

/// A stage kind as the checker sees it. medgen-stdlib implements one per kind.
pub trait StageKind: Send + Sync {
    fn signature(&self) -> &Signature;

    /// Computes the instance's outputs from its parameters and inputs, fills `Derived`
    /// parameters, and reports what the domain forbids (the seeds' pitfalls). Called once per
    /// instance: per combination of its own sweep values and its inputs' variants.
    fn derive(&self, cx: &mut DeriveCx<'_>) -> Outputs;

    /// The instance's typed configuration, canonically serialised: every parameter resolved
    /// (defaults applied, choices as enumerations) together with what `derive` found (channel
    /// counts, space, geometry). Called once, after a `derive` that reported no error; the
    /// engine hashes it into the cache key and hands it to the kind's runner, which reads its
    /// settings from nothing else. `Err` is a disagreement between the kind's signature and its
    /// resolver (a bug), reported as E0032.
    fn resolve(&self, cx: &DeriveCx<'_>, outputs: &Outputs) -> Result<serde_json::Value, String>;
}

/// The set of stage kinds and diagnostic codes the checker works with.
pub trait Registry {
    fn kind(&self, name: &str) -> Option<&dyn StageKind>;

    /// Every kind, in the order docs list them.
    fn kinds(&self) -> Vec<&dyn StageKind>;

    /// Codes beyond the language's own (domain rules), for `medgen explain` and docs.
    fn codes(&self) -> Vec<&'static Code>;

    /// A better diagnostic for a value that is not one of a type's choices, when the value is
    /// a known confusion (a strategy given as a mode). `None` keeps the generic one.
    fn misplaced_value(&self, _of: &str, _value: &str, _span: Span) -> Option<Diagnostic> {
        None
    }
}
