# Latent diffusion in 3D: the seeds' production compressor (exp8_1, VQ-VAE 4x with 4 latent
# channels) and their best latent denoiser (exp9_1, a mid-size 4-level UNet that needed warm-up
# and gradient clipping; the 3.5B-parameter UNet collapsed).
pipeline ldm_vqvae4x_3d

seed = 3

dataset mets = nifti {
  dir        = "data/brainmets"
  modalities = [bravo, seg]
  shape      = [160, 256, 256]
  spacing    = [1.0, 0.9375, 0.9375]
  split      = {train: 0.8, val: 0.1, test: 0.1}
}

# 256 -> 64 in-plane and 160 -> 40 in depth: latents of [4, 40, 64, 64].
stage vqvae = compress(mets) {
  model  = vqvae(dims: 3, channels: [64, 128, 256], latent_channels: 4, codebook: 512)
  images = [bravo]
  epochs = 125
  lr     = 1e-4
  batch  = 1
}

stage latents = encode(vqvae, mets) {
  batch = 1
}

stage ldm = diffuse(latents) {
  mode      = bravo
  strategy  = rflow
  model     = unet(dims: 3, channels: [128, 256, 512, 1024], attention: [false, false, true, true])
  epochs    = 500
  lr        = 1e-4
  batch     = 1
  warmup    = 10
  grad_clip = 0.5
  ema       = 0.999
}

stage gen = sample(ldm, decoder: vqvae, conditions: mets.test) {
  count  = 25
  solver = euler(steps: 25)
  batch  = 1
}

stage recon = evaluate(vqvae, reference: mets.test) {
  metrics        = [psnr, ms_ssim]
  ms_ssim_scales = 4
}

stage scores = evaluate(gen, reference: mets.test) {
  metrics         = [fid, kid]
  feature_weights = "weights/resnet50.safetensors"
}
