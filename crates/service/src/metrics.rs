//! [`Metrics`]: the Prometheus registry behind `/metrics`.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use syncctl_store::{MailStatus, RunRecord, Store};

type Labels = Vec<(String, String)>;

fn cycle_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.5, 2.0, 14))
}

/// The service's metrics: counted as cycles and runs end, and read from the store (pending
/// exports, the mail outbox) at each scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    cycles: Family<Labels, Counter>,
    cycle_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    run_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    objects: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    export_retries: Family<Labels, Counter>,
    pending: Family<Labels, Gauge>,
    outbox: Family<Labels, Gauge>,
    dead_letters: Gauge,
    paused: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The registry, every metric registered.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("syncctl");
        let m = Self {
            registry: Mutex::new(Registry::default()),
            cycles: Family::default(),
            cycle_seconds: Family::new_with_constructor(cycle_histogram),
            run_seconds: Family::new_with_constructor(cycle_histogram),
            objects: Family::default(),
            errors: Family::default(),
            export_retries: Family::default(),
            pending: Family::default(),
            outbox: Family::default(),
            dead_letters: Gauge::default(),
            paused: Gauge::default(),
        };
        r.register(
            "cycles",
            "Cycles run, by kind (full, delta) and result (success, errors, failed)",
            m.cycles.clone(),
        );
        r.register("cycle_duration_seconds", "Duration of whole cycles", m.cycle_seconds.clone());
        r.register(
            "run_duration_seconds",
            "Duration of runs, by profile and connector",
            m.run_seconds.clone(),
        );
        r.register("objects", "Objects changed by runs, by phase, connector and change", m.objects.clone());
        r.register("run_errors", "Per-object errors of runs, by phase and connector", m.errors.clone());
        r.register(
            "export_warnings",
            "Warnings of export runs, by connector: writes retried after Graph throttling (429) or 5xx answers, values set aside",
            m.export_retries.clone(),
        );
        r.register("pending_exports", "Pending exports, by connector and status", m.pending.clone());
        r.register("mail_outbox", "Messages in the mail outbox, by status", m.outbox.clone());
        r.register("mail_dead_letters", "Messages in the dead-letter list", m.dead_letters.clone());
        r.register("paused", "1 while scheduled cycles are paused", m.paused.clone());
        if let Ok(mut g) = m.registry.lock() {
            *g = r;
        }
        m
    }

    /// Counts a cycle that ended.
    pub fn record_cycle(&self, full: bool, result: &str, seconds: f64) {
        let kind = if full { "full" } else { "delta" };
        self.cycles
            .get_or_create(&vec![("kind".into(), kind.into()), ("result".into(), result.into())])
            .inc();
        self.cycle_seconds.get_or_create(&vec![("kind".into(), kind.into())]).observe(seconds);
    }

    /// Counts one run of a cycle, as run history holds it.
    pub fn record_run(&self, run: &RunRecord) {
        let phase = run.profile.rsplit('-').next().unwrap_or(&run.profile).to_owned();
        let connector = run.connector.clone().unwrap_or_else(|| "-".into());
        if let Some(end) = run.ended_at {
            let s = (end.saturating_sub(run.started_at)) as f64 / 1000.0;
            self.run_seconds
                .get_or_create(&vec![
                    ("profile".into(), run.profile.clone()),
                    ("connector".into(), connector.clone()),
                ])
                .observe(s);
        }
        let k = &run.counts;
        for (change, n) in
            [("add", k.adds), ("update", k.updates), ("rename", k.renames), ("delete", k.deletes)]
        {
            let labels = vec![
                ("phase".into(), phase.clone()),
                ("connector".into(), connector.clone()),
                ("change".into(), change.into()),
            ];
            self.objects.get_or_create(&labels).inc_by(u64::try_from(n).unwrap_or(0));
        }
        self.errors
            .get_or_create(&vec![("phase".into(), phase.clone()), ("connector".into(), connector.clone())])
            .inc_by(u64::try_from(k.errors).unwrap_or(0));
        if phase == "export" {
            // An export's warnings are its retried writes.
            self.export_retries
                .get_or_create(&vec![("connector".into(), connector)])
                .inc_by(u64::try_from(k.warnings).unwrap_or(0));
        }
    }

    /// The text exposition, with the gauges read from `store` now.
    pub async fn render(&self, store: &Store, paused: bool) -> crate::Result<String> {
        let pending = store.pending_exports(None).await?;
        let mut by: std::collections::BTreeMap<(i64, String), i64> = std::collections::BTreeMap::new();
        for p in &pending {
            *by.entry((p.connector_id, p.status.clone())).or_default() += 1;
        }
        self.pending.clear();
        for ((cid, status), n) in by {
            let name = store.connector_name(cid).await?.unwrap_or_else(|| cid.to_string());
            self.pending.get_or_create(&vec![("connector".into(), name), ("status".into(), status)]).set(n);
        }
        self.outbox.clear();
        for (status, n) in store.mail_counts().await? {
            if status == MailStatus::DeadLetter.as_str() {
                self.dead_letters.set(n);
            }
            self.outbox.get_or_create(&vec![("status".into(), status)]).set(n);
        }
        self.paused.set(i64::from(paused));
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            encode(&mut out, &r)
                .map_err(|e| crate::ServiceError::Http { addr: "/metrics".into(), detail: e.to_string() })?;
        }
        Ok(out)
    }
}
