//! `syncctl demo [--dir DIR] [--port PORT] [--serve]`: the whole product on embedded defaults,
//! with no server to install.
//!
//! It writes into DIR a config with an `ldif` connector (the sample directory shipped in the
//! binary) and a `graph` connector to the Microsoft Graph emulator, which it starts in this
//! process on a fixed loopback port with its state in DIR; seeds the tenant (a verified domain,
//! a cloud user already stamped with one sample user's ImmutableID, a cloud-only admin); reads
//! the readiness report of the directory against that tenant; runs a full cycle, then replaces
//! the directory with its day-2 version (a department removed, one user renamed) and runs a
//! delta cycle, both through the code of `syncctl cycle`; and prints what happened, read back
//! from run history, the connector spaces and the metaverse, and what to run next.
//!
//! `--serve` serves the tenant of a demo already in DIR until Ctrl-C, so that `syncctl export`
//! and `syncctl cycle` can go on against it.
//!
//! The client secret of the emulator is a random value written to a 0600 file in DIR; it is
//! never printed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use syncctl_assess::tenant::TenantSnapshot;
use syncctl_assess::{AssessOptions, Report};
use syncctl_graph_emulator::{EmulatorConfig, EmulatorError, RunningEmulator};
use syncctl_store::{CsLookup, ExportOperation, LinkHow, PendingExport, RunError, Severity, Store};

use super::cycle::{CycleOutcome, run_cycle};
use crate::cli::DemoArgs;
use crate::config::{self, Plan};
use crate::exit::{CmdResult, Code, Failure};
use crate::output;

/// The sample directory, day 1 (also shipped as `examples/demo/directory.ldif`).
const DAY1_LDIF: &str = include_str!("../../../../examples/demo/directory.ldif");
/// The sample directory, day 2: the Sales department removed, Grace Green renamed.
const DAY2_LDIF: &str = include_str!("../../../../examples/demo/directory-day2.ldif");

/// The emulator's port when `--port` is not given.
pub const DEFAULT_PORT: u16 = 18650;
/// The tenant's initial domain.
const TENANT: &str = "contoso.onmicrosoft.com";
/// The tenant's verified domain, the suffix of most sample UPNs.
const VERIFIED_DOMAIN: &str = "corp.example.com";
/// The demo config's deletion threshold: more pending deletes than this stop the export.
const DELETION_THRESHOLD: u64 = 5;
/// The connector names in the demo config.
const AD_CONNECTOR: &str = "corp-ad";
const CLOUD_CONNECTOR: &str = "cloud";
/// The sample user who already has a cloud account carrying her ImmutableID (her objectGUID
/// in the sample LDIF), so that the cycle joins it instead of creating one.
const JOINED_UPN: &str = "alice@corp.example.com";
const JOINED_IMMUTABLE_ID: &str = "qGXeLjWCLOGoRadn3WnYOw==";
/// The cloud-only admin.
const ADMIN_UPN: &str = "admin@contoso.onmicrosoft.com";
/// The user renamed on day 2, as the directory names her then.
const RENAMED_DN: &str = "CN=Grace Hopper,OU=Finance,OU=Staff,DC=corp,DC=example,DC=com";

/// The files the demo writes in DIR (and removes when it starts over).
const CONFIG_FILE: &str = "syncctl.toml";
const SECRET_FILE: &str = "graph-client-secret";
const LDIF_FILE: &str = "directory.ldif";
const DAY1_FILE: &str = "directory-day1.ldif";
const DAY2_FILE: &str = "directory-day2.ldif";
const TENANT_FILE: &str = "tenant.json";
const STATE_FILE: &str = "graph-tenant.db";
const DB_FILE: &str = "syncctl.db";
const HTML_FILE: &str = "assess.html";
const WRITTEN: &[&str] = &[
    CONFIG_FILE,
    SECRET_FILE,
    LDIF_FILE,
    DAY1_FILE,
    DAY2_FILE,
    TENANT_FILE,
    HTML_FILE,
    DB_FILE,
    "syncctl.db-wal",
    "syncctl.db-shm",
    "syncctl.db.lock",
    STATE_FILE,
    "graph-tenant.db-wal",
    "graph-tenant.db-shm",
    "graph-tenant.db-journal",
    // What the `syncctl assess` command the demo prints writes there.
    "assess-fix.ldif",
    "assess-fix.undo.ldif",
];

