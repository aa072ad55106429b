//! Batches sharing one overlay, each written while the next is read: the outcome must be the
//! one of batches written one after the other, whether or not a write has landed when the next
//! batch reads (see `SyncRun::ship`).

use std::time::Duration;

use super::*;

/// Holds each batch's write back (so that the next batch of the overlay is read and computed
/// before the write lands, on a file, whose reads do not wait for the writer), and fails the
/// `fail_at`th one (counted from 1).
#[derive(Debug, Default)]
struct HeldWrites {
    delay: Duration,
    fail_at: Option<usize>,
    calls: std::sync::atomic::AtomicUsize,
}

impl HeldWrites {
    fn hook(delay_ms: u64, fail_at: Option<usize>) -> Arc<dyn BatchHook> {
        Arc::new(Self { delay: Duration::from_millis(delay_ms), fail_at, ..Self::default() })
    }
}

#[async_trait::async_trait]
impl BatchHook for HeldWrites {
    async fn before_write(
        &self,
        _store: &Store,
        _batch: &mut SyncBatch,
        _run: RunId,
        _now: i64,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        tokio::time::sleep(self.delay).await;
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if Some(call) == self.fail_at {
            return Err("a batch's write failed on purpose".into());
        }
        Ok(())
    }
}

fn upn(n: u8) -> String {
    format!("u{n}@corp.example.com")
}

fn dn_of(n: u8) -> String {
    format!("CN=User {n},OU=Staff")
}

/// User `n` of the scenario: its manager comes five users later (a later batch), so references
/// settle across batches.
fn user(n: u8, upn: &str, ou: &str) -> CsObject {
    let manager = (n % 24) + 5;
    ad_user(
        n,
        &format!("User {n}"),
        ou,
        upn,
        &[(
            "manager",
            AttrValues::Reference(vec![format!("CN=User {manager},OU=Staff,DC=corp,DC=example,DC=com")]),
        )],
    )
}

/// Everything a sync leaves in the store that the next steps read, as comparable text.
async fn state(w: &World, reports: &[SyncReport]) -> Vec<String> {
    let mut out = Vec::new();
    for r in reports {
        out.push(format!("run {} {} {:?}", r.connector, r.status, r.counts));
        let mut errors: Vec<String> = w
            .store
            .run_errors(r.run_id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| format!("error {:?} {} {:?} {}", e.level, e.kind, e.dn, e.message))
            .collect();
        errors.sort();
        out.extend(errors);
    }
    let ids = w.store.mv_ids().await.unwrap();
    let mut objects: Vec<String> =
        w.store.mv_by_ids(&ids).await.unwrap().into_values().map(|o| format!("mv {o:?}")).collect();
    objects.sort();
    out.extend(objects);
    let mut links: Vec<String> = w
        .store
        .links_by_mv(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|l| format!("link {} -> {} {:?} {} {}", l.cs_id, l.mv_id, l.how, l.rule, l.detail))
        .collect();
    links.sort();
    out.extend(links);
    let mut pending: Vec<String> = w
        .pending()
        .await
        .into_iter()
        .map(|p| {
            format!(
                "pending {} {:?} {} {} {:?} {}",
                p.target_key(),
                p.operation,
                p.display,
                p.status,
                p.changes,
                p.rule
            )
        })
        .collect();
    pending.sort();
    out.extend(pending);
    for value in
        ["dup@corp.example.com", "taken@corp.example.com", &upn(18), &upn(25), "nine@corp.example.com"]
    {
        let key = key_attribute("userPrincipalName", true);
        let holders = w.store.pending_unique_holders(w.cloud.id, &key, value).await.unwrap();
        out.push(format!("claims {value}: {holders:?}"));
    }
    out
}

