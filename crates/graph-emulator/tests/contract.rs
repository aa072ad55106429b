//! Contract tests: the emulator's answers against the shapes of Microsoft's Graph documentation.
//! Each test names its documentation source.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::{Value, json};
use syncctl_graph_emulator::{EmulatorConfig, RunningEmulator, ThrottleConfig, start};

struct Client {
    http: reqwest::Client,
    emu: RunningEmulator,
    token: String,
}

impl Client {
    async fn new(config: EmulatorConfig) -> Client {
        let emu = start(config).await.unwrap();
        let http = reqwest::Client::new();
        let token = token(&http, &emu).await;
        Client { http, emu, token }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.emu.graph_url()) }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut rb = self.http.request(method, self.url(path)).bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, headers, v)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, v) = self.call(reqwest::Method::GET, path, None).await;
        (s, v)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, _, v) = self.call(reqwest::Method::POST, path, Some(body)).await;
        (s, v)
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/_emulator/{path}", self.emu.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "admin {path}: {}", r.status());
        if r.status().as_u16() == 204 { Value::Null } else { r.json().await.unwrap() }
    }
}

async fn token(http: &reqwest::Client, emu: &RunningEmulator) -> String {
    let body = format!(
        "client_id={}&client_secret={}&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&grant_type=client_credentials",
        syncctl_graph_emulator::DEFAULT_CLIENT_ID,
        syncctl_graph_emulator::DEFAULT_CLIENT_SECRET
    );
    let r = http
        .post(emu.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3599);
    v["access_token"].as_str().unwrap().to_string()
}

fn config() -> EmulatorConfig {
    EmulatorConfig {
        verified_domains: vec!["contoso.com".into()],
        unverified_domains: vec!["contoso.local".into()],
        ..EmulatorConfig::default()
    }
}

fn new_user(upn: &str) -> Value {
    json!({
        "accountEnabled": true,
        "displayName": upn,
        "mailNickname": upn.split('@').next().unwrap(),
        "userPrincipalName": upn,
        "passwordProfile": {"forceChangePasswordNextSignIn": true, "password": "xWwvJ]6NMw+bWH-d"},
    })
}

/// Token, then 401 without a bearer token: error shape `{"error": {"code": "InvalidAuthenticationToken",
/// "message", "innerError"}}`. Sources: <https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow>,
/// <https://learn.microsoft.com/en-us/graph/errors>
#[tokio::test]
async fn token_required_401() {
    let c = Client::new(config()).await;
    let r = c.http.get(c.url("/users")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "InvalidAuthenticationToken");
    assert!(v["error"]["message"].is_string());
    assert!(v["error"]["innerError"]["request-id"].is_string());
    let r = c.http.get(c.url("/users")).bearer_auth("emu1.forged.0000").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A wrong secret is refused at the token endpoint.
    let r = c
        .http
        .post(c.emu.token_url())
        .body(format!("client_id={}&client_secret=wrong&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&grant_type=client_credentials", syncctl_graph_emulator::DEFAULT_CLIENT_ID))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    assert_eq!(c.get("/users").await.0, 200);
}

/// Domains: `value` of `{id, authenticationType, isDefault, isInitial, isVerified}`.
/// Source: <https://learn.microsoft.com/en-us/graph/api/domain-list?view=graph-rest-1.0>
#[tokio::test]
async fn domains_list() {
    let c = Client::new(config()).await;
    let (s, v) = c.get("/domains").await;
    assert_eq!(s, 200);
    let ds = v["value"].as_array().unwrap();
    let initial = ds.iter().find(|d| d["id"] == "contoso.onmicrosoft.com").unwrap();
    assert_eq!(initial["isInitial"], true);
    assert_eq!(initial["isVerified"], true);
    assert_eq!(initial["authenticationType"], "Managed");
    let custom = ds.iter().find(|d| d["id"] == "contoso.com").unwrap();
    assert_eq!(custom["isDefault"], true);
    assert_eq!(ds.iter().find(|d| d["id"] == "contoso.local").unwrap()["isVerified"], false);
}

/// User list page: `{"@odata.context", "value": [{businessPhones, displayName, givenName, jobTitle, mail,
/// mobilePhone, officeLocation, preferredLanguage, surname, userPrincipalName, id}]}`, `$select` honoured.
/// Source: <https://learn.microsoft.com/en-us/graph/api/user-list?view=graph-rest-1.0>
#[tokio::test]
async fn user_list_page_shape() {
    let c = Client::new(config()).await;
    let (s, created) = c.post("/users", new_user("adele@contoso.com")).await;
    assert_eq!(s, 201);
    assert!(created["id"].as_str().unwrap().len() == 36);
    assert!(created.get("passwordProfile").is_none());
    let (s, v) = c.get("/users").await;
    assert_eq!(s, 200);
    assert!(v["@odata.context"].as_str().unwrap().ends_with("$metadata#users"));
    let u = &v["value"][0];
    for k in [
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
    ] {
        assert!(u.get(k).is_some(), "missing {k}");
    }
    assert!(v.get("@odata.nextLink").is_none());
    let (_, v) = c.get("/users?$select=id,userPrincipalName,onPremisesImmutableId,proxyAddresses").await;
    let u = v["value"][0].as_object().unwrap();
    assert_eq!(u.len(), 4);
    assert_eq!(u["onPremisesImmutableId"], Value::Null);
    let id = created["id"].as_str().unwrap();
    let (s, one) = c.get("/users/ADELE@contoso.com?$select=displayName").await;
    assert_eq!((s, one["id"].as_str()), (200, Some(id)));
    let (s, one) = c.get(&format!("/users/{id}?$select=displayName")).await;
    assert_eq!((s, one["displayName"].as_str()), (200, Some("adele@contoso.com")));
    let (s, e) = c.get("/users/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["code"], "Request_ResourceNotFound");
    assert_eq!(c.get("/users?$top=1000").await.0, 400);
}

/// Paging: 2,500 users with `$top=999` come in pages of 999, 999 and 502 linked by `@odata.nextLink`,
/// the last page without one. Source: <https://learn.microsoft.com/en-us/graph/paging>
#[tokio::test]
async fn next_link_paging_2500() {
    let c = Client::new(config()).await;
    let users: Vec<Value> = (0..2500)
        .map(|i| json!({"userPrincipalName": format!("u{i:04}@contoso.com"), "displayName": format!("User {i}"), "mailNickname": format!("u{i:04}")}))
        .collect();
    c.admin("users", Value::Array(users)).await;
    let mut url = "/users?$select=id,userPrincipalName&$top=999".to_string();
    let mut sizes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let (s, v) = c.get(&url).await;
        assert_eq!(s, 200);
        let page = v["value"].as_array().unwrap();
        sizes.push(page.len());
        for u in page {
            assert!(seen.insert(u["userPrincipalName"].as_str().unwrap().to_string()));
        }
        match v["@odata.nextLink"].as_str() {
            Some(n) => {
                assert!(n.contains("$skiptoken="));
                url = n.to_string();
            }
            None => break,
        }
    }
    assert_eq!(sizes, vec![999, 999, 502]);
    assert_eq!(seen.len(), 2500);
}

