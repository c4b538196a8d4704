//! Which management ports are open to the Internet, and which VMs jitbot protects: the exposure
//! scan behind `jitbot scan` and `jitbot check --live`, as pure functions over what was read.
//!
//! A **finding** is an inbound Allow rule whose protocol is TCP or `*`, whose destination ports
//! include a management port (22, 3389 and `scan.ports`; single, range, list or `*`) and whose
//! source is the Internet (`*`, `0.0.0.0`, `0.0.0.0/0`, `::/0`, `Internet`, `Any`, in any case) —
//! unless Deny rules of higher precedence (lower priority number) in the same NSG block those
//! ports from those sources to those destinations. The check is made per address family (a Deny
//! from `0.0.0.0/0` leaves `::/0` open) and per VM (a Deny to one VM's address protects that VM
//! only). Defender for Cloud's own JIT rules are recognised and labelled.
//!
//! Each VM falls in exactly one [`Group`]: `configured` (a jitbot target, the baseline Deny in
//! every NSG on its path, no finding reaching it), `not_configured` (with the reasons) or
//! `unsupported` (jitbot cannot protect it; why).
//!
//! Conservative where it matters: a rule *reaches* a VM when its destination may include the
//! VM's address (a service tag or an application security group may), but a Deny *blocks* only
//! what it certainly covers (readable ports, TCP or `*`, every source port, a destination that
//! contains the address). Pure: no I/O, no ARM types; `scan.rs` converts what `azure/` read.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::access::{AddressSet, PortSet};

/// Management ports every scan looks for.
pub const MANAGEMENT_PORTS: [u16; 2] = [22, 3389];

/// The `[scan]` section of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSettings {
    /// Management ports besides 22 and 3389 (e.g. 5985, 5986 for WinRM).
    #[serde(default)]
    pub ports: Vec<u16>,
}

impl ScanSettings {
    /// 22, 3389 and the configured ports.
    pub fn management_ports(&self) -> PortSet {
        let mut all = MANAGEMENT_PORTS.to_vec();
        all.extend(&self.ports);
        PortSet::of(&all)
    }
}

/// The name of the Deny rule that locks a target's ports down in an NSG: `<prefix>lockdown-<target>`.
/// The one place this name is made, so the scan, the check and the lockdown agree.
pub fn baseline_rule_name(prefix: &str, target: &str) -> String {
    format!("{prefix}{}{target}", crate::domain::RulePrefix::BASELINE)
}

/// Defender for Cloud's label for a rule it owns, if it is one of its JIT rules.
pub fn defender_label(rule_name: &str) -> Option<&'static str> {
    let lower = rule_name.to_ascii_lowercase();
    [
        "securitycenter-jitrule",
        "microsoftdefenderforcloud-jitrule",
    ]
    .iter()
    .any(|p| lower.starts_with(p))
    .then_some("Defender for Cloud JIT rule")
}

/// One security rule, as the scan needs it (the text of each field as ARM holds it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    pub name: String,
    pub priority: i32,
    pub inbound: bool,
    pub allow: bool,
    pub protocol: String,
    pub sources: Vec<String>,
    pub source_ports: Vec<String>,
    pub destinations: Vec<String>,
    pub ports: Vec<String>,
}

/// An NSG and its rules (default rules left out: none of them admits the Internet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsgRules {
    pub id: String,
    pub name: String,
    pub rules: Vec<Rule>,
}

/// A VM and where its traffic goes, or why jitbot cannot tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInput {
    pub id: String,
    pub name: String,
    pub path: Result<VmAddress, String>,
}

/// A resolved VM: its private address and the NSGs on its path, subnet's first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmAddress {
    pub ip: IpAddr,
    pub nsgs: Vec<String>,
}

/// A jitbot target as the classifier sees it: by VM, or by NSG plus destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanTarget {
    pub name: String,
    pub ports: Vec<u16>,
    pub vm: Option<String>,
    pub nsg: Option<String>,
    pub destination: Option<String>,
}

impl ScanTarget {
    /// Its `vm` is the VM, or its NSG is on the VM's path and its destination covers the VM's
    /// address (ids compare case-insensitively, as ARM's do).
    pub fn matches(&self, vm: &VmInput, addr: &VmAddress) -> bool {
        if let Some(id) = &self.vm {
            return id.eq_ignore_ascii_case(&vm.id);
        }
        let (Some(nsg), Some(dest)) = (&self.nsg, &self.destination) else {
            return false;
        };
        addr.nsgs.iter().any(|n| n.eq_ignore_ascii_case(nsg))
            && AddressSet::parse(&[dest]).contains(&AddressSet::parse(&[addr.ip.to_string()]))
    }
}

