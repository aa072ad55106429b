//! Import staging: from a connector's stream of batches to connector-space writes.
//!
//! One import run:
//! 1. decides the mode: a delta without a usable watermark, or after a full import that did not
//!    complete, runs as a full import (and says so in run history);
//! 2. opens a run-history row, and for a full import marks the connector as owing one, so that a
//!    crash half-way is followed by another full import rather than a delta from an old mark;
//! 3. reads batches while the connector produces the next page, diffs each object by anchor and
//!    content hash, and writes what changed in one transaction per batch, with its watermark;
//! 4. for a full import (or a delta whose source re-listed everything), marks every object that
//!    was not seen as deleted, then stores the final watermark and clears the owed full import.
//!
//! An object with a bad value (text that is not UTF-8) is a per-object error: the run goes on,
//! the object keeps its stored copy, and the run ends `completed-with-errors`. An object that
//! cannot be anchored at all (an objectGUID that is not 16 bytes) could be any object of the
//! connector space, so the run stops there with `stopped-invalid-anchor`: what was read before it
//! is stored, no sweep runs, and the watermark stays before it.

use std::collections::{BTreeMap, HashMap, HashSet};

use syncctl_core::{
    Anchor, Clock, Connector, ConnectorFault, CsObject, FaultKind, ImportBatch, ImportChange, ImportMode,
    ImportRequest, ImportSummary,
};
use syncctl_store::{
    ConnectorId, CsIndexEntry, CsWrite, RunCounts, RunError, RunId, RunStatus, Severity, Store,
};
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span, warn};

use crate::background::Background;
use crate::closed_on_error;
use crate::error::Result;

/// Knobs of an import run.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The run stops with `stopped-error-limit` after this many per-object errors (Entra
    /// Connect's 5,000 by default).
    pub error_limit: i64,
    /// Batches queued between the connector and the writer.
    pub queue_depth: usize,
    /// Deletes per transaction in the deletion sweep.
    pub sweep_batch: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self { error_limit: 5000, queue_depth: 4, sweep_batch: 5000 }
    }
}

/// Told about progress, for a progress bar.
pub trait ImportProgress: Send + Sync {
    /// `objects` source objects have been processed so far, `changes` of them changed.
    fn advance(&self, objects: u64, changes: u64);
}

/// Progress that goes nowhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;
impl ImportProgress for NoProgress {
    fn advance(&self, _: u64, _: u64) {}
}

/// What an import run did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImportReport {
    /// The run-history id.
    pub run_id: RunId,
    /// The connector.
    pub connector: String,
    /// The profile that actually ran.
    pub profile: ImportMode,
    /// The final status.
    pub status: String,
    /// Counters.
    pub counts: RunCounts,
    /// The method the connector used.
    pub method: String,
    /// Pages read.
    pub pages: u64,
    /// Notes (fallbacks, skipped sweep, the fault that stopped it).
    pub notes: Vec<String>,
    /// The fault that stopped the run, if any.
    pub fault: Option<String>,
}

impl ImportReport {
    /// True for `success` and `completed-with-errors`.
    pub fn completed(&self) -> bool {
        !self.status.starts_with("stopped-")
    }
}

