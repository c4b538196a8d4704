//! NSG rule operations under a per-NSG lane, coalesced per NSG.
//!
//! Azure processes one write at a time per NSG, and two writers choosing priorities from the same
//! read would collide. So every write to an NSG from this process runs under that NSG's lane (a
//! tokio mutex keyed by the lower-cased NSG id): read the NSG fresh, choose, write, wait for the
//! operation to finish, release. Other processes (replicas, people in the portal) are handled by
//! the retries: `AnotherOperationInProgress` is retried, `SecurityRuleConflict` moves on to the
//! next free priority, and an NSG-level write carries `If-Match` (412 → read again, plan again).
//!
//! **Coalescing.** Each call ([`NsgManager::ensure_rule`], [`NsgManager::restore_rule`],
//! [`NsgManager::remove_rule`], [`NsgManager::relabel_rule`]) queues its change on the NSG's lane
//! and waits for its own answer. Whoever holds the lane takes what is queued: with
//! `azure.nsg_writes = "auto"`, *all* of it — two or more changes become one NSG-level PUT (GET
//! the NSG as JSON, edit only the named rules inside `properties.securityRules`, keep everything
//! else as read, PUT with `If-Match`, follow the operation; see `plan.rs`), a lone change stays a
//! rule-level PUT or DELETE (cheaper, and what the least-privilege role allows). A 403 on the
//! NSG-level PUT switches this process to per-rule writes for good ([`NsgManager::fell_back`]).
//! With `"per_rule"` (or after the fallback) the holder takes one change at a time.
//!
//! Removals go first: per rule, a waiting removal is taken before every PUT that has not started;
//! in a coalesced write they are applied together with the openings, in the same operation.

mod plan;

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use super::arm::{ArmClient, Outgoing, WriteKind};
use super::budget::Urgency;
use super::model::{SecurityRule, SecurityRuleListResult, SecurityRuleProperties};
use super::{AzureError, NsgWrites};
use crate::domain::{NsgId, nsg_name};

/// Lowest and highest priority ARM accepts for user rules.
const PRIORITY_MIN: u16 = 100;
const PRIORITY_MAX: u16 = 4096;
/// Longest rule name and description ARM accepts.
const NAME_MAX: usize = 80;
const DESCRIPTION_MAX: usize = 140;
/// Safety stop for `nextLink` paging.
const MAX_PAGES: usize = 1000;
/// How often a coalesced write is re-planned after 412 (the NSG changed under it) before the
/// changes are answered with a retryable error.
const MAX_PRECONDITION_RETRIES: usize = 8;

/// Whether a rule lets traffic through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// A grant.
    #[default]
    Allow,
    /// A target's lockdown baseline.
    Deny,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Allow => "Allow",
            Access::Deny => "Deny",
        }
    }
}

/// An inbound rule jitbot wants in an NSG: a grant's Allow or a lockdown's Deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// Allow (a grant) or Deny (a lockdown baseline).
    pub access: Access,
    /// Rule name, e.g. `jitbot-req_7f3a2b1c` (≤ 80 chars of `[A-Za-z0-9_.-]`).
    pub name: String,
    /// ≤ 140 chars; names the request and its expiry so the rule explains itself in the portal.
    pub description: String,
    /// `Tcp`, `Udp` or `*`.
    pub protocol: String,
    /// Source CIDR or address (`sourceAddressPrefix`).
    pub source: String,
    /// Destination VM private IP or prefix (`destinationAddressPrefix`).
    pub destination: String,
    /// Destination ports: one goes in `destinationPortRange`, several in `destinationPortRanges`.
    pub ports: Vec<u16>,
    /// Inclusive priority band jitbot may use in this NSG.
    pub band: (u16, u16),
}

/// A rule that is in place and provisioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRule {
    /// Rule name.
    pub name: String,
    /// The priority it got.
    pub priority: u16,
}

/// How long the holder of a lane waits, when coalescing, before it takes what is queued: the cost
/// of one write to a lone change, negligible beside ARM's seconds-long operation.
const GATHER: Duration = Duration::from_millis(20);

/// One change to an NSG, as queued on its lane.
#[derive(Debug, Clone)]
enum Change {
    /// Create or confirm a rule; `preferred` is a recorded priority to keep when free.
    Put {
        spec: RuleSpec,
        preferred: Option<u16>,
    },
    /// Remove a rule (absent counts as done).
    Remove { name: String },
    /// Rewrite a rule's description only; never creates it.
    Relabel { name: String, description: String },
}

