//! The export run profile: pending exports -> the target connector, behind the guards.
//!
//! [`run_export`] first applies the guards: in staging mode nothing is written; when the
//! pending deletes exceed the deletion threshold (a count, 500 by default, and optionally a
//! percentage of the target's objects) the whole export stops before writing anything, with
//! status `stopped-deletion-threshold-exceeded`, the list of held deletes, and an approval
//! token that releases exactly that set of deletes, once (`--approve-deletes TOKEN`). Then it
//! orders the exports so that referenced objects come first (a topological order of the
//! reference graph; cycles are reported and their references deferred), resolves metaverse
//! references to the target's anchors, hands the connector chunks of items, and records a
//! result per pending export. An export stays until an import confirms it: an exported add or
//! delete is never sent twice, an exported update is sent again until the target shows the
//! values.

use std::collections::{BTreeSet, HashMap};

use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use syncctl_core::{Anchor, AttrValues, Clock, Connector, ExportItem, ExportKind};
use syncctl_store::{
    CsId, ExportOperation, ExportResultRow, MvId, PendingExport, RunCounts, RunError, RunId, Severity, Store,
    SyncCsObject,
};
use tracing::{Instrument as _, info, info_span, warn};

use crate::background::Background;
use crate::closed_on_error;
use crate::error::Result;
use crate::sync::{SyncConnector, parse_mv_ref};

#[cfg(test)]
mod tests;

/// The deletion threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct DeletionThreshold {
    /// An export with more pending deletes than this stops (None: no count limit).
    pub count: Option<u64>,
    /// An export whose deletes are more than this percentage of the target's objects stops.
    pub percent: Option<f64>,
}

impl Default for DeletionThreshold {
    fn default() -> Self {
        Self { count: Some(500), percent: None }
    }
}

/// Settings of an export run.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Staging mode: nothing is written.
    pub staging: bool,
    /// The deletion threshold.
    pub threshold: DeletionThreshold,
    /// The approval token of a reviewed set of deletes.
    pub approve_deletes: Option<String>,
    /// Items per call to the connector (the Graph connector keeps several `$batch` requests of
    /// one call in flight, so a call needs enough items to fill them).
    pub chunk: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self { staging: false, threshold: DeletionThreshold::default(), approve_deletes: None, chunk: 1000 }
    }
}

/// What an export run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExportCounts {
    /// Objects created.
    pub adds: i64,
    /// Objects updated.
    pub updates: i64,
    /// Objects deleted.
    pub deletes: i64,
    /// Exports that failed (they stay pending).
    pub failed: i64,
    /// Exports not attempted (staging, a stop, a fault).
    pub held: i64,
    /// Retries the connector reported (each is a warning in run history).
    pub retries: i64,
}

/// The outcome of [`run_export`].
#[derive(Clone, Debug, Serialize)]
pub struct ExportReport {
    /// The run's id.
    pub run_id: RunId,
    /// The target connector.
    pub connector: String,
    /// The run status.
    pub status: String,
    /// What it did.
    pub counts: ExportCounts,
    /// The deletes held by the threshold (what a person recognizes each by).
    pub held_deletes: Vec<String>,
    /// The token that releases exactly the held deletes, once.
    pub approval_token: Option<String>,
    /// Notes for run history.
    pub notes: Vec<String>,
}

