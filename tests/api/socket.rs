//! Slack Socket Mode only: redelivered envelopes count once, reconnects in the middle of a burst
//! lose nothing, and the HTTP routes are off. (The shared black-box tests run over Socket Mode
//! too: `slack_transports!` in `main.rs`.)

use crate::helpers::*;
use jitbot::domain::Status;
use jitbot_sim::slack_user;
use std::collections::HashSet;
use std::time::Duration;

/// Each test as `name::socket_sqlite` (Socket Mode, SQLite).
macro_rules! socket_tests {
    ($(
        $(#[doc = $doc:literal])*
        #[tokio::test $(($($args:tt)*))?]
        async fn $name:ident() $body:block
    )*) => {$(
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test $(($($args)*))?]
            async fn socket_sqlite() {
                run_test_over(
                    Db::Sqlite,
                    Transport::Socket,
                    concat!(module_path!(), "::socket_sqlite"),
                    async $body,
                )
                .await
            }
        }
    )*};
}

/// Gives the worker time to do anything a redelivery might have queued.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(400)).await;
}

/// Waits until every envelope pushed so far is acknowledged.
async fn all_acked(app: &TestApp, timeout: Duration) {
    app.wait_until("every envelope acknowledged", timeout, |a| {
        a.slack.socket().envelopes().iter().all(|e| e.ack.is_some())
    })
    .await;
}

/// Pushes `n` different `/jit web1 22 1h` commands as Steve; returns their envelope ids.
/// One person's burst of commands stays within the abuse limits.
const BURST_LIMITS: &str = "[limits]\nmax_pending_per_person = 100\nmax_requests_per_hour = 100\n";

fn push_commands(app: &TestApp, n: usize, from: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            let payload = slack_user::slash_command_payload(
                STEVE,
                "steve",
                "C0OPS",
                &format!("web1 22 1h burst {i}"),
            );
            app.slack.socket().push("slash_commands", payload)
        })
        .collect()
}

/// The request ids in the acknowledgements, with how many envelopes were acknowledged.
fn acked_request_ids(app: &TestApp) -> (HashSet<String>, usize) {
    let envelopes = app.slack.socket().envelopes();
    let ids = envelopes
        .iter()
        .filter_map(|e| {
            e.ack.as_ref()?.payload.as_ref()?["text"]
                .as_str()
                .map(str::to_string)
        })
        .filter_map(|t| {
            t.split('`')
                .find(|w| w.starts_with("req_"))
                .map(str::to_string)
        })
        .collect();
    (ids, envelopes.len())
}

