//! `syncctl mail list|show|send|retry|purge|test`: the notification outbox, and the delivery
//! settings (`[mail]`) turned into a transport. Also the operator notices that stopped runs
//! send.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::anyhow;
use serde_json::json;
use syncctl_core::{Clock, SystemClock};
use syncctl_store::{MailStatus, NewMessage, OutboxMessage, Store, WorkflowWrites};
use syncctl_workflow::{DeliveryReport, RetryPolicy, Secret, Security, SmtpRelay, Transport};

use crate::cli::{MailArgs, MailCommand, MailStatusArg, MailTestArgs};
use crate::config::{MailConfig, Plan, SmtpConfig};
use crate::exit::{CmdResult, Code, Failure};
use crate::output;

/// Runs `syncctl mail ...`.
pub async fn run(plan: &Plan, args: &MailArgs, json: bool) -> CmdResult {
    let store = super::open_store(plan).await?;
    let result = match &args.command {
        MailCommand::List(a) => list(&store, a.status, a.limit, json).await,
        MailCommand::Show(a) => show(&store, a.id, json).await,
        MailCommand::Send(a) => {
            let _lock = store.lock_runs()?;
            let (transport, policy) = transport(plan)?;
            let report = syncctl_workflow::deliver_due(&store, &transport, &policy, &SystemClock, a.limit)
                .await
                .map_err(Failure::stopped)?;
            print_report(&report, &transport, json)
        }
        MailCommand::Retry(a) => {
            let _lock = store.lock_runs()?;
            let (transport, policy) = transport(plan)?;
            let ids = if a.all { Vec::new() } else { a.ids.clone() };
            let queued = store.mail_requeue(&ids, SystemClock.now_ms()).await?;
            if let Some(missing) = ids.iter().find(|i| !queued.contains(i)) {
                return Err(Failure::not_found(anyhow!(
                    "message {missing} is not in the outbox as a dead letter or queued message (see `syncctl mail list`)"
                )));
            }
            let messages = store.mail_by_ids(&queued).await?;
            let report = syncctl_workflow::deliver(&store, &transport, &policy, &SystemClock, messages)
                .await
                .map_err(Failure::stopped)?;
            print_report(&report, &transport, json)
        }
        MailCommand::Purge(a) => {
            let statuses: Vec<MailStatus> = if a.status.is_empty() {
                vec![MailStatus::Delivered]
            } else {
                a.status.iter().map(|s| status(*s)).collect()
            };
            let age = i64::try_from(a.older_than.as_millis()).unwrap_or(i64::MAX);
            let n = store.mail_purge(&statuses, SystemClock.now_ms().saturating_sub(age)).await?;
            if json {
                output::print_json(&json!({ "purged": n }))?;
            } else {
                output::print(&format!("{n} messages purged\n"))?;
            }
            Ok(Code::Success)
        }
        MailCommand::Test(a) => test(plan, &store, a, json).await,
    };
    store.close().await;
    result
}

fn status(s: MailStatusArg) -> MailStatus {
    match s {
        MailStatusArg::Queued => MailStatus::Queued,
        MailStatusArg::Sending => MailStatus::Sending,
        MailStatusArg::Delivered => MailStatus::Delivered,
        MailStatusArg::DeadLetter => MailStatus::DeadLetter,
    }
}

fn mail_section(plan: &Plan) -> Result<&MailConfig, Failure> {
    plan.mail.as_ref().ok_or_else(|| {
        Failure::usage(anyhow!(
            "{} has no [mail] section: there is no sender and nowhere to deliver",
            plan.source.display()
        ))
    })
}

/// The configured transport (the SMTP password read now from its environment variable or
/// file) and retry policy.
pub fn transport(plan: &Plan) -> Result<(Transport, RetryPolicy), Failure> {
    let mail = mail_section(plan)?;
    let policy = RetryPolicy {
        max_attempts: mail.max_attempts,
        initial_delay_ms: i64::try_from(mail.retry_initial_seconds.saturating_mul(1000)).unwrap_or(i64::MAX),
        max_delay_ms: i64::try_from(mail.retry_max_seconds.saturating_mul(1000)).unwrap_or(i64::MAX),
    };
    if let Some(dir) = &mail.directory {
        return Ok((Transport::Directory(dir.clone()), policy));
    }
    let Some(smtp) = &mail.smtp else {
        return Err(Failure::usage(anyhow!(
            "{}: [mail] has neither [mail.smtp] nor directory: nowhere to deliver",
            plan.source.display()
        )));
    };
    let security = Security::parse(&smtp.security)
        .ok_or_else(|| Failure::usage(anyhow!("[mail.smtp] security `{}`", smtp.security)))?;
    let password = match &smtp.username {
        Some(_) => Some(password(smtp)?),
        None => None,
    };
    Ok((
        Transport::Smtp(SmtpRelay {
            host: smtp.host.clone(),
            port: smtp.port,
            security,
            username: smtp.username.clone(),
            password,
            ca_file: smtp.ca_file.clone(),
            timeout: Duration::from_secs(smtp.timeout_seconds),
        }),
        policy,
    ))
}

