//! Workflow state: set membership, requests, the mail outbox and its delivery attempts.
//!
//! What a sync batch adds ([`WorkflowWrites`]: membership changes, requests and their rendered
//! messages) is written by [`Store::write_sync_batch`] in the batch's own transaction, so that a
//! transition and its mail commit together with the metaverse change that caused them, or not
//! at all. Delivery records each attempt before it starts and its outcome after
//! ([`Store::mail_begin_attempt`], [`Store::mail_delivered`], [`Store::mail_failed`]); whether a
//! failure is retried or dead-lettered is the caller's decision.
//!
//! No secret is ever stored here: messages, replies and transcripts are written by the workflow
//! crate with credentials left out.

use serde::Serialize;
use sqlx::{Row, Sqlite, Transaction};

use crate::error::{Result, StoreError};
use crate::metaverse::MvId;
use crate::{RunId, Store};

/// Entering or leaving a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    /// The object entered the set.
    In,
    /// The object left the set.
    Out,
}

impl Transition {
    /// `in` or `out`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
    /// The stored form back.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "in" => Some(Self::In),
            "out" => Some(Self::Out),
            _ => None,
        }
    }
}

/// One message to put in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// The workflow activity that rendered it (`mail-test`, `operator` for the others).
    pub activity: String,
    /// Who it is for in the workflow's terms: `target`, `manager`, `set:<name>`, `address`.
    pub recipient_role: String,
    /// The `From` address.
    pub sender: String,
    /// The one recipient.
    pub recipient: String,
    /// The rendered subject.
    pub subject: String,
    /// The rendered plain-text body.
    pub text_body: String,
    /// The rendered HTML body, if the activity has one.
    pub html_body: Option<String>,
    /// The `Message-ID` (without angle brackets), stable across attempts.
    pub message_id: String,
}

/// One request: a set transition that a policy turned into a workflow run, with its mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRequest {
    /// The target.
    pub mv_id: MvId,
    /// The target as a person recognizes it.
    pub object: String,
    /// The set.
    pub set_name: String,
    /// In or out.
    pub transition: Transition,
    /// The policy that fired.
    pub policy: String,
    /// Its workflow.
    pub workflow: String,
    /// What the workflow could not do (a recipient without an address, a template error).
    pub error: Option<String>,
    /// The messages it rendered.
    pub messages: Vec<NewMessage>,
}

/// What workflows add to one transaction: membership changes, requests, loose messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkflowWrites {
    /// `(set, object)` pairs that entered.
    pub entered: Vec<(String, MvId)>,
    /// `(set, object)` pairs that left.
    pub left: Vec<(String, MvId)>,
    /// Requests with their messages.
    pub requests: Vec<NewRequest>,
    /// Messages of no request (operator notices, `mail test`).
    pub messages: Vec<NewMessage>,
}

impl WorkflowWrites {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.entered.is_empty()
            && self.left.is_empty()
            && self.requests.is_empty()
            && self.messages.is_empty()
    }
}

/// Where a message is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MailStatus {
    /// Waiting for its next attempt.
    Queued,
    /// An attempt is under way (or the process died during one).
    Sending,
    /// The server accepted it.
    Delivered,
    /// Given up after the configured attempts; `mail retry` queues it again.
    DeadLetter,
}

impl MailStatus {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Delivered => "delivered",
            Self::DeadLetter => "dead-letter",
        }
    }
    /// The stored form back.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(Self::Queued),
            "sending" => Some(Self::Sending),
            "delivered" => Some(Self::Delivered),
            "dead-letter" => Some(Self::DeadLetter),
            _ => None,
        }
    }
}

/// A message of the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutboxMessage {
    /// Row id.
    pub id: i64,
    /// Its request, if any.
    pub request_id: Option<i64>,
    /// The activity that rendered it.
    pub activity: String,
    /// Who it is for in the workflow's terms.
    pub recipient_role: String,
    /// `From`.
    pub sender: String,
    /// The recipient.
    pub recipient: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub text_body: String,
    /// HTML body.
    pub html_body: Option<String>,
    /// `Message-ID`.
    pub message_id: String,
    /// Status.
    pub status: MailStatus,
    /// Failed attempts since it was last queued.
    pub attempts: i64,
    /// When the next attempt is due (ms).
    pub next_attempt_at: i64,
    /// The last attempt (ms).
    pub last_attempt_at: Option<i64>,
    /// The last SMTP reply or connection error.
    pub last_reply: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<i64>,
    /// When it was dead-lettered.
    pub dead_at: Option<i64>,
    /// When it was queued first.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptOutcome {
    /// Under way (or the process died).
    InProgress,
    /// Accepted by the server.
    Delivered,
    /// A failure that may pass (4xx, connection refused, TLS or AUTH trouble).
    Transient,
    /// A permanent refusal (5xx).
    Permanent,
    /// The process ended during the attempt.
    Interrupted,
}

