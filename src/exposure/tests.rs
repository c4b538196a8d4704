//! Table tests of the exposure rules, written the way a firewall review reads a rule set.

use super::*;

const NSG: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/web-nsg";
const NSG2: &str = "/subscriptions/s/resourceGroups/net/providers/Microsoft.Network/networkSecurityGroups/subnet-nsg";
const VM: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web1";

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// An inbound TCP rule to any destination from any source port.
fn rule(name: &str, priority: i32, allow: bool, sources: &[&str], ports: &[&str]) -> Rule {
    Rule {
        name: name.into(),
        priority,
        inbound: true,
        allow,
        protocol: "Tcp".into(),
        sources: strs(sources),
        source_ports: strs(&["*"]),
        destinations: strs(&["*"]),
        ports: strs(ports),
    }
}

fn allow(priority: i32, sources: &[&str], ports: &[&str]) -> Rule {
    rule("r", priority, true, sources, ports)
}

fn deny(priority: i32, sources: &[&str], ports: &[&str]) -> Rule {
    rule(&format!("deny{priority}"), priority, false, sources, ports)
}

fn nsg(id: &str, rules: Vec<Rule>) -> NsgRules {
    NsgRules {
        id: id.into(),
        name: last_segment(id).into(),
        rules,
    }
}

fn vm(id: &str, ip: &str, nsgs: &[&str]) -> VmInput {
    VmInput {
        id: id.into(),
        name: last_segment(id).into(),
        path: Ok(VmAddress {
            ip: ip.parse().unwrap(),
            nsgs: strs(nsgs),
        }),
    }
}

fn mgmt() -> PortSet {
    ScanSettings::default().management_ports()
}

/// The finding for rule `r` in one NSG holding `rules`, seen from VM 10.0.1.4: its ports and
/// whether it reaches the VM; `None` when the rule is no finding.
fn verdict(rules: Vec<Rule>, ports: &PortSet) -> Option<(String, bool)> {
    let n = nsg(NSG, rules);
    let v = vm(VM, "10.0.1.4", &[NSG]);
    let Ok(addr) = &v.path else { unreachable!() };
    findings_in(&n, ports, &[(&v, addr)])
        .into_iter()
        .find(|f| f.rule == "r")
        .map(|f| (f.ports, !f.vms.is_empty()))
}

fn exposed(ports: &str) -> Option<(String, bool)> {
    Some((ports.to_string(), true))
}

type Edit = fn(&mut Rule);
/// The finding's ports and whether it reaches web1; `None`: no finding.
type Want = Option<(String, bool)>;
/// (case, sources, ports, change to the rule, verdict)
type ShapeRow = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    Edit,
    Want,
);