/// Runs the demo, or serves its tenant with `--serve`.
pub async fn run(args: &DemoArgs, json: bool) -> CmdResult {
    let dir = absolute(&args.dir).map_err(Failure::usage)?;
    if args.serve {
        return serve(&dir, args.port, json).await;
    }
    let port = args.port.unwrap_or(DEFAULT_PORT);
    // The port first: a taken port stops the demo before it removes anything.
    check_port(port)?;
    prepare(&dir, port).map_err(Failure::stopped)?;
    let secret = read_secret(&dir).map_err(Failure::stopped)?;
    let emulator = start_emulator(&dir, port, secret).await?;
    let outcome = scenario(&dir, &emulator, json).await;
    let stopped = emulator.stop().await;
    let (assessment, day1, day2) = outcome?;
    stopped.map_err(|e| Failure::stopped(anyhow!("stopping the Graph emulator: {e}")))?;

    let plan = config::load(&dir.join(CONFIG_FILE)).map_err(Failure::usage)?;
    let store = super::open_store(&plan).await?;
    let facts = Facts::read(&store, &day1, &day2).await;
    store.close().await;
    let facts = facts?;
    let next = next_steps(&dir, port, &day1, &day2);
    if json {
        output::print_json(&json!({
            "dir": dir.display().to_string(),
            "config": dir.join(CONFIG_FILE).display().to_string(),
            "emulator": {
                "url": format!("http://127.0.0.1:{port}"),
                "state": dir.join(STATE_FILE).display().to_string(),
                "tenant": TENANT,
                "verified_domains": [VERIFIED_DOMAIN],
            },
            "day1": day1.json(),
            "day2": day2.json(),
            "report": facts.json(&assessment),
            "next": next.iter().map(|(why, cmd)| json!({"why": why, "command": cmd})).collect::<Vec<_>>(),
        }))?;
    } else {
        let mut s = facts.text(&assessment, &dir);
        s.push_str("\nWhat to run next\n");
        for (why, cmd) in &next {
            let _ = writeln!(s, "  # {why}\n  {cmd}");
        }
        output::print(&s)?;
    }
    // The cycles' own errors and the held deletes are the point of the demo; a run that stopped
    // for any other reason means the demo itself went wrong.
    let unexpected: Vec<String> = day1
        .steps
        .iter()
        .chain(&day2.steps)
        .filter(|s| s.status.starts_with("stopped-") && s.status != "stopped-deletion-threshold-exceeded")
        .map(|s| format!("{} of `{}` (run {}): {}", s.profile, s.connector, s.run_id, s.status))
        .collect();
    if !unexpected.is_empty() {
        return Err(Failure::stopped(anyhow!(
            "the demo did not run as it should: {}",
            unexpected.join("; ")
        )));
    }
    Ok(Code::Success)
}

/// The demo's steps while the emulator runs: seed, assess, day 1, day 2.
async fn scenario(
    dir: &Path,
    emulator: &RunningEmulator,
    json: bool,
) -> Result<(Report, CycleOutcome, CycleOutcome), Failure> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| Failure::stopped(anyhow!("HTTP client: {e}")))?;
    seed(&http, emulator).await.map_err(Failure::stopped)?;
    let tenant_json = tenant_snapshot(&http, emulator, dir).await.map_err(Failure::stopped)?;
    write(&dir.join(TENANT_FILE), &tenant_json).map_err(Failure::stopped)?;
    let tenant = TenantSnapshot::from_graph_json(&tenant_json)
        .map_err(|e| Failure::stopped(anyhow!("the tenant read from the emulator: {e}")))?;
    let plan = config::load(&dir.join(CONFIG_FILE)).map_err(Failure::usage)?;
    let say = |text: String| -> Result<(), Failure> {
        if !json {
            output::print(&text)?;
        }
        Ok(())
    };
    say(intro(dir, emulator))?;

    // The readiness report of the directory against the tenant, before anything synchronizes.
    let source = plan
        .connector(AD_CONNECTOR)
        .ok_or_else(|| Failure::usage(anyhow!("the demo config has no `{AD_CONNECTOR}` connector")))?;
    let options = AssessOptions { tenant: Some(tenant), mail: None, worst_objects: 5 };
    let assessment = super::assess::assess_sources(&[source], options, !json).await?;
    let html = syncctl_assess::render::html::to_html(&assessment).map_err(Failure::stopped)?;
    write(&dir.join(HTML_FILE), &html).map_err(Failure::stopped)?;

    say(step(&format!(
        "Day 1: a full cycle (syncctl --config {} cycle --full)",
        sh(&dir.join(CONFIG_FILE))
    )))?;
    let day1 = run_cycle(&plan, true, !json, &syncctl_service::StepStop::default()).await?;
    say(day1.text())?;

    write(&dir.join(LDIF_FILE), DAY2_LDIF).map_err(Failure::stopped)?;
    say(step(&format!(
        "Day 2: the Sales department is gone and Grace Green is now Grace Hopper ({} replaced by {DAY2_FILE}); a delta cycle (syncctl cycle)",
        LDIF_FILE
    )))?;
    let day2 = run_cycle(&plan, false, !json, &syncctl_service::StepStop::default()).await?;
    say(day2.text())?;
    Ok((assessment, day1, day2))
}

fn step(title: &str) -> String {
    format!("\n==> {title}\n")
}

fn intro(dir: &Path, emulator: &RunningEmulator) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "syncctl demo: a whole sync cycle on embedded defaults, no server to install\n");
    let _ = writeln!(
        s,
        "  directory  {} (an LDIF export of a small AD, shipped in the binary; connector `{AD_CONNECTOR}`)",
        dir.join(LDIF_FILE).display()
    );
    let _ = writeln!(
        s,
        "  cloud      the Microsoft Graph emulator at {} in this process (connector `{CLOUD_CONNECTOR}`), tenant {TENANT}",
        emulator.base_url()
    );
    let _ = writeln!(
        s,
        "             with {VERIFIED_DOMAIN} verified, {JOINED_UPN} already there with her ImmutableID, and {ADMIN_UPN} (cloud-only, Global Administrator)"
    );
    let _ = writeln!(s, "             state {}", dir.join(STATE_FILE).display());
    let _ = writeln!(
        s,
        "  config     {} (deletion_threshold = {DELETION_THRESHOLD}; the client secret is in {}, mode 0600)",
        dir.join(CONFIG_FILE).display(),
        dir.join(SECRET_FILE).display()
    );
    s
}

// ---------------------------------------------------------------------------------------------
// Files

/// `path` made absolute against the working directory, so that printed commands work anywhere.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.as_os_str().is_empty() {
        bail!("--dir is empty");
    }
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    Ok(std::env::current_dir().context("cannot read the working directory")?.join(path))
}

