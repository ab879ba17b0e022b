//! The Unix-socket server: accepts connections, reads bounded request lines,
//! dispatches them to the [`Brain`] and writes one response line each.
//!
//! Bounds (ractor mailboxes are unbounded, so the work in front of them is
//! bounded here):
//! * connections: a semaphore of `max_connections`; past it a connection is
//!   accepted, sent one `too_many_connections` error line and closed;
//! * per connection: at most `max_in_flight_per_connection` requests run at
//!   once; past it the connection is simply not read until one finishes
//!   (backpressure through the socket buffer, no error);
//! * daemon-wide: at most `max_in_flight` requests run at once; past it a
//!   request gets `busy` at once (load shedding rather than queueing);
//! * a request line is at most `max_request_bytes`; a longer one gets
//!   `request_too_large`, the rest of the line is read and discarded, and the
//!   connection stays usable. Lines are cut by tokio-util's `LinesCodec`
//!   (with that maximum), driven by [`LineReader`] rather than `FramedRead`:
//!   `FramedRead` ends the stream after a decoder error and, when it resumes,
//!   does not decode lines already buffered until more bytes arrive, so a
//!   request sent right behind an oversized one would wait.
//!
//! Access ([`crate::access`]): each connection gets a role from its peer's
//! credentials (`SO_PEERCRED`, tokio's `UnixStream::peer_cred`) when it is
//! accepted; a request its role does not cover is answered `forbidden` (the
//! connection stays open). `observe` is rate-limited per connection by a
//! token bucket (`[access] observe_per_sec`, `observe_burst`); past it
//! `rate_limited`.
//!
//! `catalog.import` with a `path` ([`read_import_file`]): only inside
//! `catalog_import_dir`, after resolving symlinks; only regular files (the
//! metadata is checked before opening, the file is opened `O_NONBLOCK |
//! O_NOFOLLOW` so a FIFO swapped in cannot block, and the opened file is
//! checked again); read with a bound of `catalog_import_max_bytes`. A path
//! outside the directory and a path that does not exist get the same
//! `forbidden` answer, so the op does not tell which files exist.
//!
//! The socket is created 0660 from the start ([`bind`]: the umask is set
//! to 0117 around `bind(2)`), so there is no moment in which it is wider.
//!
//! Shutdown ([`serve`]'s `shutdown` future resolves, e.g. on SIGTERM): stop
//! accepting, stop reading new requests, let the requests in flight finish
//! and their responses be written (bounded by the grace period), stop the
//! actors (Memory last), then remove the socket file.
//!
//! With the `testing` cargo feature and `debug_ops`, `debug.hold` is a request that stays in flight until
//! `debug.release` (or its timeout), and `debug.status` reports the counts:
//! the tests use them to hold the limits above reached without sleeping.
//! `debug.release` and `debug.status` are answered by the connection itself,
//! outside the in-flight limits, so they work while those are reached.

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use omega_brain::actors::Brain;
use omega_brain::RecommendResponse;
use omega_protocol::ViewingEvent;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

use crate::access::{self, AccessPolicy, ObserveBucket, Role};
use crate::protocol::{self, err_line, ok_line, ProtoError, Request, IMPORT_CHUNK};

/// Errors setting up the socket.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another daemon answers on this socket.
    #[error("another omega-braind is live on {0}")]
    AlreadyRunning(PathBuf),
    /// Something other than a socket is at the socket path; it is not removed.
    #[error("{0} exists and is not a socket: refusing to replace it")]
    NotASocket(PathBuf),
    /// Binding or preparing the socket failed.
    #[error("socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Limits of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Socket path.
    pub socket: PathBuf,
    /// Concurrent connections.
    pub max_connections: usize,
    /// In-flight requests per connection.
    pub max_in_flight_per_connection: usize,
    /// In-flight requests in total.
    pub max_in_flight: usize,
    /// Longest request line.
    pub max_request_bytes: usize,
    /// Time in-flight work gets at shutdown.
    pub shutdown_grace: Duration,
    /// Enables `debug.hold`, `debug.release` and `debug.status`.
    pub debug_ops: bool,
    /// Roles by peer uid and gid.
    pub access: AccessPolicy,
    /// Observes per second per connection once the burst is spent (> 0).
    pub observe_per_sec: f64,
    /// Observes per connection back to back (≥ 1).
    pub observe_burst: u32,
    /// Where `catalog.import` may read files; `None`: `path` imports are off.
    pub import_dir: Option<PathBuf>,
    /// Largest file `catalog.import` reads, bytes.
    pub import_max_bytes: u64,
}

