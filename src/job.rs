//! The durable job queue's message type: what a job is, stored as JSON in the `jobs` table.
//!
//! Producers (`service/`, `outbox`, the worker's own handlers) enqueue a [`Job`] inside the
//! transaction that makes it necessary; `worker/` runs it. Keeping the type apart from its
//! handlers keeps the module graph a tree: producers depend on this module, not on the worker.

use crate::chat::Message;
use crate::domain::Platform;
use crate::store::{JobSpec, Result, Tx};
use serde::{Deserialize, Serialize};

/// The `kind` column of each job, as [`Job::kind`] names it; queries and metrics use these.
pub mod kind {
    pub const APPLY: &str = "apply";
    pub const REVOKE: &str = "revoke";
    pub const EXPIRE: &str = "expire";
    pub const CLEANUP: &str = "cleanup";
    pub const CHAT_POST: &str = "chat.post";
    pub const CHAT_CARD: &str = "chat.card";
    pub const CHAT_CARD_UPDATE: &str = "chat.card_update";
    pub const RECONCILE: &str = "reconcile";
    pub const CHECKPOINT: &str = "checkpoint";
    pub const REMOVE_ORPHAN: &str = "reconcile.remove";
    pub const REVOCATION_WATCH: &str = "revocation_watch";
    pub const RELABEL: &str = "relabel";
    pub const RESOLVE_TARGETS: &str = "resolve_targets";
    pub const DIGEST: &str = "digest";
    pub const REMIND: &str = "remind";
    pub const NUDGE_APPROVERS: &str = "nudge_approvers";
    pub const ESCALATE: &str = "escalate";
    pub const SIEM_DELIVER: &str = "siem.deliver";
    pub const FORM_OPEN: &str = "chat.form_open";
    pub const FORM_UPDATE: &str = "chat.form_update";
    pub const SLACK_GROUPS: &str = "slack_groups";
    /// Jobs with slots of their own (`worker.closing_concurrency`), so that no burst of openings
    /// delays them: the closings, and opening a Slack form, whose trigger lives 3 seconds.
    pub const RESERVED: &[&str] = &[REVOKE, CLEANUP, REMOVE_ORPHAN, FORM_OPEN];
}

/// A durable side effect, stored as JSON in the `jobs` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Open the request's rule (approved → applying → active).
    Apply { request_id: String },
    /// Close the request's rule at expiry or on request (active → revoking → revoked).
    Revoke { request_id: String },
    /// The approval round `round` timed out.
    Expire { request_id: String, round: i64 },
    /// Remove a rule that must not stay (after a failed apply).
    Cleanup {
        request_id: String,
        nsg: String,
        rule_name: String,
    },
    ChatPost {
        platform: Platform,
        channel: String,
        request_id: Option<String>,
        message: Message,
    },
    ChatCard {
        platform: Platform,
        channel: String,
        request_id: String,
    },
    ChatCardUpdate {
        platform: Platform,
        request_id: String,
    },
    /// One reconcile pass over every NSG in the policy; reschedules itself (a singleton).
    Reconcile,
    /// Post the head of the audit chain to the audit channel(s); reschedules itself (a singleton).
    Checkpoint,
    /// Remove a rule in jitbot's namespace that the reconciler found without an open grant;
    /// retried until done. Runs in the rule's lane, so one rule is removed by one job at a time.
    RemoveOrphan {
        /// The request id in the rule's name (the request may not exist); `None` for a stray
        /// whose name carries no request id (`jitbot-rogue`).
        #[serde(default)]
        request_id: Option<String>,
        nsg: String,
        rule_name: String,
        /// Why it must go, for people ("its request is unknown to jitbot").
        reason: String,
        /// What the rule allowed when it was found.
        seen: serde_json::Value,
    },
    /// Runs `worker.revocation_alert_after` after a revocation became due: if the grant is still
    /// not closed, alert the audit channel (once per grant).
    RevocationWatch { request_id: String },
    /// The grant's expiry moved (an extension): rewrite its rule's `expires=` description, so
    /// `jitbot sweep` never closes it early.
    Relabel { request_id: String },
    /// Look up every `vm` target's address and NSGs in Azure and record (and report) what
    /// changed; reschedules itself every `worker.resolve_interval` (a singleton).
    ResolveTargets,
    /// Post the daily access review to the audit channel; reschedules itself for the next day
    /// (a singleton).
    Digest,
    /// Remind the requester `worker.reminder_before` their grant closes (with Extend and I'm
    /// done); follows extensions, ends with the grant.
    Remind { request_id: String },
    /// `remind_approvers_after` a request was made: remind the approvers who have not decided.
    NudgeApprovers { request_id: String },
    /// `escalate_after` a request was made: the escalation approvers get the card and may decide.
    Escalate { request_id: String },
    /// Send the audit events after a SIEM sink's cursor, in order; reschedules itself (one
    /// singleton per sink, lane `singleton:siem:<sink>`).
    SiemDeliver { sink: String },
    /// Open a form for the person whose action gave `trigger_id` (Slack `views.open`). Queued
    /// by a handler and run at once: the trigger lives 3 seconds, so after `expires_at` (Unix
    /// ms) the job gives up without a call.
    FormOpen {
        platform: Platform,
        trigger_id: String,
        form: crate::chat::form::Form,
        expires_at: i64,
    },
    /// Replace an open form (Slack `views.update`; refused when `hash` is stale).
    FormUpdate {
        platform: Platform,
        view_id: String,
        hash: Option<String>,
        form: crate::chat::form::Form,
    },
    /// Fetch the members of every Slack user group the policy names into the membership table;
    /// reschedules itself every `slack.group_refresh` (a singleton).
    SlackGroups,
}

