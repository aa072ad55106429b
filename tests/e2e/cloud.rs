//! The full cycle through the real `syncctl` binary: Samba AD (each test its own OU) -> the
//! metaverse -> Microsoft Graph, played by the Graph emulator (each test its own tenant, started
//! in this process with its state in a temporary directory). `syncctl cycle` runs as a
//! subprocess with an `ldap` connector scoped to the test's OU and a `graph` connector to the
//! emulator (client secret in a file).
//!
//! What the cloud must hold is computed here from what the real `ldapsearch` returns (the
//! ImmutableID is the base64 of objectGUID's raw bytes as ldapsearch prints them) and a
//! hand-written AD-to-Graph attribute mapping, never from syncctl code; what the cloud holds is
//! read from the emulator's `/_emulator/state`, and what was written from `/_emulator/stats`.
//! Waits are bounded polls; nothing is asserted on wall-clock durations.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ldap3::Ldap;
use serde_json::{Value, json};
use syncctl_graph_emulator::{EmulatorConfig, FaultConfig, RunningEmulator, ThrottleConfig, WriteStats};
use syncctl_tests::*;

/// The UPN suffix of the Samba domain, verified in every test tenant.
const VERIFIED: &str = "corp.example.com";
/// Longest wait for one `syncctl` command (a bound, never an expectation).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(900);
/// Longest wait for the emulator to show progress of an export.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(300);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn short_tag() -> String {
    unique_tail("", 8)
}

// ---------------------------------------------------------------------------------------------
// The AD side: one OU per test, objects made with the administrator session.

struct Ad {
    peer: Peer,
    ldap: Ldap,
    tag: String,
    /// The connector's scope: `OU=In,<root>`.
    scope: String,
    /// A sibling of the scope, never read: `OU=Out,<root>`.
    out: String,
}

impl Ad {
    async fn new(prefix: &str) -> Ad {
        let peer = samba();
        let mut ldap = admin(&peer).await;
        let tag = short_tag();
        let root = make_ou(&mut ldap, &peer.base, &format!("{prefix}{tag}")).await;
        let scope = make_ou(&mut ldap, &root, "In").await;
        let out = make_ou(&mut ldap, &root, "Out").await;
        Ad { peer, ldap, tag, scope, out }
    }

    /// `<name>.<tag>@<suffix>`.
    fn upn(&self, name: &str, suffix: &str) -> String {
        format!("{name}.{}@{suffix}", self.tag)
    }

    /// A user `CN=<cn>,<parent>` with a unique sAMAccountName and the given attributes; with
    /// `enabled`, a password and userAccountControl 512 (else Samba makes it disabled, 546).
    async fn user(&mut self, parent: &str, cn: &str, attrs: &[(&str, &str)], enabled: bool) -> String {
        let dn = format!("CN={cn},{parent}");
        let sam = format!("{}{}", cn.split(' ').next().unwrap_or(cn).to_lowercase(), self.tag);
        let sam: String = sam.chars().filter(char::is_ascii_alphanumeric).take(20).collect();
        let mut all: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
            (b"objectClass".to_vec(), HashSet::from([b"user".to_vec()])),
            (b"sAMAccountName".to_vec(), HashSet::from([sam.into_bytes()])),
        ];
        for (k, v) in attrs {
            all.push((k.as_bytes().to_vec(), HashSet::from([v.as_bytes().to_vec()])));
        }
        if enabled {
            // unicodePwd: the quoted password in UTF-16LE (LDAPS only).
            let quoted = format!("\"E2e!Pw-{}-z9\"", self.tag);
            let pwd: Vec<u8> = quoted.encode_utf16().flat_map(u16::to_le_bytes).collect();
            all.push((b"unicodePwd".to_vec(), HashSet::from([pwd])));
            all.push((b"userAccountControl".to_vec(), HashSet::from([b"512".to_vec()])));
        }
        add_raw(&mut self.ldap, &dn, all).await;
        dn
    }

    /// A global security group (Samba's default groupType) with `members`.
    async fn group(&mut self, parent: &str, cn: &str, members: &[&str]) -> String {
        let dn = format!("CN={cn},{parent}");
        let sam: String = format!("g{}{}", cn.split(' ').next().unwrap_or(cn).to_lowercase(), self.tag)
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(20)
            .collect();
        let sam = [sam.as_str()];
        let mut attrs: Vec<(&str, &[&str])> = vec![("objectClass", &["group"]), ("sAMAccountName", &sam)];
        if !members.is_empty() {
            attrs.push(("member", members));
        }
        add(&mut self.ldap, &dn, &attrs).await;
        dn
    }

    /// What the real `ldapsearch` returns for every user and group under the scope.
    fn read(&self) -> Vec<LdifRecord> {
        let out = ldapsearch(
            &self.peer,
            &[
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-s",
                "sub",
                "-b",
                &self.scope,
                "(|(objectClass=user)(objectClass=group))",
                "objectGUID",
                "objectClass",
                "cn",
                "displayName",
                "userPrincipalName",
                "givenName",
                "sn",
                "mail",
                "department",
                "title",
                "userAccountControl",
                "sAMAccountName",
                "mailNickname",
                "member",
                "groupType",
                "description",
            ],
        );
        read_fixture_ldif(&String::from_utf8(out).unwrap())
    }

    /// The ImmutableID of `dn`: base64 of the objectGUID bytes that `ldapsearch` returns.
    fn immutable_id(&self, dn: &str) -> String {
        let out = ldapsearch(
            &self.peer,
            &["-LLL", "-o", "ldif-wrap=no", "-s", "base", "-b", dn, "(objectClass=*)", "objectGUID"],
        );
        let records = read_fixture_ldif(&String::from_utf8(out).unwrap());
        let guid = records
            .first()
            .and_then(|r| first(r, "objectGUID"))
            .unwrap_or_else(|| panic!("no objectGUID for {dn}"));
        assert_eq!(guid.len(), 16, "objectGUID of {dn} is 16 bytes");
        b64(&guid)
    }
}

