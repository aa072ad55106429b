//! The schedule: [`Scheduler`] runs a [`CycleRunner`] every interval, and when [`Control`] says.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
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
}

/// Runs one whole cycle. The binary implements it with the same code as `syncctl cycle`.
pub trait CycleRunner {
    /// One cycle, full or delta. An `Err` is the message of a cycle that could not run.
    fn run_cycle(&self, full: bool) -> impl Future<Output = std::result::Result<CycleReport, String>>;
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

    /// Runs cycles until `shutdown` completes (or after one cycle when `once`). A cycle that is
    /// running when `shutdown` completes has `stop_grace` to end; then it is abandoned: every
    /// batch the engine writes is one transaction, its run is closed as interrupted at the next
    /// start, and the next cycle picks up from the stored watermarks.
    pub async fn run<R: CycleRunner>(
        &self,
        runner: &R,
        once: bool,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        tokio::pin!(shutdown);
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
            let full = self.control.full_requested.swap(false, Ordering::SeqCst)
                || full_required(&self.store, started, self.settings.full_after).await?;
            self.control.update(|s| {
                s.state = ServiceState::Running;
                s.next_due_ms = None;
            });
            tracing::info!(full, "a cycle starts");
            let clock = tokio::time::Instant::now();
            let cycle = runner.run_cycle(full);
            tokio::pin!(cycle);
            let mut stopping = false;
            let outcome = tokio::select! {
                r = &mut cycle => r,
                () = &mut shutdown => {
                    stopping = true;
                    self.control.update(|s| s.state = ServiceState::Stopping);
                    let grace = self.settings.stop_grace;
                    tracing::info!("stopping: the running cycle has {} to end", humantime::format_duration(grace));
                    match tokio::time::timeout(grace, &mut cycle).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::warn!(
                                "stopping: the running cycle is abandoned; the next start resumes from the stored watermarks"
                            );
                            break;
                        }
                    }
                }
            };
            let seconds = clock.elapsed().as_secs_f64();
            let ended = wall_ms();
            let (ok, summary) = match &outcome {
                Ok(r) => (r.ok, r.summary.clone()),
                Err(e) => (false, e.clone()),
            };
            match &outcome {
                Ok(_) if ok => tracing::info!(seconds, "the cycle ended"),
                Ok(_) => tracing::warn!(seconds, "the cycle ended with errors or stopped runs: {summary}"),
                Err(e) => tracing::error!("the cycle could not run: {e}"),
            }
            self.metrics.record_cycle(
                full,
                if outcome.is_err() {
                    "failed"
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
                        self.metrics.record_run(&run);
                    }
                }
            }
            let pruned = self.store.prune_runs(ended.saturating_sub(ms(self.settings.retention))).await?;
            if pruned > 0 {
                tracing::info!(pruned, "run history older than the retention removed");
            }
            let state = self.control.idle_state();
            self.control.update(|s| {
                s.state = state;
                s.cycles += 1;
                s.last_cycle = Some(LastCycle { started_ms: started, ended_ms: ended, full, ok, summary });
            });
            if once || stopping {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Counting(RefCell<Vec<bool>>);
    impl CycleRunner for Counting {
        async fn run_cycle(&self, full: bool) -> std::result::Result<CycleReport, String> {
            self.0.borrow_mut().push(full);
            Ok(CycleReport { runs: vec![], ok: true, summary: "done".into() })
        }
    }

    #[tokio::test]
    async fn once_runs_one_cycle_and_run_now_asks_for_full() {
        let store = Store::open_in_memory().await.unwrap();
        let control = Control::new(1);
        let s = Scheduler::new(ServiceSettings::default(), store, control.clone(), Arc::new(Metrics::new()));
        let r = Counting(RefCell::new(vec![]));
        s.run(&r, true, std::future::pending()).await.unwrap();
        assert_eq!(*r.0.borrow(), vec![false]);
        control.run_now(true);
        s.run(&r, true, std::future::pending()).await.unwrap();
        assert_eq!(*r.0.borrow(), vec![false, true]);
        assert_eq!(control.status().cycles, 2);
    }

    #[tokio::test]
    async fn shutdown_stops_a_waiting_scheduler() {
        let store = Store::open_in_memory().await.unwrap();
        let control = Control::new(1);
        control.pause();
        assert_eq!(control.status().state, ServiceState::Paused);
        let s = Scheduler::new(ServiceSettings::default(), store, control.clone(), Arc::new(Metrics::new()));
        let r = Counting(RefCell::new(vec![]));
        // Paused: the first scheduled cycle is skipped, then shutdown ends the loop.
        s.run(&r, false, tokio::time::sleep(Duration::from_millis(50))).await.unwrap();
        assert!(r.0.borrow().is_empty());
    }

    struct Slow;
    impl CycleRunner for Slow {
        async fn run_cycle(&self, _full: bool) -> std::result::Result<CycleReport, String> {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(CycleReport { runs: vec![], ok: true, summary: "slow".into() })
        }
    }

    #[tokio::test]
    async fn a_stop_lets_the_cycle_end_within_the_grace_or_abandons_it() {
        for (grace, cycles) in [(Duration::from_secs(60), 1), (Duration::ZERO, 0)] {
            let store = Store::open_in_memory().await.unwrap();
            let control = Control::new(1);
            let settings = ServiceSettings { stop_grace: grace, ..ServiceSettings::default() };
            let s = Scheduler::new(settings, store, control.clone(), Arc::new(Metrics::new()));
            s.run(&Slow, false, tokio::time::sleep(Duration::from_millis(20))).await.unwrap();
            assert_eq!(control.status().cycles, cycles, "grace {grace:?}");
        }
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
