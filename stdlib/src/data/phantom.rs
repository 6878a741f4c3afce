//! The synthetic brain phantom: a deterministic stand-in for brain MRI with metastases, so
//! pipelines, tests and laptops run without patient data.
//!
//! # Geometry
//!
//! Everything is placed in millimetres, measured from the outer corner of voxel (0, 0, 0), in
//! (depth, height, width) order like [`Volume`]: voxel (d, h, w) samples the point at its
//! centre, ((d + ½)·s_d, (h + ½)·s_h, (w + ½)·s_w). The anatomy scales with the field of view
//! (shape × spacing) and the tumours are drawn in millimetres, so two configs with the same
//! field of view give the same patient sampled on different grids — the same tumours, at 1 mm
//! or at 2 mm (what multi-resolution experiments need).
//!
//! A single slice (depth 1, a 2D dataset) is the central axial slice of a head
//! [`SLICE_DEPTH_RATIO`] as deep as the slice is wide, and every tumour is centred in it with its
//! longest axis in plane, so the slice shows each tumour's longest diameter.
//!
//! The head is an ellipsoid filling [`HEAD_FILL`] of the field of view along each axis. With ρ
//! the radius normalised by the head's semi-axes (ρ = 1 on the head's surface):
//!
//! | tissue       | where                                                                  |
//! |--------------|------------------------------------------------------------------------|
//! | background   | ρ > 1 (air)                                                            |
//! | scalp        | [`SKULL_OUTER`] < ρ ≤ 1                                                |
//! | skull        | [`SKULL_INNER`] < ρ ≤ [`SKULL_OUTER`]                                  |
//! | CSF          | brain surface < ρ ≤ [`SKULL_INNER`], and the two lateral ventricles    |
//! | grey matter  | the cortex band, grey/white boundary < ρ ≤ brain surface               |
//! | white matter | ρ ≤ grey/white boundary                                                |
//!
//! The brain surface sits at ρ ≈ [`BRAIN_EDGE`] and the grey/white boundary at
//! [`WM_FRACTION`] of it; both are perturbed by a few smooth low-frequency folds (products of
//! cosines of the normalised coordinates), the inner boundary more than the outer, so the
//! cortex band varies in thickness like gyri. The lateral ventricles are two small ellipsoids
//! either side of the midline (the width axis is left–right). Per patient, the head's centre
//! and semi-axes, the brain and white-matter fractions, the folds and the ventricles' sizes and
//! positions vary a little.
//!
//! # Tumours
//!
//! Each patient has between 0 and `max_tumours` metastases, axis-aligned ellipsoids inside the
//! brain. For each, a RANO-BM size bin ([`SizeBin`], by longest diameter) is drawn uniformly,
//! then a longest diameter uniformly within it ([`TINY_MIN_MM`] to [`LARGE_MAX_MM`] overall),
//! then the two other radii as fractions ([`ELONGATION_MIN`] to 1) of the longest. A radius
//! larger than [`TUMOUR_FIT`] of the brain's safe zone along its axis is clamped to it, so in a
//! small field of view (the default 16×32×32 at 1 mm, say) large tumours cannot exist: they come
//! out as the largest that fits, and [`Tumour::diameter_mm`] reports the clamped size. A centre
//! is drawn so the whole tumour lies inside the brain's safe zone and at least
//! [`TUMOUR_GAP_MM`] from every other tumour; a tumour that finds no such place in
//! [`PLACEMENT_TRIES`] tries is dropped, so a crowded small brain may hold fewer than drawn.
//! With a voxel diagonal below [`TUMOUR_GAP_MM`], each tumour is its own connected component
//! of `seg` (seed pitfall 28 measures tumours per connected component).
//!
//! Every tumour has an oedema halo (radii × [`OEDEMA_SCALE`] + [`OEDEMA_MARGIN_MM`]) that
//! replaces grey and white matter, never CSF. A tumour longer than [`RIM_DIAMETER_MM`] enhances
//! only at its rim: inside [`NECROTIC_CORE`] of its radii it is a necrotic core.
//!
//! # Contrast
//!
//! Each tissue has one value per sequence, in [0, 1] ([`contrast`]):
//!
//! | tissue       | t1_pre | t1_gd | bravo | flair | t2   |
//! |--------------|--------|-------|-------|-------|------|
//! | background   | 0      | 0     | 0     | 0     | 0    |
//! | scalp (fat)  | 0.85   | 0.85  | 0.85  | 0.70  | 0.55 |
//! | skull        | 0.08   | 0.08  | 0.08  | 0.05  | 0.06 |
//! | CSF          | 0.12   | 0.12  | 0.10  | 0.08  | 0.95 |
//! | grey matter  | 0.50   | 0.50  | 0.42  | 0.55  | 0.60 |
//! | white matter | 0.70   | 0.70  | 0.74  | 0.42  | 0.40 |
//! | oedema       | 0.60   | 0.60  | 0.62  | 0.85  | 0.80 |
//! | enhancing    | 0.48   | 0.95  | 0.92  | 0.70  | 0.65 |
//! | necrosis     | 0.35   | 0.35  | 0.33  | 0.55  | 0.85 |
//!
//! T1 (t1_pre): white matter brighter than grey, CSF dark, tumour and oedema slightly
//! hypointense. t1_gd is t1_pre after gadolinium: solid tumour and rims enhance strongly,
//! necrosis does not. bravo (a T1-weighted, inversion-prepared 3D post-contrast sequence) is
//! t1_gd with more grey/white contrast. FLAIR suppresses CSF and shows oedema bright and tumour
//! bright-ish; T2 shows CSF, oedema and necrosis bright. `seg` is the binary tumour mask:
//! 1 on enhancing tumour and necrotic core, 0 elsewhere, with no bias and no noise.
//!
//! Each image is then multiplied by a smooth bias field, one per patient (the coil's, shared by
//! its sequences): a product over the three axes of 1 + a·t + b·(t² − ⅓), t ∈ (−1, 1) across
//! the field of view, |a| ≤ [`BIAS_LINEAR`], |b| ≤ [`BIAS_QUADRATIC`]. Rician noise follows, the
//! magnitude of a complex Gaussian, √((s + σ·n₁)² + (σ·n₂)²), with σ drawn per patient and
//! sequence in [[`NOISE_SIGMA_MIN`], [`NOISE_SIGMA_MAX`]]; then values are clipped to [0, 1].
//! Labels are sampled at voxel centres: there is no partial-volume blur.
//!
//! # Seeding
//!
//! Every random draw comes from a ChaCha8 stream keyed by (seed, patient index, purpose):
//! anatomy, tumours, acquisition (bias and σ), and noise per sequence, with one ChaCha stream
//! number per depth slice. So patient `i` depends only on (seed, i) — generating patient 3
//! alone gives the bytes it has among patients 0..10, and adding patients never changes
//! existing ones; asking for fewer sequences leaves the others unchanged; and slices are
//! rendered in parallel with the same bytes on any number of threads.

