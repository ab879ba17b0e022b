//! Crash-safe file writing for the store: every file is written to a temporary
//! file in the same directory, fsynced, then moved into place (without clobbering
//! for new files, by rename for files that are meant to be replaced), with private
//! keys created 0600 from the start. Also the store lock and CA file reading.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::CertError;

/// Permission bits of a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileMode {
    /// 0600: private keys.
    Secret,
    /// 0644: certificates, CRLs, the ledger.
    Public,
}

impl FileMode {
    fn bits(self) -> u32 {
        match self {
            FileMode::Secret => 0o600,
            FileMode::Public => 0o644,
        }
    }
}

fn not_writable(path: &Path, source: io::Error) -> CertError {
    CertError::NotWritable {
        path: path.to_owned(),
        source,
    }
}

/// Write `bytes` to a fresh temporary file next to `path` and fsync it.
fn write_temp(path: &Path, bytes: &[u8], mode: FileMode) -> Result<PathBuf, CertError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let parent = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode.bits())
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            // Report the directory the caller asked for, not our temp name.
            Err(not_writable(
                if e.kind() == io::ErrorKind::NotFound {
                    parent
                } else {
                    path
                },
                e,
            ))
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Create `path` with `bytes`, crash-safely, failing with
/// [`CertError::FileExists`] if it already exists. With `sync_parent`, the
/// directory entry is fsynced too (bulk writers sync the directory once at the end).
pub(crate) fn write_new(
    path: &Path,
    bytes: &[u8],
    mode: FileMode,
    sync_parent: bool,
) -> Result<(), CertError> {
    let tmp = write_temp(path, bytes, mode)?;
    // A hard link never replaces an existing file: an atomic "create if absent".
    let linked = match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CertError::FileExists {
            path: path.to_owned(),
        }),
        // File systems without hard links: check, then rename.
        Err(_) if fs::symlink_metadata(path).is_ok() => Err(CertError::FileExists {
            path: path.to_owned(),
        }),
        Err(_) => fs::rename(&tmp, path).map_err(|e| not_writable(path, e)),
    };
    let _ = fs::remove_file(&tmp);
    linked?;
    if sync_parent {
        sync_dir(parent_dir(path))?;
    }
    Ok(())
}

/// Replace (or create) `path` with `bytes`, crash-safely: readers see the old or
/// the new content, never a mix.
pub(crate) fn write_replace(path: &Path, bytes: &[u8], mode: FileMode) -> Result<(), CertError> {
    let tmp = write_temp(path, bytes, mode)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(not_writable(path, e));
    }
    sync_dir(parent_dir(path))
}

/// Fsync a directory so renames and links in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), CertError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| not_writable(dir, e))
}

/// Create a directory (and parents) if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), CertError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            // Something that is not a directory is in the way.
            not_writable(
                dir,
                io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "exists but is not a directory",
                ),
            )
        } else {
            not_writable(dir, e)
        }
    })
}

/// Whether anything (file, directory, dangling symlink) is at `path`.
pub(crate) fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Read a CA file: missing → [`CertError::CaMissing`], other failures →
/// [`CertError::CaUnreadable`].
pub(crate) fn read_ca_file(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => CertError::CaMissing {
            path: path.to_owned(),
        },
        _ => CertError::CaUnreadable {
            path: path.to_owned(),
            source: e,
        },
    })
}

/// An exclusive advisory lock on the store, so two `omega-certs` processes do not
/// lose each other's ledger updates. Released on drop.
#[derive(Debug)]
pub(crate) struct StoreLock {
    _file: File,
}

impl StoreLock {
    pub(crate) fn acquire(path: &Path) -> Result<Self, CertError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(|e| not_writable(path, e))?;
        file.lock().map_err(|e| CertError::Io {
            path: path.to_owned(),
            source: e,
        })?;
        Ok(StoreLock { _file: file })
    }
}
