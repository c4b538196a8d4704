use crate::helpers::*;
use jitbot::domain::Status;
use std::time::Duration;

slack_transports! {
#[tokio::test]
async fn deny_closes_the_request_and_opens_nothing() {
    let app = spawn_app().await;
    let id = app.submit(STEVE, "web1 22 1h").await;
    assert_eq!(app.click(BOB, &id, false).await, 200);
    let r = app
        .wait_status(&id, Status::Denied, Duration::from_secs(2))
        .await;
    assert!(r.detail.unwrap().contains("bob"));
    app.wait_until("requester told", Duration::from_secs(3), |a| {
        a.dms(STEVE).iter().any(|t| t.contains("denied"))
    })
    .await;
    app.wait_until("card updated", Duration::from_secs(3), |a| {
        a.card_text(&id).contains("Denied by")
    })
    .await;
    assert!(!app.card_text(&id).contains("jit_approve"));
    // A later approve changes nothing.
    app.click(ALICE, &id, true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.request(&id).await.status, Status::Denied);
    assert!(app.writes(&id).is_empty(), "ARM never touched");
    assert_eq!(app.audit_kinds(&id).await, ["requested", "denied"]);
}

#[tokio::test]
async fn requester_cannot_approve_their_own_request() {
    let app = spawn_app().await;
    // alice is an approver and may request web1.
    let id = app.submit(ALICE, "web1 22 1h").await;
    assert_eq!(app.click(ALICE, &id, true).await, 200);
    app.wait_until("alice told why", Duration::from_secs(3), |a| {
        a.dms(ALICE).iter().any(|t| t.contains("your own request"))
    })
    .await;
    assert_eq!(app.request(&id).await.status, Status::Pending);
    let refusals = app.refusals().await;
    assert!(
        refusals.iter().any(|r| r["rule"] == "self_approval"),
        "{refusals:?}"
    );
    assert!(app.store.decisions(&id).await.unwrap().is_empty());
}

#[tokio::test]
async fn non_approvers_cannot_decide() {
    let app = spawn_app().await;
    let id = app.submit(STEVE, "web1 22 1h").await;
    app.click(MALLORY, &id, true).await;
    app.click("U0STRANGER", &id, true).await;
    app.wait_until("mallory told", Duration::from_secs(3), |a| {
        a.dms(MALLORY).iter().any(|t| t.contains("not an approver"))
    })
    .await;
    assert_eq!(app.request(&id).await.status, Status::Pending);
    let rules: Vec<_> = app
        .refusals()
        .await
        .into_iter()
        .map(|r| r["rule"].clone())
        .collect();
    assert!(
        rules.contains(&"not_an_approver".into()) && rules.contains(&"unknown_person".into()),
        "{rules:?}"
    );
}

#[tokio::test]
async fn two_approvers_clicking_at_once_apply_exactly_once() {
    let app = spawn_app().await;
    let id = app.submit(STEVE, "web1 22 1h").await;
    app.card_ts(&id).await;
    let (a, b, c) = tokio::join!(
        app.click(ALICE, &id, true),
        app.click(BOB, &id, true),
        app.click(ALICE, &id, true)
    );
    assert!([a, b, c].iter().all(|s| *s == 200), "{a} {b} {c}");
    app.wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kinds = app.audit_kinds(&id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "approved").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "applied").count(),
        1,
        "{kinds:?}"
    );
    let puts = app
        .writes(&id)
        .into_iter()
        .filter(|w| w.starts_with("PUT 2"))
        .count();
    assert_eq!(puts, 1, "one successful PUT");
    assert_eq!(
        app.arm
            .rules(NSG)
            .iter()
            .filter(|r| r.name.contains(&id))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_double_click_is_one_decision() {
    let app = spawn_app().await;
    // db1 needs two approvers: a double click by one must not count twice.
    let id = app.submit(STEVE, "db1 5432 1h").await;
    app.click(ALICE, &id, true).await;
    app.click(ALICE, &id, true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.request(&id).await.status, Status::Pending);
    assert_eq!(app.store.decisions(&id).await.unwrap().len(), 1);
    app.wait_until("card shows 1/2", Duration::from_secs(3), |a| {
        a.card_text(&id).contains("(1/2)")
    })
    .await;
    app.click(BOB, &id, true).await;
    app.wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;
    assert_eq!(
        app.request(&id).await.rules[0].priority,
        Some(200),
        "db1's own band"
    );
}

#[tokio::test]
async fn an_undecided_request_expires_after_its_ttl() {
    let app = spawn_app().await;
    let id = app.submit(STEVE, "web1 22 1h").await;
    app.wait_status(&id, Status::Expired, Duration::from_secs(4))
        .await;
    app.wait_until("card says expired", Duration::from_secs(3), |a| {
        a.card_text(&id).contains("Expired")
    })
    .await;
    app.wait_until("requester told", Duration::from_secs(3), |a| {
        a.dms(STEVE).iter().any(|t| t.contains("expired"))
    })
    .await;
    app.click(ALICE, &id, true).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.request(&id).await.status, Status::Expired);
    assert!(app.writes(&id).is_empty());
}

#[tokio::test]
async fn racing_decisions_on_an_extension_decide_it_once() {
    let app = spawn_app().await;
    let id = app.submit(STEVE, "web1 22 20m").await;
    app.click(ALICE, &id, true).await;
    app.wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;
    for n in 1..=5 {
        let reply = app.slash(STEVE, &format!("extend {id} 1m")).await;
        assert!(reply.contains("asked"), "{reply}");
        let round = app.request(&id).await.round;
        // One approves while the other denies the same extension round, at the same moment.
        let (a, b) = tokio::join!(
            app.click_round(ALICE, &id, round, true),
            app.click_round(BOB, &id, round, false)
        );
        assert_eq!((a, b), (reqwest::StatusCode::OK, reqwest::StatusCode::OK));
        let kinds = app.audit_kinds(&id).await;
        let decided = kinds
            .iter()
            .filter(|k| *k == "extended" || *k == "extension_denied")
            .count();
        assert_eq!(decided, n, "round {round} decided more than once: {kinds:?}");
        assert_eq!(app.request(&id).await.extension_ms, None);
    }
    app.assert_chain_intact().await;
}
}
