//! `syncctl serve`: starts the service of [`syncctl_service`] with the same cycle as
//! `syncctl cycle` ([`super::cycle::run_cycle`]); `syncctl serve status|run-now|pause|resume`
//! asks the running one over its HTTP control API.

use anyhow::{Context as _, anyhow};
use syncctl_service::{
    Control, CycleReport, CycleRunner, InstanceLock, Metrics, Scheduler, ServiceSettings, StepStop, http,
};

use crate::cli::{ServeAction, ServeArgs};
use crate::config::Plan;
use crate::exit::{CmdResult, Code, Failure};
use crate::output;

/// The cycle the service runs: `syncctl cycle`'s, without progress bars; the assessment is
/// `syncctl assess`'s over the configured connectors.
struct PlanCycle<'a>(&'a Plan);

impl CycleRunner for PlanCycle<'_> {
    async fn run_cycle(&self, full: bool, stop: StepStop) -> Result<CycleReport, String> {
        match super::cycle::run_cycle(self.0, full, false, &stop).await {
            Ok(o) => Ok(CycleReport {
                runs: o.steps.iter().map(|s| s.run_id).filter(|id| *id > 0).collect(),
                ok: o.code == Code::Success,
                summary: o.text(),
                reasons: o.reasons.clone(),
                stopped_after: o.stopped_after.clone(),
            }),
            Err(f) => Err(format!("{:#}", f.error)),
        }
    }

    async fn run_assess(&self) -> Result<bool, String> {
        super::assess::assess_and_store(self.0).await.map_err(|f| format!("{:#}", f.error))
    }
}

/// Runs `syncctl serve` or one of its requests.
pub async fn run(plan: &Plan, args: &ServeArgs, json: bool) -> CmdResult {
    match &args.action {
        Some(action) => request(&plan.service, action, json).await,
        None => serve(plan, args.once).await,
    }
}

#[allow(clippy::disallowed_methods)]
fn started_text() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Counts SIGTERM and SIGINT into `tx` (1 at the first, 2 at the second), the handlers
/// installed once so that no signal between the two is lost.
async fn count_stop_signals(tx: tokio::sync::watch::Sender<u32>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        {
            for n in 1..=2u32 {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                announce(n);
                let _ = tx.send(n);
            }
            return;
        }
    }
    for n in 1..=2u32 {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        announce(n);
        let _ = tx.send(n);
    }
}

fn announce(n: u32) {
    if n == 1 {
        tracing::info!("a stop signal arrived: the running step ends, then the service stops");
    } else {
        tracing::info!("a second stop signal arrived: the running step is abandoned");
    }
}

