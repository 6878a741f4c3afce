//! Every stage kind reports exactly the metrics its checker declares: `expect` accepts the names
//! `medgen check --emit json` lists for an instance, and a finished run records exactly those
//! (no declared name missing, none produced that `expect` would refuse). Each pipeline runs the
//! kinds in a different configuration: pixel and latent space, one and several images, masks,
//! paired and unpaired samples, a shell stage's own metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use common::{medgen, stderr};

mod common;

/// Instance name → the metric names the checker declares for it.
fn declared(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let o = medgen(dir, &["check", "p.mg", "--emit", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("check --emit json prints JSON");
    let mut out = BTreeMap::new();
    for stage in json["stages"].as_array().expect("stages") {
        let instances = stage["instances"].as_array().expect("instances");
        assert_eq!(instances.len(), 1, "these pipelines have no sweeps");
        let metrics = instances[0]["outputs"]["metrics"].as_array().expect("metrics");
        let names = metrics.iter().map(|m| m.as_str().expect("a name").to_string()).collect();
        out.insert(stage["name"].as_str().expect("a name").to_string(), names);
    }
    out
}

/// The metric names the committed output of `instance` records.
fn produced(dir: &Path, instance: &str) -> BTreeSet<String> {
    let manifest = common::object(&dir.join(".medgen"), instance).join("manifest.json");
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&manifest).expect("manifest.json")).expect("JSON");
    json["metrics"].as_object().expect("metrics").keys().cloned().collect()
}

fn assert_declared_equals_produced(name: &str, pipeline: &str) {
    let dir = common::project("declared", name, pipeline);
    let declared = declared(&dir);
    let o = medgen(&dir, &["run", "p.mg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (instance, names) in &declared {
        let produced = produced(&dir, instance);
        assert_eq!(names, &produced, "{instance}: declared (left) and produced (right) metrics differ");
    }
    fs::remove_dir_all(&dir).expect("remove the project");
}

const DATASET: &str = "
seed = 3
dataset brain = phantom {
  volumes    = 8
  shape      = [4, 32, 32]
  modalities = [t1_pre, t1_gd, bravo, seg]
  split      = {train: 0.5, val: 0.25, test: 0.25}
}
";

#[test]
fn pixel_space_single_image_masks_and_a_shell_stage() {
    let stages = "
stage ldm = diffuse(brain) {
  mode   = bravo
  model  = unet(dims: 2, channels: [8, 16], attention: [false, true], res_blocks: 1, heads: 2)
  epochs = 1
  batch  = 8
}
stage gen = sample(ldm, conditions: brain.test) {
  count  = 2
  solver = euler(steps: 2)
}
stage scores = evaluate(gen, reference: brain.test) {
  metrics = [psnr, ssim, ms_ssim, regional]
  expect psnr_bravo > 0
  expect regional_tumour_bravo >= 0
}
stage masks = evaluate(brain.test, reference: brain.test) {
  metrics = [dice, hd95]
  expect precision == 1
}
stage table = shell {
  command = \"printf '{\\\"rows\\\": 3, \\\"mean\\\": 0.5}' > {out.metrics}\"
  outputs = [metrics]
  metrics = [rows, mean]
}
";
    assert_declared_equals_produced("pixel", &format!("pipeline pixel\n{DATASET}{stages}"));
}

#[test]
fn latent_space_several_images_and_unconditional_masks() {
    let stages = "
stage vae = compress(brain) {
  model             = vae(dims: 2, channels: [8, 16], latent_channels: 2, res_blocks: 1)
  images            = [t1_pre, t1_gd]
  perceptual_weight = 0
  epochs            = 1
  batch             = 8
}
stage latents = encode(vae, brain)
stage ldm = diffuse(latents) {
  mode      = dual
  model     = unet(dims: 2, channels: [8, 16], attention: [false, false], res_blocks: 1)
  epochs    = 1
  batch     = 8
  warmup    = 1
  grad_clip = 1.0
}
stage gen = sample(ldm, decoder: vae, conditions: brain.test) {
  count  = 2
  solver = heun(steps: 2)
}
stage scores = evaluate(gen, reference: brain.test) {
  metrics = [psnr, ssim]
  expect ssim_t1_gd > -1
}
stage recon = evaluate(vae, reference: brain.test) {
  metrics = [psnr, regional]
  expect regional_background_t1_pre >= 0
}
stage segs = diffuse(brain) {
  mode   = seg
  model  = unet(dims: 2, channels: [8, 16], attention: [false, false], res_blocks: 1)
  epochs = 1
  batch  = 8
}
stage masks = sample(segs) {
  count  = 2
  solver = euler(steps: 2)
  expect tumour_fraction >= 0
}
";
    assert_declared_equals_produced("latent", &format!("pipeline latent\n{DATASET}{stages}"));
}
