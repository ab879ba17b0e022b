//! Embeddings and how they travel.
//!
//! [`Embedding`] is the domain type: 384 finite `f32`s with unit L2 norm, the
//! output space of all-MiniLM-L6-v2. It can only be built through
//! [`Embedding::new`], which rejects wrong lengths, NaN, infinities and zero
//! vectors, so every other crate may assume a valid unit vector.
//!
//! Two wire encodings, chosen by what each message can afford:
//!
//! * [`TernaryEmbedding`] (77 bytes) for pattern embeddings in sync frames. The
//!   vector is spun by a fixed randomized Hadamard rotation (so every coordinate
//!   carries about the same energy), each coordinate becomes one of {-1, 0, +1}
//!   with a per-vector threshold chosen to maximise cosine, and five trits are
//!   packed per byte (3^5 = 243 <= 256). That is what lets a delta of 20 patterns
//!   fit in 2 KiB and a response with 50 global patterns in 6 KiB; the cost is
//!   measured on real MiniLM vectors by `tests/quantization.rs`.
//! * [`I8Embedding`] (388 bytes) for catalog items, whose pages are not under the
//!   per-sync budget and whose embeddings drive ranking: a per-vector scale and
//!   one signed byte per coordinate.

use serde::{Deserialize, Serialize};
use serde_big_array::BigArray;

/// Dimensions of an all-MiniLM-L6-v2 sentence embedding.
pub const EMBEDDING_DIM: usize = 384;

/// Bytes of a [`TernaryEmbedding`]: 384 trits, five per byte.
pub const TERNARY_BYTES: usize = EMBEDDING_DIM.div_ceil(5);

/// Why a vector is not an [`Embedding`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmbeddingError {
    /// The vector does not have [`EMBEDDING_DIM`] coordinates.
    #[error("embedding has {0} dimensions, expected {EMBEDDING_DIM}")]
    WrongDimension(usize),
    /// A coordinate is NaN or infinite.
    #[error("embedding coordinate {index} is not finite")]
    NotFinite {
        /// Position of the first offending coordinate.
        index: usize,
    },
    /// All coordinates are zero (or so small the norm underflows): no direction.
    #[error("embedding has zero norm")]
    ZeroNorm,
    /// A packed ternary byte holds a value above 242 (3^5 - 1), or above 80 for
    /// the last byte, which carries four trits.
    #[error("ternary embedding byte {index} holds {value}, above the largest packed value")]
    BadTernaryByte {
        /// Position of the byte.
        index: usize,
        /// The value found.
        value: u8,
    },
    /// An int8 embedding's scale is not a positive finite number.
    #[error("int8 embedding scale {0} is not positive and finite")]
    BadScale(f32),
}

/// A unit-length, finite, 384-dimensional vector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Embedding(Vec<f32>);

impl Embedding {
    /// Validates and L2-normalizes `values`.
    pub fn new(mut values: Vec<f32>) -> Result<Self, EmbeddingError> {
        if values.len() != EMBEDDING_DIM {
            return Err(EmbeddingError::WrongDimension(values.len()));
        }
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(EmbeddingError::NotFinite { index });
        }
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !(norm.is_finite() && norm > f32::MIN_POSITIVE) {
            return Err(EmbeddingError::ZeroNorm);
        }
        values.iter_mut().for_each(|v| *v /= norm);
        Ok(Self(values))
    }

    /// The coordinates (unit norm).
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Consumes the embedding, returning its coordinates.
    pub fn into_vec(self) -> Vec<f32> {
        self.0
    }

    /// Cosine similarity (a dot product, both sides being unit vectors).
    pub fn cosine(&self, other: &Embedding) -> f32 {
        dot(&self.0, &other.0)
    }

    /// The normalized weighted mean of `items`; `None` when nothing is given or
    /// the weighted sum cancels out.
    pub fn weighted_mean<'a>(
        items: impl IntoIterator<Item = (&'a Embedding, f32)>,
    ) -> Option<Self> {
        let mut acc = vec![0.0f32; EMBEDDING_DIM];
        for (e, w) in items {
            acc.iter_mut().zip(&e.0).for_each(|(a, v)| *a += w * v);
        }
        Self::new(acc).ok()
    }

    /// Encodes for a sync frame (see the module docs).
    pub fn to_ternary(&self) -> TernaryEmbedding {
        TernaryEmbedding::encode(self)
    }

    /// Encodes for a catalog page (see the module docs).
    pub fn to_i8(&self) -> I8Embedding {
        I8Embedding::encode(self)
    }
}

impl<'de> Deserialize<'de> for Embedding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<f32>::deserialize(d)?;
        Embedding::new(v).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<Vec<f32>> for Embedding {
    type Error = EmbeddingError;
    fn try_from(v: Vec<f32>) -> Result<Self, Self::Error> {
        Embedding::new(v)
    }
}

