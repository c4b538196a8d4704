//! NSG rule operations under a per-NSG lane.
//!
//! Azure processes one write at a time per NSG, and two writers choosing priorities from the same
//! read would collide. So every write to an NSG from this process runs under that NSG's lane (a
//! tokio mutex keyed by the lower-cased NSG id): read the NSG fresh, choose, write, wait for the
//! operation to finish, release. Other processes (replicas, people in the portal) are handled by
//! the retries: `AnotherOperationInProgress` is retried and `SecurityRuleConflict` moves on to the
//! next free priority.
//!
//! Removals go first: a PUT that gets the lane while a removal is waiting for it steps aside, so
//! a burst of openings on one NSG cannot hold up a grant that has to close.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use tracing::{info, warn};

use super::AzureError;
use super::arm::{ArmClient, WriteKind};
use super::model::{
    NetworkSecurityGroup, SecurityRule, SecurityRuleListResult, SecurityRuleProperties,
};
use crate::domain::{NsgId, nsg_name};

/// Lowest and highest priority ARM accepts for user rules.
const PRIORITY_MIN: u16 = 100;
const PRIORITY_MAX: u16 = 4096;
/// Longest rule name and description ARM accepts.
const NAME_MAX: usize = 80;
const DESCRIPTION_MAX: usize = 140;
/// Safety stop for `nextLink` paging.
const MAX_PAGES: usize = 1000;

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

/// Everything the worker needs from Azure. Cheap to clone.
#[derive(Clone)]
pub struct NsgManager {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared with [`super::Inventory`]: one client, one token source, one set of metrics.
    arm: Arc<ArmClient>,
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
}

/// One NSG's lane: one write at a time, removals before PUTs.
#[derive(Default)]
struct Lane {
    write: tokio::sync::Mutex<()>,
    /// Removals waiting for `write`.
    removals_waiting: AtomicUsize,
    /// Signalled whenever a removal leaves the lane.
    removal_done: tokio::sync::Notify,
}

/// Counts a removal as waiting while it exists (also when its future is dropped mid-wait).
struct WaitingRemoval<'a>(&'a Lane);

impl<'a> WaitingRemoval<'a> {
    fn new(lane: &'a Lane) -> Self {
        lane.removals_waiting.fetch_add(1, Ordering::SeqCst);
        WaitingRemoval(lane)
    }
}

impl Drop for WaitingRemoval<'_> {
    fn drop(&mut self) {
        self.0.removals_waiting.fetch_sub(1, Ordering::SeqCst);
        // A removal given up while waiting must not leave the PUTs it held back asleep.
        self.0.removal_done.notify_waiters();
    }
}

/// Wakes the PUTs that stepped aside when a removal leaves the lane.
struct RemovalTurn<'a> {
    lane: &'a Lane,
    _write: tokio::sync::MutexGuard<'a, ()>,
}

impl Drop for RemovalTurn<'_> {
    fn drop(&mut self) {
        self.lane.removal_done.notify_waiters();
    }
}

impl Lane {
    /// The lane for a PUT: waits until no removal is waiting.
    async fn put_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        loop {
            let done = self.removal_done.notified();
            let guard = self.write.lock().await;
            if self.removals_waiting.load(Ordering::SeqCst) == 0 {
                return guard;
            }
            drop(guard);
            done.await;
        }
    }

    /// The lane for a removal, ahead of every PUT that has not started.
    async fn removal_turn(&self) -> RemovalTurn<'_> {
        let waiting = WaitingRemoval::new(self);
        let write = self.write.lock().await;
        drop(waiting);
        RemovalTurn {
            lane: self,
            _write: write,
        }
    }
}

