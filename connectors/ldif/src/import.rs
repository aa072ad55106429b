//! The import: the file's records, decoded as the LDAP connector decodes search entries, sent
//! to the engine in batches.
//!
//! A full import streams the file and reports every object in scope; the engine sweeps the
//! rest. The watermark (`ldif`) is the BLAKE3 hash of the bytes read, with a fingerprint of the
//! scope settings: a delta request against the same file and scope reads nothing, any other
//! delta request reads the whole file and asks for the sweep (LDIF has no change log).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use syncctl_connector_ldap::directory::{Decoded, RawEntry, Scope, decode, split_description};
use syncctl_core::{
    ConnectorFault, FaultKind, ImportBatch, ImportChange, ImportMode, ImportRequest, ImportSummary,
    ObjectError, Watermark,
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::LdifConfig;
use crate::parser::{LdifReader, LdifRecord};

/// The watermark kind of this connector.
pub const WATERMARK_KIND: &str = "ldif";
/// The run-history method of this connector.
const METHOD: &str = "ldif";
/// Read buffer size.
const BUFFER: usize = 256 * 1024;

/// One import, with everything it needs moved onto the blocking pool.
pub struct Job {
    pub path: PathBuf,
    pub endpoint: String,
    pub scope: Arc<Scope>,
    pub fingerprint: String,
}

/// A fingerprint of what decides the connector space besides the file: the scope settings and
/// this build's version (whose schema catalog types the values).
pub fn fingerprint(config: &LdifConfig) -> String {
    let text = format!("{} {:?}", env!("CARGO_PKG_VERSION"), config.scope_settings());
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

impl Job {
    fn fault(&self, kind: FaultKind, message: impl Into<String>) -> ConnectorFault {
        ConnectorFault::new(kind, &self.endpoint, message)
    }

    fn open(&self) -> Result<File, ConnectorFault> {
        File::open(&self.path)
            .map_err(|e| self.fault(FaultKind::Config, format!("cannot open the LDIF file: {e}")))
    }

    fn send(&self, tx: &mpsc::Sender<ImportBatch>, changes: Vec<ImportChange>) -> Result<(), ConnectorFault> {
        tx.blocking_send(ImportBatch { changes, watermark: None })
            .map_err(|_| self.fault(FaultKind::Cancelled, "the engine stopped reading"))
    }

    fn watermark(&self, hash: &blake3::Hash) -> Watermark {
        Watermark {
            kind: WATERMARK_KIND.into(),
            value: hash.to_hex().as_bytes().to_vec(),
            server: self.endpoint.clone(),
            extra: BTreeMap::from([("scope".to_owned(), self.fingerprint.clone())]),
        }
    }

    /// True when `mark` is this connector's mark of exactly this file's bytes and scope.
    fn unchanged(&self, mark: &Watermark) -> Result<bool, ConnectorFault> {
        if mark.kind != WATERMARK_KIND
            || mark.server != self.endpoint
            || mark.extra.get("scope") != Some(&self.fingerprint)
        {
            return Ok(false);
        }
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_reader(self.open()?)
            .map_err(|e| self.fault(FaultKind::Protocol, format!("cannot read the LDIF file: {e}")))?;
        Ok(hasher.finalize().to_hex().as_bytes() == mark.value.as_slice())
    }

    /// Runs the import (blocking).
    pub fn run(
        self,
        request: ImportRequest,
        tx: &mpsc::Sender<ImportBatch>,
    ) -> Result<ImportSummary, ConnectorFault> {
        let mut notes = Vec::new();
        if request.mode == ImportMode::Delta {
            if let Some(mark) = &request.watermark
                && self.unchanged(mark)?
            {
                info!("the file has not changed since the last import");
                return Ok(ImportSummary {
                    final_watermark: None,
                    sweep_unseen: false,
                    method: METHOD.into(),
                    pages: 0,
                    notes: vec![
                        "the LDIF file is unchanged since the last import (same BLAKE3 hash and scope)"
                            .into(),
                    ],
                });
            }
            notes.push(
                "LDIF has no change log: the delta import read the whole file, and objects it no longer holds are deleted"
                    .into(),
            );
        }
        let file = self.open()?;
        let hashing = Hashing { inner: file, hasher: blake3::Hasher::new() };
        let mut reader = LdifReader::new(BufReader::with_capacity(BUFFER, hashing));
        let mut changes = Vec::with_capacity(crate::BATCH_SIZE);
        let (mut records, mut objects, mut skipped) = (0u64, 0u64, 0u64);
        for record in reader.by_ref() {
            let record = record.map_err(|e| self.fault(FaultKind::Protocol, e.to_string()))?;
            records += 1;
            match self.change(record) {
                Some(change) => {
                    if matches!(change, ImportChange::Present(_)) {
                        objects += 1;
                    }
                    changes.push(change);
                }
                None => skipped += 1,
            }
            if changes.len() >= crate::BATCH_SIZE {
                self.send(tx, std::mem::replace(&mut changes, Vec::with_capacity(crate::BATCH_SIZE)))?;
            }
        }
        if !changes.is_empty() {
            self.send(tx, changes)?;
        }
        let hash = reader.into_inner().into_inner().hasher.finalize();
        info!(records, objects, skipped, "LDIF file read");
        Ok(ImportSummary {
            final_watermark: Some(self.watermark(&hash)),
            sweep_unseen: true,
            method: METHOD.into(),
            pages: records,
            notes,
        })
    }

    /// What one record becomes: an object in scope, a per-object error, or nothing (out of
    /// scope, or a tombstone).
    fn change(&self, record: LdifRecord) -> Option<ImportChange> {
        let incomplete = incomplete_ranges(&record);
        let line = record.line;
        let raw = RawEntry { dn: record.dn, attrs: record.attrs };
        match decode(raw, &self.scope) {
            Decoded::Object { object, .. } => match incomplete {
                None => Some(ImportChange::Present(object)),
                Some(message) => {
                    let dn = object.dn.as_str().to_owned();
                    let message = format!("{dn} (line {line}): {message}");
                    warn!(%dn, "{message}");
                    Some(ImportChange::Invalid(ObjectError {
                        anchor: Some(object.anchor),
                        dn,
                        kind: "incomplete-value".into(),
                        message,
                    }))
                }
            },
            Decoded::Invalid(mut e) => {
                e.message = format!("{} (line {line})", e.message);
                warn!(dn = %e.dn, "{}", e.message);
                Some(ImportChange::Invalid(e))
            }
            Decoded::OutOfScope { .. } | Decoded::Deleted { .. } => None,
        }
    }
}

/// Ranged attributes (`member;range=0-1499`) whose ranges do not cover every value: a live
/// read follows the ranges, an export that holds only some of them cannot be completed.
fn incomplete_ranges(record: &LdifRecord) -> Option<String> {
    let mut ranges: BTreeMap<String, Vec<(u64, Option<u64>)>> = BTreeMap::new();
    for (desc, _) in &record.attrs {
        if let (name, Some(range)) = split_description(desc) {
            ranges.entry(name.to_ascii_lowercase()).or_default().push((range.low, range.high));
        }
    }
    for (name, mut list) in ranges {
        list.sort_unstable();
        // Complete when the ranges run from 0 without a gap or overlap to one ending in `*`.
        let mut expected = Some(0u64);
        let mut complete = true;
        for &(low, high) in &list {
            let next = match high {
                None => None,
                Some(h) => h.checked_add(1),
            };
            if expected != Some(low) || (high.is_some() && next.is_none()) {
                complete = false;
                break;
            }
            expected = next;
        }
        if !complete || expected.is_some() {
            let shown: Vec<String> = list
                .iter()
                .map(|(l, h)| format!("{l}-{}", h.map(|h| h.to_string()).unwrap_or_else(|| "*".into())))
                .collect();
            return Some(format!(
                "the file holds only some values of `{name}` (ranges {}): export every range (ldapsearch prints \
                 only the first one the server returns)",
                shown.join(", ")
            ));
        }
    }
    None
}
