//! `evaluate`: metrics of generated samples (or of a compressor's reconstructions) against a
//! reference split. The checker knows which metric applies to what: generation metrics never
//! run on masks (seed pitfall 62), masks are thresholded before any metric (the exp14_1
//! evaluation bug), and MS-SSIM uses only as many scales as the image size allows.

use medgen_lang::signature::{
    DataKind, DeriveCx, InputSig, Outputs, ParamDefault, ParamSig, PathKind, Signature, StageKind, Type,
};
use medgen_lang::syntax::ast::DeclKeyword;
use medgen_lang::value::Value;
use serde::{Deserialize, Serialize};

use crate::pitfalls::Pitfall;
use crate::vocab::{
    self, strings, DISTRIBUTION_METRICS, MASK_METRICS, METRICS, PAIRED_METRICS, PERCEPTUAL_METRICS, SEG,
};

use super::compress::{check_divisible, model_axes};
use super::resolve::{optional_file, param, to_json, Choice, ParamFile, Resolved};
use super::{axes, axial, derive_seed, shape_field, split_name, too_small, DatasetView};
use crate::metrics::lpips::SliceAxis;
use crate::nn::alexnet::MIN_INPUT_SIDE;

/// A metric `evaluate` computes, by its name in the language (`cmmd` is refused by the checker,
/// E0123, until it runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Metric {
    Psnr,
    Ssim,
    MsSsim,
    Lpips,
    #[serde(rename = "lpips_3d")]
    Lpips3d,
    Fid,
    Kid,
    Dice,
    Iou,
    Hd95,
    Regional,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Psnr => "psnr",
            Metric::Ssim => "ssim",
            Metric::MsSsim => "ms_ssim",
            Metric::Lpips => "lpips",
            Metric::Lpips3d => "lpips_3d",
            Metric::Fid => "fid",
            Metric::Kid => "kid",
            Metric::Dice => "dice",
            Metric::Iou => "iou",
            Metric::Hd95 => "hd95",
            Metric::Regional => "regional",
        }
    }
}

/// What an `evaluate` instance measures; the subject and the reference are its typed inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvaluateConfig {
    pub metrics: Vec<Metric>,
    /// SSIM and MS-SSIM over axial slices (2) or whole volumes (3); FID/KID features likewise.
    pub dims: usize,
    pub binarize_seg: bool,
    pub seg_threshold: f64,
    pub lpips_chunk: usize,
    pub ms_ssim_scales: usize,
    pub lpips_weights: Option<ParamFile>,
    pub feature_weights: Option<ParamFile>,
    /// Seed of KID's random subsets.
    pub seed: u64,
}

/// Threshold that turns generated mask probabilities into binary masks, when the file does not
/// say (seed pitfalls 36 and 79: one named threshold, used everywhere): `binarize_seg`'s.
pub const SEG_THRESHOLD: f64 = crate::io::nifti::BINARY_THRESHOLD_GENERATED as f64;

/// MS-SSIM's Gaussian window (Wang et al. 2003; pytorch-msssim's default).
pub const MS_SSIM_WINDOW: i64 = 11;

/// Most MS-SSIM scales (the published definition uses 5).
pub const MS_SSIM_MAX_SCALES: i64 = 5;

pub struct Evaluate {
    sig: Signature,
}

