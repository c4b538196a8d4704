//! Slack user groups as approvers (`slack-group:<id>`): membership is fetched by the refresh job
//! (`usergroups.users.list`) into the database and checked at click time, so someone removed
//! from the group can no longer approve after one refresh; a membership too old to rely on fails
//! closed.

use crate::helpers::*;
use jitbot::domain::Status;
use std::time::{Duration, Instant};

const CAROL: &str = "U0CAROL";
const ONCALL: &str = "S0ONCALL";

/// carol, and a target approved by the Slack group ONCALL (refreshed every second).
fn group_target() -> String {
    format!(
        r#"
[people.carol]
slack = "{CAROL}"

[targets.web2]
nsg = "{NSG}"
destination = "10.0.5.4"
ports = [22]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
default_source = "203.0.113.7"
requesters = ["steve"]
approvers = ["slack-group:{ONCALL}"]
approval_channel.slack = "{APPROVALS}"
priority_range = [600, 699]
"#
    )
}

async fn spawn_group_app() -> TestApp {
    spawn_app_tuned(
        "",
        &[("[slack]\n", "[slack]\ngroup_refresh = \"1s\"\n")],
        &group_target(),
    )
    .await
}

/// Waits until a refresh that started after now has recorded ONCALL, and returns whether carol
/// is listed in it.
async fn refreshed(app: &TestApp) -> bool {
    let since = jitbot::store::now_ms();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = app.store.group_table(CAROL).await.unwrap();
        if table.refreshed_at.get(ONCALL).is_some_and(|at| *at > since) {
            return table.member_of.contains(ONCALL);
        }
        assert!(
            Instant::now() < deadline,
            "no refresh of {ONCALL} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

backends! {
#[tokio::test]
async fn a_member_removed_from_the_group_can_no_longer_approve() {
    let app = spawn_group_app().await;
    app.slack.set_usergroup(ONCALL, &[CAROL, BOB]);
    assert!(refreshed(&app).await);
    let id = app.submit(STEVE, "web2 22 30m").await;
    app.click(CAROL, &id, true).await;
    app.wait_status(&id, Status::Active, Duration::from_secs(10)).await;
    // The decision records who clicked, who that is, and through which group.
    let approved = app.events_of("approved").await;
    let detail = &approved[0].detail;
    assert_eq!(detail["chat"], format!("slack:{CAROL}"), "{detail}");
    assert_eq!(detail["person"], "carol", "{detail}");
    assert_eq!(detail["via"], format!("slack-group:{ONCALL}"), "{detail}");
    assert!(
        app.slack.calls().iter().any(|c| c.method == "usergroups.users.list" && c.ok),
        "the membership came from usergroups.users.list"
    );

    // Removed from the group: after one refresh, her click is refused and changes nothing.
    let id = app.submit(STEVE, "web2 22 30m").await;
    app.slack.set_usergroup(ONCALL, &[BOB]);
    assert!(!refreshed(&app).await);
    app.click(CAROL, &id, true).await;
    assert_eq!(app.request(&id).await.status, Status::Pending);
    let refusals = app.refusals().await;
    assert_eq!(refusals.last().unwrap()["rule"], "not_an_approver", "{refusals:?}");
    assert!(app.store.decisions(&id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_membership_too_old_to_rely_on_fails_closed() {
    let app = spawn_group_app().await;
    app.slack.set_usergroup(ONCALL, &[CAROL]);
    assert!(refreshed(&app).await);
    let id = app.submit(STEVE, "web2 22 30m").await;
    app.card_ts(&id).await;
    // Slack stops answering: the table keeps carol, but after 3 refresh intervals it is too old.
    app.slack.set_down(true);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let table = app.store.group_table(CAROL).await.unwrap();
        let at = table.refreshed_at.get(ONCALL).copied().unwrap_or_default();
        if jitbot::store::now_ms() - at > 3_500 {
            break;
        }
        assert!(Instant::now() < deadline, "the refresh kept succeeding with Slack down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.click(CAROL, &id, true).await;
    assert_eq!(app.request(&id).await.status, Status::Pending);
    let refusals = app.refusals().await;
    let last = refusals.last().unwrap();
    assert_eq!(last["rule"], "group_membership_unconfirmed", "{refusals:?}");
    let message = last["message"].as_str().unwrap();
    assert!(message.contains("I can't confirm your group membership right now"), "{message}");
    // Slack back: after one refresh her click counts again.
    app.slack.set_down(false);
    assert!(refreshed(&app).await);
    app.click(CAROL, &id, true).await;
    app.wait_status(&id, Status::Active, Duration::from_secs(10)).await;
}
}