use std::collections::BTreeMap;
use std::f64::consts::TAU;

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::volume::{Shape, Spacing, Volume};
use crate::vocab::{MODALITIES, SEG};

/// Fraction of the field of view the head spans along each axis.
pub const HEAD_FILL: f64 = 0.88;
/// A single slice cuts a head this deep relative to its smaller in-plane extent (an adult head
/// is about 160 mm deep in a 256 mm field of view).
pub const SLICE_DEPTH_RATIO: f64 = 0.625;
/// Normalised radius of the skull's outer surface (the scalp lies outside it).
pub const SKULL_OUTER: f64 = 0.93;
/// Normalised radius of the skull's inner surface.
pub const SKULL_INNER: f64 = 0.86;
/// Normalised radius of the (unfolded) brain surface.
pub const BRAIN_EDGE: f64 = 0.82;
/// The grey/white boundary as a fraction of the brain surface's radius.
pub const WM_FRACTION: f64 = 0.87;

/// Relative per-patient jitter of the head's centre (of the field of view).
const CENTRE_JITTER: f64 = 0.01;
/// Relative per-patient jitter of the head's semi-axes.
const HEAD_JITTER: f64 = 0.02;
/// Relative per-patient jitter of the brain surface's radius.
const BRAIN_JITTER: f64 = 0.02;
/// Relative per-patient jitter of the grey/white boundary's radius.
const WM_JITTER: f64 = 0.03;

/// Folds of a boundary: a sum of `terms` products of cosines of the normalised coordinates.
struct FoldSpec {
    terms: usize,
    /// Largest total relative displacement of the boundary.
    amplitude: f64,
    /// Angular frequencies per unit of normalised radius.
    frequency: (f64, f64),
}

/// The brain surface: gentle, low-frequency.
const BRAIN_FOLDS: FoldSpec = FoldSpec { terms: 2, amplitude: 0.025, frequency: (2.0, 4.0) };
/// The grey/white boundary: deeper and busier, so the cortex's thickness varies.
const WM_FOLDS: FoldSpec = FoldSpec { terms: 3, amplitude: 0.07, frequency: (5.0, 9.0) };

/// A lateral ventricle's semi-axes, as fractions of the head's, (depth, height, width).
const VENTRICLE_AXES: [f64; 3] = [0.16, 0.30, 0.07];
/// A ventricle's centre relative to the head's, as fractions of the head's semi-axes; the two
/// ventricles mirror each other across the width (left–right) axis.
const VENTRICLE_OFFSET: [f64; 3] = [0.08, -0.02, 0.10];
/// Relative per-patient jitter of the ventricles' semi-axes.
const VENTRICLE_SIZE_JITTER: f64 = 0.15;
/// Per-patient jitter of the ventricles' offsets, as a fraction of the head's semi-axes.
const VENTRICLE_OFFSET_JITTER: f64 = 0.02;

