//! # syncctl-tests: the harness of the end-to-end tests
//!
//! The tests in `e2e/` run against real peers (a Samba AD DC and an OpenLDAP server on
//! loopback) that `tests/peers/start-all.sh` starts; they read the peers' addresses and
//! credentials from the `SYNCCTL_TEST_*` environment variables that script writes to `env.sh`.
//! A peer that is not configured is a test failure with a message saying how to start it, never
//! a silent pass. `bash tests/run.sh` does all of that.
//!
//! This crate owns only test plumbing: reading the peer environment, an administrator LDAP
//! session to create and change test objects, unique names so that tests can share one Samba,
//! running the real `ldapsearch`, and small LDIF reading for the shipped fixtures. It must not be used by the product.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cloud;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Mod};
use syncctl_connector_ldap::{LdapConfig, LdapConnector};
use syncctl_connector_ldif::{LdifConfig, LdifConnector};
use syncctl_core::{ImportMode, SystemClock};
use syncctl_engine::{ImportOptions, ImportReport, NoProgress};
use syncctl_store::Store;

/// One peer's coordinates.
#[derive(Clone, Debug)]
pub struct Peer {
    pub url: String,
    pub ldaps_url: String,
    pub base: String,
    pub bind_dn: String,
    pub password_file: PathBuf,
    pub ca: PathBuf,
}

impl Peer {
    pub fn password(&self) -> String {
        std::fs::read_to_string(&self.password_file).unwrap().lines().next().unwrap().to_owned()
    }
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the end-to-end tests need the real peers. Run `bash tests/run.sh`, or start them with \
             `tests/peers/start-all.sh` and `. /tmp/syncctl-peers/env.sh` before `cargo test`."
        )
    })
}

/// The Samba AD DC.
pub fn samba() -> Peer {
    Peer {
        url: var("SYNCCTL_TEST_SAMBA_URL"),
        ldaps_url: var("SYNCCTL_TEST_SAMBA_LDAPS_URL"),
        base: var("SYNCCTL_TEST_SAMBA_BASE"),
        bind_dn: var("SYNCCTL_TEST_SAMBA_BIND_DN"),
        password_file: var("SYNCCTL_TEST_SAMBA_PASSWORD_FILE").into(),
        ca: var("SYNCCTL_TEST_SAMBA_CA").into(),
    }
}

/// The Samba account without the DirSync right: (DN, password file).
pub fn samba_nodirsync() -> (String, PathBuf) {
    (var("SYNCCTL_TEST_SAMBA_NODIRSYNC_DN"), var("SYNCCTL_TEST_SAMBA_NODIRSYNC_PASSWORD_FILE").into())
}

/// The OpenLDAP server.
pub fn slapd() -> Peer {
    Peer {
        url: var("SYNCCTL_TEST_SLAPD_URL"),
        ldaps_url: var("SYNCCTL_TEST_SLAPD_LDAPS_URL"),
        base: var("SYNCCTL_TEST_SLAPD_BASE"),
        bind_dn: var("SYNCCTL_TEST_SLAPD_BIND_DN"),
        password_file: var("SYNCCTL_TEST_SLAPD_PASSWORD_FILE").into(),
        ca: var("SYNCCTL_TEST_SLAPD_CA").into(),
    }
}

