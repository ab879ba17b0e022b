//! QUIC with mutual TLS, shared by the node, the TV and the simulator.
//!
//! * [`server_config`]: a quinn server that demands a client certificate
//!   chaining to a given CA (the device CA for the sync listener, the node CA
//!   for the node mesh), checks a revocation list at the handshake, speaks only
//!   TLS 1.3 and ALPN [`ALPN`]. The returned [`RevocationHandle`] swaps in a new
//!   CRL without restarting the listener and re-checks an open connection's
//!   certificate against it ([`RevocationHandle::check`]). With a CRL, its
//!   `nextUpdate` is enforced: once it passes, every handshake fails until a
//!   fresh CRL is loaded (fail closed). No session is resumed (no tickets, no
//!   session cache), so every connection's certificate is verified against
//!   the CRL in force at its handshake.
//! * [`server_config_with_identity`]: the same, with an [`IdentityHandle`]
//!   that swaps the server's own certificate and key for the handshakes that
//!   follow (rotation without a restart; open connections keep theirs).
//! * [`client_config`]: a quinn client presenting its certificate and verifying
//!   the server against a CA and, when given, the CA's revocation list
//!   (`nextUpdate` enforced, as on the server).
//! * [`peer_device_id`]: the device id, read from the verified certificate of a
//!   connection, never from a payload.
//! * [`exchange`] / [`accept_exchange`]: one sync = one bidirectional stream
//!   carrying one request frame and one response frame.
//! * [`HandshakeFailure`]: a clear name for why a handshake was refused, from
//!   the TLS alert either side saw.
//!
//! The crypto provider is *ring* (no C toolchain beyond `cc`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use omega_protocol::codec::CodecError;
use omega_protocol::limits::{MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME};
use omega_protocol::DeviceId;

use crate::frame::read_frame;

/// The one application protocol spoken: Omega sync, version 1.
pub const ALPN: &[u8] = b"omega/1";

/// Why TLS/QUIC setup failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file or string could not be read or parsed.
    #[error("cannot read {what}: {detail}")]
    Pem {
        /// What was being read (a path or a description).
        what: String,
        /// The parser's or the OS's message.
        detail: String,
    },
    /// rustls refused the configuration (bad key, unsupported algorithm …).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built (e.g. an unparsable CRL).
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The server verifier could not be built.
    #[error("server verifier: {0}")]
    ServerVerifier(String),
    /// The peer presented no certificate (cannot happen after a successful
    /// mutual handshake; reported rather than assumed).
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// The device key or CA cannot be used for round attestations.
    #[error("attestation setup: {0}")]
    Attest(String),
    /// The peer's certificate has no usable common name for a device id.
    #[error("peer certificate does not carry a valid device id: {0}")]
    BadIdentity(#[source] omega_certs::CertError),
    /// A revocation list is not valid DER X.509.
    #[error("revocation list: {0}")]
    Crl(String),
    /// A peer checking this certificate would refuse it (expired, not yet
    /// valid, another CA's, revoked, or not for the name):
    /// [`check_server_identity`].
    #[error("a peer would refuse this certificate: {0}")]
    NotAccepted(#[source] rustls::Error),
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct TlsIdentity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn pem_err(what: impl Into<String>, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        what: what.into(),
        detail: e.to_string(),
    }
}

fn certs_from_pem(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(what, e))?;
    if certs.is_empty() {
        return Err(pem_err(what, "no certificate found"));
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| pem_err(path.display().to_string(), e))
}

impl TlsIdentity {
    /// Parses a PEM certificate chain and a PEM private key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        Ok(Self {
            chain: certs_from_pem("certificate", cert_pem)?,
            key: PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem_err("private key", e))?,
        })
    }

    /// Checks that the key belongs to the leaf certificate (a certificate
    /// and key renewed as two files can be read half-way).
    pub fn check_pair(&self) -> Result<(), TlsError> {
        certified_key(self).map(|_| ())
    }

    /// Reads a PEM certificate chain and key from files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let c = read(cert)?;
        let k = read(key)?;
        Self::from_pem(&c, &k).map_err(|e| match e {
            TlsError::Pem { detail, .. } => {
                pem_err(format!("{} / {}", cert.display(), key.display()), detail)
            }
            other => other,
        })
    }
}

/// A CA to trust, with the revocation lists it has published.
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    /// CA certificates.
    pub cas: Vec<CertificateDer<'static>>,
    /// Revocation lists (may be empty).
    pub crls: Vec<CertificateRevocationListDer<'static>>,
}

