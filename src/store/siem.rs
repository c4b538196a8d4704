//! SIEM delivery: each sink's cursor in the audit trail (`siem_cursor`, migration 0004), the
//! events after it as they were hashed, and the per-sink singleton delivery job's lane.
//!
//! The cursor moves only by compare-and-swap on its previous value, in a statement of its own: a
//! delivery that lost a race (a duplicate job, a lapsed lease) cannot move it back or past events
//! nobody sent.

use super::{Result, Store, now_ms};
use serde_json::Value;
use sqlx::Row;

/// One audit event exactly as stored, with its detail as the text that was hashed (a receiver
/// re-computes the hash over that text, not over a re-serialisation of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEvent {
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub kind: String,
    pub request_id: Option<String>,
    pub actor: Option<String>,
    /// The JSON text of the detail, byte for byte as hashed.
    pub detail_text: String,
    pub simulated: bool,
    pub prev_hash: String,
    pub hash: String,
}

/// Where a sink stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiemCursor {
    /// Every event up to this seq was accepted by the sink.
    pub last_seq: i64,
    /// Consecutive failed sends since the last delivery.
    pub failures: i64,
    pub last_error: Option<String>,
}

impl Store {
    /// The sink's cursor, created at 0 on first use (a new sink receives the whole trail).
    pub async fn siem_cursor(&self, sink: &str) -> Result<SiemCursor> {
        sqlx::query(
            "INSERT INTO siem_cursor (sink, last_seq, failures, updated_at) VALUES ($1, 0, 0, $2)
             ON CONFLICT (sink) DO NOTHING",
        )
        .bind(sink)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        let row =
            sqlx::query("SELECT last_seq, failures, last_error FROM siem_cursor WHERE sink = $1")
                .bind(sink)
                .fetch_one(self.pool())
                .await?;
        Ok(SiemCursor {
            last_seq: row.try_get("last_seq")?,
            failures: row.try_get("failures")?,
            last_error: row.try_get("last_error")?,
        })
    }

    /// Moves the sink's cursor from `from` to `to` (the sink accepted every event up to `to`)
    /// and clears its failures. False when the cursor was no longer at `from`: another runner
    /// moved it, and this one must re-read it.
    pub async fn advance_siem_cursor(&self, sink: &str, from: i64, to: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE siem_cursor SET last_seq = $3, failures = 0, last_error = NULL, updated_at = $4
             WHERE sink = $1 AND last_seq = $2",
        )
        .bind(sink)
        .bind(from)
        .bind(to)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed send; returns the number of consecutive failures (for the backoff).
    pub async fn siem_send_failed(&self, sink: &str, error: &str) -> Result<i64> {
        let row = sqlx::query(
            "UPDATE siem_cursor SET failures = failures + 1, last_error = $2, updated_at = $3
             WHERE sink = $1 RETURNING failures",
        )
        .bind(sink)
        .bind(error)
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            Some(r) => r.try_get("failures")?,
            None => 1,
        })
    }

    /// Up to `limit` events after `after`, in `seq` order.
    pub async fn chain_events_after(&self, after: i64, limit: i64) -> Result<Vec<ChainEvent>> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, request_id, actor, detail, simulated, prev_hash, hash
             FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChainEvent {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    request_id: r.try_get("request_id")?,
                    actor: r.try_get("actor")?,
                    detail_text: r.try_get("detail")?,
                    simulated: r.try_get::<i64, _>("simulated")? != 0,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    /// Enqueues a job of `kind` in `lane` to run at `run_at`, unless one is queued or running in
    /// that lane (one statement); a queued one planned later is brought forward to `run_at`.
    /// Then retires every queued duplicate in the lane but the oldest (two replicas starting at
    /// once may both have inserted one). For singletons with one lane per instance (a SIEM
    /// sink's delivery), which `ensure_singleton` (one per kind) cannot express.
    pub async fn ensure_lane_singleton(
        &self,
        kind: &str,
        lane: &str,
        payload: &Value,
        run_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO jobs (kind, lane, payload, state, run_at, attempts, created_at)
             SELECT $1, $2, $3, 'queued', $4, 0, $5
             WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE lane = $2 AND state IN ('queued', 'running'))",
        )
        .bind(kind)
        .bind(lane)
        .bind(payload.to_string())
        .bind(run_at)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        sqlx::query(
            "UPDATE jobs SET run_at = $2 WHERE lane = $1 AND state = 'queued' AND run_at > $2",
        )
        .bind(lane)
        .bind(run_at)
        .execute(self.pool())
        .await?;
        sqlx::query(
            "UPDATE jobs SET state = 'done', finished_at = $2, last_error = 'superseded'
             WHERE lane = $1 AND state = 'queued' AND id > (
                SELECT MIN(id) FROM jobs WHERE lane = $1 AND state IN ('queued', 'running'))",
        )
        .bind(lane)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.jobs_added().notify_one();
        Ok(())
    }

    /// By the lane singleton that runs (job `running`): marks done (`superseded`) every other
    /// queued job in its lane. Returns how many it retired.
    pub async fn retire_other_lane_jobs(&self, lane: &str, running: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'done', finished_at = $3, last_error = 'superseded'
             WHERE lane = $1 AND state = 'queued' AND id <> $2",
        )
        .bind(lane)
        .bind(running)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}
