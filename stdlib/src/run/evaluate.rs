//! Running `evaluate`: score a subject (samples, a compressor's reconstructions, or another
//! dataset; `evaluate_subject`) against a reference split with the requested metrics
//! (`crate::metrics`), and write per-volume and aggregate results (`evaluate_report`).
//!
//! **Which metric sees what.** Paired metrics (PSNR, SSIM, MS-SSIM, LPIPS, regional, Dice, IoU,
//! HD95) compare each case with its own reference patient and skip unpaired cases; a run where
//! no case pairs fails rather than reporting nothing. PSNR is over the whole volume. SSIM and
//! MS-SSIM follow `dims`: the mean over axial slices in 2D, the whole volume in 3D. `lpips` is
//! the mean over axial slices, `lpips_3d` the mean of the three axes' slice means, each axis in
//! chunks of `lpips_chunk` slices. FID and KID compare the subject's slices with every reference
//! volume's: axial slices in 2D, the three axes separately in 3D (combined: the mean of the
//! axes); reference features are cached store-wide by content (`RunContext::cache_dir`), so
//! they are computed once per dataset, weights and preprocessing. Masks: Dice, IoU, precision,
//! recall and HD95 (mm, 3D) of the subject's thresholded masks; regional errors pool squared and
//! absolute errors over all tumour (background) voxels of all volumes, per modality.
//!
//! **Names.** Every metric is reported per image as `METRIC_IMAGE` and as `METRIC`, the mean
//! over images (for `regional`, the pooled error over images), so `expect` lines can use either.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use candle_core::{Device, Tensor};
use medgen_engine::runner::{Outcome, RunContext, StageError};

use super::evaluate_report::{Report, Scores};
use super::evaluate_subject::{Case, Reference, Subject};
use super::Run;
use crate::data::tumours::Geometry;
use crate::data::volume::Volume;
use crate::metrics::distribution::{fid, fid_2p5d, kid, kid_2p5d, KidConfig};
use crate::metrics::features::{FeatureCache, FeatureExtractor, Features, VolumeFeatures};
use crate::metrics::image::{mean_over_slices, ms_ssim, psnr, ssim, Image, SsimConfig, PSNR_CAP_DB};
use crate::metrics::lpips::{InputRange, Lpips, SliceAxis, VolumeLpipsConfig};
use crate::metrics::regional::{ModalityAccumulators, TumourMap};
use crate::metrics::segmentation::{score, BinaryMask, MaskRole};
use crate::stages::{EvaluateConfig, ParamFile};
use crate::train::trainer::failed;
use crate::vocab::{DISTRIBUTION_METRICS, PAIRED_METRICS, SEG};

/// Data range of medgen's intensities: volumes are normalised to [0, 1].
const DATA_RANGE: f64 = 1.0;

pub struct Evaluate;

impl EvaluateConfig {
    fn wants(&self, metric: &str) -> bool {
        self.metrics.iter().any(|m| m.name() == metric)
    }

    /// The requested metrics that compare each case with its own reference patient.
    fn paired(&self) -> Vec<&'static str> {
        self.metrics.iter().map(|m| m.name()).filter(|m| PAIRED_METRICS.contains(m)).collect()
    }
}

/// The networks the requested metrics need, loaded once.
struct Networks {
    lpips: Option<Lpips>,
    features: Option<(FeatureExtractor, FeatureCache)>,
}

impl Run for Evaluate {
    type Config = EvaluateConfig;

    fn version(&self) -> u32 {
        1
    }

