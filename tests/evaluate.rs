//! `evaluate` end to end through the `medgen` binary on a tiny phantom: a dataset scored against
//! itself gives every metric's identity value (PSNR at its cap, SSIM 1, LPIPS 0, Dice 1, HD95 0,
//! regional errors 0, FID ≈ 0); a one-epoch compressor's reconstructions give finite, imperfect
//! scores in every output file; missing weights fail before anything is computed. The LPIPS and
//! ResNet-50 weights are written by the test from a formula (the metrics' own tests compare the
//! networks with the reference implementations).

use std::fs;
use std::path::{Path, PathBuf};

use common::{medgen, stderr};
use medgen_stdlib::metrics::lpips::Lpips;
use medgen_stdlib::nn::resnet::{ResNet50, ResNetVariant};

mod common;
#[path = "common/weights.rs"]
mod weights;

fn project(name: &str, pipeline: &str) -> PathBuf {
    let dir = common::project("evaluate", name, pipeline);
    fs::create_dir_all(dir.join("weights")).expect("create the weights dir");
    dir
}

fn write_networks(dir: &Path) {
    weights::write(&dir.join("weights/lpips.safetensors"), Lpips::weight_shapes());
    weights::write(&dir.join("weights/resnet.safetensors"), ResNet50::parameter_shapes(ResNetVariant::Torchvision));
}

/// The metrics a finished stage reported.
fn metrics(dir: &Path, instance: &str) -> serde_json::Map<String, serde_json::Value> {
    let out = common::object(&dir.join(".medgen"), instance).join("out");
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("metrics.json")).expect("metrics.json")).expect("JSON");
    for file in ["per_volume.json", "per_volume.csv", "report.md"] {
        assert!(out.join(file).is_file(), "{instance} wrote {file}");
    }
    json["metrics"].as_object().expect("a metrics object").clone()
}

fn value(m: &serde_json::Map<String, serde_json::Value>, name: &str) -> f64 {
    m.get(name).and_then(serde_json::Value::as_f64).unwrap_or_else(|| panic!("no metric {name} in {m:?}"))
}

const PIPELINE: &str = "
pipeline evaluate_test
seed = 4
dataset brain = phantom {
  volumes    = 8
  shape      = [6, 32, 32]
  modalities = [t1_pre, seg]
  split      = {train: 0.5, val: 0.25, test: 0.25}
}
stage same = evaluate(brain.test, reference: brain.test) {
  metrics         = [psnr, ssim, ms_ssim, lpips, regional, dice, iou, hd95, fid, kid]
  dims            = 2
  lpips_weights   = \"weights/lpips.safetensors\"
  feature_weights = \"weights/resnet.safetensors\"
  expect dice == 1
  expect hd95 == 0
}
stage vae = compress(brain) {
  model             = vae(dims: 2, channels: [8], latent_channels: 2, res_blocks: 1)
  images            = [t1_pre]
  perceptual_weight = 0
  epochs            = 1
  batch             = 8
}
stage recon = evaluate(vae, reference: brain.test) {
  metrics         = [psnr, ssim, lpips, regional, fid]
  lpips_weights   = \"weights/lpips.safetensors\"
  feature_weights = \"weights/resnet.safetensors\"
}
";

