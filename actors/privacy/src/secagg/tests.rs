//! Whole sessions of clients and a server, with dropouts, tampering and
//! hostile messages.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::attest::testing::Registry;
use super::*;

/// The trusted identities of every test (each client gets a fresh one).
fn pki() -> &'static Registry {
    static PKI: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    PKI.get_or_init(Registry::new)
}

/// Keys as member `id` of `session` advertises them, signed by a fresh
/// trusted `identity`.
fn signed_keys(
    session: u64,
    id: ClientId,
    channel_pk: [u8; 32],
    mask_pk: [u8; 32],
    identity: &str,
) -> AdvertiseKeys {
    let statement = attest::statement(session, id, &channel_pk, &mask_pk);
    let attestation = pki()
        .attestor(identity, true)
        .attest(&statement)
        .expect("sign");
    AdvertiseKeys {
        channel_pk,
        mask_pk,
        attestation,
    }
}

/// `n` clients (ids from [`ids`]) and the member list of their keys.
fn listed(cfg: Config, n: usize, rng: &mut ChaCha20Rng) -> (Vec<Client>, MemberList) {
    let mut list = MemberList {
        members: Vec::new(),
    };
    let mut clients = Vec::new();
    for id in ids(n) {
        let (c, keys) = new_client(cfg, id, rng).expect("config");
        list.members.push(MemberKeys { id, keys });
        clients.push(c);
    }
    (clients, list)
}

/// A client for member `id` with a fresh trusted identity.
fn new_client(
    cfg: Config,
    id: ClientId,
    rng: &mut ChaCha20Rng,
) -> Result<(Client, AdvertiseKeys), ClientError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let attestor = pki().attestor(&format!("tv-{n}"), true);
    Client::new(cfg, id, &attestor, rng)
}

fn config(cohort: u16, threshold: u16, dim: u32) -> Config {
    Config {
        session: 42,
        cohort,
        threshold,
        dim,
    }
}

/// Who leaves when: clients that never send round-1 shares, that never send
/// a masked input, and that never answer round 3.
#[derive(Default, Clone)]
struct Drops {
    before_shares: Vec<ClientId>,
    before_input: Vec<ClientId>,
    before_unmask: Vec<ClientId>,
}

struct Outcome {
    result: Result<Aggregate, ServerError>,
    mask_time: Duration,
    finish_time: Duration,
}

/// Member ids are spread out (3k + 1) so that nothing relies on 0..n.
fn ids(n: usize) -> Vec<ClientId> {
    (0..n as u32).map(|k| ClientId(3 * k + 1)).collect()
}

fn inputs(n: usize, dim: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..dim).map(|_| rand::Rng::random(&mut rng)).collect())
        .collect()
}

fn expected_sum(inputs: &[Vec<u32>], ids: &[ClientId], survivors: &[ClientId]) -> Vec<u32> {
    let mut sum = vec![0u32; inputs[0].len()];
    for (x, id) in inputs.iter().zip(ids) {
        if survivors.contains(id) {
            for (s, v) in sum.iter_mut().zip(x) {
                *s = s.wrapping_add(*v);
            }
        }
    }
    sum
}

/// Messages from clients, with their senders.
type Outbox = Vec<(ClientId, ToServer)>;

/// A cohort of honest clients (ids from [`ids`]) with their inputs; each
/// step answers a server message with every client's reply, which the test
/// delivers, drops or alters.
struct Cohort {
    rng: ChaCha20Rng,
    clients: BTreeMap<ClientId, Client>,
    inputs: BTreeMap<ClientId, Vec<u32>>,
}

impl Cohort {
    /// The clients and their round-0 keys.
    fn new(cfg: Config, inputs: &[Vec<u32>], seed: u64) -> (Cohort, Outbox) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut clients = BTreeMap::new();
        let mut keys = Vec::new();
        for id in ids(inputs.len()) {
            let (c, k) = new_client(cfg, id, &mut rng).expect("config");
            clients.insert(id, c);
            keys.push((id, ToServer::AdvertiseKeys(k)));
        }
        let inputs = ids(inputs.len()).into_iter().zip(inputs.to_vec()).collect();
        let cohort = Cohort {
            rng,
            clients,
            inputs,
        };
        (cohort, keys)
    }

    fn client(&mut self, id: ClientId) -> &mut Client {
        self.clients.get_mut(&id).expect("a member")
    }

    fn share(&mut self, list: &MemberList) -> Outbox {
        let rng = &mut self.rng;
        self.clients
            .iter_mut()
            .map(|(id, c)| {
                let m = c.share_keys(list, pki(), rng).expect("share");
                (*id, ToServer::ShareKeys(m))
            })
            .collect()
    }

    /// Masked inputs, and the slowest client's masking time.
    fn mask(&mut self, inboxes: Vec<(ClientId, SharesForYou)>) -> (Outbox, Duration) {
        let mut slowest = Duration::ZERO;
        let mut out = Vec::new();
        for (id, inbox) in inboxes {
            let x = self.inputs[&id].clone();
            let start = Instant::now();
            let y = self.client(id).masked_input(&inbox, &x).expect("mask");
            slowest = slowest.max(start.elapsed());
            out.push((id, ToServer::MaskedInput(y)));
        }
        (out, slowest)
    }

    fn unmask(&mut self, survivors: &Survivors) -> Outbox {
        survivors
            .survivors
            .iter()
            .map(|&id| {
                let a = self.client(id).unmask(survivors).expect("unmask");
                (id, ToServer::Unmask(a))
            })
            .collect()
    }
}

