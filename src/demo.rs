//! The demo wiring, the only part of jitbot that starts the emulators of the `jitbot-sim` crate
//! (compiled with the default `demo` feature only):
//!
//! * [`run`] is `jitbot demo`: the whole flow on one machine in a few seconds, with nothing to set
//!   up. It runs the real server and worker on a temporary SQLite database, with the **simulated
//!   Azure backend** and an in-process Slack emulator that prints what each person would see. A
//!   scripted requester asks for SSH, an approver approves, the rule opens, expires and closes,
//!   and the audit chain is verified at the end.
//! * [`simulated_arm`] starts the ARM emulator behind `azure.backend = "simulated"`
//!   ([`crate::azure::connect`]).

use crate::app::{Application, Overrides};
use crate::config::{ConfigFile, Secret, Settings};
use crate::store::now_ms;
use anyhow::Context;
use jitbot_sim::arm::{ArmSim, ArmSimOptions};
use jitbot_sim::slack::SlackSim;
use jitbot_sim::slack_user;
use std::time::Duration;

/// The running ARM emulator of a simulated backend: where to send ARM calls, and the guard that
/// keeps the emulator alive (it stops when the last clone is dropped).
#[derive(Clone)]
pub struct SimulatedArm(ArmSim);

impl SimulatedArm {
    /// `http://127.0.0.1:<port>`: the ARM endpoint of the simulated backend.
    pub fn base_url(&self) -> &str {
        &self.0.base_url
    }

    /// The emulator itself, for tests that look at what it holds and received.
    pub fn emulator(&self) -> &ArmSim {
        &self.0
    }
}

/// Starts the ARM emulator of `azure.backend = "simulated"` on 127.0.0.1: it creates NSGs on
/// first use (the configured targets' NSGs simply exist) and logs every rule change as a person
/// would read it (target `jitbot_sim::arm`).
pub async fn simulated_arm() -> anyhow::Result<SimulatedArm> {
    let sim = ArmSim::start(ArmSimOptions {
        printer: true,
        auto_create_nsgs: Some("simulated".to_string()),
        ..ArmSimOptions::default()
    })
    .await?;
    Ok(SimulatedArm(sim))
}

const SIGNING_SECRET: &str = "demo-signing-secret";
const BOT_TOKEN: &str = "xoxb-demo-token";

/// The demo's configuration: one target, one requester, one approver.
pub fn demo_config(slack_api: &str, database_url: &str) -> String {
    format!(
        r#"
[database]
url = "{database_url}"

[azure]
backend = "simulated"

[slack]
api_base_url = "{slack_api}"
audit_channel = "C0AUDIT"

[people.steve]
slack = "U0STEVE"
[people.alice]
slack = "U0ALICE"

[groups]
secops = ["alice"]

[targets.web1]
nsg = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/prod/providers/Microsoft.Network/networkSecurityGroups/web1-nsg"
destination = "10.0.1.4"
ports = [22, 3389]
max_duration = "4h"
allowed_sources = ["203.0.113.0/24"]
default_source = "203.0.113.7"
requesters = ["*"]
approvers = ["group:secops"]
approval_channel.slack = "C0APPROVALS"
priority_range = [100, 199]
"#
    )
}

fn banner(s: &str) {
    println!("\n━━ {s}");
}

/// `jitbot demo`: runs the scripted flow and prints it; fails if the grant does not close in time.
pub async fn run() -> anyhow::Result<()> {
    let started = now_ms();
    // Removed when the demo ends (the guard is dropped at the end of `run`).
    let tmp = tempfile::Builder::new().prefix("jitbot-demo-").tempdir()?;
    let dir = tmp.path();
    let db = format!("sqlite://{}", dir.join("demo.db").display());
    let slack = SlackSim::start(BOT_TOKEN).await?.with_printer(true);
    let file: ConfigFile = toml::from_str(&demo_config(&slack.base_url, &db))?;
    let settings = Settings::resolve(file, |name| {
        Ok(Some(Secret::new(if name == "SLACK_SIGNING_SECRET" {
            SIGNING_SECRET
        } else {
            BOT_TOKEN
        })))
    })
    .map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app = Application::build(
        settings,
        Overrides {
            listener: Some(listener),
            ..Default::default()
        },
    )
    .await?;
    let base = format!("http://{}", app.addr);
    let http = reqwest::Client::new();
    println!("jitbot demo — SIMULATED Azure and Slack; no real firewall or workspace is touched.");
    println!(
        "server on {base}, database {} (removed when the demo ends)",
        dir.join("demo.db").display()
    );

    banner("steve types:  /jit web1 22 5s from 203.0.113.7 deploy hotfix");
    let body = slack_user::slash_command(
        "U0STEVE",
        "steve",
        "C0OPS",
        "web1 22 5s from 203.0.113.7 deploy hotfix",
    );
    let resp = slack_user::send(
        &http,
        &format!("{base}/slack/commands"),
        SIGNING_SECRET,
        &body,
    )
    .await?;
    let answer: serde_json::Value = resp.json().await?;
    println!(
        "steve sees (only to him): {}",
        answer["text"].as_str().unwrap_or_default()
    );

    let card = wait(Duration::from_secs(10), || {
        slack.messages("C0APPROVALS").into_iter().next()
    })
    .await
    .context("the approval card never arrived")?;
    let request_id = app
        .store
        .requests_in(&[crate::domain::Status::Pending])
        .await?
        .first()
        .map(|r| r.id.clone())
        .context("no pending request")?;

    banner("alice clicks Approve on the card");
    let body = slack_user::block_action(
        "U0ALICE",
        "alice",
        "C0APPROVALS",
        &card.ts,
        "jit_approve",
        &request_id,
    );
    let resp = slack_user::send(
        &http,
        &format!("{base}/slack/interactions"),
        SIGNING_SECRET,
        &body,
    )
    .await?;
    println!("Slack got HTTP {} from jitbot", resp.status());

    banner("the worker opens the rule, waits 5 s, and closes it");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let req = app
            .store
            .request(&request_id)
            .await?
            .context("the request vanished")?;
        if req.status == crate::domain::Status::Revoked {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the grant did not close in time (status {})", req.status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // let the last chat messages go out

    banner("audit trail");
    for e in app.store.audit_events(0, None).await? {
        println!(
            "#{:<3} {}  {:<18} {:<14} {:<8} {}",
            e.seq,
            crate::messages::timestamp(e.at),
            e.kind,
            e.request_id.unwrap_or_default(),
            e.actor.unwrap_or_default(),
            e.detail
        );
    }
    let report = app.store.verify_audit().await?;
    match report.broken {
        None => println!(
            "audit chain verified: {} events, head {}",
            report.events, report.head_hash
        ),
        Some((seq, why)) => println!("audit chain BROKEN at {seq}: {why}"),
    }
    app.stop().await;
    println!(
        "\nDone in {:.1}s. Next: README.md, \"Deploying for real\".",
        (now_ms() - started) as f64 / 1000.0
    );
    Ok(())
}

/// Polls `f` every 50 ms until it yields a value or `timeout` passes.
async fn wait<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