/// Runs one import of `connector` into the store.
pub async fn run_import(
    store: &Store,
    connector: &mut dyn Connector,
    connector_kind: &str,
    requested: ImportMode,
    options: &ImportOptions,
    clock: &dyn Clock,
    progress: &dyn ImportProgress,
) -> Result<ImportReport> {
    let name = connector.name().to_owned();
    let span = info_span!("import", connector = %name, requested = %requested);
    async move {
        // One writing run at a time per database: two imports of one connector would interleave
        // their watermarks and sweeps.
        let _lock = store.lock_runs()?;
        let cid = store.ensure_connector(&name, connector_kind, clock.now_ms()).await?;
        let stored = store.watermark(cid).await?;
        let mut notes = Vec::new();
        let mut mode = requested;
        if mode == ImportMode::Delta {
            match &stored {
                Some(s) if s.full_import_required => {
                    notes.push(
                        "the last full import did not complete: this delta import ran as a full import"
                            .into(),
                    );
                    mode = ImportMode::Full;
                }
                Some(s) if s.watermark.is_some() => {}
                _ => {
                    notes.push("no watermark yet: this delta import ran as a full import".into());
                    mode = ImportMode::Full;
                }
            }
        }
        let run = store.start_run(&mode.to_string(), Some(cid), &name, clock.now_ms()).await?;
        let outcome: Result<ImportReport> = async {
            let mut state = RunState {
                run,
                cid,
                counts: RunCounts::default(),
                seen: HashSet::new(),
                processed: 0,
                references_followed: 0,
                force_full: false,
                unanchorable: None,
            };
            let mut attempt = 0;
            loop {
                attempt += 1;
                if mode == ImportMode::Full {
                    store.set_full_import_required(cid, true, clock.now_ms()).await?;
                }
                let request = ImportRequest {
                    mode,
                    watermark: stored
                        .as_ref()
                        .and_then(|s| s.watermark.clone())
                        .filter(|_| mode == ImportMode::Delta),
                };
                let outcome =
                    import_pass(store, connector, request, &mut state, options, clock, progress).await?;
                match outcome {
                    PassOutcome::Done(summary) => {
                        return finish(store, state, mode, summary, notes, options, clock, &name).await;
                    }
                    PassOutcome::Unanchorable(summary, message) => {
                        // An object without a usable anchor cannot be told apart from any other: no
                        // sweep, no watermark past it. What was read before it is stored, and the
                        // run stops, naming it; once it is fixed in the directory, the next run
                        // (a full import, or the same delta again) goes through.
                        notes.push(message);
                        notes.push(
                            "stopped at an object without a usable anchor: fix it in the directory and run the import again"
                                .into(),
                        );
                        let status = "stopped-invalid-anchor";
                        warn!(status, "import stopped");
                        store
                            .finish_run(run, status, Some(&summary.method), summary.pages as i64, &notes.join("; "), clock.now_ms())
                            .await?;
                        return Ok(report(&state, &name, mode, status, summary, notes, None));
                    }
                    PassOutcome::ErrorLimit(summary) => {
                        notes.push(format!(
                            "stopped after {} per-object errors (the error limit)",
                            state.counts.errors
                        ));
                        let status = RunStatus::STOPPED_ERROR_LIMIT;
                        store
                            .finish_run(
                                run,
                                status,
                                Some(&summary.method),
                                summary.pages as i64,
                                &notes.join("; "),
                                clock.now_ms(),
                            )
                            .await?;
                        return Ok(report(&state, &name, mode, status, summary, notes, None));
                    }
                    PassOutcome::Fault(fault)
                        if fault.kind == FaultKind::WatermarkInvalid
                            && mode == ImportMode::Delta
                            && attempt == 1 =>
                    {
                        warn!(reason = %fault, "the watermark is not usable; running a full import instead");
                        notes.push(format!("delta import fell back to a full import: {fault}"));
                        mode = ImportMode::Full;
                        store.set_run_profile(run, &mode.to_string()).await?;
                        continue;
                    }
                    PassOutcome::Fault(fault) => {
                        let status = fault.kind.run_status();
                        warn!(status, error = %fault, "import stopped");
                        notes.push(fault.to_string());
                        store.finish_run(run, status, None, 0, &notes.join("; "), clock.now_ms()).await?;
                        return Ok(report(
                            &state,
                            &name,
                            mode,
                            status,
                            ImportSummary::default(),
                            notes,
                            Some(fault.to_string()),
                        ));
                    }
                }
            }
        }
        .await;
        closed_on_error(store, run, outcome, clock).await
    }
    .instrument(span)
    .await
}

