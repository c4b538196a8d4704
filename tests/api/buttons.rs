//! The requester's buttons on an open grant (Extend, I'm done) and the reminder before it
//! closes, pressed as Slack sends them (block_actions on the direct message).

use crate::helpers::*;
use jitbot::domain::Status;
use std::time::Duration;

/// Waits for the requester's "Access open" message; returns its ts and buttons.
async fn open_message(app: &TestApp, id: &str) -> (String, Vec<DmButton>) {
    app.wait_until("the open notice", Duration::from_secs(5), |a| {
        a.dm_buttons(STEVE, "is open from").is_some()
    })
    .await;
    let found = app.dm_buttons(STEVE, "is open from").unwrap();
    assert!(
        app.dms(STEVE).iter().any(|t| t.contains(id)),
        "the notice names the request"
    );
    found
}

slack_transports! {
#[tokio::test]
async fn im_done_closes_the_grant_and_extend_asks_for_the_extension() {
    let app = spawn_app().await;
    let id = app.submit(STEVE, "web1 22 20m").await;
    app.click(ALICE, &id, true).await;
    app.wait_status(&id, Status::Active, Duration::from_secs(5)).await;
    let (ts, buttons) = open_message(&app, &id).await;
    // web1 allows 1h: 40 minutes of room, the grant's own 20 offered.
    assert_eq!(
        buttons,
        [
            ("jit_extend".to_string(), format!("{id}:1200"), "Extend 20m".to_string()),
            ("jit_done".to_string(), id.clone(), "I'm done".to_string()),
        ]
    );
    // The audit channel's copy has no buttons.
    assert!(app.audit_feed().iter().all(|t| !t.contains("I'm done")));

    // Someone else's press changes nothing.
    app.press(MALLORY, STEVE, &ts, "jit_done", &id).await;
    assert_eq!(app.request(&id).await.status, Status::Active);

    assert_eq!(app.press(STEVE, STEVE, &ts, "jit_extend", &format!("{id}:1200")).await, 200);
    let asked = app.request(&id).await;
    assert_eq!(asked.extension_ms, Some(1_200_000), "an extension round, as /jit extend opens");
    assert!(app.audit_kinds(&id).await.contains(&"extension_requested".to_string()));

    assert_eq!(app.press(STEVE, STEVE, &ts, "jit_done", &id).await, 200);
    app.wait_status(&id, Status::Revoked, Duration::from_secs(10)).await;
    assert!(app.rule(&id).is_none());
    let kinds = app.audit_kinds(&id).await;
    assert!(kinds.contains(&"revoke_requested".to_string()), "{kinds:?}");
    // The approvers of the next request see that history on the card.
    let next = app.submit(STEVE, "web1 22 20m").await;
    app.wait_until("the card with the history", Duration::from_secs(5), |a| {
        a.card_text(&next).contains("1 on web1 in the last 30 days")
    })
    .await;
}

#[tokio::test]
async fn the_requester_is_reminded_before_the_grant_closes() {
    let app = spawn_app_tuned("reminder_before = \"2s\"", &[], "").await;
    let id = app.submit(STEVE, "web1 22 7s").await;
    app.click(ALICE, &id, true).await;
    let active = app.wait_status(&id, Status::Active, Duration::from_secs(5)).await;
    app.wait_until("the reminder", Duration::from_secs(10), |a| {
        a.dm_buttons(STEVE, "closes at").is_some()
    })
    .await;
    let reminded_at = jitbot::store::now_ms();
    let expires = active.expires_at.unwrap();
    assert!(
        (1_000..=3_000).contains(&(expires - reminded_at)),
        "reminded {} ms before expiry",
        expires - reminded_at
    );
    let (_, buttons) = app.dm_buttons(STEVE, "closes at").unwrap();
    let kinds: Vec<&str> = buttons.iter().map(|b| b.0.as_str()).collect();
    assert_eq!(kinds, ["jit_extend", "jit_done"]);
    app.wait_status(&id, Status::Revoked, Duration::from_secs(10)).await;
    // One reminder, and none for short grants.
    let reminders = app.dms(STEVE).iter().filter(|t| t.contains("Closing soon")).count();
    assert_eq!(reminders, 1);
    let short = app.submit(STEVE, "web1 22 3s").await;
    app.click(ALICE, &short, true).await;
    app.wait_status(&short, Status::Revoked, Duration::from_secs(10)).await;
    let reminders = app.dms(STEVE).iter().filter(|t| t.contains("Closing soon")).count();
    assert_eq!(reminders, 1);
}
}
