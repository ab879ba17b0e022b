//! Mutual TLS over real QUIC on loopback UDP, with certificates from
//! omega-certs: a valid device completes an exchange and is identified by its
//! certificate; no certificate, another CA's certificate, an expired one and a
//! revoked one are each refused at the handshake, with a named reason on both
//! sides. A device checks the node against the node CRL (revoked or expired:
//! refused), and a server presents a reloaded certificate to new connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use omega_certs::{CaKind, CertificateAuthority, IssuedCert, Validity};
use omega_protocol::codec::{decode_request, decode_response, encode_request, encode_response};
use omega_protocol::*;
use omega_transport::quic::*;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

struct Pki {
    device_ca: CertificateAuthority,
    node_ca: CertificateAuthority,
    node: IssuedCert,
}

impl Pki {
    /// A device CRL (PEM) revoking `serials` as of now.
    fn device_crl(&self, serials: &[omega_certs::SerialHex]) -> String {
        self.device_ca
            .crl(serials, time::OffsetDateTime::now_utc())
            .unwrap()
    }
}

fn pki() -> Pki {
    let device_ca = CertificateAuthority::generate(CaKind::Device).unwrap();
    let node_ca = CertificateAuthority::generate(CaKind::Node).unwrap();
    let node = node_ca
        .issue_node(
            "node-1",
            &["localhost".into(), "127.0.0.1".into()],
            Validity::days_from_now(30),
        )
        .unwrap();
    Pki {
        device_ca,
        node_ca,
        node,
    }
}

fn identity(c: &IssuedCert) -> TlsIdentity {
    TlsIdentity::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).unwrap()
}

fn anchor(ca: &CertificateAuthority, crl: Option<&str>) -> TrustAnchor {
    let crls: Vec<&[u8]> = crl.map(str::as_bytes).into_iter().collect();
    TrustAnchor::from_pem(ca.cert_pem().as_bytes(), &crls).unwrap()
}

/// What the server saw for one incoming connection.
#[derive(Debug)]
enum Seen {
    Served(DeviceId),
    Refused(HandshakeFailure, String),
}

/// A loopback server that answers each request with an ack of its pattern
/// version and reports what it saw.
async fn server(
    pki: &Pki,
    crl: Option<&str>,
) -> (SocketAddr, mpsc::Receiver<Seen>, RevocationHandle) {
    let (cfg, handle) = server_config(identity(&pki.node), &anchor(&pki.device_ca, crl)).unwrap();
    let (addr, rx) = serve(cfg);
    (addr, rx, handle)
}

/// Serves `cfg` on loopback (see [`server`]).
fn serve(cfg: quinn::ServerConfig) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let endpoint = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx
                            .send(Seen::Refused(HandshakeFailure::of(&e), e.to_string()))
                            .await;
                        return;
                    }
                };
                let device = peer_device_id(&conn).unwrap();
                let (mut send, body) = match accept_exchange(&conn).await {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = tx
                            .send(Seen::Refused(HandshakeFailure::of(&e), e.to_string()))
                            .await;
                        return;
                    }
                };
                let req = decode_request(&body.unwrap()).unwrap();
                let resp: SyncResponse = Ok(SyncAccepted {
                    acked_version: req.pattern_version,
                    next_sync_secs: 600,
                    ..Default::default()
                });
                respond(&mut send, &encode_response(&resp).unwrap())
                    .await
                    .unwrap();
                let _ = tx.send(Seen::Served(device)).await;
                // Keep the connection until the client has read the answer.
                let _ = conn.closed().await;
            });
        }
    });
    (addr, rx)
}

fn request() -> SyncRequest {
    SyncRequest {
        kind: SyncKind::Delta,
        base_version: 6,
        pattern_version: 7,
        global_version: 0,
        catalog_version: 0,
        region: Region::new("eu-west").unwrap(),
        delta: PatternDelta::default(),
        round: None,
        fleet: Default::default(),
    }
}

async fn sync_with(
    cfg: quinn::ClientConfig,
    addr: SocketAddr,
) -> Result<SyncResponse, ExchangeError> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(cfg);
    let conn = tokio::time::timeout(WAIT, endpoint.connect(addr, "localhost").unwrap())
        .await
        .expect("handshake timed out")?;
    let body = exchange(&conn, &encode_request(&request()).unwrap(), WAIT).await?;
    conn.close(0u32.into(), b"done");
    Ok(decode_response(&body).unwrap())
}

async fn seen(rx: &mut mpsc::Receiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("server saw nothing")
        .expect("server gone")
}

fn device_client(pki: &Pki, cert: &IssuedCert) -> quinn::ClientConfig {
    client_config(identity(cert), &anchor(&pki.node_ca, None)).unwrap()
}

