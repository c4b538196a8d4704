//! Several replicas on one PostgreSQL database, sharing the same fakes: every effect happens once.
//! Jobs are claimed with `FOR UPDATE SKIP LOCKED` and leases; a replica that dies loses its lease
//! and another finishes the job.

use crate::helpers::*;
use jitbot::domain::Status;
use jitbot_sim::arm::{Fault, On};
use sqlx::Row;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Successful (2xx) writes of `method` to the request's rule.
/// How often the request's rule was created (`PUT`) and removed (`DELETE`) in the NSG, whether
/// by a rule-level write or inside a coalesced NSG-level PUT (which replaces the rule list):
/// replayed from everything ARM accepted, in order.
fn ok_writes(app: &TestApp, id: &str, method: &str) -> usize {
    let rule = format!("jitbot-{id}");
    let (mut present, mut created, mut removed) = (false, 0, 0);
    for r in app.arm.requests() {
        if !(200..300).contains(&r.status) {
            continue;
        }
        let now = if r.path.ends_with(&rule) {
            match r.method.as_str() {
                "PUT" => true,
                "DELETE" => false,
                _ => continue,
            }
        } else if r.method == "PUT" && r.path.ends_with(NSG.rsplit('/').next().unwrap()) {
            let rules = r
                .body
                .as_ref()
                .and_then(|b| b["properties"]["securityRules"].as_array().cloned());
            rules
                .unwrap_or_default()
                .iter()
                .any(|x| x["name"] == rule.as_str())
        } else {
            continue;
        };
        match (present, now) {
            (false, true) => created += 1,
            (true, false) => removed += 1,
            _ => {}
        }
        present = now;
    }
    if method == "PUT" { created } else { removed }
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

/// Waits until no job is due or running (future revocations and expiries may stay queued).
async fn wait_for_quiet_queue(app: &TestApp, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let busy: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE state = 'running' OR (state = 'queued' AND run_at <= $1)",
        )
        .bind(jitbot::store::now_ms())
        .fetch_one(&app.sql)
        .await
        .unwrap()
        .get("n");
        if busy == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{busy} jobs still due or running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct JobRecord {
    kind: String,
    state: String,
    attempts: i64,
    owner: Option<String>,
}

async fn jobs(app: &TestApp) -> Vec<JobRecord> {
    sqlx::query("SELECT kind, state, attempts, lease_owner FROM jobs ORDER BY id")
        .fetch_all(&app.sql)
        .await
        .unwrap()
        .iter()
        .map(|r| JobRecord {
            kind: r.get("kind"),
            state: r.get("state"),
            attempts: r.get("attempts"),
            owner: r.get("lease_owner"),
        })
        .collect()
}

/// Every chat job that ran made exactly one successful `chat.postMessage`: none ran twice.
async fn assert_each_chat_message_posted_once(app: &TestApp) {
    let done_posts = jobs(app)
        .await
        .iter()
        .filter(|j| j.state == "done" && (j.kind == "chat.post" || j.kind == "chat.card"))
        .count();
    let posted = app
        .slack
        .calls()
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.ok)
        .count();
    assert_eq!(
        posted, done_posts,
        "Slack received {posted} messages for {done_posts} chat jobs"
    );
    let dms = app.dms(STEVE);
    let distinct: HashSet<_> = dms.iter().collect();
    assert_eq!(
        distinct.len(),
        dms.len(),
        "a direct message came twice: {dms:#?}"
    );
}

