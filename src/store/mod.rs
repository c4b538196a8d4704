//! The database: the single source of truth for requests, decisions, jobs, chat message
//! references and the audit chain.
//!
//! One code path for SQLite (embedded default, one replica) and PostgreSQL (several replicas),
//! through sqlx's `Any` driver with `$n` placeholders; the few statements that differ are chosen by
//! [`Backend`]. Times are Unix milliseconds.
//!
//! Every status change is a compare-and-swap (`UPDATE … WHERE id = $1 AND status = $2`) inside a
//! [`Tx`] that also appends its audit event and enqueues its jobs: they commit together or not at all.

pub mod audit;
mod grant_reads;
pub mod jobs;
mod limits;
mod replay;
pub mod siem;
mod singletons;
mod slack_groups;
mod source_links;
mod step_up_links;
mod target_paths;

use crate::domain::Platform;
use crate::domain::Status;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};
use std::sync::Arc;
use tokio::sync::Notify;

pub use audit::{AuditEvent, AuditKind};
pub use jobs::{ClaimedJob, JobSpec};
pub use limits::Tally;
pub use slack_groups::GroupTable;
pub use source_links::SourceLink;
pub use step_up_links::{StepUpLink, StepUpLogin};

/// Which SQL dialect is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The URL connected to (holds the password: never log it). PostgreSQL's job notifications
    /// need a connection of their own.
    url: Arc<str>,
    /// Woken whenever a transaction that enqueued a job commits, so the worker re-plans its sleep.
    jobs_added: Arc<Notify>,
}

