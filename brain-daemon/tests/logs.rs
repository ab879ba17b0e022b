//! The daemon's log on stderr when stderr is a file (as under systemd or a
//! redirect): plain text without colour codes, or with `--log-format json`
//! (here through `OMEGA_LOG_FORMAT`) one JSON object per line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::Daemon;

#[test]
fn a_log_file_gets_text_without_colour_codes_or_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let text_dir = tmp.path().join("text");
    std::fs::create_dir_all(&text_dir).unwrap();
    let mut d = Daemon::start(&text_dir, "");
    // `health` names the SIMD paths the daemon runs with; the ready line
    // in the log says the same.
    let h = d.ok(serde_json::json!({"id": 1, "op": "health"}));
    assert_eq!(h["cpu"]["arch"], std::env::consts::ARCH, "{h}");
    assert!(
        h["cpu"]["embed_kernels"]
            .as_str()
            .is_some_and(|k| !k.is_empty()),
        "{h}"
    );
    assert!(
        h["index_isa"].as_str().is_some_and(|k| !k.is_empty()),
        "{h}"
    );
    d.terminate();
    let text = d.stderr_text();
    assert!(text.lines().count() > 0, "the daemon logged nothing");
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text}");
    assert!(text.contains("embed kernels"), "{text}");

    let json_dir = tmp.path().join("json");
    std::fs::create_dir_all(&json_dir).unwrap();
    let mut d = Daemon::start_with_env(&json_dir, "", &[("OMEGA_LOG_FORMAT", "json")]);
    d.terminate();
    let log = d.stderr_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the daemon logged nothing");
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}
