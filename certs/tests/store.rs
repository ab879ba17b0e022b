//! Tests of the on-disk store with real files in temporary directories: layout,
//! permissions, refusal to overwrite, typed errors, revocation and bulk issuance.

mod common;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{pem_der, verify_client};
use omega_certs::{
    device_id_from_cert, CaKind, CertDir, CertError, CertPaths, CertificateAuthority, SerialHex,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn new_store() -> (tempfile::TempDir, CertDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = CertDir::init(tmp.path().join("certs")).expect("init");
    (tmp, store)
}

fn crl_serials(path: &Path) -> Vec<SerialHex> {
    let der = pem_der(&fs::read_to_string(path).expect("read CRL"), "X509 CRL");
    let (_, crl) = CertificateRevocationList::from_der(&der).expect("parse CRL");
    crl.iter_revoked_certificates()
        .map(|r| SerialHex::from_bytes(r.raw_serial()))
        .collect()
}

#[test]
fn init_writes_the_layout_with_private_keys_0600() {
    let (_tmp, store) = new_store();
    let paths = store.paths();
    for kind in CaKind::ALL {
        assert_eq!(mode(&paths.ca_key_path(kind)), 0o600);
        assert_eq!(mode(&paths.ca_cert_path(kind)), 0o644);
        assert_eq!(mode(&paths.crl_path(kind)), 0o644);
        assert!(crl_serials(&paths.crl_path(kind)).is_empty());
    }
    assert!(paths.devices_dir().is_dir());
    assert!(paths.nodes_dir().is_dir());
    assert!(paths.index_path().is_file());
    assert!(store.entries().is_empty());
    assert_eq!(
        paths.ca_cert_path(CaKind::Device),
        paths.dir().join("device-ca.crt")
    );
    assert_eq!(
        paths.crl_path(CaKind::Node),
        paths.dir().join("node-ca.crl")
    );
    assert_eq!(
        paths.device_key_path("tv-1"),
        paths.dir().join("devices/tv-1.key")
    );
    assert_eq!(paths.node_cert_path("n1"), paths.dir().join("nodes/n1.crt"));
    // No temporary files left behind.
    let leftovers: Vec<_> = fs::read_dir(paths.dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn init_refuses_to_overwrite() {
    let (_tmp, store) = new_store();
    let dir = store.dir().to_owned();
    let before = fs::read(store.ca_key_path(CaKind::Device)).unwrap();
    let err = CertDir::init(&dir).unwrap_err();
    assert!(matches!(err, CertError::AlreadyInitialized { .. }), "{err}");
    assert_eq!(fs::read(store.ca_key_path(CaKind::Device)).unwrap(), before);

    // Even a single leftover CA file is enough to refuse.
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("node-ca.key"), "keep me").unwrap();
    let err = CertDir::init(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, CertError::AlreadyInitialized { path } if path.ends_with("node-ca.key")),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(tmp.path().join("node-ca.key")).unwrap(),
        "keep me"
    );
}

#[test]
fn init_reports_an_unwritable_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    fs::write(&file, "").unwrap();
    // A directory under a regular file cannot be created, not even by root.
    let err = CertDir::init(file.join("certs")).unwrap_err();
    match &err {
        CertError::NotWritable { path, source } => {
            assert!(path.starts_with(&file), "{}", path.display());
            assert!(!source.to_string().is_empty());
        }
        other => panic!("expected NotWritable, got {other}"),
    }
    assert!(err.to_string().contains("a-file"));
}