fn first(r: &LdifRecord, name: &str) -> Option<Vec<u8>> {
    r.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
}

fn first_text(r: &LdifRecord, name: &str) -> Option<String> {
    first(r, name).map(|v| String::from_utf8(v).unwrap())
}

fn all_text(r: &LdifRecord, name: &str) -> Vec<String> {
    r.attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The cloud side as the tests compare it: objects keyed by onPremisesImmutableId.

/// One cloud object as compared: its kind, the compared properties (absent = null) and, for a
/// group, its members as ImmutableIDs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Compared {
    kind: &'static str,
    props: BTreeMap<&'static str, Value>,
    members: BTreeSet<String>,
}

const USER_PROPS: &[&str] = &[
    "onPremisesImmutableId",
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "department",
    "jobTitle",
    "accountEnabled",
    "mailNickname",
];
const GROUP_PROPS: &[&str] = &[
    "onPremisesImmutableId",
    "displayName",
    "securityEnabled",
    "mailEnabled",
    "description",
    "mailNickname",
];

fn text_or_null(v: Option<String>) -> Value {
    v.map_or(Value::Null, Value::String)
}

/// What the cloud must hold for the AD objects `records` (ldapsearch output), in a tenant whose
/// initial domain is `tenant` and whose only other verified domain is [`VERIFIED`]: Entra
/// Connect's mapping, written out by hand.
fn expected(records: &[LdifRecord], tenant: &str) -> BTreeMap<String, Compared> {
    let imm_of_dn: BTreeMap<String, String> =
        records.iter().map(|r| (r.dn.to_lowercase(), b64(&first(r, "objectGUID").unwrap()))).collect();
    let mut out = BTreeMap::new();
    for r in records {
        let imm = imm_of_dn[&r.dn.to_lowercase()].clone();
        let classes: Vec<String> = all_text(r, "objectClass").iter().map(|c| c.to_lowercase()).collect();
        let display = first_text(r, "displayName").or_else(|| first_text(r, "cn"));
        let mut props = BTreeMap::new();
        props.insert("onPremisesImmutableId", Value::String(imm.clone()));
        props.insert("displayName", text_or_null(display));
        let object = if classes.iter().any(|c| c == "group") {
            let group_type: i64 = first_text(r, "groupType").unwrap().parse().unwrap();
            props.insert("securityEnabled", Value::Bool(group_type & 0x8000_0000 != 0));
            props.insert("mailEnabled", Value::Bool(first(r, "mail").is_some()));
            props.insert("description", text_or_null(first_text(r, "description")));
            // Graph requires a mailNickname: the group's own, else its sAMAccountName.
            props.insert(
                "mailNickname",
                text_or_null(first_text(r, "mailNickname").or_else(|| first_text(r, "sAMAccountName"))),
            );
            let members = all_text(r, "member")
                .iter()
                .filter_map(|m| imm_of_dn.get(&m.to_lowercase()).cloned())
                .collect();
            Compared { kind: "group", props, members }
        } else {
            let upn = first_text(r, "userPrincipalName").unwrap();
            let (prefix, suffix) = upn.rsplit_once('@').unwrap();
            // A suffix that is not a verified domain: the cloud's initial domain instead.
            let cloud_upn = if suffix.eq_ignore_ascii_case(VERIFIED) || suffix.eq_ignore_ascii_case(tenant) {
                upn.clone()
            } else {
                format!("{prefix}@{tenant}")
            };
            let uac: i64 = first_text(r, "userAccountControl").unwrap().parse().unwrap();
            props.insert("userPrincipalName", Value::String(cloud_upn));
            props.insert("givenName", text_or_null(first_text(r, "givenName")));
            props.insert("surname", text_or_null(first_text(r, "sn")));
            props.insert("mail", text_or_null(first_text(r, "mail")));
            props.insert("department", text_or_null(first_text(r, "department")));
            props.insert("jobTitle", text_or_null(first_text(r, "title")));
            props.insert("accountEnabled", Value::Bool(uac & 2 == 0));
            props.insert(
                "mailNickname",
                text_or_null(first_text(r, "mailNickname").or_else(|| first_text(r, "sAMAccountName"))),
            );
            Compared { kind: "user", props, members: BTreeSet::new() }
        };
        out.insert(imm, object);
    }
    out
}

/// The emulator's state as the tests compare it, with each object's Graph id. Objects are keyed
/// by their onPremisesImmutableId; an object without one, or a second object with the same one,
/// is kept under a key that names the problem, so that the comparison shows it.
struct CloudView {
    objects: BTreeMap<String, Compared>,
    ids: BTreeMap<String, String>,
    users: usize,
    groups: usize,
}