impl Evaluate {
    pub fn new() -> Self {
        let path = || Type::optional(Type::Path(PathKind::File));
        let none = || ParamDefault::Value(Value::None);
        Evaluate {
            sig: Signature {
                kind: "evaluate",
                keyword: DeclKeyword::Stage,
                doc: "measure samples or reconstructions against a reference split",
                inputs: vec![
                    InputSig {
                        name: "subject",
                        kinds: vec![DataKind::Samples, DataKind::Compressor, DataKind::Dataset],
                        required: true,
                        doc: "samples to score, a compressor whose reconstructions to score, or a dataset (e.g. \
                              another tool's volumes read with `nifti`), paired with the reference by patient id",
                    },
                    InputSig {
                        name: "reference",
                        kinds: vec![DataKind::Dataset],
                        required: true,
                        doc: "the reference split, e.g. `brain.test`",
                    },
                ],
                params: vec![
                    ParamSig::new(
                        "metrics",
                        Type::set(Type::enumeration("metric", METRICS), 1, None),
                        ParamDefault::Required,
                        "metrics to compute",
                    ),
                    ParamSig::new(
                        "dims",
                        Type::int(2, Some(3)),
                        ParamDefault::Derived("the subject's model's: 2 or 3 (3 for a dataset of volumes)"),
                        "SSIM and MS-SSIM over 2D axial slices (mean over slices) or over whole 3D volumes",
                    ),
                    ParamSig::new(
                        "binarize_seg",
                        Type::Bool,
                        ParamDefault::Value(Value::Bool(true)),
                        "threshold generated masks before any metric",
                    ),
                    ParamSig::new(
                        "seg_threshold",
                        Type::float_in(0.0, false, 1.0, false),
                        ParamDefault::Value(Value::Float(SEG_THRESHOLD)),
                        "threshold for generated masks",
                    ),
                    ParamSig::new(
                        "lpips_chunk",
                        Type::int(1, Some(4096)),
                        ParamDefault::Value(Value::Int(32)),
                        "slices per LPIPS forward pass in 3D (bounds memory)",
                    ),
                    ParamSig::new(
                        "ms_ssim_scales",
                        Type::int(1, Some(MS_SSIM_MAX_SCALES)),
                        ParamDefault::Derived("as many as the image size allows, at most 5"),
                        "MS-SSIM scales",
                    ),
                    ParamSig::new(
                        "lpips_weights",
                        path(),
                        none(),
                        "safetensors with LPIPS AlexNet and linear heads (see docs)",
                    ),
                    ParamSig::new(
                        "feature_weights",
                        path(),
                        none(),
                        "safetensors with the FID/KID feature network (see docs)",
                    ),
                    ParamSig::new("cmmd_weights", path(), none(), "safetensors with the CMMD image encoder (see docs)"),
                    ParamSig::new(
                        "seed",
                        Type::int(0, None),
                        ParamDefault::Derived("the pipeline's `seed`"),
                        "seed of KID's random subsets",
                    ),
                ],
                output: DataKind::Metrics,
            },
        }
    }
}

/// Most MS-SSIM scales an image whose smallest side is `side` allows: each scale halves the
/// image, rounding down as MONAI's average pooling does, and the coarsest must still hold the
/// window (`metrics::image::ms_ssim_max_scales`, which computes the metric).
pub fn max_ms_ssim_scales(side: i64) -> i64 {
    let side = side.max(0) as usize;
    crate::metrics::image::ms_ssim_max_scales(&[side], MS_SSIM_WINDOW as usize) as i64
}

impl StageKind for Evaluate {
    fn signature(&self) -> &Signature {
        &self.sig
    }

