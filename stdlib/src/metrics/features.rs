//! Features for FID and KID: 2048 numbers per image from a ResNet-50 ([`crate::nn::resnet`])
//! whose weights the user supplies, for 2D images and for volumes as 2.5D slices, with a cache so
//! that a reference dataset's features are computed once.
//!
//! **The intended weights are RadImageNet's ResNet-50** (Mei et al., Radiology: AI 2022), trained
//! on 1.35 million CT, MRI and ultrasound slices: ImageNet features describe the statistics of
//! natural photographs, and medical FIDs computed with them are dominated by texture the network
//! never learnt to tell apart. MONAI's generative models and NVIDIA's NV-Generate-CTMR (MAISI)
//! report FIDs with exactly this network (Warvito/radimagenet-models' PyTorch port), which makes
//! medgen's numbers comparable with theirs. `docs/weights.md` explains converting the port's
//! checkpoint to safetensors; torchvision's ImageNet `resnet50` converts the same way.
//!
//! **Preprocessing** ([`Preprocessing`]) takes single-channel images in medgen's pixel range
//! [0, 1] (volumes are normalised to it by the dataset stage; nothing is clamped or rescaled here)
//! and
//! 1. resizes them to a square side if asked (bilinear, PyTorch's `interpolate(mode="bilinear",
//!    align_corners=False, antialias=False)`, Candle's `upsample_bilinear2d`), before
//! 2. repeating the grey channel to three, and
//! 3. normalising each channel: [`ChannelNormalisation`].
//!
//! The default follows the weights' own training recipe, chosen from the weights file's layout:
//! - RadImageNet weights: **no resize** (slices go in at their own size, as MONAI and MAISI feed
//!   them; ResNet-50 pools globally, so any size works), channels in BGR order minus
//!   `[0.406, 0.456, 0.485]`, no division (MONAI's `subtract_mean`, the Keras "caffe" recipe on
//!   [0, 1] inputs). For a grey image BGR and RGB are the same three copies; the order only
//!   decides which mean each copy loses.
//! - torchvision weights: resize to 224×224 and ImageNet's mean `[0.485, 0.456, 0.406]` and
//!   standard deviation `[0.229, 0.224, 0.225]` (torchvision's `ResNet50_Weights` transforms,
//!   without their crop).
//!
//! Resizing squashes non-square slices to a square and, without antialiasing, aliases when it
//! shrinks by more than 2×; both are why the RadImageNet default keeps the native size.
//!
//! **Volumes, 2.5D.** A 3D network for medical FID would need 3D weights that no standard exists
//! for; the 2.5D protocol (MAISI's `compute_fid_2-5d_ct.py`) measures a volume through its slices
//! along each of the three axes instead. Slicing follows 3D LPIPS ([`SliceAxis`]): along depth the
//! slices are `v[d, :, :]`, along height `v[:, h, :]` (depth rows, width columns), along width
//! `v[:, :, w]`; each axis is its own feature set ([`VolumeFeatures`]), the FID and KID are computed
//! per axis and combined by their mean (`metrics::distribution`). Slices go through the network
//! [`DEFAULT_CHUNK`] at a time: batched for throughput, bounded for memory. Every slice is computed
//! independently (BatchNorm uses running statistics), so the chunk size changes the features only
//! by float rounding (about 1e-7: the matrix products block differently). Empty (constant) slices are kept: dropping them would make the feature count depend
//! on the content.
//!
//! # The cache
//!
//! A reference split is measured against every experiment's samples; recomputing its features
//! each time would cost more than the metrics. [`FeatureCache`] keeps them in a directory, one
//! safetensors file per volume (or image batch), named by the blake3 digest of a [`FeatureKey`].
//!
//! **What goes into the key** is everything that determines the numbers, hashed as the canonical
//! JSON of one struct (field order fixed, no maps): the content ([`ContentDigest`]: the voxels'
//! bytes, the shape and the spacing of a volume; the values and shape of an image batch), what the
//! entry holds ([`FeatureLayout`]), the weights file's content hash, the network variant, the
//! preprocessing, and [`FEATURES_VERSION`], which is bumped whenever the extraction code changes
//! its numbers.
//!
//! **What never does**: file paths (the same volume under another name, or weights copied
//! elsewhere, are the same entry), modification times, host names, job ids, the chunk size and
//! the device. Chunk sizes and devices change the features only by float rounding (about 1e-7
//! relative between chunk sizes on the CPU; more between CPU and GPU kernels), far below what FID
//! and KID resolve, so an entry written with one is used with the other.
//!
//! **Entries are written atomically** (a temporary file, flushed, then renamed: a crash leaves
//! no half-written entry under the final name) and **checked when read**: the entry records its
//! key and a blake3 checksum of its tensors, so a truncated, bit-flipped or foreign file is
//! detected ([`StaleReason`]), logged and recomputed, never trusted. Failures are never cached:
//! an entry is written only after the computation succeeded.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use medgen_engine::digest::FileDigest;
use medgen_engine::hash::hash_file;
use medgen_engine::store::write_atomic;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Serialize, Serializer};