/// A group's members come in pages as users do: 100 by default, `$top` up to 999, each page but
/// the last with an `@odata.nextLink`. Source:
/// <https://learn.microsoft.com/en-us/graph/api/group-list-members?view=graph-rest-1.0>
#[tokio::test]
async fn group_members_are_paged() {
    let c = Client::new(config()).await;
    let users: Vec<Value> = (0..250)
        .map(|i| json!({"id": format!("m{i:03}"), "userPrincipalName": format!("m{i:03}@contoso.com"), "displayName": format!("M {i}")}))
        .collect();
    c.admin("users", Value::Array(users)).await;
    let all: Vec<String> = (0..250).map(|i| format!("m{i:03}")).collect();
    c.admin("groups", json!({"id": "big", "displayName": "Big", "mailEnabled": false, "securityEnabled": true, "mailNickname": "big", "members": all})).await;
    let pages = |first: &str| {
        let first = first.to_owned();
        let c = &c;
        async move {
            let (mut url, mut sizes, mut ids) = (first, Vec::new(), Vec::new());
            loop {
                let (s, v) = c.get(&url).await;
                assert_eq!(s, 200, "{v}");
                let page = v["value"].as_array().unwrap();
                sizes.push(page.len());
                ids.extend(page.iter().map(|m| m["id"].as_str().unwrap().to_owned()));
                match v["@odata.nextLink"].as_str() {
                    Some(n) => url = n.to_owned(),
                    None => return (sizes, ids),
                }
            }
        }
    };
    let (sizes, ids) = pages("/groups/big/members?$select=id").await;
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(ids, all, "every member once, in id order");
    let (sizes, ids) = pages("/groups/big/members?$select=id&$top=999").await;
    assert_eq!((sizes, ids), (vec![250], all.clone()));
    let (sizes, _) = pages("/groups/big/members?$top=120").await;
    assert_eq!(sizes, [120, 120, 10]);
    assert_eq!(c.get("/groups/big/members?$top=1000").await.0, 400);
    assert_eq!(c.get("/groups/big/members?$skiptoken=!!").await.0, 400);
}

/// Create refusals: 400 for a UPN outside the verified domains, 400 `ObjectConflict` for a duplicate
/// UPN (case-insensitive), proxyAddress or onPremisesImmutableId; proxyAddresses is read-only.
/// Sources: <https://learn.microsoft.com/en-us/graph/api/user-post-users?view=graph-rest-1.0>,
/// <https://learn.microsoft.com/en-us/graph/errors>
#[tokio::test]
async fn create_refusals_400() {
    let c = Client::new(config()).await;
    let (s, e) = c.post("/users", new_user("bob@contoso.local")).await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["code"], "Request_BadRequest");
    assert!(e["error"]["message"].as_str().unwrap().contains("verified domain"));
    let mut u = new_user("bob@contoso.com");
    u["onPremisesImmutableId"] = json!("AAAAAAAAAAAAAAAAAAAAAA==");
    u["mail"] = json!("bob@contoso.com");
    assert_eq!(c.post("/users", u).await.0, 201);
    let (s, e) = c.post("/users", new_user("BOB@Contoso.com")).await;
    assert_eq!(s, 400);
    assert_eq!(
        e["error"]["message"],
        "Another object with the same value for property userPrincipalName already exists."
    );
    assert_eq!(e["error"]["details"][0]["code"], "ObjectConflict");
    let mut u = new_user("robert@contoso.com");
    u["mail"] = json!("Bob@contoso.com");
    let (s, e) = c.post("/users", u).await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["details"][0]["target"], "proxyAddresses");
    let mut u = new_user("robert@contoso.com");
    u["onPremisesImmutableId"] = json!("AAAAAAAAAAAAAAAAAAAAAA==");
    assert_eq!(c.post("/users", u).await.0, 400);
    let mut u = new_user("robert@contoso.com");
    u["proxyAddresses"] = json!(["SMTP:robert@contoso.com"]);
    assert_eq!(c.post("/users", u).await.0, 400);
    let mut u = new_user("robert@contoso.com");
    u.as_object_mut().unwrap().remove("passwordProfile");
    assert_eq!(c.post("/users", u).await.0, 400);
}

/// PATCH answers 204, DELETE 204, then 404; a user synchronized by another engine refuses writes.
/// Sources: <https://learn.microsoft.com/en-us/graph/api/user-update?view=graph-rest-1.0>,
/// <https://learn.microsoft.com/en-us/graph/api/user-delete?view=graph-rest-1.0>
#[tokio::test]
async fn patch_delete_204() {
    let c = Client::new(config()).await;
    let (_, u) = c.post("/users", new_user("carol@contoso.com")).await;
    let id = u["id"].as_str().unwrap();
    let (s, _, _) = c
        .call(
            reqwest::Method::PATCH,
            &format!("/users/{id}"),
            Some(json!({"department": "Sales", "mail": "carol@contoso.com"})),
        )
        .await;
    assert_eq!(s, 204);
    let (_, v) = c.get(&format!("/users/{id}?$select=department,proxyAddresses")).await;
    assert_eq!(v["department"], "Sales");
    assert_eq!(v["proxyAddresses"], json!(["SMTP:carol@contoso.com"]));
    let (s, _, e) = c
        .call(
            reqwest::Method::PATCH,
            &format!("/users/{id}"),
            Some(json!({"userPrincipalName": "carol@fabrikam.com"})),
        )
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("Request_BadRequest")));
    assert_eq!(c.call(reqwest::Method::DELETE, &format!("/users/{id}"), None).await.0, 204);
    assert_eq!(c.call(reqwest::Method::DELETE, &format!("/users/{id}"), None).await.0, 404);
    let seeded = c
        .admin("users", json!({"userPrincipalName": "dirsync@contoso.com", "onPremisesSyncEnabled": true}))
        .await;
    let sid = seeded["value"][0]["id"].as_str().unwrap();
    let (s, _, _) =
        c.call(reqwest::Method::PATCH, &format!("/users/{sid}"), Some(json!({"department": "X"}))).await;
    assert_eq!(s, 400);
}

