//! Black-box tests of the Azure client (`jitbot::azure`) against the in-process ARM and Entra
//! emulators. Every assertion is about what the emulators hold or received.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use jitbot::azure::{
    AppliedRule, Azure, AzureError, AzureOverrides, AzureSettings, Backend, RuleSpec, connect,
};
use jitbot_sim::arm::{
    ArmSim, ArmSimOptions, Fault, On, OperationKind, RecordedRequest, SecurityRule,
    SecurityRuleProperties,
};
use jitbot_sim::entra::EntraSim;
use serde_json::{Value, json};

const NSG: &str = "/subscriptions/0000-sub/resourceGroups/prod/providers/Microsoft.Network/networkSecurityGroups/web1-nsg";

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
}

/// A credential that hands out `test-token-<n>`, counting how often it was built.
#[derive(Debug)]
struct FixedCredential(String);

#[async_trait::async_trait]
impl TokenCredential for FixedCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            Secret::new(self.0.clone()),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

fn fixed_token_overrides(builds: Arc<AtomicUsize>) -> AzureOverrides {
    AzureOverrides {
        credential_factory: Some(Arc::new(move || {
            let n = builds.fetch_add(1, Ordering::SeqCst) + 1;
            let c: Arc<dyn TokenCredential> = Arc::new(FixedCredential(format!("test-token-{n}")));
            Ok(c)
        })),
        ..Default::default()
    }
}

fn test_settings(sim: &ArmSim) -> AzureSettings {
    let mut s = AzureSettings::with_backend(Backend::Arm);
    s.arm_endpoint = url::Url::parse(&sim.base_url).expect("sim URL");
    s.request_timeout = Duration::from_secs(3);
    s.operation_timeout = Duration::from_secs(20);
    s.retry_budget = Duration::from_secs(20);
    s
}

/// An emulator with one empty NSG and a client pointed at it.
async fn setup_with(opts: ArmSimOptions, tune: impl FnOnce(&mut AzureSettings)) -> (ArmSim, Azure) {
    init();
    let sim = ArmSim::start(opts).await.expect("start ARM emulator");
    sim.add_nsg(NSG, "westeurope");
    let mut settings = test_settings(&sim);
    tune(&mut settings);
    let azure = connect(&settings, fixed_token_overrides(Arc::default()))
        .await
        .expect("connect");
    (sim, azure)
}

async fn setup() -> (ArmSim, Azure) {
    setup_with(ArmSimOptions::default(), |_| {}).await
}

fn spec(name: &str, ports: &[u16]) -> RuleSpec {
    RuleSpec {
        access: Default::default(),
        name: name.to_string(),
        description: format!("jitbot {name} for alice until 2026-11-21T15:00Z"),
        protocol: "Tcp".to_string(),
        source: "203.0.113.7/32".to_string(),
        destination: "10.0.1.4".to_string(),
        ports: ports.to_vec(),
        band: (100, 199),
    }
}

fn customer_rule(name: &str, priority: i32, direction: &str) -> SecurityRule {
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
            source_address_prefix: Some("Internet".into()),
            destination_address_prefix: Some("*".into()),
            access: "Allow".into(),
            priority,
            direction: direction.into(),
            ..SecurityRuleProperties::default()
        },
    }
}

fn requests_where(sim: &ArmSim, method: &str, path_part: &str) -> Vec<RecordedRequest> {
    sim.requests()
        .into_iter()
        .filter(|r| r.method == method && r.path.contains(path_part))
        .collect()
}

/// Wait for a condition, failing the test after `timeout`.
async fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn props(body: &Value) -> &serde_json::Map<String, Value> {
    body["properties"].as_object().expect("properties object")
}