struct RunState {
    run: RunId,
    cid: ConnectorId,
    counts: RunCounts,
    /// Anchors seen in this run (for the deletion sweep).
    seen: HashSet<String>,
    processed: u64,
    /// Reference values rewritten because the object they point to was renamed or moved.
    references_followed: u64,
    /// A delta could not apply a change: the next import must be a full one.
    force_full: bool,
    /// The first object the source sent without a usable anchor: the run stops there.
    unanchorable: Option<String>,
}

/// Why the writer stopped reading early.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    No,
    ErrorLimit,
    Unanchorable(String),
}

enum PassOutcome {
    Done(ImportSummary),
    ErrorLimit(ImportSummary),
    /// The source sent an object that has no usable anchor.
    Unanchorable(ImportSummary, String),
    Fault(ConnectorFault),
}

fn report(
    state: &RunState,
    name: &str,
    mode: ImportMode,
    status: &str,
    summary: ImportSummary,
    notes: Vec<String>,
    fault: Option<String>,
) -> ImportReport {
    ImportReport {
        run_id: state.run,
        connector: name.to_owned(),
        profile: mode,
        status: status.to_owned(),
        counts: state.counts,
        method: summary.method,
        pages: summary.pages,
        notes,
        fault,
    }
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    store: &Store,
    mut state: RunState,
    mode: ImportMode,
    summary: ImportSummary,
    mut notes: Vec<String>,
    options: &ImportOptions,
    clock: &dyn Clock,
    name: &str,
) -> Result<ImportReport> {
    notes.extend(summary.notes.iter().cloned());
    if state.force_full {
        notes.push(
            "a change could not be applied: the next import of this connector runs as a full import".into(),
        );
    }
    if state.references_followed > 0 {
        notes.push(format!(
            "{} reference values (member, manager, ...) followed the objects they point to to their new DN",
            state.references_followed
        ));
    }
    if mode == ImportMode::Full || summary.sweep_unseen {
        sweep(store, &mut state, options, clock).await?;
    }
    if mode == ImportMode::Full {
        store
            .complete_full_import(state.cid, summary.final_watermark.as_ref(), state.run, clock.now_ms())
            .await?;
    } else if let Some(w) = &summary.final_watermark {
        store.put_watermark(state.cid, w, state.run, clock.now_ms()).await?;
    }
    let status = if state.counts.errors > 0 { RunStatus::COMPLETED_WITH_ERRORS } else { RunStatus::SUCCESS };
    store
        .finish_run(
            state.run,
            status,
            Some(&summary.method),
            summary.pages as i64,
            &notes.join("; "),
            clock.now_ms(),
        )
        .await?;
    info!(
        status,
        adds = state.counts.adds,
        updates = state.counts.updates,
        renames = state.counts.renames,
        deletes = state.counts.deletes,
        errors = state.counts.errors,
        "import finished"
    );
    Ok(report(&state, name, mode, status, summary, notes, None))
}

async fn sweep(
    store: &Store,
    state: &mut RunState,
    options: &ImportOptions,
    clock: &dyn Clock,
) -> Result<()> {
    let mut gone = store.cs_present_anchors(state.cid, |a| !state.seen.contains(a)).await?;
    gone.sort_unstable();
    for chunk in gone.chunks(options.sweep_batch.max(1)) {
        let mut writes = Vec::with_capacity(chunk.len());
        for a in chunk {
            if let Ok(anchor) = Anchor::new(a.clone()) {
                writes.push(CsWrite::Delete { anchor });
            }
        }
        let counts = RunCounts { deletes: writes.len() as i64, ..Default::default() };
        store.write_import_batch(state.cid, state.run, writes, &[], &counts, None, clock.now_ms()).await?;
        state.counts.add(&counts);
    }
    Ok(())
}

