//! Bad input and faults: each gives an error naming the endpoint or object, a run-history row
//! with a `stopped-*` status, and a store that is unchanged or resumable.

use std::collections::HashSet;

use syncctl_core::ImportMode;
use syncctl_store::Store;
use syncctl_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn assert_stopped(
    store: &Store,
    name: &str,
    config: &syncctl_connector_ldap::LdapConfig,
    status: &str,
    needle: &str,
) {
    let before = snapshot(store, name).await;
    let r = import(store, name, config, ImportMode::Full).await;
    assert_eq!(r.status, status, "{r:?}");
    let fault = r.fault.clone().unwrap();
    assert!(fault.contains(&config.url), "the error names the endpoint: {fault}");
    assert!(fault.to_lowercase().contains(needle), "`{needle}` in: {fault}");
    let rec = store.run(r.run_id).await.unwrap().unwrap();
    assert_eq!(rec.status, status);
    assert!(rec.notes.contains(&config.url));
    assert_eq!(snapshot(store, name).await, before, "the connector space is unchanged");
    store.check_integrity().await.unwrap();
}

#[tokio::test]
async fn wrong_password_unreachable_server_and_untrusted_certificate() {
    let peer = samba();
    let store = Store::open_in_memory().await.unwrap();
    let mut ldap = admin(&peer).await;
    let ou = format!("OU={},{}", unique("faults"), peer.base);
    add(&mut ldap, &ou, &[("objectClass", &["organizationalUnit"])]).await;
    for cn in ["Fault One", "Fault Two"] {
        let sam = unique("f");
        add(
            &mut ldap,
            &format!("CN={cn},{ou}"),
            &[("objectClass", &["user"]), ("sAMAccountName", &[&sam[sam.len().saturating_sub(18)..]])],
        )
        .await;
    }
    let good = ad_config(&peer, &ou, "");
    let r = import(&store, "corp", &good, ImportMode::Full).await;
    assert_eq!((r.status.as_str(), r.counts.adds), ("success", 2));

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let mut bad = good.clone();
    bad.password_file = Some(wrong);
    assert_stopped(&store, "corp", &bad, "stopped-authentication", "invalid credentials").await;

    let mut bad = good.clone();
    bad.url = "ldaps://127.0.0.1:1".into();
    assert_stopped(&store, "corp", &bad, "stopped-connectivity", "connect").await;

    let mut bad = good.clone();
    bad.ca_file = Some(slapd().ca);
    assert_stopped(&store, "corp", &bad, "stopped-connectivity", "tls").await;
}

#[tokio::test]
async fn secrets_never_appear_in_logs_output_or_the_store() {
    // The CLI with every log line on (trace), once with the right password and once with a
    // wrong one: neither password is in what it prints, nor in the database.
    let peer = samba();
    let dir = tempfile::tempdir().unwrap();
    let wrong_file = dir.path().join("wrong.password");
    let wrong = "Wr0ng!Secret-Value-4711";
    std::fs::write(&wrong_file, format!("{wrong}\n")).unwrap();
    let right = peer.password();
    for (password_file, expect_ok) in [(peer.password_file.clone(), true), (wrong_file.clone(), false)] {
        let config = dir.path().join("syncctl.toml");
        std::fs::write(
            &config,
            format!(
                "[store]\npath = \"s.db\"\n\n[[connectors]]\nname = \"corp\"\ntype = \"ldap\"\nflavor = \"ad\"\n\
                 url = \"{}\"\nca_file = \"{}\"\nbind_dn = \"{}\"\npassword_file = \"{}\"\n\
                 base_dn = \"CN=Users,{}\"\n",
                peer.ldaps_url,
                peer.ca.display(),
                peer.bind_dn,
                password_file.display(),
                peer.base
            ),
        )
        .unwrap();
        let out = std::process::Command::new(syncctl_bin())
            .env("RUST_LOG", "trace")
            .arg("--config")
            .arg(&config)
            .args(["-v", "import", "--connector", "corp", "--full"])
            .output()
            .unwrap();
        assert_eq!(out.status.success(), expect_ok, "{}", String::from_utf8_lossy(&out.stderr));
        let printed = [out.stdout, out.stderr].concat();
        for secret in [right.as_str(), wrong] {
            assert!(!printed.windows(secret.len()).any(|w| w == secret.as_bytes()), "a password was printed");
        }
    }
    let mut hay = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("s.db") {
            hay.extend(std::fs::read(p).unwrap());
        }
    }
    assert!(!hay.is_empty());
    for secret in [right.as_str(), wrong] {
        assert!(!hay.windows(secret.len()).any(|w| w == secret.as_bytes()), "a password is in the database");
    }
}

