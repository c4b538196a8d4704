//! Crash trials: the real `jitbot serve` binary as a subprocess, killed at chosen points and at
//! random times, restarted, and checked against the fakes it talked to.
//!
//! Each trial has its own SQLite database, ARM emulator and Slack emulator (in this test process,
//! on loopback) and its own fake `az` first on the child's `PATH` (the Azure CLI credential: it
//! prints a token JSON as `az account get-access-token -o json` does). A trial submits
//! `/jit web1 22 3s`, approves it, and kills the process at its kill point:
//!
//! - `after_decision`, `after_put`, `after_delete`, `after_chat_post`: `JITBOT_CRASH_AT` makes the
//!   binary exit at that point (see `src/crashpoint.rs`);
//! - `during_put`, `during_delete`: SIGKILL as soon as the ARM emulator has carried out the write,
//!   whose answer is held back (the write happened, jitbot never heard);
//! - `while_active`: SIGKILL at a random moment while the grant is open;
//! - `random`: SIGKILL at a random time within 6 s of the request.
//!
//! Then it restarts the binary (no crash point), drives the request to its end and checks: the
//! rule was closed no later than expiry + 5 s and is gone; one `applied` audit event and no PUT
//! after the rule's DELETE; every chat message delivered exactly once (one message per dedupe
//! key; the requester hears "open" and "closed" once each); `jitbot audit verify` passes. The
//! last process is stopped with SIGTERM, which must take under 10 s.
//!
//! `JITBOT_CRASH_TRIALS` (default 200) and `JITBOT_CRASH_CONCURRENCY` (default 6) tune the run.

use futures::StreamExt;
use jitbot::store::Store;
use jitbot_sim::arm::{ArmSim, ArmSimOptions, Fault, On};
use jitbot_sim::discord::DiscordSim;
use jitbot_sim::discord_user;
use jitbot_sim::slack::SlackSim;
use jitbot_sim::slack_user;
use rand::Rng;
use sqlx::{AnyPool, Row};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::process::{Child, Command};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const BOT_TOKEN: &str = "xoxb-crash-token";
/// The app-level token of Socket Mode (used only by configs with `mode = "socket"`).
const APP_TOKEN: &str = "xapp-1-A0CRASH-1-crash-app-token";
const NSG: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/prod/providers/Microsoft.Network/networkSecurityGroups/web1-nsg";
const APPROVALS: &str = "C0APPROVALS";
const AUDIT: &str = "C0AUDIT";
const D_BOT_TOKEN: &str = "discord-bot-token-crash-5e1b";
const D_CHANNEL: &str = "700000000000000010";
const STEVE: &str = "U0STEVE";
const ALICE: &str = "U0ALICE";
/// The promise: no rule stays open later than this after its expiry.
const MAX_LATE_MS: i64 = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    AfterDecision,
    DuringPut,
    AfterPut,
    WhileActive,
    DuringDelete,
    AfterDelete,
    AfterChatPost,
    Random,
}

const KILLS: [Kill; 8] = [
    Kill::AfterDecision,
    Kill::DuringPut,
    Kill::AfterPut,
    Kill::WhileActive,
    Kill::DuringDelete,
    Kill::AfterDelete,
    Kill::AfterChatPost,
    Kill::Random,
];

impl Kill {
    /// The `JITBOT_CRASH_AT` value for kills the binary does to itself.
    fn crash_at(self) -> Option<&'static str> {
        match self {
            Kill::AfterDecision => Some("after_decision"),
            Kill::AfterPut => Some("after_put"),
            Kill::AfterDelete => Some("after_delete"),
            Kill::AfterChatPost => Some("after_chat_post"),
            _ => None,
        }
    }
}

fn trial_config(arm: &str, slack: &str, db: &str, port: u16, request_timeout: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"

[database]
url = "{db}"

[worker]
apply_deadline = "60s"
# A killed process's jobs are taken over after one lease (PostgreSQL); the grant's clock keeps
# running while it is down, so keep the takeover within seconds.
lease = "2s"

[azure]
backend = "arm"
arm_endpoint = "{arm}"
credential = "azure_cli"
request_timeout = "{request_timeout}"
retry_budget = "10s"

[slack]
api_base_url = "{slack}"
audit_channel = "{AUDIT}"

[people.steve]
slack = "{STEVE}"
[people.alice]
slack = "{ALICE}"

[targets.web1]
nsg = "{NSG}"
destination = "10.0.1.4"
ports = [22]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
default_source = "203.0.113.7"
requesters = ["steve"]
approvers = ["alice"]
approval_channel.slack = "{APPROVALS}"
priority_range = [100, 199]
pending_ttl = "5m"
"#
    )
}

/// A fake Azure CLI: `az account get-access-token -o json --scope …` prints a token.
const FAKE_AZ: &str = r#"#!/bin/sh
case "$*" in
  *"account get-access-token"*)
    now=$(date +%s)
    exp=$((now + 3600))
    printf '{"accessToken":"az-cli-token-%s","expiresOn":"2030-01-01 00:00:00.000000","expires_on":%s,"subscription":"11111111-2222-3333-4444-555555555555","tenant":"tenant-1","tokenType":"Bearer"}\n' "$$" "$exp"
    ;;
  *)
    echo "fake az: unsupported: $*" >&2
    exit 2
    ;;
esac
"#;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// One isolated world: database, fakes, config and the current child process.
struct World {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    arm: ArmSim,
    slack: SlackSim,
    config: PathBuf,
    base: String,
    http: reqwest::Client,
    child: Option<Child>,
    store: Option<Store>,
    /// This test's own pool on the same database, for assertions in SQL.
    sql: Option<AnyPool>,
    starts: u32,
    /// The database URL this test reads through (the same unless a test puts a proxy between).
    observer_db: String,
    /// Soft and hard open-files limit of the jitbot process, when a test sets one.
    nofile: Option<u64>,
    /// `RUST_LOG` of the jitbot process.
    log_level: &'static str,
    /// More environment variables for the jitbot process (a test's extra secrets).
    extra_env: Vec<(&'static str, &'static str)>,
}