#[tokio::test]
async fn ensure_rule_puts_a_schema_valid_rule_at_the_lowest_free_priority_and_is_idempotent() {
    let (sim, azure) = setup().await;
    sim.put_existing_rule(NSG, customer_rule("allow-https", 100, "Inbound"));
    sim.put_existing_rule(NSG, customer_rule("allow-admin", 101, "Inbound"));
    // Outbound rules do not take inbound priorities.
    sim.put_existing_rule(NSG, customer_rule("egress", 102, "Outbound"));

    let applied = azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_1", &[22]))
        .await
        .expect("ensure_rule");
    assert_eq!(
        applied,
        AppliedRule {
            name: "jitbot-req_1".into(),
            priority: 102
        }
    );

    // The PUT body: exactly the swagger's fields, a single port in the singular field.
    let puts = requests_where(&sim, "PUT", "/securityRules/jitbot-req_1");
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].status, 201);
    assert_eq!(puts[0].query.as_deref(), Some("api-version=2024-05-01"));
    assert_eq!(puts[0].bearer.as_deref(), Some("test-token-1"));
    let body = puts[0].body.as_ref().expect("PUT body");
    let p = props(body);
    assert_eq!(p["protocol"], "Tcp");
    assert_eq!(p["access"], "Allow");
    assert_eq!(p["direction"], "Inbound");
    assert_eq!(p["priority"], 102);
    assert_eq!(p["destinationPortRange"], "22");
    assert!(!p.contains_key("destinationPortRanges"));
    assert_eq!(p["sourcePortRange"], "*");
    assert_eq!(p["sourceAddressPrefix"], "203.0.113.7/32");
    assert_eq!(p["destinationAddressPrefix"], "10.0.1.4");
    assert!(p["description"].as_str().expect("description").len() <= 140);
    assert!(!p.contains_key("provisioningState"));

    // It followed the async operation, and the rule is provisioned when the call returns.
    assert!(!requests_where(&sim, "GET", "/operations/").is_empty());
    let rule = sim.rule(NSG, "jitbot-req_1").expect("rule exists");
    assert_eq!(
        rule.properties.provisioning_state.as_deref(),
        Some("Succeeded")
    );
    let ops = sim.operations();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].status, "Succeeded");

    // Idempotent: the same call keeps the priority and adds no rule.
    let again = azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_1", &[22]))
        .await
        .expect("second ensure_rule");
    assert_eq!(again.priority, 102);
    // Even once a lower number frees up, the existing rule keeps its priority.
    sim.put_existing_rule(NSG, customer_rule("allow-admin", 150, "Inbound"));
    let third = azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_1", &[22]))
        .await
        .expect("third ensure_rule");
    assert_eq!(third.priority, 102);
    // A retried apply recomputes the approximate expiry in the description: the rule is still in
    // place and is not written again.
    let mut later = spec("jitbot-req_1", &[22]);
    later.description = "jitbot jitbot-req_1 for alice until 2026-11-21T15:07Z".into();
    azure
        .nsgs
        .ensure_rule(NSG, &later)
        .await
        .expect("retried ensure_rule");
    assert_eq!(
        requests_where(&sim, "PUT", "/securityRules/jitbot-req_1").len(),
        1,
        "one PUT for all the ensure_rule calls"
    );
    let ours: Vec<_> = sim
        .rules(NSG)
        .into_iter()
        .filter(|r| r.name.starts_with("jitbot-"))
        .collect();
    assert_eq!(ours.len(), 1);

    // Several ports go in the plural field only; the next free priority is 101 now.
    let multi = azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_2", &[3389, 22]))
        .await
        .expect("multi-port ensure_rule");
    assert_eq!(multi.priority, 101);
    let put = requests_where(&sim, "PUT", "/securityRules/jitbot-req_2");
    let p = props(put[0].body.as_ref().expect("body"));
    assert_eq!(p["destinationPortRanges"], json!(["22", "3389"]));
    assert!(!p.contains_key("destinationPortRange"));
    assert_eq!(put[0].status, 201);
}

