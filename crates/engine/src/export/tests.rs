//! Export against a recording connector: order, references, guards, failures and faults.

use std::sync::{Arc, Mutex};

use syncctl_core::{
    AttrValues, Attributes, Capabilities, Connector, ConnectorFault, CsObject, Dn, ExportFailure, ExportItem,
    ExportKind, ExportOutcome, FaultKind, FixedClock, ImportBatch, ImportRequest, ImportSummary,
};
use syncctl_store::{AttributeChange, CsWrite, PendingExport, RunCounts, Store, SyncBatch};
use tokio::sync::mpsc;

use super::*;

fn clock() -> FixedClock {
    FixedClock::new(1_700_000_000_000)
}

/// Records every item; fails the items whose id is in `fail`; faults on call number `fault_on`.
/// With `watch`, notes at each call the status of every pending export of that target, by id.
#[derive(Clone, Default)]
struct Recorder {
    items: Arc<Mutex<Vec<ExportItem>>>,
    fail: Vec<i64>,
    fault_on: Option<usize>,
    calls: Arc<Mutex<usize>>,
    watch: Option<(Store, i64)>,
    seen: Arc<Mutex<Vec<Vec<String>>>>,
}

#[async_trait::async_trait]
impl Connector for Recorder {
    fn name(&self) -> &str {
        "cloud"
    }
    fn endpoint(&self) -> String {
        "memory://cloud".into()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities { export: true, ..Capabilities::default() }
    }
    async fn import(
        &mut self,
        _r: ImportRequest,
        _tx: mpsc::Sender<ImportBatch>,
    ) -> Result<ImportSummary, ConnectorFault> {
        Ok(ImportSummary::default())
    }
    async fn export(&mut self, items: Vec<ExportItem>) -> Result<Vec<ExportOutcome>, ConnectorFault> {
        let call = {
            let mut c = self.calls.lock().unwrap();
            *c += 1;
            *c
        };
        if let Some((store, target)) = &self.watch {
            let statuses = store.pending_exports(Some(*target)).await.unwrap().into_iter().map(|p| p.status);
            self.seen.lock().unwrap().push(statuses.collect());
        }
        if self.fault_on == Some(call) {
            return Err(ConnectorFault::new(
                FaultKind::Connectivity,
                "memory://cloud",
                "the connection dropped",
            ));
        }
        let mut out = Vec::new();
        for item in items {
            self.items.lock().unwrap().push(item.clone());
            let result = if self.fail.contains(&item.id) {
                Err(ExportFailure {
                    kind: "AttributeValueMustBeUnique".into(),
                    message: "the UPN is taken".into(),
                    retryable: false,
                })
            } else if item.kind == ExportKind::Add {
                Ok(Some(syncctl_core::Anchor::new(format!("new-{}", item.id)).unwrap()))
            } else {
                Ok(None)
            };
            out.push(ExportOutcome::new(item.id, result));
        }
        Ok(out)
    }
}

struct World {
    store: Store,
    cloud: SyncConnector,
}

impl World {
    async fn new() -> Self {
        Self::with(Store::open_in_memory().await.unwrap()).await
    }

    async fn with(store: Store) -> Self {
        let id = store.ensure_connector("cloud", "cloud-test", 1).await.unwrap();
        Self {
            store,
            cloud: SyncConnector {
                id,
                name: "cloud".into(),
                kind: "cloud-test".into(),
                target: true,
                export_attributes: Default::default(),
            },
        }
    }

