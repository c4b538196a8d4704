//! The reconciler, drift alerts, the revocation-delayed alert and audit checkpoints, black-box:
//! rules are changed behind jitbot's back in the ARM emulator; assertions are on what the
//! emulator holds and received, the audit trail and the audit channel.

use crate::helpers::*;
use jitbot::domain::Status;
use jitbot::store::{Backend, RequestRow, audit};
use jitbot_sim::arm::{Fault, On, SecurityRule, SecurityRuleProperties};
use std::time::{Duration, Instant};

/// A change someone makes to a rule in the portal.
type Edit = Box<dyn Fn(&mut SecurityRuleProperties)>;

/// Short enough that a pass runs several times per test.
const FAST: &str = "reconcile_interval = \"300ms\"";

fn rule(name: &str, priority: i32, source: &str, port: &str, access: &str) -> SecurityRule {
    SecurityRule {
        name: name.to_string(),
        id: None,
        etag: None,
        resource_type: None,
        properties: SecurityRuleProperties {
            description: Some(format!("{name} (made by hand)")),
            protocol: "Tcp".into(),
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

/// Everything about a rule except the etag, which ARM shares across the NSG and changes on
/// every write to any rule.
fn fingerprint(r: &SecurityRule) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap();
    v.as_object_mut().unwrap().remove("etag");
    v
}

async fn open_grant(app: &TestApp, text: &str) -> RequestRow {
    let id = app.submit(STEVE, text).await;
    assert_eq!(app.click(ALICE, &id, true).await, 200);
    app.wait_status(&id, Status::Active, Duration::from_secs(10))
        .await
}

async fn wait_event(app: &TestApp, kind: &str, request_id: Option<&str>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if app
            .events_of(kind)
            .await
            .iter()
            .any(|e| request_id.is_none_or(|id| e.request_id.as_deref() == Some(id)))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} event for {request_id:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rule_writes(app: &TestApp, name: &str) -> Vec<String> {
    app.arm
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(name) && (r.method == "PUT" || r.method == "DELETE"))
        .map(|r| format!("{} {}", r.method, r.status))
        .collect()
}

/// The rule in the emulator says what the grant says.
fn assert_matches_grant(rule: &SecurityRule, g: &RequestRow) {
    let p = &rule.properties;
    assert_eq!(p.source_prefixes(), vec![g.source.clone()], "source");
    assert_eq!(
        p.destination_prefixes(),
        vec![g.destination.clone()],
        "destination"
    );
    let mut ports = p.destination_ports();
    ports.sort();
    let mut want: Vec<String> = g.ports.split(',').map(str::to_string).collect();
    want.sort();
    assert_eq!(ports, want, "ports");
    assert!(p.protocol.eq_ignore_ascii_case(&g.protocol), "protocol");
    assert_eq!(Some(i64::from(p.priority)), g.rules[0].priority, "priority");
    assert_eq!(p.access, "Allow");
    assert_eq!(p.direction, "Inbound");
}

/// Whether the rule in the emulator says what the grant says (for waiting on a repair).
fn matches_grant(rule: &SecurityRule, g: &RequestRow) -> bool {
    let p = &rule.properties;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    p.source_prefixes() == vec![g.source.clone()]
        && p.destination_prefixes() == vec![g.destination.clone()]
        && sorted(p.destination_ports()) == sorted(g.ports.split(',').map(str::to_string).collect())
        && p.protocol.eq_ignore_ascii_case(&g.protocol)
        && Some(i64::from(p.priority)) == g.rules[0].priority
        && p.access == "Allow"
        && p.direction == "Inbound"
}

backends! {
#[tokio::test]
async fn an_orphan_jitbot_rule_is_removed_and_foreign_rules_are_untouched() {
    let app = spawn_app_tuned(FAST, &[], "").await;
    let grant = open_grant(&app, "web1 22 1h").await;
    let orphan = "jitbot-req_zzzz2222";
    let foreign_outside = rule("allow-bastion", 300, "10.9.0.0/16", "22", "Allow");
    // Inside jitbot's band (100-199), and named almost like jitbot's rules (not in its
    // namespace, `jitbot-`).
    let foreign_in_band = rule("jitbot_manual", 101, "198.51.100.0/24", "443", "Allow");
    let foreign_deny = rule("deny-telnet", 150, "*", "23", "Deny");
    for r in [&foreign_outside, &foreign_in_band, &foreign_deny] {
        app.arm.put_existing_rule(NSG, r.clone());
    }
    let before: Vec<_> = ["allow-bastion", "jitbot_manual", "deny-telnet"]
        .iter()
        .map(|n| fingerprint(&app.arm.rule(NSG, n).unwrap()))
        .collect();
    app.arm
        .put_existing_rule(NSG, rule(orphan, 120, "192.0.2.66", "3389", "Allow"));

    app.wait_until("orphan removed", Duration::from_secs(5), |a| {
        a.arm.rule(NSG, orphan).is_none()
    })
    .await;
    wait_event(
        &app,
        "drift_orphan_removed",
        Some("req_zzzz2222"),
        Duration::from_secs(3),
    )
    .await;
    let removed = &app.events_of("drift_orphan_removed").await[0];
    assert_eq!(removed.detail["rule"], orphan);
    assert!(
        removed.detail["reason"]
            .as_str()
            .unwrap()
            .contains("unknown")
    );
    assert_eq!(removed.detail["rule_was"]["sources"][0], "192.0.2.66");
    app.wait_until("audit channel told", Duration::from_secs(3), |a| {
        a.audit_feed().iter().any(|t| {
            t.contains("stray rule removed") && t.contains(orphan) && t.contains("192.0.2.66")
        })
    })
    .await;
    let summaries = app.events_of("reconciled").await;
    assert_eq!(summaries.len(), 1, "one summary: {summaries:?}");
    assert_eq!(summaries[0].detail["orphans"][0]["rule"], orphan);

    // Several more passes: nothing else found, nothing else written, no summary spam.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.events_of("reconciled").await.len(), 1);
    assert_eq!(app.events_of("drift_orphan_removed").await.len(), 1);
    let after: Vec<_> = ["allow-bastion", "jitbot_manual", "deny-telnet"]
        .iter()
        .map(|n| fingerprint(&app.arm.rule(NSG, n).unwrap()))
        .collect();
    assert_eq!(before, after, "foreign rules are byte-for-byte unchanged");
    for name in ["allow-bastion", "jitbot_manual", "deny-telnet"] {
        assert!(
            rule_writes(&app, name).is_empty(),
            "{name} was never written"
        );
    }
    // The active grant was left alone: one PUT, no drift event.
    assert_eq!(app.writes(&grant.id), vec!["PUT 201"]);
    assert!(app.events_of("drift_restored").await.is_empty());
    assert_eq!(rule_writes(&app, orphan), vec!["DELETE 202"]);
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn an_allow_in_jitbots_namespace_that_is_no_grant_is_removed_and_other_deployments_rules_stay() {
    let namespace = "retry_budget = \"10s\"\nrule_prefix = \"jitbot-prod-\"\nother_prefixes = [\"jitbot-staging-\"]";
    let app = spawn_app_tuned(FAST, &[("retry_budget = \"10s\"", namespace)], "").await;
    let grant = open_grant(&app, "web1 22 1h").await;
    assert!(grant.rule_name.starts_with("jitbot-prod-req_"), "{}", grant.rule_name);
    assert!(app.arm.rule(NSG, &grant.rule_name).is_some());
    let rogue = "jitbot-prod-rogue";
    let kept = [
        // A Deny in the namespace: removing it could only add access.
        rule("jitbot-prod-hold", 130, "*", "22", "Deny"),
        // Another deployment's grant, and a rule under the default prefix (not this one's).
        rule("jitbot-staging-req_zzzz3333", 140, "192.0.2.33", "22", "Allow"),
        rule("jitbot-req_zzzz5555", 141, "192.0.2.55", "22", "Allow"),
    ];
    for r in &kept {
        app.arm.put_existing_rule(NSG, r.clone());
    }
    let before: Vec<_> = kept
        .iter()
        .map(|r| fingerprint(&app.arm.rule(NSG, &r.name).unwrap()))
        .collect();
    app.arm
        .put_existing_rule(NSG, rule(rogue, 120, "192.0.2.66", "22", "Allow"));

    app.wait_until("stray removed", Duration::from_secs(5), |a| {
        a.arm.rule(NSG, rogue).is_none()
    })
    .await;
    wait_event(&app, "drift_orphan_removed", None, Duration::from_secs(3)).await;
    let removed = &app.events_of("drift_orphan_removed").await[0];
    assert_eq!(removed.detail["rule"], rogue);
    assert_eq!(removed.request_id, None);
    let reason = removed.detail["reason"].as_str().unwrap();
    assert!(reason.contains("namespace (`jitbot-prod-`)"), "{reason}");
    app.wait_until("audit channel told", Duration::from_secs(3), |a| {
        a.audit_feed()
            .iter()
            .any(|t| t.contains("stray rule removed") && t.contains(rogue))
    })
    .await;

    // Several more passes: the others stay as they are, never written; the grant is untouched.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after: Vec<_> = kept
        .iter()
        .map(|r| fingerprint(&app.arm.rule(NSG, &r.name).unwrap()))
        .collect();
    assert_eq!(before, after);
    for r in &kept {
        assert!(rule_writes(&app, &r.name).is_empty(), "{} was written", r.name);
    }
    assert_eq!(rule_writes(&app, rogue), vec!["DELETE 202"]);
    assert_eq!(app.events_of("drift_orphan_removed").await.len(), 1);
    assert_eq!(rule_writes(&app, &grant.rule_name), vec!["PUT 201"]);
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn rules_of_closed_or_unapproved_requests_that_reappear_are_removed() {
    let app = spawn_app_tuned(FAST, &[], "").await;
    let grant = open_grant(&app, "web1 22 1s").await;
    let open_rule = app.rule(&grant.id).unwrap();
    app.wait_status(&grant.id, Status::Revoked, Duration::from_secs(8))
        .await;
    // A request nobody approved in time (pending_ttl = 2s).
    let expired = app.submit(STEVE, "web1 3389 1h").await;
    app.wait_status(&expired, Status::Expired, Duration::from_secs(6))
        .await;

    // Someone restores the old rule from a template, and makes one for the expired request.
    app.arm.put_existing_rule(NSG, open_rule);
    app.arm.put_existing_rule(
        NSG,
        rule(
            &format!("jitbot-{expired}"),
            130,
            "203.0.113.7",
            "3389",
            "Allow",
        ),
    );
    app.wait_until("both removed", Duration::from_secs(5), |a| {
        a.rule(&grant.id).is_none() && a.rule(&expired).is_none()
    })
    .await;
    wait_event(
        &app,
        "drift_orphan_removed",
        Some(&grant.id),
        Duration::from_secs(3),
    )
    .await;
    wait_event(
        &app,
        "drift_orphan_removed",
        Some(&expired),
        Duration::from_secs(3),
    )
    .await;
    let reasons: Vec<String> = app
        .events_of("drift_orphan_removed")
        .await
        .iter()
        .map(|e| e.detail["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.iter().any(|r| r.ends_with("is revoked")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.ends_with("is expired")),
        "{reasons:?}"
    );
    // The requests stay closed.
    assert_eq!(app.request(&grant.id).await.status, Status::Revoked);
    assert_eq!(app.request(&expired).await.status, Status::Expired);
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn a_deleted_rule_ends_the_grant_and_is_never_re_created() {
    let app = spawn_app_tuned(FAST, &[], "").await;
    // Two ports (the plural `destinationPortRanges`); short, so its revoke job runs in the test.
    let grant = open_grant(&app, "web1 22,3389 4s").await;
    assert_eq!(grant.ports, "22,3389");
    // An incident responder closes the door in the portal.
    assert!(app.arm.delete_rule_directly(NSG, &grant.rule_name));
    let deleted_at = Instant::now();
    let closed = app
        .wait_status(&grant.id, Status::Revoked, Duration::from_secs(3))
        .await;
    println!("METRIC drift_close_ms={}", deleted_at.elapsed().as_millis());
    assert_eq!(
        closed.detail.as_deref(),
        Some("closed in Azure outside jitbot")
    );
    assert!(closed.closed_at.unwrap() < grant.expires_at.unwrap());
    wait_event(&app, "drift_closed", Some(&grant.id), Duration::from_secs(3)).await;
    let ev = &app.events_of("drift_closed").await[0];
    assert_eq!(ev.detail["rule"], grant.rule_name.as_str());
    app.wait_until(
        "the requester, the card and the audit channel are told",
        Duration::from_secs(3),
        |a| {
            a.dms(STEVE)
                .iter()
                .any(|t| t.contains("outside jitbot") && t.contains(&grant.rule_name))
                && a.card_text(&grant.id)
                    .contains("closed in Azure outside jitbot")
                && a.audit_feed().iter().any(|t| {
                    t.contains("Access closed outside jitbot") && t.contains(&grant.rule_name)
                })
        },
    )
    .await;
    let summaries = app.events_of("reconciled").await;
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert_eq!(summaries[0].detail["closed"][0]["request_id"], grant.id.as_str());

    // Past its expiry: the queued revoke job finds the grant closed and does nothing.
    let deadline = Instant::now() + Duration::from_secs(8);
    while !app
        .store
        .job_counts()
        .await
        .unwrap()
        .contains(&("revoke".into(), "done".into(), 1))
    {
        assert!(Instant::now() < deadline, "the revoke job did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Several passes later: never re-created, never written again.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(app.rule(&grant.id).is_none());
    assert_eq!(app.writes(&grant.id), vec!["PUT 201"]);
    assert_eq!(app.events_of("drift_closed").await.len(), 1);
    assert!(app.events_of("drift_restored").await.is_empty());
    assert!(
        app.events_of("revoked")
            .await
            .iter()
            .all(|e| e.request_id.as_deref() != Some(&grant.id)),
        "the revoke job did not close it a second time"
    );
    assert_eq!(app.request(&grant.id).await.status, Status::Revoked);
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn widening_edits_are_put_back_within_one_interval_and_named() {
    let app = spawn_app_tuned(FAST, &[], "").await;
    let grant = open_grant(&app, "web1 22 1h").await;
    let original = app.rule(&grant.id).unwrap();
    // (what the alert must name, the edit)
    let edits: Vec<(&str, Edit)> = vec![
        (
            "source",
            Box::new(|p| p.source_address_prefix = Some("0.0.0.0/0".into())),
        ),
        (
            "ports",
            Box::new(|p| p.destination_port_range = Some("1-65535".into())),
        ),
        ("protocol", Box::new(|p| p.protocol = "*".into())),
        (
            "destination",
            Box::new(|p| p.destination_address_prefix = Some("10.0.1.5".into())),
        ),
        // A lower number takes precedence over more rules (a Deny that used to win may lose).
        ("priority", Box::new(|p| p.priority = 90)),
        ("direction", Box::new(|p| p.direction = "Outbound".into())),
        (
            "source, ports",
            Box::new(|p| {
                p.source_address_prefix = Some("*".into());
                p.destination_port_range = Some("*".into());
            }),
        ),
    ];
    let mut slowest = Duration::ZERO;
    for (n, (what, edit)) in edits.iter().enumerate() {
        let mut edited = original.clone();
        edit(&mut edited.properties);
        app.arm.put_existing_rule(NSG, edited);
        let edited_at = Instant::now();
        let deadline = edited_at + Duration::from_secs(5);
        while !app.rule(&grant.id).is_some_and(|r| {
            r.properties.provisioning_state.as_deref() == Some("Succeeded")
                && matches_grant(&r, &grant)
        }) {
            assert!(Instant::now() < deadline, "{what} widening not put back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = edited_at.elapsed();
        slowest = slowest.max(took);
        // One interval (300 ms) until the next pass, plus the PUT and its polling.
        assert!(
            took < Duration::from_millis(2500),
            "{what}: put back after {took:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        while app.events_of("drift_restored").await.len() <= n {
            assert!(Instant::now() < deadline, "{what}: no drift_restored event");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ev = &app.events_of("drift_restored").await[n];
        let want: Vec<&str> = what.split(", ").collect();
        assert_eq!(ev.detail["widened"], serde_json::json!(want), "{what}");
        app.wait_until("the alert names the widening", Duration::from_secs(3), |a| {
            a.audit_feed().iter().any(|t| {
                t.contains("Drift alert")
                    && t.contains(&grant.rule_name)
                    && t.contains(&format!("(widened: {what})"))
            })
        })
        .await;
    }
    println!("METRIC widening_repair_ms={}", slowest.as_millis());
    assert!(
        app.audit_feed()
            .iter()
            .any(|t| t.contains("source is 0.0.0.0/0 instead of 203.0.113.7"))
    );
    // Each put back once, then left alone; the grant is unchanged.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(app.writes(&grant.id).len(), 1 + edits.len());
    assert_eq!(app.events_of("drift_restored").await.len(), edits.len());
    assert!(app.events_of("drift_narrowed").await.is_empty());
    assert!(app.events_of("drift_closed").await.is_empty());
    let now = app.request(&grant.id).await;
    assert_eq!(now.status, Status::Active);
    assert_eq!(now.rules[0].priority, grant.rules[0].priority);
    assert_eq!(now.expires_at, grant.expires_at, "the clock is not reset");
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn narrowing_edits_are_left_as_made_reported_once_and_closed_at_expiry() {
    let app = spawn_app_tuned(FAST, &[], "").await;
    // (what narrowed, the request, the edit)
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "source",
            "web1 22 8s from 203.0.113.0/24",
            Box::new(|p| p.source_address_prefix = Some("203.0.113.7".into())),
        ),
        (
            "access",
            "web1 22 8s",
            Box::new(|p| p.access = "Deny".into()),
        ),
        // A higher number can only lose precedence.
        ("priority", "web1 22 8s", Box::new(|p| p.priority = 180)),
    ];
    let mut grants = Vec::new();
    for (_, text, _) in &cases {
        grants.push(open_grant(&app, text).await);
    }
    let mut made = Vec::new();
    for ((_, _, edit), grant) in cases.iter().zip(&grants) {
        let mut edited = app.rule(&grant.id).unwrap();
        edit(&mut edited.properties);
        app.arm.put_existing_rule(NSG, edited);
        made.push(fingerprint(&app.rule(&grant.id).unwrap()));
    }
    for grant in &grants {
        wait_event(&app, "drift_narrowed", Some(&grant.id), Duration::from_secs(3)).await;
    }
    // Several passes: the rules stay exactly as the person made them.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for (((what, _, _), grant), made) in cases.iter().zip(&grants).zip(&made) {
        assert_eq!(
            &fingerprint(&app.rule(&grant.id).unwrap()),
            made,
            "{what}: the person's rule is byte-for-byte unchanged"
        );
        assert_eq!(app.writes(&grant.id), vec!["PUT 201"], "{what}: no PUT");
        let events: Vec<_> = app
            .events_of("drift_narrowed")
            .await
            .into_iter()
            .filter(|e| e.request_id.as_deref() == Some(&grant.id))
            .collect();
        assert_eq!(events.len(), 1, "{what}: reported once");
        assert_eq!(events[0].detail["narrowed"], serde_json::json!([what]));
        assert_eq!(app.request(&grant.id).await.status, Status::Active);
    }
    app.wait_until("one message per grant", Duration::from_secs(3), |a| {
        a.audit_feed()
            .iter()
            .filter(|t| t.contains("rule narrowed"))
            .count()
            == cases.len()
    })
    .await;
    assert!(
        app.audit_feed()
            .iter()
            .any(|t| t.contains("rule narrowed") && t.contains("access is Deny instead of Allow"))
    );
    assert!(app.events_of("drift_restored").await.is_empty());
    assert!(app.events_of("drift_closed").await.is_empty());

    // Closed at expiry as usual, from the person's rule.
    for ((what, _, _), grant) in cases.iter().zip(&grants) {
        app.wait_status(&grant.id, Status::Revoked, Duration::from_secs(15))
            .await;
        assert!(app.rule(&grant.id).is_none(), "{what}: rule gone");
        let writes = app.writes(&grant.id);
        assert_eq!(writes.first().map(String::as_str), Some("PUT 201"));
        assert_eq!(writes.iter().filter(|w| w.starts_with("PUT")).count(), 1);
        assert!(writes.last().unwrap().starts_with("DELETE"), "{what}: {writes:?}");
    }
    assert_eq!(app.events_of("drift_narrowed").await.len(), cases.len());
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn a_restored_rule_whose_priority_was_taken_gets_a_free_one_and_it_is_recorded() {
    let app = spawn_app_tuned(FAST, &[], "").await;
    let grant = open_grant(&app, "web1 22 1h").await;
    assert_eq!(grant.rules[0].priority, Some(100));
    // Someone puts their own rule at jitbot's priority, then moves jitbot's rule out of the way
    // and opens it to the world.
    let intruder = rule("ops-temp", 100, "198.51.100.0/24", "8080", "Allow");
    app.arm.put_existing_rule(NSG, intruder);
    let before = fingerprint(&app.arm.rule(NSG, "ops-temp").unwrap());
    let mut widened = app.rule(&grant.id).unwrap();
    widened.properties.source_address_prefix = Some("*".into());
    widened.properties.priority = 150;
    app.arm.put_existing_rule(NSG, widened);
    let row = app
        .wait_until_row(&grant.id, Duration::from_secs(5), |r| {
            r.rules[0].priority == Some(101)
        })
        .await;
    app.wait_until("rule restored", Duration::from_secs(3), |a| {
        a.rule(&grant.id).is_some_and(|r| matches_grant(&r, &row))
    })
    .await;
    let restored = app.rule(&grant.id).unwrap();
    assert_eq!(restored.properties.priority, 101);
    assert_matches_grant(&restored, &row);
    assert_eq!(
        fingerprint(&app.arm.rule(NSG, "ops-temp").unwrap()),
        before,
        "the other rule is untouched"
    );
    assert!(rule_writes(&app, "ops-temp").is_empty());
    app.wait_until(
        "alert names the widening and the new priority",
        Duration::from_secs(3),
        |a| {
            a.audit_feed().iter().any(|t| {
                t.contains("Drift alert")
                    && t.contains("(widened: source)")
                    && t.contains("now has priority 101")
            })
        },
    )
    .await;
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn the_reconciler_runs_at_start() {
    // A long interval: only the pass at start can fix what happened while jitbot was down.
    let mut app = spawn_app_tuned("reconcile_interval = \"1h\"", &[], "").await;
    let grant = open_grant(&app, "web1 22 1h").await;
    app.crash().await;
    let mut widened = app.rule(&grant.id).unwrap();
    widened.properties.source_address_prefix = Some("0.0.0.0/0".into());
    app.arm.put_existing_rule(NSG, widened);
    app.arm.put_existing_rule(
        NSG,
        rule("jitbot-req_zzzz3333", 140, "192.0.2.9", "22", "Allow"),
    );
    let started = Instant::now();
    app.start().await;
    app.wait_until("fixed at start", Duration::from_secs(5), |a| {
        a.rule(&grant.id).is_some_and(|r| matches_grant(&r, &grant))
            && a.arm.rule(NSG, "jitbot-req_zzzz3333").is_none()
    })
    .await;
    println!(
        "METRIC reconcile_after_restart_ms={}",
        started.elapsed().as_millis()
    );
    wait_event(
        &app,
        "drift_restored",
        Some(&grant.id),
        Duration::from_secs(3),
    )
    .await;
    wait_event(
        &app,
        "drift_orphan_removed",
        Some("req_zzzz3333"),
        Duration::from_secs(3),
    )
    .await;
    // One reconcile job, rescheduled an hour ahead (a singleton, not one per start).
    let counts = app.store.job_counts().await.unwrap();
    let reconcile: i64 = counts
        .iter()
        .filter(|(k, s, _)| k == "reconcile" && (s == "queued" || s == "running"))
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(reconcile, 1, "{counts:?}");
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn a_revocation_arm_refuses_for_long_raises_one_alert_then_closes() {
    let app = spawn_app_tuned(
        "revocation_alert_after = \"2500ms\"",
        &[("retry_budget = \"10s\"", "retry_budget = \"1s\"")],
        "",
    )
    .await;
    let grant = open_grant(&app, "web1 22 2s").await;
    // ARM answers every DELETE with 503 from now on.
    app.arm.start_outage(
        Fault::Unavailable {
            retry_after_secs: 0,
        }
        .on(On::delete()),
    );
    let expires = grant.expires_at.unwrap();
    wait_event(
        &app,
        "revocation_delayed",
        Some(&grant.id),
        Duration::from_secs(12),
    )
    .await;
    let alert = &app.events_of("revocation_delayed").await[0];
    let alert_late = alert.detail["late_ms"].as_i64().unwrap();
    println!(
        "METRIC revocation_alert_after_expiry_ms={}",
        alert.at - expires
    );
    assert!(alert_late >= 2500, "alerted {alert_late} ms late");
    assert!(
        alert.at - expires < 6000,
        "alert came {} ms after expiry",
        alert.at - expires
    );
    let last_error = alert.detail["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("503") || last_error.to_lowercase().contains("unavailable"),
        "last error recorded: {last_error:?}"
    );
    app.wait_until("alert in the audit channel", Duration::from_secs(3), |a| {
        a.audit_feed().iter().any(|t| {
            t.contains("Revocation delayed")
                && t.contains("web1")
                && t.contains("web1-nsg")
                && t.contains(&grant.rule_name)
                && t.contains("Last error")
        })
    })
    .await;
    assert!(
        app.rule(&grant.id).is_some(),
        "still open while ARM refuses"
    );
    // Longer than the alert threshold again: still one alert.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(app.events_of("revocation_delayed").await.len(), 1);
    let metrics = |app: &TestApp| {
        let url = format!("{}/metrics", app.base);
        let http = app.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let overdue = metrics(&app).await;
    let line = overdue
        .lines()
        .find(|l| l.starts_with("jitbot_grant_overdue_seconds{target=\"web1\"}"))
        .unwrap_or_else(|| panic!("no overdue series: {overdue}"));
    let secs: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((5..30).contains(&secs), "{line}");

    app.arm.end_outage();
    let closed = app
        .wait_status(&grant.id, Status::Revoked, Duration::from_secs(25))
        .await;
    assert!(app.rule(&grant.id).is_none());
    assert!(!metrics(&app).await.contains("jitbot_grant_overdue_seconds{"));
    let late = closed.closed_at.unwrap() - expires;
    println!("METRIC delayed_revocation_closed_after_expiry_ms={late}");
    app.wait_until(
        "closed message says how late",
        Duration::from_secs(3),
        |a| {
            a.audit_feed()
                .iter()
                .any(|t| t.contains("is closed") && t.contains("after its expiry"))
        },
    )
    .await;
    assert_eq!(app.events_of("revocation_delayed").await.len(), 1);
    let failed_deletes = app
        .arm
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.status == 503)
        .count();
    assert!(failed_deletes >= 3, "ARM refused {failed_deletes} DELETEs");
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn a_revocation_that_closes_in_time_raises_no_alert() {
    let app = spawn_app_tuned("revocation_alert_after = \"2s\"", &[], "").await;
    let grant = open_grant(&app, "web1 22 1s").await;
    app.wait_status(&grant.id, Status::Revoked, Duration::from_secs(6))
        .await;
    // Past expiry + the alert threshold: the watch has run and found the grant closed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let counts = app.store.job_counts().await.unwrap();
    assert!(
        counts.contains(&("revocation_watch".into(), "done".into(), 1)),
        "{counts:?}"
    );
    assert!(app.events_of("revocation_delayed").await.is_empty());
    assert!(
        !app.audit_feed()
            .iter()
            .any(|t| t.contains("Revocation delayed") || t.contains("after its expiry"))
    );
}
}

/// `jitbot audit verify` as an operator runs it.
fn cli_verify(db: &str, checkpoint: Option<&str>) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jitbot"));
    cmd.args(["audit", "verify", "--config", "/nonexistent.toml"])
        .env("JITBOT_DATABASE_URL", db);
    if let Some(cp) = checkpoint {
        cmd.args(["--checkpoint", cp]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

backends! {
#[tokio::test]
async fn checkpoints_are_posted_and_expose_a_rewritten_database() {
    let mut app = spawn_app_tuned("checkpoint_interval = \"500ms\"", &[], "").await;
    app.wait_until(
        "a checkpoint in the audit channel",
        Duration::from_secs(5),
        |a| {
            a.audit_feed()
                .iter()
                .any(|t| t.contains("Audit checkpoint"))
        },
    )
    .await;
    // Nothing happens for three intervals: no new checkpoint.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let first: Vec<String> = app
        .audit_feed()
        .into_iter()
        .filter(|t| t.contains("Audit checkpoint"))
        .collect();
    assert_eq!(first.len(), 1, "{first:?}");
    let events = app.events_of("checkpoint").await;
    assert_eq!(events.len(), 1);
    let seq = events[0].detail["seq"].as_i64().unwrap();
    let hash = events[0].detail["hash"].as_str().unwrap().to_string();
    let cp = format!("{seq}:{hash}");
    assert!(
        first[0].contains(&format!("--checkpoint {cp}")),
        "{}",
        first[0]
    );

    // The chain moves: a second checkpoint.
    app.submit(STEVE, "web1 22 1h").await;
    app.wait_until("a second checkpoint", Duration::from_secs(5), |a| {
        a.audit_feed()
            .iter()
            .filter(|t| t.contains("Audit checkpoint"))
            .count()
            == 2
    })
    .await;
    app.crash().await;

    let db = app.database_url();
    let (code, out) = cli_verify(&db, Some(&cp));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("checkpoint OK"), "{out}");

    // An attacker with database access rewrites event 1 and re-hashes everything after it.
    let pool = &app.sql;
    let drop_triggers: &[&str] = match app.store.backend() {
        Backend::Sqlite => &[
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_events_no_delete",
        ],
        Backend::Postgres => &["DROP TRIGGER audit_events_no_change ON audit_events"],
    };
    for sql in drop_triggers {
        sqlx::query(*sql).execute(pool).await.unwrap();
    }
    let all = app.store.audit_events(0, None).await.unwrap();
    let mut prev = "0".repeat(64);
    for (i, e) in all.iter().enumerate() {
        let detail = if i == 0 {
            serde_json::json!({ "version": "forged" }).to_string()
        } else {
            e.detail.to_string()
        };
        let h = audit::event_hash(
            &prev,
            &audit::Hashed {
                seq: e.seq,
                at: e.at,
                kind: &e.kind,
                request_id: e.request_id.as_deref(),
                actor: e.actor.as_deref(),
                detail: &detail,
                simulated: e.simulated,
            },
        );
        sqlx::query(
            "UPDATE audit_events SET detail = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
        )
        .bind(&detail)
        .bind(&prev)
        .bind(&h)
        .bind(e.seq)
        .execute(pool)
        .await
        .unwrap();
        prev = h;
    }
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&prev)
        .execute(pool)
        .await
        .unwrap();

    // Plain verification cannot tell...
    let plain = app.store.verify_audit().await.unwrap();
    assert_eq!(plain.broken, None, "the rewrite is self-consistent");
    let (code, out) = cli_verify(&db, None);
    assert_eq!(code, 0, "{out}");
    // ...the checkpoint from the chat history can.
    let against = app
        .store
        .verify_audit_against(&cp.parse().unwrap())
        .await
        .unwrap();
    let (at, why) = against.broken.expect("checkpoint mismatch detected");
    assert_eq!(at, seq);
    assert!(why.contains("rewritten"), "{why}");
    let (code, out) = cli_verify(&db, Some(&cp));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("BROKEN at event {seq}")), "{out}");
    assert!(out.contains(&hash), "names the expected hash: {out}");
    // A malformed checkpoint is refused with the expected form.
    let (code, out) = cli_verify(&db, Some("12-abc"));
    assert_ne!(code, 0);
    assert!(out.contains("<seq>:<hash>"), "{out}");
}

#[tokio::test]
async fn an_orphan_removal_is_retried_until_arm_lets_it_through() {
    let app = spawn_app_tuned(
        FAST,
        &[("retry_budget = \"10s\"", "retry_budget = \"1s\"")],
        "",
    )
    .await;
    let orphan = "jitbot-req_zzzz4444";
    app.arm.start_outage(
        Fault::Throttle {
            retry_after_secs: 0,
        }
        .on(On::delete()),
    );
    app.arm
        .put_existing_rule(NSG, rule(orphan, 110, "192.0.2.44", "22", "Allow"));
    app.wait_until(
        "the audit channel is told it is still open",
        Duration::from_secs(8),
        |a| {
            a.audit_feed()
                .iter()
                .any(|t| t.contains("stray rule still open") && t.contains(orphan))
        },
    )
    .await;
    // Many passes meanwhile: still one removal job, one message, the rule still there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(app.arm.rule(NSG, orphan).is_some());
    let removals = |counts: &[(String, String, i64)]| -> i64 {
        counts
            .iter()
            .filter(|(k, _, _)| k == "reconcile.remove")
            .map(|(_, _, n)| n)
            .sum()
    };
    let counts = app.store.job_counts().await.unwrap();
    assert_eq!(removals(&counts), 1, "{counts:?}");
    assert_eq!(
        app.audit_feed()
            .iter()
            .filter(|t| t.contains("stray rule still open"))
            .count(),
        1
    );
    assert!(app.events_of("drift_orphan_removed").await.is_empty());

    app.arm.end_outage();
    app.wait_until("orphan removed", Duration::from_secs(20), |a| {
        a.arm.rule(NSG, orphan).is_none()
    })
    .await;
    wait_event(
        &app,
        "drift_orphan_removed",
        Some("req_zzzz4444"),
        Duration::from_secs(3),
    )
    .await;
    let throttled = app
        .arm
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.status == 429)
        .count();
    assert!(throttled >= 2, "ARM throttled {throttled} DELETEs");
    assert_eq!(app.events_of("drift_orphan_removed").await.len(), 1);
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn duplicate_singleton_jobs_collapse_into_one() {
    let mut app = spawn_app_tuned(FAST, &[], "").await;
    // The worker schedules its singletons as it starts.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.store.job_counts().await.unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "singletons not scheduled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.crash().await;
    // What two replicas starting at the same moment on PostgreSQL may leave behind.
    for kind in ["reconcile", "checkpoint"] {
        sqlx::query(
            "INSERT INTO jobs (kind, lane, payload, state, run_at, attempts, created_at)
             VALUES ($1, $2, $3, 'queued', 0, 0, 0)",
        )
        .bind(kind)
        .bind(format!("singleton:{kind}"))
        .bind(serde_json::json!({ "job": kind }).to_string())
        .execute(&app.sql)
        .await
        .unwrap();
    }
    app.start().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counts = app.store.job_counts().await.unwrap();
    for kind in ["reconcile", "checkpoint"] {
        let live: i64 = counts
            .iter()
            .filter(|(k, s, _)| k == kind && (s == "queued" || s == "running"))
            .map(|(_, _, n)| n)
            .sum();
        assert_eq!(live, 1, "{kind}: {counts:?}");
    }
    let superseded: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE kind = 'reconcile' AND last_error = 'superseded'",
    )
    .fetch_one(&app.sql)
    .await
    .unwrap();
    assert_eq!(superseded, 1);
}

#[tokio::test]
async fn grants_whose_state_is_changing_are_left_to_their_own_jobs() {
    let app = spawn_app_tuned(
        FAST,
        &[("retry_budget = \"10s\"", "retry_budget = \"1s\"")],
        "",
    )
    .await;
    // Applying: the PUT lands at once but its answer is held, so the rule exists while the
    // request is still `applying` for several passes.
    app.arm
        .inject(Fault::Delay(Duration::from_millis(1500)).on(On::put()));
    // Long enough that the held answer and its retries (under a loaded CI machine) never use it
    // up before the grant is seen active.
    let id = app.submit(STEVE, "web1 22 5s").await;
    app.click(ALICE, &id, true).await;
    app.wait_status(&id, Status::Applying, Duration::from_secs(5))
        .await;
    app.wait_until(
        "rule in place while applying",
        Duration::from_secs(3),
        |a| a.rule(&id).is_some(),
    )
    .await;
    let grant = app
        .wait_status(&id, Status::Active, Duration::from_secs(10))
        .await;
    assert!(
        app.writes(&id).iter().all(|w| w.starts_with("PUT")),
        "never deleted while applying: {:?}",
        app.writes(&id)
    );
    let puts = |a: &TestApp| a.writes(&id).iter().filter(|w| w.starts_with("PUT")).count();
    let applied_puts = puts(&app);

    // Revoking: ARM refuses the DELETE; meanwhile someone widens the rule by hand, then removes
    // it. The reconciler must neither put it back nor close the grant itself: its revoke job
    // closes it.
    app.arm.start_outage(
        Fault::Unavailable {
            retry_after_secs: 0,
        }
        .on(On::delete()),
    );
    app.wait_status(&id, Status::Revoking, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(app.rule(&id).is_some(), "left alone while revoking");
    let mut widened = app.rule(&id).unwrap();
    widened.properties.source_address_prefix = Some("*".into());
    app.arm.put_existing_rule(NSG, widened);
    let made = fingerprint(&app.rule(&id).unwrap());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        fingerprint(&app.rule(&id).unwrap()),
        made,
        "a revoking grant's rule is never restored"
    );
    assert_eq!(puts(&app), applied_puts);
    app.arm.delete_rule_directly(NSG, &grant.rule_name);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(app.rule(&id).is_none(), "never re-created");
    assert_eq!(app.request(&id).await.status, Status::Revoking);
    app.arm.end_outage();
    let closed = app
        .wait_status(&id, Status::Revoked, Duration::from_secs(20))
        .await;
    assert_eq!(closed.detail.as_deref(), Some("expired"));
    assert_eq!(puts(&app), applied_puts);
    for kind in [
        "drift_restored",
        "drift_closed",
        "drift_narrowed",
        "drift_orphan_removed",
        "reconciled",
    ] {
        assert!(app.events_of(kind).await.is_empty(), "{kind}");
    }
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn drift_that_cannot_be_restored_yet_is_reported_once_and_fixed_later() {
    let app = spawn_app_tuned(
        FAST,
        &[("retry_budget = \"10s\"", "retry_budget = \"1s\"")],
        "",
    )
    .await;
    let grant = open_grant(&app, "web1 22 1h").await;
    app.arm.start_outage(
        Fault::Unavailable {
            retry_after_secs: 0,
        }
        .on(On::put()),
    );
    let mut widened = app.rule(&grant.id).unwrap();
    widened.properties.destination_port_range = Some("1-65535".into());
    app.arm.put_existing_rule(NSG, widened);
    wait_event(
        &app,
        "drift_unrestored",
        Some(&grant.id),
        Duration::from_secs(8),
    )
    .await;
    app.wait_until("the audit channel is told", Duration::from_secs(3), |a| {
        a.audit_feed().iter().any(|t| {
            t.contains("rule not restored")
                && t.contains(&grant.rule_name)
                && t.contains("(widened: ports)")
        })
    })
    .await;
    // Further failing passes stay quiet.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(app.events_of("drift_unrestored").await.len(), 1);
    assert!(!matches_grant(&app.rule(&grant.id).unwrap(), &grant));
    assert!(app.events_of("drift_restored").await.is_empty());

    app.arm.end_outage();
    app.wait_until("restored once ARM is back", Duration::from_secs(10), |a| {
        a.rule(&grant.id).is_some_and(|r| matches_grant(&r, &grant))
    })
    .await;
    wait_event(
        &app,
        "drift_restored",
        Some(&grant.id),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(app.events_of("drift_unrestored").await.len(), 1);
    assert_eq!(app.request(&grant.id).await.status, Status::Active);
    app.assert_chain_intact().await;
}
}