socket_tests! {
#[tokio::test]
async fn a_redelivered_command_creates_one_request_and_gets_the_same_answer() {
    let app = spawn_app().await;
    let socket = app.slack.socket();
    let payload = slack_user::slash_command_payload(STEVE, "steve", "C0OPS", "web1 22 1h");
    let envelope = socket.push("slash_commands", payload);
    let first = socket.wait_ack(&envelope, Duration::from_secs(5)).await.unwrap();
    assert!(first.latency < Duration::from_secs(3), "{:?}", first.latency);
    let answer = first.payload.clone().expect("the ack carries the answer");
    let id = request_id_in(answer["text"].as_str().unwrap_or_default());
    app.card_ts(&id).await;

    // Slack delivers it again (the ack was lost on the way), twice.
    socket.redeliver(&envelope);
    socket.redeliver(&envelope);
    app.wait_until("both redeliveries acknowledged", Duration::from_secs(5), |a| {
        a.slack.socket().envelopes()[0].later_acks.len() == 2
    })
    .await;
    settle().await;

    let e = &socket.envelopes()[0];
    assert_eq!(e.deliveries.iter().map(|d| d.retry_attempt).collect::<Vec<_>>(), [0, 1, 2]);
    for again in &e.later_acks {
        assert_eq!(again.payload.as_ref(), Some(&answer), "the first answer, again");
        assert!(again.latency < Duration::from_secs(3));
    }
    assert_eq!(app.row_counts().await.0, 1, "one request");
    assert_eq!(app.slack.messages(APPROVALS).len(), 1, "one card");
    // Slack's own redelivery is no attack: nothing is refused.
    assert!(app.refusals().await.is_empty(), "{:?}", app.refusals().await);
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn a_redelivered_click_is_decided_once() {
    let app = spawn_app().await;
    // db1 needs two approvals, so a second counted click would show.
    let id = app.submit(STEVE, "db1 5432 1h").await;
    let ts = app.card_ts(&id).await;
    let socket = app.slack.socket();
    let payload = slack_user::block_action_payload(ALICE, "alice", APPROVALS, &ts, "jit_approve", &id);
    let envelope = socket.push("interactive", payload);
    socket.wait_ack(&envelope, Duration::from_secs(5)).await.unwrap();
    socket.redeliver(&envelope);
    app.wait_until("the redelivery acknowledged", Duration::from_secs(5), |a| {
        a.slack.socket().envelopes().iter().all(|e| e.later_acks.len() == e.deliveries.len() - 1)
    })
    .await;
    settle().await;

    assert_eq!(app.store.decisions(&id).await.unwrap().len(), 1);
    assert_eq!(app.request(&id).await.status, Status::Pending);
    assert!(app.dms(ALICE).is_empty(), "the redelivery changed nothing, not even a DM");
    assert_eq!(app.audit_kinds(&id).await.iter().filter(|k| *k == "approval_recorded").count(), 1);
    // A fresh click by another approver still counts.
    assert_eq!(app.click(BOB, &id, true).await, 200);
    app.wait_status(&id, Status::Active, Duration::from_secs(10)).await;
    assert_eq!(app.writes(&id).len(), 1, "opened once");
}

#[tokio::test]
async fn a_command_delivered_again_to_a_new_process_counts_once() {
    let mut app = spawn_app().await;
    let payload = slack_user::slash_command_payload(STEVE, "steve", "C0OPS", "web1 22 1h");
    let envelope = app.slack.socket().push("slash_commands", payload);
    app.slack.socket().wait_ack(&envelope, Duration::from_secs(5)).await.unwrap();
    // Another process (a restart here; a replica alike) gets the redelivery: it never saw the
    // answer, but the replay cache in the database knows the payload.
    app.crash().await;
    app.start().await;
    app.slack.socket().redeliver(&envelope);
    app.wait_until("the redelivery acknowledged", Duration::from_secs(5), |a| {
        !a.slack.socket().envelopes()[0].later_acks.is_empty()
    })
    .await;
    settle().await;

    let again = app.slack.socket().envelopes()[0].later_acks[0].clone();
    let text = again.payload.expect("a note for the person")["text"].as_str().unwrap_or_default().to_string();
    assert!(text.contains("counts once"), "{text}");
    assert_eq!(app.row_counts().await.0, 1, "one request");
    assert_eq!(app.slack.messages(APPROVALS).len(), 1, "one card");
}

#[tokio::test]
async fn a_socket_mode_reconnect_in_the_middle_of_a_burst_loses_nothing() {
    let app = spawn_app_with(BURST_LIMITS).await;
    let socket = app.slack.socket();
    let n = 40;
    // Commands keep coming, 10 ms apart; halfway Slack rotates the connection: `disconnect`,
    // then it closes the old one after a grace, delivering on it until the new one is up.
    // jitbot opens the new one first and serves the old one until it goes.
    for i in 0..n {
        if i == n / 2 {
            socket.disconnect("refresh_requested", Duration::from_secs(2));
        }
        push_commands(&app, 1, i);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    all_acked(&app, Duration::from_secs(20)).await;
    settle().await;

    let envelopes = socket.envelopes();
    let worst = envelopes.iter().map(|e| e.ack.as_ref().unwrap().latency).max().unwrap();
    println!("METRIC socket_burst_refresh_worst_ack_ms={}", worst.as_millis());
    for e in &envelopes {
        let ack = e.ack.as_ref().unwrap();
        assert!(ack.latency < Duration::from_secs(3), "{} acked after {:?}", e.envelope_id, ack.latency);
        assert_eq!(e.deliveries.len(), 1, "{} was delivered again: {:?}", e.envelope_id, e.deliveries);
    }
    let (ids, acked) = acked_request_ids(&app);
    assert_eq!((ids.len(), acked), (n, n), "every command answered with its own request");
    assert_eq!(app.row_counts().await.0, n as i64, "every command is exactly one request");
    assert_eq!(socket.connections_opened(), 2);
    assert!(
        envelopes.iter().any(|e| e.ack.as_ref().unwrap().connection == 2),
        "the second half went over the new connection"
    );
    app.wait_until("every card posted", Duration::from_secs(20), |a| a.slack.messages(APPROVALS).len() == n).await;
}

#[tokio::test]
async fn a_burst_survives_a_dropped_connection() {
    let app = spawn_app_with(BURST_LIMITS).await;
    let socket = app.slack.socket();
    socket.set_redeliver_after(Duration::from_secs(1));
    let n = 30;
    push_commands(&app, n / 2, 0);
    // The connection vanishes while the first half is in flight: no `disconnect`, no close.
    tokio::time::sleep(Duration::from_millis(30)).await;
    socket.drop_connections();
    push_commands(&app, n / 2, n / 2);
    all_acked(&app, Duration::from_secs(30)).await;
    settle().await;

    let envelopes = socket.envelopes();
    let redelivered = envelopes.iter().filter(|e| e.deliveries.len() > 1).count();
    let worst = envelopes.iter().map(|e| e.ack.as_ref().unwrap().latency).max().unwrap();
    println!("METRIC socket_burst_drop_redelivered={redelivered} worst_ack_ms={}", worst.as_millis());
    for e in &envelopes {
        let ack = e.ack.as_ref().unwrap();
        assert!(ack.latency < Duration::from_secs(3), "{} acked {:?} after its delivery", e.envelope_id, ack.latency);
    }
    let (ids, acked) = acked_request_ids(&app);
    assert_eq!((ids.len(), acked), (n, n), "every command answered with its own request");
    assert_eq!(app.row_counts().await.0, n as i64, "every command is exactly one request");
    assert!(socket.connections_opened() >= 2, "reconnected");
}

#[tokio::test]
async fn in_socket_mode_the_http_routes_are_off() {
    let app = spawn_app().await;
    let body = slack_user::slash_command(STEVE, "steve", "C0OPS", "web1 22 1h");
    for path in ["/slack/commands", "/slack/interactions"] {
        let r = slack_user::send(&app.http, &format!("{}{path}", app.base), SECRET, &body)
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    assert_eq!(app.row_counts().await.0, 0);
    // …while the socket serves.
    assert!(app.slash(STEVE, "help").await.contains("/jit"));
}

#[tokio::test]
async fn a_malformed_envelope_is_acknowledged_audited_and_changes_nothing() {
    let app = spawn_app().await;
    let socket = app.slack.socket();
    let no_user = serde_json::json!({ "command": "/jit", "text": "web1 22 1h" });
    let e1 = socket.push("slash_commands", no_user);
    let e2 = socket.push("interactive", serde_json::json!("not an object"));
    let e3 = socket.push("events_api", serde_json::json!({ "event": { "type": "app_mention" } }));
    for e in [e1, e2, e3] {
        let ack = socket.wait_ack(&e, Duration::from_secs(5)).await.unwrap();
        assert_eq!(ack.payload, None, "a bare ack");
    }
    let rules: Vec<String> = app.refusals().await.iter().map(|r| r["rule"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(rules, ["malformed_request", "malformed_request"]);
    assert_eq!(app.row_counts().await.0, 0);
}
}
