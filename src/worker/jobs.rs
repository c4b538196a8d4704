//! The jobs: what each kind does when it runs. Every handler is idempotent: it re-reads the
//! request, acts only if the status still calls for it, and changes status by compare-and-swap.

use super::{Outcome, Worker, backoff};
use crate::azure::RuleSpec;
use crate::chat::{ChatError, Dedupe, Message, MessageRef, Tone};
use crate::domain::Platform;
use crate::domain::{GrantDuration, Status, grant_description};
use crate::job::Job;
use crate::messages::{self, clock};
use crate::outbox;
use crate::store::{AuditKind, ClaimedJob, GrantRule, RequestRow, Result, Tx, now_ms};
use serde_json::json;
use std::collections::HashMap;

fn notice(req: &RequestRow, tone: Tone, title: &str, text: String) -> Message {
    messages::notice(req, tone, title, text)
}

impl Worker {
    pub(super) async fn run_job(
        &self,
        claimed: &ClaimedJob,
        started: Option<RequestRow>,
    ) -> Result<Outcome> {
        let job: Job = match serde_json::from_value(claimed.payload.clone()) {
            Ok(j) => j,
            Err(e) => return Ok(Outcome::Dead(format!("unreadable job payload: {e}"))),
        };
        let outcome = self.dispatch(claimed, job, started).await;
        self.audit_fallback().await?;
        outcome
    }

    /// Once per process: ARM refused an NSG-level write (403) and `azure.nsg_writes = "auto"`
    /// fell back to per-rule writes for good; the audit trail says so.
    async fn audit_fallback(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if !self.nsgs.fell_back() || self.fallback_audited.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        tx.audit(
            AuditKind::NsgWritesFallback,
            None,
            Some("jitbot"),
            json!({ "reason": "403 on an NSG-level write: the identity lacks Microsoft.Network/networkSecurityGroups/write; per-rule writes from now on" }),
            self.simulated,
        )
        .await?;
        tx.commit().await
    }

    async fn dispatch(
        &self,
        claimed: &ClaimedJob,
        job: Job,
        started: Option<RequestRow>,
    ) -> Result<Outcome> {
        match job {
            Job::Apply { request_id } => self.apply(claimed, &request_id).await,
            Job::Revoke { request_id } => self.revoke(claimed, &request_id, started).await,
            Job::Expire { request_id, round } => self.expire(&request_id, round).await,
            Job::Cleanup {
                request_id,
                nsg,
                rule_name,
            } => self.cleanup(claimed, &request_id, &nsg, &rule_name).await,
            Job::ChatPost {
                platform,
                channel,
                message,
                ..
            } => {
                let dedupe = Dedupe::for_job(claimed.id, claimed.created_at, claimed.attempts);
                Ok(self
                    .chat(claimed, platform, |api| async move {
                        api.post(&channel, &message, &dedupe).await.map(drop)
                    })
                    .await)
            }
            Job::ChatCard {
                platform,
                channel,
                request_id,
            } => {
                self.post_card(claimed, platform, &channel, &request_id)
                    .await
            }
            Job::ChatCardUpdate {
                platform,
                request_id,
            } => self.update_cards(claimed, platform, &request_id).await,
            Job::Reconcile => self.reconcile(claimed).await,
            Job::Checkpoint => self.checkpoint(claimed).await,
            Job::RemoveOrphan {
                request_id,
                nsg,
                rule_name,
                reason,
                seen,
            } => {
                self.remove_orphan(
                    claimed,
                    request_id.as_deref(),
                    &nsg,
                    &rule_name,
                    &reason,
                    &seen,
                )
                .await
            }
            Job::RevocationWatch { request_id } => {
                self.revocation_watch(claimed, &request_id).await
            }
            Job::Relabel { request_id } => self.relabel(claimed, &request_id).await,
            Job::ResolveTargets => self.resolve_targets(claimed).await,
            Job::Digest => self.digest(claimed).await,
            Job::Remind { request_id } => self.remind(&request_id).await,
            Job::NudgeApprovers { request_id } => self.nudge_approvers(&request_id).await,
            Job::Escalate { request_id } => self.escalate(&request_id).await,
            Job::SiemDeliver { sink } => self.deliver_siem(claimed, &sink).await,
            Job::FormOpen {
                platform,
                trigger_id,
                form,
                expires_at,
            } => {
                if now_ms() > expires_at {
                    // Slack would answer `expired_trigger_id`: the person runs `/jit` again.
                    return Ok(Outcome::Dead("the form's trigger expired (3 s)".into()));
                }
                Ok(self
                    .chat(claimed, platform, |api| async move {
                        api.open_form(&trigger_id, &form).await
                    })
                    .await)
            }
            Job::FormUpdate {
                platform,
                view_id,
                hash,
                form,
            } => Ok(self
                .chat(claimed, platform, |api| async move {
                    api.update_form(&view_id, hash.as_deref(), &form).await
                })
                .await),
            Job::SlackGroups => self.refresh_slack_groups(claimed).await,
        }
    }