impl AttemptOutcome {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in-progress",
            Self::Delivered => "delivered",
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Interrupted => "interrupted",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "in-progress" => Some(Self::InProgress),
            "delivered" => Some(Self::Delivered),
            "transient" => Some(Self::Transient),
            "permanent" => Some(Self::Permanent),
            "interrupted" => Some(Self::Interrupted),
            _ => None,
        }
    }
}

/// One delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MailAttempt {
    /// Row id.
    pub id: i64,
    /// The message.
    pub mail_id: i64,
    /// Start (ms).
    pub started_at: i64,
    /// End (ms).
    pub ended_at: Option<i64>,
    /// Outcome.
    pub outcome: AttemptOutcome,
    /// The server's reply or the error.
    pub reply: Option<String>,
    /// The SMTP transcript, credentials hidden.
    pub transcript: String,
}

/// A request as `syncctl requests` lists it, with its status derived from its messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// Row id.
    pub id: i64,
    /// The target.
    pub mv_id: MvId,
    /// The target as a person recognizes it.
    pub object: String,
    /// The set.
    pub set_name: String,
    /// In or out.
    pub transition: Transition,
    /// The policy.
    pub policy: String,
    /// The workflow.
    pub workflow: String,
    /// `pending`, `delivered`, `failed` or `dead-letter`.
    pub status: String,
    /// What the workflow could not do, and the last delivery error of a failing message.
    pub error: Option<String>,
    /// The sync run that made it.
    pub run_id: Option<RunId>,
    /// Messages rendered.
    pub messages: i64,
    /// Messages delivered.
    pub delivered: i64,
    /// When it was made.
    pub created_at: i64,
    /// The last change of it or its messages.
    pub updated_at: i64,
}