/// Hands every message to the server except those from `dropped`.
fn deliver(server: &mut Server, outbox: Outbox, dropped: &[ClientId]) {
    for (id, m) in outbox {
        if !dropped.contains(&id) {
            server.receive(id, m).expect("an honest message");
        }
    }
}

fn run(cfg: Config, inputs: &[Vec<u32>], drops: &Drops, seed: u64) -> Outcome {
    let (mut cohort, keys) = Cohort::new(cfg, inputs, seed);
    let mut server = Server::new(cfg).expect("config");
    deliver(&mut server, keys, &[]);
    let shares = cohort.share(&server.close_keys().expect("U1"));
    deliver(&mut server, shares, &drops.before_shares);
    let (masked, mask_time) = cohort.mask(server.close_shares().expect("U2"));
    deliver(&mut server, masked, &drops.before_input);
    let survivors = match server.close_inputs() {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                result: Err(e),
                mask_time,
                finish_time: Duration::ZERO,
            }
        }
    };
    deliver(&mut server, cohort.unmask(&survivors), &drops.before_unmask);
    let start = Instant::now();
    let result = server.finish();
    Outcome {
        result,
        mask_time,
        finish_time: start.elapsed(),
    }
}

#[test]
fn sum_is_exact_without_dropouts() {
    let cfg = config(7, 4, 33);
    let x = inputs(7, 33, 1);
    let out = run(cfg, &x, &Drops::default(), 2).result.expect("sum");
    assert_eq!(out.survivors, ids(7));
    assert_eq!(out.sum, expected_sum(&x, &ids(7), &ids(7)));
}

#[test]
fn signed_values_wrap_and_come_back() {
    let cfg = config(3, 2, 4);
    let x: Vec<Vec<u32>> = [[-5i64, 7, 0, -1], [2, -9, 1, -1], [-1, 1, 3, -1]]
        .iter()
        .map(|v| super::to_ring(v))
        .collect();
    let out = run(cfg, &x, &Drops::default(), 3).result.expect("sum");
    let back = super::from_ring(&out.sum);
    assert_eq!(back, vec![-4, -1, 4, -3]);
}

#[test]
fn survivors_sum_is_exact_with_dropouts_in_every_round() {
    let cfg = config(10, 6, 50);
    let x = inputs(10, 50, 4);
    let all = ids(10);
    // n − t = 4 drop out after round 1: at the most U3 can lose.
    let drops = Drops {
        before_input: vec![all[0], all[4], all[5], all[9]],
        ..Drops::default()
    };
    let out = run(cfg, &x, &drops, 5).result.expect("sum");
    let u3: Vec<ClientId> = all
        .iter()
        .copied()
        .filter(|id| !drops.before_input.contains(id))
        .collect();
    assert_eq!(out.survivors, u3);
    assert_eq!(out.sum, expected_sum(&x, &all, &u3));

    // Mixed: one leaves before sharing, two before their input, one
    // survivor does not answer round 3.
    let drops = Drops {
        before_shares: vec![all[2]],
        before_input: vec![all[3], all[7]],
        before_unmask: vec![all[8]],
    };
    let out = run(cfg, &x, &drops, 6).result.expect("sum");
    let u3: Vec<ClientId> = all
        .iter()
        .copied()
        .filter(|id| ![all[2], all[3], all[7]].contains(id))
        .collect();
    assert_eq!(out.survivors, u3);
    assert_eq!(out.sum, expected_sum(&x, &all, &u3));
}