/// Binds the socket, created with mode 0660: the process umask is 0117
/// while `bind(2)` runs and restored right after. The umask is
/// process-wide: `omega-braind` binds before its actors start, so no other
/// thread creates files meanwhile (and the files it creates later carry
/// explicit modes anyway). Chosen over binding in a private directory and
/// renaming, which would need a directory beside the socket the daemon may
/// create. A stale socket (nobody answering) is
/// removed first; a live one means another daemon runs: refused. Anything
/// at the path that is not a socket (a mistyped `--socket` naming the store,
/// say) is left alone and refused.
pub async fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let io = |source| ServerError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServerError::NotASocket(path.to_path_buf()));
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(ServerError::AlreadyRunning(path.to_path_buf()));
        }
        tracing::warn!(path = %path.display(), "removing a stale socket file");
        std::fs::remove_file(path).map_err(io)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let previous = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o117));
    let bound = UnixListener::bind(path);
    rustix::process::umask(previous);
    bound.map_err(io)
}

struct Ctx {
    brain: Brain,
    cfg: ServerConfig,
    global: Arc<Semaphore>,
    /// Read only by the `testing` debug ops.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    conns: Arc<Semaphore>,
    #[cfg(feature = "testing")]
    holds: debug::Holds,
    /// The `cpu` field of `health`: detected once, it cannot change.
    cpu: Value,
}

/// Serves until `shutdown` resolves, then shuts down cleanly (see the module docs).
pub async fn serve(
    listener: UnixListener,
    brain: Brain,
    cfg: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let conns = Arc::new(Semaphore::new(cfg.max_connections));
    let ctx = Arc::new(Ctx {
        brain: brain.clone(),
        global: Arc::new(Semaphore::new(cfg.max_in_flight)),
        conns: conns.clone(),
        #[cfg(feature = "testing")]
        holds: debug::Holds::default(),
        cfg: cfg.clone(),
        cpu: serde_json::to_value(crate::cpu::CpuReport::detect()).unwrap_or(Value::Null),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            acc = listener.accept() => match acc {
                Ok((stream, _)) => match conns.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let ctx = ctx.clone();
                        let stop = stop_rx.clone();
                        tasks.spawn(async move {
                            connection(stream, ctx, stop).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tasks.spawn(refuse(stream, ProtoError::new(
                            "too_many_connections",
                            format!("at most {} connections", cfg.max_connections),
                        )));
                    }
                },
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    // Stop the readers first: once a client sees connections refused, no
    // request it sends afterwards on an open connection is read.
    let _ = stop_tx.send(true);
    drop(listener);
    let drained = tokio::time::timeout(cfg.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over: dropping the remaining connections");
        tasks.abort_all();
    }
    brain.shutdown(cfg.shutdown_grace).await;
    if let Err(e) = std::fs::remove_file(&cfg.socket) {
        tracing::warn!(error = %e, path = %cfg.socket.display(), "removing the socket");
    }
    tracing::info!("stopped");
}

/// Seconds since the epoch now: the time a request line is received at.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn refuse(mut stream: UnixStream, e: ProtoError) {
    let _ = stream
        .write_all(err_line(&Value::Null, &e).as_bytes())
        .await;
    let _ = stream.shutdown().await;
}

/// One request line read with a bound.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its `\n` (and `\r`).
    Line(String),
    /// The line was longer than the bound; it is discarded to its end.
    TooLarge,
    /// The line was not UTF-8; it was dropped.
    InvalidUtf8,
    /// End of stream.
    Eof,
}

/// Reads bounded lines from a stream with [`LinesCodec`]; after an oversized
/// or non-UTF-8 line it goes on with the next one.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: BytesMut,
    codec: LinesCodec,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// Lines of at most `max` bytes from `inner`.
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(8 * 1024),
            codec: LinesCodec::new_with_max_length(max),
            eof: false,
        }
    }

    /// The next line. Cancel-safe: the partial line stays buffered.
    pub async fn next_line(&mut self) -> std::io::Result<Line> {
        loop {
            let decoded = if self.eof {
                self.codec.decode_eof(&mut self.buf)
            } else {
                self.codec.decode(&mut self.buf)
            };
            match decoded {
                Ok(Some(line)) => return Ok(Line::Line(line)),
                Ok(None) if self.eof => return Ok(Line::Eof),
                Ok(None) => {}
                Err(LinesCodecError::MaxLineLengthExceeded) => return Ok(Line::TooLarge),
                Err(LinesCodecError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Ok(Line::InvalidUtf8)
                }
                Err(LinesCodecError::Io(e)) => return Err(e),
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                self.eof = true;
            }
        }
    }
}

