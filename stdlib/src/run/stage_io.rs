//! What every model stage's runner does with its context: read typed parameters, find its input
//! directories, write JSON outputs. Parameters were checked and resolved by the checker, so a
//! missing one here falls back to the signature's default rather than failing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use medgen_engine::runner::{RunContext, StageError};
use medgen_lang::signature::DataKind;
use medgen_lang::value::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::data::augment::Preset;
use crate::data::loader::{Axis, View};
use crate::split::Split;
use crate::train::trainer::failed;
use crate::vocab::strings;

pub type Params = BTreeMap<String, Value>;

pub fn float_param(p: &Params, name: &str) -> f64 {
    p.get(name).and_then(Value::as_f64).unwrap_or(0.0)
}

pub fn int_param(p: &Params, name: &str, default: i64) -> usize {
    p.get(name).and_then(Value::as_i64).unwrap_or(default).max(0) as usize
}

pub fn strings_param(p: &Params, name: &str) -> Vec<String> {
    p.get(name).map(strings).unwrap_or_default()
}

pub fn seed_param(p: &Params) -> u64 {
    p.get("seed").and_then(Value::as_i64).unwrap_or(0) as u64
}

/// The `augment` preset (`none` when absent).
pub fn augment_param(p: &Params) -> Preset {
    p.get("augment").and_then(Value::as_str).and_then(Preset::parse).unwrap_or(Preset::None)
}

/// The directory of input `name`.
pub fn input_dir(cx: &RunContext<'_>, name: &str) -> Result<PathBuf, StageError> {
    cx.inputs.get(name).map(|u| u.dir.clone()).ok_or_else(|| failed(format!("the input `{name}` is missing")))
}

/// What input `name` is, as the checker typed it.
pub fn input_kind(cx: &RunContext<'_>, name: &str) -> Result<DataKind, StageError> {
    cx.inputs.get(name).map(|u| u.kind).ok_or_else(|| failed(format!("the input `{name}` is missing")))
}

/// The split selected on an input (`brain.test`), if any.
pub fn input_split(cx: &RunContext<'_>, name: &str) -> Option<Split> {
    cx.inputs.get(name).and_then(|u| u.field.as_deref()).and_then(|f| match f {
        "train" => Some(Split::Train),
        "val" => Some(Split::Val),
        "test" => Some(Split::Test),
        _ => None,
    })
}

/// 2D models see axial slices; 3D models whole volumes.
pub fn view_for(dims: usize) -> View {
    if dims == 3 {
        View::Volumes
    } else {
        View::Slices { axis: Axis::Depth, drop_empty: false }
    }
}

/// A JSON file an upstream stage wrote; errors name the file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// A `VarBuilder` over trained weights in the store.
pub fn stored_weights(path: &Path, device: &Device) -> Result<VarBuilder<'static>, StageError> {
    // SAFETY: the file lies in the store, which medgen writes once and never modifies in place.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device) }
        .map_err(|e| failed(format!("{}: {e}", path.display())))
}

pub fn write_json(dir: &Path, name: &str, value: &impl Serialize) -> Result<(), StageError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| failed(format!("{name}: {e}")))?;
    std::fs::write(dir.join(name), bytes).map_err(|e| failed(format!("cannot write {name}: {e}")))
}
