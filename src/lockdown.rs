//! Lockdown ("Enable JIT on VM"): a **Deny** for a target's ports from any source to its
//! address in every NSG on its path, right after the target's priority band, so jitbot's grants
//! (inside the band) take precedence and nothing else opens those ports. The baseline rule is
//! `<prefix>lockdown-<target>` (protocol `*`: UDP on those ports is closed too).
//!
//! Pure planning over what was read: `jitbot lockdown` prints the plan (dry run) or writes it
//! (`--apply`), and the reconciler keeps it for targets with `lockdown = true`. jitbot never moves
//! or edits a rule it does not own: when such a rule would still let the Internet reach the port
//! *ahead of* the Deny, the plan names it as a blocker and `jitbot lockdown` refuses.

use crate::access::{AddressSet, PortSet};
use crate::azure::{Access, Azure, RuleSpec, SecurityRule};
use crate::domain::{RulePrefix, nsg_name};
use crate::exposure::{self, Finding, NsgRules};
use crate::policy::{Placement, Policy, Target};
use crate::scan::exposure_rule;

/// Highest priority ARM accepts.
const PRIORITY_MAX: u16 = 4096;

/// One target's baseline, wherever it goes.
#[derive(Debug, Clone)]
pub struct Baseline<'a> {
    pub target: &'a str,
    pub ports: &'a [u16],
    /// The target's grant band: the Deny goes right after it.
    pub band: (u16, u16),
    /// The VM's address (or the policy's destination prefix).
    pub destination: &'a str,
    pub namespace: &'a RulePrefix,
}

/// What to do in one NSG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The baseline is there and sound.
    InPlace { priority: u16 },
    /// Missing: create it.
    Create { priority: u16 },
    /// There but weakened (or in the wrong place): put it back as it should be.
    Replace { priority: u16, was: String },
}

/// The plan for one NSG.
#[derive(Debug, Clone)]
pub struct NsgPlan {
    pub nsg: String,
    pub step: Step,
    /// Rules jitbot does not own that let the Internet reach the ports ahead of the Deny.
    pub blockers: Vec<Finding>,
}

impl NsgPlan {
    /// Whether carrying it out writes anything.
    pub fn writes(&self) -> bool {
        !matches!(self.step, Step::InPlace { .. })
    }

    pub fn priority(&self) -> u16 {
        match self.step {
            Step::InPlace { priority }
            | Step::Create { priority }
            | Step::Replace { priority, .. } => priority,
        }
    }
}

