//! The Microsoft Graph v1.0 surface: routing of one request (top-level or inside `$batch`), the
//! resources (domains, users, groups, members, directory roles), OData paging, delta and `$batch`.
//!
//! Shapes follow Microsoft's documentation; each is cited beside the code that builds it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};

use crate::App;
use crate::store::{Kind, Obj, OpError};
use crate::util::{parse_query, percent_encode, rfc3339, unix_now};

/// Largest `$top` Graph accepts for directory objects.
/// <https://learn.microsoft.com/en-us/graph/paging>
pub(crate) const MAX_TOP: i64 = 999;
/// Most requests in one JSON batch.
/// <https://learn.microsoft.com/en-us/graph/json-batching>
pub(crate) const MAX_BATCH: usize = 20;

/// One answer, before it becomes an HTTP response or a `$batch` entry.
#[derive(Debug)]
pub(crate) struct GraphResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl GraphResponse {
    fn json(status: u16, body: Value) -> Self {
        GraphResponse { status, headers: Vec::new(), body: Some(body) }
    }
    fn empty(status: u16) -> Self {
        GraphResponse { status, headers: Vec::new(), body: None }
    }
}

/// Graph's error shape: `{"error": {"code", "message", "innerError": {"date", "request-id",
/// "client-request-id"}}}`. <https://learn.microsoft.com/en-us/graph/errors>
pub(crate) fn error(status: u16, code: &str, message: &str) -> GraphResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    GraphResponse::json(
        status,
        json!({"error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": rfc3339(unix_now()),
                "request-id": request_id,
                "client-request-id": request_id,
            }
        }}),
    )
}

/// A uniqueness refusal, as Graph answers a duplicate userPrincipalName or proxyAddress:
/// 400 `Request_BadRequest` with an `ObjectConflict` detail naming the property.
/// <https://learn.microsoft.com/en-us/graph/errors> and
/// <https://learn.microsoft.com/en-us/graph/api/user-post-users?view=graph-rest-1.0>
fn conflict(prop: &str) -> GraphResponse {
    let message = format!("Another object with the same value for property {prop} already exists.");
    let mut r = error(400, "Request_BadRequest", &message);
    if let Some(e) = r.body.as_mut().and_then(|b| b.get_mut("error")).and_then(Value::as_object_mut) {
        e.insert("details".into(), json!([{"code": "ObjectConflict", "message": message, "target": prop}]));
    }
    r
}

