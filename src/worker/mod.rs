//! The job runner: claims due jobs, runs them concurrently, and sleeps until the next one is due
//! or a new one is added (no coarse polling: a revocation runs within milliseconds of its
//! `run_at`).

mod digest;
pub mod jobs;
mod nudge;
pub mod reconcile;
mod resolve;
mod siem;
mod slack_groups;

use crate::azure::NsgManager;
use crate::chat::ChatApi;
use crate::config::WorkerSettings;
use crate::domain::Platform;
use crate::outbox::Destinations;
use crate::policy::Policy;
use crate::store::{ClaimedJob, Store, now_ms};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

/// Jobs that close a rule (and Slack form openings): besides the `worker.concurrency` general
/// slots they have `worker.closing_concurrency` of their own.
const RESERVED_KINDS: &[&str] = crate::job::kind::RESERVED;

/// What became of a job run.
#[derive(Debug)]
pub enum Outcome {
    Done,
    /// Failed for now; try again at this time (Unix ms).
    RetryAt(i64, String),
    /// Not due yet (an extended grant, a rate limit): run again at this time.
    RescheduleAt(i64),
    /// Can never succeed; kept in the table as `dead` for inspection.
    Dead(String),
}

/// Exponential backoff with full jitter: up to `cap_ms`, starting at one second.
pub fn backoff(attempts: i64, cap_ms: i64) -> i64 {
    let exp = 1000_i64
        .saturating_mul(1 << attempts.clamp(0, 16))
        .min(cap_ms);
    rand::rng().random_range(exp / 2..=exp.max(1))
}

/// Everything the jobs need.
pub struct Worker {
    pub store: Store,
    pub nsgs: NsgManager,
    /// Reads VMs and their paths (the `resolve_targets` job).
    pub inventory: crate::azure::Inventory,
    pub chats: HashMap<Platform, Arc<dyn ChatApi>>,
    pub policy: Arc<Policy>,
    pub out: Destinations,
    pub settings: WorkerSettings,
    pub simulated: bool,
    /// This process's lease owner name.
    pub owner: String,
    /// Unix ms of the last loop iteration, for `/readyz`.
    pub heartbeat: Arc<AtomicI64>,
    /// Chat API errors and revocation lateness.
    pub metrics: crate::metrics::Metrics,
    /// Whether this process has audited its fall back to per-rule NSG writes (once).
    pub fallback_audited: std::sync::atomic::AtomicBool,
    /// Where audit events are pushed (`[siem]`); one delivery job per sink.
    pub siem: crate::siem::Sinks,
}