/// Runs an export to `target` through `connector`.
pub async fn run_export(
    store: &Store,
    connector: &mut dyn Connector,
    target: &SyncConnector,
    options: &ExportOptions,
    clock: &dyn Clock,
) -> Result<ExportReport> {
    let span = info_span!("export", connector = %target.name, kind = %target.kind);
    async {
        let run = store.start_run("export", Some(target.id), &target.name, clock.now_ms()).await?;
        let outcome: Result<ExportReport> = async {
            let mut report = ExportReport {
                run_id: run,
                connector: target.name.clone(),
                status: "success".into(),
                counts: ExportCounts::default(),
                held_deletes: Vec::new(),
                approval_token: None,
                notes: Vec::new(),
            };
            // An exported add or delete waits for the import that confirms it (sending it again
            // would create the object twice, or delete what is already gone); updates go again
            // until an import shows their values.
            // Only what ordering and the guards need is kept of each export; a chunk's changes are
            // read when its turn comes.
            let pending: Vec<Head> = store
                .pending_exports_each(Some(target.id), |p| {
                    Ok((!(p.operation != ExportOperation::Update && p.status == "exported")).then(|| Head::of(&p)))
                })
                .await?
                .into_iter()
                .flatten()
                .collect();
            let deletes: Vec<&Head> = pending.iter().filter(|p| p.operation == ExportOperation::Delete).collect();
            let delete_keys: Vec<String> = {
                let mut k: Vec<String> = deletes.iter().map(|p| p.target_key.clone()).collect();
                k.sort();
                k
            };
            if options.staging {
                report.status = "success".into();
                report.counts.held = pending.len() as i64;
                report.notes.push(format!(
                    "staging mode: nothing was written ({} pending exports kept for review)",
                    pending.len()
                ));
                return finish(store, report, clock).await;
            }
            // The deletion threshold (the count of present objects is read only when there are
            // deletes: it walks the whole connector space, which a delta with none must not do).
            let present = if deletes.is_empty() { 0 } else { store.present_count(target.id).await? };
            let over_count = options.threshold.count.is_some_and(|c| deletes.len() as u64 > c);
            let over_percent = options.threshold.percent.is_some_and(|p| {
                present > 0 && (deletes.len() as f64) * 100.0 / (present as f64) > p
            });
            if !deletes.is_empty() && (over_count || over_percent) {
                let mut released = false;
                if let Some(token) = &options.approve_deletes {
                    match store.approval(token).await? {
                        None => report.notes.push(format!("the approval token {token} is unknown")),
                        Some(a) if a.connector_id != target.id => {
                            report.notes.push(format!("the approval token {token} belongs to another connector"))
                        }
                        Some(a) if a.used_at.is_some() => {
                            report.notes.push(format!("the approval token {token} was already used"))
                        }
                        Some(a) if a.deletes != delete_keys => {
                            let approved: BTreeSet<&String> = a.deletes.iter().collect();
                            let now: BTreeSet<&String> = delete_keys.iter().collect();
                            report.notes.push(format!(
                                "the pending deletes changed since approval {token} ({} new, {} gone): review them again",
                                now.difference(&approved).count(),
                                approved.difference(&now).count()
                            ));
                        }
                        Some(_) => {
                            released = store.use_approval(token, run, clock.now_ms()).await?;
                            if released {
                                report.notes.push(format!(
                                    "approval {token} released the {} reviewed deletes",
                                    delete_keys.len()
                                ));
                            } else {
                                report.notes.push(format!("the approval token {token} was already used"));
                            }
                        }
                    }
                }
                if !released {
                    let token = approval_token(target.id, &delete_keys, run);
                    store.create_approval(&token, target.id, &delete_keys, run, clock.now_ms()).await?;
                    report.status = "stopped-deletion-threshold-exceeded".into();
                    report.held_deletes = deletes.iter().map(|p| p.display.clone()).collect();
                    report.held_deletes.sort();
                    report.counts.held = pending.len() as i64;
                    report.notes.push(format!(
                        "{} pending deletes exceed the deletion threshold ({}): nothing was exported; review them with \
                         `syncctl export --preview` and release exactly these with `syncctl export --approve-deletes {token}`",
                        deletes.len(),
                        threshold_text(&options.threshold, present)
                    ));
                    report.approval_token = Some(token);
                    warn!(deletes = deletes.len(), "deletion threshold exceeded");
                    return finish(store, report, clock).await;
                }
            }
            // Referenced objects first.
            let (order, cycles) = export_order(&pending);
            for cycle in &cycles {
                report.notes.push(format!(
                    "reference cycle between {}: their references are exported once both exist",
                    cycle.join(", ")
                ));
            }
            let mut anchors = mv_anchors(store, target, &pending).await?;
            let ordered: Vec<&Head> = order.iter().filter_map(|i| pending.get(*i)).collect();
            // While a chunk is out at the target, the next chunk is read and the last chunk's results
            // are written, each in a task of its own: the target is not kept waiting for the store.
            // A chunk is marked `exporting` once it is ready to go, and only then (an export marked
            // but never sent would count as uncertain); the last chunk's results are written after
            // the mark, in the same task, while the chunk is out.
            let mut writing: Background<()> = Background::new("the write of an export chunk's mark and results");
            let mut reading: Background<ChunkRead> = Background::new("the read of an export chunk");
            let mut last_results: Option<ChunkResults> = None;
            let mut position = 0;
            let mut next = next_chunk(&ordered, &mut position, options.chunk);
            let sent = async {
                reading.start(read_chunk(store.clone(), &next)).await?;
                while !next.is_empty() {
                    let heads = std::mem::take(&mut next);
                    // After this chunk: what a fault leaves unsent is counted from here.
                    let rest = position;
                    next = next_chunk(&ordered, &mut position, options.chunk);
                    // The chunk's exports in full, and the target objects they change (an export
                    // withdrawn since the list was read is simply not sent).
                    let ChunkRead { mut full, objects } = reading.settle().await?.unwrap_or_default();
                    let chunk: Vec<PendingExport> = heads.iter().filter_map(|h| full.remove(&h.id)).collect();
                    if chunk.is_empty() {
                        reading.start(read_chunk(store.clone(), &next)).await?;
                        continue;
                    }
                    let mut items = Vec::with_capacity(chunk.len());
                    let mut deferred_refs = 0;
                    for p in &chunk {
                        let (item, deferred) = item_for(p, &anchors, &objects);
                        deferred_refs += deferred;
                        items.push(item);
                    }
                    drop(objects);
                    if deferred_refs > 0 {
                        report.notes.push(format!(
                            "{deferred_refs} references to objects not yet in `{}` were left for the next export",
                            target.name
                        ));
                    }
                    // Marked before the call: if the process ends during it, the next export knows
                    // these may already be written (and says so to the connector).
                    let ids: Vec<i64> = chunk.iter().map(|p| p.id).collect();
                    // The last task first: should it fail, the results of the chunk that came back
                    // since are still in `last_results`, written after the loop.
                    writing.settle().await?;
                    let (marked, is_marked) = tokio::sync::oneshot::channel::<()>();
                    let (task_store, now, results) = (store.clone(), clock.now_ms(), last_results.take());
                    writing
                        .start(async move {
                            let mark = task_store.mark_exporting(&ids, now).await;
                            if mark.is_ok() {
                                let _ = marked.send(());
                            }
                            // The results of a chunk sent are written whatever the mark did.
                            let written = match results {
                                Some(r) => r.write(&task_store, run).await,
                                None => Ok(()),
                            };
                            mark.map_err(crate::EngineError::from).and(written)
                        })
                        .await?;
                    if is_marked.await.is_err() {
                        // The mark failed (or its task panicked): the error comes from the task.
                        writing.settle().await?;
                        return Err(crate::EngineError::Task {
                            what: "the mark of an export chunk",
                            detail: "its task ended without marking and without an error".into(),
                        });
                    }
                    reading.start(read_chunk(store.clone(), &next)).await?;
                    let outcomes = match connector.export(items).await {
                        Ok(o) => o,
                        Err(fault) => {
                            report.status = fault.kind.run_status().to_owned();
                            report.counts.held += (ordered.len() - rest + chunk.len()) as i64;
                            report.notes.push(format!("export stopped: {fault}"));
                            break;
                        }
                    };
                    let by_id: HashMap<i64, &PendingExport> = chunk.iter().map(|p| (p.id, p)).collect();
                    let mut rows = Vec::new();
                    let mut batch_counts = RunCounts::default();
                    let mut answered = BTreeSet::new();
                    let mut done: Vec<i64> = Vec::new();
                    let mut errors: Vec<RunError> = Vec::new();
                    for outcome in outcomes {
                        let Some(p) = by_id.get(&outcome.id) else { continue };
                        answered.insert(outcome.id);
                        for note in &outcome.notes {
                            report.counts.retries += 1;
                            batch_counts.warnings += 1;
                            errors.push(RunError {
                                level: Severity::Warning,
                                anchor: None,
                                dn: Some(p.display.clone()),
                                kind: "export-retry".into(),
                                message: format!("{} of {}: {note}", p.operation.as_str(), p.display),
                            });
                        }
                        match outcome.result {
                            Ok(created) => {
                                match p.operation {
                                    ExportOperation::Add => {
                                        report.counts.adds += 1;
                                        batch_counts.adds += 1;
                                        if let (Some(mv), Some(a)) = (p.mv_id, &created) {
                                            anchors.insert(mv, a.as_str().to_owned());
                                        }
                                    }
                                    ExportOperation::Update => {
                                        report.counts.updates += 1;
                                        batch_counts.updates += 1;
                                    }
                                    ExportOperation::Delete => {
                                        report.counts.deletes += 1;
                                        batch_counts.deletes += 1;
                                        // No connector-space object will confirm the delete of an
                                        // object no import has seen: done is done.
                                        if p.cs_id.is_none() {
                                            done.push(p.id);
                                        }
                                    }
                                }
                                rows.push(ExportResultRow {
                                    id: p.id,
                                    status: "exported".into(),
                                    error: None,
                                    created_anchor: created.map(|a| a.as_str().to_owned()),
                                });
                            }
                            Err(failure) => {
                                report.counts.failed += 1;
                                batch_counts.errors += 1;
                                let message = format!("{} of {}: {failure}", p.operation.as_str(), p.display);
                                errors.push(RunError {
                                    level: Severity::Error,
                                    anchor: None,
                                    dn: Some(p.display.clone()),
                                    kind: failure.kind.clone(),
                                    message: message.clone(),
                                });
                                rows.push(ExportResultRow {
                                    id: p.id,
                                    status: "failed".into(),
                                    error: Some(message),
                                    created_anchor: None,
                                });
                            }
                        }
                    }
                    let unanswered = chunk.iter().filter(|p| !answered.contains(&p.id)).count();
                    report.counts.held += unanswered as i64;
                    last_results =
                        Some(ChunkResults { rows, done, errors, counts: batch_counts, at: clock.now_ms() });
                }
                Ok::<(), crate::EngineError>(())
        }
        .await;
        // However the loop ended, the results of every chunk sent are written. A chunk read
        // ahead and not sent (a fault stopped the loop) is dropped with its read.
        let written = writing.settle().await;
        let last = match last_results.take() {
            Some(r) => r.write(store, run).await,
            None => Ok(()),
        };
        drop(reading);
        sent?;
        written?;
        last?;
        if report.status == "success" && report.counts.failed > 0 {
            report.status = "completed-with-errors".into();
        }
        report.notes.push(format!(
            "{} adds, {} updates, {} deletes exported; {} failed; {} held; {} retries",
            report.counts.adds,
            report.counts.updates,
            report.counts.deletes,
            report.counts.failed,
            report.counts.held,
            report.counts.retries
        ));
        info!(status = %report.status, "export finished");
        finish(store, report, clock).await
        }
        .await;
        closed_on_error(store, run, outcome, clock).await
    }
    .instrument(span)
    .await
}

