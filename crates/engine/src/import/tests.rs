//! Tests of import staging with a scripted connector (the LDAP connector's own tests run against
//! real directories in `tests/`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use proptest::prelude::*;
use syncctl_core::{
    AttrName, AttrValues, Attributes, Capabilities, CsObject, Dn, FixedClock, ObjectError, ValueDelta,
    Watermark,
};

use super::*;

/// A connector that replays scripted passes: each call to `import` takes the next one.
struct Scripted {
    passes: Mutex<Vec<Pass>>,
    requests: Vec<ImportRequest>,
}

struct Pass {
    batches: Vec<ImportBatch>,
    end: std::result::Result<ImportSummary, ConnectorFault>,
}

impl Scripted {
    fn new(passes: Vec<Pass>) -> Self {
        Self { passes: Mutex::new(passes.into_iter().rev().collect()), requests: Vec::new() }
    }
}

#[async_trait::async_trait]
impl Connector for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn endpoint(&self) -> String {
        "scripted://".into()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn import(
        &mut self,
        request: ImportRequest,
        tx: mpsc::Sender<ImportBatch>,
    ) -> std::result::Result<ImportSummary, ConnectorFault> {
        self.requests.push(request);
        let pass = self.passes.lock().unwrap().pop().expect("a scripted pass");
        for b in pass.batches {
            if tx.send(b).await.is_err() {
                return Err(ConnectorFault::new(FaultKind::Cancelled, "scripted://", "reader gone"));
            }
        }
        pass.end
    }
}

fn user(anchor: &str, dn: &str, attrs: &[(&str, &str)]) -> CsObject {
    let mut attributes = Attributes::new();
    for (k, v) in attrs {
        attributes.insert(*k, AttrValues::String(vec![(*v).to_owned()]));
    }
    CsObject {
        anchor: Anchor::new(anchor).unwrap(),
        immutable_id: None,
        dn: Dn::parse(dn).unwrap(),
        object_class: "user".into(),
        attributes,
    }
}

fn group(anchor: &str, members: &[&str]) -> CsObject {
    let mut attributes = Attributes::new();
    attributes.insert("member", AttrValues::Reference(members.iter().map(|m| (*m).to_owned()).collect()));
    CsObject {
        anchor: Anchor::new(anchor).unwrap(),
        immutable_id: None,
        dn: Dn::parse(&format!("CN={anchor},DC=x")).unwrap(),
        object_class: "group".into(),
        attributes,
    }
}

fn wm(v: &str) -> Watermark {
    Watermark {
        kind: "test".into(),
        value: v.as_bytes().to_vec(),
        server: "s1".into(),
        extra: Default::default(),
    }
}

/// How a scripted full import ends: its final watermark, the unseen swept.
fn full_end(mark: &str) -> std::result::Result<ImportSummary, ConnectorFault> {
    Ok(ImportSummary {
        final_watermark: Some(wm(mark)),
        sweep_unseen: true,
        method: "test".into(),
        ..Default::default()
    })
}

/// A run that must fail: its error, as the binary would print it.
async fn failed_run(store: &Store, c: &mut Scripted, mode: ImportMode) -> String {
    run_import(store, c, "test", mode, &ImportOptions::default(), &FixedClock::new(0), &NoProgress)
        .await
        .unwrap_err()
        .to_string()
}

fn full(objects: Vec<CsObject>, mark: &str) -> Pass {
    Pass {
        batches: vec![ImportBatch {
            changes: objects.into_iter().map(ImportChange::Present).collect(),
            watermark: None,
        }],
        end: full_end(mark),
    }
}

fn delta(changes: Vec<ImportChange>, mark: &str) -> Pass {
    delta_pages(vec![(changes, mark)])
}

/// A delta pass of several pages, each with its watermark.
fn delta_pages(pages: Vec<(Vec<ImportChange>, &str)>) -> Pass {
    Pass {
        batches: pages
            .into_iter()
            .map(|(changes, mark)| ImportBatch { changes, watermark: Some(wm(mark)) })
            .collect(),
        end: Ok(ImportSummary { method: "test".into(), ..Default::default() }),
    }
}

async fn run(store: &Store, c: &mut Scripted, mode: ImportMode) -> ImportReport {
    let clock = FixedClock::new(1_000);
    run_import(store, c, "test", mode, &ImportOptions::default(), &clock, &NoProgress).await.unwrap()
}

