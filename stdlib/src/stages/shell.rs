//! `shell`: any external command, cached like every other stage. `{in.X}` are input files
//! (hashed by content), `{params.X}` values, `{out.X}` output paths and `{STAGE.X}` another
//! stage's output file. The checker makes sure every placeholder names something declared.

use medgen_lang::errors::ErrorKind;
use medgen_lang::signature::{
    DataKind, DeriveCx, Field, Outputs, ParamDefault, ParamSig, PathKind, Signature, StageKind, Type,
};
use medgen_lang::syntax::ast::DeclKeyword;
use medgen_lang::value::Value;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pitfalls::Pitfall;
use crate::vocab::strings;

use super::resolve::{param, to_json, ParamFile, Resolved};

/// What a `shell` instance runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShellConfig {
    /// The command line with its placeholders, as written.
    pub command: String,
    /// `{in.X}` files by name.
    pub inputs: BTreeMap<String, ParamFile>,
    /// `{params.X}` values by name: booleans, numbers and strings.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Every file the command must write: the declared outputs, and `metrics` when metrics are
    /// declared.
    pub outputs: Vec<String>,
    /// Metric names the command writes to `{out.metrics}`.
    pub metrics: Vec<String>,
}

/// The declared outputs, with `metrics` added when metrics are declared.
fn declared_outputs(mut outputs: Vec<String>, metrics: &[String]) -> Vec<String> {
    if !metrics.is_empty() && !outputs.iter().any(|o| o == "metrics") {
        outputs.push("metrics".into());
    }
    outputs
}

/// For every byte of a shell command, the quote it lies inside (`'` or `"`), if any, as `sh`
/// reads it: a backslash outside single quotes escapes the next character, and single quotes
/// cannot be escaped inside single quotes. A placeholder's value is substituted as one quoted
/// word, which is safe only outside quotes: inside `'...'` its own quotes would close the
/// string, inside `"..."` a `$(...)` in it would run.
fn quotes_at(command: &str) -> Vec<Option<char>> {
    let mut inside = Vec::with_capacity(command.len());
    let (mut quote, mut escaped) = (None, false);
    for c in command.chars() {
        let here = quote;
        match (quote, c) {
            _ if escaped => escaped = false,
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => escaped = true,
            (None, '\'' | '"') => quote = Some(c),
            (Some('"'), '"') => quote = None,
            _ => {}
        }
        inside.extend(std::iter::repeat_n(here, c.len_utf8()));
    }
    inside
}

/// A `{params.X}` value as JSON: integers stay integers, so the command sees what was written.
fn scalar(v: &Value) -> Resolved<serde_json::Value> {
    Ok(match v {
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Float(x) => serde_json::Value::from(*x),
        Value::Str(s) | Value::Enum(s) => serde_json::Value::String(s.clone()),
        other => return Err(format!("`params` holds {other}, not a boolean, number or string")),
    })
}

pub struct Shell {
    sig: Signature,
}

impl Shell {
    pub fn new() -> Self {
        let empty = || ParamDefault::Value(Value::Record(Default::default()));
        Shell {
            sig: Signature {
                kind: "shell",
                keyword: DeclKeyword::Stage,
                doc: "run a command; its declared outputs are cached",
                inputs: vec![],
                params: vec![
                    ParamSig::new(
                        "command",
                        Type::Template,
                        ParamDefault::Required,
                        "the command line, with {in.X}, {params.X}, {out.X} and {STAGE.X} placeholders",
                    ),
                    ParamSig::new(
                        "inputs",
                        Type::Map { value: Box::new(Type::Path(PathKind::Any)) },
                        empty(),
                        "input files by name, relative to the pipeline file",
                    ),
                    ParamSig::new("params", Type::Map { value: Box::new(Type::Scalar) }, empty(), "values by name"),
                    ParamSig::new(
                        "outputs",
                        Type::set(Type::Name, 1, None),
                        ParamDefault::Required,
                        "names of the files the command writes",
                    ),
                    ParamSig::new(
                        "metrics",
                        Type::set(Type::Name, 0, None),
                        ParamDefault::Value(Value::List(Vec::new())),
                        "metric names the command writes to {out.metrics} as a JSON object; `expect` can gate on them",
                    ),
                ],
                output: DataKind::Files,
            },
        }
    }
}