#[tokio::test]
async fn remove_rule_deletes_only_its_rule_and_an_absent_rule_counts_as_removed() {
    let (sim, azure) = setup().await;
    sim.put_existing_rule(NSG, customer_rule("allow-https", 100, "Inbound"));
    let customer_before = sim.rule(NSG, "allow-https").expect("customer rule");
    azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_1", &[22]))
        .await
        .expect("ensure_rule");

    azure
        .nsgs
        .remove_rule(NSG, "jitbot-req_1")
        .await
        .expect("remove_rule");
    assert!(
        sim.rule(NSG, "jitbot-req_1").is_none(),
        "rule gone on return"
    );
    let deletes = requests_where(&sim, "DELETE", "/securityRules/jitbot-req_1");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].status, 202);
    let op = sim.operations().into_iter().last().expect("delete op");
    assert_eq!(
        (op.kind, op.status.as_str()),
        (OperationKind::Delete, "Succeeded")
    );

    // Removing again: ARM answers 204, which is success.
    azure
        .nsgs
        .remove_rule(NSG, "jitbot-req_1")
        .await
        .expect("remove absent rule");
    let deletes = requests_where(&sim, "DELETE", "/securityRules/jitbot-req_1");
    assert_eq!(deletes.len(), 2);
    assert_eq!(deletes[1].status, 204);

    // The customer's rule is untouched.
    let customer_after = sim.rule(NSG, "allow-https").expect("customer rule");
    assert_eq!(customer_after.properties, customer_before.properties);
    assert!(requests_where(&sim, "PUT", "allow-https").is_empty());
    assert!(requests_where(&sim, "DELETE", "allow-https").is_empty());
}

#[tokio::test]
async fn throttling_is_retried_after_retry_after() {
    let (sim, azure) = setup().await;
    sim.inject(
        Fault::Throttle {
            retry_after_secs: 1,
        }
        .on(On::put()),
    );
    azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_1", &[22]))
        .await
        .expect("ensure_rule despite 429");
    let puts = requests_where(&sim, "PUT", "jitbot-req_1");
    assert_eq!(puts.len(), 2);
    assert_eq!(
        (puts[0].status, puts[0].error_code.as_deref()),
        (429, Some("SubscriptionRequestsThrottled"))
    );
    assert_eq!(puts[1].status, 201);
    let waited = puts[1].at.duration_since(puts[0].at).expect("ordered");
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
}

