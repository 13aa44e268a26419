-- frontdesk schema, SQLite dialect. Keep in step with migrations/postgres/0001_init.sql.
-- Times are unix milliseconds (BIGINT). Ids are UUID text. Removal is soft: history keeps its rows.
-- Booleans are INTEGER 0/1 here (sqlx's Any driver cannot read SQLite's BOOLEAN type); BOOLEAN in PostgreSQL.

CREATE TABLE orgs (
    id                     TEXT PRIMARY KEY,
    name                   TEXT    NOT NULL,
    status                 TEXT    NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active', 'past_due', 'paused', 'cancelled')),
    plan                   TEXT    NOT NULL DEFAULT 'free',
    seat_limit             BIGINT  NOT NULL DEFAULT 5 CHECK (seat_limit >= 0),
    ring_timeout_ms        BIGINT  NOT NULL DEFAULT 15000 CHECK (ring_timeout_ms BETWEEN 5000 AND 120000),
    cobrowse_enabled       INTEGER NOT NULL DEFAULT TRUE,
    recording_enabled      INTEGER NOT NULL DEFAULT FALSE,
    retention_days         BIGINT  NOT NULL DEFAULT 30 CHECK (retention_days BETWEEN 1 AND 3650),
    blocked_countries      TEXT    NOT NULL DEFAULT '',
    queue_when_unavailable INTEGER NOT NULL DEFAULT TRUE,
    created_at             BIGINT  NOT NULL,
    updated_at             BIGINT  NOT NULL
);

CREATE TABLE pools (
    id         TEXT PRIMARY KEY,
    org_id     TEXT    NOT NULL REFERENCES orgs (id),
    name       TEXT    NOT NULL,
    is_default INTEGER NOT NULL DEFAULT FALSE,
    created_at BIGINT  NOT NULL,
    removed_at BIGINT
);
CREATE INDEX pools_org ON pools (org_id);
CREATE UNIQUE INDEX pools_one_default ON pools (org_id) WHERE is_default = TRUE AND removed_at IS NULL;
CREATE UNIQUE INDEX pools_live_name ON pools (org_id, name) WHERE removed_at IS NULL;

CREATE TABLE pool_rules (
    id          TEXT PRIMARY KEY,
    org_id      TEXT   NOT NULL REFERENCES orgs (id),
    pool_id     TEXT   NOT NULL REFERENCES pools (id),
    domain      TEXT   NOT NULL,
    path_prefix TEXT   NOT NULL DEFAULT '/',
    priority    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);
CREATE INDEX pool_rules_org ON pool_rules (org_id);
CREATE INDEX pool_rules_pool ON pool_rules (pool_id);

CREATE TABLE agents (
    id           TEXT PRIMARY KEY,
    org_id       TEXT   NOT NULL REFERENCES orgs (id),
    user_id      TEXT   NOT NULL,
    email        TEXT   NOT NULL,
    display_name TEXT   NOT NULL,
    role         TEXT   NOT NULL CHECK (role IN ('admin', 'agent')),
    created_at   BIGINT NOT NULL,
    removed_at   BIGINT
);
CREATE INDEX agents_org ON agents (org_id);
CREATE UNIQUE INDEX agents_live_user ON agents (org_id, user_id) WHERE removed_at IS NULL;

CREATE TABLE pool_members (
    pool_id    TEXT   NOT NULL REFERENCES pools (id),
    agent_id   TEXT   NOT NULL REFERENCES agents (id),
    org_id     TEXT   NOT NULL REFERENCES orgs (id),
    tier       BIGINT NOT NULL DEFAULT 1 CHECK (tier BETWEEN 1 AND 10),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (pool_id, agent_id)
);
CREATE INDEX pool_members_agent ON pool_members (agent_id);

CREATE TABLE widget_keys (
    id         TEXT PRIMARY KEY,
    org_id     TEXT   NOT NULL REFERENCES orgs (id),
    key        TEXT   NOT NULL UNIQUE,
    label      TEXT   NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX widget_keys_org ON widget_keys (org_id);

CREATE TABLE visitor_sessions (
    id            TEXT PRIMARY KEY,
    org_id        TEXT   NOT NULL REFERENCES orgs (id),
    widget_key_id TEXT   NOT NULL REFERENCES widget_keys (id),
    pool_id       TEXT   NOT NULL REFERENCES pools (id),
    page_url      TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL
);
CREATE INDEX visitor_sessions_org ON visitor_sessions (org_id, created_at);

CREATE TABLE calls (
    id                 TEXT PRIMARY KEY,
    org_id             TEXT   NOT NULL REFERENCES orgs (id),
    pool_id            TEXT   NOT NULL REFERENCES pools (id),
    visitor_session_id TEXT   NOT NULL REFERENCES visitor_sessions (id),
    agent_id           TEXT REFERENCES agents (id),
    state              TEXT   NOT NULL
                       CHECK (state IN ('requested', 'ringing', 'connected', 'reconnecting', 'ended')),
    requested_at       BIGINT NOT NULL,
    rung_at            BIGINT,
    answered_at        BIGINT,
    ended_at           BIGINT,
    end_reason         TEXT,
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);
CREATE INDEX calls_org ON calls (org_id, requested_at);
CREATE INDEX calls_agent ON calls (agent_id);
CREATE INDEX calls_open ON calls (state) WHERE ended_at IS NULL;

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    org_id      TEXT   NOT NULL REFERENCES orgs (id),
    actor       TEXT   NOT NULL,
    action      TEXT   NOT NULL,
    target_type TEXT   NOT NULL,
    target_id   TEXT   NOT NULL,
    details     TEXT   NOT NULL DEFAULT '{}',
    at          BIGINT NOT NULL
);
CREATE INDEX audit_log_org ON audit_log (org_id, at);

-- Secrets the server generates for itself (visitor-token key, local JWT key), shared by every
-- node that uses the same database.
CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