#[test]
fn issue_device_writes_cert_and_0600_key_that_chain_to_the_device_ca() {
    let (_tmp, mut store) = new_store();
    let cert = store.issue_device("tv-0001").unwrap();
    let cert_path = store.device_cert_path("tv-0001");
    let key_path = store.device_key_path("tv-0001");
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(mode(&cert_path), 0o644);
    assert_eq!(fs::read_to_string(&cert_path).unwrap(), cert.cert_pem);
    assert_eq!(fs::read_to_string(&key_path).unwrap(), cert.key_pem);

    let der = pem_der(&cert.cert_pem, "CERTIFICATE");
    assert_eq!(device_id_from_cert(&der).unwrap().as_str(), "tv-0001");
    let ca_der = store.ca(CaKind::Device).cert_der();
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let (_, leaf) = X509Certificate::from_der(&der).unwrap();
    leaf.verify_signature(Some(ca.public_key())).unwrap();
    verify_client(
        store.ca(CaKind::Device).cert_der(),
        Some(&fs::read_to_string(store.crl_path(CaKind::Device)).unwrap()),
        &cert.cert_der(),
    )
    .unwrap();
    // The node CA does not vouch for devices.
    assert!(verify_client(store.ca(CaKind::Node).cert_der(), None, &cert.cert_der()).is_err());

    // Recorded in the ledger, and visible after reopening.
    let reopened = CertDir::open(store.dir()).unwrap();
    let entry = reopened.find("tv-0001").unwrap();
    assert_eq!(entry.kind, CaKind::Device);
    assert_eq!(entry.serial, cert.serial);
    assert_eq!(entry.not_after, cert.not_after);
    assert!(!entry.revoked);
    assert_eq!(
        reopened.find(cert.serial.as_str()).unwrap().subject,
        "tv-0001"
    );
}

#[test]
fn bad_ids_are_rejected_before_touching_the_disk() {
    let (_tmp, mut store) = new_store();
    assert!(matches!(store.issue_device(""), Err(CertError::EmptyId)));
    for id in ["a/b", "..", "../escape", "./x", ".hidden", "-rf", "x\0y"] {
        let err = store.issue_device(id).unwrap_err();
        assert!(matches!(err, CertError::InvalidId { .. }), "{id:?}: {err}");
    }
    assert!(!store.dir().join("escape.crt").exists());
    assert!(store.entries().is_empty());
    assert_eq!(
        fs::read_dir(store.paths().devices_dir()).unwrap().count(),
        0
    );
}

#[test]
fn duplicate_ids_are_rejected_across_devices_and_nodes() {
    let (_tmp, mut store) = new_store();
    let first = store.issue_device("tv-1").unwrap();
    let err = store.issue_device("tv-1").unwrap_err();
    assert!(
        matches!(&err, CertError::DuplicateId { id } if id == "tv-1"),
        "{err}"
    );
    // The original files are untouched.
    assert_eq!(
        fs::read_to_string(store.device_cert_path("tv-1")).unwrap(),
        first.cert_pem
    );
    // A node may not take a device's id either (revoke-by-id must be unambiguous).
    let err = store
        .issue_node("tv-1", &["localhost".to_owned()])
        .unwrap_err();
    assert!(matches!(err, CertError::DuplicateId { .. }), "{err}");

    // Another process (a second handle) sees the same ledger.
    let mut other = CertDir::open(store.dir()).unwrap();
    assert!(matches!(
        other.issue_device("tv-1"),
        Err(CertError::DuplicateId { .. })
    ));
    assert_eq!(store.entries().len(), 1);
}

#[test]
fn stray_files_are_never_overwritten() {
    let (_tmp, mut store) = new_store();
    let stray = store.device_key_path("tv-9");
    fs::write(&stray, "precious").unwrap();
    let err = store.issue_device("tv-9").unwrap_err();
    assert!(
        matches!(&err, CertError::FileExists { path } if *path == stray),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&stray).unwrap(), "precious");
    assert!(store.entries().is_empty());
}

#[test]
fn issue_reports_an_unwritable_output_directory() {
    let (_tmp, mut store) = new_store();
    let devices = store.paths().devices_dir();
    fs::remove_dir(&devices).unwrap();
    fs::write(&devices, "not a directory").unwrap();
    let err = store.issue_device("tv-1").unwrap_err();
    assert!(
        matches!(&err, CertError::NotWritable { path, .. } if path.starts_with(&devices)),
        "{err}"
    );
    assert!(store.entries().is_empty());
    let err = store.issue_devices(3, "tv", |_| {}).unwrap_err();
    assert!(matches!(err, CertError::NotWritable { .. }), "{err}");
}