impl Store {
    /// Connects, creating the SQLite file if needed, and applies migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let pool = match backend {
            Backend::Sqlite => {
                let url = if url.contains('?') || url.contains(":memory:") {
                    url.to_string()
                } else {
                    format!("{url}?mode=rwc")
                };
                // One connection: SQLite serialises writers anyway, and a single connection makes
                // every transaction strictly serial (no SQLITE_BUSY on read→write upgrades).
                AnyPoolOptions::new()
                    .max_connections(1)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA busy_timeout = 5000")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                // Several replicas share the server: a modest pool each (the worker's jobs and the
                // handlers hold a connection only for one short transaction), and a short acquire
                // timeout so a handler answers "try again" well within Slack's 3 s when the
                // database is gone instead of hanging.
                AnyPoolOptions::new()
                    .max_connections(10)
                    .acquire_timeout(std::time::Duration::from_secs(2))
                    .connect(url)
                    .await?
            }
        };
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        } else {
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
        }
        Ok(Store {
            pool,
            backend,
            url: url.into(),
            jobs_added: Arc::new(Notify::new()),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for the statements in this module and its children. Nothing outside `store/`
    /// runs SQL.
    fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes every connection (waits for the ones in use to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The notification the worker waits on besides its timer.
    pub fn jobs_added(&self) -> Arc<Notify> {
        self.jobs_added.clone()
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// True when the database would accept a write now: a transaction that takes the write lock
    /// (an UPDATE that matches no row) and rolls back. A database that answers reads but cannot
    /// be written (SQLite locked by another process, a read-only PostgreSQL replica) is not
    /// writable. The readiness probe; the caller bounds how long it waits.
    pub async fn writable(&self) -> bool {
        let probe = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 0 AND seq < 0")
                .execute(&mut *tx)
                .await?;
            tx.rollback().await
        };
        probe.await.is_ok()
    }

    pub async fn begin(&self) -> Result<Tx> {
        Ok(Tx {
            tx: self.pool.begin().await?,
            backend: self.backend,
            enqueued: false,
            jobs_added: self.jobs_added.clone(),
        })
    }

    pub async fn request(&self, id: &str) -> Result<Option<RequestRow>> {
        let row = sqlx::query("SELECT * FROM requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| RequestRow::from_row(&r)).transpose()
    }

    /// A person's requests that are not finished, newest first.
    pub async fn open_requests_of(&self, person: &str) -> Result<Vec<RequestRow>> {
        let rows = sqlx::query(
            "SELECT * FROM requests WHERE requester = $1 AND status IN ('pending','approved','applying','active','revoking') ORDER BY created_at DESC",
        )
        .bind(person)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RequestRow::from_row).collect()
    }

    pub async fn decisions(&self, id: &str) -> Result<Vec<DecisionRow>> {
        let rows = sqlx::query(
            "SELECT round, approver, decision, platform, at FROM decisions WHERE request_id = $1 ORDER BY at, approver",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DecisionRow {
                    round: r.try_get("round")?,
                    approver: r.try_get("approver")?,
                    decision: r.try_get("decision")?,
                    platform: r.try_get("platform")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// Where the approval card of a request lives on a platform.
    pub async fn card(
        &self,
        request_id: &str,
        platform: Platform,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT channel, message_id FROM chat_messages WHERE request_id = $1 AND platform = $2",
        )
        .bind(request_id)
        .bind(platform.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("channel")?, r.try_get("message_id")?)))
            .collect()
    }

    pub async fn save_card(
        &self,
        request_id: &str,
        platform: Platform,
        channel: &str,
        message_id: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO chat_messages (request_id, platform, channel, message_id, posted_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (request_id, platform, channel) DO UPDATE SET message_id = excluded.message_id",
        )
        .bind(request_id)
        .bind(platform.as_str())
        .bind(channel)
        .bind(message_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Counts of requests by status (for `/metrics` and `jitbot grants`).
    pub async fn status_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM requests GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    /// Per target, how many seconds past its expiry its most overdue grant whose rule may still
    /// be open (active or revoking) is at `now` (none: no row).
    pub async fn overdue_by_target(&self, now: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT target, MAX($1 - expires_at) / 1000 AS late FROM requests
             WHERE status IN ('active', 'revoking') AND expires_at < $1 GROUP BY target",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("target")?, r.try_get("late")?)))
            .collect()
    }

    /// How many of `requester`'s other requests on `target` were opened since `since`.
    pub async fn recent_grants(
        &self,
        requester: &str,
        target: &str,
        except: &str,
        since: i64,
    ) -> Result<i64> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM requests
             WHERE requester = $1 AND target = $2 AND id <> $3 AND activated_at >= $4",
        )
        .bind(requester)
        .bind(target)
        .bind(except)
        .bind(since)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(n)
    }

    /// Requests in the given statuses, oldest first.
    pub async fn requests_in(&self, statuses: &[Status]) -> Result<Vec<RequestRow>> {
        let list = statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM requests WHERE status IN ({list}) ORDER BY created_at"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RequestRow::from_row).collect()
    }
}

/// One row of `requests`.
#[derive(Debug, Clone)]
pub struct RequestRow {
    pub id: String,
    pub requester: String,
    pub platform: Platform,
    pub requester_chat_id: String,
    pub target: String,
    /// The rule's NSGs, in evaluation order, with the priority it got in each once open. The
    /// grant is active only when it is open in every one.
    pub rules: Vec<GrantRule>,
    pub ports: String,
    pub protocol: String,
    pub source: String,
    pub destination: String,
    pub duration_ms: i64,
    pub reason: Option<String>,
    pub status: Status,
    pub approvals_required: i64,
    pub round: i64,
    pub extension_ms: Option<i64>,
    pub extension_by: Option<String>,
    pub created_at: i64,
    pub pending_until: i64,
    /// When the first PUT of the rule may have been sent: the grant's clock starts here.
    pub apply_started_at: Option<i64>,
    pub activated_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub closed_at: Option<i64>,
    pub rule_name: String,
    pub detail: Option<String>,
    pub simulated: bool,
}

/// A grant's rule in one NSG.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GrantRule {
    pub nsg: String,
    /// The priority it got there (recorded when the grant opened; `None` before).
    #[serde(default)]
    pub priority: Option<i64>,
}

impl GrantRule {
    /// Rules not open yet, one per NSG.
    pub fn unopened(nsgs: &[String]) -> Vec<GrantRule> {
        nsgs.iter()
            .map(|nsg| GrantRule {
                nsg: nsg.clone(),
                priority: None,
            })
            .collect()
    }
}

fn rules_json(rules: &[GrantRule]) -> String {
    serde_json::to_string(rules).unwrap_or_default()
}

impl RequestRow {
    /// The grant's rule in `nsg` (NSG ids compare case-insensitively), if the path has it.
    pub fn rule_in(&self, nsg: &str) -> Option<&GrantRule> {
        self.rules.iter().find(|r| r.nsg.eq_ignore_ascii_case(nsg))
    }

    /// The NSGs' names, for people: `web1-subnet-nsg, web1-nic-nsg`.
    pub fn nsg_names(&self) -> String {
        self.rules
            .iter()
            .map(|r| crate::domain::nsg_name(&r.nsg))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Rows from before migration 0003 keep their one rule in `nsg`/`rule_priority`.
    fn rules_from_row(r: &AnyRow) -> Result<Vec<GrantRule>> {
        match r.try_get::<Option<String>, _>("rules")? {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("rules {json}: {e}"))),
            None => Ok(vec![GrantRule {
                nsg: r.try_get("nsg")?,
                priority: r.try_get("rule_priority")?,
            }]),
        }
    }

    fn from_row(r: &AnyRow) -> Result<RequestRow> {
        let status: String = r.try_get("status")?;
        let platform: String = r.try_get("platform")?;
        Ok(RequestRow {
            id: r.try_get("id")?,
            requester: r.try_get("requester")?,
            platform: Platform::parse(&platform)
                .ok_or_else(|| StoreError::Corrupt(format!("platform {platform}")))?,
            requester_chat_id: r.try_get("requester_chat_id")?,
            target: r.try_get("target")?,
            rules: RequestRow::rules_from_row(r)?,
            ports: r.try_get("ports")?,
            protocol: r.try_get("protocol")?,
            source: r.try_get("source")?,
            destination: r.try_get("destination")?,
            duration_ms: r.try_get("duration_ms")?,
            reason: r.try_get("reason")?,
            status: Status::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
            approvals_required: r.try_get("approvals_required")?,
            round: r.try_get("round")?,
            extension_ms: r.try_get("extension_ms")?,
            extension_by: r.try_get("extension_by")?,
            created_at: r.try_get("created_at")?,
            pending_until: r.try_get("pending_until")?,
            apply_started_at: r.try_get("apply_started_at")?,
            activated_at: r.try_get("activated_at")?,
            expires_at: r.try_get("expires_at")?,
            closed_at: r.try_get("closed_at")?,
            rule_name: r.try_get("rule_name")?,
            detail: r.try_get("detail")?,
            simulated: r.try_get::<i64, _>("simulated")? != 0,
        })
    }

    pub fn ports_list(&self) -> Vec<u16> {
        self.ports
            .split(',')
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

/// One approver's decision.
#[derive(Debug, Clone)]
pub struct DecisionRow {
    pub round: i64,
    pub approver: String,
    pub decision: String,
    pub platform: String,
    pub at: i64,
}

/// A new request, as policy shaped it.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: String,
    pub requester: String,
    pub platform: Platform,
    pub requester_chat_id: String,
    pub target: String,
    /// The NSGs the rule goes into, in evaluation order.
    pub nsgs: Vec<String>,
    pub ports: String,
    pub protocol: String,
    pub source: String,
    pub destination: String,
    pub duration_ms: i64,
    pub reason: Option<String>,
    pub status: Status,
    pub approvals_required: i64,
    pub created_at: i64,
    pub pending_until: i64,
    pub rule_name: String,
    pub simulated: bool,
}

/// A transaction: status changes, audit events and jobs that commit together.
pub struct Tx {
    tx: Transaction<'static, Any>,
    backend: Backend,
    enqueued: bool,
    jobs_added: Arc<Notify>,
}

impl Tx {
    pub async fn commit(mut self) -> Result<()> {
        if self.enqueued && self.backend == Backend::Postgres {
            // Delivered at commit to every replica listening (`Store::relay_job_notifications`).
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT pg_notify('{}', '')",
                jobs::JOBS_CHANNEL
            )))
            .execute(&mut *self.tx)
            .await?;
        }
        self.tx.commit().await?;
        if self.enqueued {
            self.jobs_added.notify_one();
        }
        Ok(())
    }

    pub async fn insert_request(&mut self, r: &NewRequest) -> Result<()> {
        sqlx::query(
            "INSERT INTO requests (id, requester, platform, requester_chat_id, target, nsg, ports, protocol, source,
                destination, duration_ms, reason, status, approvals_required, round, created_at, pending_until,
                rule_name, simulated, updated_at, rules)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,0,$15,$16,$17,$18,$15,$19)",
        )
        .bind(&r.id)
        .bind(&r.requester)
        .bind(r.platform.as_str())
        .bind(&r.requester_chat_id)
        .bind(&r.target)
        .bind(r.nsgs.first().map(String::as_str).unwrap_or_default())
        .bind(&r.ports)
        .bind(&r.protocol)
        .bind(&r.source)
        .bind(&r.destination)
        .bind(r.duration_ms)
        .bind(&r.reason)
        .bind(r.status.as_str())
        .bind(r.approvals_required)
        .bind(r.created_at)
        .bind(r.pending_until)
        .bind(&r.rule_name)
        .bind(r.simulated as i64)
        .bind(rules_json(&GrantRule::unopened(&r.nsgs)))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn request(&mut self, id: &str) -> Result<Option<RequestRow>> {
        let row = sqlx::query("SELECT * FROM requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| RequestRow::from_row(&r)).transpose()
    }

    /// Compare-and-swap on status: moves `id` from `from` to `to`; false when it was not in `from`
    /// (someone else won the race). `detail` replaces the request's detail when given.
    pub async fn transition(
        &mut self,
        id: &str,
        from: Status,
        to: Status,
        detail: Option<&str>,
    ) -> Result<bool> {
        let now = now_ms();
        let closed = if to.is_terminal() { Some(now) } else { None };
        let done = sqlx::query(
            "UPDATE requests SET status = $3, detail = COALESCE($4, detail), closed_at = COALESCE($5, closed_at), updated_at = $6
             WHERE id = $1 AND status = $2",
        )
        .bind(id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(detail)
        .bind(closed)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// `approved → applying`, recording when the rule may first be open (kept if already set).
    /// Committed before the PUT is sent, so a crash after the PUT can never restart the clock.
    pub async fn begin_apply(&mut self, id: &str, at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE requests SET status = 'applying', apply_started_at = COALESCE(apply_started_at, $2), updated_at = $2
             WHERE id = $1 AND status = 'approved'",
        )
        .bind(id)
        .bind(at)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// `applying → active`: the rule is confirmed live in every NSG of `rules` (with the
    /// priorities it got). `expires_at` counts from `apply_started_at`, not from now.
    pub async fn activate(
        &mut self,
        id: &str,
        rules: &[GrantRule],
        activated_at: i64,
        expires_at: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE requests SET status = 'active', rules = $2, rule_priority = $5, activated_at = $3, expires_at = $4, updated_at = $3
             WHERE id = $1 AND status = 'applying'",
        )
        .bind(id)
        .bind(rules_json(rules))
        .bind(activated_at)
        .bind(expires_at)
        .bind(rules.first().and_then(|r| r.priority))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes the request's row lock without changing it, until the transaction ends: what is
    /// decided under it (e.g. "has this alert been sent?") is decided by one replica at a time.
    pub async fn lock_request(&mut self, id: &str) -> Result<()> {
        sqlx::query("UPDATE requests SET updated_at = updated_at WHERE id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Records the priority an active grant's rule has now in `nsg` (the reconciler put it back
    /// on another one because its recorded priority was taken). Does nothing unless it is active.
    /// Under the row lock, so two writers never lose each other's update of the list.
    pub async fn record_rule_priority(&mut self, id: &str, nsg: &str, priority: i64) -> Result<()> {
        self.lock_request(id).await?;
        let Some(mut row) = self.request(id).await? else {
            return Ok(());
        };
        if row.status != Status::Active {
            return Ok(());
        }
        for r in row
            .rules
            .iter_mut()
            .filter(|r| r.nsg.eq_ignore_ascii_case(nsg))
        {
            r.priority = Some(priority);
        }
        sqlx::query(
            "UPDATE requests SET rules = $2, rule_priority = $3, updated_at = $4 WHERE id = $1 AND status = 'active'",
        )
        .bind(id)
        .bind(rules_json(&row.rules))
        .bind(row.rules.first().and_then(|r| r.priority))
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Takes the request's row lock for the current approval round; false when the round is no
    /// longer open (decided, expired, or a newer round started). Serialises concurrent clicks.
    pub async fn lock_round(&mut self, id: &str, status: Status, round: i64) -> Result<bool> {
        let done = sqlx::query(
            // An extension round (> 0) is open only while its extension is pending: once decided it
            // keeps its number, and a click that read the request before that decision must not
            // decide it again.
            "UPDATE requests SET updated_at = $4
             WHERE id = $1 AND status = $2 AND round = $3 AND ($3 = 0 OR extension_ms IS NOT NULL)",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(round)
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a decision; false when this approver already decided this round.
    pub async fn insert_decision(
        &mut self,
        id: &str,
        round: i64,
        approver: &str,
        decision: &str,
        platform: Platform,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO decisions (request_id, round, approver, decision, platform, at) VALUES ($1,$2,$3,$4,$5,$6)
             ON CONFLICT (request_id, round, approver) DO NOTHING",
        )
        .bind(id)
        .bind(round)
        .bind(approver)
        .bind(decision)
        .bind(platform.as_str())
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn approvals(&mut self, id: &str, round: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM decisions WHERE request_id = $1 AND round = $2 AND decision = 'approve'",
        )
        .bind(id)
        .bind(round)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Opens an extension round on an active grant (CAS on status and round).
    pub async fn open_extension(
        &mut self,
        id: &str,
        round: i64,
        extension_ms: i64,
        by: &str,
        pending_until: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE requests SET round = $2 + 1, extension_ms = $3, extension_by = $4, pending_until = $5, updated_at = $6
             WHERE id = $1 AND status = 'active' AND round = $2 AND extension_ms IS NULL",
        )
        .bind(id)
        .bind(round)
        .bind(extension_ms)
        .bind(by)
        .bind(pending_until)
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Closes the extension round `round`: applies it (new expiry) or drops it.
    pub async fn close_extension(
        &mut self,
        id: &str,
        round: i64,
        new_expires_at: Option<i64>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE requests SET extension_ms = NULL, extension_by = NULL, expires_at = COALESCE($3, expires_at), updated_at = $4
             WHERE id = $1 AND status = 'active' AND round = $2 AND extension_ms IS NOT NULL",
        )
        .bind(id)
        .bind(round)
        .bind(new_expires_at)
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves an active grant's expiry directly (extension without a new approval round).
    pub async fn set_expiry(&mut self, id: &str, round: i64, expires_at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE requests SET expires_at = $3, round = $2 + 1, updated_at = $4
             WHERE id = $1 AND status = 'active' AND round = $2 AND extension_ms IS NULL",
        )
        .bind(id)
        .bind(round)
        .bind(expires_at)
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The transaction's connection, for the statements in this module and its children.
    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    /// Remembers that a job was enqueued, so that the commit wakes the worker(s).
    fn mark_enqueued(&mut self) {
        self.enqueued = true;
    }
}
