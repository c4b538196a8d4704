//! The core: what happens when someone types `/jit …` or clicks a button.
//!
//! Handlers call these functions after the request's signature is verified. They never call
//! Azure and never wait on a chat API: they check policy, then write the request or decision,
//! its audit event and its jobs in one transaction, and return the reply to show the person.

use crate::chat::{ButtonAction, Decision, Message, Platform, Tone};
use crate::command::{AccessRequest, Command, USAGE};
use crate::domain::{GrantDuration, RequestId, Status};
use crate::messages::{self, reply, who};
use crate::outbox::{self, Destinations};
use crate::policy::{Actor, Person, Policy, Refusal};
use crate::store::{AuditKind, NewRequest, RequestRow, Result, Store, Tx, now_ms};
use crate::worker::jobs::Job;
use serde_json::json;
use std::sync::Arc;

/// Who is talking to us, as the chat platform identified them (after signature verification).
#[derive(Debug, Clone)]
pub struct ChatUser {
    pub platform: Platform,
    pub user_id: String,
    pub user_name: String,
    /// Discord role ids from the interaction (empty on Slack).
    pub roles: Vec<String>,
}

/// Prefix of every rule jitbot owns in an NSG; the rest of the name is the request id.
pub const RULE_PREFIX: &str = "jitbot-";

/// The core service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    pub store: Store,
    pub policy: Arc<Policy>,
    pub out: Destinations,
    /// The simulated Azure backend is in use: every message and audit event says so.
    pub simulated: bool,
    /// Requests by outcome.
    pub metrics: crate::metrics::Metrics,
}

impl Service {
    fn person(&self, user: &ChatUser) -> Option<&Person> {
        match user.platform {
            Platform::Slack => self.policy.person_by_slack(&user.user_id),
            Platform::Discord => self.policy.person_by_discord(&user.user_id),
        }
    }

    fn reply(&self, tone: Tone, title: &str, text: impl Into<String>) -> Message {
        reply(tone, title, text, self.simulated)
    }

    /// Records a refusal in the audit trail (its own transaction) and returns the person's answer.
    pub async fn refuse(
        &self,
        actor: Option<&str>,
        request_id: Option<&str>,
        refusal: &Refusal,
        extra: serde_json::Value,
    ) -> Result<Message> {
        let mut tx = self.store.begin().await?;
        tx.audit(
            AuditKind::Refused,
            request_id,
            actor,
            json!({ "rule": refusal.rule, "message": refusal.message, "context": extra }),
            self.simulated,
        )
        .await?;
        tx.commit().await?;
        self.metrics.request("refused");
        Ok(self.reply(Tone::Danger, "Refused", refusal.message.clone()))
    }

    /// A `/jit …` command from a verified user. Returns the private reply.
    pub async fn command(&self, user: &ChatUser, text: &str) -> Result<Message> {
        let Some(person) = self.person(user) else {
            let refusal = Refusal::new(
                "unknown_person",
                format!(
                    "you are not in jitbot's policy ({} user id {}); ask an administrator to add you under [people]",
                    user.platform.as_str(),
                    user.user_id
                ),
            );
            let who = format!("{}:{}", user.platform.as_str(), user.user_id);
            return self
                .refuse(Some(&who), None, &refusal, json!({ "text": text }))
                .await;
        };
        let actor = Actor {
            person,
            discord_roles: &user.roles,
        };
        let command = match Command::parse(text) {
            Ok(c) => c,
            Err(e) => {
                let refusal = Refusal::new("bad_command", format!("{e}\n\n{USAGE}"));
                let msg = self
                    .refuse(Some(&person.name), None, &refusal, json!({ "text": text }))
                    .await?;
                return Ok(Message {
                    title: "I did not understand that".into(),
                    ..msg
                });
            }
        };
        match command {
            Command::Help => Ok(self.reply(Tone::Info, "jitbot", USAGE)),
            Command::Targets => Ok(self.targets(&actor)),
            Command::List => self.list(person).await,
            Command::Status(id) => self.status(&actor, &id, user.platform).await,
            Command::Revoke(id) => self.revoke(&actor, &id).await,
            Command::Extend(id, d) => self.extend(&actor, &id, d).await,
            Command::Request(r) => self.request(user, &actor, &r, text).await,
        }
    }

