//! A Microsoft-Graph-compatible emulator for syncctl's tests, demo and benchmark.
//!
//! It owns: an HTTP server (plain HTTP on loopback) that answers the part of Microsoft Graph v1.0 a
//! sync connector depends on — the client-credentials token endpoint, `domains`, `users`, `groups`
//! with members, delta queries, `$batch`, `directoryRoles` — with Microsoft's documented JSON shapes,
//! refusals, paging and throttling; fault injection (503s, dropped connections, slow answers); admin
//! endpoints under `/_emulator/` for tests (seeding, state, faults, a record of the Graph requests
//! received and scripted answers); and its state in SQLite so that it survives a restart.
//!
//! It must not: serve TLS or reach any real tenant, log the client secret or the access tokens, depend
//! on the sync engine or any connector (the Graph connector depends on the emulator only in tests), or
//! rewrite values the way the directory-sync service does (Graph refuses; the engine rewrites).
//!
//! Start it in-process with [`start`] and an [`EmulatorConfig`]; stop it with [`RunningEmulator::stop`].
//!
//! Admin endpoints (no authentication, loopback only): `POST /_emulator/reset`, `GET
//! /_emulator/state` (every object, `changeSeq`), `POST /_emulator/users` and `/_emulator/groups`
//! (seeding), `POST /_emulator/admin-roles`, `GET`/`POST /_emulator/faults`, and `GET
//! /_emulator/stats` ([`WriteStats`], also [`RunningEmulator::stats`]): what the emulator answered
//! to writes since this process started or was reset — applied writes by method and path template
//! (`POST /users`, `PATCH /users/{id}`, `DELETE /groups/{id}/members/{id}/$ref`, ...) and by
//! method, refusals, 429s (`throttled`), injected 503s (`unavailable`), cut connections
//! (`dropped`) and scripted answers (`scripted`, counted only there). The stats live in memory: a
//! restart starts them from zero.

mod graph;
mod store;
mod util;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as AxPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::graph::{GraphResponse, Request};
use crate::store::{Kind, Obj, OpError, Store};
use crate::util::{SplitMix, unix_now};

/// Waits for Ctrl-C, or SIGTERM where there is one: how a served emulator is told to stop.
pub async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Errors of starting, running and stopping the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The SQLite state could not be opened or written.
    #[error("emulator state: {0}")]
    Db(#[from] rusqlite::Error),
    /// The listener could not be bound or served.
    #[error("emulator listener: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is not usable.
    #[error("emulator configuration: {0}")]
    Config(String),
}

/// Result with [`EmulatorError`].
pub type Result<T> = std::result::Result<T, EmulatorError>;

/// The write budget. Graph allows about 3,000 writes per 150 s per app and tenant
/// (reference: sync-facts.md; <https://learn.microsoft.com/en-us/graph/throttling-limits>).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ThrottleConfig {
    /// Writes admitted per window and app (client id).
    pub writes: u32,
    /// Length of the sliding window, in seconds.
    pub window_seconds: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig { writes: 3_000, window_seconds: 150 }
    }
}

impl ThrottleConfig {
    /// "Hard" throttling for fault tests: 10 writes per 2 s.
    pub fn hard() -> Self {
        ThrottleConfig { writes: 10, window_seconds: 2 }
    }
}

/// Injected faults, applied to Graph requests (not to token or admin endpoints).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultConfig {
    /// Fraction (0..=1) of writes refused with 503 `serviceNotAvailable` before they are applied.
    pub write_error_rate: f64,
    /// Fraction (0..=1) of writes whose connection is cut after the write was applied, before the
    /// response completes (the client cannot know whether it happened).
    pub drop_rate: f64,
    /// Delay added to every Graph answer, in milliseconds.
    pub delay_ms: u64,
    /// Seed of the deterministic fault sequence.
    pub seed: u64,
}

/// How the emulator is started.
#[derive(Clone)]
pub struct EmulatorConfig {
    /// Address to bind; port 0 picks a free port. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// SQLite file holding the state; `None` keeps it in memory (lost at stop).
    pub state_path: Option<PathBuf>,
    /// The tenant's initial domain, `<name>.onmicrosoft.com`; also accepted as `{tenant}` in the token URL.
    pub tenant: String,
    /// Further verified (managed) domains of the tenant.
    pub verified_domains: Vec<String>,
    /// Domains added to the tenant but not verified (listed with `isVerified: false`).
    pub unverified_domains: Vec<String>,
    /// The application (client) id accepted at the token endpoint.
    pub client_id: String,
    /// The client secret accepted at the token endpoint. Never logged.
    pub client_secret: String,
    /// Write budget.
    pub throttle: ThrottleConfig,
    /// Injected faults.
    pub faults: FaultConfig,
    /// Page size of lists without `$top` (Graph's default is 100).
    pub page_size: usize,
    /// Page size of delta queries.
    pub delta_page_size: usize,
    /// Lifetime of delta and skip tokens, in seconds: 7 days for directory objects, like Graph.
    /// <https://devblogs.microsoft.com/microsoft365dev/duration-of-change-tracking-tokens-for-identity-and-education-resources/>
    pub delta_token_lifetime_seconds: u64,
}

