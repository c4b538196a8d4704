//! Discord end to end: signed interactions to `/discord/interactions`, the real server, and the
//! Discord REST emulator. Assertions are on what the emulators received and what the DB holds.

use crate::helpers::*;
use jitbot::domain::Status;
use jitbot_sim::discord::DiscordFault;
use jitbot_sim::discord_user::{self, TEST_SEED};
use std::time::{Duration, Instant};

backends! {
#[tokio::test]
async fn discord_ping_gets_pong() {
    let app = spawn_discord_app().await;
    let (status, json) = app.send(&discord_user::ping()).await;
    assert_eq!(status, 200);
    assert_eq!(json, serde_json::json!({"type": 1}));
}

#[tokio::test]
async fn discord_two_second_grant_lifecycle() {
    let app = spawn_discord_app().await;
    let sent = Instant::now();
    let reply = app
        .command(
            D_STEVE,
            &[],
            "request",
            vec![
                discord_user::opt("target", "web1"),
                discord_user::opt("ports", "22"),
                discord_user::opt("duration", "2s"),
                discord_user::opt("source", "203.0.113.9"),
                discord_user::opt("reason", "deploy hotfix"),
            ],
        )
        .await;
    let ack = sent.elapsed();
    assert!(ack < Duration::from_secs(3), "ack took {ack:?}");
    println!("METRIC discord_ack_latency_ms={}", ack.as_millis());
    assert!(reply.contains("waiting for approval"), "{reply}");
    let id = reply
        .split('`')
        .find(|w| w.starts_with("req_"))
        .unwrap()
        .to_string();

    // The card: an embed with everything an approver needs, green Approve and red Deny.
    let card = app.card(&id).await;
    let text = card.text();
    for needle in [
        &format!("<@{D_STEVE}>"),
        "web1",
        "22",
        "203.0.113.9/32",
        "2s",
        "deploy hotfix",
        &id,
    ] {
        assert!(text.contains(needle), "card lacks {needle}: {text}");
    }
    assert_eq!(
        card.buttons(),
        vec![
            ("Approve".to_string(), 3),
            ("Deny".to_string(), 4),
            ("Deny with reason".to_string(), 4)
        ]
    );
    assert_eq!(
        card.custom_ids(),
        vec![
            format!("jit:approve:{id}:0"),
            format!("jit:deny:{id}:0"),
            format!("jit:deny_reason:{id}:0")
        ]
    );

    let (status, json) = app.click(D_ALICE, &[], &id, true).await;
    assert_eq!(status, 200);
    assert_eq!(json, serde_json::json!({"type": 6}), "deferred update");
    let active = app
        .wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;
    let rule = app.rule(&id).expect("rule is in the NSG");
    assert_eq!(
        rule.properties.source_address_prefix.as_deref(),
        Some("203.0.113.9/32")
    );
    // The clock started when the rule could first be open: when its PUT was about to be sent.
    let started = active.apply_started_at.unwrap();
    assert_eq!(active.expires_at.unwrap() - started, 2000);
    assert!((started..started + 2000).contains(&active.activated_at.unwrap()));

    // Closed on time.
    app.wait_status(&id, Status::Revoked, Duration::from_secs(6))
        .await;
    assert!(app.rule(&id).is_none(), "rule deleted");
    let closed = app.request(&id).await;
    let late = closed.closed_at.unwrap() - closed.expires_at.unwrap();
    println!("METRIC discord_close_lateness_ms={late}");
    assert!(late < 2000, "closed {late} ms late");

    // The card now says who decided and when, without buttons.
    app.wait_until("card edited to closed", Duration::from_secs(3), |a| {
        a.discord
            .messages(D_APPROVALS)
            .iter()
            .any(|m| m.text().contains(&id) && m.text().contains("Closed at"))
    })
    .await;
    let card = app.card(&id).await;
    assert!(card.components.is_empty(), "buttons removed: {card:?}");
    assert!(card.edits >= 1);
    assert!(
        card.text()
            .contains(&format!("Approved by: <@{D_ALICE}> at")),
        "{}",
        card.text()
    );
    // One card only, in the approval channel.
    assert_eq!(
        app.discord
            .messages(D_APPROVALS)
            .iter()
            .filter(|m| m.text().contains(&id))
            .count(),
        1
    );

    // Steve was told at every step, by DM.
    app.wait_until("steve told it closed", Duration::from_secs(3), |a| {
        a.dms(D_STEVE).iter().any(|t| t.contains("Access closed"))
    })
    .await;
    let dms = app.dms(D_STEVE).join("\n---\n");
    for step in ["Request approved", "Access open", "Access closed"] {
        assert!(dms.contains(step), "no {step:?} DM: {dms}");
    }
    // The audit channel was fed.
    let feed: Vec<String> = app
        .discord
        .messages(D_AUDIT)
        .iter()
        .map(|m| m.text())
        .collect();
    for step in ["Access requested", "Access open", "Access closed"] {
        assert!(
            feed.iter().any(|t| t.contains(step) && t.contains(&id)),
            "audit feed lacks {step}: {feed:?}"
        );
    }
    // Every REST call carried the bot token; nothing was posted twice.
    assert!(app.discord.calls().iter().all(|c| c.auth_ok));
    let kinds = app.audit_kinds(&id).await;
    assert_eq!(
        kinds,
        ["requested", "approved", "applied", "revoked"],
        "{kinds:?}"
    );
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn discord_deny_updates_the_card_and_tells_the_requester() {
    let app = spawn_discord_app().await;
    let id = app.submit(D_STEVE, "web1", "22", "1h").await;
    let (status, json) = app.click(D_BOB, &[], &id, false).await;
    assert_eq!((status.as_u16(), json["type"].as_u64()), (200, Some(6)));
    app.wait_status(&id, Status::Denied, Duration::from_secs(2))
        .await;
    app.wait_until("card shows the denial", Duration::from_secs(3), |a| {
        a.discord.messages(D_APPROVALS).iter().any(|m| {
            m.text().contains(&format!("Denied by: <@{D_BOB}> at")) && m.components.is_empty()
        })
    })
    .await;
    app.wait_until("steve told", Duration::from_secs(3), |a| {
        a.dms(D_STEVE).iter().any(|t| t.contains("Request denied"))
    })
    .await;
    assert!(app.rule(&id).is_none());
    assert_eq!(app.audit_kinds(&id).await, ["requested", "denied"]);
}

#[tokio::test]
async fn discord_self_approval_is_refused_privately() {
    let app = spawn_discord_app().await;
    let id = app.submit(D_ALICE, "web1", "22", "1h").await;
    let (status, json) = app.click(D_ALICE, &[], &id, true).await;
    assert_eq!(status, 200);
    assert_eq!(json["type"], 4);
    assert_eq!(json["data"]["flags"], 64, "ephemeral");
    let text = embed_text(&json["data"]);
    assert!(text.contains("your own request"), "{text}");
    assert_eq!(app.request(&id).await.status, Status::Pending);
    assert!(app.store.decisions(&id).await.unwrap().is_empty());
    let refusals = app.refusals().await;
    assert!(
        refusals.iter().any(|r| r["rule"] == "self_approval"),
        "{refusals:?}"
    );
    // The card still has its buttons.
    assert_eq!(app.card(&id).await.custom_ids().len(), 3);
}

#[tokio::test]
async fn discord_role_holders_approve_and_others_cannot() {
    let app = spawn_discord_app().await;
    let id = app.submit(D_STEVE, "web1", "22", "1h").await;
    // carol is in no approver group; without the role she is refused.
    let (_, json) = app.click(D_CAROL, &[D_OTHER_ROLE], &id, true).await;
    assert!(
        embed_text(&json["data"]).contains("not an approver"),
        "{json}"
    );
    // mallory, and a stranger not in the policy, neither.
    let (_, json) = app.click(D_MALLORY, &[], &id, true).await;
    assert!(
        embed_text(&json["data"]).contains("not an approver"),
        "{json}"
    );
    let (_, json) = app.click("899999999999999999", &[], &id, true).await;
    assert!(
        embed_text(&json["data"]).contains("not in jitbot's policy"),
        "{json}"
    );
    assert_eq!(app.request(&id).await.status, Status::Pending);
    let refusals = app.refusals().await;
    assert_eq!(
        refusals
            .iter()
            .filter(|r| r["rule"] == "not_an_approver" || r["rule"] == "unknown_person")
            .count(),
        3,
        "{refusals:?}"
    );
    // With the role from member.roles, she approves.
    let (_, json) = app.click(D_CAROL, &[D_APPROVER_ROLE], &id, true).await;
    assert_eq!(json["type"], 6, "{json}");
    app.wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;
    let decisions = app.store.decisions(&id).await.unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].approver, "carol");
    // The decision's audit event names the chat identity, the person and the role that let her.
    let approved = app.events_of("approved").await;
    let detail = &approved.last().expect("an approved event").detail;
    assert_eq!(detail["chat"], format!("discord:{D_CAROL}"), "{detail}");
    assert_eq!(detail["person"], "carol", "{detail}");
    assert_eq!(
        detail["via"],
        format!("discord-role:{D_APPROVER_ROLE}"),
        "{detail}"
    );
}

