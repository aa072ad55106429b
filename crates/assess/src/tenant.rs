//! Tenant data: what the cloud already holds, for the anchor audit, the duplicate check across
//! the tenant, and the verified domains.
//!
//! It comes from a configured Graph connector's full import
//! ([`TenantSnapshot::from_cloud_objects`]), or offline from a JSON file whose shape mirrors
//! Microsoft Graph's responses, one collection per endpoint, each as Graph returns it
//! (`{"value": [...]}`, `@odata.*` members ignored):
//!
//! ```json
//! {
//!   "domains":        {"value": [{"id": "corp.example.com", "isVerified": true, "isInitial": false, "authenticationType": "Managed"}]},
//!   "users":          {"value": [{"id": "...", "userPrincipalName": "...", "onPremisesImmutableId": "...", "proxyAddresses": ["SMTP:..."], "mail": "...", "onPremisesSyncEnabled": true}]},
//!   "groups":         {"value": [{"id": "...", "displayName": "...", "mail": "...", "mailEnabled": true, "securityEnabled": false, "proxyAddresses": []}]},
//!   "orgContacts":    {"value": [{"id": "...", "mail": "...", "proxyAddresses": []}]},
//!   "directoryRoles": {"value": [{"id": "...", "displayName": "Global Administrator", "members": [{"id": "<user id>"}]}]}
//! }
//! ```
//!
//! `GET /v1.0/domains`, `/users?$select=...`, `/groups`, `/contacts` and
//! `/directoryRoles?$expand=members` give exactly these bodies. `domains` is required and not
//! empty (Graph always lists at least the initial `onmicrosoft.com` domain; without it every
//! domain would look unverified); the other collections are optional. Any other top-level
//! member except annotations (`@odata.context`, `@comment`) is refused, so that a single Graph
//! page saved as is (`{"value": [...]}`) or a misspelt collection never reads as an empty tenant.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use syncctl_core::{AttrValues, CsObject};

use crate::error::{AssessError, Result};

/// The kind of a cloud object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloudKind {
    /// A user.
    User,
    /// A group.
    Group,
    /// An organizational contact.
    Contact,
}

impl CloudKind {
    /// Graph's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Group => "group",
            Self::Contact => "orgContact",
        }
    }
}

/// One cloud object, reduced to what matching and duplicates need.
#[derive(Clone, Debug)]
pub struct CloudObject {
    /// Graph `id`.
    pub id: String,
    /// Kind.
    pub kind: CloudKind,
    /// displayName.
    pub display_name: Option<String>,
    /// userPrincipalName (users).
    pub upn: Option<String>,
    /// onPremisesImmutableId.
    pub immutable_id: Option<String>,
    /// mail.
    pub mail: Option<String>,
    /// proxyAddresses as written (`SMTP:a@b`).
    pub proxy_addresses: Vec<String>,
    /// True for a mail-enabled group.
    pub mail_enabled: bool,
    /// onPremisesSyncEnabled.
    pub sync_enabled: bool,
    /// Names of the admin roles it holds.
    pub admin_roles: Vec<String>,
}

impl CloudObject {
    /// The primary SMTP address, lower case: the `SMTP:` proxy address, else `mail`.
    pub fn primary_smtp(&self) -> Option<String> {
        self.proxy_addresses
            .iter()
            .find_map(|p| p.strip_prefix("SMTP:"))
            .or(self.mail.as_deref())
            .map(str::to_lowercase)
    }
}

/// A domain of the tenant.
#[derive(Clone, Debug)]
pub struct TenantDomain {
    /// The name, lower case.
    pub name: String,
    /// Verified.
    pub verified: bool,
    /// The initial `*.onmicrosoft.com` domain.
    pub initial: bool,
    /// The default domain for new users.
    pub default: bool,
    /// `Managed` or `Federated`.
    pub authentication: String,
}

/// Everything known of the tenant.
#[derive(Clone, Debug, Default)]
pub struct TenantSnapshot {
    /// Its domains.
    pub domains: Vec<TenantDomain>,
    /// Its users, groups and contacts.
    pub objects: Vec<CloudObject>,
}

impl TenantSnapshot {
    /// The verified domain of this (lowercase) name.
    pub fn verified_domain(&self, name: &str) -> Option<&TenantDomain> {
        self.domains.iter().find(|d| d.verified && d.name.eq_ignore_ascii_case(name))
    }

