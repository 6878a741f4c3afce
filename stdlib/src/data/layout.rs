//! The on-disk layout of a dataset stage's output, which both dataset kinds write and every
//! model stage reads: one folder per patient, one `.nii.gz` per modality, and `dataset.json`
//! with the shape, spacing, modalities and each patient's split and origin. A `phantom` writes
//! it from the generator; a `nifti` stage writes it from the user's files after checking,
//! cropping or padding, and normalising them — so after that point both are the same code.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::volume::Origin;
use crate::split::Split;

/// The file that describes a dataset directory.
pub const META_FILE: &str = "dataset.json";

/// A tumour: as the phantom drew it, or as measured from a `nifti` dataset's mask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TumourMeta {
    /// Longest diameter, in millimetres.
    pub diameter_mm: f64,
    /// RANO-BM size bin: `tiny`, `small`, `medium` or `large`.
    pub bin: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatientMeta {
    pub id: String,
    pub split: Split,
    pub tumours: Vec<TumourMeta>,
    /// Where the patient's volumes in this dataset have their voxel (0, 0, 0), in the world of
    /// the files they were read from (RAS, mm); every volume's affine carries it, so they overlay
    /// those files. Zero for the phantom, and for descriptions written before it was recorded.
    #[serde(default)]
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    pub modalities: Vec<String>,
    /// (depth, height, width).
    pub shape: [usize; 3],
    /// Millimetres, (depth, height, width).
    pub spacing: [f64; 3],
    /// Sorted by id.
    pub patients: Vec<PatientMeta>,
}

impl DatasetMeta {
    pub fn read(dir: &Path) -> Result<DatasetMeta, String> {
        let path = dir.join(META_FILE);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(META_FILE), bytes)
    }

    /// The patients of one split.
    pub fn split(&self, split: Split) -> impl Iterator<Item = &PatientMeta> {
        self.patients.iter().filter(move |p| p.split == split)
    }
}

/// Where a patient's modality is stored in a dataset directory.
pub fn volume_path(dir: &Path, patient: &str, modality: &str) -> PathBuf {
    dir.join(patient).join(format!("{modality}.nii.gz"))
}
