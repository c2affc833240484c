-- The request journal: one row per request id, written before the request goes to any
-- worker. Shipped migrations are never edited (the gateway refuses to start when an applied
-- file's checksum changed); add a new numbered file instead.
--
-- Times are milliseconds since the Unix epoch (UTC).
CREATE TABLE requests (
    request_id TEXT PRIMARY KEY NOT NULL CHECK (length(request_id) BETWEEN 1 AND 128),
    method TEXT NOT NULL CHECK (length(method) > 0),
    -- NULL: every environment / any instance.
    target_environment TEXT,
    target_instance TEXT,
    payload BLOB NOT NULL,
    -- Who asked: admin, dhcp, replay, generated.
    origin TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'completed', 'failed', 'expired')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    deadline_at INTEGER NOT NULL,
    -- The gateway process that holds a pending or in-flight row (pid@boot).
    lease_owner TEXT,
    responder_instance TEXT,
    responder_environment TEXT,
    -- ok, not_found, no_receivers, deadline_exceeded, failed: the last attempt's outcome.
    outcome TEXT,
    result_payload BLOB,
    error TEXT
);

-- Recovery and the retry loop read the unfinished rows only.
CREATE INDEX requests_unfinished ON requests (next_attempt_at) WHERE state IN ('pending', 'in_flight');
-- Listing, retention and stats.
CREATE INDEX requests_state_updated ON requests (state, updated_at);
CREATE INDEX requests_created ON requests (created_at);
