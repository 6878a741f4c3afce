//! Reading checked parameters into a kind's typed configuration (`StageKind::resolve`).
//!
//! By the time a kind resolves, the checker has typed every value, checked its range and filled
//! every default, so a value that is missing or of another type here is a disagreement between
//! a signature and its resolver: it is an `Err` (the checker reports E0032), never a fallback.
//! Choices (modes, strategies, solvers, metrics) become enums through serde, so the language's
//! names and the configuration's JSON are the same words.

use std::path::PathBuf;

use medgen_engine::runner::{RunContext, StageError};
use medgen_lang::signature::{DeriveCx, Outputs};
use medgen_lang::value::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub(crate) type Resolved<T> = Result<T, String>;

/// A value that a checked parameter or constructor argument converts to.
pub(crate) trait Read: Sized {
    fn read(v: &Value, what: &str) -> Resolved<Self>;
}

fn wrong(v: &Value, what: &str, expected: &str) -> String {
    format!("`{what}` is {v}, expected {expected}")
}

impl Read for i64 {
    fn read(v: &Value, what: &str) -> Resolved<Self> {
        v.as_i64().ok_or_else(|| wrong(v, what, "an integer"))
    }
}

impl Read for usize {
    fn read(v: &Value, what: &str) -> Resolved<Self> {
        v.as_i64().and_then(|i| usize::try_from(i).ok()).ok_or_else(|| wrong(v, what, "a count"))
    }
}

impl Read for u64 {
    fn read(v: &Value, what: &str) -> Resolved<Self> {
        v.as_i64().and_then(|i| u64::try_from(i).ok()).ok_or_else(|| wrong(v, what, "a non-negative integer"))
    }
}

impl Read for f64 {
    fn read(v: &Value, what: &str) -> Resolved<Self> {
        v.as_f64().ok_or_else(|| wrong(v, what, "a number"))
    }
}

impl Read for bool {
    fn read(v: &Value, what: &str) -> Resolved<Self> {
        v.as_bool().ok_or_else(|| wrong(v, what, "`true` or `false`"))
    }
}

impl Read for String {
    fn read(v: &Value, what: &str) -> Resolved<Self> {
        v.as_str().map(str::to_string).ok_or_else(|| wrong(v, what, "a name or string"))
    }
}

/// A value kept as the language's (a constructor read argument by argument).
impl Read for Value {
    fn read(v: &Value, _: &str) -> Resolved<Self> {
        Ok(v.clone())
    }
}

impl<T: Read> Read for Vec<T> {
    fn read(v: &Value, what: &str) -> Resolved<Self> {
        match v {
            Value::List(items) => items.iter().map(|i| T::read(i, what)).collect(),
            other => Err(wrong(other, what, "a list")),
        }
    }
}

/// `none` is `None`.
impl<T: Read> Read for Option<T> {
    fn read(v: &Value, what: &str) -> Resolved<Self> {
        match v {
            Value::None => Ok(None),
            other => T::read(other, what).map(Some),
        }
    }
}

/// A choice by its name in the language (`logit_normal`), as the enum `T` whose serde names
/// are those names.
pub(crate) struct Choice<T>(pub T);

impl<T: DeserializeOwned> Read for Choice<T> {
    fn read(v: &Value, what: &str) -> Resolved<Self> {
        let name = v.as_str().ok_or_else(|| wrong(v, what, "a name"))?;
        serde_json::from_value(serde_json::Value::String(name.to_string()))
            .map(Choice)
            .map_err(|_| wrong(v, what, "one of its choices"))
    }
}

/// The checked parameter `name`.
pub(crate) fn param<T: Read>(cx: &DeriveCx<'_>, name: &str) -> Resolved<T> {
    let param = cx.params.get(name).ok_or_else(|| format!("the parameter `{name}` has no value"))?;
    T::read(&param.value, name)
}

/// The choice parameter `name` as the enum `T`.
pub(crate) fn choice<T: DeserializeOwned>(cx: &DeriveCx<'_>, name: &str) -> Resolved<T> {
    param::<Choice<T>>(cx, name).map(|c| c.0)
}

/// The argument `name` of a constructor or field of a record (`model.channels`).
pub(crate) fn arg<T: Read>(value: &Value, name: &str) -> Resolved<T> {
    let what = format!("{}.{name}", value.variant().unwrap_or("record"));
    let v = value.get(name).ok_or_else(|| format!("`{what}` has no value"))?;
    T::read(v, &what)
}

/// The choice argument `name` of a constructor as the enum `T`.
pub(crate) fn arg_choice<T: DeserializeOwned>(value: &Value, name: &str) -> Resolved<T> {
    arg::<Choice<T>>(value, name).map(|c| c.0)
}

/// The output field `name` that `derive` computed.
pub(crate) fn output<T: Read>(outputs: &Outputs, name: &str) -> Resolved<T> {
    let v = outputs.get_value(name).ok_or_else(|| format!("the output `{name}` was not derived"))?;
    T::read(v, name)
}

/// The typed configuration as the canonical JSON the engine hashes and the runner reads.
pub(crate) fn to_json(config: &impl Serialize) -> Resolved<serde_json::Value> {
    serde_json::to_value(config).map_err(|e| format!("the configuration does not serialise: {e}"))
}

/// A file or directory a parameter names. The configuration holds the parameter's position
/// (`dir`, `inputs.raw`), not the path: the engine keys the file by its content under that
/// position and hands the runner its absolute path, so moving the project or renaming a file
/// changes no key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ParamFile {
    pub param: String,
}

impl ParamFile {
    pub fn at(position: impl Into<String>) -> Self {
        ParamFile { param: position.into() }
    }

    /// The absolute path the engine resolved for this position.
    pub fn path(&self, cx: &RunContext<'_>) -> Result<PathBuf, StageError> {
        cx.files.get(&self.param).cloned().ok_or_else(|| self.missing())
    }

    /// The path as the pipeline wrote it, relative to the pipeline file.
    pub fn written<'c>(&self, cx: &'c RunContext<'_>) -> Result<&'c str, StageError> {
        cx.instance.files.get(&self.param).map(String::as_str).ok_or_else(|| self.missing())
    }

    fn missing(&self) -> StageError {
        StageError::Failed(format!("the engine gave no file for `{}` (a medgen bug)", self.param))
    }
}

/// The file parameter `name`, `None` when it is `none`.
pub(crate) fn optional_file(cx: &DeriveCx<'_>, name: &str) -> Resolved<Option<ParamFile>> {
    Ok(param::<Option<String>>(cx, name)?.map(|_| ParamFile::at(name)))
}
