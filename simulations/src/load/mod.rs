//! `omega-sim load`: many devices, each with its own certificate, syncing
//! with a node over real QUIC with mutual TLS; the figures of
//! BENCHMARKS.md's `load` section.
//!
//! * [`pki`]: device certificates, bulk-issued once per CA and count.
//! * [`local`]: `--local`'s node, in a child process.
//! * [`drive`]: the devices themselves (also used by the `quick_load`
//!   example).
//!
//! The JSON has exactly BENCHMARKS.md's keys. `errors` counts outcomes
//! other than success by kind: a `SyncError` variant (`RetryAfter`,
//! `BadRequest` …), `Timeout`, `Handshake<reason>` (a refused handshake,
//! from the TLS alert), `Connection<reason>`, `Closed<code>` (the node's
//! close codes), `Frame<error>`/`Decode<error>` (a bad answer),
//! `DroppedMidStream` (the fault itself). `RetryAfter` is not a failure: the
//! failure share that `--max-failure-rate` checks is the other kinds over
//! all attempts, of the well-behaved devices only.

pub mod drive;
pub mod local;
pub mod pki;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use omega_certs::CertDir;
use omega_protocol::Region;
use serde_json::{json, Value};

use drive::{Behaviour, Connections, Device, DriveOptions, DriveReport, Live};

/// Which node to load.
#[derive(Debug, Clone)]
pub enum Target {
    /// A node started for the run ([`local`]); certificates under the cache.
    Local,
    /// A running node at `addr`, whose certificate directory (with the CA
    /// keys, as `omega-certs init` makes it) is `certs`.
    Node {
        /// Its QUIC address.
        addr: SocketAddr,
        /// The certificate directory.
        certs: PathBuf,
        /// The name its certificate is checked against.
        server_name: String,
    },
}

/// Options of a load run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The node.
    pub target: Target,
    /// Devices (faulty ones included).
    pub devices: usize,
    /// The timed window (hold: how long the connections stay open).
    pub duration: Duration,
    /// Devices start spread over this much of the window.
    pub ramp_up: Duration,
    /// Syncs per second over all devices; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Reused or fresh connections.
    pub connections: Connections,
    /// Share of devices that misbehave (0 to 1).
    pub faults: f64,
    /// Connect every device and hold the connections.
    pub hold: bool,
    /// Client endpoints; `None`: one per 5,000 devices, at least 2.
    pub endpoints: Option<usize>,
    /// Handshakes in progress at once while connecting.
    pub handshakes: usize,
    /// Timeout of one handshake or exchange.
    pub timeout: Duration,
    /// Where `--local`'s certificate directory is kept between runs.
    pub cache_dir: PathBuf,
    /// `--local`: the executable to run the node with (this binary).
    pub exe: PathBuf,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a run produced.
#[derive(Debug)]
pub struct LoadOutcome {
    /// BENCHMARKS.md's object.
    pub json: Value,
    /// Failures over attempts of the well-behaved devices (1 when none
    /// completed).
    pub failure_rate: f64,
}

/// The devices of a run and their certificates.
fn devices(
    certs: &mut CertDir,
    opts: &LoadOptions,
    progress: &ProgressBar,
) -> Result<(Vec<Device>, usize)> {
    let n = opts.devices;
    let faulty = ((n as f64) * opts.faults.clamp(0.0, 1.0)).round() as usize;
    let behaviour = |i: usize| match i.checked_sub(n - faulty) {
        None => Behaviour::Good,
        Some(j) => Behaviour::FAULTS[j % Behaviour::FAULTS.len()],
    };
    let count = |b: Behaviour| (0..n).filter(|&i| behaviour(i) == b).count();
    progress.set_message("device certificates");
    let ids = pki::device_batch(certs, &format!("load{n}"), n, |_| progress.tick())?;
    let revoked_n = count(Behaviour::Revoked);
    let revoked_ids = pki::device_batch(certs, &format!("revoked{revoked_n}"), revoked_n, |_| {})?;
    pki::revoke_all(certs, &revoked_ids)?;
    let anchor = pki::node_anchor(certs)?;
    let mut valid = pki::client_configs(certs, &ids, &anchor)?.into_iter();
    let mut revoked = pki::client_configs(certs, &revoked_ids, &anchor)?.into_iter();
    let mut stray = pki::wrong_ca_configs(count(Behaviour::WrongCa), &anchor)?.into_iter();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let b = behaviour(i);
        // Every device has a valid certificate in `valid`, used or not, so
        // the batch is the same whatever the fault share.
        let own = valid.next();
        let config = match b {
            Behaviour::WrongCa => stray.next(),
            Behaviour::Revoked => revoked.next(),
            _ => own,
        };
        let config = config.context("a device without a certificate")?;
        out.push(Device {
            config,
            behaviour: b,
        });
    }
    Ok((out, faulty))
}

