-- syncctl metaverse database, first schema: connectors, connector spaces, watermarks, run history.
-- Timestamps are milliseconds since the Unix epoch (UTC).

CREATE TABLE connectors (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,            -- ldap-ad, ldap-openldap, graph, ldif
    created_at  INTEGER NOT NULL
);

-- One row per source object a connector has seen, keyed by its anchor. Deleted objects stay as
-- tombstones (state = 'deleted') so that sync can deprovision them.
CREATE TABLE cs_objects (
    id            INTEGER PRIMARY KEY,
    connector_id  INTEGER NOT NULL REFERENCES connectors(id),
    anchor        TEXT NOT NULL,
    immutable_id  TEXT,                   -- base64 objectGUID (AD)
    dn            TEXT NOT NULL,
    dn_norm       TEXT NOT NULL,          -- lowercase, escapes canonical
    object_class  TEXT NOT NULL,
    attributes    TEXT NOT NULL,          -- JSON: name -> {"t": syntax, "v": [values]}
    content_hash  BLOB NOT NULL,          -- BLAKE3 over dn, object class, attributes
    state         TEXT NOT NULL CHECK (state IN ('present', 'deleted')),
    upn           TEXT,                   -- lowercase userPrincipalName, for lookups
    mail          TEXT,                   -- lowercase mail, for lookups
    created_at    INTEGER NOT NULL,
    changed_at    INTEGER NOT NULL,
    change_seq    INTEGER NOT NULL,       -- global change sequence: delta sync reads above a mark
    last_run_id   INTEGER,
    UNIQUE (connector_id, anchor)
);

CREATE INDEX cs_objects_dn ON cs_objects (dn_norm);
CREATE INDEX cs_objects_immutable_id ON cs_objects (immutable_id) WHERE immutable_id IS NOT NULL;
CREATE INDEX cs_objects_upn ON cs_objects (upn) WHERE upn IS NOT NULL;
CREATE INDEX cs_objects_mail ON cs_objects (mail) WHERE mail IS NOT NULL;
CREATE INDEX cs_objects_change ON cs_objects (connector_id, change_seq);

-- Every proxyAddresses value (lowercase), for duplicate checks across connectors.
CREATE TABLE cs_proxy_addresses (
    connector_id  INTEGER NOT NULL,
    anchor        TEXT NOT NULL,
    address       TEXT NOT NULL,
    PRIMARY KEY (connector_id, anchor, address)
) WITHOUT ROWID;
CREATE INDEX cs_proxy_addresses_address ON cs_proxy_addresses (address);

-- Every DN reference (member, manager, ...) by normalized target DN, so that when an object is
-- renamed or moved the objects that refer to it can follow (AD changes a group's member values
-- when a member is renamed without the group itself being reported as changed).
CREATE TABLE cs_references (
    connector_id    INTEGER NOT NULL,
    target_dn_norm  TEXT NOT NULL,
    anchor          TEXT NOT NULL,
    PRIMARY KEY (connector_id, target_dn_norm, anchor)
) WITHOUT ROWID;
CREATE INDEX cs_references_anchor ON cs_references (connector_id, anchor);

-- Where the next delta import of a connector starts. Written in the same transaction as the
-- batch it belongs to.
CREATE TABLE watermarks (
    connector_id          INTEGER PRIMARY KEY REFERENCES connectors(id),
    kind                  TEXT,
    value                 BLOB,
    server                TEXT,
    extra                 TEXT NOT NULL DEFAULT '{}',
    run_id                INTEGER,
    updated_at            INTEGER NOT NULL,
    -- set when a full import starts, cleared when one completes: a delta after an interrupted
    -- full import runs as a full import instead.
    full_import_required  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    profile         TEXT NOT NULL,        -- full-import, delta-import, ...
    connector_id    INTEGER REFERENCES connectors(id),
    connector_name  TEXT,
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    status          TEXT NOT NULL,        -- in-progress, success, completed-with-errors, stopped-*
    adds            INTEGER NOT NULL DEFAULT 0,
    updates         INTEGER NOT NULL DEFAULT 0,
    renames         INTEGER NOT NULL DEFAULT 0,
    deletes         INTEGER NOT NULL DEFAULT 0,
    unchanged       INTEGER NOT NULL DEFAULT 0,
    errors          INTEGER NOT NULL DEFAULT 0,
    method          TEXT,                 -- paged-search, dirsync, usn, syncrepl, ...
    pages           INTEGER NOT NULL DEFAULT 0,
    notes           TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_connector ON runs (connector_id, id);
CREATE INDEX runs_connector_name ON runs (connector_name, id);

CREATE TABLE run_errors (
    id        INTEGER PRIMARY KEY,
    run_id    INTEGER NOT NULL REFERENCES runs(id),
    anchor    TEXT,
    dn        TEXT,
    kind      TEXT NOT NULL,
    message   TEXT NOT NULL,
    at        INTEGER NOT NULL
);
CREATE INDEX run_errors_run ON run_errors (run_id);

CREATE TABLE counters (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('change_seq', 0);
