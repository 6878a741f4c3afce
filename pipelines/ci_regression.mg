# A CI regression test: tiny models on a tiny phantom, a few epochs on a CPU, and `expect`
# lines that fail the run (non-zero exit) when quality drops below what main reached.
pipeline ci_regression

seed = 1

dataset tiny = phantom {
  volumes    = 16
  shape      = [8, 32, 32]
  modalities = [t1_pre, t1_gd, seg]
}

stage vae = compress(tiny) {
  model             = vae(dims: 2, channels: [16, 32], latent_channels: 4)
  perceptual_weight = 0
  epochs            = 15
  lr                = 3e-3
  batch             = 8
}

stage recon = evaluate(vae, reference: tiny.test) {
  metrics        = [psnr, ssim, ms_ssim]
  ms_ssim_scales = 2
  expect psnr > 12    # main: 13.9 dB
  expect ssim > 0.35  # main: 0.43
}

stage latents = encode(vae, tiny)

stage ldm = diffuse(latents) {
  mode      = dual
  model     = unet(channels: [16, 32], attention: [false, false])
  epochs    = 5
  lr        = 1e-3
  batch     = 8
  warmup    = 1
  grad_clip = 1.0
}

stage gen = sample(ldm, decoder: vae, conditions: tiny.test) {
  count  = 4
  solver = euler(steps: 10)
}

stage scores = evaluate(gen, reference: tiny.test) {
  metrics = [psnr, ssim]
  expect psnr_t1_gd > 8  # main: 9.9 dB
}