/// What `syncctl requests` filters on.
#[derive(Clone, Debug, Default)]
pub struct RequestFilter {
    /// `pending`, `delivered`, `failed` or `dead-letter`.
    pub status: Option<String>,
    /// An MV id (`123` or `mv:123`) or a part of the object's name (case-insensitive).
    pub object: Option<String>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// The request statuses, for validation and help.
pub const REQUEST_STATUSES: &[&str] = &["pending", "delivered", "failed", "dead-letter"];

const REQUEST_SELECT: &str = "SELECT r.id, r.mv_id, r.object, r.set_name, r.transition, r.policy, \
     r.workflow, r.run_id, r.created_at, r.error AS request_error, \
     (SELECT COUNT(*) FROM mail_outbox m WHERE m.request_id = r.id) AS messages, \
     (SELECT COUNT(*) FROM mail_outbox m WHERE m.request_id = r.id AND m.status = 'delivered') AS delivered, \
     (SELECT COUNT(*) FROM mail_outbox m WHERE m.request_id = r.id AND m.status = 'dead-letter') AS dead, \
     (SELECT m.last_reply FROM mail_outbox m WHERE m.request_id = r.id AND m.status <> 'delivered' \
        AND m.attempts > 0 ORDER BY m.updated_at DESC LIMIT 1) AS failing_reply, \
     MAX(r.created_at, COALESCE((SELECT MAX(m.updated_at) FROM mail_outbox m WHERE m.request_id = r.id), 0)) AS updated_at \
     FROM workflow_requests r";

/// The derived status expression over [`REQUEST_SELECT`]'s columns.
const REQUEST_STATUS: &str = "CASE WHEN x.dead > 0 THEN 'dead-letter' \
     WHEN x.request_error IS NOT NULL OR x.failing_reply IS NOT NULL THEN 'failed' \
     WHEN x.messages > 0 AND x.delivered = x.messages THEN 'delivered' ELSE 'pending' END";

fn q(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::query(operation, e)
}

fn corrupt(table: &'static str, key: i64, detail: String) -> StoreError {
    StoreError::Corrupt { table, key: key.to_string(), detail }
}

fn message_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<OutboxMessage> {
    let get = q("read the mail outbox");
    let id: i64 = row.try_get("id").map_err(&get)?;
    let status: String = row.try_get("status").map_err(&get)?;
    Ok(OutboxMessage {
        id,
        request_id: row.try_get("request_id").map_err(&get)?,
        activity: row.try_get("activity").map_err(&get)?,
        recipient_role: row.try_get("recipient_role").map_err(&get)?,
        sender: row.try_get("sender").map_err(&get)?,
        recipient: row.try_get("recipient").map_err(&get)?,
        subject: row.try_get("subject").map_err(&get)?,
        text_body: row.try_get("text_body").map_err(&get)?,
        html_body: row.try_get("html_body").map_err(&get)?,
        message_id: row.try_get("message_id").map_err(&get)?,
        status: MailStatus::parse(&status)
            .ok_or_else(|| corrupt("mail_outbox", id, format!("status `{status}`")))?,
        attempts: row.try_get("attempts").map_err(&get)?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(&get)?,
        last_attempt_at: row.try_get("last_attempt_at").map_err(&get)?,
        last_reply: row.try_get("last_reply").map_err(&get)?,
        delivered_at: row.try_get("delivered_at").map_err(&get)?,
        dead_at: row.try_get("dead_at").map_err(&get)?,
        created_at: row.try_get("created_at").map_err(&get)?,
        updated_at: row.try_get("updated_at").map_err(&get)?,
    })
}

fn request_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<RequestRecord> {
    let get = q("read requests");
    let id: i64 = row.try_get("id").map_err(&get)?;
    let transition: String = row.try_get("transition").map_err(&get)?;
    let request_error: Option<String> = row.try_get("request_error").map_err(&get)?;
    let failing: Option<String> = row.try_get("failing_reply").map_err(&get)?;
    let error = match (request_error, failing) {
        (Some(a), Some(b)) => Some(format!("{a}; last delivery error: {b}")),
        (Some(a), None) => Some(a),
        (None, Some(b)) => Some(format!("last delivery error: {b}")),
        (None, None) => None,
    };
    Ok(RequestRecord {
        id,
        mv_id: row.try_get("mv_id").map_err(&get)?,
        object: row.try_get("object").map_err(&get)?,
        set_name: row.try_get("set_name").map_err(&get)?,
        transition: Transition::parse(&transition)
            .ok_or_else(|| corrupt("workflow_requests", id, format!("transition `{transition}`")))?,
        policy: row.try_get("policy").map_err(&get)?,
        workflow: row.try_get("workflow").map_err(&get)?,
        status: row.try_get("status").map_err(&get)?,
        error,
        run_id: row.try_get("run_id").map_err(&get)?,
        messages: row.try_get("messages").map_err(&get)?,
        delivered: row.try_get("delivered").map_err(&get)?,
        created_at: row.try_get("created_at").map_err(&get)?,
        updated_at: row.try_get("updated_at").map_err(&get)?,
    })
}

/// Writes membership changes, requests and messages inside `tx`.
pub(crate) async fn insert_workflow(
    tx: &mut Transaction<'_, Sqlite>,
    w: &WorkflowWrites,
    run: Option<RunId>,
    now: i64,
) -> Result<()> {
    let e = q("write workflow state");
    for (set, mv) in &w.left {
        sqlx::query("DELETE FROM set_members WHERE set_name = ? AND mv_id = ?")
            .bind(set)
            .bind(mv)
            .execute(&mut **tx)
            .await
            .map_err(&e)?;
    }
    for (set, mv) in &w.entered {
        sqlx::query("INSERT OR IGNORE INTO set_members (set_name, mv_id, since) VALUES (?, ?, ?)")
            .bind(set)
            .bind(mv)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(&e)?;
    }
    for r in &w.requests {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO workflow_requests (mv_id, object, set_name, transition, policy, workflow, error, run_id, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(r.mv_id)
        .bind(&r.object)
        .bind(&r.set_name)
        .bind(r.transition.as_str())
        .bind(&r.policy)
        .bind(&r.workflow)
        .bind(&r.error)
        .bind(run)
        .bind(now)
        .fetch_one(&mut **tx)
        .await
        .map_err(&e)?;
        for m in &r.messages {
            insert_message(tx, m, Some(id), now).await?;
        }
    }
    for m in &w.messages {
        insert_message(tx, m, None, now).await?;
    }
    Ok(())
}

async fn insert_message(
    tx: &mut Transaction<'_, Sqlite>,
    m: &NewMessage,
    request: Option<i64>,
    now: i64,
) -> Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO mail_outbox (request_id, activity, recipient_role, sender, recipient, subject, text_body, html_body, \
         message_id, status, attempts, next_attempt_at, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?) RETURNING id",
    )
    .bind(request)
    .bind(&m.activity)
    .bind(&m.recipient_role)
    .bind(&m.sender)
    .bind(&m.recipient)
    .bind(&m.subject)
    .bind(&m.text_body)
    .bind(&m.html_body)
    .bind(&m.message_id)
    .bind(now)
    .bind(now)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(q("queue a message"))
}

