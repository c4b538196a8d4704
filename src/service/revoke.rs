//! `/jit revoke <id>`: cancel a pending request or close an open grant early.

use super::Service;
use crate::chat::{Message, Tone};
use crate::decision::{self, RevokePlan};
use crate::domain::{RequestId, Status};
use crate::job::Job;
use crate::messages::{self, changed_meanwhile};
use crate::policy::Actor;
use crate::store::{AuditKind, RequestRow, Result, now_ms};
use serde_json::json;

impl Service {
    /// The requester or an approver may revoke; [`decision::plan_revoke`] says what that means for
    /// the request's current status.
    pub(super) async fn revoke(&self, actor: &Actor<'_>, id: &RequestId) -> Result<Message> {
        let req = match self.visible_request(actor, id).await? {
            Ok(r) => r,
            Err(m) => return Ok(m),
        };
        let by = actor.person.name.as_str();
        match decision::plan_revoke(req.status) {
            RevokePlan::Cancel => self.cancel(&req, by).await,
            RevokePlan::CloseEarly => self.close_early(&req, by).await,
            RevokePlan::NotYet => Ok(self.reply(
                Tone::Warning,
                "Not yet",
                format!("`{id}` is being opened right now; revoke it again in a few seconds"),
            )),
            RevokePlan::NothingToDo => Ok(self.reply(
                Tone::Info,
                "Nothing to do",
                format!("`{id}` is already {}", req.status),
            )),
        }
    }

    /// `pending → cancelled` (CAS: an approval that won the race wins, and this answers so).
    async fn cancel(&self, req: &RequestRow, by: &str) -> Result<Message> {
        let mut tx = self.store.begin().await?;
        let detail = format!("cancelled by {by}");
        if !tx
            .transition(&req.id, Status::Pending, Status::Cancelled, Some(&detail))
            .await?
        {
            return Ok(changed_meanwhile(&req.id, self.simulated));
        }
        tx.audit(
            AuditKind::Cancelled,
            Some(&req.id),
            Some(by),
            json!({}),
            self.simulated,
        )
        .await?;
        let text = format!("{by} cancelled the request before it was decided");
        let notice = messages::notice(req, Tone::Warning, "Request cancelled", text);
        self.out.feed(&mut tx, Some(&req.id), &notice).await?;
        self.out.refresh_cards(&mut tx, &req.id).await?;
        tx.commit().await?;
        let answer = format!("`{}` is cancelled; nothing was opened", req.id);
        Ok(self.reply(Tone::Info, "Revoke", answer))
    }

    /// `active → revoking` and the revoke job in the same transaction (CAS: expiry or another
    /// revoke may have won the race). The revoke job, not this handler, deletes the rule.
    async fn close_early(&self, req: &RequestRow, by: &str) -> Result<Message> {
        let mut tx = self.store.begin().await?;
        let detail = format!("revoked early by {by}");
        if !tx
            .transition(&req.id, Status::Active, Status::Revoking, Some(&detail))
            .await?
        {
            return Ok(changed_meanwhile(&req.id, self.simulated));
        }
        tx.audit(
            AuditKind::RevokeRequested,
            Some(&req.id),
            Some(by),
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
        tx.commit().await?;
        let answer = format!(
            "closing `{}` now; I will confirm when the rule is gone",
            req.id
        );
        Ok(self.reply(Tone::Info, "Revoke", answer))
    }
}
