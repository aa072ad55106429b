//! Export: pending exports to Graph writes, sent through `$batch`.
//!
//! One call to [`export_all`] sends its writes in two rounds of `POST /$batch` (at most 20
//! requests each, several batches in flight): first the creates (`POST /users`, `POST /groups`
//! with up to 20 of its members bound by `members@odata.bind`), then everything else (one `PATCH`
//! per object with every changed attribute, member adds as `PATCH` with up to 20
//! `members@odata.bind`, member removes through `$ref`, `DELETE`s). Nothing in the second round
//! depends on a request of the same round, so no `dependsOn` is needed, and Graph may run them in
//! any order. A group create refused over a member it bound is sent again without its members,
//! which then go in the second round. Each item gets one outcome: an update or delete succeeds only
//! if all its requests do; an add succeeds once its create does (its object exists and its anchor
//! must reach the engine, or the engine would create it again), and a failed member change of a new
//! group is noted on it and exported again after the next import shows the group without that
//! member. A member add refused with "already exist" is taken as done (Graph adds none of a
//! request's members then; the next import shows any still missing, and they are exported again).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Map, Value, json};
use syncctl_core::{Anchor, AttrValues, ExportFailure, ExportItem, ExportKind, ExportOutcome};

use crate::client::{GraphClient, Resend, Write, Written};
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
        (crate::import::DOMAIN_CLASS.to_owned(), Vec::new()),
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

/// True for Graph's refusal to write an object that another directory-sync engine masters
/// (`onPremisesSyncEnabled`): "Unable to update the specified properties for on-premises mastered
/// Directory Sync objects or objects currently undergoing migration."
fn synchronized_elsewhere(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("on-premises mastered") || m.contains("onpremisessyncenabled")
}

/// Graph's refusal as an Entra error name:
/// - `ObjectConflict` (duplicate UPN, proxyAddress, ImmutableID) -> `AttributeValueMustBeUnique`;
/// - a write to an object another engine synchronizes from on-premises (`onPremisesSyncEnabled`)
///   -> `ObjectSynchronizedByAnotherEngine` (reported, not fought: never retried);
/// - a UPN domain that is not verified, or another invalid property -> `IdentityDataValidationFailed`;
/// - 404 -> `ObjectNotFound`; 401/403 -> `AuthorizationFailed`;
/// - 429/5xx/transport -> `ServiceUnavailable` (retryable).
pub fn entra_failure(what: &str, e: &GraphError) -> ExportFailure {
    match e {
        GraphError::Http { status: 400, detail: Some(d), message, .. } if d == "ObjectConflict" => {
            failure("AttributeValueMustBeUnique", format!("{what}: {message}"), false)
        }
        GraphError::Http { status: 400, message, .. } if synchronized_elsewhere(message) => failure(
            "ObjectSynchronizedByAnotherEngine",
            format!(
                "{what} is synchronized to Entra ID by another engine (onPremisesSyncEnabled, with an \
                 onPremisesImmutableId that is not the one syncctl exports): Graph refuses to change its \
                 on-premises-mastered attributes. Reported, not fought: syncctl does not retry or work \
                 around it; stop the other engine's sync of this object or take it out of syncctl's scope. \
                 Graph said: {message}"
            ),
            false,
        ),
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
        .find(|(n, _)| n == "userPrincipalName")
        .or_else(|| item.attributes.iter().find(|(n, _)| n == "displayName"))
        .and_then(|(_, v)| v.as_ref().and_then(|v| v.first_text().map(str::to_owned)));
    match (&item.anchor, name) {
        (Some(a), Some(n)) => format!("{} {a} ({n})", item.object_type),
        (Some(a), None) => format!("{} {a}", item.object_type),
        (None, Some(n)) => format!("{} {n}", item.object_type),
        (None, None) => format!("{} (export {})", item.object_type, item.id),
    }
}

/// What a second-round request does for its item (which refusals mean "already done").
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Patch,
    Delete,
    MemberAdd,
    MemberRemove,
}

/// The state of one item during a call.
struct Item<'a> {
    item: &'a ExportItem,
    what: String,
    coll: &'static str,
    body: Map<String, Value>,
    /// Decided: the item's failure.
    failure: Option<ExportFailure>,
    /// The object an add created (or found), and whether it was created in this call.
    created: Option<(String, bool)>,
    /// The members a group's create bound with `members@odata.bind` (empty when none were).
    bound: Vec<String>,
    /// Why member changes of a created group failed (the add still succeeds).
    member_failures: Vec<String>,
    notes: Vec<String>,
}