#[test]
fn fewer_than_t_survivors_fail() {
    let cfg = config(5, 3, 8);
    let x = inputs(5, 8, 7);
    let all = ids(5);
    let drops = Drops {
        before_input: vec![all[0], all[1], all[2]],
        ..Drops::default()
    };
    let out = run(cfg, &x, &drops, 8);
    assert_eq!(out.result, Err(ServerError::TooFew { got: 2, need: 3 }));

    // Enough survivors but too few answers: fails, then succeeds once one
    // more answer arrives (the server stays usable).
    let drops = Drops {
        before_unmask: vec![all[1], all[3], all[4]],
        ..Drops::default()
    };
    let out = run(cfg, &x, &drops, 9);
    assert_eq!(out.result, Err(ServerError::TooFew { got: 2, need: 3 }));
}

/// One session driven up to the end of round 2, for the tests that poke
/// at single steps.
struct Session {
    server: Server,
    cohort: Cohort,
    survivors: Survivors,
    masked: BTreeMap<ClientId, MaskedInput>,
}

fn session_to_unmasking(cfg: Config, x: &[Vec<u32>], seed: u64) -> Session {
    let (mut cohort, keys) = Cohort::new(cfg, x, seed);
    let mut server = Server::new(cfg).expect("config");
    deliver(&mut server, keys, &[]);
    let shares = cohort.share(&server.close_keys().expect("U1"));
    deliver(&mut server, shares, &[]);
    let (outbox, _) = cohort.mask(server.close_shares().expect("U2"));
    let masked = outbox
        .iter()
        .filter_map(|(id, m)| match m {
            ToServer::MaskedInput(y) => Some((*id, y.clone())),
            _ => None,
        })
        .collect();
    deliver(&mut server, outbox, &[]);
    let survivors = server.close_inputs().expect("U3");
    Session {
        server,
        cohort,
        survivors,
        masked,
    }
}

#[test]
fn finish_waits_for_t_answers_then_succeeds() {
    let cfg = config(5, 3, 8);
    let x = inputs(5, 8, 10);
    let mut s = session_to_unmasking(cfg, &x, 11);
    let order: Vec<ClientId> = s.survivors.survivors.clone();
    for (n, id) in order.iter().enumerate() {
        let a = s.cohort.client(*id).unmask(&s.survivors).expect("answer");
        s.server.receive_unmask(*id, a).expect("answer");
        if n + 1 < 3 {
            assert_eq!(
                s.server.finish(),
                Err(ServerError::TooFew {
                    got: n + 1,
                    need: 3
                })
            );
        } else {
            break;
        }
    }
    let out = s.server.finish().expect("sum");
    assert_eq!(out.sum, expected_sum(&x, &ids(5), &order));
    assert_eq!(s.server.round(), Round::Done);
    assert!(matches!(
        s.server.finish(),
        Err(ServerError::WrongRound { .. })
    ));
}

#[test]
fn a_masked_input_looks_uniform() {
    let cfg = config(3, 2, 4096);
    let zeros = vec![vec![0u32; 4096]; 3];
    let a = session_to_unmasking(cfg, &zeros, 12).masked;
    let b = session_to_unmasking(cfg, &zeros, 13).masked;
    let id = ids(3)[1];
    let (ya, yb) = (&a[&id].masked, &b[&id].masked);
    assert_ne!(ya, yb, "same input, another session: another mask");
    assert!(ya.iter().filter(|&&v| v == 0).count() < 3);
    assert!(ya.iter().zip(yb).filter(|(p, q)| p == q).count() < 3);
    // Every bit is set in about half the entries (σ ≈ 0.008 at 4096).
    for bit in 0..32 {
        let ones = ya.iter().filter(|&&v| v >> bit & 1 == 1).count();
        let frac = ones as f64 / 4096.0;
        assert!((0.45..0.55).contains(&frac), "bit {bit}: {frac}");
    }
}