impl Baseline<'_> {
    pub fn name(&self) -> String {
        self.namespace.baseline_rule(self.target)
    }

    /// The rule as jitbot writes it (its band is everything after the grants' band).
    pub fn spec(&self) -> RuleSpec {
        RuleSpec {
            access: Access::Deny,
            name: self.name(),
            description: format!(
                "jitbot lockdown of {}: only jitbot grants (priority {}-{}) open these ports",
                self.target, self.band.0, self.band.1
            ),
            protocol: "*".into(),
            source: "*".into(),
            destination: self.destination.to_string(),
            ports: self.ports.to_vec(),
            band: (self.band.1 + 1, PRIORITY_MAX),
        }
    }

    /// `+ jitbot-lockdown-web1 Deny * from * to 10.0.1.4 port 22 at priority 200`.
    pub fn describe(&self, priority: u16) -> String {
        format!(
            "{} Deny * from * to {} port {} at priority {priority}",
            self.name(),
            self.destination,
            PortSet::of(self.ports)
        )
    }

    /// What to do in `nsg`, whose rules are `rules`.
    pub fn plan(&self, nsg: &str, rules: &[SecurityRule]) -> NsgPlan {
        let name = self.name();
        let existing = rules.iter().find(|r| r.name.eq_ignore_ascii_case(&name));
        let kept = existing
            .and_then(|r| u16::try_from(r.properties.priority).ok())
            .filter(|p| self.placed_well(*p, rules));
        let step = match (existing, kept) {
            (Some(r), Some(p)) if self.is_sound(r) => Step::InPlace { priority: p },
            (Some(r), kept) => Step::Replace {
                priority: kept.unwrap_or_else(|| self.first_free(rules)),
                was: format!(
                    "{} {} from {} to {} port {} at priority {}",
                    r.properties.access,
                    r.properties.protocol,
                    r.properties.source_addresses().join(","),
                    r.properties.destination_addresses().join(","),
                    r.properties.destination_ports().join(","),
                    r.properties.priority
                ),
            },
            (None, _) => Step::Create {
                priority: self.first_free(rules),
            },
        };
        let nsg_rules = NsgRules {
            id: nsg.to_string(),
            name: nsg_name(nsg).to_string(),
            rules: rules.iter().map(exposure_rule).collect(),
        };
        let before = i32::from(match &step {
            Step::InPlace { priority }
            | Step::Create { priority }
            | Step::Replace { priority, .. } => *priority,
        });
        let blockers =
            exposure::findings_reaching(&nsg_rules, &PortSet::of(self.ports), self.destination)
                .into_iter()
                .filter(|f| f.priority < before && !self.namespace.owns(&f.rule))
                .collect();
        NsgPlan {
            nsg: nsg.to_string(),
            step,
            blockers,
        }
    }

    /// Denies every protocol on (at least) the target's ports from any source and source port
    /// to (at least) its destination.
    fn is_sound(&self, r: &SecurityRule) -> bool {
        let p = &r.properties;
        p.is_inbound()
            && p.access.eq_ignore_ascii_case("Deny")
            && p.protocol == "*"
            && p.provisioning_state.as_deref() != Some("Failed")
            && AddressSet::parse(&p.source_addresses()).contains(&AddressSet::parse(&["*"]))
            && PortSet::parse_strict(&p.source_ports()).is_some_and(|s| s == PortSet::any())
            && PortSet::parse_strict(&p.destination_ports())
                .is_some_and(|s| s.contains(&PortSet::of(self.ports)))
            && AddressSet::parse(&p.destination_addresses())
                .contains(&AddressSet::parse(&[self.destination]))
    }

    /// After the band, with no rule jitbot does not own between the band and it.
    fn placed_well(&self, priority: u16, rules: &[SecurityRule]) -> bool {
        priority > self.band.1
            && !rules.iter().any(|r| {
                let p = r.properties.priority;
                r.properties.is_inbound()
                    && !self.namespace.owns(&r.name)
                    && p > i32::from(self.band.1)
                    && p < i32::from(priority)
            })
    }

    /// The first priority after the band no other inbound rule uses.
    fn first_free(&self, rules: &[SecurityRule]) -> u16 {
        let name = self.name();
        (self.band.1 + 1..=PRIORITY_MAX)
            .find(|p| {
                !rules.iter().any(|r| {
                    r.properties.is_inbound()
                        && !r.name.eq_ignore_ascii_case(&name)
                        && r.properties.priority == i32::from(*p)
                })
            })
            .unwrap_or(PRIORITY_MAX)
    }
}

/// Lines for people: the plan per NSG (`+` create, `~` replace, `=` in place) and any blocker.
pub fn plan_lines(b: &Baseline<'_>, plan: &NsgPlan) -> Vec<String> {
    let nsg = nsg_name(&plan.nsg);
    let mut out = vec![match &plan.step {
        Step::InPlace { priority } => format!("  {nsg}: = {} (in place)", b.describe(*priority)),
        Step::Create { priority } => format!("  {nsg}: + {}", b.describe(*priority)),
        Step::Replace { priority, was } => {
            format!("  {nsg}: ~ {} (was {was})", b.describe(*priority))
        }
    }];
    for f in &plan.blockers {
        out.push(format!(
            "  {nsg}: REFUSED: rule {} (priority {}, not jitbot's) lets {} reach port {} ahead of the Deny; remove or narrow it first{}",
            f.rule,
            f.priority,
            f.source.join(","),
            f.ports,
            f.label.map(|l| format!(" ({l})")).unwrap_or_default()
        ));
    }
    out
}

