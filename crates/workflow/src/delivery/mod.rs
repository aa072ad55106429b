//! Delivery of the durable outbox: over SMTP to a relay (lettre, rustls) or into a maildir
//! directory for demos and development.
//!
//! One delivery run ([`deliver_due`]) takes the messages that are due, records each attempt
//! before it starts (so that an attempt cut short by the process ending is known, and sent
//! again flagged), sends over one connection while it lasts, and records each outcome: a
//! delivery; or a failure, retried after an exponential backoff ([`RetryPolicy`]) until the
//! configured number of attempts, then moved to the dead-letter list with the last SMTP reply.
//! `syncctl mail retry` queues a dead letter again ([`syncctl_store::Store::mail_requeue`]).
//!
//! When the connection itself fails (refused, TLS, STARTTLS missing, AUTH refused), every
//! message of the run records that failure as its attempt: they all wait for the relay together.
//!
//! Exactly once? A message is marked delivered in the database only after the server accepted
//! it. The one window where a message can go twice is between the server's `250` and that
//! database write (the process killed there): SMTP has no way to ask the server afterwards, so
//! the message is sent again, with the same `Message-ID`, and the attempt says so.

mod directory;
mod smtp;

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use lettre::Address;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message, MultiPart};
use serde::Serialize;
use syncctl_core::Clock;
use syncctl_store::{AttemptOutcome, MailStatus, OutboxMessage, Store};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::error::{Result, SmtpError, SmtpErrorKind, WorkflowError};

/// A password, kept out of `Debug` output and never written anywhere.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Self {
        Self(value)
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([hidden])")
    }
}

/// How the connection to the relay is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connect, then STARTTLS, required: a server that does not offer it is an error.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No TLS at all (only when configured so).
    Plain,
}

impl Security {
    /// `starttls`, `tls` or `plain`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "starttls" => Some(Self::StartTls),
            "tls" => Some(Self::Tls),
            "plain" => Some(Self::Plain),
            _ => None,
        }
    }
}

/// The SMTP relay.
#[derive(Clone, Debug)]
pub struct SmtpRelay {
    /// Host name (what the certificate must name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Protection.
    pub security: Security,
    /// The account that authenticates (AUTH PLAIN or LOGIN), if any.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<Secret>,
    /// The CA certificate(s) that sign the relay's certificate; the system roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// Timeout of each network step.
    pub timeout: Duration,
}

/// Where messages go.
#[derive(Clone, Debug)]
pub enum Transport {
    /// An SMTP relay.
    Smtp(SmtpRelay),
    /// A maildir (`new/<file>.eml`), for demos and development.
    Directory(PathBuf),
}

impl Transport {
    /// `host:port` or the directory, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Smtp(r) => format!("{}:{}", r.host, r.port),
            Self::Directory(d) => d.display().to_string(),
        }
    }
}

/// When to try again, and when to give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// A message moves to the dead-letter list after this many failed attempts.
    pub max_attempts: u32,
    /// The wait after the first failure (ms); it doubles after each further one.
    pub initial_delay_ms: i64,
    /// The longest wait between attempts (ms).
    pub max_delay_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 8, initial_delay_ms: 60_000, max_delay_ms: 3_600_000 }
    }
}

impl RetryPolicy {
    /// When to try again after the `failed`-th failed attempt (1 for the first), or `None` to
    /// move the message to the dead-letter list.
    pub fn retry_at(&self, failed: i64, now: i64) -> Option<i64> {
        if failed >= i64::from(self.max_attempts) {
            return None;
        }
        let exp = u32::try_from(failed.saturating_sub(1).clamp(0, 62)).unwrap_or(62);
        let delay = self.initial_delay_ms.saturating_mul(2_i64.saturating_pow(exp)).min(self.max_delay_ms);
        Some(now.saturating_add(delay.max(0)))
    }
}

/// The transcript of one attempt, credentials never written. Each line is also logged at
/// debug level (target `syncctl::smtp`).
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    lines: Vec<String>,
}

