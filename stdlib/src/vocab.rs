//! The domain's vocabulary as types: modalities, modes, strategies, models, solvers, metrics.
//! Each is declared once here and used by every stage signature, so `mode` means the same
//! thing in `diffuse`, `sample` and `evaluate`.

use medgen_lang::signature::{Ctor, ParamDefault, ParamSig, Type};
use medgen_lang::value::Value;

/// MRI sequences and the tumour mask, as the seeds' dataset names them.
pub const MODALITIES: &[&str] = &["t1_pre", "t1_gd", "bravo", "flair", "t2", "seg"];

/// The segmentation mask modality: binary, never mixed with intensity images.
pub const SEG: &str = "seg";

/// What a denoiser generates (seed pitfall 1: a mode is *what*, a strategy is *how*).
pub const MODES: &[&str] = &["seg", "bravo", "dual", "multi", "seg_conditioned"];

/// How a denoiser noises and denoises.
pub const STRATEGIES: &[&str] = &["ddpm", "rflow"];

/// Metrics `evaluate` computes.
pub const METRICS: &[&str] =
    &["psnr", "ssim", "ms_ssim", "lpips", "lpips_3d", "fid", "kid", "cmmd", "dice", "iou", "hd95", "regional"];

/// Metrics that compare each sample with its own reference volume.
pub const PAIRED_METRICS: &[&str] =
    &["psnr", "ssim", "ms_ssim", "lpips", "lpips_3d", "regional", "dice", "iou", "hd95"];

/// Metrics that compare feature distributions of two sets of images (seed pitfall 62).
pub const DISTRIBUTION_METRICS: &[&str] = &["fid", "kid", "cmmd"];

/// Metrics on binary masks.
pub const MASK_METRICS: &[&str] = &["dice", "iou", "hd95"];

/// Metrics whose features come from networks pretrained on natural images (seed pitfall 9).
pub const PERCEPTUAL_METRICS: &[&str] = &["lpips", "lpips_3d"];

/// What `compress` measures on its validation split: an image compressor's reconstructions.
pub const COMPRESS_IMAGE_METRICS: &[&str] = &["psnr", "ssim", "ms_ssim", "lpips"];

/// What `compress` measures on its validation split: a mask compressor's reconstructions.
pub const COMPRESS_MASK_METRICS: &[&str] = &["dice", "iou"];

/// Every validation metric of `compress`.
pub const COMPRESS_METRICS: &[&str] = &["psnr", "ssim", "ms_ssim", "lpips", "dice", "iou"];

pub fn modality() -> Type {
    Type::enumeration("modality", MODALITIES)
}

/// A list of distinct modalities.
pub fn modalities() -> Type {
    Type::set(modality(), 1, None)
}

pub fn mode() -> Type {
    Type::enumeration("mode", MODES)
}

fn p(name: &'static str, ty: Type, default: ParamDefault, doc: &'static str) -> ParamSig {
    ParamSig::new(name, ty, default, doc)
}

fn v_int(i: i64) -> ParamDefault {
    ParamDefault::Value(Value::Int(i))
}

fn v_float(x: f64) -> ParamDefault {
    ParamDefault::Value(Value::Float(x))
}

fn v_bool(b: bool) -> ParamDefault {
    ParamDefault::Value(Value::Bool(b))
}

fn v_enum(s: &str) -> ParamDefault {
    ParamDefault::Value(Value::Enum(s.to_string()))
}

fn v_ints(items: &[i64]) -> ParamDefault {
    ParamDefault::Value(Value::List(items.iter().map(|i| Value::Int(*i)).collect()))
}

/// Spatial dimensionality of a model: 2 (slices) or 3 (volumes).
fn dims() -> ParamSig {
    p(
        "dims",
        Type::int(2, Some(3)),
        ParamDefault::Derived("the dataset's dimensionality"),
        "2 for slice models, 3 for volume models",
    )
}

fn channels(default: &[i64]) -> ParamSig {
    p(
        "channels",
        Type::list_len(Type::int(1, Some(4096)), 1, Some(8)),
        v_ints(default),
        "feature channels per resolution level",
    )
}

/// `ddpm(...)` or `rflow(...)`.
pub fn strategy() -> Type {
    Type::Variant {
        of: "strategy",
        ctors: vec![
            Ctor {
                name: "ddpm",
                doc: "denoising diffusion (Ho et al. 2020): discrete timesteps, noise schedule",
                params: vec![
                    p("timesteps", Type::int(2, Some(100_000)), v_int(1000), "number of training timesteps"),
                    p(
                        "schedule",
                        Type::enumeration("schedule", &["linear", "cosine", "scaled_linear"]),
                        v_enum("linear"),
                        "beta schedule",
                    ),
                    p(
                        "prediction",
                        Type::enumeration("prediction", &["epsilon", "sample", "v"]),
                        v_enum("epsilon"),
                        "what the network predicts",
                    ),
                ],
            },
            Ctor {
                name: "rflow",
                doc: "rectified flow: x_t = (1-t)·x0 + t·ε, t=0 clean, target v = x0 − ε",
                params: vec![
                    p(
                        "sampling",
                        Type::enumeration("timestep sampling", &["logit_normal", "uniform"]),
                        v_enum("logit_normal"),
                        "how training draws t",
                    ),
                    p("continuous", Type::Bool, v_bool(true), "continuous t in [0, 1] (seed pitfall 65)"),
                    p(
                        "timesteps",
                        Type::int(2, Some(100_000)),
                        v_int(1000),
                        "discretisation when `continuous = false`",
                    ),
                    p("timestep_transform", Type::Bool, v_bool(true), "resolution-dependent shift of t"),
                ],
            },
        ],
    }
}