    pub(super) async fn announce(&self, tx: &mut Tx, req: &RequestRow, n: &Message) -> Result<()> {
        outbox::tell_requester(tx, req, n).await?;
        self.out.feed(tx, Some(&req.id), n).await?;
        self.out.refresh_cards(tx, &req.id).await
    }

    async fn apply(&self, claimed: &ClaimedJob, id: &str) -> Result<Outcome> {
        let Some(req) = self.store.request(id).await? else {
            return Ok(Outcome::Dead(format!("request {id} does not exist")));
        };
        // The grant's clock starts when its first PUT may have been sent, recorded before the
        // PUT: a crash after the PUT must never let the rule stay open for the downtime *plus*
        // the whole duration.
        let started = match req.status {
            Status::Approved => {
                let now = now_ms();
                let mut tx = self.store.begin().await?;
                if !tx.begin_apply(id, now).await? {
                    return Ok(Outcome::Done);
                }
                tx.commit().await?;
                now
            }
            // Resumed after a crash or a retry: ensure_rule is idempotent, the clock kept running.
            // Every `applying` row has `apply_started_at` (migration 0002 backfilled older ones);
            // the creation time is the earliest it could be.
            Status::Applying => req.apply_started_at.unwrap_or(req.created_at),
            _ => return Ok(Outcome::Done),
        };
        let Some(target) = self.policy.targets.get(&req.target) else {
            return self
                .fail(
                    &req,
                    &format!("target {} is no longer in the policy", req.target),
                )
                .await;
        };
        let spec = RuleSpec {
            access: Default::default(),
            name: req.rule_name.clone(),
            description: grant_description(&req.id, &req.requester, started + req.duration_ms),
            protocol: req.protocol.clone(),
            source: req.source.clone(),
            destination: req.destination.clone(),
            ports: req.ports_list(),
            band: target.priority_band,
        };
        match self.open_everywhere(&req, &spec).await {
            Ok(rules) => {
                crate::crashpoint::hit("after_put");
                self.activated(&req, &rules, started).await
            }
            Err(e)
                if e.is_retryable()
                    && now_ms() - claimed.created_at
                        < self.settings.apply_deadline.as_millis() as i64 =>
            {
                tracing::warn!(request_id = id, nsgs = %req.nsg_names(), error = %e, "apply failed; will retry");
                Ok(Outcome::RetryAt(
                    now_ms() + backoff(claimed.attempts, 30_000),
                    e.to_string(),
                ))
            }
            Err(e) => self.fail(&req, &e.to_string()).await,
        }
    }

    /// Opens the rule in every NSG on the path, in evaluation order (each NSG's writes under its
    /// own lane). Idempotent: an NSG where it is already in place keeps it.
    async fn open_everywhere(
        &self,
        req: &RequestRow,
        spec: &RuleSpec,
    ) -> std::result::Result<Vec<GrantRule>, crate::azure::AzureError> {
        let mut rules = Vec::with_capacity(req.rules.len());
        for rule in &req.rules {
            let applied = self.nsgs.ensure_rule(&rule.nsg, spec).await?;
            rules.push(GrantRule {
                nsg: rule.nsg.clone(),
                priority: Some(i64::from(applied.priority)),
            });
        }
        Ok(rules)
    }

