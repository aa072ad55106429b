//! Export: pending exports to POST / PATCH / DELETE and member `$ref`s.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Map, Value, json};
use syncctl_core::{Anchor, AttrValues, ExportFailure, ExportItem, ExportKind};

use crate::client::GraphClient;
use crate::error::GraphError;

/// User properties the connector writes (Graph's writable ones among those it reads).
const USER_WRITABLE: &[&str] = &[
    "userPrincipalName",
    "onPremisesImmutableId",
    "mail",
    "displayName",
    "givenName",
    "surname",
    "mailNickname",
    "accountEnabled",
    "department",
    "jobTitle",
    "employeeId",
];

/// Group properties the connector writes (`onPremisesImmutableId` is the emulator's, see README).
const GROUP_WRITABLE: &[&str] = &[
    "onPremisesImmutableId",
    "displayName",
    "mailNickname",
    "mailEnabled",
    "securityEnabled",
    "description",
];

/// What export can write, per object type (the engine stages nothing else): the writable
/// properties above, and a group's `members` (through `$ref`). Graph itself makes a user's
/// `proxyAddresses` and a group's `mail` and `proxyAddresses` read-only (Exchange Online derives
/// them), and this connector does not write `manager`.
pub fn schema() -> std::collections::BTreeMap<String, Vec<String>> {
    let list = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let mut groups = list(GROUP_WRITABLE);
    groups.push("members".into());
    [
        ("user".to_owned(), list(USER_WRITABLE)),
        ("group".to_owned(), groups),
        ("contact".to_owned(), Vec::new()),
    ]
    .into_iter()
    .collect()
}

fn collection(object_type: &str) -> Option<&'static str> {
    match object_type {
        "user" => Some("users"),
        "group" => Some("groups"),
        _ => None,
    }
}

fn failure(kind: &str, message: String, retryable: bool) -> ExportFailure {
    ExportFailure { kind: kind.into(), message, retryable }
}

/// Graph's refusal as an Entra error name:
/// - `ObjectConflict` (duplicate UPN, proxyAddress, ImmutableID) -> `AttributeValueMustBeUnique`;
/// - a UPN domain that is not verified, or another invalid property -> `IdentityDataValidationFailed`;
/// - a write to an object synchronized by another engine (`onPremisesSyncEnabled`) ->
///   `ObjectSynchronizedFromOnPremises` (reported, not fought);
/// - 404 -> `ObjectNotFound`; 429/5xx/transport -> `ServiceUnavailable` (retryable).
pub fn entra_failure(what: &str, e: &GraphError) -> ExportFailure {
    match e {
        GraphError::Http { status: 400, detail: Some(d), message, .. } if d == "ObjectConflict" => {
            failure("AttributeValueMustBeUnique", format!("{what}: {message}"), false)
        }
        GraphError::Http { status: 400, message, .. }
            if message.to_ascii_lowercase().contains("onpremisessyncenabled")
                || message.to_ascii_lowercase().contains("on-premises") =>
        {
            failure("ObjectSynchronizedFromOnPremises", format!("{what}: {message}"), false)
        }
        GraphError::Http { status: 400, message, .. } => {
            failure("IdentityDataValidationFailed", format!("{what}: {message}"), false)
        }
        GraphError::Http { status: 404, message, .. } => {
            failure("ObjectNotFound", format!("{what}: {message}"), false)
        }
        GraphError::Http { status: 401 | 403, message, .. } => {
            failure("AuthorizationFailed", format!("{what}: {message}"), false)
        }
        GraphError::Http { status, message, .. } if *status == 429 || *status >= 500 => {
            failure("ServiceUnavailable", format!("{what}: HTTP {status} {message}"), true)
        }
        GraphError::Transport(m) => failure("ServiceUnavailable", format!("{what}: {m}"), true),
        other => failure("ExportFailed", format!("{what}: {other}"), false),
    }
}

fn to_json(name: &str, v: &Option<AttrValues>) -> Value {
    let Some(v) = v else { return Value::Null };
    let bool_prop = matches!(name, "accountEnabled" | "mailEnabled" | "securityEnabled");
    match v {
        AttrValues::Boolean(b) => b.first().map(|b| json!(b)).unwrap_or(Value::Null),
        AttrValues::Integer(i) => i.first().map(|i| json!(i)).unwrap_or(Value::Null),
        other => match other.first_text() {
            Some(t) if bool_prop => json!(t.eq_ignore_ascii_case("true")),
            Some(t) => json!(t),
            None => Value::Null,
        },
    }
}

