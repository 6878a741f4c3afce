//! What every model stage's runner does with its context besides reading its configuration: find
//! its input directories, read and write JSON, load stored weights.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use medgen_engine::runner::{RunContext, StageError};
use medgen_lang::signature::DataKind;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::data::loader::{Axis, View};
use crate::split::Split;
use crate::train::trainer::failed;

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