#[test]
fn allow_rule_shapes() {
    let rows: &[ShapeRow] = &[
        ("source *", &["*"], &["22"], |_| {}, exposed("22")),
        (
            "source Internet",
            &["Internet"],
            &["22"],
            |_| {},
            exposed("22"),
        ),
        (
            "source internet, any case",
            &["iNtErNeT"],
            &["22"],
            |_| {},
            exposed("22"),
        ),
        ("source Any", &["ANY"], &["3389"], |_| {}, exposed("3389")),
        (
            "source 0.0.0.0",
            &["0.0.0.0"],
            &["22"],
            |_| {},
            exposed("22"),
        ),
        (
            "source 0.0.0.0/0",
            &["0.0.0.0/0"],
            &["22"],
            |_| {},
            exposed("22"),
        ),
        ("source ::/0", &["::/0"], &["22"], |_| {}, exposed("22")),
        (
            "Internet among sourceAddressPrefixes",
            &["10.0.0.0/8", "0.0.0.0/0"],
            &["22"],
            |_| {},
            exposed("22"),
        ),
        (
            "a partner range",
            &["203.0.113.0/24"],
            &["22"],
            |_| {},
            None,
        ),
        (
            "a /1 is not the Internet",
            &["0.0.0.0/1"],
            &["22"],
            |_| {},
            None,
        ),
        ("VirtualNetwork", &["VirtualNetwork"], &["22"], |_| {}, None),
        (
            "AzureLoadBalancer",
            &["AzureLoadBalancer"],
            &["*"],
            |_| {},
            None,
        ),
        ("ports *", &["*"], &["*"], |_| {}, exposed("22, 3389")),
        (
            "port range over 22",
            &["*"],
            &["20-25"],
            |_| {},
            exposed("22"),
        ),
        (
            "port range over 3389",
            &["*"],
            &["3000-4000"],
            |_| {},
            exposed("3389"),
        ),
        (
            "port list",
            &["*"],
            &["80", "443", "3389"],
            |_| {},
            exposed("3389"),
        ),
        (
            "port list with both",
            &["*"],
            &["22", "3389"],
            |_| {},
            exposed("22, 3389"),
        ),
        ("web ports only", &["*"], &["80", "443"], |_| {}, None),
        ("23 is not 22", &["*"], &["23"], |_| {}, None),
        (
            "protocol *",
            &["*"],
            &["22"],
            |r| r.protocol = "*".into(),
            exposed("22"),
        ),
        (
            "protocol TCP",
            &["*"],
            &["22"],
            |r| r.protocol = "TCP".into(),
            exposed("22"),
        ),
        (
            "protocol Udp",
            &["*"],
            &["22"],
            |r| r.protocol = "Udp".into(),
            None,
        ),
        (
            "protocol Icmp",
            &["*"],
            &["*"],
            |r| r.protocol = "Icmp".into(),
            None,
        ),
        ("outbound", &["*"], &["22"], |r| r.inbound = false, None),
        (
            "a Deny is no finding",
            &["*"],
            &["22"],
            |r| r.allow = false,
            None,
        ),
        (
            "restricted source ports still expose",
            &["*"],
            &["22"],
            |r| r.source_ports = strs(&["1024-65535"]),
            exposed("22"),
        ),
        (
            "destination is another VM: a finding that does not reach web1",
            &["*"],
            &["22"],
            |r| r.destinations = strs(&["10.0.1.5"]),
            Some(("22".into(), false)),
        ),
        (
            "destination is web1's subnet",
            &["*"],
            &["22"],
            |r| r.destinations = strs(&["10.0.1.0/24"]),
            exposed("22"),
        ),
        (
            "destination VirtualNetwork reaches it",
            &["*"],
            &["22"],
            |r| r.destinations = strs(&["VirtualNetwork"]),
            exposed("22"),
        ),
        (
            "destination an application security group may reach it",
            &["*"],
            &["22"],
            |r| r.destinations = strs(&["asg:/subscriptions/s/asg/web"]),
            exposed("22"),
        ),
    ];
    for (name, sources, ports, edit, want) in rows {
        let mut r = allow(500, sources, ports);
        edit(&mut r);
        assert_eq!(&verdict(vec![r], &mgmt()), want, "{name}");
    }
}

#[test]
fn extra_management_ports_come_from_the_config() {
    let with_winrm = ScanSettings {
        ports: vec![5985, 5986],
    }
    .management_ports();
    let r = allow(500, &["*"], &["5986"]);
    assert_eq!(verdict(vec![r.clone()], &mgmt()), None);
    assert_eq!(verdict(vec![r], &with_winrm), exposed("5986"));
    assert_eq!(
        verdict(vec![allow(500, &["*"], &["*"])], &with_winrm),
        exposed("22, 3389, 5985-5986")
    );
}