use crate::data::volume::Volume;
use crate::metrics::lpips::SliceAxis;
use crate::metrics::weights::{check_tensors, TensorProblem};
use crate::nn::resnet::{ResNet50, ResNetVariant, FEATURE_DIM, INPUT_CHANNELS};

/// Slices (or images) per network pass.
pub const DEFAULT_CHUNK: NonZeroUsize = NonZeroUsize::new(32).expect("32 is not zero");

/// The version of the extraction's numbers, part of every cache key: bump it when a change to
/// the network, the slicing or the preprocessing changes the features.
pub const FEATURES_VERSION: u32 = 1;

/// The square side torchvision's ImageNet weights are used at.
pub const IMAGENET_SIDE: usize = 224;

/// RadImageNet's per-channel means in the network's BGR channel order (MONAI's `subtract_mean`).
pub const RADIMAGENET_MEAN_BGR: [f32; 3] = [0.406, 0.456, 0.485];

/// ImageNet's per-channel means, RGB (torchvision).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];

/// ImageNet's per-channel standard deviations, RGB (torchvision).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The cache entry's tensor for an image batch.
const IMAGES_ENTRY: &str = "images";

/// Feature vectors of a set of images, one row per image, in f32 as the network computes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    rows: usize,
    dim: usize,
    values: Vec<f32>,
}

impl Features {
    /// `rows` vectors of `dim` values, row after row.
    pub fn new(rows: usize, dim: usize, values: Vec<f32>) -> Result<Self, FeatureError> {
        if values.len() != rows * dim {
            return Err(FeatureError::Shape { rows, dim, values: values.len() });
        }
        Ok(Self { rows, dim, values })
    }

    /// The rows of every part, in order; all parts must have one dimension.
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a Features>) -> Result<Self, FeatureError> {
        let parts: Vec<&Features> = parts.into_iter().collect();
        let Some(first) = parts.first() else {
            return Err(FeatureError::NothingToCombine);
        };
        let dim = first.dim;
        if let Some(other) = parts.iter().find(|p| p.dim != dim) {
            return Err(FeatureError::DimMismatch { expected: dim, found: other.dim });
        }
        let values = parts.iter().flat_map(|p| p.values.iter().copied()).collect();
        Self::new(parts.iter().map(|p| p.rows).sum(), dim, values)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// All values, row after row.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

/// Per-channel normalisation after the grey channel is repeated to three; see the module
/// documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelNormalisation {
    /// BGR order, minus [`RADIMAGENET_MEAN_BGR`], no division (MONAI's `subtract_mean`).
    RadImageNet,
    /// RGB order, minus [`IMAGENET_MEAN`], divided by [`IMAGENET_STD`] (torchvision).
    ImageNet,
}

impl ChannelNormalisation {
    /// `(mean, std)` per channel in the network's channel order.
    fn constants(self) -> ([f32; 3], [f32; 3]) {
        match self {
            ChannelNormalisation::RadImageNet => (RADIMAGENET_MEAN_BGR, [1.0; 3]),
            ChannelNormalisation::ImageNet => (IMAGENET_MEAN, IMAGENET_STD),
        }
    }
}

/// How images become network input; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Preprocessing {
    pub normalisation: ChannelNormalisation,
    /// The square side images are resized to (bilinear, no antialiasing), or `None` to keep
    /// their size.
    pub resize: Option<usize>,
}

