//! Lists of f64 in JSON as decimal strings, for state that must come back bit for bit.
//!
//! serde_json writes the shortest decimal that reads back as the same f64, but its default parser
//! (without the `float_roundtrip` feature) reads about one such decimal in eight an ulp off. A
//! validation loss or gradient norm that came back an ulp off could make a resumed run judge a
//! plateau or a spike differently from the uninterrupted one. The workspace now enables
//! `float_roundtrip`, but checkpoint files keep strings, parsed exactly by `str::parse` whatever
//! reads them, so the format does not depend on a parser's feature flag (format version 1).
//! Use as `#[serde(with = "super::json_f64")]`.

use serde::de::Error;
use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(values: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(values.iter().map(|v| format!("{v:?}")))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
    let strings = Vec::<String>::deserialize(deserializer)?;
    strings.iter().map(|s| s.parse().map_err(|_| D::Error::custom(format!("{s:?} is not a number")))).collect()
}