    /// `n` target objects `t1..tn`; returns their CS ids.
    async fn targets(&self, n: usize) -> Vec<i64> {
        let run = self.store.start_run("full-import", Some(self.cloud.id), "cloud", 1).await.unwrap();
        let writes = (1..=n)
            .map(|i| {
                let mut attributes = Attributes::new();
                attributes.insert("displayName", AttrValues::String(vec![format!("T{i}")]));
                let o = CsObject {
                    anchor: syncctl_core::Anchor::new(format!("t{i}")).unwrap(),
                    immutable_id: None,
                    dn: Dn::parse(&format!("CN=t{i}")).unwrap(),
                    object_class: "user".into(),
                    attributes,
                };
                let (hash, attributes_json) = o.hash_and_serialize();
                CsWrite::Upsert { object: o, hash, attributes_json }
            })
            .collect();
        self.store
            .write_import_batch(self.cloud.id, run, writes, &[], &RunCounts::default(), None, 2)
            .await
            .unwrap();
        let anchors: Vec<String> = (1..=n).map(|i| format!("t{i}")).collect();
        let refs: Vec<&str> = anchors.iter().map(String::as_str).collect();
        let ids = self.store.cs_ids_by_anchor(self.cloud.id, &refs).await.unwrap();
        anchors.iter().map(|a| ids[a]).collect()
    }

    /// `n` target objects, each with a staged update of its title.
    async fn title_updates(&self, n: usize) {
        let c = self.cloud.id;
        let cs = self.targets(n).await;
        self.stage(
            cs.iter()
                .map(|id| {
                    let title = set("jobTitle", AttrValues::String(vec![format!("T{id}")]));
                    pending(c, ExportOperation::Update, Some(*id), Some(*id), vec![title])
                })
                .collect(),
        )
        .await;
    }

    async fn stage(&self, exports: Vec<PendingExport>) {
        let run = self.store.start_run("delta-sync", Some(self.cloud.id), "cloud", 1).await.unwrap();
        let batch = SyncBatch { pending_writes: exports, ..SyncBatch::default() };
        self.store.write_sync_batch(run, &batch, 2).await.unwrap();
    }

    async fn export(&self, connector: &mut Recorder, options: &ExportOptions) -> ExportReport {
        run_export(&self.store, connector, &self.cloud, options, &clock()).await.unwrap()
    }
}

fn pending(
    connector: i64,
    op: ExportOperation,
    mv: Option<i64>,
    cs: Option<i64>,
    changes: Vec<AttributeChange>,
) -> PendingExport {
    PendingExport {
        id: 0,
        connector_id: connector,
        mv_id: mv,
        cs_id: cs,
        operation: op,
        object_type: if changes.iter().any(|c| c.attribute == "members") {
            "group".into()
        } else {
            "user".into()
        },
        display: match (mv, cs) {
            (_, Some(c)) => format!("cs {c}"),
            (Some(m), None) => format!("mv {m}"),
            _ => String::new(),
        },
        changes,
        rule: "test".into(),
        status: "pending".into(),
        attempts: 0,
        last_error: None,
        created_anchor: None,
        created_at: 1,
        updated_at: 1,
    }
}

fn set(attribute: &str, v: AttrValues) -> AttributeChange {
    AttributeChange { attribute: attribute.into(), old: None, new: Some(v) }
}

#[tokio::test]
async fn referenced_objects_are_exported_first_and_references_become_target_anchors() {
    let w = World::new().await;
    let c = w.cloud.id;
    // The group (mv 3) comes first by display order and refers to the two users (mv 1, 2).
    w.stage(vec![
        pending(
            c,
            ExportOperation::Add,
            Some(3),
            None,
            vec![set("members", AttrValues::Reference(vec!["mv:1".into(), "mv:2".into()]))],
        ),
        pending(
            c,
            ExportOperation::Add,
            Some(1),
            None,
            vec![set("userPrincipalName", AttrValues::String(vec!["a@x".into()]))],
        ),
        pending(
            c,
            ExportOperation::Add,
            Some(2),
            None,
            vec![set("userPrincipalName", AttrValues::String(vec!["b@x".into()]))],
        ),
    ])
    .await;
    let mut rec = Recorder::default();
    // One chunk would hold all three: it is cut before the group, whose members need the
    // users' new anchors.
    let report = w.export(&mut rec, &ExportOptions::default()).await;
    assert_eq!((report.status.as_str(), report.counts.adds), ("success", 3), "{report:?}");
    assert_eq!(*rec.calls.lock().unwrap(), 2);
    let items = rec.items.lock().unwrap().clone();
    let kinds: Vec<&str> = items.iter().map(|i| i.object_type.as_str()).collect();
    assert_eq!(kinds, ["user", "user", "group"], "members after both members");
    let group = items.last().unwrap();
    let ids: Vec<i64> = items.iter().take(2).map(|i| i.id).collect();
    let mut expected: Vec<String> = ids.iter().map(|i| format!("new-{i}")).collect();
    expected.sort();
    let Some(AttrValues::Reference(members)) = &group.attributes[0].1 else { panic!("{group:?}") };
    let mut members = members.clone();
    members.sort();
    assert_eq!(members, expected);
    // An exported add waits for its import: a second export sends nothing again.
    let mut rec2 = Recorder::default();
    let again = w.export(&mut rec2, &ExportOptions::default()).await;
    assert_eq!((again.counts.adds, rec2.items.lock().unwrap().len()), (0, 0));
}