#[tokio::test]
async fn secrets_never_appear_in_errors_or_the_store() {
    let peer = samba();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Store::open(&path).await.unwrap();
    let mut config = ad_config(&peer, &peer.base, "");
    config.url = "ldaps://127.0.0.1:1".into();
    let r = import(&store, "corp", &config, ImportMode::Full).await;
    let password = peer.password();
    assert!(!format!("{r:?}").contains(&password));
    store.close().await;
    let bytes = std::fs::read(&path).unwrap();
    let wal = std::fs::read(dir.path().join("s.db-wal")).unwrap_or_default();
    let hay = [bytes, wal].concat();
    assert!(
        !hay.windows(password.len()).any(|w| w == password.as_bytes()),
        "the password is in the database file"
    );
}

/// A loopback proxy that forwards to `upstream` and cuts the connection after `limit` bytes
/// from the server: a server that dies in the middle of a page, as the client sees it.
async fn cutting_proxy(upstream: String, limit: usize) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = tokio::io::copy(&mut cr, &mut sw);
                let down = async {
                    let mut sent = 0usize;
                    let mut buf = vec![0u8; 4096];
                    while sent < limit {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n.min(limit - sent),
                        };
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n;
                    }
                    let _ = cw.shutdown().await;
                };
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_server_that_drops_the_connection_mid_page_stops_the_run_and_the_rerun_converges() {
    let peer = slapd();
    let mut ldap = admin(&peer).await;
    let ou = format!("ou={},{}", unique("drop"), peer.base);
    add(&mut ldap, &ou, &[("objectClass", &["organizationalUnit"])]).await;
    for i in 0..40 {
        let uid = format!("d{i}");
        add(
            &mut ldap,
            &format!("uid={uid},{ou}"),
            &[("objectClass", &["inetOrgPerson"]), ("uid", &[&uid]), ("cn", &[&uid]), ("sn", &["x"])],
        )
        .await;
    }
    let upstream = peer.url.trim_start_matches("ldap://").to_owned();
    let port = cutting_proxy(upstream, 6_000).await;
    let store = Store::open_in_memory().await.unwrap();
    let mut cut = openldap_config(&peer, &ou, "page_size = 2\nsecurity = \"plain\"\n");
    cut.url = format!("ldap://127.0.0.1:{port}");
    let r = import(&store, "ol", &cut, ImportMode::Full).await;
    assert_eq!(r.status, "stopped-connectivity", "{r:?}");
    assert!(r.fault.as_deref().unwrap().contains(&cut.url), "{r:?}");
    let partial = snapshot(&store, "ol").await.len();
    assert!(partial < 40, "the cut came before the end ({partial} objects)");

    // Run again against the real server: the delta runs as a full import and converges.
    let direct = openldap_config(&peer, &ou, "page_size = 2\n");
    let r = import(&store, "ol", &direct, ImportMode::Delta).await;
    assert_eq!((r.profile, r.status.as_str()), (ImportMode::Full, "success"), "{r:?}");
    let clean = Store::open_in_memory().await.unwrap();
    import(&clean, "ol", &direct, ImportMode::Full).await;
    assert_eq!(snapshot(&store, "ol").await, snapshot(&clean, "ol").await);
}

/// Kills its server with SIGKILL once `after` objects have been imported.
struct KillServer<'a> {
    server: &'a PrivateSlapd,
    after: u64,
    done: std::sync::atomic::AtomicBool,
}

impl syncctl_engine::ImportProgress for KillServer<'_> {
    fn advance(&self, objects: u64, _changes: u64) {
        if objects >= self.after && !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.server.kill();
        }
    }
}

