//! Shamir secret sharing of 32-byte secrets, over the prime field of
//! p = 2⁶¹ − 1.
//!
//! A prime field rather than GF(256) because a share's x coordinate must be a
//! distinct non-zero field element per cohort member: GF(256) has only 255 of
//! them, this field has room for every `u32` member id (x = id + 1). The
//! secret is cut into five little-endian chunks of at most 7 bytes (each below
//! 2⁵⁶ < p) and every chunk gets its own random polynomial of degree t − 1,
//! so any t shares give the secret back and fewer give nothing about it.
//! No table lookups are indexed by secrets (a GF(256) log table would be).

use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// The field's modulus, 2⁶¹ − 1 (a Mersenne prime).
pub const P: u64 = (1 << 61) - 1;
/// Field elements per share: 32 bytes in chunks of 7 bytes.
pub const CHUNKS: usize = 5;
/// Bytes per chunk (the last chunk holds the remaining 4).
const CHUNK_BYTES: usize = 7;
/// Bytes of a share in its fixed-width encoding (little-endian `u64`s).
pub const SHARE_BYTES: usize = CHUNKS * 8;

/// Why shares cannot be turned back into a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    /// A share holds a number that is not a field element (at least p).
    #[error("share value is not below the field modulus")]
    NotInField,
    /// Two shares have the same x coordinate, or one has x = 0.
    #[error("share coordinates are not distinct and non-zero")]
    Coordinates,
    /// Fewer shares than the threshold were given.
    #[error("{got} shares given, {need} needed")]
    TooFew {
        /// Shares given.
        got: usize,
        /// The threshold.
        need: usize,
    },
    /// The shares interpolate to something that is no 32-byte secret (a
    /// chunk out of range): they were not made from one secret.
    #[error("shares do not belong to one secret")]
    Inconsistent,
}

/// One member's share of one 32-byte secret: the value of each chunk's
/// polynomial at the member's x coordinate.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize)]
#[zeroize(drop)]
pub struct Share(pub [u64; CHUNKS]);

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Share(..)")
    }
}

impl Share {
    /// Whether every value is a field element (decoders check this before
    /// arithmetic).
    pub fn is_valid(&self) -> bool {
        self.0.iter().all(|&v| v < P)
    }

    /// The fixed-width encoding (little-endian), for the encrypted channel.
    pub fn to_bytes(&self) -> Zeroizing<[u8; SHARE_BYTES]> {
        let mut out = Zeroizing::new([0u8; SHARE_BYTES]);
        for (chunk, v) in out.chunks_exact_mut(8).zip(self.0.iter()) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Decodes [`Share::to_bytes`]; `None` unless `bytes` has the exact length
    /// and every value is a field element.
    pub fn from_bytes(bytes: &[u8]) -> Option<Share> {
        if bytes.len() != SHARE_BYTES {
            return None;
        }
        let mut share = Share([0; CHUNKS]);
        for (v, chunk) in share.0.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *v = u64::from_le_bytes(word);
        }
        share.is_valid().then_some(share)
    }
}

fn reduce(v: u64) -> u64 {
    if v >= P {
        v - P
    } else {
        v
    }
}

fn add(a: u64, b: u64) -> u64 {
    reduce(a + b)
}

fn sub(a: u64, b: u64) -> u64 {
    reduce(a + P - b)
}

fn mul(a: u64, b: u64) -> u64 {
    let z = u128::from(a) * u128::from(b);
    // 2^61 ≡ 1 (mod p): fold the high bits onto the low ones; both are below
    // 2^61, so their sum is below 2p and one subtraction finishes.
    reduce((z as u64 & P) + (z >> 61) as u64)
}

fn pow(mut base: u64, mut exp: u64) -> u64 {
    let mut acc = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul(acc, base);
        }
        base = mul(base, base);
        exp >>= 1;
    }
    acc
}

fn inv(a: u64) -> u64 {
    // Fermat; a is never 0 here (callers check distinct non-zero points).
    pow(a, P - 2)
}

fn random_element(rng: &mut impl CryptoRng) -> u64 {
    loop {
        let v = rng.next_u64() >> 3;
        if v < P {
            return v;
        }
    }
}

/// The x coordinate of member `id` (never 0, distinct per id).
pub fn x_of(id: u32) -> u64 {
    u64::from(id) + 1
}

