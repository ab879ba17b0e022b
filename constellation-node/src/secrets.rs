//! Secrets on disk and the admin bearer tokens.
//!
//! * [`check_private`]: a file holding a secret (the node's TLS key, a token
//!   file) must give no permission to group or others (`mode & 0o077 == 0`);
//!   the node refuses to start otherwise, naming the file, its mode and the
//!   `chmod` that fixes it.
//! * [`read_token_file`]: a token from the first line of such a file.
//! * [`BearerToken`]: a token of at least [`MIN_TOKEN_BYTES`] bytes, kept as
//!   its SHA-256 digest and compared in constant time (digests of equal
//!   length compared with `subtle`, so neither the bytes nor the length of
//!   the configured token leak through timing).
//!
//! Tokens come only from files: an environment variable is readable in
//! `/proc/<pid>/environ` and inherited by every child process.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// The shortest bearer token accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 32;

/// Why a secret was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read (or its metadata not read).
    #[error("reading the {what} {path}: {source}")]
    Read {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file grants permissions to group or others.
    #[error(
        "the {what} {path} has mode {mode:04o}: group and others must have no access \
         (run `chmod 600 {path}`)"
    )]
    Exposed {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token is shorter than [`MIN_TOKEN_BYTES`] (or empty).
    #[error(
        "the {what} is {len} bytes long; at least {MIN_TOKEN_BYTES} are required \
         (e.g. `openssl rand -hex 32`)"
    )]
    TooShort {
        /// What the token is for.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
}

/// Refuses `path` unless group and others have no permission on it.
pub fn check_private(path: &Path, what: &'static str) -> Result<(), SecretError> {
    let meta = std::fs::metadata(path).map_err(|source| SecretError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Exposed {
            what,
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// A bearer token (see the module docs).
#[derive(Clone)]
pub struct BearerToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl BearerToken {
    /// A token from its text (surrounding blanks ignored); shorter than
    /// [`MIN_TOKEN_BYTES`] is refused.
    pub fn new(text: &str, what: &'static str) -> Result<Self, SecretError> {
        let t = text.trim();
        if t.len() < MIN_TOKEN_BYTES {
            return Err(SecretError::TooShort { what, len: t.len() });
        }
        Ok(Self {
            digest: sha256(t.as_bytes()),
        })
    }

    /// Whether `given` is this token, in time independent of both.
    pub fn matches(&self, given: &[u8]) -> bool {
        bool::from(sha256(given).ct_eq(&self.digest))
    }
}

/// The token on the first line of `path`, which must be private
/// ([`check_private`]) and hold at least [`MIN_TOKEN_BYTES`] bytes.
pub fn read_token_file(path: &Path, what: &'static str) -> Result<BearerToken, SecretError> {
    check_private(path, what)?;
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    BearerToken::new(text.lines().next().unwrap_or(""), what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tokens_are_refused_when_short_or_exposed_and_compared_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let long = "a".repeat(MIN_TOKEN_BYTES);
        std::fs::write(&path, format!("{long}\nignored\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let t = read_token_file(&path, "admin token file").expect("a private 32-byte token");
        assert!(t.matches(long.as_bytes()));
        assert!(
            !t.matches(&long.as_bytes()[1..]),
            "a prefix is not the token"
        );
        assert!(!t.matches(format!("{long}a").as_bytes()));
        assert!(!t.matches(b""));
        assert!(!format!("{t:?}").contains(&long), "Debug hides the token");
        for mode in [0o640, 0o604, 0o644, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let e = read_token_file(&path, "admin token file").expect_err("exposed");
            assert!(
                matches!(e, SecretError::Exposed { mode: m, .. } if m == mode),
                "{mode:o}: {e}"
            );
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, "short\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        let e = read_token_file(&path, "admin token file").expect_err("short");
        assert!(matches!(e, SecretError::TooShort { len: 5, .. }), "{e}");
        assert!(matches!(
            read_token_file(&dir.path().join("none"), "admin token file"),
            Err(SecretError::Read { .. })
        ));
    }
}