async fn finish(store: &Store, report: ExportReport, clock: &dyn Clock) -> Result<ExportReport> {
    store
        .finish_run(report.run_id, &report.status, None, 0, &report.notes.join("; "), clock.now_ms())
        .await?;
    Ok(report)
}

fn threshold_text(t: &DeletionThreshold, present: i64) -> String {
    let mut parts = Vec::new();
    if let Some(c) = t.count {
        parts.push(format!("more than {c}"));
    }
    if let Some(p) = t.percent {
        parts.push(format!("more than {p}% of the {present} objects"));
    }
    parts.join(" or ")
}

/// A token (80 bits, hex) bound to the connector, the exact set of deletes and the run that
/// held them, mixed with random bits so that it cannot be derived from them.
fn approval_token(connector: i64, deletes: &[String], run: RunId) -> String {
    let mut h = blake3::Hasher::new();
    h.update(uuid::Uuid::new_v4().as_bytes());
    h.update(&connector.to_le_bytes());
    h.update(&run.to_le_bytes());
    for d in deletes {
        h.update(d.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().as_str().chars().take(20).collect()
}

/// The next chunk of `ordered` from `position` (advanced past it): at most `size` exports, and it
/// ends before an export that refers to an object added in the same chunk (the add must be done,
/// and its anchor known, first).
fn next_chunk<'h>(ordered: &[&'h Head], position: &mut usize, size: usize) -> Vec<&'h Head> {
    let mut chunk: Vec<&Head> = Vec::new();
    let mut added: BTreeSet<MvId> = BTreeSet::new();
    while let Some(p) = ordered.get(*position) {
        if chunk.len() >= size.max(1) || (!chunk.is_empty() && p.refs.iter().any(|m| added.contains(m))) {
            break;
        }
        if p.operation == ExportOperation::Add
            && let Some(mv) = p.mv_id
        {
            added.insert(mv);
        }
        chunk.push(p);
        *position += 1;
    }
    chunk
}

