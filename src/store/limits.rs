//! What the abuse limits count (`crate::limits`), read inside the request's transaction after
//! [`Tx::lock_limits`], so that two replicas (or two clicks of one person) cannot both pass a
//! limit that only one of them may.

use super::{Backend, Result, Tx};
use sqlx::Row;

/// Key of the PostgreSQL advisory lock that serialises limit checks (any fixed number; "jitl").
const LIMITS_LOCK: i64 = 0x6a69_746c;

/// How many rows a count found, and the earliest of the times it asked for (Unix ms): when the
/// first of them frees up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: i64,
    pub earliest: Option<i64>,
}

impl Tx {
    /// Serialises limit checks until this transaction ends. PostgreSQL: a transaction-scoped
    /// advisory lock (replicas share it). SQLite: one connection makes every transaction serial
    /// already.
    pub async fn lock_limits(&mut self) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(LIMITS_LOCK)
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }

    async fn tally(&mut self, sql: &'static str, key: &str, since: Option<i64>) -> Result<Tally> {
        let mut q = sqlx::query(sql).bind(key);
        if let Some(since) = since {
            q = q.bind(since);
        }
        let row = q.fetch_one(self.conn()).await?;
        Ok(Tally {
            count: row.try_get("n")?,
            earliest: row.try_get("first")?,
        })
    }

    /// `person`'s requests waiting for approval, and the earliest time one of them times out.
    pub async fn pending_of(&mut self, person: &str) -> Result<Tally> {
        self.tally(
            "SELECT COUNT(*) AS n, MIN(pending_until) AS first FROM requests
             WHERE requester = $1 AND status = 'pending'",
            person,
            None,
        )
        .await
    }

    /// `person`'s requests made after `since`, and the earliest of them.
    pub async fn requests_of_since(&mut self, person: &str, since: i64) -> Result<Tally> {
        self.tally(
            "SELECT COUNT(*) AS n, MIN(created_at) AS first FROM requests
             WHERE requester = $1 AND created_at > $2",
            person,
            Some(since),
        )
        .await
    }

    /// Requests of `target` waiting, open or closing, and the earliest expiry of the open ones.
    pub async fn holding(&mut self, target: &str) -> Result<Tally> {
        self.tally(
            "SELECT COUNT(*) AS n, MIN(expires_at) AS first FROM requests
             WHERE target = $1 AND status IN ('pending','approved','applying','active','revoking')",
            target,
            None,
        )
        .await
    }

    /// Auto-approvals of `target` made after `since`, and the earliest of them.
    pub async fn auto_approvals_since(&mut self, target: &str, since: i64) -> Result<Tally> {
        self.tally(
            "SELECT COUNT(*) AS n, MIN(created_at) AS first FROM requests
             WHERE target = $1 AND auto_approved = 1 AND created_at > $2",
            target,
            Some(since),
        )
        .await
    }

    /// Records that policy approved request `id` (counted by [`Tx::auto_approvals_since`]).
    pub async fn mark_auto_approved(&mut self, id: &str) -> Result<()> {
        sqlx::query("UPDATE requests SET auto_approved = 1 WHERE id = $1")
            .bind(id)
            .execute(self.conn())
            .await?;
        Ok(())
    }
}