async fn present(store: &Store) -> BTreeMap<String, (String, Attributes)> {
    let cid = store.connector_id("scripted").await.unwrap().unwrap();
    store
        .cs_objects(cid)
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.state == "present")
        .map(|o| (o.anchor, (o.dn, o.attributes)))
        .collect()
}

#[tokio::test]
async fn full_imports_diff_by_anchor_and_hash() {
    let store = Store::open_in_memory().await.unwrap();
    let a = user("a", "CN=A,OU=One,DC=x", &[("mail", "a@x")]);
    let b = user("b", "CN=B,OU=One,DC=x", &[("mail", "b@x")]);
    let c = user("c", "CN=C,OU=One,DC=x", &[("mail", "c@x")]);
    let mut a2 = a.clone();
    a2.attributes.insert("mail", AttrValues::String(vec!["a2@x".into()]));
    let mut b2 = b.clone();
    b2.dn = Dn::parse("CN=B,OU=Two,DC=x").unwrap();
    let mut conn = Scripted::new(vec![
        full(vec![a.clone(), b.clone(), c.clone()], "1"),
        full(vec![c.clone(), b.clone(), a.clone()], "2"),
        full(vec![a2.clone(), b2.clone()], "3"),
    ]);
    let r1 = run(&store, &mut conn, ImportMode::Full).await;
    assert_eq!((r1.status.as_str(), r1.counts.adds, r1.counts.changes()), ("success", 3, 3));
    let r2 = run(&store, &mut conn, ImportMode::Full).await;
    assert_eq!(
        (r2.counts.changes(), r2.counts.unchanged),
        (0, 3),
        "same objects in another order change nothing"
    );
    let r3 = run(&store, &mut conn, ImportMode::Full).await;
    assert_eq!((r3.counts.updates, r3.counts.renames, r3.counts.deletes, r3.counts.adds), (1, 1, 1, 0));
    let space = present(&store).await;
    assert_eq!(space.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(space["b"].0, "CN=B,OU=Two,DC=x");
    assert_eq!(space["a"].1.first_text("mail"), Some("a2@x"));
    let runs = store.runs(Some("scripted"), 10).await.unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0].counts.deletes, 1);
    let cid = store.connector_id("scripted").await.unwrap().unwrap();
    assert_eq!(store.watermark(cid).await.unwrap().unwrap().watermark, Some(wm("3")));
}

#[tokio::test]
async fn delta_without_watermark_runs_as_full_and_says_so() {
    let store = Store::open_in_memory().await.unwrap();
    let mut conn = Scripted::new(vec![full(vec![user("a", "CN=A,DC=x", &[])], "1")]);
    let r = run(&store, &mut conn, ImportMode::Delta).await;
    assert_eq!(r.profile, ImportMode::Full);
    assert!(r.notes.iter().any(|n| n.contains("no watermark")), "{:?}", r.notes);
    assert_eq!(conn.requests[0].mode, ImportMode::Full);
    assert_eq!(store.runs(None, 1).await.unwrap()[0].profile, "full-import");
}

#[tokio::test]
async fn deltas_apply_changes_deletes_and_value_increments() {
    let store = Store::open_in_memory().await.unwrap();
    let g = group("g", &["CN=A,DC=x", "CN=B,DC=x"]);
    let mut inc = g.clone();
    inc.attributes.remove("member");
    let deltas = BTreeMap::from([(
        AttrName::new("member"),
        ValueDelta {
            add: AttrValues::Reference(vec!["CN=C,DC=x".into()]),
            remove: AttrValues::Reference(vec!["CN=A,DC=x".into()]),
        },
    )]);
    let mut conn = Scripted::new(vec![
        full(vec![g.clone(), user("a", "CN=A,DC=x", &[])], "1"),
        delta(vec![ImportChange::Incremental { object: inc, value_deltas: deltas }], "2"),
        delta(
            vec![
                ImportChange::Deleted { anchor: Anchor::new("a").unwrap(), dn: None },
                ImportChange::Deleted { anchor: Anchor::new("never-seen").unwrap(), dn: None },
            ],
            "3",
        ),
        delta(vec![ImportChange::Present(user("a", "CN=A,DC=x", &[]))], "4"),
        delta(vec![], "5"),
    ]);
    run(&store, &mut conn, ImportMode::Full).await;
    let r = run(&store, &mut conn, ImportMode::Delta).await;
    assert_eq!((r.profile, r.counts.updates, r.counts.changes()), (ImportMode::Delta, 1, 1));
    assert_eq!(conn.requests[1].watermark, Some(wm("1")));
    let space = present(&store).await;
    assert_eq!(
        space["g"].1.get("member"),
        Some(&AttrValues::Reference(vec!["CN=B,DC=x".into(), "CN=C,DC=x".into()]))
    );
    let r = run(&store, &mut conn, ImportMode::Delta).await;
    assert_eq!((r.counts.deletes, r.counts.changes()), (1, 1), "a delete of an unknown anchor is no change");
    assert!(!present(&store).await.contains_key("a"));
    let r = run(&store, &mut conn, ImportMode::Delta).await;
    assert_eq!(r.counts.adds, 1, "an object back from the dead is an add");
    let r = run(&store, &mut conn, ImportMode::Delta).await;
    assert_eq!((r.counts.changes(), r.status.as_str()), (0, "success"));
    let cid = store.connector_id("scripted").await.unwrap().unwrap();
    assert_eq!(store.watermark(cid).await.unwrap().unwrap().watermark, Some(wm("5")));
}