#[tokio::test]
async fn the_deletion_threshold_holds_every_delete_and_the_token_releases_exactly_that_set_once() {
    let w = World::new().await;
    let c = w.cloud.id;
    let cs = w.targets(6).await;
    let deletes = |ids: &[i64]| {
        ids.iter().map(|id| pending(c, ExportOperation::Delete, None, Some(*id), vec![])).collect::<Vec<_>>()
    };
    w.stage(deletes(&cs[0..3])).await;
    let options = ExportOptions {
        threshold: DeletionThreshold { count: Some(2), percent: None },
        ..ExportOptions::default()
    };
    let mut rec = Recorder::default();
    let stopped = w.export(&mut rec, &options).await;
    assert_eq!(stopped.status, "stopped-deletion-threshold-exceeded");
    assert!(rec.items.lock().unwrap().is_empty(), "nothing is written");
    assert_eq!(
        stopped.held_deletes,
        ["cs 1", "cs 2", "cs 3"].map(|s| s
            .replace("cs 1", &format!("cs {}", cs[0]))
            .replace("cs 2", &format!("cs {}", cs[1]))
            .replace("cs 3", &format!("cs {}", cs[2])))
    );
    let first_token = stopped.approval_token.clone().unwrap();
    // One more delete since the review: the old token does not release the new set.
    w.stage(deletes(&cs[3..4])).await;
    let stale = w
        .export(&mut rec, &ExportOptions { approve_deletes: Some(first_token.clone()), ..options.clone() })
        .await;
    assert_eq!(stale.status, "stopped-deletion-threshold-exceeded");
    assert!(
        stale.notes.iter().any(|n| n.contains("changed since approval") && n.contains("1 new")),
        "{:?}",
        stale.notes
    );
    assert!(rec.items.lock().unwrap().is_empty());
    let token = stale.approval_token.clone().unwrap();
    assert_ne!(token, first_token);
    let released =
        w.export(&mut rec, &ExportOptions { approve_deletes: Some(token.clone()), ..options.clone() }).await;
    assert_eq!((released.status.as_str(), released.counts.deletes), ("success", 4), "{released:?}");
    assert_eq!(rec.items.lock().unwrap().len(), 4);
    // Used once: three new deletes are held again, whatever the token says.
    w.stage(deletes(&cs[0..3])).await;
    let mut rec2 = Recorder::default();
    let reused =
        w.export(&mut rec2, &ExportOptions { approve_deletes: Some(token), ..options.clone() }).await;
    assert_eq!(reused.status, "stopped-deletion-threshold-exceeded");
    assert!(reused.notes.iter().any(|n| n.contains("already used")), "{:?}", reused.notes);
    assert!(rec2.items.lock().unwrap().is_empty());
}

