//! The learning loop end to end over real QUIC with certificates from
//! omega-certs: TVs with known viewing histories (MovieLens ml-100k users
//! 1–6, their first 20 ratings, watch fraction = rating / 5; the TV's own store,
//! `BrainStore`, on real redb files, building each request exactly as the
//! sync actor does) sync with a real in-process `omega-node` until an
//! aggregation round is summed, folded and published, and the published
//! fleet knowledge is on every TV and in its recommendations.
//!
//! A second test: k − 1 attacker devices and a victim, with real
//! certificates, never get a round summed at the node's default threshold.
//!
//! Every request frame a TV sent is kept and checked: no content id, title
//! or timestamp of that TV's history is in it, and decoded it carries only
//! the round's secure-aggregation messages (no patterns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use omega_brain::{BrainStore, RoundCredentials, StoreConfig};
use omega_brain_core::{Reason, RecommendRequest, RecommenderConfig, UploadKind};
use omega_certs::{CaKind, CertDir};
use omega_privacy::secagg::ToServer;
use omega_protocol::codec::{decode_request, decode_response, encode_request};
use omega_protocol::{ContentId, Region, ViewingContext, ViewingEvent};
use omega_transport::attest::{DeviceAttestor, DeviceVerifier};
use omega_transport::quic::{client_config, exchange, TlsIdentity, TrustAnchor};
use support::{model_dir, ADMIN_TOKEN, DEADLINE};

const TVS: usize = 6;
/// Ratings of each user replayed.
const WATCHES: usize = 20;

/// ml-100k, beside the repository (`OMEGA_SHARED_DIR` or `../shared`).
fn ml100k() -> PathBuf {
    std::env::var_os("OMEGA_SHARED_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
            PathBuf::from,
        )
        .join("data/movielens/ml-100k")
}

/// Titles by MovieLens number, and for users 1..=TVS their first WATCHES
/// ratings in time order: (MovieLens number, rating, unix seconds).
type Histories = (HashMap<u32, String>, Vec<Vec<(u32, f32, u64)>>);

fn histories() -> Histories {
    let dir = ml100k();
    let items = std::fs::read(dir.join("u.item")).expect("ml-100k u.item (../shared)");
    let titles: HashMap<u32, String> = String::from_utf8_lossy(&items)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('|');
            Some((f.next()?.parse().ok()?, f.next()?.to_owned()))
        })
        .collect();
    let data = std::fs::read_to_string(dir.join("u.data")).expect("ml-100k u.data");
    let mut users: Vec<Vec<(u32, f32, u64)>> = vec![Vec::new(); TVS];
    for l in data.lines() {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [u, i, r, t] = f[..] {
            if (1..=TVS as u64).contains(&u) {
                users[u as usize - 1].push((i as u32, r as f32, t));
            }
        }
    }
    for u in &mut users {
        u.sort_by_key(|&(i, _, t)| (t, i));
        u.truncate(WATCHES);
    }
    (titles, users)
}

fn content_id(item: u32) -> String {
    format!("ml100k:{item}")
}

/// The postcard varint of `v` (how a u64 travels).
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

struct Tv {
    store: BrainStore,
    credentials: RoundCredentials,
    conn: quinn::Connection,
    frames: Vec<Vec<u8>>,
    _dir: tempfile::TempDir,
}

