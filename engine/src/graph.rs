//! `medgen graph`: the instance DAG as Graphviz DOT or Mermaid, for docs and reviews.

use std::fmt::Write;

use crate::dag::Dag;

/// DOT: `medgen graph p.mg | dot -Tsvg > p.svg`.
pub fn dot(dag: &Dag) -> String {
    let mut out =
        format!("digraph {:?} {{\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n", dag.pipeline);
    for &node in &dag.order {
        let inst = dag.instance(node);
        let _ = writeln!(out, "  n{} [label={:?}];", node.index(), format!("{}\n{}", inst.name, inst.kind));
    }
    for &node in &dag.order {
        for up in dag.upstream(node) {
            let _ = writeln!(out, "  n{} -> n{};", up.index(), node.index());
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid, for Markdown that renders it (GitHub, GitLab, many wikis).
pub fn mermaid(dag: &Dag) -> String {
    let mut out = String::from("flowchart LR\n");
    for &node in &dag.order {
        let inst = dag.instance(node);
        let label = format!("{}<br/><i>{}</i>", inst.name, inst.kind).replace('"', "#quot;");
        let _ = writeln!(out, "  n{}[\"{label}\"]", node.index());
    }
    for &node in &dag.order {
        for up in dag.upstream(node) {
            let _ = writeln!(out, "  n{} --> n{}", up.index(), node.index());
        }
    }
    out
}