/// Starts over in `dir`: removes what an earlier demo wrote there, then writes the config, the
/// client secret and the sample directory.
fn prepare(dir: &Path, port: u16) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for name in WRITTEN {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow!("cannot remove {} (left by an earlier demo): {e}", path.display())),
        }
    }
    write_secret(&dir.join(SECRET_FILE), &random_secret())?;
    write(&dir.join(DAY1_FILE), DAY1_LDIF)?;
    write(&dir.join(DAY2_FILE), DAY2_LDIF)?;
    write(&dir.join(LDIF_FILE), DAY1_LDIF)?;
    write(&dir.join(CONFIG_FILE), &config_text(port))?;
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// 2 x 122 random bits from the operating system (UUID v4), as 64 hex digits.
fn random_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Writes the secret to a new file only its owner can read.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(secret.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

fn read_secret(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(SECRET_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let secret = text.trim().to_owned();
    if secret.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(secret)
}

/// The demo's config file.
fn config_text(port: u16) -> String {
    format!(
        r#"# Written by `syncctl demo` (a re-run of the demo writes it again). Every key is explained in
# examples/syncctl.toml. Relative paths resolve against this file's directory.

[store]
path = "{DB_FILE}"

# The sample directory: an LDIF export of Active Directory. The demo replaces the file with its
# day-2 version ({DAY2_FILE}) before the second cycle.
[[connectors]]
name = "{AD_CONNECTOR}"
type = "ldif"
path = "{LDIF_FILE}"
flavor = "ad"
base_dn = "DC=corp,DC=example,DC=com"

# The cloud: the Microsoft Graph emulator on loopback (`syncctl demo --serve` serves it again,
# with its state in {STATE_FILE}). The client secret is in a file, never here.
[[connectors]]
name = "{CLOUD_CONNECTOR}"
type = "graph"
tenant = "{TENANT}"
client_id = "{client_id}"
client_secret_file = "{SECRET_FILE}"
authority = "http://127.0.0.1:{port}"
graph_url = "http://127.0.0.1:{port}/v1.0"

[sync]
# An export with more than {DELETION_THRESHOLD} pending deletes stops before writing anything, until
# `syncctl export --approve-deletes TOKEN` releases exactly the reviewed set.
deletion_threshold = {DELETION_THRESHOLD}
"#,
        client_id = syncctl_graph_emulator::DEFAULT_CLIENT_ID,
    )
}

// ---------------------------------------------------------------------------------------------
// The emulator

fn port_taken(port: u16) -> Failure {
    Failure::usage(anyhow!(
        "127.0.0.1:{port} is taken (another `syncctl demo --serve`, an emulator still running, or another program): \
         stop it, or pass --port PORT"
    ))
}

/// Fails with a clear message when the port is taken.
fn check_port(port: u16) -> Result<(), Failure> {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(listener) => {
            drop(listener);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(port_taken(port)),
        Err(e) => Err(Failure::usage(anyhow!("cannot listen on 127.0.0.1:{port}: {e}"))),
    }
}

fn emulator_config(dir: &Path, port: u16, secret: String) -> EmulatorConfig {
    EmulatorConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        state_path: Some(dir.join(STATE_FILE)),
        tenant: TENANT.into(),
        verified_domains: vec![VERIFIED_DOMAIN.into()],
        client_secret: secret,
        ..EmulatorConfig::default()
    }
}

async fn start_emulator(dir: &Path, port: u16, secret: String) -> Result<RunningEmulator, Failure> {
    match syncctl_graph_emulator::start(emulator_config(dir, port, secret)).await {
        Ok(e) => Ok(e),
        Err(EmulatorError::Io(e)) if e.kind() == std::io::ErrorKind::AddrInUse => Err(port_taken(port)),
        Err(e) => Err(Failure::stopped(anyhow!("the Graph emulator did not start: {e}"))),
    }
}

/// Sends one request; the JSON answer (Null for an empty one), or the status and body.
async fn call(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
    let answer = request.send().await.with_context(|| format!("{what}: the emulator did not answer"))?;
    let status = answer.status();
    let body = answer.text().await.with_context(|| format!("{what}: reading the answer"))?;
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {body}");
    }
    if body.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&body).with_context(|| format!("{what}: the answer is not JSON"))
}

/// Seeds the tenant through the emulator's admin endpoints: the cloud-only admin (with the
/// Global Administrator role) and the cloud account of the joined user, carrying her
/// ImmutableID and a job title the directory has since changed.
async fn seed(http: &reqwest::Client, emulator: &RunningEmulator) -> anyhow::Result<()> {
    let base = emulator.base_url();
    let users = json!([
        {
            "userPrincipalName": ADMIN_UPN,
            "displayName": "Tenant Admin",
            "mailNickname": "admin",
            "accountEnabled": true,
        },
        {
            "userPrincipalName": JOINED_UPN,
            "displayName": "Alice Anders",
            "givenName": "Alice",
            "surname": "Anders",
            "mailNickname": "alice",
            "mail": JOINED_UPN,
            "jobTitle": "Senior Engineer",
            "department": "Engineering",
            "onPremisesImmutableId": JOINED_IMMUTABLE_ID,
            "accountEnabled": true,
        },
    ]);
    let created =
        call(http.post(format!("{base}/_emulator/users")).json(&users), "seeding the cloud users").await?;
    let admin_id = created
        .get("value")
        .and_then(Value::as_array)
        .and_then(|v| v.first())
        .and_then(|u| u.get("id"))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("seeding the cloud users: the emulator sent no id"))?
        .to_owned();
    call(
        http.post(format!("{base}/_emulator/admin-roles"))
            .json(&json!({"userId": admin_id, "role": "Global Administrator"})),
        "granting the admin role",
    )
    .await?;
    Ok(())
}

