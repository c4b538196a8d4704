-- Step-up approval: an approver's click on a `step_up` target answers with a one-time link; the
-- link starts one Entra ID sign-in (state, nonce and PKCE verifier kept here, not in a cookie);
-- the callback records who signed in; the Confirm button records the approval. Only SHA-256
-- hashes of the link token, the state and the confirm token are stored. Each step happens once:
-- `opened_at`, `callback_at` and `confirmed_at` are set by compare-and-swap. Times in Unix ms.
CREATE TABLE step_up_links (
    token_hash        TEXT PRIMARY KEY,
    request_id        TEXT NOT NULL,
    round             BIGINT NOT NULL,
    person            TEXT NOT NULL,
    platform          TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    -- Discord role ids of the click, comma-separated (approvers by role).
    roles             TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    opened_at         BIGINT,
    state_hash        TEXT UNIQUE,
    nonce             TEXT,
    pkce_verifier     TEXT,
    login_expires_at  BIGINT,
    callback_at       BIGINT,
    -- SHA-256 of a cookie set on the browser that started the sign-in; the callback needs it.
    browser_hash      TEXT,
    entra_oid         TEXT,
    entra_upn         TEXT,
    confirm_hash      TEXT UNIQUE,
    confirm_expires_at BIGINT,
    confirmed_at      BIGINT
);
