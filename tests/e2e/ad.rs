//! Active Directory (Samba AD DC): full and delta imports, paging, ranges, DirSync, uSNChanged.

use syncctl_core::{AttrValues, ImmutableId, ImportMode};
use syncctl_store::{CsLookup, Store};
use syncctl_tests::*;

async fn make_user(ldap: &mut ldap3::Ldap, ou: &str, cn: &str) -> String {
    let dn = format!("CN={cn},{ou}");
    let sam = unique_tail("u", 18);
    add(ldap, &dn, &[("objectClass", &["user"]), ("sAMAccountName", &[&sam]), ("displayName", &[cn])]).await;
    dn
}

async fn object(store: &Store, dn: &str) -> syncctl_store::StoredCsObject {
    let found = store.find_cs_objects(&CsLookup::Dn(syncctl_core::Dn::parse(dn).unwrap())).await.unwrap();
    assert_eq!(found.len(), 1, "exactly one CS object for {dn}: {found:?}");
    found.into_iter().next().unwrap()
}

fn members(o: &syncctl_store::StoredCsObject) -> Vec<String> {
    match o.attributes.get("member") {
        Some(AttrValues::Reference(v)) => v.iter().map(|m| m.to_lowercase()).collect(),
        None => vec![],
        other => panic!("member is {other:?}"),
    }
}

#[tokio::test]
async fn sample_users_import_with_the_immutable_id_ldapsearch_shows() {
    let peer = samba();
    let mut ldap = admin(&peer).await;
    let ou = make_ou(&mut ldap, &peer.base, &unique("sample")).await;
    let records = read_fixture_ldif(include_str!("../fixtures/ad-sample.ldif"));
    assert_eq!(records.len(), 8);
    // Samba keeps UPNs unique: remove what an earlier run of this test left.
    for r in &records {
        if let Some((_, upn)) = r.attrs.iter().find(|(k, _)| k == "userPrincipalName") {
            let filter = format!("(userPrincipalName={})", ldap3::ldap_escape(String::from_utf8_lossy(upn)));
            let (old, _) = ldap
                .search(&peer.base, ldap3::Scope::Subtree, &filter, vec!["1.1"])
                .await
                .unwrap()
                .success()
                .unwrap();
            for o in old {
                let o = ldap3::SearchEntry::construct(o);
                delete(&mut ldap, &o.dn).await;
            }
        }
    }
    let dns = load_ad_sample(&mut ldap, &peer, &ou, &records, "").await;

    let store = Store::open_in_memory().await.unwrap();
    let config = ad_config(&peer, &ou, "");
    let report = import(&store, "corp", &config, ImportMode::Full).await;
    assert_eq!(report.status, "success", "{report:?}");
    assert_eq!((report.counts.adds, report.counts.errors), (8, 0));

    for dn in &dns {
        let o = object(&store, dn).await;
        let from_ldapsearch = ldapsearch_object_guid(&peer, dn);
        assert_eq!(o.immutable_id.as_deref(), Some(from_ldapsearch.as_str()), "{dn}");
        assert_eq!(o.anchor, from_ldapsearch);
        // The GUID-string form finds the same object, as `syncctl show` does.
        let id = ImmutableId::from_base64(&from_ldapsearch).unwrap();
        let again = store
            .find_cs_objects(&CsLookup::ImmutableId(
                ImmutableId::parse_any(&id.to_guid_string()).unwrap().to_base64(),
            ))
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
    }
    let mut upns = std::collections::BTreeMap::new();
    for cn in ["Alice Anders", "Bob Brown", "Carol Space", "Dave Comma", "Erin NoUPN", "Frank Umlaut"] {
        let o = object(&store, &format!("CN={cn},{ou}")).await;
        upns.insert(cn, o.attributes.first_text("userPrincipalName").map(str::to_owned));
    }
    let upn = |cn: &str| upns[cn].clone();
    assert_eq!(upn("Alice Anders").as_deref(), Some("alice@corp.example.com"));
    assert_eq!(upn("Bob Brown").as_deref(), Some("bob@corp.local"));
    assert_eq!(upn("Carol Space").as_deref(), Some("carol smith@corp.example.com"));
    assert_eq!(upn("Dave Comma").as_deref(), Some("dave,x@corp.example.com"));
    assert_eq!(upn("Erin NoUPN"), None);
    assert_eq!(upn("Frank Umlaut").as_deref(), Some("fränk@corp.example.com"));
    let group = object(&store, &format!("CN=Sync Group,{ou}")).await;
    assert_eq!(group.object_class, "group");
    assert_eq!(members(&group).len(), 3);
    let alice = object(&store, &format!("CN=Alice Anders,{ou}")).await;
    assert_eq!(
        alice.attributes.get("proxyAddresses"),
        Some(&AttrValues::String(vec![
            "SMTP:alice@corp.example.com".into(),
            "smtp:alice.anders@corp.example.com".into()
        ]))
    );
    assert!(alice.attributes.get("unicodePwd").is_none());
}

