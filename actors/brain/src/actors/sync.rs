//! Sync: the TV's side of the learning loop. It owns the QUIC client (the
//! device certificate and key, the node CA and its CRL, re-read before each
//! attempt: [`super::sync_tls`]) and, on the
//! schedule of [`omega_brain_core::schedule`], asks Memory for the request,
//! exchanges it with a node and hands the answer back to Memory, which applies
//! it (global patterns, trends, catalog pages) and acknowledges it.
//!
//! * Nodes: [`SyncConfig::nodes`] (`host:port` each) and [`SyncConfig::dns`]
//!   (a `name:port` that may resolve to several addresses), resolved with
//!   tokio's `lookup_host` whenever no connection is up, at most
//!   [`MAX_ADDRESSES`] addresses kept in order. An attempt tries the address
//!   that answered last, then the next ones, each within
//!   [`SyncConfig::connect_timeout`]; a connection that works is reused for
//!   later syncs until it fails.
//! * The schedule (when, and delta or snapshot) lives in the shared state,
//!   not in the actor, so a restarted actor keeps its bounds (the snapshot cap
//!   included); a restarted daemon starts a new schedule.
//! * The upload is Memory's ([`crate::BrainStore::prepare_sync`]): a pending
//!   forget first, otherwise, until the private contribution lands, no pattern
//!   data at all.
//! * `sync.now` ([`super::Brain::sync_now`]) runs an attempt at once and
//!   answers with its [`SyncReport`]; the schedule then goes on from there.
//! * Recommendations never wait for a sync: they read Memory's state, which
//!   a sync changes only through Memory, like any write.
//!
//! Offline for days: each failed attempt replaces the last error, the next
//! attempt is at most the backoff cap away, one timer is armed at a time
//! (stale ones are ignored by generation), at most one connection is held,
//! nothing is queued for upload (the request is built at each attempt from
//! the store). Recommendations use what the store holds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use omega_brain_core::{Outcome, Schedule, ScheduleConfig, UploadKind};
use omega_protocol::codec::{decode_response, encode_request, FRAME_HEADER};
use omega_protocol::{Region, SyncAccepted, SyncError, SyncKind};
use omega_transport::quic::exchange;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::sync_tls::ClientTls;
use super::{ask, memory::MemoryMsg, ActorError, ChildKind, Reply, Shared};
use crate::store::PreparedSync;

/// Resolved node addresses kept per attempt.
pub const MAX_ADDRESSES: usize = 16;

/// The sync's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    /// Node addresses, `host:port` each, tried in order.
    pub nodes: Vec<String>,
    /// A `name:port` resolving to one or more nodes, tried after `nodes`.
    pub dns: Option<String>,
    /// The name the node's certificate must carry; default: the host part
    /// of the address being tried.
    pub server_name: Option<String>,
    /// The device certificate (PEM).
    pub device_cert: PathBuf,
    /// The device key (PEM).
    pub device_key: PathBuf,
    /// The node CA certificate (PEM).
    pub node_ca: PathBuf,
    /// The node CA's revocation list (PEM), required: a missing, unreadable
    /// or expired file stops every sync. `None`: `node_ca` with the
    /// extension `crl` (`node-ca.crl` beside `node-ca.crt`) when that file
    /// exists at start, required from then on; otherwise node certificates
    /// are checked against the CA only ([`super::sync_tls`]).
    pub crl: Option<PathBuf>,
    /// The device CA certificate (PEM): every member of an aggregation
    /// round must hold a device certificate it issued.
    pub device_ca: PathBuf,
    /// The region sent with each sync.
    pub region: Region,
    /// The schedule's bounds.
    pub schedule: ScheduleConfig,
    /// Handshake bound per address.
    pub connect_timeout: Duration,
    /// Bound of one exchange (request sent, answer read).
    pub exchange_timeout: Duration,
}

/// The last error of a sync attempt.
#[derive(Debug, Clone, Serialize)]
pub struct SyncFailure {
    /// `unreachable`, `retry_after`, `resync_required`, `refused`, `local`.
    pub kind: &'static str,
    /// What happened.
    pub message: String,
    /// When (unix milliseconds).
    pub at_ms: u64,
}

