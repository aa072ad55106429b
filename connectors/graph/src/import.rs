//! Full and delta import: Graph objects to connector-space objects.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use syncctl_core::{
    AttrName, AttrValues, Attributes, CsObject, Dn, ImportBatch, ImportChange, ObjectError, ValueDelta,
    Watermark,
};
use tokio::sync::mpsc;

use crate::client::{GraphClient, items};
use crate::error::{GraphError, Result};

/// User properties read (`$select`).
pub const USER_SELECT: &[&str] = &[
    "id",
    "userPrincipalName",
    "onPremisesImmutableId",
    "onPremisesSyncEnabled",
    "mail",
    "proxyAddresses",
    "displayName",
    "givenName",
    "surname",
    "mailNickname",
    "accountEnabled",
    "department",
    "jobTitle",
    "employeeId",
];

/// Group properties read (`$select`).
pub const GROUP_SELECT: &[&str] = &[
    "id",
    "onPremisesImmutableId",
    "onPremisesSyncEnabled",
    "mail",
    "proxyAddresses",
    "displayName",
    "mailNickname",
    "mailEnabled",
    "securityEnabled",
    "description",
];

/// Watermark kind of this connector.
pub const WATERMARK_KIND: &str = "graph-delta";

/// What was read, for the summary.
#[derive(Default)]
pub(crate) struct Progress {
    pub pages: u64,
}

/// The two deltaLinks, stored as the watermark's value (JSON).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct DeltaLinks {
    pub users: String,
    pub groups: String,
}

impl DeltaLinks {
    pub fn to_watermark(&self, server: &str) -> Result<Watermark> {
        let value = serde_json::to_vec(self).map_err(|e| GraphError::Protocol(e.to_string()))?;
        Ok(Watermark { kind: WATERMARK_KIND.into(), value, server: server.into(), extra: BTreeMap::new() })
    }
    pub fn from_watermark(w: &Watermark, server: &str) -> Option<Self> {
        if w.kind != WATERMARK_KIND || w.server != server {
            return None;
        }
        serde_json::from_slice(&w.value).ok()
    }
}

async fn send(tx: &mpsc::Sender<ImportBatch>, batch: ImportBatch) -> Result<()> {
    tx.send(batch).await.map_err(|_| GraphError::Protocol("cancelled: the engine stopped reading".into()))
}

/// Names of the directory roles each user holds (`/directoryRoles?$expand=members`).
pub(crate) async fn admin_roles(client: &mut GraphClient) -> Result<HashMap<String, Vec<String>>> {
    let roles = client.get_all("/directoryRoles?$expand=members").await?;
    let mut by_user: HashMap<String, Vec<String>> = HashMap::new();
    for role in roles {
        let Some(name) = role.get("displayName").and_then(Value::as_str) else { continue };
        for m in role.get("members").and_then(Value::as_array).into_iter().flatten() {
            if let Some(id) = m.get("id").and_then(Value::as_str) {
                by_user.entry(id.to_owned()).or_default().push(name.to_owned());
            }
        }
    }
    for names in by_user.values_mut() {
        names.sort();
        names.dedup();
    }
    Ok(by_user)
}

/// Walks a delta query from its start to its deltaLink, discarding the objects: taken before a
/// full read, so that changes made during the read show up in the next delta.
pub(crate) async fn initial_delta_link(client: &mut GraphClient, path: &str) -> Result<String> {
    let mut next = path.to_owned();
    loop {
        let page = client.get(&next).await?;
        if let Some(d) = page.get("@odata.deltaLink").and_then(Value::as_str) {
            return Ok(d.to_owned());
        }
        next = page
            .get("@odata.nextLink")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::Protocol("delta page without nextLink or deltaLink".into()))?
            .to_owned();
    }
}

/// Object class of the tenant's domains in the connector space.
pub const DOMAIN_CLASS: &str = "domain";