/// Percent-encoding of a form value.
fn form_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The tenant as `syncctl assess --tenant` reads it, read through Graph itself (a
/// client-credentials token, then the collections with the `$select` the README names).
async fn tenant_snapshot(
    http: &reqwest::Client,
    emulator: &RunningEmulator,
    dir: &Path,
) -> anyhow::Result<String> {
    let secret = read_secret(dir)?;
    let form = format!(
        "client_id={}&client_secret={}&scope={}&grant_type=client_credentials",
        form_encode(syncctl_graph_emulator::DEFAULT_CLIENT_ID),
        form_encode(&secret),
        form_encode("https://graph.microsoft.com/.default")
    );
    let token = call(
        http.post(emulator.token_url())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form),
        "the token request",
    )
    .await?;
    let token = token
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the token endpoint sent no access token"))?
        .to_owned();
    let graph = emulator.graph_url();
    let mut file = serde_json::Map::new();
    file.insert(
        "@comment".into(),
        json!(format!(
            "The demo tenant ({TENANT}) as Microsoft Graph returned it before the first cycle, written by `syncctl demo` for `syncctl assess --tenant`."
        )),
    );
    for (member, path) in [
        ("domains", "/domains"),
        (
            "users",
            "/users?$select=id,displayName,userPrincipalName,onPremisesImmutableId,onPremisesSyncEnabled,mail,proxyAddresses&$top=999",
        ),
        (
            "groups",
            "/groups?$select=id,displayName,mail,mailEnabled,securityEnabled,proxyAddresses,onPremisesSyncEnabled&$top=999",
        ),
        ("directoryRoles", "/directoryRoles?$expand=members"),
    ] {
        let body =
            call(http.get(format!("{graph}{path}")).bearer_auth(&token), &format!("GET {path}")).await?;
        file.insert(member.into(), body);
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(file))?;
    text.push('\n');
    Ok(text)
}

/// `syncctl demo --serve`: the tenant of the demo in `dir`, on the port its config names,
/// until Ctrl-C or SIGTERM.
async fn serve(dir: &Path, port_arg: Option<u16>, json: bool) -> CmdResult {
    let config_path = dir.join(CONFIG_FILE);
    if !dir.join(STATE_FILE).exists() || !config_path.exists() {
        return Err(Failure::usage(anyhow!(
            "there is no demo in {}: run `syncctl demo --dir {}` first",
            dir.display(),
            sh(dir)
        )));
    }
    let plan = config::load(&config_path).map_err(Failure::usage)?;
    let port = demo_port(&plan).map_err(Failure::usage)?;
    if let Some(p) = port_arg
        && p != port
    {
        return Err(Failure::usage(anyhow!(
            "the demo in {} uses port {port} (its config names it): leave out --port, or run the demo again with --port {p}",
            dir.display()
        )));
    }
    check_port(port)?;
    let secret = read_secret(dir).map_err(Failure::usage)?;
    let emulator = start_emulator(dir, port, secret).await?;
    if json {
        output::print_json(&json!({
            "url": emulator.base_url(),
            "state": dir.join(STATE_FILE).display().to_string(),
            "tenant": TENANT,
        }))?;
    } else {
        output::print(&format!(
            "Serving the demo tenant {TENANT} at {} (state {}) until Ctrl-C.\nIn another terminal:\n  {} --config {} export --preview\n",
            emulator.base_url(),
            dir.join(STATE_FILE).display(),
            syncctl_command(),
            sh(&config_path)
        ))?;
    }
    syncctl_graph_emulator::wait_for_stop().await;
    emulator.stop().await.map_err(|e| Failure::stopped(anyhow!("stopping the Graph emulator: {e}")))?;
    Ok(Code::Success)
}

/// The emulator port the demo config's Graph connector names.
fn demo_port(plan: &Plan) -> anyhow::Result<u16> {
    let cloud = plan
        .connector(CLOUD_CONNECTOR)
        .ok_or_else(|| anyhow!("{} has no `{CLOUD_CONNECTOR}` connector", plan.source.display()))?;
    let url = reqwest::Url::parse(&cloud.endpoint).map_err(|e| {
        anyhow!("{}: the graph_url {} is not a URL: {e}", plan.source.display(), cloud.endpoint)
    })?;
    url.port()
        .ok_or_else(|| anyhow!("{}: the graph_url {} has no port", plan.source.display(), cloud.endpoint))
}

// ---------------------------------------------------------------------------------------------
// The closing report: read back from run history, the connector spaces and the metaverse.

/// One cloud object.
#[derive(Debug, Default, Clone)]
struct CloudObject {
    /// `user` or `group`.
    class: String,
    /// Its UPN (users) or display name.
    name: String,
    /// How it is linked: `provisioned`, `joined`, or `held-delete` (created by syncctl, its
    /// delete now held), `cloud-only`.
    state: &'static str,
    /// Why it is linked (the join rule and values).
    detail: String,
}

/// A per-object warning or error of the demo's runs.
#[derive(Debug, Clone)]
struct Entry {
    /// The latest run that reported it.
    run_id: i64,
    /// Every run that reported it, in order.
    runs: Vec<i64>,
    profile: String,
    error: RunError,
    /// The directory object it is about, when its anchor names one (the warnings of one
    /// object's sync name it by UPN, which two objects may share).
    source_dn: Option<String>,
}

impl Entry {
    /// The object: its directory DN, else as the run named it.
    fn object(&self) -> String {
        self.source_dn
            .clone()
            .or_else(|| self.error.dn.clone())
            .or_else(|| self.error.anchor.clone())
            .unwrap_or_default()
    }

    /// The message, starting with the directory DN rather than the UPN when it is known.
    fn message(&self) -> String {
        match (&self.source_dn, &self.error.dn) {
            (Some(dn), Some(who)) => match self.error.message.strip_prefix(&format!("{who}: ")) {
                Some(rest) => format!("{dn}: {rest}"),
                None => self.error.message.clone(),
            },
            _ => self.error.message.clone(),
        }
    }

