//! The Graph connector against the in-process Graph emulator (port 0, state in memory).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::{Value, json};
use syncctl_connector_graph::{GraphConfig, GraphConnector, Secret};
use syncctl_core::{
    AttrValues, Connector, CsObject, ExportItem, ExportKind, FaultKind, ImportChange, ImportMode,
    ImportRequest, ImportSummary,
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
    assert_eq!(objs.len(), 3);
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
    assert_eq!(present(&changes).len(), 25);
    assert_eq!(batches, 4, "3 user pages + 1 group page");
    assert_eq!(summary.pages, 4);
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
    let out = c.export(vec![it]).await.unwrap();
    assert_eq!(out[0].result.clone().unwrap().unwrap().as_str(), "u9");
    assert_eq!(state(&emu).await["users"].as_array().unwrap().len(), 1);
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
