//! Views and batches: what a training stage iterates over.
//!
//! A [`Loader`] reads a dataset directory (the layout of `data::layout`) for one split, and
//! yields batches as Candle tensors on the requested device:
//!
//! - **views**: whole volumes `[B, C, D, H, W]`, or 2D slices `[B, C, H, W]` along a chosen
//!   axis, optionally without the slices where the image is empty (background only);
//! - **channels by mode** (seed pitfalls 2, 7, 61): `bravo` → images `[bravo]`; `dual` →
//!   `[t1_pre, t1_gd]`; `multi` → one image modality per sample, with its index in
//!   `mode_ids`; `seg` → `[seg]`; `seg_conditioned` → `[seg]` plus a size-bin vector (tumours
//!   per RANO-BM bin) in `size_bins`. Image modes carry the mask as `condition` `[B, 1, ...]`;
//! - **seeded shuffling**, a permutation drawn per epoch from the seed (ChaCha), so a run is
//!   reproducible and validation never consumes a training stream (pitfall 42);
//! - **grouped batches** for `multi`: every batch holds one modality (pitfalls 40, 44, 57).
//!
//! Memory model: volumes are read on demand, one patient (all its modalities) at a time, and
//! kept in a small least-recently-used cache of [`CACHED_PATIENTS`] patients; host memory is
//! that cache plus one batch, never the whole cohort. For BrainMetShare-size data (about 150
//! patients, 4 modalities of 160x256x256 f32, 168 MB per patient) that is under 1 GB however many
//! patients there are. Volume views shuffle patients; slice views shuffle slices within a
//! window of patients so the cache keeps hitting (see [`Loader::epoch`]).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::layout::{volume_path, DatasetMeta, PatientMeta};
use crate::data::phantom::SizeBin;
use crate::data::volume::Volume;
use crate::io::nifti::load_nifti;
use crate::split::Split;
use crate::vocab::SEG;

/// Patients kept decoded in memory.
pub const CACHED_PATIENTS: usize = 4;

/// Patients whose slices are shuffled together in a slice view.
pub const SHUFFLE_WINDOW: usize = CACHED_PATIENTS;

/// What a training stage generates, as far as batching is concerned; by its name in the
/// language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Seg,
    Bravo,
    Dual,
    Multi,
    SegConditioned,
}

impl Mode {
    /// The mode's name in the language.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Seg => "seg",
            Mode::Bravo => "bravo",
            Mode::Dual => "dual",
            Mode::Multi => "multi",
            Mode::SegConditioned => "seg_conditioned",
        }
    }
}

/// The axis 2D slices are cut along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// Axial slices (fixed depth), `[H, W]`.
    Depth,
    /// Coronal slices (fixed height), `[D, W]`.
    Height,
    /// Sagittal slices (fixed width), `[D, H]`.
    Width,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Volumes,
    Slices { axis: Axis, drop_empty: bool },
}

/// One batch. Every tensor is `f32`.
#[derive(Debug)]
pub struct Batch {
    /// `[B, C, D, H, W]` or `[B, C, H, W]`.
    pub images: Tensor,
    /// The tumour mask for image modes, `[B, 1, ...]`.
    pub condition: Option<Tensor>,
    /// Tumours per RANO-BM bin (tiny, small, medium, large) for `seg_conditioned`, `[B, 4]`.
    pub size_bins: Option<Tensor>,
    /// For `multi`: the index of the batch's modality among the dataset's image modalities.
    pub mode_id: Option<usize>,
    /// Which patient (and slice) each sample came from.
    pub origins: Vec<(String, Option<usize>)>,
}

/// One sample: a patient, a slice of it (slice views), a modality (`multi`).
#[derive(Clone, Debug, PartialEq)]
struct Item {
    patient: usize,
    slice: Option<usize>,
    modality: Option<usize>,
}

type Decoded = Arc<BTreeMap<String, Volume>>;

pub struct Loader {
    dir: PathBuf,
    meta: DatasetMeta,
    patients: Vec<PatientMeta>,
    mode: Mode,
    view: View,
    batch_size: usize,
    seed: u64,
    device: Device,
    /// The image modalities (all but the mask).
    images: Vec<String>,
    /// Modalities stacked as channels regardless of the mode (a compressor's `images`).
    channels: Option<Vec<String>>,
    items: Vec<Item>,
    cache: Mutex<VecDeque<(usize, Decoded)>>,
}

impl Loader {
    /// A loader over one split. Fails, naming the file, when a volume cannot be read, and when
    /// the dataset lacks a modality the mode needs.
    pub fn new(
        dir: &Path,
        split: Split,
        mode: Mode,
        view: View,
        batch_size: usize,
        seed: u64,
        device: Device,
    ) -> Result<Loader, String> {
        Loader::new_unchecked(dir, split, mode, view, batch_size, seed, device)?.check_and_enumerate()
    }

