-- One-time "from me" links: the person opens it from the computer they will connect from and
-- confirms the address jitbot sees. Only a SHA-256 of the token is stored; a link is used at most
-- once (`used_at`) and only until `expires_at` (Unix ms).
CREATE TABLE source_links (
    token_hash  TEXT PRIMARY KEY,
    person      TEXT NOT NULL,
    platform    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    target      TEXT NOT NULL,
    ports       TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    reason      TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