    /// The initial domain (`contoso.onmicrosoft.com`).
    pub fn initial_domain(&self) -> Option<&str> {
        self.domains
            .iter()
            .find(|d| d.initial)
            .or_else(|| self.domains.iter().find(|d| d.name.ends_with(".onmicrosoft.com")))
            .map(|d| d.name.as_str())
    }

    /// Reads Graph-shaped JSON (see the module documentation).
    pub fn from_graph_json(text: &str) -> Result<Self> {
        let file: GraphFile = serde_json::from_str(text)
            .map_err(|e| AssessError::Tenant(format!("line {}, column {}: {e}", e.line(), e.column())))?;
        if let Some(key) = file.other.keys().find(|k| !k.starts_with('@')) {
            let hint = if key == "value" {
                "this looks like one Graph response; put each response under its collection name"
            } else {
                "not a collection this file can hold"
            };
            return Err(AssessError::Tenant(format!(
                "unknown top-level member `{key}` ({hint}: {})",
                COLLECTIONS.join(", ")
            )));
        }
        // A collection that still has a next page would make every object on the missing pages
        // look absent (and its on-premises twin "new"): refuse it.
        for (name, next) in [
            ("domains", file.domains.as_ref().and_then(|c| c.next_link.as_ref())),
            ("users", file.users.as_ref().and_then(|c| c.next_link.as_ref())),
            ("groups", file.groups.as_ref().and_then(|c| c.next_link.as_ref())),
            ("orgContacts", file.org_contacts.as_ref().and_then(|c| c.next_link.as_ref())),
            ("directoryRoles", file.directory_roles.as_ref().and_then(|c| c.next_link.as_ref())),
        ] {
            if next.is_some() {
                return Err(AssessError::Tenant(format!(
                    "`{name}` is one page of several (it has an @odata.nextLink): merge every page's `value` into one array"
                )));
            }
        }
        if file.domains.as_ref().is_none_or(|d| d.value.is_empty()) {
            return Err(AssessError::Tenant(
                "no `domains` collection, or an empty one (GET /v1.0/domains lists at least the initial onmicrosoft.com domain): without it every domain would look unverified"
                    .into(),
            ));
        }
        let mut roles: HashMap<String, Vec<String>> = HashMap::new();
        for role in file.directory_roles.map(|c| c.value).unwrap_or_default() {
            let name = role.display_name.unwrap_or_else(|| role.id.clone());
            for member in role.members {
                roles.entry(member.id).or_default().push(name.clone());
            }
        }
        let mut objects = Vec::new();
        let mut ids: BTreeMap<String, ()> = BTreeMap::new();
        let mut check_id = |id: &str, what: &str| -> Result<()> {
            if id.is_empty() {
                return Err(AssessError::Tenant(format!("a {what} has an empty id")));
            }
            if ids.insert(id.to_owned(), ()).is_some() {
                return Err(AssessError::Tenant(format!("the id {id} appears twice")));
            }
            Ok(())
        };
        for u in file.users.map(|c| c.value).unwrap_or_default() {
            check_id(&u.id, "user")?;
            objects.push(CloudObject {
                admin_roles: roles.remove(&u.id).unwrap_or_default(),
                id: u.id,
                kind: CloudKind::User,
                display_name: u.display_name,
                upn: u.user_principal_name,
                immutable_id: u.on_premises_immutable_id.filter(|s| !s.is_empty()),
                mail: u.mail,
                proxy_addresses: u.proxy_addresses,
                mail_enabled: true,
                sync_enabled: u.on_premises_sync_enabled.unwrap_or(false),
            });
        }
        for g in file.groups.map(|c| c.value).unwrap_or_default() {
            check_id(&g.id, "group")?;
            objects.push(CloudObject {
                admin_roles: roles.remove(&g.id).unwrap_or_default(),
                id: g.id,
                kind: CloudKind::Group,
                display_name: g.display_name,
                upn: None,
                immutable_id: g.on_premises_immutable_id.filter(|s| !s.is_empty()),
                mail: g.mail,
                proxy_addresses: g.proxy_addresses,
                mail_enabled: g.mail_enabled.unwrap_or(false),
                sync_enabled: g.on_premises_sync_enabled.unwrap_or(false),
            });
        }
        for c in file.org_contacts.map(|c| c.value).unwrap_or_default() {
            check_id(&c.id, "contact")?;
            objects.push(CloudObject {
                admin_roles: Vec::new(),
                id: c.id,
                kind: CloudKind::Contact,
                display_name: c.display_name,
                upn: None,
                immutable_id: c.on_premises_immutable_id.filter(|s| !s.is_empty()),
                mail: c.mail,
                proxy_addresses: c.proxy_addresses,
                mail_enabled: true,
                sync_enabled: c.on_premises_sync_enabled.unwrap_or(false),
            });
        }
        let domains = file
            .domains
            .map(|c| c.value)
            .unwrap_or_default()
            .into_iter()
            .map(|d| TenantDomain {
                name: d.id.to_ascii_lowercase(),
                verified: d.is_verified,
                initial: d.is_initial,
                default: d.is_default,
                authentication: d.authentication_type.unwrap_or_else(|| "Managed".into()),
            })
            .collect();
        Ok(Self { domains, objects })
    }
}

