//! Scan benchmark: `jitbot scan`'s work over a large emulated subscription, through the real ARM
//! client (Entra emulator for tokens, ARM's default throttling left on).
//!
//! ```text
//! cargo bench --bench scan                                     # 2,000 VMs, 100 per list page
//! JITBOT_BENCH_VMS=10000 JITBOT_BENCH_PAGE=1000 cargo bench --bench scan
//! ```
//!
//! The subscription is a realistic mix: 20 resource groups, each with a virtual network of four
//! subnets; half the subnets carry an NSG; three VMs in five have an NSG of their own (shared per
//! resource group and tier), one in twenty has neither (unsupported); every NSG holds about eight
//! customer rules, and one resource group in four has an SSH rule open to the Internet. A tenth
//! of the VMs are jitbot targets with their baseline. Reported: wall time of the scan, ARM reads
//! in total and per VM, and the groups (so runs can be compared). Also the cost of resolving
//! VMs one by one (`resolve_vm`, as `check --live` and the worker do) for a sample.

use std::fmt::Write as _;
use std::time::Instant;

use jitbot::azure::{AzureOverrides, AzureSettings, Backend, Scope, connect};
use jitbot::exposure::{ScanSettings, ScanTarget, baseline_rule_name};
use jitbot_sim::arm::{ArmSim, ArmSimOptions, SecurityRule, SecurityRuleProperties};
use jitbot_sim::entra::EntraSim;

const SUB: &str = "/subscriptions/11111111-2222-3333-4444-555555555555";
const LOC: &str = "westeurope";
const GROUPS: usize = 20;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rule(
    name: &str,
    priority: i32,
    access: &str,
    source: &str,
    ports: &str,
    dest: &str,
) -> SecurityRule {
    SecurityRule {
        name: name.into(),
        id: None,
        etag: None,
        resource_type: None,
        properties: SecurityRuleProperties {
            protocol: "Tcp".into(),
            source_port_range: Some("*".into()),
            destination_port_range: Some(ports.into()),
            source_address_prefix: Some(source.into()),
            destination_address_prefix: Some(dest.into()),
            access: access.into(),
            priority,
            direction: "Inbound".into(),
            ..SecurityRuleProperties::default()
        },
    }
}

/// Eight ordinary customer rules, plus an SSH rule open to the Internet when `exposed`.
fn customer_rules(sim: &ArmSim, nsg: &str, exposed: bool) {
    let rows = [
        ("allow-https", 1000, "Allow", "*", "443"),
        ("allow-http", 1010, "Allow", "*", "80"),
        ("allow-lb", 1020, "Allow", "AzureLoadBalancer", "*"),
        ("allow-mon", 1030, "Allow", "10.100.0.0/16", "9100"),
        ("allow-bastion", 1040, "Allow", "10.200.0.0/26", "22"),
        ("allow-app", 1050, "Allow", "VirtualNetwork", "8080-8090"),
        ("deny-smb", 1060, "Deny", "*", "445"),
        ("allow-partner", 1070, "Allow", "203.0.113.0/24", "3389"),
    ];
    for (name, prio, access, source, ports) in rows {
        sim.put_existing_rule(nsg, rule(name, prio, access, source, ports, "*"));
    }
    if exposed {
        sim.put_existing_rule(nsg, rule("legacy-ssh", 900, "Allow", "Internet", "22", "*"));
    }
}

