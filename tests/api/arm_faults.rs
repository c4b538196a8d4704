use crate::helpers::*;
use jitbot::domain::Status;
use jitbot_sim::arm::{Fault, On};
use std::time::Duration;

/// Runs a 2-second grant with `faults` injected and checks it still opens and closes.
async fn grant_survives(faults: Vec<jitbot_sim::arm::FaultRule>) -> TestApp {
    let app = spawn_app().await;
    for f in faults {
        app.arm.inject(f);
    }
    let id = app.submit(STEVE, "web1 22 2s").await;
    app.click(ALICE, &id, true).await;
    let active = app
        .wait_status(&id, Status::Active, Duration::from_secs(15))
        .await;
    assert!(app.rule(&id).is_some());
    let closed = app
        .wait_status(&id, Status::Revoked, Duration::from_secs(20))
        .await;
    assert!(app.rule(&id).is_none(), "rule removed");
    let late = closed.closed_at.unwrap() - active.expires_at.unwrap();
    println!("METRIC revocation_lateness_under_faults_ms={late}");
    assert!(late < 10_000, "closed {late} ms late");
    app.assert_chain_intact().await;
    app
}

backends! {
#[tokio::test]
async fn throttling_with_retry_after_is_retried() {
    let app = grant_survives(vec![
        Fault::Throttle {
            retry_after_secs: 1,
        }
        .on(On::put()),
        Fault::Throttle {
            retry_after_secs: 1,
        }
        .on(On::delete()),
    ])
    .await;
    assert_eq!(app.arm.pending_faults(), 0, "both faults were hit");
}

#[tokio::test]
async fn another_operation_in_progress_is_retried() {
    let app = grant_survives(vec![
        Fault::AnotherOperationInProgress.on(On::put()),
        Fault::AnotherOperationInProgress.on(On::delete()),
    ])
    .await;
    assert_eq!(app.arm.pending_faults(), 0);
}

#[tokio::test]
async fn server_errors_are_retried() {
    let app = grant_survives(vec![
        Fault::ServerError.on(On::put()),
        Fault::ServerError.on(On::put()),
        Fault::ServerError.on(On::delete()),
    ])
    .await;
    assert_eq!(app.arm.pending_faults(), 0);
}

#[tokio::test]
async fn timeouts_are_retried_without_a_second_rule() {
    let app = grant_survives(vec![
        Fault::Delay(Duration::from_secs(2)).on(On::put()),
        Fault::Delay(Duration::from_secs(2)).on(On::delete()),
    ])
    .await;
    assert_eq!(app.arm.pending_faults(), 0);
    assert!(
        app.arm
            .rules(NSG)
            .iter()
            .all(|r| !r.name.starts_with("jitbot-")),
        "no jitbot rule left"
    );
}

#[tokio::test]
async fn an_expired_token_is_replaced() {
    let app = grant_survives(vec![
        Fault::ExpiredToken.on(On::put()),
        Fault::ExpiredToken.on(On::delete()),
    ])
    .await;
    assert!(
        app.entra.issued().len() >= 2,
        "a new token was fetched: {:?}",
        app.entra.issued()
    );
}

#[tokio::test]
async fn forbidden_fails_the_request_clearly() {
    let app = spawn_app().await;
    app.arm.inject(Fault::Forbidden.on(On::put()));
    let id = app.submit(STEVE, "web1 22 1h").await;
    app.click(ALICE, &id, true).await;
    let r = app
        .wait_status(&id, Status::Failed, Duration::from_secs(10))
        .await;
    assert!(r.detail.unwrap().contains("403"), "failure names the cause");
    app.wait_until("requester told", Duration::from_secs(3), |a| {
        a.dms(STEVE).iter().any(|t| t.contains("could not open"))
    })
    .await;
    assert!(app.rule(&id).is_none());
    let kinds = app.audit_kinds(&id).await;
    assert!(kinds.contains(&"failed".to_string()), "{kinds:?}");
}
}

#[tokio::test]
async fn a_403_on_coalesced_nsg_writes_falls_back_to_per_rule_writes_once_and_is_audited() {
    let app = spawn_app().await;
    // The identity lacks networkSecurityGroups/write: every NSG-level PUT is refused.
    app.arm.set_nsg_writes_forbidden(true);
    app.arm
        .set_operation_delay(std::time::Duration::from_millis(500));
    let ids: Vec<String> = futures::future::join_all((0..4).map(|i| {
        let app = &app;
        async move {
            app.submit(STEVE, &format!("web1 22 1h from 203.0.113.{}", 40 + i))
                .await
        }
    }))
    .await;
    for id in &ids {
        app.click(ALICE, id, true).await;
    }
    for id in &ids {
        app.wait_status(
            id,
            jitbot::domain::Status::Active,
            std::time::Duration::from_secs(15),
        )
        .await;
        assert!(app.rule(id).is_some());
    }
    // Opening four grants on one NSG at once coalesced some into an NSG-level PUT, which ARM
    // refused: from then on per-rule writes, and one audit event.
    assert!(
        app.arm
            .requests()
            .iter()
            .any(|r| r.method == "PUT" && r.status == 403),
        "no NSG-level write was tried"
    );
    let fallback = app.events_of("nsg_writes_fallback").await;
    assert_eq!(fallback.len(), 1, "audited once: {fallback:?}");
}