impl std::fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("listen", &self.listen)
            .field("state_path", &self.state_path)
            .field("tenant", &self.tenant)
            .field("verified_domains", &self.verified_domains)
            .field("unverified_domains", &self.unverified_domains)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("throttle", &self.throttle)
            .field("faults", &self.faults)
            .field("page_size", &self.page_size)
            .field("delta_page_size", &self.delta_page_size)
            .field("delta_token_lifetime_seconds", &self.delta_token_lifetime_seconds)
            .finish()
    }
}

/// Default client id of the emulator's app registration.
pub const DEFAULT_CLIENT_ID: &str = "00000000-0000-0000-0000-00000000e001";
/// Default client secret (a test value; the emulator guards nothing).
pub const DEFAULT_CLIENT_SECRET: &str = "emulator-secret";

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_path: None,
            tenant: "contoso.onmicrosoft.com".into(),
            verified_domains: Vec::new(),
            unverified_domains: Vec::new(),
            client_id: DEFAULT_CLIENT_ID.into(),
            client_secret: DEFAULT_CLIENT_SECRET.into(),
            throttle: ThrottleConfig::default(),
            faults: FaultConfig::default(),
            page_size: 100,
            delta_page_size: 100,
            delta_token_lifetime_seconds: 7 * 24 * 3600,
        }
    }
}

struct Faults {
    config: FaultConfig,
    rng: SplitMix,
}

/// What the emulator answered to writes since it started (or since the last reset): the body
/// of `GET /_emulator/stats`. Counted per request, sub-requests of `$batch` included.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WriteStats {
    /// Writes applied (answered 2xx), by method and path template, such as `POST /users`,
    /// `PATCH /users/{id}`, `DELETE /groups/{id}`, `POST /groups/{id}/members/$ref`.
    pub writes: std::collections::BTreeMap<String, u64>,
    /// Writes applied, by method (`POST`, `PATCH`, `DELETE`).
    pub writes_by_method: std::collections::BTreeMap<String, u64>,
    /// Writes refused with a 4xx other than 429 (validation, conflict, not found).
    pub refused: u64,
    /// Writes answered 429 `TooManyRequests` (throttling).
    pub throttled: u64,
    /// Writes answered 503 `serviceNotAvailable` (injected).
    pub unavailable: u64,
    /// Writes applied whose connection was then cut (injected; also counted in `writes`).
    pub dropped: u64,
    /// Requests (reads too) answered from the script of `POST /_emulator/responses`; they
    /// are counted only here.
    pub scripted: u64,
}

impl WriteStats {
    /// Applied writes in total.
    pub fn total_writes(&self) -> u64 {
        self.writes_by_method.values().sum()
    }
}

/// `METHOD /path` with object ids replaced by `{id}`: `PATCH /users/{id}`,
/// `DELETE /groups/{id}/members/{id}/$ref`.
fn write_template(method: &str, path: &str) -> String {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let shaped: Vec<&str> = segs
        .iter()
        .enumerate()
        .map(|(i, s)| match (i, *s) {
            (_, "members" | "$ref" | "$batch") => s,
            (1 | 3, _) => "{id}",
            _ => s,
        })
        .collect();
    format!("{method} /{}", shaped.join("/"))
}

pub(crate) struct App {
    store: Store,
    config: EmulatorConfig,
    base_url: String,
    token_key: [u8; 32],
    throttle: Mutex<(ThrottleConfig, HashMap<String, VecDeque<Instant>>)>,
    faults: Mutex<Faults>,
    stats: Mutex<WriteStats>,
    /// The last [`MAX_RECORDED`] Graph requests, for `GET /_emulator/requests`.
    recorded: Mutex<VecDeque<Value>>,
    /// Scripted answers (`POST /_emulator/responses`), consumed in order.
    scripted: Mutex<Vec<Scripted>>,
}

/// Graph requests kept for `GET /_emulator/requests` (older ones are dropped).
const MAX_RECORDED: usize = 1000;

/// A scripted answer: the next `times` requests with this method and path (query ignored, also
/// inside `$batch`) get this answer instead of the emulator's own, before throttling and faults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Scripted {
    method: String,
    path: String,
    status: u16,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

