//! Approvers who have not acted: `Job::NudgeApprovers` reminds them by direct message after the
//! target's `remind_approvers_after`; `Job::Escalate` sends the card to its
//! `escalation_approvers` after `escalate_after`, who may then decide too
//! ([`crate::policy::Decidable::escalated`]). Both do nothing once the request is decided.

use super::{Outcome, Worker};
use crate::chat::Tone;
use crate::domain::{Platform, Status};
use crate::job::Job;
use crate::messages::{self, who};
use crate::policy::Person;
use crate::store::{AuditKind, RequestRow, Result, Tx, now_ms};
use serde_json::json;

/// Each configured platform on which `person` can be reached, with their address there.
fn addresses(w: &Worker, person: &Person) -> Vec<(Platform, String)> {
    w.out
        .direct_addresses(person.slack.as_deref(), person.discord.as_deref())
}

impl Worker {
    /// The request, while it is still waiting for its first decision.
    async fn undecided(&self, id: &str) -> Result<Option<RequestRow>> {
        Ok(self
            .store
            .request(id)
            .await?
            .filter(|r| r.status == Status::Pending && r.round == 0))
    }

    pub(super) async fn nudge_approvers(&self, id: &str) -> Result<Outcome> {
        let Some(req) = self.undecided(id).await? else {
            return Ok(Outcome::Done);
        };
        let Some(target) = self.policy.targets.get(&req.target) else {
            return Ok(Outcome::Done);
        };
        let decided: Vec<String> = self
            .store
            .decisions(id)
            .await?
            .into_iter()
            .map(|d| d.approver)
            .collect();
        let text = format!(
            "{} is waiting for your decision: {} port {} from {} for {}. The card is in the approval channel; undecided, it expires at {}.",
            who(&self.policy, &req.requester, req.platform),
            req.target,
            req.ports,
            req.source,
            crate::domain::GrantDuration::from_millis(req.duration_ms),
            messages::clock(req.pending_until, false)
        );
        let nudge = messages::notice(&req, Tone::Pending, "Waiting for your decision", text);
        let mut tx = self.store.begin().await?;
        for person in self.policy.approver_people(target) {
            if person.name == req.requester || decided.contains(&person.name) {
                continue;
            }
            for (platform, to) in addresses(self, person) {
                crate::outbox::post(&mut tx, platform, &to, Some(id), &nudge).await?;
            }
        }
        tx.commit().await?;
        Ok(Outcome::Done)
    }

    pub(super) async fn escalate(&self, id: &str) -> Result<Outcome> {
        let Some(req) = self.undecided(id).await? else {
            return Ok(Outcome::Done);
        };
        let Some(escalation) = self
            .policy
            .targets
            .get(&req.target)
            .and_then(|t| t.escalation.as_ref())
        else {
            return Ok(Outcome::Done);
        };
        let people: Vec<&Person> = self
            .policy
            .people_named(&escalation.approvers)
            .into_iter()
            .filter(|p| p.name != req.requester)
            .collect();
        let names: Vec<&str> = people.iter().map(|p| p.name.as_str()).collect();
        let mut tx = self.store.begin().await?;
        tx.audit(
            AuditKind::Escalated,
            Some(id),
            Some("jitbot"),
            json!({ "to": names, "after_ms": escalation.after.as_millis() }),
            req.simulated,
        )
        .await?;
        self.send_cards(&mut tx, id, &people).await?;
        let text = format!(
            "Nobody decided {} in {}; it went to {} as well.",
            req.id,
            escalation.after,
            names.join(", ")
        );
        let notice = messages::notice(&req, Tone::Warning, "Escalated", text);
        self.out.feed(&mut tx, Some(id), &notice).await?;
        tx.commit().await?;
        Ok(Outcome::Done)
    }

    /// The approval card, by direct message, to each of `people` (kept up to date like the
    /// channel's).
    async fn send_cards(&self, tx: &mut Tx, id: &str, people: &[&Person]) -> Result<()> {
        for person in people {
            for (platform, channel) in addresses(self, person) {
                Job::ChatCard {
                    platform,
                    channel,
                    request_id: id.to_string(),
                }
                .enqueue(tx, now_ms())
                .await?;
            }
        }
        Ok(())
    }
}
