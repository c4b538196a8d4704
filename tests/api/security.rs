use crate::helpers::*;
use jitbot_sim::slack_user;
use std::time::Duration;

async fn requests_count(app: &TestApp) -> i64 {
    app.store
        .status_counts()
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum()
}

backends! {
#[tokio::test]
async fn forged_stale_and_malformed_requests_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let url = format!("{}/slack/commands", app.base);
    let body = slack_user::slash_command(STEVE, "steve", "C0OPS", "web1 22 1h");

    // Signed with the wrong secret.
    let r = slack_user::send(&app.http, &url, "not-the-secret", &body)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A correct signature over a body that was then altered.
    let now = chrono::Utc::now().timestamp();
    let sig = jitbot_sim::slack::sign(SECRET, now, body.as_bytes());
    let r = app
        .http
        .post(&url)
        .header("x-slack-request-timestamp", now.to_string())
        .header("x-slack-signature", sig)
        .body(body.replace("22", "23"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Stale: signed correctly six minutes ago (a replay).
    let r = slack_user::send_at(&app.http, &url, SECRET, &body, now - 360)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // No signature headers at all.
    let r = app.http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Correctly signed, but not a slash command body.
    let r = slack_user::send(&app.http, &url, SECRET, "%%%garbage")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = slack_user::send(
        &app.http,
        &format!("{}/slack/interactions", app.base),
        SECRET,
        "payload=%7Bnot-json",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(requests_count(&app).await, 0, "no request was recorded");
    assert!(app.slack.calls().is_empty(), "nothing was posted to Slack");
    // The reconciler reads the NSGs at start; nothing may have asked ARM for a change.
    assert!(
        app.arm.requests().iter().all(|r| r.method == "GET"),
        "ARM was never asked to change anything"
    );
    let rules: Vec<String> = app
        .refusals()
        .await
        .iter()
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        rules.iter().filter(|r| *r == "bad_signature").count(),
        4,
        "{rules:?}"
    );
    assert_eq!(
        rules.iter().filter(|r| *r == "malformed_request").count(),
        2,
        "{rules:?}"
    );
    app.assert_chain_intact().await;
}

}

slack_transports! {
#[tokio::test]
async fn requests_outside_policy_are_refused_with_the_rule_named() {
    let app = spawn_app().await;
    let cases = [
        (
            "web1 22 1h from 0.0.0.0/0",
            "whole Internet",
            "source_anywhere_refused",
        ),
        (
            "web1 22 1h from *",
            "whole Internet",
            "source_anywhere_refused",
        ),
        (
            "web1 22 1h from 192.0.2.10",
            "outside web1's allowed sources: 203.0.113.0/24, 198.51.100.7/32",
            "source_not_allowed",
        ),
        (
            "web1 23 1h",
            "port 23 is not allowed on web1; allowed: 22, 3389",
            "port_not_allowed",
        ),
        (
            "web1 22 2h",
            "2h is longer than web1 allows; maximum: 1h",
            "duration_over_max",
        ),
        (
            "web9 22 1h",
            "there is no target `web9`; you may request: db1, web1",
            "unknown_target",
        ),
        ("web1 telnet 1h", "not a port", "bad_command"),
    ];
    for (text, expected, rule) in cases {
        let reply = app.slash(STEVE, text).await;
        assert!(reply.contains(expected), "`/jit {text}` answered: {reply}");
        let refusals = app.refusals().await;
        assert_eq!(refusals.last().unwrap()["rule"], rule, "{text}");
    }
    // Not a requester of db1, and not in the policy at all.
    assert!(
        app.slash(ALICE, "db1 5432 1h")
            .await
            .contains("you may not request db1")
    );
    assert!(
        app.slash("U0NOBODY", "web1 22 1h")
            .await
            .contains("not in jitbot's policy")
    );
    assert_eq!(requests_count(&app).await, 0);
    assert!(app.arm.requests().iter().all(|r| r.method == "GET"));
}
}

backends! {
#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
}