/// RANO-BM: a tumour is tiny below this longest diameter.
pub const TINY_BELOW_MM: f64 = 10.0;
/// RANO-BM: small below this, medium from here.
pub const SMALL_BELOW_MM: f64 = 20.0;
/// RANO-BM: large above this.
pub const LARGE_ABOVE_MM: f64 = 30.0;
/// The smallest longest diameter drawn.
pub const TINY_MIN_MM: f64 = 4.0;
/// The largest longest diameter drawn.
pub const LARGE_MAX_MM: f64 = 45.0;
/// The two shorter radii are at least this fraction of the longest.
pub const ELONGATION_MIN: f64 = 0.7;
/// Tumours lie inside this fraction of the brain's innermost (fully folded-in) surface.
pub const TUMOUR_ZONE: f64 = 0.9;
/// No radius exceeds this fraction of the safe zone's semi-axis; with 3·0.55² < 1 a tumour
/// always fits at the zone's centre.
pub const TUMOUR_FIT: f64 = 0.55;
/// Least distance between two tumours' bounding spheres.
pub const TUMOUR_GAP_MM: f64 = 4.0;
/// Random centres tried per tumour before it is dropped.
pub const PLACEMENT_TRIES: usize = 100;
/// The oedema halo's radii: the tumour's times this, plus [`OEDEMA_MARGIN_MM`].
pub const OEDEMA_SCALE: f64 = 1.5;
/// Added to the scaled radii of the oedema halo.
pub const OEDEMA_MARGIN_MM: f64 = 2.0;
/// Tumours longer than this enhance at the rim around a necrotic core.
pub const RIM_DIAMETER_MM: f64 = 15.0;
/// A rim-enhancing tumour's necrotic core, as a fraction of its radii.
pub const NECROTIC_CORE: f64 = 0.6;

/// Largest linear coefficient of the bias field per axis.
pub const BIAS_LINEAR: f64 = 0.08;
/// Largest quadratic coefficient of the bias field per axis.
pub const BIAS_QUADRATIC: f64 = 0.08;
/// Least Rician noise σ.
pub const NOISE_SIGMA_MIN: f64 = 0.02;
/// Largest Rician noise σ.
pub const NOISE_SIGMA_MAX: f64 = 0.04;

/// The image sequences, the columns of the contrast table.
const IMAGES: [&str; 5] = ["t1_pre", "t1_gd", "bravo", "flair", "t2"];

/// The contrast table (see the module doc), one row per [`Tissue`], one column per
/// [`IMAGES`] entry.
const CONTRAST: [[f32; IMAGES.len()]; Tissue::ALL.len()] = [
    // t1_pre, t1_gd, bravo, flair, t2
    [0.00, 0.00, 0.00, 0.00, 0.00], // background
    [0.85, 0.85, 0.85, 0.70, 0.55], // scalp
    [0.08, 0.08, 0.08, 0.05, 0.06], // skull
    [0.12, 0.12, 0.10, 0.08, 0.95], // CSF
    [0.50, 0.50, 0.42, 0.55, 0.60], // grey matter
    [0.70, 0.70, 0.74, 0.42, 0.40], // white matter
    [0.60, 0.60, 0.62, 0.85, 0.80], // oedema
    [0.48, 0.95, 0.92, 0.70, 0.65], // enhancing tumour
    [0.35, 0.35, 0.33, 0.55, 0.85], // necrosis
];

/// The last 8 bytes of every ChaCha key, so the phantom's streams differ from any other use of
/// the same seed.
const KEY_DOMAIN: [u8; 8] = *b"phantom\0";
/// 2⁻²⁴, to turn 24 random bits into a float in [0, 1).
const UNIT_24: f32 = 1.0 / (1u32 << 24) as f32;
/// 2⁻⁵³, to turn 53 random bits into a float in [0, 1).
const UNIT_53: f64 = 1.0 / (1u64 << 53) as f64;

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhantomConfig {
    pub shape: Shape,
    pub spacing: Spacing,
    /// Most tumours per patient; each patient draws a count in 0..=max_tumours.
    pub max_tumours: usize,
    pub seed: u64,
}

impl PhantomConfig {
    /// The field of view in mm, (depth, height, width).
    pub fn fov_mm(&self) -> [f64; 3] {
        let s = self.spacing.dhw();
        std::array::from_fn(|k| self.shape[k] as f64 * s[k])
    }

    /// A single axial slice (depth 1, how a 2D dataset is stored).
    pub fn is_slice(&self) -> bool {
        self.shape[0] == 1
    }

    /// The field of view the anatomy scales with: a slice's depth is its thickness, so a slice
    /// takes the depth of a head [`SLICE_DEPTH_RATIO`] as deep as its smaller in-plane extent.
    fn anatomy_fov_mm(&self) -> [f64; 3] {
        let mut fov = self.fov_mm();
        if self.is_slice() {
            fov[0] = fov[1].min(fov[2]) * SLICE_DEPTH_RATIO;
        }
        fov
    }
}

