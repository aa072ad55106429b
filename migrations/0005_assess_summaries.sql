-- The service's memory of two things it reports and decides on.
--
-- assess_summaries: the summary of each readiness assessment (`syncctl assess` run against the
-- configured database, or the one `syncctl serve` runs after a full cycle and at least daily),
-- shown on the status page and in /metrics. Counts only: findings stay in the report files.
CREATE TABLE assess_summaries (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,          -- ms since the Unix epoch (UTC)
    origin      TEXT NOT NULL,             -- 'assess' (the command) or 'serve' (scheduled)
    verdict     TEXT NOT NULL,             -- ready, warnings, errors
    objects     INTEGER NOT NULL,          -- objects the rules ran on
    errors      INTEGER NOT NULL,          -- findings by severity
    warnings    INTEGER NOT NULL,
    infos       INTEGER NOT NULL,
    by_rule     TEXT NOT NULL,             -- JSON: [{"rule", "severity", "count"}], catalogue order
    sources     TEXT NOT NULL              -- JSON: ["connector name", ...]
);
CREATE INDEX assess_summaries_at ON assess_summaries (at);

-- connector_settings: the fingerprint (a hash of a connector's settings, credentials excluded)
-- with which its last full import and full sync completed. A cycle that finds another one runs
-- a full import and a full sync of that connector (Entra Connect does so after a connector's
-- configuration changes), then records the new fingerprint.
CREATE TABLE connector_settings (
    connector_name  TEXT PRIMARY KEY,
    fingerprint     TEXT NOT NULL,
    recorded_at     INTEGER NOT NULL
);