impl App {
    pub(crate) fn default_domain(&self) -> &str {
        &self.config.tenant
    }

    /// Admits one write of `app_id` or says how many seconds to wait.
    fn admit_write(&self, app_id: &str) -> std::result::Result<(), u64> {
        let Ok(mut guard) = self.throttle.lock() else {
            return Ok(());
        };
        let (cfg, apps) = &mut *guard;
        let window = Duration::from_secs(cfg.window_seconds.max(1));
        let now = Instant::now();
        let q = apps.entry(app_id.to_string()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
            q.pop_front();
        }
        if q.len() < cfg.writes as usize {
            q.push_back(now);
            return Ok(());
        }
        let wait = q.front().map(|t| window.saturating_sub(now.duration_since(*t))).unwrap_or(window);
        Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }

    fn roll(&self, pick: impl Fn(&FaultConfig) -> f64) -> bool {
        let Ok(mut f) = self.faults.lock() else {
            return false;
        };
        let rate = pick(&f.config);
        rate > 0.0 && f.rng.next_f64() < rate
    }

    fn delay(&self) -> Duration {
        self.faults.lock().map(|f| Duration::from_millis(f.config.delay_ms)).unwrap_or_default()
    }

    /// Counts one answer to a write.
    fn count_write(&self, req: &Request, status: u16) {
        let Ok(mut s) = self.stats.lock() else { return };
        match status {
            429 => s.throttled += 1,
            503 => s.unavailable += 1,
            200..=299 => {
                *s.writes.entry(write_template(&req.method, &req.path)).or_default() += 1;
                *s.writes_by_method.entry(req.method.clone()).or_default() += 1;
            }
            400..=499 => s.refused += 1,
            _ => {}
        }
    }

    fn count_drop(&self) {
        if let Ok(mut s) = self.stats.lock() {
            s.dropped += 1;
        }
    }

    fn count_scripted(&self) {
        if let Ok(mut s) = self.stats.lock() {
            s.scripted += 1;
        }
    }

    /// The scripted answer for this request, if one is left (and counts it).
    fn scripted_answer(&self, req: &Request) -> Option<GraphResponse> {
        let mut scripts = self.scripted.lock().ok()?;
        let pos = scripts.iter().position(|s| {
            s.method.eq_ignore_ascii_case(&req.method)
                && format!("/{}", s.path.trim_start_matches('/')).eq_ignore_ascii_case(&req.path)
        })?;
        let script = scripts.get_mut(pos)?;
        script.times = script.times.saturating_sub(1);
        let answer = GraphResponse {
            status: script.status,
            headers: script.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            body: script.body.clone(),
        };
        if script.times == 0 {
            scripts.remove(pos);
        }
        Some(answer)
    }

    /// Records one Graph request (never its Authorization header; passwords redacted).
    fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: Option<&Value>) {
        let mut kept = serde_json::Map::new();
        for name in ["content-type", "prefer"] {
            if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                kept.insert(name.into(), json!(v));
            }
        }
        let mut body = body.cloned().unwrap_or(Value::Null);
        redact_passwords(&mut body);
        let entry = json!({"method": method.as_str(), "url": uri.to_string(), "headers": kept, "body": body});
        if let Ok(mut r) = self.recorded.lock() {
            if r.len() >= MAX_RECORDED {
                r.pop_front();
            }
            r.push_back(entry);
        }
    }
}

/// Replaces `passwordProfile.password` values anywhere in a body by `"<redacted>"`.
fn redact_passwords(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, inner) in o.iter_mut() {
                if k == "passwordProfile"
                    && let Some(p) = inner.get_mut("password")
                    && p.is_string()
                {
                    *p = json!("<redacted>");
                }
                redact_passwords(inner);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_passwords),
        _ => {}
    }
}

/// A running emulator: its base URL and the handle that stops it.
pub struct RunningEmulator {
    base_url: String,
    local_addr: SocketAddr,
    app: Arc<App>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningEmulator {
    /// `http://127.0.0.1:PORT`, the authority base: the token endpoint is
    /// `{base_url}/{tenant}/oauth2/v2.0/token`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
    /// `{base_url}/v1.0`, the Graph base.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url)
    }
    /// The token endpoint of the configured tenant.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base_url, self.app.config.tenant)
    }
    /// What the emulator answered to writes since it started (or since the last reset), as
    /// `GET /_emulator/stats` returns it.
    pub fn stats(&self) -> WriteStats {
        self.app.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
    /// The address it listens on (to start it again on the same port after [`Self::stop`]).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
    /// Stops serving, waits for open requests (at most 5 s) and closes the state file.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(Duration::from_secs(5), &mut self.task).await {
            Ok(Ok(r)) => r?,
            Ok(Err(e)) => return Err(EmulatorError::Config(format!("server task: {e}"))),
            Err(_) => self.task.abort(),
        }
        self.app.store.close().await?;
        tracing::info!(base_url = %self.base_url, "graph emulator stopped");
        Ok(())
    }
}

