//! The WAL checkpointer: copies the pages the writer has committed to the write-ahead log into
//! the database file, on a thread and a connection of its own.
//!
//! SQLite's own checkpoint runs inside the commit that crosses `wal_autocheckpoint` pages, so
//! the writer stops there while the pages are copied; the import's and the sync's next batch
//! wait for that commit. Here a passive checkpoint (one that never waits for a reader or the
//! writer, and never blocks them) runs on another thread, while the writer goes on. The pool's
//! connections keep a much higher `wal_autocheckpoint` only as a backstop, should this thread
//! fall behind. A checkpoint that copied everything lets the next write start the log again from
//! its beginning, so the log stays short and a read's search of it stays cheap.
//!
//! Must not: write anything but a checkpoint, or hold the database open after the store closes.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Result, StoreError};

/// How often the log is looked at while the writer writes. Measured on the cloud connector's
/// sync after R1 at 100,000 objects: 5, 20, 100 and 300 ms gave the same time, within 0.7 s.
const BUSY_INTERVAL: Duration = Duration::from_millis(50);
/// How often it is looked at once the log has been copied whole (between runs of `syncctl
/// serve`, say): a look at an idle log reads a few bytes of shared memory.
const IDLE_INTERVAL: Duration = Duration::from_millis(100);

/// The checkpoint thread of a database file.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    /// Set to stop the thread; the condition variable wakes it.
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts the checkpoint thread of a database the pool has created (in WAL mode).
    pub(crate) fn start(path: &Path, location: &str) -> Result<Arc<Self>> {
        use rusqlite::OpenFlags;
        let open = |e| StoreError::OpenReader { location: location.to_owned(), source: e };
        let conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open)?;
        // The checkpoint copies frames without the page cache; a small one is plenty.
        conn.execute_batch("PRAGMA cache_size = -256; PRAGMA synchronous = NORMAL;").map_err(open)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let database = location.to_owned();
        let thread = std::thread::Builder::new()
            .name("syncctl-checkpoint".into())
            .spawn(move || run(&conn, &signal, &database))
            .map_err(|e| StoreError::Checkpointer { location: location.to_owned(), detail: e.to_string() })?;
        Ok(Arc::new(Self { stop, thread: Mutex::new(Some(thread)) }))
    }

    /// Stops the thread and waits for the checkpoint in progress, if any, to end.
    pub(crate) fn stop(&self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take() {
            // A panic in the thread has already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread: a passive checkpoint, then a wait, until told to stop.
fn run(conn: &rusqlite::Connection, stop: &(Mutex<bool>, Condvar), location: &str) {
    let (flag, wake) = stop;
    let mut interval = BUSY_INTERVAL;
    loop {
        {
            let stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
            let (stopped, _) = wake
                .wait_timeout_while(stopped, interval, |stopped| !*stopped)
                .unwrap_or_else(PoisonError::into_inner);
            if *stopped {
                return;
            }
        }
        // (busy, frames in the log, frames copied): busy only when another checkpoint runs.
        let outcome = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        interval = match outcome {
            // Everything copied (or an empty log): nothing to do until the writer writes again.
            Ok((frames, copied)) if frames <= copied => IDLE_INTERVAL,
            Ok(_) => BUSY_INTERVAL,
            Err(e) => {
                // The backstop (the writer's own checkpoint) keeps the log bounded meanwhile.
                tracing::debug!(database = location, error = %e, "background checkpoint failed");
                IDLE_INTERVAL
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use crate::{CsWrite, RunCounts, Store};
    use syncctl_core::{Anchor, AttrValues, Attributes, CsObject, ImmutableId};

    fn upsert(i: usize) -> CsWrite {
        let mut attributes = Attributes::new();
        attributes.insert("userPrincipalName", AttrValues::String(vec![format!("user{i}@example.com")]));
        attributes.insert("description", AttrValues::String(vec![format!("{i:0>200}")]));
        let mut guid = [0u8; 16];
        guid[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let mut object = CsObject {
            anchor: Anchor::new(format!("anchor-{i}")).unwrap(),
            immutable_id: Some(ImmutableId::from_object_guid(&guid).unwrap()),
            dn: syncctl_core::Dn::parse(&format!("CN=User {i},OU=Staff,DC=example,DC=com")).unwrap(),
            object_class: "user".into(),
            attributes,
        };
        object.normalize();
        let (hash, attributes_json) = object.hash_and_serialize();
        CsWrite::Upsert { hash, attributes_json, object }
    }

    #[tokio::test]
    async fn the_log_reaches_the_database_file_without_the_writer_stopping_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let store = Store::open(&path).await.unwrap();
        let c = store.ensure_connector("ad", "ldap-ad", 1).await.unwrap();
        let run = store.start_run("full-import", Some(c), "ad", 10).await.unwrap();
        let file_len = || std::fs::metadata(&path).unwrap().len();
        let before = file_len();
        // About 1,000 pages: far below the writer's own checkpoint (40,000 pages), so only the
        // checkpoint thread can copy them into the database file.
        let writes: Vec<CsWrite> = (0..3000).map(upsert).collect();
        store.write_import_batch(c, run, writes, &[], &RunCounts::default(), None, 11).await.unwrap();
        let log = dir.path().join("m.db-wal");
        assert!(std::fs::metadata(&log).unwrap().len() > 1_000_000, "the batch went to the log first");
        let mut copied = false;
        for _ in 0..1200 {
            if file_len() > before + 1_000_000 {
                copied = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(copied, "the database file still has {} bytes (had {before})", file_len());
        // What was copied reads back whole, and the store closes with its thread stopped.
        assert_eq!(store.cs_changed_since(c, 0, 5000).await.unwrap().len(), 3000);
        store.close().await;
    }
}
