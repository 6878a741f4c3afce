//! `compress`: train a VAE, VQ-VAE or DC-AE on a dataset's images. Its output is a compressor
//! whose latent channels and scale factors are *outputs* that `encode`, `diffuse` and `sample`
//! read — never guessed later from a checkpoint (seed pitfall 72).
//!
//! **Validation metrics.** The `metrics` parameter is resolved here, once, to what the runner
//! computes on the validation split, and [`metric_names`] of it is what the stage declares, so
//! an `expect` on a compressor names only what will be measured. By default it is every metric
//! that applies ([`MetricRules::applicable`]): `psnr`, `ssim` and `ms_ssim` when SSIM's window
//! fits every side the model sees, and `lpips` when its weights are given and AlexNet fits the
//! axial slices, for images; `dice` and `iou` for masks. When the dataset's shape is known only
//! at run time (`nifti` without `shape`), the default holds only what does not depend on size.
//!
//! **Masks** (`images = [seg]`) are compressed as masks: no intensity augmentation (E0127; the
//! default preset is the flip-only `diffusion`), no perceptual loss (E0105), and the runner
//! trains them with BCE + soft Dice (seed pitfall 45).

use medgen_lang::signature::{
    DataKind, DeriveCx, InputSig, Outputs, ParamDefault, ParamSig, PathKind, Signature, StageKind, Type,
};
use medgen_lang::syntax::ast::DeclKeyword;
use medgen_lang::value::Value;
use serde::{Deserialize, Serialize};

use crate::data::augment::Preset;
use crate::nn::alexnet::MIN_INPUT_SIDE;
use crate::pitfalls::Pitfall;
use crate::run::compress_validation::Measure;
use crate::run::compressor::{CompressorSpec, Regularisation};
use crate::train::trainer::TrainConfig;
use crate::vocab::{
    self, augment, batch_augment, compressor_model, modalities, names, strings, COMPRESS_IMAGE_METRICS,
    COMPRESS_MASK_METRICS, COMPRESS_METRICS, SEG,
};

use super::evaluate::MS_SSIM_WINDOW;
use super::resolve::{arg, choice, optional_file, param, to_json, Choice, ParamFile, Resolved};
use super::{axes, axial, derive_seed, too_small, train_config, DatasetView};

/// What a `compress` instance trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct CompressConfig {
    /// The architecture, the images it compresses and its regularisation.
    pub model: CompressorSpec,
    #[serde(flatten)]
    pub train: TrainConfig,
    pub batch: usize,
    pub augment: Preset,
    /// Weight of the LPIPS loss; 0: none.
    pub perceptual_weight: f64,
    pub lpips_weights: Option<ParamFile>,
    /// The validation metrics, resolved from what applies.
    pub metrics: Vec<Measure>,
}

/// The architecture a `model = vae(...)`/`vqvae(...)` value states, every argument filled by the
/// checker.
fn compressor_spec(model: &Value, images: Vec<String>) -> Resolved<CompressorSpec> {
    let regularisation = match model.variant() {
        Some("vae") => Regularisation::Kl { kl_weight: arg(model, "kl_weight")? },
        Some("vqvae") => Regularisation::Vq {
            codebook: arg(model, "codebook")?,
            commitment: arg(model, "commitment")?,
            ema_decay: arg(model, "ema_decay")?,
        },
        other => return Err(format!("no compressor runs the model {other:?}")),
    };
    Ok(CompressorSpec {
        regularisation,
        dims: arg(model, "dims")?,
        images,
        channels: arg(model, "channels")?,
        res_blocks: arg(model, "res_blocks")?,
        latent_channels: arg(model, "latent_channels")?,
    })
}

/// Weight of the perceptual loss for image compression when the file does not say.
pub const DEFAULT_PERCEPTUAL_WEIGHT: f64 = 1e-3;

pub struct Compress {
    sig: Signature,
}

