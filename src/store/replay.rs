//! Signed chat requests already received (table `seen_requests`, migration 0005): the replay
//! cache. A signature proves who sent a request, not that it is the first copy; this table makes
//! each signed request count once across every replica.

use super::{Result, Store};

impl Store {
    /// Records `digest` (of a verified request's signed content) until `expires_at` (Unix ms).
    /// True the first time; false when it was already recorded and has not expired: a replay.
    /// Digests expired by `now` are purged in the same transaction, so the table holds only
    /// the current window.
    pub async fn first_sighting(&self, digest: &str, expires_at: i64, now: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM seen_requests WHERE expires_at < $1")
            .bind(now)
            .execute(tx.conn())
            .await?;
        // Insert-or-nothing: of two copies racing on two replicas, the primary key lets one in.
        let inserted = sqlx::query(
            "INSERT INTO seen_requests (digest, expires_at) VALUES ($1, $2)
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest)
        .bind(expires_at)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// How many digests the cache holds now (tests and `/metrics`-style checks).
    pub async fn seen_requests(&self) -> Result<i64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM seen_requests")
            .fetch_one(self.pool())
            .await?;
        Ok(n)
    }
}