impl World {
    /// A world on a fresh SQLite file, or on `postgres` (a fresh database's URL) when given.
    async fn new(request_timeout: &str, postgres: Option<String>) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let az = bin.join("az");
        std::fs::write(&az, FAKE_AZ).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let arm = ArmSim::start(ArmSimOptions {
            operation_delay: Duration::from_millis(100),
            ..ArmSimOptions::default()
        })
        .await
        .unwrap();
        arm.add_nsg(NSG, "westeurope");
        arm.set_accepted_token_prefix(Some("az-cli-token-"));
        let slack = SlackSim::start(BOT_TOKEN).await.unwrap();
        let port = free_port();
        let db = postgres
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("jitbot.db").display()));
        let config = dir.join("jitbot.toml");
        std::fs::write(
            &config,
            trial_config(&arm.base_url, &slack.base_url, &db, port, request_timeout),
        )
        .unwrap();
        World {
            dir,
            _tmp: tmp,
            arm,
            slack,
            config,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            child: None,
            store: None,
            sql: None,
            starts: 0,
            observer_db: db,
            nofile: None,
            log_level: "info",
            extra_env: Vec::new(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jitbot"));
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path)
            .env("SLACK_SIGNING_SECRET", SECRET)
            .env("SLACK_BOT_TOKEN", BOT_TOKEN)
            .env("SLACK_APP_TOKEN", APP_TOKEN)
            .env("RUST_LOG", self.log_level)
            .env_remove("JITBOT_CRASH_AT")
            .env_remove("JITBOT_DATABASE_URL")
            .envs(self.extra_env.iter().copied())
            .stdin(Stdio::null());
        cmd
    }

    fn log(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("jitbot.log"))
            .unwrap()
    }

    /// Starts `jitbot serve` and waits until its `/readyz` says 200. When the port picked for it
    /// was taken in the meantime (another trial's emulator), picks another one and tries again.
    async fn start(&mut self, crash_at: Option<&str>) {
        for _ in 0..5 {
            if self.try_start(crash_at).await {
                if self.store.is_none() {
                    self.store = Some(Store::connect(&self.observer_db).await.unwrap());
                    self.sql = Some(AnyPool::connect(&self.observer_db).await.unwrap());
                }
                return;
            }
            let old = self.base.rsplit(':').next().unwrap_or_default().to_string();
            let port = free_port();
            let text = std::fs::read_to_string(&self.config).unwrap().replace(
                &format!("listen = \"127.0.0.1:{old}\""),
                &format!("listen = \"127.0.0.1:{port}\""),
            );
            std::fs::write(&self.config, text).unwrap();
            self.base = format!("http://127.0.0.1:{port}");
        }
        panic!("jitbot did not start; see {}", self.dir.display());
    }

    /// One start; false when the process exited during start-up.
    async fn try_start(&mut self, crash_at: Option<&str>) -> bool {
        let mut cmd = self.command();
        cmd.arg("serve").arg("--config").arg(&self.config);
        if let Some(p) = crash_at {
            cmd.env("JITBOT_CRASH_AT", p);
        }
        cmd.stdout(Stdio::from(self.log()))
            .stderr(Stdio::from(self.log()))
            .kill_on_drop(true);
        if let Some(limit) = self.nofile {
            // SAFETY: only an async-signal-safe system call between fork and exec.
            unsafe {
                cmd.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, limit, limit));
            }
        }
        let child = cmd.spawn().expect("spawn jitbot");
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
                && let Ok(body) = r.json::<serde_json::Value>().await
                && body["worker"] == true
                && body["database"] == true
            {
                // Ours, and still running (not another process that owns the port).
                if let Some(Ok(None)) = self.child.as_mut().map(|c| c.try_wait()) {
                    return true;
                }
            }
            assert!(Instant::now() < deadline, "jitbot never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: nothing finishes.
    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Waits for a child that is expected to stop itself at a crash point.
    async fn wait_exit(&mut self, within: Duration) -> bool {
        let Some(c) = self.child.as_mut() else {
            return true;
        };
        match tokio::time::timeout(within, c.wait()).await {
            Ok(_) => {
                self.child = None;
                true
            }
            Err(_) => false,
        }
    }

    /// SIGTERM, then how long the process took to exit.
    async fn terminate(&mut self) -> Duration {
        self.signal("-TERM").await
    }

    /// Sends `signal` (`-TERM`, `-INT`), then how long the process took to exit.
    async fn signal(&mut self, signal: &str) -> Duration {
        let Some(mut c) = self.child.take() else {
            return Duration::ZERO;
        };
        let pid = c.id().expect("running child has a pid");
        let sent = Instant::now();
        let _ = std::process::Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status();
        match tokio::time::timeout(Duration::from_secs(15), c.wait()).await {
            Ok(_) => sent.elapsed(),
            Err(_) => {
                let _ = c.start_kill();
                let _ = c.wait().await;
                Duration::from_secs(15)
            }
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("started once")
    }

    fn sql(&self) -> &AnyPool {
        self.sql.as_ref().expect("started once")
    }

    async fn slash(&self, user: &str, text: &str) -> Option<String> {
        let body = slack_user::slash_command(user, "someone", "C0OPS", text);
        let resp = slack_user::send(
            &self.http,
            &format!("{}/slack/commands", self.base),
            SECRET,
            &body,
        )
        .await
        .ok()?;
        let json: serde_json::Value = resp.json().await.ok()?;
        json["text"].as_str().map(str::to_string)
    }

    fn card_ts(&self, id: &str) -> Option<String> {
        self.slack
            .messages(APPROVALS)
            .into_iter()
            .find(|m| m.text.contains(id))
            .map(|m| m.ts)
    }

    async fn approve(&self, id: &str, ts: &str) {
        let body = slack_user::block_action(ALICE, "alice", APPROVALS, ts, "jit_approve", id);
        let _ = slack_user::send(
            &self.http,
            &format!("{}/slack/interactions", self.base),
            SECRET,
            &body,
        )
        .await;
    }

    /// Steve asks for `text`, Alice approves the card; returns the request id.
    async fn ask_and_approve(&self, text: &str) -> String {
        let before = self.the_request().await.map(|(id, _, _)| id);
        let _ = self.slash(STEVE, text).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let id = loop {
            if let Some((i, _, _)) = self.the_request().await
                && Some(&i) != before.as_ref()
            {
                break i;
            }
            assert!(Instant::now() < deadline, "the request was never recorded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            wait_for(Duration::from_secs(10), || async {
                self.card_ts(&id).is_some()
            })
            .await,
            "no card"
        );
        let ts = self.card_ts(&id).unwrap();
        self.approve(&id, &ts).await;
        id
    }

    /// The newest request: id, status, expiry.
    async fn the_request(&self) -> Option<(String, String, Option<i64>)> {
        let row = sqlx::query(
            "SELECT id, status, expires_at FROM requests ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .fetch_optional(self.sql())
        .await
        .ok()??;
        Some((
            row.try_get("id").ok()?,
            row.try_get("status").ok()?,
            row.try_get("expires_at").ok()?,
        ))
    }

    async fn unfinished_jobs(&self) -> i64 {
        // The request's own effects: not the approval timeout (`expire`, queued until pending_ttl,
        // then a no-op), the revocation watch (queued until expiry + the alert delay) or the
        // periodic singletons (reconcile, checkpoint; always queued, no request).
        sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE state IN ('queued', 'running')
             AND request_id IS NOT NULL AND kind NOT IN ('expire', 'revocation_watch')",
        )
        .fetch_one(self.sql())
        .await
        .and_then(|r| r.try_get("n"))
        .unwrap_or(-1)
    }

    async fn applied_events(&self, id: &str) -> usize {
        self.store()
            .audit_events(0, None)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.request_id.as_deref() == Some(id) && e.kind == "applied")
            .count()
    }

    /// `jitbot audit verify` against this world's database.
    async fn audit_verify(&self) -> bool {
        let out = self
            .command()
            .arg("audit")
            .arg("verify")
            .arg("--config")
            .arg(&self.config)
            .output()
            .await
            .expect("run audit verify");
        out.status.success()
    }
}