impl Transcript {
    fn push(&mut self, line: String) {
        debug!(target: "syncctl::smtp", "{line}");
        self.lines.push(line);
    }
    pub(crate) fn sent(&mut self, line: String) {
        self.push(format!(">> {line}"));
    }
    pub(crate) fn received(&mut self, line: String) {
        self.push(format!("<< {line}"));
    }
    pub(crate) fn note(&mut self, line: String) {
        self.push(format!("-- {line}"));
    }
    /// The lines, newline-separated.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// The outcome of one message in a delivery run.
#[derive(Clone, Debug, Serialize)]
pub struct MessageResult {
    /// The outbox id.
    pub id: i64,
    /// The recipient.
    pub recipient: String,
    /// Delivered, transient, permanent (the attempt's outcome).
    pub outcome: AttemptOutcome,
    /// Where the message is now.
    pub status: MailStatus,
    /// The server's last reply or the error.
    pub reply: String,
    /// The failure, explained (none for a delivery).
    #[serde(skip)]
    pub error: Option<SmtpError>,
    /// When it is tried again (a queued message).
    pub retry_at: Option<i64>,
}

/// What a delivery run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeliveryReport {
    /// Every message attempted, in order.
    pub results: Vec<MessageResult>,
}

impl DeliveryReport {
    /// Messages delivered.
    pub fn delivered(&self) -> usize {
        self.count(MailStatus::Delivered)
    }
    /// Messages queued again.
    pub fn retrying(&self) -> usize {
        self.count(MailStatus::Queued)
    }
    /// Messages moved to the dead-letter list.
    pub fn dead_lettered(&self) -> usize {
        self.count(MailStatus::DeadLetter)
    }
    fn count(&self, s: MailStatus) -> usize {
        self.results.iter().filter(|r| r.status == s).count()
    }
    /// The first error, explained, if any.
    pub fn first_error(&self) -> Option<&SmtpError> {
        self.results.iter().find_map(|r| r.error.as_ref())
    }
}

/// Delivers every message due at the clock's now (at most `limit`).
pub async fn deliver_due(
    store: &Store,
    transport: &Transport,
    policy: &RetryPolicy,
    clock: &dyn Clock,
    limit: i64,
) -> Result<DeliveryReport> {
    let due = store.mail_due(clock.now_ms(), limit).await?;
    deliver(store, transport, policy, clock, due).await
}

/// Delivers these messages (already selected), in order.
pub async fn deliver(
    store: &Store,
    transport: &Transport,
    policy: &RetryPolicy,
    clock: &dyn Clock,
    messages: Vec<OutboxMessage>,
) -> Result<DeliveryReport> {
    let span = info_span!("deliver", to = %transport.describe(), messages = messages.len());
    async {
        let mut report = DeliveryReport::default();
        if messages.is_empty() {
            return Ok(report);
        }
        let tls = match transport {
            Transport::Smtp(relay) if relay.security != Security::Plain => {
                Some(smtp::tls_parameters(relay).map_err(WorkflowError::Delivery)?)
            }
            _ => None,
        };
        let mut session: Option<smtp::Session> = None;
        // A connection failure of this run: every later message records it too.
        let mut down: Option<SmtpError> = None;
        let mut last_transcript = Transcript::default();
        for m in messages {
            let interrupted = m.status == MailStatus::Sending;
            let attempt = store.mail_begin_attempt(m.id, clock.now_ms()).await?;
            let mut t = Transcript::default();
            if interrupted {
                t.note("the previous attempt ended with the process: sending again (same Message-ID)".into());
            }
            let sent: std::result::Result<String, SmtpError> = match (&down, transport) {
                (Some(e), _) => {
                    t.note(format!("not sent: this delivery run could not connect ({e})"));
                    Err(e.clone())
                }
                (None, Transport::Directory(dir)) => match build(&m) {
                    Ok((_, _, bytes)) => directory::store(dir, &m, &bytes, &mut t),
                    Err(e) => Err(e),
                },
                (None, Transport::Smtp(relay)) => {
                    send_smtp(relay, tls.as_ref(), &mut session, &m, &mut t).await
                }
            };
            let now = clock.now_ms();
            let transcript = t.text();
            match sent {
                Ok(reply) => {
                    store.mail_delivered(m.id, attempt, &reply, &transcript, now).await?;
                    info!(mail = m.id, to = %m.recipient, %reply, "mail delivered");
                    report.results.push(MessageResult {
                        id: m.id,
                        recipient: m.recipient.clone(),
                        outcome: AttemptOutcome::Delivered,
                        status: MailStatus::Delivered,
                        reply,
                        error: None,
                        retry_at: None,
                    });
                }
                Err(e) => {
                    if e.is_connection() && down.is_none() {
                        down = Some(e.clone());
                        session = None;
                    }
                    let outcome =
                        if e.is_permanent() { AttemptOutcome::Permanent } else { AttemptOutcome::Transient };
                    let retry_at = policy.retry_at(m.attempts + 1, now);
                    let reply = e.to_string();
                    store.mail_failed(m.id, attempt, outcome, &reply, &transcript, retry_at, now).await?;
                    let status = if retry_at.is_some() { MailStatus::Queued } else { MailStatus::DeadLetter };
                    if status == MailStatus::DeadLetter {
                        warn!(mail = m.id, to = %m.recipient, %reply, attempts = m.attempts + 1, "mail moved to the dead-letter list");
                    } else {
                        warn!(mail = m.id, to = %m.recipient, %reply, "mail not delivered, queued again");
                    }
                    report.results.push(MessageResult {
                        id: m.id,
                        recipient: m.recipient.clone(),
                        outcome,
                        status,
                        reply,
                        error: Some(e),
                        retry_at,
                    });
                }
            }
            last_transcript = t;
        }
        if let Some(s) = session {
            s.quit(&mut last_transcript).await;
        }
        Ok(report)
    }
    .instrument(span)
    .await
}

