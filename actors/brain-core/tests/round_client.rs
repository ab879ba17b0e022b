//! The TV's round client against omega-privacy's real secure-aggregation
//! server, with a small cohort of TVs: sums, charges, re-offers, refusals,
//! the noise's scale and what leaves the TV.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use omega_brain_core::round_client::{
    PrivacyState, RoundClient, RoundClientConfig, RoundClientError, RoundCredentials,
};
use omega_brain_core::{BrainState, Episode};
use omega_privacy::ledger::WINDOW_MS;
use omega_privacy::round::{NodeToTv, RoundSpec, TvToNode};
use omega_privacy::secagg::attest::testing::Registry;
use omega_privacy::secagg::{ClientId, Config, Server, ToClient, ToServer};
use omega_privacy::{Budget, ContributionLayout, GaussianRelease, LedgerError};
use omega_protocol::{ContentId, ViewingContext, ViewingEvent};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const TITLES: usize = 7;
/// Watch timestamps start here (seconds): never to be found in what is sent.
const T0: u64 = 1_700_000_000;
const NOW: u64 = 1_700_000_000_000;

fn title(k: usize) -> ContentId {
    ContentId::new(format!("title-alpha-{k:04}")).unwrap()
}

/// Titles 0..6 have slots 0..6; title 6 has none.
fn slots() -> HashMap<ContentId, u32> {
    (0..TITLES - 1).map(|k| (title(k), k as u32)).collect()
}

/// 6 slots, pair titles in slots 5, 1, 3, 0, window 2: dimension 12.
fn spec(session: u64, cohort: u16, threshold: u16) -> RoundSpec {
    let layout = ContributionLayout::new(6, 4, 2).unwrap();
    RoundSpec {
        session: Config {
            session,
            cohort,
            threshold,
            dim: layout.dimension() as u32,
        },
        layout,
        pair_slots: vec![5, 1, 3, 0],
        catalog_version: 1,
        scale: 1,
    }
}

/// A history of a few successful watches that differs by TV.
fn brain(tv: usize) -> BrainState {
    let mut st = BrainState::default();
    let ctx = ViewingContext::new(20, 3).unwrap();
    for i in 0..5 {
        let k = (tv * 3 + i * (tv + 1)) % TITLES;
        let event = ViewingEvent::new(title(k), 0.95, T0 + (tv * 10 + i) as u64 * 61, ctx).unwrap();
        st.push_episode(Episode {
            seq: i as u64, // the store's sequence starts at 0
            event,
        });
    }
    st
}

struct Tv {
    client: RoundClient,
    brain: BrainState,
    /// Its device credential and the trusted ones.
    credentials: RoundCredentials,
}

struct Cohort {
    tvs: Vec<Tv>,
    slots: HashMap<ContentId, u32>,
    rng: ChaCha20Rng,
    /// Everything the TVs sent.
    sent: Vec<TvToNode>,
    /// The trusted device credentials.
    pki: Registry,
}

impl Cohort {
    fn new(n: usize, config: RoundClientConfig) -> Cohort {
        let pki = Registry::new();
        let tvs = (0..n)
            .map(|k| Tv {
                client: RoundClient::new(config, PrivacyState::new(Budget::default())).unwrap(),
                brain: brain(k),
                credentials: RoundCredentials {
                    attestor: Arc::new(pki.attestor(&format!("tv-{k}"), true)),
                    verifier: Arc::new(pki.clone()),
                },
            })
            .collect();
        Cohort {
            tvs,
            slots: slots(),
            rng: ChaCha20Rng::seed_from_u64(7),
            sent: Vec::new(),
            pki,
        }
    }

    fn send(
        &mut self,
        k: usize,
        msg: NodeToTv,
        now: u64,
    ) -> Result<Option<TvToNode>, RoundClientError> {
        let tv = &mut self.tvs[k];
        let out = tv.client.on_node(
            msg,
            &tv.brain,
            &self.slots,
            now,
            &tv.credentials,
            &mut self.rng,
        )?;
        self.sent.extend(out.clone());
        Ok(out)
    }