#[test]
fn a_client_never_reveals_both_secrets_of_one_member() {
    let cfg = config(5, 3, 8);
    let x = inputs(5, 8, 14);
    let mut s = session_to_unmasking(cfg, &x, 15);
    let all = ids(5);
    let client = s.cohort.client(all[0]);
    // Not a subset of U2, too few, or without this client: refused.
    let bad = [
        (
            vec![all[0], all[1], ClientId(5)],
            ClientError::NotShared(ClientId(5)),
        ),
        (
            vec![all[0], all[1]],
            ClientError::TooFew { got: 2, need: 3 },
        ),
        (vec![all[1], all[2], all[3]], ClientError::SelfDropped),
        (vec![all[1], all[0], all[2]], ClientError::NotSorted),
    ];
    for (u3, err) in bad {
        assert_eq!(client.unmask(&Survivors { survivors: u3 }), Err(err));
    }
    let first = Survivors {
        survivors: vec![all[0], all[1], all[2], all[3]],
    };
    let answer = client.unmask(&first).expect("answer");
    assert_eq!(answer.seed_shares.len(), 4);
    assert_eq!(answer.key_shares.len(), 1);
    assert_eq!(answer.key_shares[0].owner, all[4]);
    // Asking again with the same survivors gets the same answer; with
    // others (all[3] now "dropped": its key share after its seed share)
    // it is refused.
    assert_eq!(client.unmask(&first), Ok(answer));
    let second = Survivors {
        survivors: vec![all[0], all[1], all[2]],
    };
    assert_eq!(
        client.unmask(&second),
        Err(ClientError::InconsistentSurvivors)
    );
    assert_eq!(client.round(), Round::Done);
}

#[test]
fn tampered_or_misaddressed_ciphertexts_are_rejected() {
    let cfg = config(4, 3, 16);
    let x = inputs(4, 16, 16);
    let all = ids(4);
    let (mut cohort, keys) = Cohort::new(cfg, &x, 17);
    let mut server = Server::new(cfg).expect("config");
    deliver(&mut server, keys, &[]);
    let shares = cohort.share(&server.close_keys().expect("U1"));
    deliver(&mut server, shares, &[]);
    let inboxes: BTreeMap<ClientId, SharesForYou> =
        server.close_shares().expect("U2").into_iter().collect();
    let victim = all[2];
    let inbox = &inboxes[&victim];

    let mut flipped = inbox.clone();
    flipped.sealed[1].ciphertext[5] ^= 0x10;
    let from = flipped.sealed[1].peer;
    let client = cohort.client(victim);
    assert_eq!(
        client.masked_input(&flipped, &x[2]),
        Err(ClientError::Decrypt(from))
    );
    // Another member's ciphertext relabelled as coming from someone else.
    let mut relabelled = inbox.clone();
    let c0 = relabelled.sealed[0].ciphertext.clone();
    relabelled.sealed[0].ciphertext = relabelled.sealed[1].ciphertext.clone();
    relabelled.sealed[1].ciphertext = c0;
    assert!(matches!(
        client.masked_input(&relabelled, &x[2]),
        Err(ClientError::Decrypt(_))
    ));
    // What another member received, delivered to the victim.
    let mut misaddressed = inbox.clone();
    misaddressed.sealed[0] = inboxes[&all[3]].sealed[0].clone();
    assert!(matches!(
        client.masked_input(&misaddressed, &x[2]),
        Err(ClientError::Decrypt(_))
    ));
    let mut short = inbox.clone();
    short.sealed[0].ciphertext.pop();
    assert!(matches!(
        client.masked_input(&short, &x[2]),
        Err(ClientError::Decrypt(_))
    ));
    let mut stranger = inbox.clone();
    stranger.sealed[0].peer = ClientId(1000);
    stranger.sealed.sort_by_key(|s| s.peer);
    assert_eq!(
        client.masked_input(&stranger, &x[2]),
        Err(ClientError::UnknownSender(ClientId(1000)))
    );
    assert_eq!(
        client.masked_input(inbox, &x[2][..3]),
        Err(ClientError::InputLength { got: 3, want: 16 })
    );
    // None of that moved the client on: the genuine inbox still works and
    // the session ends with the exact sum.
    assert_eq!(client.round(), Round::MaskedInput);
    let (masked, _) = cohort.mask(inboxes.into_iter().collect());
    deliver(&mut server, masked, &[]);
    let answers = cohort.unmask(&server.close_inputs().expect("U3"));
    deliver(&mut server, answers, &[]);
    assert_eq!(
        server.finish().expect("sum").sum,
        expected_sum(&x, &all, &all)
    );
}

