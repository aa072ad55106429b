//! The HTTP face of the service (axum): health, metrics, status, control.
//!
//! | route | method | what |
//! |---|---|---|
//! | `/healthz` | GET | 200 while the process serves |
//! | `/readyz` | GET | 200 when the database answers, 503 otherwise |
//! | `/metrics` | GET | Prometheus text format |
//! | `/` | GET | the status page (HTML) |
//! | `/api/status` | GET | status, recent runs, pending exports, mail outbox, the latest assess summary (JSON) |
//! | `/api/run-now` | POST | start a cycle now (`?full=true` for a full one) |
//! | `/api/pause`, `/api/resume` | POST | skip scheduled cycles, or run them again |
//!
//! With a token configured every route but none needs `Authorization: Bearer <token>`.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use syncctl_store::{MailStatus, Store};

use crate::metrics::Metrics;
use crate::scheduler::Control;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The database (read only here).
    pub store: Store,
    /// The scheduler's control block.
    pub control: Arc<Control>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The bearer token every request must carry, when set.
    pub token: Option<Arc<str>>,
}

/// The router of every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/status", get(api_status))
        .route("/api/run-now", post(run_now))
        .route("/api/pause", post(pause))
        .route("/api/resume", post(resume))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Compares without stopping at the first different byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(s): State<AppState>, headers: HeaderMap, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same(given.as_bytes(), token.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

fn internal(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.runs(None, 1).await {
        Ok(_) => "ready\n".into_response(),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("the database does not answer: {e}\n")).into_response()
        }
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    match s.metrics.render(&s.store, s.control.is_paused()).await {
        Ok(text) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        Err(e) => internal(e),
    }
}

async fn status_json(s: &AppState) -> crate::Result<serde_json::Value> {
    let runs = s.store.runs(None, 30).await?;
    let mut by: std::collections::BTreeMap<(String, String, String), i64> = std::collections::BTreeMap::new();
    for p in s.store.pending_counts().await? {
        let c = s.store.connector_name(p.connector_id).await?.unwrap_or_default();
        *by.entry((c, p.operation.as_str().to_owned(), p.status)).or_default() += p.count;
    }
    let pending: Vec<_> = by
        .into_iter()
        .map(|((c, op, st), n)| json!({"connector": c, "operation": op, "status": st, "count": n}))
        .collect();
    let holds: Vec<_> = runs
        .iter()
        .filter(|r| r.status.contains("deletion-threshold"))
        .map(|r| json!({"run": r.id, "connector": r.connector, "notes": r.notes}))
        .collect();
    let mail: Vec<_> =
        s.store.mail_counts().await?.into_iter().map(|(st, n)| json!({"status": st, "count": n})).collect();
    let dead: Vec<_> = s
        .store
        .mail_list(Some(MailStatus::DeadLetter), 50)
        .await?
        .into_iter()
        .map(|m| json!({"id": m.id, "to": m.recipient, "subject": m.subject, "error": m.last_reply}))
        .collect();
    let assess = s.store.latest_assess_summary().await?;
    Ok(json!({
        "service": s.control.status(),
        "assess": assess,
        "runs": runs,
        "pending_exports": pending,
        "deletion_holds": holds,
        "mail_outbox": mail,
        "dead_letters": dead,
    }))
}

async fn api_status(State(s): State<AppState>) -> Response {
    match status_json(&s).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct RunNow {
    #[serde(default)]
    full: bool,
}

async fn run_now(State(s): State<AppState>, Query(q): Query<RunNow>) -> Response {
    s.control.run_now(q.full);
    (StatusCode::ACCEPTED, axum::Json(json!({"accepted": true, "full": q.full}))).into_response()
}

async fn pause(State(s): State<AppState>) -> Response {
    s.control.pause();
    axum::Json(json!({"paused": true})).into_response()
}

async fn resume(State(s): State<AppState>) -> Response {
    s.control.resume();
    axum::Json(json!({"paused": false})).into_response()
}

/// `v[k]`, or null.
fn g<'a>(v: &'a serde_json::Value, k: &str) -> &'a serde_json::Value {
    v.get(k).unwrap_or(&serde_json::Value::Null)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn table(out: &mut String, id: &str, title: &str, head: &[&str], rows: &[Vec<String>]) {
    let _ = write!(out, "<h2>{title}</h2><table id=\"{id}\"><tr>");
    for h in head {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>");
    }
    if rows.is_empty() {
        let _ = write!(out, "<tr><td colspan=\"{}\">none</td></tr>", head.len());
    }
    out.push_str("</table>");
}

