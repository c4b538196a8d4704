//! `jitbot scan` and `jitbot check --live`: read what is deployed through [`crate::azure::Inventory`],
//! judge it with [`crate::exposure`], and word the result for a terminal or for JSON.
//!
//! A scan lists, per scope, every VM, NIC, virtual network (subnets inline) and NSG (rules
//! inline) — a handful of paged reads however many VMs there are — and resolves each VM's path
//! from those lists. Only a subnet or NSG outside the scopes (a VNet in another resource group)
//! costs a GET of its own. Read-only: nothing is written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use futures::future::try_join4;
use serde::Serialize;

use crate::access::PortSet;
use crate::azure::inventory::{Nic, Nsg, Subnet, Vm, by_id};
use crate::azure::{AzureError, Inventory, Scope, SecurityRule, VmPath};
use crate::domain::NsgId;
use crate::exposure::{self, Finding, Group, NsgRules, Report, ScanTarget, VmAddress, VmInput};
use crate::policy::{Placement, Policy};

/// Why a scan or a live check could not run (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Azure(#[from] AzureError),
    #[error("{0}")]
    Scope(String),
}

/// The policy's targets as the classifier sees them.
pub fn scan_targets(policy: &Policy) -> Vec<ScanTarget> {
    policy
        .targets
        .values()
        .map(|t| {
            let (vm, nsg, destination) = match &t.placement {
                Placement::Vm { id } => (Some(id.clone()), None, None),
                Placement::Nsg { nsg, destination } => {
                    (None, Some(nsg.clone()), Some(destination.clone()))
                }
            };
            ScanTarget {
                name: t.name.clone(),
                ports: t.ports.clone(),
                vm,
                nsg,
                destination,
            }
        })
        .collect()
}

/// The scopes to read: those given, else the subscriptions of the configured targets.
pub fn scopes(given: &[String], targets: &[ScanTarget]) -> Result<Vec<Scope>, ScanError> {
    let mut out = BTreeSet::new();
    if given.is_empty() {
        for t in targets {
            let id = t.vm.as_deref().or(t.nsg.as_deref()).unwrap_or_default();
            if let Some(s) = Scope::subscription_of(id) {
                out.insert(s);
            }
        }
    }
    for g in given {
        out.insert(Scope::parse(g).map_err(ScanError::Scope)?);
    }
    if out.is_empty() {
        return Err(ScanError::Scope(
            "nothing to scan: give --scope <subscription or resource group id>".into(),
        ));
    }
    Ok(out.into_iter().collect())
}

/// A security rule as the exposure rules read it.
pub fn exposure_rule(r: &SecurityRule) -> exposure::Rule {
    let p = &r.properties;
    exposure::Rule {
        name: r.name.clone(),
        priority: p.priority,
        inbound: p.is_inbound(),
        allow: !p.access.eq_ignore_ascii_case("Deny"),
        protocol: p.protocol.clone(),
        sources: p.source_addresses(),
        source_ports: p.source_ports(),
        destinations: p.destination_addresses(),
        ports: p.destination_ports(),
    }
}

fn nsg_rules(n: &Nsg) -> NsgRules {
    NsgRules {
        id: n.id.clone(),
        name: n.name.clone(),
        rules: n.rules.iter().map(exposure_rule).collect(),
    }
}

/// Everything read from Azure for one scan, deduplicated across scopes.
#[derive(Default)]
struct Read {
    vms: Vec<Vm>,
    nics: Vec<Nic>,
    subnets: Vec<Subnet>,
    nsgs: Vec<Nsg>,
}