fn progress_bar(opts: &LoadOptions) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Runs the load and builds the report.
pub async fn run(opts: LoadOptions) -> Result<LoadOutcome> {
    if opts.devices == 0 {
        bail!("--devices must be at least 1");
    }
    if let Some(r) = opts.rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("--rate must be a positive number of syncs per second");
        }
    }
    let bar = progress_bar(&opts);
    let (certs_dir, server_name) = match &opts.target {
        Target::Local => (opts.cache_dir.join("local-pki"), "localhost".to_owned()),
        Target::Node {
            certs, server_name, ..
        } => (certs.clone(), server_name.clone()),
    };
    let prepared = {
        let (opts, bar) = (opts.clone(), bar.clone());
        tokio::task::spawn_blocking(move || -> Result<_> {
            let mut certs = match opts.target {
                Target::Local => pki::local_certs(&certs_dir)?,
                Target::Node { .. } => CertDir::open(&certs_dir)
                    .with_context(|| format!("opening {}", certs_dir.display()))?,
            };
            let (devices, faulty) = devices(&mut certs, &opts, &bar)?;
            // --local's node gets what `omega-certs export-node` gives a node
            // (no CA key: the node refuses those), after this run's
            // revocations.
            let (node, addr) = match &opts.target {
                Target::Local => {
                    let dir = certs.dir().with_file_name("local-node");
                    certs.export_node(pki::LOCAL_NODE, &dir).with_context(|| {
                        format!("exporting the node's files to {}", dir.display())
                    })?;
                    bar.set_message("starting the node");
                    let node = local::LocalNode::start(&opts.exe, &dir, opts.devices)?;
                    let addr = node.addr();
                    (Some(node), addr)
                }
                Target::Node { addr, .. } => (None, *addr),
            };
            Ok((devices, faulty, node, addr))
        })
        .await??
    };
    let (devices, faulty, node, addr) = prepared;
    let drive_opts = DriveOptions {
        addr,
        server_name,
        connections: opts.connections,
        duration: opts.duration,
        ramp_up: opts.ramp_up.min(opts.duration),
        rate: opts.rate,
        endpoints: opts
            .endpoints
            .unwrap_or_else(|| opts.devices.div_ceil(5000).max(2)),
        handshakes: opts.handshakes,
        timeout: opts.timeout,
        hold: opts.hold,
        region: Region::default_region(),
    };
    let live = Arc::new(Live::default());
    let ticker = tokio::spawn(show_progress(
        bar.clone(),
        live.clone(),
        opts.devices,
        opts.hold,
    ));
    let report = drive::drive(devices, drive_opts, live.clone()).await;
    let (report, node_rss_mb) = match report {
        Ok(r) if opts.hold => {
            // Held: keep them open for the duration, then read the node's
            // memory while they still are.
            bar.set_message(format!("holding {} connections", r.held.len()));
            tokio::time::sleep(opts.duration).await;
            let open = r.held.iter().filter(|c| c.close_reason().is_none()).count();
            let rss = node.as_ref().and_then(|n| n.memory_mb("VmRSS:"));
            let mut r = r;
            r.connected_max = r.connected_max.max(open);
            for c in &r.held {
                c.close(0u32.into(), b"done");
            }
            (r, rss)
        }
        Ok(r) => {
            let rss = node.as_ref().and_then(|n| n.memory_mb("VmHWM:"));
            (r, rss)
        }
        Err(e) => {
            ticker.abort();
            bar.finish_and_clear();
            return Err(e);
        }
    };
    ticker.abort();
    bar.finish_and_clear();
    if let Some(node) = node {
        tokio::task::spawn_blocking(move || node.stop(Duration::from_secs(30))).await??;
    }
    Ok(outcome(&opts, &report, faulty, node_rss_mb))
}