fn domain_obj(id: &str, verified: bool, default: bool, initial: bool) -> Obj {
    // Shape of a domain: <https://learn.microsoft.com/en-us/graph/api/resources/domain?view=graph-rest-1.0>
    match json!({
        "id": id,
        "authenticationType": "Managed",
        "availabilityStatus": null,
        "isAdminManaged": true,
        "isDefault": default,
        "isInitial": initial,
        "isRoot": true,
        "isVerified": verified,
        "supportedServices": if initial { json!(["Email", "OfficeCommunicationsOnline"]) } else { json!([]) },
        "passwordValidityPeriodInDays": 2147483647,
        "passwordNotificationWindowInDays": 14,
    }) {
        Value::Object(m) => m,
        _ => Obj::new(),
    }
}

/// Starts the emulator: opens (or creates) the state, binds the listener and serves in the background.
pub async fn start(config: EmulatorConfig) -> Result<RunningEmulator> {
    if !config.tenant.contains('.') {
        return Err(EmulatorError::Config(format!(
            "tenant must be a domain such as contoso.onmicrosoft.com, not {:?}",
            config.tenant
        )));
    }
    if config.client_secret.is_empty() {
        return Err(EmulatorError::Config("client secret must not be empty".into()));
    }
    let store = Store::open(config.state_path.as_deref()).await?;
    let mut domains =
        vec![domain_obj(&config.tenant.to_ascii_lowercase(), true, config.verified_domains.is_empty(), true)];
    for (i, d) in config.verified_domains.iter().enumerate() {
        domains.push(domain_obj(&d.to_ascii_lowercase(), true, i == 0, false));
    }
    for d in &config.unverified_domains {
        domains.push(domain_obj(&d.to_ascii_lowercase(), false, false, false));
    }
    store.set_domains(&domains).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let base_url = format!("http://{addr}");
    let token_key =
        blake3::derive_key("syncctl-graph-emulator 2026 access token", config.client_secret.as_bytes());
    let app = Arc::new(App {
        store,
        base_url: base_url.clone(),
        token_key,
        throttle: Mutex::new((config.throttle.clone(), HashMap::new())),
        faults: Mutex::new(Faults { rng: SplitMix(config.faults.seed), config: config.faults.clone() }),
        stats: Mutex::new(WriteStats::default()),
        recorded: Mutex::new(VecDeque::new()),
        scripted: Mutex::new(Vec::new()),
        config,
    });
    let router = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/v1.0/{*rest}", any(graph_entry))
        .route("/_emulator/reset", post(admin_reset))
        .route("/_emulator/state", get(admin_state))
        .route("/_emulator/stats", get(admin_stats))
        .route("/_emulator/users", post(admin_seed_users))
        .route("/_emulator/groups", post(admin_seed_groups))
        .route("/_emulator/admin-roles", post(admin_roles))
        .route("/_emulator/faults", post(admin_set_faults).get(admin_get_faults))
        .route("/_emulator/requests", get(admin_get_requests).delete(admin_clear_requests))
        .route("/_emulator/responses", post(admin_add_responses).delete(admin_clear_responses))
        .with_state(app.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%base_url, tenant = %app.config.tenant, "graph emulator listening");
    Ok(RunningEmulator { base_url, local_addr: addr, app, shutdown: Some(tx), task })
}

// ---------------------------------------------------------------------------------------------
// Token endpoint

#[derive(Default)]
struct TokenForm {
    client_id: String,
    client_secret: String,
    scope: String,
    grant_type: String,
}

#[derive(Serialize, Deserialize)]
struct TokenClaims {
    cid: String,
    exp: u64,
}

/// Lifetime of an access token, as the identity platform reports it.
const TOKEN_LIFETIME: u64 = 3599;

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    // <https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#error-response>
    (status, axum::Json(json!({"error": error, "error_description": description, "error_codes": []})))
        .into_response()
}

