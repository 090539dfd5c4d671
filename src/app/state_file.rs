//! Maintenance state on disk (`state_dir/maintenance.json`), so a restart neither forgets
//! a server that was taken out nor silently puts it back. Written atomically: a temporary
//! file in the same folder, flushed, then renamed over the old one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The file name inside `state_dir`.
pub const FILE_NAME: &str = "maintenance.json";

/// One server out of rotation by hand.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub backend: String,
    pub server: String,
    pub since: SystemTime,
    pub until: SystemTime,
    pub reason: String,
}

/// The file's shape: versioned so a later fulcrum can still read it.
#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    maintenance: Vec<EntryText>,
}

#[derive(Serialize, Deserialize)]
struct EntryText {
    backend: String,
    server: String,
    since: String,
    until: String,
    reason: String,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Writes `entries` as the whole maintenance state.
pub fn save(dir: &Path, entries: &[Entry]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let on_disk = OnDisk {
        version: 1,
        maintenance: entries
            .iter()
            .map(|e| EntryText {
                backend: e.backend.clone(),
                server: e.server.clone(),
                since: humantime::format_rfc3339_seconds(e.since).to_string(),
                until: humantime::format_rfc3339_seconds(e.until).to_string(),
                reason: e.reason.clone(),
            })
            .collect(),
    };
    let text = serde_json::to_vec_pretty(&on_disk).map_err(std::io::Error::other)?;
    // A name of its own per write: even two writers could never share a temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{FILE_NAME}.{}.{n}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path(dir))
}

/// Why the saved maintenance state cannot be restored. Start-up logs it and goes on
/// without the saved windows, so it names the file and what is wrong in it.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file exists but cannot be read (a missing file is no state, not an error).
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid maintenance state: {source}", file.display())]
    Json {
        file: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// An entry's `since` or `until` is not an RFC 3339 time.
    #[error("{}: bad time `{time}`: {source}", file.display())]
    Time {
        file: PathBuf,
        time: String,
        #[source]
        source: humantime::TimestampError,
    },
}

/// Reads the maintenance state; no file means none.
pub fn load(dir: &Path) -> Result<Vec<Entry>, StateFileError> {
    let file = path(dir);
    let text = match std::fs::read(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StateFileError::Read { file, source }),
    };
    let on_disk: OnDisk = match serde_json::from_slice(&text) {
        Ok(d) => d,
        Err(source) => return Err(StateFileError::Json { file, source }),
    };
    on_disk
        .maintenance
        .into_iter()
        .map(|e| {
            let time = |t: &str| {
                humantime::parse_rfc3339(t).map_err(|source| StateFileError::Time {
                    file: file.clone(),
                    time: t.to_string(),
                    source,
                })
            };
            Ok(Entry {
                since: time(&e.since)?,
                until: time(&e.until)?,
                backend: e.backend,
                server: e.server,
                reason: e.reason,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trips_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Vec::new());
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let e = Entry {
            backend: "b".into(),
            server: "s".into(),
            since: t,
            until: t + Duration::from_secs(60),
            reason: "disk swap".into(),
        };
        save(dir.path(), std::slice::from_ref(&e)).unwrap();
        assert_eq!(load(dir.path()).unwrap(), vec![e]);
    }
}