/// One metastasis: an axis-aligned ellipsoid.
#[derive(Clone, Debug, PartialEq)]
pub struct Tumour {
    /// Centre in mm from the outer corner of voxel (0, 0, 0), (depth, height, width).
    pub centre_mm: [f64; 3],
    /// Semi-axes in mm, (depth, height, width).
    pub radii_mm: [f64; 3],
    /// Longest diameter, 2 × the largest radius.
    pub diameter_mm: f64,
    /// Enhances at the rim around a necrotic core (diameter > [`RIM_DIAMETER_MM`]).
    pub rim_enhancing: bool,
}

impl Tumour {
    fn new(centre_mm: [f64; 3], radii_mm: [f64; 3]) -> Self {
        let diameter_mm = 2.0 * radii_mm.iter().copied().fold(0.0, f64::max);
        Tumour { centre_mm, radii_mm, diameter_mm, rim_enhancing: diameter_mm > RIM_DIAMETER_MM }
    }

    /// The ellipsoid's volume, 4/3·π·r₁·r₂·r₃, in mm³.
    pub fn volume_mm3(&self) -> f64 {
        4.0 / 3.0 * std::f64::consts::PI * self.radii_mm.iter().product::<f64>()
    }

    pub fn size_bin(&self) -> SizeBin {
        SizeBin::of(self.diameter_mm)
    }

    /// The oedema halo's semi-axes.
    fn halo_mm(&self) -> [f64; 3] {
        self.radii_mm.map(|r| r * OEDEMA_SCALE + OEDEMA_MARGIN_MM)
    }
}

/// RANO-BM size bins by longest diameter: tiny < 10 mm ≤ small < 20 mm ≤ medium ≤ 30 mm < large.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SizeBin {
    Tiny,
    Small,
    Medium,
    Large,
}

impl SizeBin {
    pub const ALL: [SizeBin; 4] = [SizeBin::Tiny, SizeBin::Small, SizeBin::Medium, SizeBin::Large];

    pub fn of(diameter_mm: f64) -> SizeBin {
        if diameter_mm < TINY_BELOW_MM {
            SizeBin::Tiny
        } else if diameter_mm < SMALL_BELOW_MM {
            SizeBin::Small
        } else if diameter_mm <= LARGE_ABOVE_MM {
            SizeBin::Medium
        } else {
            SizeBin::Large
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SizeBin::Tiny => "tiny",
            SizeBin::Small => "small",
            SizeBin::Medium => "medium",
            SizeBin::Large => "large",
        }
    }

    /// The longest diameters drawn for this bin, in mm.
    fn drawn_range_mm(self) -> (f64, f64) {
        match self {
            SizeBin::Tiny => (TINY_MIN_MM, TINY_BELOW_MM),
            SizeBin::Small => (TINY_BELOW_MM, SMALL_BELOW_MM),
            SizeBin::Medium => (SMALL_BELOW_MM, LARGE_ABOVE_MM),
            SizeBin::Large => (LARGE_ABOVE_MM, LARGE_MAX_MM),
        }
    }
}

/// What a voxel is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Tissue {
    Background,
    Scalp,
    Skull,
    Csf,
    GreyMatter,
    WhiteMatter,
    Oedema,
    /// Solid, contrast-enhancing tumour (all of a small tumour, the rim of a large one).
    Enhancing,
    /// The necrotic core of a rim-enhancing tumour.
    Necrosis,
}

impl Tissue {
    pub const ALL: [Tissue; 9] = [
        Tissue::Background,
        Tissue::Scalp,
        Tissue::Skull,
        Tissue::Csf,
        Tissue::GreyMatter,
        Tissue::WhiteMatter,
        Tissue::Oedema,
        Tissue::Enhancing,
        Tissue::Necrosis,
    ];

    /// Part of a tumour, so 1 in `seg`.
    pub fn is_tumour(self) -> bool {
        matches!(self, Tissue::Enhancing | Tissue::Necrosis)
    }
}

/// The tissue of every voxel, in [`Volume`]'s memory order.
#[derive(Clone, Debug, PartialEq)]
pub struct TissueMap {
    pub shape: Shape,
    pub spacing: Spacing,
    pub data: Vec<Tissue>,
}

impl TissueMap {
    pub fn get(&self, d: usize, h: usize, w: usize) -> Tissue {
        self.data[(d * self.shape[1] + h) * self.shape[2] + w]
    }
}

/// One synthetic patient.
#[derive(Clone, Debug, PartialEq)]
pub struct Patient {
    pub id: String,
    pub tumours: Vec<Tumour>,
    /// The requested modalities by name.
    pub modalities: BTreeMap<String, Volume>,
}

/// The value of `tissue` in image sequence `modality` before bias and noise; `None` for `seg`
/// and unknown names.
pub fn contrast(modality: &str, tissue: Tissue) -> Option<f32> {
    let column = IMAGES.iter().position(|m| *m == modality)?;
    Some(CONTRAST[tissue as usize][column])
}

