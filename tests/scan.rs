//! `jitbot scan` and `jitbot check --live`: the real binary against the ARM emulator, configured
//! as an operator would (backend `arm` at the emulator's address, the Azure CLI credential played
//! by a fake `az` on the child's PATH). Assertions are on the exit code and what it printed.

use std::path::PathBuf;
use std::process::Stdio;

use jitbot_sim::arm::{ArmSim, ArmSimOptions, Fault, On, SecurityRule, SecurityRuleProperties};
use serde_json::Value;
use tokio::process::Command;

const SUB: &str = "/subscriptions/11111111-2222-3333-4444-555555555555";
const LOC: &str = "westeurope";

/// A fake Azure CLI: `az account get-access-token -o json --scope …` prints a token.
const FAKE_AZ: &str = r#"#!/bin/sh
case "$*" in
  *"account get-access-token"*)
    exp=$(( $(date +%s) + 3600 ))
    printf '{"accessToken":"az-cli-token-%s","expiresOn":"2030-01-01 00:00:00.000000","expires_on":%s,"subscription":"11111111-2222-3333-4444-555555555555","tenant":"tenant-1","tokenType":"Bearer"}\n' "$$" "$exp"
    ;;
  *) echo "fake az: unsupported: $*" >&2; exit 2 ;;
esac
"#;

fn id(rg: &str, kind: &str, name: &str) -> String {
    format!("{SUB}/resourceGroups/{rg}/providers/{kind}/{name}")
}

fn nsg(rg: &str, name: &str) -> String {
    id(rg, "Microsoft.Network/networkSecurityGroups", name)
}

fn vm(name: &str) -> String {
    id("app", "Microsoft.Compute/virtualMachines", name)
}

/// An inbound rule as a customer would have made it in the portal.
fn rule(
    name: &str,
    priority: i32,
    access: &str,
    edit: impl FnOnce(&mut SecurityRuleProperties),
) -> SecurityRule {
    let mut properties = SecurityRuleProperties {
        protocol: "Tcp".into(),
        source_port_range: Some("*".into()),
        destination_port_range: Some("22".into()),
        source_address_prefix: Some("*".into()),
        destination_address_prefix: Some("*".into()),
        access: access.into(),
        priority,
        direction: "Inbound".into(),
        ..SecurityRuleProperties::default()
    };
    edit(&mut properties);
    SecurityRule {
        name: name.into(),
        id: None,
        etag: None,
        resource_type: None,
        properties,
    }
}

/// The baseline `jitbot lockdown` makes: Deny the target's ports from anywhere to the VM.
fn baseline(target: &str, ip: &str, priority: i32) -> SecurityRule {
    rule(
        &format!("jitbot-lockdown-{target}"),
        priority,
        "Deny",
        |p| {
            p.protocol = "*".into();
            p.destination_address_prefix = Some(ip.into());
        },
    )
}

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    sim: ArmSim,
    config: PathBuf,
    nic_nsg: String,
    subnet_nsg: String,
}

/// The world every test starts from (two list items per page, so every list pages):
/// - `web1`: subnet `b` (no NSG), NIC NSG `nic-nsg` only; target `web1`, locked down.
/// - `web2`: subnet `a` (NSG `subnet-nsg`), no NIC NSG; no target.
/// - `web3`: subnet `a` and NIC NSG `nic-nsg` (both).
/// - `db1`: subnet `b`, no NIC NSG: nothing on its path.
async fn world() -> World {
    jitbot::install_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("az"), FAKE_AZ).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("az"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let sim = ArmSim::start(ArmSimOptions {
        list_page_size: 2,
        ..ArmSimOptions::default()
    })
    .await
    .unwrap();
    sim.set_accepted_token_prefix(Some("az-cli-token-"));
    let (nic_nsg, subnet_nsg) = (nsg("app", "nic-nsg"), nsg("net", "subnet-nsg"));
    sim.add_nsg(&nic_nsg, LOC);
    sim.add_nsg(&subnet_nsg, LOC);
    let vnet = id("net", "Microsoft.Network/virtualNetworks", "vnet1");
    let subnets = sim.add_vnet(&vnet, LOC, &[("a", "10.0.1.0/24"), ("b", "10.0.2.0/24")]);
    sim.attach_nsg_to_subnet(&subnets[0], Some(&subnet_nsg));
    let web1 = sim.add_simple_vm(&vm("web1"), LOC, &subnets[1], "10.0.2.4");
    sim.attach_nsg_to_nic(&web1, Some(&nic_nsg));
    sim.add_simple_vm(&vm("web2"), LOC, &subnets[0], "10.0.1.5");
    let web3 = sim.add_simple_vm(&vm("web3"), LOC, &subnets[0], "10.0.1.6");
    sim.attach_nsg_to_nic(&web3, Some(&nic_nsg));
    sim.add_simple_vm(&vm("db1"), LOC, &subnets[1], "10.0.2.9");
    sim.put_existing_rule(&nic_nsg, baseline("web1", "10.0.2.4", 200));
    let config = dir.join("jitbot.toml");
    std::fs::write(&config, config_text(&sim.base_url, &nic_nsg, "")).unwrap();
    World {
        _tmp: tmp,
        dir,
        sim,
        config,
        nic_nsg,
        subnet_nsg,
    }
}

