//! The checked pipeline: every name resolved, every value typed and in range, every default
//! filled, every channel count derived. It is the only form the engine accepts, and what
//! `medgen check --emit json` prints.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::signature::{DataKind, Outputs, Param};
use crate::source::Span;
use crate::syntax::ast::{CmpOp, DeclKeyword};
use crate::value::Value;

#[derive(Clone, Debug, Serialize)]
pub struct CheckedPipeline {
    pub name: String,
    /// The pipeline-wide seed (`seed = N`, default 0); stages derive their streams from it.
    pub seed: i64,
    /// Every declaration, upstream before downstream.
    pub stages: Vec<CheckedStage>,
}

impl CheckedPipeline {
    pub fn stage(&self, name: &str) -> Option<&CheckedStage> {
        self.stages.iter().find(|s| s.name == name)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckedStage {
    pub name: String,
    pub keyword: DeclKeyword,
    pub kind: String,
    /// Inputs in signature order.
    pub inputs: Vec<ResolvedInput>,
    /// Every parameter of the kind, with its value and where the value came from.
    pub params: BTreeMap<String, Param>,
    pub sweeps: Vec<CheckedSweep>,
    pub expects: Vec<CheckedExpect>,
    /// What the stage yields, one entry per distinct instance configuration (sweeps of this
    /// stage or of its inputs can make instances differ, e.g. in latent channels).
    pub outputs: Vec<Outputs>,
    /// Every stage this one needs: inputs, referenced fields and shell placeholders.
    pub depends_on: Vec<String>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, Serialize)]
pub struct ResolvedInput {
    /// The input's name in the signature.
    pub name: String,
    pub stage: String,
    /// The selected part of the upstream output (`test` in `brain.test`).
    pub field: Option<String>,
    pub kind: DataKind,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckedSweep {
    pub param: String,
    pub values: Vec<Value>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckedExpect {
    pub metric: String,
    pub op: CmpOp,
    pub threshold: f64,
    #[serde(skip)]
    pub span: Span,
}
