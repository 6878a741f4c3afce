//! Seeded random streams, one per purpose, so that every random number of a run is reproducible
//! and no purpose can shift another's numbers.
//!
//! Why not Candle's generator: on CPU it cannot be seeded (`Tensor::randn` differs from run to
//! run), and on every device it is one global stream. With one stream, anything that draws from
//! it moves everything drawn after: the seeds' validation drew ~500K numbers through the global
//! RNG, so the training trajectory changed at every validation (seed pitfall 42). Here each
//! [`Purpose`] (initialisation, training noise, timesteps, validation, sampling, augmentation)
//! has its own ChaCha8 stream keyed by `(seed, purpose)`: the key comes from the seed and the
//! purpose selects ChaCha's 64-bit stream number, so the streams never overlap and drawing from
//! the validation stream leaves the training streams exactly where they were.
//!
//! A stream's state is its position in 32-bit words ([`StreamState`]); saving it in a checkpoint
//! and seeking back to it on resume continues the stream bit for bit.
//!
//! Tensors are generated on the host in chunks of [`CHUNK`] values, each chunk starting at a fixed
//! offset of the stream, in parallel; the values therefore do not depend on the number of threads,
//! and a draw of `n` values always advances the stream by the same amount ([`Stream::normal`] and
//! friends say how much). The result is copied to the requested device.
//!
//! [`var_builder`] makes Candle layers draw their initial weights from a stream (Candle's own
//! initialisers use its unseedable generator).

use std::collections::BTreeMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Values generated per chunk; each chunk starts at a fixed stream offset, so chunks can be
/// generated in parallel with results independent of the thread count. Even, so that normal
/// pairs never straddle two chunks.
pub const CHUNK: usize = 1 << 16;

/// Stream words (32 bits) consumed per normal value: Box–Muller turns two 64-bit uniforms into
/// two normals.
const NORMAL_WORDS: u128 = 2;
/// Stream words consumed per uniform f32 (24 random bits out of one 32-bit word).
const UNIFORM_WORDS: u128 = 1;
/// Stream words consumed per bounded integer (one 64-bit word, see [`below`]).
const INTEGER_WORDS: u128 = 2;

/// What a stream's numbers are for. Each purpose is a separate ChaCha stream; the numbering is
/// part of the checkpoint format and must never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Initial weights.
    Init,
    /// Training noise (diffusion noise, VAE reparameterisation).
    Noise,
    /// Training timesteps.
    Timesteps,
    /// Anything validation draws: its noise, timesteps and subsets.
    Validation,
    /// Generation of samples after or during training.
    Sampling,
    /// Data augmentation and batch order.
    Augmentation,
}

impl Purpose {
    pub const ALL: [Purpose; 6] = [
        Purpose::Init,
        Purpose::Noise,
        Purpose::Timesteps,
        Purpose::Validation,
        Purpose::Sampling,
        Purpose::Augmentation,
    ];

    /// ChaCha's stream number for this purpose.
    fn stream_id(self) -> u64 {
        match self {
            Purpose::Init => 1,
            Purpose::Noise => 2,
            Purpose::Timesteps => 3,
            Purpose::Validation => 4,
            Purpose::Sampling => 5,
            Purpose::Augmentation => 6,
        }
    }
}

/// Where a stream stands: enough to continue it exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    pub seed: u64,
    pub purpose: Purpose,
    /// Words (32 bits) drawn since the start of the stream.
    pub position: u128,
}

/// One seeded random stream.
#[derive(Clone, Debug)]
pub struct Stream {
    seed: u64,
    purpose: Purpose,
    rng: ChaCha8Rng,
}

impl Stream {
    /// The stream for `purpose` under `seed`, at its start.
    pub fn new(seed: u64, purpose: Purpose) -> Stream {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(purpose.stream_id());
        Stream { seed, purpose, rng }
    }

    /// The stream `state` describes, positioned where it was.
    pub fn from_state(state: StreamState) -> Stream {
        let mut stream = Stream::new(state.seed, state.purpose);
        stream.rng.set_word_pos(state.position);
        stream
    }

