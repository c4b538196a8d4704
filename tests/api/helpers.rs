use futures::FutureExt;
use jitbot::app::{Application, Overrides};
use jitbot::azure::{AzureOverrides, CredentialFactory};
use jitbot::config::{ConfigFile, Settings};
use jitbot::domain::Status;
use jitbot::store::{RequestRow, Store, audit};
use jitbot_sim::arm::{ArmSim, ArmSimOptions};
use jitbot_sim::entra::EntraSim;
use jitbot_sim::slack::SlackSim;
use jitbot_sim::slack_user;
use sqlx::{AnyPool, Connection};
use std::future::Future;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A button on a message as Slack shows it: (action_id, value, label).
pub type DmButton = (String, String, String);

pub const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const BOT_TOKEN: &str = "xoxb-test-token";
/// The ARM service principal's client secret that the fake Entra accepts.
pub const ENTRA_SECRET: &str = "entra-client-secret-9f2c41d7";
/// The app-level token Socket Mode connects with (`SLACK_APP_TOKEN`).
pub const APP_TOKEN: &str = "xapp-1-A0SIMAPP-1-test";
pub const NSG: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/prod/providers/Microsoft.Network/networkSecurityGroups/web1-nsg";
pub const APPROVALS: &str = "C0APPROVALS";
pub const AUDIT: &str = "C0AUDIT";
/// The HMAC secret of the SIEM webhook sink `soc` (`JITBOT_SIEM_SOC_SECRET`).
pub const SIEM_SECRET: &str = "siem-test-secret-0123456789abcdef";
/// Slack user ids.
pub const STEVE: &str = "U0STEVE";
pub const ALICE: &str = "U0ALICE";
pub const BOB: &str = "U0BOB";
pub const MALLORY: &str = "U0MALLORY";

/// The admin URL of a PostgreSQL server the Postgres variants may create databases on.
pub const POSTGRES_URL_VAR: &str = "JITBOT_TEST_POSTGRES_URL";
/// When `1`, a Postgres variant without [`POSTGRES_URL_VAR`] fails instead of skipping (CI).
pub const REQUIRE_POSTGRES_VAR: &str = "JITBOT_TEST_REQUIRE_POSTGRES";

/// The database a test runs against, chosen per test by the `backends!` macro in `main.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// How Slack's commands and clicks reach jitbot in a test: signed HTTP posts, or envelopes on
/// the Socket Mode WebSocket of the fake Slack (`slack.mode = "socket"`). Chosen per test by
/// `slack_transports!` in `main.rs`; `backends!` tests run over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Socket,
}

/// What a running test knows about its database: the backend, and the Postgres databases it
/// created (dropped when the test ends); and the Slack transport of [`spawn_app`].
struct DbScope {
    db: Db,
    transport: Transport,
    created: Arc<Mutex<Vec<String>>>,
}

tokio::task_local! {
    static DB: DbScope;
}

/// The backend of the running test; SQLite outside `backends!`.
pub fn current_db() -> Db {
    DB.try_with(|s| s.db).unwrap_or(Db::Sqlite)
}

/// The Slack transport of the running test; HTTP outside `slack_transports!`.
pub fn current_transport() -> Transport {
    DB.try_with(|s| s.transport).unwrap_or(Transport::Http)
}

