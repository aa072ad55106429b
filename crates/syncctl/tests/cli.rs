//! The syncctl binary as a user runs it: arguments, exit codes, stdout and stderr.
//!
//! This is the crate's only integration-test binary (each one is another slow link): add new
//! CLI tests here. None of them needs a directory server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use assert_cmd::Command;

/// A temp dir with a config file in it.
struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Env {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("syncctl.toml");
        std::fs::write(&path, config).unwrap();
        Self { dir, config: path }
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_syncctl"));
        cmd.current_dir(self.dir.path())
            .env_remove("SYNCCTL_CONFIG")
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(&self.config);
        cmd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A config with one AD connector whose server does not exist, and its password file.
fn ldap_env() -> Env {
    let env = Env::new(LDAP_CONFIG);
    std::fs::write(env.path("ad.password"), "not-a-real-password\n").unwrap();
    env
}

const LDAP_CONFIG: &str = r#"
[store]
path = "state/sync.db"

[[connectors]]
name = "corp-ad"
type = "ldap"
flavor = "ad"
url = "ldaps://127.0.0.1:1"
bind_dn = "Administrator@corp.example.com"
password_file = "ad.password"
base_dn = "DC=corp,DC=example,DC=com"
timeout_secs = 5
"#;

#[test]
fn help_lists_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_syncctl")).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    for word in ["import", "runs", "show", "connectors", "--config", "--json", "--verbose", "--log-format"] {
        assert!(stdout.contains(word), "`{word}` missing from --help:\n{stdout}");
    }
}

