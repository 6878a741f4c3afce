//! Regional metrics: how well a generated or reconstructed image matches its reference inside the
//! tumours, per tumour, per RANO-BM size bin, and in the background.
//!
//! **Tumours** come from the reference mask ([`TumourMap`]): connected components (26-connectivity
//! in 3D, 8-connectivity within each slice for 2D images, see
//! [`Geometry`](crate::data::tumours::Geometry)) with their longest diameter in mm between voxel
//! centres, defined for every component including single voxels, lines and planes (seed pitfalls
//! 28 and 74; see [`crate::data::tumours`]), and their RANO-BM bin by that diameter
//! ([`SizeBin`]: tiny < 10 mm ≤ small < 20 mm ≤ medium ≤ 30 mm < large).
//!
//! **Every error is pixel-weighted** (seed pitfalls 28, 31, 34): the tumour MSE is the squared
//! error summed over all tumour voxels of all volumes, divided by the number of those voxels —
//! never a mean of per-volume or per-tumour means, which once made the tumour/background ratio
//! meaningless by weighting the two regions differently. The same holds for the background (every
//! voxel outside the reference mask, air included), for each size bin, and for L1. A
//! [`RegionalAccumulator`] therefore keeps sums and voxel counts, adds volumes to them, and divides
//! only when it reports. For per-volume numbers, fill one accumulator per volume and
//! [`merge`](RegionalAccumulator::merge) it into the dataset's. Per-tumour errors are returned
//! for per-volume output; they are not averaged into anything.
//!
//! **Modalities are never averaged together** (seed pitfall 29): [`ModalityAccumulators`] keeps one
//! accumulator per modality name and reports each separately; there is no combined figure here
//! (`evaluate` reports one pooled over modalities under its own name, `regional_tumour`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::data::phantom::SizeBin;
use crate::data::tumours::{feret_diameters, label, Geometry, Labels};
use crate::data::volume::{Shape, Spacing, Volume};
use crate::metrics::segmentation::{BinaryMask, SPACING_TOLERANCE_MM};

/// One tumour of a reference mask.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Tumour {
    /// Its id in [`TumourMap::labels`].
    pub id: u32,
    pub voxels: u64,
    /// Longest distance between two of its voxel centres, in mm.
    pub feret_mm: f64,
    #[serde(serialize_with = "bin_name")]
    pub bin: SizeBin,
}

/// The tumours of a reference mask, found once and shared by every modality of the patient.
#[derive(Clone, Debug, PartialEq)]
pub struct TumourMap {
    pub labels: Labels,
    pub spacing: Spacing,
    /// `tumours[k].id == k + 1`.
    pub tumours: Vec<Tumour>,
}

impl TumourMap {
    pub fn new(mask: &BinaryMask, geometry: Geometry) -> TumourMap {
        let labels = label(mask.foreground(), mask.shape(), geometry);
        let mut voxels = vec![0u64; labels.count];
        for &id in labels.ids.iter().filter(|&&id| id != 0) {
            voxels[id as usize - 1] += 1;
        }
        let tumours = feret_diameters(&labels, mask.spacing())
            .into_iter()
            .zip(voxels)
            .enumerate()
            .map(|(k, (feret_mm, voxels))| Tumour { id: k as u32 + 1, voxels, feret_mm, bin: SizeBin::of(feret_mm) })
            .collect();
        TumourMap { labels, spacing: mask.spacing(), tumours }
    }

    /// Tumours per size bin, in [`SizeBin::ALL`] order.
    pub fn count_by_bin(&self) -> [u64; 4] {
        let mut out = [0; 4];
        for t in &self.tumours {
            out[bin_index(t.bin)] += 1;
        }
        out
    }
}

/// Which image of a pair, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageRole {
    Reference,
    Generated,
}

impl fmt::Display for ImageRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageRole::Reference => "reference image",
            ImageRole::Generated => "generated image",
        })
    }
}

/// Why regional errors could not be measured.
#[derive(Clone, Debug, PartialEq)]
pub enum RegionalError {
    ShapeMismatch { image: ImageRole, shape: Shape, mask: Shape },
    SpacingMismatch { image: ImageRole, spacing: [f64; 3], mask: [f64; 3] },
}

