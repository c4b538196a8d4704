//! `Job::Digest`: the daily access review ([`crate::digest`]), posted to the audit channel at
//! `digest.at` (UTC) and audited (`digest`, with the counts). A singleton that reschedules itself
//! for the next day; a digest missed while jitbot was down runs at start.

use super::{Outcome, Worker};
use crate::digest::Digest;
use crate::domain::Status;
use crate::store::{AuditKind, ClaimedJob, Result, now_ms};
use serde_json::json;

const DAY_MS: i64 = 86_400_000;

impl Worker {
    pub(super) async fn digest(&self, claimed: &ClaimedJob) -> Result<Outcome> {
        self.retire_duplicates(claimed).await?;
        let Some(at) = self.settings.digest_at else {
            return Ok(Outcome::Done); // switched off since it was scheduled
        };
        let now = now_ms();
        let events = self.store.audit_events(0, Some(now - DAY_MS)).await?;
        let digest = Digest::of(&events);
        let open = self.store.requests_in(&[Status::Active]).await?;
        let message = digest.message(&open, self.simulated);
        let mut tx = self.store.begin().await?;
        tx.audit(
            AuditKind::Digest,
            None,
            Some("jitbot"),
            json!({
                "requested": digest.requested_by_target.values().sum::<usize>(),
                "opened": digest.opened,
                "denied": digest.denied,
                "refused": digest.refusals.values().sum::<usize>(),
                "drift": digest.drift.values().sum::<usize>(),
                "open_now": open.len(),
            }),
            self.simulated,
        )
        .await?;
        self.out.feed(&mut tx, None, &message).await?;
        tx.commit().await?;
        Ok(Outcome::RescheduleAt(at.next_after(now)))
    }
}
