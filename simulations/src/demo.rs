//! `omega-sim demo`: the README's main job, the whole learning loop on one
//! machine with real parts.
//!
//! 1. A fresh PKI (omega-certs): a node certificate and one device
//!    certificate per TV.
//! 2. A real `omega-node` (its library, `RunningNode`, in process on
//!    loopback) with an embedded redb store; the MovieLens catalog is
//!    imported through its admin API and embedded by all-MiniLM-L6-v2 (a
//!    generated catalog when the data set is absent).
//! 3. One TV runs the daemon's own actors and socket server (what
//!    `omega-braind` runs, in process): it syncs the catalog from the node,
//!    then the demo acts as a TV app on its socket, observing one MovieLens
//!    user's history and asking for recommendations.
//! 4. A fleet of simulated TVs (the TV's store, `BrainStore`, one per
//!    MovieLens user, each with its own certificate and QUIC connection)
//!    syncs with the node together with that TV until one aggregation
//!    round is summed, folded and published.
//! 5. The TV's recommendations again, now drawing on what the fleet
//!    published, and the figures: syncs, bytes per sync, published titles,
//!    privacy budget spent.
//!
//! The node's sync rate limit is off (the demo drives syncs back to back
//! instead of every 5–15 minutes) and the fleet is small, so the round's
//! publication threshold lets through only what many of these TVs watched.
//! Logs go to `<work dir>/demo.log`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use omega_brain::store::{BrainStore, RoundCredentials, StoreConfig};
use omega_brain::BrainError;
use omega_brain_core::round_client::RoundClientConfig;
use omega_brain_core::UploadKind;
use omega_certs::{CaKind, CertDir};
use omega_privacy::secagg::Verifier;
use omega_protocol::codec::{decode_response, encode_request};
use omega_protocol::{CatalogItem, ContentId, Region, ViewingEvent, DEFAULT_REGION};
use omega_transport::attest::{DeviceAttestor, DeviceVerifier};
use omega_transport::quic::{self, TlsIdentity, TrustAnchor};
use serde_json::{json, Value};

use crate::eval::local::{utc_context, watch_fraction};
use crate::movielens::{self, UserHistory};

/// Options of `omega-sim demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// all-MiniLM-L6-v2 directory.
    pub model_dir: PathBuf,
    /// MovieLens directory (u.item + u.data, or movies.csv + ratings.csv).
    pub dataset: PathBuf,
    /// Where certificates, stores and the log go; a temporary directory when
    /// `None`.
    pub work_dir: Option<PathBuf>,
    /// Simulated TVs in the fleet besides the daemon's.
    pub fleet: usize,
}

const WAIT: Duration = Duration::from_secs(30);
const DAY_MS: u64 = 86_400_000;
/// The MovieLens user the daemon's TV replays (the fleet replays others).
const DEMO_USER_INDEX: usize = 0;
/// Titles of a generated catalog when no data set is found.
const GENERATED_TITLES: usize = 300;

