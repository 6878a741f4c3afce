//! Running the dataset kinds. Both write the layout of `data::layout`: `phantom` by
//! generating each patient; `nifti` by reading the user's folder, checking everything before
//! writing anything (every missing modality, unreadable or truncated file, NaN voxel and shape
//! mismatch is reported at once, each naming its file), then cropping or padding to the
//! pipeline's shape, normalising intensities and binarising masks. Every volume is written at its
//! patient's origin (where the files put the RAS voxel (0, 0, 0), moved by the crop or pad), so
//! it overlays the patient's files in a viewer; the phantom's are at origin 0. Patients are
//! processed one at a time, so memory holds one patient's volumes, not the cohort's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use medgen_engine::runner::{Outcome, RunContext, StageError};

use super::Run;
use crate::data::layout::{volume_path, DatasetMeta, PatientMeta, TumourMeta};
use crate::data::phantom::{generate, patient_id, PhantomConfig, SizeBin};
use crate::data::tumours::diameters;
use crate::data::volume::{Origin, Shape, Spacing, Volume};
use crate::io::nifti::{binarize_gt, load_nifti_ras, normalize_intensity, save_nifti_at, INTENSITY_PERCENTILES};
use crate::split::assign;
use crate::stages::{self as stage, NiftiConfig, Normalization};
use crate::vocab::SEG;

pub struct Phantom;
pub struct Nifti;

fn save(out: &Path, patient: &str, modality: &str, volume: &Volume, origin: Origin) -> Result<(), StageError> {
    let path = volume_path(out, patient, modality);
    std::fs::create_dir_all(path.parent().expect("a patient folder"))
        .and_then(|()| save_nifti_at(&path, volume, origin).map_err(std::io::Error::other))
        .map_err(|e| StageError::Failed(format!("cannot write {}: {e}", path.display())))
}

fn write_meta(cx: &RunContext<'_>, meta: &DatasetMeta) -> Result<(), StageError> {
    meta.write(&cx.out_dir).map_err(|e| StageError::Failed(format!("cannot write the dataset description: {e}")))
}

impl Run for Phantom {
    type Config = stage::PhantomConfig;

    fn version(&self) -> u32 {
        1
    }

    fn run(&self, cx: &RunContext<'_>, c: stage::PhantomConfig) -> Result<Outcome, StageError> {
        let spacing = Spacing::from_dhw(c.spacing);
        let config = PhantomConfig { shape: c.shape, spacing, max_tumours: c.tumours, seed: c.seed };
        let (count, shape, modalities) = (c.volumes, c.shape, c.modalities);
        let ids: Vec<String> = (0..count).map(patient_id).collect();
        let splits = assign(&ids, c.seed, &c.split);
        let names: Vec<&str> = modalities.iter().map(String::as_str).collect();
        let mut patients = Vec::with_capacity(count);
        for (i, id) in ids.iter().enumerate() {
            if cx.cancel.load(Ordering::Relaxed) {
                return Err(StageError::Cancelled);
            }
            (cx.progress)(format!("patient {}/{count}", i + 1));
            let patient = generate(&config, i, &names);
            for (modality, volume) in &patient.modalities {
                save(&cx.out_dir, id, modality, volume, Origin::ZERO)?;
            }
            let tumours = patient
                .tumours
                .iter()
                .map(|t| TumourMeta { diameter_mm: t.diameter_mm, bin: SizeBin::of(t.diameter_mm).name().into() })
                .collect();
            patients.push(PatientMeta { id: id.clone(), split: splits[id], tumours, origin: Origin::ZERO });
        }
        write_meta(cx, &DatasetMeta { modalities, shape, spacing: spacing.dhw(), patients })?;
        Ok(Outcome::default())
    }
}

/// Where the pattern puts one patient's modality, trying `.nii` when `.nii.gz` is absent.
fn source_path(dir: &Path, pattern: &str, patient: &str, modality: &str) -> PathBuf {
    let path = dir.join(pattern.replace("{patient}", patient).replace("{modality}", modality));
    let plain = path.to_string_lossy().strip_suffix(".gz").map(PathBuf::from);
    match plain {
        Some(nii) if !path.exists() && nii.exists() => nii,
        _ => path,
    }
}