async fn wait_for<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What one trial found.
#[derive(Debug, Default)]
struct Report {
    kill: Option<&'static str>,
    problems: Vec<String>,
    leaked_rules: usize,
    double_applies: usize,
    lost_messages: usize,
    duplicated_messages: usize,
    late_ms: Option<i64>,
    shutdown_ms: u128,
    /// The request's status when the process died.
    killed_in: String,
    /// Ran against PostgreSQL rather than SQLite.
    postgres: bool,
    dir: Option<PathBuf>,
}

/// `JITBOT_TEST_POSTGRES_URL` with a fresh database created for one trial.
async fn fresh_postgres(n: usize) -> Option<(String, String)> {
    let admin = std::env::var("JITBOT_TEST_POSTGRES_URL").ok()?;
    sqlx::any::install_default_drivers();
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .expect("connect to JITBOT_TEST_POSTGRES_URL");
    let name = format!("jitbot_crash_{}_{n}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let mut url = url::Url::parse(&admin).expect("JITBOT_TEST_POSTGRES_URL is a URL");
    url.set_path(&format!("/{name}"));
    Some((url.to_string(), name))
}

async fn drop_postgres(name: &str) {
    let Ok(admin) = std::env::var("JITBOT_TEST_POSTGRES_URL") else {
        return;
    };
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
        let _ = conn.close().await;
    }
}

/// Every fourth trial runs on PostgreSQL when `JITBOT_TEST_POSTGRES_URL` is set.
fn on_postgres(n: usize) -> bool {
    n % 4 == 3 && std::env::var("JITBOT_TEST_POSTGRES_URL").is_ok()
}

async fn trial(n: usize, kill: Kill) -> Report {
    let pg = if on_postgres(n) {
        fresh_postgres(n).await
    } else {
        None
    };
    let mut r = trial_in(n, kill, pg.as_ref().map(|(url, _)| url.clone())).await;
    r.postgres = pg.is_some();
    if let Some((_, name)) = pg {
        if r.problems.is_empty() {
            drop_postgres(&name).await;
        } else {
            eprintln!("trial {n}: keeping PostgreSQL database {name}");
        }
    }
    r
}