#[tokio::test]
async fn another_operation_in_progress_is_retried_when_immediate_and_when_a_failed_poll() {
    let (sim, azure) = setup().await;
    // Immediate 409 on the PUT and on the DELETE.
    sim.inject(Fault::AnotherOperationInProgress.on(On::put()));
    sim.inject(Fault::AnotherOperationInProgress.on(On::delete()));
    azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_1", &[22]))
        .await
        .expect("ensure_rule despite 409");
    azure
        .nsgs
        .remove_rule(NSG, "jitbot-req_1")
        .await
        .expect("remove_rule despite 409");
    let statuses = |m: &str| -> Vec<u16> {
        requests_where(&sim, m, "jitbot-req_1")
            .iter()
            .map(|r| r.status)
            .collect()
    };
    assert_eq!(statuses("PUT"), vec![409, 201]);
    assert_eq!(statuses("DELETE"), vec![409, 202]);
    assert!(sim.rule(NSG, "jitbot-req_1").is_none());

    // The operation itself ends Failed with AnotherOperationInProgress: the write is re-issued.
    sim.inject(
        Fault::FailOperation {
            code: "AnotherOperationInProgress".into(),
        }
        .on(On::put()),
    );
    let applied = azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_2", &[22]))
        .await
        .expect("ensure_rule despite failed operation");
    let puts = requests_where(&sim, "PUT", "jitbot-req_2");
    assert_eq!(puts.len(), 2, "the write was issued again");
    assert_eq!(puts[1].status, 200, "second PUT updates the failed rule");
    let ops: Vec<_> = sim
        .operations()
        .into_iter()
        .filter(|o| o.rule == "jitbot-req_2")
        .map(|o| o.status)
        .collect();
    assert_eq!(ops, vec!["Failed", "Succeeded"]);
    let rule = sim.rule(NSG, "jitbot-req_2").expect("rule");
    assert_eq!(
        rule.properties.provisioning_state.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(rule.properties.priority, i32::from(applied.priority));
}

#[tokio::test]
async fn server_errors_on_reads_writes_and_polls_are_retried() {
    let (sim, azure) = setup().await;
    sim.inject(Fault::ServerError.on(On::get().path_contains("/networkSecurityGroups/")));
    sim.inject(Fault::ServerError.on(On::put()));
    sim.inject(Fault::ServerError.on(On::poll()));
    sim.inject(Fault::ServerError.on(On::delete()));
    azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_1", &[22]))
        .await
        .expect("ensure_rule despite 500s");
    azure
        .nsgs
        .remove_rule(NSG, "jitbot-req_1")
        .await
        .expect("remove_rule despite 500");
    assert_eq!(sim.pending_faults(), 0, "every fault was hit");
    assert_eq!(sim.requests().iter().filter(|r| r.status == 500).count(), 4);
    assert!(sim.rule(NSG, "jitbot-req_1").is_none());
}

#[tokio::test]
async fn responses_slower_than_the_request_timeout_are_retried_on_put_and_delete() {
    let (sim, azure) = setup_with(ArmSimOptions::default(), |s| {
        s.request_timeout = Duration::from_millis(500);
    })
    .await;
    sim.inject(Fault::Delay(Duration::from_secs(2)).on(On::put()));
    let applied = azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_1", &[22]))
        .await
        .expect("ensure_rule despite a hung PUT");
    let puts = requests_where(&sim, "PUT", "jitbot-req_1");
    assert!(puts.len() >= 2, "the PUT was sent again after the timeout");
    let rule = sim.rule(NSG, "jitbot-req_1").expect("rule");
    assert_eq!(
        rule.properties.provisioning_state.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(rule.properties.priority, i32::from(applied.priority));
    assert_eq!(sim.rules(NSG).len(), 1);

    sim.inject(Fault::Delay(Duration::from_secs(2)).on(On::delete()));
    azure
        .nsgs
        .remove_rule(NSG, "jitbot-req_1")
        .await
        .expect("remove_rule despite a hung DELETE");
    assert!(requests_where(&sim, "DELETE", "jitbot-req_1").len() >= 2);
    assert!(sim.rule(NSG, "jitbot-req_1").is_none());
}

#[tokio::test]
async fn forbidden_is_reported_at_once_and_not_retried() {
    let (sim, azure) = setup().await;
    sim.inject(Fault::Forbidden.on(On::put()));
    let err = azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_1", &[22]))
        .await
        .expect_err("403 must fail");
    assert!(matches!(err, AzureError::Forbidden(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("securityRules/read|write|delete"),
        "{err}"
    );
    assert_eq!(requests_where(&sim, "PUT", "jitbot-req_1").len(), 1);
    assert!(sim.rule(NSG, "jitbot-req_1").is_none());
}

#[tokio::test]
async fn an_exhausted_retry_budget_is_a_retryable_transient_error() {
    let (sim, azure) = setup_with(ArmSimOptions::default(), |s| {
        s.retry_budget = Duration::from_secs(1);
    })
    .await;
    for _ in 0..50 {
        sim.inject(Fault::ServerError.on(On::delete()));
    }
    let err = azure
        .nsgs
        .remove_rule(NSG, "jitbot-req_1")
        .await
        .expect_err("budget runs out");
    assert!(matches!(err, AzureError::Transient(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(requests_where(&sim, "DELETE", "jitbot-req_1").len() >= 2);
}

#[tokio::test]
async fn an_expired_token_is_replaced_by_a_new_one_from_entra() {
    init();
    let entra = EntraSim::start("tenant-1", "client-1", "s3cret", 3600)
        .await
        .expect("start Entra emulator");
    let sim = ArmSim::start(ArmSimOptions::default())
        .await
        .expect("start ARM emulator");
    sim.add_nsg(NSG, "westeurope");
    sim.set_accepted_token_prefix(Some("entra-token-"));

    let builds = Arc::new(AtomicUsize::new(0));
    let counter = builds.clone();
    let from_entra = entra.credential_factory("s3cret");
    let overrides = AzureOverrides {
        credential_factory: Some(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            from_entra()
        })),
        ..Default::default()
    };
    let azure = connect(&test_settings(&sim), overrides)
        .await
        .expect("connect");

    azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_1", &[22]))
        .await
        .expect("first call");
    assert_eq!(entra.issued(), vec!["entra-token-1"]);
    assert_eq!(entra.scopes(), vec![format!("{}/.default", sim.base_url)]);

    // ARM now considers the cached token expired (the credential would still hand it out).
    sim.expire_token("entra-token-1");
    azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_2", &[22]))
        .await
        .expect("call after the token expired");
    assert_eq!(entra.issued(), vec!["entra-token-1", "entra-token-2"]);
    assert_eq!(
        builds.load(Ordering::SeqCst),
        2,
        "a fresh credential was built"
    );
    let rejected: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.status == 401)
        .collect();
    assert_eq!(rejected.len(), 1, "exactly one request was refused");
    assert_eq!(
        rejected[0].error_code.as_deref(),
        Some("ExpiredAuthenticationToken")
    );
    assert_eq!(rejected[0].bearer.as_deref(), Some("entra-token-1"));
    let put = requests_where(&sim, "PUT", "jitbot-req_2");
    assert_eq!(
        put.last().expect("PUT").bearer.as_deref(),
        Some("entra-token-2")
    );
    assert!(sim.rule(NSG, "jitbot-req_2").is_some());

    // A one-off 401 from ARM is handled the same way.
    sim.inject(Fault::ExpiredToken.on(On::delete()));
    azure
        .nsgs
        .remove_rule(NSG, "jitbot-req_2")
        .await
        .expect("remove after a 401");
    assert_eq!(entra.issued().len(), 3);
    assert!(sim.rule(NSG, "jitbot-req_2").is_none());
}

#[tokio::test]
async fn a_wrong_client_secret_is_an_auth_error() {
    init();
    let entra = EntraSim::start("tenant-1", "client-1", "s3cret", 3600)
        .await
        .expect("start Entra emulator");
    let sim = ArmSim::start(ArmSimOptions::default())
        .await
        .expect("start ARM emulator");
    sim.add_nsg(NSG, "westeurope");
    let overrides = AzureOverrides {
        credential_factory: Some(entra.credential_factory("wrong")),
        ..Default::default()
    };
    let azure = connect(&test_settings(&sim), overrides)
        .await
        .expect("connect");
    let err = azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_1", &[22]))
        .await
        .expect_err("no token");
    assert!(matches!(err, AzureError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("7000215"), "{err}");
    assert!(entra.issued().is_empty());
    assert!(sim.requests().is_empty(), "ARM never saw a request");
    assert!(!err.to_string().contains("s3cret") && !err.to_string().contains("wrong"));
}

#[tokio::test]
async fn concurrent_requests_on_one_nsg_get_different_priorities_one_write_at_a_time() {
    // Rule by rule (`nsg_writes = "per_rule"`); coalesced, two changes that arrive together share
    // one NSG-level write (tests/nsg_writes.rs).
    let (sim, azure) = setup_with(ArmSimOptions::default(), |s| {
        s.nsg_writes = jitbot::azure::NsgWrites::PerRule
    })
    .await;
    sim.put_existing_rule(NSG, customer_rule("allow-https", 100, "Inbound"));
    let (a, b) = (azure.nsgs.clone(), azure.nsgs.clone());
    let spec_a = spec("jitbot-req_a", &[22]);
    let spec_b = spec("jitbot-req_b", &[3389]);
    let (ra, rb) = tokio::join!(a.ensure_rule(NSG, &spec_a), b.ensure_rule(NSG, &spec_b));
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    let mut got = [ra.priority, rb.priority];
    got.sort_unstable();
    assert_eq!(got, [101, 102]);

    // Never two writes in flight: ARM refused nothing as busy, and the operations do not overlap.
    assert_eq!(sim.busy_rejections(), 0);
    assert!(
        sim.requests().iter().all(|r| r.status < 400),
        "no errors at all"
    );
    let ops = sim.operations();
    assert_eq!(ops.len(), 2);
    let first_done = ops[0].finished.expect("first finished");
    assert!(
        ops[1].started >= first_done,
        "second write began after the first finished"
    );
    // Each PUT was preceded by a fresh read of the NSG that already showed the earlier rule.
    let reads_before_second_put = sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("web1-nsg") && r.at >= first_done)
        .count();
    assert!(reads_before_second_put >= 1);
}

#[tokio::test]
async fn a_removal_goes_ahead_of_queued_puts_on_the_same_nsg() {
    // Rule by rule (`nsg_writes = "per_rule"`); coalesced, the removal shares the next write with
    // the queued PUTs (tests/nsg_writes.rs).
    let (sim, azure) = setup_with(ArmSimOptions::default(), |s| {
        s.nsg_writes = jitbot::azure::NsgWrites::PerRule
    })
    .await;
    azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_old", &[22]))
        .await
        .expect("the rule to close");
    let writes_before = sim.operations().len();
    let mut puts = Vec::new();
    for i in 0..5 {
        let nsgs = azure.nsgs.clone();
        let spec = spec(&format!("jitbot-req_new{i}"), &[22]);
        puts.push(tokio::spawn(
            async move { nsgs.ensure_rule(NSG, &spec).await },
        ));
    }
    // One PUT is in flight (the emulator holds each operation 300 ms), four wait for the lane.
    wait_until(Duration::from_secs(5), "the first PUT", || {
        sim.operations().len() > writes_before
    })
    .await;
    azure
        .nsgs
        .remove_rule(NSG, "jitbot-req_old")
        .await
        .expect("removed");
    for p in puts {
        p.await.expect("task").expect("put");
    }
    let order: Vec<String> = sim.operations()[writes_before..]
        .iter()
        .map(|o| format!("{:?} {}", o.kind, o.rule))
        .collect();
    assert_eq!(order.len(), 6, "{order:?}");
    assert!(
        order[1].ends_with("jitbot-req_old") && order[1].starts_with("Delete"),
        "the removal should run right after the PUT in flight: {order:?}"
    );
    assert_eq!(sim.busy_rejections(), 0, "still one write at a time");
}

#[tokio::test]
async fn a_full_band_is_band_full_and_nothing_is_written() {
    let (sim, azure) = setup().await;
    sim.put_existing_rule(NSG, customer_rule("a", 100, "Inbound"));
    sim.put_existing_rule(NSG, customer_rule("b", 101, "Inbound"));
    let mut s = spec("jitbot-req_1", &[22]);
    s.band = (100, 101);
    let err = azure
        .nsgs
        .ensure_rule(NSG, &s)
        .await
        .expect_err("band is full");
    assert!(
        matches!(err, AzureError::BandFull { band: (100, 101) }),
        "{err:?}"
    );
    assert!(requests_where(&sim, "PUT", "").is_empty());
}

#[tokio::test]
async fn a_priority_taken_meanwhile_by_someone_else_moves_to_the_next_free_number() {
    let (sim, azure) = setup().await;
    // Hold the NSG read so another writer can take priority 100 between our read and our PUT.
    sim.inject(
        Fault::Delay(Duration::from_secs(1))
            .on(On::get().path_contains("/networkSecurityGroups/web1-nsg")),
    );
    let nsgs = azure.nsgs.clone();
    let task =
        tokio::spawn(async move { nsgs.ensure_rule(NSG, &spec("jitbot-req_1", &[22])).await });
    wait_until(Duration::from_secs(5), "the NSG read", || {
        !requests_where(&sim, "GET", "web1-nsg").is_empty()
    })
    .await;
    sim.put_existing_rule(NSG, customer_rule("portal-rule", 100, "Inbound"));
    let applied = task.await.expect("join").expect("ensure_rule");
    assert_eq!(applied.priority, 101);
    let puts = requests_where(&sim, "PUT", "jitbot-req_1");
    assert_eq!(puts.len(), 2);
    assert_eq!(
        (puts[0].status, puts[0].error_code.as_deref()),
        (400, Some("SecurityRuleConflict"))
    );
    assert_eq!(puts[1].status, 201);
}

#[tokio::test]
async fn list_rules_follows_next_link() {
    let (sim, azure) = setup_with(
        ArmSimOptions {
            page_size: 2,
            ..ArmSimOptions::default()
        },
        |_| {},
    )
    .await;
    for i in 0..5 {
        sim.put_existing_rule(NSG, customer_rule(&format!("rule-{i}"), 200 + i, "Inbound"));
    }
    let rules = azure.nsgs.list_rules(NSG).await.expect("list_rules");
    let names: Vec<_> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["rule-0", "rule-1", "rule-2", "rule-3", "rule-4"]);
    assert_eq!(requests_where(&sim, "GET", "/securityRules").len(), 3);
}

#[tokio::test]
async fn an_unknown_nsg_is_nsg_not_found() {
    let (_sim, azure) = setup().await;
    let other = NSG.replace("web1-nsg", "nope-nsg");
    let err = azure
        .nsgs
        .ensure_rule(&other, &spec("jitbot-req_1", &[22]))
        .await
        .expect_err("no such NSG");
    assert!(matches!(err, AzureError::NsgNotFound(_)), "{err:?}");
    let err = azure
        .nsgs
        .list_rules(&other)
        .await
        .expect_err("no such NSG");
    assert!(matches!(err, AzureError::NsgNotFound(_)), "{err:?}");
}

/// The emulator refuses what real ARM refuses (so the client tests above mean something).
#[tokio::test]
async fn the_emulator_validates_put_bodies_like_arm() {
    init();
    let sim = ArmSim::start(ArmSimOptions::default())
        .await
        .expect("start ARM emulator");
    sim.add_nsg(NSG, "westeurope");
    sim.put_existing_rule(NSG, customer_rule("allow-https", 100, "Inbound"));
    let http = reqwest::Client::new();
    let put = |name: &str, properties: Value| {
        let req = http
            .put(format!(
                "{}{NSG}/securityRules/{name}?api-version=2024-05-01",
                sim.base_url
            ))
            .bearer_auth("t")
            .json(&json!({ "properties": properties }));
        async move {
            let resp = req.send().await.expect("send");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_string(),
            )
        }
    };
    let good = json!({
        "protocol": "Tcp", "access": "Allow", "priority": 300, "direction": "Inbound",
        "sourcePortRange": "*", "destinationPortRange": "22",
        "sourceAddressPrefix": "203.0.113.7/32", "destinationAddressPrefix": "10.0.1.4"
    });
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        if v.is_null() {
            b.as_object_mut().expect("object").remove(k);
        } else {
            b[k] = v;
        }
        b
    };
    let cases = [
        (
            with("destinationPortRange", json!("22,3389")),
            "SecurityRuleInvalidPortRange",
        ),
        (
            with("destinationPortRange", json!("70000")),
            "SecurityRuleInvalidPortRange",
        ),
        (with("priority", json!(5000)), "SecurityRuleInvalidPriority"),
        (with("priority", json!(100)), "SecurityRuleConflict"),
        (
            with("protocol", json!("Http")),
            "SecurityRuleParameterContainsUnsupportedValue",
        ),
        (with("protocol", Value::Null), "InvalidRequestFormat"),
        (with("access", Value::Null), "InvalidRequestFormat"),
        (with("direction", Value::Null), "InvalidRequestFormat"),
        (
            with("description", json!("x".repeat(141))),
            "SecurityRuleParameterContainsUnsupportedValue",
        ),
        (
            with("sourceAddressPrefix", Value::Null)
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("sourceAddressPrefixes".into(), json!(["Internet"]));
                    Value::Object(o)
                })
                .expect("object"),
            "SecurityRuleInvalidAddressPrefix",
        ),
        (
            with("destinationPortRanges", json!(["22", "3389"])),
            "SecurityRuleInvalidPortRange",
        ),
    ];
    for (props, code) in cases {
        assert_eq!(
            put("r1", props.clone()).await,
            (400, code.to_string()),
            "{props}"
        );
    }
    assert_eq!(put("bad/name!", good.clone()).await.0, 404); // not a rule path at all
    assert_eq!(
        put("-bad", good.clone()).await,
        (400, "InvalidResourceName".into())
    );
    // Outbound may reuse an inbound priority; the plural port field takes a list.
    let mut outbound = with("direction", json!("Outbound"));
    outbound["priority"] = json!(100);
    assert_eq!(put("r-out", outbound).await.0, 201);
    // While that operation runs, the NSG takes no other write.
    let mut plural = with("destinationPortRange", Value::Null);
    plural["destinationPortRanges"] = json!(["22", "3389-3390"]);
    let busy = put("r-plural", plural.clone()).await;
    assert!(
        [
            (429, "RetryableError".to_string()),
            (409, "AnotherOperationInProgress".to_string())
        ]
        .contains(&busy),
        "{busy:?}"
    );
    wait_until(Duration::from_secs(5), "the operation to finish", || {
        sim.operations().iter().all(|o| o.finished.is_some())
    })
    .await;
    assert_eq!(put("r-plural", plural).await.0, 201);
    // No token, no service.
    let resp = http
        .get(format!("{}{NSG}?api-version=2024-05-01", sim.base_url))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
}

