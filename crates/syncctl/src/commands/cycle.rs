//! `syncctl cycle [--full]`: import on every connector, then sync, then export, in Entra
//! Connect's order (import AD, import cloud, sync AD, sync cloud, export cloud), each step a run
//! in run history, then the delivery of the notification mail that is due, with a progress
//! display and a closing summary.
//!
//! [`run_cycle`] is the cycle itself, shared with `syncctl demo`; [`run`] prints its outcome.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::anyhow;
use serde_json::json;
use syncctl_core::{Clock as _, ImportMode, SystemClock};
use syncctl_engine::{
    DeletionThreshold, ExportOptions, ImportOptions, SyncMode, SyncOptions, run_export, run_import, run_sync,
};
use syncctl_store::RunId;

use syncctl_service::StepStop;

use crate::cli::CycleArgs;
use crate::config::Plan;
use crate::exit::{CmdResult, Code, Failure};
use crate::logging::Progress;
use crate::output;

/// One step of the cycle, for the summary.
#[derive(Clone, Debug)]
pub struct Step {
    /// `import`, `sync`, `export` or `mail`.
    pub step: &'static str,
    /// The connector.
    pub connector: String,
    /// The run profile that ran.
    pub profile: String,
    /// The run status.
    pub status: String,
    /// The run's id in run history.
    pub run_id: RunId,
    /// What it did, in one line.
    pub what: String,
}

/// Deletes the deletion threshold held for one target.
#[derive(Clone, Debug)]
pub struct HeldDeletes {
    /// The target connector.
    pub connector: String,
    /// What a person recognizes each held delete by.
    pub deletes: Vec<String>,
    /// The token that releases exactly these deletes, once.
    pub token: String,
}

/// What a cycle did.
#[derive(Clone, Debug)]
pub struct CycleOutcome {
    /// Its steps, in order.
    pub steps: Vec<Step>,
    /// Pending exports left after it.
    pub pending: usize,
    /// Of those, exported and waiting for the next import of their target to confirm them.
    pub awaiting_confirmation: usize,
    /// How many configured connectors take exports.
    pub targets: usize,
    /// Deletes held by the deletion threshold, per target.
    pub held: Vec<HeldDeletes>,
    /// The worst exit code of its runs.
    pub code: Code,
    /// True when notification workflows are configured.
    pub workflows: bool,
    /// What bringing the sets in line with the configuration did.
    pub set_notes: Vec<String>,
    /// Requests made by set transitions in this cycle.
    pub requests: i64,
    /// Messages still queued after the cycle's delivery.
    pub mail_queued: usize,
    /// Why connectors ran a full import and a full sync in a delta cycle (their settings
    /// changed since their last completed run), one line each.
    pub reasons: Vec<String>,
    /// Set when a stop request ended the cycle early: the last step that ran (`import corp`),
    /// or `none` when it stopped before the first.
    pub stopped_after: Option<String>,
}

impl CycleOutcome {
    /// The closing summary: one line per step, the pending exports left, the held deletes.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<7} {:<14} {:<13} {:<36} {:<5} WHAT",
            "STEP", "CONNECTOR", "PROFILE", "STATUS", "RUN"
        );
        for st in &self.steps {
            let _ = writeln!(
                s,
                "{:<7} {:<14} {:<13} {:<36} {:<5} {}",
                st.step, st.connector, st.profile, st.status, st.run_id, st.what
            );
        }
        for r in &self.reasons {
            let _ = writeln!(s, "{r}");
        }
        if let Some(after) = &self.stopped_after {
            let _ = writeln!(
                s,
                "stopped after the step `{after}` on request (stop signal): the next cycle goes on from there"
            );
        }
        if self.targets == 0 {
            let _ = writeln!(
                s,
                "\nno configured connector takes exports: {} pending exports (syncctl export --preview)",
                self.pending
            );
        } else {
            let _ = writeln!(
                s,
                "\n{} pending exports to send, {} exported and waiting for the next import to confirm them (syncctl export --preview)",
                self.pending - self.awaiting_confirmation,
                self.awaiting_confirmation
            );
        }
        for a in self.approvals() {
            let _ = writeln!(s, "{a}");
        }
        if self.workflows {
            for n in &self.set_notes {
                let _ = writeln!(s, "sets: {n}");
            }
            let _ = writeln!(
                s,
                "{} requests made by set transitions (syncctl requests); {} messages queued (syncctl mail list)",
                self.requests, self.mail_queued
            );
        }
        s
    }

    /// `{"steps": [...], "pending_exports": N, "approvals": [...]}`.
    pub fn json(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .steps
            .iter()
            .map(|s| {
                json!({"step": s.step, "connector": s.connector, "profile": s.profile, "status": s.status,
                       "run_id": s.run_id, "summary": s.what})
            })
            .collect();
        json!({"steps": list, "pending_exports": self.pending,
               "awaiting_confirmation": self.awaiting_confirmation, "approvals": self.approvals(),
               "sets": self.set_notes, "requests": self.requests, "mail_queued": self.mail_queued,
               "full_reasons": self.reasons, "stopped_after": self.stopped_after})
    }

    /// One line per target with held deletes: how many, and the commands that review and
    /// release them.
    fn approvals(&self) -> Vec<String> {
        self.held
            .iter()
            .map(|h| {
                format!(
                    "{} deletes held for `{}`: review with `syncctl export --preview`, release with `syncctl export --approve-deletes {}`",
                    h.deletes.len(),
                    h.connector,
                    h.token
                )
            })
            .collect()
    }
}