#[tokio::test]
async fn discord_two_clicks_at_once_make_one_transition() {
    let app = spawn_discord_app().await;
    let id = app.submit(D_STEVE, "web1", "22", "1h").await;
    app.card(&id).await;
    let (a, b) = tokio::join!(
        app.click(D_ALICE, &[], &id, true),
        app.click(D_BOB, &[], &id, false)
    );
    assert_eq!((a.0.as_u16(), b.0.as_u16()), (200, 200));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kinds = app.audit_kinds(&id).await;
    let decided = kinds
        .iter()
        .filter(|k| *k == "approved" || *k == "denied")
        .count();
    assert_eq!(decided, 1, "{kinds:?}");
    assert_eq!(app.store.decisions(&id).await.unwrap().len(), 1);
    // The loser was told privately that nothing changed.
    let loser = if a.1["type"] == 6 { &b.1 } else { &a.1 };
    assert_eq!(loser["type"], 4, "{loser}");
}

#[tokio::test]
async fn discord_autocomplete_offers_only_requestable_targets() {
    let app = spawn_discord_app().await;
    let choices = |json: serde_json::Value| -> Vec<String> {
        assert_eq!(json["type"], 8, "{json}");
        json["data"]["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["value"].as_str().unwrap().to_string())
            .collect()
    };
    let ask = |user: &'static str, typed: &'static str| {
        let body = discord_user::autocomplete(user, &[], typed);
        let app = &app;
        async move { choices(app.send(&body).await.1) }
    };
    assert_eq!(ask(D_ALICE, "").await, ["db1", "web1"]);
    assert_eq!(ask(D_ALICE, "W").await, ["web1"]);
    assert_eq!(ask(D_STEVE, "").await, ["app1", "web1"]);
    assert!(ask(D_MALLORY, "").await.is_empty());
    assert!(ask("899999999999999999", "").await.is_empty());
    // Autocomplete writes nothing.
    assert_eq!(app.row_counts().await.0, 0);
}

#[tokio::test]
async fn discord_bad_signatures_and_bodies_change_nothing() {
    let app = spawn_discord_app().await;
    let url = app.interactions_url();
    let body = discord_user::request(D_STEVE, &[], "web1", "22", "1h");
    let before = app.row_counts().await;
    let now = chrono::Utc::now().timestamp();

    // Signed by another key.
    let other_seed = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
    let r = discord_user::send_at(&app.http, &url, other_seed, &body, now)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Right key, body altered after signing.
    let ts = now.to_string();
    let sig = discord_user::sign(TEST_SEED, &ts, body.as_bytes());
    let r = app
        .http
        .post(&url)
        .header("x-signature-ed25519", &sig)
        .header("x-signature-timestamp", &ts)
        .body(body.replace("\"22\"", "\"3389\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Missing headers.
    let r = app.http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // A replay from ten minutes ago.
    let r = discord_user::send_at(&app.http, &url, TEST_SEED, &body, now - 600)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Correctly signed but not an interaction.
    let (status, _) = app.send("{\"type\": 2, \"data\": ").await;
    assert_eq!(status, 400);
    let (status, _) = app.send("{\"type\": 2}").await;
    assert_eq!(status, 400);

    // Nothing but refusals: no request, no job, no chat call.
    assert_eq!(app.row_counts().await, before);
    assert_eq!(before, (0, 0));
    assert!(app.discord.calls().is_empty());
    let refusals = app.refusals().await;
    let rules: Vec<&str> = refusals
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        [
            "bad_signature",
            "bad_signature",
            "bad_signature",
            "bad_signature",
            "malformed_request",
            "malformed_request"
        ]
    );
    assert!(
        refusals
            .iter()
            .all(|r| r["context"]["path"] == "/discord/interactions")
    );
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn discord_rate_limits_and_outages_delay_messages_but_deliver_each_once() {
    let app = spawn_discord_app().await;
    // The first calls (card, feed) hit a 429, then a lost response, then Discord goes down.
    app.discord.inject(DiscordFault::RateLimited {
        retry_after: 1.2,
        global: false,
    });
    app.discord.inject(DiscordFault::LostResponse);
    app.discord.inject(DiscordFault::ServerError);
    let id = app.submit(D_STEVE, "web1", "22", "1h").await;
    let card = app.card(&id).await;
    let n_429 = app
        .discord
        .calls()
        .iter()
        .filter(|c| c.status == 429)
        .count();
    assert_eq!(n_429, 1);

    app.discord.set_down(true);
    let (_, json) = app.click(D_ALICE, &[], &id, true).await;
    assert_eq!(json["type"], 6);
    app.wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;
    app.wait_until(
        "the worker tried during the outage",
        Duration::from_secs(15),
        |a| a.discord.calls().iter().any(|c| c.status == 503),
    )
    .await;
    let during = app.discord.calls().len();
    app.discord.set_down(false);
    let recovered = Instant::now();
    app.wait_until("steve told it is open", Duration::from_secs(70), |a| {
        a.dms(D_STEVE).iter().any(|t| t.contains("Access open"))
    })
    .await;
    println!(
        "METRIC discord_outage_recovery_ms={}",
        recovered.elapsed().as_millis()
    );
    app.wait_until("card edited", Duration::from_secs(10), |a| {
        a.discord
            .messages(D_APPROVALS)
            .iter()
            .any(|m| m.id == card.id && m.text().contains("Open until"))
    })
    .await;
    // The card may show the open grant before the feed's own notice is out: wait for both.
    app.wait_until("the feed says it is open", Duration::from_secs(10), |a| {
        a.discord
            .messages(D_AUDIT)
            .iter()
            .any(|m| m.text().starts_with("Access open"))
    })
    .await;
    assert!(app.discord.calls().len() > during);
    // Exactly once: one card, one of each notice.
    let cards = app
        .discord
        .messages(D_APPROVALS)
        .iter()
        .filter(|m| m.text().contains(&id))
        .count();
    assert_eq!(cards, 1);
    let feed: Vec<String> = app
        .discord
        .messages(D_AUDIT)
        .iter()
        .map(|m| m.text())
        .collect();
    for title in ["Access requested", "Request approved", "Access open"] {
        let n = feed.iter().filter(|t| t.starts_with(title)).count();
        assert_eq!(n, 1, "{title} in the feed {n} times: {feed:?}");
    }
    let dms = app.dms(D_STEVE);
    for title in ["Request approved", "Access open"] {
        let n = dms.iter().filter(|t| t.starts_with(title)).count();
        assert_eq!(n, 1, "{title} DM'd {n} times: {dms:?}");
    }
}

#[tokio::test]
async fn one_policy_serves_slack_and_discord() {
    let app = spawn_both_app().await;
    // Steve asks on Slack; the card goes to both platforms.
    let body = jitbot_sim::slack_user::slash_command(STEVE, "steve", "C0OPS", "web1 22 1h");
    let resp = jitbot_sim::slack_user::send(
        &app.http,
        &format!("{}/slack/commands", app.base),
        SECRET,
        &body,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.unwrap();
    let reply = json["text"].as_str().unwrap_or_default().to_string();
    let id = reply
        .split('`')
        .find(|w| w.starts_with("req_"))
        .unwrap_or_else(|| panic!("{json}"))
        .to_string();
    app.card(&id).await;
    app.wait_until("Slack card posted", Duration::from_secs(3), |a| {
        a.slack
            .messages(APPROVALS)
            .iter()
            .any(|m| m.text.contains(&id))
    })
    .await;
    // Alice approves on Discord: the same person in the policy.
    let (_, json) = app.click(D_ALICE, &[], &id, true).await;
    assert_eq!(json["type"], 6, "{json}");
    app.wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;
    let decisions = app.store.decisions(&id).await.unwrap();
    assert_eq!(decisions[0].approver, "alice");
    // Steve hears about it on Slack, where he asked.
    app.wait_until("steve told on Slack", Duration::from_secs(3), |a| {
        a.slack
            .messages(STEVE)
            .iter()
            .any(|m| m.text.contains("Access open"))
    })
    .await;
    assert!(app.dms(D_STEVE).is_empty(), "not on Discord");
    // Both cards show the decision, both audit channels the events.
    app.wait_until("both cards updated", Duration::from_secs(3), |a| {
        a.discord
            .messages(D_APPROVALS)
            .iter()
            .any(|m| m.text().contains("Open until") && m.components.is_empty())
            && a.slack
                .messages(APPROVALS)
                .iter()
                .any(|m| m.text.contains(&id) && !m.blocks.to_string().contains("jit_approve"))
    })
    .await;
    assert!(
        app.discord
            .messages(D_AUDIT)
            .iter()
            .any(|m| m.text().contains("Access open"))
    );
    assert!(
        app.slack
            .messages(AUDIT)
            .iter()
            .any(|m| m.text.contains("Access open"))
    );
    // Alice cannot approve her own request from Slack either (one person, two ids).
    let id2 = app.submit(D_ALICE, "web1", "22", "1h").await;
    let action = jitbot_sim::slack_user::block_action(
        ALICE,
        "alice",
        APPROVALS,
        "1700000100.000100",
        "jit_approve",
        &id2,
    );
    let r = jitbot_sim::slack_user::send(
        &app.http,
        &format!("{}/slack/interactions", app.base),
        SECRET,
        &action,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.request(&id2).await.status, Status::Pending);
    let refusals = app.refusals().await;
    assert!(refusals.iter().any(|r| r["rule"] == "self_approval"));
}

#[tokio::test]
async fn discord_help_and_bad_input_answer_privately_and_change_nothing() {
    let app = spawn_discord_app().await;
    let help = app.command(D_STEVE, &[], "help", vec![]).await;
    assert!(help.contains("/jit request target:"), "{help}");
    let bad = app
        .command(
            D_STEVE,
            &[],
            "request",
            vec![
                discord_user::opt("target", "web1"),
                discord_user::opt("ports", "sshh"),
                discord_user::opt("duration", "1h"),
            ],
        )
        .await;
    assert!(bad.contains("sshh"), "{bad}");
    assert!(
        bad.contains("/jit request target:"),
        "usage in Discord syntax: {bad}"
    );
    let refused = app
        .command(
            D_STEVE,
            &[],
            "request",
            vec![
                discord_user::opt("target", "db1"),
                discord_user::opt("ports", "5432"),
                discord_user::opt("duration", "1h"),
            ],
        )
        .await;
    assert!(refused.contains("Refused"), "{refused}");
    assert_eq!(app.row_counts().await, (0, 0));
    let targets = app.command(D_STEVE, &[], "targets", vec![]).await;
    assert!(
        targets.contains("web1") && !targets.contains("db1"),
        "{targets}"
    );
    let list = app.command(D_STEVE, &[], "list", vec![]).await;
    assert!(!list.is_empty());
}
}

// SQLite only: it holds SQLite's single write lock to make a command slow.

#[tokio::test]
async fn discord_slow_commands_are_deferred_then_answered() {
    let app = spawn_discord_app().await;
    // Hold SQLite's write lock (an uncommitted append) so the command cannot finish within
    // Discord's 3 s; dropping the transaction rolls it back.
    let mut tx = app.store.begin().await.unwrap();
    tx.audit(
        jitbot::store::AuditKind::Started,
        None,
        Some("test"),
        serde_json::json!({}),
        false,
    )
    .await
    .unwrap();
    let sent = Instant::now();
    let (status, json) = app
        .send(&discord_user::request(D_STEVE, &[], "web1", "22", "1h"))
        .await;
    let ack = sent.elapsed();
    assert_eq!(status, 200);
    assert_eq!(json, serde_json::json!({"type": 5, "data": {"flags": 64}}));
    assert!(ack < Duration::from_millis(2900), "deferred after {ack:?}");
    println!("METRIC discord_defer_latency_ms={}", ack.as_millis());
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(tx);
    // sqlx rolls a dropped transaction back on the connection's next use.
    assert!(app.store.ping().await);
    app.wait_until("the deferred answer", Duration::from_secs(10), |a| {
        !a.discord.followups().is_empty()
    })
    .await;
    let followups = app.discord.followups();
    assert_eq!(followups.len(), 1);
    let (token, body) = &followups[0];
    assert!(token.starts_with("aW50ZXJhY3Rpb24"), "{token}");
    let text = embed_text(body);
    assert!(text.contains("waiting for approval"), "{text}");
    let id = text
        .split('`')
        .find(|w| w.starts_with("req_"))
        .unwrap()
        .to_string();
    // The request was recorded once, and its card posted.
    assert_eq!(app.request(&id).await.status, Status::Pending);
    assert_eq!(app.row_counts().await.0, 1);
    app.card(&id).await;
}

backends! {

#[tokio::test]
async fn discord_status_extend_and_revoke_work_like_slack() {
    let app = spawn_discord_app().await;
    let id = app.submit(D_STEVE, "web1", "22", "10m").await;
    app.click(D_ALICE, &[], &id, true).await;
    app.wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;
    let opt = discord_user::opt;
    let status = app
        .command(D_STEVE, &[], "status", vec![opt("id", &id)])
        .await;
    assert!(
        status.contains(&id) && status.contains("Target: web1"),
        "{status}"
    );

    // An extension is a new approval round on the same card, decided with its buttons.
    let ext = app
        .command(
            D_STEVE,
            &[],
            "extend",
            vec![opt("id", &id), opt("duration", "5m")],
        )
        .await;
    assert!(ext.contains("extend"), "{ext}");
    app.wait_until("round-1 buttons on the card", Duration::from_secs(3), |a| {
        a.discord
            .messages(D_APPROVALS)
            .iter()
            .any(|m| m.custom_ids().contains(&format!("jit:approve:{id}:1")))
    })
    .await;
    let before = app.request(&id).await.expires_at.unwrap();
    let (_, json) = app.click(D_BOB, &[], &id, true).await;
    assert_eq!(json["type"], 6, "{json}");
    app.wait_until("extended", Duration::from_secs(3), |_| true)
        .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while app.request(&id).await.expires_at.unwrap() == before {
        assert!(Instant::now() < deadline, "not extended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.request(&id).await.expires_at.unwrap() - before,
        5 * 60 * 1000
    );

    // Revoke closes it now.
    let revoked = app
        .command(D_STEVE, &[], "revoke", vec![opt("id", &id)])
        .await;
    assert!(!revoked.is_empty());
    app.wait_status(&id, Status::Revoked, Duration::from_secs(5))
        .await;
    assert!(app.rule(&id).is_none());
    let list = app.command(D_STEVE, &[], "list", vec![]).await;
    assert!(!list.contains(&id) || list.contains("revoked"), "{list}");
    let kinds = app.audit_kinds(&id).await;
    assert!(kinds.contains(&"extended".to_string()), "{kinds:?}");
}

#[tokio::test]
async fn discord_two_approvals_from_different_people_are_needed() {
    let app = spawn_discord_app().await;
    let id = app.submit(D_STEVE, "app1", "443", "1h").await;
    let (_, json) = app.click(D_ALICE, &[], &id, true).await;
    assert_eq!(json["type"], 6, "{json}");
    // Clicking again does not count twice.
    let (_, json) = app.click(D_ALICE, &[], &id, true).await;
    assert!(
        embed_text(&json["data"]).contains("already decided"),
        "{json}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.request(&id).await.status, Status::Pending);
    app.wait_until("card shows 1/2", Duration::from_secs(3), |a| {
        a.discord
            .messages(D_APPROVALS)
            .iter()
            .any(|m| m.text().contains(&id) && m.text().contains("(1/2)"))
    })
    .await;
    // The second approval comes from a role holder.
    let (_, json) = app.click(D_CAROL, &[D_APPROVER_ROLE], &id, true).await;
    assert_eq!(json["type"], 6, "{json}");
    app.wait_status(&id, Status::Active, Duration::from_secs(5))
        .await;
    let approvers: Vec<String> = app
        .store
        .decisions(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.approver)
        .collect();
    assert_eq!(approvers, ["alice", "carol"]);
}
}