#[cfg(feature = "demo")]
#[tokio::test]
async fn the_simulated_backend_runs_the_same_client_against_the_emulator() {
    init();
    let settings = AzureSettings::with_backend(Backend::Simulated);
    // What `Application::build` does for a simulated backend.
    let simulated = jitbot::demo::simulated_arm().await.expect("emulator");
    let azure = connect(
        &settings,
        AzureOverrides {
            simulated_endpoint: Some(simulated.base_url().parse().unwrap()),
            ..AzureOverrides::default()
        },
    )
    .await
    .expect("connect");
    assert!(azure.simulated);
    let sim = simulated.emulator().clone();
    let applied = azure
        .nsgs
        .ensure_rule(NSG, &spec("jitbot-req_1", &[22]))
        .await
        .expect("ensure_rule");
    assert_eq!(applied.priority, 100);
    let rule = sim.rule(NSG, "jitbot-req_1").expect("rule in the emulator");
    assert_eq!(
        rule.properties.provisioning_state.as_deref(),
        Some("Succeeded")
    );
    assert!(
        sim.requests()
            .iter()
            .all(|r| r.bearer.as_deref() == Some("simulated-token"))
    );
    azure
        .nsgs
        .remove_rule(NSG, "jitbot-req_1")
        .await
        .expect("remove_rule");
    assert!(sim.rules(NSG).is_empty());
}