#[tokio::test]
async fn invalid_watermark_falls_back_to_full_import() {
    let store = Store::open_in_memory().await.unwrap();
    let mut conn = Scripted::new(vec![
        full(vec![user("a", "CN=A,DC=x", &[]), user("b", "CN=B,DC=x", &[])], "1"),
        Pass {
            batches: vec![],
            end: Err(ConnectorFault::new(
                FaultKind::WatermarkInvalid,
                "ldap://dc",
                "the DirSync cookie was refused",
            )),
        },
        full(vec![user("a", "CN=A,DC=x", &[])], "2"),
    ]);
    run(&store, &mut conn, ImportMode::Full).await;
    let r = run(&store, &mut conn, ImportMode::Delta).await;
    assert_eq!((r.profile, r.status.as_str(), r.counts.deletes), (ImportMode::Full, "success", 1));
    assert!(
        r.notes.iter().any(|n| n.contains("fell back to a full import") && n.contains("cookie was refused"))
    );
    let rec = store.run(r.run_id).await.unwrap().unwrap();
    assert_eq!(rec.profile, "full-import");
    assert!(rec.notes.contains("cookie was refused"));
}

#[tokio::test]
async fn a_fault_mid_import_keeps_what_was_written_and_owes_a_full_import() {
    let store = Store::open_in_memory().await.unwrap();
    let first =
        ImportBatch { changes: vec![ImportChange::Present(user("a", "CN=A,DC=x", &[]))], watermark: None };
    let mut conn = Scripted::new(vec![
        full(vec![user("old", "CN=Old,DC=x", &[])], "0"),
        Pass {
            batches: vec![first],
            end: Err(ConnectorFault::new(FaultKind::Connectivity, "ldap://127.0.0.1:1", "connection reset")),
        },
        full(vec![user("a", "CN=A,DC=x", &[]), user("b", "CN=B,DC=x", &[])], "1"),
    ]);
    run(&store, &mut conn, ImportMode::Full).await;
    let r = run(&store, &mut conn, ImportMode::Full).await;
    assert_eq!(r.status, "stopped-connectivity");
    assert!(r.fault.as_deref().unwrap().contains("ldap://127.0.0.1:1"));
    // The batch before the fault is stored, nothing was swept, and the old watermark is kept.
    let space = present(&store).await;
    assert_eq!(space.keys().collect::<Vec<_>>(), ["a", "old"]);
    let cid = store.connector_id("scripted").await.unwrap().unwrap();
    let w = store.watermark(cid).await.unwrap().unwrap();
    assert!(w.full_import_required);
    assert_eq!(w.watermark, Some(wm("0")));
    // The next delta runs as a full import and converges.
    let r = run(&store, &mut conn, ImportMode::Delta).await;
    assert_eq!(r.profile, ImportMode::Full);
    assert_eq!(present(&store).await.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert!(!store.watermark(cid).await.unwrap().unwrap().full_import_required);
}

#[tokio::test]
async fn an_unanchorable_object_stops_the_run_before_any_sweep_or_watermark() {
    let store = Store::open_in_memory().await.unwrap();
    let bad = ImportChange::Invalid(ObjectError {
        anchor: None,
        dn: "CN=Bad,DC=x".into(),
        kind: "invalid-anchor".into(),
        message: "CN=Bad,DC=x: objectGUID must be exactly 16 bytes, got 15".into(),
    });
    let mut conn = Scripted::new(vec![
        full(vec![user("a", "CN=A,DC=x", &[]), user("b", "CN=B,DC=x", &[])], "1"),
        delta_pages(vec![
            (vec![ImportChange::Present(user("a", "CN=A,DC=x", &[("mail", "new@x")])), bad], "2"),
            (vec![ImportChange::Present(user("c", "CN=C,DC=x", &[]))], "3"),
        ]),
    ]);
    run(&store, &mut conn, ImportMode::Full).await;
    let r = run(&store, &mut conn, ImportMode::Delta).await;
    assert_eq!(
        (r.status.as_str(), r.counts.errors, r.counts.updates),
        ("stopped-invalid-anchor", 1, 1),
        "{r:?}"
    );
    assert!(r.notes.iter().any(|n| n.contains("CN=Bad,DC=x") && n.contains("16 bytes")), "{:?}", r.notes);
    let errors = store.run_errors(r.run_id).await.unwrap();
    assert_eq!(errors[0].dn.as_deref(), Some("CN=Bad,DC=x"));
    // What came before it is stored; nothing after it; the watermark did not move past it.
    let space = present(&store).await;
    assert_eq!(space.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(space["a"].1.first_text("mail"), Some("new@x"));
    let cid = store.connector_id("scripted").await.unwrap().unwrap();
    assert_eq!(store.watermark(cid).await.unwrap().unwrap().watermark, Some(wm("1")));
    assert_eq!(store.run(r.run_id).await.unwrap().unwrap().status, "stopped-invalid-anchor");
}

#[tokio::test]
async fn the_error_limit_stops_the_run() {
    let store = Store::open_in_memory().await.unwrap();
    let bad = |i: usize| {
        ImportChange::Invalid(ObjectError {
            anchor: Some(Anchor::new(format!("a{i}")).unwrap()),
            dn: format!("CN={i},DC=x"),
            kind: "invalid-value".into(),
            message: "bad".into(),
        })
    };
    let batches = (0..5)
        .map(|b| ImportBatch { changes: (0..3).map(|i| bad(b * 3 + i)).collect(), watermark: None })
        .collect();
    let mut conn = Scripted::new(vec![Pass { batches, end: Ok(ImportSummary::default()) }]);
    let clock = FixedClock::new(0);
    let options = ImportOptions { error_limit: 5, queue_depth: 1, ..Default::default() };
    let r =
        run_import(&store, &mut conn, "test", ImportMode::Full, &options, &clock, &NoProgress).await.unwrap();
    assert_eq!(r.status, "stopped-error-limit");
    assert!(r.counts.errors >= 5 && r.counts.errors < 15, "{}", r.counts.errors);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Whatever sequence of directory states full imports see, the connector space afterwards
    /// holds exactly the last state, and the counters add up.
    #[test]
    fn full_import_converges_to_the_source(states in proptest::collection::vec(
        proptest::collection::btree_map(0u8..12, (0u8..3, 0u8..3), 0..10), 1..5)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = Store::open_in_memory().await.unwrap();
            let as_objects = |s: &BTreeMap<u8, (u8, u8)>| -> Vec<CsObject> {
                s.iter().map(|(k, (ou, v))| user(&format!("a{k}"), &format!("CN={k},OU={ou},DC=x"), &[("v", &v.to_string())])).collect()
            };
            let mut conn = Scripted::new(states.iter().map(|s| full(as_objects(s), "w")).collect());
            let mut previous: BTreeMap<u8, (u8, u8)> = BTreeMap::new();
            for s in &states {
                let r = run(&store, &mut conn, ImportMode::Full).await;
                let adds = s.keys().filter(|k| !previous.contains_key(k)).count() as i64;
                let deletes = previous.keys().filter(|k| !s.contains_key(k)).count() as i64;
                let renames = s.iter().filter(|(k, (ou, _))| previous.get(k).is_some_and(|(pou, _)| pou != ou)).count() as i64;
                let updates = s.iter().filter(|(k, (ou, v))| previous.get(k).is_some_and(|(pou, pv)| pou == ou && pv != v)).count() as i64;
                assert_eq!((r.counts.adds, r.counts.deletes, r.counts.renames, r.counts.updates), (adds, deletes, renames, updates));
                let space = present(&store).await;
                let mut want: Vec<String> = s.keys().map(|k| format!("a{k}")).collect();
                want.sort();
                assert_eq!(space.keys().cloned().collect::<Vec<_>>(), want);
                for (k, (ou, v)) in s {
                    let (dn, attrs) = &space[&format!("a{k}")];
                    assert_eq!(dn, &format!("CN={k},OU={ou},DC=x"));
                    assert_eq!(attrs.first_text("v"), Some(v.to_string().as_str()));
                }
                previous = s.clone();
            }
        });
    }
}

