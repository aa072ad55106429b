//! The sync engine with Samba AD as the source and the in-memory cloud (`tests/cloud.rs`) as the
//! export target: provisioning with the ImmutableID, hard and soft match, admins, renames and
//! moves, group membership order, the deletion threshold with its approval, and a sync killed
//! with SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use syncctl_connector_ldap::LdapConfig;
use syncctl_core::rules::RuleSet;
use syncctl_core::{AttrValues, ImportMode, SystemClock};
use syncctl_engine::{
    ExportOptions, ExportReport, ImportOptions, NoProgress, SyncConnector, SyncMode, SyncOptions, SyncReport,
    run_export, run_import, run_sync,
};
use syncctl_store::{ExportOperation, PendingExport, Store};
use syncctl_tests::cloud::{CloudConnector, CloudState, KIND};
use syncctl_tests::*;

struct Env {
    store: Store,
    rules: RuleSet,
    config: LdapConfig,
    cloud: CloudState,
}

impl Env {
    async fn new(store: Store, config: LdapConfig, cloud: CloudState) -> Self {
        Self { store, rules: RuleSet::defaults().unwrap(), config, cloud }
    }

    async fn connectors(&self) -> Vec<SyncConnector> {
        let corp = self.store.connector_id("corp").await.unwrap().unwrap();
        let cloud = self.store.connector_id("cloud").await.unwrap().unwrap();
        vec![
            SyncConnector {
                id: corp,
                name: "corp".into(),
                kind: "ldap-ad".into(),
                target: false,
                export_attributes: Default::default(),
            },
            SyncConnector {
                id: cloud,
                name: "cloud".into(),
                kind: KIND.into(),
                target: true,
                export_attributes: Default::default(),
            },
        ]
    }

    async fn import_ad(&self, mode: ImportMode) {
        let r = import(&self.store, "corp", &self.config, mode).await;
        assert!(r.status == "success", "{r:?}");
    }

    async fn import_cloud(&self) {
        let mut c = CloudConnector::new("cloud", self.cloud.clone());
        let r = run_import(
            &self.store,
            &mut c,
            KIND,
            ImportMode::Full,
            &ImportOptions::default(),
            &SystemClock,
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(r.status, "success", "{r:?}");
    }

    async fn sync(&self) -> Vec<SyncReport> {
        let connectors = self.connectors().await;
        let mut out = Vec::new();
        for c in &connectors {
            let r = run_sync(
                &self.store,
                &self.rules,
                c,
                &connectors,
                SyncMode::Delta,
                &SyncOptions::default(),
                &SystemClock,
                &NoProgress,
            )
            .await
            .unwrap();
            assert!(r.status == "success" || r.status == "completed-with-errors", "{r:?}");
            out.push(r);
        }
        out
    }

    async fn export(&self, options: &ExportOptions) -> ExportReport {
        let connectors = self.connectors().await;
        let target = connectors.iter().find(|c| c.target).unwrap();
        let mut c = CloudConnector::new("cloud", self.cloud.clone());
        run_export(&self.store, &mut c, target, options, &SystemClock).await.unwrap()
    }

    async fn pending(&self) -> Vec<PendingExport> {
        self.store.pending_exports(None).await.unwrap()
    }
}

async fn user(ldap: &mut ldap3::Ldap, ou: &str, cn: &str, upn: &str) -> String {
    let dn = format!("CN={cn},{ou}");
    let sam = unique("s");
    let sam = &sam[sam.len().saturating_sub(18)..];
    add(
        ldap,
        &dn,
        &[
            ("objectClass", &["user"]),
            ("sAMAccountName", &[sam]),
            ("userPrincipalName", &[upn]),
            ("displayName", &[cn]),
            ("givenName", &[cn.split(' ').next().unwrap_or(cn)]),
        ],
    )
    .await;
    dn
}

fn text(v: &str) -> AttrValues {
    AttrValues::String(vec![v.to_owned()])
}

fn new_value<'a>(p: &'a PendingExport, attribute: &str) -> Option<&'a AttrValues> {
    p.changes.iter().find(|c| c.attribute == attribute).and_then(|c| c.new.as_ref())
}