impl Compress {
    pub fn new() -> Self {
        let mut params = vec![
            ParamSig::new(
                "model",
                compressor_model(),
                ParamDefault::Required,
                "the autoencoder: vae(...), vqvae(...) or dcae(...)",
            ),
            ParamSig::new(
                "images",
                modalities(),
                ParamDefault::Derived("every modality but `seg`"),
                "modalities compressed together, one channel each",
            ),
            ParamSig::new(
                "perceptual_weight",
                Type::float(0.0, 10.0),
                ParamDefault::Derived("1e-3 for images when `lpips_weights` is given, otherwise 0"),
                "weight of the LPIPS perceptual loss",
            ),
            ParamSig::new(
                "lpips_weights",
                Type::optional(Type::Path(PathKind::File)),
                ParamDefault::Value(Value::None),
                "safetensors with LPIPS AlexNet and linear heads, for the perceptual loss (docs/weights.md)",
            ),
            ParamSig::new(
                "adv_weight",
                Type::float(0.0, 10.0),
                ParamDefault::Value(Value::Float(0.0)),
                "weight of the adversarial (GAN) loss; 0 disables the discriminator",
            ),
            ParamSig::new(
                "augment",
                augment(),
                ParamDefault::Derived("`vae` for images, `diffusion` (a flip only) for masks"),
                "clean-image augmentation preset (`vae` is the aggressive one; masks take no intensity change)",
            ),
            ParamSig::new(
                "metrics",
                Type::set(Type::enumeration("validation metric", COMPRESS_METRICS), 0, None),
                ParamDefault::Derived(
                    "every one that applies: `psnr`, `ssim`, `ms_ssim`, `lpips` (with `lpips_weights`) as the image \
                     size allows, or `dice`, `iou` for masks",
                ),
                "measured on the validation split; reported at the best epoch with `train_loss` and `val_loss`",
            ),
            ParamSig::new(
                "batch_augment",
                batch_augment(),
                ParamDefault::Value(Value::Enum("none".into())),
                "mixup or cutmix across a batch",
            ),
        ];
        params.extend(vocab::training_params(100, 1e-4));
        Compress {
            sig: Signature {
                kind: "compress",
                keyword: DeclKeyword::Stage,
                doc: "train an autoencoder that compresses images to latents",
                inputs: vec![InputSig {
                    name: "data",
                    kinds: vec![DataKind::Dataset],
                    required: true,
                    doc: "the dataset to train on",
                }],
                params,
                output: DataKind::Compressor,
            },
        }
    }
}

/// Latent channels and spatial scale factor of a compressor model.
pub(crate) fn latent_geometry(model: &Value) -> (i64, i64) {
    match model.variant() {
        Some("dcae") => match model.get("compression").and_then(Value::as_str) {
            Some("f64") => (128, 64),
            Some("f128") => (512, 128),
            _ => (32, 32),
        },
        _ => {
            let levels = model.get("channels").map_or(1, |c| c.as_list().len().max(1));
            (model.get("latent_channels").and_then(Value::as_i64).unwrap_or(4), 1 << (levels - 1))
        }
    }
}

impl StageKind for Compress {
    fn signature(&self) -> &Signature {
        &self.sig
    }

