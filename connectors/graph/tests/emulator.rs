//! The Graph connector against the in-process Graph emulator (port 0, state in memory).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::{Value, json};
use syncctl_connector_graph::{GraphConfig, GraphConnector, Secret};
use syncctl_core::{
    AttrValues, Connector, CsObject, ExportItem, ExportKind, ExportOutcome, FaultKind, ImportChange,
    ImportMode, ImportRequest, ImportSummary,
};
use syncctl_graph_emulator::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, EmulatorConfig, RunningEmulator};
use tokio::sync::mpsc;

async fn emulator(config: EmulatorConfig) -> RunningEmulator {
    syncctl_graph_emulator::start(config).await.unwrap()
}

fn connector(emu: &RunningEmulator, page_size: u32) -> GraphConnector {
    let mut c = GraphConfig::new("contoso.onmicrosoft.com", DEFAULT_CLIENT_ID);
    c.client_secret_env = Some("UNUSED_IN_TESTS".into());
    c.authority = emu.base_url().to_owned();
    c.graph_url = emu.graph_url();
    c.page_size = page_size;
    GraphConnector::with_secret("cloud", c, Secret::new(DEFAULT_CLIENT_SECRET)).unwrap()
}

async fn admin(emu: &RunningEmulator, path: &str, body: Value) -> Value {
    let r =
        reqwest::Client::new().post(format!("{}{path}", emu.base_url())).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

/// The Graph requests the emulator received (`GET /_emulator/requests`).
async fn requests(emu: &RunningEmulator) -> Vec<Value> {
    let v: Value =
        reqwest::get(format!("{}/_emulator/requests", emu.base_url())).await.unwrap().json().await.unwrap();
    v["value"].as_array().unwrap().clone()
}

async fn clear_requests(emu: &RunningEmulator) {
    let r =
        reqwest::Client::new().delete(format!("{}/_emulator/requests", emu.base_url())).send().await.unwrap();
    assert!(r.status().is_success());
}

/// The `requests` of every `$batch` received, batch by batch.
async fn batches(emu: &RunningEmulator) -> Vec<Vec<Value>> {
    requests(emu)
        .await
        .into_iter()
        .filter(|r| r["method"] == "POST" && r["url"] == "/v1.0/$batch")
        .map(|r| r["body"]["requests"].as_array().unwrap().clone())
        .collect()
}

/// Scripted answers (`POST /_emulator/responses`).
async fn script(emu: &RunningEmulator, answers: Value) {
    admin(emu, "/_emulator/responses", answers).await;
}

async fn state(emu: &RunningEmulator) -> Value {
    reqwest::get(format!("{}/_emulator/state", emu.base_url())).await.unwrap().json().await.unwrap()
}

async fn run_import(
    c: &mut GraphConnector,
    mode: ImportMode,
    watermark: Option<syncctl_core::Watermark>,
) -> (Vec<ImportChange>, usize, ImportSummary) {
    let (tx, mut rx) = mpsc::channel(1000);
    let summary = c.import(ImportRequest { mode, watermark }, tx).await.unwrap();
    let mut changes = Vec::new();
    let mut batches = 0;
    while let Some(b) = rx.recv().await {
        batches += 1;
        changes.extend(b.changes);
    }
    (changes, batches, summary)
}

fn present(changes: &[ImportChange]) -> Vec<&CsObject> {
    changes.iter().filter_map(|c| if let ImportChange::Present(o) = c { Some(o) } else { None }).collect()
}

fn text(o: &CsObject, a: &str) -> Option<String> {
    o.attributes.first_text(a).map(str::to_owned)
}

fn item(
    id: i64,
    kind: ExportKind,
    object_type: &str,
    anchor: Option<&str>,
    attrs: &[(&str, Option<AttrValues>)],
) -> ExportItem {
    ExportItem {
        id,
        kind,
        object_type: object_type.into(),
        anchor: anchor.map(|a| syncctl_core::Anchor::new(a).unwrap()),
        dn: None,
        attributes: attrs.iter().map(|(n, v)| ((*n).to_owned(), v.clone())).collect(),
        uncertain: false,
    }
}

fn s(v: &str) -> Option<AttrValues> {
    Some(AttrValues::String(vec![v.into()]))
}

#[tokio::test]
async fn full_import_users_groups_roles() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(&emu, "/_emulator/users", json!([
        {"id": "u1", "userPrincipalName": "ann@contoso.onmicrosoft.com", "displayName": "Ann", "onPremisesImmutableId": "AAAA", "department": "Sales"},
        {"id": "u2", "userPrincipalName": "bob@contoso.onmicrosoft.com", "displayName": "Bob", "accountEnabled": false}
    ])).await;
    admin(&emu, "/_emulator/groups", json!({"id": "g1", "displayName": "Team", "mailEnabled": false, "securityEnabled": true, "mailNickname": "team", "members": ["u1", "u2"]})).await;
    admin(&emu, "/_emulator/admin-roles", json!({"userId": "u1"})).await;
    let mut c = connector(&emu, 999);
    let (changes, _, summary) = run_import(&mut c, ImportMode::Full, None).await;
    assert!(summary.sweep_unseen);
    assert!(summary.final_watermark.is_some());
    let objs = present(&changes);
    assert_eq!(objs.len(), 4, "2 users, 1 group, 1 domain");
    let ann = objs.iter().find(|o| o.anchor.as_str() == "u1").unwrap();
    assert_eq!(ann.object_class, "user");
    assert_eq!(ann.dn.as_str(), "CN=u1,CN=users");
    assert_eq!(text(ann, "userPrincipalName").as_deref(), Some("ann@contoso.onmicrosoft.com"));
    assert_eq!(text(ann, "onPremisesImmutableId").as_deref(), Some("AAAA"));
    assert_eq!(text(ann, "department").as_deref(), Some("Sales"));
    assert_eq!(
        ann.attributes.get("adminRoles"),
        Some(&AttrValues::String(vec!["Global Administrator".into()]))
    );
    let bob = objs.iter().find(|o| o.anchor.as_str() == "u2").unwrap();
    assert_eq!(bob.attributes.get("accountEnabled"), Some(&AttrValues::Boolean(vec![false])));
    assert!(bob.attributes.get("adminRoles").is_none());
    let team = objs.iter().find(|o| o.anchor.as_str() == "g1").unwrap();
    assert_eq!(team.object_class, "group");
    assert_eq!(team.dn.as_str(), "CN=g1,CN=groups");
    assert_eq!(team.attributes.get("members"), Some(&AttrValues::Reference(vec!["u1".into(), "u2".into()])));
    assert_eq!(c.verified_domains().await.unwrap(), vec!["contoso.onmicrosoft.com".to_owned()]);
    emu.stop().await.unwrap();
}

#[tokio::test]
async fn full_import_pages() {
    let emu = emulator(EmulatorConfig::default()).await;
    let users: Vec<Value> = (0..25).map(|i| json!({"userPrincipalName": format!("u{i}@contoso.onmicrosoft.com"), "displayName": format!("U{i}")})).collect();
    admin(&emu, "/_emulator/users", Value::Array(users)).await;
    let mut c = connector(&emu, 10);
    let (changes, batches, summary) = run_import(&mut c, ImportMode::Full, None).await;
    assert_eq!(present(&changes).iter().filter(|o| o.object_class == "user").count(), 25);
    assert_eq!(batches, 5, "1 domain page + 3 user pages + 1 group page");
    assert_eq!(summary.pages, 5);
    emu.stop().await.unwrap();
}