/// What came back for a chunk, to write as its pending exports' results.
struct ChunkResults {
    rows: Vec<ExportResultRow>,
    /// Exports done for good (a delete of what no import has seen).
    done: Vec<i64>,
    errors: Vec<RunError>,
    counts: RunCounts,
    /// When they came back.
    at: i64,
}

impl ChunkResults {
    async fn write(self, store: &Store, run: RunId) -> Result<()> {
        store.record_export_results(run, &self.rows, &self.done, &self.errors, &self.counts, self.at).await?;
        Ok(())
    }
}

/// A chunk's exports in full and the connector-space objects they change.
#[derive(Default)]
struct ChunkRead {
    full: HashMap<i64, PendingExport>,
    objects: HashMap<CsId, SyncCsObject>,
}

/// Reads a chunk: its pending exports, then the target objects they change.
fn read_chunk(
    store: Store,
    heads: &[&Head],
) -> impl std::future::Future<Output = Result<ChunkRead>> + Send + 'static {
    let ids: Vec<i64> = heads.iter().map(|h| h.id).collect();
    async move {
        if ids.is_empty() {
            return Ok(ChunkRead::default());
        }
        let full = store.pending_by_ids(&ids).await?;
        let cs_ids: Vec<CsId> = full.values().filter_map(|p| p.cs_id).collect();
        let objects = store.cs_by_ids(&cs_ids).await?;
        Ok(ChunkRead { full, objects })
    }
}

