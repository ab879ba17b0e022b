//! Secure aggregation: the node learns the sum of a cohort's contribution
//! vectors and nothing about any one of them. The protocol of Bonawitz et al.,
//! "Practical Secure Aggregation for Privacy-Preserving Machine Learning"
//! (CCS 2017), semi-honest variant with dropout tolerance and double masking,
//! as sans-IO state machines: a [`Client`] per TV and a [`Server`] on the
//! node take messages and return messages; the caller moves them, decides
//! how long to wait for each round and assigns the member ids.
//!
//! # What the node learns, and what it does not
//!
//! * It learns the sum, mod 2³², of the inputs of the members whose masked
//!   input it received in time (U3), and who those members are (and who
//!   advertised keys, sent shares, and answered the last round).
//! * It does not learn any one member's input, nor the sum of any set of
//!   members other than U3: every masked input it sees is the input plus a
//!   self mask PRG(b_i) and pair masks PRG(s_ij) that cancel only in the sum.
//!   A member that drops out after sending its masked input still has its
//!   pair masks cancelled and its self mask removed; a member that drops out
//!   before has its pair masks removed from the others' inputs, and its own
//!   input is never in the sum.
//! * Double masking is what makes lying about dropouts useless: to strip a
//!   member's pair masks the server needs t shares of its mask key, which
//!   honest members give only for members missing from U3; to strip its self
//!   mask it needs t shares of b_i, given only for members in U3. A client
//!   never reveals both for one member, refuses a second, different U3, and
//!   t > n/2 means two disjoint sets of t answering members cannot exist.
//!
//! # Assumptions and known limits
//!
//! * **Signed keys** ([`attest`]): every member signs its advertised keys
//!   with its device certificate's key, and every client checks every
//!   member's signature and certificate, and that no certificate appears
//!   twice, before round 1. A server cannot invent members; the members it
//!   lists are real devices.
//! * **The server**: it may read everything it handles and lie about who
//!   dropped out (double masking and the survivor check above keep that
//!   useless), and it may run real devices of its own in the cohort. At most
//!   t − 1 members may collude with it (they see their own shares); with t or
//!   more the secrets of others can be rebuilt. With c colluding members among
//!   the n members of U2, the b/s split (showing some honest clients a U3
//!   with the victim, the others one without, to collect t shares of both its
//!   secrets) needs 2(t − c) ≤ n − c − 1 honest answers, so c ≥ 2t − n + 1
//!   (11 at n = 200, t = 105): the margin of t over n/2 is what bounds a
//!   server with devices of its own. There is no consistency round (Bonawitz's active
//!   variant signs U3 as well); the noise each TV adds assumes t − 1 others
//!   are honest (see `omega_brain_core::round_client`).
//! * The self-mask seed's reconstruction cannot be checked (there are no
//!   commitments); a reconstructed mask secret key is checked against the
//!   advertised public key. Bad shares from a member make the sum wrong or
//!   fail with [`ServerError::Reconstruction`], they cannot reveal an input.
//! * Inputs are added mod 2³²: the caller encodes signed values by wrapping
//!   and must keep the true sum within ±2³¹ to read it back.
//! * Randomness: every key, seed and polynomial comes from the CSPRNG the
//!   caller passes. Tests pass a seeded ChaCha20 for reproducibility;
//!   production must pass an OS-seeded one (`rand::rng()`, or
//!   `rand::rngs::StdRng::from_os_rng()`). Secrets are zeroized when
//!   dropped.
//!
//! # Costs, per client and round (n = cohort size, D = dimension)
//!
//! | round | client sends | client receives |
//! |---|---|---|
//! | 0 AdvertiseKeys | 64 B | member list, ≤ 69·n B |
//! | 1 ShareKeys | ≤ 102·(n−1) B | ≤ 102·(n−1) B |
//! | 2 MaskedInput | 4·D B | survivors, ≤ 5·n B |
//! | 3 Unmasking | ≤ 50·n B | — |
//!
//! One message per client per round each way (postcard sizes, the envelope
//! adds a byte). For n = 50, D = 10 000: about 3.5 KB, 5 KB, 40 KB and 2.5 KB.
//! Work: a client does 2·n X25519 agreements, two Shamir splits (O(n·t)
//! field products) and n + 1 mask expansions of D words. The server stores
//! the n·(n−1) ciphertexts of round 1 (≈ 100·n² bytes: 100 MB at n = 1000,
//! so large cohorts want a disk-backed caller) and one running sum of D
//! words, and at the end rebuilds |U2| secrets (O(n·t)) and expands
//! |U3|·(1 + dropped) masks of D words.

