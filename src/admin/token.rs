//! The admin token: read from `[admin] token_file`, or generated once into `state_dir`
//! (mode 0600) and reused on later starts, so an admin API is never open by default and
//! `fulcrum ctl` on the same machine finds the token without being told.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Config;

/// The generated token's file name inside `state_dir`.
pub const GENERATED: &str = "admin.token";

/// Where the token lives for `config`: its `token_file`, or the generated one.
pub fn path(config: &Config) -> PathBuf {
    match &config.admin.token_file {
        Some(p) => config.resolve_path(p),
        None => config.state_dir().join(GENERATED),
    }
}

/// Why there is no admin token to serve with or to call with. Start-up refuses to run
/// without one, and `fulcrum ctl` adds how to get one; both print it as is.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the admin token {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file holds nothing but whitespace.
    #[error("the admin token file {} is empty", path.display())]
    Empty { path: PathBuf },
    #[error("cannot read /dev/urandom for an admin token: {0}")]
    Random(#[source] std::io::Error),
    #[error("cannot write the admin token {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads a token file (surrounding whitespace ignored; empty is an error).
pub fn read(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_string())
}

/// The token fulcrum serves with: the configured file, else the generated one (created on
/// first start). Logs where it is.
pub fn load_or_create(config: &Config) -> Result<String, TokenError> {
    let path = path(config);
    if config.admin.token_file.is_some() || path.exists() {
        let token = read(&path)?;
        warn_if_readable_by_others(&path);
        tracing::info!("admin token: {}", path.display());
        return Ok(token);
    }
    let token = write_private(&path, &generate()?)?;
    tracing::info!(
        "generated an admin token in {} (mode 0600); `fulcrum ctl` reads it from there",
        path.display()
    );
    Ok(token)
}

/// 32 bytes from the kernel's CSPRNG, hex-encoded.
fn generate() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(TokenError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `token` to `path` readable by the owner only: a temporary file created with mode
/// 0600, then hard-linked into place, so the token is never visible to others nor seen half
/// written. When two starts race, the link fails for the second, which reads the winner's.
fn write_private(path: &Path, token: &str) -> Result<String, TokenError> {
    let fail = |source: std::io::Error| TokenError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension(format!("tmp.{}.{}", std::process::id(), fastrand::u64(..)));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    let written = f
        .write_all(format!("{token}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(token.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(fail(e)),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "the admin token {} is readable by other users; chmod 600 it",
            path.display()
        );
    }
}

/// Compares two tokens in time that does not depend on where they differ, so the token
/// cannot be guessed byte by byte from response times. (The length is not secret.)
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares() {
        assert!(equal(b"abc", b"abc"));
        assert!(!equal(b"abc", b"abd"));
        assert!(!equal(b"abc", b"abcd"));
    }

    #[test]
    fn generated_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::config::parse_str(
            "[[frontends]]\nname = \"f\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\n\
             [[backends.b.servers]]\nname = \"s\"\naddress = \"127.0.0.1:1\"\n",
            &dir.path().join("f.toml"),
        )
        .unwrap();
        cfg.global.state_dir = dir.path().join("state");
        let first = load_or_create(&cfg).unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(path(&cfg)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&cfg).unwrap(), first);
    }
}
