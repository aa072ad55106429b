//! The configuration file, read in two phases.
//!
//! 1. **Raw**: the TOML as written ([`RawConfig`]): a `[store]` table and `[[connectors]]`
//!    tables. Unknown keys are refused, everywhere.
//! 2. **Plan**: the validated, ready-to-run form ([`Plan`]): paths resolved against the config
//!    file's directory, connector names unique, each connector's settings deserialized and
//!    checked by its type (see [`crate::registry`]).
//!
//! ```toml
//! [store]
//! path = "syncctl.db"          # relative to this file's directory
//!
//! [[connectors]]
//! name = "corp-ad"
//! type = "ldap"                # the type's own settings follow
//! flavor = "ad"
//! url = "ldaps://dc1.corp.example.com:636"
//! bind_dn = "svc-sync@corp.example.com"
//! password_file = "/etc/syncctl/corp-ad.password"
//! base_dn = "DC=corp,DC=example,DC=com"
//! ```
//!
//! Secrets are never written in the file: passwords come from `password_env` or
//! `password_file`, and a key that looks like an inline secret is refused with a message that
//! says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;

use std::sync::Arc;

use syncctl_workflow::{PolicyConfig, SetConfig, WorkflowConfig, Workflows};

use crate::registry::{self, ConnectorPlan};

/// Keys that would hold a secret inline; refused with a hint.
const INLINE_SECRET_KEYS: &[&str] =
    &["password", "bind_password", "secret", "client_secret", "token", "api_key", "credentials"];

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// `[store]`.
    #[serde(default)]
    store: RawStore,
    /// `[[connectors]]`: `name`, `type` and the type's settings, which only the type knows.
    #[serde(default)]
    connectors: Vec<toml::Spanned<toml::Table>>,
    /// `[mail]`: the notification sender and its SMTP relay.
    mail: Option<MailConfig>,
    /// `[sync]`: the sync rules and the run limits.
    #[serde(default)]
    sync: RawSync,
    /// `[[sets]]`: named conditions over metaverse objects.
    #[serde(default)]
    sets: Vec<SetConfig>,
    /// `[[policies]]`: set transitions that run a workflow.
    #[serde(default)]
    policies: Vec<PolicyConfig>,
    /// `[[workflows]]`: notification activities.
    #[serde(default)]
    workflows: Vec<WorkflowConfig>,
    /// `[service]`: the schedule and HTTP face of `syncctl serve`.
    #[serde(default)]
    service: syncctl_service::RawService,
}

/// `[sync]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    /// A TOML file of sync rules that replace (same name), disable (`enabled = false`) or add
    /// to the default rules.
    rules: Option<PathBuf>,
    /// A sync run stops after this many per-object errors.
    error_limit: Option<i64>,
    /// Staging mode: import and sync run, export never writes.
    #[serde(default)]
    staging: bool,
    /// An export with more pending deletes than this stops before writing anything (0: off).
    deletion_threshold: Option<u64>,
    /// An export whose deletes are more than this percentage of the target's objects stops.
    deletion_threshold_percent: Option<f64>,
}

/// The validated `[sync]` settings.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    /// The user's rule file, resolved.
    pub rules: Option<PathBuf>,
    /// The error limit of a sync run.
    pub error_limit: i64,
    /// Staging mode.
    pub staging: bool,
    /// The deletion threshold (count; None: off).
    pub deletion_threshold: Option<u64>,
    /// The deletion threshold as a percentage.
    pub deletion_threshold_percent: Option<f64>,
}

/// `[mail]`: where notification mail comes from and which relay carries it. `syncctl assess`
/// checks it against Office 365's relay rules (sender in a verified domain, equal to the relay
/// account's UPN domain; port 587 with STARTTLS and AUTH).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// The sender address (`From`).
    pub sender: String,
    /// `[mail.smtp]`: the relay.
    pub smtp: Option<SmtpConfig>,
    /// A maildir to write messages to instead of sending them (demos, development); exclusive
    /// with `[mail.smtp]`.
    pub directory: Option<PathBuf>,
    /// Addresses told when a run stops (a deletion threshold that trips included).
    #[serde(default)]
    pub operators: Vec<String>,
    /// A message moves to the dead-letter list after this many failed attempts. Default 8.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The wait after a first failed attempt, doubled after each further one. Default 60.
    #[serde(default = "default_retry_initial")]
    pub retry_initial_seconds: u64,
    /// The longest wait between two attempts. Default 3600.
    #[serde(default = "default_retry_max")]
    pub retry_max_seconds: u64,
}

