//! `/jit <target> <ports> <duration> …`: a new request.

use super::{ChatUser, Service};
use crate::chat::{Message, Tone};
use crate::command::AccessRequest;
use crate::domain::Platform;
use crate::domain::{RequestId, SourceSpec, Status};
use crate::job::Job;
use crate::limits;
use crate::messages::{self, who};
use crate::outbox;
use crate::paths::{self, Path};
use crate::policy::{Actor, ApprovedShape, Refusal, Target};
use crate::store::{AuditKind, NewRequest, RequestRow, Result, StoreError, Tx, now_ms};
use serde_json::json;

impl Service {
    /// Checks the request against policy, then records it in one transaction with its audit event
    /// and either its apply job (approved by policy) or its approval cards and expiry job.
    pub(super) async fn request(
        &self,
        user: &ChatUser,
        actor: &Actor<'_>,
        r: &AccessRequest,
        text: &str,
    ) -> Result<Message> {
        if r.source == Some(SourceSpec::Me) {
            return self.source_link(user, actor, r, text).await;
        }
        let shape = match self.policy.evaluate(actor, r) {
            Ok(s) => s,
            Err(refusal) => {
                let context = json!({ "text": text, "target": r.target });
                return self
                    .refuse(Some(&actor.person.name), None, &refusal, context)
                    .await;
            }
        };
        let path = match paths::current(&self.policy, &self.store, &shape.target.name).await? {
            Ok(p) => p,
            Err(why) => {
                let refusal = Refusal::new(
                    "target_unresolved",
                    format!(
                        "jitbot cannot tell where {} is right now ({why}), so nothing was opened; try again in a few minutes, or tell an admin if it persists",
                        shape.target.name
                    ),
                );
                let context = json!({ "text": text, "target": r.target });
                return self
                    .refuse(Some(&actor.person.name), None, &refusal, context)
                    .await;
            }
        };
        self.record(user, actor, shape, path, text).await
    }

    /// Records a request that passed policy: in one transaction, the abuse limits, the row, its
    /// audit event, and its apply job (approved by policy, break-glass) or its approval cards.
    async fn record(
        &self,
        user: &ChatUser,
        actor: &Actor<'_>,
        mut shape: ApprovedShape,
        path: Path,
        text: &str,
    ) -> Result<Message> {
        let id = RequestId::generate();
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let auto_note = match self.within_limits(&mut tx, actor, &mut shape, now).await? {
            Ok(note) => note,
            Err(hit) => {
                // Roll back first: on SQLite the transaction holds the only connection.
                drop(tx);
                let target = &shape.target.name;
                let context = json!({ "text": text, "target": target, "limit": hit.detail });
                return self
                    .refuse(Some(&actor.person.name), None, &hit.refusal, context)
                    .await;
            }
        };
        let new = self.new_request(&id, user, actor, &shape, path, now);
        tx.insert_request(&new).await?;
        if shape.auto_approved {
            tx.mark_auto_approved(&new.id).await?;
        }
        self.audit_requested(&mut tx, &new, &shape).await?;
        // Read back what was stored: notices are built from rows, like every later one.
        let req = tx
            .request(id.as_str())
            .await?
            .ok_or_else(|| StoreError::Corrupt("request vanished".into()))?;
        let summary = format!(
            "{} port {} from {} for {}",
            new.target, new.ports, new.source, shape.duration
        );
        let answer = if shape.break_glass {
            self.break_glass(&mut tx, &req, &shape.target, &summary, now)
                .await?
        } else if shape.auto_approved {
            self.approve_by_policy(&mut tx, &req, &summary, now).await?
        } else {
            let asked = self
                .ask_approvers(&mut tx, &req, &shape.target, &summary)
                .await?;
            match auto_note {
                Some(note) => format!("{note}. {asked}"),
                None => asked,
            }
        };
        tx.commit().await?;
        self.metrics.request("submitted");
        tracing::info!(request_id = %id, target = %req.target, requester = %actor.person.name, auto = shape.auto_approved, "request recorded");
        Ok(self.reply(Tone::Pending, "Request submitted", answer))
    }