    /// The rule is open in every NSG: `applying → active`, the revoke at expiry, the news.
    async fn activated(
        &self,
        req: &RequestRow,
        rules: &[GrantRule],
        started: i64,
    ) -> Result<Outcome> {
        let id = req.id.as_str();
        let now = now_ms();
        let expires = started + req.duration_ms;
        let mut tx = self.store.begin().await?;
        if !tx.activate(id, rules, now, expires).await? {
            // Someone moved the request on while we opened the rule: never leave it open.
            enqueue_cleanups(&mut tx, req).await?;
            tx.commit().await?;
            return Ok(Outcome::Done);
        }
        tx.audit(
            AuditKind::Applied,
            Some(id),
            Some("jitbot"),
            json!({ "nsg": rules[0].nsg, "rule": req.rule_name, "priority": rules[0].priority, "rules": rules,
                    "apply_started_at": started, "expires_at": expires,
                    "ports": req.ports, "source": req.source, "destination": req.destination }),
            req.simulated,
        )
        .await?;
        Job::Revoke {
            request_id: id.into(),
        }
        .enqueue(&mut tx, expires)
        .await?;
        let text = if expires > now {
            format!(
                "{} port {} is open from {} until {} ({})",
                req.target,
                req.ports,
                req.source,
                clock(expires, req.duration_ms < 600_000),
                GrantDuration::from_millis(req.duration_ms)
            )
        } else {
            // jitbot was down between the PUT and recording it: the time ran out then.
            format!(
                "{} port {} is open from {} since {}, but jitbot could only confirm it now; \
                 its {} have run out, so it closes now",
                req.target,
                req.ports,
                req.source,
                clock(started, true),
                GrantDuration::from_millis(req.duration_ms)
            )
        };
        let open = notice(req, Tone::Success, "Access open", text);
        // The requester's copy carries Extend and I'm done; the audit channel's does not.
        let mut theirs = open.clone();
        theirs.buttons = self.grant_buttons(req, expires, now);
        outbox::tell_requester(&mut tx, req, &theirs).await?;
        self.out.feed(&mut tx, Some(&req.id), &open).await?;
        self.out.refresh_cards(&mut tx, &req.id).await?;
        let before = self.settings.reminder_before.as_millis() as i64;
        if before > 0 && req.duration_ms >= 3 * before && expires - before > now {
            Job::Remind {
                request_id: id.into(),
            }
            .enqueue(&mut tx, expires - before)
            .await?;
        }
        tx.commit().await?;
        tracing::info!(request_id = id, nsgs = %req.nsg_names(), "grant active");
        Ok(Outcome::Done)
    }

    /// Extend and I'm done for the requester of an open grant.
    fn grant_buttons(&self, req: &RequestRow, expires: i64, now: i64) -> Vec<crate::chat::Button> {
        let max = self
            .policy
            .targets
            .get(&req.target)
            .map(|t| t.max_duration.as_millis());
        messages::grant_buttons(req, expires, max, now)
    }

    /// `reminder_before` an open grant's expiry: tell the requester, with Extend and I'm done.
    /// Follows extensions (a grant extended after its reminder gets another before its new
    /// expiry) and ends with the grant.
    async fn remind(&self, id: &str) -> Result<Outcome> {
        let Some(req) = self.store.request(id).await? else {
            return Ok(Outcome::Done);
        };
        let Some(expires) = req.expires_at.filter(|_| req.status == Status::Active) else {
            return Ok(Outcome::Done);
        };
        let now = now_ms();
        let due = expires - self.settings.reminder_before.as_millis() as i64;
        if now < due {
            return Ok(Outcome::RescheduleAt(due));
        }
        if now >= expires {
            return Ok(Outcome::Done); // its revoke job is closing it
        }
        let text = format!(
            "{} port {} from {} closes {}. Need longer? Extend it; finished? Close it now.",
            req.target,
            req.ports,
            req.source,
            messages::until(expires, now)
        );
        let mut reminder = notice(&req, Tone::Info, "Closing soon", text);
        reminder.buttons = self.grant_buttons(&req, expires, now);
        let mut tx = self.store.begin().await?;
        outbox::tell_requester(&mut tx, &req, &reminder).await?;
        tx.commit().await?;
        // Look again just after this expiry: if it was extended meanwhile, remind again.
        Ok(Outcome::RescheduleAt(expires + 1000))
    }