fn default_max_attempts() -> u32 {
    8
}

fn default_retry_initial() -> u64 {
    60
}

fn default_retry_max() -> u64 {
    3600
}

/// `[mail.smtp]`: the SMTP relay.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Host name.
    pub host: String,
    /// Port (587 for submission with STARTTLS).
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls` (default), `tls` (implicit) or `plain`.
    #[serde(default = "default_smtp_security")]
    pub security: String,
    /// The account that authenticates (its UPN), if any.
    pub username: Option<String>,
    /// The environment variable that holds its password.
    pub password_env: Option<String>,
    /// The file that holds its password.
    pub password_file: Option<PathBuf>,
    /// The CA certificate(s) (PEM) that sign the relay's certificate; the system roots
    /// otherwise. Verification cannot be turned off.
    pub ca_file: Option<PathBuf>,
    /// Seconds to wait for each network step. Default 30.
    #[serde(default = "default_smtp_timeout")]
    pub timeout_seconds: u64,
}

fn default_smtp_timeout() -> u64 {
    30
}

fn default_smtp_port() -> u16 {
    587
}

fn default_smtp_security() -> String {
    "starttls".into()
}

/// `[store]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    /// The SQLite database file.
    #[serde(default = "default_store_path")]
    path: PathBuf,
}

impl Default for RawStore {
    fn default() -> Self {
        Self { path: default_store_path() }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("syncctl.db")
}

/// The validated configuration.
#[derive(Debug)]
pub struct Plan {
    /// The file it was read from.
    pub source: PathBuf,
    /// The database file (resolved against the config file's directory).
    pub store_path: PathBuf,
    /// The connectors, in file order.
    pub connectors: Vec<ConnectorPlan>,
    /// `[mail]`, if configured.
    pub mail: Option<MailConfig>,
    /// `[sync]`.
    pub sync: SyncSettings,
    /// `[[sets]]`, `[[policies]]` and `[[workflows]]`, validated (empty when none).
    pub workflows: Arc<Workflows>,
    /// `[service]`, validated (defaults when absent).
    pub service: syncctl_service::ServiceSettings,
}

impl Plan {
    /// The connector called `name`.
    pub fn connector(&self, name: &str) -> Option<&ConnectorPlan> {
        self.connectors.iter().find(|c| c.name == name)
    }

    /// The configured connector names, for messages.
    pub fn connector_names(&self) -> String {
        if self.connectors.is_empty() {
            "none".to_owned()
        } else {
            self.connectors.iter().map(|c| format!("`{}`", c.name)).collect::<Vec<_>>().join(", ")
        }
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!(
                "the config file {} does not exist (pass --config FILE or set SYNCCTL_CONFIG)",
                path.display()
            )
        } else {
            anyhow!("cannot read the config file {}: {e}", path.display())
        }
    })?;
    parse(&text, path)
}

