//! Sync against an in-memory store: projection, hard and soft match, admins, renames, deletes,
//! group references, precedence, delta sync and resuming.

use syncctl_core::rules::RuleSet;
use syncctl_core::{Anchor, AttrValues, Attributes, CsObject, Dn, FixedClock, ImmutableId};
use syncctl_store::{CsWrite, ExportOperation, LinkHow, RunCounts, Store};

use super::*;

mod overlap;

fn clock() -> FixedClock {
    FixedClock::new(1_700_000_000_000)
}

struct World {
    store: Store,
    rules: RuleSet,
    ad: SyncConnector,
    cloud: SyncConnector,
}

impl World {
    async fn new() -> Self {
        Self::with_rules(RuleSet::defaults().unwrap()).await
    }

    async fn with_rules(rules: RuleSet) -> Self {
        let store = Store::open_in_memory().await.unwrap();
        let ad_id = store.ensure_connector("corp-ad", "ldap-ad", 1).await.unwrap();
        let cloud_id = store.ensure_connector("cloud", "cloud-test", 1).await.unwrap();
        Self {
            store,
            rules,
            ad: SyncConnector {
                id: ad_id,
                name: "corp-ad".into(),
                kind: "ldap-ad".into(),
                target: false,
                export_attributes: Default::default(),
            },
            cloud: SyncConnector {
                id: cloud_id,
                name: "cloud".into(),
                kind: "cloud-test".into(),
                target: true,
                export_attributes: Default::default(),
            },
        }
    }

    fn connectors(&self) -> Vec<SyncConnector> {
        vec![self.ad.clone(), self.cloud.clone()]
    }

    async fn write(&self, connector: &SyncConnector, objects: Vec<CsObject>, deletes: &[&str]) {
        let run = self.store.start_run("full-import", Some(connector.id), &connector.name, 1).await.unwrap();
        let mut writes: Vec<CsWrite> = objects
            .into_iter()
            .map(|mut o| {
                o.normalize();
                let (hash, attributes_json) = o.hash_and_serialize();
                CsWrite::Upsert { object: o, hash, attributes_json }
            })
            .collect();
        for d in deletes {
            writes.push(CsWrite::Delete { anchor: Anchor::new(*d).unwrap() });
        }
        self.store
            .write_import_batch(connector.id, run, writes, &[], &RunCounts::default(), None, 2)
            .await
            .unwrap();
        self.store.finish_run(run, "success", None, 0, "", 3).await.unwrap();
    }

    async fn sync(&self, connector: &SyncConnector, mode: SyncMode) -> SyncReport {
        self.run(connector, mode, &SyncOptions { batch_size: 2, ..SyncOptions::default() }).await.unwrap()
    }

    async fn run(
        &self,
        connector: &SyncConnector,
        mode: SyncMode,
        options: &SyncOptions,
    ) -> Result<SyncReport> {
        run_sync(
            &self.store,
            &self.rules,
            connector,
            &self.connectors(),
            mode,
            options,
            &clock(),
            &crate::NoProgress,
        )
        .await
    }

    async fn cycle(&self) -> (SyncReport, SyncReport) {
        let a = self.sync(&self.ad, SyncMode::Delta).await;
        let c = self.sync(&self.cloud, SyncMode::Delta).await;
        (a, c)
    }

    async fn pending(&self) -> Vec<PendingExport> {
        self.store.pending_exports(Some(self.cloud.id)).await.unwrap()
    }
}

fn guid(n: u8) -> [u8; 16] {
    [n; 16]
}

fn text(values: &[&str]) -> AttrValues {
    AttrValues::String(values.iter().map(|v| (*v).to_owned()).collect())
}

fn ad_user(n: u8, cn: &str, ou: &str, upn: &str, extra: &[(&str, AttrValues)]) -> CsObject {
    let id = ImmutableId::from_object_guid(&guid(n)).unwrap();
    let mut attributes = Attributes::new();
    attributes.insert("objectGUID", AttrValues::Binary(vec![guid(n).to_vec()]));
    attributes.insert("cn", text(&[cn]));
    attributes.insert("sAMAccountName", text(&[&cn.to_lowercase().replace(' ', ".")]));
    attributes.insert("userPrincipalName", text(&[upn]));
    attributes.insert("displayName", text(&[cn]));
    attributes.insert("userAccountControl", AttrValues::Integer(vec![512]));
    for (name, v) in extra {
        attributes.insert(*name, v.clone());
    }
    CsObject {
        anchor: Anchor::from(id),
        immutable_id: Some(id),
        dn: Dn::parse(&format!("CN={cn},{ou},DC=corp,DC=example,DC=com")).unwrap(),
        object_class: "user".into(),
        attributes,
    }
}

fn ad_group(n: u8, cn: &str, members: &[&str]) -> CsObject {
    let id = ImmutableId::from_object_guid(&guid(n)).unwrap();
    let mut attributes = Attributes::new();
    attributes.insert("objectGUID", AttrValues::Binary(vec![guid(n).to_vec()]));
    attributes.insert("cn", text(&[cn]));
    attributes.insert("sAMAccountName", text(&[cn]));
    attributes.insert("groupType", AttrValues::Integer(vec![-2147483646]));
    attributes.insert(
        "member",
        AttrValues::Reference(members.iter().map(|m| format!("{m},DC=corp,DC=example,DC=com")).collect()),
    );
    CsObject {
        anchor: Anchor::from(id),
        immutable_id: Some(id),
        dn: Dn::parse(&format!("CN={cn},OU=Groups,DC=corp,DC=example,DC=com")).unwrap(),
        object_class: "group".into(),
        attributes,
    }
}

fn cloud_user(id: &str, upn: &str, extra: &[(&str, AttrValues)]) -> CsObject {
    let mut attributes = Attributes::new();
    attributes.insert("id", text(&[id]));
    attributes.insert("userPrincipalName", text(&[upn]));
    for (name, v) in extra {
        attributes.insert(*name, v.clone());
    }
    CsObject {
        anchor: Anchor::new(id).unwrap(),
        immutable_id: None,
        dn: Dn::parse(&format!("CN={id}")).unwrap(),
        object_class: "user".into(),
        attributes,
    }
}

fn b64(n: u8) -> String {
    ImmutableId::from_object_guid(&guid(n)).unwrap().to_base64()
}

fn change<'a>(p: &'a PendingExport, attribute: &str) -> Option<&'a AttributeChange> {
    p.changes.iter().find(|c| c.attribute.eq_ignore_ascii_case(attribute))
}

#[tokio::test]
async fn a_new_ad_user_gives_one_pending_add_carrying_its_immutable_id() {
    let w = World::new().await;
    w.write(&w.ad, vec![ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[])], &[]).await;
    let (ad, _) = w.cycle().await;
    assert_eq!((ad.counts.projected, ad.status.as_str()), (1, "success"), "{ad:?}");
    let pending = w.pending().await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let p = &pending[0];
    assert_eq!((p.operation, p.object_type.as_str()), (ExportOperation::Add, "user"));
    assert_eq!(change(p, "onPremisesImmutableId").and_then(|c| c.new.clone()), Some(text(&[&b64(1)])));
    assert_eq!(
        change(p, "userPrincipalName").and_then(|c| c.new.clone()),
        Some(text(&["alice@corp.example.com"]))
    );
    assert_eq!(
        change(p, "accountEnabled").and_then(|c| c.new.clone()),
        Some(AttrValues::Boolean(vec![true]))
    );
    // A second cycle with nothing changed stages nothing new.
    let (ad, _) = w.cycle().await;
    assert_eq!((ad.counts.processed, ad.counts.export_adds), (0, 0));
    assert_eq!(w.pending().await, pending);
}