    /// Hands member `k`'s step to the server.
    fn step(&mut self, server: &mut Server, k: usize, session: u64, msg: ToClient) {
        let out = self
            .send(k, NodeToTv::Step { session, msg }, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(out.session, session);
        server.receive(ClientId(k as u32), out.msg).unwrap();
    }

    /// Runs a round through the masked inputs; `None` if `finish` is false
    /// (the node then loses the round), else the sum, read back signed.
    fn round(&mut self, spec: &RoundSpec, now: u64, finish: bool) -> Option<Vec<i64>> {
        let session = spec.session.session;
        let mut server = Server::new(spec.session).unwrap();
        for k in 0..self.tvs.len() {
            let invite = NodeToTv::Invite {
                spec: spec.clone(),
                member: ClientId(k as u32),
            };
            let out = self.send(k, invite, now).unwrap().unwrap();
            assert!(matches!(out.msg, ToServer::AdvertiseKeys(_)));
            server.receive(ClientId(k as u32), out.msg).unwrap();
        }
        let members = server.close_keys().unwrap();
        for k in 0..self.tvs.len() {
            self.step(&mut server, k, session, ToClient::Members(members.clone()));
        }
        for (id, shares) in server.close_shares().unwrap() {
            self.step(
                &mut server,
                id.0 as usize,
                session,
                ToClient::Shares(shares),
            );
        }
        let survivors = server.close_inputs().unwrap();
        if !finish {
            return None;
        }
        for id in survivors.survivors.clone() {
            self.step(
                &mut server,
                id.0 as usize,
                session,
                ToClient::Survivors(survivors.clone()),
            );
        }
        let agg = server.finish().unwrap();
        assert_eq!(agg.survivors.len(), self.tvs.len());
        Some(agg.sum.iter().map(|&s| i64::from(s as i32)).collect())
    }

    fn finished(&mut self, session: u64, included: bool) {
        for k in 0..self.tvs.len() {
            let out = self.send(k, NodeToTv::Finished { session, included }, NOW);
            assert_eq!(out, Ok(None));
        }
    }

    fn pending_sum(&self) -> Vec<i64> {
        let mut sum = vec![0i64; spec(0, 12, 11).layout.dimension()];
        for tv in &self.tvs {
            let p = tv.client.state().pending().expect("a pending release");
            for (s, v) in sum.iter_mut().zip(&p.noisy) {
                *s += v;
            }
        }
        sum
    }

    fn charges(&self) -> Vec<usize> {
        self.tvs
            .iter()
            .map(|tv| tv.client.state().ledger().charges().len())
            .collect()
    }
}

#[test]
fn a_round_sums_the_noisy_releases_and_an_included_release_advances_the_watermark() {
    let mut c = Cohort::new(12, RoundClientConfig::default());
    let sum = c.round(&spec(1, 12, 11), NOW, true).unwrap();
    assert_eq!(sum, c.pending_sum());
    assert_eq!(c.charges(), vec![1; 12], "charged once each");
    // The noise is really there: the noisy releases are not the 0/1 vectors.
    assert!(c.tvs.iter().any(|tv| tv
        .client
        .state()
        .pending()
        .unwrap()
        .noisy
        .iter()
        .any(|&v| v != 0 && v != 1)));
    // The charge and the masked input changed what a TV must store.
    assert!(c.tvs.iter_mut().all(|tv| tv.client.take_unsaved()));
    assert!(!c.tvs[0].client.take_unsaved(), "said once");
    c.finished(1, true);
    for tv in &mut c.tvs {
        assert!(tv.client.state().pending().is_none());
        assert_eq!(tv.client.state().released_upto(), Some(4));
        assert_eq!(tv.client.session(), None);
        assert!(tv.client.take_unsaved(), "the watermark moved");
    }
}

#[test]
fn a_release_not_included_is_offered_again_unchanged_and_free() {
    let mut c = Cohort::new(11, RoundClientConfig::default());
    assert!(c.round(&spec(1, 12, 11), NOW, false).is_none());
    let first: Vec<Vec<i64>> = c
        .tvs
        .iter()
        .map(|tv| tv.client.state().pending().unwrap().noisy.clone())
        .collect();
    c.finished(1, false);
    assert_eq!(c.charges(), vec![1; 11]);

    // An hour later, a new round with the same layout: no new charge (the
    // budget, spent whole by the first, would refuse one), the same vectors.
    let sum = c.round(&spec(2, 12, 11), NOW + 3_600_000, true).unwrap();
    assert_eq!(c.charges(), vec![1; 11]);
    let again: Vec<Vec<i64>> = c
        .tvs
        .iter()
        .map(|tv| tv.client.state().pending().unwrap().noisy.clone())
        .collect();
    assert_eq!(first, again);
    assert_eq!(sum, c.pending_sum());
    // A late "included" for the lost round's session names nothing pending
    // any more for it.
    let late = c.send(
        0,
        NodeToTv::Finished {
            session: 1,
            included: true,
        },
        NOW,
    );
    assert_eq!(late, Err(RoundClientError::NotOffered(1)));
    assert_eq!(c.tvs[0].client.state().released_upto(), None);
    c.finished(2, true);
    assert_eq!(c.tvs[0].client.state().released_upto(), Some(4));
}

#[test]
fn a_second_release_past_the_budget_is_refused_until_the_first_leaves_the_window() {
    let mut c = Cohort::new(10, RoundClientConfig::default());
    c.round(&spec(1, 10, 10), NOW, true).unwrap();
    c.finished(1, true);
    let sent = c.sent.len();
    let later = NOW + 20 * 3_600_000;
    let invite = NodeToTv::Invite {
        spec: spec(2, 10, 10),
        member: ClientId(0),
    };
    match c.send(0, invite.clone(), later) {
        Err(RoundClientError::Ledger(LedgerError::Exhausted { renews_at_ms, .. })) => {
            assert_eq!(renews_at_ms, NOW + WINDOW_MS)
        }
        other => panic!("expected exhaustion, got {other:?}"),
    }
    assert_eq!(c.sent.len(), sent, "nothing sent");
    assert_eq!(c.tvs[0].client.session(), None);
    assert_eq!(c.charges()[0], 1);
    let status = c.tvs[0].client.status(later).unwrap();
    assert_eq!(status.budget.releases, 1);
    assert!(status.budget.epsilon_left < 1e-3, "{status:?}");
    // A day after the first release, it fits again.
    let out = c.send(0, invite, NOW + WINDOW_MS).unwrap().unwrap();
    assert!(matches!(out.msg, ToServer::AdvertiseKeys(_)));
    assert_eq!(
        c.charges()[0],
        1,
        "the expired charge left, the new one came"
    );
    assert_eq!(
        c.tvs[0].client.state().ledger().charges()[0].at_ms,
        NOW + WINDOW_MS
    );
}

#[test]
fn invitations_outside_the_tvs_bounds_are_declined_and_change_nothing() {
    let mut c = Cohort::new(1, RoundClientConfig::default());
    let mut invite = |s: RoundSpec| {
        c.send(
            0,
            NodeToTv::Invite {
                spec: s,
                member: ClientId(0),
            },
            NOW,
        )
    };
    assert_eq!(
        invite(spec(1, 6, 5)),
        Err(RoundClientError::ThresholdTooLow { got: 5, min: 10 })
    );
    // t barely above n/2: 2t − n + 1 = 2 devices of the node's own would do.
    assert_eq!(
        invite(spec(6, 19, 10)),
        Err(RoundClientError::SplitTooEasy { got: 2, min: 10 })
    );
    let mut wrong_dim = spec(2, 12, 11);
    wrong_dim.session.dim = 13;
    assert_eq!(
        invite(wrong_dim),
        Err(RoundClientError::DimMismatch {
            session: 13,
            layout: 12
        })
    );
    let mut bad_pairs = spec(3, 12, 11);
    bad_pairs.pair_slots = vec![5, 1, 3, 5];
    assert_eq!(invite(bad_pairs), Err(RoundClientError::PairSlots));
    let mut wide = spec(4, 12, 11);
    wide.layout = ContributionLayout::new(6, 4, 9).unwrap();
    assert!(matches!(
        invite(wide),
        Err(RoundClientError::WindowTooLarge { got: 9, max: 8 })
    ));
    for scale in [0, omega_privacy::round::MAX_SCALE + 1] {
        let mut scaled = spec(5, 12, 11);
        scaled.scale = scale;
        assert_eq!(invite(scaled), Err(RoundClientError::Scale(scale)));
    }
    assert!(c.sent.is_empty());
    assert!(!c.tvs[0].client.take_unsaved(), "nothing to store");
    let st = c.tvs[0].client.state();
    assert!(st.ledger().charges().is_empty() && st.pending().is_none());
    // A step for a round the TV is not in.
    let step = NodeToTv::Step {
        session: 1,
        msg: ToClient::Survivors(omega_privacy::secagg::Survivors { survivors: vec![] }),
    };
    assert_eq!(
        c.send(0, step, NOW),
        Err(RoundClientError::UnknownSession(1))
    );
}

#[test]
fn each_member_adds_its_share_of_the_noise_and_status_reports_both_epsilons() {
    // 20,000 entries with nothing watched: the release is the noise alone.
    let spec_of = |window: u8| {
        let layout = ContributionLayout::new(20_000, 0, window).unwrap();
        RoundSpec {
            session: Config {
                session: 9,
                cohort: 10,
                threshold: 10,
                dim: 20_000,
            },
            layout,
            pair_slots: vec![],
            catalog_version: 1,
            scale: 1,
        }
    };
    let mut tv = RoundClient::new(
        RoundClientConfig::default(),
        PrivacyState::new(Budget::default()),
    )
    .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let pki = Registry::new();
    let credentials = RoundCredentials {
        attestor: Arc::new(pki.attestor("tv-4", true)),
        verifier: Arc::new(pki.clone()),
    };
    let mut invite = |window: u8, tv: &mut RoundClient| {
        let msg = NodeToTv::Invite {
            spec: spec_of(window),
            member: ClientId(4),
        };
        tv.on_node(
            msg,
            &BrainState::default(),
            &slots(),
            NOW,
            &credentials,
            &mut rng,
        )
    };
    // Window 1 (sensitivity 2): σ_total ≈ 2.5, a share of 0.8 is too small
    // for the shares' sum to pass for one discrete Gaussian.
    assert!(matches!(
        invite(1, &mut tv),
        Err(RoundClientError::ShareTooSmall { .. })
    ));
    assert!(tv.state().ledger().charges().is_empty());
    // Window 5 (sensitivity 4): σ_total ≈ 5.1, shares of 1.6.
    invite(5, &mut tv).unwrap();
    let layout = spec_of(5).layout;
    let noisy = &tv.state().pending().unwrap().noisy;
    let rho = Budget::default().rho_limit().unwrap();
    let sigma_total = GaussianRelease::for_rho(rho, layout.l2_sensitivity())
        .unwrap()
        .sigma();
    let want = sigma_total * sigma_total / 10.0;
    let n = noisy.len() as f64;
    let mean = noisy.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = noisy
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    // The sample variance's standard error is about 1 %; allow 10 %.
    assert!(mean.abs() < 0.1, "mean {mean}");
    assert!(
        (var - want).abs() < 0.1 * want,
        "variance {var}, want {want}"
    );

    let st = tv.status(NOW).unwrap();
    let (central, local) = (st.epsilon_central.unwrap(), st.epsilon_local.unwrap());
    assert!(central <= 4.0 && central > 3.99, "{central}");
    assert!(local > 3.0 * central, "{local} vs {central}");
    let last = st.last.unwrap();
    assert!((last.rho_local / last.rho - 10.0).abs() < 0.01, "{last:?}");
    assert_eq!(st.in_session, Some(9));
    assert_eq!((st.pending, st.pending_upto), (true, None));
}

#[test]
fn what_a_tv_sends_is_the_secagg_messages_and_nothing_of_its_history() {
    let mut c = Cohort::new(12, RoundClientConfig::default());
    c.round(&spec(1, 12, 11), NOW, true).unwrap();
    assert_eq!(c.sent.len(), 12 * 4, "four messages per TV");
    let ids: Vec<Vec<u8>> = (0..TITLES)
        .map(|k| title(k).as_str().as_bytes().to_vec())
        .collect();
    let stamps: Vec<Vec<u8>> = (0..12 * 10 + 5)
        .flat_map(|i| {
            let t = T0 + i as u64 * 61;
            [t.to_le_bytes().to_vec(), postcard::to_stdvec(&t).unwrap()]
        })
        .collect();
    for m in &c.sent {
        let bytes = postcard::to_stdvec(m).unwrap();
        let back: TvToNode = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(&back, m);
        // The session number and the secagg message, nothing else.
        let parts = postcard::to_stdvec(&m.session).unwrap().len()
            + postcard::to_stdvec(&m.msg).unwrap().len();
        assert_eq!(bytes.len(), parts);
        for needle in ids.iter().chain(&stamps) {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{needle:?} found in what was sent"
            );
        }
    }
}