#[tokio::test]
async fn first_cycle_provisions_joins_and_soft_matches_then_a_rebuilt_server_writes_nothing() {
    let peer = samba();
    let mut ldap = admin(&peer).await;
    let tag = &unique_tail("", 8);
    let ou = make_ou(&mut ldap, &peer.base, &format!("sync{tag}")).await;
    let upn = |n: &str| format!("{n}.{tag}@corp.example.com");
    let alice = user(&mut ldap, &ou, "Alice Anders", &upn("alice")).await;
    let bob = user(&mut ldap, &ou, "Bob Brown", &upn("bob")).await;
    let carol = user(&mut ldap, &ou, "Carol Cole", &upn("carol")).await;
    let erin = user(&mut ldap, &ou, "Erin Admin", &upn("erin")).await;
    let group_sam = format!("team{tag}");
    add(
        &mut ldap,
        &format!("CN=Team {tag},{ou}"),
        &[("objectClass", &["group"]), ("sAMAccountName", &[&group_sam]), ("member", &[&alice, &bob])],
    )
    .await;
    let guid = |dn: &str| ldapsearch_object_guid(&peer, dn);

    // The tenant already holds Carol without an anchor (soft match) and Erin as an admin.
    let cloud = CloudState::default();
    cloud.put_user("c-carol", &upn("carol"), &[]);
    cloud.put_user("c-erin", &upn("erin"), &[("adminRoles", text("Global Administrator"))]);
    let env =
        Env::new(Store::open_in_memory().await.unwrap(), ad_config(&peer, &ou, ""), cloud.clone()).await;
    env.import_ad(ImportMode::Full).await;
    env.import_cloud().await;
    let reports = env.sync().await;
    assert_eq!(reports[0].counts.projected, 5, "{reports:?}");

    let pending = env.pending().await;
    let find = |display: &str| {
        pending.iter().find(|p| p.display == display).unwrap_or_else(|| panic!("{display}: {pending:#?}"))
    };
    let a = find(&upn("alice"));
    assert_eq!(a.operation, ExportOperation::Add);
    assert_eq!(
        new_value(a, "onPremisesImmutableId"),
        Some(&text(&guid(&alice))),
        "the add carries the ImmutableID"
    );
    assert_eq!(find(&upn("bob")).operation, ExportOperation::Add);
    let c =
        pending.iter().find(|p| p.display.contains("c-carol")).expect("Carol's cloud object is soft-matched");
    assert_eq!(c.operation, ExportOperation::Update);
    assert_eq!(new_value(c, "onPremisesImmutableId"), Some(&text(&guid(&carol))));
    // A cloud admin is never soft-matched, and a second user with its UPN cannot be created:
    // recorded on Erin in run history, and the run goes on.
    assert!(
        pending.iter().all(|p| p.display != upn("erin") && !p.display.contains("c-erin")),
        "{pending:#?}"
    );
    assert_eq!(reports[0].status, "completed-with-errors");
    let errors = env.store.run_errors(reports[0].run_id).await.unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].kind, "AttributeValueMustBeUnique");
    assert!(
        errors[0].message.contains(&upn("erin")) && errors[0].message.contains("c-erin"),
        "{:?}",
        errors[0]
    );
    let g = pending.iter().find(|p| p.object_type == "group").expect("the group");
    let Some(AttrValues::Reference(members)) = new_value(g, "members") else { panic!("{g:#?}") };
    assert_eq!(members.len(), 2);
    assert_eq!(pending.len(), 4, "{pending:#?}");

    let report = env.export(&ExportOptions::default()).await;
    assert_eq!(
        (report.status.as_str(), report.counts.adds, report.counts.updates),
        ("success", 3, 1),
        "{report:?}"
    );
    let writes = cloud.writes();
    let at = |prefix: &str| {
        writes.iter().position(|w| w.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {writes:?}"))
    };
    assert!(at("add group") > at(&format!("add user {}", upn("alice"))), "{writes:?}");
    assert!(at("add group") > at(&format!("add user {}", upn("bob"))), "{writes:?}");
    let group =
        cloud.find("displayName", &format!("Team {tag}")).unwrap_or_else(|| panic!("{:?}", cloud.objects()));
    let Some(AttrValues::Reference(ids)) = group.attributes.get("members") else { panic!("{group:?}") };
    let alice_cloud = cloud.find("userPrincipalName", &upn("alice")).unwrap();
    assert!(ids.contains(&alice_cloud.anchor.to_string()), "members are the cloud ids: {ids:?}");
    assert_eq!(
        cloud.get("c-carol").unwrap().attributes.get("onPremisesImmutableId"),
        Some(&text(&guid(&carol)))
    );

    // The first cycle's import confirms every export.
    env.import_cloud().await;
    env.sync().await;
    assert!(env.pending().await.is_empty(), "{:#?}", env.pending().await);

    // A new sync server (empty database) against the same directory and tenant: every object
    // joins its cloud twin by ImmutableID, and nothing is written.
    let rebuilt =
        Env::new(Store::open_in_memory().await.unwrap(), ad_config(&peer, &ou, ""), cloud.clone()).await;
    rebuilt.import_ad(ImportMode::Full).await;
    rebuilt.import_cloud().await;
    let reports = rebuilt.sync().await;
    assert_eq!(reports[0].counts.joined, 4, "Alice, Bob, Carol and the group: {reports:?}");
    assert!(rebuilt.pending().await.is_empty(), "zero writes expected: {:#?}", rebuilt.pending().await);
    let before = cloud.writes().len();
    let report = rebuilt.export(&ExportOptions::default()).await;
    assert_eq!(report.counts, Default::default(), "{report:?}");
    assert_eq!(cloud.writes().len(), before);

    // A rename and a move to another OU: one update, never a delete and an add.
    let moved_ou = make_ou(&mut ldap, &ou, "Moved").await;
    rename(&mut ldap, &alice, "CN=Alice Smith", Some(&moved_ou)).await;
    replace(&mut ldap, &format!("CN=Alice Smith,{moved_ou}"), "displayName", &["Alice Smith"]).await;
    let mvs = rebuilt.store.mv_count().await.unwrap();
    rebuilt.import_ad(ImportMode::Delta).await;
    let reports = rebuilt.sync().await;
    assert_eq!((reports[0].counts.projected, reports[0].counts.mv_deleted), (0, 0), "{reports:?}");
    assert_eq!(rebuilt.store.mv_count().await.unwrap(), mvs);
    let pending = rebuilt.pending().await;
    assert_eq!(pending.len(), 1, "{pending:#?}");
    assert_eq!(pending[0].operation, ExportOperation::Update);
    assert_eq!(pending[0].changes.len(), 1, "{pending:#?}");
    assert_eq!(new_value(&pending[0], "displayName"), Some(&text("Alice Smith")));
    let _ = (erin, group_sam);
}