#[tokio::test]
async fn a_target_with_the_same_immutable_id_joins_with_zero_writes() {
    let w = World::new().await;
    w.write(&w.ad, vec![ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[])], &[]).await;
    w.write(
        &w.cloud,
        vec![cloud_user(
            "c1",
            "alice@corp.example.com",
            &[
                ("onPremisesImmutableId", text(&[&b64(1)])),
                ("displayName", text(&["Alice Anders"])),
                ("accountEnabled", AttrValues::Boolean(vec![true])),
                ("mailNickname", text(&["alice.anders"])),
            ],
        )],
        &[],
    )
    .await;
    let (ad, _) = w.cycle().await;
    assert_eq!(ad.counts.joined, 1, "{ad:?}");
    let pending = w.pending().await;
    assert!(pending.is_empty(), "zero writes expected: {pending:#?}");
    let links = w.store.links_by_mv(&w.store.mv_ids().await.unwrap()).await.unwrap();
    let cloud = links.iter().find(|l| l.connector_id == w.cloud.id).unwrap();
    assert_eq!(cloud.how, LinkHow::Joined);
    assert!(cloud.detail.contains("join group 1"), "{}", cloud.detail);
}

#[tokio::test]
async fn a_target_with_the_same_upn_and_no_anchor_is_soft_matched_but_an_admin_is_not() {
    let w = World::new().await;
    w.write(
        &w.ad,
        vec![
            ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[]),
            ad_user(2, "Erin Admin", "OU=Staff", "erin@corp.example.com", &[]),
        ],
        &[],
    )
    .await;
    w.write(
        &w.cloud,
        vec![
            cloud_user("c1", "Alice@corp.example.com", &[]),
            cloud_user("c2", "erin@corp.example.com", &[("adminRoles", text(&["Exchange Administrator"]))]),
        ],
        &[],
    )
    .await;
    let (ad, _) = w.cycle().await;
    let pending = w.pending().await;
    let alice = pending.iter().find(|p| p.display.contains("c1")).expect("an update of the soft-matched c1");
    assert_eq!(alice.operation, ExportOperation::Update);
    assert_eq!(change(alice, "onPremisesImmutableId").and_then(|c| c.new.clone()), Some(text(&[&b64(1)])));
    // The admin is never soft-matched, and a second cloud user with its UPN cannot be created:
    // the conflict is recorded on Erin, and the run goes on.
    assert!(pending.iter().all(|p| !p.display.contains("erin") && !p.display.contains("c2")), "{pending:#?}");
    assert_eq!(pending.len(), 1, "{pending:#?}");
    assert_eq!(ad.status, "completed-with-errors");
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].kind, "AttributeValueMustBeUnique");
    assert!(
        errors[0].message.contains("erin@corp.example.com") && errors[0].message.contains("CN=c2"),
        "{}",
        errors[0].message
    );
    let links = w.store.links_by_mv(&w.store.mv_ids().await.unwrap()).await.unwrap();
    assert_eq!(links.iter().filter(|l| l.connector_id == w.cloud.id).count(), 1, "only Alice is joined");
}

#[tokio::test]
async fn two_objects_claiming_one_upn_in_the_target_give_an_error_on_the_second_and_the_run_goes_on() {
    let w = World::new().await;
    w.write(
        &w.ad,
        vec![
            ad_user(1, "Ann One", "OU=Staff", "ann@corp.example.com", &[]),
            ad_user(2, "Ann Two", "OU=Sales", "ANN@corp.example.com", &[]),
            ad_user(3, "Cy", "OU=Staff", "cy@corp.example.com", &[]),
        ],
        &[],
    )
    .await;
    let (ad, _) = w.cycle().await;
    assert_eq!(ad.status, "completed-with-errors");
    let pending = w.pending().await;
    let shown: Vec<&str> = pending.iter().map(|p| p.display.as_str()).collect();
    assert_eq!(shown, ["ann@corp.example.com", "cy@corp.example.com"]);
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].message.contains("userPrincipalName ann@corp.example.com is already claimed"),
        "{}",
        errors[0].message
    );
}

#[tokio::test]
async fn a_upn_claimed_in_an_earlier_batch_of_the_run_is_refused_to_a_later_one() {
    // Batches of two: Ann One and Cy are written (Ann's add staged with her UPN) before Ann Two
    // is read, so the claim Ann Two meets is the store's staged export, not the batch's own.
    let w = World::new().await;
    w.write(
        &w.ad,
        vec![
            ad_user(1, "Ann One", "OU=Staff", "ann@corp.example.com", &[]),
            ad_user(3, "Cy", "OU=Staff", "cy@corp.example.com", &[]),
        ],
        &[],
    )
    .await;
    w.write(&w.ad, vec![ad_user(2, "Ann Two", "OU=Sales", "ANN@corp.example.com", &[])], &[]).await;
    let (ad, _) = w.cycle().await;
    assert_eq!(ad.status, "completed-with-errors");
    let shown: Vec<String> = w.pending().await.into_iter().map(|p| p.display).collect();
    assert_eq!(shown, ["ann@corp.example.com", "cy@corp.example.com"]);
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .message
            .contains("userPrincipalName ann@corp.example.com is already claimed by the pending export of metaverse object"),
        "{}",
        errors[0].message
    );
}

#[tokio::test]
async fn the_new_upn_of_an_add_already_sent_stays_claimed_for_the_run() {
    // Ann's add is exported, awaiting its confirming import, when her UPN changes: the add is not
    // staged again, so the store's staged values still name her old UPN. Dee, read in a later
    // batch of the same run, must not get the new one.
    let w = World::new().await;
    w.write(&w.ad, vec![ad_user(1, "Ann One", "OU=Staff", "ann@corp.example.com", &[])], &[]).await;
    w.cycle().await;
    w.export_and_import(false).await;
    w.write(
        &w.ad,
        vec![
            ad_user(1, "Ann One", "OU=Staff", "annie@corp.example.com", &[]),
            ad_user(3, "Cy", "OU=Staff", "cy@corp.example.com", &[]),
        ],
        &[],
    )
    .await;
    w.write(&w.ad, vec![ad_user(4, "Dee", "OU=Sales", "Annie@corp.example.com", &[])], &[]).await;
    let (ad, _) = w.cycle().await;
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .message
            .contains("userPrincipalName annie@corp.example.com is already claimed by metaverse object"),
        "{}",
        errors[0].message
    );
    assert!(errors[0].message.starts_with("Annie@corp.example.com"), "{}", errors[0].message);
    let shown: Vec<String> = w.pending().await.into_iter().map(|p| p.display).collect();
    assert!(!shown.iter().any(|d| d == "Annie@corp.example.com"), "Dee's add is not staged: {shown:?}");
}

#[tokio::test]
async fn a_changed_source_anchor_is_refused_and_recorded() {
    let w = World::new().await;
    w.write(&w.ad, vec![ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[])], &[]).await;
    w.cycle().await;
    let ids = w.store.mv_ids().await.unwrap();
    // Someone writes another GUID into mS-DS-ConsistencyGuid: the anchor rule would now give
    // a different sourceAnchor.
    let changed = ad_user(
        1,
        "Alice Anders",
        "OU=Staff",
        "alice@corp.example.com",
        &[("mS-DS-ConsistencyGuid", AttrValues::Binary(vec![vec![7; 16]]))],
    );
    w.write(&w.ad, vec![changed], &[]).await;
    let (ad, _) = w.cycle().await;
    assert_eq!(ad.status, "completed-with-errors");
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    assert_eq!(errors[0].kind, "anchor-changed", "{errors:?}");
    assert!(
        errors[0].message.contains(&b64(1)) && errors[0].message.contains(&b64(7)),
        "{}",
        errors[0].message
    );
    let mv = w.store.mv_by_ids(&ids).await.unwrap().remove(&ids[0]).unwrap();
    assert_eq!(mv.attributes.get("sourceAnchor"), Some(&text(&[&b64(1)])), "the old anchor is kept");
    let pending = w.pending().await;
    assert_eq!(
        change(&pending[0], "onPremisesImmutableId").and_then(|c| c.new.clone()),
        Some(text(&[&b64(1)]))
    );
}

