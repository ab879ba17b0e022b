//! The QUIC listener: mutual TLS against the device CA, one sync per
//! bidirectional stream, answers from the shard actors.
//!
//! * Handshakes: at most `max_pending_handshakes` in progress; past it an
//!   attempt is refused at once. With `retry_above_pending` or more in
//!   progress, an attempt from an unvalidated address is answered with a
//!   QUIC Retry first, so a spoofed-source flood cannot start handshakes.
//! * Connections: at most `max_connections` at once (a semaphore). The slot
//!   is taken when the handshake has completed, so incomplete handshakes
//!   hold none; when none is free an attempt is refused before its
//!   handshake (`Incoming::refuse`, the device backs off), and one that
//!   completes when all are taken is closed with [`CLOSE_CONNECTION_LIMIT`].
//!   The device id is read from the verified certificate, never from the
//!   payload.
//! * Per device: at most `max_connections_per_device` connections per
//!   device id; one past it is closed after its handshake with
//!   [`CLOSE_DEVICE_LIMIT`]. The count map only holds devices with a
//!   connection (an entry is removed when its count drops to 0), so it has
//!   at most `max_connections` entries.
//! * Streams: quinn caps concurrent streams per connection (8, see
//!   `omega_transport::quic`), so the tasks spawned per stream are bounded.
//!   A device has `request_timeout` to send its request frame.
//! * A bad frame — malformed, oversized (length prefix above `MAX_REQUEST_FRAME`, 512 KiB, rejected
//!   before reading the body), cut short, wrong protocol version — is
//!   answered with a typed `SyncError` (`BadRequest` or
//!   `UnsupportedVersion`) when the stream can still be written; a stream the
//!   peer reset is reset in turn. Neither affects the connection or the node.
//! * Admission: a sync needs an in-flight permit ([`Node::try_admit`]);
//!   without one it is answered `RetryAfter` at once.
//! * Open connections are tracked ([`ListenerContext::open`]) so that a
//!   revocation list reload can close those of revoked devices
//!   (`crate::revocation`).
//! * Shutdown: the accept loops stop, each connection stops accepting
//!   streams, in-flight syncs finish (bounded by the caller's drain timeout),
//!   then connections are closed with code 0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use omega_constellation::actors::{now_ms, Node};
use omega_constellation::sync::SyncOutcome;
use omega_protocol::codec::{decode_packed_request, encode_packed_response};
use omega_protocol::wire::MIN_PROTOCOL_VERSION;
use omega_protocol::{
    limits, CodecError, DeviceId, PackedSyncResponse, SyncError, PROTOCOL_VERSION,
};
use omega_transport::read_frame;

use crate::telemetry;

/// What the listener tasks share.
#[derive(Debug)]
pub struct ListenerContext {
    /// The actor tree.
    pub node: Arc<Node>,
    /// Connection slots, taken after the handshake.
    pub connections: Arc<Semaphore>,
    /// Limits on handshakes and per-device connections.
    pub limits: ConnectionLimits,
    /// Handshakes in progress (`limits.max_pending_handshakes` permits).
    pub pending: Arc<Semaphore>,
    /// Connections per device (taken while a connection slot is held, so
    /// at most `max_connections` devices).
    pub per_device: DeviceCounts,
    /// Time a device has to send its request frame.
    pub request_timeout: Duration,
    /// The open connections by `stable_id` (at most `max_connections`):
    /// re-checked when the revocation list is reloaded.
    pub open: Mutex<HashMap<usize, quinn::Connection>>,
}

/// Limits of the connection layer (see the module docs and `Config`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections one device may hold at once.
    pub per_device: usize,
    /// Handshakes in progress at once.
    pub max_pending_handshakes: usize,
    /// Handshakes in progress from which unvalidated addresses get a Retry.
    pub retry_above_pending: usize,
}

/// Connections per device, at most `limit` each. Only devices with a
/// connection have an entry (removed when the count drops to 0), so the map
/// holds no more entries than there are connections counted.
#[derive(Debug)]
pub struct DeviceCounts {
    limit: usize,
    map: Mutex<HashMap<DeviceId, usize>>,
}

impl DeviceCounts {
    /// Counts of at most `limit` connections per device.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            map: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, usize>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a connection of `device` until the returned slot is dropped,
    /// or `None` when the device already holds `limit`.
    pub fn take(&self, device: &DeviceId) -> Option<DeviceSlot<'_>> {
        let mut map = self.lock();
        let n = map.get(device).copied().unwrap_or(0);
        if n >= self.limit {
            return None;
        }
        map.insert(device.clone(), n + 1);
        Some(DeviceSlot {
            counts: self,
            device: device.clone(),
        })
    }

    /// Devices with at least one connection counted.
    pub fn devices(&self) -> usize {
        self.lock().len()
    }
}