#[test]
fn higher_precedence_denies() {
    type Denies = fn() -> Vec<Rule>;
    type Row = (
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        Denies,
        Want,
    );
    let rows: &[Row] = &[
        ("no deny", &["*"], &["22"], Vec::new, exposed("22")),
        (
            "deny * on 22 first",
            &["*"],
            &["22"],
            || vec![deny(100, &["*"], &["22"])],
            None,
        ),
        (
            "deny after the allow does nothing",
            &["*"],
            &["22"],
            || vec![deny(600, &["*"], &["22"])],
            exposed("22"),
        ),
        (
            "deny Internet covers *",
            &["*"],
            &["22"],
            || vec![deny(100, &["Internet"], &["22"])],
            None,
        ),
        (
            "deny * covers Internet",
            &["Internet"],
            &["22"],
            || vec![deny(100, &["*"], &["22"])],
            None,
        ),
        (
            "deny 0.0.0.0/0 leaves IPv6 open",
            &["*"],
            &["22"],
            || vec![deny(100, &["0.0.0.0/0"], &["22"])],
            exposed("22"),
        ),
        (
            "deny 0.0.0.0/0 covers an IPv4-only allow",
            &["0.0.0.0/0"],
            &["22"],
            || vec![deny(100, &["0.0.0.0/0"], &["22"])],
            None,
        ),
        (
            "denies of both families together",
            &["*"],
            &["22"],
            || {
                vec![
                    deny(100, &["0.0.0.0/0"], &["22"]),
                    deny(110, &["::/0"], &["22"]),
                ]
            },
            None,
        ),
        (
            "deny on 22 leaves 3389",
            &["*"],
            &["*"],
            || vec![deny(100, &["*"], &["22"])],
            exposed("3389"),
        ),
        (
            "deny range covering 22",
            &["*"],
            &["22"],
            || vec![deny(100, &["*"], &["20-30"])],
            None,
        ),
        (
            "two denies split the ports",
            &["*"],
            &["22", "3389"],
            || vec![deny(100, &["*"], &["22"]), deny(101, &["*"], &["3389"])],
            None,
        ),
        (
            "deny from a partner range does not cover the Internet",
            &["*"],
            &["22"],
            || vec![deny(100, &["203.0.113.0/24"], &["22"])],
            exposed("22"),
        ),
        (
            "deny for Udp does not block TCP",
            &["*"],
            &["22"],
            || {
                let mut d = deny(100, &["*"], &["22"]);
                d.protocol = "Udp".into();
                vec![d]
            },
            exposed("22"),
        ),
        (
            "deny * protocol blocks TCP",
            &["*"],
            &["22"],
            || {
                let mut d = deny(100, &["*"], &["22"]);
                d.protocol = "*".into();
                vec![d]
            },
            None,
        ),
        (
            "deny with restricted source ports blocks only some",
            &["*"],
            &["22"],
            || {
                let mut d = deny(100, &["*"], &["22"]);
                d.source_ports = strs(&["1024-65535"]);
                vec![d]
            },
            exposed("22"),
        ),
        (
            "deny to web1's address protects web1 but not the rule's other targets",
            &["*"],
            &["22"],
            || {
                let mut d = deny(100, &["*"], &["22"]);
                d.destinations = strs(&["10.0.1.4"]);
                vec![d]
            },
            Some(("22".into(), false)),
        ),
        (
            "deny to web1's subnet: the rule still opens 22 elsewhere, not to web1",
            &["*"],
            &["22"],
            || {
                let mut d = deny(100, &["*"], &["22"]);
                d.destinations = strs(&["10.0.1.0/24"]);
                vec![d]
            },
            Some(("22".into(), false)),
        ),
        (
            "deny to a service tag blocks nothing certain",
            &["*"],
            &["22"],
            || {
                let mut d = deny(100, &["*"], &["22"]);
                d.destinations = strs(&["VirtualNetwork"]);
                vec![d]
            },
            exposed("22"),
        ),
        (
            "outbound deny",
            &["*"],
            &["22"],
            || {
                let mut d = deny(100, &["*"], &["22"]);
                d.inbound = false;
                vec![d]
            },
            exposed("22"),
        ),
        (
            "an unreadable deny port list blocks nothing",
            &["*"],
            &["22"],
            || vec![deny(100, &["*"], &["ssh"])],
            exposed("22"),
        ),
        (
            "a higher-precedence allow does not cover",
            &["*"],
            &["22"],
            || vec![rule("first", 100, true, &["203.0.113.7"], &["22"])],
            exposed("22"),
        ),
    ];
    for (name, sources, ports, denies, want) in rows {
        let mut rules = denies();
        rules.push(allow(500, sources, ports));
        assert_eq!(&verdict(rules, &mgmt()), want, "{name}");
    }
}

#[test]
fn a_deny_in_another_nsg_does_not_cover() {
    let a = nsg(NSG, vec![allow(500, &["*"], &["22"])]);
    let b = nsg(NSG2, vec![deny(100, &["*"], &["22"])]);
    let v = vm(VM, "10.0.1.4", &[NSG2, NSG]);
    let report = scan(&[a, b], &[v], &[], &mgmt(), "jitbot-");
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].nsg_name, "web-nsg");
    assert_eq!(report.findings[0].vms, [VM]);
}