    pub fn state(&self) -> StreamState {
        StreamState { seed: self.seed, purpose: self.purpose, position: self.rng.get_word_pos() }
    }

    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// Standard normal f32 values of `shape` on `device` (Box–Muller in f64, rounded once). Advances
    /// the stream by 4 words per pair of values (an odd count draws one value more and drops it).
    pub fn normal(&mut self, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let values = self.generate(shape.elem_count(), NORMAL_WORDS, fill_normal);
        Tensor::from_vec(values, shape, device)
    }

    /// Uniform f32 values in [0, 1) of `shape` on `device`, multiples of 2⁻²⁴. One word per value.
    pub fn uniform(&mut self, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let values = self.generate(shape.elem_count(), UNIFORM_WORDS, fill_uniform);
        Tensor::from_vec(values, shape, device)
    }

    /// Integers in `0..high` of `shape` on `device`, as u32 (timesteps, class indices). Two words
    /// per value; the bias of the multiply-shift mapping is below `high / 2⁶⁴`.
    pub fn integers(&mut self, shape: impl Into<Shape>, high: u32, device: &Device) -> Result<Tensor> {
        if high == 0 {
            candle_core::bail!("integers below 0: the range 0..0 is empty");
        }
        let shape = shape.into();
        let values = self.generate(shape.elem_count(), INTEGER_WORDS, |rng, out: &mut [u32]| {
            out.iter_mut().for_each(|v| *v = below(rng, u64::from(high)) as u32)
        });
        Tensor::from_vec(values, shape, device)
    }

    /// A uniformly random permutation of `0..n` (Fisher–Yates): batch order, subsets.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = below(&mut self.rng, i as u64 + 1) as usize;
            order.swap(i, j);
        }
        order
    }

    /// `len` values from `fill`, chunk by chunk from fixed offsets (see the module docs); the
    /// stream ends up `words_per_value` words per value (rounded up to even counts) further on.
    fn generate<T, F>(&mut self, len: usize, words_per_value: u128, fill: F) -> Vec<T>
    where
        T: Default + Clone + Send,
        F: Fn(&mut ChaCha8Rng, &mut [T]) + Sync,
    {
        let start = self.rng.get_word_pos();
        let mut out = vec![T::default(); len];
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, chunk)| {
            let mut rng = self.rng.clone();
            rng.set_word_pos(start + (i * CHUNK) as u128 * words_per_value);
            fill(&mut rng, chunk);
        });
        self.rng.set_word_pos(start + len.next_multiple_of(2) as u128 * words_per_value);
        out
    }
}

/// A uniform f64 in [0, 1) from the top 53 bits of one 64-bit draw.
fn unit_f64(rng: &mut ChaCha8Rng) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    (rng.next_u64() >> 11) as f64 * SCALE
}

/// An integer in `0..high` by Lemire's multiply-shift of one 64-bit draw, without rejection so
/// that every value costs the same number of words.
fn below(rng: &mut ChaCha8Rng, high: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(high)) >> 64) as u64
}

fn fill_normal(rng: &mut ChaCha8Rng, out: &mut [f32]) {
    for pair in out.chunks_mut(2) {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let radius = (-2.0 * (1.0 - unit_f64(rng)).ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * unit_f64(rng)).sin_cos();
        pair[0] = (radius * cos) as f32;
        if let Some(second) = pair.get_mut(1) {
            *second = (radius * sin) as f32;
        }
    }
}

fn fill_uniform(rng: &mut ChaCha8Rng, out: &mut [f32]) {
    const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
    out.iter_mut().for_each(|v| *v = (rng.next_u32() >> 8) as f32 * SCALE);
}

/// The state of every stream of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamsState {
    pub seed: u64,
    /// Words drawn from each purpose's stream.
    pub positions: BTreeMap<Purpose, u128>,
}

/// The streams of one run: one per [`Purpose`], all from one seed.
#[derive(Clone, Debug)]
pub struct Streams {
    seed: u64,
    streams: Vec<Stream>,
}

