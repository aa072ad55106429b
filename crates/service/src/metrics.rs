//! [`Metrics`]: the Prometheus registry behind `/metrics`.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use syncctl_store::{MailStatus, RunError, RunRecord, Store};

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
    throttled: Family<Labels, Counter>,
    retry_after: Family<Labels, Counter<f64, AtomicU64>>,
    retries: Family<Labels, Counter>,
    assess_findings: Family<Labels, Gauge>,
    assess_rules: Family<Labels, Gauge>,
    assess_objects: Gauge,
    assess_time: Gauge,
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
            throttled: Family::default(),
            retry_after: Family::default(),
            retries: Family::default(),
            assess_findings: Family::default(),
            assess_rules: Family::default(),
            assess_objects: Gauge::default(),
            assess_time: Gauge::default(),
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
        r.register(
            "graph_throttled",
            "Graph writes answered 429 Too Many Requests (throttling) during exports, by connector",
            m.throttled.clone(),
        );
        r.register(
            "graph_retry_after_seconds",
            "Seconds waited on Retry-After (or backoff) after 429 answers during exports, by connector",
            m.retry_after.clone(),
        );
        r.register(
            "graph_retries",
            "Graph writes retried for another cause than throttling, by connector and cause (server-error: 5xx; connection: cut or refused; token: 401 renewed; lookup: an uncertain create looked up)",
            m.retries.clone(),
        );
        r.register(
            "assess_findings",
            "Findings of the latest readiness assessment, by severity",
            m.assess_findings.clone(),
        );
        r.register(
            "assess_rule_findings",
            "Findings of the latest readiness assessment, by rule and severity",
            m.assess_rules.clone(),
        );
        r.register(
            "assess_objects",
            "Objects the latest readiness assessment ran on",
            m.assess_objects.clone(),
        );
        r.register(
            "assess_timestamp_seconds",
            "When the latest readiness assessment ran (seconds since the epoch; 0: never)",
            m.assess_time.clone(),
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

    /// Counts one run of a cycle, as run history holds it; `warnings` are its per-object
    /// entries (an export's `export-retry` warnings feed the Graph retry metrics).
    pub fn record_run(&self, run: &RunRecord, warnings: &[RunError]) {
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
                .get_or_create(&vec![("connector".into(), connector.clone())])
                .inc_by(u64::try_from(k.warnings).unwrap_or(0));
            for w in warnings.iter().filter(|w| w.kind == "export-retry") {
                match retry_cause(&w.message) {
                    Some(("throttled", seconds)) => {
                        let labels = vec![("connector".into(), connector.clone())];
                        self.throttled.get_or_create(&labels).inc();
                        self.retry_after.get_or_create(&labels).inc_by(seconds);
                    }
                    Some((cause, _)) => {
                        self.retries
                            .get_or_create(&vec![
                                ("connector".into(), connector.clone()),
                                ("cause".into(), cause.into()),
                            ])
                            .inc();
                    }
                    None => {}
                }
            }
        }
    }

    /// The text exposition, with the gauges read from `store` now.
    pub async fn render(&self, store: &Store, paused: bool) -> crate::Result<String> {
        let mut by: std::collections::BTreeMap<(i64, String), i64> = std::collections::BTreeMap::new();
        for c in store.pending_counts().await? {
            *by.entry((c.connector_id, c.status)).or_default() += c.count;
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
        self.assess_findings.clear();
        self.assess_rules.clear();
        match store.latest_assess_summary().await? {
            Some(a) => {
                for (severity, n) in [("error", a.errors), ("warning", a.warnings), ("info", a.infos)] {
                    self.assess_findings
                        .get_or_create(&vec![("severity".into(), severity.into())])
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                for r in &a.by_rule {
                    self.assess_rules
                        .get_or_create(&vec![
                            ("rule".into(), r.rule.clone()),
                            ("severity".into(), r.severity.clone()),
                        ])
                        .set(i64::try_from(r.count).unwrap_or(i64::MAX));
                }
                self.assess_objects.set(i64::try_from(a.objects).unwrap_or(i64::MAX));
                self.assess_time.set(a.at / 1000);
            }
            None => {
                self.assess_objects.set(0);
                self.assess_time.set(0);
            }
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

/// What an `export-retry` warning of the Graph connector retried after, and the seconds it
/// waited: `throttled` (429 Too Many Requests; the Retry-After or backoff seconds),
/// `server-error` (5xx), `token` (401, token renewed), `lookup` (an uncertain create looked
/// up before being sent again) or `connection` (a cut or refused connection). `None` for a
/// warning that retried nothing.
pub fn retry_cause(message: &str) -> Option<(&'static str, f64)> {
    let seconds_after = |marker: &str| -> f64 {
        message
            .find(marker)
            .and_then(|i| message.get(i + marker.len()..))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
            .unwrap_or(0.0)
    };
    if message.contains("429 Too Many Requests") {
        let wait = if message.contains("Retry-After ") {
            seconds_after("Retry-After ")
        } else {
            seconds_after("retried after ")
        };
        return Some(("throttled", wait));
    }
    if message.contains("looked up by onPremisesImmutableId") || message.contains("(uncertain)") {
        return Some(("lookup", 0.0));
    }
    if message.contains(": 401 ") {
        return Some(("token", 0.0));
    }
    let server = message.match_indices(": 5").any(|(i, _)| {
        message.get(i + 2..i + 6).is_some_and(|t| {
            t.as_bytes().get(..3).is_some_and(|d| d.iter().all(u8::is_ascii_digit)) && t.ends_with(' ')
        })
    });
    if server {
        return Some(("server-error", seconds_after("retried after ")));
    }
    if message.contains("retried") {
        return Some(("connection", seconds_after("retried after ")));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_told_apart_by_cause() {
        // The Graph connector's notes, as the export engine records them.
        let t = "add of Ann: POST /$batch: 429 Too Many Requests on its $batch, Retry-After 3 s, retried";
        assert_eq!(retry_cause(t), Some(("throttled", 3.0)));
        let t = "update of Ann: PATCH /users/1: 429 Too Many Requests, no Retry-After, retried after 0.5 s";
        assert_eq!(retry_cause(t), Some(("throttled", 0.5)));
        let t = "add of Ann: POST /users: 503 ServiceUnavailable (attempt 1 of 5), retried after 1.0 s";
        assert_eq!(retry_cause(t), Some(("server-error", 1.0)));
        let t = "add of Ann: POST /users: connection closed before an answer (attempt 1 of 5), retried after 0.2 s";
        assert_eq!(retry_cause(t), Some(("connection", 0.2)));
        let t = "add of Ann: POST /users: 401 (access token refused), token renewed, retried";
        assert_eq!(retry_cause(t), Some(("token", 0.0)));
        let t = "add of Ann: POST /users: an earlier attempt's result was never recorded (uncertain), looked up by onPremisesImmutableId before re-sending: found, not re-created";
        assert_eq!(retry_cause(t), Some(("lookup", 0.0)));
        assert_eq!(retry_cause("created, but member changes failed (x)"), None);
    }
}