    /// The abuse limits ([`crate::limits`]), counted in the request's transaction under the
    /// limits lock. `Err`: the limit hit. `Ok(Some(note))`: the target's auto-approve rule is used
    /// up, so `shape` now waits for approvers and `note` tells the requester why.
    async fn within_limits(
        &self,
        tx: &mut Tx,
        actor: &Actor<'_>,
        shape: &mut ApprovedShape,
        now: i64,
    ) -> Result<std::result::Result<Option<String>, limits::LimitHit>> {
        tx.lock_limits().await?;
        let person = actor.person.name.as_str();
        let target = &shape.target;
        let counts = limits::Counts {
            pending: tx.pending_of(person).await?,
            last_hour: tx.requests_of_since(person, now - limits::HOUR_MS).await?,
            on_target: tx.holding(&target.name).await?,
        };
        if let Some(hit) = limits::check(&self.policy.limits, target, &counts, now) {
            return Ok(Err(hit));
        }
        let Some(rule) = target.auto_approve.as_ref().filter(|_| shape.auto_approved) else {
            return Ok(Ok(None));
        };
        let Some((_, per)) = rule.max_uses else {
            return Ok(Ok(None));
        };
        let uses = tx
            .auto_approvals_since(&target.name, now - per.as_millis())
            .await?;
        let note = limits::auto_approve_exhausted(&target.name, rule, &uses, now);
        if note.is_some() {
            shape.auto_approved = false;
        }
        Ok(Ok(note))
    }

    /// The row for a request that passed policy. It starts `approved` when policy approves it
    /// (no human round), else `pending` until `pending_ttl` from now.
    fn new_request(
        &self,
        id: &RequestId,
        user: &ChatUser,
        actor: &Actor<'_>,
        shape: &ApprovedShape,
        path: Path,
        now: i64,
    ) -> NewRequest {
        let target = &shape.target;
        NewRequest {
            id: id.to_string(),
            requester: actor.person.name.clone(),
            platform: user.platform,
            requester_chat_id: user.user_id.clone(),
            target: target.name.clone(),
            nsgs: path.nsgs,
            ports: shape.ports.to_csv(),
            protocol: target.protocol.clone(),
            source: shape.source.clone(),
            destination: path.destination,
            duration_ms: shape.duration.as_millis(),
            reason: shape.reason.clone(),
            status: if shape.auto_approved || shape.break_glass {
                Status::Approved
            } else {
                Status::Pending
            },
            // Recorded with the request, so a later policy change does not alter what is asked.
            approvals_required: i64::from(shape.approvals_required),
            created_at: now,
            pending_until: now + target.pending_ttl.as_millis(),
            // Deterministic: a retried or resumed apply finds and reuses its own rule.
            rule_name: self.policy.namespace.grant_rule(id),
            simulated: self.simulated,
        }
    }

    async fn audit_requested(
        &self,
        tx: &mut Tx,
        new: &NewRequest,
        shape: &ApprovedShape,
    ) -> Result<()> {
        let target = &shape.target;
        tx.audit(
            AuditKind::Requested,
            Some(&new.id),
            Some(&new.requester),
            json!({
                "target": target.name, "nsg": new.nsgs[0], "nsgs": new.nsgs, "ports": new.ports, "protocol": new.protocol,
                "source": new.source, "destination": new.destination, "duration_s": shape.duration.as_secs(),
                "reason": new.reason, "platform": new.platform, "approvals_required": shape.approvals_required, "conditions": target.conditions.describe(),
            }),
            self.simulated,
        )
        .await?;
        Ok(())
    }

    /// Approved by the target's `auto_approve`: audited as the policy's decision, and the apply
    /// job is queued in the same transaction as the request.
    async fn approve_by_policy(
        &self,
        tx: &mut Tx,
        req: &RequestRow,
        summary: &str,
        now: i64,
    ) -> Result<String> {
        let requester = who(&self.policy, &req.requester, req.platform);
        let notice = messages::notice(
            req,
            Tone::Info,
            "Auto-approved",
            format!("{requester} asked for {summary}; policy approved it"),
        );
        let audit = (
            AuditKind::AutoApproved,
            "policy",
            json!({ "rule": "auto_approve" }),
        );
        self.open_without_round(tx, req, audit, &notice, now)
            .await?;
        Ok(format!(
            "Request `{}` for {summary} is approved by policy; I am opening it and will tell you when it is open.",
            req.id
        ))
    }