/// The tenant's domains (`GET /domains`), every page one batch of `domain` objects (see the crate
/// documentation for their contract). A 403 (the app may not read domains) is not an error: no
/// domain is emitted and a note says so.
/// <https://learn.microsoft.com/en-us/graph/api/domain-list>
pub(crate) async fn domains(
    client: &mut GraphClient,
    tx: &mpsc::Sender<ImportBatch>,
    progress: &mut Progress,
    notes: &mut Vec<String>,
    full: bool,
) -> Result<()> {
    let mut next = Some("/domains".to_owned());
    while let Some(p) = next {
        let page = match client.get(&p).await {
            Ok(page) => page,
            Err(GraphError::Http { status: 403, code, .. }) => {
                notes.push(format!(
                    "GET /domains refused (403 {code}): the app may not read the tenant's domains \
                     (Domain.Read.All); no domain objects imported{}",
                    if full { ", and this full import removes those imported before" } else { "" }
                ));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        progress.pages += 1;
        let changes = items(&page).iter().map(domain_change).collect();
        send(tx, ImportBatch { changes, watermark: None }).await?;
        next = page.get("@odata.nextLink").and_then(Value::as_str).map(str::to_owned);
    }
    Ok(())
}

/// A Graph domain as a connector-space object: anchor = the name in lower case, DN
/// `CN=<name in lower case>,CN=domains`, attributes `id`, `isVerified`, `isInitial`, `isDefault`,
/// `authenticationType`.
fn domain_change(d: &Value) -> ImportChange {
    let Some(name) = d.get("id").and_then(Value::as_str).filter(|n| !n.trim().is_empty()) else {
        return invalid(d, "domain");
    };
    let lower = name.to_lowercase();
    let (Ok(anchor), Ok(dn)) =
        (syncctl_core::Anchor::new(lower.clone()), Dn::parse(&format!("CN={lower},CN=domains")))
    else {
        return invalid(d, "domain");
    };
    let mut attributes = Attributes::new();
    attributes.insert("id", AttrValues::String(vec![name.to_owned()]));
    for flag in ["isVerified", "isInitial", "isDefault"] {
        let b = d.get(flag).and_then(Value::as_bool).unwrap_or(false);
        attributes.insert(flag, AttrValues::Boolean(vec![b]));
    }
    if let Some(t) = d.get("authenticationType").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        attributes.insert("authenticationType", AttrValues::String(vec![t.to_owned()]));
    }
    let mut o = CsObject { anchor, immutable_id: None, dn, object_class: DOMAIN_CLASS.into(), attributes };
    o.normalize();
    ImportChange::Present(o)
}

/// Full import: users (with roles), then groups (with members). Every page is a batch.
pub(crate) async fn full(
    client: &mut GraphClient,
    tx: &mpsc::Sender<ImportBatch>,
    progress: &mut Progress,
) -> Result<()> {
    let top = client.config().page_size;
    let roles = admin_roles(client).await?;
    let mut next = Some(format!("/users?$select={}&$top={top}", USER_SELECT.join(",")));
    while let Some(p) = next {
        let page = client.get(&p).await?;
        progress.pages += 1;
        let changes = items(&page).iter().map(|u| user_change(u, &roles)).collect();
        send(tx, ImportBatch { changes, watermark: None }).await?;
        next = page.get("@odata.nextLink").and_then(Value::as_str).map(str::to_owned);
    }
    let mut next = Some(format!("/groups?$select={}&$top={top}", GROUP_SELECT.join(",")));
    while let Some(p) = next {
        let page = client.get(&p).await?;
        progress.pages += 1;
        // The members of the page's groups, read 20 groups to a `$batch`.
        let groups = items(&page);
        let paths: Vec<String> = groups
            .iter()
            .filter_map(|g| g.get("id").and_then(Value::as_str))
            .map(|id| format!("/groups/{id}/members?$select=id&$top={top}"))
            .collect();
        let mut members = client.get_all_ids_batched(&paths, &mut Vec::new()).await?.into_iter();
        let mut changes = Vec::new();
        for g in groups {
            if g.get("id").and_then(Value::as_str).is_none() {
                changes.push(invalid(g, "group"));
                continue;
            }
            let ids = members.next().unwrap_or_default();
            changes.push(match to_object(g, "group", GROUP_SELECT) {
                Some(mut o) => {
                    o.attributes.insert("members", AttrValues::Reference(ids));
                    o.normalize();
                    ImportChange::Present(o)
                }
                None => invalid(g, "group"),
            });
        }
        send(tx, ImportBatch { changes, watermark: None }).await?;
        next = page.get("@odata.nextLink").and_then(Value::as_str).map(str::to_owned);
    }
    Ok(())
}

/// Delta import from stored deltaLinks; returns the new links.
pub(crate) async fn delta(
    client: &mut GraphClient,
    links: DeltaLinks,
    tx: &mpsc::Sender<ImportBatch>,
    progress: &mut Progress,
) -> Result<DeltaLinks> {
    let roles = admin_roles(client).await?;
    let mut next = links.users;
    let users = loop {
        let page = client.get(&next).await?;
        progress.pages += 1;
        let mut changes = Vec::new();
        for u in items(&page) {
            if u.get("@removed").is_some() {
                changes.push(removed(u, "users"));
            } else {
                changes.push(user_change(u, &roles));
            }
        }
        send(tx, ImportBatch { changes, watermark: None }).await?;
        if let Some(d) = page.get("@odata.deltaLink").and_then(Value::as_str) {
            break d.to_owned();
        }
        next = next_link(&page)?;
    };
    let mut next = links.groups;
    let groups = loop {
        let page = client.get(&next).await?;
        progress.pages += 1;
        let mut changes = Vec::new();
        for g in items(&page) {
            if g.get("@removed").is_some() {
                changes.push(removed(g, "groups"));
                continue;
            }
            let Some(mut o) = to_object(g, "group", GROUP_SELECT) else {
                changes.push(invalid(g, "group"));
                continue;
            };
            o.normalize();
            let mut add = Vec::new();
            let mut remove = Vec::new();
            for m in g.get("members@delta").and_then(Value::as_array).into_iter().flatten() {
                let Some(id) = m.get("id").and_then(Value::as_str) else { continue };
                if m.get("@removed").is_some() { remove.push(id.to_owned()) } else { add.push(id.to_owned()) }
            }
            let mut value_deltas = BTreeMap::new();
            value_deltas.insert(
                AttrName::new("members"),
                ValueDelta { add: AttrValues::Reference(add), remove: AttrValues::Reference(remove) },
            );
            changes.push(ImportChange::Incremental { object: o, value_deltas });
        }
        send(tx, ImportBatch { changes, watermark: None }).await?;
        if let Some(d) = page.get("@odata.deltaLink").and_then(Value::as_str) {
            break d.to_owned();
        }
        next = next_link(&page)?;
    };
    Ok(DeltaLinks { users, groups })
}

fn next_link(page: &Value) -> Result<String> {
    page.get("@odata.nextLink")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| GraphError::Protocol("delta page without nextLink or deltaLink".into()))
}

