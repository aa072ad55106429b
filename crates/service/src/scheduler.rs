//! The schedule: [`Scheduler`] runs a [`CycleRunner`] every interval, and when [`Control`] says.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use syncctl_store::Store;
use tokio::sync::Notify;

use crate::config::ServiceSettings;
use crate::error::Result;
use crate::metrics::Metrics;

/// What one cycle reported back to the service.
#[derive(Clone, Debug, Default)]
pub struct CycleReport {
    /// The run-history ids of its runs.
    pub runs: Vec<i64>,
    /// True when every run ended `success`.
    pub ok: bool,
    /// Its summary, one line per step.
    pub summary: String,
    /// Why parts of it ran in full (a connector whose settings changed), one line each.
    pub reasons: Vec<String>,
    /// Set when a stop request ended it early: the last step that ran.
    pub stopped_after: Option<String>,
}

/// The request to stop a cycle at the end of the step it is running: set by the first
/// SIGTERM / SIGINT, read by the [`CycleRunner`] before each step (import, sync or export of
/// one connector, mail delivery). Cheap to clone; every clone is the same request.
///
/// It also marks the sections that must not be abandoned halfway ([`StepStop::critical`]): a
/// mail message between the SMTP server's `250` and the database write that records it would
/// be sent again by the next start. An abandon waits for such a section to end.
#[derive(Clone, Debug, Default)]
pub struct StepStop {
    requested: Arc<AtomicBool>,
    critical: Arc<AtomicUsize>,
}

/// Held while a section that must not be abandoned runs (see [`StepStop::critical`]).
#[derive(Debug)]
pub struct Critical(Arc<AtomicUsize>);

impl Drop for Critical {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl StepStop {
    /// Asks the cycle to stop after the running step.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }
    /// True once a stop was asked for: start no other step.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
    /// Marks a section that an abandon must let end (keep it short: a few mail messages).
    pub fn critical(&self) -> Critical {
        self.critical.fetch_add(1, Ordering::SeqCst);
        Critical(self.critical.clone())
    }
    /// True while such a section runs.
    pub fn in_critical(&self) -> bool {
        self.critical.load(Ordering::SeqCst) > 0
    }
}

/// Runs one whole cycle. The binary implements it with the same code as `syncctl cycle`.
pub trait CycleRunner {
    /// One cycle, full or delta. Before each step it checks `stop`: once it is requested, the
    /// cycle ends after the running step (and says so in [`CycleReport::stopped_after`]). An
    /// `Err` is the message of a cycle that could not run.
    fn run_cycle(
        &self,
        full: bool,
        stop: StepStop,
    ) -> impl Future<Output = std::result::Result<CycleReport, String>>;

    /// The readiness assessment of every configured source, its summary stored in the database
    /// (see [`syncctl_store::AssessSummary`]). `Ok(false)`: this runner has none.
    fn run_assess(&self) -> impl Future<Output = std::result::Result<bool, String>> {
        async { Ok(false) }
    }
}

/// What the service is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    /// Waiting for the next cycle.
    Idle,
    /// A cycle runs.
    Running,
    /// Scheduled cycles are skipped until resumed (run now still runs one).
    Paused,
    /// Stopping.
    Stopping,
}

/// The last cycle.
#[derive(Clone, Debug, Serialize)]
pub struct LastCycle {
    /// Start, ms since epoch.
    pub started_ms: i64,
    /// End, ms since epoch.
    pub ended_ms: i64,
    /// Full or delta.
    pub full: bool,
    /// Every run succeeded.
    pub ok: bool,
    /// Its summary, or why it could not run.
    pub summary: String,
    /// Why it (or a connector in it) ran in full.
    pub reasons: Vec<String>,
    /// Set when a stop signal ended it after this step.
    pub stopped_after: Option<String>,
}