impl Change {
    fn is_removal(&self) -> bool {
        matches!(self, Change::Remove { .. })
    }
}

/// What a change came to.
#[derive(Debug)]
enum Done {
    Applied(AppliedRule),
    Removed,
    Relabeled(bool),
}

type Answer = Result<Done, AzureError>;

/// A change waiting on a lane, with where its answer goes.
struct Queued {
    id: u64,
    change: Change,
    reply: oneshot::Sender<Answer>,
}

/// Everything the worker needs from Azure. Cheap to clone.
#[derive(Clone)]
pub struct NsgManager {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared with [`super::Inventory`]: one client, one token source, one set of metrics.
    arm: Arc<ArmClient>,
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    /// `azure.nsg_writes`.
    writes: NsgWrites,
    /// Turns true (once) when ARM refused an NSG-level write and this process went per-rule.
    fell_back: watch::Sender<bool>,
    next_id: AtomicU64,
}

/// One NSG's lane: one write at a time, and the changes waiting for it.
#[derive(Default)]
struct Lane {
    write: tokio::sync::Mutex<()>,
    queue: Mutex<Vec<Queued>>,
}

impl Lane {
    /// What the lane's holder takes: everything when coalescing, else the first removal or, if
    /// none waits, the oldest change.
    fn take(&self, coalesce: bool) -> Vec<Queued> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if coalesce {
            let mut all = std::mem::take(&mut *queue);
            all.sort_by_key(|q| !q.change.is_removal());
            return all;
        }
        let next = queue
            .iter()
            .position(|q| q.change.is_removal())
            .or((!queue.is_empty()).then_some(0));
        next.map(|i| vec![queue.remove(i)]).unwrap_or_default()
    }
}

/// Takes a change back off the queue when its caller stops waiting before anyone took it, so a
/// cancelled opening is never applied later behind its caller's back.
struct Withdraw<'a> {
    lane: &'a Lane,
    id: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        let mut queue = self.lane.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.retain(|q| q.id != self.id);
    }
}