impl Worker {
    /// Runs until `shutdown` turns true; in-flight jobs finish or keep their lease and are
    /// retried by the next process.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        match self.store.release_orphaned_jobs().await {
            Ok(n) if n > 0 => {
                tracing::info!(jobs = n, "resuming jobs left running by a previous process")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "could not release orphaned jobs"),
        }
        if let Err(e) = self.schedule_singletons().await {
            tracing::error!(error = %e, "could not schedule the reconciler and audit checkpoints");
        }
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let closing = Arc::new(Semaphore::new(self.settings.closing_concurrency));
        let wake = self.store.jobs_added();
        let lease_ms = self.settings.lease.as_millis() as i64;
        // Every task lives in this set, so aborting the worker (a crash in tests) aborts them all.
        let mut tasks = tokio::task::JoinSet::new();
        {
            let me = self.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(me.settings.lease / 3);
                loop {
                    tick.tick().await;
                    if let Err(e) = me.store.renew_leases(&me.owner, lease_ms).await {
                        tracing::warn!(error = %e, "could not renew job leases");
                    }
                }
            });
        }
        {
            let me = self.clone();
            tasks.spawn(async move { me.store.relay_job_notifications().await });
        }
        loop {
            while tasks.try_join_next().is_some() {}
            if *shutdown.borrow() {
                break;
            }
            self.heartbeat.store(now_ms(), Ordering::Relaxed);
            // Closing rules has slots of its own, so a burst of openings (each waiting its turn
            // in an NSG's lane) can never keep a due revocation from starting.
            let mut full = false;
            for (pool, only) in [(&closing, Some(RESERVED_KINDS)), (&slots, None)] {
                let free = pool.available_permits() as i64;
                if free == 0 {
                    continue;
                }
                match self
                    .store
                    .claim_jobs(&self.owner, free, lease_ms, only)
                    .await
                {
                    Ok(jobs) => {
                        full |= jobs.len() as i64 == free;
                        let mut started = self.start_revocations(&jobs).await;
                        for job in jobs {
                            let started = started.remove(&job.id);
                            let Ok(permit) = pool.clone().acquire_owned().await else {
                                break;
                            };
                            let me = self.clone();
                            tasks.spawn(async move {
                                me.execute(job, started).await;
                                drop(permit);
                                me.store.jobs_added().notify_one();
                            });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "could not claim jobs"),
                }
            }
            if full {
                continue; // there may be more due right now
            }
            // With every general slot busy, only a closing job can start before one frees up (and
            // a finishing job wakes the loop).
            let wake_for = (slots.available_permits() == 0).then_some(RESERVED_KINDS);
            let sleep_ms = if closing.available_permits() == 0 && wake_for.is_some() {
                5_000
            } else {
                match self.store.next_wakeup(wake_for).await {
                    Ok(Some(at)) => (at - now_ms()).clamp(0, 5_000),
                    Ok(None) => 5_000,
                    Err(_) => 1_000,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
                _ = wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        // Let running jobs finish for a few seconds; whatever is left keeps its lease and runs again later.
        let _ = tokio::time::timeout(Duration::from_secs(7), async {
            let _all = slots.acquire_many(self.settings.concurrency as u32).await;
            let _closing = closing
                .acquire_many(self.settings.closing_concurrency as u32)
                .await;
        })
        .await;
        tasks.abort_all();
    }

    async fn execute(&self, job: ClaimedJob, started: Option<crate::store::RequestRow>) {
        let span = tracing::info_span!("job", id = job.id, kind = %job.kind, request_id = job.request_id.as_deref().unwrap_or(""), attempt = job.attempts);
        let outcome = match self.run_job(&job, started).instrument(span).await {
            Ok(o) => o,
            Err(e) => Outcome::RetryAt(
                now_ms() + backoff(job.attempts, 10_000),
                format!("database: {e}"),
            ),
        };
        let result = match &outcome {
            Outcome::Done => self.store.finish_job(job.id, &self.owner).await,
            Outcome::RetryAt(at, why) => self.store.retry_job(job.id, &self.owner, *at, why).await,
            Outcome::RescheduleAt(at) => {
                self.store
                    .retry_job(job.id, &self.owner, *at, "rescheduled")
                    .await
            }
            Outcome::Dead(why) => {
                tracing::error!(job = job.id, kind = %job.kind, error = %why, "job abandoned");
                self.store.bury_job(job.id, &self.owner, why).await
            }
        };
        if let Err(e) = result {
            tracing::error!(job = job.id, error = %e, "could not record job outcome; it will run again when its lease ends");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Job;

    #[test]
    fn every_job_that_closes_a_rule_has_reserved_slots() {
        let (id, nsg, rule) = ("req_1".to_string(), "n".to_string(), "r".to_string());
        let closing = [
            Job::Revoke {
                request_id: id.clone(),
            },
            Job::Cleanup {
                request_id: id.clone(),
                nsg: nsg.clone(),
                rule_name: rule.clone(),
            },
            Job::RemoveOrphan {
                request_id: Some(id.clone()),
                nsg,
                rule_name: rule,
                reason: String::new(),
                seen: serde_json::Value::Null,
            },
        ];
        for job in &closing {
            assert!(RESERVED_KINDS.contains(&job.kind()), "{}", job.kind());
        }
        assert!(!RESERVED_KINDS.contains(&Job::Apply { request_id: id }.kind()));
        // A form's trigger lives 3 s: it never waits behind a burst of openings either.
        assert!(RESERVED_KINDS.contains(&crate::job::kind::FORM_OPEN));
    }
}
