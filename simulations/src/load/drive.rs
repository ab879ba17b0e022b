//! The load generator proper: N devices syncing with a node over real QUIC
//! with mutual TLS, each with its own certificate. Used by `omega-sim load`
//! and by the `quick_load` example (which supplies its own in-process node).
//!
//! Every device is one task. Before the clock starts each device uploads
//! its snapshot (version 0 to 1) so that the timed syncs are deltas the node
//! accepts; with reused connections that connection is kept, with fresh ones
//! it is closed and every timed sync opens a new connection (a full mTLS
//! handshake: the node never resumes sessions). Devices start over the
//! ramp-up, then sync back to back or at their share of a fixed rate until
//! the deadline. Misbehaving devices ([`Behaviour`]) run beside the good
//! ones and are reported apart. Latency is measured from sending (or, fresh,
//! from connecting) to the decoded answer, into hdrhistogram histograms.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use omega_protocol::codec::{decode_response, encode_wire_request};
use omega_protocol::limits::MAX_RESPONSE_FRAME;
use omega_protocol::wire::WireRequest;
use omega_protocol::{
    CodecError, ContextBucket, DayKind, DayPart, DomainError, Embedding, PatternDelta, PatternId,
    PatternSummary, Region, SyncError, SyncKind, SyncRequest, EMBEDDING_DIM,
};
use omega_transport::frame::read_frame;
use omega_transport::quic::{exchange, ExchangeError, HandshakeFailure};
use tokio::sync::Semaphore;

/// How devices use their connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Connections {
    /// One connection per device, kept for every sync.
    Reused,
    /// A new connection (full mTLS handshake) for every sync.
    Fresh,
}

impl Connections {
    /// `reused` or `fresh` (the JSON's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Connections::Reused => "reused",
            Connections::Fresh => "fresh",
        }
    }
}

/// What a device does; everything but `Good` is a fault (`--faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Syncs as a TV does.
    Good,
    /// Sends frames whose bodies are random bytes, or whose header announces
    /// more than the node accepts, on a valid connection.
    Malformed,
    /// Presents a certificate from a CA the node does not trust.
    WrongCa,
    /// Presents a certificate of the node's CA that is revoked.
    Revoked,
    /// Sends [`BURST`] syncs at once on its connection, past any rate limit.
    Burst,
    /// Connects, sends half a request and closes the connection.
    DropMidStream,
}

impl Behaviour {
    /// The faults, in the order faulty devices are given them.
    pub const FAULTS: [Behaviour; 5] = [
        Behaviour::Malformed,
        Behaviour::WrongCa,
        Behaviour::Revoked,
        Behaviour::Burst,
        Behaviour::DropMidStream,
    ];
}

/// Syncs a [`Behaviour::Burst`] device sends at once.
pub const BURST: usize = 8;

/// Shortest pause between a faulty device's attempts when no rate is set,
/// so that a handful of faulty devices do not become a handshake flood.
const FAULT_PAUSE: Duration = Duration::from_millis(50);

/// One simulated device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its TLS client configuration (its certificate and the node's CA).
    pub config: quinn::ClientConfig,
    /// What it does.
    pub behaviour: Behaviour,
}

/// How to drive the devices.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    /// The node's QUIC address.
    pub addr: SocketAddr,
    /// The name the node's certificate is checked against.
    pub server_name: String,
    /// Reused or fresh connections.
    pub connections: Connections,
    /// The timed window (ramp-up included).
    pub duration: Duration,
    /// Devices start evenly spread over this much of the window.
    pub ramp_up: Duration,
    /// Syncs per second over all devices; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Client endpoints (UDP sockets) the devices are spread over.
    pub endpoints: usize,
    /// Handshakes in progress at once while connecting before the window.
    pub handshakes: usize,
    /// One exchange's (and one handshake's) timeout.
    pub timeout: Duration,
    /// Connect every device, upload its snapshot, and keep the connections
    /// open instead of running the timed window.
    pub hold: bool,
    /// The region the requests name.
    pub region: Region,
}