#[tokio::test]
async fn the_run_stops_at_the_error_limit() {
    let w = World::new().await;
    let users: Vec<CsObject> = (1..=6u8)
        .map(|n| ad_user(n, &format!("Same {n}"), "OU=Staff", "same@corp.example.com", &[]))
        .collect();
    w.write(&w.ad, users, &[]).await;
    let options = SyncOptions { batch_size: 2, error_limit: 3, ..SyncOptions::default() };
    let r = w.run(&w.ad, SyncMode::Delta, &options).await.unwrap();
    assert_eq!(r.status, "stopped-error-limit", "{r:?}");
    assert!(r.counts.errors >= 3 && r.counts.processed < 6, "{r:?}");
    assert!(r.notes.iter().any(|n| n.contains("error limit is 3")), "{:?}", r.notes);
    // The mark was not completed: the next run starts over where it stopped.
    let run = w.store.run(r.run_id).await.unwrap().unwrap();
    assert_eq!(run.status, "stopped-error-limit");
}

#[tokio::test]
async fn a_rename_and_an_ou_move_are_updates_never_a_delete_and_add() {
    let w = World::new().await;
    w.write(&w.ad, vec![ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[])], &[]).await;
    w.write(
        &w.cloud,
        vec![cloud_user(
            "c1",
            "alice@corp.example.com",
            &[
                ("onPremisesImmutableId", text(&[&b64(1)])),
                ("displayName", text(&["Alice Anders"])),
                ("accountEnabled", AttrValues::Boolean(vec![true])),
                ("mailNickname", text(&["alice.anders"])),
            ],
        )],
        &[],
    )
    .await;
    w.cycle().await;
    let before = w.store.mv_ids().await.unwrap();
    // Renamed (cn and displayName) and moved to another OU: same objectGUID.
    let mut moved = ad_user(1, "Alice Smith", "OU=Sales", "alice@corp.example.com", &[]);
    moved.attributes.insert("sAMAccountName", text(&["alice.anders"]));
    w.write(&w.ad, vec![moved], &[]).await;
    let (ad, _) = w.cycle().await;
    assert_eq!((ad.counts.processed, ad.counts.mv_deleted, ad.counts.projected), (1, 0, 0));
    assert_eq!(w.store.mv_ids().await.unwrap(), before);
    let pending = w.pending().await;
    assert_eq!(pending.len(), 1, "{pending:#?}");
    assert_eq!(pending[0].operation, ExportOperation::Update);
    let c = change(&pending[0], "displayName").unwrap();
    assert_eq!((c.old.clone(), c.new.clone()), (Some(text(&["Alice Anders"])), Some(text(&["Alice Smith"]))));
}

#[tokio::test]
async fn group_membership_refers_to_metaverse_objects_whatever_the_order() {
    let w = World::new().await;
    // The group comes first in change order: its members resolve once they are projected.
    w.write(&w.ad, vec![ad_group(9, "Sales", &["CN=Alice Anders,OU=Staff", "CN=Bob Brown,OU=Staff"])], &[])
        .await;
    w.write(
        &w.ad,
        vec![
            ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[]),
            ad_user(2, "Bob Brown", "OU=Staff", "bob@corp.example.com", &[]),
        ],
        &[],
    )
    .await;
    w.cycle().await;
    let pending = w.pending().await;
    let group = pending.iter().find(|p| p.object_type == "group").expect("a group add");
    let members = change(group, "members").and_then(|c| c.new.clone()).expect("members");
    let AttrValues::Reference(refs) = members else { panic!("{members:?}") };
    assert_eq!(refs.len(), 2, "{refs:?}");
    for r in &refs {
        let id = parse_mv_ref(r).unwrap();
        let mv = w.store.mv_by_ids(&[id]).await.unwrap().remove(&id).unwrap();
        assert_eq!(mv.object_type, "person");
    }
}

#[tokio::test]
async fn a_deleted_source_deletes_the_metaverse_object_and_its_joined_target_and_withdraws_the_add() {
    let w = World::new().await;
    w.write(
        &w.ad,
        vec![
            ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[]),
            ad_user(2, "Bob Brown", "OU=Staff", "bob@corp.example.com", &[]),
        ],
        &[],
    )
    .await;
    // Alice's cloud object existed before (joined); Bob has only a pending add.
    w.write(
        &w.cloud,
        vec![cloud_user("c1", "alice@corp.example.com", &[("onPremisesImmutableId", text(&[&b64(1)]))])],
        &[],
    )
    .await;
    w.cycle().await;
    assert!(w.pending().await.iter().any(|p| p.operation == ExportOperation::Add));
    w.write(&w.ad, vec![], &[&b64(1), &b64(2)]).await;
    let (ad, _) = w.cycle().await;
    assert_eq!(ad.counts.mv_deleted, 2, "{ad:?}");
    assert!(w.store.mv_ids().await.unwrap().is_empty());
    let pending = w.pending().await;
    // Bob's add is withdrawn; Alice's cloud object, joined by her ImmutableID, is deleted as
    // Entra Connect deletes every object it synchronizes.
    assert_eq!(pending.len(), 1, "{pending:#?}");
    assert_eq!((pending[0].operation, pending[0].display.as_str()), (ExportOperation::Delete, "CN=c1"));
}

#[tokio::test]
async fn delta_sync_touches_only_what_changed_and_a_rule_change_forces_a_full_sync() {
    let w = World::new().await;
    let users: Vec<CsObject> = (1..=10u8)
        .map(|n| ad_user(n, &format!("User {n}"), "OU=Staff", &format!("u{n}@corp.example.com"), &[]))
        .collect();
    w.write(&w.ad, users, &[]).await;
    let first = w.sync(&w.ad, SyncMode::Delta).await;
    assert_eq!(first.profile, SyncMode::Full, "no earlier sync");
    assert_eq!(first.counts.processed, 10);
    w.write(&w.ad, vec![ad_user(3, "User 3", "OU=Staff", "user3@corp.example.com", &[])], &[]).await;
    let delta = w.sync(&w.ad, SyncMode::Delta).await;
    assert_eq!((delta.profile, delta.counts.processed, delta.counts.mv_updated), (SyncMode::Delta, 1, 1));
    let edited = RuleSet::defaults().unwrap().with_overrides(
        RuleSet::from_toml(
            r#"[[inbound]]
                name = "Extra"
                connector_kinds = ["ldap-ad"]
                cs_object_type = "user"
                mv_object_type = "person"
                link_type = "join"
                precedence = 900
                [[inbound.flows]]
                target = "extensionAttribute1"
                constant = "x"
                "#,
            "test",
        )
        .unwrap(),
    );
    let run = run_sync(
        &w.store,
        &edited,
        &w.ad,
        &w.connectors(),
        SyncMode::Delta,
        &SyncOptions::default(),
        &clock(),
        &crate::NoProgress,
    )
    .await
    .unwrap();
    assert_eq!((run.profile, run.counts.processed), (SyncMode::Full, 10), "{:?}", run.notes);
    assert!(
        run.notes.iter().any(|n| n.contains("the sync rules or a tenant's verified domains changed")),
        "{:?}",
        run.notes
    );
}

