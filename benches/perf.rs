//! Performance benchmark: what users feel, against an ARM emulator configured like real ARM
//! (`ArmSimOptions::like_azure`: every operation takes `JITBOT_PERF_ARM_LATENCY_MS` (2,000),
//! `Retry-After` 3 on PUT and 10 on DELETE, one write at a time per NSG, writes and deletes 200
//! burst refilling 10/s, reads 250/25 s, Microsoft.Network's 1,000 writes per 5 minutes).
//!
//! ```text
//! cargo bench --bench perf                          # everything, a few minutes
//! JITBOT_PERF_ONLY=ack,open,wave,footprint cargo bench --bench perf
//! JITBOT_PERF_WRITES=auto JITBOT_PERF_ONLY=wave cargo bench --bench perf
//! ```
//!
//! 1. **ack**: signed `/jit` commands, then deny clicks, offered open-loop at
//!    `JITBOT_PERF_RATE` (200)/s for `JITBOT_PERF_ACK_SECS` (30) s each: p50/p99/max, errors; then
//!    short steps at higher rates for the highest whose p99 stays under 100 ms.
//! 2. **open**: `JITBOT_PERF_GRANTS` (300) grants over 20 NSGs approved at once: approve → rule live
//!    (the emulator's operation end), and the time until all are live; both `nsg_writes` modes.
//! 3. **wave**: `JITBOT_PERF_WAVE` (1,000) active grants over 50 NSGs due in the same second, while
//!    jitbot runs and overdue when it restarts: rule gone − expiry (or − restart), ARM requests per
//!    grant, 429s; both `nsg_writes` modes.
//! 4. **footprint**: the real binary on SQLite: RSS idle and with 10,000 active grants, start-up
//!    time (until `/readyz`) with 10,000 active grants in the database.
//!
//! Knobs besides those above: `JITBOT_PERF_DATABASE_URL` (a PostgreSQL URL whose user may
//! `CREATE DATABASE`: every phase then gets a fresh database there instead of a SQLite file, and
//! drops it at the end); for the footprint, `JITBOT_PERF_BIN` (another jitbot binary to measure),
//! `JITBOT_PERF_WRAP` (a tool to run it under, e.g. `valgrind --tool=massif`; it is then stopped
//! with SIGTERM so the tool writes its report) and `JITBOT_PERF_FOOTPRINT_WAIT_SECS` (5: how long
//! after `/readyz` the RSS is read).
//!
//! Every phase runs with the shipped `[worker]` defaults unless `JITBOT_PERF_CONCURRENCY` sets
//! `worker.concurrency` (see the README's Performance section). Prints a table, then one JSON
//! line (`PERF_JSON {...}`), also written to `$CARGO_TARGET_DIR/jitbot-perf.json`.

use jitbot::app::{Application, Overrides};
use jitbot::azure::AzureOverrides;
use jitbot::config::{ConfigFile, Settings, WorkerSettings};
use jitbot::domain::{Platform, Status};
use jitbot::job::Job;
use jitbot::store::{GrantRule, NewRequest, Store, now_ms};
use jitbot_sim::arm::{ArmSim, ArmSimOptions, SecurityRule, SecurityRuleProperties};
use jitbot_sim::entra::EntraSim;
use jitbot_sim::slack::SlackSim;
use jitbot_sim::slack_user;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

const SIGNING_SECRET: &str = "bench-signing-secret";
const BOT_TOKEN: &str = "xoxb-bench";
const APPROVALS: &str = "C0APPROVALS";
const APPROVER: &str = "U0ALICE";
const SUB: &str = "11111111-2222-3333-4444-555555555555";
const SOURCE: &str = "203.0.113.7";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wanted(phase: &str) -> bool {
    std::env::var("JITBOT_PERF_ONLY").map_or(true, |only| only.split(',').any(|p| p == phase))
}