/// The service's status, as `/api/status` returns it.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// What it is doing.
    pub state: ServiceState,
    /// The service's PID.
    pub pid: u32,
    /// Cycles run since the start.
    pub cycles: u64,
    /// When the next scheduled cycle is due (ms since epoch).
    pub next_due_ms: Option<i64>,
    /// The last cycle.
    pub last_cycle: Option<LastCycle>,
}

/// The shared handle the HTTP control endpoints and the scheduler use.
#[derive(Debug)]
pub struct Control {
    status: Mutex<Status>,
    paused: AtomicBool,
    full_requested: AtomicBool,
    wake: Notify,
}

impl Control {
    /// A fresh control block for the process `pid`.
    pub fn new(pid: u32) -> Arc<Self> {
        Arc::new(Self {
            status: Mutex::new(Status {
                state: ServiceState::Idle,
                pid,
                cycles: 0,
                next_due_ms: None,
                last_cycle: None,
            }),
            paused: AtomicBool::new(false),
            full_requested: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }
    /// The current status.
    pub fn status(&self) -> Status {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
    fn update(&self, f: impl FnOnce(&mut Status)) {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }
    /// Starts a cycle now (full when `full`), paused or not.
    pub fn run_now(&self, full: bool) {
        if full {
            self.full_requested.store(true, Ordering::SeqCst);
        }
        self.wake.notify_one();
    }
    /// Skips scheduled cycles until [`Control::resume`].
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        self.update(|s| {
            if s.state == ServiceState::Idle {
                s.state = ServiceState::Paused;
            }
        });
    }
    /// Runs scheduled cycles again.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.update(|s| {
            if s.state == ServiceState::Paused {
                s.state = ServiceState::Idle;
            }
        });
    }
    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
    fn idle_state(&self) -> ServiceState {
        if self.is_paused() { ServiceState::Paused } else { ServiceState::Idle }
    }
}

/// Milliseconds since the epoch, from the wall clock (the service is the binary's edge).
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// True when a full cycle is required at `now`: some delta import completed before, and none
/// in the last `full_after` (a delta cookie that old may have expired; Entra Connect runs a
/// full import then). A database without any delta import needs no push: the engine falls
/// back to full imports by itself where there is no watermark.
pub async fn full_required(store: &Store, now: i64, full_after: Duration) -> Result<bool> {
    Ok(match store.last_completed("delta-import").await? {
        Some(last) => now.saturating_sub(last) > ms(full_after),
        None => false,
    })
}

/// The service loop.
pub struct Scheduler {
    settings: ServiceSettings,
    store: Store,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
}

impl Scheduler {
    /// A scheduler over `store` (read for full-cycle decisions, metrics and retention).
    pub fn new(
        settings: ServiceSettings,
        store: Store,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { settings, store, control, metrics }
    }