async fn import_pass(
    store: &Store,
    connector: &mut dyn Connector,
    request: ImportRequest,
    state: &mut RunState,
    options: &ImportOptions,
    clock: &dyn Clock,
    progress: &dyn ImportProgress,
) -> Result<PassOutcome> {
    let mode = request.mode;
    let (tx, rx) = mpsc::channel::<ImportBatch>(options.queue_depth.max(1));
    // For a full import the whole index is diffed in memory; a delta looks up only the anchors
    // its batches mention, so its cost follows the size of the change.
    let mut index: Option<HashMap<String, CsIndexEntry>> =
        if mode == ImportMode::Full { Some(store.load_cs_index(state.cid).await?) } else { None };
    let producer = connector.import(request, tx);
    let consumer = async {
        // The receiver lives in this future: when the writer stops early (error limit, store
        // failure) it is dropped, and the connector's next send fails instead of waiting.
        let mut rx = rx;
        // The write of the previous batch, committing on another worker while the next batch is
        // diffed and serialized. It is settled before anything reads the store and before the
        // next batch's write starts, so batches commit in order and every read sees the batches
        // before it. Dropped unsettled (the import failed or was cancelled), it is aborted: its
        // batch and its watermark then land together or not at all.
        let mut inflight = Background::new("the write of an import batch");
        let mut stop = Stop::No;
        // A page taken from the queue that could not join the batch before it.
        let mut held: Option<ImportBatch> = None;
        loop {
            let mut batch = match held.take() {
                Some(page) => page,
                None => match rx.recv().await {
                    Some(page) => page,
                    None => break,
                },
            };
            if index.is_some() && only_present(&batch) {
                // A full import writes the pages already waiting in one transaction: each
                // commit rewrites every index page its inserts touched (random anchors touch
                // most leaves of their indexes), so five pages a commit write about a fifth
                // of what five commits do. Only pages of whole objects are merged: applied
                // together they give what they give one after the other. A page with anything
                // else (an invalid object, a move, an increment, a delete) stays on its own,
                // so the error limit and an unanchorable object stop the run before the pages
                // after it, as do a delta's batches, which are never merged.
                while batch.changes.len() < FULL_IMPORT_BATCH {
                    let Ok(next) = rx.try_recv() else { break };
                    if !only_present(&next) {
                        held = Some(next);
                        break;
                    }
                    batch.changes.extend(next.changes);
                    if next.watermark.is_some() {
                        batch.watermark = next.watermark;
                    }
                }
            }
            apply_batch(store, batch, state, index.as_mut(), clock, &mut inflight).await?;
            progress.advance(state.processed, state.counts.changes() as u64);
            if let Some(message) = &state.unanchorable {
                stop = Stop::Unanchorable(message.clone());
                break;
            }
            if state.counts.errors >= options.error_limit {
                stop = Stop::ErrorLimit;
                break;
            }
        }
        inflight.settle().await?;
        Ok::<Stop, crate::EngineError>(stop)
    };
    let (produced, consumed) = tokio::join!(producer, consumer);
    let stop = consumed?;
    let summary = match produced {
        Ok(summary) => summary,
        Err(fault) if stop != Stop::No && fault.kind == FaultKind::Cancelled => ImportSummary::default(),
        Err(fault) => return Ok(PassOutcome::Fault(fault)),
    };
    Ok(match stop {
        Stop::No => PassOutcome::Done(summary),
        Stop::ErrorLimit => PassOutcome::ErrorLimit(summary),
        Stop::Unanchorable(message) => PassOutcome::Unanchorable(summary, message),
    })
}

/// How many objects a full import gathers into one transaction from the connector's pages
/// already waiting, before it stops taking more (see `import_pass`).
const FULL_IMPORT_BATCH: usize = 5000;

/// A page of whole objects only: one that can be merged with its neighbours.
fn only_present(batch: &ImportBatch) -> bool {
    batch.changes.iter().all(|c| matches!(c, ImportChange::Present(_)))
}

/// The state of an anchor as the diff sees it.
struct Known {
    hash: syncctl_core::ContentHash,
    dn_norm: String,
    present: bool,
}

