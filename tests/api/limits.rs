//! Abuse limits end to end: per person (requests waiting, requests per hour), per target
//! (requests open or waiting), per auto-approve rule (uses per interval). A limit refuses with
//! which limit and when it frees up, is audited with the limit, and changes nothing.

use crate::helpers::*;
use jitbot::domain::Status;
use std::time::Duration;

/// A target steve may open without approval, at most once an hour.
fn auto_target() -> String {
    format!(
        r#"
[targets.auto1]
nsg = "{NSG}"
destination = "10.0.4.4"
ports = [22]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
default_source = "203.0.113.7"
requesters = ["steve"]
approvers = ["group:secops"]
approval_channel.slack = "{APPROVALS}"
priority_range = [500, 599]
auto_approve = {{ requesters = ["steve"], max_duration = "1h", max_uses = 1, per = "1h" }}
"#
    )
}

/// How many requests the database holds.
async fn request_count(app: &TestApp) -> i64 {
    let (requests, _) = app.row_counts().await;
    requests
}

/// The `limit` recorded with the last refusal.
async fn last_limit(app: &TestApp) -> serde_json::Value {
    let refusals = app.refusals().await;
    let last = refusals.last().expect("a refusal was audited");
    last["context"]["limit"].clone()
}

backends! {
#[tokio::test]
async fn a_person_cannot_have_more_requests_waiting_than_the_limit() {
    let app = spawn_app_with("[limits]\nmax_pending_per_person = 2\n").await;
    let first = app.submit(STEVE, "db1 5432 30m").await;
    app.submit(STEVE, "db1 5432 30m").await;
    let reply = app.slash(STEVE, "db1 5432 30m").await;
    assert!(
        reply.contains("2 requests waiting for approval")
            && reply.contains("max_pending_per_person = 2")
            && reply.contains("decided or times out"),
        "{reply}"
    );
    assert_eq!(request_count(&app).await, 2, "the refused request changed nothing");
    let limit = last_limit(&app).await;
    assert_eq!(limit["name"], "limit_pending_per_person", "{limit}");
    assert_eq!((limit["max"].as_i64(), limit["count"].as_i64()), (Some(2), Some(2)));
    // A decision frees a place.
    app.click(ALICE, &first, false).await;
    app.wait_status(&first, Status::Denied, Duration::from_secs(5)).await;
    app.submit(STEVE, "db1 5432 30m").await;
    assert_eq!(request_count(&app).await, 3);
}

#[tokio::test]
async fn requests_at_once_on_two_replicas_never_pass_the_limit_together() {
    let app = spawn_app_with("[limits]\nmax_pending_per_person = 2\n").await;
    let other = app.start_replica().await;
    // Eight requests at once, half through each replica: the limit is counted under one lock.
    let replies = futures::future::join_all((0..8).map(|i| {
        let to = if i % 2 == 0 { &app } else { &other };
        to.slash_as(STEVE, "db1 5432 30m")
    }))
    .await;
    let accepted = replies
        .iter()
        .filter(|(_, json)| json["text"].as_str().unwrap_or_default().contains("waiting for approval from"))
        .count();
    assert!(accepted <= 2, "{replies:?}");
    assert_eq!(request_count(&app).await, accepted as i64);
    // Every other one was refused by the limit, or (two processes on one SQLite file: a write
    // lost to the other's) told that nothing was recorded.
    for (_, json) in &replies {
        let text = json["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("waiting for approval from")
                || text.contains("max_pending_per_person = 2")
                || text.contains("Nothing was changed; please try again"),
            "{text}"
        );
    }
    let refused = app.refusals().await;
    assert!(
        refused.iter().all(|r| r["rule"] == "limit_pending_per_person"),
        "{refused:?}"
    );
    // One at a time now: the limit is reached exactly.
    for _ in accepted..2 {
        app.submit(STEVE, "db1 5432 30m").await;
    }
    let reply = other.slash(STEVE, "db1 5432 30m").await;
    assert!(reply.contains("max_pending_per_person = 2"), "{reply}");
    assert_eq!(request_count(&app).await, 2);
}

#[tokio::test]
async fn a_person_cannot_make_more_requests_an_hour_than_the_limit() {
    let app = spawn_app_with("[limits]\nmax_requests_per_hour = 2\n").await;
    for _ in 0..2 {
        let id = app.submit(STEVE, "db1 5432 30m").await;
        // Decided requests still count: the limit is on asking.
        app.click(ALICE, &id, false).await;
        app.wait_status(&id, Status::Denied, Duration::from_secs(5)).await;
    }
    let reply = app.slash(STEVE, "db1 5432 30m").await;
    assert!(
        reply.contains("2 requests in the last hour")
            && reply.contains("max_requests_per_hour = 2")
            && reply.contains("you can ask again at"),
        "{reply}"
    );
    assert_eq!(request_count(&app).await, 2);
    let limit = last_limit(&app).await;
    assert_eq!(limit["name"], "limit_requests_per_hour", "{limit}");
    assert!(limit["frees_at"].as_i64().is_some(), "{limit}");
    // The limit is per person: someone else may still ask.
    app.submit(ALICE, "web1 22 30m").await;
}

#[tokio::test]
async fn a_target_holds_at_most_its_concurrent_grants() {
    let app = spawn_app_tuned(
        "",
        &[("priority_range = [200, 299]", "priority_range = [200, 299]\nmax_concurrent_grants = 1")],
        "",
    )
    .await;
    let first = app.submit(STEVE, "db1 5432 30m").await;
    let reply = app.slash(STEVE, "db1 5432 30m").await;
    assert!(
        reply.contains("db1 already has 1 requests open or waiting")
            && reply.contains("max_concurrent_grants = 1"),
        "{reply}"
    );
    assert_eq!(last_limit(&app).await["name"], "limit_concurrent_grants");
    // Open, it still holds the place, and the answer says when it closes.
    app.click(ALICE, &first, true).await;
    app.click(BOB, &first, true).await;
    app.wait_status(&first, Status::Active, Duration::from_secs(10)).await;
    let reply = app.slash(STEVE, "db1 5432 30m").await;
    assert!(reply.contains("the next closes at"), "{reply}");
    assert_eq!(request_count(&app).await, 1);
    // Another target is not limited by it.
    app.submit(STEVE, "web1 22 30m").await;
}

#[tokio::test]
async fn an_auto_approve_rule_used_up_sends_requests_to_the_approvers() {
    let app = spawn_app_with(&auto_target()).await;
    let reply = app.slash(STEVE, "auto1 22 30m").await;
    assert!(reply.contains("approved by policy"), "{reply}");
    let first = request_id_in(&reply);
    app.wait_status(&first, Status::Active, Duration::from_secs(10)).await;
    let reply = app.slash(STEVE, "auto1 22 30m").await;
    assert!(
        reply.contains("auto-approval on auto1 is used up (1 per 1h)")
            && reply.contains("waiting for approval"),
        "{reply}"
    );
    let second = request_id_in(&reply);
    assert_eq!(app.request(&second).await.status, Status::Pending);
    assert_eq!(app.events_of("auto_approved").await.len(), 1);
}
}
