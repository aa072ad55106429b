//! The `[service]` table: [`RawService`] as written, [`ServiceSettings`] validated.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Result, ServiceError};

/// Where the service listens unless `[service] listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8650";

/// `[service]` as written. Every key is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Time between delta cycles (`"30m"`, `"1h 30m"`, `"45s"`). Default `"30m"`.
    pub interval: Option<String>,
    /// A cron expression instead of `interval` (UTC; seconds first: `"0 */30 * * * *"`).
    pub schedule: Option<String>,
    /// The HTTP address. Default `127.0.0.1:8650`.
    pub listen: Option<String>,
    /// The environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// The file whose first line is the bearer token.
    pub token_file: Option<PathBuf>,
    /// How long run history is kept. Default `"7d"`.
    pub retention: Option<String>,
    /// A full cycle runs when no delta import completed for this long. Default `"7d"`.
    pub full_after: Option<String>,
    /// On SIGTERM or SIGINT, how long a running cycle may go on before it is abandoned
    /// (`"0s"`: at once). Default `"10s"`.
    pub stop_grace: Option<String>,
    /// The readiness assessment runs after each full cycle and when the latest one is older
    /// than this (`"0s"`: never). Default `"1d"`.
    pub assess_every: Option<String>,
}

/// Where the bearer token is read from (never the config file itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// An environment variable.
    Env(String),
    /// A file's first line.
    File(PathBuf),
}

impl TokenSource {
    /// Reads the token. The error names the variable or file, never the value.
    pub fn read(&self) -> Result<String> {
        let (text, what) = match self {
            Self::Env(name) => (std::env::var(name).ok(), format!("environment variable {name}")),
            Self::File(p) => (std::fs::read_to_string(p).ok(), format!("file {}", p.display())),
        };
        let token =
            text.as_deref().and_then(|t| t.lines().next()).map(str::trim).unwrap_or_default().to_owned();
        if token.is_empty() {
            return Err(ServiceError::Config { key: "token", detail: format!("the {what} holds no token") });
        }
        Ok(token)
    }
}

/// The validated `[service]` settings.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    /// Time between delta cycles (unless `schedule`).
    pub interval: Duration,
    /// The cron schedule of delta cycles, when one replaces `interval`.
    pub schedule: Option<cron::Schedule>,
    /// The HTTP address.
    pub listen: SocketAddr,
    /// The bearer token's source; required when `listen` is not loopback.
    pub token: Option<TokenSource>,
    /// Run-history retention.
    pub retention: Duration,
    /// A full cycle runs when no delta import completed for this long.
    pub full_after: Duration,
    /// How long the running step may go on after a stop signal.
    pub stop_grace: Duration,
    /// How old the latest readiness assessment may get before the service runs one (it also
    /// runs after each full cycle); `None`: the service never runs it.
    pub assess_every: Option<Duration>,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30 * 60),
            schedule: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8650)),
            token: None,
            retention: Duration::from_secs(7 * 24 * 3600),
            full_after: Duration::from_secs(7 * 24 * 3600),
            stop_grace: Duration::from_secs(10),
            assess_every: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

fn duration(key: &'static str, v: Option<&str>, default: Duration) -> Result<Duration> {
    let Some(v) = v else { return Ok(default) };
    let d = humantime::parse_duration(v).map_err(|e| ServiceError::Config {
        key,
        detail: format!("`{v}` is not a duration such as \"30m\" or \"1h 30m\": {e}"),
    })?;
    if d.is_zero() {
        return Err(ServiceError::Config { key, detail: "must be longer than zero".into() });
    }
    Ok(d)
}