/// What the export keeps of a pending export until its chunk is sent.
struct Head {
    id: i64,
    mv_id: Option<MvId>,
    operation: ExportOperation,
    display: String,
    target_key: String,
    /// The MV objects its new values refer to.
    refs: Vec<MvId>,
}

impl Head {
    fn of(p: &PendingExport) -> Self {
        let mut refs = Vec::new();
        for c in &p.changes {
            if let Some(AttrValues::Reference(v)) = &c.new {
                refs.extend(v.iter().filter_map(|r| parse_mv_ref(r)));
            }
        }
        Self {
            id: p.id,
            mv_id: p.mv_id,
            operation: p.operation,
            display: p.display.clone(),
            target_key: p.target_key(),
            refs,
        }
    }
}

/// The export order (indexes into `pending`): every add before what refers to it; deletes
/// last. Returns the cycles found (the displays of their members).
fn export_order(pending: &[Head]) -> (Vec<usize>, Vec<Vec<String>>) {
    let mut graph: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..pending.len()).map(|i| graph.add_node(i)).collect();
    let mut adds: HashMap<MvId, NodeIndex> = HashMap::new();
    for (i, p) in pending.iter().enumerate() {
        if p.operation == ExportOperation::Add
            && let (Some(mv), Some(n)) = (p.mv_id, nodes.get(i))
        {
            adds.insert(mv, *n);
        }
    }
    for (i, p) in pending.iter().enumerate() {
        let Some(me) = nodes.get(i) else { continue };
        for r in &p.refs {
            if let Some(add) = adds.get(r)
                && add != me
            {
                graph.update_edge(*add, *me, ());
            }
        }
    }
    // Kahn's algorithm in waves: everything that refers to no pending add first, in pending
    // order, then what refers only to those, and so on. Referenced objects come first, and an
    // object never lands between its references and other independent objects, so the chunks
    // the export hands the connector break only between waves, not at every referring object.
    let mut indegree: Vec<usize> =
        nodes.iter().map(|n| graph.neighbors_directed(*n, petgraph::Incoming).count()).collect();
    let mut ready: BTreeSet<usize> = (0..pending.len()).filter(|i| indegree.get(*i) == Some(&0)).collect();
    let mut order = Vec::with_capacity(pending.len());
    while !ready.is_empty() {
        let mut next_wave = BTreeSet::new();
        for i in std::mem::take(&mut ready) {
            order.push(i);
            let Some(n) = nodes.get(i) else { continue };
            for next in graph.neighbors_directed(*n, petgraph::Outgoing) {
                let j = next.index();
                if let Some(d) = indegree.get_mut(j) {
                    *d = d.saturating_sub(1);
                    if *d == 0 {
                        next_wave.insert(j);
                    }
                }
            }
        }
        ready = next_wave;
    }
    // What is left is in a cycle or behind one: report the cycles, export the rest in order.
    let mut cycles = Vec::new();
    if order.len() < pending.len() {
        for comp in petgraph::algo::tarjan_scc(&graph) {
            if comp.len() > 1 {
                let mut idx: Vec<usize> = comp.iter().map(|n| n.index()).collect();
                idx.sort_unstable();
                cycles.push(idx.iter().filter_map(|i| pending.get(*i)).map(|p| p.display.clone()).collect());
            }
        }
        cycles.sort();
        let done: BTreeSet<usize> = order.iter().copied().collect();
        order.extend((0..pending.len()).filter(|i| !done.contains(i)));
    }
    // Deletes after adds and updates (a stable partition keeps the topological order).
    let (mut first, last): (Vec<usize>, Vec<usize>) = order
        .into_iter()
        .partition(|i| pending.get(*i).is_some_and(|p| p.operation != ExportOperation::Delete));
    first.extend(last);
    (first, cycles)
}