/// Lists every scope (the four lists of a scope run at once).
async fn read(inventory: &Inventory, scopes: &[Scope]) -> Result<Read, ScanError> {
    let mut all = Read::default();
    for scope in scopes {
        let (vms, nics, vnets, nsgs) = try_join4(
            inventory.list_vms(scope),
            inventory.list_nics(scope),
            inventory.list_vnets(scope),
            inventory.list_nsgs(scope),
        )
        .await?;
        all.vms.extend(vms);
        all.nics.extend(nics);
        all.subnets
            .extend(vnets.into_iter().flat_map(|v| v.subnets));
        all.nsgs.extend(nsgs);
    }
    dedup(&mut all.vms, |v| &v.id);
    dedup(&mut all.nics, |n| &n.id);
    dedup(&mut all.subnets, |s| &s.id);
    dedup(&mut all.nsgs, |n| &n.id);
    Ok(all)
}

fn dedup<T>(items: &mut Vec<T>, id: impl Fn(&T) -> &String) {
    let mut seen = BTreeSet::new();
    items.retain(|t| seen.insert(id(t).to_ascii_lowercase()));
}

/// Subnets the VMs' primary addresses name that the lists did not hold (another resource
/// group or subscription): one GET each.
async fn fetch_missing_subnets(inventory: &Inventory, r: &mut Read) -> Result<(), ScanError> {
    let known: BTreeSet<String> = r
        .subnets
        .iter()
        .map(|s| s.id.to_ascii_lowercase())
        .collect();
    let nics = by_id(&r.nics, |n| n.id.as_str());
    let mut wanted = BTreeSet::new();
    for vm in &r.vms {
        let Ok(nic_id) = crate::azure::inventory::primary_nic(vm) else {
            continue;
        };
        let Some(nic) = nics.get(&nic_id.to_ascii_lowercase()) else {
            continue;
        };
        if let Ok((_, subnet)) = crate::azure::inventory::primary_address(nic)
            && !known.contains(&subnet.to_ascii_lowercase())
        {
            wanted.insert(subnet.to_string());
        }
    }
    for id in wanted {
        if let Some(s) = inventory.get_subnet(&id).await? {
            r.subnets.push(s);
        }
    }
    Ok(())
}

/// NSGs on resolved paths that the lists did not hold: one GET each.
async fn fetch_missing_nsgs(
    inventory: &Inventory,
    r: &mut Read,
    paths: &[Result<VmPath, String>],
) -> Result<(), ScanError> {
    let known: BTreeSet<String> = r.nsgs.iter().map(|n| n.id.to_ascii_lowercase()).collect();
    let mut wanted: BTreeMap<String, NsgId> = BTreeMap::new();
    for p in paths.iter().flatten() {
        for n in &p.nsgs {
            let key = n.as_str().to_ascii_lowercase();
            if !known.contains(&key) {
                wanted.insert(key, n.clone());
            }
        }
    }
    for id in wanted.values() {
        if let Some(n) = inventory.get_nsg(id).await? {
            r.nsgs.push(n);
        }
    }
    Ok(())
}

/// Reads the scopes and judges them.
pub async fn scan(
    inventory: &Inventory,
    scopes: &[Scope],
    targets: &[ScanTarget],
    mgmt: &PortSet,
    prefix: &str,
) -> Result<Report, ScanError> {
    let mut r = read(inventory, scopes).await?;
    fetch_missing_subnets(inventory, &mut r).await?;
    let paths: Vec<Result<VmPath, String>> = {
        let nics = by_id(&r.nics, |n| n.id.as_str());
        let subnets = by_id(&r.subnets, |s| s.id.as_str());
        r.vms
            .iter()
            .map(|vm| {
                VmPath::assemble(
                    vm,
                    |id| nics.get(&id.to_ascii_lowercase()).copied(),
                    |id| subnets.get(&id.to_ascii_lowercase()).copied(),
                )
                .map_err(|why| why.to_string())
            })
            .collect()
    };
    fetch_missing_nsgs(inventory, &mut r, &paths).await?;
    let vms: Vec<VmInput> = r
        .vms
        .iter()
        .zip(paths)
        .map(|(vm, path)| VmInput {
            id: vm.id.clone(),
            name: vm.name.clone(),
            path: path.map(|p| VmAddress {
                ip: p.private_ip,
                nsgs: p.nsgs.iter().map(|n| n.as_str().to_string()).collect(),
            }),
        })
        .collect();
    let nsgs: Vec<NsgRules> = r.nsgs.iter().map(nsg_rules).collect();
    Ok(exposure::scan(&nsgs, &vms, targets, mgmt, prefix))
}

