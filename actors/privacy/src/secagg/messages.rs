//! The messages of secure aggregation, one type per round and direction, and
//! the two envelopes ([`ToServer`], [`ToClient`]) a transport can carry.
//!
//! All are serde types without maps, so postcard encodes them compactly;
//! vectors of `u32` travel as raw little-endian bytes (4 bytes an entry, not a
//! varint of up to 5). Decoding checks only the shape; the state machines
//! check everything else (lengths against the configuration, ids against the
//! cohort, order, duplicates) and answer bad content with typed errors. Every
//! message's size is bounded by the configuration: see
//! [`Config::max_message_bytes`](super::Config::max_message_bytes).

use serde::{Deserialize, Serialize};

use super::attest::Attestation;
use super::shamir::Share;
use super::ClientId;

/// Round 0, client → server: the client's two X25519 public keys, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertiseKeys {
    /// Public key of the channel key pair (encrypts shares between clients).
    pub channel_pk: [u8; 32],
    /// Public key of the mask key pair (agrees the pair masks).
    pub mask_pk: [u8; 32],
    /// Who advertises them: a credential and a signature over
    /// [`statement`](super::attest::statement).
    pub attestation: Attestation,
}

/// One cohort member's advertised keys, as the server relays them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberKeys {
    /// The member.
    pub id: ClientId,
    /// Its keys.
    pub keys: AdvertiseKeys,
}

/// Round 0 → 1, server → every member of U1: who takes part, with their
/// keys, in strictly increasing id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    /// U1, sorted by id.
    pub members: Vec<MemberKeys>,
}

/// A ciphertext of two shares, with the other end of the channel: the
/// receiver in a client's [`ShareKeys`], the sender in a [`SharesForYou`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The other member.
    pub peer: ClientId,
    /// ChaCha20-Poly1305 ciphertext of the shares of the sender's self-mask
    /// seed and mask secret key meant for the receiver.
    pub ciphertext: Vec<u8>,
}

/// Round 1, client → server: one [`Sealed`] for every other member of U1,
/// sorted by receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareKeys {
    /// The ciphertexts, by receiver.
    pub sealed: Vec<Sealed>,
}

/// Round 1 → 2, server → one member of U2: what every other member of U2
/// sealed for it, sorted by sender. The senders and the receiver make U2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharesForYou {
    /// The ciphertexts, by sender.
    pub sealed: Vec<Sealed>,
}

/// Round 2, client → server: the masked input y (mod 2³²).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedInput {
    /// y = x + PRG(b) + Σ ±PRG(s_ij), one entry per dimension.
    #[serde(with = "u32_bytes")]
    pub masked: Vec<u32>,
}

/// Round 2 → 3, server → every member of U3: whose masked input arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survivors {
    /// U3, strictly increasing.
    pub survivors: Vec<ClientId>,
}

/// A share held for another member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldShare {
    /// Whose secret the share is of.
    pub owner: ClientId,
    /// The share.
    pub share: Share,
}

/// Round 3, client → server: shares of the self-mask seed of every survivor
/// and of the mask secret key of every dropped member, never both for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskShares {
    /// For every member of U3 (itself included), sorted: its share of that
    /// member's self-mask seed b.
    pub seed_shares: Vec<HeldShare>,
    /// For every member of U2 not in U3, sorted: its share of that member's
    /// mask secret key.
    pub key_shares: Vec<HeldShare>,
}

/// Any message a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToServer {
    /// Round 0.
    AdvertiseKeys(AdvertiseKeys),
    /// Round 1.
    ShareKeys(ShareKeys),
    /// Round 2.
    MaskedInput(MaskedInput),
    /// Round 3.
    Unmask(UnmaskShares),
}

/// Any message the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToClient {
    /// End of round 0.
    Members(MemberList),
    /// End of round 1.
    Shares(SharesForYou),
    /// End of round 2.
    Survivors(Survivors),
}

/// `Vec<u32>` as serde bytes: 4 little-endian bytes an entry.
mod u32_bytes {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u32], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        s.serialize_bytes(&bytes)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u32>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes, a multiple of 4 long")
        }

        fn visit_bytes<E: Error>(self, b: &[u8]) -> Result<Vec<u32>, E> {
            if !b.len().is_multiple_of(4) {
                return Err(E::invalid_length(b.len(), &self));
            }
            Ok(b.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        }

        fn visit_byte_buf<E: Error>(self, b: Vec<u8>) -> Result<Vec<u32>, E> {
            self.visit_bytes(&b)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u32>, A::Error> {
            // Formats without a bytes type (JSON) give a sequence of numbers.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            self.visit_bytes(&out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        d.deserialize_bytes(BytesVisitor)
    }
}