fn not_found(id: &str) -> GraphResponse {
    error(
        404,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

fn bad_request(message: &str) -> GraphResponse {
    error(400, "Request_BadRequest", message)
}

/// A request as the router sees it: path below `/v1.0`, decoded query, body.
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub prefer: Option<String>,
    pub body: Option<Value>,
    pub app_id: String,
}

impl Request {
    /// Builds a request from a URL relative to `/v1.0` (or absolute), as `$batch` entries carry it.
    pub(crate) fn from_url(method: &str, url: &str, body: Option<Value>, app_id: &str) -> Request {
        let rest = match url.find("/v1.0/") {
            Some(i) => &url[i + 5..],
            None => url,
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        Request {
            method: method.to_ascii_uppercase(),
            path: format!("/{}", path.trim_start_matches('/')),
            query: parse_query(query),
            prefer: None,
            body,
            app_id: app_id.to_string(),
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| {
                k.eq_ignore_ascii_case(name)
                    || k.trim_start_matches('$').eq_ignore_ascii_case(name.trim_start_matches('$'))
            })
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn is_write(&self) -> bool {
        self.method != "GET" && self.method != "HEAD"
    }
}

/// Routes and answers one Graph request. Throttling and write faults are applied by the caller.
pub(crate) async fn handle(app: &App, req: &Request) -> GraphResponse {
    match route(app, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "emulator storage failure");
            error(500, "generalException", "An internal server error occurred.")
        }
    }
}

async fn route(app: &App, req: &Request) -> Result<GraphResponse, rusqlite::Error> {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let m = req.method.as_str();
    let kind_of = |s: &str| match s {
        "users" => Some(Kind::User),
        "groups" => Some(Kind::Group),
        _ => None,
    };
    Ok(match (m, segs.as_slice()) {
        ("GET", ["domains"]) => domains(app, req).await?,
        ("GET", ["directoryRoles"]) => directory_roles(app, req).await?,
        ("GET", [coll, d]) if kind_of(coll).is_some() && is_delta(d) => {
            delta(app, req, kind_of(coll).unwrap_or(Kind::User)).await?
        }
        ("GET", [coll]) if kind_of(coll).is_some() => {
            list(app, req, kind_of(coll).unwrap_or(Kind::User)).await?
        }
        ("POST", [coll]) if kind_of(coll).is_some() => {
            create(app, req, kind_of(coll).unwrap_or(Kind::User)).await?
        }
        ("GET", [coll, id]) if kind_of(coll).is_some() => {
            get(app, req, kind_of(coll).unwrap_or(Kind::User), id).await?
        }
        ("GET", ["directoryObjects", id]) => match app.store.get(None, id).await? {
            Some((k, o)) => GraphResponse::json(200, with_type(k, project(k, &o, None))),
            None => not_found(id),
        },
        ("PATCH", [coll, id]) if kind_of(coll).is_some() => {
            update(app, req, kind_of(coll).unwrap_or(Kind::User), id).await?
        }
        ("DELETE", [coll, id]) if kind_of(coll).is_some() => {
            delete(app, kind_of(coll).unwrap_or(Kind::User), id).await?
        }
        ("GET", ["groups", id, "members"]) => members(app, req, id).await?,
        ("POST", ["groups", id, "members", "$ref"]) => add_member(app, req, id).await?,
        ("DELETE", ["groups", id, "members", member, "$ref"]) => remove_member(app, id, member).await?,
        _ => error(
            400,
            "BadRequest",
            &format!("Resource not found for the segment '{}'.", segs.last().unwrap_or(&"")),
        ),
    })
}

fn is_delta(seg: &str) -> bool {
    matches!(seg, "delta" | "delta()" | "microsoft.graph.delta" | "microsoft.graph.delta()")
}

/// `GET /domains`: `{"value": [{"id", "authenticationType", "isDefault", "isInitial", "isVerified", ...}]}`.
/// <https://learn.microsoft.com/en-us/graph/api/domain-list?view=graph-rest-1.0>
async fn domains(app: &App, req: &Request) -> Result<GraphResponse, rusqlite::Error> {
    let select = select_list(req);
    let value: Vec<Value> = app
        .store
        .domains()
        .await?
        .into_iter()
        .map(|d| match &select {
            Some(sel) => Value::Object(project(Kind::Group, &d, Some(sel))),
            None => Value::Object(d),
        })
        .collect();
    Ok(GraphResponse::json(
        200,
        json!({"@odata.context": format!("{}/v1.0/$metadata#domains", app.base_url), "value": value}),
    ))
}

/// `GET /directoryRoles?$expand=members`: activated roles, each with its members when expanded.
/// <https://learn.microsoft.com/en-us/graph/api/directoryrole-list?view=graph-rest-1.0>
async fn directory_roles(app: &App, req: &Request) -> Result<GraphResponse, rusqlite::Error> {
    let expand = req.param("$expand").is_some_and(|e| e.split(',').any(|p| p.trim() == "members"));
    let mut value = Vec::new();
    for (role, users) in app.store.admin_roles().await? {
        let hash = blake3::hash(role.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash.as_bytes()[..16]);
        let id = uuid::Uuid::from_bytes(bytes).to_string();
        let mut r = json!({"id": id, "displayName": role, "description": role, "roleTemplateId": id});
        if let (true, Some(o)) = (expand, r.as_object_mut()) {
            let mut ms = Vec::new();
            for u in users {
                if let Some((k, obj)) = app.store.get(Some(Kind::User), &u).await? {
                    ms.push(with_type(k, project(k, &obj, None)));
                }
            }
            o.insert("members".into(), Value::Array(ms));
        }
        value.push(r);
    }
    Ok(GraphResponse::json(
        200,
        json!({"@odata.context": format!("{}/v1.0/$metadata#directoryRoles", app.base_url), "value": value}),
    ))
}

/// Properties Graph returns for a user when no `$select` is given.
/// <https://learn.microsoft.com/en-us/graph/api/user-list?view=graph-rest-1.0>
const USER_DEFAULT: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

fn select_list(req: &Request) -> Option<Vec<String>> {
    req.param("$select")
        .map(|s| s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
}

/// Projects an object on `$select` (always with `id`; absent properties are `null`, as Graph shows them).
pub(crate) fn project(kind: Kind, obj: &Obj, select: Option<&[String]>) -> Obj {
    let mut out = Obj::new();
    let names: Vec<String> = match (select, kind) {
        (Some(sel), _) => sel.to_vec(),
        (None, Kind::User) => USER_DEFAULT.iter().map(|s| s.to_string()).collect(),
        (None, Kind::Group) => obj.keys().cloned().collect(),
    };
    for name in names {
        if name == "members" {
            continue;
        }
        let found = obj.get(&name).map(|v| (name.clone(), v.clone())).or_else(|| {
            obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(&name)).map(|(k, v)| (k.clone(), v.clone()))
        });
        let (k, v) = found.unwrap_or((name, Value::Null));
        out.insert(k, v);
    }
    if let Some(id) = obj.get("id") {
        out.insert("id".into(), id.clone());
    }
    out
}

fn with_type(kind: Kind, mut o: Obj) -> Value {
    o.insert("@odata.type".into(), json!(kind.odata_type()));
    Value::Object(o)
}

fn coll_name(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "users",
        Kind::Group => "groups",
    }
}

fn context(app: &App, kind: Kind, select: Option<&[String]>) -> String {
    match select {
        Some(s) => format!("{}/v1.0/$metadata#{}({})", app.base_url, coll_name(kind), s.join(",")),
        None => format!("{}/v1.0/$metadata#{}", app.base_url, coll_name(kind)),
    }
}

/// A minimal `$filter`: `prop eq 'value'` and `proxyAddresses/any(x:x eq 'value')`, joined by `and`.
/// Enough for a connector to look an object up by onPremisesImmutableId, UPN or address.
struct Filter(Vec<(String, String, bool)>);