/// The `nsg_writes` modes to run (`JITBOT_PERF_WRITES`, default both).
fn modes() -> Vec<&'static str> {
    let only = std::env::var("JITBOT_PERF_WRITES").unwrap_or_else(|_| "auto,per_rule".into());
    ["auto", "per_rule"]
        .into_iter()
        .filter(|m| only.split(',').any(|o| o == *m))
        .collect()
}

fn nsg_id(i: u64) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/bench/providers/Microsoft.Network/networkSecurityGroups/nsg{i}"
    )
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// One phase's knobs.
struct Setup {
    nsgs: u64,
    people: u64,
    writes: &'static str,
    /// `worker.concurrency`; `None` keeps the shipped default.
    concurrency: Option<u64>,
}

/// `JITBOT_PERF_CONCURRENCY`, if set.
fn concurrency_knob() -> Option<u64> {
    std::env::var("JITBOT_PERF_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
}

fn config(arm: &str, slack: &str, db: &str, s: &Setup) -> String {
    let mut c = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[database]
url = "{db}"
{worker}
[azure]
backend = "arm"
arm_endpoint = "{arm}"
credential = "azure_cli"
nsg_writes = "{writes}"
[slack]
api_base_url = "{slack}"
audit_channel = "C0AUDIT"
# A load test, not an abuse test: one person makes many requests.
[limits]
max_pending_per_person = 100000
max_requests_per_hour = 100000
[people.alice]
slack = "{APPROVER}"
"#,
        worker = s
            .concurrency
            .map(|n| format!("[worker]\nconcurrency = {n}"))
            .unwrap_or_default(),
        writes = s.writes,
    );
    for i in 0..s.people {
        let _ = writeln!(c, "[people.p{i}]\nslack = \"U0P{i}\"");
    }
    for i in 0..s.nsgs {
        let _ = write!(
            c,
            r#"
[targets.web{i}]
nsg = "{nsg}"
destination = "10.0.{i}.4"
ports = [22]
max_duration = "8h"
allowed_sources = ["203.0.113.0/24"]
requesters = ["*"]
approvers = ["alice"]
approval_channel.slack = "{APPROVALS}"
priority_range = [100, 999]
pending_ttl = "1h"
"#,
            nsg = nsg_id(i)
        );
    }
    c
}