/// `POST /{tenant}/oauth2/v2.0/token`, client credentials with a shared secret:
/// `{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": ...}`.
/// <https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow>
async fn token(State(app): State<Arc<App>>, AxPath(tenant): AxPath<String>, body: Bytes) -> Response {
    let mut form = TokenForm::default();
    for (k, v) in util::parse_query(&String::from_utf8_lossy(&body)) {
        match k.as_str() {
            "client_id" => form.client_id = v,
            "client_secret" => form.client_secret = v,
            "scope" => form.scope = v,
            "grant_type" => form.grant_type = v,
            _ => {}
        }
    }
    let tenant_ok = tenant.eq_ignore_ascii_case(&app.config.tenant)
        || app.config.verified_domains.iter().any(|d| d.eq_ignore_ascii_case(&tenant));
    if !tenant_ok {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if form.grant_type != "client_credentials" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    if form.scope != "https://graph.microsoft.com/.default" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
        );
    }
    if form.client_id != app.config.client_id {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            &format!(
                "AADSTS700016: Application with identifier '{}' was not found in the directory.",
                form.client_id
            ),
        );
    }
    if form.client_secret != app.config.client_secret {
        tracing::warn!(client_id = %form.client_id, "token refused: invalid client secret");
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let claims = TokenClaims { cid: form.client_id, exp: unix_now() + TOKEN_LIFETIME };
    let payload = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
    let mac = blake3::keyed_hash(&app.token_key, payload.as_bytes());
    let access_token = format!("emu1.{payload}.{}", mac.to_hex());
    tracing::debug!(client_id = %claims.cid, "token issued");
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME,
        "ext_expires_in": TOKEN_LIFETIME,
        "access_token": access_token,
    }))
    .into_response()
}

/// Checks the bearer token; returns the app (client) id or Graph's 401.
fn authenticate(app: &App, headers: &HeaderMap) -> std::result::Result<String, GraphResponse> {
    // 401 `InvalidAuthenticationToken`: <https://learn.microsoft.com/en-us/graph/errors>
    let unauthorized = |m: &str| graph::error(401, "InvalidAuthenticationToken", m);
    let Some(h) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(unauthorized("Access token is empty."));
    };
    let Some(tok) = h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")) else {
        return Err(unauthorized("Access token is empty."));
    };
    let mut parts = tok.trim().split('.');
    let (Some("emu1"), Some(payload), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(unauthorized("IDX14100: JWT is not well formed."));
    };
    let expected = blake3::keyed_hash(&app.token_key, payload.as_bytes());
    if !constant_eq(expected.to_hex().as_bytes(), mac.as_bytes()) {
        return Err(unauthorized("Access token validation failure. Invalid signature."));
    }
    let Some(claims) = B64.decode(payload).ok().and_then(|b| serde_json::from_slice::<TokenClaims>(&b).ok())
    else {
        return Err(unauthorized("IDX14100: JWT is not well formed."));
    };
    if claims.exp < unix_now() {
        return Err(unauthorized("Lifetime validation failed, the token is expired."));
    }
    Ok(claims.cid)
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------------
// Graph entry, throttling, faults, $batch

fn to_response(r: GraphResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match r.body {
        Some(b) => (status, axum::Json(b)).into_response(),
        None => status.into_response(),
    };
    for (k, v) in r.headers {
        if let (Ok(name), Ok(val)) = (axum::http::HeaderName::try_from(k.as_str()), HeaderValue::from_str(&v))
        {
            resp.headers_mut().insert(name, val);
        }
    }
    resp
}

/// Graph's throttling answer: 429 with `Retry-After` and
/// `{"error": {"code": "TooManyRequests", "message": "Please retry again later.", "innerError": {...}}}`.
/// <https://learn.microsoft.com/en-us/graph/throttling>
fn throttled(retry_after: u64) -> GraphResponse {
    let mut r = graph::error(429, "TooManyRequests", "Please retry again later.");
    if let Some(inner) =
        r.body.as_mut().and_then(|b| b.pointer_mut("/error/innerError")).and_then(Value::as_object_mut)
    {
        inner.insert("code".into(), json!("429"));
        inner.insert("message".into(), json!("Please retry after"));
        inner.insert("status".into(), json!("429"));
    }
    r.headers.push(("Retry-After".into(), retry_after.to_string()));
    r
}

/// A 503 from fault injection, as Graph answers when a service is unavailable.
/// <https://learn.microsoft.com/en-us/graph/errors>
fn unavailable() -> GraphResponse {
    let mut r = graph::error(
        503,
        "serviceNotAvailable",
        "The service is temporarily unavailable. Please retry after the time specified in the Retry-After header.",
    );
    r.headers.push(("Retry-After".into(), "1".into()));
    r
}

