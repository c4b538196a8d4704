//! The tamper-evident audit trail: an append-only hash chain.
//!
//! Each event stores the SHA-256 of the previous event's hash and its own canonical content, so
//! changing, removing or reordering any past event breaks every hash after it. Appends lock the
//! single `audit_head` row, which gives consecutive sequence numbers even with several replicas.
//! The database refuses UPDATE and DELETE on `audit_events` (triggers in the migrations).

use super::{Result, Store, StoreError, Tx, now_ms};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// What happened. The names are stable: they are what auditors filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    Requested,
    AutoApproved,
    ApprovalRecorded,
    Approved,
    Denied,
    Expired,
    Cancelled,
    Applied,
    RevokeRequested,
    Revoked,
    Failed,
    ExtensionRequested,
    Extended,
    ExtensionDenied,
    ExtensionExpired,
    /// A request, click or HTTP call was refused: bad signature, unauthorised click, policy.
    Refused,
    RuleCleanup,
    /// An extended grant's rule got its new `expires=` description.
    RuleRelabeled,
    Started,
    /// The reconciler removed a `jitbot-*` rule whose grant is unknown, closed or never opened.
    DriftOrphanRemoved,
    /// The reconciler put back an active grant's rule that was edited outside jitbot so that it
    /// admitted more than approved (or whose provisioning failed).
    DriftRestored,
    /// An active grant's rule admitted more than approved and could not be put back yet (once
    /// per grant).
    DriftUnrestored,
    /// An active grant's rule was deleted outside jitbot: the grant ended (`active → revoked`)
    /// and nothing was re-created.
    DriftClosed,
    /// An active grant's rule was edited outside jitbot so that it admits no more than approved:
    /// left as it is, reported once per grant.
    DriftNarrowed,
    /// The reconciler put back a lockdown baseline that was missing or weakened.
    BaselineRestored,
    /// A `vm` target was found in Azure for the first time, moved, or could not be found.
    TargetResolved,
    /// A grant is still open well after it should have closed (ARM down or throttling).
    RevocationDelayed,
    /// The head of the chain was posted to the audit channel(s).
    Checkpoint,
    /// Summary of a reconcile pass that found something.
    Reconciled,
    /// The daily access review was posted.
    Digest,
    /// A `from me` link was issued (the token itself is never recorded).
    SourceLinkIssued,
    /// A step-up link was issued to an approver (the token itself is never recorded).
    StepUpLinkIssued,
    /// A step-up sign-in or confirmation was refused; `reason` says why.
    StepUpRefused,
    /// A request was opened without approval (`/jit break-glass`).
    BreakGlass,
    /// An undecided request went to the target's escalation approvers.
    Escalated,
    /// `azure.nsg_writes = "auto"` fell back to per-rule writes after a 403 (once per process).
    NsgWritesFallback,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Requested => "requested",
            AuditKind::AutoApproved => "auto_approved",
            AuditKind::ApprovalRecorded => "approval_recorded",
            AuditKind::Approved => "approved",
            AuditKind::Denied => "denied",
            AuditKind::Expired => "expired",
            AuditKind::Cancelled => "cancelled",
            AuditKind::Applied => "applied",
            AuditKind::RevokeRequested => "revoke_requested",
            AuditKind::Revoked => "revoked",
            AuditKind::Failed => "failed",
            AuditKind::ExtensionRequested => "extension_requested",
            AuditKind::Extended => "extended",
            AuditKind::ExtensionDenied => "extension_denied",
            AuditKind::ExtensionExpired => "extension_expired",
            AuditKind::Refused => "refused",
            AuditKind::RuleCleanup => "rule_cleanup",
            AuditKind::RuleRelabeled => "rule_relabeled",
            AuditKind::Started => "started",
            AuditKind::DriftOrphanRemoved => "drift_orphan_removed",
            AuditKind::DriftRestored => "drift_restored",
            AuditKind::DriftUnrestored => "drift_unrestored",
            AuditKind::DriftClosed => "drift_closed",
            AuditKind::DriftNarrowed => "drift_narrowed",
            AuditKind::TargetResolved => "target_resolved",
            AuditKind::BaselineRestored => "baseline_restored",
            AuditKind::RevocationDelayed => "revocation_delayed",
            AuditKind::Checkpoint => "checkpoint",
            AuditKind::Reconciled => "reconciled",
            AuditKind::Digest => "digest",
            AuditKind::SourceLinkIssued => "source_link_issued",
            AuditKind::StepUpLinkIssued => "step_up_link_issued",
            AuditKind::StepUpRefused => "step_up_refused",
            AuditKind::BreakGlass => "break_glass",
            AuditKind::Escalated => "escalated",
            AuditKind::NsgWritesFallback => "nsg_writes_fallback",
        }
    }
}

