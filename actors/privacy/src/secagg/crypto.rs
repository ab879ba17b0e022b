//! The cryptographic parts of secure aggregation: X25519 key pairs and
//! agreement (x25519-dalek), key derivation (HKDF-SHA256), the encrypted
//! channel for shares (ChaCha20-Poly1305), both from ring, and the
//! pseudorandom masks (the ChaCha20 keystream of rand_chacha).
//!
//! Every derived key is bound to the protocol's name and version, the
//! session, and (for the channel) the sender and receiver, so nothing made
//! for one session, pair or direction is of use in another.

use rand::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use ring::{aead, hkdf};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::ClientId;

/// Names the protocol in every derivation (change it with the wire format).
const PROTOCOL: &[u8] = b"omega-secagg/v1";

/// Bytes of an encrypted share pair: two shares plus the Poly1305 tag.
pub const CIPHERTEXT_LEN: usize = 2 * super::shamir::SHARE_BYTES + TAG_LEN;
const TAG_LEN: usize = 16;

/// A key agreement gave the all-zero secret: the peer's public key is of
/// small order, and the secret would be known to anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowOrderKey;

/// An X25519 key pair whose secret may be used more than once (the secret is
/// zeroized on drop by x25519-dalek).
#[derive(Clone)]
pub struct KeyPair {
    pub secret: StaticSecret,
    pub public: [u8; 32],
}

impl KeyPair {
    /// A fresh key pair from `rng`.
    pub fn generate(rng: &mut impl CryptoRng) -> KeyPair {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut bytes[..]);
        KeyPair::from_secret_bytes(&bytes)
    }

    /// The key pair of a known secret (a reconstructed one, on the server).
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> KeyPair {
        let secret = StaticSecret::from(*bytes);
        let public = PublicKey::from(&secret).to_bytes();
        KeyPair { secret, public }
    }

    /// X25519 with `peer`, refusing a non-contributory result.
    pub fn agree(&self, peer: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, LowOrderKey> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*peer));
        if !shared.was_contributory() {
            return Err(LowOrderKey);
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

/// Whether `public` is a small-order point, with which every agreement is
/// all zero. Any fixed secret decides it: X25519 clamps secrets to multiples
/// of the cofactor 8, which sends exactly the small-order points to zero.
pub fn is_low_order(public: &[u8; 32]) -> bool {
    KeyPair::from_secret_bytes(&[0x55; 32])
        .agree(public)
        .is_err()
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn salt(purpose: &[u8], session: u64) -> hkdf::Salt {
    let mut salt = Vec::with_capacity(PROTOCOL.len() + purpose.len() + 8);
    salt.extend_from_slice(PROTOCOL);
    salt.extend_from_slice(purpose);
    salt.extend_from_slice(&session.to_be_bytes());
    hkdf::Salt::new(hkdf::HKDF_SHA256, &salt)
}

/// The seed of the pair mask between `a` and `b` (the same whichever of them
/// computes it) from their mask keys' shared secret.
pub fn pair_seed(shared: &[u8; 32], session: u64, a: ClientId, b: ClientId) -> Zeroizing<[u8; 32]> {
    let (lo, hi) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let lo = lo.0.to_be_bytes();
    let hi = hi.0.to_be_bytes();
    let mut seed = Zeroizing::new([0u8; 32]);
    let info = [&lo[..], &hi[..]];
    salt(b"/pair-mask", session)
        .extract(&shared[..])
        .expand(&info, Len(32))
        .and_then(|okm| okm.fill(&mut seed[..]))
        .expect("HKDF-SHA256 yields 32 bytes");
    seed
}

/// The AEAD key for shares sent from `sender` to `receiver` in `session`,
/// from their channel keys' shared secret. Each direction has its own key,
/// used for exactly one message (a client shares once per session with fresh
/// keys), so the nonce can be fixed.
fn channel_key(
    shared: &[u8; 32],
    session: u64,
    sender: ClientId,
    receiver: ClientId,
) -> aead::LessSafeKey {
    let s = sender.0.to_be_bytes();
    let r = receiver.0.to_be_bytes();
    let info = [&s[..], &r[..]];
    let prk = salt(b"/share-channel", session).extract(&shared[..]);
    let okm = prk
        .expand(&info, &aead::CHACHA20_POLY1305)
        .expect("HKDF-SHA256 yields a 32-byte key");
    let key = aead::UnboundKey::from(okm);
    aead::LessSafeKey::new(key)
}

fn associated_data(session: u64, sender: ClientId, receiver: ClientId) -> [u8; 8 + 1 + 4 + 4] {
    let mut aad = [0u8; 17];
    aad[..8].copy_from_slice(&session.to_be_bytes());
    aad[8] = 1; // the round the ciphertext belongs to (ShareKeys)
    aad[9..13].copy_from_slice(&sender.0.to_be_bytes());
    aad[13..].copy_from_slice(&receiver.0.to_be_bytes());
    aad
}

/// Encrypts `plaintext` from `sender` to `receiver`.
pub fn seal(
    shared: &[u8; 32],
    session: u64,
    sender: ClientId,
    receiver: ClientId,
    plaintext: &[u8],
) -> Vec<u8> {
    let key = channel_key(shared, session, sender, receiver);
    let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
    buf.extend_from_slice(plaintext);
    let aad = associated_data(session, sender, receiver);
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key([0; 12]),
        aead::Aad::from(aad),
        &mut buf,
    )
    .expect("sealing fails only past 256 GiB per message");
    buf
}

/// Decrypts what `sender` sealed for `receiver`; `None` if it was not (a
/// forged or altered ciphertext, another session, pair or direction).
pub fn open(
    shared: &[u8; 32],
    session: u64,
    sender: ClientId,
    receiver: ClientId,
    ciphertext: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let key = channel_key(shared, session, sender, receiver);
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let aad = associated_data(session, sender, receiver);
    let len = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key([0; 12]),
            aead::Aad::from(aad),
            &mut buf[..],
        )
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

/// Whether a mask is added or taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// Add the mask (mod 2³²).
    Plus,
    /// Subtract the mask (mod 2³²).
    Minus,
}

