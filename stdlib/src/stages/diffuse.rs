//! `diffuse`: train a denoiser (UNet, DiT or SiT) with a strategy (DDPM or rectified flow) to
//! generate a mode's images, on pixels (from a dataset) or on latents (from `encode`). Channel
//! counts are derived here from the mode and the data, never written by hand (seed pitfalls 2,
//! 4, 7), and the training-recipe pitfalls are checked.

use medgen_lang::signature::{
    DataKind, DeriveCx, InputSig, Outputs, ParamDefault, ParamSig, Signature, StageKind, Type,
};
use medgen_lang::source::Span;
use medgen_lang::syntax::ast::DeclKeyword;
use medgen_lang::value::Value;

use serde::{Deserialize, Serialize};

use crate::data::augment::Preset;
use crate::data::loader::Mode;
use crate::pitfalls::Pitfall;
use crate::run::denoiser::{Architecture, DenoiserSpec, VectorCondition};
use crate::run::strategy_spec::StrategyConfig;
use crate::train::trainer::TrainConfig;
use crate::vocab::{self, augment, batch_augment, denoiser_model, mode, names, score_aug, strategy, strings, SEG};

use super::compress::{check_divisible, check_not_3d_on_2d, fill_dims, model_axes};
use super::resolve::{arg, arg_choice, choice, output, param, to_json, Choice, Resolved};
use super::{derive_seed, shape_field, train_config, with_metrics, DatasetView};

/// Where a denoiser trains: on a dataset's pixels or on `encode` latents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SpaceKind {
    Pixel,
    Latent,
}

/// What a `diffuse` instance trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct DiffuseConfig {
    pub mode: Mode,
    pub space: SpaceKind,
    /// Pixel space: train on [-1, 1] instead of [0, 1].
    pub rescale: bool,
    /// The generated modalities, one per output channel (for `multi`, the choices).
    pub images: Vec<String>,
    /// Whether the tumour mask is an extra input channel.
    pub mask_condition: bool,
    /// The architecture with the channel counts and vector condition derived from the mode.
    pub model: DenoiserSpec,
    pub strategy: StrategyConfig,
    #[serde(flatten)]
    pub train: TrainConfig,
    pub batch: usize,
    pub augment: Preset,
    /// Probability of dropping the condition (classifier-free guidance).
    pub cfg_dropout: f64,
}

/// The architecture a `model = unet(...)`/`dit(...)`/`sit(...)` value states, with the channel
/// counts and the vector condition `derive` found.
fn denoiser_spec(
    model: &Value,
    in_channels: usize,
    out_channels: usize,
    vector: Option<VectorCondition>,
) -> Resolved<DenoiserSpec> {
    let architecture = match model.variant() {
        Some("unet") => Architecture::Unet {
            channels: arg(model, "channels")?,
            attention: arg(model, "attention")?,
            res_blocks: arg(model, "res_blocks")?,
            heads: arg(model, "heads")?,
        },
        Some("dit") => Architecture::Dit { size: arg_choice(model, "size")?, patch: arg(model, "patch")? },
        Some("sit") => Architecture::Sit { size: arg_choice(model, "size")?, patch: arg(model, "patch")? },
        other => return Err(format!("no denoiser runs the model {other:?}")),
    };
    Ok(DenoiserSpec { architecture, dims: arg(model, "dims")?, in_channels, out_channels, vector })
}

/// The strategy a `strategy = ddpm(...)`/`rflow(...)` value states.
fn strategy_config(strategy: &Value, min_snr: Option<f64>) -> Resolved<StrategyConfig> {
    match strategy.variant() {
        Some("ddpm") => Ok(StrategyConfig::Ddpm {
            timesteps: arg(strategy, "timesteps")?,
            schedule: arg_choice(strategy, "schedule")?,
            prediction: arg_choice(strategy, "prediction")?,
            min_snr,
        }),
        Some("rflow") => Ok(StrategyConfig::Rflow {
            sampling: arg_choice(strategy, "sampling")?,
            continuous: arg(strategy, "continuous")?,
            timesteps: arg(strategy, "timesteps")?,
            timestep_transform: arg(strategy, "timestep_transform")?,
        }),
        other => Err(format!("no strategy runs {other:?}")),
    }
}

pub struct Diffuse {
    sig: Signature,
}

