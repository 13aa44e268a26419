-- The queue is claimed oldest fact first: an index in that order lets the claim stop at the first
-- eligible event instead of sorting the whole backlog on every claim.
CREATE INDEX stripe_events_queue ON stripe_events (status, created, received_at, id);