/// The relay account's password, from `password_env` or `password_file` (first line). Errors
/// name where it was looked for, never what was found.
fn password(smtp: &SmtpConfig) -> Result<Secret, Failure> {
    let value = if let Some(var) = &smtp.password_env {
        std::env::var(var).map_err(|_| {
            Failure::usage(anyhow!("[mail.smtp] password_env: the environment variable `{var}` is not set"))
        })?
    } else if let Some(file) = &smtp.password_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Failure::usage(anyhow!("[mail.smtp] password_file: cannot read {}: {}", file.display(), e.kind()))
        })?;
        text.lines().next().unwrap_or("").to_owned()
    } else {
        return Err(Failure::usage(anyhow!(
            "[mail.smtp] username is set but no password_env or password_file"
        )));
    };
    if value.is_empty() {
        return Err(Failure::usage(anyhow!("[mail.smtp]: the relay account's password is empty")));
    }
    Ok(Secret::new(value))
}

/// Messages delivered between two looks at a stop request, and the most an abandoned
/// service lets through before it stops (see [`deliver_due_stoppable`]).
const MAIL_CHUNK: usize = 10;

/// Delivers what is due, when `[mail]` says where to; `None` without a `[mail]` transport or
/// when nothing is due (then the relay's password is not even read: a `[mail]` kept for the
/// readiness checks alone costs nothing). For a cycle that may be asked to stop, the messages
/// due are delivered [`MAIL_CHUNK`] at a time, each chunk a section an abandon lets end (a message between the
/// server's `250` and the database write would be sent again), and no chunk starts once a stop
/// was requested (the rest stay queued for the next start).
pub async fn deliver_due_stoppable(
    plan: &Plan,
    store: &Store,
    stop: &syncctl_service::StepStop,
) -> Result<Option<DeliveryReport>, Failure> {
    let Some(mail) = &plan.mail else { return Ok(None) };
    if mail.smtp.is_none() && mail.directory.is_none() {
        return Ok(None);
    }
    let due = store.mail_due(SystemClock.now_ms(), 10_000).await?;
    if due.is_empty() {
        return Ok(None);
    }
    let (transport, policy) = transport(plan)?;
    let mut report = DeliveryReport::default();
    for chunk in due.chunks(MAIL_CHUNK) {
        if stop.requested() {
            break;
        }
        let _in_flight = stop.critical();
        let r = syncctl_workflow::deliver(store, &transport, &policy, &SystemClock, chunk.to_vec())
            .await
            .map_err(Failure::stopped)?;
        report.results.extend(r.results);
    }
    Ok(Some(report))
}

/// Queues one message per configured operator for each notice `(subject, body)`; returns the
/// ids queued (none without operators).
pub async fn queue_operator_notices(
    plan: &Plan,
    store: &Store,
    notices: &[(String, String)],
) -> Result<Vec<i64>, Failure> {
    let Some(mail) = &plan.mail else { return Ok(Vec::new()) };
    if mail.operators.is_empty() || notices.is_empty() {
        return Ok(Vec::new());
    }
    let now = SystemClock.now_ms();
    let mut messages = Vec::new();
    for (i, (subject, body)) in notices.iter().enumerate() {
        for op in &mail.operators {
            messages.push(NewMessage {
                activity: "operator".into(),
                recipient_role: "operator".into(),
                sender: mail.sender.clone(),
                recipient: op.clone(),
                subject: syncctl_workflow::render::one_line(subject),
                text_body: body.clone(),
                html_body: None,
                message_id: syncctl_workflow::render::message_id(
                    &mail.sender,
                    &[
                        "operator",
                        &now.to_string(),
                        &std::process::id().to_string(),
                        &i.to_string(),
                        op,
                        subject,
                    ],
                ),
            });
        }
    }
    Ok(store.write_workflow(&WorkflowWrites { messages, ..Default::default() }, None, now).await?)
}