impl Item<'_> {
    fn fail(&mut self, f: ExportFailure) {
        if self.failure.is_none() {
            self.failure = Some(f);
        }
    }
}

/// Applies the items of one call and reports one outcome per item, in order.
pub(crate) async fn export_all(client: &mut GraphClient, items: &[ExportItem]) -> Vec<ExportOutcome> {
    let mut states: Vec<Item<'_>> = items
        .iter()
        .map(|item| {
            let what = what(item);
            let (body, skipped) = body_of(item);
            if !skipped.is_empty() {
                tracing::debug!(object = %what, ?skipped, "attributes not writable through Graph were not sent");
            }
            let mut st = Item {
                item,
                what,
                coll: "",
                body,
                failure: None,
                created: None,
                bound: Vec::new(),
                member_failures: Vec::new(),
                notes: Vec::new(),
            };
            match collection(&item.object_type) {
                Some(c) => st.coll = c,
                None => st.fail(failure(
                    "ObjectTypeNotSupported",
                    format!(
                        "{}: the Graph connector writes only users and groups (contacts are out of scope)",
                        st.what
                    ),
                    false,
                )),
            }
            if item.kind != ExportKind::Add && item.anchor.is_none() {
                let m = format!("{}: no anchor to update or delete", st.what);
                st.fail(failure("ExportFailed", m, false));
            }
            st
        })
        .collect();

    // Round 1: the creates.
    let mut writes = Vec::new();
    let mut owners = Vec::new();
    for (n, st) in states.iter_mut().enumerate() {
        if st.failure.is_none() && st.item.kind == ExportKind::Add {
            let base = client.config().graph_url.trim_end_matches('/').to_owned();
            writes.push(create_write(st, true));
            if let Some(Value::Object(body)) = writes.last_mut().and_then(|w| w.body.as_mut())
                && !st.bound.is_empty()
            {
                let refs: Vec<Value> = st.bound.iter().map(|id| json!(member_url(&base, id))).collect();
                body.insert(MEMBERS_BIND.into(), Value::Array(refs));
            }
            owners.push(n);
        }
    }
    let results = client.write_all(writes).await;
    let mut unbound = Vec::new();
    for (n, written) in owners.into_iter().zip(results) {
        if let Some(st) = states.get_mut(n) {
            // A group whose create was refused over one of the members it bound (Graph refuses the
            // whole request, "no members are added in a request if an error condition exists"):
            // created again without them; its members then go one request at a time.
            if !st.bound.is_empty() && refused_over_a_reference(&written) {
                st.notes.extend(written.notes);
                let refusal = written.result.err().map(|e| e.to_string()).unwrap_or_default();
                st.notes.push(format!(
                    "created without its members: the create that bound them was refused ({refusal})"
                ));
                st.bound.clear();
                unbound.push(n);
                continue;
            }
            created(st, written);
        }
    }
    if !unbound.is_empty() {
        let mut writes = Vec::new();
        for n in &unbound {
            if let Some(st) = states.get_mut(*n) {
                writes.push(create_write(st, false));
            }
        }
        let results = client.write_all(writes).await;
        for (n, written) in unbound.into_iter().zip(results) {
            if let Some(st) = states.get_mut(n) {
                created(st, written);
            }
        }
    }

    // Round 2: the current members of groups whose members change (reads), then PATCH, $ref, DELETE.
    let mut writes = Vec::new();
    let mut owners: Vec<(usize, Part)> = Vec::new();
    for (n, st) in states.iter_mut().enumerate() {
        if st.failure.is_some() {
            continue;
        }
        for (part, write) in second_round(client, st).await {
            writes.push(write);
            owners.push((n, part));
        }
    }
    let labels: Vec<String> =
        writes.iter().map(|w: &Write| format!("{} {}", w.method, client.display_path(&w.path))).collect();
    let results = client.write_all(writes).await;
    for (((n, part), label), written) in owners.into_iter().zip(labels).zip(results) {
        if let Some(st) = states.get_mut(n) {
            settle(st, part, &label, written);
        }
    }

    states.into_iter().map(outcome).collect()
}

