//! Black-box tests of coalesced NSG writes (`azure.nsg_writes = "auto"`) against the ARM
//! emulator: several changes due on one NSG go in one NSG-level PUT with `If-Match`, everything
//! jitbot does not own survives it, a 412 is re-read and re-planned, a 403 falls back to per-rule
//! writes for good, and a crash after the PUT leaves nothing to redo.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use jitbot::azure::{Azure, AzureOverrides, AzureSettings, Backend, NsgWrites, RuleSpec, connect};
use jitbot_sim::arm::{
    ArmSim, ArmSimOptions, Fault, On, OperationKind, SecurityRule, SecurityRuleProperties,
};
use serde_json::json;

const NSG: &str = "/subscriptions/0000-sub/resourceGroups/prod/providers/Microsoft.Network/networkSecurityGroups/web1-nsg";
const NSG2: &str = "/subscriptions/0000-sub/resourceGroups/prod/providers/Microsoft.Network/networkSecurityGroups/web1-nic-nsg";

#[derive(Debug)]
struct FixedCredential;

#[async_trait::async_trait]
impl TokenCredential for FixedCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            Secret::new("test-token"),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

async fn client(sim: &ArmSim, writes: NsgWrites) -> Azure {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut s = AzureSettings::with_backend(Backend::Arm);
    s.arm_endpoint = url::Url::parse(&sim.base_url).expect("sim URL");
    s.request_timeout = Duration::from_secs(3);
    s.operation_timeout = Duration::from_secs(20);
    s.retry_budget = Duration::from_secs(20);
    s.nsg_writes = writes;
    let overrides = AzureOverrides {
        credential_factory: Some(Arc::new(|| {
            let c: Arc<dyn TokenCredential> = Arc::new(FixedCredential);
            Ok(c)
        })),
        ..Default::default()
    };
    connect(&s, overrides).await.expect("connect")
}

async fn setup() -> (ArmSim, Azure) {
    let sim = ArmSim::start(ArmSimOptions::default()).await.expect("sim");
    sim.add_nsg(NSG, "westeurope");
    sim.add_nsg(NSG2, "westeurope");
    let azure = client(&sim, NsgWrites::Auto).await;
    (sim, azure)
}

fn spec(name: &str) -> RuleSpec {
    RuleSpec {
        access: Default::default(),
        name: name.to_string(),
        description: format!("jitbot {name} for alice"),
        protocol: "Tcp".to_string(),
        source: "203.0.113.7/32".to_string(),
        destination: "10.0.1.4".to_string(),
        ports: vec![22],
        band: (100, 199),
    }
}

fn customer_rule(name: &str, priority: i32) -> SecurityRule {
    SecurityRule {
        name: name.to_string(),
        id: None,
        etag: None,
        resource_type: None,
        properties: SecurityRuleProperties {
            description: Some("customer rule".into()),
            protocol: "Tcp".into(),
            source_port_range: Some("*".into()),
            destination_port_range: Some("443".into()),
            source_address_prefix: Some("10.9.0.0/16".into()),
            destination_address_prefix: Some("*".into()),
            access: "Allow".into(),
            priority,
            direction: "Inbound".into(),
            ..Default::default()
        },
    }
}

async fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ops_of(sim: &ArmSim, kind: OperationKind) -> usize {
    sim.operations().iter().filter(|o| o.kind == kind).count()
}

/// Starts a lone PUT (which holds the lane for the emulator's 300 ms), so that the changes
/// queued behind it are taken together.
async fn hold_the_lane(
    sim: &ArmSim,
    azure: &Azure,
    nsg: &'static str,
) -> tokio::task::JoinHandle<()> {
    let before = sim.operations().len();
    let nsgs = azure.nsgs.clone();
    let task = tokio::spawn(async move {
        nsgs.ensure_rule(nsg, &spec("jitbot-req_first"))
            .await
            .expect("first");
    });
    wait_until(Duration::from_secs(5), "the first PUT", || {
        sim.operations().len() > before
    })
    .await;
    task
}

