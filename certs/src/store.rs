//! The on-disk certificate store (`--dir`): the two CAs, their CRLs, issued device
//! and node certificates and the `index.json` ledger. The file names here are a
//! contract the node and the simulator rely on:
//!
//! ```text
//! DIR/device-ca.crt  DIR/device-ca.key  DIR/device-ca.crl   (PEM; CRL always present)
//! DIR/node-ca.crt    DIR/node-ca.key    DIR/node-ca.crl
//! DIR/devices/<ID>.crt    DIR/devices/<ID>.key
//! DIR/nodes/<NAME>.crt    DIR/nodes/<NAME>.key
//! DIR/index.json          ledger: kind, subject, serial, not_after, revoked
//! ```
//!
//! Keys are created 0600, everything else 0644; every write goes through a
//! fsynced temporary file; nothing is overwritten except the CRLs, the ledger
//! and, by an explicit renewal ([`CertDir::renew`]), a subject's certificate
//! and key.
//!
//! A node gets a copy of what it needs and nothing more
//! ([`CertDir::export_node`]): the two CA certificates, the two CRLs and its
//! own certificate and key, in the same layout, without the CA keys or the
//! ledger.
//! Mutations take an advisory lock (`DIR/.lock`) and re-read the ledger under it.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::fsutil::{self, FileMode, StoreLock};
use crate::{
    validate_device_id, CaKind, CertError, CertificateAuthority, IssuedCert, SerialHex, Validity,
};

/// Default lifetime of a device certificate, in days.
pub const DEFAULT_DEVICE_DAYS: i64 = 1825;
/// Default lifetime of a node certificate, in days: short, because a node
/// renews without a restart (`omega-certs renew-node`, then `export-node`;
/// the node reloads its certificate and key when the files change).
pub const DEFAULT_NODE_DAYS: i64 = 90;

const LEDGER_VERSION: u32 = 1;

/// Where each file of a store lives. Pure path arithmetic, no IO: the node and the
/// simulator use it to find certificates without loading the CA keys.
///
/// The id/name taking helpers do not validate; ids are checked with
/// [`validate_device_id`] before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    dir: PathBuf,
}