#[test]
fn defender_rules_are_labelled() {
    assert_eq!(
        defender_label("SecurityCenter-JITRule_123_abc"),
        Some("Defender for Cloud JIT rule")
    );
    assert_eq!(
        defender_label("MicrosoftDefenderForCloud-JITRule_-1_5B2A"),
        Some("Defender for Cloud JIT rule")
    );
    assert_eq!(
        defender_label("securitycenter-jitrule-x"),
        Some("Defender for Cloud JIT rule")
    );
    assert_eq!(defender_label("jitbot-lockdown-web1"), None);
    let mut r = allow(100, &["*"], &["22"]);
    r.name = "SecurityCenter-JITRule_-123_ABC".into();
    let findings = findings_in(&nsg(NSG, vec![r]), &mgmt(), &[]);
    assert_eq!(findings[0].label, Some("Defender for Cloud JIT rule"));
}

#[test]
fn the_baseline_name_is_made_in_one_place() {
    assert_eq!(
        baseline_rule_name("jitbot-", "web1"),
        "jitbot-lockdown-web1"
    );
    assert_eq!(
        baseline_rule_name("acme-jit-", "db"),
        "acme-jit-lockdown-db"
    );
}

fn target(name: &str, ports: &[u16], nsg: Option<&str>, destination: Option<&str>) -> ScanTarget {
    ScanTarget {
        name: name.into(),
        ports: ports.to_vec(),
        vm: None,
        nsg: nsg.map(str::to_string),
        destination: destination.map(str::to_string),
    }
}

fn baseline(target: &str, priority: i32, ports: &[&str], dest: &str) -> Rule {
    let mut r = rule(
        &baseline_rule_name("jitbot-", target),
        priority,
        false,
        &["*"],
        ports,
    );
    r.destinations = strs(&[dest]);
    r
}

fn group_of(nsgs: Vec<NsgRules>, v: VmInput, targets: &[ScanTarget]) -> (Group, Vec<String>) {
    let report = scan(&nsgs, &[v], targets, &mgmt(), "jitbot-");
    let r = &report.vms[0];
    (r.group, r.reasons.clone())
}

#[test]
fn a_locked_down_target_is_configured() {
    let t = target("web1", &[22], Some(NSG), Some("10.0.1.4"));
    let n = nsg(NSG, vec![baseline("web1", 200, &["22"], "10.0.1.4")]);
    let (g, reasons) = group_of(vec![n], vm(VM, "10.0.1.4", &[NSG]), &[t]);
    assert_eq!((g, reasons), (Group::Configured, vec![]));
}

#[test]
fn vm_targets_match_by_id_in_any_case() {
    let t = ScanTarget {
        vm: Some(VM.to_uppercase()),
        ..target("web1", &[22], None, None)
    };
    let n = nsg(NSG, vec![baseline("web1", 200, &["22"], "10.0.1.4")]);
    let (g, _) = group_of(vec![n], vm(VM, "10.0.1.4", &[NSG]), &[t]);
    assert_eq!(g, Group::Configured);
}

