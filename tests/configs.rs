//! Typed configurations: each instance's settings are resolved once, by the checker, into its
//! kind's configuration (`StageKind::resolve`), and that is what the cache key hashes and the
//! runner reads. These tests read the configurations the checker emits: every default of the
//! signature applied (not a runner's own fallback), choices as their names, channel counts and
//! space from `derive`, files by parameter position.

use medgen_engine::runner::Runtime;
use medgen_lang::check::{check_file, check_source};
use medgen_lang::signature::Registry;
use medgen_stdlib::{StdRegistry, StdRuntime};
use serde_json::{json, Value};

const PIPELINE: &str = r#"
pipeline typed

dataset brain = phantom { volumes = 16  shape = [8, 32, 32]  tumours = 2 }

stage vae = compress(brain) { model = vae(dims: 2, channels: [8, 16]) }

stage latents = encode(vae, brain)

stage ldm = diffuse(latents) {
  mode      = dual
  model     = unet(channels: [16, 32])
  warmup    = 1
  grad_clip = 1.0
}

stage pix = diffuse(brain) {
  mode     = multi
  strategy = ddpm(schedule: cosine, prediction: v)
  model    = dit(patch: 4)
  rescale  = true
}

stage gen = sample(ldm, decoder: vae, conditions: brain.test) { count = 2  solver = dopri5 }

stage score = evaluate(gen, brain.test) { metrics = [psnr, ms_ssim, regional] }

stage sh = shell {
  command = "echo {params.n} {params.lr} > {out.x}"
  params  = {n: 3, lr: 1e-4, name: "a b"}
  outputs = [x]
}
"#;

/// The configuration of `stage`'s only instance.
fn config(stage: &str) -> Value {
    let report = check_source("typed.mg", PIPELINE, &[], &StdRegistry::new());
    let rendered: Vec<String> = report.diagnostics.iter().map(|d| d.render(&report.sources, false)).collect();
    let pipeline = report.pipeline.unwrap_or_else(|| panic!("{}", rendered.join("\n")));
    let stage = pipeline.stage(stage).expect("stage exists");
    assert_eq!(stage.instances.len(), 1);
    stage.instances[0].config.clone()
}

#[test]
fn training_settings_take_the_signatures_defaults() {
    // Before configurations, the runners read `epochs` with a fallback of 1 and `val_every` of
    // 1 where the signature says 100 and 5.
    let vae = config("vae");
    assert_eq!(vae["epochs"], json!(100));
    assert_eq!(vae["val_every"], json!(5));
    assert_eq!(vae["lr"], json!(1e-4));
    assert_eq!(vae["batch"], json!(16));
    assert_eq!(vae["adamw"], json!({"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}));
    assert_eq!(vae["grad_clip"], Value::Null);
    assert_eq!(vae["augment"], json!("vae"));
    assert_eq!(vae["seed"], json!(0));
}

#[test]
fn the_compressor_is_resolved_with_its_derived_images() {
    let model = &config("vae")["model"];
    assert_eq!(model["images"], json!(["t1_pre", "t1_gd"]), "every modality but the mask");
    assert_eq!(model["channels"], json!([8, 16]));
    assert_eq!(model["regularisation"], json!({"kind": "kl", "kl_weight": 1e-6}));
    // Validation metrics are those that apply to 32×32 slices: SSIM's window fits, no LPIPS
    // without weights.
    assert_eq!(config("vae")["metrics"], json!(["psnr", "ssim", "ms_ssim"]));
}

#[test]
fn the_denoiser_carries_the_channels_and_space_derive_found() {
    let ldm = config("ldm");
    assert_eq!(ldm["space"], json!("latent"));
    assert_eq!(ldm["mode"], json!("dual"));
    assert_eq!(ldm["model"]["dims"], json!(2), "the compressor's");
    assert_eq!(ldm["mask_condition"], json!(true));
    assert_eq!(ldm["model"]["in_channels"], json!(5), "4 latent channels and the mask");
    assert_eq!(ldm["model"]["out_channels"], json!(4));
    assert_eq!(ldm["model"]["architecture"]["attention"], json!([false, true]), "the deepest level by default");
    assert_eq!(
        ldm["strategy"],
        json!({"strategy": "rflow", "sampling": "logit_normal", "continuous": true, "timesteps": 1000,
               "timestep_transform": true})
    );

    let pix = config("pix");
    assert_eq!(pix["space"], json!("pixel"));
    assert_eq!(pix["rescale"], json!(true));
    assert_eq!(pix["model"]["dims"], json!(3), "the dataset's");
    assert_eq!(pix["model"]["vector"], json!({"modality": {"count": 2}}), "multi: one-hot over the images");
    assert_eq!(pix["model"]["architecture"], json!({"arch": "dit", "size": "S", "patch": 4}));
    assert_eq!(
        pix["strategy"],
        json!({"strategy": "ddpm", "timesteps": 1000, "schedule": "cosine", "prediction": "v", "min_snr": null})
    );
}

#[test]
fn sampling_and_evaluation_settings_are_typed() {
    let gen = config("gen");
    assert_eq!(gen["solver"], json!({"solver": "dopri5", "rtol": 1e-3, "atol": 1e-3}));
    assert_eq!(gen["count"], json!(2));
    assert_eq!(gen["guidance"], json!(1.0));
    let score = config("score");
    assert_eq!(score["metrics"], json!(["psnr", "ms_ssim", "regional"]));
    assert_eq!(score["dims"], json!(2), "the sampled denoiser's");
    assert_eq!(score["lpips_weights"], Value::Null);
    assert_eq!(score["seed"], json!(0), "KID's subsets follow the pipeline's seed");
}

#[test]
fn shell_values_keep_their_types() {
    let sh = config("sh");
    assert_eq!(sh["params"], json!({"n": 3, "lr": 1e-4, "name": "a b"}));
    assert_eq!(sh["outputs"], json!(["x"]));
}

#[test]
fn files_are_named_by_parameter_not_by_path() {
    let dir = std::env::temp_dir().join(format!("medgen-configs-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("data/p1")).expect("temp dir");
    std::fs::write(dir.join("prep.py"), "").expect("file");
    let source = r#"
pipeline files
dataset brain = nifti { dir = "data"  modalities = [t1_pre] }
stage prep = shell { command = "python3 {in.script} > {out.x}"  inputs = {script: "prep.py"}  outputs = [x] }
"#;
    let path = dir.join("files.mg");
    std::fs::write(&path, source).expect("pipeline");
    let report = check_file(&path, &[], &StdRegistry::new());
    let rendered: Vec<String> = report.diagnostics.iter().map(|d| d.render(&report.sources, false)).collect();
    let pipeline = report.pipeline.unwrap_or_else(|| panic!("{}", rendered.join("\n")));
    let config = |stage: &str| pipeline.stage(stage).expect("stage").instances[0].config.clone();
    assert_eq!(config("brain")["dir"], json!({"param": "dir"}));
    assert_eq!(config("brain")["normalize"], json!("percentile"));
    assert_eq!(config("brain")["shape"], Value::Null);
    assert_eq!(config("prep")["inputs"], json!({"script": {"param": "inputs.script"}}));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_kind_the_checker_knows_has_a_runner() {
    let registry = StdRegistry::new();
    let runtime = StdRuntime::new();
    for kind in registry.kinds() {
        let name = kind.signature().kind;
        assert!(runtime.runner(name).is_some(), "`{name}` checks but cannot run");
    }
}
