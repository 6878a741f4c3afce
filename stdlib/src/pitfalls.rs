//! The seeds' pitfalls that can be caught before anything runs, as diagnostic codes and one
//! enum whose `Display` is every message. Each code has a long explanation in
//! `stdlib/explain/CODE.md` (printed by `medgen explain`), naming the seed pitfall it prevents.
//! The stage kinds in `stages/` raise these from their `derive`.

use std::fmt;

use medgen_lang::diagnostic::{Code, DiagnosticKind, Severity};

macro_rules! codes {
    ($($name:ident = $id:literal, $sev:ident, $title:literal;)*) => {
        $(
            #[doc = $title]
            pub static $name: Code = Code {
                id: $id,
                severity: Severity::$sev,
                title: $title,
                explanation: include_str!(concat!("../explain/", $id, ".md")),
            };
        )*
        /// Every domain code, in order.
        pub static ALL: &[&Code] = &[$(&$name),*];
    };
}

codes! {
    MODE_STRATEGY = "E0101", Error, "a mode given where a strategy belongs, or the reverse";
    SEG_IN_COMPRESSION = "E0102", Error, "the segmentation mask is mixed into a compression model's images";
    CHANNEL_MISMATCH = "E0103", Error, "stages disagree on which images, channels or latent space they share";
    MISSING_MODALITY = "E0104", Error, "a stage needs a modality its dataset does not have";
    PERCEPTUAL_ON_SEG = "E0105", Error, "a perceptual loss or metric applied to segmentation masks";
    AUGMENT_WITH_SCOREAUG = "E0106", Error, "standard augmentation combined with ScoreAug";
    SDA_WITH_SCOREAUG = "E0107", Error, "SDA and ScoreAug enabled together";
    AUGMENTED_DIFFUSION_SPACE = "E0108", Error, "augmented diffusion outside a learned latent space";
    GAN_BETAS = "E0109", Error, "adversarial training with non-GAN optimiser betas";
    VAE_AUGMENT_IN_DIFFUSION = "E0110", Error, "compression-style augmentation in diffusion training";
    DISTRIBUTION_METRIC_ON_SEG = "E0111", Error, "FID, KID or CMMD computed on segmentation masks";
    MIN_SNR_RFLOW = "E0112", Error, "min-SNR loss weighting with rectified flow";
    SEG_NOT_THRESHOLDED = "E0113", Error, "generated masks evaluated without thresholding";
    EMPTY_SPLIT = "E0114", Error, "a stage needs a dataset split that is empty";
    BAD_SPLIT = "E0115", Error, "split fractions do not add up to 1";
    SPACING_SHAPE = "E0116", Error, "voxel spacing and shape disagree";
    SIZE_MISMATCH = "E0117", Error, "a spatial size the model or compressor cannot divide";
    DIMS_MISMATCH = "E0118", Error, "2D and 3D stages mixed where they cannot be";
    SAMPLING_SETUP = "E0119", Error, "guidance, a decoder or conditions that do not fit the denoiser";
    METRIC_NOT_APPLICABLE = "E0120", Error, "a metric that cannot be computed on what is evaluated";
    SCOREAUG_WITHOUT_OMEGA = "E0121", Error, "ScoreAug rotations or flips without omega conditioning";
    MISSING_WEIGHTS = "E0122", Error, "a metric or loss needs a pretrained network whose weights file is not given";
    NOT_YET = "E0123", Error, "a feature this version of medgen cannot run yet";
    SHAPE_MISMATCH = "E0124", Error, "volumes that must match in shape do not";
    WINDOW_TOO_LARGE = "E0125", Error, "images smaller than a metric's or loss's window";
    AUGMENT_ON_LATENTS = "E0126", Error, "a pixel-space setting (`augment`, `rescale`) applied to latents";
    INTENSITY_AUGMENT_ON_MASKS = "E0127", Error, "intensity augmentation applied to segmentation masks";
    QUOTED_PLACEHOLDER = "E0128", Error, "a shell placeholder inside quotes";
    SHELL_INPUT_OUTSIDE = "E0129", Error, "a shell input outside the pipeline's directory";
    STRUCTURED_LATENT_F32 = "W0101", Warning, "DC-AE structured latent with only 32 channels";
    LATENT_WITHOUT_STABILISERS = "W0102", Warning, "latent diffusion without warm-up or gradient clipping";
    MS_SSIM_SCALES = "W0103", Warning, "MS-SSIM with fewer than five scales";
}

