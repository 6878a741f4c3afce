# The seeds' best 2D architecture (exp12_1b/c): SiT-S on 256x256 slices, rectified flow, with
# a learning-rate sweep. Each sweep value is its own cached instance.
pipeline sit_s_2d

seed = 12

dataset mets = nifti {
  dir        = "data/brainmets"
  modalities = [bravo, seg]
  shape      = [160, 256, 256]
  split      = {train: 0.8, val: 0.1, test: 0.1}
}

stage sit = diffuse(mets) {
  mode     = bravo
  strategy = rflow(sampling: logit_normal)
  model    = sit(dims: 2, size: S, patch: 2)
  epochs   = 500
  batch    = 16
  ema      = 0.9999
  sweep lr in [1e-4, 5e-5]
}

stage gen = sample(sit, conditions: mets.test) {
  count  = 100
  solver = euler(steps: 25)
}

stage scores = evaluate(gen, reference: mets.test) {
  metrics         = [fid, kid]
  feature_weights = "weights/resnet50.safetensors"
}
