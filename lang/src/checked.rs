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
    pub sweeps: Vec<CheckedSweep>,
    pub expects: Vec<CheckedExpect>,
    /// One per combination of sweep values: this stage's own sweeps, and those of the stages
    /// it depends on. A stage without sweeps anywhere upstream has exactly one.
    pub instances: Vec<CheckedInstance>,
    /// Every stage this one needs: inputs, referenced fields and shell placeholders.
    pub depends_on: Vec<String>,
    #[serde(skip)]
    pub span: Span,
}

impl CheckedStage {
    /// The parameters of the first instance (all of them, for a stage without sweeps).
    pub fn params(&self) -> &BTreeMap<String, Param> {
        &self.instances[0].params
    }
}

/// One instance of a stage: what it computes for one combination of sweep values.
#[derive(Clone, Debug, Serialize)]
pub struct CheckedInstance {
    /// The sweep values that make this instance, keyed by stage and parameter:
    /// `("ldm.lr", 1e-4)`, `("vae.model.latent_channels", 8)`. Empty without sweeps.
    pub label: Vec<(String, Value)>,
    /// Swept stage → the index of its sweep choice, for this instance and its ancestors.
    pub coords: BTreeMap<String, usize>,
    /// Stage this one depends on → the index of the instance of it that this one uses.
    pub upstream: BTreeMap<String, usize>,
    /// Every parameter of the kind, with sweep values substituted and derived ones filled.
    pub params: BTreeMap<String, Param>,
    /// What the instance yields, as far as it is known before running.
    pub outputs: Outputs,
    /// The kind's typed configuration of this instance (`StageKind::resolve`), canonically
    /// serialised: what the cache key hashes and the runner receives.
    pub config: serde_json::Value,
}

impl CheckedInstance {
    /// `ldm[vae.model.latent_channels=8, lr=1e-4]` (the stage's own sweeps unprefixed), or the
    /// stage's name alone without sweeps.
    pub fn name(&self, stage: &str) -> String {
        if self.label.is_empty() {
            return stage.to_string();
        }
        let own = format!("{stage}.");
        let parts: Vec<String> =
            self.label.iter().map(|(k, v)| format!("{}={v}", k.strip_prefix(&own).unwrap_or(k))).collect();
        format!("{stage}[{}]", parts.join(", "))
    }
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