impl Preprocessing {
    /// RadImageNet's recipe: native size, BGR mean subtraction.
    pub const RADIMAGENET: Preprocessing =
        Preprocessing { normalisation: ChannelNormalisation::RadImageNet, resize: None };

    /// torchvision's ImageNet recipe: 224×224, ImageNet mean and standard deviation.
    pub const IMAGENET: Preprocessing =
        Preprocessing { normalisation: ChannelNormalisation::ImageNet, resize: Some(IMAGENET_SIDE) };

    /// The recipe the weights of `variant` were trained with.
    pub fn for_variant(variant: ResNetVariant) -> Self {
        match variant {
            ResNetVariant::RadImageNet => Self::RADIMAGENET,
            ResNetVariant::Torchvision => Self::IMAGENET,
        }
    }

    /// Network input `[N, 3, S, S]` (or `[N, 3, H, W]` without resize) from grey images
    /// `[N, 1, H, W]` in [0, 1], in f32.
    pub fn apply(&self, images: &Tensor) -> candle_core::Result<Tensor> {
        let (_, channels, _, _) = images.dims4()?;
        if channels != 1 {
            candle_core::bail!("feature preprocessing takes grey images [N, 1, H, W], got {:?}", images.dims())
        }
        let images = images.to_dtype(DType::F32)?;
        let sized = match self.resize {
            Some(side) => resize_bilinear(&images, side)?,
            None => images,
        };
        let (mean, std) = self.normalisation.constants();
        let device = sized.device();
        let mean = Tensor::new(&mean, device)?.reshape((1, INPUT_CHANNELS, 1, 1))?;
        let std = Tensor::new(&std, device)?.reshape((1, INPUT_CHANNELS, 1, 1))?;
        sized.repeat((1, INPUT_CHANNELS, 1, 1))?.broadcast_sub(&mean)?.broadcast_div(&std)
    }
}

/// Images `[N, C, H, W]` resized to `side`×`side` exactly as PyTorch's
/// `interpolate(size=(side, side), mode="bilinear", align_corners=False, antialias=False)`.
pub fn resize_bilinear(images: &Tensor, side: usize) -> candle_core::Result<Tensor> {
    if side == 0 {
        candle_core::bail!("cannot resize images to 0x0 pixels")
    }
    images.upsample_bilinear2d(side, side, false)
}

/// The features of one volume's slices, one set per axis; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeFeatures {
    /// Slices `v[d, :, :]`, one row per depth index.
    pub depth: Features,
    /// Slices `v[:, h, :]`, one row per height index.
    pub height: Features,
    /// Slices `v[:, :, w]`, one row per width index.
    pub width: Features,
}

impl VolumeFeatures {
    pub fn axis(&self, axis: SliceAxis) -> &Features {
        match axis {
            SliceAxis::Depth => &self.depth,
            SliceAxis::Height => &self.height,
            SliceAxis::Width => &self.width,
        }
    }

    /// The slices of several volumes pooled per axis: the feature sets FID and KID compare.
    pub fn pool<'a>(volumes: impl IntoIterator<Item = &'a VolumeFeatures>) -> Result<Self, FeatureError> {
        let volumes: Vec<&VolumeFeatures> = volumes.into_iter().collect();
        let pooled = |axis| Features::concat(volumes.iter().map(|v| v.axis(axis)));
        Ok(Self {
            depth: pooled(SliceAxis::Depth)?,
            height: pooled(SliceAxis::Height)?,
            width: pooled(SliceAxis::Width)?,
        })
    }

    fn into_sets(self) -> FeatureSets {
        let Self { depth, height, width } = self;
        [(SliceAxis::Depth, depth), (SliceAxis::Height, height), (SliceAxis::Width, width)]
            .into_iter()
            .map(|(axis, f)| (axis.name().to_string(), f))
            .collect()
    }

    fn from_sets(mut sets: FeatureSets) -> Result<Self, FeatureError> {
        let mut take = |axis: SliceAxis| {
            sets.remove(axis.name()).ok_or(FeatureError::MissingSet { name: axis.name().to_string() })
        };
        Ok(Self { depth: take(SliceAxis::Depth)?, height: take(SliceAxis::Height)?, width: take(SliceAxis::Width)? })
    }
}