impl Filter {
    fn parse(s: &str) -> Option<Filter> {
        let mut terms = Vec::new();
        for part in s.split(" and ") {
            let part = part.trim();
            if let Some((coll, rest)) = part.split_once("/any(") {
                let (_, cond) = rest.split_once(':')?;
                let (_, value) = cond.split_once(" eq ")?;
                terms.push((coll.trim().to_string(), unquote(value.trim().trim_end_matches(')'))?, true));
            } else {
                let (prop, value) = part.split_once(" eq ")?;
                terms.push((prop.trim().to_string(), unquote(value.trim())?, false));
            }
        }
        Some(Filter(terms))
    }

    fn matches(&self, o: &Obj) -> bool {
        self.0.iter().all(|(prop, value, any)| match o.get(prop) {
            Some(Value::Array(vs)) if *any => {
                vs.iter().any(|v| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(value)))
            }
            Some(Value::String(s)) if !any => s.eq_ignore_ascii_case(value),
            Some(Value::Bool(b)) if !any => b.to_string() == *value,
            _ => false,
        })
    }
}

fn unquote(v: &str) -> Option<String> {
    if v == "true" || v == "false" {
        return Some(v.to_string());
    }
    let inner = v.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

fn page_size(app: &App, req: &Request) -> Result<i64, GraphResponse> {
    match req.param("$top") {
        None => Ok(app.config.page_size as i64),
        Some(t) => match t.parse::<i64>() {
            Ok(n) if (1..=MAX_TOP).contains(&n) => Ok(n),
            _ => Err(bad_request(&format!(
                "Invalid page size specified: '{t}'. Must be between 1 and {MAX_TOP} inclusive."
            ))),
        },
    }
}

/// `GET /users` and `GET /groups`: `{"@odata.context", "value": [...], "@odata.nextLink"}` with an
/// opaque `$skiptoken`. <https://learn.microsoft.com/en-us/graph/api/user-list?view=graph-rest-1.0>,
/// <https://learn.microsoft.com/en-us/graph/paging>
async fn list(app: &App, req: &Request, kind: Kind) -> Result<GraphResponse, rusqlite::Error> {
    let top = match page_size(app, req) {
        Ok(t) => t,
        Err(r) => return Ok(r),
    };
    let filter = match req.param("$filter") {
        None => None,
        Some(f) => match Filter::parse(f) {
            Some(f) => Some(f),
            None => return Ok(bad_request(&format!("Invalid filter clause: {f}"))),
        },
    };
    let mut after = match skiptoken_after(req) {
        Ok(a) => a,
        Err(r) => return Ok(r),
    };
    let select = select_list(req);
    let mut items: Vec<Obj> = Vec::new();
    let mut more = false;
    loop {
        let batch =
            app.store.list(kind, after.as_deref(), if filter.is_some() { 1000 } else { top + 1 }).await?;
        let exhausted = batch.len() < if filter.is_some() { 1000 } else { (top + 1) as usize };
        for o in batch {
            after = o.get("id").and_then(Value::as_str).map(str::to_string);
            if filter.as_ref().is_none_or(|f| f.matches(&o)) {
                if items.len() as i64 == top {
                    more = true;
                    break;
                }
                items.push(o);
            }
        }
        if more || exhausted {
            break;
        }
    }
    let mut body = json!({
        "@odata.context": context(app, kind, select.as_deref()),
        "value": items.iter().map(|o| Value::Object(project(kind, o, select.as_deref()))).collect::<Vec<_>>(),
    });
    if let (true, Some(last), Some(b)) =
        (more, items.last().and_then(|o| o.get("id")).and_then(Value::as_str), body.as_object_mut())
    {
        b.insert(
            "@odata.nextLink".into(),
            json!(format!("{}/v1.0/{}?{}", app.base_url, coll_name(kind), next_query(req, last))),
        );
    }
    Ok(GraphResponse::json(200, body))
}

/// The id a page starts after, from the request's `$skiptoken` (none: the first page); a token
/// that is not one of ours is a 400.
fn skiptoken_after(req: &Request) -> Result<Option<String>, GraphResponse> {
    match req.param("$skiptoken") {
        None => Ok(None),
        Some(t) => match B64.decode(t).ok().and_then(|b| String::from_utf8(b).ok()) {
            Some(a) => Ok(Some(a)),
            None => Err(bad_request("Invalid $skiptoken.")),
        },
    }
}

/// The query of a next link: the request's own, its `$skiptoken` replaced by one that starts
/// after the id `last`.
fn next_query(req: &Request, last: &str) -> String {
    let mut q: Vec<String> = req
        .query
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("$skiptoken"))
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    q.push(format!("$skiptoken={}", B64.encode(last)));
    q.join("&")
}

/// `GET /users/{id | userPrincipalName}` and `GET /groups/{id}`.
/// <https://learn.microsoft.com/en-us/graph/api/user-get?view=graph-rest-1.0>
async fn get(app: &App, req: &Request, kind: Kind, id: &str) -> Result<GraphResponse, rusqlite::Error> {
    let select = select_list(req);
    let found = match app.store.get(Some(kind), id).await? {
        None if kind == Kind::User && id.contains('@') => app.store.get_by_upn(id).await?,
        f => f,
    };
    Ok(match found {
        Some((k, o)) => {
            let mut p = project(k, &o, select.as_deref());
            p.insert(
                "@odata.context".into(),
                json!(format!("{}/$entity", context(app, kind, select.as_deref()))),
            );
            GraphResponse::json(200, Value::Object(p))
        }
        None => not_found(id),
    })
}