/// Runs the demo, printing as it goes.
pub async fn run(opts: DemoOptions) -> Result<()> {
    let tmp;
    let work = match &opts.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let log = work.join("demo.log");
    init_log(&log)?;
    println!("Omega demo: one node, one TV daemon and a fleet of simulated TVs on this machine.");
    println!("(details in {})", log.display());

    let (items, users) = data(&opts.dataset, opts.fleet + 1)?;
    let fleet = opts.fleet.min(users.len().saturating_sub(1));
    let least = usize::from(RoundClientConfig::default().min_threshold);
    if fleet < least {
        bail!("the fleet needs at least {least} TVs (the TVs' least round threshold); got {fleet}");
    }

    println!("\n1. Certificates");
    let certs = pki(&work.join("pki"), fleet)?;
    println!(
        "   a node certificate and {} device certificates (ECDSA P-256)",
        fleet + 1
    );

    println!("\n2. A constellation node with its catalog");
    let node = start_node(&opts.model_dir, &certs, &work, fleet).await?;
    let t = Instant::now();
    import_catalog(node.admin_addr(), &items).await?;
    println!(
        "   {} titles imported and embedded by all-MiniLM-L6-v2 in {:.0} s",
        items.len(),
        t.elapsed().as_secs_f64()
    );

    println!(
        "\n3. A TV (the daemon's actors and socket) watching as MovieLens user {}",
        users[DEMO_USER_INDEX].id
    );
    let tv = Tv::start(&opts.model_dir, &certs, &work, node.quic_addr()).await?;
    tv.sync_until(|s| s["catalog_items"].as_u64() == Some(items.len() as u64))
        .await
        .context("the TV's catalog sync")?;
    let demo_user = &users[DEMO_USER_INDEX];
    let watched = tv.replay(demo_user, &items).await?;
    println!("   its recent history (of {watched} watches):");
    for line in tv.recent(&items, demo_user, 5) {
        println!("     {line}");
    }
    println!("   recommendations before federation:");
    let before = tv.recommend().await?;
    print_recs(&before);

    println!("\n4. The fleet: {fleet} simulated TVs replay MovieLens users and sync with the node");
    let region = Region::new(DEFAULT_REGION)?;
    let mut sims = Vec::with_capacity(fleet);
    let bar = bar(fleet as u64, "TVs connected and loaded");
    // One verifier for the simulated TVs: it remembers what it checked, so
    // a member list is checked once, not once per TV.
    let verifier: Arc<dyn Verifier> = DeviceVerifier::new(&TrustAnchor::from_files(
        &certs.ca_cert_path(CaKind::Device),
        None,
    )?)?;
    for (k, user) in users.iter().skip(1).take(fleet).enumerate() {
        sims.push(
            SimTv::start(
                &verifier,
                &certs,
                &format!("tv-{k:04}"),
                node.quic_addr(),
                user,
                &items,
            )
            .await?,
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Round 1 learns what is watched (no pair titles yet); the fleet then
    // watches the rest of its histories, and round 2 learns what is watched
    // together among the most watched titles.
    for round in 1..=2 {
        run_round(&node, &mut sims, &tv, &region).await?;
        let stats = node.node().learning_stats();
        let r = stats.first().context("no region")?;
        println!(
            "   round {round}: the node summed the TVs' masked noisy releases (it saw only the sum); now published, above {:.0} (3 x the noise): {} titles, {} watched-together links",
            3.0 * r.sigma,
            r.published_titles,
            r.published_partners
        );
        if round == 1 {
            // The next day (for the fleet's clocks: their daily budget
            // renews), the fleet watches the rest of its histories.
            for s in sims.iter_mut() {
                s.watch_rest(&items)?;
                s.clock_offset_ms = DAY_MS + 3_600_000;
            }
            println!("   the next day, the fleet watches the rest of its histories");
        }
    }
    let stats = node.node().learning_stats();
    let region_stats = stats.first().context("no region")?;
    tv.sync_until(|s| {
        s["fleet_version"].as_u64() == Some(region_stats.fleet_version)
            && s["fleet_titles"].as_u64() == Some(region_stats.published_titles as u64)
    })
    .await
    .context("the TV's fleet pages")?;

    println!("\n5. The same TV after federation");
    println!("   recommendations:");
    let after = tv.recommend().await?;
    print_recs(&after);
    let st = tv.call(json!({"op": "stats"})).await?;
    let sync = &st["sync"];
    let privacy = &st["privacy"];
    let syncs = sync["syncs_ok"].as_u64().unwrap_or(0).max(1);
    println!(
        "   this TV: {} syncs, {:.0} bytes up and {:.0} bytes down per sync on average",
        syncs,
        sync["bytes_up"].as_f64().unwrap_or(0.0) / syncs as f64,
        sync["bytes_down"].as_f64().unwrap_or(0.0) / syncs as f64,
    );
    println!(
        "   privacy: epsilon {:.2} of {:.1} spent today (delta {}); this release: epsilon {:.2} if at least the round's threshold of TVs are honest, {:.1} if every other TV and the node collude",
        privacy["budget"]["epsilon_spent"].as_f64().unwrap_or(0.0),
        privacy["budget"]["epsilon_budget"].as_f64().unwrap_or(0.0),
        privacy["budget"]["delta"],
        privacy["epsilon_central"].as_f64().unwrap_or(0.0),
        privacy["epsilon_local"].as_f64().unwrap_or(0.0),
    );
    let up: u64 = sims.iter().map(|s| s.bytes_up).sum();
    let down: u64 = sims.iter().map(|s| s.bytes_down).sum();
    let n: u64 = sims.iter().map(|s| s.syncs).sum::<u64>().max(1);
    println!(
        "   the fleet: {n} syncs, {:.0} bytes up and {:.0} bytes down per sync on average; the largest upload (a masked input) {} bytes",
        up as f64 / n as f64,
        down as f64 / n as f64,
        sims.iter().map(|s| s.largest_up).max().unwrap_or(0)
    );
    tv.stop().await;
    node.shutdown().await;
    println!("\nDone: viewing histories stayed on the TVs; the node learned only noisy sums over the fleet.");
    Ok(())
}

fn init_log(path: &Path) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second demo in the same process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template(&format!("   [{{bar:30}}] {{pos}}/{{len}} {what}"))
    {
        b.set_style(style);
    }
    b
}

/// The catalog and at least `users` users: MovieLens when `dir` holds it,
/// else a generated catalog and users with seeded tastes.
fn data(dir: &Path, users: usize) -> Result<(Vec<CatalogItem>, Vec<UserHistory>)> {
    if dir.exists() {
        let ds = movielens::read_dataset(dir)?;
        println!(
            "Data: {} ({} titles, {} users)",
            dir.display(),
            ds.items.len(),
            ds.users.len()
        );
        return Ok((ds.items, ds.users));
    }
    println!(
        "Data: {} not found; a generated catalog of {GENERATED_TITLES} titles and {users} users",
        dir.display()
    );
    Ok(movielens::generated(GENERATED_TITLES, users, 7))
}

fn pki(dir: &Path, fleet: usize) -> Result<CertDir> {
    let mut certs = CertDir::init(dir).context("creating the PKI")?;
    certs.issue_node("node-1", &["localhost".into(), "127.0.0.1".into()])?;
    certs.issue_device("tv-living-room")?;
    for k in 0..fleet {
        certs.issue_device(&format!("tv-{k:04}"))?;
    }
    Ok(certs)
}

async fn start_node(
    model: &Path,
    certs: &CertDir,
    work: &Path,
    fleet: usize,
) -> Result<omega_node::RunningNode> {
    // One round over the whole fleet (and the daemon's TV): threshold 60 %,
    // and no less than the TVs accept (else they decline).
    let cohort = fleet + 1;
    let least = RoundClientConfig::default().least_threshold(u16::try_from(cohort)?);
    let threshold = (cohort * 3).div_ceil(5).max(usize::from(least));
    // Phases close as soon as every member answered; a TV that does not
    // answer (one that declines a round, e.g. its budget spent) holds a
    // phase for 20 s at most (the default is 40 minutes, for TVs that sync
    // every 5-15 minutes). The next round may
    // open as soon as one ends (the default waits a day).
    let mut config: omega_node::Config = toml::from_str(&format!(
        "rate_limit_interval_secs = 0\n[learning]\ninterval_ms = 0\npair_titles = 64\n[learning.rounds]\ncohort = {cohort}\nthreshold = {threshold}\njoin_ms = 20000\nshares_ms = 20000\ninputs_ms = 20000\nunmask_ms = 20000\n"
    ))
    .context("the demo's node configuration")?;
    config.listen = "127.0.0.1:0".parse()?;
    config.admin = "127.0.0.1:0".parse()?;
    // The node gets what `omega-certs export-node` gives it: CA
    // certificates, CRLs and its own key, no CA key.
    let node_certs = work.join("node-certs");
    certs
        .export_node("node-1", &node_certs)
        .context("exporting the node's certificates")?;
    omega_node::RunningNode::start(omega_node::ServeOptions {
        data_dir: work.join("node"),
        model_dir: Some(model.to_path_buf()),
        certs_dir: node_certs,
        config,
        admin_token: Some(ADMIN_TOKEN.into()),
    })
    .await
    .context("starting omega-node")
}

const ADMIN_TOKEN: &str = "demo-admin-token-not-secret-0123456789";

async fn import_catalog(admin: SocketAddr, items: &[CatalogItem]) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut body = String::new();
    for it in items {
        body.push_str(&serde_json::to_string(it)?);
        body.push('\n');
    }
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!("embedding {} titles on the node", items.len()));
    spinner.enable_steady_tick(Duration::from_millis(200));
    let mut s = tokio::net::TcpStream::connect(admin).await?;
    let req = format!(
        "POST /api/v1/content/import HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    spinner.finish_and_clear();
    if !out.starts_with("HTTP/1.1 200") {
        bail!(
            "catalog import refused: {}",
            out.lines().next().unwrap_or("")
        );
    }
    Ok(())
}