/// A ResNet-50 with its weights' identity and preprocessing: images and volumes to features.
#[derive(Debug, Clone)]
pub struct FeatureExtractor {
    net: ResNet50,
    preprocessing: Preprocessing,
    weights: FileDigest,
    chunk: NonZeroUsize,
    device: Device,
}

impl FeatureExtractor {
    /// Loads ResNet-50 weights with torchvision's state_dict names from the safetensors file
    /// `path` onto `device`. The variant is detected from the file ([`ResNetVariant::detect`]),
    /// every tensor is checked (all problems are reported at once), and the preprocessing is the
    /// variant's own ([`Preprocessing::for_variant`]).
    pub fn load(path: &Path, device: &Device) -> Result<Self, FeatureError> {
        let error = |problem| FeatureError::Weights { path: path.to_path_buf(), problem };
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| error(WeightsProblem::Unreadable(e.to_string())))?;
        let variant = ResNetVariant::detect(|name| tensors.contains_key(name));
        let problems = check_tensors(&tensors, ResNet50::parameter_shapes(variant));
        if !problems.is_empty() {
            return Err(error(WeightsProblem::Tensors { variant, problems }));
        }
        let weights = hash_file(path).map_err(|e| error(WeightsProblem::Unreadable(e.to_string())))?;
        let net = ResNet50::new(VarBuilder::from_tensors(tensors, DType::F32, device), variant)?;
        Ok(Self {
            net,
            preprocessing: Preprocessing::for_variant(variant),
            weights,
            chunk: DEFAULT_CHUNK,
            device: device.clone(),
        })
    }

    /// The same network with another preprocessing (it becomes part of the cache key).
    pub fn with_preprocessing(self, preprocessing: Preprocessing) -> Self {
        Self { preprocessing, ..self }
    }

    /// The same network, `chunk` images per pass.
    pub fn with_chunk(self, chunk: NonZeroUsize) -> Self {
        Self { chunk, ..self }
    }

    pub fn variant(&self) -> ResNetVariant {
        self.net.variant()
    }

    pub fn preprocessing(&self) -> Preprocessing {
        self.preprocessing
    }

    /// The content hash of the weights file.
    pub fn weights_digest(&self) -> FileDigest {
        self.weights
    }

    pub fn chunk(&self) -> NonZeroUsize {
        self.chunk
    }

    /// The features of grey images `[N, 1, H, W]` in [0, 1], [`FeatureExtractor::chunk`] images
    /// per pass.
    pub fn images(&self, images: &Tensor) -> Result<Features, FeatureError> {
        let images = images.to_device(&self.device)?;
        let count = images.dim(0)?;
        let mut values = Vec::with_capacity(count * FEATURE_DIM);
        for start in (0..count).step_by(self.chunk.get()) {
            let len = self.chunk.get().min(count - start);
            values.extend(self.pass(&images.narrow(0, start, len)?)?);
        }
        Features::new(count, FEATURE_DIM, values)
    }

    /// The features of `volume`'s slices along each axis; see the module documentation.
    pub fn volume(&self, volume: &Volume) -> Result<VolumeFeatures, FeatureError> {
        if volume.shape.contains(&0) {
            return Err(FeatureError::EmptyVolume { shape: volume.shape });
        }
        let axis = |axis: SliceAxis| -> Result<Features, FeatureError> {
            let count = volume.shape[axis.dim()];
            let mut values = Vec::with_capacity(count * FEATURE_DIM);
            for start in (0..count).step_by(self.chunk.get()) {
                let len = self.chunk.get().min(count - start);
                values.extend(self.pass(&axis.slices(volume, start, len, &self.device)?)?);
            }
            Features::new(count, FEATURE_DIM, values)
        };
        Ok(VolumeFeatures {
            depth: axis(SliceAxis::Depth)?,
            height: axis(SliceAxis::Height)?,
            width: axis(SliceAxis::Width)?,
        })
    }

    /// [`FeatureExtractor::volume`] through `cache`: computed only when the cache has no sound
    /// entry for this volume, weights and preprocessing.
    pub fn volume_cached(
        &self,
        volume: &Volume,
        cache: &FeatureCache,
    ) -> Result<(VolumeFeatures, CacheOutcome), FeatureError> {
        let key = self.key(ContentDigest::of_volume(volume), FeatureLayout::Volume2p5d);
        let (sets, outcome) = cache.get_or_compute(&key, || Ok(self.volume(volume)?.into_sets()))?;
        Ok((VolumeFeatures::from_sets(sets)?, outcome))
    }

    /// [`FeatureExtractor::images`] through `cache`, keyed by the images' values and shape.
    pub fn images_cached(
        &self,
        images: &Tensor,
        cache: &FeatureCache,
    ) -> Result<(Features, CacheOutcome), FeatureError> {
        let key = self.key(ContentDigest::of_images(images)?, FeatureLayout::Images);
        let (mut sets, outcome) =
            cache.get_or_compute(&key, || Ok(BTreeMap::from([(IMAGES_ENTRY.to_string(), self.images(images)?)])))?;
        let features = sets.remove(IMAGES_ENTRY).ok_or(FeatureError::MissingSet { name: IMAGES_ENTRY.to_string() })?;
        Ok((features, outcome))
    }

    /// The cache key of `content` measured by this extractor.
    pub fn key(&self, content: ContentDigest, layout: FeatureLayout) -> FeatureKey {
        FeatureKey {
            content,
            layout,
            weights: self.weights,
            variant: self.variant(),
            preprocessing: self.preprocessing,
            version: FEATURES_VERSION,
        }
    }

    /// One network pass over grey images `[n, 1, H, W]`: `n · 2048` values.
    fn pass(&self, images: &Tensor) -> candle_core::Result<Vec<f32>> {
        self.net.forward(&self.preprocessing.apply(images)?)?.flatten_all()?.to_vec1()
    }
}