#[test]
fn issue_node_writes_sans_and_uses_the_node_ca() {
    let (_tmp, mut store) = new_store();
    let sans = vec!["node-a.omega.test".to_owned(), "192.0.2.7".to_owned()];
    let cert = store.issue_node("node-a", &sans).unwrap();
    assert_eq!(mode(&store.node_key_path("node-a")), 0o600);
    let ca = store.ca(CaKind::Node).cert_der();
    common::verify_server(ca.clone(), &cert.cert_der(), "node-a.omega.test").unwrap();
    common::verify_server(ca, &cert.cert_der(), "192.0.2.7").unwrap();
    assert_eq!(store.find("node-a").unwrap().kind, CaKind::Node);
    assert!(matches!(
        store.issue_node("node-b", &[]),
        Err(CertError::NoSans)
    ));
}

#[test]
fn revoke_marks_the_ledger_and_rewrites_the_crl() {
    let (_tmp, mut store) = new_store();
    let bad = store.issue_device("tv-bad").unwrap();
    let good = store.issue_device("tv-good").unwrap();
    let node = store
        .issue_node("node-1", &["localhost".to_owned()])
        .unwrap();

    let r = store.revoke("tv-bad").unwrap();
    assert!(!r.already_revoked);
    assert_eq!(r.entry.serial, bad.serial);
    let crl_path = store.crl_path(CaKind::Device);
    assert_eq!(crl_serials(&crl_path), vec![bad.serial.clone()]);
    assert!(crl_serials(&store.crl_path(CaKind::Node)).is_empty());
    assert_eq!(mode(&crl_path), 0o644);

    // The CRL is signed by the device CA and webpki enforces it.
    let crl_pem = fs::read_to_string(&crl_path).unwrap();
    let ca = store.ca(CaKind::Device).cert_der();
    assert!(matches!(
        verify_client(ca.clone(), Some(&crl_pem), &bad.cert_der()),
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Revoked
        ))
    ));
    verify_client(ca, Some(&crl_pem), &good.cert_der()).unwrap();

    // By serial, upper case with colons, goes to the node CA's CRL.
    let colons: String = node
        .serial
        .as_str()
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let r = store.revoke(&colons).unwrap();
    assert_eq!(r.entry.subject, "node-1");
    assert_eq!(
        crl_serials(&store.crl_path(CaKind::Node)),
        vec![node.serial.clone()]
    );

    // Again: fine, nothing changes but the CRL date.
    let r = store.revoke("tv-bad").unwrap();
    assert!(r.already_revoked);
    assert_eq!(crl_serials(&crl_path), vec![bad.serial.clone()]);

    let reopened = CertDir::open(store.dir()).unwrap();
    let entry = reopened.find("tv-bad").unwrap();
    assert!(entry.revoked && entry.revoked_at.is_some());
    assert!(!reopened.find("tv-good").unwrap().revoked);

    // Revoked ids stay taken.
    assert!(matches!(
        store.issue_device("tv-bad"),
        Err(CertError::DuplicateId { .. })
    ));
}

#[test]
fn revoke_of_unknown_target_fails() {
    let (_tmp, mut store) = new_store();
    store.issue_device("tv-1").unwrap();
    for target in ["tv-2", "deadbeef", ""] {
        let err = store.revoke(target).unwrap_err();
        assert!(
            matches!(&err, CertError::UnknownRevocationTarget { target: t } if t == target),
            "{err}"
        );
    }
    assert!(crl_serials(&store.crl_path(CaKind::Device)).is_empty());
}

