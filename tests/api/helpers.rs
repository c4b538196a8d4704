use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::ClientOptions;
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use jitbot::app::{Application, Overrides};
use jitbot::azure::{AzureOverrides, CredentialFactory};
use jitbot::config::{ConfigFile, Settings};
use jitbot::domain::Status;
use jitbot::sim::arm::{ArmSim, ArmSimOptions};
use jitbot::sim::entra::{EntraSim, redirecting_transport};
use jitbot::sim::slack::SlackSim;
use jitbot::sim::slack_user;
use jitbot::store::{RequestRow, Store, audit};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const BOT_TOKEN: &str = "xoxb-test-token";
pub const NSG: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/prod/providers/Microsoft.Network/networkSecurityGroups/web1-nsg";
pub const APPROVALS: &str = "C0APPROVALS";
pub const AUDIT: &str = "C0AUDIT";
/// Slack user ids.
pub const STEVE: &str = "U0STEVE";
pub const ALICE: &str = "U0ALICE";
pub const BOB: &str = "U0BOB";
pub const MALLORY: &str = "U0MALLORY";

/// The policy every test runs with; `extra` is appended (more targets).
pub fn config(arm: &str, slack: &str, db: &str, extra: &str) -> String {
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

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub slack: SlackSim,
    pub arm: ArmSim,
    pub entra: EntraSim,
    pub store: Store,
    app: Option<Application>,
    settings_text: String,
    factory: CredentialFactory,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

pub async fn spawn_app_with(extra: &str) -> TestApp {
    jitbot::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("jitbot.db").display());
    let slack = SlackSim::start(BOT_TOKEN).await.unwrap();
    let arm = ArmSim::start(ArmSimOptions {
        operation_delay: Duration::from_millis(150),
        ..ArmSimOptions::default()
    })
    .await
    .unwrap();
    arm.add_nsg(NSG, "westeurope");
    let entra = EntraSim::start("tenant-1", "client-1", "s3cret", 3599)
        .await
        .unwrap();
    let entra_url = entra.base_url.clone();
    let factory: CredentialFactory = Arc::new(move || {
        let options = ClientSecretCredentialOptions {
            client_options: ClientOptions {
                transport: Some(redirecting_transport(&entra_url)),
                ..Default::default()
            },
        };
        let cred = ClientSecretCredential::new(
            "tenant-1",
            "client-1".into(),
            Secret::new("s3cret"),
            Some(options),
        )?;
        Ok(cred as Arc<dyn TokenCredential>)
    });
    let settings_text = config(&arm.base_url, &slack.base_url, &db, extra);
    let store = Store::connect(&db).await.unwrap();
    let mut t = TestApp {
        base: String::new(),
        http: reqwest::Client::new(),
        slack,
        arm,
        entra,
        store,
        app: None,
        settings_text,
        factory,
        _dir: dir,
    };
    t.start().await;
    t
}

impl TestApp {
    /// Starts (or restarts) the server on the same database and fakes.
    pub async fn start(&mut self) {
        let file: ConfigFile = toml::from_str(&self.settings_text).unwrap();
        let settings = Settings::resolve(file, |name| {
            Ok(Some(jitbot::config::Secret::new(
                if name == "SLACK_SIGNING_SECRET" {
                    SECRET
                } else {
                    BOT_TOKEN
                },
            )))
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = Application::build(
            settings,
            Overrides {
                azure: AzureOverrides {
                    credential_factory: Some(self.factory.clone()),
                    ..Default::default()
                },
                listener: Some(listener),
            },
        )
        .await
        .unwrap();
        self.base = format!("http://{}", app.addr);
        self.app = Some(app);
    }

    /// Kills the server as a crash would: nothing finishes.
    pub async fn crash(&mut self) {
        if let Some(app) = self.app.take() {
            app.crash().await;
        }
    }

    pub async fn slash_as(
        &self,
        user: &str,
        text: &str,
    ) -> (reqwest::StatusCode, serde_json::Value) {
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
        let reply = self.slash(user, text).await;
        reply
            .split('`')
            .find(|w| w.starts_with("req_"))
            .unwrap_or_else(|| panic!("no request id in reply: {reply}"))
            .to_string()
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
        let body = slack_user::block_action(user, "someone", APPROVALS, &ts, action, &value);
        slack_user::send(
            &self.http,
            &format!("{}/slack/interactions", self.base),
            SECRET,
            &body,
        )
        .await
        .unwrap()
        .status()
    }

    /// The ts of the request's approval card, waiting for it to be posted.
    pub async fn card_ts(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(m) = self
                .slack
                .messages(APPROVALS)
                .into_iter()
                .find(|m| m.text.contains(id))
            {
                return m.ts;
            }
            assert!(Instant::now() < deadline, "no approval card for {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

    /// Waits until `f` holds, polling every 20 ms.
    pub async fn wait_until(&self, what: &str, timeout: Duration, f: impl Fn(&TestApp) -> bool) {
        let deadline = Instant::now() + timeout;
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn rule(&self, id: &str) -> Option<jitbot::azure::SecurityRule> {
        self.arm.rule(NSG, &format!("jitbot-{id}"))
    }

    /// Audit kinds recorded for a request, in order.
    pub async fn audit_kinds(&self, id: &str) -> Vec<String> {
        audit::events(self.store.pool(), 0, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.request_id.as_deref() == Some(id))
            .map(|e| e.kind)
            .collect()
    }

    pub async fn refusals(&self) -> Vec<serde_json::Value> {
        audit::events(self.store.pool(), 0, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "refused")
            .map(|e| e.detail)
            .collect()
    }

    pub async fn assert_chain_intact(&self) {
        let report = audit::verify(self.store.pool()).await.unwrap();
        assert_eq!(report.broken, None, "audit chain broken");
    }

    /// Texts of direct messages to a user.
    pub fn dms(&self, user: &str) -> Vec<String> {
        self.slack
            .messages(user)
            .into_iter()
            .map(|m| m.text)
            .collect()
    }

    pub fn card_text(&self, id: &str) -> String {
        self.slack
            .messages(APPROVALS)
            .into_iter()
            .find(|m| m.text.contains(id))
            .map(|m| format!("{} {}", m.text, m.blocks))
            .unwrap_or_default()
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
}
