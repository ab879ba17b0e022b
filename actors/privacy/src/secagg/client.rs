//! The client side (one TV) of secure aggregation: a state machine that
//! answers each of the server's messages with its next message, checking
//! what it is told before revealing anything.
//!
//! Every method leaves the client as it was when it returns an error, so a
//! corrected message can still be handled. Rounds 1 and 2 happen once per
//! client (a second call is [`ClientError::WrongRound`]: masking twice would
//! show the server the difference of two inputs); the caller keeps the
//! returned message if it must send it again. Round 3 may be asked again
//! with the same survivors (the same answer comes back) but never with
//! different ones.

use rand::CryptoRng;
use zeroize::Zeroizing;

use super::attest::{self, AttestError, Attestor, Verifier};
use super::crypto::{self, KeyPair, Sign, CIPHERTEXT_LEN};
use super::messages::{
    AdvertiseKeys, HeldShare, MaskedInput, MemberKeys, MemberList, Sealed, ShareKeys, SharesForYou,
    Survivors, UnmaskShares,
};
use super::shamir::{self, Share, SHARE_BYTES};
use super::{ClientId, Config, ConfigError, Round};

/// Why a client refuses a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The message belongs to another round than the client's.
    #[error("message for round {got:?} while in round {at:?}")]
    WrongRound {
        /// The round the message belongs to.
        got: Round,
        /// The client's round.
        at: Round,
    },
    /// The member list is smaller than the threshold or larger than the
    /// cohort.
    #[error("{got} members, expected {min}..={max}")]
    CohortSize {
        /// Members listed.
        got: usize,
        /// The threshold.
        min: usize,
        /// The cohort size.
        max: usize,
    },
    /// A list of members is not in strictly increasing id order (or repeats
    /// one).
    #[error("member ids are not strictly increasing")]
    NotSorted,
    /// The member list lacks this client or shows other keys for it.
    #[error("the member list does not show this client with its keys")]
    NotListed,
    /// A member's public key is of small order (agreement would be known).
    #[error("member {0} advertised a small-order key")]
    LowOrderKey(ClientId),
    /// A member's keys are not vouched for by a trusted credential: the
    /// server may have invented it.
    #[error("member {member} is not attested: {error}")]
    Unattested {
        /// The member.
        member: ClientId,
        /// Why.
        error: AttestError,
    },
    /// Two members are the same identity (one credential, two member ids).
    #[error("member {0} repeats another member's identity")]
    DuplicateIdentity(ClientId),
    /// The session's configuration is invalid.
    #[error(transparent)]
    Config(ConfigError),
    /// This client could not sign its own keys.
    #[error("cannot attest this client's keys: {0}")]
    Attest(AttestError),
    /// A ciphertext comes from a non-member, or from this client itself.
    #[error("ciphertext from {0}, who is not another member")]
    UnknownSender(ClientId),
    /// A ciphertext did not decrypt (forged, altered or misaddressed) or
    /// held no valid shares.
    #[error("ciphertext from {0} does not decrypt to shares")]
    Decrypt(ClientId),
    /// Fewer members than the threshold would remain.
    #[error("{got} members remain, {need} needed")]
    TooFew {
        /// Members remaining.
        got: usize,
        /// The threshold.
        need: usize,
    },
    /// The input has another length than the configured dimension.
    #[error("input of {got} entries, expected {want}")]
    InputLength {
        /// Entries given.
        got: usize,
        /// The configured dimension.
        want: usize,
    },
    /// A survivor named did not send shares (is not in U2).
    #[error("survivor {0} is not among the members that shared keys")]
    NotShared(ClientId),
    /// This client is not among the survivors it was sent: answering would
    /// help rebuild its own mask key although it sent its masked input.
    #[error("this client is not among the survivors")]
    SelfDropped,
    /// Round 3 was asked again with other survivors: answering could reveal
    /// both secrets of one member.
    #[error("survivors differ from those already answered")]
    InconsistentSurvivors,
}

/// One cohort member's side of a secure aggregation session.
pub struct Client {
    config: Config,
    id: ClientId,
    state: State,
}

enum State {
    Advertised {
        channel: KeyPair,
        mask: KeyPair,
    },
    Shared(Box<Shared>),
    Masked(Box<Masked>),
    Unmasked {
        survivors: Vec<ClientId>,
        answer: UnmaskShares,
    },
}

struct Shared {
    channel: KeyPair,
    /// U1, sorted by id.
    members: Vec<MemberKeys>,
    self_seed: Zeroizing<[u8; 32]>,
    /// This client's own shares of its seed and mask key.
    own: (Share, Share),
    /// The pair-mask seed with every other member, sorted by id.
    pair_seeds: Vec<(ClientId, Zeroizing<[u8; 32]>)>,
}

struct Masked {
    /// U2, sorted.
    u2: Vec<ClientId>,
    /// (owner, share of its seed, share of its mask key) for every member of
    /// U2, this client included, sorted by owner.
    held: Vec<(ClientId, Share, Share)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("config", &self.config)
            .field("round", &self.round())
            .finish_non_exhaustive()
    }
}