#[tokio::test]
async fn full_import_reads_every_page_of_a_group_s_members() {
    let emu = emulator(EmulatorConfig::default()).await;
    let ids: Vec<String> = (0..25).map(|i| format!("m{i:02}")).collect();
    let users: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "userPrincipalName": format!("{id}@contoso.onmicrosoft.com"), "displayName": id}))
        .collect();
    admin(&emu, "/_emulator/users", Value::Array(users)).await;
    admin(&emu, "/_emulator/groups", json!({"id": "g1", "displayName": "All", "mailEnabled": false, "securityEnabled": true, "mailNickname": "all", "members": ids})).await;
    // Pages of 10: the group's 25 members come in three pages.
    let mut c = connector(&emu, 10);
    let (changes, _, _) = run_import(&mut c, ImportMode::Full, None).await;
    let objs = present(&changes);
    let group = objs.iter().find(|o| o.anchor.as_str() == "g1").unwrap();
    assert_eq!(group.attributes.get("members"), Some(&AttrValues::Reference(ids.clone())));
    // Each page in a `$batch` of its own: a list's next page is asked once its page before is in.
    let member_pages: Vec<usize> = batches(&emu)
        .await
        .iter()
        .map(|b| {
            b.iter()
                .filter(|r| r["url"].as_str().is_some_and(|p| p.starts_with("/groups/g1/members")))
                .count()
        })
        .collect();
    assert_eq!(member_pages, [1, 1, 1]);
    emu.stop().await.unwrap();
}

/// `n` groups `g00`.. of two members each (`m00`.. ), seeded in the emulator.
async fn seed_groups(emu: &RunningEmulator, n: usize) -> Vec<(String, Vec<String>)> {
    let groups: Vec<(String, Vec<String>)> =
        (0..n).map(|i| (format!("g{i:02}"), vec![format!("m{i:02}a"), format!("m{i:02}b")])).collect();
    let users: Vec<Value> = groups
        .iter()
        .flat_map(|(_, m)| m.iter())
        .map(|id| json!({"id": id, "userPrincipalName": format!("{id}@contoso.onmicrosoft.com"), "displayName": id}))
        .collect();
    admin(emu, "/_emulator/users", Value::Array(users)).await;
    for (id, members) in &groups {
        admin(emu, "/_emulator/groups", json!({"id": id, "displayName": id, "mailEnabled": false, "securityEnabled": true, "mailNickname": id, "members": members})).await;
    }
    groups
}

/// The path (without its query) of each request of every `$batch` received, batch by batch.
async fn batched_paths(emu: &RunningEmulator) -> Vec<Vec<String>> {
    batches(emu)
        .await
        .iter()
        .map(|b| b.iter().map(|r| r["url"].as_str().unwrap().split('?').next().unwrap().to_owned()).collect())
        .collect()
}

/// Each group's `members` as imported.
fn imported_members(changes: &[ImportChange]) -> Vec<(String, Option<AttrValues>)> {
    let mut out: Vec<(String, Option<AttrValues>)> = present(changes)
        .iter()
        .filter(|o| o.object_class == "group")
        .map(|o| (o.anchor.as_str().to_owned(), o.attributes.get("members").cloned()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn expected_members(groups: &[(String, Vec<String>)]) -> Vec<(String, Option<AttrValues>)> {
    groups.iter().map(|(g, m)| (g.clone(), Some(AttrValues::Reference(m.clone())))).collect()
}

#[tokio::test]
async fn full_import_reads_the_members_of_twenty_groups_to_a_batch() {
    let emu = emulator(EmulatorConfig::default()).await;
    let groups = seed_groups(&emu, 45).await;
    let mut c = connector(&emu, 999);
    let (changes, _, _) = run_import(&mut c, ImportMode::Full, None).await;
    assert_eq!(imported_members(&changes), expected_members(&groups));
    // Sent together (four batches may be in flight), so they may arrive in any order.
    let mut sizes: Vec<usize> = batches(&emu).await.iter().map(Vec::len).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [5, 20, 20], "45 groups' members in three batches");
    let reads: Vec<String> = batches(&emu)
        .await
        .concat()
        .iter()
        .map(|r| format!("{} {}", r["method"].as_str().unwrap(), r["url"].as_str().unwrap()))
        .collect();
    let mut asked: Vec<String> =
        reads.iter().filter_map(|r| r.strip_prefix("GET /groups/")).map(|r| r[..3].to_owned()).collect();
    asked.sort();
    assert_eq!(
        asked,
        groups.iter().map(|(g, _)| g.clone()).collect::<Vec<_>>(),
        "each group's members asked once: {reads:?}"
    );
    emu.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_member_list_pages_on_in_later_batches_beside_the_others() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut groups = seed_groups(&emu, 5).await;
    let ids: Vec<String> = (0..25).map(|i| format!("z{i:02}")).collect();
    let users: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "userPrincipalName": format!("{id}@contoso.onmicrosoft.com"), "displayName": id}))
        .collect();
    admin(&emu, "/_emulator/users", Value::Array(users)).await;
    admin(&emu, "/_emulator/groups", json!({"id": "g99", "displayName": "All", "mailEnabled": false, "securityEnabled": true, "mailNickname": "all", "members": ids})).await;
    groups.push(("g99".into(), ids));
    // Pages of 10: the six groups come in one page, g99's 25 members in three.
    let mut c = connector(&emu, 10);
    let (changes, _, _) = run_import(&mut c, ImportMode::Full, None).await;
    assert_eq!(imported_members(&changes), expected_members(&groups), "every list whole, in order");
    let asked = batched_paths(&emu).await;
    let members = |g: &str| format!("/groups/{g}/members");
    assert_eq!(
        asked,
        [
            ["g00", "g01", "g02", "g03", "g04", "g99"].map(members).to_vec(),
            vec![members("g99")],
            vec![members("g99")],
        ],
        "g99's next pages, each once its page before is in"
    );
    emu.stop().await.unwrap();
}

#[tokio::test]
async fn a_throttled_or_refused_member_read_in_a_batch_is_retried_on_its_own() {
    let emu = emulator(EmulatorConfig::default()).await;
    let groups = seed_groups(&emu, 5).await;
    let busy = json!({"error": {"code": "TooManyRequests", "message": "Please retry again later."}});
    let unavailable = json!({"error": {"code": "serviceNotAvailable", "message": "Service unavailable."}});
    script(&emu, json!([
        {"method": "GET", "path": "/groups/g01/members", "status": 429, "headers": {"Retry-After": "0.2"}, "body": busy},
        {"method": "GET", "path": "/groups/g03/members", "status": 503, "headers": {"Retry-After": "0.1"}, "body": unavailable}
    ]))
    .await;
    let mut c = connector(&emu, 999);
    let (changes, _, _) = run_import(&mut c, ImportMode::Full, None).await;
    assert_eq!(imported_members(&changes), expected_members(&groups), "every group whole");
    let asked = batched_paths(&emu).await;
    let members = |g: &str| format!("/groups/{g}/members");
    assert_eq!(
        asked,
        [["g00", "g01", "g02", "g03", "g04"].map(members).to_vec(), ["g01", "g03"].map(members).to_vec(),],
        "the two refused reads again, in a batch of their own"
    );
    assert_eq!((c.counters().throttled, c.counters().retried), (1, 1));
    emu.stop().await.unwrap();
}

#[tokio::test]
async fn a_member_batch_cut_as_a_whole_is_sent_again() {
    let emu = emulator(EmulatorConfig::default()).await;
    let groups = seed_groups(&emu, 45).await;
    // Answers to POSTs (here only the `$batch`es of reads) cut after they are made; one batch in
    // flight, so the emulator's rolls fall the same way every run.
    admin(&emu, "/_emulator/faults", json!({"dropRate": 0.4, "seed": 11})).await;
    let mut config = GraphConfig::new("contoso.onmicrosoft.com", DEFAULT_CLIENT_ID);
    config.client_secret_env = Some("UNUSED_IN_TESTS".into());
    config.authority = emu.base_url().to_owned();
    config.graph_url = emu.graph_url();
    config.concurrent_batches = 1;
    let mut c = GraphConnector::with_secret("cloud", config, Secret::new(DEFAULT_CLIENT_SECRET)).unwrap();
    let (changes, _, _) = run_import(&mut c, ImportMode::Full, None).await;
    assert_eq!(imported_members(&changes), expected_members(&groups), "every group whole");
    let stats: Value =
        reqwest::get(format!("{}/_emulator/stats", emu.base_url())).await.unwrap().json().await.unwrap();
    let cut = stats["dropped"].as_u64().unwrap();
    assert!(cut >= 1, "the seed cuts at least one batch: {stats}");
    assert_eq!(c.counters().retried, cut, "each cut batch sent again once: {stats}");
    emu.stop().await.unwrap();
}

