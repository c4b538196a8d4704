//! An approver's button click: approve or deny one round of a request.

use super::{ChatUser, Service};
use crate::chat::{ButtonAction, Decision, Message, Tone};
use crate::decision::{self, Ballot, Decided};
use crate::domain::{Status, bounded};
use crate::job::Job;
use crate::messages::{self, who};
use crate::oidc::Identity;
use crate::policy::{Actor, Decidable, Person, Refusal};
use crate::store::{AuditKind, RequestRow, Result, Tx, now_ms};
use serde_json::json;

/// Who decided: the person the policy resolved, the chat identity that clicked, and the approver
/// entry that let them (every decision's audit event records all three).
pub(super) struct Voter<'a> {
    person: &'a Person,
    name: &'a str,
    /// `slack:U123` / `discord:123…`.
    chat: String,
    /// `carol`, `group:ops`, `slack-group:S1`, `discord-role:42`.
    via: String,
}

impl Voter<'_> {
    /// `detail` with `person`, `chat` and `via` added.
    fn stamp(&self, mut detail: serde_json::Value) -> serde_json::Value {
        if let Some(map) = detail.as_object_mut() {
            map.insert("person".into(), json!(self.name));
            map.insert("chat".into(), json!(self.chat));
            map.insert("via".into(), json!(self.via));
        }
        detail
    }
}

/// What a vote carries besides the voter: the decision, the approver's reason (**Deny with
/// reason**) and the directory identity of a step-up sign-in.
#[derive(Clone, Copy)]
struct Vote<'a> {
    decision: Decision,
    reason: Option<&'a str>,
    entra: Option<&'a Identity>,
}

/// A decision's audit detail, with the directory identity of a step-up sign-in when there was one.
fn signed(mut detail: serde_json::Value, entra: Option<&Identity>) -> serde_json::Value {
    if let (Some(id), Some(map)) = (entra, detail.as_object_mut()) {
        map.insert("step_up".into(), json!(true));
        map.insert("entra_oid".into(), json!(id.oid));
        map.insert("entra_upn".into(), json!(id.upn));
    }
    detail
}

impl Service {
    /// A button click from a verified user. Returns a private reply for the clicker when the click
    /// was refused or changed nothing; `None` when the card update says it all.
    pub async fn click(&self, user: &ChatUser, action: &ButtonAction) -> Result<Option<Message>> {
        self.decide(user, action, None).await
    }

    /// A decision, with the approver's reason when they gave one (**Deny with reason**).
    pub(super) async fn decide(
        &self,
        user: &ChatUser,
        action: &ButtonAction,
        reason: Option<&str>,
    ) -> Result<Option<Message>> {
        let Some(decision) = action.kind.decision() else {
            return self.grant_button(user, action).await.map(Some);
        };
        let (voter, req) = match self.authorise_click(user, action).await? {
            Ok(allowed) => allowed,
            Err(refused) => return Ok(Some(refused)),
        };
        if decision == Decision::Approve && self.needs_step_up(&req) {
            return self.step_up_link(user, voter.person, &req, action).await;
        }
        let vote = Vote {
            decision,
            reason,
            entra: None,
        };
        self.record_vote(user, &voter, &req, action, vote).await
    }

    /// An approval confirmed after an Entra ID sign-in as `identity`: the same checks and the
    /// same path as a click, with the directory identity in the decision's audit event.
    pub(super) async fn click_signed_in(
        &self,
        user: &ChatUser,
        action: &ButtonAction,
        identity: &Identity,
    ) -> Result<Option<Message>> {
        let (voter, req) = match self.authorise_click(user, action).await? {
            Ok(allowed) => allowed,
            Err(refused) => return Ok(Some(refused)),
        };
        if voter.person.entra.as_deref() != Some(identity.oid.as_str()) {
            let refusal = Refusal::new(
                "step_up_identity",
                "the Entra ID sign-in is not the approver's directory identity",
            );
            let ctx = json!({ "round": action.round, "entra_oid": identity.oid });
            return self
                .refuse(Some(voter.name), Some(&req.id), &refusal, ctx)
                .await
                .map(Some);
        }
        let vote = Vote {
            decision: Decision::Approve,
            reason: None,
            entra: Some(identity),
        };
        self.record_vote(user, &voter, &req, action, vote).await
    }

