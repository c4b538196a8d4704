//! What a Slack client sends to jitbot when a person types `/jit …` or clicks a button: bodies in
//! the exact shapes of `shared/reference/vectors/`, signed like Slack signs them. Used by the demo
//! and the black-box tests.

use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh `trigger_id`, as Slack gives each invocation and click its own: two identical
/// commands are two signed requests with different bodies, never a replay of one. The middle
/// part is when it was issued (Unix ms): the Slack emulator's `views.open` refuses it 3 seconds
/// later, as Slack does.
pub fn trigger_id() -> String {
    trigger_id_issued_at(chrono::Utc::now().timestamp_millis())
}

/// A `trigger_id` issued at `issued_ms` (Unix ms), e.g. one already expired.
pub fn trigger_id_issued_at(issued_ms: i64) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{n}.{issued_ms}.{:032x}", rand::random::<u128>())
}

/// The form body Slack posts for a slash command.
pub fn slash_command(user_id: &str, user_name: &str, channel_id: &str, text: &str) -> String {
    serde_urlencoded::to_string(slash_fields(user_id, user_name, channel_id, text))
        .unwrap_or_default()
}

/// The same slash command as Socket Mode delivers it: the `payload` of a `slash_commands`
/// envelope, the form's fields as a JSON object of strings.
pub fn slash_command_payload(
    user_id: &str,
    user_name: &str,
    channel_id: &str,
    text: &str,
) -> serde_json::Value {
    slash_fields(user_id, user_name, channel_id, text)
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A slash command's fields, in the order Slack sends them.
fn slash_fields(
    user_id: &str,
    user_name: &str,
    channel_id: &str,
    text: &str,
) -> Vec<(&'static str, String)> {
    [
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", "T0001"),
        ("team_domain", "example"),
        ("channel_id", channel_id),
        ("channel_name", "ops"),
        ("user_id", user_id),
        ("user_name", user_name),
        ("command", "/jit"),
        ("text", text),
        ("api_app_id", "A123456"),
        ("is_enterprise_install", "false"),
        (
            "response_url",
            "https://hooks.slack.com/commands/T0001/1234567890123/abcdEFGHijklMNOPqrstUVWX",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .chain([("trigger_id", trigger_id())])
    .collect()
}

/// The form body Slack posts when a person clicks a button on a message (`block_actions`).
pub fn block_action(
    user_id: &str,
    user_name: &str,
    channel_id: &str,
    message_ts: &str,
    action_id: &str,
    value: &str,
) -> String {
    let payload =
        block_action_payload(user_id, user_name, channel_id, message_ts, action_id, value);
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap_or_default()
}

/// The same click as JSON: the form's `payload` field, and the `payload` of an `interactive`
/// Socket Mode envelope.
pub fn block_action_payload(
    user_id: &str,
    user_name: &str,
    channel_id: &str,
    message_ts: &str,
    action_id: &str,
    value: &str,
) -> serde_json::Value {
    let block_id = format!("jit_actions:{}", value.split(':').next().unwrap_or(value));
    json!({
        "type": "block_actions",
        "user": { "id": user_id, "username": user_name, "name": user_name, "team_id": "T0001" },
        "api_app_id": "A123456",
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "container": { "type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": false },
        "trigger_id": trigger_id(),
        "team": { "id": "T0001", "domain": "example" },
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": { "id": channel_id, "name": "jit-approvals" },
        "message": { "type": "message", "ts": message_ts, "text": "JIT access request", "blocks": [] },
        "state": { "values": {} },
        "response_url": "https://hooks.slack.com/actions/T0001/6260451215764/r4nd0mT0k3nV4lu3xyz12345",
        "actions": [{
            "action_id": action_id, "block_id": block_id,
            "text": { "type": "plain_text", "text": "Approve", "emoji": true },
            "value": value, "type": "button", "action_ts": "1700000160.123456"
        }]
    })
}

/// Posts `body` to `url` signed with `secret` at `timestamp` (Unix seconds), as Slack does.
pub async fn send_at(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    body: &str,
    timestamp: i64,
) -> reqwest::Result<reqwest::Response> {
    let signature = super::slack::sign(secret, timestamp, body.as_bytes());
    client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", timestamp.to_string())
        .header("x-slack-signature", signature)
        .body(body.to_string())
        .send()
        .await
}

/// Posts `body` to `url`, signed now.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    send_at(client, url, secret, body, chrono::Utc::now().timestamp()).await
}

/// The `state.values` Slack sends with a view: every input block's current value (its initial
/// value unless the person changed it), with `changes` applied as `(action_id, value)`; a
/// multi-select's value is comma-separated option values.
pub fn view_state(view: &serde_json::Value, changes: &[(&str, &str)]) -> serde_json::Value {
    use serde_json::Value;
    let mut values = serde_json::Map::new();
    let blocks = view["blocks"].as_array().cloned().unwrap_or_default();
    for b in blocks.iter().filter(|b| b["type"] == "input") {
        let el = &b["element"];
        let action = el["action_id"].as_str().unwrap_or_default();
        let changed = changes.iter().find(|(a, _)| *a == action).map(|(_, v)| *v);
        let option = |value: &str| {
            el["options"]
                .as_array()
                .and_then(|os| os.iter().find(|o| o["value"] == value).cloned())
                .unwrap_or_else(
                    || json!({ "text": { "type": "plain_text", "text": value }, "value": value }),
                )
        };
        let state = match el["type"].as_str().unwrap_or_default() {
            "static_select" => json!({ "type": "static_select", "selected_option":
                changed.map(option).unwrap_or_else(|| el["initial_option"].clone()) }),
            "multi_static_select" => json!({ "type": "multi_static_select", "selected_options":
                match changed {
                    Some(v) => Value::Array(v.split(',').filter(|s| !s.is_empty()).map(option).collect()),
                    None => el.get("initial_options").cloned().unwrap_or(json!([])),
                } }),
            kind => json!({ "type": kind, "value":
                changed.map(|v| json!(v)).unwrap_or_else(|| el.get("initial_value").cloned().unwrap_or(Value::Null)) }),
        };
        let block = b["block_id"].as_str().unwrap_or_default().to_string();
        values.insert(block, json!({ action: state }));
    }
    json!({ "values": values })
}

fn person(user_id: &str, user_name: &str) -> serde_json::Value {
    json!({ "id": user_id, "username": user_name, "name": user_name, "team_id": "T0001" })
}

fn payload_body(payload: serde_json::Value) -> String {
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap_or_default()
}

/// The form body Slack posts when a person chooses `value` in the select `action_id` of an
/// open modal (`view`: as the Slack emulator holds it, [`crate::slack::SlackView::full`]) whose
/// input block dispatches actions: `block_actions` with `container.type = "view"`.
pub fn view_block_action(
    user_id: &str,
    user_name: &str,
    view: &serde_json::Value,
    action_id: &str,
    value: &str,
) -> String {
    payload_body(view_block_action_payload(
        user_id, user_name, view, action_id, value,
    ))
}

/// The same choice as JSON: the form's `payload` field, and the `payload` of an `interactive`
/// Socket Mode envelope.
pub fn view_block_action_payload(
    user_id: &str,
    user_name: &str,
    view: &serde_json::Value,
    action_id: &str,
    value: &str,
) -> serde_json::Value {
    let mut view = view.clone();
    view["state"] = view_state(&view, &[(action_id, value)]);
    let block = view["blocks"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["element"]["action_id"] == action_id))
        .cloned()
        .unwrap_or_default();
    let selected = view["state"]["values"][block["block_id"].as_str().unwrap_or_default()]
        [action_id]["selected_option"]
        .clone();
    json!({
        "type": "block_actions",
        "user": person(user_id, user_name),
        "api_app_id": "A123456",
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "container": { "type": "view", "view_id": view["id"] },
        "trigger_id": trigger_id(),
        "team": { "id": "T0001", "domain": "example" },
        "enterprise": null,
        "is_enterprise_install": false,
        "view": view,
        "actions": [{
            "type": "static_select", "action_id": action_id, "block_id": block["block_id"],
            "selected_option": selected, "action_ts": "1700000160.123456"
        }]
    })
}

/// The form body Slack posts when a person submits a modal, with `changes` made to its fields
/// (`(action_id, value)`; everything else as the view prefilled it).
pub fn view_submission(
    user_id: &str,
    user_name: &str,
    view: &serde_json::Value,
    changes: &[(&str, &str)],
) -> String {
    payload_body(view_submission_payload(user_id, user_name, view, changes))
}

/// The same submission as JSON: the form's `payload` field, and the `payload` of an
/// `interactive` Socket Mode envelope.
pub fn view_submission_payload(
    user_id: &str,
    user_name: &str,
    view: &serde_json::Value,
    changes: &[(&str, &str)],
) -> serde_json::Value {
    let mut view = view.clone();
    view["state"] = view_state(&view, changes);
    json!({
        "type": "view_submission",
        "team": { "id": "T0001", "domain": "example" },
        "user": person(user_id, user_name),
        "api_app_id": "A123456",
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "trigger_id": trigger_id(),
        "view": view,
        "response_urls": [],
        "is_enterprise_install": false,
        "enterprise": null
    })
}