/// One Graph request with throttling and injected 503s applied to writes; every answer to a
/// write is counted in the stats.
async fn guarded(app: &App, req: &Request) -> GraphResponse {
    if let Some(r) = app.scripted_answer(req) {
        tracing::debug!(method = %req.method, path = %req.path, status = r.status, "scripted answer");
        app.count_scripted();
        return r;
    }
    let resp = guarded_inner(app, req).await;
    if req.is_write() {
        app.count_write(req, resp.status);
    }
    resp
}

async fn guarded_inner(app: &App, req: &Request) -> GraphResponse {
    if req.is_write() {
        if let Err(wait) = app.admit_write(&req.app_id) {
            tracing::debug!(app_id = %req.app_id, wait, "write throttled");
            return throttled(wait);
        }
        if app.roll(|f| f.write_error_rate) {
            tracing::debug!(method = %req.method, path = %req.path, "injected 503");
            return unavailable();
        }
    }
    graph::handle(app, req).await
}

async fn graph_entry(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let app_id = match authenticate(&app, &headers) {
        Ok(a) => a,
        Err(r) => return to_response(r),
    };
    let delay = app.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let body_json = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => Some(v),
            Err(_) => {
                return to_response(graph::error(
                    400,
                    "BadRequest",
                    "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
                ));
            }
        }
    };
    app.record(&method, &uri, &headers, body_json.as_ref());
    let mut req = Request::from_url(method.as_str(), &uri.to_string(), body_json, &app_id);
    req.prefer = headers.get("prefer").and_then(|v| v.to_str().ok()).map(str::to_string);
    let resp = if req.method == "POST" && req.path == "/$batch" {
        batch(&app, &req).await
    } else {
        guarded(&app, &req).await
    };
    if req.is_write() && resp.status < 400 && app.roll(|f| f.drop_rate) {
        tracing::debug!(method = %req.method, path = %req.path, "injected dropped connection");
        app.count_drop();
        return dropped();
    }
    to_response(resp)
}

/// A response whose body fails at once: the server closes the connection without a complete answer.
fn dropped() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("injected connection drop"))
    });
    Response::new(Body::from_stream(stream))
}

/// `POST /$batch`: up to 20 requests, answered in `responses` with `id`, `status`, `headers`, `body`;
/// a failed `dependsOn` gives 424. <https://learn.microsoft.com/en-us/graph/json-batching>
async fn batch(app: &App, req: &Request) -> GraphResponse {
    let Some(requests) = req.body.as_ref().and_then(|b| b.get("requests")).and_then(Value::as_array) else {
        return graph::error(400, "BadRequest", "Invalid batch payload format.");
    };
    if requests.len() > graph::MAX_BATCH {
        return graph::error(
            400,
            "BadRequest",
            &format!("Number of batch requests exceeds the limit of {}.", graph::MAX_BATCH),
        );
    }
    let mut ids = std::collections::HashSet::new();
    for r in requests {
        let id = r.get("id").map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_lowercase));
        if !id.is_some_and(|i| ids.insert(i)) {
            // Ids are required and unique (case-insensitive), "otherwise the batch request fails with 400".
            return graph::error(
                400,
                "BadRequest",
                "Invalid batch payload format: request ids must be present and unique.",
            );
        }
    }
    let mut responses = Vec::new();
    let mut statuses: HashMap<String, u16> = HashMap::new();
    for r in requests {
        let id = match r.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return graph::error(
                    400,
                    "BadRequest",
                    "Invalid batch payload format: every request needs an id.",
                );
            }
        };
        let (Some(method), Some(url)) =
            (r.get("method").and_then(Value::as_str), r.get("url").and_then(Value::as_str))
        else {
            return graph::error(
                400,
                "BadRequest",
                "Invalid batch payload format: every request needs a method and a url.",
            );
        };
        let depends: Vec<String> = r
            .get("dependsOn")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let sub_headers = r.get("headers").and_then(Value::as_object);
        let has_content_type =
            sub_headers.is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("content-type")));
        let resp = if depends.iter().any(|d| statuses.get(d).is_none_or(|s| *s >= 400)) {
            graph::error(424, "FailedDependency", "Failed dependency.")
        } else if r.get("body").is_some() && !has_content_type {
            // "When a body is included with the request, the headers object must contain a value for Content-Type."
            graph::error(400, "BadRequest", "Content-Type header must be specified when a body is provided.")
        } else {
            let mut sub = Request::from_url(method, url, r.get("body").cloned(), &req.app_id);
            sub.prefer = r
                .get("headers")
                .and_then(Value::as_object)
                .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case("prefer")))
                .and_then(|(_, v)| v.as_str())
                .map(str::to_string);
            if sub.path == "/$batch" {
                graph::error(400, "BadRequest", "Nested batch requests are not supported.")
            } else {
                guarded(app, &sub).await
            }
        };
        statuses.insert(id.clone(), resp.status);
        let mut headers = serde_json::Map::new();
        if resp.body.is_some() {
            headers.insert("Content-Type".into(), json!("application/json"));
        }
        for (k, v) in &resp.headers {
            headers.insert(k.clone(), json!(v));
        }
        let mut entry = json!({"id": id, "status": resp.status, "headers": headers});
        if let (Some(b), Some(e)) = (resp.body, entry.as_object_mut()) {
            e.insert("body".into(), b);
        }
        responses.push(entry);
    }
    GraphResponse { status: 200, headers: Vec::new(), body: Some(json!({"responses": responses})) }
}