    /// The request could not be opened: mark it failed, tell everyone, and make sure no rule stays.
    async fn fail(&self, req: &RequestRow, why: &str) -> Result<Outcome> {
        let mut tx = self.store.begin().await?;
        if tx
            .transition(&req.id, Status::Applying, Status::Failed, Some(why))
            .await?
        {
            tx.audit(
                AuditKind::Failed,
                Some(&req.id),
                Some("jitbot"),
                json!({ "error": why, "nsg": req.rules[0].nsg, "nsgs": req.rules.iter().map(|r| &r.nsg).collect::<Vec<_>>() }),
                req.simulated,
            )
            .await?;
            // Wherever the rule may have opened (a failure on the second NSG rolls back the first).
            enqueue_cleanups(&mut tx, req).await?;
            let text = format!("could not open {} port {}: {why}", req.target, req.ports);
            self.announce(
                &mut tx,
                req,
                &notice(req, Tone::Danger, "Access failed", text),
            )
            .await?;
        }
        tx.commit().await?;
        tracing::error!(request_id = %req.id, nsgs = %req.nsg_names(), error = why, "grant failed");
        Ok(Outcome::Done)
    }

    /// Starts the due revocations among `jobs` in one transaction: each still-active, expired
    /// grant becomes `revoking` with its revocation watch. Committing them one by one would feed
    /// an expiry wave to the NSG lanes a few at a time (a write each); together they reach ARM
    /// at once and share one NSG-level write per NSG. Returns the rows it moved, by job id; a
    /// job not returned (or a failure here) does its own transition as before.
    pub(super) async fn start_revocations(&self, jobs: &[ClaimedJob]) -> HashMap<i64, RequestRow> {
        let due: Vec<(i64, String)> = jobs
            .iter()
            .filter_map(|j| match serde_json::from_value(j.payload.clone()) {
                Ok(Job::Revoke { request_id }) => Some((j.id, request_id)),
                _ => None,
            })
            .collect();
        if due.len() < 2 {
            return HashMap::new();
        }
        match self.start_revocations_in_one(&due).await {
            Ok(started) => started,
            Err(e) => {
                tracing::warn!(error = %e, "could not start revocations together; one by one instead");
                HashMap::new()
            }
        }
    }

    async fn start_revocations_in_one(
        &self,
        due: &[(i64, String)],
    ) -> Result<HashMap<i64, RequestRow>> {
        let now = now_ms();
        let mut started = HashMap::new();
        let mut tx = self.store.begin().await?;
        for (job, id) in due {
            let Some(mut req) = tx.request(id).await? else {
                continue;
            };
            if req.status != Status::Active || req.expires_at.is_none_or(|e| e > now) {
                continue;
            }
            if !tx
                .transition(id, Status::Active, Status::Revoking, Some("expired"))
                .await?
            {
                continue;
            }
            self.enqueue_watch(&mut tx, &req).await?;
            req.status = Status::Revoking;
            started.insert(*job, req);
        }
        tx.commit().await?;
        Ok(started)
    }

