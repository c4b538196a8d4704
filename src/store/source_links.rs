//! One-time "from me" links (table `source_links`): issued by a `/jit … from me` command, opened
//! in a browser, consumed once by the confirmation. Only the token's SHA-256 is stored.

use super::{Result, Store, Tx};
use sqlx::Row;
use sqlx::any::AnyRow;

/// What a link asks for, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLink {
    pub person: String,
    pub platform: String,
    pub user_id: String,
    pub target: String,
    pub ports: String,
    pub duration_ms: i64,
    pub reason: Option<String>,
    pub expires_at: i64,
}

impl SourceLink {
    fn from_row(r: &AnyRow) -> Result<SourceLink> {
        Ok(SourceLink {
            person: r.try_get("person")?,
            platform: r.try_get("platform")?,
            user_id: r.try_get("user_id")?,
            target: r.try_get("target")?,
            ports: r.try_get("ports")?,
            duration_ms: r.try_get("duration_ms")?,
            reason: r.try_get("reason")?,
            expires_at: r.try_get("expires_at")?,
        })
    }
}

impl Tx {
    pub async fn insert_source_link(
        &mut self,
        token_hash: &str,
        link: &SourceLink,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO source_links (token_hash, person, platform, user_id, target, ports, duration_ms, reason, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(token_hash)
        .bind(&link.person)
        .bind(&link.platform)
        .bind(&link.user_id)
        .bind(&link.target)
        .bind(&link.ports)
        .bind(link.duration_ms)
        .bind(&link.reason)
        .bind(now)
        .bind(link.expires_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// The link, while it is unused and unexpired at `now`.
    pub async fn source_link(&self, token_hash: &str, now: i64) -> Result<Option<SourceLink>> {
        let row = sqlx::query(
            "SELECT * FROM source_links WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| SourceLink::from_row(&r)).transpose()
    }

    /// Uses the link up (compare-and-swap): the link, if it was unused and unexpired at `now`.
    /// Of two confirmations at once, one gets it.
    pub async fn take_source_link(&self, token_hash: &str, now: i64) -> Result<Option<SourceLink>> {
        let Some(link) = self.source_link(token_hash, now).await? else {
            return Ok(None);
        };
        let done = sqlx::query(
            "UPDATE source_links SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok((done.rows_affected() == 1).then_some(link))
    }
}