#[tokio::test]
async fn delta_imports_show_exactly_each_change() {
    let peer = samba();
    let mut ldap = admin(&peer).await;
    let root = make_ou(&mut ldap, &peer.base, &unique("delta")).await;
    let a = make_ou(&mut ldap, &root, "A").await;
    let b = make_ou(&mut ldap, &root, "B").await;
    let u1 = make_user(&mut ldap, &a, "User One").await;
    let u2 = make_user(&mut ldap, &a, "User Two").await;
    let u3 = make_user(&mut ldap, &a, "User Three").await;
    let g = format!("CN=Team,{a}");
    let gsam = unique_tail("g", 15);
    add(&mut ldap, &g, &[("objectClass", &["group"]), ("sAMAccountName", &[&gsam]), ("member", &[&u1])])
        .await;

    let store = Store::open_in_memory().await.unwrap();
    let config = ad_config(&peer, &root, "");
    let full = import(&store, "corp", &config, ImportMode::Full).await;
    assert_eq!((full.status.as_str(), full.counts.adds), ("success", 4), "{full:?}");
    let cid = store.connector_id("corp").await.unwrap().unwrap();
    assert_eq!(store.watermark(cid).await.unwrap().unwrap().watermark.unwrap().kind, "dirsync");

    let delta = |label: &'static str| {
        let store = store.clone();
        let config = config.clone();
        async move {
            let r = import(&store, "corp", &config, ImportMode::Delta).await;
            assert_eq!(
                (r.status.as_str(), r.profile, r.method.as_str()),
                ("success", ImportMode::Delta, "dirsync"),
                "{label}: {r:?}"
            );
            r.counts
        }
    };
    let c = delta("no change").await;
    assert_eq!(c.changes(), 0, "an unchanged directory gives a delta with zero changes: {c:?}");

    let id1 = object(&store, &u1).await.anchor;
    replace(&mut ldap, &u1, "title", &["Engineer"]).await;
    let c = delta("modify").await;
    assert_eq!((c.updates, c.changes()), (1, 1), "{c:?}");
    assert_eq!(object(&store, &u1).await.attributes.first_text("title"), Some("Engineer"));

    let id2 = object(&store, &u2).await.anchor;
    rename(&mut ldap, &u2, "CN=User Two Renamed", None).await;
    let u2 = format!("CN=User Two Renamed,{a}");
    let c = delta("rename").await;
    assert_eq!((c.renames, c.changes()), (1, 1), "{c:?}");
    assert_eq!(object(&store, &u2).await.anchor, id2, "a renamed user keeps its ImmutableID");

    rename(&mut ldap, &u2, "CN=User Two Renamed", Some(&b)).await;
    let u2 = format!("CN=User Two Renamed,{b}");
    let c = delta("move").await;
    assert_eq!((c.renames, c.changes()), (1, 1), "{c:?}");
    assert_eq!(object(&store, &u2).await.anchor, id2, "a moved user keeps its ImmutableID");

    add_value(&mut ldap, &g, "member", &u2).await;
    let c = delta("member added").await;
    assert_eq!((c.updates, c.changes()), (1, 1), "{c:?}");
    let mut want = vec![u1.to_lowercase(), u2.to_lowercase()];
    want.sort();
    assert_eq!(members(&object(&store, &g).await), want);

    // Renaming a member: AD rewrites the group's member value without reporting the group; the
    // connector space follows the rename.
    rename(&mut ldap, &u2, "CN=User Two Again", None).await;
    let u2 = format!("CN=User Two Again,{b}");
    let c = delta("member renamed").await;
    assert_eq!((c.renames, c.changes()), (1, 1), "{c:?}");
    let mut want = vec![u1.to_lowercase(), u2.to_lowercase()];
    want.sort();
    assert_eq!(members(&object(&store, &g).await), want, "the group's member value follows the rename");

    remove_value(&mut ldap, &g, "member", &u1).await;
    let c = delta("member removed").await;
    assert_eq!((c.updates, c.changes()), (1, 1), "{c:?}");
    assert_eq!(members(&object(&store, &g).await), vec![u2.to_lowercase()]);
    assert_eq!(object(&store, &u1).await.anchor, id1);

    let id3 = object(&store, &u3).await.anchor;
    delete(&mut ldap, &u3).await;
    let c = delta("delete").await;
    assert_eq!((c.deletes, c.changes()), (1, 1), "{c:?}");
    let gone = store.find_cs_objects(&CsLookup::Anchor(id3)).await.unwrap();
    assert_eq!(gone[0].state, "deleted");

    let c = delta("no change again").await;
    assert_eq!(c.changes(), 0, "{c:?}");

    // A clean full import into a fresh store agrees with what the deltas built.
    let fresh = Store::open_in_memory().await.unwrap();
    import(&fresh, "corp", &config, ImportMode::Full).await;
    assert_eq!(present_snapshot(&store, "corp").await, present_snapshot(&fresh, "corp").await);
}

