# The seeds' best 3D result (exp1_1): a pixel-space 3D UNet generating BRAVO volumes
# conditioned on the tumour mask, at 256x256x160, rectified flow, sampled with 25 Euler steps
# (the FID-optimal count in the step sweep). Needs a GPU and a NIfTI dataset of your own.
pipeline bravo_pixel_3d

seed = 42

dataset mets = nifti {
  dir        = "data/brainmets"  # data/brainmets/<patient>/<modality>.nii.gz
  modalities = [bravo, seg]
  shape      = [160, 256, 256]        # depth, height, width
  spacing    = [1.0, 0.9375, 0.9375]  # mm, same order as shape
  split      = {train: 0.8, val: 0.1, test: 0.1}
}

stage ldm = diffuse(mets) {
  mode     = bravo  # generate BRAVO, conditioned on seg
  strategy = rflow(sampling: logit_normal)
  model    = unet(
    dims: 3,
    channels: [32, 64, 256, 512, 512],
    attention: [false, false, false, true, true],
  )
  epochs   = 500
  lr       = 1e-4
  batch    = 1
  ema      = 0.9999  # EMA was the best 128x128 run (exp8)
}

stage gen = sample(ldm, conditions: mets.test) {
  count  = 25
  solver = euler(steps: 25)
  batch  = 1
}

stage scores = evaluate(gen, reference: mets.test) {
  metrics         = [psnr, ms_ssim, lpips_3d, fid, kid]
  ms_ssim_scales  = 4  # 160 slices allow four scales
  lpips_weights   = "weights/lpips_alex.safetensors"
  feature_weights = "weights/resnet50.safetensors"
}