#[tokio::test]
async fn staging_mode_writes_nothing() {
    let w = World::new().await;
    w.stage(vec![pending(
        w.cloud.id,
        ExportOperation::Add,
        Some(1),
        None,
        vec![set("displayName", AttrValues::String(vec!["A".into()]))],
    )])
    .await;
    let mut rec = Recorder::default();
    let r = w.export(&mut rec, &ExportOptions { staging: true, ..ExportOptions::default() }).await;
    assert_eq!((r.status.as_str(), r.counts.held), ("success", 1));
    assert!(r.notes.iter().any(|n| n.contains("staging mode")), "{:?}", r.notes);
    assert!(rec.items.lock().unwrap().is_empty());
    assert_eq!(w.store.pending_exports(Some(w.cloud.id)).await.unwrap()[0].status, "pending");
}

#[tokio::test]
async fn a_failed_item_is_recorded_and_a_fault_keeps_the_rest_pending() {
    let w = World::new().await;
    let c = w.cloud.id;
    let cs = w.targets(3).await;
    w.stage(
        cs.iter()
            .map(|id| {
                pending(
                    c,
                    ExportOperation::Update,
                    Some(*id),
                    Some(*id),
                    vec![set("displayName", AttrValues::String(vec!["X".into()]))],
                )
            })
            .collect(),
    )
    .await;
    let ids: Vec<i64> = w.store.pending_exports(Some(c)).await.unwrap().iter().map(|p| p.id).collect();
    // The first item fails; the connection drops on the second call.
    let mut rec = Recorder { fail: vec![ids[0]], fault_on: Some(2), ..Recorder::default() };
    let r = w.export(&mut rec, &ExportOptions { chunk: 1, ..ExportOptions::default() }).await;
    assert_eq!(r.status, "stopped-connectivity", "{r:?}");
    assert_eq!((r.counts.failed, r.counts.updates, r.counts.held), (1, 0, 2), "{r:?}");
    let after = w.store.pending_exports(Some(c)).await.unwrap();
    let statuses: Vec<(&str, i64)> = after.iter().map(|p| (p.status.as_str(), p.attempts)).collect();
    // The item in the call that faulted may have been written: it is sent again, flagged
    // uncertain; the one never sent stays pending.
    assert_eq!(statuses, [("failed", 1), ("exporting", 0), ("pending", 0)]);
    let errors = w.store.run_errors(r.run_id).await.unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("the UPN is taken"), "{:?}", errors[0]);
    // The next export sends all three again.
    let mut rec = Recorder::default();
    let r = w.export(&mut rec, &ExportOptions::default()).await;
    assert_eq!((r.status.as_str(), r.counts.updates), ("success", 3));
}

#[tokio::test]
async fn each_chunk_is_marked_only_as_it_goes_out_and_every_chunk_s_results_are_written() {
    let w = World::new().await;
    let c = w.cloud.id;
    w.title_updates(5).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut rec = Recorder { watch: Some((w.store.clone(), c)), seen: seen.clone(), ..Recorder::default() };
    // Three chunks: the next one is read, and the last one's results written, while one is out.
    let r = w.export(&mut rec, &ExportOptions { chunk: 2, ..ExportOptions::default() }).await;
    assert_eq!((r.status.as_str(), r.counts.updates, r.counts.held), ("success", 5, 0), "{r:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for (call, statuses) in seen.iter().enumerate() {
        for (i, status) in statuses.iter().enumerate() {
            let chunk = i / 2;
            let expected: &[&str] = match chunk.cmp(&call) {
                // Sent before: its results may still be on their way to the store.
                std::cmp::Ordering::Less => &["exporting", "exported"],
                std::cmp::Ordering::Equal => &["exporting"],
                // Not marked before its turn, though already read.
                std::cmp::Ordering::Greater => &["pending"],
            };
            assert!(expected.contains(&status.as_str()), "call {call}, export {i}: {status} ({seen:?})");
        }
    }
    let after = w.store.pending_exports(Some(c)).await.unwrap();
    let statuses: Vec<(&str, i64)> = after.iter().map(|p| (p.status.as_str(), p.attempts)).collect();
    assert_eq!(statuses, [("exported", 1); 5], "the last chunk's results are written too");
    let runs = w.store.runs(None, 10).await.unwrap();
    assert_eq!(runs.iter().find(|x| x.id == r.run_id).map(|x| x.counts.updates), Some(5));
}