    fn new_unchecked(
        dir: &Path,
        split: Split,
        mode: Mode,
        view: View,
        batch_size: usize,
        seed: u64,
        device: Device,
    ) -> Result<Loader, String> {
        let meta = DatasetMeta::read(dir)?;
        let images: Vec<String> = meta.modalities.iter().filter(|m| *m != SEG).cloned().collect();
        let patients: Vec<PatientMeta> = meta.split(split).cloned().collect();
        Ok(Loader {
            dir: dir.to_path_buf(),
            meta,
            patients,
            mode,
            view,
            batch_size: batch_size.max(1),
            seed,
            device,
            images,
            channels: None,
            items: Vec::new(),
            cache: Mutex::new(VecDeque::new()),
        })
    }

    /// A loader whose samples stack exactly `channels` (a compressor's images), without a
    /// condition: what a `compress` stage trains on.
    pub fn for_channels(
        dir: &Path,
        split: Split,
        channels: Vec<String>,
        view: View,
        batch_size: usize,
        seed: u64,
        device: Device,
    ) -> Result<Loader, String> {
        let mut loader = Loader::new_unchecked(dir, split, Mode::Bravo, view, batch_size, seed, device)?;
        loader.channels = Some(channels);
        loader.check_and_enumerate()
    }

    fn check_and_enumerate(mut self) -> Result<Loader, String> {
        let (dir, mode) = (&self.dir, self.mode);
        for m in self.channel_modalities(None) {
            if !self.meta.modalities.contains(&m) {
                let needs = match &self.channels {
                    Some(_) => "the stage needs".to_string(),
                    None => format!("mode {mode:?} needs"),
                };
                return Err(format!("{}: the dataset has no `{m}`, which {needs}", dir.display()));
            }
        }
        self.items = self.enumerate()?;
        Ok(self)
    }

    /// Samples per epoch.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Batches per epoch.
    pub fn batches(&self) -> usize {
        self.groups(0).iter().map(|g| g.len().div_ceil(self.batch_size)).sum()
    }

    /// The modalities stacked as image channels, for one sample (`multi`: its modality).
    fn channel_modalities(&self, modality: Option<usize>) -> Vec<String> {
        if let Some(channels) = &self.channels {
            return channels.clone();
        }
        match self.mode {
            Mode::Seg | Mode::SegConditioned => vec![SEG.into()],
            Mode::Bravo => vec!["bravo".into()],
            Mode::Dual => vec!["t1_pre".into(), "t1_gd".into()],
            Mode::Multi => modality.and_then(|m| self.images.get(m)).into_iter().cloned().collect(),
        }
    }

    fn conditioned(&self) -> bool {
        self.channels.is_none() && matches!(self.mode, Mode::Bravo | Mode::Dual | Mode::Multi)
    }

    /// Every sample of the split, in order.
    fn enumerate(&self) -> Result<Vec<Item>, String> {
        let modalities: Vec<Option<usize>> =
            if self.mode == Mode::Multi { (0..self.images.len()).map(Some).collect() } else { vec![None] };
        let mut items = Vec::new();
        for patient in 0..self.patients.len() {
            let slices: Vec<Option<usize>> = match self.view {
                View::Volumes => vec![None],
                View::Slices { axis, drop_empty } => {
                    let volumes = self.decoded(patient)?;
                    let reference = volumes.values().next().ok_or("a patient without volumes")?;
                    let count = reference.shape[axis_index(axis)];
                    (0..count)
                        .filter(|s| {
                            !drop_empty
                                || volumes
                                    .iter()
                                    .any(|(m, v)| m != SEG && !slice_of(v, axis, *s).iter().all(|x| *x == 0.0))
                        })
                        .map(Some)
                        .collect()
                }
            };
            for slice in &slices {
                for modality in &modalities {
                    items.push(Item { patient, slice: *slice, modality: *modality });
                }
            }
        }
        Ok(items)
    }

    /// A patient's volumes, from the cache or from disk.
    fn decoded(&self, patient: usize) -> Result<Decoded, String> {
        let mut cache = self.cache.lock().expect("loader cache");
        if let Some(pos) = cache.iter().position(|(p, _)| *p == patient) {
            let hit = cache.remove(pos).expect("position is valid");
            let volumes = Arc::clone(&hit.1);
            cache.push_front(hit);
            return Ok(volumes);
        }
        let id = &self.patients[patient].id;
        let mut volumes = BTreeMap::new();
        for m in &self.meta.modalities {
            let v = load_nifti(&volume_path(&self.dir, id, m)).map_err(|e| e.to_string())?;
            volumes.insert(m.clone(), v);
        }
        let volumes = Arc::new(volumes);
        cache.push_front((patient, Arc::clone(&volumes)));
        cache.truncate(CACHED_PATIENTS);
        Ok(volumes)
    }