/// Counters the progress display reads while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    /// Completed syncs (timed window).
    pub syncs: AtomicU64,
    /// Failed attempts, `RetryAfter` excluded.
    pub failures: AtomicU64,
    /// Connections open now (hold: connected devices).
    pub connected: AtomicUsize,
    /// Devices through their setup (snapshot uploaded or given up).
    pub ready: AtomicUsize,
}

/// A latency histogram (microseconds) shared by the devices that record
/// into it: one histogram spans about 190 KiB (1 µs to an hour at 3
/// significant digits), too much to keep one per device when 100,000 are
/// connected; recording is a short uncontended lock per sync.
pub type SharedLatency = Arc<parking_lot::Mutex<Histogram<u64>>>;

fn latency_histogram() -> SharedLatency {
    Arc::new(parking_lot::Mutex::new(
        Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant, valid histogram bounds"),
    ))
}

/// One device's or the whole run's figures. Counters are its own; the
/// latency histogram may be shared with other tallies (see [`Tally::sibling`]).
#[derive(Debug)]
pub struct Tally {
    /// Latency of completed syncs, microseconds.
    pub latency_us: SharedLatency,
    /// Completed syncs.
    pub ok: u64,
    /// Attempts (completed or not).
    pub attempts: u64,
    /// Outcomes other than success, by kind (`RetryAfter` among them).
    pub errors: BTreeMap<String, u64>,
    /// Request bytes of completed syncs (frames with headers).
    pub up_bytes: u64,
    /// Answer bytes of completed syncs (frames with headers).
    pub down_bytes: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally::default_with(latency_histogram())
    }
}

impl Tally {
    /// A tally with no counts that records latency into `self`'s histogram.
    pub fn sibling(&self) -> Tally {
        Tally::default_with(self.latency_us.clone())
    }

    fn default_with(latency_us: SharedLatency) -> Tally {
        Tally {
            latency_us,
            ok: 0,
            attempts: 0,
            errors: BTreeMap::new(),
            up_bytes: 0,
            down_bytes: 0,
        }
    }

    /// Adds `other`'s counts into `self`, and its latencies unless the two
    /// share a histogram.
    pub fn merge(&mut self, other: &Tally) {
        if !Arc::ptr_eq(&self.latency_us, &other.latency_us) {
            let theirs = other.latency_us.lock();
            // Both have the same bounds: adding cannot fail.
            let _ = self.latency_us.lock().add(&*theirs);
        }
        self.ok += other.ok;
        self.attempts += other.attempts;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.up_bytes += other.up_bytes;
        self.down_bytes += other.down_bytes;
    }

    /// Failed attempts: errors except `RetryAfter`.
    pub fn failures(&self) -> u64 {
        self.errors
            .iter()
            .filter(|(k, _)| k.as_str() != RETRY_AFTER)
            .map(|(_, v)| v)
            .sum()
    }

    /// A latency quantile in milliseconds (0 when nothing completed).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let h = self.latency_us.lock();
        if h.is_empty() {
            return 0.0;
        }
        h.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest latency in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.latency_us.lock().max() as f64 / 1000.0
    }

    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    fn record(&mut self, started: Instant, up: usize, down: usize) {
        let us = started.elapsed().as_micros().max(1) as u64;
        let mut h = self.latency_us.lock();
        let high = h.high();
        let _ = h.record(us.min(high));
        self.ok += 1;
        self.up_bytes += up as u64;
        self.down_bytes += down as u64;
    }
}

/// The error kind of a refused sync that asks to come back later.
pub const RETRY_AFTER: &str = "RetryAfter";

/// What a run measured.
#[derive(Debug)]
pub struct DriveReport {
    /// The timed window's length (hold: the time taken to connect).
    pub elapsed: Duration,
    /// Good devices.
    pub good: Tally,
    /// Faulty devices.
    pub faulty: Tally,
    /// Most connections open at once.
    pub connected_max: usize,
    /// Hold: the open connections (dropping them closes them).
    pub held: Vec<quinn::Connection>,
}

impl DriveReport {
    /// Good and faulty together.
    pub fn all(&self) -> Tally {
        let mut t = Tally::default();
        t.merge(&self.good);
        t.merge(&self.faulty);
        t
    }
}