/// Delta: pages linked by `@odata.nextLink`, the last with `@odata.deltaLink`; after a delete the deltaLink
/// returns `{"id", "@removed": {"reason": "changed"}}` and the updated user; an unknown token gets 400 `syncStateNotFound`.
/// Sources: <https://learn.microsoft.com/en-us/graph/api/user-delta?view=graph-rest-1.0>,
/// <https://learn.microsoft.com/en-us/graph/delta-query-users>
#[tokio::test]
async fn user_delta_pages_and_removed() {
    let c = Client::new(EmulatorConfig { delta_page_size: 2, ..config() }).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, u) = c.post("/users", new_user(&format!("d{i}@contoso.com"))).await;
        ids.push(u["id"].as_str().unwrap().to_string());
    }
    let mut url = "/users/delta?$select=displayName,userPrincipalName".to_string();
    let mut count = 0;
    let mut pages = 0;
    let delta_link = loop {
        let (s, v) = c.get(&url).await;
        assert_eq!(s, 200);
        pages += 1;
        count += v["value"].as_array().unwrap().len();
        assert!(v["@odata.context"].as_str().unwrap().contains("users(displayName,userPrincipalName)"));
        if let Some(n) = v["@odata.nextLink"].as_str() {
            assert!(v.get("@odata.deltaLink").is_none());
            url = n.to_string();
        } else {
            break v["@odata.deltaLink"].as_str().unwrap().to_string();
        }
    };
    assert_eq!((count, pages), (5, 3));
    // Nothing changed: an empty page with a new deltaLink.
    let (_, v) = c.get(&delta_link).await;
    assert_eq!(v["value"], json!([]));
    assert!(v["@odata.deltaLink"].is_string());
    assert_eq!(c.call(reqwest::Method::DELETE, &format!("/users/{}", ids[1]), None).await.0, 204);
    c.call(reqwest::Method::PATCH, &format!("/users/{}", ids[3]), Some(json!({"displayName": "Renamed"})))
        .await;
    let (_, v) = c.get(&delta_link).await;
    let vals = v["value"].as_array().unwrap();
    assert_eq!(vals.len(), 2);
    let removed = vals.iter().find(|x| x["id"] == ids[1].as_str()).unwrap();
    assert_eq!(removed["@removed"], json!({"reason": "changed"}));
    let renamed = vals.iter().find(|x| x["id"] == ids[3].as_str()).unwrap();
    assert_eq!(renamed["displayName"], "Renamed");
    assert!(renamed.get("givenName").is_none(), "the first request's $select is carried");
    // `Prefer: return=minimal`: only the changed properties of an updated object.
    let r = c
        .http
        .get(&delta_link)
        .bearer_auth(&c.token)
        .header("Prefer", "return=minimal")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let renamed = v["value"].as_array().unwrap().iter().find(|x| x["id"] == ids[3].as_str()).unwrap().clone();
    assert_eq!(renamed, json!({"id": ids[3], "displayName": "Renamed"}));
    let (s, e) = c.get("/users/delta?$deltatoken=bm9wZQ").await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["code"], "syncStateNotFound");
    // A reset expires every token.
    c.admin("reset", json!({})).await;
    assert_eq!(c.get(&delta_link).await.0, 400);
}

/// A delta round pages through the changes up to the moment it started: writes made while its
/// pages are read come in the next round, not in this one and not lost. The last change of a
/// membership within a round is the one reported.
/// Source: <https://learn.microsoft.com/en-us/graph/delta-query-overview>
#[tokio::test]
async fn a_delta_round_pages_a_fixed_window_and_later_writes_come_in_the_next_round() {
    let c = Client::new(EmulatorConfig { delta_page_size: 2, ..config() }).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, u) = c.post("/users", new_user(&format!("w{i}@contoso.com"))).await;
        ids.push(u["id"].as_str().unwrap().to_string());
    }
    let round = |start: String| {
        let c = &c;
        async move {
            let mut url = start;
            let mut seen = Vec::new();
            let mut pages = Vec::new();
            loop {
                let (s, v) = c.get(&url).await;
                assert_eq!(s, 200, "{v}");
                for x in v["value"].as_array().unwrap() {
                    seen.push(x.clone());
                }
                pages.push(url.clone());
                match v["@odata.nextLink"].as_str() {
                    Some(n) => url = n.to_string(),
                    None => return (seen, v["@odata.deltaLink"].as_str().unwrap().to_string(), pages),
                }
            }
        }
    };
    let (all, link, _) = round("/users/delta?$select=displayName".into()).await;
    assert_eq!(all.len(), 5);
    for (i, id) in ids.iter().enumerate() {
        let (s, _, _) = c
            .call(
                reqwest::Method::PATCH,
                &format!("/users/{id}"),
                Some(json!({"displayName": format!("R{i}")})),
            )
            .await;
        assert_eq!(s, 204);
    }
    // The first page of the round, then writes, then the rest of the round.
    let (s, first) = c.get(&link).await;
    assert_eq!(s, 200);
    let next = first["@odata.nextLink"].as_str().unwrap().to_string();
    let (_, late) = c.post("/users", new_user("late@contoso.com")).await;
    let late = late["id"].as_str().unwrap().to_string();
    c.call(reqwest::Method::PATCH, &format!("/users/{}", ids[4]), Some(json!({"displayName": "Again"})))
        .await;
    let (rest, link2, pages) = round(next).await;
    let mut got: Vec<Value> = first["value"].as_array().unwrap().clone();
    got.extend(rest);
    let mut got_ids: Vec<String> = got.iter().map(|x| x["id"].as_str().unwrap().to_string()).collect();
    assert!(got_ids.windows(2).all(|w| w[0] < w[1]), "pages in id order, none twice: {got_ids:?}");
    got_ids.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got_ids, want, "exactly the five changed before the round, in {} pages", pages.len() + 1);
    assert!(
        got.iter().all(|x| x["displayName"].as_str().is_some_and(|d| d.starts_with('R') || d == "Again"))
    );
    // The next round: the late create and the second rename, nothing else.
    let (next_round, _, _) = round(link2).await;
    let mut next_ids: Vec<&str> = next_round.iter().map(|x| x["id"].as_str().unwrap()).collect();
    next_ids.sort();
    let mut want: Vec<&str> = vec![late.as_str(), ids[4].as_str()];
    want.sort();
    assert_eq!(next_ids, want);

    // Membership: removed, added again, and another added then removed, all in one round.
    let (_, g) = c
        .post(
            "/groups",
            json!({"displayName": "W", "mailEnabled": false, "mailNickname": "w", "securityEnabled": true}),
        )
        .await;
    let gid = g["id"].as_str().unwrap().to_string();
    let odata =
        |id: &str| json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{id}")});
    assert_eq!(c.post(&format!("/groups/{gid}/members/$ref"), odata(&ids[0])).await.0, 204);
    let (_, v) = c.get("/groups/delta?$select=displayName,members").await;
    let glink = v["@odata.deltaLink"].as_str().unwrap().to_string();
    let del = |m: &str| format!("/groups/{gid}/members/{m}/$ref");
    assert_eq!(c.call(reqwest::Method::DELETE, &del(&ids[0]), None).await.0, 204);
    assert_eq!(c.post(&format!("/groups/{gid}/members/$ref"), odata(&ids[0])).await.0, 204);
    assert_eq!(c.post(&format!("/groups/{gid}/members/$ref"), odata(&ids[1])).await.0, 204);
    assert_eq!(c.call(reqwest::Method::DELETE, &del(&ids[1]), None).await.0, 204);
    let (_, v) = c.get(&glink).await;
    let md = v["value"][0]["members@delta"].as_array().unwrap();
    assert_eq!(md.len(), 2, "{md:?}");
    assert!(md.iter().any(|x| x["id"] == ids[0].as_str() && x.get("@removed").is_none()), "{md:?}");
    assert!(md.iter().any(|x| x["id"] == ids[1].as_str() && x["@removed"]["reason"] == "deleted"), "{md:?}");
}