fn chunks_of(secret: &[u8; 32]) -> Zeroizing<[u64; CHUNKS]> {
    let mut out = Zeroizing::new([0u64; CHUNKS]);
    for (v, chunk) in out.iter_mut().zip(secret.chunks(CHUNK_BYTES)) {
        let mut word = Zeroizing::new([0u8; 8]);
        word[..chunk.len()].copy_from_slice(chunk);
        *v = u64::from_le_bytes(*word);
    }
    out
}

/// Splits `secret` into one share per x coordinate in `xs`, any `threshold`
/// of which reconstruct it. `xs` must be distinct and non-zero (the callers
/// pass [`x_of`] of distinct member ids) and `threshold` at least 1.
pub fn split(
    secret: &[u8; 32],
    threshold: usize,
    xs: &[u64],
    rng: &mut impl CryptoRng,
) -> Vec<Share> {
    let secret_chunks = chunks_of(secret);
    // coefficients[c][k]: chunk c's polynomial's coefficient of x^k.
    let mut coefficients: Zeroizing<Vec<[u64; CHUNKS]>> =
        Zeroizing::new(Vec::with_capacity(threshold.max(1)));
    coefficients.push(*secret_chunks);
    for _ in 1..threshold {
        let mut row = [0u64; CHUNKS];
        for v in row.iter_mut() {
            *v = random_element(rng);
        }
        coefficients.push(row);
    }
    xs.iter()
        .map(|&x| {
            let mut share = Share([0; CHUNKS]);
            for (c, value) in share.0.iter_mut().enumerate() {
                // Horner from the highest coefficient down.
                *value = coefficients
                    .iter()
                    .rev()
                    .fold(0, |acc, row| add(mul(acc, x), row[c]));
            }
            share
        })
        .collect()
}

/// Lagrange coefficients for interpolating at 0 from a fixed set of x
/// coordinates: computed once, then used for every secret shared over the
/// same members.
#[derive(Debug, Clone)]
pub struct Interpolation {
    coefficients: Vec<u64>,
}

impl Interpolation {
    /// Coefficients for `xs`, which must hold at least `threshold` distinct
    /// non-zero points; only the first `threshold` are used.
    pub fn new(xs: &[u64], threshold: usize) -> Result<Interpolation, ShamirError> {
        if xs.len() < threshold || threshold == 0 {
            return Err(ShamirError::TooFew {
                got: xs.len(),
                need: threshold,
            });
        }
        let xs = &xs[..threshold];
        let mut sorted = xs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != xs.len() || sorted.iter().any(|&x| x == 0 || x >= P) {
            return Err(ShamirError::Coordinates);
        }
        // λ_k = Π_{m≠k} x_m / (x_m − x_k)
        let coefficients = xs
            .iter()
            .enumerate()
            .map(|(k, &xk)| {
                let (num, den) = xs
                    .iter()
                    .enumerate()
                    .filter(|&(m, _)| m != k)
                    .fold((1, 1), |(num, den), (_, &xm)| {
                        (mul(num, xm), mul(den, sub(xm, xk)))
                    });
                mul(num, inv(den))
            })
            .collect();
        Ok(Interpolation { coefficients })
    }

