//! `vm` targets, black-box: the ARM emulator holds a VM, its NIC, subnet and NSGs; jitbot finds
//! the VM's address and every NSG on its path, opens one rule in each, and closes them all.

use crate::helpers::*;
use jitbot::domain::Status;
use jitbot_sim::arm::{Fault, On};
use sqlx::Row;
use std::time::{Duration, Instant};

const RG: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/prod";
const IP: &str = "10.0.3.4";

fn vm_id() -> String {
    format!("{RG}/providers/Microsoft.Compute/virtualMachines/app1")
}

fn subnet_nsg() -> String {
    format!("{RG}/providers/Microsoft.Network/networkSecurityGroups/app-subnet-nsg")
}

fn nic_nsg() -> String {
    format!("{RG}/providers/Microsoft.Network/networkSecurityGroups/app1-nic-nsg")
}

/// The policy's `app1`: a VM target, and the resolver every 300 ms.
async fn spawn_vm_app() -> TestApp {
    spawn_vm_app_with("", "resolve_interval = \"300ms\"").await
}

async fn spawn_vm_app_with(target_extra: &str, worker: &str) -> TestApp {
    let target = format!(
        r#"
[targets.app1]
vm = "{}"
ports = [22]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
default_source = "203.0.113.7"
requesters = ["steve"]
approvers = ["group:secops"]
approval_channel.slack = "{APPROVALS}"
priority_range = [100, 199]
{target_extra}
"#,
        vm_id()
    );
    spawn_app_tuned(worker, &[], &target).await
}

/// VM app1 at 10.0.3.4 in subnet `app` of vnet1, with the subnet's and/or the NIC's NSG.
/// Returns the NIC's id.
fn build_vm(app: &TestApp, on_subnet: bool, on_nic: bool) -> String {
    let vnet = format!("{RG}/providers/Microsoft.Network/virtualNetworks/vnet1");
    let subnets = app
        .arm
        .add_vnet(&vnet, "westeurope", &[("app", "10.0.3.0/24")]);
    let nic = app
        .arm
        .add_simple_vm(&vm_id(), "westeurope", &subnets[0], IP);
    if on_subnet {
        app.arm.add_nsg(&subnet_nsg(), "westeurope");
        assert!(
            app.arm
                .attach_nsg_to_subnet(&subnets[0], Some(&subnet_nsg()))
        );
    }
    if on_nic {
        app.arm.add_nsg(&nic_nsg(), "westeurope");
        assert!(app.arm.attach_nsg_to_nic(&nic, Some(&nic_nsg())));
    }
    nic
}

