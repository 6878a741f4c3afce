//! Cache keys: what decides whether a stage instance reruns.
//!
//! # What goes into a key
//!
//! A [`CacheKey`] is a plain struct, serialised to canonical JSON (maps sorted by key, floats
//! printed shortest-round-trip) and hashed with blake3 into a [`StageKey`]. It holds:
//!
//! - the stage **kind** and its **implementation version**: a runner that changes what it
//!   computes bumps its version, and every key of that kind changes;
//! - the stage's **configuration**: what its kind resolved from the checked parameters and
//!   inputs (`StageKind::resolve`), every default applied; never the text that produced it, so
//!   reformatting a file, moving a value into a constant or writing out a default changes
//!   nothing. A stage's `seed` is part of it. It names input files by parameter position, not
//!   by path;
//! - the **content digests of input files** (shell `inputs`, dataset directories), in place of
//!   their paths: renaming a file or moving the project changes nothing, editing one byte does;
//! - for each **upstream** input, the digest of the upstream instance's *output* (its
//!   manifest), and which part of it is used (`brain.test`). Because the output digest is used
//!   and not the upstream key, an upstream that reruns and writes identical bytes leaves this
//!   key unchanged: invalidation stops there (early cut-off).
//!
//! # What never goes into a key
//!
//! Absolute paths, modification times, host names, user names, job ids, thread or GPU counts,
//! the store's location, the order of items in the file, or anything else that differs
//! between two machines or two runs producing the same result. Stat information only speeds
//! up hashing (see `hash.rs`); it never stands in for content.
//!
//! The key's contents are stored next to each output (`key.json`) and, per instance name, in
//! the store's index, so `medgen plan` can say exactly why an instance is stale by comparing
//! the new key with the last one: [`CacheKey::compare`].

use std::collections::BTreeMap;
use std::fmt;

use medgen_lang::value::Value;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::digest::{FileDigest, OutputDigest, StageKey};

/// Bumped when the layout of [`CacheKey`] itself changes.
pub const KEY_SCHEMA: u32 = 2;

/// Everything that determines a stage instance's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheKey {
    pub schema: u32,
    pub kind: String,
    pub implementation: u32,
    /// The resolved configuration the runner receives (canonical JSON: objects sorted by key).
    pub config: serde_json::Value,
    /// Dotted parameter position (`inputs.raw`) → content digest.
    pub files: BTreeMap<String, FileDigest>,
    /// Input name (or `{stage}` for a shell placeholder's stage) → the upstream output used.
    pub upstream: BTreeMap<String, UpstreamKey>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpstreamKey {
    pub output: OutputDigest,
    /// The part used, e.g. the split `test` of a dataset.
    pub field: Option<String>,
}

impl CacheKey {
    pub fn digest(&self) -> StageKey {
        let bytes = serde_json::to_vec(self).expect("a cache key serialises");
        StageKey::from_hash(blake3::hash(&bytes))
    }

    /// Why `self` differs from `old`, the key of the last successful run of the same instance.
    pub fn compare(&self, old: &CacheKey) -> Vec<StaleReason> {
        let mut reasons = Vec::new();
        if self.schema != old.schema || self.kind != old.kind {
            reasons.push(StaleReason::KindChanged { old: old.kind.clone(), new: self.kind.clone() });
            return reasons;
        }
        if self.implementation != old.implementation {
            reasons.push(StaleReason::ImplementationChanged { old: old.implementation, new: self.implementation });
        }
        diff_json("", Some(&old.config), Some(&self.config), &mut reasons);
        for (name, digest) in &self.files {
            if old.files.get(name) != Some(digest) {
                reasons.push(StaleReason::FileChanged { param: name.clone() });
            }
        }
        for (name, up) in &self.upstream {
            if old.upstream.get(name) != Some(up) {
                reasons.push(StaleReason::UpstreamChanged { input: name.clone() });
            }
        }
        reasons
    }
}