impl TenantSnapshot {
    /// The tenant as a Graph connector's full import gives it: objects of class `domain`,
    /// `user` and `group` with their Graph attribute names (users carry `adminRoles`). Refused
    /// without an initial domain, like a tenant file without `domains`.
    pub fn from_cloud_objects<'o>(objects: impl IntoIterator<Item = &'o CsObject>) -> Result<Self> {
        let text = |o: &CsObject, name: &str| {
            o.attributes
                .get(name)
                .and_then(|v| v.texts())
                .and_then(|t| t.first().cloned())
                .filter(|s| !s.is_empty())
        };
        let texts = |o: &CsObject, name: &str| {
            o.attributes.get(name).and_then(|v| v.texts()).map(<[String]>::to_vec).unwrap_or_default()
        };
        let flag = |o: &CsObject, name: &str| match o.attributes.get(name) {
            Some(AttrValues::Boolean(v)) => v.first().copied().unwrap_or(false),
            Some(AttrValues::String(v)) => v.first().is_some_and(|s| s.eq_ignore_ascii_case("true")),
            _ => false,
        };
        let mut out = Self::default();
        for o in objects {
            let id = text(o, "id").unwrap_or_else(|| o.anchor.as_str().to_owned());
            let kind = match o.object_class.to_ascii_lowercase().as_str() {
                "domain" => {
                    out.domains.push(TenantDomain {
                        name: id.to_ascii_lowercase(),
                        verified: flag(o, "isVerified"),
                        initial: flag(o, "isInitial"),
                        default: flag(o, "isDefault"),
                        authentication: text(o, "authenticationType").unwrap_or_else(|| "Managed".into()),
                    });
                    continue;
                }
                "user" => CloudKind::User,
                "group" => CloudKind::Group,
                "contact" | "orgcontact" => CloudKind::Contact,
                _ => continue,
            };
            out.objects.push(CloudObject {
                id,
                kind,
                display_name: text(o, "displayName"),
                upn: text(o, "userPrincipalName"),
                immutable_id: text(o, "onPremisesImmutableId"),
                mail: text(o, "mail"),
                proxy_addresses: texts(o, "proxyAddresses"),
                mail_enabled: kind != CloudKind::Group || flag(o, "mailEnabled"),
                sync_enabled: flag(o, "onPremisesSyncEnabled"),
                admin_roles: texts(o, "adminRoles"),
            });
        }
        if out.domains.is_empty() {
            return Err(AssessError::Tenant(
                "the cloud connector gave no domains (GET /v1.0/domains lists at least the initial onmicrosoft.com domain; the app may lack Domain.Read.All): without them every domain would look unverified"
                    .into(),
            ));
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphFile {
    domains: Option<Collection<GraphDomain>>,
    users: Option<Collection<GraphUser>>,
    groups: Option<Collection<GraphMailObject>>,
    org_contacts: Option<Collection<GraphMailObject>>,
    directory_roles: Option<Collection<GraphRole>>,
    /// Any other member: only annotations (`@odata.context`, `@comment`...) are allowed.
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// The collections a tenant file holds.
const COLLECTIONS: [&str; 5] = ["domains", "users", "groups", "orgContacts", "directoryRoles"];

#[derive(Deserialize)]
struct Collection<T> {
    value: Vec<T>,
    /// Present on a page that is not the last: the collection is incomplete.
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphDomain {
    id: String,
    #[serde(default)]
    is_verified: bool,
    #[serde(default)]
    is_initial: bool,
    #[serde(default)]
    is_default: bool,
    authentication_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphUser {
    id: String,
    display_name: Option<String>,
    user_principal_name: Option<String>,
    on_premises_immutable_id: Option<String>,
    mail: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    proxy_addresses: Vec<String>,
    on_premises_sync_enabled: Option<bool>,
}

/// A group or an organizational contact (contacts have no `mailEnabled`: they always are).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphMailObject {
    id: String,
    display_name: Option<String>,
    mail: Option<String>,
    mail_enabled: Option<bool>,
    on_premises_immutable_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    proxy_addresses: Vec<String>,
    on_premises_sync_enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphRole {
    id: String,
    display_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    members: Vec<GraphRef>,
}

#[derive(Deserialize)]
struct GraphRef {
    id: String,
}

fn null_as_empty<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloud_connector_space_reads_as_a_tenant() {
        use syncctl_core::{Anchor, Attributes, Dn};
        let object = |class: &str, id: &str, attrs: &[(&str, AttrValues)]| {
            let mut attributes = Attributes::new();
            attributes.insert("id", AttrValues::String(vec![id.to_owned()]));
            for (n, v) in attrs {
                attributes.insert(*n, v.clone());
            }
            CsObject {
                anchor: Anchor::new(id.to_lowercase()).unwrap(),
                immutable_id: None,
                dn: Dn::parse(&format!("CN={id},CN={class}s")).unwrap(),
                object_class: class.into(),
                attributes,
            }
        };
        let s = |v: &[&str]| AttrValues::String(v.iter().map(|x| (*x).to_owned()).collect());
        let yes = AttrValues::Boolean(vec![true]);
        let objects = [
            object(
                "domain",
                "Contoso.onmicrosoft.com",
                &[("isVerified", yes.clone()), ("isInitial", yes.clone())],
            ),
            object(
                "domain",
                "corp.example.com",
                &[("isVerified", yes.clone()), ("authenticationType", s(&["Federated"]))],
            ),
            object("domain", "pending.example.net", &[("isVerified", AttrValues::Boolean(vec![false]))]),
            object(
                "user",
                "u1",
                &[
                    ("userPrincipalName", s(&["alice@corp.example.com"])),
                    ("onPremisesImmutableId", s(&["AAECAwQFBgcICQoLDA0ODw=="])),
                    ("proxyAddresses", s(&["SMTP:alice@corp.example.com"])),
                    ("adminRoles", s(&["Global Administrator"])),
                    ("onPremisesSyncEnabled", yes.clone()),
                ],
            ),
            object(
                "group",
                "g1",
                &[("displayName", s(&["Sales"])), ("mailEnabled", AttrValues::Boolean(vec![false]))],
            ),
        ];
        let t = TenantSnapshot::from_cloud_objects(&objects).unwrap();
        assert_eq!(t.initial_domain(), Some("contoso.onmicrosoft.com"));
        assert_eq!(
            t.verified_domain("CORP.example.com").map(|d| d.authentication.as_str()),
            Some("Federated")
        );
        assert!(t.verified_domain("pending.example.net").is_none());
        assert_eq!(t.objects.len(), 2);
        let u = &t.objects[0];
        assert_eq!((u.kind, u.upn.as_deref()), (CloudKind::User, Some("alice@corp.example.com")));
        assert_eq!(u.immutable_id.as_deref(), Some("AAECAwQFBgcICQoLDA0ODw=="));
        assert_eq!(
            (u.admin_roles.as_slice(), u.sync_enabled),
            (&["Global Administrator".to_owned()][..], true)
        );
        assert_eq!(u.primary_smtp().as_deref(), Some("alice@corp.example.com"));
        let g = &t.objects[1];
        assert_eq!(
            (g.kind, g.mail_enabled, g.display_name.as_deref()),
            (CloudKind::Group, false, Some("Sales"))
        );
        let e = TenantSnapshot::from_cloud_objects(&objects[3..]).unwrap_err().to_string();
        assert!(e.contains("no domains"), "{e}");
    }

    #[test]
    fn graph_shaped_json_is_read_with_roles_and_domains() {
        let t = TenantSnapshot::from_graph_json(
            r##"{
              "@odata.context": "https://graph.microsoft.com/v1.0/$metadata",
              "domains": {"value": [
                {"id": "contoso.onmicrosoft.com", "isVerified": true, "isInitial": true, "authenticationType": "Managed"},
                {"id": "Corp.Example.com", "isVerified": true, "authenticationType": "Federated"},
                {"id": "pending.example.net", "isVerified": false}]},
              "users": {"@odata.nextLink": null, "value": [
                {"id": "u1", "userPrincipalName": "admin@contoso.onmicrosoft.com", "proxyAddresses": null},
                {"id": "u2", "userPrincipalName": "alice@corp.example.com", "onPremisesImmutableId": "",
                 "proxyAddresses": ["SMTP:Alice@corp.example.com"], "onPremisesSyncEnabled": null}]},
              "groups": {"value": [{"id": "g1", "displayName": "Sales", "mailEnabled": true, "mail": "sales@corp.example.com"}]},
              "directoryRoles": {"value": [{"id": "r1", "displayName": "Global Administrator", "members": [{"@odata.type": "#microsoft.graph.user", "id": "u1"}]}]}
            }"##,
        )
        .unwrap();
        assert_eq!(t.initial_domain(), Some("contoso.onmicrosoft.com"));
        assert_eq!(
            t.verified_domain("corp.example.com").map(|d| d.authentication.as_str()),
            Some("Federated")
        );
        assert!(t.verified_domain("pending.example.net").is_none());
        assert_eq!(t.objects.len(), 3);
        assert_eq!(t.objects[0].admin_roles, ["Global Administrator"]);
        assert_eq!(t.objects[1].immutable_id, None, "an empty immutable id is none");
        assert_eq!(t.objects[1].primary_smtp().as_deref(), Some("alice@corp.example.com"));
        assert_eq!(t.objects[2].primary_smtp().as_deref(), Some("sales@corp.example.com"));
    }

    #[test]
    fn bad_json_names_the_line_and_duplicate_ids_are_refused() {
        let e = TenantSnapshot::from_graph_json("{\n\"users\": {\"value\": [{}]}}").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("id"), "{e}");
        let e = TenantSnapshot::from_graph_json(
            r#"{"domains": {"value": [{"id": "t.onmicrosoft.com"}]}, "users": {"value": [{"id": "a"}, {"id": "a"}]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("appears twice"), "{e}");
    }

    #[test]
    fn one_page_of_several_is_refused() {
        let e = TenantSnapshot::from_graph_json(
            r#"{"domains": {"value": [{"id": "t.onmicrosoft.com"}]}, "users": {"@odata.nextLink": "https://graph.microsoft.com/v1.0/users?$skiptoken=x", "value": []}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`users` is one page of several"), "{e}");
    }

    #[test]
    fn a_bare_page_a_misspelt_collection_or_no_domains_is_refused() {
        let bare = r#"{"@odata.context": "x", "value": [{"id": "u1", "userPrincipalName": "a@b.com"}]}"#;
        let e = TenantSnapshot::from_graph_json(bare).unwrap_err().to_string();
        assert!(e.contains("unknown top-level member `value`") && e.contains("one Graph response"), "{e}");
        let misspelt = r#"{"domains": {"value": [{"id": "t.onmicrosoft.com"}]}, "user": {"value": []}}"#;
        let e = TenantSnapshot::from_graph_json(misspelt).unwrap_err().to_string();
        assert!(e.contains("`user`") && e.contains("users"), "{e}");
        let e = TenantSnapshot::from_graph_json(r#"{"users": {"value": []}}"#).unwrap_err().to_string();
        assert!(e.contains("no `domains` collection"), "{e}");
        let e = TenantSnapshot::from_graph_json("{}").unwrap_err().to_string();
        assert!(e.contains("no `domains` collection"), "{e}");
        let e = TenantSnapshot::from_graph_json(r#"{"domains": {"value": []}}"#).unwrap_err().to_string();
        assert!(e.contains("an empty one"), "{e}");
        let ok = TenantSnapshot::from_graph_json(
            r#"{"@odata.context": "x", "@comment": "annotations are fine", "domains": {"value": [{"id": "t.onmicrosoft.com", "isVerified": true, "isInitial": true}]}}"#,
        )
        .unwrap();
        assert!(ok.domains.len() == 1 && ok.objects.is_empty());
    }
}