#[test]
fn open_reports_missing_unreadable_and_mismatched_ca_files() {
    let (_tmp, store) = new_store();
    let dir = store.dir().to_owned();
    let key = store.ca_key_path(CaKind::Device);
    let saved = fs::read(&key).unwrap();

    // Unreadable: the key path is a directory (root can read any file, not this).
    fs::remove_file(&key).unwrap();
    fs::create_dir(&key).unwrap();
    let err = CertDir::open(&dir).unwrap_err();
    assert!(
        matches!(&err, CertError::CaUnreadable { path, .. } if *path == key),
        "{err}"
    );
    fs::remove_dir(&key).unwrap();

    // Missing.
    let err = CertDir::open(&dir).unwrap_err();
    assert!(
        matches!(&err, CertError::CaMissing { path } if *path == key),
        "{err}"
    );

    // Mismatched: the node CA's key next to the device CA's certificate.
    fs::copy(store.ca_key_path(CaKind::Node), &key).unwrap();
    let err = CertDir::open(&dir).unwrap_err();
    assert!(matches!(err, CertError::CaKeyMismatch), "{err}");

    // Garbage.
    fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = CertDir::open(&dir).unwrap_err();
    assert!(matches!(err, CertError::InvalidCa { .. }), "{err}");

    fs::write(&key, saved).unwrap();
    CertDir::open(&dir).unwrap();
}

#[test]
fn swapped_ca_files_are_caught() {
    let (_tmp, store) = new_store();
    // A device cert put in place of the node CA certificate, with its own key.
    let dir = store.dir().to_owned();
    let ca = CertificateAuthority::generate(CaKind::Device).unwrap();
    let leaf = ca
        .issue_device("tv-1", omega_certs::Validity::days_from_now(1))
        .unwrap();
    fs::remove_file(store.ca_cert_path(CaKind::Node)).unwrap();
    fs::remove_file(store.ca_key_path(CaKind::Node)).unwrap();
    fs::write(store.ca_cert_path(CaKind::Node), &leaf.cert_pem).unwrap();
    fs::write(store.ca_key_path(CaKind::Node), &leaf.key_pem).unwrap();
    let err = CertDir::open(&dir).unwrap_err();
    assert!(matches!(err, CertError::NotCa { .. }), "{err}");
}

#[test]
fn open_of_an_empty_directory_says_init_first() {
    let tmp = tempfile::tempdir().unwrap();
    let err = CertDir::open(tmp.path()).unwrap_err();
    assert!(matches!(err, CertError::CaMissing { .. }), "{err}");
    assert!(err.to_string().contains("init"));
}