impl CloudView {
    fn of(state: &Value) -> CloudView {
        let users = state["users"].as_array().unwrap();
        let groups = state["groups"].as_array().unwrap();
        let key_of_id: BTreeMap<String, String> = users
            .iter()
            .chain(groups)
            .map(|o| {
                let id = o["id"].as_str().unwrap().to_owned();
                let key = o["onPremisesImmutableId"]
                    .as_str()
                    .map_or_else(|| format!("(no ImmutableID: {id})"), str::to_owned);
                (id, key)
            })
            .collect();
        let mut view = CloudView {
            objects: BTreeMap::new(),
            ids: BTreeMap::new(),
            users: users.len(),
            groups: groups.len(),
        };
        for (kind, list, names) in [("user", users, USER_PROPS), ("group", groups, GROUP_PROPS)] {
            for o in list {
                let id = o["id"].as_str().unwrap().to_owned();
                let mut key = key_of_id[&id].clone();
                if view.objects.contains_key(&key) {
                    key = format!("(duplicate of {key}: {id})");
                }
                let props = names.iter().map(|n| (*n, o.get(*n).cloned().unwrap_or(Value::Null))).collect();
                let members = o
                    .get("members")
                    .and_then(Value::as_array)
                    .map(|ms| {
                        ms.iter()
                            .map(|m| {
                                let m = m.as_str().unwrap();
                                key_of_id.get(m).cloned().unwrap_or_else(|| format!("(unknown member {m})"))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                view.objects.insert(key.clone(), Compared { kind, props, members });
                view.ids.insert(key, id);
            }
        }
        view
    }
}

/// Field-by-field comparison with a readable failure.
fn assert_cloud_equals(view: &CloudView, expected: &BTreeMap<String, Compared>, what: &str) {
    if view.objects == *expected {
        return;
    }
    let mut diff = String::new();
    for (k, e) in expected {
        match view.objects.get(k) {
            None => diff.push_str(&format!("missing {} {k}: {e:?}\n", e.kind)),
            Some(a) if a != e => {
                diff.push_str(&format!("differs {k}:\n  expected {e:?}\n  actual   {a:?}\n"))
            }
            Some(_) => {}
        }
    }
    for (k, a) in &view.objects {
        if !expected.contains_key(k) {
            diff.push_str(&format!("unexpected {} {k}: {a:?}\n", a.kind));
        }
    }
    panic!("{what}: the cloud is not the expected state\n{diff}");
}

// ---------------------------------------------------------------------------------------------
// The emulator, the config file and the `syncctl` subprocess.

struct Cloud {
    dir: tempfile::TempDir,
    emu: Option<RunningEmulator>,
    config: EmulatorConfig,
    base_url: String,
    tenant: String,
    http: reqwest::Client,
    syncctl_config: PathBuf,
}

/// What one `syncctl` command did.
#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("syncctl printed no JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr)
        })
    }
    /// The run id of `step` (import, sync, export) on `connector` in `syncctl cycle --json`.
    fn run_id(&self, step: &str, connector: &str) -> i64 {
        let json = self.json();
        json["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == step && s["connector"] == connector)
            .and_then(|s| s["run_id"].as_i64())
            .unwrap_or_else(|| panic!("no {step} step on {connector} in {json:#}"))
    }
}

/// A `syncctl` process started in the background.
struct Running {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// A test that fails while syncctl runs does not leave it behind.
impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    async fn wait(mut self) -> Output {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > COMMAND_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "syncctl did not finish within {COMMAND_TIMEOUT:?}; stderr: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Output {
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(&self.stdout).unwrap(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap(),
        }
    }
}

impl Cloud {
    /// Starts a tenant `contoso<tag>.onmicrosoft.com` with [`VERIFIED`] as a verified domain, and
    /// writes the syncctl config: `corp` (LDAPS to Samba, base = the test's scope) and `cloud`
    /// (the emulator, its client secret in a file).
    async fn start(ad: &Ad, faults: FaultConfig, throttle: ThrottleConfig) -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let tenant = format!("contoso{}.onmicrosoft.com", ad.tag);
        // A secret of this run only: written to a file, handed to the emulator, never printed.
        let secret = format!("s3cret-{}", unique(""));
        let config = EmulatorConfig {
            state_path: Some(dir.path().join("graph.db")),
            tenant: tenant.clone(),
            verified_domains: vec![VERIFIED.into()],
            client_secret: secret.clone(),
            faults,
            throttle,
            ..EmulatorConfig::default()
        };
        let emu = syncctl_graph_emulator::start(config.clone()).await.unwrap();
        let config = EmulatorConfig { listen: emu.local_addr(), ..config };
        let base_url = emu.base_url().to_owned();
        let secret_file = dir.path().join("cloud.secret");
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        let syncctl_config = dir.path().join("syncctl.toml");
        let peer = &ad.peer;
        std::fs::write(
            &syncctl_config,
            format!(
                r#"[store]
path = "syncctl.db"

[[connectors]]
name = "corp"
type = "ldap"
flavor = "ad"
url = "{url}"
ca_file = "{ca}"
bind_dn = "{bind}"
password_file = "{pw}"
base_dn = "{scope}"
object_types = ["user", "group"]

[[connectors]]
name = "cloud"
type = "graph"
tenant = "{tenant}"
client_id = "{client}"
client_secret_file = "cloud.secret"
authority = "{base_url}"
graph_url = "{base_url}/v1.0"
"#,
                url = peer.ldaps_url,
                ca = peer.ca.display(),
                bind = peer.bind_dn,
                pw = peer.password_file.display(),
                scope = ad.scope,
                client = config.client_id,
            ),
        )
        .unwrap();
        Cloud { dir, emu: Some(emu), config, base_url, tenant, http: reqwest::Client::new(), syncctl_config }
    }

    fn emu(&self) -> &RunningEmulator {
        self.emu.as_ref().expect("the emulator is running")
    }

    async fn state(&self) -> Value {
        let r = self.http.get(format!("{}/_emulator/state", self.base_url)).send().await.unwrap();
        assert!(r.status().is_success(), "/_emulator/state: {}", r.status());
        r.json().await.unwrap()
    }

    async fn view(&self) -> CloudView {
        CloudView::of(&self.state().await)
    }

    async fn stats(&self) -> WriteStats {
        let r = self.http.get(format!("{}/_emulator/stats", self.base_url)).send().await.unwrap();
        assert!(r.status().is_success(), "/_emulator/stats: {}", r.status());
        r.json().await.unwrap()
    }