/// Groups, members through `$ref` (204; 400 when already a member), and group delta with `members@delta`.
/// Sources: <https://learn.microsoft.com/en-us/graph/api/group-post-members?view=graph-rest-1.0>,
/// <https://learn.microsoft.com/en-us/graph/api/group-delta?view=graph-rest-1.0>
#[tokio::test]
async fn groups_members_and_delta() {
    let c = Client::new(config()).await;
    let (_, u1) = c.post("/users", new_user("m1@contoso.com")).await;
    let (_, u2) = c.post("/users", new_user("m2@contoso.com")).await;
    let (s, g) = c.post("/groups", json!({"displayName": "Sales", "mailEnabled": false, "mailNickname": "sales", "securityEnabled": true, "onPremisesImmutableId": "R1"})).await;
    assert_eq!(s, 201);
    let gid = g["id"].as_str().unwrap().to_string();
    let odata = |u: &Value| json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", u["id"].as_str().unwrap())});
    assert_eq!(c.post(&format!("/groups/{gid}/members/$ref"), odata(&u1)).await.0, 204);
    let (s, e) = c.post(&format!("/groups/{gid}/members/$ref"), odata(&u1)).await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("Request_BadRequest")));
    let (_, m) = c.get(&format!("/groups/{gid}/members")).await;
    assert_eq!(m["value"][0]["@odata.type"], "#microsoft.graph.user");
    let (_, v) = c.get("/groups/delta?$select=displayName,members").await;
    assert_eq!(
        v["value"][0]["members@delta"],
        json!([{"@odata.type": "#microsoft.graph.user", "id": u1["id"]}])
    );
    let link = v["@odata.deltaLink"].as_str().unwrap().to_string();
    assert_eq!(c.post(&format!("/groups/{gid}/members/$ref"), odata(&u2)).await.0, 204);
    let u1id = u1["id"].as_str().unwrap();
    assert_eq!(
        c.call(reqwest::Method::DELETE, &format!("/groups/{gid}/members/{u1id}/$ref"), None).await.0,
        204
    );
    let (_, v) = c.get(&link).await;
    let md = v["value"][0]["members@delta"].as_array().unwrap();
    assert_eq!(md.len(), 2);
    assert!(md.iter().any(|x| x["id"] == u1["id"] && x["@removed"]["reason"] == "deleted"));
    assert!(md.iter().any(|x| x["id"] == u2["id"] && x.get("@removed").is_none()));
    let state: Value = c
        .http
        .get(format!("{}/_emulator/state", c.emu.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["groups"][0]["members"], json!([u2["id"]]));
    // Deleting a user removes it from its groups, which the group's delta reports.
    let link = v["@odata.deltaLink"].as_str().unwrap().to_string();
    let u2id = u2["id"].as_str().unwrap();
    assert_eq!(c.call(reqwest::Method::DELETE, &format!("/users/{u2id}"), None).await.0, 204);
    let (_, v) = c.get(&link).await;
    assert_eq!(v["value"][0]["members@delta"][0]["@removed"]["reason"], "deleted");
    assert_eq!(c.get(&format!("/groups/{gid}/members")).await.1["value"], json!([]));
    assert_eq!(c.call(reqwest::Method::DELETE, &format!("/groups/{gid}"), None).await.0, 204);
    let (_, v) = c.get(v["@odata.deltaLink"].as_str().unwrap()).await;
    assert_eq!(v["value"][0]["@removed"]["reason"], "changed");
}

/// `$batch`: `{"responses": [{"id", "status", "headers", "body"}]}`, `dependsOn` failures as 424, more than
/// 20 requests refused with 400. Source: <https://learn.microsoft.com/en-us/graph/json-batching>
#[tokio::test]
async fn batch_response_shape() {
    let c = Client::new(config()).await;
    let (s, v) = c
        .post("/$batch", json!({"requests": [
            {"id": "1", "method": "POST", "url": "/users", "headers": {"Content-Type": "application/json"}, "body": new_user("b1@contoso.com")},
            {"id": "2", "method": "GET", "url": "/users?$select=userPrincipalName"},
            {"id": "3", "method": "POST", "url": "/users", "headers": {"Content-Type": "application/json"}, "body": new_user("b1@contoso.com")},
            {"id": "4", "dependsOn": ["3"], "method": "GET", "url": "/domains"},
        ]}))
        .await;
    assert_eq!(s, 200);
    let rs = v["responses"].as_array().unwrap();
    let by = |id: &str| rs.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by("1")["status"], 201);
    assert_eq!(by("1")["headers"]["Content-Type"], "application/json");
    assert_eq!(by("1")["body"]["userPrincipalName"], "b1@contoso.com");
    assert_eq!(by("2")["body"]["value"][0]["userPrincipalName"], "b1@contoso.com");
    assert_eq!(by("3")["status"], 400);
    assert_eq!(by("3")["body"]["error"]["details"][0]["code"], "ObjectConflict");
    assert_eq!(by("4")["status"], 424);
    let (s, v) = c
        .post("/$batch", json!({"requests": [{"id": "1", "method": "POST", "url": "/users", "body": new_user("b2@contoso.com")}]}))
        .await;
    assert_eq!((s, v["responses"][0]["status"].as_u64()), (200, Some(400)), "a body needs a Content-Type");
    let dup = json!({"requests": [{"id": "a", "method": "GET", "url": "/domains"}, {"id": "A", "method": "GET", "url": "/domains"}]});
    assert_eq!(c.post("/$batch", dup).await.0, 400, "ids are unique");
    let many: Vec<Value> =
        (0..21).map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/domains"})).collect();
    let (s, e) = c.post("/$batch", json!({"requests": many})).await;
    assert_eq!(s, 400);
    assert!(e["error"]["message"].as_str().unwrap().contains("20"));
}

