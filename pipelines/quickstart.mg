# quickstart.mg: latent diffusion on a synthetic brain phantom; minutes on a laptop CPU.
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
  model  = vqvae(dims: 2, channels: [32, 64], latent_channels: 4, codebook: 256)
  images = [t1_pre, t1_gd]
  epochs = 20
  lr     = 2e-4
}

stage latents = encode(vae, brain)

stage ldm = diffuse(latents) {
  mode      = dual                           # WHAT: t1_pre + t1_gd, conditioned on seg
  strategy  = rflow(sampling: logit_normal)  # HOW to noise and denoise
  model     = unet(dims: 2, channels: [32, 64], attention: [false, true])
  epochs    = 40
  ema       = 0.999
  warmup    = 2
  grad_clip = 1.0
}

stage gen = sample(ldm, decoder: vae) {
  count  = 16
  solver = euler(steps: 25)
}

stage scores = evaluate(gen, reference: brain.test) {
  metrics        = [psnr, ms_ssim, lpips, kid]
  ms_ssim_scales = 2  # 32 px images allow two scales
  expect kid < 0.1    # CI regression gate
}