#[tokio::test]
async fn valid_device_completes_an_exchange_and_is_named_by_its_certificate() {
    let pki = pki();
    let (addr, mut rx, _) = server(&pki, None).await;
    let tv = pki
        .device_ca
        .issue_device("tv-0042", Validity::days_from_now(30))
        .unwrap();
    let resp = sync_with(device_client(&pki, &tv), addr)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.acked_version, 7);
    match seen(&mut rx).await {
        Seen::Served(id) => assert_eq!(id.as_str(), "tv-0042"),
        other => panic!("{other:?}"),
    }
}

async fn assert_refused(
    pki: &Pki,
    cfg: quinn::ClientConfig,
    crl: Option<&str>,
    expected: HandshakeFailure,
) {
    let (addr, mut rx, _) = server(pki, crl).await;
    let err = sync_with(cfg, addr)
        .await
        .expect_err("exchange should fail");
    assert_eq!(err.handshake_failure(), expected, "client saw: {err}");
    match seen(&mut rx).await {
        Seen::Refused(reason, msg) => assert_eq!(reason, expected, "server saw: {msg}"),
        other => panic!("server served: {other:?}"),
    }
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let pki = pki();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.node_ca.cert_der()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    assert_refused(&pki, cfg, None, HandshakeFailure::CertificateRequired).await;
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let pki = pki();
    // The rogue CA even carries the same name as the real one ("Omega Device
    // CA"), so the chain is found and its signature fails to verify.
    let rogue_ca = CertificateAuthority::generate(CaKind::Device).unwrap();
    let tv = rogue_ca
        .issue_device("tv-0042", Validity::days_from_now(30))
        .unwrap();
    assert_refused(
        &pki,
        device_client(&pki, &tv),
        None,
        HandshakeFailure::BadSignature,
    )
    .await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let pki = pki();
    let now = time::OffsetDateTime::now_utc();
    let expired = Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    };
    let tv = pki.device_ca.issue_device("tv-old", expired).unwrap();
    assert_refused(
        &pki,
        device_client(&pki, &tv),
        None,
        HandshakeFailure::Expired,
    )
    .await;
}

#[tokio::test]
async fn revoked_certificate_is_refused() {
    let pki = pki();
    let tv = pki
        .device_ca
        .issue_device("tv-stolen", Validity::days_from_now(30))
        .unwrap();
    let crl = pki.device_crl(std::slice::from_ref(&tv.serial));
    assert_refused(
        &pki,
        device_client(&pki, &tv),
        Some(&crl),
        HandshakeFailure::Revoked,
    )
    .await;
}

#[tokio::test]
async fn revocation_list_reloads_without_restart() {
    let pki = pki();
    let tv = pki
        .device_ca
        .issue_device("tv-1", Validity::days_from_now(30))
        .unwrap();
    let empty = pki.device_crl(&[]);
    let (addr, mut rx, handle) = server(&pki, Some(&empty)).await;
    assert!(sync_with(device_client(&pki, &tv), addr)
        .await
        .unwrap()
        .is_ok());
    assert!(matches!(seen(&mut rx).await, Seen::Served(_)));

    let crl = pki.device_crl(std::slice::from_ref(&tv.serial));
    handle.reload(&[crl.as_bytes()]).unwrap();
    let err = sync_with(device_client(&pki, &tv), addr)
        .await
        .expect_err("revoked");
    assert_eq!(err.handshake_failure(), HandshakeFailure::Revoked);
    // A garbage CRL is refused and the previous list stays in force.
    assert!(handle
        .reload(&[b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"])
        .is_err());
    assert!(sync_with(device_client(&pki, &tv), addr).await.is_err());
}

#[tokio::test]
async fn device_refuses_a_node_from_another_ca() {
    let pki = pki();
    let (addr, mut rx, _) = server(&pki, None).await;
    let tv = pki
        .device_ca
        .issue_device("tv-1", Validity::days_from_now(30))
        .unwrap();
    let other_node_ca = CertificateAuthority::generate(CaKind::Node).unwrap();
    let cfg = client_config(identity(&tv), &anchor(&other_node_ca, None)).unwrap();
    let err = sync_with(cfg, addr)
        .await
        .expect_err("must not trust the node");
    match &err {
        ExchangeError::Connection(e) => {
            assert!(e.to_string().contains("BadSignature"), "{e}")
        }
        other => panic!("{other}"),
    }
    match seen(&mut rx).await {
        Seen::Refused(reason, _) => assert_eq!(reason, HandshakeFailure::BadSignature),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn node_mesh_accepts_nodes_and_refuses_devices() {
    // The mesh listener trusts the node CA for clients too.
    let pki = pki();
    let (cfg, _) = server_config(identity(&pki.node), &anchor(&pki.node_ca, None)).unwrap();
    let endpoint = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    if let Ok((mut send, Ok(_))) = accept_exchange(&conn).await {
                        let name = peer_device_id(&conn).unwrap();
                        let resp: SyncResponse = Err(SyncError::Internal {
                            reason: name.to_string(),
                        });
                        respond(&mut send, &encode_response(&resp).unwrap())
                            .await
                            .unwrap();
                        let _ = conn.closed().await;
                    }
                }
            });
        }
    });
    let peer = pki
        .node_ca
        .issue_node("node-2", &["localhost".into()], Validity::days_from_now(30))
        .unwrap();
    let resp = sync_with(
        client_config(identity(&peer), &anchor(&pki.node_ca, None)).unwrap(),
        addr,
    )
    .await
    .unwrap();
    assert_eq!(
        resp,
        Err(SyncError::Internal {
            reason: "node-2".into()
        })
    );

    let tv = pki
        .device_ca
        .issue_device("tv-1", Validity::days_from_now(30))
        .unwrap();
    let err = sync_with(device_client(&pki, &tv), addr)
        .await
        .expect_err("a device is not a node");
    assert_ne!(err.handshake_failure(), HandshakeFailure::NotTls, "{err}");
}