/// A device's share of its connection count, given back on drop.
#[derive(Debug)]
pub struct DeviceSlot<'a> {
    counts: &'a DeviceCounts,
    device: DeviceId,
}

impl Drop for DeviceSlot<'_> {
    fn drop(&mut self) {
        let mut map = self.counts.lock();
        if let Some(n) = map.get_mut(&self.device) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.device);
            }
        }
    }
}

impl ListenerContext {
    /// The context for `node` with `max_connections` slots.
    pub fn new(
        node: Arc<Node>,
        connections: Arc<Semaphore>,
        request_timeout: Duration,
        limits: ConnectionLimits,
    ) -> Self {
        Self {
            node,
            connections,
            limits,
            pending: Arc::new(Semaphore::new(limits.max_pending_handshakes)),
            per_device: DeviceCounts::new(limits.per_device),
            request_timeout,
            open: Mutex::default(),
        }
    }

    /// Handshakes in progress now.
    pub fn pending_handshakes(&self) -> usize {
        self.limits
            .max_pending_handshakes
            .saturating_sub(self.pending.available_permits())
    }

    /// The open connections now.
    pub fn open_connections(&self) -> Vec<quinn::Connection> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.values().cloned().collect()
    }

    fn track(&self, conn: &quinn::Connection, open: bool) {
        let mut map = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open {
            map.insert(conn.stable_id(), conn.clone());
        } else {
            map.remove(&conn.stable_id());
        }
    }
}

/// Close code of a connection closed by the node's shutdown.
pub const CLOSE_SHUTDOWN: u32 = 0;
/// Close code of a connection whose certificate names no valid device id.
pub const CLOSE_BAD_IDENTITY: u32 = 1;
// 2 is `crate::revocation::CLOSE_REVOKED`.
/// Close code of a connection that completed its handshake when every
/// connection slot was taken.
pub const CLOSE_CONNECTION_LIMIT: u32 = 3;
/// Close code of a connection past its device's `max_connections_per_device`.
pub const CLOSE_DEVICE_LIMIT: u32 = 4;

/// The typed answer to a frame the codec refused.
pub fn codec_error_answer(e: &CodecError) -> SyncError {
    match e {
        CodecError::UnsupportedVersion(got) => SyncError::UnsupportedVersion {
            got: *got,
            min: MIN_PROTOCOL_VERSION,
            max: PROTOCOL_VERSION,
        },
        // The response encoder truncates reasons to the protocol's limit.
        other => SyncError::BadRequest {
            reason: other.to_string(),
        },
    }
}

/// Accepts connections until `shutdown` turns true, then waits for the
/// connection tasks to finish.
pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    ctx: Arc<ListenerContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let for_connections = shutdown.clone();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                if ctx.connections.available_permits() == 0 {
                    // No slot would be free after the handshake either.
                    telemetry::refused(telemetry::Refusal::Limit);
                    incoming.refuse();
                    continue;
                }
                if !incoming.remote_address_validated()
                    && ctx.pending_handshakes() >= ctx.limits.retry_above_pending
                {
                    metrics::counter!(telemetry::HANDSHAKE_RETRIES).increment(1);
                    // Fails only for a validated address, excluded above.
                    if let Err(e) = incoming.retry() {
                        e.into_incoming().ignore();
                    }
                    continue;
                }
                match Arc::clone(&ctx.pending).try_acquire_owned() {
                    Ok(pending) => {
                        let ctx = Arc::clone(&ctx);
                        let shutdown = for_connections.clone();
                        conns.spawn(serve_connection(incoming, pending, ctx, shutdown));
                    }
                    Err(_) => {
                        telemetry::refused(telemetry::Refusal::Pending);
                        incoming.refuse();
                    }
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    while conns.join_next().await.is_some() {}
}