    fn run(&self, cx: &RunContext<'_>, config: EvaluateConfig) -> Result<Outcome, StageError> {
        let settings = &config;
        let device = crate::device::select().map_err(failed)?;
        let networks = load_networks(cx, settings, &device)?;
        let reference = Reference::open(cx)?;
        let subject = Subject::open(cx, &device)?;
        let cases = subject.cases(&reference);
        if cases.is_empty() {
            return Err(failed("the subject has no volumes to evaluate"));
        }
        let paired = settings.paired();
        if !paired.is_empty() && cases.iter().all(|(_, patient)| patient.is_none()) {
            return Err(failed(format!(
                "none of the subject's {} volumes pairs with a patient of the reference split, so {} cannot be \
                 computed: evaluate samples conditioned on the reference's masks, or a dataset with the reference's \
                 patient ids",
                cases.len(),
                paired.join(", ")
            )));
        }

        let images = subject.images();
        let mut report = Report::new(settings.metrics.iter().map(|m| m.name().to_string()).collect(), images.clone());
        let mut regional = ModalityAccumulators::new();
        let mut generated: BTreeMap<String, FeatureSet> = BTreeMap::new();
        for (index, case_id) in cases.iter().enumerate() {
            if cx.cancel.load(Ordering::SeqCst) {
                return Err(StageError::Cancelled);
            }
            (cx.progress)(format!("volume {}/{}  {}", index + 1, cases.len(), case_id.0));
            let case = subject.load(case_id, &reference, settings.seg_threshold as f32, settings.binarize_seg)?;
            let mut scores = Scores::default();
            if let Some(patient) = &case.patient {
                score_paired(&case, patient, &reference, settings, &networks, &mut scores, &mut regional)?;
            }
            if let Some((extractor, _)) = &networks.features {
                for (modality, volume) in &case.images {
                    let features = features_of(extractor, None, volume, settings.dims, &device)?;
                    generated.entry(modality.clone()).or_default().push(features);
                }
            }
            report.add_case(&case.name, case.patient.as_deref(), scores);
        }
        if settings.wants("regional") {
            report.set_regional(regional.report());
        }
        if let Some((extractor, cache)) = &networks.features {
            for modality in &images {
                let Some(subject_set) = generated.get(modality) else { continue };
                (cx.progress)(format!("reference features: {modality}"));
                let mut reference_set = FeatureSet::default();
                for patient in &reference.patients {
                    let volume = reference.volume(patient, modality)?;
                    reference_set.push(features_of(extractor, Some(cache), &volume, settings.dims, &device)?);
                }
                distribution(settings, modality, &reference_set, subject_set, &mut report)?;
            }
        }
        report.write(&cx.out_dir)?;
        Ok(Outcome { metrics: report.metrics() })
    }
}

/// Loads LPIPS and the feature network when a requested metric needs them; their weights files
/// are required then.
fn load_networks(cx: &RunContext<'_>, settings: &EvaluateConfig, device: &Device) -> Result<Networks, StageError> {
    let weights = |file: &Option<ParamFile>, param: &str, metric: &str| -> Result<PathBuf, StageError> {
        let file = file.as_ref().ok_or_else(|| {
            failed(format!(
                "`{metric}` needs the network's weights: set `{param} = \"path/to/file.safetensors\"` (docs/weights.md \
                 shows the one-time conversion of the published weights)"
            ))
        })?;
        file.path(cx)
    };
    let lpips = if settings.wants("lpips") || settings.wants("lpips_3d") {
        let path = weights(&settings.lpips_weights, "lpips_weights", "lpips")?;
        Some(Lpips::load(&path, InputRange::Unit, device).map_err(|e| failed(e.to_string()))?)
    } else {
        None
    };
    let features = if settings.metrics.iter().any(|m| DISTRIBUTION_METRICS.contains(&m.name())) {
        let path = weights(&settings.feature_weights, "feature_weights", "fid")?;
        let extractor = FeatureExtractor::load(&path, device).map_err(|e| failed(e.to_string()))?;
        let cache = FeatureCache::new(cx.cache_dir.join("features")).map_err(|e| failed(e.to_string()))?;
        Some((extractor, cache))
    } else {
        None
    };
    Ok(Networks { lpips, features })
}