#[test]
fn clients_check_the_member_list() {
    let cfg = config(5, 3, 4);
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    let (mut clients, list) = listed(cfg, 4, &mut rng);
    let c = &mut clients[0];
    let me = c.id();

    let mut small = list.clone();
    small.members.truncate(2);
    assert!(matches!(
        c.share_keys(&small, pki(), &mut rng),
        Err(ClientError::CohortSize { got: 2, .. })
    ));
    let mut unsorted = list.clone();
    unsorted.members.swap(1, 2);
    assert_eq!(
        c.share_keys(&unsorted, pki(), &mut rng),
        Err(ClientError::NotSorted)
    );
    let mut dup = list.clone();
    dup.members[2] = dup.members[1].clone();
    assert_eq!(
        c.share_keys(&dup, pki(), &mut rng),
        Err(ClientError::NotSorted)
    );
    let mut without = list.clone();
    without.members.remove(0);
    assert_eq!(
        c.share_keys(&without, pki(), &mut rng),
        Err(ClientError::NotListed)
    );
    let mut swapped_keys = list.clone();
    swapped_keys.members[0].keys.mask_pk = swapped_keys.members[1].keys.mask_pk;
    assert_eq!(
        c.share_keys(&swapped_keys, pki(), &mut rng),
        Err(ClientError::NotListed)
    );
    // A small-order key, properly signed: refused for what it is.
    let mut low = list.clone();
    let low_id = low.members[3].id;
    low.members[3].keys = signed_keys(42, low_id, [9; 32], [0; 32], "tv-low");
    assert_eq!(
        c.share_keys(&low, pki(), &mut rng),
        Err(ClientError::LowOrderKey(low_id))
    );
    // Wrong rounds before and after.
    assert!(matches!(
        c.masked_input(&SharesForYou { sealed: vec![] }, &[0; 4]),
        Err(ClientError::WrongRound { .. })
    ));
    let msg = c.share_keys(&list, pki(), &mut rng).expect("valid list");
    assert_eq!(msg.sealed.len(), 3);
    assert!(msg.sealed.iter().all(|s| s.peer != me));
    assert!(matches!(
        c.share_keys(&list, pki(), &mut rng),
        Err(ClientError::WrongRound { .. })
    ));
}

#[test]
fn clients_refuse_members_without_a_trusted_attestation() {
    let cfg = config(5, 3, 4);
    let mut rng = ChaCha20Rng::seed_from_u64(19);
    let (mut clients, list) = listed(cfg, 4, &mut rng);
    let c = &mut clients[0];
    let other = list.members[2].id;
    let unattested = |r: Result<ShareKeys, ClientError>| match r {
        Err(ClientError::Unattested { member, error }) => Some((member, error)),
        _ => None,
    };

    // A member the server made up: keys signed by an identity nobody issued.
    let mut invented = list.clone();
    let statement = attest::statement(42, other, &[7; 32], &[8; 32]);
    invented.members[2].keys = AdvertiseKeys {
        channel_pk: [7; 32],
        mask_pk: [8; 32],
        attestation: pki()
            .attestor("made-up", false)
            .attest(&statement)
            .expect("sign"),
    };
    let (member, error) = unattested(c.share_keys(&invented, pki(), &mut rng)).expect("refused");
    assert_eq!(member, other);
    assert!(matches!(error, AttestError::Credential(_)), "{error:?}");

    // A real member's attestation over keys the server swapped in.
    let mut swapped = list.clone();
    swapped.members[2].keys.mask_pk = [5; 32];
    assert_eq!(
        unattested(c.share_keys(&swapped, pki(), &mut rng)),
        Some((other, AttestError::Signature))
    );

    // Keys signed for another session, or for another member id.
    let k = &list.members[2].keys;
    for (session, id) in [(43, other), (42, ClientId(999))] {
        let mut replayed = list.clone();
        replayed.members[2].keys.attestation =
            signed_keys(session, id, k.channel_pk, k.mask_pk, "tv-replay").attestation;
        assert_eq!(
            unattested(c.share_keys(&replayed, pki(), &mut rng)),
            Some((other, AttestError::Signature))
        );
    }

    // One identity behind two member ids (a Sybil from one credential).
    let mut twice = list.clone();
    let twin = pki().attestor("tv-twice", true);
    for k in [2, 3] {
        let (id, channel_pk, mask_pk) = (list.members[k].id, [k as u8; 32], [k as u8 + 10; 32]);
        twice.members[k].keys = AdvertiseKeys {
            channel_pk,
            mask_pk,
            attestation: twin
                .attest(&attest::statement(42, id, &channel_pk, &mask_pk))
                .expect("sign"),
        };
    }
    assert_eq!(
        c.share_keys(&twice, pki(), &mut rng),
        Err(ClientError::DuplicateIdentity(list.members[3].id))
    );

    // An oversized credential costs no verification.
    let mut big = list.clone();
    big.members[2].keys.attestation.credential = vec![0; attest::MAX_CREDENTIAL_BYTES + 1];
    assert_eq!(
        unattested(c.share_keys(&big, pki(), &mut rng)),
        Some((
            other,
            AttestError::TooLarge(attest::MAX_CREDENTIAL_BYTES + 1)
        ))
    );

    // Nothing was revealed: the client still takes the honest list.
    let msg = c.share_keys(&list, pki(), &mut rng).expect("valid list");
    assert_eq!(msg.sealed.len(), 3);
}

