//! `compress` end to end through the `medgen` binary: for a 2D image compressor whose slices
//! allow SSIM, MS-SSIM and (with LPIPS weights the test writes) LPIPS, a VQ-VAE on slices too
//! small for any window, a mask compressor, and a 3D compressor, one epoch on tiny phantoms
//! reports exactly the metrics `medgen check --emit json` declares for the stage — which are
//! `compress_metric_names` of its resolved `metrics` — with sane values, logs them per epoch,
//! and passes the pipeline's `expect`s on them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{medgen, stderr};
use medgen_stdlib::compress_metric_names;
use medgen_stdlib::metrics::lpips::Lpips;

mod common;
#[path = "common/weights.rs"]
mod weights;

const PIPELINE: &str = "
pipeline compress_metrics
seed = 11

dataset brain = phantom {
  volumes    = 8
  shape      = [8, 32, 32]
  modalities = [t1_pre, t1_gd, seg]
  split      = {train: 0.5, val: 0.25, test: 0.25}
}

dataset tiny = phantom {
  volumes    = 8
  shape      = [4, 8, 8]
  modalities = [t1_pre]
  split      = {train: 0.5, val: 0.25, test: 0.25}
}

dataset cube = phantom {
  volumes    = 8
  shape      = [12, 16, 16]
  modalities = [t1_pre]
  split      = {train: 0.5, val: 0.25, test: 0.25}
}

stage slices = compress(brain) {
  model             = vae(dims: 2, channels: [8, 16], latent_channels: 2, res_blocks: 1)
  images            = [t1_pre, t1_gd]
  lpips_weights     = \"weights/lpips.safetensors\"
  perceptual_weight = 0
  epochs            = 1
  batch             = 8
  expect ssim > -1.0
}

stage small = compress(tiny) {
  model  = vqvae(dims: 2, channels: [8, 16], latent_channels: 2, res_blocks: 1, codebook: 16)
  epochs = 1
  batch  = 8
}

stage masks = compress(brain) {
  model  = vae(dims: 2, channels: [8, 16], latent_channels: 2, res_blocks: 1)
  images = [seg]
  epochs = 1
  batch  = 8
  expect dice >= 0.0
}

stage volumes = compress(cube) {
  model  = vae(dims: 3, channels: [8, 16], latent_channels: 2, res_blocks: 1)
  epochs = 1
  batch  = 2
}
";

/// What each stage must report, as the rules of `stages::compress` give it.
const EXPECTED: [(&str, &[&str]); 4] = [
    ("slices", &["lpips", "ms_ssim", "psnr", "ssim", "train_loss", "val_loss"]),
    ("small", &["psnr", "train_loss", "val_loss"]),
    ("masks", &["dice", "iou", "train_loss", "val_loss"]),
    ("volumes", &["ms_ssim", "psnr", "ssim", "train_loss", "val_loss"]),
];

/// The committed object directory of `instance` in the project's store.
fn object(dir: &Path, instance: &str) -> PathBuf {
    common::object(&dir.join(".medgen"), instance)
}

/// The metrics a finished stage reported, from its manifest.
fn produced(dir: &Path, instance: &str) -> BTreeMap<String, f64> {
    let manifest = object(dir, instance).join("manifest.json");
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&manifest).expect("manifest.json")).expect("JSON");
    serde_json::from_value(json["metrics"].clone()).expect("a metrics map")
}

/// For each stage: the metrics `medgen check --emit json` declares, and its resolved `metrics`.
fn declared(dir: &Path) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let o = medgen(dir, &["check", "p.mg", "--emit", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|m| m.as_str().map(str::to_string)).collect()
    };
    let mut out = BTreeMap::new();
    for stage in json["stages"].as_array().expect("stages") {
        let instance = &stage["instances"][0];
        let params: Vec<String> = instance["params"]["metrics"]["value"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["enum"].as_str().map(str::to_string))
            .collect();
        let name = stage["name"].as_str().expect("a stage name").to_string();
        out.insert(name, (strings(&instance["outputs"]["metrics"]), params));
    }
    out
}

/// Every value is finite, and each metric lies in its range.
fn check_values(stage: &str, metrics: &BTreeMap<String, f64>) {
    for (name, &value) in metrics {
        assert!(value.is_finite(), "{stage}: {name} = {value}");
        let range = match name.as_str() {
            "ssim" | "ms_ssim" => -1.0..=1.0,
            "dice" | "iou" => 0.0..=1.0,
            "psnr" => 0.0..=100.0,
            _ => 0.0..=f64::MAX,
        };
        assert!(range.contains(&value), "{stage}: {name} = {value} outside {range:?}");
    }
}

/// The header of the stage's loss log has a column for every validation metric.
fn check_log(dir: &Path, stage: &str, metrics: &[String]) {
    let log = fs::read_to_string(object(dir, stage).join("out/losses.csv")).expect("losses.csv");
    let header: Vec<&str> = log.lines().next().expect("a header").split(',').collect();
    for metric in metrics {
        assert!(header.contains(&metric.as_str()), "{stage}: no `{metric}` column in {header:?}");
    }
}

#[test]
fn every_compressor_reports_exactly_the_metrics_it_declares() {
    let dir = common::project("compress", "metrics", PIPELINE);
    fs::create_dir_all(dir.join("weights")).expect("create the weights dir");
    weights::write(&dir.join("weights/lpips.safetensors"), Lpips::weight_shapes());
    let declared = declared(&dir);
    let run = medgen(&dir, &["run", "p.mg"]);
    assert!(run.status.success(), "{}", stderr(&run));
    for (stage, expected) in EXPECTED {
        let (names, metrics) = &declared[stage];
        assert_eq!(names, expected, "{stage}: declared");
        assert_eq!(&compress_metric_names(metrics), names, "{stage}: declared = metric_names(metrics)");
        let produced = produced(&dir, stage);
        assert_eq!(produced.keys().collect::<Vec<_>>(), names.iter().collect::<Vec<_>>(), "{stage}: produced");
        check_values(stage, &produced);
        check_log(&dir, stage, metrics);
    }
    let _ = fs::remove_dir_all(&dir);
}
