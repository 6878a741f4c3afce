//! `evaluate`: metrics of generated samples (or of a compressor's reconstructions) against a
//! reference split. The checker knows which metric applies to what: generation metrics never
//! run on masks (seed pitfall 62), masks are thresholded before any metric (the exp14_1
//! evaluation bug), and MS-SSIM uses only as many scales as the image size allows.

use medgen_lang::signature::{
    DataKind, DeriveCx, InputSig, Outputs, ParamDefault, ParamSig, Signature, StageKind, Type,
};
use medgen_lang::syntax::ast::DeclKeyword;
use medgen_lang::value::Value;

use crate::pitfalls::Pitfall;
use crate::vocab::{
    self, strings, DISTRIBUTION_METRICS, MASK_METRICS, METRICS, PAIRED_METRICS, PERCEPTUAL_METRICS, SEG,
};

use super::compress::model_axes;
use super::DatasetView;

/// Threshold that turns generated mask probabilities into binary masks, when the file does not
/// say (seed pitfalls 36 and 79: one named threshold, used everywhere).
pub const SEG_THRESHOLD: f64 = 0.5;

/// MS-SSIM's Gaussian window (Wang et al. 2003; pytorch-msssim's default).
pub const MS_SSIM_WINDOW: i64 = 11;

/// Most MS-SSIM scales (the published definition uses 5).
pub const MS_SSIM_MAX_SCALES: i64 = 5;

pub struct Evaluate {
    sig: Signature,
}

impl Evaluate {
    pub fn new() -> Self {
        let path = || Type::optional(Type::Path);
        let none = || ParamDefault::Value(Value::None);
        Evaluate {
            sig: Signature {
                kind: "evaluate",
                keyword: DeclKeyword::Stage,
                doc: "measure samples or reconstructions against a reference split",
                inputs: vec![
                    InputSig {
                        name: "subject",
                        kinds: vec![DataKind::Samples, DataKind::Compressor],
                        required: true,
                        doc: "samples to score, or a compressor whose reconstructions to score",
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
                ],
                output: DataKind::Metrics,
            },
        }
    }
}

/// Most MS-SSIM scales an image whose smallest side is `side` allows: each scale halves the
/// image, and the last must still be wider than the window.
pub fn max_ms_ssim_scales(side: i64) -> i64 {
    (1..=MS_SSIM_MAX_SCALES).rev().find(|s| side > (MS_SSIM_WINDOW - 1) * (1 << (s - 1))).unwrap_or(0)
}

impl StageKind for Evaluate {
    fn signature(&self) -> &Signature {
        &self.sig
    }

    fn derive(&self, cx: &mut DeriveCx<'_>) -> Outputs {
        let (Some(subject), Some(reference)) = (cx.input("subject"), cx.input("reference")) else {
            return Outputs::default();
        };
        let generated = subject.kind == DataKind::Samples;
        let subject_out = subject.outputs.clone();
        let reference_span = reference.span;
        let reference_split = reference.field.map(str::to_string);
        let reference = DatasetView::read(reference);
        let images = subject_out.get_value("images").map(strings).unwrap_or_default();
        let seg_output = if generated {
            subject_out.get_value("seg_output").and_then(Value::as_bool) == Some(true)
        } else {
            images == [SEG]
        };
        // Generated samples pair with reference volumes only when they were conditioned on the
        // reference masks; a compressor's reconstructions always do.
        let unpaired = generated && subject_out.get_value("paired").and_then(Value::as_bool) != Some(true);
        let mode = subject_out.get_value("mode").and_then(Value::as_str).unwrap_or("").to_string();
        reference.require(cx, &images, "evaluation", reference_span);
        if let Some(split) = reference_split {
            reference.require_split(cx, &split, "evaluation", reference_span);
        }

        let metrics = strings(cx.value("metrics"));
        let span = cx.span_of("metrics");
        for metric in &metrics {
            let m = metric.as_str();
            if seg_output && DISTRIBUTION_METRICS.contains(&m) {
                cx.error(Pitfall::DistributionMetricOnSeg { metric: metric.clone() }, span);
            } else if seg_output && PERCEPTUAL_METRICS.contains(&m) {
                cx.error(Pitfall::PerceptualMetricOnSeg { metric: metric.clone() }, span);
            } else if !seg_output && MASK_METRICS.contains(&m) {
                cx.error(Pitfall::MaskMetricOnImages { metric: metric.clone() }, span);
            } else if unpaired && PAIRED_METRICS.contains(&m) {
                cx.error(Pitfall::PairedMetricUnpaired { metric: metric.clone(), mode: mode.clone() }, span);
            }
        }
        if seg_output && cx.value("binarize_seg").as_bool() == Some(false) {
            let span = cx.span_of("binarize_seg");
            cx.error(Pitfall::SegNotThresholded, span);
        }
        if metrics.iter().any(|m| m == "ms_ssim") {
            let dims = subject_out.get_value("dims").and_then(Value::as_i64).unwrap_or(2);
            let shape = subject_out
                .get_value("shape")
                .filter(|v| !v.is_none())
                .map(|v| v.as_list().iter().filter_map(Value::as_i64).collect::<Vec<_>>())
                .or(reference.shape.clone());
            check_ms_ssim(cx, shape.as_deref(), dims);
        } else if !cx.is_set("ms_ssim_scales") {
            cx.derive("ms_ssim_scales", Value::Int(MS_SSIM_MAX_SCALES));
        }

        let mut o = Outputs::default();
        o.value("images", vocab::names(&images));
        o.metrics = metric_names(&metrics, &images);
        o
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

/// Names `expect` may use: each metric, and per image `metric_image` when there are several.
fn metric_names(metrics: &[String], images: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    for m in metrics {
        if m == "regional" {
            names.extend(["regional_tumour".to_string(), "regional_background".to_string()]);
            continue;
        }
        names.push(m.clone());
        if images.len() > 1 && !MASK_METRICS.contains(&m.as_str()) {
            names.extend(images.iter().map(|i| format!("{m}_{i}")));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::max_ms_ssim_scales;

    #[test]
    fn ms_ssim_scales_follow_the_window_rule() {
        // pytorch-msssim asserts smaller_side > (win_size - 1) * 2 ** (levels - 1).
        assert_eq!(max_ms_ssim_scales(256), 5);
        assert_eq!(max_ms_ssim_scales(161), 5);
        assert_eq!(max_ms_ssim_scales(160), 4);
        assert_eq!(max_ms_ssim_scales(32), 2);
        assert_eq!(max_ms_ssim_scales(11), 1);
        assert_eq!(max_ms_ssim_scales(10), 0);
    }
}
