//! Every model, mode, space, strategy and solver through `diffuse`, `sample` and `evaluate`, at
//! toy sizes, asserting behaviour: every sample decodes to the dataset's shape, samples depend
//! on their seed and (for mask-conditioned modes) on their condition, and paired samples score.
//! Pairwise rather than the full product (which would take hours on a CPU); each pipeline below
//! says what it pairs. That the losses fall on an overfit batch is asserted per model in
//! `stdlib/tests/{unet,dit,autoencoder}.rs`.
//!
//! | pipeline | model | dims | space | mode | strategy | solver | also |
//! |---|---|---|---|---|---|---|---|
//! | `unet_bravo` | UNet | 2 | pixel | bravo | rflow | euler | EMA, guidance (cfg_dropout) |
//! | `unet3d_dual` | UNet | 3 | pixel | dual | ddpm | heun | `rescale` |
//! | `dit_seg` | DiT | 2 | pixel | seg | rflow | midpoint | |
//! | `sit_multi` | SiT | 2 | pixel | multi | rflow | rk4 | |
//! | `unet_seg_conditioned` | UNet | 2 | pixel | seg_conditioned | ddpm | bosh3 | guidance |
//! | `dit3d_bravo` | DiT | 3 | pixel | bravo | ddpm | euler | EMA |
//! | `vae_unet_dual` | KL-VAE + UNet | 2 | latent | dual | rflow | dopri5 | EMA |
//! | `vqvae_dit_bravo` | VQ-VAE + DiT | 2 | latent | bravo | ddpm | heun | |
//! | `vae3d_unet_bravo` | KL-VAE + UNet | 3 | latent | bravo | rflow | midpoint | |
//! | `vqvae3d_sit_bravo` | VQ-VAE (EMA codebook) + SiT | 3 | latent | bravo | rflow (uniform, discrete) | euler | EMA |

use std::path::{Path, PathBuf};

use common::{medgen, stderr};
use medgen_stdlib::io::nifti::load_nifti;

mod common;

const SHAPE: [usize; 3] = [4, 32, 32];

fn dataset(modalities: &str) -> String {
    format!(
        "seed = 11
dataset brain = phantom {{
  volumes    = 8
  shape      = [4, 32, 32]
  modalities = [{modalities}]
  tumours    = 8
  split      = {{train: 0.5, val: 0.25, test: 0.25}}
}}
"
    )
}

/// The committed output directory of `instance`.
fn output(dir: &Path, instance: &str) -> PathBuf {
    common::object(&dir.join(".medgen"), instance).join("out")
}

