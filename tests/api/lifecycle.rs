use crate::helpers::*;
use jitbot::domain::Status;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

slack_transports! {
#[tokio::test]
async fn a_two_second_grant_opens_on_approval_and_closes_on_time() {
    let app = spawn_app().await;
    let sent = Instant::now();
    let reply = app
        .slash(STEVE, "web1 22 2s from 203.0.113.9 deploy hotfix")
        .await;
    let ack = sent.elapsed();
    assert!(ack < Duration::from_secs(3), "ack took {ack:?}");
    println!("METRIC ack_latency_ms={}", ack.as_millis());
    assert!(reply.contains("waiting for approval"), "{reply}");
    let id = reply.split('`').nth(1).unwrap().to_string();

    // The card reaches the approval channel with everything an approver needs.
    app.card_ts(&id).await;
    let card = app.card_text(&id);
    for needle in [
        "<@U0STEVE>",
        "web1",
        "22",
        "203.0.113.9/32",
        "2s",
        "deploy hotfix",
        &id,
        "jit_approve",
        "jit_deny",
    ] {
        assert!(card.contains(needle), "card lacks {needle}: {card}");
    }
    assert_eq!(app.request(&id).await.status, Status::Pending);
    assert!(app.rule(&id).is_none());

    assert_eq!(app.click(ALICE, &id, true).await, 200);
    let active = app
        .wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;

    // The PUT ARM received matches the official schema and the request.
    let put = app
        .arm
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT" && r.path.ends_with(&format!("jitbot-{id}")))
        .expect("a PUT for the rule");
    assert_eq!(put.query.as_deref(), Some("api-version=2024-05-01"));
    assert!(
        put.bearer
            .as_deref()
            .unwrap_or("")
            .starts_with("entra-token-"),
        "token from Entra"
    );
    let p = &put.body.as_ref().unwrap()["properties"];
    assert_eq!(p["access"], "Allow");
    assert_eq!(p["direction"], "Inbound");
    assert_eq!(p["protocol"], "Tcp");
    assert_eq!(p["sourceAddressPrefix"], "203.0.113.9/32");
    assert_eq!(p["destinationAddressPrefix"], "10.0.1.4");
    assert_eq!(p["destinationPortRange"], "22");
    assert_eq!(p["priority"], 100);
    assert!(p["description"].as_str().unwrap().contains(&id));
    assert!(p["description"].as_str().unwrap().len() <= 140);
    let rule = app.rule(&id).expect("rule is in the NSG");
    assert_eq!(
        rule.properties.provisioning_state.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(active.rules[0].priority, Some(100));

    // The clock started when the rule could first be open: when its PUT was about to be sent.
    let started = active.apply_started_at.unwrap();
    assert_eq!(active.expires_at.unwrap() - started, 2000);
    assert!((started..started + 2000).contains(&active.activated_at.unwrap()));
    let expires = active.expires_at.unwrap();
    app.wait_until("requester told it is open", Duration::from_secs(3), |a| {
        a.dms(STEVE)
            .iter()
            .any(|t| t.contains("is open") && t.contains("until"))
    })
    .await;

    // Revocation: DELETE within a second of expiry.
    let revoked = app
        .wait_status(&id, Status::Revoked, Duration::from_secs(6))
        .await;
    let delete = app
        .arm
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE" && r.path.ends_with(&format!("jitbot-{id}")))
        .expect("a DELETE for the rule");
    let late = ms(delete.at) - expires;
    println!("METRIC revocation_delete_lateness_ms={late}");
    assert!(
        (0..1000).contains(&late),
        "DELETE sent {late} ms after expiry"
    );
    assert!(revoked.closed_at.unwrap() - expires < 2000);
    assert!(app.rule(&id).is_none(), "rule removed from the NSG");

    // Requester, card, audit feed and audit chain all tell the story.
    app.wait_until("closed notices", Duration::from_secs(3), |a| {
        a.dms(STEVE).iter().any(|t| t.contains("closed")) && a.card_text(&id).contains("Closed at")
    })
    .await;
    let card = app.card_text(&id);
    assert!(
        card.contains("Approved by") && card.contains("<@U0ALICE>"),
        "{card}"
    );
    assert!(
        !card.contains("jit_approve"),
        "buttons removed after the decision"
    );
    let feed: Vec<String> = app
        .slack
        .messages(AUDIT)
        .into_iter()
        .map(|m| m.text)
        .collect();
    for what in [
        "Access requested",
        "Request approved",
        "Access open",
        "Access closed",
    ] {
        assert!(
            feed.iter().any(|t| t.contains(what)),
            "audit channel lacks {what}: {feed:?}"
        );
    }
    assert_eq!(
        app.audit_kinds(&id).await,
        ["requested", "approved", "applied", "revoked"]
    );
    app.assert_chain_intact().await;
    assert_eq!(
        app.writes(&id).len(),
        2,
        "exactly one PUT and one DELETE: {:?}",
        app.writes(&id)
    );
}

#[tokio::test]
async fn early_revoke_closes_the_rule_now() {
    let app = spawn_app().await;
    let id = app.submit(STEVE, "web1 ssh 30m").await;
    app.click(ALICE, &id, true).await;
    app.wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;
    assert!(app.rule(&id).is_some());
    let reply = app.slash(STEVE, &format!("revoke {id}")).await;
    assert!(reply.contains("closing"), "{reply}");
    let r = app
        .wait_status(&id, Status::Revoked, Duration::from_secs(5))
        .await;
    assert!(r.detail.unwrap().contains("revoked early by steve"));
    assert!(app.rule(&id).is_none());
    assert!(
        app.audit_kinds(&id)
            .await
            .contains(&"revoke_requested".to_string())
    );
    // Someone unrelated cannot see or revoke it.
    let reply = app.slash(MALLORY, &format!("revoke {id}")).await;
    assert!(reply.contains("no request"), "{reply}");
}

#[tokio::test]
async fn extend_needs_approval_and_never_exceeds_the_maximum() {
    let app = spawn_app().await;
    let id = app.submit(STEVE, "web1 22 20m").await;
    app.click(ALICE, &id, true).await;
    let before = app
        .wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;
    // The rule says when it expires, for `jitbot sweep`.
    let expiry_in_rule = |app: &TestApp| {
        app.rule(&id)
            .and_then(|r| r.properties.description)
            .and_then(|d| jitbot::domain::description_expiry(&d))
    };
    let said = expiry_in_rule(&app).expect("an expires= in the description");
    assert!((0..1000).contains(&(said - before.expires_at.unwrap())), "{said} vs {before:?}");

    let reply = app.slash(STEVE, &format!("extend {id} 50m")).await;
    assert!(reply.contains("longer than its maximum"), "{reply}");

    let reply = app.slash(STEVE, &format!("extend {id} 30m")).await;
    assert!(reply.contains("asked"), "{reply}");
    let pending = app.request(&id).await;
    assert_eq!(pending.extension_ms, Some(1_800_000));
    assert_eq!(
        pending.expires_at, before.expires_at,
        "nothing moves before approval"
    );
    // The requester cannot approve their own extension; an approver can.
    app.click_round(STEVE, &id, pending.round, true).await;
    assert_eq!(app.request(&id).await.expires_at, before.expires_at);
    app.click_round(BOB, &id, pending.round, true).await;
    let after = app.request(&id).await;
    assert_eq!(after.extension_ms, None);
    assert!(after.expires_at.unwrap() >= before.expires_at.unwrap() + 1_800_000);
    assert!(app.audit_kinds(&id).await.contains(&"extended".to_string()));
    // The extension rewrote the rule's description, so a sweep would not close it early; only
    // the description changed.
    let new_expiry = after.expires_at.unwrap();
    app.wait_until("rule relabeled", Duration::from_secs(5), |a| {
        expiry_in_rule(a).is_some_and(|e| (0..1000).contains(&(e - new_expiry)))
    })
    .await;
    assert_eq!(app.writes(&id), vec!["PUT 201", "PUT 200"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !app.audit_kinds(&id).await.contains(&"rule_relabeled".to_string()) {
        assert!(std::time::Instant::now() < deadline, "no rule_relabeled event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn help_targets_list_and_status_answer_the_person() {
    let app = spawn_app().await;
    assert!(
        app.slash(STEVE, "help")
            .await
            .contains("/jit <target> <ports> <duration>")
    );
    let targets = app.slash(STEVE, "targets").await;
    assert!(
        targets.contains("web1") && targets.contains("db1"),
        "{targets}"
    );
    let targets = app.slash(ALICE, "targets").await;
    assert!(
        targets.contains("web1") && !targets.contains("db1"),
        "{targets}"
    );
    assert!(app.slash(STEVE, "list").await.contains("no pending"));
    let id = app.submit(STEVE, "web1 22 1h").await;
    assert!(app.slash(STEVE, "list").await.contains(&id));
    let status = app.slash(STEVE, &format!("status {id}")).await;
    assert!(status.contains("Waiting for approval"), "{status}");
}
}