#[test]
fn a_dataset_against_itself_scores_perfectly_and_reconstructions_do_not() {
    let dir = project("scores", PIPELINE);
    write_networks(&dir);
    let o = medgen(&dir, &["run", "p.mg"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let same = metrics(&dir, "same");
    assert_eq!(value(&same, "psnr"), 100.0, "PSNR of identical volumes is capped at 100 dB");
    for (name, expected) in [("ssim", 1.0), ("ms_ssim", 1.0), ("lpips", 0.0), ("dice", 1.0), ("iou", 1.0)] {
        assert!((value(&same, name) - expected).abs() < 1e-9, "{name}: {}", value(&same, name));
    }
    assert_eq!(value(&same, "hd95"), 0.0);
    assert_eq!(value(&same, "regional_background"), 0.0);
    assert!(value(&same, "fid").abs() < 1e-6, "FID of a set with itself: {}", value(&same, "fid"));
    assert!(value(&same, "psnr_t1_pre") == value(&same, "psnr"), "one image: the per-image name equals the metric");

    let recon = metrics(&dir, "recon");
    let psnr = value(&recon, "psnr");
    assert!(psnr.is_finite() && psnr > 0.0 && psnr < 60.0, "a one-epoch compressor is imperfect: {psnr}");
    assert!(value(&recon, "ssim") < 0.999, "{}", value(&recon, "ssim"));
    assert!(value(&recon, "lpips") > 0.0, "{}", value(&recon, "lpips"));
    assert!(value(&recon, "regional_background") > 0.0);
    assert!(value(&recon, "fid") > value(&same, "fid"), "reconstructions are further than the data itself");

    // Every name reported is one `expect` accepts, and every name `expect` accepts is reported,
    // LPIPS, FID and KID (with its spread) included.
    let check = medgen(&dir, &["check", "p.mg", "--emit", "json"]);
    let checked: serde_json::Value = serde_json::from_slice(&check.stdout).expect("check --emit json prints JSON");
    for (instance, reported) in [("same", &same), ("recon", &recon)] {
        let stage =
            checked["stages"].as_array().expect("stages").iter().find(|s| s["name"] == instance).expect("a stage");
        let declared: Vec<&str> = stage["instances"][0]["outputs"]["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .map(|m| m.as_str().expect("a name"))
            .collect();
        let produced: Vec<&str> = reported.keys().map(String::as_str).collect();
        assert_eq!(declared, produced, "{instance}: declared (left) and produced (right) metric names");
    }

    let again = medgen(&dir, &["run", "p.mg"]);
    assert!(stderr(&again).contains("0 ran"), "a rerun computes nothing: {}", stderr(&again));
}

#[test]
fn missing_weights_are_refused_before_anything_runs() {
    let pipeline =
        PIPELINE.replace("lpips_weights   = \"weights/lpips.safetensors\"\n  feature_weights", "feature_weights");
    let dir = project("missing", &pipeline);
    write_networks(&dir);
    let o = medgen(&dir, &["run", "p.mg"]);
    assert_eq!(o.status.code(), Some(1), "the checker stops it before anything runs: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("E0122") && err.contains("`lpips` cannot run without a pretrained network"), "{err}");
    assert!(err.contains("docs/weights.md"), "{err}");
    assert!(!dir.join(".medgen/objects").exists() || fs::read_dir(dir.join(".medgen/objects")).unwrap().count() == 0);
}

/// A patient's volume from a closed-form pattern in [0.2, 0.7]: a range that percentile
/// normalisation would stretch to [0, 1].
fn pattern_volume(phase: f32) -> medgen_stdlib::data::volume::Volume {
    use medgen_stdlib::data::volume::{Spacing, Volume};
    let shape = [12, 24, 24];
    let data = (0..shape.iter().product::<usize>()).map(|i| 0.45 + 0.25 * ((i as f32) * 0.05 + phase).sin()).collect();
    Volume { shape, spacing: Spacing::new(1.5, 1.0, 1.0), data }
}

#[test]
fn another_tools_volumes_are_scored_as_the_files_hold_them() {
    use medgen_stdlib::io::nifti::save_nifti;
    use medgen_stdlib::metrics::image::{psnr, ssim, Image, SsimConfig};
    let pipeline = "
pipeline theirs
dataset truth = nifti { dir = \"truth\"  modalities = [t1_pre]  normalize = none  split = {train: 0, val: 0, test: 1} }
dataset theirs = nifti { dir = \"theirs\"  modalities = [t1_pre]  normalize = none  split = {train: 0, val: 0, test: 1} }
stage scores = evaluate(theirs, reference: truth.test) {
  metrics = [psnr, ssim]
  dims    = 3
}
";
    let dir = project("theirs", pipeline);
    let (mut expected_psnr, mut expected_ssim) = (Vec::new(), Vec::new());
    for (i, patient) in ["a01", "b02"].iter().enumerate() {
        let (truth, theirs) = (pattern_volume(i as f32), pattern_volume(i as f32 + 0.3));
        for (folder, volume) in [("truth", &truth), ("theirs", &theirs)] {
            fs::create_dir_all(dir.join(folder).join(patient)).expect("patient folder");
            save_nifti(&dir.join(folder).join(patient).join("t1_pre.nii.gz"), volume).expect("write NIfTI");
        }
        let shape = truth.shape.to_vec();
        let (x, y) = (Image::new(&truth.data, &shape).unwrap(), Image::new(&theirs.data, &shape).unwrap());
        expected_psnr.push(psnr(x, y, 1.0).unwrap());
        expected_ssim.push(ssim(x, y, &SsimConfig::default()).unwrap());
    }
    let o = medgen(&dir, &["run", "p.mg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&dir, "scores");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!((value(&m, "psnr") - mean(&expected_psnr)).abs() < 1e-9, "{} vs {expected_psnr:?}", value(&m, "psnr"));
    assert!((value(&m, "ssim") - mean(&expected_ssim)).abs() < 1e-9, "{} vs {expected_ssim:?}", value(&m, "ssim"));
}

#[test]
fn a_compressor_trains_with_the_lpips_perceptual_loss_and_refuses_to_without_its_weights() {
    let stage = |weight: &str, weights: &str| {
        format!(
            "
pipeline perceptual
seed = 2
dataset brain = phantom {{ volumes = 8  shape = [4, 32, 32]  modalities = [t1_pre, t1_gd] }}
stage vae = compress(brain) {{
  model             = vae(dims: 2, channels: [8], latent_channels: 2, res_blocks: 1)
  perceptual_weight = {weight}
  {weights}
  epochs            = 1
  batch             = 8
}}
"
        )
    };
    let train_loss = |dir: &Path| -> f64 {
        let o = medgen(dir, &["show", "vae"]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let line = text.lines().find(|l| l.contains("train_loss =")).unwrap_or_else(|| panic!("{text}"));
        line.rsplit('=').next().and_then(|v| v.trim().parse().ok()).expect("a number")
    };
    let plain = project("plain", &stage("0", ""));
    assert!(medgen(&plain, &["run", "p.mg"]).status.success());
    let with = project("perceptual", &stage("0.5", "lpips_weights = \"weights/lpips.safetensors\""));
    write_networks(&with);
    let o = medgen(&with, &["run", "p.mg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (plain_loss, perceptual_loss) = (train_loss(&plain), train_loss(&with));
    assert!(
        perceptual_loss.is_finite() && perceptual_loss > plain_loss,
        "the perceptual term adds to the loss: {perceptual_loss} vs {plain_loss}"
    );

    let missing = project("no-weights", &stage("0.5", ""));
    let o = medgen(&missing, &["run", "p.mg"]);
    assert_eq!(o.status.code(), Some(1), "the checker refuses it: {}", stderr(&o));
    assert!(stderr(&o).contains("E0122"), "{}", stderr(&o));
    let unset = project("unset", &stage("0", "").replace("perceptual_weight = 0\n", ""));
    let o = medgen(&unset, &["check", "p.mg"]);
    assert!(o.status.success(), "without weights the derived perceptual weight is 0: {}", stderr(&o));
}