#[test]
fn the_server_refuses_small_order_keys_and_a_full_cohort() {
    let mut server = Server::new(config(3, 2, 1)).expect("config");
    let mut rng = ChaCha20Rng::seed_from_u64(23);
    let (_, good) = new_client(config(3, 2, 1), ClientId(0), &mut rng).expect("config");
    let bad = AdvertiseKeys {
        mask_pk: [0; 32],
        ..good.clone()
    };
    assert_eq!(
        server.receive_keys(ClientId(9), bad),
        Err(ServerError::LowOrderKey(ClientId(9)))
    );
    for id in 0..3 {
        server
            .receive_keys(ClientId(id), good.clone())
            .expect("room");
    }
    assert_eq!(
        server.receive_keys(ClientId(0), good.clone()),
        Err(ServerError::Duplicate(ClientId(0)))
    );
    assert_eq!(
        server.receive_keys(ClientId(3), good),
        Err(ServerError::Full)
    );
    assert_eq!(server.close_keys().expect("U1").members.len(), 3);
}

#[test]
fn configs_are_validated() {
    assert_eq!(config(5, 3, 1).validate(), Ok(()));
    assert_eq!(config(1000, 501, MAX_DIM).validate(), Ok(()));
    assert_eq!(config(1, 1, 1).validate(), Err(ConfigError::Cohort(1)));
    assert_eq!(
        config(1001, 600, 1).validate(),
        Err(ConfigError::Cohort(1001))
    );
    for (n, t) in [(4, 2), (5, 2), (5, 6), (3, 1)] {
        assert_eq!(
            config(n, t, 1).validate(),
            Err(ConfigError::Threshold {
                threshold: t,
                cohort: n
            })
        );
    }
    assert_eq!(config(5, 3, 0).validate(), Err(ConfigError::Dim(0)));
    assert_eq!(
        config(5, 3, MAX_DIM + 1).validate(),
        Err(ConfigError::Dim(MAX_DIM + 1))
    );
    assert!(Server::new(config(4, 2, 1)).is_err());
}

fn encoded_len<T: serde::Serialize>(m: &T) -> usize {
    postcard::to_allocvec(m).expect("encode").len()
}

#[test]
fn messages_round_trip_through_postcard_within_the_bound() {
    let cfg = config(6, 4, 100);
    let x = inputs(6, 100, 19);
    let all = ids(6);
    let bound = cfg.max_message_bytes();
    let check_server = |m: ToServer| {
        let bytes = postcard::to_allocvec(&m).expect("encode");
        assert!(bytes.len() <= bound, "{} > {bound}", bytes.len());
        let back: ToServer = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, m);
        back
    };
    let check_client = |m: ToClient| {
        let bytes = postcard::to_allocvec(&m).expect("encode");
        assert!(bytes.len() <= bound, "{} > {bound}", bytes.len());
        let back: ToClient = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, m);
        back
    };
    // Delivers through postcard, checking each message's size against
    // `bound` (the module's cost table's per-round sizes, n = 6: length
    // prefixes take a byte).
    let through = |server: &mut Server, outbox: Outbox, bound: usize| {
        for (id, m) in outbox {
            let inner = match &m {
                ToServer::AdvertiseKeys(k) => encoded_len(k),
                ToServer::ShareKeys(k) => encoded_len(k),
                ToServer::MaskedInput(k) => encoded_len(k),
                ToServer::Unmask(k) => encoded_len(k),
            };
            assert!(inner <= bound, "{inner} > {bound}");
            server.receive(id, check_server(m)).expect("honest");
        }
    };
    let (mut cohort, keys) = Cohort::new(cfg, &x, 20);
    let mut server = Server::new(cfg).expect("config");
    through(&mut server, keys, MAX_LISTED_MEMBER_BYTES - 5);
    let ToClient::Members(list) = check_client(ToClient::Members(server.close_keys().expect("U1")))
    else {
        panic!("members")
    };
    assert!(encoded_len(&list) <= MAX_LISTED_MEMBER_BYTES * 6 + 1);
    through(&mut server, cohort.share(&list), 102 * 5 + 1);
    let inboxes = server
        .close_shares()
        .expect("U2")
        .into_iter()
        .map(|(id, inbox)| match check_client(ToClient::Shares(inbox)) {
            ToClient::Shares(inbox) => (id, inbox),
            _ => panic!("shares"),
        })
        .collect();
    // u32s travel as 4 bytes each.
    through(&mut server, cohort.mask(inboxes).0, 4 * 100 + 2);
    let ToClient::Survivors(survivors) =
        check_client(ToClient::Survivors(server.close_inputs().expect("U3")))
    else {
        panic!("survivors")
    };
    assert!(encoded_len(&survivors) <= 5 * 6 + 1);
    through(&mut server, cohort.unmask(&survivors), 50 * 6 + 2);
    assert_eq!(
        server.finish().expect("sum").sum,
        expected_sum(&x, &all, &all)
    );
    // A masked input whose byte length is not a multiple of 4 is refused.
    assert!(postcard::from_bytes::<MaskedInput>(&[3, 1, 2, 3]).is_err());
}