async fn trial_in(n: usize, kill: Kill, postgres: Option<String>) -> Report {
    let mut w = World::new("1s", postgres).await;
    let mut r = Report {
        kill: Some(match kill {
            Kill::AfterDecision => "after_decision",
            Kill::DuringPut => "during_put",
            Kill::AfterPut => "after_put",
            Kill::WhileActive => "while_active",
            Kill::DuringDelete => "during_delete",
            Kill::AfterDelete => "after_delete",
            Kill::AfterChatPost => "after_chat_post",
            Kill::Random => "random",
        }),
        ..Report::default()
    };
    let rng_ms = |hi: u64| rand::rng().random_range(0..hi);
    match kill {
        // Hold the answer so the kill lands after ARM did the write but before jitbot heard.
        Kill::DuringPut => w
            .arm
            .inject(Fault::Delay(Duration::from_secs(3)).on(On::put())),
        Kill::DuringDelete => w
            .arm
            .inject(Fault::Delay(Duration::from_secs(3)).on(On::delete())),
        _ => {}
    }
    w.start(kill.crash_at()).await;
    let random_at = Duration::from_millis(rng_ms(6000));
    let submitted = Instant::now();
    let _ = w.slash(STEVE, "web1 22 3s").await;

    // The first process runs until its kill point.
    let id = loop {
        if let Some((id, _, _)) = w.the_request().await {
            break id;
        }
        if submitted.elapsed() > Duration::from_secs(10) {
            r.problems.push("the request was never recorded".into());
            r.dir = Some(w._tmp.keep());
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut killed = false;
    while !killed {
        if submitted.elapsed() > Duration::from_secs(25) {
            r.problems.push("the kill point was never reached".into());
            break;
        }
        let status = w.the_request().await.map(|(_, s, _)| s).unwrap_or_default();
        if status == "pending"
            && let Some(ts) = w.card_ts(&id)
        {
            w.approve(&id, &ts).await;
        }
        killed = match kill {
            Kill::AfterDecision | Kill::AfterPut | Kill::AfterDelete | Kill::AfterChatPost => {
                w.wait_exit(Duration::from_millis(200)).await
            }
            Kill::DuringPut => {
                if w.arm.rule(NSG, &format!("jitbot-{id}")).is_some() {
                    w.kill().await;
                    true
                } else {
                    false
                }
            }
            Kill::WhileActive => {
                if status == "active" {
                    tokio::time::sleep(Duration::from_millis(rng_ms(2500))).await;
                    w.kill().await;
                    true
                } else {
                    false
                }
            }
            Kill::DuringDelete => {
                if (status == "active" || status == "revoking")
                    && w.arm.rule(NSG, &format!("jitbot-{id}")).is_none()
                    && w.arm.requests().iter().any(|q| q.method == "DELETE")
                {
                    w.kill().await;
                    true
                } else {
                    false
                }
            }
            Kill::Random => {
                if submitted.elapsed() >= random_at {
                    w.kill().await;
                    true
                } else {
                    false
                }
            }
        };
        if !killed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    w.kill().await; // in case the kill point was never reached
    let killed_at = w.the_request().await.map(|(_, s, _)| s).unwrap_or_default();
    r.killed_in = killed_at;
    if kill == Kill::WhileActive {
        // Stay down for a while: the grant may expire while nobody is running.
        tokio::time::sleep(Duration::from_millis(rng_ms(2500))).await;
    }

    // Restart and drive the request to its end.
    w.start(None).await;
    let done = wait_for(Duration::from_secs(40), || async {
        let status = w.the_request().await.map(|(_, s, _)| s).unwrap_or_default();
        if status == "pending"
            && let Some(ts) = w.card_ts(&id)
        {
            w.approve(&id, &ts).await;
        }
        status == "revoked" && w.unfinished_jobs().await == 0
    })
    .await;
    if !done {
        let status = w.the_request().await.map(|(_, s, _)| s).unwrap_or_default();
        r.problems.push(format!(
            "not finished 40 s after the restart: status {status}, {} unfinished jobs",
            w.unfinished_jobs().await
        ));
    }

    // ARM: the rule is gone, was closed in time, and was written once.
    let rule = format!("jitbot-{id}");
    r.leaked_rules = w.arm.rules(NSG).len();
    let requests = w.arm.requests();
    let ours: Vec<_> = requests
        .iter()
        .filter(|q| q.path.ends_with(&rule))
        .collect();
    let first_delete = ours
        .iter()
        .find(|q| q.method == "DELETE" && (200..300).contains(&q.status))
        .map(|q| unix_ms(q.at));
    let expires_at = w.the_request().await.and_then(|(_, _, e)| e);
    if let (Some(closed), Some(expires)) = (first_delete, expires_at) {
        let late = closed - expires;
        r.late_ms = Some(late);
        if late > MAX_LATE_MS {
            r.problems
                .push(format!("the rule closed {late} ms after expiry"));
        }
    } else {
        r.problems.push(format!(
            "no successful DELETE ({first_delete:?}) or no expiry ({expires_at:?})"
        ));
    }
    let applied = w.applied_events(&id).await;
    let put_after_delete =
        first_delete.is_some_and(|d| ours.iter().any(|q| q.method == "PUT" && unix_ms(q.at) > d));
    if applied != 1 || put_after_delete {
        r.double_applies += 1;
        r.problems.push(format!(
            "{applied} applied events; PUT after DELETE: {put_after_delete}"
        ));
    }
    if r.leaked_rules > 0 {
        r.problems
            .push(format!("{} rules left in the NSG", r.leaked_rules));
    }

    // Chat: every message once.
    let mut keys: HashMap<String, usize> = HashMap::new();
    for c in [APPROVALS, AUDIT, STEVE] {
        for m in w.slack.messages(c) {
            let key = m.metadata["event_payload"]["key"]
                .as_str()
                .unwrap_or("")
                .to_string();
            *keys.entry(key).or_default() += 1;
        }
    }
    let dups: usize = keys.values().filter(|n| **n > 1).map(|n| n - 1).sum();
    if dups > 0 {
        r.duplicated_messages += dups;
        r.problems.push(format!("duplicated messages: {keys:?}"));
    }
    let dms = w.slack.messages(STEVE);
    for needle in ["is open", "is closed"] {
        let n = dms.iter().filter(|m| m.text.contains(needle)).count();
        if n == 0 {
            r.lost_messages += 1;
            r.problems
                .push(format!("the requester never heard {needle:?}"));
        }
        if n > 1 {
            r.duplicated_messages += n - 1;
            r.problems
                .push(format!("the requester heard {needle:?} {n} times"));
        }
    }
    let cards = w
        .slack
        .messages(APPROVALS)
        .iter()
        .filter(|m| m.text.contains(&id))
        .count();
    if cards != 1 {
        r.problems.push(format!("{cards} approval cards"));
        if cards == 0 {
            r.lost_messages += 1;
        }
    }
    let feed = w.slack.messages(AUDIT);
    for needle in ["is open", "is closed"] {
        let n = feed.iter().filter(|m| m.text.contains(needle)).count();
        if n != 1 {
            r.problems
                .push(format!("the audit feed has {needle:?} {n} times"));
            if n == 0 {
                r.lost_messages += 1;
            } else {
                r.duplicated_messages += n - 1;
            }
        }
    }

    // Graceful stop, then the audit chain.
    let took = w.terminate().await;
    r.shutdown_ms = took.as_millis();
    if took >= Duration::from_secs(10) {
        r.problems.push(format!("SIGTERM took {took:?}"));
    }
    if !w.audit_verify().await {
        r.problems.push("jitbot audit verify failed".into());
    }
    if !r.problems.is_empty() {
        eprintln!(
            "trial {n} ({:?}) starts={} problems: {:#?}",
            r.kill, w.starts, r.problems
        );
        r.dir = Some(w._tmp.keep());
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_trials_never_leak_a_rule_apply_twice_or_lose_a_message() {
    jitbot::install_crypto();
    let trials: usize = std::env::var("JITBOT_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let concurrency: usize = std::env::var("JITBOT_CRASH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let started = Instant::now();
    let reports: Vec<Report> = futures::stream::iter(0..trials)
        .map(|n| async move {
            let kill = KILLS[n % KILLS.len()];
            tokio::spawn(trial(n, kill))
                .await
                .unwrap_or_else(|e| Report {
                    problems: vec![format!("trial {n} panicked: {e}")],
                    ..Report::default()
                })
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.problems.is_empty()).collect();
    let leaked: usize = reports.iter().map(|r| r.leaked_rules).sum();
    let doubles: usize = reports.iter().map(|r| r.double_applies).sum();
    let lost: usize = reports.iter().map(|r| r.lost_messages).sum();
    let dups: usize = reports.iter().map(|r| r.duplicated_messages).sum();
    let longest = reports.iter().filter_map(|r| r.late_ms).max().unwrap_or(0);
    let longest_stop = reports.iter().map(|r| r.shutdown_ms).max().unwrap_or(0);
    println!("METRIC crash_trials={}", reports.len());
    println!(
        "METRIC crash_trials_postgres={}",
        reports.iter().filter(|r| r.postgres).count()
    );
    println!("METRIC crash_trials_failed={}", failed.len());
    println!("METRIC crash_leaked_rules={leaked}");
    println!("METRIC crash_double_applies={doubles}");
    println!("METRIC crash_lost_messages={lost}");
    println!("METRIC crash_duplicated_messages={dups}");
    println!("METRIC crash_longest_revocation_delay_ms={longest}");
    println!("METRIC crash_longest_sigterm_exit_ms={longest_stop}");
    println!(
        "METRIC crash_trials_wall_s={:.1}",
        started.elapsed().as_secs_f64()
    );
    for k in KILLS {
        let of_kind: Vec<&Report> = reports.iter().filter(|r| r.kill == trial_name(k)).collect();
        let worst = of_kind.iter().filter_map(|r| r.late_ms).max().unwrap_or(0);
        println!(
            "METRIC crash_kind={:?} trials={} failed={} longest_delay_ms={worst}",
            k,
            of_kind.len(),
            of_kind.iter().filter(|r| !r.problems.is_empty()).count()
        );
    }
    let mut states: HashMap<(Option<&str>, &str), usize> = HashMap::new();
    for r in &reports {
        *states.entry((r.kill, r.killed_in.as_str())).or_default() += 1;
    }
    let mut states: Vec<_> = states.into_iter().collect();
    states.sort();
    for ((kill, status), n) in states {
        println!(
            "METRIC crash_killed kind={} status={status} trials={n}",
            kill.unwrap_or("?")
        );
    }
    for f in &failed {
        eprintln!(
            "FAILED {:?} (postgres: {}) in {:?}: {:?}",
            f.kill, f.postgres, f.dir, f.problems
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {trials} trials failed",
        failed.len()
    );
}

fn trial_name(k: Kill) -> Option<&'static str> {
    Some(match k {
        Kill::AfterDecision => "after_decision",
        Kill::DuringPut => "during_put",
        Kill::AfterPut => "after_put",
        Kill::WhileActive => "while_active",
        Kill::DuringDelete => "during_delete",
        Kill::AfterDelete => "after_delete",
        Kill::AfterChatPost => "after_chat_post",
        Kill::Random => "random",
    })
}

/// SIGTERM while an ARM PUT is in flight: the process exits within 10 s, the job keeps its
/// state, and the next process finishes the apply exactly once (and stops on SIGINT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_put_in_flight_exits_within_ten_seconds_and_the_next_process_applies_once() {
    jitbot::install_crypto();
    // The ARM client waits up to 30 s for an answer, and ARM holds this one for 60 s.
    let mut w = World::new("30s", None).await;
    w.arm
        .inject(Fault::Delay(Duration::from_secs(60)).on(On::put()));
    w.start(None).await;
    let id = w.ask_and_approve("web1 22 1h").await;
    assert!(
        wait_for(Duration::from_secs(10), || async {
            w.arm.requests().iter().any(|q| q.method == "PUT")
        })
        .await,
        "the PUT never reached ARM"
    );
    let took = w.terminate().await;
    println!(
        "METRIC sigterm_exit_with_put_in_flight_ms={}",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    let status = w.the_request().await.map(|(_, s, _)| s).unwrap_or_default();
    assert_eq!(
        status, "applying",
        "the apply stays a job for the next process"
    );

    w.start(None).await;
    assert!(
        wait_for(Duration::from_secs(20), || async {
            w.the_request().await.map(|(_, s, _)| s).as_deref() == Some("active")
        })
        .await,
        "the next process finished the apply"
    );
    assert_eq!(w.applied_events(&id).await, 1);
    assert_eq!(w.arm.rules(NSG).len(), 1);
    let took = w.signal("-INT").await;
    println!("METRIC sigint_exit_idle_ms={}", took.as_millis());
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    assert!(w.audit_verify().await);
    let log = std::fs::read_to_string(w.dir.join("jitbot.log")).unwrap_or_default();
    assert!(
        !log.contains(SECRET) && !log.contains(BOT_TOKEN),
        "a secret reached the log"
    );
}

/// A loopback TCP proxy in front of PostgreSQL that the test can cut: while cut, open
/// connections are dropped and new ones are accepted but never answered (a hanging database).
struct CuttableProxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(upstream: String) -> CuttableProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, cs) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let c = c.clone();
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if c.load(Ordering::SeqCst) {
                        // Hold the connection open and say nothing.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                cs.lock().unwrap().push(task.abort_handle());
            }
        });
        CuttableProxy {
            port,
            cut,
            conns,
            _accept: accept,
        }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }
}

/// PostgreSQL only (skipped without `JITBOT_TEST_POSTGRES_URL`): with the database cut off,
/// `/readyz` says 503 within about a second, `/jit` answers "try again" within Slack's 3 s, nothing
/// is written, and everything works again once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_off_readyz_fails_fast_commands_say_try_again_and_nothing_is_half_written() {
    jitbot::install_crypto();
    let Some((direct, name)) = fresh_postgres(9999).await else {
        println!("JITBOT_TEST_POSTGRES_URL is not set: skipping the PostgreSQL outage test");
        return;
    };
    let url = url::Url::parse(&direct).unwrap();
    let upstream = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    );
    let proxy = CuttableProxy::start(upstream).await;
    let mut through = url.clone();
    through.set_host(Some("127.0.0.1")).unwrap();
    through.set_port(Some(proxy.port)).unwrap();
    let mut w = World::new("1s", Some(through.to_string())).await;
    // The test reads the database directly, not through the proxy it cuts.
    w.observer_db = direct.clone();
    w.start(None).await;

    proxy.set_cut(true);
    let asked = Instant::now();
    let ready = w
        .http
        .get(format!("{}/readyz", w.base))
        .send()
        .await
        .unwrap();
    let probe = asked.elapsed();
    println!("METRIC readyz_postgres_cut_ms={}", probe.as_millis());
    assert_eq!(ready.status(), 503);
    assert!(probe < Duration::from_millis(1500), "readyz took {probe:?}");
    let asked = Instant::now();
    let reply = w.slash(STEVE, "web1 22 1h").await.unwrap_or_default();
    let answered = asked.elapsed();
    println!("METRIC command_postgres_cut_ms={}", answered.as_millis());
    assert!(
        answered < Duration::from_secs(3),
        "answered after {answered:?}"
    );
    assert!(reply.contains("try again"), "{reply}");
    assert!(w.the_request().await.is_none(), "nothing was written");

    proxy.set_cut(false);
    assert!(
        wait_for(Duration::from_secs(20), || async {
            matches!(w.http.get(format!("{}/readyz", w.base)).send().await, Ok(r) if r.status() == 200)
        })
        .await,
        "ready again once the database is back"
    );
    let reply = w.slash(STEVE, "web1 22 1h").await.unwrap_or_default();
    assert!(reply.contains("waiting for approval"), "{reply}");
    assert!(w.the_request().await.is_some());
    let took = w.terminate().await;
    assert!(took < Duration::from_secs(10));
    drop_postgres(&name).await;
}

