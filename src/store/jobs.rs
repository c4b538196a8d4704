//! The durable job queue: every side effect (an ARM call, a chat message) is a row here first.
//!
//! A job is claimed with a lease (`lease_owner`, `lease_until`) that its runner renews while it
//! works; a runner that dies loses the lease and the job is claimed again. Jobs that share a
//! `lane` run one at a time in id order (chat messages of one request are delivered in order).
//! PostgreSQL claims with `FOR UPDATE SKIP LOCKED` so replicas never take the same job.

use super::{Backend, Result, Store, Tx, now_ms};
use serde_json::Value;
use sqlx::Row;

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub kind: &'static str,
    pub request_id: Option<String>,
    pub lane: Option<String>,
    pub payload: Value,
    /// Unix milliseconds; the job is not run before.
    pub run_at: i64,
}

/// A job this runner holds the lease on.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: i64,
    pub kind: String,
    pub request_id: Option<String>,
    pub payload: Value,
    /// Including this run.
    pub attempts: i64,
    pub created_at: i64,
    pub run_at: i64,
}

impl Tx {
    pub async fn enqueue(&mut self, job: JobSpec) -> Result<i64> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO jobs (kind, request_id, lane, payload, state, run_at, attempts, created_at)
             VALUES ($1, $2, $3, $4, 'queued', $5, 0, $6) RETURNING id",
        )
        .bind(job.kind)
        .bind(&job.request_id)
        .bind(&job.lane)
        .bind(job.payload.to_string())
        .bind(job.run_at)
        .bind(now)
        .fetch_one(self.conn())
        .await?;
        self.mark_enqueued();
        Ok(row.try_get("id")?)
    }

    /// Whether the request has a job of `kind` in any state (the revoke job makes one revocation
    /// watch per grant).
    pub async fn has_job(&mut self, kind: &str, request_id: &str) -> Result<bool> {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE kind = $1 AND request_id = $2")
                .bind(kind)
                .bind(request_id)
                .fetch_one(self.conn())
                .await?
                .try_get("n")?;
        Ok(n > 0)
    }

    /// Whether a rule removal for the request (a job of one of `kinds`: the reconciler's orphan
    /// removal, a failed apply's cleanup) is queued or running, or finished at or after `since`
    /// (the rule was removed after the reconciler read its NSG).
    pub async fn removal_queued_or_done_since(
        &mut self,
        kinds: [&str; 2],
        request_id: &str,
        since: i64,
    ) -> Result<bool> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE kind IN ($1, $2) AND request_id = $3
               AND (state IN ('queued', 'running') OR finished_at >= $4)",
        )
        .bind(kinds[0])
        .bind(kinds[1])
        .bind(request_id)
        .bind(since)
        .fetch_one(self.conn())
        .await?
        .try_get("n")?;
        Ok(n > 0)
    }

    /// Whether a job in `lane` is queued or running, or finished at or after `since`.
    pub async fn lane_queued_or_done_since(&mut self, lane: &str, since: i64) -> Result<bool> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE lane = $1
               AND (state IN ('queued', 'running') OR finished_at >= $2)",
        )
        .bind(lane)
        .bind(since)
        .fetch_one(self.conn())
        .await?
        .try_get("n")?;
        Ok(n > 0)
    }
}

/// PostgreSQL `NOTIFY` channel: a transaction that enqueued jobs wakes every replica's worker.
pub const JOBS_CHANNEL: &str = "jitbot_jobs";