#[tokio::test]
async fn references_follow_a_renamed_object_in_a_delta() {
    let store = Store::open_in_memory().await.unwrap();
    let a = user("a", "CN=A,OU=One,DC=x", &[]);
    let mut manager_of = user("m", "CN=M,DC=x", &[]);
    manager_of.attributes.insert("manager", AttrValues::Reference(vec!["cn=a,ou=one,dc=x".into()]));
    let g = group("g", &["CN=A,OU=One,DC=x", "CN=Other,DC=x"]);
    let mut moved = a.clone();
    moved.dn = Dn::parse("CN=A,OU=Two,DC=x").unwrap();
    let mut conn = Scripted::new(vec![
        full(vec![a, manager_of, g], "1"),
        delta(vec![ImportChange::Present(moved)], "2"),
    ]);
    run(&store, &mut conn, ImportMode::Full).await;
    let r = run(&store, &mut conn, ImportMode::Delta).await;
    assert_eq!(
        (r.counts.renames, r.counts.changes()),
        (1, 1),
        "the referrers' fix-up is not a source change"
    );
    assert!(r.notes.iter().any(|n| n.starts_with("2 reference values")), "{:?}", r.notes);
    let space = present(&store).await;
    assert_eq!(
        space["g"].1.get("member"),
        Some(&AttrValues::Reference(vec!["CN=A,OU=Two,DC=x".into(), "CN=Other,DC=x".into()]))
    );
    assert_eq!(space["m"].1.get("manager"), Some(&AttrValues::Reference(vec!["CN=A,OU=Two,DC=x".into()])));
}

