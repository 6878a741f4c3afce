//! What the language itself can find wrong — syntax, names, types, ranges — as one enum whose
//! `Display` is every message. Domain rules (the seeds' pitfalls) live in medgen-stdlib.

use std::fmt;

use crate::diagnostic::{Code, DiagnosticKind, Severity};

macro_rules! codes {
    ($($name:ident = $id:literal, $sev:ident, $title:literal;)*) => {
        $(
            #[doc = $title]
            pub static $name: Code = Code {
                id: $id,
                severity: Severity::$sev,
                title: $title,
                explanation: include_str!(concat!("../explain/", $id, ".md")),
            };
        )*
        /// Every code the language defines, in order.
        pub static ALL: &[&Code] = &[$(&$name),*];
    };
}

codes! {
    SYNTAX = "E0001", Error, "the file does not follow the pipeline grammar";
    TOO_DEEP = "E0002", Error, "brackets, operators or constants nested too deeply";
    USE_FAILED = "E0003", Error, "a file cannot be read as a pipeline, or files `use` each other in a circle";
    PIPELINE_HEADER = "E0004", Error, "missing, repeated or misplaced `pipeline` declaration";
    UNKNOWN_KIND = "E0010", Error, "unknown stage kind, or a kind declared with the wrong keyword";
    DUPLICATE = "E0011", Error, "a name is defined twice";
    UNKNOWN_NAME = "E0012", Error, "a name refers to nothing";
    UNKNOWN_FIELD = "E0013", Error, "a reference names a field the stage does not produce";
    CYCLE = "E0014", Error, "stages depend on each other in a circle";
    INPUT_TYPE = "E0015", Error, "a stage input is of the wrong type";
    INPUT_COUNT = "E0016", Error, "a stage input is missing, or there are too many";
    UNKNOWN_PARAM = "E0020", Error, "unknown parameter";
    GIVEN_TWICE = "E0021", Error, "a parameter or field is given twice";
    TYPE_MISMATCH = "E0022", Error, "a value has the wrong type";
    OUT_OF_RANGE = "E0023", Error, "a value is outside its allowed range";
    UNKNOWN_VARIANT = "E0024", Error, "unknown choice for a parameter";
    MISSING_PARAM = "E0025", Error, "a required parameter is missing";
    BAD_SWEEP = "E0026", Error, "a `sweep` cannot be expanded";
    BAD_EXPECT = "E0027", Error, "an `expect` line cannot be evaluated";
    BAD_OVERRIDE = "E0028", Error, "a `--set` override is malformed or names nothing";
    ARITHMETIC = "E0029", Error, "a number or an arithmetic expression is invalid";
    PLACEHOLDER = "E0030", Error, "a `{...}` placeholder in a shell command names nothing";
    PATH_UNREADABLE = "E0031", Error, "a file or directory the pipeline names is missing or unreadable";
    UNRESOLVED = "E0032", Error, "a stage's settings could not be resolved into its configuration (a medgen bug)";
    UNUSED_CONSTANT = "W0001", Warning, "a constant is defined but never used";
    NOT_SHOWN = "W0002", Warning, "a file has more problems than are shown";
}

/// Codes no pipeline can produce: they report a disagreement inside medgen (a kind that cannot
/// resolve what its own signature accepted), so they have no error fixture.
pub static INTERNAL: &[&Code] = &[&UNRESOLVED];