#[tokio::test]
async fn precedence_decides_an_attribute_between_two_sources() {
    let rules = RuleSet::defaults().unwrap().with_overrides(
        RuleSet::from_toml(
            r#"[[inbound]]
            name = "In from HR"
            connector_kinds = ["ldif"]
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
            "test",
        )
        .unwrap(),
    );
    let w = World::with_rules(rules).await;
    let hr_id = w.store.ensure_connector("hr", "ldif", 1).await.unwrap();
    let hr = SyncConnector {
        id: hr_id,
        name: "hr".into(),
        kind: "ldif".into(),
        target: false,
        export_attributes: Default::default(),
    };
    w.write(
        &w.ad,
        vec![ad_user(
            1,
            "Alice Anders",
            "OU=Staff",
            "alice@corp.example.com",
            &[("department", text(&["IT"]))],
        )],
        &[],
    )
    .await;
    let mut from_hr = ad_user(
        1,
        "Alice Anders",
        "OU=Staff",
        "alice@corp.example.com",
        &[("department", text(&["Finance"]))],
    );
    from_hr.attributes = from_hr
        .attributes
        .iter()
        .filter(|(n, _)| n.as_str() != "userPrincipalName")
        .map(|(n, v)| (n.as_str().to_owned(), v.clone()))
        .collect();
    w.write(&hr, vec![from_hr], &[]).await;
    let connectors = vec![w.ad.clone(), hr.clone(), w.cloud.clone()];
    for c in [&w.ad, &hr] {
        run_sync(
            &w.store,
            &w.rules,
            c,
            &connectors,
            SyncMode::Full,
            &SyncOptions::default(),
            &clock(),
            &crate::NoProgress,
        )
        .await
        .unwrap();
    }
    let ids = w.store.mv_ids().await.unwrap();
    assert_eq!(ids.len(), 1, "HR joined the projected person");
    let mv = w.store.mv_by_ids(&ids).await.unwrap().remove(&ids[0]).unwrap();
    assert_eq!(mv.attributes.get("department"), Some(&text(&["Finance"])), "precedence 50 beats 100");
    assert_eq!(mv.provenance.get("department").map(|p| p.rule.as_str()), Some("In from HR"));
}

impl World {
    /// What an export and the next cloud import do: every pending export recorded as
    /// exported (adds with a created anchor `new-<mv>`), and the cloud's connector space
    /// updated as the cloud would be.
    async fn export_and_import(&self, import: bool) {
        let pending = self.pending().await;
        let rows: Vec<syncctl_store::ExportResultRow> = pending
            .iter()
            .map(|p| syncctl_store::ExportResultRow {
                id: p.id,
                status: "exported".into(),
                error: None,
                created_anchor: (p.operation == ExportOperation::Add)
                    .then(|| format!("new-{}", p.mv_id.unwrap())),
            })
            .collect();
        let run = self.store.start_run("export", Some(self.cloud.id), "cloud", 1).await.unwrap();
        self.store.record_export_results(run, &rows, &[], &[], &RunCounts::default(), 2).await.unwrap();
        if !import {
            return;
        }
        let mut objects = Vec::new();
        let mut deletes = Vec::new();
        for p in &pending {
            match p.operation {
                ExportOperation::Add => {
                    let id = format!("new-{}", p.mv_id.unwrap());
                    let extra: Vec<(&str, AttrValues)> = p
                        .changes
                        .iter()
                        .filter(|c| !matches!(c.new, Some(AttrValues::Reference(_))))
                        .filter_map(|c| c.new.clone().map(|v| (c.attribute.as_str(), v)))
                        .collect();
                    let upn = extra
                        .iter()
                        .find(|(a, _)| *a == "userPrincipalName")
                        .and_then(|(_, v)| v.first_text().map(str::to_owned))
                        .unwrap_or_default();
                    objects.push(cloud_user(&id, &upn, &extra));
                }
                ExportOperation::Delete => {
                    let cs = match p.cs_id {
                        Some(cs) => self.store.cs_by_ids(&[cs]).await.unwrap().remove(&cs).map(|o| o.anchor),
                        None => p.created_anchor.clone(),
                    };
                    deletes.extend(cs);
                }
                ExportOperation::Update => {}
            }
        }
        let refs: Vec<&str> = deletes.iter().map(String::as_str).collect();
        self.write(&self.cloud, objects, &refs).await;
    }
}

#[tokio::test]
async fn a_provisioned_object_is_deleted_with_its_source_and_an_unconfirmed_add_becomes_a_delete() {
    let w = World::new().await;
    w.write(
        &w.ad,
        vec![
            ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[]),
            ad_user(2, "Bob Brown", "OU=Staff", "bob@corp.example.com", &[]),
        ],
        &[],
    )
    .await;
    w.cycle().await;
    // Both adds are exported; only Alice's object has come back in an import.
    w.export_and_import(false).await;
    w.write(
        &w.cloud,
        vec![cloud_user("new-1", "alice@corp.example.com", &[("onPremisesImmutableId", text(&[&b64(1)]))])],
        &[],
    )
    .await;
    w.cycle().await;
    let links = w.store.links_by_mv(&w.store.mv_ids().await.unwrap()).await.unwrap();
    let cloud_links: Vec<&MvLink> = links.iter().filter(|l| l.connector_id == w.cloud.id).collect();
    assert_eq!(cloud_links.len(), 1);
    assert_eq!(cloud_links[0].how, LinkHow::Provisioned, "the add this engine exported came back");
    // Both leave AD: Alice's object is deleted by its id, Bob's created-but-unseen one too.
    w.write(&w.ad, vec![], &[&b64(1), &b64(2)]).await;
    w.cycle().await;
    let pending = w.pending().await;
    let deletes: Vec<(Option<i64>, Option<&str>)> = pending
        .iter()
        .filter(|p| p.operation == ExportOperation::Delete)
        .map(|p| (p.cs_id.map(|_| 0), p.created_anchor.as_deref()))
        .collect();
    assert_eq!(deletes.len(), 2, "{pending:#?}");
    assert!(deletes.contains(&(Some(0), None)), "Alice's by her cloud object: {pending:#?}");
    assert!(deletes.contains(&(None, Some("new-2"))), "Bob's by the id the export returned: {pending:#?}");
    // Bob's created object comes back in an import before the delete is exported: the
    // delete stays.
    w.write(
        &w.cloud,
        vec![cloud_user("new-2", "bob@corp.example.com", &[("onPremisesImmutableId", text(&[&b64(2)]))])],
        &[],
    )
    .await;
    w.cycle().await;
    assert_eq!(
        w.pending().await.iter().filter(|p| p.operation == ExportOperation::Delete).count(),
        2,
        "{:#?}",
        w.pending().await
    );
    // A full cloud sync does not join Alice's object again while its delete is pending.
    run_sync(
        &w.store,
        &w.rules,
        &w.cloud,
        &w.connectors(),
        SyncMode::Full,
        &SyncOptions::default(),
        &clock(),
        &crate::NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(w.pending().await.iter().filter(|p| p.operation == ExportOperation::Delete).count(), 2);
}

#[tokio::test]
async fn deprovision_disconnect_leaves_the_target_object() {
    let rules = RuleSet::defaults().unwrap();
    let mut user_rule =
        rules.outbound.iter().find(|r| r.name == "Out to AAD - User Identity").unwrap().clone();
    user_rule.deprovision = syncctl_core::rules::Deprovision::Disconnect;
    let mut rules = rules;
    for r in rules.outbound.iter_mut() {
        if r.name == user_rule.name {
            *r = user_rule.clone();
        }
    }
    let w = World::with_rules(rules).await;
    w.write(&w.ad, vec![ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[])], &[]).await;
    w.cycle().await;
    w.export_and_import(true).await;
    w.cycle().await;
    assert!(w.pending().await.is_empty(), "{:#?}", w.pending().await);
    w.write(&w.ad, vec![], &[&b64(1)]).await;
    let (ad, _) = w.cycle().await;
    assert_eq!(ad.counts.mv_deleted, 1);
    assert!(w.pending().await.is_empty(), "disconnect: nothing to delete: {:#?}", w.pending().await);
}