#[tokio::test]
async fn a_member_read_refused_for_good_ends_the_import_with_an_error_naming_the_group() {
    let emu = emulator(EmulatorConfig::default()).await;
    seed_groups(&emu, 3).await;
    let denied = json!({"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation."}});
    script(&emu, json!([{"method": "GET", "path": "/groups/g02/members", "status": 403, "body": denied}]))
        .await;
    let mut c = connector(&emu, 999);
    let (tx, _rx) = mpsc::channel(1000);
    let fault = c.import(ImportRequest { mode: ImportMode::Full, watermark: None }, tx).await.unwrap_err();
    assert_eq!(fault.kind, FaultKind::Permission, "{fault:?}");
    assert!(fault.to_string().contains("/groups/g02/members"), "{fault}");
    assert!(fault.to_string().contains("Insufficient privileges"), "{fault}");
    emu.stop().await.unwrap();
}

#[tokio::test]
async fn delta_after_change_and_delete() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(
        &emu,
        "/_emulator/users",
        json!([
            {"id": "u1", "userPrincipalName": "ann@contoso.onmicrosoft.com", "displayName": "Ann"},
            {"id": "u2", "userPrincipalName": "bob@contoso.onmicrosoft.com", "displayName": "Bob"},
            {"id": "u3", "userPrincipalName": "cy@contoso.onmicrosoft.com", "displayName": "Cy"}
        ]),
    )
    .await;
    admin(&emu, "/_emulator/groups", json!({"id": "g1", "displayName": "Team", "mailEnabled": false, "securityEnabled": true, "mailNickname": "team", "members": ["u1"]})).await;
    let mut c = connector(&emu, 999);
    let (_, _, full) = run_import(&mut c, ImportMode::Full, None).await;
    let w = full.final_watermark.unwrap();
    // Changes through the connector's own export.
    let out = c
        .export(vec![
            item(1, ExportKind::Update, "user", Some("u1"), &[("displayName", s("Ann B"))]),
            item(2, ExportKind::Delete, "user", Some("u2"), &[]),
            item(
                3,
                ExportKind::Update,
                "group",
                Some("g1"),
                &[("members", Some(AttrValues::Reference(vec!["u3".into()])))],
            ),
        ])
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.result.is_ok()), "{out:?}");
    let (changes, _, summary) = run_import(&mut c, ImportMode::Delta, Some(w)).await;
    assert!(!summary.sweep_unseen);
    let ann = present(&changes).into_iter().find(|o| o.anchor.as_str() == "u1").unwrap();
    assert_eq!(text(ann, "displayName").as_deref(), Some("Ann B"));
    assert!(
        changes.iter().any(|c| matches!(c, ImportChange::Deleted { anchor, .. } if anchor.as_str() == "u2"))
    );
    let g = changes
        .iter()
        .find_map(|c| match c {
            ImportChange::Incremental { object, value_deltas } if object.anchor.as_str() == "g1" => {
                Some(value_deltas.clone())
            }
            _ => None,
        })
        .unwrap();
    let m = g.values().next().unwrap();
    assert_eq!(m.add, AttrValues::Reference(vec!["u3".into()]));
    assert_eq!(m.remove, AttrValues::Reference(vec!["u1".into()]));
    // An unusable token is WatermarkInvalid.
    let mut bad = summary.final_watermark.unwrap();
    bad.value = serde_json::to_vec(&json!({"users": format!("{}/users/delta?$deltatoken=bogus", emu.graph_url()), "groups": format!("{}/groups/delta?$deltatoken=bogus", emu.graph_url())})).unwrap();
    let (tx, _rx) = mpsc::channel(10);
    let fault =
        c.import(ImportRequest { mode: ImportMode::Delta, watermark: Some(bad) }, tx).await.unwrap_err();
    assert_eq!(fault.kind, FaultKind::WatermarkInvalid);
    emu.stop().await.unwrap();
}

#[tokio::test]
async fn export_add_update_delete_members_and_refusals() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut c = connector(&emu, 999);
    let out = c
        .export(vec![
            item(
                1,
                ExportKind::Add,
                "user",
                None,
                &[
                    ("userPrincipalName", s("ann@contoso.onmicrosoft.com")),
                    ("displayName", s("Ann")),
                    ("onPremisesImmutableId", s("QUFB")),
                    ("proxyAddresses", s("SMTP:x@y")),
                ],
            ),
            item(
                2,
                ExportKind::Add,
                "user",
                None,
                &[
                    ("userPrincipalName", s("ann@contoso.onmicrosoft.com")),
                    ("displayName", s("Ann 2")),
                    ("onPremisesImmutableId", s("QkJC")),
                ],
            ),
            item(
                3,
                ExportKind::Add,
                "user",
                None,
                &[("userPrincipalName", s("cy@contoso.local")), ("displayName", s("Cy"))],
            ),
        ])
        .await
        .unwrap();
    let ann = out[0].result.clone().unwrap().unwrap();
    assert_eq!(out[1].result.clone().unwrap_err().kind, "AttributeValueMustBeUnique");
    assert_eq!(out[2].result.clone().unwrap_err().kind, "IdentityDataValidationFailed");
    let out = c
        .export(vec![
            item(
                4,
                ExportKind::Add,
                "group",
                None,
                &[
                    ("displayName", s("Team")),
                    ("members", Some(AttrValues::Reference(vec![ann.as_str().into()]))),
                ],
            ),
            item(
                5,
                ExportKind::Update,
                "user",
                Some(ann.as_str()),
                &[("jobTitle", s("Boss")), ("department", s("Sales"))],
            ),
        ])
        .await
        .unwrap();
    let team = out[0].result.clone().unwrap().unwrap();
    assert!(out[1].result.is_ok());
    let st = state(&emu).await;
    let u = st["users"].as_array().unwrap().iter().find(|u| u["id"] == ann.as_str()).unwrap();
    assert_eq!(u["jobTitle"], "Boss");
    assert_eq!(u["accountEnabled"], true);
    assert!(u.get("passwordProfile").is_none_or(|p| p.get("password").is_none()));
    let g = st["groups"].as_array().unwrap().iter().find(|g| g["id"] == team.as_str()).unwrap();
    assert_eq!(g["members"], json!([ann.as_str()]));
    let out = c
        .export(vec![
            item(6, ExportKind::Update, "group", Some(team.as_str()), &[("members", None)]),
            item(7, ExportKind::Delete, "user", Some(ann.as_str()), &[]),
            item(8, ExportKind::Delete, "user", Some(ann.as_str()), &[]),
        ])
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.result.is_ok()), "{out:?}");
    let st = state(&emu).await;
    assert!(st["users"].as_array().unwrap().is_empty());
    assert_eq!(st["groups"][0]["members"], json!([]));
    emu.stop().await.unwrap();
}

#[tokio::test]
async fn uncertain_add_is_not_duplicated() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(&emu, "/_emulator/users", json!({"id": "u9", "userPrincipalName": "ann@contoso.onmicrosoft.com", "onPremisesImmutableId": "QUFB"})).await;
    let mut c = connector(&emu, 999);
    let mut it = item(
        1,
        ExportKind::Add,
        "user",
        None,
        &[
            ("userPrincipalName", s("ann@contoso.onmicrosoft.com")),
            ("displayName", s("Ann")),
            ("onPremisesImmutableId", s("QUFB")),
        ],
    );
    it.uncertain = true;
    clear_requests(&emu).await;
    let out = c.export(vec![it]).await.unwrap();
    assert_eq!(out[0].result.clone().unwrap().unwrap().as_str(), "u9");
    assert_eq!(
        out[0].notes,
        vec![
            "POST /users: an earlier attempt's result was never recorded (uncertain), looked up by \
              onPremisesImmutableId before re-sending: found, not re-created"
                .to_owned()
        ]
    );
    assert_eq!(state(&emu).await["users"].as_array().unwrap().len(), 1);
    // Looked up, never sent again: the only request was the lookup.
    let reqs = requests(&emu).await;
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0]["method"], "GET");
    assert!(
        reqs[0]["url"].as_str().unwrap().starts_with("/v1.0/users?$select=id&$filter=onPremisesImmutableId")
    );
    emu.stop().await.unwrap();
}

