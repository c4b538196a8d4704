//! Target conditions end to end: a reason matching a pattern, more approvals for RDP, and the
//! hours a target may be requested in — refused with what to do, shown on the card, audited.

use crate::helpers::*;
use jitbot::domain::Status;
use std::time::Duration;

fn targets() -> String {
    // Two hours that exclude now, in UTC.
    let now = chrono::Utc::now();
    let from = (now + chrono::Duration::hours(1)).format("%H:00");
    let to = (now + chrono::Duration::hours(2)).format("%H:00");
    format!(
        r#"
[targets.ops]
nsg = "{NSG}"
destination = "10.0.3.4"
ports = [22, 3389]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
default_source = "203.0.113.7"
requesters = ["steve"]
approvers = ["group:secops"]
approval_channel.slack = "{APPROVALS}"
priority_range = [300, 399]
reason_pattern = '^INC-\d+'
port_approvals = {{ "3389" = 2 }}
break_glass = true
break_glass_max = "15m"

[targets.later]
nsg = "{NSG}"
destination = "10.0.3.5"
ports = [22]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
default_source = "203.0.113.7"
requesters = ["steve"]
approvers = ["group:secops"]
approval_channel.slack = "{APPROVALS}"
priority_range = [400, 499]
allowed_hours = "{from}-{to}"
time_zone = "UTC"
"#
    )
}

backends! {
#[tokio::test]
async fn conditions_refuse_with_what_to_do_and_show_on_the_card() {
    let app = spawn_app_with(&targets()).await;
    let reply = app.slash(STEVE, "ops 22 1h").await;
    assert!(reply.contains(r"needs a reason matching `^INC-\d+`"), "{reply}");
    let reply = app.slash(STEVE, "ops 22 1h hotfix").await;
    assert!(reply.contains("must match") && reply.contains("`hotfix` does not"), "{reply}");
    let reply = app.slash(STEVE, "later 22 1h").await;
    assert!(reply.contains("may be requested") && reply.contains("UTC; it is"), "{reply}");
    let rules: Vec<String> = app
        .events_of("refused")
        .await
        .iter()
        .map(|e| e.detail["rule"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rules, ["reason_required", "reason_pattern", "outside_allowed_hours"]);

    // RDP needs two approvers.
    let id = app.submit(STEVE, "ops 3389 1h INC-42 disk full").await;
    let row = app.request(&id).await;
    assert_eq!(row.approvals_required, 2);
    app.wait_until("the card", Duration::from_secs(5), |a| {
        let card = a.card_text(&id);
        card.contains("port 3389 needs 2 approvals") && card.contains(r"reason matching `^INC-\d+`")
    })
    .await;
    let requested = &app.events_of("requested").await[0];
    assert_eq!(requested.detail["approvals_required"], 2);
    assert_eq!(requested.detail["conditions"][1], "port 3389 needs 2 approvals");
    app.click(ALICE, &id, true).await;
    assert_eq!(app.request(&id).await.status, Status::Pending, "one of two");
    app.click(BOB, &id, true).await;
    app.wait_status(&id, Status::Active, Duration::from_secs(5)).await;
    // SSH alone needs the target's one.
    let ssh = app.submit(STEVE, "ops 22 1h INC-43").await;
    assert_eq!(app.request(&ssh).await.approvals_required, 1);
    let targets = app.slash(STEVE, "targets").await;
    assert!(targets.contains("later") && targets.contains("requests ") && targets.contains("UTC"), "{targets}");
}

#[tokio::test]
async fn break_glass_opens_without_approval_only_where_allowed_and_alerts_every_approver() {
    let app = spawn_app_with(&targets()).await;
    let refused = [
        ("break-glass web1 22 10m INC-1", "does not allow break-glass"),
        ("break-glass ops 22 30m INC-1", "lasts at most 15m"),
        ("break-glass ops 22 10m", "needs a reason"),
    ];
    for (text, why) in refused {
        let reply = app.slash(STEVE, text).await;
        assert!(reply.contains(why), "{text}: {reply}");
    }
    assert!(app.events_of("requested").await.is_empty());
    let reply = app.slash(STEVE, "break-glass ops 22 10m INC-7 database down").await;
    assert!(reply.contains("without approval"), "{reply}");
    let id = request_id_in(&reply);
    app.wait_status(&id, Status::Active, Duration::from_secs(5)).await;
    assert!(app.rule(&id).is_some());
    let audited = app.events_of("break_glass").await;
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].actor.as_deref(), Some("steve"));
    assert_eq!(audited[0].detail["reason"], "INC-7 database down");
    for approver in [ALICE, BOB] {
        app.wait_until("every approver alerted", Duration::from_secs(5), |a| {
            a.dms(approver).iter().any(|t| t.contains("BREAK-GLASS") && t.contains(&id))
        })
        .await;
    }
    app.wait_until("the audit channel alerted", Duration::from_secs(5), |a| {
        a.audit_feed().iter().any(|t| t.contains("WITHOUT APPROVAL"))
    })
    .await;
}

#[tokio::test]
async fn undecided_requests_nudge_their_approvers_then_escalate() {
    let esc = format!(
        r#"
[targets.esc]
nsg = "{NSG}"
destination = "10.0.3.6"
ports = [22]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
default_source = "203.0.113.7"
requesters = ["steve"]
approvers = ["alice"]
approval_channel.slack = "{APPROVALS}"
priority_range = [500, 599]
remind_approvers_after = "1s"
escalate_after = "3s"
escalation_approvers = ["bob"]
"#
    );
    let app = spawn_app_with(&esc).await;
    let id = app.submit(STEVE, "esc 22 1h").await;
    app.wait_until("alice nudged", Duration::from_secs(5), |a| {
        a.dms(ALICE).iter().any(|t| t.contains("Waiting for your decision") && t.contains(&id))
    })
    .await;
    assert!(app.dms(BOB).iter().all(|t| !t.contains(&id)), "bob is not an approver yet");
    // Before the escalation bob may not decide.
    app.click(BOB, &id, true).await;
    assert_eq!(app.request(&id).await.status, Status::Pending);
    assert_eq!(app.events_of("refused").await[0].detail["rule"], "not_an_approver");
    // After it, bob has the card and decides.
    app.wait_until("bob gets the card", Duration::from_secs(6), |a| {
        a.dm_buttons(BOB, &id).is_some_and(|(_, b)| b.iter().any(|x| x.0 == "jit_approve"))
    })
    .await;
    assert_eq!(app.events_of("escalated").await[0].detail["to"][0], "bob");
    let (ts, _) = app.dm_buttons(BOB, &id).unwrap();
    assert_eq!(app.press(BOB, BOB, &ts, "jit_approve", &id).await, 200);
    app.wait_status(&id, Status::Active, Duration::from_secs(5)).await;
}
}