/// A private OpenLDAP server started by `tests/peers/slapd.sh` in its own directory and on its
/// own ports, for tests that kill it. Stopped when dropped.
pub struct PrivateSlapd {
    pub peer: Peer,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PrivateSlapd {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![
            ("SYNCCTL_SLAPD_DIR".to_owned(), dir.path().join("slapd").display().to_string()),
            ("SYNCCTL_SLAPD_PORT".to_owned(), free_port().to_string()),
            ("SYNCCTL_SLAPD_LDAPS_PORT".to_owned(), free_port().to_string()),
        ];
        let mut me = Self { peer: slapd(), dir, env };
        me.run("start");
        let exports = me.run("env");
        let get = |name: &str| {
            exports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches('\'').to_owned())
                .unwrap_or_else(|| panic!("slapd.sh env printed no {name}: {exports}"))
        };
        me.peer = Peer {
            url: get("SYNCCTL_TEST_SLAPD_URL"),
            ldaps_url: get("SYNCCTL_TEST_SLAPD_LDAPS_URL"),
            base: get("SYNCCTL_TEST_SLAPD_BASE"),
            bind_dn: get("SYNCCTL_TEST_SLAPD_BIND_DN"),
            password_file: get("SYNCCTL_TEST_SLAPD_PASSWORD_FILE").into(),
            ca: get("SYNCCTL_TEST_SLAPD_CA").into(),
        };
        me
    }

    /// Runs `tests/peers/slapd.sh CMD` for this server; returns its standard output.
    pub fn run(&self, cmd: &str) -> String {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/slapd.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg(cmd)
            .envs(self.env.iter().cloned())
            .output()
            .unwrap();
        assert!(out.status.success(), "slapd.sh {cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Kills the server with SIGKILL.
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("slapd/run/slapd.pid")).unwrap();
        let status = std::process::Command::new("kill").args(["-9", pid.trim()]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for PrivateSlapd {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/slapd.sh");
        let _ = std::process::Command::new("bash")
            .arg(script)
            .arg("stop")
            .envs(self.env.iter().cloned())
            .output();
    }
}

/// The `syncctl` binary of this workspace (built by `cargo test --workspace --all-targets` and
/// by `tests/run.sh`).
pub fn syncctl_bin() -> PathBuf {
    let path = assert_cmd::cargo::cargo_bin("syncctl");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p syncctl` (bash tests/run.sh does) before this test",
        path.display()
    );
    path
}

/// A name no other test (or earlier run against the same peer) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    #[allow(clippy::disallowed_methods)]
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 100_000_000;
    format!("{prefix}{}x{t}x{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// A name of at most `max` characters for attributes with a length limit such as
/// sAMAccountName: `prefix` (when it fits in half of `max`) followed by base-36 digits of a hash,
/// keyed at random, of [`unique`]`(prefix)`. The digits stand for the whole of `unique`, process id included, so two
/// test processes sharing the one Samba cannot collide the way two tails of the same string did
/// (the clock's last digits and the per-process counter coincided across processes in CI: a
/// 1-in-10^4 chance per pair that came up). At least half of `max` is digits: for an 8-character
/// name with a 3-letter prefix, a collision chance of about 10^-8 per pair.
pub fn unique_tail(prefix: &str, max: usize) -> String {
    use std::hash::{BuildHasher, Hash, Hasher};
    let u = unique(prefix);
    // Random keys: test processes in separate containers can share a PID as well as a millisecond.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    u.hash(&mut h);
    let mut n = h.finish();
    let keep = if prefix.len() * 2 <= max { prefix } else { "" };
    let mut out = keep.to_string();
    while out.len() < max {
        let d = (n % 36) as u32;
        out.push(char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            // A 64-bit hash gives 12 base-36 digits; longer names take more from a rehash.
            d.hash(&mut h);
            n = h.finish();
        }
    }
    out
}

/// An administrator session over LDAPS, verified against the peer's CA.
pub async fn admin(peer: &Peer) -> Ldap {
    let pem = std::fs::read(&peer.ca).unwrap();
    let roots = rustls_roots(&pem);
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let settings = LdapConnSettings::new().set_config(Arc::new(cfg));
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &peer.ldaps_url).await.unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(&peer.bind_dn, &peer.password()).await.unwrap().success().unwrap();
    ldap
}

fn rustls_roots(pem: &[u8]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::io::Cursor::new(pem)) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// Adds an entry; attributes as (name, values).
pub async fn add(ldap: &mut Ldap, dn: &str, attrs: &[(&str, &[&str])]) {
    let attrs: Vec<(&str, HashSet<&str>)> =
        attrs.iter().map(|(k, v)| (*k, v.iter().copied().collect())).collect();
    ldap.add(dn, attrs).await.unwrap().success().unwrap_or_else(|e| panic!("add {dn}: {e}"));
}

/// Adds an entry from raw (possibly binary) values.
pub async fn add_raw(ldap: &mut Ldap, dn: &str, attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)>) {
    ldap.add(dn, attrs).await.unwrap().success().unwrap_or_else(|e| panic!("add {dn}: {e}"));
}

/// Replaces one attribute.
pub async fn replace(ldap: &mut Ldap, dn: &str, attr: &str, values: &[&str]) {
    let m = vec![Mod::Replace(attr, values.iter().copied().collect::<HashSet<_>>())];
    ldap.modify(dn, m).await.unwrap().success().unwrap_or_else(|e| panic!("modify {dn}: {e}"));
}

/// Adds or removes one value.
pub async fn add_value(ldap: &mut Ldap, dn: &str, attr: &str, value: &str) {
    let m = vec![Mod::Add(attr, HashSet::from([value]))];
    ldap.modify(dn, m).await.unwrap().success().unwrap_or_else(|e| panic!("modify {dn}: {e}"));
}
pub async fn remove_value(ldap: &mut Ldap, dn: &str, attr: &str, value: &str) {
    let m = vec![Mod::Delete(attr, HashSet::from([value]))];
    ldap.modify(dn, m).await.unwrap().success().unwrap_or_else(|e| panic!("modify {dn}: {e}"));
}

/// Renames or moves.
pub async fn rename(ldap: &mut Ldap, dn: &str, new_rdn: &str, new_parent: Option<&str>) {
    ldap.modifydn(dn, new_rdn, true, new_parent)
        .await
        .unwrap()
        .success()
        .unwrap_or_else(|e| panic!("rename {dn}: {e}"));
}

/// Deletes.
pub async fn delete(ldap: &mut Ldap, dn: &str) {
    ldap.delete(dn).await.unwrap().success().unwrap_or_else(|e| panic!("delete {dn}: {e}"));
}

/// A connector config from TOML text.
pub fn config(toml_text: &str) -> LdapConfig {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("test config: {e}\n{toml_text}"))
}

/// An AD connector config over LDAPS for `base`.
pub fn ad_config(peer: &Peer, base: &str, extra: &str) -> LdapConfig {
    config(&format!(
        "flavor = \"ad\"\nurl = \"{}\"\nca_file = \"{}\"\nbind_dn = \"{}\"\npassword_file = \"{}\"\nbase_dn = \"{}\"\n{extra}",
        peer.ldaps_url,
        peer.ca.display(),
        peer.bind_dn,
        peer.password_file.display(),
        base
    ))
}

/// An OpenLDAP connector config over StartTLS for `base`.
pub fn openldap_config(peer: &Peer, base: &str, extra: &str) -> LdapConfig {
    config(&format!(
        "flavor = \"openldap\"\nurl = \"{}\"\n{}ca_file = \"{}\"\nbind_dn = \"{}\"\npassword_file = \"{}\"\nbase_dn = \"{}\"\n{extra}",
        peer.url,
        if extra.contains("security") { "" } else { "security = \"starttls\"\n" },
        peer.ca.display(),
        peer.bind_dn,
        peer.password_file.display(),
        base
    ))
}

/// Runs one import.
pub async fn import(store: &Store, name: &str, config: &LdapConfig, mode: ImportMode) -> ImportReport {
    import_with(store, name, config, mode, &NoProgress).await
}

/// Runs one import, telling `progress` after each batch.
pub async fn import_with(
    store: &Store,
    name: &str,
    config: &LdapConfig,
    mode: ImportMode,
    progress: &dyn syncctl_engine::ImportProgress,
) -> ImportReport {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("SYNCCTL_TEST_LOG"))
        .with_test_writer()
        .try_init();
    let mut c = LdapConnector::new(name, config.clone()).unwrap();
    let kind = c.kind();
    syncctl_engine::run_import(store, &mut c, kind, mode, &ImportOptions::default(), &SystemClock, progress)
        .await
        .unwrap()
}

/// Runs one import of an LDIF connector.
pub async fn import_ldif(store: &Store, name: &str, config: &LdifConfig, mode: ImportMode) -> ImportReport {
    let mut c = LdifConnector::new(name, config.clone()).unwrap();
    let kind = c.kind();
    syncctl_engine::run_import(
        store,
        &mut c,
        kind,
        mode,
        &ImportOptions::default(),
        &SystemClock,
        &NoProgress,
    )
    .await
    .unwrap()
}

/// Runs the real `ldapsearch` against `peer` over LDAPS (verified, simple bind as the
/// administrator), with `args` after the connection options; returns what it printed.
pub fn ldapsearch(peer: &Peer, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("ldapsearch")
        .env("LDAPTLS_CACERT", &peer.ca)
        .args(["-x", "-H", &peer.ldaps_url, "-D", &peer.bind_dn, "-y"])
        .arg(&peer.password_file)
        .args(args)
        .output()
        .expect("ldapsearch (ldap-utils) must be installed");
    assert!(out.status.success(), "ldapsearch {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The base64 objectGUID that the real `ldapsearch` prints for `dn` (over LDAPS, verified).
pub fn ldapsearch_object_guid(peer: &Peer, dn: &str) -> String {
    let out = std::process::Command::new("ldapsearch")
        .env("LDAPTLS_CACERT", &peer.ca)
        .args(["-LLL", "-o", "ldif-wrap=no", "-x", "-H", &peer.ldaps_url, "-D", &peer.bind_dn, "-y"])
        .arg(&peer.password_file)
        .args(["-s", "base", "-b", dn, "(objectClass=*)", "objectGUID"])
        .output()
        .expect("ldapsearch (ldap-utils) must be installed");
    assert!(out.status.success(), "ldapsearch {dn}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("objectGUID:: "))
        .unwrap_or_else(|| panic!("no objectGUID for {dn} in: {text}"))
        .to_owned()
}

/// The entryUUID that the real `ldapsearch` prints for `dn`.
pub fn ldapsearch_entry_uuid(peer: &Peer, dn: &str) -> String {
    let out = std::process::Command::new("ldapsearch")
        .env("LDAPTLS_CACERT", &peer.ca)
        .args(["-LLL", "-o", "ldif-wrap=no", "-x", "-ZZ", "-H", &peer.url, "-D", &peer.bind_dn, "-y"])
        .arg(&peer.password_file)
        .args(["-s", "base", "-b", dn, "(objectClass=*)", "entryUUID"])
        .output()
        .expect("ldapsearch (ldap-utils) must be installed");
    assert!(out.status.success(), "ldapsearch {dn}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("entryUUID: "))
        .unwrap_or_else(|| panic!("no entryUUID in {text}"))
        .to_owned()
}

/// One record of an LDIF content file: DN and (attribute, value) pairs, base64 values decoded.
#[derive(Clone, Debug)]
pub struct LdifRecord {
    pub dn: String,
    pub attrs: Vec<(String, Vec<u8>)>,
}

/// Reads the simple LDIF of the shipped fixtures (comments, `::` base64, folded lines).
pub fn read_fixture_ldif(text: &str) -> Vec<LdifRecord> {
    let mut unfolded: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(' ') {
            if let Some(last) = unfolded.last_mut() {
                last.push_str(rest);
            }
        } else {
            unfolded.push(line.to_owned());
        }
    }
    let mut records = Vec::new();
    let mut current: Option<LdifRecord> = None;
    for line in unfolded {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            records.extend(current.take());
            continue;
        }
        let (name, value) = if let Some((n, v)) = line.split_once(":: ") {
            (n.to_owned(), base64::engine::general_purpose::STANDARD.decode(v.trim()).unwrap())
        } else {
            let (n, v) = line.split_once(": ").unwrap();
            (n.to_owned(), v.as_bytes().to_vec())
        };
        if name.eq_ignore_ascii_case("dn") {
            records.extend(current.take());
            current = Some(LdifRecord { dn: String::from_utf8(value).unwrap(), attrs: vec![] });
        } else if let Some(r) = current.as_mut() {
            r.attrs.push((name, value));
        }
    }
    records.extend(current);
    records
}

/// The CS objects of a connector as comparable (anchor, dn, state, attributes JSON) rows.
pub async fn snapshot(store: &Store, connector: &str) -> Vec<(String, String, String, String)> {
    let Some(id) = store.connector_id(connector).await.unwrap() else {
        return vec![];
    };
    store
        .cs_objects(id)
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.anchor, o.dn, o.state, serde_json::to_string(&o.attributes).unwrap()))
        .collect()
}

/// [`snapshot`] without the tombstones.
pub async fn present_snapshot(store: &Store, connector: &str) -> Vec<(String, String, String, String)> {
    snapshot(store, connector).await.into_iter().filter(|r| r.2 == "present").collect()
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium (the HTML report's browser test)

/// Debian's Chromium, installed by `tests/peers/chromium.sh` (which `tests/run.sh` runs).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The Chromium binary; a test failure saying how to install it when it is missing.
pub fn chromium() -> PathBuf {
    let path = PathBuf::from(CHROMIUM);
    assert!(
        path.exists(),
        "{CHROMIUM} is missing: the browser tests need Debian's chromium package. Install it with \
         `bash tests/peers/chromium.sh` (bash tests/run.sh does)."
    );
    path
}

/// A `file://` URL for an absolute path, with `fragment` (without `#`) appended when not empty.
pub fn file_url(path: &std::path::Path, fragment: &str) -> String {
    let path = std::path::absolute(path).unwrap();
    let mut url = String::from("file://");
    for b in path.to_str().unwrap().bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    if !fragment.is_empty() {
        url.push('#');
        url.push_str(fragment);
    }
    url
}

/// Runs headless Chromium on `url` with a fresh profile, no network service traffic of its own,
/// and 5 s of virtual time for the page's scripts; `extra` are the output options
/// (`--dump-dom`, `--screenshot=...`). Killed after 120 s (a hung browser fails the test rather
/// than the run). Returns standard output.
pub fn chromium_run(url: &str, extra: &[&str]) -> String {
    let chromium = chromium();
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("timeout")
        .args(["--kill-after=10", "120"])
        .arg(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {extra:?} {url} failed ({}): {}",
        chromium.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The DOM of `url` after its scripts ran (`--dump-dom`).
pub fn chromium_dump_dom(url: &str) -> String {
    let dom = chromium_run(url, &["--dump-dom"]);
    assert!(dom.contains("</html>"), "chromium dumped no document for {url}: {dom}");
    dom
}

/// A PNG screenshot of `url` at `width`x`height` written to `png`.
pub fn chromium_screenshot(url: &str, png: &std::path::Path, width: u32, height: u32) {
    if let Some(dir) = png.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let _ = std::fs::remove_file(png);
    chromium_run(
        url,
        &[&format!("--screenshot={}", png.display()), &format!("--window-size={width},{height}")],
    );
    assert!(png.exists(), "chromium wrote no screenshot at {}", png.display());
}

/// `target/test-artifacts` of this workspace (or of `CARGO_TARGET_DIR`): files that tests leave
/// for a human to look at (screenshots).
pub fn test_artifacts_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    };
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The workspace root (where `examples/` is).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Creates `OU=<name>` under `parent` and returns its DN.
pub async fn make_ou(ldap: &mut Ldap, parent: &str, name: &str) -> String {
    let dn = format!("OU={name},{parent}");
    add(ldap, &dn, &[("objectClass", &["organizationalUnit"]), ("ou", &[name])]).await;
    dn
}

/// Loads the shipped AD sample (`records` of `tests/fixtures/ad-sample.ldif`) into `ou` instead of
/// `CN=Users`: member references follow, every sAMAccountName gets a unique suffix (Samba keeps
/// them unique), and with a non-empty `upn_tag` every userPrincipalName gets it before the `@`
/// (`carol smith<tag>@corp.example.com`), so that several copies can live in one Samba. Returns
/// the DNs in file order.
pub async fn load_ad_sample(
    ldap: &mut Ldap,
    peer: &Peer,
    ou: &str,
    records: &[LdifRecord],
    upn_tag: &str,
) -> Vec<String> {
    let users_dn = format!("CN=Users,{}", peer.base);
    let mut dns = Vec::new();
    for r in records {
        let dn = r.dn.replace(&users_dn, ou);
        let mut grouped: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = Vec::new();
        for (k, v) in &r.attrs {
            let mut v = v.clone();
            if k == "member" {
                v = String::from_utf8(v).unwrap().replace(&users_dn, ou).into_bytes();
            }
            if k == "sAMAccountName" {
                v = format!("{}{}", String::from_utf8(v).unwrap(), unique_tail("", 8)).into_bytes();
            }
            if k == "userPrincipalName" && !upn_tag.is_empty() {
                v = String::from_utf8(v).unwrap().replacen('@', &format!("{upn_tag}@"), 1).into_bytes();
            }
            match grouped.iter_mut().find(|(g, _)| *g == k.as_bytes()) {
                Some((_, set)) => {
                    set.insert(v);
                }
                None => grouped.push((k.clone().into_bytes(), HashSet::from([v]))),
            }
        }
        add_raw(ldap, &dn, grouped).await;
        dns.push(dn);
    }
    dns
}

/// Runs the real `ldapmodify` (ldap-utils) with `file` against the peer over LDAPS; returns its
/// stdout, failing the test with stderr when it fails.
pub fn ldapmodify(peer: &Peer, file: &std::path::Path) -> String {
    let out = std::process::Command::new("ldapmodify")
        .env("LDAPTLS_CACERT", &peer.ca)
        .args(["-x", "-H", &peer.ldaps_url, "-D", &peer.bind_dn, "-y"])
        .arg(&peer.password_file)
        .arg("-f")
        .arg(file)
        .output()
        .expect("ldapmodify (ldap-utils) must be installed");
    assert!(
        out.status.success(),
        "ldapmodify -f {}: {}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The SMTP peer (aiosmtpd, tests/peers/smtp.sh)

/// The SMTP server's coordinates.
#[derive(Clone, Debug)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub tls_port: u16,
    pub user: String,
    pub password_file: PathBuf,
    pub ca: PathBuf,
    /// Where it stores what it accepts (`<n>.eml` with `<n>.json` beside it).
    pub maildir: PathBuf,
}

impl Smtp {
    pub fn password(&self) -> String {
        std::fs::read_to_string(&self.password_file).unwrap().trim().to_owned()
    }

    /// Every message stored so far.
    pub fn messages(&self) -> Vec<StoredMail> {
        let Ok(entries) = std::fs::read_dir(&self.maildir) else { return vec![] };
        let mut out: Vec<StoredMail> = entries
            .filter_map(|e| {
                let path = e.unwrap().path();
                (path.extension().is_some_and(|x| x == "eml")).then(|| StoredMail::read(&path))
            })
            .collect();
        out.sort_by(|a, b| a.file.cmp(&b.file));
        out
    }

    /// The messages stored for a recipient containing `token`.
    pub fn messages_to(&self, token: &str) -> Vec<StoredMail> {
        self.messages().into_iter().filter(|m| m.rcpt_tos.iter().any(|r| r.contains(token))).collect()
    }
}

/// One message as the SMTP peer stored it.
#[derive(Clone, Debug)]
pub struct StoredMail {
    pub file: PathBuf,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub auth_user: Option<String>,
    pub tls: bool,
    pub raw: String,
}

impl StoredMail {
    fn read(eml: &std::path::Path) -> Self {
        let raw = String::from_utf8_lossy(&std::fs::read(eml).unwrap()).into_owned();
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(eml.with_extension("json")).unwrap()).unwrap();
        Self {
            file: eml.to_owned(),
            mail_from: meta["mail_from"].as_str().unwrap_or_default().to_owned(),
            rcpt_tos: meta["rcpt_tos"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            auth_user: meta["auth_user"].as_str().map(str::to_owned),
            tls: meta["tls"].as_bool().unwrap_or(false),
            raw,
        }
    }

    /// A header's value (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next().unwrap_or("").replace("\r\n ", " ");
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            k.eq_ignore_ascii_case(name).then(|| v.to_owned())
        })
    }
}

/// The shared SMTP server that `tests/peers/start-all.sh` started.
pub fn smtp() -> Smtp {
    let port = |name: &str| var(name).parse().unwrap_or_else(|e| panic!("{name}: {e}"));
    Smtp {
        host: var("SYNCCTL_TEST_SMTP_HOST"),
        port: port("SYNCCTL_TEST_SMTP_PORT"),
        tls_port: port("SYNCCTL_TEST_SMTP_TLS_PORT"),
        user: var("SYNCCTL_TEST_SMTP_USER"),
        password_file: var("SYNCCTL_TEST_SMTP_PASSWORD_FILE").into(),
        ca: var("SYNCCTL_TEST_SMTP_CA").into(),
        maildir: var("SYNCCTL_TEST_SMTP_MAILDIR").into(),
    }
}

/// A private SMTP server started by `tests/peers/smtp.sh` in its own directory and on its own
/// ports (its own CA and password), for tests that stop it or change its mode. Stopped when
/// dropped.
pub struct PrivateSmtp {
    pub smtp: Smtp,
    dir: tempfile::TempDir,
    ports: (u16, u16),
}

impl PrivateSmtp {
    /// Starts one in `mode` (`starttls`, `notls`, `reject`) with `delay_ms` before each stored
    /// message.
    pub fn start(mode: &str, delay_ms: u64) -> Self {
        // The shared server must exist: a private one is started by the same script.
        let _ = smtp();
        let dir = tempfile::tempdir().unwrap();
        let mut me = Self { smtp: smtp(), dir, ports: (free_port(), free_port()) };
        me.restart(mode, delay_ms);
        me
    }

    fn env(&self, mode: &str, delay_ms: u64) -> Vec<(String, String)> {
        vec![
            ("SYNCCTL_SMTP_DIR".to_owned(), self.dir.path().join("smtp").display().to_string()),
            ("SYNCCTL_SMTP_PORT".to_owned(), self.ports.0.to_string()),
            ("SYNCCTL_SMTP_TLS_PORT".to_owned(), self.ports.1.to_string()),
            ("SYNCCTL_SMTP_MODE".to_owned(), mode.to_owned()),
            ("SYNCCTL_SMTP_DELAY_MS".to_owned(), delay_ms.to_string()),
        ]
    }

    /// (Re)starts it in `mode` (same ports, certificate, password and messages).
    pub fn restart(&mut self, mode: &str, delay_ms: u64) {
        let exports = self.run("start", mode, delay_ms);
        let get = |name: &str| {
            exports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches('\'').to_owned())
                .unwrap_or_else(|| panic!("smtp.sh env printed no {name}: {exports}"))
        };
        self.smtp = Smtp {
            host: get("SYNCCTL_TEST_SMTP_HOST"),
            port: get("SYNCCTL_TEST_SMTP_PORT").parse().unwrap(),
            tls_port: get("SYNCCTL_TEST_SMTP_TLS_PORT").parse().unwrap(),
            user: get("SYNCCTL_TEST_SMTP_USER"),
            password_file: get("SYNCCTL_TEST_SMTP_PASSWORD_FILE").into(),
            ca: get("SYNCCTL_TEST_SMTP_CA").into(),
            maildir: get("SYNCCTL_TEST_SMTP_MAILDIR").into(),
        };
    }

    /// Stops it (SIGTERM: a message in its delay is not stored, nor answered).
    pub fn stop(&self) {
        self.run("stop", "starttls", 0);
    }

    fn run(&self, cmd: &str, mode: &str, delay_ms: u64) -> String {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/smtp.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg(cmd)
            .envs(self.env(mode, delay_ms))
            .output()
            .unwrap();
        assert!(out.status.success(), "smtp.sh {cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for PrivateSmtp {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/smtp.sh");
        let _ =
            std::process::Command::new("bash").arg(script).arg("stop").envs(self.env("starttls", 0)).output();
    }
}

#[cfg(test)]
mod unique_tail_tests {
    use super::unique_tail;
    use std::collections::HashSet;

    #[test]
    fn tails_have_the_asked_length_keep_a_short_prefix_and_do_not_repeat() {
        let mut seen = HashSet::new();
        for _ in 0..20_000 {
            let t = unique_tail("g", 15);
            assert_eq!(t.len(), 15, "{t}");
            assert!(t.starts_with('g') && t.chars().all(|c| c.is_ascii_alphanumeric()), "{t}");
            assert!(seen.insert(t.clone()), "repeated: {t}");
        }
        let long = unique_tail("averyverylongprefix", 8);
        assert_eq!(long.len(), 8);
        assert!(!long.starts_with("avery"), "a prefix that does not fit is dropped: {long}");
        assert_eq!(unique_tail("x", 30).len(), 30, "more than one hash's worth of digits");
    }
}