impl ServiceSettings {
    /// Validates `raw`; relative `token_file` paths resolve against `base`.
    pub fn from_raw(raw: &RawService, base: &Path) -> Result<Self> {
        let d = Self::default();
        let listen: SocketAddr = match &raw.listen {
            None => d.listen,
            Some(l) => l.parse().map_err(|e| ServiceError::Config {
                key: "listen",
                detail: format!("`{l}` is not an address such as 127.0.0.1:8650: {e}"),
            })?,
        };
        let token = match (&raw.token_env, &raw.token_file) {
            (Some(_), Some(_)) => {
                return Err(ServiceError::Config {
                    key: "token_env",
                    detail: "token_env and token_file exclude each other".into(),
                });
            }
            (Some(e), None) => Some(TokenSource::Env(e.clone())),
            (None, Some(f)) => {
                Some(TokenSource::File(if f.is_absolute() { f.clone() } else { base.join(f) }))
            }
            (None, None) => None,
        };
        if !listen.ip().is_loopback() && token.is_none() {
            return Err(ServiceError::Config {
                key: "listen",
                detail: format!(
                    "{listen} is reachable beyond this machine: set token_env or token_file so that every request needs the token"
                ),
            });
        }
        let schedule = match (&raw.schedule, &raw.interval) {
            (Some(_), Some(_)) => {
                return Err(ServiceError::Config {
                    key: "schedule",
                    detail: "schedule and interval exclude each other".into(),
                });
            }
            (Some(c), None) => Some(c.parse::<cron::Schedule>().map_err(|e| ServiceError::Config {
                key: "schedule",
                detail: format!(
                    "`{c}` is not a cron expression (seconds first, in UTC, such as \"0 */30 * * * *\"): {e}"
                ),
            })?),
            (None, _) => None,
        };
        Ok(Self {
            schedule,
            interval: duration("interval", raw.interval.as_deref(), d.interval)?,
            listen,
            token,
            retention: duration("retention", raw.retention.as_deref(), d.retention)?,
            full_after: duration("full_after", raw.full_after.as_deref(), d.full_after)?,
            stop_grace: match raw.stop_grace.as_deref() {
                Some(v) if humantime::parse_duration(v).is_ok_and(|d| d.is_zero()) => Duration::ZERO,
                v => duration("stop_grace", v, d.stop_grace)?,
            },
            assess_every: match raw.assess_every.as_deref() {
                Some(v) if humantime::parse_duration(v).is_ok_and(|d| d.is_zero()) => None,
                v => Some(duration("assess_every", v, Duration::from_secs(24 * 3600))?),
            },
        })
    }
}

impl ServiceSettings {
    /// How long after `now_ms` (ms since epoch) the next scheduled cycle is due.
    pub fn next_after(&self, now_ms: i64) -> Duration {
        let Some(schedule) = &self.schedule else { return self.interval };
        let Some(now) = chrono::DateTime::from_timestamp_millis(now_ms) else { return self.interval };
        match schedule.after(&now).next() {
            Some(next) => Duration::from_millis(u64::try_from((next - now).num_milliseconds()).unwrap_or(0)),
            // A schedule with no future time (a past year): never again.
            None => Duration::from_secs(100 * 365 * 24 * 3600),
        }
    }

    /// The schedule in words, for the start message.
    pub fn describe(&self) -> String {
        match &self.schedule {
            Some(s) => format!("on the cron schedule `{s}` (UTC)"),
            None => format!("every {}", humantime::format_duration(self.interval)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let s = ServiceSettings::from_raw(&RawService::default(), Path::new("/etc")).unwrap();
        assert_eq!(s.interval, Duration::from_secs(1800));
        assert_eq!(s.assess_every, Some(Duration::from_secs(86_400)));
        assert!(s.listen.ip().is_loopback());
        let raw = RawService { assess_every: Some("0s".into()), ..RawService::default() };
        assert_eq!(ServiceSettings::from_raw(&raw, Path::new("/")).unwrap().assess_every, None);
        let raw = RawService { listen: Some("0.0.0.0:8650".into()), ..RawService::default() };
        let e = ServiceSettings::from_raw(&raw, Path::new("/etc")).unwrap_err().to_string();
        assert!(e.contains("token"), "{e}");
        let raw = RawService {
            listen: Some("0.0.0.0:8650".into()),
            token_file: Some("tok".into()),
            interval: Some("90s".into()),
            ..RawService::default()
        };
        let s = ServiceSettings::from_raw(&raw, Path::new("/etc")).unwrap();
        assert_eq!(s.token, Some(TokenSource::File("/etc/tok".into())));
        assert_eq!(s.interval, Duration::from_secs(90));
        let raw = RawService { interval: Some("often".into()), ..RawService::default() };
        assert!(ServiceSettings::from_raw(&raw, Path::new("/")).is_err());
        let raw = RawService { schedule: Some("every now and then".into()), ..RawService::default() };
        assert!(ServiceSettings::from_raw(&raw, Path::new("/")).is_err());
        let raw = RawService {
            schedule: Some("0 */30 * * * *".into()),
            interval: Some("1h".into()),
            ..RawService::default()
        };
        assert!(ServiceSettings::from_raw(&raw, Path::new("/")).is_err());
    }

    #[test]
    fn the_next_cycle_follows_the_interval_or_the_cron_schedule() {
        let s = ServiceSettings::default();
        assert_eq!(s.next_after(0), Duration::from_secs(1800));
        let raw = RawService { schedule: Some("0 */30 * * * *".into()), ..RawService::default() };
        let s = ServiceSettings::from_raw(&raw, Path::new("/")).unwrap();
        // 00:10:00 UTC -> 00:30:00 UTC; 00:30:00 -> 01:00:00.
        assert_eq!(s.next_after(600_000), Duration::from_secs(1200));
        assert_eq!(s.next_after(1_800_000), Duration::from_secs(1800));
        assert!(s.describe().contains("cron"));
    }
}
