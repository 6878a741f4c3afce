//! The stage kinds. Each file declares one kind's signature and its `derive`: the outputs an
//! instance yields (channel counts, latent shapes, metric names) and the domain rules it checks.

mod compress;
mod dataset;
mod diffuse;
mod encode;
mod evaluate;
mod resolve;
mod sample;
mod shell;

pub(crate) use compress::CompressConfig;
pub use compress::{metric_names as compress_metric_names, Compress, MetricRules};
pub use dataset::{Nifti, Phantom};
pub(crate) use dataset::{NiftiConfig, Normalization, PhantomConfig};
pub use diffuse::Diffuse;
pub(crate) use diffuse::{DiffuseConfig, SpaceKind};
pub use encode::Encode;
pub(crate) use encode::EncodeConfig;
pub use evaluate::Evaluate;
pub(crate) use evaluate::EvaluateConfig;
pub(crate) use resolve::ParamFile;
pub use sample::Sample;
pub(crate) use sample::SampleConfig;
pub use shell::Shell;
pub(crate) use shell::ShellConfig;

use medgen_lang::signature::{DeriveCx, InputView, Outputs};
use medgen_lang::source::Span;
use medgen_lang::value::Value;

use crate::pitfalls::Pitfall;
use crate::train::optim::AdamWConfig;
use crate::train::trainer::TrainConfig;
use crate::vocab::strings;
use resolve::{param, Resolved};

/// A dataset input as stages read it from its outputs.
pub(crate) struct DatasetView {
    pub name: String,
    pub modalities: Vec<String>,
    /// `None` when only known at run time (NIfTI without a resampling shape).
    pub shape: Option<Vec<i64>>,
    pub dims: i64,
    pub volumes: Option<i64>,
    /// Fraction and (when the patient count is known) size of each split.
    pub splits: Vec<SplitView>,
}

/// One split of a dataset as stages see it.
pub(crate) struct SplitView {
    pub name: &'static str,
    pub fraction: f64,
    pub volumes: Option<i64>,
}

/// The splits every dataset has, in order.
pub(crate) const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Output fields that carry a dataset's splits downstream (`encode` passes them on).
pub(crate) fn split_fields() -> impl Iterator<Item = String> {
    SPLITS.iter().flat_map(|s| [format!("{s}_fraction"), format!("{s}_volumes")])
}

/// A shape among an upstream stage's outputs (`shape`, `pixel_shape`), `None` when it is known
/// only at run time.
pub(crate) fn shape_field(outputs: &Outputs, name: &str) -> Option<Vec<i64>> {
    outputs.get_value(name).filter(|v| !v.is_none()).map(|v| v.as_list().iter().filter_map(Value::as_i64).collect())
}

impl DatasetView {
    pub fn read(view: &InputView<'_>) -> Self {
        let o = view.outputs;
        DatasetView {
            name: o.get_value("dataset").and_then(Value::as_str).unwrap_or(view.stage).to_string(),
            modalities: o.get_value("modalities").map(strings).unwrap_or_default(),
            shape: shape_field(o, "shape"),
            dims: o.get_value("dims").and_then(Value::as_i64).unwrap_or(3),
            volumes: o.get_value("volumes").and_then(Value::as_i64),
            splits: SPLITS
                .iter()
                .map(|name| SplitView {
                    name,
                    fraction: o.get_value(&format!("{name}_fraction")).and_then(Value::as_f64).unwrap_or(0.0),
                    volumes: o.get_value(&format!("{name}_volumes")).and_then(Value::as_i64),
                })
                .collect(),
        }
    }

    /// The intensity images (every modality but the mask).
    pub fn images(&self) -> Vec<String> {
        self.modalities.iter().filter(|m| *m != crate::vocab::SEG).cloned().collect()
    }

    /// Reports modalities in `needed` that the dataset lacks; returns whether all are there.
    pub fn require(
        &self,
        cx: &mut DeriveCx<'_>,
        needed: &[String],
        needed_by: &str,
        span: medgen_lang::source::Span,
    ) -> bool {
        let missing: Vec<String> = needed.iter().filter(|m| !self.modalities.contains(m)).cloned().collect();
        if missing.is_empty() {
            return true;
        }
        cx.error(
            Pitfall::MissingModality { dataset: self.name.clone(), missing, needed_by: needed_by.to_string() },
            span,
        );
        false
    }