    fn derive(&self, cx: &mut DeriveCx<'_>) -> Outputs {
        derive_seed(cx);
        let Some(view) = cx.input("data") else {
            return Outputs::default();
        };
        let data = DatasetView::read(view);
        let images_span = cx.span_of("images");
        if !cx.is_set("images") {
            let images = data.images();
            let images = if images.is_empty() { vec![SEG.to_string()] } else { images };
            cx.derive("images", names(&images));
        }
        let images = strings(cx.value("images"));
        let seg_only = images == [SEG];
        if images.len() > 1 && images.iter().any(|m| m == SEG) {
            let others = images.iter().filter(|m| *m != SEG).cloned().collect();
            cx.error(Pitfall::SegMixedIntoImages { others }, images_span);
        }
        data.require(cx, &images, "`compress`", images_span);
        let has_lpips = !cx.value("lpips_weights").is_none();
        let slice_too_small = data.shape.as_deref().and_then(|shape| {
            let fix = "set `perceptual_weight = 0`, or compress larger images";
            too_small(&axial(shape), MIN_INPUT_SIDE as i64, "the perceptual loss (LPIPS on axial slices)", fix)
        });
        if !cx.is_set("perceptual_weight") {
            let usable = has_lpips && !seg_only && slice_too_small.is_none();
            cx.derive("perceptual_weight", Value::Float(if usable { DEFAULT_PERCEPTUAL_WEIGHT } else { 0.0 }));
        } else if cx.value("perceptual_weight").as_f64().unwrap_or(0.0) > 0.0 {
            let span = cx.span_of("perceptual_weight");
            if seg_only {
                cx.error(Pitfall::PerceptualLossOnSeg { what: "a mask compressor".into() }, span);
            } else if !has_lpips {
                let what = "the perceptual loss (`perceptual_weight`)".to_string();
                cx.error(Pitfall::MissingWeights { what, param: "lpips_weights" }, span);
            } else if let Some(too_small) = slice_too_small {
                cx.error(too_small, span);
            }
        }
        check_gan_betas(cx);
        refuse_not_yet(cx);
        data.require_training_splits(cx, cx.decl_span);

        let model_span = cx.span_of("model");
        let mut model = cx.value("model").clone();
        let dims = fill_dims(cx, &mut model, data.dims);
        check_not_3d_on_2d(cx, &model, dims, data.dims);
        if model.variant() == Some("dcae")
            && model.get("compression").and_then(Value::as_str) == Some("f32")
            && model.get("structured_latent").and_then(Value::as_bool) == Some(true)
        {
            cx.error(Pitfall::StructuredLatentF32, model_span);
        }
        let (latent_channels, scale) = latent_geometry(&model);
        let depth_scale = if dims == 3 { scale } else { 1 };
        let latent_shape = data.shape.as_ref().map(|shape| {
            let what = format!("the compressor's downsampling factor ({scale}x)");
            check_divisible(cx, shape, dims, scale, &what, model_span);
            latent_shape(shape, dims, scale)
        });
        derive_augment(cx, seg_only);
        let rules = MetricRules { masks: seg_only, shape: data.shape.as_deref(), dims, lpips: has_lpips };
        let metrics = resolve_metrics(cx, &rules);
        let mut o = Outputs::default();
        o.value("kind", Value::Enum(model.variant().unwrap_or("vae").to_string()))
            .value("dims", Value::Int(dims))
            .value("images", names(&images))
            .value("in_channels", Value::Int(images.len() as i64))
            .value("latent_channels", Value::Int(latent_channels))
            .value("scale_factor", Value::Int(scale))
            .value("depth_scale_factor", Value::Int(depth_scale))
            .value(
                "latent_shape",
                latent_shape.map_or(Value::None, |s| Value::List(s.into_iter().map(Value::Int).collect())),
            );
        o.metrics = metric_names(&metrics);
        o
    }

    fn resolve(&self, cx: &DeriveCx<'_>, _: &Outputs) -> Resolved<serde_json::Value> {
        to_json(&CompressConfig {
            model: compressor_spec(&param(cx, "model")?, param(cx, "images")?)?,
            train: train_config(cx)?,
            batch: param(cx, "batch")?,
            augment: choice(cx, "augment")?,
            perceptual_weight: param(cx, "perceptual_weight")?,
            lpips_weights: optional_file(cx, "lpips_weights")?,
            metrics: param::<Vec<Choice<Measure>>>(cx, "metrics")?.into_iter().map(|m| m.0).collect(),
        })
    }
}

/// The names a `compress` stage with validation `metrics` reports (`run::compress` reports
/// exactly these), sorted: `train_loss` (the last epoch's), `val_loss` (the best) and every
/// metric at the best epoch.
pub fn metric_names(metrics: &[String]) -> Vec<String> {
    let mut names: Vec<String> =
        ["train_loss", "val_loss"].iter().map(|m| m.to_string()).chain(metrics.iter().cloned()).collect();
    names.sort();
    names.dedup();
    names
}

/// What decides which validation metrics a compressor can report.
pub struct MetricRules<'a> {
    /// A mask compressor (`images = [seg]`).
    pub masks: bool,
    /// The dataset's shape; `None` when it is known only at run time.
    pub shape: Option<&'a [i64]>,
    /// The model's dims: SSIM slides over the sides it sees.
    pub dims: i64,
    /// Whether `lpips_weights` is given.
    pub lpips: bool,
}

