//! The server side (the node) of secure aggregation: collects each round's
//! messages, and when the caller closes the round (it decides how long to
//! wait) answers with the next round's messages; at the end, the sum of the
//! survivors' inputs.
//!
//! Every message is checked before it changes anything: a message for
//! another round, from a sender that is not in the round's set, a second one
//! from the same sender, or one of the wrong shape gets a [`ServerError`] and
//! leaves the server as it was. Closing a round with fewer than t messages
//! fails the same way, so the caller can wait longer or give up. Memory is
//! bounded by the configuration: at most n members, n·(n−1) ciphertexts of
//! [`CIPHERTEXT_LEN`] bytes in round 1, one running sum of D words in round
//! 2 (masked inputs are added as they arrive, not kept), and n answers of
//! at most n shares in round 3.

use std::collections::{BTreeMap, BTreeSet};

use super::crypto::{self, KeyPair, Sign, CIPHERTEXT_LEN};
use super::messages::{
    AdvertiseKeys, MaskedInput, MemberKeys, MemberList, Sealed, ShareKeys, SharesForYou, Survivors,
    ToServer, UnmaskShares,
};
use super::shamir::{self, Interpolation};
use super::{ClientId, Config, ConfigError, Round};

/// Why the server refuses a message or cannot close a round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// The message belongs to another round than the server's.
    #[error("message for round {got:?} while in round {at:?}")]
    WrongRound {
        /// The round the message belongs to.
        got: Round,
        /// The server's round.
        at: Round,
    },
    /// The cohort already has n members.
    #[error("cohort is full")]
    Full,
    /// The sender already sent this round's message.
    #[error("{0} already sent this round's message")]
    Duplicate(ClientId),
    /// The sender is not in the set this round expects messages from.
    #[error("{0} is not expected in this round")]
    NotExpected(ClientId),
    /// The round cannot close (or the sum cannot be unmasked) with fewer
    /// messages than the threshold.
    #[error("{got} messages, {need} needed")]
    TooFew {
        /// Messages received.
        got: usize,
        /// The threshold.
        need: usize,
    },
    /// A client's ciphertexts are not exactly one for every other member,
    /// sorted, each of [`CIPHERTEXT_LEN`] bytes.
    #[error("ciphertexts from {0} are not one per other member of the right length")]
    Addressees(ClientId),
    /// A masked input has another length than the configured dimension.
    #[error("masked input of {got} entries from {from}, expected {want}")]
    InputLength {
        /// The sender.
        from: ClientId,
        /// Entries received.
        got: usize,
        /// The configured dimension.
        want: usize,
    },
    /// An unmasking answer does not hold exactly one valid seed share per
    /// survivor and one key share per dropped member, sorted.
    #[error("unmasking answer from {0} does not match the survivors")]
    ShareList(ClientId),
    /// This member's secret could not be rebuilt from the answers (the
    /// shares are inconsistent, or the rebuilt mask key does not match the
    /// advertised one).
    #[error("the secret of {0} could not be rebuilt")]
    Reconstruction(ClientId),
    /// A member's mask key is of small order.
    #[error("member {0} advertised a small-order key")]
    LowOrderKey(ClientId),
}

/// The outcome of a session: the sum of U3's inputs, and U3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// Σ_{i∈U3} x_i, entry by entry, mod 2³².
    pub sum: Vec<u32>,
    /// U3: whose inputs are in the sum, sorted.
    pub survivors: Vec<ClientId>,
}

/// The node's side of one secure aggregation session.
pub struct Server {
    config: Config,
    state: State,
}

enum State {
    Keys(BTreeMap<ClientId, AdvertiseKeys>),
    Shares {
        members: Vec<MemberKeys>,
        received: BTreeMap<ClientId, Vec<Sealed>>,
    },
    Inputs {
        members: Vec<MemberKeys>,
        u2: Vec<ClientId>,
        received: BTreeSet<ClientId>,
        sum: Vec<u32>,
    },
    Unmask {
        members: Vec<MemberKeys>,
        u2: Vec<ClientId>,
        u3: Vec<ClientId>,
        sum: Vec<u32>,
        answers: BTreeMap<ClientId, UnmaskShares>,
    },
    Done,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("round", &self.round())
            .finish_non_exhaustive()
    }
}

fn member(members: &[MemberKeys], id: ClientId) -> Option<&MemberKeys> {
    members
        .binary_search_by_key(&id, |m| m.id)
        .ok()
        .map(|k| &members[k])
}

fn too_few(got: usize, config: &Config) -> Result<(), ServerError> {
    let need = config.threshold();
    if got < need {
        return Err(ServerError::TooFew { got, need });
    }
    Ok(())
}

impl Server {
    /// A server for one session, waiting for round-0 keys.
    pub fn new(config: Config) -> Result<Server, ConfigError> {
        config.validate()?;
        Ok(Server {
            config,
            state: State::Keys(BTreeMap::new()),
        })
    }