    /// Closes a grant's rule. `started` is the row when [`Worker::start_revocations`] already
    /// moved it to `revoking` (with its watch) together with the rest of a wave.
    async fn revoke(
        &self,
        claimed: &ClaimedJob,
        id: &str,
        started: Option<RequestRow>,
    ) -> Result<Outcome> {
        if let Some(req) = started {
            return self.close_rule(claimed, id, req).await;
        }
        let Some(req) = self.store.request(id).await? else {
            return Ok(Outcome::Dead(format!("request {id} does not exist")));
        };
        let now = now_ms();
        match req.status {
            Status::Active => {
                let expires = req.expires_at.unwrap_or(now);
                if expires > now {
                    // Extended since this job was scheduled: sleep until the new expiry.
                    return Ok(Outcome::RescheduleAt(expires));
                }
                let mut tx = self.store.begin().await?;
                if !tx
                    .transition(id, Status::Active, Status::Revoking, Some("expired"))
                    .await?
                {
                    return Ok(Outcome::Done);
                }
                tx.commit().await?;
            }
            Status::Revoking => {}
            _ => return Ok(Outcome::Done),
        }
        self.watch_revocation(&req).await?;
        self.close_rule(claimed, id, req).await
    }

    /// The second half of [`Self::revoke`]: the grant is `revoking` and watched; remove its rule
    /// everywhere and record `revoked`.
    async fn close_rule(&self, claimed: &ClaimedJob, id: &str, req: RequestRow) -> Result<Outcome> {
        match self.remove_everywhere(&req).await {
            Ok(()) => {
                crate::crashpoint::hit("after_delete");
                let closed = now_ms();
                let late_ms = req.expires_at.map(|e| closed - e);
                let early = req
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.starts_with("revoked early"));
                let mut tx = self.store.begin().await?;
                if tx
                    .transition(id, Status::Revoking, Status::Revoked, None)
                    .await?
                {
                    tx.audit(
                        AuditKind::Revoked,
                        Some(id),
                        Some("jitbot"),
                        json!({ "nsg": req.rules[0].nsg, "nsgs": req.rules.iter().map(|r| &r.nsg).collect::<Vec<_>>(), "rule": req.rule_name, "early": early, "late_ms": if early { None } else { late_ms } }),
                        req.simulated,
                    )
                    .await?;
                    if !early && let Some(late) = late_ms {
                        self.metrics.revocation_lateness(late);
                    }
                    let alert_ms = self.settings.revocation_alert_after.as_millis() as i64;
                    let lateness = match late_ms {
                        Some(late) if !early && late >= alert_ms => format!(
                            " It closed {} after its expiry: revocation was delayed.",
                            super::reconcile::human_ms(late)
                        ),
                        _ => String::new(),
                    };
                    let text = format!(
                        "{} port {} is closed to {} ({}). Connections already open continue until they end.{lateness}",
                        req.target,
                        req.ports,
                        req.source,
                        if early {
                            req.detail.clone().unwrap_or_default()
                        } else {
                            "expired".to_string()
                        }
                    );
                    self.announce(
                        &mut tx,
                        &req,
                        &notice(&req, Tone::Info, "Access closed", text),
                    )
                    .await?;
                }
                tx.commit().await?;
                tracing::info!(request_id = id, nsgs = %req.nsg_names(), late_ms, "grant revoked");
                Ok(Outcome::Done)
            }
            // Never give up on closing a port: retry until Azure lets us.
            Err(e) => {
                tracing::error!(request_id = id, nsgs = %req.nsg_names(), error = %e, attempts = claimed.attempts, "revoke failed; retrying");
                Ok(Outcome::RetryAt(
                    now_ms() + backoff(claimed.attempts, 15_000),
                    e.to_string(),
                ))
            }
        }
    }

    /// Closes the rule in every NSG on the path; stops at the first failure (the job retries;
    /// the NSGs already done answer 404 next time, which counts as done).
    async fn remove_everywhere(
        &self,
        req: &RequestRow,
    ) -> std::result::Result<(), crate::azure::AzureError> {
        for rule in &req.rules {
            self.nsgs.remove_rule(&rule.nsg, &req.rule_name).await?;
        }
        Ok(())
    }

    async fn cleanup(
        &self,
        claimed: &ClaimedJob,
        id: &str,
        nsg: &str,
        rule: &str,
    ) -> Result<Outcome> {
        match self.nsgs.remove_rule(nsg, rule).await {
            Ok(()) => {
                let mut tx = self.store.begin().await?;
                tx.audit(
                    AuditKind::RuleCleanup,
                    Some(id),
                    Some("jitbot"),
                    json!({ "nsg": nsg, "rule": rule }),
                    self.simulated,
                )
                .await?;
                tx.commit().await?;
                Ok(Outcome::Done)
            }
            Err(e) => Ok(Outcome::RetryAt(
                now_ms() + backoff(claimed.attempts, 15_000),
                e.to_string(),
            )),
        }
    }

    /// Rewrites an extended grant's rule description with its current expiry. A grant that
    /// closed meanwhile needs none; a rule that is gone is not re-created. If the grant closed
    /// while the PUT was in flight (another replica revoked it), the rule is removed again.
    async fn relabel(&self, claimed: &ClaimedJob, id: &str) -> Result<Outcome> {
        let Some(req) = self.store.request(id).await? else {
            return Ok(Outcome::Done);
        };
        let Some(expires) = req.expires_at.filter(|_| req.status == Status::Active) else {
            return Ok(Outcome::Done);
        };
        let description = grant_description(&req.id, &req.requester, expires);
        let mut relabeled = Vec::new();
        for rule in &req.rules {
            match self
                .nsgs
                .relabel_rule(&rule.nsg, &req.rule_name, &description)
                .await
            {
                Ok(true) => relabeled.push(rule.nsg.clone()),
                Ok(false) => {}
                Err(e) => {
                    return Ok(Outcome::RetryAt(
                        now_ms() + backoff(claimed.attempts, 15_000),
                        e.to_string(),
                    ));
                }
            }
        }
        if relabeled.is_empty() {
            return Ok(Outcome::Done);
        }
        let mut tx = self.store.begin().await?;
        tx.audit(
            AuditKind::RuleRelabeled,
            Some(id),
            Some("jitbot"),
            json!({ "nsgs": relabeled, "rule": req.rule_name, "description": description }),
            req.simulated,
        )
        .await?;
        let now = tx.request(id).await?;
        if now.is_none_or(|r| r.status != Status::Active) {
            enqueue_cleanups(&mut tx, &req).await?;
        }
        tx.commit().await?;
        Ok(Outcome::Done)
    }

    async fn expire(&self, id: &str, round: i64) -> Result<Outcome> {
        let Some(req) = self.store.request(id).await? else {
            return Ok(Outcome::Done);
        };
        let mut tx = self.store.begin().await?;
        if round == 0 {
            if !tx
                .transition(
                    id,
                    Status::Pending,
                    Status::Expired,
                    Some("nobody decided in time"),
                )
                .await?
            {
                return Ok(Outcome::Done);
            }
            tx.audit(
                AuditKind::Expired,
                Some(id),
                Some("jitbot"),
                json!({ "round": 0 }),
                req.simulated,
            )
            .await?;
            let text = format!(
                "nobody decided on {} port {} in time; ask again if you still need it",
                req.target, req.ports
            );
            self.announce(
                &mut tx,
                &req,
                &notice(&req, Tone::Warning, "Request expired", text),
            )
            .await?;
        } else {
            if req.round != round || !tx.close_extension(id, round, None).await? {
                return Ok(Outcome::Done);
            }
            tx.audit(
                AuditKind::ExtensionExpired,
                Some(id),
                Some("jitbot"),
                json!({ "round": round }),
                req.simulated,
            )
            .await?;
            let text = format!(
                "nobody approved the extension in time; {} still closes at {}",
                req.target,
                clock(req.expires_at.unwrap_or_default(), true)
            );
            self.announce(
                &mut tx,
                &req,
                &notice(&req, Tone::Warning, "Extension expired", text),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Outcome::Done)
    }

    /// Runs one chat API call, classifying its failure for the queue.
    async fn chat<F, Fut>(&self, claimed: &ClaimedJob, platform: Platform, call: F) -> Outcome
    where
        F: FnOnce(std::sync::Arc<dyn crate::chat::ChatApi>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), ChatError>>,
    {
        let Some(api) = self.chats.get(&platform).cloned() else {
            return Outcome::Dead(format!("{} is not configured", platform.as_str()));
        };
        let result = call(api).await;
        if let Err(e) = &result {
            let kind = match e {
                ChatError::RateLimited { .. } => "rate_limited",
                ChatError::Transient(_) => "transient",
                ChatError::Permanent(_) => "permanent",
            };
            self.metrics.chat_error(platform.as_str(), kind);
        }
        match result {
            Ok(()) => {
                crate::crashpoint::hit("after_chat_post");
                Outcome::Done
            }
            Err(ChatError::RateLimited { retry_after }) => {
                Outcome::RescheduleAt(now_ms() + retry_after.as_millis() as i64)
            }
            Err(ChatError::Transient(e)) => {
                tracing::warn!(job = claimed.id, platform = platform.as_str(), error = %e, "chat call failed; will retry");
                Outcome::RetryAt(now_ms() + backoff(claimed.attempts, 60_000), e)
            }
            Err(ChatError::Permanent(e)) => {
                tracing::error!(job = claimed.id, platform = platform.as_str(), error = %e, "chat call refused; giving up on this message");
                Outcome::Dead(e)
            }
        }
    }

    async fn post_card(
        &self,
        claimed: &ClaimedJob,
        platform: Platform,
        channel: &str,
        id: &str,
    ) -> Result<Outcome> {
        let Some(req) = self.store.request(id).await? else {
            return Ok(Outcome::Dead(format!("request {id} does not exist")));
        };
        let card = self.card(&req, platform).await?;
        let Some(api) = self.chats.get(&platform).cloned() else {
            return Ok(Outcome::Dead(format!(
                "{} is not configured",
                platform.as_str()
            )));
        };
        let mut posted: Option<MessageRef> = None;
        let dedupe = Dedupe::for_job(claimed.id, claimed.created_at, claimed.attempts);
        let outcome = self
            .chat(claimed, platform, |_| {
                let api = api.clone();
                let card = card.clone();
                let posted = &mut posted;
                let dedupe = &dedupe;
                async move {
                    *posted = Some(api.post(channel, &card, dedupe).await?);
                    Ok(())
                }
            })
            .await;
        if let Some(at) = posted {
            self.store
                .save_card(id, platform, &at.channel, &at.id)
                .await?;
        }
        Ok(outcome)
    }

    /// The approval card as it stands, with what approvers weigh that the row does not hold:
    /// the requester's other grants on the target in the last 30 days.
    async fn card(&self, req: &RequestRow, platform: Platform) -> Result<crate::chat::Message> {
        let decisions = self.store.decisions(&req.id).await?;
        let since = now_ms() - 30 * 86_400_000;
        let recent = self
            .store
            .recent_grants(&req.requester, &req.target, &req.id, since)
            .await?;
        let mut card = messages::card(&self.policy, req, &decisions, platform);
        card.fields.push(messages::recent_grants_field(req, recent));
        Ok(card)
    }

    async fn update_cards(
        &self,
        claimed: &ClaimedJob,
        platform: Platform,
        id: &str,
    ) -> Result<Outcome> {
        let Some(req) = self.store.request(id).await? else {
            return Ok(Outcome::Done);
        };
        let card = self.card(&req, platform).await?;
        for (channel, message_id) in self.store.card(id, platform).await? {
            let at = MessageRef {
                channel,
                id: message_id,
            };
            let card = card.clone();
            let outcome = self
                .chat(claimed, platform, |api| async move {
                    api.update(&at, &card).await
                })
                .await;
            if !matches!(outcome, Outcome::Done) {
                return Ok(outcome);
            }
        }
        Ok(Outcome::Done)
    }
}

/// A cleanup DELETE of the request's rule in every NSG on its path.
async fn enqueue_cleanups(tx: &mut Tx, req: &RequestRow) -> Result<()> {
    for rule in &req.rules {
        Job::Cleanup {
            request_id: req.id.clone(),
            nsg: rule.nsg.clone(),
            rule_name: req.rule_name.clone(),
        }
        .enqueue(tx, now_ms())
        .await?;
    }
    Ok(())
}
