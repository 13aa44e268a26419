-- Presence changes worth keeping for reports: who was available, away, ringing, in a call, when.
CREATE TABLE presence_events (
    id       TEXT PRIMARY KEY,
    org_id   TEXT   NOT NULL REFERENCES orgs (id),
    agent_id TEXT   NOT NULL REFERENCES agents (id),
    presence TEXT   NOT NULL CHECK (presence IN ('offline', 'available', 'away', 'ringing', 'in_call')),
    reason   TEXT   NOT NULL,
    at       BIGINT NOT NULL
);
CREATE INDEX presence_events_org ON presence_events (org_id, at);
CREATE INDEX presence_events_agent ON presence_events (agent_id, at);
