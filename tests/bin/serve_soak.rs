//! The compressed soak of `syncctl serve`: hundreds of cycles of the real service over an LDIF
//! directory that changes at random between cycles (users added, renamed, removed), against the
//! Graph emulator with injected faults (writes refused with 503, connections cut after the
//! write was applied) and the service killed with SIGKILL now and then; then the faults stop and
//! the tenant must converge to the directory: every user once, with its current name, nothing
//! left over. Bounded in time; exit 0 when it converged, 1 otherwise.
//!
//! `cargo build -p syncctl && cargo run -p syncctl-tests --bin serve-soak -- [CYCLES] [SECONDS] [SEED]`
//! (defaults 300 cycles, 900 s, seed 7).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods, missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use syncctl_graph_emulator::{EmulatorConfig, FaultConfig};

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

/// User number -> display name.
type Directory = BTreeMap<u32, String>;

fn upn(n: u32) -> String {
    format!("soak{n}@corp.example.com")
}

fn write_ldif(path: &Path, dir: &Directory) {
    let mut s = String::new();
    for (n, name) in dir {
        let mut guid = [0x5au8; 16];
        guid[..4].copy_from_slice(&n.to_be_bytes());
        let guid = base64::engine::general_purpose::STANDARD.encode(guid);
        s.push_str(&format!(
            "dn: CN=Soak {n},CN=Users,DC=corp,DC=example,DC=com\nobjectClass: top\nobjectClass: person\n\
             objectClass: organizationalPerson\nobjectClass: user\ncn: Soak {n}\nobjectGUID:: {guid}\n\
             userAccountControl: 512\nsAMAccountName: soak{n}\nuserPrincipalName: {}\ndisplayName: {name}\n\n",
            upn(*n)
        ));
    }
    // Whole files only: the connector never reads half a write.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, s).unwrap();
    std::fs::rename(&tmp, path).unwrap();
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

async fn cycles(port: u16) -> Option<u64> {
    let s: Value =
        reqwest::get(format!("http://127.0.0.1:{port}/api/status")).await.ok()?.json().await.ok()?;
    s["service"]["cycles"].as_u64()
}

async fn tenant(base: &str) -> Vec<(String, String)> {
    let state: Value = reqwest::get(format!("{base}/_emulator/state")).await.unwrap().json().await.unwrap();
    state["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["userPrincipalName"].as_str().unwrap_or("").to_owned(),
                u["displayName"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
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

    let emu = syncctl_graph_emulator::start(EmulatorConfig {
        tenant: "contoso.onmicrosoft.com".into(),
        verified_domains: vec!["corp.example.com".into()],
        faults: FaultConfig { write_error_rate: 0.05, drop_rate: 0.02, delay_ms: 0, seed },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let base = emu.base_url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(dir.path().join("graph.secret"), syncctl_graph_emulator::DEFAULT_CLIENT_SECRET).unwrap();
    let config = dir.path().join("syncctl.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"syncctl.db\"\n\n[[connectors]]\nname = \"corp\"\ntype = \"ldif\"\npath = \"corp.ldif\"\n\
             flavor = \"ad\"\n\n[[connectors]]\nname = \"cloud\"\ntype = \"graph\"\ntenant = \"contoso.onmicrosoft.com\"\n\
             client_id = \"{}\"\nclient_secret_file = \"graph.secret\"\nauthority = \"{base}\"\ngraph_url = \"{}\"\n\n\
             [sync]\ndeletion_threshold = 0\n\n[service]\ninterval = \"50ms\"\nstop_grace = \"0s\"\nlisten = \"127.0.0.1:{port}\"\n",
            syncctl_graph_emulator::DEFAULT_CLIENT_ID,
            emu.graph_url()
        ),
    )
    .unwrap();
    let ldif = dir.path().join("corp.ldif");
    let log = dir.path().join("serve.log");
    let mut directory: Directory = (0..20).map(|n| (n, format!("Soak User {n}"))).collect();
    let mut next_id = 20u32;
    write_ldif(&ldif, &directory);

    let mut child = spawn(&bin, &config, &log);
    let (mut total, mut seen, mut kills, mut changes) = (0u64, 0u64, 0u32, 0u32);
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
        // A random change of the directory after each cycle.
        match rng.below(10) {
            0..=3 => {
                let keys: Vec<u32> = directory.keys().copied().collect();
                let k = keys[rng.below(keys.len() as u64) as usize];
                directory.insert(k, format!("Soak User {k} v{}", rng.below(1000)));
            }
            4..=5 => {
                directory.insert(next_id, format!("Soak User {next_id}"));
                next_id += 1;
            }
            6 if directory.len() > 5 => {
                let keys: Vec<u32> = directory.keys().copied().collect();
                directory.remove(&keys[rng.below(keys.len() as u64) as usize]);
            }
            _ => {}
        }
        changes += 1;
        write_ldif(&ldif, &directory);
        // Now and then the service is killed outright and started again.
        if rng.below(40) == 0 {
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            child = spawn(&bin, &config, &log);
            seen = 0;
        }
    }

    // Faults off; the tenant must converge to the directory.
    reqwest::Client::new().post(format!("{base}/_emulator/faults")).json(&json!({})).send().await.unwrap();
    let mut expected: Vec<(String, String)> =
        directory.iter().map(|(n, name)| (upn(*n), name.clone())).collect();
    expected.sort();
    let converge = Instant::now();
    let mut last = Vec::new();
    let ok = loop {
        let mut users = tenant(&base).await;
        users.sort();
        if users == expected {
            break true;
        }
        last = users;
        if converge.elapsed() > Duration::from_secs(120) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    let stats = emu.stats();
    println!(
        "soak: {total} cycles in {:.0} s, {changes} directory changes, {kills} SIGKILLs; {} users; \
         Graph writes {:?}, injected 503 {}, injected cuts {}, refused {}, throttled {}; converged: {ok} in {:.1} s; SIGTERM exit {:?}",
        started.elapsed().as_secs_f64(),
        expected.len(),
        stats.writes_by_method,
        stats.unavailable,
        stats.dropped,
        stats.refused,
        stats.throttled,
        converge.elapsed().as_secs_f64(),
        status.code()
    );
    emu.stop().await.unwrap();
    if !ok || status.code() != Some(0) {
        let diff: Vec<_> = last.iter().filter(|u| !expected.contains(u)).collect();
        let missing: Vec<_> = expected.iter().filter(|u| !last.contains(u)).collect();
        eprintln!("soak: the tenant differs: extra {diff:?}, missing {missing:?}");
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
        std::process::exit(1);
    }
}