/// An inbound Allow rule exposing management ports to the Internet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// NSG resource id.
    pub nsg: String,
    pub nsg_name: String,
    pub rule: String,
    pub priority: i32,
    /// The exposed management ports (after higher-precedence Denies), e.g. `22, 3389`.
    pub ports: String,
    /// The rule's sources as written.
    pub source: Vec<String>,
    /// Set for Defender for Cloud's own JIT rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<&'static str>,
    /// Ids of the VMs it reaches (their path holds the NSG, the destination covers them).
    pub vms: Vec<String>,
}

/// The three groups of Defender's JIT page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    NotConfigured,
    Unsupported,
    Configured,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Configured => "configured",
            Group::NotConfigured => "not_configured",
            Group::Unsupported => "unsupported",
        }
    }
}

/// One VM's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmReport {
    pub id: String,
    pub name: String,
    pub group: Group,
    /// Why it is not configured or unsupported; empty when configured.
    pub reasons: Vec<String>,
    /// The jitbot targets that cover it.
    pub targets: Vec<String>,
    /// Private address, when resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// NSG names on its path, subnet's first.
    pub nsgs: Vec<String>,
}

/// Everything a scan found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub vms: Vec<VmReport>,
    pub findings: Vec<Finding>,
}

/// Which address families of the Internet a list of sources names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Families {
    v4: bool,
    v6: bool,
}

impl Families {
    fn of(sources: &[String]) -> Families {
        let mut f = Families::default();
        for s in sources {
            let s = s.trim();
            if ["*", "any", "internet"]
                .iter()
                .any(|w| s.eq_ignore_ascii_case(w))
            {
                return Families { v4: true, v6: true };
            }
            match s.parse::<IpNet>() {
                Ok(IpNet::V4(n)) if n.prefix_len() == 0 => f.v4 = true,
                Ok(IpNet::V6(n)) if n.prefix_len() == 0 => f.v6 = true,
                _ if s == "0.0.0.0" => f.v4 = true,
                _ => {}
            }
        }
        f
    }

    fn any(self) -> bool {
        self.v4 || self.v6
    }
}

/// Whether a protocol admits TCP (`Tcp` or `*`; for a Allow an unknown value counts too).
fn admits_tcp(protocol: &str, lenient: bool) -> bool {
    let p = protocol.trim();
    p.eq_ignore_ascii_case("tcp") || p == "*" || (lenient && !is_known_protocol(p))
}

fn is_known_protocol(p: &str) -> bool {
    ["tcp", "udp", "icmp", "esp", "ah", "*"]
        .iter()
        .any(|k| p.eq_ignore_ascii_case(k))
}

impl Rule {
    /// An inbound Allow for TCP from the Internet: the families it admits, else `None`.
    fn internet_allow(&self) -> Option<Families> {
        let f = Families::of(&self.sources);
        (self.inbound && self.allow && admits_tcp(&self.protocol, true) && f.any()).then_some(f)
    }

    /// The ports a higher-precedence Deny certainly blocks for TCP from the Internet of one
    /// family to `dest`; empty when it blocks nothing of that.
    fn blocks(&self, before: i32, v6: bool, dest: &AddressSet) -> PortSet {
        let f = Families::of(&self.sources);
        let covers_family = if v6 { f.v6 } else { f.v4 };
        let all_source_ports = self.source_ports.is_empty()
            || PortSet::parse_strict(&self.source_ports).is_some_and(|p| p == PortSet::any());
        if !self.inbound
            || self.allow
            || self.priority >= before
            || !covers_family
            || !admits_tcp(&self.protocol, false)
            || !all_source_ports
            || !AddressSet::parse(&self.destinations).contains(dest)
        {
            return PortSet::empty();
        }
        PortSet::parse_strict(&self.ports).unwrap_or_else(PortSet::empty)
    }
}

