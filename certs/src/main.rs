//! `omega-certs`: the command line for Omega's certificate store. Thin wiring over
//! the `omega_certs` library: parse arguments, call [`CertDir`], print results.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use omega_certs::{inspect_file, CaKind, CertDir, IssuedCert, Validity};

/// Omega certificate authority: device and node certificates, revocation lists.
///
/// A store directory holds two CAs (device and node), their CRLs, the issued
/// certificates under devices/ and nodes/, and an index.json ledger.
#[derive(Debug, Parser)]
#[command(name = "omega-certs", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct DirArg {
    /// Certificate store directory.
    #[arg(long, value_name = "DIR", env = "OMEGA_CERTS_DIR")]
    dir: PathBuf,
}

/// One device certificate: `issue-device` and `renew-device`.
#[derive(Debug, Args)]
struct DeviceArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Device id (the certificate's CN and the file name).
    #[arg(long, value_name = "ID")]
    id: String,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = omega_certs::DEFAULT_DEVICE_DAYS,
          value_parser = clap::value_parser!(i64).range(1..=36500))]
    days: i64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the device and node CAs, empty CRLs and an empty ledger in DIR.
    ///
    /// Refuses to touch a directory that already holds CA files.
    Init {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Issue one TV client certificate into DIR/devices/ID.{crt,key}.
    ///
    /// The certificate's CN is ID. ID is 1 to 64 characters of A-Z a-z 0-9 . _ - and does not start with '.'
    /// or '-'; it must not have been issued before.
    IssueDevice(DeviceArgs),
    /// Issue one constellation node certificate into DIR/nodes/NAME.{crt,key}.
    ///
    /// NAME follows the same rule as device ids. The certificate is valid for TLS server and client use (nodes dial each other)
    /// for every --san given.
    IssueNode {
        #[command(flatten)]
        dir: DirArg,
        /// Node name (becomes the certificate CN and the file name).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// DNS name or IP address the node is reached at; repeat for several.
        #[arg(long = "san", value_name = "HOST", required = true)]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, value_name = "N", default_value_t = omega_certs::DEFAULT_NODE_DAYS,
              value_parser = clap::value_parser!(i64).range(1..=36500))]
        days: i64,
    },
    /// Issue N device certificates at once, ids P-1 .. P-N (zero-padded).
    ///
    /// Ids are padded to the width of N: --count 10000 --prefix tv gives tv-00001 ..
    /// tv-10000. Nothing is issued if any of the ids already exists. Uses all cores;
    /// the ledger is written once at the end.
    IssueDevices {
        #[command(flatten)]
        dir: DirArg,
        /// How many devices.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        count: u64,
        /// Id prefix.
        #[arg(long, value_name = "P")]
        prefix: String,
        /// Validity in days.
        #[arg(long, value_name = "N", default_value_t = omega_certs::DEFAULT_DEVICE_DAYS,
              value_parser = clap::value_parser!(i64).range(1..=36500))]
        days: i64,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Renew a TV's certificate: a fresh key and certificate with the same id.
    ///
    /// Replaces DIR/devices/ID.{crt,key}; the previous certificate stays valid
    /// until it expires (revoke it if it leaked). The TV uses the new files at
    /// its next sync.
    RenewDevice(DeviceArgs),
    /// Renew a node's certificate: a fresh key and certificate, same name and SANs.
    ///
    /// Replaces DIR/nodes/NAME.{crt,key}; run export-node again to hand the
    /// new files to the node, which reloads them without a restart.
    RenewNode {
        #[command(flatten)]
        dir: DirArg,
        /// Node name.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Validity in days.
        #[arg(long, value_name = "N", default_value_t = omega_certs::DEFAULT_NODE_DAYS,
              value_parser = clap::value_parser!(i64).range(1..=36500))]
        days: i64,
    },
    /// Copy what one node needs into OUT: CA certificates, CRLs, its certificate and key.
    ///
    /// No CA private key and no ledger: `omega-node serve --certs OUT` refuses
    /// a directory holding CA keys. Files in OUT are replaced; run it again
    /// after revoke, refresh-crl or renew-node and the node reloads them.
    ExportNode {
        #[command(flatten)]
        dir: DirArg,
        /// Node name.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The node's certificate directory (created 0700 if missing).
        #[arg(long, value_name = "OUT")]
        out: PathBuf,
    },
    /// Revoke a certificate by serial or id and rewrite its CA's CRL.
    ///
    /// SERIAL_OR_ID is a serial number in hex or a device id / node name. The ledger
    /// is marked and DIR/device-ca.crl or DIR/node-ca.crl is re-signed. Revoking
    /// twice is harmless.
    Revoke {
        #[command(flatten)]
        dir: DirArg,
        /// Serial number (hex, ':' separators allowed) or device id / node name.
        #[arg(value_name = "SERIAL_OR_ID")]
        target: String,
    },
    /// Re-sign both CRLs with a fresh date (CRLs are valid for 30 days).
    RefreshCrl {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Print what a certificate or CRL file (PEM or DER) contains.
    ///
    /// Certificates: subject, issuer, serial, validity, SANs, key usage. CRLs:
    /// issuer, dates, CRL number and the revoked serials.
    Inspect {
        /// The file to read.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omega-certs: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error chain on one line, skipping causes already quoted by their parent.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace('\n', " ")
}

/// `renew-device` / `renew-node`.
fn renewed(dir: &DirArg, kind: CaKind, subject: &str, days: i64) -> anyhow::Result<()> {
    let mut store = CertDir::open(&dir.dir)?;
    let cert = store.renew(kind, subject, Validity::days_from_now(days))?;
    print_issued(&store, "renewed", kind, &cert, None);
    Ok(())
}

/// What `issue-device`, `issue-node` and `renew-*` print about one
/// certificate: its subject and serial, the SANs given (nodes), its two
/// files and its end of validity.
fn print_issued(
    store: &CertDir,
    verb: &str,
    kind: CaKind,
    cert: &IssuedCert,
    sans: Option<&[String]>,
) {
    println!(
        "{verb} {kind} certificate {} serial {}",
        cert.subject, cert.serial
    );
    if let Some(sans) = sans {
        println!("  SANs: {}", sans.join(", "));
    }
    let paths = store.paths();
    println!("  cert: {}", paths.cert_path(kind, &cert.subject).display());
    println!("  key:  {}", paths.key_path(kind, &cert.subject).display());
    println!("  valid until {}", rfc3339(cert.not_after));
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { dir } => {
            let store = CertDir::init(&dir.dir)?;
            println!("initialized certificate store in {}", store.dir().display());
            for kind in CaKind::ALL {
                println!(
                    "  {kind} CA: {} (key {}, CRL {})",
                    store.ca_cert_path(kind).display(),
                    store.paths().ca_key_path(kind).display(),
                    store.crl_path(kind).display()
                );
            }
        }
        Command::IssueDevice(DeviceArgs { dir, id, days }) => {
            let mut store = CertDir::open(&dir.dir)?;
            let cert = store.issue_device_with(&id, Validity::days_from_now(days))?;
            print_issued(&store, "issued", CaKind::Device, &cert, None);
        }
        Command::IssueNode {
            dir,
            name,
            sans,
            days,
        } => {
            let mut store = CertDir::open(&dir.dir)?;
            let cert = store.issue_node_with(&name, &sans, Validity::days_from_now(days))?;
            print_issued(&store, "issued", CaKind::Node, &cert, Some(&sans));
        }
        Command::IssueDevices {
            dir,
            count,
            prefix,
            days,
            quiet,
        } => {
            let count_usize = usize::try_from(count).context("--count is too large")?;
            let mut store = CertDir::open(&dir.dir)?;
            let bar = if quiet {
                ProgressBar::hidden()
            } else {
                ProgressBar::new(count)
            };
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} certificates ({per_sec}, eta {eta})",
            ) {
                bar.set_style(style);
            }
            let started = Instant::now();
            let result = store.issue_devices_with(
                count_usize,
                &prefix,
                Validity::days_from_now(days),
                |_| bar.inc(1),
            );
            bar.finish_and_clear();
            let entries = result?;
            let secs = started.elapsed().as_secs_f64();
            if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                println!(
                    "issued {} device certificates ({} .. {}) in {secs:.1} s into {}",
                    entries.len(),
                    first.subject,
                    last.subject,
                    store.paths().devices_dir().display()
                );
            }
        }
        Command::RenewDevice(DeviceArgs { dir, id, days }) => {
            renewed(&dir, CaKind::Device, &id, days)?;
        }
        Command::RenewNode { dir, name, days } => {
            renewed(&dir, CaKind::Node, &name, days)?;
        }
        Command::ExportNode { dir, name, out } => {
            let store = CertDir::open(&dir.dir)?;
            let written = store.export_node(&name, &out)?;
            println!("exported node {name} into {} (no CA keys):", out.display());
            for path in written {
                println!("  {}", path.display());
            }
        }
        Command::Revoke { dir, target } => {
            let mut store = CertDir::open(&dir.dir)?;
            let r = store.revoke(&target)?;
            let verb = if r.already_revoked {
                "was already revoked"
            } else {
                "revoked"
            };
            println!(
                "{} certificate {} (serial {}) {verb}; CRL rewritten: {}",
                r.entry.kind,
                r.entry.subject,
                r.entry.serial,
                store.crl_path(r.entry.kind).display()
            );
        }
        Command::RefreshCrl { dir } => {
            let mut store = CertDir::open(&dir.dir)?;
            store.refresh_crls()?;
            for kind in CaKind::ALL {
                println!("re-signed {}", store.crl_path(kind).display());
            }
        }
        Command::Inspect { file } => {
            let items = inspect_file(&file)?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("{item}");
            }
        }
    }
    Ok(())
}
