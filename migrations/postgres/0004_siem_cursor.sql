-- Where each SIEM sink (`[siem.webhook.<name>]`, `[siem.logs_ingestion.<name>]`) stands in the
-- audit trail: every event with `seq <= last_seq` was accepted by the sink. The sink's delivery
-- job sends the events after it in `seq` order and moves it by compare-and-swap on `last_seq`
-- (one statement), so it never skips, never goes back, and two replicas never both move it.
-- `failures` counts consecutive failed sends (the backoff; reset by a delivery), `last_error`
-- says why the last one failed (never a secret). A sink's row appears on its first run, at 0:
-- a new sink receives the whole trail.
CREATE TABLE siem_cursor (
    sink          TEXT PRIMARY KEY,
    last_seq      BIGINT NOT NULL,
    failures      BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT,
    updated_at    BIGINT NOT NULL
);
