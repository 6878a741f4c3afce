//! `sample`: draw volumes from a trained denoiser with an ODE solver, decode latents to pixels
//! when the denoiser works on latents, and write NIfTI volumes and PNG previews. Values are
//! clamped to [0, 1] only after decoding (seed pitfalls 75–78).

use medgen_lang::signature::{
    DataKind, DeriveCx, InputSig, Outputs, ParamDefault, ParamSig, Signature, StageKind, Type,
};
use medgen_lang::syntax::ast::DeclKeyword;
use medgen_lang::value::Value;

use serde::{Deserialize, Serialize};

use crate::diffusion::solver::Solver;
use crate::pitfalls::Pitfall;
use crate::vocab::{self, solver, SEG};

use super::resolve::{arg, param, to_json, Resolved};
use super::{derive_seed, shape_field, split_name, DatasetView};

/// What a `sample` instance draws; the denoiser, the decoder and the conditions are its typed
/// inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SampleConfig {
    pub count: usize,
    pub solver: Solver,
    /// Classifier-free guidance scale; 1: none.
    pub guidance: f64,
    /// Slices a 2D denoiser solves at once.
    pub batch: usize,
    pub previews: bool,
    pub seed: u64,
}

/// The solver a `solver = euler(...)`, `dopri5(...)`... value states.
fn solver_config(v: &Value) -> Resolved<Solver> {
    Ok(match v.variant() {
        Some("euler") => Solver::Euler { steps: arg(v, "steps")? },
        Some("midpoint") => Solver::Midpoint { steps: arg(v, "steps")? },
        Some("heun") => Solver::Heun { steps: arg(v, "steps")? },
        Some("rk4") => Solver::Rk4 { steps: arg(v, "steps")? },
        Some("bosh3") => Solver::Bosh3 { rtol: arg(v, "rtol")?, atol: arg(v, "atol")? },
        Some("dopri5") => Solver::Dopri5 { rtol: arg(v, "rtol")?, atol: arg(v, "atol")? },
        other => return Err(format!("no solver runs {other:?}")),
    })
}

pub struct Sample {
    sig: Signature,
}

impl Sample {
    pub fn new() -> Self {
        let euler =
            Value::Ctor { name: "euler".into(), args: [("steps".to_string(), Value::Int(25))].into_iter().collect() };
        Sample {
            sig: Signature {
                kind: "sample",
                keyword: DeclKeyword::Stage,
                doc: "generate volumes with a trained denoiser",
                inputs: vec![
                    InputSig {
                        name: "denoiser",
                        kinds: vec![DataKind::Denoiser],
                        required: true,
                        doc: "the trained denoiser",
                    },
                    InputSig {
                        name: "decoder",
                        kinds: vec![DataKind::Compressor],
                        required: false,
                        doc: "the compressor whose latents the denoiser generates (latent space only)",
                    },
                    InputSig {
                        name: "conditions",
                        kinds: vec![DataKind::Dataset],
                        required: false,
                        doc: "the patients whose masks (or tumour counts) condition the samples, e.g. `brain.test`",
                    },
                ],
                params: vec![
                    ParamSig::new(
                        "count",
                        Type::int(1, Some(1_000_000)),
                        ParamDefault::Value(Value::Int(16)),
                        "volumes to generate",
                    ),
                    ParamSig::new(
                        "solver",
                        solver(),
                        ParamDefault::Value(euler),
                        "ODE solver: euler(steps: 25), heun(...), rk4(...), dopri5(...)",
                    ),
                    ParamSig::new(
                        "guidance",
                        Type::float(1.0, 100.0),
                        ParamDefault::Value(Value::Float(1.0)),
                        "classifier-free guidance scale; 1 disables guidance",
                    ),
                    ParamSig::new(
                        "batch",
                        Type::int(1, Some(65_536)),
                        ParamDefault::Value(Value::Int(8)),
                        "slices a 2D denoiser solves at once (bounds memory); a 3D one solves one volume at a time",
                    ),
                    ParamSig::new(
                        "previews",
                        Type::Bool,
                        ParamDefault::Value(Value::Bool(true)),
                        "also write PNG previews of the middle slices",
                    ),
                    ParamSig::new(
                        "seed",
                        Type::int(0, None),
                        ParamDefault::Derived("the pipeline's `seed`"),
                        "seed of the sampling noise",
                    ),
                ],
                output: DataKind::Samples,
            },
        }
    }
}

impl StageKind for Sample {
    fn signature(&self) -> &Signature {
        &self.sig
    }

