//! Load benchmark: the real server and worker on loopback, against the ARM, Entra and Slack
//! emulators, driven by signed Slack requests.
//!
//! ```text
//! cargo bench --bench load                      # defaults below
//! JITBOT_BENCH_REQUESTS=1000 JITBOT_BENCH_CONCURRENCY=32 cargo bench --bench load
//! JITBOT_BENCH_DATABASE_URL=postgres://… cargo bench --bench load
//! ```
//!
//! Phases, each measured from the client's side of the wire or from the database's timestamps:
//! 1. **submit**: `REQUESTS` `/jit` requests, `CONCURRENCY` at a time → ack latency, throughput.
//! 2. **approve**: every card approved, `CONCURRENCY` at a time → click ack latency, and
//!    approve-to-open time (click sent → `activated_at`), which includes the ARM emulator's
//!    asynchronous operation (`JITBOT_BENCH_ARM_OP_MS`, default 150) and one write at a time per NSG.
//! 3. **expire**: every grant closes on its own → revocation lateness (`closed_at − expires_at`).
//!
//! Grants are spread over `NSGS` NSGs (one target each). The numbers are this machine's; compare
//! runs on one machine only.

use jitbot::app::{Application, Overrides};
use jitbot::azure::AzureOverrides;
use jitbot::config::{ConfigFile, Settings};
use jitbot::domain::Status;
use jitbot_sim::arm::{ArmSim, ArmSimOptions};
use jitbot_sim::entra::EntraSim;
use jitbot_sim::slack::SlackSim;
use jitbot_sim::slack_user;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const SIGNING_SECRET: &str = "bench-signing-secret";
const BOT_TOKEN: &str = "xoxb-bench";
const APPROVALS: &str = "C0APPROVALS";
const APPROVER: &str = "U0ALICE";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn nsg_id(i: u64) -> String {
    format!(
        "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/bench/providers/Microsoft.Network/networkSecurityGroups/nsg{i}"
    )
}

fn config(arm: &str, slack: &str, db: &str, requesters: u64, nsgs: u64) -> String {
    let mut c = format!(
        r#"
[database]
url = "{db}"
[worker]
concurrency = 16
[azure]
backend = "arm"
arm_endpoint = "{arm}"
credential = "client_secret"
tenant_id = "tenant-1"
client_id = "client-1"
[slack]
api_base_url = "{slack}"
audit_channel = "C0AUDIT"
# A load test, not an abuse test: one person makes many requests.
[limits]
max_pending_per_person = 100000
max_requests_per_hour = 100000
[people.alice]
slack = "{APPROVER}"
"#
    );
    for i in 0..requesters {
        let _ = writeln!(c, "[people.p{i}]\nslack = \"U0P{i}\"");
    }
    for i in 0..nsgs {
        let _ = write!(
            c,
            r#"
[targets.web{i}]
nsg = "{nsg}"
destination = "10.0.{i}.4"
ports = [22]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
requesters = ["*"]
approvers = ["alice"]
approval_channel.slack = "{APPROVALS}"
priority_range = [100, 999]
pending_ttl = "10m"
"#,
            nsg = nsg_id(i)
        );
    }
    c
}

fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// p50 / p95 / p99 / max of a sample, in milliseconds.
fn summary(name: &str, mut ms: Vec<f64>) -> String {
    if ms.is_empty() {
        return format!("{name:<28} (no samples)");
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "{name:<28} n={:<5} p50={:>8.1} ms  p95={:>8.1} ms  p99={:>8.1} ms  max={:>8.1} ms",
        ms.len(),
        q(0.50),
        q(0.95),
        q(0.99),
        ms[ms.len() - 1]
    )
}