#[tokio::test]
async fn paging_and_range_loops_run_with_tiny_pages_and_ranges() {
    let peer = samba();
    let mut ldap = admin(&peer).await;
    let ou = make_ou(&mut ldap, &peer.base, &unique("paging")).await;
    let mut users = Vec::new();
    for i in 0..9 {
        users.push(make_user(&mut ldap, &ou, &format!("Pager {i}")).await);
    }
    let g = format!("CN=Big Group,{ou}");
    let gsam = unique_tail("g", 15);
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    add(&mut ldap, &g, &[("objectClass", &["group"]), ("sAMAccountName", &[&gsam]), ("member", &refs)]).await;

    let small = Store::open_in_memory().await.unwrap();
    let config = ad_config(&peer, &ou, "page_size = 2\nrange_size = 3\n");
    let r = import(&small, "corp", &config, ImportMode::Full).await;
    assert_eq!((r.status.as_str(), r.counts.adds), ("success", 10), "{r:?}");
    assert!(r.pages >= 5, "10 objects in pages of 2 take at least 5 pages, got {}", r.pages);
    assert_eq!(members(&object(&small, &g).await).len(), 9, "all 9 members through ranges of 3");

    let big = Store::open_in_memory().await.unwrap();
    let r = import(&big, "corp", &ad_config(&peer, &ou, ""), ImportMode::Full).await;
    assert_eq!(r.pages, 1);
    assert_eq!(snapshot(&small, "corp").await, snapshot(&big, "corp").await);

    // The DirSync continuation with tiny pages: ten more members in one delta.
    for i in 9..19 {
        let u = make_user(&mut ldap, &ou, &format!("Pager {i}")).await;
        add_value(&mut ldap, &g, "member", &u).await;
    }
    let r = import(&small, "corp", &config, ImportMode::Delta).await;
    assert_eq!((r.status.as_str(), r.counts.adds, r.counts.updates), ("success", 10, 1), "{r:?}");
    assert_eq!(members(&object(&small, &g).await).len(), 19);
}