#[test]
fn usage_errors_exit_3() {
    let env = Env::new("");
    let out = env.cmd().args(["import", "--connector", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = env.cmd().args(["import", "--connector", "x", "--full", "--delta"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = env.cmd().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn runs_on_an_empty_database() {
    let env = Env::new("[store]\npath = \"empty.db\"\n");
    let out = env.cmd().args(["runs", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "[]");
    // The relative store path resolved against the config file's directory.
    assert!(env.path("empty.db").exists());

    let out = env.cmd().arg("runs").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("no runs recorded"), "{}", text(&out.stdout));

    let out = env.cmd().args(["--json", "runs", "--errors", "42"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no run 42"), "{}", text(&out.stderr));
}

#[test]
fn show_of_a_missing_object_exits_4() {
    let env = Env::new("[store]\npath = \"empty.db\"\n");
    for key in ["CN=Nobody,CN=Users,DC=corp,DC=example,DC=com", "cntT7rWeSkeChkMTCRM/2Q==", "some-anchor"] {
        let out = env.cmd().args(["show", key]).output().unwrap();
        assert_eq!(out.status.code(), Some(4), "{key}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("no object matches") && stderr.contains(key), "{stderr}");
    }
    let out = env.cmd().args(["show", "--json", "nobody"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(text(&out.stdout).trim(), "[]");
}

#[test]
fn config_errors_exit_3_and_name_the_file() {
    let env = Env::new("[store]\npath = \"x.db\"\ncolour = \"blue\"\n");
    let out = env.cmd().arg("runs").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&env.config.display().to_string()) && stderr.contains("colour"), "{stderr}");

    // SYNCCTL_CONFIG names the file when --config does not.
    let out = Command::new(env!("CARGO_BIN_EXE_syncctl"))
        .env("SYNCCTL_CONFIG", env.path("nope.toml"))
        .arg("runs")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("nope.toml") && stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn connectors_are_listed_without_secrets() {
    let env = ldap_env();
    let out = env.cmd().arg("connectors").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("corp-ad") && stdout.contains("ldap") && stdout.contains("ldaps://127.0.0.1:1"),
        "{stdout}"
    );
    assert!(!stdout.contains("not-a-real-password"));

    let out = env.cmd().args(["connectors", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "corp-ad");
    assert_eq!(list[0]["type"], "ldap");
    assert_eq!(list[0]["files"][0], env.path("ad.password").display().to_string());

    let out = env.cmd().args(["import", "--connector", "other", "--full"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("`corp-ad`"), "{}", text(&out.stderr));
}

#[test]
fn an_unreachable_server_stops_the_run_with_exit_2() {
    let env = ldap_env();
    let out = env.cmd().args(["import", "--connector", "corp-ad", "--full", "--json"]).output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["profile"], "full-import");
    assert!(report["status"].as_str().unwrap().starts_with("stopped-"), "{report}");
    assert!(stderr.contains("stopped"), "{stderr}");
    assert!(!stderr.contains("not-a-real-password") && !text(&out.stdout).contains("not-a-real-password"));

    // The stopped run is in run history.
    let out = env.cmd().args(["runs", "--json", "--connector", "corp-ad"]).output().unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["status"], report["status"]);
    assert!(env.path("state/sync.db").exists());
}

/// One AD user as an LDIF export holds it (objectGUID `n` repeated).
fn export_user(n: u8, cn: &str, upn: &str) -> String {
    use base64::Engine as _;
    let guid = base64::engine::general_purpose::STANDARD.encode([n; 16]);
    format!(
        "dn: CN={cn},CN=Users,DC=corp,DC=example,DC=com\nobjectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\nobjectClass: user\ncn: {cn}\nobjectGUID:: {guid}\nsAMAccountName: {}\nuserPrincipalName: {upn}\n\n",
        cn.to_lowercase()
    )
}

#[test]
fn assess_exit_codes_say_ready_warnings_or_errors() {
    // No config file is needed for --ldif sources.
    let env = Env::new("");
    std::fs::remove_file(&env.config).unwrap();
    let run = |name: &str, ldif: &str| {
        std::fs::write(env.path(name), ldif).unwrap();
        env.cmd().args(["assess", "--ldif", name]).output().unwrap()
    };
    let ready = run("ready.ldif", &export_user(1, "Alice", "alice@contoso.com"));
    assert_eq!(ready.status.code(), Some(0), "{}{}", text(&ready.stdout), text(&ready.stderr));
    assert!(text(&ready.stdout).starts_with("Readiness: READY"), "{}", text(&ready.stdout));
    let warnings = run("warnings.ldif", &export_user(2, "Bob", "bob@corp.local"));
    assert_eq!(warnings.status.code(), Some(1), "{}", text(&warnings.stdout));
    assert!(text(&warnings.stdout).contains("upn-suffix-non-routable"));
    let errors = run("errors.ldif", &export_user(3, "Carol", "carol smith@contoso.com"));
    assert_eq!(errors.status.code(), Some(2), "{}", text(&errors.stdout));
    assert!(text(&errors.stdout).contains("upn-invalid-character"));
}

#[test]
fn assess_failures_to_run_exit_3_and_up_naming_what_failed() {
    let env = Env::new("");
    std::fs::remove_file(&env.config).unwrap();
    let missing = env.cmd().args(["assess", "--ldif", "nope.ldif"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(4));
    assert!(text(&missing.stderr).contains("nope.ldif does not exist"), "{}", text(&missing.stderr));

    let mut bad = export_user(1, "Alice", "alice@contoso.com");
    bad.push_str(&export_user(2, "Bob", "bob@contoso.com").replace("objectGUID:: ", "objectGUID:: !!"));
    std::fs::write(env.path("bad.ldif"), &bad).unwrap();
    let out = env.cmd().args(["assess", "--ldif", "bad.ldif"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("bad.ldif") && err.contains("line 17"), "{err}");

    std::fs::write(env.path("ok.ldif"), export_user(1, "Alice", "alice@contoso.com")).unwrap();
    std::fs::write(env.path("tenant.json"), "{\"users\": [").unwrap();
    let out = env.cmd().args(["assess", "--ldif", "ok.ldif", "--tenant", "tenant.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("tenant.json"), "{}", text(&out.stderr));

    // Without --ldif the config is needed, and says so.
    let out = env.cmd().args(["assess"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("does not exist"), "{}", text(&out.stderr));

    let out = env
        .cmd()
        .args(["assess", "--ldif", "ok.ldif", "--html", "/nonexistent-dir/r.html"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(text(&out.stderr).contains("/nonexistent-dir/r.html"), "{}", text(&out.stderr));
}

#[test]
fn assess_csv_on_stdout_and_the_shipped_sample() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let env = Env::new("");
    std::fs::remove_file(&env.config).unwrap();
    let out = env
        .cmd()
        .arg("assess")
        .arg("--ldif")
        .arg(root.join("examples/corp-export.ldif"))
        .arg("--tenant")
        .arg(root.join("examples/tenant.json"))
        .args(["--csv", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let csv = text(&out.stdout);
    assert!(
        csv.starts_with("DISTINGUISHEDNAME,COMMONNAME,OBJECTCLASS,ATTRIBUTE,ERROR,VALUE,UPDATE,ACTION\n"),
        "{csv}"
    );
    // Erin's made-up UPN would be the Exchange admin's in the tenant: the fix avoids it.
    assert!(
        csv.contains("\"CN=Erin NoUPN,CN=Users,DC=corp,DC=example,DC=com\",Erin NoUPN,user,userPrincipalName,blank,,erin2@corp.example.com,EDIT"),
        "{csv}"
    );
    // Bob: the .local suffix gets the main verified suffix, numbered because the cloud user he
    // would soft-match (an InvalidSoftMatch) holds bob@corp.example.com as its address.
    assert!(
        csv.contains("\"CN=Bob Brown,CN=Users,DC=corp,DC=example,DC=com\",Bob Brown,user,userPrincipalName,topleveldomain,bob@corp.local,bob2@corp.example.com,EDIT"),
        "{csv}"
    );
    assert!(
        csv.contains("\"CN=Bob Brown,CN=Users,DC=corp,DC=example,DC=com\",Bob Brown,user,proxyAddresses,tenant,SMTP:bob@corp.example.com,,"),
        "{csv}"
    );
}

#[test]
fn assess_writes_one_fix_ldif_per_source() {
    let env = Env::new("");
    std::fs::remove_file(&env.config).unwrap();
    std::fs::write(env.path("one.ldif"), export_user(1, "Alice", "alice smith@contoso.com")).unwrap();
    std::fs::write(env.path("two.ldif"), export_user(2, "Bob", "bob jones@contoso.com")).unwrap();
    let out = env
        .cmd()
        .args(["assess", "--ldif", "one.ldif", "--ldif", "two.ldif", "--fix-ldif", "fix.ldif"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    for (source, upn) in [("one", "alicesmith@contoso.com"), ("two", "bobjones@contoso.com")] {
        let fix = std::fs::read_to_string(env.path(&format!("fix.{source}.ldif"))).unwrap();
        assert!(fix.contains(&format!("# For source {source} (")), "{fix}");
        assert!(fix.contains(&format!("userPrincipalName: {upn}\n")), "{fix}");
        assert_eq!(fix.matches("changetype: modify").count(), 1, "{fix}");
        assert!(env.path(&format!("fix.{source}.undo.ldif")).exists());
    }
    assert!(!env.path("fix.ldif").exists());
}

#[test]
fn assess_of_an_unreachable_directory_exits_5_naming_the_source_and_endpoint() {
    let env = ldap_env();
    let out = env.cmd().args(["assess", "--connector", "corp-ad"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("source `corp-ad` could not be read") && err.contains("ldaps://127.0.0.1:1"),
        "{err}"
    );
    assert!(!err.contains("not-a-real-password"), "the password leaked: {err}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}

/// A config with the shipped LDIF sample as its only connector.
fn sample_env(extra: &str) -> Env {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    Env::new(&format!(
        "[store]\npath = \"sync.db\"\n\n[[connectors]]\nname = \"corp\"\ntype = \"ldif\"\npath = \"{}\"\n{extra}",
        root.join("examples/corp-export.ldif").display()
    ))
}

#[test]
fn sync_projects_the_sample_and_show_explains_an_object() {
    let env = sample_env("");
    let out = env.cmd().args(["import", "--connector", "corp", "--full"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = env.cmd().args(["--json", "sync"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &json["runs"][0];
    assert_eq!(run["profile"], "full-sync", "the first delta sync runs as a full sync: {run}");
    // Six users and two groups.
    assert_eq!(run["counts"]["projected"], 8, "{run}");
    // A second sync has nothing to do.
    let out = env.cmd().args(["sync", "--delta"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let summary = text(&out.stdout);
    assert!(summary.starts_with("delta-sync of `corp`: success"), "{summary}");
    assert!(summary.contains("0 read, 0 projected"), "{summary}");

    let out =
        env.cmd().args(["show", "CN=Alice Anders,CN=Users,DC=corp,DC=example,DC=com"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("metaverse object"), "{shown}");
    assert!(shown.contains("projected by `In from AD - User Join`"), "{shown}");
    assert!(shown.contains("<- `In from AD - User Join`, corp, 100"), "{shown}");
    assert!(shown.contains("pending exports: none"), "{shown}");
    let out = env
        .cmd()
        .args(["--json", "show", "CN=Sync Group,CN=Users,DC=corp,DC=example,DC=com"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mv = &json[0]["metaverse"];
    assert_eq!(mv["object_type"], "group");
    let members = mv["attributes"]["member"]["values"].as_array().unwrap();
    assert!(!members.is_empty() && members.iter().all(|m| m.as_str().unwrap().starts_with("mv:")), "{mv}");
}

#[test]
fn export_needs_a_target_and_the_preview_lists_nothing_pending() {
    let env = sample_env("");
    let out = env.cmd().args(["export", "--preview"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "no pending exports\n");
    let out = env.cmd().args(["export", "--preview", "--csv", "-"]).output().unwrap();
    assert_eq!(text(&out.stdout), "connector,object,operation,attribute,old,new\n");
    let out = env.cmd().args(["export"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("no configured connector takes exports"), "{}", text(&out.stderr));
    let out = env.cmd().args(["export", "--preview", "--approve-deletes", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "--approve-deletes conflicts with --preview");
}

#[test]
fn sync_usage_and_rule_errors_exit_3_naming_the_problem() {
    let env = sample_env("");
    let out = env.cmd().args(["sync", "--connector", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("no connector named `nope`"), "{}", text(&out.stderr));
    let out = env.cmd().args(["sync", "--full", "--delta"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));

    let env = sample_env("\n[sync]\nrules = \"my-rules.toml\"\n");
    std::fs::write(
        env.path("my-rules.toml"),
        "[[inbound]]\nname = \"Mine\"\nconnector_kinds = [\"ldif\"]\ncs_object_type = \"user\"\nmv_object_type = \"person\"\nprecedence = 10\n[[inbound.flows]]\ntarget = \"x\"\nexpression = \"coalesce(cn,\"\n",
    )
    .unwrap();
    let out = env.cmd().args(["sync"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains("my-rules.toml") && err.contains("`Mine`") && err.contains("coalesce(cn,"), "{err}");
    let env = sample_env("\n[sync]\nerror_limit = 0\n");
    let out = env.cmd().args(["sync"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("error_limit must be at least 1"), "{}", text(&out.stderr));
}

#[test]
fn cycle_imports_syncs_and_says_there_is_no_target_yet() {
    let env = sample_env("");
    let out = env.cmd().args(["cycle"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    let lines: Vec<&str> = summary.lines().collect();
    assert!(lines[0].starts_with("STEP"), "{summary}");
    assert!(
        lines[1].starts_with("import  corp") && lines[1].contains("full-import") && lines[1].contains("+8 "),
        "{summary}"
    );
    assert!(
        lines[2].starts_with("sync    corp")
            && lines[2].contains("full-sync")
            && lines[2].contains("8 projected"),
        "{summary}"
    );
    assert!(summary.contains("no configured connector takes exports: 0 pending exports"), "{summary}");
    // Each step is a run in run history.
    let out = env.cmd().args(["--json", "runs"]).output().unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let profiles: Vec<&str> =
        runs.as_array().unwrap().iter().map(|r| r["profile"].as_str().unwrap()).collect();
    assert_eq!(profiles, ["full-sync", "full-import"]);
    // A second cycle finds nothing to do.
    let out = env.cmd().args(["--json", "cycle"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["steps"][1]["profile"], "delta-sync");
    assert!(json["steps"][1]["summary"].as_str().unwrap().starts_with("0 read"), "{json}");
}

// ---------------------------------------------------------------------------------------------
// `syncctl demo`: the sample directory -> the metaverse -> the Graph emulator, through the real
// binary. The expected values come from reading the shipped samples (examples/demo/).

const DEMO_DAY1: &str = include_str!("../../../examples/demo/directory.ldif");
const DEMO_DAY2: &str = include_str!("../../../examples/demo/directory-day2.ldif");

/// One object of a sample LDIF: DN, base64 objectGUID, object type, UPN.
#[derive(Debug, Clone)]
struct SampleObject {
    dn: String,
    guid: String,
    class: &'static str,
    upn: Option<String>,
}

fn sample_objects(ldif: &str) -> Vec<SampleObject> {
    ldif.split("\n\n")
        .filter_map(|record| {
            let value = |name: &str| {
                record.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
            };
            let dn = value("dn")?;
            let guid = value("objectGUID:")?;
            let class = if record.contains("objectClass: user") {
                "user"
            } else if record.contains("objectClass: group") {
                "group"
            } else {
                "other"
            };
            Some(SampleObject { dn, guid, class, upn: value("userPrincipalName") })
        })
        .collect()
}

/// A loopback port nobody listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn demo_cmd(dir: &std::path::Path, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_syncctl"));
    cmd.env_remove("SYNCCTL_CONFIG").env_remove("RUST_LOG").args([
        "demo",
        "--dir",
        dir.to_str().unwrap(),
        "--port",
        &port.to_string(),
    ]);
    cmd
}

/// `syncctl demo --serve` in the background, killed when dropped.
struct Serving(std::process::Child);

impl Serving {
    // A plain thread waiting for a child process: no async runtime to block.
    #[allow(clippy::disallowed_methods)]
    fn start(dir: &std::path::Path, port: u16) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_syncctl"))
            .env_remove("SYNCCTL_CONFIG")
            .env_remove("RUST_LOG")
            .args(["demo", "--dir", dir.to_str().unwrap(), "--serve"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let serving = Serving(child);
        // Wait until it listens (it exits at once when it cannot).
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return serving;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("`syncctl demo --serve` did not listen on {port}");
    }

    /// `GET /_emulator/state`: the tenant as the emulator's state file holds it.
    fn state(&self, port: u16) -> serde_json::Value {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            reqwest::get(format!("http://127.0.0.1:{port}/_emulator/state"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// True when `cloud` is the UPN the cloud gives a directory user with `upn`: the same, or (the
/// directory-sync rewrites) the same prefix at the initial domain, or a placeholder of it
/// (`<prefix><4 digits>@<initial domain>`) for a UPN another object holds.
fn same_user(upn: &str, cloud: &str) -> bool {
    let prefix = upn.split('@').next().unwrap();
    let Some(local) = cloud.strip_suffix("@contoso.onmicrosoft.com") else {
        return upn.eq_ignore_ascii_case(cloud);
    };
    local.eq_ignore_ascii_case(prefix)
        || (local.len() == prefix.len() + 4
            && local[..prefix.len()].eq_ignore_ascii_case(prefix)
            && local[prefix.len()..].bytes().all(|b| b.is_ascii_digit()))
}

/// The users of the emulator's state: UPN -> onPremisesImmutableId.
fn cloud_users(state: &serde_json::Value) -> std::collections::BTreeMap<String, Option<String>> {
    state["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["userPrincipalName"].as_str().unwrap().to_owned(),
                u["onPremisesImmutableId"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn demo_runs_a_whole_cycle_into_the_emulator_and_holds_the_deletes() {
    let day1 = sample_objects(DEMO_DAY1);
    let day2 = sample_objects(DEMO_DAY2);
    let users: Vec<&SampleObject> = day1.iter().filter(|o| o.class == "user").collect();
    let groups: Vec<&SampleObject> = day1.iter().filter(|o| o.class == "group").collect();
    // What reading the samples says: 15 users and 3 groups; day 2 drops the 6 users of
    // OU=Sales (more than the demo's deletion threshold of 5) and renames Grace Green.
    assert_eq!((users.len(), groups.len()), (15, 3));
    let removed: Vec<&SampleObject> =
        users.iter().copied().filter(|u| !day2.iter().any(|d| d.guid == u.guid)).collect();
    assert_eq!(removed.len(), 6);
    assert!(removed.iter().all(|u| u.dn.contains(",OU=Sales,")));
    let alice = users.iter().find(|u| u.dn.starts_with("CN=Alice Anders,")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A first run, then a second one in the same place: it starts over.
    let first = demo_cmd(dir.path(), port).output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}{}", text(&first.stdout), text(&first.stderr));
    let out = demo_cmd(dir.path(), port).arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &json["report"];

    // Day 1 ran as a full cycle, day 2 as a delta cycle whose export the threshold stopped;
    // the second demo started over (run ids from 1 again).
    assert_eq!(json["day1"]["steps"][0]["run_id"], 1, "{json}");
    assert_eq!(json["day1"]["steps"][0]["profile"], "full-import");
    let day2_export = json["day2"]["steps"].as_array().unwrap().last().unwrap();
    assert_eq!(day2_export["status"], "stopped-deletion-threshold-exceeded", "{json}");

    // Provisioned: the 3 groups, and every user but Alice (joined, not created) and any the
    // report lists as errors (none with the engine's directory-sync rewrites: see the next
    // test); the Sales users among them, their deletes now held.
    assert_eq!(report["provisioned"]["groups"], groups.len(), "{report}");
    assert_eq!(report["provisioned"]["users_held_for_deletion"], removed.len(), "{report}");
    let not_created = report["errors"].as_array().unwrap().len();
    assert_eq!(report["provisioned"]["users"], users.len() - 1 - not_created, "{report}");
    assert_eq!(report["joined"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["joined"][0]["name"], alice.upn.as_deref().unwrap());
    assert!(report["joined"][0]["detail"].as_str().unwrap().contains(&alice.guid), "{report}");
    assert_eq!(report["cloud_only"][0]["name"], "admin@contoso.onmicrosoft.com");

    // The held deletes: exactly the removed department's users, with the approval command.
    let held = &report["held_deletes"][0];
    let mut names: Vec<&str> =
        held["deletes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = removed.iter().map(|u| u.upn.as_deref().unwrap()).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    let token = held["token"].as_str().unwrap();
    let next: Vec<&str> =
        json["next"].as_array().unwrap().iter().map(|n| n["command"].as_str().unwrap()).collect();
    let approve = next.iter().find(|c| c.contains("export --approve-deletes")).unwrap();
    assert!(approve.ends_with(&format!("export --approve-deletes {token}")), "{approve}");
    // The rename waits with them (the export writes nothing while the threshold is exceeded).
    let pending = report["pending_exports"].as_array().unwrap();
    assert!(
        pending.iter().any(|p| p["operation"] == "update"
            && p["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "displayName: Grace Green -> Grace Hopper")),
        "{report}"
    );
    // The readiness findings of the same directory: the two .local UPNs, the shared address,
    // the shared UPN.
    let by_rule = report["readiness"]["by_rule"].as_array().unwrap();
    let count = |rule: &str| by_rule.iter().find(|r| r["rule"] == rule).map(|r| r["count"].clone());
    assert_eq!(count("upn-suffix-non-routable"), Some(2.into()), "{report}");
    assert_eq!(count("proxy-duplicate"), Some(2.into()), "{report}");
    assert_eq!(count("upn-duplicate"), Some(2.into()), "{report}");
    assert_eq!(report["readiness"]["anchors"]["hard_match"], 1);

    // The text report of the first run says the same, with the approval command.
    let summary = text(&first.stdout);
    assert!(summary.contains("6 deletes held for `cloud` by the deletion threshold (5)"), "{summary}");
    assert!(summary.contains("export --approve-deletes "), "{summary}");
    assert!(summary.contains("joined instead of created: user alice@corp.example.com"), "{summary}");

    // The client secret: random, in a 0600 file, never printed.
    let secret = std::fs::read_to_string(dir.path().join("graph-client-secret")).unwrap();
    assert_eq!(secret.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("graph-client-secret")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    for o in [&first, &out] {
        assert!(!text(&o.stdout).contains(secret.trim()) && !text(&o.stderr).contains(secret.trim()));
    }
    let config = std::fs::read_to_string(dir.path().join("syncctl.toml")).unwrap();
    assert!(!config.contains(secret.trim()));

    // The tenant, served again from the demo's state file: every synchronized object carries
    // the base64 objectGUID of its LDIF entry as onPremisesImmutableId.
    let serving = Serving::start(dir.path(), port);
    let state = serving.state(port);
    let cloud = cloud_users(&state);
    let mut synced = 0;
    for (upn, id) in &cloud {
        let Some(id) = id else { continue };
        synced += 1;
        let u =
            users.iter().find(|u| &u.guid == id).unwrap_or_else(|| panic!("{upn}: {id} is no sample GUID"));
        assert!(same_user(u.upn.as_deref().unwrap(), upn), "{upn} carries the GUID of {}", u.dn);
    }
    assert_eq!(synced, users.len() - not_created, "{state}");
    for u in &removed {
        assert_eq!(cloud.get(u.upn.as_deref().unwrap()), Some(&Some(u.guid.clone())), "held, still there");
    }
    let group_ids: Vec<&str> = state["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["onPremisesImmutableId"].as_str())
        .collect();
    for g in &groups {
        assert!(group_ids.contains(&g.guid.as_str()), "{} missing: {state}", g.dn);
    }

    // What the report says to run next works: the approval releases exactly those deletes,
    // and the rename goes with them.
    let config_path = dir.path().join("syncctl.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_syncctl"))
        .env_remove("SYNCCTL_CONFIG")
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(&config_path)
        .args(["export", "--approve-deletes", token])
        .output()
        .unwrap();
    let summary = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{summary}{}", text(&out.stderr));
    assert!(summary.contains(&format!("approval {token} released the 6 reviewed deletes")), "{summary}");
    assert!(summary.contains(" 6 deleted"), "{summary}");
    let state = serving.state(port);
    let cloud = cloud_users(&state);
    assert!(removed.iter().all(|u| !cloud.contains_key(u.upn.as_deref().unwrap())), "{state}");
    let grace = state["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userPrincipalName"] == "grace@corp.example.com");
    assert_eq!(grace.unwrap()["displayName"], "Grace Hopper");
}

/// The directory-sync rewrites of the engine, read from the tenant's domains in the Graph
/// connector space: the two `.local` UPNs at the initial domain, the UPN Heidi Hall's old account
/// shares set aside as a placeholder; every user provisioned, no error.
#[test]
fn demo_rewrites_local_upns_and_sets_duplicate_values_aside() {
    let day1 = sample_objects(DEMO_DAY1);
    let users: Vec<&SampleObject> = day1.iter().filter(|o| o.class == "user").collect();
    let local: Vec<&SampleObject> =
        users.iter().copied().filter(|u| u.upn.as_deref().unwrap().ends_with("@corp.local")).collect();
    assert_eq!(local.len(), 2);

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = demo_cmd(dir.path(), port).arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &json["report"];
    // Every user but the joined one is created, with no error; two UPNs rewritten, one value
    // set aside (warnings of the sync runs).
    assert_eq!(report["errors"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["provisioned"]["users"], users.len() - 1, "{report}");
    assert_eq!(report["upns_rewritten"].as_array().unwrap().len(), local.len(), "{report}");
    assert!(!report["values_set_aside"].as_array().unwrap().is_empty(), "{report}");

    // The set-aside value is the UPN Heidi Hall's old account shares with her current one.
    let set_aside = &report["values_set_aside"];
    assert_eq!(set_aside.as_array().unwrap().len(), 1, "{report}");
    let old = users.iter().find(|u| u.dn.starts_with("CN=Heidi Hall (2019),")).unwrap();
    assert_eq!(set_aside[0]["object"], old.dn.as_str(), "{report}");

    let serving = Serving::start(dir.path(), port);
    let cloud = cloud_users(&serving.state(port));
    for u in &local {
        let upn = u.upn.as_deref().unwrap().replace("@corp.local", "@contoso.onmicrosoft.com");
        assert_eq!(cloud.get(&upn), Some(&Some(u.guid.clone())), "{upn}: {cloud:?}");
    }
    let heidi = users.iter().find(|u| u.dn.starts_with("CN=Heidi Hall,")).unwrap();
    assert_eq!(cloud.get("heidi@corp.example.com"), Some(&Some(heidi.guid.clone())), "{cloud:?}");
    let placeholder = cloud.iter().find(|(_, id)| id.as_deref() == Some(old.guid.as_str())).unwrap().0;
    assert!(
        placeholder.starts_with("heidi") && placeholder.ends_with("@contoso.onmicrosoft.com"),
        "{placeholder}"
    );
    assert!(same_user("heidi@corp.example.com", placeholder), "{placeholder}");
}

#[test]
fn demo_says_when_its_port_is_taken_and_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("syncctl.toml");
    std::fs::write(&config, "# an earlier demo's config\n").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = demo_cmd(dir.path(), port).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port} is taken")) && err.contains("--port"), "{err}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# an earlier demo's config\n");
    // --serve needs a demo to serve.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_syncctl"))
        .args(["demo", "--serve", "--dir", empty.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("there is no demo in"), "{}", text(&out.stderr));
}

/// The Graph emulator in this process, seeded with one cloud user that carries Bob Brown's
/// ImmutableID (his objectGUID in examples/corp-export.ldif) and one cloud-only admin.
async fn seeded_tenant() -> syncctl_graph_emulator::RunningEmulator {
    seeded_tenant_with(Default::default(), Default::default()).await
}

async fn seeded_tenant_with(
    throttle: syncctl_graph_emulator::ThrottleConfig,
    faults: syncctl_graph_emulator::FaultConfig,
) -> syncctl_graph_emulator::RunningEmulator {
    let emu = syncctl_graph_emulator::start(syncctl_graph_emulator::EmulatorConfig {
        tenant: "contoso.onmicrosoft.com".into(),
        verified_domains: vec!["corp.example.com".into()],
        throttle,
        faults,
        ..Default::default()
    })
    .await
    .unwrap();
    let users = serde_json::json!([
        {"id": "c-bob", "userPrincipalName": "bob@contoso.onmicrosoft.com", "displayName": "Bob Brown",
         "mailNickname": "bob", "onPremisesImmutableId": "ereqQZPd6EWGInenCSXd4A=="},
        {"id": "c-admin", "userPrincipalName": "admin@contoso.onmicrosoft.com", "displayName": "Admin",
         "mailNickname": "admin"}
    ]);
    let r = reqwest::Client::new()
        .post(format!("{}/_emulator/users", emu.base_url()))
        .json(&users)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    emu
}

/// A config with the shipped AD export and a Graph connector to the emulator.
fn cloud_env(emu: &syncctl_graph_emulator::RunningEmulator) -> Env {
    let config = format!(
        r#"
[store]
path = "sync.db"

[[connectors]]
name = "corp-ad"
type = "ldif"
path = "corp-export.ldif"
flavor = "ad"

[[connectors]]
name = "cloud"
type = "graph"
tenant = "contoso.onmicrosoft.com"
client_id = "{}"
client_secret_file = "graph.secret"
authority = "{}"
graph_url = "{}"
"#,
        syncctl_graph_emulator::DEFAULT_CLIENT_ID,
        emu.base_url(),
        emu.graph_url()
    );
    let env = Env::new(&config);
    std::fs::write(env.path("graph.secret"), syncctl_graph_emulator::DEFAULT_CLIENT_SECRET).unwrap();
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/corp-export.ldif");
    std::fs::copy(sample, env.path("corp-export.ldif")).unwrap();
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn assess_reads_the_tenant_through_the_configured_graph_connector() {
    let emu = seeded_tenant().await;
    let env = cloud_env(&emu);
    let out = tokio::task::spawn_blocking(move || {
        let out = env.cmd().args(["--json", "assess"]).output().unwrap();
        drop(env);
        out
    })
    .await
    .unwrap();
    // Exit 2: the sample has blockers. The report must come from the live tenant.
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let audit = &report["anchors"];
    assert_eq!(audit["compared_with_tenant"], true, "{audit:#}");
    assert_eq!(audit["hard_match"], 1, "Bob's ImmutableID is in the tenant: {audit:#}");
    assert!(report["tenant"].is_object(), "{:#}", report["tenant"]);
    // The cloud connector is the tenant, not a source.
    let sources: Vec<&str> =
        report["sources"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(sources, ["corp-ad"]);
    emu.stop().await.unwrap();
}

/// Two AD users in an LDIF export: Alice (in `dept`, managed by Bob) and Bob (Engineering).
fn people_ldif(dept: &str) -> String {
    format!(
        "dn: CN=Alice Anders,OU=Staff,DC=corp,DC=example,DC=com\nobjectClass: user\nobjectGUID:: AAECAwQFBgcICQoLDA0ODw==\n\
         sAMAccountName: alice\ndisplayName: Alice Anders\ngivenName: Alice\nmail: alice@corp.example.com\n\
         department: {dept}\nmanager: CN=Bob Brown,OU=Staff,DC=corp,DC=example,DC=com\n\n\
         dn: CN=Bob Brown,OU=Staff,DC=corp,DC=example,DC=com\nobjectClass: user\nobjectGUID:: EBESExQVFhcYGRobHB0eHw==\n\
         sAMAccountName: bob\ndisplayName: Bob Brown\nmail: bob@corp.example.com\ndepartment: Engineering\n"
    )
}

const WORKFLOW_CONFIG: &str = r#"
[store]
path = "s.db"

[[connectors]]
name = "corp"
type = "ldif"
path = "people.ldif"

[mail]
sender = "syncctl@corp.example.com"
directory = "maildir"

[[sets]]
name = "sales"
object_type = "person"
criteria = 'department == "Sales"'

[[policies]]
name = "joined-sales"
set = "sales"
transition = "in"
workflow = "welcome"

[[policies]]
name = "left-sales"
set = "sales"
transition = "out"
workflow = "goodbye"

[[workflows]]
name = "welcome"
[[workflows.activities]]
recipients = ["target", "manager"]
subject = "Welcome to Sales, {{ target.displayName }}"
text = "Dear {{ recipient.role }}, {{ target.givenName }} joins Sales (manager: {{ manager.displayName }})."

[[workflows]]
name = "goodbye"
[[workflows.activities]]
recipients = ["target"]
subject = "You left Sales"
text = "Bye {{ target.givenName }}"
"#;

/// The maildir's messages: (To, Subject) per file, sorted.
fn maildir(env: &Env) -> Vec<(String, String)> {
    let dir = env.path("maildir/new");
    let Ok(entries) = std::fs::read_dir(&dir) else { return vec![] };
    let mut out: Vec<(String, String)> = entries
        .map(|e| {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            let header = |name: &str| {
                text.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or_default().to_owned()
            };
            (header("To"), header("Subject"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_user_moved_into_and_out_of_a_set_gets_mail_in_the_maildir_and_requests_lists_it() {
    let env = Env::new(WORKFLOW_CONFIG);
    std::fs::write(env.path("people.ldif"), people_ldif("Engineering")).unwrap();
    let out = env.cmd().arg("cycle").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("set `sales` (new): 0 members, evaluated without requests"), "{stdout}");
    assert!(maildir(&env).is_empty());

    std::fs::write(env.path("people.ldif"), people_ldif("Sales")).unwrap();
    let out = env.cmd().arg("cycle").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 requests made by set transitions"), "{}", text(&out.stdout));
    let welcome = "Welcome to Sales, Alice Anders".to_owned();
    assert_eq!(
        maildir(&env),
        [
            ("alice@corp.example.com".to_owned(), welcome.clone()),
            ("bob@corp.example.com".to_owned(), welcome.clone())
        ]
    );
    let body = std::fs::read_dir(env.path("maildir/new"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .find(|t| t.contains("To: bob@"))
        .unwrap();
    assert!(body.contains("Dear manager, Alice joins Sales (manager: Bob Brown)."), "{body}");

    // The request, as `syncctl requests` lists it.
    let out = env.cmd().args(["requests", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let r = &list[0];
    assert_eq!(
        (
            r["object"].as_str(),
            r["set"].as_str(),
            r["transition"].as_str(),
            r["policy"].as_str(),
            r["status"].as_str()
        ),
        (Some("Alice Anders"), Some("sales"), Some("in"), Some("joined-sales"), Some("delivered"))
    );
    assert_eq!((r["messages"].as_i64(), r["delivered"].as_i64()), (Some(2), Some(2)));
    for (args, n) in
        [(&["--status", "pending"][..], 0), (&["--object", "alice"][..], 1), (&["--object", "nobody"][..], 0)]
    {
        let out = env.cmd().arg("requests").args(args).arg("--json").output().unwrap();
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(list.as_array().unwrap().len(), n, "{args:?}: {list}");
    }
    let out = env.cmd().args(["requests", "--status", "lost"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "an unknown status is a usage error");

    // Nothing else is due; moving out fires the transition-out policy.
    let out = env.cmd().args(["mail", "send"]).output().unwrap();
    assert!(out.status.success() && text(&out.stdout).contains("no message is due"), "{}", text(&out.stdout));
    std::fs::write(env.path("people.ldif"), people_ldif("Marketing")).unwrap();
    let out = env.cmd().arg("cycle").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mails = maildir(&env);
    assert_eq!(mails.len(), 3);
    assert!(mails.contains(&("alice@corp.example.com".to_owned(), "You left Sales".to_owned())), "{mails:?}");
    let out = env.cmd().args(["mail", "list", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list.as_array().unwrap().iter().all(|m| m["status"] == "delivered"), "{list}");
    let out = env.cmd().args(["mail", "show", &list[0]["id"].to_string()]).output().unwrap();
    assert!(text(&out.stdout).contains("stored as"), "{}", text(&out.stdout));
    let out = env.cmd().args(["mail", "show", "999"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let out = env.cmd().args(["mail", "purge", "--older-than", "0s"]).output().unwrap();
    assert!(text(&out.stdout).contains("3 messages purged"), "{}", text(&out.stdout));
}

#[test]
fn mail_commands_say_what_is_missing() {
    let env = Env::new("[store]\npath = \"s.db\"\n");
    let out = env.cmd().args(["mail", "send"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("no [mail] section"), "{}", text(&out.stderr));
    let out = env.cmd().args(["mail", "retry"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "retry needs ids or --all");
    let out = env.cmd().args(["mail", "list"]).output().unwrap();
    assert!(out.status.success() && text(&out.stdout).contains("the outbox is empty"));
    let env = Env::new(
        "[store]\npath = \"s.db\"\n[mail]\nsender = \"a@corp.example.com\"\n[mail.smtp]\nhost = \"127.0.0.1\"\nusername = \"u@corp.example.com\"\npassword_env = \"SYNCCTL_TEST_NO_SUCH_VAR\"\n",
    );
    let out = env
        .cmd()
        .env_remove("SYNCCTL_TEST_NO_SUCH_VAR")
        .args(["mail", "test", "--to", "x@corp.example.com"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("`SYNCCTL_TEST_NO_SUCH_VAR` is not set"), "{}", text(&out.stderr));
}

#[test]
fn a_run_that_stops_sends_the_operators_a_notice() {
    let env = Env::new(
        "[store]\npath = \"s.db\"\n\n[[connectors]]\nname = \"corp\"\ntype = \"ldif\"\npath = \"people.ldif\"\n\n\
         [mail]\nsender = \"syncctl@corp.example.com\"\ndirectory = \"maildir\"\noperators = [\"ops@corp.example.com\", \"oncall@corp.example.com\"]\n",
    );
    // A malformed objectGUID stops the import.
    std::fs::write(
        env.path("people.ldif"),
        people_ldif("Sales").replace("AAECAwQFBgcICQoLDA0ODw==", "not*base64"),
    )
    .unwrap();
    let out = env.cmd().arg("cycle").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let subject = "syncctl: full-import of `corp` stopped: stopped-server-error".to_owned();
    assert_eq!(
        maildir(&env),
        [
            ("oncall@corp.example.com".to_owned(), subject.clone()),
            ("ops@corp.example.com".to_owned(), subject)
        ]
    );
    let body = std::fs::read_dir(env.path("maildir/new"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .next()
        .unwrap();
    assert!(body.contains("not valid base64") && body.contains("syncctl runs --errors"), "{body}");
    // The same file fixed: the next cycle succeeds and tells nobody.
    std::fs::write(env.path("people.ldif"), people_ldif("Sales")).unwrap();
    let out = env.cmd().arg("cycle").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(maildir(&env).len(), 2);
}

#[test]
fn a_mail_section_kept_for_the_readiness_checks_costs_a_cycle_nothing() {
    // [mail.smtp] names a password variable that is not set: nothing is due, so nothing reads it.
    let env = Env::new(
        "[store]\npath = \"s.db\"\n\n[[connectors]]\nname = \"corp\"\ntype = \"ldif\"\npath = \"people.ldif\"\n\n\
         [mail]\nsender = \"syncctl@corp.example.com\"\n[mail.smtp]\nhost = \"smtp.office365.com\"\n\
         username = \"svc@corp.example.com\"\npassword_env = \"SYNCCTL_TEST_NO_SUCH_VAR\"\n",
    );
    std::fs::write(env.path("people.ldif"), people_ldif("Sales")).unwrap();
    let out = env.cmd().env_remove("SYNCCTL_TEST_NO_SUCH_VAR").arg("cycle").output().unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(!text(&out.stdout).contains("mail "), "no mail step: {}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tripped_deletion_threshold_mails_the_operators_the_approval_command() {
    let emu = seeded_tenant().await;
    let env = cloud_env(&emu);
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!(
            "{config}\n[sync]\ndeletion_threshold = 1\n\n[mail]\nsender = \"syncctl@corp.example.com\"\n\
             directory = \"maildir\"\noperators = [\"ops@corp.example.com\"]\n"
        ),
    )
    .unwrap();
    let env = tokio::task::spawn_blocking(move || {
        let out = env.cmd().arg("cycle").output().unwrap();
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
        assert!(maildir(&env).is_empty(), "a cycle without a stop tells nobody: {:?}", maildir(&env));
        // Carol and Frank leave the directory: two deletes, over the threshold of one.
        let ldif = std::fs::read_to_string(env.path("corp-export.ldif")).unwrap();
        let kept: Vec<&str> = ldif
            .split("\n\n")
            .filter(|e| !e.contains("dn: CN=Carol Space,") && !e.contains("dn: CN=Frank Umlaut,"))
            .collect();
        assert_eq!(kept.len() + 2, ldif.split("\n\n").count(), "both entries are in the sample");
        std::fs::write(env.path("corp-export.ldif"), kept.join("\n\n")).unwrap();
        let out = env.cmd().arg("cycle").output().unwrap();
        let stdout = text(&out.stdout);
        assert!(stdout.contains("stopped-deletion-threshold-exceeded"), "{stdout}\n{}", text(&out.stderr));
        let token = stdout
            .split("--approve-deletes ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or_else(|| panic!("no approval token in {stdout}"))
            .to_owned();
        let mails = maildir(&env);
        assert_eq!(mails.len(), 1, "{mails:?}");
        assert_eq!(mails[0].0, "ops@corp.example.com");
        assert!(mails[0].1.contains("cloud"), "{mails:?}");
        let body = std::fs::read_dir(env.path("maildir/new"))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .next()
            .unwrap();
        assert!(body.contains(&format!("--approve-deletes {token}")), "{body}");
        env
    })
    .await
    .unwrap();
    drop(env);
    emu.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_test_checks_the_sender_against_the_domains_the_graph_connector_imported() {
    let emu = seeded_tenant().await;
    let env = cloud_env(&emu);
    let config = std::fs::read_to_string(&env.config).unwrap();
    let with_sender =
        move |sender: &str| format!("{config}\n[mail]\nsender = \"{sender}\"\ndirectory = \"maildir\"\n");
    std::fs::write(&env.config, with_sender("syncctl@fabrikam.com")).unwrap();
    tokio::task::spawn_blocking(move || {
        let checks = |env: &Env| -> serde_json::Value {
            let out =
                env.cmd().args(["--json", "mail", "test", "--to", "ops@corp.example.com"]).output().unwrap();
            serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)))
        };
        let rules = |v: &serde_json::Value| -> Vec<String> {
            v["checks"].as_array().unwrap().iter().map(|c| c["rule"].as_str().unwrap().to_owned()).collect()
        };
        // Before any import nothing says which domains the tenant verified: a routable domain passes.
        let before = checks(&env);
        assert_eq!(before["checked_against_tenant_of"], serde_json::Value::Null, "{before:#}");
        assert!(!rules(&before).contains(&"mail-sender-unverified".to_owned()), "{before:#}");
        let out = env.cmd().arg("cycle").output().unwrap();
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
        // After a cycle the tenant's domains are known: fabrikam.com is not one of them.
        let after = checks(&env);
        assert_eq!(after["checked_against_tenant_of"], "cloud", "{after:#}");
        assert!(rules(&after).contains(&"mail-sender-unverified".to_owned()), "{after:#}");
        std::fs::write(&env.config, with_sender("syncctl@corp.example.com")).unwrap();
        let verified = checks(&env);
        assert!(!rules(&verified).contains(&"mail-sender-unverified".to_owned()), "{verified:#}");
        assert_eq!(verified["delivered"], true, "{verified:#}");
    })
    .await
    .unwrap();
    emu.stop().await.unwrap();
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `secs` seconds.
async fn poll<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// One LDIF user entry with a made-up objectGUID from `n`.
fn extra_user(n: u8, name: &str, upn: &str) -> String {
    use base64::Engine as _;
    let guid = base64::engine::general_purpose::STANDARD.encode([n; 16]);
    format!(
        "\n\ndn: CN={name},CN=Users,DC=corp,DC=example,DC=com\nobjectClass: top\nobjectClass: person\n\
         objectClass: organizationalPerson\nobjectClass: user\ncn: {name}\ndisplayName: {name}\n\
         objectGUID:: {guid}\nuserAccountControl: 512\nsAMAccountName: {}\nuserPrincipalName: {upn}\n",
        upn.split('@').next().unwrap()
    )
}

/// The emulator's users: (UPN, onPremisesImmutableId).
async fn tenant_users(emu: &syncctl_graph_emulator::RunningEmulator) -> Vec<(String, Option<String>)> {
    let state: serde_json::Value =
        reqwest::get(format!("{}/_emulator/state", emu.base_url())).await.unwrap().json().await.unwrap();
    cloud_users(&state).into_iter().collect()
}

struct Served {
    child: std::process::Child,
    log: PathBuf,
}

fn start_serve(env: &Env, log: &str) -> Served {
    let log = env.path(log);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_syncctl"))
        .current_dir(env.dir.path())
        .env_remove("SYNCCTL_CONFIG")
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(&env.config)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Served { child, log }
}

async fn get_status(base: &str) -> Option<serde_json::Value> {
    reqwest::get(format!("{base}/api/status")).await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_exports_changes_on_its_own_holds_one_instance_per_database_and_stops_cleanly() {
    let emu = seeded_tenant().await;
    let env = cloud_env(&emu);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!(
            "{config}\n[service]\ninterval = \"1s\"\nstop_grace = \"0s\"\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();

    // The first service starts, answers and runs its first cycle with no command typed.
    let mut a = start_serve(&env, "a.log");
    poll(120, "/healthz", || async {
        reqwest::get(format!("{base}/healthz")).await.ok().filter(|r| r.status() == 200)
    })
    .await;
    poll(120, "a first cycle", || async {
        get_status(&base).await.filter(|s| s["service"]["cycles"].as_u64().unwrap_or(0) >= 1)
    })
    .await;

    // A second one on the same database refuses, naming the holder.
    let out = env.cmd().arg("serve").timeout(std::time::Duration::from_secs(60)).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("pid {}", a.child.id())) && err.contains("already runs"), "{err}");

    // A change in the source reaches the tenant by itself.
    let mut ldif = std::fs::read_to_string(env.path("corp-export.ldif")).unwrap();
    ldif.push_str(&extra_user(0x5a, "Zed Zulu", "zed@corp.example.com"));
    std::fs::write(env.path("corp-export.ldif"), &ldif).unwrap();
    poll(120, "Zed in the tenant", || async {
        tenant_users(&emu).await.iter().any(|(upn, _)| upn == "zed@corp.example.com").then_some(())
    })
    .await;

    // /metrics in the Prometheus text format, read by an independent parser.
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |s: &prometheus_parse::Sample| match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => 0.0,
    };
    let cycles: f64 = scrape.samples.iter().filter(|s| s.metric == "syncctl_cycles_total").map(value).sum();
    assert!(cycles >= 1.0, "{metrics}");
    let adds: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "syncctl_objects_total" && s.labels.get("phase") == Some("export"))
        .filter(|s| s.labels.get("change") == Some("add"))
        .map(value)
        .sum();
    assert!(adds >= 1.0, "the export of Zed is counted: {metrics}");
    assert!(scrape.samples.iter().any(|s| s.metric == "syncctl_mail_dead_letters"), "{metrics}");

    // The status page and the control commands.
    let page = reqwest::get(format!("{base}/")).await.unwrap().text().await.unwrap();
    assert!(page.contains("Recent runs") && page.contains("Pending exports"), "{page}");
    let out = env.cmd().args(["serve", "pause"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env.cmd().args(["--json", "serve", "status"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(st["runs"].as_array().is_some_and(|r| !r.is_empty()), "{st:#}");
    let out = env.cmd().args(["serve", "resume"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env.cmd().args(["serve", "run-now"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // kill -9: the lock goes with the process; a new service starts.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let mut b = start_serve(&env, "b.log");
    poll(120, "the second service", || async {
        get_status(&base).await.filter(|s| s["service"]["pid"].as_u64() == Some(u64::from(b.child.id())))
    })
    .await;

    // SIGTERM while a slowed-down cycle runs (no grace: it is abandoned): exit 0.
    let r = reqwest::Client::new()
        .post(format!("{}/_emulator/faults", emu.base_url()))
        .json(&serde_json::json!({"delayMs": 300}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    ldif.push_str(&extra_user(0x59, "Yan Yellow", "yan@corp.example.com"));
    std::fs::write(env.path("corp-export.ldif"), &ldif).unwrap();
    poll(120, "a running cycle", || async {
        get_status(&base).await.filter(|s| s["service"]["state"] == "running")
    })
    .await;
    let killed =
        std::process::Command::new("kill").args(["-TERM", &b.child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let code = poll(60, "the service to stop", || {
        let r = b.child.try_wait().unwrap();
        async move { r }
    })
    .await;
    let blog = std::fs::read_to_string(&b.log).unwrap();
    assert_eq!(code.code(), Some(0), "{blog}");

    // A restart converges: everyone once, nothing doubled.
    let r = reqwest::Client::new()
        .post(format!("{}/_emulator/faults", emu.base_url()))
        .json(&serde_json::json!({"delayMs": 0}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let env = tokio::task::spawn_blocking(move || {
        for _ in 0..2 {
            let out = env
                .cmd()
                .args(["serve", "--once"])
                .timeout(std::time::Duration::from_secs(300))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        env
    })
    .await
    .unwrap();
    let users = tenant_users(&emu).await;
    for upn in ["zed@corp.example.com", "yan@corp.example.com"] {
        assert_eq!(users.iter().filter(|(u, _)| u == upn).count(), 1, "{upn} once: {users:#?}");
    }
    let mut anchors: Vec<&String> = users.iter().filter_map(|(_, a)| a.as_ref()).collect();
    let n = anchors.len();
    anchors.sort();
    anchors.dedup();
    assert_eq!(anchors.len(), n, "an ImmutableID on two cloud users: {users:#?}");
    let out = env.cmd().args(["--json", "export", "--preview"]).output().unwrap();
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", text(&out.stderr));
    let _ = std::fs::remove_file(&a.log);
    drop(env);
    emu.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_beyond_loopback_needs_the_token_and_staging_mode_exports_nothing() {
    let emu = seeded_tenant().await;
    let env = cloud_env(&emu);
    let port = free_port();
    let config = std::fs::read_to_string(&env.config).unwrap();
    // Without a token, an address beyond loopback is refused.
    std::fs::write(&env.config, format!("{config}\n[service]\nlisten = \"0.0.0.0:{port}\"\n")).unwrap();
    let out = env.cmd().args(["serve", "--once"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("token_env or token_file"), "{}", text(&out.stderr));

    std::fs::write(
        &env.config,
        format!(
            "{config}\n[sync]\nstaging = true\n\n[service]\ninterval = \"1h\"\nlisten = \"0.0.0.0:{port}\"\n\
             token_env = \"SYNCCTL_TEST_SERVE_TOKEN\"\n"
        ),
    )
    .unwrap();
    let secret = "t0ken-that-must-not-be-logged";
    let log = env.path("serve.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_syncctl"))
        .current_dir(env.dir.path())
        .env_remove("RUST_LOG")
        .env("SYNCCTL_TEST_SERVE_TOKEN", secret)
        .arg("--config")
        .arg(&env.config)
        .args(["--log-format", "json", "serve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    // Every route needs the token, health included.
    let code = poll(120, "an answer", || async {
        client.get(format!("{base}/healthz")).send().await.ok().map(|r| r.status().as_u16())
    })
    .await;
    assert_eq!(code, 401);
    for path in ["/", "/metrics", "/api/status"] {
        let r = client.get(format!("{base}{path}")).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    let r = client.post(format!("{base}/api/pause")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client.get(format!("{base}/healthz")).bearer_auth(secret).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The CLI reads the same variable.
    let status = poll(120, "the first cycle", || async {
        let st: serde_json::Value = client
            .get(format!("{base}/api/status"))
            .bearer_auth(secret)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        st["service"]["last_cycle"].is_object().then_some(st)
    })
    .await;
    let cli = env.cmd().env("SYNCCTL_TEST_SERVE_TOKEN", secret).args(["serve", "status"]).output().unwrap();
    assert!(cli.status.success(), "{}", text(&cli.stderr));
    assert!(text(&cli.stdout).contains("pending exports"), "{}", text(&cli.stdout));
    let cli = env.cmd().env_remove("SYNCCTL_TEST_SERVE_TOKEN").args(["serve", "status"]).output().unwrap();
    assert!(!cli.status.success());
    // Staging mode: the cycle ran, the tenant is untouched and the exports wait.
    let users = tenant_users(&emu).await;
    assert_eq!(users.len(), 2, "staging mode wrote to the tenant: {users:#?}\n{status:#}");
    assert!(status["pending_exports"].as_array().is_some_and(|p| !p.is_empty()), "{status:#}");
    child.kill().unwrap();
    child.wait().unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(secret), "the token is in the log: {logged}");
    assert!(logged.contains("a cycle starts"), "the service logs its cycles: {logged}");
    for line in logged.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    drop(env);
    emu.stop().await.unwrap();
}

/// The profile that ran for `step` of `connector` in a cycle's JSON.
fn step_profile(cycle: &serde_json::Value, step: &str, connector: &str) -> String {
    cycle["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == step && s["connector"] == connector)
        .and_then(|s| s["profile"].as_str())
        .unwrap_or_else(|| panic!("no {step} of {connector} in {cycle:#}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_connector_setting_forces_one_full_import_and_full_sync_of_that_connector() {
    let emu = seeded_tenant().await;
    let env = cloud_env(&emu);
    let graph_url = emu.graph_url().to_owned();
    tokio::task::spawn_blocking(move || {
        let cycle = || -> serde_json::Value {
            let out = env.cmd().args(["--json", "cycle"]).output().unwrap();
            assert!(out.status.code().is_some_and(|c| c <= 1), "{}", text(&out.stderr));
            serde_json::from_slice(&out.stdout).unwrap()
        };
        // The first cycle records every connector's settings; the second is a plain delta.
        cycle();
        let second = cycle();
        assert_eq!(step_profile(&second, "import", "cloud"), "delta-import", "{second:#}");
        assert_eq!(step_profile(&second, "sync", "cloud"), "delta-sync");
        assert_eq!(step_profile(&second, "sync", "corp-ad"), "delta-sync");
        assert_eq!(second["full_reasons"], serde_json::json!([]));

        // The cloud connector now reaches the same tenant by another name: a settings change.
        let config = std::fs::read_to_string(&env.config).unwrap();
        let moved = graph_url.replace("127.0.0.1", "localhost");
        assert_ne!(moved, graph_url);
        std::fs::write(&env.config, config.replace(&graph_url, &moved)).unwrap();
        let third = cycle();
        assert_eq!(step_profile(&third, "import", "cloud"), "full-import", "{third:#}");
        assert_eq!(step_profile(&third, "sync", "cloud"), "full-sync");
        // The other connector is untouched.
        assert_eq!(step_profile(&third, "sync", "corp-ad"), "delta-sync");
        let reasons = third["full_reasons"].as_array().unwrap();
        assert_eq!(reasons.len(), 1, "{third:#}");
        assert!(
            reasons[0].as_str().unwrap().contains("connector `cloud`: its settings changed"),
            "{reasons:?}"
        );

        // Once done, the new settings are the recorded ones: delta again.
        let fourth = cycle();
        assert_eq!(step_profile(&fourth, "import", "cloud"), "delta-import", "{fourth:#}");
        assert_eq!(step_profile(&fourth, "sync", "cloud"), "delta-sync");
        assert_eq!(fourth["full_reasons"], serde_json::json!([]));

        // A credential's location is not a setting that changes what is read.
        let config = std::fs::read_to_string(&env.config).unwrap();
        std::fs::copy(env.path("graph.secret"), env.path("graph2.secret")).unwrap();
        std::fs::write(&env.config, config.replace("graph.secret", "graph2.secret")).unwrap();
        let fifth = cycle();
        assert_eq!(step_profile(&fifth, "import", "cloud"), "delta-import", "{fifth:#}");
        assert_eq!(fifth["full_reasons"], serde_json::json!([]));
        drop(env);
    })
    .await
    .unwrap();
    emu.stop().await.unwrap();
}

/// The value of the samples of `metric` whose labels include `labels`, summed.
fn metric_sum(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

async fn scrape(base: &str) -> (String, prometheus_parse::Scrape) {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    (text, scrape)
}

async fn sigterm_and_wait(served: &mut Served) {
    let term =
        std::process::Command::new("kill").args(["-TERM", &served.child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let code = poll(120, "the service to stop", || {
        let r = served.child.try_wait().unwrap();
        async move { r }
    })
    .await;
    assert_eq!(code.code(), Some(0), "{}", std::fs::read_to_string(&served.log).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_shows_the_latest_assess_summary_and_counts_graph_throttling_apart_from_other_retries() {
    // Hard throttling (10 writes per 2 s) and one write in five refused with 503.
    let emu = seeded_tenant_with(
        syncctl_graph_emulator::ThrottleConfig::hard(),
        syncctl_graph_emulator::FaultConfig { write_error_rate: 0.2, seed: 11, ..Default::default() },
    )
    .await;
    let env = cloud_env(&emu);
    // No client-side pacing: the emulator's budget is what throttles.
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{config}write_budget = 100000\nwrite_window_seconds = 1\n"))
        .unwrap();
    // Enough writes to meet the budget: 30 more users.
    let mut ldif = std::fs::read_to_string(env.path("corp-export.ldif")).unwrap();
    for n in 0..30u8 {
        ldif.push_str(&extra_user(0x80 + n, &format!("Load {n}"), &format!("load{n}@corp.example.com")));
    }
    std::fs::write(env.path("corp-export.ldif"), ldif).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    // Without the database, `syncctl assess` creates none.
    let (env, out) = tokio::task::spawn_blocking(move || {
        let out = env.cmd().args(["--json", "assess"]).output().unwrap();
        (env, out)
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!env.path("sync.db").exists(), "assess must not create the database");

    // The service's first cycle exports through the throttling; it runs no assessment
    // (assess_every = "0s"), so the status page says there is none.
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!(
            "{config}\n[sync]\ndeletion_threshold = 0\n\n[service]\ninterval = \"1h\"\nassess_every = \"0s\"\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    let mut a = start_serve(&env, "a.log");
    let status = poll(300, "the first cycle", || async {
        get_status(&base).await.filter(|s| s["service"]["cycles"].as_u64().unwrap_or(0) >= 1)
    })
    .await;
    assert!(status["assess"].is_null(), "{:#}", status["assess"]);
    let page = reqwest::get(format!("{base}/")).await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"assess\">none yet"), "{page}");

    // Throttling, apart from the 503s: every 429 the emulator answered is one throttled
    // write retried (a 429 on a whole $batch is one per write in it), every 503 one retry for
    // a server error; no retry is counted twice.
    let stats = emu.stats();
    assert!(stats.throttled > 0 && stats.unavailable > 0, "the faults happened: {stats:?}");
    let (text_, m) = scrape(&base).await;
    let throttled = metric_sum(&m, "syncctl_graph_throttled_total", &[("connector", "cloud")]);
    let waited = metric_sum(&m, "syncctl_graph_retry_after_seconds_total", &[("connector", "cloud")]);
    let server =
        metric_sum(&m, "syncctl_graph_retries_total", &[("connector", "cloud"), ("cause", "server-error")]);
    let all_retries = metric_sum(&m, "syncctl_graph_retries_total", &[("connector", "cloud")]);
    let warnings = metric_sum(&m, "syncctl_export_warnings_total", &[("connector", "cloud")]);
    assert!(throttled >= stats.throttled as f64, "{throttled} < {} 429s: {text_}", stats.throttled);
    assert!(waited > 0.0, "Retry-After seconds are counted: {text_}");
    assert!(server >= stats.unavailable as f64, "{server} < {} 503s: {text_}", stats.unavailable);
    assert!(throttled + all_retries <= warnings, "every retry is one export warning, counted once: {text_}");
    assert!(
        !m.samples
            .iter()
            .any(|s| s.metric == "syncctl_graph_retries_total" && s.labels.get("cause") == Some("throttled")),
        "{text_}"
    );

    // `syncctl assess` against the configured database stores its summary; the status page,
    // its JSON and /metrics show it.
    let (env, out) = tokio::task::spawn_blocking(move || {
        let out = env.cmd().args(["--json", "assess"]).output().unwrap();
        (env, out)
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let totals = &report["totals"];
    let status = get_status(&base).await.unwrap();
    let assess = &status["assess"];
    assert_eq!(assess["origin"], "assess", "{assess:#}");
    assert_eq!(assess["verdict"], report["verdict"]);
    for k in ["objects", "errors", "warnings", "infos"] {
        assert_eq!(assess[k], totals[k], "{k}: {assess:#} vs {totals:#}");
    }
    assert_eq!(assess["sources"], serde_json::json!(["corp-ad"]));
    let rules: u64 = assess["by_rule"].as_array().unwrap().iter().map(|r| r["count"].as_u64().unwrap()).sum();
    let findings = totals["errors"].as_u64().unwrap()
        + totals["warnings"].as_u64().unwrap()
        + totals["infos"].as_u64().unwrap();
    assert_eq!(rules, findings, "{assess:#}");
    let (text_, m) = scrape(&base).await;
    for (severity, k) in [("error", "errors"), ("warning", "warnings"), ("info", "infos")] {
        assert_eq!(
            metric_sum(&m, "syncctl_assess_findings", &[("severity", severity)]),
            totals[k].as_u64().unwrap() as f64,
            "{text_}"
        );
    }
    assert_eq!(metric_sum(&m, "syncctl_assess_objects", &[]), totals["objects"].as_u64().unwrap() as f64);
    let page = reqwest::get(format!("{base}/")).await.unwrap().text().await.unwrap();
    let first_rule = assess["by_rule"][0]["rule"].as_str().unwrap();
    assert!(
        page.contains(&format!("<b>{}</b> errors", totals["errors"]))
            && page.contains("run by syncctl assess"),
        "{page}"
    );
    assert!(page.contains(&format!("<td>{first_rule}</td>")), "{page}");
    sigterm_and_wait(&mut a).await;

    // With the default schedule the service assesses after a full cycle by itself.
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, config.replace("assess_every = \"0s\"\n", "")).unwrap();
    let mut b = start_serve(&env, "b.log");
    poll(120, "the service", || get_status(&base)).await;
    let out = env.cmd().args(["serve", "run-now", "--full"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = poll(300, "the service's own assessment", || async {
        get_status(&base).await.filter(|s| s["assess"]["origin"] == "serve")
    })
    .await;
    assert_eq!(status["assess"]["objects"], totals["objects"], "{:#}", status["assess"]);
    let out = env.cmd().args(["serve", "status"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!(
            "latest readiness assessment (serve): {}",
            report["verdict"].as_str().unwrap()
        )),
        "{said}"
    );
    let log = poll(120, "the log line of the assessment", || {
        let log = std::fs::read_to_string(&b.log).unwrap_or_default();
        async move { log.contains("the readiness assessment is stored").then_some(log) }
    })
    .await;
    assert!(log.contains("a full cycle was asked for"), "{log}");
    sigterm_and_wait(&mut b).await;
    drop(env);
    emu.stop().await.unwrap();
}
