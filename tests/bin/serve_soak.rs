//! The compressed soak of `syncctl serve`: hundreds of cycles of the real service over an
//! OpenLDAP directory that changes at random between cycles (users added, renamed, moved into
//! the Sales department, removed), with notification workflows that mail every user who joins
//! Sales and their manager, and faults injected on all three sides:
//!
//! - **LDAP**: the directory is a private OpenLDAP server (`tests/peers/slapd.sh`, its own
//!   ports and data) reached through a TCP proxy in this process that cuts 15% of the
//!   connections after a random number of bytes (mid-page: the connector reads pages of 5), and
//!   the server itself is stopped now and then and started again a few cycles later (a clean
//!   stop: see the note at the stop for why not SIGKILL);
//! - **SMTP**: a private SMTP server (`tests/peers/smtp.sh`) is stopped now and then and
//!   started again a few cycles later;
//! - **Graph**: the emulator refuses 5% of writes with 503 and cuts 2% after applying them;
//! - **syncctl** itself is killed with SIGKILL about every 40 cycles and started again.
//!
//! Then the faults stop and everything must converge: the tenant equals what the directory
//! implies (every user once, with its current name and department, nothing left over), no user
//! was created twice, every expected mail arrived exactly once (one per user who joined Sales,
//! one per such user to the manager, distinct Message-IDs, no other mail), the outbox holds
//! nothing undelivered and no dead letter; and SIGTERM must exit 0. Bounded in time; prints a
//! summary; exit 0 when it converged, 1 otherwise.
//!
//! `cargo build -p syncctl && cargo run -p syncctl-tests --bin serve-soak -- [CYCLES] [SECONDS] [SEED]`
//! (defaults 300 cycles, 900 s, seed 7), with the peers' environment: `tests/peers/start-all.sh`
//! then `. /tmp/syncctl-peers/env.sh` (the private servers are made by the same scripts, from
//! the shared ones' packages and settings; the shared servers are not touched).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use syncctl_graph_emulator::{EmulatorConfig, FaultConfig};
use syncctl_tests::{PrivateSlapd, PrivateSmtp, add, admin, delete, replace};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[derive(Clone)]
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One user of the directory.
#[derive(Clone, Debug)]
struct User {
    name: String,
    sales: bool,
}

/// User number -> user.
type Directory = BTreeMap<u32, User>;

const OU: &str = "ou=soak,dc=example,dc=com";

fn dn(n: u32) -> String {
    format!("uid=s{n},{OU}")
}

fn mail(n: u32, tag: &str) -> String {
    format!("soak{n}.{tag}@corp.example.com")
}

fn boss_mail(tag: &str) -> String {
    format!("boss.{tag}@corp.example.com")
}

fn dept(u: &User) -> &'static str {
    if u.sales { "Sales" } else { "Engineering" }
}

/// What the proxy in front of the LDAP server did.
#[derive(Default)]
struct ProxyStats {
    connections: AtomicU64,
    cut: AtomicU64,
    refused: AtomicU64,
}

/// A loopback TCP proxy to `upstream` that cuts a connection, with probability `rate` per
/// mille, after a random number of bytes from the server (200..5200: inside the StartTLS
/// handshake, the bind or a page); a connection the server refuses is closed at once.
async fn ldap_proxy(upstream: String, rate: Arc<AtomicU32>, seed: u64, stats: Arc<ProxyStats>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut rng = Rng(seed ^ 0x1dab);
        while let Ok((mut client, _)) = listener.accept().await {
            let n = stats.connections.fetch_add(1, Ordering::SeqCst);
            let cut_after = (rng.below(1000) < u64::from(rate.load(Ordering::SeqCst)))
                .then(|| 200 + rng.below(5_000) as usize);
            let upstream = upstream.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    stats.refused.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = tokio::io::copy(&mut cr, &mut sw);
                let down = async {
                    let mut sent = 0usize;
                    let mut buf = vec![0u8; 8192];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => n,
                        };
                        let n = match cut_after {
                            Some(limit) if sent + n >= limit => {
                                let _ = cw.write_all(&buf[..limit - sent]).await;
                                return true;
                            }
                            _ => n,
                        };
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return false;
                        }
                        sent += n;
                    }
                };
                let cut = tokio::select! { _ = up => false, c = down => c };
                if cut {
                    stats.cut.fetch_add(1, Ordering::SeqCst);
                }
                let _ = n;
            });
        }
    });
    port
}

