//! Where `vm` targets were last found (table `target_paths`): one row per target, its resolution
//! as JSON text (the shape belongs to [`crate::paths`]). The resolve job writes it with a
//! compare-and-swap on the previous text, so of two replicas seeing the same move, one reports it.

use super::{Result, Store, Tx};
use sqlx::Row;

impl Store {
    /// Every stored resolution: (target, JSON text).
    pub async fn target_paths(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT target, resolved FROM target_paths ORDER BY target")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("target")?, r.try_get("resolved")?)))
            .collect()
    }

    /// The stored resolution of `target`, if any.
    pub async fn target_path(&self, target: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT resolved FROM target_paths WHERE target = $1")
            .bind(target)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get("resolved")).transpose()?)
    }
}

impl Tx {
    /// Replaces `target`'s resolution with `new` if it still is `old` (`None`: there is none
    /// yet). False when another replica changed it first.
    pub async fn swap_target_path(
        &mut self,
        target: &str,
        old: Option<&str>,
        new: &str,
        at: i64,
    ) -> Result<bool> {
        let done =
            match old {
                None => sqlx::query(
                    "INSERT INTO target_paths (target, resolved, checked_at) VALUES ($1, $2, $3)
                     ON CONFLICT (target) DO NOTHING",
                )
                .bind(target)
                .bind(new)
                .bind(at)
                .execute(self.conn())
                .await?,
                Some(old) => {
                    sqlx::query(
                        "UPDATE target_paths SET resolved = $3, checked_at = $4
                     WHERE target = $1 AND resolved = $2",
                    )
                    .bind(target)
                    .bind(old)
                    .bind(new)
                    .bind(at)
                    .execute(self.conn())
                    .await?
                }
            };
        Ok(done.rows_affected() == 1)
    }
}