async fn apply_batch(
    store: &Store,
    batch: ImportBatch,
    state: &mut RunState,
    index: Option<&mut HashMap<String, CsIndexEntry>>,
    clock: &dyn Clock,
    inflight: &mut Background<()>,
) -> Result<()> {
    let delta = index.is_none();
    // What the connector space holds for the anchors of this batch.
    let needs_attrs: Vec<&str> = batch
        .changes
        .iter()
        .filter_map(|c| match c {
            ImportChange::Incremental { object, .. } => Some(object.anchor.as_str()),
            ImportChange::Present(o) if delta => Some(o.anchor.as_str()),
            ImportChange::Deleted { anchor, .. } if delta => Some(anchor.as_str()),
            ImportChange::Unchanged { anchor, dn: Some(_) } if delta => Some(anchor.as_str()),
            _ => None,
        })
        .collect();
    let stored = if needs_attrs.is_empty() {
        HashMap::new()
    } else {
        inflight.settle().await?;
        store.cs_objects_by_anchor(state.cid, &needs_attrs).await?
    };
    let mut pending: BTreeMap<String, Known> = BTreeMap::new();
    let mut writes: BTreeMap<String, CsWrite> = BTreeMap::new();
    let mut errors: Vec<RunError> = Vec::new();
    let mut counts = RunCounts::default();
    let mut renames: Vec<(String, String)> = Vec::new();
    let mut moved: Vec<(Anchor, syncctl_core::Dn, String)> = Vec::new();
    let mut increments_failed = false;

    let lookup = |anchor: &str,
                  pending: &BTreeMap<String, Known>,
                  index: &Option<&mut HashMap<String, CsIndexEntry>>|
     -> Option<Known> {
        if let Some(k) = pending.get(anchor) {
            return Some(Known { hash: k.hash, dn_norm: k.dn_norm.clone(), present: k.present });
        }
        if let Some(ix) = index {
            return ix.get(anchor).map(|e| Known {
                hash: e.hash,
                dn_norm: e.dn_norm.clone(),
                present: e.present,
            });
        }
        stored.get(anchor).map(|s| Known {
            hash: s.content_hash,
            dn_norm: syncctl_core::Dn::parse(&s.dn).map(|d| d.normalized().to_owned()).unwrap_or_default(),
            present: s.state == "present",
        })
    };

    // Renames in this batch, old normalized DN -> new DN: membership increments arrive with the
    // new DN of a member renamed in the same round, while the stored values hold the old one.
    let batch_renames: HashMap<String, String> = batch
        .changes
        .iter()
        .filter_map(|c| match c {
            ImportChange::Present(o) | ImportChange::Incremental { object: o, .. } => {
                let k = lookup(o.anchor.as_str(), &pending, &index)?;
                (k.present && k.dn_norm != o.dn.normalized()).then(|| (k.dn_norm, o.dn.as_str().to_owned()))
            }
            _ => None,
        })
        .collect();

    for change in batch.changes {
        state.processed += 1;
        let object: CsObject = match change {
            ImportChange::Present(o) => o,
            ImportChange::Incremental { mut object, value_deltas } => {
                let base = stored.get(object.anchor.as_str()).filter(|s| s.state == "present");
                let mut failed = false;
                for (name, delta) in value_deltas {
                    let mut values = base
                        .and_then(|s| s.attributes.get_name(&name).cloned())
                        .unwrap_or_else(|| syncctl_core::AttrValues::empty(delta.add.syntax()));
                    if let syncctl_core::AttrValues::Reference(refs) = &mut values {
                        for v in refs.iter_mut() {
                            if let Some(new) = syncctl_core::Dn::parse(v)
                                .ok()
                                .and_then(|d| batch_renames.get(d.normalized()))
                            {
                                v.clone_from(new);
                            }
                        }
                    }
                    if !values.apply_delta(&delta.add, &delta.remove) {
                        errors.push(RunError {
                            level: Severity::Error,
                            anchor: Some(object.anchor.to_string()),
                            dn: Some(object.dn.to_string()),
                            kind: "invalid-value".into(),
                            message: format!(
                                "{}: the change to `{name}` has another syntax than the stored values; \
                                 the object is left as it was and the next import runs as a full import",
                                object.dn
                            ),
                        });
                        counts.errors += 1;
                        failed = true;
                        break;
                    }
                    object.attributes.insert(name, values);
                }
                if failed {
                    // Written without the attribute, the object would drift from the source for
                    // good; it keeps its stored state and a full import is owed.
                    increments_failed = true;
                    state.seen.insert(object.anchor.to_string());
                    continue;
                }
                object
            }
            ImportChange::Deleted { anchor, .. } => {
                if let Some(k) = lookup(anchor.as_str(), &pending, &index)
                    && k.present
                {
                    counts.deletes += 1;
                    pending.insert(
                        anchor.to_string(),
                        Known { hash: k.hash, dn_norm: k.dn_norm, present: false },
                    );
                    writes.insert(anchor.to_string(), CsWrite::Delete { anchor });
                }
                continue;
            }
            ImportChange::Unchanged { anchor, dn } => {
                let first_sight = state.seen.insert(anchor.to_string());
                let known = lookup(anchor.as_str(), &pending, &index).filter(|k| k.present);
                match (dn, known) {
                    (Some(dn), Some(k)) if k.dn_norm != dn.normalized() => {
                        moved.push((anchor, dn, k.dn_norm))
                    }
                    (_, Some(_)) if first_sight => counts.unchanged += 1,
                    _ => {}
                }
                continue;
            }
            ImportChange::Invalid(e) => {
                counts.errors += 1;
                match &e.anchor {
                    // Known object, bad value: keep the stored copy (not swept as deleted).
                    Some(a) => {
                        state.seen.insert(a.to_string());
                    }
                    // Unknown object: it may be one the connector space holds; the run stops.
                    None => {
                        if state.unanchorable.is_none() {
                            state.unanchorable = Some(e.message.clone());
                        }
                    }
                }
                errors.push(RunError {
                    level: Severity::Error,
                    anchor: e.anchor.map(|a| a.to_string()),
                    dn: Some(e.dn),
                    kind: e.kind,
                    message: e.message,
                });
                continue;
            }
        };
        let mut object = object;
        object.normalize();
        let (hash, attributes_json) = object.hash_and_serialize();
        let anchor = object.anchor.to_string();
        state.seen.insert(anchor.clone());
        let dn_norm = object.dn.normalized().to_owned();
        match lookup(&anchor, &pending, &index) {
            Some(k) if k.present && k.hash == hash => {
                counts.unchanged += 1;
                continue;
            }
            Some(k) if k.present => {
                if k.dn_norm != dn_norm {
                    counts.renames += 1;
                    renames.push((k.dn_norm.clone(), object.dn.as_str().to_owned()));
                } else {
                    counts.updates += 1;
                }
            }
            _ => counts.adds += 1,
        }
        pending.insert(anchor.clone(), Known { hash, dn_norm, present: true });
        writes.insert(anchor, CsWrite::Upsert { object, hash, attributes_json });
    }

    // Objects listed unchanged under a new DN moved with their container: same content, new DN.
    if !moved.is_empty() {
        let missing: Vec<&str> =
            moved.iter().map(|(a, _, _)| a.as_str()).filter(|a| !stored.contains_key(*a)).collect();
        let fetched = if missing.is_empty() {
            HashMap::new()
        } else {
            inflight.settle().await?;
            store.cs_objects_by_anchor(state.cid, &missing).await?
        };
        for (anchor, dn, old_norm) in moved {
            let Some(mut object) =
                stored.get(anchor.as_str()).or_else(|| fetched.get(anchor.as_str())).and_then(to_cs_object)
            else {
                continue;
            };
            object.dn = dn;
            object.normalize();
            let (hash, attributes_json) = object.hash_and_serialize();
            counts.renames += 1;
            renames.push((old_norm, object.dn.as_str().to_owned()));
            pending.insert(
                anchor.to_string(),
                Known { hash, dn_norm: object.dn.normalized().to_owned(), present: true },
            );
            writes.insert(anchor.to_string(), CsWrite::Upsert { object, hash, attributes_json });
        }
    }

    // A full import re-reads every referring object anyway; a delta may not (AD rewrites a
    // group's member values when a member is renamed, without reporting the group). The
    // rewritten referrers go into the same transaction as the batch and its watermark.
    if delta && !renames.is_empty() {
        inflight.settle().await?;
        for (anchor, object) in referrers_of_renamed(store, state, &renames, &writes).await? {
            let (hash, attributes_json) = object.hash_and_serialize();
            pending.insert(
                anchor.clone(),
                Known { hash, dn_norm: object.dn.normalized().to_owned(), present: true },
            );
            writes.insert(anchor, CsWrite::Upsert { object, hash, attributes_json });
        }
    }
    if increments_failed {
        // Before the batch (and its watermark) commits: a crash in between still owes the full
        // import.
        inflight.settle().await?;
        store.set_full_import_required(state.cid, true, clock.now_ms()).await?;
        state.force_full = true;
    }

    let writes: Vec<CsWrite> = writes.into_values().collect();
    // A batch with an unanchorable object keeps the watermark where it was: the next run reads
    // that object again.
    let watermark = if state.unanchorable.is_some() { None } else { batch.watermark };
    // The index and the counts move on now: the next batch is diffed against this one while
    // it commits. Should the write fail, the run fails with it and neither outlives the run.
    if let Some(ix) = index {
        for (anchor, k) in pending {
            ix.insert(anchor, CsIndexEntry { hash: k.hash, dn_norm: k.dn_norm, present: k.present });
        }
    }
    state.counts.add(&counts);
    let (store, cid, run, now) = (store.clone(), state.cid, state.run, clock.now_ms());
    let write = async move {
        let started = std::time::Instant::now();
        let n = writes.len();
        store.write_import_batch(cid, run, writes, &errors, &counts, watermark.as_ref(), now).await?;
        tracing::debug!(writes = n, elapsed_ms = started.elapsed().as_millis() as u64, "batch written");
        Ok(())
    };
    inflight.start(write).await
}