#[test]
fn issue_devices_1000() {
    let (_tmp, mut store) = new_store();
    store.issue_device("seed").unwrap();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let max_seen = std::sync::atomic::AtomicUsize::new(0);
    let entries = store
        .issue_devices(1000, "tv", |done| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            max_seen.fetch_max(done, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
    assert_eq!(entries.len(), 1000);
    assert_eq!(calls.into_inner(), 1000);
    assert_eq!(max_seen.into_inner(), 1000);
    assert_eq!(entries[0].subject, "tv-0001");
    assert_eq!(entries[999].subject, "tv-1000");
    let serials: HashSet<_> = entries.iter().map(|e| e.serial.clone()).collect();
    assert_eq!(serials.len(), 1000);

    let paths = CertPaths::new(store.dir());
    assert_eq!(fs::read_dir(paths.devices_dir()).unwrap().count(), 2 * 1001);
    assert_eq!(mode(&paths.device_key_path("tv-0500")), 0o600);
    let der = pem_der(
        &fs::read_to_string(paths.device_cert_path("tv-0500")).unwrap(),
        "CERTIFICATE",
    );
    assert_eq!(device_id_from_cert(&der).unwrap().as_str(), "tv-0500");

    let reopened = CertDir::open(store.dir()).unwrap();
    assert_eq!(reopened.entries().len(), 1001);
    assert_eq!(
        reopened.find("tv-0500").unwrap().serial,
        entries[499].serial
    );

    // Any collision stops the whole batch before anything is written.
    let err = store.issue_devices(1000, "tv", |_| {}).unwrap_err();
    assert!(
        matches!(&err, CertError::DuplicateId { id } if id == "tv-0001"),
        "{err}"
    );
    assert_eq!(CertDir::open(store.dir()).unwrap().entries().len(), 1001);
}

#[test]
fn issue_devices_pads_to_the_width_of_the_count_and_checks_the_prefix() {
    let (_tmp, mut store) = new_store();
    let entries = store.issue_devices(10, "box", |_| {}).unwrap();
    let ids: Vec<_> = entries.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(ids[0], "box-01");
    assert_eq!(ids[9], "box-10");
    assert!(store.issue_devices(0, "box", |_| {}).unwrap().is_empty());
    assert!(matches!(
        store.issue_devices(2, "", |_| {}),
        Err(CertError::InvalidId { .. })
    ));
    assert!(matches!(
        store.issue_devices(2, "../x", |_| {}),
        Err(CertError::InvalidId { .. })
    ));
    // A stray file for one id also stops the batch.
    fs::write(store.device_cert_path("new-2"), "x").unwrap();
    assert!(matches!(
        store.issue_devices(2, "new", |_| {}),
        Err(CertError::FileExists { .. })
    ));
    assert!(!store.device_cert_path("new-1").exists());
}

#[test]
fn refresh_crls_keeps_revocations() {
    let (_tmp, mut store) = new_store();
    let c = store.issue_device("tv-1").unwrap();
    store.revoke("tv-1").unwrap();
    store.refresh_crls().unwrap();
    assert_eq!(crl_serials(&store.crl_path(CaKind::Device)), vec![c.serial]);
    assert!(crl_serials(&store.crl_path(CaKind::Node)).is_empty());
}

#[test]
fn corrupt_ledger_is_a_typed_error() {
    let (_tmp, mut store) = new_store();
    fs::write(store.index_path(), "{ not json").unwrap();
    assert!(matches!(
        store.issue_device("tv-1"),
        Err(CertError::Ledger { .. })
    ));
    assert!(matches!(
        CertDir::open(store.dir()),
        Err(CertError::Ledger { .. })
    ));
}

#[test]
fn a_panicking_progress_callback_leaves_every_written_certificate_in_the_ledger() {
    let (_tmp, mut store) = new_store();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.issue_devices(40, "tv", |done| {
            if done == 5 {
                panic!("progress bar crashed");
            }
        })
    }));
    assert!(r.is_err(), "the caller's panic is re-raised");
    // Every certificate on disk is in the ledger (nothing orphaned), so the
    // same ids cannot be issued twice silently.
    let paths = CertPaths::new(store.dir());
    let on_disk = fs::read_dir(paths.devices_dir()).unwrap().count() / 2;
    assert!(on_disk >= 5, "{on_disk}");
    let reopened = CertDir::open(store.dir()).unwrap();
    assert_eq!(reopened.entries().len(), on_disk);
}

fn leaf(path: &Path) -> rustls::pki_types::CertificateDer<'static> {
    pem_der(&fs::read_to_string(path).expect("read cert"), "CERTIFICATE").into()
}