/// Counts for the one-line summary and the JSON `summary`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scopes: Vec<String>,
    pub vms: usize,
    pub configured: usize,
    pub not_configured: usize,
    pub unsupported: usize,
    pub findings: usize,
}

impl Summary {
    pub fn of(report: &Report, scopes: &[Scope]) -> Summary {
        let counts = exposure::group_counts(report);
        let n = |g| counts.get(&g).copied().unwrap_or(0);
        Summary {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            vms: report.vms.len(),
            configured: n(Group::Configured),
            not_configured: n(Group::NotConfigured),
            unsupported: n(Group::Unsupported),
            findings: report.findings.len(),
        }
    }

    /// `12 VMs: 3 configured, 8 not configured, 1 unsupported; 2 findings (…) in <scopes>`.
    pub fn line(&self) -> String {
        let findings = match self.findings {
            0 => "no management port open to the Internet".to_string(),
            1 => "1 rule opens a management port to the Internet".to_string(),
            n => format!("{n} rules open management ports to the Internet"),
        };
        format!(
            "{} VMs: {} configured, {} not configured, {} unsupported; {findings} (scanned {})",
            self.vms,
            self.configured,
            self.not_configured,
            self.unsupported,
            self.scopes.join(", ")
        )
    }
}

/// The JSON document of `jitbot scan --format json`.
pub fn to_json(report: &Report, scopes: &[Scope]) -> serde_json::Value {
    serde_json::json!({
        "summary": Summary::of(report, scopes),
        "vms": report.vms,
        "findings": report.findings,
    })
}

/// Rows as columns padded to the widest cell, two spaces apart, indented by two.
fn aligned(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(x) => *x = (*x).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(" ");
        for (i, cell) in row.iter().enumerate() {
            let pad = if i + 1 == row.len() { 0 } else { widths[i] };
            let _ = write!(line, " {cell:<pad$} ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn findings_table(findings: &[Finding]) -> String {
    let mut rows = vec![
        ["NSG", "RULE", "PRIORITY", "PORTS", "SOURCE", "REACHES"]
            .map(str::to_string)
            .to_vec(),
    ];
    for f in findings {
        let names: Vec<&str> = exposure::vm_names(f).into_iter().collect();
        let label = f.label.map(|l| format!(" ({l})")).unwrap_or_default();
        rows.push(vec![
            f.nsg_name.clone(),
            format!("{}{label}", f.rule),
            f.priority.to_string(),
            f.ports.clone(),
            f.source.join(","),
            if names.is_empty() {
                "no VM in scope".to_string()
            } else {
                names.join(", ")
            },
        ]);
    }
    aligned(&rows)
}

/// The table of `jitbot scan`: the summary line, the findings, then the VMs by group.
pub fn to_table(report: &Report, scopes: &[Scope]) -> String {
    let mut out = Summary::of(report, scopes).line();
    out.push_str("\n\n");
    if !report.findings.is_empty() {
        let _ = writeln!(out, "Findings ({}):", report.findings.len());
        out.push_str(&findings_table(&report.findings));
        out.push('\n');
    }
    for group in [Group::NotConfigured, Group::Unsupported, Group::Configured] {
        let vms: Vec<_> = report.vms.iter().filter(|v| v.group == group).collect();
        if vms.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{} ({}):", heading(group), vms.len());
        let rows: Vec<Vec<String>> = vms
            .iter()
            .map(|v| {
                let detail = if v.reasons.is_empty() {
                    format!("target {}", v.targets.join(", "))
                } else {
                    v.reasons.join("; ")
                };
                vec![
                    v.name.clone(),
                    v.ip.clone().unwrap_or_else(|| "-".into()),
                    if v.nsgs.is_empty() {
                        "-".into()
                    } else {
                        v.nsgs.join(" > ")
                    },
                    detail,
                ]
            })
            .collect();
        out.push_str(&aligned(&rows));
        out.push('\n');
    }
    out.trim_end().to_string() + "\n"
}

fn heading(g: Group) -> &'static str {
    match g {
        Group::Configured => "Configured",
        Group::NotConfigured => "Not configured",
        Group::Unsupported => "Unsupported",
    }
}

/// The actions jitbot needs on a target's NSG, checked by `jitbot check --live`.
pub const REQUIRED_ACTIONS: &[&str] = &[
    "Microsoft.Network/networkSecurityGroups/read",
    "Microsoft.Network/networkSecurityGroups/securityRules/read",
    "Microsoft.Network/networkSecurityGroups/securityRules/write",
    "Microsoft.Network/networkSecurityGroups/securityRules/delete",
    "Microsoft.Network/locations/operations/read",
];

/// One target's live check: `ok` or the problems, each with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetCheck {
    pub target: String,
    /// What was found, for the `ok` line.
    pub facts: Vec<String>,
    /// What is wrong and what to do; empty when fine.
    pub problems: Vec<String>,
}