/// A CRL's nextUpdate is enforced at the handshake: once it has passed with
/// no fresh list loaded, a device that was served is refused (fail closed),
/// and loading a fresh list lets it in again.
#[tokio::test]
async fn an_expired_revocation_list_fails_the_handshake_until_a_fresh_one_is_loaded() {
    let pki = pki();
    let tv = pki
        .device_ca
        .issue_device("tv-1", Validity::days_from_now(30))
        .unwrap();
    // Valid for 30 days from its thisUpdate: signed so that 2 s remain.
    let this_update =
        time::OffsetDateTime::now_utc() - time::Duration::days(30) + time::Duration::seconds(2);
    let expiring = pki.device_ca.crl(&[], this_update).unwrap();
    let next = anchor(&pki.device_ca, Some(&expiring))
        .crl_next_update()
        .unwrap()
        .expect("omega-certs CRLs carry a nextUpdate");
    let (addr, _rx, handle) = server(&pki, Some(&expiring)).await;
    // Once nextUpdate has passed, every handshake fails.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let started = std::time::SystemTime::now();
        let r = sync_with(device_client(&pki, &tv), addr).await;
        if started > next {
            assert!(r.is_err(), "served on an expired CRL");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CRL never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    handle.reload(&[pki.device_crl(&[]).as_bytes()]).unwrap();
    assert!(sync_with(device_client(&pki, &tv), addr).await.is_ok());
}

/// A node CRL (PEM) revoking `serials`, signed at `at`.
fn node_crl(pki: &Pki, serials: &[omega_certs::SerialHex], at: time::OffsetDateTime) -> String {
    pki.node_ca.crl(serials, at).unwrap()
}

#[tokio::test]
async fn a_device_refuses_a_revoked_node_and_an_expired_node_crl() {
    let pki = pki();
    let (addr, _rx, _) = server(&pki, None).await;
    let tv = pki
        .device_ca
        .issue_device("tv-1", Validity::days_from_now(30))
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let with_crl =
        |crl: &str| client_config(identity(&tv), &anchor(&pki.node_ca, Some(crl))).unwrap();
    // A fresh CRL that does not list the node: served.
    let fresh = node_crl(&pki, &[], now);
    assert!(sync_with(with_crl(&fresh), addr).await.is_ok());
    // The node's serial revoked.
    let revoked = node_crl(&pki, std::slice::from_ref(&pki.node.serial), now);
    let err = sync_with(with_crl(&revoked), addr)
        .await
        .expect_err("a revoked node");
    assert!(err.to_string().contains("Revoked"), "{err}");
    // A CRL past its nextUpdate (signed 31 days ago, valid 30).
    let expired = node_crl(&pki, &[], now - time::Duration::days(31));
    let err = sync_with(with_crl(&expired), addr)
        .await
        .expect_err("an expired node CRL");
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
}

/// The serial of the certificate the server presented on `conn`.
fn server_serial(conn: &quinn::Connection) -> omega_certs::SerialHex {
    let chain = peer_chain(conn).unwrap();
    match omega_certs::inspect_pem(chain[0].as_ref())
        .unwrap()
        .remove(0)
    {
        omega_certs::Inspected::Certificate(c) => c.serial,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_reloaded_server_identity_is_presented_to_new_connections_and_a_mismatched_key_refused() {
    let pki = pki();
    let (cfg, _, handle) =
        server_config_with_identity(identity(&pki.node), &anchor(&pki.device_ca, None)).unwrap();
    let (addr, _rx) = serve(cfg);
    let tv = pki
        .device_ca
        .issue_device("tv-1", Validity::days_from_now(30))
        .unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(device_client(&pki, &tv));
    let connect = || async {
        tokio::time::timeout(WAIT, endpoint.connect(addr, "localhost").unwrap())
            .await
            .unwrap()
            .unwrap()
    };
    let before = connect().await;
    assert_eq!(server_serial(&before), pki.node.serial);

    let renewed = pki
        .node_ca
        .issue_node("node-1", &["localhost".into()], Validity::days_from_now(30))
        .unwrap();
    // The new certificate with the old key: refused, the old pair stays.
    let mixed =
        TlsIdentity::from_pem(renewed.cert_pem.as_bytes(), pki.node.key_pem.as_bytes()).unwrap();
    assert!(mixed.check_pair().is_err());
    assert!(handle.reload(&mixed).is_err());
    assert_eq!(server_serial(&connect().await), pki.node.serial);

    handle.reload(&identity(&renewed)).unwrap();
    let after = connect().await;
    assert_eq!(server_serial(&after), renewed.serial);
    assert_ne!(renewed.serial, pki.node.serial);
    // The connection made before keeps working.
    let body = exchange(&before, &encode_request(&request()).unwrap(), WAIT)
        .await
        .unwrap();
    assert!(decode_response(&body).unwrap().is_ok());
}

/// A client session store that counts the TLS 1.3 tickets a server gave.
#[derive(Debug)]
struct CountingStore {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: std::sync::atomic::AtomicUsize,
}

impl rustls::client::ClientSessionStore for CountingStore {
    fn set_kx_hint(
        &self,
        server: rustls::pki_types::ServerName<'static>,
        group: rustls::NamedGroup,
    ) {
        self.inner.set_kx_hint(server, group)
    }
    fn kx_hint(&self, server: &rustls::pki_types::ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(server)
    }
    fn set_tls12_session(
        &self,
        server: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(server, value)
    }
    fn tls12_session(
        &self,
        server: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(server)
    }
    fn remove_tls12_session(&self, server: &rustls::pki_types::ServerName<'static>) {
        self.inner.remove_tls12_session(server)
    }
    fn insert_tls13_ticket(
        &self,
        server: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.tickets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.insert_tls13_ticket(server, value)
    }
    fn take_tls13_ticket(
        &self,
        server: &rustls::pki_types::ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(server)
    }
}

/// Finding "TLS 1.3 resumption restores a client certificate without checking
/// it again": the server issues no session ticket, so a client that would
/// resume (one configuration, one session store, across connections) makes a
/// full handshake each time, and a certificate revoked in between is refused.
#[tokio::test]
async fn no_session_is_resumed_so_a_revoked_certificate_is_checked_on_every_connection() {
    let pki = pki();
    let tv = pki
        .device_ca
        .issue_device("tv-resume", Validity::days_from_now(30))
        .unwrap();
    let (addr, mut rx, handle) = server(&pki, Some(&pki.device_crl(&[]))).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.node_ca.cert_der()).unwrap();
    let store = Arc::new(CountingStore {
        inner: rustls::client::ClientSessionMemoryCache::new(16),
        tickets: Default::default(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(vec![tv.cert_der()], tv.key_der())
    .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::store(store.clone());
    let cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    assert!(sync_with(cfg.clone(), addr).await.unwrap().is_ok());
    assert!(matches!(seen(&mut rx).await, Seen::Served(_)));
    assert!(sync_with(cfg.clone(), addr).await.unwrap().is_ok());
    assert!(matches!(seen(&mut rx).await, Seen::Served(_)));
    assert_eq!(
        store.tickets.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the server issued a session ticket"
    );
    handle
        .reload(&[pki.device_crl(std::slice::from_ref(&tv.serial)).as_bytes()])
        .unwrap();
    let err = sync_with(cfg, addr).await.expect_err("revoked");
    assert_eq!(err.handshake_failure(), HandshakeFailure::Revoked);
}

/// A CRL file that is named must be there: a missing one is an error, not an
/// empty list (the shared loader fails closed for every caller).
#[test]
fn a_named_crl_file_that_is_missing_is_an_error_not_an_empty_list() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("device-ca.crt");
    std::fs::write(&ca, p.device_ca.cert_pem()).unwrap();
    let crl = dir.path().join("device-ca.crl");
    assert!(TrustAnchor::from_files(&ca, Some(&crl)).is_err());
    std::fs::write(&crl, p.device_crl(&[])).unwrap();
    let anchor = TrustAnchor::from_files(&ca, Some(&crl)).unwrap();
    assert_eq!(anchor.crls.len(), 1);
    assert!(TrustAnchor::from_files(&ca, None).unwrap().crls.is_empty());
}