/// Every domain problem the stage kinds report.
#[derive(Clone, Debug, PartialEq)]
pub enum Pitfall {
    StrategyAsMode { value: String },
    ModeAsStrategy { value: String },
    SegMixedIntoImages { others: Vec<String> },
    ImagesMismatch { stage: String, has: Vec<String>, mode: String, needs: Vec<String> },
    DecoderMismatch { decoder: String, encoder: String },
    MissingModality { dataset: String, missing: Vec<String>, needed_by: String },
    PerceptualLossOnSeg { what: String },
    PerceptualMetricOnSeg { metric: String },
    AugmentWithScoreAug { augment: String },
    SdaWithScoreAug,
    AugmentedDiffusionInPixelSpace,
    GanBetas { beta1: f64, beta2: f64 },
    VaeAugmentInDiffusion,
    BatchAugmentInDiffusion { method: String },
    DistributionMetricOnSeg { metric: String },
    MinSnrWithRflow,
    SegNotThresholded,
    EmptySplit { dataset: String, split: &'static str, purpose: &'static str, fraction: f64, volumes: Option<i64> },
    SplitSum { sum: f64 },
    SpacingShape { spacing: usize, shape: usize },
    NotDivisible { what: String, size: i64, factor: i64, axis: &'static str },
    AttentionLevels { attention: usize, levels: usize },
    Model3dOn2d { model: String },
    DimsMismatch { compressor: i64, model: i64 },
    DecoderMissing,
    DecoderUnneeded,
    ConditionsMissing { mode: String },
    GuidanceUntrained { scale: f64 },
    GuidanceUnconditional { mode: String, scale: f64 },
    PairedMetricUnpaired { metric: String, mode: String },
    MaskMetricOnImages { metric: String },
    MsSsimTooManyScales { scales: i64, size: i64, max: i64 },
    ScoreAugWithoutOmega { transforms: Vec<String> },
    StructuredLatentF32,
    LatentWithoutStabilisers { missing: Vec<String> },
    CfgDropoutUnconditional { mode: String },
    MsSsimFewScales { scales: i64, size: i64 },
    MissingWeights { what: String, param: &'static str },
    NotYet { feature: String, instead: String },
    HeadsNotDividing { heads: i64, channels: i64, level: usize },
    ConditionsShape { conditions: Vec<i64>, model: Vec<i64> },
    ReferenceShape { subject: Vec<i64>, reference: Vec<i64> },
    WindowTooLarge { what: String, window: i64, axis: &'static str, size: i64, fix: String },
    AugmentOnLatents { augment: String },
    RescaleOnLatents,
    DisjointPatients { metric: String, subject: String, reference: String },
    CompressorMetric { metric: String, masks: bool },
    IntensityAugmentOnMasks { augment: String },
    QuotedPlaceholder { placeholder: String, quote: char },
    ShellInputOutside { name: String, path: String },
}

/// `16×32×32`.
fn shape_text(shape: &[i64]) -> String {
    shape.iter().map(i64::to_string).collect::<Vec<_>>().join("×")
}

/// The largest divisor of `n` that is at most `limit` (at least 1).
fn largest_divisor_at_most(n: i64, limit: i64) -> i64 {
    (1..=limit.min(n)).rev().find(|d| n % d == 0).unwrap_or(1)
}

fn names(items: &[String]) -> String {
    items.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Pitfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Pitfall::*;
        match self {
            StrategyAsMode { value } => {
                write!(f, "`{value}` is a strategy (how to denoise), not a mode (what to generate)")
            }
            ModeAsStrategy { value } => {
                write!(f, "`{value}` is a mode (what to generate), not a strategy (how to denoise)")
            }
            SegMixedIntoImages { others } => {
                write!(f, "compression images mix the binary `seg` mask with intensity images {}", names(others))
            }
            ImagesMismatch { stage, has, mode, needs } => {
                write!(f, "mode `{mode}` generates {}, but `{stage}` holds {}", names(needs), names(has))
            }
            DecoderMismatch { decoder, encoder } => {
                write!(f, "the decoder `{decoder}` is not the compressor `{encoder}` that made the latents")
            }
            MissingModality { dataset, missing, needed_by } => {
                write!(f, "{needed_by} needs {}, which dataset `{dataset}` does not have", names(missing))
            }
            PerceptualLossOnSeg { what } => write!(f, "perceptual loss on segmentation masks ({what})"),
            PerceptualMetricOnSeg { metric } => {
                write!(f, "`{metric}` uses ImageNet features, meaningless on binary masks")
            }
            AugmentWithScoreAug { augment } => {
                write!(f, "standard augmentation `{augment}` is enabled together with ScoreAug")
            }
            SdaWithScoreAug => write!(f, "SDA and ScoreAug are both enabled"),
            AugmentedDiffusionInPixelSpace => {
                write!(f, "augmented diffusion needs a learned latent space, but this denoiser works on pixels")
            }
            GanBetas { beta1, beta2 } => write!(f, "adversarial training with betas [{beta1}, {beta2}]"),
            VaeAugmentInDiffusion => {
                write!(f, "the aggressive `vae` augmentation preset is used for diffusion training")
            }
            BatchAugmentInDiffusion { method } => {
                write!(f, "batch augmentation `{method}` is used for diffusion training")
            }
            DistributionMetricOnSeg { metric } => write!(f, "`{metric}` on segmentation masks"),
            MinSnrWithRflow => write!(f, "min-SNR weighting is defined for DDPM noise schedules, not rectified flow"),
            SegNotThresholded => {
                write!(f, "generated masks are evaluated as soft probabilities (`binarize_seg = false`)")
            }
            EmptySplit { dataset, split, purpose, fraction, volumes } => match volumes {
                Some(n) if *fraction > 0.0 => write!(
                    f,
                    "the {split} split of `{dataset}`, needed for {purpose}, is empty: {n} patients cannot fill every split"
                ),
                _ => write!(f, "the {split} split of `{dataset}`, needed for {purpose}, is empty (fraction {fraction})"),
            },
            SplitSum { sum } => write!(f, "split fractions add up to {sum}, not 1"),
            SpacingShape { spacing, shape } => write!(f, "`spacing` has {spacing} entries but `shape` has {shape}"),
            NotDivisible { what, size, factor, axis } => {
                write!(f, "{axis} size {size} is not divisible by {factor}, {what}")
            }
            AttentionLevels { attention, levels } => {
                write!(f, "`attention` has {attention} entries but the model has {levels} levels (`channels`)")
            }
            Model3dOn2d { model } => write!(f, "a 3D {model} cannot run on a 2D dataset"),
            DimsMismatch { compressor, model } => {
                write!(f, "the compressor is {compressor}D but the denoiser is {model}D")
            }
            DecoderMissing => {
                write!(f, "this denoiser generates latents, and no `decoder` is given to turn them into images")
            }
            DecoderUnneeded => write!(f, "this denoiser generates pixels; a `decoder` has nothing to decode"),
            ConditionsMissing { mode } => {
                write!(f, "mode `{mode}` generates from conditions, and no `conditions` are given to generate for")
            }
            GuidanceUntrained { scale } => write!(
                f,
                "guidance scale {scale} needs a denoiser trained with conditioning dropout (`cfg_dropout > 0`)"
            ),
            GuidanceUnconditional { mode, scale } => {
                write!(f, "guidance scale {scale} on mode `{mode}`, which has no image condition to guide with")
            }
            PairedMetricUnpaired { metric, mode } => write!(
                f,
                "`{metric}` compares each sample with its own reference, but mode `{mode}` samples are unconditional"
            ),
            MaskMetricOnImages { metric } => write!(f, "`{metric}` measures masks, and these samples are images"),
            MsSsimTooManyScales { size, max: 0, .. } => {
                write!(f, "images of {size} pixels are too small for MS-SSIM's 11-pixel window")
            }
            MsSsimTooManyScales { scales, size, max } => {
                write!(f, "MS-SSIM with {scales} scales needs larger images than {size} pixels (they allow {max})")
            }
            ScoreAugWithoutOmega { transforms } => {
                write!(f, "ScoreAug transforms {} without omega conditioning", names(transforms))
            }
            StructuredLatentF32 => write!(f, "a structured latent with f32 compression has only 32 channels"),
            LatentWithoutStabilisers { missing } => write!(f, "latent diffusion without {}", names(missing)),
            CfgDropoutUnconditional { mode } => {
                write!(f, "`cfg_dropout` on mode `{mode}`, which has no condition to drop")
            }
            MsSsimFewScales { scales, size } => {
                write!(f, "MS-SSIM runs with {scales} scale{} at {size} pixels", if *scales == 1 { "" } else { "s" })
            }
            MissingWeights { what, param } => {
                write!(f, "{what} cannot run without a pretrained network, and `{param}` is not set")
            }
            NotYet { feature, .. } => write!(f, "{feature} cannot run in this version of medgen yet"),
            HeadsNotDividing { heads, channels, level } => {
                write!(f, "{heads} attention heads do not divide the {channels} channels of attended level {level}")
            }
            ConditionsShape { conditions, model } => write!(
                f,
                "the conditions are volumes of {}, but the denoiser was trained on volumes of {}",
                shape_text(conditions),
                shape_text(model)
            ),
            ReferenceShape { subject, reference } => write!(
                f,
                "the evaluated volumes are {}, but the reference volumes are {}",
                shape_text(subject),
                shape_text(reference)
            ),
            AugmentOnLatents { augment } => {
                write!(f, "the image augmentation preset `{augment}` is applied to latents")
            }
            RescaleOnLatents => write!(f, "`rescale` maps pixels to [-1, 1], and this denoiser trains on latents"),
            DisjointPatients { metric, subject, reference } => write!(
                f,
                "`{metric}` compares each volume with its own patient, but the evaluated volumes are of `{subject}` and \
                 the reference is `{reference}`: no patient is in both"
            ),
            WindowTooLarge { what, window, axis, size, .. } => {
                write!(f, "{what} needs at least {window} pixels along every axis it slides over; the {axis} is {size}")
            }
            CompressorMetric { metric, masks: true } => {
                write!(f, "`{metric}` measures intensity images, and this compressor reconstructs masks")
            }
            CompressorMetric { metric, masks: false } => {
                write!(f, "`{metric}` measures masks, and this compressor reconstructs intensity images")
            }
            IntensityAugmentOnMasks { augment } => {
                write!(f, "the `{augment}` preset changes intensities, and this compressor's images are binary masks")
            }
            QuotedPlaceholder { placeholder, quote } => {
                write!(f, "`{{{placeholder}}}` is inside {quote}...{quote} quotes, where its value could end them")
            }
            ShellInputOutside { name, path } => write!(
                f,
                "input `{name}` is \"{path}\", outside the pipeline's directory: a shell stage sees its inputs linked at \
                 their relative paths in its working directory"
            ),
        }
    }
}

impl DiagnosticKind for Pitfall {
    fn code(&self) -> &'static Code {
        use Pitfall::*;
        match self {
            StrategyAsMode { .. } | ModeAsStrategy { .. } => &MODE_STRATEGY,
            SegMixedIntoImages { .. } => &SEG_IN_COMPRESSION,
            ImagesMismatch { .. } | DecoderMismatch { .. } => &CHANNEL_MISMATCH,
            MissingModality { .. } => &MISSING_MODALITY,
            PerceptualLossOnSeg { .. } | PerceptualMetricOnSeg { .. } => &PERCEPTUAL_ON_SEG,
            AugmentWithScoreAug { .. } => &AUGMENT_WITH_SCOREAUG,
            SdaWithScoreAug => &SDA_WITH_SCOREAUG,
            AugmentedDiffusionInPixelSpace => &AUGMENTED_DIFFUSION_SPACE,
            GanBetas { .. } => &GAN_BETAS,
            VaeAugmentInDiffusion | BatchAugmentInDiffusion { .. } => &VAE_AUGMENT_IN_DIFFUSION,
            DistributionMetricOnSeg { .. } => &DISTRIBUTION_METRIC_ON_SEG,
            MinSnrWithRflow => &MIN_SNR_RFLOW,
            SegNotThresholded => &SEG_NOT_THRESHOLDED,
            EmptySplit { .. } => &EMPTY_SPLIT,
            SplitSum { .. } => &BAD_SPLIT,
            SpacingShape { .. } => &SPACING_SHAPE,
            NotDivisible { .. } | AttentionLevels { .. } => &SIZE_MISMATCH,
            Model3dOn2d { .. } | DimsMismatch { .. } => &DIMS_MISMATCH,
            DecoderMissing
            | DecoderUnneeded
            | ConditionsMissing { .. }
            | GuidanceUntrained { .. }
            | GuidanceUnconditional { .. }
            | CfgDropoutUnconditional { .. } => &SAMPLING_SETUP,
            PairedMetricUnpaired { .. }
            | MaskMetricOnImages { .. }
            | MsSsimTooManyScales { .. }
            | DisjointPatients { .. }
            | CompressorMetric { .. } => &METRIC_NOT_APPLICABLE,
            ScoreAugWithoutOmega { .. } => &SCOREAUG_WITHOUT_OMEGA,
            StructuredLatentF32 => &STRUCTURED_LATENT_F32,
            LatentWithoutStabilisers { .. } => &LATENT_WITHOUT_STABILISERS,
            MsSsimFewScales { .. } => &MS_SSIM_SCALES,
            MissingWeights { .. } => &MISSING_WEIGHTS,
            NotYet { .. } => &NOT_YET,
            HeadsNotDividing { .. } => &SIZE_MISMATCH,
            ConditionsShape { .. } | ReferenceShape { .. } => &SHAPE_MISMATCH,
            WindowTooLarge { .. } => &WINDOW_TOO_LARGE,
            AugmentOnLatents { .. } | RescaleOnLatents => &AUGMENT_ON_LATENTS,
            IntensityAugmentOnMasks { .. } => &INTENSITY_AUGMENT_ON_MASKS,
            QuotedPlaceholder { .. } => &QUOTED_PLACEHOLDER,
            ShellInputOutside { .. } => &SHELL_INPUT_OUTSIDE,
        }
    }

    fn help(&self) -> Option<String> {
        use Pitfall::*;
        Some(match self {
            StrategyAsMode { value } => {
                format!("write `strategy = {value}` and choose a mode: seg, bravo, dual, multi or seg_conditioned")
            }
            ModeAsStrategy { value } => format!("write `mode = {value}` and choose a strategy: ddpm or rflow"),
            SegMixedIntoImages { others } => format!(
                "compress the images alone (`images = [{}]`) and masks in a separate stage (`images = [seg]`)",
                others.join(", ")
            ),
            ImagesMismatch { needs, .. } => {
                format!("compress exactly [{}] for this mode, or change the mode", needs.join(", "))
            }
            DecoderMismatch { encoder, .. } => format!("use `decoder: {encoder}`"),
            MissingModality { .. } => "add the modality to the dataset's `modalities`, or pick another mode".into(),
            PerceptualLossOnSeg { .. } => {
                "set `perceptual_weight = 0`; masks are trained with BCE/Dice-style losses".into()
            }
            PerceptualMetricOnSeg { .. } => "measure masks with `dice`, `iou` or `hd95`".into(),
            AugmentWithScoreAug { .. } => {
                "set `augment = none`: ScoreAug augments noisy inputs, standard augmentation clean ones".into()
            }
            SdaWithScoreAug => "keep one of them: `sda = false` or `score_aug = none`".into(),
            AugmentedDiffusionInPixelSpace => {
                "train on `encode` latents of a vae, vqvae or dcae, or set `augmented_diffusion = false`".into()
            }
            GanBetas { .. } => "use `betas = [0.5, 0.9]` for adversarial training (DCGAN, StyleGAN practice)".into(),
            VaeAugmentInDiffusion => "use `augment = diffusion` (conservative) or `none`".into(),
            BatchAugmentInDiffusion { .. } => "set `batch_augment = none`; mixing images also mixes their masks".into(),
            DistributionMetricOnSeg { .. } => {
                "FID and KID need images: measure masks with `dice`, `iou` or `hd95` against reference masks (a \
                 mask compressor's reconstructions, or another dataset's masks)"
                    .into()
            }
            MinSnrWithRflow => "remove `min_snr`, or use `strategy = ddpm`".into(),
            SegNotThresholded => "remove `binarize_seg = false`; thresholds are set with `seg_threshold`".into(),
            EmptySplit { split: "val", .. } => {
                "raise `split.val` or `volumes`: the best checkpoint is chosen on validation loss".into()
            }
            EmptySplit { split, .. } => format!("raise `split.{split}` or `volumes`"),
            SplitSum { .. } => "make `train + val + test` equal 1".into(),
            SpacingShape { .. } => {
                "give one spacing per axis, in the same (depth, height, width) order as `shape`".into()
            }
            NotDivisible { factor, .. } => format!("use a size that is a multiple of {factor}, or change the model"),
            AttentionLevels { levels, .. } => format!("give {levels} booleans, one per level"),
            Model3dOn2d { .. } => "use `dims: 2`, or a 3D dataset".into(),
            DimsMismatch { compressor, .. } => format!("use `dims: {compressor}` in the denoiser's model"),
            DecoderMissing => "add `decoder: COMPRESSOR` to the sample stage's arguments".into(),
            DecoderUnneeded => "remove `decoder`".into(),
            ConditionsMissing { .. } => {
                "add `conditions: DATASET.test` to the sample stage's arguments: its masks (or tumour counts) \
                 condition the samples"
                    .into()
            }
            GuidanceUntrained { .. } => "set `cfg_dropout = 0.1` in the diffuse stage, or `guidance = 1.0`".into(),
            GuidanceUnconditional { .. } => "use `guidance = 1.0`".into(),
            CfgDropoutUnconditional { .. } => "set `cfg_dropout = 0`; guidance needs a conditioned mode".into(),
            PairedMetricUnpaired { .. } => {
                "unconditional samples have no reference volume of their own: score images with distribution \
                 metrics (`fid`, `kid`, `cmmd`), or sample a mask-conditioned mode with `conditions: DATASET.test`"
                    .into()
            }
            MaskMetricOnImages { .. } => {
                "measure masks with these: a mask compressor's reconstructions, or a dataset's masks".into()
            }
            MsSsimTooManyScales { max: 0, .. } => "remove `ms_ssim` from `metrics`, or evaluate larger images".into(),
            MsSsimTooManyScales { max, .. } => format!("set `ms_ssim_scales = {max}` or evaluate larger images"),
            ScoreAugWithoutOmega { .. } => "set `omega: true`, or use only translation and cutout".into(),
            StructuredLatentF32 => "use `structured_latent: false` for f32, or f64/f128 compression".into(),
            LatentWithoutStabilisers { .. } => {
                "set `warmup = 10` and `grad_clip = 0.5`, as in the seeds' stable latent runs".into()
            }
            MsSsimFewScales { .. } => {
                "scores are not comparable with 5-scale MS-SSIM; evaluate larger images to compare".into()
            }
            MissingWeights { param, .. } => format!(
                "set `{param} = \"path/to/file.safetensors\"`; docs/weights.md shows the one-time conversion of the \
                 published weights"
            ),
            NotYet { instead, .. } => format!("{instead}; `medgen explain E0123` lists what is planned"),
            HeadsNotDividing { heads, channels, .. } => {
                format!(
                    "use a number of heads that divides {channels}, e.g. {}",
                    largest_divisor_at_most(*channels, *heads)
                )
            }
            ConditionsShape { .. } => {
                "condition on a split of the dataset the denoiser was trained on, or one resampled to its shape".into()
            }
            ReferenceShape { .. } => {
                "evaluate against a split of the dataset the subject was made from, or one resampled to its shape"
                    .into()
            }
            WindowTooLarge { fix, .. } => fix.clone(),
            AugmentOnLatents { .. } => {
                "set `augment = none`: flips and intensity changes of latents are not those of images".into()
            }
            RescaleOnLatents => {
                "remove `rescale`: latents arrive scaled to unit variance by `encode`, and nothing rescales them".into()
            }
            DisjointPatients { subject, .. } => format!(
                "evaluate against `reference: {subject}`, or generate for the reference's masks (`conditions:` the \
                 reference split)"
            ),
            CompressorMetric { masks: true, .. } => "measure a mask compressor with `dice` and `iou`".into(),
            CompressorMetric { masks: false, .. } => {
                "measure an image compressor with `psnr`, `ssim`, `ms_ssim` or `lpips`; compress masks in their own \
                 stage (`images = [seg]`)"
                    .into()
            }
            IntensityAugmentOnMasks { .. } => {
                "use `augment = diffusion` (a flip, the default for masks) or `augment = none`".into()
            }
            QuotedPlaceholder { .. } => "remove the quotes around it: medgen quotes every placeholder's value as one \
                                          shell word itself, whatever characters it holds"
                .into(),
            ShellInputOutside { .. } => {
                "copy or link the file into the project (a path without `..`, relative to the pipeline file)".into()
            }
        })
    }
}
