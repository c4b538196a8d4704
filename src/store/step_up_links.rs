//! Step-up links (table `step_up_links`, `service/step_up.rs`): issued by an approver's click on
//! a `step_up` target, opened once to start an Entra ID sign-in, completed once by the sign-in's
//! callback, confirmed once. Only SHA-256 hashes of the link token, the `state` and the confirm
//! token are stored; every step is a compare-and-swap, so a replay finds nothing to take.

use super::{Result, Store, Tx};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A link as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpLink {
    pub request_id: String,
    pub round: i64,
    /// The person the clicking chat user is in the policy.
    pub person: String,
    pub platform: String,
    pub user_id: String,
    /// Discord role ids of the click (approvers by role).
    pub roles: Vec<String>,
    pub expires_at: i64,
    pub nonce: Option<String>,
    pub pkce_verifier: Option<String>,
    pub login_expires_at: Option<i64>,
    pub callback_at: Option<i64>,
    /// SHA-256 of the cookie of the browser that started the sign-in.
    pub browser_hash: Option<String>,
    pub entra_oid: Option<String>,
    pub entra_upn: Option<String>,
}

/// What a sign-in started from a link keeps for its callback.
#[derive(Debug, Clone)]
pub struct StepUpLogin<'a> {
    pub state_hash: &'a str,
    pub browser_hash: &'a str,
    pub nonce: &'a str,
    pub pkce_verifier: &'a str,
    pub login_expires_at: i64,
}

impl StepUpLink {
    fn from_row(r: &AnyRow) -> Result<StepUpLink> {
        let roles: String = r.try_get("roles")?;
        Ok(StepUpLink {
            request_id: r.try_get("request_id")?,
            round: r.try_get("round")?,
            person: r.try_get("person")?,
            platform: r.try_get("platform")?,
            user_id: r.try_get("user_id")?,
            roles: roles
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            expires_at: r.try_get("expires_at")?,
            nonce: r.try_get("nonce")?,
            pkce_verifier: r.try_get("pkce_verifier")?,
            login_expires_at: r.try_get("login_expires_at")?,
            callback_at: r.try_get("callback_at")?,
            browser_hash: r.try_get("browser_hash")?,
            entra_oid: r.try_get("entra_oid")?,
            entra_upn: r.try_get("entra_upn")?,
        })
    }
}

impl Tx {
    /// Stores a new link (with its issuing click's audit event, in the caller's transaction).
    pub async fn insert_step_up_link(
        &mut self,
        token_hash: &str,
        link: &StepUpLink,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO step_up_links (token_hash, request_id, round, person, platform, user_id, roles, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(token_hash)
        .bind(&link.request_id)
        .bind(link.round)
        .bind(&link.person)
        .bind(&link.platform)
        .bind(&link.user_id)
        .bind(link.roles.join(","))
        .bind(now)
        .bind(link.expires_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    async fn step_up_where(&self, column: &str, hash: &str) -> Result<Option<StepUpLink>> {
        let sql = match column {
            "state_hash" => "SELECT * FROM step_up_links WHERE state_hash = $1",
            "confirm_hash" => "SELECT * FROM step_up_links WHERE confirm_hash = $1",
            _ => "SELECT * FROM step_up_links WHERE token_hash = $1",
        };
        let row = sqlx::query(sql)
            .bind(hash)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| StepUpLink::from_row(&r)).transpose()
    }

    /// Uses the link up to start one sign-in (compare-and-swap on `opened_at`): the link, if
    /// it was unused and unexpired at `now`.
    pub async fn open_step_up_link(
        &self,
        token_hash: &str,
        login: &StepUpLogin<'_>,
        now: i64,
    ) -> Result<Option<StepUpLink>> {
        let done = sqlx::query(
            "UPDATE step_up_links SET opened_at = $2, state_hash = $3, nonce = $4, pkce_verifier = $5, login_expires_at = $6, browser_hash = $7
             WHERE token_hash = $1 AND opened_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .bind(login.state_hash)
        .bind(login.nonce)
        .bind(login.pkce_verifier)
        .bind(login.login_expires_at)
        .bind(login.browser_hash)
        .execute(self.pool())
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        self.step_up_where("token_hash", token_hash).await
    }

    /// The sign-in a `state` belongs to, whatever became of it (to say why it is refused).
    pub async fn step_up_by_state(&self, state_hash: &str) -> Result<Option<StepUpLink>> {
        self.step_up_where("state_hash", state_hash).await
    }

    /// Uses the `state` up (compare-and-swap on `callback_at`): true if it was unused and its
    /// sign-in had not timed out at `now`. Of two callbacks with one state, one gets it.
    pub async fn take_step_up_state(&self, state_hash: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE step_up_links SET callback_at = $2
             WHERE state_hash = $1 AND callback_at IS NULL AND login_expires_at > $2",
        )
        .bind(state_hash)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records who signed in and the confirm token's hash, for the Confirm button.
    pub async fn record_step_up_identity(
        &self,
        state_hash: &str,
        oid: &str,
        upn: &str,
        confirm_hash: &str,
        confirm_expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE step_up_links SET entra_oid = $2, entra_upn = $3, confirm_hash = $4, confirm_expires_at = $5
             WHERE state_hash = $1 AND entra_oid IS NULL",
        )
        .bind(state_hash)
        .bind(oid)
        .bind(upn)
        .bind(confirm_hash)
        .bind(confirm_expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Uses the confirmation up (compare-and-swap on `confirmed_at`): the signed-in link, if it
    /// was unconfirmed and unexpired at `now`.
    pub async fn take_step_up_confirm(
        &self,
        confirm_hash: &str,
        now: i64,
    ) -> Result<Option<StepUpLink>> {
        let done = sqlx::query(
            "UPDATE step_up_links SET confirmed_at = $2
             WHERE confirm_hash = $1 AND confirmed_at IS NULL AND confirm_expires_at > $2 AND entra_oid IS NOT NULL",
        )
        .bind(confirm_hash)
        .bind(now)
        .execute(self.pool())
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        self.step_up_where("confirm_hash", confirm_hash).await
    }
}