    /// Reports the split `name` when it holds no patient: a training stage needs `train` and
    /// `val` (a best checkpoint needs a real validation, seed pitfall 39), an evaluation its
    /// reference split. A split is empty when its fraction is 0, or when it rounds to no
    /// patient of a known count.
    pub fn require_split(&self, cx: &mut DeriveCx<'_>, name: &str, purpose: &'static str, span: Span) {
        let Some(split) = self.splits.iter().find(|s| s.name == name) else { return };
        if split.fraction == 0.0 || split.volumes == Some(0) {
            let kind = Pitfall::EmptySplit {
                dataset: self.name.clone(),
                split: split.name,
                purpose,
                fraction: split.fraction,
                volumes: self.volumes,
            };
            cx.error(kind, span);
        }
    }

    /// A training stage trains on `train` and selects its best checkpoint on `val`.
    pub fn require_training_splits(&self, cx: &mut DeriveCx<'_>, span: Span) {
        self.require_split(cx, "train", "training", span);
        self.require_split(cx, "val", "validation", span);
    }
}

/// Fills the stage's `seed` from the pipeline seed when the file does not set it.
pub(crate) fn derive_seed(cx: &mut DeriveCx<'_>) {
    if !cx.is_set("seed") {
        let seed = cx.pipeline_seed;
        cx.derive("seed", Value::Int(seed));
    }
}

/// The spatial axes of a shape, named for messages: (depth,) height, width.
pub(crate) fn axes(shape: &[i64]) -> Vec<(&'static str, i64)> {
    let names: &[&str] = if shape.len() == 3 { &["depth", "height", "width"] } else { &["height", "width"] };
    names.iter().copied().zip(shape.iter().copied()).collect()
}

/// `brain.test`, or `brain` for a whole dataset: which patients an input holds.
pub(crate) fn split_name(dataset: &str, split: Option<&str>) -> String {
    split.map_or_else(|| dataset.to_string(), |s| format!("{dataset}.{s}"))
}

/// The axes of an axial slice: height and width.
pub(crate) fn axial(shape: &[i64]) -> Vec<(&'static str, i64)> {
    let all = axes(shape);
    let skip = all.len().saturating_sub(2);
    all.into_iter().skip(skip).collect()
}

/// The first of `axes` shorter than a `window` that `what` slides over them, as the problem it
/// is (E0125); `fix` says what to do.
pub(crate) fn too_small(axes: &[(&'static str, i64)], window: i64, what: &str, fix: &str) -> Option<Pitfall> {
    axes.iter().find(|(_, size)| *size < window).map(|&(axis, size)| Pitfall::WindowTooLarge {
        what: what.to_string(),
        window,
        axis,
        size,
        fix: fix.to_string(),
    })
}

/// Outputs of a training stage: the metrics its validation logs.
pub(crate) fn with_metrics(mut o: Outputs, metrics: &[&str]) -> Outputs {
    o.metrics = metrics.iter().map(|m| m.to_string()).collect();
    o
}

/// The training parameters every training stage has (`vocab::training_params`), resolved.
pub(crate) fn train_config(cx: &DeriveCx<'_>) -> Resolved<TrainConfig> {
    let [beta1, beta2] = param::<Vec<f64>>(cx, "betas")?[..] else {
        return Err("`betas` must hold two numbers".into());
    };
    Ok(TrainConfig {
        epochs: param(cx, "epochs")?,
        lr: param(cx, "lr")?,
        warmup_epochs: param(cx, "warmup")?,
        grad_clip: param(cx, "grad_clip")?,
        ema: param(cx, "ema")?,
        adamw: AdamWConfig { beta1, beta2, eps: AdamWConfig::default().eps, weight_decay: param(cx, "weight_decay")? },
        val_every: param(cx, "val_every")?,
        seed: param(cx, "seed")?,
        spike_guard: param(cx, "spike_guard")?,
        divergence_guard: param(cx, "divergence_guard")?,
    })
}