/// The sync's counters, as `stats` reports them under `sync`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncStatus {
    /// Whether a node is configured.
    pub enabled: bool,
    /// The last accepted sync (unix milliseconds).
    pub last_success_ms: Option<u64>,
    /// The last failed attempt.
    pub last_error: Option<SyncFailure>,
    /// The next attempt (unix milliseconds).
    pub next_attempt_ms: Option<u64>,
    /// What the next attempt sends (`delta` or `snapshot`; a pending forget
    /// goes first whatever this says).
    pub next_kind: Option<UploadKind>,
    /// Accepted syncs.
    pub syncs_ok: u64,
    /// Failed attempts.
    pub syncs_failed: u64,
    /// Request frame bytes sent (totals, QUIC and TLS overhead aside).
    pub bytes_up: u64,
    /// Response frame bytes received.
    pub bytes_down: u64,
    /// Snapshots sent in the last 24 hours.
    pub snapshots_today: usize,
    /// Snapshots a node asked for past the daily cap (not sent).
    pub snapshots_refused: u64,
    /// The node address that answered last.
    pub node: Option<String>,
}

/// What one attempt did (the answer of `sync.now`).
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// `ok`, `retry_after`, `resync_required`, `unreachable`, `refused` or
    /// `local` (Memory could not build or apply it, or the TLS files are
    /// unusable: a key not matching its certificate, a missing or expired
    /// node CRL).
    pub outcome: &'static str,
    /// What the request was: `delta`, `snapshot` or `forget`.
    pub kind: &'static str,
    /// The node that answered, if any.
    pub node: Option<String>,
    /// Detail of a failure.
    pub message: Option<String>,
    /// Request frame bytes sent (all addresses tried).
    pub bytes_up: u64,
    /// Response frame bytes received.
    pub bytes_down: u64,
    /// Catalog items written by this sync.
    pub catalog_upserted: usize,
    /// Whether the answer's catalog page said more follow.
    pub catalog_more: bool,
    /// Whether the answer's fleet page left titles to fetch.
    pub fleet_more: bool,
    /// The aggregation-round step this request carried, if any:
    /// `keys`, `shares`, `masked_input` or `unmask`.
    pub round: Option<&'static str>,
    /// Whether this sync completed a pending forget.
    pub forget_acknowledged: bool,
    /// The next attempt (unix milliseconds).
    pub next_attempt_ms: u64,
}

/// The schedule and counters, shared so they outlive an actor restart.
#[derive(Debug, Default)]
pub(crate) struct SyncBook {
    schedule: Option<Schedule>,
    status: SyncStatus,
}

impl SyncBook {
    /// The status at `now_ms`.
    pub(crate) fn status(&mut self, now_ms: u64) -> SyncStatus {
        let mut s = self.status.clone();
        if let Some(sch) = &mut self.schedule {
            s.snapshots_today = sch.snapshots_today(now_ms);
            s.snapshots_refused = sch.snapshots_refused();
            s.next_attempt_ms = Some(sch.next().at_ms);
            s.next_kind = Some(sch.next().kind);
        }
        s
    }
}

pub(crate) enum SyncMsg {
    /// The timer of the schedule (stale generations are ignored).
    Tick(u64),
    /// `sync.now`.
    Now(Reply<SyncReport>),
}

pub(crate) struct SyncActor;

pub(crate) struct SyncState {
    shared: Arc<Shared>,
    cfg: SyncConfig,
    /// The client configuration and round credentials, from files re-read
    /// before each attempt.
    tls: ClientTls,
    endpoints: [Option<quinn::Endpoint>; 2],
    conn: Option<(SocketAddr, quinn::Connection)>,
    /// The address that answered last.
    preferred: Option<SocketAddr>,
    generation: u64,
    rng: StdRng,
}