/// Writable properties of a user through Graph (proxyAddresses and onPremisesSyncEnabled are read-only).
/// <https://learn.microsoft.com/en-us/graph/api/resources/user?view=graph-rest-1.0>
const USER_WRITABLE: &[&str] = &[
    "accountEnabled",
    "ageGroup",
    "businessPhones",
    "city",
    "companyName",
    "consentProvidedForMinor",
    "country",
    "department",
    "displayName",
    "employeeId",
    "employeeType",
    "givenName",
    "jobTitle",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "onPremisesImmutableId",
    "otherMails",
    "passwordPolicies",
    "passwordProfile",
    "postalCode",
    "preferredLanguage",
    "state",
    "streetAddress",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
];
const USER_REQUIRED: &[&str] =
    &["accountEnabled", "displayName", "mailNickname", "userPrincipalName", "passwordProfile"];

/// Writable properties of a group. `onPremisesImmutableId` is an emulator extension (Graph has no such
/// group property); it lets tests stamp and hard-match groups like users.
/// <https://learn.microsoft.com/en-us/graph/api/group-post-groups?view=graph-rest-1.0>
const GROUP_WRITABLE: &[&str] = &[
    "description",
    "displayName",
    "groupTypes",
    "isAssignableToRole",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
    "visibility",
    "onPremisesImmutableId",
];
const GROUP_REQUIRED: &[&str] = &["displayName", "mailEnabled", "mailNickname", "securityEnabled"];

fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "microsoft.graph.user",
        Kind::Group => "microsoft.graph.group",
    }
}

/// Checks a write body against the writable properties; returns the refusal.
fn check_writable(kind: Kind, body: &Obj) -> Option<GraphResponse> {
    let writable = match kind {
        Kind::User => USER_WRITABLE,
        Kind::Group => GROUP_WRITABLE,
    };
    for k in body.keys() {
        if k.starts_with('@') || writable.contains(&k.as_str()) || (kind == Kind::Group && k == MEMBERS_BIND)
        {
            continue;
        }
        return Some(if matches!(k.as_str(), "proxyAddresses" | "onPremisesSyncEnabled" | "id" | "mail") {
            bad_request(&format!("Property '{k}' is read-only and cannot be set."))
        } else {
            bad_request(&format!("Property '{k}' does not exist on type '{}'.", type_name(kind)))
        });
    }
    None
}

/// The property that adds members to a group in its create or in an update.
const MEMBERS_BIND: &str = "members@odata.bind";

/// Most links (members and owners together) one request may add. "When using the API to add
/// multiple members in one request, you can add up to only 20 members"
/// (<https://learn.microsoft.com/en-us/graph/api/group-post-members>, example 2), and the same
/// limit holds for `members@odata.bind` and `owners@odata.bind` in a create
/// (<https://learn.microsoft.com/en-us/graph/api/group-post-groups>, example 2).
pub(crate) const MAX_LINKS: usize = 20;

/// The member ids of a group write's `members@odata.bind` (an empty list when there is none), or
/// Graph's refusal. Each value is a URL ending in the object id
/// (`https://graph.microsoft.com/v1.0/directoryObjects/{id}`, `.../users/{id}`).
fn member_binds(body: &Obj) -> Result<Vec<String>, GraphResponse> {
    let Some(v) = body.get(MEMBERS_BIND) else { return Ok(Vec::new()) };
    let Some(list) = v.as_array() else {
        return Err(bad_request(&format!(
            "Invalid value for property '{MEMBERS_BIND}': an array of URLs is expected."
        )));
    };
    let links = list.len() + body.get("owners@odata.bind").and_then(Value::as_array).map_or(0, Vec::len);
    if links > MAX_LINKS {
        // The message Graph gives (reported in microsoftgraph/microsoft-graph-docs#6016).
        return Err(bad_request(&format!("A resource cannot contain more than {MAX_LINKS} link changes.")));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        let id = item
            .as_str()
            .map(|u| u.trim_end_matches('/'))
            .and_then(|u| u.rsplit('/').next())
            .filter(|id| !id.is_empty() && !id.contains(['(', ')', '\'', '?', '$']));
        match id {
            Some(id) if !out.iter().any(|o| o == id) => out.push(id.to_string()),
            Some(_) => {}
            None => {
                return Err(bad_request(&format!(
                    "Invalid value for property '{MEMBERS_BIND}': every value must be the URL of a directory object."
                )));
            }
        }
    }
    Ok(out)
}

/// The UPN refusal for a domain that is not verified in the tenant.
/// <https://learn.microsoft.com/en-us/graph/api/user-post-users?view=graph-rest-1.0>
async fn check_upn(app: &App, upn: &str) -> Result<Option<GraphResponse>, rusqlite::Error> {
    let Some((local, domain)) = upn.rsplit_once('@') else {
        return Ok(Some(bad_request("Property userPrincipalName is invalid.")));
    };
    if local.is_empty() {
        return Ok(Some(bad_request("Property userPrincipalName is invalid.")));
    }
    let verified = app.store.domains().await?.iter().any(|d| {
        d.get("isVerified").and_then(Value::as_bool) == Some(true)
            && d.get("id").and_then(Value::as_str).is_some_and(|id| id.eq_ignore_ascii_case(domain))
    });
    Ok((!verified).then(|| {
        bad_request(
            "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.",
        )
    }))
}