async fn serve_connection(
    incoming: quinn::Incoming,
    pending: OwnedSemaphorePermit,
    ctx: Arc<ListenerContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let handshakes = metrics::gauge!(telemetry::HANDSHAKES_PENDING);
    handshakes.increment(1.0);
    // A handshake still pending at shutdown is dropped (the endpoint's
    // close ends it) rather than waited for until its idle timeout.
    let handshake = tokio::select! {
        h = incoming => Some(h),
        _ = shutdown.wait_for(|s| *s) => None,
    };
    handshakes.decrement(1.0);
    drop(pending);
    let Some(handshake) = handshake else { return };
    let conn = match handshake {
        Ok(c) => c,
        Err(e) => {
            telemetry::refused(telemetry::Refusal::Handshake);
            tracing::debug!(error = %e, reason = ?omega_transport::quic::HandshakeFailure::of(&e), "handshake failed");
            return;
        }
    };
    let device = match omega_transport::quic::peer_device_id(&conn) {
        Ok(d) => d,
        Err(e) => {
            telemetry::refused(telemetry::Refusal::Identity);
            tracing::debug!(error = %e, "certificate names no valid device id");
            conn.close(CLOSE_BAD_IDENTITY.into(), b"bad identity");
            return;
        }
    };
    // The slot is taken only now that the peer has completed its handshake.
    let Ok(_slot) = Arc::clone(&ctx.connections).try_acquire_owned() else {
        telemetry::refused(telemetry::Refusal::Limit);
        conn.close(CLOSE_CONNECTION_LIMIT.into(), b"too many connections");
        return;
    };
    // Counted while the slot is held: the map has at most
    // `max_connections` entries.
    let Some(_device_slot) = ctx.per_device.take(&device) else {
        telemetry::refused(telemetry::Refusal::DeviceLimit);
        tracing::debug!(device = %device, "too many connections for one device");
        conn.close(
            CLOSE_DEVICE_LIMIT.into(),
            b"too many connections for this device",
        );
        return;
    };
    let gauge = metrics::gauge!(telemetry::CONNECTIONS);
    gauge.increment(1.0);
    ctx.track(&conn, true);
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let ctx = Arc::clone(&ctx);
                    let device = device.clone();
                    streams.spawn(serve_stream(send, recv, device, ctx));
                }
                Err(_) => break,
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    // Finish the syncs this connection has in flight.
    while streams.join_next().await.is_some() {}
    if *shutdown.borrow() {
        conn.close(CLOSE_SHUTDOWN.into(), b"node shutting down");
    }
    ctx.track(&conn, false);
    gauge.decrement(1.0);
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    device: DeviceId,
    ctx: Arc<ListenerContext>,
) {
    let started = Instant::now();
    let body = tokio::time::timeout(
        ctx.request_timeout,
        read_frame(&mut recv, limits::MAX_REQUEST_FRAME),
    )
    .await;
    let mut codec_refused = true;
    let (response, outcome): (PackedSyncResponse, SyncOutcome) = match body {
        Err(_) => {
            telemetry::sync_error(telemetry::ERROR_REQUEST_TIMEOUT);
            let _ = recv.stop(0u32.into());
            let _ = send.reset(0u32.into());
            return;
        }
        Ok(Err(CodecError::Io(e))) => {
            // The peer reset the stream or the connection went away: no one
            // to answer.
            telemetry::sync_error(telemetry::ERROR_STREAM_RESET);
            tracing::debug!(device = %device, error = %e, "request stream failed");
            let _ = send.reset(0u32.into());
            return;
        }
        Ok(Err(e)) => {
            // Oversized or cut short: tell the peer to stop sending, answer.
            let _ = recv.stop(0u32.into());
            telemetry::sync_error(e.kind());
            (Err(codec_error_answer(&e)), SyncOutcome::Refused)
        }
        Ok(Ok(bytes)) => match decode_packed_request(&bytes) {
            Err(e) => {
                telemetry::sync_error(e.kind());
                (Err(codec_error_answer(&e)), SyncOutcome::Refused)
            }
            Ok(request) => {
                codec_refused = false;
                match ctx.node.try_admit() {
                    None => (Err(ctx.node.busy()), SyncOutcome::Refused),
                    Some(permit) => {
                        ctx.node
                            .sync(permit, device.clone(), request, now_ms())
                            .await
                    }
                }
            }
        },
    };
    // Codec refusals were counted by their codec kind above.
    if let (Err(e), false) = (&response, codec_refused) {
        telemetry::sync_error(e.kind());
    }
    metrics::counter!(telemetry::SYNCS, "outcome" => telemetry::outcome_label(outcome))
        .increment(1);
    let frame = match encode_packed_response(&response) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(device = %device, error = %e, "response could not be encoded");
            let internal: PackedSyncResponse = Err(SyncError::Internal {
                reason: "the response could not be encoded".into(),
            });
            match encode_packed_response(&internal) {
                Ok(f) => f,
                Err(_) => {
                    let _ = send.reset(0u32.into());
                    return;
                }
            }
        }
    };
    if let Err(e) = omega_transport::quic::respond(&mut send, &frame).await {
        tracing::debug!(device = %device, error = %e, "response not delivered");
    }
    metrics::histogram!(telemetry::SYNC_DURATION).record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn device_counts_stop_at_the_limit_and_forget_devices_at_zero() {
        let counts = DeviceCounts::new(2);
        let tv = DeviceId::new("tv-00001").unwrap();
        let other = DeviceId::new("tv-00002").unwrap();
        let a = counts.take(&tv).unwrap();
        let b = counts.take(&tv).unwrap();
        assert!(counts.take(&tv).is_none());
        let c = counts.take(&other).unwrap();
        assert_eq!(counts.devices(), 2);
        drop(a);
        let again = counts.take(&tv).unwrap();
        drop((b, again, c));
        assert_eq!(counts.devices(), 0, "no entry is kept at a count of 0");
    }
}