/// Dot product written as independent partial sums so the compiler vectorizes it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        let (x, y) = (&a[c * 16..c * 16 + 16], &b[c * 16..c * 16 + 16]);
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a[chunks * 16..]
        .iter()
        .zip(&b[chunks * 16..])
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

// ---------------------------------------------------------------------------
// The fixed rotation: random signs, a random permutation, then an orthonormal
// Hadamard transform on each of the three 128-wide blocks. Orthogonal, so the
// decoder applies the inverse exactly. Generated from a fixed seed: changing it
// changes the wire format (bump PROTOCOL_VERSION).

const BLOCK: usize = 128;
const ROTATION_SEED: u64 = 0x6f6d_6567_615f_7631; // "omega_v1"

struct Rotation {
    signs: [f32; EMBEDDING_DIM],
    perm: [u16; EMBEDDING_DIM],
}

fn rotation() -> &'static Rotation {
    static R: std::sync::OnceLock<Rotation> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        // splitmix64: tiny, deterministic, and part of the format definition.
        let mut state = ROTATION_SEED;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut signs = [1.0f32; EMBEDDING_DIM];
        for s in signs.iter_mut() {
            if next() & 1 == 1 {
                *s = -1.0;
            }
        }
        let mut perm = [0u16; EMBEDDING_DIM];
        for (i, p) in perm.iter_mut().enumerate() {
            *p = i as u16;
        }
        for i in (1..EMBEDDING_DIM).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            perm.swap(i, j);
        }
        Rotation { signs, perm }
    })
}

/// In-place orthonormal fast Walsh–Hadamard transform of one block (self-inverse).
fn fwht(block: &mut [f32]) {
    let mut h = 1;
    while h < block.len() {
        for i in (0..block.len()).step_by(h * 2) {
            for j in i..i + h {
                let (x, y) = (block[j], block[j + h]);
                block[j] = x + y;
                block[j + h] = x - y;
            }
        }
        h *= 2;
    }
    let scale = 1.0 / (block.len() as f32).sqrt();
    block.iter_mut().for_each(|v| *v *= scale);
}

fn rotate(x: &[f32]) -> [f32; EMBEDDING_DIM] {
    let r = rotation();
    let mut out = [0.0f32; EMBEDDING_DIM];
    for (i, o) in out.iter_mut().enumerate() {
        let src = r.perm[i] as usize;
        *o = x[src] * r.signs[src];
    }
    out.chunks_mut(BLOCK).for_each(fwht);
    out
}

fn unrotate(mut y: [f32; EMBEDDING_DIM]) -> Vec<f32> {
    let r = rotation();
    y.chunks_mut(BLOCK).for_each(fwht);
    let mut out = vec![0.0f32; EMBEDDING_DIM];
    for (i, v) in y.iter().enumerate() {
        let dst = r.perm[i] as usize;
        out[dst] = v * r.signs[dst];
    }
    out
}

/// The largest valid value of packed byte `index`: 242 (3^5 - 1), except the
/// last byte, which carries only the 4 remaining trits (3^4 - 1 = 80).
const fn max_ternary_byte(index: usize) -> u8 {
    if index == TERNARY_BYTES - 1 {
        let rest = EMBEDDING_DIM - 5 * (TERNARY_BYTES - 1);
        (3u32.pow(rest as u32) - 1) as u8
    } else {
        242
    }
}

/// A 384-d unit vector as 384 trits packed five per byte (77 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawTernary", into = "RawTernary")]
pub struct TernaryEmbedding([u8; TERNARY_BYTES]);

/// Candidate thresholds, as multiples of the rotated vector's RMS; the encoder
/// keeps whichever gives the best cosine for this vector (the decoder needs none).
const TERNARY_THRESHOLDS: [f32; 9] = [0.35, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9];

impl TernaryEmbedding {
    /// Quantizes a unit vector.
    pub fn encode(e: &Embedding) -> Self {
        let y = rotate(e.as_slice());
        let rms = (y.iter().map(|v| v * v).sum::<f32>() / EMBEDDING_DIM as f32).sqrt();
        let mut best = (f32::MIN, 0.0f32);
        for t in TERNARY_THRESHOLDS {
            let th = t * rms;
            // cos(y, q) = sum(|y_i| over kept) / (|y| * sqrt(kept)); |y| = 1.
            let (sum, kept) = y
                .iter()
                .filter(|v| v.abs() > th)
                .fold((0.0f32, 0u32), |(s, k), v| (s + v.abs(), k + 1));
            if kept > 0 {
                let cos = sum / (kept as f32).sqrt();
                if cos > best.0 {
                    best = (cos, th);
                }
            }
        }
        let th = best.1;
        let mut bytes = [0u8; TERNARY_BYTES];
        for (b, chunk) in bytes.iter_mut().zip(y.chunks(5)) {
            let mut packed = 0u8;
            for v in chunk.iter().rev() {
                let trit = if *v > th {
                    2
                } else if *v < -th {
                    0
                } else {
                    1
                };
                packed = packed * 3 + trit;
            }
            *b = packed;
        }
        Self(bytes)
    }

