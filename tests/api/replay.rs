//! Replays and amplification: a signed request counts once (Slack and Discord, commands and
//! clicks), a forged click costs jitbot no outbound call, and what a sender types is bounded in
//! the audit trail.

use crate::helpers::*;
use jitbot::domain::Status;
use jitbot_sim::{discord_user, slack_user};
use std::time::Duration;

/// The request id in a reply (`req_…` between backticks).
fn id_in(reply: &str) -> String {
    reply
        .split('`')
        .find(|w| w.starts_with("req_"))
        .unwrap_or_else(|| panic!("no request id in {reply}"))
        .to_string()
}

/// The `rule` of every refusal, in order.
async fn refused_rules(app: &Harness) -> Vec<String> {
    app.refusals()
        .await
        .iter()
        .map(|r| r["rule"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Gives the worker time to do anything a replay might have queued.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(400)).await;
}

backends! {
#[tokio::test]
async fn a_replayed_slack_command_creates_one_request_and_one_card() {
    let app = spawn_app().await;
    let url = format!("{}/slack/commands", app.base);
    let body = slack_user::slash_command(STEVE, "steve", "C0OPS", "web1 22 1h");
    let now = chrono::Utc::now().timestamp();

    let first = slack_user::send_at(&app.http, &url, SECRET, &body, now).await.unwrap();
    assert_eq!(first.status(), 200);
    let json: serde_json::Value = first.json().await.unwrap();
    let id = id_in(json["text"].as_str().unwrap_or_default());
    app.card_ts(&id).await;
    // The same signed bytes again, inside the 5-minute window, twice.
    for _ in 0..2 {
        let again = slack_user::send_at(&app.http, &url, SECRET, &body, now).await.unwrap();
        assert_eq!(again.status(), 409);
    }
    settle().await;

    assert_eq!(app.row_counts().await.0, 1, "one request");
    let cards = app.slack.messages(APPROVALS);
    assert_eq!(cards.len(), 1, "one card: {cards:?}");
    let rules = refused_rules(&app).await;
    assert_eq!(rules, ["replayed_request", "replayed_request"], "each replay is audited");
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn a_replayed_slack_click_is_decided_once() {
    let app = spawn_app().await;
    // db1 needs two approvals, so a second counted click would show.
    let id = app.submit(STEVE, "db1 5432 1h").await;
    let ts = app.card_ts(&id).await;
    let url = format!("{}/slack/interactions", app.base);
    let body = slack_user::block_action(ALICE, "alice", APPROVALS, &ts, "jit_approve", &id);
    let now = chrono::Utc::now().timestamp();

    let first = slack_user::send_at(&app.http, &url, SECRET, &body, now).await.unwrap();
    assert_eq!(first.status(), 200);
    let again = slack_user::send_at(&app.http, &url, SECRET, &body, now).await.unwrap();
    assert_eq!(again.status(), 409);
    settle().await;

    let decisions = app.store.decisions(&id).await.unwrap();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(app.request(&id).await.status, Status::Pending);
    assert!(app.dms(ALICE).is_empty(), "the replay changed nothing, not even a DM");
    assert_eq!(app.audit_kinds(&id).await.iter().filter(|k| *k == "approval_recorded").count(), 1);
    assert_eq!(refused_rules(&app).await, ["replayed_request"]);

    // A fresh click by another approver still counts: the round was not disturbed.
    assert_eq!(app.click(BOB, &id, true).await, 200);
    app.wait_status(&id, Status::Active, Duration::from_secs(10)).await;
    assert_eq!(app.writes(&id).len(), 1, "opened once");
}

#[tokio::test]
async fn a_replayed_discord_command_creates_one_request_and_one_card() {
    let app = spawn_discord_app().await;
    let url = app.interactions_url();
    let body = discord_user::request(D_STEVE, &[], "web1", "22", "1h");
    let now = chrono::Utc::now().timestamp();

    let first = discord_user::send_at(&app.http, &url, discord_user::TEST_SEED, &body, now)
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let json: serde_json::Value = first.json().await.unwrap();
    let id = id_in(&embed_text(&json["data"]));
    app.card(&id).await;
    let again = discord_user::send_at(&app.http, &url, discord_user::TEST_SEED, &body, now)
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    settle().await;

    assert_eq!(app.row_counts().await.0, 1, "one request");
    let cards = app.discord.messages(D_APPROVALS);
    assert_eq!(cards.len(), 1, "one card");
    assert_eq!(refused_rules(&app).await, ["replayed_request"]);
}

#[tokio::test]
async fn a_replayed_discord_click_is_decided_once() {
    let app = spawn_discord_app().await;
    let id = app.submit(D_STEVE, "web1", "22", "1h").await;
    let card = app.card(&id).await;
    let custom_id = card
        .custom_ids()
        .into_iter()
        .find(|c| c.starts_with("jit:approve:"))
        .expect("an Approve button");
    let body = discord_user::button(D_ALICE, &[], D_APPROVALS, &card.id, &custom_id);
    let url = app.interactions_url();
    let now = chrono::Utc::now().timestamp();

    let first = discord_user::send_at(&app.http, &url, discord_user::TEST_SEED, &body, now)
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let again = discord_user::send_at(&app.http, &url, discord_user::TEST_SEED, &body, now)
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    app.wait_status(&id, Status::Active, Duration::from_secs(10)).await;
    settle().await;

    assert_eq!(app.store.decisions(&id).await.unwrap().len(), 1);
    assert_eq!(app.audit_kinds(&id).await.iter().filter(|k| *k == "approved").count(), 1);
    assert_eq!(app.writes(&id).len(), 1, "opened once");
    assert_eq!(refused_rules(&app).await, ["replayed_request"]);
}

#[tokio::test]
async fn the_replay_cache_forgets_what_left_the_window() {
    let app = spawn_app().await;
    let now = jitbot::store::now_ms();
    assert!(app.store.first_sighting("a", now - 1, now).await.unwrap());
    assert!(app.store.first_sighting("b", now + 60_000, now).await.unwrap());
    // Inserting purges what expired: `a` is gone, `b` is still a replay.
    assert!(app.store.first_sighting("c", now + 60_000, now).await.unwrap());
    assert!(!app.store.first_sighting("b", now + 60_000, now).await.unwrap());
    // Whatever else the app recorded meanwhile is in the window too.
    let held = app.store.seen_requests().await.unwrap();
    assert!(held >= 2, "{held}");
    assert!(app.store.first_sighting("a", now + 60_000, now).await.unwrap(), "expired digests are purged");
}

#[tokio::test]
async fn forged_clicks_from_unknown_users_cost_no_outbound_call() {
    let app = spawn_app().await;
    let id = app.submit(STEVE, "web1 22 1h").await;
    let ts = app.card_ts(&id).await;
    settle().await;
    let calls_before = app.slack.calls().len();
    let url = format!("{}/slack/interactions", app.base);

    for n in 0..20 {
        let stranger = format!("U0STRANGER{n}");
        let body = slack_user::block_action(&stranger, "x", APPROVALS, &ts, "jit_approve", &id);
        let r = slack_user::send(&app.http, &url, SECRET, &body).await.unwrap();
        assert_eq!(r.status(), 200);
        let json: serde_json::Value = r.json().await.unwrap();
        // Answered in the interaction's own response, to the clicker alone.
        assert_eq!(json["response_type"], "ephemeral", "{json}");
        assert_eq!(json["replace_original"], false, "{json}");
        assert!(json["text"].as_str().unwrap_or_default().contains("not in jitbot's policy"), "{json}");
    }
    settle().await;

    assert_eq!(app.slack.calls().len(), calls_before, "no DM, no call to Slack");
    assert_eq!(app.request(&id).await.status, Status::Pending);
    let rules = refused_rules(&app).await;
    assert_eq!(rules.iter().filter(|r| *r == "unknown_person").count(), 20, "each is audited");

    // A person in the policy who may not decide still gets the durable direct message.
    assert_eq!(app.click(MALLORY, &id, true).await, 200);
    app.wait_until("Mallory's DM", Duration::from_secs(5), |a| !a.dms(MALLORY).is_empty()).await;
}

#[tokio::test]
async fn what_a_sender_types_is_bounded_in_the_audit_trail() {
    let app = spawn_app().await;
    let huge = "A".repeat(200_000);
    // From a stranger, as a bad command of a known person, and as a target name.
    app.slash("U0NOBODY", &huge).await;
    app.slash(STEVE, &format!("web1 telnet 1h {huge}")).await;
    app.slash(STEVE, &format!("{huge} 22 1h")).await;
    let refusals = app.events_of("refused").await;
    assert_eq!(refusals.len(), 3);
    for event in &refusals {
        let size = event.detail.to_string().len();
        assert!(size < 4_096, "an audit event of {size} bytes: {}", &event.detail.to_string()[..200]);
        assert!(event.detail.to_string().contains("[truncated:") || size < 1_500);
    }
    // The person still got told what went wrong.
    assert!(app.slash(STEVE, &format!("web1 telnet 1h {huge}")).await.contains("not a port"));
}
}
