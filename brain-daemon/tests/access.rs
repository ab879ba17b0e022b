//! Who gets in and what they can reach, against the real `omega-braind`
//! (issue 9, item 5): roles from the peer's credentials (the test process's
//! own uid and gid mapped to `app` or `system`), the per-connection observe
//! rate limit, `catalog.import` paths confined to the import directory, and
//! private file modes (data directory 0700, files 0600, socket 0660).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::Daemon;

/// The test process's uid and gid: those of a file it creates.
fn own_ids(dir: &Path) -> (u32, u32) {
    let probe = dir.join("whoami");
    std::fs::write(&probe, b"").unwrap();
    let m = std::fs::metadata(&probe).unwrap();
    (m.uid(), m.gid())
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn code(r: &Value) -> &str {
    r["error"]["code"].as_str().unwrap_or("")
}

fn observe(i: u64) -> Value {
    json!({"id": i, "op": "observe", "content_id": format!("t{i}"), "fraction": 0.9,
        "at": 1_700_000_000 + i, "hour": 20, "weekday": 2})
}

/// Every op outside the app role, with its required fields.
fn system_ops() -> Vec<Value> {
    vec![
        json!({"id": "f", "op": "forget"}),
        json!({"id": "h", "op": "history"}),
        json!({"id": "s", "op": "sync.now"}),
        json!({"id": "u", "op": "catalog.upsert", "items": []}),
        json!({"id": "i", "op": "catalog.import", "lines": ""}),
        json!({"id": "p", "op": "catalog.import", "path": "/etc/hostname"}),
    ]
}

#[test]
fn a_uid_mapped_to_app_is_forbidden_system_ops_and_rate_limited_on_observe() {
    let tmp = tempfile::tempdir().unwrap();
    let (uid, _) = own_ids(tmp.path());
    let d = Daemon::start(
        tmp.path(),
        &format!("[access]\napp_uids = [{uid}]\nobserve_per_sec = 0.001\nobserve_burst = 3\n"),
    );
    let mut c = d.connect();
    for op in ["stats", "health"] {
        let r = c.call(&json!({"id": op, "op": op}));
        assert_eq!(r["ok"], json!(true), "{op}: {r}");
    }
    let r = c.call(&json!({"id": "r", "op": "recommend", "k": 3}));
    assert_eq!(r["ok"], json!(true), "{r}");
    for req in system_ops() {
        let r = c.call(&req);
        assert_eq!(code(&r), "forbidden", "{req} -> {r}");
        assert_eq!(r["id"], req["id"], "the id is echoed");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("uid {uid}")),
            "{r}"
        );
    }
    // The rate limit: the burst of 3, then rate_limited; other ops and a
    // new connection (its own bucket) go on.
    for i in 0..3 {
        let r = c.call(&observe(i));
        assert_eq!(r["ok"], json!(true), "observe {i}: {r}");
    }
    let r = c.call(&observe(3));
    assert_eq!(code(&r), "rate_limited", "{r}");
    assert_eq!(c.call(&json!({"id": 9, "op": "stats"}))["ok"], json!(true));
    let mut other = d.connect();
    assert_eq!(other.call(&observe(4))["ok"], json!(true));
    // Nothing the app was refused happened: the observes are all there.
    assert_eq!(
        c.call(&json!({"id": 10, "op": "stats"}))["result"]["episodes"],
        json!(4)
    );
}

#[test]
fn a_gid_mapped_to_app_is_forbidden_forget_although_the_uid_is_the_daemons() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, gid) = own_ids(tmp.path());
    let d = Daemon::start(tmp.path(), &format!("[access]\napp_gids = [{gid}]\n"));
    assert_eq!(code(&d.call(json!({"id": 1, "op": "forget"}))), "forbidden");
    assert_eq!(d.call(json!({"id": 2, "op": "stats"}))["ok"], json!(true));
}

#[test]
fn a_uid_mapped_to_system_runs_everything_and_imports_only_inside_the_import_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let (uid, _) = own_ids(tmp.path());
    let import = tmp.path().join("import");
    std::fs::create_dir(&import).unwrap();
    // A data directory an older daemon left 0755.
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        "catalog_import_dir = {:?}\ncatalog_import_max_bytes = 65536\n[access]\nsystem_uids = [{uid}]\n",
        import.display().to_string()
    );
    let mut d = Daemon::start(tmp.path(), &config);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&d.socket()), 0o660);
    assert_eq!(mode(&data.join("brain.redb")), 0o600);

    // Inside: imported, by relative or absolute path.
    let items: String = (0..4)
        .map(|i| format!("{{\"id\":\"t{i}\",\"title\":\"Film {i}\",\"genres\":[\"drama\"]}}\n"))
        .collect();
    std::fs::write(import.join("catalog.jsonl"), &items).unwrap();
    for path in [import.join("catalog.jsonl"), "catalog.jsonl".into()] {
        let r = d.ok(json!({"id": 1, "op": "catalog.import", "path": path}));
        assert_eq!(r["imported"], json!(4), "{r}");
    }
    // Outside, existing or missing, or /dev/zero (once 2 GB of memory):
    // the same prompt answer, which tells nothing about existence.
    let secret = tmp.path().join("secret.jsonl");
    std::fs::write(&secret, &items).unwrap();
    std::os::unix::fs::symlink(&secret, import.join("link.jsonl")).unwrap();
    let mut answers = Vec::new();
    for path in [
        secret.to_str().unwrap(),
        tmp.path().join("missing").to_str().unwrap(),
        "/dev/zero",
        "../secret.jsonl",
        "link.jsonl",
        "/etc/hostname",
        "/etc/no-such-file",
    ] {
        let t = Instant::now();
        let r = d.call(json!({"id": 2, "op": "catalog.import", "path": path}));
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{path} answered at once"
        );
        assert_eq!(code(&r), "forbidden", "{path}: {r}");
        answers.push(r["error"].clone());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    // A FIFO inside: refused as not a regular file, no worker hangs on it.
    let fifo = import.join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let r = d.call(json!({"id": 3, "op": "catalog.import", "path": "fifo"}));
    assert_eq!(code(&r), "invalid_field", "{r}");
    // Over the byte bound.
    std::fs::write(import.join("big.jsonl"), vec![b'\n'; 70_000]).unwrap();
    let r = d.call(json!({"id": 4, "op": "catalog.import", "path": "big.jsonl"}));
    assert_eq!(code(&r), "invalid_field", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("65536"),
        "{r}"
    );

    // The system ops run.
    d.ok(json!({"id": 5, "op": "observe", "content_id": "t1", "fraction": 1.0}));
    assert_eq!(
        d.ok(json!({"id": 6, "op": "history"}))["episodes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        d.ok(json!({"id": 7, "op": "forget"}))["forgotten"],
        json!(true)
    );
    assert_eq!(
        code(&d.call(json!({"id": 8, "op": "sync.now"}))),
        "not_available"
    );

    // Every file the daemon wrote is private; a store left 0644 is narrowed
    // at the next start.
    d.terminate();
    for entry in std::fs::read_dir(&data).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p) & 0o077, 0, "{} is {:o}", p.display(), mode(&p));
    }
    std::fs::set_permissions(
        data.join("brain.redb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let d = Daemon::start(tmp.path(), &config);
    assert_eq!(mode(&data.join("brain.redb")), 0o600);
    assert_eq!(
        d.ok(json!({"id": 9, "op": "stats"}))["catalog_items"],
        json!(4)
    );
}