    async fn seed_users(&self, users: Value) {
        let r =
            self.http.post(format!("{}/_emulator/users", self.base_url)).json(&users).send().await.unwrap();
        assert!(
            r.status().is_success(),
            "seeding users: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }

    /// Stops the emulator (open requests finish first, its state file stays).
    async fn stop(&mut self) {
        if let Some(emu) = self.emu.take() {
            emu.stop().await.unwrap();
        }
    }

    /// Starts the emulator again on the same address with the same state file.
    async fn restart(&mut self) {
        assert!(self.emu.is_none(), "stop it first");
        let start = Instant::now();
        loop {
            match syncctl_graph_emulator::start(self.config.clone()).await {
                Ok(emu) => {
                    assert_eq!(emu.base_url(), self.base_url);
                    self.emu = Some(emu);
                    return;
                }
                Err(e) if start.elapsed() < Duration::from_secs(60) => {
                    eprintln!("emulator restart on {}: {e}; trying again", self.config.listen);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the emulator could not start again on {}: {e}", self.config.listen),
            }
        }
    }

    fn spawn(&self, args: &[&str]) -> Running {
        let n = unique("");
        let stdout = self.dir.path().join(format!("out-{n}.txt"));
        let stderr = self.dir.path().join(format!("err-{n}.txt"));
        let child = Command::new(syncctl_bin())
            .arg("--config")
            .arg(&self.syncctl_config)
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Running { child, stdout, stderr }
    }

    async fn syncctl(&self, args: &[&str]) -> Output {
        self.spawn(args).wait().await
    }

    /// `syncctl cycle [--full]`.
    async fn cycle(&self, full: bool) -> Output {
        self.syncctl(if full { &["cycle", "--full"] } else { &["cycle"] }).await
    }

    /// `syncctl runs --errors RUN --json`: the run's per-object errors and warnings.
    async fn run_entries(&self, run: i64) -> Vec<Value> {
        let out = self.syncctl(&["runs", "--errors", &run.to_string()]).await;
        assert_eq!(out.code, 0, "{out:?}");
        out.json().as_array().unwrap().clone()
    }

    /// The run history row of `run` (`syncctl runs --json`).
    async fn run_record(&self, run: i64) -> Value {
        let out = self.syncctl(&["runs", "--limit", "1000"]).await;
        assert_eq!(out.code, 0, "{out:?}");
        out.json()
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == run)
            .cloned()
            .unwrap_or_else(|| panic!("no run {run}: {}", out.stdout))
    }
}

/// A cycle that must succeed (exit 0).
async fn cycle_ok(cloud: &Cloud, full: bool, what: &str) -> Output {
    let out = cloud.cycle(full).await;
    assert_eq!(
        out.code,
        0,
        "{what}: syncctl cycle{} exited {}\nstdout: {}\nstderr: {}",
        if full { " --full" } else { "" },
        out.code,
        out.stdout,
        out.stderr
    );
    out
}

/// `after - before`, key by key (every counter only grows while the emulator runs).
fn stats_diff(after: &WriteStats, before: &WriteStats) -> WriteStats {
    let sub = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        a.iter()
            .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect()
    };
    WriteStats {
        writes: sub(&after.writes, &before.writes),
        writes_by_method: sub(&after.writes_by_method, &before.writes_by_method),
        refused: after.refused - before.refused,
        throttled: after.throttled - before.throttled,
        unavailable: after.unavailable - before.unavailable,
        dropped: after.dropped - before.dropped,
        scripted: after.scripted - before.scripted,
    }
}

fn writes(s: &WriteStats, key: &str) -> u64 {
    s.writes.get(key).copied().unwrap_or(0)
}

/// The `export-retry` warnings of the export run `run`, and that run's history row: the retries
/// the connector made must each be there, and the run's counts and notes must say so.
async fn retries_in_history(cloud: &Cloud, run: i64) -> (Vec<Value>, Value) {
    let entries = cloud.run_entries(run).await;
    let retries: Vec<Value> = entries.iter().filter(|e| e["kind"] == "export-retry").cloned().collect();
    for e in &retries {
        assert_eq!(e["level"], "warning", "a retry is a warning, not an error: {e}");
    }
    let record = cloud.run_record(run).await;
    eprintln!(
        "export run {run}: {} export-retry warnings (first: {}); counts {}; notes: {}",
        retries.len(),
        retries.first().map_or("-", |e| e["message"].as_str().unwrap_or("-")),
        record["counts"],
        record["notes"]
    );
    (retries, record)
}

/// Whether a run-history entry's message mentions one of `words` (case-insensitively).
fn names(entry: &Value, words: &[&str]) -> bool {
    let m = entry["message"].as_str().unwrap_or_default().to_lowercase();
    words.iter().any(|w| m.contains(w))
}

/// The number N of "N retries" in an export run's notes.
fn noted_retries(record: &Value) -> Option<u64> {
    let notes = record["notes"].as_str()?;
    let at = notes.find(" retries")?;
    notes[..at].rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The tests

/// Acceptance 1 and 2: the first cycle creates every in-scope user and group exactly once with
/// the ImmutableID of its objectGUID and the right members (cloud ids); a second cycle, and a
/// full one after it, write nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_first_cycle_creates_everything_in_scope_and_later_cycles_write_nothing() {
    let mut ad = Ad::new("cyc").await;
    let scope = ad.scope.clone();
    let sub = make_ou(&mut ad.ldap, &scope, "Sub").await;
    let out = ad.out.clone();
    let alice = ad
        .user(
            &scope,
            "Alice Anders",
            &[
                ("userPrincipalName", &ad.upn("alice", VERIFIED)),
                ("displayName", "Alice Anders"),
                ("givenName", "Alice"),
                ("sn", "Anders"),
                ("mail", &ad.upn("alice", VERIFIED)),
                ("proxyAddresses", &format!("SMTP:{}", ad.upn("alice", VERIFIED))),
                ("department", "Sales"),
                ("title", "Engineer"),
            ],
            true,
        )
        .await;
    // No displayName: the cloud gets the cn.
    let bob = ad
        .user(
            &scope,
            "Bob Brown",
            &[("userPrincipalName", &ad.upn("bob", VERIFIED)), ("givenName", "Bob"), ("sn", "Brown")],
            false,
        )
        .await;
    let carol = ad
        .user(
            &sub,
            "Carol Cole",
            &[
                ("userPrincipalName", &ad.upn("carol", VERIFIED)),
                ("displayName", "Carol C."),
                ("department", "IT"),
            ],
            true,
        )
        .await;
    let _dave =
        ad.user(&scope, "Dave Dunn", &[("userPrincipalName", &ad.upn("dave", VERIFIED))], false).await;
    // Out of scope: never in the cloud.
    let outsider =
        ad.user(&out, "Olga Out", &[("userPrincipalName", &ad.upn("olga", VERIFIED))], false).await;
    let team = ad.group(&scope, "Team", &[&alice, &bob]).await;
    // A nested group and a member from another OU in scope.
    let _all = ad.group(&scope, "All", &[&team, &carol]).await;
    let _outside_group = ad.group(&out, "Outside", &[&alice, &outsider]).await;

    let cloud = Cloud::start(&ad, FaultConfig::default(), ThrottleConfig::default()).await;
    let records = ad.read();
    assert_eq!(records.len(), 6, "4 users and 2 groups in scope: {records:#?}");
    let expected = expected(&records, &cloud.tenant);
    // The ImmutableID is computed from ldapsearch's raw objectGUID bytes, here and in `expected`.
    assert!(expected.contains_key(&ad.immutable_id(&alice)));

    let first = cycle_ok(&cloud, false, "first cycle").await;
    let view = cloud.view().await;
    assert_cloud_equals(&view, &expected, "after the first cycle");
    assert_eq!((view.users, view.groups), (4, 2));
    let stats = cloud.stats().await;
    assert_eq!(writes(&stats, "POST /users"), 4, "each user created once: {stats:?}");
    assert_eq!(writes(&stats, "POST /groups"), 2, "each group created once: {stats:?}");
    assert_eq!(stats.writes_by_method.get("DELETE"), None, "nothing deleted: {stats:?}");
    let export = first.run_id("export", "cloud");
    let record = cloud.run_record(export).await;
    assert_eq!(record["status"], "success", "{record:#}");
    assert_eq!(record["counts"]["adds"], 6, "{record:#}");

    // A second cycle: the import confirms what the first exported, and nothing is written.
    let seq = cloud.state().await["changeSeq"].clone();
    let second = cycle_ok(&cloud, false, "second cycle").await;
    let after = cloud.stats().await;
    assert_eq!(stats_diff(&after, &stats), WriteStats::default(), "the second cycle wrote: {after:?}");
    assert_eq!(cloud.state().await["changeSeq"], seq, "the second cycle changed the tenant");
    let record = cloud.run_record(second.run_id("export", "cloud")).await;
    assert_eq!(
        (&record["counts"]["adds"], &record["counts"]["updates"], &record["counts"]["deletes"]),
        (&json!(0), &json!(0), &json!(0)),
        "the second cycle's export: {record:#}"
    );

    // A full cycle (full imports and syncs) finds nothing to write either.
    let third = cycle_ok(&cloud, true, "full cycle").await;
    assert_eq!(stats_diff(&cloud.stats().await, &stats), WriteStats::default(), "the full cycle wrote");
    assert_eq!(cloud.state().await["changeSeq"], seq);
    let record = cloud.run_record(third.run_id("export", "cloud")).await;
    assert_eq!(
        (&record["counts"]["adds"], &record["counts"]["updates"], &record["counts"]["deletes"]),
        (&json!(0), &json!(0), &json!(0)),
        "the full cycle's export: {record:#}"
    );
    let view_after = cloud.view().await;
    assert_eq!(view_after.ids, view.ids, "same objects, same ids");
}

/// Acceptance 2 with the most common mailbox shape: a user whose proxyAddresses hold a
/// secondary `smtp:` alias besides the primary address. Graph lets no client write
/// proxyAddresses (the cloud derives the primary from `mail`), so once the user is created the
/// next cycles must neither write nor report an export for it again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_user_with_a_secondary_smtp_alias_is_not_exported_again_every_cycle() {
    let mut ad = Ad::new("alias").await;
    let scope = ad.scope.clone();
    let mail = ad.upn("ali", VERIFIED);
    let alias = ad.upn("ali.alias", VERIFIED);
    let dn = ad
        .user(
            &scope,
            "Ali Alias",
            &[("userPrincipalName", &mail), ("mail", &mail), ("displayName", "Ali Alias")],
            true,
        )
        .await;
    let both = [format!("SMTP:{mail}"), format!("smtp:{alias}")];
    replace(&mut ad.ldap, &dn, "proxyAddresses", &[both[0].as_str(), both[1].as_str()]).await;
    let cloud = Cloud::start(&ad, FaultConfig::default(), ThrottleConfig::default()).await;
    cycle_ok(&cloud, false, "first cycle").await;
    assert_cloud_equals(&cloud.view().await, &expected(&ad.read(), &cloud.tenant), "after the first cycle");
    // The second cycle confirms the create; from then on nothing is exported for Ali.
    cycle_ok(&cloud, false, "second cycle").await;
    let stats = cloud.stats().await;
    for n in 3..=4 {
        let out = cycle_ok(&cloud, false, &format!("cycle {n}")).await;
        let record = cloud.run_record(out.run_id("export", "cloud")).await;
        assert_eq!(
            (&record["counts"]["adds"], &record["counts"]["updates"], &record["counts"]["deletes"]),
            (&json!(0), &json!(0), &json!(0)),
            "cycle {n} exported again: {record:#}"
        );
    }
    assert_eq!(stats_diff(&cloud.stats().await, &stats), WriteStats::default(), "cycles 3 and 4 wrote");
}