#[tokio::test]
async fn the_server_killed_mid_import_stops_the_run_and_the_rerun_converges() {
    let server = PrivateSlapd::start();
    let peer = &server.peer;
    let mut ldap = admin(peer).await;
    let ou = format!("ou=kill,{}", peer.base);
    add(&mut ldap, &ou, &[("objectClass", &["organizationalUnit"])]).await;
    for i in 0..200 {
        let uid = format!("s{i}");
        add(
            &mut ldap,
            &format!("uid={uid},{ou}"),
            &[("objectClass", &["inetOrgPerson"]), ("uid", &[&uid]), ("cn", &[&uid]), ("sn", &["s"])],
        )
        .await;
    }
    drop(ldap);
    let config = openldap_config(peer, &ou, "page_size = 1\ntimeout_secs = 10\n");
    let store = Store::open_in_memory().await.unwrap();
    let killer = KillServer { server: &server, after: 20, done: Default::default() };
    let r = import_with(&store, "ol", &config, ImportMode::Full, &killer).await;
    assert_eq!(r.status, "stopped-connectivity", "{r:?}");
    assert!(r.fault.as_deref().unwrap().contains(&config.url), "the error names the endpoint: {r:?}");
    let partial = snapshot(&store, "ol").await.len();
    assert!((20..200).contains(&partial), "killed half-way: {partial} objects stored");
    store.check_integrity().await.unwrap();

    server.run("start");
    let r = import(&store, "ol", &config, ImportMode::Delta).await;
    assert_eq!((r.profile, r.status.as_str()), (ImportMode::Full, "success"), "{r:?}");
    assert_eq!(r.counts.adds as usize, 200 - partial, "nothing lost, nothing doubled");
    let clean = Store::open_in_memory().await.unwrap();
    import(&clean, "ol", &config, ImportMode::Full).await;
    assert_eq!(snapshot(&store, "ol").await, snapshot(&clean, "ol").await);
}

#[tokio::test]
async fn an_object_guid_that_is_not_16_bytes_is_a_per_object_error_naming_the_object() {
    // No AD can be made to hold a malformed objectGUID, so a real directory that can is used:
    // OpenLDAP with the project's AD-compatibility schema (tests/peers/ad-compat.schema), read
    // by a connector anchored on objectGUID (`anchor_attribute`), which applies the same
    // 16-byte rule as the AD flavor.
    let peer = slapd();
    let mut ldap = admin(&peer).await;
    let ou = format!("ou={},{}", unique("guid"), peer.base);
    add(&mut ldap, &ou, &[("objectClass", &["organizationalUnit"])]).await;
    let good_dn = format!("uid=good,{ou}");
    let bad_dn = format!("uid=bad,{ou}");
    for (dn, guid) in [(&good_dn, vec![7u8; 16]), (&bad_dn, vec![7u8; 15])] {
        let uid = if dn == &good_dn { "good" } else { "bad" };
        add_raw(
            &mut ldap,
            dn,
            vec![
                (
                    b"objectClass".to_vec(),
                    HashSet::from([b"inetOrgPerson".to_vec(), b"adCompatObject".to_vec()]),
                ),
                (b"uid".to_vec(), HashSet::from([uid.as_bytes().to_vec()])),
                (b"cn".to_vec(), HashSet::from([uid.as_bytes().to_vec()])),
                (b"sn".to_vec(), HashSet::from([b"x".to_vec()])),
                (b"objectGUID".to_vec(), HashSet::from([guid])),
            ],
        )
        .await;
    }
    let store = Store::open_in_memory().await.unwrap();
    let config = openldap_config(&peer, &ou, "anchor_attribute = \"objectGUID\"\n");
    let r = import(&store, "guid", &config, ImportMode::Full).await;
    assert_eq!((r.status.as_str(), r.counts.errors), ("stopped-invalid-anchor", 1), "{r:?}");
    assert!(r.notes.iter().any(|n| n.contains(&bad_dn)), "{r:?}");
    assert_eq!(store.run(r.run_id).await.unwrap().unwrap().status, "stopped-invalid-anchor");
    let errors = store.run_errors(r.run_id).await.unwrap();
    assert_eq!(errors[0].dn.as_deref(), Some(bad_dn.as_str()));
    assert!(
        errors[0].message.contains(&bad_dn) && errors[0].message.contains("16 bytes, got 15"),
        "{errors:?}"
    );
    // The store stays consistent and owes a full import; once the object is fixed in the
    // directory, the next run goes through.
    store.check_integrity().await.unwrap();
    let cid = store.connector_id("guid").await.unwrap().unwrap();
    assert!(store.watermark(cid).await.unwrap().unwrap().full_import_required);
    let fix = vec![ldap3::Mod::Replace(b"objectGUID".to_vec(), HashSet::from([vec![9u8; 16]]))];
    ldap.modify(&bad_dn, fix).await.unwrap().success().unwrap();
    let r = import(&store, "guid", &config, ImportMode::Delta).await;
    assert_eq!((r.profile, r.status.as_str()), (ImportMode::Full, "success"), "{r:?}");
    let rows = snapshot(&store, "guid").await;
    let anchors: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(anchors, ["BwcHBwcHBwcHBwcHBwcHBw==", "CQkJCQkJCQkJCQkJCQkJCQ=="]);
}
