//! `Job::SiemDeliver`: one singleton per SIEM sink (lane `singleton:siem:<sink>`, scheduled at
//! start) that sends the audit events after the sink's cursor, in `seq` order, in batches, and
//! moves the cursor past each batch the sink accepted (compare-and-swap, a statement of its own).
//!
//! It never skips and never reorders: a batch that is not accepted is sent again, with the same
//! events first, after a backoff (or the sink's `Retry-After`) for as long as the outage lasts; a
//! batch refused as too large (413) is split in halves; an event too large on its own goes
//! without its detail (its hash still links the chain). Caught up, it looks again after
//! `siem.poll_interval`. A crash after a send and before the cursor moved sends those events
//! again: receivers drop duplicates by `seq`.

use super::{Outcome, Worker, backoff};
use crate::job::Job;
use crate::siem::{SendError, Sink, fit};
use crate::store::siem::ChainEvent;
use crate::store::{ClaimedJob, Result, now_ms};
use std::time::{Duration, Instant};

/// How long one run keeps sending batches before it lets other jobs have the slot (it is due
/// again at once).
const RUN_BUDGET: Duration = Duration::from_secs(5);
/// Longest wait between two tries in an outage when the sink gives no `Retry-After`.
const BACKOFF_CAP_MS: i64 = 60_000;

/// How sending a run of events ended.
enum Sent {
    /// Every event was accepted and the cursor moved past them.
    All,
    /// Someone else moved the cursor meanwhile: read it again.
    Raced,
    /// A batch was not accepted; the events from it on are sent again later.
    Failed(SendError),
}

impl Worker {
    /// At start: one delivery job per configured sink, due now.
    pub(super) async fn schedule_siem(&self) -> Result<()> {
        let now = now_ms();
        for key in self.siem.keys() {
            let job = Job::SiemDeliver {
                sink: key.to_string(),
            };
            let payload = serde_json::to_value(&job).unwrap_or_default();
            self.store
                .ensure_lane_singleton(job.kind(), &Job::siem_lane(key), &payload, now)
                .await?;
        }
        Ok(())
    }

    /// Sends what the sink has not accepted yet, for up to [`RUN_BUDGET`].
    pub(super) async fn deliver_siem(&self, claimed: &ClaimedJob, key: &str) -> Result<Outcome> {
        self.store
            .retire_other_lane_jobs(&Job::siem_lane(key), claimed.id)
            .await?;
        let Some(sink) = self.siem.get(key) else {
            tracing::info!(
                sink = key,
                "SIEM sink is no longer configured: its delivery stops (its cursor is kept)"
            );
            return Ok(Outcome::Done);
        };
        let started = Instant::now();
        loop {
            let cursor = self.store.siem_cursor(key).await?;
            let limit = self.siem.batch_size as i64;
            let events = self
                .store
                .chain_events_after(cursor.last_seq, limit)
                .await?;
            if events.is_empty() {
                self.metrics.siem_pending(key, 0);
                let next = now_ms() + self.siem.poll_interval.as_millis() as i64;
                return Ok(Outcome::RescheduleAt(next));
            }
            match self
                .send_in_order(key, sink, cursor.last_seq, &events)
                .await?
            {
                Sent::All | Sent::Raced if started.elapsed() < RUN_BUDGET => continue,
                Sent::All | Sent::Raced => {
                    self.report_pending(key).await?;
                    return Ok(Outcome::RescheduleAt(now_ms()));
                }
                Sent::Failed(e) => return self.siem_failed(key, e).await,
            }
        }
    }

    /// Sends `events` (the ones after `cursor`, in order) in as few batches as the sink takes,
    /// moving the cursor after each accepted batch.
    async fn send_in_order(
        &self,
        key: &str,
        sink: &Sink,
        mut cursor: i64,
        events: &[ChainEvent],
    ) -> Result<Sent> {
        let mut encoded: Vec<Vec<u8>> = events.iter().map(|e| sink.encode(e, false)).collect();
        let mut truncated = vec![false; events.len()];
        let envelope = sink.envelope_bytes();
        let mut cap = usize::MAX;
        let mut at = 0;
        while at < events.len() {
            let sizes: Vec<usize> = encoded[at..].iter().map(Vec::len).collect();
            let n = fit(&sizes, envelope, sink.max_batch_bytes, cap);
            let alone_too_large = n == 1 && envelope + sizes[0] > sink.max_batch_bytes;
            let answer = if alone_too_large && !truncated[at] {
                Err(SendError::TooLarge) // known without asking
            } else {
                sink.send(&encoded[at..at + n]).await
            };
            match answer {
                Ok(()) => {
                    let to = events[at + n - 1].seq;
                    if !self.store.advance_siem_cursor(key, cursor, to).await? {
                        return Ok(Sent::Raced);
                    }
                    tracing::debug!(sink = key, from = cursor + 1, to, "audit events delivered");
                    cursor = to;
                    at += n;
                }
                Err(SendError::TooLarge) if n > 1 => cap = n / 2,
                Err(SendError::TooLarge) if !truncated[at] => {
                    let seq = events[at].seq;
                    tracing::warn!(
                        sink = key,
                        seq,
                        bytes = sizes[0],
                        "audit event too large for the sink: sent without its detail"
                    );
                    encoded[at] = sink.encode(&events[at], true);
                    truncated[at] = true;
                }
                Err(SendError::TooLarge) => {
                    let message = format!(
                        "event {} is too large for the sink even without its detail; raise the sink's limit",
                        events[at].seq
                    );
                    return Ok(Sent::Failed(SendError::Failed {
                        message,
                        retry_after: None,
                    }));
                }
                Err(e) => return Ok(Sent::Failed(e)),
            }
        }
        Ok(Sent::All)
    }

    /// Records the failure and plans the next try: the sink's `Retry-After`, else a backoff on
    /// the consecutive failures.
    async fn siem_failed(&self, key: &str, e: SendError) -> Result<Outcome> {
        let why = e.to_string();
        let failures = self.store.siem_send_failed(key, &why).await?;
        self.report_pending(key).await?;
        let wait_ms = match &e {
            SendError::Failed {
                retry_after: Some(d),
                ..
            } => d.as_millis() as i64,
            _ => backoff(failures - 1, BACKOFF_CAP_MS),
        };
        tracing::warn!(sink = key, failures, retry_in_ms = wait_ms, error = %why, "SIEM delivery failed; the same events are sent again later");
        Ok(Outcome::RetryAt(now_ms() + wait_ms, why))
    }

    /// Sets `jitbot_siem_pending_events{sink}` from the chain head and the sink's cursor.
    async fn report_pending(&self, key: &str) -> Result<()> {
        let (head, _) = self.store.audit_head().await?;
        let cursor = self.store.siem_cursor(key).await?;
        self.metrics
            .siem_pending(key, (head - cursor.last_seq).max(0));
        Ok(())
    }
}