/// The management ports `allow` opens from the Internet to `dest` (a VM's address, or the
/// rule's own destination), after the NSG's higher-precedence Denies.
fn exposed(nsg: &NsgRules, allow: &Rule, mgmt: &PortSet, dest: &AddressSet) -> PortSet {
    let Some(families) = allow.internet_allow() else {
        return PortSet::empty();
    };
    let ports = PortSet::parse(&allow.ports).intersection(mgmt);
    let left = |v6: bool| {
        nsg.rules.iter().fold(ports.clone(), |open, r| {
            open.difference(&r.blocks(allow.priority, v6, dest))
        })
    };
    let mut open = PortSet::empty();
    if families.v4 {
        open = open.union(&left(false));
    }
    if families.v6 {
        open = open.union(&left(true));
    }
    open
}

/// Every finding in one NSG. `on_path` are the resolved VMs whose path holds the NSG.
pub fn findings_in(
    nsg: &NsgRules,
    mgmt: &PortSet,
    on_path: &[(&VmInput, &VmAddress)],
) -> Vec<Finding> {
    let mut out = Vec::new();
    for rule in &nsg.rules {
        if rule.internet_allow().is_none() {
            continue;
        }
        let rule_dest = AddressSet::parse(&rule.destinations);
        let mut ports = exposed(nsg, rule, mgmt, &rule_dest);
        let mut vms = Vec::new();
        for (vm, addr) in on_path {
            let at = AddressSet::parse(&[addr.ip.to_string()]);
            if !rule_dest.may_overlap(&at) {
                continue;
            }
            let open = exposed(nsg, rule, mgmt, &at);
            if !open.is_empty() {
                ports = ports.union(&open);
                vms.push(vm.id.clone());
            }
        }
        if ports.is_empty() {
            continue;
        }
        out.push(Finding {
            nsg: nsg.id.clone(),
            nsg_name: nsg.name.clone(),
            rule: rule.name.clone(),
            priority: rule.priority,
            ports: ports.to_string(),
            source: rule.sources.clone(),
            label: defender_label(&rule.name),
            vms,
        });
    }
    out
}

/// The findings in one NSG that reach `destination` (an address or prefix, as a target names
/// it): what `jitbot check --live` reports per target. A Deny protects the destination only if
/// it covers all of it.
pub fn findings_reaching(nsg: &NsgRules, mgmt: &PortSet, destination: &str) -> Vec<Finding> {
    let dest = AddressSet::parse(&[destination]);
    nsg.rules
        .iter()
        .filter(|r| AddressSet::parse(&r.destinations).may_overlap(&dest))
        .filter_map(|rule| {
            let open = exposed(nsg, rule, mgmt, &dest);
            (!open.is_empty()).then(|| Finding {
                nsg: nsg.id.clone(),
                nsg_name: nsg.name.clone(),
                rule: rule.name.clone(),
                priority: rule.priority,
                ports: open.to_string(),
                source: rule.sources.clone(),
                label: defender_label(&rule.name),
                vms: Vec::new(),
            })
        })
        .collect()
}

/// The whole scan: findings in every NSG, then each VM's group.
pub fn scan(
    nsgs: &[NsgRules],
    vms: &[VmInput],
    targets: &[ScanTarget],
    mgmt: &PortSet,
    prefix: &str,
) -> Report {
    let mut on_nsg: BTreeMap<String, Vec<(&VmInput, &VmAddress)>> = BTreeMap::new();
    for vm in vms {
        if let Ok(addr) = &vm.path {
            for n in &addr.nsgs {
                on_nsg
                    .entry(n.to_ascii_lowercase())
                    .or_default()
                    .push((vm, addr));
            }
        }
    }
    let mut findings: Vec<Finding> = nsgs
        .iter()
        .flat_map(|n| {
            let on_path = on_nsg
                .get(&n.id.to_ascii_lowercase())
                .map(Vec::as_slice)
                .unwrap_or_default();
            findings_in(n, mgmt, on_path)
        })
        .collect();
    findings.sort_by(|a, b| (&a.nsg_name, a.priority).cmp(&(&b.nsg_name, b.priority)));
    let by_id: BTreeMap<String, &NsgRules> = nsgs
        .iter()
        .map(|n| (n.id.to_ascii_lowercase(), n))
        .collect();
    let mut reports: Vec<VmReport> = vms
        .iter()
        .map(|vm| classify(vm, targets, &findings, &by_id, prefix))
        .collect();
    reports.sort_by(|a, b| (a.group, &a.name, &a.id).cmp(&(b.group, &b.name, &b.id)));
    Report {
        vms: reports,
        findings,
    }
}