/// The Graph body of an item: its writable attributes. Skipped names are returned.
fn body_of(item: &ExportItem) -> (Map<String, Value>, Vec<String>) {
    let writable = if item.object_type == "group" { GROUP_WRITABLE } else { USER_WRITABLE };
    let mut body = Map::new();
    let mut skipped = Vec::new();
    for (name, value) in &item.attributes {
        if name == "members" {
            continue;
        }
        if writable.contains(&name.as_str()) {
            body.insert(name.clone(), to_json(name, value));
        } else {
            skipped.push(name.clone());
        }
    }
    (body, skipped)
}

fn wanted_members(item: &ExportItem) -> Option<BTreeSet<String>> {
    item.attributes.iter().find(|(n, _)| n == "members").map(|(_, v)| match v {
        Some(AttrValues::Reference(r) | AttrValues::String(r)) => r.iter().cloned().collect(),
        _ => BTreeSet::new(),
    })
}

/// A random initial password: 2 x 122 random bits (UUID v4, OS randomness) plus the character
/// classes Entra's complexity rule wants. Never logged; nobody needs it (federated or reset).
fn random_password() -> String {
    format!("Aa1!{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn what(item: &ExportItem) -> String {
    let name = item
        .attributes
        .iter()
        .find(|(n, _)| n == "userPrincipalName" || n == "displayName")
        .and_then(|(_, v)| v.as_ref().and_then(|v| v.first_text().map(str::to_owned)));
    match (&item.anchor, name) {
        (Some(a), _) => format!("{} {a}", item.object_type),
        (None, Some(n)) => format!("{} {n}", item.object_type),
        (None, None) => format!("{} (export {})", item.object_type, item.id),
    }
}

/// Applies one item.
pub(crate) async fn apply(
    client: &mut GraphClient,
    item: &ExportItem,
) -> Result<Option<Anchor>, ExportFailure> {
    let what = what(item);
    let Some(coll) = collection(&item.object_type) else {
        return Err(failure(
            "ObjectTypeNotSupported",
            format!("{what}: the Graph connector writes only users and groups"),
            false,
        ));
    };
    let (body, skipped) = body_of(item);
    if !skipped.is_empty() {
        tracing::debug!(object = %what, ?skipped, "attributes not writable through Graph were not sent");
    }
    match item.kind {
        ExportKind::Add => add(client, item, coll, body, &what).await.map(Some),
        ExportKind::Update => {
            let id = anchor(item, &what)?;
            if !body.is_empty() {
                client
                    .send(Method::PATCH, &format!("/{coll}/{id}"), Some(&Value::Object(body)), true)
                    .await
                    .map_err(|e| entra_failure(&what, &e))?;
            }
            if let Some(wanted) = wanted_members(item) {
                set_members(client, &id, &wanted).await.map_err(|e| entra_failure(&what, &e))?;
            }
            Ok(None)
        }
        ExportKind::Delete => {
            let id = anchor(item, &what)?;
            match client.send(Method::DELETE, &format!("/{coll}/{id}"), None, true).await {
                Ok(_) | Err(GraphError::Http { status: 404, .. }) => Ok(None),
                Err(e) => Err(entra_failure(&what, &e)),
            }
        }
    }
}

fn anchor(item: &ExportItem, what: &str) -> Result<String, ExportFailure> {
    item.anchor
        .as_ref()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| failure("ExportFailed", format!("{what}: no anchor to update or delete"), false))
}

/// The object carrying `immutable_id`, if any.
async fn find_by_immutable_id(
    client: &mut GraphClient,
    coll: &str,
    immutable_id: &str,
) -> Result<Option<String>, GraphError> {
    let quoted = immutable_id.replace('\'', "''");
    let filter = format!("onPremisesImmutableId eq '{quoted}'");
    let path = format!("/{coll}?$select=id&$filter={}", encode(&filter));
    let found = client.get(&path).await?;
    Ok(crate::client::values(&found)
        .first()
        .and_then(|o| o.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned))
}