/// One event as stored.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub kind: String,
    pub request_id: Option<String>,
    pub actor: Option<String>,
    pub detail: Value,
    pub simulated: bool,
    pub prev_hash: String,
    pub hash: String,
}

/// The hashed content of an event.
pub struct Hashed<'a> {
    pub seq: i64,
    pub at: i64,
    pub kind: &'a str,
    pub request_id: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub detail: &'a str,
    pub simulated: bool,
}

/// The hash of an event: SHA-256 over the previous hash and the event's canonical JSON form.
pub fn event_hash(prev_hash: &str, e: &Hashed<'_>) -> String {
    let canonical = serde_json::json!([
        prev_hash,
        e.seq,
        e.at,
        e.kind,
        e.request_id,
        e.actor,
        e.detail,
        e.simulated
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

impl Tx {
    /// Appends an event to the chain inside this transaction.
    pub async fn audit(
        &mut self,
        kind: AuditKind,
        request_id: Option<&str>,
        actor: Option<&str>,
        detail: Value,
        simulated: bool,
    ) -> Result<i64> {
        // Locks the head row until commit: appends are serial across connections and replicas.
        let head =
            sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
                .fetch_one(self.conn())
                .await?;
        let seq: i64 = head.try_get("seq")?;
        let prev: String = head.try_get("hash")?;
        let at = now_ms();
        let detail_text = detail.to_string();
        let hash = event_hash(
            &prev,
            &Hashed {
                seq,
                at,
                kind: kind.as_str(),
                request_id,
                actor,
                detail: &detail_text,
                simulated,
            },
        );
        sqlx::query(
            "INSERT INTO audit_events (seq, at, kind, request_id, actor, detail, simulated, prev_hash, hash)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
        )
        .bind(seq)
        .bind(at)
        .bind(kind.as_str())
        .bind(request_id)
        .bind(actor)
        .bind(&detail_text)
        .bind(simulated as i64)
        .bind(&prev)
        .bind(&hash)
        .execute(self.conn())
        .await?;
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
            .bind(&hash)
            .execute(self.conn())
            .await?;
        tracing::info!(target: "audit", seq, kind = kind.as_str(), request_id, actor, %detail, simulated, "audit event");
        Ok(seq)
    }

    /// Whether the request has an event of `kind` (alerts said once per grant; take the
    /// request's row lock first, [`Tx::lock_request`], so two replicas cannot both say it).
    pub async fn has_audit_event(&mut self, kind: AuditKind, request_id: &str) -> Result<bool> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM audit_events WHERE kind = $1 AND request_id = $2",
        )
        .bind(kind.as_str())
        .bind(request_id)
        .fetch_one(self.conn())
        .await?
        .try_get("n")?;
        Ok(n > 0)
    }
}

/// The outcome of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub events: i64,
    pub head_hash: String,
    /// The first problem found, if any: (seq, what is wrong).
    pub broken: Option<(i64, String)>,
}

/// A checkpoint as posted to the audit channel: event `seq` had hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
}

impl std::str::FromStr for Checkpoint {
    type Err = String;

    /// `<seq>:<hash>`, e.g. `42:9f86d081…` (64 hex digits).
    fn from_str(s: &str) -> std::result::Result<Checkpoint, String> {
        let s = s.trim().trim_matches('`');
        let bad = || {
            format!(
                "checkpoint {s:?} must be <seq>:<hash> as posted to the audit channel, e.g. 42:9f86d081884c7d65… (64 hex digits)"
            )
        };
        let (seq, hash) = s.split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.trim().parse().map_err(|_| bad())?;
        let hash = hash.trim().to_ascii_lowercase();
        if seq < 1 || hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Checkpoint { seq, hash })
    }
}