/// A blake3 digest of what was measured: a volume or an image batch; see [`ContentDigest::of_volume`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentDigest([u8; 32]);

impl ContentDigest {
    /// The digest of a volume: its shape (u64, little-endian), its spacing (f64 bits,
    /// little-endian) and its voxels (f32, little-endian), after a domain tag.
    pub fn of_volume(volume: &Volume) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"medgen volume\0");
        for n in volume.shape {
            hasher.update(&(n as u64).to_le_bytes());
        }
        for mm in volume.spacing.dhw() {
            hasher.update(&mm.to_le_bytes());
        }
        hash_f32(&mut hasher, &volume.data);
        Self(*hasher.finalize().as_bytes())
    }

    /// The digest of an image batch: its shape and its values as f32, after a domain tag.
    pub fn of_images(images: &Tensor) -> Result<Self, FeatureError> {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"medgen images\0");
        hasher.update(&(images.rank() as u64).to_le_bytes());
        for &n in images.dims() {
            hasher.update(&(n as u64).to_le_bytes());
        }
        hash_f32(&mut hasher, &images.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        Ok(Self(*hasher.finalize().as_bytes()))
    }

    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Debug for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentDigest({})", &self.hex()[..12])
    }
}

impl Serialize for ContentDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

/// Feeds `values` to `hasher` as little-endian bytes, a block at a time.
fn hash_f32(hasher: &mut blake3::Hasher, values: &[f32]) {
    for block in values.chunks(1 << 14) {
        hasher.update(&f32_bytes(block));
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// What a cache entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureLayout {
    /// A volume's slices: sets `depth`, `height` and `width`.
    Volume2p5d,
    /// An image batch: the set `images`.
    Images,
}

/// Everything that determines a cache entry's features; see the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureKey {
    pub content: ContentDigest,
    pub layout: FeatureLayout,
    /// The weights file's content hash.
    pub weights: FileDigest,
    pub variant: ResNetVariant,
    pub preprocessing: Preprocessing,
    /// [`FEATURES_VERSION`] when the entry was written.
    pub version: u32,
}

impl FeatureKey {
    /// The canonical form that is hashed and recorded in the entry.
    fn canonical(&self) -> String {
        serde_json::to_string(self).expect("a feature key serialises")
    }

    /// The key's digest, which names its entry.
    pub fn digest(&self) -> FeatureKeyDigest {
        FeatureKeyDigest(*blake3::hash(self.canonical().as_bytes()).as_bytes())
    }
}

/// The blake3 digest of a [`FeatureKey`]'s canonical form: a cache entry's name.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FeatureKeyDigest([u8; 32]);

impl FeatureKeyDigest {
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Debug for FeatureKeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FeatureKeyDigest({})", &self.hex()[..12])
    }
}