impl fmt::Display for RegionalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionalError::ShapeMismatch { image, shape, mask } => write!(
                f,
                "the {image} has shape {shape:?} but the tumour mask {mask:?} (depth, height, width); \
                 regional errors need the image on the mask's grid"
            ),
            RegionalError::SpacingMismatch { image, spacing, mask } => write!(
                f,
                "the {image} has spacing {spacing:?} mm but the tumour mask {mask:?} mm (depth, height, width); \
                 regional errors need the image on the mask's grid"
            ),
        }
    }
}

impl std::error::Error for RegionalError {}

/// Sums of squared and absolute errors over some voxels, and how many.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ErrorSums {
    pub squared: f64,
    pub absolute: f64,
    pub voxels: u64,
}

impl ErrorSums {
    fn push(&mut self, difference: f64) {
        self.squared += difference * difference;
        self.absolute += difference.abs();
        self.voxels += 1;
    }

    pub fn add(&mut self, other: &ErrorSums) {
        self.squared += other.squared;
        self.absolute += other.absolute;
        self.voxels += other.voxels;
    }

    /// Mean squared error over the voxels; `None` when there are none.
    pub fn mse(&self) -> Option<f64> {
        (self.voxels > 0).then(|| self.squared / self.voxels as f64)
    }

    /// Mean absolute error over the voxels; `None` when there are none.
    pub fn l1(&self) -> Option<f64> {
        (self.voxels > 0).then(|| self.absolute / self.voxels as f64)
    }
}

/// One tumour's reconstruction error in one volume.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TumourError {
    #[serde(flatten)]
    pub tumour: Tumour,
    pub mse: f64,
    pub l1: f64,
}

/// Pixel-weighted error sums over any number of volumes (see the module doc).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionalAccumulator {
    volumes: u64,
    tumour: ErrorSums,
    background: ErrorSums,
    /// In [`SizeBin::ALL`] order.
    by_bin: [ErrorSums; 4],
    tumours_by_bin: [u64; 4],
}

impl RegionalAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one volume pair, the reference mask's tumours given by `tumours`; returns each
    /// tumour's error in this volume, in id order.
    pub fn add(
        &mut self,
        reference: &Volume,
        generated: &Volume,
        tumours: &TumourMap,
    ) -> Result<Vec<TumourError>, RegionalError> {
        check_on_grid(ImageRole::Reference, reference, tumours)?;
        check_on_grid(ImageRole::Generated, generated, tumours)?;
        // This volume's sums first, then added to the totals: adding volume by volume and merging
        // per-volume accumulators then give bit-identical totals.
        let mut background = ErrorSums::default();
        let mut per_tumour = vec![ErrorSums::default(); tumours.tumours.len()];
        for ((&id, &r), &g) in tumours.labels.ids.iter().zip(&reference.data).zip(&generated.data) {
            let difference = f64::from(g) - f64::from(r);
            match id {
                0 => background.push(difference),
                _ => per_tumour[id as usize - 1].push(difference),
            }
        }
        self.volumes += 1;
        self.background.add(&background);
        let mut out = Vec::with_capacity(per_tumour.len());
        for (tumour, sums) in tumours.tumours.iter().zip(&per_tumour) {
            let bin = bin_index(tumour.bin);
            self.tumour.add(sums);
            self.by_bin[bin].add(sums);
            self.tumours_by_bin[bin] += 1;
            let (mse, l1) = (sums.mse().expect("a tumour has voxels"), sums.l1().expect("a tumour has voxels"));
            out.push(TumourError { tumour: *tumour, mse, l1 });
        }
        Ok(out)
    }

    /// Adds everything `other` has accumulated.
    pub fn merge(&mut self, other: &RegionalAccumulator) {
        self.volumes += other.volumes;
        self.tumour.add(&other.tumour);
        self.background.add(&other.background);
        for k in 0..SizeBin::ALL.len() {
            self.by_bin[k].add(&other.by_bin[k]);
            self.tumours_by_bin[k] += other.tumours_by_bin[k];
        }
    }

    pub fn report(&self) -> RegionalReport {
        let tumour = RegionScore::from(self.tumour);
        let background = RegionScore::from(self.background);
        let ratio = |t: Option<f64>, b: Option<f64>| t.zip(b).filter(|&(_, b)| b > 0.0).map(|(t, b)| t / b);
        RegionalReport {
            volumes: self.volumes,
            tumour_to_background_mse: ratio(tumour.mse, background.mse),
            tumour_to_background_l1: ratio(tumour.l1, background.l1),
            tumour,
            background,
            by_bin: SizeBin::ALL
                .iter()
                .enumerate()
                .map(|(k, bin)| BinScore {
                    bin: *bin,
                    tumours: self.tumours_by_bin[k],
                    voxels: self.by_bin[k].voxels,
                    mse: self.by_bin[k].mse(),
                    l1: self.by_bin[k].l1(),
                })
                .collect(),
        }
    }
}

