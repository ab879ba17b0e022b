//! The hardened admin API and the node's secret files (issue 9, items 4 and
//! 6), against an in-process node on loopback and the real `omega-node`
//! binary: the `Host` allow-list and the token are checked before any body
//! byte is read; every endpoint but `/health` and `/ready` needs a token; a
//! metrics-only token; small bodies everywhere but the import, whose bound
//! is its own; short tokens, exposed token files and private keys are
//! refused at startup; the store file is created 0600.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use omega_node::secrets::SecretError;
use omega_node::{RunningNode, ServeError, ServeOptions};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `head` (the request line and headers, without the blank line) and
/// `body`, then reads the answer to the end: (status, body).
async fn raw_http(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The node may answer and close before reading a refused body.
    let _ = s.write_all(body).await;
    // Read to the end; a reset after the answer (the node closed with our
    // refused body unread) ends the read too.
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut chunk).await {
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("an answer before the deadline");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn write_private(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_but_health_and_ready_needs_a_token_checked_before_the_body() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let metrics_token = "metrics-only-token-0123456789abcdef";
    let metrics_file = pki.dir.path().join("metrics-token");
    write_private(&metrics_file, &format!("{metrics_token}\n"), 0o600);
    let mut config = test_config();
    config.metrics_token_file = Some(metrics_file);
    config.admin_import_limit = 4096;
    config.admin_allowed_hosts = vec!["Admin.Example.NET".into()];
    let node = start(&pki, data.path(), config, None).await;
    let admin = node.admin_addr();

    // Reads that were open before: now 401 without a token, 200 with it.
    for path in [
        "/api/v1/stats",
        "/api/v1/cluster",
        "/api/v1/patterns/global?region=eu",
        "/metrics",
    ] {
        assert_eq!(http(admin, "GET", path, None, b"").await.0, 401, "{path}");
        let (status, body) = http(admin, "GET", path, Some(TOKEN), b"").await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(http(admin, "GET", "/health", None, b"").await.0, 200);
    assert_eq!(http(admin, "GET", "/ready", None, b"").await.0, 200);
    // Wrong tokens: one byte off, a prefix, longer.
    let mut off = TOKEN.to_string();
    off.replace_range(0..1, "X");
    for wrong in [
        off.as_str(),
        &TOKEN[..TOKEN.len() - 1],
        &format!("{TOKEN}x"),
    ] {
        let (status, body) = http(admin, "GET", "/api/v1/stats", Some(wrong), b"").await;
        assert_eq!(status, 401, "{wrong}: {body}");
        assert!(body.contains("unauthorized"), "{body}");
    }
    // The metrics token opens /metrics and nothing else.
    assert_eq!(
        http(admin, "GET", "/metrics", Some(metrics_token), b"")
            .await
            .0,
        200
    );
    for (method, path) in [
        ("GET", "/api/v1/stats"),
        ("POST", "/api/v1/federation/trigger"),
    ] {
        let (status, _) = http(admin, method, path, Some(metrics_token), b"").await;
        assert_eq!(status, 401, "{method} {path}");
    }

    // Host allow-list: loopback names with or without port, the configured
    // name in any case; anything else 421 even with the token.
    let port = admin.port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "admin.example.net".into(),
    ] {
        let (status, body) = raw_http(
            admin,
            &format!("GET /api/v1/stats HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}"),
            b"",
        )
        .await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    for head in [
        format!("GET /api/v1/stats HTTP/1.1\r\nHost: rebind.attacker.example:{port}\r\nAuthorization: Bearer {TOKEN}"),
        format!("GET /metrics HTTP/1.1\r\nHost: 10.0.0.9\r\nAuthorization: Bearer {TOKEN}"),
    ] {
        let (status, body) = raw_http(admin, &head, b"").await;
        assert_eq!(status, 421, "{head}: {body}");
        assert!(body.contains("host_not_allowed"), "{body}");
    }
    let (status, _) = raw_http(admin, "GET /health HTTP/1.1\r\nHost: anything", b"").await;
    assert_eq!(status, 200, "health answers any Host");

    // Token before body: a 60 MB body announced and never sent is refused
    // at once (had the node waited for the body, no answer would come).
    for path in [
        "/api/v1/content/import",
        "/api/v1/content",
        "/api/v1/federation/trigger",
    ] {
        let (status, _) = raw_http(
            admin,
            &format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 60000000"),
            b"",
        )
        .await;
        assert_eq!(status, 401, "{path}");
    }
    // With the token: small bodies outside the import (64 KiB by default).
    let big = vec![b' '; 65 * 1024];
    let (status, _) = raw_http(
        admin,
        &format!(
            "POST /api/v1/content HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}",
            big.len()
        ),
        &big,
    )
    .await;
    assert_eq!(status, 413);
    // The import's own bound: a declared length over it is refused before
    // reading, and so is a chunked body once it grows past it.
    let (status, body) = raw_http(
        admin,
        &format!(
            "POST /api/v1/content/import HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 60000000"
        ),
        b"",
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body_too_large"), "{body}");
    let chunk = vec![b'x'; 1000];
    let mut chunked = Vec::new();
    for _ in 0..5 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_http(
        admin,
        &format!(
            "POST /api/v1/content/import HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked"
        ),
        &chunked,
    )
    .await;
    assert_eq!(status, 413, "{body}");
    // Under the bound the body reaches the importer (no model here: 503).
    let (status, body) = http(
        admin,
        "POST",
        "/api/v1/content/import",
        Some(TOKEN),
        br#"{"id":"a","title":"A"}"#,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(node.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_admin_api_is_closed_but_health_and_ready() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let node = RunningNode::start(ServeOptions {
        data_dir: data.path().to_owned(),
        model_dir: None,
        certs_dir: pki.certs_dir(),
        config: test_config(),
        admin_token: None,
    })
    .await
    .unwrap();
    let admin = node.admin_addr();
    for path in ["/api/v1/stats", "/metrics", "/api/v1/cluster"] {
        let (status, body) = http(admin, "GET", path, Some(TOKEN), b"").await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("admin_disabled"), "{body}");
    }
    assert_eq!(http(admin, "GET", "/ready", None, b"").await.0, 200);
    assert!(node.shutdown().await);
}

async fn start_error(
    pki: &Pki,
    data: &Path,
    token: Option<&str>,
    config: omega_node::Config,
) -> ServeError {
    RunningNode::start(ServeOptions {
        data_dir: data.to_owned(),
        model_dir: None,
        certs_dir: pki.certs_dir(),
        config,
        admin_token: token.map(String::from),
    })
    .await
    .expect_err("the node must refuse to start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_tokens_exposed_secrets_are_refused_and_the_store_is_private() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    // A short token, in-process or from a file.
    let e = start_error(&pki, data.path(), Some("short-token"), test_config()).await;
    assert!(
        matches!(e, ServeError::Secret(SecretError::TooShort { len: 11, .. })),
        "{e}"
    );
    let token_file = pki.dir.path().join("admin-token");
    write_private(&token_file, "0123456789abcdef0123456789abcde\n", 0o600);
    let mut config = test_config();
    config.admin_token_file = Some(token_file.clone());
    let e = start_error(&pki, data.path(), None, config.clone()).await;
    assert!(
        matches!(e, ServeError::Secret(SecretError::TooShort { len: 31, .. })),
        "{e}"
    );
    // A long token in a file readable by others.
    write_private(&token_file, &format!("{TOKEN}\n"), 0o644);
    let e = start_error(&pki, data.path(), None, config.clone()).await;
    assert!(
        matches!(
            e,
            ServeError::Secret(SecretError::Exposed { mode: 0o644, .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("chmod 600"), "{e}");
    // The node's private key readable by its group.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = pki.certs_dir().join("nodes/node-1.key");
    assert_eq!(mode(&key), 0o600, "omega-certs writes keys 0600");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = start_error(&pki, data.path(), None, config.clone()).await;
    assert!(
        matches!(&e, ServeError::Secret(SecretError::Exposed { path, mode: 0o640, .. }) if path == &key),
        "{e}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Started: the token from the file works; a new data directory is 0700
    // and the store 0600.
    let dir = data.path().join("new/data");
    let node = RunningNode::start(ServeOptions {
        data_dir: dir.clone(),
        model_dir: None,
        certs_dir: pki.certs_dir(),
        config: config.clone(),
        admin_token: None,
    })
    .await
    .unwrap();
    assert_eq!(mode(&dir), 0o700);
    let store = dir.join(omega_node::server::STORE_FILE);
    assert_eq!(mode(&store), 0o600);
    assert_eq!(
        http(node.admin_addr(), "GET", "/api/v1/stats", Some(TOKEN), b"")
            .await
            .0,
        200
    );
    assert!(node.shutdown().await);
    // A store an older node left 0644 is narrowed at the next start.
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
    let node = RunningNode::start(ServeOptions {
        data_dir: dir.clone(),
        model_dir: None,
        certs_dir: pki.certs_dir(),
        config,
        admin_token: None,
    })
    .await
    .unwrap();
    assert_eq!(mode(&store), 0o600);
    assert!(node.shutdown().await);
}

/// The binary: a token file readable by others stops it with a clear error,
/// and the token no longer comes from an environment variable (the option
/// is gone from `--help`).
#[test]
fn the_binary_refuses_an_exposed_token_file_and_reads_no_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_private(&token, &format!("{TOKEN}\n"), 0o644);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omega-node"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--model-dir")
        .arg(dir.path().join("no-model"))
        .arg("--certs")
        .arg(dir.path().join("no-certs"))
        .arg("--admin-token-file")
        .arg(&token)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mode 0644") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_omega-node"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("OMEGA_ADMIN_TOKEN_FILE"), "{help}");
    assert!(!help.contains("OMEGA_ADMIN_TOKEN]"), "{help}");
    assert!(!help.contains("OMEGA_ADMIN_TOKEN "), "{help}");
    // The log format (omega-supervise's `log`, tested with the daemon) is
    // text or json, nothing else.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omega-node"))
        .args([
            "serve",
            "--data-dir",
            "d",
            "--model-dir",
            "m",
            "--certs",
            "c",
        ])
        .args(["--log-format", "yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expected text or json"), "{stderr}");
}

/// A node that has done nothing yet exports every metric family on its
/// first scrape (rates, dashboards and alerts are not blank on an idle
/// node), the configured regions' global versions included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_scrape_exports_every_metric_family() {
    use omega_constellation::actors::names;
    use omega_node::telemetry as t;
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let config = test_config();
    let regions = config.regions.clone();
    let node = start(&pki, data.path(), config, None).await;
    let (status, body) = http(node.admin_addr(), "GET", "/metrics", Some(TOKEN), b"").await;
    assert_eq!(status, 200, "{body}");
    for family in [
        t::SYNCS,
        t::SYNC_DURATION,
        t::SYNC_ERRORS,
        t::CONNECTIONS,
        t::CONNECTIONS_MAX,
        t::CRL_NEXT_UPDATE,
        t::CONNECTIONS_REFUSED,
        t::HANDSHAKES_PENDING,
        t::HANDSHAKE_RETRIES,
        t::IN_FLIGHT,
        names::FEDERATION_DURATION,
        names::FEDERATION_RUNS,
        names::FEDERATION_LAST_SUCCESS,
        names::STORE_DURATION,
        names::DEVICES,
        names::PATTERNS,
        names::GLOBAL_VERSION,
        names::CLUSTER_ATTEMPTS_FAILED,
        names::CATALOG_ITEMS,
        names::CATALOG_EMBEDDED,
        names::ACTOR_RESTARTS,
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} missing from the first scrape:\n{body}"
        );
    }
    // Series, not only families (values: other tests of this binary may
    // share the process's recorder).
    assert!(
        body.contains("omega_syncs_total{outcome=\"applied\"} "),
        "{body}"
    );
    assert!(!regions.is_empty());
    for region in &regions {
        assert!(
            body.contains(&format!("omega_global_version{{region=\"{region}\"}}")),
            "{region}: {body}"
        );
    }
    // The CRL loaded at start: its nextUpdate is in the future.
    let crl_line = body
        .lines()
        .find(|l| l.starts_with(t::CRL_NEXT_UPDATE))
        .expect("crl gauge");
    let next: f64 = crl_line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(next > now && next < now + 400.0 * 86_400.0, "{crl_line}");
    // Every metric the operator files use (alert rules, dashboards) is one
    // this scrape exports, and every label value they select on is one of
    // its series'.
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let alerts = std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).unwrap();
    let mut queries = vec![alerts];
    let mut dashboards = 0;
    for entry in std::fs::read_dir(deploy.join("grafana")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let before = queries.len();
            dashboard_queries(&json, &mut queries);
            assert!(
                queries.len() - before >= 10,
                "{}: only {} queries found",
                path.display(),
                queries.len() - before
            );
            dashboards += 1;
        }
    }
    assert!(dashboards >= 1, "no dashboard in deploy/grafana");
    let used = metric_names(&queries.join("\n"));
    assert!(used.len() >= 15, "{used:?}");
    for name in &used {
        assert!(
            exported_family(&body, name).is_some(),
            "{name} is used in deploy/ but not exported"
        );
    }
    let mut selected = 0;
    for query in &queries {
        for (name, label, value) in label_matches(query) {
            selected += 1;
            let family = exported_family(&body, &name).unwrap_or(&name);
            let series = format!("{label}=\"{value}\"");
            assert!(
                body.lines().any(|l| {
                    let metric = l.split(['{', ' ']).next().unwrap_or_default();
                    exported_family(&body, metric) == Some(family) && l.contains(&series)
                }),
                "{name}{{{series}}} is selected in deploy/ but no such series is exported"
            );
        }
    }
    assert!(selected >= 4, "only {selected} label matchers found");
    assert!(node.shutdown().await);
}