/// Queues `n` openings (and the given removals) on `nsg` at once.
fn queue(
    azure: &Azure,
    nsg: &'static str,
    names: &[&str],
    removals: &[&str],
) -> Vec<tokio::task::JoinHandle<Result<Option<u16>, String>>> {
    let mut tasks = Vec::new();
    for name in names {
        let (nsgs, s) = (azure.nsgs.clone(), spec(name));
        tasks.push(tokio::spawn(async move {
            nsgs.ensure_rule(nsg, &s)
                .await
                .map(|a| Some(a.priority))
                .map_err(|e| e.to_string())
        }));
    }
    for name in removals {
        let (nsgs, name) = (azure.nsgs.clone(), name.to_string());
        tasks.push(tokio::spawn(async move {
            nsgs.remove_rule(nsg, &name)
                .await
                .map(|()| None)
                .map_err(|e| e.to_string())
        }));
    }
    tasks
}

async fn answers(
    tasks: Vec<tokio::task::JoinHandle<Result<Option<u16>, String>>>,
) -> Vec<Option<u16>> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("join").expect("change"));
    }
    out
}

#[tokio::test]
async fn changes_due_together_go_in_one_nsg_write_and_keep_what_jitbot_does_not_own() {
    let (sim, azure) = setup().await;
    sim.put_existing_rule(NSG, customer_rule("allow-https", 100));
    sim.put_existing_rule(NSG, customer_rule("jitbot-req_old", 150));
    sim.set_nsg_extras(
        NSG,
        json!({"owner": "net-team", "cost-centre": "42"}),
        json!({"flushConnection": true, "aNewerProperty": {"kept": [1, 2, 3]}}),
        json!({"aNewerTopLevelField": "as read"}),
    );
    let first = hold_the_lane(&sim, &azure, NSG).await;
    let tasks = queue(
        &azure,
        NSG,
        &["jitbot-req_a", "jitbot-req_b", "jitbot-req_c"],
        &["jitbot-req_old"],
    );
    let got = answers(tasks).await;
    first.await.expect("first");

    // One rule-level PUT (the lone first change), then one NSG-level PUT for the other four.
    assert_eq!(ops_of(&sim, OperationKind::Put), 1);
    assert_eq!(ops_of(&sim, OperationKind::NsgPut), 1);
    assert_eq!(ops_of(&sim, OperationKind::Delete), 0);
    let nsg_put = sim
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT" && r.path.ends_with("web1-nsg"))
        .expect("NSG-level PUT");
    assert!(nsg_put.status < 300);

    // Each caller got its own answer: distinct free priorities; the removal freed 150.
    let mut prios: Vec<u16> = got.iter().flatten().copied().collect();
    prios.sort_unstable();
    assert_eq!(prios, [102, 103, 104], "{got:?}");
    assert_eq!(got[3], None);
    let names: Vec<String> = sim.rules(NSG).into_iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        [
            "allow-https",
            "jitbot-req_first",
            "jitbot-req_a",
            "jitbot-req_b",
            "jitbot-req_c"
        ]
    );
    assert!(
        sim.rules(NSG)
            .iter()
            .all(|r| r.properties.provisioning_state.as_deref() == Some("Succeeded"))
    );

    // Everything jitbot does not own is as it was.
    let nsg = sim.nsg_json(NSG).expect("nsg");
    assert_eq!(
        nsg["tags"],
        json!({"owner": "net-team", "cost-centre": "42"})
    );
    assert_eq!(nsg["properties"]["flushConnection"], json!(true));
    assert_eq!(
        nsg["properties"]["aNewerProperty"],
        json!({"kept": [1, 2, 3]})
    );
    assert_eq!(nsg["aNewerTopLevelField"], json!("as read"));
    let https = sim.rule(NSG, "allow-https").expect("customer rule kept");
    assert_eq!(https.properties, {
        let mut p = customer_rule("allow-https", 100).properties;
        p.provisioning_state = Some("Succeeded".into());
        p.source_port_ranges = Some(vec![]);
        p.destination_port_ranges = Some(vec![]);
        p.source_address_prefixes = Some(vec![]);
        p.destination_address_prefixes = Some(vec![]);
        p
    });
    assert_eq!(sim.busy_rejections(), 0, "one write at a time");
}