impl TrustAnchor {
    /// From a PEM CA certificate and zero or more PEM CRLs.
    pub fn from_pem(ca_pem: &[u8], crl_pems: &[&[u8]]) -> Result<Self, TlsError> {
        Ok(Self {
            cas: certs_from_pem("CA certificate", ca_pem)?,
            crls: parse_crls(crl_pems)?,
        })
    }

    /// From a CA file and, when named, its CRL file. A named CRL must be
    /// there: a missing file is an error, never "nothing revoked".
    pub fn from_files(ca: &Path, crl: Option<&Path>) -> Result<Self, TlsError> {
        let ca_pem = read(ca)?;
        let crl_pem = crl.map(read).transpose()?;
        let crls: Vec<&[u8]> = crl_pem.as_deref().into_iter().collect();
        Self::from_pem(&ca_pem, &crls)
    }

    /// The earliest `nextUpdate` of its revocation lists ([`crl_next_update`]).
    pub fn crl_next_update(&self) -> Result<Option<std::time::SystemTime>, TlsError> {
        crl_next_update(&self.crls)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in &self.cas {
            roots.add(ca.clone())?;
        }
        Ok(Arc::new(roots))
    }
}

/// The earliest `nextUpdate` of `crls` (`None`: no list, or none carries
/// one): past it a server built with them refuses every handshake.
pub fn crl_next_update(
    crls: &[CertificateRevocationListDer<'static>],
) -> Result<Option<std::time::SystemTime>, TlsError> {
    use x509_parser::prelude::FromDer;
    let mut earliest: Option<std::time::SystemTime> = None;
    for crl in crls {
        let (_, parsed) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(crl.as_ref())
                .map_err(|e| TlsError::Crl(e.to_string()))?;
        if let Some(next) = parsed.next_update() {
            let secs = u64::try_from(next.timestamp()).unwrap_or(0);
            let at = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
    }
    Ok(earliest)
}

/// Parses PEM revocation lists.
pub fn parse_crls(pems: &[&[u8]]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for pem in pems {
        for crl in CertificateRevocationListDer::pem_slice_iter(pem) {
            out.push(crl.map_err(|e| pem_err("revocation list", e))?);
        }
    }
    Ok(out)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The identity as rustls signs with it; refuses a key that does not match
/// the leaf certificate.
fn certified_key(identity: &TlsIdentity) -> Result<Arc<CertifiedKey>, TlsError> {
    Ok(Arc::new(CertifiedKey::from_der(
        identity.chain.clone(),
        identity.key.clone_key(),
        &provider(),
    )?))
}

/// The server's own certificate and key, replaceable while it runs.
#[derive(Debug)]
struct ReloadableIdentity(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for ReloadableIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

/// Replaces the certificate and key a running server presents.
#[derive(Debug, Clone)]
pub struct IdentityHandle(Arc<ReloadableIdentity>);

impl IdentityHandle {
    /// Presents `identity` at every handshake from now on; connections
    /// already open keep the certificate they were made with. A key that
    /// does not match the certificate is refused and the identity in force
    /// stays.
    pub fn reload(&self, identity: &TlsIdentity) -> Result<(), TlsError> {
        let next = certified_key(identity)?;
        *self.0 .0.write() = next;
        Ok(())
    }
}

fn build_client_verifier(
    anchor: &TrustAnchor,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut b = WebPkiClientVerifier::builder_with_provider(anchor.roots()?, provider())
        .only_check_end_entity_revocation();
    if crls.is_empty() {
        b = b.allow_unknown_revocation_status();
    } else {
        b = b.with_crls(crls).enforce_revocation_expiration();
    }
    Ok(b.build()?)
}

/// A client-certificate verifier whose revocation list can be replaced while
/// the listener runs (the node reloads its CRL file).
#[derive(Debug)]
struct ReloadableVerifier {
    anchor: TrustAnchor,
    hints: Vec<DistinguishedName>,
    inner: RwLock<Arc<dyn ClientCertVerifier>>,
}

impl ReloadableVerifier {
    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.inner.read().clone()
    }
}

impl ClientCertVerifier for ReloadableVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// Replaces the revocation list a running server checks at each handshake.
#[derive(Debug, Clone)]
pub struct RevocationHandle(Arc<ReloadableVerifier>);

impl RevocationHandle {
    /// Installs `crls` for every handshake from now on. On error the previous
    /// list stays in force.
    pub fn reload(&self, crl_pems: &[&[u8]]) -> Result<(), TlsError> {
        let crls = parse_crls(crl_pems)?;
        let next = build_client_verifier(&self.0.anchor, crls)?;
        *self.0.inner.write() = next;
        Ok(())
    }

    /// Verifies a connection's certificate chain (leaf first, as
    /// `quinn::Connection::peer_identity` holds it) against the CA and the
    /// revocation list in force now: an open connection of a device revoked
    /// since its handshake fails here.
    pub fn check(&self, chain: &[CertificateDer<'static>]) -> Result<(), TlsError> {
        let (leaf, intermediates) = chain.split_first().ok_or(TlsError::NoPeerCertificate)?;
        self.0
            .current()
            .verify_client_cert(leaf, intermediates, UnixTime::now())?;
        Ok(())
    }
}

/// The certificate chain a connection's peer presented (leaf first).
pub fn peer_chain(conn: &quinn::Connection) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|chain| *chain)
        .ok_or(TlsError::NoPeerCertificate)
}

fn transport(keep_alive: bool) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // Idle connections are dropped after 60 s; clients that keep a connection
    // for repeated syncs send keep-alives.
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        60_000,
    ))));
    if keep_alive {
        t.keep_alive_interval(Some(Duration::from_secs(15)));
    }
    // One sync is one stream; a handful in flight per connection is plenty.
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(8));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    Arc::new(t)
}