/// What `jitbot lockdown` did.
#[derive(Debug, Default)]
pub struct Report {
    /// For people: per target, per NSG, then a summary.
    pub lines: Vec<String>,
    /// Rules jitbot does not own that keep a port open ahead of a Deny (nothing was written).
    pub blockers: usize,
    /// Targets or NSGs that could not be read, and writes that failed.
    pub failures: usize,
    pub written: usize,
}

impl Report {
    /// 0: done (or a clean dry run); 1: refused or a write failed; 2: something unreadable.
    pub fn exit_code(&self) -> i32 {
        if self.failures > 0 {
            2
        } else {
            i32::from(self.blockers > 0)
        }
    }
}

/// Where a target's Deny goes: its destination and NSGs (a `vm` target is resolved now).
async fn locate(azure: &Azure, t: &Target) -> Result<(String, Vec<String>), String> {
    match &t.placement {
        Placement::Nsg { nsg, destination } => Ok((destination.clone(), vec![nsg.clone()])),
        Placement::Vm { id } => azure
            .inventory
            .resolve_vm(id)
            .await
            .map(|p| {
                let nsgs = p.nsgs.iter().map(|n| n.as_str().to_string()).collect();
                (p.private_ip.to_string(), nsgs)
            })
            .map_err(|e| e.to_string()),
    }
}

/// `jitbot lockdown`: plans every target's baseline in every NSG on its path and prints it;
/// with `apply`, writes what is missing or weakened — unless any blocker was found or anything
/// could not be read, then nothing at all is written.
pub async fn run(azure: &Azure, policy: &Policy, targets: &[&Target], apply: bool) -> Report {
    let mut report = Report::default();
    let mut todo = Vec::new();
    for t in targets {
        let (destination, nsgs) = match locate(azure, t).await {
            Ok(found) => found,
            Err(why) => {
                report.failures += 1;
                report
                    .lines
                    .push(format!("{}: cannot find it: {why}", t.name));
                continue;
            }
        };
        report.lines.push(format!(
            "{} ({destination}, port {}):",
            t.name,
            PortSet::of(&t.ports)
        ));
        for nsg in nsgs {
            let b = Baseline {
                target: &t.name,
                ports: &t.ports,
                band: t.priority_band,
                destination: &destination,
                namespace: &policy.namespace,
            };
            match azure.nsgs.list_rules(&nsg).await {
                Ok(rules) => {
                    let plan = b.plan(&nsg, &rules);
                    report.lines.extend(plan_lines(&b, &plan));
                    report.blockers += plan.blockers.len();
                    if plan.writes() {
                        todo.push((b.spec(), plan));
                    }
                }
                Err(e) => {
                    report.failures += 1;
                    report
                        .lines
                        .push(format!("  {}: cannot read it: {e}", nsg_name(&nsg)));
                }
            }
        }
    }
    let stop = report.blockers > 0 || report.failures > 0;
    if apply && !stop {
        for (spec, plan) in &todo {
            match azure
                .nsgs
                .restore_rule(&plan.nsg, spec, plan.priority())
                .await
            {
                Ok(applied) => {
                    report.written += 1;
                    report.lines.push(format!(
                        "wrote {} in {} at priority {}",
                        spec.name,
                        nsg_name(&plan.nsg),
                        applied.priority
                    ));
                }
                Err(e) => {
                    report.failures += 1;
                    report.lines.push(format!(
                        "FAILED to write {} in {}: {e}",
                        spec.name,
                        nsg_name(&plan.nsg)
                    ));
                }
            }
        }
    }
    report.lines.push(summary(&report, todo.len(), apply, stop));
    report
}

