//! The core: what happens when someone types `/jit …` or clicks a button.
//!
//! Handlers call these functions after the request's signature is verified. They never call
//! Azure and never wait on a chat API: they check policy, then write the request or decision,
//! its audit event and its jobs in one transaction, and return the reply to show the person.
//!
//! Every action has the same shape: who may act is asked of [`crate::policy`], what the action
//! does is asked of the pure state machine in [`crate::decision`], and the code here only reads
//! the facts those need, persists the answer (row change, audit event, jobs) and words the reply.
//! One file per action: `request.rs` (a new request), `click.rs` (an approver's decision),
//! `extend.rs`, `revoke.rs`, and `queries.rs` for the read-only commands.

mod buttons;
mod click;
mod extend;
mod forms;
mod links;
mod queries;
mod request;
mod revoke;
mod step_up;

use crate::chat::{Message, Tone};
use crate::command::{Command, USAGE};
use crate::domain::Platform;
use crate::domain::{RequestId, bounded};
use crate::messages::reply;
use crate::outbox::{self, Destinations};
use crate::policy::{Actor, GroupMemberships, Person, Policy, Refusal};
use crate::store::{AuditKind, RequestRow, Result, Store, Tx};
pub use forms::{FormOpened, FormVia};

use serde_json::json;
use std::sync::Arc;
pub use step_up::{CallbackQuery, StepUpPage};

/// Every string in `v` cut to [`crate::domain::LOGGED_TEXT_MAX`] characters: a refusal's context
/// holds what the sender typed, and an audit event must not grow with it.
fn bound_strings(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(bounded(&s).into_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(bound_strings).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (bounded(&k).into_owned(), bound_strings(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Who is talking to us, as the chat platform identified them (after signature verification).
#[derive(Debug, Clone)]
pub struct ChatUser {
    pub platform: Platform,
    pub user_id: String,
    pub user_name: String,
    /// Discord role ids from the interaction (empty on Slack).
    pub roles: Vec<String>,
}

impl ChatUser {
    /// `slack:U123`: how the audit trail names someone jitbot may not know as a person.
    fn address(&self) -> String {
        format!("{}:{}", self.platform.as_str(), self.user_id)
    }
}

/// The core service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    pub store: Store,
    pub policy: Arc<Policy>,
    /// Where people reach jitbot (`server.public_url`): `from me` links. None: refused.
    pub public_url: Option<url::Url>,
    pub out: Destinations,
    /// The simulated Azure backend is in use: every message and audit event says so.
    pub simulated: bool,
    /// Requests by outcome.
    pub metrics: crate::metrics::Metrics,
    /// The Entra ID sign-in of step-up approvals (`[entra]`). None: approvals on `step_up`
    /// targets are refused (`jitbot check` does not let such a config start).
    pub step_up: Option<Arc<crate::oidc::EntraClient>>,
}

impl Service {
    fn person(&self, user: &ChatUser) -> Option<&Person> {
        match user.platform {
            Platform::Slack => self.policy.person_by_slack(&user.user_id),
            Platform::Discord => self.policy.person_by_discord(&user.user_id),
        }
    }

    /// The Slack user groups the membership table says `user` is in now, judged against
    /// [`Policy::group_max_age`] (none on Discord, where roles travel with the interaction). Read
    /// from the database: a handler never asks Slack.
    async fn memberships(&self, user: &ChatUser) -> Result<GroupMemberships> {
        self.memberships_of(user.platform, &user.user_id).await
    }

    /// [`Service::memberships`] of a chat user known by platform and id.
    async fn memberships_of(&self, platform: Platform, user_id: &str) -> Result<GroupMemberships> {
        let named = self.policy.slack_groups();
        if platform != Platform::Slack || named.is_empty() {
            return Ok(GroupMemberships::default());
        }
        let table = self.store.group_table(user_id).await?;
        Ok(GroupMemberships::judge(
            &named,
            &table.refreshed_at,
            &table.member_of,
            crate::store::now_ms(),
            self.policy.group_max_age(),
        ))
    }

    fn reply(&self, tone: Tone, title: &str, text: impl Into<String>) -> Message {
        reply(tone, title, text, self.simulated)
    }

    /// Records a refusal in the audit trail (its own transaction) and returns the person's answer.
    /// Refusals are audited because a refused attempt is as much a security event as a granted one.
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
            json!({
                "rule": refusal.rule,
                "message": bounded(&refusal.message),
                "context": bound_strings(extra),
            }),
            self.simulated,
        )
        .await?;
        tx.commit().await?;
        self.metrics.request("refused");
        Ok(self.reply(Tone::Danger, "Refused", refusal.message.clone()))
    }

    /// A `/jit …` command from a verified user. Returns the private reply.
    pub async fn command(&self, user: &ChatUser, text: &str) -> Result<Message> {
        // Only people named in the policy may do anything; the id tells an administrator what to add.
        let Some(person) = self.person(user) else {
            let refusal = Refusal::new(
                "unknown_person",
                format!(
                    "you are not in jitbot's policy ({} user id {}); ask an administrator to add you under [people]",
                    user.platform.as_str(),
                    user.user_id
                ),
            );
            return self
                .refuse(
                    Some(&user.address()),
                    None,
                    &refusal,
                    json!({ "text": text }),
                )
                .await;
        };
        let groups = self.memberships(user).await?;
        let actor = Actor {
            person,
            discord_roles: &user.roles,
            slack_groups: &groups,
        };
        let command = match Command::parse(text) {
            Ok(c) => c,
            Err(e) => return self.bad_command(person, text, e).await,
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

    /// Text that is not `/jit` grammar: audited like any refusal, answered with the usage.
    async fn bad_command(&self, person: &Person, text: &str, error: String) -> Result<Message> {
        let refusal = Refusal::new("bad_command", format!("{error}\n\n{USAGE}"));
        let msg = self
            .refuse(Some(&person.name), None, &refusal, json!({ "text": text }))
            .await?;
        Ok(Message {
            title: "I did not understand that".into(),
            ..msg
        })
    }

    /// Tells the requester and the audit feed, and refreshes the card.
    async fn announce(&self, tx: &mut Tx, req: &RequestRow, notice: &Message) -> Result<()> {
        outbox::tell_requester(tx, req, notice).await?;
        self.out.feed(tx, Some(&req.id), notice).await?;
        self.out.refresh_cards(tx, &req.id).await
    }

    /// The request if this actor may see it ([`Policy::may_see`]); otherwise the reply that says
    /// there is no such request, the same whether it exists or not.
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
        if !self.policy.may_see(actor, &req.target, &req.requester) {
            return Ok(Err(unknown()));
        }
        Ok(Ok(req))
    }
}