/// A connection that sent part of a request head and then trickles a byte now and then.
async fn slow_header(addr: &str) -> Option<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"POST /slack/commands HTTP/1.1\r\nhost: jitbot\r\nx-a: ")
        .await
        .ok()?;
    Some(s)
}

/// Holds more idle and slow-header connections than the server's cap, with the process at 1,024
/// open files (as many hosts set), while a grant expires: it must close on time, the surplus
/// connections are answered 503 at once, the held ones are shed after the header timeout, and the
/// server answers normally afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_flood_never_delays_a_revocation() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    jitbot::install_crypto();
    // This test process holds the flood's client ends.
    let _ = rlimit::increase_nofile_limit(8192);
    let mut w = World::new("5s", None).await;
    w.nofile = Some(1024);
    let text = std::fs::read_to_string(&w.config)
        .unwrap()
        .replace("[server]\n", "[server]\nheader_timeout = \"4s\"\n");
    std::fs::write(&w.config, text).unwrap();
    w.start(None).await;
    w.ask_and_approve("web1 22 4s").await;
    assert!(
        wait_for(Duration::from_secs(10), || async {
            w.the_request().await.map(|(_, s, _)| s).as_deref() == Some("active")
        })
        .await,
        "the grant never opened"
    );

    // The flood: 1,100 idle connections and 100 that trickle a request head.
    let addr = w.base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..1100 {
        if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
            held.push(s);
        }
    }
    let mut slow = Vec::new();
    for _ in 0..100 {
        if let Some(s) = slow_header(&addr).await {
            slow.push(s);
        }
    }
    let trickle = tokio::spawn(async move {
        for _ in 0..6 {
            for s in slow.iter_mut() {
                let _ = s.write_all(b"a").await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        slow
    });
    let flooded = held.len();

    // The grant closes on time while the connections are held.
    let (_, _, expires) = w.the_request().await.unwrap();
    let expires = expires.expect("active grants have an expiry");
    assert!(
        wait_for(Duration::from_secs(20), || async {
            w.the_request().await.map(|(_, s, _)| s).as_deref() == Some("revoked")
        })
        .await,
        "the grant was not revoked during the flood; see {}",
        w.dir.display()
    );
    let closed: i64 = sqlx::query("SELECT closed_at FROM requests")
        .fetch_one(w.sql())
        .await
        .unwrap()
        .try_get("closed_at")
        .unwrap();
    let late = closed - expires;
    println!("METRIC flood_connections={flooded} flood_revocation_late_ms={late}");
    assert!(late < 2000, "closed {late} ms after expiry under the flood");
    assert!(w.arm.rules(NSG).is_empty(), "the rule is gone");

    // Connections over the cap were answered 503 at once and closed.
    let mut shed = 0;
    for s in held.iter_mut().rev().take(50) {
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
            && buf[..n].starts_with(b"HTTP/1.1 503")
        {
            shed += 1;
        }
    }
    assert!(
        shed >= 45,
        "only {shed} of the last 50 connections were told 503"
    );

    // The held idle ones are closed by the server after the header timeout (4 s here).
    let mut first = held.swap_remove(0);
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), first.read(&mut buf))
        .await
        .expect("an idle connection is closed by the server")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    let _ = trickle.await;
    drop(held);

    // Service as normal afterwards.
    let ok = wait_for(Duration::from_secs(10), || async {
        matches!(
            w.http.get(format!("{}/healthz", w.base)).send().await,
            Ok(r) if r.status() == 200
        )
    })
    .await;
    assert!(ok, "the server did not recover");
    assert!(
        w.slash(STEVE, "list").await.is_some(),
        "commands work again"
    );
    assert!(w.audit_verify().await);
}

