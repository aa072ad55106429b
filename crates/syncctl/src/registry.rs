//! The connector registry: a config `type` -> its settings and its constructor.
//!
//! [`plan`] is the only place that knows the connector crates. Adding a connector type is one
//! match arm there: deserialize the type's settings (refusing unknown keys), resolve relative
//! paths against the config file's directory, validate, and return a [`ConnectorPlan`] whose
//! factory builds the connector when a command needs it.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use syncctl_connector_graph::{GraphConfig, GraphConnector};
use syncctl_connector_ldap::{LdapConfig, LdapConnector};
use syncctl_connector_ldif::{LdifConfig, LdifConnector};
use syncctl_core::Connector;

use crate::config::resolve;

/// The connector types this build knows.
pub const KNOWN_TYPES: &[&str] = &["ldap", "ldif", "graph"];

/// A connector, built and ready to run.
pub struct BuiltConnector {
    /// The connector.
    pub connector: Box<dyn Connector>,
    /// Its kind for the store (`ldap-ad`, `ldap-openldap`, `ldif`, `graph`).
    pub kind: &'static str,
}

type Factory = Box<dyn Fn(&str) -> anyhow::Result<BuiltConnector> + Send + Sync>;

/// One validated `[[connectors]]` entry.
pub struct ConnectorPlan {
    /// Its name.
    pub name: String,
    /// Its config `type`.
    pub type_name: &'static str,
    /// Where it connects (no secret).
    pub endpoint: String,
    /// Local files it reads (CA bundle, password file, LDIF file), resolved.
    pub files: Vec<PathBuf>,
    /// A hash of the settings that decide what it reads and writes (credentials, paging and
    /// timing left out; see [`fingerprint`]). A change forces a full import and a full sync.
    pub fingerprint: String,
    factory: Factory,
}

impl ConnectorPlan {
    /// Builds the connector (no I/O beyond reading its local files).
    pub fn build(&self) -> anyhow::Result<BuiltConnector> {
        (self.factory)(&self.name)
    }
}

impl fmt::Debug for ConnectorPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorPlan")
            .field("name", &self.name)
            .field("type_name", &self.type_name)
            .field("endpoint", &self.endpoint)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Settings left out of a connector's [`fingerprint`]: where a credential is (the secret itself is
/// never in the settings), and paging and timing, which change how a connector reads, not what.
pub const UNFINGERPRINTED: &[&str] = &[
    "password_env",
    "password_file",
    "client_secret_env",
    "client_secret_file",
    "page_size",
    "range_size",
    "timeout_secs",
    "write_budget",
    "write_window_seconds",
];

/// The fingerprint of a connector's settings as written: a BLAKE3 hash (hex, 32 characters) of
/// its type and every key but the [`UNFINGERPRINTED`] ones, in key order. It holds no secret.
pub fn fingerprint(type_name: &str, settings: &toml::Table) -> String {
    let kept: std::collections::BTreeMap<&str, String> = settings
        .iter()
        .filter(|(k, _)| !UNFINGERPRINTED.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.to_string()))
        .collect();
    let mut text = format!("type={type_name}\n");
    for (k, v) in kept {
        text.push_str(&format!("{k}={v}\n"));
    }
    let hex = blake3::hash(text.as_bytes()).to_hex();
    hex.as_str().get(..32).unwrap_or(hex.as_str()).to_owned()
}

/// Reads the settings of a connector of type `type_name` called `name`; relative paths in them
/// resolve against `base` (the config file's directory).
pub fn plan(
    type_name: &str,
    name: &str,
    settings: toml::Table,
    base: &Path,
) -> anyhow::Result<ConnectorPlan> {
    let fingerprint = fingerprint(type_name, &settings);
    match type_name {
        "ldap" => {
            let mut config: LdapConfig = settings.try_into().map_err(|e| anyhow!("{}", e.message()))?;
            for p in [&mut config.ca_file, &mut config.password_file].into_iter().flatten() {
                *p = resolve(base, p);
            }
            config.validate(name)?;
            let endpoint = config.url.clone();
            let files = config.ca_file.iter().chain(&config.password_file).cloned().collect();
            let factory: Factory = Box::new(move |name| {
                let connector = LdapConnector::new(name, config.clone())?;
                let kind = connector.kind();
                Ok(BuiltConnector { connector: Box::new(connector), kind })
            });
            Ok(ConnectorPlan {
                name: name.to_owned(),
                type_name: "ldap",
                endpoint,
                files,
                fingerprint,
                factory,
            })
        }
        "ldif" => {
            let mut config: LdifConfig = settings.try_into().map_err(|e| anyhow!("{}", e.message()))?;
            config.path = resolve(base, &config.path);
            config.validate(name)?;
            let endpoint = config.path.display().to_string();
            let files = vec![config.path.clone()];
            let factory: Factory = Box::new(move |name| {
                let connector = LdifConnector::new(name, config.clone())?;
                let kind = connector.kind();
                Ok(BuiltConnector { connector: Box::new(connector), kind })
            });
            Ok(ConnectorPlan {
                name: name.to_owned(),
                type_name: "ldif",
                endpoint,
                files,
                fingerprint,
                factory,
            })
        }
        "graph" => {
            let mut config: GraphConfig = settings.try_into().map_err(|e| anyhow!("{}", e.message()))?;
            if let Some(p) = &mut config.client_secret_file {
                *p = resolve(base, p);
            }
            config.validate().map_err(|e| anyhow!("connector `{name}`: {e}"))?;
            let endpoint = config.graph_url.clone();
            let files = config.client_secret_file.iter().cloned().collect();
            let factory: Factory = Box::new(move |name| {
                let connector = GraphConnector::new(name, config.clone())
                    .map_err(|e| anyhow!("connector `{name}`: {e}"))?;
                Ok(BuiltConnector { connector: Box::new(connector), kind: "graph" })
            });
            Ok(ConnectorPlan {
                name: name.to_owned(),
                type_name: "graph",
                endpoint,
                files,
                fingerprint,
                factory,
            })
        }
        other => bail!("unknown connector type `{other}` (known types: {})", KNOWN_TYPES.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn the_fingerprint_follows_what_is_read_not_credentials_or_timing() {
        let a = fingerprint(
            "ldap",
            &table("url = \"ldaps://dc:636\"\nbase_dn = \"DC=corp\"\npassword_file = \"a\""),
        );
        // Key order, credentials, paging and timing change nothing.
        let same = fingerprint(
            "ldap",
            &table(
                "password_env = \"X\"\nbase_dn = \"DC=corp\"\npage_size = 10\ntimeout_secs = 5\nurl = \"ldaps://dc:636\"",
            ),
        );
        assert_eq!(a, same);
        // The scope, the server or the type do.
        let scope = fingerprint(
            "ldap",
            &table("url = \"ldaps://dc:636\"\nbase_dn = \"DC=corp\"\ninclude_ous = [\"OU=Staff,DC=corp\"]"),
        );
        assert_ne!(a, scope);
        assert_ne!(a, fingerprint("ldap", &table("url = \"ldaps://dc2:636\"\nbase_dn = \"DC=corp\"")));
        assert_ne!(a, fingerprint("ldif", &table("url = \"ldaps://dc:636\"\nbase_dn = \"DC=corp\"")));
        assert_eq!(a.len(), 32);
        assert!(!a.contains("corp"));
    }
}
