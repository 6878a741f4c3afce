//! The checker calls a kind's `resolve` once per instance, after a clean `derive`, and keeps
//! what it returns as the instance's configuration; a kind that cannot resolve what its own
//! signature accepted is reported (E0032) at the declaration, never run on a guess.

use medgen_lang::check::check_source;
use medgen_lang::diagnostic::Code;
use medgen_lang::signature::{
    DataKind, DeriveCx, Outputs, ParamDefault, ParamSig, Registry, Signature, StageKind, Type,
};
use medgen_lang::syntax::ast::DeclKeyword;
use medgen_lang::value::Value;

/// A kind with one integer parameter `n`, which resolves `{"twice": 2n}` unless `n` is 13.
struct Doubler {
    sig: Signature,
}

impl StageKind for Doubler {
    fn signature(&self) -> &Signature {
        &self.sig
    }

    fn derive(&self, _: &mut DeriveCx<'_>) -> Outputs {
        Outputs::default()
    }

    fn resolve(&self, cx: &DeriveCx<'_>, _: &Outputs) -> Result<serde_json::Value, String> {
        match cx.value("n").as_i64() {
            Some(13) => Err("13 cannot be doubled".into()),
            Some(n) => Ok(serde_json::json!({ "twice": 2 * n })),
            None => Err("`n` is not an integer".into()),
        }
    }
}

struct Kinds(Doubler);

impl Registry for Kinds {
    fn kind(&self, name: &str) -> Option<&dyn StageKind> {
        (name == "double").then_some(&self.0 as &dyn StageKind)
    }

    fn kinds(&self) -> Vec<&dyn StageKind> {
        vec![&self.0]
    }

    fn codes(&self) -> Vec<&'static Code> {
        Vec::new()
    }
}

fn registry() -> Kinds {
    Kinds(Doubler {
        sig: Signature {
            kind: "double",
            keyword: DeclKeyword::Stage,
            doc: "doubles",
            inputs: vec![],
            params: vec![ParamSig::new("n", Type::int(0, None), ParamDefault::Value(Value::Int(1)), "a number")],
            output: DataKind::Metrics,
        },
    })
}

#[test]
fn each_instance_keeps_its_resolved_configuration() {
    let source = "pipeline p\nstage d = double { sweep n in [2, 5] }\nstage e = double\n";
    let report = check_source("p.mg", source, &[], &registry());
    let pipeline = report.pipeline.expect("checks clean");
    let configs: Vec<_> = pipeline.stage("d").expect("d").instances.iter().map(|i| i.config.clone()).collect();
    assert_eq!(configs, [serde_json::json!({"twice": 4}), serde_json::json!({"twice": 10})]);
    assert_eq!(pipeline.stage("e").expect("e").instances[0].config, serde_json::json!({"twice": 2}), "the default");
}

#[test]
fn a_kind_that_cannot_resolve_is_reported_at_its_declaration() {
    let source = "pipeline p\nstage d = double { n = 13 }\n";
    let report = check_source("p.mg", source, &[], &registry());
    assert!(report.pipeline.is_none(), "the pipeline must not be accepted");
    let rendered: Vec<String> = report.diagnostics.iter().map(|d| d.render(&report.sources, false)).collect();
    assert_eq!(report.diagnostics.len(), 1, "{rendered:?}");
    assert_eq!(report.diagnostics[0].code.id, "E0032");
    assert!(rendered[0].contains("13 cannot be doubled") && rendered[0].contains("p.mg:2:1"), "{}", rendered[0]);
}