    /// Builds from raw packed bytes, rejecting bytes above 242.
    pub fn from_bytes(bytes: [u8; TERNARY_BYTES]) -> Result<Self, EmbeddingError> {
        if let Some(index) = (0..TERNARY_BYTES).find(|&i| bytes[i] > max_ternary_byte(i)) {
            return Err(EmbeddingError::BadTernaryByte {
                index,
                value: bytes[index],
            });
        }
        Ok(Self(bytes))
    }

    /// Whether some trit is not zero. The all-zero code (every byte 121 =
    /// `11111` in base 3, the last 40 = `1111`) has no direction: the encoder
    /// never produces it and [`Self::decode`] refuses it. A cheap check for
    /// those that keep the packed form without decoding it.
    pub fn has_direction(&self) -> bool {
        let (last, body) = self.0.split_last().unwrap_or((&40, &[]));
        *last != 40 || body.iter().any(|&b| b != 121)
    }

    /// The packed bytes.
    pub fn as_bytes(&self) -> &[u8; TERNARY_BYTES] {
        &self.0
    }

    /// Dequantizes to a unit vector. An all-zero code (which the encoder never
    /// produces) has no direction and is an error.
    pub fn decode(&self) -> Result<Embedding, EmbeddingError> {
        let mut y = [0.0f32; EMBEDDING_DIM];
        let mut i = 0;
        for (index, &b) in self.0.iter().enumerate() {
            if b > max_ternary_byte(index) {
                return Err(EmbeddingError::BadTernaryByte { index, value: b });
            }
            let mut v = b;
            for _ in 0..5 {
                if i == EMBEDDING_DIM {
                    break;
                }
                y[i] = f32::from(v % 3) - 1.0;
                v /= 3;
                i += 1;
            }
        }
        Embedding::new(unrotate(y))
    }
}

/// The undecoded wire form of a [`TernaryEmbedding`]; validated on conversion.
/// `BigArray` writes fixed arrays longer than serde's derive supports (32) as a
/// tuple, so postcard spends no length prefix and never allocates on decode.
#[derive(Serialize, Deserialize)]
struct RawTernary(#[serde(with = "BigArray")] [u8; TERNARY_BYTES]);

impl TryFrom<RawTernary> for TernaryEmbedding {
    type Error = EmbeddingError;
    fn try_from(raw: RawTernary) -> Result<Self, Self::Error> {
        TernaryEmbedding::from_bytes(raw.0)
    }
}

impl From<TernaryEmbedding> for RawTernary {
    fn from(t: TernaryEmbedding) -> Self {
        RawTernary(t.0)
    }
}

/// A 384-d unit vector as one signed byte per coordinate and a scale (388 bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct I8Embedding {
    scale: f32,
    #[serde(with = "BigArray")]
    values: [i8; EMBEDDING_DIM],
}

impl I8Embedding {
    /// Quantizes a unit vector: `values[i] = round(127 x[i] / max|x|)`, `scale = 1 / |values|`.
    pub fn encode(e: &Embedding) -> Self {
        let max = e.as_slice().iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = max / 127.0;
        let mut values = [0i8; EMBEDDING_DIM];
        for (q, v) in values.iter_mut().zip(e.as_slice()) {
            *q = (v / scale).round().clamp(-127.0, 127.0) as i8;
        }
        // Store 1/|q| rather than max/127: the decoded vector is then already
        // unit length, so decoding and re-encoding gives the same bytes.
        let norm = values
            .iter()
            .map(|q| f32::from(*q) * f32::from(*q))
            .sum::<f32>()
            .sqrt();
        Self {
            scale: 1.0 / norm,
            values,
        }
    }

    /// The dequantized coordinates, for a code this process encoded (the
    /// scale is then finite and positive, and the vector unit length up to
    /// rounding). Codes
    /// from outside go through [`Self::decode`], which checks.
    pub fn to_f32(&self) -> Vec<f32> {
        self.values
            .iter()
            .map(|v| f32::from(*v) * self.scale)
            .collect()
    }

    /// Dot product of the dequantized vector with `v`, without dequantizing.
    pub fn dot(&self, v: &[f32]) -> f32 {
        self.values
            .iter()
            .zip(v)
            .map(|(q, x)| f32::from(*q) * x)
            .sum::<f32>()
            * self.scale
    }