    /// The round whose messages the server collects.
    pub fn round(&self) -> Round {
        match self.state {
            State::Keys(_) => Round::AdvertiseKeys,
            State::Shares { .. } => Round::ShareKeys,
            State::Inputs { .. } => Round::MaskedInput,
            State::Unmask { .. } => Round::Unmasking,
            State::Done => Round::Done,
        }
    }

    fn wrong_round(&self, got: Round) -> ServerError {
        ServerError::WrongRound {
            got,
            at: self.round(),
        }
    }

    /// Takes any client message from `from` (as the transport authenticated
    /// it).
    pub fn receive(&mut self, from: ClientId, msg: ToServer) -> Result<(), ServerError> {
        match msg {
            ToServer::AdvertiseKeys(m) => self.receive_keys(from, m),
            ToServer::ShareKeys(m) => self.receive_shares(from, m),
            ToServer::MaskedInput(m) => self.receive_input(from, m),
            ToServer::Unmask(m) => self.receive_unmask(from, m),
        }
    }

    /// Round 0: a client's public keys; it joins U1 if there is room.
    pub fn receive_keys(&mut self, from: ClientId, msg: AdvertiseKeys) -> Result<(), ServerError> {
        let State::Keys(keys) = &mut self.state else {
            return Err(self.wrong_round(Round::AdvertiseKeys));
        };
        if keys.contains_key(&from) {
            return Err(ServerError::Duplicate(from));
        }
        if keys.len() >= usize::from(self.config.cohort) {
            return Err(ServerError::Full);
        }
        // Every client would refuse a member list with such a key, so one
        // such advertisement would stop the whole session.
        if crypto::is_low_order(&msg.channel_pk) || crypto::is_low_order(&msg.mask_pk) {
            return Err(ServerError::LowOrderKey(from));
        }
        keys.insert(from, msg);
        Ok(())
    }

    /// Ends round 0: U1 is everyone whose keys arrived (at least t). The
    /// returned list goes to every member of U1.
    pub fn close_keys(&mut self) -> Result<MemberList, ServerError> {
        let State::Keys(keys) = &mut self.state else {
            return Err(self.wrong_round(Round::AdvertiseKeys));
        };
        too_few(keys.len(), &self.config)?;
        let members: Vec<MemberKeys> = std::mem::take(keys)
            .into_iter()
            .map(|(id, keys)| MemberKeys { id, keys })
            .collect();
        self.state = State::Shares {
            members: members.clone(),
            received: BTreeMap::new(),
        };
        Ok(MemberList { members })
    }

    /// Round 1: a member's sealed shares, one for every other member of U1.
    pub fn receive_shares(&mut self, from: ClientId, msg: ShareKeys) -> Result<(), ServerError> {
        let State::Shares { members, received } = &mut self.state else {
            return Err(self.wrong_round(Round::ShareKeys));
        };
        if member(members, from).is_none() {
            return Err(ServerError::NotExpected(from));
        }
        if received.contains_key(&from) {
            return Err(ServerError::Duplicate(from));
        }
        let mut others = members.iter().map(|m| m.id).filter(|&id| id != from);
        let exact = msg.sealed.len() + 1 == members.len()
            && msg
                .sealed
                .iter()
                .all(|s| others.next() == Some(s.peer) && s.ciphertext.len() == CIPHERTEXT_LEN);
        if !exact {
            return Err(ServerError::Addressees(from));
        }
        received.insert(from, msg.sealed);
        Ok(())
    }

    /// Ends round 1: U2 is the members whose shares arrived (at least t).
    /// Returns, for each member of U2, what the other members of U2 sealed
    /// for it.
    pub fn close_shares(&mut self) -> Result<Vec<(ClientId, SharesForYou)>, ServerError> {
        let State::Shares { members, received } = &mut self.state else {
            return Err(self.wrong_round(Round::ShareKeys));
        };
        too_few(received.len(), &self.config)?;
        let received = std::mem::take(received);
        let u2: Vec<ClientId> = received.keys().copied().collect();
        let mut out: Vec<(ClientId, SharesForYou)> = u2
            .iter()
            .map(|&id| {
                (
                    id,
                    SharesForYou {
                        sealed: Vec::with_capacity(u2.len() - 1),
                    },
                )
            })
            .collect();
        // Senders in increasing order, so every inbox ends up sorted.
        for (sender, sealed) in received {
            for s in sealed {
                if let Ok(k) = u2.binary_search(&s.peer) {
                    out[k].1.sealed.push(Sealed {
                        peer: sender,
                        ciphertext: s.ciphertext,
                    });
                }
            }
        }
        self.state = State::Inputs {
            members: std::mem::take(members),
            u2,
            received: BTreeSet::new(),
            sum: vec![0; self.config.dim as usize],
        };
        Ok(out)
    }

