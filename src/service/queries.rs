//! The read-only commands: `/jit targets`, `/jit list`, `/jit status <id>`. They write nothing,
//! not even an audit event.

use super::Service;
use crate::chat::{Message, Tone};
use crate::domain::Platform;
use crate::domain::RequestId;
use crate::messages;
use crate::policy::{Actor, Person};
use crate::store::Result;

impl Service {
    /// `/jit targets`: what this person may request, with each target's limits and approvers.
    pub(super) fn targets(&self, actor: &Actor<'_>) -> Message {
        let mine = self.policy.requestable(actor);
        if mine.is_empty() {
            return self.reply(Tone::Info, "Your targets", "you may not request any target");
        }
        let lines: Vec<String> = mine
            .iter()
            .map(|t| {
                format!(
                    "{}: ports {} ({}), up to {}, from {}{}; approvers: {} ({} needed); {}",
                    t.name,
                    t.ports_text(),
                    t.protocol,
                    t.max_duration,
                    t.sources_text(),
                    t.default_source
                        .map(|d| format!(" (default {d})"))
                        .unwrap_or_default(),
                    t.approvers_text(),
                    t.approvals_required,
                    t.lockdown_text()
                ) + &t
                    .conditions
                    .describe()
                    .iter()
                    .map(|c| format!("; {c}"))
                    .collect::<String>()
            })
            .collect();
        self.reply(Tone::Info, "Your targets", lines.join("\n"))
    }

    /// `/jit list`: this person's own requests that are not finished.
    pub(super) async fn list(&self, person: &Person) -> Result<Message> {
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

    /// `/jit status <id>`: the card's facts, for the requester and the target's approvers.
    pub(super) async fn status(
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
}