/// One VM's group and reasons.
pub fn classify(
    vm: &VmInput,
    targets: &[ScanTarget],
    findings: &[Finding],
    nsgs: &BTreeMap<String, &NsgRules>,
    prefix: &str,
) -> VmReport {
    let mut report = VmReport {
        id: vm.id.clone(),
        name: vm.name.clone(),
        group: Group::Unsupported,
        reasons: Vec::new(),
        targets: Vec::new(),
        ip: None,
        nsgs: Vec::new(),
    };
    let addr = match &vm.path {
        Err(why) => {
            report.reasons.push(why.clone());
            return report;
        }
        Ok(addr) => addr,
    };
    report.ip = Some(addr.ip.to_string());
    report.nsgs = addr
        .nsgs
        .iter()
        .map(|n| last_segment(n).to_string())
        .collect();
    let matching: Vec<&ScanTarget> = targets.iter().filter(|t| t.matches(vm, addr)).collect();
    report.targets = matching.iter().map(|t| t.name.clone()).collect();
    let mut reasons = Vec::new();
    let mut locked = false;
    if matching.is_empty() {
        reasons.push("not a jitbot target".to_string());
    }
    for t in &matching {
        let missing = missing_baselines(t, addr, nsgs, prefix);
        locked |= missing.is_empty();
        reasons.extend(missing);
    }
    if locked {
        reasons.retain(|r| !r.starts_with("no baseline"));
    }
    reasons.extend(exposure_reasons(&vm.id, findings));
    report.group = if locked && reasons.is_empty() {
        Group::Configured
    } else {
        Group::NotConfigured
    };
    report.reasons = reasons;
    report
}

/// "rule X (priority N) in NSG Y exposes port 22 to the Internet", for each finding reaching it.
fn exposure_reasons(vm_id: &str, findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.vms.iter().any(|v| v.eq_ignore_ascii_case(vm_id)))
        .map(|f| {
            let label = f.label.map(|l| format!(" ({l})")).unwrap_or_default();
            format!(
                "rule {}{label} (priority {}) in {} exposes port {} to the Internet",
                f.rule, f.priority, f.nsg_name, f.ports
            )
        })
        .collect()
}

/// "no baseline …" for each NSG on the path that lacks the target's baseline Deny.
fn missing_baselines(
    t: &ScanTarget,
    addr: &VmAddress,
    nsgs: &BTreeMap<String, &NsgRules>,
    prefix: &str,
) -> Vec<String> {
    let name = baseline_rule_name(prefix, &t.name);
    addr.nsgs
        .iter()
        .filter(|n| {
            !nsgs
                .get(&n.to_ascii_lowercase())
                .is_some_and(|nsg| has_baseline(nsg, &name, &t.ports, &addr.ip.to_string()))
        })
        .map(|n| {
            format!(
                "no baseline {name} in {} (run `jitbot lockdown {}`)",
                last_segment(n),
                t.name
            )
        })
        .collect()
}

/// The NSG holds the baseline: a Deny named `name`, inbound, from any source, covering the
/// target's ports and `destination` (the VM's address, or a target's destination).
pub fn has_baseline(nsg: &NsgRules, name: &str, ports: &[u16], destination: &str) -> bool {
    nsg.rules.iter().any(|r| {
        r.name.eq_ignore_ascii_case(name)
            && r.inbound
            && !r.allow
            && AddressSet::parse(&r.sources).contains(&AddressSet::parse(&["*"]))
            && PortSet::parse_strict(&r.ports).is_some_and(|p| p.contains(&PortSet::of(ports)))
            && AddressSet::parse(&r.destinations).contains(&AddressSet::parse(&[destination]))
    })
}

/// The last segment of a resource id (its name).
pub fn last_segment(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// Counts by group, for summaries.
pub fn group_counts(report: &Report) -> BTreeMap<Group, usize> {
    let mut counts = BTreeMap::new();
    for v in &report.vms {
        *counts.entry(v.group).or_insert(0) += 1;
    }
    counts
}

/// Names of the VMs a finding reaches, in order (for tables).
pub fn vm_names(finding: &Finding) -> BTreeSet<&str> {
    finding.vms.iter().map(|v| last_segment(v)).collect()
}

#[cfg(test)]
mod tests;
