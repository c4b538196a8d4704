//! Audit events to a SIEM: every event reaches each sink once by `seq`, in order, signed and with
//! its chain hashes, through outages, restarts, throttling and size limits. Asserted on what the
//! fakes (`jitbot_sim::siem`) received and verified.

use crate::helpers::*;
use jitbot::domain::Status;
use jitbot_sim::siem::{LogsIngestionSim, MONITOR_SCOPE, WebhookSim};
use std::time::{Duration, Instant};

const DCR: &str = "dcr-0123456789abcdef0123456789abcdef";
const STREAM: &str = "Custom-JitbotAudit";

/// `[siem]` with the webhook sink `soc` (its secret is [`SIEM_SECRET`]).
fn webhook_section(url: &str) -> String {
    format!("[siem]\npoll_interval = \"200ms\"\n[siem.webhook.soc]\nurl = \"{url}\"\n")
}

/// `[siem]` with the Logs Ingestion sink `sentinel`.
fn ingestion_section(endpoint: &str) -> String {
    format!(
        "[siem]\npoll_interval = \"200ms\"\n[siem.logs_ingestion.sentinel]\nendpoint = \"{endpoint}\"\ndcr_immutable_id = \"{DCR}\"\nstream = \"{STREAM}\"\n"
    )
}

/// A two-second grant from request to close: about eight audit events.
async fn a_grant_comes_and_goes(app: &TestApp) -> String {
    let id = app.submit(STEVE, "web1 22 2s from 203.0.113.9 siem").await;
    assert_eq!(app.click(ALICE, &id, true).await, 200);
    app.wait_status(&id, Status::Revoked, Duration::from_secs(15))
        .await;
    id
}

/// Waits until the webhook has received event `seq`.
async fn webhook_reaches(hook: &WebhookSim, seq: i64, timeout: Duration) {
    let what = format!(
        "the webhook to receive event {seq}; it has {:?}",
        hook.seqs()
    );
    eventually(timeout, &what, || hook.seqs().contains(&seq).then_some(())).await;
}

/// The hashes the database holds, by seq (1-based index).
async fn stored_hashes(app: &TestApp) -> Vec<String> {
    let events = app.store.audit_events(0, None).await.unwrap();
    events.into_iter().map(|e| e.hash).collect()
}

/// The webhook sink's (failures, last_seq) from its cursor row.
async fn cursor(app: &TestApp) -> Option<(i64, i64)> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT failures, last_seq FROM siem_cursor WHERE sink = 'webhook:soc'")
            .fetch_optional(&app.sql)
            .await
            .unwrap();
    row
}