#[tokio::test]
async fn hard_throttling_still_completes() {
    let emu = emulator(EmulatorConfig {
        throttle: syncctl_graph_emulator::ThrottleConfig::hard(),
        ..Default::default()
    })
    .await;
    let mut c = connector(&emu, 999);
    let items: Vec<ExportItem> = (0..25)
        .map(|i| {
            item(
                i,
                ExportKind::Add,
                "user",
                None,
                &[
                    ("userPrincipalName", s(&format!("u{i}@contoso.onmicrosoft.com"))),
                    ("displayName", s("U")),
                ],
            )
        })
        .collect();
    let out = c.export(items).await.unwrap();
    assert!(out.iter().all(|o| o.result.is_ok()), "{out:?}");
    assert!(c.counters().throttled > 0);
    assert_eq!(state(&emu).await["users"].as_array().unwrap().len(), 25);
    emu.stop().await.unwrap();
}

#[test]
fn config_refuses_a_secret_and_plain_http() {
    let err = toml::from_str::<GraphConfig>("tenant = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("client_secret"));
    let mut c: GraphConfig =
        toml::from_str("tenant = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"X\"\n").unwrap();
    assert_eq!(c.page_size, 999);
    assert!(c.validate().is_ok());
    c.graph_url = "http://graph.example.com/v1.0".into();
    assert!(c.validate().is_err());
    c.graph_url = "http://127.0.0.1:8/v1.0".into();
    assert!(c.validate().is_ok());
    c.page_size = 1000;
    assert!(c.validate().is_err());
    assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(<redacted>)");
}

#[tokio::test]
async fn failed_and_cut_writes_are_retried_without_duplicates() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(&emu, "/_emulator/faults", json!({"writeErrorRate": 0.2, "dropRate": 0.2, "seed": 7})).await;
    let mut c = connector(&emu, 999);
    let items: Vec<ExportItem> = (0..12)
        .map(|i| {
            item(
                i,
                ExportKind::Add,
                "user",
                None,
                &[
                    ("userPrincipalName", s(&format!("u{i}@contoso.onmicrosoft.com"))),
                    ("displayName", s("U")),
                    ("onPremisesImmutableId", s(&format!("SUQ{i}"))),
                ],
            )
        })
        .collect();
    let out = c.export(items).await.unwrap();
    assert!(out.iter().all(|o| o.result.is_ok()), "{out:?}");
    assert!(c.counters().retried > 0);
    assert_eq!(state(&emu).await["users"].as_array().unwrap().len(), 12);
    emu.stop().await.unwrap();
}

fn user_add(id: i64, upn: &str, immutable_id: Option<&str>) -> ExportItem {
    let mut attrs = vec![("userPrincipalName", s(upn)), ("displayName", s(upn))];
    if let Some(i) = immutable_id {
        attrs.push(("onPremisesImmutableId", s(i)));
    }
    item(id, ExportKind::Add, "user", None, &attrs)
}

fn domain<'a>(objs: &[&'a CsObject], anchor: &str) -> Option<&'a CsObject> {
    objs.iter().copied().find(|o| o.object_class == "domain" && o.anchor.as_str() == anchor)
}

fn flag(o: &CsObject, a: &str) -> Option<bool> {
    match o.attributes.get(a) {
        Some(AttrValues::Boolean(b)) => b.first().copied(),
        _ => None,
    }
}

/// The tenant's domains are connector-space objects of class `domain` in full and delta imports:
/// anchor = the name in lower case, DN `CN=<name>,CN=domains`, `id` as Graph gives it, the three
/// flags as Booleans and `authenticationType`. A domain gone from `/domains` is not emitted by the
/// next full import (which sweeps); a delta import emits every domain again.
#[tokio::test]
async fn domains_are_connector_space_objects() {
    let emu = emulator(EmulatorConfig {
        verified_domains: vec!["contoso.com".into()],
        unverified_domains: vec!["contoso.local".into()],
        ..Default::default()
    })
    .await;
    let mut c = connector(&emu, 999);
    let (changes, _, full) = run_import(&mut c, ImportMode::Full, None).await;
    assert!(full.sweep_unseen);
    let objs = present(&changes);
    assert_eq!(objs.iter().filter(|o| o.object_class == "domain").count(), 3);
    let initial = domain(&objs, "contoso.onmicrosoft.com").unwrap();
    assert_eq!(initial.dn.as_str(), "CN=contoso.onmicrosoft.com,CN=domains");
    assert_eq!(text(initial, "id").as_deref(), Some("contoso.onmicrosoft.com"));
    assert_eq!(
        (flag(initial, "isVerified"), flag(initial, "isInitial"), flag(initial, "isDefault")),
        (Some(true), Some(true), Some(false))
    );
    assert_eq!(text(initial, "authenticationType").as_deref(), Some("Managed"));
    let custom = domain(&objs, "contoso.com").unwrap();
    assert_eq!((flag(custom, "isVerified"), flag(custom, "isDefault")), (Some(true), Some(true)));
    let local = domain(&objs, "contoso.local").unwrap();
    assert_eq!((flag(local, "isVerified"), flag(local, "isInitial")), (Some(false), Some(false)));
    assert_eq!(local.attributes.len(), 5, "exactly id, isVerified, isInitial, isDefault, authenticationType");

    // Graph gives a name in mixed case and drops contoso.local: the anchor is lower case, `id`
    // keeps Graph's spelling, and the full import no longer emits the removed domain.
    script(
        &emu,
        json!({"method": "GET", "path": "/domains", "status": 200, "times": 2, "body": {"value": [
            {"id": "contoso.onmicrosoft.com", "authenticationType": "Managed", "isDefault": false, "isInitial": true, "isVerified": true},
            {"id": "Contoso.COM", "authenticationType": "Federated", "isDefault": true, "isInitial": false, "isVerified": true}
        ]}}),
    )
    .await;
    let (changes, _, full) = run_import(&mut c, ImportMode::Full, None).await;
    assert!(full.sweep_unseen);
    let objs = present(&changes);
    assert_eq!(objs.iter().filter(|o| o.object_class == "domain").count(), 2);
    assert!(domain(&objs, "contoso.local").is_none());
    let custom = domain(&objs, "contoso.com").unwrap();
    assert_eq!(custom.dn.as_str(), "CN=contoso.com,CN=domains");
    assert_eq!(text(custom, "id").as_deref(), Some("Contoso.COM"));
    assert_eq!(text(custom, "authenticationType").as_deref(), Some("Federated"));

    // A delta import emits them all again as present (the second scripted answer).
    let (changes, _, delta) = run_import(&mut c, ImportMode::Delta, full.final_watermark).await;
    assert!(!delta.sweep_unseen);
    let objs = present(&changes);
    assert_eq!(objs.iter().filter(|o| o.object_class == "domain").count(), 2);
    assert_eq!(text(domain(&objs, "contoso.com").unwrap(), "id").as_deref(), Some("Contoso.COM"));
    assert!(c.capabilities().object_types.contains(&"domain".to_owned()));
    emu.stop().await.unwrap();
}

/// Without the permission to read domains (403) the import goes on: no domain objects, a note.
#[tokio::test]
async fn domains_refused_is_a_note_not_a_failure() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(&emu, "/_emulator/users", json!({"id": "u1", "userPrincipalName": "ann@contoso.onmicrosoft.com"}))
        .await;
    script(
        &emu,
        json!({"method": "GET", "path": "/domains", "status": 403, "times": 2, "body": {"error": {
            "code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation."}}}),
    )
    .await;
    let mut c = connector(&emu, 999);
    let (changes, _, full) = run_import(&mut c, ImportMode::Full, None).await;
    let objs = present(&changes);
    assert!(objs.iter().all(|o| o.object_class != "domain"));
    assert!(objs.iter().any(|o| o.anchor.as_str() == "u1"));
    assert_eq!(full.notes.len(), 1, "{:?}", full.notes);
    assert!(
        full.notes[0].starts_with("GET /domains refused (403 Authorization_RequestDenied)"),
        "{:?}",
        full.notes
    );
    let (_, _, delta) = run_import(&mut c, ImportMode::Delta, full.final_watermark).await;
    assert!(delta.notes.iter().any(|n| n.starts_with("GET /domains refused")), "{:?}", delta.notes);
    emu.stop().await.unwrap();
}

