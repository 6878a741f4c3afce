//! What `evaluate` scores, as cases: generated samples, a compressor's reconstructions of the
//! reference split, or another dataset's volumes (e.g. written by another tool and read with
//! `nifti`), each with the reference patient it pairs with, if any.
//!
//! Pairing: a sample pairs with the patient whose mask it was generated for (mask-conditioned
//! modes; size-bin conditioning is not pixelwise, so those samples are unpaired); a
//! reconstruction pairs with the patient it reconstructs; another dataset's volume pairs with the
//! reference patient of the same id. Generated or reconstructed masks are thresholded before any
//! metric sees them; a reference mask must already be binary (the metrics reject anything else).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use medgen_engine::runner::{RunContext, StageError};
use medgen_lang::signature::DataKind;

use super::compressor::{Compressor, CompressorSpec};
use super::encode::{decode_volume, encode_volume, load_compressor, read_volume};
use super::sample::{Generation, SampleRecord, GENERATION};
use super::stage_io::{input_dir, input_kind, input_split, read_json};
use crate::data::layout::{volume_path, DatasetMeta};
use crate::data::volume::{Spacing, Volume};
use crate::io::nifti::{binarize_seg_at, load_nifti};
use crate::split::Split;
use crate::train::trainer::{failed, model_error};
use crate::vocab::SEG;

/// Slices a 2D compressor reconstructs at once.
const RECONSTRUCTION_BATCH: usize = 16;

/// The reference split: its dataset directory, metadata and patients.
pub struct Reference {
    pub dir: PathBuf,
    pub meta: DatasetMeta,
    pub patients: Vec<String>,
}

impl Reference {
    pub fn open(cx: &RunContext<'_>) -> Result<Reference, StageError> {
        let dir = input_dir(cx, "reference")?;
        let meta = DatasetMeta::read(&dir).map_err(failed)?;
        let split = input_split(cx, "reference");
        let patients: Vec<String> =
            meta.patients.iter().filter(|p| split.is_none_or(|s| p.split == s)).map(|p| p.id.clone()).collect();
        if patients.is_empty() {
            let which = split.map_or("the dataset".to_string(), |s| format!("the {} split", s.name()));
            return Err(failed(format!("{}: {which} has no patients to evaluate against", dir.display())));
        }
        Ok(Reference { dir, meta, patients })
    }

    pub fn spacing(&self) -> Spacing {
        Spacing::from_dhw(self.meta.spacing)
    }

    /// One modality of a reference patient.
    pub fn volume(&self, patient: &str, modality: &str) -> Result<Volume, StageError> {
        read(&volume_path(&self.dir, patient, modality))
    }
}

/// One scored item: a name, the reference patient it pairs with, and its volumes.
pub struct Case {
    pub name: String,
    pub patient: Option<String>,
    /// Intensity images by modality.
    pub images: BTreeMap<String, Volume>,
    /// A binary mask, when the subject has one to score.
    pub seg: Option<Volume>,
}

/// Where the cases come from.
pub enum Subject {
    Samples { dir: PathBuf, generation: Generation, records: Vec<SampleRecord> },
    Reconstructions { spec: CompressorSpec, model: Compressor, device: Device },
    Dataset { dir: PathBuf, meta: DatasetMeta, patients: Vec<String> },
}

impl Subject {
    /// Opens the `subject` input as the kind the checker typed it.
    pub fn open(cx: &RunContext<'_>, device: &Device) -> Result<Subject, StageError> {
        let dir = input_dir(cx, "subject")?;
        match input_kind(cx, "subject")? {
            DataKind::Samples => {
                let generation = read_json(&dir.join(GENERATION)).map_err(failed)?;
                let records = read_json(&dir.join("samples.json")).map_err(failed)?;
                Ok(Subject::Samples { dir, generation, records })
            }
            DataKind::Compressor => {
                let (spec, model) = load_compressor(&dir, device)?;
                Ok(Subject::Reconstructions { spec, model, device: device.clone() })
            }
            DataKind::Dataset => {
                let meta = DatasetMeta::read(&dir).map_err(failed)?;
                let split: Option<Split> = input_split(cx, "subject");
                let patients =
                    meta.patients.iter().filter(|p| split.is_none_or(|s| p.split == s)).map(|p| p.id.clone()).collect();
                Ok(Subject::Dataset { dir, meta, patients })
            }
            other => Err(failed(format!("`evaluate` cannot score {other}"))),
        }
    }

    /// The intensity modalities the subject holds.
    pub fn images(&self) -> Vec<String> {
        let all = match self {
            Subject::Samples { generation, .. } => generation.images.clone(),
            Subject::Reconstructions { spec, .. } => spec.images.clone(),
            Subject::Dataset { meta, .. } => meta.modalities.clone(),
        };
        all.into_iter().filter(|m| m != SEG).collect()
    }