fn pattern(seed: u32) -> PatternSummary {
    let v: Vec<f32> = (0..EMBEDDING_DIM)
        .map(|i| ((i as f32 * 0.37 + seed as f32) * 1.3).sin())
        .collect();
    PatternSummary {
        id: PatternId(1),
        bucket: ContextBucket {
            day_part: DayPart::Evening,
            day_kind: DayKind::Weekday,
        },
        embedding: Embedding::new(v).expect("finite values, not all zero"),
        success_rate: 0.8,
        samples: 10,
    }
}

/// A device's request: a snapshot adding its one pattern at `version` 0, a
/// delta updating it otherwise (`version` to `version + 1`).
pub fn request(region: &Region, version: u64, seed: u32) -> SyncRequest {
    // Two values of the pattern, alternating, so each delta changes it.
    let p = pattern(seed.wrapping_add((version % 2) as u32));
    let (kind, delta) = if version == 0 {
        let delta = PatternDelta {
            added: vec![p],
            ..Default::default()
        };
        (SyncKind::Snapshot, delta)
    } else {
        let delta = PatternDelta {
            updated: vec![p],
            ..Default::default()
        };
        (SyncKind::Delta, delta)
    };
    SyncRequest {
        kind,
        base_version: version,
        pattern_version: version + 1,
        global_version: 0,
        catalog_version: u64::MAX,
        region: region.clone(),
        delta,
        round: None,
        fleet: Default::default(),
    }
}

/// A device's [`request`]s in wire form, quantized once (the embedding's
/// quantization is the TV's work, not the node's, and took a fifth of the
/// load generator's CPU when redone for every sync): a sync only sets the
/// versions and encodes. The frames are the ones `encode_request` makes.
#[derive(Debug, Clone)]
pub struct Requests {
    /// Version 0, then odd and even versions.
    forms: [WireRequest; 3],
}

impl Requests {
    /// The requests of the device with `seed` in `region`.
    pub fn new(region: &Region, seed: u32) -> Result<Self, DomainError> {
        let wire = |v| WireRequest::try_from_domain(&request(region, v, seed));
        Ok(Self {
            forms: [wire(0)?, wire(1)?, wire(2)?],
        })
    }

    /// The request frame from `version` to `version + 1`.
    pub fn frame(&self, version: u64) -> Result<Vec<u8>, CodecError> {
        let form = match version {
            0 => 0,
            v => 1 + (v % 2 == 0) as usize,
        };
        let mut w = self.forms[form].clone();
        w.base_version = version;
        w.pattern_version = version + 1;
        encode_wire_request(&w)
    }
}

/// The variant name of a `Debug`-printed enum value.
fn variant(debug: String) -> String {
    let end = debug
        .find(|c: char| !c.is_alphanumeric() && c != '_')
        .unwrap_or(debug.len());
    debug[..end].to_owned()
}

fn sync_error_kind(e: &SyncError) -> String {
    variant(format!("{e:?}"))
}

fn connection_error_kind(e: &quinn::ConnectionError) -> String {
    match HandshakeFailure::of(e) {
        HandshakeFailure::NotTls => match e {
            quinn::ConnectionError::TimedOut => "Timeout".into(),
            quinn::ConnectionError::ApplicationClosed(c) => {
                format!("Closed{}", u64::from(c.error_code))
            }
            other => format!("Connection{}", variant(format!("{other:?}"))),
        },
        f => format!("Handshake{}", variant(format!("{f:?}"))),
    }
}

fn exchange_error_kind(e: &ExchangeError) -> String {
    match e {
        ExchangeError::Timeout(_) => "Timeout".into(),
        ExchangeError::Connection(c) => connection_error_kind(c),
        // A stream that broke while the answer was read (reset, stopped,
        // the connection lost) is not a malformed frame: named by what
        // happened, so that `ExchangeCodec` means the node's bytes were bad.
        ExchangeError::Codec(CodecError::Io(io)) => {
            match io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<quinn::ReadError>())
            {
                Some(quinn::ReadError::ConnectionLost(c)) => connection_error_kind(c),
                Some(r) => format!("Read{}", variant(format!("{r:?}"))),
                None => "ExchangeIo".into(),
            }
        }
        other => match other.handshake_failure() {
            HandshakeFailure::NotTls => format!("Exchange{}", variant(format!("{other:?}"))),
            f => format!("Handshake{}", variant(format!("{f:?}"))),
        },
    }
}