/// The daemon's TV: its actors and socket server in this process.
struct Tv {
    socket: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Tv {
    async fn start(model: &Path, certs: &CertDir, work: &Path, node: SocketAddr) -> Result<Tv> {
        use omega_brain_daemon::config::DaemonConfig;
        use omega_brain_daemon::server::{self, ServerConfig};
        let data = work.join("tv");
        std::fs::create_dir_all(&data)?;
        let cfg: DaemonConfig = toml::from_str(&format!(
            "[sync]\nnodes = [\"{node}\"]\ndevice_cert = {:?}\ndevice_key = {:?}\nnode_ca = {:?}\ndevice_ca = {:?}\nregion = \"{DEFAULT_REGION}\"\ninterval_min_secs = 3000\ninterval_max_secs = 3000\nmax_catalog_pages = 50\n",
            certs.device_cert_path("tv-living-room"),
            certs.device_key_path("tv-living-room"),
            certs.ca_cert_path(CaKind::Node),
            certs.ca_cert_path(CaKind::Device),
        ))
        .context("the TV's configuration")?;
        cfg.validate()?;
        let socket = data.join("brain.sock");
        let listener = server::bind(&socket).await?;
        let (brain, _task) = omega_brain::actors::Brain::start(cfg.brain_config(&data, model))
            .await
            .context("starting the TV's actors")?;
        let server_cfg = ServerConfig {
            shutdown_grace: Duration::from_secs(2),
            debug_ops: false,
            ..cfg.server_config(socket.clone(), &data)
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            server::serve(listener, brain, server_cfg, async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(Tv {
            socket,
            stop,
            server,
        })
    }

    async fn call(&self, mut req: Value) -> Result<Value> {
        req["id"] = json!(1);
        let r = omega_brain_daemon::client::call(&self.socket, &req).await?;
        if r["ok"] != json!(true) {
            bail!("{req} -> {r}");
        }
        Ok(r["result"].clone())
    }

    /// `sync.now` until `done(stats)`, at most 100 times.
    async fn sync_until(&self, done: impl Fn(&Value) -> bool) -> Result<()> {
        for _ in 0..100 {
            if done(&self.call(json!({"op": "stats"})).await?) {
                return Ok(());
            }
            let r = self.call(json!({"op": "sync.now"})).await?;
            if r["outcome"] != json!("ok") {
                tracing::info!(%r, "demo TV sync");
            }
        }
        bail!("not done after 100 syncs")
    }

    /// Observes the user's history but its last watch; returns the count.
    async fn replay(&self, user: &UserHistory, items: &[CatalogItem]) -> Result<usize> {
        let train = &user.interactions[..user.interactions.len() - 1];
        for x in train {
            let id = &items[x.item as usize].id;
            self.call(json!({
                "op": "observe",
                "content_id": id,
                "fraction": watch_fraction(x.rating),
                "at": x.timestamp,
            }))
            .await?;
        }
        Ok(train.len())
    }

    fn recent(&self, items: &[CatalogItem], user: &UserHistory, n: usize) -> Vec<String> {
        let train = &user.interactions[..user.interactions.len() - 1];
        train
            .iter()
            .rev()
            .take(n)
            .map(|x| {
                let verb = if watch_fraction(x.rating) >= 0.7 {
                    "finished"
                } else {
                    "stopped early"
                };
                format!("{} ({verb})", items[x.item as usize].title)
            })
            .collect()
    }

    async fn recommend(&self) -> Result<Vec<(String, String)>> {
        let r = self
            .call(json!({"op": "recommend", "hour": 20, "weekday": 5, "k": 5}))
            .await?;
        Ok(r["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        (
                            i["title"].as_str().unwrap_or("").to_owned(),
                            i["reason_text"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

fn print_recs(recs: &[(String, String)]) {
    for (i, (title, why)) in recs.iter().enumerate() {
        println!("     {}. {title}: {why}", i + 1);
    }
}

/// Syncs the fleet and the daemon's TV until the node folds one more round.
async fn run_round(
    node: &omega_node::RunningNode,
    sims: &mut [SimTv],
    tv: &Tv,
    region: &Region,
) -> Result<()> {
    let folded = |n: &omega_node::RunningNode| {
        n.node()
            .learning_stats()
            .first()
            .map_or(0, |r| r.rounds.folded)
    };
    let before = folded(node);
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("   {spinner} {msg}")?);
    let deadline = Instant::now() + Duration::from_secs(600);
    while folded(node) == before {
        for s in sims.iter_mut() {
            s.sync(region).await?;
        }
        tv.call(json!({"op": "sync.now"})).await?;
        let stats = node.node().learning_stats();
        let phase = stats
            .first()
            .and_then(|r| r.phase.clone())
            .unwrap_or_else(|| "opening".into());
        bar.set_message(format!("aggregation round, phase: {phase}"));
        bar.tick();
        if Instant::now() > deadline {
            bail!("no round was folded within 10 minutes: {stats:?}");
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// One simulated TV of the fleet: the TV's store (in memory) and its own
/// QUIC connection with its own certificate.
struct SimTv {
    store: BrainStore,
    /// Its device certificate's key and the device CA, for round keys.
    credentials: RoundCredentials,
    /// Added to the wall clock for the TV's ledger (a simulated later day).
    clock_offset_ms: u64,
    /// The second half of its history, watched after the first round.
    later: Vec<crate::movielens::Interaction>,
    conn: quinn::Connection,
    syncs: u64,
    bytes_up: u64,
    bytes_down: u64,
    largest_up: u64,
}

impl SimTv {
    async fn start(
        verifier: &Arc<dyn Verifier>,
        certs: &CertDir,
        name: &str,
        node: SocketAddr,
        user: &UserHistory,
        items: &[CatalogItem],
    ) -> Result<SimTv> {
        let identity =
            TlsIdentity::from_files(&certs.device_cert_path(name), &certs.device_key_path(name))?;
        let anchor = TrustAnchor::from_files(&certs.ca_cert_path(CaKind::Node), None)?;
        let credentials = RoundCredentials {
            attestor: Arc::new(DeviceAttestor::new(&identity)?),
            verifier: Arc::clone(verifier),
        };
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(quic::client_config(identity, &anchor)?);
        let conn = tokio::time::timeout(WAIT, endpoint.connect(node, "localhost")?)
            .await
            .context("handshake timed out")??;
        let backend = redb::backends::InMemoryBackend::new();
        // A small page cache: hundreds of these live in one process.
        let cfg = StoreConfig {
            cache_bytes: 256 << 10,
            ..StoreConfig::default()
        };
        let store = BrainStore::open_with_backend(backend, Path::new(name), cfg)
            .map_err(|e: BrainError| anyhow::anyhow!("{name}: {e}"))?;
        let half = user.interactions.len() / 2;
        let mut tv = SimTv {
            store,
            credentials,
            clock_offset_ms: 0,
            later: user.interactions[half..].to_vec(),
            conn,
            syncs: 0,
            bytes_up: 0,
            bytes_down: 0,
            largest_up: 0,
        };
        for x in &user.interactions[..half] {
            tv.watch(x, items)?;
        }
        Ok(tv)
    }

    fn watch(&mut self, x: &crate::movielens::Interaction, items: &[CatalogItem]) -> Result<()> {
        let id: &ContentId = &items[x.item as usize].id;
        let ev = ViewingEvent::new(
            id.clone(),
            watch_fraction(x.rating),
            x.timestamp,
            utc_context(x.timestamp)?,
        )?;
        self.store.observe(ev)?;
        Ok(())
    }

    /// Watches the second half of its history.
    fn watch_rest(&mut self, items: &[CatalogItem]) -> Result<()> {
        for x in std::mem::take(&mut self.later) {
            self.watch(&x, items)?;
        }
        Ok(())
    }

    /// One sync, built and applied as the TV's sync actor does.
    async fn sync(&mut self, region: &Region) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64
            + self.clock_offset_ms;
        let prepared = self.store.prepare_sync(
            UploadKind::Delta,
            region.clone(),
            now,
            &self.credentials,
            &mut rand::rng(),
        )?;
        if let Some(e) = &prepared.round_declined {
            tracing::info!(error = %e, "a fleet TV declined a round message");
        }
        let frame = encode_request(&prepared.request)?;
        let body = quic::exchange(&self.conn, &frame, WAIT).await?;
        self.syncs += 1;
        self.bytes_up += frame.len() as u64;
        self.largest_up = self.largest_up.max(frame.len() as u64);
        self.bytes_down += body.len() as u64 + 4;
        match decode_response(&body)? {
            Ok(accepted) => {
                self.store.finish_sync(&prepared, &accepted)?;
            }
            Err(e) => tracing::info!(error = %e, "a fleet TV's sync was refused"),
        }
        Ok(())
    }
}