/// Queues operator notices and delivers them at once (commands other than `cycle`, which
/// delivers everything due at its end). A delivery failure is reported, not fatal: the
/// notices stay queued.
pub async fn notify_operators(
    plan: &Plan,
    store: &Store,
    notices: &[(String, String)],
) -> Result<(), Failure> {
    let ids = queue_operator_notices(plan, store, notices).await?;
    if ids.is_empty() {
        return Ok(());
    }
    match transport(plan) {
        Ok((transport, policy)) => {
            let messages = store.mail_by_ids(&ids).await?;
            match syncctl_workflow::deliver(store, &transport, &policy, &SystemClock, messages).await {
                Ok(r) if r.delivered() == ids.len() => {}
                Ok(r) => eprintln!(
                    "warning: {} operator notices not delivered yet ({}); they stay queued",
                    ids.len() - r.delivered(),
                    r.first_error().map(|e| e.to_string()).unwrap_or_default()
                ),
                Err(e) => eprintln!("warning: operator notices queued, not delivered: {e}"),
            }
        }
        Err(e) => eprintln!("warning: operator notices queued, not delivered: {:#}", e.error),
    }
    Ok(())
}

/// A one-line summary of a delivery run, for the cycle table and `mail send`.
pub fn summary(r: &DeliveryReport) -> String {
    let mut s =
        format!("{} delivered, {} to retry, {} dead letters", r.delivered(), r.retrying(), r.dead_lettered());
    if let Some(e) = r.first_error() {
        let _ = write!(s, "  {e}");
    }
    s
}

fn print_report(r: &DeliveryReport, transport: &Transport, json: bool) -> CmdResult {
    if json {
        output::print_json(&json!({
            "to": transport.describe(),
            "delivered": r.delivered(),
            "retrying": r.retrying(),
            "dead_letters": r.dead_lettered(),
            "results": r.results,
        }))?;
    } else if r.results.is_empty() {
        output::print("no message is due\n")?;
    } else {
        let rows: Vec<Vec<String>> = r
            .results
            .iter()
            .map(|m| {
                vec![
                    m.id.to_string(),
                    m.recipient.clone(),
                    m.status.as_str().to_owned(),
                    m.retry_at.map(output::rfc3339).unwrap_or_else(|| "-".into()),
                    m.reply.clone(),
                ]
            })
            .collect();
        let mut s = output::table(&["ID", "TO", "STATUS", "NEXT ATTEMPT", "REPLY"], &rows);
        let _ = writeln!(s, "\nthrough {}: {}", transport.describe(), summary(r));
        if let Some(e) = r.first_error() {
            let _ = writeln!(s, "hint: {}", e.hint());
        }
        output::print(&s)?;
    }
    Ok(if r.retrying() + r.dead_lettered() > 0 { Code::CompletedWithErrors } else { Code::Success })
}

fn message_json(m: &OutboxMessage) -> serde_json::Value {
    json!({
        "id": m.id,
        "request_id": m.request_id,
        "activity": m.activity,
        "recipient_role": m.recipient_role,
        "from": m.sender,
        "to": m.recipient,
        "subject": m.subject,
        "message_id": m.message_id,
        "status": m.status,
        "attempts": m.attempts,
        "next_attempt": (m.status == MailStatus::Queued).then(|| output::rfc3339(m.next_attempt_at)),
        "last_attempt": m.last_attempt_at.map(output::rfc3339),
        "last_reply": m.last_reply,
        "delivered": m.delivered_at.map(output::rfc3339),
        "dead_since": m.dead_at.map(output::rfc3339),
        "created": output::rfc3339(m.created_at),
    })
}

async fn list(store: &Store, status_filter: Option<MailStatusArg>, limit: i64, json: bool) -> CmdResult {
    let messages = store.mail_list(status_filter.map(status), limit).await?;
    if json {
        output::print_json(&serde_json::Value::Array(messages.iter().map(message_json).collect()))?;
        return Ok(Code::Success);
    }
    if messages.is_empty() {
        output::print("the outbox is empty\n")?;
        return Ok(Code::Success);
    }
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.status.as_str().to_owned(),
                m.attempts.to_string(),
                m.recipient.clone(),
                m.subject.clone(),
                output::rfc3339(m.created_at),
                m.last_reply.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut s = output::table(&["ID", "STATUS", "ATTEMPTS", "TO", "SUBJECT", "QUEUED", "LAST REPLY"], &rows);
    let counts = store.mail_counts().await?;
    let _ =
        writeln!(s, "\n{}", counts.iter().map(|(st, n)| format!("{n} {st}")).collect::<Vec<_>>().join(", "));
    output::print(&s)?;
    Ok(Code::Success)
}