/// Acceptance 3: a rename (cn, displayName) and a move between OUs in scope change the same
/// cloud objects with PATCH: same Graph ids, nothing created, nothing deleted, no membership churn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_rename_and_move_in_ad_patch_the_same_cloud_objects() {
    let mut ad = Ad::new("ren").await;
    let scope = ad.scope.clone();
    let moved = make_ou(&mut ad.ldap, &scope, "Moved").await;
    // u1 has no displayName: its cn is its cloud displayName.
    let u1 = ad.user(&scope, "Rita Rename", &[("userPrincipalName", &ad.upn("rita", VERIFIED))], true).await;
    let u2 = ad
        .user(
            &scope,
            "Mo Move",
            &[("userPrincipalName", &ad.upn("mo", VERIFIED)), ("displayName", "Mo Move")],
            false,
        )
        .await;
    let u3 = ad
        .user(
            &scope,
            "Bea Both",
            &[("userPrincipalName", &ad.upn("bea", VERIFIED)), ("displayName", "Bea Both")],
            false,
        )
        .await;
    let g = ad.group(&scope, "Crew", &[&u1, &u2, &u3]).await;
    let cloud = Cloud::start(&ad, FaultConfig::default(), ThrottleConfig::default()).await;
    cycle_ok(&cloud, false, "first cycle").await;
    assert_cloud_equals(&cloud.view().await, &expected(&ad.read(), &cloud.tenant), "after the first cycle");
    // The second cycle confirms the creates.
    cycle_ok(&cloud, false, "second cycle").await;
    let before = cloud.view().await;

    // A rename, a move, a move with a new displayName, and a group rename.
    rename(&mut ad.ldap, &u1, "CN=Rita Renamed", None).await;
    rename(&mut ad.ldap, &u2, "CN=Mo Move", Some(&moved)).await;
    rename(&mut ad.ldap, &u3, "CN=Bea Both", Some(&moved)).await;
    replace(&mut ad.ldap, &format!("CN=Bea Both,{moved}"), "displayName", &["Bea Moved"]).await;
    rename(&mut ad.ldap, &g, "CN=Crew Renamed", None).await;
    let stats = cloud.stats().await;
    cycle_ok(&cloud, false, "cycle after the renames").await;
    let d = stats_diff(&cloud.stats().await, &stats);

    let records = ad.read();
    assert!(records.iter().any(|r| r.dn == format!("CN=Mo Move,{moved}")), "the move happened");
    let view = cloud.view().await;
    assert_cloud_equals(&view, &expected(&records, &cloud.tenant), "after the renames");
    assert_eq!(view.ids, before.ids, "every object keeps its Graph id");
    let renamed_user = &view.objects[&ad.immutable_id(&format!("CN=Rita Renamed,{scope}"))];
    assert_eq!(renamed_user.props["displayName"], "Rita Renamed");
    assert_eq!(
        view.objects[&ad.immutable_id(&format!("CN=Crew Renamed,{scope}"))].props["displayName"],
        "Crew Renamed"
    );
    // One PATCH per object whose cloud values changed (u1, u3, the group); nothing else.
    let expected_writes: BTreeMap<String, u64> =
        BTreeMap::from([("PATCH /users/{id}".to_owned(), 2), ("PATCH /groups/{id}".to_owned(), 1)]);
    assert_eq!(d.writes, expected_writes, "writes of the rename cycle: {d:?}");
}