impl Store {
    /// PostgreSQL: relays other replicas' job notifications (`LISTEN jitbot_jobs`) to this
    /// process's worker, so a job one replica enqueues can start at once on another that has
    /// free slots. Reconnects after a second when the connection drops; never returns (the worker
    /// aborts it). SQLite has one process: it returns at once.
    pub async fn relay_job_notifications(&self) {
        if self.backend() != Backend::Postgres {
            return;
        }
        loop {
            match sqlx::postgres::PgListener::connect(&self.url).await {
                Ok(mut listener) => match listener.listen(JOBS_CHANNEL).await {
                    Ok(()) => loop {
                        match listener.try_recv().await {
                            Ok(Some(_)) => self.jobs_added.notify_one(),
                            // The connection dropped: jobs may have been added meanwhile.
                            Ok(None) => self.jobs_added.notify_one(),
                            Err(e) => {
                                tracing::warn!(error = %e, "job notifications stopped; reconnecting");
                                break;
                            }
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "could not listen for job notifications"),
                },
                Err(e) => tracing::warn!(error = %e, "could not connect for job notifications"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// Claims up to `limit` due jobs for `owner`, holding them until `now + lease_ms`.
    ///
    /// `only` restricts the claim to these kinds (the worker's reserved slots for closing rules).
    pub async fn claim_jobs(
        &self,
        owner: &str,
        limit: i64,
        lease_ms: i64,
        only: Option<&[&str]>,
    ) -> Result<Vec<ClaimedJob>> {
        let now = now_ms();
        let kinds = kind_filter("j", only);
        let lock = match self.backend() {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1
             WHERE id IN (
                SELECT j.id FROM jobs j
                WHERE ((j.state = 'queued' AND j.run_at <= $3) OR (j.state = 'running' AND j.lease_until < $3))
                  AND (j.lane IS NULL OR NOT EXISTS (
                        SELECT 1 FROM jobs k WHERE k.lane = j.lane AND k.id < j.id AND k.state IN ('queued', 'running')))
                  {kinds}
                ORDER BY j.run_at, j.id
                LIMIT $4
                {lock})
             RETURNING id, kind, request_id, payload, attempts, created_at, run_at"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        let mut jobs = rows
            .iter()
            .map(|r| {
                let payload: String = r.try_get("payload")?;
                Ok(ClaimedJob {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    request_id: r.try_get("request_id")?,
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| super::StoreError::Corrupt(format!("job payload: {e}")))?,
                    attempts: r.try_get("attempts")?,
                    created_at: r.try_get("created_at")?,
                    run_at: r.try_get("run_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        jobs.sort_by_key(|j| (j.run_at, j.id));
        Ok(jobs)
    }

    /// Renews the leases of every job `owner` is running.
    pub async fn renew_leases(&self, owner: &str, lease_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET lease_until = $2 WHERE lease_owner = $1 AND state = 'running'",
        )
        .bind(owner)
        .bind(now_ms() + lease_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Releases every running job at start. Only for SQLite, where a single process owns the
    /// database, so whatever is marked running was left by a process that is gone.
    pub async fn release_orphaned_jobs(&self) -> Result<u64> {
        if self.backend() != Backend::Sqlite {
            return Ok(0);
        }
        let done = sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL WHERE state = 'running'",
        )
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Marks a job done. `lease_owner` stays: it records which replica ran it.
    pub async fn finish_job(&self, id: i64, owner: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET state = 'done', finished_at = $3, lease_until = NULL, last_error = NULL
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn retry_job(&self, id: i64, owner: &str, run_at: i64, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET state = 'queued', run_at = $3, last_error = $4, lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(run_at)
        .bind(error)
        .execute(self.pool())
        .await?;
        self.jobs_added().notify_one();
        Ok(())
    }

    /// Gives up on a job for good (it is kept for inspection).
    pub async fn bury_job(&self, id: i64, owner: &str, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET state = 'dead', finished_at = $3, last_error = $4, lease_until = NULL
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(now_ms())
        .bind(error)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// When the worker next has something to do: the earliest queued run_at or lease expiry.
    /// Queued jobs waiting behind an earlier job of their lane do not count: the lane's head
    /// finishing (a notification here, a lease expiry elsewhere) is what makes them runnable.
    ///
    /// `only` restricts it to jobs of these kinds (when only the reserved slots are free).
    pub async fn next_wakeup(&self, only: Option<&[&str]>) -> Result<Option<i64>> {
        let (j_kinds, kinds) = (kind_filter("j", only), kind_filter("jobs", only));
        let sql = format!(
            "SELECT MIN(t) AS t FROM (
                SELECT MIN(j.run_at) AS t FROM jobs j WHERE j.state = 'queued'
                  AND (j.lane IS NULL OR NOT EXISTS (
                        SELECT 1 FROM jobs k WHERE k.lane = j.lane AND k.id < j.id AND k.state IN ('queued', 'running')))
                  {j_kinds}
                UNION ALL
                SELECT MIN(lease_until) AS t FROM jobs WHERE state = 'running' {kinds}) AS x"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<Option<i64>, _>("t")?)
    }

    /// The error the request's newest job of `kind` last failed with, if any (what the
    /// revocation-delayed alert quotes).
    pub async fn last_job_error(&self, kind: &str, request_id: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT last_error FROM jobs WHERE kind = $1 AND request_id = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(kind)
        .bind(request_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row
            .map(|r| r.try_get::<Option<String>, _>("last_error"))
            .transpose()?
            .flatten())
    }

    /// Counts of jobs by kind and state (for `/metrics` and tests).
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT kind, state, COUNT(*) AS n FROM jobs GROUP BY kind, state")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }
}

/// `AND <table>.kind IN ('a', 'b')` for a list of job kinds (constants of this crate), or nothing.
fn kind_filter(table: &str, only: Option<&[&str]>) -> String {
    let Some(kinds) = only else {
        return String::new();
    };
    let list = kinds
        .iter()
        .map(|k| {
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'),
                "job kinds are plain identifiers"
            );
            format!("'{k}'")
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("AND {table}.kind IN ({list})")
}
