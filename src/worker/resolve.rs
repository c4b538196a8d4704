//! `Job::ResolveTargets`: the singleton that looks every `vm` target up in Azure (at start and
//! every `worker.resolve_interval`) and records where it is now ([`crate::paths`]). A VM that
//! moved, disappeared or cannot be protected is reported once per change (audited
//! `target_resolved`, and on the audit channel); the first successful look-up is only audited.

use super::{Outcome, Worker};
use crate::chat::Tone;
use crate::messages;
use crate::paths;
use crate::store::{AuditKind, ClaimedJob, Result, now_ms};
use serde_json::json;

impl Worker {
    pub(super) async fn resolve_targets(&self, claimed: &ClaimedJob) -> Result<Outcome> {
        self.retire_duplicates(claimed).await?;
        for change in paths::resolve_all(&self.policy, &self.store, &self.inventory).await? {
            let mut tx = self.store.begin().await?;
            if !change.record(&mut tx).await? {
                continue; // another replica recorded it (and reports it)
            }
            let side = |r: &std::result::Result<paths::Path, String>| match r {
                Ok(p) => json!({ "nsgs": p.nsgs, "destination": p.destination }),
                Err(why) => json!({ "error": why }),
            };
            tx.audit(
                AuditKind::TargetResolved,
                None,
                Some("jitbot"),
                json!({
                    "target": change.target,
                    "before": change.before.as_ref().map(side),
                    "after": side(&change.after),
                }),
                self.simulated,
            )
            .await?;
            if change.worth_reporting() {
                let (tone, title) = match (&change.before, &change.after) {
                    (_, Ok(_)) => (Tone::Warning, "Target moved"),
                    (None, Err(_)) => (Tone::Danger, "Target not found"),
                    (Some(_), Err(_)) => (Tone::Danger, "Target lost"),
                };
                let message = messages::reply(tone, title, change.sentence(), self.simulated);
                self.out.feed(&mut tx, None, &message).await?;
            }
            tx.commit().await?;
            tracing::info!(target = %change.target, change = %change.sentence(), "target path recorded");
        }
        Ok(Outcome::RescheduleAt(
            now_ms() + self.settings.resolve_interval.as_millis() as i64,
        ))
    }
}
