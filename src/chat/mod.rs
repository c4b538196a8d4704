//! The neutral chat model: what core code says to people, independent of Slack or Discord.
//!
//! Core code builds a [`Message`] (a card with fields and buttons, or a plain notice) and hands it
//! to a [`ChatApi`] implementation as a durable job. Only `chat::slack` knows Block Kit and only
//! `chat::discord` knows Discord components.
//!
//! Text conventions inside a `Message`: user mentions are written `<@USERID>` (identical on Slack
//! and Discord), code spans use backticks. Adapters add emphasis (bold titles, labels) themselves.

pub mod discord;
pub mod form;
pub mod slack;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::domain::Platform;

/// The destination that reaches `user_id` privately on `platform`: Slack posts to a user id
/// directly; on Discord user and channel ids are both snowflakes, so a person is `user:<id>`
/// and the adapter opens the DM channel.
pub fn direct_address(platform: Platform, user_id: &str) -> String {
    match platform {
        Platform::Slack => user_id.to_string(),
        Platform::Discord => format!("{}{user_id}", discord::DM_PREFIX),
    }
}

/// How a message should look: adapters map it to colours or emoji.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tone {
    #[default]
    Info,
    Pending,
    Success,
    Warning,
    Danger,
}

/// One labelled value on a card ("Target" → "web1").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub label: String,
    pub value: String,
}

/// What a button does when clicked. Its identity travels in the platform's button payload
/// (Slack `action_id` + `value`, Discord `custom_id`) and comes back in the click.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonAction {
    pub kind: ButtonKind,
    /// The request the button decides.
    pub request_id: String,
    /// Approve/Deny: which approval round (0 = the original request, 1.. = extensions).
    /// Extend: by how many seconds. Done: 0.
    pub round: i64,
}

/// What a button is for: an approver's decision on a card, or the requester's action on their
/// open grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ButtonKind {
    Approve,
    Deny,
    /// Keep the grant open longer (by the seconds in [`ButtonAction::round`]).
    Extend,
    /// Close the grant now ("I'm done").
    Done,
    /// An approver's Deny that asks for a reason first (a form); the submitted form is the vote.
    DenyWithReason,
}

impl ButtonKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ButtonKind::Approve => "approve",
            ButtonKind::Deny => "deny",
            ButtonKind::Extend => "extend",
            ButtonKind::Done => "done",
            ButtonKind::DenyWithReason => "deny_reason",
        }
    }

    pub fn parse(s: &str) -> Option<ButtonKind> {
        [
            ButtonKind::Approve,
            ButtonKind::Deny,
            ButtonKind::Extend,
            ButtonKind::Done,
            ButtonKind::DenyWithReason,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// The approver's decision this button casts, if it is one.
    pub fn decision(self) -> Option<Decision> {
        match self {
            ButtonKind::Approve => Some(Decision::Approve),
            ButtonKind::Deny => Some(Decision::Deny),
            // Opens a form; the vote is the form's submission.
            ButtonKind::Extend | ButtonKind::Done | ButtonKind::DenyWithReason => None,
        }
    }
}

/// The two decisions an approver can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

/// A button on a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub label: String,
    pub action: ButtonAction,
    /// Optional confirmation dialog text (Slack shows a confirm dialog; Discord ignores it).
    pub confirm: Option<String>,
}

/// A message: a card (title, fields, buttons) or a notice (title + text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Message {
    /// Short headline, plain text ("JIT access request").
    pub title: String,
    /// Body text; may contain `<@USERID>` mentions and backticks.
    pub text: String,
    pub fields: Vec<Field>,
    pub buttons: Vec<Button>,
    /// Small print under the card (e.g. "SIMULATED AZURE BACKEND — no real rule was changed").
    pub footer: Option<String>,
    pub tone: Tone,
}

impl Message {
    /// Plain-text rendering used as the notification fallback and in logs and the demo.
    pub fn plain_text(&self) -> String {
        let mut out = String::new();
        if !self.title.is_empty() {
            out.push_str(&self.title);
        }
        if !self.text.is_empty() {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&self.text);
        }
        for f in &self.fields {
            out.push_str(&format!("\n{}: {}", f.label, f.value));
        }
        if let Some(footer) = &self.footer {
            out.push_str(&format!("\n{footer}"));
        }
        out
    }
}

/// Where a posted message lives, so it can be updated in place later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub channel: String,
    /// Slack `ts` or Discord message id.
    pub id: String,
}

/// Why a chat API call failed, classified for the job runner.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The platform asked us to slow down; retry after this long.
    #[error("rate limited; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// Network error, 5xx, or a transient platform error: retry with backoff.
    #[error("temporary chat API failure: {0}")]
    Transient(String),
    /// The call can never succeed as is (`channel_not_found`, `not_in_channel`, `invalid_auth`, 4xx):
    /// record it and give up.
    #[error("chat API refused the call: {0}")]
    Permanent(String),
}

/// Identifies one logical message across retries, so a post whose response was lost (timeout,
/// crash between the API call and the job's completion) is not delivered twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedupe {
    /// Stable for the job: `jitbot-job-<job id>-<job created at, Unix ms>` (the time keeps keys
    /// unique when a database is recreated and job ids start again at 1).
    pub key: String,
    /// True when an earlier attempt may already have delivered the message (attempt > 1):
    /// adapters that cannot make the platform deduplicate look for the key before posting.
    pub maybe_sent: bool,
}

impl Dedupe {
    pub fn for_job(job_id: i64, created_at_ms: i64, attempts: i64) -> Dedupe {
        Dedupe {
            key: format!("jitbot-job-{job_id}-{created_at_ms}"),
            maybe_sent: attempts > 1,
        }
    }
}

/// A chat platform's outbound API, as the job runner uses it.
#[async_trait]
pub trait ChatApi: Send + Sync {
    /// Post a new message to a channel (or a user id, which posts a direct message).
    async fn post(
        &self,
        channel: &str,
        message: &Message,
        dedupe: &Dedupe,
    ) -> Result<MessageRef, ChatError>;
    /// Replace a previously posted message in place.
    async fn update(&self, at: &MessageRef, message: &Message) -> Result<(), ChatError>;
    /// Opens `form` for the person whose action gave `trigger_id` (Slack `views.open`; the
    /// trigger lives 3 seconds). Platforms whose forms are the interaction response itself
    /// (Discord) never get this call.
    async fn open_form(&self, trigger_id: &str, form: &form::Form) -> Result<(), ChatError> {
        let _ = (trigger_id, form);
        Err(ChatError::Permanent(
            "this platform opens no forms by API".into(),
        ))
    }
    /// Replaces an open form (Slack `views.update` of `view_id`, refused when `hash` is no longer
    /// the view's: the person changed it meanwhile).
    async fn update_form(
        &self,
        view_id: &str,
        hash: Option<&str>,
        form: &form::Form,
    ) -> Result<(), ChatError> {
        let _ = (view_id, hash, form);
        Err(ChatError::Permanent(
            "this platform updates no forms by API".into(),
        ))
    }
    /// The user ids in a user group (Slack's `usergroups.users.list`), for the group-membership
    /// refresh. Platforms whose groups travel with each interaction (Discord roles) have none to
    /// list.
    async fn group_members(&self, group: &str) -> Result<Vec<String>, ChatError> {
        Err(ChatError::Permanent(format!(
            "this platform cannot list the members of group {group}"
        )))
    }
}