/// The size the task asked about: 50 members, 10 000 entries, 5 dropouts
/// after round 1. Prints the slowest client's masking time and the server's
/// unmasking time (`--nocapture`); the bound only catches a blow-up.
#[test]
fn fifty_clients_ten_thousand_entries() {
    let cfg = config(50, 26, 10_000);
    let x = inputs(50, 10_000, 21);
    let all = ids(50);
    let drops = Drops {
        before_input: all.iter().copied().step_by(10).collect(),
        ..Drops::default()
    };
    let out = run(cfg, &x, &drops, 22);
    let agg = out.result.expect("sum");
    assert_eq!(agg.survivors.len(), 45);
    assert_eq!(agg.sum, expected_sum(&x, &all, &agg.survivors));
    eprintln!(
        "n=50 D=10000, 5 dropped: client masking {:?} (slowest), server unmasking {:?}",
        out.mask_time, out.finish_time
    );
    assert!(out.mask_time < Duration::from_secs(5));
    assert!(out.finish_time < Duration::from_secs(20));
}

/// Whether the server refuses every one of `msgs`.
fn all_refused(server: &mut Server, msgs: &[(ClientId, ToServer)]) -> bool {
    msgs.iter()
        .all(|(from, m)| server.receive(*from, m.clone()).is_err())
}

fn arb_id() -> impl Strategy<Value = ClientId> {
    prop_oneof![
        (0u32..20).prop_map(ClientId),
        any::<u32>().prop_map(ClientId)
    ]
}

fn arb_share() -> impl Strategy<Value = shamir::Share> {
    prop::array::uniform5(prop_oneof![0..shamir::P, any::<u64>()]).prop_map(shamir::Share)
}

