//! HTTP to Graph: the client-credentials token, the write pacer, retries.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tokio::task::JoinSet;
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
///
/// A write counts from the moment its answer arrived, not from when it was sent: Graph counts it
/// when it receives it, which is somewhere between the two, so a window that starts at the answer
/// never ends before Graph's does (a window started at the send would, by the time the request
/// took to reach Graph, and the next write would be answered 429). Writes in flight hold their
/// place in the budget until they are answered.
struct Pacer {
    budget: usize,
    window: Duration,
    /// When the answers of the counted writes arrived, oldest first.
    sent: VecDeque<Instant>,
    /// Writes sent and not answered yet.
    in_flight: usize,
}

impl Pacer {
    fn new(budget: usize, window: Duration) -> Self {
        Pacer { budget: budget.max(1), window, sent: VecDeque::new(), in_flight: 0 }
    }

    /// Reserves up to `want` writes now. Returns how many were granted and, when that is fewer
    /// than `want`, when the next one can be (`None`: only after writes in flight are answered).
    fn reserve(&mut self, want: usize, now: Instant) -> (usize, Option<Instant>) {
        while self.sent.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.window) {
            self.sent.pop_front();
        }
        let used = self.sent.len() + self.in_flight;
        let granted = want.min(self.budget.saturating_sub(used));
        self.in_flight += granted;
        if granted == want {
            return (granted, None);
        }
        let next = self.sent.front().map(|t| *t + self.window);
        (granted, next)
    }

    /// `n` reserved writes were answered (or will never be): they count from `at`.
    fn settle(&mut self, n: usize, at: Instant) {
        let n = n.min(self.in_flight);
        self.in_flight -= n;
        self.sent.extend(std::iter::repeat_n(at, n));
    }

    /// Waits until one write may be sent and reserves it (one request at a time: nothing else is
    /// in flight, so the wait always ends).
    async fn admit_one(&mut self) {
        loop {
            let now = Instant::now();
            match self.reserve(1, now) {
                (1, _) => return,
                (_, Some(at)) => {
                    tracing::debug!(
                        wait_ms = at.saturating_duration_since(now).as_millis() as u64,
                        "write budget reached; pacing"
                    );
                    tokio::time::sleep_until(at).await;
                }
                // Only a write left in flight by a cancelled call can be in the way: count it now.
                (_, None) => {
                    let leftover = self.in_flight;
                    self.settle(leftover, now);
                }
            }
        }
    }
}

/// A success answer: its JSON body (`Null` when empty).
#[derive(Debug)]
pub(crate) struct Answer {
    pub body: Value,
}

/// Most requests Graph takes in one `$batch`. <https://learn.microsoft.com/en-us/graph/json-batching>
pub(crate) const MAX_BATCH: usize = 20;

/// How a write may be sent again when its outcome is unknown.
#[derive(Clone, Debug)]
pub(crate) enum Resend {
    /// PATCH, DELETE and `$ref` changes: sending them again does no harm (a repeated member add
    /// or delete is answered 400 "already exist" / 404, which the export takes as done).
    Idempotent,
    /// A create. `lookup` is the GET that finds the object an earlier attempt created (by its
    /// onPremisesImmutableId); without one, a create whose outcome is unknown is not sent again.
    /// `uncertain`: an earlier call's result was never recorded, so look it up before the first send.
    Create { lookup: Option<String>, uncertain: bool },
}

/// One write for [`GraphClient::write_all`]: `path` is relative to the Graph base (`/users`).
#[derive(Clone, Debug)]
pub(crate) struct Write {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    pub resend: Resend,
}

/// The result of one write, with a note for each retry or lookup on the way.
#[derive(Debug)]
pub(crate) struct Written {
    pub result: Result<Answer>,
    pub notes: Vec<String>,
    /// A create that was not sent (again) because the lookup found its object.
    pub found: bool,
}