impl CertPaths {
    /// The layout under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CertPaths { dir: dir.into() }
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/device-ca.crt` or `DIR/node-ca.crt`.
    pub fn ca_cert_path(&self, kind: CaKind) -> PathBuf {
        self.dir.join(format!("{kind}-ca.crt"))
    }

    /// `DIR/device-ca.key` or `DIR/node-ca.key`.
    pub fn ca_key_path(&self, kind: CaKind) -> PathBuf {
        self.dir.join(format!("{kind}-ca.key"))
    }

    /// `DIR/device-ca.crl` or `DIR/node-ca.crl`.
    pub fn crl_path(&self, kind: CaKind) -> PathBuf {
        self.dir.join(format!("{kind}-ca.crl"))
    }

    /// `DIR/devices`.
    pub fn devices_dir(&self) -> PathBuf {
        self.dir.join("devices")
    }

    /// `DIR/nodes`.
    pub fn nodes_dir(&self) -> PathBuf {
        self.dir.join("nodes")
    }

    /// `DIR/devices/<ID>.crt`.
    pub fn device_cert_path(&self, id: &str) -> PathBuf {
        self.devices_dir().join(format!("{id}.crt"))
    }

    /// `DIR/devices/<ID>.key`.
    pub fn device_key_path(&self, id: &str) -> PathBuf {
        self.devices_dir().join(format!("{id}.key"))
    }

    /// `DIR/nodes/<NAME>.crt`.
    pub fn node_cert_path(&self, name: &str) -> PathBuf {
        self.nodes_dir().join(format!("{name}.crt"))
    }

    /// `DIR/nodes/<NAME>.key`.
    pub fn node_key_path(&self, name: &str) -> PathBuf {
        self.nodes_dir().join(format!("{name}.key"))
    }

    /// The certificate path of a subject of either kind.
    pub fn cert_path(&self, kind: CaKind, subject: &str) -> PathBuf {
        match kind {
            CaKind::Device => self.device_cert_path(subject),
            CaKind::Node => self.node_cert_path(subject),
        }
    }

    /// The key path of a subject of either kind.
    pub fn key_path(&self, kind: CaKind, subject: &str) -> PathBuf {
        match kind {
            CaKind::Device => self.device_key_path(subject),
            CaKind::Node => self.node_key_path(subject),
        }
    }

    /// `DIR/index.json`.
    pub fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(".lock")
    }
}

/// One issued certificate in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Which CA issued it.
    pub kind: CaKind,
    /// Device id or node name (the CN); unique across the ledger.
    pub subject: String,
    /// The certificate's serial.
    pub serial: SerialHex,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Whether it has been revoked.
    pub revoked: bool,
    /// When it was revoked.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl LedgerEntry {
    fn new(kind: CaKind, issued: &IssuedCert) -> Self {
        LedgerEntry {
            kind,
            subject: issued.subject.clone(),
            serial: issued.serial.clone(),
            not_after: issued.not_after,
            revoked: false,
            revoked_at: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct LedgerFile {
    version: u32,
    certs: Vec<LedgerEntry>,
}

/// The outcome of [`CertDir::revoke`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The ledger entry, now marked revoked.
    pub entry: LedgerEntry,
    /// It was revoked before this call (the CRL was rewritten anyway).
    pub already_revoked: bool,
}

/// An opened certificate store: both CAs loaded, plus the ledger.
#[derive(Debug)]
pub struct CertDir {
    paths: CertPaths,
    device_ca: CertificateAuthority,
    node_ca: CertificateAuthority,
    ledger: Vec<LedgerEntry>,
}

impl CertDir {
    /// Create a new store in `dir` (created if missing): both CAs, empty CRLs, an
    /// empty ledger and the `devices/` and `nodes/` directories.
    ///
    /// Fails with [`CertError::AlreadyInitialized`] if any CA, CRL or ledger file is
    /// already there, and with [`CertError::NotWritable`] if `dir` cannot be created.
    pub fn init(dir: impl AsRef<Path>) -> Result<Self, CertError> {
        let paths = CertPaths::new(dir.as_ref());
        fsutil::ensure_dir(paths.dir())?;
        let _lock = StoreLock::acquire(&paths.lock_path())?;
        let mut existing = CaKind::ALL
            .iter()
            .flat_map(|k| {
                [
                    paths.ca_cert_path(*k),
                    paths.ca_key_path(*k),
                    paths.crl_path(*k),
                ]
            })
            .chain([paths.index_path()]);
        if let Some(path) = existing.find(|p| fsutil::exists(p)) {
            return Err(CertError::AlreadyInitialized { path });
        }
        fsutil::ensure_dir(&paths.devices_dir())?;
        fsutil::ensure_dir(&paths.nodes_dir())?;

        let device_ca = CertificateAuthority::generate(CaKind::Device)?;
        let node_ca = CertificateAuthority::generate(CaKind::Node)?;
        let now = OffsetDateTime::now_utc();
        for ca in [&device_ca, &node_ca] {
            let kind = ca.kind();
            let key = ca.key_pem();
            fsutil::write_new(
                &paths.ca_key_path(kind),
                key.as_bytes(),
                FileMode::Secret,
                false,
            )?;
            fsutil::write_new(
                &paths.ca_cert_path(kind),
                ca.cert_pem().as_bytes(),
                FileMode::Public,
                false,
            )?;
            let crl = ca.crl(&[], now)?;
            fsutil::write_new(
                &paths.crl_path(kind),
                crl.as_bytes(),
                FileMode::Public,
                false,
            )?;
        }
        let dir = CertDir {
            paths,
            device_ca,
            node_ca,
            ledger: Vec::new(),
        };
        fsutil::write_new(
            &dir.paths.index_path(),
            &ledger_bytes(&dir.ledger)?,
            FileMode::Public,
            false,
        )?;
        fsutil::sync_dir(dir.paths.dir())?;
        Ok(dir)
    }

    /// Open an existing store: load both CAs (checking each key matches its
    /// certificate) and the ledger.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CertError> {
        let paths = CertPaths::new(dir.as_ref());
        let load = |kind: CaKind| -> Result<CertificateAuthority, CertError> {
            let cert = fsutil::read_ca_file(&paths.ca_cert_path(kind))?;
            let key = fsutil::read_ca_file(&paths.ca_key_path(kind))?;
            CertificateAuthority::from_pem_with_kind(&cert, &key, kind)
        };
        let device_ca = load(CaKind::Device)?;
        let node_ca = load(CaKind::Node)?;
        let ledger = read_ledger(&paths.index_path())?;
        Ok(CertDir {
            paths,
            device_ca,
            node_ca,
            ledger,
        })
    }

    /// The file layout of this store.
    pub fn paths(&self) -> &CertPaths {
        &self.paths
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        self.paths.dir()
    }

    /// The device or node CA.
    pub fn ca(&self, kind: CaKind) -> &CertificateAuthority {
        match kind {
            CaKind::Device => &self.device_ca,
            CaKind::Node => &self.node_ca,
        }
    }

    /// Every issued certificate, in issue order (as of the last operation).
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.ledger
    }

    /// The ledger entry with this serial, or else with this subject.
    pub fn find(&self, serial_or_id: &str) -> Option<&LedgerEntry> {
        find_index(&self.ledger, serial_or_id).map(|i| &self.ledger[i])
    }

    /// `DIR/device-ca.crt` or `DIR/node-ca.crt`.
    pub fn ca_cert_path(&self, kind: CaKind) -> PathBuf {
        self.paths.ca_cert_path(kind)
    }

    /// `DIR/device-ca.key` or `DIR/node-ca.key`.
    pub fn ca_key_path(&self, kind: CaKind) -> PathBuf {
        self.paths.ca_key_path(kind)
    }

    /// `DIR/device-ca.crl` or `DIR/node-ca.crl`.
    pub fn crl_path(&self, kind: CaKind) -> PathBuf {
        self.paths.crl_path(kind)
    }

    /// `DIR/devices/<ID>.crt`.
    pub fn device_cert_path(&self, id: &str) -> PathBuf {
        self.paths.device_cert_path(id)
    }

    /// `DIR/devices/<ID>.key`.
    pub fn device_key_path(&self, id: &str) -> PathBuf {
        self.paths.device_key_path(id)
    }

    /// `DIR/nodes/<NAME>.crt`.
    pub fn node_cert_path(&self, name: &str) -> PathBuf {
        self.paths.node_cert_path(name)
    }

    /// `DIR/nodes/<NAME>.key`.
    pub fn node_key_path(&self, name: &str) -> PathBuf {
        self.paths.node_key_path(name)
    }

    /// `DIR/index.json`.
    pub fn index_path(&self) -> PathBuf {
        self.paths.index_path()
    }

    /// Issue a device certificate valid for [`DEFAULT_DEVICE_DAYS`] and write it to
    /// `DIR/devices/<ID>.{crt,key}`.
    pub fn issue_device(&mut self, id: &str) -> Result<IssuedCert, CertError> {
        self.issue_device_with(id, Validity::days_from_now(DEFAULT_DEVICE_DAYS))
    }

    /// Like [`issue_device`](Self::issue_device) with an explicit validity.
    ///
    /// Fails with [`CertError::DuplicateId`] if the id is already in the ledger (as
    /// a device or a node) and with [`CertError::FileExists`] if its files exist.
    pub fn issue_device_with(
        &mut self,
        id: &str,
        validity: Validity,
    ) -> Result<IssuedCert, CertError> {
        validate_device_id(id)?;
        self.issue_one(CaKind::Device, id, |ca| ca.issue_device(id, validity))
    }

    /// Issue a node certificate valid for [`DEFAULT_NODE_DAYS`] with the given SANs
    /// (DNS names or IP addresses) and write it to `DIR/nodes/<NAME>.{crt,key}`.
    pub fn issue_node(&mut self, name: &str, sans: &[String]) -> Result<IssuedCert, CertError> {
        self.issue_node_with(name, sans, Validity::days_from_now(DEFAULT_NODE_DAYS))
    }

    /// Like [`issue_node`](Self::issue_node) with an explicit validity.
    pub fn issue_node_with(
        &mut self,
        name: &str,
        sans: &[String],
        validity: Validity,
    ) -> Result<IssuedCert, CertError> {
        validate_device_id(name)?;
        self.issue_one(CaKind::Node, name, |ca| ca.issue_node(name, sans, validity))
    }

    fn issue_one(
        &mut self,
        kind: CaKind,
        subject: &str,
        issue: impl FnOnce(&CertificateAuthority) -> Result<IssuedCert, CertError>,
    ) -> Result<IssuedCert, CertError> {
        let _lock = StoreLock::acquire(&self.paths.lock_path())?;
        self.ledger = read_ledger(&self.paths.index_path())?;
        if self.ledger.iter().any(|e| e.subject == subject) {
            return Err(CertError::DuplicateId {
                id: subject.to_owned(),
            });
        }
        let (cert_path, key_path) = (
            self.paths.cert_path(kind, subject),
            self.paths.key_path(kind, subject),
        );
        if let Some(path) = [&cert_path, &key_path]
            .into_iter()
            .find(|p| fsutil::exists(p))
        {
            return Err(CertError::FileExists { path: path.clone() });
        }
        let issued = issue(self.ca(kind))?;
        let parent = cert_path.parent().map(Path::to_owned).unwrap_or_default();
        fsutil::ensure_dir(&parent)?;
        write_pair(&cert_path, &key_path, &issued)?;
        fsutil::sync_dir(&parent)?;
        self.ledger.push(LedgerEntry::new(kind, &issued));
        self.write_ledger()?;
        Ok(issued)
    }

    /// Issue `count` device certificates with ids `<prefix>-<n>`, `n` from 1,
    /// zero-padded to the number of digits of `count` (`tv-00001` … `tv-10000`),
    /// valid for [`DEFAULT_DEVICE_DAYS`]. `progress` is called with the number done
    /// so far, from worker threads.
    ///
    /// Nothing is issued if any id is already taken. The work is spread over the
    /// available cores; the ledger is written once at the end (also when a write
    /// fails midway, so the certificates that were written are recorded).
    pub fn issue_devices(
        &mut self,
        count: usize,
        prefix: &str,
        progress: impl Fn(usize) + Sync,
    ) -> Result<Vec<LedgerEntry>, CertError> {
        self.issue_devices_with(
            count,
            prefix,
            Validity::days_from_now(DEFAULT_DEVICE_DAYS),
            progress,
        )
    }

    /// Like [`issue_devices`](Self::issue_devices) with an explicit validity.
    pub fn issue_devices_with(
        &mut self,
        count: usize,
        prefix: &str,
        validity: Validity,
        progress: impl Fn(usize) + Sync,
    ) -> Result<Vec<LedgerEntry>, CertError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let width = count.to_string().len();
        let ids: Vec<String> = (1..=count)
            .map(|n| format!("{prefix}-{n:0width$}"))
            .collect();
        // All ids have the same shape and length: checking one checks them all.
        validate_device_id(&ids[0])?;

        let _lock = StoreLock::acquire(&self.paths.lock_path())?;
        self.ledger = read_ledger(&self.paths.index_path())?;
        let taken: HashSet<&str> = self.ledger.iter().map(|e| e.subject.as_str()).collect();
        if let Some(id) = ids.iter().find(|id| taken.contains(id.as_str())) {
            return Err(CertError::DuplicateId { id: id.clone() });
        }
        fsutil::ensure_dir(&self.paths.devices_dir())?;
        for id in &ids {
            for path in [
                self.paths.device_cert_path(id),
                self.paths.device_key_path(id),
            ] {
                if fsutil::exists(&path) {
                    return Err(CertError::FileExists { path });
                }
            }
        }

        // Key generation and signing are CPU-bound, the writes fsync: a couple of
        // workers per core keeps both busy.
        let workers = std::thread::available_parallelism()
            .map(|n| n.get() * 4)
            .unwrap_or(2)
            .min(count);
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<CertError>> = Mutex::new(None);
        let ca = &self.device_ca;
        let paths = &self.paths;
        // Entries go into the shared list as soon as their files are written, so
        // a worker that panics (the progress callback is the caller's code)
        // loses nothing: what is on disk is always recorded in the ledger.
        let issued: Mutex<Vec<(usize, LedgerEntry)>> = Mutex::new(Vec::new());
        let panic = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        while !failed.load(Ordering::Relaxed) {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(id) = ids.get(i) else { break };
                            let result = ca.issue_device(id, validity).and_then(|cert| {
                                write_pair(
                                    &paths.device_cert_path(id),
                                    &paths.device_key_path(id),
                                    &cert,
                                )?;
                                Ok(cert)
                            });
                            match result {
                                Ok(cert) => {
                                    issued
                                        .lock()
                                        .push((i, LedgerEntry::new(CaKind::Device, &cert)));
                                    progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                                }
                                Err(e) => {
                                    failed.store(true, Ordering::Relaxed);
                                    let mut slot = first_error.lock();
                                    slot.get_or_insert(e);
                                    break;
                                }
                            }
                        }
                    })
                })
                .collect();
            // The first worker panic, re-raised once the ledger is written.
            // Every handle is joined (an unjoined panicked thread would make
            // `scope` panic before the ledger is written).
            let mut first = None;
            for h in handles {
                if let Err(p) = h.join() {
                    first.get_or_insert(p);
                }
            }
            first
        });
        let mut issued = issued.into_inner();
        issued.sort_by_key(|(i, _)| *i);
        let entries: Vec<LedgerEntry> = issued.into_iter().map(|(_, e)| e).collect();

        // Record what was written even if something failed.
        let synced = fsutil::sync_dir(&self.paths.devices_dir());
        self.ledger.extend(entries.iter().cloned());
        self.write_ledger()?;
        synced?;
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
        if let Some(e) = first_error.into_inner() {
            return Err(e);
        }
        Ok(entries)
    }

    /// Revoke a certificate by serial (hex) or by device id / node name: mark it in
    /// the ledger and rewrite the issuing CA's CRL. By id or name, every
    /// certificate of that subject is revoked (a renewed subject has several);
    /// the returned entry is the latest.
    ///
    /// Revoking an already revoked certificate succeeds and rewrites the CRL (so a
    /// revoke interrupted between the ledger and the CRL can simply be repeated).
    pub fn revoke(&mut self, serial_or_id: &str) -> Result<Revocation, CertError> {
        let _lock = StoreLock::acquire(&self.paths.lock_path())?;
        self.ledger = read_ledger(&self.paths.index_path())?;
        let index = find_index(&self.ledger, serial_or_id).ok_or_else(|| {
            CertError::UnknownRevocationTarget {
                target: serial_or_id.to_owned(),
            }
        })?;
        let by_serial = self.ledger[index].subject != serial_or_id;
        let subject = self.ledger[index].subject.clone();
        let targets: Vec<usize> = if by_serial {
            vec![index]
        } else {
            (0..self.ledger.len())
                .filter(|&i| self.ledger[i].subject == subject)
                .collect()
        };
        let already_revoked = targets.iter().all(|&i| self.ledger[i].revoked);
        if !already_revoked {
            let now = OffsetDateTime::now_utc();
            for &i in &targets {
                let entry = &mut self.ledger[i];
                if !entry.revoked {
                    entry.revoked = true;
                    entry.revoked_at = Some(now.replace_nanosecond(0).unwrap_or(now));
                }
            }
            self.write_ledger()?;
        }
        let latest = targets.last().copied().unwrap_or(index);
        let entry = self.ledger[latest].clone();
        self.write_crl(entry.kind)?;
        Ok(Revocation {
            entry,
            already_revoked,
        })
    }

    /// Rewrite both CRLs from the ledger with a fresh `this_update` (a CRL is valid
    /// for 30 days; run this periodically).
    pub fn refresh_crls(&mut self) -> Result<(), CertError> {
        let _lock = StoreLock::acquire(&self.paths.lock_path())?;
        self.ledger = read_ledger(&self.paths.index_path())?;
        for kind in CaKind::ALL {
            self.write_crl(kind)?;
        }
        Ok(())
    }

    /// Renew `subject`'s certificate (a device id or node name issued by the
    /// `kind` CA): a fresh key and certificate with the same CN (and, for a
    /// node, the same SANs as its current certificate), valid for `validity`,
    /// replacing `DIR/devices/<ID>.{crt,key}` or `DIR/nodes/<NAME>.{crt,key}`.
    /// The ledger gets a second entry for the subject; the previous
    /// certificate is not revoked and stays valid until it expires, so a TV
    /// or node keeps working until it picks the new files up.
    ///
    /// Fails with [`CertError::UnknownSubject`] when the ledger has no such
    /// subject of that kind and with [`CertError::RevokedSubject`] when its
    /// latest certificate is revoked.
    pub fn renew(
        &mut self,
        kind: CaKind,
        subject: &str,
        validity: Validity,
    ) -> Result<IssuedCert, CertError> {
        validate_device_id(subject)?;
        let _lock = StoreLock::acquire(&self.paths.lock_path())?;
        self.ledger = read_ledger(&self.paths.index_path())?;
        let latest = self
            .ledger
            .iter()
            .rev()
            .find(|e| e.subject == subject)
            .filter(|e| e.kind == kind)
            .ok_or_else(|| CertError::UnknownSubject {
                kind,
                subject: subject.to_owned(),
            })?;
        if latest.revoked {
            return Err(CertError::RevokedSubject {
                subject: subject.to_owned(),
            });
        }
        let (cert_path, key_path) = (
            self.paths.cert_path(kind, subject),
            self.paths.key_path(kind, subject),
        );
        let issued = match kind {
            CaKind::Device => self.device_ca.issue_device(subject, validity)?,
            CaKind::Node => {
                let sans = current_sans(&cert_path)?;
                self.node_ca.issue_node(subject, &sans, validity)?
            }
        };
        // Key first: a reader that sees the new certificate with the old key
        // finds they do not match and keeps what it has until both are new.
        fsutil::write_replace(&key_path, issued.key_pem.as_bytes(), FileMode::Secret)?;
        fsutil::write_replace(&cert_path, issued.cert_pem.as_bytes(), FileMode::Public)?;
        self.ledger.push(LedgerEntry::new(kind, &issued));
        self.write_ledger()?;
        Ok(issued)
    }

    /// Copy what node `name` needs into `out` (created 0700 if missing), in
    /// this store's layout: `device-ca.crt`, `device-ca.crl`, `node-ca.crt`,
    /// `node-ca.crl`, `nodes/<NAME>.crt` and `nodes/<NAME>.key` (0600). No CA
    /// key and no ledger. Files already in `out` are replaced (each
    /// atomically): run it again after a revocation, a CRL refresh or a
    /// renewal and the node reloads what changed. Returns the files written.
    ///
    /// Fails with [`CertError::UnknownSubject`] when `name` is not a node of
    /// the ledger, [`CertError::ExportIntoStore`] when `out` is this store.
    pub fn export_node(&self, name: &str, out: &Path) -> Result<Vec<PathBuf>, CertError> {
        validate_device_id(name)?;
        let ledger = read_ledger(&self.paths.index_path())?;
        if !ledger
            .iter()
            .any(|e| e.kind == CaKind::Node && e.subject == name)
        {
            return Err(CertError::UnknownSubject {
                kind: CaKind::Node,
                subject: name.to_owned(),
            });
        }
        if !fsutil::exists(out) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(out)
                .map_err(|source| CertError::NotWritable {
                    path: out.to_owned(),
                    source,
                })?;
        }
        let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
        if same(out, self.paths.dir()) {
            return Err(CertError::ExportIntoStore {
                path: out.to_owned(),
            });
        }
        let to = CertPaths::new(out);
        fsutil::ensure_dir(&to.nodes_dir())?;
        // Each file at the same place in both layouts; key before
        // certificate, as in `renew`.
        let both =
            |path: &dyn Fn(&CertPaths) -> PathBuf, mode| (path(&self.paths), path(&to), mode);
        let mut copies: Vec<(PathBuf, PathBuf, FileMode)> = Vec::new();
        for kind in CaKind::ALL {
            copies.push(both(&|p| p.ca_cert_path(kind), FileMode::Public));
            copies.push(both(&|p| p.crl_path(kind), FileMode::Public));
        }
        copies.push(both(&|p| p.node_key_path(name), FileMode::Secret));
        copies.push(both(&|p| p.node_cert_path(name), FileMode::Public));
        let mut written = Vec::with_capacity(copies.len());
        for (from, dest, mode) in copies {
            let bytes = fs::read(&from).map_err(|source| CertError::Io {
                path: from.clone(),
                source,
            })?;
            fsutil::write_replace(&dest, &bytes, mode)?;
            written.push(dest);
        }
        Ok(written)
    }

    fn write_crl(&self, kind: CaKind) -> Result<(), CertError> {
        let now = OffsetDateTime::now_utc();
        let revoked: Vec<(SerialHex, OffsetDateTime)> = self
            .ledger
            .iter()
            .filter(|e| e.kind == kind && e.revoked)
            .map(|e| (e.serial.clone(), e.revoked_at.unwrap_or(now)))
            .collect();
        let crl = self.ca(kind).crl_with_dates(&revoked, now)?;
        fsutil::write_replace(&self.paths.crl_path(kind), crl.as_bytes(), FileMode::Public)
    }

    fn write_ledger(&self) -> Result<(), CertError> {
        fsutil::write_replace(
            &self.paths.index_path(),
            &ledger_bytes(&self.ledger)?,
            FileMode::Public,
        )
    }
}

/// Write key (0600) then certificate (0644); on failure, remove what was written.
fn write_pair(cert_path: &Path, key_path: &Path, issued: &IssuedCert) -> Result<(), CertError> {
    fsutil::write_new(key_path, issued.key_pem.as_bytes(), FileMode::Secret, false)?;
    if let Err(e) = fsutil::write_new(
        cert_path,
        issued.cert_pem.as_bytes(),
        FileMode::Public,
        false,
    ) {
        let _ = fs::remove_file(key_path);
        return Err(e);
    }
    Ok(())
}

/// The SANs of the certificate in `path`, in the form `issue_node` takes
/// (the DNS and IP names: [`crate::server_names_from_cert`]).
fn current_sans(path: &Path) -> Result<Vec<String>, CertError> {
    let pem = fs::read(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })?;
    let (_, block) =
        x509_parser::pem::parse_x509_pem(&pem).map_err(|e| CertError::InvalidCertificate {
            reason: format!("{} holds no certificate: {e}", path.display()),
        })?;
    crate::server_names_from_cert(&block.contents)
}

fn find_index(ledger: &[LedgerEntry], serial_or_id: &str) -> Option<usize> {
    if let Ok(serial) = serial_or_id.parse::<SerialHex>() {
        if let Some(i) = ledger.iter().position(|e| e.serial == serial) {
            return Some(i);
        }
    }
    // A renewed subject has several entries: the latest is the current one.
    ledger.iter().rposition(|e| e.subject == serial_or_id)
}

fn ledger_bytes(ledger: &[LedgerEntry]) -> Result<Vec<u8>, CertError> {
    #[derive(Serialize)]
    struct LedgerRef<'a> {
        version: u32,
        certs: &'a [LedgerEntry],
    }
    let mut bytes = serde_json::to_vec_pretty(&LedgerRef {
        version: LEDGER_VERSION,
        certs: ledger,
    })
    .map_err(|e| CertError::Ledger {
        path: PathBuf::from("index.json"),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn read_ledger(path: &Path) -> Result<Vec<LedgerEntry>, CertError> {
    let ledger_err = |reason: String| CertError::Ledger {
        path: path.to_owned(),
        reason,
    };
    let bytes = fs::read(path).map_err(|e| ledger_err(e.to_string()))?;
    let file: LedgerFile = serde_json::from_slice(&bytes).map_err(|e| ledger_err(e.to_string()))?;
    if file.version != LEDGER_VERSION {
        return Err(ledger_err(format!(
            "unsupported ledger version {} (expected {LEDGER_VERSION})",
            file.version
        )));
    }
    Ok(file.certs)
}
