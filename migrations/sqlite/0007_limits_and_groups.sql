-- Slack user groups named in the policy (`slack-group:<id>`): their members as
-- `usergroups.users.list` last answered, and when (Unix ms). Refreshed by the `slack_groups`
-- singleton job; read at click time, where a membership older than 3 refresh intervals counts
-- as unknown (fail closed).
CREATE TABLE slack_groups (
    group_id      TEXT PRIMARY KEY,
    refreshed_at  BIGINT NOT NULL
);
CREATE TABLE slack_group_members (
    group_id  TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX slack_group_members_user ON slack_group_members (user_id);

-- Abuse limits count from the requests table in the request's transaction: auto-approvals per
-- target and interval, requests per person and hour, open requests per target.
ALTER TABLE requests ADD COLUMN auto_approved BIGINT NOT NULL DEFAULT 0;
CREATE INDEX requests_requester_created ON requests (requester, created_at);
CREATE INDEX requests_target_status ON requests (target, status);
