//! Prometheus metrics: the process-wide recorder and the listener's metric
//! names (the actors' names are in `omega_constellation::actors::names`).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `omega_syncs_total` | counter | `outcome`: applied, replayed, forgotten, refused |
//! | `omega_sync_duration_seconds` | histogram | (request read to response written) |
//! | `omega_sync_errors_total` | counter | `kind`: a `SyncError` or codec error kind |
//! | `omega_connections` | gauge | open QUIC connections |
//! | `omega_connections_max` | gauge | the connection limit (`max_connections`) |
//! | `omega_connections_refused_total` | counter | `reason`: limit, device_limit, pending, handshake, identity |
//! | `omega_syncs_in_flight` | gauge | |
//! | `omega_devices`, `omega_patterns` | gauge | as of the last federation run (standby node: the store's last count) |
//! | `omega_global_version` | gauge | `region` (standby node: read from the store) |
//! | `omega_cluster_attempts_failed_total` | counter | failed heartbeats or lease attempts |
//! | `omega_federation_duration_seconds` | histogram | |
//! | `omega_federation_runs_total` | counter | `result` |
//! | `omega_federation_last_success_timestamp_seconds` | gauge | when this node's last `ok` federation run finished (0: none yet) |
//! | `omega_store_duration_seconds` | histogram | `op`: a store call of the sync path (`names::STORE_OPS`) |
//! | `omega_catalog_items` | gauge | |
//! | `omega_catalog_embedded_total` | counter | |
//! | `omega_actor_restarts_total` | counter | `child` |
//! | `omega_crl_next_update_timestamp_seconds` | gauge | the device CRL's `nextUpdate` (Unix seconds) |
//! | `omega_handshakes_pending` | gauge | |
//! | `omega_handshake_retries_total` | counter | |
//!
//! Every family is exported from the first scrape ([`register_families`]:
//! counters at 0 for their fixed label values, gauges at 0, histograms
//! empty), so rates, dashboards and alerts work on an idle node.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use omega_constellation::sync::SyncOutcome;
use omega_protocol::SyncError;

/// Counter: syncs by outcome.
pub const SYNCS: &str = "omega_syncs_total";
/// Histogram: sync latency in seconds.
pub const SYNC_DURATION: &str = "omega_sync_duration_seconds";
/// Counter: errors by kind.
pub const SYNC_ERRORS: &str = "omega_sync_errors_total";
/// Gauge: open connections.
pub const CONNECTIONS: &str = "omega_connections";
/// Counter: connections refused, by reason (`limit`, `device_limit`,
/// `pending`, `handshake`, `identity`).
pub const CONNECTIONS_REFUSED: &str = "omega_connections_refused_total";
/// Gauge: the connection limit (`max_connections`), beside
/// [`CONNECTIONS`] for a "slots nearly full" alert.
pub const CONNECTIONS_MAX: &str = "omega_connections_max";
/// Gauge: the installed device CRL's `nextUpdate`, Unix seconds (the
/// node refuses a list past it).
pub const CRL_NEXT_UPDATE: &str = "omega_crl_next_update_timestamp_seconds";
/// Gauge: QUIC handshakes in progress.
pub const HANDSHAKES_PENDING: &str = "omega_handshakes_pending";
/// Counter: connection attempts answered with a QUIC Retry (address
/// validation).
pub const HANDSHAKE_RETRIES: &str = "omega_handshake_retries_total";
/// Gauge: syncs in flight.
pub const IN_FLIGHT: &str = "omega_syncs_in_flight";

/// Why a connection attempt was refused: the `reason` label of
/// [`CONNECTIONS_REFUSED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No connection slot free (before or after the handshake).
    Limit,
    /// The device already holds `max_connections_per_device`.
    DeviceLimit,
    /// Too many handshakes in progress.
    Pending,
    /// The handshake failed (TLS, certificate, revoked).
    Handshake,
    /// The certificate names no valid device id.
    Identity,
}

impl Refusal {
    /// Every reason.
    pub const ALL: [Refusal; 5] = [
        Refusal::Limit,
        Refusal::DeviceLimit,
        Refusal::Pending,
        Refusal::Handshake,
        Refusal::Identity,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::DeviceLimit => "device_limit",
            Refusal::Pending => "pending",
            Refusal::Handshake => "handshake",
            Refusal::Identity => "identity",
        }
    }
}

/// Counts one refused connection attempt.
pub fn refused(why: Refusal) {
    metrics::counter!(CONNECTIONS_REFUSED, "reason" => why.label()).increment(1);
}

