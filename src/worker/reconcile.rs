//! The reconciler, the revocation watch and audit checkpoints: the jobs that compare what Azure
//! holds with what the database says, and make tampering visible.
//!
//! * `Job::Reconcile` is a singleton (lane `singleton:reconcile`) that runs at start and then
//!   every `worker.reconcile_interval`. For each NSG in the policy (and each NSG an active grant
//!   lives in) it lists the rules once and:
//!   - a rule jitbot owns (`jitbot-<request id>`) whose request is unknown, closed, not approved or
//!     for another NSG → a `Job::RemoveOrphan` (retried until done, like a revoke);
//!   - an active grant whose rule differs from the approved one is judged by what the rule
//!     *admits* ([`crate::access::Admission::compare`]), never by its text ([`verdict`]):
//!     - **deleted** → the grant ends (`active → revoked`, detail "closed in Azure outside
//!       jitbot", audited `drift_closed`; requester, card and audit channel are told). Nothing is
//!       re-created: whoever deleted it may be closing a door during an incident. The grant's
//!       queued revoke job then finds it closed and does nothing;
//!     - **widened** (admits something not approved: wider source, more ports, another
//!       destination, protocol `*`, another direction, a lower priority number) → put back at
//!       once as approved (`NsgManager::restore_rule`, recorded priority or the lowest free one,
//!       which is then recorded), audited `drift_restored`, with a drift alert naming what had
//!       been widened; a restore that fails is said once (`drift_unrestored`) and retried every
//!       pass;
//!     - **narrowed** (admits no more than approved: narrower source or ports, a Deny, a higher
//!       priority number) → left as the person made it, said once per grant (`drift_narrowed`),
//!       and closed at expiry as usual;
//!     - provisioning **failed** → the approved rule is PUT again, as for a widening;
//!   - anything else is left alone: rules jitbot does not own, and grants whose state is moving
//!     (`approved`/`applying`: a PUT in flight; `revoking`, or `active` past expiry: the revoke job
//!     is due; activated after the NSG was read).
//!
//!   *Invariant:* the reconciler only ever reduces access. It writes a grant's rule only to take
//!   back what an edit added beyond the approval (or to repair a failed provisioning), never to
//!   re-create a deleted rule or undo a narrowing.
//! * `Job::RevocationWatch` is enqueued by the revoke job on its first run and fires
//!   `worker.revocation_alert_after` after the revocation became due: a grant still not closed
//!   gets one `revocation_delayed` alert (audited) on the audit channel.
//! * `Job::Checkpoint` is a singleton that posts the chain head (`seq` + hash) to the audit
//!   channel every `worker.checkpoint_interval`, unless nothing was appended since the last one.
//!
//! Every finding is audited and posted through `Destinations::feed`.

use super::{Outcome, Worker, backoff};
use crate::access::{AddressSet, Admission, Drift, PortSet, Protocol};
use crate::azure::{RuleSpec, SecurityRule};
use crate::chat::{Message, Tone};
use crate::domain::{Status, grant_description};
use crate::job::Job;
use crate::lockdown::{Baseline, NsgPlan, Step};
use crate::messages;
use crate::store::{AuditKind, ClaimedJob, RequestRow, Result, Store, now_ms};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};

use crate::job::kind::{
    CHECKPOINT as CHECKPOINT_KIND, CLEANUP as CLEANUP_KIND, DIGEST as DIGEST_KIND,
    RECONCILE as RECONCILE_KIND, REMOVE_ORPHAN as REMOVE_ORPHAN_KIND,
    RESOLVE_TARGETS as RESOLVE_TARGETS_KIND, REVOCATION_WATCH as WATCH_KIND, REVOKE as REVOKE_KIND,
};

/// `850 ms`, `4.2 s`, `3m 12s`, `1h 5m`.
pub fn human_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{}h {}m", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// Last path segment of an NSG id.
fn nsg_name(nsg_id: &str) -> &str {
    nsg_id.rsplit('/').next().unwrap_or(nsg_id)
}

/// Where a grant's rule was read, and what was there.
#[derive(Clone, Copy)]
struct Seen<'a> {
    nsg: &'a str,
    actual: Option<&'a SecurityRule>,
}

/// What a rule allows, for people and the audit trail.
fn describe(rule: &SecurityRule) -> Value {
    let p = &rule.properties;
    json!({
        "name": rule.name,
        "access": p.access,
        "direction": p.direction,
        "priority": p.priority,
        "protocol": p.protocol,
        "sources": p.source_addresses(),
        "destinations": p.destination_addresses(),
        "ports": p.destination_ports(),
        "source_ports": p.source_ports(),
        "description": p.description,
    })
}