/// Acceptance 4: a user and a group deleted in AD are deleted in the cloud, and nothing else is
/// removed or recreated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_delete_in_ad_deletes_exactly_that_cloud_object() {
    let mut ad = Ad::new("del").await;
    let scope = ad.scope.clone();
    let d1 = ad.user(&scope, "Dina One", &[("userPrincipalName", &ad.upn("dina", VERIFIED))], true).await;
    let d2 = ad.user(&scope, "Dan Two", &[("userPrincipalName", &ad.upn("dan", VERIFIED))], false).await;
    let d3 = ad.user(&scope, "Del Three", &[("userPrincipalName", &ad.upn("del", VERIFIED))], false).await;
    let _g1 = ad.group(&scope, "Keep", &[&d1, &d2, &d3]).await;
    let g2 = ad.group(&scope, "Drop", &[&d1]).await;
    let cloud = Cloud::start(&ad, FaultConfig::default(), ThrottleConfig::default()).await;
    cycle_ok(&cloud, false, "first cycle").await;
    cycle_ok(&cloud, false, "second cycle").await;
    let before = cloud.view().await;
    assert_cloud_equals(&before, &expected(&ad.read(), &cloud.tenant), "before the deletes");
    let gone_user = ad.immutable_id(&d3);
    let gone_group = ad.immutable_id(&g2);
    let gone_user_id = before.ids[&gone_user].clone();
    let gone_group_id = before.ids[&gone_group].clone();

    delete(&mut ad.ldap, &d3).await;
    delete(&mut ad.ldap, &g2).await;
    let stats = cloud.stats().await;
    cycle_ok(&cloud, false, "cycle after the deletes").await;
    let d = stats_diff(&cloud.stats().await, &stats);

    let view = cloud.view().await;
    assert_cloud_equals(&view, &expected(&ad.read(), &cloud.tenant), "after the deletes");
    let state = cloud.state().await;
    let ids: BTreeSet<&str> = state["users"]
        .as_array()
        .unwrap()
        .iter()
        .chain(state["groups"].as_array().unwrap())
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(gone_user_id.as_str()) && !ids.contains(gone_group_id.as_str()),
        "deleted: {ids:?}"
    );
    let mut kept = before.ids.clone();
    kept.remove(&gone_user);
    kept.remove(&gone_group);
    assert_eq!(view.ids, kept, "everything else keeps its Graph id");
    assert_eq!(writes(&d, "DELETE /users/{id}"), 1, "{d:?}");
    assert_eq!(writes(&d, "DELETE /groups/{id}"), 1, "{d:?}");
    assert_eq!(d.writes_by_method.get("POST").copied().unwrap_or(0), 0, "nothing created: {d:?}");
}

