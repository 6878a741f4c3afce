//! Dataset kinds: `phantom` (a synthetic brain with tumours, for tests and laptops) and `nifti`
//! (a directory of NIfTI volumes). Both yield the same output: modalities, shape and spacing in
//! (depth, height, width) order, and `train`/`val`/`test` splits made per patient.

use medgen_lang::signature::{
    DataKind, DeriveCx, Field, Outputs, ParamDefault, ParamSig, PathKind, Signature, StageKind, Type,
};
use medgen_lang::syntax::ast::DeclKeyword;
use medgen_lang::value::Value;

use serde::{Deserialize, Serialize};

use crate::data::phantom::patient_id;
use crate::data::volume::Shape;
use crate::pitfalls::Pitfall;
use crate::split::{counts, SplitFractions};
use crate::vocab::{modalities, names};

use super::derive_seed;
use super::resolve::{arg, choice, param, to_json, ParamFile, Resolved};

/// What a `phantom` instance generates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PhantomConfig {
    pub volumes: usize,
    /// (depth, height, width); a 2D shape is one slice deep.
    pub shape: Shape,
    /// Millimetres per voxel, (depth, height, width).
    pub spacing: [f64; 3],
    pub modalities: Vec<String>,
    pub tumours: usize,
    pub split: SplitFractions,
    pub seed: u64,
}

/// How a `nifti` dataset's intensities are brought to [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Normalization {
    /// Clip to the 0.5th–99.5th percentiles, rescale to [0, 1], binarise masks.
    Percentile,
    /// Keep the files' values.
    None,
}

/// What a `nifti` instance reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NiftiConfig {
    pub dir: ParamFile,
    pub modalities: Vec<String>,
    pub pattern: String,
    pub normalize: Normalization,
    /// Crop or pad to this (depth, height, width); `None`: every patient keeps the files' shape.
    pub shape: Option<Shape>,
    /// The declared voxel size, (depth, height, width); `None`: taken from the files.
    pub spacing: Option<[f64; 3]>,
    pub split: SplitFractions,
    pub seed: u64,
}

/// A shape as (depth, height, width): `[h, w]` is one slice deep.
fn shape3(shape: &[usize]) -> Resolved<Shape> {
    match *shape {
        [h, w] => Ok([1, h, w]),
        [d, h, w] => Ok([d, h, w]),
        _ => Err(format!("a shape has 2 or 3 axes, not {}", shape.len())),
    }
}

/// A spacing as (depth, height, width): a 2D spacing is 1 mm deep.
fn spacing3(spacing: &[f64]) -> Resolved<[f64; 3]> {
    match *spacing {
        [h, w] => Ok([1.0, h, w]),
        [d, h, w] => Ok([d, h, w]),
        _ => Err(format!("a spacing has 2 or 3 axes, not {}", spacing.len())),
    }
}

fn split_fractions(cx: &DeriveCx<'_>) -> Resolved<SplitFractions> {
    let split = param::<Value>(cx, "split")?;
    Ok(SplitFractions { train: arg(&split, "train")?, val: arg(&split, "val")?, test: arg(&split, "test")? })
}

fn split_param() -> ParamSig {
    // Each fraction is required once a split is written, so a partial record is an error, not a
    // silent mix with the defaults.
    let fraction = |name, doc| ParamSig::new(name, Type::float(0.0, 1.0), ParamDefault::Required, doc);
    ParamSig::new(
        "split",
        Type::Record {
            of: "split",
            fields: vec![
                fraction("train", "fraction of patients for training"),
                fraction("val", "fraction for validation (model selection)"),
                fraction("test", "fraction held out for evaluation"),
            ],
        },
        ParamDefault::Value(Value::Record(
            [("train", 0.75), ("val", 0.125), ("test", 0.125)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value::Float(v)))
                .collect(),
        )),
        "patient-level split fractions; they must add up to 1",
    )
}

fn seed_param() -> ParamSig {
    ParamSig::new(
        "seed",
        Type::int(0, None),
        ParamDefault::Derived("the pipeline's `seed`"),
        "seed of the split (and of the phantom's shapes)",
    )
}

fn shape_type() -> Type {
    Type::list_len(Type::int(4, Some(4096)), 2, Some(3))
}

