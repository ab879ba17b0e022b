//! The socket bounds of `omega-braind` (server.rs module docs) against the
//! real binary: the connection limit, the daemon-wide and per-connection
//! in-flight limits, and the SIGTERM drain. Requests are held in flight with
//! `debug.hold` / `debug.release` (`debug_ops = true`) and the counts are
//! read with `debug.status`; every wait polls with a deadline or blocks on a
//! read whose timeout is the deadline. Nothing sleeps to synchronize.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{wait_for, Conn, Daemon, DEADLINE};

/// How long a request refused with `busy` may take: far below the 30 s of
/// the held requests, so a queued (not shed) request fails this.
const AT_ONCE: Duration = Duration::from_secs(5);

/// How long a connection over its per-connection limit is watched for an
/// (unwanted) answer. Not a synchronization: the test waits for the held
/// state first; this is only the window of a negative check.
const QUIET: Duration = Duration::from_millis(1500);

fn status(c: &mut Conn) -> Value {
    let r = c.call(&json!({"id": "status", "op": "debug.status"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    r["result"].clone()
}

fn hold(id: &str, timeout_ms: u64) -> Value {
    json!({"id": id, "op": "debug.hold", "timeout_ms": timeout_ms})
}

fn code(r: &Value) -> &str {
    r["error"]["code"].as_str().unwrap_or("")
}

fn closed(e: &std::io::Error) -> bool {
    // A Unix socket closed by the peer with our unread bytes in its buffer
    // reads as a reset rather than an end of stream.
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
    )
}

#[test]
fn connection_limit_refuses_the_extra_connection_and_frees_the_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), "max_connections = 4\ndebug_ops = true\n");
    // Daemon::start's readiness probe closed its connection; wait until the
    // daemon has released that slot, or the fourth below could be refused.
    let mut first = d.connect();
    wait_for("the start-up probe's slot released", || {
        status(&mut first)["connections"] == json!(1)
    });
    // Four connections, each served (so each holds its slot).
    let mut conns: Vec<Conn> = vec![first];
    conns.extend((1..4).map(|i| {
        let mut c = d.connect();
        let r = c.call(&json!({"id": i, "op": "stats"}));
        assert_eq!(r["ok"], json!(true), "connection {i}: {r}");
        assert_eq!(r["id"], json!(i));
        c
    }));
    assert_eq!(status(&mut conns[0])["connections"], json!(4));
    // The fifth: exactly one error line, then closed.
    let mut fifth = d.connect();
    let r = fifth.recv().unwrap();
    assert_eq!(r["ok"], json!(false), "{r}");
    assert_eq!(code(&r), "too_many_connections", "{r}");
    assert_eq!(r["id"], Value::Null);
    let e = fifth.recv().unwrap_err();
    assert!(closed(&e), "closed after the one line, got {e}");
    // The four are still served.
    for (i, c) in conns.iter_mut().enumerate() {
        let r = c.call(&json!({"id": format!("again-{i}"), "op": "stats"}));
        assert_eq!(r["ok"], json!(true), "{r}");
    }
    // Close one: once the daemon has noticed, a new connection is served.
    drop(conns.pop());
    let mut replacement = None;
    wait_for("a new connection served after closing one", || {
        let mut c = d.connect();
        // A refused connection may already be closed: the write may fail.
        let _ = c.send_raw(b"{\"id\":\"new\",\"op\":\"stats\"}\n");
        let r = c.recv().unwrap();
        if r["ok"] == json!(true) {
            assert_eq!(r["id"], json!("new"));
            replacement = Some(c);
            true
        } else {
            // Only the refusal is acceptable while the close is not seen yet.
            assert_eq!(code(&r), "too_many_connections", "{r}");
            false
        }
    });
    conns.push(replacement.unwrap());
    assert_eq!(status(&mut conns[0])["connections"], json!(4));
    // Four open again: the limit still holds (no slot leaked either way).
    let mut extra = d.connect();
    assert_eq!(code(&extra.recv().unwrap()), "too_many_connections");
    // Healthy: close everything, every slot comes back, health answers.
    drop(conns);
    drop(extra);
    wait_for("all connection slots back", || {
        d.try_call(&json!({"id": "s", "op": "debug.status"}))
            .is_ok_and(|r| r["result"]["connections"] == json!(1))
    });
    let h = d.ok(json!({"id": "h", "op": "health"}));
    assert_eq!(h["running"], json!(["memory", "inference"]), "{h}");
}