impl MetricRules<'_> {
    /// Every validation metric that applies, in [`COMPRESS_METRICS`] order; with an unknown
    /// shape only those that do not depend on the image size.
    pub fn applicable(&self) -> Vec<String> {
        let size_known = |m: &str| self.shape.is_some() || !matches!(m, "ssim" | "ms_ssim" | "lpips");
        COMPRESS_METRICS.iter().filter(|m| size_known(m) && self.problem(m).is_none()).map(|m| m.to_string()).collect()
    }

    /// Why `metric` cannot be measured on this compressor's validation split, if it cannot.
    pub fn problem(&self, metric: &str) -> Option<Pitfall> {
        let wrong_kind = if self.masks { COMPRESS_IMAGE_METRICS } else { COMPRESS_MASK_METRICS };
        if wrong_kind.contains(&metric) {
            return Some(Pitfall::CompressorMetric { metric: metric.to_string(), masks: self.masks });
        }
        if metric == "lpips" && !self.lpips {
            return Some(Pitfall::MissingWeights { what: "the `lpips` metric".into(), param: "lpips_weights" });
        }
        let shape = self.shape?;
        let fix = if self.dims == 3 && metric != "lpips" {
            format!("use a 2D model (`dims: 2`), whose axial slices SSIM scores, or remove `{metric}` from `metrics`")
        } else {
            format!("remove `{metric}` from `metrics`, or compress larger images")
        };
        match metric {
            "ssim" | "ms_ssim" => {
                too_small(&model_axes(shape, self.dims), MS_SSIM_WINDOW, "SSIM's Gaussian window", &fix)
            }
            "lpips" => too_small(&axial(shape), MIN_INPUT_SIDE as i64, "`lpips` (AlexNet on axial slices)", &fix),
            _ => None,
        }
    }
}

/// The validation metrics: those the file names, each checked, or every one that applies.
fn resolve_metrics(cx: &mut DeriveCx<'_>, rules: &MetricRules<'_>) -> Vec<String> {
    if !cx.is_set("metrics") {
        let metrics = rules.applicable();
        cx.derive("metrics", names(&metrics));
        return metrics;
    }
    let metrics = strings(cx.value("metrics"));
    let span = cx.span_of("metrics");
    for problem in metrics.iter().filter_map(|m| rules.problem(m)) {
        cx.error(problem, span);
    }
    metrics
}

/// Masks take no intensity augmentation: the `vae` preset's scale and shift would make a binary
/// target fractional (E0127). Their default is the flip-only `diffusion` preset.
fn derive_augment(cx: &mut DeriveCx<'_>, masks: bool) {
    if !cx.is_set("augment") {
        cx.derive("augment", Value::Enum(if masks { "diffusion" } else { "vae" }.into()));
    } else if let Some(augment) = cx.value("augment").as_str().filter(|a| masks && *a == "vae").map(str::to_string) {
        let span = cx.span_of("augment");
        cx.error(Pitfall::IntensityAugmentOnMasks { augment }, span);
    }
}

/// Fills a model's `dims` from the data when the file leaves it out. Returns the model's dims.
pub(crate) fn fill_dims(cx: &mut DeriveCx<'_>, model: &mut Value, data_dims: i64) -> i64 {
    let dims = match model.get("dims").and_then(Value::as_i64) {
        Some(d) => d,
        None => {
            if let Value::Ctor { args, .. } = model {
                args.insert("dims".into(), Value::Int(data_dims));
            }
            cx.derive("model", model.clone());
            data_dims
        }
    };
    dims
}

/// A 3D model cannot run on a 2D dataset (a 2D model on a 3D one runs on its slices).
pub(crate) fn check_not_3d_on_2d(cx: &mut DeriveCx<'_>, model: &Value, dims: i64, data_dims: i64) {
    if dims == 3 && data_dims == 2 {
        let span = cx.span_of("model");
        cx.error(Pitfall::Model3dOn2d { model: model.variant().unwrap_or("model").to_string() }, span);
    }
}

/// The spatial axes a model of `dims` dimensions sees in data of `shape`: a 2D model runs on
/// the (height, width) slices of a volume.
pub(crate) fn model_axes(shape: &[i64], dims: i64) -> Vec<(&'static str, i64)> {
    let all = axes(shape);
    let skip = all.len().saturating_sub(dims as usize);
    all.into_iter().skip(skip).collect()
}

/// Reports every axis the model sees that `factor` does not divide.
pub(crate) fn check_divisible(
    cx: &mut DeriveCx<'_>,
    shape: &[i64],
    dims: i64,
    factor: i64,
    what: &str,
    span: medgen_lang::source::Span,
) {
    for (axis, size) in model_axes(shape, dims) {
        if factor > 1 && size % factor != 0 {
            cx.error(Pitfall::NotDivisible { what: what.to_string(), size, factor, axis }, span);
        }
    }
}

/// The latent's shape: axes the model sees are divided by the scale factor.
pub(crate) fn latent_shape(shape: &[i64], dims: i64, scale: i64) -> Vec<i64> {
    let skip = shape.len().saturating_sub(dims as usize);
    shape.iter().enumerate().map(|(i, s)| if i >= skip { s / scale } else { *s }).collect()
}