fn config_text(arm: &str, nsg: &str, extra: &str) -> String {
    format!(
        r#"
[azure]
backend = "arm"
arm_endpoint = "{arm}"
credential = "azure_cli"
request_timeout = "5s"
retry_budget = "3s"

[slack]
audit_channel = "C0AUDIT"

[people.alice]
slack = "U0ALICE"

[targets.web1]
nsg = "{nsg}"
destination = "10.0.2.4"
ports = [22]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
requesters = ["*"]
approvers = ["alice"]
approval_channel.slack = "C0APPROVALS"
priority_range = [100, 199]
{extra}
"#
    )
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

impl World {
    async fn jitbot(&self, args: &[&str]) -> Run {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(env!("CARGO_BIN_EXE_jitbot"))
            .args(args)
            .env("PATH", path)
            .env_remove("JITBOT_CONFIG")
            .env_remove("SLACK_SIGNING_SECRET")
            .env_remove("SLACK_BOT_TOKEN")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run jitbot");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn scan(&self, extra: &[&str]) -> Run {
        let config = self.config.display().to_string();
        let mut args = vec!["scan", "--config", &config];
        args.extend(extra);
        self.jitbot(&args).await
    }
}

fn group_of<'a>(report: &'a Value, name: &str) -> (&'a str, Vec<String>) {
    let v = report["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no VM {name} in {report}"));
    let reasons = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    (v["group"].as_str().unwrap(), reasons)
}

