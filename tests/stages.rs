//! The model stages end to end through the `medgen` binary, on tiny phantoms: a pixel-space and a
//! latent-space pipeline train, sample and write NIfTI volumes with the dataset's spacing; a rerun
//! executes nothing; a changed `epochs` reruns exactly the diffusion and its sampling; and a
//! training stage killed after a checkpoint resumes to the weights of an uninterrupted run; and
//! `pipelines/ci_regression.mg` meets its expectations.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{medgen, stderr};
use medgen_stdlib::io::nifti::load_nifti;

mod common;

const TIMEOUT: Duration = Duration::from_secs(300);

fn project(name: &str, pipeline: &str) -> PathBuf {
    common::project("stages", name, pipeline)
}

/// The instances a run reports as run, in order.
fn ran(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter_map(|l| l.strip_prefix("ran      "))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// The committed output directory of `instance` in the store `store` (which holds one).
fn output(store: &Path, instance: &str) -> PathBuf {
    common::object(store, instance).join("out")
}

const PHANTOM: &str = "
seed = 5
dataset brain = phantom {
  volumes    = 8
  shape      = [4, 16, 16]
  spacing    = [2.0, 1.25, 1.25]
  modalities = [MODALITIES]
  split      = {train: 0.5, val: 0.25, test: 0.25}
}
";

const PIXEL: &str = "
stage ldm = diffuse(brain) {
  mode   = bravo
  model  = unet(dims: 2, channels: [8, 16], attention: [false, true], res_blocks: 1, heads: 2)
  epochs = 2
  batch  = 8
  lr     = 1e-3
}
stage gen = sample(ldm, conditions: brain.test) {
  count  = 2
  solver = midpoint(steps: 3)
}
";

const LATENT: &str = "
stage vae = compress(brain) {
  model             = vae(dims: 2, channels: [8, 16], latent_channels: 2, res_blocks: 1)
  images            = [t1_pre, t1_gd]
  perceptual_weight = 0
  epochs            = 2
  batch             = 8
  lr                = 1e-3
}
stage latents = encode(vae, brain)
stage ldm = diffuse(latents) {
  mode      = dual
  strategy  = ddpm(timesteps: 100, prediction: v)
  model     = unet(dims: 2, channels: [8, 16], attention: [false, true], res_blocks: 1, heads: 2)
  epochs    = 2
  batch     = 8
  warmup    = 1
  grad_clip = 1.0
  ema       = 0.9
}
stage gen = sample(ldm, decoder: vae, conditions: brain.test) {
  count  = 2
  solver = euler(steps: 4)
}
";

fn pipeline(name: &str, modalities: &str, stages: &str) -> String {
    format!("pipeline {name}\n{}{stages}", PHANTOM.replace("MODALITIES", modalities))
}

/// Every sample volume exists, opens and has the phantom's shape and spacing; each generated
/// image varies within its volume and differs between the two samples (their noise differs), so
/// the sampler did not collapse to a constant or to one output.
fn check_samples(out: &Path, modalities: &[&str]) {
    let mut generated: Vec<(String, Vec<f32>)> = Vec::new();
    for sample in ["sample_0000", "sample_0001"] {
        for m in modalities {
            let path = out.join(sample).join(format!("{m}.nii.gz"));
            let v = load_nifti(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(v.shape, [4, 16, 16], "{}", path.display());
            assert_eq!(v.spacing.dhw(), [2.0, 1.25, 1.25], "{}", path.display());
            if *m != "seg" {
                let (lo, hi) = v.data.iter().fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
                assert!(hi - lo > 1e-3, "{} is constant ({lo})", path.display());
                generated.push((m.to_string(), v.data));
            }
        }
    }
    let half = generated.len() / 2;
    for ((m, first), (_, second)) in generated[..half].iter().zip(&generated[half..]) {
        assert!(first != second, "the two samples of {m} are identical");
    }
    for m in modalities.iter().filter(|m| **m != "seg") {
        assert!(out.join("previews").join(format!("{m}.png")).is_file(), "no preview of {m}");
    }
}

#[test]
fn a_pixel_pipeline_runs_reruns_nothing_and_reruns_only_what_epochs_touch() {
    let dir = project("pixel", &pipeline("pixel", "bravo, seg", PIXEL));
    let first = medgen(&dir, &["run", "p.mg", "--store", "store"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(ran(&first), ["brain", "ldm", "gen"], "{}", stderr(&first));
    let gen = output(&dir.join("store"), "gen");
    check_samples(&gen, &["bravo", "seg"]);
    let samples: serde_json::Value =
        serde_json::from_slice(&fs::read(gen.join("samples.json")).expect("samples.json")).expect("json");
    assert_eq!(samples[0]["nfe"], 6, "midpoint takes two evaluations per step: {samples}");

    let again = medgen(&dir, &["run", "p.mg", "--store", "store"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(ran(&again).is_empty(), "a rerun executes nothing: {}", stderr(&again));

    let text = fs::read_to_string(dir.join("p.mg")).expect("read p.mg").replace("epochs = 2", "epochs = 3");
    fs::write(dir.join("p.mg"), text).expect("write p.mg");
    let changed = medgen(&dir, &["run", "p.mg", "--store", "store"]);
    assert!(changed.status.success(), "{}", stderr(&changed));
    assert_eq!(ran(&changed), ["ldm", "gen"], "{}", stderr(&changed));
}

#[test]
fn a_latent_pipeline_trains_a_compressor_encodes_and_samples_decoded_volumes() {
    let dir = project("latent", &pipeline("latent", "t1_pre, t1_gd, seg", LATENT));
    let o = medgen(&dir, &["run", "p.mg", "--store", "store"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ran(&o), ["brain", "vae", "latents", "ldm", "gen"], "{}", stderr(&o));
    let store = dir.join("store");
    check_samples(&output(&store, "gen"), &["t1_pre", "t1_gd", "seg"]);
    let latents: serde_json::Value =
        serde_json::from_slice(&fs::read(output(&store, "latents").join("latents.json")).expect("latents.json"))
            .expect("json");
    assert_eq!(latents["shape"], serde_json::json!([4, 8, 8]), "a 2-level compressor halves height and width once");
    let scale = latents["scale"].as_f64().expect("a measured scale");
    let std = latents["std"].as_f64().expect("a measured std");
    assert!((scale * std - 1.0).abs() < 1e-12, "the scale is 1 / std: {scale} {std}");
    let losses = fs::read_to_string(output(&store, "ldm").join("losses.csv")).expect("losses.csv");
    assert!(losses.starts_with("epoch,step,lr,train_loss,val_loss,t_0.0-0.1"), "{losses}");
}

/// The newest complete checkpoint under any work directory of `store`.
fn has_checkpoint(store: &Path) -> bool {
    let Ok(work) = fs::read_dir(store.join("work")) else { return false };
    work.filter_map(Result::ok).any(|key| {
        fs::read_dir(key.path().join("checkpoints"))
            .map(|steps| steps.filter_map(Result::ok).any(|s| s.path().join("manifest.json").is_file()))
            .unwrap_or(false)
    })
}

#[test]
fn a_training_stage_killed_after_a_checkpoint_resumes_to_identical_weights() {
    let stages = PIXEL.replace("epochs = 2", "epochs = 6").replace("batch  = 8", "batch  = 4");
    let dir = project("resume", &pipeline("resume", "bravo, seg", &stages));
    let straight = medgen(&dir, &["run", "p.mg", "--store", "straight"]);
    assert!(straight.status.success(), "{}", stderr(&straight));

    let mut child = Command::new(env!("CARGO_BIN_EXE_medgen"))
        .args(["run", "p.mg", "--store", "killed"])
        .current_dir(&dir)
        .env("MEDGEN_DEVICE", "cpu")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start medgen");
    let started = Instant::now();
    while !has_checkpoint(&dir.join("killed")) {
        assert!(started.elapsed() < TIMEOUT, "no checkpoint appeared");
        assert!(child.try_wait().expect("poll medgen").is_none(), "medgen finished before it could be killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill -9 medgen");
    child.wait().expect("reap medgen");

    let resumed = medgen(&dir, &["run", "p.mg", "--store", "killed", "-v"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(stderr(&resumed).contains("resuming from"), "the second run resumes: {}", stderr(&resumed));
    for file in ["last.safetensors", "best.safetensors", "losses.csv", "losses.json", "denoiser.json"] {
        let a = fs::read(output(&dir.join("straight"), "ldm").join(file)).expect("straight output");
        let b = fs::read(output(&dir.join("killed"), "ldm").join(file)).expect("resumed output");
        assert!(a == b, "{file} differs between the straight and the resumed run");
    }
}

#[test]
fn the_ci_regression_pipeline_meets_its_expectations() {
    // `pipelines/ci_regression.mg` is the CI gate of the README: a run whose `expect` lines fail
    // exits non-zero, and so fails this test.
    let text = fs::read_to_string("pipelines/ci_regression.mg").expect("pipelines/ci_regression.mg");
    let dir = project("ci_regression", &text);
    let o = medgen(&dir, &["run", "p.mg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = stderr(&o);
    let expectations = report.split_once("expectations:").map(|(_, rest)| rest).unwrap_or_default();
    let declared = text.lines().filter(|l| l.trim_start().starts_with("expect ")).count();
    assert!(declared > 0, "the CI pipeline gates on expectations");
    assert_eq!(expectations.matches("  ok").count(), declared, "every expectation is checked and holds: {report}");
    fs::remove_dir_all(&dir).expect("remove the project");
}

/// The seeds' runaway run: a learning rate of 1 blows a compressor's loss up by four orders of
/// magnitude without a NaN. The stage stops at that step with a message naming the epoch, the
/// step and the setting to change; nothing downstream runs; a rerun of the same key refuses at
/// once instead of training up to the same stop.
#[test]
fn a_diverging_training_stops_at_the_step_and_says_what_to_change() {
    let text = "pipeline runaway
dataset brain = phantom { volumes = 8  shape = [4, 32, 32]  modalities = [bravo, seg] }
stage vae = compress(brain) {
  model       = vae(dims: 2, channels: [8, 16], latent_channels: 2)
  lr          = 1.0
  epochs      = 3
  batch       = 4
  spike_guard = none
}
stage latents = encode(vae, brain)
";
    let dir = project("runaway", text);
    let o = medgen(&dir, &["run", "p.mg"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("stage vae failed: epoch 1, step 1: the loss has diverged"), "{err}");
    assert!(err.contains("lower `lr`") && err.contains("divergence_guard"), "{err}");
    assert_eq!(ran(&o), ["brain"], "nothing downstream of the stop runs");
    let again = medgen(&dir, &["run", "p.mg"]);
    assert!(stderr(&again).contains("an earlier run with these settings stopped at step 1"), "{}", stderr(&again));

    let off = text.replace("spike_guard = none", "spike_guard = none\n  divergence_guard = none");
    fs::write(dir.join("p.mg"), off).expect("rewrite the pipeline");
    let o = medgen(&dir, &["run", "p.mg"]);
    assert!(o.status.success(), "`divergence_guard = none` lets it train: {}", stderr(&o));
}