/// Throttling: over the write budget Graph answers 429 with `Retry-After` and `TooManyRequests`; inside
/// `$batch` each throttled request gets its own 429 with Retry-After.
/// Source: <https://learn.microsoft.com/en-us/graph/throttling>
#[tokio::test]
async fn throttling_429_retry_after() {
    let c = Client::new(EmulatorConfig {
        throttle: ThrottleConfig { writes: 3, window_seconds: 60 },
        ..config()
    })
    .await;
    for i in 0..3 {
        assert_eq!(c.post("/users", new_user(&format!("t{i}@contoso.com"))).await.0, 201);
    }
    let (s, h, e) = c.call(reqwest::Method::POST, "/users", Some(new_user("t3@contoso.com"))).await;
    assert_eq!(s, 429);
    let ra: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&ra));
    assert_eq!(e["error"]["code"], "TooManyRequests");
    assert_eq!(e["error"]["innerError"]["status"], "429");
    // Reads are not write-throttled.
    assert_eq!(c.get("/users").await.0, 200);
    let (_, v) = c
        .post(
            "/$batch",
            json!({"requests": [
                {"id": "1", "method": "POST", "url": "/users", "headers": {"Content-Type": "application/json"}, "body": new_user("t4@contoso.com")},
                {"id": "2", "method": "GET", "url": "/users"},
            ]}),
        )
        .await;
    let r1 = &v["responses"][0];
    assert_eq!(r1["status"], 429);
    assert!(r1["headers"]["Retry-After"].as_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(v["responses"][1]["status"], 200);
    // "Hard" throttling set at run time through the admin endpoint.
    c.admin("faults", json!({"throttle": {"writes": 1, "windowSeconds": 30}})).await;
    assert_eq!(c.post("/users", new_user("h1@contoso.com")).await.0, 201);
    let (s, h, _) = c.call(reqwest::Method::POST, "/users", Some(new_user("h2@contoso.com"))).await;
    assert_eq!(s, 429);
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() <= 30);
}

/// Fault injection through `POST /_emulator/faults`: 503 `serviceNotAvailable` refuses writes, a dropped
/// connection happens after the write was applied. Source for the 503 shape: <https://learn.microsoft.com/en-us/graph/errors>
#[tokio::test]
async fn fault_injection() {
    let c = Client::new(config()).await;
    c.admin("faults", json!({"writeErrorRate": 1.0})).await;
    let (s, h, e) = c.call(reqwest::Method::POST, "/users", Some(new_user("f1@contoso.com"))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (503, Some("serviceNotAvailable")));
    assert!(h.contains_key("retry-after"));
    c.admin("faults", json!({"dropRate": 1.0})).await;
    let r = c.http.post(c.url("/users")).bearer_auth(&c.token).json(&new_user("f2@contoso.com")).send().await;
    let failed = match r {
        Err(_) => true,
        Ok(resp) => resp.bytes().await.is_err(),
    };
    assert!(failed, "the connection must be cut");
    c.admin("faults", json!({})).await;
    let (_, v) = c.get("/users?$filter=userPrincipalName eq 'f2@contoso.com'&$select=id").await;
    assert_eq!(v["value"].as_array().unwrap().len(), 1, "the dropped write was applied");
    assert_eq!(c.get("/users?$filter=userPrincipalName eq 'f1@contoso.com'").await.1["value"], json!([]));
}

/// Admin roles exposed as `GET /directoryRoles?$expand=members`.
/// Source: <https://learn.microsoft.com/en-us/graph/api/directoryrole-list?view=graph-rest-1.0>
#[tokio::test]
async fn admin_roles_expand_members() {
    let c = Client::new(config()).await;
    let (_, u) = c.post("/users", new_user("admin@contoso.com")).await;
    c.admin("admin-roles", json!({"userId": u["id"], "role": "Global Administrator"})).await;
    let (_, v) = c.get("/directoryRoles?$expand=members").await;
    assert_eq!(v["value"][0]["displayName"], "Global Administrator");
    assert_eq!(v["value"][0]["members"][0]["id"], u["id"]);
    let state: Value = c
        .http
        .get(format!("{}/_emulator/state", c.emu.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["users"].as_array().unwrap().len(), 1);
    assert_eq!(state["adminRoles"][0]["userIds"][0], u["id"]);
}

/// The state survives a restart: objects, a delta token and an access token stay valid.
#[tokio::test]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmulatorConfig { state_path: Some(dir.path().join("emu.db")), ..config() };
    let c = Client::new(cfg.clone()).await;
    let (_, u) = c.post("/users", new_user("keep@contoso.com")).await;
    let (_, v) = c.get("/users/delta?$select=userPrincipalName").await;
    let link = v["@odata.deltaLink"].as_str().unwrap().to_string();
    let token = c.token.clone();
    let Client { emu, http, .. } = c;
    emu.stop().await.unwrap();
    drop(http);
    let emu = start(cfg).await.unwrap();
    let http = reqwest::Client::new();
    let c = Client { http, emu, token };
    let id = u["id"].as_str().unwrap();
    assert_eq!(c.get(&format!("/users/{id}")).await.1["userPrincipalName"], "keep@contoso.com");
    c.call(reqwest::Method::PATCH, &format!("/users/{id}"), Some(json!({"displayName": "Kept"}))).await;
    let old_port_link = link.split("/v1.0").nth(1).unwrap();
    let (s, v) = c.get(old_port_link).await;
    assert_eq!(s, 200);
    assert_eq!(v["value"][0]["id"], u["id"]);
    assert_eq!(c.post("/users", new_user("KEEP@contoso.com")).await.0, 400);
}