#[tokio::test]
async fn a_bad_value_on_a_known_object_keeps_it_and_the_sweep_still_runs() {
    let store = Store::open_in_memory().await.unwrap();
    let bad_b = ImportChange::Invalid(ObjectError {
        anchor: Some(Anchor::new("b").unwrap()),
        dn: "CN=B,DC=x".into(),
        kind: "invalid-value".into(),
        message: "CN=B,DC=x: a value of `displayName` is not valid UTF-8".into(),
    });
    let mut conn = Scripted::new(vec![
        full(
            vec![user("a", "CN=A,DC=x", &[]), user("b", "CN=B,DC=x", &[]), user("c", "CN=C,DC=x", &[])],
            "1",
        ),
        Pass {
            batches: vec![ImportBatch {
                changes: vec![ImportChange::Present(user("a", "CN=A,DC=x", &[])), bad_b],
                watermark: None,
            }],
            end: Ok(ImportSummary { sweep_unseen: true, method: "test".into(), ..Default::default() }),
        },
    ]);
    run(&store, &mut conn, ImportMode::Full).await;
    let r = run(&store, &mut conn, ImportMode::Full).await;
    assert_eq!(
        (r.status.as_str(), r.counts.errors, r.counts.deletes),
        ("completed-with-errors", 1, 1),
        "{r:?}"
    );
    let space = present(&store).await;
    assert_eq!(
        space.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "b keeps its stored copy, c (not seen) is deleted"
    );
    assert_eq!(store.run_errors(r.run_id).await.unwrap()[0].anchor.as_deref(), Some("b"));
}