/// The generated volumes of one sample (every `.nii.gz` of `sample_0000` but the condition's
/// mask when the samples are images), each checked to have the dataset's shape.
fn sample_volumes(out: &Path, images: &[&str]) -> Vec<Vec<f32>> {
    images
        .iter()
        .map(|m| {
            let path = out.join("sample_0000").join(format!("{m}.nii.gz"));
            let v = load_nifti(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(v.shape, SHAPE, "{} decodes to the dataset's shape", path.display());
            assert!(v.data.iter().all(|x| x.is_finite()), "{} is finite", path.display());
            v.data
        })
        .collect()
}

/// Runs `stages` on a phantom with `modalities`: `gen` and `reseeded` differ only in their seed,
/// `moved` (when given) only in its conditions; all three must decode to the dataset's shape and
/// differ from `gen`.
fn run(name: &str, modalities: &str, stages: &str, images: &[&str], conditioned: bool) -> PathBuf {
    let text = format!("pipeline {name}\n{}{stages}", dataset(modalities));
    let dir = common::project("matrix", name, &text);
    let o = medgen(&dir, &["run", "p.mg"]);
    assert!(o.status.success(), "{name}:\n{}", stderr(&o));
    let gen = sample_volumes(&output(&dir, "gen"), images);
    for (image, volume) in images.iter().zip(&gen) {
        assert!(volume.iter().any(|x| *x != volume[0]), "{name}: the generated {image} is constant");
    }
    let reseeded = sample_volumes(&output(&dir, "reseeded"), images);
    assert_ne!(gen, reseeded, "{name}: samples depend on the seed");
    if conditioned {
        let masks = |instance: &str| sample_volumes(&output(&dir, instance), &["seg"]);
        assert_ne!(masks("gen"), masks("moved"), "{name}: the two conditions differ (else the test proves nothing)");
        let moved = sample_volumes(&output(&dir, "moved"), images);
        assert_ne!(gen, moved, "{name}: samples depend on their condition");
    }
    dir
}

/// `gen`, `reseeded` and (for conditioned modes) `moved`: the sampling stages `run` compares.
fn samplers(den: &str, extra: &str, solver: &str, conditioned: bool) -> String {
    let conditions = if conditioned { ", conditions: brain.test" } else { "" };
    let mut text = format!(
        "stage gen = sample({den}{extra}{conditions}) {{ count = 1  solver = {solver}  seed = 1 }}
stage reseeded = sample({den}{extra}{conditions}) {{ count = 1  solver = {solver}  seed = 2 }}
"
    );
    if conditioned {
        text.push_str(&format!(
            "stage moved = sample({den}{extra}, conditions: brain.val) {{ count = 1  solver = {solver}  seed = 1 }}\n"
        ));
    }
    text
}

fn scores(metric_images: &str) -> String {
    format!("stage scores = evaluate(gen, reference: brain.test) {{\n  metrics = [psnr]\n  expect {metric_images} > 0\n}}\n")
}

#[test]
fn unet_2d_bravo_rflow_euler_ema_guidance() {
    let stages = format!(
        "stage ldm = diffuse(brain) {{
  mode        = bravo
  strategy    = rflow
  model       = unet(dims: 2, channels: [8, 16], attention: [false, true], res_blocks: 1, heads: 2)
  epochs      = 1
  batch       = 8
  ema         = 0.9
  cfg_dropout = 0.2
}}
{}stage guided = sample(ldm, conditions: brain.test) {{ count = 1  solver = euler(steps: 3)  guidance = 2.0 }}
{}",
        samplers("ldm", "", "euler(steps: 3)", true).replace("count = 1", "count = 1  guidance = 1.0"),
        scores("psnr_bravo")
    );
    let dir = run("unet_bravo", "bravo, seg", &stages, &["bravo"], true);
    let guided = sample_volumes(&output(&dir, "guided"), &["bravo"]);
    assert_ne!(guided, sample_volumes(&output(&dir, "gen"), &["bravo"]), "guidance changes the samples");
}

#[test]
fn unet_3d_dual_ddpm_heun_rescale() {
    let stages = format!(
        "stage ldm = diffuse(brain) {{
  mode     = dual
  strategy = ddpm(timesteps: 50)
  model    = unet(dims: 3, channels: [8, 16], attention: [false, false], res_blocks: 1, heads: 2)
  rescale  = true
  epochs   = 1
  batch    = 2
}}
{}{}",
        samplers("ldm", "", "heun(steps: 2)", true),
        scores("psnr_t1_gd")
    );
    run("unet3d_dual", "t1_pre, t1_gd, seg", &stages, &["t1_pre", "t1_gd"], true);
}

#[test]
fn dit_2d_seg_rflow_midpoint() {
    let stages = format!(
        "stage ldm = diffuse(brain) {{
  mode   = seg
  model  = dit(dims: 2, size: S, patch: 4)
  epochs = 1
  batch  = 8
}}
{}",
        samplers("ldm", "", "midpoint(steps: 2)", false)
    );
    run("dit_seg", "bravo, seg", &stages, &["seg"], false);
}

#[test]
fn sit_2d_multi_rflow_rk4() {
    let stages = format!(
        "stage ldm = diffuse(brain) {{
  mode   = multi
  model  = sit(dims: 2, size: S, patch: 4)
  epochs = 1
  batch  = 8
}}
{}",
        samplers("ldm", "", "rk4(steps: 2)", true)
    );
    run("sit_multi", "t1_pre, flair, seg", &stages, &["t1_pre", "flair"], true);
}

#[test]
fn unet_2d_seg_conditioned_ddpm_bosh3_guidance() {
    let stages = format!(
        "stage ldm = diffuse(brain) {{
  mode        = seg_conditioned
  strategy    = ddpm(timesteps: 50)
  model       = unet(dims: 2, channels: [8, 16], attention: [false, false], res_blocks: 1)
  cfg_dropout = 0.2
  epochs      = 1
  batch       = 8
}}
{}",
        samplers("ldm", "", "bosh3(rtol: 0.1, atol: 0.1)", false)
            .replace("seed = ", "guidance = 1.5  seed = ")
            .replace("sample(ldm)", "sample(ldm, conditions: brain.test)")
    );
    run("unet_seg_conditioned", "bravo, seg", &stages, &["seg"], false);
}

