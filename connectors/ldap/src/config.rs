//! The LDAP connector's configuration, as written in the `[[connectors]]` table of syncctl.toml.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{LdapError, Result};

/// Which kind of directory this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// Active Directory (or Samba AD): objectGUID anchor, DirSync / uSNChanged delta.
    Ad,
    /// OpenLDAP and other RFC directories: entryUUID anchor, RFC 4533 / modifyTimestamp delta.
    Openldap,
}

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// TLS from the first byte (`ldaps://`).
    Ldaps,
    /// Plain connect, then the StartTLS extended operation; refuse to go on without it.
    Starttls,
    /// No TLS at all: only when the config says so.
    Plain,
}

/// How a delta import finds changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DeltaMethod {
    /// AD: DirSync, or uSNChanged polling when the account lacks the right. OpenLDAP: RFC 4533.
    #[default]
    Auto,
    /// AD DirSync control.
    Dirsync,
    /// AD `uSNChanged` polling (deletes found by listing the anchors in scope).
    Usn,
    /// RFC 4533 refreshOnly content synchronization (OpenLDAP).
    Syncrepl,
}

/// Settings of one LDAP connector.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ad` or `openldap`.
    pub flavor: Flavor,
    /// `ldaps://host:636` or `ldap://host:389`.
    pub url: String,
    /// `ldaps`, `starttls` or `plain`; by default `ldaps` for an `ldaps://` URL and `starttls`
    /// otherwise. `plain` must be written out.
    pub security: Option<Security>,
    /// PEM file of the CA(s) that sign the server's certificate. Without it the system roots are
    /// used. Verification cannot be turned off.
    pub ca_file: Option<PathBuf>,
    /// The bind DN (or UPN on AD).
    pub bind_dn: String,
    /// Name of the environment variable that holds the bind password.
    pub password_env: Option<String>,
    /// File that holds the bind password (first line).
    pub password_file: Option<PathBuf>,
    /// The search base: the naming context on AD (DirSync requires it).
    pub base_dn: String,
    /// Only objects under these DNs are in scope (empty: the whole base).
    #[serde(default)]
    pub include_ous: Vec<String>,
    /// Objects under these DNs are out of scope, even inside an included one.
    #[serde(default)]
    pub exclude_ous: Vec<String>,
    /// Object types to read. AD: `user`, `group`, `contact`; OpenLDAP: `inetOrgPerson`,
    /// `groupOfNames`. Default: all of the flavor's.
    pub object_types: Option<Vec<String>>,
    /// Attribute inclusion list (the anchor and the attributes the connector needs are always
    /// read). Default: the flavor's identity attributes.
    pub attributes: Option<Vec<String>>,
    /// The attribute whose value is the anchor. AD: `objectGUID` only, for now. OpenLDAP:
    /// `entryUUID` (default) or an attribute holding a 16-byte GUID, which must be exactly 16 bytes
    /// and becomes the ImmutableID (deltas then run as full imports: RFC 4533 names objects by
    /// entryUUID).
    pub anchor_attribute: Option<String>,
    /// Paged-results page size (AD caps it at 1,000).
    #[serde(default = "default_page_size")]
    pub page_size: i32,
    /// Values per range when reading large multi-valued attributes such as `member` (`0`: let the
    /// server decide, as AD's 1,500).
    #[serde(default)]
    pub range_size: u32,
    /// Delta mechanism.
    #[serde(default)]
    pub delta: DeltaMethod,
    /// Seconds to wait for the server to answer one request.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_page_size() -> i32 {
    1000
}
fn default_timeout() -> u64 {
    60
}

impl LdapConfig {
    /// The effective security mode.
    pub fn security(&self) -> Security {
        self.security.unwrap_or(if self.url.to_ascii_lowercase().starts_with("ldaps://") {
            Security::Ldaps
        } else {
            Security::Starttls
        })
    }

    /// Checks what can be checked before connecting.
    pub fn validate(&self, name: &str) -> Result<()> {
        let bad = |m: String| Err(LdapError::Config { connector: name.to_owned(), message: m });
        let lower = self.url.to_ascii_lowercase();
        if !(lower.starts_with("ldap://") || lower.starts_with("ldaps://")) {
            return bad(format!("url `{}` must start with ldap:// or ldaps://", self.url));
        }
        match (self.security(), lower.starts_with("ldaps://")) {
            (Security::Ldaps, false) => return bad("security = \"ldaps\" needs an ldaps:// url".into()),
            (Security::Starttls | Security::Plain, true) => {
                return bad("an ldaps:// url needs security = \"ldaps\"".into());
            }
            _ => {}
        }
        if self.password_env.is_none() && self.password_file.is_none() {
            return bad("set password_env or password_file for the bind password".into());
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            return bad("set only one of password_env and password_file".into());
        }
        if !(1..=100_000).contains(&self.page_size) {
            return bad(format!("page_size {} is out of range 1..=100000", self.page_size));
        }
        if let Err(m) = crate::entry::ScopeSettings::from(self).check() {
            return bad(m);
        }
        match (self.flavor, self.delta) {
            (Flavor::Ad, DeltaMethod::Syncrepl) => bad("delta = \"syncrepl\" is for OpenLDAP".into()),
            (Flavor::Openldap, DeltaMethod::Dirsync | DeltaMethod::Usn) => {
                bad("delta = \"dirsync\" / \"usn\" are for Active Directory".into())
            }
            _ => Ok(()),
        }
    }