/// A write in flight.
struct Slot {
    write: Write,
    /// `METHOD /path` for notes.
    label: String,
    /// Sends that ended in a 5xx or a cut connection.
    attempts: u32,
    /// 429 answers so far.
    throttled: u32,
    /// Not to be sent before.
    ready_at: Instant,
    /// Why a create must be looked up before it is sent (again).
    lookup_cause: Option<String>,
    /// Settled by a lookup that found the object.
    found: bool,
    done: Option<Result<Answer>>,
    notes: Vec<String>,
    /// In a batch in flight.
    busy: bool,
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
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(false)
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(20));
        // A proxy from the environment never applies to a loopback endpoint (the emulator).
        if crate::config::loopback_url(&config.graph_url) && crate::config::loopback_url(&config.authority) {
            builder = builder.no_proxy();
        }
        let http =
            builder.build().map_err(|e| GraphError::Config(format!("HTTP client: {}", transport(&e))))?;
        let pacer =
            Pacer::new(config.write_budget as usize, Duration::from_secs(config.write_window_seconds));
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
    /// (bounded) when `idempotent`. Writes go through the pacer. Each retry adds a note to `notes`.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
        notes: &mut Vec<String>,
    ) -> Result<Answer> {
        let write = method != Method::GET;
        self.send_paced(method, path, body, idempotent, write, notes).await
    }

    /// [`GraphClient::send`], the request paced as a write when `write` (a `$batch` of reads
    /// is a POST, and not a write).
    async fn send_paced(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
        write: bool,
        notes: &mut Vec<String>,
    ) -> Result<Answer> {
        let url = self.url(path);
        let label = format!("{method} {}", self.display_path(path));
        let mut attempts = 0u32;
        let mut throttled = 0u32;
        let mut refreshed = false;
        loop {
            if write {
                self.pacer.admit_one().await;
                self.counters.writes += 1;
            }
            let token = match self.token(false).await {
                Ok(t) => t,
                Err(e) => {
                    if write {
                        self.pacer.settle(1, Instant::now());
                    }
                    return Err(e);
                }
            };
            let mut req = self.http.request(method.clone(), &url).bearer_auth(token);
            if let Some(b) = body {
                req = req.json(b);
            }
            attempts += 1;
            let answered = read(req).await;
            if write {
                self.pacer.settle(1, Instant::now());
            }
            let raw = match answered {
                Ok(raw) => raw,
                Err(err) => {
                    if idempotent && attempts < MAX_ATTEMPTS {
                        self.counters.retried += 1;
                        let wait = backoff(attempts);
                        notes.push(retry_note(&label, &cut_cause(&err), attempts, wait));
                        tracing::warn!(error = %err, attempt = attempts, "request failed; retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(err);
                }
            };
            let status = raw.status;
            if (200..300).contains(&status) {
                return Ok(Answer { body: raw.body });
            }
            if status == 401 && !refreshed {
                refreshed = true;
                notes.push(format!("{label}: 401 (access token refused), token renewed, retried"));
                self.token(true).await?;
                continue;
            }
            if status == 429 && throttled < MAX_THROTTLED {
                throttled += 1;
                self.counters.throttled += 1;
                let (wait, note) = throttle_wait(&label, raw.retry_after.as_deref(), throttled, "");
                notes.push(note);
                tracing::info!(wait_ms = wait.as_millis() as u64, "throttled (429); waiting Retry-After");
                tokio::time::sleep(wait).await;
                continue;
            }
            // A 5xx refuses before applying (Graph's 503 says so); GETs are always safe.
            if (500..600).contains(&status) && attempts < MAX_ATTEMPTS {
                self.counters.retried += 1;
                let wait = server_wait(raw.retry_after.as_deref(), attempts);
                notes.push(retry_note(
                    &label,
                    &format!("{status} {}", error_code(&raw.body)),
                    attempts,
                    wait,
                ));
                tracing::warn!(status, attempt = attempts, "server error; retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(http_error(status, &raw.body));
        }
    }

    /// `path` for messages: relative to the Graph base, without its query (which can hold a
    /// skip token or a filter value).
    pub fn display_path(&self, path: &str) -> String {
        let base = self.config.graph_url.trim_end_matches('/');
        let rel = path.strip_prefix(base).unwrap_or(path);
        rel.split('?').next().unwrap_or(rel).to_owned()
    }

    /// Sends `writes` through `POST /$batch`, at most [`MAX_BATCH`] per batch and up to
    /// `concurrent_batches` batches in flight, and returns one result per write, in order. Each
    /// request in a batch goes through the pacer as one write. The caller gives only writes that
    /// do not depend on each other (Graph runs the requests of a batch, and separate batches, in
    /// any order). Per request: a 429 waits its own `Retry-After` (from the response's headers in
    /// the batch), a 5xx is sent again with bounded backoff, a cut connection sends idempotent
    /// writes again and looks a create up before sending it again ([`Resend`]); other answers are
    /// final. Every retry and lookup adds a note to that write's result.
    pub async fn write_all(&mut self, writes: Vec<Write>) -> Vec<Written> {
        let start = Instant::now();
        let mut slots: Vec<Slot> = writes
            .into_iter()
            .map(|write| {
                let label = format!("{} {}", write.method, self.display_path(&write.path));
                let mut notes = Vec::new();
                let lookup_cause = match &write.resend {
                    Resend::Create { lookup: Some(_), uncertain: true } => {
                        Some("an earlier attempt's result was never recorded (uncertain)".to_owned())
                    }
                    Resend::Create { lookup: None, uncertain: true } => {
                        notes.push(format!(
                            "{label}: an earlier attempt's result was never recorded (uncertain) and there is \
                             no onPremisesImmutableId to look it up by: sent again"
                        ));
                        None
                    }
                    _ => None,
                };
                Slot {
                    write,
                    label,
                    attempts: 0,
                    throttled: 0,
                    ready_at: start,
                    lookup_cause,
                    found: false,
                    done: None,
                    notes,
                    busy: false,
                }
            })
            .collect();
        let max_flight = (self.config.concurrent_batches as usize).max(1);
        // Nothing of an earlier call is in flight any more (a cancelled call leaves its count).
        let leftover = self.pacer.in_flight;
        self.pacer.settle(leftover, start);
        let mut refreshed = false;
        let mut flight: JoinSet<Result<Raw>> = JoinSet::new();
        // The writes of each batch in flight, and the token it was sent with.
        let mut batches: HashMap<tokio::task::Id, (Vec<usize>, String)> = HashMap::new();
        // Where the first write of the next batch is (writes are taken in order, round robin).
        let mut cursor = 0usize;
        loop {
            // Launch batches while there is room in flight, ready writes and budget.
            let mut budget_at: Option<Instant> = None;
            while flight.len() < max_flight {
                let now = Instant::now();
                let n = slots.len();
                let mut ready = Vec::with_capacity(MAX_BATCH);
                for k in 0..n {
                    let i = (cursor + k) % n;
                    if slots.get(i).is_some_and(|s| s.done.is_none() && !s.busy && s.ready_at <= now) {
                        ready.push(i);
                        if ready.len() == MAX_BATCH {
                            break;
                        }
                    }
                }
                if ready.is_empty() {
                    break;
                }
                let mut batch = Vec::with_capacity(ready.len());
                for i in ready {
                    let Some(slot) = slots.get_mut(i) else { continue };
                    if slot.lookup_cause.is_some() && self.look_up(slot).await {
                        continue;
                    }
                    batch.push(i);
                }
                if batch.is_empty() {
                    continue;
                }
                let (granted, next) = self.pacer.reserve(batch.len(), Instant::now());
                if granted < batch.len() {
                    budget_at = next;
                    tracing::debug!(granted, wanted = batch.len(), "write budget reached; pacing");
                }
                batch.truncate(granted);
                let Some(last) = batch.last() else { break };
                cursor = last + 1;
                let token = match self.token(false).await {
                    Ok(t) => t,
                    Err(e) => {
                        self.pacer.settle(batch.len(), Instant::now());
                        for i in &batch {
                            if let Some(slot) = slots.get_mut(*i) {
                                slot.done = Some(Err(e.clone()));
                            }
                        }
                        continue;
                    }
                };
                let mut requests = Vec::with_capacity(batch.len());
                for (k, i) in batch.iter().enumerate() {
                    if let Some(slot) = slots.get_mut(*i) {
                        slot.busy = true;
                        requests.push(batch_request(k, &slot.write));
                    }
                }
                self.counters.writes += batch.len() as u64;
                let envelope = serde_json::json!({ "requests": requests });
                let req = self.http.post(self.url("/$batch")).bearer_auth(&token).json(&envelope);
                let handle = flight.spawn(read(req));
                batches.insert(handle.id(), (batch, token));
                if budget_at.is_some() {
                    break;
                }
            }
            if flight.is_empty() && slots.iter().all(|s| s.done.is_some()) {
                break;
            }
            // Then wait for an answer, the budget, or the next write whose wait ends.
            let now = Instant::now();
            let next_ready = slots
                .iter()
                .filter(|s| s.done.is_none() && !s.busy && s.ready_at > now)
                .map(|s| s.ready_at)
                .min();
            // Held by the budget: writes are ready, and may go when it frees.
            let wake = budget_at.or(next_ready);
            if flight.is_empty() {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    // Nothing in flight, nothing waiting: whatever is left is ready now.
                    None => tokio::task::yield_now().await,
                }
                continue;
            }
            let joined = match wake {
                Some(at) => tokio::select! {
                    j = flight.join_next_with_id() => j,
                    _ = tokio::time::sleep_until(at) => continue,
                },
                None => flight.join_next_with_id().await,
            };
            let Some(joined) = joined else { continue };
            let (id, sent) = match joined {
                Ok((id, sent)) => (id, sent),
                Err(e) => (e.id(), Err(GraphError::Transport(format!("the request task failed: {e}")))),
            };
            let Some((batch, token)) = batches.remove(&id) else { continue };
            self.pacer.settle(batch.len(), Instant::now());
            for i in &batch {
                if let Some(slot) = slots.get_mut(*i) {
                    slot.busy = false;
                }
            }
            self.take_batch(&mut slots, &batch, sent, &token, &mut refreshed).await;
        }
        slots
            .into_iter()
            .map(|s| Written {
                result: s.done.unwrap_or_else(|| Err(GraphError::Protocol("no result for a write".into()))),
                notes: s.notes,
                found: s.found,
            })
            .collect()
    }

    /// Looks a create up before it is sent (again). True when that settled it (found, or the
    /// lookup failed).
    async fn look_up(&mut self, slot: &mut Slot) -> bool {
        let Some(cause) = slot.lookup_cause.take() else { return false };
        let Resend::Create { lookup: Some(path), .. } = &slot.write.resend else { return false };
        let path = path.clone();
        let mut notes = Vec::new();
        let found = self.get_noted(&path, &mut notes).await;
        slot.notes.append(&mut notes);
        let label = &slot.label;
        match found {
            Ok(page) => match items(&page).first().and_then(|o| o.get("id")).and_then(Value::as_str) {
                Some(id) => {
                    tracing::info!(request = %label, %id, "an earlier attempt had created it; not created again");
                    slot.notes.push(format!(
                            "{label}: {cause}, looked up by onPremisesImmutableId before re-sending: found, not re-created"
                        ));
                    slot.done = Some(Ok(Answer { body: serde_json::json!({ "id": id }) }));
                    slot.found = true;
                    true
                }
                None => {
                    slot.notes.push(format!(
                            "{label}: {cause}, looked up by onPremisesImmutableId before re-sending: not found, sent again"
                        ));
                    false
                }
            },
            Err(e) => {
                slot.notes.push(format!(
                    "{label}: {cause}; the lookup by onPremisesImmutableId failed ({e}), not sent again"
                ));
                slot.done = Some(Err(e));
                true
            }
        }
    }

    /// Takes the answer of one `POST /$batch` (sent with `token`) into the writes of `batch`
    /// (indexes into `slots`).
    async fn take_batch(
        &mut self,
        slots: &mut [Slot],
        batch: &[usize],
        sent: Result<Raw>,
        token: &str,
        refreshed: &mut bool,
    ) {
        let raw = match sent {
            Ok(raw) => raw,
            Err(err @ GraphError::Transport(_)) => {
                let cause = cut_cause(&err);
                for i in batch {
                    if let Some(slot) = slots.get_mut(*i) {
                        self.on_cut(slot, &cause);
                    }
                }
                return;
            }
            Err(err) => {
                for i in batch {
                    if let Some(slot) = slots.get_mut(*i) {
                        slot.done = Some(Err(err.clone()));
                    }
                }
                return;
            }
        };
        // Graph answers a parseable batch with 200 (its throttling page also mentions 424 for a
        // batch with throttled requests): whenever there are `responses`, they decide.
        if let Some(responses) = raw.body.get("responses").and_then(Value::as_array) {
            let mut by_id: HashMap<String, &Value> = HashMap::new();
            for r in responses {
                let id = match r.get("id") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => continue,
                };
                by_id.insert(id.to_ascii_lowercase(), r);
            }
            for (n, i) in batch.iter().enumerate() {
                let Some(slot) = slots.get_mut(*i) else { continue };
                match by_id.get(&(n + 1).to_string()) {
                    Some(r) => {
                        match r.get("status").and_then(Value::as_u64).filter(|s| (100..600).contains(s)) {
                            Some(status) => {
                                let retry_after = header(r, "retry-after");
                                let body = r.get("body").cloned().unwrap_or(Value::Null);
                                self.on_answer(slot, status as u16, retry_after.as_deref(), body);
                            }
                            None => {
                                self.on_cut(slot, "an answer without a valid status in the $batch response")
                            }
                        }
                    }
                    None => self.on_cut(slot, "no answer for it in the $batch response"),
                }
            }
            return;
        }
        let status = raw.status;
        // Sent with a token that was renewed since (another batch in flight saw the 401 first):
        // send again with the new one.
        if status == 401 && self.token.as_ref().is_some_and(|t| t.value != token) {
            for i in batch {
                if let Some(slot) = slots.get_mut(*i) {
                    slot.notes.push(format!(
                        "{}: 401 on its $batch (access token refused), sent again with the renewed token",
                        slot.label
                    ));
                }
            }
            return;
        }
        if status == 401 && !*refreshed {
            *refreshed = true;
            let renewed = self.token(true).await;
            for i in batch {
                let Some(slot) = slots.get_mut(*i) else { continue };
                match &renewed {
                    Ok(_) => slot.notes.push(format!(
                        "{}: 401 on its $batch (access token refused), token renewed, retried",
                        slot.label
                    )),
                    Err(e) => slot.done = Some(Err(e.clone())),
                }
            }
            return;
        }
        for i in batch {
            let Some(slot) = slots.get_mut(*i) else { continue };
            match status {
                429 => self.on_throttled(slot, raw.retry_after.as_deref(), " on its $batch"),
                500..=599 => self.on_server_error(slot, status, raw.retry_after.as_deref(), &raw.body),
                _ => slot.done = Some(Err(http_error(status, &raw.body))),
            }
        }
    }

    fn on_answer(&mut self, slot: &mut Slot, status: u16, retry_after: Option<&str>, body: Value) {
        match status {
            200..=299 => slot.done = Some(Ok(Answer { body })),
            429 => self.on_throttled(slot, retry_after, ""),
            500..=599 => self.on_server_error(slot, status, retry_after, &body),
            _ => slot.done = Some(Err(http_error(status, &body))),
        }
    }

    fn on_throttled(&mut self, slot: &mut Slot, retry_after: Option<&str>, whole: &str) {
        if slot.throttled >= MAX_THROTTLED {
            slot.done = Some(Err(GraphError::Http {
                status: 429,
                code: "TooManyRequests".into(),
                message: format!("still throttled after {MAX_THROTTLED} retries"),
                detail: None,
            }));
            return;
        }
        slot.throttled += 1;
        self.counters.throttled += 1;
        let (wait, note) = throttle_wait(&slot.label, retry_after, slot.throttled, whole);
        tracing::info!(request = %slot.label, wait_ms = wait.as_millis() as u64, "throttled (429); waiting Retry-After");
        slot.notes.push(note);
        slot.ready_at = Instant::now() + wait;
    }

    fn on_server_error(&mut self, slot: &mut Slot, status: u16, retry_after: Option<&str>, body: &Value) {
        slot.attempts += 1;
        if slot.attempts >= MAX_ATTEMPTS {
            slot.done = Some(Err(http_error(status, body)));
            return;
        }
        self.counters.retried += 1;
        let attempt = slot.attempts;
        let cause = format!("{status} {} (attempt {attempt} of {MAX_ATTEMPTS})", error_code(body));
        let wait = server_wait(retry_after, attempt);
        tracing::warn!(request = %slot.label, status, attempt, "server error; retrying");
        // Graph's 503 refuses before applying; another 5xx may have created the object.
        if status != 503 && matches!(slot.write.resend, Resend::Create { lookup: Some(_), .. }) {
            slot.lookup_cause = Some(cause);
        } else {
            slot.notes.push(format!("{}: {cause}, retried after {:.1} s", slot.label, wait.as_secs_f64()));
        }
        slot.ready_at = Instant::now() + wait;
    }

    /// The write's outcome is unknown (the connection was cut, or its answer is missing).
    fn on_cut(&mut self, slot: &mut Slot, cause: &str) {
        slot.attempts += 1;
        let attempt = slot.attempts;
        match &slot.write.resend {
            Resend::Create { lookup: None, .. } => {
                slot.notes.push(format!(
                    "{}: {cause}; outcome unknown, not sent again (no onPremisesImmutableId to look it up by)",
                    slot.label
                ));
                slot.done = Some(Err(GraphError::Transport(format!("{cause}; outcome unknown"))));
            }
            _ if attempt >= MAX_ATTEMPTS => {
                slot.done = Some(Err(GraphError::Transport(format!("{cause} ({attempt} attempts)"))));
            }
            Resend::Create { lookup: Some(_), .. } => {
                self.counters.retried += 1;
                slot.lookup_cause = Some(cause.to_owned());
                slot.ready_at = Instant::now() + backoff(attempt);
            }
            Resend::Idempotent => {
                self.counters.retried += 1;
                let wait = backoff(attempt);
                slot.notes.push(retry_note(&slot.label, cause, attempt, wait));
                slot.ready_at = Instant::now() + wait;
            }
        }
    }

    /// GET of a JSON object.
    pub async fn get(&mut self, path: &str) -> Result<Value> {
        self.get_noted(path, &mut Vec::new()).await
    }

    /// GET of a JSON object; retries are noted in `notes`.
    pub async fn get_noted(&mut self, path: &str, notes: &mut Vec<String>) -> Result<Value> {
        Ok(self.send(Method::GET, path, None, true, notes).await?.body)
    }

    /// Every object of a paged list.
    pub async fn get_all(&mut self, path: &str) -> Result<Vec<Value>> {
        self.get_all_noted(path, &mut Vec::new()).await
    }

    /// Every object of a paged list; retries are noted in `notes`.
    pub async fn get_all_noted(&mut self, path: &str, notes: &mut Vec<String>) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        self.each_page(path, notes, |mut items| out.append(&mut items)).await?;
        Ok(out)
    }

    /// The `id` of every object of a paged list (a group's members, say), and nothing else of
    /// them: a 50,000-member group is 50,000 strings, not 50,000 JSON objects.
    pub async fn get_all_ids_noted(&mut self, path: &str, notes: &mut Vec<String>) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.each_page(path, notes, |items| {
            out.extend(items.into_iter().filter_map(|mut o| match o.get_mut("id").map(Value::take) {
                Some(Value::String(id)) => Some(id),
                _ => None,
            }));
        })
        .await?;
        Ok(out)
    }

    /// The `id`s of every object of several paged lists (the members of each group of a page),
    /// one list per path, in order. The reads go [`MAX_BATCH`] to a `POST /$batch`, with up to
    /// `concurrent_batches` batches in flight: each request is a round trip to Graph, and one
    /// group at a time made a tenant's 10,000 groups 10,000 of them. A list's next page goes in a
    /// later batch, once its page before is in. Each read is retried on its own as
    /// [`GraphClient::send`] retries a GET: after its Retry-After on a 429, with backoff on a 5xx;
    /// a batch throttled, refused with a 5xx or cut as a whole is sent again the same way; any
    /// other answer ends the reads with an error that names the list. None of it is paced as a
    /// write.
    pub async fn get_all_ids_batched(
        &mut self,
        paths: &[String],
        notes: &mut Vec<String>,
    ) -> Result<Vec<Vec<String>>> {
        const LABEL: &str = "POST /$batch (reads)";
        let mut out: Vec<Vec<String>> = vec![Vec::new(); paths.len()];
        let mut queue: VecDeque<PageRead> = paths
            .iter()
            .enumerate()
            .map(|(list, path)| PageRead { list, path: path.clone(), attempts: 0, throttled: 0 })
            .collect();
        let max_flight = (self.config.concurrent_batches as usize).max(1);
        let mut flight: JoinSet<Result<Raw>> = JoinSet::new();
        let mut sent: HashMap<tokio::task::Id, Vec<PageRead>> = HashMap::new();
        // Nothing is sent before this: a 429's Retry-After, a 5xx's backoff.
        let mut not_before = Instant::now();
        let mut refreshed = false;
        loop {
            while flight.len() < max_flight && !queue.is_empty() && Instant::now() >= not_before {
                let reads: Vec<PageRead> = std::iter::from_fn(|| queue.pop_front()).take(MAX_BATCH).collect();
                let requests: Vec<Value> = reads
                    .iter()
                    .enumerate()
                    .map(|(n, r)| serde_json::json!({"id": n.to_string(), "method": "GET", "url": r.path}))
                    .collect();
                let token = self.token(false).await?;
                let req = self
                    .http
                    .post(self.url("/$batch"))
                    .bearer_auth(token)
                    .json(&serde_json::json!({ "requests": requests }));
                let handle = flight.spawn(read(req));
                sent.insert(handle.id(), reads);
            }
            let Some(joined) = flight.join_next_with_id().await else {
                if queue.is_empty() {
                    break;
                }
                tokio::time::sleep_until(not_before).await;
                continue;
            };
            let (id, answered) =
                joined.map_err(|e| GraphError::Protocol(format!("{LABEL}: the request stopped: {e}")))?;
            let mut reads = sent.remove(&id).unwrap_or_default();
            let wait = match answered {
                Ok(raw) if (200..300).contains(&raw.status) => {
                    self.take_page_reads(reads, &raw.body, &mut out, &mut queue, notes)?
                }
                Ok(raw) if raw.status == 401 && !refreshed => {
                    refreshed = true;
                    notes.push(format!("{LABEL}: 401 (access token refused), token renewed, retried"));
                    self.token(true).await?;
                    queue.extend(reads);
                    Duration::ZERO
                }
                Ok(raw) if raw.status == 429 && reads.iter().all(|r| r.throttled < MAX_THROTTLED) => {
                    let throttled = reads.iter_mut().map(|r| {
                        r.throttled += 1;
                        r.throttled
                    });
                    let most = throttled.max().unwrap_or(1);
                    self.counters.throttled += 1;
                    let (wait, note) = throttle_wait(LABEL, raw.retry_after.as_deref(), most, "");
                    notes.push(note);
                    queue.extend(reads);
                    wait
                }
                Ok(raw) if (500..600).contains(&raw.status) => {
                    let attempts = next_attempt(&mut reads);
                    if attempts >= MAX_ATTEMPTS {
                        return Err(http_error(raw.status, &raw.body));
                    }
                    self.counters.retried += 1;
                    let wait = server_wait(raw.retry_after.as_deref(), attempts);
                    let cause = format!("{} {}", raw.status, error_code(&raw.body));
                    notes.push(retry_note(LABEL, &cause, attempts, wait));
                    queue.extend(reads);
                    wait
                }
                Ok(raw) => return Err(http_error(raw.status, &raw.body)),
                Err(err) => {
                    let attempts = next_attempt(&mut reads);
                    if attempts >= MAX_ATTEMPTS {
                        return Err(err);
                    }
                    self.counters.retried += 1;
                    let wait = backoff(attempts);
                    notes.push(retry_note(LABEL, &cut_cause(&err), attempts, wait));
                    queue.extend(reads);
                    wait
                }
            };
            if !wait.is_zero() {
                tracing::info!(
                    wait_ms = wait.as_millis() as u64,
                    "reads in a $batch throttled or refused; waiting"
                );
                not_before = not_before.max(Instant::now() + wait);
            }
        }
        Ok(out)
    }

    /// Takes the answers of one `$batch` of page reads: each page's ids into its list, its next
    /// page (if any) into `queue`, and each read Graph throttled or refused with a 5xx back into
    /// `queue`. Returns how long to wait before the next batch.
    fn take_page_reads(
        &mut self,
        reads: Vec<PageRead>,
        body: &Value,
        out: &mut [Vec<String>],
        queue: &mut VecDeque<PageRead>,
        notes: &mut Vec<String>,
    ) -> Result<Duration> {
        let mut responses: HashMap<String, &Value> = HashMap::new();
        for entry in body.get("responses").and_then(Value::as_array).into_iter().flatten() {
            if let Some(id) = entry.get("id").and_then(Value::as_str) {
                responses.insert(id.to_owned(), entry);
            }
        }
        let mut wait = Duration::ZERO;
        for (n, mut read) in reads.into_iter().enumerate() {
            let label = format!("GET {}", self.display_path(&read.path));
            let Some(entry) = responses.get(&n.to_string()) else {
                return Err(GraphError::Protocol(format!(
                    "{label}: no answer for it in the $batch response"
                )));
            };
            let status = entry.get("status").and_then(Value::as_u64).unwrap_or(0);
            let body = entry.get("body").unwrap_or(&Value::Null);
            if (200..300).contains(&status) {
                let list = out.get_mut(read.list).ok_or_else(|| {
                    GraphError::Protocol(format!("{label}: an answer for a list never asked"))
                })?;
                list.extend(items(body).iter().filter_map(|o| o.get("id")?.as_str().map(str::to_owned)));
                if let Some(next) = body.get("@odata.nextLink").and_then(Value::as_str) {
                    // Relative to the version, as `$batch` takes URLs (the host's case aside).
                    let base = self.config.graph_url.trim_end_matches('/');
                    let relative = next
                        .get(..base.len())
                        .filter(|head| head.eq_ignore_ascii_case(base))
                        .and_then(|_| next.get(base.len()..));
                    let Some(relative) = relative else {
                        return Err(GraphError::Protocol(format!(
                            "{label}: a next link outside {base}: {}",
                            self.display_path(next)
                        )));
                    };
                    queue.push_back(PageRead {
                        list: read.list,
                        path: relative.to_owned(),
                        attempts: 0,
                        throttled: 0,
                    });
                }
                continue;
            }
            let retry_after = header(entry, "Retry-After");
            if status == 429 && read.throttled < MAX_THROTTLED {
                read.throttled += 1;
                self.counters.throttled += 1;
                let (w, note) =
                    throttle_wait(&label, retry_after.as_deref(), read.throttled, " in its $batch");
                notes.push(note);
                wait = wait.max(w);
                queue.push_back(read);
                continue;
            }
            read.attempts += 1;
            if (500..600).contains(&status) && read.attempts < MAX_ATTEMPTS {
                self.counters.retried += 1;
                let w = server_wait(retry_after.as_deref(), read.attempts);
                let cause = format!("{status} {} in its $batch", error_code(body));
                notes.push(retry_note(&label, &cause, read.attempts, w));
                wait = wait.max(w);
                queue.push_back(read);
                continue;
            }
            let status = u16::try_from(status).unwrap_or(0);
            return Err(match http_error(status, body) {
                GraphError::Http { status, code, message, detail } => {
                    GraphError::Http { status, code, message: format!("{label}: {message}"), detail }
                }
                other => other,
            });
        }
        Ok(wait)
    }

    /// Follows a paged list from `path` through its next links, handing each page's items to
    /// `take`.
    async fn each_page(
        &mut self,
        path: &str,
        notes: &mut Vec<String>,
        mut take: impl FnMut(Vec<Value>) + Send,
    ) -> Result<()> {
        let mut next = Some(path.to_owned());
        while let Some(p) = next {
            let mut page = self.get_noted(&p, notes).await?;
            take(take_items(&mut page));
            next = page.get("@odata.nextLink").and_then(Value::as_str).map(str::to_owned);
        }
        Ok(())
    }
}