/// Percent-encoding of a query value.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn add(
    client: &mut GraphClient,
    item: &ExportItem,
    coll: &str,
    mut body: Map<String, Value>,
    what: &str,
) -> Result<Anchor, ExportFailure> {
    let immutable_id = body
        .get("onPremisesImmutableId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    body.retain(|_, v| !v.is_null());
    if coll == "users" {
        body.entry("accountEnabled").or_insert(json!(true));
        body.insert(
            "passwordProfile".into(),
            json!({"forceChangePasswordNextSignIn": false, "password": random_password()}),
        );
    } else {
        body.entry("securityEnabled").or_insert(json!(true));
        body.entry("mailEnabled").or_insert(json!(false));
    }
    if !body.contains_key("mailNickname") {
        let source = body
            .get("userPrincipalName")
            .and_then(Value::as_str)
            .and_then(|u| u.split('@').next())
            .or_else(|| body.get("displayName").and_then(Value::as_str))
            .unwrap_or("object");
        let nick: String =
            source.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
        body.insert("mailNickname".into(), json!(if nick.is_empty() { "object".into() } else { nick }));
    }
    let body = Value::Object(body);
    let mut uncertain = item.uncertain;
    let mut attempts = 0;
    let id = loop {
        attempts += 1;
        if uncertain && let Some(imm) = &immutable_id {
            match find_by_immutable_id(client, coll, imm).await {
                Ok(Some(id)) => {
                    tracing::info!(object = %what, %id, "an earlier attempt had created it; not created again");
                    break id;
                }
                Ok(None) => {}
                Err(e) => return Err(entra_failure(what, &e)),
            }
        }
        // POST is not idempotent: a cut connection is not retried blindly but looked up first.
        match client.send(Method::POST, &format!("/{coll}"), Some(&body), false).await {
            Ok(answer) => match answer.body.get("id").and_then(Value::as_str) {
                Some(id) => break id.to_owned(),
                None => {
                    return Err(failure(
                        "ExportFailed",
                        format!("{what}: created, but Graph sent no id"),
                        true,
                    ));
                }
            },
            // Without an ImmutableID nothing identifies an earlier attempt: leave it to the engine.
            Err(GraphError::Transport(m)) if immutable_id.is_none() => {
                return Err(failure(
                    "ServiceUnavailable",
                    format!("{what}: create cut ({m}); outcome unknown"),
                    true,
                ));
            }
            Err(GraphError::Transport(m)) if attempts < 4 => {
                tracing::warn!(object = %what, error = %m, "create cut; looking it up before sending again");
                uncertain = true;
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempts)).await;
            }
            Err(e) => return Err(entra_failure(what, &e)),
        }
    };
    if let Some(wanted) = wanted_members(item)
        && coll == "groups"
    {
        set_members(client, &id, &wanted).await.map_err(|e| entra_failure(what, &e))?;
    }
    Anchor::new(id).map_err(|e| failure("ExportFailed", format!("{what}: {e}"), false))
}

/// Makes the group's members exactly `wanted` (ids) with `$ref` adds and removes.
async fn set_members(
    client: &mut GraphClient,
    group: &str,
    wanted: &BTreeSet<String>,
) -> Result<(), GraphError> {
    let top = client.config().page_size;
    let current: BTreeSet<String> = client
        .get_all(&format!("/groups/{group}/members?$select=id&$top={top}"))
        .await?
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let base = client.config().graph_url.trim_end_matches('/').to_owned();
    for id in wanted.difference(&current) {
        let body = json!({"@odata.id": format!("{base}/directoryObjects/{id}")});
        match client.send(Method::POST, &format!("/groups/{group}/members/$ref"), Some(&body), true).await {
            Ok(_) => {}
            // Already a member (an earlier attempt got through).
            Err(GraphError::Http { status: 400, message, .. })
                if message.to_ascii_lowercase().contains("already exist") => {}
            Err(e) => return Err(e),
        }
    }
    for id in current.difference(wanted) {
        match client.send(Method::DELETE, &format!("/groups/{group}/members/{id}/$ref"), None, true).await {
            Ok(_) | Err(GraphError::Http { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