    fn runs(&self) -> String {
        let list: Vec<String> = self.runs.iter().map(i64::to_string).collect();
        format!("{} {}", if list.len() == 1 { "run" } else { "runs" }, list.join(", "))
    }
}

/// A pending export, as the report shows it.
#[derive(Debug, Clone)]
struct Pending {
    operation: &'static str,
    object: String,
    status: String,
    attributes: Vec<String>,
    last_error: Option<String>,
}

/// What the demo's runs did.
#[derive(Debug, Default)]
struct Facts {
    /// Export runs: (day, run id, status, adds, updates, deletes, failed).
    exports: Vec<(u8, i64, String, i64, i64, i64, i64)>,
    /// The cloud connector space after day 2.
    cloud: Vec<CloudObject>,
    /// Warnings of the sync runs (UPNs rewritten, values set aside, ...), one per object and kind.
    warnings: Vec<Entry>,
    /// Errors of the demo's runs, one per object and kind (the latest).
    errors: Vec<Entry>,
    /// Pending exports after day 2.
    pending: Vec<Pending>,
    /// Held deletes and their token, per target.
    held: Vec<(String, Vec<String>, String)>,
}

impl Facts {
    async fn read(store: &Store, day1: &CycleOutcome, day2: &CycleOutcome) -> Result<Self, Failure> {
        let mut facts = Facts::default();
        for (day, outcome) in [(1u8, day1), (2u8, day2)] {
            for s in &outcome.steps {
                let Some(run) = store.run(s.run_id).await? else { continue };
                if s.step == "export" {
                    let c = &run.counts;
                    facts.exports.push((
                        day,
                        run.id,
                        run.status.clone(),
                        c.adds,
                        c.updates,
                        c.deletes,
                        c.errors,
                    ));
                }
                for e in store.run_errors(run.id).await? {
                    let source_dn = match &e.anchor {
                        Some(a) => store
                            .find_cs_objects(&CsLookup::ImmutableId(a.clone()))
                            .await?
                            .into_iter()
                            .find(|o| o.connector == AD_CONNECTOR)
                            .map(|o| o.dn),
                        None => None,
                    };
                    let entry = Entry {
                        run_id: run.id,
                        runs: vec![run.id],
                        profile: run.profile.clone(),
                        error: e,
                        source_dn,
                    };
                    match entry.error.level {
                        Severity::Warning if s.step == "sync" => facts.warnings.push(entry),
                        Severity::Warning => {}
                        Severity::Error => facts.errors.push(entry),
                    }
                }
            }
            for h in &outcome.held {
                facts.held.retain(|(c, _, _)| c != &h.connector);
                facts.held.push((h.connector.clone(), h.deletes.clone(), h.token.clone()));
            }
        }
        facts.warnings = latest_per_object(std::mem::take(&mut facts.warnings));
        facts.errors = latest_per_object(std::mem::take(&mut facts.errors));

        let pending = store.pending_exports(None).await?;
        let names = mv_names(store, &pending).await?;
        if let Some(cloud) = store.connector_id(CLOUD_CONNECTOR).await? {
            // A delete names its target by connector-space object, or (an add exported but not
            // yet confirmed by an import when the delete was staged) by the anchor it created.
            let deletes: Vec<&PendingExport> = pending
                .iter()
                .filter(|p| p.connector_id == cloud && p.operation == ExportOperation::Delete)
                .collect();
            let deleted_cs: BTreeSet<i64> = deletes.iter().filter_map(|p| p.cs_id).collect();
            let deleted_anchors: BTreeSet<&str> =
                deletes.iter().filter_map(|p| p.created_anchor.as_deref()).collect();
            let objects: Vec<_> = store
                .cs_objects(cloud)
                .await?
                .into_iter()
                .filter(|o| o.state == "present" && (o.object_class == "user" || o.object_class == "group"))
                .collect();
            let anchors: Vec<&str> = objects.iter().map(|o| o.anchor.as_str()).collect();
            let ids = store.cs_ids_by_anchor(cloud, &anchors).await?;
            let id_list: Vec<i64> = ids.values().copied().collect();
            let links = store.links_by_cs(&id_list).await?;
            for o in &objects {
                let name = ["userPrincipalName", "displayName"]
                    .iter()
                    .find_map(|a| o.attributes.get(a).and_then(|v| v.first_text()).map(str::to_owned))
                    .unwrap_or_else(|| o.dn.clone());
                let id = ids.get(&o.anchor).copied();
                let link = id.and_then(|i| links.get(&i));
                let (state, detail) = match (link, id) {
                    (Some(l), _) if l.how == LinkHow::Provisioned => ("provisioned", l.detail.clone()),
                    (Some(l), _) => ("joined", l.detail.clone()),
                    (None, Some(i)) if deleted_cs.contains(&i) => ("held-delete", String::new()),
                    (None, _) if deleted_anchors.contains(o.anchor.as_str()) => {
                        ("held-delete", String::new())
                    }
                    (None, _) => ("cloud-only", String::new()),
                };
                facts.cloud.push(CloudObject { class: o.object_class.clone(), name, state, detail });
            }
        }
        for p in &pending {
            let object = match p.operation {
                ExportOperation::Delete => p.display.clone(),
                _ => p.mv_id.and_then(|m| names.get(&m).cloned()).unwrap_or_else(|| p.display.clone()),
            };
            let attributes = p
                .changes
                .iter()
                .map(|c| {
                    let show = |v: &Option<syncctl_core::AttrValues>| {
                        v.as_ref().map(|v| v.display_values().join("; ")).unwrap_or_default()
                    };
                    if p.operation == ExportOperation::Update && c.attribute != "members" {
                        format!("{}: {} -> {}", c.attribute, show(&c.old), show(&c.new))
                    } else {
                        c.attribute.clone()
                    }
                })
                .collect();
            facts.pending.push(Pending {
                operation: p.operation.as_str(),
                object,
                status: p.status.clone(),
                attributes,
                last_error: p.last_error.clone(),
            });
        }
        Ok(facts)
    }