impl TargetCheck {
    /// `ok web1: …` or `FAIL web1: …`.
    pub fn line(&self) -> String {
        if self.problems.is_empty() {
            format!("ok {}: {}", self.target, self.facts.join(", "))
        } else {
            format!("FAIL {}: {}", self.target, self.problems.join("; "))
        }
    }
}

/// What a live check needs to know of a target.
#[derive(Debug, Clone)]
pub struct LiveTarget {
    pub name: String,
    pub placement: Placement,
    pub ports: Vec<u16>,
    pub band: (u16, u16),
}

impl LiveTarget {
    pub fn from_policy(policy: &Policy) -> Vec<LiveTarget> {
        policy
            .targets
            .values()
            .map(|t| LiveTarget {
                name: t.name.clone(),
                placement: t.placement.clone(),
                ports: t.ports.clone(),
                band: t.priority_band,
            })
            .collect()
    }
}

/// Checks one target against Azure without writing: where it is (a `vm` target is resolved),
/// then in every NSG on its path the permissions at its scope, free priorities in the band, the
/// baseline, and exposures reaching the destination.
pub async fn check_target(
    inventory: &Inventory,
    t: &LiveTarget,
    mgmt: &PortSet,
    prefix: &str,
) -> TargetCheck {
    let mut c = TargetCheck {
        target: t.name.clone(),
        facts: Vec::new(),
        problems: Vec::new(),
    };
    let (nsgs, destination) = match &t.placement {
        Placement::Nsg { nsg, destination } => (vec![nsg.clone()], destination.clone()),
        Placement::Vm { id } => match inventory.resolve_vm(id).await {
            Ok(p) => {
                c.facts.push(format!(
                    "VM {} at {} behind {}",
                    p.vm_name,
                    p.private_ip,
                    p.nsgs
                        .iter()
                        .map(|n| n.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                let nsgs = p.nsgs.iter().map(|n| n.as_str().to_string()).collect();
                (nsgs, p.private_ip.to_string())
            }
            Err(e) => {
                c.problems.push(e.to_string());
                return c;
            }
        },
    };
    for nsg in &nsgs {
        check_nsg(inventory, t, nsg, &destination, mgmt, prefix, &mut c).await;
    }
    c
}

/// The checks of one NSG on the target's path.
async fn check_nsg(
    inventory: &Inventory,
    t: &LiveTarget,
    nsg: &str,
    destination: &str,
    mgmt: &PortSet,
    prefix: &str,
    c: &mut TargetCheck,
) {
    let nsg_id = match NsgId::parse(nsg) {
        Ok(id) => id,
        Err(e) => {
            c.problems.push(e);
            return;
        }
    };
    let nsg = match inventory.get_nsg(&nsg_id).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            c.problems.push(format!(
                "NSG {} not found; check targets.{}",
                nsg_id.name(),
                t.name
            ));
            return;
        }
        Err(e) => {
            c.problems
                .push(format!("cannot read NSG {}: {e}", nsg_id.name()));
            return;
        }
    };
    c.facts.push(format!("NSG {} readable", nsg.name));
    check_permissions(inventory, &nsg_id, c).await;
    let rules = nsg_rules(&nsg);
    check_band(&rules, t, c);
    check_lockdown(&rules, t, destination, mgmt, prefix, c);
}

async fn check_permissions(inventory: &Inventory, nsg_id: &NsgId, c: &mut TargetCheck) {
    match inventory.permissions(nsg_id.as_str()).await {
        Ok(perms) => {
            let missing: Vec<&str> = REQUIRED_ACTIONS
                .iter()
                .copied()
                .filter(|a| !crate::azure::inventory::allows(&perms, a))
                .collect();
            if missing.is_empty() {
                c.facts.push("permissions ok".into());
            } else {
                c.problems.push(format!(
                    "missing permission {} on {} (assign the role in manifests/azure/bot-role.json)",
                    missing.join(", "),
                    nsg_id.name()
                ));
            }
        }
        Err(e) => c
            .problems
            .push(format!("cannot read permissions on {}: {e}", nsg_id.name())),
    }
}

fn check_band(rules: &NsgRules, t: &LiveTarget, c: &mut TargetCheck) {
    let used: BTreeSet<i32> = rules
        .rules
        .iter()
        .filter(|r| r.inbound)
        .map(|r| r.priority)
        .collect();
    let (lo, hi) = t.band;
    let free = (lo..=hi).filter(|p| !used.contains(&i32::from(*p))).count();
    let size = usize::from(hi - lo) + 1;
    if free == 0 {
        c.problems.push(format!(
            "no free priority in {lo}-{hi} ({size} taken); widen targets.{}.priority_range or free some",
            t.name
        ));
    } else {
        c.facts
            .push(format!("{free} of {size} priorities free in {lo}-{hi}"));
    }
}

fn check_lockdown(
    rules: &NsgRules,
    t: &LiveTarget,
    destination: &str,
    mgmt: &PortSet,
    prefix: &str,
    c: &mut TargetCheck,
) {
    let baseline = exposure::baseline_rule_name(prefix, &t.name);
    if exposure::has_baseline(rules, &baseline, &t.ports, destination) {
        c.facts.push(format!("baseline {baseline} present"));
    } else {
        c.problems.push(format!(
            "baseline {baseline} missing in {} (run `jitbot lockdown {}`)",
            rules.name, t.name
        ));
    }
    let findings = exposure::findings_reaching(rules, mgmt, destination);
    if findings.is_empty() {
        c.facts
            .push("no management port open to the Internet".into());
    }
    for f in findings {
        c.problems.push(format!(
            "rule {} (priority {}) in {} opens port {} to {} from {}",
            f.rule,
            f.priority,
            f.nsg_name,
            f.ports,
            destination,
            f.source.join(",")
        ));
    }
}

/// Checks every target, at most eight at a time.
pub async fn check_live(
    inventory: &Inventory,
    targets: &[LiveTarget],
    mgmt: &PortSet,
    prefix: &str,
) -> Vec<TargetCheck> {
    use futures::StreamExt;
    let checks: HashMap<String, TargetCheck> = futures::stream::iter(targets)
        .map(|t| async move {
            (
                t.name.clone(),
                check_target(inventory, t, mgmt, prefix).await,
            )
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut out: Vec<TargetCheck> = checks.into_values().collect();
    out.sort_by(|a, b| a.target.cmp(&b.target));
    out
}