/// Waits until the stored resolution of app1 contains `needle`; returns it.
async fn wait_resolved(app: &TestApp, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = sqlx::query("SELECT resolved FROM target_paths WHERE target = 'app1'")
            .fetch_optional(&app.sql)
            .await
            .unwrap();
        let text: Option<String> = row.map(|r| r.try_get("resolved").unwrap());
        if let Some(t) = text.filter(|t| t.contains(needle)) {
            return t;
        }
        assert!(Instant::now() < deadline, "app1 never resolved to {needle}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rule_in(app: &TestApp, nsg: &str, id: &str) -> Option<jitbot_sim::arm::SecurityRule> {
    app.arm.rule(nsg, &format!("jitbot-{id}"))
}

backends! {
#[tokio::test]
async fn a_vm_behind_two_nsgs_gets_a_rule_in_each_and_both_close() {
    let app = spawn_vm_app().await;
    // Not in Azure yet: requests are refused, saying why; nothing is written.
    let reply = app.slash(STEVE, "app1 22 1h").await;
    assert!(reply.contains("cannot tell where app1 is"), "{reply}");
    build_vm(&app, true, true);
    let resolved = wait_resolved(&app, IP).await;
    assert!(
        resolved.find("app-subnet-nsg") < resolved.find("app1-nic-nsg"),
        "subnet NSG first: {resolved}"
    );
    let id = app.submit(STEVE, "app1 22 1h").await;
    assert_eq!(app.click(ALICE, &id, true).await, 200);
    let active = app.wait_status(&id, Status::Active, Duration::from_secs(10)).await;
    assert_eq!(active.destination, IP);
    assert_eq!(active.rules.len(), 2);
    for (rule, nsg) in active.rules.iter().zip([subnet_nsg(), nic_nsg()]) {
        assert_eq!(rule.nsg, nsg);
        let in_azure = rule_in(&app, &nsg, &id).expect("a rule in every NSG on the path");
        assert_eq!(Some(i64::from(in_azure.properties.priority)), rule.priority);
        assert_eq!(in_azure.properties.destination_prefixes(), vec![IP.to_string()]);
        assert_eq!(in_azure.properties.source_prefixes(), vec!["203.0.113.7/32".to_string()]);
    }
    let applied = &app.events_of("applied").await[0];
    assert_eq!(applied.detail["rules"].as_array().unwrap().len(), 2);

    let reply = app.slash(STEVE, &format!("revoke {id}")).await;
    assert!(reply.contains(&id), "{reply}");
    app.wait_status(&id, Status::Revoked, Duration::from_secs(10)).await;
    assert!(rule_in(&app, &subnet_nsg(), &id).is_none());
    assert!(rule_in(&app, &nic_nsg(), &id).is_none());
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn a_failure_on_the_second_nsg_rolls_back_the_first() {
    let app = spawn_vm_app().await;
    build_vm(&app, true, true);
    wait_resolved(&app, IP).await;
    // The NIC's NSG refuses jitbot (a missing role assignment there).
    app.arm.inject(Fault::Forbidden.on(On::put().path_contains("app1-nic-nsg")));
    let id = app.submit(STEVE, "app1 22 1h").await;
    assert_eq!(app.click(ALICE, &id, true).await, 200);
    let failed = app.wait_status(&id, Status::Failed, Duration::from_secs(10)).await;
    assert!(failed.detail.unwrap_or_default().contains("403"), "says why");
    app.wait_until("the first NSG's rule is rolled back", Duration::from_secs(10), |a| {
        rule_in(a, &subnet_nsg(), &id).is_none()
    })
    .await;
    assert!(rule_in(&app, &nic_nsg(), &id).is_none());
    let writes: Vec<String> = app
        .arm
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(&id) && r.method != "GET")
        .map(|r| format!("{} {} {}", r.method, r.status, if r.path.contains("app-subnet-nsg") { "subnet" } else { "nic" }))
        .collect();
    assert_eq!(writes[..2], ["PUT 201 subnet", "PUT 403 nic"], "{writes:?}");
    assert!(writes.contains(&"DELETE 202 subnet".to_string()), "{writes:?}");
}

#[tokio::test]
async fn a_vm_with_only_a_nic_nsg_gets_one_rule_and_one_without_an_nsg_is_refused() {
    let app = spawn_vm_app().await;
    let nic = build_vm(&app, false, true);
    wait_resolved(&app, "app1-nic-nsg").await;
    let id = app.submit(STEVE, "app1 22 1h").await;
    app.click(ALICE, &id, true).await;
    let active = app.wait_status(&id, Status::Active, Duration::from_secs(10)).await;
    assert_eq!(active.rules.len(), 1);
    assert!(rule_in(&app, &nic_nsg(), &id).is_some());

    // Someone detaches the NSG: the VM is now open to whatever reaches it, and jitbot says so.
    app.arm.attach_nsg_to_nic(&nic, None);
    wait_resolved(&app, "no NSG on its path").await;
    app.wait_until("the move is reported", Duration::from_secs(5), |a| {
        a.audit_feed().iter().any(|t| t.contains("app1") && t.contains("no NSG on its path"))
    })
    .await;
    let reply = app.slash(STEVE, "app1 22 1h").await;
    assert!(reply.contains("no NSG on its path"), "{reply}");
    // The open grant still closes where it opened.
    app.slash(STEVE, &format!("revoke {id}")).await;
    app.wait_status(&id, Status::Revoked, Duration::from_secs(10)).await;
    assert!(rule_in(&app, &nic_nsg(), &id).is_none());
}

#[tokio::test]
async fn a_vm_that_moves_is_reported_and_new_grants_use_its_new_address() {
    let app = spawn_vm_app().await;
    let nic = build_vm(&app, true, false);
    wait_resolved(&app, IP).await;
    let first = app.submit(STEVE, "app1 22 1h").await;
    app.click(ALICE, &first, true).await;
    app.wait_status(&first, Status::Active, Duration::from_secs(10)).await;

    // The VM gets a new private address (its NIC re-created in the portal).
    let subnet = format!("{RG}/providers/Microsoft.Network/virtualNetworks/vnet1/subnets/app");
    app.arm.add_nic(&nic, "westeurope", &subnet, "10.0.3.9");
    wait_resolved(&app, "10.0.3.9").await;
    app.wait_until("the move is reported", Duration::from_secs(5), |a| {
        a.audit_feed()
            .iter()
            .any(|t| t.contains("app1 moved") && t.contains("10.0.3.4") && t.contains("10.0.3.9"))
    })
    .await;
    let moved: Vec<_> = app
        .events_of("target_resolved")
        .await
        .into_iter()
        .filter(|e| e.detail["before"].is_object())
        .collect();
    assert_eq!(moved.len(), 1, "reported once: {moved:?}");
    let second = app.submit(STEVE, "app1 22 1h from 203.0.113.8").await;
    app.click(ALICE, &second, true).await;
    let row = app.wait_status(&second, Status::Active, Duration::from_secs(10)).await;
    assert_eq!(row.destination, "10.0.3.9");
    assert_eq!(app.request(&first).await.destination, IP, "the open grant is unchanged");
}

#[tokio::test]
async fn a_locked_down_vm_keeps_its_deny_in_every_nsg_and_grants_still_open() {
    let app = spawn_vm_app_with(
        "lockdown = true",
        "resolve_interval = \"300ms\"\nreconcile_interval = \"300ms\"",
    )
    .await;
    build_vm(&app, true, true);
    wait_resolved(&app, IP).await;
    let baseline = "jitbot-lockdown-app1";
    app.wait_until("the baseline in both NSGs", Duration::from_secs(10), |a| {
        a.arm.rule(&subnet_nsg(), baseline).is_some() && a.arm.rule(&nic_nsg(), baseline).is_some()
    })
    .await;
    let deny = app.arm.rule(&nic_nsg(), baseline).unwrap();
    assert_eq!((deny.properties.access.as_str(), deny.properties.priority), ("Deny", 200));

    // Deleted in the portal (subnet NSG) and turned into an Allow (NIC NSG): both put back.
    app.arm.delete_rule_directly(&subnet_nsg(), baseline);
    let mut opened = deny.clone();
    opened.properties.access = "Allow".into();
    app.arm.put_existing_rule(&nic_nsg(), opened);
    app.wait_until("both restored", Duration::from_secs(10), |a| {
        [subnet_nsg(), nic_nsg()].iter().all(|n| {
            a.arm
                .rule(n, baseline)
                .is_some_and(|r| r.properties.access == "Deny")
        })
    })
    .await;
    app.wait_until("the audit channel is told", Duration::from_secs(5), |a| {
        let feed = a.audit_feed();
        feed.iter().any(|t| t.contains("lockdown restored") && t.contains("was missing"))
            && feed.iter().any(|t| t.contains("lockdown restored") && t.contains("changed to Allow"))
    })
    .await;
    let restored = app.events_of("baseline_restored").await;
    assert!(restored.len() >= 4, "created twice, restored twice: {restored:?}");

    // People see it: in /jit targets and on the approval card.
    let targets = app.slash(STEVE, "targets").await;
    assert!(targets.contains("app1") && targets.contains("locked down: closed to everyone"), "{targets}");
    // Grants sit in the band ahead of the Deny and still open (and close) in both NSGs.
    let id = app.submit(STEVE, "app1 22 1h").await;
    app.wait_until("the card says it", Duration::from_secs(5), |a| {
        a.card_text(&id).contains("locked down: closed to everyone")
    })
    .await;
    app.click(ALICE, &id, true).await;
    let active = app.wait_status(&id, Status::Active, Duration::from_secs(10)).await;
    assert!(active.rules.iter().all(|r| r.priority.is_some_and(|p| p < 200)));
    app.assert_chain_intact().await;
}
}