#[test]
fn daemon_wide_in_flight_limit_sheds_with_busy_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), "max_in_flight = 2\ndebug_ops = true\n");
    let mut ctl = d.connect();
    // Two requests held in flight, on two connections.
    let mut a = d.connect();
    let mut b = d.connect();
    a.send(&hold("a", 30_000));
    b.send(&hold("b", 30_000));
    wait_for("two held requests", || {
        let s = status(&mut ctl);
        s["held"] == json!(2) && s["in_flight"] == json!(2)
    });
    // A third request, on any connection, is shed at once.
    let mut c = d.connect();
    for req in [json!({"id": "c1", "op": "stats"}), hold("c2", 30_000)] {
        let t = Instant::now();
        let r = c.call(&req);
        assert!(t.elapsed() < AT_ONCE, "busy took {:?}", t.elapsed());
        assert_eq!(r["id"], req["id"], "{r}");
        assert_eq!(r["ok"], json!(false), "{r}");
        assert_eq!(code(&r), "busy", "{r}");
    }
    let s = status(&mut ctl);
    assert_eq!(
        s["in_flight"],
        json!(2),
        "a shed request takes no slot: {s}"
    );
    assert_eq!(s["held"], json!(2), "{s}");
    // Release: both held requests complete with their answer.
    let r = ctl.call(&json!({"id": "rel", "op": "debug.release"}));
    assert_eq!(r["result"]["released"], json!(2), "{r}");
    for (conn, id) in [(&mut a, "a"), (&mut b, "b")] {
        let r = conn.recv().unwrap();
        assert_eq!(r["id"], json!(id), "{r}");
        assert_eq!(r["result"]["released"], json!(true), "{r}");
    }
    wait_for("the slots freed", || {
        status(&mut ctl)["in_flight"] == json!(0)
    });
    // Requests succeed again, the shed connection included.
    let r = c.call(&json!({"id": "c3", "op": "stats"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["id"], json!("c3"));
    let r = a.call(&json!({"id": "a2", "op": "health"}));
    assert_eq!(r["ok"], json!(true), "{r}");
}

#[test]
fn per_connection_limit_is_backpressure_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        tmp.path(),
        "max_in_flight_per_connection = 2\ndebug_ops = true\n",
    );
    let mut ctl = d.connect();
    let mut a = d.connect();
    // Three requests in one write: two holds fill the connection's slots.
    let batch = format!(
        "{}\n{}\n{}\n",
        hold("h1", 30_000),
        hold("h2", 30_000),
        json!({"id": "s3", "op": "stats"})
    );
    a.send_raw(batch.as_bytes()).unwrap();
    wait_for("two held requests", || status(&mut ctl)["held"] == json!(2));
    // The third is not read, so not answered (not even with an error),
    // although a stats answers in milliseconds once read.
    a.set_read_timeout(QUIET);
    match a.recv() {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the third request was answered while two were held: {other:?}"),
    }
    a.set_read_timeout(DEADLINE);
    let s = status(&mut ctl);
    assert_eq!(s["held"], json!(2), "{s}");
    assert_eq!(s["in_flight"], json!(2), "{s}");
    // Other connections are not held back.
    let mut b = d.connect();
    let r = b.call(&json!({"id": "b", "op": "stats"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    // Release: the third is read and answered after a held one finished.
    let r = ctl.call(&json!({"id": "rel", "op": "debug.release"}));
    assert_eq!(r["result"]["released"], json!(2), "{r}");
    let mut order = Vec::new();
    let mut seen: HashMap<String, Value> = HashMap::new();
    for _ in 0..3 {
        let r = a.recv().unwrap();
        let id = r["id"].as_str().unwrap().to_string();
        assert_eq!(r["ok"], json!(true), "{r}");
        order.push(id.clone());
        assert!(
            seen.insert(id, r).is_none(),
            "two answers for one id: {order:?}"
        );
    }
    assert_ne!(
        order[0], "s3",
        "answered before a slot was freed: {order:?}"
    );
    assert_eq!(seen["h1"]["result"]["released"], json!(true));
    assert_eq!(seen["h2"]["result"]["released"], json!(true));
    assert!(seen["s3"]["result"]["episodes"].is_u64(), "{}", seen["s3"]);
    // Nothing else was queued on the connection: the next answer is the next request's.
    let r = a.call(&json!({"id": "s4", "op": "stats"}));
    assert_eq!(r["id"], json!("s4"), "a stray answer: {r}");
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(tmp.path(), "debug_ops = true\nshutdown_grace_secs = 30\n");
    let mut ctl = d.connect();
    let mut a = d.connect();
    let mut b = d.connect();
    // Held until their timeout: nothing can release them once the daemon
    // stops reading, so the drain has to wait for them to finish.
    // 8 s: long enough that a loaded CI machine still checks the drain in time.
    const HOLD_MS: u64 = 8_000;
    let t0 = Instant::now();
    a.send(&hold("a1", HOLD_MS));
    a.send(&hold("a2", HOLD_MS));
    b.send(&hold("b1", HOLD_MS));
    wait_for("three held requests", || {
        status(&mut ctl)["held"] == json!(3)
    });
    d.sigterm();
    // No new connections: refused while the socket file is still there
    // (removing it is the last step of the shutdown, after the drain).
    wait_for("new connections refused", || {
        match UnixStream::connect(d.socket()) {
            Ok(_) => false,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
                true
            }
        }
    });
    assert!(d.running(), "exited before the held requests finished");
    assert!(
        t0.elapsed() < Duration::from_millis(HOLD_MS),
        "too slow to check during the drain: {:?}",
        t0.elapsed()
    );
    // A request sent now on an open connection is not read.
    a.send(&json!({"id": "late", "op": "stats"}));
    // The in-flight requests are answered, then the connections close.
    let mut answered = Vec::new();
    for conn in [&mut a, &mut b] {
        loop {
            match conn.recv() {
                Ok(r) => {
                    assert_eq!(r["ok"], json!(true), "{r}");
                    assert_eq!(r["result"]["released"], json!(false), "{r}");
                    answered.push(r["id"].as_str().unwrap().to_string());
                }
                Err(e) => {
                    assert!(closed(&e), "{e}");
                    break;
                }
            }
        }
    }
    answered.sort();
    assert_eq!(answered, ["a1", "a2", "b1"], "late is not answered");
    assert!(
        t0.elapsed() >= Duration::from_millis(HOLD_MS),
        "the holds were cut short"
    );
    let st = d.wait_exit();
    assert!(st.success(), "exit {st}: {}", d.stderr_text());
    assert!(!d.socket().exists(), "socket removed at shutdown");
    let log = d.stderr_text();
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains("grace period over"), "{log}");
}
