use crate::helpers::*;
use jitbot::domain::Status;
use std::time::Duration;

backends! {
#[tokio::test]
async fn an_overdue_revocation_runs_at_once_after_a_restart() {
    let mut app = spawn_app().await;
    let id = app.submit(STEVE, "web1 22 2s").await;
    app.click(ALICE, &id, true).await;
    let active = app
        .wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;
    app.crash().await;
    // The grant expires while jitbot is down.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(app.rule(&id).is_some(), "still open while jitbot is down");
    let restarted = jitbot::store::now_ms();
    app.start().await;
    let closed = app
        .wait_status(&id, Status::Revoked, Duration::from_secs(5))
        .await;
    let after_restart = closed.closed_at.unwrap() - restarted;
    println!("METRIC revocation_after_restart_ms={after_restart}");
    assert!(
        after_restart < 2000,
        "revoked {after_restart} ms after restart"
    );
    assert!(closed.closed_at.unwrap() > active.expires_at.unwrap());
    assert!(app.rule(&id).is_none());
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn a_crash_between_approval_and_apply_applies_exactly_once() {
    let mut app = spawn_app().await;
    // Hold the PUT's answer so the crash lands while it is in flight.
    app.arm.inject(
        jitbot_sim::arm::Fault::Delay(Duration::from_millis(800)).on(jitbot_sim::arm::On::put()),
    );
    let id = app.submit(STEVE, "web1 22 1h").await;
    app.click(ALICE, &id, true).await;
    app.wait_status(&id, Status::Applying, Duration::from_secs(5))
        .await;
    app.crash().await;
    app.start().await;
    app.wait_status(&id, Status::Active, Duration::from_secs(10))
        .await;
    let ours: Vec<_> = app
        .arm
        .rules(NSG)
        .into_iter()
        .filter(|r| r.name.contains(&id))
        .collect();
    assert_eq!(ours.len(), 1, "exactly one rule");
    let kinds = app.audit_kinds(&id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "applied").count(),
        1,
        "{kinds:?}"
    );
    app.wait_until("one 'open' notice", Duration::from_secs(3), |a| {
        a.dms(STEVE)
            .iter()
            .filter(|t| t.contains("is open"))
            .count()
            == 1
    })
    .await;
}

#[tokio::test]
async fn a_crash_after_the_put_never_restarts_the_clock() {
    let mut app = spawn_app().await;
    // The PUT reaches ARM (the rule goes live) but its answer is held, so jitbot crashes before
    // it records that the rule is open.
    app.arm.inject(
        jitbot_sim::arm::Fault::Delay(Duration::from_millis(800)).on(jitbot_sim::arm::On::put()),
    );
    let id = app.submit(STEVE, "web1 22 2s").await;
    app.click(ALICE, &id, true).await;
    let applying = app
        .wait_status(&id, Status::Applying, Duration::from_secs(5))
        .await;
    let started = applying
        .apply_started_at
        .expect("the apply records when the rule may first be open");
    // The PUT has reached ARM (its answer is still held) before jitbot dies.
    app.wait_until("the PUT at ARM", Duration::from_secs(2), |a| {
        a.rule(&id).is_some()
    })
    .await;
    app.crash().await;
    // Down for longer than the grant: the rule is live all that time.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(app.rule(&id).is_some(), "the PUT went through while jitbot was down");
    let restarted = jitbot::store::now_ms();
    app.start().await;
    let closed = app
        .wait_status(&id, Status::Revoked, Duration::from_secs(10))
        .await;
    assert_eq!(
        closed.expires_at,
        Some(started + 2000),
        "the expiry counts from the first PUT, not from the restart"
    );
    let after_restart = closed.closed_at.unwrap() - restarted;
    println!("METRIC clock_kept_revocation_after_restart_ms={after_restart}");
    assert!(
        after_restart < 3000,
        "closed {after_restart} ms after the restart (a restarted clock would be ≥ 2000 ms plus the apply)"
    );
    assert!(app.rule(&id).is_none());
    app.wait_until("the requester is told it closes at once", Duration::from_secs(5), |a| {
        a.dms(STEVE).iter().any(|t| t.contains("closes now"))
    })
    .await;
    app.assert_chain_intact().await;
}
}
