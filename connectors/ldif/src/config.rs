//! The LDIF connector's configuration, as written in the `[[connectors]]` table of syncctl.toml.

use std::path::PathBuf;

use serde::Deserialize;
use syncctl_connector_ldap::Flavor;
use syncctl_connector_ldap::directory::ScopeSettings;

use crate::error::{LdifConfigError, Result};

/// Settings of one LDIF connector: the file, and the same scope settings as an LDAP connector
/// of the directory the file was exported from.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdifConfig {
    /// The LDIF file (content records, as `ldapsearch` or `ldifde -f` write them).
    pub path: PathBuf,
    /// The directory the file was exported from: `ad` (objectGUID anchor, the default) or
    /// `openldap` (entryUUID anchor).
    #[serde(default = "default_flavor")]
    pub flavor: Flavor,
    /// Only objects at or under this DN are in scope. Default: every DN in the file.
    pub base_dn: Option<String>,
    /// Only objects under these DNs are in scope (empty: the whole base).
    #[serde(default)]
    pub include_ous: Vec<String>,
    /// Objects under these DNs are out of scope, even inside an included one.
    #[serde(default)]
    pub exclude_ous: Vec<String>,
    /// Object types to read (AD: `user`, `group`, `contact`; OpenLDAP: `inetOrgPerson`,
    /// `groupOfNames`). Default: all of the flavor's.
    pub object_types: Option<Vec<String>>,
    /// Attribute inclusion list (the anchor and the attributes the connector needs are always
    /// kept). Default: the flavor's identity attributes.
    pub attributes: Option<Vec<String>>,
    /// The attribute whose value is the anchor, as for the LDAP connector. AD: `objectGUID`;
    /// OpenLDAP: `entryUUID` (default) or an attribute holding a 16-byte GUID.
    pub anchor_attribute: Option<String>,
}

fn default_flavor() -> Flavor {
    Flavor::Ad
}

impl LdifConfig {
    /// The scope settings shared with the LDAP connector.
    pub fn scope_settings(&self) -> ScopeSettings<'_> {
        ScopeSettings {
            flavor: self.flavor,
            base_dn: self.base_dn.as_deref().unwrap_or(""),
            include_ous: &self.include_ous,
            exclude_ous: &self.exclude_ous,
            object_types: self.object_types.as_deref(),
            attributes: self.attributes.as_deref(),
            anchor_attribute: self.anchor_attribute.as_deref(),
        }
    }

    /// Checks what can be checked before reading the file (which need not exist yet).
    pub fn validate(&self, name: &str) -> Result<()> {
        let bad = |message: String| Err(LdifConfigError::Config { connector: name.to_owned(), message });
        if self.path.as_os_str().is_empty() {
            return bad("path is empty: name the LDIF file".into());
        }
        if let Some(base) = &self.base_dn
            && base.trim().is_empty()
        {
            return bad("base_dn is empty: leave it out to read every DN in the file".into());
        }
        match self.scope_settings().check() {
            Ok(()) => Ok(()),
            Err(m) => bad(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<LdifConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn only_the_path_is_required_and_ad_is_the_default_flavor() {
        let c = parse("path = \"export.ldif\"\n").unwrap();
        assert_eq!(c.flavor, Flavor::Ad);
        assert!(c.base_dn.is_none() && c.include_ous.is_empty() && c.object_types.is_none());
        assert!(c.validate("corp").is_ok());
        assert_eq!(c.scope_settings().base_dn, "");
        let c = parse("path = \"x.ldif\"\nflavor = \"openldap\"\nbase_dn = \"dc=example,dc=com\"\n").unwrap();
        assert_eq!(c.flavor, Flavor::Openldap);
        assert!(c.validate("people").is_ok());
    }

    #[test]
    fn unknown_keys_and_ldap_only_keys_are_refused() {
        assert!(parse("path = \"x\"\npage_size = 3\n").unwrap_err().to_string().contains("page_size"));
        assert!(parse("path = \"x\"\nurl = \"ldap://x\"\n").is_err());
        assert!(parse("flavor = \"ad\"\n").unwrap_err().to_string().contains("path"));
    }

    #[test]
    fn validation_names_the_connector_and_the_problem() {
        let e = |text: &str| parse(text).unwrap().validate("corp").unwrap_err().to_string();
        assert_eq!(e("path = \"\"\n"), "connector `corp`: path is empty: name the LDIF file");
        assert!(e("path = \"x\"\nbase_dn = \"\"\n").contains("base_dn is empty"));
        assert!(e("path = \"x\"\ninclude_ous = [\"not a dn\"]\n").contains("not a valid DN"));
        assert!(e("path = \"x\"\nbase_dn = \"nope\"\n").contains("not a valid DN"));
        assert!(e("path = \"x\"\nobject_types = [\"printer\"]\n").contains("`printer`"));
        assert!(e("path = \"x\"\nanchor_attribute = \"employeeID\"\n").contains("objectGUID"));
        assert!(
            parse("path = \"x\"\nflavor = \"openldap\"\nobject_types = [\"groupofnames\"]\n")
                .unwrap()
                .validate("p")
                .is_ok()
        );
    }
}