fn finding_rules(report: &Value) -> Vec<String> {
    let mut names: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn every_vm_lands_in_one_group_and_nothing_exposed_exits_0() {
    let w = world().await;
    let run = w.scan(&["--format", "json"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(group_of(&report, "web1"), ("configured", vec![]));
    let (g, reasons) = group_of(&report, "web2");
    assert_eq!(g, "not_configured");
    assert_eq!(reasons, ["not a jitbot target"]);
    assert_eq!(group_of(&report, "web3").0, "not_configured");
    let (g, reasons) = group_of(&report, "db1");
    assert_eq!(g, "unsupported");
    assert!(reasons[0].contains("no NSG on its path"), "{reasons:?}");
    assert_eq!(report["summary"]["vms"], 4);
    assert_eq!(report["findings"], Value::Array(vec![]));
    // web3's path is the subnet's NSG, then the NIC's.
    let web3 = report["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web3")
        .unwrap();
    assert_eq!(web3["nsgs"], serde_json::json!(["subnet-nsg", "nic-nsg"]));
    // Four VMs at two a page: the VM list took two pages, and every list was read by nextLink.
    let vm_pages = w
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == format!("{SUB}/providers/Microsoft.Compute/virtualMachines"))
        .count();
    assert_eq!(vm_pages, 2);
    assert!(
        w.sim.requests().iter().all(|r| r.method == "GET"),
        "a scan only reads"
    );
}

#[tokio::test]
async fn every_rule_shape_is_found_unless_a_deny_covers_it() {
    let w = world().await;
    let exposing = [
        rule("single-22", 300, "Allow", |_| {}),
        rule("range-3389", 301, "Allow", |p| {
            p.destination_port_range = Some("3000-4000".into())
        }),
        rule("list", 302, "Allow", |p| {
            p.destination_port_range = None;
            p.destination_port_ranges = Some(vec!["80".into(), "443".into(), "3389".into()]);
        }),
        rule("all-ports", 303, "Allow", |p| {
            p.destination_port_range = Some("*".into())
        }),
        rule("internet-lower", 304, "Allow", |p| {
            p.source_address_prefix = Some("internet".into())
        }),
        rule("any-source", 305, "Allow", |p| {
            p.source_address_prefix = Some("Any".into())
        }),
        rule("zeros", 306, "Allow", |p| {
            p.source_address_prefix = Some("0.0.0.0/0".into())
        }),
        rule("prefix-list", 307, "Allow", |p| {
            p.source_address_prefix = None;
            p.source_address_prefixes = Some(vec!["10.0.0.0/8".into(), "0.0.0.0/0".into()]);
        }),
        rule("v6", 308, "Allow", |p| {
            p.source_address_prefix = Some("::/0".into())
        }),
        rule("proto-any", 309, "Allow", |p| p.protocol = "*".into()),
        rule("SecurityCenter-JITRule_-1_ABC", 310, "Allow", |_| {}),
    ];
    let harmless = [
        rule("partner", 320, "Allow", |p| {
            p.source_address_prefix = Some("203.0.113.0/24".into())
        }),
        rule("udp", 321, "Allow", |p| p.protocol = "Udp".into()),
        rule("web", 322, "Allow", |p| {
            p.destination_port_range = Some("443".into())
        }),
        rule("outbound", 323, "Allow", |p| {
            p.direction = "Outbound".into()
        }),
    ];
    for r in exposing.into_iter().chain(harmless) {
        w.sim.put_existing_rule(&w.subnet_nsg, r);
    }
    // In the NIC's NSG: an allow behind a Deny of higher precedence (covered), and one in front.
    w.sim.put_existing_rule(
        &w.nic_nsg,
        rule("deny-first", 150, "Deny", |p| {
            p.source_address_prefix = Some("Internet".into())
        }),
    );
    w.sim
        .put_existing_rule(&w.nic_nsg, rule("covered", 400, "Allow", |_| {}));
    w.sim.put_existing_rule(
        &w.nic_nsg,
        rule("ahead", 140, "Allow", |p| {
            p.destination_port_range = Some("3389".into())
        }),
    );

    let run = w.scan(&["--format", "json"]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let report = run.json();
    let mut want: Vec<String> = [
        "SecurityCenter-JITRule_-1_ABC",
        "ahead",
        "all-ports",
        "any-source",
        "internet-lower",
        "list",
        "prefix-list",
        "proto-any",
        "range-3389",
        "single-22",
        "v6",
        "zeros",
    ]
    .map(String::from)
    .to_vec();
    want.sort();
    assert_eq!(finding_rules(&report), want);
    let f = |rule: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["rule"] == rule)
            .unwrap()
            .clone()
    };
    assert_eq!(f("all-ports")["ports"], "22, 3389");
    assert_eq!(f("list")["ports"], "3389");
    assert_eq!(
        f("SecurityCenter-JITRule_-1_ABC")["label"],
        "Defender for Cloud JIT rule"
    );
    assert_eq!(f("single-22")["nsg"], w.subnet_nsg.as_str());
    assert_eq!(f("single-22")["priority"], 300);
    assert_eq!(f("single-22")["source"], serde_json::json!(["*"]));
    // The subnet's rules reach web2 and web3 (subnet a), not web1 (subnet b).
    assert_eq!(
        f("single-22")["vms"],
        serde_json::json!([vm("web2"), vm("web3")])
    );
    // web1 is locked down, but `ahead` sits in front of its baseline: not configured, and why.
    let (g, reasons) = group_of(&report, "web1");
    assert_eq!(g, "not_configured");
    assert_eq!(
        reasons,
        ["rule ahead (priority 140) in nic-nsg exposes port 3389 to the Internet"]
    );
}

#[tokio::test]
async fn the_table_starts_with_a_summary_and_groups_the_vms() {
    let w = world().await;
    w.sim
        .put_existing_rule(&w.subnet_nsg, rule("open-ssh", 300, "Allow", |_| {}));
    let run = w.scan(&[]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let first = run.stdout.lines().next().unwrap();
    assert!(
        first.starts_with("4 VMs: 1 configured, 2 not configured, 1 unsupported; 1 rule opens a management port to the Internet"),
        "{first}"
    );
    for needle in [
        "Findings (1):",
        "open-ssh",
        "Not configured (2):",
        "Unsupported (1):",
        "Configured (1):",
        "subnet-nsg > nic-nsg",
    ] {
        assert!(
            run.stdout.contains(needle),
            "missing {needle:?} in\n{}",
            run.stdout
        );
    }
    println!("{}", run.stdout);
}

#[tokio::test]
async fn extra_management_ports_come_from_the_scan_section() {
    let w = world().await;
    w.sim.put_existing_rule(
        &w.subnet_nsg,
        rule("winrm", 300, "Allow", |p| {
            p.destination_port_range = Some("5986".into())
        }),
    );
    assert_eq!(
        w.scan(&[]).await.code,
        0,
        "5986 is not a management port by default"
    );
    std::fs::write(
        &w.config,
        config_text(&w.sim.base_url, &w.nic_nsg, "[scan]\nports = [5985, 5986]"),
    )
    .unwrap();
    let run = w.scan(&["--format", "json"]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(finding_rules(&run.json()), ["winrm"]);
}

#[tokio::test]
async fn a_resource_group_scope_reads_only_that_group() {
    let w = world().await;
    let run = w
        .scan(&[
            "--scope",
            &format!("{SUB}/resourceGroups/app"),
            "--format",
            "json",
        ])
        .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["summary"]["vms"], 4);
    // The VNet lives in `net`: its subnets were fetched one by one, and subnet-nsg too.
    assert_eq!(group_of(&report, "web2").0, "not_configured");
    assert!(
        w.sim
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/subnets/a"))
    );
}

#[tokio::test]
async fn errors_exit_2_and_say_what_went_wrong() {
    let w = world().await;
    let run = w
        .scan(&["--scope", "/subscriptions/x/providers/Microsoft.Network"])
        .await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("is neither a subscription"),
        "{}",
        run.stderr
    );

    w.sim
        .start_outage(Fault::Forbidden.on(On::get().path_contains("virtualMachines")));
    let run = w.scan(&[]).await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("403 AuthorizationFailed"),
        "{}",
        run.stderr
    );
    w.sim.end_outage();

    std::fs::write(&w.config, "[azure]\nbackend = \"arm\"\n").unwrap();
    let run = w.scan(&[]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("configuration has problems"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn check_live_passes_a_locked_down_target_and_names_what_is_missing() {
    let w = world().await;
    let config = w.config.display().to_string();
    let run = w.jitbot(&["check", "--live", "--config", &config]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout.trim(),
        "ok web1: NSG nic-nsg readable, permissions ok, 100 of 100 priorities free in 100-199, \
         baseline jitbot-lockdown-web1 present, no management port open to the Internet"
    );
    assert!(
        w.sim.requests().iter().all(|r| r.method == "GET"),
        "a check only reads"
    );

    w.sim.set_permissions(
        SUB,
        &[
            "Microsoft.Network/networkSecurityGroups/*",
            "Microsoft.Network/locations/*",
        ],
        &["Microsoft.Network/networkSecurityGroups/securityRules/delete"],
    );
    let run = w.jitbot(&["check", "--live", "--config", &config]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with(
            "FAIL web1: missing permission Microsoft.Network/networkSecurityGroups/securityRules/delete on nic-nsg"
        ),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn check_live_fails_without_a_baseline_or_with_an_exposure() {
    let w = world().await;
    assert!(
        w.sim
            .delete_rule_directly(&w.nic_nsg, "jitbot-lockdown-web1")
    );
    w.sim
        .put_existing_rule(&w.nic_nsg, rule("legacy", 150, "Allow", |_| {}));
    let config = w.config.display().to_string();
    let run = w.jitbot(&["check", "--live", "--config", &config]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(
            "baseline jitbot-lockdown-web1 missing in nic-nsg (run `jitbot lockdown web1`)"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("rule legacy (priority 150) in nic-nsg opens port 22 to 10.0.2.4 from *"),
        "{}",
        run.stdout
    );
}

/// `web3` (behind the subnet's and the NIC's NSG) as a `vm` target with band 300–349.
fn with_web3_target(w: &World) {
    let extra = format!(
        r#"
[targets.web3]
vm = "{}"
ports = [22, 3389]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
requesters = ["*"]
approvers = ["alice"]
approval_channel.slack = "C0APPROVALS"
priority_range = [300, 349]
"#,
        vm("web3")
    );
    std::fs::write(&w.config, config_text(&w.sim.base_url, &w.nic_nsg, &extra)).unwrap();
}

impl World {
    async fn lockdown(&self, args: &[&str]) -> Run {
        let config = self.config.display().to_string();
        let mut all = vec!["lockdown", "--config", &config];
        all.extend(args);
        self.jitbot(&all).await
    }

    fn writes(&self) -> Vec<String> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.method == "PUT" || r.method == "DELETE")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

#[tokio::test]
async fn lockdown_prints_the_plan_then_applies_it_once_in_every_nsg_on_the_path() {
    let w = world().await;
    with_web3_target(&w);
    let dry = w.lockdown(&["web3"]).await;
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    for nsg in ["subnet-nsg", "nic-nsg"] {
        let want = format!(
            "{nsg}: + jitbot-lockdown-web3 Deny * from * to 10.0.1.6 port 22, 3389 at priority 350"
        );
        assert!(dry.stdout.contains(&want), "{want}\n{}", dry.stdout);
    }
    assert!(
        dry.stdout.contains("dry run: 2 rule(s) to write"),
        "{}",
        dry.stdout
    );
    assert!(w.writes().is_empty(), "a dry run writes nothing");

    let applied = w.lockdown(&["web3", "--apply"]).await;
    assert_eq!(applied.code, 0, "{}{}", applied.stdout, applied.stderr);
    for nsg in [&w.subnet_nsg, &w.nic_nsg] {
        let r = w
            .sim
            .rule(nsg, "jitbot-lockdown-web3")
            .expect("the baseline");
        let p = &r.properties;
        assert_eq!(
            (p.access.as_str(), p.protocol.as_str(), p.priority),
            ("Deny", "*", 350)
        );
        assert_eq!(p.source_prefixes(), ["*"]);
        assert_eq!(p.destination_prefixes(), ["10.0.1.6"]);
        let mut ports = p.destination_ports();
        ports.sort();
        assert_eq!(ports, ["22", "3389"]);
    }
    let written = w.writes().len();
    assert_eq!(written, 2, "{:?}", w.writes());

    // Idempotent: everything is in place, nothing is written; web1's existing baseline too.
    let again = w.lockdown(&["--all", "--apply"]).await;
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains("nic-nsg: = jitbot-lockdown-web1"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("subnet-nsg: = jitbot-lockdown-web3"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("0 rule(s) written"),
        "{}",
        again.stdout
    );
    assert_eq!(w.writes().len(), written);
}

#[tokio::test]
async fn lockdown_refuses_while_a_rule_it_does_not_own_opens_the_port_ahead_of_the_deny() {
    let w = world().await;
    with_web3_target(&w);
    // In the subnet's NSG, inside web3's band: RDP from anywhere, made by hand.
    w.sim.put_existing_rule(
        &w.subnet_nsg,
        rule("allow-rdp-any", 310, "Allow", |p| {
            p.destination_port_range = Some("3389".into());
        }),
    );
    let before = w.sim.rule(&w.subnet_nsg, "allow-rdp-any");
    let run = w.lockdown(&["web3", "--apply"]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("subnet-nsg: REFUSED: rule allow-rdp-any (priority 310, not jitbot's) lets * reach port 3389"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("nothing was written"), "{}", run.stdout);
    assert!(
        w.writes().is_empty(),
        "nothing written anywhere: {:?}",
        w.writes()
    );
    assert_eq!(
        w.sim.rule(&w.subnet_nsg, "allow-rdp-any"),
        before,
        "never edited"
    );
    // Unknown targets and a missing choice are errors, not silent no-ops.
    let run = w.lockdown(&["nope"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("nope is not a target (targets: web1, web3)"),
        "{}",
        run.stderr
    );
    assert_eq!(w.lockdown(&[]).await.code, 2);
}
