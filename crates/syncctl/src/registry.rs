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

/// Reads the settings of a connector of type `type_name` called `name`; relative paths in them
/// resolve against `base` (the config file's directory).
pub fn plan(
    type_name: &str,
    name: &str,
    settings: toml::Table,
    base: &Path,
) -> anyhow::Result<ConnectorPlan> {
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
            Ok(ConnectorPlan { name: name.to_owned(), type_name: "ldap", endpoint, files, factory })
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
            Ok(ConnectorPlan { name: name.to_owned(), type_name: "ldif", endpoint, files, factory })
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
            Ok(ConnectorPlan { name: name.to_owned(), type_name: "graph", endpoint, files, factory })
        }
        other => bail!("unknown connector type `{other}` (known types: {})", KNOWN_TYPES.join(", ")),
    }
}