/// One patient's volumes in RAS voxel order, by modality, and the world position of their voxel
/// (0, 0, 0), which all of them share.
struct PatientVolumes {
    volumes: BTreeMap<String, Volume>,
    origin: Origin,
}

/// One patient's volumes, read and checked; every problem is a message naming its file.
fn read_patient(
    dir: &Path,
    pattern: &str,
    patient: &str,
    modalities: &[String],
) -> Result<PatientVolumes, Vec<String>> {
    let mut volumes = BTreeMap::new();
    let mut problems = Vec::new();
    for m in modalities {
        let path = source_path(dir, pattern, patient, m);
        if !path.exists() {
            problems.push(format!("{}: missing (patient {patient} has no `{m}`)", path.display()));
            continue;
        }
        match load_nifti_ras(&path) {
            Ok((v, origin)) => {
                volumes.insert(m.clone(), (path, v, origin));
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    let mut reference: Option<(&PathBuf, &Volume, Origin)> = None;
    for (path, v, origin) in volumes.values() {
        let Some((first, r, r_origin)) = reference else {
            reference = Some((path, v, *origin));
            continue;
        };
        if v.shape != r.shape {
            problems.push(format!(
                "{}: shape {:?} differs from {:?} of {} (same patient)",
                path.display(),
                v.shape,
                r.shape,
                first.display()
            ));
        } else if !same_spacing(v.spacing, r.spacing) {
            problems.push(format!(
                "{}: voxel spacing {:?} mm differs from {:?} mm of {} (same patient)",
                path.display(),
                v.spacing.dhw(),
                r.spacing.dhw(),
                first.display()
            ));
        } else if !same_origin(*origin, r_origin) {
            problems.push(format!(
                "{}: voxel (0, 0, 0) lies at {:?} mm (x, y, z, in RAS order), not at {:?} mm as in {} (same \
                 patient): the volumes do not overlay",
                path.display(),
                origin.xyz(),
                r_origin.xyz(),
                first.display()
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let origin = reference.map_or(Origin::ZERO, |(_, _, origin)| origin);
    Ok(PatientVolumes { volumes: volumes.into_iter().map(|(m, (_, v, _))| (m, v)).collect(), origin })
}

/// How far apart, in mm, the origins of one patient's volumes may be (header rounding).
const ORIGIN_TOLERANCE_MM: f64 = 1e-3;

fn same_origin(a: Origin, b: Origin) -> bool {
    a.xyz().iter().zip(b.xyz()).all(|(x, y)| (x - y).abs() <= ORIGIN_TOLERANCE_MM)
}

/// Relative tolerance of voxel sizes that count as the same (header rounding).
const SPACING_TOLERANCE: f64 = 1e-3;

fn same_spacing(a: Spacing, b: Spacing) -> bool {
    a.dhw().iter().zip(b.dhw()).all(|(x, y)| (x - y).abs() <= SPACING_TOLERANCE * y.abs().max(1.0))
}

/// Patients whose geometry would otherwise be silently relabelled: medgen does not resample, so
/// every patient must have the declared voxel spacing (or, without one, the first patient's), and
/// without a declared `shape` to crop or pad to, the first patient's shape. Each problem names
/// its patient.
fn geometry_problems(
    patients: &[(&str, Shape, Spacing)],
    shape_declared: bool,
    spacing: Option<Spacing>,
) -> Vec<String> {
    let Some(&(first, first_shape, first_spacing)) = patients.first() else { return Vec::new() };
    let (wanted, from) = match spacing {
        Some(s) => (s, "the declared `spacing`".to_string()),
        None => (first_spacing, format!("patient {first}'s")),
    };
    let mut problems = Vec::new();
    for &(id, shape, spacing) in patients {
        if !same_spacing(spacing, wanted) {
            problems.push(format!(
                "patient {id}: voxel spacing {:?} mm, not {from} {:?} mm (medgen does not resample: resample the \
                 files to one spacing, or leave `spacing` out when they share theirs)",
                spacing.dhw(),
                wanted.dhw()
            ));
        }
        if !shape_declared && shape != first_shape {
            problems.push(format!(
                "patient {id}: shape {shape:?}, not patient {first}'s {first_shape:?} (declare `shape` to crop or pad \
                 every volume to one shape)"
            ));
        }
    }
    problems
}

/// Patient folders under `dir`, sorted.
fn patients_in(dir: &Path) -> Result<Vec<String>, StageError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| StageError::Failed(format!("cannot read {}: {e}", dir.display())))?;
    let mut ids: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    if ids.is_empty() {
        return Err(StageError::Failed(format!(
            "{}: no patient folders (expected one folder per patient)",
            dir.display()
        )));
    }
    Ok(ids)
}

impl Run for Nifti {
    type Config = NiftiConfig;

    fn version(&self) -> u32 {
        2
    }

    fn run(&self, cx: &RunContext<'_>, c: NiftiConfig) -> Result<Outcome, StageError> {
        let dir = c.dir.path(cx)?;
        let (pattern, modalities) = (c.pattern.as_str(), c.modalities.as_slice());
        let ids = patients_in(&dir)?;
        let declared_shape = c.shape;
        let declared_spacing = c.spacing.map(Spacing::from_dhw);
        // First pass: check every patient, so that all problems are reported before any work.
        let mut problems = Vec::new();
        let mut geometries: Vec<(&str, Shape, Spacing)> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            (cx.progress)(format!("checking patient {}/{}", i + 1, ids.len()));
            match read_patient(&dir, pattern, id, modalities) {
                Ok(PatientVolumes { volumes, .. }) => {
                    if let Some(v) = volumes.values().next() {
                        geometries.push((id, v.shape, v.spacing));
                    }
                }
                Err(mut found) => problems.append(&mut found),
            }
        }
        problems.extend(geometry_problems(&geometries, declared_shape.is_some(), declared_spacing));
        if !problems.is_empty() {
            let n = problems.len();
            let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
            return Err(StageError::Failed(format!(
                "{n} problem{} in {}:\n{}",
                if n == 1 { "" } else { "s" },
                dir.display(),
                list.join("\n")
            )));
        }
        let Some(&(_, native_shape, native_spacing)) = geometries.first() else {
            return Err(StageError::Failed(format!("{}: no patient has volumes to read", dir.display())));
        };
        let shape = declared_shape.unwrap_or(native_shape);
        let spacing = declared_spacing.unwrap_or(native_spacing);
        let splits = assign(&ids, c.seed, &c.split);
        let normalize = c.normalize == Normalization::Percentile;
        let mut patients = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            if cx.cancel.load(Ordering::Relaxed) {
                return Err(StageError::Cancelled);
            }
            (cx.progress)(format!("patient {}/{}", i + 1, ids.len()));
            let PatientVolumes { volumes, origin } =
                read_patient(&dir, pattern, id, modalities).map_err(|p| StageError::Failed(p.join("\n")))?;
            // Every modality has the same shape and spacing, so one crop or pad moves all origins.
            let origin = volumes.values().next().map_or(origin, |v| v.fitted_origin(shape, origin));
            let mut tumours = Vec::new();
            for (modality, volume) in volumes {
                let mut v = volume.fit_to(shape);
                v.spacing = spacing;
                if modality == SEG {
                    if normalize {
                        binarize_gt(&mut v);
                    }
                    tumours = diameters(&v)
                        .into_iter()
                        .map(|d| TumourMeta { diameter_mm: d, bin: SizeBin::of(d).name().into() })
                        .collect();
                } else if normalize {
                    normalize_intensity(&mut v, INTENSITY_PERCENTILES.0, INTENSITY_PERCENTILES.1);
                }
                save(&cx.out_dir, id, &modality, &v, origin)?;
            }
            patients.push(PatientMeta { id: id.clone(), split: splits[id], tumours, origin });
        }
        write_meta(cx, &DatasetMeta { modalities: modalities.to_vec(), shape, spacing: spacing.dhw(), patients })?;
        Ok(Outcome::default())
    }
}