/// Named feature sets: what one cache entry holds.
pub type FeatureSets = BTreeMap<String, Features>;

/// Whether [`FeatureCache::get_or_compute`] read its answer or computed it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// A sound entry was read; nothing was computed.
    Hit,
    /// The features were computed (and the entry written) because of this.
    Computed(StaleReason),
}

/// Why a cache entry could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleReason {
    /// There was no entry.
    Absent,
    /// The file is not a complete safetensors file (truncated, or not safetensors at all).
    Unreadable(String),
    /// The entry records another key (a digest collision or a foreign file).
    ForeignKey,
    /// The tensors do not match the checksum recorded when they were written.
    ChecksumMismatch,
    /// A tensor is not a 2D f32 matrix, or the checksum is missing.
    Malformed(String),
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StaleReason::Absent => write!(f, "no entry"),
            StaleReason::Unreadable(why) => write!(f, "the entry cannot be read ({why})"),
            StaleReason::ForeignKey => write!(f, "the entry was written for another key"),
            StaleReason::ChecksumMismatch => write!(f, "the entry's data does not match its checksum"),
            StaleReason::Malformed(why) => write!(f, "the entry is malformed ({why})"),
        }
    }
}

/// Metadata names of a cache entry.
const META_KEY: &str = "medgen.key";
const META_CHECKSUM: &str = "medgen.checksum";

/// Feature sets stored in a directory by content; see the module documentation.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    dir: PathBuf,
}

impl FeatureCache {
    /// The cache in `dir`, created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, FeatureError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|error| FeatureError::Cache { path: dir.clone(), error })?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `key`'s entry.
    pub fn entry_path(&self, key: &FeatureKey) -> PathBuf {
        self.dir.join(format!("{}.safetensors", key.digest().hex()))
    }

    /// `key`'s feature sets: read from a sound entry, or computed by `compute` and stored. A
    /// failed computation stores nothing.
    pub fn get_or_compute(
        &self,
        key: &FeatureKey,
        compute: impl FnOnce() -> Result<FeatureSets, FeatureError>,
    ) -> Result<(FeatureSets, CacheOutcome), FeatureError> {
        let path = self.entry_path(key);
        let reason = match read_entry(&path, key) {
            Ok(sets) => return Ok((sets, CacheOutcome::Hit)),
            Err(reason) => reason,
        };
        if reason != StaleReason::Absent {
            tracing::warn!("feature cache: {}: {reason}; recomputing", path.display());
        }
        let sets = compute()?;
        write_entry(&path, key, &sets)?;
        Ok((sets, CacheOutcome::Computed(reason)))
    }
}

/// The checksum of feature sets: for each set in name order, its name's length and bytes, its
/// shape and its values, all little-endian.
fn checksum(sets: &FeatureSets) -> String {
    let mut hasher = blake3::Hasher::new();
    for (name, features) in sets {
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(&(features.rows as u64).to_le_bytes());
        hasher.update(&(features.dim as u64).to_le_bytes());
        hash_f32(&mut hasher, &features.values);
    }
    hasher.finalize().to_hex().to_string()
}

fn write_entry(path: &Path, key: &FeatureKey, sets: &FeatureSets) -> Result<(), FeatureError> {
    let cache_error = |error| FeatureError::Cache { path: path.to_path_buf(), error };
    let bytes: Vec<(&String, Vec<u8>, Vec<usize>)> =
        sets.iter().map(|(name, f)| (name, f32_bytes(&f.values), vec![f.rows, f.dim])).collect();
    let views = bytes
        .iter()
        .map(|(name, data, shape)| Ok((name.as_str(), TensorView::new(Dtype::F32, shape.clone(), data)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| cache_error(io::Error::other(e)))?;
    let metadata =
        HashMap::from([(META_KEY.to_string(), key.canonical()), (META_CHECKSUM.to_string(), checksum(sets))]);
    let serialised = safetensors::serialize(views, Some(metadata)).map_err(|e| cache_error(io::Error::other(e)))?;
    write_atomic(path, &serialised).map_err(cache_error)
}

fn read_entry(path: &Path, key: &FeatureKey) -> Result<FeatureSets, StaleReason> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StaleReason::Absent),
        Err(e) => return Err(StaleReason::Unreadable(e.to_string())),
    };
    let unreadable = |e: safetensors::SafeTensorError| StaleReason::Unreadable(e.to_string());
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(unreadable)?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(unreadable)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if metadata.get(META_KEY) != Some(&key.canonical()) {
        return Err(StaleReason::ForeignKey);
    }
    let sets = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let &[rows, dim] = view.shape() else {
                return Err(StaleReason::Malformed(format!("{name} has shape {:?}, not [rows, dim]", view.shape())));
            };
            if view.dtype() != Dtype::F32 {
                return Err(StaleReason::Malformed(format!("{name} is {:?}, not F32", view.dtype())));
            }
            let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            Ok((name, Features { rows, dim, values }))
        })
        .collect::<Result<FeatureSets, _>>()?;
    match metadata.get(META_CHECKSUM) {
        None => Err(StaleReason::Malformed("no checksum".into())),
        Some(recorded) if *recorded != checksum(&sets) => Err(StaleReason::ChecksumMismatch),
        Some(_) => Ok(sets),
    }
}