/// Patient `patient`'s id.
pub fn patient_id(patient: usize) -> String {
    format!("p{patient:04}")
}

/// Generates patient `patient`: its tumours and the requested modalities (names from
/// `vocab::MODALITIES`, `seg` for the tumour mask).
///
/// # Panics
///
/// If a modality is unknown or an axis of the shape is 0.
pub fn generate(config: &PhantomConfig, patient: usize, modalities: &[&str]) -> Patient {
    let anatomy = Anatomy::draw(config, patient);
    let tumours = place_tumours(config, patient, &anatomy);
    let tissues = label(config, &anatomy, &tumours);
    let acquisition = Acquisition::draw(config, patient);
    let modalities = modalities
        .iter()
        .map(|&name| (name.to_string(), render(config, patient, name, &tissues, &acquisition)))
        .collect();
    Patient { id: patient_id(patient), tumours, modalities }
}

/// Patient `patient`'s tumours alone, as [`generate`] places them, without any voxels.
pub fn tumours(config: &PhantomConfig, patient: usize) -> Vec<Tumour> {
    place_tumours(config, patient, &Anatomy::draw(config, patient))
}

/// Patient `patient`'s tissue labels, from which [`generate`] renders every modality.
///
/// # Panics
///
/// If an axis of the shape is 0.
pub fn tissues(config: &PhantomConfig, patient: usize) -> TissueMap {
    let anatomy = Anatomy::draw(config, patient);
    label(config, &anatomy, &place_tumours(config, patient, &anatomy))
}

/// What a random stream is for; each has its own ChaCha key, so drawing more for one purpose
/// (another tumour, another sequence) never shifts another.
#[derive(Clone, Copy)]
enum Purpose {
    Anatomy,
    Tumours,
    Acquisition,
    /// Index into `vocab::MODALITIES`.
    Noise(usize),
}

impl Purpose {
    fn tag(self) -> u64 {
        match self {
            Purpose::Anatomy => 0,
            Purpose::Tumours => 1,
            Purpose::Acquisition => 2,
            Purpose::Noise(modality) => 3 + modality as u64,
        }
    }
}

/// A seeded ChaCha8 stream with the few draws the phantom needs.
struct Stream(ChaCha8Rng);

impl Stream {
    fn new(seed: u64, patient: usize, purpose: Purpose) -> Self {
        Stream::numbered(seed, patient, purpose, 0)
    }

    /// Stream `number` of the key (seed, patient, purpose): independent of the others.
    fn numbered(seed: u64, patient: usize, purpose: Purpose, number: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&(patient as u64).to_le_bytes());
        key[16..24].copy_from_slice(&purpose.tag().to_le_bytes());
        key[24..].copy_from_slice(&KEY_DOMAIN);
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(number);
        Stream(rng)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * UNIT_53
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in [−amplitude, amplitude).
    fn signed(&mut self, amplitude: f64) -> f64 {
        self.range(-amplitude, amplitude)
    }

    /// Uniform in 0..n, for n ≥ 1.
    fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n - 1)
    }

    /// Two independent standard normals (Box–Muller, from one 64-bit draw).
    fn normal_pair(&mut self) -> (f32, f32) {
        let bits = self.0.next_u64();
        let u1 = ((bits >> 40) as f32 + 1.0) * UNIT_24; // (0, 1]
        let u2 = ((bits >> 16) & 0xFF_FFFF) as f32 * UNIT_24; // [0, 1)
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f32::consts::TAU * u2).sin_cos();
        (r * cos, r * sin)
    }
}

/// An axis-aligned ellipsoid in mm.
#[derive(Clone, Copy)]
struct Ellipsoid {
    centre: [f64; 3],
    radii: [f64; 3],
}

impl Ellipsoid {
    /// Σ ((p − c) / r)²: below 1 inside.
    fn norm2(&self, p: [f64; 3]) -> f64 {
        (0..3).map(|k| ((p[k] - self.centre[k]) / self.radii[k]).powi(2)).sum()
    }
}

/// One fold term: amplitude · Π_k cos(frequency · u_k + phase_k), u the normalised coordinates.
struct Fold {
    amplitude: f64,
    frequency: f64,
    phase: [f64; 3],
}

fn draw_folds(rng: &mut Stream, spec: &FoldSpec) -> Vec<Fold> {
    (0..spec.terms)
        .map(|_| Fold {
            amplitude: spec.amplitude / spec.terms as f64 * rng.range(0.5, 1.0),
            frequency: rng.range(spec.frequency.0, spec.frequency.1),
            phase: std::array::from_fn(|_| rng.range(0.0, TAU)),
        })
        .collect()
}