/// The family a used metric name belongs to, if the scrape exports it: the
/// name itself, or a histogram's whose `_bucket`, `_sum` or `_count` it is.
fn exported_family<'a>(scrape: &str, name: &'a str) -> Option<&'a str> {
    if scrape.contains(&format!("# TYPE {name} ")) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|s| name.strip_suffix(s))
        .find(|family| scrape.contains(&format!("# TYPE {family} histogram")))
}

/// The query texts of a Grafana dashboard: every panel target's `expr` and
/// every template variable's `query` or `definition`.
fn dashboard_queries(json: &serde_json::Value, out: &mut Vec<String>) {
    match json {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", serde_json::Value::String(q)) => {
                        out.push(q.clone())
                    }
                    _ => dashboard_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_queries(item, out);
            }
        }
        _ => {}
    }
}

/// The equality matchers of the `omega_…` selectors in a PromQL text:
/// (metric, label, value) for each `label="value"` inside `omega_x{…}`
/// (`!=`, `=~` and `!~` select no one value and are skipped; a `$variable`
/// value is Grafana's, filled in at query time, and skipped too).
fn label_matches(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for name in metric_names(text) {
        let mut rest = text;
        while let Some(i) = rest.find(&format!("{name}{{")) {
            let after = &rest[i + name.len() + 1..];
            let Some(close) = after.find('}') else { break };
            for matcher in after[..close].split(',') {
                let Some((label, value)) = matcher.split_once('=') else {
                    continue;
                };
                let label = label.trim();
                if label.ends_with('!') || value.starts_with('~') || value.contains('$') {
                    continue;
                }
                // Quotes may be escaped (an alert's annotation).
                let value = value.trim().trim_matches(['"', '\\']);
                out.push((name.clone(), label.to_owned(), value.to_owned()));
            }
            rest = &after[close..];
        }
    }
    out
}

/// The `omega_…` names in a text, each once.
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("omega_")
        .filter(|(i, _)| {
            // Not inside a longer word (job="omega-node" has a dash).
            text[..*i]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
        })
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}