impl Diffuse {
    pub fn new() -> Self {
        let off = || ParamDefault::Value(Value::Bool(false));
        let mut params = vec![
            ParamSig::new(
                "mode",
                mode(),
                ParamDefault::Required,
                "what to generate: seg, bravo, dual, multi or seg_conditioned",
            ),
            ParamSig::new(
                "strategy",
                strategy(),
                ParamDefault::Value(rflow_default()),
                "how to noise and denoise: ddpm(...) or rflow(...)",
            ),
            ParamSig::new(
                "model",
                denoiser_model(),
                ParamDefault::Value(Value::Ctor { name: "unet".into(), args: unet_defaults() }),
                "the denoiser: unet(...), dit(...) or sit(...)",
            ),
            ParamSig::new(
                "min_snr",
                Type::optional(Type::positive()),
                ParamDefault::Value(Value::None),
                "min-SNR-γ loss weighting (DDPM only)",
            ),
            ParamSig::new(
                "perceptual_weight",
                Type::float(0.0, 10.0),
                ParamDefault::Value(Value::Float(0.0)),
                "weight of a perceptual loss on predicted clean images",
            ),
            ParamSig::new(
                "augment",
                augment(),
                ParamDefault::Value(Value::Enum("none".into())),
                "clean-image augmentation preset",
            ),
            ParamSig::new(
                "batch_augment",
                batch_augment(),
                ParamDefault::Value(Value::Enum("none".into())),
                "mixup or cutmix across a batch",
            ),
            ParamSig::new(
                "score_aug",
                score_aug(),
                ParamDefault::Value(Value::None),
                "ScoreAug: augment noisy inputs, scoreaug(...) or none",
            ),
            ParamSig::new(
                "rescale",
                Type::Bool,
                off(),
                "pixel space: train on [-1, 1] instead of [0, 1] (`sample` maps back before clamping)",
            ),
            ParamSig::new("sda", Type::Bool, off(), "shifted data augmentation"),
            ParamSig::new("augmented_diffusion", Type::Bool, off(), "DC-AE 1.5 channel masking of latents"),
            ParamSig::new(
                "cfg_dropout",
                Type::float_in(0.0, true, 1.0, false),
                ParamDefault::Value(Value::Float(0.0)),
                "probability of dropping the condition, for classifier-free guidance",
            ),
        ];
        params.extend(vocab::training_params(100, 1e-4));
        Diffuse {
            sig: Signature {
                kind: "diffuse",
                keyword: DeclKeyword::Stage,
                doc: "train a diffusion or flow denoiser",
                inputs: vec![InputSig {
                    name: "data",
                    kinds: vec![DataKind::Dataset, DataKind::Latents],
                    required: true,
                    doc: "a dataset (pixel space) or `encode` latents (latent space)",
                }],
                params,
                output: DataKind::Denoiser,
            },
        }
    }
}

fn rflow_default() -> Value {
    let args = [
        ("sampling", Value::Enum("logit_normal".into())),
        ("continuous", Value::Bool(true)),
        ("timesteps", Value::Int(1000)),
        ("timestep_transform", Value::Bool(true)),
    ];
    Value::Ctor { name: "rflow".into(), args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect() }
}

