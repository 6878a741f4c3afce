//! Lowering: a checked pipeline becomes a DAG of stage instances. The checker has already
//! expanded sweeps (each instance is one consistent combination of sweep values); here each
//! instance becomes a node, with an edge from every upstream instance it uses, so instances
//! that share an upstream instance share the node and it is computed once.

use std::collections::BTreeMap;

use medgen_lang::checked::{CheckedExpect, CheckedPipeline};
use medgen_lang::signature::{path_params, DataKind, Registry};
use medgen_lang::value::Value;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

/// A stage instance: what runs, on what.
#[derive(Clone, Debug)]
pub struct Instance {
    /// `ldm[lr=1e-4]`, or the stage name without sweeps. Unique within the pipeline.
    pub name: String,
    pub stage: String,
    pub kind: String,
    /// Every parameter, sweeps substituted, defaults and derived values filled, as the
    /// pipeline states them: for `medgen show`, and to find files and placeholders.
    pub params: BTreeMap<String, Value>,
    /// The kind's typed configuration (`StageKind::resolve`): what the key hashes and the
    /// runner reads its settings from.
    pub config: serde_json::Value,
    /// Parameter values that are file paths, by dotted position (`inputs.raw`), relative to the
    /// pipeline file. Their contents, not their names, go into the cache key.
    pub files: BTreeMap<String, String>,
    /// Typed inputs by input name.
    pub inputs: BTreeMap<String, InputEdge>,
    /// Stages whose output files this one reads through `{STAGE.OUTPUT}`.
    pub placeholders: BTreeMap<String, NodeIndex>,
    pub expects: Vec<CheckedExpect>,
}

/// An input of an instance: the upstream instance, the part of its output selected, and what
/// that part is, so that a runner knows its input's kind without looking at its files.
#[derive(Clone, Debug)]
pub struct InputEdge {
    pub node: NodeIndex,
    /// The selected part, such as the split `test` of `brain.test`.
    pub field: Option<String>,
    pub kind: DataKind,
}

/// The lowered pipeline. Edges point from upstream to downstream.
pub struct Dag {
    pub pipeline: String,
    pub graph: DiGraph<Instance, ()>,
    /// Nodes, upstream before downstream.
    pub order: Vec<NodeIndex>,
}

impl Dag {
    pub fn lower(pipeline: &CheckedPipeline, registry: &dyn Registry) -> Dag {
        let mut graph: DiGraph<Instance, ()> = DiGraph::new();
        let mut nodes: BTreeMap<(&str, usize), NodeIndex> = BTreeMap::new();
        let mut order = Vec::new();
        for stage in &pipeline.stages {
            let signature = registry.kind(&stage.kind).map(|k| k.signature().clone());
            for (index, inst) in stage.instances.iter().enumerate() {
                let upstream = |name: &str| inst.upstream.get(name).and_then(|i| nodes.get(&(name, *i))).copied();
                let inputs = stage
                    .inputs
                    .iter()
                    .filter_map(|i| {
                        let edge = |node| InputEdge { node, field: i.field.clone(), kind: i.kind };
                        upstream(&i.stage).map(|n| (i.name.clone(), edge(n)))
                    })
                    .collect();
                let params: BTreeMap<String, Value> =
                    inst.params.iter().map(|(k, p)| (k.clone(), p.value.clone())).collect();
                let mut files = BTreeMap::new();
                if let Some(sig) = &signature {
                    for p in &sig.params {
                        if let Some(v) = params.get(p.name) {
                            files.extend(path_params(p.name, v, &p.ty).into_iter().map(|f| (f.position, f.path)));
                        }
                    }
                }
                let placeholders =
                    placeholder_stages(&params).into_iter().filter_map(|s| upstream(&s).map(|n| (s, n))).collect();
                let node = graph.add_node(Instance {
                    name: inst.name(&stage.name),
                    stage: stage.name.clone(),
                    kind: stage.kind.clone(),
                    params,
                    config: inst.config.clone(),
                    files,
                    inputs,
                    placeholders,
                    expects: stage.expects.clone(),
                });
                for dep in &stage.depends_on {
                    if let Some(up) = upstream(dep) {
                        graph.update_edge(up, node, ());
                    }
                }
                nodes.insert((stage.name.as_str(), index), node);
                order.push(node);
            }
        }
        Dag { pipeline: pipeline.name.clone(), graph, order }
    }

    pub fn instance(&self, node: NodeIndex) -> &Instance {
        &self.graph[node]
    }

    /// Direct upstream nodes.
    pub fn upstream(&self, node: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.edges_directed(node, petgraph::Direction::Incoming).map(|e| e.source())
    }

    pub fn find(&self, name: &str) -> Option<NodeIndex> {
        self.order.iter().copied().find(|n| self.graph[*n].name == name)
    }
}

/// Stages named by `{STAGE.OUTPUT}` placeholders in any string parameter.
fn placeholder_stages(params: &BTreeMap<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = params.values().collect();
    while let Some(v) = stack.pop() {
        match v {
            Value::Str(s) => {
                for (_, _, scope, _) in medgen_lang::check::placeholders(s) {
                    if !medgen_lang::check::PLACEHOLDER_SCOPES.contains(&scope) && !out.iter().any(|o| o == scope) {
                        out.push(scope.to_string());
                    }
                }
            }
            Value::List(items) => stack.extend(items),
            Value::Record(fields) | Value::Ctor { args: fields, .. } => stack.extend(fields.values()),
            _ => {}
        }
    }
    out
}