fn spawn(bin: &Path, config: &Path, log: &Path) -> Child {
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap()
}

async fn status(port: u16) -> Option<Value> {
    reqwest::get(format!("http://127.0.0.1:{port}/api/status")).await.ok()?.json().await.ok()
}

async fn cycles(port: u16) -> Option<u64> {
    status(port).await?["service"]["cycles"].as_u64()
}

/// The tenant's users: (UPN, displayName, department), sorted.
async fn tenant(base: &str) -> Vec<(String, String, String)> {
    let state: Value = reqwest::get(format!("{base}/_emulator/state")).await.unwrap().json().await.unwrap();
    let s = |u: &Value, k: &str| u[k].as_str().unwrap_or("").to_owned();
    let mut users: Vec<_> = state["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (s(u, "userPrincipalName"), s(u, "displayName"), s(u, "department")))
        .collect();
    users.sort();
    users
}

/// Adds user `n` to the directory.
async fn add_user(ldap: &mut ldap3::Ldap, n: u32, u: &User, tag: &str) {
    let uid = format!("s{n}");
    let boss = format!("uid=boss,{OU}");
    add(
        ldap,
        &dn(n),
        &[
            ("objectClass", &["inetOrgPerson"]),
            ("uid", &[&uid]),
            ("cn", &[&format!("Soak {n}")]),
            ("sn", &["Soak"]),
            ("givenName", &[&format!("Soak{n}")]),
            ("displayName", &[&u.name]),
            ("mail", &[&mail(n, tag)]),
            ("departmentNumber", &[dept(u)]),
            ("manager", &[&boss]),
        ],
    )
    .await;
}

/// Mail as the SMTP server stored it: (recipient, Message-ID).
fn mails(smtp: &PrivateSmtp) -> Vec<(String, String)> {
    smtp.smtp
        .messages()
        .iter()
        .flat_map(|m| {
            let id = m.header("Message-ID").unwrap_or_default();
            m.rcpt_tos.iter().map(move |r| (r.clone(), id.clone())).collect::<Vec<_>>()
        })
        .collect()
}

#[derive(Default, Debug)]
struct Counts {
    adds: u32,
    renames: u32,
    joins: u32,
    removes: u32,
    skipped: u32,
    sigkills: u32,
    slapd_stops: u32,
    smtp_stops: u32,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let budget = Duration::from_secs(args.get(2).and_then(|a| a.parse().ok()).unwrap_or(900));
    let seed: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(7);
    let bin = assert_cmd::cargo::cargo_bin("syncctl");
    assert!(bin.exists(), "{} is missing: cargo build -p syncctl first", bin.display());
    let started = Instant::now();
    let mut rng = Rng(seed);
    let tag = format!("t{seed}x{}", std::process::id());

    // The three peers: OpenLDAP and SMTP of our own (we stop them), the Graph emulator.
    let slapd = tokio::task::spawn_blocking(PrivateSlapd::start).await.unwrap();
    let mut smtp = tokio::task::spawn_blocking(|| PrivateSmtp::start("starttls", 0)).await.unwrap();
    let emu = syncctl_graph_emulator::start(EmulatorConfig {
        tenant: "contoso.onmicrosoft.com".into(),
        verified_domains: vec!["corp.example.com".into()],
        faults: FaultConfig { write_error_rate: 0.05, drop_rate: 0.02, delay_ms: 0, seed },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let base = emu.base_url().to_owned();
    let cut_rate = Arc::new(AtomicU32::new(150));
    let proxy_stats = Arc::new(ProxyStats::default());
    let upstream = slapd.peer.url.trim_start_matches("ldap://").to_owned();
    let proxy_port = ldap_proxy(upstream, cut_rate.clone(), seed, proxy_stats.clone()).await;

    // The directory at the start: the boss and 15 users in Engineering.
    let mut ldap = admin(&slapd.peer).await;
    add(&mut ldap, OU, &[("objectClass", &["organizationalUnit"])]).await;
    add(
        &mut ldap,
        &format!("uid=boss,{OU}"),
        &[
            ("objectClass", &["inetOrgPerson"]),
            ("uid", &["boss"]),
            ("cn", &["Boss"]),
            ("sn", &["Boss"]),
            ("givenName", &["Boss"]),
            ("displayName", &["The Boss"]),
            ("mail", &[&boss_mail(&tag)]),
            ("departmentNumber", &["Management"]),
        ],
    )
    .await;
    let mut directory: Directory = Directory::new();
    for n in 0..15 {
        let u = User { name: format!("Soak User {n}"), sales: false };
        add_user(&mut ldap, n, &u, &tag).await;
        directory.insert(n, u);
    }
    let mut next_id = 15u32;
    let mut ever_created = 16u64;
    let mut ldap = Some(ldap);

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(dir.path().join("graph.secret"), syncctl_graph_emulator::DEFAULT_CLIENT_SECRET).unwrap();
    let config = dir.path().join("syncctl.toml");
    let s = &smtp.smtp;
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"syncctl.db\"\n\n\
             [[connectors]]\nname = \"people\"\ntype = \"ldap\"\nflavor = \"openldap\"\n\
             url = \"ldap://127.0.0.1:{proxy_port}\"\nsecurity = \"starttls\"\nca_file = \"{}\"\nbind_dn = \"{}\"\n\
             password_file = \"{}\"\nbase_dn = \"{OU}\"\nobject_types = [\"inetOrgPerson\"]\npage_size = 5\ntimeout_secs = 10\n\n\
             [[connectors]]\nname = \"cloud\"\ntype = \"graph\"\ntenant = \"contoso.onmicrosoft.com\"\n\
             client_id = \"{}\"\nclient_secret_file = \"graph.secret\"\nauthority = \"{base}\"\ngraph_url = \"{}\"\n\n\
             [sync]\ndeletion_threshold = 0\n\n\
             [mail]\nsender = \"syncctl@corp.example.com\"\nmax_attempts = 10000\nretry_initial_seconds = 0\nretry_max_seconds = 1\n\n\
             [mail.smtp]\nhost = \"{}\"\nport = {}\nsecurity = \"starttls\"\nusername = \"{}\"\npassword_file = \"{}\"\n\
             ca_file = \"{}\"\ntimeout_seconds = 5\n\n\
             [[sets]]\nname = \"sales\"\nobject_type = \"person\"\ncriteria = 'department == \"Sales\"'\n\n\
             [[policies]]\nname = \"joined-sales\"\nset = \"sales\"\ntransition = \"in\"\nworkflow = \"welcome\"\n\n\
             [[policies]]\nname = \"left-sales\"\nset = \"sales\"\ntransition = \"out\"\nworkflow = \"goodbye\"\n\n\
             [[workflows]]\nname = \"welcome\"\n[[workflows.activities]]\nname = \"tell the user and the manager\"\n\
             recipients = [\"target\", \"manager\"]\nsubject = \"Welcome to Sales, {{{{ target.displayName }}}}\"\n\
             text = \"{{{{ target.givenName }}}} joins Sales; manager: {{{{ manager.displayName }}}}.\"\n\n\
             [[workflows]]\nname = \"goodbye\"\n[[workflows.activities]]\nname = \"tell the user\"\n\
             recipients = [\"target\"]\nsubject = \"Goodbye from Sales\"\ntext = \"{{{{ target.givenName }}}} leaves Sales.\"\n\n\
             [service]\ninterval = \"50ms\"\nstop_grace = \"0s\"\nassess_every = \"0s\"\nlisten = \"127.0.0.1:{port}\"\n",
            slapd.peer.ca.display(),
            slapd.peer.bind_dn,
            slapd.peer.password_file.display(),
            syncctl_graph_emulator::DEFAULT_CLIENT_ID,
            emu.graph_url(),
            s.host,
            s.port,
            s.user,
            s.password_file.display(),
            s.ca.display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    // What the soak did, cycle by cycle (kept with the database when it fails).
    let mut events = String::new();
    let mut event = |total: u64, what: String| {
        events.push_str(&format!("{total:>5} {:>8.3}s {what}\n", started.elapsed().as_secs_f64()));
    };

    let mut child = spawn(&bin, &config, &log);
    let mut k = Counts::default();
    let (mut total, mut seen) = (0u64, 0u64);
    let (mut slapd_back_at, mut smtp_back_at): (Option<u64>, Option<u64>) = (None, None);
    while total < target {
        if started.elapsed() > budget {
            eprintln!("soak: time budget spent after {total} cycles");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(c) = cycles(port).await else { continue };
        if c <= seen {
            continue;
        }
        total += c - seen;
        seen = c;

        // Servers that are due back come back.
        if slapd_back_at.is_some_and(|at| total >= at) {
            let s = &slapd;
            tokio::task::block_in_place(|| s.run("start"));
            event(total, "slapd started".into());
            ldap = Some(admin(&slapd.peer).await);
            slapd_back_at = None;
        }
        if smtp_back_at.is_some_and(|at| total >= at) {
            tokio::task::block_in_place(|| smtp.restart("starttls", 0));
            event(total, "smtp started".into());
            smtp_back_at = None;
        }

        // A random change of the directory after each cycle (while its server runs). A user
        // who joined Sales stays there: each join is one welcome mail, expected exactly once.
        match ldap.as_mut() {
            None => k.skipped += 1,
            Some(l) => {
                let others: Vec<u32> = directory.iter().filter(|(_, u)| !u.sales).map(|(n, _)| *n).collect();
                let all: Vec<u32> = directory.keys().copied().collect();
                match rng.below(20) {
                    0..=6 => {
                        let n = all[rng.below(all.len() as u64) as usize];
                        let name = format!("Soak User {n} v{}", rng.below(1000));
                        replace(l, &dn(n), "displayName", &[&name]).await;
                        event(total, format!("rename {} to {name}", dn(n)));
                        directory.get_mut(&n).unwrap().name = name;
                        k.renames += 1;
                    }
                    7..=10 => {
                        let u = User { name: format!("Soak User {next_id}"), sales: false };
                        add_user(l, next_id, &u, &tag).await;
                        event(total, format!("add {}", dn(next_id)));
                        directory.insert(next_id, u);
                        next_id += 1;
                        ever_created += 1;
                        k.adds += 1;
                    }
                    11..=13 if !others.is_empty() => {
                        let n = others[rng.below(others.len() as u64) as usize];
                        replace(l, &dn(n), "departmentNumber", &["Sales"]).await;
                        event(total, format!("move {} to Sales", dn(n)));
                        directory.get_mut(&n).unwrap().sales = true;
                        k.joins += 1;
                    }
                    14..=15 if others.len() > 5 => {
                        let n = others[rng.below(others.len() as u64) as usize];
                        delete(l, &dn(n)).await;
                        event(total, format!("delete {}", dn(n)));
                        directory.remove(&n);
                        k.removes += 1;
                    }
                    _ => {}
                }
            }
        }

        // Faults: the LDAP server killed, the SMTP server stopped, syncctl killed.
        if slapd_back_at.is_none() && rng.below(60) == 0 {
            // A clean stop (slapd.sh stop: SIGINT). Killed with SIGKILL, OpenLDAP loses the
            // change records of its last operations (syncprov checkpoints its contextCSN every
            // 100 writes or 10 minutes): a delete made just before is then invisible to every
            // RFC 4533 delta, and only a full import (`full_after`) finds it.
            let s = &slapd;
            tokio::task::block_in_place(|| s.run("stop"));
            event(total, "slapd stopped".into());
            ldap = None;
            slapd_back_at = Some(total + 2 + rng.below(6));
            k.slapd_stops += 1;
        }
        if smtp_back_at.is_none() && rng.below(45) == 0 {
            tokio::task::block_in_place(|| smtp.stop());
            event(total, "smtp stopped".into());
            smtp_back_at = Some(total + 2 + rng.below(8));
            k.smtp_stops += 1;
        }
        if rng.below(40) == 0 {
            child.kill().unwrap();
            child.wait().unwrap();
            k.sigkills += 1;
            event(total, "syncctl killed (SIGKILL)".into());
            child = spawn(&bin, &config, &log);
            seen = 0;
        }
    }
    let soak_secs = started.elapsed().as_secs_f64();
    let _ = event;

    // Faults off, servers back; everything must converge.
    reqwest::Client::new().post(format!("{base}/_emulator/faults")).json(&json!({})).send().await.unwrap();
    cut_rate.store(0, Ordering::SeqCst);
    if slapd_back_at.take().is_some() {
        let s = &slapd;
        tokio::task::block_in_place(|| s.run("start"));
    }
    if smtp_back_at.take().is_some() {
        tokio::task::block_in_place(|| smtp.restart("starttls", 0));
    }
    let mut expected: Vec<(String, String, String)> = directory
        .iter()
        .map(|(n, u)| (mail(*n, &tag), u.name.clone(), dept(u).to_owned()))
        .chain([(boss_mail(&tag), "The Boss".to_owned(), "Management".to_owned())])
        .collect();
    expected.sort();
    // The mail expected: one per user in Sales, to them and to the manager.
    let sales: Vec<u32> = directory.iter().filter(|(_, u)| u.sales).map(|(n, _)| *n).collect();
    let mut expected_mail: BTreeMap<String, usize> = sales.iter().map(|n| (mail(*n, &tag), 1)).collect();
    if !sales.is_empty() {
        expected_mail.insert(boss_mail(&tag), sales.len());
    }
    let mail_counts = |smtp: &PrivateSmtp| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (r, _) in mails(smtp) {
            *m.entry(r).or_insert(0) += 1;
        }
        m
    };
    let converge = Instant::now();
    let mut last = Vec::new();
    let mut converged = loop {
        let users = tenant(&base).await;
        let ok = users == expected && mail_counts(&smtp) == expected_mail;
        if ok {
            break true;
        }
        last = users;
        if converge.elapsed() > Duration::from_secs(180) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let converge_secs = converge.elapsed().as_secs_f64();
    let mut problems = Vec::new();
    if !converged {
        let extra: Vec<_> = last.iter().filter(|u| !expected.contains(u)).collect();
        let missing: Vec<_> = expected.iter().filter(|u| !last.contains(u)).collect();
        problems.push(format!("the tenant differs: extra {extra:?}, missing {missing:?}"));
        let got = mail_counts(&smtp);
        if got != expected_mail {
            problems.push(format!("mail differs: expected {expected_mail:?}, got {got:?}"));
        }
    }
    // Two more cycles change nothing; then the outbox, the Message-IDs and the writes.
    let now = cycles(port).await.unwrap_or(0);
    let wait = Instant::now();
    while cycles(port).await.unwrap_or(0) < now + 2 && wait.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let users = tenant(&base).await;
    if converged && users != expected {
        converged = false;
        problems.push("the tenant changed after convergence".into());
    }
    let delivered = mails(&smtp);
    let ids: BTreeSet<&String> = delivered.iter().map(|(_, id)| id).collect();
    // One message per recipient: the welcome mail to a user and its copy to the manager are
    // two messages.
    if ids.len() != delivered.len() {
        converged = false;
        problems.push(format!(
            "{} deliveries but {} distinct Message-IDs: a message was delivered twice",
            delivered.len(),
            ids.len()
        ));
    }
    if converged && mail_counts(&smtp) != expected_mail {
        converged = false;
        problems.push(format!("mail changed after convergence: {:?}", mail_counts(&smtp)));
    }
    let st = status(port).await.unwrap_or_default();
    let outbox: BTreeMap<String, u64> = st["mail_outbox"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| (m["status"].as_str().unwrap_or("").to_owned(), m["count"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let dead = st["dead_letters"].as_array().map_or(0, Vec::len);
    if outbox.iter().any(|(s, n)| s != "delivered" && *n > 0) || dead > 0 {
        converged = false;
        problems.push(format!(
            "the outbox is not empty: {outbox:?}, dead letters {dead}: {}",
            st["dead_letters"]
        ));
    }
    let stats = emu.stats();
    let creates = stats.writes.get("POST /users").copied().unwrap_or(0);
    if creates > ever_created {
        converged = false;
        problems
            .push(format!("{creates} users created in the tenant for {ever_created} ever in the directory"));
    }
    // The LDAP import runs that stopped on a fault.
    let out = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .args(["--json", "runs", "--connector", "people", "--limit", "1000000"])
        .output()
        .unwrap();
    let runs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let stopped_imports = runs
        .iter()
        .filter(|r| r["profile"].as_str().is_some_and(|p| p.ends_with("import")))
        .filter(|r| r["status"].as_str().is_some_and(|s| s.starts_with("stopped-")))
        .count();

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let exit = child.wait().unwrap();
    let ok = converged && exit.code() == Some(0);
    println!(
        "soak: {total} cycles in {soak_secs:.0} s (seed {seed}); directory: {} users at the end ({} in Sales), {} adds, {} renames, \
         {} joins of Sales, {} removals, {} changes skipped while the server was down; \
         faults: LDAP {} connections cut mid-stream (of {}), {} refused, {} server stops, {} import runs stopped; \
         SMTP {} server stops; Graph {} 503s, {} cuts after the write; syncctl {} SIGKILLs; \
         Graph writes {:?}, {} users created for {} ever in the directory; mail {} delivered ({} expected), \
         {} distinct Message-IDs, outbox {:?}, {} dead letters; converged: {ok} in {converge_secs:.1} s; SIGTERM exit {:?}",
        directory.len() + 1,
        sales.len(),
        k.adds,
        k.renames,
        k.joins,
        k.removes,
        k.skipped,
        proxy_stats.cut.load(Ordering::SeqCst),
        proxy_stats.connections.load(Ordering::SeqCst),
        proxy_stats.refused.load(Ordering::SeqCst),
        k.slapd_stops,
        stopped_imports,
        k.smtp_stops,
        stats.unavailable,
        stats.dropped,
        k.sigkills,
        stats.writes_by_method,
        creates,
        ever_created,
        delivered.len(),
        expected_mail.values().sum::<usize>(),
        ids.len(),
        outbox,
        dead,
        exit.code()
    );
    emu.stop().await.unwrap();
    if !ok {
        for p in &problems {
            eprintln!("soak: {p}");
        }
        eprintln!(
            "{}",
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::fs::write(dir.path().join("events.txt"), &events).unwrap();
        let kept = dir.keep();
        eprintln!("soak: the database, the service's log and the events are kept in {}", kept.display());
        drop(slapd);
        drop(smtp);
        std::process::exit(1);
    }
}