    /// Reads the bind password from its environment variable or file. The value is never
    /// logged or put in an error.
    pub fn password(&self, name: &str) -> Result<Secret> {
        if let Some(var) = &self.password_env {
            let value = std::env::var(var).map_err(|_| LdapError::Config {
                connector: name.to_owned(),
                message: format!("the environment variable `{var}` (password_env) is not set or not UTF-8"),
            })?;
            if value.is_empty() {
                // An empty simple-bind password is an anonymous bind on most servers.
                return Err(LdapError::Config {
                    connector: name.to_owned(),
                    message: format!("the environment variable `{var}` (password_env) is empty"),
                });
            }
            return Ok(Secret(value));
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| LdapError::Config {
                connector: name.to_owned(),
                message: format!("cannot read password_file {}: {e}", path.display()),
            })?;
            let line = text.lines().next().unwrap_or("").to_owned();
            if line.is_empty() {
                return Err(LdapError::Config {
                    connector: name.to_owned(),
                    message: format!("password_file {} is empty", path.display()),
                });
            }
            return Ok(Secret(line));
        }
        Err(LdapError::Config { connector: name.to_owned(), message: "no bind password configured".into() })
    }
}

/// A secret that does not print.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The value, for the bind only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> LdapConfig {
        toml::from_str(&format!(
            "flavor = \"ad\"\nurl = \"ldap://dc1:389\"\nbind_dn = \"svc@corp\"\nbase_dn = \"DC=corp,DC=com\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn tls_is_the_default_and_plain_must_be_written_out() {
        let c = parse("password_env = \"PW\"\n");
        assert_eq!(c.security(), Security::Starttls);
        let c = parse("password_env = \"PW\"\nsecurity = \"plain\"\n");
        assert_eq!(c.security(), Security::Plain);
        let mut c = parse("password_env = \"PW\"\n");
        c.url = "ldaps://dc1:636".into();
        assert_eq!(c.security(), Security::Ldaps);
        assert!(c.validate("x").is_ok());
        c.security = Some(Security::Starttls);
        assert!(c.validate("x").unwrap_err().to_string().contains("ldaps:// url needs security"));
    }

    #[test]
    fn validation_names_the_connector_and_the_problem() {
        let c = parse("");
        assert_eq!(
            c.validate("corp").unwrap_err().to_string(),
            "connector `corp`: set password_env or password_file for the bind password"
        );
        let c = parse("password_env = \"A\"\npassword_file = \"/x\"\n");
        assert!(c.validate("corp").unwrap_err().to_string().contains("only one of"));
        let c = parse("password_env = \"A\"\nobject_types = [\"printer\"]\n");
        assert!(c.validate("corp").unwrap_err().to_string().contains("`printer`"));
        let c = parse("password_env = \"A\"\ninclude_ous = [\"not a dn\"]\n");
        assert!(c.validate("corp").unwrap_err().to_string().contains("not a valid DN"));
        let c = parse("password_env = \"A\"\ndelta = \"syncrepl\"\n");
        assert!(c.validate("corp").is_err());
        let c = parse("password_env = \"A\"\npage_size = 0\n");
        assert!(c.validate("corp").is_err());
        assert!(
            toml::from_str::<LdapConfig>("flavor = \"ad\"\npassword = \"x\"\n").is_err(),
            "inline passwords are refused"
        );
    }

    #[test]
    fn the_password_comes_from_a_file_or_the_environment_and_does_not_print() {
        let dir = std::env::temp_dir().join(format!("syncctl-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret!\nignored second line\n").unwrap();
        let mut c = parse("");
        c.password_file = Some(file.clone());
        let secret = c.password("corp").unwrap();
        assert_eq!(secret.expose(), "s3cret!");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        std::fs::write(&file, "").unwrap();
        let err = c.password("corp").unwrap_err().to_string();
        assert!(err.contains("is empty") && !err.contains("s3cret"));
        let mut c = parse("");
        c.password_env = Some("SYNCCTL_TEST_SURELY_UNSET_VARIABLE".into());
        assert!(c.password("corp").unwrap_err().to_string().contains("SYNCCTL_TEST_SURELY_UNSET_VARIABLE"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