/// Acceptance 5: a cloud user seeded beforehand with the right onPremisesImmutableId is joined
/// (hard match) and updated, never created a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_user_seeded_with_its_immutable_id_is_joined_not_created() {
    let mut ad = Ad::new("join").await;
    let scope = ad.scope.clone();
    let upn = ad.upn("sam", VERIFIED);
    let s1 = ad
        .user(
            &scope,
            "Sam Seeded",
            &[("userPrincipalName", &upn), ("displayName", "Sam Seeded"), ("department", "Ops")],
            true,
        )
        .await;
    let s2 = ad.user(&scope, "Nia New", &[("userPrincipalName", &ad.upn("nia", VERIFIED))], false).await;
    let _g = ad.group(&scope, "Pair", &[&s1, &s2]).await;
    let cloud = Cloud::start(&ad, FaultConfig::default(), ThrottleConfig::default()).await;
    let imm = ad.immutable_id(&s1);
    let seeded_id = format!("seeded-{}", ad.tag);
    cloud
        .seed_users(json!([{
            "id": seeded_id,
            "userPrincipalName": upn,
            "onPremisesImmutableId": imm,
            "displayName": "Sam (stale)",
            "department": "Old",
            "mailNickname": "stale",
            "accountEnabled": false,
        }]))
        .await;

    let stats = cloud.stats().await;
    cycle_ok(&cloud, false, "first cycle").await;
    let d = stats_diff(&cloud.stats().await, &stats);
    let view = cloud.view().await;
    assert_cloud_equals(&view, &expected(&ad.read(), &cloud.tenant), "after the first cycle");
    assert_eq!(view.ids[&imm], seeded_id, "the seeded user is the one that holds Sam");
    let state = cloud.state().await;
    let with_upn = state["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["userPrincipalName"].as_str().is_some_and(|u| u.eq_ignore_ascii_case(&upn)))
        .count();
    assert_eq!(with_upn, 1, "one user with Sam's UPN");
    assert_eq!(writes(&d, "POST /users"), 1, "only Nia is created: {d:?}");
    assert_eq!(writes(&d, "PATCH /users/{id}"), 1, "Sam's stale values are updated: {d:?}");
    assert_eq!(d.writes_by_method.get("DELETE").copied().unwrap_or(0), 0, "{d:?}");
}

/// Acceptance 6: a UPN in a suffix that is not a verified domain (`.local`) arrives as
/// `<prefix>@<initial domain>`, and the sync run says so: a `warning` of kind `upn-rewritten`
/// naming the object. Needs the engine's UPN rewrite and the Graph connector's domain import.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_upn_in_an_unverified_suffix_arrives_in_the_initial_domain_with_a_warning() {
    let mut ad = Ad::new("upn").await;
    let scope = ad.scope.clone();
    let local_upn = ad.upn("lou", "corp.local");
    let lou = ad.user(&scope, "Lou Local", &[("userPrincipalName", &local_upn)], true).await;
    let val = ad.user(&scope, "Val Verified", &[("userPrincipalName", &ad.upn("val", VERIFIED))], true).await;
    let cloud = Cloud::start(&ad, FaultConfig::default(), ThrottleConfig::default()).await;
    let first = cloud.cycle(false).await;

    let expected = expected(&ad.read(), &cloud.tenant);
    let lou_imm = ad.immutable_id(&lou);
    let cloud_upn = format!("lou.{}@{}", ad.tag, cloud.tenant);
    assert_eq!(expected[&lou_imm].props["userPrincipalName"], cloud_upn.as_str());
    let view = cloud.view().await;
    assert_cloud_equals(
        &view,
        &expected,
        &format!("after the first cycle (exit {}, stderr: {})", first.code, first.stderr),
    );
    assert_eq!(first.code, 0, "a rewrite is a warning, not an error: {first:?}");

    // The sync runs of the cycle report it, once, naming Lou.
    let mut entries = Vec::new();
    for c in ["corp", "cloud"] {
        entries.extend(cloud.run_entries(first.run_id("sync", c)).await);
    }
    let rewritten: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "upn-rewritten").collect();
    assert_eq!(rewritten.len(), 1, "one upn-rewritten entry: {entries:#?}");
    let e = rewritten[0];
    assert_eq!(e["level"], "warning", "{e}");
    let names_lou =
        e["anchor"] == lou_imm.as_str() || e["dn"].as_str().is_some_and(|d| d.eq_ignore_ascii_case(&lou));
    assert!(names_lou, "the entry names Lou by anchor or DN: {e}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(message.contains(&local_upn) || message.contains(&cloud_upn), "the message gives the UPN: {e}");
    assert!(
        !entries.iter().any(|e| e["dn"].as_str().is_some_and(|d| d.eq_ignore_ascii_case(&val))),
        "nothing about Val: {entries:#?}"
    );

    // The rewritten UPN is stable: the next cycle writes nothing.
    let stats = cloud.stats().await;
    cycle_ok(&cloud, false, "second cycle").await;
    assert_eq!(stats_diff(&cloud.stats().await, &stats), WriteStats::default(), "the second cycle wrote");
}

/// `count` users (`f00 ...`) in scope and two groups over them: the population of the fault tests.
async fn population(ad: &mut Ad, count: usize) {
    let scope = ad.scope.clone();
    let mut dns = Vec::new();
    for i in 0..count {
        let name = format!("f{i:02}");
        let dn = ad
            .user(
                &scope,
                &format!("F{i:02} Fault"),
                &[
                    ("userPrincipalName", &ad.upn(&name, VERIFIED)),
                    ("givenName", &format!("F{i:02}")),
                    ("department", "Faults"),
                ],
                i % 3 == 0,
            )
            .await;
        dns.push(dn);
    }
    let half: Vec<&str> = dns.iter().take(count / 2).map(String::as_str).collect();
    let odd: Vec<&str> = dns.iter().skip(1).step_by(2).take(8).map(String::as_str).collect();
    ad.group(&scope, "Half", &half).await;
    ad.group(&scope, "Odd", &odd).await;
}