    fn targets(&self, actor: &Actor<'_>) -> Message {
        let mine = self.policy.requestable(actor);
        if mine.is_empty() {
            return self.reply(Tone::Info, "Your targets", "you may not request any target");
        }
        let lines: Vec<String> = mine
            .iter()
            .map(|t| {
                format!(
                    "{}: ports {} ({}), up to {}, from {}{}; approvers: {} ({} needed)",
                    t.name,
                    t.ports_text(),
                    t.protocol,
                    t.max_duration,
                    t.sources_text(),
                    t.default_source
                        .map(|d| format!(" (default {d})"))
                        .unwrap_or_default(),
                    t.approvers_text(),
                    t.approvals_required
                )
            })
            .collect();
        self.reply(Tone::Info, "Your targets", lines.join("\n"))
    }

    async fn list(&self, person: &Person) -> Result<Message> {
        let open = self.store.open_requests_of(&person.name).await?;
        if open.is_empty() {
            return Ok(self.reply(
                Tone::Info,
                "Your requests",
                "you have no pending or active requests",
            ));
        }
        let lines: Vec<String> = open.iter().map(messages::line).collect();
        Ok(self.reply(Tone::Info, "Your requests", lines.join("\n")))
    }

    async fn status(
        &self,
        actor: &Actor<'_>,
        id: &RequestId,
        platform: Platform,
    ) -> Result<Message> {
        match self.visible_request(actor, id).await? {
            Ok(req) => {
                let decisions = self.store.decisions(&req.id).await?;
                Ok(messages::status(&self.policy, &req, &decisions, platform))
            }
            Err(m) => Ok(m),
        }
    }

    /// The request if this actor is its requester or one of its approvers.
    async fn visible_request(
        &self,
        actor: &Actor<'_>,
        id: &RequestId,
    ) -> Result<std::result::Result<RequestRow, Message>> {
        let unknown = || {
            self.reply(
                Tone::Warning,
                "Unknown request",
                format!("there is no request `{id}` that you can see"),
            )
        };
        let Some(req) = self.store.request(id.as_str()).await? else {
            return Ok(Err(unknown()));
        };
        let approver = self
            .policy
            .targets
            .get(&req.target)
            .is_some_and(|t| self.policy.is_approver(actor, t));
        if req.requester != actor.person.name && !approver {
            return Ok(Err(unknown()));
        }
        Ok(Ok(req))
    }