impl Streams {
    pub fn new(seed: u64) -> Streams {
        Streams { seed, streams: Purpose::ALL.iter().map(|&p| Stream::new(seed, p)).collect() }
    }

    /// The streams `state` describes; a purpose missing from it starts at the beginning.
    pub fn from_state(state: &StreamsState) -> Streams {
        let mut streams = Streams::new(state.seed);
        for stream in &mut streams.streams {
            if let Some(&position) = state.positions.get(&stream.purpose) {
                stream.rng.set_word_pos(position);
            }
        }
        streams
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The stream for `purpose`.
    pub fn get(&mut self, purpose: Purpose) -> &mut Stream {
        &mut self.streams[Self::index(purpose)]
    }

    /// The streams of two different purposes at once.
    ///
    /// # Panics
    ///
    /// When `a == b`.
    pub fn pair(&mut self, a: Purpose, b: Purpose) -> (&mut Stream, &mut Stream) {
        let (i, j) = (Self::index(a), Self::index(b));
        assert_ne!(i, j, "Streams::pair needs two different purposes");
        let (low, high) = self.streams.split_at_mut(i.max(j));
        let (first, second) = (&mut low[i.min(j)], &mut high[0]);
        if i < j {
            (first, second)
        } else {
            (second, first)
        }
    }

    fn index(purpose: Purpose) -> usize {
        Purpose::ALL.iter().position(|&p| p == purpose).expect("Purpose::ALL lists every purpose")
    }

    pub fn state(&self) -> StreamsState {
        StreamsState {
            seed: self.seed,
            positions: self.streams.iter().map(|s| (s.purpose, s.state().position)).collect(),
        }
    }
}

/// A `VarBuilder` whose missing variables are created in `varmap` with initial values drawn from
/// `stream` (normally the [`Purpose::Init`] stream), following the `Init` hint each layer gives
/// exactly as Candle's `Init::var` does but without its unseeded generator. Variables are drawn in
/// the order the model asks for them, which is fixed by the model's code. Values are drawn in f32
/// and converted to `dtype`.
pub fn var_builder(varmap: &VarMap, stream: Stream, dtype: DType, device: &Device) -> VarBuilder<'static> {
    let backend = SeededInit { varmap: varmap.clone(), stream: Mutex::new(stream) };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

struct SeededInit {
    varmap: VarMap,
    stream: Mutex<Stream>,
}

impl SeededInit {
    fn draw(&self, init: Init, shape: &Shape, device: &Device) -> Result<Tensor> {
        let mut stream = self.stream.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let uniform = |stream: &mut Stream, lo: f64, up: f64| stream.uniform(shape, device)?.affine(up - lo, lo);
        match init {
            Init::Const(value) => Tensor::full(value as f32, shape, device),
            Init::Randn { mean, stdev } => stream.normal(shape, device)?.affine(stdev, mean),
            Init::Uniform { lo, up } => uniform(&mut stream, lo, up),
            Init::Kaiming { dist, fan, non_linearity } => {
                let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        uniform(&mut stream, -bound, bound)
                    }
                    NormalOrUniform::Normal => stream.normal(shape, device)?.affine(std, 0.0),
                }
            }
        }
    }
}

impl SimpleBackend for SeededInit {
    fn get(&self, shape: Shape, name: &str, init: Init, dtype: DType, device: &Device) -> Result<Tensor> {
        let mut vars = self.varmap.data().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(var) = vars.get(name) {
            if var.shape() != &shape {
                candle_core::bail!("shape mismatch on {name}: asked for {shape:?}, the variable is {:?}", var.shape());
            }
            return Ok(var.as_tensor().clone());
        }
        let var = Var::from_tensor(&self.draw(init, &shape, device)?.to_dtype(dtype)?)?;
        let tensor = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _device: &Device) -> Result<Tensor> {
        candle_core::bail!("{name}: a seeded initialiser creates variables from a shape and an Init hint; use `get`")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).contains_key(name)
    }
}