// ---------------------------------------------------------------------------------------------
// Admin endpoints (tests and demo only; no authentication, loopback only)

fn admin_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({"error": {"code": "EmulatorAdmin", "message": message}}))).into_response()
}

fn db_failure(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "emulator admin failure");
    admin_error(StatusCode::INTERNAL_SERVER_ERROR, "storage failure".into())
}

/// `POST /_emulator/reset`: removes every object, membership, role and change; delta tokens expire.
async fn admin_reset(State(app): State<Arc<App>>) -> Response {
    match app.store.reset().await {
        Ok(()) => {
            if let Ok(mut t) = app.throttle.lock() {
                t.1.clear();
            }
            if let Ok(mut s) = app.stats.lock() {
                *s = WriteStats::default();
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => db_failure(e),
    }
}

/// `GET /_emulator/state`: every object as stored, groups with `members` (ids), domains and roles.
async fn admin_state(State(app): State<Arc<App>>) -> Response {
    let run = async {
        let users = app.store.list(Kind::User, None, i64::MAX).await?;
        let mut groups = Vec::new();
        for mut g in app.store.list(Kind::Group, None, i64::MAX).await? {
            let id = g.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            let ms: Vec<Value> = app
                .store
                .members(&id, None, i64::MAX)
                .await?
                .into_iter()
                .filter_map(|(_, m)| m.get("id").cloned())
                .collect();
            g.insert("members".into(), Value::Array(ms));
            groups.push(Value::Object(g));
        }
        let roles: Vec<Value> = app
            .store
            .admin_roles()
            .await?
            .into_iter()
            .map(|(r, us)| json!({"role": r, "userIds": us}))
            .collect();
        Ok::<Value, rusqlite::Error>(json!({
            "users": users,
            "groups": groups,
            "domains": app.store.domains().await?,
            "adminRoles": roles,
            "changeSeq": app.store.max_seq().await?,
        }))
    };
    match run.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => db_failure(e),
    }
}

/// `GET /_emulator/stats`: the [`WriteStats`] of this process (not kept across a restart).
async fn admin_stats(State(app): State<Arc<App>>) -> Response {
    let stats = app.stats.lock().map(|s| s.clone()).unwrap_or_default();
    axum::Json(stats).into_response()
}

fn seed_list(body: &Bytes) -> std::result::Result<Vec<Obj>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let items = match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("value") {
            Some(Value::Array(a)) => a,
            _ => vec![Value::Object(o)],
        },
        _ => return Err("expected an object or an array".into()),
    };
    items
        .into_iter()
        .map(|i| match i {
            Value::Object(o) => Ok(o),
            _ => Err("every item must be an object".to_string()),
        })
        .collect()
}

async fn seed(app: &App, kind: Kind, body: Bytes) -> Response {
    let items = match seed_list(&body) {
        Ok(i) => i,
        Err(m) => return admin_error(StatusCode::BAD_REQUEST, m),
    };
    let mut out = Vec::new();
    for mut o in items {
        let members = o.remove("members");
        let id = match o.get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        o.insert("id".into(), json!(id));
        o.entry("proxyAddresses").or_insert(json!([]));
        o.entry("onPremisesSyncEnabled").or_insert(Value::Null);
        if kind == Kind::User {
            o.entry("businessPhones").or_insert(json!([]));
            o.entry("accountEnabled").or_insert(json!(true));
        }
        graph::derive_addresses(&mut o);
        match app.store.put(kind, &o, &graph::unique_values(kind, &o)).await {
            Ok(()) => {}
            Err(OpError::Conflict(p)) => {
                return admin_error(
                    StatusCode::CONFLICT,
                    format!("object {id}: another object has the same {p}"),
                );
            }
            Err(e) => return db_failure(e),
        }
        if let Some(Value::Array(ms)) = members {
            for m in ms.iter().filter_map(Value::as_str) {
                match app.store.add_member(&id, m).await {
                    Ok(()) | Err(OpError::AlreadyMember) => {}
                    Err(OpError::NotFound) => {
                        return admin_error(
                            StatusCode::BAD_REQUEST,
                            format!("member {m} of {id} does not exist"),
                        );
                    }
                    Err(e) => return db_failure(e),
                }
            }
        }
        out.push(Value::Object(o));
    }
    (StatusCode::CREATED, axum::Json(json!({"value": out}))).into_response()
}

