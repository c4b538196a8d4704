//! No secret leaks, on Discord and with an ARM client secret: a whole grant through Discord (bot
//! token; the public key is not a secret), with tokens from the fake Entra for a client secret
//! and a 401 from ARM that forces a token refresh, logged at TRACE. Neither the client secret,
//! the Discord bot token, the Slack secrets nor any issued token may appear in the log, in what
//! the chat fakes received, or in the audit trail. (`tests/crash.rs` covers the real binary, with
//! Slack, Discord and the Azure CLI credential: a subprocess cannot use the client secret against
//! the plain-http fake Entra, which azure_identity refuses as an authority.)

use crate::helpers::*;
use jitbot::domain::Status;
use jitbot_sim::discord_user;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `MakeWriter` that appends every log line to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Every secret of the run: the configured ones and every token the fake Entra issued.
fn secrets(app: &DiscordTestApp) -> Vec<String> {
    [ENTRA_SECRET, D_BOT_TOKEN, SECRET, BOT_TOKEN]
        .into_iter()
        .map(str::to_string)
        .chain(app.entra.issued())
        .collect()
}

backends! {
#[tokio::test]
async fn no_discord_token_client_secret_or_issued_token_reaches_a_log_a_message_or_the_audit_trail() {
    // The runtime of a plain #[tokio::test] is one thread: the app's tasks log through this
    // thread's default subscriber.
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_both_app().await;
    let id = app.submit(D_STEVE, "web1", "22", "3s").await;
    let (_, json) = app.click(D_CAROL, &[D_APPROVER_ROLE], &id, true).await;
    assert_eq!(json["type"], 6, "{json}");
    app.wait_status(&id, Status::Active, Duration::from_secs(10)).await;
    // ARM now refuses every token issued so far: closing needs a 401 and a fresh token.
    let before = app.entra.issued();
    assert!(!before.is_empty(), "the client secret got a token from the fake Entra");
    for token in &before {
        app.arm.expire_token(token);
    }
    app.wait_status(&id, Status::Revoked, Duration::from_secs(20)).await;
    assert!(
        app.entra.issued().len() > before.len(),
        "a fresh token was fetched after the 401"
    );
    // Something Discord-specific went through the log and the fake: a refused command.
    let (status, _) = app
        .send(&discord_user::command(D_MALLORY, &[], "request", vec![
            discord_user::opt("target", "web1"),
            discord_user::opt("ports", "22"),
            discord_user::opt("duration", "1h"),
        ]))
        .await;
    assert_eq!(status, 200);

    let log = log.text();
    assert!(log.lines().count() > 100, "a TRACE log was written ({} lines)", log.lines().count());
    assert!(log.contains("TRACE"), "TRACE lines are in the log");
    assert!(log.contains(&id), "the log covers the grant");
    let audit: Vec<String> = app
        .store
        .audit_events(0, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {} {}", e.kind, e.actor.unwrap_or_default(), e.detail))
        .collect();
    let chat: Vec<String> = app
        .discord
        .calls()
        .into_iter()
        .map(|c| format!("{} {}", c.path, c.body))
        .chain(app.slack.calls().into_iter().map(|c| c.body.to_string()))
        .collect();
    assert!(chat.iter().any(|m| m.contains(&id)), "the fakes received the run's messages");
    for secret in secrets(&app) {
        assert!(!log.contains(&secret), "the log shows a secret ({} chars)", secret.len());
        assert!(
            !audit.iter().any(|a| a.contains(&secret)),
            "an audit event shows a secret ({} chars)",
            secret.len()
        );
        assert!(
            !chat.iter().any(|m| m.contains(&secret)),
            "a chat message shows a secret ({} chars)",
            secret.len()
        );
    }
}
}