#[cfg(not(feature = "demo"))]
#[tokio::test]
async fn the_simulated_backend_is_refused_without_the_demo_feature() {
    init();
    let settings = AzureSettings::with_backend(Backend::Simulated);
    let Err(e) = connect(&settings, AzureOverrides::default()).await else {
        panic!("a build without the demo feature connected to the simulated backend");
    };
    assert!(
        e.to_string()
            .contains("built without the `demo` feature (cargo build --no-default-features)"),
        "{e}"
    );
}

#[test]
fn settings_parse_from_toml_with_defaults_and_refuse_unknown_keys() {
    #[derive(serde::Deserialize)]
    struct File {
        azure: AzureSettings,
    }
    let f: File = toml::from_str(
        r#"
        [azure]
        backend = "arm"
        credential = "workload_identity"
        request_timeout = "10s"
        operation_timeout = "2m"
        "#,
    )
    .expect("parse");
    let s = f.azure;
    assert_eq!(s.backend, Backend::Arm);
    assert_eq!(s.request_timeout, Duration::from_secs(10));
    assert_eq!(s.operation_timeout, Duration::from_secs(120));
    assert_eq!(s.retry_budget, Duration::from_secs(120));
    assert_eq!(s.api_version, jitbot::azure::API_VERSION_DEFAULT);
    assert_eq!(s.arm_endpoint.as_str(), "https://management.azure.com/");

    let unknown = toml::from_str::<File>("[azure]\nbackend = \"arm\"\nclient_secret = \"x\"\n");
    assert!(
        unknown.is_err(),
        "the secret never comes from the config file"
    );
    let no_backend = toml::from_str::<File>("[azure]\n");
    assert!(no_backend.is_err(), "the backend must be chosen explicitly");
    let bad_duration =
        toml::from_str::<File>("[azure]\nbackend = \"arm\"\nretry_budget = \"soon\"\n");
    let msg = bad_duration
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("30s"), "{msg}");
}

#[tokio::test]
async fn the_arm_backend_without_a_credential_says_what_to_set() {
    init();
    let settings = AzureSettings::with_backend(Backend::Arm);
    let err = connect(&settings, AzureOverrides::default())
        .await
        .err()
        .expect("must fail");
    assert!(format!("{err:#}").contains("azure.credential"), "{err:#}");
}