/// Settings the language knows and this version's `compress` cannot run (E0123).
fn refuse_not_yet(cx: &mut DeriveCx<'_>) {
    if cx.value("model").variant() == Some("dcae") {
        let span = cx.span_of("model");
        let instead = "use `vae(...)` or `vqvae(...)`".to_string();
        cx.error(Pitfall::NotYet { feature: "a DC-AE compressor (`dcae(...)`)".into(), instead }, span);
    }
    if cx.value("adv_weight").as_f64().unwrap_or(0.0) > 0.0 {
        let span = cx.span_of("adv_weight");
        let instead = "set `adv_weight = 0`".to_string();
        cx.error(Pitfall::NotYet { feature: "the adversarial phase (`adv_weight > 0`)".into(), instead }, span);
    }
    if let Some(method) = cx.value("batch_augment").as_str().filter(|m| *m != "none") {
        let feature = format!("batch augmentation (`batch_augment = {method}`)");
        let span = cx.span_of("batch_augment");
        cx.error(Pitfall::NotYet { feature, instead: "set `batch_augment = none`".into() }, span);
    }
}

/// Seed pitfall 58: adversarial training needs GAN betas.
pub(crate) fn check_gan_betas(cx: &mut DeriveCx<'_>) {
    if cx.value("adv_weight").as_f64().unwrap_or(0.0) <= 0.0 {
        return;
    }
    let betas: Vec<f64> = cx.value("betas").as_list().iter().filter_map(Value::as_f64).collect();
    if let [beta1, beta2] = betas[..] {
        if beta1 > 0.5 {
            let span = if cx.is_set("betas") { cx.span_of("betas") } else { cx.span_of("adv_weight") };
            cx.error(Pitfall::GanBetas { beta1, beta2 }, span);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{metric_names, MetricRules};
    use crate::metrics::image::ms_ssim_max_scales;

    fn applicable(masks: bool, shape: Option<&[i64]>, dims: i64, lpips: bool) -> Vec<String> {
        MetricRules { masks, shape, dims, lpips }.applicable()
    }

    #[test]
    fn image_metrics_follow_the_sides_the_model_sees() {
        assert_eq!(applicable(false, Some(&[8, 32, 32]), 2, false), ["psnr", "ssim", "ms_ssim"]);
        assert_eq!(applicable(false, Some(&[8, 32, 32]), 2, true), ["psnr", "ssim", "ms_ssim", "lpips"]);
        // 3D: the 8-slice depth is shorter than SSIM's window; LPIPS still fits the axial slices.
        assert_eq!(applicable(false, Some(&[8, 32, 32]), 3, true), ["psnr", "lpips"]);
        assert_eq!(applicable(false, Some(&[12, 16, 16]), 3, true), ["psnr", "ssim", "ms_ssim"]);
        assert_eq!(applicable(false, Some(&[4, 8, 8]), 2, true), ["psnr"]);
    }

    #[test]
    fn ms_ssim_applies_exactly_when_one_scale_fits() {
        for side in 4..40 {
            let shape = [4, side, side + 3];
            let fits = ms_ssim_max_scales(&[side as usize, side as usize + 3], 11) >= 1;
            let metrics = applicable(false, Some(&shape), 2, false);
            assert_eq!(metrics.contains(&"ms_ssim".to_string()), fits, "side {side}");
            assert_eq!(metrics.contains(&"ssim".to_string()), fits, "side {side}");
        }
    }

    #[test]
    fn masks_get_dice_and_iou_whatever_their_size() {
        assert_eq!(applicable(true, Some(&[8, 32, 32]), 2, true), ["dice", "iou"]);
        assert_eq!(applicable(true, Some(&[4, 8, 8]), 3, false), ["dice", "iou"]);
        assert_eq!(applicable(true, None, 3, false), ["dice", "iou"]);
    }

    #[test]
    fn an_unknown_shape_keeps_only_what_does_not_depend_on_size() {
        assert_eq!(applicable(false, None, 2, true), ["psnr"]);
    }

    #[test]
    fn names_add_the_losses_sorted() {
        let metrics = ["psnr", "ssim", "ms_ssim", "lpips"].map(String::from);
        assert_eq!(metric_names(&metrics), ["lpips", "ms_ssim", "psnr", "ssim", "train_loss", "val_loss"]);
        assert_eq!(metric_names(&[]), ["train_loss", "val_loss"]);
    }
}