fn spacing_type() -> Type {
    Type::list_len(Type::positive(), 2, Some(3))
}

pub struct Phantom {
    sig: Signature,
}

impl Phantom {
    pub fn new() -> Self {
        let ints = |v: &[i64]| Value::List(v.iter().map(|i| Value::Int(*i)).collect());
        let sig = Signature {
            kind: "phantom",
            keyword: DeclKeyword::Dataset,
            doc: "a synthetic brain phantom with tumours: ellipsoid anatomy, per-modality contrast, seeded",
            inputs: vec![],
            params: vec![
                ParamSig::new(
                    "volumes",
                    Type::int(1, Some(100_000)),
                    ParamDefault::Value(Value::Int(32)),
                    "number of synthetic patients",
                ),
                ParamSig::new(
                    "shape",
                    shape_type(),
                    ParamDefault::Value(ints(&[16, 32, 32])),
                    "[depth, height, width] (or [height, width] for 2D)",
                ),
                ParamSig::new(
                    "spacing",
                    spacing_type(),
                    ParamDefault::Derived("1 mm per axis"),
                    "voxel size in mm, same order as `shape`",
                ),
                ParamSig::new(
                    "modalities",
                    modalities(),
                    ParamDefault::Value(names(&["t1_pre".into(), "t1_gd".into(), "seg".into()])),
                    "sequences to synthesise, and `seg` for the tumour mask",
                ),
                ParamSig::new(
                    "tumours",
                    Type::int(0, Some(16)),
                    ParamDefault::Value(Value::Int(2)),
                    "most tumours per patient",
                ),
                split_param(),
                seed_param(),
            ],
            output: DataKind::Dataset,
        };
        Phantom { sig }
    }
}

impl StageKind for Phantom {
    fn signature(&self) -> &Signature {
        &self.sig
    }

    fn derive(&self, cx: &mut DeriveCx<'_>) -> Outputs {
        derive_seed(cx);
        let shape: Vec<i64> = cx.value("shape").as_list().iter().filter_map(Value::as_i64).collect();
        if !cx.is_set("spacing") {
            cx.derive("spacing", Value::List(vec![Value::Float(1.0); shape.len()]));
        }
        check_spacing(cx, shape.len());
        let volumes = cx.value("volumes").as_i64().unwrap_or(0);
        dataset_outputs(cx, Some(volumes), Some(shape))
    }

    fn resolve(&self, cx: &DeriveCx<'_>, _: &Outputs) -> Resolved<serde_json::Value> {
        to_json(&PhantomConfig {
            volumes: param(cx, "volumes")?,
            shape: shape3(&param::<Vec<usize>>(cx, "shape")?)?,
            spacing: spacing3(&param::<Vec<f64>>(cx, "spacing")?)?,
            modalities: param(cx, "modalities")?,
            tumours: param(cx, "tumours")?,
            split: split_fractions(cx)?,
            seed: param(cx, "seed")?,
        })
    }
}

pub struct Nifti {
    sig: Signature,
}

impl Nifti {
    pub fn new() -> Self {
        let sig = Signature {
            kind: "nifti",
            keyword: DeclKeyword::Dataset,
            doc: "a directory of NIfTI volumes, one folder per patient, one file per modality",
            inputs: vec![],
            params: vec![
                ParamSig::new(
                    "dir",
                    Type::Path(PathKind::Dir),
                    ParamDefault::Required,
                    "the directory, relative to the pipeline file",
                ),
                ParamSig::new(
                    "modalities",
                    modalities(),
                    ParamDefault::Required,
                    "modalities to load; each patient must have all",
                ),
                ParamSig::new(
                    "pattern",
                    Type::Str,
                    ParamDefault::Value(Value::Str("{patient}/{modality}.nii.gz".into())),
                    "file layout under `dir`, with {patient} and {modality}",
                ),
                ParamSig::new(
                    "normalize",
                    Type::enumeration("normalisation", &["percentile", "none"]),
                    ParamDefault::Value(Value::Str("percentile".into())),
                    "percentile: clip images to their 0.5th-99.5th percentiles, rescale to [0, 1], binarise masks \
                     at 0.01; none: keep the files' values (e.g. another tool's outputs, to evaluate as they are)",
                ),
                ParamSig::new(
                    "shape",
                    Type::optional(shape_type()),
                    ParamDefault::Value(Value::None),
                    "crop or pad (centred) every volume to [depth, height, width]; none: every patient must have \
                     the first one's shape",
                ),
                ParamSig::new(
                    "spacing",
                    Type::optional(spacing_type()),
                    ParamDefault::Value(Value::None),
                    "the files' voxel size in mm, same order as `shape`, checked for every patient (medgen does \
                     not resample); none takes it from the files, which must agree",
                ),
                split_param(),
                seed_param(),
            ],
            output: DataKind::Dataset,
        };
        Nifti { sig }
    }
}