#[tokio::test]
async fn moving_600_users_out_of_scope_is_held_by_the_threshold_and_released_once_by_the_token() {
    let peer = samba();
    let mut ldap = admin(&peer).await;
    let tag = &unique_tail("", 8);
    let scope = make_ou(&mut ldap, &peer.base, &format!("thr{tag}")).await;
    let staff = make_ou(&mut ldap, &scope, "Staff").await;
    for i in 0..600 {
        user(&mut ldap, &staff, &format!("T{i:03} {tag}"), &format!("t{i:03}.{tag}@corp.example.com")).await;
    }
    let cloud = CloudState::default();
    let env =
        Env::new(Store::open_in_memory().await.unwrap(), ad_config(&peer, &scope, ""), cloud.clone()).await;
    env.import_ad(ImportMode::Full).await;
    env.import_cloud().await;
    env.sync().await;
    let r = env.export(&ExportOptions::default()).await;
    assert_eq!((r.status.as_str(), r.counts.adds), ("success", 600), "{r:?}");
    env.import_cloud().await;
    env.sync().await;
    assert!(env.pending().await.is_empty());

    // The OU is moved out of the connector's scope.
    rename(&mut ldap, &staff, &format!("OU=Gone{tag}"), Some(&peer.base)).await;
    env.import_ad(ImportMode::Full).await;
    let reports = env.sync().await;
    assert_eq!(reports[0].counts.mv_deleted, 600, "{reports:?}");
    let deletes = env.pending().await.iter().filter(|p| p.operation == ExportOperation::Delete).count();
    assert_eq!(deletes, 600);

    let held = env.export(&ExportOptions::default()).await;
    assert_eq!(held.status, "stopped-deletion-threshold-exceeded", "{held:?}");
    assert_eq!(held.held_deletes.len(), 600);
    assert!(cloud.writes().iter().all(|w| !w.starts_with("delete")), "no delete was written");
    assert_eq!(cloud.objects().len(), 600);
    let token = held.approval_token.clone().unwrap();

    let released =
        env.export(&ExportOptions { approve_deletes: Some(token.clone()), ..ExportOptions::default() }).await;
    assert_eq!((released.status.as_str(), released.counts.deletes), ("success", 600), "{released:?}");
    assert!(cloud.objects().is_empty());
    // Once: the token does nothing more, and the deletes are not sent twice.
    let again = env.export(&ExportOptions { approve_deletes: Some(token), ..ExportOptions::default() }).await;
    assert_eq!(again.counts.deletes, 0, "{again:?}");
    assert_eq!(cloud.writes().iter().filter(|w| w.starts_with("delete")).count(), 600);
    // The next import confirms the deletes.
    env.import_cloud().await;
    env.sync().await;
    assert!(env.pending().await.is_empty(), "{:#?}", env.pending().await);
}