    /// Records an authorised decision: the round's lock, the vote, and what the state machine
    /// says it does, in one transaction.
    async fn record_vote(
        &self,
        user: &ChatUser,
        by: &Voter<'_>,
        req: &RequestRow,
        action: &ButtonAction,
        vote: Vote<'_>,
    ) -> Result<Option<Message>> {
        let Vote {
            decision,
            reason,
            entra,
        } = vote;
        let round = action.round;
        let mut tx = self.store.begin().await?;
        match self
            .cast_vote(&mut tx, req, by.name, user, action, decision)
            .await?
        {
            Decided::RoundClosed => {
                // Roll back first: on SQLite the transaction holds the only connection.
                drop(tx);
                return self.nothing_to_decide(req).await.map(Some);
            }
            Decided::AlreadyVoted => {
                let text = format!("you already decided `{}`", req.id);
                return Ok(Some(self.reply(Tone::Info, "Already recorded", text)));
            }
            Decided::Denied => self.deny(&mut tx, req, by, reason).await?,
            Decided::ExtensionDenied => {
                self.deny_extension(&mut tx, req, by, round, reason).await?
            }
            Decided::NeedsMore { have, need } => {
                let counted = (have, need);
                self.count_approval(&mut tx, req, by, round, counted, entra)
                    .await?
            }
            Decided::Approved { approvals } => {
                self.approve(&mut tx, req, by, approvals, entra).await?
            }
            Decided::Extended {
                new_expiry,
                extension_ms,
            } => {
                let ext = (new_expiry, extension_ms);
                self.approve_extension(&mut tx, req, by, round, ext, entra)
                    .await?
            }
        }
        tx.commit().await?;
        if decision == Decision::Approve {
            // Crash tests stop here: the approval is committed and the apply job must still run.
            crate::crashpoint::hit("after_decision");
        }
        self.metrics.request("decided");
        tracing::info!(request_id = %req.id, approver = %by.name, via = %by.via, decision = action.kind.as_str(), round = action.round, step_up = entra.is_some(), "decision recorded");
        Ok(None)
    }

    /// Who clicked, on what, and may they decide it ([`crate::policy::Policy::may_decide`])?
    /// Every refusal is audited with the click's context and answered privately.
    pub(super) async fn authorise_click(
        &self,
        user: &ChatUser,
        action: &ButtonAction,
    ) -> Result<std::result::Result<(Voter<'_>, RequestRow), Message>> {
        let who_clicked = user.address();
        let ctx =
            json!({ "decision": action.kind.as_str(), "round": action.round, "user": who_clicked });
        let Some(person) = self.person(user) else {
            let refusal = Refusal::new(
                "unknown_person",
                "you are not in jitbot's policy, so you cannot decide requests",
            );
            return self
                .refuse(Some(&who_clicked), Some(&action.request_id), &refusal, ctx)
                .await
                .map(Err);
        };
        let Some(req) = self.store.request(&action.request_id).await? else {
            let refusal = Refusal::new(
                "unknown_request",
                format!("there is no request `{}`", action.request_id),
            );
            return self
                .refuse(Some(&person.name), None, &refusal, ctx)
                .await
                .map(Err);
        };
        let groups = self.memberships(user).await?;
        let actor = Actor {
            person,
            discord_roles: &user.roles,
            slack_groups: &groups,
        };
        if let Err(refusal) = self
            .policy
            .may_decide(&actor, &self.decidable(&req, action.round))
        {
            return self
                .refuse(Some(&person.name), Some(&req.id), &refusal, ctx)
                .await
                .map(Err);
        }
        let via = self.decides_via(&actor, &req.target);
        let voter = Voter {
            person,
            name: &person.name,
            chat: who_clicked,
            via,
        };
        Ok(Ok((voter, req)))
    }

    /// Through which approver entry (`carol`, `group:ops`, `slack-group:S1`, `discord-role:42`)
    /// the actor may decide on `target`: the target's approvers first, then its escalation's.
    fn decides_via(&self, actor: &Actor<'_>, target: &str) -> String {
        let Some(t) = self.policy.targets.get(target) else {
            return String::new();
        };
        let escalation = t.escalation.as_ref().map(|e| e.approvers.as_slice());
        self.policy
            .matched(actor, &t.approvers)
            .or_else(|| self.policy.matched(actor, escalation.unwrap_or_default()))
            .map(|p| p.describe())
            .unwrap_or_default()
    }