/// The objects (not already written in this batch) whose reference values point to the old DN
/// of a renamed or moved object, with those values rewritten to the new DN.
async fn referrers_of_renamed(
    store: &Store,
    state: &mut RunState,
    renames: &[(String, String)],
    writes: &BTreeMap<String, CsWrite>,
) -> Result<BTreeMap<String, CsObject>> {
    let mut changed: BTreeMap<String, CsObject> = BTreeMap::new();
    for (old_norm, new_dn) in renames {
        for stored in store.referrers(state.cid, old_norm).await? {
            if writes.contains_key(&stored.anchor) {
                // Read from the source in this batch: its values are current.
                continue;
            }
            let object = match changed.remove(&stored.anchor) {
                Some(o) => Some(o),
                None => to_cs_object(&stored),
            };
            let Some(mut object) = object else { continue };
            let names: Vec<syncctl_core::AttrName> =
                object.attributes.iter().map(|(n, _)| n.clone()).collect();
            for name in names {
                if let Some(syncctl_core::AttrValues::Reference(values)) = object.attributes.get_mut(&name) {
                    for v in values.iter_mut() {
                        let norm =
                            syncctl_core::Dn::parse(v).map(|d| d.normalized().to_owned()).unwrap_or_default();
                        if norm == *old_norm {
                            v.clone_from(new_dn);
                            state.references_followed += 1;
                        }
                    }
                }
            }
            object.normalize();
            changed.insert(stored.anchor.clone(), object);
        }
    }
    Ok(changed)
}

fn to_cs_object(s: &syncctl_store::StoredCsObject) -> Option<CsObject> {
    Some(CsObject {
        anchor: Anchor::new(s.anchor.clone()).ok()?,
        immutable_id: s.immutable_id.as_deref().and_then(|i| syncctl_core::ImmutableId::from_base64(i).ok()),
        dn: syncctl_core::Dn::parse(&s.dn).ok()?,
        object_class: s.object_class.clone(),
        attributes: s.attributes.clone(),
    })
}

#[cfg(test)]
mod tests;