    /// Round 2: a member of U2's masked input, added to the running sum.
    pub fn receive_input(&mut self, from: ClientId, msg: MaskedInput) -> Result<(), ServerError> {
        let State::Inputs {
            u2, received, sum, ..
        } = &mut self.state
        else {
            return Err(self.wrong_round(Round::MaskedInput));
        };
        if u2.binary_search(&from).is_err() {
            return Err(ServerError::NotExpected(from));
        }
        if received.contains(&from) {
            return Err(ServerError::Duplicate(from));
        }
        if msg.masked.len() != sum.len() {
            return Err(ServerError::InputLength {
                from,
                got: msg.masked.len(),
                want: sum.len(),
            });
        }
        for (acc, y) in sum.iter_mut().zip(msg.masked) {
            *acc = acc.wrapping_add(y);
        }
        received.insert(from);
        Ok(())
    }

    /// Ends round 2: U3 is the members whose masked input arrived (at least
    /// t); later inputs are refused. The list goes to every member of U3.
    pub fn close_inputs(&mut self) -> Result<Survivors, ServerError> {
        let State::Inputs {
            members,
            u2,
            received,
            sum,
        } = &mut self.state
        else {
            return Err(self.wrong_round(Round::MaskedInput));
        };
        too_few(received.len(), &self.config)?;
        let u3: Vec<ClientId> = std::mem::take(received).into_iter().collect();
        self.state = State::Unmask {
            members: std::mem::take(members),
            u2: std::mem::take(u2),
            u3: u3.clone(),
            sum: std::mem::take(sum),
            answers: BTreeMap::new(),
        };
        Ok(Survivors { survivors: u3 })
    }

    /// Round 3: a survivor's shares of the survivors' seeds and the dropped
    /// members' mask keys.
    pub fn receive_unmask(&mut self, from: ClientId, msg: UnmaskShares) -> Result<(), ServerError> {
        let State::Unmask {
            u2, u3, answers, ..
        } = &mut self.state
        else {
            return Err(self.wrong_round(Round::Unmasking));
        };
        if u3.binary_search(&from).is_err() {
            return Err(ServerError::NotExpected(from));
        }
        if answers.contains_key(&from) {
            return Err(ServerError::Duplicate(from));
        }
        let dropped = u2.iter().filter(|id| u3.binary_search(id).is_err());
        let seeds_ok = msg.seed_shares.len() == u3.len()
            && msg
                .seed_shares
                .iter()
                .zip(u3.iter())
                .all(|(s, id)| s.owner == *id && s.share.is_valid());
        let keys_ok = msg.key_shares.len() == u2.len() - u3.len()
            && msg
                .key_shares
                .iter()
                .zip(dropped)
                .all(|(s, id)| s.owner == *id && s.share.is_valid());
        if !(seeds_ok && keys_ok) {
            return Err(ServerError::ShareList(from));
        }
        answers.insert(from, msg);
        Ok(())
    }

    /// Ends the session: from the answers of at least t survivors rebuilds
    /// each survivor's self-mask seed and each dropped member's mask key,
    /// removes the self masks and the dropped members' pair masks, and
    /// returns the sum of U3's inputs.
    pub fn finish(&mut self) -> Result<Aggregate, ServerError> {
        let State::Unmask {
            members,
            u2,
            u3,
            sum,
            answers,
        } = &self.state
        else {
            return Err(self.wrong_round(Round::Unmasking));
        };
        too_few(answers.len(), &self.config)?;
        let t = self.config.threshold();
        // Any t answers rebuild every secret; the first t by id are used.
        let used: Vec<&UnmaskShares> = answers.values().take(t).collect();
        let xs: Vec<u64> = answers
            .keys()
            .take(t)
            .map(|id| shamir::x_of(id.0))
            .collect();
        let interp = Interpolation::new(&xs, t).map_err(|_| ServerError::TooFew {
            got: answers.len(),
            need: t,
        })?;
        let session = self.config.session;
        let mut total = sum.clone();

        for (k, &j) in u3.iter().enumerate() {
            let seed = interp
                .secret(used.iter().map(|a| &a.seed_shares[k].share))
                .map_err(|_| ServerError::Reconstruction(j))?;
            crypto::apply_mask(&mut total, &seed, Sign::Minus);
        }

        let dropped = u2.iter().filter(|id| u3.binary_search(id).is_err());
        for (k, &j) in dropped.enumerate() {
            let secret = interp
                .secret(used.iter().map(|a| &a.key_shares[k].share))
                .map_err(|_| ServerError::Reconstruction(j))?;
            let key = KeyPair::from_secret_bytes(&secret);
            match member(members, j) {
                Some(m) if m.keys.mask_pk == key.public => {}
                _ => return Err(ServerError::Reconstruction(j)),
            }
            for &i in u3 {
                let peer = member(members, i).ok_or(ServerError::NotExpected(i))?;
                let shared = key
                    .agree(&peer.keys.mask_pk)
                    .map_err(|_| ServerError::LowOrderKey(i))?;
                let seed = crypto::pair_seed(&shared, session, i, j);
                // Survivor i added +PRG(s_ij) if i < j, −PRG(s_ij) otherwise.
                let sign = if i < j { Sign::Minus } else { Sign::Plus };
                crypto::apply_mask(&mut total, &seed, sign);
            }
        }

        let survivors = u3.clone();
        self.state = State::Done;
        Ok(Aggregate {
            sum: total,
            survivors,
        })
    }
}
