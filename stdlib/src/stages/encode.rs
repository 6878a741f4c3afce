//! `encode`: a dataset through a trained compressor, giving latents (and the tumour mask at
//! latent resolution for seg-conditioned modes). Everything downstream reads the latent
//! geometry from here.

use serde::{Deserialize, Serialize};

use medgen_lang::signature::{
    DataKind, DeriveCx, InputSig, Outputs, ParamDefault, ParamSig, Signature, StageKind, Type,
};
use medgen_lang::syntax::ast::DeclKeyword;
use medgen_lang::value::Value;

use crate::pitfalls::Pitfall;
use crate::vocab::strings;

use super::compress::{check_divisible, latent_shape};
use super::resolve::{param, to_json, Resolved};
use super::{split_fields, with_metrics, DatasetView};

pub struct Encode {
    sig: Signature,
}

impl Encode {
    pub fn new() -> Self {
        Encode {
            sig: Signature {
                kind: "encode",
                keyword: DeclKeyword::Stage,
                doc: "encode a dataset to latents with a trained compressor",
                inputs: vec![
                    InputSig {
                        name: "compressor",
                        kinds: vec![DataKind::Compressor],
                        required: true,
                        doc: "the trained compressor",
                    },
                    InputSig {
                        name: "data",
                        kinds: vec![DataKind::Dataset],
                        required: true,
                        doc: "the dataset to encode",
                    },
                ],
                params: vec![ParamSig::new(
                    "batch",
                    Type::int(1, Some(65_536)),
                    ParamDefault::Value(Value::Int(16)),
                    "volumes encoded at once",
                )],
                output: DataKind::Latents,
            },
        }
    }
}

impl StageKind for Encode {
    fn signature(&self) -> &Signature {
        &self.sig
    }

    fn derive(&self, cx: &mut DeriveCx<'_>) -> Outputs {
        let (Some(comp), Some(view)) = (cx.input("compressor"), cx.input("data")) else {
            return Outputs::default();
        };
        let comp = comp.outputs.clone();
        let data_span = view.span;
        let view_outputs = view.outputs.clone();
        let data = DatasetView::read(view);
        let images = comp.get_value("images").map(strings).unwrap_or_default();
        data.require(cx, &images, "the compressor", data_span);
        let dims = comp.get_value("dims").and_then(Value::as_i64).unwrap_or(2);
        if dims == 3 && data.dims == 2 {
            cx.error(Pitfall::Model3dOn2d { model: "compressor".into() }, data_span);
        }
        let scale = comp.get_value("scale_factor").and_then(Value::as_i64).unwrap_or(1);
        if let Some(shape) = &data.shape {
            let what = format!("the compressor's downsampling factor ({scale}x)");
            check_divisible(cx, shape, dims, scale, &what, data_span);
        }
        let shape = data.shape.as_ref().map(|s| latent_shape(s, dims, scale));
        let mut o = Outputs::default();
        for key in ["kind", "dims", "images", "latent_channels", "scale_factor", "depth_scale_factor"] {
            if let Some(v) = comp.get_value(key) {
                o.value(key, v.clone());
            }
        }
        o.value("channels", comp.get_value("latent_channels").cloned().unwrap_or(Value::None))
            .value("shape", shape.map_or(Value::None, |s| Value::List(s.into_iter().map(Value::Int).collect())))
            .value("compressor", Value::Str(cx.input("compressor").map_or("", |c| c.stage).to_string()))
            .value("modalities", Value::List(data.modalities.iter().map(|m| Value::Enum(m.clone())).collect()))
            .value("dataset", Value::Str(data.name.clone()))
            .value(
                "pixel_shape",
                data.shape.clone().map_or(Value::None, |s| Value::List(s.into_iter().map(Value::Int).collect())),
            )
            .value("data_dims", Value::Int(data.dims))
            .value("volumes", data.volumes.map_or(Value::None, Value::Int));
        for field in split_fields() {
            if let Some(v) = view_outputs.get_value(&field) {
                o.value(&field, v.clone());
            }
        }
        // The training latents' standard deviation and the scale that brings them to unit variance.
        with_metrics(o, &["latent_scale", "latent_std"])
    }

    fn resolve(&self, cx: &DeriveCx<'_>, _: &Outputs) -> Resolved<serde_json::Value> {
        to_json(&EncodeConfig { batch: param(cx, "batch")? })
    }
}

/// What an `encode` instance does beyond its inputs: the compressor and the dataset are its
/// typed inputs (`compressor.json`, the dataset's description).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EncodeConfig {
    /// Slices (2D compressor) encoded at once.
    pub batch: usize,
}