fn strictly_increasing(ids: impl Iterator<Item = ClientId>) -> bool {
    let mut last: Option<ClientId> = None;
    for id in ids {
        if last.is_some_and(|l| l >= id) {
            return false;
        }
        last = Some(id);
    }
    true
}

impl Client {
    /// A client for member `id` of a session: makes its channel and mask key
    /// pairs from `rng` (production: an OS-seeded CSPRNG) and returns the
    /// round-0 message advertising them, signed by `attestor`.
    pub fn new(
        config: Config,
        id: ClientId,
        attestor: &dyn Attestor,
        rng: &mut impl CryptoRng,
    ) -> Result<(Client, AdvertiseKeys), ClientError> {
        config.validate().map_err(ClientError::Config)?;
        let channel = KeyPair::generate(rng);
        let mask = KeyPair::generate(rng);
        let statement = attest::statement(config.session, id, &channel.public, &mask.public);
        let keys = AdvertiseKeys {
            channel_pk: channel.public,
            mask_pk: mask.public,
            attestation: attestor.attest(&statement).map_err(ClientError::Attest)?,
        };
        let client = Client {
            config,
            id,
            state: State::Advertised { channel, mask },
        };
        Ok((client, keys))
    }

    /// This client's member id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The round whose message the client expects next.
    pub fn round(&self) -> Round {
        match self.state {
            State::Advertised { .. } => Round::ShareKeys,
            State::Shared(_) => Round::MaskedInput,
            State::Masked(_) => Round::Unmasking,
            State::Unmasked { .. } => Round::Done,
        }
    }

    fn wrong_round(&self, got: Round) -> ClientError {
        ClientError::WrongRound {
            got,
            at: self.round(),
        }
    }

    /// Round 1: checks the member list U1 (its size, order, this client's
    /// keys, and every other member's attestation with `verifier`: trusted,
    /// and no identity twice), then Shamir-shares a fresh self-mask seed and
    /// the mask secret key among U1 (threshold t) and seals each other
    /// member's pair of shares for it.
    pub fn share_keys(
        &mut self,
        list: &MemberList,
        verifier: &dyn Verifier,
        rng: &mut impl CryptoRng,
    ) -> Result<ShareKeys, ClientError> {
        let State::Advertised { channel, mask } = &self.state else {
            return Err(self.wrong_round(Round::ShareKeys));
        };
        let t = self.config.threshold();
        let members = &list.members;
        let max = usize::from(self.config.cohort);
        if members.len() < t || members.len() > max {
            return Err(ClientError::CohortSize {
                got: members.len(),
                min: t,
                max,
            });
        }
        if !strictly_increasing(members.iter().map(|m| m.id)) {
            return Err(ClientError::NotSorted);
        }
        let me = members
            .binary_search_by_key(&self.id, |m| m.id)
            .map_err(|_| ClientError::NotListed)?;
        let own = &members[me].keys;
        if own.channel_pk != channel.public || own.mask_pk != mask.public {
            return Err(ClientError::NotListed);
        }
        let session = self.config.session;
        let mut identities = std::collections::HashSet::with_capacity(members.len());
        for m in members {
            let identity =
                attest::verify_keys(session, m.id, &m.keys, verifier).map_err(|error| {
                    ClientError::Unattested {
                        member: m.id,
                        error,
                    }
                })?;
            if !identities.insert(identity) {
                return Err(ClientError::DuplicateIdentity(m.id));
            }
        }

        let mut shared_channels = Vec::with_capacity(members.len() - 1);
        let mut pair_seeds = Vec::with_capacity(members.len() - 1);
        for m in members.iter().filter(|m| m.id != self.id) {
            let low = |_| ClientError::LowOrderKey(m.id);
            shared_channels.push(channel.agree(&m.keys.channel_pk).map_err(low)?);
            let s = mask.agree(&m.keys.mask_pk).map_err(low)?;
            pair_seeds.push((m.id, crypto::pair_seed(&s, session, self.id, m.id)));
        }

        let mut self_seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut self_seed[..]);
        let xs: Vec<u64> = members.iter().map(|m| shamir::x_of(m.id.0)).collect();
        let seed_shares = shamir::split(&self_seed, t, &xs, rng);
        let key_shares = shamir::split(&Zeroizing::new(mask.secret.to_bytes()), t, &xs, rng);

        let mut sealed = Vec::with_capacity(members.len() - 1);
        let others = members.iter().enumerate().filter(|(k, _)| *k != me);
        for ((k, m), shared) in others.zip(shared_channels.iter()) {
            let mut plain = Zeroizing::new([0u8; 2 * SHARE_BYTES]);
            plain[..SHARE_BYTES].copy_from_slice(&seed_shares[k].to_bytes()[..]);
            plain[SHARE_BYTES..].copy_from_slice(&key_shares[k].to_bytes()[..]);
            sealed.push(Sealed {
                peer: m.id,
                ciphertext: crypto::seal(shared, session, self.id, m.id, &plain[..]),
            });
        }