/// The writes of a call go through `$batch`, at most 20 per batch, creates first; an update with
/// attribute and member changes is one PATCH, one PATCH with `members@odata.bind` for the adds and
/// a `$ref` DELETE per removed member; each request counts as one write.
#[tokio::test]
async fn export_goes_through_batches_of_at_most_20() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(
        &emu,
        "/_emulator/users",
        json!([
            {"id": "m1", "userPrincipalName": "m1@contoso.onmicrosoft.com"},
            {"id": "m2", "userPrincipalName": "m2@contoso.onmicrosoft.com"},
            {"id": "old", "userPrincipalName": "old@contoso.onmicrosoft.com"}
        ]),
    )
    .await;
    admin(&emu, "/_emulator/groups", json!({"id": "g1", "displayName": "Team", "mailEnabled": false, "securityEnabled": true, "mailNickname": "team", "members": ["m1"]})).await;
    let mut c = connector(&emu, 999);
    clear_requests(&emu).await;
    let mut items: Vec<ExportItem> = (0..25)
        .map(|i| user_add(i, &format!("n{i}@contoso.onmicrosoft.com"), Some(&format!("SU0{i}"))))
        .collect();
    items.insert(
        3,
        item(
            100,
            ExportKind::Update,
            "group",
            Some("g1"),
            &[
                ("displayName", s("Team 2")),
                ("description", s("The team")),
                ("members", Some(AttrValues::Reference(vec!["m2".into()]))),
            ],
        ),
    );
    items.push(item(101, ExportKind::Delete, "user", Some("old"), &[]));
    let out = c.export(items).await.unwrap();
    assert_eq!(out.len(), 27);
    assert!(out.iter().all(|o| o.result.is_ok() && o.notes.is_empty()), "{out:?}");
    assert_eq!(out[3].id, 100, "outcomes in item order");
    assert!(out[3].result.clone().unwrap().is_none());
    assert!(out[0].result.clone().unwrap().is_some());

    let reqs = requests(&emu).await;
    assert!(
        reqs.iter().filter(|r| r["method"] != "GET").all(|r| r["url"] == "/v1.0/$batch"),
        "every write in a $batch"
    );
    let mut sizes: Vec<usize> = batches(&emu).await.iter().map(Vec::len).collect();
    // 25 creates (20 + 5, in flight together, so in either order), then PATCH + 1 PATCH of
    // members + 1 member remove + DELETE.
    sizes[..2].sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(sizes, vec![20, 5, 4]);
    let second = &batches(&emu).await[2];
    let shape: Vec<(String, String)> = second
        .iter()
        .map(|r| (r["method"].as_str().unwrap().to_owned(), r["url"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("PATCH".into(), "/groups/g1".into()),
            ("PATCH".into(), "/groups/g1".into()),
            ("DELETE".into(), "/groups/g1/members/m1/$ref".into()),
            ("DELETE".into(), "/users/old".into()),
        ]
    );
    assert_eq!(
        second[0]["body"],
        json!({"displayName": "Team 2", "description": "The team"}),
        "one PATCH, every attribute"
    );
    assert_eq!(
        second[1]["body"],
        json!({"members@odata.bind": [format!("{}/directoryObjects/m2", emu.graph_url())]}),
        "member adds bound in a PATCH"
    );
    assert_eq!(c.counters().writes, 29, "each request in a batch is one write for the pacer");
    let st = state(&emu).await;
    assert_eq!(st["users"].as_array().unwrap().len(), 27);
    let g = &st["groups"][0];
    assert_eq!((g["displayName"].as_str(), g["members"].clone()), (Some("Team 2"), json!(["m2"])));
    emu.stop().await.unwrap();
}

/// An item that needs several requests succeeds only if all of them do; other items of the batch
/// are not affected.
#[tokio::test]
async fn an_item_fails_when_one_of_its_requests_does() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(&emu, "/_emulator/users", json!({"id": "u1", "userPrincipalName": "ann@contoso.onmicrosoft.com"}))
        .await;
    admin(&emu, "/_emulator/groups", json!([
        {"id": "g1", "displayName": "Team", "mailEnabled": false, "securityEnabled": true, "mailNickname": "team"},
        {"id": "g2", "displayName": "Other", "mailEnabled": false, "securityEnabled": true, "mailNickname": "other"}
    ]))
    .await;
    let mut c = connector(&emu, 999);
    let out = c
        .export(vec![
            item(
                1,
                ExportKind::Update,
                "group",
                Some("g1"),
                &[
                    ("displayName", s("Team 2")),
                    ("members", Some(AttrValues::Reference(vec!["u1".into(), "nobody".into()]))),
                ],
            ),
            item(
                2,
                ExportKind::Update,
                "group",
                Some("g2"),
                &[("members", Some(AttrValues::Reference(vec!["u1".into()])))],
            ),
            item(3, ExportKind::Add, "contact", None, &[("displayName", s("Cy"))]),
        ])
        .await
        .unwrap();
    let f = out[0].result.clone().unwrap_err();
    assert_eq!(f.kind, "ObjectNotFound");
    assert!(f.message.contains("(request: PATCH /groups/g1)"), "{}", f.message);
    assert!(out[1].result.is_ok());
    let f = out[2].result.clone().unwrap_err();
    assert_eq!((f.kind.as_str(), f.retryable), ("ObjectTypeNotSupported", false));
    assert!(f.message.contains("contacts are out of scope"));
    // A group created with a member that cannot be added still reports its anchor (else the engine
    // would create it again): its create that bound the member is refused (404), it is created
    // again without it, and the failed member change is a note.
    let out = c
        .export(vec![item(
            4,
            ExportKind::Add,
            "group",
            None,
            &[("displayName", s("New")), ("members", Some(AttrValues::Reference(vec!["nobody".into()])))],
        )])
        .await
        .unwrap();
    let anchor = out[0].result.clone().unwrap().unwrap();
    assert_eq!(out[0].notes.len(), 2, "{:?}", out[0].notes);
    assert!(
        out[0].notes[0].starts_with("created without its members: the create that bound them was refused")
    );
    assert!(
        out[0].notes[1].starts_with("created, but member changes failed (PATCH /groups/"),
        "{:?}",
        out[0].notes
    );
    assert!(state(&emu).await["groups"].as_array().unwrap().iter().any(|g| g["id"] == anchor.as_str()));
    emu.stop().await.unwrap();
}

/// 429 inside a batch: only the throttled requests are sent again, after their own Retry-After,
/// and each retry is a note of its item.
#[tokio::test]
async fn throttled_batch_requests_are_retried_with_notes() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(&emu, "/_emulator/faults", json!({"throttle": {"writes": 3, "windowSeconds": 1}})).await;
    let mut c = connector(&emu, 999);
    let items: Vec<ExportItem> =
        (0..5).map(|i| user_add(i, &format!("t{i}@contoso.onmicrosoft.com"), None)).collect();
    let out = c.export(items).await.unwrap();
    assert!(out.iter().all(|o| o.result.is_ok()), "{out:?}");
    let noted: Vec<&ExportOutcome> = out.iter().filter(|o| !o.notes.is_empty()).collect();
    assert!(noted.len() >= 2, "{out:?}");
    for o in &noted {
        for n in &o.notes {
            assert_eq!(n, "POST /users: 429 Too Many Requests, Retry-After 1 s, retried");
        }
    }
    assert_eq!(c.counters().throttled as usize, out.iter().map(|o| o.notes.len()).sum::<usize>());
    assert_eq!(state(&emu).await["users"].as_array().unwrap().len(), 5);
    emu.stop().await.unwrap();
}