/// A patient's anatomy, in mm.
struct Anatomy {
    /// The head's centre.
    centre: [f64; 3],
    /// The head's semi-axes.
    head: [f64; 3],
    /// The brain surface's normalised radius before folding.
    brain_edge: f64,
    /// The grey/white boundary's normalised radius before folding.
    wm_edge: f64,
    brain_folds: Vec<Fold>,
    wm_folds: Vec<Fold>,
    ventricles: [Ellipsoid; 2],
}

impl Anatomy {
    fn draw(config: &PhantomConfig, patient: usize) -> Self {
        let mut rng = Stream::new(config.seed, patient, Purpose::Anatomy);
        let half = config.anatomy_fov_mm().map(|f| f / 2.0);
        let mut centre: [f64; 3] = std::array::from_fn(|k| half[k] * (1.0 + rng.signed(CENTRE_JITTER)));
        if config.is_slice() {
            centre[0] = config.spacing.depth / 2.0;
        }
        let head = std::array::from_fn(|k| half[k] * HEAD_FILL * (1.0 + rng.signed(HEAD_JITTER)));
        let brain_edge = BRAIN_EDGE * (1.0 + rng.signed(BRAIN_JITTER));
        let wm_edge = brain_edge * WM_FRACTION * (1.0 + rng.signed(WM_JITTER));
        let brain_folds = draw_folds(&mut rng, &BRAIN_FOLDS);
        let wm_folds = draw_folds(&mut rng, &WM_FOLDS);
        let ventricles = draw_ventricles(&mut rng, centre, head);
        Anatomy { centre, head, brain_edge, wm_edge, brain_folds, wm_folds, ventricles }
    }

    /// Semi-axes of the zone tumours lie in: [`TUMOUR_ZONE`] of the brain fully folded in.
    fn tumour_zone(&self) -> [f64; 3] {
        let innermost = self.brain_edge * (1.0 - BRAIN_FOLDS.amplitude);
        self.head.map(|h| h * innermost * TUMOUR_ZONE)
    }
}

/// Two mirrored lateral ventricles; one size and offset per patient.
fn draw_ventricles(rng: &mut Stream, centre: [f64; 3], head: [f64; 3]) -> [Ellipsoid; 2] {
    let radii: [f64; 3] =
        std::array::from_fn(|k| head[k] * VENTRICLE_AXES[k] * (1.0 + rng.signed(VENTRICLE_SIZE_JITTER)));
    let offset: [f64; 3] =
        std::array::from_fn(|k| head[k] * (VENTRICLE_OFFSET[k] + rng.signed(VENTRICLE_OFFSET_JITTER)));
    let side = |sign: f64| Ellipsoid {
        centre: [centre[0] + offset[0], centre[1] + offset[1], centre[2] + sign * offset[2]],
        radii,
    };
    [side(-1.0), side(1.0)]
}

fn place_tumours(config: &PhantomConfig, patient: usize, anatomy: &Anatomy) -> Vec<Tumour> {
    let mut rng = Stream::new(config.seed, patient, Purpose::Tumours);
    let zone = anatomy.tumour_zone();
    let count = rng.below(config.max_tumours + 1);
    let mut placed: Vec<Tumour> = Vec::with_capacity(count);
    for _ in 0..count {
        let radii = draw_radii(&mut rng, zone, config.is_slice());
        if let Some(centre) = draw_centre(&mut rng, anatomy.centre, zone, radii, &placed, config.is_slice()) {
            placed.push(Tumour::new(centre, radii));
        }
    }
    placed
}

/// A size bin uniformly, a longest diameter in it, the other radii relative to it, each radius
/// clamped to fit the zone. In a slice the longest axis lies in the slice's plane.
fn draw_radii(rng: &mut Stream, zone: [f64; 3], slice: bool) -> [f64; 3] {
    let (lo, hi) = SizeBin::ALL[rng.below(SizeBin::ALL.len())].drawn_range_mm();
    let longest = rng.range(lo, hi) / 2.0;
    let long_axis = if slice { 1 + rng.below(2) } else { rng.below(3) };
    let radii: [f64; 3] =
        std::array::from_fn(|k| if k == long_axis { longest } else { longest * rng.range(ELONGATION_MIN, 1.0) });
    std::array::from_fn(|k| radii[k].min(zone[k] * TUMOUR_FIT))
}

/// A centre for a tumour with `radii`: its bounding box inside the zone, its bounding sphere
/// [`TUMOUR_GAP_MM`] from every placed tumour's; `None` after [`PLACEMENT_TRIES`] misses. In a
/// slice the centre lies in the slice's plane, so the slice cuts every tumour through its middle.
fn draw_centre(
    rng: &mut Stream,
    zone_centre: [f64; 3],
    zone: [f64; 3],
    radii: [f64; 3],
    placed: &[Tumour],
    slice: bool,
) -> Option<[f64; 3]> {
    let reach = radii.iter().copied().fold(0.0, f64::max);
    (0..PLACEMENT_TRIES).find_map(|_| {
        let offset: [f64; 3] =
            std::array::from_fn(|k| if k == 0 && slice { 0.0 } else { rng.signed(zone[k] - radii[k]) });
        let corner: f64 = (0..3).map(|k| ((offset[k].abs() + radii[k]) / zone[k]).powi(2)).sum();
        let centre = std::array::from_fn(|k| zone_centre[k] + offset[k]);
        let clear = placed.iter().all(|t| {
            let distance = (0..3).map(|k| (centre[k] - t.centre_mm[k]).powi(2)).sum::<f64>().sqrt();
            distance >= reach + t.diameter_mm / 2.0 + TUMOUR_GAP_MM
        });
        (corner <= 1.0 && clear).then_some(centre)
    })
}

