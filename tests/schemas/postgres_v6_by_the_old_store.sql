-- The schema (version 6) the PostgreSQL store wrote before the shared SQL log (its _DDL).
CREATE TABLE runengine_runs (
    position bigserial UNIQUE,
    run_id text PRIMARY KEY,
    agent text NOT NULL,
    status text NOT NULL,
    session_id text,
    owner text,
    created_at timestamptz,
    updated_at timestamptz,
    last_seq integer NOT NULL
);
CREATE INDEX runengine_runs_session ON runengine_runs (session_id, position);
CREATE INDEX runengine_runs_status ON runengine_runs (status, position);
CREATE INDEX runengine_runs_owner ON runengine_runs (owner, position);
CREATE INDEX runengine_runs_ended ON runengine_runs (updated_at, position) WHERE status IN ('cancelled', 'completed', 'failed');
CREATE TABLE runengine_events (
    run_id text NOT NULL,
    seq integer NOT NULL,
    type text NOT NULL,
    at timestamptz NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE runengine_snapshots (
    run_id text PRIMARY KEY,
    last_seq integer NOT NULL,
    state text NOT NULL
);

CREATE TABLE runengine_idempotency (
    principal text NOT NULL,
    scope text NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    run_id text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (principal, scope, key)
);
CREATE INDEX runengine_idempotency_run ON runengine_idempotency (run_id);
CREATE TABLE runengine_sessions (
    session_id text PRIMARY KEY,
    owner text,
    created_at timestamptz,
    expires_at timestamptz,
    ended_at timestamptz,
    metadata text NOT NULL,
    data text NOT NULL
);
CREATE TABLE runengine_queue (
    run_id text PRIMARY KEY,
    agent text NOT NULL,
    position bigserial,
    claimed boolean NOT NULL DEFAULT false,
    token uuid,
    worker text,
    lease_until timestamptz,
    claims integer NOT NULL DEFAULT 0,
    after_runs text[] NOT NULL DEFAULT '{}',
    not_before timestamptz
);
CREATE INDEX runengine_queue_waiting ON runengine_queue (position) WHERE NOT claimed;
CREATE INDEX runengine_queue_leases ON runengine_queue (lease_until) WHERE claimed;
CREATE TABLE runengine_webhooks (
    position bigserial,
    webhook_id text PRIMARY KEY,
    app_id text NOT NULL,
    url text NOT NULL,
    events text NOT NULL,
    secret text NOT NULL,
    created_at timestamptz NOT NULL,
    owner text
);
CREATE INDEX runengine_webhooks_app ON runengine_webhooks (app_id, position);

CREATE TABLE runengine_rate_windows (
    key text PRIMARY KEY,
    window_start double precision NOT NULL,
    count integer NOT NULL
);
CREATE TABLE runengine_schema (version integer NOT NULL);
INSERT INTO runengine_schema (version) VALUES (6);
-- Rows as the old store wrote them (the same run, session, key and webhook as sqlite_v4_by_the_old_store.sql).
INSERT INTO runengine_runs (run_id, agent, status, session_id, owner, created_at, updated_at, last_seq)
    VALUES ('r1', 'echo', 'completed', 's1', 'alice', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 5),
           ('r2', 'echo', 'pending', 's1', 'alice', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 1);
INSERT INTO runengine_events (run_id, seq, type, at, data) VALUES
    ('r1', 1, 'run.created', '2026-01-01T00:00:00Z', '{"agent":"echo","input":{"q":"hé"},"session_id":"s1","metadata":{},"mode":"sync","owner":"alice","timeout":null,"start_at":null}'),
    ('r1', 2, 'run.started', '2026-01-01T00:00:00Z', '{"worker":null,"attempt":1,"version":null}'),
    ('r1', 3, 'message.delta', '2026-01-01T00:00:00Z', '{"message_id":"m1","content":"hi "}'),
    ('r1', 4, 'message.completed', '2026-01-01T00:00:00Z', '{"message_id":"m1","role":"assistant","content":"hi there"}'),
    ('r1', 5, 'run.completed', '2026-01-01T00:00:00Z', '{"output":"hi there"}'),
    ('r2', 1, 'run.created', '2026-01-01T00:00:00Z', '{"agent":"echo","input":null,"session_id":"s1","metadata":{},"mode":"sync","owner":"alice","timeout":null,"start_at":null}');
INSERT INTO runengine_sessions (session_id, owner, created_at, expires_at, ended_at, metadata, data)
    VALUES ('s1', 'alice', '2026-01-01T00:00:00Z', NULL, NULL, '{"k":"v"}', '{}');
INSERT INTO runengine_idempotency (principal, scope, key, fingerprint, run_id, created_at)
    VALUES ('alice', 'native', 'k1', 'f', 'r1', '2026-01-01T00:00:00Z');
INSERT INTO runengine_webhooks (webhook_id, app_id, url, events, secret, created_at, owner)
    VALUES ('wh_1', 'app', 'https://example.com/h', '["session.started"]', 's', '2026-01-01T00:00:00Z', 'alice');