/// The server the Postgres variants run on, if any.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// Runs one test body on `db`, with Slack's commands and clicks going over `transport`: what
/// each variant of `backends!`, `postgres_tests!` and `slack_transports!` expands to.
///
/// A Postgres run without [`POSTGRES_URL_VAR`] prints a `SKIPPED` line and passes, unless
/// [`REQUIRE_POSTGRES_VAR`] is `1`, then it fails. The databases the body created are dropped
/// afterwards, whether it passed or not.
pub async fn run_test_over(
    db: Db,
    transport: Transport,
    name: &str,
    body: impl Future<Output = ()>,
) {
    if db == Db::Postgres && postgres_admin_url().is_none() {
        if std::env::var(REQUIRE_POSTGRES_VAR).as_deref() == Ok("1") {
            panic!(
                "{name}: {REQUIRE_POSTGRES_VAR}=1 but {POSTGRES_URL_VAR} is not set; \
                 start a server with `eval \"$(scripts/test-postgres.sh)\"`"
            );
        }
        // Straight to stderr: the test harness captures `println!` of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {name}: set {POSTGRES_URL_VAR} to run it on PostgreSQL (see README, Development)"
        );
        return;
    }
    let created = Arc::new(Mutex::new(Vec::new()));
    let scope = DbScope {
        db,
        transport,
        created: created.clone(),
    };
    let outcome = DB.scope(scope, AssertUnwindSafe(body).catch_unwind()).await;
    let names = std::mem::take(&mut *created.lock().unwrap());
    for name in names {
        drop_database(&name).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A fresh, empty database for one test: a file in `dir`, or `jitbot_t_<random>` on the
/// Postgres server.
pub async fn fresh_database(dir: &std::path::Path) -> String {
    if current_db() == Db::Sqlite {
        return format!("sqlite://{}", dir.join("jitbot.db").display());
    }
    let admin = postgres_admin_url().expect("the Postgres variant runs only with a URL");
    let name = format!("jitbot_t_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to {POSTGRES_URL_VAR}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    let _ = conn.close().await;
    DB.with(|s| s.created.lock().unwrap().push(name.clone()));
    let mut url = url::Url::parse(&admin).expect("a postgres:// URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

async fn drop_database(name: &str) {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let mut last_error = String::new();
    for _ in 0..5 {
        match sqlx::PgConnection::connect(&admin).await {
            Ok(mut conn) => {
                // The test's replicas may still run (their tasks end with the runtime) and
                // reconnect: shut the door first, then FORCE out whoever is inside.
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER DATABASE {name} ALLOW_CONNECTIONS false"
                )))
                .execute(&mut conn)
                .await;
                let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
                let _ = conn.close().await;
                match dropped {
                    Ok(_) => return,
                    Err(e) => last_error = e.to_string(),
                }
            }
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = writeln!(
        std::io::stderr(),
        "warning: could not drop test database {name}: {last_error}"
    );
}

/// A pool of the test's own on the test's database (`url`, after jitbot's `Store` created and
/// migrated it): tests assert in SQL on what the database holds, and jitbot's `Store` runs no
/// SQL it is handed.
pub async fn sql_pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test database: {e}"))
}

/// The policy every test runs with; `extra` is appended (more targets).
pub fn config(arm: &str, slack: &str, db: &str, extra: &str) -> String {
    format!(
        r#"
[database]
url = "{db}"

[worker]
apply_deadline = "20s"
# Short, so a replica that crashed mid-job is replaced quickly (PostgreSQL keeps leases across
# restarts; SQLite releases them at start).
lease = "2s"

[azure]
backend = "arm"
arm_endpoint = "{arm}"
credential = "client_secret"
tenant_id = "tenant-1"
client_id = "client-1"
request_timeout = "1s"
retry_budget = "10s"

[slack]
api_base_url = "{slack}"
audit_channel = "{AUDIT}"

[people.steve]
slack = "{STEVE}"
[people.alice]
slack = "{ALICE}"
[people.bob]
slack = "{BOB}"
[people.mallory]
slack = "{MALLORY}"

[groups]
secops = ["alice", "bob"]

[targets.web1]
nsg = "{NSG}"
destination = "10.0.1.4"
ports = [22, 3389]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24", "198.51.100.7"]
default_source = "203.0.113.7"
requesters = ["steve", "alice"]
approvers = ["group:secops"]
approval_channel.slack = "{APPROVALS}"
priority_range = [100, 199]
pending_ttl = "2s"

[targets.db1]
nsg = "{NSG}"
destination = "10.0.2.5"
ports = [5432]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
default_source = "203.0.113.7"
requesters = ["steve"]
approvers = ["group:secops"]
approvals_required = 2
approval_channel.slack = "{APPROVALS}"
priority_range = [200, 299]
{extra}
"#
    )
}

/// One running jitbot and the fakes it talks to (Slack, ARM with the tests' NSG, Entra), on a
/// fresh database: what both harnesses are made of. `TestApp` (Slack) and `DiscordTestApp` add
/// their platform's helpers and dereference to it, so start-up, restarts and the ARM and
/// database helpers exist once.
pub struct Harness {
    pub base: String,
    /// How [`TestApp`] sends Slack commands and clicks.
    pub transport: Transport,
    pub http: reqwest::Client,
    pub slack: SlackSim,
    pub arm: ArmSim,
    pub entra: EntraSim,
    pub store: Store,
    /// The test's own pool on the same database, for assertions in SQL.
    pub sql: AnyPool,
    app: Option<Application>,
    settings_text: String,
    factory: CredentialFactory,
    _dir: Arc<tempfile::TempDir>,
}

/// The ARM emulator (with the tests' NSG) and the Entra emulator, and a credential factory that
/// gets tokens from it.
async fn azure_fakes() -> (ArmSim, EntraSim, CredentialFactory) {
    let arm = ArmSim::start(ArmSimOptions {
        operation_delay: Duration::from_millis(150),
        ..ArmSimOptions::default()
    })
    .await
    .unwrap();
    arm.add_nsg(NSG, "westeurope");
    let entra = EntraSim::start("tenant-1", "client-1", ENTRA_SECRET, 3599)
        .await
        .unwrap();
    let factory = entra.credential_factory(ENTRA_SECRET);
    (arm, entra, factory)
}

/// The one start-up path of both harnesses: a fresh database, the Slack, ARM and Entra fakes,
/// and jitbot on the config text that `config(arm, slack, database_url)` writes.
async fn spawn_harness(config: impl FnOnce(&ArmSim, &SlackSim, &str) -> String) -> Harness {
    jitbot::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database(dir.path()).await;
    let slack = SlackSim::start(BOT_TOKEN).await.unwrap();
    slack.socket().set_app_token(APP_TOKEN);
    let (arm, entra, factory) = azure_fakes().await;
    let settings_text = config(&arm, &slack, &db);
    let transport = if settings_text.contains(SOCKET_MODE) {
        Transport::Socket
    } else {
        Transport::Http
    };
    let store = Store::connect(&db).await.unwrap();
    let sql = sql_pool(&db).await;
    let mut h = Harness {
        base: String::new(),
        transport,
        http: reqwest::Client::new(),
        slack,
        arm,
        entra,
        store,
        sql,
        app: None,
        settings_text,
        factory,
        _dir: Arc::new(dir),
    };
    h.start().await;
    h
}

/// Builds and starts jitbot from a config text on a loopback port, with the tests' secrets.
async fn build_app(settings_text: &str, factory: &CredentialFactory) -> Application {
    // `@@BASE@@` in the config is this server's own address (a `public_url` the browser can use).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let settings_text = settings_text.replace("@@BASE@@", &base);
    let file: ConfigFile = toml::from_str(&settings_text).unwrap();
    let settings = Settings::resolve(file, |name| {
        Ok(match name {
            "SLACK_SIGNING_SECRET" => Some(SECRET),
            "SLACK_BOT_TOKEN" => Some(BOT_TOKEN),
            "SLACK_APP_TOKEN" => Some(APP_TOKEN),
            "DISCORD_BOT_TOKEN" => Some(D_BOT_TOKEN),
            "JITBOT_SIEM_SOC_SECRET" => Some(SIEM_SECRET),
            "JITBOT_ENTRA_CLIENT_SECRET" => Some(ENTRA_SECRET),
            _ => None,
        }
        .map(jitbot::config::Secret::new))
    })
    .unwrap();
    Application::build(
        settings,
        Overrides {
            azure: AzureOverrides {
                credential_factory: Some(factory.clone()),
                ..Default::default()
            },
            listener: Some(listener),
        },
    )
    .await
    .unwrap()
}

/// Polls `f` every 20 ms until it yields a value; after `timeout` the test fails with `failure`.
pub async fn eventually<T>(
    timeout: Duration,
    failure: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{failure}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The request id (`req_…`, in backticks) in an answer to `/jit`.
pub fn request_id_in(reply: &str) -> String {
    reply
        .split('`')
        .find(|w| w.starts_with("req_"))
        .unwrap_or_else(|| panic!("no request id in reply: {reply}"))
        .to_string()
}

impl Harness {
    /// Starts (or restarts) the server on the same database and fakes.
    pub async fn start(&mut self) {
        let connected = self.slack.socket().connections_opened();
        let app = build_app(&self.settings_text, &self.factory).await;
        self.base = format!("http://{}", app.addr);
        self.app = Some(app);
        if self.transport == Transport::Socket {
            // Commands sent before the connection would wait for it; start from a connected app.
            eventually(
                Duration::from_secs(10),
                "jitbot opened no Socket Mode connection",
                || (self.slack.socket().connections_opened() > connected).then_some(()),
            )
            .await;
        }
    }

    /// Another server on the same database, fakes and config.
    async fn replica(&self) -> Harness {
        let mut replica = Harness {
            base: String::new(),
            transport: self.transport,
            http: reqwest::Client::new(),
            slack: self.slack.clone(),
            arm: self.arm.clone(),
            entra: self.entra.clone(),
            store: self.store.clone(),
            sql: self.sql.clone(),
            app: None,
            settings_text: self.settings_text.clone(),
            factory: self.factory.clone(),
            _dir: self._dir.clone(),
        };
        replica.start().await;
        replica
    }

    /// Kills the server as a crash would: nothing finishes.
    pub async fn crash(&mut self) {
        if let Some(app) = self.app.take() {
            app.crash().await;
        }
    }

    /// Crashes the server, edits its configuration text and starts it again.
    pub async fn restart_with(&mut self, edit: impl FnOnce(&str) -> String) {
        self.crash().await;
        self.settings_text = edit(&self.settings_text);
        self.start().await;
    }

    /// The database URL the server runs on.
    pub fn database_url(&self) -> String {
        let file: ConfigFile = toml::from_str(&self.settings_text).unwrap();
        file.database.url
    }

    /// The request's rule in the fake ARM.
    pub fn rule(&self, id: &str) -> Option<jitbot_sim::arm::SecurityRule> {
        self.arm.rule(NSG, &format!("jitbot-{id}"))
    }

    /// PUTs and DELETEs the fake ARM received for this request's rule.
    pub fn writes(&self, id: &str) -> Vec<String> {
        let name = format!("jitbot-{id}");
        self.arm
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with(&name) && (r.method == "PUT" || r.method == "DELETE"))
            .map(|r| format!("{} {}", r.method, r.status))
            .collect()
    }

    pub async fn request(&self, id: &str) -> RequestRow {
        self.store
            .request(id)
            .await
            .unwrap()
            .expect("request exists")
    }

    pub async fn wait_status(&self, id: &str, status: Status, timeout: Duration) -> RequestRow {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.request(id).await;
            if r.status == status {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{id} is {} after {timeout:?}, expected {status}",
                r.status
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the request's row satisfies `f`.
    pub async fn wait_until_row(
        &self,
        id: &str,
        timeout: Duration,
        f: impl Fn(&RequestRow) -> bool,
    ) -> RequestRow {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.request(id).await;
            if f(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "{id} did not get there: {r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Audit kinds recorded for a request, in order.
    pub async fn audit_kinds(&self, id: &str) -> Vec<String> {
        self.store
            .audit_events(0, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.request_id.as_deref() == Some(id))
            .map(|e| e.kind)
            .collect()
    }

    /// The details of every `refused` event.
    pub async fn refusals(&self) -> Vec<serde_json::Value> {
        self.events_of("refused")
            .await
            .into_iter()
            .map(|e| e.detail)
            .collect()
    }

    /// Every audit event of a kind, in order.
    pub async fn events_of(&self, kind: &str) -> Vec<audit::AuditEvent> {
        self.store
            .audit_events(0, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }

    pub async fn assert_chain_intact(&self) {
        let report = self.store.verify_audit().await.unwrap();
        assert_eq!(report.broken, None, "audit chain broken");
    }

    /// (requests, jobs) rows in the database.
    pub async fn row_counts(&self) -> (i64, i64) {
        use sqlx::Row;
        let count = |sql: &'static str| async move {
            sqlx::query(sql)
                .fetch_one(&self.sql)
                .await
                .unwrap()
                .try_get::<i64, _>("n")
                .unwrap()
        };
        (
            count("SELECT COUNT(*) AS n FROM requests").await,
            // The periodic singletons (reconcile, checkpoint) exist from the start.
            count(
                "SELECT COUNT(*) AS n FROM jobs WHERE lane IS NULL OR lane NOT LIKE 'singleton:%'",
            )
            .await,
        )
    }
}

// ───────────────────────────────────── Slack ─────────────────────────────────────────

/// jitbot with Slack (the policy of [`config`]) and the Slack helpers; everything else is the
/// [`Harness`] it dereferences to.
pub struct TestApp(Harness);

impl std::ops::Deref for TestApp {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.0
    }
}

impl std::ops::DerefMut for TestApp {
    fn deref_mut(&mut self) -> &mut Harness {
        &mut self.0
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

/// The line that turns Socket Mode on in `[slack]`.
pub const SOCKET_MODE: &str = "mode = \"socket\"";

/// jitbot with the policy of [`config`] and `extra`, Slack over the test's transport.
pub async fn spawn_app_with(extra: &str) -> TestApp {
    let socket = current_transport() == Transport::Socket;
    TestApp(
        spawn_harness(|arm, slack, db| {
            let text = config(&arm.base_url, &slack.base_url, db, extra);
            if socket {
                text.replacen("[slack]\n", &format!("[slack]\n{SOCKET_MODE}\n"), 1)
            } else {
                text
            }
        })
        .await,
    )
}

/// Like [`spawn_app_with`], then restarted with `worker` lines added to `[worker]` and every
/// `(from, to)` replacement applied to the config text (e.g. a shorter `retry_budget`).
pub async fn spawn_app_tuned(worker: &str, replace: &[(&str, &str)], extra: &str) -> TestApp {
    let mut app = spawn_app_with(extra).await;
    let worker = worker.to_string();
    let replace: Vec<(String, String)> = replace
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    app.restart_with(move |text| {
        let mut text = text.replacen("[worker]\n", &format!("[worker]\n{worker}\n"), 1);
        for (from, to) in &replace {
            assert!(text.contains(from.as_str()), "config has no {from:?}");
            text = text.replace(from.as_str(), to);
        }
        text
    })
    .await;
    app
}

impl TestApp {
    /// Starts another replica on the same database, sharing this one's fakes (Slack, ARM, Entra)
    /// and config: what several jitbot processes behind one load balancer look like. The returned
    /// handle has every `TestApp` method, aimed at the new replica's HTTP address.
    pub async fn start_replica(&self) -> TestApp {
        TestApp(self.0.replica().await)
    }

    pub async fn slash_as(
        &self,
        user: &str,
        text: &str,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        if self.transport == Transport::Socket {
            let payload = slack_user::slash_command_payload(user, "someone", "C0OPS", text);
            return self.over_socket("slash_commands", payload).await;
        }
        let body = slack_user::slash_command(user, "someone", "C0OPS", text);
        let resp = slack_user::send(
            &self.http,
            &format!("{}/slack/commands", self.base),
            SECRET,
            &body,
        )
        .await
        .unwrap();
        let status = resp.status();
        let json = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// `/jit …` as `user`; returns the ephemeral reply text.
    pub async fn slash(&self, user: &str, text: &str) -> String {
        let (status, json) = self.slash_as(user, text).await;
        assert_eq!(status, 200, "slash command answered {status}: {json}");
        json["text"].as_str().unwrap_or_default().to_string()
    }

    /// Submits a request and returns its id (asserting it was accepted).
    pub async fn submit(&self, user: &str, text: &str) -> String {
        request_id_in(&self.slash(user, text).await)
    }

    pub async fn click(&self, user: &str, id: &str, approve: bool) -> reqwest::StatusCode {
        self.click_round(user, id, 0, approve).await
    }

    pub async fn click_round(
        &self,
        user: &str,
        id: &str,
        round: i64,
        approve: bool,
    ) -> reqwest::StatusCode {
        let ts = self.card_ts(id).await;
        let value = if round == 0 {
            id.to_string()
        } else {
            format!("{id}:{round}")
        };
        let action = if approve { "jit_approve" } else { "jit_deny" };
        self.press(user, APPROVALS, &ts, action, &value).await
    }

    /// Sends an envelope over Socket Mode as Slack would and waits for jitbot's
    /// acknowledgement, which must come within Slack's 3 s; returns 200 and the ack's payload
    /// (`Null` for a bare ack), what the HTTP route would have answered.
    pub async fn over_socket(
        &self,
        kind: &str,
        payload: serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let socket = self.slack.socket();
        let envelope = socket.push(kind, payload);
        let ack = socket
            .wait_ack(&envelope, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            ack.latency < Duration::from_secs(3),
            "{kind} acknowledged after {:?}",
            ack.latency
        );
        let answer = ack.payload.unwrap_or(serde_json::Value::Null);
        (reqwest::StatusCode::OK, answer)
    }

    /// `user` presses a button and gets the full answer (status and JSON body or ack payload).
    pub async fn press_for_answer(
        &self,
        user: &str,
        channel: &str,
        ts: &str,
        action_id: &str,
        value: &str,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        if self.transport == Transport::Socket {
            let payload =
                slack_user::block_action_payload(user, "someone", channel, ts, action_id, value);
            return self.over_socket("interactive", payload).await;
        }
        let body = slack_user::block_action(user, "someone", channel, ts, action_id, value);
        let resp = slack_user::send(
            &self.http,
            &format!("{}/slack/interactions", self.base),
            SECRET,
            &body,
        )
        .await
        .unwrap();
        let status = resp.status();
        let json = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// The ts of the request's approval card, waiting for it to be posted.
    pub async fn card_ts(&self, id: &str) -> String {
        eventually(
            Duration::from_secs(5),
            &format!("no approval card for {id}"),
            || {
                self.slack
                    .messages(APPROVALS)
                    .into_iter()
                    .find(|m| m.text.contains(id))
                    .map(|m| m.ts)
            },
        )
        .await
    }

    /// Waits until `f` holds, polling every 20 ms.
    pub async fn wait_until(&self, what: &str, timeout: Duration, f: impl Fn(&TestApp) -> bool) {
        eventually(timeout, &format!("timed out waiting for: {what}"), || {
            f(self).then_some(())
        })
        .await
    }

    /// Texts of direct messages to a user.
    pub fn dms(&self, user: &str) -> Vec<String> {
        self.slack
            .messages(user)
            .into_iter()
            .map(|m| m.text)
            .collect()
    }

    /// The buttons and ts of the newest direct message to `user` whose text contains `needle`.
    pub fn dm_buttons(&self, user: &str, needle: &str) -> Option<(String, Vec<DmButton>)> {
        let m = self
            .slack
            .messages(user)
            .into_iter()
            .rev()
            .find(|m| m.text.contains(needle))?;
        let mut buttons = Vec::new();
        for block in m.blocks.as_array().into_iter().flatten() {
            for el in block["elements"].as_array().into_iter().flatten() {
                if el["type"] == "button" {
                    buttons.push((
                        el["action_id"].as_str().unwrap_or_default().to_string(),
                        el["value"].as_str().unwrap_or_default().to_string(),
                        el["text"]["text"].as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
        }
        Some((m.ts, buttons))
    }

    /// `user` presses a button (`action_id`, `value`) on message `ts` in `channel`.
    pub async fn press(
        &self,
        user: &str,
        channel: &str,
        ts: &str,
        action_id: &str,
        value: &str,
    ) -> reqwest::StatusCode {
        self.press_for_answer(user, channel, ts, action_id, value)
            .await
            .0
    }

    pub fn card_text(&self, id: &str) -> String {
        self.slack
            .messages(APPROVALS)
            .into_iter()
            .find(|m| m.text.contains(id))
            .map(|m| format!("{} {}", m.text, m.blocks))
            .unwrap_or_default()
    }

    /// Texts of the messages posted to the audit channel.
    pub fn audit_feed(&self) -> Vec<String> {
        self.slack
            .messages(AUDIT)
            .into_iter()
            .map(|m| m.text)
            .collect()
    }
}

// ───────────────────────────────────── Discord ─────────────────────────────────────────
// `DiscordTestApp` runs jitbot with Discord only, or with Discord and Slack from one policy
// (`spawn_both_app`).

use jitbot_sim::discord::{DiscordMessage, DiscordSim};
use jitbot_sim::discord_user;

pub const D_BOT_TOKEN: &str = "discord-bot-token-for-tests";
pub const D_APPROVALS: &str = "700000000000000010";
pub const D_AUDIT: &str = "700000000000000020";
/// Discord user ids.
pub const D_STEVE: &str = "800000000000000001";
pub const D_ALICE: &str = "800000000000000002";
pub const D_BOB: &str = "800000000000000003";
pub const D_MALLORY: &str = "800000000000000004";
/// Carol approves only through the role.
pub const D_CAROL: &str = "800000000000000005";
pub const D_APPROVER_ROLE: &str = "539082325061836999";
pub const D_OTHER_ROLE: &str = "539082325061836000";

/// A policy for Discord (and Slack too when `slack` is given): one set of people with both ids.
pub fn discord_config(arm: &str, discord: &str, slack: Option<&str>, db: &str) -> String {
    let slack_section = slack
        .map(|s| format!("[slack]\napi_base_url = \"{s}\"\naudit_channel = \"{AUDIT}\"\n"))
        .unwrap_or_default();
    let slack_channel = if slack.is_some() {
        format!("approval_channel.slack = \"{APPROVALS}\"")
    } else {
        String::new()
    };
    format!(
        r#"
[database]
url = "{db}"

[worker]
apply_deadline = "20s"

[azure]
backend = "arm"
arm_endpoint = "{arm}"
credential = "client_secret"
tenant_id = "tenant-1"
client_id = "client-1"
request_timeout = "1s"
retry_budget = "10s"

{slack_section}
[discord]
application_id = "{app}"
public_key = "{key}"
api_base_url = "{discord}"
audit_channel = "{D_AUDIT}"

[people.steve]
slack = "{STEVE}"
discord = "{D_STEVE}"
[people.alice]
slack = "{ALICE}"
discord = "{D_ALICE}"
[people.bob]
slack = "{BOB}"
discord = "{D_BOB}"
[people.mallory]
slack = "{MALLORY}"
discord = "{D_MALLORY}"
[people.carol]
discord = "{D_CAROL}"

[groups]
secops = ["alice", "bob"]

[targets.web1]
nsg = "{NSG}"
destination = "10.0.1.4"
ports = [22, 3389]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24", "198.51.100.7"]
default_source = "203.0.113.7"
requesters = ["steve", "alice", "carol"]
approvers = ["group:secops", "discord-role:{D_APPROVER_ROLE}"]
approval_channel.discord = "{D_APPROVALS}"
{slack_channel}
priority_range = [100, 199]
pending_ttl = "30s"

[targets.db1]
nsg = "{NSG}"
destination = "10.0.2.5"
ports = [5432]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
default_source = "203.0.113.7"
requesters = ["alice"]
approvers = ["group:secops"]
approval_channel.discord = "{D_APPROVALS}"
{slack_channel}
priority_range = [200, 299]

[targets.app1]
nsg = "{NSG}"
destination = "10.0.3.6"
ports = [443]
max_duration = "1h"
allowed_sources = ["203.0.113.0/24"]
default_source = "203.0.113.7"
requesters = ["steve"]
approvers = ["group:secops", "discord-role:{D_APPROVER_ROLE}"]
approvals_required = 2
approval_channel.discord = "{D_APPROVALS}"
{slack_channel}
priority_range = [300, 399]
"#,
        app = discord_user::APPLICATION_ID,
        key = discord_user::TEST_PUBLIC_KEY,
    )
}

/// jitbot with Discord (the policy of [`discord_config`]) and the Discord helpers; everything
/// else is the [`Harness`] it dereferences to (its Slack fake is configured only by
/// `spawn_both_app`).
pub struct DiscordTestApp {
    harness: Harness,
    pub discord: DiscordSim,
}

impl std::ops::Deref for DiscordTestApp {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.harness
    }
}

impl std::ops::DerefMut for DiscordTestApp {
    fn deref_mut(&mut self) -> &mut Harness {
        &mut self.harness
    }
}

/// jitbot with Discord only (no [slack] section).
pub async fn spawn_discord_app() -> DiscordTestApp {
    spawn_discord_app_with(false).await
}

/// jitbot with Slack and Discord from one policy.
pub async fn spawn_both_app() -> DiscordTestApp {
    spawn_discord_app_with(true).await
}

async fn spawn_discord_app_with(both: bool) -> DiscordTestApp {
    let discord = DiscordSim::start(D_BOT_TOKEN).await.unwrap();
    let harness = spawn_harness(|arm, slack, db| {
        discord_config(
            &arm.base_url,
            &discord.base_url,
            both.then_some(slack.base_url.as_str()),
            db,
        )
    })
    .await;
    DiscordTestApp { harness, discord }
}

impl DiscordTestApp {
    pub fn interactions_url(&self) -> String {
        format!("{}/discord/interactions", self.base)
    }

    /// Posts a signed interaction body; returns the status and the JSON answer.
    pub async fn send(&self, body: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let resp = discord_user::send(&self.http, &self.interactions_url(), body)
            .await
            .unwrap();
        let status = resp.status();
        let json = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// `/jit <sub> …` as a member; asserts an ephemeral answer and returns its text.
    pub async fn command(
        &self,
        user: &str,
        roles: &[&str],
        sub: &str,
        options: Vec<serde_json::Value>,
    ) -> String {
        let (status, json) = self
            .send(&discord_user::command(user, roles, sub, options))
            .await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(json["type"], 4, "{json}");
        assert_eq!(json["data"]["flags"], 64, "not ephemeral: {json}");
        embed_text(&json["data"])
    }

    /// `/jit request …`; returns the request id.
    pub async fn submit(&self, user: &str, target: &str, ports: &str, duration: &str) -> String {
        let reply = self
            .command(
                user,
                &[],
                "request",
                vec![
                    discord_user::opt("target", target),
                    discord_user::opt("ports", ports),
                    discord_user::opt("duration", duration),
                ],
            )
            .await;
        request_id_in(&reply)
    }

    /// The request's approval card, waiting for it to be posted.
    pub async fn card(&self, id: &str) -> DiscordMessage {
        eventually(
            Duration::from_secs(5),
            &format!("no Discord approval card for {id}"),
            || {
                self.discord
                    .messages(D_APPROVALS)
                    .into_iter()
                    .find(|m| m.text().contains(id))
            },
        )
        .await
    }

    /// Clicks Approve or Deny on the request's card (the button's own custom_id).
    pub async fn click(
        &self,
        user: &str,
        roles: &[&str],
        id: &str,
        approve: bool,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let card = self.card(id).await;
        let custom_id = card
            .custom_ids()
            .into_iter()
            .find(|c| c.starts_with(if approve { "jit:approve:" } else { "jit:deny:" }))
            .unwrap_or_else(|| panic!("card has no buttons: {card:?}"));
        self.send(&discord_user::button(
            user,
            roles,
            D_APPROVALS,
            &card.id,
            &custom_id,
        ))
        .await
    }

    /// Waits until `f` holds, polling every 20 ms.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&DiscordTestApp) -> bool,
    ) {
        eventually(timeout, &format!("timed out waiting for: {what}"), || {
            f(self).then_some(())
        })
        .await
    }

    /// Texts of the Discord DMs a user received.
    pub fn dms(&self, user: &str) -> Vec<String> {
        match self.discord.dm_channel(user) {
            Some(c) => self.discord.messages(&c).iter().map(|m| m.text()).collect(),
            None => vec![],
        }
    }
}

/// The text of an interaction response's `data` (content + embeds).
pub fn embed_text(data: &serde_json::Value) -> String {
    let mut out = vec![data["content"].as_str().unwrap_or("").to_string()];
    for e in data["embeds"].as_array().into_iter().flatten() {
        out.push(e["title"].as_str().unwrap_or("").to_string());
        out.push(e["description"].as_str().unwrap_or("").to_string());
        for f in e["fields"].as_array().into_iter().flatten() {
            out.push(format!(
                "{}: {}",
                f["name"].as_str().unwrap_or(""),
                f["value"].as_str().unwrap_or("")
            ));
        }
    }
    out.retain(|s| !s.is_empty());
    out.join("\n")
}