#[tokio::test]
async fn the_error_limit_stops_the_run_and_the_next_one_continues_where_it_stopped() {
    let w = World::new().await;
    // Every user after the first claims the same UPN: one error each.
    let users: Vec<CsObject> = (1..=8u8)
        .map(|n| ad_user(n, &format!("Same {n}"), "OU=Staff", "same@corp.example.com", &[]))
        .collect();
    w.write(&w.ad, users, &[]).await;
    let options = SyncOptions { batch_size: 2, error_limit: 3, ..SyncOptions::default() };
    let first = w.run(&w.ad, SyncMode::Delta, &options).await.unwrap();
    assert_eq!(first.status, "stopped-error-limit");
    let rest = run_sync(
        &w.store,
        &w.rules,
        &w.ad,
        &w.connectors(),
        SyncMode::Delta,
        &SyncOptions::default(),
        &clock(),
        &crate::NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(rest.profile, SyncMode::Full, "a stopped first sync has no mark yet: {:?}", rest.notes);
    assert_eq!(w.store.mv_count().await.unwrap(), 8, "every user is in the metaverse once");
}

#[tokio::test]
async fn references_to_objects_that_never_reach_the_target_are_left_out() {
    let w = World::new().await;
    // Carl has no UPN: he is a person in the metaverse but out of the cloud's scope.
    let mut carl = ad_user(3, "Carl NoUpn", "OU=Staff", "x@corp.example.com", &[]);
    carl.attributes.remove("userPrincipalName");
    w.write(&w.ad, vec![ad_group(9, "Sales", &["CN=Alice Anders,OU=Staff", "CN=Carl NoUpn,OU=Staff"])], &[])
        .await;
    w.write(&w.ad, vec![ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[]), carl], &[])
        .await;
    w.cycle().await;
    let pending = w.pending().await;
    let group = pending.iter().find(|p| p.object_type == "group").unwrap();
    let Some(AttrValues::Reference(members)) = change(group, "members").and_then(|c| c.new.clone()) else {
        panic!("{group:#?}")
    };
    assert_eq!(members.len(), 1, "only Alice: {members:?}");
}

#[tokio::test]
async fn a_unique_value_staged_in_an_earlier_run_is_not_claimed_twice() {
    let w = World::new().await;
    w.write(&w.ad, vec![ad_user(1, "Ann One", "OU=Staff", "ann@corp.example.com", &[])], &[]).await;
    w.cycle().await;
    // A later run brings a second Ann with the same UPN while the first add is still pending.
    w.write(&w.ad, vec![ad_user(2, "Ann Two", "OU=Sales", "Ann@corp.example.com", &[])], &[]).await;
    let (ad, _) = w.cycle().await;
    assert_eq!(ad.status, "completed-with-errors", "{ad:?}");
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    assert!(errors[0].message.contains("already claimed by the pending export"), "{errors:?}");
    assert_eq!(w.pending().await.len(), 1);
}

#[tokio::test]
async fn a_cloud_object_appearing_with_the_upn_of_a_pending_add_is_soft_matched_instead() {
    let w = World::new().await;
    w.write(&w.ad, vec![ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[])], &[]).await;
    w.cycle().await;
    assert_eq!(w.pending().await[0].operation, ExportOperation::Add);
    // Someone creates her in the cloud by hand before the export runs.
    w.write(&w.cloud, vec![cloud_user("c-hand", "alice@corp.example.com", &[])], &[]).await;
    w.cycle().await;
    let pending = w.pending().await;
    assert_eq!(pending.len(), 1, "{pending:#?}");
    assert_eq!(pending[0].operation, ExportOperation::Update, "{pending:#?}");
    assert!(pending[0].display.contains("c-hand"));
}

#[tokio::test]
async fn an_object_that_failed_is_synchronized_again_by_the_next_delta() {
    let w = World::new().await;
    w.write(&w.ad, vec![ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[])], &[]).await;
    w.cycle().await;
    w.export_and_import(true).await;
    w.cycle().await;
    // Alice is deleted and made again in AD (a new objectGUID) with the same UPN, while her
    // old cloud object still holds it: the new add cannot be staged yet.
    w.write(&w.ad, vec![ad_user(2, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[])], &[&b64(1)])
        .await;
    let (ad, _) = w.cycle().await;
    assert_eq!(ad.status, "completed-with-errors", "{ad:?}");
    let pending = w.pending().await;
    assert_eq!(pending.len(), 1, "{pending:#?}");
    assert_eq!(pending[0].operation, ExportOperation::Delete);
    // The delete goes out and an import confirms it; nothing changes in AD, yet the next
    // delta sync stages the new Alice.
    w.export_and_import(true).await;
    let (ad, _) = w.cycle().await;
    assert_eq!(ad.status, "success", "{ad:?}");
    assert!(ad.notes.iter().any(|n| n.contains("synchronized again")), "{:?}", ad.notes);
    let pending = w.pending().await;
    assert_eq!(pending.len(), 1, "{pending:#?}");
    assert_eq!(pending[0].operation, ExportOperation::Add);
    assert_eq!(
        change(&pending[0], "onPremisesImmutableId").and_then(|c| c.new.clone()),
        Some(text(&[&b64(2)]))
    );
}