fn lower_set(v: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    v.into_iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

/// How the rule in Azure differs from the grant (empty: it matches).
pub fn differences(
    req: &RequestRow,
    priority: Option<i64>,
    rule: Option<&SecurityRule>,
) -> Vec<String> {
    let Some(rule) = rule else {
        return vec!["the rule was deleted".into()];
    };
    let p = &rule.properties;
    let mut d = Vec::new();
    if lower_set(p.source_addresses()) != lower_set([req.source.clone()]) {
        d.push(format!(
            "source is {} instead of {}",
            p.source_addresses().join(", "),
            req.source
        ));
    }
    if lower_set(p.destination_addresses()) != lower_set([req.destination.clone()]) {
        d.push(format!(
            "destination is {} instead of {}",
            p.destination_addresses().join(", "),
            req.destination
        ));
    }
    let want_ports = lower_set(req.ports_list().iter().map(u16::to_string));
    if lower_set(p.destination_ports()) != want_ports {
        d.push(format!(
            "ports are {} instead of {}",
            p.destination_ports().join(", "),
            req.ports
        ));
    }
    if lower_set(p.source_ports()) != lower_set(["*".to_string()]) {
        d.push(format!(
            "source ports are {} instead of *",
            p.source_ports().join(", ")
        ));
    }
    if !p.protocol.eq_ignore_ascii_case(&req.protocol) {
        d.push(format!(
            "protocol is {} instead of {}",
            p.protocol, req.protocol
        ));
    }
    if Some(i64::from(p.priority)) != priority {
        d.push(format!(
            "priority is {} instead of {}",
            p.priority,
            priority.map_or("unknown".into(), |p| p.to_string())
        ));
    }
    if !p.access.eq_ignore_ascii_case("Allow") {
        d.push(format!("access is {} instead of Allow", p.access));
    }
    if !p.is_inbound() {
        d.push(format!("direction is {} instead of Inbound", p.direction));
    }
    if p.provisioning_state.as_deref() == Some("Failed") {
        d.push("its provisioning failed".into());
    }
    d
}

/// What the grant approved, as sets: inbound Allow from its source to its destination and ports,
/// any source port, at its recorded priority (unknown: the weakest precedence, so any priority
/// the rule has reads as "moved up" and is put back).
pub fn approved_admission(req: &RequestRow, priority: Option<i64>) -> Admission {
    Admission {
        inbound: true,
        allow: true,
        protocol: Protocol::parse(&req.protocol),
        sources: AddressSet::parse(&[req.source.as_str()]),
        destinations: AddressSet::parse(&[req.destination.as_str()]),
        ports: PortSet::of(&req.ports_list()),
        source_ports: PortSet::any(),
        priority: priority
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(i32::MAX),
    }
}

/// What the reconciler does about an active grant's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It admits exactly what was approved (however it is written): nothing to do.
    Matches,
    /// Deleted outside jitbot: the grant ends; nothing is re-created.
    Deleted,
    /// Its provisioning failed: the approved rule is PUT again.
    Failed,
    /// It admits more than approved (these aspects): put back at once.
    Widened(Vec<&'static str>),
    /// It admits no more than approved (these aspects narrowed): left alone, said once.
    Narrowed(Vec<&'static str>),
}

/// Decides what to do about a grant's rule from what it admits compared with `approved`.
/// Only a widening or a failed provisioning ever leads to a write.
pub fn verdict(approved: &Admission, rule: Option<&SecurityRule>) -> Verdict {
    let Some(rule) = rule else {
        return Verdict::Deleted;
    };
    if rule.properties.provisioning_state.as_deref() == Some("Failed") {
        return Verdict::Failed;
    }
    match rule.properties.admission().compare(approved) {
        Drift::None => Verdict::Matches,
        Drift::Widened(aspects) => Verdict::Widened(aspects),
        Drift::Narrowed(aspects) => Verdict::Narrowed(aspects),
    }
}

/// Enqueues a singleton job unless one of its kind is queued or running (one statement).
async fn ensure_singleton(store: &Store, job: &Job, run_at: i64) -> Result<bool> {
    let payload = serde_json::to_value(job).unwrap_or_default();
    store.ensure_singleton(job.kind(), &payload, run_at).await
}

/// Why a grant's rule in `nsg` must go, given its request as read after the NSG was read at
/// `read_at` (`None`: no such request), or `None` while the request accounts for it.
fn grant_rule_unaccounted(req: Option<&RequestRow>, nsg: &str, read_at: i64) -> Option<String> {
    match req {
        None => Some("its request is unknown to jitbot".to_string()),
        Some(r) if r.rule_in(nsg).is_none() => Some(format!(
            "its request {} is for another NSG ({})",
            r.id,
            r.nsg_names()
        )),
        Some(r) => match r.status {
            // In flight, open, or being closed by its own job.
            Status::Approved | Status::Applying | Status::Active | Status::Revoking => None,
            Status::Pending => Some(format!("its request {} is not approved", r.id)),
            // Closed after we read the NSG: what we read says nothing about it now.
            _ if r.closed_at.is_none_or(|c| c >= read_at) => None,
            s => Some(format!("its request {} is {s}", r.id)),
        },
    }
}

/// Findings of one reconcile pass.
#[derive(Default)]
struct Findings {
    nsgs: usize,
    owned_rules: usize,
    orphans: Vec<Value>,
    restored: Vec<Value>,
    /// Grants ended because their rule was deleted outside jitbot.
    closed: Vec<Value>,
    /// Grants whose rule was narrowed, the first time it was seen.
    narrowed: Vec<Value>,
    errors: Vec<String>,
}

impl Findings {
    /// Whether the pass found anything worth a `reconciled` summary.
    fn any(&self) -> bool {
        !(self.orphans.is_empty()
            && self.restored.is_empty()
            && self.closed.is_empty()
            && self.narrowed.is_empty())
    }
}

impl Worker {
    /// At start: run a reconcile pass at once (pulling a queued one forward, or adding one), and
    /// make sure checkpoints are scheduled. Safe to run on every replica.
    pub async fn schedule_singletons(&self) -> Result<()> {
        let now = now_ms();
        self.store.bring_forward(RECONCILE_KIND, now).await?;
        ensure_singleton(&self.store, &Job::Reconcile, now).await?;
        self.store.bring_forward(RESOLVE_TARGETS_KIND, now).await?;
        ensure_singleton(&self.store, &Job::ResolveTargets, now).await?;
        if let Some(at) = self.settings.digest_at {
            let next = at.next_after(now);
            self.store.bring_forward(DIGEST_KIND, next).await?;
            ensure_singleton(&self.store, &Job::Digest, next).await?;
        }
        let next_checkpoint = now + self.settings.checkpoint_interval.as_millis() as i64;
        // A shorter interval than the one the queued checkpoint was planned with applies now.
        self.store
            .bring_forward(CHECKPOINT_KIND, next_checkpoint)
            .await?;
        ensure_singleton(&self.store, &Job::Checkpoint, next_checkpoint).await?;
        // Two replicas starting at once may both have inserted one: keep the oldest. (Each
        // replica does this after its own insert, so the later one sees both.) A younger
        // duplicate left queued would wait forever behind the oldest in their lane.
        for kind in [
            RECONCILE_KIND,
            CHECKPOINT_KIND,
            RESOLVE_TARGETS_KIND,
            DIGEST_KIND,
        ] {
            let retired = self.store.retire_younger_singletons(kind, now).await?;
            if retired > 0 {
                tracing::info!(kind, retired, "retired duplicate singleton jobs");
            }
        }
        self.schedule_siem().await?;
        self.schedule_slack_groups().await?;
        self.store.jobs_added().notify_one();
        Ok(())
    }

    /// Two replicas starting at once may each have added a singleton; the one running retires the
    /// others (its lane keeps them from running meanwhile).
    pub(super) async fn retire_duplicates(&self, claimed: &ClaimedJob) -> Result<()> {
        let retired = self
            .store
            .retire_other_singletons(&claimed.kind, claimed.id)
            .await?;
        if retired > 0 {
            tracing::info!(kind = %claimed.kind, retired, "retired duplicate singleton jobs");
        }
        Ok(())
    }

    /// The NSGs to look at: every target's, and every active grant's (its target may be gone).
    async fn nsgs_to_check(&self) -> Result<Vec<String>> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let all = crate::paths::all_nsgs(&self.policy, &self.store)
            .await?
            .into_iter()
            .chain(self.store.open_grant_nsgs().await?);
        for nsg in all {
            if seen.insert(nsg.to_ascii_lowercase()) {
                out.push(nsg);
            }
        }
        Ok(out)
    }

    pub(super) async fn reconcile(&self, claimed: &ClaimedJob) -> Result<Outcome> {
        self.retire_duplicates(claimed).await?;
        let started = now_ms();
        let mut found = Findings::default();
        for nsg in self.nsgs_to_check().await? {
            found.nsgs += 1;
            self.reconcile_nsg(&nsg, &mut found).await?;
        }
        let took_ms = now_ms() - started;
        if !found.any() {
            if found.errors.is_empty() {
                tracing::debug!(
                    nsgs = found.nsgs,
                    owned_rules = found.owned_rules,
                    took_ms,
                    "reconcile pass: everything matches"
                );
            } else {
                tracing::warn!(nsgs = found.nsgs, errors = ?found.errors, took_ms, "reconcile pass incomplete");
            }
        } else {
            tracing::warn!(
                nsgs = found.nsgs,
                orphans = found.orphans.len(),
                restored = found.restored.len(),
                closed = found.closed.len(),
                narrowed = found.narrowed.len(),
                took_ms,
                "reconcile pass found drift"
            );
            let mut tx = self.store.begin().await?;
            tx.audit(
                AuditKind::Reconciled,
                None,
                Some("jitbot"),
                json!({
                    "nsgs": found.nsgs,
                    "owned_rules": found.owned_rules,
                    "orphans": found.orphans,
                    "restored": found.restored,
                    "closed": found.closed,
                    "narrowed": found.narrowed,
                    "errors": found.errors,
                    "took_ms": took_ms,
                }),
                self.simulated,
            )
            .await?;
            tx.commit().await?;
        }
        Ok(Outcome::RescheduleAt(
            now_ms() + self.settings.reconcile_interval.as_millis() as i64,
        ))
    }

    async fn reconcile_nsg(&self, nsg: &str, found: &mut Findings) -> Result<()> {
        let read_at = now_ms();
        let rules = match self.nsgs.list_rules(nsg).await {
            Ok(rules) => rules,
            Err(e) => {
                tracing::warn!(nsg = nsg_name(nsg), error = %e, "reconcile: cannot read the NSG; next pass tries again");
                found.errors.push(format!("{}: {e}", nsg_name(nsg)));
                return Ok(());
            }
        };
        // Rules in jitbot's namespace that no open grant accounts for. Their requests are read
        // after the NSG, in one batch.
        let owners = self.owners_of(&rules).await?;
        for rule in &rules {
            if !self.policy.namespace.owns(&rule.name) {
                continue; // not ours: never touched
            }
            found.owned_rules += 1;
            let reason = match self.policy.namespace.grant_id(&rule.name) {
                Some(id) => grant_rule_unaccounted(owners.get(id.as_str()), nsg, read_at),
                None => self.stray_reason(rule),
            };
            if let Some(reason) = reason {
                self.queue_orphan_removal(nsg, rule, &reason, read_at, found)
                    .await?;
            }
        }
        self.keep_baselines(nsg, &rules, found).await?;
        // Active grants whose rule was deleted or edited: only ever reduce access. Read after
        // the NSG (see the `activated_at` check), and only this NSG's.
        let now = now_ms();
        let grants = self.store.active_grants_in(nsg).await?;
        for (req, grant_rule) in grants.iter().filter_map(|r| r.rule_in(nsg).map(|g| (r, g))) {
            if req.activated_at.is_none_or(|at| at >= read_at) {
                continue; // opened after we read the NSG: what we read says nothing about it
            }
            if req.expires_at.is_none_or(|e| e <= now) {
                continue; // its revoke job is due: let it run
            }
            let actual = rules
                .iter()
                .find(|r| r.name.eq_ignore_ascii_case(&req.rule_name));
            let priority = grant_rule.priority;
            let diffs = || differences(req, priority, actual);
            let seen = Seen { nsg, actual };
            match verdict(&approved_admission(req, priority), actual) {
                Verdict::Matches => {}
                Verdict::Deleted => self.close_deleted(req, nsg, found).await?,
                Verdict::Failed => self.restore(req, diffs(), &[], seen, found).await?,
                Verdict::Widened(aspects) => {
                    self.restore(req, diffs(), &aspects, seen, found).await?
                }
                Verdict::Narrowed(aspects) => {
                    self.drift_narrowed(req, diffs(), &aspects, seen, found)
                        .await?
                }
            }
        }
        Ok(())
    }

    /// Targets with `lockdown = true` whose path holds this NSG: a missing or weakened baseline
    /// Deny is put back at once (a Deny only takes access away) and the audit channel is told,
    /// naming any rule that keeps the port open ahead of it.
    async fn keep_baselines(
        &self,
        nsg: &str,
        rules: &[SecurityRule],
        found: &mut Findings,
    ) -> Result<()> {
        for t in self.policy.targets.values().filter(|t| t.lockdown) {
            let Ok(path) = crate::paths::current(&self.policy, &self.store, &t.name).await? else {
                continue;
            };
            if !path.nsgs.iter().any(|n| n.eq_ignore_ascii_case(nsg)) {
                continue;
            }
            let b = Baseline {
                target: &t.name,
                ports: &t.ports,
                band: t.priority_band,
                destination: &path.destination,
                namespace: &self.policy.namespace,
            };
            let plan = b.plan(nsg, rules);
            if !plan.writes() {
                continue;
            }
            let spec = b.spec();
            match self.nsgs.restore_rule(nsg, &spec, plan.priority()).await {
                Ok(applied) => {
                    self.baseline_restored(&b, &plan, applied.priority, found)
                        .await?
                }
                Err(e) => {
                    tracing::error!(target = %t.name, nsg = nsg_name(nsg), error = %e, "could not put the lockdown baseline back; the next pass tries again");
                    found
                        .errors
                        .push(format!("{} in {}: {e}", spec.name, nsg_name(nsg)));
                }
            }
        }
        Ok(())
    }

    async fn baseline_restored(
        &self,
        b: &Baseline<'_>,
        plan: &NsgPlan,
        priority: u16,
        found: &mut Findings,
    ) -> Result<()> {
        let was = match &plan.step {
            Step::Replace { was, .. } => format!("it had been changed to {was}"),
            _ => "it was missing".to_string(),
        };
        let blockers: Vec<String> = plan
            .blockers
            .iter()
            .map(|f| {
                format!(
                    "{} (priority {}) from {}",
                    f.rule,
                    f.priority,
                    f.source.join(",")
                )
            })
            .collect();
        let mut tx = self.store.begin().await?;
        tx.audit(
            AuditKind::BaselineRestored,
            None,
            Some("jitbot"),
            json!({ "target": b.target, "nsg": plan.nsg, "rule": b.name(), "was": was, "priority": priority, "open_ahead": blockers }),
            self.simulated,
        )
        .await?;
        let mut text = format!(
            "Lockdown of {}: rule `{}` in NSG `{}` was put back ({was}); it denies port {} from anywhere to {} at priority {priority}.",
            b.target,
            b.name(),
            nsg_name(&plan.nsg),
            crate::access::PortSet::of(b.ports),
            b.destination
        );
        if !blockers.is_empty() {
            text.push_str(&format!(
                " Still open ahead of it (not jitbot's rules): {}.",
                blockers.join("; ")
            ));
        }
        let message = messages::reply(
            Tone::Danger,
            "Drift alert: lockdown restored",
            text,
            self.simulated,
        );
        self.out.feed(&mut tx, None, &message).await?;
        tx.commit().await?;
        found.restored.push(
            json!({ "target": b.target, "rule": b.name(), "nsg": plan.nsg, "priority": priority }),
        );
        Ok(())
    }

    /// The requests named by the grant rules among `rules`, by id (read in one batch).
    async fn owners_of(&self, rules: &[SecurityRule]) -> Result<HashMap<String, RequestRow>> {
        let ids: Vec<_> = rules
            .iter()
            .filter_map(|r| self.policy.namespace.grant_id(&r.name))
            .collect();
        let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
        Ok(self
            .store
            .requests_by_ids(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect())
    }

    /// Why a rule in the namespace that names no request (`jitbot-rogue`) must go, or `None`:
    /// only an Allow is removed. A Deny there (a target's lockdown baseline, or anyone's) is left,
    /// because removing it could only add access and the reconciler only ever reduces it.
    fn stray_reason(&self, rule: &SecurityRule) -> Option<String> {
        rule.properties.access.eq_ignore_ascii_case("Allow").then(|| {
            format!(
                "its name is in jitbot's namespace (`{}`) but it is no grant of this deployment",
                self.policy.namespace
            )
        })
    }

    async fn queue_orphan_removal(
        &self,
        nsg: &str,
        rule: &SecurityRule,
        reason: &str,
        read_at: i64,
        found: &mut Findings,
    ) -> Result<()> {
        let id = self.policy.namespace.grant_id(&rule.name);
        let id = id.as_ref().map(|id| id.as_str());
        let mut tx = self.store.begin().await?;
        // Already being removed (a removal or a failed apply's cleanup, retried until done), or
        // removed since we read the NSG.
        let lane = Job::rule_lane(nsg, &rule.name);
        let busy = match id {
            Some(id) => {
                tx.removal_queued_or_done_since([REMOVE_ORPHAN_KIND, CLEANUP_KIND], id, read_at)
                    .await?
            }
            None => tx.lane_queued_or_done_since(&lane, read_at).await?,
        };
        if busy {
            return Ok(()); // already being removed (and retried)
        }
        tracing::warn!(nsg = nsg_name(nsg), rule = %rule.name, reason, "reconcile: removing a rule in jitbot's namespace without an open grant");
        Job::RemoveOrphan {
            request_id: id.map(str::to_string),
            nsg: nsg.to_string(),
            rule_name: rule.name.clone(),
            reason: reason.to_string(),
            seen: describe(rule),
        }
        .enqueue(&mut tx, now_ms())
        .await?;
        tx.commit().await?;
        found
            .orphans
            .push(json!({ "nsg": nsg, "rule": rule.name, "reason": reason }));
        Ok(())
    }

    /// Removes a rule the reconciler found without an open grant. Never gives up.
    pub(super) async fn remove_orphan(
        &self,
        claimed: &ClaimedJob,
        id: Option<&str>,
        nsg: &str,
        rule_name: &str,
        reason: &str,
        seen: &Value,
    ) -> Result<Outcome> {
        let req = match id {
            Some(id) => self.store.request(id).await?,
            None => None,
        };
        if let Some(r) = &req
            && r.rule_in(nsg).is_some()
            && matches!(
                r.status,
                Status::Approved | Status::Applying | Status::Active | Status::Revoking
            )
        {
            // The request moved on since the pass: the rule is (about to be) its grant's.
            tracing::info!(request_id = %r.id, status = %r.status, "orphan removal skipped: the request is in use now");
            return Ok(Outcome::Done);
        }
        if let Err(e) = self.nsgs.remove_rule(nsg, rule_name).await {
            tracing::error!(nsg = nsg_name(nsg), rule = rule_name, error = %e, attempts = claimed.attempts, "orphan removal failed; retrying");
            if claimed.attempts == 1 {
                // Say so once: the rule stays open until Azure lets jitbot remove it.
                let simulated = req.as_ref().map_or(self.simulated, |r| r.simulated);
                let text = format!(
                    "Found rule `{rule_name}` in NSG `{}` ({reason}) but could not remove it yet: {e}. jitbot keeps retrying.",
                    nsg_name(nsg)
                );
                let message = messages::reply(
                    Tone::Danger,
                    "Drift: stray rule still open",
                    text,
                    simulated,
                );
                let mut tx = self.store.begin().await?;
                self.out.feed(&mut tx, None, &message).await?;
                tx.commit().await?;
            }
            return Ok(Outcome::RetryAt(
                now_ms() + backoff(claimed.attempts, 15_000),
                e.to_string(),
            ));
        }
        let simulated = req.as_ref().map_or(self.simulated, |r| r.simulated);
        let known = req.as_ref().map(|r| r.id.as_str());
        let mut tx = self.store.begin().await?;
        tx.audit(
            AuditKind::DriftOrphanRemoved,
            id,
            Some("jitbot"),
            json!({ "nsg": nsg, "rule": rule_name, "reason": reason, "rule_was": seen }),
            simulated,
        )
        .await?;
        let allowed = format!(
            "{} from {} to port {}",
            seen["access"].as_str().unwrap_or("?"),
            join(&seen["sources"]),
            join(&seen["ports"])
        );
        let text = format!(
            "Removed rule `{rule_name}` (priority {}) from NSG `{}`: {reason}. It said: {allowed}.",
            seen["priority"],
            nsg_name(nsg)
        );
        let message = messages::reply(Tone::Warning, "Drift: stray rule removed", text, simulated);
        self.out.feed(&mut tx, known, &message).await?;
        tx.commit().await?;
        tracing::warn!(
            nsg = nsg_name(nsg),
            rule = rule_name,
            reason,
            "orphan rule removed"
        );
        Ok(Outcome::Done)
    }

    /// Puts back an active grant's rule with the recorded values: it was edited to admit more
    /// than approved (`widened` names what), or its provisioning failed (`widened` is empty).
    async fn restore(
        &self,
        req: &RequestRow,
        diffs: Vec<String>,
        widened: &[&'static str],
        seen: Seen<'_>,
        found: &mut Findings,
    ) -> Result<()> {
        let Seen { nsg, actual } = seen;
        // Re-read right before acting: the grant may have moved on during the pass.
        let Some(cur) = self.store.request(&req.id).await? else {
            return Ok(());
        };
        let now = now_ms();
        let Some(expires) = cur.expires_at.filter(|e| *e > now) else {
            return Ok(());
        };
        if cur.status != Status::Active {
            return Ok(());
        }
        let Some(recorded) = cur.rule_in(nsg).map(|r| r.priority) else {
            return Ok(());
        };
        let recorded_u16 = recorded.and_then(|p| u16::try_from(p).ok());
        let band = match (self.policy.targets.get(&cur.target), recorded_u16) {
            (Some(t), _) => t.priority_band,
            (None, Some(p)) => (p, p),
            (None, None) => {
                found
                    .errors
                    .push(format!("{}: no band and no recorded priority", cur.id));
                return Ok(());
            }
        };
        let spec = RuleSpec {
            access: Default::default(),
            name: cur.rule_name.clone(),
            description: grant_description(&cur.id, &cur.requester, expires),
            protocol: cur.protocol.clone(),
            source: cur.source.clone(),
            destination: cur.destination.clone(),
            ports: cur.ports_list(),
            band,
        };
        tracing::warn!(request_id = %cur.id, nsg = nsg_name(nsg), drift = ?diffs, ?widened, "reconcile: restoring an active grant's rule");
        let applied = match self
            .nsgs
            .restore_rule(nsg, &spec, recorded_u16.unwrap_or(band.0))
            .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(request_id = %cur.id, error = %e, "could not restore the rule; the next pass tries again");
                found.errors.push(format!("{}: {e}", cur.id));
                self.drift_unrestored(&cur, nsg, &diffs, widened, &e.to_string())
                    .await?;
                return Ok(());
            }
        };
        let mut tx = self.store.begin().await?;
        let still = tx.request(&cur.id).await?;
        if still.as_ref().is_none_or(|r| r.status != Status::Active) {
            // Closed while we restored: never leave it open.
            Job::Cleanup {
                request_id: cur.id.clone(),
                nsg: nsg.to_string(),
                rule_name: cur.rule_name.clone(),
            }
            .enqueue(&mut tx, now_ms())
            .await?;
            tx.commit().await?;
            return Ok(());
        }
        let new_priority = i64::from(applied.priority);
        if Some(new_priority) != recorded {
            tx.record_rule_priority(&cur.id, nsg, new_priority).await?;
        }
        tx.audit(
            AuditKind::DriftRestored,
            Some(&cur.id),
            Some("jitbot"),
            json!({
                "nsg": nsg,
                "rule": cur.rule_name,
                "drift": diffs,
                "widened": widened,
                "rule_was": actual.map(describe),
                "priority": new_priority,
                "recorded_priority": recorded,
            }),
            cur.simulated,
        )
        .await?;
        let moved = if Some(new_priority) != recorded {
            format!(
                " Priority {} was taken, so it now has priority {new_priority}.",
                recorded.map_or("?".into(), |p| p.to_string())
            )
        } else {
            String::new()
        };
        let text = format!(
            "{} It was put back as approved.{moved}",
            drift_sentence(&cur, nsg, &diffs, widened)
        );
        let message = messages::notice(&cur, Tone::Danger, "Drift alert: rule restored", text);
        self.out.feed(&mut tx, Some(&cur.id), &message).await?;
        tx.commit().await?;
        found.restored.push(
            json!({ "request_id": cur.id, "rule": cur.rule_name, "drift": diffs, "widened": widened, "priority": new_priority }),
        );
        Ok(())
    }

    /// The grant's rule was deleted outside jitbot: the grant ends (`active → revoked`), and
    /// everyone who saw it open is told. Nothing is re-created: the person who deleted it may be
    /// an incident responder closing a door. The grant's queued revoke job finds it closed and
    /// does nothing; the rule's twins in the path's other NSGs get a cleanup DELETE.
    async fn close_deleted(&self, req: &RequestRow, nsg: &str, found: &mut Findings) -> Result<()> {
        let mut tx = self.store.begin().await?;
        if !tx
            .transition(
                &req.id,
                Status::Active,
                Status::Revoked,
                Some(messages::CLOSED_OUTSIDE_JITBOT),
            )
            .await?
        {
            return Ok(()); // moved on during the pass: its own job deals with it
        }
        let now = now_ms();
        tx.audit(
            AuditKind::DriftClosed,
            Some(&req.id),
            Some("jitbot"),
            json!({
                "nsg": nsg,
                "rule": req.rule_name,
                "priority": req.rule_in(nsg).and_then(|r| r.priority),
                "expires_at": req.expires_at,
                "remaining_ms": req.expires_at.map(|e| (e - now).max(0)),
            }),
            req.simulated,
        )
        .await?;
        let text = format!(
            "Rule `{}` ({} port {} from {}) was deleted in NSG `{}` outside jitbot, so {}'s grant has ended ({}; it was open until {}). jitbot does not re-create it: ask again if the access is still needed.",
            req.rule_name,
            req.target,
            req.ports,
            req.source,
            nsg_name(nsg),
            req.requester,
            messages::CLOSED_OUTSIDE_JITBOT,
            messages::clock(req.expires_at.unwrap_or(now), true),
        );
        let message = messages::notice(req, Tone::Warning, "Access closed outside jitbot", text);
        self.announce(&mut tx, req, &message).await?;
        // Access needs every NSG on the path: the rule left in the others admits nothing now,
        // but it is jitbot's and the grant is over.
        for other in req
            .rules
            .iter()
            .filter(|r| !r.nsg.eq_ignore_ascii_case(nsg))
        {
            Job::Cleanup {
                request_id: req.id.clone(),
                nsg: other.nsg.clone(),
                rule_name: req.rule_name.clone(),
            }
            .enqueue(&mut tx, now)
            .await?;
        }
        tx.commit().await?;
        tracing::warn!(request_id = %req.id, nsg = nsg_name(nsg), rule = %req.rule_name, "reconcile: rule deleted outside jitbot; grant closed");
        found
            .closed
            .push(json!({ "request_id": req.id, "rule": req.rule_name }));
        Ok(())
    }

    /// The grant's rule was edited to admit no more than approved: it stays as the person made
    /// it and closes at expiry as usual. Said once per grant (audited and on the audit channel).
    async fn drift_narrowed(
        &self,
        req: &RequestRow,
        diffs: Vec<String>,
        narrowed: &[&'static str],
        seen: Seen<'_>,
        found: &mut Findings,
    ) -> Result<()> {
        let Seen { nsg, actual } = seen;
        let mut tx = self.store.begin().await?;
        // Lock the request's row so two replicas cannot both say it.
        tx.lock_request(&req.id).await?;
        if tx
            .has_audit_event(AuditKind::DriftNarrowed, &req.id)
            .await?
        {
            return Ok(());
        }
        tx.audit(
            AuditKind::DriftNarrowed,
            Some(&req.id),
            Some("jitbot"),
            json!({
                "nsg": nsg,
                "rule": req.rule_name,
                "drift": diffs,
                "narrowed": narrowed,
                "rule_is": actual.map(describe),
            }),
            req.simulated,
        )
        .await?;
        let text = format!(
            "Rule `{}` of {}'s active grant ({} port {} from {}) in NSG `{}` was narrowed outside jitbot (narrowed: {}): {}. It admits no more than approved, so jitbot leaves it as it is; it still closes at {}.",
            req.rule_name,
            req.requester,
            req.target,
            req.ports,
            req.source,
            nsg_name(nsg),
            narrowed.join(", "),
            diffs.join("; "),
            messages::clock(req.expires_at.unwrap_or_default(), true),
        );
        let message = messages::notice(req, Tone::Warning, "Drift: rule narrowed", text);
        self.out.feed(&mut tx, Some(&req.id), &message).await?;
        tx.commit().await?;
        tracing::info!(request_id = %req.id, nsg = nsg_name(nsg), ?narrowed, "reconcile: rule narrowed outside jitbot; left as it is");
        found
            .narrowed
            .push(json!({ "request_id": req.id, "rule": req.rule_name, "narrowed": narrowed }));
        Ok(())
    }

    /// Says once per grant that its rule drifted and could not be put back yet (audited and on
    /// the audit channel); later passes keep trying quietly.
    async fn drift_unrestored(
        &self,
        req: &RequestRow,
        nsg: &str,
        diffs: &[String],
        widened: &[&'static str],
        error: &str,
    ) -> Result<()> {
        let mut tx = self.store.begin().await?;
        // Lock the request's row so two replicas cannot both say it.
        tx.lock_request(&req.id).await?;
        if tx
            .has_audit_event(AuditKind::DriftUnrestored, &req.id)
            .await?
        {
            return Ok(());
        }
        tx.audit(
            AuditKind::DriftUnrestored,
            Some(&req.id),
            Some("jitbot"),
            json!({ "nsg": nsg, "rule": req.rule_name, "drift": diffs, "widened": widened, "error": error }),
            req.simulated,
        )
        .await?;
        let text = format!(
            "{} It could not be put back yet: {error}. jitbot retries every pass.",
            drift_sentence(req, nsg, diffs, widened)
        );
        let message = messages::notice(req, Tone::Danger, "Drift alert: rule not restored", text);
        self.out.feed(&mut tx, Some(&req.id), &message).await?;
        tx.commit().await
    }

    /// Called by the revoke job before each attempt: makes sure a watch will alert if the grant
    /// is still open `revocation_alert_after` after its revocation became due.
    pub(super) async fn watch_revocation(&self, req: &RequestRow) -> Result<()> {
        let mut tx = self.store.begin().await?;
        self.enqueue_watch(&mut tx, req).await?;
        tx.commit().await
    }

    /// [`Self::watch_revocation`] inside the caller's transaction.
    pub(super) async fn enqueue_watch(
        &self,
        tx: &mut crate::store::Tx,
        req: &RequestRow,
    ) -> Result<()> {
        if tx.has_job(WATCH_KIND, &req.id).await? {
            return Ok(());
        }
        let now = now_ms();
        let due = req.expires_at.unwrap_or(now).min(now);
        Job::RevocationWatch {
            request_id: req.id.clone(),
        }
        .enqueue(
            tx,
            due + self.settings.revocation_alert_after.as_millis() as i64,
        )
        .await
        .map(drop)
    }

    pub(super) async fn revocation_watch(&self, claimed: &ClaimedJob, id: &str) -> Result<Outcome> {
        let Some(req) = self.store.request(id).await? else {
            return Ok(Outcome::Done);
        };
        if !matches!(req.status, Status::Active | Status::Revoking) {
            return Ok(Outcome::Done); // closed in time
        }
        let alert_ms = self.settings.revocation_alert_after.as_millis() as i64;
        let now = now_ms();
        // Due at expiry, or when an early revocation was asked for (when the watch was made).
        let due = req
            .expires_at
            .unwrap_or(claimed.created_at)
            .min(claimed.created_at);
        if now < due + alert_ms {
            return Ok(Outcome::RescheduleAt(due + alert_ms));
        }
        let last_error = self.store.last_job_error(REVOKE_KIND, id).await?;
        let late = now - due;
        let mut tx = self.store.begin().await?;
        // Lock the request's row so two replicas cannot both alert.
        tx.lock_request(id).await?;
        if tx.has_audit_event(AuditKind::RevocationDelayed, id).await? {
            return Ok(Outcome::Done);
        }
        let error_text = last_error.clone().unwrap_or_else(|| {
            "none recorded yet (the current attempt is still retrying Azure)".into()
        });
        tx.audit(
            AuditKind::RevocationDelayed,
            Some(id),
            Some("jitbot"),
            json!({ "nsg": req.rules[0].nsg, "nsgs": req.rules.iter().map(|r| &r.nsg).collect::<Vec<_>>(), "rule": req.rule_name, "late_ms": late, "last_error": last_error }),
            req.simulated,
        )
        .await?;
        let text = format!(
            "{} port {} from {} should have closed {} ago and is still open: rule `{}` in NSG `{}`. Last error: {error_text}. jitbot keeps retrying until Azure lets it close the rule; check Azure's status or remove the rule by hand.",
            req.target,
            req.ports,
            req.source,
            human_ms(late),
            req.rule_name,
            req.nsg_names()
        );
        let message = messages::notice(&req, Tone::Danger, "Revocation delayed", text);
        self.out.feed(&mut tx, Some(id), &message).await?;
        tx.commit().await?;
        tracing::error!(request_id = id, late_ms = late, last_error = ?last_error, "revocation delayed");
        Ok(Outcome::Done)
    }

    /// Posts the chain head to the audit channel(s), unless it has not moved since the last one.
    pub(super) async fn checkpoint(&self, claimed: &ClaimedJob) -> Result<Outcome> {
        self.retire_duplicates(claimed).await?;
        let next = now_ms() + self.settings.checkpoint_interval.as_millis() as i64;
        let (seq, hash) = self.store.audit_head().await?;
        if seq == 0 || self.store.last_checkpoint_seq().await? == Some(seq) {
            tracing::debug!(seq, "audit head has not moved since the last checkpoint");
            return Ok(Outcome::RescheduleAt(next));
        }
        let mut tx = self.store.begin().await?;
        let at = tx
            .audit(
                AuditKind::Checkpoint,
                None,
                Some("jitbot"),
                json!({ "seq": seq, "hash": hash }),
                self.simulated,
            )
            .await?;
        let message = checkpoint_message(seq, &hash, self.simulated);
        self.out.feed(&mut tx, None, &message).await?;
        tx.commit().await?;
        tracing::info!(seq, %hash, event = at, "audit checkpoint posted");
        Ok(Outcome::RescheduleAt(next))
    }
}

/// "Rule `…` of steve's active grant (web1 port 22 from …) in NSG `…` was widened outside jitbot
/// (widened: source, ports): source is 0.0.0.0/0 instead of …." — or "was changed" with no
/// widened aspects (a failed provisioning).
fn drift_sentence(req: &RequestRow, nsg: &str, diffs: &[String], widened: &[&str]) -> String {
    let how = if widened.is_empty() {
        "was changed outside jitbot".to_string()
    } else {
        format!(
            "was widened outside jitbot (widened: {})",
            widened.join(", ")
        )
    };
    format!(
        "Rule `{}` of {}'s active grant ({} port {} from {}) in NSG `{}` {how}: {}.",
        req.rule_name,
        req.requester,
        req.target,
        req.ports,
        req.source,
        nsg_name(nsg),
        diffs.join("; ")
    )
}

/// The checkpoint as people see it in the audit channel.
pub fn checkpoint_message(seq: i64, hash: &str, simulated: bool) -> Message {
    messages::reply(
        Tone::Info,
        "Audit checkpoint",
        format!(
            "The audit trail has {seq} events; event {seq} has hash `{hash}`. Anyone can check the database against this message: `jitbot audit verify --checkpoint {seq}:{hash}`"
        ),
        simulated,
    )
}

fn join(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(ports: &str, priority: Option<i64>) -> RequestRow {
        RequestRow {
            id: "req_7f3a9c01".into(),
            requester: "steve".into(),
            platform: crate::domain::Platform::Slack,
            requester_chat_id: "U0STEVE".into(),
            target: "web1".into(),
            rules: vec![crate::store::GrantRule {
                nsg: "web1-nsg".into(),
                priority,
            }],
            ports: ports.into(),
            protocol: "tcp".into(),
            source: "203.0.113.0/24".into(),
            destination: "10.0.1.4".into(),
            duration_ms: 3_600_000,
            reason: None,
            status: Status::Active,
            approvals_required: 1,
            round: 0,
            extension_ms: None,
            extension_by: None,
            created_at: 0,
            pending_until: 0,
            apply_started_at: Some(1),
            activated_at: Some(2),
            expires_at: Some(3_600_001),
            closed_at: None,
            rule_name: "jitbot-req_7f3a9c01".into(),
            detail: None,
            simulated: false,
        }
    }

    /// The rule as jitbot PUTs it and ARM echoes it back.
    fn as_written() -> SecurityRule {
        serde_json::from_value(json!({
            "name": "jitbot-req_7f3a9c01",
            "properties": {
                "protocol": "Tcp",
                "sourcePortRange": "*",
                "sourcePortRanges": [],
                "destinationPortRanges": ["3389", "22"],
                "sourceAddressPrefix": "203.0.113.0/24",
                "sourceAddressPrefixes": [],
                "destinationAddressPrefix": "10.0.1.4",
                "destinationAddressPrefixes": [],
                "access": "Allow",
                "priority": 120,
                "direction": "Inbound",
                "provisioningState": "Succeeded"
            }
        }))
        .unwrap()
    }

    #[test]
    fn only_a_widening_or_a_failed_provisioning_is_written_back() {
        type Edit = fn(&mut crate::azure::SecurityRuleProperties);
        let rows: &[(&str, Edit, Verdict)] = &[
            ("as written", |_| {}, Verdict::Matches),
            (
                "same ports, other spelling",
                |p| p.destination_port_ranges = Some(vec!["22".into(), "3389-3389".into()]),
                Verdict::Matches,
            ),
            (
                "description edited",
                |p| p.description = Some("temporary".into()),
                Verdict::Matches,
            ),
            (
                "source 0.0.0.0/0",
                |p| p.source_address_prefix = Some("0.0.0.0/0".into()),
                Verdict::Widened(vec!["source"]),
            ),
            (
                "ports 1-65535",
                |p| p.destination_port_ranges = Some(vec!["1-65535".into()]),
                Verdict::Widened(vec!["ports"]),
            ),
            (
                "protocol *",
                |p| p.protocol = "*".into(),
                Verdict::Widened(vec!["protocol"]),
            ),
            (
                "another destination",
                |p| p.destination_address_prefix = Some("10.0.1.5".into()),
                Verdict::Widened(vec!["destination"]),
            ),
            (
                "priority moved up",
                |p| p.priority = 110,
                Verdict::Widened(vec!["priority"]),
            ),
            (
                "narrower source",
                |p| p.source_address_prefix = Some("203.0.113.7".into()),
                Verdict::Narrowed(vec!["source"]),
            ),
            (
                "one port dropped",
                |p| p.destination_port_ranges = Some(vec!["22".into()]),
                Verdict::Narrowed(vec!["ports"]),
            ),
            (
                "turned into a Deny",
                |p| p.access = "Deny".into(),
                Verdict::Narrowed(vec!["access"]),
            ),
            (
                "priority moved down",
                |p| p.priority = 180,
                Verdict::Narrowed(vec!["priority"]),
            ),
            (
                "narrowed, but its provisioning failed",
                |p| {
                    p.access = "Deny".into();
                    p.provisioning_state = Some("Failed".into());
                },
                Verdict::Failed,
            ),
        ];
        let approved = approved_admission(&grant("22,3389", Some(120)), Some(120));
        for (name, edit, want) in rows {
            let mut rule = as_written();
            edit(&mut rule.properties);
            assert_eq!(&verdict(&approved, Some(&rule)), want, "{name}");
        }
        assert_eq!(verdict(&approved, None), Verdict::Deleted);
    }

    #[test]
    fn an_unknown_recorded_priority_never_reads_as_narrowed() {
        let approved = approved_admission(&grant("22,3389", None), None);
        let mut rule = as_written();
        rule.properties.priority = 4096;
        assert_eq!(
            verdict(&approved, Some(&rule)),
            Verdict::Widened(vec!["priority"])
        );
    }

    #[test]
    fn differences_name_every_edited_field() {
        let req = grant("22,3389", Some(120));
        assert!(differences(&req, Some(120), Some(&as_written())).is_empty());
        assert_eq!(
            differences(&req, Some(120), None),
            vec!["the rule was deleted"]
        );
        let mut rule = as_written();
        rule.properties.source_address_prefix = None;
        rule.properties.source_application_security_groups = Some(vec![json!({ "id": "g1" })]);
        rule.properties.source_port_range = Some("1024-65535".into());
        assert_eq!(
            differences(&req, Some(120), Some(&rule)),
            vec![
                "source is asg:g1 instead of 203.0.113.0/24",
                "source ports are 1024-65535 instead of *",
            ]
        );
    }

    #[test]
    fn lateness_reads_naturally() {
        assert_eq!(human_ms(850), "850 ms");
        assert_eq!(human_ms(4200), "4.2 s");
        assert_eq!(human_ms(192_000), "3m 12s");
        assert_eq!(human_ms(3_900_000), "1h 5m");
    }
}