/// The name of a round step, for reports.
fn round_step(msg: &omega_privacy::secagg::ToServer) -> &'static str {
    use omega_privacy::secagg::ToServer;
    match msg {
        ToServer::AdvertiseKeys(_) => "keys",
        ToServer::ShareKeys(_) => "shares",
        ToServer::MaskedInput(_) => "masked_input",
        ToServer::Unmask(_) => "unmask",
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The host part of `host:port` (IPv6 brackets removed).
fn host_of(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl SyncState {
    fn endpoint(&mut self, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
        let (i, bind) = if addr.is_ipv4() {
            (0, "0.0.0.0:0")
        } else {
            (1, "[::]:0")
        };
        if let Some(e) = &self.endpoints[i] {
            return Ok(e.clone());
        }
        let bind: SocketAddr = bind
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let e = quinn::Endpoint::client(bind)?;
        self.endpoints[i] = Some(e.clone());
        Ok(e)
    }

    /// Every configured address (resolved), the last one that answered first.
    async fn addresses(&self) -> Vec<(SocketAddr, String)> {
        let mut out: Vec<(SocketAddr, String)> = Vec::new();
        for target in self.cfg.nodes.iter().chain(self.cfg.dns.iter()) {
            let name = self
                .cfg
                .server_name
                .clone()
                .unwrap_or_else(|| host_of(target).to_string());
            match tokio::net::lookup_host(target.as_str()).await {
                Ok(addrs) => {
                    for a in addrs {
                        if out.len() < MAX_ADDRESSES && !out.iter().any(|(x, _)| *x == a) {
                            out.push((a, name.clone()));
                        }
                    }
                }
                Err(e) => tracing::warn!(node = %target, error = %e, "cannot resolve node"),
            }
        }
        if let Some(pos) = self
            .preferred
            .and_then(|p| out.iter().position(|(a, _)| *a == p))
        {
            out.rotate_left(pos);
        }
        out
    }

    /// One exchange on `conn`: the response body.
    async fn exchange_on(&self, conn: &quinn::Connection, frame: &[u8]) -> Result<Vec<u8>, String> {
        exchange(conn, frame, self.cfg.exchange_timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends `frame` to the first node that answers (the live connection
    /// first, then the addresses in order). Returns the node, the body and the
    /// bytes sent; `Err` when none answered, with the bytes sent.
    async fn send(&mut self, frame: &[u8]) -> (u64, Result<(SocketAddr, Vec<u8>), String>) {
        let mut sent = 0u64;
        let mut errors: Vec<String> = Vec::new();
        if let Some((addr, conn)) = self.conn.take() {
            sent += frame.len() as u64;
            match self.exchange_on(&conn, frame).await {
                Ok(body) => {
                    self.conn = Some((addr, conn));
                    return (sent, Ok((addr, body)));
                }
                Err(e) => {
                    tracing::info!(node = %addr, error = %e, "sync connection failed; reconnecting");
                    conn.close(0u32.into(), b"failed");
                    errors.push(format!("{addr}: {e}"));
                }
            }
        }
        let addrs = self.addresses().await;
        if addrs.is_empty() {
            errors.push("no node address resolves".into());
        }
        for (addr, name) in addrs {
            let endpoint = match self.endpoint(addr) {
                Ok(e) => e,
                Err(e) => {
                    errors.push(format!("{addr}: socket: {e}"));
                    continue;
                }
            };
            let client = self.tls.built().client.clone();
            let connecting = match endpoint.connect_with(client, addr, &name) {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("{addr}: {e}"));
                    continue;
                }
            };
            let conn = match tokio::time::timeout(self.cfg.connect_timeout, connecting).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    errors.push(format!("{addr}: {e}"));
                    continue;
                }
                Err(_) => {
                    errors.push(format!(
                        "{addr}: no handshake within {:?}",
                        self.cfg.connect_timeout
                    ));
                    continue;
                }
            };
            sent += frame.len() as u64;
            match self.exchange_on(&conn, frame).await {
                Ok(body) => {
                    self.preferred = Some(addr);
                    self.conn = Some((addr, conn));
                    return (sent, Ok((addr, body)));
                }
                Err(e) => {
                    conn.close(0u32.into(), b"failed");
                    errors.push(format!("{addr}: {e}"));
                }
            }
        }
        (sent, Err(errors.join("; ")))
    }

    /// Arms the timer for the schedule's next attempt.
    fn arm(&mut self, myself: &ActorRef<SyncMsg>, at_ms: u64) {
        self.generation += 1;
        let g = self.generation;
        let delay = Duration::from_millis(at_ms.saturating_sub(now_ms()));
        myself.send_after(delay, move || SyncMsg::Tick(g));
    }

    /// One attempt: build, exchange, apply, reschedule.
    async fn attempt(&mut self, myself: &ActorRef<SyncMsg>) -> SyncReport {
        let start = now_ms();
        let kind = {
            let mut book = self.shared.sync_book.lock();
            let sched = book
                .schedule
                .get_or_insert_with(|| Schedule::new(self.cfg.schedule, start, &mut self.rng));
            sched.begin(start)
        };
        let mut report = SyncReport {
            outcome: "local",
            kind: match kind {
                UploadKind::Delta => "delta",
                UploadKind::Snapshot => "snapshot",
            },
            node: None,
            message: None,
            bytes_up: 0,
            bytes_down: 0,
            catalog_upserted: 0,
            catalog_more: false,
            fleet_more: false,
            round: None,
            forget_acknowledged: false,
            next_attempt_ms: 0,
        };
        let outcome = self.run(kind, &mut report).await;
        let end = now_ms();
        let mut book = self.shared.sync_book.lock();
        let next = book
            .schedule
            .get_or_insert_with(|| Schedule::new(self.cfg.schedule, end, &mut self.rng))
            .on_outcome(kind, outcome, end, &mut self.rng);
        report.next_attempt_ms = next.at_ms;
        let st = &mut book.status;
        st.bytes_up += report.bytes_up;
        st.bytes_down += report.bytes_down;
        if report.node.is_some() {
            st.node = report.node.clone();
        }
        if report.outcome == "ok" {
            st.syncs_ok += 1;
            st.last_success_ms = Some(end);
        } else {
            st.syncs_failed += 1;
            st.last_error = Some(SyncFailure {
                kind: report.outcome,
                message: report.message.clone().unwrap_or_default(),
                at_ms: end,
            });
        }
        drop(book);
        match report.outcome {
            "ok" => tracing::debug!(?report, "synced"),
            _ => tracing::info!(?report, "sync attempt failed"),
        }
        self.arm(myself, next.at_ms);
        report
    }

    /// The attempt's work; fills `report` and returns the outcome for the
    /// schedule.
    async fn run(&mut self, kind: UploadKind, report: &mut SyncReport) -> Outcome {
        // The TLS files first: a renewed certificate or a new CRL means a new
        // connection; unusable files or an expired node CRL, no attempt.
        match self.tls.refresh(std::time::SystemTime::now()) {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!("TLS files changed: the next sync uses a new connection");
                if let Some((_, c)) = self.conn.take() {
                    c.close(0u32.into(), b"credentials renewed");
                }
            }
            Err(e) => {
                if let Some((_, c)) = self.conn.take() {
                    c.close(0u32.into(), b"credentials unusable");
                }
                report.message = Some(format!("TLS files: {e}"));
                return Outcome::Unreachable;
            }
        }
        let memory = self.shared.memory.get();
        let region = self.cfg.region.clone();
        let credentials = self.tls.built().credentials.clone();
        let prepared: PreparedSync = match ask(memory, ChildKind::Memory, |r| {
            MemoryMsg::PrepareSync(kind, region, credentials, r)
        })
        .await
        {
            Ok(p) => p,
            Err(e) => {
                report.message = Some(format!("building the request: {e}"));
                return Outcome::Refused;
            }
        };
        if prepared.request.kind == SyncKind::Forget {
            report.kind = "forget";
        }
        if let Some(e) = &prepared.round_declined {
            tracing::info!(error = %e, "aggregation round declined");
            report.message = Some(format!("round declined: {e}"));
        }
        report.round = prepared.request.round.as_ref().map(|r| round_step(&r.msg));
        let frame = match encode_request(&prepared.request) {
            Ok(f) => f,
            Err(e) => {
                report.message = Some(format!("encoding the request: {e}"));
                return Outcome::Refused;
            }
        };
        let (sent, answer) = self.send(&frame).await;
        report.bytes_up = sent;
        let (addr, body) = match answer {
            Ok(x) => x,
            Err(e) => {
                report.outcome = "unreachable";
                report.message = Some(e);
                return Outcome::Unreachable;
            }
        };
        report.node = Some(addr.to_string());
        report.bytes_down = (body.len() + FRAME_HEADER) as u64;
        let accepted: SyncAccepted = match decode_response(&body) {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return refusal(e, report),
            Err(e) => {
                // An undecodable answer: this node is of no use now.
                if let Some((_, c)) = self.conn.take() {
                    c.close(0u32.into(), b"bad answer");
                }
                report.outcome = "unreachable";
                report.message = Some(format!("{addr}: undecodable answer: {e}"));
                return Outcome::Unreachable;
            }
        };
        let next_sync_secs = accepted.next_sync_secs;
        let more = accepted.catalog.as_ref().is_some_and(|c| c.more);
        let fleet_more = accepted
            .fleet
            .as_ref()
            .is_some_and(|f| f.offset as usize + f.titles.len() < f.total_titles as usize);
        let memory = self.shared.memory.get();
        let finished = ask(memory, ChildKind::Memory, |r| {
            MemoryMsg::FinishSync(Box::new(prepared), Box::new(accepted), r)
        })
        .await;
        match finished {
            Ok(f) => {
                report.outcome = "ok";
                report.catalog_upserted = f.applied.catalog.upserted.len();
                // A refused page (catalog full) would come again: no paging.
                report.catalog_more = more && f.applied.catalog_refused.is_none();
                report.fleet_more = fleet_more;
                report.forget_acknowledged = f.forget_acknowledged;
                if let Some(e) = f.ack_refused {
                    tracing::warn!(error = %e, "the node's acknowledgement was refused");
                    report.message = Some(format!("acknowledgement refused: {e}"));
                }
                Outcome::Accepted {
                    next_sync_secs,
                    // Fleet pages page like catalog pages, within the same
                    // bounds.
                    catalog_more: report.catalog_more || fleet_more,
                }
            }
            Err(e) => {
                report.message = Some(format!("applying the answer: {e}"));
                Outcome::Refused
            }
        }
    }
}