    /// The epoch's samples in batch order: grouped by modality for `multi` (one group
    /// otherwise), shuffled by a stream seeded from (seed, epoch).
    fn groups(&self, epoch: u64) -> Vec<Vec<Item>> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut order: Vec<usize> = (0..self.patients.len()).collect();
        shuffle(&mut order, &mut rng);
        let keys: Vec<Option<usize>> =
            if self.mode == Mode::Multi { (0..self.images.len()).map(Some).collect() } else { vec![None] };
        keys.iter()
            .map(|key| {
                let mut group = Vec::new();
                // Slices are shuffled within windows of patients, so the cache keeps hitting.
                for window in order.chunks(SHUFFLE_WINDOW) {
                    let mut part: Vec<Item> = self
                        .items
                        .iter()
                        .filter(|i| window.contains(&i.patient) && i.modality == *key)
                        .cloned()
                        .collect();
                    shuffle(&mut part, &mut rng);
                    group.extend(part);
                }
                group
            })
            .filter(|g| !g.is_empty())
            .collect()
    }

    /// The batches of one epoch, in order.
    pub fn epoch(&self, epoch: u64) -> impl Iterator<Item = Result<Batch, String>> + '_ {
        let groups = self.groups(epoch);
        let batches: Vec<Vec<Item>> = groups
            .into_iter()
            .flat_map(|g| g.chunks(self.batch_size).map(<[Item]>::to_vec).collect::<Vec<_>>())
            .collect();
        batches.into_iter().map(move |items| self.batch(&items))
    }

    fn batch(&self, items: &[Item]) -> Result<Batch, String> {
        let mut images = Vec::new();
        let mut condition = Vec::new();
        let mut bins = Vec::new();
        let mut dims = Vec::new();
        for item in items {
            let volumes = self.decoded(item.patient)?;
            for m in self.channel_modalities(item.modality) {
                let v = &volumes[&m];
                dims = sample_dims(v, self.view);
                images.extend(view_of(v, self.view, item.slice));
            }
            if self.conditioned() {
                condition.extend(view_of(&volumes[SEG], self.view, item.slice));
            }
            if self.channels.is_none() && self.mode == Mode::SegConditioned {
                bins.extend(size_bins(&self.patients[item.patient]));
            }
        }
        let b = items.len();
        let channels = self.channel_modalities(items.first().and_then(|i| i.modality)).len();
        let shape = |c: usize| [vec![b, c], dims.clone()].concat();
        let tensor =
            |data: Vec<f32>, shape: Vec<usize>| Tensor::from_vec(data, shape, &self.device).map_err(|e| e.to_string());
        Ok(Batch {
            images: tensor(images, shape(channels))?,
            condition: if self.conditioned() { Some(tensor(condition, shape(1))?) } else { None },
            size_bins: if self.channels.is_none() && self.mode == Mode::SegConditioned {
                Some(tensor(bins, vec![b, 4])?)
            } else {
                None
            },
            mode_id: items.first().and_then(|i| i.modality),
            origins: items.iter().map(|i| (self.patients[i.patient].id.clone(), i.slice)).collect(),
        })
    }
}

fn axis_index(axis: Axis) -> usize {
    match axis {
        Axis::Depth => 0,
        Axis::Height => 1,
        Axis::Width => 2,
    }
}

/// The spatial dimensions of one sample.
fn sample_dims(v: &Volume, view: View) -> Vec<usize> {
    let [d, h, w] = v.shape;
    match view {
        View::Volumes => vec![d, h, w],
        View::Slices { axis: Axis::Depth, .. } => vec![h, w],
        View::Slices { axis: Axis::Height, .. } => vec![d, w],
        View::Slices { axis: Axis::Width, .. } => vec![d, h],
    }
}

fn view_of(v: &Volume, view: View, slice: Option<usize>) -> Vec<f32> {
    match (view, slice) {
        (View::Slices { axis, .. }, Some(s)) => slice_of(v, axis, s),
        _ => v.data.clone(),
    }
}

/// One 2D slice, row-major in the remaining two axes' order.
fn slice_of(v: &Volume, axis: Axis, s: usize) -> Vec<f32> {
    let [d, h, w] = v.shape;
    match axis {
        Axis::Depth => v.slice(s).to_vec(),
        Axis::Height => (0..d).flat_map(|z| (0..w).map(move |x| (z, x))).map(|(z, x)| v.get(z, s, x)).collect(),
        Axis::Width => (0..d).flat_map(|z| (0..h).map(move |y| (z, y))).map(|(z, y)| v.get(z, y, s)).collect(),
    }
}

/// Tumours per RANO-BM bin, in bin order.
pub(crate) fn size_bins(patient: &PatientMeta) -> [f32; 4] {
    let mut bins = [0.0; 4];
    for t in &patient.tumours {
        let bin = SizeBin::of(t.diameter_mm);
        bins[SizeBin::ALL.iter().position(|b| *b == bin).expect("a known bin")] += 1.0;
    }
    bins
}

/// Fisher–Yates with the given stream.
pub(crate) fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