/// Reports the smallest differing parts of two configurations: `model.latent_channels 4 → 8`.
fn diff_json(at: &str, old: Option<&Json>, new: Option<&Json>, out: &mut Vec<StaleReason>) {
    match (old, new) {
        (Some(Json::Object(x)), Some(Json::Object(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                diff_json(&path, x.get(k), y.get(k), out);
            }
        }
        (o, n) if o != n => out.push(StaleReason::ParamChanged {
            name: at.to_string(),
            old: o.map(language_value),
            new: n.map(language_value),
        }),
        _ => {}
    }
}

/// A configuration value as the pipeline language writes it, for messages.
fn language_value(v: &Json) -> Value {
    match v {
        Json::Null => Value::None,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n.as_i64().map_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN)), Value::Int),
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(items) => Value::List(items.iter().map(language_value).collect()),
        Json::Object(fields) => Value::Record(fields.iter().map(|(k, v)| (k.clone(), language_value(v))).collect()),
    }
}

/// Why an instance must run.
#[derive(Clone, Debug, PartialEq)]
pub enum StaleReason {
    /// It never ran (no earlier key for its name).
    New,
    /// The key is unchanged but its output is gone (removed, collected, or found corrupt).
    OutputMissing,
    /// Its output failed verification and will be recomputed.
    OutputCorrupt {
        detail: String,
    },
    KindChanged {
        old: String,
        new: String,
    },
    ImplementationChanged {
        old: u32,
        new: u32,
    },
    ParamChanged {
        name: String,
        old: Option<Value>,
        new: Option<Value>,
    },
    FileChanged {
        param: String,
    },
    UpstreamChanged {
        input: String,
    },
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map_or("(unset)".to_string(), ToString::to_string);
        match self {
            StaleReason::New => f.write_str("new"),
            StaleReason::OutputMissing => f.write_str("output missing from the store"),
            StaleReason::OutputCorrupt { detail } => write!(f, "stored output is corrupt ({detail})"),
            StaleReason::KindChanged { old, new } => write!(f, "kind changed from {old} to {new}"),
            StaleReason::ImplementationChanged { old, new } => {
                write!(f, "implementation changed (version {old} -> {new})")
            }
            StaleReason::ParamChanged { name, old, new } => {
                write!(f, "{name} changed from {} to {}", show(old), show(new))
            }
            StaleReason::FileChanged { param } => write!(f, "input file {param} changed"),
            StaleReason::UpstreamChanged { input } => match input.strip_prefix('{').and_then(|i| i.strip_suffix('}')) {
                Some(stage) => write!(f, "output of {stage} changed"),
                None => write!(f, "input {input} changed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(lr: f64, channels: i64) -> CacheKey {
        CacheKey {
            schema: KEY_SCHEMA,
            kind: "compress".into(),
            implementation: 1,
            config: serde_json::json!({"lr": lr, "model": {"kind": "kl", "latent_channels": channels, "dims": 2}}),
            files: BTreeMap::new(),
            upstream: BTreeMap::new(),
        }
    }

    #[test]
    fn digest_is_stable_and_follows_every_field() {
        assert_eq!(key(1e-4, 4).digest(), key(1e-4, 4).digest());
        assert_ne!(key(1e-4, 4).digest(), key(2e-4, 4).digest());
        let mut other = key(1e-4, 4);
        other.implementation = 2;
        assert_ne!(other.digest(), key(1e-4, 4).digest());
        // The canonical form is the serialised struct: maps are sorted, so insertion order
        // cannot matter, and the bytes are fixed by this test.
        let json = serde_json::to_string(&key(1e-4, 4)).expect("serialises");
        assert_eq!(
            json,
            r#"{"schema":2,"kind":"compress","implementation":1,"config":{"lr":0.0001,"model":{"dims":2,"kind":"kl","latent_channels":4}},"files":{},"upstream":{}}"#
        );
    }

    #[test]
    fn compare_names_the_smallest_change() {
        let reasons = key(2e-4, 8).compare(&key(1e-4, 4));
        let text: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["lr changed from 1e-4 to 2e-4", "model.latent_channels changed from 4 to 8"]);
    }
}