async fn send_smtp(
    relay: &SmtpRelay,
    tls: Option<&lettre::transport::smtp::client::TlsParameters>,
    session: &mut Option<smtp::Session>,
    m: &OutboxMessage,
    t: &mut Transcript,
) -> std::result::Result<String, SmtpError> {
    let (from, to, bytes) = build(m).map_err(|mut e| {
        e.relay = format!("{}:{}", relay.host, relay.port);
        e
    })?;
    if session.as_ref().is_some_and(|s| !s.usable()) {
        *session = None;
    }
    let mut s = match session.take() {
        Some(s) => {
            t.note("on the connection of the previous message".into());
            s
        }
        None => smtp::Session::open(relay, tls, t).await?,
    };
    let r = s.send(&from, &to, &bytes, t).await;
    if r.is_ok() && s.usable() {
        *session = Some(s);
    }
    r
}

/// The message as sent: envelope sender, recipient, and RFC 5322 bytes (`Date` = when it was
/// queued, the stored `Message-ID`, `Auto-Submitted: auto-generated`).
pub fn build(m: &OutboxMessage) -> std::result::Result<(Address, Address, Vec<u8>), SmtpError> {
    let bad = |what: &str, e: String| SmtpError {
        kind: SmtpErrorKind::Message,
        relay: String::new(),
        detail: format!("{what}: {e}"),
    };
    let from: Address =
        m.sender.parse().map_err(|e| bad(&format!("sender `{}`", m.sender), format!("{e}")))?;
    let to: Address =
        m.recipient.parse().map_err(|e| bad(&format!("recipient `{}`", m.recipient), format!("{e}")))?;
    let builder = Message::builder()
        .from(Mailbox::new(None, from.clone()))
        .to(Mailbox::new(None, to.clone()))
        .subject(m.subject.clone())
        .message_id(Some(format!("<{}>", m.message_id)))
        .date(UNIX_EPOCH + Duration::from_millis(u64::try_from(m.created_at).unwrap_or(0)))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ));
    let message = match &m.html_body {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(m.text_body.clone(), html.clone())),
        None => builder.header(ContentType::TEXT_PLAIN).body(m.text_body.clone()),
    }
    .map_err(|e| bad("message", e.to_string()))?;
    Ok((from, to, message.formatted()))
}

#[cfg(test)]
mod tests;