/// Validates config `text` read from `path` (relative paths resolve against its directory).
pub fn parse(text: &str, path: &Path) -> anyhow::Result<Plan> {
    let raw: RawConfig =
        toml::from_str(text).map_err(|e| anyhow!("invalid config file {}:\n{e}", path.display()))?;
    let base = path.parent().unwrap_or_else(|| Path::new(""));
    let store_path = resolve(base, &raw.store.path);
    if raw.store.path.as_os_str().is_empty() {
        bail!("{}: [store] path is empty", path.display());
    }

    let mut connectors = Vec::with_capacity(raw.connectors.len());
    // lowercase name -> name as first written: names that differ only in case are duplicates
    // too (they would be confusing in run history).
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (i, table) in raw.connectors.into_iter().enumerate() {
        let line = line_of(text, table.span().start);
        let plan = plan_connector(table.into_inner(), base)
            .with_context(|| format!("{}: [[connectors]] entry {} (line {line})", path.display(), i + 1))?;
        if let Some(first) = seen.insert(plan.name.to_ascii_lowercase(), plan.name.clone()) {
            bail!(
                "{}: duplicate connector name `{}` (already used by `{first}`): every connector needs its own name",
                path.display(),
                plan.name
            );
        }
        connectors.push(plan);
    }
    let mut mail = raw.mail;
    if let Some(m) = mail.as_mut() {
        if let Some(d) = m.directory.as_mut() {
            *d = resolve(base, d);
            if m.smtp.is_some() {
                bail!(
                    "{}: [mail] directory and [mail.smtp] exclude each other: mail goes to a relay or to a directory",
                    path.display()
                );
            }
        }
        for op in &m.operators {
            if !matches!(syncctl_workflow::Recipient::parse(op), Ok(syncctl_workflow::Recipient::Address(_)))
            {
                bail!("{}: [mail] operators: `{op}` is not a mail address", path.display());
            }
        }
        if m.max_attempts == 0 {
            bail!("{}: [mail] max_attempts must be at least 1", path.display());
        }
        if m.retry_max_seconds < m.retry_initial_seconds {
            bail!("{}: [mail] retry_max_seconds is smaller than retry_initial_seconds", path.display());
        }
    }
    if let Some(smtp) = mail.as_mut().and_then(|m| m.smtp.as_mut()) {
        if let Some(f) = smtp.ca_file.as_mut() {
            *f = resolve(base, f);
        }
        if smtp.timeout_seconds == 0 {
            bail!("{}: [mail.smtp] timeout_seconds must be at least 1", path.display());
        }
        if smtp.password_env.is_some() && smtp.password_file.is_some() {
            bail!("{}: [mail.smtp] password_env and password_file exclude each other", path.display());
        }
        if !["starttls", "tls", "plain"].contains(&smtp.security.as_str()) {
            bail!(
                "{}: [mail.smtp] security must be starttls, tls or plain, not `{}`",
                path.display(),
                smtp.security
            );
        }
        if let Some(f) = smtp.password_file.as_mut() {
            *f = resolve(base, f);
        }
        if smtp.host.trim().is_empty() {
            bail!("{}: [mail.smtp] host is empty", path.display());
        }
        if smtp.username.is_some() && smtp.password_env.is_none() && smtp.password_file.is_none() {
            bail!(
                "{}: [mail.smtp] username is set but no password_env or password_file says where its password is",
                path.display()
            );
        }
    }
    let error_limit = raw.sync.error_limit.unwrap_or(5000);
    if error_limit < 1 {
        bail!("{}: [sync] error_limit must be at least 1, not {error_limit}", path.display());
    }
    if let Some(p) = raw.sync.deletion_threshold_percent
        && !(p > 0.0 && p <= 100.0)
    {
        bail!("{}: [sync] deletion_threshold_percent must be between 0 and 100, not {p}", path.display());
    }
    let sync = SyncSettings {
        rules: raw.sync.rules.map(|r| resolve(base, &r)),
        error_limit,
        staging: raw.sync.staging,
        deletion_threshold: match raw.sync.deletion_threshold {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(500),
        },
        deletion_threshold_percent: raw.sync.deletion_threshold_percent,
    };
    let workflows = Workflows::compile(
        &raw.sets,
        &raw.policies,
        &raw.workflows,
        mail.as_ref().map(|m| m.sender.as_str()),
    )
    .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if !workflows.workflows.is_empty()
        && mail.as_ref().is_some_and(|m| m.smtp.is_none() && m.directory.is_none())
    {
        bail!(
            "{}: notification workflows need somewhere to deliver: [mail.smtp] (a relay) or [mail] directory (a maildir)",
            path.display()
        );
    }
    let service = syncctl_service::ServiceSettings::from_raw(&raw.service, base)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Plan {
        source: path.to_owned(),
        store_path,
        connectors,
        mail,
        sync,
        workflows: workflows.shared(),
        service,
    })
}