/// Shared by every device task.
#[derive(Debug)]
struct Shared {
    opts: DriveOptions,
    endpoints: Vec<quinn::Endpoint>,
    handshakes: Semaphore,
    live: Arc<Live>,
    /// Latencies of the good devices, then of the faulty ones.
    latency: [SharedLatency; 2],
    devices: usize,
    /// When the timed window starts (set once every device is ready).
    start: tokio::sync::watch::Receiver<Option<Instant>>,
}

impl Shared {
    async fn connect(
        &self,
        index: usize,
        config: &quinn::ClientConfig,
    ) -> Result<quinn::Connection, String> {
        let endpoint = &self.endpoints[index % self.endpoints.len()];
        let connecting = endpoint
            .connect_with(config.clone(), self.opts.addr, &self.opts.server_name)
            .map_err(|e| format!("Connect{}", variant(format!("{e:?}"))))?;
        match tokio::time::timeout(self.opts.timeout, connecting).await {
            Err(_) => Err("Timeout".into()),
            Ok(Err(e)) => Err(connection_error_kind(&e)),
            Ok(Ok(c)) => Ok(c),
        }
    }

    /// One sync on `conn`: the new version, or the error kind.
    async fn sync(
        &self,
        conn: &quinn::Connection,
        requests: &Requests,
        version: u64,
        tally: &mut Tally,
        started: Instant,
    ) -> Result<u64, String> {
        let frame = requests
            .frame(version)
            .map_err(|e| format!("Encode{}", variant(format!("{e:?}"))))?;
        let body = exchange(conn, &frame, self.opts.timeout)
            .await
            .map_err(|e| exchange_error_kind(&e))?;
        match decode_response(&body) {
            Err(e) => Err(format!("Decode{}", variant(format!("{e:?}")))),
            Ok(Err(e)) => Err(sync_error_kind(&e)),
            Ok(Ok(ack)) => {
                tally.record(started, frame.len(), body.len() + 4);
                Ok(ack.acked_version)
            }
        }
    }
}

/// Runs `devices` against the node. `live` is updated as the run goes.
pub async fn drive(
    devices: Vec<Device>,
    opts: DriveOptions,
    live: Arc<Live>,
) -> Result<DriveReport> {
    let bind: SocketAddr = if opts.addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .context("the client endpoint's address")?;
    let endpoints = (0..opts.endpoints.max(1))
        .map(|_| quinn::Endpoint::client(bind).context("binding a client endpoint"))
        .collect::<Result<Vec<_>>>()?;
    let begun = Instant::now();
    let (start_tx, start) = tokio::sync::watch::channel(None);
    let shared = Arc::new(Shared {
        handshakes: Semaphore::new(opts.handshakes.max(1)),
        endpoints,
        live: live.clone(),
        latency: [latency_histogram(), latency_histogram()],
        devices: devices.len(),
        start,
        opts,
    });
    let n = devices.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, device) in devices.into_iter().enumerate() {
        let shared = shared.clone();
        tasks.spawn(async move { run_device(shared, index, device).await });
    }
    // Every device through its setup (each step has a timeout), then the
    // window opens.
    let mut connected_max = 0;
    while live.ready.load(Ordering::Relaxed) < n && !shared.opts.hold {
        connected_max = connected_max.max(live.connected.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let _ = start_tx.send(Some(started));
    let mut good = Tally::default_with(shared.latency[0].clone());
    let mut faulty = Tally::default_with(shared.latency[1].clone());
    let mut held = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        connected_max = connected_max.max(live.connected.load(Ordering::Relaxed));
        let (behaviour, tally, conn) = joined.context("a device task failed")?;
        match behaviour {
            Behaviour::Good => good.merge(&tally),
            _ => faulty.merge(&tally),
        }
        held.extend(conn);
    }
    let elapsed = if shared.opts.hold {
        begun.elapsed()
    } else {
        started.elapsed()
    };
    if shared.opts.hold {
        connected_max =
            connected_max.max(held.iter().filter(|c| c.close_reason().is_none()).count());
    }
    Ok(DriveReport {
        elapsed,
        good,
        faulty,
        connected_max,
        held,
    })
}