/// Runs the cycle and prints its summary.
pub async fn run(plan: &Plan, args: &CycleArgs, json: bool) -> CmdResult {
    let outcome = run_cycle(plan, args.full, !json, &StepStop::default()).await?;
    if json {
        output::print_json(&outcome.json())?;
    } else {
        output::print(&outcome.text())?;
    }
    Ok(outcome.code)
}

/// One whole cycle over every configured connector: import (sources, then targets), sync
/// (sources, then targets), export to every target; full imports and syncs when `full`, else
/// delta (falling back to full where a connector has no delta import, watermark or sync mark).
/// `progress`: draw a spinner per step on a terminal.
///
/// A connector whose settings fingerprint ([`crate::registry::fingerprint`]) differs from the
/// one recorded at its last completed full import and sync runs a full import and a full sync
/// in a delta cycle too (Entra Connect does so after a connector's configuration changes);
/// the new fingerprint is recorded once both completed. `stop`: checked before each step; once
/// requested, the cycle ends after the running step ([`CycleOutcome::stopped_after`]).
pub async fn run_cycle(
    plan: &Plan,
    full: bool,
    progress: bool,
    stop: &StepStop,
) -> Result<CycleOutcome, Failure> {
    if plan.connectors.is_empty() {
        return Err(Failure::usage(anyhow!("{} configures no connector", plan.source.display())));
    }
    let rules = super::sync::load_rules(plan)?;
    let store = super::open_store(plan).await?;
    // Settings fingerprints: a changed one forces a full import and a full sync of that
    // connector; a missing one (a new connector, or a database from before fingerprints) is
    // recorded after the connector's first completed import and sync.
    let mut forced: BTreeSet<String> = BTreeSet::new();
    let mut to_record: BTreeSet<String> = BTreeSet::new();
    let mut reasons = Vec::new();
    for c in &plan.connectors {
        match store.settings_fingerprint(&c.name).await? {
            Some(f) if f == c.fingerprint => {}
            Some(_) => {
                let reason = format!(
                    "connector `{}`: its settings changed since its last completed run: full import and full sync",
                    c.name
                );
                tracing::info!("{reason}");
                reasons.push(reason);
                forced.insert(c.name.clone());
                to_record.insert(c.name.clone());
            }
            None => {
                to_record.insert(c.name.clone());
            }
        }
    }
    let connectors = super::sync::sync_connectors(plan, &store).await?;
    let mut steps: Vec<Step> = Vec::new();
    let mut code = Code::Success;
    // Operator notices of runs that stop, queued and delivered with the cycle's mail.
    let mut notices: Vec<(String, String)> = Vec::new();
    // Connectors whose import completed in this cycle (a full one where forced).
    let mut imported: BTreeSet<String> = BTreeSet::new();
    let mut stopped_after: Option<String> = None;
    let halt = |steps: &[Step]| -> Option<String> {
        stop.requested().then(|| {
            steps.last().map_or_else(|| "none".to_owned(), |s| format!("{} {}", s.step, s.connector))
        })
    };

    // 1. Import, sources first, then targets.
    for c in &connectors {
        if let Some(after) = halt(&steps) {
            stopped_after = Some(after);
            break;
        }
        let spec = plan
            .connector(&c.name)
            .ok_or_else(|| Failure::usage(anyhow!("connector `{}` vanished", c.name)))?;
        let mut built = spec.build().map_err(Failure::usage)?;
        let caps = built.connector.capabilities();
        let mode = if full || forced.contains(&c.name) || !caps.delta_import {
            ImportMode::Full
        } else {
            ImportMode::Delta
        };
        let bar = Progress::new(progress, &format!("{mode} of {}", c.name));
        let report = run_import(
            &store,
            built.connector.as_mut(),
            built.kind,
            mode,
            &ImportOptions::default(),
            &SystemClock,
            &bar,
        )
        .await;
        bar.finish();
        let report = report?;
        worst(Code::for_run_status(&report.status), &mut code);
        if completed(&report.status) && (mode == ImportMode::Full || !forced.contains(&c.name)) {
            imported.insert(c.name.clone());
        }
        if Code::for_run_status(&report.status) == Code::Stopped {
            let mut notes = report.notes.clone();
            notes.extend(report.fault.clone());
            notices.push(super::sync::stopped_notice(
                plan,
                &report.profile.to_string(),
                &c.name,
                report.run_id,
                &report.status,
                &notes,
            ));
        }
        let k = &report.counts;
        steps.push(Step {
            step: "import",
            connector: c.name.clone(),
            profile: report.profile.to_string(),
            status: report.status.clone(),
            run_id: report.run_id,
            what: format!(
                "+{} ~{} >{} -{} !{}{}",
                k.adds,
                k.updates,
                k.renames,
                k.deletes,
                k.errors,
                report.fault.as_deref().map(|f| format!("  {f}")).unwrap_or_default()
            ),
        });
    }

    // 2. Sync, sources first, then targets (each import above held the run lock itself; sync
    // and export hold it together).
    let _lock = store.lock_runs()?;
    let (hook, set_notes) = super::sync::workflow_hook(plan, &store).await?;
    let options = SyncOptions { error_limit: plan.sync.error_limit, hook, ..SyncOptions::default() };
    let mut sync_runs = Vec::new();
    for c in connectors.iter().filter(|_| stopped_after.is_none()) {
        if let Some(after) = halt(&steps) {
            stopped_after = Some(after);
            break;
        }
        let mode = if full || forced.contains(&c.name) { SyncMode::Full } else { SyncMode::Delta };
        let bar = Progress::new(progress, &format!("{mode} of {}", c.name));
        let report = run_sync(&store, &rules, c, &connectors, mode, &options, &SystemClock, &bar).await;
        bar.finish();
        let report = report?;
        worst(Code::for_run_status(&report.status), &mut code);
        sync_runs.push(report.run_id);
        if let Some(spec) = plan.connector(&c.name).filter(|_| {
            completed(&report.status) && imported.contains(&c.name) && to_record.contains(&c.name)
        }) {
            store.record_settings_fingerprint(&c.name, &spec.fingerprint, SystemClock.now_ms()).await?;
        }
        if Code::for_run_status(&report.status) == Code::Stopped {
            notices.push(super::sync::stopped_notice(
                plan,
                &report.profile.to_string(),
                &c.name,
                report.run_id,
                &report.status,
                &report.notes,
            ));
        }
        let k = &report.counts;
        steps.push(Step {
            step: "sync",
            connector: c.name.clone(),
            profile: report.profile.to_string(),
            status: report.status.clone(),
            run_id: report.run_id,
            what: format!(
                "{} read, {} projected, {} joined, {} disconnected; exports staged +{} ~{} -{}; !{}{}",
                k.processed,
                k.projected,
                k.joined,
                k.disconnected,
                k.export_adds,
                k.export_updates,
                k.export_deletes,
                k.errors,
                if k.warnings > 0 {
                    format!(" ?{} (syncctl runs --errors {})", k.warnings, report.run_id)
                } else {
                    String::new()
                }
            ),
        });
    }

    let timed =
        if stopped_after.is_none() { super::sync::time_based_sets(plan, &store).await? } else { None };
    let requests = store.requests_of_runs(&sync_runs).await?
        + timed.as_ref().map_or(0, |e| i64::try_from(e.requests).unwrap_or(0));

    // 3. Export to every target.
    let export_options = ExportOptions {
        staging: plan.sync.staging,
        threshold: DeletionThreshold {
            count: plan.sync.deletion_threshold,
            percent: plan.sync.deletion_threshold_percent,
        },
        ..ExportOptions::default()
    };
    let mut held = Vec::new();
    for c in connectors.iter().filter(|c| c.target && stopped_after.is_none()) {
        if let Some(after) = halt(&steps) {
            stopped_after = Some(after);
            break;
        }
        let spec = plan
            .connector(&c.name)
            .ok_or_else(|| Failure::usage(anyhow!("connector `{}` vanished", c.name)))?;
        let mut built = spec.build().map_err(Failure::usage)?;
        let report = run_export(&store, built.connector.as_mut(), c, &export_options, &SystemClock).await?;
        worst(Code::for_run_status(&report.status), &mut code);
        if Code::for_run_status(&report.status) == Code::Stopped {
            let mut notes = report.notes.clone();
            if let Some(t) = &report.approval_token {
                notes.push(format!(
                    "{} deletes held: review them with `syncctl export --preview`, release them with `syncctl export --approve-deletes {t}`",
                    report.held_deletes.len()
                ));
            }
            notices.push(super::sync::stopped_notice(
                plan,
                "export",
                &c.name,
                report.run_id,
                &report.status,
                &notes,
            ));
        }
        if let Some(t) = &report.approval_token {
            held.push(HeldDeletes {
                connector: c.name.clone(),
                deletes: report.held_deletes.clone(),
                token: t.clone(),
            });
        }
        let k = &report.counts;
        steps.push(Step {
            step: "export",
            connector: c.name.clone(),
            profile: "export".into(),
            status: report.status.clone(),
            run_id: report.run_id,
            what: format!(
                "+{} ~{} -{} failed {} held {} retries {}",
                k.adds, k.updates, k.deletes, k.failed, k.held, k.retries
            ),
        });
    }
    // 4. Mail: operator notices, then everything due (set-transition mail included).
    super::mail::queue_operator_notices(plan, &store, &notices).await?;
    if stopped_after.is_none() {
        stopped_after = halt(&steps);
    }
    let delivered = if stopped_after.is_some() {
        Ok(None)
    } else {
        super::mail::deliver_due_stoppable(plan, &store, stop).await
    };
    match delivered {
        Ok(Some(report)) => {
            let failed = report.retrying() + report.dead_lettered() > 0;
            if failed {
                worst(Code::CompletedWithErrors, &mut code);
            }
            steps.push(Step {
                step: "mail",
                connector: "-".into(),
                profile: "deliver".into(),
                status: if failed { "completed-with-errors".into() } else { "success".into() },
                run_id: 0,
                what: super::mail::summary(&report),
            });
        }
        Ok(None) => {}
        Err(f) => {
            worst(Code::CompletedWithErrors, &mut code);
            steps.push(Step {
                step: "mail",
                connector: "-".into(),
                profile: "deliver".into(),
                status: "not-delivered".into(),
                run_id: 0,
                what: format!("{:#} (the messages stay queued)", f.error),
            });
        }
    }
    let counts = store.pending_counts().await?;
    let pending = usize::try_from(counts.iter().map(|c| c.count).sum::<i64>()).unwrap_or(0);
    let awaiting_confirmation =
        usize::try_from(counts.iter().filter(|c| c.status == "exported").map(|c| c.count).sum::<i64>())
            .unwrap_or(0);
    let mail_queued = store.mail_list(Some(syncctl_store::MailStatus::Queued), 100_000).await?.len();
    store.close().await;
    let targets = connectors.iter().filter(|c| c.target).count();
    Ok(CycleOutcome {
        steps,
        pending,
        awaiting_confirmation,
        targets,
        held,
        code,
        workflows: !plan.workflows.is_empty(),
        set_notes,
        requests,
        mail_queued,
        reasons,
        stopped_after,
    })
}

/// True for a run that completed (with or without per-object errors).
fn completed(status: &str) -> bool {
    status == "success" || status == "completed-with-errors"
}

/// Keeps the worse of two exit codes.
fn worst(c: Code, code: &mut Code) {
    if c.status() > code.status() {
        *code = c;
    }
}
