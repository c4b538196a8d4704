//! `/jit extend <id> <duration>`: keep an open grant open longer.

use super::Service;
use crate::chat::{Message, Tone};
use crate::decision::{self, ExtensionAsk, ExtensionPlan};
use crate::domain::Platform;
use crate::domain::{GrantDuration, RequestId};
use crate::job::Job;
use crate::messages::{self, cannot_extend, changed_meanwhile};
use crate::outbox;
use crate::policy::{Actor, Refusal, Target};
use crate::store::{AuditKind, RequestRow, Result, Tx, now_ms};
use serde_json::json;

impl Service {
    /// Asks [`decision::plan_extension`] what to do, then refuses (audited), answers, moves the
    /// expiry or opens an approval round. Only the requester may extend; the request must be one
    /// they can see (so an unknown id reads the same as someone else's).
    pub(super) async fn extend(
        &self,
        actor: &Actor<'_>,
        id: &RequestId,
        extra: GrantDuration,
    ) -> Result<Message> {
        let req = match self.visible_request(actor, id).await? {
            Ok(r) => r,
            Err(m) => return Ok(m),
        };
        let by = actor.person.name.as_str();
        let plan = decision::plan_extension(&ExtensionAsk {
            by_requester: req.requester == by,
            status: req.status,
            extension_pending: req.extension_ms.is_some(),
            target: self.policy.targets.get(&req.target),
            expires_at: req.expires_at,
            extra_ms: extra.as_millis(),
            now: now_ms(),
        });
        self.follow(plan, &req, by, extra).await
    }

    /// Carries out what [`decision::plan_extension`] decided.
    async fn follow(
        &self,
        plan: ExtensionPlan<'_>,
        req: &RequestRow,
        by: &str,
        extra: GrantDuration,
    ) -> Result<Message> {
        let (id, sim) = (&req.id, self.simulated);
        match plan {
            ExtensionPlan::NotTheRequester => {
                let text = format!("only {} can extend `{id}`", req.requester);
                let refusal = Refusal::new("not_the_requester", text);
                self.refuse_extension(req, by, extra, &refusal).await
            }
            ExtensionPlan::NotActive => Ok(cannot_extend(
                format!(
                    "`{id}` is {}; only an open grant can be extended",
                    req.status
                ),
                sim,
            )),
            ExtensionPlan::AlreadyPending => Ok(cannot_extend(
                format!("an extension of `{id}` is already waiting for approval"),
                sim,
            )),
            ExtensionPlan::TargetGone => Ok(cannot_extend(
                format!("target {} is no longer in the policy", req.target),
                sim,
            )),
            ExtensionPlan::OverMax {
                target,
                open_for_ms,
            } => {
                let refusal = over_max(target, extra, open_for_ms);
                self.refuse_extension(req, by, extra, &refusal).await
            }
            ExtensionPlan::WithoutApproval { new_expiry } => {
                self.extend_now(req, by, extra, new_expiry).await
            }
            ExtensionPlan::NeedsApproval {
                target,
                pending_until,
            } => {
                self.ask_to_extend(req, target, by, extra, pending_until)
                    .await
            }
        }
    }

    async fn refuse_extension(
        &self,
        req: &RequestRow,
        by: &str,
        extra: GrantDuration,
        refusal: &Refusal,
    ) -> Result<Message> {
        let context = json!({ "extension_s": extra.as_secs() });
        self.refuse(Some(by), Some(&req.id), refusal, context).await
    }

    /// The target extends without approval: the expiry moves now. CAS on the round (it moves on),
    /// so two extends that raced do not both apply, and none applies over a waiting round.
    async fn extend_now(
        &self,
        req: &RequestRow,
        by: &str,
        extra: GrantDuration,
        new_expiry: i64,
    ) -> Result<Message> {
        let mut tx = self.store.begin().await?;
        if !tx.set_expiry(&req.id, req.round, new_expiry).await? {
            return Ok(changed_meanwhile(&req.id, self.simulated));
        }
        Job::Relabel {
            request_id: req.id.clone(),
        }
        .enqueue(&mut tx, now_ms())
        .await?;
        tx.audit(AuditKind::Extended, Some(&req.id), Some(by), json!({ "expires_at": new_expiry, "extension_s": extra.as_secs(), "approval": "policy" }), self.simulated).await?;
        let until = messages::clock(new_expiry, true);
        let text = format!("{} stays open until {until}", req.target);
        let notice = messages::notice(req, Tone::Success, "Grant extended", text);
        self.out.feed(&mut tx, Some(&req.id), &notice).await?;
        self.out.refresh_cards(&mut tx, &req.id).await?;
        tx.commit().await?;
        let answer = format!("`{}` now stays open until {until}", req.id);
        Ok(self.reply(Tone::Info, "Extend", answer))
    }

    /// Opens extension round `round + 1` on the same card (CAS: the grant is still active, in the
    /// round that was read, with no extension waiting) and its expiry job; the approvers are told
    /// in their channels, since a card edit alone does not notify anyone.
    async fn ask_to_extend(
        &self,
        req: &RequestRow,
        target: &Target,
        by: &str,
        extra: GrantDuration,
        pending_until: i64,
    ) -> Result<Message> {
        let mut tx = self.store.begin().await?;
        let asked = tx
            .open_extension(&req.id, req.round, extra.as_millis(), by, pending_until)
            .await?;
        if !asked {
            return Ok(changed_meanwhile(&req.id, self.simulated));
        }
        let round = req.round + 1;
        tx.audit(
            AuditKind::ExtensionRequested,
            Some(&req.id),
            Some(by),
            json!({ "round": round, "extension_s": extra.as_secs() }),
            self.simulated,
        )
        .await?;
        Job::Expire {
            request_id: req.id.clone(),
            round,
        }
        .enqueue(&mut tx, pending_until)
        .await?;
        let text = format!(
            "{by} asks to keep {} open {extra} longer; approve on the request's card",
            req.target
        );
        let notice = messages::notice(req, Tone::Pending, "Extension requested", text);
        self.out.feed(&mut tx, Some(&req.id), &notice).await?;
        self.tell_approval_channels(&mut tx, target, req, &notice)
            .await?;
        self.out.refresh_cards(&mut tx, &req.id).await?;
        tx.commit().await?;
        let answer = format!(
            "asked {} to extend `{}` by {extra}; it still closes at {} unless approved",
            target.approvers_text(),
            req.id,
            messages::clock(req.expires_at.unwrap_or_default(), true)
        );
        Ok(self.reply(Tone::Info, "Extend", answer))
    }

    /// Posts `notice` to the target's approval channel on each configured platform.
    async fn tell_approval_channels(
        &self,
        tx: &mut Tx,
        target: &Target,
        req: &RequestRow,
        notice: &Message,
    ) -> Result<()> {
        for (platform, channel) in [
            (Platform::Slack, &target.approval_channels.slack),
            (Platform::Discord, &target.approval_channels.discord),
        ] {
            if let Some(channel) = channel
                && self.out.platforms.iter().any(|(p, _)| *p == platform)
            {
                outbox::post(tx, platform, channel, Some(&req.id), notice).await?;
            }
        }
        Ok(())
    }
}

/// The refusal for an extension past the target's maximum, counted from now.
fn over_max(target: &Target, extra: GrantDuration, open_for_ms: i64) -> Refusal {
    Refusal::new(
        "duration_over_max",
        format!(
            "extending by {extra} would leave {} open for {} from now, longer than its maximum of {}",
            target.name,
            GrantDuration::from_millis(open_for_ms),
            target.max_duration
        ),
    )
}