/// Sleeps until `at` (no-op when past).
async fn until(at: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
}

async fn run_device(
    shared: Arc<Shared>,
    index: usize,
    device: Device,
) -> (Behaviour, Tally, Option<quinn::Connection>) {
    let class = usize::from(device.behaviour != Behaviour::Good);
    let mut tally = Tally::default_with(shared.latency[class].clone());
    // Finite pattern values within limits: this cannot fail.
    let requests = match Requests::new(&shared.opts.region, index as u32) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tally.error(format!("Encode{}", variant(format!("{e:?}"))));
            shared.live.ready.fetch_add(1, Ordering::Relaxed);
            return (device.behaviour, tally, None);
        }
    };
    let mut device = DeviceState {
        shared: shared.clone(),
        index,
        requests,
        version: 0,
        conn: None,
        config: device.config,
        behaviour: device.behaviour,
    };
    // Setup: good devices (and those that misbehave on a valid connection)
    // upload their snapshot; bounded handshakes at once.
    if !matches!(device.behaviour, Behaviour::WrongCa | Behaviour::Revoked) {
        let permit = shared.handshakes.acquire().await;
        let conn = shared.connect(index, &device.config).await;
        drop(permit);
        // The snapshot upload is a timed sync only when holding (then it is
        // the only one); otherwise only its failure is counted.
        let mut setup = tally.sibling();
        setup.attempts += 1;
        match conn {
            Ok(conn) => {
                shared.live.connected.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match shared.sync(&conn, &device.requests, 0, &mut setup, t).await {
                    Ok(v) => device.version = v,
                    Err(kind) => setup.error(kind),
                }
                device.conn = Some(conn);
            }
            Err(kind) => setup.error(kind),
        }
        if shared.opts.hold || setup.ok == 0 {
            tally.merge(&setup);
        }
        if shared.opts.connections == Connections::Fresh && !shared.opts.hold {
            device.drop_connection(b"setup done");
        }
    }
    shared.live.ready.fetch_add(1, Ordering::Relaxed);
    if shared.opts.hold {
        let conn = device.conn.take();
        return (device.behaviour, tally, conn);
    }

    let mut start = shared.start.clone();
    let started = match start.wait_for(Option::is_some).await {
        Ok(s) => s.unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    };
    let opts = &shared.opts;
    let deadline = started + opts.duration;
    let n = shared.devices.max(1) as f64;
    let ramp = opts.ramp_up.mul_f64(index as f64 / n);
    let period = opts.rate.map(|r| Duration::from_secs_f64(n / r.max(1e-9)));
    let mut next = started + ramp + period.map_or(Duration::ZERO, |p| p.mul_f64(index as f64 / n));
    loop {
        until(next).await;
        if Instant::now() >= deadline {
            break;
        }
        device.attempt(&mut tally).await;
        let now = Instant::now();
        next = match period {
            // A device that fell behind its schedule goes on from now.
            Some(p) => (next + p).max(now),
            None if device.behaviour != Behaviour::Good => now + FAULT_PAUSE,
            None => now,
        };
    }
    if let Some(c) = device.conn.take() {
        c.close(0u32.into(), b"done");
        shared.live.connected.fetch_sub(1, Ordering::Relaxed);
    }
    (device.behaviour, tally, None)
}

struct DeviceState {
    shared: Arc<Shared>,
    index: usize,
    requests: Arc<Requests>,
    version: u64,
    conn: Option<quinn::Connection>,
    config: quinn::ClientConfig,
    behaviour: Behaviour,
}

