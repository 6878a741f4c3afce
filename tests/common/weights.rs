//! Network weights the end-to-end tests write, since none can be downloaded: the right names
//! and shapes with deterministic values. Included (`#[path]`) only by the suites that need it.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

/// Writes `shapes` as a safetensors file of deterministic values that keep activations alive
/// through a deep network: convolutions scaled as He's initialisation, BatchNorm as the
/// identity, LPIPS's linear heads non-negative (as trained heads are).
pub fn write(path: &Path, shapes: Vec<(String, Vec<usize>)>) {
    let tensors: HashMap<String, Tensor> = shapes
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape))| {
            let n: usize = shape.iter().product();
            let wave = |i: usize| ((i as f32) * 0.37 + k as f32).sin();
            let values: Vec<f32> = if shape.len() == 4 {
                let scale = (4.0 / (n / shape[0]) as f32).sqrt();
                let head = name.starts_with("lin");
                (0..n).map(|i| if head { wave(i).abs() * scale } else { wave(i) * scale }).collect()
            } else if name.ends_with("running_var") || name.ends_with("weight") {
                vec![1.0; n]
            } else {
                (0..n).map(|i| wave(i) * 0.01).collect()
            };
            (name, Tensor::from_vec(values, shape, &Device::Cpu).expect("a weight tensor"))
        })
        .collect();
    candle_core::safetensors::save(&tensors, path).expect("write the weights");
}
