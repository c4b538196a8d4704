-- Signed chat requests already received (Slack and Discord), so that one captured and resent
-- inside the 5-minute signature window is refused: the digest of what was signed (platform,
-- timestamp, raw body) is the key, and inserting it decides (a second insert finds the row).
-- Shared through the database, so a replay sent to another replica is refused too. A row expires
-- when its timestamp leaves the window (a copy is refused as stale from then on); expired rows are
-- purged as new ones arrive, which bounds the table by the request rate times the window.
CREATE TABLE seen_requests (
    digest      TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX seen_requests_expires_at ON seen_requests (expires_at);