/// Three updates, one per call, in a database file that refuses the store write a trigger
/// names (as a full disk or a constraint would): the export's error, and each export's status.
async fn export_refused_by(trigger_when: &str) -> (String, Vec<String>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let w = World::with(Store::open(&path).await.unwrap()).await;
    let c = w.cloud.id;
    w.title_updates(3).await;
    let ids: Vec<i64> = w.store.pending_exports(Some(c)).await.unwrap().iter().map(|p| p.id).collect();
    let when = trigger_when.replace("{first}", &ids[0].to_string()).replace("{second}", &ids[1].to_string());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(&format!(
            "CREATE TRIGGER refuse BEFORE UPDATE OF status ON pending_exports WHEN {when} \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ))
        .unwrap();
    let mut rec = Recorder::default();
    let options = ExportOptions { chunk: 1, ..ExportOptions::default() };
    let err = run_export(&w.store, &mut rec, &w.cloud, &options, &clock()).await.unwrap_err().to_string();
    let statuses = w.store.pending_exports(Some(c)).await.unwrap().into_iter().map(|p| p.status).collect();
    let calls = *rec.calls.lock().unwrap();
    // The run is closed as failed, with the error, not left `in-progress`.
    let runs = w.store.runs(Some("cloud"), 10).await.unwrap();
    let export = runs.iter().find(|r| r.profile == "export").expect("the export's run");
    assert_eq!(export.status, "stopped-store-error", "{export:?}");
    assert!(export.notes.contains("stopped: ") && export.notes.contains("refused by the test"), "{export:?}");
    assert!(export.ended_at.is_some(), "{export:?}");
    (err, statuses, calls)
}

#[tokio::test]
async fn a_refused_store_write_loses_no_other_chunk_s_results() {
    // The first chunk's results are refused; they were being written while the second chunk
    // was out. The second chunk's results are still written, and the third is never sent.
    let (err, statuses, calls) = export_refused_by("NEW.status = 'exported' AND NEW.id = {first}").await;
    assert!(err.contains("refused by the test"), "{err}");
    assert_eq!(statuses, ["exporting", "exported", "pending"]);
    assert_eq!(calls, 2);
    // The second chunk's mark is refused: it is not sent, and the first chunk's results, written
    // in the same task after the mark, are written all the same.
    let (err, statuses, calls) = export_refused_by("NEW.status = 'exporting' AND NEW.id = {second}").await;
    assert!(err.contains("refused by the test"), "{err}");
    assert_eq!(statuses, ["exported", "pending", "pending"]);
    assert_eq!(calls, 1);
}

#[tokio::test]
async fn an_export_cut_short_is_sent_again_marked_uncertain() {
    let w = World::new().await;
    w.stage(vec![pending(
        w.cloud.id,
        ExportOperation::Add,
        Some(1),
        None,
        vec![set("userPrincipalName", AttrValues::String(vec!["a@x".into()]))],
    )])
    .await;
    // The process ended while the connector was writing: the export is marked, its result unknown.
    let ids: Vec<i64> =
        w.store.pending_exports(Some(w.cloud.id)).await.unwrap().iter().map(|p| p.id).collect();
    w.store.mark_exporting(&ids, 5).await.unwrap();
    let mut rec = Recorder::default();
    let r = w.export(&mut rec, &ExportOptions::default()).await;
    assert_eq!(r.counts.adds, 1);
    let items = rec.items.lock().unwrap().clone();
    assert!(items[0].uncertain, "the connector is told to check before creating it again");
    // A normal export is not uncertain.
    w.stage(vec![pending(
        w.cloud.id,
        ExportOperation::Add,
        Some(2),
        None,
        vec![set("userPrincipalName", AttrValues::String(vec!["b@x".into()]))],
    )])
    .await;
    let mut rec = Recorder::default();
    w.export(&mut rec, &ExportOptions::default()).await;
    assert!(!rec.items.lock().unwrap()[0].uncertain);
}