    async fn request(
        &self,
        user: &ChatUser,
        actor: &Actor<'_>,
        r: &AccessRequest,
        text: &str,
    ) -> Result<Message> {
        let shape = match self.policy.evaluate(actor, r) {
            Ok(s) => s,
            Err(refusal) => {
                return self
                    .refuse(
                        Some(&actor.person.name),
                        None,
                        &refusal,
                        json!({ "text": text, "target": r.target }),
                    )
                    .await;
            }
        };
        let target = &shape.target;
        let id = RequestId::generate();
        let now = now_ms();
        let status = if shape.auto_approved {
            Status::Approved
        } else {
            Status::Pending
        };
        let new = NewRequest {
            id: id.to_string(),
            requester: actor.person.name.clone(),
            platform: user.platform,
            requester_chat_id: user.user_id.clone(),
            target: target.name.clone(),
            nsg: target.nsg.clone(),
            ports: shape.ports.to_csv(),
            protocol: target.protocol.clone(),
            source: shape.source.clone(),
            destination: target.destination.clone(),
            duration_ms: shape.duration.as_millis(),
            reason: shape.reason.clone(),
            status,
            approvals_required: target.approvals_required as i64,
            created_at: now,
            pending_until: now + target.pending_ttl.as_millis(),
            rule_name: format!("{RULE_PREFIX}{id}"),
            simulated: self.simulated,
        };
        let mut tx = self.store.begin().await?;
        tx.insert_request(&new).await?;
        tx.audit(
            AuditKind::Requested,
            Some(id.as_str()),
            Some(&actor.person.name),
            json!({
                "target": target.name, "nsg": target.nsg, "ports": new.ports, "protocol": new.protocol,
                "source": new.source, "destination": new.destination, "duration_s": shape.duration.as_secs(),
                "reason": new.reason, "platform": user.platform, "approvals_required": target.approvals_required,
            }),
            self.simulated,
        )
        .await?;
        let req = tx
            .request(id.as_str())
            .await?
            .ok_or_else(|| crate::store::StoreError::Corrupt("request vanished".into()))?;
        let summary = format!(
            "{} port {} from {} for {}",
            target.name, new.ports, new.source, shape.duration
        );
        let answer = if shape.auto_approved {
            tx.audit(
                AuditKind::AutoApproved,
                Some(id.as_str()),
                Some("policy"),
                json!({ "rule": "auto_approve" }),
                self.simulated,
            )
            .await?;
            Job::Apply {
                request_id: id.to_string(),
            }
            .enqueue(&mut tx, now)
            .await?;
            self.out
                .feed(
                    &mut tx,
                    Some(id.as_str()),
                    &messages::notice(
                        &req,
                        Tone::Info,
                        "Auto-approved",
                        format!(
                            "{} asked for {summary}; policy approved it",
                            who(&self.policy, &req.requester, user.platform)
                        ),
                    ),
                )
                .await?;
            format!(
                "Request `{id}` for {summary} is approved by policy; I am opening it and will tell you when it is open."
            )
        } else {
            let mut channels = Vec::new();
            if let Some(c) = &target.approval_channels.slack {
                channels.push((Platform::Slack, c.clone()));
            }
            if let Some(c) = &target.approval_channels.discord {
                channels.push((Platform::Discord, c.clone()));
            }
            self.out.post_cards(&mut tx, id.as_str(), &channels).await?;
            Job::Expire {
                request_id: id.to_string(),
                round: 0,
            }
            .enqueue(&mut tx, new.pending_until)
            .await?;
            self.out
                .feed(
                    &mut tx,
                    Some(id.as_str()),
                    &messages::notice(
                        &req,
                        Tone::Pending,
                        "Access requested",
                        format!(
                            "{} asked for {summary}",
                            who(&self.policy, &req.requester, user.platform)
                        ),
                    ),
                )
                .await?;
            format!(
                "Request `{id}` for {summary} is waiting for approval from {} ({} needed, within {}). I will message you at every step.",
                target.approvers_text(),
                target.approvals_required,
                target.pending_ttl
            )
        };
        tx.commit().await?;
        self.metrics.request("submitted");
        tracing::info!(request_id = %id, target = %target.name, requester = %actor.person.name, auto = shape.auto_approved, "request recorded");
        Ok(self.reply(Tone::Pending, "Request submitted", answer))
    }