    /// `/jit break-glass`: opened on the requester's word alone, where the target allows it.
    /// Audited as such, and loud: every approver gets a direct message and the audit channel an
    /// alert, at once; the daily review lists it.
    async fn break_glass(
        &self,
        tx: &mut Tx,
        req: &RequestRow,
        target: &Target,
        summary: &str,
        now: i64,
    ) -> Result<String> {
        let reason = req.reason.clone().unwrap_or_default();
        let requester = who(&self.policy, &req.requester, req.platform);
        let alert = messages::notice(
            req,
            Tone::Danger,
            "BREAK-GLASS access",
            format!(
                "{requester} opened {summary} WITHOUT APPROVAL (break-glass). Reason: {reason}. If this is not expected, revoke it now: `/jit revoke {}`.",
                req.id
            ),
        );
        let detail =
            json!({ "target": req.target, "reason": reason, "duration_s": req.duration_ms / 1000 });
        let audit = (AuditKind::BreakGlass, req.requester.as_str(), detail);
        self.open_without_round(tx, req, audit, &alert, now).await?;
        for person in self.policy.approver_people(target) {
            let to = self
                .out
                .direct_addresses(person.slack.as_deref(), person.discord.as_deref());
            for (platform, address) in to {
                outbox::post(tx, platform, &address, Some(&req.id), &alert).await?;
            }
        }
        Ok(format!(
            "Break-glass: `{}` for {summary} is opening now without approval; every approver has been alerted.",
            req.id
        ))
    }

    /// Approved without a human round (policy, or break-glass): the audit event saying why, the
    /// apply job, and `notice` on the audit channel, in the request's transaction.
    async fn open_without_round(
        &self,
        tx: &mut Tx,
        req: &RequestRow,
        (kind, actor, detail): (AuditKind, &str, serde_json::Value),
        notice: &Message,
        now: i64,
    ) -> Result<()> {
        tx.audit(kind, Some(&req.id), Some(actor), detail, self.simulated)
            .await?;
        Job::Apply {
            request_id: req.id.clone(),
        }
        .enqueue(tx, now)
        .await?;
        self.out.feed(tx, Some(&req.id), notice).await
    }

    /// Waits for people: cards with buttons in the target's approval channels, and an expiry job
    /// at `pending_until` so an undecided request does not wait forever.
    async fn ask_approvers(
        &self,
        tx: &mut Tx,
        req: &RequestRow,
        target: &Target,
        summary: &str,
    ) -> Result<String> {
        let mut channels = Vec::new();
        if let Some(c) = &target.approval_channels.slack {
            channels.push((Platform::Slack, c.clone()));
        }
        if let Some(c) = &target.approval_channels.discord {
            channels.push((Platform::Discord, c.clone()));
        }
        self.out.post_cards(tx, &req.id, &channels).await?;
        Job::Expire {
            request_id: req.id.clone(),
            round: 0,
        }
        .enqueue(tx, req.pending_until)
        .await?;
        if let Some(after) = target.remind_approvers_after {
            Job::NudgeApprovers {
                request_id: req.id.clone(),
            }
            .enqueue(tx, req.created_at + after.as_millis())
            .await?;
        }
        if let Some(e) = &target.escalation {
            Job::Escalate {
                request_id: req.id.clone(),
            }
            .enqueue(tx, req.created_at + e.after.as_millis())
            .await?;
        }
        let requester = who(&self.policy, &req.requester, req.platform);
        let notice = messages::notice(
            req,
            Tone::Pending,
            "Access requested",
            format!("{requester} asked for {summary}"),
        );
        self.out.feed(tx, Some(&req.id), &notice).await?;
        Ok(format!(
            "Request `{}` for {summary} is waiting for approval from {} ({} needed, within {}). I will message you at every step.",
            req.id,
            target.approvers_text(),
            req.approvals_required,
            target.pending_ttl
        ))
    }
}