impl Store {
    /// Reads events with `seq > after` and `at >= since_ms`, in order.
    pub async fn audit_events(&self, after: i64, since_ms: Option<i64>) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, request_id, actor, detail, simulated, prev_hash, hash FROM audit_events
             WHERE seq > $1 AND at >= $2 ORDER BY seq",
        )
        .bind(after)
        .bind(since_ms.unwrap_or(i64::MIN))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail")?;
                Ok(AuditEvent {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    request_id: r.try_get("request_id")?,
                    actor: r.try_get("actor")?,
                    detail: serde_json::from_str(&detail)
                        .map_err(|e| StoreError::Corrupt(format!("audit detail: {e}")))?,
                    simulated: r.try_get::<i64, _>("simulated")? != 0,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    /// Recomputes every hash from the first event and compares it with what is stored and with
    /// the head row.
    pub async fn verify_audit(&self) -> Result<ChainReport> {
        // The head is read first: events appended while this runs (jitbot keeps running) then
        // come after it and are checked as chain links, instead of looking like a mismatch.
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        let head_seq: i64 = head.try_get("seq")?;
        let head_hash: String = head.try_get("hash")?;
        let mut hash_at_head = (head_seq == 0).then(|| "0".repeat(64));
        let rows = sqlx::query(
            "SELECT seq, at, kind, request_id, actor, detail, simulated, prev_hash, hash FROM audit_events ORDER BY seq",
        )
        .fetch_all(self.pool())
        .await?;
        let mut prev = "0".repeat(64);
        let mut count = 0;
        for (i, r) in rows.iter().enumerate() {
            let expected_seq = i as i64 + 1;
            let seq: i64 = r.try_get("seq")?;
            let detail: String = r.try_get("detail")?;
            let kind: String = r.try_get("kind")?;
            let request_id: Option<String> = r.try_get("request_id")?;
            let actor: Option<String> = r.try_get("actor")?;
            let stored_prev: String = r.try_get("prev_hash")?;
            let stored: String = r.try_get("hash")?;
            let at: i64 = r.try_get("at")?;
            let simulated = r.try_get::<i64, _>("simulated")? != 0;
            let broken = |why: String| ChainReport {
                events: count,
                head_hash: prev.clone(),
                broken: Some((seq, why)),
            };
            if seq != expected_seq {
                return Ok(broken(format!(
                    "expected event {expected_seq}, found {seq}: events are missing"
                )));
            }
            if stored_prev != prev {
                return Ok(broken(
                    "its prev_hash does not match the event before it".into(),
                ));
            }
            let h = event_hash(
                &prev,
                &Hashed {
                    seq,
                    at,
                    kind: &kind,
                    request_id: request_id.as_deref(),
                    actor: actor.as_deref(),
                    detail: &detail,
                    simulated,
                },
            );
            if h != stored {
                return Ok(broken(
                    "its content does not match its hash: it was altered".into(),
                ));
            }
            prev = h;
            count += 1;
            if seq == head_seq {
                hash_at_head = Some(prev.clone());
            }
        }
        if count < head_seq || hash_at_head.as_deref() != Some(head_hash.as_str()) {
            return Ok(ChainReport {
                events: count,
                head_hash: prev,
                broken: Some((
                    head_seq,
                    format!(
                        "the chain head says {head_seq} events ending in {head_hash}: events after {count} were removed"
                    ),
                )),
            });
        }
        Ok(ChainReport {
            events: count,
            head_hash: prev,
            broken: None,
        })
    }

    /// Checks the chain (as [`Store::verify_audit`]) and that event `cp.seq` still has the hash a
    /// checkpoint recorded. An attacker with write access can rewrite an old event and re-hash
    /// everything after it, which plain verification cannot see; the checkpoint, kept outside the
    /// database (in the chat history), can. The report's `broken` names the first problem.
    pub async fn verify_audit_against(&self, cp: &Checkpoint) -> Result<ChainReport> {
        let mut report = self.verify_audit().await?;
        if report.broken.is_some() {
            return Ok(report);
        }
        let row = sqlx::query("SELECT hash FROM audit_events WHERE seq = $1")
            .bind(cp.seq)
            .fetch_optional(self.pool())
            .await?;
        let problem = match row {
            None => Some(format!(
                "the checkpoint names event {} but the trail has only {} events: events were removed",
                cp.seq, report.events
            )),
            Some(r) => {
                let stored: String = r.try_get("hash")?;
                (stored != cp.hash).then(|| {
                    format!(
                        "the checkpoint says event {} had hash {} but the database now has {}: \
                         the trail was rewritten up to that event and re-hashed",
                        cp.seq, cp.hash, stored
                    )
                })
            }
        };
        if let Some(why) = problem {
            report.broken = Some((cp.seq, why));
        }
        Ok(report)
    }

    /// The newest checkpoint event's seq, if any.
    pub async fn last_checkpoint_seq(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MAX(seq) AS s FROM audit_events WHERE kind = 'checkpoint'")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<Option<i64>, _>("s")?)
    }

    /// The chain head: (seq, hash) of the newest event (0 and zeros when empty).
    pub async fn audit_head(&self) -> Result<(i64, String)> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        Ok((row.try_get("seq")?, row.try_get("hash")?))
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use super::Checkpoint;

    #[test]
    fn checkpoints_parse_only_in_the_posted_form() {
        let h = "ab".repeat(32);
        let cp: Checkpoint = format!("12:{h}").parse().unwrap();
        assert_eq!((cp.seq, cp.hash.as_str()), (12, h.as_str()));
        let cp: Checkpoint = format!("`7:{}`", h.to_uppercase()).parse().unwrap();
        assert_eq!(cp.hash, h);
        for bad in [
            "12".to_string(),
            format!("x:{h}"),
            format!("0:{h}"),
            "3:abc".into(),
            format!("3:{}", "zz".repeat(32)),
        ] {
            let e = bad.parse::<Checkpoint>().unwrap_err();
            assert!(e.contains("<seq>:<hash>"), "{e}");
        }
    }
}