#[tokio::test]
async fn adding_a_user_to_a_pilot_group_brings_it_into_scope_on_the_next_delta() {
    // A pilot deployment: only members of CN=Pilot are synchronized (Entra's group filtering).
    let rules = RuleSet::from_toml(
        r#"[[inbound]]
        name = "Pilot users"
        connector_kinds = ["ldap-ad"]
        cs_object_type = "user"
        mv_object_type = "person"
        link_type = "provision"
        precedence = 100
        [[inbound.scope.groups]]
        clauses = [{ attribute = "dn", operator = "ISMEMBEROF", value = "CN=Pilot,OU=Groups,DC=corp,DC=example,DC=com" }]
        [[inbound.join]]
        clauses = [{ source = "immutableId", target = "sourceAnchor" }]
        [[inbound.flows]]
        target = "sourceAnchor"
        expression = "immutableId"
        [[inbound.flows]]
        target = "userPrincipalName"
        source = "userPrincipalName"
        "#,
        "pilot rules",
    )
    .unwrap();
    let w = World::with_rules(rules).await;
    w.write(
        &w.ad,
        vec![
            ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[]),
            ad_user(2, "Bob Brown", "OU=Staff", "bob@corp.example.com", &[]),
            ad_group(9, "Pilot", &["CN=Alice Anders,OU=Staff"]),
        ],
        &[],
    )
    .await;
    w.sync(&w.ad, SyncMode::Delta).await;
    assert_eq!(w.store.mv_count().await.unwrap(), 1, "only Alice is in the pilot");
    // Bob joins the pilot: only the group changes in AD.
    w.write(&w.ad, vec![ad_group(9, "Pilot", &["CN=Alice Anders,OU=Staff", "CN=Bob Brown,OU=Staff"])], &[])
        .await;
    let r = w.sync(&w.ad, SyncMode::Delta).await;
    assert_eq!(r.profile, SyncMode::Delta);
    assert_eq!(w.store.mv_count().await.unwrap(), 2, "{r:?}");
    // And leaves it again.
    w.write(&w.ad, vec![ad_group(9, "Pilot", &["CN=Alice Anders,OU=Staff"])], &[]).await;
    w.sync(&w.ad, SyncMode::Delta).await;
    assert_eq!(w.store.mv_count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_member_that_enters_the_targets_scope_later_is_added_to_its_groups() {
    let w = World::new().await;
    let mut carl = ad_user(3, "Carl Later", "OU=Staff", "x@corp.example.com", &[]);
    carl.attributes.remove("userPrincipalName");
    w.write(&w.ad, vec![ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[]), carl], &[])
        .await;
    w.write(&w.ad, vec![ad_group(9, "Sales", &["CN=Alice Anders,OU=Staff", "CN=Carl Later,OU=Staff"])], &[])
        .await;
    w.cycle().await;
    let members = |pending: &[PendingExport]| -> usize {
        let group = pending.iter().find(|p| p.object_type == "group").unwrap();
        match change(group, "members").and_then(|c| c.new.clone()) {
            Some(AttrValues::Reference(m)) => m.len(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(members(&w.pending().await), 1, "Carl has no UPN: not in the cloud's scope");
    // Carl gets a UPN: only Carl changes in AD, and the group's add now lists him too.
    w.write(&w.ad, vec![ad_user(3, "Carl Later", "OU=Staff", "carl@corp.example.com", &[])], &[]).await;
    w.cycle().await;
    let pending = w.pending().await;
    assert!(pending.iter().any(|p| p.display == "carl@corp.example.com"), "{pending:#?}");
    assert_eq!(members(&pending), 2, "{pending:#?}");
}

/// The tenant's domains as the Graph connector imports them (object class `domain`).
fn domain(name: &str, verified: bool, initial: bool) -> CsObject {
    let mut attributes = Attributes::new();
    attributes.insert("id", text(&[name]));
    attributes.insert("isVerified", AttrValues::Boolean(vec![verified]));
    attributes.insert("isInitial", AttrValues::Boolean(vec![initial]));
    attributes.insert("isDefault", AttrValues::Boolean(vec![initial]));
    attributes.insert("authenticationType", text(&["Managed"]));
    CsObject {
        anchor: Anchor::new(name.to_lowercase()).unwrap(),
        immutable_id: None,
        dn: Dn::parse(&format!("CN={name},CN=domains")).unwrap(),
        object_class: "domain".into(),
        attributes,
    }
}

fn contoso_domains() -> Vec<CsObject> {
    vec![domain("contoso.onmicrosoft.com", true, true), domain("corp.example.com", true, false)]
}

fn new_value<'a>(p: &'a PendingExport, attribute: &str) -> Option<&'a AttrValues> {
    change(p, attribute).and_then(|c| c.new.as_ref())
}

fn warnings(errors: &[syncctl_store::RunError]) -> Vec<(&str, &str)> {
    errors
        .iter()
        .filter(|e| e.level == syncctl_store::Severity::Warning)
        .map(|e| (e.kind.as_str(), e.message.as_str()))
        .collect()
}

#[tokio::test]
async fn a_upn_in_an_unverified_domain_is_exported_at_the_initial_domain_and_reported() {
    let w = World::new().await;
    w.write(&w.cloud, contoso_domains(), &[]).await;
    w.write(
        &w.ad,
        vec![
            ad_user(1, "Carol Local", "OU=Staff", "carol@corp.local", &[]),
            ad_user(2, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[]),
        ],
        &[],
    )
    .await;
    let (ad, _) = w.cycle().await;
    assert_eq!(ad.status, "success", "a rewrite is a warning, not an error: {ad:?}");
    assert_eq!((ad.counts.errors, ad.counts.warnings), (0, 1));
    let pending = w.pending().await;
    let carol = pending.iter().find(|p| p.display == "carol@corp.local").expect("Carol's add");
    assert_eq!(new_value(carol, "userPrincipalName"), Some(&text(&["carol@contoso.onmicrosoft.com"])));
    let alice = pending.iter().find(|p| p.display == "alice@corp.example.com").expect("Alice's add");
    assert_eq!(new_value(alice, "userPrincipalName"), Some(&text(&["alice@corp.example.com"])));
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    let shown = warnings(&errors);
    assert_eq!(shown.len(), 1, "{errors:?}");
    assert_eq!(shown[0].0, "upn-rewritten");
    assert!(
        shown[0].1.contains("carol@corp.local")
            && shown[0].1.contains("corp.local is not a verified domain")
            && shown[0].1.contains("exported as carol@contoso.onmicrosoft.com"),
        "{}",
        shown[0].1
    );
    assert_eq!(errors[0].anchor.as_deref(), Some(b64(1).as_str()));
    let run = w.store.run(ad.run_id).await.unwrap().unwrap();
    assert_eq!((run.counts.errors, run.counts.warnings), (0, 1));
}

/// Carol (`carol@corp.local` in AD) as the first cycle exported her: at the initial domain.
fn carol_exported() -> CsObject {
    cloud_user(
        "c1",
        "carol@contoso.onmicrosoft.com",
        &[
            ("onPremisesImmutableId", text(&[&b64(1)])),
            ("displayName", text(&["Carol Local"])),
            ("accountEnabled", AttrValues::Boolean(vec![true])),
            ("mailNickname", text(&["carol.local"])),
        ],
    )
}

#[tokio::test]
async fn a_cloud_object_holding_the_rewritten_upn_gets_no_write() {
    // What the second cycle sees after the first exported Carol: the cloud user carries her
    // ImmutableID and the rewritten UPN. Nothing is to be written back.
    let w = World::new().await;
    let mut cloud = contoso_domains();
    cloud.push(carol_exported());
    w.write(&w.cloud, cloud, &[]).await;
    w.write(&w.ad, vec![ad_user(1, "Carol Local", "OU=Staff", "carol@corp.local", &[])], &[]).await;
    let (ad, _) = w.cycle().await;
    assert_eq!(ad.counts.joined, 1, "{ad:?}");
    let pending = w.pending().await;
    assert!(pending.is_empty(), "zero writes expected: {pending:#?}");
    // Nothing is sent, so the rewrite is not reported.
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    assert!(warnings(&errors).is_empty(), "{errors:?}");
    assert_eq!(ad.counts.warnings, 0, "{ad:?}");
    // Without the tenant's domains the same object would be patched back to corp.local.
    let w2 = World::new().await;
    w2.write(&w2.cloud, vec![carol_exported()], &[]).await;
    w2.write(&w2.ad, vec![ad_user(1, "Carol Local", "OU=Staff", "carol@corp.local", &[])], &[]).await;
    w2.cycle().await;
    let pending = w2.pending().await;
    assert_eq!(pending.len(), 1, "{pending:#?}");
    assert_eq!(new_value(&pending[0], "userPrincipalName"), Some(&text(&["carol@corp.local"])));
}

#[tokio::test]
async fn a_upn_rewrite_is_reported_once_per_object_and_only_while_it_is_to_be_sent() {
    // Carol's manager comes in a later batch (batches of 2): his pending add has Carol compared
    // again in the same run, and she is still reported once.
    let w = World::new().await;
    w.write(&w.cloud, contoso_domains(), &[]).await;
    let boss = "CN=Boss Local,OU=Staff,DC=corp,DC=example,DC=com";
    w.write(
        &w.ad,
        vec![
            ad_user(
                1,
                "Carol Local",
                "OU=Staff",
                "carol@corp.local",
                &[("manager", AttrValues::Reference(vec![boss.into()]))],
            ),
            ad_user(2, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[]),
            ad_user(3, "Boss Local", "OU=Staff", "boss@corp.local", &[]),
        ],
        &[],
    )
    .await;
    let (ad, _) = w.cycle().await;
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    let shown = warnings(&errors);
    let reported = |upn: &str| shown.iter().filter(|(k, m)| *k == "upn-rewritten" && m.contains(upn)).count();
    assert_eq!((reported("carol@corp.local"), reported("boss@corp.local")), (1, 1), "{shown:?}");
    assert_eq!((ad.counts.errors, ad.counts.warnings), (0, 2), "{ad:?}");
    let pending = w.pending().await;
    let carol = pending.iter().find(|p| p.display == "carol@corp.local").expect("Carol's add");
    assert_eq!(new_value(carol, "userPrincipalName"), Some(&text(&["carol@contoso.onmicrosoft.com"])));

    // A cloud object holding the rewritten UPN gets nothing sent and no report (see
    // `a_cloud_object_holding_the_rewritten_upn_gets_no_write`); one holding it in another case
    // gets the value sent (case is a change), and the report.
    let w = World::new().await;
    let mut cloud = contoso_domains();
    let mut carol = carol_exported();
    carol.attributes.insert("userPrincipalName", text(&["Carol@contoso.onmicrosoft.com"]));
    cloud.push(carol);
    w.write(&w.cloud, cloud, &[]).await;
    w.write(&w.ad, vec![ad_user(1, "Carol Local", "OU=Staff", "carol@corp.local", &[])], &[]).await;
    let (ad, _) = w.cycle().await;
    let pending = w.pending().await;
    assert_eq!(pending.len(), 1, "{pending:#?}");
    assert_eq!(new_value(&pending[0], "userPrincipalName"), Some(&text(&["carol@contoso.onmicrosoft.com"])));
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    let shown = warnings(&errors);
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0].0, "upn-rewritten");
}