    /// Whether the subject has masks of its own to score (generated, reconstructed or given).
    pub fn has_masks(&self) -> bool {
        match self {
            Subject::Samples { generation, .. } => {
                !generation.mask_condition && generation.images.iter().any(|m| m == SEG)
            }
            Subject::Reconstructions { spec, .. } => spec.images.iter().any(|m| m == SEG),
            Subject::Dataset { meta, .. } => meta.modalities.iter().any(|m| m == SEG),
        }
    }

    /// The cases in order, each with the reference patient it pairs with.
    pub fn cases(&self, reference: &Reference) -> Vec<(String, Option<String>)> {
        match self {
            Subject::Samples { generation, records, .. } => records
                .iter()
                .map(|r| (r.name.clone(), r.condition.clone().filter(|_| generation.mask_condition)))
                .collect(),
            Subject::Reconstructions { .. } => {
                reference.patients.iter().map(|p| (p.clone(), Some(p.clone()))).collect()
            }
            Subject::Dataset { patients, .. } => {
                patients.iter().map(|p| (p.clone(), reference.patients.contains(p).then(|| p.clone()))).collect()
            }
        }
    }

    /// Loads (or reconstructs) one case; masks are thresholded at `threshold` when `binarize`.
    pub fn load(
        &self,
        (name, patient): &(String, Option<String>),
        reference: &Reference,
        threshold: f32,
        binarize: bool,
    ) -> Result<Case, StageError> {
        let mut volumes = match self {
            Subject::Samples { dir, generation, .. } => generation
                .images
                .iter()
                .map(|m| Ok((m.clone(), read(&volume_path(dir, name, m))?)))
                .collect::<Result<_, StageError>>()?,
            Subject::Reconstructions { spec, model, device } => {
                let patient = patient.as_deref().unwrap_or(name);
                reconstruct(spec, model, device, reference, patient)?
            }
            Subject::Dataset { dir, meta, .. } => meta
                .modalities
                .iter()
                .map(|m| Ok((m.clone(), read(&volume_path(dir, name, m))?)))
                .collect::<Result<_, StageError>>()?,
        };
        let mut seg = volumes.remove(SEG).filter(|_| self.has_masks());
        if let (Some(mask), true) = (seg.as_mut(), binarize) {
            binarize_seg_at(&mut mask.data, threshold);
        }
        Ok(Case { name: name.clone(), patient: patient.clone(), images: volumes, seg })
    }
}

fn read(path: &Path) -> Result<Volume, StageError> {
    load_nifti(path).map_err(|e| failed(e.to_string()))
}

/// A compressor's reconstruction of one reference patient, each channel in [0, 1]
/// (`CompressorSpec::to_pixels`: clamped intensities, or mask probabilities).
fn reconstruct(
    spec: &CompressorSpec,
    model: &Compressor,
    device: &Device,
    reference: &Reference,
    patient: &str,
) -> Result<BTreeMap<String, Volume>, StageError> {
    let channels = spec
        .images
        .iter()
        .map(|m| read_volume(&reference.dir, patient, m, device))
        .collect::<Result<Vec<Tensor>, StageError>>()?;
    let images = Tensor::stack(&channels, 0).map_err(model_error)?;
    let latent = encode_volume(model, &images, spec.dims, RECONSTRUCTION_BATCH).map_err(model_error)?;
    let decoded = decode_volume(spec, model, &latent, RECONSTRUCTION_BATCH).map_err(model_error)?;
    let shape = reference.meta.shape;
    spec.images
        .iter()
        .enumerate()
        .map(|(c, modality)| {
            let data =
                decoded.get(c).and_then(|v| v.flatten_all()).and_then(|v| v.to_vec1::<f32>()).map_err(model_error)?;
            Ok((modality.clone(), Volume { shape, spacing: reference.spacing(), data }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::nifti::save_nifti;

    #[test]
    fn a_sample_missing_one_of_its_images_fails_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("medgen-subject-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sample_0000")).unwrap();
        let volume = Volume { shape: [1, 2, 2], spacing: Spacing::from_dhw([1.0; 3]), data: vec![0.5; 4] };
        save_nifti(&volume_path(&dir, "sample_0000", "t1_pre"), &volume).unwrap();
        let generation = Generation {
            mode: "dual".into(),
            images: vec!["t1_pre".into(), "t1_gd".into()],
            mask_condition: true,
            dims: 2,
        };
        let subject = Subject::Samples { dir: dir.clone(), generation, records: Vec::new() };
        let meta = DatasetMeta { modalities: Vec::new(), shape: [1, 2, 2], spacing: [1.0; 3], patients: Vec::new() };
        let reference = Reference { dir: dir.clone(), meta, patients: Vec::new() };
        let case = ("sample_0000".to_string(), None);
        let Err(StageError::Failed(message)) = subject.load(&case, &reference, 0.5, true) else {
            panic!("a sample without its t1_gd is an error, not a case with one image fewer")
        };
        assert!(message.contains("sample_0000/t1_gd.nii.gz"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