fn user_change(u: &Value, roles: &HashMap<String, Vec<String>>) -> ImportChange {
    match to_object(u, "user", USER_SELECT) {
        Some(mut o) => {
            let held = roles.get(o.anchor.as_str()).cloned().unwrap_or_default();
            if !held.is_empty() {
                o.attributes.insert("adminRoles", AttrValues::String(held));
            }
            o.normalize();
            ImportChange::Present(o)
        }
        None => invalid(u, "user"),
    }
}

fn removed(v: &Value, container: &str) -> ImportChange {
    match v.get("id").and_then(Value::as_str).and_then(|id| syncctl_core::Anchor::new(id).ok()) {
        Some(anchor) => {
            let dn = Dn::parse(&format!("CN={},CN={container}", anchor.as_str())).ok();
            ImportChange::Deleted { anchor, dn }
        }
        None => invalid(v, container),
    }
}

fn invalid(v: &Value, kind: &str) -> ImportChange {
    ImportChange::Invalid(ObjectError {
        anchor: None,
        dn: String::new(),
        kind: "invalid-anchor".into(),
        message: format!(
            "a {kind} without a usable id: {}",
            v.get("displayName")
                .and_then(Value::as_str)
                .or_else(|| v.get("id").and_then(Value::as_str))
                .unwrap_or("(no displayName)")
        ),
    })
}

/// The DN of a Graph object: `CN=<id>,CN=users` or `CN=<id>,CN=groups`.
pub fn dn_of(object_class: &str, id: &str) -> String {
    let container = if object_class == "group" { "groups" } else { "users" };
    format!("CN={id},CN={container}")
}

/// A Graph object (JSON) as a connector-space object; `None` without an id.
pub(crate) fn to_object(v: &Value, object_class: &str, props: &[&str]) -> Option<CsObject> {
    let id = v.get("id").and_then(Value::as_str)?;
    let anchor = syncctl_core::Anchor::new(id).ok()?;
    let dn = Dn::parse(&dn_of(object_class, id)).ok()?;
    let mut attributes = Attributes::new();
    for p in props {
        let Some(value) = v.get(*p) else { continue };
        if let Some(values) = json_values(value) {
            attributes.insert(*p, values);
        }
    }
    Some(CsObject { anchor, immutable_id: None, dn, object_class: object_class.into(), attributes })
}

fn json_values(v: &Value) -> Option<AttrValues> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(AttrValues::Boolean(vec![*b])),
        Value::Number(n) => n.as_i64().map(|i| AttrValues::Integer(vec![i])),
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(AttrValues::String(vec![s.clone()])),
        Value::Array(a) => {
            let texts: Vec<String> = a.iter().filter_map(Value::as_str).map(str::to_owned).collect();
            (!texts.is_empty()).then_some(AttrValues::String(texts))
        }
        Value::Object(_) => None,
    }
}
