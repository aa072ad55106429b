//! `syncctl serve` against the Samba AD DC (LDAPS, the test's own OU), the Graph emulator and
//! the SMTP server: a department changed in AD is exported to the tenant and notified by mail
//! with no command typed, once; the status page shows it in headless Chromium (a screenshot is
//! left in `target/test-artifacts/serve-status.png`); SIGTERM stops the service with exit 0.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use syncctl_graph_emulator::EmulatorConfig;
use syncctl_tests::*;

use crate::mail::{MODEL, mail_section};

/// Polls `f` every 250 ms until it returns `Some`, for at most `secs` seconds.
async fn poll<T, F, Fut>(secs: u64, what: &str, log: &std::path::Path, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}; the service's log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The tenant's user with this UPN.
async fn cloud_user(base: &str, upn: &str) -> Option<Value> {
    let state: Value = reqwest::get(format!("{base}/_emulator/state")).await.ok()?.json().await.ok()?;
    let users = state["users"].as_array()?.iter().filter(|u| u["userPrincipalName"] == upn).cloned();
    let users: Vec<Value> = users.collect();
    assert!(users.len() <= 1, "{upn} twice in the tenant: {users:#?}");
    users.into_iter().next()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_exports_and_notifies_a_change_made_in_active_directory_with_no_command_typed() {
    let peer = samba();
    let smtp = smtp();
    let mut ldap = admin(&peer).await;
    let t = unique("sv");
    let ou = make_ou(&mut ldap, &peer.base, &t).await;
    let tail: String = t.chars().rev().filter(char::is_ascii_alphanumeric).take(15).collect();
    let boss_dn = format!("CN=Boss,{ou}");
    let alice_dn = format!("CN=Alice,{ou}");
    let (boss_mail, alice_mail) =
        (format!("boss.{t}@corp.example.com"), format!("alice.{t}@corp.example.com"));
    let alice_upn = format!("a{tail}@corp.example.com");
    add(
        &mut ldap,
        &boss_dn,
        &[
            ("objectClass", &["user"]),
            ("sAMAccountName", &[&format!("b{tail}")]),
            ("userPrincipalName", &[&format!("b{tail}@corp.example.com")]),
            ("displayName", &["The Boss"]),
            ("mail", &[&boss_mail]),
        ],
    )
    .await;
    add(
        &mut ldap,
        &alice_dn,
        &[
            ("objectClass", &["user"]),
            ("sAMAccountName", &[&format!("a{tail}")]),
            ("userPrincipalName", &[&alice_upn]),
            ("givenName", &["alice"]),
            ("displayName", &["alice Person"]),
            ("mail", &[&alice_mail]),
            ("department", &["Engineering"]),
            ("manager", &[&boss_dn]),
        ],
    )
    .await;

    let AdCloudService { emu, emu_url, dir, port, config } = ad_cloud_service(&peer, &ou, &smtp, "").await;
    let log = dir.path().join("serve.log");
    let mut child = Command::new(syncctl_bin())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    // The first cycles bring Alice to the tenant; nobody is in the set yet.
    let alice = poll(180, "Alice in the tenant", &log, || cloud_user(&emu_url, &alice_upn)).await;
    assert_eq!(alice["department"], "Engineering", "{alice:#}");
    assert!(smtp.messages_to(&t).is_empty(), "nobody entered a set");

    // AD changes; the service exports it and mails the user and the manager.
    replace(&mut ldap, &alice_dn, "department", &["Sales"]).await;
    poll(180, "Alice's new department in the tenant", &log, || async {
        cloud_user(&emu_url, &alice_upn).await.filter(|u| u["department"] == "Sales")
    })
    .await;
    poll(180, "the welcome mail", &log, || async {
        (smtp.messages_to(&alice_mail).len() == 1 && smtp.messages_to(&boss_mail).len() == 1).then_some(())
    })
    .await;

    // Two more cycles change nothing: no mail twice, no user twice.
    let status = |n: u64| {
        let url = format!("http://127.0.0.1:{port}/api/status");
        async move {
            let s: Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            (s["service"]["cycles"].as_u64()? >= n).then_some(s)
        }
    };
    let now = poll(60, "the status", &log, || status(0)).await["service"]["cycles"].as_u64().unwrap();
    poll(120, "two more cycles", &log, || status(now + 2)).await;
    assert_eq!((smtp.messages_to(&alice_mail).len(), smtp.messages_to(&boss_mail).len()), (1, 1));
    assert!(cloud_user(&emu_url, &alice_upn).await.is_some());

    // The status page in headless Chromium: the runs, the outbox with the two messages, no
    // dead letter, no deletion hold; a screenshot is kept for a human to look at.
    let url = format!("http://127.0.0.1:{port}/");
    let png = test_artifacts_dir().join("serve-status.png");
    let (dom, png) = tokio::task::spawn_blocking(move || {
        let dom = chromium_dump_dom(&url);
        chromium_screenshot(&url, &png, 1280, 1600);
        (dom, png)
    })
    .await
    .unwrap();
    let section = |id: &str| -> String {
        let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in {dom}"));
        let rest = &dom[start..];
        rest[..rest.find("</table>").or_else(|| rest.find("</p>")).unwrap()].to_owned()
    };
    let state = section("state");
    assert!(state.contains("state: <b>idle</b>") || state.contains("state: <b>running</b>"), "{state}");
    let runs = section("runs");
    for needle in ["<td>corp</td>", "<td>cloud</td>", "<td>export</td>", "<td>success</td>"] {
        assert!(runs.contains(needle), "{needle} in {runs}");
    }
    let outbox = section("outbox");
    assert!(outbox.contains("<td>delivered</td><td>2</td>"), "{outbox}");
    assert!(section("dead-letters").contains("none"), "{dom}");
    assert!(section("holds").contains("none"), "{dom}");
    assert!(std::fs::metadata(&png).unwrap().len() > 0);

    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let code = poll(60, "the service to stop", &log, || {
        let r = child.try_wait().unwrap();
        async move { r }
    })
    .await;
    assert_eq!(code.code(), Some(0), "{}", std::fs::read_to_string(&log).unwrap());
    emu.stop().await.unwrap();
}

/// Sets the emulator's answer delay (and no other fault).
async fn delay(base: &str, ms: u64) {
    let r = reqwest::Client::new()
        .post(format!("{base}/_emulator/faults"))
        .json(&serde_json::json!({ "delayMs": ms }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

fn spawn_serve(config: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    Command::new(syncctl_bin())
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn signal(child: &std::process::Child, sig: &str) {
    let s = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(s.success());
}

async fn wait_exit(child: &mut std::process::Child, log: &std::path::Path) {
    let code = poll(180, "the service to stop", log, || {
        let r = child.try_wait().unwrap();
        async move { r }
    })
    .await;
    assert_eq!(code.code(), Some(0), "{}", std::fs::read_to_string(log).unwrap());
}

/// Run history as `syncctl --json runs` prints it (the newest first).
fn runs(config: &std::path::Path) -> Vec<Value> {
    let out = Command::new(syncctl_bin())
        .arg("--config")
        .arg(config)
        .args(["--json", "runs", "--limit", "500"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_on_active_directory_stopped_mid_cycle_resumes_and_converges_with_nothing_doubled() {
    let peer = samba();
    let smtp = smtp();
    let mut ldap = admin(&peer).await;
    let t = unique("sr");
    let ou = make_ou(&mut ldap, &peer.base, &t).await;
    let tail: String = t.chars().rev().filter(char::is_ascii_alphanumeric).take(14).collect();
    let boss_dn = format!("CN=Boss,{ou}");
    let boss_mail = format!("boss.{t}@corp.example.com");
    add(
        &mut ldap,
        &boss_dn,
        &[
            ("objectClass", &["user"]),
            ("sAMAccountName", &[&format!("b{tail}")]),
            ("userPrincipalName", &[&format!("b{tail}@corp.example.com")]),
            ("displayName", &["The Boss"]),
            ("mail", &[&boss_mail]),
        ],
    )
    .await;
    // Users 0..8 are there from the start, 8..11 come later; all in Engineering.
    let upn = |i: usize| format!("u{i}{tail}@corp.example.com");
    let mail = |i: usize| format!("u{i}.{t}@corp.example.com");
    let dn = |i: usize| format!("CN=User {i},{ou}");
    let who = |i: usize| (dn(i), upn(i), mail(i), format!("u{i}{tail}"), boss_dn.clone());
    for i in 0..8 {
        let (dn, upn, mail, sam, boss_dn) = who(i);
        add(
            &mut ldap,
            &dn,
            &[
                ("objectClass", &["user"]),
                ("sAMAccountName", &[&sam]),
                ("userPrincipalName", &[&upn]),
                ("givenName", &[&format!("User{i}")]),
                ("displayName", &[&format!("User {i}")]),
                ("mail", &[&mail]),
                ("department", &["Engineering"]),
                ("manager", &[&boss_dn]),
            ],
        )
        .await;
    }

    // A long stop grace: the first signal lets the running step end, however slow.
    let AdCloudService { emu, emu_url, dir, port, config } =
        ad_cloud_service(&peer, &ou, &smtp, "stop_grace = \"10m\"\nassess_every = \"0s\"\n").await;
    let writes = |emu: &syncctl_graph_emulator::RunningEmulator| emu.stats().total_writes();

    // Everyone reaches the tenant.
    let log_a = dir.path().join("a.log");
    let mut a = spawn_serve(&config, &log_a);
    for i in 0..8 {
        let u = upn(i);
        poll(240, "the users in the tenant", &log_a, || cloud_user(&emu_url, &u)).await;
    }

    // 1. One SIGTERM in the middle of a slowed-down export: that step ends, no other starts,
    //    and no run is left in progress.
    delay(&emu_url, 700).await;
    for i in 0..4 {
        replace(&mut ldap, &dn(i), "department", &["Sales"]).await;
    }
    for i in 8..11 {
        let (dn, upn, mail, sam, boss_dn) = who(i);
        add(
            &mut ldap,
            &dn,
            &[
                ("objectClass", &["user"]),
                ("sAMAccountName", &[&sam]),
                ("userPrincipalName", &[&upn]),
                ("displayName", &[&format!("User {i}")]),
                ("mail", &[&mail]),
                ("department", &["Engineering"]),
                ("manager", &[&boss_dn]),
            ],
        )
        .await;
    }
    let before = writes(&emu);
    poll(240, "the export of the changes to start", &log_a, || {
        let n = writes(&emu);
        async move { (n > before).then_some(()) }
    })
    .await;
    signal(&a, "-TERM");
    wait_exit(&mut a, &log_a).await;
    let log = std::fs::read_to_string(&log_a).unwrap();
    let after = &log[log.find("a stop signal arrived").unwrap_or_else(|| panic!("no signal seen: {log}"))..];
    assert!(
        after.contains("the cycle stopped after the step") || after.contains("the cycle ended"),
        "the running step ended on its own: {log}"
    );
    assert!(!log.contains("abandoned"), "{log}");
    let history = runs(&config);
    assert!(history.iter().all(|r| r["status"] != "in-progress"), "a step was left running: {history:#?}");

    // 2. Two signals: the running step is abandoned where it is.
    let log_b = dir.path().join("b.log");
    let mut b = spawn_serve(&config, &log_b);
    delay(&emu_url, 1500).await;
    for i in 4..6 {
        replace(&mut ldap, &dn(i), "department", &["Sales"]).await;
    }
    let before = writes(&emu);
    poll(240, "the next export to start", &log_b, || {
        let n = writes(&emu);
        async move { (n > before).then_some(()) }
    })
    .await;
    // Both signals must find a step still running, however slow this machine: from here every
    // Graph request waits 20 s, and the signals go once the next cycle's directory import has
    // finished, while its cloud import (or the export's last requests) wait on the cloud.
    // (Signalling right after the export's first writes raced the end of the cycle on a loaded
    // machine: the export and the mail were done before the second signal.)
    delay(&emu_url, 20_000).await;
    let corp_imports = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("import{connector=corp") && l.contains("import finished"))
            .count()
    };
    let imported = corp_imports(&log_b);
    poll(120, "the next cycle's directory import", &log_b, || {
        let n = corp_imports(&log_b);
        async move { (n > imported).then_some(()) }
    })
    .await;
    signal(&b, "-TERM");
    poll(60, "the first signal to be seen", &log_b, || {
        let seen = std::fs::read_to_string(&log_b).unwrap_or_default().contains("a stop signal arrived");
        async move { seen.then_some(()) }
    })
    .await;
    signal(&b, "-TERM");
    wait_exit(&mut b, &log_b).await;
    let log = std::fs::read_to_string(&log_b).unwrap();
    assert!(log.contains("a second stop signal arrived") && log.contains("abandoned"), "{log}");
    // The run of the abandoned step, if it was one (mail delivery has none) is left in progress.
    let left: Vec<Value> =
        runs(&config).into_iter().filter(|r| r["status"] == "in-progress").map(|r| r["id"].clone()).collect();

    // 3. A restart at full speed converges: every user once with its department, every
    //    mail once, no user created twice, and the abandoned run closed as interrupted.
    delay(&emu_url, 0).await;
    let log_c = dir.path().join("c.log");
    let mut c = spawn_serve(&config, &log_c);
    for i in 0..11 {
        let want = if i < 6 { "Sales" } else { "Engineering" };
        let u = upn(i);
        poll(240, "the tenant to converge", &log_c, || async {
            cloud_user(&emu_url, &u).await.filter(|u| u["department"] == want)
        })
        .await;
    }
    poll(240, "every welcome mail", &log_c, || async {
        ((0..6).all(|i| !smtp.messages_to(&mail(i)).is_empty()) && smtp.messages_to(&boss_mail).len() >= 6)
            .then_some(())
    })
    .await;
    // Two more cycles change nothing.
    let status = |n: u64| {
        let url = format!("http://127.0.0.1:{port}/api/status");
        async move {
            let s: Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            (s["service"]["cycles"].as_u64()? >= n).then_some(s)
        }
    };
    let now = poll(60, "the status", &log_c, || status(0)).await["service"]["cycles"].as_u64().unwrap();
    poll(120, "two more cycles", &log_c, || status(now + 2)).await;
    for i in 0..11 {
        let want = usize::from(i < 6);
        assert_eq!(smtp.messages_to(&mail(i)).len(), want, "mail to user {i}");
    }
    let all = smtp.messages_to(&t);
    assert_eq!(smtp.messages_to(&boss_mail).len(), 6, "the manager's mail");
    assert_eq!(all.len(), 12);
    let mut ids: Vec<String> = all.iter().map(|m| m.header("Message-ID").unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "a Message-ID twice");
    let stats = emu.stats();
    assert_eq!(stats.writes.get("POST /users").copied(), Some(12), "a user created twice: {stats:?}");
    let history = runs(&config);
    for id in &left {
        let run = history.iter().find(|r| &r["id"] == id).unwrap();
        assert_eq!(
            run["status"], "stopped-interrupted",
            "the abandoned run is closed as interrupted: {run:#}"
        );
    }
    signal(&c, "-TERM");
    wait_exit(&mut c, &log_c).await;
    emu.stop().await.unwrap();
}

/// A Graph emulator and, in a new temporary directory, a syncctl config for `serve`: the AD
/// connector over `ou` (users), the cloud connector, mail through `smtp`, the mail tests' model,
/// and a `[service]` section polling every second on a free loopback port, with `service_extra`
/// lines.
struct AdCloudService {
    emu: syncctl_graph_emulator::RunningEmulator,
    emu_url: String,
    dir: tempfile::TempDir,
    port: u16,
    config: std::path::PathBuf,
}

async fn ad_cloud_service(peer: &Peer, ou: &str, smtp: &Smtp, service_extra: &str) -> AdCloudService {
    let emu = syncctl_graph_emulator::start(EmulatorConfig {
        tenant: "contoso.onmicrosoft.com".into(),
        verified_domains: vec!["corp.example.com".into()],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let emu_url = emu.base_url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("graph.secret"), syncctl_graph_emulator::DEFAULT_CLIENT_SECRET).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("syncctl.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"syncctl.db\"\n\n[[connectors]]\nname = \"corp\"\ntype = \"ldap\"\nflavor = \"ad\"\n\
             url = \"{}\"\nca_file = \"{}\"\nbind_dn = \"{}\"\npassword_file = \"{}\"\nbase_dn = \"{ou}\"\n\
             object_types = [\"user\"]\n\n[[connectors]]\nname = \"cloud\"\ntype = \"graph\"\n\
             tenant = \"contoso.onmicrosoft.com\"\nclient_id = \"{}\"\nclient_secret_file = \"graph.secret\"\n\
             authority = \"{emu_url}\"\ngraph_url = \"{}\"\n\n{}\n{MODEL}\n\n[service]\ninterval = \"1s\"\n\
             {service_extra}listen = \"127.0.0.1:{port}\"\n",
            peer.ldaps_url,
            peer.ca.display(),
            peer.bind_dn,
            peer.password_file.display(),
            syncctl_graph_emulator::DEFAULT_CLIENT_ID,
            emu.graph_url(),
            mail_section(smtp, "")
        ),
    )
    .unwrap();
    AdCloudService { emu, emu_url, dir, port, config }
}
