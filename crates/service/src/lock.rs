//! One service per database: [`InstanceLock`].

use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use crate::error::{Result, ServiceError};

/// Held for the life of a service. The lock is the operating system's (`flock`), on
/// `<database>.serve.lock`; the file's text (PID and start time) only explains a refusal. It is
/// released when the process ends, however it ends.
#[derive(Debug)]
pub struct InstanceLock {
    _file: std::fs::File,
    path: PathBuf,
}

/// The lock file of the service on `database`.
pub fn lock_path(database: &Path) -> PathBuf {
    let name =
        database.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "syncctl.db".into());
    database.with_file_name(format!("{name}.serve.lock"))
}

impl InstanceLock {
    /// Takes the lock of the service on `database`, writing `pid` and `started` (text) into
    /// it; or says which process holds it.
    pub fn acquire(database: &Path, pid: u32, started: &str) -> Result<Self> {
        let path = lock_path(database);
        let io = |e: std::io::Error| ServiceError::Lock {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(io)?;
                file.rewind().map_err(io)?;
                writeln!(file, "pid={pid}\nstarted={started}").map_err(io)?;
                file.flush().map_err(io)?;
                Ok(Self { _file: file, path })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let field = |k: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                        .map(str::to_owned)
                        .unwrap_or_else(|| "unknown".into())
                };
                Err(ServiceError::AlreadyRunning {
                    path: path.display().to_string(),
                    pid: field("pid"),
                    started: field("started"),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let first = InstanceLock::acquire(&db, 4242, "2026-01-01T00:00:00Z").unwrap();
        let err = InstanceLock::acquire(&db, 1, "later").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("pid 4242"), "{msg}");
        assert!(msg.contains("2026-01-01T00:00:00Z"), "{msg}");
        drop(first);
        InstanceLock::acquire(&db, 2, "now").unwrap();
    }
}