/// Denoiser architectures.
pub fn denoiser_model() -> Type {
    let transformer = |name: &'static str, doc: &'static str| Ctor {
        name,
        doc,
        params: vec![
            dims(),
            p(
                "size",
                Type::enumeration("transformer size", &["S", "B", "L", "XL"]),
                v_enum("S"),
                "S: 384×12, B: 768×12, L: 1024×24, XL: 1152×28",
            ),
            p("patch", Type::int(1, Some(32)), v_int(2), "patch size; must divide every spatial dimension"),
            p("drop_path", Type::float(0.0, 0.9), v_float(0.0), "stochastic depth rate"),
        ],
    };
    Type::Variant {
        of: "denoiser model",
        ctors: vec![
            Ctor {
                name: "unet",
                doc: "convolutional UNet with time embedding (ADM-style residual blocks)",
                params: vec![
                    dims(),
                    channels(&[32, 64, 128]),
                    p(
                        "attention",
                        Type::list(Type::Bool),
                        ParamDefault::Derived("attention at the deepest level only"),
                        "self-attention per level",
                    ),
                    p("res_blocks", Type::int(1, Some(8)), v_int(2), "residual blocks per level"),
                    p(
                        "heads",
                        Type::int(1, Some(64)),
                        v_int(4),
                        "attention heads at every attended level; must divide its channels",
                    ),
                ],
            },
            transformer("dit", "Diffusion Transformer (Peebles & Xie 2023)"),
            transformer("sit", "Scalable Interpolant Transformer (Ma et al. 2024)"),
        ],
    }
}

/// Compression architectures.
pub fn compressor_model() -> Type {
    Type::Variant {
        of: "compression model",
        ctors: vec![
            Ctor {
                name: "vae",
                doc: "KL-regularised autoencoder",
                params: vec![
                    dims(),
                    channels(&[32, 64, 128]),
                    p("latent_channels", Type::int(1, Some(1024)), v_int(4), "channels of the latent"),
                    p("res_blocks", Type::int(1, Some(8)), v_int(2), "residual blocks per level"),
                    p(
                        "kl_weight",
                        Type::float(0.0, 1.0),
                        v_float(1e-6),
                        "weight of the KL term (summed over space, averaged over batch)",
                    ),
                ],
            },
            Ctor {
                name: "vqvae",
                doc: "vector-quantised autoencoder",
                params: vec![
                    dims(),
                    channels(&[32, 64, 128]),
                    p("latent_channels", Type::int(1, Some(1024)), v_int(4), "channels of the latent"),
                    p("res_blocks", Type::int(1, Some(8)), v_int(2), "residual blocks per level"),
                    p("codebook", Type::int(2, Some(65_536)), v_int(512), "codebook entries"),
                    p("commitment", Type::float(0.0, 10.0), v_float(0.25), "commitment loss weight"),
                    p(
                        "ema_decay",
                        Type::optional(Type::float_in(0.0, true, 1.0, false)),
                        ParamDefault::Value(Value::None),
                        "learn the codebook by EMA updates with this decay instead of its loss",
                    ),
                ],
            },
            Ctor {
                name: "dcae",
                doc: "deep compression autoencoder (Chen et al. 2024)",
                params: vec![
                    dims(),
                    p(
                        "compression",
                        Type::enumeration("DC-AE compression", &["f32", "f64", "f128"]),
                        v_enum("f32"),
                        "f32: 32 ch /32; f64: 128 ch /64; f128: 512 ch /128",
                    ),
                    p("structured_latent", Type::Bool, v_bool(false), "DC-AE 1.5 structured latent space"),
                ],
            },
        ],
    }
}

/// ODE/SDE solvers for sampling.
pub fn solver() -> Type {
    let fixed = |name: &'static str, doc: &'static str| Ctor {
        name,
        doc,
        params: vec![p("steps", Type::int(1, Some(10_000)), v_int(25), "integration steps")],
    };
    let adaptive = |name: &'static str, doc: &'static str| Ctor {
        name,
        doc,
        params: vec![
            p("rtol", Type::float_in(0.0, false, 1.0, false), v_float(1e-3), "relative tolerance"),
            p("atol", Type::float_in(0.0, false, 1.0, false), v_float(1e-3), "absolute tolerance"),
        ],
    };
    Type::Variant {
        of: "solver",
        ctors: vec![
            fixed("euler", "first-order Euler; 25 steps is the seeds' best FID"),
            fixed("midpoint", "second-order midpoint"),
            fixed("heun", "second-order Heun"),
            fixed("rk4", "classical fourth-order Runge–Kutta"),
            adaptive("bosh3", "adaptive Bogacki–Shampine 3(2)"),
            adaptive("dopri5", "adaptive Dormand–Prince 5(4)"),
        ],
    }
}