/// A 5xx inside a batch is retried with backoff and noted with its attempt; a 5xx on every
/// attempt ends as a retryable failure.
#[tokio::test]
async fn server_errors_in_a_batch_are_retried_with_notes() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(&emu, "/_emulator/users", json!([{"id": "u1", "userPrincipalName": "ann@contoso.onmicrosoft.com"}, {"id": "u2", "userPrincipalName": "bob@contoso.onmicrosoft.com"}])).await;
    let unavailable = json!({"error": {"code": "serviceNotAvailable", "message": "The service is temporarily unavailable."}});
    script(
        &emu,
        json!([
            {"method": "PATCH", "path": "/users/u1", "status": 503, "body": unavailable},
            {"method": "PATCH", "path": "/users/u2", "status": 503, "times": 6, "headers": {"Retry-After": "0.1"}, "body": unavailable}
        ]),
    )
    .await;
    let mut c = connector(&emu, 999);
    let out = c
        .export(vec![
            item(1, ExportKind::Update, "user", Some("u1"), &[("jobTitle", s("Boss"))]),
            item(2, ExportKind::Update, "user", Some("u2"), &[("jobTitle", s("Boss"))]),
        ])
        .await
        .unwrap();
    assert!(out[0].result.is_ok());
    assert_eq!(
        out[0].notes,
        vec!["PATCH /users/u1: 503 serviceNotAvailable (attempt 1 of 6), retried after 0.4 s".to_owned()]
    );
    let f = out[1].result.clone().unwrap_err();
    assert_eq!((f.kind.as_str(), f.retryable), ("ServiceUnavailable", true));
    assert_eq!(out[1].notes.len(), 5, "{:?}", out[1].notes);
    assert_eq!(
        out[1].notes[4],
        "PATCH /users/u2: 503 serviceNotAvailable (attempt 5 of 6), retried after 0.1 s"
    );
    let st = state(&emu).await;
    assert_eq!(st["users"].as_array().unwrap().iter().find(|u| u["id"] == "u1").unwrap()["jobTitle"], "Boss");
    emu.stop().await.unwrap();
}

/// A cut `$batch`: creates with an ImmutableID are looked up before being sent again (found: not
/// created twice), a create without one is reported as unknown (retryable) and not sent again,
/// idempotent writes are sent again.
#[tokio::test]
async fn cut_batch_looks_creates_up_and_resends_the_rest() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(&emu, "/_emulator/users", json!({"id": "u1", "userPrincipalName": "ann@contoso.onmicrosoft.com"}))
        .await;
    let mut c = connector(&emu, 999);
    admin(&emu, "/_emulator/faults", json!({"dropRate": 1.0})).await;
    let out = c
        .export(vec![
            user_add(1, "bob@contoso.onmicrosoft.com", Some("Qk9C")),
            user_add(2, "cy@contoso.onmicrosoft.com", None),
        ])
        .await
        .unwrap();
    assert!(out[0].result.is_ok(), "{out:?}");
    assert_eq!(
        out[0].notes,
        vec!["POST /users: connection cut, looked up by onPremisesImmutableId before re-sending: found, not re-created".to_owned()]
    );
    let f = out[1].result.clone().unwrap_err();
    assert_eq!((f.kind.as_str(), f.retryable), ("ServiceUnavailable", true));
    assert!(f.message.contains("outcome unknown"));
    assert_eq!(
        out[1].notes,
        vec!["POST /users: connection cut; outcome unknown, not sent again (no onPremisesImmutableId to look it up by)".to_owned()]
    );
    // An update whose batch is cut (after it was applied) is sent again. With this seed the
    // emulator cuts the first batch and not the second.
    admin(&emu, "/_emulator/faults", json!({"dropRate": 0.5, "seed": 3})).await;
    let out = c
        .export(vec![item(3, ExportKind::Update, "user", Some("u1"), &[("jobTitle", s("Boss"))])])
        .await
        .unwrap();
    assert!(out[0].result.is_ok(), "{out:?}");
    assert_eq!(
        out[0].notes,
        vec!["PATCH /users/u1: connection cut (attempt 1 of 6), retried after 0.4 s".to_owned()]
    );
    assert_eq!(batches(&emu).await.iter().filter(|b| b[0]["method"] == "PATCH").count(), 2);
    admin(&emu, "/_emulator/faults", json!({})).await;
    let st = state(&emu).await;
    assert_eq!(st["users"].as_array().unwrap().len(), 3, "bob once, cy once (cut after it was applied), ann");
    assert_eq!(st["users"].as_array().unwrap().iter().find(|u| u["id"] == "u1").unwrap()["jobTitle"], "Boss");
    emu.stop().await.unwrap();
}

/// An object another engine synchronizes (`onPremisesSyncEnabled: true`, another ImmutableID):
/// Graph refuses to change it; the export reports `ObjectSynchronizedByAnotherEngine`, names the
/// object, says it is reported and not fought, and does not retry.
#[tokio::test]
async fn object_synchronized_by_another_engine_is_reported_not_fought() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(&emu, "/_emulator/users", json!({"id": "s1", "userPrincipalName": "dirsync@contoso.onmicrosoft.com", "onPremisesSyncEnabled": true, "onPremisesImmutableId": "T1RIRVI="})).await;
    admin(&emu, "/_emulator/users", json!({"id": "u1", "userPrincipalName": "ann@contoso.onmicrosoft.com"}))
        .await;
    admin(&emu, "/_emulator/groups", json!({"id": "sg", "displayName": "Synced", "mailEnabled": false, "securityEnabled": true, "mailNickname": "synced", "onPremisesSyncEnabled": true})).await;
    let mut c = connector(&emu, 999);
    let out = c
        .export(vec![
            item(
                1,
                ExportKind::Update,
                "user",
                Some("s1"),
                &[("userPrincipalName", s("dirsync@contoso.onmicrosoft.com")), ("jobTitle", s("Boss"))],
            ),
            item(2, ExportKind::Delete, "user", Some("s1"), &[]),
            item(
                3,
                ExportKind::Update,
                "group",
                Some("sg"),
                &[("members", Some(AttrValues::Reference(vec!["u1".into()])))],
            ),
        ])
        .await
        .unwrap();
    for o in &out {
        let f = o.result.clone().unwrap_err();
        assert_eq!(f.kind, "ObjectSynchronizedByAnotherEngine", "{f:?}");
        assert!(!f.retryable);
        assert!(f.message.contains("Reported, not fought"), "{}", f.message);
        assert!(o.notes.is_empty(), "not retried: {:?}", o.notes);
    }
    let m = out[0].result.clone().unwrap_err().message;
    assert!(
        m.starts_with(
            "user s1 (dirsync@contoso.onmicrosoft.com) is synchronized to Entra ID by another engine"
        ),
        "{m}"
    );
    assert!(out[2].result.clone().unwrap_err().message.starts_with("group sg"));
    let st = state(&emu).await;
    let s1 = st["users"].as_array().unwrap().iter().find(|u| u["id"] == "s1").unwrap().clone();
    assert!(s1.get("jobTitle").is_none_or(Value::is_null), "nothing changed");
    assert_eq!(st["groups"][0]["members"], json!([]));
    emu.stop().await.unwrap();
}

/// Notes and failures never carry the client secret, an access token or a generated password.
#[tokio::test]
async fn notes_and_failures_carry_no_secret() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(&emu, "/_emulator/faults", json!({"writeErrorRate": 0.3, "dropRate": 0.3, "seed": 3, "throttle": {"writes": 4, "windowSeconds": 1}})).await;
    let mut c = connector(&emu, 999);
    let mut items: Vec<ExportItem> = (0..8)
        .map(|i| user_add(i, &format!("x{i}@contoso.onmicrosoft.com"), Some(&format!("WDA{i}"))))
        .collect();
    items.push(user_add(9, "y@contoso.local", None));
    let out = c.export(items).await.unwrap();
    let text: String = out
        .iter()
        .flat_map(|o| o.notes.iter().cloned().chain(o.result.clone().err().map(|f| f.message)))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!text.is_empty());
    for secret in [DEFAULT_CLIENT_SECRET, "emu1.", "Bearer", "Aa1!", "password"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    emu.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Contract tests: the connector's requests, as the emulator recorded them, against JSON typed
// from Microsoft's Graph documentation (its example values adapted to this tenant).

/// Create user. Source: <https://learn.microsoft.com/en-us/graph/api/user-post-users> (example 1:
/// accountEnabled, displayName, mailNickname, userPrincipalName, passwordProfile), plus
/// onPremisesImmutableId, which the same page lists for users of a federated domain. Adapted:
/// `forceChangePasswordNextSignIn` is false (synchronized users sign in with their on-premises
/// password) and the emulator records the password redacted.
#[tokio::test]
async fn contract_create_user_request() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut c = connector(&emu, 999);
    clear_requests(&emu).await;
    let out = c
        .export(vec![item(
            1,
            ExportKind::Add,
            "user",
            None,
            &[
                ("accountEnabled", Some(AttrValues::Boolean(vec![true]))),
                ("displayName", s("Adele Vance")),
                ("mailNickname", s("AdeleV")),
                ("userPrincipalName", s("AdeleV@contoso.onmicrosoft.com")),
                ("onPremisesImmutableId", s("f+bH/Mb+ZUq4IS9AopLRhQ==")),
            ],
        )])
        .await
        .unwrap();
    assert!(out[0].result.is_ok(), "{out:?}");
    let batch = batches(&emu).await;
    assert_eq!(batch.len(), 1);
    assert_eq!(
        batch[0][0]["body"],
        json!({
            "accountEnabled": true,
            "displayName": "Adele Vance",
            "mailNickname": "AdeleV",
            "userPrincipalName": "AdeleV@contoso.onmicrosoft.com",
            "passwordProfile": {
                "forceChangePasswordNextSignIn": false,
                "password": "<redacted>"
            },
            "onPremisesImmutableId": "f+bH/Mb+ZUq4IS9AopLRhQ=="
        })
    );
    emu.stop().await.unwrap();
}