/// Everything the language can report. `Display` is the message; `help` says what to do.
#[derive(Clone, Debug, PartialEq)]
pub enum ErrorKind {
    Syntax { expected: String, found: String, hint: Option<&'static str> },
    TooDeep { limit: usize },
    TooDeepThroughConstants { limit: usize },
    FileUnreadable { path: String, problem: FileProblem },
    UseUnreadable { path: String, problem: FileProblem },
    UseCycle { path: String },
    PipelineMissing,
    PipelineRepeated,
    PipelineInUsedFile,
    UnknownKind { kind: String, suggestion: Option<String>, known: Vec<String> },
    WrongKeyword { kind: String, used: &'static str, expected: &'static str },
    Duplicate { what: &'static str, name: String },
    UnknownName { name: String, suggestion: Option<String> },
    UnknownField { stage: String, field: String, suggestion: Option<String>, fields: Vec<String> },
    Cycle { path: Vec<String> },
    InputType { input: String, expected: String, found: String },
    NotAStage { input: String, expected: String },
    MissingInput { input: String, expected: String },
    TooManyInputs { kind: String, max: usize },
    UnknownParam { name: String, kind: String, suggestion: Option<String> },
    GivenTwice { name: String },
    TypeMismatch { expected: String, found: String },
    SeedFromStage { reference: String },
    CheckedLater { reference: String, stage: String },
    OutOfRange { value: String, range: String },
    UnknownVariant { value: String, of: String, suggestion: Option<String>, options: Vec<String> },
    MissingParam { name: String, of: String },
    SweepNotAParam { name: String },
    SweepAndSet { name: String },
    SweepEmpty { name: String },
    SweepTooLarge { instances: usize, limit: usize },
    ExpectNoMetrics { kind: String },
    ExpectUnknownMetric { name: String, suggestion: Option<String>, metrics: Vec<String> },
    ExpectNotNumeric,
    OverrideSyntax { text: String },
    OverrideUnknownStage { stage: String, suggestion: Option<String> },
    IntTooLarge,
    FloatNotFinite,
    NotANumber { op: &'static str },
    DivisionByZero,
    Overflow,
    PlaceholderUnknown { placeholder: String, reason: String },
    PathUnreadable { path: String, param: String, kind: &'static str, reason: String, base: String },
    UnusedConstant { name: String },
    ConstantCycle { path: Vec<String> },
    OverrideWholeStage { stage: String },
    TooManyArguments { ctor: String, max: usize },
    Unresolved { stage: String, detail: String },
    NotShown { errors: usize, warnings: usize, shown: usize },
}

/// Why a file cannot be checked as a pipeline: it cannot be read, or what it holds is not the
/// text of a pipeline. Lines and bytes count from 1.
#[derive(Clone, Debug, PartialEq)]
pub enum FileProblem {
    /// The operating system's words (no such file, permission denied).
    Io(String),
    /// A directory, FIFO, device or socket: never opened, as reading one may block or not end.
    NotRegular {
        what: &'static str,
    },
    TooLarge {
        limit: usize,
    },
    NotUtf8 {
        line: usize,
        byte: usize,
    },
    Nul {
        line: usize,
        byte: usize,
    },
    /// A `use`d file whose name does not end in `.mg`; `link_to` is the file a `.mg` link leads to.
    NotMg {
        link_to: Option<String>,
    },
}

impl FileProblem {
    /// Whether the file was read and found not to be a pipeline (rather than not read at all).
    fn is_not_pipeline(&self) -> bool {
        matches!(self, FileProblem::NotUtf8 { .. } | FileProblem::Nul { .. } | FileProblem::NotMg { .. })
    }

    fn help(&self) -> Option<&'static str> {
        match self {
            FileProblem::Io(_) => None,
            FileProblem::NotRegular { .. } => {
                Some("name a pipeline file; devices, FIFOs and directories are never read")
            }
            FileProblem::TooLarge { .. } | FileProblem::Nul { .. } => {
                Some("a pipeline file is text written by hand; check that the path names the right file")
            }
            FileProblem::NotUtf8 { .. } => Some("save the file as UTF-8 text"),
            FileProblem::NotMg { .. } => Some("`use` reads only pipeline files, whose names end in `.mg`"),
        }
    }
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileProblem::Io(e) => write!(f, "{e}"),
            FileProblem::NotRegular { what } => write!(f, "it is {what}, not a regular file"),
            FileProblem::TooLarge { limit } => write!(f, "it is larger than {} MiB", limit >> 20),
            FileProblem::NotUtf8 { line, byte } => write!(f, "line {line}, byte {byte} is not UTF-8 text"),
            FileProblem::Nul { line, byte } => write!(f, "line {line}, byte {byte} is a NUL byte"),
            FileProblem::NotMg { link_to: None } => write!(f, "its name does not end in `.mg`"),
            FileProblem::NotMg { link_to: Some(target) } => {
                write!(f, "it links to `{target}`, whose name does not end in `.mg`")
            }
        }
    }
}

fn file_problem(f: &mut fmt::Formatter<'_>, path: &str, problem: &FileProblem) -> fmt::Result {
    if problem.is_not_pipeline() {
        write!(f, "`{path}` is not a pipeline file: {problem}")
    } else {
        write!(f, "cannot read `{path}`: {problem}")
    }
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn did_you_mean(f: &mut fmt::Formatter<'_>, suggestion: &Option<String>) -> fmt::Result {
    match suggestion {
        Some(s) => write!(f, "; did you mean `{s}`?"),
        None => Ok(()),
    }
}

fn list(items: &[String]) -> String {
    items.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match self {
            Syntax { expected, found, .. } => write!(f, "expected {expected}, found {found}"),
            TooDeep { limit } => write!(f, "nested more than {limit} levels deep"),
            TooDeepThroughConstants { limit } => {
                write!(f, "nested more than {limit} levels deep, counting the constants it refers to")
            }
            FileUnreadable { path, problem } | UseUnreadable { path, problem } => file_problem(f, path, problem),
            UseCycle { path } => write!(f, "`{path}` is already being read: files `use` each other in a circle"),
            PipelineMissing => write!(f, "the file has no `pipeline NAME` declaration"),
            PipelineRepeated => write!(f, "`pipeline` is declared more than once"),
            PipelineInUsedFile => write!(f, "a `use`d file cannot declare `pipeline`"),
            UnknownKind { kind, suggestion, .. } => {
                write!(f, "unknown stage kind `{kind}`")?;
                did_you_mean(f, suggestion)
            }
            WrongKeyword { kind, used, expected } => {
                write!(f, "`{kind}` is declared with `{expected}`, not `{used}`")
            }
            Duplicate { what, name } => write!(f, "{what} `{name}` is defined more than once"),
            UnknownName { name, suggestion } => {
                write!(f, "`{name}` is not a stage, dataset or constant")?;
                did_you_mean(f, suggestion)
            }
            UnknownField { stage, field, suggestion, .. } => {
                write!(f, "`{stage}` has no field `{field}`")?;
                did_you_mean(f, suggestion)
            }
            Cycle { path } => write!(f, "stages depend on each other in a circle: {}", path.join(" -> ")),
            InputType { input, expected, found } => {
                write!(f, "input `{input}` expects {expected}, but this is {found}")
            }
            NotAStage { input, expected } => {
                write!(f, "input `{input}` expects {expected}: a stage or dataset name")
            }
            MissingInput { input, expected } => write!(f, "missing input `{input}` ({expected})"),
            TooManyInputs { kind, max: 0 } => write!(f, "`{kind}` takes no inputs"),
            TooManyInputs { kind, max } => {
                write!(f, "`{kind}` takes at most {max} positional input{}", if *max == 1 { "" } else { "s" })
            }
            UnknownParam { name, kind, suggestion } => {
                write!(f, "`{kind}` has no parameter `{name}`")?;
                did_you_mean(f, suggestion)
            }
            GivenTwice { name } => write!(f, "`{name}` is given more than once"),
            TypeMismatch { expected, found } => write!(f, "expected {expected}, found {found}"),
            SeedFromStage { reference } => {
                write!(f, "the pipeline seed cannot come from `{reference}`: every stage depends on the seed")
            }
            CheckedLater { reference, stage } => {
                write!(f, "`{reference}` cannot be read here: `{stage}` is checked after this value")
            }
            OutOfRange { value, range } => write!(f, "{value} is out of range: must be {range}"),
            UnknownVariant { value, of, suggestion, .. } => {
                write!(f, "`{value}` is not a valid {of}")?;
                did_you_mean(f, suggestion)
            }
            MissingParam { name, of } => write!(f, "{of} needs `{name}`"),
            SweepNotAParam { name } => write!(f, "cannot sweep `{name}`: it is not a parameter of this stage"),
            SweepAndSet { name } => write!(f, "`{name}` is both set and swept"),
            SweepEmpty { name } => write!(f, "`sweep {name}` has no values"),
            SweepTooLarge { instances, limit } => {
                write!(f, "sweeps expand to {instances} instances; at most {limit} are allowed")
            }
            ExpectNoMetrics { kind } => {
                write!(f, "`{kind}` stages produce no metrics to `expect` on")
            }
            ExpectUnknownMetric { name, suggestion, .. } => {
                write!(f, "this stage produces no metric `{name}`")?;
                did_you_mean(f, suggestion)
            }
            ExpectNotNumeric => write!(f, "`expect` compares a metric with a number"),
            OverrideSyntax { text } => write!(f, "cannot read override `{text}`"),
            OverrideUnknownStage { stage, suggestion } => {
                write!(f, "`--set` names `{stage}`, which is not a stage, dataset or constant")?;
                did_you_mean(f, suggestion)
            }
            IntTooLarge => write!(f, "integer literal too large"),
            FloatNotFinite => write!(f, "number is too large to represent"),
            NotANumber { op } => write!(f, "`{op}` needs numbers on both sides"),
            DivisionByZero => write!(f, "division by zero"),
            Overflow => write!(f, "integer arithmetic overflows"),
            PlaceholderUnknown { placeholder, reason } => write!(f, "`{{{placeholder}}}` {reason}"),
            PathUnreadable { path, param, kind, reason, .. } => {
                write!(f, "`{param}` names the {kind} \"{path}\", which {reason}")
            }
            UnusedConstant { name } => write!(f, "constant `{name}` is never used"),
            ConstantCycle { path } => write!(f, "constants refer to each other in a circle: {}", path.join(" -> ")),
            OverrideWholeStage { stage } => write!(f, "`--set` names the whole of `{stage}`; it sets one parameter"),
            TooManyArguments { ctor, max } => {
                write!(f, "`{ctor}` takes at most {max} positional argument{}", if *max == 1 { "" } else { "s" })
            }
            Unresolved { stage, detail } => write!(f, "the settings of `{stage}` could not be resolved: {detail}"),
            NotShown { errors, warnings, .. } => write!(
                f,
                "{} more {} in this file {} not shown ({}, {})",
                errors + warnings,
                if errors + warnings == 1 { "problem" } else { "problems" },
                if errors + warnings == 1 { "is" } else { "are" },
                plural(*errors, "error"),
                plural(*warnings, "warning")
            ),
        }
    }
}

impl DiagnosticKind for ErrorKind {
    fn code(&self) -> &'static Code {
        use ErrorKind::*;
        match self {
            Syntax { .. } => &SYNTAX,
            TooDeep { .. } | TooDeepThroughConstants { .. } => &TOO_DEEP,
            FileUnreadable { .. } | UseUnreadable { .. } | UseCycle { .. } => &USE_FAILED,
            PipelineMissing | PipelineRepeated | PipelineInUsedFile => &PIPELINE_HEADER,
            UnknownKind { .. } | WrongKeyword { .. } => &UNKNOWN_KIND,
            Duplicate { .. } => &DUPLICATE,
            UnknownName { .. } => &UNKNOWN_NAME,
            UnknownField { .. } => &UNKNOWN_FIELD,
            Cycle { .. } => &CYCLE,
            InputType { .. } | NotAStage { .. } => &INPUT_TYPE,
            MissingInput { .. } | TooManyInputs { .. } => &INPUT_COUNT,
            UnknownParam { .. } => &UNKNOWN_PARAM,
            GivenTwice { .. } => &GIVEN_TWICE,
            TypeMismatch { .. } | SeedFromStage { .. } | CheckedLater { .. } => &TYPE_MISMATCH,
            OutOfRange { .. } => &OUT_OF_RANGE,
            UnknownVariant { .. } => &UNKNOWN_VARIANT,
            MissingParam { .. } => &MISSING_PARAM,
            SweepNotAParam { .. } | SweepAndSet { .. } | SweepEmpty { .. } | SweepTooLarge { .. } => &BAD_SWEEP,
            ExpectNoMetrics { .. } | ExpectUnknownMetric { .. } | ExpectNotNumeric => &BAD_EXPECT,
            OverrideSyntax { .. } | OverrideUnknownStage { .. } => &BAD_OVERRIDE,
            IntTooLarge | FloatNotFinite | NotANumber { .. } | DivisionByZero | Overflow => &ARITHMETIC,
            PlaceholderUnknown { .. } => &PLACEHOLDER,
            PathUnreadable { .. } => &PATH_UNREADABLE,
            UnusedConstant { .. } => &UNUSED_CONSTANT,
            ConstantCycle { .. } => &CYCLE,
            OverrideWholeStage { .. } => &BAD_OVERRIDE,
            TooManyArguments { .. } => &INPUT_COUNT,
            Unresolved { .. } => &UNRESOLVED,
            NotShown { .. } => &NOT_SHOWN,
        }
    }