/// Voxel-centre coordinates in mm along each axis.
fn axis_coordinates(config: &PhantomConfig) -> [Vec<f64>; 3] {
    let s = config.spacing.dhw();
    std::array::from_fn(|k| (0..config.shape[k]).map(|i| (i as f64 + 0.5) * s[k]).collect())
}

/// Folds sampled on the grid: per term, its cosine along each axis, so a voxel costs three
/// multiplications per term.
struct FoldGrid {
    amplitude: Vec<f64>,
    /// [term][axis][index]
    cosines: Vec<[Vec<f64>; 3]>,
}

impl FoldGrid {
    fn new(folds: &[Fold], normalised: &[Vec<f64>; 3]) -> Self {
        FoldGrid {
            amplitude: folds.iter().map(|f| f.amplitude).collect(),
            cosines: folds
                .iter()
                .map(|f| {
                    std::array::from_fn(|k| {
                        normalised[k].iter().map(|u| (f.frequency * u + f.phase[k]).cos()).collect()
                    })
                })
                .collect(),
        }
    }

    fn at(&self, d: usize, h: usize, w: usize) -> f64 {
        self.amplitude.iter().zip(&self.cosines).map(|(a, [cd, ch, cw])| a * cd[d] * ch[h] * cw[w]).sum()
    }
}

/// A tumour as the labeller tests it: ellipsoid, halo, and the halo's bounding box.
struct Lesion {
    body: Ellipsoid,
    halo: Ellipsoid,
    rim_enhancing: bool,
}

impl Lesion {
    fn new(t: &Tumour) -> Self {
        Lesion {
            body: Ellipsoid { centre: t.centre_mm, radii: t.radii_mm },
            halo: Ellipsoid { centre: t.centre_mm, radii: t.halo_mm() },
            rim_enhancing: t.rim_enhancing,
        }
    }

    /// Whether the halo's extent along `axis` covers `x`.
    fn spans(&self, axis: usize, x: f64) -> bool {
        (x - self.halo.centre[axis]).abs() < self.halo.radii[axis]
    }
}

/// What the lesions make of a point.
enum LesionPart {
    Tumour(Tissue),
    Halo,
    Outside,
}

fn lesion_part(lesions: &[&Lesion], p: [f64; 3]) -> LesionPart {
    let mut part = LesionPart::Outside;
    for lesion in lesions.iter().filter(|l| l.spans(1, p[1]) && l.spans(2, p[2])) {
        let q = lesion.body.norm2(p);
        if q < 1.0 {
            let necrotic = lesion.rim_enhancing && q < NECROTIC_CORE * NECROTIC_CORE;
            return LesionPart::Tumour(if necrotic { Tissue::Necrosis } else { Tissue::Enhancing });
        }
        if lesion.halo.norm2(p) < 1.0 {
            part = LesionPart::Halo;
        }
    }
    part
}

/// Everything the labeller needs, sampled on the grid once.
struct Labeller<'a> {
    anatomy: &'a Anatomy,
    coordinates: [Vec<f64>; 3],
    /// Coordinates relative to the head's centre, divided by its semi-axes.
    normalised: [Vec<f64>; 3],
    brain_folds: FoldGrid,
    wm_folds: FoldGrid,
    lesions: Vec<Lesion>,
}

impl<'a> Labeller<'a> {
    fn new(config: &PhantomConfig, anatomy: &'a Anatomy, tumours: &[Tumour]) -> Self {
        let coordinates = axis_coordinates(config);
        let normalised =
            std::array::from_fn(|k| coordinates[k].iter().map(|x| (x - anatomy.centre[k]) / anatomy.head[k]).collect());
        Labeller {
            anatomy,
            brain_folds: FoldGrid::new(&anatomy.brain_folds, &normalised),
            wm_folds: FoldGrid::new(&anatomy.wm_folds, &normalised),
            coordinates,
            normalised,
            lesions: tumours.iter().map(Lesion::new).collect(),
        }
    }

    fn fill_slice(&self, d: usize, out: &mut [Tissue]) {
        let z = self.coordinates[0][d];
        let lesions: Vec<&Lesion> = self.lesions.iter().filter(|l| l.spans(0, z)).collect();
        let width = self.coordinates[2].len();
        for (h, row) in out.chunks_mut(width).enumerate() {
            for (w, voxel) in row.iter_mut().enumerate() {
                *voxel = self.tissue(d, h, w, &lesions);
            }
        }
    }