/// How many requests some runs made: a search of `workflow_requests_run` per run, not a scan of
/// the whole request history.
pub(crate) const REQUESTS_OF_RUNS: &str =
    "SELECT COUNT(*) FROM workflow_requests WHERE run_id IN (SELECT value FROM json_each(?))";

impl Store {
    /// The sets' criteria fingerprints as last evaluated in full: `(set, fingerprint)`, by name.
    pub async fn set_definitions(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT set_name, fingerprint FROM set_definitions ORDER BY set_name")
            .fetch_all(&self.pool)
            .await
            .map_err(q("read set definitions"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("set_name").map_err(q("read set definitions"))?,
                    r.try_get("fingerprint").map_err(q("read set definitions"))?,
                ))
            })
            .collect()
    }

    /// Replaces a set's members and fingerprint in one transaction, without any request (a new
    /// or changed set starts from what is true now).
    pub async fn replace_set(&self, set: &str, fingerprint: &str, members: &[MvId], now: i64) -> Result<()> {
        let e = q("write set membership");
        let mut tx = self.pool.begin().await.map_err(&e)?;
        sqlx::query("DELETE FROM set_members WHERE set_name = ?")
            .bind(set)
            .execute(&mut *tx)
            .await
            .map_err(&e)?;
        for chunk in members.chunks(5000) {
            sqlx::query(
                "INSERT OR IGNORE INTO set_members (set_name, mv_id, since) SELECT ?, value, ? FROM json_each(?)",
            )
            .bind(set)
            .bind(now)
            .bind(serde_json::to_string(chunk).map_err(|x| corrupt("set_members", 0, x.to_string()))?)
            .execute(&mut *tx)
            .await
            .map_err(&e)?;
        }
        sqlx::query(
            "INSERT INTO set_definitions (set_name, fingerprint, evaluated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (set_name) DO UPDATE SET fingerprint = ?2, evaluated_at = ?3",
        )
        .bind(set)
        .bind(fingerprint)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }

    /// Forgets a set that is no longer configured.
    pub async fn drop_set(&self, set: &str) -> Result<()> {
        let e = q("drop a set");
        let mut tx = self.pool.begin().await.map_err(&e)?;
        for sql in
            ["DELETE FROM set_members WHERE set_name = ?", "DELETE FROM set_definitions WHERE set_name = ?"]
        {
            sqlx::query(sql).bind(set).execute(&mut *tx).await.map_err(&e)?;
        }
        tx.commit().await.map_err(&e)
    }

    /// Drops memberships of metaverse objects that no longer exist (deleted while no workflow
    /// was configured); returns how many.
    pub async fn prune_set_members(&self) -> Result<u64> {
        let r = sqlx::query("DELETE FROM set_members WHERE mv_id NOT IN (SELECT id FROM mv_objects)")
            .execute(&self.pool)
            .await
            .map_err(q("prune set membership"))?;
        Ok(r.rows_affected())
    }

    /// The members of a set, in id order.
    pub async fn set_members(&self, set: &str) -> Result<Vec<MvId>> {
        sqlx::query_scalar("SELECT mv_id FROM set_members WHERE set_name = ? ORDER BY mv_id")
            .bind(set)
            .fetch_all(&self.pool)
            .await
            .map_err(q("read set membership"))
    }

    /// The sets these objects are in: `(object, set)` pairs, ordered.
    pub async fn memberships_of(&self, ids: &[MvId]) -> Result<Vec<(MvId, String)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(5000) {
            let rows = sqlx::query(
                "SELECT mv_id, set_name FROM set_members WHERE mv_id IN (SELECT value FROM json_each(?)) \
                 ORDER BY mv_id, set_name",
            )
            .bind(serde_json::to_string(chunk).map_err(|x| corrupt("set_members", 0, x.to_string()))?)
            .fetch_all(&self.pool)
            .await
            .map_err(q("read set membership"))?;
            for r in &rows {
                out.push((
                    r.try_get("mv_id").map_err(q("read set membership"))?,
                    r.try_get("set_name").map_err(q("read set membership"))?,
                ));
            }
        }
        Ok(out)
    }

    /// MV object ids after `after`, at most `limit`, in order (a full pass in chunks).
    pub async fn mv_ids_after(&self, after: MvId, limit: i64) -> Result<Vec<MvId>> {
        sqlx::query_scalar("SELECT id FROM mv_objects WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(q("read metaverse"))
    }

    /// Writes workflow state in a transaction of its own (time-based transitions, operator
    /// notices, `mail test`); returns the ids of the loose messages queued, in order.
    pub async fn write_workflow(&self, w: &WorkflowWrites, run: Option<RunId>, now: i64) -> Result<Vec<i64>> {
        let e = q("write workflow state");
        let mut tx = self.pool.begin().await.map_err(&e)?;
        let loose = WorkflowWrites { messages: Vec::new(), ..w.clone() };
        insert_workflow(&mut tx, &loose, run, now).await?;
        let mut ids = Vec::with_capacity(w.messages.len());
        for m in &w.messages {
            ids.push(insert_message(&mut tx, m, None, now).await?);
        }
        tx.commit().await.map_err(&e)?;
        Ok(ids)
    }

    /// Messages due for an attempt at `now` (queued and due, or left `sending` by a process
    /// that died), oldest first, at most `limit`.
    pub async fn mail_due(&self, now: i64, limit: i64) -> Result<Vec<OutboxMessage>> {
        let rows = sqlx::query(
            "SELECT * FROM mail_outbox WHERE (status = 'queued' AND next_attempt_at <= ?) OR status = 'sending' \
             ORDER BY next_attempt_at, id LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read the mail outbox"))?;
        rows.iter().map(message_from_row).collect()
    }

    /// Messages by id (those that exist), in id order.
    pub async fn mail_by_ids(&self, ids: &[i64]) -> Result<Vec<OutboxMessage>> {
        let rows =
            sqlx::query("SELECT * FROM mail_outbox WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id")
                .bind(serde_json::to_string(ids).map_err(|x| corrupt("mail_outbox", 0, x.to_string()))?)
                .fetch_all(&self.pool)
                .await
                .map_err(q("read the mail outbox"))?;
        rows.iter().map(message_from_row).collect()
    }

    /// The outbox, newest first: every message, or those with `status`.
    pub async fn mail_list(&self, status: Option<MailStatus>, limit: i64) -> Result<Vec<OutboxMessage>> {
        let rows = match status {
            Some(s) => sqlx::query("SELECT * FROM mail_outbox WHERE status = ? ORDER BY id DESC LIMIT ?")
                .bind(s.as_str())
                .bind(limit),
            None => sqlx::query("SELECT * FROM mail_outbox ORDER BY id DESC LIMIT ?").bind(limit),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(q("read the mail outbox"))?;
        rows.iter().map(message_from_row).collect()
    }

    /// How many messages have each status.
    pub async fn mail_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS n FROM mail_outbox GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await
                .map_err(q("read the mail outbox"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("status").map_err(q("read the mail outbox"))?,
                    r.try_get("n").map_err(q("read the mail outbox"))?,
                ))
            })
            .collect()
    }

    /// The attempts of one message, oldest first.
    pub async fn mail_attempts(&self, mail: i64) -> Result<Vec<MailAttempt>> {
        let rows = sqlx::query("SELECT * FROM mail_attempts WHERE mail_id = ? ORDER BY id")
            .bind(mail)
            .fetch_all(&self.pool)
            .await
            .map_err(q("read mail attempts"))?;
        rows.iter()
            .map(|r| {
                let get = q("read mail attempts");
                let id: i64 = r.try_get("id").map_err(&get)?;
                let outcome: String = r.try_get("outcome").map_err(&get)?;
                Ok(MailAttempt {
                    id,
                    mail_id: r.try_get("mail_id").map_err(&get)?,
                    started_at: r.try_get("started_at").map_err(&get)?,
                    ended_at: r.try_get("ended_at").map_err(&get)?,
                    outcome: AttemptOutcome::parse(&outcome)
                        .ok_or_else(|| corrupt("mail_attempts", id, format!("outcome `{outcome}`")))?,
                    reply: r.try_get("reply").map_err(&get)?,
                    transcript: r.try_get("transcript").map_err(&get)?,
                })
            })
            .collect()
    }

    /// Records that an attempt at `mail` starts: the message becomes `sending` and the attempt
    /// `in-progress`, committed before the first byte goes out. An attempt left in progress by
    /// a process that died is closed as `interrupted` first. Returns the attempt's id.
    pub async fn mail_begin_attempt(&self, mail: i64, now: i64) -> Result<i64> {
        let e = q("record a mail attempt");
        let mut tx = self.pool.begin().await.map_err(&e)?;
        sqlx::query(
            "UPDATE mail_attempts SET outcome = 'interrupted', ended_at = ?, \
             reply = 'the process ended during this attempt (the server may or may not have accepted the message)' \
             WHERE mail_id = ? AND outcome = 'in-progress'",
        )
        .bind(now)
        .bind(mail)
        .execute(&mut *tx)
        .await
        .map_err(&e)?;
        sqlx::query(
            "UPDATE mail_outbox SET status = 'sending', last_attempt_at = ?, updated_at = ? WHERE id = ?",
        )
        .bind(now)
        .bind(now)
        .bind(mail)
        .execute(&mut *tx)
        .await
        .map_err(&e)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO mail_attempts (mail_id, started_at, outcome) VALUES (?, ?, 'in-progress') RETURNING id",
        )
        .bind(mail)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        Ok(id)
    }

    /// Records a delivery: the message is `delivered`, the attempt too.
    pub async fn mail_delivered(
        &self,
        mail: i64,
        attempt: i64,
        reply: &str,
        transcript: &str,
        now: i64,
    ) -> Result<()> {
        let e = q("record a delivery");
        let mut tx = self.pool.begin().await.map_err(&e)?;
        sqlx::query(
            "UPDATE mail_outbox SET status = 'delivered', delivered_at = ?1, last_reply = ?2, updated_at = ?1 WHERE id = ?3",
        )
        .bind(now)
        .bind(reply)
        .bind(mail)
        .execute(&mut *tx)
        .await
        .map_err(&e)?;
        finish_attempt(&mut tx, attempt, AttemptOutcome::Delivered, reply, transcript, now).await?;
        tx.commit().await.map_err(&e)
    }

    /// Records a failed attempt: the message counts one more attempt and is queued again for
    /// `retry_at`, or moves to the dead-letter list when `retry_at` is `None`.
    #[allow(clippy::too_many_arguments)]
    pub async fn mail_failed(
        &self,
        mail: i64,
        attempt: i64,
        outcome: AttemptOutcome,
        reply: &str,
        transcript: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<()> {
        let e = q("record a failed attempt");
        let mut tx = self.pool.begin().await.map_err(&e)?;
        let update = match retry_at {
            Some(at) => sqlx::query(
                "UPDATE mail_outbox SET status = 'queued', attempts = attempts + 1, next_attempt_at = ?, \
                 last_reply = ?, updated_at = ? WHERE id = ?",
            )
            .bind(at),
            None => sqlx::query(
                "UPDATE mail_outbox SET status = 'dead-letter', attempts = attempts + 1, dead_at = ?3, \
                 last_reply = ?2, updated_at = ?3 WHERE id = ?4 AND ?1 = ?1",
            )
            .bind(0_i64),
        };
        update.bind(reply).bind(now).bind(mail).execute(&mut *tx).await.map_err(&e)?;
        finish_attempt(&mut tx, attempt, outcome, reply, transcript, now).await?;
        tx.commit().await.map_err(&e)
    }

    /// Queues dead-letter (or still queued) messages again, due at `now`, their attempt count
    /// back at 0; `ids` empty means every dead letter. Returns the ids queued.
    pub async fn mail_requeue(&self, ids: &[i64], now: i64) -> Result<Vec<i64>> {
        let e = q("queue messages again");
        let rows: Vec<i64> = if ids.is_empty() {
            sqlx::query_scalar(
                "UPDATE mail_outbox SET status = 'queued', attempts = 0, next_attempt_at = ?1, dead_at = NULL, \
                 updated_at = ?1 WHERE status = 'dead-letter' RETURNING id",
            )
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(&e)?
        } else {
            sqlx::query_scalar(
                "UPDATE mail_outbox SET status = 'queued', attempts = 0, next_attempt_at = ?1, dead_at = NULL, \
                 updated_at = ?1 WHERE status IN ('dead-letter', 'queued') AND id IN (SELECT value FROM json_each(?2)) \
                 RETURNING id",
            )
            .bind(now)
            .bind(serde_json::to_string(ids).map_err(|x| corrupt("mail_outbox", 0, x.to_string()))?)
            .fetch_all(&self.pool)
            .await
            .map_err(&e)?
        };
        let mut rows = rows;
        rows.sort_unstable();
        Ok(rows)
    }

    /// Deletes messages with one of `statuses` last changed before `before` (with their
    /// attempts); returns how many.
    pub async fn mail_purge(&self, statuses: &[MailStatus], before: i64) -> Result<u64> {
        let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let list = serde_json::to_string(&names).map_err(|x| corrupt("mail_outbox", 0, x.to_string()))?;
        let e = q("purge the mail outbox");
        let mut tx = self.pool.begin().await.map_err(&e)?;
        sqlx::query(
            "DELETE FROM mail_attempts WHERE mail_id IN (SELECT id FROM mail_outbox WHERE \
             status IN (SELECT value FROM json_each(?)) AND updated_at < ?)",
        )
        .bind(&list)
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(&e)?;
        let r = sqlx::query(
            "DELETE FROM mail_outbox WHERE status IN (SELECT value FROM json_each(?)) AND updated_at < ?",
        )
        .bind(&list)
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        Ok(r.rows_affected())
    }

    /// How many requests the batches of these runs made.
    pub async fn requests_of_runs(&self, runs: &[RunId]) -> Result<i64> {
        sqlx::query_scalar(REQUESTS_OF_RUNS)
            .bind(serde_json::to_string(runs).map_err(|x| corrupt("workflow_requests", 0, x.to_string()))?)
            .fetch_one(&self.pool)
            .await
            .map_err(q("read requests"))
    }

    /// Requests, newest first, filtered.
    pub async fn requests(&self, filter: &RequestFilter) -> Result<Vec<RequestRecord>> {
        // The status is derived over the inner columns; the filters apply to it outside.
        let sql = format!(
            "SELECT * FROM (SELECT x.*, {REQUEST_STATUS} AS status FROM ({REQUEST_SELECT}) x) y \
             WHERE (?1 IS NULL OR y.status = ?1) AND (?2 IS NULL OR y.mv_id = ?2 OR lower(y.object) LIKE ?3 ESCAPE '\\') \
             ORDER BY y.id DESC LIMIT ?4"
        );
        let object = filter.object.as_deref().map(str::trim).filter(|o| !o.is_empty());
        // A number (or mv:number) is an id; anything else matches no id (ids are positive).
        let mv: Option<i64> = object.map(|o| o.strip_prefix("mv:").unwrap_or(o).parse::<i64>().unwrap_or(-1));
        let like = object.map(|o| {
            let escaped = o.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            format!("%{escaped}%")
        });
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&filter.status)
            .bind(mv)
            .bind(like)
            .bind(if filter.limit > 0 { filter.limit } else { i64::MAX })
            .fetch_all(&self.pool)
            .await
            .map_err(q("read requests"))?;
        rows.iter().map(request_from_row).collect()
    }
}

async fn finish_attempt(
    tx: &mut Transaction<'_, Sqlite>,
    attempt: i64,
    outcome: AttemptOutcome,
    reply: &str,
    transcript: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE mail_attempts SET outcome = ?, reply = ?, transcript = ?, ended_at = ? WHERE id = ?")
        .bind(outcome.as_str())
        .bind(reply)
        .bind(transcript)
        .bind(now)
        .bind(attempt)
        .execute(&mut **tx)
        .await
        .map_err(q("record a mail attempt"))?;
    Ok(())
}

#[cfg(test)]
mod tests;