/// A delta token older than its lifetime is refused with `syncStateNotFound`, so the client starts a
/// full synchronization again. Source:
/// <https://devblogs.microsoft.com/microsoft365dev/duration-of-change-tracking-tokens-for-identity-and-education-resources/>
#[tokio::test]
async fn expired_delta_token_is_sync_state_not_found() {
    let c = Client::new(EmulatorConfig { delta_token_lifetime_seconds: 0, ..config() }).await;
    let (_, v) = c.get("/users/delta").await;
    let link = v["@odata.deltaLink"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (s, e) = c.get(&link).await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("syncStateNotFound")));
}

/// The binary serves on the given address and prints its base URL; the token endpoint answers.
/// Source: <https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow>
#[tokio::test]
async fn binary_serves() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_syncctl-graph-emulator"))
        .args(["--listen", "127.0.0.1:0", "--tenant", "fabrikam.onmicrosoft.com", "--state"])
        .arg(dir.path().join("state.db"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().to_string();
    assert!(base.starts_with("http://127.0.0.1:"));
    let r = reqwest::Client::new()
        .post(format!("{base}/fabrikam.onmicrosoft.com/oauth2/v2.0/token"))
        .body(format!(
            "client_id={}&client_secret={}&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&grant_type=client_credentials",
            syncctl_graph_emulator::DEFAULT_CLIENT_ID,
            syncctl_graph_emulator::DEFAULT_CLIENT_SECRET
        ))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200);
}

/// A batch shaped like the documentation's example request (ids, a DELETE without body, a POST
/// with `body` and its Content-Type, a relative url without the leading slash and with a query) is
/// answered like its example response: `responses` with `id`, `status`, `headers` and, when there is
/// one, `body`; a refusal carries Graph's error object. Source: <https://learn.microsoft.com/en-us/graph/json-batching>
#[tokio::test]
async fn batch_answers_like_the_documented_example() {
    let c = Client::new(config()).await;
    let (s, v) = c
        .post(
            "/$batch",
            json!({"requests": [
                {"id": "1", "method": "GET", "url": "/domains"},
                {"id": "3", "method": "DELETE", "url": "/groups/0e226165-c685-41ce-8bfc-df8360ab325d"},
                {"id": "4", "url": "/users", "method": "POST", "body": new_user("lynner@contoso.com"), "headers": {"Content-Type": "application/json"}},
                {"id": "5", "url": "users?$select=id,displayName,userPrincipalName", "method": "GET"}
            ]}),
        )
        .await;
    assert_eq!(s, 200);
    let rs = v["responses"].as_array().unwrap();
    assert_eq!(rs.len(), 4);
    for r in rs {
        let o = r.as_object().unwrap();
        assert!(o["id"].is_string() && o["status"].is_u64() && o["headers"].is_object(), "{r}");
        assert!(o.keys().all(|k| ["id", "status", "headers", "body"].contains(&k.as_str())), "{r}");
    }
    let by = |id: &str| rs.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by("1")["status"], 200);
    assert!(by("1")["body"]["value"].is_array());
    assert_eq!(by("3")["status"], 404);
    assert_eq!(by("3")["body"]["error"]["code"], "Request_ResourceNotFound");
    assert!(by("3")["body"]["error"]["innerError"]["request-id"].is_string());
    assert_eq!(by("4")["status"], 201);
    assert_eq!(by("4")["headers"]["Content-Type"], "application/json");
    assert_eq!(by("5")["body"]["value"][0]["userPrincipalName"], "lynner@contoso.com");
}

/// Objects mastered on-premises by another sync engine (`onPremisesSyncEnabled: true`): PATCH,
/// DELETE and member `$ref` changes are refused with 400 `Request_BadRequest` and the message Graph
/// gives (Microsoft's reference pages do not print it; reported in
/// <https://github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/5768>); a cloud-mastered
/// property (usageLocation) stays writable.
#[tokio::test]
async fn synced_objects_refuse_writes() {
    let c = Client::new(config()).await;
    let refusal = "Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration.";
    c.admin("users", json!({"id": "s1", "userPrincipalName": "dirsync@contoso.com", "onPremisesSyncEnabled": true, "onPremisesImmutableId": "T1RIRVI="})).await;
    c.admin("users", json!({"id": "u1", "userPrincipalName": "cloud@contoso.com"})).await;
    c.admin("groups", json!({"id": "sg", "displayName": "Synced", "mailEnabled": false, "securityEnabled": true, "mailNickname": "synced", "onPremisesSyncEnabled": true, "members": ["s1"]})).await;
    let (s, _, e) = c.call(reqwest::Method::PATCH, "/users/s1", Some(json!({"jobTitle": "Boss"}))).await;
    assert_eq!(
        (s, e["error"]["code"].as_str(), e["error"]["message"].as_str()),
        (400, Some("Request_BadRequest"), Some(refusal))
    );
    let (s, _, e) = c.call(reqwest::Method::DELETE, "/users/s1", None).await;
    assert_eq!((s, e["error"]["message"].as_str()), (400, Some(refusal)));
    let (s, e) = c
        .post(
            "/groups/sg/members/$ref",
            json!({"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/u1"}),
        )
        .await;
    assert_eq!((s, e["error"]["message"].as_str()), (400, Some(refusal)));
    let (s, _, e) = c.call(reqwest::Method::DELETE, "/groups/sg/members/s1/$ref", None).await;
    assert_eq!((s, e["error"]["message"].as_str()), (400, Some(refusal)));
    let (s, _, _) = c.call(reqwest::Method::PATCH, "/users/s1", Some(json!({"usageLocation": "NL"}))).await;
    assert_eq!(s, 204);
    let (_, v) = c.get("/users/s1?$select=jobTitle,usageLocation").await;
    assert_eq!((v["jobTitle"].clone(), v["usageLocation"].as_str()), (Value::Null, Some("NL")));
    assert_eq!(c.get("/groups/sg/members").await.1["value"][0]["id"], "s1");
}