        self.state = State::Shared(Box::new(Shared {
            channel: channel.clone(),
            members: members.clone(),
            self_seed,
            own: (seed_shares[me].clone(), key_shares[me].clone()),
            pair_seeds,
        }));
        Ok(ShareKeys { sealed })
    }

    /// Round 2: opens the shares the other members of U2 sealed for this
    /// client, then masks `input`: y = x + PRG(b) + Σ_{j∈U2, j≠i} ±PRG(s_ij)
    /// (+ when i < j), mod 2³².
    pub fn masked_input(
        &mut self,
        shares: &SharesForYou,
        input: &[u32],
    ) -> Result<MaskedInput, ClientError> {
        let State::Shared(st) = &self.state else {
            return Err(self.wrong_round(Round::MaskedInput));
        };
        let want = self.config.dim as usize;
        if input.len() != want {
            return Err(ClientError::InputLength {
                got: input.len(),
                want,
            });
        }
        if !strictly_increasing(shares.sealed.iter().map(|s| s.peer)) {
            return Err(ClientError::NotSorted);
        }
        let t = self.config.threshold();
        if shares.sealed.len() + 1 < t {
            return Err(ClientError::TooFew {
                got: shares.sealed.len() + 1,
                need: t,
            });
        }
        let session = self.config.session;
        let mut held = Vec::with_capacity(shares.sealed.len() + 1);
        for s in &shares.sealed {
            let member = match st.members.binary_search_by_key(&s.peer, |m| m.id) {
                Ok(k) if s.peer != self.id => &st.members[k],
                _ => return Err(ClientError::UnknownSender(s.peer)),
            };
            if s.ciphertext.len() != CIPHERTEXT_LEN {
                return Err(ClientError::Decrypt(s.peer));
            }
            let shared = st
                .channel
                .agree(&member.keys.channel_pk)
                .map_err(|_| ClientError::LowOrderKey(s.peer))?;
            let plain = crypto::open(&shared, session, s.peer, self.id, &s.ciphertext)
                .ok_or(ClientError::Decrypt(s.peer))?;
            let seed = Share::from_bytes(&plain[..SHARE_BYTES]);
            let key = Share::from_bytes(&plain[SHARE_BYTES..]);
            let (Some(seed), Some(key)) = (seed, key) else {
                return Err(ClientError::Decrypt(s.peer));
            };
            held.push((s.peer, seed, key));
        }
        let at = held.partition_point(|(id, _, _)| *id < self.id);
        held.insert(at, (self.id, st.own.0.clone(), st.own.1.clone()));
        let u2: Vec<ClientId> = held.iter().map(|(id, _, _)| *id).collect();

        let mut masked = input.to_vec();
        crypto::apply_mask(&mut masked, &st.self_seed, Sign::Plus);
        for (j, seed) in &st.pair_seeds {
            if u2.binary_search(j).is_ok() {
                let sign = if self.id < *j {
                    Sign::Plus
                } else {
                    Sign::Minus
                };
                crypto::apply_mask(&mut masked, seed, sign);
            }
        }
        self.state = State::Masked(Box::new(Masked { u2, held }));
        Ok(MaskedInput { masked })
    }

    /// Round 3: checks the survivors U3 (at least t, all in U2, this client
    /// among them) and reveals its share of each survivor's self-mask seed
    /// and of each dropped member's mask key — never both for one member.
    pub fn unmask(&mut self, survivors: &Survivors) -> Result<UnmaskShares, ClientError> {
        let masked = match &self.state {
            State::Masked(m) => m,
            State::Unmasked {
                survivors: answered,
                answer,
            } => {
                return if *answered == survivors.survivors {
                    Ok(answer.clone())
                } else {
                    Err(ClientError::InconsistentSurvivors)
                };
            }
            _ => return Err(self.wrong_round(Round::Unmasking)),
        };
        let u3 = &survivors.survivors;
        if !strictly_increasing(u3.iter().copied()) {
            return Err(ClientError::NotSorted);
        }
        if let Some(&j) = u3.iter().find(|j| masked.u2.binary_search(j).is_err()) {
            return Err(ClientError::NotShared(j));
        }
        let t = self.config.threshold();
        if u3.len() < t {
            return Err(ClientError::TooFew {
                got: u3.len(),
                need: t,
            });
        }
        if u3.binary_search(&self.id).is_err() {
            return Err(ClientError::SelfDropped);
        }
        let mut answer = UnmaskShares {
            seed_shares: Vec::with_capacity(u3.len()),
            key_shares: Vec::with_capacity(masked.u2.len() - u3.len()),
        };
        for (owner, seed, key) in &masked.held {
            if u3.binary_search(owner).is_ok() {
                answer.seed_shares.push(HeldShare {
                    owner: *owner,
                    share: seed.clone(),
                });
            } else {
                answer.key_shares.push(HeldShare {
                    owner: *owner,
                    share: key.clone(),
                });
            }
        }
        // The held shares of the others are dropped (and zeroized) here.
        self.state = State::Unmasked {
            survivors: u3.clone(),
            answer: answer.clone(),
        };
        Ok(answer)
    }
}
