//! Certificates for load runs. Device certificates are bulk-issued
//! (`CertDir::issue_devices`, as `omega-certs issue-devices`) into the
//! certificate directory of the CA the node trusts, under the prefix
//! `load<N>` for a run of N devices, and reused by every later run of N
//! devices against that CA (the ledger says they exist). Revoked devices
//! (`--faults`) are a batch of their own (`revoked<M>`), revoked once in that
//! directory's CRL; wrong-CA devices get certificates from a CA made for the
//! run and never written anywhere.

use std::path::Path;

use anyhow::{bail, Context, Result};
use omega_certs::{CaKind, CertDir, CertificateAuthority, Validity};
use omega_transport::quic::{client_config, TlsIdentity, TrustAnchor};

/// The node certificate's name and the names it is valid for, in a local PKI.
pub const LOCAL_NODE: &str = "node-1";

/// The certificate directory `--local` uses, kept at `dir` between runs (made
/// on first use: both CAs, an empty CRL, a node certificate for localhost).
/// The CRLs are re-signed with today's date on every call.
pub fn local_certs(dir: &Path) -> Result<CertDir> {
    let mut certs = if dir.join("index.json").is_file() {
        CertDir::open(dir).with_context(|| format!("opening {}", dir.display()))?
    } else {
        let mut c = CertDir::init(dir).with_context(|| format!("creating {}", dir.display()))?;
        c.issue_node(LOCAL_NODE, &["localhost".into(), "127.0.0.1".into()])
            .context("issuing the node certificate")?;
        c
    };
    certs.refresh_crls().context("re-signing the CRLs")?;
    Ok(certs)
}

/// The trust anchor devices check the node's certificate against.
pub fn node_anchor(certs: &CertDir) -> Result<TrustAnchor> {
    TrustAnchor::from_pem(certs.ca(CaKind::Node).cert_pem().as_bytes(), &[])
        .context("the node CA certificate")
}

/// The ids `issue_devices(count, prefix)` gives.
fn batch_ids(prefix: &str, count: usize) -> Vec<String> {
    let width = count.to_string().len();
    (1..=count)
        .map(|n| format!("{prefix}-{n:0width$}"))
        .collect()
}

/// The ids of the batch `prefix` of `count` devices in `certs`, issued now
/// unless an earlier run did. `progress` is called per certificate issued.
pub fn device_batch(
    certs: &mut CertDir,
    prefix: &str,
    count: usize,
    progress: impl Fn(usize) + Sync,
) -> Result<Vec<String>> {
    let ids = batch_ids(prefix, count);
    let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
        return Ok(ids);
    };
    match (certs.find(first).is_some(), certs.find(last).is_some()) {
        (true, true) => {}
        (false, false) => {
            certs
                .issue_devices(count, prefix, progress)
                .with_context(|| format!("issuing {count} device certificates"))?;
        }
        _ => bail!(
            "{}: the batch {prefix} is incomplete (an interrupted run?); remove the directory",
            certs.dir().display()
        ),
    }
    Ok(ids)
}

/// Revokes every id that is not yet revoked (one CRL write each).
pub fn revoke_all(certs: &mut CertDir, ids: &[String]) -> Result<()> {
    for id in ids {
        if !certs.find(id).is_some_and(|e| e.revoked) {
            certs.revoke(id).with_context(|| format!("revoking {id}"))?;
        }
    }
    Ok(())
}

/// A client configuration per id, from the files in `certs`.
pub fn client_configs(
    certs: &CertDir,
    ids: &[String],
    anchor: &TrustAnchor,
) -> Result<Vec<quinn::ClientConfig>> {
    ids.iter()
        .map(|id| {
            let identity =
                TlsIdentity::from_files(&certs.device_cert_path(id), &certs.device_key_path(id))
                    .with_context(|| format!("device certificate {id}"))?;
            client_config(identity, anchor).with_context(|| format!("client configuration {id}"))
        })
        .collect()
}

/// `count` client configurations with certificates from a device CA made
/// now, which the node does not trust.
pub fn wrong_ca_configs(count: usize, anchor: &TrustAnchor) -> Result<Vec<quinn::ClientConfig>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let ca = CertificateAuthority::generate(CaKind::Device).context("making a stray CA")?;
    (0..count)
        .map(|i| {
            let cert = ca
                .issue_device(&format!("stray-{i}"), Validity::days_from_now(1))
                .context("issuing a stray certificate")?;
            let identity =
                TlsIdentity::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())?;
            Ok(client_config(identity, anchor)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_issued_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pki");
        let mut certs = local_certs(&path).expect("local pki");
        let ids = device_batch(&mut certs, "load3", 3, |_| {}).expect("issue");
        assert_eq!(ids, ["load3-1", "load3-2", "load3-3"]);
        let serial = certs.find("load3-2").expect("issued").serial.clone();
        // A second run opens the same directory and issues nothing.
        let mut again = local_certs(&path).expect("reopen");
        assert_eq!(
            device_batch(&mut again, "load3", 3, |_| panic!("issued again")).expect("reuse"),
            ids
        );
        assert_eq!(again.find("load3-2").expect("kept").serial, serial);
        revoke_all(&mut again, &ids[..1]).expect("revoke");
        revoke_all(&mut again, &ids[..1]).expect("revoke twice");
        assert!(again.find("load3-1").is_some_and(|e| e.revoked));
        let anchor = node_anchor(&again).expect("anchor");
        assert_eq!(
            client_configs(&again, &ids, &anchor)
                .expect("configs")
                .len(),
            3
        );
        assert_eq!(wrong_ca_configs(2, &anchor).expect("stray").len(), 2);
    }
}