#[tokio::test]
async fn a_member_renamed_and_removed_in_one_round_leaves_the_group() {
    let store = Store::open_in_memory().await.unwrap();
    let a = user("a", "CN=A,OU=One,DC=x", &[]);
    let g = group("g", &["CN=A,OU=One,DC=x", "CN=B,DC=x"]);
    let mut moved = a.clone();
    moved.dn = Dn::parse("CN=A,OU=Two,DC=x").unwrap();
    let mut inc = g.clone();
    inc.attributes.remove("member");
    let deltas = BTreeMap::from([(
        AttrName::new("member"),
        ValueDelta {
            add: AttrValues::Reference(vec![]),
            remove: AttrValues::Reference(vec!["CN=A,OU=Two,DC=x".into()]),
        },
    )]);
    let mut conn = Scripted::new(vec![
        full(vec![a, g], "1"),
        delta(
            vec![
                ImportChange::Present(moved),
                ImportChange::Incremental { object: inc, value_deltas: deltas },
            ],
            "2",
        ),
    ]);
    run(&store, &mut conn, ImportMode::Full).await;
    let r = run(&store, &mut conn, ImportMode::Delta).await;
    assert_eq!((r.counts.renames, r.counts.updates), (1, 1), "{r:?}");
    assert_eq!(
        present(&store).await["g"].1.get("member"),
        Some(&AttrValues::Reference(vec!["CN=B,DC=x".into()]))
    );
}

#[tokio::test]
async fn an_increment_that_cannot_apply_keeps_the_object_and_owes_a_full_import() {
    let store = Store::open_in_memory().await.unwrap();
    let g = group("g", &["CN=A,DC=x"]);
    let mut inc = g.clone();
    inc.attributes.remove("member");
    inc.attributes.insert("description", AttrValues::String(vec!["changed".into()]));
    let deltas = BTreeMap::from([(
        AttrName::new("member"),
        ValueDelta { add: AttrValues::String(vec!["x".into()]), remove: AttrValues::String(vec![]) },
    )]);
    let mut conn = Scripted::new(vec![
        full(vec![g.clone()], "1"),
        delta(vec![ImportChange::Incremental { object: inc, value_deltas: deltas }], "2"),
        full(vec![g], "3"),
    ]);
    run(&store, &mut conn, ImportMode::Full).await;
    let r = run(&store, &mut conn, ImportMode::Delta).await;
    assert_eq!(
        (r.status.as_str(), r.counts.errors, r.counts.changes()),
        ("completed-with-errors", 1, 0),
        "{r:?}"
    );
    let space = present(&store).await;
    assert_eq!(
        space["g"].1.get("member"),
        Some(&AttrValues::Reference(vec!["CN=A,DC=x".into()])),
        "left as it was"
    );
    assert!(space["g"].1.get("description").is_none());
    let r = run(&store, &mut conn, ImportMode::Delta).await;
    assert_eq!(r.profile, ImportMode::Full, "the next import is a full one: {r:?}");
}

/// Pages of a full import that wait in the queue are written together (within a transaction
/// the objects get their change sequence in anchor order, so "a" of the second page comes before
/// "z" of the first only if the two were merged); what each page says still lands, the later page
/// winning; a page with an unanchorable object is merged with nothing, and the pages after it are
/// not stored (the run stops first).
#[tokio::test]
async fn a_full_import_merges_waiting_pages_but_not_past_an_unanchorable_object() {
    let store = Store::open_in_memory().await.unwrap();
    let page = |objects: Vec<CsObject>| ImportBatch {
        changes: objects.into_iter().map(ImportChange::Present).collect(),
        watermark: None,
    };
    let bad = ImportChange::Invalid(ObjectError {
        anchor: None,
        dn: "CN=Bad,DC=x".into(),
        kind: "invalid-anchor".into(),
        message: "CN=Bad,DC=x: objectGUID must be exactly 16 bytes, got 15".into(),
    });
    let mut with_bad = page(vec![user("c", "CN=C,DC=x", &[])]);
    with_bad.changes.push(bad);
    let mut conn = Scripted::new(vec![
        Pass {
            batches: vec![
                page(vec![user("z", "CN=Z,DC=x", &[("mail", "z1@x")]), user("b", "CN=B,DC=x", &[])]),
                page(vec![user("a", "CN=A,DC=x", &[]), user("z", "CN=Z,DC=x", &[("mail", "z2@x")])]),
                page(vec![group("g", &["CN=A,DC=x"])]),
            ],
            end: full_end("1"),
        },
        Pass {
            batches: vec![
                page(vec![user("a", "CN=A,DC=x", &[("mail", "a3@x")])]),
                with_bad,
                page(vec![user("d", "CN=D,DC=x", &[])]),
            ],
            end: full_end("1"),
        },
    ]);
    let r = run(&store, &mut conn, ImportMode::Full).await;
    assert_eq!((r.status.as_str(), r.counts.adds), ("success", 4), "{r:?}");
    let space = present(&store).await;
    assert_eq!(space.keys().collect::<Vec<_>>(), ["a", "b", "g", "z"]);
    assert_eq!(space["z"].1.first_text("mail"), Some("z2@x"), "the later page wins");
    let cid = store.connector_id("scripted").await.unwrap().unwrap();
    let order: Vec<String> =
        store.cs_changed_since(cid, 0, 100).await.unwrap().into_iter().map(|o| o.anchor).collect();
    assert_eq!(order, ["a", "b", "g", "z"], "one transaction, in anchor order");

    let r = run(&store, &mut conn, ImportMode::Full).await;
    assert_eq!(r.status, "stopped-invalid-anchor", "{r:?}");
    let space = present(&store).await;
    assert_eq!(space.keys().collect::<Vec<_>>(), ["a", "b", "c", "g", "z"], "d comes after the bad page");
    assert_eq!(space["a"].1.first_text("mail"), Some("a3@x"));
}

