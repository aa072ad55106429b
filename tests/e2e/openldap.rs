//! OpenLDAP: entryUUID anchors, paged full import, RFC 4533 deltas with deletes.

use syncctl_core::{AttrValues, ImportMode};
use syncctl_store::{CsLookup, Store};
use syncctl_tests::*;

async fn make_ou(ldap: &mut ldap3::Ldap, parent: &str, name: &str) -> String {
    let dn = format!("ou={name},{parent}");
    add(ldap, &dn, &[("objectClass", &["organizationalUnit"]), ("ou", &[name])]).await;
    dn
}

async fn person(ldap: &mut ldap3::Ldap, ou: &str, uid: &str) -> String {
    let dn = format!("uid={uid},{ou}");
    add(
        ldap,
        &dn,
        &[
            ("objectClass", &["inetOrgPerson"]),
            ("uid", &[uid]),
            ("cn", &[uid]),
            ("sn", &["Test"]),
            ("mail", &[&format!("{uid}@example.com")]),
        ],
    )
    .await;
    dn
}

async fn object(store: &Store, dn: &str) -> syncctl_store::StoredCsObject {
    let found = store.find_cs_objects(&CsLookup::Dn(syncctl_core::Dn::parse(dn).unwrap())).await.unwrap();
    assert_eq!(found.len(), 1, "exactly one CS object for {dn}: {found:?}");
    found.into_iter().next().unwrap()
}

#[tokio::test]
async fn entry_uuid_anchors_and_deltas_with_deletes() {
    let peer = slapd();
    let mut ldap = admin(&peer).await;
    let root = make_ou(&mut ldap, &peer.base, &unique("t")).await;
    let a = make_ou(&mut ldap, &root, "a").await;
    let b = make_ou(&mut ldap, &root, "b").await;
    let p1 = person(&mut ldap, &a, "p1").await;
    let p2 = person(&mut ldap, &a, "p2").await;
    let p3 = person(&mut ldap, &a, "p3").await;
    let g = format!("cn=team,{a}");
    add(&mut ldap, &g, &[("objectClass", &["groupOfNames"]), ("cn", &["team"]), ("member", &[&p1])]).await;

    let store = Store::open_in_memory().await.unwrap();
    let config = openldap_config(&peer, &root, "page_size = 2\n");
    let r = import(&store, "ol", &config, ImportMode::Full).await;
    assert_eq!((r.status.as_str(), r.counts.adds), ("success", 4), "{r:?}");
    assert!(r.pages >= 2, "{r:?}");
    for dn in [&p1, &p2, &p3, &g] {
        assert_eq!(object(&store, dn).await.anchor, ldapsearch_entry_uuid(&peer, dn), "{dn}");
    }
    let delta = |label: &'static str| {
        let store = store.clone();
        let config = config.clone();
        async move {
            let r = import(&store, "ol", &config, ImportMode::Delta).await;
            assert_eq!(
                (r.status.as_str(), r.profile, r.method.as_str()),
                ("success", ImportMode::Delta, "syncrepl"),
                "{label}: {r:?}"
            );
            r.counts
        }
    };
    assert_eq!(delta("no change").await.changes(), 0);

    replace(&mut ldap, &p1, "title", &["Lead"]).await;
    let c = delta("modify").await;
    assert_eq!((c.updates, c.changes()), (1, 1), "{c:?}");
    assert_eq!(object(&store, &p1).await.attributes.first_text("title"), Some("Lead"));

    let id2 = object(&store, &p2).await.anchor;
    rename(&mut ldap, &p2, "uid=p2", Some(&b)).await;
    let p2 = format!("uid=p2,{b}");
    let c = delta("move").await;
    assert_eq!((c.renames, c.changes()), (1, 1), "{c:?}");
    assert_eq!(object(&store, &p2).await.anchor, id2);

    add_value(&mut ldap, &g, "member", &p2).await;
    let c = delta("member added").await;
    assert_eq!((c.updates, c.changes()), (1, 1), "{c:?}");
    assert_eq!(object(&store, &g).await.attributes.get("member").map(AttrValues::len), Some(2));

    rename(&mut ldap, &p1, "uid=p1b", None).await;
    let p1 = format!("uid=p1b,{a}");
    let c = delta("rename").await;
    assert_eq!(c.renames, 1, "{c:?}");
    remove_value(&mut ldap, &g, "member", &p2).await;
    let c = delta("member removed").await;
    assert_eq!((c.updates, c.changes()), (1, 1), "{c:?}");
    assert_eq!(object(&store, &g).await.attributes.get("member").map(AttrValues::len), Some(1));
    object(&store, &p1).await;

    let id3 = object(&store, &p3).await.anchor;
    delete(&mut ldap, &p3).await;
    let c = delta("delete").await;
    assert_eq!((c.deletes, c.changes()), (1, 1), "{c:?}");
    assert_eq!(store.find_cs_objects(&CsLookup::Anchor(id3)).await.unwrap()[0].state, "deleted");
    assert_eq!(delta("no change again").await.changes(), 0);

    let fresh = Store::open_in_memory().await.unwrap();
    import(&fresh, "ol", &config, ImportMode::Full).await;
    assert_eq!(present_snapshot(&store, "ol").await, present_snapshot(&fresh, "ol").await);
}

#[tokio::test]
async fn an_ou_rename_moves_every_entry_under_it() {
    let peer = slapd();
    let mut ldap = admin(&peer).await;
    let root = make_ou(&mut ldap, &peer.base, &unique("ouren")).await;
    let dept = make_ou(&mut ldap, &root, "dept").await;
    person(&mut ldap, &dept, "k1").await;
    person(&mut ldap, &dept, "k2").await;
    let store = Store::open_in_memory().await.unwrap();
    let config = openldap_config(&peer, &root, "");
    assert_eq!(import(&store, "ol", &config, ImportMode::Full).await.counts.adds, 2);
    rename(&mut ldap, &dept, "ou=dept2", None).await;
    let r = import(&store, "ol", &config, ImportMode::Delta).await;
    assert_eq!((r.profile, r.counts.renames, r.counts.changes()), (ImportMode::Delta, 2, 2), "{r:?}");
    object(&store, &format!("uid=k1,ou=dept2,{root}")).await;
    let fresh = Store::open_in_memory().await.unwrap();
    import(&fresh, "ol", &config, ImportMode::Full).await;
    assert_eq!(snapshot(&store, "ol").await, snapshot(&fresh, "ol").await);
}