#[test]
fn dit_3d_bravo_ddpm_euler_ema() {
    let stages = format!(
        "stage ldm = diffuse(brain) {{
  mode     = bravo
  strategy = ddpm(timesteps: 50)
  model    = dit(dims: 3, size: S, patch: 4)
  ema      = 0.9
  epochs   = 1
  batch    = 2
}}
{}{}",
        samplers("ldm", "", "euler(steps: 2)", true),
        scores("psnr_bravo")
    );
    run("dit3d_bravo", "bravo, seg", &stages, &["bravo"], true);
}

const VAE_2D: &str = "stage vae = compress(brain) {
  model             = vae(dims: 2, channels: [8, 16], latent_channels: 2, res_blocks: 1)
  perceptual_weight = 0
  epochs            = 1
  batch             = 8
}
stage latents = encode(vae, brain)
";

#[test]
fn kl_vae_latent_unet_dual_rflow_dopri5_ema() {
    let stages = format!(
        "{}stage ldm = diffuse(latents) {{
  mode      = dual
  model     = unet(dims: 2, channels: [8, 16], attention: [false, true], res_blocks: 1, heads: 2)
  ema       = 0.9
  epochs    = 1
  batch     = 8
  warmup    = 1
  grad_clip = 1.0
}}
{}{}",
        VAE_2D.replace("perceptual_weight = 0", "images            = [t1_pre, t1_gd]\n  perceptual_weight = 0"),
        samplers("ldm", ", decoder: vae", "dopri5(rtol: 0.1, atol: 0.1)", true),
        scores("psnr_t1_pre")
    );
    run("vae_unet_dual", "t1_pre, t1_gd, seg", &stages, &["t1_pre", "t1_gd"], true);
}

#[test]
fn vq_vae_latent_dit_bravo_ddpm_heun() {
    let stages = format!(
        "{}stage ldm = diffuse(latents) {{
  mode      = bravo
  strategy  = ddpm(timesteps: 50)
  model     = dit(dims: 2, size: S, patch: 2)
  epochs    = 1
  batch     = 8
  warmup    = 1
  grad_clip = 1.0
}}
{}{}",
        VAE_2D.replace(
            "vae(dims: 2, channels: [8, 16], latent_channels: 2, res_blocks: 1)",
            "vqvae(dims: 2, channels: [8, 16], latent_channels: 2, codebook: 16)"
        ),
        samplers("ldm", ", decoder: vae", "heun(steps: 2)", true),
        scores("psnr_bravo")
    );
    run("vqvae_dit_bravo", "bravo, seg", &stages, &["bravo"], true);
}

#[test]
fn kl_vae_3d_latent_unet_bravo_rflow_midpoint() {
    let stages = format!(
        "stage vae = compress(brain) {{
  model             = vae(dims: 3, channels: [8, 16], latent_channels: 2, res_blocks: 1)
  perceptual_weight = 0
  epochs            = 1
  batch             = 2
}}
stage latents = encode(vae, brain)
stage ldm = diffuse(latents) {{
  mode      = bravo
  model     = unet(dims: 3, channels: [8, 16], attention: [false, false], res_blocks: 1)
  epochs    = 1
  batch     = 2
  warmup    = 1
  grad_clip = 1.0
}}
{}{}",
        samplers("ldm", ", decoder: vae", "midpoint(steps: 2)", true),
        scores("psnr_bravo")
    );
    run("vae3d_unet_bravo", "bravo, seg", &stages, &["bravo"], true);
}

#[test]
fn vq_vae_3d_latent_sit_bravo_discrete_rflow_euler() {
    let stages = format!(
        "stage vae = compress(brain) {{
  model             = vqvae(dims: 3, channels: [8, 16], latent_channels: 2, codebook: 16, ema_decay: 0.9)
  perceptual_weight = 0
  epochs            = 1
  batch             = 2
}}
stage latents = encode(vae, brain)
stage ldm = diffuse(latents) {{
  mode      = bravo
  strategy  = rflow(sampling: uniform, continuous: false, timesteps: 50)
  model     = sit(dims: 3, size: S, patch: 2)
  ema       = 0.9
  epochs    = 1
  batch     = 2
  warmup    = 1
  grad_clip = 1.0
}}
{}{}",
        samplers("ldm", ", decoder: vae", "euler(steps: 2)", true),
        scores("psnr_bravo")
    );
    run("vqvae3d_sit_bravo", "bravo, seg", &stages, &["bravo"], true);
}