/// `POST /_emulator/users`: seeds users as they are (any property, `proxyAddresses` and
/// `onPremisesSyncEnabled` included), bypassing throttling and domain checks; uniqueness still holds.
async fn admin_seed_users(State(app): State<Arc<App>>, body: Bytes) -> Response {
    seed(&app, Kind::User, body).await
}

/// `POST /_emulator/groups`: seeds groups, with `members` as a list of object ids.
async fn admin_seed_groups(State(app): State<Arc<App>>, body: Bytes) -> Response {
    seed(&app, Kind::Group, body).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleBody {
    user_id: String,
    #[serde(default = "default_role")]
    role: String,
}

fn default_role() -> String {
    "Global Administrator".into()
}

/// `POST /_emulator/admin-roles` `{"userId": ..., "role": "Global Administrator"}`.
async fn admin_roles(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let Ok(b) = serde_json::from_slice::<RoleBody>(&body) else {
        return admin_error(StatusCode::BAD_REQUEST, "expected {\"userId\": ..., \"role\": ...}".into());
    };
    match app.store.add_admin_role(&b.role, &b.user_id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(OpError::NotFound) => {
            admin_error(StatusCode::NOT_FOUND, format!("user {} does not exist", b.user_id))
        }
        Err(e) => db_failure(e),
    }
}

/// Body of `POST /_emulator/faults`: any of the fault fields, and optionally a new write budget.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FaultBody {
    #[serde(flatten)]
    faults: FaultConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    throttle: Option<ThrottleConfig>,
}

/// `POST /_emulator/faults`: replaces the injected faults (and the write budget when given).
async fn admin_set_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let b: FaultBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, format!("invalid faults: {e}")),
    };
    for r in [b.faults.write_error_rate, b.faults.drop_rate] {
        if !(0.0..=1.0).contains(&r) {
            return admin_error(StatusCode::BAD_REQUEST, "rates must be between 0 and 1".into());
        }
    }
    if let Ok(mut f) = app.faults.lock() {
        f.rng = SplitMix(b.faults.seed);
        f.config = b.faults;
    }
    if let (Some(t), Ok(mut g)) = (b.throttle, app.throttle.lock()) {
        g.0 = t;
        g.1.clear();
    }
    admin_get_faults(State(app)).await
}

/// `GET /_emulator/requests`: `{"value": [{"method", "url", "headers", "body"}]}`, the Graph
/// requests received (oldest first, at most 1,000), with `content-type` and `prefer` as the only
/// headers kept and `passwordProfile.password` values redacted.
async fn admin_get_requests(State(app): State<Arc<App>>) -> Response {
    let value: Vec<Value> = app.recorded.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default();
    axum::Json(json!({"value": value})).into_response()
}

/// `DELETE /_emulator/requests`: forgets the recorded requests.
async fn admin_clear_requests(State(app): State<Arc<App>>) -> Response {
    if let Ok(mut r) = app.recorded.lock() {
        r.clear();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_emulator/responses`: adds scripted answers (an object or an array of
/// `{"method", "path", "status", "headers", "body", "times"}`, `times` defaulting to 1).
async fn admin_add_responses(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let parsed = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(a)) => a.into_iter().map(serde_json::from_value::<Scripted>).collect(),
        Ok(v) => serde_json::from_value::<Scripted>(v).map(|s| vec![s]),
        Err(e) => Err(e),
    };
    match parsed {
        Ok(list) => {
            if let Ok(mut s) = app.scripted.lock() {
                s.extend(list);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => admin_error(StatusCode::BAD_REQUEST, format!("invalid scripted answer: {e}")),
    }
}

/// `DELETE /_emulator/responses`: drops the scripted answers not yet used.
async fn admin_clear_responses(State(app): State<Arc<App>>) -> Response {
    if let Ok(mut s) = app.scripted.lock() {
        s.clear();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /_emulator/faults`: the faults and write budget in force.
async fn admin_get_faults(State(app): State<Arc<App>>) -> Response {
    let faults = app.faults.lock().map(|f| f.config.clone()).unwrap_or_default();
    let throttle = app.throttle.lock().map(|t| t.0.clone()).unwrap_or_default();
    axum::Json(FaultBody { faults, throttle: Some(throttle) }).into_response()
}