/// Three rounds of a scenario whose every step crosses batches of two: joins (hard and soft
/// match), projections, references to objects of later batches, nested groups, a UPN two
/// objects want, a UPN the tenant holds, an unverified domain; then deletes, renames, UPNs
/// that change hands, and a full sync.
async fn scenario(store: Store, per_overlay: usize, hook: Option<Arc<dyn BatchHook>>) -> Vec<String> {
    let mut w = World::new().await;
    let ad_id = store.ensure_connector("corp-ad", "ldap-ad", 1).await.unwrap();
    let cloud_id = store.ensure_connector("cloud", "cloud-test", 1).await.unwrap();
    w.store = store;
    w.ad.id = ad_id;
    w.cloud.id = cloud_id;
    let options =
        SyncOptions { batch_size: 2, batches_per_overlay: per_overlay, hook, ..SyncOptions::default() };
    let sync = async |w: &World, connector: &SyncConnector, mode: SyncMode| {
        w.run(connector, mode, &options).await.unwrap()
    };
    let mut cloud = contoso_domains();
    cloud.push(cloud_user("c1", "old1@corp.example.com", &[("onPremisesImmutableId", text(&[&b64(1)]))]));
    cloud.push(cloud_user("c5", &upn(5), &[]));
    cloud.push(cloud_user("c9", "taken@corp.example.com", &[]));
    w.write(&w.cloud, cloud, &[]).await;
    let mut users: Vec<CsObject> = (1..=24u8)
        .map(|n| match n {
            7 => user(n, "taken@corp.example.com", "OU=Staff"),
            9 | 18 => user(n, "dup@corp.example.com", "OU=Staff"),
            12 => user(n, "u12@legacy.example.net", "OU=Staff"),
            _ => user(n, &upn(n), "OU=Staff"),
        })
        .collect();
    users.insert(6, ad_group(40, "Inner", &[&dn_of(2), &dn_of(11), &dn_of(20), &dn_of(23)]));
    users.insert(3, ad_group(41, "Outer", &[&dn_of(1), &dn_of(3), &dn_of(5), "CN=Inner,OU=Groups"]));
    let (first, rest) = users.split_at(13);
    w.write(&w.ad, first.to_vec(), &[]).await;
    w.write(&w.ad, rest.to_vec(), &[]).await;
    let mut reports = vec![sync(&w, &w.ad, SyncMode::Delta).await, sync(&w, &w.cloud, SyncMode::Delta).await];
    let mut out = state(&w, &reports).await;

    // Round two: a deleted user others refer to, UPNs changing hands across batches, a move,
    // two new users wanting one UPN.
    w.write(
        &w.ad,
        vec![
            user(18, &upn(18), "OU=Staff"),
            user(9, "nine@corp.example.com", "OU=Staff"),
            user(20, &upn(20), "OU=Moved"),
            user(25, &upn(25), "OU=Staff"),
            user(26, &upn(25), "OU=Staff"),
            ad_group(40, "Inner", &[&dn_of(2), &dn_of(25)]),
        ],
        &[&b64(3)],
    )
    .await;
    let ad = sync(&w, &w.ad, SyncMode::Delta).await;
    // The cloud then holds an object with user 25's UPN, read in the cloud sync's first batch:
    // user 25's add is compared again there, and joins (hard match) an object of the second.
    w.write(
        &w.cloud,
        vec![
            cloud_user("c25x", &upn(25), &[]),
            cloud_user("c27", "c27@corp.example.com", &[]),
            cloud_user("c25y", "y25@corp.example.com", &[("onPremisesImmutableId", text(&[&b64(25)]))]),
        ],
        &[],
    )
    .await;
    reports = vec![ad, sync(&w, &w.cloud, SyncMode::Delta).await];
    out.extend(state(&w, &reports).await);

    // Round three: a full sync reads everything again.
    reports = vec![sync(&w, &w.ad, SyncMode::Full).await];
    out.extend(state(&w, &reports).await);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_sharing_an_overlay_end_as_batches_written_one_after_the_other() {
    let reference = scenario(Store::open_in_memory().await.unwrap(), 1, None).await;
    // The scenario reaches what it is meant to test (so that equal outcomes mean something).
    let joined = |s: &str| reference.iter().any(|l| l.contains(s));
    assert!(joined("already claimed"), "a UPN two objects want: {reference:#?}");
    assert!(joined("upn-rewritten"), "an unverified domain: {reference:#?}");
    assert!(joined("Joined"), "a hard or soft match: {reference:#?}");
    assert!(joined("mv_deleted: 1"), "a delete: {reference:#?}");
    assert!(
        reference.iter().any(|l| l.starts_with("link") && l.contains("join group 1 of `Out to AAD")),
        "an outbound hard match: {reference:#?}"
    );

    let dir = tempfile::tempdir().unwrap();
    for (name, per_overlay, delay) in
        [("one", 1, None), ("slow", 4, Some(30)), ("fast", 4, None), ("pairs", 2, Some(10))]
    {
        let store = Store::open(&dir.path().join(format!("{name}.db"))).await.unwrap();
        let hook = delay.map(|ms| HeldWrites::hook(ms, None));
        let got = scenario(store, per_overlay, hook).await;
        for (i, (a, b)) in reference.iter().zip(&got).enumerate() {
            assert_eq!(a, b, "{name} ({per_overlay} batches per overlay), line {i}");
        }
        assert_eq!(reference.len(), got.len(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_while_the_next_batch_is_computed_stops_the_run_where_it_failed() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = World::new().await;
    let store = Store::open(&dir.path().join("s.db")).await.unwrap();
    w.ad.id = store.ensure_connector("corp-ad", "ldap-ad", 1).await.unwrap();
    w.cloud.id = store.ensure_connector("cloud", "cloud-test", 1).await.unwrap();
    w.store = store;
    let users: Vec<CsObject> = (1..=5u8).map(|n| user(n, &upn(n), "OU=Staff")).collect();
    w.write(&w.ad, users, &[]).await;
    w.sync(&w.ad, SyncMode::Delta).await;
    // All five move: five updates, in batches of one.
    let moved: Vec<CsObject> = (1..=5u8).map(|n| user(n, &upn(n), "OU=Moved")).collect();
    w.write(&w.ad, moved, &[]).await;
    let hook = HeldWrites::hook(20, Some(2));
    let options =
        SyncOptions { batch_size: 1, batches_per_overlay: 4, hook: Some(hook), ..SyncOptions::default() };
    let e = w.run(&w.ad, SyncMode::Delta, &options).await.unwrap_err();
    assert!(e.to_string().contains("a batch's write failed on purpose"), "{e}");
    // The first batch is written; the second failed; the third, computed while the second was
    // being written, is not.
    let moved_dns = || async {
        let objects = w.store.mv_by_ids(&w.store.mv_ids().await.unwrap()).await.unwrap();
        objects
            .into_values()
            .filter(|o| {
                o.attributes
                    .get("distinguishedName")
                    .is_some_and(|v| v.display_values().iter().any(|d| d.contains("OU=Moved")))
            })
            .count()
    };
    assert_eq!(moved_dns().await, 1);
    let runs = w.store.runs(Some("corp-ad"), 10).await.unwrap();
    let failed = runs.iter().find(|r| r.status != "success").expect("the failed sync's run");
    assert_eq!(failed.status, "stopped-store-error", "{failed:?}");
    // The next run goes on after the first batch and ends where an uninterrupted run would.
    let r = w.sync(&w.ad, SyncMode::Delta).await;
    assert_eq!((r.status.as_str(), r.profile, r.counts.processed), ("success", SyncMode::Delta, 4));
    assert_eq!(moved_dns().await, 5);
}

#[tokio::test]
async fn what_a_batch_leaves_to_settle_goes_on_to_the_next_batch_after_the_overlay_is_dropped() {
    let w = World::new().await;
    let options = SyncOptions::default();
    let connectors = w.connectors();
    let clock = clock();
    let mut sync = SyncRun::new(&w.store, &w.rules, &w.ad, &connectors, &options, &clock);
    let run = w.store.start_run("delta-sync", Some(w.ad.id), "corp-ad", 1).await.unwrap();
    // References still settling after a batch's rounds: compared again in the next batch,
    // whether that batch shares the overlay or comes after it is dropped.
    sync.dirty_next.insert(7);
    let write = sync.ship(run, SyncBatch::default()).await.unwrap();
    write.await.unwrap();
    assert_eq!(sync.dirty.iter().copied().collect::<Vec<_>>(), [7]);
    sync.reset_overlay();
    assert_eq!(sync.dirty.iter().copied().collect::<Vec<_>>(), [7], "kept when the overlay is dropped");
    sync.dirty_next.insert(8);
    sync.reset_overlay();
    assert_eq!(sync.dirty.iter().copied().collect::<Vec<_>>(), [7, 8]);
}

/// Two forests' objects joined to one MV object, under rules of equal precedence and name (the
/// default rules apply to both by kind): the link order decides, and it must be the store's
/// whichever batch made the link.
async fn two_forests(store: Store, per_overlay: usize, hook: Option<Arc<dyn BatchHook>>) -> String {
    let mut w = World::new().await;
    w.ad.id = store.ensure_connector("corp-ad", "ldap-ad", 1).await.unwrap();
    w.cloud.id = store.ensure_connector("cloud", "cloud-test", 1).await.unwrap();
    let other = SyncConnector {
        id: store.ensure_connector("other-ad", "ldap-ad", 1).await.unwrap(),
        name: "other-ad".into(),
        ..w.ad.clone()
    };
    w.store = store;
    let connectors = vec![w.ad.clone(), other.clone(), w.cloud.clone()];
    let options =
        SyncOptions { batch_size: 1, batches_per_overlay: per_overlay, hook, ..SyncOptions::default() };
    let sync = async |connector: &SyncConnector| {
        run_sync(
            &w.store,
            &w.rules,
            connector,
            &connectors,
            SyncMode::Delta,
            &options,
            &clock(),
            &crate::NoProgress,
        )
        .await
        .unwrap()
    };
    // Ann in the other forest first: projected there, with its display name.
    let mut ann = ad_user(1, "Ann", "OU=Staff", "ann@corp.example.com", &[]);
    ann.attributes.insert("displayName", text(&["Ann (other forest)"]));
    w.write(&other, vec![ann], &[]).await;
    sync(&other).await;
    // Then in this forest, her manager in the next batch: Ann joins in the first batch, and is
    // recomputed in the second, when the manager she names is projected.
    let ann = ad_user(
        1,
        "Ann",
        "OU=Staff",
        "ann@corp.example.com",
        &[("manager", AttrValues::Reference(vec!["CN=Bo,OU=Staff,DC=corp,DC=example,DC=com".into()]))],
    );
    w.write(&w.ad, vec![ann, ad_user(2, "Bo", "OU=Staff", "bo@corp.example.com", &[])], &[]).await;
    let r = sync(&w.ad).await;
    assert_eq!((r.counts.joined, r.counts.projected), (1, 1), "{r:?}");
    let ids = w.store.mv_ids().await.unwrap();
    let objects = w.store.mv_by_ids(&ids).await.unwrap();
    let ann = objects.values().find(|o| o.attributes.get("manager").is_some()).expect("Ann");
    ann.attributes.get("displayName").map(|v| v.display_values().join(",")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_taken_in_the_store_s_order_whichever_batch_made_them() {
    let one_at_a_time = two_forests(Store::open_in_memory().await.unwrap(), 1, None).await;
    // The forest with the lower connector id comes first in the store: its value wins the tie.
    assert_eq!(one_at_a_time, "Ann");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("f.db")).await.unwrap();
    assert_eq!(two_forests(store, 4, Some(HeldWrites::hook(30, None))).await, one_at_a_time);
}