/// `JITBOT_PERF_DATABASE_URL`: a PostgreSQL server (its user may `CREATE DATABASE`) on which
/// every phase gets a fresh database instead of a SQLite file.
fn postgres_admin_url() -> Option<String> {
    std::env::var("JITBOT_PERF_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Which database the phases run on, for the table and the JSON.
fn database_label() -> &'static str {
    if postgres_admin_url().is_some() {
        "postgres"
    } else {
        "sqlite"
    }
}

/// Creates `jitbot_perf_<random>` on the server and returns its URL and name.
async fn create_postgres_database(admin: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    let name = format!("jitbot_perf_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let mut url = url::Url::parse(admin)?;
    url.set_path(&format!("/{name}"));
    Ok((url.to_string(), name))
}

/// Drops a phase's database (its connections are forced out: the phase is over).
async fn drop_postgres_database(admin: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// The emulators and a database for one phase: a file in `dir`, or a fresh PostgreSQL database.
struct Env {
    arm: ArmSim,
    slack: SlackSim,
    entra: EntraSim,
    dir: tempfile::TempDir,
    /// The fresh PostgreSQL database's URL and name, with `JITBOT_PERF_DATABASE_URL`.
    postgres: Option<(String, String)>,
}

impl Env {
    async fn new(arm_opts: ArmSimOptions, nsgs: u64) -> anyhow::Result<Env> {
        let arm = ArmSim::start(arm_opts).await?;
        for i in 0..nsgs {
            arm.add_nsg(&nsg_id(i), "westeurope");
        }
        let postgres = match postgres_admin_url() {
            Some(admin) => Some(create_postgres_database(&admin).await?),
            None => None,
        };
        Ok(Env {
            arm,
            slack: SlackSim::start(BOT_TOKEN).await?,
            entra: EntraSim::start("tenant-1", "client-1", "s3cret", 3599).await?,
            dir: tempfile::tempdir()?,
            postgres,
        })
    }

    fn db(&self) -> String {
        match &self.postgres {
            Some((url, _)) => url.clone(),
            None => format!("sqlite://{}", self.dir.path().join("bench.db").display()),
        }
    }

    /// Ends the phase: drops its PostgreSQL database (a SQLite file goes with `dir`).
    async fn finish(self) -> anyhow::Result<()> {
        if let (Some(admin), Some((_, name))) = (postgres_admin_url(), &self.postgres) {
            drop_postgres_database(&admin, name).await?;
        }
        Ok(())
    }

    async fn app(&self, s: &Setup) -> anyhow::Result<Application> {
        let text = config(&self.arm.base_url, &self.slack.base_url, &self.db(), s);
        let file: ConfigFile = toml::from_str(&text)?;
        let settings = Settings::resolve(file, |name| {
            Ok(match name {
                "SLACK_SIGNING_SECRET" => Some(jitbot::config::Secret::new(SIGNING_SECRET)),
                "SLACK_BOT_TOKEN" => Some(jitbot::config::Secret::new(BOT_TOKEN)),
                _ => None,
            })
        })
        .map_err(|e| anyhow::anyhow!(e.join("; ")))?;
        Application::build(
            settings,
            Overrides {
                azure: AzureOverrides {
                    credential_factory: Some(self.entra.credential_factory("s3cret")),
                    ..Default::default()
                },
                listener: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?),
            },
        )
        .await
    }
}

/// p50 / p99 / max of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn stats(mut ms: Vec<f64>) -> Stats {
    if ms.is_empty() {
        return Stats::default();
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    Stats {
        n: ms.len(),
        p50: q(0.5),
        p99: q(0.99),
        max: ms[ms.len() - 1],
    }
}

fn stats_json(s: Stats) -> Value {
    json!({"n": s.n, "p50_ms": s.p50.round(), "p99_ms": s.p99.round(), "max_ms": s.max.round()})
}

/// The report: table rows and the JSON object.
#[derive(Default)]
struct Report {
    rows: Vec<String>,
    json: serde_json::Map<String, Value>,
}

impl Report {
    /// Prints and keeps one table row; on PostgreSQL the name says so.
    fn row(&mut self, name: &str, s: Stats, extra: &str) {
        let name = match database_label() {
            "sqlite" => name.to_string(),
            db => format!("{name} [{db}]"),
        };
        let line = format!(
            "| {name:<44} | {:>6} | {:>9.0} | {:>9.0} | {:>9.0} | {extra} |",
            s.n, s.p50, s.p99, s.max
        );
        println!("{line}");
        self.rows.push(line);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Ack latency, open loop.

/// Sends `make(i)` at `rate`/s for `secs` s whatever the answers do; returns latencies and errors.
async fn open_loop<F, Fut>(rate: u64, secs: u64, make: F) -> (Vec<f64>, usize)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let total = (rate * secs) as usize;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(start + period * i as u32).await;
        let fut = make(i);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            fut.await.map(|()| t.elapsed().as_secs_f64() * 1e3)
        }));
    }
    let (mut ms, mut errors) = (Vec::with_capacity(total), 0);
    for t in tasks {
        match t.await {
            Ok(Ok(v)) => ms.push(v),
            _ => errors += 1,
        }
    }
    (ms, errors)
}

fn slash(
    http: &reqwest::Client,
    base: &str,
    i: usize,
    nsgs: u64,
    people: u64,
) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
    let (http, url) = (http.clone(), format!("{base}/slack/commands"));
    let person = i as u64 % people;
    let text = format!(
        "web{} 22 1h from 203.0.113.{} bench",
        i as u64 % nsgs,
        i % 250 + 1
    );
    async move {
        let body = slack_user::slash_command(&format!("U0P{person}"), "p", "C0OPS", &text);
        let resp = slack_user::send(&http, &url, SIGNING_SECRET, &body).await?;
        anyhow::ensure!(resp.status() == 200, "slash answered {}", resp.status());
        let json: Value = resp.json().await?;
        let text = json["text"].as_str().unwrap_or_default();
        anyhow::ensure!(text.contains("req_"), "refused: {text}");
        Ok(())
    }
}