    fn count(&self, class: &str, states: &[&str]) -> usize {
        self.cloud.iter().filter(|o| o.class == class && states.contains(&o.state)).count()
    }

    fn names(&self, class: Option<&str>, state: &str) -> Vec<String> {
        self.cloud
            .iter()
            .filter(|o| class.is_none_or(|c| o.class == c) && o.state == state)
            .map(|o| o.name.clone())
            .collect()
    }

    fn text(&self, assessment: &Report, dir: &Path) -> String {
        let mut s = step("What happened (from run history, the connector spaces and the metaverse)");
        // Provisioned.
        let users = self.count("user", &["provisioned", "held-delete"]);
        let groups = self.count("group", &["provisioned", "held-delete"]);
        let held_users = self.count("user", &["held-delete"]);
        let _ = writeln!(
            s,
            "Provisioned in the cloud: {users} users and {groups} groups created by syncctl{}",
            if held_users > 0 {
                format!(
                    " ({held_users} of these users are gone from the directory since: their deletes are held, below)"
                )
            } else {
                String::new()
            }
        );
        for o in self.cloud.iter().filter(|o| o.state == "joined") {
            let _ = writeln!(s, "  joined instead of created: {} {} ({})", o.class, o.name, o.detail);
        }
        let cloud_only = self.names(None, "cloud-only");
        if !cloud_only.is_empty() {
            let _ =
                writeln!(s, "  left alone (cloud-only, no on-premises source): {}", cloud_only.join(", "));
        }
        for (day, run, status, adds, updates, deletes, failed) in &self.exports {
            let _ = writeln!(
                s,
                "  day {day} export (run {run}): {status}: {adds} created, {updates} updated, {deletes} deleted, {failed} failed"
            );
        }
        // Warnings.
        let rewritten: Vec<&Entry> =
            self.warnings.iter().filter(|w| w.error.kind == "upn-rewritten").collect();
        let set_aside: Vec<&Entry> =
            self.warnings.iter().filter(|w| w.error.kind == "duplicate-attribute-set-aside").collect();
        let _ = writeln!(s, "\nUPNs rewritten: {} (warnings of the sync runs)", rewritten.len());
        for w in &rewritten {
            let _ = writeln!(s, "  {} ({})", w.message(), w.runs());
        }
        let _ = writeln!(s, "Duplicate values set aside: {}", set_aside.len());
        for w in &set_aside {
            let _ = writeln!(s, "  {} ({})", w.message(), w.runs());
        }
        for w in self
            .warnings
            .iter()
            .filter(|w| w.error.kind != "upn-rewritten" && w.error.kind != "duplicate-attribute-set-aside")
        {
            let _ = writeln!(s, "Warning {}: {} ({})", w.error.kind, w.message(), w.runs());
        }
        if !self.errors.is_empty() {
            let _ = writeln!(
                s,
                "Errors: {} objects (syncctl runs --errors RUN lists each run's)",
                self.errors.len()
            );
            for e in &self.errors {
                let _ = writeln!(s, "  {:<30} {} ({}, {})", e.error.kind, e.object(), e.profile, e.runs());
            }
        }
        // Readiness.
        let t = &assessment.totals;
        let _ = writeln!(
            s,
            "\nReadiness of the day-1 directory against the tenant as seeded (syncctl assess): {}: {} errors, {} warnings, {} notes over {} objects ({} skipped as IdFix skips them)",
            assessment.verdict.as_str().to_uppercase(),
            t.errors,
            t.warnings,
            t.infos,
            t.objects,
            t.skipped
        );
        let mut by_rule = assessment.by_rule.clone();
        by_rule.sort_by_key(|r| (r.severity, std::cmp::Reverse(r.count)));
        for r in &by_rule {
            let _ = writeln!(s, "  {:<8} {:<32} {:>3}  {}", r.severity.as_str(), r.rule, r.count, r.summary);
        }
        let a = &assessment.anchors;
        let _ = writeln!(
            s,
            "  anchor audit: {} hard match, {} soft match, {} new, {} conflict; HTML report: {}",
            a.hard_match,
            a.soft_match,
            a.new,
            a.conflict,
            dir.join(HTML_FILE).display()
        );
        // Pending exports.
        let _ = writeln!(s, "\nPending exports: {}", self.pending.len());
        if self.held.is_empty() {
            let _ = writeln!(s, "  no deletes are held by the deletion threshold");
        }
        for (connector, deletes, token) in &self.held {
            let _ = writeln!(
                s,
                "  {} deletes held for `{connector}` by the deletion threshold ({DELETION_THRESHOLD}): {}",
                deletes.len(),
                deletes.join(", ")
            );
            let others = self.pending.iter().filter(|p| p.operation != "delete").count();
            if others > 0 {
                let _ = writeln!(
                    s,
                    "  held with them (the export writes nothing while the threshold is exceeded):"
                );
                for p in self.pending.iter().filter(|p| p.operation != "delete") {
                    let state = match (&p.status[..], &p.last_error) {
                        ("failed", Some(e)) => format!(" [failed: {}]", first_words(e)),
                        ("pending", _) => String::new(),
                        (other, _) => format!(" [{other}]"),
                    };
                    let _ =
                        writeln!(s, "    {} {}: {}{state}", p.operation, p.object, p.attributes.join(", "));
                }
            }
            let _ = writeln!(
                s,
                "  approve: syncctl --config {} export --approve-deletes {token}",
                sh(&dir.join(CONFIG_FILE))
            );
        }
        s
    }