/// A typed refusal: the report's outcome and the schedule's.
fn refusal(e: SyncError, report: &mut SyncReport) -> Outcome {
    report.message = Some(e.to_string());
    match e {
        SyncError::RetryAfter { secs } => {
            report.outcome = "retry_after";
            Outcome::RetryAfter { secs }
        }
        SyncError::ResyncRequired { .. } => {
            report.outcome = "resync_required";
            Outcome::ResyncRequired
        }
        _ => {
            report.outcome = "refused";
            Outcome::Refused
        }
    }
}

impl Actor for SyncActor {
    type Msg = SyncMsg;
    type State = SyncState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let cfg =
            shared.cfg.sync.clone().ok_or_else(|| {
                ActorError::Invalid("sync started without a configuration".into())
            })?;
        let tls = ClientTls::load(&cfg).map_err(ActorError::Invalid)?;
        let mut st = SyncState {
            shared: shared.clone(),
            cfg,
            tls,
            endpoints: [None, None],
            conn: None,
            preferred: None,
            generation: 0,
            rng: StdRng::from_os_rng(),
        };
        let now = now_ms();
        let next = {
            let mut book = shared.sync_book.lock();
            book.status.enabled = true;
            book.schedule
                .get_or_insert_with(|| Schedule::new(st.cfg.schedule, now, &mut st.rng))
                .next()
        };
        st.arm(&myself, next.at_ms);
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SyncMsg::Tick(g) if g == st.generation => {
                st.attempt(&myself).await;
            }
            SyncMsg::Tick(_) => {}
            SyncMsg::Now(reply) => {
                let r = st.attempt(&myself).await;
                let _ = reply.send(Ok(r));
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, c)) = st.conn.take() {
            c.close(0u32.into(), b"stopping");
        }
        Ok(())
    }
}
