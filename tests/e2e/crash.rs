//! Crash safety: `syncctl import` killed with SIGKILL half-way, then run again, ends with the
//! connector space a clean full import gives: no change lost or doubled.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use syncctl_store::Store;
use syncctl_tests::*;

fn write_config(dir: &Path, peer: &Peer, base: &str) -> PathBuf {
    let path = dir.join("syncctl.toml");
    let text = format!(
        "[store]\npath = \"syncctl.db\"\n\n[[connectors]]\nname = \"crash\"\ntype = \"ldap\"\nflavor = \"openldap\"\n\
         url = \"{}\"\nsecurity = \"starttls\"\nca_file = \"{}\"\nbind_dn = \"{}\"\npassword_file = \"{}\"\n\
         base_dn = \"{base}\"\npage_size = 1\n",
        peer.url,
        peer.ca.display(),
        peer.bind_dn,
        peer.password_file.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn sigkill_half_way_then_rerun_equals_a_clean_full_import() {
    let peer = slapd();
    let mut ldap = admin(&peer).await;
    let ou = format!("ou={},{}", unique("crash"), peer.base);
    add(&mut ldap, &ou, &[("objectClass", &["organizationalUnit"])]).await;
    const USERS: i64 = 600;
    for i in 0..USERS {
        let uid = format!("k{i:04}");
        add(
            &mut ldap,
            &format!("uid={uid},{ou}"),
            &[("objectClass", &["inetOrgPerson"]), ("uid", &[&uid]), ("cn", &[&uid]), ("sn", &["k"])],
        )
        .await;
    }

    let crashed = tempfile::tempdir().unwrap();
    let config = write_config(crashed.path(), &peer, &ou);
    let db = crashed.path().join("syncctl.db");
    let mut child = Command::new(syncctl_bin())
        .args(["--config"])
        .arg(&config)
        .args(["import", "--connector", "crash", "--full"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Wait (bounded) until some batches are committed, then kill -9.
    let mut written = 0i64;
    for _ in 0..30_000 {
        if db.exists()
            && let Ok(pool) = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await
        {
            written = sqlx::query_scalar::<_, i64>("SELECT coalesce(max(adds), 0) FROM runs")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            pool.close().await;
            if written >= 20 {
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
    assert!(!status.success(), "the import was killed before it finished (it had written {written} objects)");

    let store = Store::open(&db).await.unwrap();
    let killed = store.runs(Some("crash"), 1).await.unwrap().remove(0);
    assert_eq!(killed.status, "in-progress");
    assert!(killed.counts.adds > 0 && killed.counts.adds < USERS, "killed half-way: {killed:?}");
    store.check_integrity().await.unwrap();
    store.close().await;

    // Run again: a delta after an interrupted full import runs as a full import.
    let out = Command::new(syncctl_bin())
        .args(["--config"])
        .arg(&config)
        .args(["--json", "import", "--connector", "crash", "--delta"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = Store::open(&db).await.unwrap();
    let runs = store.runs(Some("crash"), 2).await.unwrap();
    assert_eq!(runs[0].profile, "full-import", "{runs:?}");
    assert_eq!(runs[0].status, "success");
    assert!(runs[0].notes.contains("did not complete"), "{runs:?}");
    assert_eq!(runs[1].status, "stopped-interrupted", "the killed run is closed at the next start");
    assert_eq!(
        runs[0].counts.adds + killed.counts.adds,
        USERS,
        "nothing doubled: the rerun adds only what the killed run had not"
    );

    let clean_dir = tempfile::tempdir().unwrap();
    let clean_config = write_config(clean_dir.path(), &peer, &ou);
    let out = Command::new(syncctl_bin())
        .arg("--config")
        .arg(&clean_config)
        .args(["import", "--connector", "crash", "--full"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let clean = Store::open(&clean_dir.path().join("syncctl.db")).await.unwrap();
    let got = snapshot(&store, "crash").await;
    assert_eq!(got.len() as i64, USERS);
    assert_eq!(got, snapshot(&clean, "crash").await);
}