    /// The facts [`crate::policy::Policy::may_decide`] judges a decision on `round` of `req` by.
    pub(super) fn decidable<'r>(&self, req: &'r RequestRow, round: i64) -> Decidable<'r> {
        Decidable {
            target: &req.target,
            requester: &req.requester,
            extension_by: req.extension_by.as_deref(),
            round,
            escalated: self.policy.targets.get(&req.target).is_some_and(|t| {
                t.escalation
                    .as_ref()
                    .is_some_and(|e| now_ms() >= req.created_at + e.after.as_millis())
            }),
        }
    }

    /// Records this approver's vote under the round's lock, and asks the state machine what it
    /// does. Reads only what [`decision::decide`] needs, in this order.
    async fn cast_vote(
        &self,
        tx: &mut Tx,
        req: &RequestRow,
        by: &str,
        user: &ChatUser,
        action: &ButtonAction,
        decision: Decision,
    ) -> Result<Decided> {
        let round = action.round;
        // Row lock + CAS on (status, round): concurrent clicks are serialised here, and a click on
        // a decided or superseded round changes nothing (a stale button cannot approve a newer
        // extension).
        let locked = tx
            .lock_round(&req.id, decision::open_status(round), round)
            .await?;
        let open = decision::accepts_votes(locked, round, req.extension_ms.is_some());
        // One decision per approver and round (the table's key): a second click of the same
        // person is not a second approval.
        let first_vote = open
            && tx
                .insert_decision(&req.id, round, by, action.kind.as_str(), user.platform)
                .await?;
        let approvals = if first_vote && decision == Decision::Approve {
            // Counted under the row lock, after this vote: exactly one click reaches the threshold.
            tx.approvals(&req.id, round).await?
        } else {
            0
        };
        Ok(decision::decide(&Ballot {
            decision,
            round,
            open,
            first_vote,
            approvals,
            approvals_required: req.approvals_required,
            expires_at: req.expires_at,
            extension_ms: req.extension_ms,
            now: now_ms(),
        }))
    }

    /// The answer to a click on a round that is no longer open, with the request's current status
    /// (read again: it changed since the click was checked).
    pub(super) async fn nothing_to_decide(&self, req: &RequestRow) -> Result<Message> {
        let now = self
            .store
            .request(&req.id)
            .await?
            .map(|r| r.status)
            .unwrap_or(req.status);
        Ok(self.reply(
            Tone::Info,
            "Nothing to decide",
            format!("`{}` is already decided ({now})", req.id),
        ))
    }

    /// `pending → denied`. The lock on the round makes the compare-and-swap certain to succeed.
    async fn deny(
        &self,
        tx: &mut Tx,
        req: &RequestRow,
        by: &Voter<'_>,
        reason: Option<&str>,
    ) -> Result<()> {
        let reason = reason.map(|r| bounded(r).into_owned());
        let detail = match &reason {
            Some(r) => format!("denied by {}: {r}", by.name),
            None => format!("denied by {}", by.name),
        };
        tx.transition(&req.id, Status::Pending, Status::Denied, Some(&detail))
            .await?;
        tx.audit(
            AuditKind::Denied,
            Some(&req.id),
            Some(by.name),
            with_reason(by.stamp(json!({ "round": 0 })), reason.as_deref()),
            self.simulated,
        )
        .await?;
        let text = format!(
            "{} denied {} port {}{}",
            who(&self.policy, by.name, req.platform),
            req.target,
            req.ports,
            messages::because(reason.as_deref())
        );
        let notice = messages::notice(req, Tone::Danger, "Request denied", text);
        self.announce(tx, req, &notice).await
    }

    /// Drops the extension; the grant keeps its expiry.
    async fn deny_extension(
        &self,
        tx: &mut Tx,
        req: &RequestRow,
        by: &Voter<'_>,
        round: i64,
        reason: Option<&str>,
    ) -> Result<()> {
        let reason = reason.map(|r| bounded(r).into_owned());
        tx.close_extension(&req.id, round, None).await?;
        tx.audit(
            AuditKind::ExtensionDenied,
            Some(&req.id),
            Some(by.name),
            with_reason(by.stamp(json!({ "round": round })), reason.as_deref()),
            self.simulated,
        )
        .await?;
        let text = format!(
            "{} denied the extension{}; the grant still closes at {}",
            who(&self.policy, by.name, req.platform),
            messages::because(reason.as_deref()),
            messages::clock(req.expires_at.unwrap_or_default(), true)
        );
        let notice = messages::notice(req, Tone::Warning, "Extension denied", text);
        self.announce(tx, req, &notice).await
    }

    /// An approval short of the threshold: audited, and the card shows the count.
    async fn count_approval(
        &self,
        tx: &mut Tx,
        req: &RequestRow,
        by: &Voter<'_>,
        round: i64,
        (have, need): (i64, i64),
        entra: Option<&Identity>,
    ) -> Result<()> {
        tx.audit(
            AuditKind::ApprovalRecorded,
            Some(&req.id),
            Some(by.name),
            signed(
                by.stamp(json!({ "round": round, "approvals": have, "required": need })),
                entra,
            ),
            self.simulated,
        )
        .await?;
        self.out.refresh_cards(tx, &req.id).await
    }

    /// `pending → approved`, and the apply job in the same transaction: once the approval is
    /// committed the rule is opened even if this process dies right after.
    async fn approve(
        &self,
        tx: &mut Tx,
        req: &RequestRow,
        by: &Voter<'_>,
        approvals: i64,
        entra: Option<&Identity>,
    ) -> Result<()> {
        tx.transition(&req.id, Status::Pending, Status::Approved, None)
            .await?;
        tx.audit(
            AuditKind::Approved,
            Some(&req.id),
            Some(by.name),
            signed(
                by.stamp(json!({ "round": 0, "approvals": approvals })),
                entra,
            ),
            self.simulated,
        )
        .await?;
        Job::Apply {
            request_id: req.id.clone(),
        }
        .enqueue(tx, now_ms())
        .await?;
        let text = format!(
            "{} approved {} port {}; opening it now",
            who(&self.policy, by.name, req.platform),
            req.target,
            req.ports
        );
        let notice = messages::notice(req, Tone::Success, "Request approved", text);
        self.announce(tx, req, &notice).await
    }

    /// Moves the expiry; the revoke job already queued for the old expiry finds the grant still
    /// open and reschedules itself (it re-reads the row).
    async fn approve_extension(
        &self,
        tx: &mut Tx,
        req: &RequestRow,
        by: &Voter<'_>,
        round: i64,
        (new_expiry, extension_ms): (i64, i64),
        entra: Option<&Identity>,
    ) -> Result<()> {
        tx.close_extension(&req.id, round, Some(new_expiry)).await?;
        Job::Relabel {
            request_id: req.id.clone(),
        }
        .enqueue(tx, now_ms())
        .await?;
        tx.audit(
            AuditKind::Extended,
            Some(&req.id),
            Some(by.name),
            signed(
                by.stamp(json!({ "round": round, "expires_at": new_expiry, "extension_s": extension_ms / 1000 })),
                entra,
            ),
            self.simulated,
        )
        .await?;
        let text = format!(
            "{} approved the extension; {} stays open until {}",
            who(&self.policy, by.name, req.platform),
            req.target,
            messages::clock(new_expiry, true)
        );
        let notice = messages::notice(req, Tone::Success, "Grant extended", text);
        self.announce(tx, req, &notice).await
    }

    /// Tells a clicker privately, by a direct message job, what [`Service::click`] answered (on
    /// Slack, whose interaction response cannot show it to the clicker alone). Its own
    /// transaction after the click's: what the click recorded (a refusal and its audit event)
    /// stands even if this fails.
    ///
    /// Only people in the policy get a direct message. Anyone else (a forged or stray click
    /// from an id jitbot does not know) gets `Some(answer)` back, to be sent in the interaction's
    /// own response: a click must never make jitbot call Slack on an outsider's behalf, or each
    /// forged click would cost an outbound call (and a DM to any id the sender picks).
    pub async fn tell_clicker(
        &self,
        user: &ChatUser,
        request_id: &str,
        answer: &Message,
    ) -> Result<Option<Message>> {
        if self.person(user).is_none() {
            return Ok(Some(answer.clone()));
        }
        let to = crate::chat::direct_address(user.platform, &user.user_id);
        let mut tx = self.store.begin().await?;
        crate::outbox::post(&mut tx, user.platform, &to, Some(request_id), answer).await?;
        tx.commit().await?;
        Ok(None)
    }
}

/// An audit detail with the approver's reason added, when they gave one.
fn with_reason(mut detail: serde_json::Value, reason: Option<&str>) -> serde_json::Value {
    if let Some(r) = reason {
        detail["reason"] = json!(r);
    }
    detail
}