/// Pixel-weighted errors of a region; `None` where the region has no voxels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RegionScore {
    pub voxels: u64,
    pub mse: Option<f64>,
    pub l1: Option<f64>,
}

impl From<ErrorSums> for RegionScore {
    fn from(sums: ErrorSums) -> Self {
        RegionScore { voxels: sums.voxels, mse: sums.mse(), l1: sums.l1() }
    }
}

/// Pixel-weighted errors over all tumours of one size bin.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BinScore {
    #[serde(serialize_with = "bin_name")]
    pub bin: SizeBin,
    pub tumours: u64,
    pub voxels: u64,
    pub mse: Option<f64>,
    pub l1: Option<f64>,
}

/// What a [`RegionalAccumulator`] reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegionalReport {
    pub volumes: u64,
    pub tumour: RegionScore,
    pub background: RegionScore,
    /// Tumour MSE over background MSE; `None` when either is absent or the background's is 0.
    pub tumour_to_background_mse: Option<f64>,
    /// Tumour L1 over background L1, likewise.
    pub tumour_to_background_l1: Option<f64>,
    /// In [`SizeBin::ALL`] order, every bin present.
    pub by_bin: Vec<BinScore>,
}

/// One [`RegionalAccumulator`] per modality, reported separately (seed pitfall 29).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModalityAccumulators {
    by_modality: BTreeMap<String, RegionalAccumulator>,
}

impl ModalityAccumulators {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one volume pair of `modality`; see [`RegionalAccumulator::add`].
    pub fn add(
        &mut self,
        modality: &str,
        reference: &Volume,
        generated: &Volume,
        tumours: &TumourMap,
    ) -> Result<Vec<TumourError>, RegionalError> {
        self.by_modality.entry(modality.to_owned()).or_default().add(reference, generated, tumours)
    }

    /// Adds everything `other` has accumulated, modality by modality.
    pub fn merge(&mut self, other: &ModalityAccumulators) {
        for (modality, acc) in &other.by_modality {
            self.by_modality.entry(modality.clone()).or_default().merge(acc);
        }
    }

    /// The accumulator of one modality, if any volume of it was added.
    pub fn get(&self, modality: &str) -> Option<&RegionalAccumulator> {
        self.by_modality.get(modality)
    }

    /// One report per modality, by name.
    pub fn report(&self) -> BTreeMap<String, RegionalReport> {
        self.by_modality.iter().map(|(m, acc)| (m.clone(), acc.report())).collect()
    }
}

fn check_on_grid(role: ImageRole, image: &Volume, tumours: &TumourMap) -> Result<(), RegionalError> {
    if image.shape != tumours.labels.shape {
        return Err(RegionalError::ShapeMismatch { image: role, shape: image.shape, mask: tumours.labels.shape });
    }
    let (s, m) = (image.spacing.dhw(), tumours.spacing.dhw());
    if s.iter().zip(&m).any(|(a, b)| (a - b).abs() > SPACING_TOLERANCE_MM) {
        return Err(RegionalError::SpacingMismatch { image: role, spacing: s, mask: m });
    }
    Ok(())
}

fn bin_index(bin: SizeBin) -> usize {
    SizeBin::ALL.iter().position(|&b| b == bin).expect("a known bin")
}

fn bin_name<S: Serializer>(bin: &SizeBin, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(bin.name())
}