impl Job {
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Apply { .. } => kind::APPLY,
            Job::Revoke { .. } => kind::REVOKE,
            Job::Expire { .. } => kind::EXPIRE,
            Job::Cleanup { .. } => kind::CLEANUP,
            Job::ChatPost { .. } => kind::CHAT_POST,
            Job::ChatCard { .. } => kind::CHAT_CARD,
            Job::ChatCardUpdate { .. } => kind::CHAT_CARD_UPDATE,
            Job::Reconcile => kind::RECONCILE,
            Job::Checkpoint => kind::CHECKPOINT,
            Job::RemoveOrphan { .. } => kind::REMOVE_ORPHAN,
            Job::RevocationWatch { .. } => kind::REVOCATION_WATCH,
            Job::Relabel { .. } => kind::RELABEL,
            Job::ResolveTargets => kind::RESOLVE_TARGETS,
            Job::Digest => kind::DIGEST,
            Job::Remind { .. } => kind::REMIND,
            Job::NudgeApprovers { .. } => kind::NUDGE_APPROVERS,
            Job::Escalate { .. } => kind::ESCALATE,
            Job::SiemDeliver { .. } => kind::SIEM_DELIVER,
            Job::FormOpen { .. } => kind::FORM_OPEN,
            Job::FormUpdate { .. } => kind::FORM_UPDATE,
            Job::SlackGroups => kind::SLACK_GROUPS,
        }
    }

    fn request_id(&self) -> Option<&str> {
        match self {
            Job::Apply { request_id }
            | Job::Revoke { request_id }
            | Job::Expire { request_id, .. }
            | Job::Cleanup { request_id, .. }
            | Job::ChatCard { request_id, .. }
            | Job::ChatCardUpdate { request_id, .. }
            | Job::RevocationWatch { request_id }
            | Job::Relabel { request_id }
            | Job::Remind { request_id }
            | Job::NudgeApprovers { request_id }
            | Job::Escalate { request_id } => Some(request_id),
            Job::ChatPost { request_id, .. } | Job::RemoveOrphan { request_id, .. } => {
                request_id.as_deref()
            }
            Job::Reconcile
            | Job::Checkpoint
            | Job::ResolveTargets
            | Job::Digest
            | Job::SiemDeliver { .. }
            | Job::FormOpen { .. }
            | Job::FormUpdate { .. }
            | Job::SlackGroups => None,
        }
    }

    /// Chat jobs of one request share a lane so people read events in the order they happened.
    fn lane(&self) -> Option<String> {
        match self {
            Job::ChatPost { .. } | Job::ChatCard { .. } | Job::ChatCardUpdate { .. } => {
                self.request_id().map(|id| format!("chat:{id}"))
            }
            // Singletons: even if two replicas enqueued one each, only one pass runs at a time.
            Job::Reconcile
            | Job::Checkpoint
            | Job::ResolveTargets
            | Job::Digest
            | Job::SlackGroups => Some(format!("singleton:{}", self.kind())),
            Job::RemoveOrphan { nsg, rule_name, .. } => Some(Job::rule_lane(nsg, rule_name)),
            Job::SiemDeliver { sink } => Some(Job::siem_lane(sink)),
            _ => None,
        }
    }

    /// The lane of jobs that remove one rule (names compare case-insensitively in ARM).
    pub fn rule_lane(nsg: &str, rule_name: &str) -> String {
        format!(
            "rule:{}/{}",
            nsg.to_ascii_lowercase(),
            rule_name.to_ascii_lowercase()
        )
    }

    /// The lane of a SIEM sink's delivery (one singleton per sink).
    pub fn siem_lane(sink: &str) -> String {
        format!("singleton:siem:{sink}")
    }

    /// Adds this job to the transaction, to run at `run_at` (Unix ms) or later.
    pub async fn enqueue(self, tx: &mut Tx, run_at: i64) -> Result<i64> {
        tx.enqueue(JobSpec {
            kind: self.kind(),
            request_id: self.request_id().map(str::to_string),
            lane: self.lane(),
            payload: serde_json::to_value(&self).unwrap_or_default(),
            run_at,
        })
        .await
    }
}