/// Each seq once, in order, from 1 to `head`, ignoring repeats of a seq already seen.
fn first_sightings(seqs: &[i64]) -> Vec<i64> {
    let mut out = Vec::new();
    for &s in seqs {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

backends! {
#[tokio::test]
async fn the_webhook_gets_every_event_in_order_signed_with_a_verifiable_chain() {
    let hook = WebhookSim::start(SIEM_SECRET).await.unwrap();
    let app = spawn_app_with(&webhook_section(&hook.url)).await;
    let id = a_grant_comes_and_goes(&app).await;
    let (head, head_hash) = app.store.audit_head().await.unwrap();
    webhook_reaches(&hook, head, Duration::from_secs(10)).await;

    let seqs = hook.seqs();
    assert_eq!(seqs[..head as usize], (1..=head).collect::<Vec<_>>(), "in order, each once");
    assert!(hook.chain_problems().is_empty(), "{:?}", hook.chain_problems());
    assert_eq!(hook.bad_signatures(), 0);
    let events = hook.events();
    assert_eq!(events[head as usize - 1]["hash"], head_hash.as_str());
    let stored = stored_hashes(&app).await;
    for (i, e) in events.iter().take(head as usize).enumerate() {
        assert_eq!(e["hash"], stored[i].as_str(), "event {}", i + 1);
    }
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| e["request_id"] == id.as_str())
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for kind in ["requested", "approved", "applied", "revoked"] {
        assert!(kinds.contains(&kind), "{kind} missing in {kinds:?}");
    }
    let approved = events.iter().find(|e| e["kind"] == "approved").unwrap();
    assert_eq!(approved["actor"], "alice");
    assert!(approved["time"].as_str().unwrap().ends_with('Z'));
    // Latency from append to arrival.
    let mut lat: Vec<i64> = hook
        .batches()
        .iter()
        .flat_map(|b| b.events.iter().map(move |e| b.received_ms - e["at"].as_i64().unwrap()))
        .collect();
    lat.sort();
    println!(
        "METRIC siem_webhook_latency_ms p50={} max={} events={}",
        lat[lat.len() / 2],
        lat[lat.len() - 1],
        lat.len()
    );
    assert!(lat[lat.len() - 1] < 3_000, "an event took {} ms", lat[lat.len() - 1]);

    // The receiver really checks: a badly signed batch is refused and recorded as such.
    let resp = reqwest::Client::new()
        .post(&hook.url)
        .header("X-Jitbot-Timestamp", chrono::Utc::now().timestamp().to_string())
        .header("X-Jitbot-Signature", format!("v1={}", "00".repeat(32)))
        .body(r#"{"sink":"soc","events":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(hook.bad_signatures(), 1);
}

#[tokio::test]
async fn an_outage_of_the_sink_loses_nothing_and_keeps_the_order() {
    let hook = WebhookSim::start(SIEM_SECRET).await.unwrap();
    hook.set_outage(true);
    let app = spawn_app_with(&webhook_section(&hook.url)).await;
    a_grant_comes_and_goes(&app).await;
    // jitbot kept trying, and nothing got through.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cursor(&app).await.is_none_or(|(failures, _)| failures < 2) {
        assert!(Instant::now() < deadline, "no failed tries recorded: {:?}", cursor(&app).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cursor(&app).await.unwrap().1, 0, "the cursor did not move");
    assert!(hook.seqs().is_empty());

    hook.set_outage(false);
    let healed = Instant::now();
    let (head, _) = app.store.audit_head().await.unwrap();
    webhook_reaches(&hook, head, Duration::from_secs(70)).await;
    println!("METRIC siem_outage_catch_up_ms={}", healed.elapsed().as_millis());
    let seqs = hook.seqs();
    assert_eq!(seqs[..head as usize], (1..=head).collect::<Vec<_>>());
    assert!(hook.chain_problems().is_empty(), "{:?}", hook.chain_problems());
    // The receiver has the events before the cursor's move commits: wait for the commit.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (failures, last_seq) = loop {
        let (failures, last_seq) = cursor(&app).await.unwrap();
        if (failures == 0 && last_seq >= head) || Instant::now() > deadline {
            break (failures, last_seq);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failures, 0, "a delivery resets the failures");
    assert!(last_seq >= head);

    // Delivery goes on where it stopped: the next event follows without a gap.
    app.submit(STEVE, "web1 22 5m from 203.0.113.9 after the outage").await;
    let (head, _) = app.store.audit_head().await.unwrap();
    webhook_reaches(&hook, head, Duration::from_secs(10)).await;
    assert_eq!(hook.seqs()[..head as usize], (1..=head).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_restart_mid_delivery_leaves_no_gap_and_repeats_only_the_same_seqs() {
    let hook = WebhookSim::start(SIEM_SECRET).await.unwrap();
    let mut app = spawn_app_with(&webhook_section(&hook.url)).await;
    let (head, _) = app.store.audit_head().await.unwrap();
    webhook_reaches(&hook, head, Duration::from_secs(10)).await;

    // The next batch arrives, but its answer never does: jitbot dies waiting for it.
    hook.set_stall(true);
    let before = hook.batches().len();
    let id = app.submit(STEVE, "web1 22 2s from 203.0.113.9 siem").await;
    eventually(Duration::from_secs(10), "a stalled batch", || {
        (hook.batches().len() > before).then_some(())
    })
    .await;
    app.crash().await;
    hook.release();
    app.start().await;

    assert_eq!(app.click(ALICE, &id, true).await, 200);
    app.wait_status(&id, Status::Revoked, Duration::from_secs(15))
        .await;
    let (head, _) = app.store.audit_head().await.unwrap();
    webhook_reaches(&hook, head, Duration::from_secs(10)).await;
    let seqs = hook.seqs();
    assert_eq!(first_sightings(&seqs)[..head as usize], (1..=head).collect::<Vec<_>>());
    assert!(seqs.len() > first_sightings(&seqs).len(), "the stalled batch came again: {seqs:?}");
    // Repeats carry the same content (the receiver checks every repeat against its hash).
    assert!(hook.chain_problems().is_empty(), "{:?}", hook.chain_problems());
}

#[tokio::test]
async fn logs_ingestion_gets_every_record_splitting_batches_and_waiting_out_429() {
    // Events pile up during an outage; the call limit is far below what piled up, so jitbot
    // splits the batch when the service is back.
    let sim = LogsIngestionSim::start(DCR, STREAM, 2_000).await.unwrap();
    sim.set_outage(true);
    let app = spawn_app_with(&ingestion_section(&sim.endpoint)).await;
    sim.trust(app.entra.clone());
    a_grant_comes_and_goes(&app).await;
    sim.set_outage(false);
    let (head, _) = app.store.audit_head().await.unwrap();
    let reached = |head: i64| {
        let records = sim.records();
        records.iter().any(|r| r["Seq"] == head).then_some(())
    };
    eventually(Duration::from_secs(40), "the records", || reached(head)).await;

    // Throttled once: the next call waits for Retry-After.
    sim.throttle_next(1, 2);
    app.submit(STEVE, "web1 22 5m from 203.0.113.9 after the throttle")
        .await;
    let (head, _) = app.store.audit_head().await.unwrap();
    eventually(Duration::from_secs(15), "the records after a 429", || reached(head)).await;

    let records = sim.records();
    let seqs: Vec<i64> = records.iter().map(|r| r["Seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs[..head as usize], (1..=head).collect::<Vec<_>>(), "in order, each once");
    let stored = stored_hashes(&app).await;
    for r in records.iter().take(head as usize) {
        let seq = r["Seq"].as_i64().unwrap() as usize;
        assert_eq!(r["Hash"], stored[seq - 1].as_str());
        assert!(r["TimeGenerated"].as_str().unwrap().ends_with('Z'));
        assert_eq!(r["Truncated"], false);
    }
    let calls = sim.calls();
    assert!(calls.iter().any(|c| c.status == 413), "no batch was too large");
    assert!(calls.iter().filter(|c| c.status == 204).all(|c| c.bytes <= 2_000));
    let throttled = calls.iter().position(|c| c.status == 429).expect("a 429");
    let next = &calls[throttled + 1];
    let waited = next.at - calls[throttled].at;
    println!("METRIC siem_retry_after_wait_ms={}", waited.as_millis());
    assert!(waited >= Duration::from_millis(1_900), "retried after {waited:?}");
    assert!(app.entra.scopes().iter().any(|s| s == MONITOR_SCOPE), "{:?}", app.entra.scopes());
}
}

/// `jitbot check` refuses a `[siem]` section that cannot work, naming each problem; a good one
/// passes. No database involved, so not in `backends!`.
#[test]
fn jitbot_check_refuses_a_bad_siem_section() {
    let dir = tempfile::tempdir().unwrap();
    let run = |siem: &str| {
        let text = config(
            "https://management.azure.com",
            "https://slack.com/api/",
            "sqlite://unused.db",
            siem,
        );
        let path = dir.path().join("jitbot.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitbot"))
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let good = format!(
        "{}{}",
        webhook_section("https://siem.example.com/jitbot"),
        ingestion_section("https://dce.westeurope-1.ingest.monitor.azure.com")
            .replace("[siem]\npoll_interval = \"200ms\"\n", "")
    );
    let (code, text) = run(&good);
    assert_eq!(code, Some(0), "{text}");

    let (code, text) = run(
        "[siem]\nbatch_size = 0\n[siem.webhook.soc]\nurl = \"http://siem.example.com/jitbot\"\n\
         [siem.logs_ingestion.sentinel]\nendpoint = \"https://dce.ingest.monitor.azure.com\"\n\
         dcr_immutable_id = \"my-rule\"\nstream = \"Custom-JitbotAudit\"\n",
    );
    assert_ne!(code, Some(0), "{text}");
    for needle in [
        "siem.batch_size: 0 must be between 1 and 10000",
        "siem.webhook.soc.url: `http://siem.example.com` must be an https URL",
        "siem.logs_ingestion.sentinel.dcr_immutable_id: `my-rule` is not a DCR immutable id",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let (code, text) =
        run("[siem.webhook.soc]\nurl = \"https://siem.example.com/x\"\nsecret = \"inline\"\n");
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("unknown field `secret`"), "{text}");
}