/// Builds the subscription; returns the targets (one VM in ten).
fn build(sim: &ArmSim, vms: usize) -> Vec<ScanTarget> {
    let mut targets = Vec::new();
    for g in 0..GROUPS {
        let rg = format!("{SUB}/resourceGroups/rg{g}");
        let vnet = format!("{rg}/providers/Microsoft.Network/virtualNetworks/vnet{g}");
        let prefixes: Vec<(String, String)> = (0..4)
            .map(|s| (format!("s{s}"), format!("10.{g}.{s}.0/24")))
            .collect();
        let refs: Vec<(&str, &str)> = prefixes
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let subnets = sim.add_vnet(&vnet, LOC, &refs);
        for (s, subnet) in subnets.iter().enumerate().filter(|(s, _)| s % 2 == 0) {
            let nsg =
                format!("{rg}/providers/Microsoft.Network/networkSecurityGroups/subnet{s}-nsg");
            sim.add_nsg(&nsg, LOC);
            customer_rules(sim, &nsg, g % 4 == 0);
            sim.attach_nsg_to_subnet(subnet, Some(&nsg));
        }
        for tier in 0..3 {
            let nsg =
                format!("{rg}/providers/Microsoft.Network/networkSecurityGroups/tier{tier}-nsg");
            sim.add_nsg(&nsg, LOC);
            customer_rules(sim, &nsg, false);
        }
    }
    for i in 0..vms {
        let g = i % GROUPS;
        let rg = format!("{SUB}/resourceGroups/rg{g}");
        let s = (i / GROUPS) % 4;
        let subnet =
            format!("{rg}/providers/Microsoft.Network/virtualNetworks/vnet{g}/subnets/s{s}");
        let ip = format!("10.{g}.{s}.{}", 4 + (i / (GROUPS * 4)) % 250);
        let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm{i}");
        let nic = sim.add_simple_vm(&vm, LOC, &subnet, &ip);
        let nic_nsg = format!(
            "{rg}/providers/Microsoft.Network/networkSecurityGroups/tier{}-nsg",
            i % 3
        );
        let has_subnet_nsg = s.is_multiple_of(2);
        if i % 5 < 3 && i % 20 != 19 {
            sim.attach_nsg_to_nic(&nic, Some(&nic_nsg));
        } else if !has_subnet_nsg && i % 20 != 19 {
            // Keep VMs without any NSG at about one in twenty.
            sim.attach_nsg_to_nic(&nic, Some(&nic_nsg));
        }
        if i % 10 == 0 && i % 5 < 3 {
            let name = format!("vm{i}");
            sim.put_existing_rule(
                &nic_nsg,
                rule(
                    &baseline_rule_name("jitbot-", &name),
                    4000 - (i / 10 % 3000) as i32,
                    "Deny",
                    "*",
                    "22",
                    &ip,
                ),
            );
            targets.push(ScanTarget {
                name,
                ports: vec![22],
                vm: Some(vm),
                nsg: None,
                destination: None,
            });
        }
    }
    targets
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jitbot::install_crypto();
    let vms = env_num("JITBOT_BENCH_VMS", 2000);
    let page = env_num("JITBOT_BENCH_PAGE", 100);
    let sim = ArmSim::start(ArmSimOptions {
        list_page_size: page,
        ..ArmSimOptions::default()
    })
    .await?;
    let entra = EntraSim::start("tenant-1", "client-1", "s3cret", 3599).await?;
    let built = Instant::now();
    let targets = build(&sim, vms);
    let build_time = built.elapsed();
    let mut settings = AzureSettings::with_backend(Backend::Arm);
    settings.arm_endpoint = url::Url::parse(&sim.base_url)?;
    let azure = connect(
        &settings,
        AzureOverrides {
            credential_factory: Some(entra.credential_factory("s3cret")),
            ..Default::default()
        },
    )
    .await?;
    let scope = Scope::parse(SUB).map_err(anyhow::Error::msg)?;
    let mgmt = ScanSettings::default().management_ports();

    let before = sim.requests().len();
    let started = Instant::now();
    let report = jitbot::scan::scan(
        &azure.inventory,
        std::slice::from_ref(&scope),
        &targets,
        &mgmt,
        "jitbot-",
    )
    .await?;
    let scan_time = started.elapsed();
    let reads = sim.requests().len() - before;
    let summary = jitbot::scan::Summary::of(&report, &[scope]);

    let sample = 100.min(vms);
    let before = sim.requests().len();
    let started = Instant::now();
    for i in 0..sample {
        let vm = format!(
            "{SUB}/resourceGroups/rg{}/providers/Microsoft.Compute/virtualMachines/vm{i}",
            i % GROUPS
        );
        let _ = azure.inventory.resolve_vm(&vm).await;
    }
    let resolve_time = started.elapsed();
    let resolve_reads = sim.requests().len() - before;

    let mut out = String::new();
    writeln!(
        out,
        "scan benchmark: {vms} VMs, {} findings, list page size {page}",
        report.findings.len()
    )?;
    writeln!(out, "  world built in {:.2?} (emulator only)", build_time)?;
    writeln!(
        out,
        "  scan: {:.2?} wall, {reads} ARM reads = {:.3} reads per VM",
        scan_time,
        reads as f64 / vms as f64
    )?;
    writeln!(out, "  groups: {}", summary.line())?;
    writeln!(
        out,
        "  resolve_vm one by one ({sample} VMs): {:.2?} wall, {:.2} reads per VM",
        resolve_time,
        resolve_reads as f64 / sample as f64
    )?;
    print!("{out}");
    Ok(())
}