fn unet_defaults() -> std::collections::BTreeMap<String, Value> {
    let ints = |v: &[i64]| Value::List(v.iter().map(|i| Value::Int(*i)).collect());
    [("channels", ints(&[32, 64, 128])), ("res_blocks", Value::Int(2)), ("heads", Value::Int(4))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

impl StageKind for Diffuse {
    fn signature(&self) -> &Signature {
        &self.sig
    }

    fn derive(&self, cx: &mut DeriveCx<'_>) -> Outputs {
        derive_seed(cx);
        check_recipe(cx);
        refuse_not_yet(cx);
        let Some(view) = cx.input("data") else {
            return Outputs::default();
        };
        let latent = view.kind == DataKind::Latents;
        let data_span = view.span;
        let upstream = view.outputs.clone();
        let data = DatasetView::read(view);
        let mode_name = cx.value("mode").as_str().unwrap_or("bravo").to_string();
        let mode_span = cx.span_of("mode");
        let images = vocab::mode_images(&mode_name, &data.images());
        let seg_cond = vocab::mode_conditions_on_seg(&mode_name);
        let mut needed = images.clone();
        if seg_cond {
            needed.push(SEG.into());
        }
        data.require(cx, &needed, &format!("mode `{mode_name}`"), mode_span);
        data.require_training_splits(cx, cx.decl_span);

        let (out_channels, data_dims, shape) = if latent {
            let encoded = upstream.get_value("images").map(strings).unwrap_or_default();
            if encoded != images && !(mode_name == "multi" && images.iter().all(|i| encoded.contains(i))) {
                let stage = cx.input("data").map_or("", |v| v.stage).to_string();
                cx.error(
                    Pitfall::ImagesMismatch { stage, has: encoded, mode: mode_name.clone(), needs: images.clone() },
                    data_span,
                );
            }
            let channels = upstream.get_value("channels").and_then(Value::as_i64).unwrap_or(1);
            let dims = upstream.get_value("dims").and_then(Value::as_i64).unwrap_or(2);
            let shape = shape_field(&upstream, "shape");
            (channels, dims, shape)
        } else {
            let out = if mode_name == "multi" { 1 } else { images.len() as i64 };
            (out, data.dims, data.shape.clone())
        };
        let in_channels = out_channels + i64::from(seg_cond);
        if latent && mode_name == "multi" {
            let feature = "mode `multi` in latent space".to_string();
            let instead = "train `multi` on the dataset (pixel space), or one mode per compressor".to_string();
            cx.error(Pitfall::NotYet { feature, instead }, mode_span);
        }

        let mut model = cx.value("model").clone();
        let dims = fill_dims(cx, &mut model, data_dims);
        if !latent {
            check_not_3d_on_2d(cx, &model, dims, data_dims);
        }
        if latent && dims != data_dims {
            let span = cx.span_of("model");
            cx.error(Pitfall::DimsMismatch { compressor: data_dims, model: dims }, span);
        }
        fill_attention(cx, &mut model);
        if let Some(shape) = &shape {
            check_model_size(cx, &model, shape, dims);
        }
        let missing = missing_stabilisers(cx);
        if latent && !missing.is_empty() {
            cx.error(Pitfall::LatentWithoutStabilisers { missing }, cx.decl_span);
        }
        let mode_conditioned = vocab::mode_conditions_on_seg(&mode_name) || mode_name == "seg_conditioned";
        if !mode_conditioned && cx.value("cfg_dropout").as_f64().unwrap_or(0.0) > 0.0 {
            let span = cx.span_of("cfg_dropout");
            cx.error(Pitfall::CfgDropoutUnconditional { mode: mode_name.clone() }, span);
        }
        if let Some(augment) = cx.value("augment").as_str().filter(|a| latent && *a != "none").map(str::to_string) {
            let span = cx.span_of("augment");
            cx.error(Pitfall::AugmentOnLatents { augment }, span);
        }
        if latent && cx.value("rescale").as_bool() == Some(true) {
            let span = cx.span_of("rescale");
            cx.error(Pitfall::RescaleOnLatents, span);
        }
        if !latent && cx.value("augmented_diffusion").as_bool() == Some(true) {
            let span = cx.span_of("augmented_diffusion");
            cx.error(Pitfall::AugmentedDiffusionInPixelSpace, span);
        }
        if vocab::mode_generates_seg(&mode_name) && cx.value("perceptual_weight").as_f64().unwrap_or(0.0) > 0.0 {
            let span = cx.span_of("perceptual_weight");
            cx.error(Pitfall::PerceptualLossOnSeg { what: format!("mode `{mode_name}`") }, span);
        }

        let pixel_shape = if latent {
            upstream.get_value("pixel_shape").cloned().unwrap_or(Value::None)
        } else {
            data.shape.clone().map_or(Value::None, |s| Value::List(s.into_iter().map(Value::Int).collect()))
        };
        let strategy = cx.value("strategy").variant().unwrap_or("rflow").to_string();
        let cfg = cx.value("cfg_dropout").as_f64().unwrap_or(0.0) > 0.0;
        let mut o = Outputs::default();
        o.value("mode", Value::Enum(mode_name))
            .value("strategy", Value::Enum(strategy))
            .value("space", Value::Enum(if latent { "latent" } else { "pixel" }.into()))
            .value("images", names(&images))
            .value("in_channels", Value::Int(in_channels))
            .value("out_channels", Value::Int(out_channels))
            .value("dims", Value::Int(dims))
            .value("conditioned", Value::Bool(mode_conditioned))
            .value("paired", Value::Bool(seg_cond))
            .value("cfg_trained", Value::Bool(cfg))
            .value("shape", shape.map_or(Value::None, |s| Value::List(s.into_iter().map(Value::Int).collect())))
            .value("pixel_shape", pixel_shape)
            .value("modalities", names(&data.modalities))
            .value("compressor", upstream.get_value("compressor").cloned().unwrap_or(Value::None));
        with_metrics(o, &["train_loss", "val_loss"])
    }

    fn resolve(&self, cx: &DeriveCx<'_>, outputs: &Outputs) -> Resolved<serde_json::Value> {
        let mode: Mode = choice(cx, "mode")?;
        let images: Vec<String> = output(outputs, "images")?;
        let vector = match mode {
            Mode::SegConditioned => Some(VectorCondition::SizeBins),
            Mode::Multi => Some(VectorCondition::Modality { count: images.len() }),
            _ => None,
        };
        let model = denoiser_spec(
            &param(cx, "model")?,
            output(outputs, "in_channels")?,
            output(outputs, "out_channels")?,
            vector,
        )?;
        to_json(&DiffuseConfig {
            mode,
            space: output::<Choice<SpaceKind>>(outputs, "space")?.0,
            rescale: param(cx, "rescale")?,
            images,
            mask_condition: output(outputs, "paired")?,
            model,
            strategy: strategy_config(&param(cx, "strategy")?, param(cx, "min_snr")?)?,
            train: train_config(cx)?,
            batch: param(cx, "batch")?,
            augment: choice(cx, "augment")?,
            cfg_dropout: param(cx, "cfg_dropout")?,
        })
    }
}

/// Settings the language knows and this version's `diffuse` cannot run (E0123).
fn refuse_not_yet(cx: &mut DeriveCx<'_>) {
    let model = cx.value("model").clone();
    let model_span = cx.span_of("model");
    if let Some(size) = model.get("size").and_then(Value::as_str).filter(|s| matches!(*s, "L" | "XL")) {
        let feature = format!("transformer size `{size}`");
        cx.error(Pitfall::NotYet { feature, instead: "use `size: S` or `size: B`".into() }, model_span);
    }
    if model.get("drop_path").and_then(Value::as_f64).unwrap_or(0.0) > 0.0 {
        let feature = "stochastic depth (`drop_path > 0`)".to_string();
        cx.error(Pitfall::NotYet { feature, instead: "set `drop_path: 0`".into() }, model_span);
    }
    let flags = [
        (
            "perceptual_weight",
            cx.value("perceptual_weight").as_f64().unwrap_or(0.0) > 0.0,
            "the perceptual loss in diffusion training",
            "set `perceptual_weight = 0`",
        ),
        ("sda", cx.value("sda").as_bool() == Some(true), "SDA (`sda = true`)", "set `sda = false`"),
        (
            "augmented_diffusion",
            cx.value("augmented_diffusion").as_bool() == Some(true),
            "augmented diffusion (`augmented_diffusion = true`)",
            "set `augmented_diffusion = false`",
        ),
        ("score_aug", !cx.value("score_aug").is_none(), "ScoreAug (`score_aug`)", "set `score_aug = none`"),
    ];
    for (param, on, feature, instead) in flags {
        if on {
            let span = cx.span_of(param);
            cx.error(Pitfall::NotYet { feature: feature.into(), instead: instead.into() }, span);
        }
    }
}

/// What the seeds' stable latent runs had and this stage lacks: warm-up, gradient clipping.
fn missing_stabilisers(cx: &DeriveCx<'_>) -> Vec<String> {
    let mut missing = Vec::new();
    if cx.value("warmup").as_i64() == Some(0) {
        missing.push("warmup".to_string());
    }
    if cx.value("grad_clip").is_none() {
        missing.push("grad_clip".to_string());
    }
    missing
}

/// Training-recipe pitfalls that need only the stage's own parameters.
fn check_recipe(cx: &mut DeriveCx<'_>) {
    let rflow = cx.value("strategy").variant() == Some("rflow");
    if rflow && !cx.value("min_snr").is_none() {
        let span = cx.span_of("min_snr");
        cx.error(Pitfall::MinSnrWithRflow, span);
    }
    let score_aug = cx.value("score_aug").clone();
    if !score_aug.is_none() {
        let span = cx.span_of("score_aug");
        if cx.value("sda").as_bool() == Some(true) {
            cx.error(Pitfall::SdaWithScoreAug, cx.span_of("sda"));
        }
        let augment = cx.value("augment").as_str().unwrap_or("none").to_string();
        if augment != "none" {
            cx.error(Pitfall::AugmentWithScoreAug { augment }, cx.span_of("augment"));
        }
        let transforms = score_aug.get("transforms").map(strings).unwrap_or_default();
        let needs_omega: Vec<String> = transforms.into_iter().filter(|t| t == "rotation" || t == "flip").collect();
        if !needs_omega.is_empty() && score_aug.get("omega").and_then(Value::as_bool) == Some(false) {
            cx.error(Pitfall::ScoreAugWithoutOmega { transforms: needs_omega }, span);
        }
    }
    if cx.value("augment").as_str() == Some("vae") {
        cx.error(Pitfall::VaeAugmentInDiffusion, cx.span_of("augment"));
    }
    if let Some(method) = cx.value("batch_augment").as_str().filter(|m| *m != "none").map(str::to_string) {
        cx.error(Pitfall::BatchAugmentInDiffusion { method }, cx.span_of("batch_augment"));
    }
}

/// A UNet without `attention` gets it at its deepest level only.
fn fill_attention(cx: &mut DeriveCx<'_>, model: &mut Value) {
    if model.variant() != Some("unet") || model.get("attention").is_some() {
        return;
    }
    let levels = model.get("channels").map_or(1, |c| c.as_list().len());
    if let Value::Ctor { args, .. } = model {
        let flags = (0..levels).map(|i| Value::Bool(i + 1 == levels)).collect();
        args.insert("attention".into(), Value::List(flags));
    }
    cx.derive("model", model.clone());
}

/// The model must divide the spatial size it runs on: a UNet halves it at each level, a
/// transformer cuts it into patches (the seeds' DC-AE + DiT crash, exp10_2).
fn check_model_size(cx: &mut DeriveCx<'_>, model: &Value, shape: &[i64], dims: i64) {
    let span: Span = cx.span_of("model");
    match model.variant() {
        Some("unet") => {
            let levels = model.get("channels").map_or(1, |c| c.as_list().len());
            let attention = model.get("attention").map_or(levels, |a| a.as_list().len());
            if attention != levels {
                cx.error(Pitfall::AttentionLevels { attention, levels }, span);
            }
            check_heads(cx, model, span);
            let factor = 1i64 << (levels.saturating_sub(1)).min(30);
            check_divisible(
                cx,
                shape,
                dims,
                factor,
                &format!("which a {levels}-level UNet halves {} times", levels - 1),
                span,
            );
        }
        Some(name) => {
            let patch = model.get("patch").and_then(Value::as_i64).unwrap_or(1);
            let what = format!("the {name} patch size");
            for (axis, size) in model_axes(shape, dims) {
                if size % patch != 0 {
                    cx.error(Pitfall::NotDivisible { what: what.clone(), size, factor: patch, axis }, span);
                }
            }
        }
        None => {}
    }
}

/// `heads` attention heads split the channels of every attended UNet level evenly, and of the
/// deepest level, whose middle block always attends.
fn check_heads(cx: &mut DeriveCx<'_>, model: &Value, span: Span) {
    let heads = model.get("heads").and_then(Value::as_i64).unwrap_or(1).max(1);
    let channels: Vec<i64> =
        model.get("channels").map(|c| c.as_list().iter().filter_map(Value::as_i64).collect()).unwrap_or_default();
    let attention: Vec<bool> =
        model.get("attention").map(|a| a.as_list().iter().filter_map(Value::as_bool).collect()).unwrap_or_default();
    let deepest = channels.len().saturating_sub(1);
    for (level, &channels) in channels.iter().enumerate() {
        let attends = level == deepest || attention.get(level) == Some(&true);
        if attends && channels % heads != 0 {
            cx.error(Pitfall::HeadsNotDividing { heads, channels, level }, span);
        }
    }
}