/// Adds (or subtracts) the mask PRG(`seed`) to `acc`, entry by entry mod 2³²:
/// the ChaCha20 keystream under `seed`, read as little-endian `u32`s.
pub fn apply_mask(acc: &mut [u32], seed: &[u8; 32], sign: Sign) {
    let mut prg = ChaCha20Rng::from_seed(*seed);
    let mut block = Zeroizing::new([0u8; 4096]);
    for part in acc.chunks_mut(block.len() / 4) {
        let bytes = &mut block[..part.len() * 4];
        prg.fill_bytes(bytes);
        for (v, m) in part.iter_mut().zip(bytes.chunks_exact(4)) {
            let m = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
            *v = match sign {
                Sign::Plus => v.wrapping_add(m),
                Sign::Minus => v.wrapping_sub(m),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(seed: u64) -> KeyPair {
        KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(seed))
    }

    #[test]
    fn agreement_and_pair_seed_are_symmetric() {
        let (a, b) = (pair(1), pair(2));
        let ab = a.agree(&b.public).expect("contributory");
        let ba = b.agree(&a.public).expect("contributory");
        assert_eq!(*ab, *ba);
        let s1 = pair_seed(&ab, 9, ClientId(3), ClientId(5));
        let s2 = pair_seed(&ba, 9, ClientId(5), ClientId(3));
        assert_eq!(*s1, *s2);
        assert_ne!(
            *s1,
            *pair_seed(&ab, 10, ClientId(3), ClientId(5)),
            "bound to the session"
        );
    }

    #[test]
    fn low_order_keys_are_refused() {
        assert_eq!(pair(1).agree(&[0; 32]).err(), Some(LowOrderKey));
        let mut one = [0u8; 32];
        one[0] = 1; // u = 1: order 4
        assert!(is_low_order(&[0; 32]) && is_low_order(&one));
        assert!(!is_low_order(&pair(3).public));
        assert!(!is_low_order(&[9; 32]));
    }

    #[test]
    fn channel_binds_session_and_direction() {
        let (a, b) = (pair(1), pair(2));
        let shared = a.agree(&b.public).expect("contributory");
        let ct = seal(&shared, 7, ClientId(1), ClientId(2), b"hello");
        assert_eq!(ct.len(), 5 + TAG_LEN);
        assert_eq!(
            open(&shared, 7, ClientId(1), ClientId(2), &ct)
                .as_deref()
                .map(|v| &v[..]),
            Some(&b"hello"[..])
        );
        assert!(open(&shared, 8, ClientId(1), ClientId(2), &ct).is_none());
        assert!(open(&shared, 7, ClientId(2), ClientId(1), &ct).is_none());
        assert!(open(&shared, 7, ClientId(1), ClientId(3), &ct).is_none());
        let mut forged = ct.clone();
        forged[0] ^= 1;
        assert!(open(&shared, 7, ClientId(1), ClientId(2), &forged).is_none());
        assert!(open(&shared, 7, ClientId(1), ClientId(2), &ct[..3]).is_none());
    }

    #[test]
    fn masks_cancel_and_look_random() {
        let seed = [7u8; 32];
        let mut v = vec![5u32; 10_001];
        apply_mask(&mut v, &seed, Sign::Plus);
        assert!(v.iter().filter(|&&x| x == 5).count() < 3);
        apply_mask(&mut v, &seed, Sign::Minus);
        assert!(v.iter().all(|&x| x == 5));
    }
}
