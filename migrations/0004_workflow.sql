-- Notification workflows: set membership, requests (one per set transition that a policy
-- turns into a workflow run), the mail outbox with every delivery attempt, and the sets'
-- definitions as last evaluated. Timestamps are milliseconds since the Unix epoch (UTC).
-- Nothing here holds a secret: the SMTP password is read at delivery time and never stored,
-- and transcripts are written with the AUTH exchange hidden.

-- The members of each configured set, as the last sync (or time-based evaluation) saw them.
-- Written in the transaction of the sync batch whose metaverse changes moved them.
CREATE TABLE set_members (
    set_name  TEXT NOT NULL,
    mv_id     INTEGER NOT NULL,
    since     INTEGER NOT NULL,
    PRIMARY KEY (set_name, mv_id)
) WITHOUT ROWID;
CREATE INDEX set_members_mv ON set_members (mv_id);

-- Each set's criteria as they were when its membership was last computed in full: a set whose
-- criteria change is evaluated again over the whole metaverse, silently (no transitions).
CREATE TABLE set_definitions (
    set_name      TEXT PRIMARY KEY,
    fingerprint   TEXT NOT NULL,
    evaluated_at  INTEGER NOT NULL
);

-- One row per set transition that a policy turned into a workflow run (FIM's Request). Its
-- status (pending, delivered, failed, dead-letter) is derived from its messages and `error`.
CREATE TABLE workflow_requests (
    id           INTEGER PRIMARY KEY,
    mv_id        INTEGER NOT NULL,           -- the target; no foreign key: it may be deleted later
    object       TEXT NOT NULL,              -- what a person recognizes: display name, UPN or mv:<id>
    set_name     TEXT NOT NULL,
    transition   TEXT NOT NULL CHECK (transition IN ('in', 'out')),
    policy       TEXT NOT NULL,
    workflow     TEXT NOT NULL,
    error        TEXT,                       -- what the workflow could not do (no address, template error)
    run_id       INTEGER,                    -- the sync run whose batch made the transition
    created_at   INTEGER NOT NULL
);
CREATE INDEX workflow_requests_mv ON workflow_requests (mv_id);

-- The durable outbox: one message per recipient, rendered when the request was made.
CREATE TABLE mail_outbox (
    id               INTEGER PRIMARY KEY,
    request_id       INTEGER REFERENCES workflow_requests(id),  -- NULL: `mail test`, operator notices
    activity         TEXT NOT NULL,          -- the workflow activity, `mail-test` or `operator`
    recipient_role   TEXT NOT NULL,          -- target, manager, set:<name>, address, operator
    sender           TEXT NOT NULL,
    recipient        TEXT NOT NULL,
    subject          TEXT NOT NULL,
    text_body        TEXT NOT NULL,
    html_body        TEXT,
    message_id       TEXT NOT NULL UNIQUE,   -- the Message-ID header, stable across attempts
    status           TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'delivered', 'dead-letter')),
    attempts         INTEGER NOT NULL DEFAULT 0,  -- since it was last queued (`mail retry` resets it)
    next_attempt_at  INTEGER NOT NULL,
    last_attempt_at  INTEGER,
    last_reply       TEXT,                   -- the last SMTP reply (or connection error)
    delivered_at     INTEGER,
    dead_at          INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX mail_outbox_due ON mail_outbox (status, next_attempt_at);
CREATE INDEX mail_outbox_request ON mail_outbox (request_id);

-- Every delivery attempt, with its SMTP transcript (credentials never written). An attempt is
-- recorded as `in-progress` before the first byte goes out: one found so at the next delivery
-- run ended with the process and is closed as `interrupted`.
CREATE TABLE mail_attempts (
    id          INTEGER PRIMARY KEY,
    mail_id     INTEGER NOT NULL REFERENCES mail_outbox(id) ON DELETE CASCADE,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    outcome     TEXT NOT NULL CHECK (outcome IN ('in-progress', 'delivered', 'transient', 'permanent', 'interrupted')),
    reply       TEXT,
    transcript  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX mail_attempts_mail ON mail_attempts (mail_id);