/// The target anchors of the MV objects referred to or exported: linked objects, and adds
/// exported earlier and not yet confirmed.
async fn mv_anchors(
    store: &Store,
    target: &SyncConnector,
    pending: &[Head],
) -> Result<HashMap<MvId, String>> {
    let mut ids: Vec<MvId> = pending.iter().flat_map(|p| p.refs.iter().copied()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut anchors = store.target_anchors(target.id, &ids).await?;
    for (mv, anchor) in store.created_anchors(target.id, &ids).await? {
        anchors.entry(mv).or_insert(anchor);
    }
    Ok(anchors)
}

/// The connector's item for a pending export; references resolved to target anchors (those
/// that cannot be yet are left out and counted).
fn item_for(
    p: &PendingExport,
    anchors: &HashMap<MvId, String>,
    objects: &HashMap<CsId, SyncCsObject>,
) -> (ExportItem, usize) {
    let mut deferred = 0;
    let mut attributes = Vec::with_capacity(p.changes.len());
    for c in &p.changes {
        let value = match &c.new {
            Some(AttrValues::Reference(refs)) => {
                let mut out = Vec::new();
                for r in refs {
                    match parse_mv_ref(r) {
                        Some(mv) => match anchors.get(&mv) {
                            Some(a) => out.push(a.clone()),
                            None => deferred += 1,
                        },
                        None => out.push(r.clone()),
                    }
                }
                Some(AttrValues::Reference(out))
            }
            v => v.clone(),
        };
        attributes.push((c.attribute.clone(), value));
    }
    let (anchor, dn) = match p.cs_id {
        Some(cs) => {
            let o = objects.get(&cs);
            (o.and_then(|o| Anchor::new(o.anchor.clone()).ok()), o.map(|o| o.dn.clone()))
        }
        // The delete of an object this engine created and no import has seen yet.
        None => (p.created_anchor.as_ref().and_then(|a| Anchor::new(a.clone()).ok()), None),
    };
    let kind = match p.operation {
        ExportOperation::Add => ExportKind::Add,
        ExportOperation::Update => ExportKind::Update,
        ExportOperation::Delete => ExportKind::Delete,
    };
    let uncertain = p.status == "exporting";
    (
        ExportItem { id: p.id, kind, object_type: p.object_type.clone(), anchor, dn, attributes, uncertain },
        deferred,
    )
}