/// Values that must be unique in the tenant: (property, normalized value).
pub(crate) fn unique_values(kind: Kind, o: &Obj) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let (Kind::User, Some(upn)) = (kind, o.get("userPrincipalName").and_then(Value::as_str)) {
        out.push(("userPrincipalName".to_string(), upn.to_lowercase()));
    }
    if let Some(im) = o.get("onPremisesImmutableId").and_then(Value::as_str) {
        out.push((format!("onPremisesImmutableId:{}", kind.as_str()), im.to_string()));
    }
    if let Some(ps) = o.get("proxyAddresses").and_then(Value::as_array) {
        for p in ps.iter().filter_map(Value::as_str) {
            let v = ("proxyAddresses".to_string(), p.to_lowercase());
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

/// Keeps `proxyAddresses` in step with `mail` the way Exchange Online does: the mail address is the
/// primary `SMTP:` address, a former primary stays as a secondary `smtp:` one.
pub(crate) fn derive_addresses(o: &mut Obj) {
    let Some(mail) = o.get("mail").and_then(Value::as_str).map(str::to_string) else {
        return;
    };
    let mut addrs: Vec<String> = o
        .get("proxyAddresses")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let primary = format!("SMTP:{mail}");
    if addrs.iter().any(|a| a == &primary) {
        return;
    }
    addrs.retain(|a| !a.eq_ignore_ascii_case(&primary));
    for a in addrs.iter_mut() {
        if let Some(rest) = a.strip_prefix("SMTP:") {
            *a = format!("smtp:{rest}");
        }
    }
    addrs.insert(0, primary);
    o.insert("proxyAddresses".into(), json!(addrs));
}

fn store_err(e: OpError, id: &str) -> Result<GraphResponse, rusqlite::Error> {
    match e {
        OpError::Db(e) => Err(e),
        OpError::Conflict(p) => Ok(conflict(p.split(':').next().unwrap_or(&p))),
        OpError::NotFound => Ok(not_found(id)),
        OpError::MissingRef(member) => Ok(not_found(&member)),
        OpError::AlreadyMember => Ok(bad_request(
            "One or more added object references already exist for the following modified properties: 'members'.",
        )),
    }
}

/// `POST /users` (201 with the created user) and `POST /groups`.
/// <https://learn.microsoft.com/en-us/graph/api/user-post-users?view=graph-rest-1.0>
async fn create(app: &App, req: &Request, kind: Kind) -> Result<GraphResponse, rusqlite::Error> {
    let Some(Value::Object(body)) = &req.body else {
        return Ok(bad_request("Empty Payload. JSON content expected."));
    };
    if let Some(r) = check_writable(kind, body) {
        return Ok(r);
    }
    let required = match kind {
        Kind::User => USER_REQUIRED,
        Kind::Group => GROUP_REQUIRED,
    };
    for r in required {
        if body.get(*r).is_none_or(Value::is_null) {
            return Ok(bad_request(&format!(
                "Invalid value specified for property '{r}' of resource '{}'.",
                match kind {
                    Kind::User => "User",
                    Kind::Group => "Group",
                }
            )));
        }
    }
    let binds = match member_binds(body) {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    let mut o = Obj::new();
    let id = uuid::Uuid::new_v4().to_string();
    o.insert("id".into(), json!(id));
    for (k, v) in body {
        if k.contains('@') || k == "passwordProfile" {
            continue;
        }
        o.insert(k.clone(), v.clone());
    }
    match kind {
        Kind::User => {
            if let Some(r) =
                check_upn(app, o.get("userPrincipalName").and_then(Value::as_str).unwrap_or("")).await?
            {
                return Ok(r);
            }
            o.entry("proxyAddresses").or_insert(json!([]));
            o.entry("businessPhones").or_insert(json!([]));
            o.insert("onPremisesSyncEnabled".into(), Value::Null);
            derive_addresses(&mut o);
        }
        Kind::Group => {
            o.entry("groupTypes").or_insert(json!([]));
            o.entry("proxyAddresses").or_insert(json!([]));
            o.insert("onPremisesSyncEnabled".into(), Value::Null);
            if let (Some(true), Some(nick)) = (
                o.get("mailEnabled").and_then(Value::as_bool),
                o.get("mailNickname").and_then(Value::as_str).map(str::to_string),
            ) {
                let mail = format!("{nick}@{}", app.default_domain());
                o.insert("mail".into(), json!(mail));
                derive_addresses(&mut o);
            } else {
                o.insert("mail".into(), Value::Null);
            }
        }
    }
    o.insert("createdDateTime".into(), json!(format!("{}Z", rfc3339(unix_now()))));
    // The group and its bound members in one transaction: a missing member refuses it all.
    if let Err(e) = app.store.put_linked(kind, &o, &unique_values(kind, &o), &binds, true).await {
        return store_err(e, &id);
    }
    tracing::debug!(kind = kind.as_str(), %id, members = binds.len(), "created");
    let mut p = o.clone();
    p.insert("@odata.context".into(), json!(format!("{}/$entity", context(app, kind, None))));
    let mut r = GraphResponse::json(201, Value::Object(p));
    r.headers.push(("Location".into(), format!("{}/v1.0/{}/{id}", app.base_url, coll_name(kind))));
    if req.prefer.as_deref().is_some_and(|p| p.contains("return=minimal")) {
        r.status = 204;
        r.body = None;
        r.headers.push(("Preference-Applied".into(), "return=minimal".into()));
    }
    Ok(r)
}

/// The refusal of a write to an object that a directory-sync engine masters from on-premises
/// (`onPremisesSyncEnabled: true`): 400 `Request_BadRequest`. Microsoft's reference pages do not
/// print this answer; the message is the one Graph users report for such writes, e.g.
/// <https://github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/5768> and
/// <https://github.com/microsoftgraph/microsoft-graph-docs/issues/18038>, and the code is the one
/// Graph gives its sibling refusal ("... objects that have originated within an external service",
/// <https://github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/3564>).
pub(crate) const SYNCED_REFUSAL: &str = "Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration.";

fn synced_refusal() -> GraphResponse {
    bad_request(SYNCED_REFUSAL)
}

/// Properties of a synchronized user that stay writable in the cloud (the emulator's short list;
/// Graph has a few more cloud-mastered ones). Everything else is on-premises mastered.
const CLOUD_MASTERED: &[&str] = &["usageLocation"];

fn is_synced(o: &Obj) -> bool {
    o.get("onPremisesSyncEnabled").and_then(Value::as_bool) == Some(true)
}

/// `PATCH /users/{id}`: 204 No Content.
/// <https://learn.microsoft.com/en-us/graph/api/user-update?view=graph-rest-1.0>
async fn update(app: &App, req: &Request, kind: Kind, id: &str) -> Result<GraphResponse, rusqlite::Error> {
    let Some(Value::Object(body)) = &req.body else {
        return Ok(bad_request("Empty Payload. JSON content expected."));
    };
    let Some((_, mut o)) = app.store.get(Some(kind), id).await? else {
        return Ok(not_found(id));
    };
    if let Some(r) = check_writable(kind, body) {
        return Ok(r);
    }
    if is_synced(&o) && body.keys().any(|k| !CLOUD_MASTERED.contains(&k.as_str())) {
        return Ok(synced_refusal());
    }
    if let (Kind::User, Some(upn)) = (kind, body.get("userPrincipalName")) {
        match upn.as_str() {
            Some(u) => {
                if let Some(r) = check_upn(app, u).await? {
                    return Ok(r);
                }
            }
            None => {
                return Ok(bad_request(
                    "Invalid value specified for property 'userPrincipalName' of resource 'User'.",
                ));
            }
        }
    }
    let binds = match member_binds(body) {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    for (k, v) in body {
        if k.contains('@') || k == "passwordProfile" {
            continue;
        }
        o.insert(k.clone(), v.clone());
    }
    derive_addresses(&mut o);
    // The properties and the members in one transaction: a member that is missing or already
    // there refuses the whole request ("no members are added in a request if an error condition
    // exists", group-post-members).
    if let Err(e) = app.store.put_linked(kind, &o, &unique_values(kind, &o), &binds, false).await {
        return store_err(e, id);
    }
    Ok(GraphResponse::empty(204))
}

/// `DELETE /users/{id}`: 204 No Content.
/// <https://learn.microsoft.com/en-us/graph/api/user-delete?view=graph-rest-1.0>
async fn delete(app: &App, kind: Kind, id: &str) -> Result<GraphResponse, rusqlite::Error> {
    match app.store.get(Some(kind), id).await? {
        None => return Ok(not_found(id)),
        Some((_, o)) if is_synced(&o) => {
            return Ok(synced_refusal());
        }
        Some(_) => {}
    }
    match app.store.delete(kind, id).await {
        Ok(()) => Ok(GraphResponse::empty(204)),
        Err(e) => store_err(e, id),
    }
}

/// `GET /groups/{id}/members`: directoryObjects with their `@odata.type`, in pages of `$top`
/// (by default the emulator's page size, 100 as Graph's; at most 999) with an `@odata.nextLink`,
/// as Graph pages them.
/// <https://learn.microsoft.com/en-us/graph/api/group-list-members?view=graph-rest-1.0>
async fn members(app: &App, req: &Request, id: &str) -> Result<GraphResponse, rusqlite::Error> {
    if app.store.get(Some(Kind::Group), id).await?.is_none() {
        return Ok(not_found(id));
    }
    let top = match page_size(app, req) {
        Ok(t) => t,
        Err(r) => return Ok(r),
    };
    let after = match skiptoken_after(req) {
        Ok(a) => a,
        Err(r) => return Ok(r),
    };
    let select = select_list(req);
    let mut page = app.store.members(id, after.as_deref(), top + 1).await?;
    let more = page.len() as i64 > top;
    page.truncate(usize::try_from(top).unwrap_or(usize::MAX));
    let last = page.last().and_then(|(_, o)| o.get("id")).and_then(Value::as_str).map(str::to_owned);
    let value: Vec<Value> =
        page.into_iter().map(|(k, o)| with_type(k, project(k, &o, select.as_deref()))).collect();
    let mut body = json!({"@odata.context": format!("{}/v1.0/$metadata#directoryObjects", app.base_url), "value": value});
    if let (true, Some(last), Some(b)) = (more, last, body.as_object_mut()) {
        b.insert(
            "@odata.nextLink".into(),
            json!(format!("{}/v1.0{}?{}", app.base_url, req.path, next_query(req, &last))),
        );
    }
    Ok(GraphResponse::json(200, body))
}

/// `POST /groups/{id}/members/$ref` with `{"@odata.id": ".../directoryObjects/{id}"}`: 204.
/// <https://learn.microsoft.com/en-us/graph/api/group-post-members?view=graph-rest-1.0>
async fn add_member(app: &App, req: &Request, id: &str) -> Result<GraphResponse, rusqlite::Error> {
    let Some(member) = req
        .body
        .as_ref()
        .and_then(|b| b.get("@odata.id"))
        .and_then(Value::as_str)
        .and_then(|s| s.trim_end_matches('/').rsplit('/').next())
        .map(str::to_string)
    else {
        return Ok(bad_request("Invalid request body: '@odata.id' is required."));
    };
    if let Some((_, g)) = app.store.get(Some(Kind::Group), id).await?
        && is_synced(&g)
    {
        return Ok(synced_refusal());
    }
    match app.store.add_member(id, &member).await {
        Ok(()) => Ok(GraphResponse::empty(204)),
        Err(OpError::NotFound) => Ok(match app.store.get(Some(Kind::Group), id).await? {
            None => not_found(id),
            Some(_) => not_found(&member),
        }),
        Err(e) => store_err(e, id),
    }
}

/// `DELETE /groups/{id}/members/{memberId}/$ref`: 204.
/// <https://learn.microsoft.com/en-us/graph/api/group-delete-members?view=graph-rest-1.0>
async fn remove_member(app: &App, id: &str, member: &str) -> Result<GraphResponse, rusqlite::Error> {
    if let Some((_, g)) = app.store.get(Some(Kind::Group), id).await?
        && is_synced(&g)
    {
        return Ok(synced_refusal());
    }
    match app.store.remove_member(id, member).await {
        Ok(()) => Ok(GraphResponse::empty(204)),
        Err(e) => store_err(e, member),
    }
}

/// The state carried by `$skiptoken` (next page) and `$deltatoken` (next round) of a delta query.
#[derive(Serialize, Deserialize)]
struct DeltaState {
    /// Epoch of the change log; a reset makes older tokens unknown.
    e: String,
    /// `users` or `groups`.
    k: String,
    /// Changes after this sequence number (0 with `i` for the initial round).
    s: i64,
    /// Up to this sequence number (pages of one round share it).
    m: i64,
    /// Last object id served in this round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<String>,
    /// Initial (full) round.
    #[serde(default)]
    i: bool,
    /// `$select` of the first request, carried into later requests like Graph does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sel: Option<String>,
    /// When the token was issued (Unix seconds); tokens older than the configured lifetime expire.
    #[serde(default)]
    t: u64,
}

fn encode_state(s: &DeltaState) -> String {
    B64.encode(serde_json::to_vec(s).unwrap_or_default())
}

/// The refusal of an unknown or expired delta token. For identity resources (users, groups) Graph
/// answers such tokens with 400 BadRequest and `syncStateNotFound` ("The sync state generation is
/// not found. The delta token is expired and data must be synchronized again."), per the blog below.
/// <https://devblogs.microsoft.com/microsoft365dev/duration-of-change-tracking-tokens-for-identity-and-education-resources/>,
/// <https://learn.microsoft.com/en-us/graph/delta-query-overview>
fn sync_state_not_found() -> GraphResponse {
    error(
        400,
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    )
}

/// `GET /users/delta` and `GET /groups/delta`: pages with `@odata.nextLink`, the last with
/// `@odata.deltaLink`; removed objects as `{"id", "@removed": {"reason": "changed"}}` (a deleted user
/// goes to the recycle bin, which Graph reports as `changed`); groups carry `members@delta`.
/// <https://learn.microsoft.com/en-us/graph/api/user-delta?view=graph-rest-1.0>,
/// <https://learn.microsoft.com/en-us/graph/api/group-delta?view=graph-rest-1.0>,
/// <https://learn.microsoft.com/en-us/graph/delta-query-users>
async fn delta(app: &App, req: &Request, kind: Kind) -> Result<GraphResponse, rusqlite::Error> {
    let epoch = app.store.epoch().await?;
    let max = app.store.max_seq().await?;
    let token = req.param("$deltatoken").or_else(|| req.param("$skiptoken"));
    let state = match token {
        None => DeltaState {
            e: epoch.clone(),
            k: coll_name(kind).into(),
            s: 0,
            m: max,
            a: None,
            i: true,
            sel: req.param("$select").map(str::to_string),
            t: unix_now(),
        },
        Some(t) => {
            let Some(mut st) = B64.decode(t).ok().and_then(|b| serde_json::from_slice::<DeltaState>(&b).ok())
            else {
                return Ok(sync_state_not_found());
            };
            let expired = unix_now().saturating_sub(st.t) > app.config.delta_token_lifetime_seconds;
            if expired || st.e != epoch || st.k != coll_name(kind) || st.s > max || st.m > max {
                return Ok(sync_state_not_found());
            }
            if req.param("$deltatoken").is_some() {
                // A new round: everything changed since the last one, up to now.
                st.i = false;
                st.m = max;
                st.a = None;
            }
            st
        }
    };
    let select: Option<Vec<String>> = state
        .sel
        .as_deref()
        .map(|s| s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect());
    let with_members =
        kind == Kind::Group && select.as_ref().is_none_or(|s| s.iter().any(|p| p == "members"));
    let page = app.config.delta_page_size.max(1) as i64;
    let minimal = req.prefer.as_deref().is_some_and(|p| p.contains("return=minimal"));
    let mut value = Vec::new();
    let last: Option<String>;
    let more: bool;
    // Each page reads its objects, their changed properties and their members in a few queries,
    // not a few per object (a 100,000-object round made 300,000 queries).
    if state.i {
        let objs = app.store.list(kind, state.a.as_deref(), page + 1).await?;
        more = objs.len() as i64 > page;
        let objs: Vec<Obj> = objs.into_iter().take(page as usize).collect();
        last = objs.last().and_then(|o| o.get("id")).and_then(Value::as_str).map(str::to_string);
        let ids: Vec<String> =
            objs.iter().filter_map(|o| o.get("id").and_then(Value::as_str).map(str::to_string)).collect();
        let mut members = if with_members { app.store.member_ids_many(&ids).await? } else { HashMap::new() };
        for o in &objs {
            let mut p = project(kind, o, select.as_deref());
            if let (true, Some(id)) = (with_members, o.get("id").and_then(Value::as_str)) {
                let ms: Vec<Value> = members
                    .remove(id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, m)| json!({"@odata.type": k.odata_type(), "id": m}))
                    .collect();
                p.insert("members@delta".into(), Value::Array(ms));
            }
            value.push(Value::Object(p));
        }
    } else {
        let ids = app.store.changed_ids(kind, state.s, state.m, state.a.as_deref(), page + 1).await?;
        more = ids.len() as i64 > page;
        let ids: Vec<String> = ids.into_iter().take(page as usize).collect();
        last = ids.last().cloned();
        let mut objects = app.store.get_many(&ids).await?;
        // `Prefer: return=minimal`: an updated object carries only the properties that changed
        // in this round (within `$select`); a created one comes whole.
        // <https://learn.microsoft.com/en-us/graph/delta-query-overview>
        let mut changed = if minimal {
            app.store.changed_props_many(kind, &ids, state.s, state.m).await?
        } else {
            HashMap::new()
        };
        let mut member_changes = if with_members {
            app.store.member_changes_many(&ids, state.s, state.m).await?
        } else {
            HashMap::new()
        };
        let member_ids: Vec<String> = member_changes
            .values()
            .flatten()
            .map(|c| c.member_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let member_kinds =
            if member_ids.is_empty() { HashMap::new() } else { app.store.kinds_of(&member_ids).await? };
        for id in &ids {
            match objects.remove(id).filter(|(k, _)| *k == kind) {
                None => value.push(json!({"id": id, "@removed": {"reason": "changed"}})),
                Some((_, o)) => {
                    let minimal_props = changed.remove(id).flatten().map(|changed| {
                        changed
                            .into_iter()
                            .filter(|c| {
                                select.as_ref().is_none_or(|s| s.iter().any(|x| x.eq_ignore_ascii_case(c)))
                            })
                            .collect::<Vec<String>>()
                    });
                    let mut p = match &minimal_props {
                        Some(props) => project(kind, &o, Some(props)),
                        None => project(kind, &o, select.as_deref()),
                    };
                    if with_members {
                        let ms: Vec<Value> = member_changes
                            .remove(id)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|c| {
                                let t = member_kinds
                                    .get(&c.member_id)
                                    .map_or("#microsoft.graph.directoryObject", |k| k.odata_type());
                                if c.added {
                                    json!({"@odata.type": t, "id": c.member_id})
                                } else {
                                    json!({"@odata.type": t, "id": c.member_id, "@removed": {"reason": "deleted"}})
                                }
                            })
                            .collect();
                        p.insert("members@delta".into(), Value::Array(ms));
                    }
                    value.push(Value::Object(p));
                }
            }
        }
    }
    let mut body = json!({"@odata.context": context(app, kind, select.as_deref()), "value": value});
    let link = if more {
        let next = DeltaState { a: last, ..state };
        (
            "@odata.nextLink",
            format!("{}/v1.0/{}/delta?$skiptoken={}", app.base_url, coll_name(kind), encode_state(&next)),
        )
    } else {
        let next = DeltaState { s: state.m, m: state.m, a: None, i: false, t: unix_now(), ..state };
        (
            "@odata.deltaLink",
            format!("{}/v1.0/{}/delta?$deltatoken={}", app.base_url, coll_name(kind), encode_state(&next)),
        )
    };
    if let Some(b) = body.as_object_mut() {
        b.insert(link.0.into(), json!(link.1));
    }
    Ok(GraphResponse::json(200, body))
}
