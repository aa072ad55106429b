//! HTTP to Graph: the client-credentials token, the write pacer, retries.

use std::collections::VecDeque;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{GraphConfig, Secret};
use crate::error::{GraphError, Result, transport};

/// Attempts for a request answered 5xx or cut (idempotent requests only).
const MAX_ATTEMPTS: u32 = 6;
/// 429 answers honoured before giving up on one request.
const MAX_THROTTLED: u32 = 60;
/// Longest Retry-After honoured at once.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

struct Token {
    value: String,
    renew_at: Instant,
}

/// Sliding-window pacer of writes.
struct Pacer {
    budget: usize,
    window: Duration,
    sent: VecDeque<Instant>,
}

impl Pacer {
    async fn admit(&mut self) {
        loop {
            let now = Instant::now();
            while self.sent.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
                self.sent.pop_front();
            }
            if self.sent.len() < self.budget {
                self.sent.push_back(now);
                return;
            }
            let wait = self
                .sent
                .front()
                .map(|t| self.window.saturating_sub(now.duration_since(*t)))
                .unwrap_or(self.window);
            tracing::debug!(wait_ms = wait.as_millis() as u64, "write budget reached; pacing");
            tokio::time::sleep(wait).await;
        }
    }
}

/// A success answer: its JSON body (`Null` when empty).
pub(crate) struct Answer {
    pub body: Value,
}

/// Counters for run history.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Requests sent again after a 429.
    pub throttled: u64,
    /// Requests sent again after a 5xx or a cut connection.
    pub retried: u64,
    /// Writes sent.
    pub writes: u64,
}

/// An authenticated, paced Graph client.
pub(crate) struct GraphClient {
    http: reqwest::Client,
    config: GraphConfig,
    secret: Secret,
    token: Option<Token>,
    pacer: Pacer,
    pub counters: Counters,
}

impl GraphClient {
    pub fn new(config: GraphConfig, secret: Secret) -> Result<Self> {
        // Certificate verification stays on (rustls, the system's roots).
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(false)
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| GraphError::Config(format!("HTTP client: {}", transport(&e))))?;
        let pacer = Pacer {
            budget: config.write_budget as usize,
            window: Duration::from_secs(config.write_window_seconds),
            sent: VecDeque::new(),
        };
        Ok(Self { http, config, secret, token: None, pacer, counters: Counters::default() })
    }

    pub fn config(&self) -> &GraphConfig {
        &self.config
    }

    /// `{graph_url}{path}` unless `path` is already absolute (a nextLink).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.config.graph_url.trim_end_matches('/'), path)
        }
    }

    async fn token(&mut self, force: bool) -> Result<String> {
        if !force
            && let Some(t) = &self.token
            && Instant::now() < t.renew_at
        {
            return Ok(t.value.clone());
        }
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.config.authority.trim_end_matches('/'),
            self.config.tenant
        );
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.secret.expose()),
            ("scope", self.config.scope.as_str()),
        ];
        let resp = self.http.post(&url).form(&form).send().await.map_err(|e| transport(&e))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let err = body.get("error").and_then(Value::as_str).unwrap_or("error");
            let desc = body.get("error_description").and_then(Value::as_str).unwrap_or("");
            return Err(GraphError::Auth(format!("token endpoint answered {status}: {err} {desc}")));
        }
        let value = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::Protocol("token answer without access_token".into()))?
            .to_owned();
        let expires = body.get("expires_in").and_then(Value::as_u64).unwrap_or(3599);
        // Renew five minutes (or half the lifetime) before expiry.
        let margin = (expires / 2).min(300);
        let renew_at = Instant::now() + Duration::from_secs(expires.saturating_sub(margin));
        tracing::debug!(expires_in = expires, "got an access token");
        self.token = Some(Token { value: value.clone(), renew_at });
        Ok(value)
    }

    /// Sends one request and returns a success answer, retrying as Graph asks: 401 once with a
    /// fresh token, 429 after Retry-After, 5xx and cut connections with exponential backoff
    /// (bounded) when `idempotent`. Writes go through the pacer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Answer> {
        let url = self.url(path);
        let write = method != Method::GET;
        let mut attempts = 0u32;
        let mut throttled = 0u32;
        let mut refreshed = false;
        loop {
            if write {
                self.pacer.admit().await;
                self.counters.writes += 1;
            }
            let token = self.token(false).await?;
            let mut req = self.http.request(method.clone(), &url).bearer_auth(token);
            if let Some(b) = body {
                req = req.json(b);
            }
            attempts += 1;
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let err = transport(&e);
                    if idempotent && attempts < MAX_ATTEMPTS {
                        self.counters.retried += 1;
                        tracing::warn!(error = %err, attempt = attempts, "request failed; retrying");
                        tokio::time::sleep(backoff(attempts)).await;
                        continue;
                    }
                    return Err(err);
                }
            };
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = match resp.text().await {
                Ok(t) => t,
                Err(e) => {
                    let err = transport(&e);
                    if idempotent && attempts < MAX_ATTEMPTS {
                        self.counters.retried += 1;
                        tokio::time::sleep(backoff(attempts)).await;
                        continue;
                    }
                    return Err(err);
                }
            };
            let body_json: Value = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::Null)
            };
            if status.is_success() {
                return Ok(Answer { body: body_json });
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                refreshed = true;
                self.token(true).await?;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS && throttled < MAX_THROTTLED {
                throttled += 1;
                self.counters.throttled += 1;
                let wait = retry_after.unwrap_or_else(|| backoff(throttled)).min(MAX_RETRY_AFTER);
                tracing::info!(wait_s = wait.as_secs(), "throttled (429); waiting Retry-After");
                tokio::time::sleep(wait).await;
                continue;
            }
            // A 5xx refuses before applying (Graph's 503 says so); GETs are always safe.
            if status.is_server_error() && attempts < MAX_ATTEMPTS {
                self.counters.retried += 1;
                let wait = retry_after.unwrap_or_else(|| backoff(attempts)).min(MAX_RETRY_AFTER);
                tracing::warn!(status = status.as_u16(), attempt = attempts, "server error; retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(http_error(status.as_u16(), &body_json));
        }
    }

    /// GET of a JSON object.
    pub async fn get(&mut self, path: &str) -> Result<Value> {
        Ok(self.send(Method::GET, path, None, true).await?.body)
    }

    /// Every object of a paged list, page by page through `on_page`.
    pub async fn get_all(&mut self, path: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(p) = next {
            let page = self.get(&p).await?;
            out.extend(values(&page));
            next = page.get("@odata.nextLink").and_then(Value::as_str).map(str::to_owned);
        }
        Ok(out)
    }
}

/// `value` of a page.
pub(crate) fn values(page: &Value) -> Vec<Value> {
    page.get("value").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1u64 << attempt.min(6))).min(Duration::from_secs(10))
}

fn http_error(status: u16, body: &Value) -> GraphError {
    let e = body.get("error");
    let code = e.and_then(|e| e.get("code")).and_then(Value::as_str).unwrap_or("").to_owned();
    let message = e.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or("").to_owned();
    let detail = e
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .and_then(|d| d.first())
        .and_then(|d| d.get("code"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    GraphError::Http { status, code, message, detail }
}