async fn serve(plan: &Plan, once: bool) -> CmdResult {
    let settings = plan.service.clone();
    let store = super::open_store(plan).await?;
    let lock = InstanceLock::acquire(&plan.store_path, std::process::id(), &started_text())
        .map_err(|e| Failure::stopped(anyhow!(e)))?;
    let token = match &settings.token {
        Some(t) => {
            Some(t.read().map_err(|e| Failure::usage(anyhow!("{}: {e}", plan.source.display())))?.into())
        }
        None => None,
    };
    let control = Control::new(std::process::id());
    let metrics = std::sync::Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {} ([service] listen)", settings.listen))
        .map_err(Failure::stopped)?;
    tracing::info!(
        "syncctl serve: pid {}, lock {}, listening on http://{}, a cycle {}",
        std::process::id(),
        lock.path().display(),
        settings.listen,
        settings.describe()
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state =
        http::AppState { store: store.clone(), control: control.clone(), metrics: metrics.clone(), token };
    let mut http_stop = stop_rx.clone();
    let server = tokio::spawn(http::serve(listener, state, async move {
        let _ = http_stop.wait_for(|s| *s).await;
    }));
    // The first signal stops the service after the running step, the second abandons it.
    let (signal_tx, signal_rx) = tokio::sync::watch::channel(0u32);
    let signals = tokio::spawn(count_stop_signals(signal_tx));
    let (mut first, mut second) = (signal_rx.clone(), signal_rx);
    let result = Scheduler::new(settings, store.clone(), control, metrics)
        .run(
            &PlanCycle(plan),
            once,
            async move {
                let _ = first.wait_for(|n| *n >= 1).await;
            },
            async move {
                let _ = second.wait_for(|n| *n >= 2).await;
            },
        )
        .await;
    let _ = stop_tx.send(true);
    signals.abort();
    match server.await {
        Ok(Err(e)) => tracing::warn!("{e}"),
        Err(e) => tracing::warn!("the HTTP server task failed: {e}"),
        Ok(Ok(())) => {}
    }
    store.close().await;
    drop(lock);
    result.map_err(|e| Failure::stopped(anyhow!(e)))?;
    tracing::info!("syncctl serve stopped");
    Ok(Code::Success)
}

async fn request(settings: &ServiceSettings, action: &ServeAction, json: bool) -> CmdResult {
    let mut addr = settings.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let (method, path) = match action {
        ServeAction::Status => (reqwest::Method::GET, "/api/status".to_owned()),
        ServeAction::RunNow { full } => (reqwest::Method::POST, format!("/api/run-now?full={full}")),
        ServeAction::Pause => (reqwest::Method::POST, "/api/pause".to_owned()),
        ServeAction::Resume => (reqwest::Method::POST, "/api/resume".to_owned()),
    };
    let url = format!("http://{addr}{path}");
    let mut req = reqwest::Client::new().request(method, &url);
    if let Some(t) = &settings.token {
        req = req.bearer_auth(t.read().map_err(|e| Failure::usage(anyhow!(e)))?);
    }
    let resp = req
        .send()
        .await
        .with_context(|| {
            format!("no syncctl serve answers on http://{addr} (is it running with this config?)")
        })
        .map_err(Failure::stopped)?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .with_context(|| format!("{url} answered {status} without JSON"))
        .map_err(Failure::stopped)?;
    if !status.is_success() {
        return Err(Failure::stopped(anyhow!("{url} answered {status}: {body}")));
    }
    if json {
        output::print_json(&body)?;
    } else {
        output::print(&human(action, &body))?;
    }
    Ok(Code::Success)
}

fn human(action: &ServeAction, body: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    match action {
        ServeAction::RunNow { .. } => s.push_str("a cycle starts now\n"),
        ServeAction::Pause => {
            s.push_str("paused: scheduled cycles are skipped until `syncctl serve resume`\n")
        }
        ServeAction::Resume => s.push_str("resumed\n"),
        ServeAction::Status => {
            let svc = &body["service"];
            let _ = writeln!(
                s,
                "state {} (pid {}), {} cycles since start",
                svc["state"], svc["pid"], svc["cycles"]
            );
            if let Some(l) = svc.get("last_cycle").filter(|l| !l.is_null()) {
                let _ = writeln!(
                    s,
                    "last cycle (full: {}, ok: {}):\n{}",
                    l["full"],
                    l["ok"],
                    l["summary"].as_str().unwrap_or("")
                );
            }
            let pending: i64 = body["pending_exports"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p["count"].as_i64()).sum())
                .unwrap_or(0);
            let _ = writeln!(s, "{pending} pending exports");
            for m in body["mail_outbox"].as_array().into_iter().flatten() {
                let _ = writeln!(s, "mail {}: {}", m["status"].as_str().unwrap_or(""), m["count"]);
            }
            let a = &body["assess"];
            if a.is_null() {
                s.push_str("no readiness assessment stored yet\n");
            } else {
                let _ = writeln!(
                    s,
                    "latest readiness assessment ({}): {}, {} objects, {} errors, {} warnings, {} infos",
                    a["origin"].as_str().unwrap_or(""),
                    a["verdict"].as_str().unwrap_or(""),
                    a["objects"],
                    a["errors"],
                    a["warnings"],
                    a["infos"]
                );
            }
        }
    }
    s
}