fn arb_message() -> impl Strategy<Value = ToServer> {
    let sealed = (arb_id(), prop::collection::vec(any::<u8>(), 0..100))
        .prop_map(|(peer, ciphertext)| Sealed { peer, ciphertext });
    let held = || (arb_id(), arb_share()).prop_map(|(owner, share)| HeldShare { owner, share });
    prop_oneof![
        (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            prop::collection::vec(any::<u8>(), 0..80),
            prop::collection::vec(any::<u8>(), 0..80)
        )
            .prop_map(|(channel_pk, mask_pk, credential, signature)| {
                ToServer::AdvertiseKeys(AdvertiseKeys {
                    channel_pk,
                    mask_pk,
                    attestation: Attestation {
                        credential,
                        signature,
                    },
                })
            }),
        prop::collection::vec(sealed, 0..6)
            .prop_map(|sealed| ToServer::ShareKeys(ShareKeys { sealed })),
        prop::collection::vec(any::<u32>(), 0..10)
            .prop_map(|masked| ToServer::MaskedInput(MaskedInput { masked })),
        (
            prop::collection::vec(held(), 0..6),
            prop::collection::vec(held(), 0..3)
        )
            .prop_map(|(seed_shares, key_shares)| ToServer::Unmask(UnmaskShares {
                seed_shares,
                key_shares
            })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random messages from random senders, interleaved with random closes:
    /// the server never panics, and an error never changes its round.
    #[test]
    fn server_survives_random_messages(
        steps in prop::collection::vec((arb_id(), arb_message(), any::<bool>()), 0..60)
    ) {
        let mut server = Server::new(config(5, 3, 4)).expect("config");
        for (from, msg, close) in steps {
            let round = server.round();
            if server.receive(from, msg).is_err() {
                prop_assert_eq!(server.round(), round);
            }
            if close {
                let before = server.round();
                let closed = match server.round() {
                    Round::AdvertiseKeys => server.close_keys().map(|_| ()),
                    Round::ShareKeys => server.close_shares().map(|_| ()),
                    Round::MaskedInput => server.close_inputs().map(|_| ()),
                    Round::Unmasking => server.finish().map(|_| ()),
                    Round::Done => Ok(()),
                };
                if closed.is_err() {
                    prop_assert_eq!(server.round(), before);
                }
            }
        }
    }

    /// Random round-2 and round-3 messages to a client that has shared its
    /// keys: it never panics, and refusing leaves its round as it was.
    #[test]
    fn client_survives_random_messages(
        inboxes in prop::collection::vec(
            prop::collection::vec((arb_id(), prop::collection::vec(any::<u8>(), 0..120)), 0..6),
            0..4,
        ),
        survivors in prop::collection::vec(prop::collection::vec(arb_id(), 0..6), 0..4),
        seed in any::<u64>(),
    ) {
        let cfg = config(5, 3, 4);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (mut clients, list) = listed(cfg, 5, &mut rng);
        let client = &mut clients[1];
        client.share_keys(&list, pki(), &mut rng).expect("share");
        for inbox in inboxes {
            let mut sealed: Vec<Sealed> = inbox
                .into_iter()
                .map(|(peer, ciphertext)| Sealed { peer, ciphertext })
                .collect();
            sealed.sort_by_key(|s| s.peer);
            let r = client.masked_input(&SharesForYou { sealed }, &[1, 2, 3, 4]);
            prop_assert!(r.is_err(), "random ciphertexts never open");
            prop_assert_eq!(client.round(), Round::MaskedInput);
        }
        for u3 in survivors {
            let r = client.unmask(&Survivors { survivors: u3 });
            let is_wrong_round = matches!(r, Err(ClientError::WrongRound { .. }));
            prop_assert!(is_wrong_round);
        }
    }

    /// Random survivor lists to a client that sent its masked input: it
    /// answers only a sorted subset of U2 of at least t members that holds
    /// itself, once, and then only the same list again.
    #[test]
    fn client_answers_only_one_valid_survivor_list(
        lists in prop::collection::vec(prop::collection::btree_set(0usize..6, 0..6), 1..6),
        seed in any::<u64>(),
    ) {
        let cfg = config(5, 3, 2);
        let all = ids(5);
        let mut s = session_to_unmasking(cfg, &inputs(5, 2, seed), seed);
        let me = all[2];
        let client = s.cohort.client(me);
        let mut answered: Option<Vec<ClientId>> = None;
        for picks in lists {
            // Index 5 stands for a stranger (id 1000).
            let u3: Vec<ClientId> = picks
                .iter()
                .map(|&k| all.get(k).copied().unwrap_or(ClientId(1000)))
                .collect();
            let valid = u3.len() >= 3 && u3.contains(&me) && !picks.contains(&5);
            let r = client.unmask(&Survivors { survivors: u3.clone() });
            match &answered {
                None if valid => {
                    let a = r.expect("a valid first list is answered");
                    prop_assert_eq!(a.seed_shares.len() + a.key_shares.len(), 5);
                    answered = Some(u3);
                }
                None => prop_assert!(r.is_err()),
                Some(first) if *first == u3 => prop_assert!(r.is_ok()),
                Some(_) => prop_assert_eq!(r, Err(ClientError::InconsistentSurvivors)),
            }
        }
    }

    /// Hostile messages injected after the honest ones of every round (from
    /// members that already sent, strangers, or for other rounds) are all
    /// refused, and the honest session still ends with the exact sum.
    #[test]
    fn hostile_messages_do_not_disturb_an_honest_session(
        noise in prop::collection::vec(prop::collection::vec((arb_id(), arb_message()), 0..8), 4),
        seed in any::<u64>(),
    ) {
        let cfg = config(5, 3, 4);
        let all = ids(5);
        let x = inputs(5, 4, seed);
        let (mut cohort, keys) = Cohort::new(cfg, &x, seed);
        let mut server = Server::new(cfg).expect("config");
        deliver(&mut server, keys, &[]);
        // After each round's honest messages (the cohort is full at n = 5),
        // every hostile message is refused.
        prop_assert!(all_refused(&mut server, &noise[0]));
        let shares = cohort.share(&server.close_keys().expect("U1"));
        deliver(&mut server, shares, &[]);
        prop_assert!(all_refused(&mut server, &noise[1]));
        let (masked, _) = cohort.mask(server.close_shares().expect("U2"));
        deliver(&mut server, masked, &[]);
        prop_assert!(all_refused(&mut server, &noise[2]));
        let answers = cohort.unmask(&server.close_inputs().expect("U3"));
        deliver(&mut server, answers, &[]);
        prop_assert!(all_refused(&mut server, &noise[3]));
        prop_assert_eq!(server.finish().expect("sum").sum, expected_sum(&x, &all, &all));
    }
}