#[tokio::test]
async fn without_the_dirsync_right_deltas_poll_usn_changed() {
    let peer = samba();
    let (svc_dn, svc_pw) = samba_nodirsync();
    let mut ldap = admin(&peer).await;
    let ou = make_ou(&mut ldap, &peer.base, &unique("usn")).await;
    let u1 = make_user(&mut ldap, &ou, "Polled One").await;
    let u2 = make_user(&mut ldap, &ou, "Polled Two").await;
    let mut as_svc = peer.clone();
    as_svc.bind_dn = svc_dn;
    as_svc.password_file = svc_pw;
    let config = ad_config(&as_svc, &ou, "");
    let store = Store::open_in_memory().await.unwrap();
    let r = import(&store, "corp", &config, ImportMode::Full).await;
    assert_eq!((r.status.as_str(), r.counts.adds), ("success", 2), "{r:?}");
    assert!(r.notes.iter().any(|n| n.contains("uSNChanged")), "{:?}", r.notes);
    let cid = store.connector_id("corp").await.unwrap().unwrap();
    assert_eq!(store.watermark(cid).await.unwrap().unwrap().watermark.unwrap().kind, "usn");

    let r = import(&store, "corp", &config, ImportMode::Delta).await;
    assert_eq!((r.method.as_str(), r.counts.changes()), ("usn", 0), "{r:?}");
    replace(&mut ldap, &u1, "department", &["Sales"]).await;
    let r = import(&store, "corp", &config, ImportMode::Delta).await;
    assert_eq!((r.method.as_str(), r.counts.updates, r.counts.changes()), ("usn", 1, 1), "{r:?}");
    assert_eq!(object(&store, &u1).await.attributes.first_text("department"), Some("Sales"));

    // A rename, and a group whose membership changes (the group's uSNChanged moves, not the
    // member's).
    rename(&mut ldap, &u1, "CN=Polled Renamed", None).await;
    let u1 = format!("CN=Polled Renamed,{ou}");
    let r = import(&store, "corp", &config, ImportMode::Delta).await;
    assert_eq!((r.counts.renames, r.counts.changes()), (1, 1), "{r:?}");
    let g = format!("CN=Polled Group,{ou}");
    let gsam = unique_tail("g", 15);
    add(&mut ldap, &g, &[("objectClass", &["group"]), ("sAMAccountName", &[&gsam])]).await;
    let r = import(&store, "corp", &config, ImportMode::Delta).await;
    assert_eq!((r.counts.adds, r.counts.changes()), (1, 1), "{r:?}");
    add_value(&mut ldap, &g, "member", &u1).await;
    let r = import(&store, "corp", &config, ImportMode::Delta).await;
    assert_eq!((r.counts.updates, r.counts.changes()), (1, 1), "{r:?}");
    assert_eq!(members(&object(&store, &g).await), vec![u1.to_lowercase()]);

    delete(&mut ldap, &u2).await;
    let r = import(&store, "corp", &config, ImportMode::Delta).await;
    assert_eq!(r.method, "usn");
    // Tombstones are invisible to a plain account: the delta lists the anchors in scope instead.
    assert_eq!((r.counts.deletes, r.counts.changes()), (1, 1), "{r:?}");
    assert!(r.notes.iter().any(|n| n.contains("listing the anchors in scope")), "{r:?}");
    assert_eq!(store.present_count(cid).await.unwrap(), 2);
}

#[tokio::test]
async fn a_refused_cookie_or_another_dc_means_a_full_import_recorded_in_run_history() {
    let peer = samba();
    let mut ldap = admin(&peer).await;
    let ou = make_ou(&mut ldap, &peer.base, &unique("cookie")).await;
    make_user(&mut ldap, &ou, "Cookie One").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let store = Store::open(&path).await.unwrap();
    let config = ad_config(&peer, &ou, "");
    import(&store, "corp", &config, ImportMode::Full).await;

    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::query("UPDATE watermarks SET value = X'0badc0de0badc0de'").execute(&raw).await.unwrap();
    let r = import(&store, "corp", &config, ImportMode::Delta).await;
    assert_eq!((r.profile, r.status.as_str()), (ImportMode::Full, "success"), "{r:?}");
    assert!(
        r.notes.iter().any(|n| n.contains("fell back to a full import") && n.contains("DirSync cookie")),
        "{:?}",
        r.notes
    );
    let rec = store.run(r.run_id).await.unwrap().unwrap();
    assert_eq!(rec.profile, "full-import");
    assert!(rec.notes.contains("fell back to a full import"));

    sqlx::query("UPDATE watermarks SET server = 'CN=NTDS Settings,CN=DC9,CN=Servers,CN=Elsewhere'")
        .execute(&raw)
        .await
        .unwrap();
    let r = import(&store, "corp", &config, ImportMode::Delta).await;
    assert_eq!(r.profile, ImportMode::Full, "{r:?}");
    assert!(r.notes.iter().any(|n| n.contains("CN=DC9")), "{:?}", r.notes);
    let r = import(&store, "corp", &config, ImportMode::Delta).await;
    assert_eq!((r.profile, r.counts.changes()), (ImportMode::Delta, 0), "{r:?}");
}