impl NsgManager {
    pub(crate) fn new(arm: Arc<ArmClient>, writes: NsgWrites) -> Self {
        NsgManager {
            inner: Arc::new(Inner {
                arm,
                lanes: Mutex::new(HashMap::new()),
                writes,
                fell_back: watch::Sender::new(false),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Whether ARM refused an NSG-level write (403) and this process now writes rule by rule.
    pub fn fell_back(&self) -> bool {
        *self.inner.fell_back.borrow()
    }

    /// Turns true once, when this process falls back to per-rule writes after a 403 on an
    /// NSG-level write: `changed().await` on it to record an audit event.
    pub fn fallback_watch(&self) -> watch::Receiver<bool> {
        self.inner.fell_back.subscribe()
    }

    fn coalescing(&self) -> bool {
        self.inner.writes == NsgWrites::Auto && !self.fell_back()
    }

    /// The lane of one NSG: at most one write in flight per NSG in this process.
    fn lane(&self, nsg_id: &str) -> Arc<Lane> {
        let mut lanes = self.inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes
            .entry(nsg_id.to_ascii_lowercase())
            .or_default()
            .clone()
    }

    /// Queues `change` on the NSG's lane and waits for its answer, doing the lane's work (its own
    /// change and whatever else is queued) whenever it holds the lane.
    async fn submit(&self, nsg_id: &str, change: Change) -> Answer {
        let lane = self.lane(nsg_id);
        let (reply, mut answer) = oneshot::channel();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        lane.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Queued { id, change, reply });
        let _withdraw = Withdraw { lane: &lane, id };
        let _in_lane = tokio::select! {
            biased;
            done = &mut answer => return done.unwrap_or_else(|_| Err(dropped())),
            guard = lane.write.lock() => guard,
        };
        if self.coalescing() {
            // Changes that arrive together (an expiry wave, a burst of approvals) reach the lane
            // microseconds apart: wait a moment so the first write carries them all.
            tokio::time::sleep(GATHER).await;
        }
        loop {
            match answer.try_recv() {
                Ok(done) => return done,
                Err(oneshot::error::TryRecvError::Closed) => return Err(dropped()),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch = lane.take(self.coalescing());
            if batch.is_empty() {
                // Someone else took it; their answer is on the way.
                return answer.await.unwrap_or_else(|_| Err(dropped()));
            }
            self.run(nsg_id, batch).await;
        }
    }

    /// Applies a batch taken from the lane and answers each change.
    async fn run(&self, nsg_id: &str, batch: Vec<Queued>) {
        if batch.len() > 1 && self.coalescing() {
            let changes: Vec<Change> = batch.iter().map(|q| q.change.clone()).collect();
            match self.write_together(nsg_id, &changes).await {
                Together::Done(answers) => {
                    for (q, a) in batch.into_iter().zip(answers) {
                        let _ = q.reply.send(a);
                    }
                    return;
                }
                Together::Failed(e) => {
                    for q in batch {
                        let _ = q.reply.send(Err(duplicate(&e)));
                    }
                    return;
                }
                Together::PerRule => {}
            }
        }
        for q in batch {
            let answer = self.apply_one(nsg_id, &q.change).await;
            let _ = q.reply.send(answer);
        }
    }

    /// One change by itself: a rule-level PUT or DELETE.
    async fn apply_one(&self, nsg_id: &str, change: &Change) -> Answer {
        match change {
            Change::Put { spec, preferred } => self
                .put_one(nsg_id, spec, *preferred)
                .await
                .map(Done::Applied),
            Change::Remove { name } => self.remove_one(nsg_id, name).await.map(|()| Done::Removed),
            Change::Relabel { name, description } => self
                .relabel_one(nsg_id, name, description)
                .await
                .map(Done::Relabeled),
        }
    }

    /// Create or confirm the rule and wait until it is provisioned.
    ///
    /// Under the NSG's lane: read the NSG; if a rule named `spec.name` exists keep its priority
    /// (and skip the write if it already matches and is `Succeeded`), else take the lowest
    /// priority in `spec.band` that no inbound rule uses; PUT; follow the operation. A
    /// `SecurityRuleConflict` (someone else took the number meanwhile) re-reads and tries the next
    /// free number; an exhausted band is [`AzureError::BandFull`]. Other changes due on the same
    /// NSG may go in the same NSG-level write.
    #[tracing::instrument(skip_all, fields(nsg = %nsg_name(nsg_id), rule = %spec.name))]
    pub async fn ensure_rule(
        &self,
        nsg_id: &str,
        spec: &RuleSpec,
    ) -> Result<AppliedRule, AzureError> {
        self.put_rule(nsg_id, spec, None).await
    }

    /// Like [`NsgManager::ensure_rule`], but for putting back a rule that was deleted or edited
    /// outside jitbot: use `priority` (the one recorded when the grant opened) when no other
    /// inbound rule holds it, else the lowest free one in the band. Whatever the rule's current
    /// priority is, it is not trusted.
    #[tracing::instrument(skip_all, fields(nsg = %nsg_name(nsg_id), rule = %spec.name, priority))]
    pub async fn restore_rule(
        &self,
        nsg_id: &str,
        spec: &RuleSpec,
        priority: u16,
    ) -> Result<AppliedRule, AzureError> {
        self.put_rule(nsg_id, spec, Some(priority)).await
    }

    async fn put_rule(
        &self,
        nsg_id: &str,
        spec: &RuleSpec,
        preferred: Option<u16>,
    ) -> Result<AppliedRule, AzureError> {
        validate_nsg_id(nsg_id)?;
        validate_spec(spec)?;
        let change = Change::Put {
            spec: spec.clone(),
            preferred,
        };
        match self.submit(nsg_id, change).await? {
            Done::Applied(applied) => Ok(applied),
            other => Err(unexpected(other)),
        }
    }

    /// The per-rule PUT path of one change (under the lane).
    async fn put_one(
        &self,
        nsg_id: &str,
        spec: &RuleSpec,
        preferred: Option<u16>,
    ) -> Result<AppliedRule, AzureError> {
        let arm = &self.inner.arm;
        let rule_url = arm.url(&format!("{nsg_id}/securityRules/{}", spec.name))?;
        let mut conflicted: BTreeSet<u16> = BTreeSet::new();
        let attempts = usize::from(spec.band.1 - spec.band.0) + 3;
        for _ in 0..attempts {
            let rules = self.get_rules(nsg_id, Urgency::Open).await?;
            let (priority, in_place) = choose_priority(&rules, spec, preferred, &conflicted)?;
            if in_place {
                info!(priority, "rule already in place");
                return Ok(AppliedRule {
                    name: spec.name.clone(),
                    priority,
                });
            }
            let desired = desired_rule(spec, priority);
            match arm
                .write_and_wait(WriteKind::Put, &rule_url, Some(&desired))
                .await
            {
                Ok(()) => {
                    info!(priority, ports = ?spec.ports, source = %spec.source, "rule is in place");
                    return Ok(AppliedRule {
                        name: spec.name.clone(),
                        priority,
                    });
                }
                Err(AzureError::Invalid { code, message }) if code == "SecurityRuleConflict" => {
                    warn!(priority, %message, "priority taken meanwhile; trying the next free one");
                    conflicted.insert(priority);
                }
                Err(e) => return Err(e),
            }
        }
        Err(AzureError::BandFull { band: spec.band })
    }

    /// Rewrites the description of rule `rule_name` (an extended grant's new `expires=`),
    /// leaving everything else as it is in Azure, including a person's narrowing. `Ok(false)`
    /// when the rule is not there: nothing is created.
    #[tracing::instrument(skip_all, fields(nsg = %nsg_name(nsg_id), rule = %rule_name))]
    pub async fn relabel_rule(
        &self,
        nsg_id: &str,
        rule_name: &str,
        description: &str,
    ) -> Result<bool, AzureError> {
        validate_nsg_id(nsg_id)?;
        validate_rule_name(rule_name)?;
        if description.chars().count() > DESCRIPTION_MAX {
            return Err(invalid(
                "InvalidDescription",
                format!("rule description is longer than {DESCRIPTION_MAX} characters"),
            ));
        }
        let change = Change::Relabel {
            name: rule_name.to_string(),
            description: description.to_string(),
        };
        match self.submit(nsg_id, change).await? {
            Done::Relabeled(found) => Ok(found),
            other => Err(unexpected(other)),
        }
    }

    /// The per-rule path of a relabel (under the lane).
    async fn relabel_one(
        &self,
        nsg_id: &str,
        rule_name: &str,
        description: &str,
    ) -> Result<bool, AzureError> {
        let rules = self.get_rules(nsg_id, Urgency::Open).await?;
        let Some(existing) = rules
            .into_iter()
            .find(|r| r.name.eq_ignore_ascii_case(rule_name))
        else {
            return Ok(false);
        };
        if existing.properties.description.as_deref() == Some(description) {
            return Ok(true);
        }
        let body = SecurityRule {
            name: existing.name,
            id: None,
            etag: None,
            resource_type: None,
            properties: SecurityRuleProperties {
                description: Some(description.to_string()),
                provisioning_state: None,
                ..existing.properties
            },
        };
        let arm = &self.inner.arm;
        let rule_url = arm.url(&format!("{nsg_id}/securityRules/{}", body.name))?;
        arm.write_and_wait(WriteKind::Put, &rule_url, Some(&body))
            .await?;
        info!("rule description rewritten");
        Ok(true)
    }

    /// Delete the rule and wait until it is gone. An absent rule (204/404) counts as done.
    #[tracing::instrument(skip_all, fields(nsg = %nsg_name(nsg_id), rule = %rule_name))]
    pub async fn remove_rule(&self, nsg_id: &str, rule_name: &str) -> Result<(), AzureError> {
        validate_nsg_id(nsg_id)?;
        validate_rule_name(rule_name)?;
        let change = Change::Remove {
            name: rule_name.to_string(),
        };
        match self.submit(nsg_id, change).await? {
            Done::Removed => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The per-rule DELETE of one removal (under the lane).
    async fn remove_one(&self, nsg_id: &str, rule_name: &str) -> Result<(), AzureError> {
        let rule_url = self
            .inner
            .arm
            .url(&format!("{nsg_id}/securityRules/{rule_name}"))?;
        self.inner
            .arm
            .write_and_wait(WriteKind::Delete, &rule_url, None)
            .await?;
        info!("rule removed");
        Ok(())
    }

    /// All security rules of the NSG (default rules excluded), following `nextLink`.
    #[tracing::instrument(skip_all, fields(nsg = %nsg_name(nsg_id)))]
    pub async fn list_rules(&self, nsg_id: &str) -> Result<Vec<SecurityRule>, AzureError> {
        validate_nsg_id(nsg_id)?;
        let arm = &self.inner.arm;
        let mut url = arm.url(&format!("{nsg_id}/securityRules"))?;
        let mut rules = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp = arm.send(Method::GET, &url, None).await?;
            if resp.status == StatusCode::NOT_FOUND {
                return Err(AzureError::NsgNotFound(nsg_id.to_string()));
            }
            let page: SecurityRuleListResult = resp.json("the rule list")?;
            rules.extend(page.value);
            match page.next_link.filter(|l| !l.is_empty()) {
                None => return Ok(rules),
                Some(link) => {
                    let next = url::Url::parse(&link).map_err(|e| AzureError::Invalid {
                        code: "InvalidNextLink".into(),
                        message: format!("ARM returned an unusable nextLink {link:?}: {e}"),
                    })?;
                    arm.check_same_origin(&next)?;
                    url = next;
                }
            }
        }
        Err(AzureError::Transient(format!(
            "listing rules of {nsg_id} did not end after {MAX_PAGES} pages"
        )))
    }

    /// GET the NSG as JSON (everything in it, to be sent back as read).
    async fn get_nsg_value(
        &self,
        nsg_id: &str,
        urgency: Urgency,
    ) -> Result<serde_json::Value, AzureError> {
        let arm = &self.inner.arm;
        let resp = arm
            .send_with(Method::GET, &arm.url(nsg_id)?, &Outgoing::plain(urgency))
            .await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Err(AzureError::NsgNotFound(nsg_id.to_string()));
        }
        resp.json("the network security group")
    }

    /// The NSG's security rules, freshly read.
    async fn get_rules(
        &self,
        nsg_id: &str,
        urgency: Urgency,
    ) -> Result<Vec<SecurityRule>, AzureError> {
        let nsg = self.get_nsg_value(nsg_id, urgency).await?;
        plan::rules_of(&nsg)
    }
}

/// How a coalesced write ended.
enum Together {
    /// Each change's answer, in batch order.
    Done(Vec<Answer>),
    /// Every change gets this error.
    Failed(AzureError),
    /// Do the batch rule by rule (a 403 fallback or a conflict the plan could not avoid).
    PerRule,
}

impl NsgManager {
    /// Two or more changes in one NSG-level PUT: read, plan, PUT with `If-Match`, follow the
    /// operation; a 412 (the NSG changed since the read) reads and plans again.
    #[tracing::instrument(skip_all, fields(nsg = %nsg_name(nsg_id), changes = changes.len()))]
    async fn write_together(&self, nsg_id: &str, changes: &[Change]) -> Together {
        let urgency = if changes.iter().any(Change::is_removal) {
            Urgency::Close
        } else {
            Urgency::Open
        };
        let arm = &self.inner.arm;
        let url = match arm.url(nsg_id) {
            Ok(u) => u,
            Err(e) => return Together::Failed(e),
        };
        for _ in 0..MAX_PRECONDITION_RETRIES {
            let nsg = match self.get_nsg_value(nsg_id, urgency).await {
                Ok(n) => n,
                Err(e) => return Together::Failed(e),
            };
            let plan = match plan::plan(&nsg, changes) {
                Ok(p) => p,
                Err(e) => return Together::Failed(e),
            };
            let Some((body, etag)) = plan.write else {
                return Together::Done(plan.answers);
            };
            let out = Outgoing {
                body: Some(body.into()),
                if_match: Some(etag),
                urgency,
            };
            match arm.write_and_wait_with(WriteKind::Put, &url, &out).await {
                Ok(()) => {
                    info!("changes applied in one NSG write");
                    return Together::Done(plan.answers);
                }
                Err(AzureError::Invalid { code, .. }) if code == "PreconditionFailed" => {
                    info!("the NSG changed since it was read; reading it again");
                }
                Err(AzureError::Forbidden(message)) => {
                    self.fall_back(&message);
                    return Together::PerRule;
                }
                Err(AzureError::Invalid { code, message }) if code == "SecurityRuleConflict" => {
                    warn!(%message, "the NSG write conflicted; applying the changes one by one");
                    return Together::PerRule;
                }
                Err(e) => return Together::Failed(e),
            }
        }
        Together::Failed(AzureError::Transient(format!(
            "{nsg_id} kept changing while jitbot tried to write it ({MAX_PRECONDITION_RETRIES}              412 PreconditionFailed answers in a row)"
        )))
    }

    /// ARM refused the NSG-level write: per-rule writes from now on, said once.
    fn fall_back(&self, message: &str) {
        let first = self.inner.fell_back.send_if_modified(|fell| {
            let first = !*fell;
            *fell = true;
            first
        });
        if first {
            warn!(%message, "Azure refused an NSG-level write (403); jitbot writes rule by rule \
                from now on. Grant Microsoft.Network/networkSecurityGroups/write to coalesce \
                changes, or set azure.nsg_writes = \"per_rule\" to silence this");
        }
    }
}

/// The priority for `spec` in `rules`, and whether the rule is already in place as wanted.
fn choose_priority(
    rules: &[SecurityRule],
    spec: &RuleSpec,
    preferred: Option<u16>,
    conflicted: &BTreeSet<u16>,
) -> Result<(u16, bool), AzureError> {
    let existing = rules
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(&spec.name));
    let reuse = match preferred {
        Some(p) => Some(p).filter(|p| is_free(rules, spec, conflicted, *p)),
        None => existing
            .and_then(|r| u16::try_from(r.properties.priority).ok())
            .filter(|p| !conflicted.contains(p)),
    };
    let priority = match reuse {
        Some(p) => p,
        None => lowest_free(rules, spec, conflicted)?,
    };
    let desired = desired_rule(spec, priority);
    let in_place = existing.is_some_and(|e| {
        e.properties.provisioning_state.as_deref() == Some("Succeeded")
            && same_rule(&e.properties, &desired.properties)
    });
    Ok((priority, in_place))
}

/// A copy of an error for each change of a batch that failed as a whole.
fn duplicate(e: &AzureError) -> AzureError {
    match e {
        AzureError::Forbidden(m) => AzureError::Forbidden(m.clone()),
        AzureError::NsgNotFound(m) => AzureError::NsgNotFound(m.clone()),
        AzureError::Invalid { code, message } => AzureError::Invalid {
            code: code.clone(),
            message: message.clone(),
        },
        AzureError::BandFull { band } => AzureError::BandFull { band: *band },
        AzureError::Auth(m) => AzureError::Auth(m.clone()),
        AzureError::Transient(m) => AzureError::Transient(m.clone()),
        AzureError::OperationFailed { code, message } => AzureError::OperationFailed {
            code: code.clone(),
            message: message.clone(),
        },
    }
}

/// The lane's holder went away without answering (its task was cancelled): retryable.
fn dropped() -> AzureError {
    AzureError::Transient("the NSG write carrying this change was interrupted".into())
}

fn unexpected(done: Done) -> AzureError {
    AzureError::Transient(format!("internal: unexpected answer {done:?}"))
}

/// The lowest priority in the band not used by an inbound rule (other than `spec.name`) and not
/// known to conflict.
fn lowest_free(
    rules: &[SecurityRule],
    spec: &RuleSpec,
    conflicted: &BTreeSet<u16>,
) -> Result<u16, AzureError> {
    let used: BTreeSet<i32> = rules
        .iter()
        .filter(|r| r.properties.is_inbound() && !r.name.eq_ignore_ascii_case(&spec.name))
        .map(|r| r.properties.priority)
        .collect();
    (spec.band.0..=spec.band.1)
        .find(|p| !used.contains(&i32::from(*p)) && !conflicted.contains(p))
        .ok_or(AzureError::BandFull { band: spec.band })
}

/// Whether `priority` lies in the band, is not known to conflict and no inbound rule other than
/// `spec.name` uses it.
fn is_free(
    rules: &[SecurityRule],
    spec: &RuleSpec,
    conflicted: &BTreeSet<u16>,
    priority: u16,
) -> bool {
    (spec.band.0..=spec.band.1).contains(&priority)
        && !conflicted.contains(&priority)
        && !rules.iter().any(|r| {
            r.properties.is_inbound()
                && !r.name.eq_ignore_ascii_case(&spec.name)
                && r.properties.priority == i32::from(priority)
        })
}

/// The rule body jitbot PUTs: exactly the fields it means, singular or plural ports, never both.
pub(super) fn desired_rule(spec: &RuleSpec, priority: u16) -> SecurityRule {
    let mut ports: Vec<u16> = spec.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let (one, many) = if ports.len() == 1 {
        (Some(ports[0].to_string()), None)
    } else {
        (None, Some(ports.iter().map(u16::to_string).collect()))
    };
    SecurityRule {
        name: spec.name.clone(),
        id: None,
        etag: None,
        resource_type: None,
        properties: SecurityRuleProperties {
            description: Some(spec.description.clone()),
            protocol: normalize_protocol(&spec.protocol),
            source_port_range: Some("*".to_string()),
            destination_port_range: one,
            destination_port_ranges: many,
            source_address_prefix: Some(spec.source.clone()),
            destination_address_prefix: Some(spec.destination.clone()),
            access: spec.access.as_str().to_string(),
            priority: i32::from(priority),
            direction: "Inbound".to_string(),
            ..SecurityRuleProperties::default()
        },
    }
}

/// Whether the rule already allows exactly what is wanted (ARM echoes empty plural arrays and
/// may keep the protocol's case as sent). The description does not count: a rule that admits the
/// right thing is not rewritten for its text (after a crash or a takeover).
fn same_rule(existing: &SecurityRuleProperties, desired: &SecurityRuleProperties) -> bool {
    let set = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    existing.protocol.eq_ignore_ascii_case(&desired.protocol)
        && existing.access.eq_ignore_ascii_case(&desired.access)
        && existing.direction.eq_ignore_ascii_case(&desired.direction)
        && existing.priority == desired.priority
        && set(existing.destination_ports()) == set(desired.destination_ports())
        && set(existing.source_prefixes()) == set(desired.source_prefixes())
        && set(existing.destination_prefixes()) == set(desired.destination_prefixes())
        && existing.source_port_range.as_deref() == Some("*")
}

fn normalize_protocol(p: &str) -> String {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => "Tcp".to_string(),
        "udp" => "Udp".to_string(),
        _ => p.to_string(),
    }
}

fn invalid(code: &str, message: String) -> AzureError {
    AzureError::Invalid {
        code: code.to_string(),
        message,
    }
}

/// The NSG id must be one ([`NsgId::parse`], the same check `jitbot check` makes).
fn validate_nsg_id(nsg_id: &str) -> Result<(), AzureError> {
    NsgId::parse(nsg_id)
        .map(drop)
        .map_err(|message| invalid("InvalidResourceId", message))
}

fn validate_rule_name(name: &str) -> Result<(), AzureError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && name.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "InvalidRuleName",
            format!(
                "rule name {name:?} must be 1-{NAME_MAX} characters of letters, digits, '_', \
                 '.', '-', starting and ending with a letter, digit or '_'"
            ),
        ))
    }
}

