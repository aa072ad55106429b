-- The metaverse: joined objects, their links to connector-space objects, staged pending
-- exports, and where each connector's sync left off. Timestamps are milliseconds since the Unix
-- epoch (UTC).

-- One row per real identity. `attributes` is JSON like cs_objects.attributes; `provenance` says,
-- per attribute, which sync rule of which connector set it (for `syncctl show`).
CREATE TABLE mv_objects (
    id            INTEGER PRIMARY KEY,
    object_type   TEXT NOT NULL,           -- person, group, contact
    attributes    TEXT NOT NULL,
    provenance    TEXT NOT NULL DEFAULT '{}',
    content_hash  BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    changed_at    INTEGER NOT NULL,
    last_run_id   INTEGER
);

-- The values join rules look MV objects up by (sourceAnchor, userPrincipalName, mail...),
-- normalized by the engine (lower-cased where the join is case-insensitive).
CREATE TABLE mv_join_keys (
    attribute  TEXT NOT NULL,
    value      TEXT NOT NULL,
    mv_id      INTEGER NOT NULL,
    PRIMARY KEY (attribute, value, mv_id)
) WITHOUT ROWID;
CREATE INDEX mv_join_keys_mv ON mv_join_keys (mv_id);

-- The values outbound join rules look target connector-space objects up by
-- (onPremisesImmutableId, userPrincipalName, mail, proxyAddresses...). Maintained by sync from
-- the connector space's changes; `cs_join_marks` says how far.
CREATE TABLE cs_join_keys (
    connector_id  INTEGER NOT NULL,
    attribute     TEXT NOT NULL,
    value         TEXT NOT NULL,
    cs_id         INTEGER NOT NULL,
    PRIMARY KEY (connector_id, attribute, value, cs_id)
) WITHOUT ROWID;
CREATE INDEX cs_join_keys_cs ON cs_join_keys (cs_id);

CREATE TABLE cs_join_marks (
    connector_id  INTEGER PRIMARY KEY REFERENCES connectors(id),
    change_seq    INTEGER NOT NULL,
    fingerprint   TEXT NOT NULL            -- the join attributes indexed; another set rebuilds
);

-- A connector-space object linked to its MV object: at most one per connector and MV object.
CREATE TABLE mv_links (
    cs_id         INTEGER PRIMARY KEY REFERENCES cs_objects(id),
    mv_id         INTEGER NOT NULL REFERENCES mv_objects(id),
    connector_id  INTEGER NOT NULL REFERENCES connectors(id),
    rule          TEXT NOT NULL,           -- the sync rule that linked them
    how           TEXT NOT NULL CHECK (how IN ('projected', 'joined', 'provisioned')),
    detail        TEXT NOT NULL,           -- why: the join group and the values that matched
    linked_at     INTEGER NOT NULL,
    run_id        INTEGER,
    UNIQUE (mv_id, connector_id)
);

-- One staged change per target object: keyed by the target CS object (`cs:<id>`) once it exists,
-- by the MV object (`mv:<id>`) for an add. `changes` is JSON
-- [{"attribute": ..., "old": AttrValues|null, "new": AttrValues|null}].
CREATE TABLE pending_exports (
    id            INTEGER PRIMARY KEY,
    connector_id  INTEGER NOT NULL REFERENCES connectors(id),
    target_key    TEXT NOT NULL,
    mv_id         INTEGER,
    cs_id         INTEGER,
    operation     TEXT NOT NULL CHECK (operation IN ('add', 'update', 'delete')),
    object_type   TEXT NOT NULL,
    display       TEXT NOT NULL,           -- what a person recognizes: DN, UPN or name
    changes       TEXT NOT NULL,
    rule          TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending',
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    created_anchor TEXT,                   -- the target's anchor of an exported add, until an import confirms it
    created_run   INTEGER,
    updated_run   INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (connector_id, target_key)
);
CREATE INDEX pending_exports_mv ON pending_exports (mv_id);
CREATE INDEX pending_exports_created ON pending_exports (connector_id, created_anchor) WHERE created_anchor IS NOT NULL;

-- Where each connector's sync left off, and with which rules.
CREATE TABLE sync_marks (
    connector_id       INTEGER PRIMARY KEY REFERENCES connectors(id),
    change_seq         INTEGER NOT NULL,
    rules_fingerprint  TEXT NOT NULL,
    full_sync_at       INTEGER,
    delta_sync_at      INTEGER
);

-- A deletion-threshold stop leaves one approval: the exact set of deletes it held, released by
-- `syncctl export --approve-deletes TOKEN` once.
CREATE TABLE export_approvals (
    token         TEXT PRIMARY KEY,
    connector_id  INTEGER NOT NULL REFERENCES connectors(id),
    deletes       TEXT NOT NULL,           -- JSON: the sorted target keys of the held deletes
    created_at    INTEGER NOT NULL,
    created_run   INTEGER,
    used_at       INTEGER,
    used_run      INTEGER
);

-- The unique values (userPrincipalName, onPremisesImmutableId, proxy addresses; lower case) that
-- staged adds and updates would give their target, so that two objects never claim one value
-- (and a target object that appears with such a value is matched to the add that waits for it).
CREATE TABLE pending_unique (
    connector_id  INTEGER NOT NULL,
    attribute     TEXT NOT NULL,
    value         TEXT NOT NULL,
    target_key    TEXT NOT NULL,
    mv_id         INTEGER,
    PRIMARY KEY (connector_id, attribute, value, target_key)
) WITHOUT ROWID;
CREATE INDEX pending_unique_target ON pending_unique (connector_id, target_key);

-- Connector-space objects whose last sync failed (an error recorded in run history): the next
-- delta sync reads them again, changed or not, as MIM retries its failed objects.
CREATE TABLE sync_retries (
    connector_id  INTEGER NOT NULL,
    cs_id         INTEGER NOT NULL,
    PRIMARY KEY (connector_id, cs_id)
) WITHOUT ROWID;

-- The members of each group as the last sync saw them (kept only while a rule scopes with
-- ISMEMBEROF): a member added to or removed from a group is re-scoped by the next delta sync.
CREATE TABLE sync_group_members (
    connector_id  INTEGER NOT NULL,
    group_cs_id   INTEGER NOT NULL,
    member        TEXT NOT NULL,           -- normalized DN
    PRIMARY KEY (connector_id, group_cs_id, member)
) WITHOUT ROWID;