    fn derive(&self, cx: &mut DeriveCx<'_>) -> Outputs {
        derive_seed(cx);
        let (Some(subject), Some(reference)) = (cx.input("subject"), cx.input("reference")) else {
            return Outputs::default();
        };
        let kind = subject.kind;
        let subject_split = subject.field.map(str::to_string);
        let subject_out = subject.outputs.clone();
        let subject_dataset = (kind == DataKind::Dataset).then(|| DatasetView::read(subject));
        let reference_span = reference.span;
        let reference_split = reference.field.map(str::to_string);
        let reference = DatasetView::read(reference);
        let compared_with = split_name(&reference.name, reference_split.as_deref());
        // What the subject holds: intensity images, masks, or (a dataset) both.
        let (images, has_images, has_masks) = match &subject_dataset {
            Some(dataset) => {
                let images = dataset.images();
                let masks = dataset.modalities.iter().any(|m| m == SEG);
                (images.clone(), !images.is_empty(), masks)
            }
            None => {
                let images = subject_out.get_value("images").map(strings).unwrap_or_default();
                let seg_output = if kind == DataKind::Samples {
                    subject_out.get_value("seg_output").and_then(Value::as_bool) == Some(true)
                } else {
                    images == [SEG]
                };
                (images, !seg_output, seg_output)
            }
        };
        // Generated samples pair with reference volumes only when they were conditioned on the
        // reference masks; a compressor's reconstructions always do, and another dataset's
        // volumes pair by patient id (checked when the stage runs).
        let unpaired =
            kind == DataKind::Samples && subject_out.get_value("paired").and_then(Value::as_bool) != Some(true);
        let mode = subject_out.get_value("mode").and_then(Value::as_str).unwrap_or("").to_string();
        let compared: Vec<String> =
            images.iter().filter(|i| *i != SEG).cloned().chain(has_masks.then(|| SEG.to_string())).collect();
        reference.require(cx, &compared, "evaluation", reference_span);
        if let Some(split) = reference_split {
            reference.require_split(cx, &split, "evaluation", reference_span);
        }
        let dims = if cx.is_set("dims") {
            cx.value("dims").as_i64().unwrap_or(3)
        } else {
            let dims = match &subject_dataset {
                Some(dataset) => dataset.dims,
                None => subject_out.get_value("dims").and_then(Value::as_i64).unwrap_or(3),
            };
            cx.derive("dims", Value::Int(dims));
            dims
        };

        let metrics = strings(cx.value("metrics"));
        let span = cx.span_of("metrics");
        for metric in &metrics {
            let m = metric.as_str();
            if !has_images && DISTRIBUTION_METRICS.contains(&m) {
                cx.error(Pitfall::DistributionMetricOnSeg { metric: metric.clone() }, span);
            } else if !has_images && PERCEPTUAL_METRICS.contains(&m) {
                cx.error(Pitfall::PerceptualMetricOnSeg { metric: metric.clone() }, span);
            } else if !has_masks && MASK_METRICS.contains(&m) {
                cx.error(Pitfall::MaskMetricOnImages { metric: metric.clone() }, span);
            } else if unpaired && PAIRED_METRICS.contains(&m) {
                cx.error(Pitfall::PairedMetricUnpaired { metric: metric.clone(), mode: mode.clone() }, span);
            }
        }
        for (param, needing) in [
            ("lpips_weights", &["lpips", "lpips_3d"][..]),
            ("feature_weights", &["fid", "kid"][..]),
            ("cmmd_weights", &["cmmd"][..]),
        ] {
            let wanted: Vec<&String> = metrics.iter().filter(|m| needing.contains(&m.as_str())).collect();
            if !wanted.is_empty() && cx.value(param).is_none() {
                let what = wanted.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(" and ");
                cx.error(Pitfall::MissingWeights { what, param }, span);
            }
        }
        if has_masks && cx.value("binarize_seg").as_bool() == Some(false) {
            let span = cx.span_of("binarize_seg");
            cx.error(Pitfall::SegNotThresholded, span);
        }
        // Paired metrics need subject volumes of the reference's patients: samples generated for
        // its masks, or a dataset holding them.
        let paired_wanted = metrics.iter().find(|m| PAIRED_METRICS.contains(&m.as_str())).cloned();
        let pairs_with = match (&subject_dataset, kind) {
            (Some(dataset), _) if dataset.name == reference.name => {
                Some(split_name(&dataset.name, subject_split.as_deref()))
            }
            (None, DataKind::Samples) => {
                subject_out.get_value("conditioned_on").and_then(Value::as_str).map(str::to_string)
            }
            _ => None,
        };
        if let (Some(metric), Some(subject_patients)) = (paired_wanted, pairs_with) {
            let disjoint = subject_patients != compared_with
                && !compared_with.starts_with(&format!("{subject_patients}."))
                && !subject_patients.starts_with(&format!("{compared_with}."));
            if !unpaired && disjoint {
                let pitfall =
                    Pitfall::DisjointPatients { metric, subject: subject_patients, reference: compared_with.clone() };
                cx.error(pitfall, reference_span);
            }
        }
        if kind == DataKind::Compressor {
            if let Some(shape) = &reference.shape {
                let scale = subject_out.get_value("scale_factor").and_then(Value::as_i64).unwrap_or(1);
                let compressor_dims = subject_out.get_value("dims").and_then(Value::as_i64).unwrap_or(2);
                let what = format!("the compressor's downsampling factor ({scale}x), which reconstructs them");
                check_divisible(cx, shape, compressor_dims, scale, &what, reference_span);
            }
        }
        if metrics.iter().any(|m| m == "cmmd") {
            let instead = "remove `cmmd` from `metrics`; `fid` and `kid` are available".to_string();
            cx.error(Pitfall::NotYet { feature: "the `cmmd` metric".into(), instead }, span);
        }
        // The subject's volumes: a sample's or another dataset's shape; a compressor
        // reconstructs the reference itself.
        let subject_shape = match &subject_dataset {
            Some(dataset) => dataset.shape.clone(),
            None => shape_field(&subject_out, "shape"),
        };
        if let (Some(subject), Some(reference)) = (&subject_shape, &reference.shape) {
            if subject != reference && metrics.iter().any(|m| PAIRED_METRICS.contains(&m.as_str())) {
                let pitfall = Pitfall::ReferenceShape { subject: subject.clone(), reference: reference.clone() };
                cx.error(pitfall, reference_span);
            }
        }
        let shape = reference.shape.clone().or(subject_shape);
        if let Some(shape) = &shape {
            check_windows(cx, &metrics, shape, dims);
        }
        if metrics.iter().any(|m| m == "ms_ssim") {
            check_ms_ssim(cx, shape.as_deref(), dims);
        } else if !cx.is_set("ms_ssim_scales") {
            cx.derive("ms_ssim_scales", Value::Int(MS_SSIM_MAX_SCALES));
        }

        let mut o = Outputs::default();
        o.value("images", vocab::names(&images));
        let image_names: Vec<String> = images.iter().filter(|i| *i != SEG).cloned().collect();
        o.metrics = metric_names(&metrics, &image_names, dims);
        o
    }

