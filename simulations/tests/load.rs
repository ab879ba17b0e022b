//! `omega-sim load` end to end: the binary starts a real node in a child
//! process and drives devices over real QUIC with mutual TLS, each with its
//! own certificate; the JSON has BENCHMARKS.md's keys and says what
//! happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const KEYS: [&str; 12] = [
    "devices",
    "duration_s",
    "connections",
    "syncs",
    "syncs_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "errors",
    "upload_bytes_mean",
    "download_bytes_mean",
    "node_rss_mb",
];

/// Runs `omega-sim load ARGS --json --quiet` (ARGS split at spaces).
fn load(cache: &Path, args: &str) -> (Output, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_omega-sim"))
        .arg("load")
        .args(args.split_whitespace())
        .args(["--json", "--quiet"])
        .env("OMEGA_LOAD_CACHE", cache)
        .output()
        .expect("run omega-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

fn expected(extra: &[&str]) -> BTreeSet<String> {
    KEYS.iter().chain(extra).map(|k| k.to_string()).collect()
}

#[test]
fn a_local_run_reports_benchmarks_keys_and_no_errors() {
    let cache = tempfile::tempdir().unwrap();
    let (out, v) = load(
        cache.path(),
        "--local --devices 6 --duration 2 --ramp-up 0.5",
    );
    assert!(out.status.success(), "{v}");
    assert_eq!(keys(&v), expected(&[]), "{v}");
    assert_eq!(v["devices"], 6);
    assert_eq!(v["connections"], "reused");
    assert!(v["syncs"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["errors"], serde_json::json!({}), "{v}");
    assert!(v["p50_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["p99_ms"].as_f64().unwrap() >= v["p50_ms"].as_f64().unwrap());
    assert!(v["upload_bytes_mean"].as_f64().unwrap() > 0.0);
    assert!(v["download_bytes_mean"].as_f64().unwrap() > 0.0);
    assert!(v["node_rss_mb"].as_f64().unwrap() > 1.0, "{v}");

    // The certificates were issued once: a second run with a fixed rate
    // and a handshake per sync reuses them.
    let ledger = std::fs::read(cache.path().join("local-pki/index.json")).unwrap();
    let (out, v) = load(
        cache.path(),
        "--local --devices 6 --duration 2 --fresh --rate 30",
    );
    assert!(out.status.success(), "{v}");
    assert_eq!(v["connections"], "fresh");
    assert_eq!(v["errors"], serde_json::json!({}), "{v}");
    // 30 syncs/s for about 2 s (the first ticks spread over one period).
    let syncs = v["syncs"].as_u64().unwrap();
    assert!((30..=66).contains(&syncs), "{v}");
    assert_eq!(
        std::fs::read(cache.path().join("local-pki/index.json")).unwrap(),
        ledger
    );
}

#[test]
fn faulty_devices_are_reported_apart_and_the_good_ones_succeed() {
    let cache = tempfile::tempdir().unwrap();
    let (out, v) = load(
        cache.path(),
        "--local --devices 10 --duration 2 --faults 0.5",
    );
    assert!(out.status.success(), "{v}");
    assert_eq!(
        keys(&v),
        expected(&["faulty_devices", "good_success_rate", "good_p99_ms"]),
        "{v}"
    );
    assert_eq!(v["faulty_devices"], 5);
    assert_eq!(v["good_success_rate"], 1.0, "{v}");
    assert!(v["good_p99_ms"].as_f64().unwrap() > 0.0);
    let errors = v["errors"].as_object().unwrap();
    // One device of each fault: every one was refused as it should be.
    assert!(errors.contains_key("HandshakeRevoked"), "{v}");
    assert!(
        errors.contains_key("HandshakeBadSignature") || errors.contains_key("HandshakeUnknownCa"),
        "{v}"
    );
    assert!(errors.contains_key("DroppedMidStream"), "{v}");
    assert!(
        errors.contains_key("BadRequest") || errors.contains_key("UnsupportedVersion"),
        "{v}"
    );
    assert!(!errors.contains_key("AcceptedMalformed"), "{v}");
    assert!(!errors.contains_key("Timeout"), "{v}");
}

#[test]
fn hold_keeps_every_device_connected() {
    let cache = tempfile::tempdir().unwrap();
    let (out, v) = load(cache.path(), "--local --devices 40 --duration 0.5 --hold");
    assert!(out.status.success(), "{v}");
    assert_eq!(keys(&v), expected(&["connected_max"]), "{v}");
    assert_eq!(v["connected_max"], 40, "{v}");
    // Each device uploaded its snapshot once.
    assert_eq!(v["syncs"], 40, "{v}");
}

#[test]
fn failures_past_the_threshold_exit_non_zero() {
    let cache = tempfile::tempdir().unwrap();
    let certs = cache.path().join("pki");
    omega_sim::load::pki::local_certs(&certs).unwrap();
    // Nothing listens there: every handshake times out.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let (out, v) = load(
        cache.path(),
        &format!(
            "--node {addr} --certs {} --devices 2 --duration 0.5 --timeout 0.5",
            certs.display()
        ),
    );
    assert!(!out.status.success(), "{v}");
    assert_eq!(v["syncs"], 0);
    assert!(v["errors"]["Timeout"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(v["node_rss_mb"], Value::Null);
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-failure-rate"));
}

#[test]
fn bad_arguments_are_refused_before_anything_runs() {
    let cache = tempfile::tempdir().unwrap();
    for (args, says) in [
        ("--devices 0", "--devices must be at least 1"),
        ("--devices 2 --duration=-1", "--duration"),
        ("--devices 2 --timeout 0", "--timeout must be more than 0"),
        ("--devices 2 --faults 2", "--faults is a share"),
        (
            "--devices 2 --max-failure-rate 7",
            "--max-failure-rate is a share",
        ),
        ("--devices 2 --rate 0", "--rate must be a positive"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_omega-sim"))
            .args(["load", "--local", "--quiet"])
            .args(args.split_whitespace())
            .env("OMEGA_LOAD_CACHE", cache.path())
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run omega-sim");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args}: {stderr}");
        assert!(stderr.contains(says), "{args}: {stderr}");
        assert!(out.stdout.is_empty(), "{args}: ran anyway");
    }
    assert!(
        !cache.path().join("local-pki").exists(),
        "no certificates were made"
    );
}
