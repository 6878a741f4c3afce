//! The same key writes the same bytes, for every stage kind, training included: two fresh
//! projects in different directories run the same pipeline and every output file of every
//! instance is compared byte for byte (no wall-clock, host or path in an output: timings go to
//! the run record). Because of that, a retrained compressor that comes out identical stops the
//! invalidation there (early cut-off) instead of rerunning everything downstream.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{medgen, stderr};

mod common;

const PIPELINE: &str = "pipeline det
seed = 4
dataset brain = phantom {
  volumes    = 8
  shape      = [4, 32, 32]
  modalities = [t1_pre, t1_gd, seg]
  tumours    = 3
  split      = {train: 0.5, val: 0.25, test: 0.25}
}
stage vae = compress(brain) { model = vae(dims: 2, channels: [8, 16], latent_channels: 2)  epochs = 2  batch = 4 }
stage latents = encode(vae, brain)
stage ldm = diffuse(latents) {
  mode      = dual
  model     = unet(channels: [8, 16], attention: [false, true], heads: 2)
  epochs    = 2
  batch     = 4
  warmup    = 1
  grad_clip = 1.0
  ema       = 0.9
}
stage gen = sample(ldm, decoder: vae, conditions: brain.test) { count = 2  solver = heun(steps: 2) }
stage score = evaluate(gen, brain.test) { metrics = [psnr, ssim, regional] }
";

/// Every committed output of the store under `dir`: instance → (relative path → bytes).
fn outputs(dir: &Path) -> BTreeMap<String, BTreeMap<PathBuf, Vec<u8>>> {
    let mut all = BTreeMap::new();
    for entry in fs::read_dir(dir.join(".medgen/objects")).expect("the store's objects") {
        let object = entry.expect("an object").path();
        let key: serde_json::Value =
            serde_json::from_slice(&fs::read(object.join("key.json")).expect("key.json")).expect("key.json is JSON");
        let instance = key["instance"].as_str().expect("an instance name").to_string();
        let mut files = BTreeMap::new();
        collect(&object.join("out"), Path::new(""), &mut files);
        all.insert(instance, files);
    }
    all
}

fn collect(dir: &Path, rel: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for entry in fs::read_dir(dir).expect("an output directory") {
        let entry = entry.expect("an entry");
        let (path, rel) = (entry.path(), rel.join(entry.file_name()));
        if path.is_dir() {
            collect(&path, &rel, files);
        } else {
            files.insert(rel, fs::read(&path).expect("an output file"));
        }
    }
}

fn run(dir: &Path) -> String {
    let o = medgen(dir, &["run", "p.mg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stderr(&o)
}

#[test]
fn two_fresh_runs_write_identical_bytes_and_an_identical_retraining_is_cut_off() {
    let first = common::project("determinism", "first", PIPELINE);
    let second = common::project("determinism", "second-elsewhere", PIPELINE);
    run(&first);
    run(&second);
    let (a, b) = (outputs(&first), outputs(&second));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (instance, files) in &a {
        let other = &b[instance];
        assert_eq!(files.keys().collect::<Vec<_>>(), other.keys().collect::<Vec<_>>(), "{instance}: the same files");
        for (path, bytes) in files {
            assert!(bytes == &other[path], "{instance}: {} differs between two fresh runs", path.display());
            let text = String::from_utf8_lossy(bytes);
            for project in [&first, &second] {
                let project = project.display().to_string();
                assert!(!text.contains(&project), "{instance}: {} holds the path {project}", path.display());
            }
        }
    }
    for trained in ["vae", "ldm"] {
        assert!(a[trained].contains_key(Path::new("losses.json")), "{trained} logs its losses");
    }

    // Retrain the compressor from scratch: its output and its checkpoints go; it comes out
    // byte-identical, so nothing downstream reruns.
    let vae = common::object(&first.join(".medgen"), "vae");
    fs::remove_dir_all(&vae).expect("remove the compressor's output");
    let work = first.join(".medgen/work");
    if work.exists() {
        fs::remove_dir_all(&work).expect("remove the work directories");
    }
    let err = run(&first);
    assert!(err.contains("det: 1 ran, 5 cached"), "only the compressor reruns:\n{err}");
    assert_eq!(outputs(&first), a, "the retrained store holds the same outputs");
}
