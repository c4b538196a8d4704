//! The HTTP limits against hostile clients (SECURITY.md, "HTTP limits"): a body past
//! `server.max_body_bytes` and a body that never finishes arriving are refused before anything
//! is parsed, verified or recorded, and the server serves everyone else meanwhile.

use crate::helpers::*;
use jitbot_sim::slack_user;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

backends! {
#[tokio::test]
async fn an_oversized_body_is_refused_unread_and_changes_nothing() {
    let app = spawn_app().await;
    // 4 MiB of a well-formed, correctly signed command: 16 times the 256 KiB cap.
    let text = "x".repeat(4 * 1024 * 1024);
    let body = slack_user::slash_command(STEVE, "steve", "C0OPS", &format!("web1 22 1h {text}"));
    let started = Instant::now();
    let r = slack_user::send(&app.http, &format!("{}/slack/commands", app.base), SECRET, &body)
        .await
        .unwrap();
    let took = started.elapsed();
    println!("METRIC oversized_body_refused_ms={}", took.as_millis());
    assert_eq!(r.status(), 413);
    assert_eq!(app.row_counts().await.0, 0, "no request recorded");
    assert!(app.slack.messages(APPROVALS).is_empty(), "no card");
    // The same command at its normal size goes through.
    let id = app.submit(STEVE, "web1 22 1h").await;
    assert!(id.starts_with("req_"), "{id}");
}

#[tokio::test]
async fn a_body_that_never_finishes_is_cut_off_at_the_body_timeout() {
    let app = spawn_app_with("[server]\nbody_timeout = \"1s\"\n").await;
    let addr = app.base.trim_start_matches("http://").trim_end_matches('/').to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A complete head announcing 1,000 bytes, then 10 of them, then nothing.
    let head = "POST /slack/commands HTTP/1.1\r\nHost: jitbot\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ntext=web1 ";
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // Meanwhile everyone else is served.
    let id = app.submit(STEVE, "web1 22 1h").await;
    assert!(id.starts_with("req_"), "{id}");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    let took = started.elapsed();
    println!("METRIC slow_body_cut_off_ms={}", took.as_millis());
    assert!(read.is_ok(), "still open after 5 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(app.row_counts().await.0, 1, "only the complete command made a request");
}
}