impl DeviceState {
    /// The device's connection, opening one if it has none (or it was lost).
    async fn connection(&mut self) -> Result<quinn::Connection, String> {
        if let Some(c) = &self.conn {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
            self.shared.live.connected.fetch_sub(1, Ordering::Relaxed);
            self.conn = None;
        }
        let c = self.shared.connect(self.index, &self.config).await?;
        self.shared.live.connected.fetch_add(1, Ordering::Relaxed);
        self.conn = Some(c.clone());
        Ok(c)
    }

    fn drop_connection(&mut self, reason: &'static [u8]) {
        if let Some(c) = self.conn.take() {
            c.close(0u32.into(), reason);
            self.shared.live.connected.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn attempt(&mut self, tally: &mut Tally) {
        let live = self.shared.live.clone();
        let before = (tally.ok, tally.failures());
        match self.behaviour {
            Behaviour::Good => self.good(tally).await,
            Behaviour::Burst => self.burst(tally).await,
            Behaviour::Malformed => self.malformed(tally).await,
            Behaviour::WrongCa | Behaviour::Revoked => {
                tally.attempts += 1;
                match self.connection().await {
                    Ok(_) => self.good(tally).await,
                    Err(kind) => tally.error(kind),
                }
            }
            Behaviour::DropMidStream => self.drop_mid_stream(tally).await,
        }
        live.syncs.fetch_add(tally.ok - before.0, Ordering::Relaxed);
        live.failures
            .fetch_add(tally.failures().saturating_sub(before.1), Ordering::Relaxed);
    }

    async fn good(&mut self, tally: &mut Tally) {
        tally.attempts += 1;
        let t = Instant::now();
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(kind) => return tally.error(kind),
        };
        let shared = self.shared.clone();
        let outcome = shared
            .sync(&conn, &self.requests, self.version, tally, t)
            .await;
        self.settle(outcome, tally);
        if shared.opts.connections == Connections::Fresh {
            self.drop_connection(b"fresh");
        }
    }

    async fn burst(&mut self, tally: &mut Tally) {
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(kind) => {
                tally.attempts += 1;
                return tally.error(kind);
            }
        };
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..BURST {
            let (shared, conn) = (self.shared.clone(), conn.clone());
            let (version, requests) = (self.version, self.requests.clone());
            let mut t = tally.sibling();
            set.spawn(async move {
                let r = shared
                    .sync(&conn, &requests, version, &mut t, Instant::now())
                    .await;
                (t, r)
            });
        }
        while let Some(Ok((t, r))) = set.join_next().await {
            tally.merge(&t);
            tally.attempts += 1;
            self.settle(r, tally);
        }
    }

    /// Takes a sync's outcome: the acknowledged version (the highest, when
    /// several were in flight), or a snapshot next after `ResyncRequired`.
    fn settle(&mut self, outcome: Result<u64, String>, tally: &mut Tally) {
        match outcome {
            Ok(v) => self.version = self.version.max(v),
            Err(kind) => {
                if kind == "ResyncRequired" {
                    self.version = 0;
                }
                tally.error(kind);
            }
        }
    }

