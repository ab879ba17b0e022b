//! Runs the built `omega-certs` binary end to end: init → issue-device →
//! issue-node → revoke → inspect, renewal and a node's export, and the
//! one-line errors and exit codes on bad input.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn omega_certs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omega-certs"))
        .args(args)
        .env_remove("OMEGA_CERTS_DIR")
        .output()
        .expect("run omega-certs")
}

fn ok(args: &[&str]) -> String {
    let out = omega_certs(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs a command that must fail; returns its stderr, checked to be one line.
fn fails(args: &[&str]) -> String {
    let out = omega_certs(args);
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail with 1");
    let err = String::from_utf8(out.stderr).expect("utf-8 stderr");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("omega-certs: error: "), "{err}");
    err
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn init_issue_revoke_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let d = dir.to_str().unwrap();

    ok(&["init", "--dir", d]);
    assert_eq!(mode(&dir.join("device-ca.key")), 0o600);
    assert!(dir.join("device-ca.crl").is_file());

    let out = ok(&["issue-device", "--dir", d, "--id", "tv-42", "--days", "30"]);
    assert!(out.contains("tv-42"), "{out}");
    let serial = out
        .split_whitespace()
        .skip_while(|w| *w != "serial")
        .nth(1)
        .expect("serial printed")
        .to_owned();
    assert_eq!(mode(&dir.join("devices/tv-42.key")), 0o600);

    ok(&[
        "issue-node",
        "--dir",
        d,
        "--name",
        "node-1",
        "--san",
        "node-1.omega.test",
        "--san",
        "127.0.0.1",
    ]);
    assert!(dir.join("nodes/node-1.crt").is_file());

    let out = ok(&["inspect", dir.join("devices/tv-42.crt").to_str().unwrap()]);
    assert!(out.contains("CN=tv-42"), "{out}");
    assert!(out.contains("CN=Omega Device CA"), "{out}");
    assert!(out.contains(&serial), "{out}");
    assert!(out.contains("clientAuth"), "{out}");

    let out = ok(&["inspect", dir.join("nodes/node-1.crt").to_str().unwrap()]);
    assert!(out.contains("DNS:node-1.omega.test"), "{out}");
    assert!(out.contains("IP:127.0.0.1"), "{out}");
    assert!(out.contains("serverAuth"), "{out}");

    let out = ok(&["revoke", "--dir", d, "tv-42"]);
    assert!(out.contains(&serial), "{out}");

    let out = ok(&["inspect", dir.join("device-ca.crl").to_str().unwrap()]);
    assert!(out.contains("revoked:      1"), "{out}");
    assert!(out.contains(&serial), "{out}");
    let out = ok(&["inspect", dir.join("node-ca.crl").to_str().unwrap()]);
    assert!(out.contains("revoked:      0"), "{out}");
}

#[test]
fn dir_comes_from_the_environment_and_bulk_issue_works() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_omega-certs"))
            .args(args)
            .env("OMEGA_CERTS_DIR", tmp.path())
            .output()
            .expect("run omega-certs")
    };
    assert!(run(&["init"]).status.success());
    let out = run(&["issue-devices", "--count", "12", "--prefix", "tv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tv-01 .. tv-12"));
    assert!(tmp.path().join("devices/tv-12.key").is_file());
    assert!(tmp.path().join("devices/tv-01.crt").is_file());
}

