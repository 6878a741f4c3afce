# quickstart.mg: latent diffusion on a synthetic brain phantom; minutes on a laptop CPU.
#   medgen run --release pipelines/quickstart.mg   (see README: cargo run --release -- run ...)
pipeline quickstart

seed = 7

dataset brain = phantom {
  volumes    = 32
  shape      = [16, 32, 32]           # depth, height, width
  spacing    = [1.0, 0.9375, 0.9375]  # mm, same order as shape
  modalities = [t1_pre, t1_gd, seg]
  split      = {train: 0.75, val: 0.125, test: 0.125}
}

# Compression sees the two images only: the mask is never mixed in (E0102).
stage vae = compress(brain) {
  model             = vae(dims: 2, channels: [16, 32], latent_channels: 4, res_blocks: 1)
  images            = [t1_pre, t1_gd]
  perceptual_weight = 0  # the LPIPS loss needs weights you supply (docs/weights.md)
  epochs            = 20
  batch             = 16
  lr                = 3e-3
}

# The compressor's reconstructions of the test patients, scored voxel by voxel.
stage recon = evaluate(vae, reference: brain.test) {
  metrics = [psnr, ssim, regional]
}

stage latents = encode(vae, brain)

stage ldm = diffuse(latents) {
  mode      = dual                           # WHAT: t1_pre + t1_gd, conditioned on seg
  strategy  = rflow(sampling: logit_normal)  # HOW to noise and denoise
  model     = unet(dims: 2, channels: [32, 64], attention: [false, true], res_blocks: 1)
  epochs    = 20
  batch     = 32
  lr        = 1e-3
  ema       = 0.99  # 260 steps: 0.999 would still be mostly the initial weights
  warmup    = 2
  grad_clip = 1.0
}

# One sample per test patient, generated for that patient's tumour masks.
stage gen = sample(ldm, decoder: vae, conditions: brain.test) {
  count  = 4
  solver = euler(steps: 25)
}

# Each sample against the patient whose mask it was generated for: generation is not
# reconstruction, so expect far lower scores than `recon`'s; the tumour error shows whether the
# samples put the right intensities where the mask says.
stage scores = evaluate(gen, reference: brain.test) {
  metrics = [psnr, ssim, regional]
}