    fn help(&self) -> Option<String> {
        use ErrorKind::*;
        Some(match self {
            Syntax { hint, .. } => return hint.map(str::to_string),
            TooDeep { .. } => "split the value into top-level constants (`x = ...`) and refer to them".into(),
            TooDeepThroughConstants { .. } => {
                "constants refer to constants in a chain too long to follow; write some of the values out".into()
            }
            FileUnreadable { problem, .. } => return problem.help().map(str::to_string),
            UseUnreadable { problem: FileProblem::Io(_), .. } => {
                "`use` paths are relative to the file that contains them".into()
            }
            UseUnreadable { problem, .. } => return problem.help().map(str::to_string),
            UseCycle { .. } => "move the shared definitions into a third file that both `use`".into(),
            PipelineMissing => "start the file with `pipeline NAME`; the name labels runs and cache records".into(),
            PipelineRepeated => "keep one `pipeline` line, at the top".into(),
            PipelineInUsedFile => "files meant for `use` hold only constants, datasets and stages".into(),
            UnknownKind { known, .. } => format!("stage kinds are {}", list(known)),
            WrongKeyword { kind, expected, .. } => format!("write `{expected} NAME = {kind}...`"),
            Duplicate { .. } => "rename one of them; every stage, dataset and constant needs its own name".into(),
            UnknownName { suggestion: Some(_), .. } => return None,
            UnknownName { .. } => {
                "declare it (`stage NAME = ...`, `dataset NAME = ...` or `NAME = value`) before using it".into()
            }
            UnknownField { fields, .. } if !fields.is_empty() => format!("its fields are {}", list(fields)),
            UnknownField { stage, .. } => format!("`{stage}` has no fields of its own"),
            Cycle { .. } => "a stage can only use outputs of stages that do not depend on it".into(),
            InputType { .. } | NotAStage { .. } => "see `medgen explain E0015` for what each stage takes".into(),
            MissingInput { input, .. } => format!("pass it in parentheses: `(…, {input}: NAME)`"),
            TooManyInputs { max: 0, .. } => "it takes everything as parameters; `medgen stages KIND` lists them".into(),
            TooManyInputs { .. } => "pass the extra values by name (`name: value`)".into(),
            UnknownParam { .. } => return None,
            GivenTwice { .. } => "keep one of them".into(),
            TypeMismatch { .. } => return None,
            SeedFromStage { .. } => "write the seed as a whole number: `seed = 42`".into(),
            CheckedLater { .. } => {
                "a value can come only from a stage upstream of where it is used; write the number instead".into()
            }
            OutOfRange { .. } => return None,
            UnknownVariant { options, .. } => format!("choose one of {}", list(options)),
            MissingParam { name, .. } => format!("add `{name} = ...`"),
            SweepNotAParam { .. } => return None,
            SweepAndSet { .. } => "remove the fixed value; the sweep gives every value".into(),
            SweepEmpty { .. } => "list at least one value, or remove the sweep".into(),
            SweepTooLarge { .. } => "sweep fewer parameters or fewer values at once".into(),
            ExpectNoMetrics { kind } if kind == "shell" => {
                "declare the metrics the command writes to {out.metrics}: `metrics = [name, ...]`".into()
            }
            ExpectNoMetrics { .. } => {
                "put `expect` lines in a stage that measures metrics (`evaluate`, training stages)".into()
            }
            ExpectUnknownMetric { metrics, .. } => format!("this stage measures {}", list(metrics)),
            ExpectNotNumeric => "write it as `expect METRIC < NUMBER`".into(),
            OverrideSyntax { .. } => "write `--set STAGE.PARAM=VALUE` (or `--set CONSTANT=VALUE`)".into(),
            OverrideUnknownStage { .. } => return None,
            IntTooLarge => "integers are 64-bit; write a float such as 1e20".into(),
            FloatNotFinite => return None,
            NotANumber { .. } => "arithmetic applies to numbers only".into(),
            DivisionByZero | Overflow => return None,
            PlaceholderUnknown { .. } => {
                "placeholders are {in.NAME}, {params.NAME}, {out.NAME} and {STAGE.OUTPUT}".into()
            }
            PathUnreadable { base, .. } => {
                format!(
                    "relative paths start in the pipeline file's directory ({base}); fix the path, or create the file"
                )
            }
            UnusedConstant { .. } => {
                "use it in a value, or remove it; a misspelt reference elsewhere may mean to".into()
            }
            ConstantCycle { .. } => "give one of them a value that does not refer back".into(),
            OverrideWholeStage { stage } => format!("write `--set {stage}.PARAM=VALUE`"),
            TooManyArguments { .. } => "name the extra arguments (`name: value`)".into(),
            Unresolved { .. } => {
                "the checker accepted a value its stage kind cannot resolve; please report it with the pipeline".into()
            }
            NotShown { shown, .. } => {
                format!("at most {shown} problems are shown per file; fix these and check again to see the rest")
            }
        })
    }
}
