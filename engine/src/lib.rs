//! medgen-engine: turns a checked pipeline into a DAG of stage instances and runs it.
//!
//! This crate will hold the lowering of a `medgen_lang::CheckedPipeline` into a petgraph DAG
//! (sweeps expanded), the blake3 cache keys, the crash-safe content-addressed store under
//! `.medgen/`, the scheduler and the executors (local, SLURM). It knows nothing of models:
//! stage kinds are registered by `medgen-stdlib`. See `docs/design.md`, "Engine semantics".
