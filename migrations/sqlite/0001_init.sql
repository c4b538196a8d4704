-- jitbot schema (SQLite). Times are Unix milliseconds (BIGINT) so the same queries run on
-- SQLite and PostgreSQL through sqlx's Any driver.

CREATE TABLE requests (
    id                     TEXT PRIMARY KEY,
    requester              TEXT NOT NULL,          -- person name from the policy
    platform               TEXT NOT NULL,          -- slack | discord: where it was asked
    requester_chat_id      TEXT NOT NULL,          -- the requester's user id on that platform
    target                 TEXT NOT NULL,
    nsg                    TEXT NOT NULL,
    ports                  TEXT NOT NULL,          -- "22,3389"
    protocol               TEXT NOT NULL,
    source                 TEXT NOT NULL,          -- rule source prefix
    destination            TEXT NOT NULL,
    duration_ms            BIGINT NOT NULL,
    reason                 TEXT,
    status                 TEXT NOT NULL,
    approvals_required     BIGINT NOT NULL,
    round                  BIGINT NOT NULL DEFAULT 0,  -- approval round: 0 = request, n = nth extension
    extension_ms           BIGINT,                 -- extension awaiting approval in `round`
    extension_by           TEXT,
    created_at             BIGINT NOT NULL,
    pending_until          BIGINT NOT NULL,        -- approval TTL of the current round
    activated_at           BIGINT,
    expires_at             BIGINT,
    closed_at              BIGINT,
    rule_name              TEXT NOT NULL,
    rule_priority          BIGINT,
    detail                 TEXT,                   -- last failure or closing reason
    simulated              BIGINT NOT NULL DEFAULT 0,
    updated_at             BIGINT NOT NULL
);
CREATE INDEX requests_status ON requests (status);
CREATE INDEX requests_requester ON requests (requester, status);

CREATE TABLE decisions (
    request_id  TEXT NOT NULL REFERENCES requests (id),
    round       BIGINT NOT NULL,
    approver    TEXT NOT NULL,
    decision    TEXT NOT NULL,                     -- approve | deny
    platform    TEXT NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (request_id, round, approver)
);

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    request_id   TEXT,
    lane         TEXT,                             -- jobs sharing a lane run one at a time, in id order
    payload      TEXT NOT NULL,                    -- JSON
    state        TEXT NOT NULL,                    -- queued | running | done | dead
    run_at       BIGINT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  BIGINT,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX jobs_due ON jobs (state, run_at);
CREATE INDEX jobs_lane ON jobs (lane, state);

CREATE TABLE chat_messages (
    request_id  TEXT NOT NULL,
    platform    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    posted_at   BIGINT NOT NULL,
    PRIMARY KEY (request_id, platform, channel)
);

CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    request_id  TEXT,
    actor       TEXT,
    detail      TEXT NOT NULL,                     -- JSON object
    simulated   BIGINT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_events_request ON audit_events (request_id);

-- The chain head: one row, locked by every append so events get consecutive seq numbers.
CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY,
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