async fn admin_post(addr: SocketAddr, path: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A real node with `node_toml`'s settings and the users' catalog, and
/// one TV per ml-100k user 1..=TVS holding that user's history, each
/// connected with its own certificate.
struct Setup {
    _certs_dir: tempfile::TempDir,
    _node_dir: tempfile::TempDir,
    node: omega_node::RunningNode,
    titles: HashMap<u32, String>,
    users: Vec<Vec<(u32, f32, u64)>>,
    catalog: Vec<u32>,
    tvs: Vec<Tv>,
}

async fn setup(node_toml: &str) -> Setup {
    let (certs_dir, certs) = pki(1, TVS);
    let (node_dir, node) = start_node(&certs, "node-1", node_toml).await;
    let (titles, users) = histories();
    let catalog = import_catalog(&node, &titles, &users).await;
    let names: Vec<String> = (0..TVS).map(|i| format!("tv-{i}")).collect();
    let tvs = connect_tvs(&certs, &names, node.quic_addr(), &users).await;
    Setup {
        _certs_dir: certs_dir,
        _node_dir: node_dir,
        node,
        titles,
        users,
        catalog,
        tvs,
    }
}

/// Certificates of nodes `node-1..=nodes` and devices `tv-0..tvs`.
fn pki(nodes: usize, tvs: usize) -> (tempfile::TempDir, CertDir) {
    let certs_dir = tempfile::tempdir().unwrap();
    let mut certs = CertDir::init(certs_dir.path().join("certs")).unwrap();
    for n in 1..=nodes {
        certs
            .issue_node(
                &format!("node-{n}"),
                &["localhost".into(), "127.0.0.1".into()],
            )
            .unwrap();
    }
    for i in 0..tvs {
        certs.issue_device(&format!("tv-{i}")).unwrap();
    }
    (certs_dir, certs)
}

/// A real node named `name` with `node_toml`'s settings.
async fn start_node(
    certs: &CertDir,
    name: &str,
    node_toml: &str,
) -> (tempfile::TempDir, omega_node::RunningNode) {
    let mut config: omega_node::Config = toml::from_str(node_toml).unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin = "127.0.0.1:0".parse().unwrap();
    config.node_name = name.to_owned();
    let node_dir = tempfile::tempdir().unwrap();
    // What `omega-certs export-node` gives the node: no CA keys.
    let node_certs = node_dir.path().join("certs");
    certs.export_node(name, &node_certs).unwrap();
    let node = omega_node::RunningNode::start(omega_node::ServeOptions {
        data_dir: node_dir.path().join("data"),
        model_dir: Some(model_dir()),
        certs_dir: node_certs,
        config,
        admin_token: Some(ADMIN_TOKEN.into()),
    })
    .await
    .expect("node starts");
    (node_dir, node)
}

/// Imports every title these users watched through `node`'s admin API;
/// returns their MovieLens numbers.
async fn import_catalog(
    node: &omega_node::RunningNode,
    titles: &HashMap<u32, String>,
    users: &[Vec<(u32, f32, u64)>],
) -> Vec<u32> {
    let mut catalog: Vec<u32> = users.iter().flatten().map(|&(i, _, _)| i).collect();
    catalog.sort_unstable();
    catalog.dedup();
    let items: String = catalog
        .iter()
        .map(|&i| {
            let line =
                serde_json::json!({"id": content_id(i), "title": titles[&i], "genres": ["Drama"]});
            format!("{line}\n")
        })
        .collect();
    assert_eq!(
        admin_post(node.admin_addr(), "/api/v1/content/import", &items).await,
        200
    );
    catalog
}

/// The TVs `names` (certificates in `certs`), connected to the node at
/// `addr`, the k-th holding `users[k % users.len()]`'s history.
async fn connect_tvs(
    certs: &CertDir,
    names: &[String],
    addr: SocketAddr,
    users: &[Vec<(u32, f32, u64)>],
) -> Vec<Tv> {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let anchor = TrustAnchor::from_files(&certs.ca_cert_path(CaKind::Node), None).unwrap();
    let device_ca = TrustAnchor::from_files(&certs.ca_cert_path(CaKind::Device), None).unwrap();
    let mut tvs = Vec::new();
    for n in names {
        let identity =
            TlsIdentity::from_files(&certs.device_cert_path(n), &certs.device_key_path(n)).unwrap();
        let credentials = RoundCredentials {
            attestor: Arc::new(DeviceAttestor::new(&identity).unwrap()),
            verifier: DeviceVerifier::new(&device_ca).unwrap(),
        };
        let conn = endpoint
            .connect_with(client_config(identity, &anchor).unwrap(), addr, "localhost")
            .unwrap()
            .await
            .expect("handshake");
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::default();
        // Six TVs: rounds this small are declined by default.
        cfg.rounds.min_threshold = 5;
        cfg.rounds.min_split_colluders = 1;
        let (store, _) = BrainStore::open(dir.path().join("brain.redb"), cfg).unwrap();
        tvs.push(Tv {
            store,
            credentials,
            conn,
            frames: Vec::new(),
            _dir: dir,
        });
    }
    for (k, tv) in tvs.iter_mut().enumerate() {
        for &(item, rating, at) in &users[k % users.len()] {
            let ctx = ViewingContext::from_unix_utc(at);
            let id = ContentId::new(content_id(item)).unwrap();
            let ev = ViewingEvent::new(id, rating / 5.0, at, ctx).unwrap();
            tv.store.observe(ev).unwrap();
        }
    }
    tvs
}

/// One sync of every TV, each built and applied as its sync actor does;
/// every request frame is kept on its TV. Returns the round messages sent.
async fn sync_all(tvs: &mut [Tv], region: &Region) -> usize {
    let mut sent = 0;
    for tv in tvs.iter_mut() {
        let prepared = tv
            .store
            .prepare_sync(
                UploadKind::Delta,
                region.clone(),
                now_ms(),
                &tv.credentials,
                &mut rand::rng(),
            )
            .unwrap();
        assert_eq!(prepared.round_declined, None);
        sent += usize::from(prepared.request.round.is_some());
        let frame = encode_request(&prepared.request).unwrap();
        let body = exchange(&tv.conn, &frame, Duration::from_secs(20))
            .await
            .expect("exchange");
        tv.frames.push(frame);
        let accepted = decode_response(&body).unwrap().expect("accepted");
        tv.store.finish_sync(&prepared, &accepted).unwrap();
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tvs_learn_from_the_fleet_through_a_real_node_and_upload_nothing_identifying() {
    // A round of all six TVs, threshold 5 = k; a publication threshold of 0
    // so that six TVs' counts show (privacy does not depend on it).
    let Setup {
        node,
        titles,
        users,
        catalog,
        mut tvs,
        ..
    } = setup(
        r#"
        rate_limit_interval_secs = 0
        [learning]
        pair_titles = 8
        window = 2
        z = 0.0
        [learning.rounds]
        cohort = 6
        threshold = 5
        "#,
    )
    .await;

    // Sync round robin, each TV as its sync actor would, until the round is
    // folded and every TV holds the published knowledge.
    let region = Region::new("eu-west").unwrap();
    let start = Instant::now();
    let mut steps = 0;
    loop {
        steps += sync_all(&mut tvs, &region).await;
        let learned = node.node().learning_stats();
        let folded = learned.iter().any(|r| r.rounds.folded >= 1);
        let everywhere = tvs.iter().all(|tv| {
            let st = tv.store.state();
            st.fleet.order.len() >= 4 && !tv.store.privacy_status(now_ms()).unwrap().pending
        });
        if folded && everywhere {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no round folded and published in time: {learned:?}"
        );
    }
    // Every TV went through the four steps of the round.
    assert!(steps >= 4 * TVS, "{steps} round messages");

    // What each TV sent: nothing of its history, and only round messages.
    let mut masked_inputs = 0;
    for (i, tv) in tvs.iter().enumerate() {
        for frame in &tv.frames {
            for &(item, _, at) in &users[i] {
                let id = content_id(item);
                assert!(!contains(frame, id.as_bytes()), "tv {i} sent {id}");
                let title = &titles[&item];
                assert!(!contains(frame, title.as_bytes()), "tv {i} sent {title}");
                assert!(!contains(frame, &varint(at)), "tv {i} sent a timestamp");
            }
            let req = decode_request(&frame[4..]).unwrap();
            assert!(req.delta.is_empty(), "no pattern leaves the TV");
            if let Some(r) = &req.round {
                if let ToServer::MaskedInput(m) = &r.msg {
                    masked_inputs += 1;
                    // A masked input looks like noise: not the 0/1 vector.
                    let small = m
                        .masked
                        .iter()
                        .filter(|&&v| !(4..=u32::MAX - 4).contains(&v))
                        .count();
                    assert!(
                        small * 10 < m.masked.len(),
                        "masked input {small} small entries"
                    );
                }
            }
        }
        let status = tv.store.privacy_status(now_ms()).unwrap();
        let spent = status.budget.epsilon_spent;
        assert!(spent > 0.0 && spent <= 4.0 + 1e-9, "tv {i} spent {spent}");
        assert!(
            status.released_upto.is_some(),
            "tv {i}'s watches were released"
        );
    }
    assert_eq!(masked_inputs, TVS, "one masked input per TV per round");

    // What the node learned is the fleet's exact counts plus noise of the
    // scale it states: the masks cancelled in the sum (left in, every total
    // would be off by up to 2^31), and the noise is there (σ of a few units
    // for six TVs at the default budget).
    let totals = node.node().learned_totals(&region).expect("totals");
    let sigma = totals.sigma();
    assert!(sigma > 1.0 && sigma < 20.0, "noise scale {sigma}");
    assert_eq!(totals.contributors, TVS as u64);
    for &item in &catalog {
        // Successful watches (fraction >= 0.7: ratings 4 and 5) count.
        let exact = users
            .iter()
            .filter(|h| h.iter().any(|&(i, r, _)| i == item && r / 5.0 >= 0.7))
            .count() as f64;
        let id = ContentId::new(content_id(item)).unwrap();
        let got = totals.titles.get(&id).copied().unwrap_or(0.0);
        assert!(
            (got - exact).abs() <= 6.0 * sigma,
            "{id}: {got} for {exact} watches"
        );
    }
    // Every TV holds the node's publication.
    let published = node.node().learning_stats()[0].fleet_version;
    for tv in &tvs {
        assert_eq!(tv.store.state().fleet.version, published);
    }

    // A TV that has watched nothing yet (this one's state, history cleared)
    // starts from the region's most watched titles, and says so.
    let tv = &tvs[5];
    let mut fresh = tv.store.state().clone();
    fresh.clear_episodes();
    let index =
        omega_brain::CatalogIndex::build(&fresh.catalog, omega_brain::IndexConfig::default())
            .expect("index");
    let req = RecommendRequest::new(ViewingContext::new(20, 4).unwrap(), 3);
    let recs =
        omega_brain_core::recommend(&fresh, &index, &req, None, &RecommenderConfig::default())
            .unwrap();
    assert_eq!(recs[0].content_id, fresh.fleet.order[0], "{recs:?}");
    assert!(
        recs.iter().all(|r| r.reason == Reason::PopularInYourRegion),
        "{recs:?}"
    );
    node.shutdown().await;
}

/// k − 1 attacker devices and one victim (k = 5, all with real
/// certificates) sync with a node at its default rounds (t = 105): the
/// victim takes part, but no round is ever summed, folded or published, and
/// the victim's masked input never leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_minus_one_sybils_and_a_victim_never_get_a_round_folded() {
    let Setup { node, mut tvs, .. } = setup("rate_limit_interval_secs = 0\n").await;
    tvs.truncate(5);
    let region = Region::new("eu-west").unwrap();
    let mut sent = 0;
    for _ in 0..20 {
        sent += sync_all(&mut tvs, &region).await;
    }
    assert!(sent >= 5, "the TVs joined the round ({sent} messages)");
    let learned = &node.node().learning_stats()[0];
    assert_eq!(
        (learned.rounds.folded, learned.fleet_version),
        (0, 0),
        "{learned:?}"
    );
    assert_eq!(node.node().learned_totals(&region).unwrap().rounds, 0);
    let victim = &tvs[4];
    assert_eq!(victim.store.state().fleet.version, 0);
    for frame in &victim.frames {
        let req = decode_request(&frame[4..]).unwrap();
        assert!(
            !req.round
                .is_some_and(|r| matches!(r.msg, ToServer::MaskedInput(_))),
            "a masked input left the victim"
        );
    }
    node.shutdown().await;
}

/// Nodes sharing one Cassandra keyspace (`OMEGA_TEST_CQL`; skipped with a
/// message without it): nodes 1 and 2 each run a round with six TVs of
/// their own, both folded from the same (empty) stored totals. The store
/// then holds both rounds (neither node overwrote the other's), and node 3,
/// which folded nothing, serves the newer fleet version to its TV: the
/// version and titles the TVs of nodes 1 and 2 hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_keyspace_add_up_their_rounds_and_all_serve_the_newest() {
    use omega_constellation::store::{cql_test_target, fresh_test_store, PatternStore};
    let Some(cql) = cql_test_target() else {
        return;
    };
    // The keyspace and schema once, here; the nodes then find them.
    let (opts, store) = fresh_test_store(&cql).await.expect("keyspace created");
    let toml = format!(
        r#"
        rate_limit_interval_secs = 0
        [store]
        kind = "scylla"
        contact_points = ["{cql}"]
        keyspace = "{ks}"
        [learning]
        pair_titles = 8
        window = 2
        z = 0.0
        refresh_ms = 200
        [learning.rounds]
        cohort = 6
        threshold = 5
        "#,
        ks = opts.keyspace
    );
    let (_certs_dir, certs) = pki(3, 2 * TVS + 1);
    let mut nodes = Vec::new();
    for n in 1..=3 {
        nodes.push(start_node(&certs, &format!("node-{n}"), &toml).await);
    }
    let (titles, users) = histories();
    import_catalog(&nodes[0].1, &titles, &users).await;
    let names: Vec<String> = (0..=2 * TVS).map(|i| format!("tv-{i}")).collect();
    let mut fleets = Vec::new();
    for (n, range) in [0..TVS, TVS..2 * TVS, 2 * TVS..2 * TVS + 1]
        .into_iter()
        .enumerate()
    {
        fleets.push(connect_tvs(&certs, &names[range], nodes[n].1.quic_addr(), &users).await);
    }
    let region = Region::new("eu-west").unwrap();
    let stats = |n: usize| nodes[n].1.node().learning_stats()[0].clone();

    // Nodes 1 and 2 run their rounds side by side; node 3's single TV
    // syncs too (its round never fills).
    let start = Instant::now();
    while stats(0).rounds.folded < 1 || stats(1).rounds.folded < 1 {
        for fleet in &mut fleets {
            sync_all(fleet, &region).await;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no rounds folded in time: {:?} {:?}",
            stats(0),
            stats(1)
        );
    }
    let stored = {
        let (s, r) = (store, region.clone());
        tokio::task::spawn_blocking(move || {
            let t = s.region_totals(&r);
            (s, t)
        })
        .await
        .unwrap()
    };
    let (_store, totals) = stored;
    let totals = totals.unwrap().expect("totals stored");
    assert_eq!(
        (totals.rounds, totals.contributors),
        (2, 2 * TVS as u64),
        "both nodes' rounds are in the store"
    );
    assert_eq!(stats(2).rounds.folded, 0, "node 3 folded nothing");

    // Every node serves the store's totals, as version 2, within a few
    // syncs (each node re-reads them every 200 ms of syncs).
    let start = Instant::now();
    loop {
        for fleet in &mut fleets {
            sync_all(fleet, &region).await;
        }
        let versions: Vec<u64> = fleets
            .iter()
            .flatten()
            .map(|tv| tv.store.state().fleet.version)
            .collect();
        if versions.iter().all(|&v| v == 2) && (0..3).all(|n| stats(n).fleet_version == 2) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "not every TV got version 2: {versions:?}"
        );
        // Paced by the node's refresh, not a synchronization point.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (n, (_, node)) in nodes.iter().enumerate() {
        assert_eq!(
            node.node().learned_totals(&region).as_ref(),
            Some(&totals),
            "node {} serves the stored totals",
            n + 1
        );
    }
    let order = |tv: &Tv| tv.store.state().fleet.order.clone();
    assert!(!order(&fleets[0][0]).is_empty());
    assert_eq!(
        order(&fleets[2][0]),
        order(&fleets[0][0]),
        "node 3's TV holds the same fleet knowledge"
    );
    assert_eq!(order(&fleets[1][0]), order(&fleets[0][0]));
    for (_, node) in nodes {
        node.shutdown().await;
    }
}