    /// Runs cycles until `shutdown` completes (or after one cycle when `once`).
    ///
    /// A cycle that is running when `shutdown` completes is asked to stop after its running
    /// step ([`StepStop`]): the import, sync or export that runs ends normally (its run is
    /// closed in run history), no other step starts, and the service stops. When `abandon`
    /// completes (a second signal) or `stop_grace` passes first, the step is abandoned where it
    /// is: every batch the engine writes is one transaction, its run is closed as interrupted at
    /// the next start, and the next cycle picks up from the stored watermarks.
    pub async fn run<R: CycleRunner>(
        &self,
        runner: &R,
        once: bool,
        shutdown: impl Future<Output = ()>,
        abandon: impl Future<Output = ()>,
    ) -> Result<()> {
        tokio::pin!(shutdown);
        tokio::pin!(abandon);
        // The first cycle runs at once.
        let mut due = tokio::time::Instant::now();
        loop {
            self.control.update(|s| {
                s.next_due_ms =
                    Some(wall_ms() + ms(due.saturating_duration_since(tokio::time::Instant::now())))
            });
            let scheduled = tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(due) => true,
                () = self.control.wake.notified() => false,
            };
            due = tokio::time::Instant::now() + self.settings.next_after(wall_ms());
            if scheduled && self.control.is_paused() && !once {
                tracing::info!("the service is paused: the scheduled cycle is skipped");
                continue;
            }
            let started = wall_ms();
            let mut reasons = Vec::new();
            if self.control.full_requested.swap(false, Ordering::SeqCst) {
                reasons.push("a full cycle was asked for (run-now --full)".to_owned());
            }
            if full_required(&self.store, started, self.settings.full_after).await? {
                reasons.push(format!(
                    "no delta import completed for {} (full_after)",
                    humantime::format_duration(self.settings.full_after)
                ));
            }
            let full = !reasons.is_empty();
            self.control.update(|s| {
                s.state = ServiceState::Running;
                s.next_due_ms = None;
            });
            if full {
                tracing::info!(full, "a full cycle starts: {}", reasons.join("; "));
            } else {
                tracing::info!(full, "a cycle starts");
            }
            let clock = tokio::time::Instant::now();
            let stop = StepStop::default();
            let cycle = runner.run_cycle(full, stop.clone());
            tokio::pin!(cycle);
            let mut stopping = false;
            let outcome = tokio::select! {
                r = &mut cycle => r,
                () = &mut shutdown => {
                    stopping = true;
                    stop.request();
                    self.control.update(|s| s.state = ServiceState::Stopping);
                    let grace = self.settings.stop_grace;
                    tracing::info!(
                        "stopping: the running step ends, then the cycle stops (a second signal, or {} without the step ending, abandons it)",
                        humantime::format_duration(grace)
                    );
                    let abandoned = tokio::select! {
                        r = &mut cycle => Ok(r),
                        () = &mut abandon => Err("a second stop signal arrived"),
                        () = tokio::time::sleep(grace) => Err("the stop grace passed"),
                    };
                    match abandoned {
                        Ok(r) => r,
                        Err(why) => {
                            if stop.in_critical() {
                                tracing::info!(
                                    "stopping: {why}, but mail is being delivered: the messages in flight are recorded first, so that none goes twice"
                                );
                                while stop.in_critical() {
                                    tokio::select! {
                                        _ = &mut cycle => break,
                                        () = tokio::time::sleep(Duration::from_millis(10)) => {}
                                    }
                                }
                            }
                            tracing::warn!(
                                "stopping: {why}: the running step is abandoned; the next start closes its run as interrupted and resumes from the stored watermarks"
                            );
                            break;
                        }
                    }
                }
            };
            let seconds = clock.elapsed().as_secs_f64();
            let ended = wall_ms();
            let (ok, summary) = match &outcome {
                Ok(r) => (r.ok && r.stopped_after.is_none(), r.summary.clone()),
                Err(e) => (false, e.clone()),
            };
            let stopped_after = outcome.as_ref().ok().and_then(|r| r.stopped_after.clone());
            if let Ok(r) = &outcome {
                for reason in &r.reasons {
                    tracing::info!("{reason}");
                }
                reasons.extend(r.reasons.iter().cloned());
            }
            match &outcome {
                Ok(_) if stopped_after.is_some() => tracing::info!(
                    seconds,
                    "the cycle stopped after the step `{}` (stop signal); the next start goes on from there",
                    stopped_after.as_deref().unwrap_or_default()
                ),
                Ok(_) if ok => tracing::info!(seconds, "the cycle ended"),
                Ok(_) => tracing::warn!(seconds, "the cycle ended with errors or stopped runs: {summary}"),
                Err(e) => tracing::error!("the cycle could not run: {e}"),
            }
            self.metrics.record_cycle(
                full,
                if outcome.is_err() {
                    "failed"
                } else if stopped_after.is_some() {
                    "stopped"
                } else if ok {
                    "success"
                } else {
                    "errors"
                },
                seconds,
            );
            if let Ok(r) = &outcome {
                for id in &r.runs {
                    if let Some(run) = self.store.run(*id).await? {
                        let retries = if run.profile == "export" && run.counts.warnings > 0 {
                            self.store.run_errors(*id).await?
                        } else {
                            Vec::new()
                        };
                        self.metrics.record_run(&run, &retries);
                    }
                }
            }
            let pruned = self.store.prune_runs(ended.saturating_sub(ms(self.settings.retention))).await?;
            if pruned > 0 {
                tracing::info!(pruned, "run history older than the retention removed");
            }
            self.control.update(|s| {
                s.cycles += 1;
                s.last_cycle = Some(LastCycle {
                    started_ms: started,
                    ended_ms: ended,
                    full,
                    ok,
                    summary,
                    reasons,
                    stopped_after: stopped_after.clone(),
                });
            });
            if !stopping && outcome.is_ok() && self.assess_due(full, ended).await? {
                tokio::select! {
                    r = runner.run_assess() => match r {
                        Ok(true) => tracing::info!("the readiness assessment is stored (status page, /metrics)"),
                        Ok(false) => {}
                        Err(e) => tracing::warn!("the readiness assessment could not run: {e}"),
                    },
                    () = &mut shutdown => {
                        tracing::info!("stopping: the readiness assessment is abandoned (it writes nothing until it ends)");
                        break;
                    }
                }
            }
            let state = self.control.idle_state();
            self.control.update(|s| s.state = state);
            if once || stopping {
                break;
            }
        }
        Ok(())
    }

    /// True when the readiness assessment should run after a cycle that ended at `now`: after
    /// a full cycle, and when the latest summary is older than `assess_every` (or missing).
    async fn assess_due(&self, full: bool, now: i64) -> Result<bool> {
        let Some(every) = self.settings.assess_every else { return Ok(false) };
        if full {
            return Ok(true);
        }
        Ok(match self.store.latest_assess_summary().await? {
            Some(last) => now.saturating_sub(last.at) >= ms(every),
            None => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Counting(RefCell<Vec<bool>>);
    impl CycleRunner for Counting {
        async fn run_cycle(&self, full: bool, _stop: StepStop) -> std::result::Result<CycleReport, String> {
            self.0.borrow_mut().push(full);
            Ok(CycleReport { ok: true, summary: "done".into(), ..CycleReport::default() })
        }
    }

    fn scheduler(settings: ServiceSettings, store: Store, control: &Arc<Control>) -> Scheduler {
        Scheduler::new(settings, store, control.clone(), Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn once_runs_one_cycle_and_run_now_asks_for_full() {
        let store = Store::open_in_memory().await.unwrap();
        let control = Control::new(1);
        let s = scheduler(ServiceSettings::default(), store, &control);
        let r = Counting(RefCell::new(vec![]));
        s.run(&r, true, std::future::pending(), std::future::pending()).await.unwrap();
        assert_eq!(*r.0.borrow(), vec![false]);
        control.run_now(true);
        s.run(&r, true, std::future::pending(), std::future::pending()).await.unwrap();
        assert_eq!(*r.0.borrow(), vec![false, true]);
        assert_eq!(control.status().cycles, 2);
        let last = control.status().last_cycle.unwrap();
        assert_eq!(last.reasons, vec!["a full cycle was asked for (run-now --full)".to_owned()]);
    }

    #[tokio::test]
    async fn shutdown_stops_a_waiting_scheduler() {
        let store = Store::open_in_memory().await.unwrap();
        let control = Control::new(1);
        control.pause();
        assert_eq!(control.status().state, ServiceState::Paused);
        let s = scheduler(ServiceSettings::default(), store, &control);
        let r = Counting(RefCell::new(vec![]));
        // Paused: the first scheduled cycle is skipped, then shutdown ends the loop.
        s.run(&r, false, tokio::time::sleep(Duration::from_millis(50)), std::future::pending())
            .await
            .unwrap();
        assert!(r.0.borrow().is_empty());
    }

    /// A cycle of three steps. Step 1 signals that it runs; in `Mode::EndsOnStop` it ends once
    /// the stop is requested (so the stop always lands in the middle of it), in
    /// `Mode::NeverEnds` it never ends by itself. Steps that ended are recorded.
    #[derive(Clone, Copy)]
    enum Mode {
        EndsOnStop,
        NeverEnds,
    }
    struct Stepped {
        mode: Mode,
        started: Notify,
        done: RefCell<Vec<&'static str>>,
    }
    impl CycleRunner for Stepped {
        async fn run_cycle(&self, _full: bool, stop: StepStop) -> std::result::Result<CycleReport, String> {
            for step in ["import corp", "sync corp", "export cloud"] {
                if stop.requested() {
                    return Ok(CycleReport {
                        ok: true,
                        stopped_after: self.done.borrow().last().map(|s| (*s).to_owned()),
                        ..CycleReport::default()
                    });
                }
                if step == "import corp" {
                    self.started.notify_one();
                    loop {
                        match self.mode {
                            Mode::EndsOnStop if stop.requested() => break,
                            _ => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                }
                self.done.borrow_mut().push(step);
            }
            Ok(CycleReport { ok: true, ..CycleReport::default() })
        }
    }

    #[tokio::test]
    async fn a_stop_ends_the_running_step_and_starts_no_other() {
        let store = Store::open_in_memory().await.unwrap();
        let control = Control::new(1);
        let s = scheduler(
            ServiceSettings { stop_grace: Duration::from_secs(3600), ..ServiceSettings::default() },
            store,
            &control,
        );
        let r = Stepped { mode: Mode::EndsOnStop, started: Notify::new(), done: RefCell::new(vec![]) };
        s.run(&r, false, r.started.notified(), std::future::pending()).await.unwrap();
        // The import that ran when the signal came ended; sync and export never started.
        assert_eq!(*r.done.borrow(), vec!["import corp"]);
        let st = control.status();
        assert_eq!(st.cycles, 1);
        let last = st.last_cycle.unwrap();
        assert_eq!(last.stopped_after.as_deref(), Some("import corp"));
        assert!(!last.ok, "a cycle cut short is not a success");
    }

    #[tokio::test]
    async fn a_second_signal_or_the_grace_abandons_the_running_step() {
        // The second signal, long before the grace.
        let store = Store::open_in_memory().await.unwrap();
        let control = Control::new(1);
        let s = scheduler(
            ServiceSettings { stop_grace: Duration::from_secs(3600), ..ServiceSettings::default() },
            store,
            &control,
        );
        let r = Stepped { mode: Mode::NeverEnds, started: Notify::new(), done: RefCell::new(vec![]) };
        let second = Notify::new();
        let first = async {
            r.started.notified().await;
            second.notify_one();
        };
        s.run(&r, false, first, second.notified()).await.unwrap();
        assert!(r.done.borrow().is_empty(), "{:?}", r.done.borrow());
        assert_eq!(control.status().cycles, 0);
        // No second signal, no grace: abandoned at once.
        let store = Store::open_in_memory().await.unwrap();
        let control = Control::new(1);
        let s = scheduler(
            ServiceSettings { stop_grace: Duration::ZERO, ..ServiceSettings::default() },
            store,
            &control,
        );
        let r = Stepped { mode: Mode::NeverEnds, started: Notify::new(), done: RefCell::new(vec![]) };
        s.run(&r, false, r.started.notified(), std::future::pending()).await.unwrap();
        assert!(r.done.borrow().is_empty());
        assert_eq!(control.status().cycles, 0);
    }

    /// A mail step: a critical section that ends once `release` is notified, recording it.
    struct Mailing {
        started: Notify,
        release: Notify,
        recorded: RefCell<bool>,
    }
    impl CycleRunner for Mailing {
        async fn run_cycle(&self, _full: bool, stop: StepStop) -> std::result::Result<CycleReport, String> {
            let _section = stop.critical();
            self.started.notify_one();
            self.release.notified().await;
            *self.recorded.borrow_mut() = true;
            drop(_section);
            // Never ends by itself after the section: only an abandon stops it.
            std::future::pending::<()>().await;
            Ok(CycleReport::default())
        }
    }

    #[tokio::test]
    async fn an_abandon_lets_a_mail_in_flight_be_recorded_first() {
        let store = Store::open_in_memory().await.unwrap();
        let control = Control::new(1);
        let settings =
            ServiceSettings { stop_grace: Duration::from_secs(3600), ..ServiceSettings::default() };
        let s = scheduler(settings, store, &control);
        let r = Mailing { started: Notify::new(), release: Notify::new(), recorded: RefCell::new(false) };
        let stopping = || async {
            while control.status().state != ServiceState::Stopping {
                tokio::task::yield_now().await;
            }
        };
        // The first signal comes while the message is in flight, the second at once; the
        // message is let through only after that (the service is polled first).
        let release = async {
            stopping().await;
            r.release.notify_one();
        };
        let (done, ()) = tokio::join!(s.run(&r, false, r.started.notified(), stopping()), release);
        done.unwrap();
        assert!(*r.recorded.borrow(), "the abandon waited for the message in flight to be recorded");
        assert_eq!(control.status().cycles, 0, "and then abandoned the cycle");
    }

    struct Assessing(RefCell<u32>);
    impl CycleRunner for Assessing {
        async fn run_cycle(&self, _full: bool, _stop: StepStop) -> std::result::Result<CycleReport, String> {
            Ok(CycleReport { ok: true, ..CycleReport::default() })
        }
        async fn run_assess(&self) -> std::result::Result<bool, String> {
            *self.0.borrow_mut() += 1;
            Ok(true)
        }
    }

    #[tokio::test]
    async fn the_assessment_runs_after_full_cycles_and_when_the_latest_is_old() {
        let store = Store::open_in_memory().await.unwrap();
        let control = Control::new(1);
        let settings =
            ServiceSettings { assess_every: Some(Duration::from_secs(86_400)), ..ServiceSettings::default() };
        let s = scheduler(settings, store.clone(), &control);
        let r = Assessing(RefCell::new(0));
        // No summary yet: it runs.
        s.run(&r, true, std::future::pending(), std::future::pending()).await.unwrap();
        assert_eq!(*r.0.borrow(), 1);
        // A fresh summary: a delta cycle does not run it, a full cycle does.
        let summary = syncctl_store::AssessSummary {
            at: wall_ms(),
            origin: "serve".into(),
            verdict: "ready".into(),
            objects: 1,
            errors: 0,
            warnings: 0,
            infos: 0,
            by_rule: vec![],
            sources: vec![],
        };
        store.record_assess_summary(&summary).await.unwrap();
        s.run(&r, true, std::future::pending(), std::future::pending()).await.unwrap();
        assert_eq!(*r.0.borrow(), 1);
        control.run_now(true);
        s.run(&r, true, std::future::pending(), std::future::pending()).await.unwrap();
        assert_eq!(*r.0.borrow(), 2);
        // Turned off: never.
        let off =
            scheduler(ServiceSettings { assess_every: None, ..ServiceSettings::default() }, store, &control);
        control.run_now(true);
        off.run(&r, true, std::future::pending(), std::future::pending()).await.unwrap();
        assert_eq!(*r.0.borrow(), 2);
    }

    #[tokio::test]
    async fn full_is_required_after_a_week_without_delta() {
        let store = Store::open_in_memory().await.unwrap();
        assert!(!full_required(&store, 0, Duration::from_secs(10)).await.unwrap());
        let id = store.start_run("delta-import", None, "x", 1_000).await.unwrap();
        store.finish_run(id, "success", None, 0, "", 2_000).await.unwrap();
        assert!(!full_required(&store, 5_000, Duration::from_secs(10)).await.unwrap());
        assert!(full_required(&store, 13_000, Duration::from_secs(10)).await.unwrap());
    }
}