/// ScoreAug: augmentation of noisy inputs, with omega conditioning.
pub fn score_aug() -> Type {
    Type::optional(Type::Variant {
        of: "ScoreAug configuration",
        ctors: vec![Ctor {
            name: "scoreaug",
            doc: "augment noisy inputs; the model is told the transform (omega conditioning)",
            params: vec![
                p(
                    "transforms",
                    Type::set(
                        Type::enumeration("ScoreAug transform", &["rotation", "flip", "translation", "cutout"]),
                        1,
                        None,
                    ),
                    ParamDefault::Value(Value::List(vec![Value::Enum("rotation".into()), Value::Enum("flip".into())])),
                    "transforms to draw from",
                ),
                p("omega", Type::Bool, v_bool(true), "condition the model on the transform drawn (seed pitfall 25)"),
                p("probability", Type::float(0.0, 1.0), v_float(0.5), "probability of augmenting a sample"),
            ],
        }],
    })
}

/// The standard (clean-image) augmentation presets (seed pitfall 20).
pub fn augment() -> Type {
    Type::enumeration("augmentation preset", &["none", "diffusion", "vae"])
}

/// Batch-level augmentation that mixes images (seed pitfall 21).
pub fn batch_augment() -> Type {
    Type::enumeration("batch augmentation", &["none", "mixup", "cutmix"])
}

/// Parameters every training stage has.
pub fn training_params(default_epochs: i64, default_lr: f64) -> Vec<ParamSig> {
    vec![
        p("epochs", Type::int(1, Some(1_000_000)), v_int(default_epochs), "passes over the training split"),
        p("lr", Type::float_in(0.0, false, 1.0, true), v_float(default_lr), "peak learning rate (AdamW)"),
        p("batch", Type::int(1, Some(65_536)), v_int(16), "batch size"),
        p("warmup", Type::int(0, None), v_int(0), "epochs of linear learning-rate warm-up"),
        p(
            "grad_clip",
            Type::optional(Type::positive()),
            ParamDefault::Value(Value::None),
            "clip the global gradient norm to this value",
        ),
        p(
            "ema",
            Type::optional(Type::float_in(0.0, false, 1.0, false)),
            ParamDefault::Value(Value::None),
            "decay of an exponential moving average of the weights",
        ),
        p("weight_decay", Type::float(0.0, 1.0), v_float(0.0), "AdamW weight decay"),
        p(
            "betas",
            Type::list_len(Type::float_in(0.0, true, 1.0, false), 2, Some(2)),
            ParamDefault::Value(Value::List(vec![Value::Float(0.9), Value::Float(0.999)])),
            "AdamW betas",
        ),
        p(
            "spike_guard",
            Type::optional(Type::float_in(1.0, false, 1e9, true)),
            v_float(crate::train::guard::DEFAULT_SPIKE_FACTOR),
            "a gradient norm this many times the median of the last 100 steps is a spike: training stops, or \
             with `grad_clip` the step is clipped and logged; `none` turns the check off",
        ),
        p(
            "divergence_guard",
            Type::optional(Type::float_in(1.0, false, 1e12, true)),
            v_float(crate::train::guard::DEFAULT_DIVERGENCE_FACTOR),
            "a training loss this many times the lowest median of its last 100 steps is divergence: training \
             stops at that step, keeping the last epoch's checkpoint; `none` turns the check off",
        ),
        p(
            "val_every",
            Type::int(1, None),
            v_int(5),
            "validate every N epochs (a best checkpoint needs a real validation)",
        ),
        p(
            "seed",
            Type::int(0, None),
            ParamDefault::Derived("the pipeline's `seed`"),
            "seed of this stage's random streams",
        ),
    ]
}

/// The modalities a mode generates; `multi` generates each of the dataset's images in turn.
pub fn mode_images(mode: &str, dataset_images: &[String]) -> Vec<String> {
    match mode {
        "bravo" => vec!["bravo".into()],
        "dual" => vec!["t1_pre".into(), "t1_gd".into()],
        "seg" | "seg_conditioned" => vec![SEG.into()],
        _ => dataset_images.to_vec(),
    }
}

/// Whether a mode's images are conditioned on the tumour mask.
pub fn mode_conditions_on_seg(mode: &str) -> bool {
    matches!(mode, "bravo" | "dual" | "multi")
}

/// Whether a mode generates segmentation masks.
pub fn mode_generates_seg(mode: &str) -> bool {
    matches!(mode, "seg" | "seg_conditioned")
}

/// `[a, b]` as a list of enum values.
pub fn names(items: &[String]) -> Value {
    Value::List(items.iter().map(|s| Value::Enum(s.clone())).collect())
}

/// The names of a list of enum values.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_list().iter().filter_map(|x| x.as_str().map(str::to_string)).collect()
}