impl NsgManager {
    pub(crate) fn new(arm: Arc<ArmClient>) -> Self {
        NsgManager {
            inner: Arc::new(Inner {
                arm,
                lanes: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The lane of one NSG: at most one write in flight per NSG in this process.
    fn lane(&self, nsg_id: &str) -> Arc<Lane> {
        let mut lanes = self.inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes
            .entry(nsg_id.to_ascii_lowercase())
            .or_default()
            .clone()
    }

    /// Create or confirm the rule and wait until it is provisioned.
    ///
    /// Under the NSG's lane: read the NSG; if a rule named `spec.name` exists keep its priority
    /// (and skip the write if it already matches and is `Succeeded`), else take the lowest
    /// priority in `spec.band` that no inbound rule uses; PUT; follow the operation. A
    /// `SecurityRuleConflict` (someone else took the number meanwhile) re-reads and tries the next
    /// free number; an exhausted band is [`AzureError::BandFull`].
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
        let lane = self.lane(nsg_id);
        let _in_lane = lane.put_turn().await;

        let arm = &self.inner.arm;
        let rule_url = arm.url(&format!("{nsg_id}/securityRules/{}", spec.name))?;
        let mut conflicted: BTreeSet<u16> = BTreeSet::new();
        let attempts = usize::from(spec.band.1 - spec.band.0) + 3;
        for _ in 0..attempts {
            let nsg = self.get_nsg(nsg_id).await?;
            let existing = nsg
                .properties
                .security_rules
                .iter()
                .find(|r| r.name.eq_ignore_ascii_case(&spec.name));
            let reuse = match preferred {
                Some(p) => Some(p).filter(|p| is_free(&nsg, spec, &conflicted, *p)),
                None => existing
                    .and_then(|r| u16::try_from(r.properties.priority).ok())
                    .filter(|p| !conflicted.contains(p)),
            };
            let priority = match reuse {
                Some(p) => p,
                None => lowest_free(&nsg, spec, &conflicted)?,
            };
            let desired = desired_rule(spec, priority);
            if let Some(existing) = existing
                && existing.properties.provisioning_state.as_deref() == Some("Succeeded")
                && same_rule(&existing.properties, &desired.properties)
            {
                info!(priority, "rule already in place");
                return Ok(AppliedRule {
                    name: spec.name.clone(),
                    priority,
                });
            }
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
        let lane = self.lane(nsg_id);
        let _in_lane = lane.put_turn().await;
        let nsg = self.get_nsg(nsg_id).await?;
        let Some(existing) = nsg
            .properties
            .security_rules
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
        let lane = self.lane(nsg_id);
        let _in_lane = lane.removal_turn().await;
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

    /// GET the NSG with all its rules.
    async fn get_nsg(&self, nsg_id: &str) -> Result<NetworkSecurityGroup, AzureError> {
        let arm = &self.inner.arm;
        let resp = arm.send(Method::GET, &arm.url(nsg_id)?, None).await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Err(AzureError::NsgNotFound(nsg_id.to_string()));
        }
        resp.json("the network security group")
    }
}

/// The lowest priority in the band not used by an inbound rule (other than `spec.name`) and not
/// known to conflict.
fn lowest_free(
    nsg: &NetworkSecurityGroup,
    spec: &RuleSpec,
    conflicted: &BTreeSet<u16>,
) -> Result<u16, AzureError> {
    let used: BTreeSet<i32> = nsg
        .properties
        .security_rules
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
    nsg: &NetworkSecurityGroup,
    spec: &RuleSpec,
    conflicted: &BTreeSet<u16>,
    priority: u16,
) -> bool {
    (spec.band.0..=spec.band.1).contains(&priority)
        && !conflicted.contains(&priority)
        && !nsg.properties.security_rules.iter().any(|r| {
            r.properties.is_inbound()
                && !r.name.eq_ignore_ascii_case(&spec.name)
                && r.properties.priority == i32::from(priority)
        })
}

/// The rule body jitbot PUTs: exactly the fields it means, singular or plural ports, never both.
fn desired_rule(spec: &RuleSpec, priority: u16) -> SecurityRule {
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