/// `value` of a page, borrowed.
pub(crate) fn items(page: &Value) -> &[Value] {
    page.get("value").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// `value` of a page, taken out of it (the page keeps the rest, such as its next link).
pub(crate) fn take_items(page: &mut Value) -> Vec<Value> {
    match page.get_mut("value").map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1u64 << attempt.min(6))).min(Duration::from_secs(10))
}

/// `Retry-After` in seconds; Graph may send a fraction (its throttling page shows `2.128`).
fn parse_retry_after(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// The wait after a 429, and its note.
fn throttle_wait(label: &str, retry_after: Option<&str>, throttled: u32, whole: &str) -> (Duration, String) {
    match retry_after.and_then(|t| parse_retry_after(t).map(|d| (t.trim(), d))) {
        Some((text, wait)) => {
            (wait, format!("{label}: 429 Too Many Requests{whole}, Retry-After {text} s, retried"))
        }
        None => {
            let wait = backoff(throttled);
            (
                wait,
                format!(
                    "{label}: 429 Too Many Requests{whole}, no Retry-After, retried after {:.1} s",
                    wait.as_secs_f64()
                ),
            )
        }
    }
}

/// The wait after a 5xx: its Retry-After when it has one, else the backoff.
fn server_wait(retry_after: Option<&str>, attempt: u32) -> Duration {
    retry_after.and_then(parse_retry_after).unwrap_or_else(|| backoff(attempt))
}

/// The note of a request sent again after a 5xx or a cut connection.
fn retry_note(label: &str, cause: &str, attempt: u32, wait: Duration) -> String {
    format!(
        "{label}: {cause} (attempt {attempt} of {MAX_ATTEMPTS}), retried after {:.1} s",
        wait.as_secs_f64()
    )
}

/// What a transport error is called in notes.
fn cut_cause(err: &GraphError) -> String {
    match err {
        GraphError::Transport(m) if m.starts_with("timed out") => "timed out".into(),
        GraphError::Transport(_) => "connection cut".into(),
        other => other.to_string(),
    }
}

/// Graph's `error.code`, or `error` when there is none.
fn error_code(body: &Value) -> String {
    body.pointer("/error/code")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .unwrap_or("error")
        .to_owned()
}

/// A header of a `$batch` response entry, by case-insensitive name (string or number).
fn header(entry: &Value, name: &str) -> Option<String> {
    entry
        .get("headers")
        .and_then(Value::as_object)?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// One entry of a `$batch` request: `id`, `method`, `url` relative to the version, and with a
/// body its `Content-Type` header. <https://learn.microsoft.com/en-us/graph/json-batching>
fn batch_request(n: usize, write: &Write) -> Value {
    let mut r = serde_json::Map::new();
    r.insert("id".into(), Value::String((n + 1).to_string()));
    r.insert("method".into(), Value::String(write.method.to_string()));
    r.insert("url".into(), Value::String(write.path.clone()));
    if let Some(b) = &write.body {
        r.insert("headers".into(), serde_json::json!({ "Content-Type": "application/json" }));
        r.insert("body".into(), b.clone());
    }
    Value::Object(r)
}

/// An answer as read off the wire.
/// One page of a list to read in a `$batch` ([`GraphClient::get_all_ids_batched`]).
struct PageRead {
    /// Which list the page belongs to.
    list: usize,
    /// The page, relative to the Graph base.
    path: String,
    /// Sends that ended in a 5xx or a cut connection.
    attempts: u32,
    /// 429 answers so far.
    throttled: u32,
}

/// Counts one more attempt for each read of a batch sent again whole; returns the most.
fn next_attempt(reads: &mut [PageRead]) -> u32 {
    reads
        .iter_mut()
        .map(|r| {
            r.attempts += 1;
            r.attempts
        })
        .max()
        .unwrap_or(1)
}

struct Raw {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

/// Sends a request and reads its whole answer; a failure to send or to read is a transport error.
async fn read(req: reqwest::RequestBuilder) -> Result<Raw> {
    let resp = req.send().await.map_err(|e| transport(&e))?;
    let status = resp.status().as_u16();
    let retry_after =
        resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = resp.text().await.map_err(|e| transport(&e))?;
    let body =
        if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) };
    Ok(Raw { status, retry_after, body })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_fractions() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 2.128 "), Some(Duration::from_millis(2128)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("100000"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("1e300"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("NaN"), None);
    }

    /// A write counts from its answer, so the window never ends before Graph's (which counts it
    /// on arrival); writes in flight hold their place until answered.
    #[test]
    fn pacer_counts_writes_from_their_answers() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Pacer::new(3, 5 * s);
        assert_eq!(p.reserve(2, t0), (2, None));
        assert_eq!(p.reserve(2, t0), (1, None), "the budget is 3, 2 in flight: one more");
        assert_eq!(p.reserve(1, t0), (0, None), "all in flight: wait for answers");
        p.settle(2, t0 + s);
        p.settle(1, t0 + 2 * s);
        // Five seconds after the send but not after the answer: still counted.
        assert_eq!(p.reserve(1, t0 + 5 * s), (0, Some(t0 + 6 * s)));
        assert_eq!(p.reserve(3, t0 + 6 * s), (2, Some(t0 + 7 * s)));
        p.settle(2, t0 + 6 * s);
        assert_eq!(p.reserve(1, t0 + 7 * s), (1, None));
    }

    #[test]
    fn batch_entries_carry_content_type_only_with_a_body() {
        let w =
            Write { method: Method::DELETE, path: "/users/1".into(), body: None, resend: Resend::Idempotent };
        assert_eq!(
            batch_request(0, &w),
            serde_json::json!({"id": "1", "method": "DELETE", "url": "/users/1"})
        );
        let w = Write { body: Some(serde_json::json!({"a": 1})), method: Method::PATCH, ..w };
        assert_eq!(batch_request(4, &w)["headers"], serde_json::json!({"Content-Type": "application/json"}));
        assert_eq!(batch_request(4, &w)["id"], "5");
    }
}