/// `base/p` for a relative `p`; `p` itself when absolute.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_owned() } else { base.join(p) }
}

fn plan_connector(mut table: toml::Table, base: &Path) -> anyhow::Result<ConnectorPlan> {
    let name = take_string(&mut table, "name")?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        bail!("connector name `{name}` must be non-empty and use only letters, digits, `-`, `_` and `.`");
    }
    let type_name = take_string(&mut table, "type")
        .with_context(|| format!("connector `{name}` (known types: {})", registry::KNOWN_TYPES.join(", ")))?;
    if let Some(key) = table.keys().find(|k| INLINE_SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str())) {
        bail!(
            "connector `{name}`: `{key}` is not allowed: secrets are never written in the config file; \
             use password_env (an environment variable) or password_file (a file readable only by syncctl)"
        );
    }
    registry::plan(&type_name, &name, table, base).with_context(|| format!("connector `{name}`"))
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

fn take_string(table: &mut toml::Table, key: &str) -> anyhow::Result<String> {
    match table.remove(key) {
        Some(toml::Value::String(s)) => Ok(s),
        Some(other) => bail!("`{key}` must be a string, not {}", other.type_str()),
        None => bail!("`{key}` is missing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[store]
path = "state/syncctl.db"

[[connectors]]
name = "corp-ad"
type = "ldap"
flavor = "ad"
url = "ldaps://127.0.0.1:636"
ca_file = "tls/ca.pem"
bind_dn = "Administrator@corp.example.com"
password_file = "/etc/syncctl/ad.password"
base_dn = "DC=corp,DC=example,DC=com"
exclude_ous = ["OU=Disabled,DC=corp,DC=example,DC=com"]
page_size = 500

[[connectors]]
name = "people"
type = "ldap"
flavor = "openldap"
url = "ldap://127.0.0.1:3389"
security = "starttls"
bind_dn = "cn=admin,dc=example,dc=com"
password_env = "PEOPLE_PASSWORD"
base_dn = "dc=example,dc=com"
delta = "syncrepl"
"#;

    fn parse_at(text: &str) -> anyhow::Result<Plan> {
        parse(text, Path::new("/etc/syncctl/syncctl.toml"))
    }

    fn message(e: anyhow::Error) -> String {
        format!("{e:#}")
    }

    #[test]
    fn good_config_gives_a_plan() {
        let plan = parse_at(GOOD).unwrap();
        assert_eq!(plan.store_path, PathBuf::from("/etc/syncctl/state/syncctl.db"));
        assert_eq!(plan.connectors.len(), 2);
        let ad = plan.connector("corp-ad").unwrap();
        assert_eq!((ad.type_name, ad.endpoint.as_str()), ("ldap", "ldaps://127.0.0.1:636"));
        let people = plan.connector("people").unwrap();
        assert_eq!(people.endpoint, "ldap://127.0.0.1:3389");
        assert!(plan.connector("nope").is_none());
        assert_eq!(plan.connector_names(), "`corp-ad`, `people`");
    }

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../../../examples/syncctl.toml");
        let plan = parse(text, Path::new("/opt/syncctl/syncctl.toml")).unwrap();
        assert_eq!(plan.store_path, PathBuf::from("/opt/syncctl/syncctl.db"));
        assert_eq!(plan.connectors.len(), 4);
        let cloud = plan.connector("cloud").unwrap();
        assert_eq!((cloud.type_name, cloud.endpoint.as_str()), ("graph", "https://graph.microsoft.com/v1.0"));
        let export = plan.connector("corp-export").unwrap();
        assert_eq!(export.type_name, "ldif");
        assert_eq!(export.files, vec![PathBuf::from("/opt/syncctl/corp-export.ldif")]);
        // The README shows the example verbatim.
        assert!(
            include_str!("../../../README.md").contains(text),
            "README.md and examples/syncctl.toml differ"
        );
    }

    #[test]
    fn relative_store_path_resolves_against_the_config_directory() {
        let plan = parse("[store]\npath = \"data/x.db\"\n", Path::new("/srv/sync/syncctl.toml")).unwrap();
        assert_eq!(plan.store_path, PathBuf::from("/srv/sync/data/x.db"));
        let plan = parse("[store]\npath = \"/var/lib/syncctl/x.db\"\n", Path::new("/srv/sync/syncctl.toml"))
            .unwrap();
        assert_eq!(plan.store_path, PathBuf::from("/var/lib/syncctl/x.db"));
        // A config file named without a directory resolves against the working directory.
        let plan = parse("", Path::new("syncctl.toml")).unwrap();
        assert_eq!(plan.store_path, PathBuf::from("syncctl.db"));
        assert!(plan.connectors.is_empty());
    }

    #[test]
    fn relative_connector_paths_resolve_too() {
        let plan = parse_at(GOOD).unwrap();
        let ad = plan.connector("corp-ad").unwrap();
        assert_eq!(
            ad.files,
            vec![PathBuf::from("/etc/syncctl/tls/ca.pem"), PathBuf::from("/etc/syncctl/ad.password")]
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_the_file_path() {
        let e = message(parse_at("[store]\npath = \"x.db\"\nsize = 3\n").unwrap_err());
        assert!(e.contains("/etc/syncctl/syncctl.toml") && e.contains("size"), "{e}");

        let e = message(parse_at("[stor]\npath = \"x.db\"\n").unwrap_err());
        assert!(e.contains("/etc/syncctl/syncctl.toml") && e.contains("stor"), "{e}");

        let bad = GOOD.replace("page_size = 500", "page_sise = 500");
        let e = message(parse_at(&bad).unwrap_err());
        assert!(e.contains("/etc/syncctl/syncctl.toml"), "{e}");
        assert!(e.contains("entry 1") && e.contains("corp-ad") && e.contains("page_sise"), "{e}");
        let e = message(parse_at(&GOOD.replace("delta = \"syncrepl\"", "deltas = 1")).unwrap_err());
        assert!(e.contains("entry 2 (line 17)") && e.contains("deltas"), "{e}");
    }

    #[test]
    fn inline_secrets_are_refused_with_a_hint() {
        let bad = GOOD.replace("page_size = 500", "password = \"hunter2\"");
        let e = message(parse_at(&bad).unwrap_err());
        assert!(e.contains("password_env") && e.contains("password_file"), "{e}");
        assert!(!e.contains("hunter2"), "the secret must not be echoed: {e}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let people = &GOOD[GOOD.rfind("[[connectors]]").unwrap()..];
        let dup = format!("{GOOD}\n{people}");
        let e = message(parse_at(&dup).unwrap_err());
        assert!(e.contains("duplicate connector name `people`"), "{e}");

        let case = GOOD.replace("name = \"people\"", "name = \"Corp-AD\"");
        let e = message(parse_at(&case).unwrap_err());
        assert!(e.contains("duplicate connector name `Corp-AD`"), "{e}");
    }

    #[test]
    fn graph_settings_are_checked_and_a_secret_in_the_file_is_refused() {
        let base = "[[connectors]]\nname = \"cloud\"\ntype = \"graph\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"app\"\n";
        let e = message(parse_at(base).unwrap_err());
        assert!(e.contains("client_secret_env") && e.contains("client_secret_file"), "{e}");
        let e = message(parse_at(&format!("{base}client_secret = \"hunter2\"\n")).unwrap_err());
        assert!(e.contains("client_secret") && !e.contains("hunter2"), "{e}");
        let e = message(
            parse_at(&format!(
                "{base}client_secret_env = \"S\"\ngraph_url = \"http://graph.example.com/v1.0\"\n"
            ))
            .unwrap_err(),
        );
        assert!(e.contains("graph_url") && e.contains("https://"), "{e}");
        let plan = parse_at(&format!("{base}client_secret_file = \"secret.txt\"\n")).unwrap();
        let c = &plan.connectors[0];
        assert_eq!((c.type_name, c.endpoint.as_str()), ("graph", "https://graph.microsoft.com/v1.0"));
        assert!(c.files[0].is_absolute() && c.files[0].ends_with("secret.txt"), "{:?}", c.files);
    }

    #[test]
    fn missing_or_unknown_type_is_refused() {
        let e = message(parse_at("[[connectors]]\nname = \"x\"\ntype = \"scim\"\n").unwrap_err());
        assert!(
            e.contains("unknown connector type `scim`") && e.contains("ldap") && e.contains("graph"),
            "{e}"
        );
        let e = message(parse_at("[[connectors]]\nname = \"x\"\n").unwrap_err());
        assert!(e.contains("`type` is missing"), "{e}");
        let e = message(parse_at("[[connectors]]\ntype = \"ldap\"\n").unwrap_err());
        assert!(e.contains("`name` is missing"), "{e}");
        let e = message(parse_at("[[connectors]]\nname = \"a b\"\ntype = \"ldap\"\n").unwrap_err());
        assert!(e.contains("connector name `a b`"), "{e}");
    }

    #[test]
    fn ldif_connectors_read_a_file_resolved_against_the_config_directory() {
        let text = "[[connectors]]\nname = \"export\"\ntype = \"ldif\"\npath = \"exports/corp.ldif\"\n";
        let plan = parse_at(text).unwrap();
        let export = plan.connector("export").unwrap();
        assert_eq!((export.type_name, export.endpoint.as_str()), ("ldif", "/etc/syncctl/exports/corp.ldif"));
        assert_eq!(export.files, vec![PathBuf::from("/etc/syncctl/exports/corp.ldif")]);
        let built = export.build().unwrap();
        assert_eq!(built.kind, "ldif");
        assert_eq!(built.connector.endpoint(), "/etc/syncctl/exports/corp.ldif");
        assert!(built.connector.capabilities().full_import);

        let e = message(parse_at(&format!("{text}url = \"ldap://x\"\n")).unwrap_err());
        assert!(e.contains("export") && e.contains("url"), "{e}");
        let e = message(parse_at(&format!("{text}object_types = [\"printer\"]\n")).unwrap_err());
        assert!(e.contains("export") && e.contains("`printer`"), "{e}");
        let e = message(parse_at("[[connectors]]\nname = \"export\"\ntype = \"ldif\"\n").unwrap_err());
        assert!(e.contains("path"), "{e}");
    }

    #[test]
    fn connector_settings_are_validated_by_their_type() {
        let bad = GOOD.replace("url = \"ldaps://127.0.0.1:636\"", "url = \"http://127.0.0.1\"");
        let e = message(parse_at(&bad).unwrap_err());
        assert!(e.contains("corp-ad") && e.contains("ldap://"), "{e}");
        let bad = GOOD.replace("password_env = \"PEOPLE_PASSWORD\"\n", "");
        let e = message(parse_at(&bad).unwrap_err());
        assert!(e.contains("people") && e.contains("password"), "{e}");
    }

    #[test]
    fn mail_section_is_validated_and_its_password_file_resolved() {
        let plan = parse_at(
            "[mail]\nsender = \"syncctl@corp.example.com\"\n[mail.smtp]\nhost = \"smtp.office365.com\"\nusername = \"svc@corp.example.com\"\npassword_file = \"smtp.pw\"\n",
        )
        .unwrap();
        let mail = plan.mail.unwrap();
        assert_eq!(mail.sender, "syncctl@corp.example.com");
        let smtp = mail.smtp.unwrap();
        assert_eq!((smtp.port, smtp.security.as_str()), (587, "starttls"));
        assert_eq!(smtp.password_file.as_deref(), Some(Path::new("/etc/syncctl/smtp.pw")));
        let e = message(
            parse_at("[mail]\nsender = \"a@b.com\"\n[mail.smtp]\nhost = \"h\"\nsecurity = \"ssl\"\n")
                .unwrap_err(),
        );
        assert!(e.contains("starttls, tls or plain"), "{e}");
        let e = message(
            parse_at("[mail]\nsender = \"a@b.com\"\n[mail.smtp]\nhost = \"h\"\nusername = \"u\"\n")
                .unwrap_err(),
        );
        assert!(e.contains("password_env or password_file"), "{e}");
        let e = message(parse_at("[mail]\nsender = \"a@b.com\"\npassword = \"x\"\n").unwrap_err());
        assert!(e.contains("unknown field `password`"), "{e}");
    }

    #[test]
    fn mail_delivery_settings_and_workflows_are_validated() {
        let base = "[mail]\nsender = \"syncctl@corp.example.com\"\n";
        let plan = parse_at(&format!(
            "{base}directory = \"outbox\"\noperators = [\"ops@corp.example.com\"]\nmax_attempts = 3\nretry_initial_seconds = 0\n"
        ))
        .unwrap();
        let mail = plan.mail.unwrap();
        assert_eq!(mail.directory.as_deref(), Some(Path::new("/etc/syncctl/outbox")));
        assert_eq!((mail.max_attempts, mail.retry_initial_seconds, mail.retry_max_seconds), (3, 0, 3600));
        assert!(plan.workflows.is_empty());
        let smtp = "[mail.smtp]\nhost = \"h\"\nca_file = \"ca.pem\"\n";
        let plan = parse_at(&format!("{base}{smtp}")).unwrap();
        let s = plan.mail.unwrap().smtp.unwrap();
        assert_eq!((s.ca_file.as_deref(), s.timeout_seconds), (Some(Path::new("/etc/syncctl/ca.pem")), 30));
        let cases = [
            (format!("{base}directory = \"d\"\n{smtp}"), "exclude each other"),
            (format!("{base}operators = [\"not an address\"]\n"), "`not an address` is not a mail address"),
            (format!("{base}max_attempts = 0\n"), "max_attempts must be at least 1"),
            (format!("{base}retry_initial_seconds = 10\nretry_max_seconds = 5\n"), "retry_max_seconds"),
            (
                format!("{base}{smtp}username = \"u\"\npassword_env = \"A\"\npassword_file = \"f\"\n"),
                "exclude each other",
            ),
            (format!("{base}{smtp}timeout_seconds = 0\n"), "timeout_seconds"),
        ];
        for (text, want) in cases {
            let e = message(parse_at(&text).unwrap_err());
            assert!(e.contains(want), "want `{want}` in: {e}");
        }
        let model = "[[sets]]\nname = \"sales\"\ncriteria = 'department == \"Sales\"'\n\n[[policies]]\nname = \"p\"\nset = \"sales\"\ntransition = \"in\"\nworkflow = \"w\"\n\n[[workflows]]\nname = \"w\"\n[[workflows.activities]]\nrecipients = [\"target\"]\nsubject = \"s\"\ntext = \"t\"\n";
        let plan = parse_at(&format!("{base}directory = \"d\"\n{model}")).unwrap();
        assert_eq!((plan.workflows.sets.len(), plan.workflows.policies.len()), (1, 1));
        // Workflows need a sender and somewhere to deliver; mistakes name the file and the entry.
        let e = message(parse_at(model).unwrap_err());
        assert!(e.contains("/etc/syncctl/syncctl.toml") && e.contains("[mail] sender"), "{e}");
        let e = message(parse_at(&format!("{base}{model}")).unwrap_err());
        assert!(e.contains("somewhere to deliver"), "{e}");
        let e = message(
            parse_at(&format!(
                "{base}directory = \"d\"\n{}",
                model.replace("workflow = \"w\"", "workflow = \"x\"")
            ))
            .unwrap_err(),
        );
        assert!(e.contains("policy `p`") && e.contains("workflow `x` is not configured"), "{e}");
        let e = message(
            parse_at(&format!("{base}directory = \"d\"\n{}", model.replace("criteria", "critera")))
                .unwrap_err(),
        );
        assert!(e.contains("critera"), "{e}");
    }
}