impl StageKind for Shell {
    fn signature(&self) -> &Signature {
        &self.sig
    }

    fn derive(&self, cx: &mut DeriveCx<'_>) -> Outputs {
        let command = cx.value("command").as_str().unwrap_or("").to_string();
        let keys = |v: &Value| -> Vec<String> {
            match v {
                Value::Record(fields) => fields.keys().cloned().collect(),
                _ => Vec::new(),
            }
        };
        let inputs = keys(cx.value("inputs"));
        if let Value::Record(files) = cx.value("inputs").clone() {
            for (name, path) in files {
                let Some(path) = path.as_str() else { continue };
                let inside = std::path::Path::new(path)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
                if !inside {
                    let span = cx.span_of("inputs");
                    cx.error(Pitfall::ShellInputOutside { name, path: path.to_string() }, span);
                }
            }
        }
        let params = keys(cx.value("params"));
        let outputs = declared_outputs(strings(cx.value("outputs")), &strings(cx.value("metrics")));
        let span = cx.span_of("command");
        let quotes = quotes_at(&command);
        for (start, end, scope, name) in medgen_lang::check::placeholders(&command) {
            let span = medgen_lang::check::placeholder_span(span, &command, start, end);
            if let Some(quote) = quotes.get(start).copied().flatten() {
                cx.error(Pitfall::QuotedPlaceholder { placeholder: format!("{scope}.{name}"), quote }, span);
            }
            let (declared, what) = match scope {
                "in" => (&inputs, "inputs"),
                "params" => (&params, "params"),
                "out" => (&outputs, "outputs"),
                _ => continue,
            };
            if !declared.iter().any(|d| d == name) {
                let reason = format!("names nothing: `{name}` is not in `{what}`");
                cx.error(ErrorKind::PlaceholderUnknown { placeholder: format!("{scope}.{name}"), reason }, span);
            }
        }
        let mut o = Outputs::default();
        for name in outputs {
            o.fields.insert(name, Field::File);
        }
        o.metrics = strings(cx.value("metrics"));
        o
    }

    fn resolve(&self, cx: &DeriveCx<'_>, _: &Outputs) -> Resolved<serde_json::Value> {
        let record = |name: &str| -> Resolved<BTreeMap<String, Value>> {
            match param::<Value>(cx, name)? {
                Value::Record(fields) => Ok(fields),
                other => Err(format!("`{name}` is {other}, expected a record")),
            }
        };
        let metrics: Vec<String> = param(cx, "metrics")?;
        to_json(&ShellConfig {
            command: param(cx, "command")?,
            inputs: record("inputs")?.into_keys().map(|k| (k.clone(), ParamFile::at(format!("inputs.{k}")))).collect(),
            params: record("params")?.iter().map(|(k, v)| Ok((k.clone(), scalar(v)?))).collect::<Resolved<_>>()?,
            outputs: declared_outputs(param(cx, "outputs")?, &metrics),
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::quotes_at;

    /// The quote around the first byte of `needle` in `command`.
    fn around(command: &str, needle: &str) -> Option<char> {
        quotes_at(command)[command.find(needle).expect("the needle is there")]
    }

    #[test]
    fn placeholders_inside_quotes_are_found_as_sh_reads_them() {
        assert_eq!(around("echo {params.v} > {out.x}", "{params"), None);
        assert_eq!(around("echo '{params.v}' > {out.x}", "{params"), Some('\''));
        assert_eq!(around("echo '{params.v}' > {out.x}", "{out"), None);
        assert_eq!(around("echo \"n={params.v}\"", "{params"), Some('"'));
        // An escaped quote opens nothing; a double quote inside single quotes is literal.
        assert_eq!(around(r#"echo \'{params.v}"#, "{params"), None);
        assert_eq!(around(r#"echo '"' {params.v}"#, "{params"), None);
        assert_eq!(around(r#"echo "a\"b {params.v}""#, "{params"), Some('"'));
        assert_eq!(around("echo 'é' {params.v}", "{params"), None, "multi-byte characters keep byte offsets");
    }
}