    /// A button click from a verified user. Returns a private reply for the clicker when the click
    /// was refused or changed nothing; `None` when the card update says it all.
    pub async fn click(&self, user: &ChatUser, action: &ButtonAction) -> Result<Option<Message>> {
        let who_clicked = format!("{}:{}", user.platform.as_str(), user.user_id);
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
                .map(Some);
        };
        let actor = Actor {
            person,
            discord_roles: &user.roles,
        };
        let Some(req) = self.store.request(&action.request_id).await? else {
            let refusal = Refusal::new(
                "unknown_request",
                format!("there is no request `{}`", action.request_id),
            );
            return self
                .refuse(Some(&person.name), None, &refusal, ctx)
                .await
                .map(Some);
        };
        let Some(target) = self.policy.targets.get(&req.target) else {
            let refusal = Refusal::new(
                "unknown_target",
                format!("target {} is no longer in the policy", req.target),
            );
            return self
                .refuse(Some(&person.name), Some(&req.id), &refusal, ctx)
                .await
                .map(Some);
        };
        if !self.policy.is_approver(&actor, target) {
            let refusal = Refusal::new(
                "not_an_approver",
                format!(
                    "you are not an approver for {}; approvers: {}",
                    target.name,
                    target.approvers_text()
                ),
            );
            return self
                .refuse(Some(&person.name), Some(&req.id), &refusal, ctx)
                .await
                .map(Some);
        }
        let own = req.requester == person.name
            || req.extension_by.as_deref() == Some(person.name.as_str()) && action.round > 0;
        if own && !target.allow_self_approval {
            let refusal = Refusal::new(
                "self_approval",
                format!(
                    "you cannot decide your own request on {}; another approver must ({})",
                    target.name,
                    target.approvers_text()
                ),
            );
            return self
                .refuse(Some(&person.name), Some(&req.id), &refusal, ctx)
                .await
                .map(Some);
        }
        let open_status = if action.round == 0 {
            Status::Pending
        } else {
            Status::Active
        };
        let mut tx = self.store.begin().await?;
        // Row lock + CAS on (status, round): concurrent clicks are serialised here, and a click on a
        // decided or superseded round changes nothing.
        if !tx.lock_round(&req.id, open_status, action.round).await?
            || (action.round > 0 && req.extension_ms.is_none())
        {
            drop(tx);
            let now = self
                .store
                .request(&req.id)
                .await?
                .map(|r| r.status)
                .unwrap_or(req.status);
            return Ok(Some(self.reply(
                Tone::Info,
                "Nothing to decide",
                format!("`{}` is already decided ({now})", req.id),
            )));
        }
        if !tx
            .insert_decision(
                &req.id,
                action.round,
                &person.name,
                action.kind.as_str(),
                user.platform,
            )
            .await?
        {
            drop(tx);
            return Ok(Some(self.reply(
                Tone::Info,
                "Already recorded",
                format!("you already decided `{}`", req.id),
            )));
        }
        let by = person.name.clone();
        let p = req.platform;
        match (action.kind, action.round) {
            (Decision::Deny, 0) => {
                tx.transition(
                    &req.id,
                    Status::Pending,
                    Status::Denied,
                    Some(&format!("denied by {by}")),
                )
                .await?;
                tx.audit(
                    AuditKind::Denied,
                    Some(&req.id),
                    Some(&by),
                    json!({ "round": 0 }),
                    self.simulated,
                )
                .await?;
                let n = messages::notice(
                    &req,
                    Tone::Danger,
                    "Request denied",
                    format!(
                        "{} denied {} port {}",
                        who(&self.policy, &by, p),
                        req.target,
                        req.ports
                    ),
                );
                self.announce(&mut tx, &req, &n).await?;
            }
            (Decision::Deny, round) => {
                tx.close_extension(&req.id, round, None).await?;
                tx.audit(
                    AuditKind::ExtensionDenied,
                    Some(&req.id),
                    Some(&by),
                    json!({ "round": round }),
                    self.simulated,
                )
                .await?;
                let n = messages::notice(
                    &req,
                    Tone::Warning,
                    "Extension denied",
                    format!(
                        "{} denied the extension; the grant still closes at {}",
                        who(&self.policy, &by, p),
                        messages::clock(req.expires_at.unwrap_or_default(), true)
                    ),
                );
                self.announce(&mut tx, &req, &n).await?;
            }
            (Decision::Approve, round) => {
                let approvals = tx.approvals(&req.id, round).await?;
                if approvals < req.approvals_required {
                    tx.audit(
                        AuditKind::ApprovalRecorded,
                        Some(&req.id),
                        Some(&by),
                        json!({ "round": round, "approvals": approvals, "required": req.approvals_required }),
                        self.simulated,
                    )
                    .await?;
                    self.out.refresh_cards(&mut tx, &req.id).await?;
                } else if round == 0 {
                    tx.transition(&req.id, Status::Pending, Status::Approved, None)
                        .await?;
                    tx.audit(
                        AuditKind::Approved,
                        Some(&req.id),
                        Some(&by),
                        json!({ "round": 0, "approvals": approvals }),
                        self.simulated,
                    )
                    .await?;
                    Job::Apply {
                        request_id: req.id.clone(),
                    }
                    .enqueue(&mut tx, now_ms())
                    .await?;
                    let n = messages::notice(
                        &req,
                        Tone::Success,
                        "Request approved",
                        format!(
                            "{} approved {} port {}; opening it now",
                            who(&self.policy, &by, p),
                            req.target,
                            req.ports
                        ),
                    );
                    self.announce(&mut tx, &req, &n).await?;
                } else {
                    let ext = req.extension_ms.unwrap_or(0);
                    let new_expiry = req.expires_at.unwrap_or_default().max(now_ms()) + ext;
                    tx.close_extension(&req.id, round, Some(new_expiry)).await?;
                    tx.audit(AuditKind::Extended, Some(&req.id), Some(&by), json!({ "round": round, "expires_at": new_expiry, "extension_s": ext / 1000 }), self.simulated).await?;
                    let n = messages::notice(
                        &req,
                        Tone::Success,
                        "Grant extended",
                        format!(
                            "{} approved the extension; {} stays open until {}",
                            who(&self.policy, &by, p),
                            req.target,
                            messages::clock(new_expiry, true)
                        ),
                    );
                    self.announce(&mut tx, &req, &n).await?;
                }
            }
        }
        tx.commit().await?;
        if matches!(action.kind, Decision::Approve) {
            crate::crashpoint::hit("after_decision");
        }
        self.metrics.request("decided");
        tracing::info!(request_id = %req.id, approver = %by, decision = action.kind.as_str(), round = action.round, "decision recorded");
        Ok(None)
    }

    /// Tells the requester and the audit feed, and refreshes the card.
    async fn announce(&self, tx: &mut Tx, req: &RequestRow, notice: &Message) -> Result<()> {
        outbox::tell_requester(tx, req, notice).await?;
        self.out.feed(tx, Some(&req.id), notice).await?;
        self.out.refresh_cards(tx, &req.id).await
    }

    async fn revoke(&self, actor: &Actor<'_>, id: &RequestId) -> Result<Message> {
        let req = match self.visible_request(actor, id).await? {
            Ok(r) => r,
            Err(m) => return Ok(m),
        };
        let by = actor.person.name.clone();
        let mut tx = self.store.begin().await?;
        let answer = match req.status {
            Status::Pending => {
                if !tx
                    .transition(
                        &req.id,
                        Status::Pending,
                        Status::Cancelled,
                        Some(&format!("cancelled by {by}")),
                    )
                    .await?
                {
                    return Ok(self.reply(
                        Tone::Info,
                        "Nothing to do",
                        format!("`{id}` changed meanwhile; see `/jit status {id}`"),
                    ));
                }
                tx.audit(
                    AuditKind::Cancelled,
                    Some(&req.id),
                    Some(&by),
                    json!({}),
                    self.simulated,
                )
                .await?;
                let n = messages::notice(
                    &req,
                    Tone::Warning,
                    "Request cancelled",
                    format!("{by} cancelled the request before it was decided"),
                );
                self.out.feed(&mut tx, Some(&req.id), &n).await?;
                self.out.refresh_cards(&mut tx, &req.id).await?;
                format!("`{id}` is cancelled; nothing was opened")
            }
            Status::Active => {
                if !tx
                    .transition(
                        &req.id,
                        Status::Active,
                        Status::Revoking,
                        Some(&format!("revoked early by {by}")),
                    )
                    .await?
                {
                    return Ok(self.reply(
                        Tone::Info,
                        "Nothing to do",
                        format!("`{id}` changed meanwhile; see `/jit status {id}`"),
                    ));
                }
                tx.audit(
                    AuditKind::RevokeRequested,
                    Some(&req.id),
                    Some(&by),
                    json!({ "early": true }),
                    self.simulated,
                )
                .await?;
                Job::Revoke {
                    request_id: req.id.clone(),
                }
                .enqueue(&mut tx, now_ms())
                .await?;
                self.out.refresh_cards(&mut tx, &req.id).await?;
                format!("closing `{id}` now; I will confirm when the rule is gone")
            }
            Status::Approved | Status::Applying => {
                return Ok(self.reply(
                    Tone::Warning,
                    "Not yet",
                    format!("`{id}` is being opened right now; revoke it again in a few seconds"),
                ));
            }
            other => {
                return Ok(self.reply(
                    Tone::Info,
                    "Nothing to do",
                    format!("`{id}` is already {other}"),
                ));
            }
        };
        tx.commit().await?;
        Ok(self.reply(Tone::Info, "Revoke", answer))
    }

    async fn extend(
        &self,
        actor: &Actor<'_>,
        id: &RequestId,
        extra: GrantDuration,
    ) -> Result<Message> {
        let req = match self.visible_request(actor, id).await? {
            Ok(r) => r,
            Err(m) => return Ok(m),
        };
        let by = actor.person.name.clone();
        if req.requester != by {
            let refusal = Refusal::new(
                "not_the_requester",
                format!("only {} can extend `{id}`", req.requester),
            );
            return self
                .refuse(
                    Some(&by),
                    Some(&req.id),
                    &refusal,
                    json!({ "extension_s": extra.as_secs() }),
                )
                .await;
        }
        if req.status != Status::Active {
            return Ok(self.reply(
                Tone::Warning,
                "Cannot extend",
                format!(
                    "`{id}` is {}; only an open grant can be extended",
                    req.status
                ),
            ));
        }
        if req.extension_ms.is_some() {
            return Ok(self.reply(
                Tone::Warning,
                "Cannot extend",
                format!("an extension of `{id}` is already waiting for approval"),
            ));
        }
        let Some(target) = self.policy.targets.get(&req.target) else {
            return Ok(self.reply(
                Tone::Warning,
                "Cannot extend",
                format!("target {} is no longer in the policy", req.target),
            ));
        };
        let now = now_ms();
        let new_expiry = req.expires_at.unwrap_or(now).max(now) + extra.as_millis();
        if new_expiry - now > target.max_duration.as_millis() {
            let refusal = Refusal::new(
                "duration_over_max",
                format!(
                    "extending by {extra} would leave {} open for {} from now, longer than its maximum of {}",
                    target.name,
                    GrantDuration::from_millis(new_expiry - now),
                    target.max_duration
                ),
            );
            return self
                .refuse(
                    Some(&by),
                    Some(&req.id),
                    &refusal,
                    json!({ "extension_s": extra.as_secs() }),
                )
                .await;
        }
        let mut tx = self.store.begin().await?;
        let answer = if target.extend_without_approval {
            if !tx.set_expiry(&req.id, req.round, new_expiry).await? {
                return Ok(self.reply(
                    Tone::Info,
                    "Nothing to do",
                    format!("`{id}` changed meanwhile; see `/jit status {id}`"),
                ));
            }
            tx.audit(AuditKind::Extended, Some(&req.id), Some(&by), json!({ "expires_at": new_expiry, "extension_s": extra.as_secs(), "approval": "policy" }), self.simulated).await?;
            let n = messages::notice(
                &req,
                Tone::Success,
                "Grant extended",
                format!(
                    "{} stays open until {}",
                    req.target,
                    messages::clock(new_expiry, true)
                ),
            );
            self.out.feed(&mut tx, Some(&req.id), &n).await?;
            self.out.refresh_cards(&mut tx, &req.id).await?;
            format!(
                "`{id}` now stays open until {}",
                messages::clock(new_expiry, true)
            )
        } else {
            let pending_until = now + target.pending_ttl.as_millis();
            if !tx
                .open_extension(&req.id, req.round, extra.as_millis(), &by, pending_until)
                .await?
            {
                return Ok(self.reply(
                    Tone::Info,
                    "Nothing to do",
                    format!("`{id}` changed meanwhile; see `/jit status {id}`"),
                ));
            }
            let round = req.round + 1;
            tx.audit(
                AuditKind::ExtensionRequested,
                Some(&req.id),
                Some(&by),
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
            let n = messages::notice(
                &req,
                Tone::Pending,
                "Extension requested",
                format!(
                    "{by} asks to keep {} open {extra} longer; approve on the request's card",
                    req.target
                ),
            );
            self.out.feed(&mut tx, Some(&req.id), &n).await?;
            for (platform, channel) in [
                (Platform::Slack, &target.approval_channels.slack),
                (Platform::Discord, &target.approval_channels.discord),
            ] {
                if let Some(channel) = channel
                    && self.out.platforms.iter().any(|(p, _)| *p == platform)
                {
                    outbox::post(&mut tx, platform, channel, Some(&req.id), &n).await?;
                }
            }
            self.out.refresh_cards(&mut tx, &req.id).await?;
            format!(
                "asked {} to extend `{id}` by {extra}; it still closes at {} unless approved",
                target.approvers_text(),
                messages::clock(req.expires_at.unwrap_or_default(), true)
            )
        };
        tx.commit().await?;
        Ok(self.reply(Tone::Info, "Extend", answer))
    }
}