/// Why features could not be had.
#[derive(Debug)]
pub enum FeatureError {
    /// The weights file cannot be used.
    Weights { path: PathBuf, problem: WeightsProblem },
    /// `values` values do not make `rows` rows of `dim`.
    Shape { rows: usize, dim: usize, values: usize },
    /// No feature sets were given to combine (no volumes, or no images).
    NothingToCombine,
    /// Feature sets of different dimensions were combined.
    DimMismatch { expected: usize, found: usize },
    /// A cache entry or a computation lacks an expected feature set.
    MissingSet { name: String },
    /// A volume with no slices along some axis.
    EmptyVolume { shape: [usize; 3] },
    /// The cache directory or an entry cannot be written.
    Cache { path: PathBuf, error: io::Error },
    /// The network or the preprocessing failed (bad input shape, device error).
    Compute(candle_core::Error),
}

/// What is wrong with a weights file.
#[derive(Debug)]
pub enum WeightsProblem {
    /// The file does not exist, cannot be read, or is not safetensors.
    Unreadable(String),
    /// Tensors are missing or do not fit `variant`'s layout; every problem is listed.
    Tensors { variant: ResNetVariant, problems: Vec<TensorProblem> },
}

/// How to make a weights file that works, for error messages.
const WEIGHTS_HINT: &str = "convert RadImageNet's ResNet-50 (or torchvision's resnet50) to safetensors with \
                            torchvision's state_dict names, see docs/weights.md";

impl fmt::Display for FeatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureError::Weights { path, problem: WeightsProblem::Unreadable(why) } => {
                write!(f, "cannot read feature-network weights {}: {why}; {WEIGHTS_HINT}", path.display())
            }
            FeatureError::Weights { path, problem: WeightsProblem::Tensors { variant, problems } } => {
                write!(
                    f,
                    "{} is not a ResNet-50 in the {} layout (torchvision state_dict names):",
                    path.display(),
                    variant.name()
                )?;
                for problem in problems {
                    write!(f, "\n  - {problem}")?;
                }
                write!(f, "\n{WEIGHTS_HINT}")
            }
            FeatureError::Shape { rows, dim, values } => {
                write!(f, "features: {values} values do not make {rows} rows of {dim}")
            }
            FeatureError::NothingToCombine => write!(f, "features: nothing to combine (no volumes or images given)"),
            FeatureError::DimMismatch { expected, found } => {
                write!(f, "features of dimension {found} cannot be combined with features of dimension {expected}")
            }
            FeatureError::MissingSet { name } => write!(f, "features: the set {name} is missing"),
            FeatureError::EmptyVolume { shape } => {
                write!(f, "a volume of shape {shape:?} (depth, height, width) has no slices along some axis")
            }
            FeatureError::Cache { path, error } => write!(f, "feature cache: cannot write {}: {error}", path.display()),
            FeatureError::Compute(error) => write!(f, "feature extraction failed: {error}"),
        }
    }
}

impl std::error::Error for FeatureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FeatureError::Cache { error, .. } => Some(error),
            FeatureError::Compute(error) => Some(error),
            _ => None,
        }
    }
}

impl From<candle_core::Error> for FeatureError {
    fn from(error: candle_core::Error) -> Self {
        FeatureError::Compute(error)
    }
}
