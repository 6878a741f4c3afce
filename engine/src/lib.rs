//! medgen-engine: turns a checked pipeline into a DAG of stage instances and runs it, redoing
//! only what changed.
//!
//! - [`dag`]: lowering a `CheckedPipeline` into a petgraph DAG of instances;
//! - [`key`]: cache keys (read its module doc for what goes into a key and what never does);
//! - [`digest`], [`hash`]: typed blake3 digests, parallel file hashing with a stat cache;
//! - [`store`]: the crash-safe content-addressed store under `.medgen/`;
//! - [`lock`]: per-key locks between processes, whose files go when released;
//! - [`runs`]: run records, which tell a store which pipelines use it;
//! - [`plan`]: what would run and why;
//! - [`schedule`]: running instances in parallel, with per-key locks across processes;
//! - [`runner`]: the interface stage kinds implement (medgen-stdlib registers them);
//! - [`graph`]: DOT and Mermaid renderings.
//!
//! It knows nothing of models. See `docs/design.md`, "Engine semantics".

pub mod dag;
pub mod digest;
pub mod graph;
pub mod hash;
pub mod key;
pub mod lock;
pub mod plan;
pub mod runner;
pub mod runs;
pub mod schedule;
pub mod store;