    /// The secret from the shares of the same members, in the same order as
    /// the x coordinates given to [`Interpolation::new`] (extra shares past
    /// the threshold are ignored).
    pub fn secret<'a>(
        &self,
        shares: impl IntoIterator<Item = &'a Share>,
    ) -> Result<Zeroizing<[u8; 32]>, ShamirError> {
        let mut chunks = Zeroizing::new([0u64; CHUNKS]);
        let mut got = 0;
        for (share, &lambda) in shares.into_iter().zip(self.coefficients.iter()) {
            if !share.is_valid() {
                return Err(ShamirError::NotInField);
            }
            for (acc, &v) in chunks.iter_mut().zip(share.0.iter()) {
                *acc = add(*acc, mul(v, lambda));
            }
            got += 1;
        }
        if got < self.coefficients.len() {
            return Err(ShamirError::TooFew {
                got,
                need: self.coefficients.len(),
            });
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        for (chunk, &v) in secret.chunks_mut(CHUNK_BYTES).zip(chunks.iter()) {
            if v >> (8 * chunk.len()) != 0 {
                return Err(ShamirError::Inconsistent);
            }
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn secret(seed: u8) -> [u8; 32] {
        std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7))
    }

    #[test]
    fn field_arithmetic() {
        assert_eq!(mul(P - 1, P - 1), 1); // (−1)² = 1
        assert_eq!(add(P - 1, 1), 0);
        assert_eq!(sub(0, 1), P - 1);
        for a in [1, 2, 12345, P - 2, 1 << 60] {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
        }
    }

    #[test]
    fn any_threshold_subset_reconstructs() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let s = [0xff; 32];
        let ids: Vec<u32> = vec![0, 3, 7, 8, 100, 999, u32::MAX - 1];
        let xs: Vec<u64> = ids.iter().map(|&i| x_of(i)).collect();
        let shares = split(&s, 4, &xs, &mut rng);
        for skip in 0..3 {
            let pick: Vec<usize> = (skip..skip + 4).collect();
            let px: Vec<u64> = pick.iter().map(|&k| xs[k]).collect();
            let interp = Interpolation::new(&px, 4).expect("distinct points");
            let got = interp
                .secret(pick.iter().map(|&k| &shares[k]))
                .expect("consistent");
            assert_eq!(*got, s);
        }
        // Order matters only in that shares follow their coordinates.
        let px = [xs[6], xs[0], xs[4], xs[2]];
        let interp = Interpolation::new(&px, 4).expect("distinct points");
        let got = interp
            .secret([&shares[6], &shares[0], &shares[4], &shares[2]])
            .expect("consistent");
        assert_eq!(*got, s);
    }

    #[test]
    fn fewer_than_threshold_shares_are_wrong_or_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let s = secret(5);
        let xs: Vec<u64> = (0..5).map(x_of).collect();
        let shares = split(&s, 3, &xs, &mut rng);
        assert!(matches!(
            Interpolation::new(&xs[..2], 3),
            Err(ShamirError::TooFew { got: 2, need: 3 })
        ));
        // Interpolating two shares as if the threshold were 2 does not give
        // the secret (it is a different line through them).
        let interp = Interpolation::new(&xs[..2], 2).expect("points");
        assert_ne!(interp.secret(&shares[..2]).ok().map(|s| *s), Some(s));
        // Too few shares for the coefficients.
        let interp = Interpolation::new(&xs[..3], 3).expect("points");
        assert!(matches!(
            interp.secret(&shares[..2]),
            Err(ShamirError::TooFew { .. })
        ));
    }

    #[test]
    fn threshold_one_is_the_secret_itself() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let s = secret(9);
        let shares = split(&s, 1, &[x_of(4), x_of(8)], &mut rng);
        assert_eq!(shares[0], shares[1]);
        let interp = Interpolation::new(&[x_of(8)], 1).expect("point");
        assert_eq!(*interp.secret(&shares[1..]).expect("secret"), s);
    }

    #[test]
    fn shares_of_one_secret_differ_between_runs() {
        let s = secret(1);
        let xs = [x_of(0), x_of(1), x_of(2)];
        let a = split(&s, 2, &xs, &mut ChaCha20Rng::seed_from_u64(4));
        let b = split(&s, 2, &xs, &mut ChaCha20Rng::seed_from_u64(5));
        assert_ne!(a[0], b[0]);
    }

    #[test]
    fn bad_points_and_values_are_refused() {
        assert_eq!(
            Interpolation::new(&[1, 2, 2], 3).err(),
            Some(ShamirError::Coordinates)
        );
        assert_eq!(
            Interpolation::new(&[0, 1], 2).err(),
            Some(ShamirError::Coordinates)
        );
        let interp = Interpolation::new(&[1, 2], 2).expect("points");
        let bad = Share([P; CHUNKS]);
        let ok = Share([0; CHUNKS]);
        assert_eq!(
            interp.secret([&ok, &bad]).err(),
            Some(ShamirError::NotInField)
        );
        // Shares of no one secret interpolate to chunks above 7 bytes.
        let noise = Share([12345; CHUNKS]); // interpolates to −12345
        assert_eq!(
            interp.secret([&ok, &noise]).err(),
            Some(ShamirError::Inconsistent)
        );
    }

    #[test]
    fn share_bytes_round_trip_and_validate() {
        let share = Share([1, 2, 3, P - 1, 0]);
        let bytes = share.to_bytes();
        assert_eq!(Share::from_bytes(&bytes[..]), Some(share));
        assert_eq!(Share::from_bytes(&bytes[..39]), None);
        let mut bad = *bytes;
        bad[..8].copy_from_slice(&P.to_le_bytes());
        assert_eq!(Share::from_bytes(&bad), None);
    }
}