/// A server that demands client certificates chaining to `clients`.
pub fn server_config(
    identity: TlsIdentity,
    clients: &TrustAnchor,
) -> Result<(quinn::ServerConfig, RevocationHandle), TlsError> {
    server_config_with_identity(identity, clients).map(|(cfg, revocation, _)| (cfg, revocation))
}

/// [`server_config`], with a handle that replaces the server's certificate
/// and key while it runs.
pub fn server_config_with_identity(
    identity: TlsIdentity,
    clients: &TrustAnchor,
) -> Result<(quinn::ServerConfig, RevocationHandle, IdentityHandle), TlsError> {
    let own = Arc::new(ReloadableIdentity(RwLock::new(certified_key(&identity)?)));
    let inner = build_client_verifier(clients, clients.crls.clone())?;
    let verifier = Arc::new(ReloadableVerifier {
        anchor: clients.clone(),
        hints: inner.root_hint_subjects().to_vec(),
        inner: RwLock::new(inner),
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_cert_resolver(own.clone());
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    // No resumption: a resumed session would restore the client
    // certificate without checking it against the current CRL.
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    let quic = QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::ServerVerifier(format!("QUIC server config: {e}")))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport(false));
    Ok((cfg, RevocationHandle(verifier), IdentityHandle(own)))
}

/// The verifier a client uses for `servers`: the chain to one of its CAs,
/// the validity period, the name, and (with CRLs) the leaf's revocation;
/// `fresh_crls`: a CRL past its nextUpdate fails verification.
fn server_verifier(
    servers: &TrustAnchor,
    fresh_crls: bool,
) -> Result<Arc<rustls::client::WebPkiServerVerifier>, TlsError> {
    let mut builder =
        rustls::client::WebPkiServerVerifier::builder_with_provider(servers.roots()?, provider());
    if !servers.crls.is_empty() {
        builder = builder
            .with_crls(servers.crls.clone())
            .only_check_end_entity_revocation();
        if fresh_crls {
            builder = builder.enforce_revocation_expiration();
        }
    }
    builder
        .build()
        .map_err(|e| TlsError::ServerVerifier(e.to_string()))
}

/// Whether a client trusting `servers` would accept `identity`'s chain from a
/// server it dials as `server_name`, at `now`: chained to one of the CAs,
/// within its validity period, named `server_name`, not revoked by the CRLs
/// given (whether or not they are past their nextUpdate: that is the
/// client's to judge when it connects). A node checks its own certificate
/// with it before presenting it, so that a wrong file is refused at start
/// or at a reload instead of being shown to every TV.
pub fn check_server_identity(
    identity: &TlsIdentity,
    servers: &TrustAnchor,
    server_name: &str,
    now: std::time::SystemTime,
) -> Result<(), TlsError> {
    use rustls::client::danger::ServerCertVerifier;
    let verifier = server_verifier(servers, false)?;
    let (leaf, intermediates) = identity
        .chain
        .split_first()
        .ok_or_else(|| pem_err("certificate", "no certificate found"))?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| TlsError::ServerVerifier(format!("server name {server_name:?}: {e}")))?;
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &name,
            &[],
            UnixTime::since_unix_epoch(since_epoch),
        )
        .map(|_| ())
        .map_err(TlsError::NotAccepted)
}

/// A client presenting `identity` and trusting servers that chain to `servers`.
pub fn client_config(
    identity: TlsIdentity,
    servers: &TrustAnchor,
) -> Result<quinn::ClientConfig, TlsError> {
    let verifier = server_verifier(servers, true)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::ServerVerifier(format!("QUIC client config: {e}")))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport(true));
    Ok(cfg)
}