#[test]
fn bad_input_fails_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let err = fails(&["issue-device", "--dir", d, "--id", "tv-1"]);
    assert!(err.contains("init"), "{err}");

    ok(&["init", "--dir", d]);
    let err = fails(&["init", "--dir", d]);
    assert!(err.contains("already exists"), "{err}");

    let err = fails(&["issue-device", "--dir", d, "--id", ""]);
    assert!(err.contains("empty id"), "{err}");
    let err = fails(&["issue-device", "--dir", d, "--id", "../../etc/x"]);
    assert!(err.contains("invalid id"), "{err}");
    ok(&["issue-device", "--dir", d, "--id", "tv-1"]);
    let err = fails(&["issue-device", "--dir", d, "--id", "tv-1"]);
    assert!(err.contains("duplicate id"), "{err}");
    let err = fails(&["revoke", "--dir", d, "tv-404"]);
    assert!(err.contains("unknown serial or id"), "{err}");
    let err = fails(&[
        "issue-node",
        "--dir",
        d,
        "--name",
        "n1",
        "--san",
        "not a host",
    ]);
    assert!(err.contains("invalid SAN"), "{err}");

    let key = tmp.path().join("device-ca.key");
    fs::write(&key, "garbage").unwrap();
    let err = fails(&["issue-device", "--dir", d, "--id", "tv-2"]);
    assert!(err.contains("private key"), "{err}");

    let file = tmp.path().join("plain-file");
    fs::write(&file, "").unwrap();
    let under_file = file.join("store");
    let err = fails(&["init", "--dir", under_file.to_str().unwrap()]);
    assert!(
        err.contains("cannot write") && err.contains("plain-file"),
        "{err}"
    );

    let err = fails(&["inspect", key.to_str().unwrap()]);
    assert!(err.contains("malformed PEM"), "{err}");
    let err = fails(&["inspect", tmp.path().join("missing.crt").to_str().unwrap()]);
    assert!(err.contains("missing.crt"), "{err}");

    // Usage errors come from clap (exit 2).
    let out = omega_certs(&["issue-device", "--dir", d]);
    assert_eq!(out.status.code(), Some(2));
    let out = omega_certs(&["issue-devices", "--dir", d, "--count", "0", "--prefix", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let out = omega_certs(&["issue-node", "--dir", d, "--name", "n1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "init",
        "issue-device",
        "issue-node",
        "issue-devices",
        "revoke",
        "refresh-crl",
        "renew-device",
        "renew-node",
        "export-node",
        "inspect",
    ] {
        let out = ok(&[sub, "--help"]);
        assert!(out.contains("Usage: omega-certs"), "{sub}: {out}");
        assert!(out.lines().count() > 4, "{sub}: {out}");
    }
}

#[test]
fn renew_and_export_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let d = dir.to_str().unwrap();
    ok(&["init", "--dir", d]);
    ok(&["issue-device", "--dir", d, "--id", "tv-1"]);
    ok(&[
        "issue-node",
        "--dir",
        d,
        "--name",
        "node-1",
        "--san",
        "localhost",
    ]);
    let before = fs::read(dir.join("devices/tv-1.crt")).unwrap();
    let out = ok(&["renew-device", "--dir", d, "--id", "tv-1", "--days", "30"]);
    assert!(out.contains("renewed device certificate tv-1"), "{out}");
    assert_ne!(fs::read(dir.join("devices/tv-1.crt")).unwrap(), before);
    let out = ok(&["renew-node", "--dir", d, "--name", "node-1"]);
    assert!(out.contains("renewed node certificate node-1"), "{out}");
    let err = fails(&["renew-device", "--dir", d, "--id", "tv-none"]);
    assert!(err.contains("tv-none"), "{err}");

    let out_dir = tmp.path().join("node-1");
    let o = out_dir.to_str().unwrap();
    let out = ok(&["export-node", "--dir", d, "--name", "node-1", "--out", o]);
    assert!(out.contains("no CA keys"), "{out}");
    assert!(out_dir.join("device-ca.crl").is_file());
    assert_eq!(mode(&out_dir.join("nodes/node-1.key")), 0o600);
    assert!(!out_dir.join("device-ca.key").exists());
    assert!(!out_dir.join("node-ca.key").exists());
    let err = fails(&["export-node", "--dir", d, "--name", "node-1", "--out", d]);
    assert!(err.contains("certificate store itself"), "{err}");
}