/// The paired metrics of one case against its reference patient.
fn score_paired(
    case: &Case,
    patient: &str,
    reference: &Reference,
    settings: &EvaluateConfig,
    networks: &Networks,
    scores: &mut Scores,
    regional: &mut ModalityAccumulators,
) -> Result<(), StageError> {
    let context = |e: String| failed(format!("{} against reference patient {patient}: {e}", case.name));
    let reference_mask = if settings.wants("regional") || case.seg.is_some() {
        Some(
            BinaryMask::from_volume(&reference.volume(patient, SEG)?, MaskRole::Reference)
                .map_err(|e| context(e.to_string()))?,
        )
    } else {
        None
    };
    let tumours = match (settings.wants("regional"), &reference_mask) {
        (true, Some(mask)) => Some(TumourMap::new(mask, Geometry::Volume)),
        _ => None,
    };
    for (modality, generated) in &case.images {
        let truth = reference.volume(patient, modality)?;
        if truth.shape != generated.shape {
            return Err(context(format!(
                "{modality} has shape {:?}, the reference {:?} (depth, height, width)",
                generated.shape, truth.shape
            )));
        }
        image_metrics(modality, &truth, generated, settings, networks, scores).map_err(context)?;
        if let Some(tumours) = &tumours {
            regional.add(modality, &truth, generated, tumours).map_err(|e| context(e.to_string()))?;
        }
    }
    if let (Some(seg), Some(truth)) = (&case.seg, &reference_mask) {
        let prediction = BinaryMask::from_volume(seg, MaskRole::Prediction).map_err(|e| context(e.to_string()))?;
        let s = score(&prediction, truth, Geometry::Volume).map_err(|e| context(e.to_string()))?;
        scores.mask(s, |m| settings.wants(m));
    }
    Ok(())
}

/// PSNR, SSIM, MS-SSIM and LPIPS of one modality, as requested.
fn image_metrics(
    modality: &str,
    truth: &Volume,
    generated: &Volume,
    settings: &EvaluateConfig,
    networks: &Networks,
    scores: &mut Scores,
) -> Result<(), String> {
    let shape = truth.shape.to_vec();
    let x = Image::new(&truth.data, &shape).map_err(|e| e.to_string())?;
    let y = Image::new(&generated.data, &shape).map_err(|e| e.to_string())?;
    let cfg = SsimConfig::default();
    let by_dims = |metric: &(dyn Fn(Image<'_>, Image<'_>) -> Result<f64, crate::metrics::image::ImageMetricError>
                         + Sync)| {
        if settings.dims == 2 {
            mean_over_slices(x, y, 0, metric)
        } else {
            metric(x, y)
        }
    };
    if settings.wants("psnr") {
        scores.image("psnr", modality, psnr(x, y, DATA_RANGE).map_err(|e| e.to_string())?.min(PSNR_CAP_DB));
    }
    if settings.wants("ssim") {
        scores.image("ssim", modality, by_dims(&|a, b| ssim(a, b, &cfg)).map_err(|e| e.to_string())?);
    }
    if settings.wants("ms_ssim") {
        let scales = settings.ms_ssim_scales;
        scores.image("ms_ssim", modality, by_dims(&|a, b| ms_ssim(a, b, &cfg, scales)).map_err(|e| e.to_string())?);
    }
    if let Some(lpips) = &networks.lpips {
        for (metric, axes) in [("lpips", vec![SliceAxis::Depth]), ("lpips_3d", SliceAxis::ALL.to_vec())] {
            if !settings.wants(metric) {
                continue;
            }
            let config = VolumeLpipsConfig { axes, chunk: settings.lpips_chunk };
            let result = lpips.volume(truth, generated, &config).map_err(|e| e.to_string())?;
            scores.image(metric, modality, result.combined);
            if metric == "lpips_3d" {
                for axis in &result.axes {
                    scores.detail(format!("lpips_3d_{modality}_{}", axis.axis.name()), axis.mean);
                }
            }
        }
    }
    Ok(())
}

/// The features of one modality's volumes: one set of axial-slice features per volume in 2D,
/// three sets (one per axis) in 3D.
#[derive(Default)]
struct FeatureSet {
    slices: Vec<Features>,
    volumes: Vec<VolumeFeatures>,
}

