//! `Job::SlackGroups`: the singleton that fetches the members of every Slack user group the
//! policy names (`slack-group:<id>`) with `usergroups.users.list`, at start and every
//! `slack.group_refresh`, into the membership table that handlers read at click time.
//!
//! A group whose fetch fails keeps its last members and its old `refreshed_at`: once that is
//! older than `Policy::group_max_age`, commands and clicks that depend on it fail closed.

use super::{Outcome, Worker};
use crate::chat::ChatError;
use crate::domain::Platform;
use crate::job::Job;
use crate::store::{ClaimedJob, Result, now_ms};

impl Worker {
    /// At start: a refresh due now, when the policy names Slack groups and Slack is configured.
    /// A queued one is pulled forward, so every start refreshes at once.
    pub(super) async fn schedule_slack_groups(&self) -> Result<()> {
        if self.policy.slack_groups().is_empty() || !self.chats.contains_key(&Platform::Slack) {
            return Ok(());
        }
        let now = now_ms();
        let job = Job::SlackGroups;
        self.store.bring_forward(job.kind(), now).await?;
        let payload = serde_json::to_value(&job).unwrap_or_default();
        self.store
            .ensure_singleton(job.kind(), &payload, now)
            .await?;
        self.store
            .retire_younger_singletons(job.kind(), now)
            .await?;
        Ok(())
    }

    /// One refresh of every group; then again after `slack.group_refresh`.
    pub(super) async fn refresh_slack_groups(&self, claimed: &ClaimedJob) -> Result<Outcome> {
        self.retire_duplicates(claimed).await?;
        let next =
            now_ms() + i64::try_from(self.policy.group_refresh.as_millis()).unwrap_or(60_000);
        let Some(slack) = self.chats.get(&Platform::Slack) else {
            return Ok(Outcome::Done);
        };
        for group in self.policy.slack_groups() {
            match slack.group_members(&group).await {
                Ok(users) => {
                    self.store
                        .replace_group_members(&group, &users, now_ms())
                        .await?;
                    tracing::debug!(group = %group, members = users.len(), "Slack group refreshed");
                }
                Err(e) => {
                    let kind = match e {
                        ChatError::RateLimited { .. } => "rate_limited",
                        ChatError::Transient(_) => "transient",
                        ChatError::Permanent(_) => "permanent",
                    };
                    self.metrics.chat_error("slack", kind);
                    tracing::warn!(group = %group, error = %e, "could not refresh a Slack group; its members stay as last fetched until they are too old to rely on");
                }
            }
        }
        Ok(Outcome::RescheduleAt(next))
    }
}
