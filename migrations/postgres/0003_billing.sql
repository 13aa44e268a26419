-- Billing: the org's Stripe identity and entitlement state, the durable webhook queue, and the
-- notifications outbox.
ALTER TABLE orgs ADD COLUMN stripe_customer_id TEXT;
ALTER TABLE orgs ADD COLUMN stripe_subscription_id TEXT;
-- frontdesk_billing::Entitlement as JSON; '{}' is a subscription in good standing (or none).
ALTER TABLE orgs ADD COLUMN entitlement TEXT NOT NULL DEFAULT '{}';
-- When the status may change without a new event (grace period or cancelled period ends).
ALTER TABLE orgs ADD COLUMN billing_next_check BIGINT;
CREATE UNIQUE INDEX orgs_stripe_customer ON orgs (stripe_customer_id) WHERE stripe_customer_id IS NOT NULL;

CREATE TABLE stripe_events (
    id              TEXT PRIMARY KEY,
    type            TEXT   NOT NULL,
    created         BIGINT NOT NULL,
    payload         TEXT   NOT NULL,
    status          TEXT   NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'done', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until    BIGINT,
    last_error      TEXT,
    org_id          TEXT,
    -- Facts about one customer are applied in order: an event waits while an earlier one of the
    -- same customer is still queued.
    customer        TEXT,
    received_at     BIGINT NOT NULL,
    processed_at    BIGINT
);
CREATE INDEX stripe_events_due ON stripe_events (status, next_attempt_at);
CREATE INDEX stripe_events_customer ON stripe_events (customer, created);

CREATE TABLE notifications (
    id              TEXT PRIMARY KEY,
    org_id          TEXT   NOT NULL REFERENCES orgs (id),
    kind            TEXT   NOT NULL,
    to_addr         TEXT   NOT NULL,
    subject         TEXT   NOT NULL,
    body            TEXT   NOT NULL,
    status          TEXT   NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    -- One notification per cause and recipient, however often the cause is processed.
    dedup_key       TEXT   NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
CREATE INDEX notifications_org ON notifications (org_id, created_at);