pub mod attest;
mod client;
mod crypto;
mod messages;
mod server;
pub mod shamir;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use attest::{AttestError, Attestation, Attestor, Verifier};
pub use client::{Client, ClientError};
pub use crypto::CIPHERTEXT_LEN;
pub use messages::{
    AdvertiseKeys, HeldShare, MaskedInput, MemberKeys, MemberList, Sealed, ShareKeys, SharesForYou,
    Survivors, ToClient, ToServer, UnmaskShares,
};
pub use server::{Aggregate, Server, ServerError};

/// Most bytes one member takes in a [`MemberList`] (postcard): its id and
/// both keys (69), two length prefixes, and the largest attestation.
pub const MAX_LISTED_MEMBER_BYTES: usize =
    69 + 2 * 3 + attest::MAX_CREDENTIAL_BYTES + attest::MAX_SIGNATURE_BYTES;

/// Largest cohort (members of U1). The server's round-1 storage grows as n².
pub const MAX_COHORT: u16 = 1000;
/// Largest vector dimension: 2²¹ entries (8 MiB masked), above the largest
/// [`ContributionLayout`](crate::ContributionLayout) (2²⁰ items plus 1024
/// titles' 523 776 pairs).
pub const MAX_DIM: u32 = 1 << 21;

/// A signed vector as secure aggregation adds it: each entry mod 2³²
/// (two's complement). [`from_ring`] reads a sum back.
pub fn to_ring(values: &[i64]) -> Vec<u32> {
    values.iter().map(|&v| v as u32).collect()
}

/// A sum read back as signed values: correct while the true sum of each
/// entry stays within ±2³¹.
pub fn from_ring(sum: &[u32]) -> Vec<i64> {
    sum.iter().map(|&v| i64::from(v as i32)).collect()
}

/// A cohort member's id, assigned by the caller (the node), unique in a
/// session. Ids order the pair masks' signs and are the Shamir x coordinates
/// (id + 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(pub u32);

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The round a state machine is in, named in wrong-round errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Round {
    /// Round 0: keys are advertised.
    AdvertiseKeys,
    /// Round 1: shares of the secrets are exchanged.
    ShareKeys,
    /// Round 2: masked inputs are sent.
    MaskedInput,
    /// Round 3: shares are revealed to unmask the sum.
    Unmasking,
    /// The session is over.
    Done,
}

/// Why a configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The cohort size must be in 2..=[`MAX_COHORT`].
    #[error("cohort size {0} outside 2..={MAX_COHORT}")]
    Cohort(u16),
    /// The threshold must be at least 2, more than half the cohort and at
    /// most the cohort.
    #[error("threshold {threshold} must be at least 2 and in ({cohort}/2, {cohort}]")]
    Threshold {
        /// The threshold given.
        threshold: u16,
        /// The cohort size given.
        cohort: u16,
    },
    /// The dimension must be in 1..=[`MAX_DIM`].
    #[error("dimension {0} outside 1..={MAX_DIM}")]
    Dim(u32),
}

/// The parameters of one aggregation session, the same on the server and
/// every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Names the session: every derived key is bound to it, so ciphertexts
    /// and masks of one session are of no use in another. Fresh per session.
    pub session: u64,
    /// n: the most members the server admits (|U1| ≤ n).
    pub cohort: u16,
    /// t: shares needed to rebuild a secret, and the fewest members any
    /// round may continue with. Must be > n/2 and ≥ 2.
    pub threshold: u16,
    /// D: entries in every input vector.
    pub dim: u32,
}

impl Config {
    /// Checks the bounds ([`ConfigError`] says which one failed).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(2..=MAX_COHORT).contains(&self.cohort) {
            return Err(ConfigError::Cohort(self.cohort));
        }
        if self.threshold < 2
            || self.threshold > self.cohort
            || 2 * u32::from(self.threshold) <= u32::from(self.cohort)
        {
            return Err(ConfigError::Threshold {
                threshold: self.threshold,
                cohort: self.cohort,
            });
        }
        if !(1..=MAX_DIM).contains(&self.dim) {
            return Err(ConfigError::Dim(self.dim));
        }
        Ok(())
    }

    /// An upper bound on the postcard encoding of any [`ToServer`] or
    /// [`ToClient`] message of this configuration: what a transport may set
    /// as its frame limit.
    pub fn max_message_bytes(&self) -> usize {
        let n = usize::from(self.cohort);
        let per_member = 5 + 1 + CIPHERTEXT_LEN; // id, length, ciphertext
        let largest = (per_member * n)
            .max(4 * self.dim as usize)
            .max(MAX_LISTED_MEMBER_BYTES * n);
        largest + 16 // envelope tag and length prefixes
    }

    pub(crate) fn threshold(&self) -> usize {
        usize::from(self.threshold)
    }
}