    /// Dequantizes to a unit vector, rejecting malformed input.
    pub fn decode(&self) -> Result<Embedding, EmbeddingError> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(EmbeddingError::BadScale(self.scale));
        }
        Embedding::new(self.to_f32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(seed: u32) -> Embedding {
        let v = (0..EMBEDDING_DIM)
            .map(|i| ((i as f32 + 1.0) * (seed as f32 + 0.37)).sin())
            .collect();
        Embedding::new(v).unwrap()
    }

    #[test]
    fn wire_forms_are_the_bare_bytes() {
        // Fixed arrays are postcard tuples: no length prefix, element after
        // element, so a ternary code is its 77 bytes and an int8 embedding is
        // the f32 scale then 384 bytes.
        let e = vector(3);
        let t = TernaryEmbedding::encode(&e);
        let bytes = postcard::to_stdvec(&t).unwrap();
        assert_eq!(bytes, t.as_bytes().to_vec());
        assert_eq!(postcard::from_bytes::<TernaryEmbedding>(&bytes).unwrap(), t);
        let q = I8Embedding::encode(&e);
        let bytes = postcard::to_stdvec(&q).unwrap();
        assert_eq!(bytes.len(), 4 + EMBEDDING_DIM);
        assert_eq!(bytes[..4], q.scale.to_le_bytes());
        assert!(bytes[4..]
            .iter()
            .zip(&q.values)
            .all(|(b, v)| *b == *v as u8));
        assert_eq!(postcard::from_bytes::<I8Embedding>(&bytes).unwrap(), q);
        // One byte short is an error, not a shorter array.
        assert!(postcard::from_bytes::<I8Embedding>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn rotation_is_orthogonal() {
        let e = vector(3);
        let back = unrotate(rotate(e.as_slice()));
        for (a, b) in back.iter().zip(e.as_slice()) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn ternary_round_trip_keeps_direction() {
        for s in 0..20 {
            let e = vector(s);
            let q = e.to_ternary();
            let d = q.decode().unwrap();
            assert!(e.cosine(&d) > 0.85, "cosine {}", e.cosine(&d));
            // Re-encoding the decoded vector is stable enough to stay close.
            assert!(d.to_ternary().decode().unwrap().cosine(&d) > 0.85);
        }
    }

    #[test]
    fn i8_round_trip_is_nearly_exact() {
        let e = vector(5);
        let d = e.to_i8().decode().unwrap();
        assert!(e.cosine(&d) > 0.9999);
    }

    #[test]
    fn i8_dot_and_to_f32_agree_with_decode() {
        let (a, b) = (vector(5), vector(9));
        let q = a.to_i8();
        let d = q.decode().unwrap();
        // decode renormalizes; to_f32 is unit length to rounding already.
        for (x, y) in q.to_f32().iter().zip(d.as_slice()) {
            assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        }
        let exact = dot(d.as_slice(), b.as_slice());
        assert!((q.dot(b.as_slice()) - exact).abs() < 1e-5);
        assert!((q.dot(b.as_slice()) - a.cosine(&b)).abs() < 1e-3);
    }

    #[test]
    fn invalid_vectors_are_rejected() {
        assert_eq!(
            Embedding::new(vec![0.0; 3]),
            Err(EmbeddingError::WrongDimension(3))
        );
        let mut v = vec![0.1; EMBEDDING_DIM];
        v[7] = f32::NAN;
        assert_eq!(
            Embedding::new(v),
            Err(EmbeddingError::NotFinite { index: 7 })
        );
        assert_eq!(
            Embedding::new(vec![0.0; EMBEDDING_DIM]),
            Err(EmbeddingError::ZeroNorm)
        );
        let mut bytes = [121u8; TERNARY_BYTES];
        bytes[4] = 250;
        assert!(matches!(
            TernaryEmbedding::from_bytes(bytes),
            Err(EmbeddingError::BadTernaryByte { index: 4, .. })
        ));
        let mut last = [121u8; TERNARY_BYTES];
        last[TERNARY_BYTES - 1] = 81;
        assert!(TernaryEmbedding::from_bytes(last).is_err());
        // All trits "zero" (121 = 11111 and 40 = 1111 in base 3): no direction.
        let mut zero = [121u8; TERNARY_BYTES];
        zero[TERNARY_BYTES - 1] = 40;
        let zero = TernaryEmbedding::from_bytes(zero).unwrap();
        assert!(zero.decode().is_err());
        assert!(!zero.has_direction());
        let mut one = zero.as_bytes().to_owned();
        one[TERNARY_BYTES - 1] = 41;
        assert!(TernaryEmbedding::from_bytes(one).unwrap().has_direction());
        one[TERNARY_BYTES - 1] = 40;
        one[0] = 120;
        assert!(TernaryEmbedding::from_bytes(one).unwrap().has_direction());
    }
}