/// `$batch` request body. Source: <https://learn.microsoft.com/en-us/graph/json-batching>
/// ("Example JSON batch request": `requests` of `id`, `method`, `url` relative to the version,
/// `headers` with Content-Type when there is a `body`, as its requests 3 (DELETE) and 4 (PATCH);
/// the batch itself a POST to `/$batch` with Content-Type application/json).
#[tokio::test]
async fn contract_batch_request_body() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(&emu, "/_emulator/users", json!({"id": "161ab652-cdbc-490d-82a4-0ada1f0db247", "userPrincipalName": "lynner@contoso.onmicrosoft.com"})).await;
    admin(&emu, "/_emulator/groups", json!({"id": "0e226165-c685-41ce-8bfc-df8360ab325d", "displayName": "G", "mailEnabled": false, "securityEnabled": true, "mailNickname": "g"})).await;
    let mut c = connector(&emu, 999);
    clear_requests(&emu).await;
    let out = c
        .export(vec![
            item(
                1,
                ExportKind::Update,
                "user",
                Some("161ab652-cdbc-490d-82a4-0ada1f0db247"),
                &[("department", s("Redmond"))],
            ),
            item(2, ExportKind::Delete, "group", Some("0e226165-c685-41ce-8bfc-df8360ab325d"), &[]),
        ])
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.result.is_ok()), "{out:?}");
    let reqs = requests(&emu).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0]["method"], "POST");
    assert_eq!(reqs[0]["url"], "/v1.0/$batch");
    assert_eq!(reqs[0]["headers"]["content-type"], "application/json");
    assert_eq!(
        reqs[0]["body"],
        json!({
            "requests": [
                {
                    "id": "1",
                    "url": "/users/161ab652-cdbc-490d-82a4-0ada1f0db247",
                    "method": "PATCH",
                    "body": {"department": "Redmond"},
                    "headers": {"Content-Type": "application/json"}
                },
                {
                    "id": "2",
                    "method": "DELETE",
                    "url": "/groups/0e226165-c685-41ce-8bfc-df8360ab325d"
                }
            ]
        })
    );
    emu.stop().await.unwrap();
}

/// Add members in one request: `PATCH /groups/{group-id}` with `{"members@odata.bind":
/// ["https://graph.microsoft.com/v1.0/directoryObjects/{id}", ...]}`, up to 20 (the base adapted to
/// the emulator's). Source: <https://learn.microsoft.com/en-us/graph/api/group-post-members>
/// (example 2, "add multiple members to a group in a single request"); removal as
/// <https://learn.microsoft.com/en-us/graph/api/group-delete-members> (`DELETE /groups/{group-id}/members/{directory-object-id}/$ref`).
#[tokio::test]
async fn contract_member_requests() {
    let emu = emulator(EmulatorConfig::default()).await;
    admin(&emu, "/_emulator/users", json!([{"id": "u1", "userPrincipalName": "a@contoso.onmicrosoft.com"}, {"id": "u2", "userPrincipalName": "b@contoso.onmicrosoft.com"}])).await;
    admin(&emu, "/_emulator/groups", json!({"id": "g1", "displayName": "G", "mailEnabled": false, "securityEnabled": true, "mailNickname": "g", "members": ["u2"]})).await;
    let mut c = connector(&emu, 999);
    clear_requests(&emu).await;
    let out = c
        .export(vec![item(
            1,
            ExportKind::Update,
            "group",
            Some("g1"),
            &[("members", Some(AttrValues::Reference(vec!["u1".into()])))],
        )])
        .await
        .unwrap();
    assert!(out[0].result.is_ok(), "{out:?}");
    let batch = batches(&emu).await;
    assert_eq!(
        batch[0][0],
        json!({
            "id": "1",
            "method": "PATCH",
            "url": "/groups/g1",
            "headers": {"Content-Type": "application/json"},
            "body": {"members@odata.bind": [format!("{}/directoryObjects/u1", emu.graph_url())]}
        })
    );
    assert_eq!(batch[0][1], json!({"id": "2", "method": "DELETE", "url": "/groups/g1/members/u2/$ref"}));
    emu.stop().await.unwrap();
}

/// A 429 with Retry-After. Source: <https://learn.microsoft.com/en-us/graph/throttling> ("Sample
/// response": `Retry-After: 2.128` and its `TooManyRequests` body; "Throttling and batching": a
/// throttled request of a batch carries its own 429 and retry-after, to be retried after it).
#[tokio::test]
async fn contract_429_retry_after_is_honoured() {
    let emu = emulator(EmulatorConfig::default()).await;
    let throttled = json!({
        "error": {
            "code": "TooManyRequests",
            "innerError": {
                "code": "429",
                "date": "2020-08-18T12:51:51",
                "message": "Please retry after",
                "request-id": "94fb3b52-452a-4535-a601-69e0a90e3aa2",
                "status": "429"
            },
            "message": "Please retry again later."
        }
    });
    // Inside a batch (the POST /users of the export) and on a plain GET (the import's roles).
    script(&emu, json!([
        {"method": "POST", "path": "/users", "status": 429, "headers": {"Retry-After": "2.128"}, "body": throttled},
        {"method": "GET", "path": "/directoryRoles", "status": 429, "headers": {"Retry-After": "0.2"}, "body": throttled}
    ]))
    .await;
    let mut c = connector(&emu, 999);
    let out = c.export(vec![user_add(1, "adelev@contoso.onmicrosoft.com", None)]).await.unwrap();
    assert!(out[0].result.is_ok(), "{out:?}");
    assert_eq!(
        out[0].notes,
        vec!["POST /users: 429 Too Many Requests, Retry-After 2.128 s, retried".to_owned()]
    );
    assert_eq!(batches(&emu).await.len(), 2, "sent again in a new batch");
    assert_eq!(state(&emu).await["users"].as_array().unwrap().len(), 1);
    let (changes, _, _) = run_import(&mut c, ImportMode::Full, None).await;
    assert_eq!(present(&changes).iter().filter(|o| o.object_class == "user").count(), 1);
    assert_eq!(c.counters().throttled, 2);
    emu.stop().await.unwrap();
}