#[test]
fn renewal_keeps_the_identity_with_a_new_key_and_revoking_the_id_revokes_every_certificate() {
    let (_tmp, mut store) = new_store();
    let old = store.issue_device("tv-renew").expect("issue");
    let old_key = fs::read(store.device_key_path("tv-renew")).expect("key");
    let new = store
        .renew(
            CaKind::Device,
            "tv-renew",
            omega_certs::Validity::days_from_now(60),
        )
        .expect("renew");
    assert_ne!(new.serial, old.serial);
    let cert_path = store.device_cert_path("tv-renew");
    let key_path = store.device_key_path("tv-renew");
    assert_ne!(fs::read(&key_path).expect("key"), old_key, "a fresh key");
    assert_eq!(mode(&key_path), 0o600);
    let renewed = leaf(&cert_path);
    assert_eq!(
        device_id_from_cert(&renewed).expect("cn").as_str(),
        "tv-renew"
    );
    let (_, parsed) = X509Certificate::from_der(renewed.as_ref()).expect("parse");
    assert_eq!(SerialHex::from_bytes(parsed.raw_serial()), new.serial);
    let ca = store.ca(CaKind::Device).cert_der();
    let crl = store.crl_path(CaKind::Device);
    verify_client(
        ca.clone(),
        Some(&fs::read_to_string(&crl).unwrap()),
        &renewed,
    )
    .expect("the renewed certificate verifies");
    assert_eq!(store.find("tv-renew").expect("entry").serial, new.serial);

    // A node keeps its SANs.
    store
        .issue_node("node-r", &["node-r.example.net".into(), "10.0.0.7".into()])
        .expect("issue node");
    store
        .renew(
            CaKind::Node,
            "node-r",
            omega_certs::Validity::days_from_now(30),
        )
        .expect("renew node");
    let info = match omega_certs::inspect_file(&store.node_cert_path("node-r"))
        .expect("inspect")
        .remove(0)
    {
        omega_certs::Inspected::Certificate(c) => c,
        other => panic!("not a certificate: {other:?}"),
    };
    assert_eq!(info.sans, vec!["DNS:node-r.example.net", "IP:10.0.0.7"]);
    assert!(matches!(
        store.renew(
            CaKind::Node,
            "tv-renew",
            omega_certs::Validity::days_from_now(1)
        ),
        Err(CertError::UnknownSubject { .. })
    ));

    // Revoking the id revokes both certificates of tv-renew.
    store.revoke("tv-renew").expect("revoke");
    let revoked = crl_serials(&crl);
    assert!(
        revoked.contains(&old.serial) && revoked.contains(&new.serial),
        "{revoked:?}"
    );
    assert!(matches!(
        store.renew(
            CaKind::Device,
            "tv-renew",
            omega_certs::Validity::days_from_now(1)
        ),
        Err(CertError::RevokedSubject { .. })
    ));
}

#[test]
fn a_node_export_holds_the_ca_certificates_crls_and_its_own_key_only() {
    let (tmp, mut store) = new_store();
    let node = store
        .issue_node("node-1", &["localhost".into()])
        .expect("issue node");
    // Node certificates are short-lived (renewed without a restart).
    let days = (node.not_after - time::OffsetDateTime::now_utc()).whole_days();
    assert!((89..=90).contains(&days), "{days} days");
    let out = tmp.path().join("node-1");
    let written = store.export_node("node-1", &out).expect("export");
    assert_eq!(written.len(), 6);
    assert_eq!(mode(&out), 0o700);
    let to = CertPaths::new(&out);
    let mut names: Vec<String> = Vec::new();
    for entry in walk(&out) {
        names.push(
            entry
                .strip_prefix(&out)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    assert_eq!(
        names,
        [
            "device-ca.crl",
            "device-ca.crt",
            "node-ca.crl",
            "node-ca.crt",
            "nodes/node-1.crt",
            "nodes/node-1.key"
        ]
    );
    assert_eq!(mode(&to.node_key_path("node-1")), 0o600);
    assert_eq!(
        fs::read(to.crl_path(CaKind::Device)).unwrap(),
        fs::read(store.crl_path(CaKind::Device)).unwrap()
    );
    // Again after a revocation: the CRL in the export is replaced.
    store.issue_device("tv-x").expect("issue");
    store.revoke("tv-x").expect("revoke");
    store.export_node("node-1", &out).expect("export again");
    assert_eq!(crl_serials(&to.crl_path(CaKind::Device)).len(), 1);
    assert!(matches!(
        store.export_node("node-2", &out),
        Err(CertError::UnknownSubject { .. })
    ));
    assert!(matches!(
        store.export_node("node-1", store.dir()),
        Err(CertError::ExportIntoStore { .. })
    ));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