impl FeatureSet {
    fn push(&mut self, features: Measured) {
        match features {
            Measured::Slices(f) => self.slices.push(f),
            Measured::Volume(f) => self.volumes.push(f),
        }
    }
}

enum Measured {
    Slices(Features),
    Volume(VolumeFeatures),
}

/// Features of one volume, through `cache` when given.
fn features_of(
    extractor: &FeatureExtractor,
    cache: Option<&FeatureCache>,
    volume: &Volume,
    dims: usize,
    device: &Device,
) -> Result<Measured, StageError> {
    let error = |e: crate::metrics::features::FeatureError| failed(e.to_string());
    if dims == 2 {
        let [depth, height, width] = volume.shape;
        let slices =
            Tensor::from_slice(&volume.data, (depth, 1, height, width), device).map_err(|e| failed(e.to_string()))?;
        let features = match cache {
            Some(cache) => extractor.images_cached(&slices, cache).map_err(error)?.0,
            None => extractor.images(&slices).map_err(error)?,
        };
        return Ok(Measured::Slices(features));
    }
    let features = match cache {
        Some(cache) => extractor.volume_cached(volume, cache).map_err(error)?.0,
        None => extractor.volume(volume).map_err(error)?,
    };
    Ok(Measured::Volume(features))
}

/// FID and KID of one modality, as requested.
fn distribution(
    settings: &EvaluateConfig,
    modality: &str,
    reference: &FeatureSet,
    subject: &FeatureSet,
    report: &mut Report,
) -> Result<(), StageError> {
    let error = |e: &dyn std::fmt::Display| failed(format!("{modality}: {e}"));
    let kid_config = KidConfig { seed: settings.seed, ..KidConfig::default() };
    if settings.dims == 2 {
        let real = Features::concat(&reference.slices).map_err(|e| error(&e))?;
        let fake = Features::concat(&subject.slices).map_err(|e| error(&e))?;
        if settings.wants("fid") {
            let f = fid(&real, &fake).map_err(|e| error(&e))?;
            report.distribution("fid", modality, f.value);
            if f.regularised {
                report.note(regularised_note(&format!("fid_{modality}")));
            }
        }
        if settings.wants("kid") {
            let k = kid(&real, &fake, &kid_config).map_err(|e| error(&e))?;
            report.distribution("kid", modality, k.mean);
            report.distribution("kid_std", modality, k.std);
        }
        return Ok(());
    }
    let real = VolumeFeatures::pool(&reference.volumes).map_err(|e| error(&e))?;
    let fake = VolumeFeatures::pool(&subject.volumes).map_err(|e| error(&e))?;
    if settings.wants("fid") {
        let f = fid_2p5d(&real, &fake).map_err(|e| error(&e))?;
        report.distribution("fid", modality, f.combined);
        for axis in &f.axes {
            report.detail(format!("fid_{modality}_{}", axis.axis.name()), axis.fid.value);
            if axis.fid.regularised {
                report.note(regularised_note(&format!("fid_{modality}_{}", axis.axis.name())));
            }
        }
    }
    if settings.wants("kid") {
        let k = kid_2p5d(&real, &fake, &kid_config).map_err(|e| error(&e))?;
        report.distribution("kid", modality, k.combined);
        let std = k.axes.iter().map(|a| a.kid.std).sum::<f64>() / k.axes.len() as f64;
        report.distribution("kid_std", modality, std);
        for axis in &k.axes {
            report.detail(format!("kid_{modality}_{}", axis.axis.name()), axis.kid.mean);
            report.detail(format!("kid_std_{modality}_{}", axis.axis.name()), axis.kid.std);
        }
    }
    Ok(())
}

/// The note for a FID whose trace term needed pytorch-fid's regularisation.
fn regularised_note(name: &str) -> String {
    format!("{name}: the covariances' product had no stable square root, so the trace term was computed from Σ + εI, as pytorch-fid does")
}