/// Every card posted so far, by request id.
fn cards(slack: &SlackSim) -> HashMap<String, String> {
    slack
        .messages(APPROVALS)
        .into_iter()
        .filter_map(|m| {
            let id = m
                .text
                .split('`')
                .find(|w| w.starts_with("req_"))?
                .to_string();
            Some((id, m.ts))
        })
        .collect()
}

async fn wait_for_cards(
    slack: &SlackSim,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<HashMap<String, String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = cards(slack);
        if found.len() >= n {
            return Ok(found);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {n} cards were posted",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn click(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    ts: &str,
    action: &str,
) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
    let (http, url) = (http.clone(), format!("{base}/slack/interactions"));
    let body = slack_user::block_action(APPROVER, "alice", APPROVALS, ts, action, id);
    async move {
        let resp = slack_user::send(&http, &url, SIGNING_SECRET, &body).await?;
        anyhow::ensure!(resp.status() == 200, "click answered {}", resp.status());
        Ok(())
    }
}

async fn phase_ack(report: &mut Report) -> anyhow::Result<()> {
    let rate = env_num("JITBOT_PERF_RATE", 200);
    let secs = env_num("JITBOT_PERF_ACK_SECS", 30);
    let s = Setup {
        nsgs: 20,
        people: 500,
        writes: "auto",
        concurrency: None,
    };
    let env = Env::new(ArmSimOptions::like_azure(Duration::from_secs(2)), s.nsgs).await?;
    let app = env.app(&s).await?;
    let base = format!("http://{}", app.addr);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;
    let (ms, errors) = open_loop(rate, secs, |i| slash(&http, &base, i, s.nsgs, s.people)).await;
    let slash_stats = stats(ms);
    report.row(
        &format!("ack: /jit at {rate}/s for {secs}s"),
        slash_stats,
        &format!("errors {errors}"),
    );
    report.json.insert(
        "ack_slash".into(),
        json!({"rate": rate, "secs": secs, "errors": errors, "latency": stats_json(slash_stats)}),
    );

    let n = (rate * secs) as usize;
    let posted = wait_for_cards(
        &env.slack,
        n.saturating_sub(errors),
        Duration::from_secs(300),
    )
    .await?;
    let ids: Vec<(String, String)> = posted.into_iter().collect();
    let (ms, errors) = open_loop(rate, secs, |i| {
        let (id, ts) = &ids[i % ids.len()];
        click(&http, &base, id, ts, "jit_deny")
    })
    .await;
    let click_stats = stats(ms);
    report.row(
        &format!("ack: deny click at {rate}/s for {secs}s"),
        click_stats,
        &format!("errors {errors}"),
    );
    report.json.insert(
        "ack_click".into(),
        json!({"rate": rate, "secs": secs, "errors": errors, "latency": stats_json(click_stats)}),
    );

    // The highest offered rate (steps of 5 s) whose /jit p99 stays under 100 ms.
    let mut best = 0;
    for step in [400, 800, 1200, 1600, 2400] {
        let (ms, errors) = open_loop(step, 5, |i| slash(&http, &base, i, s.nsgs, s.people)).await;
        let st = stats(ms);
        report.row(
            &format!("ack: /jit step at {step}/s for 5s"),
            st,
            &format!("errors {errors}"),
        );
        if st.p99 >= 100.0 || errors > 0 {
            break;
        }
        best = step;
    }
    report.json.insert(
        "ack_max_rate_p99_under_100ms".into(),
        json!(best.max(if slash_stats.p99 < 100.0 { rate } else { 0 })),
    );
    app.stop().await;
    env.finish().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Approve → open.

async fn submit_all(
    http: &reqwest::Client,
    base: &str,
    n: u64,
    nsgs: u64,
) -> anyhow::Result<Vec<String>> {
    use futures::StreamExt;
    let results: Vec<anyhow::Result<String>> = futures::stream::iter(0..n)
        .map(|i| {
            let (http, url) = (http.clone(), format!("{base}/slack/commands"));
            async move {
                let text = format!("web{} 22 1h from {SOURCE} bench", i % nsgs);
                let body = slack_user::slash_command(&format!("U0P{i}"), "p", "C0OPS", &text);
                let resp = slack_user::send(&http, &url, SIGNING_SECRET, &body).await?;
                let json: Value = resp.json().await?;
                let reply = json["text"].as_str().unwrap_or_default();
                reply
                    .split('`')
                    .find(|w| w.starts_with("req_"))
                    .map(str::to_string)
                    .ok_or_else(|| anyhow::anyhow!("refused: {reply}"))
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn phase_open(report: &mut Report, writes: &'static str) -> anyhow::Result<()> {
    let n = env_num("JITBOT_PERF_GRANTS", 300);
    let latency = Duration::from_millis(env_num("JITBOT_PERF_ARM_LATENCY_MS", 2000));
    let s = Setup {
        nsgs: 20,
        people: n,
        writes,
        concurrency: concurrency_knob(),
    };
    let env = Env::new(ArmSimOptions::like_azure(latency), s.nsgs).await?;
    let app = env.app(&s).await?;
    let base = format!("http://{}", app.addr);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;
    let ids = submit_all(&http, &base, n, s.nsgs).await?;
    let posted = wait_for_cards(&env.slack, ids.len(), Duration::from_secs(120)).await?;
    let t0 = now_ms();
    let clicks: Vec<_> = ids
        .iter()
        .map(|id| tokio::spawn(click(&http, &base, id, &posted[id], "jit_approve")))
        .collect();
    for c in clicks {
        c.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while !app
        .store
        .requests_in(&[Status::Approved, Status::Applying])
        .await?
        .is_empty()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "grants still opening after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live: HashMap<String, i64> = env
        .arm
        .rule_events()
        .into_iter()
        .filter(|e| e.live)
        .map(|e| (e.rule, unix_ms(e.at)))
        .collect();
    let mut open_ms = Vec::new();
    let mut active = 0;
    for id in &ids {
        let r = app
            .store
            .request(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{id} vanished"))?;
        active += usize::from(r.status == Status::Active);
        if let Some(at) = live.get(&r.rule_name) {
            open_ms.push((at - t0) as f64);
        }
    }
    let st = stats(open_ms);
    let (writes_n, reads_n, throttled) = arm_counts(&env.arm);
    report.row(
        &format!("approve→rule live, {n} grants/20 NSGs, {writes}"),
        st,
        &format!("all live {:.1} s; active {active}/{n}; ARM writes {writes_n}, reads {reads_n}, 429 {throttled}", st.max / 1e3),
    );
    report.json.insert(format!("open_{writes}"), json!({"grants": n, "nsgs": 20, "active": active, "approve_to_live": stats_json(st), "all_live_s": st.max / 1e3, "arm_writes": writes_n, "arm_reads": reads_n, "arm_429": throttled}));
    app.stop().await;
    env.finish().await?;
    Ok(())
}

fn arm_counts(arm: &ArmSim) -> (usize, usize, usize) {
    let reqs = arm.requests();
    let writes = reqs
        .iter()
        .filter(|r| r.method == "PUT" || r.method == "DELETE")
        .count();
    let reads = reqs.iter().filter(|r| r.method == "GET").count();
    let throttled = reqs.iter().filter(|r| r.status == 429).count();
    (writes, reads, throttled)
}

// ---------------------------------------------------------------------------------------------
// 3. Expiry wave.

fn grant_rule(name: &str, i: u64, priority: i32) -> SecurityRule {
    SecurityRule {
        name: name.to_string(),
        id: None,
        etag: None,
        resource_type: None,
        properties: SecurityRuleProperties {
            description: Some(format!("jitbot {name}")),
            protocol: "Tcp".into(),
            source_port_range: Some("*".into()),
            destination_port_range: Some("22".into()),
            source_address_prefix: Some(SOURCE.into()),
            destination_address_prefix: Some(format!("10.0.{i}.4")),
            access: "Allow".into(),
            priority,
            direction: "Inbound".into(),
            ..Default::default()
        },
    }
}

/// `n` active grants over `nsgs` NSGs, all expiring at `expires_at`: rows, revoke jobs and the
/// rules already in ARM, as if they had been opened earlier.
async fn seed(
    store: &Store,
    arm: &ArmSim,
    n: u64,
    nsgs: u64,
    expires_at: i64,
) -> anyhow::Result<Vec<String>> {
    let mut rules = Vec::with_capacity(n as usize);
    let now = now_ms();
    for k in 0..n {
        let i = k % nsgs;
        let id = format!("req_w{k:07}");
        let rule_name = format!("jitbot-{id}");
        let priority = 100 + (k / nsgs) as i32;
        arm.put_existing_rule(&nsg_id(i), grant_rule(&rule_name, i, priority));
        let started = expires_at - 3_600_000;
        let mut tx = store.begin().await?;
        tx.insert_request(&NewRequest {
            id: id.clone(),
            requester: format!("p{k}"),
            platform: Platform::Slack,
            requester_chat_id: format!("U0P{k}"),
            target: format!("web{i}"),
            nsgs: vec![nsg_id(i)],
            ports: "22".into(),
            protocol: "Tcp".into(),
            source: SOURCE.into(),
            destination: format!("10.0.{i}.4"),
            duration_ms: 3_600_000,
            reason: Some("bench".into()),
            status: Status::Approved,
            approvals_required: 1,
            created_at: started.min(now),
            pending_until: started.min(now) + 3_600_000,
            rule_name: rule_name.clone(),
            simulated: false,
        })
        .await?;
        anyhow::ensure!(tx.begin_apply(&id, started).await?, "begin_apply {id}");
        let grant = [GrantRule {
            nsg: nsg_id(i),
            priority: Some(i64::from(priority)),
        }];
        // Activated now, after its rule is in ARM: the reconciler judges only grants activated
        // before its read, as with a grant really opened now.
        anyhow::ensure!(
            tx.activate(&id, &grant, now_ms(), expires_at).await?,
            "activate {id}"
        );
        Job::Revoke {
            request_id: id.clone(),
        }
        .enqueue(&mut tx, expires_at)
        .await?;
        tx.commit().await?;
        rules.push(rule_name);
    }
    Ok(rules)
}

async fn wait_all_closed(store: &Store, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !store
        .requests_in(&[Status::Active, Status::Revoking])
        .await?
        .is_empty()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "grants still open after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn phase_wave(
    report: &mut Report,
    writes: &'static str,
    restart: bool,
) -> anyhow::Result<()> {
    let n = env_num("JITBOT_PERF_WAVE", 1000);
    let nsgs = 50;
    let latency = Duration::from_millis(env_num("JITBOT_PERF_ARM_LATENCY_MS", 2000));
    let s = Setup {
        nsgs,
        people: 0,
        writes,
        concurrency: concurrency_knob(),
    };
    let env = Env::new(ArmSimOptions::like_azure(latency), nsgs).await?;
    let (app, reference) = if restart {
        // jitbot was down when they fell due: seed, then start.
        let store = Store::connect(&env.db()).await?;
        let due = now_ms() - 5_000;
        seed(&store, &env.arm, n, nsgs, due).await?;
        store.close().await;
        let started = now_ms();
        (env.app(&s).await?, started)
    } else {
        let app = env.app(&s).await?;
        let due = now_ms() + 8_000 + n as i64 * 5;
        seed(&app.store, &env.arm, n, nsgs, due).await?;
        anyhow::ensure!(now_ms() < due, "seeding took longer than planned");
        (app, due)
    };
    let requests_before = env.arm.requests().len();
    wait_all_closed(&app.store, Duration::from_secs(900)).await?;
    let gone: HashMap<String, i64> = env
        .arm
        .rule_events()
        .into_iter()
        .filter(|e| !e.live)
        .map(|e| (e.rule, unix_ms(e.at)))
        .collect();
    let rows = app.store.requests_in(&[Status::Revoked]).await?;
    let late: Vec<f64> = rows
        .iter()
        .filter_map(|r| gone.get(&r.rule_name).map(|g| (g - reference) as f64))
        .collect();
    let lost = (0..nsgs)
        .map(|i| env.arm.rules(&nsg_id(i)).len())
        .sum::<usize>();
    if lost > 0 {
        for i in 0..nsgs {
            for r in env.arm.rules(&nsg_id(i)) {
                let id = r.name.trim_start_matches("jitbot-");
                let row = app.store.request(id).await?;
                println!(
                    "left: {} {:?} status {:?} detail {:?}",
                    r.name,
                    r.properties.provisioning_state,
                    row.as_ref().map(|r| r.status),
                    row.as_ref().and_then(|r| r.detail.clone())
                );
                for q in env
                    .arm
                    .requests()
                    .iter()
                    .filter(|q| q.path.contains(&r.name))
                {
                    println!("  {} {} {}", q.method, q.path, q.status);
                }
            }
        }
    }
    let reqs = &env.arm.requests()[requests_before..];
    let writes_n = reqs
        .iter()
        .filter(|r| r.method == "PUT" || r.method == "DELETE")
        .count();
    let per_grant = reqs.len() as f64 / n as f64;
    let throttled = reqs.iter().filter(|r| r.status == 429).count();
    let st = stats(late);
    let what = if restart {
        "overdue at restart (gone − restart)"
    } else {
        "while running (gone − expiry)"
    };
    report.row(
        &format!("wave {n}/{nsgs} NSGs {what}, {writes}"),
        st,
        &format!("revoked {}/{n}; rules left {lost}; ARM req/grant {per_grant:.2}, writes {writes_n}, 429 {throttled}", rows.len()),
    );
    report.json.insert(
        format!("wave_{}_{writes}", if restart { "restart" } else { "running" }),
        json!({"grants": n, "nsgs": nsgs, "revoked": rows.len(), "rules_left": lost, "gone_after": stats_json(st), "arm_requests_per_grant": per_grant, "arm_writes": writes_n, "arm_429": throttled}),
    );
    app.stop().await;
    env.finish().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. Footprint: the real binary.

const FAKE_AZ: &str = r#"#!/bin/sh
now=$(date +%s)
printf '{"accessToken":"az-cli-token","expiresOn":"2030-01-01 00:00:00.000000","expires_on":%s,"subscription":"s","tenant":"tenant-1","tokenType":"Bearer"}\n' "$((now + 3600))"
"#;

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// `JITBOT_PERF_WRAP`: a command (whitespace-separated) the footprint's `jitbot serve` runs
/// under, one that keeps the process id, e.g. `valgrind --tool=massif`. RSS is then the tool's.
fn wrapper() -> Vec<String> {
    std::env::var("JITBOT_PERF_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Stops `jitbot serve`: SIGKILL, or SIGTERM under a wrapper so the tool writes its report.
fn stop(mut child: std::process::Child) -> anyhow::Result<()> {
    if wrapper().is_empty() {
        child.kill()?;
    } else {
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
    }
    child.wait()?;
    Ok(())
}

/// Starts `jitbot serve` and waits for `/readyz`; returns the child and the start-up time.
async fn serve(
    env: &Env,
    cfg: &str,
    bin_dir: &std::path::Path,
) -> anyhow::Result<(std::process::Child, f64, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cfg = cfg.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let path = env.dir.path().join("jitbot.toml");
    std::fs::write(&path, cfg)?;
    let started = Instant::now();
    // `JITBOT_PERF_BIN`: another build of jitbot to measure (say, the one before a change).
    let bin =
        std::env::var("JITBOT_PERF_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_jitbot").into());
    let wrap = wrapper();
    let mut command = match wrap.split_first() {
        Some((tool, args)) => {
            let mut c = std::process::Command::new(tool);
            c.args(args).arg(&bin);
            c
        }
        None => std::process::Command::new(&bin),
    };
    let child = command
        .args(["serve", "--config"])
        .arg(&path)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("SLACK_SIGNING_SECRET", SIGNING_SECRET)
        .env("SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    loop {
        if let Ok(r) = http.get(&url).send().await
            && r.status() == 200
        {
            return Ok((child, started.elapsed().as_secs_f64() * 1e3, port));
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "jitbot did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn phase_footprint(report: &mut Report) -> anyhow::Result<()> {
    let n = env_num("JITBOT_PERF_FOOTPRINT_GRANTS", 10_000);
    let nsgs = 50;
    let env = Env::new(
        ArmSimOptions {
            throttling: None,
            ..ArmSimOptions::default()
        },
        nsgs,
    )
    .await?;
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::write(bin.join("az"), FAKE_AZ)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("az"), std::fs::Permissions::from_mode(0o755))?;
    }
    let s = Setup {
        nsgs,
        people: 0,
        writes: "auto",
        concurrency: None,
    };
    let cfg = config(&env.arm.base_url, &env.slack.base_url, &env.db(), &s);
    let (idle, idle_start, _) = serve(&env, &cfg, &bin).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = rss_kb(idle.id(), "VmRSS:");
    stop(idle)?;

    let store = Store::connect(&env.db()).await?;
    seed(&store, &env.arm, n, nsgs, now_ms() + 8 * 3_600_000).await?;
    store.close().await;
    let (full, full_start, _) = serve(&env, &cfg, &bin).await?;
    tokio::time::sleep(Duration::from_secs(env_num(
        "JITBOT_PERF_FOOTPRINT_WAIT_SECS",
        5,
    )))
    .await;
    let full_rss = rss_kb(full.id(), "VmRSS:");
    let full_hwm = rss_kb(full.id(), "VmHWM:");
    stop(full)?;
    let one = |v: f64| Stats {
        n: 1,
        p50: v,
        p99: v,
        max: v,
    };
    report.row(
        "start-up, empty database (ms)",
        one(idle_start),
        &format!("RSS idle {:.1} MB", idle_rss as f64 / 1024.0),
    );
    report.row(
        &format!("start-up, {n} active grants (ms)"),
        one(full_start),
        &format!(
            "RSS {:.1} MB (peak {:.1} MB)",
            full_rss as f64 / 1024.0,
            full_hwm as f64 / 1024.0
        ),
    );
    report.json.insert("footprint".into(), json!({"database": database_label(), "rss_idle_mb": idle_rss as f64 / 1024.0, "startup_empty_ms": idle_start.round(), "active_grants": n, "rss_active_mb": full_rss as f64 / 1024.0, "rss_peak_mb": full_hwm as f64 / 1024.0, "startup_active_ms": full_start.round()}));
    env.finish().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jitbot::install_crypto();
    let mut report = Report::default();
    println!(
        "| {:<44} | {:>6} | {:>9} | {:>9} | {:>9} | notes |",
        "measure", "n", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "|{}|--------|-----------|-----------|-----------|-------|",
        "-".repeat(46)
    );
    if wanted("ack") {
        phase_ack(&mut report).await?;
    }
    if wanted("open") {
        for writes in modes() {
            phase_open(&mut report, writes).await?;
        }
    }
    if wanted("wave") {
        for writes in modes() {
            phase_wave(&mut report, writes, false).await?;
            phase_wave(&mut report, writes, true).await?;
        }
    }
    if wanted("footprint") {
        phase_footprint(&mut report).await?;
    }
    report.json.insert(
        "concurrency".into(),
        json!(concurrency_knob().unwrap_or(WorkerSettings::DEFAULT_CONCURRENCY as u64)),
    );
    report
        .json
        .insert("database".into(), json!(database_label()));
    report.json.insert(
        "arm_latency_ms".into(),
        json!(env_num("JITBOT_PERF_ARM_LATENCY_MS", 2000)),
    );
    let text = Value::Object(report.json).to_string();
    println!("PERF_JSON {text}");
    let out = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(format!("{out}/jitbot-perf.json"), &text);
    Ok(())
}
