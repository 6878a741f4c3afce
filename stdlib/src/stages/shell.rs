//! `shell`: any external command, cached like every other stage. `{in.X}` are input files
//! (hashed by content), `{params.X}` values, `{out.X}` output paths and `{STAGE.X}` another
//! stage's output file. The checker makes sure every placeholder names something declared.

use medgen_lang::errors::ErrorKind;
use medgen_lang::signature::{
    DataKind, DeriveCx, Field, Outputs, ParamDefault, ParamSig, PathKind, Signature, StageKind, Type,
};
use medgen_lang::syntax::ast::DeclKeyword;
use medgen_lang::value::Value;

use crate::vocab::strings;

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
        let params = keys(cx.value("params"));
        let outputs =
            crate::run::declared_outputs(&cx.params.iter().map(|(k, p)| (k.clone(), p.value.clone())).collect());
        let span = cx.span_of("command");
        for (start, end, scope, name) in medgen_lang::check::placeholders(&command) {
            let span = medgen_lang::check::placeholder_span(span, &command, start, end);
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
}