/// The admin endpoints for tests: `GET /_emulator/requests` lists the Graph requests received
/// (method, url, content-type and prefer headers, body; never the Authorization header, passwords
/// redacted, also inside `$batch`), and `POST /_emulator/responses` scripts answers, also for
/// requests inside `$batch`, consumed in order.
#[tokio::test]
async fn recorded_requests_and_scripted_answers() {
    let c = Client::new(config()).await;
    let (s, _) = c.post("/users", new_user("rec@contoso.com")).await;
    assert_eq!(s, 201);
    c.post("/$batch", json!({"requests": [{"id": "1", "method": "POST", "url": "/users", "headers": {"Content-Type": "application/json"}, "body": new_user("rec2@contoso.com")}]})).await;
    let v: Value = c
        .http
        .get(format!("{}/_emulator/requests", c.emu.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reqs = v["value"].as_array().unwrap();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0]["method"], "POST");
    assert_eq!(reqs[0]["url"], "/v1.0/users");
    assert_eq!(reqs[0]["headers"], json!({"content-type": "application/json"}));
    assert_eq!(reqs[0]["body"]["passwordProfile"]["password"], "<redacted>");
    assert_eq!(reqs[1]["body"]["requests"][0]["body"]["passwordProfile"]["password"], "<redacted>");
    let all = serde_json::to_string(&v).unwrap();
    assert!(!all.contains(&c.token) && !all.contains("xWwvJ]6NMw+bWH-d"));
    let r = c.http.delete(format!("{}/_emulator/requests", c.emu.base_url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    c.admin(
        "responses",
        json!([
            {"method": "POST", "path": "/users", "status": 429, "headers": {"Retry-After": "2.128"}, "body": {"error": {"code": "TooManyRequests", "message": "Please retry again later."}}},
            {"method": "GET", "path": "domains", "status": 403, "times": 2, "body": {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation."}}}
        ]),
    )
    .await;
    let (_, v) = c
        .post("/$batch", json!({"requests": [{"id": "1", "method": "POST", "url": "/users", "headers": {"Content-Type": "application/json"}, "body": new_user("rec3@contoso.com")}]}))
        .await;
    assert_eq!(v["responses"][0]["status"], 429);
    assert_eq!(v["responses"][0]["headers"]["Retry-After"], "2.128");
    assert_eq!(c.post("/users", new_user("rec3@contoso.com")).await.0, 201, "used once");
    assert_eq!(c.get("/domains").await.0, 403);
    assert_eq!(c.get("/domains?$select=id").await.0, 403, "the query does not matter");
    assert_eq!(c.get("/domains").await.0, 200);
}

/// `GET /_emulator/stats` (an emulator endpoint, no Graph counterpart): applied writes by method
/// and path template, refusals, 429s, injected 503s and cut connections; reads are not counted;
/// `$batch` sub-requests count one by one; a reset zeroes them.
#[tokio::test]
async fn write_stats_count_every_answer_to_a_write() {
    let c = Client::new(config()).await;
    let stats = || async {
        let r = c.http.get(format!("{}/_emulator/stats", c.emu.base_url())).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.json::<Value>().await.unwrap()
    };
    let zero = json!({"writes": {}, "writesByMethod": {}, "refused": 0, "throttled": 0, "unavailable": 0, "dropped": 0, "scripted": 0});
    assert_eq!(stats().await, zero);
    let (s, u) = c.post("/users", new_user("s1@contoso.com")).await;
    assert_eq!(s, 201);
    let id = u["id"].as_str().unwrap().to_string();
    let (s, g) = c
        .post(
            "/groups",
            json!({"displayName": "G", "mailEnabled": false, "mailNickname": "g", "securityEnabled": true}),
        )
        .await;
    assert_eq!(s, 201);
    let gid = g["id"].as_str().unwrap().to_string();
    let member = json!({"@odata.id": format!("{}/directoryObjects/{id}", c.emu.graph_url())});
    assert_eq!(c.post(&format!("/groups/{gid}/members/$ref"), member).await.0, 204);
    let (s, _, _) =
        c.call(reqwest::Method::PATCH, &format!("/users/{id}"), Some(json!({"displayName": "S"}))).await;
    assert_eq!(s, 204);
    // Reads are not counted; a refusal is counted as refused, not as a write.
    assert_eq!(c.get("/users").await.0, 200);
    assert_eq!(c.post("/users", new_user("s1@contoso.com")).await.0, 400);
    // Two sub-requests of a batch: one applied, one refused.
    let (s, _) = c
        .post(
            "/$batch",
            json!({"requests": [
                {"id": "1", "method": "DELETE", "url": format!("/groups/{gid}/members/{id}/$ref")},
                {"id": "2", "method": "DELETE", "url": "/users/00000000-0000-0000-0000-000000000000"},
            ]}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = c.call(reqwest::Method::DELETE, &format!("/users/{id}"), None).await;
    assert_eq!(s, 204);
    // A 503, a 429 and a cut connection.
    c.admin("faults", json!({"writeErrorRate": 1.0})).await;
    assert_eq!(c.post("/users", new_user("s2@contoso.com")).await.0, 503);
    c.admin("faults", json!({"throttle": {"writes": 0, "windowSeconds": 60}})).await;
    assert_eq!(c.post("/users", new_user("s3@contoso.com")).await.0, 429);
    c.admin("faults", json!({"dropRate": 1.0, "throttle": {"writes": 100, "windowSeconds": 60}})).await;
    let r = c.http.post(c.url("/users")).bearer_auth(&c.token).json(&new_user("s4@contoso.com")).send().await;
    assert!(r.is_err() || r.unwrap().bytes().await.is_err(), "the connection must be cut");
    // A scripted answer is counted only as scripted, even a 2xx one.
    c.admin("faults", json!({})).await;
    c.admin("responses", json!({"method": "POST", "path": "/users", "status": 201, "body": {"id": "x"}}))
        .await;
    assert_eq!(c.post("/users", new_user("s5@contoso.com")).await.0, 201);
    let expected = json!({
        "writes": {
            "POST /users": 2,
            "POST /groups": 1,
            "POST /groups/{id}/members/$ref": 1,
            "PATCH /users/{id}": 1,
            "DELETE /groups/{id}/members/{id}/$ref": 1,
            "DELETE /users/{id}": 1,
        },
        "writesByMethod": {"POST": 4, "PATCH": 1, "DELETE": 2},
        "refused": 2,
        "throttled": 1,
        "unavailable": 1,
        "dropped": 1,
        "scripted": 1,
    });
    assert_eq!(stats().await, expected);
    assert_eq!(serde_json::to_value(c.emu.stats()).unwrap(), expected);
    assert_eq!(c.emu.stats().total_writes(), 7);
    c.admin("reset", json!({})).await;
    assert_eq!(stats().await, zero);
}

/// A group created with its members bound by `members@odata.bind` (at most 20 links per request):
/// 201, the members are there at once, and the create is one write. More than 20 links, or a member
/// that does not exist, refuse the whole create (no group, no member): 400
/// `Request_BadRequest` ("A resource cannot contain more than 20 link changes") and 404
/// `Request_ResourceNotFound`. Sources: <https://learn.microsoft.com/en-us/graph/api/group-post-groups?view=graph-rest-1.0>
/// (example 2, "create a group with owners and members"; up to 20 relationships in one request),
/// <https://learn.microsoft.com/en-us/graph/api/group-post-members?view=graph-rest-1.0>,
/// <https://learn.microsoft.com/en-us/graph/errors>
#[tokio::test]
async fn contract_group_create_with_members_bind() {
    let c = Client::new(config()).await;
    let mut ids = Vec::new();
    for i in 0..21 {
        let (s, u) = c.post("/users", new_user(&format!("cb{i}@contoso.com"))).await;
        assert_eq!(s, 201);
        ids.push(u["id"].as_str().unwrap().to_string());
    }
    let url = |id: &str| format!("https://graph.microsoft.com/v1.0/directoryObjects/{id}");
    let group = |nick: &str, members: &[String]| {
        json!({"displayName": nick, "mailEnabled": false, "mailNickname": nick, "securityEnabled": true,
               "members@odata.bind": members.iter().map(|m| url(m)).collect::<Vec<_>>()})
    };
    let before = c.emu.stats().total_writes();
    let (s, g) = c.post("/groups", group("twenty", &ids[..20])).await;
    assert_eq!(s, 201, "{g}");
    assert!(g.get("members@odata.bind").is_none(), "the binding is not a property of the group");
    let gid = g["id"].as_str().unwrap().to_string();
    let (_, m) = c.get(&format!("/groups/{gid}/members?$select=id")).await;
    let mut got: Vec<&str> =
        m["value"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap()).collect();
    got.sort_unstable();
    let mut want: Vec<&str> = ids[..20].iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    let stats = c.emu.stats();
    assert_eq!(stats.total_writes() - before, 1, "a create with its members is one write");
    assert_eq!(stats.writes.get("POST /groups"), Some(&1));
    assert_eq!(stats.writes.get("POST /groups/{id}/members/$ref"), None);
    // The group's delta shows it with its members.
    let (_, d) = c.get("/groups/delta?$select=displayName,members").await;
    let entry = d["value"].as_array().unwrap().iter().find(|v| v["id"] == gid.as_str()).unwrap().clone();
    assert_eq!(entry["members@delta"].as_array().unwrap().len(), 20);

    // 21 links: refused as a whole.
    let (s, e) = c.post("/groups", group("toomany", &ids)).await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("Request_BadRequest")));
    assert!(e["error"]["message"].as_str().unwrap().contains("more than 20"), "{e}");
    // A member that does not exist: refused as a whole, nothing created.
    let ghost = "00000000-0000-0000-0000-0000000000aa".to_string();
    let (s, e) = c.post("/groups", group("ghost", &[ids[0].clone(), ghost.clone()])).await;
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("Request_ResourceNotFound")));
    assert!(e["error"]["message"].as_str().unwrap().contains(&ghost));
    let (_, all) = c.get("/groups?$select=displayName").await;
    assert_eq!(all["value"].as_array().unwrap().len(), 1, "{all}");
    // A user has no members to bind.
    let mut u = new_user("cbx@contoso.com");
    u["members@odata.bind"] = json!([url(&ids[0])]);
    assert_eq!(c.post("/users", u).await.0, 400);
}

/// Members added in an update: `PATCH /groups/{id}` with up to 20 `members@odata.bind`, 204, one
/// write; all or nothing: a member already there gives 400 "One or more added object references
/// already exist", a missing one 404, more than 20 links 400, and none of the request's members is
/// added then. Source: <https://learn.microsoft.com/en-us/graph/api/group-post-members?view=graph-rest-1.0>
/// (example 2, "add multiple members to a group in a single request")
#[tokio::test]
async fn contract_group_patch_members_bind() {
    let c = Client::new(config()).await;
    let mut ids = Vec::new();
    for i in 0..22 {
        let (_, u) = c.post("/users", new_user(&format!("pb{i}@contoso.com"))).await;
        ids.push(u["id"].as_str().unwrap().to_string());
    }
    let (s, g) = c
        .post(
            "/groups",
            json!({"displayName": "P", "mailEnabled": false, "mailNickname": "p", "securityEnabled": true}),
        )
        .await;
    assert_eq!(s, 201);
    let gid = g["id"].as_str().unwrap().to_string();
    let bind = |members: &[String]| {
        json!({"members@odata.bind": members.iter()
            .map(|m| format!("https://graph.microsoft.com/v1.0/directoryObjects/{m}")).collect::<Vec<_>>()})
    };
    let gpath = format!("/groups/{gid}");
    let patch = |body: Value| c.call(reqwest::Method::PATCH, &gpath, Some(body));
    let count = || async {
        c.get(&format!("/groups/{gid}/members?$select=id")).await.1["value"].as_array().unwrap().len()
    };
    let (_, d0) = c.get("/groups/delta?$select=displayName,members").await;
    let link = d0["@odata.deltaLink"].as_str().unwrap().to_string();
    let before = c.emu.stats();
    let (s, _, _) = patch(bind(&ids[..20])).await;
    assert_eq!(s, 204);
    assert_eq!(count().await, 20);
    let after = c.emu.stats();
    assert_eq!(after.total_writes() - before.total_writes(), 1);
    assert_eq!(after.writes.get("PATCH /groups/{id}"), Some(&1));
    // The delta reports the added members and no changed property.
    let (_, d) = c.get(&link).await;
    assert_eq!(d["value"][0]["members@delta"].as_array().unwrap().len(), 20);
    // One already a member: refused, the new one is not added either.
    let (s, _, e) = patch(bind(&[ids[20].clone(), ids[0].clone()])).await;
    assert_eq!(s, 400);
    assert!(e["error"]["message"].as_str().unwrap().contains("already exist"), "{e}");
    assert_eq!(count().await, 20);
    // A missing one: 404, nothing added.
    let (s, _, _) = patch(bind(&[ids[20].clone(), "00000000-0000-0000-0000-0000000000ab".into()])).await;
    assert_eq!(s, 404);
    assert_eq!(count().await, 20);
    // 21 links: 400.
    let (s, _, e) = patch(bind(&ids[1..22])).await;
    assert_eq!(s, 400);
    assert!(e["error"]["message"].as_str().unwrap().contains("more than 20"), "{e}");
    // Properties and members together.
    let mut body = bind(&ids[20..22]);
    body["description"] = json!("both");
    assert_eq!(patch(body).await.0, 204);
    assert_eq!(count().await, 22);
    assert_eq!(c.get(&format!("/groups/{gid}")).await.1["description"], "both");
}