fn validate_spec(spec: &RuleSpec) -> Result<(), AzureError> {
    validate_rule_name(&spec.name)?;
    if spec.description.chars().count() > DESCRIPTION_MAX {
        return Err(invalid(
            "InvalidRuleSpec",
            format!("rule description is longer than {DESCRIPTION_MAX} characters"),
        ));
    }
    if !["tcp", "udp", "*"].contains(&spec.protocol.to_ascii_lowercase().as_str()) {
        return Err(invalid(
            "InvalidRuleSpec",
            format!("protocol {:?} must be Tcp, Udp or *", spec.protocol),
        ));
    }
    for (what, v) in [("source", &spec.source), ("destination", &spec.destination)] {
        if v.is_empty() || v.contains([',', ' ']) {
            return Err(invalid(
                "InvalidRuleSpec",
                format!("{what} {v:?} must be a single address or CIDR"),
            ));
        }
    }
    if spec.ports.is_empty() {
        return Err(invalid(
            "InvalidRuleSpec",
            "at least one destination port is required".into(),
        ));
    }
    let (lo, hi) = spec.band;
    if lo < PRIORITY_MIN || hi > PRIORITY_MAX || lo > hi {
        return Err(invalid(
            "InvalidRuleSpec",
            format!(
                "priority band {lo}-{hi} must lie within {PRIORITY_MIN}-{PRIORITY_MAX} with \
                 low <= high"
            ),
        ));
    }
    Ok(())
}