    async fn malformed(&mut self, tally: &mut Tally) {
        tally.attempts += 1;
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(kind) => return tally.error(kind),
        };
        let frame: Vec<u8> = if tally.attempts.is_multiple_of(2) {
            // A header announcing more than any request may be.
            u32::MAX.to_be_bytes().to_vec()
        } else {
            let len = 16 + (tally.attempts as usize * 7919) % 512;
            let mut f = (len as u32).to_be_bytes().to_vec();
            f.extend((0..len).map(|_| rand::random::<u8>()));
            f
        };
        let timeout = self.shared.opts.timeout;
        let work = async {
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| connection_error_kind(&e))?;
            send.write_all(&frame)
                .await
                .map_err(|e| format!("Write{}", variant(format!("{e:?}"))))?;
            let _ = send.finish();
            read_frame(&mut recv, MAX_RESPONSE_FRAME)
                .await
                .map_err(|e| format!("Frame{}", variant(format!("{e:?}"))))
        };
        let kind = match tokio::time::timeout(timeout, work).await {
            Err(_) => "Timeout".to_owned(),
            Ok(Err(kind)) => kind,
            Ok(Ok(body)) => match decode_response(&body) {
                Ok(Err(e)) => sync_error_kind(&e),
                Ok(Ok(_)) => "AcceptedMalformed".to_owned(),
                Err(e) => format!("Decode{}", variant(format!("{e:?}"))),
            },
        };
        tally.error(kind);
    }

    async fn drop_mid_stream(&mut self, tally: &mut Tally) {
        tally.attempts += 1;
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(kind) => return tally.error(kind),
        };
        let frame = match self.requests.frame(self.version) {
            Ok(f) => f,
            Err(e) => return tally.error(format!("Encode{}", variant(format!("{e:?}")))),
        };
        if let Ok((mut send, _recv)) = conn.open_bi().await {
            let _ = send.write_all(&frame[..frame.len() / 2]).await;
        }
        self.drop_connection(b"dropped mid-stream");
        tally.error("DroppedMidStream".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omega_protocol::codec::encode_request;

    #[test]
    fn a_broken_stream_is_named_apart_from_a_malformed_frame() {
        let read = |e: quinn::ReadError| ExchangeError::Codec(CodecError::Io(e.into()));
        assert_eq!(
            exchange_error_kind(&read(quinn::ReadError::Reset(7u32.into()))),
            "ReadReset"
        );
        assert_eq!(
            exchange_error_kind(&read(quinn::ReadError::ConnectionLost(
                quinn::ConnectionError::TimedOut
            ))),
            "Timeout"
        );
        assert_eq!(
            exchange_error_kind(&ExchangeError::Codec(CodecError::Io(
                std::io::Error::other("disk")
            ))),
            "ExchangeIo"
        );
        let malformed = ExchangeError::Codec(CodecError::Malformed("bad".into()));
        assert_eq!(exchange_error_kind(&malformed), "ExchangeCodec");
    }

    #[test]
    fn variant_names_are_the_enum_variants() {
        assert_eq!(
            sync_error_kind(&SyncError::RetryAfter { secs: 5 }),
            "RetryAfter"
        );
        assert_eq!(
            sync_error_kind(&SyncError::BadRequest { reason: "x".into() }),
            "BadRequest"
        );
        assert_eq!(variant("TimedOut".into()), "TimedOut");
    }

    #[test]
    fn failures_leave_out_retry_after() {
        let mut t = Tally::default();
        t.error(RETRY_AFTER.into());
        t.error("Timeout".into());
        t.error("Timeout".into());
        assert_eq!(t.failures(), 2);
        let mut all = Tally::default();
        all.merge(&t);
        all.merge(&t);
        assert_eq!(all.errors[RETRY_AFTER], 2);
        assert_eq!(all.failures(), 4);
    }

    #[test]
    fn siblings_share_one_histogram_and_merge_counts_once() {
        let mut class = Tally::default();
        let mut device = class.sibling();
        device.record(Instant::now(), 10, 20);
        device.record(Instant::now(), 10, 20);
        class.merge(&device);
        assert_eq!(class.ok, 2);
        assert_eq!(class.latency_us.lock().len(), 2);
        // A tally with its own histogram takes the latencies over.
        let mut all = Tally::default();
        all.merge(&class);
        all.merge(&Tally::default());
        assert_eq!(all.latency_us.lock().len(), 2);
        assert_eq!((all.ok, all.up_bytes, all.down_bytes), (2, 20, 40));
    }

    #[test]
    fn requests_start_with_a_snapshot_then_deltas() {
        let region = Region::new("eu-west").expect("region");
        let first = request(&region, 0, 3);
        assert_eq!(first.kind, SyncKind::Snapshot);
        assert_eq!((first.base_version, first.pattern_version), (0, 1));
        let next = request(&region, 7, 3);
        assert_eq!(next.kind, SyncKind::Delta);
        assert_eq!((next.base_version, next.pattern_version), (7, 8));
        // The pre-quantized forms encode exactly as the codec does.
        let forms = Requests::new(&region, 3).expect("forms");
        for v in [0, 1, 2, 7, 8, 1_000_000] {
            assert_eq!(
                forms.frame(v).expect("frame"),
                encode_request(&request(&region, v, 3)).expect("encode"),
                "version {v}"
            );
        }
    }
}