/// A page of a full import that carries more than whole objects (here an increment to a group
/// of the page before) is not merged: it applies to what the page before it wrote.
#[tokio::test]
async fn a_full_import_page_with_an_increment_applies_after_the_page_before_it() {
    let store = Store::open_in_memory().await.unwrap();
    let mut inc = group("g", &[]);
    inc.attributes.remove("member");
    let deltas = BTreeMap::from([(
        AttrName::new("member"),
        ValueDelta {
            add: AttrValues::Reference(vec!["CN=B,DC=x".into()]),
            remove: AttrValues::Reference(vec![]),
        },
    )]);
    let mut conn = Scripted::new(vec![Pass {
        batches: vec![
            ImportBatch { changes: vec![ImportChange::Present(group("g", &["CN=A,DC=x"]))], watermark: None },
            ImportBatch {
                changes: vec![ImportChange::Incremental { object: inc, value_deltas: deltas }],
                watermark: None,
            },
        ],
        end: full_end("1"),
    }]);
    let r = run(&store, &mut conn, ImportMode::Full).await;
    assert_eq!(r.status, "success", "{r:?}");
    assert_eq!(
        present(&store).await["g"].1.get("member"),
        Some(&AttrValues::Reference(vec!["CN=A,DC=x".into(), "CN=B,DC=x".into()]))
    );
}

/// The error limit stops a full import whose good pages were merged before the page that
/// reached it: the page after it is not stored.
#[tokio::test]
async fn the_error_limit_stops_a_full_import_before_the_pages_after_it() {
    let store = Store::open_in_memory().await.unwrap();
    let page = |objects: Vec<CsObject>| ImportBatch {
        changes: objects.into_iter().map(ImportChange::Present).collect(),
        watermark: None,
    };
    let bad = |i: usize| {
        ImportChange::Invalid(ObjectError {
            anchor: Some(Anchor::new(format!("x{i}")).unwrap()),
            dn: format!("CN=X{i},DC=x"),
            kind: "invalid-value".into(),
            message: "bad".into(),
        })
    };
    let mut conn = Scripted::new(vec![Pass {
        batches: vec![
            page(vec![user("a", "CN=A,DC=x", &[])]),
            page(vec![user("b", "CN=B,DC=x", &[])]),
            ImportBatch { changes: (0..3).map(bad).collect(), watermark: None },
            page(vec![user("c", "CN=C,DC=x", &[])]),
        ],
        end: Ok(ImportSummary::default()),
    }]);
    let options = ImportOptions { error_limit: 3, ..Default::default() };
    let r =
        run_import(&store, &mut conn, "test", ImportMode::Full, &options, &FixedClock::new(0), &NoProgress)
            .await
            .unwrap();
    assert_eq!((r.status.as_str(), r.counts.errors), ("stopped-error-limit", 3), "{r:?}");
    assert_eq!(present(&store).await.keys().collect::<Vec<_>>(), ["a", "b"]);
}