    fn json(&self, assessment: &Report) -> Value {
        let objects = |state: &str| -> Vec<Value> {
            self.cloud
                .iter()
                .filter(|o| o.state == state)
                .map(|o| json!({"class": o.class, "name": o.name, "detail": o.detail}))
                .collect()
        };
        let entry = |e: &Entry| {
            json!({"run_id": e.run_id, "runs": e.runs, "profile": e.profile, "level": e.error.level.as_str(),
                   "kind": e.error.kind, "object": e.object(), "dn": e.error.dn, "anchor": e.error.anchor,
                   "message": e.error.message})
        };
        json!({
            "provisioned": {
                "users": self.count("user", &["provisioned", "held-delete"]),
                "groups": self.count("group", &["provisioned", "held-delete"]),
                "users_held_for_deletion": self.count("user", &["held-delete"]),
            },
            "joined": objects("joined"),
            "cloud_only": objects("cloud-only"),
            "exports": self.exports.iter().map(|(day, run, status, adds, updates, deletes, failed)| json!({
                "day": day, "run_id": run, "status": status, "adds": adds, "updates": updates, "deletes": deletes,
                "failed": failed,
            })).collect::<Vec<_>>(),
            "upns_rewritten": self.warnings.iter().filter(|w| w.error.kind == "upn-rewritten").map(entry).collect::<Vec<_>>(),
            "values_set_aside": self.warnings.iter().filter(|w| w.error.kind == "duplicate-attribute-set-aside").map(entry).collect::<Vec<_>>(),
            "warnings": self.warnings.iter().map(entry).collect::<Vec<_>>(),
            "errors": self.errors.iter().map(entry).collect::<Vec<_>>(),
            "readiness": {
                "verdict": assessment.verdict.as_str(),
                "errors": assessment.totals.errors,
                "warnings": assessment.totals.warnings,
                "infos": assessment.totals.infos,
                "objects": assessment.totals.objects,
                "by_rule": assessment.by_rule.iter().map(|r| json!({"rule": r.rule, "severity": r.severity.as_str(), "count": r.count})).collect::<Vec<_>>(),
                "anchors": {"hard_match": assessment.anchors.hard_match, "soft_match": assessment.anchors.soft_match,
                            "new": assessment.anchors.new, "conflict": assessment.anchors.conflict},
            },
            "pending_exports": self.pending.iter().map(|p| json!({
                "operation": p.operation, "object": p.object, "status": p.status, "attributes": p.attributes,
                "last_error": p.last_error,
            })).collect::<Vec<_>>(),
            "held_deletes": self.held.iter().map(|(c, d, t)| json!({"connector": c, "deletes": d, "token": t})).collect::<Vec<_>>(),
        })
    }
}

/// The first clause of an error message (the kind and the object), for one line.
fn first_words(message: &str) -> String {
    let short: String = message.chars().take(90).collect();
    if short.len() < message.len() { format!("{short}...") } else { short }
}

/// One entry per (kind, object): the latest run's, with every run that reported it.
fn latest_per_object(entries: Vec<Entry>) -> Vec<Entry> {
    let mut by: BTreeMap<(String, String), Entry> = BTreeMap::new();
    for mut e in entries {
        let key = (e.error.kind.clone(), e.error.anchor.clone().unwrap_or_else(|| e.object()));
        if let Some(earlier) = by.remove(&key) {
            let mut runs = earlier.runs;
            runs.extend(e.runs);
            e.runs = runs;
        }
        by.insert(key, e);
    }
    let mut out: Vec<Entry> = by.into_values().collect();
    out.sort_by(|a, b| (a.run_id, &a.error.kind).cmp(&(b.run_id, &b.error.kind)));
    out
}

/// What people call the metaverse objects the pending exports come from.
async fn mv_names(store: &Store, pending: &[PendingExport]) -> Result<HashMap<i64, String>, Failure> {
    let ids: Vec<i64> = pending.iter().filter_map(|p| p.mv_id).collect();
    let mut out = HashMap::new();
    for (id, o) in store.mv_by_ids(&ids).await? {
        if let Some(name) = ["userPrincipalName", "displayName"]
            .iter()
            .find_map(|a| o.attributes.get(a).and_then(|v| v.first_text()).map(str::to_owned))
        {
            out.insert(id, name);
        }
    }
    Ok(out)
}