/// Acceptance 7: hard throttling (10 writes per 2 s, 429 with Retry-After): the cycle completes,
/// the cloud is exactly the expected state, and every throttled write is a retry in run history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_cycle_under_hard_throttling_completes_and_records_every_retry() {
    let mut ad = Ad::new("thr").await;
    population(&mut ad, 24).await;
    let cloud = Cloud::start(&ad, FaultConfig::default(), ThrottleConfig::hard()).await;
    let first = cycle_ok(&cloud, false, "throttled cycle").await;
    let view = cloud.view().await;
    assert_cloud_equals(&view, &expected(&ad.read(), &cloud.tenant), "after the throttled cycle");
    assert_eq!((view.users, view.groups), (24, 2));
    let stats = cloud.stats().await;
    assert!(stats.throttled > 0, "the emulator throttled: {stats:?}");
    assert_eq!(writes(&stats, "POST /users"), 24, "no user created twice: {stats:?}");

    let (retries, record) = retries_in_history(&cloud, first.run_id("export", "cloud")).await;
    assert!(
        retries.len() as u64 >= stats.throttled,
        "{} 429s were answered but the export run has {} export-retry warnings: {retries:#?}",
        stats.throttled,
        retries.len()
    );
    assert!(
        retries.iter().any(|r| names(r, &["429", "throttl", "too many requests"])),
        "a retry names its cause (429): {retries:#?}"
    );
    assert!(record["counts"]["warnings"].as_u64().unwrap_or(0) >= stats.throttled, "{record:#}");
    assert!(
        noted_retries(&record).is_some_and(|n| n >= stats.throttled),
        "the run's notes count the retries: {record:#}"
    );
}

/// Acceptance 7: 10% of writes refused with 503: the cycle completes, the cloud is exactly the
/// expected state with no duplicate, and every refused write is a retry in run history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_cycle_with_ten_percent_of_writes_failing_completes_and_records_every_retry() {
    let mut ad = Ad::new("unav").await;
    population(&mut ad, 30).await;
    let faults = FaultConfig { write_error_rate: 0.1, seed: 20_261_202, ..FaultConfig::default() };
    let cloud = Cloud::start(&ad, faults, ThrottleConfig::default()).await;
    let first = cycle_ok(&cloud, false, "cycle with 503s").await;
    let view = cloud.view().await;
    assert_cloud_equals(&view, &expected(&ad.read(), &cloud.tenant), "after the cycle with 503s");
    assert_eq!((view.users, view.groups), (30, 2));
    let stats = cloud.stats().await;
    assert!(stats.unavailable > 0, "the emulator refused some writes: {stats:?}");
    assert_eq!(writes(&stats, "POST /users"), 30, "no user created twice: {stats:?}");

    let (retries, record) = retries_in_history(&cloud, first.run_id("export", "cloud")).await;
    assert!(
        retries.len() as u64 >= stats.unavailable,
        "{} 503s were answered but the export run has {} export-retry warnings: {retries:#?}",
        stats.unavailable,
        retries.len()
    );
    assert!(
        retries.iter().any(|r| names(r, &["503", "unavailable"])),
        "a retry names its cause (503): {retries:#?}"
    );
    assert!(record["counts"]["warnings"].as_u64().unwrap_or(0) >= stats.unavailable, "{record:#}");
    assert!(
        noted_retries(&record).is_some_and(|n| n >= stats.unavailable),
        "the run's notes count the retries: {record:#}"
    );
}

/// Acceptance 7: the emulator stopped in the middle of an export (once some of its creates have
/// landed) and started again a few seconds later on the same port with the same state: the cloud
/// ends exactly in the expected state, with no duplicate, and the retries are in run history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_cycle_survives_an_emulator_restart_in_the_middle_of_the_export() {
    let mut ad = Ad::new("rst").await;
    population(&mut ad, 50).await;
    // Slow answers (200 ms each, a `$batch` counting as one) so that the export is still running
    // when the emulator stops: 50 creates are at least three requests.
    let faults = FaultConfig { delay_ms: 200, ..FaultConfig::default() };
    let mut cloud = Cloud::start(&ad, faults, ThrottleConfig::default()).await;
    let mut running = cloud.spawn(&["cycle"]);

    // Wait for the export to be under way: some users created, not all.
    let start = Instant::now();
    loop {
        let created = writes(&cloud.emu().stats(), "POST /users");
        if created >= 8 {
            break;
        }
        assert!(
            !running.exited(),
            "the cycle ended before the export got under way ({created} users created)"
        );
        assert!(start.elapsed() < PROGRESS_TIMEOUT, "the export did not start within {PROGRESS_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_stop = cloud.emu().stats();
    cloud.stop().await;
    assert!(!running.exited(), "the export was still running when the emulator stopped");
    eprintln!("emulator stopped after these writes: {at_stop:?}");
    assert!(cloud.config.state_path.as_deref().is_some_and(Path::exists), "the state file stays");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cloud.restart().await;
    let first = running.wait().await;

    // The outage (3 s) is shorter than the connector's retry window, so the first cycle should
    // complete. Should it still leave failed exports (retryable, so they stay pending), the next
    // cycle must complete them: the final state is asserted after that one.
    eprintln!("the interrupted cycle exited {}: {}", first.code, first.stdout);
    let mut exports = vec![first.run_id("export", "cloud")];
    assert!(first.code == 0 || first.code == 1, "the interrupted cycle: {first:?}");
    if first.code != 0 {
        eprintln!(
            "the interrupted cycle left failed exports (exit {}); a second cycle completes them",
            first.code
        );
        let second = cycle_ok(&cloud, false, "cycle after the restart").await;
        exports.push(second.run_id("export", "cloud"));
    }
    let view = cloud.view().await;
    assert_cloud_equals(&view, &expected(&ad.read(), &cloud.tenant), "after the restart");
    assert_eq!((view.users, view.groups), (50, 2), "no duplicate");

    // The requests refused while the emulator was down were retried, and run history says so.
    let mut retries = Vec::new();
    for run in &exports {
        let (r, record) = retries_in_history(&cloud, *run).await;
        if !r.is_empty() {
            assert!(record["counts"]["warnings"].as_u64().unwrap_or(0) >= r.len() as u64, "{record:#}");
            assert!(noted_retries(&record).is_some_and(|n| n >= r.len() as u64), "{record:#}");
        }
        retries.extend(r);
    }
    assert!(!retries.is_empty(), "the export runs {exports:?} record no export-retry warning");

    // A confirming cycle writes nothing more.
    let stats = cloud.stats().await;
    cycle_ok(&cloud, false, "confirming cycle").await;
    assert_eq!(stats_diff(&cloud.stats().await, &stats), WriteStats::default(), "the confirming cycle wrote");
    cloud.stop().await;
}