    fn resolve(&self, cx: &DeriveCx<'_>, _: &Outputs) -> Resolved<serde_json::Value> {
        to_json(&EvaluateConfig {
            metrics: param::<Vec<Choice<Metric>>>(cx, "metrics")?.into_iter().map(|m| m.0).collect(),
            dims: param(cx, "dims")?,
            binarize_seg: param(cx, "binarize_seg")?,
            seg_threshold: param(cx, "seg_threshold")?,
            lpips_chunk: param(cx, "lpips_chunk")?,
            ms_ssim_scales: param(cx, "ms_ssim_scales")?,
            lpips_weights: optional_file(cx, "lpips_weights")?,
            feature_weights: optional_file(cx, "feature_weights")?,
            seed: param(cx, "seed")?,
        })
    }
}

/// SSIM's window must fit along every axis it slides over, LPIPS's AlexNet every slice (E0125).
fn check_windows(cx: &mut DeriveCx<'_>, metrics: &[String], shape: &[i64], dims: i64) {
    let span = cx.span_of("metrics");
    let ssim_axes = model_axes(shape, dims);
    let checks = [
        ("ssim", ssim_axes.clone(), MS_SSIM_WINDOW, "SSIM's Gaussian window"),
        ("lpips", axial(shape), MIN_INPUT_SIDE as i64, "`lpips` (AlexNet on axial slices)"),
        ("lpips_3d", axes(shape), MIN_INPUT_SIDE as i64, "`lpips_3d` (AlexNet on slices along every axis)"),
    ];
    for (metric, axes, window, what) in checks {
        if !metrics.iter().any(|m| m == metric) {
            continue;
        }
        let fix = if metric == "ssim" && dims == 3 {
            format!("use `dims = 2` (the mean over axial slices), or remove `{metric}` from `metrics`")
        } else {
            format!("remove `{metric}` from `metrics`, or evaluate larger images")
        };
        if let Some(problem) = too_small(&axes, window, what, &fix) {
            cx.error(problem, span);
        }
    }
}