#[test]
fn a_new_layout_drops_the_pending_release_without_advancing_and_its_charge_stays() {
    let half = RoundClientConfig {
        release_share: 0.5,
        ..RoundClientConfig::default()
    };
    let mut c = Cohort::new(10, half);
    assert!(c.round(&spec(1, 10, 10), NOW, false).is_none());
    // The node re-invites to the session the input was masked in: refused.
    let again = NodeToTv::Invite {
        spec: spec(1, 10, 10),
        member: ClientId(0),
    };
    // (The same message as the last one handled would be answered the same;
    // after the steps it is not the last one any more.)
    assert_eq!(
        c.send(0, again, NOW),
        Err(RoundClientError::AlreadyMasked(1))
    );
    let old = c.tvs[0].client.state().pending().unwrap().noisy.clone();
    // Another pair list: the pending release cannot be expressed in it.
    let mut other = spec(2, 10, 10);
    other.pair_slots = vec![0, 1, 2, 3];
    let invite = NodeToTv::Invite {
        spec: other.clone(),
        member: ClientId(0),
    };
    let first = c.send(0, invite.clone(), NOW).unwrap();
    assert_eq!(
        c.send(0, invite, NOW).unwrap(),
        first,
        "a repeated invitation gets the same keys"
    );
    let st = c.tvs[0].client.state();
    assert_eq!(st.ledger().charges().len(), 2, "the first charge stays");
    assert_eq!(
        st.released_upto(),
        None,
        "its watches go into the new release"
    );
    let p = st.pending().unwrap();
    assert_eq!((p.pair_slots.clone(), p.upto), (other.pair_slots, Some(4)));
    assert_ne!(p.noisy, old);
    assert!(p.masked_in.is_empty());
    // Forgetting keeps the ledger, drops the rest.
    c.tvs[0].client.forget();
    let st = c.tvs[0].client.state();
    assert!(st.pending().is_none() && c.tvs[0].client.session().is_none());
    assert_eq!(st.ledger().charges().len(), 2);
}