#[tokio::test]
async fn a_412_reads_the_nsg_again_and_plans_around_the_change() {
    let (sim, azure) = setup().await;
    let first = hold_the_lane(&sim, &azure, NSG).await;
    // The coalesced write's read of the NSG is answered late; meanwhile someone takes 101.
    sim.inject(
        Fault::Delay(Duration::from_millis(500))
            .on(On::get().path_contains("/networkSecurityGroups/web1-nsg")),
    );
    let tasks = queue(&azure, NSG, &["jitbot-req_a", "jitbot-req_b"], &[]);
    wait_until(Duration::from_secs(5), "the delayed read", || {
        sim.pending_faults() == 0
    })
    .await;
    sim.put_existing_rule(NSG, customer_rule("portal-rule", 101));
    let mut got: Vec<u16> = answers(tasks).await.into_iter().flatten().collect();
    first.await.expect("first");
    got.sort_unstable();
    assert_eq!(got, [102, 103]);
    let puts: Vec<(u16, Option<String>)> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("web1-nsg"))
        .map(|r| (r.status, r.error_code))
        .collect();
    assert_eq!(
        puts,
        [(412, Some("PreconditionFailed".into())), (200, None)],
        "the stale write was refused, the re-planned one accepted"
    );
    assert!(
        sim.rule(NSG, "portal-rule").is_some(),
        "nothing of theirs undone"
    );
}

#[tokio::test]
async fn a_403_on_the_nsg_write_falls_back_to_per_rule_writes_for_good() {
    let (sim, azure) = setup().await;
    sim.set_nsg_writes_forbidden(true);
    let mut watch = azure.nsgs.fallback_watch();
    assert!(!azure.nsgs.fell_back());
    let first = hold_the_lane(&sim, &azure, NSG).await;
    let got = answers(queue(&azure, NSG, &["jitbot-req_a", "jitbot-req_b"], &[])).await;
    first.await.expect("first");
    assert_eq!(got.len(), 2);
    assert!(azure.nsgs.fell_back());
    tokio::time::timeout(Duration::from_secs(1), watch.changed())
        .await
        .expect("the watch fired")
        .expect("sender alive");
    assert!(*watch.borrow());
    let forbidden = |sim: &ArmSim| {
        sim.requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path.ends_with("web1-nsg"))
            .count()
    };
    assert_eq!(forbidden(&sim), 1, "one refused NSG write");
    assert_eq!(ops_of(&sim, OperationKind::Put), 3, "then rule by rule");

    // Later bursts go rule by rule without asking again.
    let first = tokio::spawn({
        let nsgs = azure.nsgs.clone();
        async move { nsgs.remove_rule(NSG, "jitbot-req_first").await }
    });
    let got = answers(queue(&azure, NSG, &["jitbot-req_c"], &["jitbot-req_a"])).await;
    first.await.expect("join").expect("removed");
    assert_eq!(got.len(), 2);
    assert_eq!(forbidden(&sim), 1);
    let names: Vec<String> = sim.rules(NSG).into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["jitbot-req_b", "jitbot-req_c"]);
}

#[tokio::test]
async fn per_rule_mode_never_writes_the_nsg() {
    let sim = ArmSim::start(ArmSimOptions::default()).await.expect("sim");
    sim.add_nsg(NSG, "westeurope");
    let azure = client(&sim, NsgWrites::PerRule).await;
    let first = hold_the_lane(&sim, &azure, NSG).await;
    let got = answers(queue(&azure, NSG, &["jitbot-req_a", "jitbot-req_b"], &[])).await;
    first.await.expect("first");
    assert_eq!(got.len(), 2);
    assert_eq!(ops_of(&sim, OperationKind::NsgPut), 0);
    assert_eq!(ops_of(&sim, OperationKind::Put), 3);
}