async fn status_page(State(s): State<AppState>) -> Response {
    let v = match status_json(&s).await {
        Ok(v) => v,
        Err(e) => return internal(e),
    };
    let st = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let list = |k: &str| v.get(k).and_then(|x| x.as_array()).cloned().unwrap_or_default();
    let svc = v.get("service").cloned().unwrap_or_default();
    let mut out = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>syncctl serve</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}\
         td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}</style></head><body><h1>syncctl serve</h1>",
    );
    let _ = write!(
        out,
        "<p id=\"state\">state: <b>{}</b>, pid {}, {} cycles since start</p>",
        esc(&st(g(&svc, "state"))),
        esc(&st(g(&svc, "pid"))),
        esc(&st(g(&svc, "cycles")))
    );
    if let Some(last) = svc.get("last_cycle").filter(|l| !l.is_null()) {
        let reasons: Vec<String> = g(last, "reasons")
            .as_array()
            .map(|a| a.iter().map(|r| format!("<li>{}</li>", esc(&st(r)))).collect())
            .unwrap_or_default();
        if !reasons.is_empty() {
            let _ = write!(
                out,
                "<h2>Why the last cycle ran in full</h2><ul id=\"full-reasons\">{}</ul>",
                reasons.join("")
            );
        }
        if let Some(step) = g(last, "stopped_after").as_str() {
            let _ = write!(
                out,
                "<p id=\"stopped-after\">the last cycle stopped after the step {} (stop signal)</p>",
                esc(step)
            );
        }
        let _ =
            write!(out, "<h2>Last cycle</h2><pre id=\"last-cycle\">{}</pre>", esc(&st(g(last, "summary"))));
    }
    let runs: Vec<Vec<String>> = list("runs")
        .iter()
        .map(|r| {
            let c = g(r, "counts");
            vec![
                st(g(r, "id")),
                st(g(r, "connector")),
                st(g(r, "profile")),
                st(g(r, "status")),
                format!("+{} ~{} >{} -{}", g(c, "adds"), g(c, "updates"), g(c, "renames"), g(c, "deletes")),
                st(g(c, "errors")),
                st(g(r, "notes")),
            ]
        })
        .collect();
    table(
        &mut out,
        "runs",
        "Recent runs",
        &["run", "connector", "profile", "status", "changes", "errors", "notes"],
        &runs,
    );
    let rows: Vec<Vec<String>> = list("pending_exports")
        .iter()
        .map(|p| vec![st(g(p, "connector")), st(g(p, "operation")), st(g(p, "status")), st(g(p, "count"))])
        .collect();
    table(&mut out, "pending", "Pending exports", &["connector", "operation", "status", "count"], &rows);
    let rows: Vec<Vec<String>> = list("deletion_holds")
        .iter()
        .map(|h| vec![st(g(h, "run")), st(g(h, "connector")), st(g(h, "notes"))])
        .collect();
    table(&mut out, "holds", "Deletion holds awaiting approval", &["run", "connector", "notes"], &rows);
    let rows: Vec<Vec<String>> =
        list("mail_outbox").iter().map(|m| vec![st(g(m, "status")), st(g(m, "count"))]).collect();
    table(&mut out, "outbox", "Mail outbox", &["status", "count"], &rows);
    let rows: Vec<Vec<String>> = list("dead_letters")
        .iter()
        .map(|m| vec![st(g(m, "id")), st(g(m, "to")), st(g(m, "subject")), st(g(m, "error"))])
        .collect();
    table(&mut out, "dead-letters", "Dead letters", &["id", "to", "subject", "error"], &rows);
    assess_section(&mut out, g(&v, "assess"));
    out.push_str("</body></html>\n");
    Html(out).into_response()
}

/// The latest readiness assessment: when, by whom, over how many objects, the verdict, the
/// findings by severity and by rule.
fn assess_section(out: &mut String, a: &serde_json::Value) {
    out.push_str("<h2>Latest readiness assessment</h2>");
    if a.is_null() {
        out.push_str(
            "<p id=\"assess\">none yet: the service runs one after each full cycle and at least daily (`[service] assess_every`), and `syncctl assess` stores one</p>",
        );
        return;
    }
    let n = |k: &str| g(a, k).as_u64().unwrap_or(0);
    let at = g(a, "at").as_i64().and_then(chrono::DateTime::from_timestamp_millis);
    let when = at.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default();
    let sources: Vec<String> = g(a, "sources")
        .as_array()
        .map(|s| s.iter().filter_map(|x| x.as_str()).map(str::to_owned).collect())
        .unwrap_or_default();
    let _ = write!(
        out,
        "<p id=\"assess\">verdict <b>{}</b>, {} at {} over {} objects of {}: <b>{}</b> errors, <b>{}</b> warnings, <b>{}</b> infos</p>",
        esc(g(a, "verdict").as_str().unwrap_or("")),
        if g(a, "origin") == "serve" { "run by the service" } else { "run by syncctl assess" },
        esc(&when),
        n("objects"),
        esc(&sources.join(", ")),
        n("errors"),
        n("warnings"),
        n("infos")
    );
    let rows: Vec<Vec<String>> = g(a, "by_rule")
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| {
                    vec![
                        g(r, "rule").as_str().unwrap_or("").to_owned(),
                        g(r, "severity").as_str().unwrap_or("").to_owned(),
                        g(r, "count").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(out, "assess-rules", "Findings by rule", &["rule", "severity", "findings"], &rows);
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| crate::ServiceError::Http { addr, detail: e.to_string() })
}