fn check_ms_ssim(cx: &mut DeriveCx<'_>, shape: Option<&[i64]>, dims: i64) {
    let Some(shape) = shape else {
        if !cx.is_set("ms_ssim_scales") {
            cx.derive("ms_ssim_scales", Value::Int(MS_SSIM_MAX_SCALES));
        }
        return;
    };
    let side = model_axes(shape, dims).iter().map(|(_, s)| *s).min().unwrap_or(0);
    let max = max_ms_ssim_scales(side);
    if cx.is_set("ms_ssim_scales") {
        let scales = cx.value("ms_ssim_scales").as_i64().unwrap_or(MS_SSIM_MAX_SCALES);
        if scales > max {
            let span = cx.span_of("ms_ssim_scales");
            cx.error(Pitfall::MsSsimTooManyScales { scales, size: side, max }, span);
        }
        return;
    }
    if max == 0 {
        let span = cx.span_of("metrics");
        cx.error(Pitfall::MsSsimTooManyScales { scales: 1, size: side, max }, span);
        return;
    }
    cx.derive("ms_ssim_scales", Value::Int(max));
    if max < MS_SSIM_MAX_SCALES {
        let span = cx.span_of("metrics");
        cx.error(Pitfall::MsSsimFewScales { scales: max, size: side }, span);
    }
}

/// The names `evaluate` reports for `metrics` on `images` (the intensity images) in `dims`
/// dimensions, which `expect` may use; the runner reports exactly these
/// (`run::evaluate_report`). Each image metric is reported as `METRIC` (the mean over images,
/// or for `regional` the error pooled over them) and per image as `METRIC_IMAGE`; `lpips_3d`
/// also per axis, and in 3D `fid` and `kid` too; `kid` comes with its spread over subsets,
/// `kid_std`; `dice` and `iou` come with `precision` and `recall`.
pub fn metric_names(metrics: &[String], images: &[String], dims: i64) -> Vec<String> {
    let mut names = Vec::new();
    let per_image = |names: &mut Vec<String>, metric: &str| {
        names.push(metric.to_string());
        names.extend(images.iter().map(|i| format!("{metric}_{i}")));
    };
    let per_axis = |names: &mut Vec<String>, metric: &str| {
        for image in images {
            names.extend(SliceAxis::ALL.iter().map(|axis| format!("{metric}_{image}_{}", axis.name())));
        }
    };
    for m in metrics {
        match m.as_str() {
            "regional" => {
                per_image(&mut names, "regional_tumour");
                per_image(&mut names, "regional_background");
            }
            "dice" | "iou" => {
                names.push(m.clone());
                names.extend(["precision".to_string(), "recall".to_string()]);
            }
            "hd95" => names.push(m.clone()),
            "lpips_3d" => {
                per_image(&mut names, m);
                per_axis(&mut names, m);
            }
            "fid" | "kid" => {
                per_image(&mut names, m);
                if dims == 3 {
                    per_axis(&mut names, m);
                }
                if m == "kid" {
                    per_image(&mut names, "kid_std");
                    if dims == 3 {
                        per_axis(&mut names, "kid_std");
                    }
                }
            }
            _ => per_image(&mut names, m),
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::max_ms_ssim_scales;

    #[test]
    fn ms_ssim_scales_follow_the_window_rule() {
        // Every scale floors the side (MONAI's pooling): 161 → 80 → 40 → 20 → 10 < 11 at the fifth.
        assert_eq!(max_ms_ssim_scales(256), 5);
        assert_eq!(max_ms_ssim_scales(176), 5);
        assert_eq!(max_ms_ssim_scales(175), 4);
        assert_eq!(max_ms_ssim_scales(161), 4);
        assert_eq!(max_ms_ssim_scales(160), 4);
        assert_eq!(max_ms_ssim_scales(32), 2);
        assert_eq!(max_ms_ssim_scales(11), 1);
        assert_eq!(max_ms_ssim_scales(10), 0);
    }
}