async fn show(store: &Store, id: i64, json: bool) -> CmdResult {
    let Some(m) = store.mail_by_ids(&[id]).await?.into_iter().next() else {
        return Err(Failure::not_found(anyhow!("no message {id} in the outbox")));
    };
    let attempts = store.mail_attempts(id).await?;
    if json {
        let mut v = message_json(&m);
        v["text_body"] = json!(m.text_body);
        v["html_body"] = json!(m.html_body);
        v["attempts_log"] = serde_json::to_value(&attempts)?;
        output::print_json(&v)?;
        return Ok(Code::Success);
    }
    let mut s = String::new();
    let _ = writeln!(s, "message {}  {}", m.id, m.status.as_str());
    let _ = writeln!(s, "  from        {}", m.sender);
    let _ = writeln!(s, "  to          {} ({})", m.recipient, m.recipient_role);
    let _ = writeln!(s, "  subject     {}", m.subject);
    let _ = writeln!(s, "  message-id  <{}>", m.message_id);
    let _ = writeln!(
        s,
        "  request     {}",
        m.request_id
            .map_or_else(|| format!("none ({})", m.activity), |r| format!("{r} (activity `{}`)", m.activity))
    );
    let _ = writeln!(s, "  queued      {}", output::rfc3339(m.created_at));
    if m.status == MailStatus::Queued {
        let _ = writeln!(s, "  next        {}", output::rfc3339(m.next_attempt_at));
    }
    if let Some(d) = m.delivered_at {
        let _ = writeln!(s, "  delivered   {}", output::rfc3339(d));
    }
    if let Some(d) = m.dead_at {
        let _ = writeln!(
            s,
            "  dead since  {} (`syncctl mail retry {}` sends it again)",
            output::rfc3339(d),
            m.id
        );
    }
    if let Some(r) = &m.last_reply {
        let _ = writeln!(s, "  last reply  {r}");
    }
    let _ = writeln!(s, "\n{}", m.text_body.trim_end());
    if let Some(h) = &m.html_body {
        let _ = writeln!(s, "\n--- HTML ---\n{}", h.trim_end());
    }
    for a in &attempts {
        let _ = writeln!(
            s,
            "\nattempt {} at {}: {}{}",
            a.id,
            output::rfc3339(a.started_at),
            a.outcome.as_str(),
            a.reply.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        );
        for line in a.transcript.lines() {
            let _ = writeln!(s, "  {line}");
        }
    }
    output::print(&s)?;
    Ok(Code::Success)
}

/// The notification-mail findings of `assess` for `[mail]` (sender and relay rules).
/// The tenant's domains as the last import of a configured Graph connector stored them (no
/// request is made): what the sender's domain is checked against.
async fn stored_tenant(
    plan: &Plan,
    store: &Store,
) -> Result<Option<(String, syncctl_assess::tenant::TenantSnapshot)>, Failure> {
    use syncctl_core::AttrValues;
    for c in plan.connectors.iter().filter(|c| c.type_name == "graph") {
        let Some(id) = store.connector_id(&c.name).await? else { continue };
        let domains = store.cs_domains(id).await?;
        if domains.is_empty() {
            continue;
        }
        let flag = |o: &syncctl_store::SyncCsObject, name: &str| matches!(o.attributes.get(name), Some(AttrValues::Boolean(v)) if v.first() == Some(&true));
        let tenant = syncctl_assess::tenant::TenantSnapshot {
            domains: domains
                .iter()
                .map(|o| syncctl_assess::tenant::TenantDomain {
                    name: o.anchor.to_lowercase(),
                    verified: flag(o, "isVerified"),
                    initial: flag(o, "isInitial"),
                    default: flag(o, "isDefault"),
                    authentication: o
                        .attributes
                        .first_text("authenticationType")
                        .unwrap_or("Managed")
                        .to_owned(),
                })
                .collect(),
            objects: Vec::new(),
        };
        return Ok(Some((c.name.clone(), tenant)));
    }
    Ok(None)
}

fn mail_findings(
    mail: &MailConfig,
    tenant: Option<syncctl_assess::tenant::TenantSnapshot>,
) -> Vec<(String, String, String)> {
    let settings = super::assess::mail_settings_of(mail);
    let assessor = syncctl_assess::Assessor::new(syncctl_assess::AssessOptions {
        mail: Some(settings),
        tenant,
        ..Default::default()
    });
    assessor
        .finish(String::new(), String::new())
        .findings
        .into_iter()
        .filter(|f| f.rule.starts_with("mail-"))
        .map(|f| (f.severity.as_str().to_owned(), f.rule.to_owned(), f.message))
        .collect()
}

