BEGIN TRANSACTION;
CREATE TABLE events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
INSERT INTO "events" VALUES('r1',1,'run.created',1767225600000000,'{"agent":"echo","input":{"q":"hé"},"session_id":"s1","metadata":{},"mode":"sync","owner":"alice","timeout":null,"start_at":null}');
INSERT INTO "events" VALUES('r1',2,'run.started',1767225600000000,'{"worker":null,"attempt":1,"version":null}');
INSERT INTO "events" VALUES('r1',3,'message.delta',1767225600000000,'{"message_id":"m1","content":"hi "}');
INSERT INTO "events" VALUES('r1',4,'message.completed',1767225600000000,'{"message_id":"m1","role":"assistant","content":"hi there"}');
INSERT INTO "events" VALUES('r1',5,'run.completed',1767225600000000,'{"output":"hi there"}');
INSERT INTO "events" VALUES('r2',1,'run.created',1767225600000000,'{"agent":"echo","input":null,"session_id":"s1","metadata":{},"mode":"sync","owner":"alice","timeout":null,"start_at":null}');
CREATE TABLE idempotency (
    principal TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    PRIMARY KEY (principal, scope, key)
) WITHOUT ROWID;
INSERT INTO "idempotency" VALUES('alice','native','k1','f','r1',1767225600000000);
CREATE TABLE runs (
    position INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    agent TEXT NOT NULL,
    status TEXT NOT NULL,
    session_id TEXT,
    owner TEXT,
    created_at TEXT,
    updated_at TEXT,
    last_seq INTEGER NOT NULL,
    ended_us INTEGER
);
INSERT INTO "runs" VALUES(1,'r1','echo','completed','s1','alice','2026-01-01T00:00:00.000000+00:00','2026-01-01T00:00:00.000000+00:00',5,1767225600000000);
INSERT INTO "runs" VALUES(2,'r2','echo','pending','s1','alice','2026-01-01T00:00:00.000000+00:00','2026-01-01T00:00:00.000000+00:00',1,NULL);
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO "schema_version" VALUES(4);
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    owner TEXT,
    created_at TEXT,
    expires_at TEXT,
    ended_at TEXT,
    metadata TEXT NOT NULL,
    data TEXT NOT NULL
);
INSERT INTO "sessions" VALUES('s1','alice','2026-01-01T00:00:00.000000+00:00',NULL,NULL,'{"k":"v"}','{}');
CREATE TABLE snapshots (
    run_id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    state TEXT NOT NULL
);
INSERT INTO "snapshots" VALUES('r1',3,'{"run_id":"r1","agent":"echo","status":"running","input":{"q":"hé"},"session_id":"s1","metadata":{},"mode":"sync","owner":"alice","timeout":null,"messages":[],"partial":{"message_id":"m1","role":"assistant","content":"hi "},"thoughts":[],"tool_calls":[],"usage":{"input_tokens":0,"output_tokens":0,"cost":0.0},"inputs":[],"await_request":null,"output":null,"error":null,"cancel_reason":null,"created_at":"2026-01-01T00:00:00.000000Z","started_at":"2026-01-01T00:00:00.000000Z","finished_at":null,"updated_at":"2026-01-01T00:00:00.000000Z","attempt":1,"worker":null,"start_at":null,"version":null,"sleeping_until":null,"timer_id":null,"input_expires_at":null,"suspended":false,"lost_attempts":0,"discarded":[],"steps":0,"replay_from":0,"last_seq":3}');
CREATE TABLE webhooks (
    webhook_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at TEXT NOT NULL,
    owner TEXT
);
INSERT INTO "webhooks" VALUES('wh_1','app','https://example.com/h','["session.started"]','s','2026-01-01T00:00:00.000000+00:00','alice');
CREATE INDEX runs_by_session ON runs (session_id, position);
CREATE INDEX runs_by_status ON runs (status, position);
CREATE INDEX runs_by_owner ON runs (owner, position);
CREATE INDEX idempotency_by_run ON idempotency (run_id);
CREATE INDEX webhooks_by_app ON webhooks (app_id);
CREATE INDEX runs_by_ended ON runs (ended_us, position) WHERE ended_us IS NOT NULL;
COMMIT;
