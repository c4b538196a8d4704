//! Singleton jobs: periodic jobs (the reconciler, audit checkpoints) of which at most one is
//! queued or running at a time, in lane `singleton:<kind>`. Every replica makes sure one exists
//! at start; the one that runs reschedules itself (the same row).
//!
//! Two replicas starting at once on PostgreSQL may both insert one (neither's `WHERE NOT EXISTS`
//! sees the other's uncommitted row), so duplicates are retired, keeping the oldest: a younger
//! duplicate left queued would wait forever behind it in their lane.

use super::{Result, Store, now_ms};
use serde_json::Value;

impl Store {
    /// Enqueues a job of `kind` in lane `singleton:<kind>` to run at `run_at`, unless one of its
    /// kind is queued or running (one statement). True when it was added.
    pub async fn ensure_singleton(&self, kind: &str, payload: &Value, run_at: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO jobs (kind, lane, payload, state, run_at, attempts, created_at)
             SELECT $1, $2, $3, 'queued', $4, 0, $5
             WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE kind = $1 AND state IN ('queued', 'running'))",
        )
        .bind(kind)
        .bind(format!("singleton:{kind}"))
        .bind(payload.to_string())
        .bind(run_at)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves queued jobs of `kind` that would run after `run_at` forward to `run_at` (a pass at
    /// every start; a shorter interval than the one a queued job was planned with applies now).
    pub async fn bring_forward(&self, kind: &str, run_at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET run_at = $2 WHERE kind = $1 AND state = 'queued' AND run_at > $2",
        )
        .bind(kind)
        .bind(run_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// At start: marks done (`superseded`, finished at `at`) every queued job of `kind` but the
    /// oldest queued or running one. Returns how many it retired.
    pub async fn retire_younger_singletons(&self, kind: &str, at: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'done', finished_at = $2, last_error = 'superseded'
             WHERE kind = $1 AND state = 'queued' AND id > (
                SELECT MIN(id) FROM jobs WHERE kind = $1 AND state IN ('queued', 'running'))",
        )
        .bind(kind)
        .bind(at)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// By the singleton that runs (job `running`): marks done (`superseded`) every other queued
    /// job of its kind. Returns how many it retired.
    pub async fn retire_other_singletons(&self, kind: &str, running: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'done', finished_at = $3, last_error = 'superseded'
             WHERE kind = $1 AND state = 'queued' AND id <> $2",
        )
        .bind(kind)
        .bind(running)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}