/// The metaverse, links and pending exports of a database, with row ids replaced by what
/// identifies the objects (sourceAnchor, anchors), so that two databases compare.
async fn snapshot(db: &Path) -> (BTreeMap<String, String>, BTreeSet<String>, BTreeSet<String>) {
    let store = Store::open(db).await.unwrap();
    let ids = store.mv_ids().await.unwrap();
    let mvs = store.mv_by_ids(&ids).await.unwrap();
    let anchor_of: BTreeMap<i64, String> = mvs
        .iter()
        .map(|(id, o)| {
            (*id, o.attributes.get("sourceAnchor").map(|v| v.display_values().join(",")).unwrap_or_default())
        })
        .collect();
    // A reference (`mv:<id>`) becomes the anchor it names; a list of values compares as a set
    // (references are kept in id order, and ids differ between the two databases).
    fn by_anchor(v: &mut serde_json::Value, anchor_of: &BTreeMap<i64, String>) {
        match v {
            serde_json::Value::String(s) => {
                if let Some(a) = s
                    .strip_prefix("mv:")
                    .and_then(|id| id.parse::<i64>().ok())
                    .and_then(|id| anchor_of.get(&id))
                {
                    *s = a.clone();
                }
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|i| by_anchor(i, anchor_of));
                if items.iter().all(serde_json::Value::is_string) {
                    items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                }
            }
            serde_json::Value::Object(map) => map.values_mut().for_each(|i| by_anchor(i, anchor_of)),
            _ => {}
        }
    }
    let map_refs = |mut v: serde_json::Value| {
        by_anchor(&mut v, &anchor_of);
        v.to_string()
    };
    let mut objects = BTreeMap::new();
    for (id, o) in &mvs {
        let attrs: BTreeMap<String, Vec<String>> =
            o.attributes.iter().map(|(n, v)| (n.as_str().to_owned(), v.display_values())).collect();
        let prov: Vec<String> =
            o.provenance.iter().map(|(k, p)| format!("{k}<-{}:{}", p.rule, p.connector)).collect();
        objects.insert(
            anchor_of[id].clone(),
            format!("{} {} {:?}", o.object_type, map_refs(serde_json::json!(attrs)), prov),
        );
    }
    let links = store.links_by_mv(&ids).await.unwrap();
    let cs = store.cs_by_ids(&links.iter().map(|l| l.cs_id).collect::<Vec<_>>()).await.unwrap();
    let links: BTreeSet<String> = links
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {} {}",
                cs[&l.cs_id].anchor,
                anchor_of[&l.mv_id],
                l.how.as_str(),
                l.rule,
                l.detail
            )
        })
        .collect();
    let pending: BTreeSet<String> = store
        .pending_exports(None)
        .await
        .unwrap()
        .iter()
        .map(|p| {
            let target = match (p.cs_id, p.mv_id) {
                (Some(c), _) => format!("cs {c}"),
                (None, Some(m)) => anchor_of.get(&m).cloned().unwrap_or_default(),
                _ => String::new(),
            };
            format!(
                "{} {target} {} {} {} {}",
                p.operation.as_str(),
                p.object_type,
                p.display,
                p.status,
                map_refs(serde_json::to_value(&p.changes).unwrap())
            )
        })
        .collect();
    store.close().await;
    (objects, links, pending)
}