#[tokio::test]
async fn a_duplicate_upn_is_set_aside_with_a_stable_placeholder_and_reported() {
    let w = World::new().await;
    let mut cloud = contoso_domains();
    // A cloud-only admin holds ann@: never soft-matched, so Ann's UPN collides.
    cloud.push(cloud_user("c9", "ann@corp.example.com", &[("adminRoles", text(&["Global Administrator"]))]));
    w.write(&w.cloud, cloud, &[]).await;
    w.write(
        &w.ad,
        vec![
            ad_user(1, "Ann One", "OU=Staff", "ann@corp.example.com", &[]),
            ad_user(2, "Bob One", "OU=Staff", "bob@corp.local", &[]),
            ad_user(3, "Bob Two", "OU=Sales", "bob@corp.local", &[]),
        ],
        &[],
    )
    .await;
    let (ad, _) = w.cycle().await;
    assert_eq!((ad.status.as_str(), ad.counts.errors), ("success", 0), "{ad:?}");
    let pending = w.pending().await;
    assert_eq!(pending.len(), 3, "every user is exported: {pending:#?}");
    let upn = |display: &str, n: usize| -> String {
        let p = pending.iter().filter(|p| p.display == display).nth(n).expect(display);
        new_value(p, "userPrincipalName").and_then(|v| v.texts()).unwrap()[0].clone()
    };
    let is_placeholder = |v: &str, prefix: &str| {
        v.strip_suffix("@contoso.onmicrosoft.com")
            .and_then(|p| p.strip_prefix(prefix))
            .is_some_and(|d| d.len() == 4 && d.bytes().all(|b| b.is_ascii_digit()))
    };
    let ann = upn("ann@corp.example.com", 0);
    assert!(is_placeholder(&ann, "ann"), "{ann}");
    let bobs = [upn("bob@corp.local", 0), upn("bob@corp.local", 1)];
    assert!(bobs.contains(&"bob@contoso.onmicrosoft.com".to_owned()), "{bobs:?}");
    assert!(bobs.iter().any(|b| is_placeholder(b, "bob")), "{bobs:?}");
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    let shown = warnings(&errors);
    assert_eq!(shown.iter().filter(|(k, _)| *k == "upn-rewritten").count(), 2, "{shown:?}");
    let set_aside: Vec<&str> =
        shown.iter().filter(|(k, _)| *k == "duplicate-attribute-set-aside").map(|(_, m)| *m).collect();
    assert_eq!(set_aside.len(), 2, "{shown:?}");
    assert!(
        set_aside.iter().any(|m| m.contains("userPrincipalName ann@corp.example.com is held by CN=c9")
            && m.contains(&format!("exported as {ann}"))),
        "{set_aside:?}"
    );
    assert!(
        set_aside
            .iter()
            .any(|m| m.contains("userPrincipalName bob@contoso.onmicrosoft.com is already claimed")),
        "{set_aside:?}"
    );
    // A full sync proposes the very same placeholders (stable per object).
    let again = w.sync(&w.ad, SyncMode::Full).await;
    assert_eq!(again.counts.errors, 0);
    let after = w.pending().await;
    let upns = |list: &[PendingExport]| {
        let mut v: Vec<(Option<MvId>, String)> = list
            .iter()
            .map(|p| (p.mv_id, new_value(p, "userPrincipalName").and_then(|v| v.texts()).unwrap()[0].clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(upns(&after), upns(&pending));
}

#[tokio::test]
async fn a_placeholder_already_in_the_cloud_is_kept_and_a_duplicate_proxy_address_is_left_out() {
    let w = World::new().await;
    let mut cloud = contoso_domains();
    cloud.push(cloud_user(
        "c9",
        "ann@corp.example.com",
        &[
            ("adminRoles", text(&["Global Administrator"])),
            ("proxyAddresses", text(&["SMTP:ann@corp.example.com", "smtp:sales@corp.example.com"])),
        ],
    ));
    // Ann, exported earlier with a placeholder chosen then.
    cloud.push(cloud_user(
        "c1",
        "ann0042@contoso.onmicrosoft.com",
        &[
            ("onPremisesImmutableId", text(&[&b64(1)])),
            ("displayName", text(&["Ann One"])),
            ("accountEnabled", AttrValues::Boolean(vec![true])),
            ("mailNickname", text(&["ann.one"])),
        ],
    ));
    w.write(&w.cloud, cloud, &[]).await;
    w.write(
        &w.ad,
        vec![ad_user(
            1,
            "Ann One",
            "OU=Staff",
            "ann@corp.example.com",
            &[("proxyAddresses", text(&["SMTP:ann.one@corp.example.com", "smtp:SALES@corp.example.com"]))],
        )],
        &[],
    )
    .await;
    let (ad, _) = w.cycle().await;
    assert_eq!((ad.status.as_str(), ad.counts.joined), ("success", 1), "{ad:?}");
    let pending = w.pending().await;
    assert_eq!(pending.len(), 1, "{pending:#?}");
    let p = &pending[0];
    assert_eq!(p.operation, ExportOperation::Update);
    assert_eq!(change(p, "userPrincipalName"), None, "the placeholder in the cloud is kept: {p:#?}");
    assert_eq!(new_value(p, "proxyAddresses"), Some(&text(&["SMTP:ann.one@corp.example.com"])));
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    let shown = warnings(&errors);
    assert!(
        shown.iter().any(|(k, m)| *k == "duplicate-attribute-set-aside"
            && m.contains("proxyAddresses smtp:SALES@corp.example.com is held by CN=c9")),
        "{shown:?}"
    );
}

#[tokio::test]
async fn a_domain_verified_later_brings_the_real_upn_back_through_a_full_sync() {
    let w = World::new().await;
    w.write(&w.cloud, contoso_domains(), &[]).await;
    w.write(&w.ad, vec![ad_user(1, "Dee", "OU=Staff", "dee@fabrikam.com", &[])], &[]).await;
    w.cycle().await;
    let pending = w.pending().await;
    assert_eq!(new_value(&pending[0], "userPrincipalName"), Some(&text(&["dee@contoso.onmicrosoft.com"])));
    // The admin verifies fabrikam.com; the cloud connector's next import brings the domain.
    w.write(&w.cloud, vec![domain("fabrikam.com", true, false)], &[]).await;
    let (ad, _) = w.cycle().await;
    assert_eq!(ad.profile, SyncMode::Full, "{ad:?}");
    assert!(ad.notes.iter().any(|n| n.contains("verified domains changed")), "{:?}", ad.notes);
    let pending = w.pending().await;
    assert_eq!(new_value(&pending[0], "userPrincipalName"), Some(&text(&["dee@fabrikam.com"])));
}

#[tokio::test]
async fn attributes_and_object_types_the_target_cannot_write_are_never_staged_and_said_so() {
    let mut w = World::new().await;
    w.cloud.export_attributes = [
        (
            "user".to_owned(),
            ["userPrincipalName", "onPremisesImmutableId", "displayName", "accountEnabled", "mailNickname"]
                .map(str::to_owned)
                .to_vec(),
        ),
        ("contact".to_owned(), Vec::new()),
    ]
    .into_iter()
    .collect();
    let mut contact = ad_user(2, "Ext Partner", "OU=Contacts", "unused@corp.example.com", &[]);
    contact.object_class = "contact".into();
    contact.attributes.insert("mail", text(&["partner@fabrikam.com"]));
    w.write(
        &w.ad,
        vec![
            ad_user(
                1,
                "Alice Anders",
                "OU=Staff",
                "alice@corp.example.com",
                &[
                    ("proxyAddresses", text(&["SMTP:alice@corp.example.com"])),
                    ("department", text(&["Sales"])),
                ],
            ),
            contact,
        ],
        &[],
    )
    .await;
    let (ad, _) = w.cycle().await;
    let pending = w.pending().await;
    assert_eq!(pending.len(), 1, "the contact is not provisioned: {pending:#?}");
    let names: Vec<&str> = pending[0].changes.iter().map(|c| c.attribute.as_str()).collect();
    assert!(names.contains(&"userPrincipalName") && names.contains(&"displayName"), "{names:?}");
    assert!(!names.contains(&"proxyAddresses") && !names.contains(&"department"), "{names:?}");
    let notes = ad.notes.join("\n");
    assert!(
        notes.contains("`cloud` cannot write")
            && notes.contains("proxyAddresses")
            && notes.contains("department"),
        "{notes}"
    );
    assert!(notes.contains("`cloud` cannot write contact objects"), "{notes}");
}

#[tokio::test]
async fn an_object_another_engine_synchronizes_is_joined_reported_and_left_alone() {
    let w = World::new().await;
    w.write(
        &w.cloud,
        vec![cloud_user(
            "c1",
            "alice@corp.example.com",
            &[
                ("onPremisesImmutableId", text(&[&b64(1)])),
                ("onPremisesSyncEnabled", AttrValues::Boolean(vec![true])),
                ("displayName", text(&["Alice (old name)"])),
            ],
        )],
        &[],
    )
    .await;
    w.write(&w.ad, vec![ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[])], &[]).await;
    let (ad, _) = w.cycle().await;
    assert_eq!((ad.counts.joined, ad.counts.errors, ad.status.as_str()), (1, 0, "success"), "{ad:?}");
    let pending = w.pending().await;
    assert!(pending.is_empty(), "no change is sent to an object another engine masters: {pending:#?}");
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    let shown = warnings(&errors);
    assert_eq!(shown.len(), 1, "{errors:?}");
    assert_eq!(shown[0].0, "synchronized-by-another-engine");
    assert!(shown[0].1.contains("CN=c1") && shown[0].1.contains("onPremisesSyncEnabled"), "{}", shown[0].1);
    // Directory synchronization turned off for the tenant: the next sync takes the object over.
    w.write(
        &w.cloud,
        vec![cloud_user(
            "c1",
            "alice@corp.example.com",
            &[("onPremisesImmutableId", text(&[&b64(1)])), ("displayName", text(&["Alice (old name)"]))],
        )],
        &[],
    )
    .await;
    let (_, cloud) = w.cycle().await;
    assert_eq!(cloud.counts.errors, 0);
    let pending = w.pending().await;
    assert_eq!(pending.len(), 1, "{pending:#?}");
    assert_eq!(new_value(&pending[0], "displayName"), Some(&text(&["Alice Anders"])));
}

/// A hook that puts every written MV object in a set named after its batch's first object, and
/// records what it saw; or fails.
#[derive(Debug, Default)]
struct RecordingHook {
    fail: bool,
    seen: std::sync::Mutex<Vec<(Vec<MvId>, Vec<MvId>)>>,
}

#[async_trait::async_trait]
impl BatchHook for RecordingHook {
    async fn before_write(
        &self,
        _store: &Store,
        batch: &mut SyncBatch,
        _run: RunId,
        _now: i64,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.fail {
            return Err("the hook failed on purpose".into());
        }
        let written: Vec<MvId> = batch.mv_writes.iter().map(|w| w.object.id).collect();
        self.seen.lock().unwrap().push((written.clone(), batch.mv_deletes.clone()));
        batch.workflow.entered.extend(written.into_iter().map(|id| ("seen".to_owned(), id)));
        Ok(())
    }
}

#[tokio::test]
async fn the_batch_hook_sees_each_batch_and_its_rows_commit_with_it() {
    let w = World::new().await;
    let users: Vec<CsObject> = (1..=3u8)
        .map(|n| ad_user(n, &format!("User {n}"), "OU=Staff", &format!("u{n}@corp.example.com"), &[]))
        .collect();
    w.write(&w.ad, users, &[]).await;
    let hook = Arc::new(RecordingHook::default());
    let options = SyncOptions { batch_size: 2, hook: Some(hook.clone()), ..SyncOptions::default() };
    let r = w.run(&w.ad, SyncMode::Delta, &options).await.unwrap();
    assert_eq!((r.status.as_str(), r.counts.projected), ("success", 3));
    let seen = hook.seen.lock().unwrap().clone();
    // Two batches of the source (2 + 1 objects); each saw its own projections, nothing deleted.
    assert_eq!(seen.iter().map(|(w, d)| (w.len(), d.len())).collect::<Vec<_>>(), [(2, 0), (1, 0)]);
    let mut members = w.store.set_members("seen").await.unwrap();
    members.sort_unstable();
    let mut ids = w.store.mv_ids().await.unwrap();
    ids.sort_unstable();
    assert_eq!(members, ids);

    // A deleted source object: the hook sees the MV delete in its batch.
    w.write(&w.ad, vec![], &[&b64(3)]).await;
    let before = w.store.mv_ids().await.unwrap();
    let r = w.run(&w.ad, SyncMode::Delta, &options).await.unwrap();
    assert_eq!((r.counts.processed, r.counts.mv_deleted), (1, 1));
    let after = w.store.mv_ids().await.unwrap();
    let deleted: Vec<MvId> = before.into_iter().filter(|id| !after.contains(id)).collect();
    let last = hook.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.1, deleted);
}

#[tokio::test]
async fn a_failing_batch_hook_stops_the_run_before_the_batch_is_written() {
    let w = World::new().await;
    w.write(&w.ad, vec![ad_user(1, "User 1", "OU=Staff", "u1@corp.example.com", &[])], &[]).await;
    let hook = Arc::new(RecordingHook { fail: true, ..RecordingHook::default() });
    let options = SyncOptions { hook: Some(hook), ..SyncOptions::default() };
    let e = w.run(&w.ad, SyncMode::Delta, &options).await.unwrap_err();
    assert!(e.to_string().contains("the hook failed on purpose"), "{e}");
    assert_eq!(w.store.mv_count().await.unwrap(), 0, "nothing of the batch was written");
    // The run is closed as failed, with the error, not left `in-progress`.
    let runs = w.store.runs(Some("corp-ad"), 10).await.unwrap();
    let failed = runs.iter().find(|r| r.profile.ends_with("sync")).expect("the sync's run");
    assert_eq!(failed.status, "stopped-store-error", "{failed:?}");
    assert!(failed.notes.contains("stopped: the workflow step of the sync failed"), "{failed:?}");
    assert!(failed.ended_at.is_some(), "{failed:?}");
    // Without the failure the next run does the batch; the failed run stays as it was closed.
    let r = w.sync(&w.ad, SyncMode::Delta).await;
    assert_eq!((r.counts.processed, r.counts.projected), (1, 1));
    assert_eq!(w.store.run(failed.id).await.unwrap().unwrap().status, "stopped-store-error");
}

#[tokio::test]
async fn an_object_another_engine_synchronizes_is_not_deleted_when_its_source_goes() {
    let w = World::new().await;
    w.write(
        &w.cloud,
        vec![cloud_user(
            "c1",
            "alice@corp.example.com",
            &[
                ("onPremisesImmutableId", text(&[&b64(1)])),
                ("onPremisesSyncEnabled", AttrValues::Boolean(vec![true])),
            ],
        )],
        &[],
    )
    .await;
    w.write(&w.ad, vec![ad_user(1, "Alice Anders", "OU=Staff", "alice@corp.example.com", &[])], &[]).await;
    w.cycle().await;
    w.write(&w.ad, vec![], &[&b64(1)]).await;
    let (ad, _) = w.cycle().await;
    assert_eq!(ad.counts.mv_deleted, 1, "{ad:?}");
    let pending = w.pending().await;
    assert!(pending.is_empty(), "never a delete of an object another engine masters: {pending:#?}");
    let errors = w.store.run_errors(ad.run_id).await.unwrap();
    assert!(
        warnings(&errors)
            .iter()
            .any(|(k, m)| *k == "synchronized-by-another-engine" && m.contains("not deleted")),
        "{errors:?}"
    );
}