/// Delta pages. Sources: <https://learn.microsoft.com/en-us/graph/api/user-delta> and its walk-through
/// <https://learn.microsoft.com/en-us/graph/delta-query-users>: a page with `@odata.nextLink` (its
/// `$skiptoken` URL followed as given) holding users and `{"id", "@removed": {"reason": "deleted"}}`,
/// then a last page with `@odata.deltaLink`, which becomes the watermark. Links adapted to the emulator.
#[tokio::test]
async fn contract_delta_pages_next_delta_and_removed() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut c = connector(&emu, 999);
    let (_, _, full) = run_import(&mut c, ImportMode::Full, None).await;
    let mut w = full.final_watermark.unwrap();
    let mut links: Value = serde_json::from_slice(&w.value).unwrap();
    let g = emu.graph_url();
    links["users"] = json!(format!("{g}/users/delta?$deltatoken=start"));
    w.value = serde_json::to_vec(&links).unwrap();
    let skip = "oEBwdSP6uehIAxQOWq_3Ksh_TLol6KIm3stvdc6hGhZRi1hQ7Spe__dpvm3U4zReE4CYXC2zOtaKdi7KHlUtC2CbRiBIUwOxPKLa";
    let delta = "oEcOySpF_hWYmTIUZBOIfPzcwisr_rPe8o9M54L45qEXQGmvQC6T2dbL-9O7nSU-njKhFiGlAZqewNAThmCVnNxqPu5gOBegrm1CaVZ-ZtFZ2tPOAO98OD9y0ao460";
    script(&emu, json!([
        {"method": "GET", "path": "/users/delta", "status": 200, "body": {
            "@odata.context": format!("{g}/$metadata#users(displayName,givenName,surname)"),
            "@odata.nextLink": format!("{g}/users/delta?$skiptoken={skip}"),
            "value": [
                {"displayName": "Cameron White", "givenName": "Cameron", "surname": "White", "id": "ffff7b1a-13b6-477b-8c0c-380905cd99f7"},
                {"id": "86462606-fde0-4fc4-9e0c-a20eb73e54c6", "@removed": {"reason": "deleted"}},
                {"displayName": "Conf Room Adams", "id": "6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0"}
            ]
        }},
        {"method": "GET", "path": "/users/delta", "status": 200, "body": {
            "@odata.context": format!("{g}/$metadata#users"),
            "@odata.deltaLink": format!("{g}/users/delta?$deltatoken={delta}"),
            "value": [
                {"displayName": "Lidia Holloway", "givenName": "Lidia", "surname": "Holloway", "id": "25dcffff-959e-4ece-9973-e5d9b800e8cc"}
            ]
        }}
    ]))
    .await;
    clear_requests(&emu).await;
    let (changes, _, summary) = run_import(&mut c, ImportMode::Delta, Some(w)).await;
    let users: Vec<&CsObject> = present(&changes).into_iter().filter(|o| o.object_class == "user").collect();
    let ids: Vec<&str> = users.iter().map(|o| o.anchor.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "ffff7b1a-13b6-477b-8c0c-380905cd99f7",
            "6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0",
            "25dcffff-959e-4ece-9973-e5d9b800e8cc"
        ]
    );
    assert_eq!(text(users[0], "surname").as_deref(), Some("White"));
    let deleted: Vec<&str> = changes
        .iter()
        .filter_map(
            |c| if let ImportChange::Deleted { anchor, .. } = c { Some(anchor.as_str()) } else { None },
        )
        .collect();
    assert_eq!(deleted, vec!["86462606-fde0-4fc4-9e0c-a20eb73e54c6"]);
    let user_gets: Vec<String> = requests(&emu)
        .await
        .iter()
        .filter(|r| r["url"].as_str().unwrap().starts_with("/v1.0/users/delta"))
        .map(|r| r["url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        user_gets,
        vec![
            "/v1.0/users/delta?$deltatoken=start".to_owned(),
            format!("/v1.0/users/delta?$skiptoken={skip}")
        ]
    );
    let links: Value = serde_json::from_slice(&summary.final_watermark.unwrap().value).unwrap();
    assert_eq!(links["users"], json!(format!("{g}/users/delta?$deltatoken={delta}")));
    emu.stop().await.unwrap();
}

/// A new group is created with up to 20 of its members bound (`members@odata.bind` in `POST
/// /groups`: one write), the rest added by `PATCH` with up to 20 more each; no `$ref` adds.
/// Source: <https://learn.microsoft.com/en-us/graph/api/group-post-groups> (example 2, a group
/// with members; up to 20 relationships per request) and
/// <https://learn.microsoft.com/en-us/graph/api/group-post-members> (example 2).
#[tokio::test]
async fn contract_group_created_with_members_bound() {
    let emu = emulator(EmulatorConfig::default()).await;
    let users: Vec<Value> = (0..45)
        .map(|i| json!({"id": format!("u{i:02}"), "userPrincipalName": format!("u{i}@contoso.onmicrosoft.com")}))
        .collect();
    admin(&emu, "/_emulator/users", Value::Array(users)).await;
    let mut c = connector(&emu, 999);
    clear_requests(&emu).await;
    let members = |n: usize| Some(AttrValues::Reference((0..n).map(|i| format!("u{i:02}")).collect()));
    let out = c
        .export(vec![
            item(1, ExportKind::Add, "group", None, &[("displayName", s("Small")), ("members", members(12))]),
            item(2, ExportKind::Add, "group", None, &[("displayName", s("Big")), ("members", members(45))]),
        ])
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.result.is_ok() && o.notes.is_empty()), "{out:?}");
    let b = batches(&emu).await;
    assert_eq!(b.len(), 2, "the creates, then the rest of the big group's members");
    let creates = &b[0];
    assert_eq!(creates.len(), 2);
    let bound: Vec<usize> =
        creates.iter().map(|r| r["body"]["members@odata.bind"].as_array().unwrap().len()).collect();
    assert_eq!(bound, vec![12, 20]);
    assert_eq!(
        creates[0]["body"]["members@odata.bind"][0],
        json!(format!("{}/directoryObjects/u00", emu.graph_url()))
    );
    let rest: Vec<(String, usize)> = b[1]
        .iter()
        .map(|r| {
            (
                format!("{} {}", r["method"].as_str().unwrap(), r["url"].as_str().unwrap()),
                r["body"]["members@odata.bind"].as_array().unwrap().len(),
            )
        })
        .collect();
    let big = out[1].result.clone().unwrap().unwrap();
    assert_eq!(rest, vec![(format!("PATCH /groups/{big}"), 20), (format!("PATCH /groups/{big}"), 5)]);
    assert_eq!(c.counters().writes, 4, "2 creates and 2 PATCHes for 57 members");
    let st = state(&emu).await;
    let sizes: Vec<usize> =
        st["groups"].as_array().unwrap().iter().map(|g| g["members"].as_array().unwrap().len()).collect();
    let mut sizes = sizes;
    sizes.sort_unstable();
    assert_eq!(sizes, vec![12, 45]);
    emu.stop().await.unwrap();
}

/// The pacer set to the emulator's own budget (Graph's rule: each request in a `$batch` is one
/// write, in a sliding window) keeps every write under it: the export needs several windows and
/// is never answered 429, with several batches in flight. A pacer that started a write's window
/// when it was sent (before Graph counts it) would run ahead of Graph's window and be refused.
/// Source: <https://learn.microsoft.com/en-us/graph/throttling> (batch requests are evaluated
/// against the limits one by one).
#[tokio::test]
async fn pacer_at_the_budget_gets_no_429() {
    let emu = emulator(EmulatorConfig {
        throttle: syncctl_graph_emulator::ThrottleConfig { writes: 15, window_seconds: 1 },
        ..Default::default()
    })
    .await;
    let mut config = GraphConfig::new("contoso.onmicrosoft.com", DEFAULT_CLIENT_ID);
    config.client_secret_env = Some("UNUSED_IN_TESTS".into());
    config.authority = emu.base_url().to_owned();
    config.graph_url = emu.graph_url();
    config.write_budget = 15;
    config.write_window_seconds = 1;
    config.concurrent_batches = 4;
    let mut c = GraphConnector::with_secret("cloud", config, Secret::new(DEFAULT_CLIENT_SECRET)).unwrap();
    let items: Vec<ExportItem> =
        (0..50).map(|i| user_add(i, &format!("p{i}@contoso.onmicrosoft.com"), None)).collect();
    let out = c.export(items).await.unwrap();
    assert!(out.iter().all(|o| o.result.is_ok() && o.notes.is_empty()), "{out:?}");
    let stats = emu.stats();
    assert_eq!(stats.throttled, 0, "{stats:?}");
    assert_eq!(c.counters().throttled, 0);
    assert_eq!(stats.writes.get("POST /users"), Some(&50));
    emu.stop().await.unwrap();
}