    fn tissue(&self, d: usize, h: usize, w: usize, lesions: &[&Lesion]) -> Tissue {
        let rho2 = self.normalised[0][d].powi(2) + self.normalised[1][h].powi(2) + self.normalised[2][w].powi(2);
        if rho2 > 1.0 {
            return Tissue::Background;
        }
        if rho2 > SKULL_OUTER * SKULL_OUTER {
            return Tissue::Scalp;
        }
        if rho2 > SKULL_INNER * SKULL_INNER {
            return Tissue::Skull;
        }
        let p = [self.coordinates[0][d], self.coordinates[1][h], self.coordinates[2][w]];
        let part = lesion_part(lesions, p);
        if let LesionPart::Tumour(tissue) = part {
            return tissue;
        }
        let brain = self.anatomy.brain_edge * (1.0 + self.brain_folds.at(d, h, w));
        if rho2 > brain * brain || self.anatomy.ventricles.iter().any(|v| v.norm2(p) < 1.0) {
            return Tissue::Csf;
        }
        if let LesionPart::Halo = part {
            return Tissue::Oedema;
        }
        let wm = self.anatomy.wm_edge * (1.0 + self.wm_folds.at(d, h, w));
        if rho2 > wm * wm {
            Tissue::GreyMatter
        } else {
            Tissue::WhiteMatter
        }
    }
}

fn plane(shape: Shape) -> usize {
    assert!(shape.iter().all(|&n| n > 0), "the phantom's shape {shape:?} has an empty axis");
    shape[1] * shape[2]
}

fn label(config: &PhantomConfig, anatomy: &Anatomy, tumours: &[Tumour]) -> TissueMap {
    let labeller = Labeller::new(config, anatomy, tumours);
    let shape = config.shape;
    let mut data = vec![Tissue::Background; shape.iter().product()];
    data.par_chunks_mut(plane(shape)).enumerate().for_each(|(d, slice)| labeller.fill_slice(d, slice));
    TissueMap { shape, spacing: config.spacing, data }
}

/// A patient's acquisition: the bias field's factor along each axis, and σ per sequence.
struct Acquisition {
    bias: [Vec<f32>; 3],
    sigma: [f32; IMAGES.len()],
}

impl Acquisition {
    fn draw(config: &PhantomConfig, patient: usize) -> Self {
        let mut rng = Stream::new(config.seed, patient, Purpose::Acquisition);
        let fov = config.fov_mm();
        let coordinates = axis_coordinates(config);
        let bias = std::array::from_fn(|k| {
            let (linear, quadratic) = (rng.signed(BIAS_LINEAR), rng.signed(BIAS_QUADRATIC));
            coordinates[k]
                .iter()
                .map(|x| {
                    let t = 2.0 * x / fov[k] - 1.0;
                    (1.0 + linear * t + quadratic * (t * t - 1.0 / 3.0)) as f32
                })
                .collect()
        });
        let sigma = std::array::from_fn(|_| rng.range(NOISE_SIGMA_MIN, NOISE_SIGMA_MAX) as f32);
        Acquisition { bias, sigma }
    }
}

fn render(
    config: &PhantomConfig,
    patient: usize,
    name: &str,
    tissues: &TissueMap,
    acquisition: &Acquisition,
) -> Volume {
    let Some(modality) = MODALITIES.iter().position(|m| *m == name) else {
        panic!("unknown modality `{name}`; the phantom knows {MODALITIES:?}");
    };
    let mut volume = Volume::zeros(config.shape, config.spacing);
    let n = plane(config.shape);
    let slices = volume.data.par_chunks_mut(n).zip(tissues.data.par_chunks(n)).enumerate();
    if name == SEG {
        slices.for_each(|(_, (out, tissue))| {
            for (v, t) in out.iter_mut().zip(tissue) {
                *v = if t.is_tumour() { 1.0 } else { 0.0 };
            }
        });
        return volume;
    }
    let column = IMAGES.iter().position(|m| *m == name).expect("every modality but seg is an image");
    let sigma = acquisition.sigma[column];
    let [bias_d, bias_h, bias_w] = &acquisition.bias;
    let width = config.shape[2];
    slices.for_each(|(d, (out, tissue))| {
        let mut rng = Stream::numbered(config.seed, patient, Purpose::Noise(modality), d as u64);
        for (h, (row, labels)) in out.chunks_mut(width).zip(tissue.chunks(width)).enumerate() {
            let bias_dh = bias_d[d] * bias_h[h];
            for ((v, t), bias_w) in row.iter_mut().zip(labels).zip(bias_w) {
                let signal = CONTRAST[*t as usize][column] * bias_dh * bias_w;
                let (n1, n2) = rng.normal_pair();
                let (real, imaginary) = (signal + sigma * n1, sigma * n2);
                *v = (real * real + imaginary * imaginary).sqrt().min(1.0);
            }
        }
    });
    volume
}