#[tokio::test]
async fn a_sync_killed_with_sigkill_and_run_again_ends_like_an_uninterrupted_one() {
    let peer = samba();
    let mut ldap = admin(&peer).await;
    let tag = &unique_tail("", 8);
    let ou = make_ou(&mut ldap, &peer.base, &format!("kill{tag}")).await;
    let mut dns = Vec::new();
    for i in 0..60 {
        dns.push(
            user(&mut ldap, &ou, &format!("K{i:02} {tag}"), &format!("k{i:02}.{tag}@corp.example.com")).await,
        );
    }
    let members: Vec<&str> = dns.iter().take(30).map(String::as_str).collect();
    add(
        &mut ldap,
        &format!("CN=Half {tag},{ou}"),
        &[("objectClass", &["group"]), ("sAMAccountName", &[&format!("half{tag}")]), ("member", &members)],
    )
    .await;
    let cloud = CloudState::default();
    cloud.put_user("c-k07", &format!("k07.{tag}@corp.example.com"), &[]);

    let dir = tempfile::tempdir().unwrap();
    let killed_db = dir.path().join("killed.db");
    let clean_db = dir.path().join("clean.db");
    {
        let env =
            Env::new(Store::open(&killed_db).await.unwrap(), ad_config(&peer, &ou, ""), cloud.clone()).await;
        env.import_ad(ImportMode::Full).await;
        env.import_cloud().await;
        env.store.close().await;
    }
    std::fs::copy(&killed_db, &clean_db).unwrap();

    let worker = env!("CARGO_BIN_EXE_sync-worker");
    let clean = Command::new(worker).arg(&clean_db).arg("0").output().unwrap();
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));

    let mut child = Command::new(worker)
        .arg(&killed_db)
        .arg("40")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = 0i64;
    for _ in 0..5_000 {
        if let Ok(pool) =
            sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", killed_db.display())).await
        {
            seen = sqlx::query_scalar::<_, i64>("SELECT coalesce(max(change_seq), 0) FROM sync_marks")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            pool.close().await;
            if seen > 0 {
                break;
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the sync was killed before it finished (mark {seen})");
    assert!(seen > 0, "some batches were committed before the kill");
    {
        let store = Store::open(&killed_db).await.unwrap();
        let runs = store.runs(Some("corp"), 1).await.unwrap();
        assert_eq!(runs[0].status, "in-progress", "the killed run never finished: {runs:?}");
        store.close().await;
    }
    let rerun = Command::new(worker).arg(&killed_db).arg("0").output().unwrap();
    assert!(rerun.status.success(), "{}", String::from_utf8_lossy(&rerun.stderr));

    let (a_objects, a_links, a_pending) = snapshot(&killed_db).await;
    let (b_objects, b_links, b_pending) = snapshot(&clean_db).await;
    assert_eq!(a_objects.len(), 61);
    // References compare by the anchors they name: the ids differ after a kill (those allocated
    // for the batches the kill stopped are not used again).
    assert!(
        a_objects.values().chain(&a_pending).all(|o| !o.contains("mv:")),
        "{a_objects:#?} {a_pending:#?}"
    );
    assert_eq!(a_objects, b_objects);
    assert_eq!(a_links, b_links);
    assert_eq!(a_pending.len(), 61, "59 adds, the group add and k07's soft-match update: {a_pending:#?}");
    assert_eq!(a_pending, b_pending);

    // What the operator reviews: the preview, as JSON and as CSV.
    let config = dir.path().join("syncctl.toml");
    std::fs::write(&config, format!("[store]\npath = \"{}\"\n", killed_db.display())).unwrap();
    let out = Command::new(syncctl_bin())
        .arg("--config")
        .arg(&config)
        .args(["--json", "export", "--preview"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = json["pending_exports"].as_array().unwrap();
    assert_eq!(list.len(), 61);
    let k07 = list.iter().find(|p| p["operation"] == "update").unwrap();
    assert_eq!(k07["connector"], "cloud");
    assert!(k07["object"].as_str().unwrap().contains("c-k07"), "{k07}");
    let out = Command::new(syncctl_bin())
        .arg("--config")
        .arg(&config)
        .args(["export", "--preview", "--csv", "-"])
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.starts_with("connector,object,operation,attribute,old,new\n"), "{csv}");
    assert!(
        csv.contains(&format!(
            "cloud,k00.{tag}@corp.example.com,add,userPrincipalName,,k00.{tag}@corp.example.com\n"
        )),
        "{csv}"
    );
    // The group's members are shown as the people they are.
    assert!(
        csv.lines()
            .any(|l| l.contains(",add,members,,") && l.contains(&format!("k00.{tag}@corp.example.com"))),
        "{csv}"
    );
    let out = Command::new(syncctl_bin())
        .arg("--config")
        .arg(&config)
        .args(["export", "--preview"])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("61 pending exports: 60 adds, 1 updates, 0 deletes"), "{table}");
}

#[tokio::test]
async fn precedence_between_two_sources_decides_an_attribute() {
    let peer = samba();
    let mut ldap = admin(&peer).await;
    let tag = &unique_tail("", 8);
    let ou = make_ou(&mut ldap, &peer.base, &format!("prec{tag}")).await;
    let upn = format!("dana.{tag}@corp.example.com");
    let dana = user(&mut ldap, &ou, "Dana Diaz", &upn).await;
    replace(&mut ldap, &dana, "department", &["IT"]).await;
    let guid = ldapsearch_object_guid(&peer, &dana);
    // An HR export of the same person (same objectGUID) that says Finance.
    let dir = tempfile::tempdir().unwrap();
    let hr_file = dir.path().join("hr.ldif");
    std::fs::write(
        &hr_file,
        format!("version: 1\n\ndn: CN=Dana Diaz,OU=People,DC=hr,DC=example\nobjectClass: user\ncn: Dana Diaz\nobjectGUID:: {guid}\ndepartment: Finance\n"),
    )
    .unwrap();
    let hr_config: syncctl_connector_ldif::LdifConfig =
        toml::from_str(&format!("path = \"{}\"", hr_file.display())).unwrap();
    // HR is authoritative for department: precedence 50 beats the AD rule's 100.
    let hr_rule = RuleSet::from_toml(
        r#"[[inbound]]
        name = "In from HR - Department"
        connectors = ["hr"]
        cs_object_type = "user"
        mv_object_type = "person"
        link_type = "join"
        precedence = 50
        [[inbound.join]]
        clauses = [{ source = "immutableId", target = "sourceAnchor" }]
        [[inbound.flows]]
        target = "department"
        source = "department"
        "#,
        "test rules",
    )
    .unwrap();
    let cloud = CloudState::default();
    let mut env = Env::new(Store::open_in_memory().await.unwrap(), ad_config(&peer, &ou, ""), cloud).await;
    env.rules = RuleSet::defaults().unwrap().with_overrides(hr_rule);
    env.import_ad(ImportMode::Full).await;
    env.import_cloud().await;
    let r = import_ldif(&env.store, "hr", &hr_config, ImportMode::Full).await;
    assert_eq!(r.status, "success", "{r:?}");
    let hr_id = env.store.connector_id("hr").await.unwrap().unwrap();
    let mut connectors = env.connectors().await;
    connectors.insert(
        1,
        SyncConnector {
            id: hr_id,
            name: "hr".into(),
            kind: "ldif".into(),
            target: false,
            export_attributes: Default::default(),
        },
    );
    let sync_all = |rules: RuleSet| {
        let store = env.store.clone();
        let connectors = connectors.clone();
        async move {
            for c in &connectors {
                run_sync(
                    &store,
                    &rules,
                    c,
                    &connectors,
                    SyncMode::Delta,
                    &SyncOptions::default(),
                    &SystemClock,
                    &NoProgress,
                )
                .await
                .unwrap();
            }
        }
    };
    sync_all(env.rules.clone()).await;
    let ids = env.store.mv_ids().await.unwrap();
    assert_eq!(ids.len(), 1, "HR joined the person AD projected");
    let mv = env.store.mv_by_ids(&ids).await.unwrap().remove(&ids[0]).unwrap();
    assert_eq!(mv.attributes.get("department"), Some(&text("Finance")));
    assert_eq!(mv.provenance["department"].rule, "In from HR - Department");
    assert_eq!(mv.provenance["department"].connector, "hr");
    let pending = env.pending().await;
    assert_eq!(new_value(&pending[0], "department"), Some(&text("Finance")), "{pending:#?}");

    // Without the HR rule (a rule change: the next delta sync runs as a full sync), AD's value wins.
    sync_all(RuleSet::defaults().unwrap()).await;
    let mv = env.store.mv_by_ids(&ids).await.unwrap().remove(&ids[0]).unwrap();
    assert_eq!(mv.attributes.get("department"), Some(&text("IT")));
    assert_eq!(mv.provenance["department"].connector, "corp");
}