/// The device id of an authenticated connection: the verified leaf
/// certificate's common name.
pub fn peer_device_id(conn: &quinn::Connection) -> Result<DeviceId, TlsError> {
    let certs = peer_chain(conn)?;
    let leaf = certs.first().ok_or(TlsError::NoPeerCertificate)?;
    omega_certs::device_id_from_cert(leaf).map_err(TlsError::BadIdentity)
}

/// A named reason for a refused handshake, from the TLS alert carried in the
/// QUIC CONNECTION_CLOSE (crypto error 0x100 + alert) that either side saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client sent no certificate (alert 116).
    CertificateRequired,
    /// The certificate does not chain to a trusted CA (alert 48), or a bad
    /// certificate generally (alert 42).
    UnknownCa,
    /// The certificate is revoked (alert 44).
    Revoked,
    /// The certificate has expired or is not yet valid (alert 45).
    Expired,
    /// The chain names a trusted CA but its signature does not verify: issued
    /// by another CA with the same name, or forged (alert 51, decrypt_error).
    BadSignature,
    /// Bad or unsupported certificate (alerts 42, 43, 46).
    BadCertificate,
    /// No common application protocol (alert 120).
    NoApplicationProtocol,
    /// Another TLS alert.
    OtherAlert(u8),
    /// Not a TLS failure (timeout, reset, application close …).
    NotTls,
}

impl HandshakeFailure {
    /// Classifies a quinn connection error.
    pub fn of(err: &quinn::ConnectionError) -> Self {
        let code = match err {
            quinn::ConnectionError::TransportError(t) => t.code,
            quinn::ConnectionError::ConnectionClosed(c) => c.error_code,
            _ => return HandshakeFailure::NotTls,
        };
        let code = u64::from(code);
        if !(0x100..0x200).contains(&code) {
            return HandshakeFailure::NotTls;
        }
        match (code - 0x100) as u8 {
            116 => HandshakeFailure::CertificateRequired,
            48 => HandshakeFailure::UnknownCa,
            44 => HandshakeFailure::Revoked,
            45 => HandshakeFailure::Expired,
            51 => HandshakeFailure::BadSignature,
            42 | 43 | 46 => HandshakeFailure::BadCertificate,
            120 => HandshakeFailure::NoApplicationProtocol,
            other => HandshakeFailure::OtherAlert(other),
        }
    }
}

/// Why an exchange on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The connection was lost or refused (see [`HandshakeFailure::of`]).
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing the request failed.
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    /// The peer's frame was bad.
    #[error("frame: {0}")]
    Codec(#[from] CodecError),
    /// The peer did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl ExchangeError {
    /// The TLS reason, if the connection was refused at the handshake.
    pub fn handshake_failure(&self) -> HandshakeFailure {
        match self {
            ExchangeError::Connection(e) => HandshakeFailure::of(e),
            ExchangeError::Write(quinn::WriteError::ConnectionLost(e)) => HandshakeFailure::of(e),
            ExchangeError::Codec(CodecError::Io(io)) => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<quinn::ReadError>())
                .map(|r| match r {
                    quinn::ReadError::ConnectionLost(e) => HandshakeFailure::of(e),
                    _ => HandshakeFailure::NotTls,
                })
                .unwrap_or(HandshakeFailure::NotTls),
            _ => HandshakeFailure::NotTls,
        }
    }
}

/// Client side of one exchange: opens a stream, sends `request_frame` (as built
/// by [`omega_protocol::codec::encode_request`]), and returns the response frame body (decode
/// it with [`omega_protocol::codec::decode_response`]).
pub async fn exchange(
    conn: &quinn::Connection,
    request_frame: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, ExchangeError> {
    let work = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(request_frame).await?;
        // The stream's end tells the server the request is complete; an
        // already-closed stream will surface on the read below.
        let _ = send.finish();
        Ok::<_, ExchangeError>(read_frame(&mut recv, MAX_RESPONSE_FRAME).await?)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ExchangeError::Timeout(timeout))?
}

/// Server side of one exchange: accepts the next stream and reads its request
/// frame body. Returns the stream to answer on with [`respond`]. A bad frame
/// is returned as `Err` together with the stream, so the caller can still send
/// a typed error.
pub async fn accept_exchange(
    conn: &quinn::Connection,
) -> Result<(quinn::SendStream, Result<Vec<u8>, CodecError>), quinn::ConnectionError> {
    let (send, mut recv) = conn.accept_bi().await?;
    let body = read_frame(&mut recv, MAX_REQUEST_FRAME).await;
    Ok((send, body))
}

/// Writes a response frame and closes the stream.
pub async fn respond(
    send: &mut quinn::SendStream,
    response_frame: &[u8],
) -> Result<(), ExchangeError> {
    send.write_all(response_frame).await?;
    let _ = send.finish();
    Ok(())
}