#[tokio::test]
async fn ou_inclusion_and_exclusion_lists_and_moves_across_the_scope_boundary() {
    let peer = samba();
    let mut ldap = admin(&peer).await;
    let root = make_ou(&mut ldap, &peer.base, &unique("scope")).await;
    let staff = make_ou(&mut ldap, &root, "Staff").await;
    let old = make_ou(&mut ldap, &staff, "Old").await;
    let other = make_ou(&mut ldap, &root, "Other").await;
    let inside = make_user(&mut ldap, &staff, "Inside").await;
    let excluded = make_user(&mut ldap, &old, "Excluded").await;
    let outside = make_user(&mut ldap, &other, "Outside").await;
    let contact = format!("CN=Vendor,{staff}");
    add(&mut ldap, &contact, &[("objectClass", &["contact"]), ("mail", &["vendor@example.com"])]).await;

    let store = Store::open_in_memory().await.unwrap();
    let config = ad_config(
        &peer,
        &peer.base,
        &format!("include_ous = [\"{staff}\"]\nexclude_ous = [\"{old}\"]\nobject_types = [\"user\"]\n"),
    );
    let r = import(&store, "corp", &config, ImportMode::Full).await;
    assert_eq!(
        (r.status.as_str(), r.counts.adds),
        ("success", 1),
        "only the user in Staff, not in Old, not the contact: {r:?}"
    );
    object(&store, &inside).await;
    for dn in [&excluded, &outside, &contact] {
        assert!(
            store
                .find_cs_objects(&CsLookup::Dn(syncctl_core::Dn::parse(dn).unwrap()))
                .await
                .unwrap()
                .is_empty(),
            "{dn}"
        );
    }

    // Moving the user into the excluded OU takes it out of scope: the delta reports a delete.
    rename(&mut ldap, &inside, "CN=Inside", Some(&old)).await;
    let r = import(&store, "corp", &config, ImportMode::Delta).await;
    assert_eq!((r.counts.deletes, r.counts.changes()), (1, 1), "{r:?}");
    // Moving the other user into scope is an add.
    rename(&mut ldap, &outside, "CN=Outside", Some(&staff)).await;
    let r = import(&store, "corp", &config, ImportMode::Delta).await;
    assert_eq!((r.counts.adds, r.counts.changes()), (1, 1), "{r:?}");
    let cid = store.connector_id("corp").await.unwrap().unwrap();
    assert_eq!(store.present_count(cid).await.unwrap(), 1);
}

/// An OU renamed: DirSync reports only the OU, so the DirSync delta reads the OU's subtree; the
/// uSNChanged delta sees the new DNs in its anchor listing. Either way every object under the OU
/// ends up with its new DN as a rename, and references to them follow.
#[tokio::test]
async fn an_ou_rename_moves_every_object_under_it() {
    let peer = samba();
    let (svc_dn, svc_pw) = samba_nodirsync();
    let mut ldap = admin(&peer).await;
    for method in ["dirsync", "usn"] {
        let root = make_ou(&mut ldap, &peer.base, &unique("ouren")).await;
        let dept = make_ou(&mut ldap, &root, "Dept").await;
        let u1 = make_user(&mut ldap, &dept, "Kid One").await;
        make_user(&mut ldap, &dept, "Kid Two").await;
        let g = format!("CN=Parents,{root}");
        let gsam = unique_tail("g", 15);
        add(&mut ldap, &g, &[("objectClass", &["group"]), ("sAMAccountName", &[&gsam]), ("member", &[&u1])])
            .await;
        let mut as_peer = peer.clone();
        if method == "usn" {
            as_peer.bind_dn = svc_dn.clone();
            as_peer.password_file = svc_pw.clone();
        }
        let config = ad_config(&as_peer, &root, "");
        let store = Store::open_in_memory().await.unwrap();
        let r = import(&store, "corp", &config, ImportMode::Full).await;
        assert_eq!(r.counts.adds, 3, "{method}: {r:?}");

        rename(&mut ldap, &dept, "OU=Dept Renamed", None).await;
        let renamed = format!("OU=Dept Renamed,{root}");
        let r = import(&store, "corp", &config, ImportMode::Delta).await;
        assert_eq!(r.status, "success", "{method}: {r:?}");
        assert_eq!(
            (r.profile, r.counts.renames, r.counts.changes()),
            (ImportMode::Delta, 2, 2),
            "{method}: {r:?}"
        );
        assert!(r.notes.iter().any(|n| n.starts_with("1 reference values")), "{method}: {r:?}");
        let kid = object(&store, &format!("CN=Kid One,{renamed}")).await;
        object(&store, &format!("CN=Kid Two,{renamed}")).await;
        assert_eq!(members(&object(&store, &g).await), vec![kid.dn.to_lowercase()], "{method}");

        let fresh = Store::open_in_memory().await.unwrap();
        import(&fresh, "corp", &config, ImportMode::Full).await;
        assert_eq!(
            present_snapshot(&store, "corp").await,
            present_snapshot(&fresh, "corp").await,
            "{method}"
        );
    }
}
