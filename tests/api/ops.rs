//! Operations: `/metrics`, `/readyz`, chat delivery through outages and lost answers.

use crate::helpers::*;
use jitbot::domain::Status;
use jitbot_sim::slack::SlackFault;
use std::collections::HashMap;
use std::time::{Duration, Instant};

async fn scrape(app: &TestApp) -> String {
    let resp = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.contains("openmetrics-text"), "content-type {ct}");
    resp.text().await.unwrap()
}

/// The value of one series (`name{labels}` exactly as exposed), if present.
/// A target like web1 whose requests wait a minute for a decision.
fn patient() -> String {
    format!(
        r#"
[targets.web2]
nsg = "{NSG}"
destination = "10.0.1.5"
ports = [22]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
default_source = "203.0.113.7"
requesters = ["steve"]
approvers = ["group:secops"]
approval_channel.slack = "{APPROVALS}"
priority_range = [300, 399]
pending_ttl = "1m"
"#
    )
}

fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_a_whole_lifecycle() {
    let app = spawn_app().await;
    let id = app.submit(STEVE, "web1 22 1s").await;
    app.slash(STEVE, "web1 23 1h").await; // refused: port 23 is not allowed
    app.click(ALICE, &id, true).await;
    app.wait_status(&id, Status::Revoked, Duration::from_secs(10))
        .await;
    let text = scrape(&app).await;
    let get = |n: &str| series(&text, n).unwrap_or_else(|| panic!("no series {n} in:\n{text}"));
    assert_eq!(get("jitbot_requests_total{outcome=\"submitted\"}"), 1.0);
    assert_eq!(get("jitbot_requests_total{outcome=\"refused\"}"), 1.0);
    assert_eq!(get("jitbot_requests_total{outcome=\"decided\"}"), 1.0);
    // What ARM answered is what the fake recorded.
    let mut by_call: HashMap<String, f64> = HashMap::new();
    for r in app.arm.requests() {
        *by_call
            .entry(format!(
                "jitbot_arm_calls_total{{method=\"{}\",status=\"{}\"}}",
                r.method, r.status
            ))
            .or_default() += 1.0;
    }
    assert!(by_call.keys().any(|k| k.contains("PUT")), "{by_call:?}");
    assert!(by_call.keys().any(|k| k.contains("DELETE")), "{by_call:?}");
    for (name, n) in &by_call {
        assert_eq!(get(name), *n, "{name}");
    }
    assert_eq!(get("jitbot_grants{status=\"revoked\"}"), 1.0);
    assert_eq!(get("jitbot_jobs{kind=\"apply\",state=\"done\"}"), 1.0);
    assert_eq!(get("jitbot_jobs{kind=\"revoke\",state=\"done\"}"), 1.0);
    assert_eq!(get("jitbot_revocation_lateness_seconds_count"), 1.0);
    let late = get("jitbot_revocation_lateness_seconds_sum");
    println!("METRIC revocation_lateness_s={late:.3}");
    assert!(late < 2.0, "closed {late} s late");
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn readyz_fails_fast_and_commands_say_try_again_while_the_database_is_locked() {
    let app = spawn_app().await;
    let ready = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // Another process takes SQLite's write lock and keeps it.
    let mut conn = app.sql.acquire().await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut *conn)
        .await
        .unwrap();

    let asked = Instant::now();
    let ready = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    let probe = asked.elapsed();
    println!("METRIC readyz_locked_ms={}", probe.as_millis());
    assert_eq!(ready.status(), 503);
    assert!(probe < Duration::from_millis(1500), "readyz took {probe:?}");
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["database"], false, "{body}");

    let asked = Instant::now();
    let reply = app.slash(STEVE, "web1 22 1h").await;
    let answered = asked.elapsed();
    println!("METRIC command_db_locked_ms={}", answered.as_millis());
    assert!(
        answered < Duration::from_secs(3),
        "answered after {answered:?}"
    );
    assert!(reply.contains("try again"), "{reply}");
    assert!(reply.contains("Nothing was changed"), "{reply}");

    sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
    drop(conn);
    // Nothing half-written: no request row.
    let counts = app.store.status_counts().await.unwrap();
    assert!(counts.is_empty(), "{counts:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = app
            .http
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap();
        if ready.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each posted message's dedupe key (from its Slack metadata) → how many messages carry it.
fn keys(app: &TestApp, channels: &[&str]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for c in channels {
        for m in app.slack.messages(c) {
            assert_eq!(m.metadata["event_type"], "jitbot_message", "{m:?}");
            let key = m.metadata["event_payload"]["key"]
                .as_str()
                .unwrap_or_else(|| panic!("message without a dedupe key: {m:?}"))
                .to_string();
            *out.entry(key).or_default() += 1;
        }
    }
    out
}

#[tokio::test]
async fn a_post_whose_answer_was_lost_is_not_posted_again() {
    let app = spawn_app().await;
    // The first chat call is delivered, but jitbot sees a 500.
    app.slack.inject(SlackFault::DeliverThenFail);
    let id = app.submit(STEVE, "web1 22 1h").await;
    app.card_ts(&id).await;
    app.click(ALICE, &id, true).await;
    app.wait_status(&id, Status::Active, Duration::from_secs(10))
        .await;
    app.wait_until("the 'open' notice", Duration::from_secs(10), |a| {
        a.dms(STEVE).iter().any(|t| t.contains("is open"))
    })
    .await;
    let calls = app.slack.calls();
    assert!(
        calls.iter().any(|c| c.method == "conversations.history"),
        "the retry looked for the message first"
    );
    let counts = keys(&app, &[APPROVALS, AUDIT, STEVE]);
    assert!(counts.values().all(|n| *n == 1), "duplicates: {counts:?}");
    assert_eq!(
        app.slack
            .messages(APPROVALS)
            .iter()
            .filter(|m| m.text.contains(&id))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_retried_direct_message_finds_the_dm_through_conversations_open() {
    let app = spawn_app_with(&patient()).await;
    let id = app.submit(STEVE, "web2 22 1h").await;
    app.card_ts(&id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The next two calls (the requester's DM, then the retry's first call) are delivered but
    // answered with a 500.
    for _ in 0..2 {
        app.slack.inject(SlackFault::DeliverThenFail);
    }
    app.click(ALICE, &id, true).await;
    app.wait_status(&id, Status::Active, Duration::from_secs(10))
        .await;
    app.wait_until("the 'open' notice", Duration::from_secs(40), |a| {
        a.dms(STEVE).iter().any(|t| t.contains("is open"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = keys(&app, &[APPROVALS, AUDIT, STEVE]);
    assert!(counts.values().all(|n| *n == 1), "duplicates: {counts:?}");
    let calls = app.slack.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.method == "conversations.open" && c.body.to_string().contains(STEVE)),
        "a retried DM resolves the DM channel first"
    );
    assert_eq!(
        app.dms(STEVE)
            .iter()
            .filter(|t| t.contains("is open"))
            .count(),
        1
    );
}

#[tokio::test]
async fn messages_sent_during_a_slack_outage_arrive_afterwards_once_and_in_order() {
    outage_then_recovery(false).await;
}

#[tokio::test]
async fn messages_sent_while_slack_refuses_connections_arrive_afterwards_once_and_in_order() {
    outage_then_recovery(true).await;
}

/// Slack answers 503 (or refuses connections, `refuse`) while a grant opens and closes.
async fn outage_then_recovery(refuse: bool) {
    let app = spawn_app_with(&patient()).await;
    let id = app.submit(STEVE, "web2 22 2s").await;
    app.card_ts(&id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    if refuse {
        app.slack.set_unreachable(true).await.unwrap();
    } else {
        app.slack.set_down(true);
    }
    app.click(ALICE, &id, true).await;
    // The grant opens and closes while Slack is down: ARM does not wait for chat.
    app.wait_status(&id, Status::Revoked, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failed = app.slack.calls().iter().filter(|c| c.status == 503).count();
    assert!(refuse || failed > 0, "jitbot tried during the outage");
    if refuse {
        app.slack.set_unreachable(false).await.unwrap();
    } else {
        app.slack.set_down(false);
    }
    let back = Instant::now();
    app.wait_until("the 'closed' notice", Duration::from_secs(40), |a| {
        a.dms(STEVE).iter().any(|t| t.contains("is closed"))
    })
    .await;
    println!(
        "METRIC slack_outage_catch_up_ms={}",
        back.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dms = app.dms(STEVE);
    let pos = |needle: &str| {
        let hits: Vec<usize> = dms
            .iter()
            .enumerate()
            .filter(|(_, t)| t.contains(needle))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(hits.len(), 1, "{needle:?} once in {dms:#?}");
        hits[0]
    };
    let approved = pos("approved");
    let open = pos("is open");
    let closed = pos("is closed");
    assert!(approved < open && open < closed, "{dms:#?}");
    let counts = keys(&app, &[APPROVALS, AUDIT, STEVE]);
    assert!(counts.values().all(|n| *n == 1), "duplicates: {counts:?}");
    // Every failed call is counted once.
    let failed = app.slack.calls().iter().filter(|c| c.status == 503).count();
    let text = scrape(&app).await;
    let errors = series(
        &text,
        "jitbot_chat_api_errors_total{platform=\"slack\",kind=\"transient\"}",
    );
    if refuse {
        assert!(errors.is_some_and(|n| n >= 1.0), "{text}");
    } else {
        assert_eq!(errors, Some(failed as f64), "{text}");
    }
    // The card ends up showing the final state.
    app.wait_until("the card shows the close", Duration::from_secs(20), |a| {
        a.card_text(&id).contains("Closed at")
    })
    .await;
}

#[tokio::test]
async fn a_retry_that_may_not_read_the_history_still_delivers_the_message() {
    let app = spawn_app().await;
    // The first post fails outright; the retry's history lookup is refused (no `*:history` scope).
    app.slack.inject(SlackFault::ServerError);
    app.slack
        .inject(SlackFault::OkFalse("missing_scope".to_string()));
    let id = app.submit(STEVE, "web1 22 1h").await;
    app.card_ts(&id).await;
    let calls = app.slack.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.method == "conversations.history"
                && c.error.as_deref() == Some("missing_scope")),
        "{calls:?}"
    );
    assert_eq!(
        app.slack
            .messages(APPROVALS)
            .iter()
            .filter(|m| m.text.contains(&id))
            .count(),
        1
    );
}

#[tokio::test]
async fn the_daily_review_goes_to_the_audit_channel_at_its_time() {
    // A few seconds from now, as `HH:MM:SS` UTC.
    let at = chrono::Utc::now() + chrono::Duration::seconds(4);
    let app = spawn_app_with(&format!("[digest]\nat = \"{}\"", at.format("%H:%M:%S"))).await;
    let id = app.submit(STEVE, "web1 22 1h").await;
    app.click(ALICE, &id, true).await;
    app.wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;
    let refused = app.slash(STEVE, "web1 23 1h").await;
    assert!(refused.contains("not allowed"), "{refused}");
    app.wait_until("the review is posted", Duration::from_secs(10), |a| {
        a.audit_feed().iter().any(|t| t.contains("Last 24 hours"))
    })
    .await;
    let review = app
        .audit_feed()
        .into_iter()
        .find(|t| t.contains("Last 24 hours"))
        .unwrap();
    assert!(review.contains("1 request, 1 opened, 0 denied"), "{review}");
    assert!(
        review.contains("By target: web1 1") && review.contains("By person: steve 1"),
        "{review}"
    );
    assert!(review.contains("Refused: port_not_allowed 1"), "{review}");
    assert!(
        review.contains(&format!("Open now: `{id}` web1 port 22 for steve")),
        "{review}"
    );
    let audited = app.events_of("digest").await;
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].detail["open_now"], 1);
    // The next one is tomorrow at the same time.
    let next: i64 =
        sqlx::query_scalar("SELECT run_at FROM jobs WHERE kind = 'digest' AND state = 'queued'")
            .fetch_one(&app.sql)
            .await
            .unwrap();
    let due = at.timestamp_millis() / 1000 * 1000;
    assert_eq!(next, due + 86_400_000);
}
