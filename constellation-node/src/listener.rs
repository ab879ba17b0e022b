//! The QUIC listener: mutual TLS against the device CA, one sync per
//! bidirectional stream, answers from the shard actors.
//!
//! * Connections: at most `max_connections` at once (a semaphore); past it a
//!   new connection is refused at once (`Incoming::refuse`, the device backs
//!   off) instead of being queued. The device id is read from the verified
//!   certificate, never from the payload.
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

use tokio::sync::{watch, Semaphore};
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
    /// Connection slots.
    pub connections: Arc<Semaphore>,
    /// Time a device has to send its request frame.
    pub request_timeout: Duration,
    /// The open connections by `stable_id` (at most `max_connections`):
    /// re-checked when the revocation list is reloaded.
    pub open: Mutex<HashMap<usize, quinn::Connection>>,
}

impl ListenerContext {
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

fn outcome_label(o: SyncOutcome) -> &'static str {
    match o {
        SyncOutcome::Applied => "applied",
        SyncOutcome::Replayed => "replayed",
        SyncOutcome::Forgotten => "forgotten",
        SyncOutcome::Refused => "refused",
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
                match Arc::clone(&ctx.connections).try_acquire_owned() {
                    Ok(slot) => {
                        let ctx = Arc::clone(&ctx);
                        let shutdown = for_connections.clone();
                        conns.spawn(async move {
                            serve_connection(incoming, ctx, shutdown).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        metrics::counter!(telemetry::CONNECTIONS_REFUSED, "reason" => "limit")
                            .increment(1);
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
    ctx: Arc<ListenerContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            metrics::counter!(telemetry::CONNECTIONS_REFUSED, "reason" => "handshake").increment(1);
            tracing::debug!(error = %e, reason = ?omega_transport::quic::HandshakeFailure::of(&e), "handshake failed");
            return;
        }
    };
    let device = match omega_transport::quic::peer_device_id(&conn) {
        Ok(d) => d,
        Err(e) => {
            metrics::counter!(telemetry::CONNECTIONS_REFUSED, "reason" => "identity").increment(1);
            tracing::debug!(error = %e, "certificate names no valid device id");
            conn.close(CLOSE_BAD_IDENTITY.into(), b"bad identity");
            return;
        }
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
            metrics::counter!(telemetry::SYNC_ERRORS, "kind" => "request_timeout").increment(1);
            let _ = recv.stop(0u32.into());
            let _ = send.reset(0u32.into());
            return;
        }
        Ok(Err(CodecError::Io(e))) => {
            // The peer reset the stream or the connection went away: no one
            // to answer.
            metrics::counter!(telemetry::SYNC_ERRORS, "kind" => "stream_reset").increment(1);
            tracing::debug!(device = %device, error = %e, "request stream failed");
            let _ = send.reset(0u32.into());
            return;
        }
        Ok(Err(e)) => {
            // Oversized or cut short: tell the peer to stop sending, answer.
            let _ = recv.stop(0u32.into());
            metrics::counter!(telemetry::SYNC_ERRORS, "kind" => e.kind()).increment(1);
            (Err(codec_error_answer(&e)), SyncOutcome::Refused)
        }
        Ok(Ok(bytes)) => match decode_packed_request(&bytes) {
            Err(e) => {
                metrics::counter!(telemetry::SYNC_ERRORS, "kind" => e.kind()).increment(1);
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
        metrics::counter!(telemetry::SYNC_ERRORS, "kind" => e.kind()).increment(1);
    }
    metrics::counter!(telemetry::SYNCS, "outcome" => outcome_label(outcome)).increment(1);
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