/// The rule's `expires=`, as the emulator holds it.
fn rule_expiry(w: &World, id: &str) -> Option<i64> {
    w.arm
        .rule(NSG, &format!("jitbot-{id}"))
        .and_then(|r| r.properties.description)
        .and_then(|d| jitbot::domain::description_expiry(&d))
}

/// Steve asks, Alice approves, the rule opens; returns the request id.
async fn open_grant(w: &World, text: &str) -> String {
    let id = w.ask_and_approve(text).await;
    assert!(
        wait_for(Duration::from_secs(10), || async {
            rule_expiry(w, &id).is_some()
        })
        .await,
        "{id} never opened"
    );
    id
}

/// `jitbot sweep` with no chat secrets in its environment; exit status and output.
async fn sweep(w: &World, grace: &str, extra: &[&str]) -> (bool, String, Duration) {
    let started = Instant::now();
    let out = w
        .command()
        .env_remove("SLACK_SIGNING_SECRET")
        .env_remove("SLACK_BOT_TOKEN")
        .args(["sweep", "--config"])
        .arg(&w.config)
        .args(["--grace", grace])
        .args(extra)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_closes_expired_grants_when_jitbot_and_its_database_are_gone() {
    jitbot::install_crypto();
    let mut w = World::new("5s", None).await;
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        text.replace(
            "pending_ttl = \"5m\"",
            "pending_ttl = \"5m\"\nextend_without_approval = true",
        ),
    )
    .unwrap();
    w.start(None).await;
    let short = open_grant(&w, "web1 22 4s from 203.0.113.7").await;
    let extended = open_grant(&w, "web1 22 4s from 203.0.113.8").await;
    let valid = open_grant(&w, "web1 22 1h from 203.0.113.9").await;
    let reply = w.slash(STEVE, &format!("extend {extended} 50m")).await;
    assert!(
        reply.as_ref().is_some_and(|r| r.contains("stays open")),
        "{reply:?}"
    );
    assert!(
        wait_for(Duration::from_secs(10), || async {
            rule_expiry(&w, &extended).is_some_and(|e| e > unix_ms(SystemTime::now()) + 2_900_000)
        })
        .await,
        "the extension never reached the rule's description"
    );
    // Rules that are not jitbot's grants: a person's, Defender's JIT rule, a lockdown baseline.
    let foreign = [
        ("allow-bastion", "Allow", 300),
        ("MicrosoftDefenderForCloud-JITRule_1849_4B1A", "Allow", 101),
        ("jitbot-lockdown-web1", "Deny", 200),
    ];
    for (name, access, priority) in foreign {
        let mut rule = w.arm.rule(NSG, &format!("jitbot-{valid}")).unwrap();
        rule.name = name.to_string();
        rule.properties.access = access.to_string();
        rule.properties.priority = priority;
        rule.properties.description = Some("expires=2020-01-01T00:00:00Z (not jitbot's)".into());
        if name.starts_with("jitbot-") {
            rule.properties.description = Some("baseline".into());
        }
        w.arm.put_existing_rule(NSG, rule);
    }

    // jitbot and its database are gone.
    w.kill().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(w.dir.join(format!("jitbot.db{suffix}")));
    }
    let deletes = |w: &World| {
        w.arm
            .requests()
            .into_iter()
            .filter(|r| r.method == "DELETE")
            .map(|r| r.path)
            .collect::<Vec<_>>()
    };

    let puts = |w: &World| {
        w.arm
            .requests()
            .iter()
            .filter(|r| r.method == "PUT")
            .count()
    };
    let puts_before = puts(&w);

    // Every grant still valid: nothing is deleted.
    let (ok, out, _) = sweep(&w, "1s", &[]).await;
    assert!(ok, "{out}");
    assert!(deletes(&w).is_empty(), "{out}");
    assert!(
        out.contains("0 deleted") && out.contains("3 still valid") && out.contains("1 baselines"),
        "{out}"
    );

    // Past the short grant's expiry and the grace: exactly its rule goes.
    let short_expiry = rule_expiry(&w, &short).unwrap();
    let wait = short_expiry + 1_500 - unix_ms(SystemTime::now());
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let (ok, out, took) = sweep(&w, "1s", &[]).await;
    assert!(ok, "{out}");
    println!("sweep over 1 NSG (6 rules, 1 expired) took {took:?}");
    assert!(out.contains(&format!("deleted jitbot-{short}")), "{out}");
    assert!(w.arm.rule(NSG, &format!("jitbot-{short}")).is_none());
    let deleted = deletes(&w);
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(deleted[0].ends_with(&format!("jitbot-{short}")));
    for kept in [format!("jitbot-{extended}"), format!("jitbot-{valid}")] {
        assert!(w.arm.rule(NSG, &kept).is_some(), "{kept} was deleted");
    }
    for (name, _, _) in foreign {
        assert!(w.arm.rule(NSG, name).is_some(), "{name} was deleted");
    }

    // A resource group as the scope: its NSGs are listed through ARM (one here).
    let rg = NSG.split("/providers/").next().unwrap();
    let (ok, out, _) = sweep(&w, "1s", &["--scope", rg, "--dry-run"]).await;
    assert!(
        ok && out.contains("swept 1 NSGs") && out.contains("2 still valid"),
        "{out}"
    );
    let (ok, out, _) = sweep(&w, "1s", &["--scope", "/subscriptions/x/nonsense"]).await;
    assert!(!ok && out.contains("nor an NSG resource id"), "{out}");
    // A sweep writes nothing but deletions.
    assert_eq!(puts(&w), puts_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_reaches_a_log_line_a_message_or_the_audit_trail() {
    jitbot::install_crypto();
    let mut w = World::new("5s", None).await;
    w.log_level = "trace";
    // Discord too: cards and the audit feed go to both platforms, through the bot token.
    let discord = DiscordSim::start(D_BOT_TOKEN).await.unwrap();
    let text = std::fs::read_to_string(&w.config).unwrap().replace(
        "approval_channel.slack",
        &format!("approval_channel.discord = \"{D_CHANNEL}\"\napproval_channel.slack"),
    ) + &format!(
        "\n[discord]\napplication_id = \"{}\"\npublic_key = \"{}\"\napi_base_url = \"{}\"\naudit_channel = \"{D_CHANNEL}\"\n",
        discord_user::APPLICATION_ID,
        discord_user::TEST_PUBLIC_KEY,
        discord.base_url
    );
    std::fs::write(&w.config, text).unwrap();
    w.extra_env.push(("DISCORD_BOT_TOKEN", D_BOT_TOKEN));
    w.start(None).await;
    let id = w.ask_and_approve("web1 22 3s").await;
    assert!(
        wait_for(Duration::from_secs(10), || async {
            w.arm.rule(NSG, &format!("jitbot-{id}")).is_some()
        })
        .await,
        "never opened"
    );
    // ARM now refuses the token in use: jitbot must fetch a new one (a 401 and a refresh).
    let first: Vec<String> = w
        .arm
        .requests()
        .iter()
        .filter_map(|r| r.bearer.clone())
        .collect();
    for token in &first {
        w.arm.expire_token(token);
    }
    assert!(
        wait_for(Duration::from_secs(15), || async {
            w.the_request()
                .await
                .is_some_and(|(_, s, _)| s == "revoked")
        })
        .await,
        "never closed"
    );
    w.terminate().await;
    let tokens: std::collections::BTreeSet<String> = w
        .arm
        .requests()
        .iter()
        .filter_map(|r| r.bearer.clone())
        .collect();
    assert!(
        tokens.len() >= 2,
        "a fresh token was fetched after the 401: {tokens:?}"
    );
    let log = std::fs::read_to_string(w.dir.join("jitbot.log")).unwrap();
    assert!(log.lines().count() > 100, "a trace log was written");
    let audit: Vec<String> = sqlx::query_scalar("SELECT detail FROM audit_events")
        .fetch_all(w.sql())
        .await
        .unwrap();
    let chat: Vec<String> = [APPROVALS, AUDIT, STEVE, ALICE]
        .iter()
        .flat_map(|c| w.slack.messages(c))
        .map(|m| format!("{} {}", m.text, m.blocks))
        .chain(
            discord
                .calls()
                .into_iter()
                .map(|c| format!("{} {}", c.path, c.body)),
        )
        .collect();
    assert!(
        discord
            .calls()
            .iter()
            .any(|c| c.auth_ok && c.body.to_string().contains(&id)),
        "Discord received the card"
    );
    let secrets = [
        SECRET.to_string(),
        BOT_TOKEN.to_string(),
        D_BOT_TOKEN.to_string(),
    ]
    .into_iter()
    .chain(tokens);
    for secret in secrets {
        assert!(
            !log.contains(&secret),
            "the log shows a secret ({} chars)",
            secret.len()
        );
        assert!(
            !audit.iter().any(|a| a.contains(&secret)),
            "an audit event shows a secret"
        );
        assert!(
            !chat.iter().any(|m| m.contains(&secret)),
            "a chat message shows a secret"
        );
    }
}

/// The real binary in Socket Mode at `RUST_LOG=trace`: a command and a click over the WebSocket
/// open the grant, SIGTERM closes the connection within the shutdown budget, and neither the app
/// token nor the connection's one-time URL reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_serves_stops_gracefully_and_never_logs_the_app_token() {
    jitbot::install_crypto();
    let mut w = World::new("5s", None).await;
    w.log_level = "trace";
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        text.replacen("[slack]\n", "[slack]\nmode = \"socket\"\n", 1),
    )
    .unwrap();
    let socket = w.slack.socket().clone();
    socket.set_app_token(APP_TOKEN);
    w.start(None).await;
    socket
        .wait_connected(1, Duration::from_secs(10))
        .await
        .unwrap();

    let command = slack_user::slash_command_payload(STEVE, "steve", "C0OPS", "web1 22 1h");
    let envelope = socket.push("slash_commands", command);
    let ack = socket
        .wait_ack(&envelope, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(ack.latency < Duration::from_secs(3), "{:?}", ack.latency);
    let answer = ack.payload.expect("the answer rides on the ack")["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let id = answer
        .split('`')
        .find(|w| w.starts_with("req_"))
        .unwrap_or_else(|| panic!("no request id in {answer}"))
        .to_string();
    assert!(
        wait_for(Duration::from_secs(10), || async {
            w.card_ts(&id).is_some()
        })
        .await,
        "no card"
    );
    let ts = w.card_ts(&id).unwrap();
    let click =
        slack_user::block_action_payload(ALICE, "alice", APPROVALS, &ts, "jit_approve", &id);
    let envelope = socket.push("interactive", click);
    socket
        .wait_ack(&envelope, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || async {
            w.arm.rule(NSG, &format!("jitbot-{id}")).is_some()
        })
        .await,
        "never opened"
    );

    let stopped = w.terminate().await;
    println!("METRIC socket_mode_sigterm_exit_ms={}", stopped.as_millis());
    assert!(
        stopped < Duration::from_secs(10),
        "took {stopped:?} to stop"
    );
    assert!(
        wait_for(Duration::from_secs(2), || async {
            socket.live_connections() == 0
        })
        .await,
        "the connection was closed"
    );
    let log = std::fs::read_to_string(w.dir.join("jitbot.log")).unwrap();
    assert!(
        log.contains("Socket Mode: connected"),
        "the connection is logged"
    );
    assert!(!log.contains(APP_TOKEN), "the log shows the app token");
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains("ticket=")).collect();
    assert!(
        leaks.is_empty(),
        "the log shows the one-time connection URL: {leaks:#?}"
    );
}