fn summary(report: &Report, to_write: usize, apply: bool, stop: bool) -> String {
    if report.blockers > 0 {
        format!(
            "refused: {} rule(s) jitbot does not own keep ports open ahead of the Deny; nothing was written",
            report.blockers
        )
    } else if report.failures > 0 && report.written == 0 && stop {
        format!("{} problem(s); nothing was written", report.failures)
    } else if !apply {
        format!("dry run: {to_write} rule(s) to write; run again with --apply to write them")
    } else {
        format!(
            "{} rule(s) written, {} failed; every other baseline was already in place",
            report.written, report.failures
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::SecurityRuleProperties;

    fn rule(name: &str, access: &str, priority: i32, source: &str, port: &str) -> SecurityRule {
        SecurityRule {
            name: name.into(),
            id: None,
            etag: None,
            resource_type: None,
            properties: SecurityRuleProperties {
                protocol: if access == "Deny" { "*" } else { "Tcp" }.into(),
                source_port_range: Some("*".into()),
                destination_port_range: Some(port.into()),
                source_address_prefix: Some(source.into()),
                destination_address_prefix: Some("10.0.1.4".into()),
                access: access.into(),
                priority,
                direction: "Inbound".into(),
                ..SecurityRuleProperties::default()
            },
        }
    }

    fn baseline(ns: &RulePrefix) -> Baseline<'_> {
        Baseline {
            target: "web1",
            ports: &[22],
            band: (100, 199),
            destination: "10.0.1.4",
            namespace: ns,
        }
    }

    #[test]
    fn the_deny_goes_right_after_the_band_or_the_next_free_number() {
        let ns = RulePrefix::default();
        let b = baseline(&ns);
        assert_eq!(b.plan("n", &[]).step, Step::Create { priority: 200 });
        let taken = [
            rule("ops-200", "Allow", 200, "10.9.0.0/16", "443"),
            rule("x", "Allow", 201, "10.9.0.0/16", "80"),
        ];
        assert_eq!(b.plan("n", &taken).step, Step::Create { priority: 202 });
        let spec = b.spec();
        assert_eq!(
            (spec.access, spec.protocol.as_str(), spec.source.as_str()),
            (Access::Deny, "*", "*")
        );
        assert_eq!(spec.band, (200, 4096));
    }

    #[test]
    fn a_sound_baseline_is_left_and_a_weakened_or_misplaced_one_is_replaced() {
        let ns = RulePrefix::default();
        let b = baseline(&ns);
        let sound = rule("jitbot-lockdown-web1", "Deny", 200, "*", "22");
        assert_eq!(
            b.plan("n", std::slice::from_ref(&sound)).step,
            Step::InPlace { priority: 200 }
        );
        let mut allow = sound.clone();
        allow.properties.access = "Allow".into();
        let mut narrow = sound.clone();
        narrow.properties.source_address_prefix = Some("198.51.100.0/24".into());
        let mut tcp_only = sound.clone();
        tcp_only.properties.protocol = "Tcp".into();
        let mut other_port = sound.clone();
        other_port.properties.destination_port_range = Some("3389".into());
        for weakened in [allow, narrow, tcp_only, other_port] {
            assert!(matches!(
                b.plan("n", &[weakened]).step,
                Step::Replace { priority: 200, .. }
            ));
        }
        // Moved behind someone else's rule: put back right after the band.
        let mut late = sound.clone();
        late.properties.priority = 4000;
        let others = [late, rule("ops", "Allow", 300, "10.9.0.0/16", "22")];
        assert!(matches!(
            b.plan("n", &others).step,
            Step::Replace { priority: 200, .. }
        ));
    }

    #[test]
    fn an_internet_allow_ahead_of_the_deny_that_jitbot_does_not_own_blocks_it() {
        let ns = RulePrefix::default();
        let b = baseline(&ns);
        let open = [
            rule("allow-ssh-any", "Allow", 150, "*", "22"),
            // After the Deny (shadowed), from a private range, jitbot's own: none blocks.
            rule("allow-ssh-late", "Allow", 300, "Internet", "22"),
            rule("allow-ssh-office", "Allow", 160, "198.51.100.0/24", "22"),
            rule("jitbot-req_7f3a9c01", "Allow", 101, "203.0.113.7", "22"),
        ];
        let plan = b.plan("n", &open);
        let names: Vec<&str> = plan.blockers.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(names, ["allow-ssh-any"]);
        let lines = plan_lines(&b, &plan).join("\n");
        assert!(
            lines.contains("REFUSED: rule allow-ssh-any (priority 150"),
            "{lines}"
        );
        // A higher-precedence Deny of someone else's covers it: no blocker.
        let covered = [rule("deny-ssh", "Deny", 140, "*", "22"), open[0].clone()];
        assert!(b.plan("n", &covered).blockers.is_empty());
    }
}