/// Runs `jobs` futures `concurrency` at a time and returns their outputs in order.
async fn bounded<T, F>(concurrency: usize, jobs: Vec<F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    use futures::StreamExt;
    futures::stream::iter(jobs)
        .buffered(concurrency)
        .collect()
        .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jitbot::install_crypto();
    let requests = env_num("JITBOT_BENCH_REQUESTS", 300);
    let concurrency = env_num("JITBOT_BENCH_CONCURRENCY", 16) as usize;
    let nsgs = env_num("JITBOT_BENCH_NSGS", 8).max(1);
    let arm_op = Duration::from_millis(env_num("JITBOT_BENCH_ARM_OP_MS", 150));
    let grant_secs = env_num("JITBOT_BENCH_GRANT_SECS", 20);

    let dir = tempfile::tempdir()?;
    let db = std::env::var("JITBOT_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let slack = SlackSim::start(BOT_TOKEN).await?;
    let arm = ArmSim::start(ArmSimOptions {
        operation_delay: arm_op,
        ..ArmSimOptions::default()
    })
    .await?;
    for i in 0..nsgs {
        arm.add_nsg(&nsg_id(i), "westeurope");
    }
    let entra = EntraSim::start("tenant-1", "client-1", "s3cret", 3599).await?;
    let factory = entra.credential_factory("s3cret");
    let file: ConfigFile =
        toml::from_str(&config(&arm.base_url, &slack.base_url, &db, requests, nsgs))?;
    let settings = Settings::resolve(file, |name| {
        Ok(match name {
            "SLACK_SIGNING_SECRET" => Some(jitbot::config::Secret::new(SIGNING_SECRET)),
            "SLACK_BOT_TOKEN" => Some(jitbot::config::Secret::new(BOT_TOKEN)),
            _ => None,
        })
    })
    .map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    let app = Application::build(
        settings,
        Overrides {
            azure: AzureOverrides {
                credential_factory: Some(factory),
                ..Default::default()
            },
            listener: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?),
        },
    )
    .await?;
    let base = format!("http://{}", app.addr);
    let http = reqwest::Client::new();
    println!(
        "jitbot load benchmark: {requests} requests, concurrency {concurrency}, {nsgs} NSGs, ARM operation {arm_op:?}, grants {grant_secs}s, database {}",
        db.split(':').next().unwrap_or("?")
    );

    // 1. Submit.
    let started = Instant::now();
    let submits = (0..requests).map(|i| {
        let http = http.clone();
        let url = format!("{base}/slack/commands");
        async move {
            let text = format!(
                "web{} 22 {grant_secs}s from 203.0.113.{} bench",
                i % nsgs,
                i % 250 + 1
            );
            let body = slack_user::slash_command(&format!("U0P{i}"), "p", "C0OPS", &text);
            let t = Instant::now();
            let resp = slack_user::send(&http, &url, SIGNING_SECRET, &body).await?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let json: serde_json::Value = resp.json().await?;
            let reply = json["text"].as_str().unwrap_or_default();
            let id = reply
                .split('`')
                .find(|w| w.starts_with("req_"))
                .ok_or_else(|| anyhow::anyhow!("request refused: {reply}"))?
                .to_string();
            anyhow::Ok((id, ms))
        }
    });
    let submitted = bounded(concurrency, submits.collect())
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let submit_secs = started.elapsed().as_secs_f64();
    let ids: Vec<String> = submitted.iter().map(|(id, _)| id.clone()).collect();
    println!(
        "{}  ({:.0} requests/s)",
        summary("submit ack", submitted.iter().map(|(_, ms)| *ms).collect()),
        requests as f64 / submit_secs
    );

    // Every card must be posted before it can be clicked.
    let deadline = Instant::now() + Duration::from_secs(120);
    let cards: HashMap<String, String> = loop {
        let msgs = slack.messages(APPROVALS);
        let found: HashMap<String, String> = ids
            .iter()
            .filter_map(|id| {
                msgs.iter()
                    .find(|m| m.text.contains(id.as_str()))
                    .map(|m| (id.clone(), m.ts.clone()))
            })
            .collect();
        if found.len() == ids.len() {
            break found;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} cards were posted",
            found.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // 2. Approve.
    let clicks = ids.iter().map(|id| {
        let http = http.clone();
        let url = format!("{base}/slack/interactions");
        let ts = cards[id].clone();
        let id = id.clone();
        async move {
            let body =
                slack_user::block_action(APPROVER, "alice", APPROVALS, &ts, "jit_approve", &id);
            let sent = jitbot::store::now_ms();
            let t = Instant::now();
            let resp = slack_user::send(&http, &url, SIGNING_SECRET, &body).await?;
            anyhow::ensure!(resp.status() == 200, "click answered {}", resp.status());
            anyhow::Ok((id, sent, t.elapsed().as_secs_f64() * 1e3))
        }
    });
    let clicked = bounded(concurrency, clicks.collect())
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "{}",
        summary("click ack", clicked.iter().map(|(_, _, ms)| *ms).collect())
    );

    // 3. Wait until everything has opened and closed again.
    let deadline = Instant::now() + Duration::from_secs(grant_secs + 300);
    loop {
        let open = app
            .store
            .requests_in(&[
                Status::Approved,
                Status::Applying,
                Status::Active,
                Status::Revoking,
            ])
            .await?;
        if open.is_empty() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} grants still open",
            open.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deletes: HashMap<String, i64> = arm
        .operations()
        .into_iter()
        .filter(|o| matches!(o.kind, jitbot_sim::arm::OperationKind::Delete))
        .map(|o| (o.rule.clone(), unix_ms(o.started)))
        .collect();
    if std::env::var("JITBOT_BENCH_TRACE").is_ok() {
        // One NSG's write timeline: what the lane did, for finding where time goes.
        let t0 = arm
            .operations()
            .first()
            .map(|o| unix_ms(o.started))
            .unwrap_or(0);
        for o in arm.operations().iter().filter(|o| o.nsg_id == nsg_id(0)) {
            println!(
                "trace {:?} {} started={} finished={:?}",
                o.kind,
                o.rule,
                unix_ms(o.started) - t0,
                o.finished.map(|f| unix_ms(f) - t0)
            );
        }
    }
    let mut open_ms = Vec::new();
    let mut late_ms = Vec::new();
    let mut delete_sent_ms = Vec::new();
    let mut not_revoked = 0;
    for (id, sent, _) in &clicked {
        let r = app
            .store
            .request(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{id} vanished"))?;
        if r.status != Status::Revoked {
            not_revoked += 1;
            continue;
        }
        if let Some(at) = r.activated_at {
            open_ms.push((at - sent) as f64);
        }
        if let (Some(exp), Some(closed)) = (r.expires_at, r.closed_at) {
            late_ms.push((closed - exp) as f64);
            if let Some(sent) = deletes.get(&r.rule_name) {
                delete_sent_ms.push((sent - exp) as f64);
            }
        }
    }
    println!("{}", summary("approve → rule open", open_ms));
    println!("{}", summary("expiry → DELETE accepted", delete_sent_ms));
    println!("{}", summary("revocation lateness", late_ms));
    let leaked: usize = (0..nsgs)
        .map(|i| {
            arm.rules(&nsg_id(i))
                .iter()
                .filter(|r| r.name.starts_with("jitbot-"))
                .count()
        })
        .sum();
    let requests = arm.requests();
    let count = |f: &dyn Fn(&jitbot_sim::arm::RecordedRequest) -> bool| {
        requests.iter().filter(|r| f(r)).count()
    };
    println!(
        "grants not revoked: {not_revoked}; jitbot rules left in the NSGs: {leaked}; ARM writes: {}, reads: {}, throttled (429): {}",
        count(&|r| r.method == "PUT" || r.method == "DELETE"),
        count(&|r| r.method == "GET"),
        count(&|r| r.status == 429),
    );
    app.stop().await;
    anyhow::ensure!(not_revoked == 0 && leaked == 0, "grants were left open");
    Ok(())
}