async fn connection(stream: UnixStream, ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let (role, peer) = match stream.peer_cred() {
        Ok(c) => (
            ctx.cfg.access.role(c.uid(), c.gid()),
            format!("uid {}, gid {}", c.uid(), c.gid()),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "no peer credentials: the connection gets no role");
            (Role::None, "unknown peer".to_string())
        }
    };
    let mut observes = ObserveBucket::new(
        ctx.cfg.observe_per_sec,
        ctx.cfg.observe_burst,
        tokio::time::Instant::now(),
    );
    let (rd, mut wr) = stream.into_split();
    let per = ctx.cfg.max_in_flight_per_connection;
    let (tx, mut rx) = mpsc::channel::<String>(per * 2 + 2);
    let writer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if wr.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let slots = Arc::new(Semaphore::new(per));
    let mut reader = LineReader::new(rd, ctx.cfg.max_request_bytes);
    loop {
        if *stop.borrow() {
            break;
        }
        // `biased`: the stop wins over a request line that is ready at the
        // same time (an unbiased select picks at random and could read it).
        let permit = tokio::select! {
            biased;
            _ = stop.changed() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let line = tokio::select! {
            biased;
            _ = stop.changed() => break,
            l = reader.next_line() => l,
        };
        let text = match line {
            Ok(Line::Line(t)) => t,
            Ok(Line::Eof) | Err(_) => break,
            Ok(bad @ (Line::TooLarge | Line::InvalidUtf8)) => {
                let e = if bad == Line::TooLarge {
                    ProtoError::new(
                        "request_too_large",
                        format!(
                            "a request line is at most {} bytes",
                            ctx.cfg.max_request_bytes
                        ),
                    )
                } else {
                    ProtoError::new("invalid_utf8", "the request line is not UTF-8")
                };
                if tx.send(err_line(&Value::Null, &e)).await.is_err() {
                    break;
                }
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let (id, req) = protocol::parse(text.as_bytes(), now_secs());
        let allowed = req.and_then(|r| {
            access::check(role, &r, &peer)?;
            if matches!(r, Request::Observe { .. }) {
                observes.take(tokio::time::Instant::now())?;
            }
            Ok(r)
        });
        let req = match allowed {
            Ok(r) => r,
            Err(e) => {
                if tx.send(err_line(&id, &e)).await.is_err() {
                    break;
                }
                continue;
            }
        };
        if let Some(r) = immediate(&ctx, &req) {
            let out = match r {
                Ok(v) => ok_line(&id, v),
                Err(e) => err_line(&id, &e),
            };
            if tx.send(out).await.is_err() {
                break;
            }
            continue;
        }
        let Ok(global) = ctx.global.clone().try_acquire_owned() else {
            let e = ProtoError::new("busy", "too many requests in flight; retry");
            if tx.send(err_line(&id, &e)).await.is_err() {
                break;
            }
            continue;
        };
        let tx = tx.clone();
        let ctx2 = ctx.clone();
        tokio::spawn(async move {
            let out = match dispatch(&ctx2, req).await {
                Ok(v) => ok_line(&id, v),
                Err(e) => {
                    if e.code == "internal" || e.code == "storage_error" || e.code == "disk_full" {
                        tracing::error!(code = e.code, message = %e.message, "request failed");
                    }
                    err_line(&id, &e)
                }
            };
            let _ = tx.send(out).await;
            drop(global);
            drop(permit);
        });
    }
    // Let the requests in flight finish and be written.
    let _ = slots.acquire_many(per as u32).await;
    drop(tx);
    let _ = writer.await;
}

/// The ops the connection answers itself, outside the in-flight limits
/// (`None`: the request is dispatched). Only debug ops are.
fn immediate(ctx: &Ctx, req: &Request) -> Option<Result<Value, ProtoError>> {
    #[cfg(feature = "testing")]
    return debug::immediate(ctx, req);
    #[cfg(not(feature = "testing"))]
    {
        let _ = (ctx, req);
        None
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, ProtoError> {
    serde_json::to_value(v).map_err(|e| ProtoError::new("internal", e.to_string()))
}

async fn dispatch(ctx: &Ctx, req: Request) -> Result<Value, ProtoError> {
    let brain = &ctx.brain;
    match req {
        Request::Recommend(req) => to_json(&RecommendResponse {
            items: brain.recommend(req).await?,
        }),
        Request::Observe {
            content_id,
            fraction,
            at,
            context,
        } => {
            let ev = ViewingEvent::new(content_id, fraction, at, context)
                .map_err(|e| ProtoError::new("invalid_field", e.to_string()))?;
            let o = brain.observe(ev).await?;
            Ok(
                json!({"seq": o.seq, "patterns_changed": o.patterns_changed, "known_item": o.known_item, "duplicate": o.duplicate}),
            )
        }
        Request::CatalogUpsert(items) => to_json(&brain.upsert_catalog(items).await?),
        Request::CatalogImportPath(path) => {
            let dir = ctx.cfg.import_dir.clone();
            let max = ctx.cfg.import_max_bytes;
            let text =
                tokio::task::spawn_blocking(move || read_import_file(dir.as_deref(), &path, max))
                    .await
                    .map_err(|e| ProtoError::new("internal", e.to_string()))??;
            import(brain, &text).await
        }
        Request::CatalogImportLines(text) => import(brain, &text).await,
        Request::Stats => to_json(&brain.stats().await?),
        Request::History(limit) => {
            Ok(json!({ "episodes": to_json(&brain.history(limit).await?)? }))
        }
        Request::Health => {
            let mut health = to_json(&brain.health())?;
            if let Some(fields) = health.as_object_mut() {
                fields.insert("cpu".into(), ctx.cpu.clone());
            }
            Ok(health)
        }
        Request::Forget => {
            brain.forget().await?;
            Ok(json!({"forgotten": true}))
        }
        Request::SyncNow => to_json(&brain.sync_now().await?),
        #[cfg(feature = "testing")]
        r @ (Request::DebugPanicInference
        | Request::DebugHold(_)
        | Request::DebugRelease
        | Request::DebugStatus) => debug::dispatch(ctx, r).await,
    }
}

/// Reads a `catalog.import` file (see the module docs): `path` (relative:
/// inside `dir`) must resolve inside `dir` to a regular file of at most
/// `max` bytes.
pub fn read_import_file(dir: Option<&Path>, path: &Path, max: u64) -> Result<String, ProtoError> {
    let Some(dir) = dir else {
        return Err(ProtoError::new(
            "not_available",
            "catalog.import reads no files: catalog_import_dir is not configured (send `lines`)",
        ));
    };
    let dir = dir.canonicalize().map_err(|e| {
        ProtoError::new(
            "internal",
            format!("the import directory {}: {e}", dir.display()),
        )
    })?;
    // Missing and outside alike: nothing tells whether the path exists.
    let refused = || {
        ProtoError::new(
            "forbidden",
            format!(
                "path: not an existing file inside the import directory {}",
                dir.display()
            ),
        )
    };
    let resolved = dir.join(path).canonicalize().map_err(|_| refused())?;
    let Ok(inside) = resolved.strip_prefix(&dir) else {
        return Err(refused());
    };
    if inside.as_os_str().is_empty() {
        return Err(refused());
    }
    let shown = inside.display();
    let not_regular =
        || ProtoError::new("invalid_field", format!("path {shown}: not a regular file"));
    let io = |e: std::io::Error| ProtoError::new("invalid_field", format!("path {shown}: {e}"));
    let too_large = |n: u64| {
        ProtoError::new(
            "invalid_field",
            format!("path {shown}: {n} bytes or more, at most {max} (catalog_import_max_bytes)"),
        )
    };
    if !std::fs::symlink_metadata(&resolved).map_err(io)?.is_file() {
        return Err(not_regular());
    }
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        &resolved,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(e.into()))?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    if meta.len() > max {
        return Err(too_large(meta.len()));
    }
    let mut text = String::new();
    file.take(max.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > max {
        return Err(too_large(text.len() as u64));
    }
    Ok(text)
}

async fn import(brain: &Brain, text: &str) -> Result<Value, ProtoError> {
    let items = protocol::parse_catalog_lines(text)?;
    let imported = items.len();
    let mut upserted = 0;
    let mut catalog_items = 0;
    for chunk in items.chunks(IMPORT_CHUNK) {
        let u = brain.upsert_catalog(chunk.to_vec()).await?;
        upserted += u.upserted;
        catalog_items = u.catalog_items;
    }
    if imported == 0 {
        catalog_items = brain.stats().await?.catalog_items;
    }
    Ok(json!({"imported": imported, "upserted": upserted, "catalog_items": catalog_items}))
}

/// The `debug.*` ops (`testing` feature only): holds that stay in flight,
/// their release, the counts, and the inference panic hook.
#[cfg(feature = "testing")]
mod debug {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::{json, Value};
    use tokio::sync::watch;

    use super::Ctx;
    use crate::protocol::{ProtoError, Request};
    use omega_brain::actors::ActorError;

    /// The `debug.hold` waiters: each subscribes to `release` and waits for the
    /// next change; `debug.release` bumps it, ending every waiter at once.
    #[derive(Debug)]
    pub(super) struct Holds {
        release: watch::Sender<u64>,
        held: AtomicUsize,
    }

    /// Counts one waiter in [`Holds::held`] while alive.
    struct Held<'a>(&'a AtomicUsize);

    impl<'a> Held<'a> {
        fn new(n: &'a AtomicUsize) -> Self {
            n.fetch_add(1, Ordering::SeqCst);
            Self(n)
        }
    }

    impl Drop for Held<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Default for Holds {
        fn default() -> Self {
            Self {
                release: watch::channel(0).0,
                held: AtomicUsize::new(0),
            }
        }
    }

    fn disabled() -> ProtoError {
        ProtoError::from(ActorError::DebugDisabled)
    }

    /// `debug.release` and `debug.status`, answered by the connection itself
    /// (`None`: another op).
    pub(super) fn immediate(ctx: &Ctx, req: &Request) -> Option<Result<Value, ProtoError>> {
        let r = match req {
            Request::DebugRelease | Request::DebugStatus if !ctx.cfg.debug_ops => Err(disabled()),
            Request::DebugRelease => {
                // Counted before the release: every counted waiter subscribed
                // before it was counted, so it sees this change.
                let n = ctx.holds.held.load(Ordering::SeqCst);
                ctx.holds.release.send_modify(|g| *g = g.wrapping_add(1));
                Ok(json!({ "released": n }))
            }
            Request::DebugStatus => Ok(json!({
                "held": ctx.holds.held.load(Ordering::SeqCst),
                "in_flight": ctx.cfg.max_in_flight.saturating_sub(ctx.global.available_permits()),
                "connections": ctx.cfg.max_connections.saturating_sub(ctx.conns.available_permits()),
            })),
            _ => return None,
        };
        Some(r)
    }

    /// Runs a debug op dispatched like any request.
    pub(super) async fn dispatch(ctx: &Ctx, req: Request) -> Result<Value, ProtoError> {
        match req {
            Request::DebugPanicInference => {
                ctx.brain.debug_panic_inference()?;
                Ok(json!({"armed": true}))
            }
            Request::DebugHold(_) if !ctx.cfg.debug_ops => Err(disabled()),
            Request::DebugHold(timeout) => {
                let mut release = ctx.holds.release.subscribe();
                let _held = Held::new(&ctx.holds.held);
                let released = tokio::time::timeout(timeout, release.changed())
                    .await
                    .is_ok();
                Ok(json!({ "released": released }))
            }
            Request::DebugRelease | Request::DebugStatus => match immediate(ctx, &req) {
                Some(r) => r,
                None => Err(ProtoError::new("internal", "not an immediate op")),
            },

            _ => Err(ProtoError::new("internal", "not a debug op")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An oversized line and a non-UTF-8 one each give one typed result and
    /// the reader goes on, also with the next line already buffered behind
    /// them (where `FramedRead` would wait for more bytes).
    #[tokio::test]
    async fn line_reader_bounds_lines_and_goes_on() {
        let mut input = b"short\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 40));
        input.extend(b"\nok\n\xff\xfe\nafter\nno-newline");
        let mut r = LineReader::new(&input[..], 16);
        assert_eq!(r.next_line().await.unwrap(), Line::Line("short".into()));
        assert_eq!(r.next_line().await.unwrap(), Line::TooLarge);
        assert_eq!(r.next_line().await.unwrap(), Line::Line("ok".into()));
        assert_eq!(r.next_line().await.unwrap(), Line::InvalidUtf8);
        assert_eq!(r.next_line().await.unwrap(), Line::Line("after".into()));
        assert_eq!(
            r.next_line().await.unwrap(),
            Line::Line("no-newline".into())
        );
        assert_eq!(r.next_line().await.unwrap(), Line::Eof);
        // Exactly the bound is fine.
        let exact = [vec![b'y'; 16], b"\n".to_vec()].concat();
        let mut r = LineReader::new(&exact[..], 16);
        assert_eq!(r.next_line().await.unwrap(), Line::Line("y".repeat(16)));
    }

    #[tokio::test]
    async fn bind_replaces_a_stale_socket_but_never_another_file() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file at the path (say, the store named by mistake) stays.
        let file = dir.path().join("brain.redb");
        std::fs::write(&file, b"precious").unwrap();
        assert!(matches!(bind(&file).await, Err(ServerError::NotASocket(_))));
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        // A live socket is refused; once nobody answers it is replaced.
        let sock = dir.path().join("brain.sock");
        let live = bind(&sock).await.unwrap();
        assert!(matches!(
            bind(&sock).await,
            Err(ServerError::AlreadyRunning(_))
        ));
        // Created 0660, and the umask is back to what it was.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let now = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        rustix::process::umask(now);
        assert_ne!(now.as_raw_mode(), 0o117, "umask restored after bind");
        drop(live);
        assert!(bind(&sock).await.is_ok());
    }

    /// `catalog.import` paths: inside the directory only, regular files
    /// only, bounded; outside and missing answered alike.
    #[test]
    fn import_files_stay_inside_the_directory_and_are_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("import");
        std::fs::create_dir(&dir).unwrap();
        let line = r#"{"id":"a","title":"A"}"#;
        std::fs::write(dir.join("ok.jsonl"), line).unwrap();
        let d = Some(dir.as_path());
        assert_eq!(
            read_import_file(d, Path::new("ok.jsonl"), 1024).unwrap(),
            line
        );
        assert_eq!(
            read_import_file(d, &dir.join("ok.jsonl"), 1024).unwrap(),
            line
        );
        // No directory configured: off.
        assert_eq!(
            read_import_file(None, &dir.join("ok.jsonl"), 1024)
                .unwrap_err()
                .code,
            "not_available"
        );
        // Outside, existing or not, directly, by `..` or by a symlink: one answer.
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "x").unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("link")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero")).unwrap();
        let outside = [
            secret.clone(),
            tmp.path().join("missing"),
            PathBuf::from("../secret"),
            PathBuf::from("../missing"),
            PathBuf::from("link"),
            PathBuf::from("zero"),
            PathBuf::from("/dev/zero"),
            PathBuf::from("missing-inside"),
            PathBuf::from("."),
        ];
        let answers: Vec<_> = outside
            .iter()
            .map(|p| read_import_file(d, p, 1024).unwrap_err())
            .collect();
        assert!(answers.iter().all(|e| e.code == "forbidden"), "{answers:?}");
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "the same answer for every outside or missing path: {answers:?}"
        );
        // Inside but not a regular file: a FIFO (no hang), a directory.
        let fifo = dir.join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        std::fs::create_dir(dir.join("sub")).unwrap();
        for p in ["fifo", "sub"] {
            let e = read_import_file(d, Path::new(p), 1024).unwrap_err();
            assert_eq!(e.code, "invalid_field", "{p}: {e:?}");
            assert!(e.message.contains("not a regular file"), "{e:?}");
        }
        // Over the bound.
        std::fs::write(dir.join("big.jsonl"), vec![b' '; 2048]).unwrap();
        let e = read_import_file(d, Path::new("big.jsonl"), 1024).unwrap_err();
        assert!(e.message.contains("at most 1024"), "{e:?}");
    }
}