/// Every sync outcome (the `outcome` label of [`SYNCS`]).
const OUTCOMES: [SyncOutcome; 4] = [
    SyncOutcome::Applied,
    SyncOutcome::Replayed,
    SyncOutcome::Forgotten,
    SyncOutcome::Refused,
];

/// The `outcome` label of [`SYNCS`].
pub fn outcome_label(o: SyncOutcome) -> &'static str {
    match o {
        SyncOutcome::Applied => "applied",
        SyncOutcome::Replayed => "replayed",
        SyncOutcome::Forgotten => "forgotten",
        SyncOutcome::Refused => "refused",
    }
}

/// Counts one sync error of `kind` (a `SyncError` or codec error kind, or
/// one of the listener's own below).
pub fn sync_error(kind: &'static str) {
    metrics::counter!(SYNC_ERRORS, "kind" => kind).increment(1);
}

/// `kind` of [`SYNC_ERRORS`]: no whole request arrived in time.
pub const ERROR_REQUEST_TIMEOUT: &str = "request_timeout";
/// `kind` of [`SYNC_ERRORS`]: the device reset the stream.
pub const ERROR_STREAM_RESET: &str = "stream_reset";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. When another
/// recorder is already installed (an embedding program), a private one is
/// returned: rendering then shows only what the node itself records there
/// (nothing), which is reported in the log.
pub fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ];
            let federation = [0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(SYNC_DURATION.into()), &latency)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(omega_constellation::actors::names::STORE_DURATION.into()),
                        &latency,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(
                            omega_constellation::actors::names::FEDERATION_DURATION.into(),
                        ),
                        &federation,
                    )
                });
            match builder {
                Ok(b) => {
                    let recorder = b.build_recorder();
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!(
                            "a metrics recorder is already installed; /metrics will be empty"
                        );
                    }
                    register_families();
                    handle
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets refused; using summaries");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Creates each configured region's `omega_global_version` series (at 0
/// until the first federation run or store read sets it).
pub fn register_regions(regions: &[String]) {
    for region in regions {
        metrics::gauge!(omega_constellation::actors::names::GLOBAL_VERSION, "region" => region.clone())
            .increment(0.0);
    }
}

/// Creates every family of the table above in the installed recorder, at
/// zero: a counter per fixed label value, each gauge, each histogram (no
/// observation); `omega_global_version` per region comes from
/// [`register_regions`]. Values already recorded are left as they are.
pub fn register_families() {
    use omega_constellation::actors::names;
    for outcome in OUTCOMES {
        metrics::counter!(SYNCS, "outcome" => outcome_label(outcome)).increment(0);
    }
    // The listener's own kinds and those of the errors alerts watch (the
    // rest appear when they first happen).
    let internal = SyncError::Internal {
        reason: String::new(),
    };
    let retry = SyncError::RetryAfter { secs: 0 };
    for kind in [
        ERROR_REQUEST_TIMEOUT,
        ERROR_STREAM_RESET,
        internal.kind(),
        retry.kind(),
    ] {
        metrics::counter!(SYNC_ERRORS, "kind" => kind).increment(0);
    }
    for why in Refusal::ALL {
        metrics::counter!(CONNECTIONS_REFUSED, "reason" => why.label()).increment(0);
    }
    for child in names::RESTARTED_CHILDREN {
        metrics::counter!(names::ACTOR_RESTARTS, "child" => child).increment(0);
    }
    for result in names::FEDERATION_RESULTS {
        metrics::counter!(names::FEDERATION_RUNS, "result" => result).increment(0);
    }
    for counter in [
        HANDSHAKE_RETRIES,
        names::CLUSTER_ATTEMPTS_FAILED,
        names::CATALOG_EMBEDDED,
    ] {
        metrics::counter!(counter).increment(0);
    }
    for gauge in [
        CONNECTIONS,
        CONNECTIONS_MAX,
        CRL_NEXT_UPDATE,
        HANDSHAKES_PENDING,
        IN_FLIGHT,
        names::DEVICES,
        names::PATTERNS,
        names::CATALOG_ITEMS,
        names::FEDERATION_LAST_SUCCESS,
    ] {
        metrics::gauge!(gauge).increment(0.0);
    }
    // Histograms are registered without an observation.
    for histogram in [SYNC_DURATION, names::FEDERATION_DURATION] {
        let _ = metrics::histogram!(histogram);
    }
    for op in names::STORE_OPS {
        let _ = metrics::histogram!(names::STORE_DURATION, "op" => op);
    }
}