postgres_tests! {
#[tokio::test]
async fn requests_and_racing_clicks_over_two_replicas_take_effect_once() {
    // web1's 2 s approval TTL is too short for a loaded machine; web2 waits a minute.
    let a = spawn_app_with(&format!(
        r#"
[targets.web2]
nsg = "{NSG}"
destination = "10.0.1.5"
ports = [22]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
requesters = ["steve"]
approvers = ["group:secops"]
approval_channel.slack = "{APPROVALS}"
priority_range = [400, 499]
pending_ttl = "1m"
"#
    ))
    .await;
    let b = a.start_replica().await;
    let replicas = [&a, &b];
    // Requests arrive at either replica (a load balancer); distinct sources keep texts distinct.
    let mut ids = Vec::new();
    for i in 0..4 {
        let text = format!("web2 22 2s from 203.0.113.{}", 10 + i);
        ids.push(replicas[i % 2].submit(STEVE, &text).await);
    }
    // db1 needs two approvers: their clicks race on different replicas.
    let two_man = b.submit(STEVE, "db1 5432 2s").await;
    for id in &ids {
        a.card_ts(id).await;
    }
    a.card_ts(&two_man).await;
    // Both approvers click every single-approval card at the same moment, on different replicas:
    // one click wins, the other is told it is already decided.
    for id in &ids {
        let (x, y) = tokio::join!(a.click(ALICE, id, true), b.click(BOB, id, true));
        assert_eq!((x.as_u16(), y.as_u16()), (200, 200));
    }
    let (x, y) = tokio::join!(b.click(ALICE, &two_man, true), a.click(BOB, &two_man, true));
    assert_eq!((x.as_u16(), y.as_u16()), (200, 200));

    let mut all = ids.clone();
    all.push(two_man.clone());
    for id in &all {
        let r = a.wait_status(id, Status::Revoked, Duration::from_secs(20)).await;
        let late = r.closed_at.unwrap() - r.expires_at.unwrap();
        println!("METRIC replicas_revocation_lateness_ms={late}");
        assert!(late < 3_000, "{id} closed {late} ms late");
        let kinds = a.audit_kinds(id).await;
        assert_eq!(count(&kinds, "approved"), 1, "{id}: {kinds:?}");
        assert_eq!(count(&kinds, "applied"), 1, "{id}: {kinds:?}");
        assert_eq!(count(&kinds, "revoked"), 1, "{id}: {kinds:?}");
        assert_eq!(ok_writes(&a, id, "PUT"), 1, "{id}: {:?}", a.writes(id));
        assert_eq!(ok_writes(&a, id, "DELETE"), 1, "{id}: {:?}", a.writes(id));
        assert!(a.rule(id).is_none());
        let cards = a
            .slack
            .messages(APPROVALS)
            .into_iter()
            .filter(|m| m.text.contains(id.as_str()))
            .count();
        assert_eq!(cards, 1, "{id}: one approval card");
    }
    for id in &ids {
        assert_eq!(a.store.decisions(id).await.unwrap().len(), 1, "{id}: the losing click decides nothing");
    }
    let decisions = a.store.decisions(&two_man).await.unwrap();
    assert_eq!(decisions.len(), 2, "both db1 approvals recorded: {decisions:?}");
    wait_for_quiet_queue(&a, Duration::from_secs(10)).await;
    assert_each_chat_message_posted_once(&a).await;
    a.assert_chain_intact().await;
}

#[tokio::test]
async fn a_replica_that_dies_holding_an_apply_loses_it_to_the_other() {
    let mut a = spawn_app().await;
    // The next two PUTs are processed but their answers held past the client's 1 s timeout, so
    // replica A is still inside the apply (and holds its lease) when it dies.
    for _ in 0..2 {
        a.arm
            .inject(Fault::Delay(Duration::from_secs(5)).on(On::put()));
    }
    let id = a.submit(STEVE, "web1 22 3s").await;
    a.click(ALICE, &id, true).await;
    a.wait_status(&id, Status::Applying, Duration::from_secs(5)).await;
    // Let the chat jobs of the approval finish so only the apply is in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let js = jobs(&a).await;
        let others_busy = js
            .iter()
            .any(|j| j.kind != "apply" && (j.state == "running" || (j.state == "queued" && j.kind.starts_with("chat"))));
        let apply_running = js.iter().any(|j| j.kind == "apply" && j.state == "running");
        if apply_running && !others_busy {
            break;
        }
        assert!(Instant::now() < deadline, "the apply never ran alone");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = a.start_replica().await;
    let crashed_at = jitbot::store::now_ms();
    a.crash().await;
    let active = b.wait_status(&id, Status::Active, Duration::from_secs(15)).await;
    let takeover = active.activated_at.unwrap() - crashed_at;
    println!("METRIC replica_takeover_after_crash_ms={takeover}");
    assert!(takeover >= 1_000, "B waited for A's lease to lapse ({takeover} ms)");
    let ours: Vec<_> = b.arm.rules(NSG).into_iter().filter(|r| r.name.contains(&id)).collect();
    assert_eq!(ours.len(), 1, "exactly one rule");
    // B may PUT the same rule again (an idempotent update, 200); only one PUT ever created it.
    let created = b.writes(&id).iter().filter(|w| *w == "PUT 201").count();
    assert_eq!(created, 1, "{:?}", b.writes(&id));
    let closed = b.wait_status(&id, Status::Revoked, Duration::from_secs(10)).await;
    let late = closed.closed_at.unwrap() - closed.expires_at.unwrap();
    println!("METRIC replica_takeover_revocation_lateness_ms={late}");
    assert!(late < 2_000, "closed {late} ms late");
    assert!(b.rule(&id).is_none(), "closed");
    assert_eq!(ok_writes(&b, &id, "DELETE"), 1, "{:?}", b.writes(&id));
    let kinds = b.audit_kinds(&id).await;
    assert_eq!(count(&kinds, "applied"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "revoked"), 1, "{kinds:?}");
    let apply = jobs(&b).await.into_iter().find(|j| j.kind == "apply").unwrap();
    assert_eq!(apply.state, "done");
    assert_eq!(apply.attempts, 2, "claimed by A, then by B after the lease lapsed");
    wait_for_quiet_queue(&b, Duration::from_secs(10)).await;
    let open_notices = b.dms(STEVE).iter().filter(|t| t.contains("is open")).count();
    assert_eq!(open_notices, 1, "{:#?}", b.dms(STEVE));
    assert_each_chat_message_posted_once(&b).await;
    b.assert_chain_intact().await;
}

#[tokio::test]
async fn two_replicas_claiming_many_jobs_never_run_one_twice() {
    let a = spawn_app_with(&format!(
        r#"
[targets.app1]
nsg = "{NSG}"
destination = "10.0.3.6"
ports = [22, 443]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
default_source = "203.0.113.7"
requesters = ["steve"]
approvers = ["group:secops"]
approval_channel.slack = "{APPROVALS}"
priority_range = [300, 399]
auto_approve = {{ requesters = ["steve"], max_duration = "1h" }}
"#
    ))
    .await;
    let b = a.start_replica().await;
    // Twelve auto-approved grants submitted at once, half through each replica: apply, revoke
    // and chat jobs pile up and both workers claim from the same queue.
    let submits = (0..12).map(|i| {
        let r = if i % 2 == 0 { &a } else { &b };
        let text = format!("app1 22 2s from 203.0.113.{}", 20 + i);
        async move { r.submit(STEVE, &text).await }
    });
    let ids = futures::future::join_all(submits).await;
    for id in &ids {
        a.wait_status(id, Status::Revoked, Duration::from_secs(30)).await;
    }
    wait_for_quiet_queue(&a, Duration::from_secs(10)).await;
    for id in &ids {
        assert_eq!(ok_writes(&a, id, "PUT"), 1, "{id}: {:?}", a.writes(id));
        assert_eq!(ok_writes(&a, id, "DELETE"), 1, "{id}: {:?}", a.writes(id));
        let kinds = a.audit_kinds(id).await;
        assert_eq!(count(&kinds, "applied"), 1, "{id}: {kinds:?}");
        assert_eq!(count(&kinds, "revoked"), 1, "{id}: {kinds:?}");
    }
    // The jobs the grants made (periodic jobs other parts add may legitimately run again).
    let js: Vec<_> = jobs(&a)
        .await
        .into_iter()
        .filter(|j| ["apply", "revoke", "expire"].contains(&j.kind.as_str()) || j.kind.starts_with("chat."))
        .collect();
    let twice: Vec<_> = js.iter().filter(|j| j.attempts > 1).map(|j| &j.kind).collect();
    assert!(twice.is_empty(), "jobs claimed more than once: {twice:?}");
    let mut by_owner: HashMap<&str, usize> = HashMap::new();
    for j in js.iter().filter(|j| j.state == "done") {
        *by_owner.entry(j.owner.as_deref().unwrap_or("?")).or_default() += 1;
    }
    println!("METRIC replicas_jobs_per_replica={:?}", by_owner.values().collect::<Vec<_>>());
    assert_eq!(by_owner.len(), 2, "both replicas ran jobs: {by_owner:?}");
    assert_each_chat_message_posted_once(&a).await;
    a.assert_chain_intact().await;
}

#[tokio::test]
async fn a_job_enqueued_elsewhere_wakes_an_idle_replica_at_once() {
    let a = spawn_app().await;
    let b = a.start_replica().await;
    a.card_ts(&a.submit(STEVE, "db1 5432 1h").await).await;
    // Both workers now sleep (nothing due for seconds). The test's own store has no worker: a job
    // it enqueues reaches the replicas only through PostgreSQL's notification.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let message = jitbot::chat::Message {
        title: "Note".into(),
        text: "enqueued by another process".into(),
        fields: vec![],
        buttons: vec![],
        footer: None,
        tone: jitbot::chat::Tone::Info,
    };
    let mut tx = b.store.begin().await.unwrap();
    jitbot::job::Job::ChatPost {
        platform: jitbot::domain::Platform::Slack,
        channel: AUDIT.into(),
        request_id: None,
        message,
    }
    .enqueue(&mut tx, jitbot::store::now_ms())
    .await
    .unwrap();
    let sent = Instant::now();
    tx.commit().await.unwrap();
    b.wait_until("the note is posted", Duration::from_secs(10), |t| {
        t.slack
            .messages(AUDIT)
            .iter()
            .any(|m| m.text.contains("enqueued by another process"))
    })
    .await;
    let after = sent.elapsed();
    println!("METRIC job_started_by_other_replica_ms={}", after.as_millis());
    assert!(after < Duration::from_secs(1), "picked up after {after:?}");
}
}