/// The create request of an add (a user gets `accountEnabled`, a random `passwordProfile` and a
/// `mailNickname` when the item has none; a group `securityEnabled`/`mailEnabled`).
fn create_write(st: &mut Item<'_>, bind_members: bool) -> Write {
    let mut body = st.body.clone();
    // Up to 20 members are bound at the create itself (one write instead of one per member):
    // "you can add up to 20 members" in one request, owners included (the connector sets none).
    // <https://learn.microsoft.com/en-us/graph/api/group-post-groups>
    st.bound = if bind_members && st.coll == "groups" {
        wanted_members(st.item).map(|w| w.into_iter().take(MAX_LINKS).collect()).unwrap_or_default()
    } else {
        Vec::new()
    };
    let immutable_id = body
        .get("onPremisesImmutableId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    body.retain(|_, v| !v.is_null());
    if st.coll == "users" {
        body.entry("accountEnabled").or_insert(json!(true));
        // Never asked to change at sign-in: the users sign in with their on-premises password
        // (hash sync or federation), and nobody is told this one.
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
    let lookup = immutable_id.map(|imm| {
        let filter = format!("onPremisesImmutableId eq '{}'", imm.replace('\'', "''"));
        format!("/{}?$select=id&$filter={}", st.coll, encode(&filter))
    });
    Write {
        method: Method::POST,
        path: format!("/{}", st.coll),
        body: Some(Value::Object(body)),
        resend: Resend::Create { lookup, uncertain: st.item.uncertain },
    }
}

/// Takes the result of a create into its item.
fn created(st: &mut Item<'_>, written: Written) {
    st.notes.extend(written.notes);
    match written.result {
        Ok(answer) => match answer.body.get("id").and_then(Value::as_str) {
            Some(id) => st.created = Some((id.to_owned(), !written.found)),
            None => {
                let m = format!("{}: created, but Graph sent no id", st.what);
                st.fail(failure("ExportFailed", m, true));
            }
        },
        // Without an ImmutableID nothing identifies an earlier attempt: leave it to the engine.
        Err(GraphError::Transport(m)) => {
            let m = format!("{}: create cut ({m}); outcome unknown", st.what);
            st.fail(failure("ServiceUnavailable", m, true));
        }
        Err(e) => {
            let f = entra_failure(&st.what, &e);
            st.fail(f);
        }
    }
}

/// The second-round writes of an item.
async fn second_round(client: &mut GraphClient, st: &mut Item<'_>) -> Vec<(Part, Write)> {
    let mut out = Vec::new();
    let coll = st.coll;
    match st.item.kind {
        ExportKind::Add => {
            let Some((id, fresh)) = st.created.clone() else { return out };
            if coll == "groups"
                && let Some(wanted) = wanted_members(st.item)
            {
                // A group created in this call has the members its create bound; one found
                // (created by an earlier attempt) has some: read them.
                let current = if fresh {
                    Ok(st.bound.iter().cloned().collect())
                } else {
                    members(client, &id, &mut st.notes).await
                };
                match current {
                    Ok(current) => out.extend(member_writes(client, &id, &current, &wanted)),
                    Err(e) => st.member_failures.push(format!("reading its members: {e}")),
                }
            }
        }
        ExportKind::Update => {
            let Some(id) = st.item.anchor.as_ref().map(|a| a.as_str().to_owned()) else { return out };
            if !st.body.is_empty() {
                out.push((
                    Part::Patch,
                    Write {
                        method: Method::PATCH,
                        path: format!("/{coll}/{id}"),
                        body: Some(Value::Object(std::mem::take(&mut st.body))),
                        resend: Resend::Idempotent,
                    },
                ));
            }
            if coll == "groups"
                && let Some(wanted) = wanted_members(st.item)
            {
                match members(client, &id, &mut st.notes).await {
                    Ok(current) => out.extend(member_writes(client, &id, &current, &wanted)),
                    Err(e) => {
                        let mut f = entra_failure(&st.what, &e);
                        f.message.push_str(&format!(" (request: GET /groups/{id}/members)"));
                        st.fail(f);
                        return Vec::new();
                    }
                }
            }
        }
        ExportKind::Delete => {
            let Some(id) = st.item.anchor.as_ref().map(|a| a.as_str().to_owned()) else { return out };
            out.push((
                Part::Delete,
                Write {
                    method: Method::DELETE,
                    path: format!("/{coll}/{id}"),
                    body: None,
                    resend: Resend::Idempotent,
                },
            ));
        }
    }
    out
}

/// The ids of a group's current members.
async fn members(
    client: &mut GraphClient,
    group: &str,
    notes: &mut Vec<String>,
) -> Result<BTreeSet<String>, GraphError> {
    let top = client.config().page_size;
    Ok(client
        .get_all_ids_noted(&format!("/groups/{group}/members?$select=id&$top={top}"), notes)
        .await?
        .into_iter()
        .collect())
}

/// The member changes that make the members of `group` exactly `wanted`: the adds as `PATCH
/// /groups/{id}` with up to 20 `members@odata.bind` each, the removes as one `DELETE .../$ref` each
/// (Graph has no bulk remove).
/// <https://learn.microsoft.com/en-us/graph/api/group-post-members> (example 2: add multiple
/// members in a single request), <https://learn.microsoft.com/en-us/graph/api/group-delete-members>
fn member_writes(
    client: &GraphClient,
    group: &str,
    current: &BTreeSet<String>,
    wanted: &BTreeSet<String>,
) -> Vec<(Part, Write)> {
    let base = client.config().graph_url.trim_end_matches('/').to_owned();
    let to_add: Vec<&String> = wanted.difference(current).collect();
    let adds = to_add.chunks(MAX_LINKS).map(|ids| {
        let refs: Vec<Value> = ids.iter().map(|id| json!(member_url(&base, id))).collect();
        (
            Part::MemberAdd,
            Write {
                method: Method::PATCH,
                path: format!("/groups/{group}"),
                body: Some(json!({ MEMBERS_BIND: refs })),
                resend: Resend::Idempotent,
            },
        )
    });
    let removes = current.difference(wanted).map(|id| {
        (
            Part::MemberRemove,
            Write {
                method: Method::DELETE,
                path: format!("/groups/{group}/members/{id}/$ref"),
                body: None,
                resend: Resend::Idempotent,
            },
        )
    });
    adds.chain(removes).collect()
}

/// Most links (members and owners) one request may add: "up to 20".
/// <https://learn.microsoft.com/en-us/graph/api/group-post-members>
const MAX_LINKS: usize = 20;

/// The property that binds members in a create or an update.
const MEMBERS_BIND: &str = "members@odata.bind";

/// How a member is referred to in `members@odata.bind`.
fn member_url(base: &str, id: &str) -> String {
    format!("{base}/directoryObjects/{id}")
}

/// True when a create was refused over an object it refers to (400 or 404 naming a reference,
/// not a conflict or a validation of its own properties).
fn refused_over_a_reference(written: &Written) -> bool {
    match &written.result {
        Err(GraphError::Http { status: 404, .. }) => true,
        Err(GraphError::Http { status: 400, message, detail, .. }) => {
            let m = message.to_ascii_lowercase();
            detail.as_deref() != Some("ObjectConflict")
                && (m.contains("reference") || m.contains("link") || m.contains("does not exist"))
        }
        _ => false,
    }
}

/// Takes the result of a second-round write into its item.
fn settle(st: &mut Item<'_>, part: Part, label: &str, written: Written) {
    st.notes.extend(written.notes);
    let err = match written.result {
        Ok(_) => return,
        // Already done: a repeated delete, a member already there or already gone.
        Err(GraphError::Http { status: 404, .. }) if matches!(part, Part::Delete | Part::MemberRemove) => {
            return;
        }
        Err(GraphError::Http { status: 400, message, .. })
            if part == Part::MemberAdd && message.to_ascii_lowercase().contains("already exist") =>
        {
            return;
        }
        Err(e) => e,
    };
    if st.item.kind == ExportKind::Add {
        st.member_failures.push(format!("{label}: {err}"));
    } else {
        let mut f = entra_failure(&st.what, &err);
        f.message.push_str(&format!(" (request: {label})"));
        st.fail(f);
    }
}

fn outcome(st: Item<'_>) -> ExportOutcome {
    let mut notes = st.notes;
    let result = match (st.failure, st.created) {
        (Some(f), _) => {
            tracing::warn!(export = st.item.id, kind = %f.kind, "export refused: {}", f.message);
            Err(f)
        }
        (None, Some((id, _))) => {
            if !st.member_failures.is_empty() {
                notes.push(format!(
                    "created, but member changes failed ({}); the next import shows the group without them \
                     and they are exported again",
                    st.member_failures.join("; ")
                ));
            }
            Anchor::new(id).map(Some).map_err(|e| failure("ExportFailed", format!("{}: {e}", st.what), false))
        }
        (None, None) => Ok(None),
    };
    ExportOutcome { id: st.item.id, result, notes }
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