#[test]
fn not_configured_says_why() {
    let t = target("web1", &[22, 3389], Some(NSG), Some("10.0.1.0/24"));
    type Case = (&'static str, fn() -> Vec<NsgRules>, &'static [&'static str]);
    let cases: &[Case] = &[
        (
            "no baseline",
            || vec![nsg(NSG, vec![]), nsg(NSG2, vec![])],
            &[
                "no baseline jitbot-lockdown-web1 in subnet-nsg (run `jitbot lockdown web1`)",
                "no baseline jitbot-lockdown-web1 in web-nsg (run `jitbot lockdown web1`)",
            ],
        ),
        (
            "baseline in the NIC's NSG only",
            || {
                vec![
                    nsg(
                        NSG,
                        vec![baseline("web1", 200, &["22", "3389"], "10.0.1.4")],
                    ),
                    nsg(NSG2, vec![]),
                ]
            },
            &["no baseline jitbot-lockdown-web1 in subnet-nsg (run `jitbot lockdown web1`)"],
        ),
        (
            "baseline missing a port",
            || {
                vec![
                    nsg(NSG, vec![baseline("web1", 200, &["22"], "10.0.1.4")]),
                    nsg(
                        NSG2,
                        vec![baseline("web1", 200, &["22", "3389"], "10.0.1.4")],
                    ),
                ]
            },
            &["no baseline jitbot-lockdown-web1 in web-nsg (run `jitbot lockdown web1`)"],
        ),
        (
            "baseline to another address",
            || {
                vec![
                    nsg(NSG, vec![baseline("web1", 200, &["*"], "10.0.1.4")]),
                    nsg(NSG2, vec![baseline("web1", 200, &["*"], "10.0.1.5")]),
                ]
            },
            &["no baseline jitbot-lockdown-web1 in subnet-nsg (run `jitbot lockdown web1`)"],
        ),
        (
            "baseline turned into an Allow",
            || {
                let mut b = baseline("web1", 200, &["22", "3389"], "10.0.1.4");
                b.allow = true;
                b.sources = strs(&["203.0.113.7"]);
                vec![
                    nsg(NSG, vec![b]),
                    nsg(NSG2, vec![baseline("web1", 200, &["*"], "*")]),
                ]
            },
            &["no baseline jitbot-lockdown-web1 in web-nsg (run `jitbot lockdown web1`)"],
        ),
        (
            "locked down but an older rule ahead of the baseline exposes 22",
            || {
                vec![
                    nsg(
                        NSG,
                        vec![
                            rule("legacy-ssh", 150, true, &["Internet"], &["22"]),
                            baseline("web1", 200, &["22", "3389"], "10.0.1.4"),
                        ],
                    ),
                    nsg(
                        NSG2,
                        vec![baseline("web1", 200, &["22", "3389"], "10.0.1.4")],
                    ),
                ]
            },
            &["rule legacy-ssh (priority 150) in web-nsg exposes port 22 to the Internet"],
        ),
    ];
    for (name, nsgs, want) in cases {
        let (g, reasons) = group_of(
            nsgs(),
            vm(VM, "10.0.1.4", &[NSG2, NSG]),
            std::slice::from_ref(&t),
        );
        assert_eq!(g, Group::NotConfigured, "{name}");
        assert_eq!(reasons, *want, "{name}");
    }
}

#[test]
fn a_vm_no_target_covers_is_not_a_target() {
    let elsewhere = target("db", &[22], Some(NSG), Some("10.0.9.0/24"));
    let other_nsg = target("app", &[22], Some(NSG2), Some("10.0.1.4"));
    let exposed_too = nsg(NSG, vec![allow(300, &["*"], &["3389"])]);
    let (g, reasons) = group_of(
        vec![exposed_too],
        vm(VM, "10.0.1.4", &[NSG]),
        &[elsewhere, other_nsg],
    );
    assert_eq!(g, Group::NotConfigured);
    assert_eq!(
        reasons,
        [
            "not a jitbot target",
            "rule r (priority 300) in web-nsg exposes port 3389 to the Internet"
        ]
    );
}

#[test]
fn unsupported_vms_keep_their_reason_and_every_vm_is_in_one_group() {
    let bad = VmInput {
        id: "vm/odd".into(),
        name: "odd".into(),
        path: Err("no NSG on its path".into()),
    };
    let t = target("web1", &[22], Some(NSG), Some("10.0.1.4"));
    let n = nsg(NSG, vec![baseline("web1", 200, &["22"], "10.0.1.4")]);
    let vms = vec![
        bad,
        vm(VM, "10.0.1.4", &[NSG]),
        vm("vm/other", "10.0.1.9", &[NSG]),
    ];
    let report = scan(&[n], &vms, &[t], &mgmt(), "jitbot-");
    let groups: Vec<(&str, Group)> = report
        .vms
        .iter()
        .map(|v| (v.name.as_str(), v.group))
        .collect();
    assert_eq!(
        groups,
        [
            ("other", Group::NotConfigured),
            ("odd", Group::Unsupported),
            ("web1", Group::Configured)
        ]
    );
    assert_eq!(report.vms[1].reasons, ["no NSG on its path"]);
    let counts = group_counts(&report);
    assert_eq!(counts.values().sum::<usize>(), 3);
}

#[test]
fn an_unattached_nsg_still_has_findings_without_vms() {
    let report = scan(
        &[nsg(NSG, vec![allow(100, &["*"], &["*"])])],
        &[],
        &[],
        &mgmt(),
        "jitbot-",
    );
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].ports, "22, 3389");
    assert!(report.findings[0].vms.is_empty());
}

#[test]
fn a_deny_covering_the_whole_destination_ends_the_finding() {
    let mut a = allow(500, &["*"], &["22"]);
    a.destinations = strs(&["10.0.1.0/24"]);
    let mut d = deny(100, &["*"], &["*"]);
    d.destinations = strs(&["10.0.0.0/16"]);
    assert_eq!(verdict(vec![d, a], &mgmt()), None);
}
