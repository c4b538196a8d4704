//! Forms end to end: `/jit` alone opens a Slack modal (views.open), choosing a target rebuilds
//! it (views.update), submitting makes exactly the request the typed command would, errors come
//! back beside their fields; Discord's select menu → modal (type 9) → submit (type 5); and
//! **Deny with reason** on both platforms. Payloads are shaped as Slack and Discord send them.
//! The Slack tests run over HTTP and over Socket Mode (`slack_transports!`): the same payloads
//! as `interactive` envelopes, a submission's answer in the envelope's ack.

use crate::helpers::*;
use jitbot::domain::Status;
use jitbot_sim::discord_user;
use jitbot_sim::slack::SlackView;
use jitbot_sim::slack_user;
use serde_json::{Value, json};
use std::time::Duration;

const FIVE: Duration = Duration::from_secs(5);

/// Sends an interaction `payload` (the JSON Slack puts in the form's `payload` field) over the
/// test's Slack transport: signed to `/slack/interactions`, or as an `interactive` Socket Mode
/// envelope whose ack must come within 3 s. The status and jitbot's answer (`Null` for none):
/// the HTTP response body, or the ack's `payload`, where Socket Mode carries a
/// `view_submission`'s `response_action`.
async fn interact(app: &TestApp, payload: Value) -> (reqwest::StatusCode, Value) {
    if app.transport == Transport::Socket {
        return app.over_socket("interactive", payload).await;
    }
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let resp = slack_user::send(
        &app.http,
        &format!("{}/slack/interactions", app.base),
        SECRET,
        &body,
    )
    .await
    .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sends a slash command `payload` (its fields as a JSON object of strings) over the test's
/// Slack transport; the status (the answer is not needed here).
async fn command(app: &TestApp, payload: Value) -> reqwest::StatusCode {
    if app.transport == Transport::Socket {
        return app.over_socket("slash_commands", payload).await.0;
    }
    let pairs: Vec<(String, String)> = payload
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let body = serde_urlencoded::to_string(&pairs).unwrap();
    let url = format!("{}/slack/commands", app.base);
    let resp = slack_user::send(&app.http, &url, SECRET, &body)
        .await
        .unwrap();
    resp.status()
}

/// The `n`-th modal the fake Slack holds, once it has been opened (and updated `updates` times).
async fn view(app: &TestApp, n: usize, updates: u32) -> SlackView {
    eventually(
        FIVE,
        &format!("no view #{n} with {updates} updates"),
        || {
            app.slack
                .views()
                .get(n)
                .filter(|v| v.updates == updates)
                .cloned()
        },
    )
    .await
}

/// The input block of a view whose element's `action_id` is `field`.
fn block(v: &SlackView, field: &str) -> Value {
    v.blocks()
        .into_iter()
        .find(|b| b["element"]["action_id"] == field)
        .unwrap_or_else(|| panic!("no {field} field in {}", v.view))
}

fn option_values(block: &Value) -> Vec<String> {
    block["element"]["options"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| o["value"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The answer text of a `response_action: update` (the modal replaced by jitbot's answer).
fn answer_text(answer: &Value) -> String {
    assert_eq!(answer["response_action"], "update", "{answer}");
    answer["view"]["blocks"].to_string()
}

/// Opens the request form as `user` (`/jit` alone) and returns the modal Slack shows.
async fn open_form(app: &TestApp, user: &str) -> SlackView {
    let before = app.slack.views().len();
    let sent = chrono::Utc::now();
    let (status, body) = app.slash_as(user, "").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        Value::Null,
        "the form opens without a message: {body}"
    );
    let v = view(app, before, 0).await;
    // The worker runs views.open at once: the trigger lives 3 seconds.
    let opened = app
        .slack
        .calls()
        .into_iter()
        .find(|c| c.method == "views.open" && c.ok);
    let latency = (opened.unwrap().at - sent).num_milliseconds();
    println!("METRIC form_open_latency_ms={latency}");
    assert!(
        latency < 1_000,
        "views.open came {latency} ms after the command"
    );
    v
}

/// The comparable shape of a request: what the form and the typed command must agree on.
fn shape(r: &jitbot::store::RequestRow) -> Value {
    json!([
        r.requester,
        r.target,
        r.ports,
        r.protocol,
        r.source,
        r.destination,
        r.duration_ms,
        r.reason,
        r.status.to_string(),
        r.approvals_required
    ])
}

/// A target whose reason must match a pattern, and dora, who usually connects from one address.
const OPS: &str = r#"
[people.dora]
slack = "U0DORA"
sources = ["203.0.113.40"]

[targets.ops]
nsg = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/prod/providers/Microsoft.Network/networkSecurityGroups/web1-nsg"
destination = "10.0.3.4"
ports = [22]
max_duration = "2h"
allowed_sources = ["203.0.113.0/24"]
requesters = ["steve", "dora"]
approvers = ["group:secops"]
approval_channel.slack = "C0APPROVALS"
priority_range = [300, 399]
reason_pattern = '^INC-\d+'
"#;

slack_transports! {
#[tokio::test]
async fn slack_form_opens_follows_the_target_and_submits_the_typed_request() {
    let app = spawn_app().await;
    let v = open_form(&app, STEVE).await;
    assert_eq!(v.view["callback_id"], "jit_form");
    // Steve may request db1 and web1; the first is chosen and the rest follows it.
    assert_eq!(option_values(&block(&v, "target")), ["db1", "web1"]);
    assert_eq!(block(&v, "target")["dispatch_action"], true);
    assert_eq!(option_values(&block(&v, "ports")), ["5432"]);
    assert_eq!(option_values(&block(&v, "duration")), ["15m", "30m", "1h"]);
    assert_eq!(block(&v, "duration")["element"]["initial_option"]["value"], "1h");

    // Choosing web1 rebuilds the form for it (views.update with the view's id and hash).
    let change = slack_user::view_block_action_payload(STEVE, "steve", &v.full(), "target", "web1");
    let (status, _) = interact(&app, change).await;
    assert_eq!(status, 200);
    let v2 = view(&app, 0, 1).await;
    let update = app.slack.calls().into_iter().rfind(|c| c.method == "views.update").unwrap();
    assert!(update.ok, "{update:?}");
    assert_eq!(update.body["view_id"], v.id.as_str());
    assert_eq!(update.body["hash"], v.hash.as_str());
    assert_eq!(option_values(&block(&v2, "ports")), ["22", "3389"]);
    assert_eq!(block(&v2, "ports")["block_id"], "ports:web1", "new blocks get new values");
    assert_eq!(block(&v2, "target")["element"]["initial_option"]["value"], "web1");
    // A change sent from the view as it was before (a stale hash) is refused by Slack.
    let stale = slack_user::view_block_action_payload(STEVE, "steve", &v.full(), "target", "db1");
    assert_eq!(interact(&app, stale).await.0, 200);
    app.wait_until("views.update refused", FIVE, |app| {
        app.slack.calls().iter().any(|c| c.error.as_deref() == Some("hash_conflict"))
    })
    .await;
    assert_eq!(app.slack.views()[0].hash, v2.hash, "the view did not change");

    let submit = slack_user::view_submission_payload(
        STEVE, "steve", &v2.full(), &[("ports", "22,3389"), ("reason", "deploy hotfix")],
    );
    let (status, answer) = interact(&app, submit).await;
    assert_eq!(status, 200);
    let text = answer_text(&answer);
    assert!(text.contains("waiting for approval"), "{text}");
    let from_form = app.request(&request_id_in(&text)).await;
    let typed = app.submit(STEVE, "web1 22,3389 1h deploy hotfix").await;
    assert_eq!(shape(&from_form), shape(&app.request(&typed).await));
    assert_eq!(from_form.source, "203.0.113.7/32");
    app.card_ts(&from_form.id).await;
}

#[tokio::test]
async fn slack_form_errors_appear_beside_their_fields_and_change_nothing() {
    let app = spawn_app().await;
    let v = open_form(&app, STEVE).await;
    let before = app.row_counts().await;
    // Unreadable fields: each gets its own error, in its own block.
    let bad = slack_user::view_submission_payload(STEVE, "steve", &v.full(), &[("ports", ""), ("source", "somewhere")]);
    let (status, answer) = interact(&app, bad).await;
    assert_eq!(status, 200);
    assert_eq!(answer["response_action"], "errors", "{answer}");
    let errors = answer["errors"].as_object().unwrap();
    let mut blocks: Vec<&String> = errors.keys().collect();
    blocks.sort();
    assert_eq!(blocks, ["ports", "source"], "{answer}");
    // A policy refusal lands on the field it is about (a duration Slack's select would not
    // offer, as a forged submission could send).
    let long = slack_user::view_submission_payload(STEVE, "steve", &v.full(), &[("duration", "2h")]);
    let (_, answer) = interact(&app, long).await;
    assert_eq!(answer["response_action"], "errors", "{answer}");
    let why = answer["errors"]["duration"].as_str().unwrap_or_default();
    assert!(why.contains("maximum: 1h"), "{answer}");
    assert_eq!(app.row_counts().await.0, before.0, "no request was recorded");
    let rules: Vec<Value> = app.refusals().await.into_iter().map(|r| r["rule"].clone()).collect();
    assert!(rules.contains(&json!("bad_form")) && rules.contains(&json!("duration_over_max")), "{rules:?}");
}

#[tokio::test]
async fn slack_form_from_an_expired_trigger_is_not_opened() {
    let app = spawn_app().await;
    let mut payload = slack_user::slash_command_payload(STEVE, "steve", "C0OPS", "");
    payload["trigger_id"] =
        slack_user::trigger_id_issued_at(chrono::Utc::now().timestamp_millis() - 10_000).into();
    assert_eq!(command(&app, payload).await, 200);
    app.wait_until("views.open refused", FIVE, |app| {
        app.slack.calls().iter().any(|c| c.method == "views.open" && c.error.as_deref() == Some("expired_trigger_id"))
    })
    .await;
    assert!(app.slack.views().is_empty());
}

#[tokio::test]
async fn slack_deny_with_reason_reaches_the_requester_and_the_audit_trail() {
    let app = spawn_app().await;
    let id = app.submit(STEVE, "web1 22 30m").await;
    let ts = app.card_ts(&id).await;
    assert!(app.card_text(&id).contains("Deny with reason"), "{}", app.card_text(&id));

    // Someone who may not decide gets no form.
    app.press(MALLORY, APPROVALS, &ts, "jit_deny_reason", &id).await;
    app.press(ALICE, APPROVALS, &ts, "jit_deny_reason", &id).await;
    let v = view(&app, 0, 0).await;
    assert!(v.text().contains("Deny with reason") && v.text().contains(&id), "{}", v.text());
    assert_eq!(app.slack.views().len(), 1, "mallory got a form");

    // No reason: the error is beside the field; nothing is decided.
    let empty = slack_user::view_submission_payload(ALICE, "alice", &v.full(), &[]);
    let (_, answer) = interact(&app, empty).await;
    assert_eq!(answer["response_action"], "errors", "{answer}");
    assert!(answer["errors"]["reason"].is_string(), "{answer}");
    assert_eq!(app.request(&id).await.status, Status::Pending);

    let deny = slack_user::view_submission_payload(ALICE, "alice", &v.full(), &[("reason", "change freeze until Monday")]);
    let (status, answer) = interact(&app, deny).await;
    assert_eq!((status.as_u16(), answer), (200, Value::Null), "the form just closes");
    app.wait_status(&id, Status::Denied, FIVE).await;
    // The round is decided: another Deny with reason gets no form.
    app.press(BOB, APPROVALS, &ts, "jit_deny_reason", &id).await;
    app.wait_until("bob is told", FIVE, |app| {
        app.dms(BOB).iter().any(|m| m.contains("already decided"))
    })
    .await;
    assert_eq!(app.slack.views().len(), 1);
    let denied = app.events_of("denied").await;
    assert_eq!(denied[0].detail["reason"], "change freeze until Monday");
    app.wait_until("the requester reads the reason", FIVE, |app| {
        app.dms(STEVE).iter().any(|m| m.contains("change freeze until Monday"))
    })
    .await;
}

#[tokio::test]
async fn slack_form_prefills_usual_sources_and_shows_the_reason_rule() {
    let app = spawn_app_with(OPS).await;
    // Dora may request ops alone: it is chosen, her usual address prefilled.
    let v = open_form(&app, "U0DORA").await;
    assert_eq!(option_values(&block(&v, "target")), ["ops"]);
    assert_eq!(block(&v, "source")["element"]["initial_value"], "203.0.113.40/32");
    assert_eq!(option_values(&block(&v, "duration")), ["15m", "30m", "1h", "2h"]);
    let reason = block(&v, "reason");
    assert_eq!(reason["optional"], false);
    assert!(reason["hint"]["text"].as_str().unwrap().contains(r"^INC-\d+"), "{reason}");

    let wrong = slack_user::view_submission_payload("U0DORA", "dora", &v.full(), &[("reason", "hotfix")]);
    let (_, answer) = interact(&app, wrong).await;
    assert!(answer["errors"]["reason"].as_str().unwrap_or_default().contains("must match"), "{answer}");
    let right = slack_user::view_submission_payload("U0DORA", "dora", &v.full(), &[("reason", "INC-42 restart")]);
    let (_, answer) = interact(&app, right).await;
    let req = app.request(&request_id_in(&answer_text(&answer))).await;
    assert_eq!((req.source.as_str(), req.reason.as_deref()), ("203.0.113.40/32", Some("INC-42 restart")));
}
}

backends! {
#[tokio::test]
async fn discord_form_menu_then_modal_then_the_typed_request() {
    let app = spawn_discord_app().await;
    let (status, menu) = app.send(&discord_user::command(D_STEVE, &[], "form", vec![])).await;
    assert_eq!(status, 200);
    assert_eq!((menu["type"].as_u64(), menu["data"]["flags"].as_u64()), (Some(4), Some(64)), "{menu}");
    let select = &menu["data"]["components"][0]["components"][0];
    assert_eq!(select["custom_id"], "jitform:pick", "{menu}");
    let targets: Vec<&str> = select["options"].as_array().unwrap().iter().filter_map(|o| o["value"].as_str()).collect();
    assert_eq!(targets, ["app1", "web1"]);

    let pick = discord_user::select(D_STEVE, &[], "645027906669510667", "1300000000000000001", "jitform:pick", &["web1"]);
    let (_, modal) = app.send(&pick).await;
    assert_eq!(modal["type"], 9, "{modal}");
    assert_eq!(modal["data"]["custom_id"], "jitform:request:web1");
    let inputs: Vec<&str> = modal["data"]["components"].as_array().unwrap().iter()
        .filter_map(|r| r["components"][0]["custom_id"].as_str()).collect();
    assert_eq!(inputs, ["ports", "duration", "source", "reason"]);
    // `/jit form target:web1` goes straight to the same modal.
    let (_, direct) = app.send(&discord_user::command(D_STEVE, &[], "form", vec![discord_user::opt("target", "web1")])).await;
    assert_eq!(direct, modal);

    let bad = discord_user::modal_submit(D_STEVE, &[], "jitform:request:web1", &[("ports", "23"), ("duration", "30m")]);
    let (_, answer) = app.send(&bad).await;
    let text = embed_text(&answer["data"]);
    assert!(text.contains("ports: port 23 is not allowed"), "{text}");

    let good = discord_user::modal_submit(D_STEVE, &[], "jitform:request:web1",
        &[("ports", "22"), ("duration", "30m"), ("source", "203.0.113.9"), ("reason", "deploy hotfix")]);
    let (_, answer) = app.send(&good).await;
    assert_eq!((answer["type"].as_u64(), answer["data"]["flags"].as_u64()), (Some(4), Some(64)), "{answer}");
    let from_form = app.request(&request_id_in(&embed_text(&answer["data"]))).await;
    let typed = app.command(D_STEVE, &[], "request", vec![
        discord_user::opt("target", "web1"), discord_user::opt("ports", "22"),
        discord_user::opt("duration", "30m"), discord_user::opt("source", "203.0.113.9"),
        discord_user::opt("reason", "deploy hotfix"),
    ]).await;
    assert_eq!(shape(&from_form), shape(&app.request(&request_id_in(&typed)).await));
}

#[tokio::test]
async fn discord_deny_with_reason_is_a_modal() {
    let app = spawn_discord_app().await;
    let id = app.submit(D_STEVE, "web1", "22", "30m").await;
    let card = app.card(&id).await;
    let custom_id = format!("jit:deny_reason:{id}:0");
    assert!(card.custom_ids().contains(&custom_id), "{card:?}");
    let click = discord_user::button(D_ALICE, &[], D_APPROVALS, &card.id, &custom_id);
    let (_, modal) = app.send(&click).await;
    assert_eq!(modal["type"], 9, "{modal}");
    let modal_id = format!("jitform:deny:{id}:0");
    assert_eq!(modal["data"]["custom_id"], modal_id.as_str());
    // Someone who may not decide gets the refusal, not the modal.
    let (_, refused) = app.send(&discord_user::button(D_MALLORY, &[], D_APPROVALS, &card.id, &custom_id)).await;
    assert_eq!(refused["type"], 4, "{refused}");

    let submit = discord_user::modal_submit(D_ALICE, &[], &modal_id, &[("reason", "use the bastion")]);
    let (_, answer) = app.send(&submit).await;
    assert_eq!(answer, json!({ "type": 6 }));
    app.wait_status(&id, Status::Denied, FIVE).await;
    assert_eq!(app.events_of("denied").await[0].detail["reason"], "use the bastion");
    app.wait_until("the requester reads the reason", FIVE, |app| {
        app.dms(D_STEVE).iter().any(|m| m.contains("use the bastion"))
    })
    .await;
}
}