/// A batch whose write fails ends the run with the store's error; the batches before it are
/// stored with their watermark, nothing after it is, and the next run starts from there.
#[tokio::test]
async fn a_failed_batch_write_stops_the_run_and_keeps_the_batches_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let store = Store::open(&path).await.unwrap();
    let mut conn = Scripted::new(vec![
        full(vec![user("a", "CN=A,DC=x", &[])], "1"),
        delta_pages(vec![
            (vec![ImportChange::Present(user("b", "CN=B,DC=x", &[]))], "2"),
            (vec![ImportChange::Present(user("rejected", "CN=R,DC=x", &[]))], "3"),
            (vec![ImportChange::Present(user("c", "CN=C,DC=x", &[]))], "4"),
        ]),
    ]);
    run(&store, &mut conn, ImportMode::Full).await;
    // The database refuses one object (as a full disk or a constraint would).
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON cs_objects WHEN NEW.anchor = 'rejected' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .unwrap();
    let err = failed_run(&store, &mut conn, ImportMode::Delta).await;
    assert!(err.contains("refused by the test"), "{err}");
    assert_eq!(present(&store).await.keys().collect::<Vec<_>>(), ["a", "b"]);
    let cid = store.connector_id("scripted").await.unwrap().unwrap();
    assert_eq!(store.watermark(cid).await.unwrap().unwrap().watermark, Some(wm("2")));

    // The same in a full import whose pages are written one by one (each also lists an unchanged
    // object, so none is merged, and none reads the store): the failed write is reported, not
    // overtaken by the next one.
    let unchanged = || ImportChange::Unchanged { anchor: Anchor::new("a").unwrap(), dn: None };
    let page = |anchor: &str| ImportBatch {
        changes: vec![ImportChange::Present(user(anchor, &format!("CN={anchor},DC=x"), &[])), unchanged()],
        watermark: None,
    };
    let mut conn = Scripted::new(vec![Pass {
        batches: vec![page("d"), page("rejected"), page("e")],
        end: full_end("5"),
    }]);
    let err = failed_run(&store, &mut conn, ImportMode::Full).await;
    assert!(err.contains("refused by the test"), "{err}");
    assert_eq!(
        present(&store).await.keys().collect::<Vec<_>>(),
        ["a", "b", "d"],
        "nothing swept, e not written"
    );
    let w = store.watermark(cid).await.unwrap().unwrap();
    assert!(w.full_import_required);
    assert_eq!(w.watermark, Some(wm("2")));
    // Both failed runs are closed as failed, with the error, not left `in-progress`.
    let runs = store.runs(Some("scripted"), 10).await.unwrap();
    let statuses: Vec<(&str, &str)> = runs.iter().map(|r| (r.profile.as_str(), r.status.as_str())).collect();
    assert_eq!(
        statuses,
        [
            ("full-import", "stopped-store-error"),
            ("delta-import", "stopped-store-error"),
            ("full-import", "success")
        ],
        "newest first"
    );
    assert!(
        runs.iter().take(2).all(|r| r.notes.contains("refused by the test") && r.ended_at.is_some()),
        "{runs:?}"
    );
}

/// A delta's batch reads what the batch before it wrote (its writes commit while the next
/// batch is prepared): an increment to an object added one batch earlier applies to it.
#[tokio::test]
async fn a_delta_batch_sees_the_object_the_batch_before_it_added() {
    let store = Store::open_in_memory().await.unwrap();
    let mut inc = group("g", &[]);
    inc.attributes.remove("member");
    let deltas = BTreeMap::from([(
        AttrName::new("member"),
        ValueDelta {
            add: AttrValues::Reference(vec!["CN=B,DC=x".into()]),
            remove: AttrValues::Reference(vec![]),
        },
    )]);
    let mut conn = Scripted::new(vec![
        full(vec![user("a", "CN=A,DC=x", &[])], "1"),
        delta_pages(vec![
            (vec![ImportChange::Present(group("g", &["CN=A,DC=x"]))], "2"),
            (vec![ImportChange::Incremental { object: inc, value_deltas: deltas }], "3"),
        ]),
    ]);
    run(&store, &mut conn, ImportMode::Full).await;
    let r = run(&store, &mut conn, ImportMode::Delta).await;
    assert_eq!((r.profile, r.counts.adds, r.counts.updates), (ImportMode::Delta, 1, 1), "{r:?}");
    assert_eq!(
        present(&store).await["g"].1.get("member"),
        Some(&AttrValues::Reference(vec!["CN=A,DC=x".into(), "CN=B,DC=x".into()]))
    );
    let cid = store.connector_id("scripted").await.unwrap().unwrap();
    assert_eq!(store.watermark(cid).await.unwrap().unwrap().watermark, Some(wm("3")));
}