/// The commands to run next, each with why.
fn next_steps(dir: &Path, port: u16, day1: &CycleOutcome, day2: &CycleOutcome) -> Vec<(String, String)> {
    let exe = syncctl_command();
    let config = sh(&dir.join(CONFIG_FILE));
    let ad_sync =
        day1.steps.iter().find(|s| s.step == "sync" && s.connector == AD_CONNECTOR).map(|s| s.run_id);
    let mut out = vec![
        (
            "every pending export, attribute by attribute (the rename, the held deletes)".to_owned(),
            format!("{exe} --config {config} export --preview"),
        ),
        ("run history: every run of both cycles".to_owned(), format!("{exe} --config {config} runs")),
    ];
    if let Some(run) = ad_sync {
        out.push((
            "the per-object warnings and errors of the day-1 sync of the directory".to_owned(),
            format!("{exe} --config {config} runs --errors {run}"),
        ));
    }
    out.push((
        "one object: as the connector space holds it, its metaverse object, the rule behind each attribute"
            .to_owned(),
        format!("{exe} --config {config} show {}", sh_str(RENAMED_DN)),
    ));
    out.push((
        "the readiness report of the day-1 directory against the tenant as seeded, with the fixes as LDIF"
            .to_owned(),
        format!(
            "{exe} assess --ldif {} --tenant {} --html {} --fix-ldif {}",
            sh(&dir.join(DAY1_FILE)),
            sh(&dir.join(TENANT_FILE)),
            sh(&dir.join(HTML_FILE)),
            sh(&dir.join("assess-fix.ldif"))
        ),
    ));
    let port_arg = if port == DEFAULT_PORT { String::new() } else { format!(" --port {port}") };
    out.push((
        "go on against the tenant: serve it again (in another terminal, until Ctrl-C) ...".to_owned(),
        format!("{exe} demo --dir {}{port_arg} --serve", sh(dir)),
    ));
    let (emulator, built) = emulator_command();
    out.push((
        if built {
            "... or with the emulator's own binary".to_owned()
        } else {
            "... or with the emulator's own binary, once built (cargo build --release -p syncctl-graph-emulator)"
                .to_owned()
        },
        format!(
            "SYNCCTL_EMULATOR_CLIENT_SECRET=\"$(cat {})\" {emulator} --listen 127.0.0.1:{port} --state {} --tenant {TENANT} --verified-domain {VERIFIED_DOMAIN}",
            sh(&dir.join(SECRET_FILE)),
            sh(&dir.join(STATE_FILE))
        ),
    ));
    if let Some(h) = day2.held.first() {
        out.push((
            format!(
                "then release exactly the {} reviewed deletes (the exports held with them go too), and run a cycle that confirms them",
                h.deletes.len()
            ),
            format!("{exe} --config {config} export --approve-deletes {}", h.token),
        ));
    } else {
        out.push(("then export what is pending".to_owned(), format!("{exe} --config {config} export")));
    }
    out.push((
        "a delta cycle: its imports confirm what the export wrote".to_owned(),
        format!("{exe} --config {config} cycle"),
    ));
    out
}

/// How to call this syncctl: `syncctl` when that is the one on PATH, else its path.
fn syncctl_command() -> String {
    let Ok(exe) = std::env::current_exe() else { return "syncctl".into() };
    let exe = exe.canonicalize().unwrap_or(exe);
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("syncctl").canonicalize().is_ok_and(|c| c == exe) {
                return "syncctl".into();
            }
        }
    }
    sh(&exe)
}

/// The emulator binary beside this syncctl, and whether it is there (`cargo build --release
/// -p syncctl-graph-emulator` puts it beside a release syncctl); its bare name when syncctl
/// itself is on PATH.
fn emulator_command() -> (String, bool) {
    let exe = syncctl_command();
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.canonicalize().ok())
        .and_then(|e| e.parent().map(|d| d.join("syncctl-graph-emulator")));
    match beside {
        Some(p) if exe != "syncctl" => {
            let exists = p.exists();
            (sh(&p), exists)
        }
        Some(p) => ("syncctl-graph-emulator".into(), p.exists()),
        None => ("syncctl-graph-emulator".into(), false),
    }
}

/// A path as a shell word.
fn sh(path: &Path) -> String {
    sh_str(&path.display().to_string())
}

/// A shell word: as is when it is safe, else in single quotes.
fn sh_str(text: &str) -> String {
    if !text.is_empty()
        && text.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '=' | ':' | '@' | ',' | '+')
        })
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_samples_hold_what_the_demo_says() {
        // The joined user's ImmutableID is her objectGUID in the sample.
        let alice = DAY1_LDIF
            .split("\n\n")
            .find(|r| r.contains("userPrincipalName: alice@corp.example.com"))
            .unwrap();
        assert!(alice.contains(&format!("objectGUID:: {JOINED_IMMUTABLE_ID}")), "{alice}");
        // Day 2 renames Grace Green to RENAMED_DN and drops the Sales users.
        assert!(DAY1_LDIF.contains("dn: CN=Grace Green,OU=Finance,OU=Staff,DC=corp,DC=example,DC=com"));
        assert!(DAY2_LDIF.contains(&format!("dn: {RENAMED_DN}")));
        let sales =
            |t: &str| t.lines().filter(|l| l.starts_with("dn: CN=") && l.contains(",OU=Sales,")).count();
        assert_eq!((sales(DAY1_LDIF), sales(DAY2_LDIF)), (6, 0));
        const { assert!(6 > DELETION_THRESHOLD) };
        // The embedded files are the shipped ones.
        assert!(DAY1_LDIF.contains("syncctl demo, day 1") && DAY2_LDIF.contains("syncctl demo, day 2"));
    }

    #[test]
    fn the_config_is_valid_and_keeps_the_secret_out() {
        let plan = config::parse(&config_text(18777), Path::new("/tmp/d/syncctl.toml")).unwrap();
        assert_eq!(plan.connectors.len(), 2);
        assert_eq!(plan.sync.deletion_threshold, Some(DELETION_THRESHOLD));
        assert_eq!(demo_port(&plan).unwrap(), 18777);
        let cloud = plan.connector(CLOUD_CONNECTOR).unwrap();
        assert_eq!(cloud.files, vec![PathBuf::from("/tmp/d/graph-client-secret")]);
        let ad = plan.connector(AD_CONNECTOR).unwrap();
        assert_eq!(ad.files, vec![PathBuf::from("/tmp/d/directory.ldif")]);
    }

    #[test]
    fn secrets_are_random_and_shell_words_are_quoted() {
        let (a, b) = (random_secret(), random_secret());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(sh_str("/tmp/syncctl-demo/syncctl.toml"), "/tmp/syncctl-demo/syncctl.toml");
        assert_eq!(sh_str("CN=Grace Hopper,OU=x"), "'CN=Grace Hopper,OU=x'");
        assert_eq!(sh_str("it's"), "'it'\\''s'");
        assert_eq!(form_encode("https://x/.default"), "https%3A%2F%2Fx%2F.default");
    }
}