impl StageKind for Nifti {
    fn signature(&self) -> &Signature {
        &self.sig
    }

    fn derive(&self, cx: &mut DeriveCx<'_>) -> Outputs {
        derive_seed(cx);
        let shape: Option<Vec<i64>> = match cx.value("shape") {
            Value::None => None,
            v => Some(v.as_list().iter().filter_map(Value::as_i64).collect()),
        };
        if let (Some(shape), false) = (&shape, cx.value("spacing").is_none()) {
            check_spacing(cx, shape.len());
        }
        dataset_outputs(cx, None, shape)
    }

    fn resolve(&self, cx: &DeriveCx<'_>, _: &Outputs) -> Resolved<serde_json::Value> {
        to_json(&NiftiConfig {
            dir: ParamFile::at("dir"),
            modalities: param(cx, "modalities")?,
            pattern: param(cx, "pattern")?,
            normalize: choice(cx, "normalize")?,
            shape: param::<Option<Vec<usize>>>(cx, "shape")?.as_deref().map(shape3).transpose()?,
            spacing: param::<Option<Vec<f64>>>(cx, "spacing")?.as_deref().map(spacing3).transpose()?,
            split: split_fractions(cx)?,
            seed: param(cx, "seed")?,
        })
    }
}

/// Seed pitfall 82: spacing has one entry per axis, in the order of `shape`.
fn check_spacing(cx: &mut DeriveCx<'_>, axes: usize) {
    let spacing = cx.value("spacing").as_list().len();
    if spacing != axes {
        let span = cx.span_of("spacing");
        cx.error(Pitfall::SpacingShape { spacing, shape: axes }, span);
    }
}

fn dataset_outputs(cx: &mut DeriveCx<'_>, volumes: Option<i64>, shape: Option<Vec<i64>>) -> Outputs {
    let split = cx.value("split");
    let fractions = SplitFractions {
        train: split.get("train").and_then(Value::as_f64).unwrap_or(0.0),
        val: split.get("val").and_then(Value::as_f64).unwrap_or(0.0),
        test: split.get("test").and_then(Value::as_f64).unwrap_or(0.0),
    };
    let sum = fractions.train + fractions.val + fractions.test;
    if (sum - 1.0).abs() > 1e-6 {
        let span = cx.span_of("split");
        cx.error(Pitfall::SplitSum { sum: (sum * 1e6).round() / 1e6 }, span);
    }
    let mut o = Outputs::default();
    o.value("modalities", cx.value("modalities").clone());
    let dims = shape.as_ref().map_or(3, |s| s.len() as i64);
    o.value("dims", Value::Int(dims));
    o.value("shape", shape.map_or(Value::None, |s| Value::List(s.into_iter().map(Value::Int).collect())));
    o.value("spacing", cx.value("spacing").clone());
    o.value("volumes", volumes.map_or(Value::None, Value::Int));
    if let Some(n) = volumes {
        let seed = cx.value("seed").as_i64().unwrap_or(0) as u64;
        let ids: Vec<String> = (0..n as usize).map(patient_id).collect();
        for (split, count) in counts(&ids, seed, &fractions) {
            o.value(&format!("{}_volumes", split.name()), Value::Int(count as i64));
        }
    }
    for (name, fraction) in [("train", fractions.train), ("val", fractions.val), ("test", fractions.test)] {
        o.value(&format!("{name}_fraction"), Value::Float(fraction));
    }
    for part in ["train", "val", "test"] {
        o.fields.insert(part.to_string(), Field::Data(DataKind::Dataset));
    }
    o
}