    fn derive(&self, cx: &mut DeriveCx<'_>) -> Outputs {
        derive_seed(cx);
        let Some(den) = cx.input("denoiser") else {
            return Outputs::default();
        };
        let den_span = den.span;
        let den = den.outputs.clone();
        let decoder = cx.input("decoder").map(|d| (d.stage.to_string(), d.span));
        let latent = den.get_value("space").and_then(Value::as_str) == Some("latent");
        match (latent, &decoder) {
            (true, None) => cx.error(Pitfall::DecoderMissing, den_span),
            (false, Some((_, span))) => cx.error(Pitfall::DecoderUnneeded, *span),
            (true, Some((name, span))) => {
                let encoder = den.get_value("compressor").and_then(Value::as_str).unwrap_or("").to_string();
                if !encoder.is_empty() && *name != encoder {
                    cx.error(Pitfall::DecoderMismatch { decoder: name.clone(), encoder }, *span);
                }
            }
            (false, None) => {}
        }
        let mode = den.get_value("mode").and_then(Value::as_str).unwrap_or("bravo").to_string();
        let conditioned = den.get_value("conditioned").and_then(Value::as_bool) == Some(true);
        if conditioned && cx.input("conditions").is_none() {
            cx.error(Pitfall::ConditionsMissing { mode: mode.clone() }, cx.decl_span);
        }
        let model_shape = shape_field(&den, "pixel_shape");
        let mut conditioned_on = Value::None;
        if let Some(conditions) = cx.input("conditions") {
            let span = conditions.span;
            let split = conditions.field.map(str::to_string);
            let dataset = DatasetView::read(conditions);
            conditioned_on = Value::Str(split_name(&dataset.name, split.as_deref()));
            if let Some(split) = &split {
                dataset.require_split(cx, split, "conditioning the samples", span);
            }
            if let (Some(shape), Some(model)) = (dataset.shape, model_shape) {
                if shape != model {
                    cx.error(Pitfall::ConditionsShape { conditions: shape, model }, span);
                }
            }
        }
        let scale = cx.value("guidance").as_f64().unwrap_or(1.0);
        if scale > 1.0 {
            let span = cx.span_of("guidance");
            if den.get_value("conditioned").and_then(Value::as_bool) != Some(true) {
                cx.error(Pitfall::GuidanceUnconditional { mode: mode.clone(), scale }, span);
            } else if den.get_value("cfg_trained").and_then(Value::as_bool) != Some(true) {
                cx.error(Pitfall::GuidanceUntrained { scale }, span);
            }
        }
        let mut o = Outputs::default();
        for key in ["mode", "images", "dims", "conditioned", "paired", "modalities"] {
            if let Some(v) = den.get_value(key) {
                o.value(key, v.clone());
            }
        }
        o.value("shape", den.get_value("pixel_shape").cloned().unwrap_or(Value::None))
            .value("count", cx.value("count").clone())
            .value("seg_output", Value::Bool(vocab::mode_generates_seg(&mode)))
            .value("conditioned_on", conditioned_on);
        let images = den.get_value("images").map(vocab::strings).unwrap_or_default();
        let paired = den.get_value("paired").and_then(Value::as_bool) == Some(true);
        o.metrics = metric_names(&images, paired);
        o
    }

    fn resolve(&self, cx: &DeriveCx<'_>, _: &Outputs) -> Resolved<serde_json::Value> {
        to_json(&SampleConfig {
            count: param(cx, "count")?,
            solver: solver_config(&param(cx, "solver")?)?,
            guidance: param(cx, "guidance")?,
            batch: param(cx, "batch")?,
            previews: param(cx, "previews")?,
            seed: param(cx, "seed")?,
        })
    }
}

/// The names `sample` reports for generated `images` (`run::sample` writes exactly these): the
/// sample count, the mean function evaluations per sample, each image's mean within-volume and
/// between-sample standard deviation (the anti-collapse report), the mean intensity inside the
/// conditioning mask above the rest when samples are `paired` with masks, and the fraction of
/// generated masks with a tumour when masks are generated.
pub fn metric_names(images: &[String], paired: bool) -> Vec<String> {
    let mut names = vec!["count".to_string(), "nfe".to_string()];
    for image in images {
        names.push(format!("{image}_std"));
        names.push(format!("{image}_between_sample_std"));
        if paired {
            names.push(format!("{image}_tumour_contrast"));
        }
        if image == SEG {
            names.push("tumour_fraction".to_string());
        }
    }
    names.sort();
    names
}