async fn show_progress(bar: ProgressBar, live: Arc<Live>, devices: usize, hold: bool) {
    let started = Instant::now();
    let mut last = (0u64, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ready = live.ready.load(Ordering::Relaxed);
        let syncs = live.syncs.load(Ordering::Relaxed);
        let rate = (syncs - last.0) as f64 / last.1.elapsed().as_secs_f64().max(1e-3);
        last = (syncs, Instant::now());
        let connected = live.connected.load(Ordering::Relaxed);
        let failures = live.failures.load(Ordering::Relaxed);
        bar.set_message(if ready < devices || hold {
            format!("connecting: {ready}/{devices} devices ready, {connected} connected")
        } else {
            format!(
                "{:.0} s: {syncs} syncs, {rate:.0}/s, {failures} failures, {connected} connected",
                started.elapsed().as_secs_f64()
            )
        });
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn outcome(
    opts: &LoadOptions,
    r: &DriveReport,
    faulty: usize,
    node_rss_mb: Option<f64>,
) -> LoadOutcome {
    let all = r.all();
    let secs = r.elapsed.as_secs_f64();
    let mean = |bytes: u64| {
        if all.ok == 0 {
            0.0
        } else {
            round2(bytes as f64 / all.ok as f64)
        }
    };
    let mut json = json!({
        "devices": opts.devices,
        "duration_s": round2(if opts.hold { opts.duration.as_secs_f64() } else { secs }),
        "connections": opts.connections.as_str(),
        "syncs": all.ok,
        "syncs_per_s": round2(if secs > 0.0 { all.ok as f64 / secs } else { 0.0 }),
        "p50_ms": round2(all.quantile_ms(0.5)),
        "p99_ms": round2(all.quantile_ms(0.99)),
        "max_ms": round2(all.max_ms()),
        "errors": all.errors,
        "upload_bytes_mean": mean(all.up_bytes),
        "download_bytes_mean": mean(all.down_bytes),
        "node_rss_mb": node_rss_mb.map(round2),
    });
    let good = &r.good;
    let failure_rate = if good.ok == 0 {
        1.0
    } else {
        good.failures() as f64 / good.attempts.max(1) as f64
    };
    if let Value::Object(map) = &mut json {
        if opts.faults > 0.0 {
            map.insert("faulty_devices".into(), json!(faulty));
            map.insert(
                "good_success_rate".into(),
                json!(if good.attempts == 0 {
                    0.0
                } else {
                    (good.ok as f64 / good.attempts as f64 * 1e4).round() / 1e4
                }),
            );
            map.insert("good_p99_ms".into(), json!(round2(good.quantile_ms(0.99))));
        }
        if opts.hold {
            map.insert("connected_max".into(), json!(r.connected_max));
        }
    }
    LoadOutcome { json, failure_rate }
}

/// The human table of a report.
pub fn render(json: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(map) = json {
        for (k, v) in map {
            let v = match v {
                Value::Object(m) if m.is_empty() => "none".to_owned(),
                Value::Object(m) => m
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                Value::String(s) => s.clone(),
                Value::Null => "-".to_owned(),
                other => other.to_string(),
            };
            out.push_str(&format!("{k:<20} {v}\n"));
        }
    }
    out
}