#[tokio::test]
async fn grants_spanning_two_nsgs_open_and_close_in_both() {
    let (sim, azure) = setup().await;
    // Like the worker's apply: each grant opens in the subnet's NSG, then the NIC's.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let nsgs = azure.nsgs.clone();
        tasks.push(tokio::spawn(async move {
            let s = spec(&format!("jitbot-req_vm{i}"));
            let a = nsgs.ensure_rule(NSG, &s).await?;
            let b = nsgs.ensure_rule(NSG2, &s).await?;
            Ok::<_, jitbot::azure::AzureError>((a.priority, b.priority))
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("opened in both");
    }
    for nsg in [NSG, NSG2] {
        assert_eq!(sim.rules(nsg).len(), 6, "{nsg}");
    }
    let mut tasks = Vec::new();
    for i in 0..6 {
        let nsgs = azure.nsgs.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("jitbot-req_vm{i}");
            nsgs.remove_rule(NSG, &name).await?;
            nsgs.remove_rule(NSG2, &name).await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("closed in both");
    }
    for nsg in [NSG, NSG2] {
        assert!(sim.rules(nsg).is_empty(), "{nsg}");
    }
    assert!(
        ops_of(&sim, OperationKind::NsgPut) >= 2,
        "some writes were coalesced"
    );
    assert_eq!(sim.busy_rejections(), 0);
}

#[tokio::test]
async fn a_crash_after_the_nsg_write_leaves_nothing_to_redo() {
    let (sim, azure) = setup().await;
    sim.set_operation_delay(Duration::from_millis(300));
    let first = hold_the_lane(&sim, &azure, NSG).await;
    let tasks = queue(&azure, NSG, &["jitbot-req_a", "jitbot-req_b"], &[]);
    // The process dies once the NSG-level PUT is accepted, before its operation ends and before
    // anyone could record the priorities.
    wait_until(Duration::from_secs(5), "the NSG-level PUT", || {
        ops_of(&sim, OperationKind::NsgPut) == 1
    })
    .await;
    for t in tasks {
        t.abort();
    }
    first.abort();
    drop(azure);
    wait_until(Duration::from_secs(5), "the operation to end", || {
        sim.operations().iter().all(|o| o.status != "InProgress")
    })
    .await;

    // The next process resumes both applies: same rules, same priorities, no new write.
    let writes_before = sim.operations().len();
    let azure = client(&sim, NsgWrites::Auto).await;
    let again = answers(queue(&azure, NSG, &["jitbot-req_a", "jitbot-req_b"], &[])).await;
    let in_nsg: Vec<Option<u16>> = ["jitbot-req_a", "jitbot-req_b"]
        .iter()
        .map(|n| sim.rule(NSG, n).map(|r| r.properties.priority as u16))
        .collect();
    assert_eq!(again, in_nsg);
    assert_eq!(sim.operations().len(), writes_before, "nothing rewritten");
    assert_eq!(sim.rules(NSG).len(), 3);
}

/// Changes that reach an idle lane together (an expiry wave, a burst of approvals) go out in one
/// NSG-level write, not "the first alone, the rest in a second": the lane's holder waits a moment
/// before it takes what is queued.
#[tokio::test]
async fn changes_that_arrive_together_share_the_first_write() {
    let (sim, azure) = setup().await;
    let names: Vec<String> = (0..6).map(|i| format!("jitbot-req_t{i}")).collect();
    let puts = names.iter().map(|n| {
        let (nsgs, spec) = (azure.nsgs.clone(), spec(n));
        async move { nsgs.ensure_rule(NSG, &spec).await }
    });
    let applied = futures::future::join_all(puts).await;
    let mut priorities: Vec<u16> = applied
        .into_iter()
        .map(|a| a.expect("applied").priority)
        .collect();
    priorities.sort_unstable();
    priorities.dedup();
    assert_eq!(priorities.len(), 6, "six different priorities");
    assert_eq!(sim.operations().len(), 1, "one NSG write for all six");
    for n in &names {
        assert!(sim.rule(NSG, n).is_some(), "{n} is live");
    }
}