async fn test(plan: &Plan, store: &Store, args: &MailTestArgs, json: bool) -> CmdResult {
    let mail = mail_section(plan)?;
    let to = match syncctl_workflow::Recipient::parse(&args.to) {
        Ok(syncctl_workflow::Recipient::Address(a)) => a,
        _ => return Err(Failure::usage(anyhow!("--to `{}` is not a mail address", args.to))),
    };
    let tenant = stored_tenant(plan, store).await?;
    let checked_against = tenant.as_ref().map(|(name, _)| name.clone());
    let findings = mail_findings(mail, tenant.map(|(_, t)| t));
    let (transport, _) = transport(plan)?;
    let _lock = store.lock_runs()?;
    let now = SystemClock.now_ms();
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let message = NewMessage {
        activity: "mail-test".into(),
        recipient_role: "address".into(),
        sender: mail.sender.clone(),
        recipient: to.clone(),
        subject: "syncctl test message".into(),
        text_body: format!(
            "This is a test message from syncctl (`syncctl mail test`), sent from {} through {} at {}.\n\
             If you read it, notification mail works.\n",
            mail.sender,
            transport.describe(),
            output::rfc3339(now)
        ),
        html_body: None,
        message_id: syncctl_workflow::render::message_id(
            &mail.sender,
            &["mail-test", &now.to_string(), &std::process::id().to_string(), &host, &to],
        ),
    };
    let ids = store
        .write_workflow(&WorkflowWrites { messages: vec![message], ..Default::default() }, None, now)
        .await?;
    let messages = store.mail_by_ids(&ids).await?;
    // One attempt: a failed test goes to the dead-letter list rather than being retried by
    // the next cycle.
    let once = RetryPolicy { max_attempts: 1, initial_delay_ms: 0, max_delay_ms: 0 };
    let report = syncctl_workflow::deliver(store, &transport, &once, &SystemClock, messages)
        .await
        .map_err(Failure::stopped)?;
    let attempts = match ids.first() {
        Some(id) => store.mail_attempts(*id).await?,
        None => Vec::new(),
    };
    let transcript = attempts.last().map(|a| a.transcript.clone()).unwrap_or_default();
    let error = report.first_error().cloned();
    let errors_in_checks = findings.iter().any(|(sev, _, _)| sev == "error");
    if json {
        output::print_json(&json!({
            "to": to,
            "through": transport.describe(),
            "delivered": report.delivered() == 1,
            "reply": report.results.first().map(|r| r.reply.clone()),
            "error": error.as_ref().map(|e| e.to_string()),
            "hint": error.as_ref().map(|e| e.hint()),
            "checks": findings.iter().map(|(sev, rule, msg)| json!({"severity": sev, "rule": rule, "message": msg})).collect::<Vec<_>>(),
            "checked_against_tenant_of": checked_against,
            "transcript": transcript,
        }))?;
    } else {
        let mut s = String::new();
        if findings.is_empty() {
            match &checked_against {
                Some(c) => {
                    let _ = writeln!(
                        s,
                        "sender check: {} is in a verified domain of the tenant (as `{c}` last imported it) and passes the relay rules",
                        mail.sender
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "sender check: {} passes the relay rules that can be checked offline (no Graph connector has imported the tenant's domains: run a cycle to check the domain is verified)",
                        mail.sender
                    );
                }
            }
        }
        for (sev, rule, msg) in &findings {
            let _ = writeln!(s, "sender check: {sev} {rule}: {msg}");
        }
        let _ = writeln!(s, "\ntranscript:");
        for line in transcript.lines() {
            let _ = writeln!(s, "  {line}");
        }
        match &error {
            None => {
                let reply = report.results.first().map(|r| r.reply.clone()).unwrap_or_default();
                let _ =
                    writeln!(s, "\ntest message delivered to {to} through {}: {reply}", transport.describe());
            }
            Some(e) => {
                let _ = writeln!(s, "\ntest message NOT delivered: {e}\nhint: {}", e.hint());
            }
        }
        output::print(&s)?;
    }
    match error {
        Some(e) => Err(Failure::stopped(anyhow!("the test message was not delivered: {e}"))),
        None if errors_in_checks => Ok(Code::CompletedWithErrors),
        None => Ok(Code::Success),
    }
}