/// A node that adds members of its own making to the list (keys it holds
/// the secrets of, under a certificate nobody issued, or a real TV's
/// certificate twice): every TV declines before sharing anything.
#[test]
fn a_member_list_with_invented_members_is_declined_and_nothing_is_shared() {
    use omega_privacy::secagg::{attest, AdvertiseKeys, Attestor, ClientError, MemberKeys};
    let mut c = Cohort::new(11, RoundClientConfig::default());
    let spec = spec(1, 12, 11);
    let mut server = Server::new(spec.session).unwrap();
    for k in 0..11 {
        let invite = NodeToTv::Invite {
            spec: spec.clone(),
            member: ClientId(k as u32),
        };
        let out = c.send(k, invite, NOW).unwrap().unwrap();
        server.receive(ClientId(k as u32), out.msg).unwrap();
    }
    let honest = server.close_keys().unwrap();
    let invented_id = ClientId(11);
    let (channel_pk, mask_pk) = ([7; 32], [9; 32]);
    let statement = attest::statement(1, invented_id, &channel_pk, &mask_pk);
    let signers = [
        c.pki.attestor("node-made-up", false),
        // tv-3's certificate, used for a second member.
        c.pki.attestor("tv-3", true),
    ];
    for signer in signers {
        let mut list = honest.clone();
        list.members.push(MemberKeys {
            id: invented_id,
            keys: AdvertiseKeys {
                channel_pk,
                mask_pk,
                attestation: signer.attest(&statement).unwrap(),
            },
        });
        let sent_before = c.sent.len();
        for k in 0..11 {
            let r = c.send(
                k,
                NodeToTv::Step {
                    session: 1,
                    msg: ToClient::Members(list.clone()),
                },
                NOW,
            );
            assert!(
                matches!(
                    r,
                    Err(RoundClientError::Client(
                        ClientError::Unattested { member, .. }
                    )) if member == invented_id
                ) || matches!(
                    r,
                    Err(RoundClientError::Client(ClientError::DuplicateIdentity(_)))
                ),
                "{r:?}"
            );
        }
        assert_eq!(c.sent.len(), sent_before, "no shares left any TV");
    }
    // The honest list still goes through.
    for k in 0..11 {
        c.step(&mut server, k, 1, ToClient::Members(honest.clone()));
    }
}

/// The least threshold a default TV accepts: the split bound or the least
/// threshold, whichever is higher; one below it is declined.
#[test]
fn the_least_threshold_is_what_a_tv_accepts() {
    let cfg = RoundClientConfig::default();
    let least: Vec<u16> = [11, 13, 60, 200]
        .iter()
        .map(|&n| cfg.least_threshold(n))
        .collect();
    assert_eq!(least, vec![10, 11, 35, 105]);
    let mut c = Cohort::new(1, cfg);
    for t in [11, 10] {
        let r = c.send(
            0,
            NodeToTv::Invite {
                spec: spec(t.into(), 13, t),
                member: ClientId(0),
            },
            NOW,
        );
        assert_eq!(
            matches!(r, Err(RoundClientError::SplitTooEasy { .. })),
            t < 11,
            "{t}: {r:?}"
        );
    }
}
